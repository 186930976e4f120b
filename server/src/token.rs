//! Server-signed visitor tokens and site identity hashes.
//!
//! A token is `hex(visitor_id(16) ‖ site_id(8, BE) ‖ tag(16))` with
//! `tag = HMAC-SHA256(token_key, "hf-visitor-v1" ‖ visitor_id ‖ site_id)[..16]`.
//! The key is derived from the server's static secret, so tokens survive
//! restarts and cannot be minted without it.

use hmac::{Hmac, KeyInit, Mac};
use holdfast_protocol::agent::SiteId;
use rand::Rng;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct TokenKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    let mut block = Zeroizing::new([0u8; 64]);
    if key.len() <= 64 {
        block[..key.len()].copy_from_slice(key);
        <HmacSha256 as KeyInit>::new(&(*block).into())
    } else {
        // Long keys are hashed first, exactly as HMAC specifies.
        use sha2::Digest;
        let d = Sha256::digest(key);
        block[..32].copy_from_slice(&d);
        <HmacSha256 as KeyInit>::new(&(*block).into())
    }
}

impl TokenKey {
    pub fn derive(server_secret: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"holdfast visitor tokens"), server_secret);
        let mut k = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        if hk.expand(b"hf-visitor-v1", k.as_mut()).is_err() {
            tracing::error!("HKDF refused a 32-byte output");
        }
        TokenKey(k)
    }

    fn tag(&self, id: &[u8; 16], site: SiteId) -> [u8; 16] {
        let mut m = mac(self.0.as_ref());
        m.update(b"hf-visitor-v1");
        m.update(id);
        m.update(&site.to_be_bytes());
        let full = m.finalize().into_bytes();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full[..16]);
        t
    }

    /// Issue a token for `visitor` (a 32-hex-digit id) on `site`.
    pub fn issue(&self, visitor: &str, site: SiteId) -> Option<String> {
        let id = parse_visitor_id(visitor)?;
        let mut raw = Vec::with_capacity(40);
        raw.extend_from_slice(&id);
        raw.extend_from_slice(&site.to_be_bytes());
        raw.extend_from_slice(&self.tag(&id, site));
        Some(hex::encode(raw))
    }

    /// Check a token; returns the visitor id and site it was issued for.
    pub fn verify(&self, token: &str) -> Option<(String, SiteId)> {
        if token.len() != 80 {
            return None;
        }
        let raw = hex::decode(token).ok()?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&raw[..16]);
        let mut site = [0u8; 8];
        site.copy_from_slice(&raw[16..24]);
        let site = u64::from_be_bytes(site);
        let mut m = mac(self.0.as_ref());
        m.update(b"hf-visitor-v1");
        m.update(&id);
        m.update(&site.to_be_bytes());
        // Constant-time comparison of the truncated tag.
        m.verify_truncated_left(&raw[24..40]).ok()?;
        Some((hex::encode(id), site))
    }
}

fn parse_visitor_id(s: &str) -> Option<[u8; 16]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

/// A fresh random visitor id.
pub fn new_visitor_id() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Check `hash = hex(HMAC-SHA256(site_secret, id))` in constant time.
pub fn verify_identity(site_secret: &str, id: &str, hash: &str) -> bool {
    let Ok(given) = hex::decode(hash.trim()) else {
        return false;
    };
    let mut m = mac(site_secret.as_bytes());
    m.update(id.as_bytes());
    m.verify_slice(&given).is_ok()
}

/// What a host site computes on its backend (documented for site owners).
pub fn identity_hash(site_secret: &str, id: &str) -> String {
    let mut m = mac(site_secret.as_bytes());
    m.update(id.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let k = TokenKey::derive(&[9; 32]);
        let v = new_visitor_id();
        let t = k.issue(&v, 3).unwrap();
        assert_eq!(k.verify(&t), Some((v.clone(), 3)));
        let mut forged = t.clone().into_bytes();
        forged[79] = if forged[79] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(std::str::from_utf8(&forged).unwrap()), None);
        let other = TokenKey::derive(&[8; 32]);
        assert_eq!(other.verify(&t), None);
        assert_eq!(k.verify("zz"), None);
    }

    #[test]
    fn identity_hash_matches_standard_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        let h = identity_hash("Jefe", "what do ya want for nothing?");
        assert_eq!(
            h,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_identity("Jefe", "what do ya want for nothing?", &h));
        assert!(!verify_identity("Jefe", "someone else", &h));
    }
}
