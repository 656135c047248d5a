//! The Sendmail milter wire format (protocol version 6), MTA side.
//!
//! A packet is a 32-bit big-endian length (the command byte plus its
//! data), the command byte, then the data: NUL-terminated strings,
//! 32-bit big-endian integers, 16-bit ports, raw bytes. [`encode`] builds
//! the packets corepost sends; [`FrameReader`] cuts a byte stream into
//! packets and [`decode_reply`] turns one into a [`Response`], refusing
//! anything Postfix's milter8 refuses (data after a data-less reply, a
//! string without its NUL, left-over bytes) — it never panics on input.

/// Commands from the MTA to the filter.
pub mod cmd {
    pub const ABORT: u8 = b'A';
    pub const BODY: u8 = b'B';
    pub const CONNECT: u8 = b'C';
    pub const MACRO: u8 = b'D';
    pub const BODYEOB: u8 = b'E';
    pub const HELO: u8 = b'H';
    pub const HEADER: u8 = b'L';
    pub const MAIL: u8 = b'M';
    pub const EOH: u8 = b'N';
    pub const OPTNEG: u8 = b'O';
    pub const QUIT: u8 = b'Q';
    pub const RCPT: u8 = b'R';
    pub const DATA: u8 = b'T';
    pub const UNKNOWN: u8 = b'U';

    /// Postfix's names, for its log lines.
    pub fn name(c: u8) -> &'static str {
        match c {
            ABORT => "SMFIC_ABORT",
            BODY => "SMFIC_BODY",
            CONNECT => "SMFIC_CONNECT",
            MACRO => "SMFIC_MACRO",
            BODYEOB => "SMFIC_BODYEOB",
            HELO => "SMFIC_HELO",
            HEADER => "SMFIC_HEADER",
            MAIL => "SMFIC_MAIL",
            EOH => "SMFIC_EOH",
            OPTNEG => "SMFIC_OPTNEG",
            QUIT => "SMFIC_QUIT",
            RCPT => "SMFIC_RCPT",
            DATA => "SMFIC_DATA",
            UNKNOWN => "SMFIC_UNKNOWN",
            _ => "(unknown MTA event)",
        }
    }
}

/// Protocol flags (SMFIP_*): events the filter does not want, replies it
/// will not send.
pub mod proto {
    pub const NOCONNECT: u32 = 1 << 0;
    pub const NOHELO: u32 = 1 << 1;
    pub const NOMAIL: u32 = 1 << 2;
    pub const NORCPT: u32 = 1 << 3;
    pub const NOBODY: u32 = 1 << 4;
    pub const NOHDRS: u32 = 1 << 5;
    pub const NOEOH: u32 = 1 << 6;
    pub const NR_HDR: u32 = 1 << 7;
    pub const NOUNKNOWN: u32 = 1 << 8;
    pub const NODATA: u32 = 1 << 9;
    pub const SKIP: u32 = 1 << 10;
    pub const RCPT_REJ: u32 = 1 << 11;
    pub const NR_CONN: u32 = 1 << 12;
    pub const NR_HELO: u32 = 1 << 13;
    pub const NR_MAIL: u32 = 1 << 14;
    pub const NR_RCPT: u32 = 1 << 15;
    pub const NR_DATA: u32 = 1 << 16;
    pub const NR_UNKN: u32 = 1 << 17;
    pub const NR_EOH: u32 = 1 << 18;
    pub const NR_BODY: u32 = 1 << 19;
    pub const HDR_LEADSPC: u32 = 1 << 20;

    pub const NOSEND_MASK: u32 =
        NOCONNECT | NOHELO | NOMAIL | NORCPT | NOBODY | NOHDRS | NOEOH | NOUNKNOWN | NODATA;
    pub const NOREPLY_MASK: u32 =
        NR_CONN | NR_HELO | NR_MAIL | NR_RCPT | NR_DATA | NR_UNKN | NR_HDR | NR_EOH | NR_BODY;
    /// The events of each protocol version (Postfix's MILTER8_V*_PROTO_MASK).
    pub const V2_MASK: u32 = NOCONNECT | NOHELO | NOMAIL | NORCPT | NOBODY | NOHDRS | NOEOH;
    pub const V3_MASK: u32 = V2_MASK | NOUNKNOWN;
    pub const V4_MASK: u32 = V3_MASK | NODATA;
    pub const V6_MASK: u32 = V4_MASK | SKIP | RCPT_REJ | NOREPLY_MASK | HDR_LEADSPC;
}

/// Actions the filter may take at end of message (SMFIF_*).
pub mod action {
    pub const ADDHDRS: u32 = 1 << 0;
    pub const CHGBODY: u32 = 1 << 1;
    pub const ADDRCPT: u32 = 1 << 2;
    pub const DELRCPT: u32 = 1 << 3;
    pub const CHGHDRS: u32 = 1 << 4;
    pub const QUARANTINE: u32 = 1 << 5;
    pub const CHGFROM: u32 = 1 << 6;
    pub const ADDRCPT_PAR: u32 = 1 << 7;
    pub const SETSYMLIST: u32 = 1 << 8;
    /// Everything corepost implements, as Postfix offers it.
    pub const ALL: u32 = ADDHDRS
        | CHGBODY
        | ADDRCPT
        | DELRCPT
        | CHGHDRS
        | QUARANTINE
        | CHGFROM
        | ADDRCPT_PAR
        | SETSYMLIST;
}

/// Body chunks are at most this long (Postfix's MILTER_CHUNK_SIZE).
pub const CHUNK_SIZE: usize = 65535;

/// The longest packet accepted from a filter. Postfix allows INT_MAX/2;
/// corepost keeps a message in memory and takes 64 MiB, far above
/// libmilter's 64 KiB body-replacement chunks.
pub const MAX_PACKET: usize = 64 << 20;

/// One argument of a packet being built.
pub enum Arg<'a> {
    Str(&'a str),
    Bytes(&'a [u8]),
    Long(u32),
    Short(u16),
    Octet(u8),
}

/// A packet: length, command, arguments (strings get their NUL).
pub fn encode(command: u8, args: &[Arg<'_>]) -> Vec<u8> {
    let mut data = Vec::new();
    for a in args {
        match a {
            Arg::Str(s) => {
                // A NUL inside would cut the string short on the other side.
                data.extend(s.bytes().filter(|&b| b != 0));
                data.push(0);
            }
            Arg::Bytes(b) => data.extend_from_slice(b),
            Arg::Long(n) => data.extend_from_slice(&n.to_be_bytes()),
            Arg::Short(n) => data.extend_from_slice(&n.to_be_bytes()),
            Arg::Octet(o) => data.push(*o),
        }
    }
    let mut out = Vec::with_capacity(data.len() + 5);
    out.extend_from_slice(&((data.len() + 1) as u32).to_be_bytes());
    out.push(command);
    out.extend_from_slice(&data);
    out
}

/// SMFIC_MACRO for `event`: name/value pairs.
pub fn encode_macros(event: u8, macros: &[(String, String)]) -> Vec<u8> {
    let mut args = vec![Arg::Octet(event)];
    for (n, v) in macros {
        args.push(Arg::Str(n));
        args.push(Arg::Str(v));
    }
    encode(cmd::MACRO, &args)
}

/// Why a packet or reply could not be read (Postfix's warning texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    BadLength(i64),
    TooLong(usize),
    /// `reply X was followed by N data bytes`.
    TrailingData(&'static str, usize),
    ShortLong,
    ShortString,
    MissingNul,
    LeftOver(usize),
    Unknown(u8),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadLength(n) => write!(f, "bad packet length: {n}"),
            DecodeError::TooLong(n) => {
                write!(f, "unreasonable packet length: {n} > {MAX_PACKET}")
            }
            DecodeError::TrailingData(r, n) => {
                write!(f, "reply {r} was followed by {n} data bytes")
            }
            DecodeError::ShortLong => write!(f, "input packet too short for network long"),
            DecodeError::ShortString => write!(f, "packet too short for string"),
            DecodeError::MissingNul => write!(f, "missing string null terminator"),
            DecodeError::LeftOver(n) => write!(f, "left-over data {n} bytes"),
            DecodeError::Unknown(c) => write!(f, "unexpected filter response 0x{c:02x}"),
        }
    }
}

/// A packet in a buffer: command, data, bytes it took.
pub type Packet<'a> = (u8, &'a [u8], usize);

/// Cuts packets out of buffered input.
pub struct FrameReader;

impl FrameReader {
    /// The first complete packet in `buf`: (command, data, bytes used), or
    /// `None` when more input is needed.
    pub fn next(buf: &[u8]) -> Result<Option<Packet<'_>>, DecodeError> {
        let Some(len) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len < 1 {
            return Err(DecodeError::BadLength(len as i64));
        }
        if len > MAX_PACKET {
            return Err(DecodeError::TooLong(len));
        }
        match buf.get(4..4 + len) {
            Some(packet) => Ok(Some((packet[0], &packet[1..], 4 + len))),
            None => Ok(None),
        }
    }
}

/// What a filter answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// SMFIC_OPTNEG: version, actions, protocol flags, macro lists by stage.
    OptNeg {
        version: u32,
        actions: u32,
        protocol: u32,
        macros: Vec<(u32, String)>,
    },
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    Shutdown,
    ConnFail,
    Progress,
    Skip,
    /// SMFIR_REPLYCODE: `ddd x.y.z text`, possibly multi-line.
    ReplyCode(String),
    Quarantine(String),
    AddHeader {
        name: String,
        value: String,
    },
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    ChangeFrom {
        address: String,
        args: String,
    },
    AddRcpt {
        address: String,
        args: String,
    },
    DelRcpt(String),
    ReplaceBody(Vec<u8>),
}

impl Response {
    /// Postfix's SMFIR_* name.
    pub fn name(&self) -> &'static str {
        match self {
            Response::OptNeg { .. } => "SMFIC_OPTNEG",
            Response::Accept => "SMFIR_ACCEPT",
            Response::Continue => "SMFIR_CONTINUE",
            Response::Discard => "SMFIR_DISCARD",
            Response::Reject => "SMFIR_REJECT",
            Response::Tempfail => "SMFIR_TEMPFAIL",
            Response::Shutdown => "SMFIR_SHUTDOWN",
            Response::ConnFail => "SMFIR_CONN_FAIL",
            Response::Progress => "SMFIR_PROGRESS",
            Response::Skip => "SMFIR_SKIP",
            Response::ReplyCode(_) => "SMFIR_REPLYCODE",
            Response::Quarantine(_) => "SMFIR_QUARANTINE",
            Response::AddHeader { .. } => "SMFIR_ADDHEADER",
            Response::ChangeHeader { .. } => "SMFIR_CHGHEADER",
            Response::InsertHeader { .. } => "SMFIR_INSHEADER",
            Response::ChangeFrom { .. } => "SMFIR_CHGFROM",
            Response::AddRcpt { .. } => "SMFIR_ADDRCPT",
            Response::DelRcpt(_) => "SMFIR_DELRCPT",
            Response::ReplaceBody(_) => "SMFIR_REPLBODY",
        }
    }
}

/// A cursor over a packet's data.
struct Data<'a>(&'a [u8]);

impl<'a> Data<'a> {
    fn long(&mut self) -> Result<u32, DecodeError> {
        let (n, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or(DecodeError::ShortLong)?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*n))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        if self.0.is_empty() {
            return Err(DecodeError::ShortString);
        }
        let end = memchr::memchr(0, self.0).ok_or(DecodeError::MissingNul)?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }

    /// An optional trailing string (ESMTP arguments).
    fn optional_string(&mut self) -> Result<String, DecodeError> {
        if self.0.is_empty() {
            Ok(String::new())
        } else {
            self.string()
        }
    }

    fn done(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::LeftOver(self.0.len()))
        }
    }
}

/// Decode one packet from a filter.
pub fn decode_reply(command: u8, data: &[u8]) -> Result<Response, DecodeError> {
    let bare = |r: Response| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(DecodeError::TrailingData(r.name(), data.len()))
        }
    };
    let mut d = Data(data);
    let r = match command {
        b'O' => {
            let (version, actions, protocol) = (d.long()?, d.long()?, d.long()?);
            let mut macros = Vec::new();
            while !d.0.is_empty() {
                macros.push((d.long()?, d.string()?));
            }
            Response::OptNeg {
                version,
                actions,
                protocol,
                macros,
            }
        }
        b'a' => return bare(Response::Accept),
        b'c' => return bare(Response::Continue),
        b'd' => return bare(Response::Discard),
        b'r' => return bare(Response::Reject),
        b't' => return bare(Response::Tempfail),
        b'4' => return bare(Response::Shutdown),
        b'f' => return bare(Response::ConnFail),
        b'p' => return bare(Response::Progress),
        b's' => return bare(Response::Skip),
        b'y' => {
            // Raw data; libmilter sends a trailing NUL.
            let text = data.strip_suffix(&[0]).unwrap_or(data);
            return Ok(Response::ReplyCode(
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        b'q' => {
            let text = data.strip_suffix(&[0]).unwrap_or(data);
            return Ok(Response::Quarantine(
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        b'h' => Response::AddHeader {
            name: d.string()?,
            value: d.string()?,
        },
        b'm' => Response::ChangeHeader {
            index: d.long()?,
            name: d.string()?,
            value: d.string()?,
        },
        b'i' => Response::InsertHeader {
            index: d.long()?,
            name: d.string()?,
            value: d.string()?,
        },
        b'e' => Response::ChangeFrom {
            address: d.string()?,
            args: d.optional_string()?,
        },
        b'+' => Response::AddRcpt {
            address: d.string()?,
            args: String::new(),
        },
        b'2' => Response::AddRcpt {
            address: d.string()?,
            args: d.optional_string()?,
        },
        b'-' => Response::DelRcpt(d.string()?),
        b'b' => return Ok(Response::ReplaceBody(data.to_vec())),
        other => return Err(DecodeError::Unknown(other)),
    };
    d.done()?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_postfix_optneg() {
        let p = encode(
            cmd::OPTNEG,
            &[
                Arg::Long(6),
                Arg::Long(action::ALL),
                Arg::Long(proto::V6_MASK),
            ],
        );
        assert_eq!(&p[..5], &[0, 0, 0, 13, b'O']);
        assert_eq!(&p[5..9], &[0, 0, 0, 6]);
        assert_eq!(action::ALL, 0x1ff);
        assert_eq!(proto::V6_MASK, 0x1fffff);
    }

    #[test]
    fn encodes_connect_and_macros() {
        let p = encode(
            cmd::CONNECT,
            &[
                Arg::Str("host.example"),
                Arg::Octet(b'4'),
                Arg::Short(2525),
                Arg::Str("127.0.0.1"),
            ],
        );
        let (c, data, used) = FrameReader::next(&p).unwrap().unwrap();
        assert_eq!((c, used), (b'C', p.len()));
        assert_eq!(data, b"host.example\x004\x09\xdd127.0.0.1\x00");
        let m = encode_macros(cmd::CONNECT, &[("j".into(), "mx".into())]);
        assert_eq!(&m[4..], b"DCj\x00mx\x00");
    }

    #[test]
    fn decodes_replies_like_milter8() {
        assert_eq!(decode_reply(b'c', b""), Ok(Response::Continue));
        assert_eq!(
            decode_reply(b'c', b"x"),
            Err(DecodeError::TrailingData("SMFIR_CONTINUE", 1))
        );
        assert_eq!(
            decode_reply(b'm', b"\0\0\0\x02Subject\0new\0"),
            Ok(Response::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: "new".into()
            })
        );
        assert_eq!(
            decode_reply(b'e', b"<a@b>\0"),
            Ok(Response::ChangeFrom {
                address: "<a@b>".into(),
                args: String::new()
            })
        );
        assert_eq!(
            decode_reply(b'2', b"<a@b>\0NOTIFY=NEVER\0"),
            Ok(Response::AddRcpt {
                address: "<a@b>".into(),
                args: "NOTIFY=NEVER".into()
            })
        );
        assert_eq!(decode_reply(b'h', b"X\0y"), Err(DecodeError::MissingNul));
        assert_eq!(decode_reply(b'-', b"a\0b\0"), Err(DecodeError::LeftOver(2)));
        assert_eq!(
            decode_reply(b'y', b"554 5.7.1 no\0"),
            Ok(Response::ReplyCode("554 5.7.1 no".into()))
        );
        assert_eq!(
            decode_reply(b'O', b"\0\0\0\x06\0\0\0\x01\0\0\0\0\0\0\0\x01{i} j\0"),
            Ok(Response::OptNeg {
                version: 6,
                actions: 1,
                protocol: 0,
                macros: vec![(1, "{i} j".into())]
            })
        );
    }

    #[test]
    fn frames_wait_for_input_and_refuse_bad_lengths() {
        assert_eq!(FrameReader::next(&[0, 0]), Ok(None));
        assert_eq!(FrameReader::next(&[0, 0, 0, 2, b'c']), Ok(None));
        assert_eq!(
            FrameReader::next(&[0, 0, 0, 0]),
            Err(DecodeError::BadLength(0))
        );
        assert!(matches!(
            FrameReader::next(&[0xff, 0, 0, 0]),
            Err(DecodeError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(cmd in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_reply(cmd, &data);
        }

        #[test]
        fn any_stream_frames_cleanly(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut rest = &data[..];
            while let Ok(Some((_, _, used))) = FrameReader::next(rest) {
                prop_assert!(used >= 5 && used <= rest.len());
                rest = &rest[used..];
            }
        }

        #[test]
        fn header_edits_round_trip(index in any::<u32>(), name in "[A-Za-z-]{1,20}", value in "[ -~]{0,60}") {
            let packet = encode(b'i', &[Arg::Long(index), Arg::Str(&name), Arg::Str(&value)]);
            let (c, data, _) = FrameReader::next(&packet).unwrap().unwrap();
            prop_assert_eq!(decode_reply(c, data), Ok(Response::InsertHeader { index, name, value }));
        }
    }
}
