//! The HTTP port's own accept loop, so that no phase of any connection can
//! hold a file descriptor without a timer, and HTTP can never take the
//! descriptors the agent port, the database and the server need.
//!
//! Each connection goes through, with a deadline on every step:
//! 1. TLS handshake (when configured) and detection of HTTP/1 or HTTP/2
//!    from the first bytes: `detect_timeout`;
//! 2. request headers (hyper's header timer, which in HTTP/1 also runs
//!    while a kept-alive connection waits for its next request), and the
//!    first request of an HTTP/2 connection: `header_timeout`;
//! 3. each request body, start to end: `body_timeout`;
//! 4. no request in flight: `idle_timeout`; HTTP/2 also pings.
//!
//! A WebSocket leaves this module's timers when it is upgraded: from then on
//! its own heartbeat and dead-peer cut apply (a hidden tab may be silent for
//! over a minute). A long-poll is a request in flight, so it may be held.
//!
//! [`conns`] caps connections per address and in total, cutting sockets
//! that never got an answer before it refuses a new one.
//!
//! What is served is decided apart from how: [`router`] holds the routes
//! and their layers, [`assets`] the embedded files; the visitor handlers
//! are in [`crate::visitor`].

pub mod assets;
mod body;
mod conns;
mod io;
pub mod router;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Ctx;
use crate::config::HttpConfig;
use crate::metrics::Metrics;
use conns::{Admitted, Conns, Eviction, Refusal, Slot};
use io::{HttpIo, Io, Proto};

/// How long connections get to finish on shutdown, as before.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server closed a connection (or refused one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Detect,
    Header,
    Body,
    Idle,
    PerIp,
    Capacity,
    Refused,
}

impl Reason {
    fn what(self) -> &'static str {
        match self {
            Self::Detect => "sent no HTTP request start in time",
            Self::Header => "sent no complete request headers in time",
            Self::Body => "sent its request body too slowly",
            Self::Idle => "sat idle past the keep-alive timeout",
            Self::PerIp => "over the per-address connection cap",
            Self::Capacity => "unanswered, closed to make room under the descriptor cap",
            Self::Refused => "refused: the descriptor cap is reached and every connection is busy",
        }
    }
}

/// Counts every cut and logs it at debug. Cuts that mean pressure (caps,
/// slow bodies) also warn, at most every ten seconds per reason, so a flood
/// of 20,000 sockets is visible without writing 20,000 lines. Timer cuts do
/// not warn: browsers leave idle and unused (preconnected) sockets behind
/// all day, and closing them is routine.
#[derive(Debug)]
pub(crate) struct CutLog {
    metrics: Arc<Metrics>,
    last_warn: Mutex<[Option<Instant>; 7]>,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl CutLog {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            last_warn: Mutex::new([None; 7]),
        }
    }

    pub(crate) fn cut(&self, reason: Reason, peer: SocketAddr) {
        let m = &self.metrics.http;
        let (counter, slot) = match reason {
            Reason::Detect => (&m.detect_timeouts, 0),
            Reason::Header => (&m.header_timeouts, 1),
            Reason::Body => (&m.body_timeouts, 2),
            Reason::Idle => (&m.idle_timeouts, 3),
            Reason::PerIp => (&m.per_ip_cuts, 4),
            Reason::Capacity => (&m.capacity_cuts, 5),
            Reason::Refused => (&m.refused, 6),
        };
        counter.inc();
        let pressure = matches!(
            reason,
            Reason::Body | Reason::PerIp | Reason::Capacity | Reason::Refused
        );
        if !pressure {
            tracing::debug!(%peer, "HTTP connection {}", reason.what());
            return;
        }
        let now = Instant::now();
        let due = {
            let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
            let due = last[slot].is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
            if due {
                last[slot] = Some(now);
            }
            due
        };
        if due {
            tracing::warn!(
                %peer,
                total = counter.get(),
                open = m.connections.get(),
                "HTTP connection {} (further ones logged at debug for {WARN_EVERY:?})",
                reason.what()
            );
        } else {
            tracing::debug!(%peer, "HTTP connection {}", reason.what());
        }
    }
}

/// What every connection task shares.
struct Shared {
    ctx: Arc<Ctx>,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    limits: HttpConfig,
    header_timeout: Duration,
    log: Arc<CutLog>,
}

/// Serve `app` on `listener` (HTTPS when `ctx.cfg.tls` is set) until
/// `ctx.shutdown`.
pub async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>, app: Router) {
    let tls = match &ctx.cfg.tls {
        None => None,
        Some(files) => {
            match axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
            {
                Ok(c) => Some(tokio_rustls::TlsAcceptor::from(c.get_inner())),
                Err(e) => {
                    tracing::error!(
                        "cannot load TLS certificate {} / key {}: {e}",
                        files.cert.display(),
                        files.key.display()
                    );
                    ctx.shutdown.cancel();
                    return;
                }
            }
        }
    };
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the HTTP listener: {e}");
            return;
        }
    };
    let limits = ctx.cfg.http_limits.clone();
    let header_timeout = limits
        .header_timeout
        .unwrap_or(ctx.cfg.visitor.hello_timeout);
    let cap = connection_cap(limits.fd_reserve);
    ctx.metrics
        .http
        .connection_limit
        .set(i64::try_from(cap).unwrap_or(i64::MAX));
    let conns = Conns::new(cap, limits.max_per_ip, ctx.metrics.clone());

    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_streams);
    let shared = Arc::new(Shared {
        log: Arc::new(CutLog::new(ctx.metrics.clone())),
        ctx: ctx.clone(),
        app,
        tls,
        h1,
        h2,
        limits,
        header_timeout,
    });

    let trusted = ctx.cfg.visitor.trusted_proxies.clone();
    let tasks = TaskTracker::new();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // EMFILE and friends, which the cap should make rare: back
                // off instead of spinning on a listener that stays readable.
                ctx.metrics.http.accept_errors.inc();
                tracing::warn!("http accept failed: {e}; retrying in {backoff:?}");
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        // Behind a trusted reverse proxy every visitor arrives from the
        // proxy's address; the per-address limits then apply to the
        // forwarded address instead (see `visitor::session::client_ip`).
        let proxied = trusted.iter().any(|c| c.contains(peer.ip()));
        match conns.admit(peer.ip(), !proxied) {
            Ok(Admitted {
                slot,
                cut,
                eviction,
            }) => {
                // Small requests and WebSocket frames should not wait for
                // Nagle.
                let _ignored = stream.set_nodelay(true);
                tasks.spawn(connection(shared.clone(), stream, peer, slot, cut));
                match eviction {
                    Eviction::None => {}
                    // Let the cut connections close (and free their
                    // descriptors) before taking more.
                    Eviction::PerIp => {
                        shared.log.cut(Reason::PerIp, peer);
                        tokio::task::yield_now().await;
                    }
                    Eviction::Capacity => {
                        shared.log.cut(Reason::Capacity, peer);
                        tokio::task::yield_now().await;
                    }
                }
            }
            Err(Refusal::PerIp) => shared.log.cut(Reason::PerIp, peer),
            Err(Refusal::Full) => shared.log.cut(Reason::Refused, peer),
        }
    }
    tasks.close();
    // Connections saw the same token and are finishing their requests.
    if timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::debug!("some HTTP connections were still open at shutdown");
    }
}

/// How many connections HTTP may hold: the descriptor limit less the
/// reserve. When the limit is too low for that, half of it, with a warning.
fn connection_cap(reserve: u64) -> usize {
    let limit = descriptor_limit();
    let cap = if limit > reserve.saturating_mul(2) {
        limit - reserve
    } else {
        let half = limit / 2;
        tracing::warn!(
            "the file descriptor limit ({limit}) is low for a reserve of {reserve}; \
             HTTP gets {half} connections. Raise it (LimitNOFILE=, ulimit -n)."
        );
        half
    };
    tracing::info!(limit, reserve, cap, "HTTP connection cap");
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The process's descriptor limit, after raising the soft limit to the hard
/// one: a soft limit of 1024 is a default, not a choice, and Go, nginx and
/// others raise it the same way.
fn descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // The kernel's default `fs.nr_open`: a soft limit above it is refused,
    // and "unlimited" is reported as None.
    const CEILING: u64 = 1 << 20;
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(CEILING).min(CEILING);
    let max = lim.maximum.unwrap_or(CEILING).min(CEILING);
    if max > current {
        let raised = rustix::process::Rlimit {
            current: Some(max),
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!("raised the file descriptor limit from {current} to {max}");
                return max;
            }
            Err(e) => tracing::debug!("could not raise the file descriptor limit: {e}"),
        }
    }
    current
}

/// One connection, from accept to close.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    cut: CancellationToken,
) {
    let shutdown = shared.ctx.shutdown.clone();
    let opened = tokio::select! {
        r = timeout(shared.limits.detect_timeout, open(&shared, stream)) => r,
        () = cut.cancelled() => return,
        () = shutdown.cancelled() => return,
    };
    let (proto, prefix, io) = match opened {
        Ok(Ok(Some(o))) => o,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "HTTP connection failed before its first request: {e}");
            return;
        }
        Err(_) => {
            shared.log.cut(Reason::Detect, peer);
            return;
        }
    };
    let io = TokioIo::new(HttpIo::new(prefix, io, slot.clone()));
    let activity = Arc::new(Activity::new());
    let service = ConnService {
        app: shared.app.clone(),
        peer,
        activity: activity.clone(),
        slot,
        body_timeout: shared.limits.body_timeout,
        // One HTTP/1 request's unread body would sit in front of the next
        // request, so the connection goes; HTTP/2 resets only the stream.
        cut_on_body_timeout: (proto == Proto::Http1).then(|| cut.clone()),
        log: shared.log.clone(),
    };
    let watch = Watch {
        activity: &activity,
        cut: &cut,
        shutdown: &shutdown,
        first_request: shared.header_timeout,
        idle: shared.limits.idle_timeout,
        log: &shared.log,
        peer,
        proto,
    };
    match proto {
        Proto::Http1 => {
            let conn = shared.h1.serve_connection(io, service).with_upgrades();
            watch.drive(conn).await;
        }
        Proto::Http2 => {
            let conn = shared.h2.serve_connection(io, service);
            watch.drive(conn).await;
        }
    }
}

/// TLS handshake if configured, then read far enough to know the protocol.
async fn open(
    shared: &Shared,
    stream: TcpStream,
) -> std::io::Result<Option<(Proto, Vec<u8>, Box<dyn Io>)>> {
    let mut io: Box<dyn Io> = match &shared.tls {
        Some(acceptor) => Box::new(acceptor.accept(stream).await?),
        None => Box::new(stream),
    };
    Ok(io::sniff(&mut *io)
        .await?
        .map(|(p, prefix)| (p, prefix, io)))
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    answered: AtomicBool,
    last_end: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            last_end: Mutex::new(Instant::now()),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// When the connection will have been idle too long, or `None` while a
    /// request is in flight.
    fn idle_deadline(&self, first_request: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = *self.last_end.lock().unwrap_or_else(|p| p.into_inner());
        let limit = if self.answered.load(Ordering::Acquire) {
            idle
        } else {
            first_request
        };
        Some(last + limit)
    }
}

/// A request in flight; its end restarts the idle timer.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.answered.store(true, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The axum router as one connection's hyper service.
#[derive(Clone)]
struct ConnService {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    slot: Arc<Slot>,
    body_timeout: Duration,
    cut_on_body_timeout: Option<CancellationToken>,
    log: Arc<CutLog>,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let busy = self.activity.begin();
        // What `into_make_service_with_connect_info` did: handlers extract it.
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let (timeout, cut, peer, log) = (
            self.body_timeout,
            self.cut_on_body_timeout.clone(),
            self.peer,
            self.log.clone(),
        );
        let req =
            req.map(|b| axum::body::Body::new(body::DeadlineBody::new(b, timeout, cut, peer, log)));
        let mut app = self.app.clone();
        let slot = self.slot.clone();
        Box::pin(async move {
            use tower::Service as _;
            std::future::poll_fn(|cx| {
                tower::Service::<Request<axum::body::Body>>::poll_ready(&mut app, cx)
            })
            .await?;
            let resp = app.call(req).await;
            slot.answered();
            drop(busy);
            resp
        })
    }
}

/// A hyper connection that can be asked to finish its requests and close.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn graceful(self: Pin<&mut Self>);
}

type H1Conn = http1::UpgradeableConnection<TokioIo<HttpIo>, ConnService>;
type H2Conn = http2::Connection<TokioIo<HttpIo>, ConnService, TokioExecutor>;

impl Graceful for H1Conn {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl Graceful for H2Conn {
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The timers around a running hyper connection.
struct Watch<'a> {
    activity: &'a Activity,
    cut: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    /// No request yet (HTTP/2 after its preface, HTTP/1 besides hyper's own
    /// header timer).
    first_request: Duration,
    idle: Duration,
    log: &'a CutLog,
    peer: SocketAddr,
    proto: Proto,
}

impl Watch<'_> {
    async fn drive<C: Graceful>(self, conn: C) {
        let mut conn = std::pin::pin!(conn);
        // Once set, the connection was asked to close and is cut outright
        // if it has not by then (a peer that does not read its response).
        let mut closing_by: Option<Instant> = None;
        let mut check = Instant::now() + self.first_request;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        self.ended_with(&e);
                    }
                    return;
                }
                () = self.cut.cancelled() => return,
                () = self.shutdown.cancelled(), if closing_by.is_none() => {
                    conn.as_mut().graceful();
                    closing_by = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                () = sleep_until(closing_by.unwrap_or(check)) => {
                    if closing_by.is_some() {
                        return;
                    }
                    let now = Instant::now();
                    match self.activity.idle_deadline(self.first_request, self.idle) {
                        // Never a request: nothing to finish, and a silent
                        // HTTP/2 peer would sit through a graceful close
                        // (hyper waits out its handshake, h2 its GOAWAY
                        // ping), so it goes now.
                        Some(d) if d <= now && !self.activity.answered.load(Ordering::Acquire) => {
                            self.log.cut(Reason::Header, self.peer);
                            return;
                        }
                        // Idle after answering: say goodbye (HTTP/2 GOAWAY)
                        // and cut it if the peer does not let it go.
                        Some(d) if d <= now => {
                            self.log.cut(Reason::Idle, self.peer);
                            conn.as_mut().graceful();
                            closing_by = Some(now + self.first_request);
                        }
                        Some(d) => check = d,
                        // A request in flight (a long-poll may take 25 s):
                        // look again later.
                        None => check = now + self.idle.min(self.first_request),
                    }
                }
            }
        }
    }

    fn ended_with(&self, e: &hyper::Error) {
        if e.is_timeout() {
            // hyper's own timers: HTTP/1 headers, or an HTTP/2 ping that
            // went unanswered.
            let reason = match self.proto {
                Proto::Http1 => Reason::Header,
                Proto::Http2 => Reason::Idle,
            };
            self.log.cut(reason, self.peer);
        } else {
            tracing::debug!(peer = %self.peer, "HTTP connection ended: {e}");
        }
    }
}
