//! The plaintext handshake and the key schedule.
//!
//! ```text
//! ClientHello  = "HFST" ‖ 0x01 ‖ version(u16 BE) ‖ client_ephemeral(32)                 39 bytes
//! ServerHello  = "HFST" ‖ 0x02 ‖ version(u16 BE) ‖ server_ephemeral(32) ‖ server_static(32)  71 bytes
//! VersionRefusal = "HFST" ‖ 0x03 ‖ server_version(u16 BE) ‖ client_version(u16 BE)        9 bytes
//!
//! salt = SHA-256(ClientHello ‖ ServerHello)
//! ikm  = X25519(c_eph, s_eph) ‖ X25519(c_eph, s_static)
//! keys = HKDF-SHA256(salt, ikm) expanded with the four labels below, 32 bytes each
//! ```
//!
//! The second DH binds the session to the server's long-term key, so only the
//! holder of the pinned static key can derive the session keys: a
//! man-in-the-middle who substitutes its own static key changes the
//! fingerprint the client checks.

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::PROTOCOL_VERSION;
use crate::seal::{Direction, DirectionKeys, Opener, Sealer};

/// Every plaintext handshake frame starts with these bytes.
pub const MAGIC: [u8; 4] = *b"HFST";
pub const CLIENT_HELLO_TYPE: u8 = 0x01;
pub const SERVER_HELLO_TYPE: u8 = 0x02;
pub const VERSION_REFUSAL_TYPE: u8 = 0x03;
pub const CLIENT_HELLO_LEN: usize = 39;
pub const SERVER_HELLO_LEN: usize = 71;
pub const VERSION_REFUSAL_LEN: usize = 9;

/// HKDF info labels, one per derived key.
pub const LABEL_C2S_ENC: &[u8] = b"holdfast/1 c2s enc";
pub const LABEL_C2S_MAC: &[u8] = b"holdfast/1 c2s mac";
pub const LABEL_S2C_ENC: &[u8] = b"holdfast/1 s2c enc";
pub const LABEL_S2C_MAC: &[u8] = b"holdfast/1 s2c mac";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("not a Holdfast handshake frame ({0} bytes, bad magic or type)")]
    NotHoldfast(usize),
    #[error("handshake frame has {got} bytes, expected {expected}")]
    BadLength { got: usize, expected: usize },
    #[error(
        "protocol version mismatch: this side speaks version {ours}, the peer speaks version {theirs}"
    )]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("peer sent a low-order X25519 public key")]
    WeakKey,
}

/// A server's long-term X25519 identity.
pub struct ServerIdentity {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Rebuild from the 32 secret bytes stored in the server's data dir.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// Generate a new identity.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes)
    }

    /// The secret bytes, for persisting with mode 0600.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_public_key(&self.public.to_bytes())
    }
}

/// SHA-256 of a server's static public key, shown as 16 colon-separated
/// groups of 4 hex digits. This is what users compare and what clients pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_public_key(public: &[u8; 32]) -> Self {
        Fingerprint(Sha256::digest(public).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A fingerprint string that is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a fingerprint is 64 hex digits (colons and spaces allowed)")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Accepts the display form, or bare hex in either case, so an admin can
    /// paste a fingerprint from any source.
    fn from_str(s: &str) -> Result<Self, BadFingerprint> {
        let digits: Vec<u8> = s
            .bytes()
            .filter(|b| !matches!(b, b':' | b' ' | b'-'))
            .collect();
        if digits.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(BadFingerprint)?;
            let lo = hex_val(pair[1]).ok_or(BadFingerprint)?;
            out[i] = hi << 4 | lo;
        }
        Ok(Fingerprint(out))
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The outcome of checking a presented server key against a pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// Nothing pinned yet: ask the user (trust on first use) and pin it.
    FirstUse(Fingerprint),
    /// Matches the pin.
    Match,
    /// Does not match: a hard stop. Show both.
    Mismatch {
        pinned: Fingerprint,
        presented: Fingerprint,
    },
}

/// Compare a server's static key against the pinned fingerprint, if any.
pub fn check_pin(pinned: Option<&Fingerprint>, presented_static: &[u8; 32]) -> PinCheck {
    let presented = Fingerprint::of_public_key(presented_static);
    match pinned {
        None => PinCheck::FirstUse(presented),
        // Fingerprints are public, so a plain comparison leaks nothing.
        Some(p) if *p == presented => PinCheck::Match,
        Some(p) => PinCheck::Mismatch {
            pinned: *p,
            presented,
        },
    }
}

/// The four session keys. Zeroized on drop.
#[derive(Debug)]
pub struct SessionKeys {
    pub c2s: DirectionKeys,
    pub s2c: DirectionKeys,
}

/// Run the key schedule. Public so test vectors can be checked piecewise.
pub fn derive_keys(
    client_hello: &[u8],
    server_hello: &[u8],
    dh_eph: &[u8; 32],
    dh_static: &[u8; 32],
) -> SessionKeys {
    let mut transcript = Sha256::new();
    transcript.update(client_hello);
    transcript.update(server_hello);
    let salt = transcript.finalize();
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(dh_eph);
    ikm[32..].copy_from_slice(dh_static);
    let hk = Hkdf::<Sha256>::new(Some(&salt), ikm.as_ref());
    let expand = |label: &[u8]| {
        let mut k = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 255*32 limit.
        #[allow(clippy::expect_used)]
        hk.expand(label, &mut k)
            .expect("32-byte HKDF output is always valid");
        k
    };
    SessionKeys {
        c2s: DirectionKeys {
            enc: expand(LABEL_C2S_ENC),
            mac: expand(LABEL_C2S_MAC),
        },
        s2c: DirectionKeys {
            enc: expand(LABEL_S2C_ENC),
            mac: expand(LABEL_S2C_MAC),
        },
    }
}

fn check_header(frame: &[u8], ty: u8) -> Result<(), HandshakeError> {
    if frame.len() < 5 || frame[..4] != MAGIC || frame[4] != ty {
        return Err(HandshakeError::NotHoldfast(frame.len()));
    }
    Ok(())
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn read_key(b: &[u8], at: usize) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[at..at + 32]);
    k
}

/// Encode a ClientHello.
pub fn encode_client_hello(version: u16, ephemeral_public: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CLIENT_HELLO_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(CLIENT_HELLO_TYPE);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(ephemeral_public);
    out
}

/// Encode a VersionRefusal.
pub fn encode_version_refusal(server_version: u16, client_version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_REFUSAL_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION_REFUSAL_TYPE);
    out.extend_from_slice(&server_version.to_be_bytes());
    out.extend_from_slice(&client_version.to_be_bytes());
    out
}

/// The client's half of a session: it seals client-to-server frames and opens
/// server-to-client frames.
#[derive(Debug)]
pub struct ClientSession {
    pub sealer: Sealer,
    pub opener: Opener,
    /// The server's static public key, to be checked with [`check_pin`].
    pub server_static: [u8; 32],
}

/// The server's half of a session.
#[derive(Debug)]
pub struct ServerSession {
    pub sealer: Sealer,
    pub opener: Opener,
}

/// The client side of the handshake.
pub struct ClientHandshake {
    ephemeral: StaticSecret,
    hello: Vec<u8>,
    version: u16,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl ClientHandshake {
    /// Start a handshake with the given ephemeral secret (fresh random bytes
    /// in production; fixed bytes in test vectors).
    pub fn new(ephemeral_secret: [u8; 32]) -> Self {
        Self::with_version(ephemeral_secret, PROTOCOL_VERSION)
    }

    /// As [`ClientHandshake::new`] but announcing another version (tests).
    pub fn with_version(ephemeral_secret: [u8; 32], version: u16) -> Self {
        let ephemeral = StaticSecret::from(ephemeral_secret);
        let hello = encode_client_hello(version, PublicKey::from(&ephemeral).as_bytes());
        Self {
            ephemeral,
            hello,
            version,
        }
    }

    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::new(*bytes)
    }

    /// The ClientHello frame to send first.
    pub fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Handle the server's reply: a ServerHello or a VersionRefusal.
    pub fn handle_reply(self, frame: &[u8]) -> Result<ClientSession, HandshakeError> {
        if frame.len() >= 5 && frame[..4] == MAGIC && frame[4] == VERSION_REFUSAL_TYPE {
            if frame.len() != VERSION_REFUSAL_LEN {
                return Err(HandshakeError::BadLength {
                    got: frame.len(),
                    expected: VERSION_REFUSAL_LEN,
                });
            }
            return Err(HandshakeError::VersionMismatch {
                ours: self.version,
                theirs: read_u16(frame, 5),
            });
        }
        check_header(frame, SERVER_HELLO_TYPE)?;
        if frame.len() != SERVER_HELLO_LEN {
            return Err(HandshakeError::BadLength {
                got: frame.len(),
                expected: SERVER_HELLO_LEN,
            });
        }
        let theirs = read_u16(frame, 5);
        if theirs != self.version {
            return Err(HandshakeError::VersionMismatch {
                ours: self.version,
                theirs,
            });
        }
        let server_eph = PublicKey::from(read_key(frame, 7));
        let server_static_bytes = read_key(frame, 39);
        let server_static = PublicKey::from(server_static_bytes);
        let dh1 = self.ephemeral.diffie_hellman(&server_eph);
        let dh2 = self.ephemeral.diffie_hellman(&server_static);
        if !dh1.was_contributory() || !dh2.was_contributory() {
            return Err(HandshakeError::WeakKey);
        }
        let keys = derive_keys(&self.hello, frame, dh1.as_bytes(), dh2.as_bytes());
        Ok(ClientSession {
            sealer: Sealer::new(keys.c2s.clone(), Direction::ClientToServer),
            opener: Opener::new(keys.s2c.clone(), Direction::ServerToClient),
            server_static: server_static_bytes,
        })
    }
}

/// Why the server would not complete a handshake. `reply`, when present,
/// should be sent before closing so the client can show a clear error.
#[derive(Debug)]
pub struct Refusal {
    pub error: HandshakeError,
    pub reply: Option<Vec<u8>>,
}

/// The server's reply frame and its half of the session.
#[derive(Debug)]
pub struct Accepted {
    pub reply: Vec<u8>,
    pub session: ServerSession,
}

/// The server side of the handshake: one call, from ClientHello to session.
pub fn server_accept(
    identity: &ServerIdentity,
    ephemeral_secret: [u8; 32],
    client_hello: &[u8],
) -> Result<Accepted, Refusal> {
    let refuse = |error| Refusal { error, reply: None };
    check_header(client_hello, CLIENT_HELLO_TYPE).map_err(refuse)?;
    if client_hello.len() < 7 {
        return Err(refuse(HandshakeError::BadLength {
            got: client_hello.len(),
            expected: CLIENT_HELLO_LEN,
        }));
    }
    // Check the version before the length: a future version may well have a
    // longer hello, and its client deserves to hear which versions differ.
    let theirs = read_u16(client_hello, 5);
    if theirs != PROTOCOL_VERSION {
        return Err(Refusal {
            error: HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs,
            },
            reply: Some(encode_version_refusal(PROTOCOL_VERSION, theirs)),
        });
    }
    if client_hello.len() != CLIENT_HELLO_LEN {
        return Err(refuse(HandshakeError::BadLength {
            got: client_hello.len(),
            expected: CLIENT_HELLO_LEN,
        }));
    }
    let client_eph = PublicKey::from(read_key(client_hello, 7));
    let eph = StaticSecret::from(ephemeral_secret);
    let eph_pub = PublicKey::from(&eph);
    let mut reply = Vec::with_capacity(SERVER_HELLO_LEN);
    reply.extend_from_slice(&MAGIC);
    reply.push(SERVER_HELLO_TYPE);
    reply.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    reply.extend_from_slice(eph_pub.as_bytes());
    reply.extend_from_slice(identity.public.as_bytes());
    let dh1 = eph.diffie_hellman(&client_eph);
    let dh2 = identity.secret.diffie_hellman(&client_eph);
    if !dh1.was_contributory() || !dh2.was_contributory() {
        return Err(refuse(HandshakeError::WeakKey));
    }
    let keys = derive_keys(client_hello, &reply, dh1.as_bytes(), dh2.as_bytes());
    Ok(Accepted {
        reply,
        session: ServerSession {
            sealer: Sealer::new(keys.s2c.clone(), Direction::ServerToClient),
            opener: Opener::new(keys.c2s.clone(), Direction::ClientToServer),
        },
    })
}

/// As [`server_accept`], drawing the ephemeral secret from `rng`.
pub fn server_accept_with<R: rand::CryptoRng + ?Sized>(
    identity: &ServerIdentity,
    rng: &mut R,
    client_hello: &[u8],
) -> Result<Accepted, Refusal> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    server_accept(identity, *bytes, client_hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_keys() {
        let id = ServerIdentity::from_secret_bytes([7; 32]);
        let c = ClientHandshake::new([3; 32]);
        let acc = server_accept(&id, [5; 32], c.hello()).unwrap();
        let mut cs = c.handle_reply(&acc.reply).unwrap();
        let mut ss = acc.session;
        assert_eq!(cs.server_static, id.public_bytes());
        let f = cs.sealer.seal([1; 16], b"login").unwrap();
        assert_eq!(ss.opener.open(&f).unwrap(), b"login");
        let g = ss.sealer.seal([2; 16], b"ok").unwrap();
        assert_eq!(cs.opener.open(&g).unwrap(), b"ok");
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let id = ServerIdentity::from_secret_bytes([7; 32]);
        let c = ClientHandshake::with_version([3; 32], 9);
        let refusal = server_accept(&id, [5; 32], c.hello()).unwrap_err();
        assert_eq!(
            refusal.error,
            HandshakeError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: 9
            }
        );
        let err = c.handle_reply(&refusal.reply.unwrap()).unwrap_err();
        assert_eq!(
            err,
            HandshakeError::VersionMismatch {
                ours: 9,
                theirs: PROTOCOL_VERSION
            }
        );
        let text = err.to_string();
        assert!(
            text.contains('9') && text.contains(&PROTOCOL_VERSION.to_string()),
            "{text}"
        );
    }

    #[test]
    fn low_order_key_is_refused() {
        let id = ServerIdentity::from_secret_bytes([7; 32]);
        let hello = encode_client_hello(PROTOCOL_VERSION, &[0u8; 32]);
        let r = server_accept(&id, [5; 32], &hello).unwrap_err();
        assert_eq!(r.error, HandshakeError::WeakKey);
    }

    #[test]
    fn fingerprint_round_trips_and_pins() {
        let id = ServerIdentity::from_secret_bytes([7; 32]);
        let fp = id.fingerprint();
        let shown = fp.to_string();
        assert_eq!(shown.len(), 79);
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            shown
                .replace(':', "")
                .to_uppercase()
                .parse::<Fingerprint>()
                .unwrap(),
            fp
        );
        assert!("abc".parse::<Fingerprint>().is_err());
        assert_eq!(check_pin(None, &id.public_bytes()), PinCheck::FirstUse(fp));
        assert_eq!(check_pin(Some(&fp), &id.public_bytes()), PinCheck::Match);
        let other = ServerIdentity::from_secret_bytes([8; 32]);
        assert!(matches!(
            check_pin(Some(&fp), &other.public_bytes()),
            PinCheck::Mismatch { .. }
        ));
    }
}
