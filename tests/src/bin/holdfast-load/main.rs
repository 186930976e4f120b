//! `holdfast-load`: drive a Holdfast server with visitor WebSockets and
//! agent TCP sessions, timestamp every message, and report latency from
//! send to delivery, throughput, errors, and the server's commit batches.
//!
//! It targets loopback only and every run stops by itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{Event, ServerMsg};
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::ServerProcess;
use holdfast_tests::visitor::{hello, http_request, new_id};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Load generator for a Holdfast server (loopback only)")]
struct Args {
    /// Start a fresh server (the release binary next to this one) on a temp dir.
    #[arg(long)]
    spawn: bool,
    /// HTTP address of an existing server (with --agent and --site).
    #[arg(long)]
    http: Option<SocketAddr>,
    #[arg(long)]
    agent: Option<SocketAddr>,
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
    /// Seconds of load after everyone is connected.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Switch group commit off in the spawned server (to measure what it buys).
    #[arg(long)]
    no_group_commit: bool,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[derive(Default)]
struct Stats {
    latencies_us: Mutex<Vec<u64>>,
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn source_addr(i: usize) -> IpAddr {
    // Spread across 127.0.0.2.. so one address's ~28k ports never run out.
    let n = 2 + (i / 20_000) as u8;
    IpAddr::from([127, 0, 0, n])
}

fn proc_stat(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit(')').next()?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss_kb, ticks))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _dir;
    let mut _proc = None;
    let (http, agent_addr, pid) = if args.spawn {
        let dir = tempfile::tempdir()?;
        {
            let conn = holdfast_server::store::open_connection(dir.path())?;
            holdfast_server::admin::add_site(&conn, &args.site, "Load test", None)?;
            let cap = (args.visitors / args.agents.max(1) + 1) as u32;
            for i in 0..args.agents {
                let u = format!("{}-{i}", args.agent_prefix);
                holdfast_server::admin::add_agent(&conn, &args.site, &u, &u, "load-pass", cap)?;
            }
        }
        let cfg = dir.path().join("load.toml");
        std::fs::write(
            &cfg,
            format!(
                "visitor_msg_rate = 100000.0\nvisitor_msg_burst = 100000.0\nvisitor_max_ws_per_ip = 100000\nagent_max_per_ip = 100000\ngroup_commit = {}\n",
                !args.no_group_commit
            ),
        )?;
        let cfg_s = cfg.to_string_lossy().to_string();
        let p = ServerProcess::start(dir.path(), &["--config", &cfg_s]);
        let pid = p.child.as_ref().map(|c| c.id());
        let r = (p.http, p.agent, pid);
        _proc = Some(p);
        _dir = Some(dir);
        r
    } else {
        _dir = None;
        (
            args.http.expect("--http or --spawn"),
            args.agent.expect("--agent or --spawn"),
            None,
        )
    };

    let stats = Arc::new(Stats::default());
    let stop = tokio_util::sync::CancellationToken::new();
    // Agents keep reading for a drain period after the senders stop, so
    // messages still in flight at the stop are counted, not dropped.
    let agents_stop = tokio_util::sync::CancellationToken::new();

    // Agents: log in, read forever, time every visitor message.
    for i in 0..args.agents {
        let user = format!("{}-{i}", args.agent_prefix);
        let (mut a, ok) = RawAgent::login(agent_addr, &user, "load-pass").await?;
        anyhow::ensure!(
            matches!(ok, ServerMsg::LoginOk(_)),
            "agent {user} login failed: {ok:?}"
        );
        let (stats, stop) = (stats.clone(), agents_stop.clone());
        tokio::spawn(async move {
            let mut last_ack = Instant::now();
            loop {
                let m = tokio::select! {
                    () = stop.cancelled() => return,
                    m = a.recv(Duration::from_secs(30)) => m,
                };
                match m {
                    Ok(Some(ServerMsg::Event { seq, event })) => {
                        if let Event::Message(msg) = event
                            && let Some(t) = msg
                                .body
                                .strip_prefix("t=")
                                .and_then(|b| b.split(' ').next())
                            && let Ok(t) = t.parse::<u64>()
                        {
                            let us = now_ns().saturating_sub(t) / 1000;
                            stats.latencies_us.lock().await.push(us);
                            stats.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        if last_ack.elapsed() > Duration::from_millis(50) {
                            let _ = a
                                .send(&holdfast_protocol::agent::ClientMsg::Ack { up_to: seq })
                                .await;
                            last_ack = Instant::now();
                        }
                    }
                    Ok(Some(ServerMsg::Heartbeat)) => {
                        let _ = a
                            .send(&holdfast_protocol::agent::ClientMsg::Heartbeat)
                            .await;
                    }
                    Ok(Some(ServerMsg::Snapshot(s))) => {
                        let _ = a
                            .send(&holdfast_protocol::agent::ClientMsg::Ack { up_to: s.seq })
                            .await;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        });
    }

    // Visitors: connect from spread source addresses, open a chat, then send
    // at their share of the rate.
    let per_visitor = args.rate / args.visitors.max(1) as f64;
    let body_pad = "x".repeat(args.size.saturating_sub(40));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.visitors.max(1));
    let go = Arc::new(tokio::sync::Notify::new());
    for i in 0..args.visitors {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source_addr(i), 0))?;
        let stream = sock.connect(http).await?;
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://{http}/v1/visitor/ws"), stream).await?;
        let h = hello(&args.site, None, None, &format!("https://load.example/{i}"));
        ws.send(Message::Text(serde_json::to_string(&h)?.into()))
            .await?;
        let (stats, stop, pad, ready, go) = (
            stats.clone(),
            stop.clone(),
            body_pad.clone(),
            ready_tx.clone(),
            go.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let reader = {
                let stats = stats.clone();
                tokio::spawn(async move {
                    while let Some(Ok(Message::Text(t))) = rx.next().await {
                        match serde_json::from_str::<VisitorOut>(&t) {
                            Ok(VisitorOut::Ack { .. }) => {
                                stats.acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(VisitorOut::Error { .. }) => {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                    }
                })
            };
            let _ = ready.send(()).await;
            go.notified().await;
            let period = Duration::from_secs_f64(1.0 / per_visitor.max(0.001));
            // Spread first sends so visitors are not in lockstep.
            let offset = period.mul_f64((i as f64 * 0.618_033_988).fract());
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let body = format!("t={} {pad}", now_ns());
                let m = VisitorIn::Send { id: new_id(), body };
                if tx
                    .send(Message::Text(serde_json::to_string(&m).unwrap().into()))
                    .await
                    .is_err()
                {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            reader.abort();
        }));
    }
    for _ in 0..args.visitors {
        ready_rx.recv().await;
    }
    let connect_time = started.elapsed();
    let cpu0 = pid.and_then(proc_stat);
    let t0 = Instant::now();
    go.notify_waiters();
    let mut peak_rss = 0;
    while t0.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some((rss, _)) = pid.and_then(proc_stat) {
            peak_rss = peak_rss.max(rss);
        }
    }
    stop.cancel();
    let elapsed = t0.elapsed();
    let cpu1 = pid.and_then(proc_stat);
    tokio::time::sleep(Duration::from_secs(2)).await;
    agents_stop.cancel();

    let mut lat = stats.latencies_us.lock().await.clone();
    lat.sort_unstable();
    let (_, metrics) = http_request(http, "GET", "/metrics", None).await?;
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let batches = metric("holdfast_commit_batch_ops_count");
    let ops = metric("holdfast_commit_batch_ops_sum");
    let commit_s = metric("holdfast_commit_seconds_sum");
    let cpu_pct = match (cpu0, cpu1) {
        (Some((_, a)), Some((_, b))) => (b - a) as f64 / 100.0 / elapsed.as_secs_f64() * 100.0,
        _ => f64::NAN,
    };
    let sent = stats.sent.load(Ordering::Relaxed);
    let delivered = stats.delivered.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "visitors": args.visitors, "agents": args.agents, "target_rate": args.rate,
        "duration_s": elapsed.as_secs_f64(), "connect_s": connect_time.as_secs_f64(),
        "sent": sent, "acked": stats.acked.load(Ordering::Relaxed), "delivered": delivered,
        "errors": stats.errors.load(Ordering::Relaxed),
        "throughput_msgs_per_s": delivered as f64 / elapsed.as_secs_f64(),
        "latency_us": { "p50": pct(&lat, 0.5), "p90": pct(&lat, 0.9), "p99": pct(&lat, 0.99), "p999": pct(&lat, 0.999), "max": lat.last().copied().unwrap_or(0) },
        "commit": { "batches": batches, "ops": ops, "mean_batch": if batches > 0.0 { ops / batches } else { 0.0 }, "mean_commit_ms": if batches > 0.0 { commit_s / batches * 1000.0 } else { 0.0 } },
        "server": { "peak_rss_kb": peak_rss, "cpu_percent": cpu_pct },
        "group_commit": !args.no_group_commit,
    });
    println!(
        "holdfast-load: {} visitors, {} agents, target {:.0} msg/s for {:.1} s",
        args.visitors,
        args.agents,
        args.rate,
        elapsed.as_secs_f64()
    );
    println!(
        "  sent {sent}  acked {}  delivered {delivered}  errors {}",
        stats.acked.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed)
    );
    println!(
        "  throughput {:.0} msg/s delivered",
        delivered as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency send->agent  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
        pct(&lat, 0.5) as f64 / 1000.0,
        pct(&lat, 0.9) as f64 / 1000.0,
        pct(&lat, 0.99) as f64 / 1000.0,
        pct(&lat, 0.999) as f64 / 1000.0
    );
    println!(
        "  commits {batches:.0}  ops {ops:.0}  mean batch {:.1} ops  mean commit {:.3} ms",
        if batches > 0.0 { ops / batches } else { 0.0 },
        if batches > 0.0 {
            commit_s / batches * 1000.0
        } else {
            0.0
        }
    );
    if pid.is_some() {
        println!("  server peak RSS {} KB  CPU {cpu_pct:.0}%", peak_rss);
    }
    if let Some(p) = args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
