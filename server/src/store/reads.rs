//! Read queries. Each takes a plain `&dyn Db`, so the writer thread can
//! use the same code inside its transaction, on either engine.

use super::StoreError;
use super::sql::{Db, Dialect, Row, args};
use holdfast_protocol::agent::{
    AgentId, AttachmentInfo, Author, ChatMessage, ConversationId, ConversationInfo,
    ConversationState, Event, MessageId, PageView, QueryResult, Role, Seq, SiteId, VisitorInfo,
};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;
use holdfast_protocol::visitor::{
    ConversationView, Sender, VisitorConvState, VisitorEvent, VisitorMessage,
};

/// The most message bytes in one page of history: a quarter of the smallest
/// frame a client accepts, so no page can outgrow a frame.
pub const HISTORY_PAGE_BYTES: usize = 256 * 1024;

/// The most message bytes a visitor's snapshot carries (its newest ones).
pub const VISITOR_SNAPSHOT_BYTES: usize = 64 * 1024;

/// How many page views of a visitor's trail are kept in memory and sent live.
pub const TRAIL_LEN: usize = 20;

mod accounts;
pub use accounts::*;

pub fn state_to_int(s: ConversationState) -> i64 {
    match s {
        ConversationState::Queued => 0,
        ConversationState::Active => 1,
        ConversationState::Closed => 2,
        ConversationState::LeftMessage => 3,
    }
}

pub fn state_from_int(i: i64) -> ConversationState {
    match i {
        0 => ConversationState::Queued,
        1 => ConversationState::Active,
        3 => ConversationState::LeftMessage,
        _ => ConversationState::Closed,
    }
}

pub fn visitor_state(s: ConversationState) -> VisitorConvState {
    match s {
        ConversationState::Queued => VisitorConvState::Queued,
        ConversationState::Active => VisitorConvState::Active,
        ConversationState::Closed => VisitorConvState::Closed,
        ConversationState::LeftMessage => VisitorConvState::LeftMessage,
    }
}

pub const AUTHOR_VISITOR: i64 = 0;
pub const AUTHOR_AGENT: i64 = 1;
pub const AUTHOR_SYSTEM: i64 = 2;
/// An agent's internal note (stored `internal`, like agent-only notices).
pub const AUTHOR_NOTE: i64 = 3;

pub(crate) fn u64_col(row: &Row, i: usize) -> Result<u64, StoreError> {
    row.get(i)
}

fn opt_u64_col(row: &Row, i: usize) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = row.get(i)?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn agent_key(agent: AgentId) -> String {
    format!("a:{agent}")
}

pub fn visitor_key(visitor: &str) -> String {
    format!("v:{visitor}")
}

/// The newest seq ever assigned to a recipient.
pub fn log_head(conn: &dyn Db, recipient: &str) -> Result<Seq, StoreError> {
    let head: Option<i64> = conn
        .query_opt(
            "SELECT head FROM log_heads WHERE recipient = ?1",
            &args![recipient],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    Ok(head.and_then(|h| u64::try_from(h).ok()).unwrap_or(0))
}

/// How many recipients one [`log_heads`] query asks about: 5,000 keys
/// are about 100 KB of parameter; a node with more live recipients makes
/// one query per 5,000.
pub const LOG_HEADS_BATCH: usize = 5000;

/// The heads of many recipients' logs in one query (keys as [`agent_key`]
/// and [`visitor_key`] make them); a recipient with no event yet is left
/// out. The keys travel as one JSON array parameter, so the statement is
/// the same whatever their number and is prepared once per connection.
pub fn log_heads(conn: &dyn Db, keys: &[String]) -> Result<Vec<(String, Seq)>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (list, keys) = json_keys(conn, keys, "log head keys")?;
    conn.query_rows(
        &format!("SELECT recipient, head FROM log_heads WHERE recipient IN ({keys})"),
        &args![list],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, u64_col(r, 1)?)))
    .collect()
}

/// `keys` as one JSON array parameter (`?1`), and the subquery that lists
/// its elements in this dialect: the statement is then the same whatever
/// the number of keys, and is prepared once per connection.
fn json_keys(
    conn: &dyn Db,
    keys: &[String],
    what: &str,
) -> Result<(String, &'static str), StoreError> {
    let list =
        serde_json::to_string(keys).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
    let elements = match conn.dialect() {
        Dialect::Sqlite => "SELECT value FROM json_each(?1)",
        Dialect::Postgres => "SELECT json_array_elements_text(?1::text::json)",
    };
    Ok((list, elements))
}

/// (floor, head): events floor+1 ..= head are still stored. A cursor below
/// the floor cannot be replayed and gets a snapshot.
pub fn agent_log_bounds(conn: &dyn Db, agent: AgentId) -> Result<(Seq, Seq), StoreError> {
    let head = log_head(conn, &agent_key(agent))?;
    let min: Option<i64> = conn
        .query_one(
            "SELECT MIN(seq) FROM agent_events WHERE agent_id = ?1",
            &args![agent],
        )?
        .get(0)?;
    let floor = min
        .and_then(|m| u64::try_from(m).ok())
        .map_or(head, |m| m - 1);
    Ok((floor, head))
}

pub fn visitor_log_bounds(conn: &dyn Db, visitor: &str) -> Result<(Seq, Seq), StoreError> {
    let head = log_head(conn, &visitor_key(visitor))?;
    let min: Option<i64> = conn
        .query_one(
            "SELECT MIN(seq) FROM visitor_events WHERE visitor_id = ?1",
            &args![visitor],
        )?
        .get(0)?;
    let floor = min
        .and_then(|m| u64::try_from(m).ok())
        .map_or(head, |m| m - 1);
    Ok((floor, head))
}

pub fn decode_agent_event(bytes: &[u8]) -> Result<Event, StoreError> {
    match bincode::serde::decode_from_slice(bytes, bincode::config::standard()) {
        Ok((e, _)) => Ok(e),
        // Stored by a version 2 server before the upgrade: its messages have
        // no attachment field, and the log keeps them until retention.
        // Stored by a version 3 server, or a version 4 one from before site
        // groups: conversations had no group.
        Err(e) => holdfast_protocol::agent::v4::decode_event(bytes)
            .or_else(|_| holdfast_protocol::agent::v2::decode_event(bytes))
            .map_err(|_| StoreError::Corrupt(format!("agent event: {e}"))),
    }
}

pub fn encode_agent_event(e: &Event) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(e, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(format!("agent event encode: {e}")))
}

pub fn agent_events_after(
    conn: &dyn Db,
    agent: AgentId,
    after: Seq,
    limit: u32,
) -> Result<Vec<(Seq, Event)>, StoreError> {
    conn.query_rows(
        "SELECT seq, event FROM agent_events WHERE agent_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        &args![agent, after, limit],
    )?
    .iter()
    .map(|r| Ok((u64_col(r, 0)?, decode_agent_event(&r.get::<Vec<u8>>(1)?)?)))
    .collect()
}

pub fn visitor_events_after(
    conn: &dyn Db,
    visitor: &str,
    after: Seq,
    limit: u32,
) -> Result<Vec<(Seq, VisitorEvent)>, StoreError> {
    conn.query_rows(
        "SELECT seq, event FROM visitor_events WHERE visitor_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        &args![visitor, after, limit],
    )?
    .iter()
    .map(|r| {
        let text: String = r.get(1)?;
        let ev = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("visitor event: {e}")))?;
        Ok((u64_col(r, 0)?, ev))
    })
    .collect()
}

const CONV_SELECT: &str = "SELECT c.id, c.site_id, c.visitor_id, v.name, c.state, c.assigned_agent, a.display_name, \
     c.opened_ms, c.updated_ms, c.contact_email, c.group_key \
     FROM conversations c LEFT JOIN visitors v ON v.id = c.visitor_id \
     LEFT JOIN agents a ON a.id = c.assigned_agent";

fn conv_row(r: &Row) -> Result<ConversationInfo, StoreError> {
    Ok(ConversationInfo {
        id: u64_col(r, 0)?,
        site: u64_col(r, 1)?,
        visitor: r.get(2)?,
        visitor_name: r.get(3)?,
        state: state_from_int(r.get(4)?),
        assigned: opt_u64_col(r, 5)?,
        assigned_name: r.get(6)?,
        opened_at_ms: r.get(7)?,
        updated_at_ms: r.get(8)?,
        contact_email: r.get(9)?,
        group: r.get(10)?,
    })
}

pub fn conversation(
    conn: &dyn Db,
    id: ConversationId,
) -> Result<Option<ConversationInfo>, StoreError> {
    conn.query_opt(&format!("{CONV_SELECT} WHERE c.id = ?1"), &args![id])?
        .map(|r| conv_row(&r))
        .transpose()
}

/// Whether a block (not lifted) of `site` names `visitor` or `ip`.
pub fn blocked(
    conn: &dyn Db,
    site: SiteId,
    visitor: Option<&str>,
    ip: Option<&str>,
) -> Result<bool, StoreError> {
    if let Some(v) = visitor
        && conn
            .query_opt(
                "SELECT 1 FROM blocks WHERE visitor_id = ?1 AND site_id = ?2 AND lifted_ms IS NULL",
                &args![v, site],
            )?
            .is_some()
    {
        return Ok(true);
    }
    if let Some(ip) = ip
        && conn
            .query_opt(
                "SELECT 1 FROM blocks WHERE site_id = ?1 AND ip = ?2 AND lifted_ms IS NULL",
                &args![site, ip],
            )?
            .is_some()
    {
        return Ok(true);
    }
    Ok(false)
}

/// A waiting chat: (site, conversation, visitor, group).
pub type Queued = (SiteId, ConversationId, String, Option<String>);

/// Every waiting chat, in queue order (site, then id, the order the queue
/// is served in). Served by the `conversations_queued` index, which holds
/// the waiting chats only.
pub fn queued(conn: &dyn Db) -> Result<Vec<Queued>, StoreError> {
    conn.query_rows(
        "SELECT site_id, id, visitor_id, group_key FROM conversations WHERE state = 0 ORDER BY site_id, id",
        &args![],
    )?
    .iter()
    .map(|r| Ok((u64_col(r, 0)?, u64_col(r, 1)?, r.get(2)?, r.get(3)?)))
    .collect()
}

/// The agents of the site's group `key`.
pub fn group_members(conn: &dyn Db, site: SiteId, key: &str) -> Result<Vec<AgentId>, StoreError> {
    conn.query_rows(
        "SELECT m.agent_id FROM group_members m JOIN site_groups g ON g.id = m.group_id \
         WHERE g.site_id = ?1 AND g.key = ?2 ORDER BY m.agent_id",
        &args![site, key],
    )?
    .iter()
    .map(|r| u64_col(r, 0))
    .collect()
}

/// Whether the agent is in the site's group `key`.
pub fn in_group(conn: &dyn Db, agent: AgentId, key: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM group_members m JOIN site_groups g ON g.id = m.group_id \
             WHERE m.agent_id = ?1 AND g.key = ?2 AND g.site_id = (SELECT site_id FROM agents WHERE id = ?1)",
            &args![agent, key],
        )?
        .is_some())
}

/// The group the visitor's latest hello targeted, if its site still has it.
pub fn visitor_group(conn: &dyn Db, visitor: &str) -> Result<Option<String>, StoreError> {
    conn.query_opt(
        "SELECT g.key FROM visitors v JOIN site_groups g ON g.site_id = v.site_id AND g.key = v.group_key \
         WHERE v.id = ?1",
        &args![visitor],
    )?
    .map(|r| r.get(0))
    .transpose()
}

/// The real waits of `site`'s chats for `group` (`None`: the whole
/// site's) taken from the queue since `since_ms`, newest first, at most
/// `limit`: (waited ms, place when it entered the queue). A chat taken
/// within a second never really waited (an agent was free), so it says
/// nothing about how fast a queue moves and is left out.
pub fn recent_waits(
    conn: &dyn Db,
    site: SiteId,
    group: Option<&str>,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<(i64, i64)>, StoreError> {
    conn.query_rows(
        "SELECT taken_ms - queued_ms, queued_place FROM conversations \
         WHERE site_id = ?1 AND taken_ms >= ?2 AND queued_ms IS NOT NULL \
         AND queued_place IS NOT NULL AND taken_ms - queued_ms >= 1000 \
         AND COALESCE(group_key, '') = ?4 \
         ORDER BY taken_ms DESC LIMIT ?3",
        &args![site, since_ms, limit as i64, group.unwrap_or("")],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .collect()
}

/// Whether the files of `conversation` are past retention: it ended
/// (closed, its last change) before `cutoff_ms`, or it is gone. A file
/// lives with its chat, so an open chat keeps even its oldest files.
pub fn chat_files_expired(
    conn: &dyn Db,
    conversation: ConversationId,
    cutoff_ms: i64,
) -> Result<bool, StoreError> {
    let live = conn.query_opt(
        "SELECT 1 FROM conversations WHERE id = ?1 AND (state != 2 OR updated_ms >= ?2)",
        &args![conversation, cutoff_ms],
    )?;
    Ok(live.is_none())
}

/// The open (not closed) conversation of each of `visitors` that has one,
/// in one query (the ids as one JSON array parameter, as [`log_heads`]).
pub fn open_conversations(
    conn: &dyn Db,
    visitors: &[String],
) -> Result<Vec<(String, ConversationId)>, StoreError> {
    if visitors.is_empty() {
        return Ok(Vec::new());
    }
    let (list, ids) = json_keys(conn, visitors, "visitor ids")?;
    conn.query_rows(
        &format!(
            "SELECT visitor_id, MAX(id) FROM conversations \
             WHERE state != 2 AND visitor_id IN ({ids}) GROUP BY visitor_id"
        ),
        &args![list],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, u64_col(r, 1)?)))
    .collect()
}

/// The stored identity of a visitor (what `identify` sets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub visitor: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub attrs: Vec<(String, String)>,
    pub external_id: Option<String>,
    pub verified: bool,
}

/// The stored identities of `visitors` (those that exist), in one query.
pub fn identities(conn: &dyn Db, visitors: &[String]) -> Result<Vec<Identity>, StoreError> {
    if visitors.is_empty() {
        return Ok(Vec::new());
    }
    let (list, ids) = json_keys(conn, visitors, "visitor ids")?;
    conn.query_rows(
        &format!(
            "SELECT id, name, email, attrs, verified, external_id FROM visitors \
             WHERE id IN ({ids})"
        ),
        &args![list],
    )?
    .iter()
    .map(|r| {
        Ok(Identity {
            visitor: r.get(0)?,
            name: r.get(1)?,
            email: r.get(2)?,
            // As `visitor_info` reads them.
            attrs: serde_json::from_str(&r.get::<String>(3)?).unwrap_or_default(),
            verified: r.get::<i64>(4)? != 0,
            external_id: r.get(5)?,
        })
    })
    .collect()
}

/// The visitor's conversation that is not closed, if any.
pub fn open_conversation(
    conn: &dyn Db,
    visitor: &str,
) -> Result<Option<ConversationInfo>, StoreError> {
    conn.query_opt(
        &format!(
            "{CONV_SELECT} WHERE c.visitor_id = ?1 AND c.state != 2 ORDER BY c.id DESC LIMIT 1"
        ),
        &args![visitor],
    )?
    .map(|r| conv_row(&r))
    .transpose()
}

const MSG_SELECT: &str = "SELECT m.id, m.conversation_id, m.client_id, m.author_kind, m.author_agent, \
     a.display_name, c.visitor_id, m.body, m.at_ms, \
     m.attach_id, m.attach_name, m.attach_mime, m.attach_size, m.attach_image \
     FROM messages m JOIN conversations c ON c.id = m.conversation_id \
     LEFT JOIN agents a ON a.id = m.author_agent";

/// The attachment columns of a message row from `first` on, stored with
/// the message when it was posted.
fn attachment_cols(r: &Row, first: usize) -> Result<Option<AttachmentInfo>, StoreError> {
    let Some(id) = r.get::<Option<String>>(first)? else {
        return Ok(None);
    };
    Ok(Some(AttachmentInfo {
        id,
        name: r.get::<Option<String>>(first + 1)?.unwrap_or_default(),
        mime: r.get::<Option<String>>(first + 2)?.unwrap_or_default(),
        size: opt_u64_col(r, first + 3)?.unwrap_or(0),
        image: r.get::<Option<i64>>(first + 4)?.unwrap_or(0) != 0,
    }))
}

fn msg_row(r: &Row) -> Result<ChatMessage, StoreError> {
    let client: Vec<u8> = r.get(2)?;
    let mut id = [0u8; 16];
    if client.len() == 16 {
        id.copy_from_slice(&client);
    }
    let kind: i64 = r.get(3)?;
    let author = match kind {
        AUTHOR_AGENT => Author::Agent {
            agent: opt_u64_col(r, 4)?.unwrap_or(0),
            name: r.get::<Option<String>>(5)?.unwrap_or_default(),
        },
        AUTHOR_VISITOR => Author::Visitor { visitor: r.get(6)? },
        AUTHOR_NOTE => Author::Note {
            agent: opt_u64_col(r, 4)?.unwrap_or(0),
            name: r.get::<Option<String>>(5)?.unwrap_or_default(),
        },
        _ => Author::System,
    };
    Ok(ChatMessage {
        conversation: u64_col(r, 1)?,
        message: u64_col(r, 0)?,
        client_id: MsgId(id),
        author,
        body: r.get(7)?,
        at_ms: r.get(8)?,
        attachment: attachment_cols(r, 9)?,
    })
}

pub fn message(conn: &dyn Db, id: MessageId) -> Result<Option<ChatMessage>, StoreError> {
    conn.query_opt(&format!("{MSG_SELECT} WHERE m.id = ?1"), &args![id])?
        .map(|r| msg_row(&r))
        .transpose()
}

fn is_tag_line(m: &ChatMessage) -> bool {
    m.author == Author::System
        && matches!(
            holdfast_protocol::notice::Notice::parse(&m.body),
            Some(holdfast_protocol::notice::Notice::Tagged { .. })
        )
}

/// The newest `tagged` line of a conversation, if it was ever tagged.
fn latest_tag_line(
    conn: &dyn Db,
    conversation: ConversationId,
) -> Result<Option<ChatMessage>, StoreError> {
    let row = conn.query_opt(
        &format!(
            "{MSG_SELECT} WHERE m.conversation_id = ?1 AND m.author_kind = ?2 \
             AND m.body LIKE '{{\"kind\":\"tagged\"%' ORDER BY m.id DESC LIMIT 1"
        ),
        &args![conversation, AUTHOR_SYSTEM],
    )?;
    row.map(|r| msg_row(&r)).transpose()
}

/// A conversation's current tags, in the order they were set.
pub fn conversation_tags(
    conn: &dyn Db,
    conversation: ConversationId,
) -> Result<Vec<String>, StoreError> {
    let Some(row) = conn.query_opt(
        "SELECT tags FROM conversations WHERE id = ?1",
        &args![conversation],
    )?
    else {
        return Ok(Vec::new());
    };
    accounts::origins_col(&row, 0)
}

/// Up to `limit` newest messages of a conversation, oldest first, agent-only
/// ones included: for agents.
pub fn recent_messages(
    conn: &dyn Db,
    conversation: ConversationId,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out: Vec<ChatMessage> = conn
        .query_rows(
            &format!("{MSG_SELECT} WHERE m.conversation_id = ?1 ORDER BY m.id DESC LIMIT ?2"),
            &args![conversation, limit],
        )?
        .iter()
        .map(msg_row)
        .collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// Up to `limit` newest messages a visitor may see, oldest first: never an
/// agent-only one.
fn recent_public_messages(
    conn: &dyn Db,
    conversation: ConversationId,
    limit: u32,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut out: Vec<ChatMessage> = conn
        .query_rows(
            &format!(
                "{MSG_SELECT} WHERE m.conversation_id = ?1 AND m.internal = 0 ORDER BY m.id DESC LIMIT ?2"
            ),
            &args![conversation, limit],
        )?
        .iter()
        .map(msg_row)
        .collect::<Result<_, _>>()?;
    out.reverse();
    Ok(out)
}

/// What an agent's device needs when its cursor cannot be replayed: every
/// conversation it could act on, with recent messages.
/// A supervisor's covers every open chat of the site, since it watches them
/// all; anyone else's the waiting ones and its own.
pub fn agent_snapshot(
    conn: &dyn Db,
    agent: AgentId,
    site: SiteId,
    oversees: bool,
) -> Result<(Vec<ConversationInfo>, Vec<ChatMessage>), StoreError> {
    let convs: Vec<ConversationInfo> = conn
        .query_rows(
            &format!(
                "{CONV_SELECT} WHERE c.site_id = ?1 AND (c.state IN (0, 3) OR (c.state = 1 AND (c.assigned_agent = ?2 OR ?3 = 1))) \
                 ORDER BY c.id"
            ),
            &args![site, agent, oversees],
        )?
        .iter()
        .map(conv_row)
        .collect::<Result<_, _>>()?;
    let mut msgs = Vec::new();
    for c in &convs {
        let recent = recent_messages(conn, c.id, 200)?;
        // A device learns a chat's tags from its latest `tagged` line;
        // one older than the recent window still has to come along.
        if !recent.iter().any(is_tag_line) {
            msgs.extend(latest_tag_line(conn, c.id)?);
        }
        msgs.extend(recent);
    }
    Ok((convs, msgs))
}

/// A message as a visitor sees it. Every visitor path (live event, replay,
/// snapshot, long-poll) goes through here or through the event it built.
/// Agent-only lines never get this far: they have no visitor event and
/// snapshots skip them; `None` here is the last guard.
pub fn visitor_message(m: &ChatMessage) -> Option<VisitorMessage> {
    let (from, name, body, notice) = match &m.author {
        Author::Visitor { .. } => (Sender::Visitor, None, m.body.clone(), None),
        Author::Agent { name, .. } => (Sender::Agent, Some(name.clone()), m.body.clone(), None),
        // Belt and braces: notes are stored internal and never reach a
        // visitor path; were one asked for, it would still not be made.
        Author::Note { .. } => return None,
        Author::System => match Notice::parse(&m.body) {
            Some(n) if n.agents_only() => return None,
            Some(n) => (Sender::System, None, n.english_for_visitor(), Some(n)),
            None => (Sender::System, None, m.body.clone(), None),
        },
    };
    Some(VisitorMessage {
        conversation: m.conversation,
        message: m.message,
        id: m.client_id,
        from,
        name,
        body,
        at_ms: m.at_ms,
        notice,
        attachment: m.attachment.clone().map(Box::new),
    })
}

pub fn conversation_view(c: &ConversationInfo) -> ConversationView {
    ConversationView {
        id: c.id,
        state: visitor_state(c.state),
        agent_name: c.assigned_name.clone(),
    }
}

/// What a visitor's browser needs when its cursor cannot be replayed.
pub fn visitor_snapshot(
    conn: &dyn Db,
    visitor: &str,
) -> Result<(Option<ConversationView>, Vec<VisitorMessage>), StoreError> {
    let conv = conn
        .query_opt(
            &format!("{CONV_SELECT} WHERE c.visitor_id = ?1 ORDER BY c.id DESC LIMIT 1"),
            &args![visitor],
        )?
        .map(|r| conv_row(&r))
        .transpose()?;
    let Some(conv) = conv else {
        return Ok((None, Vec::new()));
    };
    let mut msgs: Vec<VisitorMessage> = recent_public_messages(conn, conv.id, 200)?
        .iter()
        .filter_map(visitor_message)
        .collect();
    // The newest messages that fit a WebSocket write: a snapshot over the
    // socket's 256 KiB write buffer never arrived, and the widget kept
    // reconnecting for it. A visitor whose chat is longer sees its newest
    // part after a snapshot; the agents' history keeps all of it.
    let mut size = 0;
    let keep = msgs
        .iter()
        .rev()
        .take_while(|m| {
            size += 192 + m.body.len();
            size <= VISITOR_SNAPSHOT_BYTES
        })
        .count()
        .max(1.min(msgs.len()));
    msgs.drain(..msgs.len() - keep);
    Ok((Some(conversation_view(&conv)), msgs))
}

pub fn trail(conn: &dyn Db, visitor: &str, limit: usize) -> Result<Vec<PageView>, StoreError> {
    let mut out: Vec<PageView> = conn
        .query_rows(
            "SELECT url, title, referrer, at_ms FROM page_views WHERE visitor_id = ?1 ORDER BY id DESC LIMIT ?2",
            &args![visitor, i64::try_from(limit).unwrap_or(20)],
        )?
        .iter()
        .map(|r| {
            Ok(PageView {
                url: r.get(0)?,
                title: r.get(1)?,
                referrer: r.get(2)?,
                at_ms: r.get(3)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    out.reverse();
    Ok(out)
}

/// The site's id for a visitor, if it was verified with the site's HMAC.
pub fn verified_identity(conn: &dyn Db, visitor: &str) -> Result<Option<String>, StoreError> {
    let row: Option<Option<String>> = conn
        .query_opt(
            "SELECT external_id FROM visitors WHERE id = ?1 AND verified = 1",
            &args![visitor],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    Ok(row.flatten())
}

/// When the visitor was last seen (ms since the epoch), if it exists.
pub fn visitor_last_seen(conn: &dyn Db, visitor: &str) -> Result<Option<i64>, StoreError> {
    conn.query_opt(
        "SELECT last_seen_ms FROM visitors WHERE id = ?1",
        &args![visitor],
    )?
    .map(|r| r.get(0))
    .transpose()
}

/// The stored part of a visitor's record; the hub overlays live fields.
pub fn visitor_info(conn: &dyn Db, visitor: &str) -> Result<Option<VisitorInfo>, StoreError> {
    let row = conn
        .query_opt(
            "SELECT id, site_id, name, email, attrs, verified, user_agent, first_seen_ms, last_seen_ms, \
             external_id, lang FROM visitors WHERE id = ?1",
            &args![visitor],
        )?
        .map(|r| -> Result<_, StoreError> {
            Ok((
                r.get::<String>(0)?,
                u64_col(&r, 1)?,
                r.get::<Option<String>>(2)?,
                r.get::<Option<String>>(3)?,
                r.get::<String>(4)?,
                r.get::<i64>(5)? != 0,
                r.get::<Option<String>>(6)?,
                r.get::<i64>(7)?,
                r.get::<i64>(8)?,
                r.get::<Option<String>>(9)?,
                r.get::<Option<String>>(10)?,
            ))
        })
        .transpose()?;
    let Some((
        id,
        site,
        name,
        email,
        attrs,
        verified,
        user_agent,
        first_seen,
        last_seen,
        external,
        lang,
    )) = row
    else {
        return Ok(None);
    };
    let attrs: Vec<(String, String)> = serde_json::from_str(&attrs).unwrap_or_default();
    let trail = trail(conn, &id, TRAIL_LEN)?;
    let conversation = open_conversation(conn, &id)?.map(|c| c.id);
    Ok(Some(VisitorInfo {
        referrer: trail.first().and_then(|p| p.referrer.clone()),
        id,
        site,
        name,
        email,
        attrs,
        external_id: external,
        verified,
        online: false,
        user_agent,
        visit_started_ms: last_seen,
        first_seen_ms: first_seen,
        trail,
        conversation,
        lang,
    }))
}

/// One page of a visitor's whole history, newest messages first.
pub fn history(
    conn: &dyn Db,
    site: SiteId,
    visitor: &str,
    before: Option<MessageId>,
    limit: u32,
) -> Result<QueryResult, StoreError> {
    let info = visitor_info(conn, visitor)?;
    let Some(info) = info.filter(|v| v.site == site) else {
        return Ok(QueryResult::Refused(holdfast_protocol::agent::WireError {
            code: holdfast_protocol::error::ErrorCode::NotFound,
            message: "no such visitor on your site".into(),
            retry_after_ms: None,
        }));
    };
    let limit = limit.clamp(1, 500);
    // The first page lists the visitor's latest conversations; later pages
    // only those their messages belong to, so a visitor with a thousand
    // visits does not resend them all with every page.
    let mut conversations: Vec<ConversationInfo> = conn
        .query_rows(
            &format!("{CONV_SELECT} WHERE c.visitor_id = ?1 ORDER BY c.id DESC LIMIT 50"),
            &args![visitor],
        )?
        .iter()
        .map(conv_row)
        .collect::<Result<_, _>>()?;
    let before_id = before.map_or(i64::MAX, to_i64);
    let mut messages: Vec<ChatMessage> = conn
        .query_rows(
            &format!(
                "{MSG_SELECT} WHERE c.visitor_id = ?1 AND m.id < ?2 ORDER BY m.id DESC LIMIT ?3"
            ),
            &args![visitor, before_id, limit + 1],
        )?
        .iter()
        .map(msg_row)
        .collect::<Result<_, _>>()?;
    let mut more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    // A page must fit one frame however long the messages are.
    let mut size = 0;
    if let Some(cut) = messages.iter().position(|m| {
        size += holdfast_protocol::agent::encoded_len(m);
        size > HISTORY_PAGE_BYTES
    }) {
        messages.truncate(cut.max(1));
        more = true;
    }
    if before.is_some() {
        conversations.retain(|c| messages.iter().any(|m| m.conversation == c.id));
        for m in &messages {
            if !conversations.iter().any(|c| c.id == m.conversation)
                && let Some(c) = conversation(conn, m.conversation)?
            {
                conversations.push(c);
            }
        }
    }
    Ok(QueryResult::History {
        visitor: Some(Box::new(info)),
        conversations,
        messages,
        more,
    })
}

pub fn device_commands_acked(
    conn: &dyn Db,
    agent: AgentId,
    device: &MsgId,
) -> Result<Seq, StoreError> {
    let v: Option<i64> = conn
        .query_opt(
            "SELECT commands_acked FROM devices WHERE agent_id = ?1 AND device_id = ?2",
            &args![agent, &device.0[..]],
        )?
        .map(|r| r.get(0))
        .transpose()?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Who hears of a message: every enabled agent of the site, or only
    /// its enabled supervisors and admins; never another site's.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn site_agent_ids_are_the_enabled_agents_and_overseers() {
        use holdfast_protocol::agent::Role;

        use crate::admin;
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_connection(dir.path()).unwrap();
        let db: &dyn Db = &conn;
        let site = admin::add_site(db, "acme", "Acme", None).unwrap().id;
        admin::add_site(db, "other", "Other", None).unwrap();
        let add = |site: &str, user: &str, role| {
            admin::add_agent(db, site, user, user, "a-password", 2, role)
                .unwrap()
                .id
        };
        let agent = add("acme", "agent", Role::Agent);
        let sup = add("acme", "sup", Role::Supervisor);
        let adm = add("acme", "adm", Role::Admin);
        add("acme", "gone", Role::Admin);
        add("other", "elsewhere", Role::Admin);
        admin::set_disabled(db, "gone", true).unwrap();
        assert_eq!(
            site_agent_ids(db, site, false).unwrap(),
            vec![agent, sup, adm]
        );
        assert_eq!(site_agent_ids(db, site, true).unwrap(), vec![sup, adm]);
    }

    /// An agent's log keeps events a version 2 server wrote: they replay
    /// after the upgrade instead of failing the agent's every resume.
    #[test]
    fn a_message_event_stored_by_version_2_still_replays() {
        // The version 2 golden vector `server_event_message_visitor`
        // without its `ServerMsg::Event` header: what the log stored.
        let v2 = hex::decode(
            "000cfb590101901234567a720282020202020202020006762d376633611948692c2063616e2049206368616e6765206d7920706c616e3ffdd0d7ca9f17030000",
        )
        .unwrap();
        let Event::Message(m) = decode_agent_event(&v2).unwrap() else {
            panic!("not a message")
        };
        assert_eq!((m.message, m.attachment), (345, None));
        // And today's events round-trip as before.
        let now = Event::Message(ChatMessage {
            body: String::new(),
            attachment: Some(holdfast_protocol::agent::AttachmentInfo {
                id: "ab".into(),
                name: "a.pdf".into(),
                mime: "application/pdf".into(),
                size: 3,
                image: false,
            }),
            ..m
        });
        let bytes = encode_agent_event(&now).unwrap();
        assert_eq!(decode_agent_event(&bytes).unwrap(), now);
    }

    #[test]
    fn an_allow_list_admits_its_origins_only() {
        let mut site = SiteRow {
            id: 1,
            key: "shop".into(),
            name: "Shop".into(),
            secret: None,
            origins: Vec::new(),
            attach_max_bytes: None,
            attach_kinds: None,
            attach_rate: None,
            hours: None,
            sneak_peek: true,
            tags: Vec::new(),
        };
        assert!(site.allows_origin(Some("https://anywhere.example")));
        site.origins = vec!["https://shop.example".into()];
        assert!(site.allows_origin(Some("https://shop.example")));
        assert!(site.allows_origin(Some("HTTPS://Shop.Example/")));
        assert!(!site.allows_origin(Some("https://evil.example")));
        assert!(!site.allows_origin(Some("https://shop.example.evil.example")));
        assert!(!site.allows_origin(Some("http://shop.example")));
        // Sandboxed iframes and data: URLs send an opaque origin.
        assert!(!site.allows_origin(Some("null")));
        // Not from a browser page at all (curl, a server): nothing to protect.
        assert!(site.allows_origin(None));
    }
}
