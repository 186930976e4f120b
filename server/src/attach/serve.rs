//! The attachment endpoints on the HTTP port.
//!
//! ```text
//! POST  /v1/attach               create: {"length","name","type"} → 201
//! HEAD  /v1/attach/{id}          Upload-Offset, Upload-Length
//! PATCH /v1/attach/{id}          Upload-Offset + bytes → 204, or 200 when complete
//! GET   /v1/attach/{id}/link     a signed, expiring download link
//! GET   /v1/files/{id}?e=&s=     the file (always a download)
//! GET   /v1/files/{id}/thumb?e=&s=  the re-encoded thumbnail (inline)
//! GET   /v1/files/{id}/view?e=&s=   the re-encoded full-size image (inline)
//! ```
//!
//! Upload requests carry the visitor's session token in `X-Holdfast-Token`,
//! as long-poll requests do. Download links carry their own signature
//! instead, so an `<img>` or a plain link works without the token, and
//! expire; everything about an attachment that is not the caller's, or is
//! past retention, is 404.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;
use tower_http::cors::{Any, CorsLayer};

use super::pg;
use super::store::{Meta, valid_id};
use super::upload::{self, Refusal, UploadState};
use super::write::{self, Written};
use super::{LinkKind, Storage};
use crate::Ctx;
use crate::store::{now_ms, reads};

const UPLOAD_OFFSET: &str = "upload-offset";
const UPLOAD_LENGTH: &str = "upload-length";

pub fn routes() -> Router<Arc<Ctx>> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::HEAD])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static(crate::visitor::long_poll::TOKEN_HEADER),
            HeaderName::from_static(crate::visitor::long_poll::IDENTITY_HEADER),
            HeaderName::from_static(UPLOAD_OFFSET),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static(UPLOAD_OFFSET),
            HeaderName::from_static(UPLOAD_LENGTH),
        ]);
    Router::new()
        .route("/v1/attach", post(create))
        .route("/v1/attach/{id}", axum::routing::patch(patch).head(head))
        .route("/v1/attach/{id}/link", get(link))
        .layer(cors)
        .route("/v1/files/{id}", get(file))
        .route("/v1/files/{id}/thumb", get(thumb))
        .route("/v1/files/{id}/view", get(view))
}

#[derive(Serialize)]
struct ErrorBody {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let mut r = (
        status,
        axum::Json(ErrorBody {
            error: code,
            message: message.into(),
            offset: None,
        }),
    )
        .into_response();
    no_store(r.headers_mut());
    r
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such attachment")
}

fn refused(r: &Refusal) -> Response {
    let (status, code) = match r {
        Refusal::Empty | Refusal::NoLength | Refusal::Overrun { .. } => {
            (StatusCode::BAD_REQUEST, "bad_request")
        }
        Refusal::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        Refusal::TooManyPending => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Refusal::WrongOffset { .. } | Refusal::Complete => (StatusCode::CONFLICT, "conflict"),
        Refusal::BadType | Refusal::NotAccepted { .. } => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type")
        }
        Refusal::ImageTooBig { .. } | Refusal::BadImage(_) => {
            (StatusCode::UNPROCESSABLE_ENTITY, "bad_image")
        }
    };
    let mut resp = error(status, code, r.to_string());
    if let Refusal::WrongOffset { stored, .. } = r {
        resp.headers_mut()
            .insert(UPLOAD_OFFSET, HeaderValue::from(*stored));
    }
    resp
}

/// A storage failure: a full disk is 507 so the client knows to wait
/// rather than retry at once; nothing past the last stored offset was
/// acknowledged.
fn io_error(e: &io::Error) -> Response {
    tracing::warn!("attachment storage failed: {e}");
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        error(
            StatusCode::INSUFFICIENT_STORAGE,
            "unavailable",
            "the server's disk is full; try again later from the current offset",
        )
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server cannot store that right now; try again from the current offset",
        )
    }
}

/// The caller: a visitor, from its token.
struct Caller {
    visitor: String,
    site: u64,
    ip: std::net::IpAddr,
}

async fn caller(ctx: &Arc<Ctx>, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, Response> {
    let ip = crate::visitor::session::client_ip(ctx, peer, headers);
    if let Err(l) = ctx.visitor_limits.http_request(ip) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            l.message("requests"),
        );
        let secs = l.retry_after.as_secs() + u64::from(l.retry_after.subsec_nanos() > 0);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return Err(r);
    }
    match crate::visitor::long_poll::authenticate(ctx, headers, ip).await {
        Ok((visitor, site)) => Ok(Caller { visitor, site, ip }),
        Err(unauthorized) if unauthorized => Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid or expired visitor token (X-Holdfast-Token)",
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server cannot check that token right now",
        )),
    }
}

#[derive(Deserialize)]
struct CreateReq {
    length: Option<u64>,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    declared_type: String,
}

#[derive(Serialize)]
struct Created {
    id: String,
    url: String,
    offset: u64,
}

async fn create(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match caller(&ctx, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(req) = serde_json::from_slice::<CreateReq>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected {\"length\": N, \"name\": \"…\", \"type\": \"…\"}",
        );
    };
    let (visitor, site) = (who.visitor.clone(), who.site);
    let read = ctx
        .reads
        .run(move |c| {
            Ok((
                reads::site_by_id(c, site)?,
                reads::open_conversation(c, &visitor)?,
            ))
        })
        .await;
    let (site, conv) = match read {
        Ok((Some(site), conv)) => (site, conv),
        Ok((None, _)) => return not_found(),
        Err(e) => {
            tracing::warn!("attachment create cannot read the chat: {e}");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again");
        }
    };
    let rules = ctx.attach.site_policy(&site);
    // The size is checked before the chat, and before any byte is sent.
    let length = match upload::check_create(rules.max_size, req.length) {
        Ok(l) => l,
        Err(r) => return refused(&r),
    };
    let Some(conversation) = conv.map(|c| c.id) else {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "no open chat to attach to; send a message first",
        );
    };
    let id = hex::encode(rand::random::<[u8; 16]>());
    let state = UploadState {
        id: id.clone(),
        site: who.site,
        visitor: who.visitor,
        conversation,
        name: upload::clean_name(&req.name, ctx.attach.policy.max_name),
        declared_type: req.declared_type.chars().take(100).collect(),
        length,
        offset: 0,
        created_ms: now_ms(),
        kinds: rules.kinds,
        rate: rules.rate_bytes_per_sec,
    };
    match ctx.attach.create(state, who.ip).await {
        Ok(true) => {}
        Ok(false) => return refused(&Refusal::TooManyPending),
        Err(e) => return io_error(&e),
    }
    let url = format!("/v1/attach/{id}");
    let mut r = (
        StatusCode::CREATED,
        axum::Json(Created {
            id,
            url: url.clone(),
            offset: 0,
        }),
    )
        .into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&url) {
        h.insert(header::LOCATION, v);
    }
    h.insert(UPLOAD_OFFSET, HeaderValue::from(0u64));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(length));
    no_store(h);
    r
}

/// The caller's upload `id`, or 404 for anyone else's.
async fn own_upload(ctx: &Arc<Ctx>, who: &Caller, id: &str) -> Result<UploadState, Response> {
    match ctx.attach.load(id).await {
        Ok(Some(s)) if s.visitor == who.visitor && s.site == who.site => Ok(s),
        Ok(_) => Err(not_found()),
        Err(e) => Err(io_error(&e)),
    }
}

async fn own_meta(ctx: &Arc<Ctx>, visitor: &str, site: u64, id: &str) -> Result<Meta, Response> {
    match load_meta(ctx, id).await? {
        Some(m) if m.visitor == visitor && m.site == site => Ok(m),
        _ => Err(not_found()),
    }
}

/// A complete attachment whose chat still keeps it (see
/// `Attachments::live_meta`).
async fn load_meta(ctx: &Arc<Ctx>, id: &str) -> Result<Option<Meta>, Response> {
    ctx.attach
        .live_meta(&ctx.reads, id, super::files_cutoff(&ctx.cfg, now_ms()))
        .await
        .map_err(|e| io_error(&e))
}

/// A file of one of the caller's chats: its own upload, or one an agent
/// sent into a chat of this visitor. Everything else is the same 404.
async fn chat_meta(ctx: &Arc<Ctx>, who: &Caller, id: &str) -> Result<Meta, Response> {
    let Some(m) = load_meta(ctx, id).await? else {
        return Err(not_found());
    };
    if m.site != who.site {
        return Err(not_found());
    }
    if m.visitor == who.visitor {
        return Ok(m);
    }
    let conversation = m.conversation;
    match ctx
        .reads
        .run(move |c| reads::conversation(c, conversation))
        .await
    {
        Ok(Some(c)) if c.visitor == who.visitor && c.site == who.site => Ok(m),
        Ok(_) => Err(not_found()),
        Err(e) => Err(io_error(&super::store_io(e))),
    }
}

fn offsets(r: &mut Response, offset: u64, length: u64) {
    let h = r.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(length));
    no_store(h);
}

async fn head(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&ctx, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return not_found();
    }
    let (offset, length) = match own_upload(&ctx, &who, &id).await {
        Ok(s) => (s.offset, s.length),
        Err(not) => match own_meta(&ctx, &who.visitor, who.site, &id).await {
            Ok(m) => (m.size, m.size),
            Err(_) => return not,
        },
    };
    let mut r = StatusCode::OK.into_response();
    offsets(&mut r, offset, length);
    r
}

#[derive(Serialize)]
struct Completed {
    offset: u64,
    attachment: AttachmentView,
}

#[derive(Serialize)]
struct AttachmentView {
    id: String,
    name: String,
    mime: String,
    size: u64,
    image: bool,
}

impl From<&Meta> for AttachmentView {
    fn from(m: &Meta) -> Self {
        Self {
            id: m.id.clone(),
            name: m.name.clone(),
            mime: m.mime.clone(),
            size: m.size,
            image: m.thumb.is_some(),
        }
    }
}

async fn patch(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = match caller(&ctx, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return not_found();
    }
    let Some(sent) = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Upload-Offset is missing or not a number",
        );
    };
    // The request may be dropped mid-body: a body deadline cuts its
    // connection, a pulled cable that the server notices late. The work
    // runs in its own task so that what arrived is still recorded (the
    // client resumes from there) and the upload's claim released.
    let work = tokio::spawn(async move {
        let state = match own_upload(&ctx, &who, &id).await {
            Ok(s) => s,
            Err(r) => return already_complete(&ctx, &who, &id, r).await,
        };
        let stream = body.into_data_stream();
        match write::write(&ctx.attach, state, sent, stream, &who.visitor).await {
            Written::Stored { offset, length } => {
                let mut r = StatusCode::NO_CONTENT.into_response();
                offsets(&mut r, offset, length);
                r
            }
            Written::Finished(meta) => completed(&meta),
            Written::Refused { refusal, at } => {
                let mut r = refused(&refusal);
                if let Some((offset, length)) = at {
                    offsets(&mut r, offset, length);
                }
                r
            }
            Written::Busy => error(
                StatusCode::CONFLICT,
                "conflict",
                "another PATCH of this upload is in progress",
            ),
            Written::Gone => already_complete(&ctx, &who, &id, not_found()).await,
            Written::Failed { error, at } => {
                let mut r = io_error(&error);
                if let Some((offset, length)) = at {
                    offsets(&mut r, offset, length);
                }
                r
            }
        }
    });
    work.await.unwrap_or_else(|e| {
        tracing::error!("an upload chunk's task failed: {e}");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server cannot store that right now; try again from the current offset",
        )
    })
}

/// The answer to a PATCH that completed its upload.
fn completed(meta: &Meta) -> Response {
    let mut r = (
        StatusCode::OK,
        axum::Json(Completed {
            offset: meta.size,
            attachment: AttachmentView::from(meta),
        }),
    )
        .into_response();
    offsets(&mut r, meta.size, meta.size);
    r
}

/// The answer to a PATCH of an upload that is no longer in progress: if
/// it completed (its last PATCH's answer was lost, or another PATCH took
/// it to the end), 409 with its final offset, as for any stale offset, so
/// a retrying client learns it is done; otherwise `not`.
async fn already_complete(ctx: &Arc<Ctx>, who: &Caller, id: &str, not: Response) -> Response {
    match own_meta(ctx, &who.visitor, who.site, id).await {
        Ok(m) => {
            let mut r = refused(&Refusal::Complete);
            offsets(&mut r, m.size, m.size);
            r
        }
        Err(_) => not,
    }
}

#[derive(Serialize)]
struct Link {
    attachment: AttachmentView,
    url: String,
    thumb_url: Option<String>,
    view_url: Option<String>,
    expires_ms: i64,
}

async fn link(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&ctx, peer, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let meta = match chat_meta(&ctx, &who, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    let links = ctx.attach.links(&meta, now_ms());
    let mut r = axum::Json(Link {
        attachment: AttachmentView::from(&meta),
        url: links.url,
        thumb_url: links.thumb_url,
        view_url: links.view_url,
        expires_ms: links.expires_ms,
    })
    .into_response();
    no_store(r.headers_mut());
    r
}

#[derive(Deserialize)]
struct Signed {
    #[serde(default)]
    e: i64,
    #[serde(default)]
    s: String,
}

async fn file(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> Response {
    serve_file(&ctx, &id, LinkKind::File, &q).await
}

async fn thumb(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> Response {
    serve_file(&ctx, &id, LinkKind::Thumb, &q).await
}

async fn view(
    State(ctx): State<Arc<Ctx>>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
) -> Response {
    serve_file(&ctx, &id, LinkKind::View, &q).await
}

async fn serve_file(ctx: &Arc<Ctx>, id: &str, kind: LinkKind, q: &Signed) -> Response {
    if !valid_id(id) || !ctx.attach.verify(id, kind, q.e, &q.s, now_ms()) {
        return not_found();
    }
    let meta = match load_meta(ctx, id).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found(),
        Err(r) => return r,
    };
    // Where the bytes are: content by its SHA-256, or (a view) the
    // original's view, which disk and database each keep their own way.
    enum Source {
        Content(String),
        View(String),
    }
    let (source, mime, disposition) = match kind {
        LinkKind::Thumb => {
            let Some(t) = meta.thumb.clone() else {
                return not_found();
            };
            // Our own PNG encoding of the pixels: safe to show inline.
            (
                Source::Content(t),
                "image/png".to_string(),
                "inline".to_string(),
            )
        }
        LinkKind::View => {
            match ctx.attach.ensure_view(&meta).await {
                Ok(true) => {}
                Ok(false) => return not_found(),
                Err(e) => return io_error(&e),
            }
            // Our own encoding of the pixels again, at a bounded size.
            (
                Source::View(meta.sha256.clone()),
                super::thumb::view_mime(&meta.mime).to_string(),
                "inline".to_string(),
            )
        }
        LinkKind::File => {
            let ascii: String = meta
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_graphic() || c == ' ' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            (
                Source::Content(meta.sha256.clone()),
                meta.mime.clone(),
                format!("attachment; filename=\"{ascii}\""),
            )
        }
    };
    let streamed = match (&ctx.attach.storage, source) {
        (Storage::Disk(disk), Source::Content(sha)) => disk_content(disk.content_path(&sha)).await,
        (Storage::Disk(disk), Source::View(sha)) => disk_content(disk.view_path(&sha)).await,
        (Storage::Postgres(reads), Source::Content(sha)) => pg_content(reads, &sha).await,
        (Storage::Postgres(reads), Source::View(sha)) => {
            pg_content(reads, &pg::view_key(&sha)).await
        }
    };
    let (body, len) = match streamed {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    let put = |h: &mut HeaderMap, k: HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(h, header::CONTENT_TYPE, &mime);
    put(h, header::CONTENT_DISPOSITION, &disposition);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The file at `path`, streamed, and its length.
async fn disk_content(path: std::path::PathBuf) -> Result<(Body, u64), Response> {
    let f = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
        Err(e) => return Err(io_error(&e)),
    };
    let len = match f.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return Err(io_error(&e)),
    };
    // Streamed in 64 KiB reads: a 20 MB download holds 64 KiB of memory.
    let stream = futures_util::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<Bytes, io::Error>(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((Body::from_stream(stream), len))
}

/// Content `sha` from the database, streamed one stored piece per read (a
/// 20 MB download holds one piece of memory), and its length.
async fn pg_content(reads: &crate::store::ReadPool, sha: &str) -> Result<(Body, u64), Response> {
    let sha2 = sha.to_string();
    let len = match reads.run(move |db| pg::content_size(db, &sha2)).await {
        Ok(Some(n)) => n,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(io_error(&super::store_io(e))),
    };
    let reads = reads.clone();
    let sha = sha.to_string();
    let stream = futures_util::stream::unfold(Some(0u64), move |from| {
        let (reads, sha) = (reads.clone(), sha.clone());
        async move {
            let from = from?;
            match reads.run(move |db| pg::content_from(db, &sha, from)).await {
                Ok(Some((at, data))) if !data.is_empty() => {
                    let next = at + data.len() as u64;
                    Some((Ok::<Bytes, io::Error>(Bytes::from(data)), Some(next)))
                }
                Ok(_) => None,
                Err(e) => Some((Err(super::store_io(e)), None)),
            }
        }
    });
    Ok((Body::from_stream(stream), len))
}
