//! The client side of the agent channel, sans-IO. One machine lives as long
//! as the app: its outbox, cursor and unanswered queries outlive any one
//! connection, and [`Client::connect`] starts the next.
//!
//! ```text
//!  Disconnected ──connect──▶ Handshaking ──ServerHello──▶ AwaitingLogin
//!       ▲                        │          (event: ServerKey; the app
//!       │                        │           checks its pin)  │ login(..)
//!       │                        ▼                            ▼
//!   disconnect ◀──── Closed ◀── error ─────────────────── LoggingIn
//!       ▲              ▲  (dead peer, bad frame, gap,         │ LoginOk
//!       │              │   refusal, GoingAway, SignedOut)     ▼
//!       └──────────────┴───────────────────────────────────  Live
//! ```
//!
//! Persistence is the app's, and the machine waits for it: an action is
//! stored before [`Client::push`]; an event surfaced by
//! [`Client::poll_event`] is stored before [`Client::applied`] (call it
//! before polling the next event, or the next one looks like a gap); an
//! ack is stored before [`Client::commands_acked`]. So nothing is acked to
//! the server, or dropped from the outbox, before it is durable here.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use zeroize::{Zeroize, Zeroizing};

use super::{SessionError, Wire, server_msg_name};
use crate::agent::{
    AckBatch, Action, ClientMsg, Command, Event, LiveEvent, Login, LoginOk, Query, QueryResult,
    Seq, ServerMsg, Snapshot, SnapshotPart, WireError,
};
use crate::delivery::{AckPolicy, Inbox, Outbox, Verdict};
use crate::handshake::ClientHandshake;
use crate::ids::MsgId;
use crate::liveness::{Liveness, LivenessAction, LivenessConfig};
use crate::seal::{Opener, Sealer};

/// Commands sealed per [`Client::poll_transmit`], so a long outbox replay
/// leaves the driver room to read between writes.
const TRANSMIT_BATCH: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub liveness: LivenessConfig,
    pub ack_policy: AckPolicy,
    pub max_frame: usize,
}

/// An unacked command as the outbox holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: MsgId,
    pub action: Action,
}

/// What the server said, for the app to act on.
#[derive(Debug)]
pub enum ClientEvent {
    /// The server's static key: check it against the pin, then
    /// [`Client::login`] (or drop the connection).
    ServerKey([u8; 32]),
    /// Logged in. `commands_acked` is the app's to apply (it may have to
    /// renumber its outbox, see [`Client::restore_outbox`]).
    LoggedIn(LoginOk),
    /// The Login was answered with an error; the connection is closed.
    LoginRefused(WireError),
    /// Commands committed: store the results, then
    /// [`Client::commands_acked`].
    Acked(AckBatch),
    /// The next event in order: store it with its seq, then
    /// [`Client::applied`].
    Event {
        seq: Seq,
        event: Event,
    },
    /// A whole snapshot (its parts gathered): replace local state, then
    /// [`Client::snapshot_applied`].
    Snapshot(Snapshot),
    Live(LiveEvent),
    QueryResult {
        request: u32,
        result: QueryResult,
    },
    /// A server error after login. Fatal ones are followed by a close.
    Error(WireError),
    /// The server is going away; the connection is closed.
    GoingAway {
        reason: String,
    },
    /// The sign-out is done; the connection is closed.
    SignedOut,
}

/// What a client machine has done since it was made, across connections:
/// for logs and for tests that must show a path was exercised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Commands sealed for sending, resends included.
    pub commands_sent: u64,
    /// Events that arrived again and were dropped by the cursor.
    pub duplicate_events: u64,
    pub acks_sent: u64,
    pub heartbeats_sent: u64,
}

#[derive(Debug)]
enum State {
    Disconnected,
    Handshaking(Box<ClientHandshake>),
    AwaitingLogin,
    LoggingIn,
    Live,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignOut {
    No,
    Wanted,
    Sent,
}

/// The client side of the agent channel.
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    state: State,
    wire: Wire,
    keys: Option<(Sealer, Opener)>,
    liveness: Liveness,
    rng: StdRng,
    outbox: Outbox<Queued>,
    inbox: Inbox,
    /// No snapshot or event was ever applied: log in without a cursor.
    fresh: bool,
    /// Unanswered queries, resent after a reconnect since they are reads.
    queries: BTreeMap<u32, Query>,
    unsent_queries: VecDeque<u32>,
    sign_out: SignOut,
    /// Typing signals to send with the next transmit. Signals, not
    /// commands: only while live, dropped on a disconnect, never resent.
    signals: Vec<ClientMsg>,
    snapshot_parts: Option<SnapshotPart>,
    now: Instant,
    stats: ClientStats,
}

impl Client {
    /// `cursor` is the last applied event seq from the local store (`None`
    /// for a device with no state); `outbox` its unacked commands.
    pub fn new(
        cfg: ClientConfig,
        cursor: Option<Seq>,
        outbox: Outbox<Queued>,
        now: Instant,
        seed: [u8; 32],
    ) -> Self {
        Self {
            wire: Wire::new(cfg.max_frame),
            liveness: Liveness::new(cfg.liveness, now),
            inbox: Inbox::new(cursor.unwrap_or(0), cfg.ack_policy),
            fresh: cursor.is_none(),
            cfg,
            state: State::Disconnected,
            keys: None,
            rng: StdRng::from_seed(seed),
            outbox,
            queries: BTreeMap::new(),
            unsent_queries: VecDeque::new(),
            sign_out: SignOut::No,
            signals: Vec::new(),
            snapshot_parts: None,
            now,
            stats: ClientStats::default(),
        }
    }

    // ------------------------------------------------------------ connection

    /// A new connection is open: queue the ClientHello.
    pub fn connect(&mut self, now: Instant) {
        self.disconnect();
        self.now = self.now.max(now);
        let hs = ClientHandshake::generate(&mut self.rng);
        // A hello always fits: it is 39 bytes.
        let _fits = self.wire.push(hs.hello().to_vec());
        self.liveness = Liveness::new(self.cfg.liveness, now);
        self.state = State::Handshaking(Box::new(hs));
    }

    /// The connection is gone (or given up): forget its keys and buffers.
    /// Everything unacked is sent again after the next login.
    pub fn disconnect(&mut self) {
        self.state = State::Disconnected;
        self.wire = Wire::new(self.cfg.max_frame);
        self.keys = None;
        self.snapshot_parts = None;
        self.sign_out = SignOut::No;
        self.signals.clear();
    }

    /// Send the Login, once the app has checked the server's key. Its
    /// `resume_after` is filled in from the cursor; the password is
    /// zeroized once sealed.
    pub fn login(&mut self, now: Instant, mut login: Login) -> Result<(), SessionError> {
        if !matches!(self.state, State::AwaitingLogin) {
            return Err(SessionError::State("login before the server's key"));
        }
        self.now = self.now.max(now);
        login.resume_after = (!self.fresh).then(|| self.inbox.cursor());
        let msg = ClientMsg::Login(login);
        let plain = Zeroizing::new(msg.encode());
        if let ClientMsg::Login(mut l) = msg {
            l.password.zeroize();
        }
        self.seal(&plain)?;
        // The answer is due within the dead-peer time.
        self.liveness = Liveness::new(self.cfg.liveness, now);
        self.state = State::LoggingIn;
        Ok(())
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed | State::Disconnected)
    }

    // ------------------------------------------------------------ input

    /// Bytes read from the socket; decoded by [`Client::poll_event`].
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.now = self.now.max(now);
        if matches!(self.state, State::Closed | State::Disconnected) {
            return;
        }
        // Any byte is a sign of life, including a large frame trickling in.
        self.liveness.on_recv(now);
        self.wire.inbuf.extend_from_slice(bytes);
    }

    /// The next thing for the app, decoding buffered frames as needed.
    /// `Err`: the connection must close.
    pub fn poll_event(&mut self) -> Result<Option<ClientEvent>, SessionError> {
        loop {
            if matches!(
                self.state,
                State::Disconnected | State::Closed | State::AwaitingLogin
            ) {
                return Ok(None);
            }
            let frame = match self.wire.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(e.into())),
            };
            if let State::Handshaking(_) = self.state {
                let State::Handshaking(hs) =
                    std::mem::replace(&mut self.state, State::AwaitingLogin)
                else {
                    continue;
                };
                return match hs.handle_reply(&frame) {
                    Ok(session) => {
                        self.keys = Some((session.sealer, session.opener));
                        Ok(Some(ClientEvent::ServerKey(session.server_static)))
                    }
                    Err(e) => Err(self.fail(e.into())),
                };
            }
            let Some((_, opener)) = self.keys.as_mut() else {
                return Err(self.fail(SessionError::State("no keys")));
            };
            let plain = opener.open(&frame).map_err(|e| self.fail(e.into()))?;
            let msg = ServerMsg::decode(&plain).map_err(|e| self.fail(e.into()))?;
            let ev = if let State::LoggingIn = self.state {
                Some(self.on_login_answer(msg)?)
            } else {
                self.on_msg(msg)?
            };
            if ev.is_some() {
                return Ok(ev);
            }
        }
    }

    fn on_login_answer(&mut self, msg: ServerMsg) -> Result<ClientEvent, SessionError> {
        match msg {
            ServerMsg::LoginOk(ok) => {
                // Never slower than the server expects of us; the dead-peer
                // time stays ours.
                let mut cfg = self.cfg.liveness;
                if ok.heartbeat_ms > 0 {
                    let server = std::time::Duration::from_millis(u64::from(ok.heartbeat_ms));
                    cfg.heartbeat = cfg.heartbeat.min(server);
                }
                self.liveness = Liveness::new(cfg, self.now);
                self.outbox.on_reconnect();
                self.inbox.on_reconnect();
                self.unsent_queries = self.queries.keys().copied().collect();
                self.state = State::Live;
                Ok(ClientEvent::LoggedIn(ok))
            }
            ServerMsg::Error(e) => {
                self.state = State::Closed;
                Ok(ClientEvent::LoginRefused(e))
            }
            ServerMsg::GoingAway { reason } => {
                self.state = State::Closed;
                Ok(ClientEvent::GoingAway { reason })
            }
            other => Err(self.fail(SessionError::Unexpected {
                expected: "LoginOk",
                got: server_msg_name(&other),
            })),
        }
    }

    fn on_msg(&mut self, msg: ServerMsg) -> Result<Option<ClientEvent>, SessionError> {
        Ok(match msg {
            ServerMsg::Ack(batch) => {
                if batch.up_to >= self.outbox.next_seq() {
                    return Err(self.fail(
                        crate::delivery::AckBeyondSent {
                            acked: batch.up_to,
                            sent: self.outbox.next_seq().saturating_sub(1),
                        }
                        .into(),
                    ));
                }
                (batch.up_to > self.outbox.acked()).then_some(ClientEvent::Acked(batch))
            }
            ServerMsg::Event { seq, event } => match self.inbox.check(seq) {
                Err(gap) => return Err(self.fail(gap.into())),
                Ok(Verdict::Duplicate) => {
                    self.stats.duplicate_events += 1;
                    None
                }
                Ok(Verdict::Apply) => Some(ClientEvent::Event { seq, event }),
            },
            ServerMsg::SnapshotPart(p) => {
                let parts = self.snapshot_parts.get_or_insert_with(|| SnapshotPart {
                    conversations: Vec::new(),
                    messages: Vec::new(),
                });
                parts.conversations.extend(p.conversations);
                parts.messages.extend(p.messages);
                None
            }
            ServerMsg::Snapshot(s) => {
                Some(ClientEvent::Snapshot(match self.snapshot_parts.take() {
                    Some(mut parts) => {
                        parts.conversations.extend(s.conversations);
                        parts.messages.extend(s.messages);
                        Snapshot {
                            conversations: parts.conversations,
                            messages: parts.messages,
                            ..s
                        }
                    }
                    None => s,
                }))
            }
            ServerMsg::Live(ev) => Some(ClientEvent::Live(ev)),
            ServerMsg::Heartbeat => None,
            ServerMsg::Error(e) => Some(ClientEvent::Error(e)),
            ServerMsg::GoingAway { reason } => {
                self.state = State::Closed;
                Some(ClientEvent::GoingAway { reason })
            }
            ServerMsg::QueryResult { request, result } => self
                .queries
                .remove(&request)
                .map(|_| ClientEvent::QueryResult { request, result }),
            ServerMsg::SignedOut => {
                self.state = State::Closed;
                self.sign_out = SignOut::No;
                Some(ClientEvent::SignedOut)
            }
            ServerMsg::LoginOk(_) => {
                return Err(self.fail(SessionError::Unexpected {
                    expected: "anything but a second LoginOk",
                    got: "LoginOk",
                }));
            }
        })
    }

    // ------------------------------------------------------------ the app's answers

    /// The event `seq` just surfaced is stored.
    pub fn applied(&mut self, seq: Seq, now: Instant) {
        self.inbox.applied(seq, now);
        self.fresh = false;
    }

    /// The snapshot just surfaced is stored.
    pub fn snapshot_applied(&mut self, seq: Seq, now: Instant) {
        self.inbox.reset_to(seq, now);
        self.fresh = false;
    }

    /// An ack (or a login's `commands_acked`) is stored: forget the
    /// commands it covers.
    pub fn commands_acked(&mut self, up_to: Seq) -> Result<(), SessionError> {
        match self.outbox.on_ack(up_to) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// Replace the outbox (renumbered after the server turned out to have
    /// committed seqs this store never numbered).
    pub fn restore_outbox(&mut self, outbox: Outbox<Queued>) {
        self.outbox = outbox;
    }

    /// The seq the next [`Client::push`] gets: store the action under it
    /// first.
    pub fn next_seq(&self) -> Seq {
        self.outbox.next_seq()
    }

    /// Queue a stored action; sent now if live, else after the next login.
    pub fn push(&mut self, id: MsgId, action: Action) -> Seq {
        self.outbox.push(Queued { id, action })
    }

    pub fn unacked(&self) -> usize {
        self.outbox.unacked()
    }

    pub fn acked(&self) -> Seq {
        self.outbox.acked()
    }

    pub fn cursor(&self) -> Seq {
        self.inbox.cursor()
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Ask a query; the answer comes as [`ClientEvent::QueryResult`], after
    /// a reconnect if need be.
    pub fn query(&mut self, q: Query) {
        let request = q.request();
        self.queries.insert(request, q);
        if self.is_live() {
            self.unsent_queries.push_back(request);
        }
    }

    /// Tell the server the agent is typing in `conversation` (or stopped).
    /// Best-effort: dropped when not logged in, and a newer signal for the
    /// same chat replaces one not yet sent. The caller throttles.
    pub fn typing(&mut self, conversation: crate::agent::ConversationId, typing: bool) {
        if !self.is_live() {
            return;
        }
        self.signals.retain(
            |m| !matches!(m, ClientMsg::Typing { conversation: c, .. } if *c == conversation),
        );
        self.signals.push(ClientMsg::Typing {
            conversation,
            typing,
        });
    }

    /// Sign out once every command before it is acked, so the chats it
    /// hands back carry every reply written. Only on a live connection: a
    /// sign-out that never reached the server must not take effect later.
    pub fn sign_out(&mut self) -> Result<(), SessionError> {
        if !self.is_live() {
            return Err(SessionError::State("sign-out while not logged in"));
        }
        if self.sign_out == SignOut::No {
            self.sign_out = SignOut::Wanted;
        }
        Ok(())
    }

    // ------------------------------------------------------------ output and time

    /// Bytes to write: the hello or the Login while connecting; then
    /// commands, queries, the due event ack and a sign-out.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.now = self.now.max(now);
        if self.is_live() {
            // A seal failure (counter exhausted) closes; the driver sees it
            // from poll_event or is_closed.
            let _closed = self.queue_live(now);
        }
        let out = self.wire.take_out()?;
        self.liveness.on_send(now);
        Some(out)
    }

    fn queue_live(&mut self, now: Instant) -> Result<(), SessionError> {
        let mut msgs = Vec::new();
        for _ in 0..TRANSMIT_BATCH {
            let Some((seq, q)) = self.outbox.poll_transmit() else {
                break;
            };
            self.stats.commands_sent += 1;
            msgs.push(ClientMsg::Command(Command {
                id: q.id,
                seq,
                action: q.action.clone(),
            }));
        }
        while let Some(r) = self.unsent_queries.pop_front() {
            if let Some(q) = self.queries.get(&r) {
                msgs.push(ClientMsg::Query(q.clone()));
            }
        }
        msgs.append(&mut self.signals);
        if let Some(up_to) = self.inbox.poll_ack(now) {
            self.stats.acks_sent += 1;
            msgs.push(ClientMsg::Ack { up_to });
        }
        if self.sign_out == SignOut::Wanted && self.outbox.unacked() == 0 {
            self.sign_out = SignOut::Sent;
            msgs.push(ClientMsg::SignOut);
        }
        for m in msgs {
            self.seal(&m.encode())?;
        }
        Ok(())
    }

    /// When [`Client::handle_timeout`] next has something to do: a
    /// heartbeat, a batched ack, or the dead-peer check (while connecting,
    /// the answer to the hello or the Login is due within it).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            // More of the outbox to hand out: at once, after the driver
            // has had a chance to read.
            State::Live if self.outbox.in_flight() < self.outbox.unacked() => Some(self.now),
            State::Live => {
                let due = self.liveness.poll_timeout();
                Some(self.inbox.poll_timeout().map_or(due, |t| t.min(due)))
            }
            State::Handshaking(_) | State::LoggingIn => Some(self.liveness.dead_at()),
            // The app is asking a person about the key: no clock runs.
            State::AwaitingLogin | State::Disconnected | State::Closed => None,
        }
    }

    /// Queue a heartbeat after quiet (the due ack goes out with the next
    /// [`Client::poll_transmit`]); `Err(Dead)` after silence.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        self.now = self.now.max(now);
        match self.state {
            State::Handshaking(_) | State::LoggingIn | State::Live => {}
            _ => return Ok(()),
        }
        match self.liveness.poll(now) {
            LivenessAction::Dead => {
                let silence = self.liveness.silence(now);
                Err(self.fail(SessionError::Dead(silence)))
            }
            LivenessAction::SendHeartbeat if self.is_live() && self.wire.out.is_empty() => {
                self.stats.heartbeats_sent += 1;
                self.seal(&ClientMsg::Heartbeat.encode())?;
                self.liveness.on_send(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn seal(&mut self, plain: &[u8]) -> Result<(), SessionError> {
        let Some((sealer, _)) = self.keys.as_mut() else {
            return Err(SessionError::State("nothing is sealed before the hello"));
        };
        let frame = match sealer.seal_with(&mut self.rng, plain) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e.into())),
        };
        self.wire.push(frame).map_err(|e| self.fail(e.into()))
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.state = State::Closed;
        e
    }
}
