//! Sealed frames: `IV(16) ‖ AES-256-CBC/PKCS#7 ciphertext ‖ HMAC-SHA256 tag(32)`.
//!
//! The tag covers `direction(1) ‖ counter(8, big-endian) ‖ IV ‖ ciphertext`.
//! The counter is implicit: both ends count frames per direction from 0, so a
//! replayed, reordered, dropped or spliced frame fails the MAC. CBC on its own
//! is malleable and a padding oracle waiting to happen, so the tag is checked
//! in constant time before a single block is decrypted.

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, block_padding::Pkcs7};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Length of the random IV that starts every sealed frame.
pub const IV_LEN: usize = 16;
/// Length of the HMAC-SHA256 tag that ends every sealed frame.
pub const TAG_LEN: usize = 32;
/// AES block size.
pub const BLOCK: usize = 16;
/// The smallest possible sealed frame: IV, one padding block, tag.
pub const MIN_SEALED_LEN: usize = IV_LEN + BLOCK + TAG_LEN;

/// Which way a frame travels. Part of the MAC input so that a frame can never
/// be reflected back at its sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// The byte fed to the MAC.
    pub fn wire_byte(self) -> u8 {
        match self {
            Direction::ClientToServer => 0x01,
            Direction::ServerToClient => 0x02,
        }
    }
}

/// Sealed length for a plaintext of `len` bytes.
pub fn sealed_len(len: usize) -> usize {
    IV_LEN + (len / BLOCK + 1) * BLOCK + TAG_LEN
}

/// The largest plaintext that still fits in a frame of `max_frame` bytes.
pub fn max_plaintext(max_frame: usize) -> usize {
    let body = max_frame.saturating_sub(IV_LEN + TAG_LEN);
    // PKCS#7 always adds at least one byte of padding.
    (body / BLOCK * BLOCK).saturating_sub(1)
}

/// Errors from sealing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// 2^64 frames in one direction: the session must be re-established.
    #[error("frame counter exhausted; reconnect to rekey")]
    CounterExhausted,
    /// The padded plaintext did not fit the buffer sized for it: a bug here,
    /// never the peer's doing.
    #[error("the padded plaintext did not fit its buffer")]
    Padding,
}

/// Errors from opening. Every one of them must close the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("sealed frame of {0} bytes is malformed (too short or not block aligned)")]
    Malformed(usize),
    #[error("authentication tag mismatch (tampered, replayed, reordered or dropped frame)")]
    BadTag,
    #[error("padding invalid after a valid tag (peer bug)")]
    BadPadding,
    #[error("opener already failed once; the connection must be closed")]
    Poisoned,
    #[error("frame counter exhausted; reconnect to rekey")]
    CounterExhausted,
}

/// Key material for one direction. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DirectionKeys {
    pub enc: [u8; 32],
    pub mac: [u8; 32],
}

impl std::fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectionKeys(<redacted>)")
    }
}

/// One direction's keys, expanded once: the AES key schedule and the HMAC
/// state after the key (its inner and outer pads hashed). Expanding them for
/// every frame cost an AES key expansion and two SHA-256 blocks per frame,
/// more than the MAC of a typical 200-byte message itself. Both zeroize
/// themselves on drop (the `zeroize` features of `aes` and `hmac`).
#[derive(Clone)]
struct Expanded {
    cipher: aes::Aes256,
    mac: HmacSha256,
}

impl Expanded {
    fn new(keys: &DirectionKeys) -> Self {
        // HMAC zero-pads keys shorter than its 64-byte block, so padding
        // here is the same function and avoids the fallible
        // variable-length constructor.
        let mut block = zeroize::Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(&keys.mac);
        Expanded {
            cipher: <aes::Aes256 as KeyInit>::new(&keys.enc.into()),
            mac: <HmacSha256 as KeyInit>::new(&(*block).into()),
        }
    }

    fn tag(&self, dir: Direction, counter: u64, iv_and_ct: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&[dir.wire_byte()]);
        mac.update(&counter.to_be_bytes());
        mac.update(iv_and_ct);
        mac
    }
}

/// Seals outgoing frames for one direction.
pub struct Sealer {
    keys: Expanded,
    dir: Direction,
    counter: u64,
    exhausted: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("dir", &self.dir)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(keys: DirectionKeys, dir: Direction) -> Self {
        Self {
            keys: Expanded::new(&keys),
            dir,
            counter: 0,
            exhausted: false,
        }
    }

    /// The counter the next sealed frame will carry.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Seal `plaintext` with the caller-supplied IV. The IV must be fresh and
    /// unpredictable; [`Sealer::seal_with`] draws one from a CSPRNG.
    pub fn seal(&mut self, iv: [u8; IV_LEN], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        if self.exhausted {
            return Err(SealError::CounterExhausted);
        }
        // One buffer, encrypted in place: IV, then the plaintext and room
        // for its padding, then the tag.
        let sealed = sealed_len(plaintext.len());
        let mut out = Vec::with_capacity(sealed);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        out.resize(sealed - TAG_LEN, 0);
        Aes256CbcEnc::inner_iv_init(self.keys.cipher.clone(), &iv.into())
            .encrypt_padded::<Pkcs7>(&mut out[IV_LEN..], plaintext.len())
            .map_err(|_| SealError::Padding)?;
        let tag = self
            .keys
            .tag(self.dir, self.counter, &out)
            .finalize()
            .into_bytes();
        out.extend_from_slice(&tag);
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => self.exhausted = true,
        }
        Ok(out)
    }

    /// Seal with an IV drawn from `rng`.
    pub fn seal_with<R: rand::CryptoRng + ?Sized>(
        &mut self,
        rng: &mut R,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut iv = [0u8; IV_LEN];
        rng.fill_bytes(&mut iv);
        self.seal(iv, plaintext)
    }
}

/// Opens incoming frames for one direction.
pub struct Opener {
    keys: Expanded,
    dir: Direction,
    counter: u64,
    poisoned: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("dir", &self.dir)
            .field("counter", &self.counter)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub fn new(keys: DirectionKeys, dir: Direction) -> Self {
        Self {
            keys: Expanded::new(&keys),
            dir,
            counter: 0,
            poisoned: false,
        }
    }

    /// The counter the next frame must carry.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Verify and decrypt one sealed frame. After any error the opener stays
    /// poisoned: the protocol closes the connection on the first bad frame,
    /// and nothing after it may be acted on.
    pub fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        if self.poisoned {
            return Err(OpenError::Poisoned);
        }
        let result = self.open_inner(frame);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn open_inner(&mut self, frame: &[u8]) -> Result<Vec<u8>, OpenError> {
        let n = frame.len();
        if n < MIN_SEALED_LEN || !(n - IV_LEN - TAG_LEN).is_multiple_of(BLOCK) {
            return Err(OpenError::Malformed(n));
        }
        let (body, tag) = frame.split_at(n - TAG_LEN);
        // verify_slice compares in constant time.
        self.keys
            .tag(self.dir, self.counter, body)
            .verify_slice(tag)
            .map_err(|_| OpenError::BadTag)?;
        let (iv, ct) = body.split_at(IV_LEN);
        let mut iv_arr = [0u8; IV_LEN];
        iv_arr.copy_from_slice(iv);
        let mut pt = ct.to_vec();
        let len = Aes256CbcDec::inner_iv_init(self.keys.cipher.clone(), &iv_arr.into())
            .decrypt_padded::<Pkcs7>(&mut pt)
            .map_err(|_| OpenError::BadPadding)?
            .len();
        pt.truncate(len);
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(OpenError::CounterExhausted)?;
        Ok(pt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Sealer, Opener) {
        let k = DirectionKeys {
            enc: [1; 32],
            mac: [2; 32],
        };
        (
            Sealer::new(k.clone(), Direction::ClientToServer),
            Opener::new(k, Direction::ClientToServer),
        )
    }

    #[test]
    fn round_trip_and_lengths() {
        let (mut s, mut o) = pair();
        for len in [0usize, 1, 15, 16, 17, 4096] {
            let pt = vec![0xAB; len];
            let f = s.seal([9; 16], &pt).unwrap();
            assert_eq!(f.len(), sealed_len(len));
            assert_eq!(o.open(&f).unwrap(), pt);
        }
    }

    #[test]
    fn max_plaintext_fits() {
        for max in [64usize, 100, 1024, 1 << 20] {
            let p = max_plaintext(max);
            assert!(sealed_len(p) <= max, "max={max} p={p}");
            assert!(sealed_len(p + 1) > max || p + 1 > max);
        }
    }

    #[test]
    fn wrong_direction_is_rejected() {
        let k = DirectionKeys {
            enc: [1; 32],
            mac: [2; 32],
        };
        let mut s = Sealer::new(k.clone(), Direction::ServerToClient);
        let mut o = Opener::new(k, Direction::ClientToServer);
        let f = s.seal([0; 16], b"hi").unwrap();
        assert_eq!(o.open(&f), Err(OpenError::BadTag));
        assert_eq!(o.open(&f), Err(OpenError::Poisoned));
    }
}
