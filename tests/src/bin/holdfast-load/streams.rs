//! The chat workload over Redis Streams, for a durable peer (issue 19).
//!
//! Mosquitto acks a publish from memory. Redis with `appendonly yes` and
//! `appendfsync always` writes and fdatasyncs its append-only file in
//! `beforeSleep`, before it writes any reply of that event-loop turn, so an
//! XADD reply means the entry is on disk, which is what a Holdfast ack
//! means. The shape is `mqtt`'s: each visitor is one connection appending
//! `XADD hf:a:<agent> * v <visitor> k <n> b <body>` at the same rate and
//! body size, without waiting for earlier replies; each agent is one
//! connection reading its stream with `XREAD BLOCK` from the last id it
//! saw, a durable log with a cursor per recipient. A message counts as
//! acked at its XADD reply and delivered when its agent reads it.
//!
//! After the run every acked message must have been read exactly once, and
//! each visitor's messages in the order it sent them; the report counts
//! what was lost, duplicated or reordered.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _, TryStreamExt as _};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::watch;

use crate::shard::Phase;
use crate::{Args, Flow, Sampler, now_ns, pin, report_flows, wait_listening};

/// Who sent a message and its number among that visitor's sends (from 1).
type MsgKey = (u32, u64);

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    errors: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    lat: Mutex<Vec<u64>>,
    /// XADD to its reply (µs): what the fsync costs a sender.
    ack_lat: Mutex<Vec<u64>>,
    /// Every message Redis acked.
    acked_ids: Mutex<HashSet<MsgKey>>,
    /// Every message an agent read (a second read is a duplicate).
    delivered_ids: Mutex<HashSet<MsgKey>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh `redis-server` with its AOF fsynced before every reply.
struct Spawned {
    addr: SocketAddr,
    pid: u32,
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn config(port: u16, dir: &Path) -> String {
    format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         protected-mode yes\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {dir}/redis.log\n\
         databases 1\n\
         save \"\"\n\
         appendonly yes\n\
         appendfsync always\n\
         no-appendfsync-on-rewrite no\n\
         auto-aof-rewrite-percentage 0\n",
        dir = dir.display()
    )
}

async fn spawn(args: &Args) -> anyhow::Result<Spawned> {
    let dir = tempfile::tempdir().context("temp dir for redis-server")?;
    let bin = holdfast_tests::redis::binary();
    // The port is free when picked but another process may bind it first;
    // Redis then exits at once, and another port is tried.
    for _ in 0..5 {
        let port = holdfast_tests::server::free_port();
        let conf = dir.path().join("redis.conf");
        // RDB snapshots off (they fork); the AOF is the only persistence,
        // fsynced on every write, and never rewritten automatically, so no
        // fork and no rewrite buffer share the core during a run.
        std::fs::write(&conf, config(port, dir.path()))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut child = std::process::Command::new(&bin)
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot start {} (apt install redis-server)", bin.display())
            })?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_listening(addr).await;
        if up.is_err() || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!(%addr, "redis-server did not start; trying another port");
            continue;
        }
        let pid = child.id();
        if let Some(cpus) = &args.pin_server {
            pin(pid, cpus)?;
        }
        return Ok(Spawned {
            addr,
            pid,
            _guards: vec![Box::new(holdfast_tests::Reaper(child)), Box::new(dir)],
        });
    }
    anyhow::bail!(
        "redis-server did not start on any of 5 free ports (log: {})",
        std::fs::read_to_string(dir.path().join("redis.log")).unwrap_or_default()
    )
}

async fn connect(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    // No response timeout: XREAD blocks on purpose, and a slow fsync must
    // show as latency, not as an error. The default connect timeout (1 s)
    // is too short for a thousand connections to a pinned, busy server.
    let cfg = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .context("connecting to redis-server")
}

/// `CONFIG GET name` as a string.
async fn config_get(conn: &mut MultiplexedConnection, name: &str) -> anyhow::Result<String> {
    let v: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await
        .with_context(|| format!("CONFIG GET {name}"))?;
    v.get(1)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("CONFIG GET {name} answered {v:?}"))
}

/// One visitor: append to its agent's stream at the phase's rate, keeping
/// every XADD in flight until its reply, until Quit. The connection sends
/// requests in the order they are first polled, and `FuturesUnordered`
/// polls new futures in the order they were pushed, so a visitor's XADDs
/// reach Redis in the order it numbered them.
async fn visitor(
    i: u32,
    agent: usize,
    conn: MultiplexedConnection,
    size: usize,
    c: Arc<Counters>,
    mut phase: watch::Receiver<Phase>,
) {
    let key = format!("hf:a:{agent}");
    let pad = "x".repeat(size.saturating_sub(40));
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    let mut next: Option<Instant> = None;
    let mut period = Duration::from_secs(1);
    let mut n = 0u64;
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            r = phase.changed() => {
                if r.is_err() { break; }
                let p = *phase.borrow_and_update();
                match p {
                    Phase::Quit => break,
                    Phase::Send { per_visitor } if per_visitor > 0.0 => {
                        period = Duration::from_secs_f64(1.0 / per_visitor);
                        next = Some(crate::shard::next_due(None, period, Instant::now()));
                    }
                    _ => next = None,
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or(far).into()), if next.is_some() => {
                let now = Instant::now();
                next = Some(crate::shard::next_due(Some(next.unwrap_or(now)), period, now));
                n += 1;
                let mut cmd = redis::cmd("XADD");
                cmd.arg(&key)
                    .arg("*")
                    .arg("v")
                    .arg(i)
                    .arg("k")
                    .arg(n)
                    .arg("b")
                    .arg(format!("t={} {pad}", now_ns()));
                let mut conn = conn.clone();
                let at = Instant::now();
                inflight.push(async move { (n, at, cmd.query_async::<String>(&mut conn).await) });
                c.sent.fetch_add(1, Ordering::Relaxed);
            }
            Some((k, at, r)) = inflight.next(), if !inflight.is_empty() => match r {
                Ok(_) => {
                    lock(&c.ack_lat).push(at.elapsed().as_micros() as u64);
                    c.acked.fetch_add(1, Ordering::Relaxed);
                    lock(&c.acked_ids).insert((i, k));
                }
                Err(e) => {
                    if c.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(visitor = i, error = %e, "XADD failed");
                    }
                }
            },
        }
    }
}

/// One stream entry: its id and its field-value pairs.
type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// Every entry in an XREAD reply (RESP2: an array of
/// `[stream, [[id, [field, value, ...]], ...]]`; nil on timeout).
fn entries(v: Value) -> anyhow::Result<Vec<Entry>> {
    let streams = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(s) => s,
        other => anyhow::bail!("XREAD answered {other:?}"),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut kv) = s else {
            anyhow::bail!("XREAD stream is not [name, entries]");
        };
        let Some(Value::Array(items)) = kv.pop() else {
            anyhow::bail!("XREAD stream has no entries array");
        };
        for item in items {
            let Value::Array(mut parts) = item else {
                anyhow::bail!("XREAD entry is not [id, fields]");
            };
            let (Some(Value::Array(fields)), Some(Value::BulkString(id))) =
                (parts.pop(), parts.pop())
            else {
                anyhow::bail!("XREAD entry is not [id, fields]");
            };
            let mut flat = fields.into_iter().map(|f| match f {
                Value::BulkString(b) => b,
                _ => Vec::new(),
            });
            let mut pairs = Vec::new();
            while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
                pairs.push((f, v));
            }
            out.push((String::from_utf8_lossy(&id).into_owned(), pairs));
        }
    }
    Ok(out)
}

/// One agent: read its stream from the start, one batch at a time, until
/// Quit. The cursor is the last id read, as a durable consumer keeps it.
async fn agent(
    j: usize,
    mut conn: MultiplexedConnection,
    c: Arc<Counters>,
    phase: watch::Receiver<Phase>,
) {
    let key = format!("hf:a:{j}");
    let mut cursor = "0-0".to_string();
    let mut last_n: HashMap<u32, u64> = HashMap::new();
    while !matches!(*phase.borrow(), Phase::Quit) {
        // BLOCK 500 rather than forever: the loop sees Quit within half a second.
        let r = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(500)
            .arg("STREAMS")
            .arg(&key)
            .arg(&cursor)
            .query_async::<Value>(&mut conn)
            .await
            .map_err(anyhow::Error::from)
            .and_then(entries);
        let batch = match r {
            Ok(b) => b,
            Err(e) => {
                if c.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(agent = j, error = %e, "XREAD failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let now = now_ns();
        let mut lat = Vec::with_capacity(batch.len());
        for (id, fields) in batch {
            cursor = id;
            let field = |name: &[u8]| {
                fields
                    .iter()
                    .find(|(f, _)| f == name)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
            };
            let (Some(v), Some(k), Some(body)) = (
                field(b"v").and_then(|s| s.parse::<u32>().ok()),
                field(b"k").and_then(|s| s.parse::<u64>().ok()),
                field(b"b"),
            ) else {
                c.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if !lock(&c.delivered_ids).insert((v, k)) {
                c.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let last = last_n.entry(v).or_insert(0);
            if k < *last {
                c.reordered.fetch_add(1, Ordering::Relaxed);
            }
            *last = (*last).max(k);
            if let Some(t) = crate::stamp(body, "t=") {
                lat.push(now.saturating_sub(t) / 1000);
            }
        }
        lock(&c.lat).extend(lat);
    }
}

pub async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.agent_rate == 0.0,
        "--spawn-redis-aof carries visitor->agent messages only (no --agent-rate)"
    );
    let server = spawn(args).await?;
    let version = std::process::Command::new(holdfast_tests::redis::binary())
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            // "Redis server v=7.0.15 sha=... malloc=..." -> "redis-server 7.0.15"
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            let v = out.split_whitespace().find_map(|w| w.strip_prefix("v="))?;
            Some(format!("redis-server {v}"))
        })
        .unwrap_or_else(|| "redis-server".to_string());
    // Holdfast's sockets are TCP_NODELAY, and so are Mosquitto's in `mqtt`;
    // redis-rs leaves Nagle on unless told, which would add delayed-ack
    // stalls to the latencies.
    let info = redis::IntoConnectionInfo::into_connection_info(format!("redis://{}", server.addr))
        .context("redis address")?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let client = redis::Client::open(info.set_tcp_settings(tcp))
        .context("redis client for the spawned server")?;
    let mut admin = connect(&client).await?;
    // Refuse to report a run whose acks were not fsynced.
    let appendonly = config_get(&mut admin, "appendonly").await?;
    let appendfsync = config_get(&mut admin, "appendfsync").await?;
    anyhow::ensure!(
        appendonly == "yes" && appendfsync == "always",
        "redis-server runs with appendonly {appendonly}, appendfsync {appendfsync}"
    );
    let sampler = Sampler::start(&[server.pid]);
    let c = Arc::new(Counters::default());
    let (phase, _) = watch::channel(Phase::Hold);
    let agents = args.agents.max(1);
    let t_connect = Instant::now();
    let conns: Vec<MultiplexedConnection> = futures_util::stream::iter(0..agents + args.visitors)
        .map(|_| connect(&client))
        .buffered(256)
        .try_collect()
        .await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let mut conns = conns.into_iter();
    for (j, conn) in conns.by_ref().take(agents).enumerate() {
        tokio::spawn(agent(j, conn, c.clone(), phase.subscribe()));
    }
    for (i, conn) in conns.enumerate() {
        let v = u32::try_from(i).context("visitor index")?;
        tokio::spawn(visitor(
            v,
            i % agents,
            conn,
            args.size,
            c.clone(),
            phase.subscribe(),
        ));
    }
    sampler.reset();
    let c0 = sampler.ticks();
    let q0 = sampler.waits();
    let t0 = Instant::now();
    let _ = phase.send(Phase::Send {
        per_visitor: args.rate / args.visitors.max(1) as f64,
    });
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let _ = phase.send(Phase::Hold);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = Sampler::cpu_percent(c0, sampler.ticks(), elapsed);
    let (q_server, q_gen) = sampler.wait_percent(q0, elapsed);
    let peak = sampler.peak_kb();
    // The same 2 s for what was in flight as the other modes: throughput
    // and latency count what arrived by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut lat = lock(&c.lat).clone();
    lat.sort_unstable();
    let mut ack_lat = lock(&c.ack_lat).clone();
    ack_lat.sort_unstable();
    // Then, for the exactly-once check only, wait (up to 60 s) until every
    // XADD has its reply and every acked entry has been read, so a backlog
    // is not counted as lost.
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(60) {
        let replied = g(&c.acked) + g(&c.errors) >= g(&c.sent);
        let read = {
            let acked = lock(&c.acked_ids);
            let delivered = lock(&c.delivered_ids);
            acked.iter().all(|m| delivered.contains(m))
        };
        if replied && read {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_s = drain.elapsed().as_secs_f64();
    let _ = phase.send(Phase::Quit);
    let (lost, unacked_read, delivered_total) = {
        let acked = lock(&c.acked_ids);
        let delivered = lock(&c.delivered_ids);
        (
            acked.iter().filter(|m| !delivered.contains(m)).count(),
            delivered.iter().filter(|m| !acked.contains(m)).count(),
            delivered.len(),
        )
    };
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut admin)
        .await
        .context("INFO persistence")?;
    let aof_status = info
        .lines()
        .find_map(|l| l.strip_prefix("aof_last_write_status:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    println!(
        "holdfast-load redis streams: {version}, appendonly {appendonly}, appendfsync {appendfsync}: {} visitors (XADD), {agents} agents (XREAD BLOCK), {:.0} msg/s offered for {elapsed:.1} s (connect {connect_s:.1} s)",
        args.visitors, args.rate
    );
    let (v2a_json, a2v_json) = report_flows(
        &Flow {
            sent: g(&c.sent),
            acked: g(&c.acked),
            lat: &lat,
        },
        &Flow {
            sent: 0,
            acked: 0,
            lat: &[],
        },
        elapsed,
    );
    crate::lat_line("XADD -> reply", &ack_lat);
    println!(
        "  exactly once: {delivered_total} read in all after {drain_s:.1} s more, lost {lost}  duplicates {}  reordered {}  read but not acked {unacked_read}  errors {}  AOF writes {aof_status}",
        g(&c.duplicates),
        g(&c.reordered),
        g(&c.errors)
    );
    println!(
        "  redis peak RSS {peak} KB  CPU {cpu:.0}%  waiting for a CPU {q_server:.0}% (generator {q_gen:.0}%)"
    );
    Ok(serde_json::json!({
        "mode": "chat", "target": version, "protocol": "redis streams, appendfsync always",
        "visitors": args.visitors, "agents": agents,
        "rate": args.rate, "agent_rate": 0.0, "size": args.size,
        "duration_s": elapsed, "connect_s": connect_s,
        "v2a": v2a_json, "a2v": a2v_json, "ack_latency_us": crate::lat_json(&ack_lat),
        "errors": g(&c.errors), "duplicates": g(&c.duplicates), "reordered": g(&c.reordered),
        "lost": lost, "read_not_acked": unacked_read, "delivered_total": delivered_total, "drain_s": drain_s,
        "redis": { "appendonly": appendonly, "appendfsync": appendfsync, "aof_last_write_status": aof_status },
        "server": { "peak_rss_kb": peak, "cpu_percent": cpu, "runq_wait_percent": q_server },
        "generator_runq_wait_percent": q_gen,
    }))
}
