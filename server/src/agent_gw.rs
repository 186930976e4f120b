//! The agent gateway: raw TCP, the protocol crate's handshake and sealed
//! frames, login, resume, commands and live pushes.
//!
//! Each connection is one task. It registers with the hub *before* reading
//! the replay from the store, so an event committed in between is either in
//! the replay or in the live queue; the task sends every seq exactly once by
//! tracking the last seq it sent and filling any gap from the store.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{
    AckBatch, ClientMsg, CommandResult, Event, LiveEvent, Login, LoginOk, Presence, Query, Resume,
    Seq, ServerMsg, Snapshot, SnapshotPart, TeamMember, VisitorInfo, WireError,
};
use holdfast_protocol::codec::{FrameCodec, FrameError};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::server_accept_with;
use holdfast_protocol::liveness::{Liveness, LivenessAction};
use holdfast_protocol::notice::LeaveReason;
use holdfast_protocol::seal::{Opener, Sealer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_util::codec::Framed;

use crate::Ctx;
use crate::hub::AgentPush;
use crate::pushq::Recv;
use crate::store::reads::{self, AgentRow};
use crate::store::writer::AgentActor;
use crate::store::{Op, StoreError};

/// Why a connection ended, for the log.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("bad frame: {0}")]
    Open(#[from] holdfast_protocol::seal::OpenError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("login refused: {0}")]
    Refused(String),
    #[error("no heartbeat for {0:?}: peer declared dead")]
    Dead(Duration),
    #[error("slow consumer: outbound queue full")]
    Kicked,
    #[error("server shutting down")]
    Shutdown,
    #[error("signed out")]
    SignedOut,
    #[error("session revoked: {0}")]
    Revoked(String),
    #[error("closed before login to make room for a less crowded address")]
    Evicted,
    #[error("the server is full: {0} agent sessions")]
    Full(usize),
    #[error("the peer stopped reading: a write took longer than {0:?}")]
    WriteStalled(Duration),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("seal: {0}")]
    Seal(#[from] holdfast_protocol::seal::SealError),
}

type Io = Framed<TcpStream, FrameCodec>;

/// Accept agent connections until shutdown.
///
/// A connection starts in the pre-auth pool (small frames, a short
/// deadline, its own cap; see [`crate::login`]) and takes a place among the
/// logged-in sessions only once its Login is good, so sockets that never
/// log in cannot use up the places of those that do.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let limit = Arc::new(Semaphore::new(ctx.cfg.agent_max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("agent accept failed: {e}; retrying in {backoff:?}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(slot) = ctx.agent_ip_limiter.acquire(peer.ip()) else {
            if let Some(more) = PER_IP_WARN.due() {
                tracing::warn!(%peer, "too many agent connections from this address; refusing ({more} more refused since the last warning)");
            }
            continue;
        };
        let Some(preauth) = ctx.preauth.admit(peer.ip()) else {
            ctx.metrics.preauth_refused.inc();
            if let Some(more) = PREAUTH_WARN.due() {
                tracing::warn!(%peer, "too many agent connections waiting to log in; refusing ({more} more refused since the last warning)");
            }
            continue;
        };
        let (ctx, limit) = (ctx.clone(), limit.clone());
        tokio::spawn(async move {
            let _slot = slot;
            handle(stream, peer, ctx, limit, preauth).await;
        });
    }
}

/// Refusals at accept come in floods; one warning per 10 s is plenty.
static PER_IP_WARN: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(10));
static PREAUTH_WARN: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(10));

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    preauth: crate::login::PreAuthSlot,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay: {e}");
    }
    // Before login only frames the size of a hello or a Login are read,
    // so an unauthenticated socket holds a few KiB, not a megabyte.
    let mut io = Framed::new(
        stream,
        FrameCodec::new(ctx.preauth.config().max_frame.min(ctx.cfg.max_frame)),
    );
    let deadline = ctx.preauth.config().deadline;
    let greeted = tokio::select! {
        r = timeout(deadline, greet(&mut io, &ctx)) => match r {
            Ok(r) => r,
            Err(_) => Err(End::Timeout("a complete login")),
        },
        () = preauth.cancelled.cancelled() => {
            ctx.metrics.preauth_evicted.inc();
            Err(End::Evicted)
        }
    };
    drop(preauth);
    let opened = match greeted {
        Ok((session, login)) => establish(&mut io, peer, &ctx, &limit, session, login).await,
        Err(e) => Err(e),
    };
    let (mut conn, _permit) = match opened {
        Ok(c) => c,
        Err(e) => {
            if matches!(
                e,
                End::Frame(FrameError::Oversize { .. }) | End::Open(_) | End::Handshake(_)
            ) {
                ctx.metrics.rejected_frames.inc();
            }
            // Debug: a flood of unauthenticated sockets would otherwise
            // write a line each; the refusals are counted in metrics.
            tracing::debug!(%peer, "agent connection ended before login: {e}");
            return;
        }
    };
    let agent = conn.agent.id;
    let result = conn.run(&mut io, &ctx).await;
    ctx.hub.unregister_agent(agent, conn.conn_id);
    // Its queue and buffers go now, not when the task ends.
    drop(conn);
    drop(io);
    match &result {
        End::Dead(_) => {
            ctx.metrics.dead_peer_cuts.inc();
        }
        End::Frame(FrameError::Oversize { .. }) | End::Open(_) | End::Protocol(_) => {
            ctx.metrics.rejected_frames.inc();
        }
        // A consumer cut for what it left unread freed up to its queue's
        // byte limit. A queue-full cut is counted where it happens (the
        // hub); a write that stalled is the same slow consumer, found by
        // its age instead.
        End::Kicked => crate::mem::give_back_freed(),
        End::WriteStalled(_) => {
            ctx.metrics.slow_consumer_cuts.inc();
            crate::mem::give_back_freed();
        }
        _ => {}
    }
    tracing::info!(%peer, agent, "agent connection ended: {result}");
}

/// Send the whole visitor list without exceeding a frame. It goes as one
/// `Visitors` when it fits; otherwise the first part is a `Visitors` (which
/// replaces the client's list) and the rest follow as `Visitor` upserts.
/// With 5,000 visitors on a site the single message was 1.2 MB, over the
/// 1 MiB frame limit, and no agent could log in (BENCHMARKS.md, storm).
async fn send_visitor_list(
    session: &mut Session,
    io: &mut Io,
    ctx: &Ctx,
    visitors: Vec<VisitorInfo>,
) -> Result<(), End> {
    // Half the smaller of our limit and the client's default leaves room
    // for the envelopes, sealing and a client built with the default.
    let budget = ctx.cfg.max_frame.min(holdfast_protocol::DEFAULT_MAX_FRAME) / 2;
    let mut first = Vec::new();
    let mut size = 0;
    let mut rest = visitors.into_iter();
    let mut spill = None;
    for v in rest.by_ref() {
        let n = v.encoded_len();
        if size + n > budget && !first.is_empty() {
            spill = Some(v);
            break;
        }
        size += n;
        first.push(v);
    }
    session
        .feed(io, &ServerMsg::Live(LiveEvent::Visitors(first)))
        .await?;
    // Flush as we go, so the write buffer holds a few hundred upserts, not
    // the whole list: 100 agents logging in at once to a site with 5,000
    // visitors would otherwise buffer 120 MB.
    for (i, v) in spill.into_iter().chain(rest).enumerate() {
        session
            .feed(io, &ServerMsg::Live(LiveEvent::Visitor(v)))
            .await?;
        if i % 256 == 255 {
            session.flush(io).await?;
        }
    }
    Ok(())
}

/// Send a snapshot without exceeding a frame: when it does not fit in one,
/// `SnapshotPart`s carry the first pieces and the `Snapshot` the last. A
/// fresh device of an agent with 1.9 MB of history could never log in while
/// it had to fit one 1 MiB frame.
async fn send_snapshot(
    session: &mut Session,
    io: &mut Io,
    ctx: &Ctx,
    seq: Seq,
    conversations: Vec<holdfast_protocol::agent::ConversationInfo>,
    messages: Vec<holdfast_protocol::agent::ChatMessage>,
) -> Result<(), End> {
    let budget = ctx.cfg.max_frame.min(holdfast_protocol::DEFAULT_MAX_FRAME) / 2;
    let mut part = SnapshotPart {
        conversations: Vec::new(),
        messages: Vec::new(),
    };
    enum Piece {
        Conversation(holdfast_protocol::agent::ConversationInfo),
        Message(holdfast_protocol::agent::ChatMessage),
    }
    let pieces = conversations
        .into_iter()
        .map(Piece::Conversation)
        .chain(messages.into_iter().map(Piece::Message));
    let mut size = 0;
    for piece in pieces {
        let n = match &piece {
            Piece::Conversation(c) => holdfast_protocol::agent::encoded_len(c),
            Piece::Message(m) => holdfast_protocol::agent::encoded_len(m),
        };
        if size + n > budget && size > 0 {
            let full = std::mem::replace(
                &mut part,
                SnapshotPart {
                    conversations: Vec::new(),
                    messages: Vec::new(),
                },
            );
            session.feed(io, &ServerMsg::SnapshotPart(full)).await?;
            size = 0;
        }
        size += n;
        match piece {
            Piece::Conversation(c) => part.conversations.push(c),
            Piece::Message(m) => part.messages.push(m),
        }
    }
    session
        .send(
            io,
            &ServerMsg::Snapshot(Snapshot {
                seq,
                recovered: false,
                conversations: part.conversations,
                messages: part.messages,
            }),
        )
        .await
}

fn seal(sealer: &mut Sealer, msg: &ServerMsg) -> Result<Vec<u8>, End> {
    // The thread-local RNG must not live across an await, so draw here.
    Ok(sealer.seal_with(&mut rand::rng(), &msg.encode())?)
}

struct Session {
    sealer: Sealer,
    opener: Opener,
    liveness: Liveness,
    /// The longest a write may wait for the peer to read. A peer that
    /// heartbeats but never reads would otherwise park this task in a
    /// write forever, holding everything queued for it.
    write_stall: Duration,
}

impl Session {
    async fn send(&mut self, io: &mut Io, msg: &ServerMsg) -> Result<(), End> {
        let frame = seal(&mut self.sealer, msg)?;
        match timeout(self.write_stall, io.send(Bytes::from(frame))).await {
            Ok(r) => r?,
            Err(_) => return Err(End::WriteStalled(self.write_stall)),
        }
        self.liveness
            .on_send(tokio::time::Instant::now().into_std());
        Ok(())
    }

    /// Queue without flushing; call `flush` after a burst.
    async fn feed(&mut self, io: &mut Io, msg: &ServerMsg) -> Result<(), End> {
        let frame = seal(&mut self.sealer, msg)?;
        match timeout(self.write_stall, io.feed(Bytes::from(frame))).await {
            Ok(r) => r?,
            Err(_) => return Err(End::WriteStalled(self.write_stall)),
        }
        self.liveness
            .on_send(tokio::time::Instant::now().into_std());
        Ok(())
    }

    async fn flush(&mut self, io: &mut Io) -> Result<(), End> {
        match timeout(self.write_stall, SinkExt::<Bytes>::flush(io)).await {
            Ok(r) => r.map_err(End::from),
            Err(_) => Err(End::WriteStalled(self.write_stall)),
        }
    }

    async fn error(
        &mut self,
        io: &mut Io,
        code: ErrorCode,
        message: impl Into<String>,
        retry_after_ms: Option<u32>,
    ) {
        let msg = ServerMsg::Error(WireError {
            code,
            message: message.into(),
            retry_after_ms,
        });
        // The connection is about to close; a failed error send changes nothing.
        let _ignored = self.send(io, &msg).await;
    }

    fn open(&mut self, frame: &[u8]) -> Result<ClientMsg, End> {
        let plain = self.opener.open(frame)?;
        ClientMsg::decode(&plain).map_err(|e| End::Protocol(e.to_string()))
    }
}

/// Queries run one at a time per connection; a few more may wait. An agent
/// that sent 3,000 history queries without reading had every answer held
/// in memory at once (2.5 GB).
const MAX_QUEUED_QUERIES: usize = 4;

#[derive(Debug, Default)]
struct QueryState {
    in_flight: bool,
    queued: VecDeque<Query>,
}

struct Conn {
    session: Session,
    query: QueryState,
    agent: AgentRow,
    device: holdfast_protocol::ids::MsgId,
    conn_id: u64,
    /// Pushes from the hub, its kick, and its stale mark (presence changes
    /// were dropped for a full queue: resend the list).
    rx: crate::pushq::Receiver<AgentPush>,
    /// The last event seq written to this connection.
    sent: Seq,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn next_frame(
    io: &mut Io,
    what: &'static str,
    limit: Duration,
) -> Result<bytes::BytesMut, End> {
    match timeout(limit, io.next()).await {
        Err(_) => Err(End::Timeout(what)),
        Ok(None) => Err(End::PeerClosed),
        Ok(Some(r)) => Ok(r?),
    }
}

/// The peer's part of opening a session: its hello and its Login frame.
/// This is all the pre-auth deadline and pool cover; what the server does
/// next (queueing for a password check, the resume) is not the peer's
/// delay to be cut for.
async fn greet(io: &mut Io, ctx: &Arc<Ctx>) -> Result<(Session, Login), End> {
    let hs_timeout = ctx.cfg.handshake_timeout;
    let hello = next_frame(io, "ClientHello", hs_timeout).await?;
    let accepted = server_accept_with(&ctx.identity, &mut rand::rng(), &hello);
    let accepted = match accepted {
        Ok(a) => a,
        Err(refusal) => {
            if let Some(reply) = refusal.reply {
                let _ignored = io.send(Bytes::from(reply)).await;
            }
            return Err(End::Handshake(refusal.error.to_string()));
        }
    };
    io.send(Bytes::from(accepted.reply)).await?;
    let mut session = Session {
        sealer: accepted.session.sealer,
        opener: accepted.session.opener,
        liveness: Liveness::new(ctx.cfg.liveness, now()),
        write_stall: ctx.cfg.liveness.dead_after,
    };
    // From here the client holds the keys, so a refusal can be told to it:
    // an Error before the close lets it tell "my Login is too big" or "my
    // Login is malformed" from a network fault (PROTOCOL.md sections 3 and
    // 9). A frame that fails its MAC still closes without a word.
    let frame = match next_frame(io, "Login", hs_timeout).await {
        Err(End::Frame(FrameError::Oversize { len, max })) => {
            session
                .error(
                    io,
                    ErrorCode::TooLarge,
                    format!("frame of {len} bytes exceeds the limit of {max} before login"),
                    None,
                )
                .await;
            return Err(End::Frame(FrameError::Oversize { len, max }));
        }
        r => r?,
    };
    let opened = match session.open(&frame) {
        Err(End::Protocol(why)) => {
            session
                .error(
                    io,
                    ErrorCode::BadRequest,
                    format!("malformed message: {why}"),
                    None,
                )
                .await;
            return Err(End::Protocol(why));
        }
        r => r?,
    };
    let login = match opened {
        ClientMsg::Login(l) => l,
        other => {
            session
                .error(
                    io,
                    ErrorCode::BadRequest,
                    "the first message must be Login",
                    None,
                )
                .await;
            return Err(End::Protocol(format!("expected Login, got {other:?}")));
        }
    };
    session.liveness.on_recv(now());
    Ok((session, login))
}

/// Check the Login and open the session: register, then resume.
async fn establish(
    io: &mut Io,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    limit: &Arc<Semaphore>,
    mut session: Session,
    login: Login,
) -> Result<(Conn, OwnedSemaphorePermit), End> {
    let (row, proof) = match crate::login::authenticate(ctx, &login, peer.ip()).await {
        Ok(r) => r,
        Err(refusal) => {
            let ms = refusal
                .retry_after
                .map(|w| u32::try_from(w.as_millis()).unwrap_or(u32::MAX).max(1));
            session.error(io, refusal.code, refusal.message, ms).await;
            return Err(End::Refused(refusal.why));
        }
    };
    // A place among the logged-in sessions, taken only now.
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        let max = ctx.cfg.agent_max_connections;
        session
            .error(
                io,
                ErrorCode::Unavailable,
                format!("the server has its maximum of {max} agent sessions; try again later"),
                Some(5000),
            )
            .await;
        return Err(End::Full(max));
    };
    tracing::debug!(%peer, agent = row.id, ?proof, "logged in");
    // Logged in: frames of the full size both ways from here (the resume
    // that follows sends snapshots and lists of up to half a frame).
    io.codec_mut().set_max_frame_length(ctx.cfg.max_frame);
    let (agent_id, device) = (row.id, login.device_id);
    let active = ctx
        .reads
        .run(move |c| reads::agent_load(c, agent_id))
        .await?;
    let commands_acked = ctx
        .writer
        .call(|reply| Op::AgentLogin {
            agent: agent_id,
            device,
            reply,
        })
        .await?;
    // Register before reading the log: see the module docs.
    let reg = ctx.hub.register_agent(row.site, team_member(&row, active));
    let mut conn = Conn {
        session,
        agent: row,
        device,
        conn_id: reg.id,
        rx: reg.rx,
        sent: 0,
        query: QueryState::default(),
    };
    if let Err(e) = conn
        .resume(io, ctx, login.resume_after, commands_acked)
        .await
    {
        ctx.hub.unregister_agent(agent_id, conn.conn_id);
        return Err(e);
    }
    Ok((conn, permit))
}

impl Conn {
    async fn resume(
        &mut self,
        io: &mut Io,
        ctx: &Arc<Ctx>,
        after: Option<Seq>,
        commands_acked: Seq,
    ) -> Result<(), End> {
        let (agent, site) = (self.agent.id, self.agent.site);
        let oversees = self.agent.role.oversees();
        let (ticket, ticket_expires_ms) = crate::login::issue_ticket(ctx, &self.agent, self.device);
        let (floor, head) = ctx
            .reads
            .run(move |c| reads::agent_log_bounds(c, agent))
            .await?;
        let replay = after.filter(|a| *a >= floor && *a <= head);
        let login_ok = ServerMsg::LoginOk(LoginOk {
            agent,
            display_name: self.agent.display_name.clone(),
            site,
            resume: match replay {
                Some(a) => Resume::Replay { after: a },
                None => Resume::Snapshot,
            },
            commands_acked,
            heartbeat_ms: u32::try_from(ctx.cfg.liveness.heartbeat.as_millis()).unwrap_or(u32::MAX),
            dead_after_ms: u32::try_from(ctx.cfg.liveness.dead_after.as_millis())
                .unwrap_or(u32::MAX),
            server_time_ms: crate::store::now_ms(),
            ticket,
            ticket_expires_ms,
        });
        // The silence clock starts now: a login that waited its turn for the
        // password check (one per core) could otherwise be cut as a dead
        // peer right after LoginOk, before the client had any reason to
        // speak (seen in the reconnect storm, BENCHMARKS.md).
        self.session.liveness = Liveness::new(ctx.cfg.liveness, now());
        self.session.send(io, &login_ok).await?;
        match replay {
            Some(a) => {
                ctx.metrics.resumes_replay.inc();
                self.sent = a;
                self.catch_up(io, ctx, Seq::MAX).await?;
            }
            None => {
                ctx.metrics.resumes_snapshot.inc();
                // Head and contents must come from one read transaction, or
                // an event could be both in the snapshot and replayed after.
                let (seq, conversations, messages) = ctx
                    .reads
                    .run(move |c| {
                        c.execute_batch("BEGIN")?;
                        let r = (|| {
                            let head = reads::log_head(c, &reads::agent_key(agent))?;
                            let (cs, ms) = reads::agent_snapshot(c, agent, site, oversees)?;
                            Ok((head, cs, ms))
                        })();
                        let _ignored = c.execute_batch("COMMIT");
                        r
                    })
                    .await?;
                send_snapshot(&mut self.session, io, ctx, seq, conversations, messages).await?;
                self.sent = seq;
            }
        }
        let visitors = ctx.hub.visitors_of_site(site);
        send_visitor_list(&mut self.session, io, ctx, visitors).await?;
        self.send_team(io, ctx).await?;
        self.session.flush(io).await?;
        // This agent may take waiting conversations now.
        let _queued = ctx.writer.try_submit(Op::AssignQueued { site });
        Ok(())
    }

    /// The whole team, replacing the client's list: after login, and after
    /// team updates were dropped for a full queue.
    async fn send_team(&mut self, io: &mut Io, ctx: &Arc<Ctx>) -> Result<(), End> {
        let site = self.agent.site;
        let rows = ctx.reads.run(move |c| reads::team(c, site)).await?;
        let team = ctx
            .hub
            .team(rows.iter().map(|(r, n)| team_member(r, *n)).collect());
        self.session
            .feed(io, &ServerMsg::Live(LiveEvent::Team(team)))
            .await
    }

    /// Send stored events after `self.sent`, up to `until`.
    async fn catch_up(&mut self, io: &mut Io, ctx: &Arc<Ctx>, until: Seq) -> Result<(), End> {
        let agent = self.agent.id;
        loop {
            let after = self.sent;
            let page = ctx
                .reads
                .run(move |c| reads::agent_events_after(c, agent, after, 512))
                .await?;
            let n = page.len();
            for (seq, event) in page {
                if seq > until {
                    break;
                }
                self.push_event(io, seq, event).await?;
            }
            self.session.flush(io).await?;
            if n < 512 || self.sent >= until {
                return Ok(());
            }
        }
    }

    async fn push_event(&mut self, io: &mut Io, seq: Seq, event: Event) -> Result<(), End> {
        self.session
            .feed(io, &ServerMsg::Event { seq, event })
            .await?;
        self.sent = seq;
        Ok(())
    }

    async fn run(&mut self, io: &mut Io, ctx: &Arc<Ctx>) -> End {
        match self.run_inner(io, ctx).await {
            Ok(()) => End::PeerClosed,
            Err(e) => e,
        }
    }

    async fn run_inner(&mut self, io: &mut Io, ctx: &Arc<Ctx>) -> Result<(), End> {
        let actor = AgentActor {
            id: self.agent.id,
            site: self.agent.site,
            name: self.agent.display_name.clone(),
            epoch: self.agent.auth_epoch,
        };
        let mut pending: VecDeque<oneshot::Receiver<Result<CommandResult, StoreError>>> =
            VecDeque::new();
        let mut acked_up_to: Seq = 0;
        let (query_tx, mut query_rx) = mpsc::channel::<ServerMsg>(16);
        loop {
            let deadline = tokio::time::Instant::from_std(self.session.liveness.poll_timeout());
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => {
                    let _ignored = self.session.send(io, &ServerMsg::GoingAway { reason: "server going away".into() }).await;
                    return Err(End::Shutdown);
                }
                res = async {
                    match pending.front_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if !pending.is_empty() => {
                    pending.pop_front();
                    let mut results = Vec::new();
                    let mut first = Some(res);
                    loop {
                        let r = match first.take() {
                            Some(r) => r,
                            None => match pending.front_mut().map(|rx| rx.try_recv()) {
                                Some(Ok(r)) => { pending.pop_front(); Ok(r) }
                                _ => break,
                            },
                        };
                        match r {
                            Ok(Ok(result)) => results.push(result),
                            Ok(Err(e)) => {
                                if !results.is_empty() {
                                    acked_up_to = acked_up_to.max(results.iter().map(|r| r.seq).max().unwrap_or(0));
                                    self.session.send(io, &ServerMsg::Ack(AckBatch { up_to: acked_up_to, results })).await?;
                                }
                                if let StoreError::Revoked { code, message } = e {
                                    self.session.error(io, code, message.clone(), None).await;
                                    return Err(End::Revoked(message));
                                }
                                self.session.error(io, ErrorCode::Unavailable, format!("cannot commit right now: {e}"), Some(1000)).await;
                                return Err(End::Store(e));
                            }
                            Err(_) => return Err(End::Store(StoreError::WriterGone)),
                        }
                    }
                    acked_up_to = acked_up_to.max(results.iter().map(|r| r.seq).max().unwrap_or(0));
                    ctx.metrics.messages_in.inc_by(results.len() as u64);
                    self.session.send(io, &ServerMsg::Ack(AckBatch { up_to: acked_up_to, results })).await?;
                }
                push = self.rx.recv() => {
                    let push = match push {
                        Recv::Item(push) => push,
                        Recv::Kicked => {
                            self.session.error(io, ErrorCode::GoingAway, "outbound queue full; resume from your cursor", None).await;
                            return Err(End::Kicked);
                        }
                        Recv::Closed => return Err(End::Kicked),
                    };
                    self.handle_push(io, ctx, push).await?;
                    // Drain whatever else is ready, then flush once.
                    while let Some(push) = self.rx.try_recv() {
                        self.handle_push(io, ctx, push).await?;
                    }
                    // Caught up after dropping presence changes: the whole
                    // list now supersedes them (read after the swap, so it
                    // is at least as new as anything dropped).
                    if self.rx.take_stale() {
                        let visitors = ctx.hub.visitors_of_site(self.agent.site);
                        send_visitor_list(&mut self.session, io, ctx, visitors).await?;
                        self.send_team(io, ctx).await?;
                    }
                    self.session.flush(io).await?;
                }
                q = query_rx.recv() => {
                    if let Some(msg) = q {
                        self.session.send(io, &msg).await?;
                        self.query.in_flight = false;
                        if let Some(next) = self.query.queued.pop_front() {
                            self.query.in_flight = true;
                            self.spawn_query(ctx, next, query_tx.clone());
                        }
                    }
                }
                frame = io.next() => {
                    let frame = match frame {
                        None => return Ok(()),
                        Some(Err(FrameError::Oversize { len, max })) => {
                            self.session.error(io, ErrorCode::TooLarge, format!("frame of {len} bytes exceeds the limit of {max}"), None).await;
                            return Err(End::Frame(FrameError::Oversize { len, max }));
                        }
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(f)) => f,
                    };
                    self.session.liveness.on_recv(now());
                    let msg = match self.session.open(&frame) {
                        Ok(m) => m,
                        Err(End::Protocol(why)) => {
                            self.session.error(io, ErrorCode::BadRequest, format!("malformed message: {why}"), None).await;
                            return Err(End::Protocol(why));
                        }
                        Err(e) => return Err(e),
                    };
                    match msg {
                        ClientMsg::Command(cmd) => {
                            let (tx, rx) = oneshot::channel();
                            ctx.writer.submit(Op::AgentCommand { actor: actor.clone(), device: self.device, cmd, reply: tx }).await?;
                            pending.push_back(rx);
                        }
                        ClientMsg::Ack { up_to } => {
                            if up_to > self.sent {
                                self.session.error(io, ErrorCode::BadRequest, format!("ack {up_to} is beyond the last event sent ({})", self.sent), None).await;
                                return Err(End::Protocol("ack beyond sent".into()));
                            }
                        }
                        ClientMsg::Heartbeat => {}
                        ClientMsg::Query(q) => {
                            if !self.query.in_flight {
                                self.query.in_flight = true;
                                self.spawn_query(ctx, q, query_tx.clone());
                            } else if self.query.queued.len() < MAX_QUEUED_QUERIES {
                                self.query.queued.push_back(q);
                            } else {
                                ctx.metrics.queries_refused.inc();
                                let Query::History { request, .. } = q;
                                let refused = holdfast_protocol::agent::QueryResult::Refused(WireError {
                                    code: ErrorCode::RateLimited,
                                    message: format!("{MAX_QUEUED_QUERIES} queries are already waiting; send the next when one is answered"),
                                    retry_after_ms: Some(1000),
                                });
                                self.session.send(io, &ServerMsg::QueryResult { request, result: refused }).await?;
                            }
                        }
                        ClientMsg::Login(_) => {
                            self.session.error(io, ErrorCode::BadRequest, "already logged in", None).await;
                            return Err(End::Protocol("second Login".into()));
                        }
                        ClientMsg::SignOut => {
                            return self.sign_out(io, ctx, &mut pending, &mut acked_up_to).await;
                        }
                    }
                }
                () = sleep_until(deadline) => {
                    match self.session.liveness.poll(now()) {
                        LivenessAction::Idle => {}
                        LivenessAction::SendHeartbeat => self.session.send(io, &ServerMsg::Heartbeat).await?,
                        LivenessAction::Dead => return Err(End::Dead(self.session.liveness.silence(now()))),
                    }
                }
            }
        }
    }

    async fn handle_push(
        &mut self,
        io: &mut Io,
        ctx: &Arc<Ctx>,
        push: AgentPush,
    ) -> Result<(), End> {
        match push {
            AgentPush::Event(seq, event) => {
                if seq <= self.sent {
                    return Ok(());
                }
                if seq > self.sent + 1 {
                    // Committed between our replay read and registration.
                    self.catch_up(io, ctx, seq - 1).await?;
                }
                if seq == self.sent + 1 {
                    ctx.metrics.messages_out.inc();
                    self.push_event(io, seq, (*event).clone()).await?;
                }
                Ok(())
            }
            AgentPush::Live(ev) => self.session.feed(io, &ServerMsg::Live((*ev).clone())).await,
            AgentPush::Revoke(_, _, epoch) if self.agent.auth_epoch >= epoch => Ok(()),
            AgentPush::Revoke(code, message, _) => {
                self.session
                    .error(io, code, message.to_string(), None)
                    .await;
                Err(End::Revoked(message.to_string()))
            }
        }
    }

    /// `ClientMsg::SignOut`: ack what came before it, hand the agent's chats
    /// back (the writer keeps them if another device is still connected),
    /// say so, and end.
    async fn sign_out(
        &mut self,
        io: &mut Io,
        ctx: &Arc<Ctx>,
        pending: &mut VecDeque<oneshot::Receiver<Result<CommandResult, StoreError>>>,
        acked_up_to: &mut Seq,
    ) -> Result<(), End> {
        let mut results = Vec::new();
        let mut failed = None;
        while let Some(rx) = pending.pop_front() {
            match rx.await {
                Ok(Ok(r)) => results.push(r),
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => {
                    failed = Some(StoreError::WriterGone);
                    break;
                }
            }
        }
        if !results.is_empty() {
            *acked_up_to = (*acked_up_to).max(results.iter().map(|r| r.seq).max().unwrap_or(0));
            ctx.metrics.messages_in.inc_by(results.len() as u64);
            self.session
                .send(
                    io,
                    &ServerMsg::Ack(AckBatch {
                        up_to: *acked_up_to,
                        results,
                    }),
                )
                .await?;
        }
        // A command before the sign-out was refused: say why, as for any
        // other command, and end without signing out.
        if let Some(e) = failed {
            return Err(match e {
                StoreError::Revoked { code, message } => {
                    self.session.error(io, code, message.clone(), None).await;
                    End::Revoked(message)
                }
                e => {
                    self.session
                        .error(
                            io,
                            ErrorCode::Unavailable,
                            format!("cannot commit right now: {e}"),
                            Some(1000),
                        )
                        .await;
                    End::Store(e)
                }
            });
        }
        // The release also takes the agent offline (unless it is still
        // connected on another device), in the same op, so no new chat is
        // assigned to it on its way out.
        let agent = self.agent.id;
        ctx.writer
            .call(|reply| Op::ReleaseChats {
                agent,
                reason: LeaveReason::SignedOut,
                reply: Some(reply),
            })
            .await?;
        self.session.send(io, &ServerMsg::SignedOut).await?;
        Err(End::SignedOut)
    }

    fn spawn_query(&self, ctx: &Arc<Ctx>, q: Query, tx: mpsc::Sender<ServerMsg>) {
        let site = self.agent.site;
        let reads = ctx.reads.clone();
        tokio::spawn(async move {
            match q {
                Query::History {
                    request,
                    visitor,
                    before,
                    limit,
                } => {
                    let result = reads
                        .run(move |c| reads::history(c, site, &visitor, before, limit))
                        .await
                        .unwrap_or_else(|e| {
                            holdfast_protocol::agent::QueryResult::Refused(WireError {
                                code: ErrorCode::Unavailable,
                                message: e.to_string(),
                                retry_after_ms: Some(1000),
                            })
                        });
                    let _ignored = tx.send(ServerMsg::QueryResult { request, result }).await;
                }
            }
        });
    }
}

/// An agent's team row: presence is the hub's to fill in.
pub fn team_member(row: &AgentRow, active: u32) -> TeamMember {
    TeamMember {
        agent: row.id,
        name: row.display_name.clone(),
        role: row.role,
        presence: Presence::Offline,
        active,
        capacity: row.capacity,
        disabled: row.disabled,
    }
}
