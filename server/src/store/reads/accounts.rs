//! Sites and agent accounts: their rows and lookups.

use super::super::StoreError;
use super::super::sql::{Db, Row, args};
use super::*;

#[derive(Clone, Debug)]
pub struct SiteRow {
    pub id: SiteId,
    pub key: String,
    pub name: String,
    pub secret: Option<String>,
    /// Origins (`https://shop.example`) the widget may run on; empty means
    /// any.
    pub origins: Vec<String>,
    /// The site's attachment rules; `None` keeps the server's default.
    pub attach_max_bytes: Option<u64>,
    pub attach_kinds: Option<crate::attach::sniff::Kinds>,
    pub attach_rate: Option<u64>,
    /// Business hours (see `hours::Hours::parse`): time zone, weekly
    /// ranges, holidays; `None`, always open.
    pub hours: Option<(String, String, String)>,
    /// Agents see visitors' drafts as they are typed (PROTOCOL.md 10.18).
    pub sneak_peek: bool,
    /// The tags agents may set on the site's chats, in the admin's order.
    pub tags: Vec<String>,
}

impl SiteRow {
    /// Whether a page on `origin` may act as a visitor of this site. A
    /// request without an Origin header is not from a browser page, so the
    /// check (which protects visitors' browsers, not the server) passes.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.origins.is_empty() => true,
            None => true,
            Some(o) => self
                .origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o.trim_end_matches('/'))),
        }
    }
}

/// A column of one entry per line (origins, tags).
pub(crate) fn origins_col(r: &Row, i: usize) -> Result<Vec<String>, StoreError> {
    let text: String = r.get(i)?;
    Ok(text
        .split('\n')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

pub fn role_to_int(r: Role) -> i64 {
    match r {
        Role::Agent => 0,
        Role::Supervisor => 1,
        Role::Admin => 2,
    }
}

pub fn role_from_int(i: i64) -> Role {
    match i {
        1 => Role::Supervisor,
        2 => Role::Admin,
        _ => Role::Agent,
    }
}

#[derive(Clone)]
pub struct AgentRow {
    pub id: AgentId,
    pub site: SiteId,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub capacity: u32,
    pub disabled: bool,
    pub role: Role,
    /// Bumped by a password change or a disable: a session opened under an
    /// older epoch may no longer act.
    pub auth_epoch: i64,
}

impl std::fmt::Debug for AgentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRow")
            .field("id", &self.id)
            .field("site", &self.site)
            .field("username", &self.username)
            .field("disabled", &self.disabled)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

const SITE_COLS: &str = "id, key, name, secret, origins, attach_max_bytes, attach_kinds, \
     attach_rate, hours_tz, hours_week, hours_holidays, sneak_peek, tags";

fn site_row(r: &Row) -> Result<SiteRow, StoreError> {
    Ok(SiteRow {
        id: u64_col(r, 0)?,
        key: r.get(1)?,
        name: r.get(2)?,
        secret: r.get(3)?,
        origins: origins_col(r, 4)?,
        attach_max_bytes: opt_u64_col(r, 5)?,
        attach_kinds: opt_u64_col(r, 6)?
            .map(|b| crate::attach::sniff::Kinds::from_bits(u8::try_from(b).unwrap_or(0))),
        attach_rate: opt_u64_col(r, 7)?,
        hours: match (r.get::<Option<String>>(8)?, r.get::<Option<String>>(9)?) {
            (Some(tz), Some(week)) => {
                Some((tz, week, r.get::<Option<String>>(10)?.unwrap_or_default()))
            }
            _ => None,
        },
        sneak_peek: r.get::<i64>(11)? != 0,
        tags: origins_col(r, 12)?,
    })
}

pub fn site_by_key(conn: &dyn Db, key: &str) -> Result<Option<SiteRow>, StoreError> {
    conn.query_opt(
        &format!("SELECT {SITE_COLS} FROM sites WHERE key = ?1"),
        &args![key],
    )?
    .map(|r| site_row(&r))
    .transpose()
}

pub fn site_by_id(conn: &dyn Db, id: SiteId) -> Result<Option<SiteRow>, StoreError> {
    conn.query_opt(
        &format!("SELECT {SITE_COLS} FROM sites WHERE id = ?1"),
        &args![id],
    )?
    .map(|r| site_row(&r))
    .transpose()
}

pub fn list_sites(conn: &dyn Db) -> Result<Vec<SiteRow>, StoreError> {
    conn.query_rows(
        &format!("SELECT {SITE_COLS} FROM sites ORDER BY id"),
        &args![],
    )?
    .iter()
    .map(site_row)
    .collect()
}

const AGENT_COLS: &str =
    "id, site_id, username, display_name, password_hash, capacity, disabled, role, auth_epoch";

fn agent_row(r: &Row) -> Result<AgentRow, StoreError> {
    Ok(AgentRow {
        id: u64_col(r, 0)?,
        site: u64_col(r, 1)?,
        username: r.get(2)?,
        display_name: r.get(3)?,
        password_hash: r.get(4)?,
        capacity: u32::try_from(r.get::<i64>(5)?).unwrap_or(0),
        disabled: r.get::<i64>(6)? != 0,
        role: role_from_int(r.get(7)?),
        auth_epoch: r.get(8)?,
    })
}

/// How many open chats an agent has.
pub fn agent_load(conn: &dyn Db, agent: AgentId) -> Result<u32, StoreError> {
    let n: i64 = conn
        .query_one(
            "SELECT COUNT(*) FROM conversations WHERE assigned_agent = ?1 AND state = 1",
            &args![agent],
        )?
        .get(0)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Every agent of a site with its open-chat count, for the team panel.
pub fn team(conn: &dyn Db, site: SiteId) -> Result<Vec<(AgentRow, u32)>, StoreError> {
    agents_of_site(conn, site)?
        .into_iter()
        .map(|a| {
            let load = agent_load(conn, a.id)?;
            Ok((a, load))
        })
        .collect()
}

/// Agents that own at least one open chat (uses the partial index).
pub fn active_owners(conn: &dyn Db) -> Result<Vec<AgentId>, StoreError> {
    conn.query_rows(
        "SELECT DISTINCT assigned_agent FROM conversations WHERE state = 1 AND assigned_agent IS NOT NULL",
        &args![],
    )?
    .iter()
    .map(|r| u64_col(r, 0))
    .collect()
}

/// The open chats an agent owns, oldest first.
pub fn owned_conversations(
    conn: &dyn Db,
    agent: AgentId,
) -> Result<Vec<ConversationId>, StoreError> {
    conn.query_rows(
        "SELECT id FROM conversations WHERE assigned_agent = ?1 AND state = 1 ORDER BY id",
        &args![agent],
    )?
    .iter()
    .map(|r| u64_col(r, 0))
    .collect()
}

/// What changed about agents since `after` (written by the CLI), oldest
/// first: (change id, agent, kind).
pub fn agent_changes_after(
    conn: &dyn Db,
    after: i64,
) -> Result<Vec<(i64, AgentId, i64)>, StoreError> {
    conn.query_rows(
        "SELECT id, agent_id, kind FROM agent_changes WHERE id > ?1 ORDER BY id LIMIT 256",
        &args![after],
    )?
    .iter()
    .map(|r| Ok((r.get(0)?, u64_col(r, 1)?, r.get(2)?)))
    .collect()
}

pub fn last_agent_change(conn: &dyn Db) -> Result<i64, StoreError> {
    let v: Option<i64> = conn
        .query_one("SELECT MAX(id) FROM agent_changes", &args![])?
        .get(0)?;
    Ok(v.unwrap_or(0))
}

pub fn agent_by_username(conn: &dyn Db, username: &str) -> Result<Option<AgentRow>, StoreError> {
    conn.query_opt(
        &format!("SELECT {AGENT_COLS} FROM agents WHERE username = ?1"),
        &args![username],
    )?
    .map(|r| agent_row(&r))
    .transpose()
}

pub fn agent_by_id(conn: &dyn Db, id: AgentId) -> Result<Option<AgentRow>, StoreError> {
    conn.query_opt(
        &format!("SELECT {AGENT_COLS} FROM agents WHERE id = ?1"),
        &args![id],
    )?
    .map(|r| agent_row(&r))
    .transpose()
}

pub fn agents_of_site(conn: &dyn Db, site: SiteId) -> Result<Vec<AgentRow>, StoreError> {
    conn.query_rows(
        &format!("SELECT {AGENT_COLS} FROM agents WHERE site_id = ?1 ORDER BY id"),
        &args![site],
    )?
    .iter()
    .map(agent_row)
    .collect()
}

/// The ids of a site's enabled agents, or of its enabled supervisors and
/// admins only (roles 1 and 2, as [`role_from_int`] reads them), in id
/// order. Every message asks who hears of it, so this reads ids, not whole
/// rows: the full rows were 14 % of a message's instructions at five agents
/// a site, and grow with the site.
pub fn site_agent_ids(
    conn: &dyn Db,
    site: SiteId,
    overseers_only: bool,
) -> Result<Vec<AgentId>, StoreError> {
    let sql = if overseers_only {
        "SELECT id FROM agents WHERE site_id = ?1 AND disabled = 0 AND role IN (1, 2) ORDER BY id"
    } else {
        "SELECT id FROM agents WHERE site_id = ?1 AND disabled = 0 ORDER BY id"
    };
    conn.query_rows(sql, &args![site])?
        .iter()
        .map(|r| u64_col(r, 0))
        .collect()
}

pub fn list_agents(conn: &dyn Db) -> Result<Vec<AgentRow>, StoreError> {
    conn.query_rows(
        &format!("SELECT {AGENT_COLS} FROM agents ORDER BY id"),
        &args![],
    )?
    .iter()
    .map(agent_row)
    .collect()
}

/// Every site with business hours: (site, time zone, week, holidays).
pub fn site_hours(conn: &dyn Db) -> Result<Vec<(SiteId, String, String, String)>, StoreError> {
    conn.query_rows(
        "SELECT id, hours_tz, hours_week, COALESCE(hours_holidays, '') FROM sites \
         WHERE hours_tz IS NOT NULL AND hours_week IS NOT NULL",
        &args![],
    )?
    .iter()
    .map(|r| Ok((u64_col(r, 0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
    .collect()
}
