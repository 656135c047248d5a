//! The server's ESMTP extensions, read from the EHLO reply (RFC 5321 §4.1.1.1).
//!
//! Only the extensions the client acts on are kept; the rest are ignored. Keywords are matched
//! case-insensitively. After STARTTLS the capabilities are read again from the second EHLO: what
//! was advertised in plaintext is not trusted.

use super::reply::reply_lines;

/// What the server said it supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO was accepted (false after a fallback to HELO: no extensions at all).
    pub esmtp: bool,
    pub pipelining: bool,
    /// `SIZE` was advertised.
    pub size: bool,
    /// The advertised limit; `None` with `SIZE` alone or `SIZE 0` (no fixed limit).
    pub size_limit: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub binarymime: bool,
    pub starttls: bool,
    pub enhanced_status_codes: bool,
    /// `AUTH` (or the old `AUTH=`) mechanisms, upper case; `None` when AUTH was not advertised.
    pub auth: Option<Vec<String>>,
}

impl Capabilities {
    /// Read the extensions from the raw bytes of a complete, validated EHLO reply. The first line
    /// is the server's greeting name and is skipped.
    pub fn from_ehlo(reply: &[u8]) -> Capabilities {
        let mut caps = Capabilities {
            esmtp: true,
            ..Capabilities::default()
        };
        for line in reply_lines(reply).skip(1) {
            let text = line.get(4..).unwrap_or_default();
            let mut words = text
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name.as_bytes());
            // `AUTH PLAIN LOGIN` and the pre-RFC `AUTH=PLAIN LOGIN`; both lists are merged.
            if keyword.len() >= 4
                && keyword[..4].eq_ignore_ascii_case(b"AUTH")
                && (keyword.len() == 4 || keyword[4] == b'=')
            {
                let first = keyword.get(5..).filter(|w| !w.is_empty());
                let list = caps.auth.get_or_insert_with(Vec::new);
                for w in first.into_iter().chain(words) {
                    let mech = String::from_utf8_lossy(w).to_ascii_uppercase();
                    if !list.contains(&mech) {
                        list.push(mech);
                    }
                }
                continue;
            }
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = true;
                caps.size_limit = words
                    .next()
                    .and_then(|w| std::str::from_utf8(w).ok())
                    .and_then(|w| w.parse::<u64>().ok())
                    .filter(|&n| n > 0);
            } else if is("8BITMIME") {
                caps.eightbitmime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("DSN") {
                caps.dsn = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("BINARYMIME") {
                caps.binarymime = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            }
        }
        caps
    }

    /// Forget the extensions named in `smtp_discard_ehlo_keywords` (lower
    /// case), as if the server had not announced them.
    pub fn discard(&mut self, keywords: &[String]) {
        for k in keywords {
            match k.as_str() {
                "pipelining" => self.pipelining = false,
                "size" => {
                    self.size = false;
                    self.size_limit = None;
                }
                "8bitmime" => self.eightbitmime = false,
                "smtputf8" => self.smtputf8 = false,
                "dsn" => self.dsn = false,
                "chunking" => self.chunking = false,
                "binarymime" => self.binarymime = false,
                "starttls" => self.starttls = false,
                "enhancedstatuscodes" => self.enhanced_status_codes = false,
                "auth" => self.auth = None,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_extensions() {
        let reply = b"250-mx.example.com hello\r\n250-pipelining\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n\
            250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250-STARTTLS\r\n250 ENHANCEDSTATUSCODES\r\n";
        let c = Capabilities::from_ehlo(reply);
        assert!(c.esmtp && c.pipelining && c.size && c.eightbitmime && c.smtputf8 && c.dsn);
        assert!(c.chunking && c.binarymime && c.starttls && c.enhanced_status_codes);
        assert_eq!(c.size_limit, Some(10_240_000));
        assert_eq!(c.auth, None);
    }

    #[test]
    fn auth_mechanisms_both_forms() {
        let c =
            Capabilities::from_ehlo(b"250-x\r\n250-AUTH PLAIN login\r\n250 AUTH=LOGIN XOAUTH2\r\n");
        assert_eq!(
            c.auth.as_deref(),
            Some(&["PLAIN".to_string(), "LOGIN".into(), "XOAUTH2".into()][..])
        );
        let mut c = Capabilities::from_ehlo(b"250-x\r\n250 AUTH\r\n");
        assert_eq!(c.auth.as_deref(), Some(&[][..]));
        c.discard(&["auth".into()]);
        assert_eq!(c.auth, None);
        assert_eq!(
            Capabilities::from_ehlo(b"250-x\r\n250 AUTHX PLAIN\r\n").auth,
            None
        );
    }

    #[test]
    fn size_without_limit_and_garbage() {
        let c =
            Capabilities::from_ehlo(b"250-x\r\n250-SIZE\r\n250-\r\n250-SIZE junk\r\n250 X-FOO\r\n");
        assert!(c.size);
        assert_eq!(c.size_limit, None);
        let c = Capabilities::from_ehlo(b"250-x\r\n250 SIZE 0\r\n");
        assert_eq!(c.size_limit, None);
        // The greeting line is not a keyword.
        assert!(!Capabilities::from_ehlo(b"250 PIPELINING\r\n").pipelining);
    }

    #[test]
    fn discarded_keywords_are_forgotten() {
        let reply = b"250-mx.example.com\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SIZE 100\r\n";
        let mut caps = Capabilities::from_ehlo(reply);
        assert!(caps.chunking && caps.pipelining && caps.size_limit == Some(100));
        caps.discard(&["chunking".into(), "size".into(), "silent-discard".into()]);
        assert!(!caps.chunking && !caps.size && caps.size_limit.is_none());
        assert!(caps.pipelining);
    }
}
