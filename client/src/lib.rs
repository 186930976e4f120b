//! The Holdfast agent client core: everything the desktop app does except
//! drawing. The iced UI (the `holdfast-agent` crate, in `agent-desktop/`)
//! talks to it through a [`ClientHandle`] and a stream of [`Update`]s, and
//! holds no networking code of its own. No UI crate is in this crate's
//! dependency tree, so test agents and tools link only the core.
//!
//! - [`store`]: the local SQLite store: outbox, event cursor, server pins,
//!   and the cached workspace that lets the app start instantly and work
//!   offline. It is the truth; updates are only notifications.
//! - `core` (private; its module docs draw the state machine): the tokio
//!   task with the connection state machine (connect, handshake, pin check,
//!   login, live, backoff), wrapped around the protocol crate's sans-IO
//!   outbox, inbox, liveness and backoff machines.
//! - [`client`]: [`start`] and the [`ClientHandle`].
//! - [`update`]: [`Update`], [`ConnectionStatus`], [`ConnState`].
//! - [`config`]: [`ClientConfig`] and [`default_store_path`].
//! - [`error`]: [`StoreError`] and [`ClientError`].
//! - [`preconfig`]: what an installer preconfigured for this machine (server
//!   and pinned fingerprint), from a file or the Windows registry.
//!
//! Delivery, in short: an action is written to the outbox before the call
//! that made it returns and before its first send; it leaves the outbox only
//! on the server's ack, and every reconnect resends what is left, in order.
//! An event is applied together with the cursor in one transaction, and only
//! then acked; a restart resumes from that cursor.

pub mod client;
pub mod config;
mod core;
pub mod error;
pub mod preconfig;
pub mod store;
pub mod update;

pub use holdfast_protocol as protocol;

pub use client::{ClientHandle, UPDATE_CAPACITY, start};
pub use core::TYPING_REFRESH;

/// How long a typing indicator stays without a refresh (the sender sends
/// one every [`TYPING_REFRESH`] while typing): a lost stop costs this much.
pub const TYPING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6);
pub use config::{ClientConfig, default_store_path};
pub use error::{ClientError, StoreError};
pub use store::{
    ConversationSummary, DeliveryState, MessageOrder, Store, StoredMessage, Workspace,
};
pub use update::{
    ConnState, ConnectionStatus, PendingUpload, SignOutResult, StopReason, Update, UploadState,
};

/// The core's conversions from store effects to [`Update`]s, for the desktop
/// app's order property test (`agent-desktop/src/ui/desk/tests.rs`), which drives
/// the real store and these through random interleavings.
#[doc(hidden)]
pub use core::{ack_update, event_updates};
