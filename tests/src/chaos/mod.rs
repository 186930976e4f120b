//! The chaos run: real server process, real agent client processes, visitors
//! over WebSocket, every link through its own fault proxy, a stream of
//! faults (blackholes, RSTs, 1-byte slices, mid-frame cuts, latency with
//! jitter, refused connections, server and agent SIGKILLs), and a Jepsen-style
//! checker over every message.
//!
//! - Each visitor is an in-process task that behaves like the widget: its
//!   outbox is never lost (the widget's `localStorage`), it resumes from its
//!   event cursor, it resends unacked messages in order after every
//!   reconnect, and it detects a dead link by its own ping/pong heartbeat.
//! - Each agent is a `holdfast-chaos-agent` process running the real client
//!   core on its own SQLite store, SIGKILLed and restarted on the same store.
//! - A visitor message counts as acked when the server acked it; an agent
//!   message counts as acked when `send_message` returned, i.e. when it was
//!   durably in the client's outbox, which is where the client's promise
//!   starts. Anything sent without that answer is "outcome unknown".
//! - What an agent applied is read back from its store at the end (a kill can
//!   land between the store commit and the line on stdout); what it showed
//!   twice is counted from its stdout.
//!
//! [`run`] returns a [`ChaosReport`] with the checker's counts and the
//! timings: blackhole to declared dead, link restore to backlog delivered,
//! and server kill to every link live again.

mod agent;
mod book;
mod report;
mod rig;
mod visitor;
mod world;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::Author;
use rand::RngExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::agent::{AgentProc, send_from_agent};
use self::book::{Book, SharedBook, lock};

pub use self::report::{
    ChaosConfig, ChaosReport, ClusterReport, NODE_DOWN, Spread, Timings, Topology,
};
use self::rig::{ClusterFigures, Rig, server_args};
use self::visitor::{VisitorLink, VisitorTask};
use self::world::{Fault, LINK_FAULTS, World};
use crate::proxy::Proxy;

/// How long the drain waits for agents' messages still unacked once
/// everything else is in.
const AGENT_ACK_GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the run

/// The `holdfast-chaos-agent` binary next to the running executable, built
/// first so `cargo run --bin holdfast-chaos` needs nothing else.
pub fn agent_binary() -> PathBuf {
    crate::server::workspace_binary("holdfast-tests", "holdfast-chaos-agent")
}

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("chaos.toml");
    std::fs::write(&p, crate::server::LOOPBACK_LOAD_TOML).expect("write server config");
    p
}

/// Run the whole thing. Panics only on harness failures (a process that
/// cannot start); the promise itself is judged from the returned report.
pub async fn run(cfg: ChaosConfig) -> ChaosReport {
    crate::init_logs();
    let started = Instant::now();
    let hard_stop = started + cfg.time_limit;
    let t = cfg.timings;
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = write_config(dir.path());
    let nodes = match cfg.topology {
        Topology::Single => None,
        Topology::Cluster { nodes } => Some(nodes),
    };
    let rig = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        let args = server_args(&conf, t);
        let (agents, capacity) = (cfg.agents, u32::try_from(cfg.visitors + 10).unwrap_or(100));
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            Rig::start(&dir, nodes, agents, capacity, &a)
        }
    })
    .await
    .expect("server start");
    let stats = match &rig {
        Rig::Cluster(c) => Some(c.addrs.stats),
        Rig::Single(_) => None,
    };
    if let (Some(stats), Some(n)) = (stats, nodes) {
        // Before any client connects, so leastconn spreads them over all.
        Rig::wait_up(stats, n).await;
    }
    let (http, agent_addr) = rig.entry();
    let book: SharedBook = Arc::new(Mutex::new(Book::default()));
    let stop = CancellationToken::new();

    // Visitors, each behind its own proxy.
    let mut visitors = Vec::new();
    let mut visitor_ids = Vec::new();
    for i in 0..cfg.visitors {
        let proxy = Proxy::start(http).await;
        let (tx, rx) = mpsc::unbounded_channel();
        let (wtx, wrx) = tokio::sync::oneshot::channel();
        let reload = Arc::new(tokio::sync::Notify::new());
        let task = VisitorTask {
            idx: i,
            proxy: proxy.clone(),
            timings: t,
            book: book.clone(),
            cmds: rx,
            stop: stop.clone(),
            reload: reload.clone(),
        };
        tokio::spawn(task.run(wtx));
        visitor_ids.push(wrx);
        visitors.push(tokio::sync::Mutex::new(VisitorLink {
            proxy,
            tx,
            reload,
            next: 0,
        }));
    }
    let mut ids = Vec::new();
    for w in visitor_ids {
        ids.push(
            tokio::time::timeout(Duration::from_secs(30), w)
                .await
                .expect("visitor welcome")
                .expect("visitor task"),
        );
    }

    // Agents, each a process behind its own proxy; agent k invites
    // visitors k, k + agents, k + 2·agents, …
    let mut agents = Vec::new();
    for k in 0..cfg.agents {
        let proxy = Proxy::start(agent_addr).await;
        let mut a = AgentProc {
            idx: k,
            user: format!("chaos{k}"),
            store: dir.path().join(format!("agent{k}.sqlite3")),
            proxy,
            bin: cfg.agent_bin.clone(),
            timings: t,
            child: None,
            stdin: None,
            visitors: (0..cfg.visitors).filter(|i| i % cfg.agents == k).collect(),
            next: 0,
        };
        a.spawn(&book);
        for v in a.visitors.clone() {
            assert!(
                a.write(&format!("invite {} invite:v{v}", ids[v])).await,
                "agent {k} gone at start"
            );
        }
        agents.push(Arc::new(tokio::sync::Mutex::new(a)));
    }
    let setup_deadline = Instant::now() + Duration::from_secs(60);
    let mut reinvited_at = Instant::now();
    while lock(&book).conv_of.len() < cfg.visitors {
        assert!(
            Instant::now() < setup_deadline,
            "invites not done: {:?}",
            lock(&book).conv_of
        );
        // On a cluster the agent's node may not have heard of a visitor on
        // another node yet (presence crosses the bus), and refuses the
        // invite: invite again the ones still without a chat.
        let refused = lock(&book).agent_rejects > 0;
        if nodes.is_some() && refused && reinvited_at.elapsed() > Duration::from_secs(2) {
            reinvited_at = Instant::now();
            lock(&book).agent_rejects = 0;
            for a in &agents {
                let mut a = a.lock().await;
                for v in a.visitors.clone() {
                    if !lock(&book).conv_of.contains_key(&v) {
                        let _ = a.write(&format!("invite {} invite:v{v}", ids[v])).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut visitor_proxies = Vec::new();
    for v in &visitors {
        visitor_proxies.push(v.lock().await.proxy.clone());
    }
    let mut agent_proxies = Vec::new();
    for a in &agents {
        agent_proxies.push(a.lock().await.proxy.clone());
    }
    let world = Arc::new(World {
        visitor_proxies,
        agent_proxies,
        book: book.clone(),
        rig: Arc::new(Mutex::new(rig)),
        cluster: Mutex::new(ClusterFigures::default()),
        visitors,
        agents,
        busy: Mutex::new(HashSet::new()),
        timings: t,
        verbose: cfg.verbose,
        server_recovery: Mutex::new(Vec::new()),
        server_link_recovery: Mutex::new((Vec::new(), 0, Vec::new())),
        agent_recovery: Mutex::new(Vec::new()),
        fault_log: Mutex::new((HashMap::new(), Vec::new())),
        started,
    });

    // The fault plan: kills and link faults, shuffled, evenly spaced over
    // the load phase.
    let mut plan: Vec<Fault> = Vec::new();
    if nodes.is_none() {
        plan.extend(std::iter::repeat_n(Fault::ServerKill, cfg.server_kills));
    }
    plan.extend(std::iter::repeat_n(Fault::AgentKill, cfg.agent_kills));
    for i in 0..cfg.link_faults {
        plan.push(LINK_FAULTS[i % LINK_FAULTS.len()]);
    }
    {
        let mut rng = rand::rng();
        for i in (1..plan.len()).rev() {
            let j = rng.random_range(0..=i);
            plan.swap(i, j);
        }
    }
    let load_secs = cfg.messages as f64 / cfg.rate;
    let gap = Duration::from_secs_f64(load_secs / (plan.len() as f64 + 1.0));
    let mut counts: HashMap<&'static str, usize> = HashMap::new();

    let load_started = Instant::now();
    let faults_world = world.clone();
    let fault_task = tokio::spawn(async move {
        let w = faults_world;
        let mut applied: Vec<Fault> = Vec::new();
        let mut tasks = Vec::new();
        for fault in plan {
            tokio::time::sleep(gap).await;
            if Instant::now() > hard_stop {
                break;
            }
            match fault {
                Fault::ServerKill => {
                    // The kill and restart are inline; the wait for every
                    // link to come back runs beside the next faults.
                    tasks.push(w.clone().server_kill().await);
                }
                Fault::AgentKill => {
                    let k = loop {
                        let k = rand::rng().random_range(0..w.agents.len());
                        if w.claim(&format!("a{k}")) {
                            break Some(k);
                        }
                        if Instant::now() > hard_stop {
                            break None;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    let Some(k) = k else { break };
                    tasks.push(tokio::spawn(w.clone().agent_kill(k)));
                }
                f => {
                    let visitors_only = f == Fault::Reload;
                    let link = loop {
                        if let Some(l) = w.free_link(visitors_only)
                            && w.claim(&l)
                        {
                            break Some(l);
                        }
                        if Instant::now() > hard_stop {
                            break None;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    let Some(link) = link else { break };
                    tasks.push(tokio::spawn(w.clone().link_fault(f, link)));
                }
            }
            applied.push(fault);
        }
        for t in tasks {
            let _ = t.await;
        }
        applied
    });

    // A cluster's own faults, in turn: node kill, Redis outage, PostgreSQL
    // restart, node kill, …, evenly spread, each over before the next.
    let mut infra: Vec<Fault> = Vec::new();
    if nodes.is_some() {
        let mut left = [cfg.server_kills, cfg.redis_outages, cfg.pg_restarts];
        while left.iter().any(|n| *n > 0) {
            for (n, f) in
                left.iter_mut()
                    .zip([Fault::ServerKill, Fault::RedisOutage, Fault::PgRestart])
            {
                if *n > 0 {
                    *n -= 1;
                    infra.push(f);
                }
            }
        }
    }
    let infra_gap = Duration::from_secs_f64(load_secs / (infra.len() as f64 + 1.0));
    let infra_task = tokio::spawn({
        let w = world.clone();
        let (n, redis_down, pg_down) = (nodes.unwrap_or(1), cfg.redis_down, cfg.pg_down);
        async move {
            let mut applied = Vec::new();
            let (mut redis, mut pg) = (0, 0);
            for (i, fault) in infra.into_iter().enumerate() {
                let at = load_started + infra_gap * u32::try_from(i + 1).unwrap_or(u32::MAX);
                tokio::time::sleep_until(at.into()).await;
                if Instant::now() > hard_stop {
                    break;
                }
                match fault {
                    Fault::ServerKill => w.clone().node_kill(n).await,
                    Fault::RedisOutage => {
                        w.clone().redis_outage(redis, redis_down).await;
                        redis += 1;
                    }
                    _ => {
                        w.clone().pg_restart(pg, pg_down).await;
                        pg += 1;
                    }
                }
                applied.push(fault);
            }
            applied
        }
    });

    // The load: senders picked at random, at `rate` per second overall.
    let per = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut next_at = tokio::time::Instant::now();
    let mut sent = 0usize;
    while sent < cfg.messages && Instant::now() < hard_stop {
        next_at += per;
        tokio::time::sleep_until(next_at).await;
        let pick = rand::rng().random_range(0..cfg.visitors + cfg.agents);
        if pick < cfg.visitors {
            let mut v = world.visitors[pick].lock().await;
            let stream = format!("v{pick}");
            let owner = pick % cfg.agents;
            let body = format!("{stream}#{}", v.next);
            v.next += 1;
            {
                let mut b = lock(&book);
                b.sent(&stream, &format!("a{owner}<v{pick}"), &body);
                b.from_visitors += 1;
            }
            if v.tx.send(body).is_ok() {
                sent += 1;
            }
        } else {
            let k = pick - cfg.visitors;
            // Never wait behind a kill in progress.
            let Ok(mut a) = world.agents[k].try_lock() else {
                continue;
            };
            if send_from_agent(&book, &mut a).await {
                sent += 1;
            }
        }
    }
    let mut applied = fault_task.await.unwrap_or_default();
    applied.extend(infra_task.await.unwrap_or_default());
    let load_phase = load_started.elapsed();
    for f in &applied {
        *counts.entry(f.name()).or_insert(0) += 1;
    }

    // Drain: every link healthy, wait for everything acked to arrive.
    for v in &world.visitors {
        v.lock().await.proxy.heal();
    }
    for a in &world.agents {
        a.lock().await.proxy.heal();
    }
    let drain_started = Instant::now();
    let drain_deadline = drain_started + cfg.drain_limit;
    let mut agent_stores = Vec::new();
    for a in &world.agents {
        let a = a.lock().await;
        agent_stores.push((a.store.clone(), a.visitors.clone()));
    }
    let mut last_store_read = Instant::now();
    loop {
        // An agent core drops updates (and says `resync`) when its reader
        // lags, e.g. during a big replay: the store is the record, so
        // count what is in the stores as delivered too (WAL allows reading
        // while the process writes).
        if last_store_read.elapsed() >= Duration::from_secs(2) {
            last_store_read = Instant::now();
            let mut stored = Vec::new();
            for (path, visitors) in &agent_stores {
                let Ok(store) = holdfast_client::Store::open(path) else {
                    continue;
                };
                let convs: Vec<u64> = {
                    let b = lock(&book);
                    visitors
                        .iter()
                        .filter_map(|v| b.conv_of.get(v).copied())
                        .collect()
                };
                for c in convs {
                    if let Ok(msgs) = store.messages_page(c, None, 10_000_000) {
                        stored.extend(msgs.into_iter().map(|m| m.body));
                    }
                }
            }
            let mut b = lock(&book);
            for body in stored {
                // Only visitor messages: the agent's own are in its store too.
                if b.receiver_of.get(&body).is_some_and(|r| r.starts_with('a')) {
                    b.delivered.insert(body);
                }
            }
        }
        // Counted from the book: a visitor task's own count went stale
        // while it reconnected, so a message queued for it then was not
        // seen, the drain ended at once and its ack came after the agents
        // had stopped (CI: drain 0.0 s, undrained 1, and lost 1 or 0).
        let (undelivered, pending, agents_done) = {
            let b = lock(&book);
            (b.undelivered(), b.visitor_unacked(), b.agent_unacked() == 0)
        };
        if undelivered == 0
            && pending == 0
            && (agents_done || drain_started.elapsed() >= AGENT_ACK_GRACE)
        {
            break;
        }
        if Instant::now() > drain_deadline {
            world.log(&format!(
                "drain limit: {undelivered} undelivered, {pending} in visitor outboxes"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain = drain_started.elapsed();

    // Stop everyone; read what each agent applied from its store.
    for a in &world.agents {
        a.lock().await.shutdown().await;
    }
    stop.cancel();
    let mut rep = ChaosReport::default();
    let mut stores = Vec::new();
    for a in &world.agents {
        let a = a.lock().await;
        stores.push((a.idx, a.store.clone(), a.visitors.clone()));
    }
    {
        let mut b = lock(&book);
        for (idx, path, visitors) in &stores {
            let store = holdfast_client::Store::open(path).expect("open agent store");
            for v in visitors {
                let Some(conv) = b.conv_of.get(v).copied() else {
                    continue;
                };
                let receiver = format!("a{idx}<v{v}");
                let msgs = store
                    .messages_page(conv, None, 10_000_000)
                    .expect("read agent store");
                for m in msgs {
                    if matches!(m.author, Author::Visitor { .. }) {
                        b.checker.received(&receiver, &m.body);
                        // Stored by the agent before it stopped: delivered,
                        // even if no line said so before the drain ended.
                        if b.receiver_of.get(&m.body) == Some(&receiver) {
                            b.delivered.insert(m.body.clone());
                        }
                    }
                }
            }
        }
        let expect: HashSet<(String, String)> = b
            .receiver_of
            .iter()
            .map(|(body, r)| {
                let stream = body.split('#').next().unwrap_or("").to_string();
                (r.clone(), stream)
            })
            .collect();
        let pairs: Vec<(&str, &str)> = expect
            .iter()
            .map(|(r, s)| (r.as_str(), s.as_str()))
            .collect();
        rep.checker = b.checker.report(&pairs);
        rep.shown_twice = b
            .shown
            .values()
            .map(|n| (*n as usize).saturating_sub(1))
            .sum();
        rep.commit_order_violations = b.commit_order_violations;
        rep.snapshots = b.snapshots;
        rep.undrained = b.undelivered();
        rep.agent_dead = Spread::of(&b.agent_dead);
        rep.visitor_dead = Spread::of(&b.visitor_dead);
        rep.blackholes_unnoticed = b.blackholes_unnoticed;
        rep.backlog = Spread::of(&b.backlog);
        rep.visitor_reconnects = b.visitor_reconnects;
        rep.agent_disconnects = b.agent_disconnects;
        rep.agent_rejects = b.agent_rejects;
        rep.visitor_errors = b.visitor_errors.clone();
        rep.from_visitors = b.from_visitors;
        rep.from_agents = b.from_agents;
    }
    rep.server_recovery = Spread::of(
        &world
            .server_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    {
        let r = world
            .server_link_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        rep.server_link_recovery = Spread::of(&r.0);
        rep.server_links_left_out = r.1;
        rep.server_all_live_any_faults = Spread::of(&r.2);
    }
    rep.agent_recovery = Spread::of(
        &world
            .agent_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let mut faults: Vec<(&'static str, usize)> = counts.into_iter().collect();
    faults.sort();
    rep.total_faults = faults.iter().map(|(_, n)| n).sum();
    rep.faults = faults;
    rep.load_phase = load_phase;
    rep.drain = drain;
    if let (Some(stats), Some(n)) = (stats, nodes) {
        rep.cluster = Some(world.cluster_report(stats, n).await);
    }
    {
        let rig = world.rig.clone();
        let _ = tokio::task::spawn_blocking(move || {
            rig.lock().unwrap_or_else(|e| e.into_inner()).terminate();
        })
        .await;
    }
    for v in &world.visitors {
        v.lock().await.proxy.stop();
    }
    for a in &world.agents {
        a.lock().await.proxy.stop();
    }
    rep.elapsed = started.elapsed();
    rep
}
