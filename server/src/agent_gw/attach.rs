//! Agents' file queries (PROTOCOL.md 10.13.1): uploads and downloads over
//! the agent channel, under the HTTP side's rules and storage
//! ([`crate::attach`]). This file only decides who may do what and words
//! the answers; offsets, locks, pacing, completion and storage are
//! [`crate::attach::write`]'s, shared with the HTTP handlers.
//!
//! Order: the gateway answers one query of a connection at a time, in the
//! order sent (`QueryState`), so the writes of one connection apply in
//! order; the per-upload lock refuses a second device's write that
//! overlaps one in progress.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use holdfast_protocol::agent::{
    AttachmentInfo, ConversationId, ConversationState, MAX_UPLOAD_CHUNK, QueryResult, WireError,
};
use holdfast_protocol::error::ErrorCode;

use crate::Ctx;
use crate::attach::agent_owner;
use crate::attach::store::{Meta, valid_id};
use crate::attach::upload::{self, Refusal, UploadState};
use crate::attach::write::{self, Written};
use crate::store::{now_ms, reads};

/// The agent asking.
#[derive(Debug, Clone)]
pub(super) struct Asker {
    pub agent: u64,
    pub site: u64,
    pub ip: IpAddr,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> QueryResult {
    QueryResult::Refused(WireError {
        code,
        message: message.into(),
        retry_after_ms: None,
    })
}

fn not_found() -> QueryResult {
    refused(ErrorCode::NotFound, "no such upload or file")
}

/// An upload rule's refusal in the agent channel's codes: the same cases
/// and words as the HTTP statuses of `serve`.
fn refusal(r: &Refusal) -> QueryResult {
    let code = match r {
        Refusal::Empty
        | Refusal::NoLength
        | Refusal::Overrun { .. }
        | Refusal::BadType
        | Refusal::NotAccepted { .. }
        | Refusal::ImageTooBig { .. }
        | Refusal::BadImage(_) => ErrorCode::BadRequest,
        Refusal::TooLarge { .. } => ErrorCode::TooLarge,
        Refusal::TooManyPending => ErrorCode::RateLimited,
        Refusal::WrongOffset { .. } | Refusal::Complete => ErrorCode::Conflict,
    };
    match r {
        // The HTTP words say HEAD; an agent asks UploadOffset.
        Refusal::WrongOffset { sent, stored } => refused(
            code,
            format!(
                "offset {sent} is not the upload's offset {stored}; ask UploadOffset and \
                 continue from there"
            ),
        ),
        r => refused(code, r.to_string()),
    }
}

/// A storage failure: a full disk is said so, and may pass; either way
/// nothing past the last stored offset was acknowledged.
fn io_failure(e: &std::io::Error) -> QueryResult {
    tracing::warn!("attachment storage failed: {e}");
    let message = if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        "the server's disk is full; try again later from the current offset"
    } else {
        "the server cannot store that right now; try again from the current offset"
    };
    QueryResult::Refused(WireError {
        code: ErrorCode::Unavailable,
        message: message.into(),
        retry_after_ms: Some(5000),
    })
}

fn info(m: &Meta) -> AttachmentInfo {
    AttachmentInfo {
        id: m.id.clone(),
        name: m.name.clone(),
        mime: m.mime.clone(),
        size: m.size,
        image: m.thumb.is_some(),
    }
}

fn done(m: &Meta) -> QueryResult {
    QueryResult::UploadDone {
        offset: m.size,
        attachment: info(m),
    }
}

/// `UploadCreate`: into an active chat this agent serves, as it may `Send`.
pub(super) async fn create(
    ctx: &Arc<Ctx>,
    me: &Asker,
    conversation: ConversationId,
    name: &str,
    length: u64,
    mime_hint: &str,
) -> QueryResult {
    let site = me.site;
    let read = ctx
        .reads
        .run(move |c| {
            Ok((
                reads::conversation(c, conversation)?,
                reads::site_by_id(c, site)?,
            ))
        })
        .await;
    // The site's size and kinds hold for agents' files as for visitors';
    // its rate is a per-visitor limit, so agents keep the server's.
    let rules = match &read {
        Ok((_, Some(site))) => ctx.attach.site_policy(site),
        _ => ctx.attach.policy.for_site(None, None, None),
    };
    let length = match upload::check_create(rules.max_size, Some(length)) {
        Ok(l) => l,
        Err(r) => return refusal(&r),
    };
    let conv = read.map(|(c, _)| c);
    match conv {
        Ok(Some(c)) if c.site == me.site => {
            if c.state != ConversationState::Active || c.assigned != Some(me.agent) {
                return refused(
                    ErrorCode::Conflict,
                    format!("conversation {conversation} is not yours to send in"),
                );
            }
        }
        Ok(_) => {
            return refused(
                ErrorCode::NotFound,
                format!("no conversation {conversation}"),
            );
        }
        Err(e) => {
            tracing::warn!("upload create cannot read the chat: {e}");
            return QueryResult::Refused(WireError {
                code: ErrorCode::Unavailable,
                message: "the server cannot read that chat right now; try again".into(),
                retry_after_ms: Some(1000),
            });
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let state = UploadState {
        id: id.clone(),
        site: me.site,
        visitor: agent_owner(me.agent),
        conversation,
        name: upload::clean_name(name, ctx.attach.policy.max_name),
        declared_type: mime_hint.chars().take(100).collect(),
        length,
        offset: 0,
        created_ms: now_ms(),
        kinds: rules.kinds,
        rate: 0,
    };
    match ctx.attach.create(state, me.ip).await {
        Ok(true) => QueryResult::Upload {
            id,
            offset: 0,
            length,
        },
        Ok(false) => refusal(&Refusal::TooManyPending),
        Err(e) => io_failure(&e),
    }
}

/// This agent's upload `id` in progress, or its answer if there is none:
/// `UploadDone` if it has completed, else `NotFound`.
async fn own_upload(ctx: &Arc<Ctx>, me: &Asker, id: &str) -> Result<UploadState, QueryResult> {
    if !valid_id(id) {
        return Err(not_found());
    }
    match ctx.attach.load(id).await {
        Ok(Some(s)) if s.visitor == agent_owner(me.agent) && s.site == me.site => Ok(s),
        Ok(Some(_)) => Err(not_found()),
        Ok(None) => Err(own_finished(ctx, me, id).await),
        Err(e) => Err(io_failure(&e)),
    }
}

/// The answer for an upload that is no longer in progress: `UploadDone` if
/// it is this agent's and complete (its last write's answer was lost),
/// else `NotFound`.
async fn own_finished(ctx: &Arc<Ctx>, me: &Asker, id: &str) -> QueryResult {
    match ctx.attach.meta(id).await {
        Ok(Some(m)) if m.visitor == agent_owner(me.agent) && m.site == me.site => done(&m),
        Ok(_) => not_found(),
        Err(e) => io_failure(&e),
    }
}

/// `UploadOffset`, the tus `HEAD`.
pub(super) async fn offset(ctx: &Arc<Ctx>, me: &Asker, id: &str) -> QueryResult {
    match own_upload(ctx, me, id).await {
        Ok(s) => QueryResult::Upload {
            id: s.id,
            offset: s.offset,
            length: s.length,
        },
        Err(answer) => answer,
    }
}

/// `UploadWrite`: the bytes through the same write as an HTTP `PATCH`.
pub(super) async fn write(
    ctx: &Arc<Ctx>,
    me: &Asker,
    id: &str,
    at: u64,
    bytes: Vec<u8>,
) -> QueryResult {
    if bytes.len() > MAX_UPLOAD_CHUNK {
        return refused(
            ErrorCode::TooLarge,
            format!(
                "a write carries at most {MAX_UPLOAD_CHUNK} bytes, not {}",
                bytes.len()
            ),
        );
    }
    let state = match own_upload(ctx, me, id).await {
        Ok(s) => s,
        // A retried last write of a complete upload learns it is done.
        Err(answer) => return answer,
    };
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
    match write::write(&ctx.attach, state, at, body, &agent_owner(me.agent)).await {
        Written::Stored { offset, length } => QueryResult::Upload {
            id: id.to_string(),
            offset,
            length,
        },
        Written::Finished(meta) => done(&meta),
        Written::Refused {
            refusal: Refusal::Complete,
            ..
        } => own_finished(ctx, me, id).await,
        Written::Refused { refusal: r, .. } => refusal(&r),
        Written::Busy => refused(
            ErrorCode::Conflict,
            "another write of this upload is in progress; ask its offset and continue",
        ),
        Written::Gone => own_finished(ctx, me, id).await,
        Written::Failed { error, .. } => io_failure(&error),
    }
}

/// `AttachmentBytes`: a piece of any complete file of the agent's site
/// within retention, as `AttachmentLink` would link to.
pub(super) async fn bytes(
    ctx: &Arc<Ctx>,
    me: &Asker,
    id: &str,
    thumb: bool,
    at: u64,
    max: u32,
) -> QueryResult {
    if !valid_id(id) {
        return not_found();
    }
    // A file lives with its chat (PROTOCOL.md 10.13, Retention).
    let cutoff = crate::attach::files_cutoff(&ctx.cfg, now_ms());
    let meta = match ctx.attach.live_meta(&ctx.reads, id, cutoff).await {
        Ok(Some(m)) if m.site == me.site => m,
        Ok(_) => return not_found(),
        Err(e) => return io_failure(&e),
    };
    // Well inside a frame, whatever the peer asks for.
    let cap = MAX_UPLOAD_CHUNK.min(ctx.cfg.max_frame / 2);
    let max = usize::try_from(max).unwrap_or(cap).min(cap);
    match write::read_range(&ctx.attach, &meta, thumb, at, max).await {
        Ok(Some((total, bytes))) => QueryResult::AttachmentBytes {
            total,
            offset: at.min(total),
            bytes,
            mime: if thumb {
                "image/png".into()
            } else {
                meta.mime.clone()
            },
        },
        Ok(None) => not_found(),
        Err(e) => io_failure(&e),
    }
}
