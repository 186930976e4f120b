//! Resume tickets: what lets an agent's device reconnect after a network
//! blip without a password check.
//!
//! Every password check costs an Argon2 hash (19 MiB and tens of
//! milliseconds of a core), and logins queue for them one per core. Without
//! tickets, 100 agents reconnecting at once after a blip waited for 100
//! hashes, and an attacker could flood the queue with guesses. With them, a
//! reconnect costs one HMAC, and the queue serves only real password logins.
//!
//! A ticket is `agent(8) ‖ device(16) ‖ auth_epoch(8) ‖ expires_ms(8) ‖
//! tag(32)`, all integers big-endian, with `tag = HMAC-SHA256(key, "hf-ticket-v1"
//! ‖ the 40 bytes before it)`. The key is derived from the server's static
//! secret, so a ticket is bound to this server's key (every node of a
//! cluster shares it), and it cannot be minted without it. It is bound to
//! one device; it expires; and the account's auth epoch, which `agent
//! passwd` and `agent disable` bump, revokes every ticket issued before.

use hmac::{Hmac, KeyInit, Mac};
use holdfast_protocol::agent::AgentId;
use holdfast_protocol::ids::MsgId;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

const LABEL: &[u8] = b"hf-ticket-v1";
const BODY: usize = 8 + 16 + 8 + 8;
pub const TICKET_LEN: usize = BODY + 32;

#[derive(Clone)]
pub struct TicketKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

/// What a valid ticket vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub agent: AgentId,
    pub device: MsgId,
    pub auth_epoch: i64,
    pub expires_ms: i64,
}

impl TicketKey {
    pub fn derive(server_secret: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"holdfast resume tickets"), server_secret);
        let mut k = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        if hk.expand(LABEL, k.as_mut()).is_err() {
            tracing::error!("HKDF refused a 32-byte output");
        }
        TicketKey(k)
    }

    fn mac(&self) -> HmacSha256 {
        // A 32-byte key is always accepted.
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&[0u8; 64].into()));
        m.update(LABEL);
        m
    }

    pub fn issue(&self, t: &Ticket) -> Vec<u8> {
        let mut out = Vec::with_capacity(TICKET_LEN);
        out.extend_from_slice(&t.agent.to_be_bytes());
        out.extend_from_slice(&t.device.0);
        out.extend_from_slice(&t.auth_epoch.to_be_bytes());
        out.extend_from_slice(&t.expires_ms.to_be_bytes());
        let mut m = self.mac();
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
        out
    }

    /// The ticket's claims, if its tag is ours (checked in constant time).
    /// Expiry, device and epoch are the caller's to compare.
    pub fn open(&self, bytes: &[u8]) -> Option<Ticket> {
        if bytes.len() != TICKET_LEN {
            return None;
        }
        let (body, tag) = bytes.split_at(BODY);
        let mut m = self.mac();
        m.update(body);
        m.verify_slice(tag).ok()?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[i..i + 8]);
            b
        };
        let mut device = [0u8; 16];
        device.copy_from_slice(&body[8..24]);
        Some(Ticket {
            agent: u64::from_be_bytes(u64_at(0)),
            device: MsgId(device),
            auth_epoch: i64::from_be_bytes(u64_at(24)),
            expires_ms: i64::from_be_bytes(u64_at(32)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_only_with_its_key_and_untouched() {
        let k = TicketKey::derive(&[7; 32]);
        let t = Ticket {
            agent: 42,
            device: MsgId([3; 16]),
            auth_epoch: 2,
            expires_ms: 1_800_000_000_000,
        };
        let b = k.issue(&t);
        assert_eq!(b.len(), TICKET_LEN);
        assert_eq!(k.open(&b), Some(t));
        let other = TicketKey::derive(&[8; 32]);
        assert_eq!(other.open(&b), None, "another server's key");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(&bad), None, "flipped byte {i}");
        }
        assert_eq!(k.open(&b[..TICKET_LEN - 1]), None);
        assert_eq!(k.open(&[]), None);
    }
}
