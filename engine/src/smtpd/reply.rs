//! SMTP replies: a code, an enhanced status code (RFC 3463) and text, and
//! their wire form (multi-line replies use `250-` continuation lines).

use std::fmt::Write;

/// One SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code (`2.0.0`), empty for replies without one
    /// (greeting, EHLO, 354).
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    /// A reply whose enhanced status code is only known at run time (from an
    /// access table or a policy server): the code is written as the start
    /// of the text, which gives the same wire form and log summary.
    pub fn with_status(code: u16, status: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: "",
            text: format!("{status} {}", text.into()),
        }
    }

    /// Append the wire form to `out`. Lines of a multi-line text become
    /// continuation lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let mut s = String::with_capacity(self.text.len() + 16);
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let _ = write!(s, "{}{}", self.code, sep);
            if !self.status.is_empty() {
                let _ = write!(s, "{} ", self.status);
            }
            s.push_str(line.trim_end_matches('\r'));
            s.push_str("\r\n");
        }
        out.extend_from_slice(s.as_bytes());
    }

    /// The reply as one log-friendly line: `550 5.1.1 text`.
    pub fn summary(&self) -> String {
        if self.status.is_empty() {
            format!("{} {}", self.code, self.text.replace('\n', " "))
        } else {
            format!(
                "{} {} {}",
                self.code,
                self.status,
                self.text.replace('\n', " ")
            )
        }
    }

    /// `soft_bounce`: a 5xx reply becomes 4xx and its enhanced status
    /// 4.x.x, as Postfix's smtpd_check_reject does.
    pub fn soft_bounced(self) -> Reply {
        if !(500..600).contains(&self.code) {
            return self;
        }
        let code = self.code - 100;
        if let Some(rest) = self.status.strip_prefix('5') {
            return Reply::with_status(code, &format!("4{rest}"), self.text);
        }
        let text = match self.text.strip_prefix('5') {
            Some(rest) if self.text.as_bytes().get(1) == Some(&b'.') => format!("4{rest}"),
            _ => self.text,
        };
        Reply {
            code,
            status: self.status,
            text,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_bounce_turns_5xx_into_4xx() {
        let r = Reply::new(554, "5.7.1", "<a@b>: Relay access denied").soft_bounced();
        assert_eq!(r.summary(), "454 4.7.1 <a@b>: Relay access denied");
        let r = Reply::with_status(550, "5.1.1", "unknown").soft_bounced();
        assert_eq!(r.summary(), "450 4.1.1 unknown");
        let r = Reply::new(451, "4.3.0", "x").soft_bounced();
        assert_eq!(r.summary(), "451 4.3.0 x");
    }

    #[test]
    fn single_and_multi_line() {
        let mut out = Vec::new();
        Reply::new(250, "2.1.0", "Ok").write_to(&mut out);
        Reply::new(250, "", "mx.example.com\nPIPELINING\nSIZE 100").write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "250 2.1.0 Ok\r\n250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 100\r\n"
        );
        assert_eq!(Reply::new(550, "5.1.1", "no").summary(), "550 5.1.1 no");
    }
}
