//! Counters, gauges and histograms, served at `/metrics` on the admin
//! listener. The types, the registry and the text format (OpenMetrics,
//! which Prometheus scrapes) are prometheus-client's; this file only names
//! what Holdfast measures. Counters gain their `_total` suffix from the
//! encoder, so the series names are the ones dashboards already use.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Each field is a handle onto a series in `registry` (the handles share
/// their atomics with the registered copies).
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
    pub invitations_fired: Counter,
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
    pub bus: BusMetrics,
    registry: Registry,
}

/// The bus between nodes and what the live side does with it (issue 15).
/// All stay 0 on a single node, which runs no bus.
#[derive(Debug, Default)]
pub struct BusMetrics {
    /// 1 while the bus is delivering, 0 while it is down (or absent).
    pub up: Gauge,
    pub wakes_published: Counter,
    pub wakes_received: Counter,
    pub presence_sent: Counter,
    pub presence_received: Counter,
    /// "Re-read this record" notes: a stored record other nodes show from
    /// memory (a team row, a visitor's) changed.
    pub changes_sent: Counter,
    pub changes_received: Counter,
    /// Times wake-ups may have been lost (a resubscribe, a lagging
    /// follower, the bus going down): every live connection reads the log.
    pub gaps: Counter,
    /// Safety-net reads of the log heads of this node's live recipients.
    pub polls: Counter,
    /// Store queries those polls made (one per poll up to a few thousand
    /// recipients).
    pub poll_queries: Counter,
    /// Recipients a poll found behind and woke.
    pub poll_woken: Counter,
    /// Store reads connections made to catch up with events committed on
    /// another node (a wake, a gap or a poll woke them).
    pub catch_up_reads: Counter,
}

/// The HTTP port's connection handling (server/src/http).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    pub connections: Gauge,
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

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
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
            invitations_fired: Counter::default(),
            commit_failures: Counter::default(),
            logins_by_ticket: Counter::default(),
            password_checks: Counter::default(),
            preauth_refused: Counter::default(),
            preauth_evicted: Counter::default(),
            visitor_limited: Counter::default(),
            queries_refused: Counter::default(),
            commit_batch: Histogram::new(BATCH_BOUNDS.iter().copied()),
            commit_seconds: Histogram::new(LATENCY_BOUNDS.iter().copied()),
            http: HttpMetrics::default(),
            bus: BusMetrics::default(),
            registry: Registry::with_prefix("holdfast"),
        };
        m.register();
        m
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "agent_connections",
            "Live agent TCP sessions",
            self.agent_connections.clone(),
        );
        r.register(
            "visitor_ws_connections",
            "Live visitor WebSockets",
            self.visitor_ws_connections.clone(),
        );
        r.register(
            "visitor_long_polls",
            "Long-polls being held open",
            self.visitor_long_polls.clone(),
        );
        r.register(
            "messages_in",
            "Chat messages committed",
            self.messages_in.clone(),
        );
        r.register(
            "messages_out",
            "Events sent to clients",
            self.messages_out.clone(),
        );
        r.register(
            "events_pushed",
            "Events handed to live connections",
            self.events_pushed.clone(),
        );
        r.register(
            "resumes_replay",
            "Resumes served by replay",
            self.resumes_replay.clone(),
        );
        r.register(
            "resumes_snapshot",
            "Resumes served by snapshot",
            self.resumes_snapshot.clone(),
        );
        r.register(
            "dead_peer_cuts",
            "Connections cut after heartbeat silence",
            self.dead_peer_cuts.clone(),
        );
        r.register(
            "slow_consumer_cuts",
            "Connections cut for not reading: a full outbound queue, or a write that stalled",
            self.slow_consumer_cuts.clone(),
        );
        r.register(
            "live_resyncs",
            "Agents whose presence updates overflowed and got the whole list again",
            self.live_resyncs.clone(),
        );
        r.register(
            "login_failures",
            "Failed agent logins",
            self.login_failures.clone(),
        );
        r.register(
            "logins_throttled",
            "Agent logins refused by throttling",
            self.logins_throttled.clone(),
        );
        r.register(
            "rejected_frames",
            "Frames or messages rejected as malformed, oversize or forged",
            self.rejected_frames.clone(),
        );
        r.register(
            "invitations_fired",
            "Automatic invitations sent to visitors by the site's rules",
            self.invitations_fired.clone(),
        );
        r.register(
            "commit_failures",
            "Group commits that failed (nothing acked)",
            self.commit_failures.clone(),
        );
        r.register(
            "logins_by_ticket",
            "Agent logins by resume ticket (no password hash)",
            self.logins_by_ticket.clone(),
        );
        r.register(
            "password_checks",
            "Argon2 password verifications run",
            self.password_checks.clone(),
        );
        r.register(
            "preauth_refused",
            "Agent connections refused before login (pre-auth pool full, or the address's share)",
            self.preauth_refused.clone(),
        );
        r.register(
            "preauth_evicted",
            "Connections not logged in yet, closed to make room for a less crowded address",
            self.preauth_evicted.clone(),
        );
        r.register(
            "visitor_limited",
            "Visitor actions refused by a per-address or per-visitor limit",
            self.visitor_limited.clone(),
        );
        r.register(
            "queries_refused",
            "Agent queries refused while another was in flight",
            self.queries_refused.clone(),
        );
        r.register(
            "commit_batch_ops",
            "Ops per group commit",
            self.commit_batch.clone(),
        );
        r.register(
            "commit_seconds",
            "Group commit latency including fsync",
            self.commit_seconds.clone(),
        );
        r.register(
            "http_connections",
            "Open connections on the HTTP port, upgraded WebSockets included",
            self.http.connections.clone(),
        );
        r.register(
            "http_connection_limit",
            "Most HTTP connections held at once: RLIMIT_NOFILE less the reserve",
            self.http.connection_limit.clone(),
        );
        r.register(
            "http_detect_timeouts",
            "HTTP connections closed for not starting TLS or HTTP in time",
            self.http.detect_timeouts.clone(),
        );
        r.register("http_header_timeouts", "HTTP connections closed for request headers (or a first HTTP/2 request) not arriving in time", self.http.header_timeouts.clone());
        r.register(
            "http_body_timeouts",
            "Requests cut for a body slower than the body timeout",
            self.http.body_timeouts.clone(),
        );
        r.register(
            "http_idle_timeouts",
            "HTTP connections closed after sitting idle between requests",
            self.http.idle_timeouts.clone(),
        );
        r.register(
            "http_per_ip_cuts",
            "HTTP connections closed or refused for the per-address cap",
            self.http.per_ip_cuts.clone(),
        );
        r.register(
            "http_capacity_cuts",
            "Idle new HTTP connections closed to make room under the descriptor cap",
            self.http.capacity_cuts.clone(),
        );
        r.register(
            "http_refused",
            "HTTP connections refused at the cap with nothing idle to close",
            self.http.refused.clone(),
        );
        r.register(
            "http_accept_errors",
            "Failed accepts on the HTTP port (EMFILE and the like)",
            self.http.accept_errors.clone(),
        );
        let b = &self.bus;
        r.register(
            "bus_up",
            "1 while the bus between nodes delivers, 0 while it is down or there is none",
            b.up.clone(),
        );
        r.register(
            "bus_wakes_published",
            "Wake-ups for other nodes handed to the bus (one per recipient per commit)",
            b.wakes_published.clone(),
        );
        r.register(
            "bus_wakes_received",
            "Wake-ups from other nodes",
            b.wakes_received.clone(),
        );
        r.register(
            "bus_presence_sent",
            "Presence announcements and deltas handed to the bus",
            b.presence_sent.clone(),
        );
        r.register(
            "bus_presence_received",
            "Presence announcements and deltas from other nodes",
            b.presence_received.clone(),
        );
        r.register(
            "bus_changes_sent",
            "Notes to other nodes to re-read a changed team row or visitor record",
            b.changes_sent.clone(),
        );
        r.register(
            "bus_changes_received",
            "Notes from other nodes to re-read a changed team row or visitor record",
            b.changes_received.clone(),
        );
        r.register(
            "bus_gaps",
            "Times wake-ups may have been lost (resubscribe, lag, bus down) and every live connection read the log",
            b.gaps.clone(),
        );
        r.register(
            "bus_polls",
            "Safety-net reads of the log heads of this node's live recipients",
            b.polls.clone(),
        );
        r.register(
            "bus_poll_queries",
            "Store queries made by the safety-net polls",
            b.poll_queries.clone(),
        );
        r.register(
            "bus_poll_woken",
            "Recipients the safety-net polls found behind and woke",
            b.poll_woken.clone(),
        );
        r.register(
            "catch_up_reads",
            "Store reads by connections catching up with events committed on another node",
            b.catch_up_reads.clone(),
        );
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn record_commit(&self, ops: usize, latency: Duration) {
        self.commit_batch.observe(ops as f64);
        self.commit_seconds.observe(latency.as_secs_f64());
    }

    /// The registry as OpenMetrics text ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        if let Err(e) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; keep what was written.
            tracing::warn!("encoding metrics: {e}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The series names are an interface (dashboards, alerts, the load
    /// generator and the tests read them): the move to prometheus-client
    /// kept every one, and this pins them.
    #[test]
    fn series_keep_their_names() {
        let m = Metrics::default();
        m.slow_consumer_cuts.inc();
        m.messages_in.inc_by(3);
        m.agent_connections.inc();
        m.http.connection_limit.set(19_488);
        m.record_commit(5, Duration::from_millis(2));
        let text = m.render();
        for line in [
            "holdfast_slow_consumer_cuts_total 1",
            "holdfast_messages_in_total 3",
            "holdfast_agent_connections 1",
            "holdfast_http_connection_limit 19488",
            "holdfast_http_accept_errors_total 0",
            "holdfast_invitations_fired_total 0",
            "holdfast_commit_batch_ops_count 1",
            "holdfast_commit_batch_ops_sum 5.0",
            "holdfast_commit_seconds_bucket{le=\"0.0025\"} 1",
            "# TYPE holdfast_commit_seconds histogram",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
        }
        // 38 counters, 6 gauges, 2 histograms; the encoder ends each help
        // with its own full stop.
        assert_eq!(text.matches("# TYPE ").count(), 46, "{text}");
        assert!(!text.contains("..\n"), "{text}");
    }
}
