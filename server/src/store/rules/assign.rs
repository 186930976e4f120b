//! Auto-assignment (`Op::AssignQueued`, and every rule that frees an agent):
//! waiting chats go, oldest first, to the least busy available agent.

use holdfast_protocol::agent::{AgentId, ConversationState, SiteId};

use super::Rules;
use crate::store::reads;
use crate::store::sql::args;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    /// The least-busy online agent of the site with spare capacity, other
    /// than `exclude` (an agent on its way out).
    pub(super) fn pick_agent(
        &self,
        site: SiteId,
        exclude: Option<AgentId>,
    ) -> Result<Option<AgentId>, StoreError> {
        let online = self.available_agents(site);
        let mut best: Option<(u32, AgentId)> = None;
        for agent in online.into_iter().filter(|a| Some(*a) != exclude) {
            // Held to COMMIT, so two nodes cannot both fill its last slot.
            self.lock_row("agents", agent)?;
            let Some(row) = reads::agent_by_id(self.conn, agent)? else {
                continue;
            };
            if row.disabled {
                continue;
            }
            let load = reads::agent_load(self.conn, agent)?;
            if load >= row.capacity {
                continue;
            }
            if best.is_none_or(|(l, a)| (load, agent) < (l, a)) {
                best = Some((load, agent));
            }
        }
        Ok(best.map(|(_, a)| a))
    }

    /// Hand waiting chats, oldest first, to available agents.
    pub(in crate::store) fn assign_queued(
        &mut self,
        site: SiteId,
        exclude: Option<AgentId>,
    ) -> Result<(), StoreError> {
        let queued: Vec<u64> = self
            .conn
            .query_rows(
                &format!(
                    "SELECT id FROM conversations WHERE site_id = ?1 AND state = 0 ORDER BY id{}",
                    self.skip_locked()
                ),
                &args![site],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?;
        let now = now_ms();
        for id in queued {
            let Some(agent) = self.pick_agent(site, exclude)? else {
                break;
            };
            let Some(c) = reads::conversation(self.conn, id)? else {
                continue;
            };
            if c.state != ConversationState::Queued {
                continue;
            }
            let c = self.set_state(&c, ConversationState::Active, Some(agent), now)?;
            self.backfill(&c, agent, now)?;
            if let Some(name) = c.assigned_name.clone() {
                self.joined(&c, &name, now)?;
            }
        }
        Ok(())
    }
}
