//! Appending to the two event logs, and who reads which.
//!
//! Every rule that tells someone something goes through here. An event
//! gets its place in its recipient's log at once, but its seq only at the
//! end of the batch ([`finish_logs`]): the heads of all the logs the batch
//! wrote are then taken in one step, in key order, and the events written
//! with their seqs. The matching [`Effect`] is kept for the hub, to be
//! routed only once the batch is committed.
//!
//! Why at the end: with several nodes on one PostgreSQL database, a log's
//! head row stays locked from the moment it is taken until COMMIT, which
//! is what keeps each log gap-free and in commit order. Taken op by op,
//! in whatever order the ops came, two nodes writing for the same agents
//! locked heads in opposite orders and deadlocked; taken last and sorted,
//! they are held only for the last statements and the commit, and two
//! batches can only queue one behind the other.

use std::collections::HashMap;
use std::sync::Arc;

use holdfast_protocol::agent::{
    AgentId, ConversationId, ConversationInfo, ConversationState, Event, MessageId, Seq, SiteId,
};
use holdfast_protocol::visitor::VisitorEvent;
use serde::Serialize;

use super::{Rules, Staged};
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::reads::{self, agent_key, u64_col, visitor_key};
use crate::store::sql::{Db, Dialect, args};

/// An event of the batch, waiting for its seq: `n` is its place among the
/// batch's events for the same recipient (1-based).
pub(in crate::store) enum PendingEvent {
    Agent {
        agent: AgentId,
        n: Seq,
        bytes: Vec<u8>,
        at: i64,
    },
    Visitor {
        visitor: String,
        n: Seq,
        json: String,
        conversation: ConversationId,
        agent_message: Option<MessageId>,
        at: i64,
    },
}

/// End of a batch, inside its transaction: advance the head of every log
/// the batch wrote, write its events with their seqs, and turn the
/// effects' places into seqs. `committed` is the writer's cache of heads
/// (one writer on SQLite; empty on a shared database). Returns each log's
/// new head.
pub(in crate::store) fn finish_logs(
    db: &dyn Db,
    staged: &mut Staged,
    committed: &HashMap<String, Seq>,
) -> Result<HashMap<String, Seq>, StoreError> {
    if staged.counts.is_empty() {
        return Ok(HashMap::new());
    }
    let mut counts: Vec<(&String, Seq)> = staged.counts.iter().map(|(k, n)| (k, *n)).collect();
    counts.sort_unstable();
    let heads = match db.dialect() {
        Dialect::Sqlite => advance_heads_one_by_one(db, &counts, committed)?,
        Dialect::Postgres => advance_heads_at_once(db, &counts)?,
    };
    let base = |key: &str| -> Result<Seq, StoreError> {
        let head = heads.get(key).copied();
        let n = staged.counts.get(key).copied();
        match (head, n) {
            (Some(h), Some(n)) if h >= n => Ok(h - n),
            _ => Err(StoreError::Corrupt(format!("no new head for log {key}"))),
        }
    };
    match db.dialect() {
        Dialect::Sqlite => write_events_one_by_one(db, &staged.events, &base)?,
        Dialect::Postgres => write_events_at_once(db, &staged.events, &base)?,
    }
    for e in &mut staged.effects {
        match e {
            Effect::AgentEvent { agent, seq, .. } => *seq += base(&agent_key(*agent))?,
            Effect::VisitorEvent { visitor, seq, .. } => *seq += base(&visitor_key(visitor))?,
            _ => {}
        }
    }
    Ok(heads)
}

/// One writer: the heads are known (cached, or read once) and nobody else
/// can move them.
fn advance_heads_one_by_one(
    db: &dyn Db,
    counts: &[(&String, Seq)],
    committed: &HashMap<String, Seq>,
) -> Result<HashMap<String, Seq>, StoreError> {
    let mut heads = HashMap::with_capacity(counts.len());
    for &(key, n) in counts {
        let cur = match committed.get(key) {
            Some(h) => *h,
            None => reads::log_head(db, key)?,
        };
        db.execute(
            "INSERT INTO log_heads (recipient, head) VALUES (?1, ?2) \
             ON CONFLICT(recipient) DO UPDATE SET head = excluded.head",
            &args![key.as_str(), cur + n],
        )?;
        heads.insert(key.clone(), cur + n);
    }
    Ok(heads)
}

/// A shared database: one statement locks every head row in key order
/// (the same order on every node) and adds each log's count, creating the
/// rows of new recipients. A node that needs a head another node holds
/// waits for that COMMIT and then adds to the committed value.
fn advance_heads_at_once(
    db: &dyn Db,
    counts: &[(&String, Seq)],
) -> Result<HashMap<String, Seq>, StoreError> {
    #[derive(Serialize)]
    struct Row<'a> {
        r: &'a str,
        n: Seq,
    }
    let rows: Vec<Row<'_>> = counts.iter().map(|&(r, n)| Row { r, n }).collect();
    let json = to_json(&rows)?;
    db.query_rows(
        "INSERT INTO log_heads (recipient, head) \
         SELECT r, n FROM json_to_recordset(?1::text::json) AS x(r text, n bigint) ORDER BY r COLLATE \"C\" \
         ON CONFLICT (recipient) DO UPDATE SET head = log_heads.head + excluded.head \
         RETURNING recipient, head",
        &args![json],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, u64_col(r, 1)?)))
    .collect()
}

fn write_events_one_by_one(
    db: &dyn Db,
    events: &[PendingEvent],
    base: &dyn Fn(&str) -> Result<Seq, StoreError>,
) -> Result<(), StoreError> {
    for e in events {
        match e {
            PendingEvent::Agent {
                agent,
                n,
                bytes,
                at,
            } => {
                db.execute(
                    "INSERT INTO agent_events (agent_id, seq, event, at_ms) VALUES (?1, ?2, ?3, ?4)",
                    &args![*agent, base(&agent_key(*agent))? + n, bytes.as_slice(), *at],
                )?;
            }
            PendingEvent::Visitor {
                visitor,
                n,
                json,
                conversation,
                agent_message,
                at,
            } => {
                db.execute(
                    "INSERT INTO visitor_events (visitor_id, seq, event, conversation_id, agent_message, at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    &args![
                        visitor.as_str(),
                        base(&visitor_key(visitor))? + n,
                        json.as_str(),
                        *conversation,
                        *agent_message,
                        *at
                    ],
                )?;
            }
        }
    }
    Ok(())
}

/// A shared database: each log table's events in one statement, so the
/// head rows taken just before are held for two round trips and the
/// commit, however many events the batch wrote.
fn write_events_at_once(
    db: &dyn Db,
    events: &[PendingEvent],
    base: &dyn Fn(&str) -> Result<Seq, StoreError>,
) -> Result<(), StoreError> {
    #[derive(Serialize)]
    struct AgentRow {
        a: AgentId,
        s: Seq,
        e: String,
        t: i64,
    }
    #[derive(Serialize)]
    struct VisitorRow<'a> {
        v: &'a str,
        s: Seq,
        e: &'a str,
        c: ConversationId,
        m: Option<MessageId>,
        t: i64,
    }
    let mut agents = Vec::new();
    let mut visitors = Vec::new();
    for e in events {
        match e {
            PendingEvent::Agent {
                agent,
                n,
                bytes,
                at,
            } => agents.push(AgentRow {
                a: *agent,
                s: base(&agent_key(*agent))? + n,
                e: hex::encode(bytes),
                t: *at,
            }),
            PendingEvent::Visitor {
                visitor,
                n,
                json,
                conversation,
                agent_message,
                at,
            } => visitors.push(VisitorRow {
                v: visitor,
                s: base(&visitor_key(visitor))? + n,
                e: json,
                c: *conversation,
                m: *agent_message,
                t: *at,
            }),
        }
    }
    if !agents.is_empty() {
        db.execute(
            "INSERT INTO agent_events (agent_id, seq, event, at_ms) \
             SELECT a, s, decode(e, 'hex'), t \
             FROM json_to_recordset(?1::text::json) AS x(a bigint, s bigint, e text, t bigint)",
            &args![to_json(&agents)?],
        )?;
    }
    if !visitors.is_empty() {
        db.execute(
            "INSERT INTO visitor_events (visitor_id, seq, event, conversation_id, agent_message, at_ms) \
             SELECT v, s, e, c, m, t FROM json_to_recordset(?1::text::json) \
             AS x(v text, s bigint, e text, c bigint, m bigint, t bigint)",
            &args![to_json(&visitors)?],
        )?;
    }
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("log rows: {e}")))
}

impl Rules<'_> {
    /// The next place in a log, among this batch's events for it.
    fn next_place(&mut self, key: String) -> Seq {
        let n = self
            .op
            .counts
            .get(&key)
            .or_else(|| self.batch.counts.get(&key))
            .copied()
            .unwrap_or(0)
            + 1;
        self.op.counts.insert(key, n);
        n
    }

    /// A log's head as committed before this batch.
    pub(super) fn committed_head(&self, key: &str) -> Result<Seq, StoreError> {
        match self.committed_heads.get(key) {
            Some(h) => Ok(*h),
            None => reads::log_head(self.conn, key),
        }
    }

    pub(super) fn agent_event(
        &mut self,
        agent: AgentId,
        event: Event,
        at: i64,
    ) -> Result<(), StoreError> {
        let n = self.next_place(agent_key(agent));
        let bytes = reads::encode_agent_event(&event)?;
        self.op.events.push(PendingEvent::Agent {
            agent,
            n,
            bytes,
            at,
        });
        self.op.effects.push(Effect::AgentEvent {
            agent,
            seq: n,
            event: Arc::new(event),
        });
        Ok(())
    }

    pub(super) fn visitor_event(
        &mut self,
        visitor: &str,
        event: VisitorEvent,
        agent_message: Option<MessageId>,
        at: i64,
    ) -> Result<(), StoreError> {
        let n = self.next_place(visitor_key(visitor));
        let json = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conversation = match &event {
            VisitorEvent::Message(m) => m.conversation,
            VisitorEvent::Conversation(c) => c.id,
        };
        self.op.events.push(PendingEvent::Visitor {
            visitor: visitor.to_string(),
            n,
            json,
            conversation,
            agent_message,
            at,
        });
        self.op.effects.push(Effect::VisitorEvent {
            visitor: visitor.to_string(),
            seq: n,
            event: Arc::new(event),
        });
        Ok(())
    }

    pub(super) fn site_agents(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        reads::site_agent_ids(self.conn, site, false)
    }

    /// Supervisors and admins of a site, who watch every chat live.
    pub(super) fn overseers(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        reads::site_agent_ids(self.conn, site, true)
    }

    /// Who receives a conversation's messages: its agent and the site's
    /// supervisors once assigned, every agent of the site while it waits.
    pub(super) fn message_recipients(
        &self,
        c: &ConversationInfo,
    ) -> Result<Vec<AgentId>, StoreError> {
        match (c.state, c.assigned) {
            (ConversationState::Active | ConversationState::Closed, Some(a)) => {
                let mut v = self.overseers(c.site)?;
                if !v.contains(&a) {
                    v.push(a);
                }
                Ok(v)
            }
            _ => self.site_agents(c.site),
        }
    }
}
