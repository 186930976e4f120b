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

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{Author, Seq};
use holdfast_protocol::backoff::{Backoff, BackoffConfig};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{Sender, VisitorEvent, VisitorIn, VisitorOut};
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::checker::{Checker, Report, SendOutcome};
use crate::proxy::Proxy;
use crate::server::{PASSWORD, ServerProcess, seed};
use crate::visitor::{hello, new_id};

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

    fn is_real(&self) -> bool {
        self.heartbeat >= Duration::from_secs(3)
    }
}

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub visitors: usize,
    pub agents: usize,
    /// Messages to send, both directions together.
    pub messages: usize,
    /// Link faults (everything but process kills).
    pub link_faults: usize,
    pub server_kills: usize,
    pub agent_kills: usize,
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
        write!(
            f,
            "time: total {:.1}s, load {:.1}s, drain {:.1}s",
            self.elapsed.as_secs_f64(),
            self.load_phase.as_secs_f64(),
            self.drain.as_secs_f64()
        )
    }
}

// ---------------------------------------------------------------- the book

/// A wait for a link's backlog after it was restored.
#[derive(Debug)]
struct Probe {
    since: Instant,
    pending: HashSet<String>,
}

/// Everything recorded during a run, shared by all tasks.
#[derive(Debug, Default)]
struct Book {
    checker: Checker,
    /// body -> the receiver that must apply it.
    receiver_of: HashMap<String, String>,
    acked: HashSet<String>,
    delivered: HashSet<String>,
    /// How often each agent showed each visitor message (stdout).
    shown: HashMap<String, u32>,
    /// Last server message id per receiver, for the commit-order check.
    last_msg_id: HashMap<String, u64>,
    commit_order_violations: usize,
    snapshots: usize,
    probes: Vec<Probe>,
    backlog: Vec<Duration>,
    /// link -> when its blackhole started (cleared on detection or heal).
    blackhole_at: HashMap<String, Instant>,
    agent_dead: Vec<Duration>,
    visitor_dead: Vec<Duration>,
    blackholes_unnoticed: usize,
    /// agent index -> connection state name.
    agent_state: HashMap<usize, String>,
    visitor_live: HashMap<usize, bool>,
    /// Link -> how many times it has become live: a link is back after a
    /// server kill only on a connection made after the kill.
    connections: HashMap<String, u64>,
    visitor_reconnects: usize,
    agent_disconnects: usize,
    agent_rejects: usize,
    visitor_errors: Vec<String>,
    /// Invite bookkeeping during setup: client id -> visitor index.
    invite_ids: HashMap<String, usize>,
    conv_of: HashMap<usize, u64>,
    from_visitors: usize,
    from_agents: usize,
}

impl Book {
    fn sent(&mut self, stream: &str, receiver: &str, body: &str) {
        self.checker.sent(stream, body, SendOutcome::Unknown);
        self.receiver_of
            .insert(body.to_string(), receiver.to_string());
    }

    fn acked(&mut self, body: &str) {
        if self.receiver_of.contains_key(body) {
            self.checker.acked(body);
            self.acked.insert(body.to_string());
        }
    }

    /// A receiver applied `body`, committed as server message `msg_id`.
    fn applied(&mut self, receiver: &str, body: &str, msg_id: u64) {
        let last = self.last_msg_id.entry(receiver.to_string()).or_insert(0);
        if msg_id < *last {
            self.commit_order_violations += 1;
        }
        *last = (*last).max(msg_id);
        if self.receiver_of.get(body).is_some_and(|r| r == receiver) {
            self.delivered.insert(body.to_string());
        }
        let now = Instant::now();
        let mut done = Vec::new();
        for (i, p) in self.probes.iter_mut().enumerate() {
            if p.pending.remove(body) && p.pending.is_empty() {
                done.push(i);
                self.backlog.push(now - p.since);
            }
        }
        for i in done.into_iter().rev() {
            self.probes.remove(i);
        }
    }

    /// Start waiting for everything acked for `receivers` and not delivered.
    fn probe(&mut self, receivers: &HashSet<String>) {
        let pending: HashSet<String> = self
            .acked
            .iter()
            .filter(|b| !self.delivered.contains(*b))
            .filter(|b| {
                self.receiver_of
                    .get(*b)
                    .is_some_and(|r| receivers.contains(r))
            })
            .cloned()
            .collect();
        if !pending.is_empty() {
            self.probes.push(Probe {
                since: Instant::now(),
                pending,
            });
        }
    }

    fn undelivered(&self) -> usize {
        self.acked
            .iter()
            .filter(|b| !self.delivered.contains(*b))
            .count()
    }

    fn link_dead(&mut self, link: &str, agent: bool) {
        if let Some(t) = self.blackhole_at.remove(link) {
            let d = t.elapsed();
            if agent {
                self.agent_dead.push(d);
            } else {
                self.visitor_dead.push(d);
            }
        }
    }
}

type SharedBook = Arc<Mutex<Book>>;

fn lock(b: &SharedBook) -> std::sync::MutexGuard<'_, Book> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------- visitors

/// A widget-like visitor: a durable outbox, a cursor, its own heartbeat.
struct VisitorTask {
    idx: usize,
    proxy: Proxy,
    timings: Timings,
    book: SharedBook,
    cmds: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
    /// Kill the current connection (a page reload).
    reload: Arc<tokio::sync::Notify>,
    pending: Arc<Mutex<usize>>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl VisitorTask {
    fn name(&self) -> String {
        format!("v{}", self.idx)
    }

    async fn run(mut self, welcome: tokio::sync::oneshot::Sender<String>) {
        let mut welcome = Some(welcome);
        let mut token: Option<String> = None;
        let mut cursor: Seq = 0;
        let mut outbox: VecDeque<(MsgId, String)> = VecDeque::new();
        let mut backoff = Backoff::new(
            BackoffConfig {
                base: self.timings.backoff_base,
                cap: self.timings.backoff_cap,
            },
            rand::rng().random(),
        );
        let mut first = true;
        while !self.stop.is_cancelled() {
            if !first {
                let d = backoff.next_delay();
                tokio::select! {
                    () = self.stop.cancelled() => break,
                    () = tokio::time::sleep(d) => {}
                }
            }
            first = false;
            let Some((mut ws, visitor_id, new_token)) = self.connect(token.clone(), cursor).await
            else {
                continue;
            };
            token = Some(new_token);
            if let Some(w) = welcome.take() {
                let _ = w.send(visitor_id);
            } else {
                lock(&self.book).visitor_reconnects += 1;
            }
            {
                let mut b = lock(&self.book);
                b.visitor_live.insert(self.idx, true);
                *b.connections.entry(self.name()).or_insert(0) += 1;
            }
            backoff.reset();
            self.session(&mut ws, &mut cursor, &mut outbox).await;
            lock(&self.book).visitor_live.insert(self.idx, false);
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
        }
    }

    /// Open a WebSocket through the proxy and say hello; None on any failure.
    async fn connect(&self, token: Option<String>, cursor: Seq) -> Option<(Ws, String, String)> {
        let limit = self.timings.dead_after;
        let url = format!("ws://{}/v1/visitor/ws", self.proxy.addr);
        let (mut ws, _) = tokio::time::timeout(limit, tokio_tungstenite::connect_async(url))
            .await
            .ok()?
            .ok()?;
        let after = token.as_ref().map(|_| cursor);
        let h = hello("acme", token.clone(), after, "https://shop.example/chaos");
        let text = serde_json::to_string(&h).ok()?;
        tokio::time::timeout(limit, ws.send(Message::Text(text.into())))
            .await
            .ok()?
            .ok()?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = tokio::time::timeout_at(deadline, ws.next())
                .await
                .ok()??
                .ok()?;
            let Message::Text(t) = m else { continue };
            let out: VisitorOut = serde_json::from_str(&t).ok()?;
            match out {
                VisitorOut::Welcome {
                    visitor,
                    token: tok,
                    resumed,
                    ..
                } => {
                    if token.is_some() && !resumed {
                        lock(&self.book).snapshots += 1;
                    }
                    return Some((ws, visitor, tok));
                }
                VisitorOut::Error { code, message, .. } => {
                    lock(&self.book)
                        .visitor_errors
                        .push(format!("{}: hello refused: {code} {message}", self.name()));
                    return None;
                }
                _ => continue,
            }
        }
    }

    async fn send(ws: &mut Ws, m: &VisitorIn) -> bool {
        let Ok(text) = serde_json::to_string(m) else {
            return false;
        };
        ws.send(Message::Text(text.into())).await.is_ok()
    }

    /// One connection: resend the outbox, then pump until the link fails.
    async fn session(
        &mut self,
        ws: &mut Ws,
        cursor: &mut Seq,
        outbox: &mut VecDeque<(MsgId, String)>,
    ) {
        let me = self.name();
        for (id, body) in outbox.iter() {
            let m = VisitorIn::Send {
                id: *id,
                body: body.clone(),
            };
            if !Self::send(ws, &m).await {
                return;
            }
        }
        let mut last_rx = Instant::now();
        let mut last_tx = Instant::now();
        let tick = self.timings.heartbeat / 4;
        let reload = self.reload.clone();
        loop {
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) =
                outbox.len() + self.cmds.len();
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = reload.notified() => return,
                cmd = self.cmds.recv() => {
                    let Some(body) = cmd else { return };
                    let id = new_id();
                    outbox.push_back((id, body.clone()));
                    if !Self::send(ws, &VisitorIn::Send { id, body }).await {
                        return;
                    }
                    last_tx = Instant::now();
                }
                m = ws.next() => {
                    let text = match m {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    };
                    last_rx = Instant::now();
                    let Ok(out) = serde_json::from_str::<VisitorOut>(&text) else {
                        lock(&self.book).visitor_errors.push(format!("{me}: bad json from server"));
                        return;
                    };
                    match out {
                        VisitorOut::Event { seq, event } => {
                            if seq <= *cursor {
                                continue;
                            }
                            if seq > *cursor + 1 {
                                // A gap: resume from the cursor on a new connection.
                                return;
                            }
                            *cursor = seq;
                            if let VisitorEvent::Message(m) = &event
                                && m.from == Sender::Agent
                                && !m.body.starts_with("invite:")
                            {
                                let mut b = lock(&self.book);
                                b.checker.received(&me, &m.body);
                                b.applied(&me, &m.body, m.message);
                            }
                            if !Self::send(ws, &VisitorIn::Ack { seq }).await {
                                return;
                            }
                            last_tx = Instant::now();
                        }
                        VisitorOut::Ack { id, .. } => {
                            if let Some(pos) = outbox.iter().position(|(i, _)| *i == id) {
                                let (_, body) = outbox.remove(pos).unwrap_or_default();
                                lock(&self.book).acked(&body);
                            }
                        }
                        VisitorOut::Error { code, message, id, .. } => {
                            lock(&self.book).visitor_errors.push(format!("{me}: {code} {message}"));
                            if id.is_some() {
                                // Not stored: reconnect, which resends it.
                                return;
                            }
                        }
                        VisitorOut::Snapshot { seq, .. } => {
                            lock(&self.book).snapshots += 1;
                            *cursor = seq;
                        }
                        VisitorOut::GoingAway { .. } => return,
                        _ => {}
                    }
                }
                () = tokio::time::sleep(tick) => {}
            }
            if last_rx.elapsed() >= self.timings.dead_after {
                lock(&self.book).link_dead(&me, false);
                return;
            }
            if last_tx.elapsed() >= self.timings.heartbeat {
                if !Self::send(ws, &VisitorIn::Ping).await {
                    return;
                }
                last_tx = Instant::now();
            }
        }
    }
}

/// The harness side of a visitor.
struct VisitorLink {
    proxy: Proxy,
    tx: mpsc::UnboundedSender<String>,
    reload: Arc<tokio::sync::Notify>,
    pending: Arc<Mutex<usize>>,
    next: usize,
}

// ---------------------------------------------------------------- agents

/// One agent: a `holdfast-chaos-agent` process on a store that outlives it.
struct AgentProc {
    idx: usize,
    user: String,
    store: PathBuf,
    proxy: Proxy,
    bin: PathBuf,
    timings: Timings,
    child: Option<tokio::process::Child>,
    stdin: Option<tokio::process::ChildStdin>,
    visitors: Vec<usize>,
    next: usize,
}

impl AgentProc {
    fn spawn(&mut self, book: &SharedBook) {
        let t = self.timings;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--server")
            .arg(self.proxy.addr.to_string())
            .arg("--user")
            .arg(&self.user)
            .arg("--store")
            .arg(&self.store)
            .arg("--heartbeat-ms")
            .arg(t.heartbeat.as_millis().to_string())
            .arg("--dead-after-ms")
            .arg(t.dead_after.as_millis().to_string())
            .arg("--backoff-base-ms")
            .arg(t.backoff_base.as_millis().to_string())
            .arg("--backoff-cap-ms")
            .arg(t.backoff_cap.as_millis().to_string())
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // HOLDFAST_CHAOS_AGENT_LOGS=DIR keeps each agent's own log (why it
        // backed off, what the server refused) in DIR/agentK.log, appended
        // across restarts, for finding out why a link came back late.
        let log = std::env::var_os("HOLDFAST_CHAOS_AGENT_LOGS").and_then(|d| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&d).join(format!("agent{}.log", self.idx)))
                .ok()
        });
        match log {
            Some(f) => {
                cmd.env("HOLDFAST_LOG", "info").stderr(Stdio::from(f));
            }
            None => {
                cmd.env("HOLDFAST_LOG", "error").stderr(Stdio::null());
            }
        }
        let mut child = cmd.spawn().expect("spawn holdfast-chaos-agent");
        self.stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("agent stdout");
        lock(book).agent_state.insert(self.idx, "starting".into());
        tokio::spawn(read_agent(self.idx, stdout, book.clone()));
        self.child = Some(child);
    }

    async fn write(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        stdin.write_all(line.as_bytes()).await.is_ok() && stdin.write_all(b"\n").await.is_ok()
    }

    /// SIGKILL, no goodbye.
    async fn kill9(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Graceful stop; SIGKILL after 10 s.
    async fn shutdown(&mut self) {
        let _ = self.write("shutdown").await;
        self.stdin = None;
        if let Some(mut c) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
        {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

async fn read_agent(idx: usize, stdout: tokio::process::ChildStdout, book: SharedBook) {
    let mut lines = BufReader::new(stdout).lines();
    let link = format!("a{idx}");
    while let Ok(Some(line)) = lines.next_line().await {
        let mut p = line.splitn(2, ' ');
        let (kind, rest) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
        let mut b = lock(&book);
        match kind {
            "ok" => {
                let mut q = rest.split(' ');
                let body = q.next().unwrap_or("");
                if let (Some(id), Some(v)) = (
                    q.next(),
                    body.strip_prefix("invite:v")
                        .and_then(|v| v.parse::<usize>().ok()),
                ) {
                    b.invite_ids.insert(id.to_string(), v);
                } else {
                    b.acked(body);
                }
            }
            "done" => {
                let mut q = rest.split(' ');
                if let (Some(id), Some(conv)) = (q.next(), q.next())
                    && let Some(v) = b.invite_ids.get(id).copied()
                    && let Ok(conv) = conv.parse::<u64>()
                {
                    b.conv_of.insert(v, conv);
                }
            }
            "rejected" => b.agent_rejects += 1,
            "msg" => {
                let mut q = rest.splitn(3, ' ');
                let (conv, msg_id, body) = (q.next(), q.next(), q.next());
                let (Some(conv), Some(msg_id), Some(body)) = (conv, msg_id, body) else {
                    continue;
                };
                let conv: u64 = conv.parse().unwrap_or(0);
                let msg_id: u64 = msg_id.parse().unwrap_or(0);
                let v = b.conv_of.iter().find(|(_, c)| **c == conv).map(|(v, _)| *v);
                let receiver = match v {
                    Some(v) => format!("a{idx}<v{v}"),
                    None => format!("a{idx}<c{conv}"),
                };
                *b.shown.entry(body.to_string()).or_insert(0) += 1;
                b.applied(&receiver, body, msg_id);
            }
            "state" => {
                let prev = b.agent_state.insert(idx, rest.to_string());
                if rest == "live" && prev.as_deref() != Some("live") {
                    *b.connections.entry(link.clone()).or_insert(0) += 1;
                }
                if prev.as_deref() == Some("live") && rest != "live" {
                    b.agent_disconnects += 1;
                    b.link_dead(&link, true);
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- faults

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Blackhole,
    Reset,
    Slice,
    Cut,
    Latency,
    Refuse,
    Reload,
    ServerKill,
    AgentKill,
}

impl Fault {
    fn name(self) -> &'static str {
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
        }
    }
}

const LINK_FAULTS: [Fault; 7] = [
    Fault::Blackhole,
    Fault::Reset,
    Fault::Slice,
    Fault::Cut,
    Fault::Latency,
    Fault::Refuse,
    Fault::Reload,
];

/// Shared by the load, fault and drain phases.
struct World {
    book: SharedBook,
    server: Arc<Mutex<ServerProcess>>,
    visitors: Vec<tokio::sync::Mutex<VisitorLink>>,
    agents: Vec<Arc<tokio::sync::Mutex<AgentProc>>>,
    visitor_proxies: Vec<Proxy>,
    agent_proxies: Vec<Proxy>,
    /// Links with a fault in progress.
    busy: Mutex<HashSet<String>>,
    timings: Timings,
    verbose: bool,
    server_recovery: Mutex<Vec<Duration>>,
    /// Per link back after a kill; links left out; every link live at once.
    server_link_recovery: Mutex<(Vec<Duration>, usize, Vec<Duration>)>,
    agent_recovery: Mutex<Vec<Duration>>,
    started: Instant,
}

impl World {
    fn log(&self, what: &str) {
        if self.verbose {
            println!("[{:7.2}s] {what}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Every link's name: `v0`… for visitors, `a0`… for agents.
    fn links(&self) -> Vec<String> {
        (0..self.visitors.len())
            .map(|i| format!("v{i}"))
            .chain((0..self.agents.len()).map(|k| format!("a{k}")))
            .collect()
    }

    fn link_live(&self, b: &Book, link: &str) -> bool {
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

    fn all_live(&self) -> bool {
        let b = lock(&self.book);
        (0..self.agents.len()).all(|k| b.agent_state.get(&k).is_some_and(|s| s == "live"))
            && (0..self.visitors.len()).all(|i| b.visitor_live.get(&i).copied().unwrap_or(false))
    }

    fn receivers_of(&self, link: &str) -> HashSet<String> {
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

    fn claim(&self, link: &str) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(link.to_string())
    }

    fn release(&self, link: &str) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(link);
    }

    /// A random link with no fault in progress.
    fn free_link(&self, visitors_only: bool) -> Option<String> {
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

    fn scaled(&self, fast_ms: (u64, u64)) -> Duration {
        let k = if self.timings.is_real() { 5 } else { 1 };
        Duration::from_millis(rand::rng().random_range(fast_ms.0 * k..=fast_ms.1 * k))
    }

    fn link_proxy(&self, link: &str) -> Proxy {
        let (kind, n) = link.split_at(1);
        let n: usize = n.parse().unwrap_or(0);
        if kind == "v" {
            self.visitor_proxies[n].clone()
        } else {
            self.agent_proxies[n].clone()
        }
    }

    /// Apply one link fault and heal it; returns when healed.
    async fn link_fault(self: Arc<Self>, fault: Fault, link: String) {
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
            Fault::ServerKill | Fault::AgentKill => {}
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
    async fn server_kill(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
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
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = server.lock().unwrap_or_else(|e| e.into_inner());
            s.kill9();
            s.spawn();
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
    async fn agent_kill(self: Arc<Self>, k: usize) {
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

/// Send the next message of agent `a` to one of its visitors.
async fn send_from_agent(book: &SharedBook, a: &mut AgentProc) -> bool {
    if a.visitors.is_empty() || a.stdin.is_none() {
        return false;
    }
    let v = a.visitors[a.next % a.visitors.len()];
    let conv = match lock(book).conv_of.get(&v) {
        Some(c) => *c,
        None => return false,
    };
    let stream = format!("a{}>v{v}", a.idx);
    let body = format!("{stream}#{}", a.next);
    a.next += 1;
    {
        let mut b = lock(book);
        b.sent(&stream, &format!("v{v}"), &body);
        b.from_agents += 1;
    }
    a.write(&format!("send {conv} {body}")).await
}

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
    let data = dir.path().join("server");
    seed(&data);
    {
        let conn = holdfast_server::store::open_connection(&data).expect("open db");
        for k in 0..cfg.agents {
            holdfast_server::admin::add_agent(
                &conn,
                "acme",
                &format!("chaos{k}"),
                &format!("Chaos Agent {k}"),
                PASSWORD,
                u32::try_from(cfg.visitors + 10).unwrap_or(100),
                holdfast_protocol::agent::Role::Agent,
            )
            .expect("add agent");
        }
    }
    let conf = write_config(dir.path());
    let hb = t.heartbeat.as_millis().to_string();
    let dead = t.dead_after.as_millis().to_string();
    let conf_s = conf.to_string_lossy().to_string();
    let args = [
        "--config",
        conf_s.as_str(),
        "--heartbeat-ms",
        hb.as_str(),
        "--dead-after-ms",
        dead.as_str(),
    ];
    let server = tokio::task::spawn_blocking({
        let data = data.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            ServerProcess::start(&data, &a)
        }
    })
    .await
    .expect("server start");
    let (http, agent_addr) = (server.http, server.agent);
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
        let pending = Arc::new(Mutex::new(0));
        let task = VisitorTask {
            idx: i,
            proxy: proxy.clone(),
            timings: t,
            book: book.clone(),
            cmds: rx,
            stop: stop.clone(),
            reload: reload.clone(),
            pending: pending.clone(),
        };
        tokio::spawn(task.run(wtx));
        visitor_ids.push(wrx);
        visitors.push(tokio::sync::Mutex::new(VisitorLink {
            proxy,
            tx,
            reload,
            pending,
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
    while lock(&book).conv_of.len() < cfg.visitors {
        assert!(
            Instant::now() < setup_deadline,
            "invites not done: {:?}",
            lock(&book).conv_of
        );
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
        server: Arc::new(Mutex::new(server)),
        visitors,
        agents,
        busy: Mutex::new(HashSet::new()),
        timings: t,
        verbose: cfg.verbose,
        server_recovery: Mutex::new(Vec::new()),
        server_link_recovery: Mutex::new((Vec::new(), 0, Vec::new())),
        agent_recovery: Mutex::new(Vec::new()),
        started,
    });

    // The fault plan: kills and link faults, shuffled, evenly spaced over
    // the load phase.
    let mut plan: Vec<Fault> = Vec::new();
    plan.extend(std::iter::repeat_n(Fault::ServerKill, cfg.server_kills));
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
    let applied = fault_task.await.unwrap_or_default();
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
        let undelivered = lock(&book).undelivered();
        let mut pending = 0;
        for v in &world.visitors {
            pending += *v
                .lock()
                .await
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
        }
        if undelivered == 0 && pending == 0 {
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
    {
        let server = world.server.clone();
        let _ = tokio::task::spawn_blocking(move || {
            server.lock().unwrap_or_else(|e| e.into_inner()).terminate()
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
