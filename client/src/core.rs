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
    Outcome, Query, QueryResult, Seq, Snapshot, VisitorInfo, WireError,
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

mod apply;
mod connection;
pub(crate) mod uploads;

pub use apply::{ack_update, event_updates};

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
    /// `request` is the handle's: it numbers history queries, so it can
    /// hand the id back before the core has seen the request.
    History {
        request: u32,
        visitor: String,
        before: Option<MessageId>,
        limit: u32,
    },
    /// A download link for an attachment; numbered like `History`.
    AttachmentLink {
        request: u32,
        id: String,
    },
    /// The site's invitation rules with their counts; numbered like
    /// `History`.
    InviteRules {
        request: u32,
    },
    /// A file to send, already copied under the data dir.
    Upload {
        upload: uploads::NewUpload,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    CancelUpload {
        id: MsgId,
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// A download into the cache; numbered like `History`.
    Fetch {
        request: u32,
        id: String,
        thumb: bool,
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
    /// The agent types in a chat's composer (or cleared it, or sent).
    Typing {
        conversation: holdfast_protocol::agent::ConversationId,
        typing: bool,
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
    /// A signal (typing) for the UI: dropped rather than queued behind, or
    /// counted as, a lag: a missed one costs nothing to re-read.
    fn signal(&mut self, update: Update) {
        if !self.lagged {
            let _dropped_when_full = self.tx.try_send(update);
        }
    }

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
    /// The site's groups as the server last sent them (10.23).
    groups: watch::Sender<Vec<holdfast_protocol::agent::GroupInfo>>,
    state: ConnState,
    /// The protocol state: outbox, cursor, queries, the connection's keys.
    machine: Client,
    backoff: Backoff,
    visitors: BTreeMap<String, VisitorInfo>,
    dirty_visitors: BTreeSet<String>,
    visitors_dirty_since: Option<Instant>,
    signing_out: Option<SigningOut>,
    /// The server's resume ticket from the last login: the next reconnect
    /// needs no password check. Memory only, like the password.
    ticket: Option<Zeroizing<Vec<u8>>>,
    /// Files being sent and downloads (see `uploads`).
    uploads: uploads::Uploads,
    /// Per chat, when "typing" was last sent and whether the last signal
    /// was a start (see [`TYPING_REFRESH`]).
    typing: BTreeMap<holdfast_protocol::agent::ConversationId, (Instant, bool)>,
}

/// While the agent keeps typing, "typing" is sent again this often, so the
/// visitor's indicator (which ends after 6 s without one) stays on; every
/// keystroke in between sends nothing.
pub const TYPING_REFRESH: Duration = Duration::from_secs(2);

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
    pub(crate) groups: watch::Sender<Vec<holdfast_protocol::agent::GroupInfo>>,
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
        let uploads = uploads::Uploads::restore(&p.cfg.store_path, &p.store);
        Self {
            uploads,
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
            groups: p.groups,
            state: ConnState::Disconnected,
            visitors,
            dirty_visitors: BTreeSet::new(),
            visitors_dirty_since: None,
            signing_out: None,
            ticket: None,
            typing: BTreeMap::new(),
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

    // ------------------------------------------------------------ requests

    fn on_request(&mut self, req: Request) -> Control {
        match req {
            Request::Action { action, reply } => {
                // A reply ends the agent's typing at the visitor (the widget
                // stops the indicator at the message): the next keystroke
                // starts it again at once.
                if let Action::Send { conversation, .. } = &action {
                    self.typing.remove(conversation);
                }
                let r = self.enqueue(action);
                let _ignored = reply.send(r);
                Control::Continue
            }
            Request::AttachmentLink { request, id } => {
                self.machine.query(Query::AttachmentLink { request, id });
                Control::Continue
            }
            Request::InviteRules { request } => {
                self.machine.query(Query::InviteRules { request });
                Control::Continue
            }
            Request::History {
                request,
                visitor,
                before,
                limit,
            } => {
                self.machine.query(Query::History {
                    request,
                    visitor,
                    before,
                    limit,
                });
                Control::Continue
            }
            Request::Upload { upload, reply } => {
                let r = self.add_upload(upload);
                let _ignored = reply.send(r);
                Control::Continue
            }
            Request::CancelUpload { id, reply } => {
                let r = self.cancel_upload(id);
                let _ignored = reply.send(r);
                Control::Continue
            }
            Request::Fetch { request, id, thumb } => {
                self.fetch(request, id, thumb);
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
            Request::Typing {
                conversation,
                typing,
            } => {
                self.typing_signal(conversation, typing, Instant::now());
                Control::Continue
            }
        }
    }

    /// Throttle the agent's typing: a start at most every
    /// [`TYPING_REFRESH`], a stop only after a start. A signal, so nothing is
    /// stored and nothing waits for a connection.
    fn typing_signal(
        &mut self,
        conversation: holdfast_protocol::agent::ConversationId,
        typing: bool,
        now: Instant,
    ) {
        let last = self.typing.get(&conversation).copied();
        let send = match (typing, last) {
            (true, Some((at, true))) => now.saturating_duration_since(at) >= TYPING_REFRESH,
            (true, _) => true,
            (false, Some((_, was))) => was,
            (false, None) => false,
        };
        if !send {
            return;
        }
        if typing {
            self.typing.insert(conversation, (now, true));
        } else {
            self.typing.remove(&conversation);
        }
        self.machine.typing(conversation, typing);
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
        [flush, resync, self.uploads.due()]
            .into_iter()
            .flatten()
            .min()
    }

    fn housekeeping(&mut self) {
        if self
            .visitors_dirty_since
            .is_some_and(|t| Instant::now() >= t + VISITOR_FLUSH)
        {
            self.flush_visitors();
        }
        self.updates.retry_resync();
        if self.uploads.due().is_some_and(|t| Instant::now() >= t) {
            self.pump_uploads();
        }
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
