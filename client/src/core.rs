//! The client core: one tokio task that owns the connection, the store and
//! the protocol's client session machine
//! ([`holdfast_protocol::session::client`]), and drives it: bytes and time
//! in, bytes out, and the machine's events applied to the store and told to
//! the UI. The machine owns the protocol state (handshake, sealing, outbox
//! numbering, cursor, acks, liveness, queries); this file owns persistence,
//! the pin and trust prompt, backoff and the [`Update`] stream.
//!
//! ```text
//! Disconnected → Connecting → Handshaking → [AwaitingTrust] → LoggingIn → Live
//!      ↑                                                                   │
//!      └──────────── BackingOff(retry_at) ←── any failure ─────────────────┘
//!                    Stopped(reason)     ←── key mismatch, refused login, shutdown
//! ```
//!
//! Each pass through [`Core::session`] is one connection; it ends in an
//! [`End`] that says what comes next. Requests from the UI are served in every
//! state, so an action typed while offline is in the durable outbox before the
//! call returns, whatever the connection is doing.
//!
//! The store is used synchronously from this task. It is the only writer and
//! each write is one small transaction (well under a millisecond with WAL on
//! this class of machine), so handing it to a blocking thread would add a
//! hop per event without adding throughput.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    Action, ClientMsg, Command, CommandResult, Event, LiveEvent, Login, LoginOk, MessageId,
    Outcome, Query, Seq, Snapshot, VisitorInfo, WireError,
};
use holdfast_protocol::backoff::Backoff;
use holdfast_protocol::delivery::Outbox;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::{Fingerprint, HandshakeError, PinCheck, check_pin};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::seal::sealed_len;
use holdfast_protocol::session::SessionError;
use holdfast_protocol::session::client::{Client, ClientConfig as SessionConfig, ClientEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::error::{ClientError, StoreError};
use crate::store::{self, AckedCommand, EventEffect, Session, Store, StoredMessage};
use crate::update::{ConnState, ConnectionStatus, SignOutResult, StopReason, Update};

/// Visitor changes are cached for a quick start, not for correctness (the
/// server resends the list after every login), so they are written at most
/// this often instead of once per page view.
const VISITOR_FLUSH: Duration = Duration::from_secs(2);
/// How often to retry telling a lagging UI to resync.
const RESYNC_RETRY: Duration = Duration::from_millis(50);
/// How long a sign-out waits for the outbox to drain and the server to
/// confirm before the app goes on without it.
const SIGN_OUT_WAIT: Duration = Duration::from_secs(5);

/// An unacked command as the session machine's outbox holds it.
pub(crate) use holdfast_protocol::session::client::Queued as Pending;

/// A request from a [`crate::ClientHandle`].
#[derive(Debug)]
pub(crate) enum Request {
    Action {
        action: Action,
        reply: oneshot::Sender<Result<MsgId, ClientError>>,
    },
    History {
        visitor: String,
        before: Option<MessageId>,
        limit: u32,
        reply: oneshot::Sender<u32>,
    },
    ReconnectNow,
    Trust(bool),
    SetPassword(Zeroizing<String>),
    MarkRead {
        conversation: u64,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    SignOut {
        reply: oneshot::Sender<SignOutResult>,
    },
}

/// How a connection (or a wait) ended, and so what comes next.
enum End {
    /// Stop the task; answer the shutdown request, if there was one.
    Shutdown(Option<oneshot::Sender<()>>),
    /// Connect again at once (user asked, or a decision was just made).
    RetryNow,
    /// Connect again after `after`, or after the backoff's next delay.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Do not connect again until the user acts.
    Stop(StopReason),
}

fn retry(reason: impl Into<String>) -> End {
    End::Retry {
        reason: reason.into(),
        after: None,
    }
}

/// What a request asks of the state the core is in.
enum Control {
    Continue,
    Reconnect,
    Trust(bool),
    Shutdown(oneshot::Sender<()>),
    SignOut(oneshot::Sender<SignOutResult>),
}

/// A sign-out waiting for the outbox to drain and the server's answer.
struct SigningOut {
    reply: oneshot::Sender<SignOutResult>,
    deadline: Instant,
}

/// Sends updates without ever waiting on the UI (see [`crate::update`]).
struct Emitter {
    tx: mpsc::Sender<Update>,
    lagged: bool,
}

impl Emitter {
    /// Returns true when this call is the one that found the UI lagging.
    fn emit(&mut self, update: Update) -> bool {
        if self.lagged && !self.retry_resync() {
            return false;
        }
        match self.tx.try_send(update) {
            Ok(()) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("the UI is not keeping up; dropping updates until it resyncs");
                self.lagged = true;
                true
            }
            // Nobody listens any more; the handles decide when to stop.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Try to deliver the pending Resync; true when none is pending.
    fn retry_resync(&mut self) -> bool {
        if !self.lagged {
            return true;
        }
        match self.tx.try_send(Update::Resync) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lagged = false;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }
}

/// The socket of one connection. The session machine stays in [`Core`]; a
/// read borrows only this, so requests are served while it waits.
struct Link {
    stream: TcpStream,
    io_timeout: Duration,
    buf: Vec<u8>,
}

/// Bytes per socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Why waiting for the machine's next event failed, before the phase names
/// it for the person.
enum Wait {
    TimedOut,
    Closed,
    Io(std::io::Error),
    Session(SessionError),
    End(End),
}

fn tokio_instant(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}

/// Sleep until `t`, or forever.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio_instant(t)).await,
        None => std::future::pending().await,
    }
}

pub(crate) struct Core {
    cfg: ClientConfig,
    store: Store,
    requests: mpsc::Receiver<Request>,
    updates: Emitter,
    status: watch::Sender<ConnectionStatus>,
    state: ConnState,
    /// The protocol state: outbox, cursor, queries, the connection's keys.
    machine: Client,
    backoff: Backoff,
    next_request: u32,
    visitors: BTreeMap<String, VisitorInfo>,
    dirty_visitors: BTreeSet<String>,
    visitors_dirty_since: Option<Instant>,
    signing_out: Option<SigningOut>,
    /// The server's resume ticket from the last login: the next reconnect
    /// needs no password check. Memory only, like the password.
    ticket: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state)
            .field("unsent", &self.machine.unacked())
            .field("cursor", &self.machine.cursor())
            .finish_non_exhaustive()
    }
}

/// Everything [`Core::new`] needs, gathered by [`crate::start`].
pub(crate) struct CoreParts {
    pub(crate) cfg: ClientConfig,
    pub(crate) store: Store,
    pub(crate) outbox: Outbox<Pending>,
    pub(crate) cursor: Option<Seq>,
    pub(crate) requests: mpsc::Receiver<Request>,
    pub(crate) updates: mpsc::Sender<Update>,
    pub(crate) status: watch::Sender<ConnectionStatus>,
}

impl Core {
    pub(crate) fn new(p: CoreParts) -> Self {
        let visitors = match p.store.visitors() {
            Ok(v) => v.into_iter().map(|v| (v.id.clone(), v)).collect(),
            Err(e) => {
                tracing::warn!("cannot read cached visitors: {e}");
                BTreeMap::new()
            }
        };
        let machine = Client::new(
            SessionConfig {
                liveness: p.cfg.liveness,
                ack_policy: p.cfg.ack_policy,
                max_frame: p.cfg.max_frame,
            },
            p.cursor,
            p.outbox,
            Instant::now(),
            rand::random(),
        );
        Self {
            machine,
            backoff: Backoff::new(p.cfg.backoff, rand::random()),
            cfg: p.cfg,
            store: p.store,
            requests: p.requests,
            updates: Emitter {
                tx: p.updates,
                lagged: false,
            },
            status: p.status,
            state: ConnState::Disconnected,
            next_request: 1,
            visitors,
            dirty_visitors: BTreeSet::new(),
            visitors_dirty_since: None,
            signing_out: None,
            ticket: None,
        }
    }

    // ------------------------------------------------------------ top level

    pub(crate) async fn run(mut self) {
        let mut end = self.session().await;
        loop {
            end = match end {
                End::Shutdown(reply) => {
                    self.finish(reply);
                    return;
                }
                End::RetryNow => self.session().await,
                End::Retry { reason, after } => {
                    let delay = after.unwrap_or_else(|| self.backoff.next_delay());
                    let retry_at = Instant::now() + delay;
                    tracing::info!(%reason, delay_ms = delay.as_millis(), "reconnecting later");
                    self.set_state(ConnState::BackingOff { retry_at, reason });
                    match self.idle(Some(retry_at)).await {
                        Some(end) => end,
                        None => self.session().await,
                    }
                }
                End::Stop(reason) => {
                    tracing::warn!(%reason, "stopped until the user acts");
                    self.set_state(ConnState::Stopped { reason });
                    match self.idle(None).await {
                        Some(end) => end,
                        None => self.session().await,
                    }
                }
            };
        }
    }

    fn finish(mut self, reply: Option<oneshot::Sender<()>>) {
        self.flush_visitors();
        self.set_state(ConnState::Stopped {
            reason: StopReason::Shutdown,
        });
        // Close the store before answering, so the caller may reopen or
        // delete it as soon as shutdown() returns.
        let Core { store, .. } = self;
        drop(store);
        if let Some(reply) = reply {
            let _ignored = reply.send(());
        }
    }

    /// Wait while backing off or stopped. `None` means: connect now.
    async fn idle(&mut self, until: Option<Instant>) -> Option<End> {
        loop {
            if until.is_some_and(|t| Instant::now() >= t) {
                return None;
            }
            let wake = [until, self.housekeeping_due()].into_iter().flatten().min();
            tokio::select! {
                req = self.requests.recv() => {
                    let Some(req) = req else { return Some(End::Shutdown(None)) };
                    match self.on_request(req) {
                        Control::Continue => {}
                        Control::Reconnect => return None,
                        Control::Shutdown(reply) => return Some(End::Shutdown(Some(reply))),
                        Control::SignOut(reply) => {
                            let _ignored = reply.send(SignOutResult::Offline);
                        }
                        Control::Trust(yes) => {
                            if yes && let Some(fp) = self.trust_target() {
                                if let Err(e) = self.pin(&fp) {
                                    return Some(self.store_failed(e));
                                }
                                return None;
                            }
                        }
                    }
                }
                () = sleep_until_opt(wake) => self.housekeeping(),
            }
        }
    }

    /// The key a `trust_fingerprint(true)` accepts in the current state.
    fn trust_target(&self) -> Option<Fingerprint> {
        match &self.state {
            ConnState::Stopped {
                reason: StopReason::FingerprintMismatch { presented, .. },
            } => Some(*presented),
            ConnState::Stopped {
                reason: StopReason::FingerprintRefused { fingerprint },
            } => Some(*fingerprint),
            _ => None,
        }
    }

    /// Await `fut` while serving requests. `Err` ends the attempt.
    async fn wait<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, End> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                req = self.requests.recv() => {
                    let Some(req) = req else { return Err(End::Shutdown(None)) };
                    match self.on_request(req) {
                        // A trust answer outside the prompt has nothing to apply to.
                        Control::Continue | Control::Trust(_) => {}
                        Control::Reconnect => return Err(End::RetryNow),
                        Control::Shutdown(reply) => return Err(End::Shutdown(Some(reply))),
                        Control::SignOut(reply) => {
                            let _ignored = reply.send(SignOutResult::Offline);
                        }
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ one connection

    async fn session(&mut self) -> End {
        let end = match self.establish().await {
            Ok(link) => self.live(link).await,
            Err(end) => end,
        };
        // Keys and buffers of this connection go; everything unacked is
        // sent again after the next login.
        self.machine.disconnect();
        // The link is gone before the server confirmed: the grace period
        // takes over, and the app need not wait.
        if let Some(s) = self.signing_out.take() {
            let _ignored = s.reply.send(SignOutResult::Offline);
        }
        end
    }

    /// Write whatever the machine has queued. Writes are bounded by the
    /// dead-peer time too: a peer that stops reading fills our socket
    /// buffer, and an unbounded write would hang the task past any
    /// liveness check.
    async fn write_out(&mut self, link: &mut Link) -> Result<(), String> {
        while let Some(bytes) = self.machine.poll_transmit(Instant::now()) {
            match tokio::time::timeout(link.io_timeout, link.stream.write_all(&bytes)).await {
                Err(_) => {
                    return Err(format!(
                        "the server took no data for {} ms",
                        link.io_timeout.as_millis()
                    ));
                }
                Ok(Err(e)) => return Err(format!("connection lost while sending: {e}")),
                Ok(Ok(())) => {}
            }
            // One batch per turn while live, so a long outbox replay
            // does not starve reading.
            if self.machine.is_live() {
                break;
            }
        }
        Ok(())
    }

    /// The machine's next event while connecting, reading as needed and
    /// serving requests meanwhile.
    async fn next_event(&mut self, link: &mut Link) -> Result<ClientEvent, Wait> {
        let deadline = tokio::time::Instant::now() + link.io_timeout;
        loop {
            match self.machine.poll_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(Wait::Session(e)),
            }
            let read = self
                .wait(tokio::time::timeout_at(
                    deadline,
                    link.stream.read(&mut link.buf),
                ))
                .await
                .map_err(Wait::End)?;
            match read {
                Err(_) => return Err(Wait::TimedOut),
                Ok(Err(e)) => return Err(Wait::Io(e)),
                Ok(Ok(0)) => return Err(Wait::Closed),
                Ok(Ok(n)) => self.machine.handle_bytes(Instant::now(), &link.buf[..n]),
            }
        }
    }

    /// Connect, handshake, check the pin and log in.
    async fn establish(&mut self) -> Result<Link, End> {
        let server = self.cfg.server.clone();
        let io_timeout = self.cfg.liveness.dead_after;

        self.set_state(ConnState::Connecting);
        let stream = match self
            .wait(tokio::time::timeout(
                io_timeout,
                TcpStream::connect(server.clone()),
            ))
            .await?
        {
            Err(_) => return Err(retry(format!("timed out connecting to {server}"))),
            Ok(Err(e)) => return Err(retry(format!("cannot reach {server}: {e}"))),
            Ok(Ok(s)) => s,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let mut link = Link {
            stream,
            io_timeout,
            buf: vec![0; READ_CHUNK],
        };

        self.set_state(ConnState::Handshaking);
        self.machine.connect(Instant::now());
        self.write_out(&mut link)
            .await
            .map_err(|e| retry(format!("handshake with {server} failed: {e}")))?;
        let key = match self.next_event(&mut link).await {
            Ok(ClientEvent::ServerKey(key)) => key,
            Ok(_) => return Err(retry(format!("handshake with {server} failed"))),
            Err(Wait::End(end)) => return Err(end),
            Err(Wait::TimedOut) => {
                return Err(retry(format!("{server} did not answer the handshake")));
            }
            Err(Wait::Closed) => {
                return Err(retry(format!(
                    "{server} closed the connection during the handshake"
                )));
            }
            Err(Wait::Io(e)) => return Err(retry(format!("handshake with {server} failed: {e}"))),
            Err(Wait::Session(SessionError::Handshake(
                e @ HandshakeError::VersionMismatch { .. },
            ))) => {
                return Err(self.login_refused(ErrorCode::VersionMismatch, e.to_string()));
            }
            Err(Wait::Session(e)) => {
                return Err(retry(format!("handshake with {server} failed: {e}")));
            }
        };

        self.check_server_key(&server, &key).await?;

        self.set_state(ConnState::LoggingIn);
        let login = Login {
            username: self.cfg.username.clone(),
            password: self.cfg.password.as_str().to_owned(),
            device_id: self.store.device_id(),
            // The machine fills in its cursor.
            resume_after: None,
            ticket: self.ticket.as_ref().map(|t| t.to_vec()),
            client: format!(
                "holdfast-agent {} ({})",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS
            ),
        };
        if let Err(e) = self.machine.login(Instant::now(), login) {
            return Err(retry(format!("cannot seal the login: {e}")));
        }
        self.write_out(&mut link).await.map_err(retry)?;
        match self.next_event(&mut link).await {
            Ok(ClientEvent::LoggedIn(ok)) => {
                self.on_login_ok(ok)?;
                Ok(link)
            }
            Ok(ClientEvent::LoginRefused(e)) => Err(self.login_error(e)),
            Ok(ClientEvent::GoingAway { reason }) => {
                Err(retry(format!("the server is going away: {reason}")))
            }
            Ok(_) => Err(retry("protocol error: expected LoginOk")),
            Err(Wait::End(end)) => Err(end),
            Err(Wait::TimedOut) => Err(retry(format!("{server} did not answer the login"))),
            Err(Wait::Closed) => Err(retry(format!(
                "{server} closed the connection during login"
            ))),
            Err(Wait::Io(e)) => Err(retry(format!("connection lost during login: {e}"))),
            Err(Wait::Session(e)) => Err(retry(format!("protocol error: {e}"))),
        }
    }

    /// Pinning happens before anything sealed is sent: the first sealed
    /// frame carries the password.
    async fn check_server_key(&mut self, server: &str, key: &[u8; 32]) -> Result<(), End> {
        let stored = self
            .store
            .pinned_fingerprint(server)
            .map_err(|e| self.store_failed(e))?;
        let pinned = stored.or(self.cfg.expected_fingerprint);
        match check_pin(pinned.as_ref(), key) {
            PinCheck::Match => {
                if stored.is_none()
                    && let Some(fp) = pinned
                {
                    self.pin(&fp).map_err(|e| self.store_failed(e))?;
                }
                Ok(())
            }
            PinCheck::FirstUse(fingerprint) => {
                if self.cfg.trust_on_first_use {
                    tracing::info!(%fingerprint, %server, "pinning the server key on first use");
                    return self.pin(&fingerprint).map_err(|e| self.store_failed(e));
                }
                self.await_trust(server, fingerprint).await
            }
            PinCheck::Mismatch { pinned, presented } => {
                tracing::error!(%server, %pinned, %presented, "server key does not match the pin");
                self.emit(Update::FingerprintMismatch {
                    server: server.to_owned(),
                    pinned,
                    presented,
                });
                Err(End::Stop(StopReason::FingerprintMismatch {
                    pinned,
                    presented,
                }))
            }
        }
    }

    async fn await_trust(&mut self, server: &str, fingerprint: Fingerprint) -> Result<(), End> {
        self.emit(Update::FingerprintUnknown {
            server: server.to_owned(),
            fingerprint,
        });
        self.set_state(ConnState::AwaitingTrust { fingerprint });
        loop {
            let Some(req) = self.requests.recv().await else {
                return Err(End::Shutdown(None));
            };
            match self.on_request(req) {
                Control::Continue => {}
                Control::Trust(true) => {
                    return self.pin(&fingerprint).map_err(|e| self.store_failed(e));
                }
                Control::Trust(false) => {
                    return Err(End::Stop(StopReason::FingerprintRefused { fingerprint }));
                }
                Control::Reconnect => return Err(End::RetryNow),
                Control::Shutdown(reply) => return Err(End::Shutdown(Some(reply))),
                Control::SignOut(reply) => {
                    let _ignored = reply.send(SignOutResult::Offline);
                }
            }
        }
    }

    fn pin(&mut self, fp: &Fingerprint) -> Result<(), StoreError> {
        self.store.pin_fingerprint(&self.cfg.server, fp)
    }

    fn login_error(&mut self, e: WireError) -> End {
        let retry_after = e
            .retry_after_ms
            .map(|ms| Duration::from_millis(u64::from(ms)));
        match e.code {
            // The same Login would be refused the same way: too big for the
            // pre-login frame limit, or one the server cannot read. Retrying
            // would only loop; the person must change what they typed.
            ErrorCode::Unauthorized
            | ErrorCode::Disabled
            | ErrorCode::Revoked
            | ErrorCode::VersionMismatch
            | ErrorCode::TooLarge
            | ErrorCode::BadRequest => self.login_refused(e.code, e.message),
            code => {
                self.emit(Update::LoginFailed {
                    code,
                    message: e.message.clone(),
                    retry_after,
                });
                let reason = format!("login failed ({code}): {}", e.message);
                match code {
                    ErrorCode::Throttled | ErrorCode::RateLimited => End::Retry {
                        reason,
                        after: Some(retry_after.unwrap_or_else(|| self.backoff.next_delay())),
                    },
                    _ => retry(reason),
                }
            }
        }
    }

    fn login_refused(&mut self, code: ErrorCode, message: String) -> End {
        self.emit(Update::LoginFailed {
            code,
            message: message.clone(),
            retry_after: None,
        });
        End::Stop(StopReason::LoginRejected { code, message })
    }

    fn on_login_ok(&mut self, ok: LoginOk) -> Result<(), End> {
        self.backoff.reset();
        self.ticket = (!ok.ticket.is_empty()).then(|| Zeroizing::new(ok.ticket.clone()));
        let session = Session {
            agent: ok.agent,
            display_name: ok.display_name.clone(),
            site: ok.site,
        };
        self.store
            .set_session(&session)
            .map_err(|e| self.store_failed(e))?;
        let acked = ok.commands_acked;
        if acked >= self.machine.next_seq() {
            // The server has committed seqs this store never numbered (it was
            // restored from an older copy). Renumber what is left after
            // them; the ids keep resends idempotent.
            tracing::warn!(
                acked,
                next = self.machine.next_seq(),
                "renumbering the outbox"
            );
            let entries = self
                .store
                .rebase_outbox(acked)
                .map_err(|e| self.store_failed(e))?;
            self.machine.restore_outbox(Outbox::restore(
                acked,
                entries.into_iter().map(|e| {
                    (
                        e.seq,
                        Pending {
                            id: e.id,
                            action: e.action,
                        },
                    )
                }),
            ));
        } else if acked > self.machine.acked()
            && let Some(end) = self.on_ack(acked, &[])
        {
            return Err(end);
        }
        self.emit(Update::LoggedIn {
            agent: ok.agent,
            display_name: ok.display_name,
            site: ok.site,
        });
        tracing::info!(server = %self.cfg.server, unsent = self.machine.unacked(), "logged in");
        self.set_state(ConnState::Live);
        Ok(())
    }

    async fn live(&mut self, mut link: Link) -> End {
        loop {
            loop {
                let ev = match self.machine.poll_event() {
                    Ok(Some(ev)) => ev,
                    Ok(None) => break,
                    Err(e) => return retry(session_failure(e)),
                };
                if let Some(end) = self.on_client_event(ev) {
                    return end;
                }
            }
            // The server has not confirmed the sign-out in time: the app
            // goes on without it.
            if let Some(s) = self.signing_out.take_if(|s| Instant::now() >= s.deadline) {
                let _ignored = s.reply.send(SignOutResult::TimedOut);
            }
            if let Err(reason) = self.write_out(&mut link).await {
                return retry(reason);
            }
            let deadline = [
                self.machine.poll_timeout(),
                self.housekeeping_due(),
                self.signing_out.as_ref().map(|s| s.deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                read = link.stream.read(&mut link.buf) => match read {
                    Ok(0) => return retry("the server closed the connection"),
                    Err(e) => return retry(format!("connection lost: {e}")),
                    Ok(n) => self.machine.handle_bytes(Instant::now(), &link.buf[..n]),
                },
                req = self.requests.recv() => {
                    let Some(req) = req else { return End::Shutdown(None) };
                    match self.on_request(req) {
                        Control::Continue | Control::Trust(_) => {}
                        Control::Reconnect => return End::RetryNow,
                        Control::Shutdown(reply) => return End::Shutdown(Some(reply)),
                        Control::SignOut(reply) => {
                            // Sent by the machine once everything before it
                            // is acked, so the chats it hands back carry
                            // every reply the agent wrote.
                            if self.machine.sign_out().is_ok() {
                                self.signing_out = Some(SigningOut {
                                    reply,
                                    deadline: Instant::now() + SIGN_OUT_WAIT,
                                });
                            } else {
                                let _ignored = reply.send(SignOutResult::Offline);
                            }
                        }
                    }
                }
                () = sleep_until_opt(deadline) => {
                    if let Err(e) = self.machine.handle_timeout(Instant::now()) {
                        return retry(session_failure(e));
                    }
                    self.housekeeping();
                }
            }
        }
    }

    // ------------------------------------------------------------ server messages

    fn on_client_event(&mut self, ev: ClientEvent) -> Option<End> {
        match ev {
            ClientEvent::Acked(batch) => self.on_ack(batch.up_to, &batch.results),
            ClientEvent::Event { seq, event } => self.on_event(seq, event),
            ClientEvent::Snapshot(s) => self.on_snapshot(s),
            ClientEvent::Live(ev) => {
                self.on_live(ev);
                None
            }
            ClientEvent::Error(e) => self.on_error(e),
            ClientEvent::GoingAway { reason } => {
                Some(retry(format!("the server is going away: {reason}")))
            }
            ClientEvent::QueryResult { request, result } => {
                self.emit(Update::History { request, result });
                None
            }
            ClientEvent::ServerKey(_) | ClientEvent::LoggedIn(_) | ClientEvent::LoginRefused(_) => {
                Some(retry("protocol error: a login answer after login"))
            }
            ClientEvent::SignedOut => {
                // Forgotten before the caller hears "released", so an app
                // that exits at once leaves nothing of the workspace behind.
                if let Err(e) = self.store.forget_workspace() {
                    tracing::warn!("signed out, but the cached workspace stays: {e}");
                }
                if let Some(s) = self.signing_out.take() {
                    let _ignored = s.reply.send(SignOutResult::Released);
                }
                Some(End::Stop(StopReason::SignedOut))
            }
        }
    }

    /// Disk first, memory second: if the store fails, the outbox rows stay
    /// and are resent later, which the server answers idempotently. (The
    /// machine has checked the ack against what it numbered.)
    fn on_ack(&mut self, up_to: Seq, results: &[CommandResult]) -> Option<End> {
        if up_to <= self.machine.acked() {
            return None;
        }
        let acked = match self.store.apply_ack(up_to, results) {
            Ok(a) => a,
            Err(e) => return Some(self.store_failed(e)),
        };
        if let Err(e) = self.machine.commands_acked(up_to) {
            return Some(retry(session_failure(e)));
        }
        for a in acked {
            self.emit_acked(a);
        }
        self.publish();
        None
    }

    fn emit_acked(&mut self, a: AckedCommand) {
        match a.outcome {
            Some(Outcome::Rejected { code, message }) => {
                tracing::warn!(id = %a.id, %code, %message, "command rejected");
                self.emit(Update::CommandRejected {
                    id: a.id,
                    code,
                    message,
                });
            }
            Some(Outcome::Done {
                conversation,
                message,
                ..
            }) => self.emit(Update::CommandDone {
                id: a.id,
                conversation,
                message,
            }),
            None => self.emit(Update::CommandDone {
                id: a.id,
                conversation: None,
                message: None,
            }),
        }
        if let Some(u) = ack_update(a.message.as_ref()) {
            self.emit(u);
        }
    }

    /// The machine has checked the order; storing it is ours, and only
    /// then is it acked.
    fn on_event(&mut self, seq: Seq, event: Event) -> Option<End> {
        let effect = match self.store.apply_event(seq, &event) {
            Ok(e) => e,
            Err(e) => return Some(self.store_failed(e)),
        };
        self.machine.applied(seq, Instant::now());
        for u in event_updates(effect) {
            self.emit(u);
        }
        None
    }

    fn on_snapshot(&mut self, s: Snapshot) -> Option<End> {
        if let Err(e) = self.store.apply_snapshot(&s) {
            return Some(self.store_failed(e));
        }
        self.machine.snapshot_applied(s.seq, Instant::now());
        if !s.recovered {
            tracing::info!(
                seq = s.seq,
                "applied a snapshot; history in between may be missing"
            );
        }
        self.emit(Update::SnapshotApplied {
            recovered: s.recovered,
        });
        None
    }

    fn on_live(&mut self, ev: LiveEvent) {
        match ev {
            LiveEvent::Visitors(list) => {
                if let Err(e) = self.store.replace_visitors(&list) {
                    tracing::warn!("cannot cache the visitor list: {e}");
                }
                self.dirty_visitors.clear();
                self.visitors_dirty_since = None;
                self.visitors = list.iter().map(|v| (v.id.clone(), v.clone())).collect();
                self.emit(Update::Visitors(list));
            }
            LiveEvent::Visitor(v) => {
                self.mark_visitor_dirty(v.id.clone());
                self.visitors.insert(v.id.clone(), v.clone());
                self.emit(Update::Visitor(Box::new(v)));
            }
            LiveEvent::VisitorGone { visitor } => {
                self.mark_visitor_dirty(visitor.clone());
                self.visitors.remove(&visitor);
                self.emit(Update::VisitorGone { visitor });
            }
            // Superseded by TeamMember; servers no longer send it.
            LiveEvent::AgentPresence { .. } => {}
            LiveEvent::Team(list) => self.emit(Update::Team(list)),
            LiveEvent::TeamMember(m) => self.emit(Update::TeamMember(m)),
        }
    }

    fn on_error(&mut self, e: WireError) -> Option<End> {
        match e.code {
            ErrorCode::Unauthorized | ErrorCode::Disabled | ErrorCode::Revoked => {
                Some(self.login_refused(e.code, e.message))
            }
            ErrorCode::GoingAway => Some(retry(format!("the server is going away: {}", e.message))),
            code => {
                tracing::warn!(%code, message = %e.message, "server error");
                self.emit(Update::ServerError {
                    code,
                    message: e.message,
                });
                None
            }
        }
    }

    /// A store failure ends the connection: nothing unstored was acked, and
    /// the next connection replays from the durable cursor.
    fn store_failed(&mut self, e: StoreError) -> End {
        tracing::error!("local store failed: {e}");
        self.emit(Update::StoreFailed {
            message: e.to_string(),
        });
        retry(format!("local store failed: {e}"))
    }

    // ------------------------------------------------------------ requests

    fn on_request(&mut self, req: Request) -> Control {
        match req {
            Request::Action { action, reply } => {
                let r = self.enqueue(action);
                let _ignored = reply.send(r);
                Control::Continue
            }
            Request::History {
                visitor,
                before,
                limit,
                reply,
            } => {
                let request = self.next_request;
                self.next_request = self.next_request.checked_add(1).unwrap_or(1);
                self.machine.query(Query::History {
                    request,
                    visitor,
                    before,
                    limit,
                });
                let _ignored = reply.send(request);
                Control::Continue
            }
            Request::ReconnectNow => Control::Reconnect,
            Request::Trust(yes) => Control::Trust(yes),
            Request::SetPassword(p) => {
                self.cfg.password = p;
                self.ticket = None;
                Control::Reconnect
            }
            Request::MarkRead {
                conversation,
                reply,
            } => {
                let r = self
                    .store
                    .mark_read(conversation)
                    .map_err(ClientError::from);
                let _ignored = reply.send(r);
                Control::Continue
            }
            Request::Shutdown { reply } => Control::Shutdown(reply),
            Request::SignOut { reply } => Control::SignOut(reply),
        }
    }

    /// Make an action durable and queue it. It is transmitted by the next
    /// pump if the link is live, else after the next login.
    fn enqueue(&mut self, action: Action) -> Result<MsgId, ClientError> {
        let now = store::now_ms();
        let id = MsgId::generate(u64::try_from(now).unwrap_or(0), &mut rand::rng());
        let seq = self.machine.next_seq();
        // An action too big for a frame could never be sent and would block
        // everything queued after it.
        let len = sealed_len(
            ClientMsg::Command(Command {
                id,
                seq,
                action: action.clone(),
            })
            .encode()
            .len(),
        );
        if len > self.cfg.max_frame {
            return Err(ClientError::TooLarge {
                len,
                max: self.cfg.max_frame,
            });
        }
        let stored = self.store.enqueue(seq, id, &action, now)?;
        let pushed = self.machine.push(id, action);
        debug_assert_eq!(pushed, seq);
        if let Some(m) = stored {
            self.emit(Update::Message(m));
        }
        self.publish();
        Ok(id)
    }

    // ------------------------------------------------------------ housekeeping

    fn mark_visitor_dirty(&mut self, id: String) {
        self.dirty_visitors.insert(id);
        self.visitors_dirty_since.get_or_insert_with(Instant::now);
    }

    fn housekeeping_due(&self) -> Option<Instant> {
        let flush = self.visitors_dirty_since.map(|t| t + VISITOR_FLUSH);
        let resync = self.updates.lagged.then(|| Instant::now() + RESYNC_RETRY);
        [flush, resync].into_iter().flatten().min()
    }

    fn housekeeping(&mut self) {
        if self
            .visitors_dirty_since
            .is_some_and(|t| Instant::now() >= t + VISITOR_FLUSH)
        {
            self.flush_visitors();
        }
        self.updates.retry_resync();
    }

    fn flush_visitors(&mut self) {
        if self.dirty_visitors.is_empty() {
            self.visitors_dirty_since = None;
            return;
        }
        let ids = std::mem::take(&mut self.dirty_visitors);
        let upserts = ids.iter().filter_map(|id| self.visitors.get(id));
        let removed = ids
            .iter()
            .filter(|id| !self.visitors.contains_key(*id))
            .map(String::as_str);
        if let Err(e) = self.store.update_visitors(upserts, removed) {
            tracing::warn!("cannot cache visitor changes: {e}");
        }
        self.visitors_dirty_since = None;
    }

    // ------------------------------------------------------------ status and updates

    fn emit(&mut self, update: Update) {
        if self.updates.emit(update) {
            // The UI will re-read the store: make the visitor cache current.
            self.flush_visitors();
        }
    }

    fn set_state(&mut self, state: ConnState) {
        self.state = state;
        self.publish();
    }

    fn publish(&mut self) {
        let status = ConnectionStatus {
            state: self.state.clone(),
            unsent: self.machine.unacked(),
        };
        if *self.status.borrow() != status {
            self.status.send_replace(status.clone());
            self.emit(Update::Connection(status));
        }
    }
}

/// What the UI hears about a message an ack settled.
pub fn ack_update(message: Option<&StoredMessage>) -> Option<Update> {
    message.map(Update::message_state)
}

/// What the UI hears about an applied event.
pub fn event_updates(effect: EventEffect) -> Vec<Update> {
    match effect {
        EventEffect::Message { message, new: true } => vec![Update::Message(message)],
        EventEffect::Message {
            message,
            new: false,
        } => vec![Update::message_state(&message)],
        EventEffect::Conversation(c) => vec![Update::Conversation(c)],
        EventEffect::Delivered { changed, .. } => {
            changed.iter().map(Update::message_state).collect()
        }
        EventEffect::Nothing => Vec::new(),
    }
}

/// A session failure as the reason a connection ended.
fn session_failure(e: SessionError) -> String {
    match e {
        SessionError::Dead(silence) => format!(
            "no traffic from the server for {} ms; connection considered dead",
            silence.as_millis()
        ),
        e @ (SessionError::Gap(_) | SessionError::CommandAckBeyondSent(_)) => e.to_string(),
        e => format!("protocol error: {e}"),
    }
}
