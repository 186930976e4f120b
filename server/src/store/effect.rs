//! What a committed batch asks of the live side.
//!
//! Rules do not touch live connections: each one leaves [`Effect`]s in its
//! op's scratch, and the writer hands them over only after the batch is
//! durable, in commit order. Nothing is delivered that could still be
//! rolled back.

use std::sync::Arc;

use holdfast_protocol::agent::{
    AgentId, ConversationId, Event, InvitationSignal, Presence, Seq, SiteId, TeamMember,
};
use holdfast_protocol::visitor::VisitorEvent;

/// What the hub must do once a batch is durable.
#[derive(Debug, Clone)]
pub enum Effect {
    AgentEvent {
        agent: AgentId,
        seq: Seq,
        event: Arc<Event>,
    },
    VisitorEvent {
        visitor: String,
        seq: Seq,
        event: Arc<VisitorEvent>,
    },
    /// The stored part of a visitor's record that agents see changed. It
    /// carries the new values, so the hub updates its live copy from the
    /// effect and never reads back what the writer just wrote.
    VisitorChanged {
        visitor: String,
        change: VisitorChange,
    },
    Presence {
        agent: AgentId,
        presence: Presence,
    },
    /// An agent's stored team data (role, capacity, load) as committed; the
    /// hub adds presence and tells the site's agents.
    Team {
        site: SiteId,
        member: TeamMember,
    },
    /// A canned-reply list changed: the site's (`owner: None`), for every
    /// agent of the site, or one agent's own. It names the list only: each
    /// connection that uses it reads it again, on every node.
    Canned {
        site: SiteId,
        owner: Option<AgentId>,
    },
    /// An admin changed `site`'s invitation rules: the site's admins read
    /// the list again, on every node.
    InviteRules {
        site: SiteId,
    },
    /// A visitor's reply accepted an automatic invitation: a signal for
    /// the site's agents on every node, sent only once the chat it opened
    /// is committed.
    Invitation {
        site: SiteId,
        signal: InvitationSignal,
    },
}

/// What changed in a visitor's record, with the values as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitorChange {
    /// `Action::Block`: its live connections go; its hello is refused.
    Blocked,
    /// `Op::Identify`: who the visitor is, as stored after the update (the
    /// update keeps a name or email the site did not send, and a verified
    /// binding an unverified identify of the same id does not undo).
    Identity {
        name: Option<String>,
        email: Option<String>,
        attrs: Vec<(String, String)>,
        external_id: Option<String>,
        verified: bool,
    },
    /// A conversation opened or changed state: the visitor's open
    /// conversation now, `None` once it is closed.
    Conversation(Option<ConversationId>),
}
