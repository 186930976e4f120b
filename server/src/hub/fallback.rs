//! The hub's side of presence's PostgreSQL copy (`store::presence_pg`):
//! a thread that writes this node's entries when they change and a
//! heartbeat every [`remote::ANNOUNCE_EVERY`], and the replacement of the
//! other nodes' entries by what the copy says, which `remote::follow` asks
//! for every second while the bus is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{AgentId, SiteId};
use tokio_util::sync::CancellationToken;

use super::{Hub, remote};
use crate::bus::PresenceDelta;
use crate::store::PgTarget;
use crate::store::presence_pg::{self, AgentEntry, Entries};

/// How often the writer looks for changes: presence is already coalesced
/// to 250 ms for agents, and this bounds the copy's lag the same way.
const WRITE_EVERY: Duration = Duration::from_millis(500);

impl Hub {
    /// This node's live entries, as `announce_all` tells them.
    pub fn own_entries(&self) -> Entries {
        let st = self.lock();
        Entries {
            agents: st
                .agents
                .iter()
                .filter(|(_, a)| !a.conns.is_empty())
                .map(|(id, a)| {
                    let entry = AgentEntry {
                        site: a.site,
                        presence: a.presence,
                        connections: u32::try_from(a.conns.len()).unwrap_or(u32::MAX),
                    };
                    (*id, entry)
                })
                .collect(),
            visitors: st
                .visitors
                .iter()
                .filter(|(_, v)| v.info.online)
                .map(|(id, v)| (id.clone(), v.info.clone()))
                .collect(),
        }
    }

    /// Replace the other nodes' entries with the copy's (`others`: every
    /// node heard from lately): what is gone there is gone here, and a
    /// node missing from it has no entries. Agents to read a team row of
    /// (see [`Hub::remote_presence`]).
    pub fn remote_replace(&self, others: &HashMap<String, Entries>) -> Vec<(SiteId, AgentId)> {
        let mut deltas: Vec<(Arc<str>, PresenceDelta)> = Vec::new();
        {
            let st = self.lock();
            for (node, n) in &st.remote.nodes {
                let fresh = others.get(&**node);
                for (agent, a) in &n.agents {
                    if fresh.is_none_or(|f| !f.agents.contains_key(agent)) {
                        let delta = PresenceDelta::Agent {
                            site: a.site,
                            agent: *agent,
                            presence: a.presence,
                            connections: 0,
                        };
                        deltas.push((node.clone(), delta));
                    }
                }
                for (visitor, v) in &n.visitors {
                    if fresh.is_none_or(|f| !f.visitors.contains_key(visitor)) {
                        let delta = PresenceDelta::VisitorGone {
                            site: v.info.site,
                            visitor: visitor.clone(),
                        };
                        deltas.push((node.clone(), delta));
                    }
                }
            }
        }
        for (node, e) in others {
            let node: Arc<str> = Arc::from(node.as_str());
            for (agent, a) in &e.agents {
                let delta = PresenceDelta::Agent {
                    site: a.site,
                    agent: *agent,
                    presence: a.presence,
                    connections: a.connections,
                };
                deltas.push((node.clone(), delta));
            }
            for info in e.visitors.values() {
                let delta = PresenceDelta::Visitor(Box::new(info.clone()));
                deltas.push((node.clone(), delta));
            }
        }
        deltas
            .into_iter()
            .filter_map(|(node, d)| self.remote_presence(node, d))
            .collect()
    }
}

/// Keep this node's copy of its presence in PostgreSQL until shutdown, on
/// a thread of its own (the client blocks). A write that fails is redone
/// whole once the database is back.
pub fn spawn_writer(
    hub: Arc<Hub>,
    target: PgTarget,
    node: String,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("holdfast-presence".into())
        .spawn(move || write_loop(&hub, &target, &node, &shutdown))
}

fn write_loop(hub: &Hub, target: &PgTarget, node: &str, shutdown: &CancellationToken) {
    let mut conn: Option<crate::store::PgConn> = None;
    let mut written: Option<Entries> = None;
    let mut beat: Option<Instant> = None;
    let mut failing = false;
    // Whatever a previous run under this node id left is replaced at once.
    hub.presence_dirty.store(true, Ordering::Relaxed);
    while !shutdown.is_cancelled() {
        std::thread::sleep(WRITE_EVERY);
        let c = match conn.take().filter(|c| !c.is_broken()) {
            Some(c) => c,
            None => match target.connect() {
                Ok(c) => {
                    written = None;
                    hub.presence_dirty.store(true, Ordering::Relaxed);
                    c
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!("presence copy: cannot reach the database: {e}");
                        failing = true;
                    }
                    continue;
                }
            },
        };
        let mut ok = true;
        if hub.presence_dirty.swap(false, Ordering::Relaxed) {
            let now = hub.own_entries();
            if written.as_ref() != Some(&now) {
                match presence_pg::write(&c, node, written.as_ref(), &now) {
                    Ok(()) => written = Some(now),
                    Err(e) => {
                        ok = false;
                        if !failing {
                            tracing::warn!("presence copy: cannot write: {e}");
                        }
                    }
                }
            }
        }
        if ok && beat.is_none_or(|t| t.elapsed() >= remote::ANNOUNCE_EVERY) {
            match presence_pg::heartbeat(&c, node) {
                Ok(()) => beat = Some(Instant::now()),
                Err(e) => {
                    ok = false;
                    if !failing {
                        tracing::warn!("presence copy: cannot write the heartbeat: {e}");
                    }
                }
            }
        }
        if ok {
            failing = false;
            conn = Some(c);
        } else {
            failing = true;
            written = None;
            hub.presence_dirty.store(true, Ordering::Relaxed);
        }
    }
    // A clean stop: the others drop this node's entries at once.
    if let Some(c) = conn
        && let Err(e) = presence_pg::clear(&c, node)
    {
        tracing::debug!("presence copy: cannot clear at shutdown: {e}");
    }
}
