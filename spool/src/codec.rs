//! The byte-level encoding of record payloads: little-endian integers,
//! LEB128 varints, and length-prefixed byte strings.
//!
//! [`Decoder`] treats its input as hostile: every read is bounds-checked and
//! every length is checked against what remains before anything is
//! allocated, so a corrupt record yields [`DecodeError`], never a panic or a
//! huge allocation.

use std::fmt;

/// A payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed record payload: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn with_capacity(n: usize) -> Encoder {
        Encoder {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub fn u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// Reads encoded values from a slice.
#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder { data, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.data.get(self.pos).ok_or(DecodeError("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or(DecodeError("varint too long"))?;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(DecodeError("varint overflows 64 bits"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError("varint too long"))
    }

    /// A varint that must fit in `max`.
    pub fn bounded(&mut self, max: u64) -> Result<u64, DecodeError> {
        let v = self.varint()?;
        if v > max {
            return Err(DecodeError("value out of range"));
        }
        Ok(v)
    }

    pub fn u128(&mut self) -> Result<u128, DecodeError> {
        let raw = self.take(16)?;
        let mut b = [0u8; 16];
        b.copy_from_slice(raw);
        Ok(u128::from_le_bytes(b))
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError("length exceeds record"));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError("length exceeds record"))?;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("text is not UTF-8"))
    }

    pub fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(DecodeError("bad option tag")),
        }
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.pos..];
        self.pos = self.data.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(any::<u64>(), 0..20), text in "\\PC{0,40}", big: u128) {
            let mut e = Encoder::default();
            for v in &values { e.varint(*v); }
            e.str(&text);
            e.u128(big);
            e.opt_str(None);
            e.opt_str(Some(&text));
            let mut d = Decoder::new(&e.buf);
            for v in &values { prop_assert_eq!(d.varint().unwrap(), *v); }
            prop_assert_eq!(d.str().unwrap(), text.clone());
            prop_assert_eq!(d.u128().unwrap(), big);
            prop_assert_eq!(d.opt_str().unwrap(), None);
            prop_assert_eq!(d.opt_str().unwrap(), Some(text));
            prop_assert_eq!(d.remaining(), 0);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut d = Decoder::new(&data);
            while d.remaining() > 0 {
                if d.varint().is_err() || d.bytes().is_err() || d.str().is_err() { break; }
            }
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let data = [0xffu8; 11];
        assert!(Decoder::new(&data).varint().is_err());
        let mut max = Encoder::default();
        max.varint(u64::MAX);
        assert_eq!(Decoder::new(&max.buf).varint(), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(Decoder::new(&over).varint().is_err());
    }
}
