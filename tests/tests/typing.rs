//! Typing indicators both ways and sneak peek (issue 17, PROTOCOL.md
//! 10.18), end to end over WebSocket and long-poll visitors and the real
//! agent client core: typing and drafts arrive, the server's throttle
//! holds, a site with sneak peek off never shows a draft, nothing is
//! stored, signals never disturb real messages, and the agent's typing
//! reaches the visitor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{ConversationId, ConversationState};
use holdfast_protocol::visitor::{LongPollResponse, VisitorIn, VisitorOut};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::TestServer;
use holdfast_tests::visitor::{LpVisitor, WsVisitor, http_exchange};

fn typing(draft: Option<&str>) -> VisitorIn {
    VisitorIn::Typing {
        typing: true,
        draft: draft.map(str::to_owned),
    }
}

fn stop() -> VisitorIn {
    VisitorIn::Typing {
        typing: false,
        draft: None,
    }
}

/// The next typing update for `conversation`: (typing, draft).
async fn typing_of(a: &mut CoreAgent, conversation: ConversationId) -> (bool, Option<String>) {
    a.until("a typing signal", |u| match u {
        Update::Typing {
            conversation: c,
            typing,
            draft,
            ..
        } if *c == conversation => Some((*typing, draft.clone())),
        _ => None,
    })
    .await
}

/// Every typing update for `conversation` that arrives within `window`.
async fn typing_within(
    a: &mut CoreAgent,
    conversation: ConversationId,
    window: Duration,
) -> Vec<(bool, Option<String>)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(u)) = tokio::time::timeout_at(deadline, a.updates.recv()).await {
        if let Update::Typing {
            conversation: c,
            typing,
            draft,
            ..
        } = &u
            && *c == conversation
        {
            got.push((*typing, draft.clone()));
        }
        a.seen.push(u);
    }
    got
}

/// A WebSocket visitor with a chat Alice owns.
async fn ws_chat(srv: &TestServer, alice: &mut CoreAgent) -> (WsVisitor, ConversationId) {
    let mut ws = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ws.say_acked("hello?").await.unwrap() else {
        panic!("not acked")
    };
    alice
        .conversation_where(|c| c.id == conversation && c.state == ConversationState::Active)
        .await;
    (ws, conversation)
}

/// Long-polls for `token` in a loop, as the widget does, collecting every
/// signal: a long-poll visitor is live (and its signals go out) while its
/// polls keep coming.
fn poller(
    srv: &TestServer,
    token: String,
) -> (Arc<Mutex<Vec<VisitorOut>>>, tokio::task::JoinHandle<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let (http, sink) = (srv.http(), got.clone());
    let task = tokio::spawn(async move {
        let mut after = 0;
        loop {
            let path = format!("/v1/visitor/poll?after={after}");
            let Ok(r) = http_exchange(
                None,
                http,
                "GET",
                &path,
                &[("X-Holdfast-Token", &token)],
                None,
            )
            .await
            else {
                continue;
            };
            let Ok(resp) = serde_json::from_slice::<LongPollResponse>(&r.body) else {
                continue;
            };
            for m in resp.msgs {
                match &m {
                    VisitorOut::Event { seq, .. } => after = after.max(*seq),
                    VisitorOut::Snapshot { seq, .. } => after = *seq,
                    _ => {}
                }
                sink.lock().unwrap().push(m);
            }
        }
    });
    (got, task)
}

async fn until_polled(got: &Mutex<Vec<VisitorOut>>, pred: impl Fn(&VisitorOut) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if got.lock().unwrap().iter().any(&pred) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not polled: {:?}", got.lock().unwrap());
}

#[tokio::test]
async fn a_ws_visitors_typing_and_draft_reach_the_owner() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut ws, conv) = ws_chat(&srv, &mut alice).await;
    assert!(
        matches!(
            ws.welcome,
            VisitorOut::Welcome {
                sneak_peek: Some(true),
                ..
            }
        ),
        "sneak peek is on by default: {:?}",
        ws.welcome
    );

    ws.send_json(&typing(Some("my order never"))).await.unwrap();
    assert_eq!(
        typing_of(&mut alice, conv).await,
        (true, Some("my order never".into()))
    );
    ws.send_json(&stop()).await.unwrap();
    assert_eq!(typing_of(&mut alice, conv).await, (false, None));
}

#[tokio::test]
async fn a_long_poll_visitors_typing_and_draft_reach_the_owner() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let (_polled, task) = poller(&srv, lp.token.clone());
    let VisitorOut::Ack { conversation, .. } = lp.say("hi over long-poll").await.unwrap() else {
        panic!("not acked")
    };
    alice
        .conversation_where(|c| c.id == conversation && c.state == ConversationState::Active)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lp.send(vec![typing(Some("the parcel"))]).await.unwrap();
    assert_eq!(
        typing_of(&mut alice, conversation).await,
        (true, Some("the parcel".into()))
    );
    lp.send(vec![stop()]).await.unwrap();
    assert_eq!(typing_of(&mut alice, conversation).await, (false, None));
    task.abort();
}

#[tokio::test]
async fn a_flood_of_drafts_is_throttled_by_the_server() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut ws, conv) = ws_chat(&srv, &mut alice).await;
    // 100 drafts in 1 s, faster than any widget sends them.
    let start = tokio::time::Instant::now();
    for i in 0..100u64 {
        ws.send_json(&typing(Some(&format!("draft {i}"))))
            .await
            .unwrap();
        tokio::time::sleep_until(start + Duration::from_millis(10 * (i + 1))).await;
    }
    let got = typing_within(&mut alice, conv, Duration::from_millis(1500)).await;
    assert!(
        (2..=5).contains(&got.len()),
        "{} drafts reached the agent: {got:?}",
        got.len()
    );
    // The first went out, and each later one is newer than the one before.
    assert_eq!(got[0], (true, Some("draft 0".into())));
    let n = |d: &Option<String>| -> u64 { d.as_ref().unwrap()[6..].parse().unwrap() };
    assert!(got.windows(2).all(|w| n(&w[0].1) < n(&w[1].1)), "{got:?}");
}

#[tokio::test]
async fn a_site_with_sneak_peek_off_shows_typing_without_the_draft() {
    let srv = TestServer::start().await;
    srv.admin(|db| holdfast_server::admin::set_site_sneak_peek(db, "acme", false).unwrap())
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut ws, conv) = ws_chat(&srv, &mut alice).await;
    assert!(
        matches!(
            ws.welcome,
            VisitorOut::Welcome {
                sneak_peek: Some(false),
                ..
            }
        ),
        "the widget is told not to send drafts: {:?}",
        ws.welcome
    );
    // A widget that sends one anyway: the server strips it.
    ws.send_json(&typing(Some("secret draft"))).await.unwrap();
    assert_eq!(typing_of(&mut alice, conv).await, (true, None));

    // Switched on while the chat runs: the next draft shows.
    srv.admin(|db| holdfast_server::admin::set_site_sneak_peek(db, "acme", true).unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send_json(&typing(Some("now visible"))).await.unwrap();
    assert_eq!(
        typing_of(&mut alice, conv).await,
        (true, Some("now visible".into()))
    );
}

/// Whether any file under `dir` (databases, their WAL and journals) holds
/// `needle`.
fn stored_anywhere(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[tokio::test]
async fn drafts_are_never_stored_and_signals_keep_messages_in_order_exactly_once() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut ws, conv) = ws_chat(&srv, &mut alice).await;
    const MARK: &str = "zq-draft-marker-7731";

    // Messages and bursts of drafts interleaved on one socket.
    let mut sent = Vec::new();
    for i in 0..20 {
        for j in 0..5 {
            ws.send_json(&typing(Some(&format!("{MARK} {i}.{j}"))))
                .await
                .unwrap();
        }
        let body = format!("message {i}");
        let r = ws.say_acked(&body).await.unwrap();
        assert!(matches!(r, VisitorOut::Ack { .. }), "{r:?}");
        sent.push(body);
    }
    ws.send_json(&stop()).await.unwrap();
    let last = sent.last().unwrap().clone();
    alice
        .until("the last message", |u| match u {
            Update::Message(m) if m.body == last => Some(()),
            _ => None,
        })
        .await;
    // The agent saw drafts, and every message once, in the order sent.
    assert!(
        alice
            .seen
            .iter()
            .any(|u| matches!(u, Update::Typing { draft: Some(d), .. } if d.starts_with(MARK))),
        "no draft reached the agent"
    );
    let mut bodies = alice.bodies(conv);
    bodies.retain(|b| b.starts_with("message "));
    assert_eq!(bodies, sent);
    let mut live_order: Vec<String> = alice
        .seen
        .iter()
        .filter_map(|u| match u {
            Update::Message(m) if m.body.starts_with("message ") => Some(m.body.clone()),
            _ => None,
        })
        .collect();
    live_order.dedup();
    assert_eq!(live_order, sent, "live updates in order, each once");

    // Nothing of any draft was stored: not by the server, not by the app.
    let hits = stored_anywhere(srv.dir.path(), MARK.as_bytes());
    assert!(hits.is_empty(), "drafts stored on the server: {hits:?}");
    let hits = stored_anywhere(dir.path(), MARK.as_bytes());
    assert!(hits.is_empty(), "drafts stored by the app: {hits:?}");
}

#[tokio::test]
async fn the_agents_typing_reaches_ws_and_long_poll_visitors() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut ws, conv) = ws_chat(&srv, &mut alice).await;

    alice.handle.typing(conv, true).unwrap();
    let m = ws
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, VisitorOut::Typing { .. })
        })
        .await
        .unwrap();
    assert_eq!(
        m,
        VisitorOut::Typing {
            typing: true,
            name: Some("Alice".into())
        }
    );
    // Keystrokes within the refresh send nothing more; the stop goes out.
    alice.handle.typing(conv, true).unwrap();
    alice.handle.typing(conv, false).unwrap();
    let m = ws
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, VisitorOut::Typing { .. })
        })
        .await
        .unwrap();
    assert_eq!(
        m,
        VisitorOut::Typing {
            typing: false,
            name: None
        }
    );

    // Long-poll.
    let lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let (polled, task) = poller(&srv, lp.token.clone());
    let VisitorOut::Ack { conversation, .. } = lp.say("and me").await.unwrap() else {
        panic!("not acked")
    };
    alice
        .conversation_where(|c| c.id == conversation && c.state == ConversationState::Active)
        .await;
    alice.handle.typing(conversation, true).unwrap();
    until_polled(
        &polled,
        |m| matches!(m, VisitorOut::Typing { typing: true, name: Some(n) } if n == "Alice"),
    )
    .await;
    alice.handle.typing(conversation, false).unwrap();
    until_polled(&polled, |m| {
        matches!(m, VisitorOut::Typing { typing: false, .. })
    })
    .await;
    task.abort();

    // Another agent's signal for a chat it does not own reaches nobody.
    let dir_b = tempfile::tempdir().unwrap();
    let bob = live(&srv, "bob", &dir_b).await;
    bob.handle.typing(conv, true).unwrap();
    let r = ws
        .wait_for(Duration::from_millis(800), |m| {
            matches!(m, VisitorOut::Typing { .. })
        })
        .await;
    assert!(r.is_err(), "bob's typing reached alice's visitor: {r:?}");
}
