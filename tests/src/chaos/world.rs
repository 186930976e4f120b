//! The faults, and the world they are applied to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;

use super::Timings;
use super::agent::{AgentProc, send_from_agent};
use super::book::{Book, SharedBook, lock};
use super::rig::{ClusterFigures, Rig};
use super::visitor::VisitorLink;
use crate::proxy::Proxy;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Blackhole,
    Reset,
    Slice,
    Cut,
    Latency,
    Refuse,
    Reload,
    ServerKill,
    AgentKill,
    /// Cluster only: Redis down (SIGKILL or SIGSTOP) for a while, then back.
    RedisOutage,
    /// Cluster only: PostgreSQL stopped and started on the same data dir.
    PgRestart,
}

impl Fault {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Fault::Blackhole => "blackhole",
            Fault::Reset => "reset",
            Fault::Slice => "slice",
            Fault::Cut => "cut_mid_frame",
            Fault::Latency => "latency",
            Fault::Refuse => "refuse_new",
            Fault::Reload => "visitor_reload",
            Fault::ServerKill => "server_kill9",
            Fault::AgentKill => "agent_kill9",
            Fault::RedisOutage => "redis_outage",
            Fault::PgRestart => "pg_restart",
        }
    }
}

pub(crate) const LINK_FAULTS: [Fault; 7] = [
    Fault::Blackhole,
    Fault::Reset,
    Fault::Slice,
    Fault::Cut,
    Fault::Latency,
    Fault::Refuse,
    Fault::Reload,
];

pub(crate) type FaultLog = (HashMap<String, Instant>, Vec<(String, Instant, Instant)>);

/// Shared by the load, fault and drain phases.
pub(crate) struct World {
    pub(crate) book: SharedBook,
    /// The one server, or the cluster and its balancer.
    pub(crate) rig: Arc<Mutex<Rig>>,
    pub(crate) cluster: Mutex<ClusterFigures>,
    pub(crate) visitors: Vec<tokio::sync::Mutex<VisitorLink>>,
    pub(crate) agents: Vec<Arc<tokio::sync::Mutex<AgentProc>>>,
    pub(crate) visitor_proxies: Vec<Proxy>,
    pub(crate) agent_proxies: Vec<Proxy>,
    /// Links with a fault in progress.
    pub(crate) busy: Mutex<HashSet<String>>,
    pub(crate) timings: Timings,
    pub(crate) verbose: bool,
    pub(crate) server_recovery: Mutex<Vec<Duration>>,
    /// Per link back after a kill; links left out; every link live at once.
    pub(crate) server_link_recovery: Mutex<(Vec<Duration>, usize, Vec<Duration>)>,
    pub(crate) agent_recovery: Mutex<Vec<Duration>>,
    /// Link faults and agent kills: link -> since when, in progress; and
    /// (link, from, to) once over, settling time included.
    pub(crate) fault_log: Mutex<FaultLog>,
    pub(crate) started: Instant,
}

impl World {
    pub(crate) fn log(&self, what: &str) {
        if self.verbose {
            println!("[{:7.2}s] {what}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Every link's name: `v0`… for visitors, `a0`… for agents.
    pub(crate) fn links(&self) -> Vec<String> {
        (0..self.visitors.len())
            .map(|i| format!("v{i}"))
            .chain((0..self.agents.len()).map(|k| format!("a{k}")))
            .collect()
    }

    pub(crate) fn link_live(&self, b: &Book, link: &str) -> bool {
        let (kind, n) = link.split_at(1);
        let Ok(n) = n.parse::<usize>() else {
            return false;
        };
        if kind == "v" {
            b.visitor_live.get(&n).copied().unwrap_or(false)
        } else {
            b.agent_state.get(&n).is_some_and(|s| s == "live")
        }
    }

    pub(crate) fn all_live(&self) -> bool {
        let b = lock(&self.book);
        (0..self.agents.len()).all(|k| b.agent_state.get(&k).is_some_and(|s| s == "live"))
            && (0..self.visitors.len()).all(|i| b.visitor_live.get(&i).copied().unwrap_or(false))
    }

    pub(crate) fn receivers_of(&self, link: &str) -> HashSet<String> {
        let mut r = HashSet::new();
        if let Some(k) = link.strip_prefix('a').and_then(|k| k.parse::<usize>().ok()) {
            for i in 0..self.visitors.len() {
                r.insert(format!("a{k}<v{i}"));
            }
        } else {
            r.insert(link.to_string());
        }
        r
    }

    pub(crate) fn claim(&self, link: &str) -> bool {
        let claimed = self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(link.to_string());
        if claimed {
            self.fault_log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .insert(link.to_string(), Instant::now());
        }
        claimed
    }

    pub(crate) fn release(&self, link: &str) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(link);
        let mut log = self.fault_log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(from) = log.0.remove(link) {
            log.1.push((link.to_string(), from, Instant::now()));
        }
    }

    /// A random link with no fault in progress.
    pub(crate) fn free_link(&self, visitors_only: bool) -> Option<String> {
        let mut links: Vec<String> = (0..self.visitors.len()).map(|i| format!("v{i}")).collect();
        if !visitors_only {
            links.extend((0..self.agents.len()).map(|k| format!("a{k}")));
        }
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
        links.retain(|l| !busy.contains(l));
        if links.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..links.len());
        Some(links.swap_remove(i))
    }

    pub(crate) fn scaled(&self, fast_ms: (u64, u64)) -> Duration {
        let k = if self.timings.is_real() { 5 } else { 1 };
        Duration::from_millis(rand::rng().random_range(fast_ms.0 * k..=fast_ms.1 * k))
    }

    pub(crate) fn link_proxy(&self, link: &str) -> Proxy {
        let (kind, n) = link.split_at(1);
        let n: usize = n.parse().unwrap_or(0);
        if kind == "v" {
            self.visitor_proxies[n].clone()
        } else {
            self.agent_proxies[n].clone()
        }
    }

    /// Apply one link fault and heal it; returns when healed.
    pub(crate) async fn link_fault(self: Arc<Self>, fault: Fault, link: String) {
        let proxy = self.link_proxy(&link);
        self.log(&format!("{} on {link}", fault.name()));
        match fault {
            Fault::Blackhole => {
                // Long enough for the heartbeat to notice.
                let extra = self.scaled((300, 1500));
                let hold = self.timings.dead_after + self.timings.heartbeat + extra;
                lock(&self.book)
                    .blackhole_at
                    .insert(link.clone(), Instant::now());
                proxy.blackhole(true);
                tokio::time::sleep(hold).await;
                proxy.blackhole(false);
                {
                    let mut b = lock(&self.book);
                    if b.blackhole_at.remove(&link).is_some() {
                        b.blackholes_unnoticed += 1;
                    }
                    b.probe(&self.receivers_of(&link));
                }
            }
            Fault::Reset => proxy.reset_all(),
            Fault::Slice => {
                proxy.slice(true);
                tokio::time::sleep(self.scaled((500, 2000))).await;
                proxy.slice(false);
            }
            Fault::Cut => {
                proxy.cut_after(rand::rng().random_range(1..=200));
                tokio::time::sleep(self.scaled((500, 1500))).await;
                proxy.cut_after(0);
            }
            Fault::Latency => {
                let (base, jitter) = if self.timings.is_real() {
                    (500, 300)
                } else {
                    (
                        rand::rng().random_range(10..=60),
                        rand::rng().random_range(0..=20),
                    )
                };
                proxy.latency(Duration::from_millis(base), Duration::from_millis(jitter));
                tokio::time::sleep(self.scaled((1000, 3000))).await;
                proxy.latency(Duration::ZERO, Duration::ZERO);
            }
            Fault::Refuse => {
                proxy.refuse_new(true);
                proxy.close_all();
                tokio::time::sleep(self.scaled((300, 1500))).await;
                proxy.refuse_new(false);
                lock(&self.book).probe(&self.receivers_of(&link));
            }
            Fault::Reload => {
                if let Some(i) = link.strip_prefix('v').and_then(|i| i.parse::<usize>().ok()) {
                    self.visitors[i].lock().await.reload.notify_one();
                }
            }
            Fault::ServerKill | Fault::AgentKill | Fault::RedisOutage | Fault::PgRestart => {}
        }
        // Let the link settle before another fault lands on it.
        tokio::time::sleep(self.timings.heartbeat).await;
        self.release(&link);
    }

    /// SIGKILL the server and start it again on the same data dir; returns
    /// the task that measures how long until the links are live again.
    ///
    /// Link faults go on beside the kills (a kill during a blackhole is
    /// worth testing), and at any moment about two of the links are under
    /// one: a blackhole keeps its link down for its 13–20 s plus the 10 s
    /// handshake timeout its reconnect runs into. Waiting for every link
    /// live at once therefore measured the fault schedule, not the restart.
    /// So the recovery counts the links no fault touched from the kill until
    /// they were back, each back only on a connection made after the kill
    /// (a client that has not noticed the kill yet is not back); the others
    /// are counted as left out. The old figure is kept beside it.
    pub(crate) async fn server_kill(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        self.log("server SIGKILL");
        let (before, mut pending) = {
            let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let b = lock(&self.book);
            let before: HashMap<String, u64> = self
                .links()
                .into_iter()
                .map(|l| {
                    let n = b.connections.get(&l).copied().unwrap_or(0);
                    (l, n)
                })
                .collect();
            let pending: HashSet<String> = self
                .links()
                .into_iter()
                .filter(|l| !busy.contains(l))
                .collect();
            (before, pending)
        };
        let rig = self.rig.clone();
        tokio::task::spawn_blocking(move || {
            if let Rig::Single(s) = &mut *rig.lock().unwrap_or_else(|e| e.into_inner()) {
                s.kill9();
                s.spawn();
            }
        })
        .await
        .expect("server restart");
        let killed = Instant::now();
        tokio::spawn(async move {
            let limit = self.timings.backoff_cap * 3 + self.timings.dead_after * 2;
            let mut left_out = self.links().len() - pending.len();
            if left_out > 0 {
                let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
                self.log(&format!(
                    "  faults in progress at the kill, left out: {busy:?}"
                ));
            }
            let mut each = Vec::new();
            let mut any_faults = None;
            while (!pending.is_empty() || any_faults.is_none()) && killed.elapsed() < limit {
                let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let back: Vec<String> = {
                    let b = lock(&self.book);
                    pending
                        .iter()
                        .filter(|l| {
                            self.link_live(&b, l)
                                && b.connections.get(*l).copied().unwrap_or(0)
                                    > before.get(*l).copied().unwrap_or(0)
                        })
                        .cloned()
                        .collect()
                };
                for l in back {
                    pending.remove(&l);
                    let d = killed.elapsed();
                    each.push(d);
                    self.log(&format!("  +{:.2}s after kill: {l} back", d.as_secs_f64()));
                }
                let hit: Vec<String> = pending.intersection(&busy).cloned().collect();
                for l in hit {
                    pending.remove(&l);
                    left_out += 1;
                    self.log(&format!(
                        "  +{:.2}s after kill: a fault on {l} before it was back, left out",
                        killed.elapsed().as_secs_f64()
                    ));
                }
                if any_faults.is_none() && self.all_live() {
                    any_faults = Some(killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if pending.is_empty() {
                if let Some(max) = each.iter().max() {
                    self.server_recovery
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(*max);
                }
            } else {
                self.log(&format!("  not back within {limit:?}: {pending:?}"));
            }
            {
                let mut r = self
                    .server_link_recovery
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                r.0.extend(each);
                r.1 += left_out;
                if let Some(d) = any_faults {
                    r.2.push(d);
                }
            }
            let all: HashSet<String> = {
                let b = lock(&self.book);
                b.receiver_of.values().cloned().collect()
            };
            lock(&self.book).probe(&all);
        })
    }

    /// SIGKILL an agent in the middle of a burst of sends, then restart it.
    pub(crate) async fn agent_kill(self: Arc<Self>, k: usize) {
        let link = format!("a{k}");
        self.log(&format!("agent {k} SIGKILL mid-send"));
        {
            let mut a = self.agents[k].lock().await;
            for _ in 0..10 {
                send_from_agent(&self.book, &mut a).await;
            }
            // Land the kill somewhere in the middle of those sends: some not
            // yet read, some in the outbox, some on the wire.
            let ms = rand::rng().random_range(0..=30);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            a.kill9().await;
        }
        tokio::time::sleep(self.scaled((50, 500))).await;
        let killed = Instant::now();
        self.agents[k].lock().await.spawn(&self.book);
        let limit = self.timings.backoff_cap * 3 + self.timings.dead_after * 2;
        loop {
            let live = lock(&self.book)
                .agent_state
                .get(&k)
                .is_some_and(|s| s == "live");
            if live {
                self.agent_recovery
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(killed.elapsed());
                break;
            }
            if killed.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(self.timings.heartbeat).await;
        self.release(&link);
    }
}
