//! The long-poll fallback, for networks that let no WebSocket through:
//! `POST /v1/visitor/lp` carries a batch of messages (a hello among them,
//! or a token), `GET /v1/visitor/poll` waits up to `poll_timeout` for the
//! events after a seq.
//!
//! No connection outlives a request, so every request finds its visitor
//! again from the token (and, for a visitor bound to a verified identity,
//! the identity's hash), and the send gate is kept by visitor id between
//! requests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_protocol::agent::Seq;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{self, LongPollResponse, VisitorIn, VisitorOut};
use serde::Deserialize;

use super::session::{
    HelloReq, Visitor, bound_identity, client_accept_language, client_ip, client_origin, client_ua,
    err, handle_msg, hello, ms, snapshot, store_err, visitor_info, welcome,
};
use crate::Ctx;
use crate::store::Op;
use crate::store::reads;
use crate::throttle::SendGate;

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
    let origin = client_origin(&headers);
    let accept_language = client_accept_language(&headers);
    let mut out = Vec::new();
    let mut hellos = 0;
    for msg in req.msgs {
        if let Some(req) = HelloReq::from_msg(
            msg.clone(),
            origin.clone(),
            ua.clone(),
            accept_language.as_deref(),
            ip,
        ) {
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
                    out.push(welcome(&ctx, &h.visitor, &h.greeting, h.resumed));
                    ctx.hub.poll_queue_again(&h.visitor.id);
                    // So that what its polls hear of agents is about its
                    // group, as a WebSocket's is.
                    ctx.hub
                        .set_visitor_group(&h.visitor.id, h.visitor.group.clone());
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
        site: site.id,
        secret: site.secret.map(String::into_boxed_str),
        user_agent: ua,
        ip,
        // Only a hello names the group: the hub keeps it from there (see
        // `Hub::set_visitor_group`), and the store has the chat's.
        group: None,
    })
}

/// The visitor and site of an HTTP request's `X-Holdfast-Token`, for the
/// attachment endpoints: the same checks as a long-poll request. `Err(true)`
/// is a bad token, `Err(false)` the server's trouble.
pub(crate) async fn authenticate(
    ctx: &Arc<Ctx>,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<(String, u64), bool> {
    let Some(token) = lp_token(headers, None) else {
        return Err(true);
    };
    match resolve_token(ctx, headers, &token, client_ua(headers), ip).await {
        Ok(v) => Ok((v.id, v.site)),
        Err(e) => Err(refusal_status(&e) == StatusCode::UNAUTHORIZED),
    }
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
        // The queue signal rides beside the events, after them: it never
        // holds an event back or takes its place.
        let place = ctx.hub.poll_queue(&v.id).map(|p| VisitorOut::Queue {
            position: p.position,
            wait_ms: p.wait_ms,
        });
        // So does the agent's typing (10.18).
        let typing = ctx.hub.poll_typing(&v.id).map(|name| VisitorOut::Typing {
            typing: name.is_some(),
            name: name.map(|n| n.to_string()),
        });
        // And an invitation (10.20).
        let invite = ctx.hub.poll_invite(&v.id).map(|i| VisitorOut::Invite {
            id: i.id,
            text: i.text.to_string(),
        });
        // And who would answer, as it changed since the welcome (10.23).
        let agents = ctx.hub.poll_agents(&v.id).map(super::session::agents_out);
        if !events.is_empty()
            || place.is_some()
            || typing.is_some()
            || invite.is_some()
            || agents.is_some()
        {
            ctx.metrics.messages_out.inc_by(events.len() as u64);
            return Ok(events
                .into_iter()
                .map(|(seq, event)| VisitorOut::Event { seq, event })
                .chain(place)
                .chain(typing)
                .chain(invite)
                .chain(agents)
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
