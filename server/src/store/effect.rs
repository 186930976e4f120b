//! What a committed batch asks of the live side.
//!
//! Rules do not touch live connections: each one leaves [`Effect`]s in its
//! op's scratch, and the writer hands them over only after the batch is
//! durable, in commit order. Nothing is delivered that could still be
//! rolled back.

use std::sync::Arc;

use holdfast_protocol::agent::{AgentId, Event, Presence, Seq, SiteId, TeamMember};
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
    /// The stored part of a visitor's record changed (identify, conversation).
    VisitorChanged {
        visitor: String,
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
}
