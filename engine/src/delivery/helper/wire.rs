//! The delivery helper's wire format: one length-prefixed frame each way
//! (the daemon sends a [`Request`], the helper answers with a [`Report`]).
//!
//! A frame is a 4-byte big-endian payload length, then the payload: a
//! version byte, then the fields in declaration order — integers as 4-byte
//! big-endian, byte strings as a 4-byte length then the bytes, text as a
//! byte string that must be UTF-8, options as a 0/1 tag byte, lists as a
//! 4-byte count then the items. Decoding checks every length against what
//! is left, so a malformed or truncated frame is an error, never a panic
//! or a huge allocation.

use crate::delivery::agent::{Forward, Report, Request, RequestRecipient, Status, StatusKind};
use std::io::{self, Read, Write};

const VERSION: u8 = 1;
/// The largest frame accepted (a message plus its envelope).
pub const MAX_FRAME: u32 = 1 << 30;

/// Write `payload` as one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(payload)?;
    w.flush()
}

/// Read one frame's payload.
pub fn read_frame(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(e.kind(), "connection closed before a complete frame")
        } else {
            e
        }
    })?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is too large"),
        ));
    }
    // Grows as data arrives: a lying length cannot make us allocate it.
    let mut payload = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut payload)?;
    if payload.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated frame",
        ));
    }
    Ok(payload)
}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![VERSION])
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn len(&mut self, n: usize) {
        // Frames are capped far below 4 GiB: write_frame refuses larger.
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn text(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.text(s);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

type Decoded<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn start(buf: &'a [u8]) -> Decoded<Reader<'a>> {
        match buf.split_first() {
            Some((&VERSION, rest)) => Ok(Reader(rest)),
            Some((v, _)) => Err(format!("unknown message version {v}")),
            None => Err("empty message".into()),
        }
    }
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n > self.0.len() {
            return Err("truncated message".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Decoded<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Decoded<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Decoded<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn text(&mut self) -> Decoded<String> {
        String::from_utf8(self.bytes()?).map_err(|_| "text is not UTF-8".to_string())
    }
    fn opt_text(&mut self) -> Decoded<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.text()?)),
            t => Err(format!("bad option tag {t}")),
        }
    }
    /// A list count, checked against the bytes left (each item takes at
    /// least `min_item` bytes) so it cannot ask for a huge allocation.
    fn count(&mut self, min_item: usize) -> Decoded<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.0.len() {
            return Err("truncated list".into());
        }
        Ok(n)
    }
    fn end(self) -> Decoded<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the message".into())
        }
    }
}

/// A request as a frame payload.
pub fn encode_request(r: &Request) -> Vec<u8> {
    let mut w = Writer::new();
    w.text(&r.queue_id);
    w.text(&r.transport);
    w.text(&r.nexthop);
    w.text(&r.sender);
    w.len(r.recipients.len());
    for rc in &r.recipients {
        w.u32(rc.index);
        w.text(&rc.address);
        w.opt_text(rc.orcpt.as_deref());
    }
    w.bytes(&r.content);
    w.text(&r.client_name);
    w.text(&r.client_addr);
    w.text(&r.client_helo);
    w.text(&r.client_protocol);
    w.text(&r.sasl_username);
    w.0
}

pub fn decode_request(buf: &[u8]) -> Result<Request, String> {
    let mut r = Reader::start(buf)?;
    let queue_id = r.text()?;
    let transport = r.text()?;
    let nexthop = r.text()?;
    let sender = r.text()?;
    let n = r.count(9)?;
    let mut recipients = Vec::with_capacity(n);
    for _ in 0..n {
        recipients.push(RequestRecipient {
            index: r.u32()?,
            address: r.text()?,
            orcpt: r.opt_text()?,
        });
    }
    let request = Request {
        queue_id,
        transport,
        nexthop,
        sender,
        recipients,
        content: r.bytes()?,
        client_name: r.text()?,
        client_addr: r.text()?,
        client_helo: r.text()?,
        client_protocol: r.text()?,
        sasl_username: r.text()?,
    };
    r.end()?;
    Ok(request)
}

/// A report as a frame payload.
pub fn encode_report(report: &Report) -> Vec<u8> {
    let mut w = Writer::new();
    w.len(report.results.len());
    for (i, s) in &report.results {
        w.u32(*i);
        encode_status(&mut w, s);
    }
    w.len(report.expanded.len());
    for (i, to, s) in &report.expanded {
        w.u32(*i);
        w.text(to);
        encode_status(&mut w, s);
    }
    w.len(report.forwards.len());
    for f in &report.forwards {
        w.u32(f.for_recipient);
        w.text(&f.sender);
        w.len(f.recipients.len());
        for a in &f.recipients {
            w.text(a);
        }
        w.bytes(&f.content);
        match &f.route {
            None => w.u8(0),
            Some((t, n)) => {
                w.u8(1);
                w.text(t);
                w.text(n);
            }
        }
    }
    w.0
}

fn encode_status(w: &mut Writer, s: &Status) {
    w.u8(match s.kind {
        StatusKind::Sent => 0,
        StatusKind::Deferred => 1,
        StatusKind::Bounced => 2,
    });
    w.text(&s.dsn);
    w.text(&s.text);
}

fn decode_status(r: &mut Reader<'_>) -> Result<Status, String> {
    let kind = match r.u8()? {
        0 => StatusKind::Sent,
        1 => StatusKind::Deferred,
        2 => StatusKind::Bounced,
        k => return Err(format!("bad status kind {k}")),
    };
    Ok(Status {
        kind,
        dsn: r.text()?,
        text: r.text()?,
    })
}

pub fn decode_report(buf: &[u8]) -> Result<Report, String> {
    let mut r = Reader::start(buf)?;
    let n = r.count(13)?;
    let mut results = Vec::with_capacity(n);
    for _ in 0..n {
        let i = r.u32()?;
        results.push((i, decode_status(&mut r)?));
    }
    let n = r.count(17)?;
    let mut expanded = Vec::with_capacity(n);
    for _ in 0..n {
        let i = r.u32()?;
        let to = r.text()?;
        expanded.push((i, to, decode_status(&mut r)?));
    }
    let n = r.count(17)?;
    let mut forwards = Vec::with_capacity(n);
    for _ in 0..n {
        let for_recipient = r.u32()?;
        let sender = r.text()?;
        let m = r.count(4)?;
        let mut recipients = Vec::with_capacity(m);
        for _ in 0..m {
            recipients.push(r.text()?);
        }
        let content = r.bytes()?;
        let route = match r.u8()? {
            0 => None,
            1 => Some((r.text()?, r.text()?)),
            t => return Err(format!("bad route tag {t}")),
        };
        forwards.push(Forward {
            for_recipient,
            sender,
            recipients,
            content,
            route,
        });
    }
    r.end()?;
    Ok(Report {
        results,
        forwards,
        expanded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> Request {
        Request {
            queue_id: "4Xq1".into(),
            transport: "local".into(),
            nexthop: "example.com".into(),
            sender: "s@example.org".into(),
            recipients: vec![
                RequestRecipient {
                    index: 0,
                    address: "alice@example.com".into(),
                    orcpt: None,
                },
                RequestRecipient {
                    index: 3,
                    address: "bob@example.com".into(),
                    orcpt: Some("rfc822;bob@example.com".into()),
                },
            ],
            content: b"Subject: hi\r\n\r\nbody\xff\r\n".to_vec(),
            client_name: "localhost".into(),
            client_addr: "127.0.0.1".into(),
            client_helo: "client".into(),
            client_protocol: "ESMTP".into(),
            sasl_username: "alice".into(),
        }
    }

    fn report() -> Report {
        Report {
            results: vec![
                (0, Status::sent("delivered to maildir")),
                (3, Status::deferred("4.3.0", "cannot update mailbox")),
            ],
            forwards: vec![Forward {
                for_recipient: 3,
                sender: "".into(),
                recipients: vec!["x@y".into(), "z@w".into()],
                content: b"body".to_vec(),
                route: Some(("lmtp".into(), "[::1]:24".into())),
            }],
            expanded: vec![(3, "/var/mail/x".into(), Status::sent("delivered to file"))],
        }
    }

    #[test]
    fn request_round_trip() {
        let r = request();
        let back = decode_request(&encode_request(&r)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{r:?}"));
    }

    #[test]
    fn report_round_trip() {
        let r = report();
        let back = decode_report(&encode_report(&r)).unwrap();
        assert_eq!(back.results, r.results);
        assert_eq!(format!("{:?}", back.forwards), format!("{:?}", r.forwards));
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        let enc = encode_request(&request());
        for cut in 0..enc.len() {
            assert!(decode_request(&enc[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = enc.clone();
        long.push(0);
        assert!(decode_request(&long).is_err());
        let enc = encode_report(&report());
        for cut in 0..enc.len() {
            assert!(decode_report(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn frames() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut &buf[..]).unwrap(), b"hello");
        assert!(read_frame(&mut &buf[..buf.len() - 1]).is_err());
        assert!(read_frame(&mut &buf[..2]).is_err());
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());
        // A length promising more than is sent: an error, no big allocation.
        let lying = [0x3f, 0xff, 0xff, 0xff, 1, 2, 3];
        assert!(read_frame(&mut &lying[..]).is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_report(&bytes);
            let _ = read_frame(&mut &bytes[..]);
        }

        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
        ) {
            let mut req = encode_request(&request());
            let mut rep = encode_report(&report());
            for (at, v) in flips {
                let i = at % req.len();
                req[i] = v;
                let i = at % rep.len();
                rep[i] = v;
            }
            let _ = decode_request(&req);
            let _ = decode_report(&rep);
        }
    }
}
