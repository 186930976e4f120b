//! Background tasks that keep promises no request triggers.
//!
//! - [`owner_sweep`]: an agent who stays offline past the grace period gets
//!   its open chats handed back, so no chat is stranded with someone who is
//!   not there. The grace runs from the last time the agent was connected,
//!   to this node or to another on the bus, or from the server's start for
//!   agents it has not seen since (a restart does not reset anyone's clock
//!   to "connected").
//! - [`presence`]: sends agents the visitors that changed, at most every
//!   250 ms each, latest state only.
//! - [`agent_changes`]: the CLI writes `agent disable`, `agent passwd` and
//!   profile changes to the database from another process; this polls their
//!   change feed and, within a fraction of a second, ends the sessions that
//!   lost their rights and refreshes the team panel. The writer also checks
//!   every command against the account row, so nothing is applied between
//!   the change and the poll.
//! - [`forget_limits`]: drops rate-limit state of addresses and visitors
//!   that are back at a full burst, so a flood from many addresses leaves no
//!   memory behind once it stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::AgentId;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::LeaveReason;

use crate::Ctx;
use crate::store::Op;
use crate::store::reads;

/// Kinds in the `agent_changes` table.
pub const CHANGE_DISABLED: i64 = 0;
pub const CHANGE_PASSWORD: i64 = 1;
pub const CHANGE_PROFILE: i64 = 2;

/// How often the change feed is read: well inside the one second in which
/// a revoked session must end.
const CHANGES_EVERY: Duration = Duration::from_millis(200);

pub async fn owner_sweep(ctx: Arc<Ctx>) {
    let grace = ctx.cfg.owner_grace;
    let every = (grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When this sweep last saw each chat owner connected, on this node or
    // another, or first saw it own a chat. The hub's `offline_since` only
    // knows this node's own connections: for an agent connected elsewhere
    // it is unset (or as old as the agent's last connection here), and a
    // blip of that agent's link would count as an absence since then and
    // hand its chats back at once. Seen once per tick (the first one at
    // start), so a release may come up to one tick (a quarter of the grace
    // at most) early.
    let mut seen: HashMap<AgentId, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let owners = match ctx.reads.run(reads::active_owners).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("ownership sweep cannot read chat owners: {e}");
                continue;
            }
        };
        let owning: HashSet<AgentId> = owners.iter().copied().collect();
        seen.retain(|a, _| owning.contains(a));
        for agent in owners {
            if ctx.hub.connections(agent) > 0 {
                seen.insert(agent, Instant::now());
                continue;
            }
            let seen_at = *seen.entry(agent).or_insert_with(Instant::now);
            let since = ctx
                .hub
                .offline_since(agent)
                .map_or(seen_at, |t| t.max(seen_at));
            if since.elapsed() >= grace {
                // Idempotent: a second release finds nothing to hand back,
                // and the writer skips it if the agent came back meanwhile.
                let _queued = ctx.writer.try_submit(Op::ReleaseChats {
                    agent,
                    reason: LeaveReason::Offline,
                    reply: None,
                });
            }
        }
    }
}

/// Send agents what changed about visitors, coalesced (see the hub).
pub async fn presence(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.hub.presence_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => ctx.hub.flush_presence(),
        }
    }
}

/// How often idle rate-limit keys are dropped. A key is only dropped once
/// its bucket has refilled, so this cannot loosen any limit.
const FORGET_LIMITS_EVERY: Duration = Duration::from_secs(60);

pub async fn forget_limits(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(FORGET_LIMITS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => ctx.visitor_limits.prune(),
        }
    }
}

pub async fn agent_changes(ctx: Arc<Ctx>) {
    let mut cursor = match ctx.reads.run(reads::last_agent_change).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot read the agent change feed; CLI changes need a restart: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(CHANGES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per outage: a database restart would otherwise log a line
    // every tick until it is back.
    let mut failing = false;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let after = cursor;
        let changes = match ctx
            .reads
            .run(move |c| reads::agent_changes_after(c, after))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if !failing {
                    tracing::warn!("cannot read the agent change feed (until it is back): {e}");
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            tracing::info!("reading the agent change feed again");
            failing = false;
        }
        for (id, agent, kind) in changes {
            cursor = id;
            apply_change(&ctx, agent, kind).await;
        }
    }
}

async fn apply_change(ctx: &Arc<Ctx>, agent: u64, kind: i64) {
    // The row as it is now: its epoch tells sessions opened before the
    // change from one opened since with the new password.
    let row = ctx
        .reads
        .run(move |c| {
            let Some(row) = reads::agent_by_id(c, agent)? else {
                return Ok(None);
            };
            let load = reads::agent_load(c, agent)?;
            Ok(Some((row, load)))
        })
        .await;
    let (row, load) = match row {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(agent, "cannot read a changed agent: {e}");
            return;
        }
    };
    match kind {
        CHANGE_DISABLED => {
            tracing::info!(
                agent,
                "agent disabled: ending its sessions and handing back its chats"
            );
            ctx.hub.revoke(
                agent,
                ErrorCode::Disabled,
                "your account was disabled",
                i64::MAX,
            );
            let _queued = ctx
                .writer
                .submit(Op::ReleaseChats {
                    agent,
                    reason: LeaveReason::Disabled,
                    reply: None,
                })
                .await;
        }
        CHANGE_PASSWORD => {
            tracing::info!(
                agent,
                "password changed: ending the sessions opened with the old one"
            );
            ctx.hub.revoke(
                agent,
                ErrorCode::Revoked,
                "your password was changed; sign in again",
                row.auth_epoch,
            );
        }
        _ => {}
    }
    // Every change may move the team panel (disabled, name, role, capacity).
    ctx.hub
        .update_member(row.site, crate::agent_gw::team_member(&row, load));
}
