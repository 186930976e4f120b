//! `Op::ReleaseChats`: what happens to an agent's chats when the agent
//! leaves (signs out, stays offline past the grace period, or is disabled).
//! Each open chat goes back to the queue with a line saying why, and then
//! to an available agent by the normal rules.

use holdfast_protocol::agent::{AgentId, ConversationState, Presence};
use holdfast_protocol::notice::{LeaveReason, Notice};

use super::Rules;
use crate::store::reads;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    /// Hand an agent's open chats back: each goes to the queue with a line
    /// saying why, and then to an available agent by the normal rules. A
    /// sign-out or the offline sweep changes nothing if the agent is
    /// connected again (or still, on another device) by now.
    pub(in crate::store) fn release_chats(
        &mut self,
        agent: AgentId,
        reason: LeaveReason,
    ) -> Result<(), StoreError> {
        let still_here = match reason {
            LeaveReason::Offline => self.live.connections(agent) > 0,
            // The device signing out is still connected while this runs.
            LeaveReason::SignedOut => self.live.connections(agent) > 1,
            LeaveReason::Disabled => false,
        };
        if still_here {
            return Ok(());
        }
        // No new chats for an agent on its way out: the release below
        // excludes it, and so does every op after this one.
        if reason == LeaveReason::SignedOut {
            self.stage_presence(agent, Presence::Offline);
        }
        let Some(row) = reads::agent_by_id(self.conn, agent)? else {
            return Ok(());
        };
        let owned = reads::owned_conversations(self.conn, agent)?;
        if owned.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for id in owned {
            self.lock_row("conversations", id)?;
            let Some(c) = reads::conversation(self.conn, id)? else {
                continue;
            };
            // Another node may have moved it since the list was read.
            if c.state != ConversationState::Active || c.assigned != Some(agent) {
                continue;
            }
            let line = Notice::Requeued {
                agent: row.display_name.clone(),
                reason,
            };
            self.system_line(&c, &line, now)?;
            self.set_state(&c, ConversationState::Queued, None, now)?;
        }
        tracing::info!(
            agent,
            ?reason,
            "released an agent's open chats to the queue"
        );
        self.assign_queued(row.site, Some(agent))
    }
}
