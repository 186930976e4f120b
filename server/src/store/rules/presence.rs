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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use holdfast_protocol::agent::{AgentId, Presence, SiteId};
    use rusqlite::Connection;

    use super::super::{Rules, Staged};
    use crate::store::live::Availability;

    /// Agents 1 and 2 of site 1 are connected and online; agent 3 has no
    /// connection.
    struct Hub;

    impl Availability for Hub {
        fn connections(&self, agent: AgentId) -> usize {
            usize::from(agent != 3)
        }

        fn presence(&self, agent: AgentId) -> Presence {
            if agent == 3 {
                Presence::Offline
            } else {
                Presence::Online
            }
        }

        fn connected(&self, site: SiteId) -> Vec<(AgentId, Presence)> {
            if site == 1 {
                vec![(2, Presence::Online), (1, Presence::Online)]
            } else {
                Vec::new()
            }
        }
    }

    #[test]
    fn staged_presence_is_seen_by_later_ops_of_the_batch_as_the_hub_would_apply_it() {
        let conn = Connection::open_in_memory().unwrap();
        let committed = HashMap::new();
        let mut batch = Staged::default();
        let mut op = Staged::default();
        {
            let mut rules = Rules::new(&conn, &Hub, &mut op, &batch, &committed, 1);
            rules.stage_presence(1, Presence::Away);
            rules.stage_presence(3, Presence::Online);
            assert_eq!(rules.presence_of(1), Presence::Away);
        }
        batch.absorb(op);
        // Both go to the hub, after the commit.
        assert_eq!(batch.effects.len(), 2);
        let mut op = Staged::default();
        let rules = Rules::new(&conn, &Hub, &mut op, &batch, &committed, 1);
        assert_eq!(rules.available_agents(1), vec![2]);
        assert_eq!(rules.presence_of(1), Presence::Away);
        // The hub ignores presence for an agent without a connection, and
        // so does the view.
        assert_eq!(rules.presence_of(3), Presence::Offline);
        assert!(rules.available_agents(2).is_empty());
    }
}
