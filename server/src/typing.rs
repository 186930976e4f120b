//! Typing indicators both ways, and sneak peek (PROTOCOL.md 10.18).
//!
//! Signals, not data: nothing here is written to the store, the per-
//! recipient logs or a replay, and nothing is acked. A signal goes out only
//! when the receiving connection's queue has room ([`SIGNAL_ROOM`]) and is
//! dropped otherwise, so it can never hold back, cut or reorder a real
//! message; the next signal, a real message or the receiver's timeout
//! corrects whatever a dropped one would have said.
//!
//! With several nodes, the node that gets a signal throttles it, hands it
//! to its own connections and publishes it once on the bus
//! (`BusMsg::Typing`); the others hand it to theirs (`Hub::typing_heard`).

use std::sync::Arc;
use std::time::Instant;

use holdfast_protocol::agent::{AgentId, ConversationId, ConversationState, LiveEvent};

use crate::Ctx;
use crate::store::reads;

/// The most "typing" signals forwarded from one sender, per second, as
/// issue 17 asks for drafts.
pub const PER_SEC: f64 = 4.0;

/// How many may go out back to back: a little over one, so two signals a
/// widget sent 250 ms apart still both go out when the network delays the
/// first more than the second, while a flood gets 5 in its first second
/// and 4 a second after that.
const BURST: f64 = 1.25;

/// A signal is queued to a connection only while less than this is queued
/// for it: a connection with a backlog gets its real messages first.
pub const SIGNAL_ROOM: usize = 16 * 1024;

/// One sender's rate of typing signals: a token bucket of [`PER_SEC`].
/// Excess signals are dropped, never queued: a draft that comes too soon is
/// superseded by the next one.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throttle {
    /// Tokens left, as of `at`; `None`: a full bucket.
    left: Option<(f64, Instant)>,
    /// What the last forwarded signal said.
    typing: bool,
}

impl Throttle {
    /// Whether a signal at `now` goes out. A "typing" (with or without a
    /// draft) takes a token; a stop after a forwarded "typing" always goes
    /// out, so an indicator is not left on by the throttle (it is at most
    /// one per forwarded start).
    pub fn admit(&mut self, now: Instant, typing: bool) -> bool {
        if !typing {
            let ends = self.typing;
            self.typing = false;
            return ends;
        }
        let tokens = match self.left {
            None => BURST,
            Some((t, at)) => {
                (t + now.saturating_duration_since(at).as_secs_f64() * PER_SEC).min(BURST)
            }
        };
        if tokens < 1.0 {
            self.left = Some((tokens, now));
            return false;
        }
        self.left = Some((tokens - 1.0, now));
        self.typing = true;
        true
    }

    /// The sender's real message ended its typing: the next keystroke may
    /// start it again at once.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// An agent connection's throttles, one per chat it types in: a start in
/// one chat must not be dropped for a start in another just before it.
#[derive(Debug, Default)]
pub struct Throttles(std::collections::HashMap<ConversationId, Throttle>);

/// More chats than an agent types in at once; past it the map starts over
/// (at worst one signal more goes out), so a connection cannot grow it.
const THROTTLES_KEPT: usize = 64;

impl Throttles {
    pub fn admit(&mut self, conversation: ConversationId, now: Instant, typing: bool) -> bool {
        if self.0.len() >= THROTTLES_KEPT && !self.0.contains_key(&conversation) {
            self.0.clear();
        }
        self.0.entry(conversation).or_default().admit(now, typing)
    }

    /// The agent replied in `conversation` (see [`Throttle::reset`]).
    pub fn reset(&mut self, conversation: ConversationId) {
        self.0.remove(&conversation);
    }
}

/// A visitor's typing signal: to its chat's owner, or to the site's agents
/// while the chat waits; the draft only when the site has sneak peek on
/// (read now, so switching it off takes effect at the next signal).
pub async fn from_visitor(ctx: &Arc<Ctx>, visitor: &str, typing: bool, draft: Option<String>) {
    if !ctx
        .hub
        .visitor_typing_admit(visitor, typing, Instant::now())
    {
        return;
    }
    let id = visitor.to_owned();
    let target = ctx
        .reads
        .run(move |c| {
            let Some(conv) = reads::open_conversation(c, &id)? else {
                return Ok(None);
            };
            let peek = reads::site_by_id(c, conv.site)?.is_some_and(|s| s.sneak_peek);
            Ok(Some((conv, peek)))
        })
        .await;
    let (conv, peek) = match target {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(visitor, "typing signal dropped: {e}");
            return;
        }
    };
    let draft = draft.filter(|d| typing && peek && !d.trim().is_empty());
    let ev = LiveEvent::Typing {
        conversation: conv.id,
        visitor: visitor.to_owned(),
        typing,
        draft,
    };
    match (conv.state, conv.assigned) {
        (ConversationState::Active, Some(agent)) => ctx.hub.signal_agents(&[agent], None, ev),
        (ConversationState::Queued, _) => ctx.hub.signal_agents(&[], Some(conv.site), ev),
        _ => {}
    }
}

/// An agent's typing signal in `conversation`, already admitted by the
/// connection's [`Throttle`]: to the visitor's live connections, if the
/// agent owns the open chat.
pub async fn from_agent(
    ctx: &Arc<Ctx>,
    agent: AgentId,
    name: &str,
    conversation: ConversationId,
    typing: bool,
) {
    let conv = match ctx
        .reads
        .run(move |c| reads::conversation(c, conversation))
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(agent, "typing signal dropped: {e}");
            return;
        }
    };
    if conv.state != ConversationState::Active || conv.assigned != Some(agent) {
        return;
    }
    ctx.hub.agent_typing(&conv.visitor, typing.then_some(name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_of_drafts_goes_out_at_most_four_a_second_after_the_first() {
        let mut t = Throttle::default();
        let start = Instant::now();
        let sent = (0..100)
            .filter(|i| t.admit(start + Duration::from_millis(i * 10), true))
            .count();
        assert_eq!(sent, 5, "100 drafts in 1 s");
        let more = (100..200)
            .filter(|i| t.admit(start + Duration::from_millis(i * 10), true))
            .count();
        assert_eq!(more, 4, "the next second");
    }

    #[test]
    fn drafts_250_ms_apart_all_go_out_despite_jitter() {
        let mut t = Throttle::default();
        let start = Instant::now();
        // Sent every 250 ms, each delayed by 0 to 60 ms on the way.
        let jitter = [60, 0, 45, 10, 60, 0, 30, 55, 0, 20];
        for (i, j) in jitter.iter().enumerate() {
            let at = start + Duration::from_millis(250 * i as u64 + j);
            assert!(t.admit(at, true), "draft {i}");
        }
    }

    #[test]
    fn a_stop_after_a_forwarded_start_always_goes_out_once() {
        let mut t = Throttle::default();
        let now = Instant::now();
        assert!(!t.admit(now, false), "a stop with nothing to stop");
        assert!(t.admit(now, true));
        assert!(!t.admit(now + Duration::from_millis(10), true));
        assert!(t.admit(now + Duration::from_millis(20), false));
        assert!(!t.admit(now + Duration::from_millis(30), false));
        // A reply resets it: typing again shows at once.
        assert!(!t.admit(now + Duration::from_millis(40), true));
        t.reset();
        assert!(t.admit(now + Duration::from_millis(50), true));
    }
}
