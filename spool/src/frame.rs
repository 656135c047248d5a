//! Record framing and the segment header (FORMAT.md has the tables).
//!
//! Every record is `magic, length, type, flags, reserved, crc` (16 bytes)
//! followed by the payload and zero padding to an 8-byte boundary. The CRC32C
//! covers the length, type and flags bytes and the payload, seeded with the
//! segment's random salt: a frame copied from elsewhere — for instance one
//! that a sender embedded in a message body, hoping a resync after
//! corruption would pick it up — never validates in another segment.

use crate::record::RecordType;

/// `CPR1`, little endian.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"CPR1");
pub const FRAME_HEADER_LEN: usize = 16;
/// Records start at multiples of this.
pub const ALIGN: usize = 8;

/// `CPSPOOL\0`
pub const SEGMENT_MAGIC: [u8; 8] = *b"CPSPOOL\0";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 64;

/// Round up to the record alignment.
pub fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Bytes a record with `payload_len` payload bytes occupies.
pub fn record_len(payload_len: usize) -> usize {
    align_up(FRAME_HEADER_LEN + payload_len)
}

/// The fixed fields of a segment file's first 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u32,
    pub core: u32,
    pub seq: u64,
    pub size: u64,
    pub created: u64,
    pub salt: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.core.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.size.to_le_bytes());
        b[32..40].copy_from_slice(&self.created.to_le_bytes());
        b[40..48].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("file shorter than a segment header");
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a corepost spool segment (bad magic)");
        }
        if crc32c::crc32c(&b[0..60]) != u32_at(b, 60) {
            return Err("segment header checksum mismatch");
        }
        let header = SegmentHeader {
            version: u32_at(b, 8),
            core: u32_at(b, 12),
            seq: u64_at(b, 16),
            size: u64_at(b, 24),
            created: u64_at(b, 32),
            salt: u64_at(b, 40),
        };
        if header.version != FORMAT_VERSION {
            return Err("unsupported spool format version");
        }
        Ok(header)
    }
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

pub fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The 16-byte frame header for a payload; `crc` must already cover the
/// payload (see [`frame_crc`]).
pub fn encode_frame_header(kind: RecordType, payload_len: u32, crc: u32) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&payload_len.to_le_bytes());
    h[8] = kind as u8;
    // h[9] flags, h[10..12] reserved: zero in version 1.
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// CRC of a frame: salt, then header bytes 4..12, then the payload parts.
pub fn frame_crc(salt: u64, kind: RecordType, payload_len: u32, parts: &[&[u8]]) -> u32 {
    let mut fields = [0u8; 8];
    fields[0..4].copy_from_slice(&payload_len.to_le_bytes());
    fields[4] = kind as u8;
    let mut crc = crc32c::crc32c(&salt.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &fields);
    for p in parts {
        crc = crc32c::crc32c_append(crc, p);
    }
    crc
}

/// Result of looking for a record at one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// A valid record: type, payload start and length, total length.
    Valid {
        kind: RecordType,
        payload: usize,
        len: usize,
        total: usize,
    },
    /// All-zero header: nothing was ever written here.
    Empty,
    /// Something is here but it is not a valid record.
    Invalid(&'static str),
}

/// Check whether a valid record starts at `offset` of `data`.
pub fn check_frame(data: &[u8], offset: usize, salt: u64) -> FrameCheck {
    let Some(h) = data.get(offset..offset.saturating_add(FRAME_HEADER_LEN)) else {
        return FrameCheck::Invalid("header past end of segment");
    };
    if h.iter().all(|&b| b == 0) {
        return FrameCheck::Empty;
    }
    if u32_at(h, 0) != RECORD_MAGIC {
        return FrameCheck::Invalid("bad record magic");
    }
    let len = u32_at(h, 4) as usize;
    let Some(kind) = RecordType::from_u8(h[8]) else {
        return FrameCheck::Invalid("unknown record type");
    };
    if h[9] != 0 || h[10] != 0 || h[11] != 0 {
        return FrameCheck::Invalid("reserved header bits set");
    }
    let payload = offset + FRAME_HEADER_LEN;
    let Some(body) = payload
        .checked_add(len)
        .and_then(|end| data.get(payload..end))
    else {
        return FrameCheck::Invalid("record length runs past end of segment");
    };
    if frame_crc(salt, kind, len as u32, &[body]) != u32_at(h, 12) {
        return FrameCheck::Invalid("record checksum mismatch");
    }
    FrameCheck::Valid {
        kind,
        payload,
        len,
        total: record_len(len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            core: 3,
            seq: 42,
            size: 1 << 20,
            created: 7,
            salt: 0xdead_beef,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).is_err());
    }

    #[test]
    fn frames_validate_only_with_their_salt() {
        let payload = b"hello";
        let crc = frame_crc(1, RecordType::Admin, 5, &[payload]);
        let mut data = vec![0u8; 64];
        data[8..24].copy_from_slice(&encode_frame_header(RecordType::Admin, 5, crc));
        data[24..29].copy_from_slice(payload);
        assert_eq!(
            check_frame(&data, 8, 1),
            FrameCheck::Valid {
                kind: RecordType::Admin,
                payload: 24,
                len: 5,
                total: 24
            }
        );
        assert!(matches!(check_frame(&data, 8, 2), FrameCheck::Invalid(_)));
        assert_eq!(check_frame(&data, 40, 1), FrameCheck::Empty);
        assert!(matches!(check_frame(&data, 56, 1), FrameCheck::Invalid(_)));
        data[26] ^= 0x40;
        assert!(matches!(check_frame(&data, 8, 1), FrameCheck::Invalid(_)));
    }
}
