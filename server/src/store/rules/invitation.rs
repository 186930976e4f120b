//! `Op::FireInvitation` and `Op::InvitationSeen`: an invitation rule fires
//! for a visitor, at most once a visit and never while they chat; the
//! widget says it showed it, or the visitor closed it. Accepting is
//! replying: [`Rules::accept_invitation`] runs when that reply opens a chat.

use holdfast_protocol::agent::{ConversationInfo, InvitationSignal, InvitationState, SiteId};
use holdfast_protocol::notice::Notice;

use super::Rules;
use crate::invite::Fired;
use crate::invite::rule::VISIT_GAP_MS;
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::sql::args;

impl Rules<'_> {
    /// Record that `rule` invites `visitor` now, unless the visitor chats,
    /// was invited in this visit (from `visit_started_ms`, or within a
    /// visit's gap, whichever is earlier: another node may have begun the
    /// visit earlier), or the rule is gone or off. `None`: nothing to send.
    pub(in crate::store) fn fire_invitation(
        &mut self,
        site: SiteId,
        visitor: &str,
        rule: i64,
        visit_started_ms: i64,
        now: i64,
    ) -> Result<Option<Fired>, StoreError> {
        let Some(r) = self.conn.query_opt(
            "SELECT name, text FROM invite_rules WHERE id = ?1 AND site_id = ?2 AND enabled = 1",
            &args![rule, site],
        )?
        else {
            return Ok(None);
        };
        let (name, text): (String, String) = (r.get(0)?, r.get(1)?);
        if self.open_conversation_locked(visitor)?.is_some() {
            return Ok(None);
        }
        let since = visit_started_ms.min(now - VISIT_GAP_MS);
        let earlier = self.conn.query_opt(
            "SELECT id FROM invitations WHERE visitor_id = ?1 AND fired_ms >= ?2 LIMIT 1",
            &args![visitor, since],
        )?;
        if earlier.is_some() {
            return Ok(None);
        }
        let row = self
            .conn
            .query_opt(
                "INSERT INTO invitations (site_id, rule_id, visitor_id, text, fired_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                &args![site, rule, visitor, &text, now],
            )?
            .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
        Ok(Some(Fired {
            id: row.get(0)?,
            rule: name,
            text,
            at_ms: now,
        }))
    }

    /// The widget showed the invitation `id` (or the visitor closed it,
    /// with `dismissed`). Only the visitor's own, and not once accepted;
    /// the first time of each counts. `None` when nothing changed.
    pub(in crate::store) fn invitation_seen(
        &mut self,
        visitor: &str,
        id: u64,
        dismissed: bool,
        now: i64,
    ) -> Result<Option<Fired>, StoreError> {
        let sql = if dismissed {
            "UPDATE invitations SET dismissed_ms = ?3, shown_ms = COALESCE(shown_ms, ?3) \
             WHERE id = ?1 AND visitor_id = ?2 AND accepted_ms IS NULL AND dismissed_ms IS NULL"
        } else {
            "UPDATE invitations SET shown_ms = ?3 \
             WHERE id = ?1 AND visitor_id = ?2 AND shown_ms IS NULL"
        };
        if self.conn.execute(sql, &args![id, visitor, now])? == 0 {
            return Ok(None);
        }
        self.fired(id, now)
    }

    fn fired(&self, id: u64, now: i64) -> Result<Option<Fired>, StoreError> {
        let Some(r) = self.conn.query_opt(
            "SELECT i.text, r.name FROM invitations i \
             LEFT JOIN invite_rules r ON r.id = i.rule_id WHERE i.id = ?1",
            &args![id],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(Fired {
            id,
            text: r.get(0)?,
            rule: r
                .get::<Option<String>>(1)?
                .unwrap_or_else(|| "(removed rule)".into()),
            at_ms: now,
        }))
    }

    /// The visitor's first words opened chat `c`: if they answer an
    /// invitation the widget showed in this visit (and the visitor did not
    /// close it), that invitation is accepted, and the chat starts with its
    /// words so the agent sees what the visitor replied to.
    pub(super) fn accept_invitation(
        &mut self,
        c: &ConversationInfo,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(r) = self.conn.query_opt(
            "SELECT id FROM invitations WHERE visitor_id = ?1 AND shown_ms IS NOT NULL \
             AND accepted_ms IS NULL AND dismissed_ms IS NULL AND fired_ms >= ?2 \
             ORDER BY id DESC LIMIT 1",
            &args![&c.visitor, now - VISIT_GAP_MS],
        )?
        else {
            return Ok(());
        };
        let id: u64 = r.get(0)?;
        self.conn.execute(
            "UPDATE invitations SET accepted_ms = ?2, conversation_id = ?3 WHERE id = ?1",
            &args![id, now, c.id],
        )?;
        if let Some(f) = self.fired(id, now)? {
            self.op.effects.push(Effect::Invitation {
                site: c.site,
                signal: InvitationSignal {
                    visitor: c.visitor.clone(),
                    id,
                    rule: f.rule.clone(),
                    text: f.text.clone(),
                    state: InvitationState::Accepted,
                    at_ms: now,
                },
            });
            self.system_line(
                c,
                &Notice::Invited {
                    rule: f.rule,
                    text: f.text,
                },
                now,
            )?;
        }
        Ok(())
    }
}
