//! `Action::Tag`: set a conversation's tags from its site's list. The
//! current set lives on the conversation; each change is also an
//! agents-only `tagged` line, so history shows who tagged what and when
//! (PROTOCOL.md 10.18).

use holdfast_protocol::agent::{ConversationId, Outcome};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;

use super::{Rules, done, rejected};
use crate::store::StoreError;
use crate::store::reads::{self, AgentRow};
use crate::store::sql::args;
use crate::store::writer::AgentActor;

/// More than a handful of tags on one chat says nothing any more.
pub const MAX_CHAT_TAGS: usize = 10;

impl Rules<'_> {
    pub(super) fn tag(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        conversation: ConversationId,
        tags: &[String],
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let c = match self.conv_for(actor, conversation)? {
            Ok(c) => c,
            Err(o) => return Ok(o),
        };
        if let Some(refused) = super::note::may_annotate(&c, actor, me) {
            return Ok(refused);
        }
        let Some(site) = reads::site_by_id(self.conn, c.site)? else {
            return Ok(rejected(ErrorCode::NotFound, "the site is gone"));
        };
        // The site's spelling, in the order the agent picked them.
        let mut set: Vec<String> = Vec::with_capacity(tags.len());
        for t in tags {
            let wanted = t.trim().to_lowercase();
            let Some(known) = site.tags.iter().find(|k| k.to_lowercase() == wanted) else {
                return Ok(rejected(
                    ErrorCode::BadRequest,
                    format!("{t:?} is not one of this site's tags"),
                ));
            };
            if !set.contains(known) {
                set.push(known.clone());
            }
        }
        if set.len() > MAX_CHAT_TAGS {
            return Ok(rejected(
                ErrorCode::BadRequest,
                format!("a conversation takes at most {MAX_CHAT_TAGS} tags"),
            ));
        }
        let before = reads::conversation_tags(self.conn, c.id)?;
        if before == set {
            return Ok(done(Some(c.id), None, now));
        }
        self.conn.execute(
            "UPDATE conversations SET tags = ?2 WHERE id = ?1",
            &args![c.id, set.join("\n")],
        )?;
        let line = Notice::Tagged {
            by: me.display_name.clone(),
            tags: set,
        };
        let m = self.system_line(&c, &line, now)?;
        Ok(done(Some(c.id), Some(m), now))
    }
}
