//! The Holdfast wire protocol, shared by the server and the agent desktop app.
//!
//! Everything here is sans-IO: no sockets, no clock, no global RNG. Callers
//! pass bytes, the current [`std::time::Instant`] and randomness in, and get
//! back bytes to send and decisions to act on. The spec is `PROTOCOL.md`
//! beside this crate.
//!
//! - [`codec`]: length-delimited framing with a hard maximum frame length.
//! - [`handshake`]: ClientHello/ServerHello, X25519 key agreement, HKDF key
//!   schedule, server fingerprints for pinning.
//! - [`seal`]: encrypt-then-MAC sealed frames (AES-256-CBC + HMAC-SHA256)
//!   with an implicit per-direction counter.
//! - [`ids`]: client-generated action ids (UUIDv7 layout).
//! - [`agent`]: the agent-channel message enums and their bincode encoding.
//! - [`visitor`]: the visitor-channel JSON messages (WebSocket and long-poll).
//! - [`notice`]: system lines (joined, transferred, closed, requeued, notes),
//!   carried in chat messages on both channels.
//! - [`error`]: wire error codes shared by both channels.
//! - [`delivery`]: the sender-side outbox and receiver-side inbox machines.
//! - [`liveness`]: heartbeat and dead-peer timer.
//! - [`backoff`]: reconnect backoff with full jitter.
//! - [`session`]: the client and server session machines that combine all
//!   of the above behind one `handle_*`/`poll_*` surface; the server's
//!   gateway and the tests drive them.

pub mod agent;
pub mod backoff;
pub mod codec;
pub mod delivery;
pub mod error;
pub mod handshake;
pub mod ids;
pub mod liveness;
pub mod notice;
pub mod seal;
pub mod session;
pub mod visitor;

/// The agent channel's protocol version, carried in both hellos. Version 2
/// (chat ownership: the team, transfer, sign-out, resume tickets, snapshots
/// in parts) changed structs that version 1 clients cannot decode, so the
/// handshake refuses the other version with both numbers named instead of
/// letting an old app fail on the first new message. Version 3 (messages
/// that carry an attachment, and the attachment link query) changed
/// `ChatMessage` and `Action::Send` the same way. Version 4 (agents upload
/// and download files over this channel) added query and answer variants a
/// version 3 peer would fail to decode mid-session; no stored layout
/// changed, so nothing stored by version 3 needs a second decoder. Site
/// groups, added while version 4 was still being built like the other
/// version 4 messages, added `group` to `ConversationInfo`: events a build
/// stored before it lack the field, and `agent::v4` decodes those.
/// `VisitorInfo.lang` came the same way; no stored bincode holds a
/// `VisitorInfo`, so it needs no older decoder.
pub const PROTOCOL_VERSION: u16 = 4;

/// The visitor channel's version, in `hello.v`. Its changes since version 1
/// only added optional fields and new message types a widget may ignore.
pub const VISITOR_PROTOCOL_VERSION: u16 = 1;

/// Default maximum frame length on the agent channel (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
