//! `Action::SaveInviteRule`, `DeleteInviteRule` and `EnableInviteRule`: an
//! admin manages the site's invitation rules from the app (PROTOCOL.md
//! 10.20) with the checks and words of the CLI (`invite::admin`). Another
//! site's rule is answered as one that does not exist. After a change,
//! the site's admins signed in get the new list, on every node
//! ([`Effect::InviteRules`]).

use holdfast_protocol::agent::{InviteRuleSpec, Outcome, Role};
use holdfast_protocol::error::ErrorCode;

use super::{Rules, done, rejected};
use crate::admin::AdminError;
use crate::invite::admin;
use crate::invite::rule::Rule;
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::reads::AgentRow;
use crate::store::writer::AgentActor;

/// What an admin's command asks.
pub(super) enum Change<'a> {
    Save(Option<u64>, &'a InviteRuleSpec),
    Delete(u64),
    Enable(u64, bool),
}

impl Rules<'_> {
    pub(super) fn change_invite_rule(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        change: Change<'_>,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        if me.role != Role::Admin {
            return Ok(rejected(
                ErrorCode::Forbidden,
                "only an admin may change the site's invitation rules",
            ));
        }
        // Two admins adding at once must not both pass the count and name
        // checks: the site's row is the lock, as for canned replies.
        crate::canned::lock_site(self.conn, actor.site)?;
        let rule = |id: u64| -> Result<Result<Rule, Outcome>, StoreError> {
            let found = match i64::try_from(id) {
                Ok(id) => admin::rule_of(self.conn, actor.site, id)?,
                Err(_) => None,
            };
            Ok(found
                .ok_or_else(|| rejected(ErrorCode::NotFound, format!("no invitation rule {id}"))))
        };
        let result = match change {
            Change::Save(None, spec) => {
                admin::add_rule_to(self.conn, actor.site, &spec.into()).map(drop)
            }
            Change::Save(Some(id), spec) => match rule(id)? {
                Ok(old) => admin::update_rule(self.conn, &old, &spec.into()).map(drop),
                Err(o) => return Ok(o),
            },
            Change::Delete(id) => match rule(id)? {
                Ok(old) => admin::delete_rule(self.conn, old.id).map_err(AdminError::from),
                Err(o) => return Ok(o),
            },
            Change::Enable(id, on) => match rule(id)? {
                Ok(old) => admin::enable_rule(self.conn, old.id, on).map_err(AdminError::from),
                Err(o) => return Ok(o),
            },
        };
        match result {
            Ok(()) => {
                self.op
                    .effects
                    .push(Effect::InviteRules { site: actor.site });
                Ok(done(None, None, now))
            }
            Err(AdminError::Store(e)) => Err(e),
            // The CLI's words, so both refuse alike.
            Err(e) => Ok(rejected(ErrorCode::BadRequest, e.to_string())),
        }
    }
}
