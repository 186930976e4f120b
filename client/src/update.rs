//! What the core tells the UI.
//!
//! Updates are notifications, not the record: the store is. The channel is
//! bounded and the core never waits on it. If the UI falls behind, updates
//! are dropped and, once there is room again, an [`Update::Resync`] says to
//! re-read the store ([`crate::ClientHandle::cached_workspace`]) and the
//! current status ([`crate::ClientHandle::status`]). Nothing durable is lost
//! that way: every message, conversation and delivery state is in the store
//! before its update is sent.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    AgentId, CannedReply, ConversationId, ConversationInfo, MessageId, QueryResult, SiteId,
    TeamMember, VisitorInfo,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::ids::MsgId;

use crate::store::{DeliveryState, MessageOrder, StoredMessage};

/// Where the connection stands, plus how many actions wait in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub state: ConnState,
    pub unsent: usize,
}

/// The connection state machine's states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    /// Not started yet.
    Disconnected,
    /// Opening the TCP connection.
    Connecting,
    /// Exchanging hellos and checking the server's key.
    Handshaking,
    /// Waiting for the user to accept or refuse an unknown server key
    /// (`ClientHandle::trust_fingerprint`).
    AwaitingTrust {
        fingerprint: Fingerprint,
    },
    /// Login sent, waiting for the answer.
    LoggingIn,
    Live,
    /// Will try again at `retry_at` (or at once on `reconnect_now`).
    BackingOff {
        retry_at: Instant,
        reason: String,
    },
    /// Will not try again until the user acts.
    Stopped {
        reason: StopReason,
    },
}

/// Why the client stopped trying. Each needs a user decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The server presented another key than the pinned one. Continuing
    /// needs `trust_fingerprint(true)`, which replaces the pin.
    FingerprintMismatch {
        pinned: Fingerprint,
        presented: Fingerprint,
    },
    /// The user refused an unknown server key.
    FingerprintRefused { fingerprint: Fingerprint },
    /// The server refused the login (wrong password, disabled account,
    /// another protocol version). `set_password` or `reconnect_now` retries.
    LoginRejected { code: ErrorCode, message: String },
    /// `shutdown` was called.
    Shutdown,
    /// The agent signed out (`sign_out`).
    SignedOut,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::FingerprintMismatch { pinned, presented } => write!(
                f,
                "the server's key changed: pinned {pinned}, presented {presented}"
            ),
            StopReason::FingerprintRefused { fingerprint } => {
                write!(f, "the server key {fingerprint} was not trusted")
            }
            StopReason::LoginRejected { code, message } => {
                write!(f, "login refused ({code}): {message}")
            }
            StopReason::Shutdown => f.write_str("shut down"),
            StopReason::SignedOut => f.write_str("signed out"),
        }
    }
}

/// How a sign-out went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignOutResult {
    /// The server committed everything queued before it and handed the
    /// agent's open chats back (or left them with its other device).
    Released,
    /// Not connected: unsent actions stay in the outbox for the next
    /// sign-in, and the server hands the chats back once the grace period
    /// is over.
    Offline,
    /// Connected, but the server did not confirm in time; as for `Offline`.
    TimedOut,
}

/// Where a file being sent stands (`ClientHandle::send_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadState {
    /// Its bytes are going up (or wait for the link to come back).
    Uploading,
    /// The server has the whole file: the message that carries it is in
    /// the outbox, waiting for the server's ack. Too late to cancel.
    Sending,
    /// The server committed the message.
    Sent,
    /// Refused for good (too large, a type the server does not take, a chat
    /// that is no longer this agent's): the server's words. Never sent;
    /// `cancel_upload` dismisses it.
    Failed(String),
    /// Cancelled before the message was queued; nothing was sent.
    Cancelled,
}

/// A file being sent, as `ClientHandle::pending_uploads` lists it (after a
/// restart, too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The id of the message that will carry it (the id `send_file` returned).
    pub id: MsgId,
    pub conversation: ConversationId,
    pub name: String,
    /// The message text sent with the file.
    pub body: String,
    /// Bytes the server has stored.
    pub sent: u64,
    pub total: u64,
    pub state: UploadState,
}

impl Update {
    /// The change to a message the UI already shows.
    pub fn message_state(m: &StoredMessage) -> Self {
        Update::MessageState {
            client_id: m.client_id,
            conversation: m.conversation,
            message: m.message,
            state: m.state,
            order: m.order,
        }
    }
}

/// A notification from the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Connection(ConnectionStatus),
    /// Nothing is pinned for this server: ask the user to compare the
    /// fingerprint (with `holdfast-server fingerprint`) and answer with
    /// `trust_fingerprint`.
    FingerprintUnknown {
        server: String,
        fingerprint: Fingerprint,
    },
    /// The server's key does not match the pin: a hard stop. Show both.
    FingerprintMismatch {
        server: String,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
    /// The login (or the handshake, for `VersionMismatch`) was refused.
    /// With `retry_after` set (throttled), the core retries by itself.
    LoginFailed {
        code: ErrorCode,
        message: String,
        retry_after: Option<Duration>,
    },
    LoggedIn {
        agent: AgentId,
        display_name: String,
        site: SiteId,
    },
    /// The whole visitor list (after each login).
    Visitors(Vec<VisitorInfo>),
    /// One visitor arrived, navigated or identified.
    Visitor(Box<VisitorInfo>),
    VisitorGone {
        visitor: String,
    },
    /// Every agent of the site (after each login).
    Team(Vec<TeamMember>),
    /// One agent's presence, role, capacity or load changed.
    TeamMember(TeamMember),
    /// The tags this site's chats may carry, in the admin's order (after
    /// each login). A chat's own tags are its latest `tagged` line.
    SiteTags(Vec<String>),
    /// Every canned reply this agent may use, replacing the earlier list
    /// (the site's, then its own; 10.21).
    Canned(Vec<CannedReply>),
    /// The site's invitation rules with their counts (10.20), replacing
    /// any earlier list: the answer to
    /// [`crate::ClientHandle::load_invite_rules`], and, for an admin,
    /// whenever the rules change.
    InviteRules(Vec<holdfast_protocol::agent::InviteRule>),
    /// The site's groups (10.23), replacing the earlier list: at each
    /// login and whenever one changes. Also held by
    /// [`crate::ClientHandle::groups`].
    Groups(Vec<holdfast_protocol::agent::GroupInfo>),
    /// An automatic invitation fired for a visitor, or what became of it
    /// (a signal: not stored, not replayed).
    Invitation(holdfast_protocol::agent::InvitationSignal),
    Conversation(ConversationInfo),
    /// The visitor of `conversation` is typing, or stopped. `draft` is the
    /// unsent text when the site has sneak peek on: never stored, not a
    /// message. A signal: show it until `typing: false`, the visitor's next
    /// message, or [`crate::TYPING_TIMEOUT`] without a refresh.
    Typing {
        conversation: ConversationId,
        visitor: String,
        typing: bool,
        draft: Option<String>,
    },
    /// A message to add: queued locally or new from the server. Key it by
    /// `client_id`.
    Message(StoredMessage),
    /// A message already shown changed (acked, echoed, delivered, failed).
    /// `order` is where it sits now: an acked message moves from the end
    /// of the queue to where the server committed it.
    MessageState {
        client_id: MsgId,
        conversation: ConversationId,
        message: Option<MessageId>,
        state: DeliveryState,
        order: MessageOrder,
    },
    /// The server committed a command.
    CommandDone {
        id: MsgId,
        conversation: Option<ConversationId>,
        message: Option<MessageId>,
    },
    /// The server durably refused a command.
    CommandRejected {
        id: MsgId,
        code: ErrorCode,
        message: String,
    },
    /// The answer to `load_history` or `link` (a
    /// `QueryResult::AttachmentLink`), by request id.
    History {
        request: u32,
        result: QueryResult,
    },
    /// Local conversations and messages were replaced by a server snapshot:
    /// re-read the store. `recovered: false` means history in between may be
    /// missing.
    SnapshotApplied {
        recovered: bool,
    },
    /// A non-fatal error from the server.
    ServerError {
        code: ErrorCode,
        message: String,
    },
    /// The local store failed; the connection is reset and retried, and
    /// nothing was acked that is not stored.
    StoreFailed {
        message: String,
    },
    /// Updates were dropped because the UI was slow: re-read the store.
    Resync,
    /// Progress of a file being sent (`send_file`, `send_file_bytes`), keyed
    /// by the id of the message that will carry it.
    Upload {
        id: MsgId,
        conversation: ConversationId,
        name: String,
        sent: u64,
        total: u64,
        state: UploadState,
    },
    /// The answer to `fetch_attachment`: the file (or its thumbnail) is at
    /// `path`, a cache file under the client's data directory, whole.
    AttachmentReady {
        request: u32,
        id: String,
        thumb: bool,
        path: PathBuf,
        mime: String,
    },
    /// `fetch_attachment` failed: the server refused (`not_found` for a
    /// file past retention or of another site) or the local disk failed.
    AttachmentFailed {
        request: u32,
        id: String,
        thumb: bool,
        code: ErrorCode,
        message: String,
    },
}
