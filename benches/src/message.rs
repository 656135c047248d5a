//! Message generation for the load generator: weighted mixes of sizes and recipient domains, and
//! real-looking messages (RFC 5322 headers, a multipart/alternative MIME body with text and HTML
//! parts).
//!
//! Bodies are generated once per size at start-up, in both DATA form (dot-stuffed) and BDAT form
//! (raw), so the hot path only formats a few headers and copies a template: no I/O and no
//! allocation per message beyond the caller's reused buffer.

use std::fmt::Write as _;
use std::io::Write as _;

use crate::smtp;

/// Name of the header carrying the injection time, in microseconds since the Unix epoch. The
/// sink reads it back to report end-to-end latency.
pub const STAMP_HEADER: &str = "X-Corepost-Injected";

/// Parses a size: `4096`, `4k`/`4KiB` (×1024), `1m`/`1MiB` (×1024²).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.as_bytes().last() {
        Some(b'k') => (&t[..t.len() - 1], 1024),
        Some(b'm') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mult)
        .filter(|&n| n <= 1 << 30)
        .ok_or_else(|| format!("size {s:?} too large (1 GiB at most)"))
}

/// A weighted choice among items, picked with a cumulative table and a binary search.
#[derive(Debug, Clone)]
pub struct Weighted<T> {
    items: Vec<T>,
    cumulative: Vec<u64>,
}

impl<T> Weighted<T> {
    /// Builds from `(item, weight)` pairs; zero weights are dropped. Fails when nothing is left.
    pub fn new(pairs: Vec<(T, u64)>) -> Result<Self, String> {
        let mut items = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for (item, w) in pairs.into_iter().filter(|(_, w)| *w > 0) {
            total = total.checked_add(w).ok_or("weights overflow")?;
            items.push(item);
            cumulative.push(total);
        }
        if items.is_empty() {
            return Err("a mix needs at least one entry with a positive weight".into());
        }
        Ok(Self { items, cumulative })
    }

    /// Picks one item.
    pub fn pick(&self, rng: &mut fastrand::Rng) -> &T {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.u64(0..total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.items[i.min(self.items.len() - 1)]
    }

    /// The weight of item `i` (0 when out of range).
    pub fn weight(&self, i: usize) -> u64 {
        match i {
            0 => self.cumulative.first().copied().unwrap_or(0),
            _ => match (self.cumulative.get(i), self.cumulative.get(i - 1)) {
                (Some(a), Some(b)) => a - b,
                _ => 0,
            },
        }
    }

    /// The items in order.
    pub fn items(&self) -> &[T] {
        &self.items
    }
}

/// Splits `a=1,b=2` into names and weights (a missing weight is 1).
fn split_mix(spec: &str) -> Result<Vec<(&str, u64)>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| match entry.rsplit_once('=') {
            Some((name, w)) => w
                .trim()
                .parse()
                .map(|w| (name.trim(), w))
                .map_err(|_| format!("bad weight in {entry:?}")),
            None => Ok((entry, 1)),
        })
        .collect()
}

/// Parses a size mix like `4k=70,64k=25,1m=5`.
pub fn parse_size_mix(spec: &str) -> Result<Weighted<usize>, String> {
    let pairs = split_mix(spec)?
        .into_iter()
        .map(|(s, w)| parse_size(s).map(|s| (s, w)))
        .collect::<Result<Vec<_>, _>>()?;
    Weighted::new(pairs)
}

/// One entry of a recipient-domain mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainChoice {
    /// A fixed domain.
    Fixed(String),
    /// A long tail of `count` domains `t0.SUFFIX` … `t{count-1}.SUFFIX`, chosen uniformly.
    Tail { count: u32, suffix: String },
}

/// Parses a domain mix like `gmail.test=40,yahoo.test=30,tail:10000=30` (`tail:N` or
/// `tail:N:suffix`, suffix `tail.test` by default).
pub fn parse_domain_mix(spec: &str) -> Result<Weighted<DomainChoice>, String> {
    let pairs = split_mix(spec)?
        .into_iter()
        .map(|(name, w)| {
            let choice = match name.strip_prefix("tail:") {
                Some(rest) => {
                    let (n, suffix) = rest.split_once(':').unwrap_or((rest, "tail.test"));
                    let count: u32 = n
                        .parse()
                        .map_err(|_| format!("bad tail size in {name:?}"))?;
                    if count == 0 || suffix.is_empty() {
                        return Err(format!("empty tail in {name:?}"));
                    }
                    DomainChoice::Tail {
                        count,
                        suffix: suffix.to_string(),
                    }
                }
                None if name.is_empty() || name.contains(['@', '<', '>', ' ']) => {
                    return Err(format!("bad domain {name:?}"));
                }
                None => DomainChoice::Fixed(name.to_string()),
            };
            Ok((choice, w))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Weighted::new(pairs)
}

/// A domain picked for one recipient: a fixed name, or a tail member by number.
#[derive(Debug, Clone, Copy)]
pub enum PickedDomain<'a> {
    /// A fixed domain.
    Fixed(&'a str),
    /// Member `n` of a tail.
    Tail(u32, &'a str),
}

impl PickedDomain<'_> {
    /// Appends the domain name.
    pub fn write(&self, out: &mut Vec<u8>) {
        match *self {
            PickedDomain::Fixed(d) => out.extend_from_slice(d.as_bytes()),
            PickedDomain::Tail(n, suffix) => {
                let _ = write!(out, "t{n}.{suffix}");
            }
        }
    }
}

/// Picks a domain from a mix.
pub fn pick_domain<'a>(
    mix: &'a Weighted<DomainChoice>,
    rng: &mut fastrand::Rng,
) -> PickedDomain<'a> {
    match mix.pick(rng) {
        DomainChoice::Fixed(d) => PickedDomain::Fixed(d),
        DomainChoice::Tail { count, suffix } => PickedDomain::Tail(rng.u32(0..*count), suffix),
    }
}

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "shows",
    "that",
    "our",
    "customers",
    "prefer",
    "faster",
    "delivery",
    "and",
    "clearer",
    "invoices",
    "please",
    "find",
    "attached",
    "summary",
    "for",
    "your",
    "review",
    "before",
    "meeting",
    "on",
    "Thursday",
    "we",
    "have",
    "updated",
    "account",
    "settings",
    "to",
    "reflect",
    "new",
    "policy",
    "thanks",
    "again",
    "support",
    "team",
    "order",
    "shipped",
    "tracking",
    "number",
    "is",
    "available",
    "in",
    "dashboard",
    "newsletter",
    "offers",
    "discount",
    "weekend",
    "only",
    "unsubscribe",
    "any",
    "time",
    "privacy",
    "statement",
    "regards",
];

/// Appends exactly `n` bytes of wrapped prose (lines of at most 76 characters plus CRLF); about
/// one line in 25 starts with a `.` so the dot-stuffing path is exercised. `html` wraps
/// paragraphs in `<p>`.
fn filler(rng: &mut fastrand::Rng, n: usize, html: bool, out: &mut Vec<u8>) {
    let target = out.len() + n;
    let mut line = String::with_capacity(80);
    let mut lines = 0u32;
    while out.len() < target {
        line.clear();
        lines += 1;
        if lines.is_multiple_of(25) {
            line.push_str(". ");
        } else if html && lines.is_multiple_of(6) {
            line.push_str("<p>");
        }
        while line.len() < 64 {
            let w = WORDS[rng.usize(0..WORDS.len())];
            line.push_str(w);
            line.push(' ');
        }
        line.pop();
        line.push_str(if html && lines.is_multiple_of(6) {
            "</p>"
        } else {
            "."
        });
        let left = target - out.len();
        if line.len() + 2 <= left {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        } else if left >= 2 {
            // Last line: cut to fit, keeping the CRLF (and never leaving a lone trailing dot line).
            let keep = &line.as_bytes()[..left - 2];
            let keep = if keep == b"." { b"x" } else { keep };
            out.extend_from_slice(keep);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend(std::iter::repeat_n(b'x', left));
        }
    }
}

/// A pre-built body: the MIME headers that go with it and the body itself, in both wire forms.
#[derive(Debug, Clone)]
pub struct Template {
    /// Body length in bytes (unstuffed, excluding the header block).
    pub size: usize,
    /// `MIME-Version`/`Content-Type` header lines (CRLF-terminated).
    mime_headers: Vec<u8>,
    /// The body, CRLF line endings, as sent with BDAT.
    raw: Vec<u8>,
    /// The body dot-stuffed, as sent after DATA (without the final `.` line).
    stuffed: Vec<u8>,
}

impl Template {
    /// Builds a body of exactly `size` bytes: multipart/alternative with a text and an HTML part
    /// from 512 bytes up, a single text/plain body below that.
    pub fn new(size: usize, rng: &mut fastrand::Rng) -> Self {
        let mut raw = Vec::with_capacity(size);
        let mut mime_headers = b"MIME-Version: 1.0\r\n".to_vec();
        if size < 512 {
            mime_headers.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n");
            filler(rng, size, false, &mut raw);
        } else {
            let boundary = format!("=_corepost_{:016x}", rng.u64(..));
            let _ = write!(
                mime_headers,
                "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n"
            );
            let head_text = format!(
                "This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            );
            let head_html = format!(
                "\r\n--{boundary}\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n<html><body>\r\n"
            );
            let tail = format!("</body></html>\r\n\r\n--{boundary}--\r\n");
            let overhead = head_text.len() + head_html.len() + tail.len();
            let content = size.saturating_sub(overhead);
            let text_part = content * 2 / 5;
            raw.extend_from_slice(head_text.as_bytes());
            filler(rng, text_part, false, &mut raw);
            // The text part must end with a line break before the boundary delimiter.
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(head_html.as_bytes());
            let html_part = size.saturating_sub(raw.len() + tail.len());
            filler(rng, html_part, true, &mut raw);
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(tail.as_bytes());
        }
        let mut stuffed = Vec::with_capacity(raw.len() + raw.len() / 32);
        smtp::stuff_into(&raw, true, &mut stuffed);
        Self {
            size,
            mime_headers,
            raw,
            stuffed,
        }
    }

    /// The body as sent with BDAT.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// Everything that varies per message.
#[derive(Debug, Clone, Copy)]
pub struct MessageMeta<'a> {
    /// Sequence number (for Subject and Message-ID).
    pub seq: u64,
    /// Envelope and header sender.
    pub from: &'a str,
    /// Header `To:` (the first recipient), already formatted.
    pub to: &'a [u8],
    /// Subject prefix.
    pub subject: &'a str,
    /// Our host name (Message-ID right-hand side).
    pub hostname: &'a str,
    /// The cached `Date:` value.
    pub date: &'a str,
    /// Injection time to stamp, if stamping.
    pub stamp_us: Option<u64>,
}

/// Appends the header block and the body: dot-stuffed and terminated by `.` CRLF when
/// `data_form`, raw otherwise. Returns the number of message bytes (unstuffed).
pub fn write_message(
    out: &mut Vec<u8>,
    t: &Template,
    m: &MessageMeta<'_>,
    data_form: bool,
) -> usize {
    let start = out.len();
    let _ = write!(
        out,
        "Date: {}\r\nFrom: Load Generator <{}>\r\nTo: <",
        m.date, m.from
    );
    out.extend_from_slice(m.to);
    let _ = write!(
        out,
        ">\r\nSubject: {} {}\r\nMessage-ID: <{}.{:x}@{}>\r\n",
        m.subject,
        m.seq,
        m.seq,
        start as u64 ^ m.seq.rotate_left(17),
        m.hostname
    );
    if let Some(us) = m.stamp_us {
        let _ = write!(out, "{STAMP_HEADER}: {us}\r\n");
    }
    out.extend_from_slice(&t.mime_headers);
    out.extend_from_slice(b"X-Mailer: corepost-source\r\n\r\n");
    // None of the header lines above can start with '.', so they need no stuffing.
    let header_len = out.len() - start;
    if data_form {
        out.extend_from_slice(&t.stuffed);
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    } else {
        out.extend_from_slice(&t.raw);
    }
    header_len + t.raw.len()
}

/// Formats a Unix time as an RFC 5322 date in UTC: `Tue, 24 Nov 2026 07:16:24 +0000`.
pub fn rfc5322_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_secs / 86_400;
    let secs = unix_secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s = String::with_capacity(32);
    let _ = write!(
        s,
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("9999999m").is_err());
    }

    #[test]
    fn mixes() {
        let m = parse_domain_mix("gmail.test=40, yahoo.test=30,tail:10000=30").unwrap();
        assert_eq!(m.items().len(), 3);
        assert_eq!(
            m.items()[2],
            DomainChoice::Tail {
                count: 10000,
                suffix: "tail.test".into()
            }
        );
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = [0u32; 3];
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match pick_domain(&m, &mut rng) {
                PickedDomain::Fixed("gmail.test") => counts[0] += 1,
                PickedDomain::Fixed(_) => counts[1] += 1,
                p @ PickedDomain::Tail(..) => {
                    counts[2] += 1;
                    out.clear();
                    p.write(&mut out);
                    assert!(out.starts_with(b"t") && out.ends_with(b".tail.test"));
                }
            }
        }
        assert!((3700..4300).contains(&counts[0]), "{counts:?}");
        assert!((2700..3300).contains(&counts[1]), "{counts:?}");
        assert!((2700..3300).contains(&counts[2]), "{counts:?}");
        assert!(parse_domain_mix("a=0").is_err());
        assert!(parse_domain_mix("a=x").is_err());
        assert!(parse_domain_mix("tail:0=1").is_err());
        let s = parse_size_mix("4k=70,64k=30").unwrap();
        assert_eq!(s.items(), &[4096, 65536]);
    }

    #[test]
    fn templates_have_exact_sizes_and_roundtrip() {
        let mut rng = fastrand::Rng::with_seed(1);
        for size in [0, 1, 2, 3, 100, 511, 512, 700, 4096, 100_000] {
            let t = Template::new(size, &mut rng);
            assert_eq!(t.raw.len(), size, "size {size}");
            let meta = MessageMeta {
                seq: 5,
                from: "a@b.test",
                to: b"c@d.test",
                subject: "Hello",
                hostname: "h.test",
                date: "Thu, 01 Jan 1970 00:00:00 +0000",
                stamp_us: Some(123),
            };
            let mut wire = Vec::new();
            let len = write_message(&mut wire, &t, &meta, true);
            let (content, end) = smtp::unstuff(&wire).expect("terminated");
            assert_eq!(end, wire.len());
            let mut raw = Vec::new();
            let len2 = write_message(&mut raw, &t, &meta, false);
            assert_eq!(len, len2);
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            assert_eq!(content, raw, "size {size}");
            assert!(String::from_utf8_lossy(&raw).contains("X-Corepost-Injected: 123\r\n"));
        }
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_504_584),
            "Tue, 24 Nov 2026 07:16:24 +0000"
        );
    }
}
