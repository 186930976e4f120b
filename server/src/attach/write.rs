//! Writing bytes into an upload and finishing it, for every way bytes
//! arrive: an HTTP `PATCH` body (visitors) and an `UploadWrite` query on
//! the agent channel (agents). Both call [`write`], so the offset rule,
//! the per-upload lock, the pacing, the fsync-before-answer, the type
//! check, the thumbnail and the storage (disk or PostgreSQL) are one
//! implementation; the callers only check who may write and word the
//! answer.

use std::io;

use axum::body::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::io::AsyncWriteExt as _;

use super::pg::{self, Appended};
use super::store::{Disk, FinishError, Meta};
use super::upload::{self, Refusal, UploadState};
use super::{Attachments, Storage, blocking};
use crate::store::now_ms;

/// What became of a write.
#[derive(Debug)]
pub enum Written {
    /// Stored; the upload is at `offset` of `length`.
    Stored { offset: u64, length: u64 },
    /// Stored, and the upload is complete and accepted.
    Finished(Meta),
    /// Refused; nothing of the refused part is kept. `at` is where the
    /// upload stands (offset, length), if it still exists.
    Refused {
        refusal: Refusal,
        at: Option<(u64, u64)>,
    },
    /// Another write of this upload is in progress (disk; PostgreSQL finds
    /// the offset moved instead).
    Busy,
    /// The upload is no longer in progress (finished, refused or swept
    /// meanwhile): the caller looks for the finished file.
    Gone,
    /// Storage failed; nothing past `at` was acknowledged.
    Failed {
        error: io::Error,
        at: Option<(u64, u64)>,
    },
}

/// Writes the bytes of `body` at offset `sent` of upload `state` (which the
/// caller loaded and checked is the caller's), pacing them to `pace_key`'s
/// rate, and finishes the upload if they complete it. The answer comes
/// after what it reports is durable. A body that breaks off keeps what
/// arrived.
pub async fn write<S, E>(
    attach: &std::sync::Arc<Attachments>,
    state: UploadState,
    sent: u64,
    body: S,
    pace_key: &str,
) -> Written
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    if let Err(r) = upload::check_patch(&state, sent) {
        return Written::Refused {
            refusal: r,
            at: Some((state.offset, state.length)),
        };
    }
    match &attach.storage {
        Storage::Postgres(reads) => write_pg(attach, reads, state, body, pace_key).await,
        Storage::Disk(disk) => {
            // Held until this write ends, however it ends.
            let Some(_claim) = claim_soon(attach, &state.id).await else {
                return Written::Busy;
            };
            // Go by the offset as stored now that the upload is ours: the
            // write we waited for may have moved it.
            let state = match attach.load(&state.id).await {
                Ok(Some(s)) => s,
                Ok(None) => return Written::Gone,
                Err(error) => return Written::Failed { error, at: None },
            };
            if let Err(r) = upload::check_patch(&state, sent) {
                return Written::Refused {
                    refusal: r,
                    at: Some((state.offset, state.length)),
                };
            }
            write_disk(attach, disk, state, body, pace_key).await
        }
    }
}

/// The upload's claim, waiting up to [`CLAIM_WAIT`] for a write that holds
/// it. A write saves its new offset a moment before it lets go of the
/// claim, so a client that asks for the offset (HEAD) and sends the next
/// chunk at once could find the claim still held; on a loaded server that
/// moment was long enough to refuse it 409. Two writes really at once
/// still get one 409.
async fn claim_soon(attach: &std::sync::Arc<Attachments>, id: &str) -> Option<super::Claim> {
    let until = tokio::time::Instant::now() + CLAIM_WAIT;
    loop {
        if let Some(c) = attach.try_busy(id) {
            return Some(c);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How long a write waits for another write of the same upload to end.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// On PostgreSQL: the body is stored in pieces of at most [`pg::PIECE`],
/// each in its own transaction under the upload's row lock (so a piece is
/// committed before any offset past it is told, and a second write at the
/// same offset, on any node, finds the offset moved). One piece is the
/// most of an upload held in memory.
async fn write_pg<S, E>(
    attach: &Attachments,
    reads: &crate::store::ReadPool,
    state: UploadState,
    mut body: S,
    pace_key: &str,
) -> Written
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let remaining = usize::try_from(state.length - state.offset).unwrap_or(pg::PIECE);
    let mut buf: Vec<u8> = Vec::with_capacity(remaining.min(pg::PIECE));
    let (mut at, length) = (state.offset, state.length);
    let mut ended = false;
    loop {
        if !ended {
            match body.next().await {
                Some(Ok(chunk)) => {
                    let pending = at + buf.len() as u64;
                    if let Err(r) = upload::accept_chunk(&state, pending, chunk.len()) {
                        // Nothing of this write past its pieces already
                        // stored is kept; `at` says where it is.
                        return Written::Refused {
                            refusal: r,
                            at: Some((at, length)),
                        };
                    }
                    let wait = attach.pace(pace_key, chunk.len(), state.rate);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    buf.extend_from_slice(&chunk);
                }
                // The client went away mid-chunk: keep what arrived, so it
                // resumes from there rather than from the chunk's start.
                Some(Err(_)) | None => ended = true,
            }
        }
        // A full piece is stored at once; what is left when the body ends
        // (or breaks off) is stored then.
        let flush = buf.len() >= pg::PIECE || (ended && !buf.is_empty());
        if !flush {
            if ended {
                break;
            }
            continue;
        }
        let rest = if buf.len() > pg::PIECE {
            buf.split_off(pg::PIECE)
        } else {
            Vec::new()
        };
        let piece = std::mem::replace(&mut buf, rest);
        let (id, now) = (state.id.clone(), now_ms());
        let stored = reads
            .run(move |db| pg::append(db, &id, at, piece, now))
            .await;
        match stored {
            Ok(Appended::Stored(s)) => at = s.offset,
            Ok(Appended::Finished(meta)) => return Written::Finished(meta),
            Ok(Appended::Conflict(r, s)) => {
                return Written::Refused {
                    refusal: r,
                    at: Some((s.offset, s.length)),
                };
            }
            Ok(Appended::Rejected(r)) => {
                return Written::Refused {
                    refusal: r,
                    at: None,
                };
            }
            Ok(Appended::Gone) => return Written::Gone,
            Err(e) => {
                return Written::Failed {
                    error: super::store_io(e),
                    at: None,
                };
            }
        }
        if ended && buf.is_empty() {
            break;
        }
    }
    Written::Stored { offset: at, length }
}

/// On disk: appended to the part file, fsynced, then the offset recorded;
/// the last write finishes the upload.
async fn write_disk<S, E>(
    attach: &Attachments,
    disk: &Disk,
    mut state: UploadState,
    mut body: S,
    pace_key: &str,
) -> Written
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let d = disk.clone();
    let s2 = state.clone();
    let file = match blocking(move || d.open_part(&s2)).await {
        Ok(f) => f,
        Err(error) => return Written::Failed { error, at: None },
    };
    let mut file = tokio::fs::File::from_std(file);
    let start = state.offset;
    let mut at = start;
    let mut failure: Option<Result<Refusal, io::Error>> = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            // The client went away mid-chunk: keep what arrived, so it
            // resumes from there rather than from the chunk's start.
            Err(_) => break,
        };
        if let Err(r) = upload::accept_chunk(&state, at, chunk.len()) {
            failure = Some(Ok(r));
            at = start;
            break;
        }
        let wait = attach.pace(pace_key, chunk.len(), state.rate);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Err(e) = file.write_all(&chunk).await {
            failure = Some(Err(e));
            at = start;
            break;
        }
        at += chunk.len() as u64;
    }
    // Acknowledge only what is on disk: the bytes, then the offset.
    let synced = async {
        file.flush().await?;
        file.set_len(at).await?;
        file.sync_all().await
    }
    .await;
    if let Err(error) = synced {
        return Written::Failed { error, at: None };
    }
    drop(file);
    if at != state.offset {
        state.offset = at;
        let d = disk.clone();
        let s2 = state.clone();
        if let Err(error) = blocking(move || d.save(&s2)).await {
            return Written::Failed { error, at: None };
        }
    }
    let here = Some((state.offset, state.length));
    match failure {
        Some(Ok(refusal)) => return Written::Refused { refusal, at: here },
        Some(Err(error)) => return Written::Failed { error, at: here },
        None => {}
    }
    if state.offset < state.length {
        return Written::Stored {
            offset: state.offset,
            length: state.length,
        };
    }
    let d = disk.clone();
    let s2 = state.clone();
    let now = now_ms();
    let done = tokio::task::spawn_blocking(move || d.finish(&s2, now))
        .await
        .unwrap_or_else(|e| Err(FinishError::Io(io::Error::other(e))));
    attach.release(&state.id);
    match done {
        Ok(meta) => Written::Finished(meta),
        Err(FinishError::Refused(refusal)) => Written::Refused { refusal, at: None },
        Err(FinishError::Io(error)) => Written::Failed { error, at: None },
    }
}

/// Up to `max` bytes from `offset` of complete attachment `meta` (its
/// thumbnail with `thumb`), with the total size; `None` if the content is
/// gone (or there is no thumbnail). One read, bounded by `max`.
pub async fn read_range(
    attach: &Attachments,
    meta: &Meta,
    thumb: bool,
    offset: u64,
    max: usize,
) -> io::Result<Option<(u64, Vec<u8>)>> {
    let sha = if thumb {
        match &meta.thumb {
            Some(t) => t.clone(),
            None => return Ok(None),
        }
    } else {
        meta.sha256.clone()
    };
    match &attach.storage {
        Storage::Disk(disk) => {
            let path = disk.content_path(&sha);
            blocking(move || {
                use std::io::{Read as _, Seek as _};
                let mut f = match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
                let total = f.metadata()?.len();
                let from = offset.min(total);
                f.seek(io::SeekFrom::Start(from))?;
                let n = usize::try_from(total - from).unwrap_or(max).min(max);
                let mut buf = vec![0u8; n];
                f.read_exact(&mut buf)?;
                Ok(Some((total, buf)))
            })
            .await
        }
        Storage::Postgres(reads) => reads
            .run(move |db| pg::content_range(db, &sha, offset, max))
            .await
            .map_err(super::store_io),
    }
}
