//! `Op::VisitorSend`: a visitor's message, or a left message (the same op
//! with `leave` set, when no agent is there). Opens a conversation if the
//! visitor has none and hands it to an available agent at once.

use holdfast_protocol::agent::{Author, ConversationState, Outcome, PageView, SiteId};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;

use super::{Content, Rules, rejected};
use crate::store::reads::{self, visitor_key};
use crate::store::sql::args;
use crate::store::writer::{VisitorFile, VisitorSendOutcome};
use crate::store::{StoreError, now_ms};
use holdfast_protocol::error::ErrorCode;

/// A visitor's words and the file they carry, if any.
pub(in crate::store) struct VisitorText<'a> {
    pub body: &'a str,
    pub attachment: Option<&'a VisitorFile>,
}

impl Rules<'_> {
    /// A visitor action, applied once per id (through [`Rules::once`]): a
    /// resend gets the original outcome, told in the visitor channel's
    /// terms. Also used by `end_chat`.
    pub(in crate::store) fn visitor_action(
        &mut self,
        visitor: &str,
        id: MsgId,
        apply: impl FnOnce(&mut Self) -> Result<Outcome, StoreError>,
    ) -> Result<VisitorSendOutcome, StoreError> {
        let actor_key = visitor_key(visitor);
        let outcome = self.once(&id, &actor_key, 0, apply)?;
        Ok(match outcome {
            Outcome::Done {
                conversation,
                message,
                at_ms,
            } => VisitorSendOutcome::Done {
                conversation: conversation.unwrap_or(0),
                message: message.unwrap_or(0),
                at_ms,
            },
            Outcome::Rejected { code, message } => VisitorSendOutcome::Rejected { code, message },
        })
    }

    pub(in crate::store) fn visitor_post(
        &mut self,
        visitor: &str,
        site: SiteId,
        id: MsgId,
        text: VisitorText<'_>,
        leave: Option<Option<String>>,
        page: Option<PageView>,
    ) -> Result<Outcome, StoreError> {
        let (body, attachment) = (text.body, text.attachment);
        let content = Content {
            body,
            attachment: attachment.map(|f| &f.info),
        };
        if let Some(bad) = content.check() {
            return Ok(bad);
        }
        // Checked in the writer, with the message: a block takes effect on
        // the next message, on whichever node it arrives.
        if reads::blocked(self.conn, site, Some(visitor), None)? {
            return Ok(rejected(
                ErrorCode::Forbidden,
                "this site's chat is not available to you; the message was not sent",
            ));
        }
        let now = now_ms();
        let mut joined = None;
        let c = match self.open_conversation_locked(visitor)? {
            Some(c) => {
                if let Some(Some(email)) = &leave {
                    self.conn.execute(
                        "UPDATE conversations SET contact_email = ?2 WHERE id = ?1",
                        &args![c.id, email],
                    )?;
                }
                c
            }
            None => {
                let (state, email) = match &leave {
                    Some(email) => (ConversationState::LeftMessage, email.clone()),
                    None => (ConversationState::Queued, None),
                };
                let group = reads::visitor_group(self.conn, visitor)?;
                let cid = self.create_conversation(
                    site,
                    visitor,
                    state,
                    None,
                    email,
                    group.as_deref(),
                    now,
                )?;
                if state == ConversationState::Queued
                    && let Some(agent) = self.pick_agent(site, group.as_deref(), None)?
                {
                    self.conn.execute(
                        "UPDATE conversations SET state = 1, assigned_agent = ?2 WHERE id = ?1",
                        &args![cid, agent],
                    )?;
                    self.left_queue(cid, now)?;
                    self.team_effect(agent)?;
                    joined = Some(agent);
                }
                let c = self.announce(cid, now)?;
                if leave.is_none() {
                    self.accept_invitation(&c, now)?;
                }
                c
            }
        };
        if let Some(f) = attachment
            && f.conversation != c.id
        {
            // Checked here, in the writer, because only here is the open
            // chat known for certain: it may have closed since the upload.
            return Ok(rejected(
                ErrorCode::Conflict,
                "that file was uploaded into an earlier chat: attach it again here",
            ));
        }
        let m = self.post(
            &c,
            Author::Visitor {
                visitor: visitor.to_string(),
            },
            Content {
                body,
                attachment: attachment.map(|f| &f.info),
            },
            id,
            now,
            false,
        )?;
        if let Some(email) = leave {
            let line = Notice::LeftMessage {
                email,
                url: page.as_ref().map(|p| p.url.clone()),
                title: page.map(|p| p.title).filter(|t| !t.is_empty()),
            };
            self.system_line(&c, &line, now)?;
        }
        if let Some(agent) = joined
            && let Some(row) = reads::agent_by_id(self.conn, agent)?
        {
            self.joined(&c, &row.display_name, now)?;
        }
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(m),
            at_ms: now,
        })
    }
}
