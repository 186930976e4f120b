//! Counters and histograms, rendered as Prometheus text at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        // Saturate rather than wrap if a decrement ever races ahead.
        let _ignored = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A fixed-bucket histogram (cumulative buckets, as Prometheus wants).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, to stay integral.
    sum_micro: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        for (b, bound) in self.buckets.iter().zip(self.bounds) {
            if v <= *bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        self.sum_micro
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn sum(&self) -> f64 {
        self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(self.bounds) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count());
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {}",
            self.sum(),
            self.count()
        );
    }
}

const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug)]
pub struct Metrics {
    pub agent_connections: Gauge,
    pub visitor_ws_connections: Gauge,
    pub visitor_long_polls: Gauge,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub events_pushed: Counter,
    pub resumes_replay: Counter,
    pub resumes_snapshot: Counter,
    pub dead_peer_cuts: Counter,
    pub slow_consumer_cuts: Counter,
    pub live_resyncs: Counter,
    pub login_failures: Counter,
    pub logins_throttled: Counter,
    pub rejected_frames: Counter,
    pub commit_failures: Counter,
    pub logins_by_ticket: Counter,
    pub password_checks: Counter,
    pub preauth_refused: Counter,
    pub preauth_evicted: Counter,
    pub visitor_limited: Counter,
    pub queries_refused: Counter,
    pub commit_batch: Histogram,
    pub commit_seconds: Histogram,
    pub http: HttpMetrics,
}

/// The HTTP port's connections and every one the server cut, by reason
/// (see `http`): what an operator reads to tell an attack from a bug.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    pub connections: Gauge,
    /// The most connections HTTP may hold (descriptor limit less reserve).
    pub connection_limit: Gauge,
    pub detect_timeouts: Counter,
    pub header_timeouts: Counter,
    pub body_timeouts: Counter,
    pub idle_timeouts: Counter,
    pub per_ip_cuts: Counter,
    pub capacity_cuts: Counter,
    pub refused: Counter,
    pub accept_errors: Counter,
}

impl HttpMetrics {
    fn render(&self, out: &mut String) {
        let gauges: [(&str, &str, &Gauge); 2] = [
            (
                "holdfast_http_connections",
                "Open connections on the HTTP port, upgraded WebSockets included.",
                &self.connections,
            ),
            (
                "holdfast_http_connection_limit",
                "Most HTTP connections held at once: RLIMIT_NOFILE less the reserve.",
                &self.connection_limit,
            ),
        ];
        for (name, help, g) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                g.get()
            );
        }
        let counters: [(&str, &str, &Counter); 8] = [
            (
                "holdfast_http_detect_timeouts_total",
                "HTTP connections closed for not starting TLS or HTTP in time.",
                &self.detect_timeouts,
            ),
            (
                "holdfast_http_header_timeouts_total",
                "HTTP connections closed for request headers (or a first HTTP/2 request) not arriving in time.",
                &self.header_timeouts,
            ),
            (
                "holdfast_http_body_timeouts_total",
                "Requests cut for a body slower than the body timeout.",
                &self.body_timeouts,
            ),
            (
                "holdfast_http_idle_timeouts_total",
                "HTTP connections closed after sitting idle between requests.",
                &self.idle_timeouts,
            ),
            (
                "holdfast_http_per_ip_cuts_total",
                "HTTP connections closed or refused for the per-address cap.",
                &self.per_ip_cuts,
            ),
            (
                "holdfast_http_capacity_cuts_total",
                "Idle new HTTP connections closed to make room under the descriptor cap.",
                &self.capacity_cuts,
            ),
            (
                "holdfast_http_refused_total",
                "HTTP connections refused at the cap with nothing idle to close.",
                &self.refused,
            ),
            (
                "holdfast_http_accept_errors_total",
                "Failed accepts on the HTTP port (EMFILE and the like).",
                &self.accept_errors,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            agent_connections: Gauge::default(),
            visitor_ws_connections: Gauge::default(),
            visitor_long_polls: Gauge::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            events_pushed: Counter::default(),
            resumes_replay: Counter::default(),
            resumes_snapshot: Counter::default(),
            dead_peer_cuts: Counter::default(),
            slow_consumer_cuts: Counter::default(),
            live_resyncs: Counter::default(),
            login_failures: Counter::default(),
            logins_throttled: Counter::default(),
            rejected_frames: Counter::default(),
            commit_failures: Counter::default(),
            logins_by_ticket: Counter::default(),
            password_checks: Counter::default(),
            preauth_refused: Counter::default(),
            preauth_evicted: Counter::default(),
            visitor_limited: Counter::default(),
            queries_refused: Counter::default(),
            commit_batch: Histogram::new(BATCH_BOUNDS),
            commit_seconds: Histogram::new(LATENCY_BOUNDS),
            http: HttpMetrics::default(),
        }
    }
}

impl Metrics {
    #[allow(clippy::cast_precision_loss)]
    pub fn record_commit(&self, ops: usize, latency: Duration) {
        self.commit_batch.observe(ops as f64);
        self.commit_seconds.observe(latency.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            "holdfast_agent_connections",
            "Live agent TCP sessions.",
            "gauge",
            self.agent_connections.get(),
        );
        gauge(
            "holdfast_visitor_ws_connections",
            "Live visitor WebSockets.",
            "gauge",
            self.visitor_ws_connections.get(),
        );
        gauge(
            "holdfast_visitor_long_polls",
            "Long-polls being held open.",
            "gauge",
            self.visitor_long_polls.get(),
        );
        let counters: [(&str, &str, &Counter); 18] = [
            (
                "holdfast_messages_in_total",
                "Chat messages committed.",
                &self.messages_in,
            ),
            (
                "holdfast_messages_out_total",
                "Events sent to clients.",
                &self.messages_out,
            ),
            (
                "holdfast_events_pushed_total",
                "Events handed to live connections.",
                &self.events_pushed,
            ),
            (
                "holdfast_resumes_replay_total",
                "Resumes served by replay.",
                &self.resumes_replay,
            ),
            (
                "holdfast_resumes_snapshot_total",
                "Resumes served by snapshot.",
                &self.resumes_snapshot,
            ),
            (
                "holdfast_dead_peer_cuts_total",
                "Connections cut after heartbeat silence.",
                &self.dead_peer_cuts,
            ),
            (
                "holdfast_slow_consumer_cuts_total",
                "Connections cut for not reading: a full outbound queue, or a write that stalled.",
                &self.slow_consumer_cuts,
            ),
            (
                "holdfast_live_resyncs_total",
                "Agents whose presence updates overflowed and got the whole list again.",
                &self.live_resyncs,
            ),
            (
                "holdfast_login_failures_total",
                "Failed agent logins.",
                &self.login_failures,
            ),
            (
                "holdfast_logins_throttled_total",
                "Agent logins refused by throttling.",
                &self.logins_throttled,
            ),
            (
                "holdfast_rejected_frames_total",
                "Frames or messages rejected as malformed, oversize or forged.",
                &self.rejected_frames,
            ),
            (
                "holdfast_commit_failures_total",
                "Group commits that failed (nothing acked).",
                &self.commit_failures,
            ),
            (
                "holdfast_logins_by_ticket_total",
                "Agent logins by resume ticket (no password hash).",
                &self.logins_by_ticket,
            ),
            (
                "holdfast_password_checks_total",
                "Argon2 password verifications run.",
                &self.password_checks,
            ),
            (
                "holdfast_preauth_refused_total",
                "Agent connections refused before login (pre-auth pool full, or the address's share).",
                &self.preauth_refused,
            ),
            (
                "holdfast_preauth_evicted_total",
                "Connections not logged in yet, closed to make room for a less crowded address.",
                &self.preauth_evicted,
            ),
            (
                "holdfast_visitor_limited_total",
                "Visitor actions refused by a per-address or per-visitor limit.",
                &self.visitor_limited,
            ),
            (
                "holdfast_queries_refused_total",
                "Agent queries refused while another was in flight.",
                &self.queries_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.get()
            );
        }
        self.commit_batch.render(
            &mut out,
            "holdfast_commit_batch_ops",
            "Ops per group commit.",
        );
        self.commit_seconds.render(
            &mut out,
            "holdfast_commit_seconds",
            "Group commit latency including fsync.",
        );
        self.http.render(&mut out);
        out
    }
}

/// A warning that a flood would otherwise write thousands of times a
/// second (each refusal is counted in a metric anyway): logged at most once
/// per interval, saying how many were left out since.
#[derive(Debug)]
pub struct WarnEvery {
    every: std::time::Duration,
    last: std::sync::Mutex<Option<std::time::Instant>>,
    skipped: std::sync::atomic::AtomicU64,
}

impl WarnEvery {
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: std::sync::Mutex::new(None),
            skipped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(left out since the last one)` when this one should be logged.
    pub fn due(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.skipped.swap(0, Ordering::Relaxed))
    }
}
