//! A small JSON object writer for events and `corepost_log_format = json`
//! lines: flat objects of strings, numbers and string arrays, written
//! straight into a buffer (no intermediate tree, no allocation per field).

use std::fmt::Write;

/// One JSON object being written; `finish` closes it.
pub struct Object {
    out: String,
    empty: bool,
}

impl Object {
    pub fn new() -> Object {
        let mut out = String::with_capacity(256);
        out.push('{');
        Object { out, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        quote(&mut self.out, key);
        self.out.push(':');
    }

    pub fn str(mut self, key: &str, value: &str) -> Object {
        self.key(key);
        quote(&mut self.out, value);
        self
    }

    /// A string field, left out when `None`.
    pub fn opt(self, key: &str, value: Option<&str>) -> Object {
        match value {
            Some(v) => self.str(key, v),
            None => self,
        }
    }

    pub fn num(mut self, key: &str, value: u64) -> Object {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// Seconds with Postfix's two decimals (`delay=1.25`).
    pub fn secs(mut self, key: &str, value: f64) -> Object {
        self.key(key);
        if value.is_finite() {
            let _ = write!(self.out, "{value:.3}");
        } else {
            self.out.push('0');
        }
        self
    }

    pub fn list<'a>(mut self, key: &str, values: impl IntoIterator<Item = &'a str>) -> Object {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            quote(&mut self.out, v);
        }
        self.out.push(']');
        self
    }

    /// The object as one line (no newline).
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

impl Default for Object {
    fn default() -> Object {
        Object::new()
    }
}

/// `s` as a JSON string (RFC 8259 escapes; other control characters as
/// `\u00XX`).
pub fn quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `2026-12-06T08:44:34.123456Z` for a time in microseconds since the epoch
/// (UTC, so the events of hosts in different zones sort together).
pub fn rfc3339_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros % 1_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_json_requires() {
        let line = Object::new()
            .str("a", "q\"b\\s\n\u{1}é")
            .num("n", 7)
            .list("l", ["x", "y"])
            .opt("none", None)
            .finish();
        assert_eq!(line, r#"{"a":"q\"b\\s\n\u0001é","n":7,"l":["x","y"]}"#);
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.5Z, a leap day.
        assert_eq!(
            rfc3339_micros(1_709_251_199_500_000),
            "2024-02-29T23:59:59.500000Z"
        );
    }
}
