//! Server-signed visitor tokens and site identity hashes.
//!
//! A token is `hex(visitor_id(16) ‖ site_id(8) ‖ issued_s(8) ‖ tag(16))`,
//! integers big-endian, with
//! `tag = HMAC-SHA256(token_key, "hf-visitor-v2" ‖ the 32 bytes before it)[..16]`.
//! The key is derived from the server's static secret, so tokens survive
//! restarts and cannot be minted without it. A token is good for a lifetime
//! from its issue (`visitor_token_lifetime`, 90 days by default); every
//! `welcome` carries a fresh one, so a visitor who comes back within that
//! time never notices. Tokens from before issue times existed (80 hex
//! digits, "hf-visitor-v1") are still accepted, once, and replaced by the
//! next welcome.

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
    // HMAC takes a key of any length (a long one is hashed first, as the
    // RFC says); new_from_slice never refuses one.
    <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&[0u8; 64].into()))
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    fn tag(&self, body: &[u8]) -> [u8; 16] {
        let mut m = mac(self.0.as_ref());
        m.update(b"hf-visitor-v2");
        m.update(body);
        let full = m.finalize().into_bytes();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full[..16]);
        t
    }

    /// Issue a token for `visitor` (a 32-hex-digit id) on `site`, now.
    pub fn issue(&self, visitor: &str, site: SiteId) -> Option<String> {
        self.issue_at(visitor, site, now_s())
    }

    fn issue_at(&self, visitor: &str, site: SiteId, issued_s: u64) -> Option<String> {
        let id = parse_visitor_id(visitor)?;
        let mut raw = Vec::with_capacity(48);
        raw.extend_from_slice(&id);
        raw.extend_from_slice(&site.to_be_bytes());
        raw.extend_from_slice(&issued_s.to_be_bytes());
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag);
        Some(hex::encode(raw))
    }

    /// Check a token against `lifetime`; returns the visitor id and site it
    /// was issued for.
    pub fn verify(&self, token: &str, lifetime: std::time::Duration) -> Option<(String, SiteId)> {
        match token.len() {
            96 => {}
            80 => return self.verify_legacy(token),
            _ => return None,
        }
        let raw = hex::decode(token).ok()?;
        let (body, tag) = raw.split_at(32);
        let mut m = mac(self.0.as_ref());
        m.update(b"hf-visitor-v2");
        m.update(body);
        // Constant-time comparison of the truncated tag.
        m.verify_truncated_left(tag).ok()?;
        let mut site = [0u8; 8];
        site.copy_from_slice(&body[16..24]);
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&body[24..32]);
        let issued = u64::from_be_bytes(issued);
        if now_s().saturating_sub(issued) > lifetime.as_secs() {
            return None;
        }
        Some((hex::encode(&body[..16]), u64::from_be_bytes(site)))
    }

    /// Whether `token` has the old format without an issue time: accepted
    /// only in a `hello` (which replaces it), and only for a visitor seen
    /// within a token's lifetime.
    pub fn is_legacy(token: &str) -> bool {
        token.len() == 80
    }

    fn verify_legacy(&self, token: &str) -> Option<(String, SiteId)> {
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

    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let k = TokenKey::derive(&[9; 32]);
        let v = new_visitor_id();
        let t = k.issue(&v, 3).unwrap();
        assert_eq!(k.verify(&t, DAY), Some((v.clone(), 3)));
        let mut forged = t.clone().into_bytes();
        forged[95] = if forged[95] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(std::str::from_utf8(&forged).unwrap(), DAY), None);
        let other = TokenKey::derive(&[8; 32]);
        assert_eq!(other.verify(&t, DAY), None);
        assert_eq!(k.verify("zz", DAY), None);
    }

    #[test]
    fn tokens_expire_and_old_ones_still_open_once() {
        let k = TokenKey::derive(&[9; 32]);
        let v = new_visitor_id();
        let old = k.issue_at(&v, 3, now_s() - 2 * 86_400).unwrap();
        assert_eq!(k.verify(&old, DAY), None, "two days old, one day lifetime");
        assert_eq!(k.verify(&old, 3 * DAY), Some((v.clone(), 3)));
        // A token from before issue times (80 hex digits, v1 tag).
        let id = parse_visitor_id(&v).unwrap();
        let mut m = mac(k.0.as_ref());
        m.update(b"hf-visitor-v1");
        m.update(&id);
        m.update(&3u64.to_be_bytes());
        let tag = m.finalize().into_bytes();
        let mut raw = id.to_vec();
        raw.extend_from_slice(&3u64.to_be_bytes());
        raw.extend_from_slice(&tag[..16]);
        assert_eq!(k.verify(&hex::encode(raw), DAY), Some((v, 3)));
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
