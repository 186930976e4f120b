//! The agent gateway: a thin async driver around the protocol's
//! [`session::server`](holdfast_protocol::session::server) machine, plus the
//! server's policy around it: the pre-auth pool, throttled password checks,
//! resume tickets, the session limit, revocation, hub registration, the
//! store and queries.
//!
//! The machine owns framing, the handshake, sealing, the login state, the
//! last event seq sent and liveness; this file moves bytes between it and
//! the socket, passes the time in, and answers what it surfaces (a Login, a
//! Command, a Query, a SignOut) from the store and the hub.
//!
//! Each connection is one task. It registers with the hub *before* reading
//! the replay from the store, so an event committed in between is either in
//! the replay or in the live queue; the task sends every seq exactly once by
//! asking the machine for the last seq sent and filling any gap from the
//! store.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    AckBatch, Action, AttachmentInfo, CommandResult, Event, LiveEvent, Login, Presence, Query,
    QueryResult, Seq, TeamMember, WireError,
};
use holdfast_protocol::codec::FrameError;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::LeaveReason;
use holdfast_protocol::session::SessionError;
use holdfast_protocol::session::server::{Server, ServerConfig, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::{sleep, sleep_until, timeout};

mod attach;
mod resume;

use crate::Ctx;
use crate::hub::AgentPush;
use crate::pushq::Recv;
use crate::store::reads::{self, AgentRow};
use crate::store::writer::{AgentActor, FileCheck, VisitorFile};
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

impl From<SessionError> for End {
    /// Kept to the variants the metrics and logs already tell apart.
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Frame(e) => End::Frame(e),
            SessionError::Handshake(e) => End::Handshake(e.to_string()),
            SessionError::Open(e) => End::Open(e),
            SessionError::Seal(e) => End::Seal(e),
            SessionError::Dead(silence) => End::Dead(silence),
            e => End::Protocol(e.to_string()),
        }
    }
}

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
        if ctx
            .cfg
            .agent_proxy_protocol_from
            .iter()
            .any(|c| c.contains(peer.ip()))
        {
            // The header is read on the connection's own task, so a slow
            // balancer connection never holds up the accept loop; the
            // per-address checks then apply to the address it carries.
            let (ctx, limit) = (ctx.clone(), limit.clone());
            tokio::spawn(async move {
                let mut stream = stream;
                let read = timeout(
                    ctx.cfg.handshake_timeout,
                    crate::proxy_protocol::read(&mut stream),
                )
                .await;
                let why = match read {
                    Ok(Ok(source)) => return admit(stream, source.unwrap_or(peer), ctx, limit),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "no PROXY protocol header within {:?}",
                        ctx.cfg.handshake_timeout
                    ),
                };
                ctx.metrics.rejected_frames.inc();
                // A misconfigured balancer sends every connection here.
                if let Some(more) = PROXY_WARN.due() {
                    tracing::warn!(%peer, "agent connection from a load balancer refused: {why} ({more} more refused since the last warning)");
                }
            });
        } else {
            admit(stream, peer, ctx.clone(), limit.clone());
        }
    }
}

/// The per-address checks at the door (`peer` is the client's address,
/// from a PROXY protocol header when a balancer sent one), then the
/// connection's task.
fn admit(stream: TcpStream, peer: SocketAddr, ctx: Arc<Ctx>, limit: Arc<Semaphore>) {
    let Some(slot) = ctx.agent_ip_limiter.acquire(peer.ip()) else {
        if let Some(more) = PER_IP_WARN.due() {
            tracing::warn!(%peer, "too many agent connections from this address; refusing ({more} more refused since the last warning)");
        }
        return;
    };
    let Some(preauth) = ctx.preauth.admit(peer.ip()) else {
        ctx.metrics.preauth_refused.inc();
        if let Some(more) = PREAUTH_WARN.due() {
            tracing::warn!(%peer, "too many agent connections waiting to log in; refusing ({more} more refused since the last warning)");
        }
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        handle(stream, peer, ctx, limit, preauth).await;
    });
}

/// Refusals at accept come in floods; one warning per 10 s is plenty.
static PER_IP_WARN: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(10));
static PREAUTH_WARN: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(10));
static PROXY_WARN: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(10));

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    preauth: crate::login::PreAuthSlot,
) {
    // Everything up to the login is boxed and over before the session runs:
    // inline, its futures (the handshake, the password check, the first
    // reads) and the link it moved away made every agent's task 12.9 KB for
    // as long as the agent stayed connected.
    let opened = Box::pin(open(stream, peer, &ctx, &limit, preauth)).await;
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
    let result = conn.run(&ctx).await;
    ctx.hub.unregister_agent(agent, conn.conn_id);
    // Its queue and buffers go now, not when the task ends.
    drop(conn);
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

/// The socket from its first byte to a logged-in connection.
async fn open(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    limit: &Arc<Semaphore>,
    preauth: crate::login::PreAuthSlot,
) -> Result<(Box<Conn>, OwnedSemaphorePermit), End> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "set_nodelay: {e}");
    }
    // Before login only frames the size of a hello or a Login are read
    // (the machine's pre-auth limit), so an unauthenticated socket holds a
    // few KiB, not a megabyte.
    let mut link = Link {
        session: Server::new(
            ServerConfig {
                identity: ctx.identity.clone(),
                liveness: ctx.cfg.liveness,
                max_frame: ctx.cfg.max_frame,
                preauth_max_frame: ctx.preauth.config().max_frame,
            },
            now(),
            rand::random(),
        ),
        stream,
        buf: vec![0u8; READ_CHUNK],
        write_stall: ctx.cfg.liveness.dead_after,
    };
    let deadline = ctx.preauth.config().deadline;
    let greeted = tokio::select! {
        r = timeout(deadline, greet(&mut link, ctx)) => match r {
            Ok(r) => r,
            Err(_) => Err(End::Timeout("a complete login")),
        },
        () = preauth.cancelled.cancelled() => {
            ctx.metrics.preauth_evicted.inc();
            Err(End::Evicted)
        }
    };
    drop(preauth);
    let (conn, permit) = establish(link, peer, ctx, limit, greeted?).await?;
    Ok((Box::new(conn), permit))
}

/// The socket and the session machine on it: the whole of the driver's
/// I/O. Reads go in with the time; whatever the machine has queued goes out
/// on [`Link::flush`].
struct Link {
    session: Server,
    stream: TcpStream,
    /// The one read buffer of the connection, on the heap: an array in the
    /// read future made every connection's task 8 KiB bigger than the
    /// buffer it needs.
    buf: Vec<u8>,
    /// The longest a write may wait for the peer to read. A peer that
    /// heartbeats but never reads would otherwise park this task in a
    /// write forever, holding everything queued for it.
    write_stall: Duration,
}

/// Bytes per socket read. Agents send acks, heartbeats and commands of a
/// few hundred bytes; a bigger frame takes a few reads. The machine keeps
/// its own buffer of what it has not decoded, so a small read buffer also
/// keeps that one small, for every agent and every unauthenticated socket.
const READ_CHUNK: usize = 2 * 1024;

/// Queued output that is written before more is queued. A burst (a thousand
/// visitors arriving, fanned out to every agent of the site) written as one
/// buffer per agent made transient allocations of hundreds of KB each, which
/// the allocator then kept: 200 agents held 30 MB more at 3,000 idle
/// visitors. Writing every few KB keeps each agent's buffer near this size,
/// the boundary the codec this replaced flushed at.
const WRITE_CHUNK: usize = 8 * 1024;

impl Link {
    /// Write everything the machine has queued.
    async fn flush(&mut self) -> Result<(), End> {
        while let Some(bytes) = self.session.poll_transmit(now()) {
            match timeout(self.write_stall, self.stream.write_all(&bytes)).await {
                Ok(r) => r.map_err(FrameError::Io)?,
                Err(_) => return Err(End::WriteStalled(self.write_stall)),
            }
        }
        Ok(())
    }

    /// Write once enough is queued; see [`WRITE_CHUNK`].
    async fn flush_if_full(&mut self) -> Result<(), End> {
        if self.session.pending_transmit() >= WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    /// One read from the socket into the machine.
    async fn read(&mut self) -> Result<(), End> {
        let n = self
            .stream
            .read(&mut self.buf)
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            return Err(End::PeerClosed);
        }
        self.session.handle_bytes(now(), &self.buf[..n]);
        Ok(())
    }

    /// The machine ended the session: send what it queued for the peer (an
    /// Error naming the reason, where it can be read), then close.
    async fn fail(&mut self, e: SessionError) -> End {
        // The connection is about to close; a failed send changes nothing.
        let _ignored = self.flush().await;
        e.into()
    }

    /// Tell the peer why the server is closing, and close.
    async fn refuse(&mut self, code: ErrorCode, message: impl Into<String>, retry_ms: Option<u32>) {
        self.session.refuse(WireError {
            code,
            message: message.into(),
            retry_after_ms: retry_ms,
        });
        let _ignored = self.flush().await;
    }
}

/// Queries run one at a time per connection; a few more may wait. An agent
/// that sent 3,000 history queries without reading had every answer held
/// in memory at once (2.5 GB).
const MAX_QUEUED_QUERIES: usize = 4;

type QueryAnswer = oneshot::Receiver<(u32, QueryResult)>;

#[derive(Debug, Default)]
struct QueryState {
    /// A oneshot per query, not a channel per connection: an idle agent
    /// holds nothing here (a tokio `mpsc` allocates a block of 32 results,
    /// about 3.4 KB, when it is made).
    in_flight: Option<QueryAnswer>,
    queued: VecDeque<Query>,
}

type PendingCommands = VecDeque<oneshot::Receiver<Result<CommandResult, StoreError>>>;

struct Conn {
    link: Link,
    /// The peer's address, counted against the per-address upload cap.
    ip: std::net::IpAddr,
    query: QueryState,
    agent: AgentRow,
    device: holdfast_protocol::ids::MsgId,
    conn_id: u64,
    /// Pushes from the hub, its kick, and its stale mark (presence changes
    /// were dropped for a full queue: resend the list).
    rx: crate::pushq::Receiver<AgentPush>,
    /// The highest command seq acked on this connection.
    acked_up_to: Seq,
    /// The agent's typing signals forwarded from this connection, per chat.
    typing: crate::typing::Throttles,
    /// When to send this device a fresh resume ticket: half the life of
    /// the last one, so a connection that stays up for days still holds a
    /// valid ticket when the server restarts.
    renew_ticket_at: tokio::time::Instant,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The peer's part of opening a session: its hello and its Login frame.
/// This is all the pre-auth deadline and pool cover; what the server does
/// next (queueing for a password check, the resume) is not the peer's
/// delay to be cut for.
async fn greet(link: &mut Link, ctx: &Arc<Ctx>) -> Result<Login, End> {
    let hs_timeout = ctx.cfg.handshake_timeout;
    loop {
        match link.session.poll_event() {
            Ok(Some(ServerEvent::Login(login))) => return Ok(login),
            // The machine surfaces nothing else before a Login.
            Ok(Some(_)) => return Err(End::Protocol("a message before Login".into())),
            Ok(None) => {}
            Err(e) => return Err(link.fail(e).await),
        }
        link.flush().await?;
        match timeout(hs_timeout, link.read()).await {
            Ok(r) => r?,
            Err(_) => return Err(End::Timeout("the ClientHello or the Login")),
        }
    }
}

/// Check the Login and open the session: register, then resume.
async fn establish(
    mut link: Link,
    peer: SocketAddr,
    ctx: &Arc<Ctx>,
    limit: &Arc<Semaphore>,
    login: Login,
) -> Result<(Conn, OwnedSemaphorePermit), End> {
    let (row, proof) = match crate::login::authenticate(ctx, &login, peer.ip()).await {
        Ok(r) => r,
        Err(refusal) => {
            let ms = refusal
                .retry_after
                .map(|w| u32::try_from(w.as_millis()).unwrap_or(u32::MAX).max(1));
            link.refuse(refusal.code, refusal.message, ms).await;
            return Err(End::Refused(refusal.why));
        }
    };
    // A place among the logged-in sessions, taken only now.
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        let max = ctx.cfg.agent_max_connections;
        link.refuse(
            ErrorCode::Unavailable,
            format!("the server has its maximum of {max} agent sessions; try again later"),
            Some(5000),
        )
        .await;
        return Err(End::Full(max));
    };
    tracing::debug!(%peer, agent = row.id, ?proof, "logged in");
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
        link,
        ip: peer.ip(),
        agent: row,
        device,
        conn_id: reg.id,
        rx: reg.rx,
        query: QueryState::default(),
        acked_up_to: 0,
        typing: crate::typing::Throttles::default(),
        renew_ticket_at: tokio::time::Instant::now() + crate::login::ticket_renewal(ctx),
    };
    if let Err(e) = conn.resume(ctx, login.resume_after, commands_acked).await {
        ctx.hub.unregister_agent(agent_id, conn.conn_id);
        return Err(e);
    }
    Ok((conn, permit))
}

impl Conn {
    fn push_event(&mut self, seq: Seq, event: Event) -> Result<(), End> {
        Ok(self.link.session.push_event(seq, event)?)
    }

    async fn run(&mut self, ctx: &Arc<Ctx>) -> End {
        match self.run_inner(ctx).await {
            Ok(()) => End::PeerClosed,
            Err(e) => e,
        }
    }

    async fn run_inner(&mut self, ctx: &Arc<Ctx>) -> Result<(), End> {
        let actor = AgentActor {
            id: self.agent.id,
            site: self.agent.site,
            name: self.agent.display_name.clone(),
            epoch: self.agent.auth_epoch,
        };
        let mut pending = PendingCommands::new();
        loop {
            // Frames already read (a burst behind a Login, or more than one
            // per read) are answered before reading again.
            loop {
                let event = match self.link.session.poll_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => return Err(self.link.fail(e).await),
                };
                match event {
                    ServerEvent::Command(cmd) => {
                        if let Action::Send { conversation, .. } = &cmd.action {
                            self.typing.reset(*conversation);
                        }
                        // Read here, in command order, so the writer never
                        // waits on attachment storage.
                        let attachment = match &cmd.action {
                            Action::Send {
                                attachment: Some(aid),
                                ..
                            } => Some(agent_file(ctx, self.agent.site, aid).await?),
                            _ => None,
                        };
                        let (tx, rx) = oneshot::channel();
                        ctx.writer
                            .submit(Op::AgentCommand {
                                actor: actor.clone(),
                                device: self.device,
                                cmd,
                                attachment,
                                reply: tx,
                            })
                            .await?;
                        pending.push_back(rx);
                    }
                    // Checked against what was sent by the machine; the
                    // log keeps everything, so nothing to trim.
                    ServerEvent::Acked { .. } => {}
                    ServerEvent::Query(q) => self.on_query(ctx, q)?,
                    ServerEvent::SignOut => return self.sign_out(ctx, &mut pending).await,
                    // A signal: checked and forwarded off this loop, so
                    // its read never waits in front of a command or push.
                    ServerEvent::Typing {
                        conversation,
                        typing,
                    } => {
                        if self.typing.admit(conversation, Instant::now(), typing) {
                            let (ctx, agent, name) =
                                (ctx.clone(), self.agent.id, self.agent.display_name.clone());
                            tokio::spawn(async move {
                                crate::typing::from_agent(&ctx, agent, &name, conversation, typing)
                                    .await;
                            });
                        }
                    }
                    ServerEvent::Login(_) => {
                        return Err(End::Protocol("a second Login surfaced".into()));
                    }
                }
            }
            self.link.flush().await?;
            let deadline = self
                .link
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => {
                    self.link.session.going_away("server going away");
                    let _ignored = self.link.flush().await;
                    return Err(End::Shutdown);
                }
                res = async {
                    match pending.front_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if !pending.is_empty() => {
                    pending.pop_front();
                    self.on_results(ctx, res, &mut pending).await?;
                }
                push = self.rx.recv() => {
                    let push = match push {
                        Recv::Item(push) => push,
                        Recv::Kicked => {
                            self.link.refuse(ErrorCode::GoingAway, "outbound queue full; resume from your cursor", None).await;
                            return Err(End::Kicked);
                        }
                        Recv::Closed => return Err(End::Kicked),
                    };
                    self.handle_push(ctx, push).await?;
                    // Drain whatever else is ready, writing as it fills.
                    while let Some(push) = self.rx.try_recv() {
                        self.handle_push(ctx, push).await?;
                        self.link.flush_if_full().await?;
                    }
                    // Caught up after dropping presence changes: the whole
                    // list now supersedes them (read after the swap, so it
                    // is at least as new as anything dropped).
                    if self.rx.take_stale() {
                        self.send_visitors(ctx).await?;
                        self.send_team(ctx).await?;
                        // A groups or tags list may have been among what
                        // was dropped.
                        self.send_groups(ctx).await?;
                        self.send_site_tags(ctx).await?;
                    }
                }
                q = answer(&mut self.query.in_flight) => {
                    self.query.in_flight = None;
                    // A query task that panicked sent nothing; the next
                    // one still runs.
                    if let Ok((request, result)) = q {
                        self.link.session.query_result(request, result)?;
                    }
                    if let Some(next) = self.query.queued.pop_front() {
                        self.query.in_flight = Some(self.spawn_query(ctx, next));
                    }
                }
                read = self.link.stream.read(&mut self.link.buf) => {
                    match read.map_err(FrameError::Io)? {
                        0 => return Ok(()),
                        n => self.link.session.handle_bytes(now(), &self.link.buf[..n]),
                    }
                }
                () = sleep_until_opt(deadline) => {
                    if let Err(e) = self.link.session.handle_timeout(now()) {
                        return Err(self.link.fail(e).await);
                    }
                }
                () = sleep_until(self.renew_ticket_at) => {
                    let (ticket, expires_ms) =
                        crate::login::issue_ticket(ctx, &self.agent, self.device);
                    self.link.session.live(LiveEvent::Ticket { ticket, expires_ms })?;
                    self.renew_ticket_at =
                        tokio::time::Instant::now() + crate::login::ticket_renewal(ctx);
                }
            }
        }
    }

    /// Command results from the writer, in order: the first one, and any
    /// others already done, go out as one cumulative ack.
    async fn on_results(
        &mut self,
        ctx: &Arc<Ctx>,
        first: Result<Result<CommandResult, StoreError>, oneshot::error::RecvError>,
        pending: &mut PendingCommands,
    ) -> Result<(), End> {
        let mut results = Vec::new();
        let mut first = Some(first);
        loop {
            let r = match first.take() {
                Some(r) => r,
                None => match pending.front_mut().map(|rx| rx.try_recv()) {
                    Some(Ok(r)) => {
                        pending.pop_front();
                        Ok(r)
                    }
                    _ => break,
                },
            };
            match r {
                Ok(Ok(result)) => results.push(result),
                Ok(Err(e)) => {
                    self.send_ack(ctx, results)?;
                    return Err(self.store_refused(e).await);
                }
                Err(_) => return Err(End::Store(StoreError::WriterGone)),
            }
        }
        self.send_ack(ctx, results)
    }

    fn send_ack(&mut self, ctx: &Arc<Ctx>, results: Vec<CommandResult>) -> Result<(), End> {
        if results.is_empty() {
            return Ok(());
        }
        self.acked_up_to = self
            .acked_up_to
            .max(results.iter().map(|r| r.seq).max().unwrap_or(0));
        ctx.metrics.messages_in.inc_by(results.len() as u64);
        Ok(self.link.session.ack(AckBatch {
            up_to: self.acked_up_to,
            results,
        })?)
    }

    /// A command the store would not commit ends the connection with the
    /// reason; the client resends it after reconnecting.
    async fn store_refused(&mut self, e: StoreError) -> End {
        match e {
            StoreError::Revoked { code, message } => {
                self.link.refuse(code, message.clone(), None).await;
                End::Revoked(message)
            }
            e => {
                self.link
                    .refuse(
                        ErrorCode::Unavailable,
                        format!("cannot commit right now: {e}"),
                        Some(1000),
                    )
                    .await;
                End::Store(e)
            }
        }
    }

    fn on_query(&mut self, ctx: &Arc<Ctx>, q: Query) -> Result<(), End> {
        if self.query.in_flight.is_none() {
            self.query.in_flight = Some(self.spawn_query(ctx, q));
        } else if self.query.queued.len() < MAX_QUEUED_QUERIES {
            self.query.queued.push_back(q);
        } else {
            ctx.metrics.queries_refused.inc();
            let request = q.request();
            let refused = QueryResult::Refused(WireError {
                code: ErrorCode::RateLimited,
                message: format!(
                    "{MAX_QUEUED_QUERIES} queries are already waiting; send the next when one is answered"
                ),
                retry_after_ms: Some(1000),
            });
            self.link.session.query_result(request, refused)?;
        }
        Ok(())
    }

    async fn handle_push(&mut self, ctx: &Arc<Ctx>, push: AgentPush) -> Result<(), End> {
        match push {
            AgentPush::Event(seq, event) => {
                let sent = self.link.session.last_sent();
                if seq <= sent {
                    return Ok(());
                }
                if seq > sent + 1 {
                    // Committed between our replay read and registration.
                    self.catch_up(ctx, seq - 1).await?;
                }
                if seq == self.link.session.last_sent() + 1 {
                    ctx.metrics.messages_out.inc();
                    self.push_event(seq, (*event).clone())?;
                }
                Ok(())
            }
            AgentPush::CatchUp(until) => {
                if until > self.link.session.last_sent() {
                    ctx.metrics.bus.catch_up_reads.inc();
                    self.catch_up(ctx, until).await?;
                }
                Ok(())
            }
            AgentPush::Live(ev) => Ok(self.link.session.live_encoded(ev.encoded())?),
            AgentPush::Canned => self.send_canned(ctx).await,
            AgentPush::InviteRules => self.send_invite_rules(ctx).await,
            AgentPush::Revoke(_, _, epoch) if self.agent.auth_epoch >= epoch => Ok(()),
            AgentPush::Revoke(code, message, _) => {
                self.link.refuse(code, message.to_string(), None).await;
                Err(End::Revoked(message.to_string()))
            }
        }
    }

    /// `ServerEvent::SignOut`: ack what came before it, hand the agent's
    /// chats back (the writer keeps them if another device is still
    /// connected), say so, and end.
    async fn sign_out(&mut self, ctx: &Arc<Ctx>, pending: &mut PendingCommands) -> Result<(), End> {
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
        self.send_ack(ctx, results)?;
        self.link.flush().await?;
        // A command before the sign-out was refused: say why, as for any
        // other command, and end without signing out.
        if let Some(e) = failed {
            return Err(self.store_refused(e).await);
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
        self.link.session.signed_out()?;
        self.link.flush().await?;
        Err(End::SignedOut)
    }

    fn spawn_query(&self, ctx: &Arc<Ctx>, q: Query) -> QueryAnswer {
        let (tx, rx) = oneshot::channel();
        let site = self.agent.site;
        let reads = ctx.reads.clone();
        let attach = ctx.attach.clone();
        let ctx = ctx.clone();
        let me = attach::Asker {
            agent: self.agent.id,
            site,
            ip: self.ip,
        };
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
                            QueryResult::Refused(WireError {
                                code: ErrorCode::Unavailable,
                                message: e.to_string(),
                                retry_after_ms: Some(1000),
                            })
                        });
                    let _ignored = tx.send((request, result));
                }
                Query::AttachmentLink { request, id } => {
                    let cutoff = crate::attach::files_cutoff(&ctx.cfg, crate::store::now_ms());
                    let result = attachment_link(&attach, &reads, site, &id, cutoff).await;
                    let _ignored = tx.send((request, result));
                }
                Query::UploadCreate {
                    request,
                    conversation,
                    name,
                    length,
                    mime_hint,
                } => {
                    let result =
                        attach::create(&ctx, &me, conversation, &name, length, &mime_hint).await;
                    let _ignored = tx.send((request, result));
                }
                Query::UploadWrite {
                    request,
                    id,
                    offset,
                    bytes,
                } => {
                    let result = attach::write(&ctx, &me, &id, offset, bytes).await;
                    let _ignored = tx.send((request, result));
                }
                Query::UploadOffset { request, id } => {
                    let result = attach::offset(&ctx, &me, &id).await;
                    let _ignored = tx.send((request, result));
                }
                Query::AttachmentBytes {
                    request,
                    id,
                    thumb,
                    offset,
                    max,
                } => {
                    let result = attach::bytes(&ctx, &me, &id, thumb, offset, max).await;
                    let _ignored = tx.send((request, result));
                }
                Query::InviteRules { request } => {
                    let agent = me.agent;
                    let result = reads
                        .run(move |c| crate::invite::admin::for_admin_agent(c, site, agent))
                        .await;
                    let result = match result {
                        Ok(Some(list)) => QueryResult::InviteRules(list),
                        Ok(None) => QueryResult::Refused(WireError {
                            code: ErrorCode::Forbidden,
                            message: "only an admin may read the site's invitation rules".into(),
                            retry_after_ms: None,
                        }),
                        Err(e) => QueryResult::Refused(WireError {
                            code: ErrorCode::Unavailable,
                            message: e.to_string(),
                            retry_after_ms: Some(1000),
                        }),
                    };
                    let _ignored = tx.send((request, result));
                }
            }
        });
        rx
    }
}

/// The complete file `aid` of this agent's site, as a message carries it,
/// or why it may not be sent (the writer then records the refusal). A
/// storage failure ends the connection instead: the command stays in the
/// app's outbox and is sent again, rather than being refused for good.
async fn agent_file(ctx: &Ctx, site: u64, aid: &str) -> Result<FileCheck, End> {
    let io = |e: std::io::Error| End::Store(StoreError::Unavailable(format!("attachments: {e}")));
    Ok(match ctx.attach.meta(aid).await.map_err(io)? {
        Some(m) if m.site == site => Ok(VisitorFile {
            info: AttachmentInfo {
                id: m.id.clone(),
                name: m.name.clone(),
                mime: m.mime.clone(),
                size: m.size,
                image: m.thumb.is_some(),
            },
            conversation: m.conversation,
        }),
        _ => match ctx.attach.load(aid).await.map_err(io)? {
            Some(u) if u.site == site => Err((
                ErrorCode::Conflict,
                format!(
                    "the upload of {:?} is not complete yet ({} of {} bytes)",
                    u.name, u.offset, u.length
                ),
            )),
            _ => Err((
                ErrorCode::NotFound,
                "no such file in this conversation".into(),
            )),
        },
    })
}

/// A signed link for an attachment of this agent's site whose chat still
/// keeps it. Any other id, one past retention, an
/// unfinished upload or another site's file all answer the same `NotFound`,
/// so the answer tells nothing about what exists elsewhere.
async fn attachment_link(
    attach: &crate::attach::Attachments,
    reads: &crate::store::ReadPool,
    site: u64,
    id: &str,
    cutoff_ms: i64,
) -> QueryResult {
    match attach.live_meta(reads, id, cutoff_ms).await {
        Ok(Some(meta)) if meta.site == site => {
            let links = attach.links(&meta, crate::store::now_ms());
            QueryResult::AttachmentLink {
                url: links.url,
                thumb_url: links.thumb_url,
                expires_ms: links.expires_ms,
            }
        }
        Ok(_) => QueryResult::Refused(WireError {
            code: ErrorCode::NotFound,
            message: format!("no attachment {id:?} on this site"),
            retry_after_ms: None,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "reading attachment metadata for a link");
            QueryResult::Refused(WireError {
                code: ErrorCode::Unavailable,
                message: "attachment storage is unavailable; try again".into(),
                retry_after_ms: Some(1000),
            })
        }
    }
}

/// Sleep until `t`, or forever.
/// The answer of the query in flight; never, while none is.
async fn answer(
    in_flight: &mut Option<QueryAnswer>,
) -> Result<(u32, QueryResult), oneshot::error::RecvError> {
    match in_flight {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
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
