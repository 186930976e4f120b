//! `holdfast-load`: drive a Holdfast server (or, for comparison, a plain
//! Node `ws` server, Mosquitto or Redis Streams) with visitors and agents, timestamp every
//! message, and report latency, throughput, errors and the server's RSS and
//! CPU from `/proc` (through procfs). It targets loopback only and every run stops by itself.
//!
//! - `main` (this file): arguments, spawning the target, the `chat`, `idle`
//!   and `storm` modes, agents, child processes and the report.
//! - `shard`: one process's visitor WebSockets (up to 15,000 per process).
//! - `mqtt`: the chat workload over MQTT QoS 1, for the Mosquitto comparison.
//! - `streams`: the chat workload over Redis Streams with an fsynced AOF,
//!   the durable peer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

mod mqtt;
mod nodes;
mod shard;
mod streams;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use holdfast_protocol::agent::{
    Action, Author, ClientMsg, ConversationId, Event, LiveEvent, ServerMsg,
};
use holdfast_tests::Reaper;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::ServerProcess;
use holdfast_tests::visitor::{http_request, new_id};
use shard::{Partial, Phase, Shard, ShardCfg, WsTarget};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Visitors and agents exchange timestamped messages at a fixed rate.
    Chat,
    /// Idle visitors connected in steps; the target's RSS at each step.
    Idle,
    /// Everyone dropped at once (RST), then reconnect, resume and resend.
    Storm,
}

#[derive(Debug, Parser)]
#[command(about = "Load generator for Holdfast and what users would pick instead (loopback only)")]
struct Args {
    #[arg(long, value_enum, default_value = "chat")]
    mode: Mode,
    /// Start a fresh Holdfast server (the release binary next to this one) on a temp dir.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: run the server on a fresh PostgreSQL (started here,
    /// fsync on, in a temp dir on the same disk as SQLite's).
    #[arg(long)]
    postgres: bool,
    /// With --spawn: start this many nodes on one PostgreSQL and one Redis.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// With --nodes: the nodes (from 0) visitors are spread over, in blocks.
    #[arg(long, value_delimiter = ',')]
    visitor_nodes: Vec<usize>,
    /// With --nodes: the nodes agents are spread over, round-robin.
    #[arg(long, value_delimiter = ',')]
    agent_nodes: Vec<usize>,
    /// HTTP addresses of existing Holdfast servers (with --agent);
    /// visitors are spread over them in blocks.
    #[arg(long, value_delimiter = ',')]
    http: Vec<SocketAddr>,
    /// Agent ports of existing servers; agents are spread round-robin.
    #[arg(long, value_delimiter = ',')]
    agent: Vec<SocketAddr>,
    /// The existing servers' admin listeners, for their counters.
    #[arg(long, value_delimiter = ',')]
    admin: Vec<SocketAddr>,
    /// PIDs of existing targets, to sample their RSS and CPU.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Idle mode against a plain Node `ws` server: the directory holding
    /// `server.js` and its installed `node_modules` (tests/bench/node-ws).
    #[arg(long)]
    spawn_node: Option<PathBuf>,
    /// Chat mode over MQTT against a freshly started Debian `mosquitto`.
    #[arg(long)]
    spawn_mosquitto: bool,
    /// Chat mode over MQTT against an existing broker.
    #[arg(long)]
    mqtt: Option<SocketAddr>,
    /// Chat mode over Redis Streams against a freshly started Debian
    /// `redis-server` whose AOF is fsynced before every reply (`appendonly
    /// yes`, `appendfsync always`): a peer that, like Holdfast, acks only
    /// what is on disk. Visitors XADD to their agent's stream; agents XREAD.
    #[arg(long)]
    spawn_redis_aof: bool,
    #[arg(long, default_value = "load")]
    site: String,
    /// Agent usernames are PREFIX-0 .. PREFIX-(M-1), password "load-pass".
    #[arg(long, default_value = "load")]
    agent_prefix: String,
    #[arg(long, default_value_t = 50)]
    visitors: usize,
    #[arg(long, default_value_t = 5)]
    agents: usize,
    /// Visitor-to-agent messages per second, in total.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Agent-to-visitor messages per second, in total.
    #[arg(long, default_value_t = 0.0)]
    agent_rate: f64,
    /// Seconds of load after everyone is connected.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Idle mode: visitor counts to measure at, in order.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0, 1_000, 5_000, 10_000, 15_000])]
    steps: Vec<usize>,
    /// Idle mode: seconds to let each step settle before sampling.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Switch group commit off in the spawned server (to measure what it buys).
    #[arg(long)]
    no_group_commit: bool,
    /// Agents reconnect with their password, not the resume ticket the
    /// server gave them, as clients before tickets did (to measure what
    /// tickets buy in a storm).
    #[arg(long)]
    no_tickets: bool,
    /// Pin the spawned target to these CPUs (taskset list, e.g. "0"). Run the
    /// generator itself under `taskset -c 1` so the two do not share a core.
    #[arg(long)]
    pin_server: Option<String>,
    /// Connections per generator process; more visitors start child
    /// processes (the open-file limit here is 20,000 per process).
    #[arg(long, default_value_t = 15_000)]
    per_process: usize,
    #[arg(long, hide = true)]
    child: bool,
    #[arg(long, hide = true, default_value_t = 0)]
    offset: usize,
    #[arg(long, hide = true)]
    plain_ws: bool,
    #[arg(long, hide = true)]
    open_chat: bool,
}

/// The send time stamped into a message body as `<prefix><ns> ...`.
pub fn stamp(body: &str, prefix: &str) -> Option<u64> {
    body.strip_prefix(prefix)?.split(' ').next()?.parse().ok()
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Nearest-rank percentile of every sample (sorted). Not hdrhistogram: the
/// samples are all kept anyway (child processes send theirs whole in their
/// JSON `Partial`), a run holds at most a few hundred thousand, and these
/// figures are exact where a histogram's would be rounded to its buckets.
fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn lat_json(sorted: &[u64]) -> serde_json::Value {
    serde_json::json!({
        "count": sorted.len(),
        "p50": pct(sorted, 0.5), "p90": pct(sorted, 0.9), "p99": pct(sorted, 0.99),
        "p999": pct(sorted, 0.999), "max": sorted.last().copied().unwrap_or(0),
    })
}

fn lat_line(name: &str, sorted: &[u64]) {
    let ms = |p| pct(sorted, p) as f64 / 1000.0;
    println!(
        "  {name:<16} n {:>8}  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  p99.9 {:>8.2} ms",
        sorted.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999)
    );
}

/// One direction of a chat run: what was sent, acked, and delivered with
/// which latencies (sorted, µs).
#[derive(Debug)]
pub struct Flow<'a> {
    pub sent: u64,
    pub acked: u64,
    pub lat: &'a [u64],
}

/// Print both directions (counts, then latencies) and return their JSON.
pub fn report_flows(
    v2a: &Flow<'_>,
    a2v: &Flow<'_>,
    elapsed: f64,
) -> (serde_json::Value, serde_json::Value) {
    let flows = [("visitor->agent", v2a), ("agent->visitor", a2v)];
    for (name, f) in flows {
        println!(
            "  {name}  sent {}  acked {}  delivered {}  = {:.0} msg/s",
            f.sent,
            f.acked,
            f.lat.len(),
            f.lat.len() as f64 / elapsed
        );
    }
    for (name, f) in flows {
        lat_line(name, f.lat);
    }
    let json = |f: &Flow<'_>| {
        serde_json::json!({
            "sent": f.sent, "acked": f.acked, "delivered": f.lat.len(),
            "per_s": f.lat.len() as f64 / elapsed, "latency_us": lat_json(f.lat),
        })
    };
    (json(v2a), json(a2v))
}

/// (RSS in KB, utime + stime in clock ticks) of a process.
pub fn proc_stat(pid: u32) -> Option<(u64, u64)> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let rss_kb = p.status().ok()?.vmrss?;
    let stat = p.stat().ok()?;
    Some((rss_kb, stat.utime + stat.stime))
}

/// Summed (RSS in KB, CPU ticks) of several processes: the nodes of a
/// cluster count as one target. `None` when none of them can be read.
pub fn procs_stat(pids: &[u32]) -> Option<(u64, u64)> {
    pids.iter()
        .filter_map(|&p| proc_stat(p))
        .reduce(|a, b| (a.0 + b.0, a.1 + b.1))
}

/// Nanoseconds each thread of these processes has spent runnable but
/// waiting for a CPU (the second field of its schedstat), by thread id.
/// On this shared machine other tenants' work shows up here, not in the
/// target's CPU time, so a report can tell a slow target from a starved one.
pub fn runq_wait_ns(pids: &[u32]) -> Option<std::collections::HashMap<u64, u64>> {
    let mut by_tid = std::collections::HashMap::new();
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let tid = t.file_name().to_str().and_then(|s| s.parse::<u64>().ok());
            let wait = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
            if let (Some(tid), Some(w)) = (tid, wait) {
                by_tid.insert(tid, w);
            }
        }
    }
    (!by_tid.is_empty()).then_some(by_tid)
}

type Waits = Option<std::collections::HashMap<u64, u64>>;

/// Samples the target's RSS every 50 ms in the background, keeping the peak
/// (of the sum over its processes).
#[derive(Debug, Clone)]
pub struct Sampler {
    pids: Vec<u32>,
    peak_kb: Arc<AtomicU64>,
}

impl Sampler {
    pub fn start(pids: &[u32]) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(0));
        if !pids.is_empty() {
            let peak = peak_kb.clone();
            let watched = pids.to_vec();
            tokio::spawn(async move {
                loop {
                    if let Some((rss, _)) = procs_stat(&watched) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
        Self {
            pids: pids.to_vec(),
            peak_kb,
        }
    }
    /// Reset the peak to the current RSS.
    pub fn reset(&self) {
        let now = procs_stat(&self.pids).map_or(0, |s| s.0);
        self.peak_kb.store(now, Ordering::Relaxed);
    }
    pub fn peak_kb(&self) -> u64 {
        self.peak_kb.load(Ordering::Relaxed)
    }
    pub fn ticks(&self) -> Option<u64> {
        procs_stat(&self.pids).map(|s| s.1)
    }
    /// Run-queue waits so far: (the target's, this generator's).
    pub fn waits(&self) -> (Waits, Waits) {
        (
            runq_wait_ns(&self.pids),
            runq_wait_ns(&[std::process::id()]),
        )
    }
    /// Thread-seconds spent waiting for a CPU per second, in per cent, for
    /// the target and for this generator, since `w0`. Counted per thread:
    /// a thread started since counts from zero, and one that ended is left
    /// out rather than making the sum go backwards.
    pub fn wait_percent(&self, w0: (Waits, Waits), secs: f64) -> (f64, f64) {
        let w1 = self.waits();
        let pct = |a: Waits, b: Waits| match (a, b) {
            (Some(a), Some(b)) => {
                let ns: u64 = b
                    .iter()
                    .map(|(tid, w)| w.saturating_sub(a.get(tid).copied().unwrap_or(0)))
                    .sum();
                ns as f64 / 1e9 / secs * 100.0
            }
            _ => f64::NAN,
        };
        (pct(w0.0, w1.0), pct(w0.1, w1.1))
    }
    pub fn cpu_percent(t0: Option<u64>, t1: Option<u64>, secs: f64) -> f64 {
        match (t0, t1) {
            (Some(a), Some(b)) => (b - a) as f64 / procfs::ticks_per_second() as f64 / secs * 100.0,
            _ => f64::NAN,
        }
    }
}

fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(ok, "taskset -a -p -c {cpus} {pid} failed");
    Ok(())
}

async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{addr} is not listening after 10 s")
}

// ---------------------------------------------------------------- shards

/// A shard in this process or in a `--child` process.
#[allow(clippy::large_enum_variant)] // a handful per run; boxing buys nothing
enum AnyShard {
    Local(Shard, usize),
    Remote {
        size: usize,
        child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    },
}

impl AnyShard {
    fn size(&self) -> usize {
        match self {
            AnyShard::Local(_, n) | AnyShard::Remote { size: n, .. } => *n,
        }
    }

    async fn ask(&mut self, cmd: &str, expect: &str) -> anyhow::Result<String> {
        let AnyShard::Remote { stdin, lines, .. } = self else {
            anyhow::bail!("not a child shard");
        };
        stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("child did not answer {cmd}"))??
            .ok_or_else(|| anyhow::anyhow!("child exited during {cmd}"))?;
        line.strip_prefix(expect)
            .map(|r| r.trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("child answered {cmd} with {line}"))
    }

    async fn connect_upto(&mut self, k: usize) -> anyhow::Result<()> {
        match self {
            AnyShard::Local(s, _) => s.connect_upto(k).await,
            AnyShard::Remote { .. } => self
                .ask(&format!("CONNECT {k}"), "CONNECTED")
                .await
                .map(drop),
        }
    }

    async fn set_phase(&mut self, p: Phase) -> anyhow::Result<()> {
        match self {
            AnyShard::Local(s, _) => {
                s.set_phase(p);
                Ok(())
            }
            AnyShard::Remote { .. } => {
                let cmd = match p {
                    Phase::Hold => "HOLD".to_string(),
                    Phase::Send { per_visitor } => format!("SEND {per_visitor}"),
                    Phase::Quit => "QUIT".to_string(),
                    Phase::Storm { .. } => anyhow::bail!("storm runs in one process"),
                };
                self.ask(&cmd, "OK").await.map(drop)
            }
        }
    }

    async fn take(&mut self) -> anyhow::Result<Partial> {
        match self {
            AnyShard::Local(s, _) => Ok(s.take()),
            AnyShard::Remote { .. } => {
                Ok(serde_json::from_str(&self.ask("TAKE", "PARTIAL").await?)?)
            }
        }
    }

    async fn quit(self) {
        match self {
            AnyShard::Local(s, _) => s.quit(),
            AnyShard::Remote {
                mut stdin,
                mut child,
                ..
            } => {
                let _ = stdin.write_all(b"QUIT\n").await;
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }
}

/// Visitors are split into equal blocks, one per target, in order. This
/// process holds the agents and up to `per_process - agents` visitors of the
/// first block; every further `per_process` visitors of a block get a child
/// process.
fn make_shards(
    args: &Args,
    targets: &[WsTarget],
    open_chat: bool,
    rst: bool,
    total: usize,
) -> anyhow::Result<Vec<AnyShard>> {
    let mut shards = Vec::new();
    let n_targets = targets.len().max(1);
    let mut start = 0;
    for (k, target) in targets.iter().enumerate() {
        let end = total * (k + 1) / n_targets;
        let local = if k == 0 {
            (end - start).min(args.per_process.saturating_sub(args.agents))
        } else {
            0
        };
        if k == 0 {
            let cfg = ShardCfg {
                target: target.clone(),
                site: args.site.clone(),
                offset: 0,
                open_chat,
                size: args.size,
                rst,
            };
            shards.push(AnyShard::Local(Shard::new(cfg), local));
        }
        spawn_children(args, target, open_chat, start + local, end, &mut shards)?;
        start = end;
    }
    Ok(shards)
}

/// Child processes for visitors `from..to` of `target`.
fn spawn_children(
    args: &Args,
    target: &WsTarget,
    open_chat: bool,
    from: usize,
    to: usize,
    shards: &mut Vec<AnyShard>,
) -> anyhow::Result<()> {
    let mut offset = from;
    while offset < to {
        let n = (to - offset).min(args.per_process);
        let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
        cmd.args([
            "--child",
            "--http",
            &target.addr.to_string(),
            "--site",
            &args.site,
            "--offset",
            &offset.to_string(),
            "--visitors",
            &n.to_string(),
            "--size",
            &args.size.to_string(),
        ]);
        if !target.holdfast {
            cmd.arg("--plain-ws");
        }
        if open_chat {
            cmd.arg("--open-chat");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        shards.push(AnyShard::Remote {
            size: n,
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        });
        offset += n;
    }
    Ok(())
}

/// Connect the first `k` visitors overall, filling shards in order.
async fn connect_total(shards: &mut [AnyShard], k: usize) -> anyhow::Result<()> {
    let mut start = 0;
    let futs = shards.iter_mut().map(|s| {
        let n = k.saturating_sub(start).min(s.size());
        start += s.size();
        s.connect_upto(n)
    });
    for r in futures_util::future::join_all(futs).await {
        r?;
    }
    Ok(())
}

async fn phase_all(shards: &mut [AnyShard], p: Phase) -> anyhow::Result<()> {
    for s in shards.iter_mut() {
        s.set_phase(p).await?;
    }
    Ok(())
}

async fn take_all(shards: &mut [AnyShard]) -> anyhow::Result<Partial> {
    let mut total = Partial::default();
    for s in shards.iter_mut() {
        let p = s.take().await?;
        total.sent += p.sent;
        total.acked += p.acked;
        total.received += p.received;
        total.errors += p.errors;
        total.retries += p.retries;
        total.reconnects += p.reconnects;
        total.lat_us.extend(p.lat_us);
        total.resumed_us.extend(p.resumed_us);
    }
    Ok(total)
}

/// `--child`: one shard driven by line commands on stdin.
async fn child_main(args: Args) -> anyhow::Result<()> {
    let target = WsTarget {
        addr: args
            .http
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("--child needs --http"))?,
        path: if args.plain_ws {
            "/".into()
        } else {
            "/v1/visitor/ws".into()
        },
        holdfast: !args.plain_ws,
    };
    let mut shard = Shard::new(ShardCfg {
        target,
        site: args.site.clone(),
        offset: args.offset,
        open_chat: args.open_chat,
        size: args.size,
        rst: false,
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("CONNECT"), Some(k)) => match shard.connect_upto(k.parse()?).await {
                Ok(()) => println!("CONNECTED {}", shard.connected()),
                Err(e) => println!("ERROR {e}"),
            },
            (Some("SEND"), Some(r)) => {
                shard.set_phase(Phase::Send {
                    per_visitor: r.parse()?,
                });
                println!("OK");
            }
            (Some("HOLD"), _) => {
                shard.set_phase(Phase::Hold);
                println!("OK");
            }
            (Some("TAKE"), _) => println!("PARTIAL {}", serde_json::to_string(&shard.take())?),
            (Some("QUIT"), _) => break,
            _ => println!("ERROR unknown command {line}"),
        }
    }
    shard.quit();
    Ok(())
}

// ---------------------------------------------------------------- agents

#[derive(Debug, Default)]
struct AgentShared {
    received: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    /// Connections the server closed outside a storm, each resumed.
    reconnects: AtomicU64,
    opened: AtomicU64,
    lat_us: std::sync::Mutex<Vec<u64>>,
    resumed_us: std::sync::Mutex<Vec<u64>>,
    /// Storm: client ids of the messages queued while offline, and when the
    /// last one arrived (µs after the drop).
    storm_ids: std::sync::Mutex<HashSet<holdfast_protocol::ids::MsgId>>,
    storm_last_us: AtomicU64,
    /// Reconnects whose ticket was refused (or whose try with one failed);
    /// the next try uses the password.
    ticket_refused: AtomicU64,
}

struct AgentCfg {
    addr: SocketAddr,
    user: String,
    size: usize,
    rst: bool,
    tickets: bool,
}

#[allow(clippy::large_enum_variant)] // one at a time on each agent's stack
enum AStep {
    Phase(bool),
    Msg(anyhow::Result<Option<ServerMsg>>),
    Send,
    Ack,
    Heartbeat,
}

/// Log in, with the resume `ticket` when there is one (the password is
/// then not checked, as for the app); returns the ticket to use next time.
async fn agent_login(
    cfg: &AgentCfg,
    device: holdfast_protocol::ids::MsgId,
    resume: Option<u64>,
    ticket: Option<&[u8]>,
) -> anyhow::Result<(RawAgent, Option<Vec<u8>>)> {
    let mut a = RawAgent::handshake(cfg.addr)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if cfg.rst {
        #[allow(deprecated)] // set_zero_linger is not in this tokio yet
        a.io.get_ref().set_linger(Some(Duration::ZERO))?;
    }
    let mut login = RawAgent::login_msg(&cfg.user, "load-pass", device, resume);
    if let ClientMsg::Login(l) = &mut login {
        l.ticket = ticket.filter(|_| cfg.tickets).map(<[u8]>::to_vec);
    }
    a.send(&login).await?;
    loop {
        match a.recv(Duration::from_secs(30)).await? {
            Some(ServerMsg::LoginOk(ok)) => {
                let next = (cfg.tickets && !ok.ticket.is_empty()).then_some(ok.ticket);
                return Ok((a, next));
            }
            Some(ServerMsg::Error(e)) => anyhow::bail!("login of {} refused: {e:?}", cfg.user),
            Some(_) => {}
            None => anyhow::bail!("closed during login of {}", cfg.user),
        }
    }
}

async fn agent_task(
    cfg: AgentCfg,
    (mut a, mut ticket): (RawAgent, Option<Vec<u8>>),
    device: holdfast_protocol::ids::MsgId,
    shared: Arc<AgentShared>,
    mut phase: watch::Receiver<Phase>,
) {
    let pad = "x".repeat(cfg.size.saturating_sub(40));
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut last_seq = 0u64;
    let mut convs: Vec<ConversationId> = Vec::new();
    let mut known: HashSet<ConversationId> = HashSet::new();
    let mut rr = 0usize;
    let mut period = Duration::from_secs(1);
    let mut next_send: Option<Instant> = None;
    let mut ack_at: Option<Instant> = None;
    let mut storm_at: Option<Instant> = None;
    // As the app does: a heartbeat after 3 s of sending nothing else.
    let mut last_out = Instant::now();
    loop {
        let heartbeat_at = last_out + Duration::from_secs(3);
        let step = tokio::select! {
            r = phase.changed() => AStep::Phase(r.is_ok()),
            m = a.recv(Duration::from_secs(3600)) => AStep::Msg(m),
            () = tokio::time::sleep_until(next_send.unwrap_or(far).into()), if next_send.is_some() && !convs.is_empty() => AStep::Send,
            () = tokio::time::sleep_until(ack_at.unwrap_or(far).into()), if ack_at.is_some() => AStep::Ack,
            () = tokio::time::sleep_until(heartbeat_at.into()) => AStep::Heartbeat,
        };
        let now = Instant::now();
        if matches!(step, AStep::Send | AStep::Ack | AStep::Heartbeat) {
            last_out = now;
        }
        match step {
            AStep::Phase(false) => return,
            AStep::Phase(true) => {
                let p = *phase.borrow_and_update();
                match p {
                    Phase::Quit => return,
                    Phase::Hold => next_send = None,
                    Phase::Send { per_visitor } => {
                        if per_visitor > 0.0 {
                            period = Duration::from_secs_f64(1.0 / per_visitor);
                            next_send = Some(shard::next_due(None, period, now));
                        }
                    }
                    Phase::Storm { at } => {
                        storm_at = Some(at);
                        next_send = None;
                        ack_at = None;
                        drop(a); // SO_LINGER 0: the server sees an RST
                        (a, ticket) =
                            agent_reconnect(&cfg, device, last_seq, ticket, &shared).await;
                        last_out = Instant::now();
                        shared
                            .resumed_us
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(at.elapsed().as_micros() as u64);
                    }
                }
            }
            AStep::Msg(Ok(Some(ServerMsg::Event { seq, event }))) => {
                if seq <= last_seq {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                last_seq = seq;
                if ack_at.is_none() {
                    ack_at = Some(now + Duration::from_millis(50));
                }
                let Event::Message(msg) = event else { continue };
                if !matches!(msg.author, Author::Visitor { .. }) {
                    continue;
                }
                if known.insert(msg.conversation) {
                    convs.push(msg.conversation);
                }
                if msg.body == "open" {
                    shared.opened.fetch_add(1, Ordering::Relaxed);
                } else if let Some(t) = stamp(&msg.body, "t=") {
                    let us = now_ns().saturating_sub(t) / 1000;
                    shared
                        .lat_us
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(us);
                    shared.received.fetch_add(1, Ordering::Relaxed);
                } else if msg.body.starts_with("s=") {
                    let fresh = shared
                        .storm_ids
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(msg.client_id);
                    if fresh {
                        if let Some(at) = storm_at {
                            shared
                                .storm_last_us
                                .fetch_max(at.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    } else {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            AStep::Msg(Ok(Some(ServerMsg::Ack(b)))) => {
                shared
                    .acked
                    .fetch_add(b.results.len() as u64, Ordering::Relaxed);
            }
            AStep::Msg(Ok(Some(ServerMsg::Heartbeat))) => {}
            AStep::Msg(Ok(Some(ServerMsg::Live(LiveEvent::Ticket { ticket: t, .. }))))
                if cfg.tickets && !t.is_empty() =>
            {
                ticket = Some(t);
            }
            AStep::Heartbeat => {
                let _ = a.send(&ClientMsg::Heartbeat).await;
            }
            AStep::Msg(Ok(Some(ServerMsg::Snapshot(s)))) => {
                last_seq = s.seq;
                let _ = a.send(&ClientMsg::Ack { up_to: s.seq }).await;
            }
            AStep::Msg(Ok(Some(_))) => {}
            AStep::Msg(Ok(None) | Err(_)) => {
                if matches!(*phase.borrow(), Phase::Quit) {
                    return;
                }
                // Closed by the server (a kick when this agent's queue
                // overflowed, say): come back and resume, as the app does.
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                drop(a);
                (a, ticket) = agent_reconnect(&cfg, device, last_seq, ticket, &shared).await;
                last_out = Instant::now();
            }
            AStep::Ack => {
                ack_at = None;
                let _ = a.send(&ClientMsg::Ack { up_to: last_seq }).await;
            }
            AStep::Send => {
                next_send = Some(shard::next_due(Some(next_send.unwrap_or(now)), period, now));
                let conversation = convs[rr % convs.len()];
                rr += 1;
                let body = format!("a={} {pad}", now_ns());
                if a.command(Action::Send {
                    conversation,
                    body,
                    attachment: None,
                })
                .await
                .is_ok()
                {
                    shared.sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Reconnect with full-jitter backoff (250 ms doubling to 10 s) and resume
/// after the last event seen: with the ticket, as the app does, and with
/// the password once the ticket is refused (expired, or a restarted
/// server with another key).
async fn agent_reconnect(
    cfg: &AgentCfg,
    device: holdfast_protocol::ids::MsgId,
    last_seq: u64,
    ticket: Option<Vec<u8>>,
    shared: &AgentShared,
) -> (RawAgent, Option<Vec<u8>>) {
    let mut ticket = ticket;
    shard::with_backoff(&shared.retries, || {
        let t = ticket.take();
        async move {
            let r = agent_login(cfg, device, Some(last_seq), t.as_deref()).await;
            if r.is_err() && t.is_some() {
                shared.ticket_refused.fetch_add(1, Ordering::Relaxed);
            }
            r
        }
    })
    .await
}

/// Log in `args.agents` agents; they run until the phase says Quit.
/// Agent `i` logs in at `addrs[i % len]`.
async fn start_agents(
    args: &Args,
    addrs: &[SocketAddr],
    rst: bool,
) -> anyhow::Result<(Arc<AgentShared>, watch::Sender<Phase>)> {
    let shared = Arc::new(AgentShared::default());
    let (tx, _) = watch::channel(Phase::Hold);
    for i in 0..args.agents {
        let cfg = AgentCfg {
            addr: addrs[i % addrs.len()],
            user: format!("{}-{i}", args.agent_prefix),
            size: args.size,
            rst,
            tickets: !args.no_tickets,
        };
        let device = new_id();
        let a = agent_login(&cfg, device, None, None).await?;
        tokio::spawn(agent_task(cfg, a, device, shared.clone(), tx.subscribe()));
    }
    Ok((shared, tx))
}

// ---------------------------------------------------------------- targets

/// What the load goes to: one server, or the nodes of a cluster, where
/// visitor `i` connects to `ws[i % len]`-ish blocks (see [`make_shards`]) and
/// agent `i` to `agent[i % len]`.
struct Target {
    ws: Vec<WsTarget>,
    agent: Vec<SocketAddr>,
    /// Where the servers' `/metrics` are (counters are summed).
    admin: Vec<SocketAddr>,
    /// The server processes, for RSS and CPU.
    pids: Vec<u32>,
    /// The PostgreSQL database, for its write counters.
    pg_url: Option<String>,
    name: String,
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn spawn_holdfast(args: &Args) -> anyhow::Result<Target> {
    let dir = tempfile::tempdir()?;
    {
        let conn = holdfast_server::store::open_connection(dir.path())?;
        holdfast_server::admin::add_site(&conn, &args.site, "Load test", None)?;
        let cap = (args.visitors / args.agents.max(1) + 1) as u32;
        for i in 0..args.agents {
            let u = format!("{}-{i}", args.agent_prefix);
            holdfast_server::admin::add_agent(
                &conn,
                &args.site,
                &u,
                &u,
                "load-pass",
                cap,
                holdfast_protocol::agent::Role::Agent,
            )?;
        }
    }
    let cfg = dir.path().join("load.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}group_commit = {}\n",
            holdfast_tests::server::LOOPBACK_LOAD_TOML,
            !args.no_group_commit
        ),
    )?;
    let cfg_s = cfg.to_string_lossy().to_string();
    let p = ServerProcess::start(dir.path(), &["--config", &cfg_s]);
    let pid = p.child.as_ref().map(std::process::Child::id);
    if let (Some(cpus), Some(pid)) = (&args.pin_server, pid) {
        pin(pid, cpus)?;
    }
    Ok(Target {
        ws: vec![WsTarget {
            addr: p.http,
            path: "/v1/visitor/ws".into(),
            holdfast: true,
        }],
        agent: vec![p.agent],
        admin: vec![p.admin],
        pids: pid.into_iter().collect(),
        pg_url: None,
        name: "holdfast".into(),
        _guards: vec![Box::new(p), Box::new(dir)],
    })
}

async fn spawn_node(args: &Args, dir: &std::path::Path) -> anyhow::Result<Target> {
    anyhow::ensure!(
        dir.join("node_modules/ws").is_dir(),
        "{} has no node_modules/ws: run `npm ci` there first",
        dir.display()
    );
    let port = holdfast_tests::server::free_port();
    let child = std::process::Command::new("node")
        .arg(dir.join("server.js"))
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    let guard = Reaper(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr).await?;
    if let Some(cpus) = &args.pin_server {
        pin(pid, cpus)?;
    }
    let version = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(Target {
        ws: vec![WsTarget {
            addr,
            path: "/".into(),
            holdfast: false,
        }],
        agent: Vec::new(),
        admin: Vec::new(),
        pids: vec![pid],
        pg_url: None,
        name: format!("node {version} + ws"),
        _guards: vec![Box::new(guard)],
    })
}

// ---------------------------------------------------------------- modes

async fn idle(args: &Args, t: &Target) -> anyhow::Result<serde_json::Value> {
    let max = args.steps.iter().copied().max().unwrap_or(0);
    let sampler = Sampler::start(&t.pids);
    let mut _agents = None;
    if !t.agent.is_empty() && args.agents > 0 {
        _agents = Some(start_agents(args, &t.agent, false).await?);
    }
    let mut shards = make_shards(args, &t.ws, false, false, max)?;
    let mut rows = Vec::new();
    println!(
        "holdfast-load idle: {} ({} agents), {} per process",
        t.name,
        if t.agent.is_empty() { 0 } else { args.agents },
        args.per_process
    );
    println!(
        "  {:>8} {:>10} {:>12} {:>8} {:>9}",
        "visitors", "RSS MB", "KB/visitor", "CPU %", "connect s"
    );
    let mut base_kb = None;
    for &k in &args.steps {
        let t0 = Instant::now();
        connect_total(&mut shards, k).await?;
        let connect_s = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        let c0 = sampler.ticks();
        let c_t0 = Instant::now();
        let mut samples = Vec::new();
        let mut per_node = Vec::new();
        for _ in 0..5 {
            if let Some((rss, _)) = procs_stat(&t.pids) {
                samples.push(rss);
            }
            per_node.push(
                t.pids
                    .iter()
                    .map(|&p| proc_stat(p).map_or(0, |s| s.0))
                    .collect::<Vec<_>>(),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let cpu = Sampler::cpu_percent(c0, sampler.ticks(), c_t0.elapsed().as_secs_f64());
        samples.sort_unstable();
        let rss = samples.get(samples.len() / 2).copied().unwrap_or(0);
        let base = *base_kb.get_or_insert(rss);
        let per = if k > 0 {
            (rss as f64 - base as f64) / k as f64
        } else {
            0.0
        };
        println!(
            "  {k:>8} {:>10.1} {:>12.2} {:>8.1} {:>9.1}",
            rss as f64 / 1024.0,
            per,
            cpu,
            connect_s
        );
        // Each node's median, when there are several.
        let nodes_kb: Vec<u64> = (0..t.pids.len())
            .map(|n| {
                let mut v: Vec<u64> = per_node.iter().map(|row: &Vec<u64>| row[n]).collect();
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            })
            .collect();
        if nodes_kb.len() > 1 {
            let mb: Vec<String> = nodes_kb
                .iter()
                .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
                .collect();
            println!("  {:>8} per node RSS MB: {}", "", mb.join(" / "));
        }
        rows.push(serde_json::json!({"visitors": k, "rss_kb": rss, "nodes_rss_kb": nodes_kb, "kb_per_visitor": per, "cpu_percent": cpu, "connect_s": connect_s}));
    }
    let p = take_all(&mut shards).await?;
    println!("  visitor errors {}", p.errors);
    for s in shards {
        s.quit().await;
    }
    Ok(serde_json::json!({
        "mode": "idle", "target": t.name, "nodes": t.pids.len(), "agents": if t.agent.is_empty() { 0 } else { args.agents },
        "steps": rows, "errors": p.errors,
    }))
}

/// Named counters from the servers' `/metrics`, summed over them (0 when
/// absent).
async fn counters(admin: &[SocketAddr], names: &[&str]) -> Vec<f64> {
    let mut sums = vec![0.0; names.len()];
    for &a in admin {
        let text = match http_request(a, "GET", "/metrics", None).await {
            Ok((_, body)) => String::from_utf8_lossy(&body).to_string(),
            Err(_) => String::new(),
        };
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += text
                .lines()
                .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    sums
}

/// (commit batches, ops in them, seconds spent committing, batches that
/// failed or conflicted and were redone) so far.
async fn metrics(admin: &[SocketAddr]) -> (f64, f64, f64, f64) {
    let c = counters(
        admin,
        &[
            "holdfast_commit_batch_ops_count",
            "holdfast_commit_batch_ops_sum",
            "holdfast_commit_seconds_sum",
            "holdfast_commit_failures_total",
        ],
    )
    .await;
    (c[0], c[1], c[2], c[3])
}

async fn chat(args: &Args, t: &Target) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!t.agent.is_empty(), "chat mode needs agents");
    let sampler = Sampler::start(&t.pids);
    let (agents, agent_phase) = start_agents(args, &t.agent, false).await?;
    let mut shards = make_shards(args, &t.ws, true, false, args.visitors)?;
    let t_connect = Instant::now();
    connect_total(&mut shards, args.visitors).await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    // Every opening message reaches an agent before the clock starts, so
    // agents know their conversations.
    let wait = Instant::now();
    while (agents.opened.load(Ordering::Relaxed) as usize) < args.visitors
        && wait.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = take_all(&mut shards).await?;
    let (b0, o0, s0, f0) = metrics(&t.admin).await;
    let w0 = match t.pg_url.as_deref() {
        // PostgreSQL's backends publish their counters after a second idle:
        // let the opening messages' writes land before the first reading.
        Some(url) => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            nodes::writes(url)
        }
        None => None,
    };
    sampler.reset();
    let c0 = sampler.ticks();
    let q0 = sampler.waits();
    let t0 = Instant::now();
    let per_visitor = args.rate / args.visitors.max(1) as f64;
    phase_all(&mut shards, Phase::Send { per_visitor }).await?;
    let _ = agent_phase.send(Phase::Send {
        per_visitor: args.agent_rate / args.agents.max(1) as f64,
    });
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    phase_all(&mut shards, Phase::Hold).await?;
    let _ = agent_phase.send(Phase::Hold);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = Sampler::cpu_percent(c0, sampler.ticks(), elapsed);
    let (q_server, q_gen) = sampler.wait_percent(q0, elapsed);
    let peak = sampler.peak_kb();
    // Drain: count what was in flight when the senders stopped.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (b1, o1, s1, f1) = metrics(&t.admin).await;
    let w1 = t.pg_url.as_deref().and_then(nodes::writes);
    let v = take_all(&mut shards).await?;
    let _ = agent_phase.send(Phase::Quit);
    for s in shards {
        s.quit().await;
    }
    let mut v2a = std::mem::take(&mut *agents.lat_us.lock().unwrap());
    v2a.sort_unstable();
    let mut a2v = v.lat_us;
    a2v.sort_unstable();
    let (batches, ops, commit_s) = (b1 - b0, o1 - o0, s1 - s0);
    let mean_batch = if batches > 0.0 { ops / batches } else { 0.0 };
    let mean_commit_ms = if batches > 0.0 {
        commit_s / batches * 1000.0
    } else {
        0.0
    };
    let errors = v.errors + agents.errors.load(Ordering::Relaxed);
    let a_sent = agents.sent.load(Ordering::Relaxed);
    let a_acked = agents.acked.load(Ordering::Relaxed);
    println!(
        "holdfast-load chat: {} visitors, {} agents, {:.0} + {:.0} msg/s offered for {elapsed:.1} s (connect {connect_s:.1} s)",
        args.visitors, args.agents, args.rate, args.agent_rate
    );
    let (v2a_json, a2v_json) = report_flows(
        &Flow {
            sent: v.sent,
            acked: v.acked,
            lat: &v2a,
        },
        &Flow {
            sent: a_sent,
            acked: a_acked,
            lat: &a2v,
        },
        elapsed,
    );
    println!(
        "  commits {batches:.0}  mean batch {mean_batch:.1} ops  mean commit {mean_commit_ms:.3} ms  failed or redone {:.0}  errors {errors}  duplicates {}  reconnects {}",
        f1 - f0,
        agents.duplicates.load(Ordering::Relaxed),
        agents.reconnects.load(Ordering::Relaxed) + v.reconnects
    );
    println!(
        "  server peak RSS {peak} KB  CPU {cpu:.0}%  waiting for a CPU {q_server:.0}% (generator {q_gen:.0}%)"
    );
    // Write amplification: what PostgreSQL wrote per message delivered.
    let pg_writes = match (w0, w1) {
        (Some(a), Some(b)) => {
            let msgs = (v2a.len() + a2v.len()).max(1) as f64;
            let rows =
                (b.inserted - a.inserted) + (b.updated - a.updated) + (b.deleted - a.deleted);
            let wal = b.wal_bytes - a.wal_bytes;
            println!(
                "  postgresql per message: {:.1} rows ({:.1} inserted, {:.1} updated, {:.1} deleted), {:.0} WAL bytes",
                rows / msgs,
                (b.inserted - a.inserted) / msgs,
                (b.updated - a.updated) / msgs,
                (b.deleted - a.deleted) / msgs,
                wal / msgs
            );
            serde_json::json!({ "rows_per_msg": rows / msgs, "inserted_per_msg": (b.inserted - a.inserted) / msgs,
                "updated_per_msg": (b.updated - a.updated) / msgs, "deleted_per_msg": (b.deleted - a.deleted) / msgs,
                "wal_bytes_per_msg": wal / msgs })
        }
        _ => serde_json::Value::Null,
    };
    Ok(serde_json::json!({
        "pg_writes": pg_writes,
        "mode": "chat", "target": t.name, "nodes": t.pids.len(), "visitors": args.visitors, "agents": args.agents,
        "rate": args.rate, "agent_rate": args.agent_rate, "size": args.size,
        "duration_s": elapsed, "connect_s": connect_s,
        "v2a": v2a_json, "a2v": a2v_json,
        "commit": { "batches": batches, "ops": ops, "mean_batch": mean_batch, "mean_commit_ms": mean_commit_ms, "failed_or_redone": f1 - f0 },
        "errors": errors, "duplicates": agents.duplicates.load(Ordering::Relaxed),
        "reconnects": { "agents": agents.reconnects.load(Ordering::Relaxed), "visitors": v.reconnects },
        "server": { "peak_rss_kb": peak, "cpu_percent": cpu, "runq_wait_percent": q_server },
        "generator_runq_wait_percent": q_gen,
        "group_commit": !args.no_group_commit,
    }))
}

async fn storm(args: &Args, t: &Target) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.visitors + args.agents <= args.per_process,
        "storm runs in one process: at most {} connections",
        args.per_process
    );
    anyhow::ensure!(!t.agent.is_empty(), "storm needs a Holdfast server");
    let sampler = Sampler::start(&t.pids);
    let (agents, agent_phase) = start_agents(args, &t.agent, true).await?;
    let mut shards = make_shards(args, &t.ws, true, true, args.visitors)?;
    let t_connect = Instant::now();
    connect_total(&mut shards, args.visitors).await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let wait = Instant::now();
    while (agents.opened.load(Ordering::Relaxed) as usize) < args.visitors
        && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = take_all(&mut shards).await?;
    let before_kb = procs_stat(&t.pids).map_or(0, |s| s.0);
    sampler.reset();
    let at = Instant::now();
    let _ = agent_phase.send(Phase::Storm { at });
    phase_all(&mut shards, Phase::Storm { at }).await?;
    let mut acc = Partial::default();
    let deadline = Duration::from_secs(180);
    let (mut resumed_all_s, mut delivered_all_s) = (f64::NAN, f64::NAN);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let p = take_all(&mut shards).await?;
        acc.sent += p.sent;
        acc.acked += p.acked;
        acc.errors += p.errors;
        acc.retries += p.retries;
        acc.reconnects += p.reconnects;
        acc.resumed_us.extend(p.resumed_us);
        let agents_back = agents.resumed_us.lock().unwrap().len();
        let got = agents.storm_ids.lock().unwrap().len();
        if resumed_all_s.is_nan()
            && acc.resumed_us.len() == args.visitors
            && agents_back == args.agents
        {
            let last_agent = agents
                .resumed_us
                .lock()
                .unwrap()
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            let last_visitor = acc.resumed_us.iter().copied().max().unwrap_or(0);
            resumed_all_s = last_agent.max(last_visitor) as f64 / 1e6;
        }
        if got >= args.visitors && (acc.acked as usize) >= args.visitors {
            delivered_all_s = agents.storm_last_us.load(Ordering::Relaxed) as f64 / 1e6;
        }
        if (!resumed_all_s.is_nan() && !delivered_all_s.is_nan()) || at.elapsed() > deadline {
            break;
        }
    }
    let peak = sampler.peak_kb();
    let server_counts = counters(
        &t.admin,
        &[
            "holdfast_slow_consumer_cuts_total",
            "holdfast_dead_peer_cuts_total",
            "holdfast_live_resyncs_total",
            "holdfast_logins_by_ticket_total",
        ],
    )
    .await;
    let mut vr = acc.resumed_us.clone();
    vr.sort_unstable();
    let mut ar = agents.resumed_us.lock().unwrap().clone();
    ar.sort_unstable();
    let got = agents.storm_ids.lock().unwrap().len();
    let dups = agents.duplicates.load(Ordering::Relaxed);
    let retries = acc.retries + agents.retries.load(Ordering::Relaxed);
    let _ = agent_phase.send(Phase::Quit);
    for s in shards {
        s.quit().await;
    }
    println!(
        "holdfast-load storm: {} visitors + {} agents dropped at once (RST), connected in {connect_s:.1} s",
        args.visitors, args.agents
    );
    println!(
        "  all resumed after {resumed_all_s:.2} s; all {got} queued messages delivered to agents after {delivered_all_s:.2} s"
    );
    println!(
        "  visitor resume p50 {:.2} s  p99 {:.2} s; agent resume p50 {:.2} s  max {:.2} s",
        pct(&vr, 0.5) as f64 / 1e6,
        pct(&vr, 0.99) as f64 / 1e6,
        pct(&ar, 0.5) as f64 / 1e6,
        pct(&ar, 1.0) as f64 / 1e6
    );
    println!(
        "  acked {} of {}  duplicates {dups}  retries {retries}  errors {}  later reconnects: agents {} visitors {}",
        acc.acked,
        args.visitors,
        acc.errors,
        agents.reconnects.load(Ordering::Relaxed),
        acc.reconnects
    );
    let refused = agents.ticket_refused.load(Ordering::Relaxed);
    println!(
        "  agents resumed with {}; tickets refused {refused}; server logins by ticket {}",
        if args.no_tickets {
            "their password (--no-tickets)"
        } else {
            "their resume ticket"
        },
        server_counts[3]
    );
    println!("  server RSS before {before_kb} KB, peak during the storm {peak} KB");
    println!(
        "  server counters: slow-consumer cuts {}  dead-peer cuts {}  presence resyncs {}",
        server_counts[0], server_counts[1], server_counts[2]
    );
    Ok(serde_json::json!({
        "mode": "storm", "visitors": args.visitors, "agents": args.agents, "connect_s": connect_s,
        "all_resumed_s": resumed_all_s, "backlog_delivered_s": delivered_all_s,
        "delivered": got, "acked": acc.acked, "duplicates": dups, "retries": retries, "errors": acc.errors,
        "reconnects": { "agents": agents.reconnects.load(Ordering::Relaxed), "visitors": acc.reconnects },
        "tickets": !args.no_tickets, "tickets_refused": refused,
        "visitor_resume_us": lat_json(&vr), "agent_resume_us": lat_json(&ar),
        "server": { "rss_before_kb": before_kb, "peak_rss_kb": peak,
            "slow_consumer_cuts": server_counts[0], "dead_peer_cuts": server_counts[1], "live_resyncs": server_counts[2],
            "logins_by_ticket": server_counts[3] },
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // A load generator pointed at a real deployment is an attack; this one
    // only ever talks to this machine.
    for a in args.http.iter().chain(&args.agent).chain(&args.mqtt) {
        anyhow::ensure!(
            a.ip().is_loopback(),
            "holdfast-load targets loopback only, not {a}"
        );
    }
    if args.child {
        return child_main(args).await;
    }
    let report = if args.spawn_redis_aof {
        streams::run(&args).await?
    } else if args.spawn_mosquitto || args.mqtt.is_some() {
        mqtt::run(&args).await?
    } else {
        let t = if let Some(dir) = &args.spawn_node {
            spawn_node(&args, dir).await?
        } else if args.spawn && (args.nodes > 1 || args.postgres) {
            nodes::spawn(&args)?
        } else if args.spawn {
            spawn_holdfast(&args)?
        } else {
            anyhow::ensure!(!args.http.is_empty(), "--spawn, --spawn-node or --http");
            Target {
                ws: args
                    .http
                    .iter()
                    .map(|&addr| WsTarget {
                        addr,
                        path: "/v1/visitor/ws".into(),
                        holdfast: true,
                    })
                    .collect(),
                agent: args.agent.clone(),
                admin: args.admin.clone(),
                pids: args.server_pid.clone(),
                pg_url: None,
                name: "holdfast".into(),
                _guards: Vec::new(),
            }
        };
        match args.mode {
            Mode::Idle => idle(&args, &t).await?,
            Mode::Chat => chat(&args, &t).await?,
            Mode::Storm => storm(&args, &t).await?,
        }
    };
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    // Open sockets and tasks end with the process.
    std::process::exit(0)
}
