//! Site and agent management for the CLI and `--demo`. These write through
//! their own connection; SQLite's locking makes that safe while a server runs
//! on the same data dir.

use holdfast_protocol::handshake::Fingerprint;
use rusqlite::{Connection, OptionalExtension, params};

use crate::auth;
use crate::config::ServerConfig;
use crate::store::reads::{self, AgentRow, SiteRow, to_i64};
use crate::store::{StoreError, now_ms};

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
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
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
    conn: &Connection,
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
        params![key, name, secret, now_ms()],
    )?;
    reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))
}

pub fn add_agent(
    conn: &Connection,
    site_key: &str,
    username: &str,
    display_name: &str,
    password: &str,
    capacity: u32,
) -> Result<AgentRow, AdminError> {
    valid_key(username, "a username")?;
    let site =
        reads::site_by_key(conn, site_key)?.ok_or_else(|| AdminError::NoSite(site_key.into()))?;
    if reads::agent_by_username(conn, username)?.is_some() {
        return Err(AdminError::AgentExists(username.into()));
    }
    let hash = auth::hash_password(password)?;
    conn.execute(
        "INSERT INTO agents (site_id, username, display_name, password_hash, capacity, created_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            to_i64(site.id),
            username,
            display_name,
            hash,
            capacity,
            now_ms()
        ],
    )?;
    reads::agent_by_username(conn, username)?.ok_or_else(|| AdminError::NoAgent(username.into()))
}

pub fn set_password(conn: &Connection, username: &str, password: &str) -> Result<(), AdminError> {
    let hash = auth::hash_password(password)?;
    let n = conn.execute(
        "UPDATE agents SET password_hash = ?2 WHERE username = ?1",
        params![username, hash],
    )?;
    if n == 0 {
        return Err(AdminError::NoAgent(username.into()));
    }
    Ok(())
}

pub fn set_disabled(conn: &Connection, username: &str, disabled: bool) -> Result<(), AdminError> {
    let n = conn.execute(
        "UPDATE agents SET disabled = ?2 WHERE username = ?1",
        params![username, i64::from(disabled)],
    )?;
    if n == 0 {
        return Err(AdminError::NoAgent(username.into()));
    }
    Ok(())
}

pub const DEMO_SITE: &str = "demo";
pub const DEMO_AGENT: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo";

/// Create the demo site and agent unless they exist. Returns whether
/// anything was created.
pub fn ensure_demo(conn: &Connection) -> Result<bool, AdminError> {
    let mut created = false;
    if reads::site_by_key(conn, DEMO_SITE)?.is_none() {
        add_site(conn, DEMO_SITE, "Holdfast demo shop", None)?;
        created = true;
    }
    let exists: Option<i64> = conn
        .query_row(
            "SELECT id FROM agents WHERE username = ?1",
            [DEMO_AGENT],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        add_agent(conn, DEMO_SITE, DEMO_AGENT, "Demo Agent", DEMO_PASSWORD, 5)?;
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
