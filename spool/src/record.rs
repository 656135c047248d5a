//! What the spool stores: message, moved, outcome and administrative
//! records, and their payload encodings (see FORMAT.md for the layout).
//!
//! A message record carries the whole envelope — sender with its ESMTP
//! parameters, every recipient with ORCPT, NOTIFY, transport and next hop,
//! and the client attributes a Received header and a log line need —
//! followed by the content. The content is the tail of the payload, so a
//! reader can take it as a slice of the segment mapping without copying.

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::queue_id::QueueId;

/// Record types (the frame's type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// A newly accepted message.
    Message = 1,
    /// A message rewritten by compaction or adoption; supersedes earlier
    /// copies with the same queue id.
    Moved = 2,
    /// The outcome of a delivery attempt for one recipient.
    Outcome = 3,
    /// Hold, release, delete, requeue.
    Admin = 4,
    /// The writer moved on to the next segment; nothing follows.
    Seal = 5,
    /// The outcomes of several recipients of one message from one delivery
    /// attempt (one SMTP transaction): one record instead of one each.
    Outcomes = 6,
}

impl RecordType {
    pub fn from_u8(v: u8) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::Message,
            2 => RecordType::Moved,
            3 => RecordType::Outcome,
            4 => RecordType::Admin,
            5 => RecordType::Seal,
            6 => RecordType::Outcomes,
            _ => return None,
        })
    }
}

/// RFC 6152 / RFC 3030 body type from `MAIL FROM ... BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
    BinaryMime,
}

/// RFC 3461 `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Headers,
}

/// The sender's ESMTP parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

/// RFC 3461 NOTIFY bits.
pub mod notify {
    pub const NEVER: u8 = 1;
    pub const SUCCESS: u8 = 2;
    pub const FAILURE: u8 = 4;
    pub const DELAY: u8 = 8;
}

/// Where a recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecipientState {
    #[default]
    Pending,
    Delivered,
    Bounced,
    Expired,
    /// Finished earlier, with the details in records that compaction
    /// dropped (moved records only).
    Finished,
}

impl RecipientState {
    pub fn is_final(self) -> bool {
        self != RecipientState::Pending
    }
}

/// One envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    pub address: String,
    /// RFC 3461 ORCPT, as received (`rfc822;user@example.com`).
    pub orcpt: Option<String>,
    /// [`notify`] bits; 0 means the client gave no NOTIFY.
    pub notify: u8,
    /// Resolved transport (`smtp`, `relay`, `local`, ...).
    pub transport: String,
    /// Resolved next hop (`example.com`, `[10.0.0.1]:25`, ...).
    pub nexthop: String,
    /// Only moved records carry states other than Pending.
    pub state: RecipientState,
    /// The address as received, when address rewriting (virtual aliases,
    /// canonical maps) changed it: Postfix's `orig_to`. `None` when the
    /// address was not rewritten.
    pub original: Option<String>,
}

/// The client and protocol attributes of the session that handed the
/// message over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Verified host name or `unknown`.
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPSA`, `LMTP`, `local`, ...
    pub protocol: String,
    pub sasl_username: Option<String>,
    /// TLS protocol and cipher, when TLS was used.
    pub tls: Option<String>,
}

impl ClientInfo {
    /// A message that originates on this host (sendmail/pickup, or made by
    /// a delivery agent: forwards, `luser_relay`): Postfix's `local`
    /// protocol from `localhost[127.0.0.1]`.
    pub fn local() -> ClientInfo {
        ClientInfo {
            name: "localhost".into(),
            addr: "127.0.0.1".into(),
            protocol: "local".into(),
            ..ClientInfo::default()
        }
    }
}

/// A message envelope (everything but the content).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub queue_id: QueueId,
    /// Microseconds since the epoch.
    pub arrival: u64,
    /// Empty for the null sender `<>`.
    pub sender: String,
    pub params: MailParams,
    pub client: ClientInfo,
    pub recipients: Vec<Recipient>,
    /// Earliest next delivery attempt, microseconds (0 = now). Moved
    /// records carry the deferral state this way.
    pub next_attempt: u64,
    /// On hold (moved records only).
    pub held: bool,
}

/// Set in a recipient's state byte when the address as received follows
/// it (the recipient was rewritten). Records without rewritten recipients
/// are byte-for-byte what earlier versions wrote.
const ORIGINAL_FOLLOWS: u8 = 0x80;

/// Most recipients one message record may carry.
pub const MAX_RECIPIENTS: usize = 1 << 20;

impl Envelope {
    /// Encode the envelope; the content follows it in the payload.
    pub fn encode(&self, e: &mut Encoder) {
        e.u128(self.queue_id.as_u128());
        e.varint(self.arrival);
        e.str(&self.sender);
        let p = &self.params;
        e.varint(p.size.map_or(0, |s| s.saturating_add(1)));
        e.u8(match p.body {
            BodyType::SevenBit => 0,
            BodyType::EightBitMime => 1,
            BodyType::BinaryMime => 2,
        });
        e.u8(u8::from(p.smtputf8));
        e.u8(match p.ret {
            None => 0,
            Some(Ret::Full) => 1,
            Some(Ret::Headers) => 2,
        });
        e.opt_str(p.envid.as_deref());
        let c = &self.client;
        e.str(&c.name);
        e.str(&c.addr);
        e.varint(u64::from(c.port));
        e.str(&c.helo);
        e.str(&c.protocol);
        e.opt_str(c.sasl_username.as_deref());
        e.opt_str(c.tls.as_deref());
        e.varint(self.next_attempt);
        e.u8(u8::from(self.held));
        e.varint(self.recipients.len() as u64);
        for r in &self.recipients {
            e.str(&r.address);
            e.opt_str(r.orcpt.as_deref());
            e.u8(r.notify);
            e.str(&r.transport);
            e.str(&r.nexthop);
            let state = match r.state {
                RecipientState::Pending => 0,
                RecipientState::Delivered => 1,
                RecipientState::Bounced => 2,
                RecipientState::Expired => 3,
                RecipientState::Finished => 4,
            };
            match &r.original {
                None => e.u8(state),
                Some(original) => {
                    e.u8(state | ORIGINAL_FOLLOWS);
                    e.str(original);
                }
            }
        }
    }

    /// Decode an envelope; the decoder is left at the start of the content.
    pub fn decode(d: &mut Decoder<'_>) -> Result<Envelope, DecodeError> {
        let queue_id = QueueId::from_u128(d.u128()?).ok_or(DecodeError("queue id out of range"))?;
        let arrival = d.varint()?;
        let sender = d.str()?;
        let size = match d.varint()? {
            0 => None,
            n => Some(n - 1),
        };
        let body = match d.u8()? {
            0 => BodyType::SevenBit,
            1 => BodyType::EightBitMime,
            2 => BodyType::BinaryMime,
            _ => return Err(DecodeError("bad body type")),
        };
        let smtputf8 = bool_of(d.u8()?)?;
        let ret = match d.u8()? {
            0 => None,
            1 => Some(Ret::Full),
            2 => Some(Ret::Headers),
            _ => return Err(DecodeError("bad RET")),
        };
        let envid = d.opt_str()?;
        let client = ClientInfo {
            name: d.str()?,
            addr: d.str()?,
            port: d.bounded(u64::from(u16::MAX))? as u16,
            helo: d.str()?,
            protocol: d.str()?,
            sasl_username: d.opt_str()?,
            tls: d.opt_str()?,
        };
        let next_attempt = d.varint()?;
        let held = bool_of(d.u8()?)?;
        let count = d.bounded(MAX_RECIPIENTS as u64)? as usize;
        // Each recipient takes at least 6 bytes: bound the allocation by
        // what the payload can hold.
        let mut recipients = Vec::with_capacity(count.min(d.remaining() / 6));
        for _ in 0..count {
            let address = d.str()?;
            let orcpt = d.opt_str()?;
            let notify = d.u8()?;
            let transport = d.str()?;
            let nexthop = d.str()?;
            let byte = d.u8()?;
            let state = match byte & !ORIGINAL_FOLLOWS {
                0 => RecipientState::Pending,
                1 => RecipientState::Delivered,
                2 => RecipientState::Bounced,
                3 => RecipientState::Expired,
                4 => RecipientState::Finished,
                _ => return Err(DecodeError("bad recipient state")),
            };
            let original = if byte & ORIGINAL_FOLLOWS != 0 {
                Some(d.str()?)
            } else {
                None
            };
            recipients.push(Recipient {
                address,
                orcpt,
                notify,
                transport,
                nexthop,
                state,
                original,
            });
        }
        Ok(Envelope {
            queue_id,
            arrival,
            sender,
            params: MailParams {
                size,
                body,
                smtputf8,
                ret,
                envid,
            },
            client,
            recipients,
            next_attempt,
            held,
        })
    }
}

fn bool_of(v: u8) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError("bad boolean")),
    }
}

/// What happened to one recipient in one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    /// Try again at `next_attempt` (microseconds since the epoch).
    Deferred {
        next_attempt: u64,
    },
    Bounced,
    /// Gave up at `maximal_queue_lifetime`.
    Expired,
}

impl OutcomeKind {
    pub fn final_state(self) -> Option<RecipientState> {
        match self {
            OutcomeKind::Delivered => Some(RecipientState::Delivered),
            OutcomeKind::Bounced => Some(RecipientState::Bounced),
            OutcomeKind::Expired => Some(RecipientState::Expired),
            OutcomeKind::Deferred { .. } => None,
        }
    }
}

/// A per-recipient outcome record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub queue_id: QueueId,
    /// Index into the message's recipient list.
    pub recipient: u32,
    pub kind: OutcomeKind,
    /// When it happened, microseconds since the epoch.
    pub at: u64,
    /// Enhanced status code, e.g. `2.0.0`, `4.4.1`, `5.1.1`.
    pub dsn: String,
    /// The remote reply or our own explanation, for logs and DSNs.
    pub reply: String,
    /// `host[addr]:port` that gave the reply, or `none`.
    pub relay: String,
}

impl Outcome {
    pub fn encode(&self, e: &mut Encoder) {
        e.u128(self.queue_id.as_u128());
        self.encode_rest(e);
    }

    /// Everything after the queue id.
    fn encode_rest(&self, e: &mut Encoder) {
        e.varint(u64::from(self.recipient));
        match self.kind {
            OutcomeKind::Delivered => e.u8(1),
            OutcomeKind::Deferred { next_attempt } => {
                e.u8(2);
                e.varint(next_attempt);
            }
            OutcomeKind::Bounced => e.u8(3),
            OutcomeKind::Expired => e.u8(4),
        }
        e.varint(self.at);
        e.str(&self.dsn);
        e.str(&self.reply);
        e.str(&self.relay);
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<Outcome, DecodeError> {
        let queue_id = QueueId::from_u128(d.u128()?).ok_or(DecodeError("queue id out of range"))?;
        Outcome::decode_rest(queue_id, d)
    }

    fn decode_rest(queue_id: QueueId, d: &mut Decoder<'_>) -> Result<Outcome, DecodeError> {
        let recipient = d.bounded(u64::from(u32::MAX))? as u32;
        let kind = match d.u8()? {
            1 => OutcomeKind::Delivered,
            2 => OutcomeKind::Deferred {
                next_attempt: d.varint()?,
            },
            3 => OutcomeKind::Bounced,
            4 => OutcomeKind::Expired,
            _ => return Err(DecodeError("bad outcome kind")),
        };
        Ok(Outcome {
            queue_id,
            recipient,
            kind,
            at: d.varint()?,
            dsn: d.str()?,
            reply: d.str()?,
            relay: d.str()?,
        })
    }
}

/// The payload of an [`RecordType::Outcomes`] record: the outcomes of one
/// message's recipients from one delivery attempt. Like every record it
/// starts with the queue id; then the count and, per recipient, an
/// [`Outcome`] without its queue id.
pub struct Outcomes;

/// The least bytes one outcome takes after the queue id (recipient, kind,
/// time and three empty strings): bounds the allocation when decoding.
const MIN_OUTCOME_REST: usize = 6;

impl Outcomes {
    /// Encode `outcomes`, which must all be about the same message (the
    /// first one's queue id is the record's).
    pub fn encode(outcomes: &[Outcome], e: &mut Encoder) {
        let id = outcomes.first().map_or(0, |o| o.queue_id.as_u128());
        debug_assert!(outcomes.iter().all(|o| o.queue_id.as_u128() == id));
        e.u128(id);
        e.varint(outcomes.len() as u64);
        for o in outcomes {
            o.encode_rest(e);
        }
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<Vec<Outcome>, DecodeError> {
        let queue_id = QueueId::from_u128(d.u128()?).ok_or(DecodeError("queue id out of range"))?;
        let count = d.bounded(MAX_RECIPIENTS as u64)? as usize;
        let mut out = Vec::with_capacity(count.min(d.remaining() / MIN_OUTCOME_REST));
        for _ in 0..count {
            out.push(Outcome::decode_rest(queue_id, d)?);
        }
        Ok(out)
    }
}

/// Administrative actions (`corepost queue hold|release|delete|requeue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    Hold,
    Release,
    Delete,
    /// Make the message eligible for delivery now.
    Requeue,
    /// A delay warning (`delay_warning_time`) went to the sender: never
    /// again for this message, across restarts.
    DelayWarned,
}

/// An administrative record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admin {
    pub queue_id: QueueId,
    pub action: AdminAction,
    pub at: u64,
}

impl Admin {
    pub fn encode(&self, e: &mut Encoder) {
        e.u128(self.queue_id.as_u128());
        e.u8(match self.action {
            AdminAction::Hold => 1,
            AdminAction::Release => 2,
            AdminAction::Delete => 3,
            AdminAction::Requeue => 4,
            AdminAction::DelayWarned => 5,
        });
        e.varint(self.at);
    }

    pub fn decode(d: &mut Decoder<'_>) -> Result<Admin, DecodeError> {
        let queue_id = QueueId::from_u128(d.u128()?).ok_or(DecodeError("queue id out of range"))?;
        let action = match d.u8()? {
            1 => AdminAction::Hold,
            2 => AdminAction::Release,
            3 => AdminAction::Delete,
            4 => AdminAction::Requeue,
            5 => AdminAction::DelayWarned,
            _ => return Err(DecodeError("bad admin action")),
        };
        Ok(Admin {
            queue_id,
            action,
            at: d.varint()?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample_envelope(id: QueueId, recipients: usize) -> Envelope {
        Envelope {
            queue_id: id,
            arrival: 1_764_000_000_000_000,
            sender: "alice@example.org".into(),
            params: MailParams {
                size: Some(4096),
                body: BodyType::EightBitMime,
                smtputf8: false,
                ret: Some(Ret::Headers),
                envid: Some("abc123".into()),
            },
            client: ClientInfo {
                name: "mua.example.org".into(),
                addr: "192.0.2.10".into(),
                port: 40000,
                helo: "mua".into(),
                protocol: "ESMTP".into(),
                sasl_username: None,
                tls: Some("TLSv1.3 TLS_AES_256_GCM_SHA384".into()),
            },
            recipients: (0..recipients)
                .map(|i| Recipient {
                    address: format!("user{i}@example.com"),
                    orcpt: Some(format!("rfc822;user{i}@example.com")),
                    notify: notify::FAILURE | notify::DELAY,
                    transport: "smtp".into(),
                    nexthop: "example.com".into(),
                    state: if i == 1 {
                        RecipientState::Delivered
                    } else {
                        RecipientState::Pending
                    },
                    original: (i % 2 == 1).then(|| format!("alias{i}@example.net")),
                })
                .collect(),
            next_attempt: 0,
            held: false,
        }
    }

    #[test]
    fn an_unrewritten_recipient_is_encoded_as_before() {
        let mut env = sample_envelope(QueueId::from_parts(1, 2, 3), 1);
        let mut e = Encoder::default();
        env.encode(&mut e);
        // The state byte is the last one and has no flag.
        assert_eq!(e.buf.last(), Some(&0));
        env.recipients[0].original = Some("info@alias.example".into());
        let mut e2 = Encoder::default();
        env.encode(&mut e2);
        assert_eq!(e2.buf.len(), e.buf.len() + 1 + "info@alias.example".len());
        let back = Envelope::decode(&mut Decoder::new(&e2.buf)).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn envelope_round_trip() {
        let env = sample_envelope(QueueId::from_parts(1, 2, 3), 3);
        let mut e = Encoder::default();
        env.encode(&mut e);
        e.buf.extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        let mut d = Decoder::new(&e.buf);
        assert_eq!(Envelope::decode(&mut d).unwrap(), env);
        assert_eq!(d.rest(), b"Subject: hi\r\n\r\nbody\r\n");
    }

    proptest! {
        #[test]
        fn outcome_round_trip(rcpt: u32, at: u64, next: u64, kind in 0u8..4, reply in "\\PC{0,30}") {
            let o = Outcome {
                queue_id: QueueId::from_parts(at >> 12, 1, 2),
                recipient: rcpt,
                kind: match kind { 0 => OutcomeKind::Delivered, 1 => OutcomeKind::Deferred { next_attempt: next }, 2 => OutcomeKind::Bounced, _ => OutcomeKind::Expired },
                at,
                dsn: "4.4.1".into(),
                reply,
                relay: "mx.example.com[192.0.2.1]:25".into(),
            };
            let mut e = Encoder::default();
            o.encode(&mut e);
            prop_assert_eq!(Outcome::decode(&mut Decoder::new(&e.buf)).unwrap(), o);
        }

        /// Several outcomes of one message in one record come back in order,
        /// each with the record's queue id.
        #[test]
        fn outcomes_round_trip(items in proptest::collection::vec((any::<u32>(), any::<u64>(), 0u8..4, "\\PC{0,20}"), 1..12)) {
            let id = QueueId::from_parts(7, 1, 2);
            let all: Vec<Outcome> = items.into_iter().map(|(recipient, at, kind, reply)| Outcome {
                queue_id: id,
                recipient,
                kind: match kind { 0 => OutcomeKind::Delivered, 1 => OutcomeKind::Deferred { next_attempt: at / 3 }, 2 => OutcomeKind::Bounced, _ => OutcomeKind::Expired },
                at,
                dsn: "2.0.0".into(),
                reply,
                relay: "sink[127.0.0.1]:25".into(),
            }).collect();
            let mut e = Encoder::default();
            Outcomes::encode(&all, &mut e);
            // Like every record, it starts with its queue id.
            prop_assert_eq!(&e.buf[..16], &id.as_u128().to_le_bytes()[..]);
            prop_assert_eq!(Outcomes::decode(&mut Decoder::new(&e.buf)).unwrap(), all);
        }

        /// Corrupt payloads decode to an error, never a panic.
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Envelope::decode(&mut Decoder::new(&data));
            let _ = Outcomes::decode(&mut Decoder::new(&data));
            let _ = Outcome::decode(&mut Decoder::new(&data));
            let _ = Admin::decode(&mut Decoder::new(&data));
        }

        /// Truncating a valid envelope anywhere is an error, never a panic.
        #[test]
        fn truncation_is_an_error(cut in 0usize..400) {
            let env = sample_envelope(QueueId::from_parts(9, 9, 9), 2);
            let mut e = Encoder::default();
            env.encode(&mut e);
            if cut < e.buf.len() {
                prop_assert!(Envelope::decode(&mut Decoder::new(&e.buf[..cut])).is_err());
            }
        }
    }
}
