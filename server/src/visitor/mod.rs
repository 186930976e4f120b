//! The visitor side of the HTTP port; [`crate::http::router`] routes to it.
//!
//! - [`session`]: what both transports share: hello and resume, the rate
//!   gates, and the handling of every message after the hello.
//! - [`ws`]: the WebSocket transport, one task per visitor.
//! - [`long_poll`]: the long-poll transport, for networks that block
//!   WebSockets.
//!
//! The transports use the session and never each other; the session uses
//! neither, so a message cannot come to mean one thing on one transport and
//! another on the other.

pub(crate) mod long_poll;
pub(crate) mod session;
pub(crate) mod ws;
