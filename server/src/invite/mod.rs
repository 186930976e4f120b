//! Proactive invitations by rule (PROTOCOL.md 10.20): the site's admins say
//! whom to invite ("on the pricing page for 30 s", "came from the spring
//! campaign", "plan is gold"), and a matching visitor's widget shows the
//! invitation by itself, at most once a visit and never while they chat.
//!
//! - [`rule`]: a rule and whether a visitor meets it, without I/O.
//! - [`admin`]: the rules as the CLI and an admin's app manage them, with
//!   the same checks, and each rule's counts (fired, shown, accepted,
//!   ignored).
//! - here: [`watch`], which tries the rules every second against the
//!   visitors connected to this node, and [`seen`], the widget's answer.
//!
//! Each node tries only its own visitors; the writer decides, so two nodes
//! (or two tabs) never both invite one visitor in a visit. The invitation
//! reaches the widget as a signal (not in the visitor's log), and the
//! site's agents see it fire as a signal too; the record of it is the
//! `invitations` table, and an accepted one starts its chat's transcript.

pub mod admin;
pub mod rule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_protocol::agent::{InvitationSignal, InvitationState, LiveEvent, SiteId};
use holdfast_protocol::visitor::InvitationEvent;

use crate::Ctx;
use crate::store::Op;
use rule::Rule;

/// How often each node tries the rules.
pub const TICK: Duration = Duration::from_secs(1);
/// How often (in ticks) the rules are read again even when no change was
/// heard of.
const RELOAD_EVERY: u32 = 5;

/// An invitation on its way to a widget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub id: u64,
    pub text: Arc<str>,
}

/// An invitation the writer recorded (or changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    pub id: u64,
    /// The rule's name.
    pub rule: String,
    pub text: String,
    pub at_ms: i64,
}

fn signal(visitor: &str, f: Fired, state: InvitationState) -> LiveEvent {
    LiveEvent::Invitation(InvitationSignal {
        visitor: visitor.to_owned(),
        id: f.id,
        rule: f.rule,
        text: f.text,
        state,
        at_ms: f.at_ms,
    })
}

/// Try the enabled rules every [`TICK`] against this node's visitors. A
/// failed read or write is logged and tried again later: an invitation is
/// a courtesy, never a message anyone was promised.
pub async fn watch(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rules: HashMap<SiteId, Vec<Rule>> = HashMap::new();
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A change the hub heard of (an admin's, or the CLI's seen by
        // `lists::watch`) takes effect at once; the periodic read is for
        // one it missed.
        if ctx.hub.take_invite_rules_changed() || ticks.is_multiple_of(RELOAD_EVERY) {
            match ctx.reads.run(|c| admin::rules(c, None)).await {
                Ok(all) => {
                    rules.clear();
                    for r in all.into_iter().filter(|r| r.enabled) {
                        rules.entry(r.site).or_default().push(r);
                    }
                }
                Err(e) => tracing::debug!("reading the invitation rules failed: {e}"),
            }
        }
        ticks = ticks.wrapping_add(1);
        let now = crate::store::now_ms();
        for (site, site_rules) in &rules {
            for v in ctx.hub.invite_candidates(*site) {
                let Some(r) = site_rules.iter().find(|r| r.matches(&v, now)) else {
                    continue;
                };
                // Asked once a visit here; the writer has the last word.
                ctx.hub.invite_tried(&v.id);
                let (visitor, rule, started) = (v.id.clone(), r.id, v.visit_started_ms);
                let fired = ctx
                    .writer
                    .call(|reply| Op::FireInvitation {
                        site: *site,
                        visitor,
                        rule,
                        visit_started_ms: started,
                        reply,
                    })
                    .await;
                match fired {
                    Ok(Some(f)) => {
                        tracing::debug!(visitor = %v.id, rule = %r.name, "invitation fired");
                        ctx.metrics.invitations_fired.inc();
                        ctx.hub.invite(
                            &v.id,
                            Invite {
                                id: f.id,
                                text: Arc::from(f.text.as_str()),
                            },
                        );
                        ctx.hub.signal_agents(
                            &[],
                            Some(*site),
                            signal(&v.id, f, InvitationState::Fired),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!("recording an invitation failed: {e}"),
                }
            }
        }
    }
}

/// The widget of `visitor` (of `site`) showed invitation `id`, or the
/// visitor closed it: record it, and tell the site's agents. Someone
/// else's invitation, or a repeat, changes nothing.
pub async fn seen(ctx: &Arc<Ctx>, site: SiteId, visitor: &str, id: u64, event: InvitationEvent) {
    let dismissed = event == InvitationEvent::Dismissed;
    let who = visitor.to_owned();
    let r = ctx
        .writer
        .call(|reply| Op::InvitationSeen {
            visitor: who,
            id,
            dismissed,
            reply,
        })
        .await;
    match r {
        Ok(Some(f)) => {
            let state = if dismissed {
                InvitationState::Dismissed
            } else {
                InvitationState::Shown
            };
            ctx.hub
                .signal_agents(&[], Some(site), signal(visitor, f, state));
        }
        Ok(None) => {}
        Err(e) => tracing::debug!("recording an invitation's answer failed: {e}"),
    }
}
