//! The chaos suite, CI-sized: real server and agent processes, every link
//! through a fault proxy, at least 5,000 messages and 50 mixed faults with
//! server and agent SIGKILLs; then dead-link detection and false disconnects
//! at the real default timings. The long run is `holdfast-chaos --long`
//! (see RELIABILITY.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use holdfast_tests::chaos::{ChaosConfig, Spread, Timings, Topology, run};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::server::{PASSWORD, ServerProcess, seed};
use holdfast_tests::visitor::WsVisitor;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast-chaos-agent"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ci_run_loses_and_duplicates_nothing() {
    let cfg = ChaosConfig {
        topology: Topology::Single,
        visitors: 6,
        agents: 3,
        messages: 5_000,
        link_faults: 50,
        server_kills: 2,
        agent_kills: 2,
        redis_outages: 0,
        redis_down: Duration::ZERO,
        pg_restarts: 0,
        pg_down: Duration::ZERO,
        timings: Timings::fast(),
        rate: 80.0,
        time_limit: Duration::from_secs(240),
        drain_limit: Duration::from_secs(60),
        agent_bin: agent_bin(),
        verbose: std::env::var_os("HOLDFAST_CHAOS_VERBOSE").is_some(),
    };
    let rep = run(cfg).await;
    println!("=== chaos CI run ===\n{rep}");
    for e in rep.visitor_errors.iter().take(10) {
        println!("visitor error: {e}");
    }
    let c = &rep.checker;
    assert!(c.sent >= 5_000, "sent {}", c.sent);
    assert!(
        rep.total_faults >= 54,
        "faults applied: {}",
        rep.total_faults
    );
    assert_eq!(
        rep.faults
            .iter()
            .find(|(k, _)| *k == "server_kill9")
            .map(|(_, n)| *n),
        Some(2)
    );
    assert_eq!(c.lost, 0, "{rep}");
    assert_eq!(c.duplicated, 0, "{rep}");
    assert_eq!(c.reordered, 0, "{rep}");
    assert_eq!(c.unexpected, 0, "{rep}");
    assert_eq!(rep.shown_twice, 0, "{rep}");
    assert_eq!(rep.commit_order_violations, 0, "{rep}");
    assert_eq!(rep.undrained, 0, "{rep}");
    // Both restarts brought back every link no fault touched: a client
    // locked out or backing off far past the restart shows up here.
    assert_eq!(rep.server_recovery.n, 2, "{rep}");
}

/// A `holdfast-chaos-agent` process with its stdout as timestamped lines.
struct AgentProcess {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
}

impl AgentProcess {
    fn start(server: &str, user: &str, store: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new(agent_bin())
            .args(["--server", server, "--user", user, "--store"])
            .arg(store)
            .env("HOLDFAST_PASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line satisfying `pred`, with the time it was read.
    async fn wait(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> (Instant, String) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (t, l) = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .expect("timed out waiting for the agent")
                .expect("agent exited");
            if pred(&l) {
                return (t, l);
            }
        }
    }

    async fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.write_all(b"\n").await.unwrap();
    }
}

/// The real server at its shipped defaults, and alice's real client core
/// as a process reaching it through a fault proxy.
async fn alice_behind_a_proxy() -> (tempfile::TempDir, ServerProcess, Proxy, AgentProcess) {
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    seed(&dir.path().join("srv"));
    let srv = ServerProcess::start(&dir.path().join("srv"), &[]);
    let proxy = Proxy::start(srv.agent).await;
    let a = AgentProcess::start(
        &proxy.addr.to_string(),
        "alice",
        &dir.path().join("alice.sqlite3"),
    );
    (dir, srv, proxy, a)
}

/// Dead-link detection with the real client core at the shipped defaults
/// (3 s heartbeat, dead after 10 s): blackhole to "declared dead" and to the
/// reconnect attempt, three times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_link_detected_within_ten_seconds_at_defaults() {
    let (_dir, _srv, proxy, mut a) = alice_behind_a_proxy().await;
    let mut dead = Vec::new();
    let mut attempt = Vec::new();
    for round in 0..3 {
        a.wait(Duration::from_secs(30), |l| l == "state live").await;
        // Pull the cable at a random point of the heartbeat cycle.
        tokio::time::sleep(Duration::from_millis(500 + 1100 * round)).await;
        proxy.blackhole(true);
        let t0 = Instant::now();
        let (t1, l) = a
            .wait(Duration::from_secs(20), |l| {
                l.starts_with("state ") && l != "state live"
            })
            .await;
        let (t2, _) = a
            .wait(Duration::from_secs(20), |l| l == "state connecting")
            .await;
        println!(
            "round {round}: blackhole -> declared dead ({l}) {:.2}s, -> reconnect attempt {:.2}s",
            (t1 - t0).as_secs_f64(),
            (t2 - t0).as_secs_f64()
        );
        dead.push(t1 - t0);
        attempt.push(t2 - t0);
        proxy.blackhole(false);
    }
    println!(
        "blackhole -> declared dead: {}\nblackhole -> reconnect attempt: {}",
        Spread::of(&dead),
        Spread::of(&attempt)
    );
    // The bound the issue sets, with a little room for a loaded 2-core CI
    // machine's scheduling; the figures above are the measurement.
    for d in &attempt {
        assert!(
            *d <= Duration::from_millis(10_500),
            "reconnect attempt after {d:?}"
        );
    }
    a.send("shutdown").await;
    let _ = a.child.wait().await;
}

/// 500 ms ± 300 ms of latency on a link that loses nothing must not be
/// mistaken for a dead one, by either side, at the default timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_disconnects_under_high_latency_at_defaults() {
    let (_dir, srv, proxy, mut a) = alice_behind_a_proxy().await;
    a.wait(Duration::from_secs(30), |l| l == "state live").await;
    proxy.latency(Duration::from_millis(500), Duration::from_millis(300));
    let accepted = proxy.connections_accepted();
    // Some traffic too: a visitor talking to alice through the slow link.
    let mut v = WsVisitor::connect(srv.http, "acme").await.unwrap();
    let secs = std::env::var("HOLDFAST_LATENCY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40u64);
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        v.say_acked(&format!("slow-{sent}")).await.unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(2000)).await;
    }
    // Everything sent arrived at alice, in order, over the slow link.
    let mut got = 0;
    while got < sent {
        let (_, l) = a
            .wait(Duration::from_secs(20), |l| {
                l.starts_with("msg ") || l.starts_with("state ")
            })
            .await;
        assert!(!l.starts_with("state "), "connection state changed: {l}");
        assert!(l.ends_with(&format!(" slow-{got}")), "{l}");
        got += 1;
    }
    proxy.latency(Duration::ZERO, Duration::ZERO);
    // No state change line at all, and no new connection through the proxy.
    let mut false_disconnects = 0;
    while let Ok((_, l)) = a.lines.try_recv() {
        if l.starts_with("state ") {
            false_disconnects += 1;
        }
    }
    false_disconnects += proxy.connections_accepted() - accepted;
    println!(
        "latency 500±300 ms for {secs}s, {sent} messages: false disconnects = {false_disconnects}"
    );
    assert_eq!(false_disconnects, 0);
    a.send("shutdown").await;
    let _ = a.child.wait().await;
}
