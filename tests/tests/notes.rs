//! Internal notes (issue 17, PROTOCOL.md 10.17): agents see them, live and
//! in history; no visitor path ever carries one: not the live WebSocket,
//! not a replay after a reconnect, not a snapshot, not long-poll.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::Author;
use holdfast_protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_tests::core_agent::live;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello};

const NOTE: &str = "NOTE: customer is on a trial plan, refund policy B";

/// Every text a visitor was given, in events or a snapshot.
fn texts(msgs: &[VisitorOut]) -> Vec<String> {
    let mut out = Vec::new();
    for m in msgs {
        match m {
            VisitorOut::Event {
                event: VisitorEvent::Message(v),
                ..
            } => out.push(v.body.clone()),
            VisitorOut::Snapshot { messages, .. } => {
                out.extend(messages.iter().map(|v| v.body.clone()));
            }
            _ => {}
        }
    }
    out
}

async fn notes_reach_agents_and_never_a_visitor(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let mut ws = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ws.say_acked("where is my refund?").await.unwrap()
    else {
        panic!("not acked")
    };
    let mut lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let lp_ack = lp.say("me too, over long-poll").await.unwrap();
    let VisitorOut::Ack {
        conversation: lp_conv,
        ..
    } = lp_ack
    else {
        panic!("{lp_ack:?}")
    };

    // Alice notes in both chats, then replies in the WebSocket one.
    for c in [conversation, lp_conv] {
        let id = alice.handle.note(c, NOTE).await.unwrap();
        alice.outcome(id).await.unwrap();
    }
    let id = alice
        .handle
        .send_message(conversation, "Checking it now.")
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    // The agent's copy (its local store) has the note, as a note.
    let mine = alice.messages(conversation);
    let got = mine
        .iter()
        .find(|m| m.body == NOTE)
        .expect("the note is in the app's store");
    assert!(
        matches!(got.author, Author::Note { ref name, .. } if name == "Alice"),
        "{got:?}"
    );

    // Live WebSocket: the reply arrives, the note never did before it.
    ws.wait_message("Checking it now.").await.unwrap();
    let seen: Vec<String> = ws.bodies();
    assert!(!seen.iter().any(|b| b == NOTE), "live: {seen:?}");
    // A replay after a reconnect from the cursor.
    let ws = ws.reconnect(srv.http(), "acme").await.unwrap();
    let replayed = ws.bodies();
    assert!(!replayed.iter().any(|b| b == NOTE), "replay: {replayed:?}");
    // A snapshot: the same visitor without a cursor (another browser).
    let mut fresh = WsVisitor::connect_with(
        srv.http(),
        hello(
            "acme",
            Some(ws.token.clone()),
            None,
            "https://shop.example/",
        ),
    )
    .await
    .unwrap();
    fresh
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, VisitorOut::Snapshot { .. })
        })
        .await
        .unwrap();
    let snap = texts(&fresh.other);
    assert!(snap.iter().any(|b| b == "Checking it now."), "{snap:?}");
    assert!(!snap.iter().any(|b| b == NOTE), "snapshot: {snap:?}");
    // Long-poll: polls from the start and a fresh hello's snapshot.
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(lp.poll().await.unwrap());
    }
    let snap = lp
        .send(vec![hello(
            "acme",
            Some(lp.token.clone()),
            None,
            "https://shop.example/",
        )])
        .await
        .unwrap();
    all.extend(snap);
    lp.cursor = 0;
    all.extend(lp.poll().await.unwrap());
    let lp_texts = texts(&all);
    assert!(
        lp_texts.iter().any(|b| b == "me too, over long-poll"),
        "{lp_texts:?}"
    );
    assert!(
        !lp_texts.iter().any(|b| b == NOTE),
        "long-poll: {lp_texts:?}"
    );

    // History keeps it, for agents.
    let messages = alice.history(&ws.visitor).await;
    assert!(
        messages
            .iter()
            .any(|m| m.body == NOTE && matches!(m.author, Author::Note { .. })),
        "history: {:?}",
        messages.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(notes_reach_agents_and_never_a_visitor);
