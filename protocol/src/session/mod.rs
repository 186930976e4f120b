//! Sans-IO session machines for the agent channel: one per side, each
//! combining framing, the handshake, sealing, login/resume, delivery,
//! liveness and queries behind one surface.
//!
//! The shape follows quinn-proto's `Connection`: a driver feeds what
//! happened in and drains what to do out, and owns nothing of the protocol
//! itself.
//!
//! ```text
//!   driver                                   machine
//!   ──────                                   ───────
//!   socket read  ── handle_bytes(now, b) ──▶  buffer
//!                ◀──── poll_event() ──────── decode one frame: open, check, surface
//!   app decides ──── accept_login / push_event / ack / commands_acked / … ──▶ seal
//!   socket write ◀── poll_transmit(now) ──── framed, sealed bytes
//!   sleep until  ◀── poll_timeout() ──────── heartbeat / dead-peer / ack batching
//!   timer fired  ── handle_timeout(now) ───▶ heartbeat queued, or Err(Dead)
//! ```
//!
//! Frames are decoded lazily, one per [`server::Server::poll_event`] or
//! [`client::Client::poll_event`], so the app's answer to one frame (a
//! login check, a stored event) always comes before the next is looked at,
//! and a driver that stops polling stops reading: back-pressure for free.
//!
//! Neither machine knows about sockets, clocks, the database or the hub.
//! The server machine surfaces a Login, a Command, a Query or a SignOut and
//! waits for the driver's answer; the client machine surfaces the server's
//! key, events and acks and waits to hear they are stored. Both are driven
//! by the shipped drivers (`server/src/agent_gw.rs`, `client/src/core.rs`)
//! and by the deterministic tests (the `Pair` in `tests.rs`, and
//! `protocol/tests/sim.rs` under thousands of network faults), so what is
//! tested is what ships. The byte-level scripted peers
//! (`tests/src/raw_agent.rs`, the scripted server in `client/tests/core.rs`)
//! stay below the machines on purpose: they send what a machine refuses to
//! (repeated events, acks beyond what was sent, hostile frames) to test the
//! other side's defences.
//!
//! - [`server`]: the server side of one connection.
//! - [`client`]: the client side, kept across connections (its outbox,
//!   cursor and queries outlive any one of them).

pub mod client;
pub mod server;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::agent::{DecodeError, Seq};
use crate::codec::{FrameCodec, FrameError};
use crate::delivery::{AckBeyondSent, Gap};
use crate::handshake::HandshakeError;
use crate::seal::{OpenError, SealError};

/// Why a session ended. Every one of them closes the connection; the
/// machine has already queued whatever the peer should hear first (an
/// `Error` naming the reason, where the peer holds the keys to read it).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A frame over the limit was announced or would have been sent.
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// A sealed frame failed its tag or layout: closed without a word.
    #[error("bad frame: {0}")]
    Open(#[from] OpenError),
    #[error("seal: {0}")]
    Seal(#[from] SealError),
    /// A frame that opened but did not decode.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
    /// A message that is valid but not in this state.
    #[error("protocol violation: expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    /// The peer acked events never sent to it.
    #[error("ack {acked} is beyond the last event sent ({sent})")]
    EventAckBeyondSent { acked: Seq, sent: Seq },
    /// The peer acked commands never numbered.
    #[error("protocol error: {0}")]
    CommandAckBeyondSent(#[from] AckBeyondSent),
    /// Events are missing: resume from the cursor.
    #[error("protocol error: {0}")]
    Gap(#[from] Gap),
    /// The app pushed an event at or below one already sent.
    #[error("event {seq} is not after the last event sent ({sent})")]
    EventOutOfOrder { seq: Seq, sent: Seq },
    /// Nothing heard for the dead-peer time.
    #[error("no traffic for {} ms: peer declared dead", .0.as_millis())]
    Dead(Duration),
    /// A call that needs a connection in a state this one is not in (after
    /// a close, or before the handshake).
    #[error("the session is not in a state for this: {0}")]
    State(&'static str),
}

/// Framing beneath both machines: bytes in, whole frames out, and frames
/// into an output buffer.
#[derive(Debug)]
struct Wire {
    codec: FrameCodec,
    inbuf: BytesMut,
    out: BytesMut,
}

impl Wire {
    fn new(max_frame: usize) -> Self {
        Self {
            codec: FrameCodec::new(max_frame),
            inbuf: BytesMut::new(),
            out: BytesMut::new(),
        }
    }

    fn next_frame(&mut self) -> Result<Option<BytesMut>, FrameError> {
        self.codec.decode(&mut self.inbuf)
    }

    fn push(&mut self, frame: Vec<u8>) -> Result<(), FrameError> {
        self.codec.encode(Bytes::from(frame), &mut self.out)
    }

    /// What is queued for the peer, with the buffer it is in. Splitting it
    /// off instead would leave this buffer's rest pinning the whole
    /// allocation, which `BytesMut` then reclaims, at its high-water mark,
    /// for the session's life: 200 idle agents kept 25 KB each that way
    /// once visitors had arrived. A write now costs one allocation.
    fn take_out(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out).freeze())
    }
}

/// The name of a message, for errors and logs, without its contents (a
/// Login carries a password).
pub fn client_msg_name(m: &crate::agent::ClientMsg) -> &'static str {
    use crate::agent::ClientMsg as M;
    match m {
        M::Login(_) => "Login",
        M::Command(_) => "Command",
        M::Ack { .. } => "Ack",
        M::Heartbeat => "Heartbeat",
        M::Query(_) => "Query",
        M::SignOut => "SignOut",
        M::Typing { .. } => "Typing",
    }
}

/// As [`client_msg_name`], for the server's messages.
pub fn server_msg_name(m: &crate::agent::ServerMsg) -> &'static str {
    use crate::agent::ServerMsg as M;
    match m {
        M::LoginOk(_) => "LoginOk",
        M::Ack(_) => "Ack",
        M::Event { .. } => "Event",
        M::Snapshot(_) => "Snapshot",
        M::Live(_) => "Live",
        M::Heartbeat => "Heartbeat",
        M::Error(_) => "Error",
        M::GoingAway { .. } => "GoingAway",
        M::QueryResult { .. } => "QueryResult",
        M::SignedOut => "SignedOut",
        M::SnapshotPart(_) => "SnapshotPart",
    }
}
