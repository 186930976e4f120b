//! The visitor WebSocket: upgrade, hello, greeting (welcome, then a
//! snapshot or the replay after the client's cursor), then one loop of
//! pushes out and messages in until the visitor goes.
//!
//! An idle visitor's memory is mostly this module's session future, which
//! is why the opening and greeting are boxed and over before the loop
//! starts (BENCHMARKS.md, section 6).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_protocol::agent::Seq;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::liveness::{Liveness, LivenessAction};
use holdfast_protocol::visitor::{self, VisitorEvent, VisitorIn, VisitorOut};
use tokio::time::{sleep_until, timeout};

use super::session::{
    Greeting, HelloReq, Receipts, Visitor, client_accept_language, client_ip, client_origin,
    client_ua, err, err_for, handle_msg, hello, snapshot, visitor_info, welcome,
};
use crate::Ctx;
use crate::hub::VisitorPush;
use crate::pushq::Recv;
use crate::store::{StoreError, reads};
use crate::throttle::SendGate;

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
        accept_language: client_accept_language(&headers),
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
    /// The upgrade request's `Accept-Language`: the visitor's language
    /// when the hello names none (10.24).
    accept_language: Option<String>,
    ip: IpAddr,
}

/// `out`, serialized and sent; false when the socket would not take it.
/// Sends run inside the opening, the greeting and a wake's handling, each
/// boxed and over before the loop waits again, so none is part of an idle
/// visitor's future.
async fn ws_send(socket: &mut WebSocket, out: VisitorOut) -> bool {
    let Ok(text) = serde_json::to_string(&out) else {
        return false;
    };
    drop(out);
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// One visitor WebSocket, from hello to close.
///
/// An idle visitor's memory is mostly this future, so it is kept small (see
/// BENCHMARKS.md, section 6): the opening is boxed and ends before the loop,
/// because a future is as big as its biggest await point; the socket and
/// the visitor live in boxes. It is an `async move` block, not an async fn:
/// an async fn keeps each argument twice (as captured and as moved into the
/// body) for its whole life, and a block uses its captures in place.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the idle future"
)]
fn ws_session(
    mut socket: Box<WebSocket>,
    ctx: Arc<Ctx>,
    opening: Box<Opening>,
    slot: crate::throttle::ConnSlot,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Some((v, greeting, resumed, after, reg)) =
            Box::pin(ws_open(&mut socket, &ctx, opening)).await
        else {
            return;
        };
        let conn_id = reg.id;
        let end = match Box::pin(ws_greet(&mut socket, &ctx, &v, greeting, resumed, after)).await {
            Ok(sent) => {
                let mut st = LoopState::new(&ctx, sent, reg);
                ws_loop(&mut socket, &ctx, &v, &mut st).await
            }
            Err(end) => end,
        };
        ctx.hub.unregister_visitor(&v.id, conn_id);
        if end == VisitorEnd::Dead {
            ctx.metrics.dead_peer_cuts.inc();
        }
        tracing::debug!(visitor = %v.id, "visitor websocket ended: {}", end.as_str());
        // Held until here: the address's count of open sockets.
        drop(slot);
    }
}

/// Why a visitor's WebSocket session ended. Only the WebSocket has a session
/// to end; a long-poll visitor is simply gone when its requests stop.
/// Matching on this instead of on words means a reworded log line cannot
/// quietly stop the dead-peer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VisitorEnd {
    /// The browser closed the socket, or the socket broke.
    Closed,
    /// The browser's pings stopped: the one end counted as a dead peer cut.
    Dead,
    SendFailed,
    /// Catching up on missed events failed, reading or sending.
    ReplayFailed,
    SnapshotFailed,
    /// The hub cut this visitor as a slow consumer; it may reconnect and
    /// resume.
    Kicked,
    Shutdown,
    HubDropped,
}

impl VisitorEnd {
    /// The words the log line has always used, so searches over old and new
    /// logs find the same thing.
    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Dead => "dead",
            Self::SendFailed => "send failed",
            Self::ReplayFailed => "replay failed",
            Self::SnapshotFailed => "snapshot failed",
            Self::Kicked => "kicked",
            Self::Shutdown => "shutdown",
            Self::HubDropped => "hub dropped",
        }
    }
}

/// Why a replay stopped short. The session ends the same way for both, but a
/// failed read is not a closed socket, and `()` could not say which.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error("reading the visitor's log: {0}")]
    Read(#[from] StoreError),
    #[error("the socket would not take an event")]
    Send,
}

/// Read the hello and register the visitor; None when the session is over.
async fn ws_open(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    opening: Box<Opening>,
) -> Option<(
    Box<Visitor>,
    Greeting,
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
                err(
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
    let Opening {
        ua,
        origin,
        accept_language,
        ip,
    } = *opening;
    let req = match visitor::parse_in(text.as_bytes(), lim) {
        Ok(m) => match HelloReq::from_msg(m, origin, ua, accept_language.as_deref(), ip) {
            Some(r) => r,
            None => {
                ws_send(
                    socket,
                    err(ErrorCode::BadRequest, "the first message must be a hello"),
                )
                .await;
                return None;
            }
        },
        Err(e) => {
            ctx.metrics.rejected_frames.inc();
            ws_send(socket, err(e.code(), e.to_string())).await;
            return None;
        }
    };
    let h = match hello(ctx, req).await {
        Ok(h) => h,
        Err(e) => {
            ws_send(socket, e).await;
            return None;
        }
    };
    let info = match visitor_info(ctx, &h.visitor).await {
        Ok(i) => i,
        Err(e) => {
            ws_send(socket, e).await;
            return None;
        }
    };
    let reg = ctx.hub.register_visitor(info);
    ctx.hub
        .set_visitor_group(&h.visitor.id, h.visitor.group.clone());
    let mut v = Box::new(h.visitor);
    // Registering was its only use; the hub entry keeps the user agent, and
    // an idle session should not hold a second copy.
    v.user_agent = None;
    Some((v, h.greeting, h.resumed, h.after, reg))
}

/// Replay or snapshot; returns the last seq sent.
async fn catch_up_ws(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    after: Seq,
    until: Seq,
) -> Result<Seq, ReplayError> {
    let mut sent = after;
    loop {
        let id = v.id.clone();
        let from = sent;
        let page = ctx
            .reads
            .run(move |c| reads::visitor_events_after(c, &id, from, 256))
            .await?;
        let n = page.len();
        for (seq, event) in page {
            if seq > until {
                return Ok(sent);
            }
            if !ws_send(socket, VisitorOut::Event { seq, event }).await {
                return Err(ReplayError::Send);
            }
            sent = seq;
        }
        if n < 256 {
            return Ok(sent);
        }
    }
}

/// Welcome, then the snapshot or the replay after `after`: the seq sent.
/// Boxed by its caller and over before the loop starts, so none of this
/// stays in an idle visitor's future.
async fn ws_greet(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    greeting: Greeting,
    resumed: bool,
    after: Seq,
) -> Result<Seq, VisitorEnd> {
    if !ws_send(socket, welcome(ctx, v, &greeting, resumed)).await {
        return Err(VisitorEnd::SendFailed);
    }
    let sent = if resumed {
        match catch_up_ws(socket, ctx, v, after, Seq::MAX).await {
            Ok(s) => s,
            Err(_) => return Err(VisitorEnd::ReplayFailed),
        }
    } else {
        match snapshot(ctx, v).await {
            Ok(snap) => {
                let seq = match &snap {
                    VisitorOut::Snapshot { seq, .. } => *seq,
                    _ => 0,
                };
                if !ws_send(socket, snap).await {
                    return Err(VisitorEnd::SendFailed);
                }
                seq
            }
            Err(e) => {
                ws_send(socket, e).await;
                return Err(VisitorEnd::SnapshotFailed);
            }
        }
    };
    Ok(sent)
}

/// What woke an idle visitor's loop.
enum Wake {
    Push(Recv<VisitorPush>),
    Msg(Option<Result<Message, axum::Error>>),
    Tick,
}

/// A visitor's session state between wakes. The loop borrows it from the
/// session: an async fn's arguments are kept twice in its future.
struct LoopState {
    /// The last seq sent.
    sent: Seq,
    gate: SendGate,
    live: Liveness,
    receipts: Receipts,
    reg: crate::hub::Registration<VisitorPush>,
}

impl LoopState {
    fn new(ctx: &Ctx, sent: Seq, reg: crate::hub::Registration<VisitorPush>) -> Self {
        let vc = &ctx.cfg.visitor;
        Self {
            sent,
            gate: SendGate::new(vc.msg_rate, vc.msg_burst, Instant::now()),
            live: Liveness::new(vc.liveness, now()),
            receipts: Receipts::new(sent),
            reg,
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Pushes out, messages in, until the visitor goes; `sent` is the last seq
/// the greeting sent.
///
/// The loop awaits only its `select!`: everything a wake does runs in
/// [`on_wake`], boxed for that wake alone. A future is as big as its
/// biggest await point plus every local kept across one, and the handling
/// inline made this future 920 bytes, in every idle visitor's task.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep every argument twice in the idle future"
)]
fn ws_loop<'a>(
    socket: &'a mut WebSocket,
    ctx: &'a Arc<Ctx>,
    v: &'a Visitor,
    st: &'a mut LoopState,
) -> impl std::future::Future<Output = VisitorEnd> + Send + 'a {
    async move {
        loop {
            let deadline = tokio::time::Instant::from_std(st.live.poll_timeout());
            let wake = tokio::select! {
                biased;
                // Shutdown kicks every queue too (Hub::kick_all), so this one
                // branch covers both: a select arm is paid for in every idle
                // visitor's future.
                push = st.reg.rx.recv() => Wake::Push(push),
                msg = socket.recv() => Wake::Msg(msg),
                () = sleep_until(deadline) => Wake::Tick,
            };
            if let Some(end) = Box::pin(on_wake(socket, ctx, v, st, wake)).await {
                return end;
            }
        }
    }
}

/// One wake of a visitor's loop; `Some` ends the session.
async fn on_wake(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    st: &mut LoopState,
    wake: Wake,
) -> Option<VisitorEnd> {
    match wake {
        Wake::Push(Recv::Kicked) => {
            let (reason, end) = if ctx.shutdown.is_cancelled() {
                ("server going away", VisitorEnd::Shutdown)
            } else {
                ("too slow; reconnect and resume", VisitorEnd::Kicked)
            };
            ws_send(
                socket,
                VisitorOut::GoingAway {
                    reason: reason.into(),
                },
            )
            .await;
            Some(end)
        }
        Wake::Push(Recv::Closed) => Some(VisitorEnd::HubDropped),
        Wake::Push(Recv::Item(push)) => on_push(socket, ctx, v, st, push).await,
        Wake::Msg(msg) => {
            let text = match msg {
                None | Some(Err(_) | Ok(Message::Close(_))) => return Some(VisitorEnd::Closed),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    st.live.on_recv(now());
                    return None;
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = err(
                        ErrorCode::BadRequest,
                        "binary frames are not part of the protocol",
                    );
                    ws_send(socket, e).await;
                    return None;
                }
            };
            st.live.on_recv(now());
            let limits = &ctx.cfg.visitor.limits;
            let reply = match visitor::parse_in(text.as_bytes(), limits) {
                Ok(VisitorIn::Ack { seq }) if !st.receipts.acked(seq.min(st.sent)) => None,
                Ok(m) => {
                    drop(text);
                    handle_msg(ctx, v, &mut st.gate, m, st.sent).await
                }
                Err(e) => {
                    ctx.metrics.rejected_frames.inc();
                    Some(match visitor::action_id(text.as_bytes(), limits) {
                        Some(id) => err_for(id, e.code(), e.to_string()),
                        None => err(e.code(), e.to_string()),
                    })
                }
            };
            match reply {
                Some(r) => (!ws_send(socket, r).await).then_some(VisitorEnd::SendFailed),
                None => None,
            }
        }
        Wake::Tick => {
            // The browser pings us; we only need to notice silence.
            if st.live.poll(now()) == LivenessAction::Dead {
                return Some(VisitorEnd::Dead);
            }
            st.live.on_send(now());
            None
        }
    }
}

/// A push from the hub, out to the visitor.
async fn on_push(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    st: &mut LoopState,
    push: VisitorPush,
) -> Option<VisitorEnd> {
    let out = match push {
        VisitorPush::Agents(a) => super::session::agents_out(a),
        VisitorPush::Queue(p) => VisitorOut::Queue {
            position: p.position,
            wait_ms: p.wait_ms,
        },
        VisitorPush::Invite(i) => VisitorOut::Invite {
            id: i.id,
            text: i.text.to_string(),
        },
        VisitorPush::Typing(name) => VisitorOut::Typing {
            typing: name.is_some(),
            name: name.map(|n| n.to_string()),
        },
        // Another node wrote to this visitor's log: read it from the
        // cursor, as a gap in the pushes is read.
        VisitorPush::CatchUp(until) => {
            if until > st.sent {
                ctx.metrics.bus.catch_up_reads.inc();
                if !catch_up(socket, ctx, v, st, until).await {
                    return Some(VisitorEnd::ReplayFailed);
                }
            }
            return None;
        }
        VisitorPush::Event(seq, event) => {
            if seq <= st.sent {
                return None;
            }
            if seq > st.sent + 1 && !catch_up(socket, ctx, v, st, seq - 1).await {
                return Some(VisitorEnd::ReplayFailed);
            }
            if seq != st.sent + 1 {
                return None;
            }
            let ev: VisitorEvent = (*event).clone();
            st.receipts.sent(seq, &ev);
            if !ws_send(socket, VisitorOut::Event { seq, event: ev }).await {
                return Some(VisitorEnd::SendFailed);
            }
            ctx.metrics.messages_out.inc();
            st.sent = seq;
            return None;
        }
    };
    (!ws_send(socket, out).await).then_some(VisitorEnd::SendFailed)
}

/// Replay the log after `st.sent` up to `until`; false when that failed.
async fn catch_up(
    socket: &mut WebSocket,
    ctx: &Arc<Ctx>,
    v: &Visitor,
    st: &mut LoopState,
    until: Seq,
) -> bool {
    match Box::pin(catch_up_ws(socket, ctx, v, st.sent, until)).await {
        Ok(s) => {
            st.receipts.replayed(st.sent, s);
            st.sent = s;
            true
        }
        Err(_) => false,
    }
}
