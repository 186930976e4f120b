//! Every setting an admin may give, in one struct that clap and serde both
//! read, so each key works at every layer: `--key-name` on the command line,
//! `HOLDFAST_KEY_NAME` in the environment, `key_name` in the TOML file.
//! Precedence: flag, then environment (clap does those two), then the file,
//! then the defaults in [`ServerConfig`]. A key is declared once, in the
//! [`settings!`] list below; the merge and [`KEYS`] come from that list, so
//! a new key cannot be forgotten at one layer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use super::{Cidr, HttpConfig, ServerConfig, TlsFiles, default_data_dir};

macro_rules! settings {
    ($( $(#[$attr:meta])* $key:ident: $ty:ty, )*) => {
        /// Every key is optional; an unset key keeps its default. The file
        /// refuses keys it does not know, so a typo is an error, not a
        /// silently ignored line.
        #[derive(Debug, Default, Clone, Deserialize, clap::Args)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[$attr])* pub $key: Option<$ty>, )*
        }

        impl Settings {
            /// Each key from `self` where it is set, else from `lower`: the
            /// command line and environment over the file.
            #[must_use]
            pub fn over(self, lower: Self) -> Self {
                Self { $( $key: self.$key.or(lower.$key), )* }
            }
        }

        /// Every key, as the TOML file spells it.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];
    };
}

settings! {
    /// Data directory (database and server key) [default: the OS data dir]
    #[arg(long, env = "HOLDFAST_DATA_DIR")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user@host/db) shared by every node [default: SQLite in the data dir]
    #[arg(long, env = "HOLDFAST_DATABASE", hide_env_values = true)]
    database: String,
    /// HTTP/WebSocket address [default: 0.0.0.0:8080]
    #[arg(long, env = "HOLDFAST_HTTP")]
    http: SocketAddr,
    /// Agent TCP address [default: 0.0.0.0:7070]
    #[arg(long, env = "HOLDFAST_AGENT_LISTEN")]
    agent_listen: SocketAddr,
    /// PEM certificate chain for HTTPS/WSS (with --tls-key)
    #[arg(long, env = "HOLDFAST_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM private key for HTTPS/WSS (with --tls-cert)
    #[arg(long, env = "HOLDFAST_TLS_KEY")]
    tls_key: PathBuf,
    /// Create a demo site and agent if missing, and print how to use them
    #[arg(long, env = "HOLDFAST_DEMO", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    demo: bool,
    /// Public base URL shown in the demo banner (e.g. https://chat.example.com)
    #[arg(long, env = "HOLDFAST_PUBLIC_URL")]
    public_url: String,
    /// Largest agent frame in bytes [default: 1048576]
    #[arg(long, env = "HOLDFAST_MAX_FRAME")]
    max_frame: usize,
    /// Agent heartbeat interval in milliseconds [default: 3000]
    #[arg(long, env = "HOLDFAST_HEARTBEAT_MS")]
    heartbeat_ms: u64,
    /// Agent dead-peer timeout in milliseconds [default: 10000]
    #[arg(long, env = "HOLDFAST_DEAD_AFTER_MS")]
    dead_after_ms: u64,
    /// Event log retention in days [default: 7]
    #[arg(long, env = "HOLDFAST_RETENTION_DAYS")]
    retention_days: u64,
    /// Group commit on or off (off only to measure what it buys) [default: true]
    #[arg(long, env = "HOLDFAST_GROUP_COMMIT", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    group_commit: bool,
    /// Most writer operations in one transaction
    #[arg(long, env = "HOLDFAST_MAX_BATCH")]
    max_batch: usize,
    /// Messages per second each visitor connection may send (legacy; see visitor_messages_per_sec)
    #[arg(long, env = "HOLDFAST_VISITOR_MSG_RATE")]
    visitor_msg_rate: f64,
    /// Burst for visitor_msg_rate
    #[arg(long, env = "HOLDFAST_VISITOR_MSG_BURST")]
    visitor_msg_burst: f64,
    /// Visitor WebSockets per source address [default: 256]
    #[arg(long, env = "HOLDFAST_VISITOR_MAX_WS_PER_IP")]
    visitor_max_ws_per_ip: usize,
    /// Agent connections per source address [default: 256]
    #[arg(long, env = "HOLDFAST_AGENT_MAX_PER_IP")]
    agent_max_per_ip: usize,
    /// Long-poll HTTP requests per second per address
    #[arg(long, env = "HOLDFAST_HTTP_RATE")]
    http_rate: f64,
    /// Burst for http_rate
    #[arg(long, env = "HOLDFAST_HTTP_BURST")]
    http_burst: f64,
    /// Admin listener for /metrics and /healthz, or "off" [default: 127.0.0.1:9090]
    #[arg(long, env = "HOLDFAST_ADMIN_LISTEN")]
    admin_listen: String,
    /// Seconds an agent may be offline before its open chats go back to the queue [default: 120]
    #[arg(long, env = "HOLDFAST_OWNER_GRACE_SECS")]
    owner_grace_secs: u64,
    /// Reverse proxies (addresses or CIDRs, comma-separated) trusted for X-Forwarded-For
    #[arg(long, env = "HOLDFAST_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Days a visitor token is good for [default: 90]
    #[arg(long, env = "HOLDFAST_VISITOR_TOKEN_DAYS")]
    visitor_token_days: u64,
    /// Messages a second per visitor (all its tabs)
    #[arg(long, env = "HOLDFAST_VISITOR_MESSAGES_PER_SEC")]
    visitor_messages_per_sec: f64,
    /// Burst for visitor_messages_per_sec
    #[arg(long, env = "HOLDFAST_VISITOR_MESSAGES_BURST")]
    visitor_messages_burst: u32,
    /// Messages a second per source address
    #[arg(long, env = "HOLDFAST_ADDR_MESSAGES_PER_SEC")]
    addr_messages_per_sec: f64,
    /// Burst for addr_messages_per_sec
    #[arg(long, env = "HOLDFAST_ADDR_MESSAGES_BURST")]
    addr_messages_burst: u32,
    /// Page views a second per visitor
    #[arg(long, env = "HOLDFAST_VISITOR_PAGES_PER_SEC")]
    visitor_pages_per_sec: f64,
    /// Burst for visitor_pages_per_sec
    #[arg(long, env = "HOLDFAST_VISITOR_PAGES_BURST")]
    visitor_pages_burst: u32,
    /// Page views a second per source address
    #[arg(long, env = "HOLDFAST_ADDR_PAGES_PER_SEC")]
    addr_pages_per_sec: f64,
    /// Burst for addr_pages_per_sec
    #[arg(long, env = "HOLDFAST_ADDR_PAGES_BURST")]
    addr_pages_burst: u32,
    /// Identifies a second per visitor
    #[arg(long, env = "HOLDFAST_VISITOR_IDENTIFIES_PER_SEC")]
    visitor_identifies_per_sec: f64,
    /// Burst for visitor_identifies_per_sec
    #[arg(long, env = "HOLDFAST_VISITOR_IDENTIFIES_BURST")]
    visitor_identifies_burst: u32,
    /// Identifies a second per source address
    #[arg(long, env = "HOLDFAST_ADDR_IDENTIFIES_PER_SEC")]
    addr_identifies_per_sec: f64,
    /// Burst for addr_identifies_per_sec
    #[arg(long, env = "HOLDFAST_ADDR_IDENTIFIES_BURST")]
    addr_identifies_burst: u32,
    /// New visitors a second per source address
    #[arg(long, env = "HOLDFAST_ADDR_NEW_VISITORS_PER_SEC")]
    addr_new_visitors_per_sec: f64,
    /// Burst for addr_new_visitors_per_sec
    #[arg(long, env = "HOLDFAST_ADDR_NEW_VISITORS_BURST")]
    addr_new_visitors_burst: u32,
    /// Agent connections not logged in yet, in all
    #[arg(long, env = "HOLDFAST_PREAUTH_MAX")]
    preauth_max: usize,
    /// Agent connections not logged in yet, per source address
    #[arg(long, env = "HOLDFAST_PREAUTH_MAX_PER_IP")]
    preauth_max_per_ip: usize,
    /// Largest agent frame before login, in bytes
    #[arg(long, env = "HOLDFAST_PREAUTH_MAX_FRAME")]
    preauth_max_frame: usize,
    /// Seconds an agent connection has to finish its handshake and login
    #[arg(long, env = "HOLDFAST_PREAUTH_DEADLINE_SECS")]
    preauth_deadline_secs: u64,
    /// Hours a resume ticket is good for
    #[arg(long, env = "HOLDFAST_TICKET_HOURS")]
    ticket_hours: u64,
    /// Logged-in agent sessions in all
    #[arg(long, env = "HOLDFAST_AGENT_MAX_CONNECTIONS")]
    agent_max_connections: usize,
    /// Milliseconds from accept until the first bytes show HTTP/1 or HTTP/2
    #[arg(long, env = "HOLDFAST_HTTP_DETECT_TIMEOUT_MS")]
    http_detect_timeout_ms: u64,
    /// Milliseconds for a request's headers [default: the visitor hello timeout]
    #[arg(long, env = "HOLDFAST_HTTP_HEADER_TIMEOUT_MS")]
    http_header_timeout_ms: u64,
    /// Milliseconds for a request body, first byte to last
    #[arg(long, env = "HOLDFAST_HTTP_BODY_TIMEOUT_MS")]
    http_body_timeout_ms: u64,
    /// Milliseconds an HTTP connection may sit with no request
    #[arg(long, env = "HOLDFAST_HTTP_IDLE_TIMEOUT_MS")]
    http_idle_timeout_ms: u64,
    /// HTTP/2 PING interval in milliseconds
    #[arg(long, env = "HOLDFAST_HTTP2_KEEPALIVE_INTERVAL_MS")]
    http2_keepalive_interval_ms: u64,
    /// Milliseconds to wait for an HTTP/2 PING's answer
    #[arg(long, env = "HOLDFAST_HTTP2_KEEPALIVE_TIMEOUT_MS")]
    http2_keepalive_timeout_ms: u64,
    /// Concurrent streams per HTTP/2 connection
    #[arg(long, env = "HOLDFAST_HTTP2_MAX_STREAMS")]
    http2_max_streams: u32,
    /// HTTP connections per source address (per /64 for IPv6)
    #[arg(long, env = "HOLDFAST_HTTP_MAX_PER_IP")]
    http_max_per_ip: usize,
    /// File descriptors kept back from HTTP for the agent port and the server
    #[arg(long, env = "HOLDFAST_HTTP_FD_RESERVE")]
    http_fd_reserve: u64,
    /// Largest attachment in bytes [default: 20971520]
    #[arg(long, env = "HOLDFAST_ATTACH_MAX_BYTES")]
    attach_max_bytes: u64,
    /// Unfinished uploads per visitor [default: 4]
    #[arg(long, env = "HOLDFAST_ATTACH_PENDING_PER_VISITOR")]
    attach_pending_per_visitor: usize,
    /// Unfinished uploads per source address [default: 32]
    #[arg(long, env = "HOLDFAST_ATTACH_PENDING_PER_ADDR")]
    attach_pending_per_addr: usize,
    /// Upload bytes per second per visitor [default: 8388608]
    #[arg(long, env = "HOLDFAST_ATTACH_RATE_BYTES")]
    attach_rate_bytes: u64,
    /// Bytes waiting for one agent connection before it is cut as a slow consumer
    #[arg(long, env = "HOLDFAST_AGENT_QUEUE_BYTES")]
    agent_queue_bytes: usize,
    /// Bytes waiting for one visitor connection before it is cut as a slow consumer
    #[arg(long, env = "HOLDFAST_VISITOR_QUEUE_BYTES")]
    visitor_queue_bytes: usize,
    /// Seconds a connection may take nothing from its queue before it is cut
    #[arg(long, env = "HOLDFAST_QUEUE_STALL_SECS")]
    queue_stall_secs: u64,
    /// Milliseconds between the visitor updates agents are sent
    #[arg(long, env = "HOLDFAST_PRESENCE_EVERY_MS")]
    presence_every_ms: u64,
    /// Page views kept per visitor
    #[arg(long, env = "HOLDFAST_PAGE_TRAIL_MAX")]
    page_trail_max: u32,
    /// Failed logins (per address, and per name at an address) before a lockout
    #[arg(long, env = "HOLDFAST_LOGIN_FREE_FAILURES")]
    login_free_failures: u32,
    /// The longest login lockout in seconds (it doubles from 2 s)
    #[arg(long, env = "HOLDFAST_LOGIN_MAX_LOCKOUT_SECS")]
    login_max_lockout_secs: u64,
    /// Wake-up bus between nodes: "local" (one node) or redis://host:port [default: local]
    #[arg(long, env = "HOLDFAST_BUS")]
    bus: String,
    /// This node's name on the bus and in logs [default: the host name]
    #[arg(long, env = "HOLDFAST_NODE_ID")]
    node_id: String,
    /// Create or upgrade the PostgreSQL schema before serving (without it, a schema that is behind stops the start); SQLite always migrates
    #[arg(long, env = "HOLDFAST_MIGRATE", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    migrate: bool,
    /// Load balancers (addresses or CIDRs, comma-separated) whose agent connections must start with a PROXY protocol header naming the real client
    #[arg(long, env = "HOLDFAST_AGENT_PROXY_PROTOCOL_FROM", value_delimiter = ',')]
    agent_proxy_protocol_from: Vec<String>,
}

/// The TOML file.
pub fn load_file(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// A burst given as a TOML float (older files wrote `http_burst = 60.0`).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn burst_from(v: f64) -> u32 {
    // Clamped first, so the cast cannot truncate or wrap.
    v.clamp(1.0, f64::from(u32::MAX)) as u32
}

/// Checks the settings (already layered: see [`Settings::over`]) and lays
/// them over the defaults.
pub fn resolve(s: Settings) -> anyhow::Result<ServerConfig> {
    let mut http_limits = HttpConfig::default();
    resolve_http(&s, &mut http_limits)?;
    let mut attach = crate::attach::Policy::default();
    resolve_attach(&s, &mut attach)?;
    let data_dir = s.data_dir.unwrap_or_else(default_data_dir);
    let mut c = ServerConfig::with_defaults(data_dir);
    if let Some(v) = s.http {
        c.http = v;
    }
    if let Some(v) = s.agent_listen {
        c.agent_listen = v;
    }
    c.demo = s.demo.unwrap_or(false);
    c.migrate = s.migrate.unwrap_or(false);
    c.attach = attach;
    if let Some(list) = s.agent_proxy_protocol_from {
        c.agent_proxy_protocol_from = list
            .iter()
            .map(|s| s.trim().parse::<Cidr>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("agent_proxy_protocol_from: {e}"))?;
    }
    if let Some(url) = s.database.filter(|u| !u.trim().is_empty()) {
        // Parsed here, so a typo stops the start instead of the writer.
        match crate::store::Database::new(Some(url.trim()), &c.data_dir)
            .map_err(|e| anyhow::anyhow!("database: {e}"))?
        {
            crate::store::Database::Postgres(t) => c.database = Some(t),
            crate::store::Database::Sqlite(_) => {}
        }
    }
    c.public_url = s.public_url;
    if let Some(v) = s.max_frame {
        anyhow::ensure!(v >= 1024, "max_frame must be at least 1024 bytes, got {v}");
        c.max_frame = v;
    }
    if let Some(v) = s.heartbeat_ms {
        c.liveness.heartbeat = Duration::from_millis(v);
    }
    if let Some(v) = s.dead_after_ms {
        c.liveness.dead_after = Duration::from_millis(v);
    }
    anyhow::ensure!(
        c.liveness.dead_after > c.liveness.heartbeat,
        "dead_after ({:?}) must be longer than the heartbeat ({:?})",
        c.liveness.dead_after,
        c.liveness.heartbeat
    );
    if let Some(v) = s.retention_days {
        c.writer.retention = Duration::from_secs(v.max(1) * 24 * 3600);
    }
    if let Some(v) = s.group_commit {
        c.writer.group_commit = v;
    }
    if let Some(v) = s.max_batch {
        c.writer.max_batch = v.max(1);
    }
    if let Some(v) = s.visitor_msg_rate {
        c.visitor.msg_rate = v;
    }
    if let Some(v) = s.visitor_msg_burst {
        c.visitor.msg_burst = v;
    }
    if let Some(v) = s.visitor_max_ws_per_ip {
        c.visitor.max_ws_per_ip = v;
    }
    if let Some(v) = s.agent_max_per_ip {
        c.agent_max_per_ip = v;
    }
    if let Some(v) = s.http_rate {
        c.visitor.rates.addr_http_requests.per_second = v;
    }
    if let Some(v) = s.http_burst {
        c.visitor.rates.addr_http_requests.burst = burst_from(v);
    }
    if let Some(v) = s.admin_listen {
        c.admin_listen = match v.trim() {
            "off" | "none" | "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("admin_listen must be host:port or \"off\", got {addr:?}")
            })?),
        };
    }
    if let Some(v) = s.owner_grace_secs {
        c.owner_grace = Duration::from_secs(v);
    }
    if let Some(list) = s.trusted_proxies {
        c.visitor.trusted_proxies = list
            .iter()
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
    }
    if let Some(d) = s.visitor_token_days {
        c.visitor.token_lifetime = Duration::from_secs(d.max(1) * 24 * 3600);
    }
    let r = &mut c.visitor.rates;
    for (rate, per_sec, burst) in [
        (
            &mut r.visitor_messages,
            s.visitor_messages_per_sec,
            s.visitor_messages_burst,
        ),
        (
            &mut r.addr_messages,
            s.addr_messages_per_sec,
            s.addr_messages_burst,
        ),
        (
            &mut r.visitor_pages,
            s.visitor_pages_per_sec,
            s.visitor_pages_burst,
        ),
        (&mut r.addr_pages, s.addr_pages_per_sec, s.addr_pages_burst),
        (
            &mut r.visitor_identifies,
            s.visitor_identifies_per_sec,
            s.visitor_identifies_burst,
        ),
        (
            &mut r.addr_identifies,
            s.addr_identifies_per_sec,
            s.addr_identifies_burst,
        ),
        (
            &mut r.addr_new_visitors,
            s.addr_new_visitors_per_sec,
            s.addr_new_visitors_burst,
        ),
    ] {
        if let Some(v) = per_sec {
            rate.per_second = v;
        }
        if let Some(v) = burst {
            rate.burst = v;
        }
    }
    if let Some(v) = s.preauth_max {
        c.preauth.max = v.max(1);
    }
    if let Some(v) = s.preauth_max_per_ip {
        c.preauth.max_per_ip = v.max(1);
    }
    if let Some(v) = s.preauth_max_frame {
        anyhow::ensure!(
            v >= 1024,
            "preauth_max_frame must be at least 1024 bytes, got {v}"
        );
        c.preauth.max_frame = v;
    }
    if let Some(v) = s.preauth_deadline_secs {
        c.preauth.deadline = Duration::from_secs(v.max(1));
    }
    if let Some(h) = s.ticket_hours {
        c.ticket_lifetime = Duration::from_secs(h * 3600);
    }
    if let Some(v) = s.agent_max_connections {
        c.agent_max_connections = v.max(1);
    }
    if let Some(v) = s.agent_queue_bytes {
        anyhow::ensure!(
            v >= c.max_frame,
            "agent_queue_bytes ({v}) must hold at least one frame (max_frame {})",
            c.max_frame
        );
        c.hub.agent_queue_bytes = v;
    }
    if let Some(v) = s.visitor_queue_bytes {
        anyhow::ensure!(
            v >= 64 * 1024,
            "visitor_queue_bytes must be at least 65536 (a visitor snapshot), got {v}"
        );
        c.hub.visitor_queue_bytes = v;
    }
    if let Some(v) = s.queue_stall_secs {
        anyhow::ensure!(v > 0, "queue_stall_secs must be more than 0");
        c.hub.queue_stall = Duration::from_secs(v);
    }
    if let Some(v) = s.presence_every_ms {
        c.hub.presence_every = Duration::from_millis(v.clamp(10, 10_000));
    }
    if let Some(v) = s.page_trail_max {
        c.writer.trail_keep = v.max(1);
    }
    if let Some(v) = s.login_free_failures {
        c.throttle.free_failures = v.max(1);
    }
    if let Some(v) = s.login_max_lockout_secs {
        c.throttle.max_lockout = Duration::from_secs(v.max(2));
    }
    if let Some(v) = s.bus {
        c.bus = v.parse().map_err(|e| anyhow::anyhow!("bus: {e}"))?;
    }
    if let Some(v) = s.node_id {
        let v = v.trim();
        anyhow::ensure!(!v.is_empty(), "node_id must not be empty");
        c.node_id = v.to_owned();
    }
    c.http_limits = http_limits;
    c.tls = match (s.tls_cert, s.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    Ok(c)
}

fn resolve_http(s: &Settings, h: &mut HttpConfig) -> anyhow::Result<()> {
    // A zero timer would close every connection at once: refuse it rather
    // than read it as "off".
    let ms = |key: &str, v: Option<u64>, into: &mut Duration| -> anyhow::Result<()> {
        if let Some(v) = v {
            anyhow::ensure!(v > 0, "{key} must be more than 0");
            *into = Duration::from_millis(v);
        }
        Ok(())
    };
    ms(
        "http_detect_timeout_ms",
        s.http_detect_timeout_ms,
        &mut h.detect_timeout,
    )?;
    if let Some(v) = s.http_header_timeout_ms {
        anyhow::ensure!(v > 0, "http_header_timeout_ms must be more than 0");
        h.header_timeout = Some(Duration::from_millis(v));
    }
    ms(
        "http_body_timeout_ms",
        s.http_body_timeout_ms,
        &mut h.body_timeout,
    )?;
    ms(
        "http_idle_timeout_ms",
        s.http_idle_timeout_ms,
        &mut h.idle_timeout,
    )?;
    ms(
        "http2_keepalive_interval_ms",
        s.http2_keepalive_interval_ms,
        &mut h.h2_keepalive_interval,
    )?;
    ms(
        "http2_keepalive_timeout_ms",
        s.http2_keepalive_timeout_ms,
        &mut h.h2_keepalive_timeout,
    )?;
    if let Some(v) = s.http2_max_streams {
        anyhow::ensure!(v > 0, "http2_max_streams must be more than 0");
        h.h2_max_streams = v;
    }
    if let Some(v) = s.http_max_per_ip {
        anyhow::ensure!(v > 0, "http_max_per_ip must be more than 0");
        h.max_per_ip = v;
    }
    if let Some(v) = s.http_fd_reserve {
        h.fd_reserve = v;
    }
    Ok(())
}

fn resolve_attach(s: &Settings, a: &mut crate::attach::Policy) -> anyhow::Result<()> {
    if let Some(v) = s.attach_max_bytes {
        anyhow::ensure!(v > 0, "attach_max_bytes must be more than 0");
        a.max_size = v;
    }
    if let Some(v) = s.attach_pending_per_visitor {
        a.max_pending_per_visitor = v;
    }
    if let Some(v) = s.attach_pending_per_addr {
        a.max_pending_per_ip = v;
    }
    if let Some(v) = s.attach_rate_bytes {
        anyhow::ensure!(v > 0, "attach_rate_bytes must be more than 0");
        a.rate_bytes_per_sec = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        s: Settings,
    }

    fn flags(args: &[&str]) -> Settings {
        let mut argv = vec!["holdfast"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().s
    }

    fn file(text: &str) -> Settings {
        toml::from_str(text).unwrap()
    }

    fn dir() -> Settings {
        Settings {
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        }
    }

    #[test]
    fn every_key_is_a_flag_an_env_var_and_a_file_key() {
        let cmd = Settings::augment_args(clap::Command::new("t"));
        let mut ids: Vec<String> = cmd
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        ids.sort();
        let mut keys: Vec<String> = KEYS.iter().map(|k| (*k).to_owned()).collect();
        keys.sort();
        assert_eq!(ids, keys);
        for a in cmd.get_arguments() {
            let key = a.get_id().as_str();
            assert_eq!(a.get_long(), Some(key.replace('_', "-").as_str()), "{key}");
            let env = a.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, format!("HOLDFAST_{}", key.to_uppercase()), "{key}");
        }
        // The file takes each key (a wrong type is refused, an unknown key
        // says so: both prove the key is known).
        for key in KEYS {
            let err = toml::from_str::<Settings>(&format!("{key} = {{}}"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(!err.contains("unknown field"), "{key}: {err}");
        }
        assert!(toml::from_str::<Settings>("bogus = 1").is_err());
    }

    #[test]
    fn the_database_is_a_postgres_url_and_its_password_is_never_shown() {
        let c = resolve(Settings::default()).unwrap();
        assert!(c.database.is_none(), "SQLite in the data dir by default");
        let c = resolve(flags(&[
            "--database",
            "postgres://holdfast:s3cret@db.example:5433/chat",
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("db.example"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(matches!(
            c.store().unwrap(),
            crate::store::Database::Postgres(_)
        ));
        let e = resolve(flags(&["--database", "mysql://db/chat"])).unwrap_err();
        assert!(format!("{e:#}").contains("postgres://"), "{e:#}");
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let f = file(
            r#"
            http = "127.0.0.1:9000"
            agent_listen = "127.0.0.1:9001"
            heartbeat_ms = 1000
            addr_messages_per_sec = 3.5
            "#,
        );
        let cli = flags(&["--http", "127.0.0.1:9100", "--data-dir", "/tmp/x"]);
        let c = resolve(cli.over(f)).unwrap();
        assert_eq!(c.http.port(), 9100);
        assert_eq!(c.agent_listen.port(), 9001);
        assert_eq!(c.liveness.heartbeat, Duration::from_secs(1));
        assert_eq!(c.liveness.dead_after, Duration::from_secs(10));
        assert!((c.visitor.rates.addr_messages.per_second - 3.5).abs() < f64::EPSILON);
    }

    #[test]
    fn keys_that_were_file_only_work_as_flags() {
        let s = flags(&[
            "--data-dir",
            "/tmp/x",
            "--addr-messages-per-sec",
            "7",
            "--http-max-per-ip",
            "40",
            "--trusted-proxies",
            "10.0.0.0/8,192.168.1.1",
            "--page-trail-max",
            "12",
            "--demo",
            "--group-commit=false",
        ]);
        let c = resolve(s).unwrap();
        assert!((c.visitor.rates.addr_messages.per_second - 7.0).abs() < f64::EPSILON);
        assert_eq!(c.http_limits.max_per_ip, 40);
        assert_eq!(c.visitor.trusted_proxies.len(), 2);
        assert_eq!(c.writer.trail_keep, 12);
        assert!(c.demo);
        assert!(!c.writer.group_commit);
        assert!(!resolve(dir()).unwrap().demo);
    }

    #[test]
    fn migrate_and_the_proxy_protocol_senders_at_every_layer() {
        let c = resolve(dir()).unwrap();
        assert!(!c.migrate);
        assert!(c.agent_proxy_protocol_from.is_empty());
        let c = resolve(flags(&[
            "--data-dir",
            "/tmp/x",
            "--migrate",
            "--agent-proxy-protocol-from",
            "10.0.0.5,192.168.0.0/24",
        ]))
        .unwrap();
        assert!(c.migrate);
        assert_eq!(c.agent_proxy_protocol_from.len(), 2);
        assert!(c.agent_proxy_protocol_from[1].contains([192, 168, 0, 9].into()));
        assert!(!c.agent_proxy_protocol_from[0].contains([10, 0, 0, 6].into()));
        let c =
            resolve(file("migrate = true\nagent_proxy_protocol_from = [\"10.0.0.5\"]").over(dir()))
                .unwrap();
        assert!(c.migrate);
        assert_eq!(c.agent_proxy_protocol_from.len(), 1);
        assert!(resolve(file("agent_proxy_protocol_from = [\"haproxy\"]").over(dir())).is_err());
    }

    #[test]
    fn the_bus_and_node_id() {
        use crate::bus::BusConfig;
        let c = resolve(dir()).unwrap();
        assert_eq!(c.bus, BusConfig::Local);
        assert!(!c.node_id.is_empty());
        let s = flags(&[
            "--data-dir",
            "/tmp/x",
            "--bus",
            "redis://cache:6379",
            "--node-id",
            "web-2",
        ]);
        let c = resolve(s).unwrap();
        assert_eq!(c.bus, BusConfig::Redis("redis://cache:6379".into()));
        assert_eq!(c.node_id, "web-2");
        let c = resolve(file("bus = \"local\"").over(dir())).unwrap();
        assert_eq!(c.bus, BusConfig::Local);
        assert!(resolve(file("bus = \"amqp://x\"").over(dir())).is_err());
        assert!(resolve(file("bus = \"redis://\"").over(dir())).is_err());
        assert!(resolve(file("node_id = \"  \"").over(dir())).is_err());
    }

    #[test]
    fn http_limits_from_the_file() {
        let f = file(
            r#"
            http_detect_timeout_ms = 700
            http_header_timeout_ms = 900
            http_max_per_ip = 40
            http_fd_reserve = 100
            "#,
        );
        let c = resolve(f.over(dir())).unwrap();
        let h = &c.http_limits;
        assert_eq!(h.detect_timeout, Duration::from_millis(700));
        assert_eq!(h.header_timeout, Some(Duration::from_millis(900)));
        assert_eq!(h.max_per_ip, 40);
        assert_eq!(h.fd_reserve, 100);
        assert_eq!(h.body_timeout, HttpConfig::default().body_timeout);
        assert!(resolve(file("http_idle_timeout_ms = 0").over(dir())).is_err());
    }

    #[test]
    fn bad_values_are_errors() {
        let half_tls = Settings {
            tls_cert: Some("c.pem".into()),
            ..dir()
        };
        assert!(resolve(half_tls).is_err());
        assert!(resolve(file("max_frame = 10").over(dir())).is_err());
        assert!(resolve(file("trusted_proxies = [\"nonsense\"]").over(dir())).is_err());
        let mut argv = vec!["holdfast", "--max-frame", "lots"];
        assert!(Cli::try_parse_from(&argv).is_err());
        argv.truncate(1);
        argv.push("--demo=perhaps");
        assert!(Cli::try_parse_from(&argv).is_err());
    }
}
