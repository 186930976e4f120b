//! Client-generated action ids.
//!
//! Every upstream action carries an id its client made up before the first
//! send; the server deduplicates on it. The layout is UUIDv7 (RFC 9562): a
//! 48-bit millisecond timestamp, then random bits, so ids sort roughly by
//! creation time and index well. On the agent channel an id is 16 raw bytes;
//! in JSON it is the usual hyphenated lowercase text.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 16-byte action id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MsgId(pub [u8; 16]);

impl MsgId {
    /// Build a UUIDv7 from a Unix time in milliseconds and 10 random bytes.
    /// The clock and the randomness are the caller's, keeping this crate pure.
    pub fn v7(unix_ms: u64, random: [u8; 10]) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        b[6] = (b[6] & 0x0f) | 0x70; // version 7
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        MsgId(b)
    }

    /// A v7 id from `unix_ms` and a CSPRNG.
    pub fn generate<R: rand::Rng + ?Sized>(unix_ms: u64, rng: &mut R) -> Self {
        let mut r = [0u8; 10];
        rng.fill_bytes(&mut r);
        Self::v7(unix_ms, r)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The millisecond timestamp of a v7 id.
    pub fn unix_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({self})")
    }
}

/// Text that is not a 32-hex-digit id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an id is 32 hex digits, optionally hyphenated like a UUID")]
pub struct BadMsgId;

impl FromStr for MsgId {
    type Err = BadMsgId;

    fn from_str(s: &str) -> Result<Self, BadMsgId> {
        if s.len() > 36 {
            return Err(BadMsgId);
        }
        let mut out = [0u8; 16];
        let mut n = 0usize;
        let mut hi: Option<u8> = None;
        for c in s.bytes() {
            if c == b'-' {
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(BadMsgId),
            };
            match hi.take() {
                None => hi = Some(v),
                Some(h) => {
                    if n == 16 {
                        return Err(BadMsgId);
                    }
                    out[n] = h << 4 | v;
                    n += 1;
                }
            }
        }
        if n != 16 || hi.is_some() {
            return Err(BadMsgId);
        }
        Ok(MsgId(out))
    }
}

impl Serialize for MsgId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for MsgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            struct V;
            impl Visitor<'_> for V {
                type Value = MsgId;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a UUID-style id string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<MsgId, E> {
                    v.parse().map_err(E::custom)
                }
            }
            d.deserialize_str(V)
        } else {
            <[u8; 16]>::deserialize(d).map(MsgId)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_layout_and_text() {
        let id = MsgId::v7(0x0190_1234_5678, [0xff; 10]);
        assert_eq!(id.to_string(), "01901234-5678-7fff-bfff-ffffffffffff");
        assert_eq!(id.unix_ms(), 0x0190_1234_5678);
        assert_eq!(
            "01901234-5678-7fff-bfff-ffffffffffff"
                .parse::<MsgId>()
                .unwrap(),
            id
        );
        assert_eq!("019012345678".to_string().len(), 12);
        assert!("0190".parse::<MsgId>().is_err());
        assert!(
            "zz901234-5678-7fff-bfff-ffffffffffff"
                .parse::<MsgId>()
                .is_err()
        );
        assert!(
            "01901234-5678-7fff-bfff-ffffffffffff00"
                .parse::<MsgId>()
                .is_err()
        );
    }

    #[test]
    fn json_is_text() {
        let id = MsgId::v7(1, [0; 10]);
        let j = serde_json::to_string(&id).unwrap();
        assert_eq!(j, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<MsgId>(&j).unwrap(), id);
    }
}
