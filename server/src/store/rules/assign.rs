//! Auto-assignment (`Op::AssignQueued`, and every rule that frees an agent):
//! waiting chats go, oldest first, to the least busy available agent; a
//! chat for a site group only to an agent of that group (10.23).

use std::collections::HashSet;

use holdfast_protocol::agent::{AgentId, ConversationState, SiteId};

use super::Rules;
use crate::store::reads;
use crate::store::sql::args;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    /// The least-busy online agent of the site with spare capacity, in
    /// `group` when the chat is for one, other than `exclude` (an agent on
    /// its way out).
    pub(super) fn pick_agent(
        &self,
        site: SiteId,
        group: Option<&str>,
        exclude: Option<AgentId>,
    ) -> Result<Option<AgentId>, StoreError> {
        let online = self.available_agents(site);
        let members: Option<HashSet<AgentId>> = match group {
            Some(g) => Some(
                reads::group_members(self.conn, site, g)?
                    .into_iter()
                    .collect(),
            ),
            None => None,
        };
        let mut best: Option<(u32, AgentId)> = None;
        for agent in online
            .into_iter()
            .filter(|a| Some(*a) != exclude && members.as_ref().is_none_or(|m| m.contains(a)))
        {
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

    /// Hand waiting chats, oldest first, to available agents: each to an
    /// agent of its group, so a billing chat nobody of billing can take
    /// waits without holding up the sales chats behind it.
    pub(in crate::store) fn assign_queued(
        &mut self,
        site: SiteId,
        exclude: Option<AgentId>,
    ) -> Result<(), StoreError> {
        self.assign_queued_but(site, exclude, None)
    }

    /// As [`Rules::assign_queued`], except that `(chat, agent)`, if given,
    /// is one chat not to give to one agent (who just handed it on).
    pub(super) fn assign_queued_but(
        &mut self,
        site: SiteId,
        exclude: Option<AgentId>,
        not_back: Option<(u64, AgentId)>,
    ) -> Result<(), StoreError> {
        let queued: Vec<(u64, Option<String>)> = self
            .conn
            .query_rows(
                &format!(
                    "SELECT id, group_key FROM conversations WHERE site_id = ?1 AND state = 0 ORDER BY id{}",
                    self.skip_locked()
                ),
                &args![site],
            )?
            .iter()
            .map(|r| Ok::<_, StoreError>((reads::u64_col(r, 0)?, r.get(1)?)))
            .collect::<Result<_, _>>()?;
        let now = now_ms();
        // Groups (None: the whole site) found with no one free: later chats
        // of them wait too, without asking again.
        let mut full: HashSet<Option<String>> = HashSet::new();
        for (id, group) in queued {
            if full.contains(&group) {
                continue;
            }
            let skip = not_back.filter(|(chat, _)| *chat == id).map(|(_, a)| a);
            let Some(agent) = self.pick_agent(site, group.as_deref(), skip.or(exclude))? else {
                if skip.is_some() {
                    // Someone else of the group may be free for the next.
                    continue;
                }
                if group.is_none() {
                    // No one of the site is free: no group has anyone either.
                    break;
                }
                full.insert(group);
                continue;
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

    /// `Op::Regroup`: the site's open chats for a group it no longer has
    /// go back to the whole site: agents see them as the site's, and the
    /// waiting ones are handed out by the normal rules.
    pub(in crate::store) fn regroup(&mut self, site: SiteId) -> Result<(), StoreError> {
        let orphans: Vec<u64> = self
            .conn
            .query_rows(
                "SELECT c.id FROM conversations c WHERE c.site_id = ?1 AND c.state <> 2 \
                 AND c.group_key IS NOT NULL AND NOT EXISTS \
                 (SELECT 1 FROM site_groups g WHERE g.site_id = c.site_id AND g.key = c.group_key) \
                 ORDER BY c.id",
                &args![site],
            )?
            .iter()
            .map(|r| reads::u64_col(r, 0))
            .collect::<Result<_, _>>()?;
        if orphans.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for id in &orphans {
            self.lock_row("conversations", *id)?;
            self.conn.execute(
                "UPDATE conversations SET group_key = NULL, updated_ms = ?2 WHERE id = ?1",
                &args![*id, now],
            )?;
            self.announce(*id, now)?;
        }
        tracing::info!(
            site,
            chats = orphans.len(),
            "chats of a removed group went back to the site-wide queue"
        );
        self.assign_queued(site, None)
    }
}
