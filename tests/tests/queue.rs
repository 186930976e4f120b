//! Queue position and wait for waiting visitors (PROTOCOL.md 10.14), over
//! WebSocket and long-poll visitors with a real agent client core taking
//! chats: positions under arrivals and departures, a reconnect, and an
//! estimate from the chats' real waits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::Duration;

use holdfast_protocol::agent::ConversationId;
use holdfast_protocol::visitor::{VisitorConvState, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, new_id};

const WAIT: Duration = Duration::from_secs(10);

fn place(m: &VisitorOut) -> Option<(u32, Option<u64>)> {
    match m {
        VisitorOut::Queue { position, wait_ms } => Some((*position, *wait_ms)),
        _ => None,
    }
}

/// The next `queue` a WebSocket visitor is told.
async fn ws_place(v: &mut WsVisitor) -> (u32, Option<u64>) {
    place(&v.wait_for(WAIT, |m| place(m).is_some()).await.unwrap()).unwrap()
}

/// Polls until a `queue` arrives; what it says.
async fn lp_place(v: &mut LpVisitor) -> (u32, Option<u64>) {
    let end = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < end {
        if let Some(p) = v.poll().await.unwrap().iter().find_map(place) {
            return p;
        }
    }
    panic!("no queue position over long-poll")
}

async fn ws_chat(srv: &TestServer, text: &str) -> (WsVisitor, ConversationId) {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked(text).await.unwrap() else {
        panic!("not acked")
    };
    (v, conversation)
}

async fn lp_chat(srv: &TestServer, text: &str) -> LpVisitor {
    let v = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let r = v.say(text).await.unwrap();
    assert!(matches!(r, VisitorOut::Ack { .. }), "{r:?}");
    v
}

/// Closes `conversation` as its agent and waits until it is done.
async fn close(a: &mut CoreAgent, conversation: ConversationId) {
    let id = a.handle.close(conversation).await.unwrap();
    a.outcome(id).await.unwrap();
}

/// Alice serves two chats at most; the rest wait. Arrivals take the next
/// place, a visitor who gives up moves those behind up, a taken chat moves
/// everyone up, and a reconnect is told its place at once.
async fn positions_follow_arrivals_and_departures(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (_v1, c1) = ws_chat(&srv, "first, served").await;
    let (_v2, _c2) = ws_chat(&srv, "second, served").await;

    let (mut b, _) = ws_chat(&srv, "b waits").await;
    assert_eq!(
        ws_place(&mut b).await,
        (1, None),
        "no real waits yet: no estimate"
    );
    let mut c = lp_chat(&srv, "c waits over long-poll").await;
    assert_eq!(lp_place(&mut c).await.0, 2);
    let (mut d, _) = ws_chat(&srv, "d waits").await;
    assert_eq!(ws_place(&mut d).await.0, 3);

    // c gives up: d moves up, b stays where it was (and is not told again).
    let r = c
        .send(vec![VisitorIn::EndChat { id: new_id() }])
        .await
        .unwrap();
    assert!(matches!(r.last(), Some(VisitorOut::Ack { .. })), "{r:?}");
    assert_eq!(ws_place(&mut d).await.0, 2);
    // e arrives behind d.
    let mut e = lp_chat(&srv, "e waits over long-poll").await;
    assert_eq!(lp_place(&mut e).await.0, 3);

    // Alice finishes a chat: b is taken, d and e move up.
    close(&mut alice, c1).await;
    b.wait_for(WAIT, |m| {
        matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
            if c.state == VisitorConvState::Active)
    })
    .await
    .unwrap();
    assert_eq!(ws_place(&mut d).await.0, 1);
    assert_eq!(lp_place(&mut e).await.0, 2);
    assert!(
        !b.other.iter().filter_map(place).any(|p| p.0 != 1),
        "b was only ever told place 1: {:?}",
        b.other
    );

    // d reloads the page: told its place again at once.
    let mut d = d.reconnect(srv.http(), "acme").await.unwrap();
    assert_eq!(ws_place(&mut d).await.0, 1);
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(positions_follow_arrivals_and_departures);

/// The estimate comes from the chats' real waits: three chats that waited
/// for Alice give a time per place, and the next waiting visitors are told
/// their position times it.
async fn the_estimate_comes_from_recent_real_waits(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let mut served = Vec::new();
    for i in 0..2 {
        served.push(ws_chat(&srv, &format!("served {i}")).await.1);
    }
    let mut waiting = Vec::new();
    for i in 0..3 {
        let (mut v, c) = ws_chat(&srv, &format!("waits {i}")).await;
        assert_eq!(ws_place(&mut v).await, (i + 1, None));
        waiting.push((v, c));
    }
    // Each finished chat lets the next waiting one in, after a real wait
    // of over a second.
    let started = std::time::Instant::now();
    for (i, (v, c)) in waiting.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        close(&mut alice, served.remove(0)).await;
        v.wait_for(WAIT, |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
                if c.state == VisitorConvState::Active)
        })
        .await
        .unwrap();
        served.push(*c);
        println!("chat {i} taken after {:?}", started.elapsed());
    }
    let (mut f, _) = ws_chat(&srv, "f waits with an estimate").await;
    let (pos, wait) = ws_place(&mut f).await;
    assert_eq!(pos, 1);
    let wait = wait.expect("three real waits give an estimate");
    let (mut g, _) = ws_chat(&srv, "g waits behind f").await;
    let (pos, wait2) = ws_place(&mut g).await;
    assert_eq!(pos, 2);
    let wait2 = wait2.unwrap();
    println!("estimates: place 1 {wait} ms, place 2 {wait2} ms");
    // Each of the three waited 1.2 s a place, give or take this machine's
    // load: the estimate is of that order, and twice it one place further.
    assert!((1000..=10_000).contains(&wait), "{wait}");
    assert!(
        wait2 >= 2 * wait - 1000 && wait2 <= 2 * wait + 1000,
        "{wait} {wait2}"
    );
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(the_estimate_comes_from_recent_real_waits);
