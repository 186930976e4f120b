//! Benchmark of agent uploads over the agent channel (not a test): the real
//! server binary on loopback and the real client core. Measures the time
//! from `send_file_bytes` of a 20 MB file to its upload completing (128 KiB
//! writes, one in flight, each fsynced before its answer), the server's
//! RSS meanwhile, and how long a text message sent during an upload waits
//! for its ack. The upload rate limit is lifted to measure the path, not
//! the limit. See BENCHMARKS.md section 9.
//!
//! ```sh
//! cargo build -p holdfast-server --release   # or use the debug build
//! HOLDFAST_SERVER_BIN=target/release/holdfast-server \
//!   cargo run -p holdfast-tests --example agent_upload_bench [-- --postgres]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast_client::{ClientConfig, Update, UploadState};
use holdfast_protocol::visitor::VisitorOut;
use holdfast_tests::core_agent::CoreAgent;
use holdfast_tests::pg::TestPg;
use holdfast_tests::server::{LOOPBACK_LOAD_TOML, PASSWORD, ServerProcess, rss_mb, seed_on};
use holdfast_tests::visitor::WsVisitor;
use zeroize::Zeroizing;

const SIZE: usize = 20 * 1024 * 1024;
const RUNS: usize = 5;

fn file(seed: u32) -> Vec<u8> {
    let mut v = b"%PDF-1.4\n".to_vec();
    let mut x = seed;
    while v.len() < SIZE {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push((x >> 16) as u8);
    }
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let postgres = std::env::args().any(|a| a == "--postgres");
    let pg = postgres.then(TestPg::start);
    let url = pg.as_ref().map(|pg| pg.create_db("holdfast"));
    let dir = tempfile::tempdir().unwrap();
    seed_on(dir.path(), url.as_deref());
    let conf = dir.path().join("bench.toml");
    std::fs::write(
        &conf,
        format!("{LOOPBACK_LOAD_TOML}attach_rate_bytes = 100000000000\n"),
    )
    .unwrap();
    let mut srv = ServerProcess::start_on(
        dir.path(),
        url.as_deref(),
        &["--config", conf.to_str().unwrap()],
        None,
    );
    let pid = srv.child.as_ref().unwrap().id();
    println!(
        "store: {}",
        if postgres {
            "PostgreSQL"
        } else {
            "SQLite and files in the data dir"
        }
    );

    let app = tempfile::tempdir().unwrap();
    let mut cfg = ClientConfig::new(
        srv.agent.to_string(),
        "alice",
        Zeroizing::new(PASSWORD.to_owned()),
        app.path().join("alice.sqlite3"),
    );
    cfg.expected_fingerprint = None;
    let mut alice = CoreAgent::start(cfg);
    alice
        .until("the trust prompt", |u| {
            matches!(u, Update::FingerprintUnknown { .. }).then_some(())
        })
        .await;
    alice.handle.trust_fingerprint(true).await.unwrap();
    alice.live().await;
    let mut v = WsVisitor::connect(srv.http, "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("bench").await.unwrap() else {
        panic!("no ack")
    };
    alice
        .conversation_where(|c| c.id == conversation && c.assigned.is_some())
        .await;

    let rss_idle = rss_mb(pid).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0.0f64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mb(pid).unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };
    let mut rates = Vec::new();
    let mut waits = Vec::new();
    for run in 0..RUNS {
        let data = file(run as u32 + 1);
        let t = Instant::now();
        let id = alice
            .handle
            .send_file_bytes(conversation, "bench.pdf".into(), data, String::new())
            .await
            .unwrap();
        let copied = t.elapsed();
        // Half-way, a text message: how long it waits for its ack behind
        // the file's writes.
        alice
            .until("half the upload", |u| match u {
                Update::Upload { id: i, sent, .. } if *i == id && *sent >= SIZE as u64 / 2 => {
                    Some(())
                }
                _ => None,
            })
            .await;
        let m0 = Instant::now();
        let msg = alice
            .handle
            .send_message(conversation, format!("meanwhile {run}"))
            .await
            .unwrap();
        let mut msg_wait = None;
        alice
            .until("the upload to complete", |u| match u {
                Update::CommandDone { id: i, .. } if *i == msg => {
                    msg_wait = Some(m0.elapsed());
                    None
                }
                Update::Upload { id: i, state, .. }
                    if *i == id && *state == UploadState::Sending =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
        let secs = t.elapsed().as_secs_f64();
        rates.push(SIZE as f64 / secs / 1e6);
        if msg_wait.is_none() {
            alice
                .until("the message's ack", |u| match u {
                    Update::CommandDone { id: i, .. } if *i == msg => Some(()),
                    _ => None,
                })
                .await;
            msg_wait = Some(m0.elapsed());
        }
        waits.push(msg_wait.unwrap().as_secs_f64() * 1000.0);
        println!(
            "run {run}: {:.1} MB/s (copy into the data dir {:.0} ms), message ack during it {:.0} ms",
            rates[run],
            copied.as_secs_f64() * 1000.0,
            waits[run]
        );
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    println!(
        "one 20 MB agent upload, 128 KiB writes: median {:.1} MB/s; a message sent half-way: median ack {:.0} ms; server RSS idle {rss_idle:.1} MB, peak {peak:.1} MB",
        median(rates),
        median(waits)
    );
    alice.shutdown().await;
    srv.terminate();
    drop(pg);
}
