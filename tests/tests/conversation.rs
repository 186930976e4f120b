//! A visitor and an agent talk through a real server: WebSocket and
//! long-poll on one side, the real protocol over TCP on the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::{Action, ConversationState, Event, LiveEvent, Resume, ServerMsg};
use holdfast_protocol::visitor::VisitorOut;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, PASSWORD, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor};

const T: Duration = Duration::from_secs(10);

/// Log in and skip to the point where live traffic starts.
async fn agent(srv: &TestServer, name: &str) -> RawAgent {
    let (mut a, ok) = RawAgent::login(srv.agent_addr(), name, PASSWORD)
        .await
        .unwrap();
    let ServerMsg::LoginOk(ok) = ok else {
        panic!("login failed: {ok:?}")
    };
    assert_eq!(ok.resume, Resume::Snapshot);
    a.recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    a.recv_until(T, |m| matches!(m, ServerMsg::Live(LiveEvent::Visitors(_))))
        .await
        .unwrap();
    a
}

fn message_body(m: &ServerMsg) -> Option<&str> {
    match m {
        ServerMsg::Event {
            event: Event::Message(msg),
            ..
        } => Some(&msg.body),
        _ => None,
    }
}

async fn visitor_and_agent_talk_over_websocket(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut alice = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();

    // Alice sees the visitor arrive, with the page they are on.
    let info = alice.recv_visitor(T, |i| i.id == v.visitor).await.unwrap();
    assert_eq!(info.trail.last().unwrap().url, "https://shop.example/");
    assert!(
        info.user_agent
            .as_deref()
            .unwrap_or_default()
            .contains("HoldfastTest"),
        "{info:?}"
    );

    let ack = v.say_acked("Hello, is anyone there?").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ack else {
        panic!("{ack:?}")
    };

    // Alice is online with capacity, so the chat is assigned to her.
    let conv = alice
        .recv_until(T, |m| matches!(m, ServerMsg::Event { event: Event::Conversation(c), .. } if c.id == conversation))
        .await
        .unwrap();
    let ServerMsg::Event {
        event: Event::Conversation(c),
        ..
    } = conv
    else {
        unreachable!()
    };
    assert_eq!(c.state, ConversationState::Active);
    assert_eq!(c.assigned_name.as_deref(), Some("Alice"));
    let got = alice
        .recv_until(T, |m| message_body(m).is_some())
        .await
        .unwrap();
    assert_eq!(message_body(&got), Some("Hello, is anyone there?"));

    // Alice replies; the server acks her command, the visitor gets it.
    let (seq, _) = alice
        .command(Action::Send {
            conversation,
            body: "Hi! How can I help? 你好 👋".into(),
            attachment: None,
        })
        .await
        .unwrap();
    let ack = alice
        .recv_until(T, |m| matches!(m, ServerMsg::Ack(_)))
        .await
        .unwrap();
    let ServerMsg::Ack(batch) = ack else {
        unreachable!()
    };
    assert_eq!(batch.up_to, seq);
    v.wait_message("Hi! How can I help? 你好 👋").await.unwrap();

    // The visitor's ack turns into a delivery receipt for Alice.
    alice
        .recv_until(T, |m| matches!(m, ServerMsg::Event { event: Event::Delivered { conversation: c, .. }, .. } if *c == conversation))
        .await
        .unwrap();
    assert_eq!(
        v.bodies(),
        vec!["Hello, is anyone there?", "Hi! How can I help? 你好 👋"]
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(visitor_and_agent_talk_over_websocket);

async fn visitor_and_agent_talk_over_long_poll(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut alice = agent(&srv, "alice").await;
    let mut v = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let ack = v.say("Long-poll hello").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ack else {
        panic!("{ack:?}")
    };
    let got = alice
        .recv_until(T, |m| message_body(m).is_some())
        .await
        .unwrap();
    assert_eq!(message_body(&got), Some("Long-poll hello"));

    // The poll is held open; the reply wakes it.
    let waiter = tokio::spawn(async move {
        v.wait_message("Reply over long-poll").await.unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    alice
        .command(Action::Send {
            conversation,
            body: "Reply over long-poll".into(),
            attachment: None,
        })
        .await
        .unwrap();
    let v = tokio::time::timeout(T, waiter).await.unwrap().unwrap();
    assert_eq!(v.bodies(), vec!["Long-poll hello", "Reply over long-poll"]);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(visitor_and_agent_talk_over_long_poll);
