//! The server side of one agent connection, sans-IO.
//!
//! ```text
//!  Hello ──ClientHello──▶ Login ──Login──▶ Authenticating ──accept_login──▶ Live
//!    │  (ServerHello out)    │  (event: Login)     │                         │
//!    │                       │                     └──refuse(error)──┐       │
//!    └── bad hello ──────────┴── bad / oversize / not a Login ───────┴──▶ Closed
//!                                   Live ── dead peer, bad frame, second Login,
//!                                          ack beyond sent, close(..), going_away,
//!                                          signed_out ──▶ Closed
//! ```
//!
//! The machine knows the protocol and nothing of the server's policy: it
//! surfaces [`ServerEvent::Login`] and waits in `Authenticating` (reading
//! no further frames) until the driver has checked the password, the
//! session limit and the resume point, and answers with
//! [`Server::accept_login`] or [`Server::refuse`]. Commands, acks, queries
//! and a sign-out are surfaced the same way; the driver commits them and
//! answers with [`Server::ack`], [`Server::query_result`] and
//! [`Server::signed_out`]. Events, snapshots and live state go out through
//! [`Server::push_event`], [`Server::push_snapshot`] and [`Server::live`];
//! the machine keeps the last event seq sent, so an ack beyond it is
//! refused.
//!
//! Before login only frames of `preauth_max_frame` are read, so an
//! unauthenticated peer holds a few KiB; after it the full `max_frame`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{SessionError, Wire, client_msg_name};
use crate::agent::{
    AckBatch, ClientMsg, Command, Event, LiveEvent, Login, LoginOk, Query, QueryResult, Resume,
    Seq, ServerMsg, Snapshot, SnapshotPart, WireError,
};
use crate::codec::FrameError;
use crate::error::ErrorCode;
use crate::handshake::{ServerIdentity, server_accept_with};
use crate::liveness::{Liveness, LivenessAction, LivenessConfig};
use crate::seal::{Opener, Sealer};

/// What a server session needs to know.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub identity: Arc<ServerIdentity>,
    pub liveness: LivenessConfig,
    /// Frame limit once logged in.
    pub max_frame: usize,
    /// Frame limit before login: a hello or a Login fit in a few KiB.
    pub preauth_max_frame: usize,
}

/// What the peer asked for; the driver answers through the machine.
#[derive(Debug)]
pub enum ServerEvent {
    /// Check it and answer with [`Server::accept_login`] or
    /// [`Server::refuse`]; no further frame is read until then.
    Login(Login),
    /// Commit it idempotently, then [`Server::ack`] it.
    Command(Command),
    /// The peer has stored every event up to here. Already checked against
    /// what was sent.
    Acked { up_to: Seq },
    /// Answer with [`Server::query_result`].
    Query(Query),
    /// Release the agent's chats once the commands before it are acked,
    /// then [`Server::signed_out`].
    SignOut,
    /// The agent is typing (or stopped) in a chat: a signal, forwarded
    /// best-effort, never stored or acked.
    Typing {
        conversation: crate::agent::ConversationId,
        typing: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hello,
    Login,
    Authenticating,
    Live,
    Closed,
}

/// A [`LiveEvent`] encoded as the `ServerMsg` that carries it, once, for
/// [`Server::live_encoded`]: a site's visitor list is the same for every
/// agent signing in until it changes, so it need not be encoded again for
/// each of 100 agents in a reconnect storm. Built only from an event, so
/// what is sealed is always a valid message.
#[derive(Clone, Debug)]
pub struct EncodedLive(Bytes);

impl EncodedLive {
    pub fn new(event: LiveEvent) -> Self {
        EncodedLive(Bytes::from(ServerMsg::Live(event).encode()))
    }

    /// The encoded `ServerMsg`, as [`ServerMsg::decode`] reads it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its size in bytes, before sealing.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The server side of one connection.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    state: State,
    wire: Wire,
    keys: Option<(Sealer, Opener)>,
    liveness: Liveness,
    rng: StdRng,
    /// The last event seq queued for the peer.
    sent: Seq,
    /// The latest time we were told, for frames decoded in `poll_event`.
    now: Instant,
}

impl Server {
    /// A new connection at `now`. `seed` feeds the handshake's ephemeral
    /// key and every IV: fresh OS randomness in production, fixed in tests.
    pub fn new(cfg: ServerConfig, now: Instant, seed: [u8; 32]) -> Self {
        let pre = cfg.preauth_max_frame.min(cfg.max_frame);
        Self {
            wire: Wire::new(pre),
            liveness: Liveness::new(cfg.liveness, now),
            cfg,
            state: State::Hello,
            keys: None,
            rng: StdRng::from_seed(seed),
            sent: 0,
            now,
        }
    }

    /// Bytes read from the socket. They are decoded by [`Server::poll_event`].
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.now = self.now.max(now);
        if self.state != State::Closed {
            self.wire.inbuf.extend_from_slice(bytes);
        }
    }

    /// The next thing the peer asked for, decoding buffered frames as
    /// needed. `Ok(None)`: more bytes are needed (or a Login awaits its
    /// answer). `Err`: the connection must close once
    /// [`Server::poll_transmit`] has been drained.
    pub fn poll_event(&mut self) -> Result<Option<ServerEvent>, SessionError> {
        loop {
            if matches!(self.state, State::Authenticating | State::Closed) {
                return Ok(None);
            }
            let frame = match self.wire.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(None),
                Err(FrameError::Oversize { len, max }) => {
                    let before = if self.state == State::Live {
                        ""
                    } else {
                        " before login"
                    };
                    self.fail_with(
                        ErrorCode::TooLarge,
                        format!("frame of {len} bytes exceeds the limit of {max}{before}"),
                    );
                    return Err(FrameError::Oversize { len, max }.into());
                }
                Err(e) => return Err(self.fail(e.into())),
            };
            self.liveness.on_recv(self.now);
            if self.state == State::Hello {
                self.on_hello(&frame)?;
                continue;
            }
            let msg = self.open(&frame)?;
            if let Some(ev) = self.on_msg(msg)? {
                return Ok(Some(ev));
            }
        }
    }

    fn on_hello(&mut self, frame: &[u8]) -> Result<(), SessionError> {
        match server_accept_with(&self.cfg.identity, &mut self.rng, frame) {
            Ok(accepted) => {
                self.wire
                    .push(accepted.reply)
                    .map_err(|e| self.fail(e.into()))?;
                self.keys = Some((accepted.session.sealer, accepted.session.opener));
                self.state = State::Login;
                Ok(())
            }
            Err(refusal) => {
                // A version refusal is plaintext: it is all an old client
                // can read, and it names both versions.
                if let Some(reply) = refusal.reply {
                    let _ignored = self.wire.push(reply);
                }
                Err(self.fail(refusal.error.into()))
            }
        }
    }

    fn open(&mut self, frame: &[u8]) -> Result<ClientMsg, SessionError> {
        let Some((_, opener)) = self.keys.as_mut() else {
            return Err(self.fail(SessionError::State("no keys before the hello")));
        };
        // A frame that fails its tag closes without a word: the peer is not
        // who holds the keys, or the link is corrupt.
        let plain = opener.open(frame).map_err(|e| self.fail(e.into()))?;
        match ClientMsg::decode(&plain) {
            Ok(m) => Ok(m),
            Err(e) => {
                self.fail_with(ErrorCode::BadRequest, format!("malformed message: {e}"));
                Err(e.into())
            }
        }
    }

    fn on_msg(&mut self, msg: ClientMsg) -> Result<Option<ServerEvent>, SessionError> {
        if self.state == State::Login {
            return match msg {
                ClientMsg::Login(l) => {
                    self.state = State::Authenticating;
                    Ok(Some(ServerEvent::Login(l)))
                }
                other => {
                    self.fail_with(ErrorCode::BadRequest, "the first message must be Login");
                    Err(SessionError::Unexpected {
                        expected: "Login",
                        got: client_msg_name(&other),
                    })
                }
            };
        }
        Ok(match msg {
            ClientMsg::Command(c) => Some(ServerEvent::Command(c)),
            ClientMsg::Ack { up_to } if up_to > self.sent => {
                let sent = self.sent;
                self.fail_with(
                    ErrorCode::BadRequest,
                    format!("ack {up_to} is beyond the last event sent ({sent})"),
                );
                return Err(SessionError::EventAckBeyondSent { acked: up_to, sent });
            }
            ClientMsg::Ack { up_to } => Some(ServerEvent::Acked { up_to }),
            ClientMsg::Heartbeat => None,
            ClientMsg::Query(q) => Some(ServerEvent::Query(q)),
            ClientMsg::SignOut => Some(ServerEvent::SignOut),
            ClientMsg::Typing {
                conversation,
                typing,
            } => Some(ServerEvent::Typing {
                conversation,
                typing,
            }),
            ClientMsg::Login(_) => {
                self.fail_with(ErrorCode::BadRequest, "already logged in");
                return Err(SessionError::Unexpected {
                    expected: "anything but a second Login",
                    got: "Login",
                });
            }
        })
    }

    /// The Login checked out. Frames of the full size are read from here,
    /// and the silence clock starts now: a login that waited its turn for
    /// the password check must not be cut as a dead peer before the client
    /// had any reason to speak.
    pub fn accept_login(&mut self, now: Instant, ok: LoginOk) -> Result<(), SessionError> {
        if self.state != State::Authenticating {
            return Err(SessionError::State("accept_login without a Login"));
        }
        self.now = self.now.max(now);
        self.wire.codec.set_max_frame_length(self.cfg.max_frame);
        self.liveness = Liveness::new(self.cfg.liveness, now);
        if let Resume::Replay { after } = ok.resume {
            self.sent = after;
        }
        self.state = State::Live;
        self.send(&ServerMsg::LoginOk(ok))
    }

    /// The Login was refused, or the connection must end for the server's
    /// own reasons (revoked, slow consumer, storage down): tell the peer why
    /// and close.
    pub fn refuse(&mut self, error: WireError) {
        if self.keys.is_some() {
            let _ignored = self.send(&ServerMsg::Error(error));
        }
        self.state = State::Closed;
    }

    /// The server is shutting down: the peer reconnects elsewhere or later.
    pub fn going_away(&mut self, reason: impl Into<String>) {
        let _ignored = self.send(&ServerMsg::GoingAway {
            reason: reason.into(),
        });
        self.state = State::Closed;
    }

    /// The answer to [`ServerEvent::SignOut`]; the connection closes next.
    pub fn signed_out(&mut self) -> Result<(), SessionError> {
        let r = self.send(&ServerMsg::SignedOut);
        self.state = State::Closed;
        r
    }

    /// One durable event. `seq` must be after every event sent so far (the
    /// driver fills gaps from its log).
    pub fn push_event(&mut self, seq: Seq, event: Event) -> Result<(), SessionError> {
        if seq <= self.sent {
            return Err(SessionError::EventOutOfOrder {
                seq,
                sent: self.sent,
            });
        }
        self.send(&ServerMsg::Event { seq, event })?;
        self.sent = seq;
        Ok(())
    }

    /// A piece of a snapshot too big for one frame.
    pub fn push_snapshot_part(&mut self, part: SnapshotPart) -> Result<(), SessionError> {
        self.send(&ServerMsg::SnapshotPart(part))
    }

    /// The snapshot (or its last part): events after its seq follow.
    pub fn push_snapshot(&mut self, snapshot: Snapshot) -> Result<(), SessionError> {
        let seq = snapshot.seq;
        self.send(&ServerMsg::Snapshot(snapshot))?;
        self.sent = seq;
        Ok(())
    }

    /// Ephemeral state: never acked, refreshed in full after every login.
    pub fn live(&mut self, event: LiveEvent) -> Result<(), SessionError> {
        self.send(&ServerMsg::Live(event))
    }

    /// The same as [`Server::live`], for an event encoded once and sent to
    /// many sessions: only the sealing is done per session.
    pub fn live_encoded(&mut self, event: &EncodedLive) -> Result<(), SessionError> {
        self.send_plain(&event.0)
    }

    /// Commands committed durably, with their results.
    pub fn ack(&mut self, batch: AckBatch) -> Result<(), SessionError> {
        self.send(&ServerMsg::Ack(batch))
    }

    pub fn query_result(&mut self, request: u32, result: QueryResult) -> Result<(), SessionError> {
        self.send(&ServerMsg::QueryResult { request, result })
    }

    /// The last event seq sent: the driver resumes its log from here.
    pub fn last_sent(&self) -> Seq {
        self.sent
    }

    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Bytes to write, framed and sealed, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let out = self.wire.take_out()?;
        self.liveness.on_send(now);
        Some(out)
    }

    /// Bytes queued for the peer and not yet taken by
    /// [`Server::poll_transmit`]: a driver bounds a burst by it, writing
    /// before it queues more.
    pub fn pending_transmit(&self) -> usize {
        self.wire.out.len()
    }

    #[cfg(test)]
    pub(super) fn retained_out_capacity(&self) -> usize {
        self.wire.out.capacity()
    }

    /// When [`Server::handle_timeout`] next has something to do. Before
    /// login the driver's pre-auth deadline governs instead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state == State::Live).then(|| self.liveness.poll_timeout())
    }

    /// Queue a heartbeat after quiet; `Err(Dead)` after silence.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        self.now = self.now.max(now);
        if self.state != State::Live {
            return Ok(());
        }
        match self.liveness.poll(now) {
            LivenessAction::Idle => Ok(()),
            LivenessAction::SendHeartbeat => {
                self.send(&ServerMsg::Heartbeat)?;
                // Sent as far as the timer is concerned: the driver writes
                // it right after this call.
                self.liveness.on_send(now);
                Ok(())
            }
            LivenessAction::Dead => {
                let silence = self.liveness.silence(now);
                Err(self.fail(SessionError::Dead(silence)))
            }
        }
    }

    fn send(&mut self, msg: &ServerMsg) -> Result<(), SessionError> {
        self.send_plain(&msg.encode())
    }

    /// Seal and queue one encoded `ServerMsg`.
    fn send_plain(&mut self, plaintext: &[u8]) -> Result<(), SessionError> {
        let Some((sealer, _)) = self.keys.as_mut() else {
            return Err(SessionError::State("nothing is sealed before the hello"));
        };
        let frame = match sealer.seal_with(&mut self.rng, plaintext) {
            Ok(f) => f,
            Err(e) => return Err(self.fail(e.into())),
        };
        self.wire.push(frame).map_err(|e| self.fail(e.into()))
    }

    /// Tell the peer why, then close.
    fn fail_with(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.refuse(WireError {
            code,
            message: message.into(),
            retry_after_ms: None,
        });
    }

    fn fail(&mut self, e: SessionError) -> SessionError {
        self.state = State::Closed;
        e
    }
}
