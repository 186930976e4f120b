//! Benchmark of attachment uploads (not a test): the real server binary on
//! loopback. Measures the throughput of one 20 MB upload (in 1 MiB
//! PATCHes), then the server's RSS while 50 visitors upload 20 MB each at
//! once. The per-visitor upload rate is lifted to measure the server, not
//! the limit. See BENCHMARKS.md section 9.
//!
//! `--postgres` runs the server on a throwaway PostgreSQL started by the
//! harness (fsync on), where the bytes go into the database instead of
//! the data dir.
//!
//! ```sh
//! cargo build --release -p holdfast-server
//! HOLDFAST_SERVER_BIN=target/release/holdfast-server \
//!   cargo run --release -p holdfast-tests --example attach_bench [-- --postgres]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast_tests::pg::TestPg;
use holdfast_tests::server::{LOOPBACK_LOAD_TOML, ServerProcess, rss_mb, seed_on};
use holdfast_tests::visitor::{WsVisitor, http_exchange};

const SIZE: usize = 20 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const PARALLEL: usize = 50;

fn file() -> Vec<u8> {
    let mut v = b"%PDF-1.4\n".to_vec();
    let mut x: u32 = 7;
    while v.len() < SIZE {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push((x >> 16) as u8);
    }
    v
}

async fn upload(http: SocketAddr, token: &str, bytes: &[u8]) {
    let body = format!("{{\"length\": {}, \"name\": \"bench.pdf\"}}", bytes.len());
    let c = http_exchange(
        None,
        http,
        "POST",
        "/v1/attach",
        &[("x-holdfast-token", token)],
        Some(body.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(c.status, 201, "{}", String::from_utf8_lossy(&c.body));
    let v: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    let mut at = 0usize;
    for part in bytes.chunks(CHUNK) {
        let off = at.to_string();
        let r = http_exchange(
            None,
            http,
            "PATCH",
            &url,
            &[("x-holdfast-token", token), ("upload-offset", &off)],
            Some(part),
        )
        .await
        .unwrap();
        assert!(r.status == 204 || r.status == 200, "{}", r.status);
        at += part.len();
    }
}

async fn visitor(http: SocketAddr) -> WsVisitor {
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    v.say_acked("bench").await.unwrap();
    v
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
        format!(
            "{LOOPBACK_LOAD_TOML}attach_rate_bytes = 100000000000\nattach_pending_per_addr = 1000\n"
        ),
    )
    .unwrap();
    let mut srv = ServerProcess::start_on(
        dir.path(),
        url.as_deref(),
        &["--config", conf.to_str().unwrap()],
        None,
    );
    println!(
        "store: {}",
        if postgres {
            "PostgreSQL (harness's own, fsync on)"
        } else {
            "SQLite and files in the data dir"
        }
    );
    let pid = srv.child.as_ref().unwrap().id();
    let http = srv.http;
    let data = Arc::new(file());

    let v = visitor(http).await;
    let rss_idle = rss_mb(pid).unwrap();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        upload(http, &v.token, &data).await;
        let s = t.elapsed().as_secs_f64();
        rates.push(SIZE as f64 / s / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "one 20 MB upload, 1 MiB chunks: median {:.0} MB/s (runs: {:?})",
        rates[rates.len() / 2],
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );

    let mut vs = Vec::new();
    for _ in 0..PARALLEL {
        vs.push(visitor(http).await);
    }
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
    let t = Instant::now();
    let mut tasks = Vec::new();
    for v in &vs {
        let (token, data) = (v.token.clone(), data.clone());
        tasks.push(tokio::spawn(
            async move { upload(http, &token, &data).await },
        ));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    println!(
        "{PARALLEL} parallel 20 MB uploads: {:.1} s, {:.0} MB/s in all; server RSS idle {rss_idle:.1} MB, peak {peak:.1} MB",
        secs,
        (PARALLEL * SIZE) as f64 / secs / 1e6
    );
    srv.terminate();
    drop(pg);
}
