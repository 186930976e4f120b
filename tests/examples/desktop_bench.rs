//! Benchmark of the desktop app (not a test): the real release binary in a
//! real window under Xvfb, against a real in-process server.
//!
//! For each run: RSS and CPU while idle after sign-in; the same after 10,000
//! visitor messages across 200 conversations have arrived; then cold start
//! to first frame with that cache of 10,000 messages (no network). Prints
//! each run and the medians. See `agent-desktop/BENCHMARKS.md`.
//!
//! ```sh
//! cargo build --release -p holdfast-agent --bin holdfast-agent
//! cargo run --release -p holdfast-tests --example desktop_bench -- [RUNS]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_client::{ConnState, Update, start};
use holdfast_tests::Reaper;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::WsVisitor;

#[path = "../tests/support/desktop_demo.rs"]
#[allow(dead_code)]
mod demo;

const CONVERSATIONS: usize = 200;
const PER_CONVERSATION: usize = 50;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

fn app_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_AGENT_BIN") {
        return p.into();
    }
    // target/<profile>/examples/desktop_bench -> target/<profile>/holdfast-agent
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("holdfast-agent")
}

fn xvfb() -> (Reaper, String) {
    for n in 200..260 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb");
        let reaper = Reaper(child);
        for _ in 0..200 {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (reaper, display);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    panic!("no X display");
}

/// (user+system CPU ticks, RSS KiB) of a process.
fn sample(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" of the command name; utime and stime are the
    // 14th and 15th fields overall.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

/// CPU % (of one core) over the window, and RSS at its end in MiB.
async fn idle(pid: u32) -> (f64, f64) {
    let (t0, _) = sample(pid);
    let start = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let (t1, rss) = sample(pid);
    // Linux reports CPU time in USER_HZ (100 per second).
    let cpu = (t1 - t0) as f64 / 100.0 / start.elapsed().as_secs_f64() * 100.0;
    (cpu, rss as f64 / 1024.0)
}

fn messages_in(store: &Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(store) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap_or(0)
}

struct Run {
    idle_cpu: f64,
    idle_rss: f64,
    loaded_cpu: f64,
    loaded_rss: f64,
    arrival_s: f64,
    first_frame_ms: f64,
}

async fn one_run(display: &str) -> Run {
    let srv = TestServer::start_with(|c| {
        c.visitor.msg_rate = 10_000.0;
        c.visitor.msg_burst = 10_000.0;
    })
    .await;
    {
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        holdfast_server::admin::add_agent(
            &conn,
            "acme",
            "bench",
            "Bench",
            PASSWORD,
            1000,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("bench.sqlite3");
    let addr = srv.agent_addr().to_string();
    // Pin the server's key and sign in once, as a first run of the app
    // would after the fingerprint prompt.
    {
        let (h, mut rx) = start(demo::client_config(&addr, "bench", &store)).unwrap();
        while let Some(u) = rx.recv().await {
            if matches!(u, Update::Connection(ref s) if s.state == ConnState::Live) {
                break;
            }
        }
        h.shutdown().await.unwrap();
    }

    let app = Command::new(app_binary())
        .args(["--server", &addr, "--user", "bench", "--no-notify"])
        .args(["--password-env", "HOLDFAST_BENCH_PASSWORD"])
        .arg("--store")
        .arg(&store)
        .arg("--prefs")
        .arg(dir.path().join("prefs.json"))
        .env("HOLDFAST_BENCH_PASSWORD", PASSWORD)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let app = Reaper(app);
    let pid = app.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_cpu, idle_rss) = idle(pid).await;

    // 200 visitors, 50 messages each; every visitor's chat is assigned to
    // the bench agent (capacity 1000).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CONVERSATIONS {
        let http = srv.http();
        tasks.push(tokio::spawn(async move {
            let mut v = WsVisitor::connect(http, "acme").await.unwrap();
            for j in 0..PER_CONVERSATION {
                v.say_acked(&format!("visitor {i} message {j}: 你好 👋"))
                    .await
                    .unwrap();
            }
            v
        }));
    }
    let mut visitors = Vec::new();
    for t in tasks {
        visitors.push(t.await.unwrap());
    }
    let want = (CONVERSATIONS * PER_CONVERSATION) as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while messages_in(&store) < want {
        assert!(Instant::now() < deadline, "messages did not all arrive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let arrival_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (loaded_cpu, loaded_rss) = idle(pid).await;
    drop(app);
    for v in visitors {
        v.close().await;
    }
    srv.stop().await;

    // Cold start with the 10,000-message cache: no password, so no network;
    // the workspace is drawn from the store.
    let out = Command::new(app_binary())
        .args(["--server", &addr, "--user", "bench", "--no-notify"])
        .arg("--bench-first-frame")
        .arg("--store")
        .arg(&store)
        .arg("--prefs")
        .arg(dir.path().join("prefs.json"))
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first_frame_ms = stderr
        .lines()
        .find_map(|l| l.strip_prefix("first-frame-ms "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no first frame reported: {stderr}"));
    Run {
        idle_cpu,
        idle_rss,
        loaded_cpu,
        loaded_rss,
        arrival_s,
        first_frame_ms,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let (_x, display) = xvfb();
    let mut all = Vec::new();
    for i in 0..runs {
        let r = one_run(&display).await;
        println!(
            "run {i}: idle {:.2}% CPU {:.1} MiB | after 10k messages {:.2}% CPU {:.1} MiB \
             (arrived in {:.1} s) | cold start to first frame {:.0} ms",
            r.idle_cpu, r.idle_rss, r.loaded_cpu, r.loaded_rss, r.arrival_s, r.first_frame_ms
        );
        all.push(r);
    }
    let m = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
    println!(
        "median of {runs}: idle {:.2}% CPU {:.1} MiB | after 10k messages {:.2}% CPU {:.1} MiB | \
         cold start to first frame {:.0} ms",
        m(|r| r.idle_cpu),
        m(|r| r.idle_rss),
        m(|r| r.loaded_cpu),
        m(|r| r.loaded_rss),
        m(|r| r.first_frame_ms)
    );
}
