//! The load generator's own checks: short runs of each mode against a real
//! server, asserting on what it counted (never on timings, which belong in
//! BENCHMARKS.md). They also prove the generator can be trusted: every
//! message it sent was acked and delivered exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;

fn load(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast-load"))
        // The server this test run built: the generator is a binary outside
        // deps/, so it would otherwise build one with a narrower selection.
        .env(
            "HOLDFAST_SERVER_BIN",
            holdfast_tests::server::server_binary(),
        )
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "holdfast-load {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

#[test]
fn chat_both_ways_counts_every_message_once() {
    let r = load(&[
        "--spawn",
        "--visitors",
        "20",
        "--agents",
        "3",
        "--rate",
        "200",
        "--agent-rate",
        "60",
        "--duration",
        "2",
        "--size",
        "120",
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    for (direction, at_least) in [("v2a", 200), ("a2v", 50)] {
        let d = &r[direction];
        let sent = d["sent"].as_u64().unwrap();
        assert!(sent > at_least, "{direction}: {r}");
        assert_eq!(d["acked"], sent, "{direction}: {r}");
        assert_eq!(d["delivered"], sent, "{direction}: {r}");
    }
    assert!(r["commit"]["batches"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["server"]["peak_rss_kb"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn idle_spreads_visitors_over_child_processes() {
    // --per-process 40 with 2 agents: this process holds 38 visitors and two
    // children hold the rest, as 15,000 per process does at full scale.
    let r = load(&[
        "--mode",
        "idle",
        "--spawn",
        "--agents",
        "2",
        "--steps",
        "0,30,100",
        "--settle",
        "0",
        "--per-process",
        "40",
    ]);
    assert_eq!(r["errors"], 0, "{r}");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    for s in steps {
        assert!(s["rss_kb"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn storm_resumes_everyone_and_delivers_the_backlog_once() {
    let r = load(&[
        "--mode",
        "storm",
        "--spawn",
        "--visitors",
        "60",
        "--agents",
        "4",
    ]);
    assert_eq!(r["delivered"], 60, "{r}");
    assert_eq!(r["acked"], 60, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    // The agents came back as the app does, on their resume tickets, not
    // through four more password hashes.
    assert_eq!(r["tickets_refused"], 0, "{r}");
    assert_eq!(r["server"]["logins_by_ticket"], 4.0, "{r}");
    assert!(r["all_resumed_s"].as_f64().unwrap().is_finite(), "{r}");
    assert!(
        r["backlog_delivered_s"].as_f64().unwrap().is_finite(),
        "{r}"
    );
}

#[test]
fn redis_streams_peer_reads_every_acked_message_once_in_order() {
    // The durable peer of BENCHMARKS.md section 11: a real redis-server
    // (scripts/test-all installs it; without it the generator fails, and so
    // does this test) with its AOF fsynced before every reply.
    let r = load(&[
        "--spawn-redis-aof",
        "--visitors",
        "20",
        "--agents",
        "2",
        "--rate",
        "200",
        "--duration",
        "2",
        "--size",
        "120",
    ]);
    assert_eq!(r["redis"]["appendfsync"], "always", "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(r["reordered"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    let v2a = &r["v2a"];
    let sent = v2a["sent"].as_u64().unwrap();
    assert!(sent > 200, "{r}");
    assert_eq!(v2a["acked"], sent, "{r}");
    assert_eq!(r["delivered_total"], sent, "{r}");
    assert_eq!(r["read_not_acked"], 0, "{r}");
    assert!(r["server"]["peak_rss_kb"].as_u64().unwrap() > 0, "{r}");
}
