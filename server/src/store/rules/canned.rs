//! `Action::SaveCanned` and `Action::DeleteCanned`: add, replace or delete
//! a canned reply (PROTOCOL.md 10.21). An agent manages its own list; only
//! an admin changes the site's. A reply of another agent or another site
//! is answered as one that does not exist, so ids cannot be probed. After
//! a change, every connection that uses the list reads it again
//! ([`Effect::Canned`]), on every node.

use holdfast_protocol::agent::{Outcome, Role};
use holdfast_protocol::error::ErrorCode;

use super::{Rules, done, rejected};
use crate::canned::{self, Owner, Stored};
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::reads::AgentRow;
use crate::store::writer::AgentActor;

/// What a save asks for.
pub(super) struct Save<'a> {
    pub id: Option<u64>,
    pub personal: bool,
    pub shortcut: &'a str,
    pub body: &'a str,
}

impl Rules<'_> {
    /// Reply `id` if the actor may see it: the site's, or its own.
    fn visible_canned(
        &self,
        actor: &AgentActor,
        id: u64,
    ) -> Result<Result<Stored, Outcome>, StoreError> {
        match canned::by_id(self.conn, id)? {
            Some(s)
                if s.site == actor.site
                    && (s.owner == Owner::Site || s.owner == Owner::Agent(actor.id)) =>
            {
                Ok(Ok(s))
            }
            _ => Ok(Err(rejected(
                ErrorCode::NotFound,
                format!("no canned reply {id}"),
            ))),
        }
    }

    fn may_change(me: &AgentRow, owner: Owner) -> Option<Outcome> {
        (owner == Owner::Site && me.role != Role::Admin).then(|| {
            rejected(
                ErrorCode::Forbidden,
                "only an admin may change the site's canned replies",
            )
        })
    }

    pub(super) fn save_canned(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        save: &Save<'_>,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        let owner = if save.personal {
            Owner::Agent(actor.id)
        } else {
            Owner::Site
        };
        canned::lock_site(self.conn, actor.site)?;
        let replaced = match save.id {
            None => None,
            Some(id) => match self.visible_canned(actor, id)? {
                Ok(s) if s.owner != owner => {
                    return Ok(rejected(
                        ErrorCode::BadRequest,
                        format!(
                            "reply {id} is in {}; a reply cannot move to {}",
                            s.owner.describe(),
                            owner.describe()
                        ),
                    ));
                }
                Ok(s) => Some(s),
                Err(o) => return Ok(o),
            },
        };
        if let Some(refused) = Self::may_change(me, owner) {
            return Ok(refused);
        }
        if let Err(why) =
            canned::check_shortcut(save.shortcut).and_then(|()| canned::check_body(save.body))
        {
            return Ok(rejected(ErrorCode::BadRequest, why));
        }
        let list = canned::list(self.conn, actor.site, owner)?;
        let key = canned::key(save.shortcut);
        let replaced_id = replaced.as_ref().map(|r| r.reply.id);
        let others = || list.iter().filter(move |s| Some(s.reply.id) != replaced_id);
        if let Some(taken) = others().find(|s| s.key == key) {
            return Ok(rejected(
                ErrorCode::Conflict,
                format!(
                    "{:?} is already a shortcut in {} (as {:?})",
                    save.shortcut,
                    owner.describe(),
                    taken.reply.shortcut
                ),
            ));
        }
        let count = others().count() + 1;
        let bytes = others()
            .map(|s| canned::weight(&s.reply.shortcut, &s.reply.body))
            .sum::<usize>()
            + canned::weight(save.shortcut, save.body);
        if let Err(why) = canned::check_size(owner, count, bytes) {
            return Ok(rejected(ErrorCode::BadRequest, why));
        }
        match &replaced {
            Some(r) => canned::update(self.conn, r.reply.id, save.shortcut, save.body, now)?,
            None => {
                canned::insert(self.conn, actor.site, owner, save.shortcut, save.body, now)?;
            }
        }
        self.op.effects.push(Effect::Canned {
            site: actor.site,
            owner: owner.agent(),
        });
        Ok(done(None, None, now))
    }

    pub(super) fn delete_canned(
        &mut self,
        actor: &AgentActor,
        me: &AgentRow,
        id: u64,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        canned::lock_site(self.conn, actor.site)?;
        let s = match self.visible_canned(actor, id)? {
            Ok(s) => s,
            Err(o) => return Ok(o),
        };
        if let Some(refused) = Self::may_change(me, s.owner) {
            return Ok(refused);
        }
        canned::delete(self.conn, id)?;
        self.op.effects.push(Effect::Canned {
            site: actor.site,
            owner: s.owner.agent(),
        });
        Ok(done(None, None, now))
    }
}
