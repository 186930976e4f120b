//! Attachments: resumable uploads over HTTP, content-addressed storage,
//! type sniffing, thumbnails and safe, expiring download links.
//!
//! - [`upload`]: the upload rules (offsets, lengths, limits), no I/O.
//! - [`sniff`]: what a file is, from its magic bytes.
//! - [`thumb`]: thumbnails through the `image` crate, with a bomb guard.
//! - [`store`]: the files under the data directory.
//! - [`serve`]: the HTTP handlers.
//!
//! Who may upload: a visitor, with the token of its session, into its open
//! chat. Agents speak only the agent channel; their uploads need a token
//! issued there, which is not built yet (see PROTOCOL.md 10.13).

pub mod serve;
pub mod sniff;
pub mod store;
pub mod thumb;
pub mod upload;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use upload::Policy;

/// How long a download link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(3600);
/// An upload nobody has touched for this long no longer counts against
/// its visitor's and address's caps, and the sweep deletes it.
pub const STALE_UPLOAD: Duration = Duration::from_secs(24 * 3600);
/// Within this, an upload counts as pending against the caps.
const PENDING_WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Pending {
    visitor: String,
    ip: IpAddr,
    at: Instant,
}

/// The attachment service's shared state.
pub struct Attachments {
    pub disk: store::Disk,
    pub policy: Policy,
    link_key: [u8; 32],
    pending: Mutex<HashMap<String, Pending>>,
    /// Per visitor: when its uploads may next send, for the rate limit.
    pace: Mutex<HashMap<String, Instant>>,
    /// One PATCH at a time per upload: two at once would both pass the
    /// offset check and then interleave their bytes.
    busy: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("root", &self.disk.root())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Attachments {
    pub fn open(data_dir: &std::path::Path, policy: Policy) -> std::io::Result<Self> {
        let disk = store::Disk::open(data_dir)?;
        let link_key = disk.link_key()?;
        Ok(Self {
            disk,
            policy,
            link_key,
            pending: Mutex::new(HashMap::new()),
            pace: Mutex::new(HashMap::new()),
            busy: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Counts a new upload against its visitor's and address's caps, or
    /// refuses it.
    pub fn reserve(&self, id: &str, visitor: &str, ip: IpAddr) -> bool {
        let mut p = lock(&self.pending);
        p.retain(|_, e| e.at.elapsed() < PENDING_WINDOW);
        let by_visitor = p.values().filter(|e| e.visitor == visitor).count();
        let by_ip = p.values().filter(|e| e.ip == ip).count();
        if by_visitor >= self.policy.max_pending_per_visitor
            || by_ip >= self.policy.max_pending_per_ip
        {
            return false;
        }
        p.insert(
            id.to_string(),
            Pending {
                visitor: visitor.to_string(),
                ip,
                at: Instant::now(),
            },
        );
        true
    }

    pub fn release(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    pub fn try_busy(&self, id: &str) -> bool {
        lock(&self.busy).insert(id.to_string())
    }

    pub fn done_busy(&self, id: &str) {
        lock(&self.busy).remove(id);
    }

    /// How long to wait before taking `n` more bytes from `visitor`'s
    /// uploads: the rate limit paces the reads rather than refusing, so a
    /// fast client is slowed, not failed.
    pub fn pace(&self, visitor: &str, n: usize) -> Duration {
        let rate = self.policy.rate_bytes_per_sec.max(1);
        let cost = Duration::from_secs_f64(n as f64 / rate as f64);
        let now = Instant::now();
        let mut m = lock(&self.pace);
        if m.len() > 10_000 {
            m.retain(|_, t| *t > now);
        }
        let next = m.entry(visitor.to_string()).or_insert(now);
        // A burst of one second's worth goes through at once.
        let start = (*next).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        *next = start + cost;
        next.saturating_duration_since(now)
    }

    /// The signature of a download link for attachment `id` (`thumb` for its
    /// thumbnail) until `exp_ms`.
    pub fn sign(&self, id: &str, thumb: bool, exp_ms: i64) -> String {
        let mut mac = match HmacSha256::new_from_slice(&self.link_key) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(if thumb { b"/thumb" } else { b"/file\0" });
        mac.update(&exp_ms.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    pub fn verify(&self, id: &str, thumb: bool, exp_ms: i64, sig: &str, now_ms: i64) -> bool {
        if exp_ms < now_ms {
            return false;
        }
        let want = self.sign(id, thumb, exp_ms);
        // Constant time: a timing oracle on the signature would let one
        // be guessed byte by byte.
        want.len() == sig.len()
            && want
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Deletes attachments past retention and abandoned uploads, hourly.
pub async fn sweep(ctx: std::sync::Arc<crate::Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::store::now_ms();
        let retention = i64::try_from(ctx.cfg.writer.retention.as_millis()).unwrap_or(i64::MAX);
        let stale = i64::try_from(STALE_UPLOAD.as_millis()).unwrap_or(i64::MAX);
        let a = ctx.attach.clone();
        let r = tokio::task::spawn_blocking(move || {
            a.disk
                .prune(now.saturating_sub(retention), now.saturating_sub(stale))
        })
        .await;
        match r {
            Ok(Ok(n)) if n > 0 => tracing::info!("pruned {n} attachments older than retention"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("attachment sweep failed: {e}"),
            Err(e) => tracing::warn!("attachment sweep panicked: {e}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// `png` with its IHDR claiming `w`x`h` pixels (CRC fixed up).
    pub fn png_with_dimensions(png: &[u8], w: u32, h: u32) -> Vec<u8> {
        let mut out = png.to_vec();
        out[16..20].copy_from_slice(&w.to_be_bytes());
        out[20..24].copy_from_slice(&h.to_be_bytes());
        let crc = crc32(&out[12..29]);
        out[29..33].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
}
