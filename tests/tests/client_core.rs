//! The real agent client core (`holdfast-client`, which the desktop app
//! runs) against a real server and real visitors, over real TCP, with link
//! faults in between. Every message has a unique body and goes through the
//! checker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    // Test bodies run on both stores are plain async fns, which
    // `allow-print-in-tests` does not cover.
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use holdfast_client::{ConnState, DeliveryState, StopReason, Update};
use holdfast_protocol::agent::Author;
use holdfast_protocol::handshake::ServerIdentity;
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::checker::{Checker, SendOutcome};
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{WsVisitor, hello, new_id};

fn core(srv: &TestServer, server: &str, user: &str, dir: &tempfile::TempDir) -> CoreAgent {
    CoreAgent::start(fast_config(
        server,
        user,
        &dir.path().join(format!("{user}.sqlite3")),
        srv.running().fingerprint,
    ))
}

async fn visitor_and_client_core_talk_through_every_delivery_state(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, &srv.agent_addr().to_string(), "alice", &dir);
    alice.live().await;

    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let seen = alice.visitor_where(|i| i.id == v.visitor).await;
    assert_eq!(seen.trail.last().unwrap().url, "https://shop.example/");

    v.say_acked("Where is my order #1142?").await.unwrap();
    let m = alice.visitor_message().await;
    assert_eq!(m.body, "Where is my order #1142?");
    assert_eq!(
        m.author,
        Author::Visitor {
            visitor: v.visitor.clone()
        }
    );

    let id = alice
        .handle
        .send_message(m.conversation, "It left the warehouse today.")
        .await
        .unwrap();
    // Queued locally first, then acked by the server, then delivered once
    // the visitor's tab acks it.
    let queued = alice
        .until("the queued copy", |u| match u {
            Update::Message(s) if s.client_id == id => Some(s.state),
            _ => None,
        })
        .await;
    assert_eq!(queued, DeliveryState::Queued);
    let (_, got) = tokio::join!(
        async {
            alice.state_of(id, DeliveryState::Sent).await;
            alice.state_of(id, DeliveryState::Delivered).await;
        },
        v.wait_message("It left the warehouse today.")
    );
    got.unwrap();
    assert_eq!(
        alice.bodies(m.conversation),
        ["Where is my order #1142?", "It left the warehouse today."]
    );
    assert_eq!(alice.handle.status().unsent, 0);
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    visitor_and_client_core_talk_through_every_delivery_state
);

/// The agent keeps typing while the cable is pulled (the link stays open
/// but carries nothing), while the connection is reset or closed, and while
/// it arrives one byte at a time; the visitor's tab loses its socket too. Nothing is lost, duplicated or reordered, and
/// what was queued goes out by itself when the link returns.
async fn link_faults_on_both_sides_lose_and_duplicate_nothing(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let agent_link = Proxy::start(srv.agent_addr()).await;
    let visitor_link = Proxy::start(srv.http()).await;
    let mut alice = core(&srv, &agent_link.addr.to_string(), "alice", &dir);
    alice.live().await;

    let mut v = WsVisitor::connect(visitor_link.addr, "acme").await.unwrap();
    v.say_acked("v-0").await.unwrap();
    let first = alice.visitor_message().await;
    let conversation = first.conversation;

    let mut check = Checker::default();
    check.sent("visitor", "v-0", SendOutcome::Acked);
    let mut agent_ids = Vec::new();
    let mut restore_to_delivered = Vec::new();
    const ROUNDS: usize = 8;
    const PER_ROUND: usize = 5;
    for round in 0..ROUNDS {
        // The agent's link fails in a different way each round.
        match round % 4 {
            0 => agent_link.blackhole(true),
            1 => agent_link.reset_all(),
            2 => agent_link.close_all(),
            _ => agent_link.slice(true),
        }
        for i in 0..PER_ROUND {
            let body = format!("a-{round}-{i}");
            let id = alice
                .handle
                .send_message(conversation, body.clone())
                .await
                .unwrap();
            // Written to the local outbox before send_message returned:
            // from here on the client core owns it.
            check.sent("agent", &body, SendOutcome::Acked);
            agent_ids.push(id);
        }
        if round % 4 == 0 {
            // Only the heartbeat can notice a pulled cable.
            let state = alice.not_live().await;
            assert!(
                matches!(
                    state,
                    ConnState::BackingOff { .. } | ConnState::Connecting | ConnState::Handshaking
                ),
                "{state:?}"
            );
            assert_eq!(alice.handle.status().unsent, PER_ROUND);
            agent_link.blackhole(false);
        }
        let restored = Instant::now();
        agent_link.slice(false);

        // The visitor's socket drops; the tab reloads and resumes from its
        // cursor, resending its unacked message with the same id.
        let body = format!("v-{}", round + 1);
        let id = new_id();
        v.send_json(&VisitorIn::Send {
            id,
            body: body.clone(),
            attachment: None,
        })
        .await
        .unwrap();
        if round % 2 == 0 {
            visitor_link.reset_all();
        } else {
            visitor_link.close_all();
        }
        v = reconnect(v, &visitor_link).await;
        v.send_json(&VisitorIn::Send {
            id,
            body: body.clone(),
            attachment: None,
        })
        .await
        .unwrap();
        v.wait_for(
            Duration::from_secs(10),
            |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
        )
        .await
        .unwrap();
        check.sent("visitor", &body, SendOutcome::Acked);

        // Everything queued this round reaches the visitor.
        let last = format!("a-{round}-{}", PER_ROUND - 1);
        // (It may already have arrived while the tab waited for its ack.)
        while !v.bodies().contains(&last) {
            v.wait_for(Duration::from_secs(10), |m| {
                matches!(m, VisitorOut::Event { .. })
            })
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: {last} not delivered: {e:#}; have {:?}",
                    v.bodies()
                )
            });
        }
        restore_to_delivered.push(restored.elapsed());
        // The round's messages reached the visitor, so they are committed;
        // their acks may still be crossing a slow link. The next round
        // counts its own unsent messages, so it starts from none.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alice.handle.status().unsent > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(alice.handle.status().unsent, 0, "round {round}: acks lost");
    }

    // Let the agent side catch up with the last visitor message.
    let last_v = format!("v-{ROUNDS}");
    alice
        .until("the last visitor message", |u| match u {
            Update::Message(m) if m.body == last_v => Some(()),
            _ => None,
        })
        .await;
    // The server's acks for the last round may still be on their way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alice.handle.status().unsent > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alice.handle.status().unsent, 0);
    let states: Vec<_> = alice
        .handle
        .messages_page(conversation, None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|m| agent_ids.contains(&m.client_id))
        .map(|m| m.state)
        .collect();
    assert_eq!(states.len(), agent_ids.len());
    assert!(
        states
            .iter()
            .all(|s| matches!(s, DeliveryState::Sent | DeliveryState::Delivered)),
        "{states:?}"
    );

    for body in v.bodies() {
        check.received("visitor", &body);
    }
    for body in alice.bodies(conversation) {
        check.received("agent", &body);
    }
    let report = check.report(&[("agent", "visitor"), ("visitor", "agent")]);
    let mut delays: Vec<_> = restore_to_delivered
        .iter()
        .map(Duration::as_millis)
        .collect();
    delays.sort_unstable();
    println!(
        "client core under link faults: {report}; link restore → backlog delivered, median {} ms, max {} ms",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicated, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unexpected, 0, "{report}");
    assert_eq!(report.acked, 1 + ROUNDS + ROUNDS * PER_ROUND);
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    link_faults_on_both_sides_lose_and_duplicate_nothing
);

async fn reconnect(v: WsVisitor, link: &Proxy) -> WsVisitor {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (token, cursor, events) = (v.token.clone(), v.cursor, v.events.clone());
    drop(v);
    loop {
        let h = hello(
            "acme",
            Some(token.clone()),
            Some(cursor),
            "https://shop.example/",
        );
        match WsVisitor::connect_with(link.addr, h).await {
            Ok(mut v) => {
                v.events = events;
                return v;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("visitor reconnect: {e:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("visitor could not reconnect: {e:#}"),
        }
    }
}

/// A server presenting a different key than the one pinned is a hard stop:
/// no login is sent, nothing in the outbox leaves, and both fingerprints
/// are shown.
async fn wrong_fingerprint_is_a_hard_stop(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let impostor = ServerIdentity::from_secret_bytes([7; 32]).fingerprint();
    let mut cfg = fast_config(
        &srv.agent_addr().to_string(),
        "alice",
        &dir.path().join("alice.sqlite3"),
        impostor,
    );
    cfg.trust_on_first_use = false;
    let mut alice = CoreAgent::start(cfg);
    let (pinned, presented) = alice
        .until("a fingerprint mismatch", |u| match u {
            Update::FingerprintMismatch {
                pinned, presented, ..
            } => Some((*pinned, *presented)),
            _ => None,
        })
        .await;
    assert_eq!(pinned, impostor);
    assert_eq!(presented, srv.running().fingerprint);
    let state = alice.stopped().await;
    assert!(
        matches!(
            state,
            ConnState::Stopped {
                reason: StopReason::FingerprintMismatch { .. }
            }
        ),
        "{state:?}"
    );
    // It does not quietly retry: the server sees no login in the next
    // second.
    assert!(
        !alice
            .seen
            .iter()
            .any(|u| matches!(u, Update::LoggedIn { .. })),
        "logged in to a server with the wrong key"
    );
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    wrong_fingerprint_is_a_hard_stop
);

/// A Login the server cannot take as sent (a 9,000-byte password is over
/// the pre-login frame limit) is refused for good, with the server's
/// reason: sending it again unchanged can only fail again.
async fn a_login_too_big_to_send_stops_with_the_reason(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = fast_config(
        &srv.agent_addr().to_string(),
        "alice",
        &dir.path().join("alice.sqlite3"),
        srv.running().fingerprint,
    );
    cfg.password = zeroize::Zeroizing::new("p".repeat(9_000));
    let mut alice = CoreAgent::start(cfg);
    let state = alice.stopped().await;
    assert!(
        matches!(
            state,
            ConnState::Stopped {
                reason: StopReason::LoginRejected {
                    code: holdfast_protocol::error::ErrorCode::TooLarge,
                    ..
                }
            }
        ),
        "{state:?}"
    );
    let attempts = alice
        .seen
        .iter()
        .filter(|u| matches!(u, Update::LoginFailed { .. }))
        .count();
    assert_eq!(attempts, 1, "the same Login was sent again");
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_login_too_big_to_send_stops_with_the_reason
);

/// The real client core caches a visitor's file with its message (across
/// a restart of the app) and fetches a download link on its own channel.
async fn client_core_keeps_a_file_message_and_links_to_the_file(backend: Backend) {
    use holdfast_protocol::agent::QueryResult;
    use holdfast_tests::visitor::http_exchange;
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, &srv.agent_addr().to_string(), "alice", &dir);
    alice.live().await;
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    v.say_acked("my invoice is wrong").await.unwrap();
    alice.visitor_message().await;

    let mut doc = b"%PDF-1.4\n".to_vec();
    doc.extend((0..5_000u32).map(|i| (i % 251) as u8));
    doc.extend_from_slice(b"\n%%EOF\n");
    let create =
        serde_json::json!({"length": doc.len(), "name": "invoice.pdf", "type": "application/pdf"});
    let c = http_exchange(
        None,
        http,
        "POST",
        "/v1/attach",
        &[("x-holdfast-token", &v.token)],
        Some(create.to_string().as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(c.status, 201);
    let aid = serde_json::from_slice::<serde_json::Value>(&c.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = http_exchange(
        None,
        http,
        "PATCH",
        &format!("/v1/attach/{aid}"),
        &[
            ("x-holdfast-token", &v.token),
            ("upload-offset", "0"),
            ("content-type", "application/offset+octet-stream"),
        ],
        Some(&doc),
    )
    .await
    .unwrap();
    assert_eq!(p.status, 200, "{}", String::from_utf8_lossy(&p.body));
    let send = serde_json::json!({"t": "send", "id": new_id(), "body": "", "attachment": aid});
    v.send_raw(&send.to_string()).await.unwrap();

    let m = alice.visitor_message().await;
    let f = m.attachment.clone().expect("the message carries the file");
    assert_eq!(
        (f.id.as_str(), f.name.as_str()),
        (aid.as_str(), "invoice.pdf")
    );
    assert_eq!(
        (f.mime.as_str(), f.size, f.image),
        ("application/pdf", doc.len() as u64, false)
    );

    let request = alice.handle.link(&aid).unwrap();
    let url = alice
        .until("the link", |u| match u {
            Update::History {
                request: r,
                result: QueryResult::AttachmentLink { url, .. },
            } if *r == request => Some(url.clone()),
            _ => None,
        })
        .await;
    let file = http_exchange(None, http, "GET", &url, &[], None)
        .await
        .unwrap();
    assert_eq!(file.status, 200);
    assert_eq!(file.body, doc);

    // The app restarts: the cached message still carries the file, once.
    let conv = m.conversation;
    alice.shutdown().await;
    let alice = core(&srv, &srv.agent_addr().to_string(), "alice", &dir);
    let files: Vec<_> = alice
        .messages(conv)
        .into_iter()
        .filter_map(|m| m.attachment.map(|f| f.id))
        .collect();
    assert_eq!(files, vec![aid]);
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(client_core_keeps_a_file_message_and_links_to_the_file);
