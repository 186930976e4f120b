//! The visitor side of the HTTP port: WebSocket and long-poll (routed from
//! [`crate::http::router`]).
//!
//! Both visitor transports share [`handle_msg`], so a message means the same
//! thing however it arrived.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_protocol::agent::{PageView, Seq};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::liveness::{Liveness, LivenessAction};
use holdfast_protocol::visitor::{
    self, LongPollResponse, PageInfo, VisitorEvent, VisitorIn, VisitorOut,
};
use serde::Deserialize;
use tokio::time::{sleep_until, timeout};

use crate::Ctx;
use crate::hub::VisitorPush;
use crate::pushq::Recv;
use crate::store::reads::{self, SiteRow};
use crate::store::writer::VisitorSendOutcome;
use crate::store::{Op, StoreError, now_ms};
use crate::throttle::SendGate;

/// A visitor, once its hello checked out.
#[derive(Debug)]
struct Visitor {
    id: String,
    site: SiteRow,
    token: String,
    user_agent: Option<String>,
    /// The client's address, for the per-address limits.
    ip: IpAddr,
}

fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn err(code: ErrorCode, message: impl Into<String>) -> VisitorOut {
    VisitorOut::Error {
        code,
        message: message.into(),
        id: None,
        retry_after_ms: None,
    }
}

/// An error answering the action `id`.
fn err_for(id: MsgId, code: ErrorCode, message: impl Into<String>) -> VisitorOut {
    VisitorOut::Error {
        code,
        message: message.into(),
        id: Some(id),
        retry_after_ms: None,
    }
}

/// What a hello asks for, with where it came from.
struct HelloReq {
    site: String,
    token: Option<String>,
    after: Option<Seq>,
    page: Option<PageInfo>,
    user_agent: Option<String>,
    v: Option<u16>,
    /// The page's origin (the `Origin` header), checked against the site's
    /// allowed origins.
    origin: Option<String>,
    /// The identity the page vouches for.
    identity: Option<visitor::IdentityProof>,
    /// The client's address (through trusted proxies).
    ip: IpAddr,
}

impl HelloReq {
    /// The fields of a `hello`; `None` for any other message.
    fn from_msg(
        msg: VisitorIn,
        origin: Option<String>,
        ua: Option<String>,
        ip: IpAddr,
    ) -> Option<Self> {
        match msg {
            VisitorIn::Hello {
                site,
                token,
                after,
                page,
                user_agent,
                v,
                identity,
                ..
            } => Some(Self {
                site,
                token,
                after,
                page,
                user_agent: user_agent.or(ua),
                v,
                origin,
                identity,
                ip,
            }),
            _ => None,
        }
    }
}

struct HelloResult {
    visitor: Visitor,
    resumed: bool,
    after: Seq,
}

/// Validate a hello: site key, origin, token (if any), create or refresh the
/// visitor.
async fn hello(ctx: &Arc<Ctx>, req: HelloReq) -> Result<HelloResult, VisitorOut> {
    let HelloReq {
        site,
        token,
        after,
        page,
        user_agent,
        v,
        origin,
        identity,
        ip,
    } = req;
    let version = v.unwrap_or(1);
    if version != holdfast_protocol::VISITOR_PROTOCOL_VERSION {
        return Err(err(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version mismatch: server speaks {}, widget speaks {version}",
                holdfast_protocol::VISITOR_PROTOCOL_VERSION
            ),
        ));
    }
    let key = site.clone();
    let site = ctx
        .reads
        .run(move |c| reads::site_by_key(c, &key))
        .await
        .map_err(store_err)?
        .ok_or_else(|| err(ErrorCode::NotFound, format!("unknown site key {site:?}")))?;
    if !site.allows_origin(origin.as_deref()) {
        ctx.metrics.rejected_frames.inc();
        return Err(err(
            ErrorCode::Forbidden,
            format!(
                "site {:?} does not allow its chat on {}; add the origin with `holdfast-server site origins`",
                site.key,
                origin.as_deref().unwrap_or("this page")
            ),
        ));
    }
    let expired = || {
        ctx.metrics.rejected_frames.inc();
        err(
            ErrorCode::Unauthorized,
            "invalid or expired visitor token; start a new session without it",
        )
    };
    let known = match token {
        None => None,
        Some(t) => match ctx.tokens.verify(&t, ctx.cfg.visitor.token_lifetime) {
            Some((id, s)) if s == site.id => {
                // An old-format token carries no issue time: it stands for
                // a visitor seen within a token's lifetime, and this
                // welcome replaces it.
                if crate::token::TokenKey::is_legacy(&t) {
                    let vid = id.clone();
                    let seen = ctx
                        .reads
                        .run(move |c| reads::visitor_last_seen(c, &vid))
                        .await
                        .map_err(store_err)?;
                    let lifetime_ms = i64::try_from(ctx.cfg.visitor.token_lifetime.as_millis())
                        .unwrap_or(i64::MAX);
                    if seen.is_none_or(|at| now_ms().saturating_sub(at) > lifetime_ms) {
                        return Err(expired());
                    }
                }
                Some(id)
            }
            _ => return Err(expired()),
        },
    };
    // A token that belongs to a verified identity resumes only with that
    // identity: another signed-in user of the same browser (or a copied
    // token) starts a new visitor instead of reading this one's chat.
    let known = match known {
        Some(id) => {
            let bound = bound_identity(ctx, &id).await?;
            let proven = |want: &str| {
                identity.as_ref().is_some_and(|p| {
                    p.id == want
                        && matches!((&site.secret, &p.hash), (Some(secret), Some(h))
                            if crate::token::verify_identity(secret, &p.id, h))
                })
            };
            match (bound, &site.secret) {
                (Some(external), Some(_)) if !proven(&external) => None,
                // A site that dropped its secret can verify nobody any
                // more; its visitors resume as any unverified one does.
                _ => Some(id),
            }
        }
        None => None,
    };
    if known.is_none()
        && let Err(l) = ctx.visitor_limits.new_visitor(ip)
    {
        ctx.metrics.visitor_limited.inc();
        return Err(VisitorOut::Error {
            code: ErrorCode::RateLimited,
            message: l.message("new visitors"),
            id: None,
            retry_after_ms: Some(ms(l.retry_after)),
        });
    }
    let site_id = site.id;
    let ua = user_agent.clone();
    let page = page.map(page_view);
    let id = ctx
        .writer
        .call(|reply| Op::VisitorHello {
            site: site_id,
            visitor: known.clone(),
            user_agent: ua,
            page,
            reply,
        })
        .await
        .map_err(store_err)?;
    let token = ctx
        .tokens
        .issue(&id, site.id)
        .ok_or_else(|| err(ErrorCode::Internal, "cannot issue a token"))?;
    // A new identity (unknown or fresh token) has no history to resume: it
    // replays its (empty) log from the start. A known one without a cursor
    // has lost its local state (another browser, cleared storage) and gets
    // a snapshot, as the spec says, rather than every event since seq 1.
    let (after, resumable) = if known.as_deref() == Some(id.as_str()) {
        (after.unwrap_or(0), after.is_some())
    } else {
        (0, true)
    };
    let vid = id.clone();
    let (floor, head) = ctx
        .reads
        .run(move |c| reads::visitor_log_bounds(c, &vid))
        .await
        .map_err(store_err)?;
    let visitor = Visitor {
        id,
        site,
        token,
        user_agent,
        ip,
    };
    Ok(HelloResult {
        resumed: resumable && after >= floor && after <= head,
        after,
        visitor,
    })
}

fn store_err(e: StoreError) -> VisitorOut {
    tracing::warn!("visitor request failed in storage: {e}");
    err(
        ErrorCode::Unavailable,
        "the server cannot store that right now; it will be retried",
    )
}

fn page_view(p: PageInfo) -> PageView {
    PageView {
        url: p.url,
        title: p.title,
        referrer: p.referrer.filter(|r| !r.is_empty()),
        at_ms: now_ms(),
    }
}

fn record_page(ctx: &Arc<Ctx>, v: &Visitor, p: PageInfo) {
    let page = page_view(p);
    ctx.hub.visitor_page(&v.id, page.clone(), None);
    if !ctx.writer.try_submit(Op::PageView {
        visitor: v.id.clone(),
        page,
    }) {
        tracing::warn!("page view dropped: writer queue full");
    }
}

/// Stored visitor record with live bits, for registering with the hub.
async fn visitor_info(
    ctx: &Arc<Ctx>,
    v: &Visitor,
) -> Result<holdfast_protocol::agent::VisitorInfo, VisitorOut> {
    let id = v.id.clone();
    let mut info = ctx
        .reads
        .run(move |c| reads::visitor_info(c, &id))
        .await
        .map_err(store_err)?
        .ok_or_else(|| err(ErrorCode::Internal, "visitor vanished"))?;
    info.user_agent = v.user_agent.clone().or(info.user_agent);
    info.online = true;
    Ok(info)
}

/// Handle one post-hello message; returns the reply, if any.
async fn handle_msg(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    msg: VisitorIn,
    sent: Seq,
) -> Option<VisitorOut> {
    match msg {
        VisitorIn::Hello { .. } => Some(err(ErrorCode::BadRequest, "already said hello")),
        VisitorIn::Ping => Some(VisitorOut::Pong),
        VisitorIn::Send { id, body } => Some(send(ctx, v, gate, id, body, None).await),
        VisitorIn::LeaveMessage { id, body, email } => {
            Some(send(ctx, v, gate, id, body, Some(email)).await)
        }
        VisitorIn::EndChat { id } => {
            if let Err(r) = gate.admit(id, Instant::now()) {
                return Some(rate_limited(id, r));
            }
            if let Some(r) = shared_limits(ctx, v, gate, id) {
                return Some(r);
            }
            let visitor = v.id.clone();
            let r = ctx
                .writer
                .call(|reply| Op::VisitorEndChat { visitor, id, reply })
                .await;
            Some(action_reply(ctx, id, r))
        }
        VisitorIn::Page(p) => {
            if let Err(l) = ctx.visitor_limits.page(&v.id, v.ip) {
                return Some(limited(ctx, l, "page views"));
            }
            record_page(ctx, v, p);
            None
        }
        VisitorIn::Identify {
            id,
            name,
            email,
            hash,
            attrs,
        } => {
            if let Err(l) = ctx.visitor_limits.identify(&v.id, v.ip) {
                return Some(limited(ctx, l, "identifies"));
            }
            let verified = match (&v.site.secret, hash) {
                (Some(secret), Some(h)) if crate::token::verify_identity(secret, &id, &h) => true,
                (Some(_), _) => {
                    ctx.metrics.rejected_frames.inc();
                    return Some(err(
                        ErrorCode::BadIdentity,
                        "identify rejected: this site requires hash = HMAC-SHA256(site secret, id) and it did not match",
                    ));
                }
                (None, _) => false,
            };
            let attrs = attrs
                .iter()
                .map(|(k, val)| (k.clone(), visitor::attr_text(val)))
                .collect();
            let visitor = v.id.clone();
            let r = ctx
                .writer
                .call(|reply| Op::Identify {
                    visitor,
                    external_id: id,
                    name,
                    email,
                    attrs,
                    verified,
                    reply,
                })
                .await;
            match r {
                Ok(true) => None,
                // This visitor is bound to another verified identity (the
                // browser now belongs to someone else): the client starts a
                // new visitor, and identifies that one.
                Ok(false) => Some(err(
                    ErrorCode::Unauthorized,
                    "this visitor belongs to another signed-in user; start a new session without the token",
                )),
                Err(e) => Some(store_err(e)),
            }
        }
        VisitorIn::Ack { seq } => {
            if !ctx.writer.try_submit(Op::Delivered {
                visitor: v.id.clone(),
                up_to: seq.min(sent),
            }) {
                tracing::debug!("delivery receipt dropped: writer queue full");
            }
            None
        }
    }
}

async fn send(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    id: MsgId,
    body: String,
    leave: Option<Option<String>>,
) -> VisitorOut {
    if let Err(r) = gate.admit(id, Instant::now()) {
        return rate_limited(id, r);
    }
    if let Some(r) = shared_limits(ctx, v, gate, id) {
        return r;
    }
    // A left message shows agents the page it was left on.
    let page = leave
        .as_ref()
        .and_then(|_| ctx.hub.visitor_live(&v.id))
        .and_then(|info| info.trail.last().cloned());
    let (visitor, site) = (v.id.clone(), v.site.id);
    let r = ctx
        .writer
        .call(|reply| Op::VisitorSend {
            visitor,
            site,
            id,
            body,
            leave,
            page,
            reply,
        })
        .await;
    action_reply(ctx, id, r)
}

/// The visitor's and the address's share, after the connection's own: a
/// refusal (`Some`) holds the action's place in the order like any other.
fn shared_limits(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    gate: &mut SendGate,
    id: MsgId,
) -> Option<VisitorOut> {
    let Err(l) = ctx.visitor_limits.message(&v.id, v.ip) else {
        return None;
    };
    ctx.metrics.visitor_limited.inc();
    gate.hold(id, Instant::now(), l.retry_after);
    Some(VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message: format!(
            "{}; send this again then, before anything after it",
            l.message("messages")
        ),
        id: Some(id),
        retry_after_ms: Some(ms(l.retry_after)),
    })
}

/// A refused page view or identify: nothing to resend by id, but the
/// client learns when the next one will be taken.
fn limited(ctx: &Ctx, l: crate::limits::Limited, what: &str) -> VisitorOut {
    ctx.metrics.visitor_limited.inc();
    VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message: l.message(what),
        id: None,
        retry_after_ms: Some(ms(l.retry_after)),
    }
}

fn rate_limited(id: MsgId, r: crate::throttle::Refused) -> VisitorOut {
    let message = match r.waiting_for {
        Some(first) => {
            format!("sending too fast; {first} was refused first: send it again, then this one")
        }
        None => "sending too fast; send this again shortly, before anything after it".into(),
    };
    VisitorOut::Error {
        code: ErrorCode::RateLimited,
        message,
        id: Some(id),
        retry_after_ms: Some(
            u32::try_from(r.retry_after.as_millis())
                .unwrap_or(u32::MAX)
                .max(1),
        ),
    }
}

/// The answer to a visitor action: its ack once durable, or why not.
fn action_reply(
    ctx: &Arc<Ctx>,
    id: MsgId,
    r: Result<VisitorSendOutcome, StoreError>,
) -> VisitorOut {
    match r {
        Ok(VisitorSendOutcome::Done {
            conversation,
            message,
            at_ms,
        }) => {
            ctx.metrics.messages_in.inc();
            VisitorOut::Ack {
                id,
                conversation,
                message,
                at_ms,
            }
        }
        Ok(VisitorSendOutcome::Rejected { code, message }) => err_for(id, code, message),
        Err(e) => match store_err(e) {
            VisitorOut::Error { code, message, .. } => err_for(id, code, message),
            other => other,
        },
    }
}

/// The client's address: the peer's, or, when the peer is a trusted
/// reverse proxy, the nearest address in `X-Forwarded-For` that is not one
/// of them (what a client puts further left it could have made up). A hop
/// that is not an address ends the walk at the last trusted one: what lies
/// left of it cannot be told apart from what a client wrote.
fn client_ip(ctx: &Ctx, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = &ctx.cfg.visitor.trusted_proxies;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer.ip()) {
        return peer.ip();
    }
    let mut hops: Vec<&str> = Vec::new();
    for h in headers.get_all("x-forwarded-for") {
        // A header that is not text is unreadable as a whole: the chain
        // ends at the proxy.
        let Ok(h) = h.to_str() else {
            return peer.ip();
        };
        hops.extend(h.split(','));
    }
    let mut nearest = peer.ip();
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop_address(hop.trim()) else {
            return nearest;
        };
        if !is_trusted(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// An `X-Forwarded-For` entry: an address, or one with a port
/// (`203.0.113.9:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn hop_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The page's origin. An opaque origin (`null`: sandboxed iframes, data:
/// URLs) is kept as "null", which no allow-list contains, so a site with a
/// list cannot be embedded from anywhere through a sandbox.
fn client_origin(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ORIGIN)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(256).collect())
}

fn client_ua(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.chars().take(512).collect())
}

// ------------------------------------------------------------------ WebSocket

pub(crate) async fn ws_upgrade(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = client_ip(&ctx, peer, &headers);
    let Some(slot) = ctx.visitor_ip_limiter.acquire(ip) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address\n",
        )
            .into_response();
    };
    let vc = &ctx.cfg.visitor;
    let max = vc.limits.max_text;
    let opening = Box::new(Opening {
        ua: client_ua(&headers),
        origin: client_origin(&headers),
        ip,
    });
    ws.read_buffer_size(vc.ws_read_buffer)
        .write_buffer_size(vc.ws_write_buffer)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        // No async block around the session: a block's captures stay in its
        // future for its whole life, which kept a second copy of the socket
        // (and of ua, slot and ctx) in every idle visitor's task.
        .on_upgrade(move |socket| ws_session(Box::new(socket), ctx, opening, slot))
}

/// What the upgrade request said that the hello needs; boxed, since the
/// session future keeps its arguments for its whole life.
#[derive(Debug)]
struct Opening {
    ua: Option<String>,
    origin: Option<String>,
    ip: IpAddr,
}

async fn ws_send(socket: &mut WebSocket, out: &VisitorOut) -> bool {
    match serde_json::to_string(out) {
        Ok(text) => socket.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

/// One visitor WebSocket, from hello to close.
///
/// An idle visitor's memory is mostly this future, so it is kept small (see
/// BENCHMARKS.md, section 6): the opening is boxed and ends before the loop,
/// because a future is as big as its biggest await point; the socket and
/// the visitor live in boxes, because an async fn keeps each argument twice
/// (as captured and as moved into the body) for its whole life.
async fn ws_session(
    mut socket: Box<WebSocket>,
    ctx: Arc<Ctx>,
    opening: Box<Opening>,
    _slot: crate::throttle::ConnSlot,
) {
    let Some((v, resumed, after, reg)) = Box::pin(ws_open(&mut socket, &ctx, opening)).await else {
        return;
    };
    let conn_id = reg.id;
    let end = match Box::pin(ws_greet(&mut socket, &ctx, &v, resumed, after)).await {
        Ok(sent) => ws_loop(&mut socket, &ctx, &v, sent, reg).await,
        Err(end) => end,
    };
    ctx.hub.unregister_visitor(&v.id, conn_id);
    if end == "dead" {
        ctx.metrics.dead_peer_cuts.inc();
    }
    tracing::debug!(visitor = %v.id, "visitor websocket ended: {end}");
}

/// Read the hello and register the visitor; None when the session is over.
async fn ws_open(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    opening: Box<Opening>,
) -> Option<(
    Box<Visitor>,
    bool,
    Seq,
    crate::hub::Registration<crate::hub::VisitorPush>,
)> {
    let first = timeout(ctx.cfg.visitor.hello_timeout, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => {
            ws_send(
                socket,
                &err(
                    ErrorCode::BadRequest,
                    "the first message must be a JSON hello",
                ),
            )
            .await;
            return None;
        }
        _ => return None,
    };
    let lim = &ctx.cfg.visitor.limits;
    let Opening { ua, origin, ip } = *opening;
    let req = match visitor::parse_in(text.as_bytes(), lim) {
        Ok(m) => match HelloReq::from_msg(m, origin, ua, ip) {
            Some(r) => r,
            None => {
                ws_send(
                    socket,
                    &err(ErrorCode::BadRequest, "the first message must be a hello"),
                )
                .await;
                return None;
            }
        },
        Err(e) => {
            ctx.metrics.rejected_frames.inc();
            ws_send(socket, &err(e.code(), e.to_string())).await;
            return None;
        }
    };
    let h = match hello(ctx, req).await {
        Ok(h) => h,
        Err(e) => {
            ws_send(socket, &e).await;
            return None;
        }
    };
    let info = match visitor_info(ctx, &h.visitor).await {
        Ok(i) => i,
        Err(e) => {
            ws_send(socket, &e).await;
            return None;
        }
    };
    let reg = ctx.hub.register_visitor(info);
    let mut v = Box::new(h.visitor);
    // Registering was its only use; the hub entry keeps the user agent, and
    // an idle session should not hold a second copy.
    v.user_agent = None;
    Some((v, h.resumed, h.after, reg))
}

/// Replay or snapshot; returns the last seq sent.
async fn catch_up_ws(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    after: Seq,
    until: Seq,
) -> Result<Seq, ()> {
    let mut sent = after;
    loop {
        let id = v.id.clone();
        let from = sent;
        let page = ctx
            .reads
            .run(move |c| reads::visitor_events_after(c, &id, from, 256))
            .await
            .map_err(|_| ())?;
        let n = page.len();
        for (seq, event) in page {
            if seq > until {
                return Ok(sent);
            }
            if !ws_send(socket, &VisitorOut::Event { seq, event }).await {
                return Err(());
            }
            sent = seq;
        }
        if n < 256 {
            return Ok(sent);
        }
    }
}

async fn snapshot(ctx: &Arc<Ctx>, v: &Visitor) -> Result<VisitorOut, VisitorOut> {
    let id = v.id.clone();
    ctx.reads
        .run(move |c| {
            c.execute_batch("BEGIN")?;
            let r = (|| {
                let head = reads::log_head(c, &reads::visitor_key(&id))?;
                let (conversation, messages) = reads::visitor_snapshot(c, &id)?;
                Ok(VisitorOut::Snapshot {
                    seq: head,
                    recovered: false,
                    conversation,
                    messages,
                })
            })();
            let _ignored = c.execute_batch("COMMIT");
            r
        })
        .await
        .map_err(store_err)
}

/// Welcome, then the snapshot or the replay after `after`: the seq sent.
/// Boxed by its caller and over before the loop starts, so none of this
/// stays in an idle visitor's future.
async fn ws_greet(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    resumed: bool,
    after: Seq,
) -> Result<Seq, &'static str> {
    let welcome = VisitorOut::Welcome {
        visitor: v.id.clone(),
        token: v.token.clone(),
        resumed,
        agents_online: ctx.hub.agents_online(v.site.id),
        heartbeat_ms: u32::try_from(ctx.cfg.visitor.liveness.heartbeat.as_millis()).unwrap_or(3000),
    };
    if !ws_send(socket, &welcome).await {
        return Err("send failed");
    }
    let sent = if resumed {
        match catch_up_ws(socket, ctx, v, after, Seq::MAX).await {
            Ok(s) => s,
            Err(()) => return Err("replay failed"),
        }
    } else {
        match snapshot(ctx, v).await {
            Ok(snap) => {
                let seq = match &snap {
                    VisitorOut::Snapshot { seq, .. } => *seq,
                    _ => 0,
                };
                if !ws_send(socket, &snap).await {
                    return Err("send failed");
                }
                seq
            }
            Err(e) => {
                ws_send(socket, &e).await;
                return Err("snapshot failed");
            }
        }
    };
    Ok(sent)
}

/// Pushes out, messages in, until the visitor goes; `sent` is the last seq
/// the greeting sent.
async fn ws_loop(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    mut sent: Seq,
    mut reg: crate::hub::Registration<VisitorPush>,
) -> &'static str {
    let vc = &ctx.cfg.visitor;
    let mut gate = SendGate::new(vc.msg_rate, vc.msg_burst, Instant::now());
    let now = || tokio::time::Instant::now().into_std();
    let mut live = Liveness::new(vc.liveness, now());
    loop {
        let deadline = tokio::time::Instant::from_std(live.poll_timeout());
        tokio::select! {
            biased;
            // Shutdown kicks every queue too (Hub::kick_all), so this one
            // branch covers both: a select arm is paid for in every idle
            // visitor's future.
            push = reg.rx.recv() => {
                match push {
                    Recv::Kicked => {
                        let (reason, end) = if ctx.shutdown.is_cancelled() {
                            ("server going away", "shutdown")
                        } else {
                            ("too slow; reconnect and resume", "kicked")
                        };
                        ws_send(socket, &VisitorOut::GoingAway { reason: reason.into() }).await;
                        return end;
                    }
                    Recv::Closed => return "hub dropped",
                    Recv::Item(VisitorPush::Agents(online)) => {
                        if !ws_send(socket, &VisitorOut::Agents { online }).await { return "send failed"; }
                    }
                    Recv::Item(VisitorPush::Event(seq, event)) => {
                        if seq <= sent { continue; }
                        if seq > sent + 1 {
                            match Box::pin(catch_up_ws(socket, ctx, v, sent, seq - 1)).await {
                                Ok(s) => sent = s,
                                Err(()) => return "replay failed",
                            }
                        }
                        if seq == sent + 1 {
                            let ev: VisitorEvent = (*event).clone();
                            if !ws_send(socket, &VisitorOut::Event { seq, event: ev }).await { return "send failed"; }
                            ctx.metrics.messages_out.inc();
                            sent = seq;
                        }
                    }
                }
            }
            msg = socket.recv() => {
                let text = match msg {
                    None | Some(Err(_)) => return "closed",
                    Some(Ok(Message::Close(_))) => return "closed",
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => { live.on_recv(now()); continue; }
                    Some(Ok(Message::Binary(_))) => {
                        ws_send(socket, &err(ErrorCode::BadRequest, "binary frames are not part of the protocol")).await;
                        continue;
                    }
                };
                live.on_recv(now());
                let reply = match visitor::parse_in(text.as_bytes(), &vc.limits) {
                    Ok(m) => Box::pin(handle_msg(ctx, v, &mut gate, m, sent)).await,
                    Err(e) => {
                        ctx.metrics.rejected_frames.inc();
                        Some(match visitor::action_id(text.as_bytes(), &vc.limits) {
                            Some(id) => err_for(id, e.code(), e.to_string()),
                            None => err(e.code(), e.to_string()),
                        })
                    }
                };
                if let Some(r) = reply
                    && !ws_send(socket, &r).await
                {
                    return "send failed";
                }
            }
            () = sleep_until(deadline) => {
                // The browser pings us; we only need to notice silence.
                if live.poll(now()) == LivenessAction::Dead {
                    return "dead";
                }
                live.on_send(now());
            }
        }
    }
}

// ------------------------------------------------------------------ long-poll

/// The visitor token of a long-poll request: the `X-Holdfast-Token`
/// header, where proxies do not log it; the body's or the query's from
/// widgets older than the header (deprecated).
fn lp_token(headers: &HeaderMap, fallback: Option<String>) -> Option<String> {
    headers
        .get(TOKEN_HEADER)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or(fallback)
}

pub(crate) const TOKEN_HEADER: &str = "x-holdfast-token";
/// The verified identity's hash, on long-poll requests of a visitor bound
/// to one (see [`resolve_token`]).
pub(crate) const IDENTITY_HEADER: &str = "x-holdfast-identity";

fn lp_response(status: StatusCode, msgs: Vec<VisitorOut>) -> Response {
    (status, axum::Json(LongPollResponse { msgs })).into_response()
}

/// 429 with the wait both as `Retry-After` (whole seconds, for proxies and
/// generic clients) and as `retry_after_ms` (for the widget).
fn too_many_requests(ctx: &Ctx, l: crate::limits::Limited) -> Response {
    ctx.metrics.visitor_limited.inc();
    let mut r = lp_response(
        StatusCode::TOO_MANY_REQUESTS,
        vec![VisitorOut::Error {
            code: ErrorCode::RateLimited,
            message: l.message("requests"),
            id: None,
            retry_after_ms: Some(ms(l.retry_after)),
        }],
    );
    let secs = l.retry_after.as_secs() + u64::from(l.retry_after.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// A refusal's HTTP status: the client's fault (401) only when it is;
/// the server's trouble (a full disk, a busy database) is 503, so the
/// widget keeps its token and tries again.
fn refusal_status(e: &VisitorOut) -> StatusCode {
    match e {
        VisitorOut::Error {
            code: ErrorCode::Unauthorized,
            ..
        } => StatusCode::UNAUTHORIZED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub(crate) async fn long_poll_send(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ip = client_ip(&ctx, peer, &headers);
    if let Err(l) = ctx.visitor_limits.http_request(ip) {
        return too_many_requests(&ctx, l);
    }
    let req = match visitor::parse_long_poll(&body, &ctx.cfg.visitor.limits) {
        Ok(r) => r,
        Err(e) => {
            ctx.metrics.rejected_frames.inc();
            let status = if e.code() == ErrorCode::TooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return lp_response(status, vec![err(e.code(), e.to_string())]);
        }
    };
    let ua = client_ua(&headers);
    // A batch that opens with a hello is a new session; its own token and
    // identity are what count, not the header's.
    let opens_with_hello = matches!(req.msgs.first(), Some(VisitorIn::Hello { .. }));
    let token = lp_token(&headers, req.token).filter(|_| !opens_with_hello);
    let mut current: Option<Visitor> = match token {
        None => None,
        Some(t) => match resolve_token(&ctx, &headers, &t, ua.clone(), ip).await {
            Ok(v) => Some(v),
            Err(e) => return lp_response(refusal_status(&e), vec![e]),
        },
    };
    let vc = &ctx.cfg.visitor;
    let origin = client_origin(&headers);
    let mut out = Vec::new();
    let mut hellos = 0;
    for msg in req.msgs {
        if let Some(req) = HelloReq::from_msg(msg.clone(), origin.clone(), ua.clone(), ip) {
            // Each hello is a database write; one a request is all a
            // widget ever sends.
            hellos += 1;
            if hellos > 1 {
                ctx.metrics.rejected_frames.inc();
                out.push(err(ErrorCode::BadRequest, "one hello per request"));
                continue;
            }
            match hello(&ctx, req).await {
                Ok(h) => {
                    out.push(VisitorOut::Welcome {
                        visitor: h.visitor.id.clone(),
                        token: h.visitor.token.clone(),
                        resumed: h.resumed,
                        agents_online: ctx.hub.agents_online(h.visitor.site.id),
                        heartbeat_ms: u32::try_from(vc.liveness.heartbeat.as_millis())
                            .unwrap_or(3000),
                    });
                    current = Some(h.visitor);
                }
                Err(e) => out.push(e),
            }
            continue;
        }
        let Some(v) = current.as_ref() else {
            out.push(err(
                ErrorCode::Unauthorized,
                "send a hello or a token first",
            ));
            continue;
        };
        // Held across the writer's answer: two POSTs of one visitor at once
        // take turns, so neither the count nor the order can be raced.
        let gate = lp_gate(&ctx, &v.id);
        let mut gate = gate.lock().await;
        let head = Seq::MAX;
        if let Some(r) = handle_msg(&ctx, v, &mut gate, msg, head).await {
            out.push(r);
        }
    }
    lp_response(StatusCode::OK, out)
}

/// Long-poll visitors have no connection to hang a rate limiter on, so their
/// gates are kept by visitor id between requests.
fn lp_gate(ctx: &Arc<Ctx>, visitor: &str) -> Arc<tokio::sync::Mutex<SendGate>> {
    let vc = &ctx.cfg.visitor;
    let mut map = ctx.lp_buckets.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > 50_000 {
        map.retain(|_, g| Arc::strong_count(g) > 1);
    }
    map.entry(visitor.to_owned())
        .or_insert_with(|| {
            Arc::new(tokio::sync::Mutex::new(SendGate::new(
                vc.msg_rate,
                vc.msg_burst,
                Instant::now(),
            )))
        })
        .clone()
}

/// The verified identity `visitor` is bound to, if any.
async fn bound_identity(ctx: &Ctx, visitor: &str) -> Result<Option<String>, VisitorOut> {
    let vid = visitor.to_owned();
    ctx.reads
        .run(move |c| reads::verified_identity(c, &vid))
        .await
        .map_err(store_err)
}

/// The visitor of a long-poll request's token. A token of a visitor bound
/// to a verified identity is not enough on its own (it may have been copied
/// to another user's browser): the request must carry that identity's hash
/// in `X-Holdfast-Identity`, as a `hello` carries it in `identity`.
async fn resolve_token(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    token: &str,
    ua: Option<String>,
    ip: IpAddr,
) -> Result<Visitor, VisitorOut> {
    let unauthorized = |why: &str| {
        ctx.metrics.rejected_frames.inc();
        err(ErrorCode::Unauthorized, why)
    };
    // Old-format tokens only in a hello, which replaces them.
    let verified = if crate::token::TokenKey::is_legacy(token) {
        None
    } else {
        ctx.tokens.verify(token, ctx.cfg.visitor.token_lifetime)
    };
    let Some((id, site_id)) = verified else {
        return Err(unauthorized(
            "invalid or expired visitor token; start a new session with a hello",
        ));
    };
    let site = ctx
        .reads
        .run(move |c| reads::site_by_id(c, site_id))
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            err(
                ErrorCode::Unauthorized,
                "the site of this token no longer exists",
            )
        })?;
    if let Some(secret) = site.secret.clone()
        && let Some(external) = bound_identity(ctx, &id).await?
    {
        let proof = headers.get(IDENTITY_HEADER).and_then(|h| h.to_str().ok());
        if !proof.is_some_and(|h| crate::token::verify_identity(&secret, &external, h)) {
            return Err(unauthorized(
                "this visitor belongs to a signed-in user: send the identity's hash in X-Holdfast-Identity, or start a new session with a hello",
            ));
        }
    }
    Ok(Visitor {
        id,
        site,
        token: token.to_string(),
        user_agent: ua,
        ip,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct PollParams {
    /// Deprecated: widgets send the `X-Holdfast-Token` header.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    after: Seq,
}

pub(crate) async fn long_poll_recv(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<PollParams>,
) -> Response {
    let ip = client_ip(&ctx, peer, &headers);
    if let Err(l) = ctx.visitor_limits.http_request(ip) {
        return too_many_requests(&ctx, l);
    }
    let Some(token) = lp_token(&headers, q.token) else {
        return lp_response(
            StatusCode::UNAUTHORIZED,
            vec![err(
                ErrorCode::Unauthorized,
                "no visitor token (X-Holdfast-Token)",
            )],
        );
    };
    let v = match resolve_token(&ctx, &headers, &token, client_ua(&headers), ip).await {
        Ok(v) => v,
        Err(e) => return lp_response(refusal_status(&e), vec![e]),
    };
    let info = match visitor_info(&ctx, &v).await {
        Ok(i) => i,
        Err(e) => return lp_response(StatusCode::SERVICE_UNAVAILABLE, vec![e]),
    };
    let notify = ctx.hub.poll_begin(info);
    let out = poll_events(&ctx, &v, q.after, &notify).await;
    ctx.hub.poll_end(&v.id);
    match out {
        Ok(msgs) => lp_response(StatusCode::OK, msgs),
        Err(e) => lp_response(StatusCode::SERVICE_UNAVAILABLE, vec![e]),
    }
}

async fn poll_events(
    ctx: &Arc<Ctx>,
    v: &Visitor,
    after: Seq,
    notify: &tokio::sync::Notify,
) -> Result<Vec<VisitorOut>, VisitorOut> {
    let id = v.id.clone();
    let (floor, head) = ctx
        .reads
        .run(move |c| reads::visitor_log_bounds(c, &id))
        .await
        .map_err(store_err)?;
    if after < floor || after > head {
        return Ok(vec![snapshot(ctx, v).await?]);
    }
    // `after` doubles as the cumulative ack of everything before it.
    if after > 0 {
        let _queued = ctx.writer.try_submit(Op::Delivered {
            visitor: v.id.clone(),
            up_to: after,
        });
    }
    let deadline = tokio::time::Instant::now() + ctx.cfg.visitor.poll_timeout;
    loop {
        // Arm the notification before reading, so an event committed between
        // the read and the wait still wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let id = v.id.clone();
        let events = ctx
            .reads
            .run(move |c| reads::visitor_events_after(c, &id, after, 256))
            .await
            .map_err(store_err)?;
        if !events.is_empty() {
            ctx.metrics.messages_out.add(events.len() as u64);
            return Ok(events
                .into_iter()
                .map(|(seq, event)| VisitorOut::Event { seq, event })
                .collect());
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return Ok(vec![VisitorOut::Pong]),
            () = ctx.shutdown.cancelled() => {
                return Ok(vec![VisitorOut::GoingAway { reason: "server going away".into() }]);
            }
        }
    }
}
