//! `holdfast-flood`: the worst flood one address is allowed, against a fresh
//! server, while a bystander visitor on another address keeps chatting.
//!
//! The attacker (127.0.1.1) keeps up to `--connections` WebSockets open,
//! each a new visitor, and on each sends 8 KB messages as fast as they are
//! taken (a refused one is resent after the wait it was told), plus a page
//! view and an identify with every message. The bystander (127.0.0.1)
//! sends four messages a second and times each ack. Every few hundred
//! milliseconds the server's RSS is read from `/proc`.
//!
//! It speaks the visitor protocol as plain JSON, so the same run works
//! against older server binaries (`--server`): that is how BENCHMARKS.md
//! compares before and after. Visitors only: agents' protocol changed
//! between those builds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use holdfast_tests::attack::tcp_from;
use holdfast_tests::server::{free_port, rss_mb, server_binary};
use holdfast_tests::visitor::new_id;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

#[derive(Debug, Parser)]
#[command(about = "The worst flood one address is allowed, with a bystander's ack times")]
struct Args {
    /// Server binary (default: the holdfast-server of this build).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Seconds of flood.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// WebSockets the attacker keeps open (each a new visitor).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 8000)]
    size: usize,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Pin the server to these CPUs (a taskset list, e.g. "0"); run this
    /// tool under `taskset -c 1` so the two do not share a core.
    #[arg(long)]
    pin_server: Option<String>,
}

#[derive(Default)]
struct Counts {
    stored: AtomicU64,
    refused: AtomicU64,
    pages: AtomicU64,
    identifies: AtomicU64,
    visitors: AtomicU64,
    visitors_refused: AtomicU64,
    dropped: AtomicU64,
}

struct Server {
    child: Child,
    http: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let st = Command::new(bin)
            .args(args)
            .arg("--data-dir")
            .arg(dir.path())
            .env("HOLDFAST_PASSWORD", "flood-pass-1")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?} failed");
    };
    cli(&["site", "add", "acme", "--name", "Acme"]);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new(bin)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--http")
        .arg(http.to_string())
        .arg("--agent-listen")
        .arg(agent.to_string())
        // Builds without an admin listener ignore this.
        .env("HOLDFAST_ADMIN_LISTEN", admin.to_string())
        .env("HOLDFAST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(http).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server { child, http, dir }
}

fn rss_now(pid: u32) -> f64 {
    rss_mb(pid).unwrap_or(0.0)
}

fn dir_mb(dir: &Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / 1e6
}

async fn connect(http: SocketAddr, from: IpAddr, path: &str) -> Option<(Ws, Value)> {
    let tcp = tcp_from(from, http).await.ok()?;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{http}/v1/visitor/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .ok()?;
    let hello = json!({
        "t": "hello", "site": "acme", "user_agent": "holdfast-flood",
        "page": {"url": format!("https://shop.example/{path}"), "title": "Shop", "referrer": null},
    });
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .ok()?;
    let first = next(&mut ws, Duration::from_secs(10)).await?;
    Some((ws, first))
}

async fn next(ws: &mut Ws, limit: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(limit, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).ok(),
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Send `body` as `id` and wait for its answer, acking events on the way:
/// `Ok(true)` stored, `Ok(false)` refused (after sleeping the wait told),
/// `Err` the link died.
async fn say(ws: &mut Ws, id: &Value, body: &str) -> Result<bool, ()> {
    let m = json!({"t": "send", "id": id, "body": body});
    ws.send(Message::Text(m.to_string().into()))
        .await
        .map_err(|_| ())?;
    loop {
        let m = next(ws, Duration::from_secs(30)).await.ok_or(())?;
        match m["t"].as_str() {
            Some("event") => {
                let ack = json!({"t": "ack", "seq": m["seq"]});
                ws.send(Message::Text(ack.to_string().into()))
                    .await
                    .map_err(|_| ())?;
            }
            Some("ack") if m["id"] == *id => return Ok(true),
            Some("error") if m["id"] == *id => {
                let wait = m["retry_after_ms"].as_u64().unwrap_or(200).min(1000);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                return Ok(false);
            }
            _ => {}
        }
    }
}

async fn attacker(http: SocketAddr, n: usize, size: usize, until: Instant, c: Arc<Counts>) {
    let body = "x".repeat(size);
    while Instant::now() < until {
        let Some((mut ws, first)) =
            connect(http, IpAddr::from([127, 0, 1, 1]), &n.to_string()).await
        else {
            c.dropped.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if first["t"] != "welcome" {
            c.visitors_refused.fetch_add(1, Ordering::Relaxed);
            let wait = first["retry_after_ms"].as_u64().unwrap_or(500).min(2000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            continue;
        }
        c.visitors.fetch_add(1, Ordering::Relaxed);
        let mut id = serde_json::to_value(new_id()).unwrap();
        let mut k = 0u64;
        while Instant::now() < until {
            k += 1;
            let page = json!({"t": "page", "url": format!("https://shop.example/{n}/{k}"), "title": "Product", "referrer": null});
            let ident =
                json!({"t": "identify", "id": format!("flood-{n}"), "name": format!("Name {k}")});
            if ws
                .send(Message::Text(page.to_string().into()))
                .await
                .is_err()
                || ws
                    .send(Message::Text(ident.to_string().into()))
                    .await
                    .is_err()
            {
                break;
            }
            c.pages.fetch_add(1, Ordering::Relaxed);
            c.identifies.fetch_add(1, Ordering::Relaxed);
            match say(&mut ws, &id, &body).await {
                Ok(true) => {
                    c.stored.fetch_add(1, Ordering::Relaxed);
                    id = serde_json::to_value(new_id()).unwrap();
                }
                Ok(false) => {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                }
                Err(()) => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// The bystander's ack times, and how many of its messages failed.
async fn bystander(http: SocketAddr, until: Instant) -> (Vec<Duration>, u32) {
    let (mut ws, first) = connect(http, IpAddr::from([127, 0, 0, 1]), "bystander")
        .await
        .expect("the bystander connects");
    assert_eq!(first["t"], "welcome", "{first}");
    let (mut times, mut failed) = (Vec::new(), 0);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let id = serde_json::to_value(new_id()).unwrap();
        let t = Instant::now();
        match say(&mut ws, &id, &format!("bystander {n}")).await {
            Ok(true) => times.push(t.elapsed()),
            Ok(false) | Err(()) => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (times, failed)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let bin = args.server.clone().unwrap_or_else(server_binary);
    let srv = start(&bin);
    let pid = srv.child.id();
    if let Some(cpus) = &args.pin_server {
        let st = Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "taskset failed");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = rss_now(pid);
    let base_disk = dir_mb(srv.dir.path());
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for n in 0..args.connections {
        tasks.push(tokio::spawn(attacker(
            srv.http,
            n,
            args.size,
            until,
            counts.clone(),
        )));
    }
    let by = tokio::spawn(bystander(srv.http, until));
    let mut rss = Vec::new();
    while Instant::now() < until {
        rss.push(rss_now(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let (times, failed) = by.await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end_rss = rss_now(pid);
    let disk = dir_mb(srv.dir.path()) - base_disk;
    rss.sort_by(f64::total_cmp);
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let c = &counts;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = json!({
        "label": args.label,
        "server": bin.display().to_string(),
        "seconds": secs,
        "attacker": {
            "connections": args.connections,
            "messages_stored": get(&c.stored),
            "messages_stored_per_sec": get(&c.stored) as f64 / secs,
            "messages_refused": get(&c.refused),
            "page_views_sent": get(&c.pages),
            "identifies_sent": get(&c.identifies),
            "visitors_created": get(&c.visitors),
            "visitors_refused": get(&c.visitors_refused),
            "links_dropped": get(&c.dropped),
        },
        "server_rss_mb": {
            "before": base_rss, "median": pct(&rss, 0.5), "peak": pct(&rss, 1.0), "after": end_rss,
        },
        "disk_growth_mb": disk,
        "bystander": {
            "acks": ms.len(), "failed": failed,
            "p50_ms": pct(&ms, 0.5), "p99_ms": pct(&ms, 0.99), "max_ms": pct(&ms, 1.0),
        },
    });
    println!(
        "{} {:.0} s: attacker stored {} messages ({:.0}/s), {} refused, {} visitors ({} refused); \
         server RSS {:.0} MB before, {:.0} median, {:.0} peak, {:.0} after; disk +{:.0} MB; \
         bystander {} acks, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failed",
        args.label,
        secs,
        get(&c.stored),
        get(&c.stored) as f64 / secs,
        get(&c.refused),
        get(&c.visitors),
        get(&c.visitors_refused),
        base_rss,
        pct(&rss, 0.5),
        pct(&rss, 1.0),
        end_rss,
        disk,
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        pct(&ms, 1.0),
        failed
    );
    if let Some(p) = args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
}
