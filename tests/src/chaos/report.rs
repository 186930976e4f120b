//! What a chaos run is asked to do and what it measured.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::checker::Report;
/// Liveness and backoff for every party in a run.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Timings {
    /// The shipped defaults: 3 s heartbeat, dead after 10 s, backoff from
    /// 250 ms capped at 10 s.
    pub fn real() -> Self {
        Self {
            heartbeat: Duration::from_secs(3),
            dead_after: Duration::from_secs(10),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
        }
    }

    /// A tenth of that, for a CI-sized run.
    pub fn fast() -> Self {
        Self {
            heartbeat: Duration::from_millis(300),
            dead_after: Duration::from_millis(1000),
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(1000),
        }
    }

    pub(crate) fn is_real(&self) -> bool {
        self.heartbeat >= Duration::from_secs(3)
    }
}

/// What the clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server process on SQLite; each server kill SIGKILLs it and
    /// starts it again at once.
    Single,
    /// `nodes` server processes on one PostgreSQL and one Redis, behind a
    /// real HAProxy run from `deploy/haproxy.cfg`; each server kill
    /// SIGKILLs one node and starts it again [`NODE_DOWN`] later, so its
    /// clients must come back through the balancer on the other nodes.
    /// The cluster's faults (node kills, Redis outages, PostgreSQL
    /// restarts) run one after another, spread over the load, so that each
    /// one's timings are its own.
    Cluster { nodes: usize },
}

/// How long a killed node stays dead before it is started again: longer
/// than HAProxy needs to take it out (3 failed checks 2 s apart).
pub const NODE_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub topology: Topology,
    pub visitors: usize,
    pub agents: usize,
    /// Messages to send, both directions together.
    pub messages: usize,
    /// Link faults (everything but process kills).
    pub link_faults: usize,
    pub server_kills: usize,
    pub agent_kills: usize,
    /// Cluster only: Redis outages (SIGKILL and restart, then SIGSTOP and
    /// SIGCONT, alternately), each `redis_down` long.
    pub redis_outages: usize,
    pub redis_down: Duration,
    /// Cluster only: PostgreSQL restarts (immediate shutdown, then
    /// SIGKILL, alternately), each down for `pg_down`.
    pub pg_restarts: usize,
    pub pg_down: Duration,
    pub timings: Timings,
    /// Messages per second, all senders together.
    pub rate: f64,
    /// The whole run stops by itself after this, drained or not.
    pub time_limit: Duration,
    /// How long to wait after the last fault for everything to arrive.
    pub drain_limit: Duration,
    /// The `holdfast-chaos-agent` binary.
    pub agent_bin: PathBuf,
    /// Print each fault as it happens.
    pub verbose: bool,
}

/// Minimum, median, 95th percentile and maximum of a set of durations.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    pub n: usize,
    pub min: Duration,
    pub median: Duration,
    pub p95: Duration,
    pub max: Duration,
}

impl Spread {
    pub fn of(v: &[Duration]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        let mut v = v.to_vec();
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            n: v.len(),
            min: v[0],
            median: at(0.5),
            p95: at(0.95),
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n == 0 {
            return write!(f, "n=0");
        }
        write!(
            f,
            "n={} min={:.2}s median={:.2}s p95={:.2}s max={:.2}s",
            self.n,
            self.min.as_secs_f64(),
            self.median.as_secs_f64(),
            self.p95.as_secs_f64(),
            self.max.as_secs_f64()
        )
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub checker: Report,
    /// Sent, by direction.
    pub from_visitors: usize,
    pub from_agents: usize,
    /// Faults applied, by kind.
    pub faults: Vec<(&'static str, usize)>,
    pub total_faults: usize,
    /// Agent messages shown twice on an agent's screen (its update stream).
    pub shown_twice: usize,
    /// A receiver saw a smaller server message id after a larger one.
    pub commit_order_violations: usize,
    /// Resumes that got a snapshot instead of a replay.
    pub snapshots: usize,
    /// Acked messages still undelivered when the drain limit hit.
    pub undrained: usize,
    /// Blackhole start to the agent client core declaring the link dead.
    pub agent_dead: Spread,
    /// Blackhole start to the visitor declaring the link dead.
    pub visitor_dead: Spread,
    /// Blackholes that healed before anyone noticed (too short to matter).
    pub blackholes_unnoticed: usize,
    /// Link restored to its backlog delivered.
    pub backlog: Spread,
    /// Server restarted to every link live again on a new connection,
    /// counting the links no fault touched between the kill and their
    /// return (see [`World::server_kill`]).
    pub server_recovery: Spread,
    /// Server restarted to each such link live again, one per link and kill.
    pub server_link_recovery: Spread,
    /// Links left out of those two: a fault was in progress on them at the
    /// kill, or started before they were back.
    pub server_links_left_out: usize,
    /// The figure the run printed before 2026-11-30: every link live at the
    /// same moment, faults or not. Link faults keep about two of the 15
    /// links down at any time, so this measures the fault schedule.
    pub server_all_live_any_faults: Spread,
    /// Agent SIGKILL to that agent live again.
    pub agent_recovery: Spread,
    /// Visitor reconnects and agent connection losses seen.
    pub visitor_reconnects: usize,
    pub agent_disconnects: usize,
    /// Agent commands the server refused, and errors seen by visitors.
    pub agent_rejects: usize,
    pub visitor_errors: Vec<String>,
    pub elapsed: Duration,
    pub load_phase: Duration,
    pub drain: Duration,
    /// Cluster only: the figures of its own faults.
    pub cluster: Option<ClusterReport>,
}

/// What a cluster run measured beyond the single server's figures.
#[derive(Debug, Clone, Default)]
pub struct ClusterReport {
    pub nodes: usize,
    /// Sessions each node took over the run (HAProxy's stats, visitor and
    /// agent backends), to show clients were spread over every node.
    pub sessions_per_node: Vec<(String, u64, u64)>,
    /// Node SIGKILL to each of its clients live again on a new connection:
    /// the links that dropped at the kill and had no link fault until back.
    pub node_client_recovery: Spread,
    /// Of those, how many were back before the node was started again
    /// (so on another node).
    pub node_clients_elsewhere: usize,
    /// Dropped at a node kill and not back within the limit.
    pub node_clients_stranded: usize,
    /// Dropped at a node kill, then a link fault before they were back.
    pub node_clients_left_out: usize,
    /// Messages sent while Redis was down: sent to applied by the receiver.
    pub redis_down_latency: Spread,
    /// Every other message: sent to applied (faults of all kinds included).
    pub other_latency: Spread,
    /// The same two, only for messages with no link fault (or agent kill)
    /// on their sender's or receiver's link while they were on their way.
    pub redis_down_latency_clean: Spread,
    pub other_latency_clean: Spread,
    /// PostgreSQL up again to the first message the server acked after it.
    pub pg_writes_resumed: Spread,
    /// PostgreSQL stopped to back up again (the harness's stop and start).
    pub pg_outage: Spread,
    /// Server acks seen while PostgreSQL was down (only those already on
    /// their way at the stop can be: an ack follows the commit).
    pub acks_while_pg_down: usize,
}

impl std::fmt::Display for ClusterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut spread = String::new();
        for (node, v, a) in &self.sessions_per_node {
            let _ = write!(spread, " {node}: {v} visitor + {a} agent");
        }
        writeln!(
            f,
            "cluster of {} nodes, sessions per node:{spread}",
            self.nodes
        )?;
        writeln!(
            f,
            "node kill -> each of its clients live: {}",
            self.node_client_recovery
        )?;
        writeln!(
            f,
            "  back before the node restarted (elsewhere) {}, stranded {}, left out (link fault) {}",
            self.node_clients_elsewhere, self.node_clients_stranded, self.node_clients_left_out
        )?;
        writeln!(
            f,
            "sent -> applied, sent while Redis was down: {}",
            self.redis_down_latency
        )?;
        writeln!(
            f,
            "sent -> applied, every other message:       {}",
            self.other_latency
        )?;
        writeln!(
            f,
            "  the same, no link fault on the way:  Redis down {}; other {}",
            self.redis_down_latency_clean, self.other_latency_clean
        )?;
        writeln!(f, "PostgreSQL down (stop to up again):  {}", self.pg_outage)?;
        write!(
            f,
            "PostgreSQL up -> first write acked: {}; acks while down {}",
            self.pg_writes_resumed, self.acks_while_pg_down
        )
    }
}

impl ChaosReport {
    /// The promise: nothing acked lost, nothing applied twice, nothing out of
    /// order, nothing invented.
    pub fn clean(&self) -> bool {
        self.checker.lost == 0
            && self.checker.duplicated == 0
            && self.checker.reordered == 0
            && self.checker.unexpected == 0
            && self.shown_twice == 0
            && self.commit_order_violations == 0
            && self
                .cluster
                .as_ref()
                .is_none_or(|c| c.node_clients_stranded == 0)
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut faults = String::new();
        for (k, n) in &self.faults {
            let _ = write!(faults, " {k}={n}");
        }
        writeln!(f, "checker: {}", self.checker)?;
        writeln!(
            f,
            "messages: from visitors {} from agents {}; shown twice {}; commit-order violations {}; snapshots {}; undrained {}",
            self.from_visitors,
            self.from_agents,
            self.shown_twice,
            self.commit_order_violations,
            self.snapshots,
            self.undrained
        )?;
        writeln!(f, "faults: {} ({})", self.total_faults, faults.trim())?;
        writeln!(f, "blackhole -> agent declared dead:   {}", self.agent_dead)?;
        writeln!(
            f,
            "blackhole -> visitor declared dead: {}",
            self.visitor_dead
        )?;
        writeln!(
            f,
            "blackholes healed before detection: {}",
            self.blackholes_unnoticed
        )?;
        writeln!(f, "link restore -> backlog delivered:  {}", self.backlog)?;
        writeln!(
            f,
            "server kill -> all links live:      {}",
            self.server_recovery
        )?;
        writeln!(
            f,
            "server kill -> each link live:      {}",
            self.server_link_recovery
        )?;
        writeln!(
            f,
            "  left out (a link fault before the link was back): {}; every link live at once, faults or not: {}",
            self.server_links_left_out, self.server_all_live_any_faults
        )?;
        writeln!(
            f,
            "agent kill -> agent live:           {}",
            self.agent_recovery
        )?;
        writeln!(
            f,
            "visitor reconnects {}, agent disconnects {}, agent rejects {}, visitor errors {}",
            self.visitor_reconnects,
            self.agent_disconnects,
            self.agent_rejects,
            self.visitor_errors.len()
        )?;
        if let Some(c) = &self.cluster {
            writeln!(f, "{c}")?;
        }
        write!(
            f,
            "time: total {:.1}s, load {:.1}s, drain {:.1}s",
            self.elapsed.as_secs_f64(),
            self.load_phase.as_secs_f64(),
            self.drain.as_secs_f64()
        )
    }
}
