//! What the clients talk to: one server process, or a cluster of nodes on
//! PostgreSQL and Redis behind a real HAProxy; and the faults only a
//! cluster has (a node SIGKILLed, Redis down, PostgreSQL restarted).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngExt;

use super::book::lock;
use super::world::World;
use super::{ClusterReport, NODE_DOWN, Spread, Timings};
use crate::cluster::{Cluster, cli};
use crate::haproxy::{ClusterAddrs, HaProxy, cluster_config, server_stat};
use crate::server::{PASSWORD, ServerProcess, free_port, seed};

/// The server side of a run.
#[derive(Debug)]
pub(crate) enum Rig {
    Single(Box<ServerProcess>),
    Cluster(Box<ClusterRig>),
}

#[derive(Debug)]
pub(crate) struct ClusterRig {
    pub(crate) cluster: Cluster,
    pub(crate) addrs: ClusterAddrs,
    // Dropping it kills it, after the nodes (fields drop in order).
    pub(crate) _haproxy: HaProxy,
}

/// What the cluster's own faults measured, filled in as they happen.
#[derive(Debug, Default)]
pub(crate) struct ClusterFigures {
    pub(crate) node_client_recovery: Vec<Duration>,
    pub(crate) node_clients_elsewhere: usize,
    pub(crate) node_clients_stranded: usize,
    pub(crate) node_clients_left_out: usize,
    /// When Redis was down: from, to.
    pub(crate) redis_windows: Vec<(Instant, Instant)>,
    /// When PostgreSQL was down: from, to.
    pub(crate) pg_windows: Vec<(Instant, Instant)>,
    pub(crate) pg_writes_resumed: Vec<Duration>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Rig {
    /// One server on SQLite in `dir`, or `nodes` nodes on PostgreSQL and
    /// Redis behind HAProxy; `agents` agents `chaos0`… of site `acme` with
    /// room for `capacity` chats each, and every server started with
    /// `args`. Blocking.
    pub(crate) fn start(
        dir: &Path,
        nodes: Option<usize>,
        agents: usize,
        capacity: u32,
        args: &[&str],
    ) -> Self {
        let Some(n) = nodes else {
            let data = dir.join("server");
            seed(&data);
            let conn = holdfast_server::store::open_connection(&data).expect("open db");
            for k in 0..agents {
                holdfast_server::admin::add_agent(
                    &conn,
                    "acme",
                    &format!("chaos{k}"),
                    &format!("Chaos Agent {k}"),
                    PASSWORD,
                    capacity,
                    holdfast_protocol::agent::Role::Agent,
                )
                .expect("add agent");
            }
            drop(conn);
            return Rig::Single(Box::new(ServerProcess::start(&data, args)));
        };
        // The shipped balancer config sends a PROXY protocol header on the
        // agent port, so the nodes take one from it (on loopback here), as
        // the README tells users to start them.
        let mut node_args = args.to_vec();
        node_args.extend(["--agent-proxy-protocol-from", "127.0.0.1/32"]);
        let cluster = Cluster::start_with(n, capacity, &node_args);
        let cap = capacity.to_string();
        for k in 0..agents {
            cli(
                &cluster.url,
                dir,
                &[
                    "agent",
                    "add",
                    &format!("chaos{k}"),
                    "--site",
                    "acme",
                    "--name",
                    &format!("Chaos Agent {k}"),
                    "--capacity",
                    &cap,
                ],
            );
        }
        let addrs = ClusterAddrs {
            visitors: loopback(),
            agents: loopback(),
            stats: loopback(),
            nodes: cluster.nodes.iter().map(|s| (s.http, s.agent)).collect(),
        };
        let haproxy = HaProxy::start(
            &cluster_config(&addrs),
            &[addrs.visitors, addrs.agents, addrs.stats],
        );
        Rig::Cluster(Box::new(ClusterRig {
            cluster,
            addrs,
            _haproxy: haproxy,
        }))
    }

    /// Where visitors (HTTP) and agents (TCP) connect: the server, or the
    /// balancer.
    pub(crate) fn entry(&self) -> (SocketAddr, SocketAddr) {
        match self {
            Rig::Single(s) => (s.http, s.agent),
            Rig::Cluster(c) => (c.addrs.visitors, c.addrs.agents),
        }
    }

    /// Wait until HAProxy has every node UP (its checks run every 2 s).
    pub(crate) async fn wait_up(stats: SocketAddr, nodes: usize) {
        for k in 1..=nodes {
            HaProxy::wait_up(stats, "holdfast_http", &format!("node{k}")).await;
        }
    }

    /// Stop every server gracefully.
    pub(crate) fn terminate(&mut self) {
        match self {
            Rig::Single(s) => {
                s.terminate();
            }
            Rig::Cluster(c) => {
                for s in &mut c.cluster.nodes {
                    s.terminate();
                }
            }
        }
    }
}

/// Sessions each node took, visitor and agent, from HAProxy's stats.
pub(crate) async fn sessions_per_node(stats: SocketAddr, nodes: usize) -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    for k in 1..=nodes {
        let node = format!("node{k}");
        let http = server_stat(stats, "holdfast_http", &node, 7).await;
        let agents = server_stat(stats, "holdfast_agents", &node, 7).await;
        v.push((node, http.unwrap_or(0), agents.unwrap_or(0)));
    }
    v
}

impl World {
    fn with_cluster<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut ClusterRig) -> T + Send + 'static,
    ) -> tokio::task::JoinHandle<Option<T>> {
        let rig = self.rig.clone();
        tokio::task::spawn_blocking(move || {
            match &mut *rig.lock().unwrap_or_else(|e| e.into_inner()) {
                Rig::Cluster(c) => Some(f(c)),
                Rig::Single(_) => None,
            }
        })
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, ClusterFigures> {
        self.cluster.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node holding the most client connections now, by HAProxy's
    /// current sessions (a random one if the stats do not answer): a node
    /// picked at random may hold none at that moment, or only clients in
    /// the middle of a link fault, and then its kill measures nothing.
    async fn busiest_node(self: &Arc<Self>, nodes: usize) -> usize {
        let random = rand::rng().random_range(0..nodes);
        let Ok(Some(stats)) = self.with_cluster(|c| c.addrs.stats).await else {
            return random;
        };
        let mut best: Option<(u64, usize)> = None;
        for k in 0..nodes {
            let name = format!("node{}", k + 1);
            let http = server_stat(stats, "holdfast_http", &name, 4).await;
            let agents = server_stat(stats, "holdfast_agents", &name, 4).await;
            let (Some(h), Some(a)) = (http, agents) else {
                return random;
            };
            if best.is_none_or(|(n, _)| h + a > n) {
                best = Some((h + a, k));
            }
        }
        best.map_or(random, |(_, k)| k)
    }

    /// SIGKILL the busiest node mid-load, start it again [`NODE_DOWN`] later,
    /// and measure each of its clients back on a new connection.
    ///
    /// A node's clients are the links that drop within a moment of the
    /// kill (HAProxy closes their side when the node's sockets die); a
    /// link with a fault in progress at the kill, or one starting before
    /// it is back, is left out, as in [`World::server_kill`].
    pub(crate) async fn node_kill(self: Arc<Self>, nodes: usize) {
        let node = self.busiest_node(nodes).await;
        self.log(&format!("node{} SIGKILL", node + 1));
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let before: HashMap<String, u64> = {
            let b = lock(&self.book);
            self.links()
                .into_iter()
                .map(|l| {
                    let n = b.connections.get(&l).copied().unwrap_or(0);
                    (l, n)
                })
                .collect()
        };
        let _ = self
            .with_cluster(move |c| c.cluster.nodes[node].kill9())
            .await;
        let killed = Instant::now();
        let restart = {
            let w = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(NODE_DOWN).await;
                let _ = w.with_cluster(move |c| c.cluster.nodes[node].spawn()).await;
                w.log(&format!("node{} started again", node + 1));
                Instant::now()
            })
        };
        // A client notices at once (HAProxy closes its side when the node's
        // sockets die), but on a loaded 2-core machine running the debug
        // build "at once" was seen to take over 2 s, which left a kill with
        // no client measured; one that drops later than this was dropped
        // by something else.
        let notice = Duration::from_secs(5);
        let limit = NODE_DOWN + self.timings.backoff_cap * 3 + self.timings.dead_after * 2;
        let mut dropped: HashSet<String> = HashSet::new();
        let mut back: HashSet<String> = HashSet::new();
        let mut left_out: HashSet<String> = HashSet::new();
        loop {
            let now_busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let restarted = restart.is_finished();
            {
                let b = lock(&self.book);
                for l in self.links() {
                    if busy.contains(&l) || back.contains(&l) || left_out.contains(&l) {
                        continue;
                    }
                    // Judged by when the drop happened, not by when this
                    // loop saw it: a loop starved past the notice on a
                    // loaded machine still counts the node's clients.
                    let went = b
                        .went_down
                        .get(&l)
                        .is_some_and(|t| *t >= killed && t.duration_since(killed) <= notice);
                    if went {
                        dropped.insert(l.clone());
                    }
                    if !dropped.contains(&l) {
                        continue;
                    }
                    if self.link_live(&b, &l)
                        && b.connections.get(&l).copied().unwrap_or(0)
                            > before.get(&l).copied().unwrap_or(0)
                    {
                        let d = killed.elapsed();
                        self.log(&format!(
                            "  +{:.2}s after node kill: {l} back",
                            d.as_secs_f64()
                        ));
                        let mut f = self.figures();
                        f.node_client_recovery.push(d);
                        if !restarted {
                            f.node_clients_elsewhere += 1;
                        }
                        back.insert(l);
                    } else if now_busy.contains(&l) {
                        self.log(&format!("  a fault on {l} before it was back, left out"));
                        self.figures().node_clients_left_out += 1;
                        left_out.insert(l);
                    }
                }
            }
            let settled = killed.elapsed() > notice && dropped.len() == back.len() + left_out.len();
            if (settled && restarted) || killed.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stranded: Vec<&String> = dropped
            .iter()
            .filter(|l| !back.contains(*l) && !left_out.contains(*l))
            .collect();
        if !stranded.is_empty() {
            self.log(&format!("  not back within {limit:?}: {stranded:?}"));
        }
        self.figures().node_clients_stranded += stranded.len();
        self.log(&format!(
            "  node{}: {} clients dropped, {} back",
            node + 1,
            dropped.len(),
            back.len()
        ));
        let _ = restart.await;
        if let Ok(Some(stats)) = self.with_cluster(|c| c.addrs.stats).await {
            Rig::wait_up(stats, nodes).await;
        }
        let all: HashSet<String> = lock(&self.book).receiver_of.values().cloned().collect();
        lock(&self.book).probe(&all);
    }

    /// Redis gone for `down`: SIGKILLed and started again empty, or, every
    /// other time, SIGSTOPped (sockets open, nothing answered) and resumed.
    pub(crate) async fn redis_outage(self: Arc<Self>, i: usize, down: Duration) {
        let pause = i % 2 == 1;
        self.log(&format!(
            "Redis {} for {down:?}",
            if pause { "SIGSTOP" } else { "SIGKILL" }
        ));
        let _ = self
            .with_cluster(move |c| {
                if pause {
                    c.cluster.redis.pause();
                } else {
                    c.cluster.redis.kill9();
                }
            })
            .await;
        let from = Instant::now();
        tokio::time::sleep(down).await;
        let _ = self
            .with_cluster(move |c| {
                if pause {
                    c.cluster.redis.resume();
                } else {
                    c.cluster.redis.restart();
                }
            })
            .await;
        self.figures().redis_windows.push((from, Instant::now()));
        self.log("Redis back");
    }

    /// PostgreSQL stopped (immediate shutdown, or every other time
    /// SIGKILL) for `down`, then started on the same data dir and port;
    /// measures how long until the server acks a write again.
    pub(crate) async fn pg_restart(self: Arc<Self>, i: usize, down: Duration) {
        let kill = i % 2 == 1;
        self.log(&format!(
            "PostgreSQL {} for {down:?}",
            if kill { "SIGKILL" } else { "immediate stop" }
        ));
        let from = Instant::now();
        let _ = self
            .with_cluster(move |c| {
                if kill {
                    c.cluster.pg.kill9();
                } else {
                    c.cluster.pg.stop();
                }
            })
            .await;
        tokio::time::sleep(down).await;
        let _ = self.with_cluster(|c| c.cluster.pg.spawn()).await;
        let up = Instant::now();
        self.figures().pg_windows.push((from, up));
        self.log("PostgreSQL back");
        let limit = Duration::from_secs(60);
        while up.elapsed() < limit {
            let acked = lock(&self.book).server_acks.last().is_some_and(|t| *t > up);
            if acked {
                let d = up.elapsed();
                self.log(&format!(
                    "  first write acked {:.2}s after",
                    d.as_secs_f64()
                ));
                self.figures().pg_writes_resumed.push(d);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.log("  no write acked within 60 s of PostgreSQL's return");
    }
}

impl World {
    /// The cluster's figures, once the run is over.
    pub(crate) async fn cluster_report(&self, stats: SocketAddr, nodes: usize) -> ClusterReport {
        let mut r = ClusterReport {
            nodes,
            sessions_per_node: sessions_per_node(stats, nodes).await,
            ..ClusterReport::default()
        };
        let f = self.figures();
        let b = lock(&self.book);
        let windows = self
            .fault_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone();
        // [down, other] x [all, on links with no fault in flight].
        let mut lat: [[Vec<Duration>; 2]; 2] = Default::default();
        for (body, sent) in &b.sent_at {
            let Some(applied) = b.applied_at.get(body) else {
                continue;
            };
            let d = applied.saturating_duration_since(*sent);
            let row = usize::from(!f.redis_windows.iter().any(|(a, z)| a <= sent && sent <= z));
            lat[row][0].push(d);
            // The message's links: its sender's and its receiver's (`v3`,
            // `a1`), named in its stream (`v3`, `a1>v3`) and receiver
            // (`a1<v3`, `v3`).
            let stream = body.split('#').next().unwrap_or("");
            let receiver = b.receiver_of.get(body).map_or("", String::as_str);
            let links: Vec<&str> = stream
                .split(['>', '<'])
                .chain(receiver.split(['>', '<']))
                .collect();
            let faulted = windows
                .iter()
                .any(|(l, a, z)| links.contains(&l.as_str()) && a <= applied && sent <= z);
            if !faulted {
                lat[row][1].push(d);
            }
        }
        r.redis_down_latency = Spread::of(&lat[0][0]);
        r.other_latency = Spread::of(&lat[1][0]);
        r.redis_down_latency_clean = Spread::of(&lat[0][1]);
        r.other_latency_clean = Spread::of(&lat[1][1]);
        r.node_client_recovery = Spread::of(&f.node_client_recovery);
        r.node_clients_elsewhere = f.node_clients_elsewhere;
        r.node_clients_stranded = f.node_clients_stranded;
        r.node_clients_left_out = f.node_clients_left_out;
        r.pg_writes_resumed = Spread::of(&f.pg_writes_resumed);
        let outages: Vec<Duration> = f.pg_windows.iter().map(|(a, z)| *z - *a).collect();
        r.pg_outage = Spread::of(&outages);
        r.acks_while_pg_down = b
            .server_acks
            .iter()
            .filter(|t| f.pg_windows.iter().any(|(a, z)| a <= *t && *t <= z))
            .count();
        r
    }
}

/// The server arguments every node or the single server gets.
pub(crate) fn server_args(config: &Path, t: Timings) -> Vec<String> {
    vec![
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--heartbeat-ms".into(),
        t.heartbeat.as_millis().to_string(),
        "--dead-after-ms".into(),
        t.dead_after.as_millis().to_string(),
    ]
}
