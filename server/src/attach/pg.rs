//! Attachments in PostgreSQL, for the scale-out setup (`--database
//! postgres://…`): N equal nodes behind a balancer without sticky sessions,
//! so the create, each PATCH, the HEAD and every download of one upload may
//! each reach a different node, and any node may be killed in between.
//! Upload state, bytes, finished content and the pending counts are all
//! here, where every node sees the same thing.
//!
//! Why PostgreSQL rather than an S3-compatible store: the deployment has
//! PostgreSQL already and nothing else durable, attachments are bounded
//! (20 MB by default, a support chat's screenshots and PDFs, not a file
//! host), and keeping them in the database makes a PATCH's bytes and its
//! offset one transaction, their backup the database's backup (`pg_dump`,
//! base backups and WAL archiving carry them), and the row lock the guard
//! against two nodes writing one upload. The cost is database size and WAL
//! volume: a deployment storing many gigabytes of files should add an
//! object store as a third [`super::Storage`] variant.
//!
//! Layout (migration `0003_attachments.sql`):
//! - `attach_uploads`: one row per upload in progress; its `stored` offset
//!   changes only under that row's lock (`SELECT … FOR UPDATE`), in the
//!   same transaction as the piece it counts.
//! - `attach_chunks`: the bytes so far, one row of at most [`PIECE`] per
//!   stored piece. A row per piece, not one growing value: appending to a
//!   BYTEA rewrites the whole TOASTed value each time, and one 20 MB value
//!   would have to be read whole to serve a range of it.
//! - `attach_contents` + `attach_blobs`: finished content by SHA-256, kept
//!   once (dedupe), copied from the chunks inside the database.
//! - `attachments`: a finished attachment ([`Meta`]).
//! - An image's full-size view is content too, under [`view_key`] of the
//!   original's SHA-256 rather than its own: made on the first request,
//!   found by any node from the original alone, and swept with it.
//!
//! Every function here blocks (the synchronous client): call them through
//! [`crate::store::ReadPool::run`], never on an async worker.

use std::io::Cursor;

use sha2::{Digest, Sha256};

use super::sniff::{self, Kinds};
use super::store::Meta;
use super::thumb;
use super::upload::{self, Refusal, UploadState};
use crate::store::StoreError;
use crate::store::sql::{Db, Row, args, transaction};

/// The most bytes one stored piece (one row, one transaction) holds: a
/// PATCH larger than this is stored, and acknowledged offset by offset, in
/// several.
pub const PIECE: usize = 1024 * 1024;

/// The caps on uploads in progress, counted over every node.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    pub per_visitor: usize,
    pub per_ip: usize,
    /// Uploads created before this no longer count.
    pub since_ms: i64,
}

/// What became of a stored piece.
#[derive(Debug)]
pub enum Appended {
    /// Stored; the upload's state now.
    Stored(UploadState),
    /// Stored, and it was the last: the attachment is complete.
    Finished(Meta),
    /// Not stored: the offset moved (another PATCH, maybe on another node,
    /// got there first), the upload is complete, or the piece overruns the
    /// declared length. The state as it is.
    Conflict(Refusal, UploadState),
    /// The complete file was refused (type, image); it is deleted.
    Rejected(Refusal),
    /// No such upload (finished, refused or swept meanwhile).
    Gone,
}

const STATE_COLUMNS: &str = "id, site_id, visitor_id, conversation_id, name, declared_type, \
     length, stored, created_ms, kinds, rate";

fn state_of(r: &Row) -> Result<UploadState, StoreError> {
    Ok(UploadState {
        id: r.get(0)?,
        site: r.get(1)?,
        visitor: r.get(2)?,
        conversation: r.get(3)?,
        name: r.get(4)?,
        declared_type: r.get(5)?,
        length: r.get(6)?,
        offset: r.get(7)?,
        created_ms: r.get(8)?,
        kinds: Kinds::from_bits(u8::try_from(r.get::<i64>(9)?).unwrap_or(0)),
        rate: r.get(10)?,
    })
}

/// An advisory-lock key for one cap's counter.
fn lock_key(kind: &str, who: &str) -> i64 {
    let d = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(who.as_bytes())
        .finalize();
    let mut k = [0u8; 8];
    k.copy_from_slice(&d[..8]);
    i64::from_be_bytes(k)
}

fn count(db: &dyn Db, sql: &str, who: &str, since_ms: i64) -> Result<usize, StoreError> {
    let n: u64 = db.query_one(sql, &args![who, since_ms])?.get(0)?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Records a new upload unless its visitor or its address is at a cap;
/// whether it was recorded. The count and the insert run under advisory
/// locks on the visitor and the address, so creations racing on several
/// nodes are counted one after another (taken in key order, so two
/// creations never wait on each other's second lock).
pub fn create(db: &dyn Db, s: &UploadState, ip: &str, caps: Caps) -> Result<bool, StoreError> {
    transaction(db, |db| {
        let mut keys = [lock_key("visitor", &s.visitor), lock_key("ip", ip)];
        keys.sort_unstable();
        for k in keys {
            db.execute("SELECT pg_advisory_xact_lock(?1)", &args![k])?;
        }
        let by_visitor = count(
            db,
            "SELECT COUNT(*) FROM attach_uploads WHERE visitor_id = ?1 AND created_ms >= ?2",
            &s.visitor,
            caps.since_ms,
        )?;
        let by_ip = count(
            db,
            "SELECT COUNT(*) FROM attach_uploads WHERE ip = ?1 AND created_ms >= ?2",
            ip,
            caps.since_ms,
        )?;
        if by_visitor >= caps.per_visitor || by_ip >= caps.per_ip {
            return Ok(false);
        }
        db.execute(
            "INSERT INTO attach_uploads (id, site_id, visitor_id, conversation_id, ip, name, \
             declared_type, length, stored, created_ms, updated_ms, kinds, rate) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)",
            &args![
                &s.id,
                s.site,
                &s.visitor,
                s.conversation,
                ip,
                &s.name,
                &s.declared_type,
                s.length,
                s.offset,
                s.created_ms,
                i64::from(s.kinds.bits()),
                s.rate
            ],
        )?;
        Ok(true)
    })
}

pub fn load(db: &dyn Db, id: &str) -> Result<Option<UploadState>, StoreError> {
    db.query_opt(
        &format!("SELECT {STATE_COLUMNS} FROM attach_uploads WHERE id = ?1"),
        &args![id],
    )?
    .as_ref()
    .map(state_of)
    .transpose()
}

pub fn meta(db: &dyn Db, id: &str) -> Result<Option<Meta>, StoreError> {
    let Some(r) = db.query_opt(
        "SELECT id, site_id, visitor_id, conversation_id, name, mime, size, sha256, \
         thumb_sha256, completed_ms FROM attachments WHERE id = ?1",
        &args![id],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Meta {
        id: r.get(0)?,
        site: r.get(1)?,
        visitor: r.get(2)?,
        conversation: r.get(3)?,
        name: r.get(4)?,
        mime: r.get(5)?,
        size: r.get(6)?,
        sha256: r.get(7)?,
        thumb: r.get(8)?,
        completed_ms: r.get(9)?,
    }))
}

/// Stores `data` at offset `at` of upload `id`, and finishes the upload
/// if that completes it, in one transaction holding the upload's row
/// lock: committed before the caller acknowledges anything, and never
/// both of two PATCHes at one offset, whichever nodes they reached.
pub fn append(
    db: &dyn Db,
    id: &str,
    at: u64,
    data: Vec<u8>,
    now_ms: i64,
) -> Result<Appended, StoreError> {
    transaction(db, |db| {
        let Some(row) = db.query_opt(
            &format!("SELECT {STATE_COLUMNS} FROM attach_uploads WHERE id = ?1 FOR UPDATE"),
            &args![id],
        )?
        else {
            return Ok(Appended::Gone);
        };
        let mut s = state_of(&row)?;
        if let Err(r) = upload::check_patch(&s, at) {
            return Ok(Appended::Conflict(r, s));
        }
        if let Err(r) = upload::accept_chunk(&s, at, data.len()) {
            return Ok(Appended::Conflict(r, s));
        }
        if !data.is_empty() {
            s.offset = at + data.len() as u64;
            db.execute(
                "INSERT INTO attach_chunks (upload_id, at, data) VALUES (?1, ?2, ?3)",
                &args![id, at, data],
            )?;
            db.execute(
                "UPDATE attach_uploads SET stored = ?2, updated_ms = ?3 WHERE id = ?1",
                &args![id, s.offset, now_ms],
            )?;
        }
        if s.offset < s.length {
            return Ok(Appended::Stored(s));
        }
        finish(db, &s, now_ms)
    })
}

/// The upload's chunk holding bytes from `from` on: its offset and bytes.
fn chunk_from(db: &dyn Db, id: &str, from: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    db.query_opt(
        "SELECT at, data FROM attach_chunks WHERE upload_id = ?1 AND at >= ?2 \
         ORDER BY at LIMIT 1",
        &args![id, from],
    )?
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .transpose()
}

/// Calls `each` on the upload's chunks in order, one row in memory at a
/// time.
fn each_chunk(
    db: &dyn Db,
    id: &str,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<(), StoreError> {
    let mut from = 0;
    while let Some((at, data)) = chunk_from(db, id, from)? {
        if data.is_empty() || !each(&data) {
            break;
        }
        from = at + data.len() as u64;
    }
    Ok(())
}

/// Checks a complete upload, stores its content (and thumbnail) under
/// their SHA-256 and records the attachment; a refused file is deleted.
/// Runs inside [`append`]'s transaction, which sees the last piece.
fn finish(db: &dyn Db, s: &UploadState, now_ms: i64) -> Result<Appended, StoreError> {
    let reject = |r: Refusal| -> Result<Appended, StoreError> {
        db.execute("DELETE FROM attach_uploads WHERE id = ?1", &args![&s.id])?;
        Ok(Appended::Rejected(r))
    };
    let mut head = Vec::with_capacity(sniff::SNIFF_LEN);
    each_chunk(db, &s.id, |c| {
        let want = sniff::SNIFF_LEN - head.len();
        head.extend_from_slice(&c[..want.min(c.len())]);
        head.len() < sniff::SNIFF_LEN
    })?;
    let Some(kind) = sniff::sniff(&head) else {
        return reject(Refusal::BadType);
    };
    if let Err(r) = super::upload::check_kind(s, kind) {
        return reject(r);
    }
    let thumb_sha = if kind.is_image() {
        // The decoder seeks, so the image is read whole: at most the
        // policy's size limit, and the decoder's own limits bound the rest.
        let mut all = Vec::new();
        each_chunk(db, &s.id, |c| {
            all.extend_from_slice(c);
            true
        })?;
        match thumb::thumbnail(kind, Cursor::new(all)) {
            Ok(t) => {
                let sha = hex::encode(Sha256::digest(&t));
                if claim_content(db, &sha, t.len() as u64, now_ms)? {
                    db.execute(
                        "INSERT INTO attach_blobs (sha256, at, data) VALUES (?1, 0, ?2)",
                        &args![&sha, t],
                    )?;
                }
                Some(sha)
            }
            Err(r) => return reject(r),
        }
    } else {
        None
    };
    let mut h = Sha256::new();
    each_chunk(db, &s.id, |c| {
        h.update(c);
        true
    })?;
    let sha = hex::encode(h.finalize());
    if claim_content(db, &sha, s.length, now_ms)? {
        db.execute(
            "INSERT INTO attach_blobs (sha256, at, data) \
             SELECT ?1::text, at, data FROM attach_chunks WHERE upload_id = ?2",
            &args![&sha, &s.id],
        )?;
    }
    let meta = Meta {
        id: s.id.clone(),
        site: s.site,
        visitor: s.visitor.clone(),
        conversation: s.conversation,
        name: s.name.clone(),
        mime: kind.mime().to_string(),
        size: s.length,
        sha256: sha,
        thumb: thumb_sha,
        completed_ms: now_ms,
    };
    db.execute(
        "INSERT INTO attachments (id, site_id, visitor_id, conversation_id, name, mime, size, \
         sha256, thumb_sha256, completed_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        &args![
            &meta.id,
            meta.site,
            &meta.visitor,
            meta.conversation,
            &meta.name,
            &meta.mime,
            meta.size,
            &meta.sha256,
            &meta.thumb,
            meta.completed_ms
        ],
    )?;
    db.execute("DELETE FROM attach_uploads WHERE id = ?1", &args![&s.id])?;
    Ok(Appended::Finished(meta))
}

/// Marks content `sha` as in use now (creating its row); whether its bytes
/// still have to be stored. The upsert takes the row's lock, so a sweep
/// deciding to delete the same content waits, then sees it in use.
fn claim_content(db: &dyn Db, sha: &str, size: u64, now_ms: i64) -> Result<bool, StoreError> {
    db.execute(
        "INSERT INTO attach_contents (sha256, size, used_ms) VALUES (?1, ?2, ?3) \
         ON CONFLICT (sha256) DO UPDATE SET used_ms = excluded.used_ms",
        &args![sha, size, now_ms],
    )?;
    Ok(db
        .query_opt(
            "SELECT 1 FROM attach_blobs WHERE sha256 = ?1 LIMIT 1",
            &args![sha],
        )?
        .is_none())
}

/// Where the full-size view of content `sha` is kept in `attach_contents`
/// and `attach_blobs`: not a SHA-256, so it never names other content.
pub fn view_key(sha: &str) -> String {
    format!("view-{sha}")
}

/// Makes and stores the full-size view of image content `sha` of `kind`,
/// unless it is gone or does not decode (`false`). The view's pieces and
/// its content row commit together, so a reader finds all of it or none;
/// two nodes making it at once store it once (the bytes are the same).
pub fn make_view(
    db: &dyn Db,
    sha: &str,
    kind: sniff::Kind,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let Some(size) = content_size(db, sha)? else {
        return Ok(false);
    };
    // The decoder seeks, so the original is read whole: at most the size
    // limit, as when its thumbnail was made.
    let mut all = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some((at, data)) = content_from(db, sha, all.len() as u64)? {
        if data.is_empty() || at != all.len() as u64 {
            break;
        }
        all.extend_from_slice(&data);
    }
    if all.len() as u64 != size {
        return Ok(false);
    }
    let Ok(view) = thumb::view(kind, Cursor::new(all)) else {
        return Ok(false);
    };
    let key = view_key(sha);
    transaction(db, |db| {
        db.execute(
            "INSERT INTO attach_contents (sha256, size, used_ms) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sha256) DO UPDATE SET used_ms = excluded.used_ms",
            &args![&key, view.len() as u64, now_ms],
        )?;
        for (i, piece) in view.chunks(PIECE).enumerate() {
            db.execute(
                "INSERT INTO attach_blobs (sha256, at, data) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (sha256, at) DO NOTHING",
                &args![&key, (i * PIECE) as u64, piece.to_vec()],
            )?;
        }
        Ok(true)
    })
}

/// The size of stored content `sha`.
pub fn content_size(db: &dyn Db, sha: &str) -> Result<Option<u64>, StoreError> {
    db.query_opt(
        "SELECT size FROM attach_contents WHERE sha256 = ?1",
        &args![sha],
    )?
    .map(|r| r.get(0))
    .transpose()
}

/// The piece of content `sha` holding bytes from `from` on.
pub fn content_from(
    db: &dyn Db,
    sha: &str,
    from: u64,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    db.query_opt(
        "SELECT at, data FROM attach_blobs WHERE sha256 = ?1 AND at >= ?2 ORDER BY at LIMIT 1",
        &args![sha, from],
    )?
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .transpose()
}

/// Up to `max` bytes of content `sha` from `from`, with its size, read
/// from the stored pieces holding them (a few rows: pieces are what the
/// uploads' writes stored, up to [`PIECE`] each).
pub fn content_range(
    db: &dyn Db,
    sha: &str,
    from: u64,
    max: usize,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let Some(total) = content_size(db, sha)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    let mut pos = from;
    // Bounded: tiny pieces (an upload of many small writes) give a short
    // read, which the reader continues from, rather than a long loop here.
    for _ in 0..64 {
        if pos >= total || out.len() >= max {
            break;
        }
        let Some(r) = db.query_opt(
            "SELECT at, data FROM attach_blobs WHERE sha256 = ?1 AND at <= ?2 \
             ORDER BY at DESC LIMIT 1",
            &args![sha, pos],
        )?
        else {
            break;
        };
        let (at, data): (u64, Vec<u8>) = (r.get(0)?, r.get(1)?);
        let skip = usize::try_from(pos - at).unwrap_or(usize::MAX);
        let piece = data.get(skip..).unwrap_or_default();
        if piece.is_empty() {
            break;
        }
        let take = piece.len().min(max - out.len());
        out.extend_from_slice(&piece[..take]);
        pos += take as u64;
    }
    if out.is_empty() && from < total {
        return Ok(None);
    }
    Ok(Some((total, out)))
}

/// Deletes the attachments of chats that ended before `cutoff_ms` (their
/// content too, unless another attachment names it) and uploads created before
/// `stale_ms`; how many attachments went.
pub fn prune(db: &dyn Db, cutoff_ms: i64, stale_ms: i64) -> Result<usize, StoreError> {
    // A file lives with its chat: it goes once its chat ended (closed,
    // its last change) before the cutoff, or is gone.
    let n = db.execute(
        "DELETE FROM attachments a WHERE a.completed_ms < ?1 AND NOT EXISTS \
         (SELECT 1 FROM conversations c WHERE c.id = a.conversation_id \
          AND (c.state != 2 OR c.updated_ms >= ?1))",
        &args![cutoff_ms],
    )?;
    transaction(db, |db| {
        // used_ms is the last finish naming the content, so content used
        // since the cutoff (maybe by a finish not yet committed) stays.
        let gone = db.query_rows(
            "DELETE FROM attach_contents c WHERE c.used_ms < ?1 \
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.sha256 = c.sha256) \
             AND NOT EXISTS (SELECT 1 FROM attachments a WHERE a.thumb_sha256 = c.sha256) \
             AND NOT (c.sha256 LIKE 'view-%' AND EXISTS \
              (SELECT 1 FROM attachments a WHERE a.sha256 = substr(c.sha256, 6))) \
             RETURNING sha256",
            &args![cutoff_ms],
        )?;
        for r in gone {
            let sha: String = r.get(0)?;
            db.execute("DELETE FROM attach_blobs WHERE sha256 = ?1", &args![sha])?;
        }
        Ok::<_, StoreError>(())
    })?;
    db.execute(
        "DELETE FROM attach_uploads WHERE created_ms < ?1",
        &args![stale_ms],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}
