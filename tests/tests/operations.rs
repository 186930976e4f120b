//! Operations: health and metrics, dead-peer cuts, slow consumers, retention
//! snapshots, and native TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use holdfast_protocol::agent::{ConversationState, Event, LiveEvent, Resume, ServerMsg};
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::flows::{T, agent};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::{WsVisitor, http_request, new_id};

#[tokio::test]
async fn healthz_and_metrics_report_what_happened() {
    let srv = TestServer::start().await;
    let _alice = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("count me").await.unwrap();
    let (status, body) = http_request(srv.http(), "GET", "/healthz", None)
        .await
        .unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let admin = srv.running().admin_addr.unwrap();
    let (status, body) = http_request(admin, "GET", "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    for line in [
        "holdfast_agent_connections 1",
        "holdfast_visitor_ws_connections 1",
        "holdfast_messages_in_total 1",
        "holdfast_resumes_snapshot_total 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("holdfast_commit_batch_ops_count"));
    assert!(text.contains("holdfast_commit_seconds_bucket{le=\"0.01\"}"));
    srv.stop().await;
}

#[tokio::test]
async fn a_blackholed_agent_is_cut_after_the_silence_limit() {
    let srv = TestServer::start_with(|c| {
        c.liveness.heartbeat = Duration::from_millis(100);
        c.liveness.dead_after = Duration::from_millis(500);
    })
    .await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let (mut a, ok) = RawAgent::login(proxy.addr, "alice", PASSWORD)
        .await
        .unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)));
    // While the link is healthy the server heartbeats us.
    a.recv_until(T, |m| matches!(m, ServerMsg::Heartbeat))
        .await
        .unwrap();
    let cuts = || srv.running().ctx.metrics.dead_peer_cuts.get();
    assert_eq!(cuts(), 0);
    // Speak once, then pull the cable: the silence clock starts here.
    a.send(&holdfast_protocol::agent::ClientMsg::Heartbeat)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.blackhole(true);
    let start = Instant::now();
    while cuts() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "never cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(350),
        "cut too early: {took:?}"
    );
    assert!(
        !srv.running().ctx.hub.agents_online(1),
        "agent marked offline"
    );
    srv.stop().await;
}

/// At the real defaults (3 s heartbeat, 10 s silence), a pulled cable is
/// noticed between 10 and about 11 s.
#[tokio::test]
async fn dead_peer_cut_at_the_real_three_second_defaults() {
    let srv = TestServer::start_with(|c| {
        c.liveness = holdfast_protocol::liveness::LivenessConfig::default();
    })
    .await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let (mut a, ok) = RawAgent::login(proxy.addr, "alice", PASSWORD)
        .await
        .unwrap();
    let ServerMsg::LoginOk(ok) = ok else { panic!() };
    assert_eq!((ok.heartbeat_ms, ok.dead_after_ms), (3000, 10_000));
    let t0 = Instant::now();
    a.recv_until(Duration::from_secs(5), |m| {
        matches!(m, ServerMsg::Heartbeat)
    })
    .await
    .unwrap();
    let hb = t0.elapsed();
    assert!(
        hb >= Duration::from_millis(2500),
        "heartbeat only after quiet: {hb:?}"
    );
    a.send(&holdfast_protocol::agent::ClientMsg::Heartbeat)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.blackhole(true);
    let start = Instant::now();
    while srv.running().ctx.metrics.dead_peer_cuts.get() == 0 {
        assert!(start.elapsed() < Duration::from_secs(15), "never cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    eprintln!("blackhole to dead-peer cut at defaults: {took:?}");
    assert!(
        took >= Duration::from_millis(9500) && took <= Duration::from_millis(11_500),
        "{took:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_cut_and_resumes_without_loss() {
    let srv = TestServer::start_with(|c| {
        c.hub.agent_queue = 8;
        c.visitor.msg_rate = 10_000.0;
        c.visitor.msg_burst = 10_000.0;
        // The flooding visitor reads its own echoes (4.8 MB) as it goes.
        c.hub.visitor_queue_bytes = 64 * 1024 * 1024;
    })
    .await;
    let device = new_id();
    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, None))
        .await
        .unwrap();
    let snap = a
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(s) = snap else {
        unreachable!()
    };
    // Alice stops reading. A visitor floods big messages.
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let big = "x".repeat(8000);
    let n = 600;
    for i in 0..n {
        v.send_json(&VisitorIn::Send {
            id: new_id(),
            body: format!("{i:04} {big}"),
            attachment: None,
        })
        .await
        .unwrap();
    }
    let mut acks = 0;
    v.wait_for(Duration::from_secs(120), |m| {
        acks += usize::from(matches!(m, VisitorOut::Ack { .. }));
        acks == n
    })
    .await
    .unwrap();
    let start = Instant::now();
    while srv.running().ctx.metrics.slow_consumer_cuts.get() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "slow consumer never cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    // Resume from the cursor: every message exactly once, in order.
    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, Some(s.seq)))
        .await
        .unwrap();
    let ok = a.recv(T).await.unwrap().unwrap();
    assert!(
        matches!(ok, ServerMsg::LoginOk(ref o) if o.resume == Resume::Replay { after: s.seq }),
        "{ok:?}"
    );
    let mut got = Vec::new();
    let mut last = s.seq;
    while got.len() < n {
        match a.recv(Duration::from_secs(20)).await.unwrap() {
            Some(ServerMsg::Event { seq, event }) => {
                assert_eq!(seq, last + 1);
                last = seq;
                if let Event::Message(m) = event
                    && !matches!(m.author, holdfast_protocol::agent::Author::System)
                {
                    got.push(m.body[..4].to_string());
                }
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, want);
    srv.stop().await;
}

#[tokio::test]
async fn a_cursor_older_than_retention_gets_an_explicit_snapshot() {
    let srv = TestServer::start_with(|c| {
        c.writer.retention = Duration::from_millis(1);
        c.writer.prune_every = Duration::from_millis(50);
    })
    .await;
    let device = new_id();
    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, None))
        .await
        .unwrap();
    let snap = a
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(s) = snap else {
        unreachable!()
    };
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.send_json(&VisitorIn::LeaveMessage {
        id: new_id(),
        body: "while you were out".into(),
        email: None,
    })
    .await
    .unwrap();
    v.wait_for(T, |m| matches!(m, VisitorOut::Ack { .. }))
        .await
        .unwrap();
    // Let pruning run past those events, then nudge the writer once more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = v.say_acked("nudge").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = v.say_acked("nudge 2").await;

    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, Some(s.seq)))
        .await
        .unwrap();
    let ok = a.recv(T).await.unwrap().unwrap();
    let ServerMsg::LoginOk(ok) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(
        ok.resume,
        Resume::Snapshot,
        "cursor {} is older than retention",
        s.seq
    );
    let snap = a
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(snap) = snap else {
        unreachable!()
    };
    assert!(!snap.recovered);
    assert!(snap.seq > s.seq);
    assert!(
        snap.conversations
            .iter()
            .any(|c| c.state == ConversationState::LeftMessage
                || c.state == ConversationState::Active)
    );
    assert!(snap.messages.iter().any(|m| m.body == "while you were out"));
    srv.stop().await;
}

#[tokio::test]
async fn native_tls_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed by scripts/test-all");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (c2, k2) = (cert.clone(), key.clone());
    let srv = TestServer::start_with(move |c| {
        c.tls = Some(holdfast_server::config::TlsFiles { cert: c2, key: k2 });
    })
    .await;
    let url = format!("https://localhost:{}/healthz", srv.http().port());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .args([
            "--resolve",
            &format!("localhost:{}:127.0.0.1", srv.http().port()),
            &url,
        ])
        .output()
        .await
        .expect("curl is installed by scripts/test-all");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port is not served as plaintext.
    let r = http_request(srv.http(), "GET", "/healthz", None).await;
    assert!(!matches!(r, Ok((200, _))));
    srv.stop().await;
}

#[tokio::test]
async fn a_visitor_list_bigger_than_a_frame_arrives_in_parts() {
    // With a 16 KiB frame limit, 120 visitors do not fit in one `Visitors`
    // message (at full scale: 5,000 visitors against 1 MiB). Login used to
    // fail there for every agent; now the list comes in parts.
    let srv = TestServer::start_with(|c| c.max_frame = 16 * 1024).await;
    let mut visitors = Vec::new();
    for _ in 0..120 {
        visitors.push(WsVisitor::connect(srv.http(), "acme").await.unwrap());
    }
    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, new_id(), None))
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut first_part = None;
    let mut parts = 0;
    let start = Instant::now();
    while seen.len() < 120 {
        assert!(start.elapsed() < T, "only {} visitors listed", seen.len());
        match a.recv(T).await.unwrap() {
            Some(ServerMsg::Live(LiveEvent::Visitors(list))) => {
                assert!(first_part.is_none(), "a second full list");
                first_part = Some(list.len());
                parts += 1;
                seen.extend(list.into_iter().map(|v| v.id));
            }
            Some(ServerMsg::Live(ev)) if !ev.upserts().is_empty() => {
                assert!(first_part.is_some(), "an upsert before the list");
                parts += 1;
                seen.extend(ev.upserts().iter().map(|v| v.id.clone()));
            }
            Some(_) => {}
            None => panic!("the server closed the login"),
        }
    }
    let first = first_part.unwrap();
    assert!(first > 0 && first < 120, "first part had {first}");
    // The rest comes as a few messages of many visitors each, not as a
    // frame per visitor (which cost 5,000 frames an agent in a storm).
    assert!(parts <= 8, "the list took {parts} messages");
    drop(visitors);
    srv.stop().await;
}

/// An admin runs CLI changes against the live server's SQLite file: the
/// server's writer must wait its turn for the write lock, not refuse a
/// visitor's message with "unavailable" because a CLI commit landed
/// between its first read and its first write. A password reset did that
/// to a bystander's message in a full CI run (`attacks_agent`, "database
/// is locked"); here a cheaper change, every 2 ms, so that many land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_changes_on_the_live_database_refuse_no_visitor_message() {
    use holdfast_server::limits::Rate;
    // Fast enough that the writer is busy all along, and nothing refused
    // for being fast.
    let srv = TestServer::start_with(|c| {
        c.visitor.msg_rate = 1e6;
        c.visitor.msg_burst = 1e6;
        c.visitor.rates.visitor_messages = Rate::new(1e6, 1_000_000);
        c.visitor.rates.addr_messages = Rate::new(1e6, 1_000_000);
    })
    .await;
    let _alice = agent(&srv, "alice").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cli = {
        let dir = srv.dir.path().to_path_buf();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let conn = holdfast_server::store::open_connection(&dir).unwrap();
            let mut changes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                holdfast_server::admin::set_disabled(&conn, "bob", false).unwrap();
                changes += 1;
                // An admin's commands, fast: not one lock held for ever.
                std::thread::sleep(Duration::from_millis(2));
            }
            changes
        })
    };
    let mut refused = Vec::new();
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    for i in 0..300 {
        match v.say_acked(&format!("message {i}")).await.unwrap() {
            VisitorOut::Ack { .. } => {}
            other => refused.push(other),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = cli.join().unwrap();
    assert!(changes > 0);
    assert!(
        refused.is_empty(),
        "{} of 300 refused: {:?}",
        refused.len(),
        refused.first()
    );
}
