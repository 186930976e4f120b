//! Presence's copy in PostgreSQL (issue 15), for when the bus is down.
//!
//! Presence travels on the bus; while Redis is down nothing can be heard,
//! so without this copy the other nodes' entries would freeze: someone who
//! left stays listed, and a node that dies keeps its entries. So each node
//! also keeps its live entries here, written when they change (never
//! re-written by the periodic announcements), with a heartbeat row every
//! few seconds; the others read it only while their bus is down, and a
//! node whose heartbeat is older than [`HEARD_WITHIN_MS`] has no entries.
//!
//! The heartbeat is the database's clock, so the nodes' own clocks do not
//! matter. PostgreSQL only: on SQLite each node has its own database and
//! there is nobody to share presence with.

use std::collections::HashMap;

use holdfast_protocol::agent::{AgentId, Presence, SiteId, VisitorInfo};

use super::StoreError;
use super::sql::{Db, args, transaction};

/// A node not heard of for this long is gone: as on the bus, three
/// heartbeats missed.
pub const HEARD_WITHIN_MS: i64 = 12_000;

/// The database's clock in milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// One agent's entry on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentEntry {
    pub site: SiteId,
    pub presence: Presence,
    pub connections: u32,
}

/// One node's live entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub agents: HashMap<AgentId, AgentEntry>,
    pub visitors: HashMap<String, VisitorInfo>,
}

fn presence_to_int(p: Presence) -> i64 {
    match p {
        Presence::Online => 0,
        Presence::Away => 1,
        Presence::Offline => 2,
    }
}

fn presence_from_int(i: i64) -> Presence {
    match i {
        0 => Presence::Online,
        1 => Presence::Away,
        _ => Presence::Offline,
    }
}

/// Say that `node` is alive now.
pub fn heartbeat(db: &dyn Db, node: &str) -> Result<(), StoreError> {
    db.execute(
        &format!(
            "INSERT INTO nodes (node_id, heard_ms) VALUES (?1, {NOW_MS}) \
             ON CONFLICT (node_id) DO UPDATE SET heard_ms = excluded.heard_ms"
        ),
        &args![node],
    )?;
    Ok(())
}

/// Write `now`, the node's entries, given what was last written (`None`:
/// unknown, after a start or a failed write: everything is replaced).
/// Only what differs is written.
pub fn write(
    db: &dyn Db,
    node: &str,
    before: Option<&Entries>,
    now: &Entries,
) -> Result<(), StoreError> {
    transaction(db, |db| {
        let empty = Entries::default();
        let before = match before {
            Some(b) => b,
            None => {
                clear(db, node)?;
                &empty
            }
        };
        for (id, a) in &now.agents {
            if before.agents.get(id) != Some(a) {
                db.execute(
                    "INSERT INTO node_agents (node_id, agent_id, site_id, presence, connections) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node_id, agent_id) DO UPDATE SET \
                     site_id = excluded.site_id, presence = excluded.presence, \
                     connections = excluded.connections",
                    &args![
                        node,
                        *id,
                        a.site,
                        presence_to_int(a.presence),
                        a.connections
                    ],
                )?;
            }
        }
        for id in before
            .agents
            .keys()
            .filter(|id| !now.agents.contains_key(id))
        {
            db.execute(
                "DELETE FROM node_agents WHERE node_id = ?1 AND agent_id = ?2",
                &args![node, *id],
            )?;
        }
        for (id, v) in &now.visitors {
            if before.visitors.get(id) != Some(v) {
                let info = serde_json::to_string(v)
                    .map_err(|e| StoreError::Corrupt(format!("visitor presence: {e}")))?;
                db.execute(
                    "INSERT INTO node_visitors (node_id, visitor_id, site_id, info) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (node_id, visitor_id) DO UPDATE SET \
                     site_id = excluded.site_id, info = excluded.info",
                    &args![node, id, v.site, info],
                )?;
            }
        }
        for id in before
            .visitors
            .keys()
            .filter(|id| !now.visitors.contains_key(*id))
        {
            db.execute(
                "DELETE FROM node_visitors WHERE node_id = ?1 AND visitor_id = ?2",
                &args![node, id],
            )?;
        }
        Ok(())
    })
}

/// Forget `node`'s entries (it starts, or stops cleanly).
pub fn clear(db: &dyn Db, node: &str) -> Result<(), StoreError> {
    db.execute("DELETE FROM node_agents WHERE node_id = ?1", &args![node])?;
    db.execute("DELETE FROM node_visitors WHERE node_id = ?1", &args![node])?;
    Ok(())
}

/// Every other node heard from within [`HEARD_WITHIN_MS`], with its
/// entries (a live node with none is there, empty).
pub fn others(db: &dyn Db, node: &str) -> Result<HashMap<String, Entries>, StoreError> {
    let alive = format!("heard_ms > {NOW_MS} - {HEARD_WITHIN_MS}");
    let mut out: HashMap<String, Entries> = HashMap::new();
    for r in db.query_rows(
        &format!("SELECT node_id FROM nodes WHERE node_id <> ?1 AND {alive}"),
        &args![node],
    )? {
        out.insert(r.get(0)?, Entries::default());
    }
    if out.is_empty() {
        return Ok(out);
    }
    for r in db.query_rows(
        &format!(
            "SELECT a.node_id, a.agent_id, a.site_id, a.presence, a.connections \
             FROM node_agents a JOIN nodes n ON n.node_id = a.node_id \
             WHERE a.node_id <> ?1 AND n.{alive}"
        ),
        &args![node],
    )? {
        let n: String = r.get(0)?;
        if let Some(e) = out.get_mut(&n) {
            e.agents.insert(
                r.get(1)?,
                AgentEntry {
                    site: r.get(2)?,
                    presence: presence_from_int(r.get(3)?),
                    connections: u32::try_from(r.get::<u64>(4)?).unwrap_or(u32::MAX),
                },
            );
        }
    }
    for r in db.query_rows(
        &format!(
            "SELECT v.node_id, v.info FROM node_visitors v JOIN nodes n ON n.node_id = v.node_id \
             WHERE v.node_id <> ?1 AND n.{alive}"
        ),
        &args![node],
    )? {
        let n: String = r.get(0)?;
        let info: VisitorInfo = match serde_json::from_str(&r.get::<String>(1)?) {
            Ok(i) => i,
            // Written by a newer node, say: that visitor is left out.
            Err(_) => continue,
        };
        if let Some(e) = out.get_mut(&n) {
            e.visitors.insert(info.id.clone(), info);
        }
    }
    Ok(out)
}
