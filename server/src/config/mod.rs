//! Server settings.
//!
//! - this file: [`ServerConfig`], what the running server reads, with its
//!   defaults;
//! - [`settings`]: [`Settings`], every key an admin may set, read the same
//!   way from a flag, a `HOLDFAST_*` environment variable and the TOML file,
//!   and [`resolve`], which checks them and lays them over the defaults.

mod settings;

pub use settings::{KEYS, Settings, load_file, resolve};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::visitor::Limits;

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
    /// A PostgreSQL database (from a `postgres://` URL; its `Debug` shows
    /// no password): the store and the server key live there, shared by
    /// every node. `None`: SQLite in `data_dir`.
    pub database: Option<crate::store::PgTarget>,
    /// Attachment limits (the same for every site for now).
    pub attach: crate::attach::Policy,
    pub http: SocketAddr,
    pub agent_listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub demo: bool,
    /// Create or upgrade a PostgreSQL schema on start; without it, a
    /// schema that is behind stops the start (SQLite always migrates).
    pub migrate: bool,
    /// Load balancers whose agent connections start with a PROXY protocol
    /// header (v1 or v2): the address it carries is then the client's, for
    /// every per-address limit and log. Connections from anywhere else
    /// are taken as they are, header or not.
    pub agent_proxy_protocol_from: Vec<Cidr>,
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
    /// The wake-up bus between nodes (`crate::bus`): `Local` starts none;
    /// a Redis URL shares delivery and presence with the other nodes.
    pub bus: crate::bus::BusConfig,
    /// This node's name on the bus.
    pub node_id: String,
    pub http_limits: HttpConfig,
}

pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("io", "Holdfast", "holdfast-server")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("holdfast-data"))
}

impl ServerConfig {
    /// The most one message of a list (the visitors, a snapshot's parts)
    /// may hold: half the smaller of our frame limit and the client's
    /// default, which leaves room for the envelope, the sealing and a
    /// client built with the default.
    pub fn live_budget(&self) -> usize {
        self.max_frame.min(holdfast_protocol::DEFAULT_MAX_FRAME) / 2
    }

    /// Where the store lives.
    pub fn store(&self) -> Result<crate::store::Database, crate::store::StoreError> {
        Ok(match &self.database {
            Some(t) => crate::store::Database::Postgres(t.clone()),
            None => crate::store::Database::Sqlite(self.data_dir.clone()),
        })
    }

    pub fn with_defaults(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            database: None,
            attach: crate::attach::Policy::default(),
            http: SocketAddr::from(([0, 0, 0, 0], 8080)),
            agent_listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            tls: None,
            demo: false,
            migrate: false,
            agent_proxy_protocol_from: Vec::new(),
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
            bus: crate::bus::BusConfig::Local,
            node_id: crate::bus::default_node_id(),
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
