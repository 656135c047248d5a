//! Queue ids: short, unique across cores and restarts, printable, and
//! ordered by arrival — corepost's version of Postfix's long queue ids.
//!
//! A queue id is 80 bits: 52 bits of microseconds since the Unix epoch
//! (enough until the year 2112), 12 bits of core number and 16 bits of a
//! per-core counter that separates ids made in the same microsecond. It is
//! written as 16 characters of Crockford's base 32 (`0-9A-Z` without `I`,
//! `L`, `O`, `U`), most significant first, so that sorting the text sorts
//! by arrival time — as `mailq` output and log searches expect.
//!
//! Uniqueness across restarts: a [`QueueIdGenerator`] is seeded with the
//! largest id its core's spool holds and never issues an id at or below
//! its last one, even if the clock steps backwards.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Length of the printed form.
pub const QUEUE_ID_LEN: usize = 16;
const TIME_BITS: u32 = 52;
const CORE_BITS: u32 = 12;
const COUNTER_BITS: u32 = 16;
/// Largest core number a queue id can carry.
pub const MAX_CORE: u16 = (1 << CORE_BITS) - 1;

/// An 80-bit queue id, stored in the low bits of a u128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct QueueId(u128);

impl QueueId {
    /// Assemble from parts; `core` is truncated to 12 bits, `micros` to 52.
    pub fn from_parts(micros: u64, core: u16, counter: u16) -> QueueId {
        let micros = u128::from(micros) & ((1 << TIME_BITS) - 1);
        let core = u128::from(core) & ((1 << CORE_BITS) - 1);
        QueueId(
            (micros << (CORE_BITS + COUNTER_BITS)) | (core << COUNTER_BITS) | u128::from(counter),
        )
    }

    /// The raw 80-bit value.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// From a raw value; `None` if it uses more than 80 bits.
    pub fn from_u128(value: u128) -> Option<QueueId> {
        (value >> (TIME_BITS + CORE_BITS + COUNTER_BITS) == 0).then_some(QueueId(value))
    }

    /// Arrival time, microseconds since the epoch.
    pub fn micros(self) -> u64 {
        (self.0 >> (CORE_BITS + COUNTER_BITS)) as u64
    }

    /// The core that created the id.
    pub fn core(self) -> u16 {
        ((self.0 >> COUNTER_BITS) & ((1 << CORE_BITS) - 1)) as u16
    }

    /// The printed form, without allocating.
    pub fn to_chars(self) -> [u8; QUEUE_ID_LEN] {
        let mut out = [0u8; QUEUE_ID_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (QUEUE_ID_LEN - 1 - i);
            *slot = ALPHABET[((self.0 >> shift) & 31) as usize];
        }
        out
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = self.to_chars();
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&chars).map_err(|_| fmt::Error)?)
    }
}

/// The text is not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: \"{0}\" (16 characters of 0-9, A-Z without I, L, O, U)")]
pub struct BadQueueId(pub String);

impl FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> Result<QueueId, BadQueueId> {
        if s.len() != QUEUE_ID_LEN {
            return Err(BadQueueId(s.to_string()));
        }
        let mut value: u128 = 0;
        for b in s.bytes() {
            let digit = ALPHABET
                .iter()
                .position(|&a| a == b.to_ascii_uppercase())
                .ok_or_else(|| BadQueueId(s.to_string()))?;
            value = (value << 5) | digit as u128;
        }
        QueueId::from_u128(value).ok_or_else(|| BadQueueId(s.to_string()))
    }
}

/// Issues increasing queue ids for one core.
#[derive(Debug, Clone)]
pub struct QueueIdGenerator {
    core: u16,
    last: QueueId,
}

impl QueueIdGenerator {
    /// A generator for `core` that will only issue ids above `floor`
    /// (the largest id found in the spool at recovery).
    pub fn new(core: u16, floor: QueueId) -> QueueIdGenerator {
        assert!(core <= MAX_CORE, "core {core} exceeds {MAX_CORE}");
        QueueIdGenerator { core, last: floor }
    }

    /// The next id, for an arrival at `now_micros`.
    pub fn next_at(&mut self, now_micros: u64) -> QueueId {
        let candidate = QueueId::from_parts(now_micros, self.core, 0);
        let id = if candidate > self.last {
            candidate
        } else {
            // Same microsecond (or the clock went back): continue after the
            // last id, keeping this core's number in the id.
            let (mut micros, mut counter) = (self.last.micros(), self.last.as_u128() as u16);
            if self.last.core() != self.core {
                counter = u16::MAX;
            }
            if counter == u16::MAX {
                micros += 1;
                counter = 0;
            } else {
                counter += 1;
            }
            QueueId::from_parts(micros, self.core, counter)
        };
        debug_assert!(id > self.last);
        self.last = id;
        id
    }

    /// The next id for an arrival now.
    pub fn next_id(&mut self) -> QueueId {
        self.next_at(now_micros())
    }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_sixteen_sortable_characters() {
        let id = QueueId::from_parts(1_764_000_000_000_000, 3, 7);
        let text = id.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<QueueId>().unwrap(), id);
        assert_eq!(id.core(), 3);
        assert_eq!(id.micros(), 1_764_000_000_000_000);
        assert!("0000000000000000".parse::<QueueId>().is_ok());
        assert!("000000000000000I".parse::<QueueId>().is_err());
        assert!("ABC".parse::<QueueId>().is_err());
        assert!("ZZZZZZZZZZZZZZZZZ".parse::<QueueId>().is_err());
    }

    #[test]
    fn generator_never_repeats_even_when_the_clock_goes_back() {
        let mut g = QueueIdGenerator::new(2, QueueId::default());
        let a = g.next_at(1000);
        let b = g.next_at(1000);
        let c = g.next_at(900);
        let d = g.next_at(2000);
        assert!(a < b && b < c && c < d);
        assert!([a, b, c, d].iter().all(|id| id.core() == 2));
        // Seeded above another core's id from the same microsecond.
        let mut g = QueueIdGenerator::new(1, QueueId::from_parts(5000, 7, 3));
        let e = g.next_at(5000);
        assert!(e > QueueId::from_parts(5000, 7, 3));
        assert_eq!(e.core(), 1);
    }

    proptest! {
        #[test]
        fn text_order_is_id_order(a in 0u64..(1 << 52), b in 0u64..(1 << 52), ca in 0u16..4096, cb in 0u16..4096, na: u16, nb: u16) {
            let x = QueueId::from_parts(a, ca, na);
            let y = QueueId::from_parts(b, cb, nb);
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            prop_assert_eq!(x.to_string().parse::<QueueId>().unwrap(), x);
        }

        #[test]
        fn generated_ids_increase(times in proptest::collection::vec(0u64..10_000, 1..200)) {
            let mut g = QueueIdGenerator::new(5, QueueId::default());
            let mut last = QueueId::default();
            for t in times {
                let id = g.next_at(t);
                prop_assert!(id > last);
                last = id;
            }
        }
    }
}
