//! Presence in the store: `Action::SetPresence`, and the view of who is
//! available that assignment and transfers decide on.
//!
//! Presence is live state, not data: the hub holds it, and learns a change
//! only from the committed [`Effect::Presence`] (one route, after the
//! commit, so a batch that fails changes nothing). Until then the change is
//! staged in the batch, and the view here lays it over what the hub says,
//! so an op later in the same batch (an assignment right after "online")
//! already sees it.

use holdfast_protocol::agent::{AgentId, Outcome, Presence, SiteId};

use super::{Rules, done};
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::writer::AgentActor;

impl Rules<'_> {
    pub(super) fn set_presence(
        &mut self,
        actor: &AgentActor,
        presence: Presence,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        // The command is durable although presence is not, so that its ack
        // means "applied".
        self.stage_presence(actor.id, presence);
        if presence == Presence::Online {
            self.assign_queued(actor.site, None)?;
        }
        Ok(done(None, None, now))
    }

    /// Set an agent's presence: seen by the rest of this batch at once, by
    /// the hub once the batch is committed.
    pub(super) fn stage_presence(&mut self, agent: AgentId, presence: Presence) {
        self.op.presence.insert(agent, presence);
        self.op.effects.push(Effect::Presence { agent, presence });
    }

    /// The presence an earlier op of this batch (or this op) set, if any.
    fn staged_presence(&self, agent: AgentId) -> Option<Presence> {
        self.op
            .presence
            .get(&agent)
            .or_else(|| self.batch.presence.get(&agent))
            .copied()
    }

    /// The agent's presence as this op must see it. The hub applies a
    /// presence only to a connected agent, so the staged one counts only
    /// then too.
    pub(super) fn presence_of(&self, agent: AgentId) -> Presence {
        match self.staged_presence(agent) {
            Some(p) if self.live.connections(agent) > 0 => p,
            _ => self.live.presence(agent),
        }
    }

    /// The site's connected agents that are online, as this op must see
    /// them (for auto-assignment).
    pub(super) fn available_agents(&self, site: SiteId) -> Vec<AgentId> {
        let mut online: Vec<AgentId> = self
            .live
            .connected(site)
            .into_iter()
            .filter(|&(a, p)| self.staged_presence(a).unwrap_or(p) == Presence::Online)
            .map(|(a, _)| a)
            .collect();
        online.sort_unstable();
        online
    }
}
