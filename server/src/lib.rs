//! The Holdfast server: one binary, embedded SQLite (or a PostgreSQL that
//! several nodes share), two gateways.
//!
//! - [`config`]: settings from TOML, `HOLDFAST_*` env and flags.
//! - [`store`]: SQLite schema, the group-commit writer, the chat rules it
//!   applies, read queries. It does not know the hub: it declares what it
//!   needs ([`store::live`]) and the hub implements that.
//! - [`hub`]: in-memory presence, visitors, and the live-connection registry,
//!   fed the committed [`store::effect::Effect`]s;
//!   [`pushq`]: the small bounded queue from the hub to each connection.
//! - [`agent_gw`]: the agent TCP gateway (protocol crate, sealed frames).
//! - [`http`]: the HTTP port's accept loop, with a timer on every phase of
//!   a connection and caps on how many it may hold; its routes
//!   ([`http::router`]: `/healthz`, and `/metrics` on the admin listener)
//!   and the embedded widget and demo files ([`http::assets`]).
//! - [`visitor`]: what the visitor routes do: the session both transports
//!   share, the WebSocket, and the long-poll fallback.
//! - [`auth`], [`token`], [`throttle`], [`identity`]: passwords, visitor
//!   tokens and identify hashes, rate limits, the server's static key.
//! - [`login`], [`ticket`]: who may log in (the pre-auth pool, the login
//!   throttle, resume tickets that spare reconnects a password hash).
//! - [`admin`]: site and agent management used by the CLI and `--demo`.
//! - [`sweeps`]: the background tasks: hand back the chats of agents
//!   offline past the grace period, and act on CLI changes to agents
//!   (disable, password) within a second.
//! - [`proxy_protocol`]: the PROXY protocol header a load balancer puts
//!   in front of an agent connection, naming the agent's own address.
//! - [`limits`]: per-visitor and per-address rate limits (keyed GCRA).
//! - [`hours`]: business hours per site, in the site's time zone; a
//!   closed site tells its visitors no one is there to answer.
//! - [`queue`]: each waiting visitor's place in the queue and its
//!   estimated wait, read from the store every second.
//! - [`canned`]: canned replies, the site's and each agent's, with the
//!   CLI's CSV import and export; [`lists`] brings the CLI's changes to
//!   canned replies and site tags to signed-in agents within a second.
//! - [`invite`]: proactive invitations by the site's rules, tried every
//!   second against this node's visitors.
//! - [`mem`]: hands freed memory back to the OS after a slow consumer's
//!   cut.
//! - [`metrics`]: Prometheus counters, served on the admin listener.
//! - [`listen`]: the listening sockets, with a backlog for a reconnect
//!   storm.
//! - [`bus`]: wake-ups and presence between nodes (Redis pub/sub when
//!   there are several); [`hub::remote`] follows it.

pub mod admin;
pub mod agent_gw;
pub mod attach;
pub mod auth;
pub mod bus;
pub mod canned;
pub mod config;
pub mod groups;
pub mod hours;
pub mod http;
pub mod hub;
pub mod identity;
pub mod invite;
pub mod limits;
pub mod listen;
pub mod lists;
pub mod login;
pub mod mem;
pub mod metrics;
pub mod proxy_protocol;
pub mod pushq;
pub mod queue;
pub mod store;
pub mod sweeps;
pub mod throttle;
pub mod ticket;
pub mod token;
pub mod typing;
pub mod visitor;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use holdfast_protocol::handshake::{Fingerprint, ServerIdentity};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::ServerConfig;

/// Everything a connection task needs, behind one `Arc`.
#[derive(Debug)]
pub struct Ctx {
    pub cfg: ServerConfig,
    pub identity: Arc<ServerIdentity>,
    pub tokens: token::TokenKey,
    pub tickets: ticket::TicketKey,
    /// Agent connections that have not logged in yet.
    pub preauth: Arc<login::PreAuthPool>,
    pub writer: store::WriterHandle,
    pub reads: store::ReadPool,
    pub hub: Arc<hub::Hub>,
    pub metrics: Arc<metrics::Metrics>,
    /// Failed logins per username at a source address.
    pub throttle: throttle::LoginThrottle,
    /// Failed logins per source address: looser, since a whole office may
    /// share one NAT address.
    pub ip_throttle: throttle::LoginThrottle,
    pub agent_ip_limiter: throttle::ConnLimiter,
    pub visitor_ip_limiter: throttle::ConnLimiter,
    /// Per-visitor and per-address limits on what visitors do.
    pub visitor_limits: limits::VisitorLimits,
    pub lp_buckets: std::sync::Mutex<
        std::collections::HashMap<String, Arc<tokio::sync::Mutex<throttle::SendGate>>>,
    >,
    pub shutdown: CancellationToken,
    /// Uploads and downloads of files (see [`attach`]).
    pub attach: Arc<attach::Attachments>,
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    pub http_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    /// `/metrics` and `/healthz` for operators; `None` when turned off.
    pub admin_addr: Option<SocketAddr>,
    pub fingerprint: Fingerprint,
    pub ctx: Arc<Ctx>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Stop accepting, tell every connection the server is going away, and
    /// wait for everything already submitted to be committed.
    pub async fn shutdown(mut self) {
        self.ctx.shutdown.cancel();
        self.ctx.hub.kick_all();
        for t in self.tasks.drain(..) {
            let _ignored = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Let connection tasks deliver their goodbyes before the runtime goes.
        let m = &self.ctx.metrics;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while (m.agent_connections.get() > 0 || m.visitor_ws_connections.get() > 0)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = self.ctx.writer.barrier().await {
            tracing::error!("final flush failed: {e}");
        }
        // Give connection tasks a moment to notice and drop their handles.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(self.writer_thread.take());
        tracing::info!("server stopped");
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.ctx.shutdown.clone()
    }
}

/// Open the data dir, bind both listeners and start serving.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    let database = cfg.store().context("the database setting")?;
    // On SQLite the key is a file read first, as always; on PostgreSQL it
    // is a row of the shared database (see identity.rs).
    let file_identity = match &database {
        store::Database::Sqlite(dir) => {
            Some(identity::load_or_create(dir).context("loading the server key")?)
        }
        store::Database::Postgres(_) => None,
    };
    let demo = cfg.demo;
    let migrate = cfg.migrate;
    let opened = {
        let database = database.clone();
        // Opening and migrating block (PostgreSQL's client runs its own
        // runtime, which must not run on an async worker).
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            // A shared schema changes only when asked: a node of an older
            // build must not be upgraded under its neighbours by a newer one
            // that merely started.
            let conn = if migrate {
                database.open()
            } else {
                database.open_current()
            };
            let conn = conn.with_context(|| match &database {
                store::Database::Sqlite(dir) => {
                    format!("opening the database in {}", dir.display())
                }
                store::Database::Postgres(t) => format!("opening the database {t:?}"),
            })?;
            let identity = match file_identity {
                Some(id) => id,
                None => identity::load_or_create_in(conn.db()).context("loading the server key")?,
            };
            let created = if demo {
                Some(admin::ensure_demo(conn.db()).context("creating the demo site")?)
            } else {
                None
            };
            let conn = store::writer::WriteConn::new(conn, &database)?;
            Ok((identity, conn, created))
        })
        .await
        .context("opening the database")??
    };
    let (identity, conn, created) = opened;
    if let Some(created) = created {
        admin::print_demo(&cfg, &identity.fingerprint(), created);
    }
    let agent_listener = listen::bind(cfg.agent_listen)
        .and_then(TcpListener::from_std)
        .with_context(|| format!("cannot bind the agent port {}", cfg.agent_listen))?;
    let http_listener = listen::bind(cfg.http)
        .with_context(|| format!("cannot bind the HTTP port {}", cfg.http))?;
    let admin_listener = match cfg.admin_listen {
        Some(a) => Some(listen::bind(a).with_context(|| {
            format!("cannot bind the admin port {a} (set --admin-listen, or \"off\")")
        })?),
        None => None,
    };
    let agent_addr = agent_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let admin_addr = admin_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;

    let metrics = Arc::new(metrics::Metrics::default());
    let reads = store::ReadPool::for_database(&database);
    let hub = hub::Hub::new(
        hub::HubConfig {
            // Never more than a frame of ours or the client's holds.
            list_budget: cfg.hub.list_budget.min(cfg.live_budget()),
            ..cfg.hub.clone()
        },
        metrics.clone(),
    );
    let (writer, writer_thread) =
        store::writer::spawn_on(conn, cfg.writer.clone(), hub.clone(), metrics.clone());
    let tokens = token::TokenKey::derive(&identity.secret_bytes());
    let tickets = ticket::TicketKey::derive(&identity.secret_bytes());
    // An unknown username waits as long as a password check takes here.
    tokio::task::spawn_blocking(auth::measure_verify_time);
    let fingerprint = identity.fingerprint();
    // Every node of a PostgreSQL setup serves every attachment, so they
    // live in the database there; one SQLite node keeps files.
    let attach = Arc::new(match &database {
        store::Database::Sqlite(_) => attach::Attachments::open(&cfg.data_dir, cfg.attach.clone())
            .context("opening the attachments directory")?,
        store::Database::Postgres(_) => attach::Attachments::on_postgres(
            reads.clone(),
            &identity.secret_bytes(),
            cfg.attach.clone(),
        ),
    });
    let ctx = Arc::new(Ctx {
        attach,
        throttle: throttle::LoginThrottle::new(cfg.throttle.clone()),
        ip_throttle: throttle::LoginThrottle::new(throttle::ThrottleConfig {
            free_failures: cfg.throttle.free_failures.saturating_mul(6),
            ..cfg.throttle.clone()
        }),
        agent_ip_limiter: throttle::ConnLimiter::new(cfg.agent_max_per_ip),
        preauth: login::PreAuthPool::new(cfg.preauth.clone()),
        visitor_limits: limits::VisitorLimits::new(&cfg.visitor.rates),
        tickets,
        visitor_ip_limiter: throttle::ConnLimiter::new(cfg.visitor.max_ws_per_ip),
        lp_buckets: std::sync::Mutex::new(std::collections::HashMap::new()),
        cfg,
        identity: Arc::new(identity),
        tokens,
        writer,
        reads,
        hub,
        metrics,
        shutdown: CancellationToken::new(),
    });
    let mut tasks = Vec::new();
    // Other nodes exist only with a shared bus; with `local` no bus is
    // started at all, so a single node publishes nothing and never polls
    // the store for events another node wrote.
    if let bus::BusConfig::Redis(_) = &ctx.cfg.bus {
        if let store::Database::Sqlite(_) = &database {
            tracing::warn!(
                "bus: a Redis bus with SQLite: each node has its own database, so nodes \
                 share presence but not conversations; use --database postgres://..."
            );
        }
        let bus = bus::start(&ctx.cfg.bus, &ctx.cfg.node_id).context("starting the bus")?;
        ctx.hub.attach_bus(bus.clone());
        if let store::Database::Postgres(target) = &database {
            hub::fallback::spawn_writer(
                ctx.hub.clone(),
                target.clone(),
                ctx.cfg.node_id.clone(),
                ctx.shutdown.clone(),
            )
            .context("starting the presence copy's writer")?;
        }
        if let store::Database::Postgres(_) = &database {
            hub::remote::seed_from_copy(&ctx, Duration::from_secs(2)).await;
        }
        tasks.push(tokio::spawn(hub::remote::follow(ctx.clone(), bus)));
    }
    tasks.push(tokio::spawn(agent_gw::serve(agent_listener, ctx.clone())));
    tasks.push(tokio::spawn(http::router::serve(
        http_listener,
        ctx.clone(),
    )));
    if let Some(l) = admin_listener {
        tasks.push(tokio::spawn(http::router::serve_admin(l, ctx.clone())));
    }
    tasks.push(tokio::spawn(sweeps::owner_sweep(ctx.clone())));
    tasks.push(tokio::spawn(sweeps::presence(ctx.clone())));
    tasks.push(tokio::spawn(sweeps::agent_changes(ctx.clone())));
    tasks.push(tokio::spawn(sweeps::forget_limits(ctx.clone())));
    tasks.push(tokio::spawn(attach::sweep(ctx.clone())));
    tasks.push(tokio::spawn(queue::watch(ctx.clone())));
    tasks.push(tokio::spawn(invite::watch(ctx.clone())));
    tasks.push(tokio::spawn(hours::watch(ctx.clone())));
    tasks.push(tokio::spawn(groups::watch(ctx.clone())));
    tasks.push(tokio::spawn(lists::watch(ctx.clone())));
    let sweeper = ctx.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = sweeper.shutdown.cancelled() => break,
                _ = tick.tick() => sweeper.hub.sweep(sweeper.cfg.visitor.poll_timeout + Duration::from_secs(5)),
            }
        }
    }));
    tracing::info!(%http_addr, %agent_addr, ?admin_addr, %fingerprint, "holdfast server listening");
    Ok(RunningServer {
        http_addr,
        agent_addr,
        admin_addr,
        fingerprint,
        ctx,
        tasks,
        writer_thread: Some(writer_thread),
    })
}
