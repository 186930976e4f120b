//! The other nodes' live connections as this node hears of them on the bus
//! (issue 15), and the task that follows the bus.
//!
//! Presence is not stored: each node announces its agents and visitors
//! when they change and all of them every [`ANNOUNCE_EVERY`], and an entry
//! not heard of for [`EXPIRE_AFTER`] is dropped, so a node that dies takes
//! its entries with it within 15 s. While the bus is down nothing can be
//! heard, so nothing expires then (see [`RemoteState::expire`]); when it is
//! back every node re-announces at once.
//!
//! Delivery never comes from a bus message's content: a wake (or a gap, or
//! the follower's timer) only tells the local connections to read the log
//! from their cursor ([`crate::hub::AgentPush::CatchUp`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{AgentId, Presence, SiteId, VisitorInfo};

use crate::Ctx;
use crate::bus::{Follower, Next, Why};

/// How often a node announces all of its live entries.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(4);
/// An entry not re-announced for this long is gone: three announcements
/// missed. With the 1 s expiry sweep an entry of a dead node is gone at
/// most 13 s after the node's last announcement, within the 15 s promised.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(12);

#[derive(Debug, Clone)]
pub(super) struct RemoteAgent {
    pub site: SiteId,
    pub presence: Presence,
    pub conns: u32,
    pub heard: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct RemoteVisitor {
    pub info: VisitorInfo,
    pub heard: Instant,
}

/// One other node's entries, keyed by its `node_id` (which must therefore
/// be unique per node; the default, the host name, is).
#[derive(Debug, Default)]
pub(super) struct RemoteNode {
    pub agents: HashMap<AgentId, RemoteAgent>,
    pub visitors: HashMap<String, RemoteVisitor>,
}

#[derive(Debug, Default)]
pub(super) struct RemoteState {
    pub nodes: HashMap<Arc<str>, RemoteNode>,
}

impl RemoteState {
    /// Connections of the agent on other nodes, and its presence there
    /// (the first node's that has any).
    pub fn agent(&self, agent: AgentId) -> Option<(SiteId, Presence, usize)> {
        let mut found: Option<(SiteId, Presence, usize)> = None;
        for n in self.nodes.values() {
            if let Some(a) = n.agents.get(&agent).filter(|a| a.conns > 0) {
                let conns = a.conns as usize;
                found = Some(match found {
                    // Online anywhere wins: it is what auto-assignment asks.
                    Some((s, p, c)) => {
                        let p = if p == Presence::Online { p } else { a.presence };
                        (s, p, c + conns)
                    }
                    None => (a.site, a.presence, conns),
                });
            }
        }
        found
    }

    /// The site's agents connected to other nodes, with their presence.
    pub fn agents_of_site(&self, site: SiteId) -> Vec<(AgentId, Presence)> {
        let mut ids: Vec<AgentId> = self
            .nodes
            .values()
            .flat_map(|n| n.agents.iter())
            .filter(|(_, a)| a.site == site && a.conns > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| self.agent(id).map(|(_, p, _)| (id, p)))
            .collect()
    }

    /// A visitor live on another node, the most recently heard copy.
    pub fn visitor(&self, id: &str) -> Option<&VisitorInfo> {
        self.nodes
            .values()
            .filter_map(|n| n.visitors.get(id))
            .max_by_key(|v| v.heard)
            .map(|v| &v.info)
    }

    pub fn visitors_of_site(&self, site: SiteId) -> Vec<VisitorInfo> {
        let mut out: HashMap<&str, &RemoteVisitor> = HashMap::new();
        for n in self.nodes.values() {
            for (id, v) in n.visitors.iter().filter(|(_, v)| v.info.site == site) {
                let newer = out.get(id.as_str()).is_none_or(|o| o.heard < v.heard);
                if newer {
                    out.insert(id, v);
                }
            }
        }
        out.into_values().map(|v| v.info.clone()).collect()
    }

    /// Forget entries not heard of for `max_age`; what was dropped, for
    /// the caller to tell its agents.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> Expired {
        let mut gone = Expired::default();
        for n in self.nodes.values_mut() {
            n.agents.retain(|id, a| {
                let keep = now.saturating_duration_since(a.heard) < max_age;
                if !keep {
                    gone.agents.push((*id, a.site, a.presence));
                }
                keep
            });
            n.visitors.retain(|id, v| {
                let keep = now.saturating_duration_since(v.heard) < max_age;
                if !keep {
                    gone.visitors.push((id.clone(), v.info.site));
                }
                keep
            });
        }
        self.nodes
            .retain(|_, n| !n.agents.is_empty() || !n.visitors.is_empty());
        gone
    }

    /// The bus was down: nothing could be heard, so count from now.
    pub fn refresh(&mut self, now: Instant) {
        for n in self.nodes.values_mut() {
            n.agents.values_mut().for_each(|a| a.heard = now);
            n.visitors.values_mut().for_each(|v| v.heard = now);
        }
    }
}

/// What [`RemoteState::expire`] dropped.
#[derive(Debug, Default)]
pub(super) struct Expired {
    pub agents: Vec<(AgentId, SiteId, Presence)>,
    pub visitors: Vec<(String, SiteId)>,
}

/// Follow the bus for this node until shutdown: wakes become catch-up
/// reads of one recipient, gaps and the follower's timer catch-up reads of
/// every local connection, presence deltas the remote entries; and this
/// node's own entries are announced every [`ANNOUNCE_EVERY`].
pub async fn follow(ctx: Arc<Ctx>, bus: Arc<dyn crate::bus::Bus>) {
    let mut follower = Follower::new(&*bus);
    let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expire = tokio::time::interval(Duration::from_secs(1));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            next = follower.next() => match next {
                None => return,
                Some(Next::Wake { recipient, seq }) => ctx.hub.wake(&recipient, seq),
                Some(Next::ReadAll(why)) => {
                    tracing::trace!(?why, health = ?follower.health(), "bus: reading every local connection");
                    ctx.hub.wake_all();
                    if why == Why::Gap {
                        // Resubscribed (or went down): whatever was missed
                        // is re-announced by everyone, and entries get a
                        // fresh lease instead of expiring for our outage.
                        ctx.hub.refresh_remote();
                        ctx.hub.announce_all();
                    }
                }
                Some(Next::Presence { node, delta }) => ctx.hub.remote_presence(node, delta),
            },
            _ = announce.tick() => ctx.hub.announce_all(),
            _ = expire.tick() => {
                // While the bus is down nothing can be re-announced: keep
                // the last known entries rather than call live agents on
                // other nodes offline (which would hand back their chats).
                if follower.health() == crate::bus::Health::Up {
                    ctx.hub.expire_remote(EXPIRE_AFTER);
                }
            }
        }
    }
}
