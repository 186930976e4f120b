//! `Action::SetPresence`: an agent goes online or away.

use holdfast_protocol::agent::{Outcome, Presence};

use super::{Tx, done};
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::writer::AgentActor;

impl Tx<'_> {
    pub(super) fn set_presence(
        &mut self,
        actor: &AgentActor,
        presence: Presence,
        now: i64,
    ) -> Result<Outcome, StoreError> {
        // Presence is live state, not data: the hub holds it. The
        // command is still durable so its ack means "applied".
        self.hub.set_presence(actor.id, presence);
        self.ctx.effects.push(Effect::Presence {
            agent: actor.id,
            presence,
        });
        if presence == Presence::Online {
            self.assign_queued(actor.site, None)?;
        }
        Ok(done(None, None, now))
    }
}
