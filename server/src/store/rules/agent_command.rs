//! `Op::AgentCommand`: the checks every agent command passes before its
//! rule runs (the session may still act, the action id is new), the ack
//! recorded per device, and the dispatch to one rule file per action.

use holdfast_protocol::agent::{
    Action, Command, CommandResult, ConversationId, ConversationInfo, Outcome,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::{Content, Rules, rejected};
use crate::store::reads::{self, agent_key};
use crate::store::sql::args;
use crate::store::writer::{AgentActor, FileCheck};
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    /// The actor's account as it is now, if this session may still act.
    /// Checked inside the transaction, so nothing a disabled agent (or a
    /// session from before a password change) sends is applied, however
    /// late the server noticed the change.
    pub(super) fn current_actor(&self, actor: &AgentActor) -> Result<reads::AgentRow, StoreError> {
        match reads::agent_by_id(self.conn, actor.id)? {
            Some(r) if r.disabled => Err(StoreError::Revoked {
                code: ErrorCode::Disabled,
                message: "your account was disabled".into(),
            }),
            Some(r) if r.auth_epoch != actor.epoch => Err(StoreError::Revoked {
                code: ErrorCode::Revoked,
                message: "your password was changed; sign in again".into(),
            }),
            Some(r) => Ok(r),
            None => Err(StoreError::Revoked {
                code: ErrorCode::Disabled,
                message: "your account no longer exists".into(),
            }),
        }
    }

    pub(in crate::store) fn agent_command(
        &mut self,
        actor: &AgentActor,
        device: &MsgId,
        cmd: &Command,
        attachment: Option<&FileCheck>,
    ) -> Result<CommandResult, StoreError> {
        let me = self.current_actor(actor)?;
        let actor_key = agent_key(actor.id);
        let outcome = self.once(&cmd.id, &actor_key, cmd.seq, |rules| {
            rules.agent_action(actor, &me, cmd, attachment)
        })?;
        // CASE, not SQLite's two-argument MAX: the same SQL on both engines.
        self.conn.execute(
            "UPDATE devices SET commands_acked = CASE WHEN commands_acked < ?3 THEN ?3 ELSE commands_acked END \
             WHERE agent_id = ?1 AND device_id = ?2",
            &args![actor.id, &device.0[..], cmd.seq],
        )?;
        Ok(CommandResult {
            seq: cmd.seq,
            id: cmd.id,
            outcome,
        })
    }

    /// Look up a conversation the actor may touch. Another site's
    /// conversation gets the same answer as one that does not exist, so ids
    /// cannot be probed across sites.
    pub(super) fn conv_for(
        &self,
        actor: &AgentActor,
        id: ConversationId,
    ) -> Result<Result<ConversationInfo, Outcome>, StoreError> {
        self.lock_row("conversations", id)?;
        match reads::conversation(self.conn, id)? {
            Some(c) if c.site == actor.site => Ok(Ok(c)),
            _ => Ok(Err(rejected(
                ErrorCode::NotFound,
                format!("no conversation {id}"),
            ))),
        }
    }

    /// One rule per action, each in its own file.
    pub(super) fn agent_action(
        &mut self,
        actor: &AgentActor,
        me: &reads::AgentRow,
        cmd: &Command,
        attachment: Option<&FileCheck>,
    ) -> Result<Outcome, StoreError> {
        let now = now_ms();
        match &cmd.action {
            Action::Send {
                conversation,
                body,
                attachment: None,
            } => self.agent_send(actor, me, *conversation, Content::text(body), cmd.id, now),
            Action::Send {
                conversation,
                body,
                attachment: Some(_),
            } => match attachment {
                Some(Ok(f)) if f.conversation == *conversation => self.agent_send(
                    actor,
                    me,
                    *conversation,
                    Content {
                        body,
                        attachment: Some(&f.info),
                    },
                    cmd.id,
                    now,
                ),
                // The same answer as an unknown file: ids of other chats
                // are not to be probed.
                Some(Ok(_)) => Ok(rejected(
                    ErrorCode::NotFound,
                    "no such file in this conversation",
                )),
                Some(Err((code, message))) => Ok(rejected(*code, message.clone())),
                None => Ok(rejected(
                    ErrorCode::Internal,
                    "the file of this message was not looked up; send it again",
                )),
            },
            Action::Invite { visitor, body } => self.invite(actor, me, visitor, body, cmd.id, now),
            Action::Accept { conversation } => self.accept(actor, me, *conversation, now),
            Action::Close { conversation } => self.close(actor, me, *conversation, now),
            Action::SetPresence { presence } => self.set_presence(actor, *presence, now),
            Action::Transfer {
                conversation,
                from,
                to,
                note,
            } => self.transfer(actor, me, *conversation, *from, *to, note.as_deref(), now),
            Action::Block {
                visitor,
                by_address,
                reason,
            } => self.block(actor, me, visitor, *by_address, reason, now),
            Action::Unblock { visitor } => self.unblock(actor, visitor, now),
            Action::Note { conversation, body } => {
                self.note(actor, me, *conversation, body, cmd.id, now)
            }
            Action::Tag { conversation, tags } => self.tag(actor, me, *conversation, tags, now),
            Action::SaveCanned {
                id,
                personal,
                shortcut,
                body,
            } => self.save_canned(
                actor,
                me,
                &super::canned::Save {
                    id: *id,
                    personal: *personal,
                    shortcut,
                    body,
                },
                now,
            ),
            Action::DeleteCanned { id } => self.delete_canned(actor, me, *id, now),
            Action::SaveInviteRule { id, rule } => self.change_invite_rule(
                actor,
                me,
                super::invite_rules::Change::Save(*id, rule),
                now,
            ),
            Action::DeleteInviteRule { id } => {
                self.change_invite_rule(actor, me, super::invite_rules::Change::Delete(*id), now)
            }
            Action::EnableInviteRule { id, enabled } => self.change_invite_rule(
                actor,
                me,
                super::invite_rules::Change::Enable(*id, *enabled),
                now,
            ),
            Action::TransferToGroup {
                conversation,
                from,
                group,
                note,
            } => {
                self.transfer_to_group(actor, me, *conversation, *from, group, note.as_deref(), now)
            }
        }
    }
}
