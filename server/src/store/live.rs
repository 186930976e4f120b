//! What the store needs from the live side (the hub), declared here so the
//! store never imports the hub: the hub imports the store (for effects and
//! reads) and implements these traits, so the dependency runs one way.
//!
//! - [`Availability`]: who is connected and with what presence, which
//!   auto-assignment, transfers and releases decide on.
//! - [`Publish`]: where the writer hands a committed batch's effects.

use holdfast_protocol::agent::{AgentId, Presence, SiteId};

use super::effect::Effect;

/// Who can take a chat right now, as the live side knows it. Presence is
/// live state, never stored; the rules overlay what ops of the current batch
/// changed (see `rules::Rules::presence_of`) until the hub has it.
pub trait Availability: Send + Sync {
    /// How many connections (devices) the agent has now.
    fn connections(&self, agent: AgentId) -> usize;
    /// The agent's presence as last published; `Offline` for an agent not
    /// seen since start.
    fn presence(&self, agent: AgentId) -> Presence;
    /// The site's agents that have at least one connection, with their
    /// presence as last published.
    fn connected(&self, site: SiteId) -> Vec<(AgentId, Presence)>;
}

/// Receives what a batch asks of the live side, once it is durable.
pub trait Publish: Send + Sync {
    /// Called by the writer thread right after each commit, in commit order.
    fn publish(&self, effects: Vec<Effect>);
}

/// Everything the writer needs from the live side.
pub trait Live: Availability + Publish {}

impl<T: Availability + Publish + ?Sized> Live for T {}
