//! Site and agent management for the CLI and `--demo`. These write through
//! their own connection; SQLite's locking (or PostgreSQL's transactions)
//! makes that safe while servers run on the same database.

use holdfast_protocol::agent::Role;
use holdfast_protocol::handshake::Fingerprint;

use crate::auth;
use crate::config::ServerConfig;
use crate::store::reads::{self, AgentRow, SiteRow};
use crate::store::sql::{Db, args, transaction};
use crate::store::{StoreError, now_ms};
use crate::sweeps::{CHANGE_DISABLED, CHANGE_PASSWORD, CHANGE_PROFILE};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("a site with key {0:?} already exists")]
    SiteExists(String),
    #[error("no site with key {0:?}")]
    NoSite(String),
    #[error("an agent named {0:?} already exists")]
    AgentExists(String),
    #[error("no agent named {0:?}")]
    NoAgent(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn valid_key(s: &str, what: &str) -> Result<(), AdminError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(AdminError::Invalid(format!(
            "{what} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(())
}

pub fn add_site(
    conn: &dyn Db,
    key: &str,
    name: &str,
    secret: Option<&str>,
) -> Result<SiteRow, AdminError> {
    valid_key(key, "a site key")?;
    if reads::site_by_key(conn, key)?.is_some() {
        return Err(AdminError::SiteExists(key.into()));
    }
    conn.execute(
        "INSERT INTO sites (key, name, secret, created_ms) VALUES (?1, ?2, ?3, ?4)",
        &args![key, name, secret, now_ms()],
    )?;
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

/// An origin as browsers send it: scheme, host and port, nothing more.
fn valid_origin(o: &str) -> Result<String, AdminError> {
    let o = o.trim().trim_end_matches('/');
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = rest.is_some_and(|host| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    });
    if !ok {
        return Err(AdminError::Invalid(format!(
            "{o:?} is not an origin: use scheme://host[:port], like https://shop.example.com"
        )));
    }
    Ok(o.to_ascii_lowercase())
}

/// Replace the origins a site's widget may run on; empty allows any.
pub fn set_site_origins(
    conn: &dyn Db,
    key: &str,
    origins: &[String],
) -> Result<SiteRow, AdminError> {
    let list = origins
        .iter()
        .map(|o| valid_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    let n = conn.execute(
        "UPDATE sites SET origins = ?2 WHERE key = ?1",
        &args![key, list.join("\n")],
    )?;
    if n == 0 {
        return Err(AdminError::NoSite(key.into()));
    }
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

/// The most tags a site may list, and the longest tag: a list an agent
/// picks from at a glance, not a taxonomy.
pub const MAX_SITE_TAGS: usize = 100;
pub const MAX_TAG_CHARS: usize = 40;

/// A tag as agents see and set it: trimmed, 1 to [`MAX_TAG_CHARS`]
/// characters, no line breaks or other control characters (the store keeps
/// one per line) and no commas (the CLI and the CSV use them as separators).
pub fn valid_tag(tag: &str) -> Result<String, String> {
    let t = tag.trim();
    if t.is_empty() || t.chars().count() > MAX_TAG_CHARS {
        return Err(format!(
            "a tag must be 1 to {MAX_TAG_CHARS} characters, not {tag:?}"
        ));
    }
    if t.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!(
            "a tag cannot hold commas or control characters: {tag:?}"
        ));
    }
    Ok(t.to_owned())
}

/// Replace a site's tag list. Duplicates (ignoring case) are refused rather
/// than merged, so the admin learns of the typo. Chats keep tags that leave
/// the list: history stays as it was written.
pub fn set_site_tags(conn: &dyn Db, key: &str, tags: &[String]) -> Result<SiteRow, AdminError> {
    let mut list: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        let t = valid_tag(t).map_err(AdminError::Invalid)?;
        if list.iter().any(|x| x.to_lowercase() == t.to_lowercase()) {
            return Err(AdminError::Invalid(format!(
                "the tag {t:?} is listed twice"
            )));
        }
        list.push(t);
    }
    if list.len() > MAX_SITE_TAGS {
        return Err(AdminError::Invalid(format!(
            "a site may list at most {MAX_SITE_TAGS} tags, not {}",
            list.len()
        )));
    }
    let n = conn.execute(
        "UPDATE sites SET tags = ?2 WHERE key = ?1",
        &args![key, list.join("\n")],
    )?;
    if n == 0 {
        return Err(AdminError::NoSite(key.into()));
    }
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

/// A site's attachment rules, as an admin sets them; `None` in a field
/// leaves it as it was.
#[derive(Clone, Debug, Default)]
pub struct AttachRules {
    /// The largest file in bytes (at most the server's `--attach-max-mb`).
    pub max_bytes: Option<u64>,
    /// The accepted kinds, as `Kinds::parse` reads them ("png, pdf").
    pub kinds: Option<String>,
    /// Upload bytes per second per visitor.
    pub rate: Option<u64>,
    /// Back to the server's defaults first.
    pub reset: bool,
}

pub fn set_site_attachments(
    conn: &dyn Db,
    key: &str,
    rules: &AttachRules,
) -> Result<SiteRow, AdminError> {
    let kinds = rules
        .kinds
        .as_deref()
        .map(crate::attach::sniff::Kinds::parse)
        .transpose()
        .map_err(AdminError::Invalid)?;
    if rules.max_bytes == Some(0) || rules.rate == Some(0) {
        return Err(AdminError::Invalid(
            "the size limit and the rate must be above 0".into(),
        ));
    }
    let site = reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))?;
    let keep = |new: Option<u64>, old: Option<u64>| if rules.reset { new } else { new.or(old) };
    let max = keep(rules.max_bytes, site.attach_max_bytes);
    let kinds = keep(
        kinds.map(|k| u64::from(k.bits())),
        site.attach_kinds.map(|k| u64::from(k.bits())),
    );
    let rate = keep(rules.rate, site.attach_rate);
    conn.execute(
        "UPDATE sites SET attach_max_bytes = ?2, attach_kinds = ?3, attach_rate = ?4 WHERE key = ?1",
        &args![key, max, kinds, rate],
    )?;
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

/// Sets a site's business hours (checked: a mistake is an error naming
/// it), or with `None` makes it always open.
pub fn set_site_hours(
    conn: &dyn Db,
    key: &str,
    hours: Option<(&str, &str, &str)>,
) -> Result<SiteRow, AdminError> {
    if let Some((tz, week, holidays)) = hours {
        crate::hours::Hours::parse(tz, week, holidays).map_err(AdminError::Invalid)?;
    }
    let (tz, week, holidays) = match hours {
        Some((t, w, h)) => (Some(t.trim()), Some(w.trim()), Some(h.trim())),
        None => (None, None, None),
    };
    let n = conn.execute(
        "UPDATE sites SET hours_tz = ?2, hours_week = ?3, hours_holidays = ?4 WHERE key = ?1",
        &args![key, tz, week, holidays],
    )?;
    if n == 0 {
        return Err(AdminError::NoSite(key.into()));
    }
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

/// Turn a site's sneak peek (agents see drafts as typed) on or off.
pub fn set_site_sneak_peek(conn: &dyn Db, key: &str, on: bool) -> Result<SiteRow, AdminError> {
    let n = conn.execute(
        "UPDATE sites SET sneak_peek = ?2 WHERE key = ?1",
        &args![key, i64::from(on)],
    )?;
    if n == 0 {
        return Err(AdminError::NoSite(key.into()));
    }
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

pub fn add_agent(
    conn: &dyn Db,
    site_key: &str,
    username: &str,
    display_name: &str,
    password: &str,
    capacity: u32,
    role: Role,
) -> Result<AgentRow, AdminError> {
    valid_key(username, "a username")?;
    let site =
        reads::site_by_key(conn, site_key)?.ok_or_else(|| AdminError::NoSite(site_key.into()))?;
    if reads::agent_by_username(conn, username)?.is_some() {
        return Err(AdminError::AgentExists(username.into()));
    }
    let hash = auth::hash_password(password)?;
    conn.execute(
        "INSERT INTO agents (site_id, username, display_name, password_hash, capacity, created_ms, role) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &args![
            site.id,
            username,
            display_name,
            hash,
            capacity,
            now_ms(),
            reads::role_to_int(role)
        ],
    )?;
    reads::agent_by_username(conn, username)?.ok_or_else(|| AdminError::NoAgent(username.into()))
}

/// Apply `change` to the agent's row and record it in the change feed in one
/// transaction, so a running server acts on it (ends sessions, refreshes the
/// team panel) whenever the row changed, and never on a change that did not
/// commit. `revoke` bumps the auth epoch: every session opened before may no
/// longer act.
fn change_agent(
    conn: &dyn Db,
    username: &str,
    kind: i64,
    revoke: bool,
    change: impl FnOnce(&dyn Db, i64) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    transaction(conn, |tx| {
        let id: i64 = tx
            .query_opt(
                "SELECT id FROM agents WHERE username = ?1",
                &args![username],
            )?
            .ok_or_else(|| AdminError::NoAgent(username.into()))?
            .get(0)?;
        change(tx, id)?;
        if revoke {
            tx.execute(
                "UPDATE agents SET auth_epoch = auth_epoch + 1 WHERE id = ?1",
                &args![id],
            )?;
        }
        tx.execute(
            "INSERT INTO agent_changes (agent_id, kind, at_ms) VALUES (?1, ?2, ?3)",
            &args![id, kind, now_ms()],
        )?;
        Ok(())
    })
}

/// Set a new password; sessions opened with the old one end.
pub fn set_password(conn: &dyn Db, username: &str, password: &str) -> Result<(), AdminError> {
    let hash = auth::hash_password(password)?;
    change_agent(conn, username, CHANGE_PASSWORD, true, |c, id| {
        c.execute(
            "UPDATE agents SET password_hash = ?2 WHERE id = ?1",
            &args![id, &hash],
        )?;
        Ok(())
    })
}

/// Disable (sessions end, chats go back to the queue) or enable an agent.
pub fn set_disabled(conn: &dyn Db, username: &str, disabled: bool) -> Result<(), AdminError> {
    let kind = if disabled {
        CHANGE_DISABLED
    } else {
        CHANGE_PROFILE
    };
    change_agent(conn, username, kind, disabled, |c, id| {
        c.execute(
            "UPDATE agents SET disabled = ?2 WHERE id = ?1",
            &args![id, disabled],
        )?;
        Ok(())
    })
}

/// Change an agent's role, capacity or display name; sessions stay, and the
/// team panel shows the change.
pub fn update_agent(
    conn: &dyn Db,
    username: &str,
    role: Option<Role>,
    capacity: Option<u32>,
    name: Option<&str>,
) -> Result<AgentRow, AdminError> {
    if let Some(n) = name
        && (n.trim().is_empty() || n.len() > 64)
    {
        return Err(AdminError::Invalid(
            "a display name must be 1-64 bytes".into(),
        ));
    }
    change_agent(conn, username, CHANGE_PROFILE, false, |c, id| {
        if let Some(r) = role {
            c.execute(
                "UPDATE agents SET role = ?2 WHERE id = ?1",
                &args![id, reads::role_to_int(r)],
            )?;
        }
        if let Some(cap) = capacity {
            c.execute(
                "UPDATE agents SET capacity = ?2 WHERE id = ?1",
                &args![id, cap],
            )?;
        }
        if let Some(n) = name {
            c.execute(
                "UPDATE agents SET display_name = ?2 WHERE id = ?1",
                &args![id, n.trim()],
            )?;
        }
        Ok(())
    })?;
    reads::agent_by_username(conn, username)?.ok_or_else(|| AdminError::NoAgent(username.into()))
}

pub const DEMO_SITE: &str = "demo";
pub const DEMO_AGENT: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo";

/// Create the demo site and agent unless they exist. Returns whether
/// anything was created.
pub fn ensure_demo(conn: &dyn Db) -> Result<bool, AdminError> {
    let mut created = false;
    if reads::site_by_key(conn, DEMO_SITE)?.is_none() {
        add_site(conn, DEMO_SITE, "Holdfast demo shop", None)?;
        created = true;
    }
    let exists = conn.query_opt(
        "SELECT id FROM agents WHERE username = ?1",
        &args![DEMO_AGENT],
    )?;
    if exists.is_none() {
        add_agent(
            conn,
            DEMO_SITE,
            DEMO_AGENT,
            "Demo Agent",
            DEMO_PASSWORD,
            5,
            Role::Agent,
        )?;
        created = true;
    }
    Ok(created)
}

/// The banner `--demo` prints. It goes to stdout on purpose: it is the
/// command's output, not a log line.
#[allow(clippy::print_stdout)]
pub fn print_demo(cfg: &ServerConfig, fp: &Fingerprint, created: bool) {
    let base = cfg.base_url(cfg.http);
    let agent_host = if cfg.agent_listen.ip().is_unspecified() {
        format!("localhost:{}", cfg.agent_listen.port())
    } else {
        cfg.agent_listen.to_string()
    };
    println!(
        "Holdfast demo {}",
        if created { "(created)" } else { "(existing)" }
    );
    println!("  demo page:     {base}/demo");
    println!("  agent server:  {agent_host}");
    println!("  agent login:   {DEMO_AGENT} / {DEMO_PASSWORD}");
    println!("  fingerprint:   {fp}");
}
