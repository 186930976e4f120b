//! Server settings. Precedence: command-line flag, then `HOLDFAST_*`
//! environment variable (clap reads both into [`Overrides`]), then the TOML
//! file, then the defaults here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::visitor::Limits;
use serde::Deserialize;

use crate::hub::HubConfig;
use crate::store::WriterConfig;
use crate::throttle::ThrottleConfig;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct VisitorConfig {
    pub max_ws_per_ip: usize,
    /// Messages per second per visitor connection, and the burst allowed.
    pub msg_rate: f64,
    pub msg_burst: f64,
    /// How long a long-poll is held open when there is nothing to send.
    pub poll_timeout: Duration,
    /// Browsers throttle timers in background tabs to about once a minute,
    /// so the visitor dead-peer cut is longer than the agents' 10 s.
    pub liveness: LivenessConfig,
    pub limits: Limits,
    /// Per-WebSocket buffers. tungstenite's 128 KiB defaults would cost
    /// gigabytes at 10k idle visitors. Every idle tab keeps its read buffer,
    /// so it is small: pings and most chat messages fit, a longer message
    /// takes another read, and a frame bigger than the buffer still arrives
    /// (the buffer grows for it).
    pub ws_read_buffer: usize,
    pub ws_write_buffer: usize,
    pub hello_timeout: Duration,
    /// Per visitor (all its tabs) and per address (see `limits`).
    pub rates: crate::limits::LimitsConfig,
    /// How long a visitor token is good for; every welcome issues a new one.
    pub token_lifetime: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the real client: behind
    /// them, every visitor would otherwise share the proxy's address and
    /// its limits.
    pub trusted_proxies: Vec<Cidr>,
}

/// An address range, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a
/// /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            // An IPv4 client seen through an IPv6 socket.
            (IpAddr::V4(_), IpAddr::V6(b)) => b
                .to_ipv4_mapped()
                .is_some_and(|b| self.contains(IpAddr::V4(b))),
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0-{max}"))?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Default for VisitorConfig {
    fn default() -> Self {
        Self {
            max_ws_per_ip: 256,
            msg_rate: 5.0,
            msg_burst: 20.0,
            poll_timeout: Duration::from_secs(25),
            liveness: LivenessConfig {
                heartbeat: Duration::from_secs(3),
                // Not the agents' 10 s: browsers throttle background tabs'
                // timers to about one run a minute, so a hidden tab can be
                // silent that long while perfectly alive (PROTOCOL.md §12).
                dead_after: Duration::from_secs(75),
            },
            limits: Limits::default(),
            ws_read_buffer: 256,
            ws_write_buffer: 0,
            hello_timeout: Duration::from_secs(10),
            rates: crate::limits::LimitsConfig::default(),
            token_lifetime: Duration::from_secs(90 * 24 * 3600),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Timers and caps on every connection to the HTTP port, so sockets that
/// send nothing, send slowly or sit idle cannot use up the process's file
/// descriptors (and with them the agent port).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// From accept until the first bytes say HTTP/1 or HTTP/2 (TLS
    /// handshake included). A socket that sends nothing is closed then.
    pub detect_timeout: Duration,
    /// Each request's headers, and an HTTP/2 connection's first request;
    /// `None` means the visitor hello timeout, so a WebSocket gets one
    /// deadline for its upgrade request and one for its hello.
    pub header_timeout: Option<Duration>,
    /// A request body, from the end of its headers to its last byte. Visitor
    /// bodies are a few KiB, so this is a total, not a per-read, timer: a
    /// trickle of one byte a second does not reset it.
    pub body_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    /// HTTP/1 also has the header timer while it waits for the next request.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval, and how long to wait for its answer.
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
    pub h2_max_streams: u32,
    /// Open connections per source address (per /64 for IPv6), WebSockets
    /// included. Generous: a whole office may share one NAT address.
    pub max_per_ip: usize,
    /// File descriptors kept back from HTTP for the agent port, the
    /// database and the server itself. HTTP may hold the process's
    /// RLIMIT_NOFILE minus this many connections.
    pub fd_reserve: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            detect_timeout: Duration::from_secs(10),
            header_timeout: None,
            body_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(30),
            h2_keepalive_interval: Duration::from_secs(20),
            h2_keepalive_timeout: Duration::from_secs(10),
            h2_max_streams: 100,
            max_per_ip: 512,
            fd_reserve: 512,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub agent_listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub demo: bool,
    /// The address visitors and agents use to reach this server, for the
    /// demo banner; derived from `http` when unset.
    pub public_url: Option<String>,
    pub max_frame: usize,
    pub liveness: LivenessConfig,
    pub handshake_timeout: Duration,
    pub login_failure_delay: Duration,
    pub agent_max_connections: usize,
    pub agent_max_per_ip: usize,
    pub writer: WriterConfig,
    pub hub: HubConfig,
    pub throttle: ThrottleConfig,
    pub visitor: VisitorConfig,
    /// Where `/metrics` (and a second `/healthz`) are served; `None` turns
    /// the admin listener off. Not the visitor port: metrics name sites,
    /// counts and timings that are nobody's business on the internet.
    pub admin_listen: Option<SocketAddr>,
    /// How long an agent may be offline (no device connected) before its
    /// open chats go back to the queue.
    pub owner_grace: Duration,
    /// Agent connections that have not logged in yet.
    pub preauth: crate::login::PreAuthConfig,
    /// How long a resume ticket lets a device reconnect without a password.
    pub ticket_lifetime: Duration,
    pub http_limits: HttpConfig,
}

pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("io", "Holdfast", "holdfast-server")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("holdfast-data"))
}

impl ServerConfig {
    pub fn with_defaults(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            agent_listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            tls: None,
            demo: false,
            public_url: None,
            max_frame: holdfast_protocol::DEFAULT_MAX_FRAME,
            liveness: LivenessConfig::default(),
            handshake_timeout: Duration::from_secs(10),
            login_failure_delay: Duration::from_millis(300),
            agent_max_connections: 10_000,
            agent_max_per_ip: 256,
            writer: WriterConfig::default(),
            hub: HubConfig::default(),
            throttle: ThrottleConfig::default(),
            visitor: VisitorConfig::default(),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            owner_grace: Duration::from_secs(120),
            preauth: crate::login::PreAuthConfig::default(),
            ticket_lifetime: Duration::from_secs(12 * 3600),
            http_limits: HttpConfig::default(),
        }
    }

    /// Loopback, ephemeral ports: for tests and benchmarks.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Self::with_defaults(data_dir);
        c.http = SocketAddr::from(([127, 0, 0, 1], 0));
        c.agent_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.login_failure_delay = Duration::from_millis(20);
        c.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        c
    }

    pub fn base_url(&self, bound: SocketAddr) -> String {
        if let Some(u) = &self.public_url {
            return u.trim_end_matches('/').to_string();
        }
        let host = if bound.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            bound.ip().to_string()
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}:{}", bound.port())
    }
}

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub agent_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub demo: Option<bool>,
    pub public_url: Option<String>,
    pub max_frame: Option<usize>,
    pub heartbeat_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub retention_days: Option<u64>,
    pub group_commit: Option<bool>,
    pub max_batch: Option<usize>,
    /// Messages per second each visitor connection may send, and burst.
    pub visitor_msg_rate: Option<f64>,
    pub visitor_msg_burst: Option<f64>,
    /// Concurrent connections per source address.
    pub visitor_max_ws_per_ip: Option<usize>,
    pub agent_max_per_ip: Option<usize>,
    /// HTTP requests per second per address (long-poll), and burst.
    pub http_rate: Option<f64>,
    pub http_burst: Option<f64>,
    /// Admin listener (`/metrics`), or "off".
    pub admin_listen: Option<String>,
    /// Seconds an agent may be offline before its chats are handed back.
    pub owner_grace_secs: Option<u64>,
    /// Reverse proxies (addresses or CIDRs) trusted for X-Forwarded-For.
    pub trusted_proxies: Option<Vec<String>>,
    /// Days a visitor token is good for.
    pub visitor_token_days: Option<u64>,
    /// Per-visitor and per-address limits: messages, page views,
    /// identifies a second (and their bursts), and new visitors a second
    /// per address.
    pub visitor_messages_per_sec: Option<f64>,
    pub visitor_messages_burst: Option<u32>,
    pub addr_messages_per_sec: Option<f64>,
    pub addr_messages_burst: Option<u32>,
    pub visitor_pages_per_sec: Option<f64>,
    pub visitor_pages_burst: Option<u32>,
    pub addr_pages_per_sec: Option<f64>,
    pub addr_pages_burst: Option<u32>,
    pub visitor_identifies_per_sec: Option<f64>,
    pub visitor_identifies_burst: Option<u32>,
    pub addr_identifies_per_sec: Option<f64>,
    pub addr_identifies_burst: Option<u32>,
    pub addr_new_visitors_per_sec: Option<f64>,
    pub addr_new_visitors_burst: Option<u32>,
    /// Agent connections not logged in yet: in all, per address, the
    /// largest frame before login (bytes), and the deadline (seconds).
    pub preauth_max: Option<usize>,
    pub preauth_max_per_ip: Option<usize>,
    pub preauth_max_frame: Option<usize>,
    pub preauth_deadline_secs: Option<u64>,
    /// Hours a resume ticket is good for.
    pub ticket_hours: Option<u64>,
    /// Logged-in agent sessions in all.
    pub agent_max_connections: Option<usize>,
    /// [`HttpConfig`]: timers in milliseconds, caps as counts.
    pub http_detect_timeout_ms: Option<u64>,
    pub http_header_timeout_ms: Option<u64>,
    pub http_body_timeout_ms: Option<u64>,
    pub http_idle_timeout_ms: Option<u64>,
    pub http2_keepalive_interval_ms: Option<u64>,
    pub http2_keepalive_timeout_ms: Option<u64>,
    pub http2_max_streams: Option<u32>,
    pub http_max_per_ip: Option<usize>,
    pub http_fd_reserve: Option<u64>,
    /// Bytes waiting for one agent (or visitor) connection before it is
    /// cut as a slow consumer, and how long it may take nothing.
    pub agent_queue_bytes: Option<usize>,
    pub visitor_queue_bytes: Option<usize>,
    pub queue_stall_secs: Option<u64>,
    /// How often agents are sent the visitors that changed.
    pub presence_every_ms: Option<u64>,
    /// Page views kept per visitor.
    pub page_trail_max: Option<u32>,
    /// Failed logins (per address, and per name at an address) before a
    /// lockout, and the longest lockout (it doubles from 2 s).
    pub login_free_failures: Option<u32>,
    pub login_max_lockout_secs: Option<u64>,
}

/// Values from flags or the environment (flags win; clap does that part).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub http: Option<SocketAddr>,
    pub agent_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub demo: bool,
    pub public_url: Option<String>,
    pub max_frame: Option<usize>,
    pub heartbeat_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub retention_days: Option<u64>,
    pub group_commit: Option<bool>,
    pub admin_listen: Option<String>,
    pub owner_grace_secs: Option<u64>,
}

pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
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

/// Merge flags/env over the file over defaults.
pub fn resolve(file: FileConfig, o: Overrides) -> anyhow::Result<ServerConfig> {
    let mut http_limits = HttpConfig::default();
    resolve_http(&file, &mut http_limits)?;
    let data_dir = o
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(default_data_dir);
    let mut c = ServerConfig::with_defaults(data_dir);
    if let Some(v) = o.http.or(file.http) {
        c.http = v;
    }
    if let Some(v) = o.agent_listen.or(file.agent_listen) {
        c.agent_listen = v;
    }
    c.demo = o.demo || file.demo.unwrap_or(false);
    c.public_url = o.public_url.or(file.public_url);
    if let Some(v) = o.max_frame.or(file.max_frame) {
        anyhow::ensure!(v >= 1024, "max_frame must be at least 1024 bytes, got {v}");
        c.max_frame = v;
    }
    if let Some(v) = o.heartbeat_ms.or(file.heartbeat_ms) {
        c.liveness.heartbeat = Duration::from_millis(v);
    }
    if let Some(v) = o.dead_after_ms.or(file.dead_after_ms) {
        c.liveness.dead_after = Duration::from_millis(v);
    }
    anyhow::ensure!(
        c.liveness.dead_after > c.liveness.heartbeat,
        "dead_after ({:?}) must be longer than the heartbeat ({:?})",
        c.liveness.dead_after,
        c.liveness.heartbeat
    );
    if let Some(v) = o.retention_days.or(file.retention_days) {
        c.writer.retention = Duration::from_secs(v.max(1) * 24 * 3600);
    }
    if let Some(v) = o.group_commit.or(file.group_commit) {
        c.writer.group_commit = v;
    }
    if let Some(v) = file.max_batch {
        c.writer.max_batch = v.max(1);
    }
    if let Some(v) = file.visitor_msg_rate {
        c.visitor.msg_rate = v;
    }
    if let Some(v) = file.visitor_msg_burst {
        c.visitor.msg_burst = v;
    }
    if let Some(v) = file.visitor_max_ws_per_ip {
        c.visitor.max_ws_per_ip = v;
    }
    if let Some(v) = file.agent_max_per_ip {
        c.agent_max_per_ip = v;
    }
    if let Some(v) = file.http_rate {
        c.visitor.rates.addr_http_requests.per_second = v;
    }
    if let Some(v) = file.http_burst {
        c.visitor.rates.addr_http_requests.burst = burst_from(v);
    }
    if let Some(v) = o.admin_listen.or(file.admin_listen) {
        c.admin_listen = match v.trim() {
            "off" | "none" | "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("admin_listen must be host:port or \"off\", got {addr:?}")
            })?),
        };
    }
    if let Some(v) = o.owner_grace_secs.or(file.owner_grace_secs) {
        c.owner_grace = Duration::from_secs(v);
    }
    if let Some(list) = file.trusted_proxies {
        c.visitor.trusted_proxies = list
            .iter()
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
    }
    if let Some(d) = file.visitor_token_days {
        c.visitor.token_lifetime = Duration::from_secs(d.max(1) * 24 * 3600);
    }
    let r = &mut c.visitor.rates;
    for (rate, per_sec, burst) in [
        (
            &mut r.visitor_messages,
            file.visitor_messages_per_sec,
            file.visitor_messages_burst,
        ),
        (
            &mut r.addr_messages,
            file.addr_messages_per_sec,
            file.addr_messages_burst,
        ),
        (
            &mut r.visitor_pages,
            file.visitor_pages_per_sec,
            file.visitor_pages_burst,
        ),
        (
            &mut r.addr_pages,
            file.addr_pages_per_sec,
            file.addr_pages_burst,
        ),
        (
            &mut r.visitor_identifies,
            file.visitor_identifies_per_sec,
            file.visitor_identifies_burst,
        ),
        (
            &mut r.addr_identifies,
            file.addr_identifies_per_sec,
            file.addr_identifies_burst,
        ),
        (
            &mut r.addr_new_visitors,
            file.addr_new_visitors_per_sec,
            file.addr_new_visitors_burst,
        ),
    ] {
        if let Some(v) = per_sec {
            rate.per_second = v;
        }
        if let Some(v) = burst {
            rate.burst = v;
        }
    }
    if let Some(v) = file.preauth_max {
        c.preauth.max = v.max(1);
    }
    if let Some(v) = file.preauth_max_per_ip {
        c.preauth.max_per_ip = v.max(1);
    }
    if let Some(v) = file.preauth_max_frame {
        anyhow::ensure!(
            v >= 1024,
            "preauth_max_frame must be at least 1024 bytes, got {v}"
        );
        c.preauth.max_frame = v;
    }
    if let Some(v) = file.preauth_deadline_secs {
        c.preauth.deadline = Duration::from_secs(v.max(1));
    }
    if let Some(h) = file.ticket_hours {
        c.ticket_lifetime = Duration::from_secs(h * 3600);
    }
    if let Some(v) = file.agent_max_connections {
        c.agent_max_connections = v.max(1);
    }
    if let Some(v) = file.agent_queue_bytes {
        anyhow::ensure!(
            v >= c.max_frame,
            "agent_queue_bytes ({v}) must hold at least one frame (max_frame {})",
            c.max_frame
        );
        c.hub.agent_queue_bytes = v;
    }
    if let Some(v) = file.visitor_queue_bytes {
        anyhow::ensure!(
            v >= 64 * 1024,
            "visitor_queue_bytes must be at least 65536 (a visitor snapshot), got {v}"
        );
        c.hub.visitor_queue_bytes = v;
    }
    if let Some(v) = file.queue_stall_secs {
        anyhow::ensure!(v > 0, "queue_stall_secs must be more than 0");
        c.hub.queue_stall = Duration::from_secs(v);
    }
    if let Some(v) = file.presence_every_ms {
        c.hub.presence_every = Duration::from_millis(v.clamp(10, 10_000));
    }
    if let Some(v) = file.page_trail_max {
        c.writer.trail_keep = v.max(1);
    }
    if let Some(v) = file.login_free_failures {
        c.throttle.free_failures = v.max(1);
    }
    if let Some(v) = file.login_max_lockout_secs {
        c.throttle.max_lockout = Duration::from_secs(v.max(2));
    }
    c.http_limits = http_limits;
    c.tls = match (o.tls_cert.or(file.tls_cert), o.tls_key.or(file.tls_key)) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both --tls-cert and --tls-key"),
    };
    Ok(c)
}

fn resolve_http(file: &FileConfig, h: &mut HttpConfig) -> anyhow::Result<()> {
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
        file.http_detect_timeout_ms,
        &mut h.detect_timeout,
    )?;
    if let Some(v) = file.http_header_timeout_ms {
        anyhow::ensure!(v > 0, "http_header_timeout_ms must be more than 0");
        h.header_timeout = Some(Duration::from_millis(v));
    }
    ms(
        "http_body_timeout_ms",
        file.http_body_timeout_ms,
        &mut h.body_timeout,
    )?;
    ms(
        "http_idle_timeout_ms",
        file.http_idle_timeout_ms,
        &mut h.idle_timeout,
    )?;
    ms(
        "http2_keepalive_interval_ms",
        file.http2_keepalive_interval_ms,
        &mut h.h2_keepalive_interval,
    )?;
    ms(
        "http2_keepalive_timeout_ms",
        file.http2_keepalive_timeout_ms,
        &mut h.h2_keepalive_timeout,
    )?;
    if let Some(v) = file.http2_max_streams {
        anyhow::ensure!(v > 0, "http2_max_streams must be more than 0");
        h.h2_max_streams = v;
    }
    if let Some(v) = file.http_max_per_ip {
        anyhow::ensure!(v > 0, "http_max_per_ip must be more than 0");
        h.max_per_ip = v;
    }
    if let Some(v) = file.http_fd_reserve {
        h.fd_reserve = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            http = "127.0.0.1:9000"
            agent_listen = "127.0.0.1:9001"
            heartbeat_ms = 1000
            "#,
        )
        .unwrap();
        let o = Overrides {
            http: Some("127.0.0.1:9100".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let c = resolve(file, o).unwrap();
        assert_eq!(c.http.port(), 9100);
        assert_eq!(c.agent_listen.port(), 9001);
        assert_eq!(c.liveness.heartbeat, Duration::from_secs(1));
        assert_eq!(c.liveness.dead_after, Duration::from_secs(10));
    }

    #[test]
    fn http_limits_from_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            http_detect_timeout_ms = 700
            http_header_timeout_ms = 900
            http_max_per_ip = 40
            http_fd_reserve = 100
            "#,
        )
        .unwrap();
        let o = Overrides {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let c = resolve(file, o).unwrap();
        let h = &c.http_limits;
        assert_eq!(h.detect_timeout, Duration::from_millis(700));
        assert_eq!(h.header_timeout, Some(Duration::from_millis(900)));
        assert_eq!(h.max_per_ip, 40);
        assert_eq!(h.fd_reserve, 100);
        assert_eq!(h.body_timeout, HttpConfig::default().body_timeout);
        let zero: FileConfig = toml::from_str("http_idle_timeout_ms = 0").unwrap();
        let o = Overrides {
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(resolve(zero, o).is_err());
    }

    #[test]
    fn unknown_keys_and_half_tls_are_errors() {
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
        let o = Overrides {
            tls_cert: Some("c.pem".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        assert!(resolve(FileConfig::default(), o).is_err());
    }
}
