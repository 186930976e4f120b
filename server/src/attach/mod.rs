//! Attachments: resumable uploads over HTTP, content-addressed storage,
//! type sniffing, thumbnails and safe, expiring download links.
//!
//! - [`upload`]: the upload rules (offsets, lengths, limits), no I/O.
//! - [`sniff`]: what a file is, from its magic bytes.
//! - [`thumb`]: thumbnails through the `image` crate, with a bomb guard.
//! - [`store`]: the files under the data directory (SQLite, one node).
//! - [`pg`]: the same in PostgreSQL, for several nodes (`--database`).
//! - [`write`]: writing bytes into an upload and finishing it, shared by
//!   the HTTP handlers and the agent channel.
//! - [`serve`]: the HTTP handlers.
//!
//! Where they live is [`Storage`], chosen by the setup: one node on SQLite
//! keeps files under its data dir, as it always has; N nodes on PostgreSQL
//! keep upload state, bytes, pending counts and the per-upload lock in the
//! database, since a balancer without sticky sessions sends each request of
//! one upload to any node (see `pg`'s docs for why PostgreSQL and not an
//! object store; one would be a third variant). The download-link key is
//! the data dir's `link.key` on SQLite and derived from the shared server
//! key on PostgreSQL, so a link signed by one node verifies on all.
//!
//! Who may upload: a visitor, with the token of its session, into its open
//! chat, over HTTP; an agent, over its own channel, into an active chat it
//! serves (`crate::agent_gw::attach`, PROTOCOL.md 10.13.1). An upload's
//! owner is kept in [`upload::UploadState::visitor`]: a visitor id, or
//! [`agent_owner`] for an agent, which no visitor id can equal.

pub mod pg;
pub mod serve;
pub mod sniff;
pub mod store;
pub mod thumb;
pub mod upload;
pub mod write;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::io;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub use upload::Policy;

/// The owner key of an agent's uploads: stands where a visitor id does
/// (caps, pacing, who may write). Visitor ids are UUIDs, so none starts
/// with `agent:`.
pub fn agent_owner(agent: u64) -> String {
    format!("agent:{agent}")
}

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

/// One PATCH's hold on its upload (disk only); see [`Attachments::try_busy`].
pub struct Claim {
    attach: std::sync::Arc<Attachments>,
    id: String,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).finish()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.attach.busy).remove(&self.id);
    }
}

/// Where attachments live.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Files under the data dir: one node (SQLite).
    Disk(store::Disk),
    /// Rows in the shared database: any number of nodes.
    Postgres(crate::store::ReadPool),
}

/// The attachment service's shared state.
pub struct Attachments {
    pub storage: Storage,
    pub policy: Policy,
    link_key: Zeroizing<[u8; 32]>,
    /// Disk only: the pending uploads counted against the caps (PostgreSQL
    /// counts its rows, over all nodes).
    pending: Mutex<HashMap<String, Pending>>,
    /// Per visitor: when its uploads may next send, for the rate limit.
    pace: Mutex<HashMap<String, Instant>>,
    /// Disk only: one PATCH at a time per upload: two at once would both
    /// pass the offset check and then interleave their bytes. (PostgreSQL
    /// locks the upload's row instead, which holds across nodes.)
    busy: Mutex<std::collections::HashSet<String>>,
    /// One full-size view is made at a time (see [`Attachments::view`]).
    view_gate: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Attachments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachments")
            .field("storage", &self.storage)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The HKDF salt of the link key derived from the server key: distinct
/// from every other key derived from it (tokens, tickets).
const LINK_KEY_SALT: &[u8] = b"holdfast attachment links";
const LINK_KEY_INFO: &[u8] = b"hf-attach-link-v1";

/// The download-link key of a cluster: every node derives the same one
/// from the server key they share.
fn derive_link_key(server_secret: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(LINK_KEY_SALT), server_secret);
    let mut k = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA256 output length.
    if hk.expand(LINK_KEY_INFO, k.as_mut()).is_err() {
        tracing::error!("HKDF refused a 32-byte output");
    }
    k
}

impl Attachments {
    /// Files under `data_dir`, with the link key kept there (one node).
    pub fn open(data_dir: &std::path::Path, policy: Policy) -> std::io::Result<Self> {
        let disk = store::Disk::open(data_dir)?;
        let link_key = Zeroizing::new(disk.link_key()?);
        Ok(Self::with(Storage::Disk(disk), link_key, policy))
    }

    /// Rows in the shared PostgreSQL database, reached through `reads`,
    /// with the link key derived from the shared server key.
    pub fn on_postgres(
        reads: crate::store::ReadPool,
        server_secret: &[u8; 32],
        policy: Policy,
    ) -> Self {
        Self::with(
            Storage::Postgres(reads),
            derive_link_key(server_secret),
            policy,
        )
    }

    fn with(storage: Storage, link_key: Zeroizing<[u8; 32]>, policy: Policy) -> Self {
        Self {
            storage,
            policy,
            link_key,
            pending: Mutex::new(HashMap::new()),
            pace: Mutex::new(HashMap::new()),
            busy: Mutex::new(std::collections::HashSet::new()),
            view_gate: tokio::sync::Semaphore::new(1),
        }
    }

    /// Records a new upload, counted against its visitor's and address's
    /// caps; `false` if a cap is reached.
    pub async fn create(&self, s: upload::UploadState, ip: IpAddr) -> io::Result<bool> {
        match &self.storage {
            Storage::Disk(disk) => {
                if !self.reserve(&s.id, &s.visitor, ip) {
                    return Ok(false);
                }
                let id = s.id.clone();
                let disk = disk.clone();
                let r = blocking(move || disk.create(&s)).await;
                if r.is_err() {
                    self.release(&id);
                }
                r.map(|()| true)
            }
            Storage::Postgres(reads) => {
                let caps = pg::Caps {
                    per_visitor: self.policy.max_pending_per_visitor,
                    per_ip: self.policy.max_pending_per_ip,
                    since_ms: crate::store::now_ms().saturating_sub(
                        i64::try_from(PENDING_WINDOW.as_millis()).unwrap_or(i64::MAX),
                    ),
                };
                let ip = ip.to_string();
                reads
                    .run(move |db| pg::create(db, &s, &ip, caps))
                    .await
                    .map_err(store_io)
            }
        }
    }

    /// Upload `id` in progress, if any.
    pub async fn load(&self, id: &str) -> io::Result<Option<upload::UploadState>> {
        if !store::valid_id(id) {
            return Ok(None);
        }
        let id = id.to_string();
        match &self.storage {
            Storage::Disk(disk) => {
                let disk = disk.clone();
                blocking(move || disk.load(&id)).await
            }
            Storage::Postgres(reads) => reads
                .run(move |db| pg::load(db, &id))
                .await
                .map_err(store_io),
        }
    }

    /// Complete attachment `id`, if any (whatever its age).
    pub async fn meta(&self, id: &str) -> io::Result<Option<store::Meta>> {
        if !store::valid_id(id) {
            return Ok(None);
        }
        let id = id.to_string();
        match &self.storage {
            Storage::Disk(disk) => {
                let disk = disk.clone();
                blocking(move || disk.meta(&id)).await
            }
            Storage::Postgres(reads) => reads
                .run(move |db| pg::meta(db, &id))
                .await
                .map_err(store_io),
        }
    }

    /// The rules for `site`: the server's, narrowed by the site's own.
    pub fn site_policy(&self, site: &crate::store::reads::SiteRow) -> upload::SitePolicy {
        self.policy
            .for_site(site.attach_max_bytes, site.attach_kinds, site.attach_rate)
    }

    /// Complete attachment `id` if its chat still keeps it: the chat is
    /// open, or ended at or after `cutoff_ms` (now minus retention). Files
    /// live with their chat rather than from their upload, so a chat that
    /// runs for weeks keeps its first screenshot, and history shows a file
    /// for as long as the chat is retained.
    pub async fn live_meta(
        &self,
        reads: &crate::store::ReadPool,
        id: &str,
        cutoff_ms: i64,
    ) -> io::Result<Option<store::Meta>> {
        let Some(m) = self.meta(id).await? else {
            return Ok(None);
        };
        // A file completed after the cutoff cannot be past it yet; only an
        // older one costs a read of its chat.
        if m.completed_ms >= cutoff_ms {
            return Ok(Some(m));
        }
        let conversation = m.conversation;
        let expired = reads
            .run(move |c| crate::store::reads::chat_files_expired(c, conversation, cutoff_ms))
            .await
            .map_err(store_io)?;
        Ok((!expired).then_some(m))
    }

    /// Deletes the files of chats that ended before `cutoff_ms` and
    /// uploads untouched since `stale_ms`.
    pub async fn prune(
        &self,
        reads: &crate::store::ReadPool,
        cutoff_ms: i64,
        stale_ms: i64,
    ) -> io::Result<usize> {
        match &self.storage {
            Storage::Disk(disk) => {
                // The chats live in the database and the files on disk: ask
                // about the chats of the files old enough to be candidates.
                let d = disk.clone();
                let chats = blocking(move || d.chats_completed_before(cutoff_ms)).await?;
                let mut ended = std::collections::HashSet::new();
                for conversation in chats {
                    let gone = reads
                        .run(move |c| {
                            crate::store::reads::chat_files_expired(c, conversation, cutoff_ms)
                        })
                        .await
                        .map_err(store_io)?;
                    if gone {
                        ended.insert(conversation);
                    }
                }
                let disk = disk.clone();
                blocking(move || disk.prune(cutoff_ms, stale_ms, &ended)).await
            }
            Storage::Postgres(_) => reads
                .run(move |db| pg::prune(db, cutoff_ms, stale_ms))
                .await
                .map_err(store_io),
        }
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

    /// Claims upload `id` for one PATCH, or `None` while another holds it.
    /// The claim goes when dropped, however its holder ends.
    pub fn try_busy(self: &std::sync::Arc<Self>, id: &str) -> Option<Claim> {
        lock(&self.busy).insert(id.to_string()).then(|| Claim {
            attach: self.clone(),
            id: id.to_string(),
        })
    }

    /// How long to wait before taking `n` more bytes from `visitor`'s
    /// uploads: the rate limit paces the reads rather than refusing, so a
    /// fast client is slowed, not failed.
    /// `rate` is the upload's (its site's), or 0 for the server's.
    pub fn pace(&self, visitor: &str, n: usize, rate: u64) -> Duration {
        let rate = if rate == 0 {
            self.policy.rate_bytes_per_sec
        } else {
            rate
        }
        .max(1);
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

    /// The signature of a download link of `kind` for attachment `id`
    /// until `exp_ms`.
    pub fn sign(&self, id: &str, kind: LinkKind, exp_ms: i64) -> String {
        let mut mac = match HmacSha256::new_from_slice(self.link_key.as_ref()) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(id.as_bytes());
        mac.update(kind.label());
        mac.update(&exp_ms.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Download links for `meta`, valid for [`LINK_LIFETIME`] from `now_ms`:
    /// shared by the visitor's HTTP link and the agent's link query so both
    /// sign the same way.
    pub fn links(&self, meta: &store::Meta, now_ms: i64) -> SignedLinks {
        let exp = now_ms.saturating_add(i64::try_from(LINK_LIFETIME.as_millis()).unwrap_or(0));
        self.links_until(meta, exp)
    }

    /// [`Self::links`] that stop working at `exp` (the tests sign some
    /// that expired already).
    pub fn links_until(&self, meta: &store::Meta, exp: i64) -> SignedLinks {
        let id = &meta.id;
        let path = |kind: LinkKind| {
            format!(
                "/v1/files/{id}{}?e={exp}&s={}",
                kind.suffix(),
                self.sign(id, kind, exp)
            )
        };
        // The thumbnail's existence says the file is a raster image that
        // decoded: the one kind with a view.
        let image = meta.thumb.is_some();
        SignedLinks {
            url: path(LinkKind::File),
            thumb_url: image.then(|| path(LinkKind::Thumb)),
            view_url: image.then(|| path(LinkKind::View)),
            expires_ms: exp,
        }
    }

    pub fn verify(&self, id: &str, kind: LinkKind, exp_ms: i64, sig: &str, now_ms: i64) -> bool {
        if exp_ms < now_ms {
            return false;
        }
        let want = self.sign(id, kind, exp_ms);
        // Constant time: a timing oracle on the signature would let one
        // be guessed byte by byte.
        want.len() == sig.len()
            && want
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Makes sure the full-size view of image `meta` (see [`thumb::view`])
    /// is stored, making it from the original on the first request, since
    /// most images are only ever seen as thumbnails; then it is served from
    /// storage like any content. `false` for a file that is not an image
    /// with a thumbnail, or whose content is gone.
    pub async fn ensure_view(&self, meta: &store::Meta) -> io::Result<bool> {
        let Some(kind) = store::kind_of(meta).filter(|k| k.is_image()) else {
            return Ok(false);
        };
        if meta.thumb.is_none() {
            return Ok(false);
        }
        if self.has_view(&meta.sha256).await? {
            return Ok(true);
        }
        // One view is made at a time on a node: decoding a large image
        // takes up to 256 MB, and a burst of first clicks on one image
        // makes it once (the others wait, then find it stored).
        let _one = self.view_gate.acquire().await.map_err(io::Error::other)?;
        if self.has_view(&meta.sha256).await? {
            return Ok(true);
        }
        let sha = meta.sha256.clone();
        match &self.storage {
            Storage::Disk(disk) => {
                let disk = disk.clone();
                blocking(move || {
                    let f = match std::fs::File::open(disk.content_path(&sha)) {
                        Ok(f) => f,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                        Err(e) => return Err(e),
                    };
                    // It decoded when it was uploaded, with the same limits.
                    let Ok(v) = thumb::view(kind, io::BufReader::new(f)) else {
                        return Ok(false);
                    };
                    disk.put_view(&sha, &v)?;
                    Ok(true)
                })
                .await
            }
            Storage::Postgres(reads) => reads
                .run(move |db| pg::make_view(db, &sha, kind, crate::store::now_ms()))
                .await
                .map_err(store_io),
        }
    }

    async fn has_view(&self, sha: &str) -> io::Result<bool> {
        match &self.storage {
            Storage::Disk(disk) => {
                let path = disk.view_path(sha);
                blocking(move || path.try_exists()).await
            }
            Storage::Postgres(reads) => {
                let key = pg::view_key(sha);
                reads
                    .run(move |db| pg::content_size(db, &key))
                    .await
                    .map(|n| n.is_some())
                    .map_err(store_io)
            }
        }
    }
}

/// What a download link fetches; each is signed apart, so a thumbnail's
/// link cannot be turned into the file's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// The original, always as a download.
    File,
    /// The server's 320-pixel PNG.
    Thumb,
    /// The server's full-size re-encoding, shown inline.
    View,
}

impl LinkKind {
    /// What the signature covers besides the id and expiry. `File` and
    /// `Thumb` are what they were before views existed, so links issued
    /// then still verify.
    fn label(self) -> &'static [u8] {
        match self {
            LinkKind::File => b"/file\0",
            LinkKind::Thumb => b"/thumb",
            LinkKind::View => b"/view\0",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            LinkKind::File => "",
            LinkKind::Thumb => "/thumb",
            LinkKind::View => "/view",
        }
    }
}

/// Paths on the server's HTTP origin that fetch an attachment until
/// `expires_ms`.
#[derive(Debug, Clone)]
pub struct SignedLinks {
    pub url: String,
    pub thumb_url: Option<String>,
    /// The full-size view (images only).
    pub view_url: Option<String>,
    pub expires_ms: i64,
}

/// The cutoff [`Attachments::live_meta`] and the sweep take at `now_ms`: a
/// chat that ended before it has had its files for the retention period.
pub fn files_cutoff(cfg: &crate::config::ServerConfig, now_ms: i64) -> i64 {
    let retention = i64::try_from(cfg.writer.retention.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(retention)
}

/// Deletes the files of chats past retention and abandoned uploads,
/// hourly.
pub async fn sweep(ctx: std::sync::Arc<crate::Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::store::now_ms();
        let stale = i64::try_from(STALE_UPLOAD.as_millis()).unwrap_or(i64::MAX);
        let r = ctx
            .attach
            .prune(
                &ctx.reads,
                files_cutoff(&ctx.cfg, now),
                now.saturating_sub(stale),
            )
            .await;
        match r {
            Ok(n) if n > 0 => tracing::info!("pruned {n} attachments older than retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!("attachment sweep failed: {e}"),
        }
    }
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

/// A database failure as the HTTP layer reports storage failures: a full
/// database like a full disk (507), anything else as unavailable (503).
pub(crate) fn store_io(e: crate::store::StoreError) -> io::Error {
    match e {
        crate::store::StoreError::Full(m) => io::Error::new(io::ErrorKind::StorageFull, m),
        e => io::Error::other(e),
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
