//! The workday flows with the agent and the visitor on different nodes
//! (issue 15, "any node for anyone"): invite, the queue, leave-a-message,
//! history and transfer, each as the single-node tests in `flows.rs` and
//! `ownership.rs` expect them, but with real nodes on one PostgreSQL and
//! one Redis in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use holdfast_client::{DeliveryState, Update};
use holdfast_protocol::agent::{
    Author, ConversationState, Event, Presence, QueryResult, Resume, ServerMsg,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{VisitorConvState, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::cluster::{Cluster, LIVENESS, agents_online};
use holdfast_tests::core_agent::{CoreAgent, WAIT};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::PASSWORD;
use holdfast_tests::visitor::{WsVisitor, new_id};

/// The agent id of the teammate called `name`, from the team panel (the
/// list may have come already).
async fn member_id(a: &mut CoreAgent, name: &str) -> u64 {
    let find = |u: &Update| match u {
        Update::Team(list) => list.iter().find(|m| m.name == name).map(|m| m.agent),
        _ => None,
    };
    if let Some(id) = a.seen.iter().find_map(find) {
        return id;
    }
    a.until("the team", find).await
}

async fn away(a: &mut CoreAgent) {
    let id = a.handle.set_presence(Presence::Away).await.unwrap();
    a.outcome(id).await.unwrap();
}

/// Wait until the visitor is told it is chatting with `name`.
async fn serving(v: &mut WsVisitor, name: &str) {
    v.wait_for(WAIT, |m| {
        matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
            if c.state == VisitorConvState::Active && c.agent_name.as_deref() == Some(name))
    })
    .await
    .unwrap_or_else(|e| panic!("the visitor never heard it is chatting with {name}: {e}"));
}

/// Wait until the agent's local store holds `body` in `conv` (history
/// handed over with an assignment lands just after it).
async fn holds(a: &CoreAgent, conv: u64, body: &str) {
    let deadline = Instant::now() + WAIT;
    while !a.bodies(conv).iter().any(|b| b == body) {
        assert!(
            Instant::now() < deadline,
            "{body:?} never reached the store: {:?}",
            a.bodies(conv)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent's line reaches the visitor and comes back Delivered.
async fn reply(a: &mut CoreAgent, v: &mut WsVisitor, conv: u64, body: &str) {
    let id = a.handle.send_message(conv, body).await.unwrap();
    a.outcome(id).await.unwrap();
    v.wait_message(body).await.unwrap();
    a.state_of(id, DeliveryState::Delivered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_invites_a_visitor_browsing_on_another_node() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(2, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    agents_online(&mut v).await;
    alice.visitor_where(|i| i.id == v.visitor).await;

    let t = Instant::now();
    let id = alice
        .handle
        .invite(v.visitor.clone(), "Can I help you choose a plan?")
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    let conv = alice
        .conversation_where(|ci| ci.visitor == v.visitor && ci.state == ConversationState::Active)
        .await;
    assert_eq!(conv.assigned_name.as_deref(), Some("Alice"));
    serving(&mut v, "Alice").await;
    v.wait_message("Can I help you choose a plan?")
        .await
        .unwrap();
    println!(
        "invitation from node 1 shown on node 2 in {:?}",
        t.elapsed()
    );

    // The visitor takes it up by answering; the chat works both ways.
    let VisitorOut::Ack {
        conversation: answered,
        ..
    } = v.say_acked("Yes please").await.unwrap()
    else {
        panic!()
    };
    assert_eq!(answered, conv.id);
    let m = alice.visitor_message().await;
    assert_eq!((m.conversation, m.body.as_str()), (conv.id, "Yes please"));
    reply(&mut alice, &mut v, conv.id, "The Pro plan fits you").await;
    assert_eq!(
        alice.bodies(conv.id),
        [
            "Can I help you choose a plan?",
            "Yes please",
            "The Pro plan fits you"
        ]
    );
    assert_eq!(v.bodies(), alice.bodies(conv.id));
    alice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_chat_shows_on_every_node_and_leaves_the_queue_when_taken() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let dir = tempfile::tempdir().unwrap();
    // Both present but away: nobody is picked, the chat waits.
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    away(&mut alice).await;
    let mut bob = c.agent(2, &dir, "bob");
    bob.live().await;
    away(&mut bob).await;

    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("anyone there?").await.unwrap() else {
        panic!()
    };
    let t = Instant::now();
    for a in [&mut alice, &mut bob] {
        let q = a.conversation_where(|ci| ci.id == conversation).await;
        assert_eq!(q.state, ConversationState::Queued, "{q:?}");
        assert_eq!(q.assigned, None);
    }
    println!(
        "a chat waiting on node 2 listed on nodes 1 and 3 in {:?}",
        t.elapsed()
    );
    holds(&alice, conversation, "anyone there?").await;

    // Bob takes it on node 3; it leaves alice's queue on node 1, and her
    // late accept is refused.
    let id = bob.handle.accept(conversation).await.unwrap();
    bob.outcome(id).await.unwrap();
    let t = Instant::now();
    let taken = alice
        .conversation_where(|ci| ci.id == conversation && ci.state != ConversationState::Queued)
        .await;
    println!(
        "taken on node 3, out of the queue on node 1 in {:?}",
        t.elapsed()
    );
    assert_eq!(taken.state, ConversationState::Active);
    assert_eq!(taken.assigned_name.as_deref(), Some("Bob"));
    let id = alice.handle.accept(conversation).await.unwrap();
    let (code, _) = alice.outcome(id).await.unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);

    serving(&mut v, "Bob").await;
    reply(&mut bob, &mut v, conversation, "Bob here, how can I help?").await;
    v.say_acked("my order").await.unwrap();
    assert_eq!(bob.visitor_message().await.body, "my order");
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_on_one_node_reaches_an_agent_logging_in_on_another() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(2, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    assert!(
        matches!(
            v.welcome,
            VisitorOut::Welcome {
                agents_online: false,
                ..
            }
        ),
        "{:?}",
        v.welcome
    );
    let id = new_id();
    v.send_json(&VisitorIn::LeaveMessage {
        id,
        body: "Please call me back about my order".into(),
        email: Some("sam@example.com".into()),
    })
    .await
    .unwrap();
    v.wait_for(
        LIVENESS,
        |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
    )
    .await
    .unwrap();

    // Alice logs in later, on the other node, on a fresh device.
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    // A fresh device is filled by the snapshot, not one update per chat.
    if !alice
        .seen
        .iter()
        .any(|u| matches!(u, Update::SnapshotApplied { .. }))
    {
        alice
            .until("the snapshot", |u| {
                matches!(u, Update::SnapshotApplied { .. }).then_some(())
            })
            .await;
    }
    let conv = alice.conversation_where(|ci| ci.visitor == v.visitor).await;
    assert_eq!(conv.state, ConversationState::LeftMessage);
    assert_eq!(conv.contact_email.as_deref(), Some("sam@example.com"));
    holds(&alice, conv.id, "Please call me back about my order").await;

    // She takes it and answers; the visitor on node 2 gets the answer.
    let id = alice.handle.accept(conv.id).await.unwrap();
    alice.outcome(id).await.unwrap();
    reply(&mut alice, &mut v, conv.id, "Calling you now").await;
    alice.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_third_node_reads_history_made_on_two_others() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;

    // First visit on node 1.
    let mut v = WsVisitor::connect(c.nodes[0].http, "acme").await.unwrap();
    agents_online(&mut v).await;
    let VisitorOut::Ack {
        conversation: first,
        ..
    } = v.say_acked("first visit, message 1").await.unwrap()
    else {
        panic!()
    };
    v.say_acked("first visit, message 2").await.unwrap();
    holds(&alice, first, "first visit, message 2").await;
    let id = alice.handle.close(first).await.unwrap();
    alice.outcome(id).await.unwrap();

    // The visitor comes back later (same token) on node 2: a new visit.
    let mut v = v.reconnect(c.nodes[1].http, "acme").await.unwrap();
    agents_online(&mut v).await;
    let VisitorOut::Ack {
        conversation: second,
        ..
    } = v.say_acked("second visit").await.unwrap()
    else {
        panic!()
    };
    assert_ne!(first, second);
    alice
        .conversation_where(|ci| ci.id == second && ci.state == ConversationState::Active)
        .await;
    reply(&mut alice, &mut v, second, "welcome back").await;

    // Bob, on node 3, pages back through it all.
    let mut bob = c.agent(2, &dir, "bob");
    bob.live().await;
    let mut said = Vec::new();
    let mut convs = std::collections::BTreeSet::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let request = bob
            .handle
            .load_history(v.visitor.clone(), before, 2)
            .unwrap();
        let result = bob
            .until("a history page", |u| match u {
                Update::History { request: r, result } if *r == request => Some(result.clone()),
                _ => None,
            })
            .await;
        let QueryResult::History {
            conversations,
            messages,
            more,
            visitor,
        } = result
        else {
            panic!("{result:?}")
        };
        pages += 1;
        assert!(messages.len() <= 2);
        assert!(
            visitor.unwrap().trail.len() >= 2,
            "the trail covers both visits"
        );
        convs.extend(conversations.iter().map(|ci| ci.id));
        before = messages.last().map(|m| m.message);
        said.extend(
            messages
                .into_iter()
                .filter(|m| !matches!(m.author, Author::System))
                .map(|m| m.body),
        );
        if !more {
            break;
        }
    }
    assert!(pages > 2, "{pages} pages");
    assert_eq!(convs, [first, second].into_iter().collect());
    assert_eq!(
        said,
        [
            "welcome back",
            "second visit",
            "first visit, message 2",
            "first visit, message 1"
        ]
    );
    alice.shutdown().await;
    bob.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_transferred_to_an_agent_on_another_node_moves_with_its_history() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    let bob_id = member_id(&mut alice, "Bob").await;
    let alice_id = member_id(&mut alice, "Alice").await;

    let mut v = WsVisitor::connect(c.nodes[2].http, "acme").await.unwrap();
    agents_online(&mut v).await;
    v.say_acked("My parcel is damaged").await.unwrap();
    let conv = alice
        .conversation_where(|ci| ci.visitor == v.visitor && ci.assigned == Some(alice_id))
        .await
        .id;
    reply(&mut alice, &mut v, conv, "Sorry to hear that. Photo?").await;

    let mut bob = c.agent(1, &dir, "bob");
    bob.live().await;
    alice
        .member_where(bob_id, |m| m.presence == Presence::Online)
        .await;
    let t = Instant::now();
    let id = alice
        .handle
        .transfer(
            conv,
            Some(alice_id),
            bob_id,
            Some("VIP: refund approved".into()),
        )
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();

    // Bob, on node 2, owns it with its history.
    let got = bob
        .conversation_where(|ci| ci.id == conv && ci.assigned == Some(bob_id))
        .await;
    assert_eq!(got.assigned_name.as_deref(), Some("Bob"));
    holds(&bob, conv, "Sorry to hear that. Photo?").await;
    assert_eq!(
        bob.bodies(conv),
        ["My parcel is damaged", "Sorry to hear that. Photo?"]
    );
    println!(
        "transferred to node 2 with its history in {:?}",
        t.elapsed()
    );

    // Alice loses it; the visitor on node 3 is told and chats on with bob.
    alice
        .conversation_where(|ci| ci.id == conv && ci.assigned == Some(bob_id))
        .await;
    serving(&mut v, "Bob").await;
    reply(&mut bob, &mut v, conv, "Refund is on its way").await;
    v.say_acked("thanks!").await.unwrap();
    assert_eq!(bob.visitor_message().await.body, "thanks!");
    let late = alice
        .handle
        .send_message(conv, "one more thing")
        .await
        .unwrap();
    let (code, msg) = alice.outcome(late).await.unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert!(msg.contains("Bob is serving"), "{msg}");
    assert!(!v.bodies().iter().any(|b| b.contains("VIP")));
    alice.shutdown().await;
    bob.shutdown().await;
}

/// The other half of leave-a-message, as `flows.rs` tests it on one node:
/// an agent device that was logged in before (on node 1) and comes back
/// with its cursor on node 3 gets a message left on node 2 by replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_on_another_node_gets_a_left_message_by_replay() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(3, 5).await;
    let device = new_id();
    let mut bob = RawAgent::handshake(c.nodes[0].agent).await.unwrap();
    bob.send(&RawAgent::login_msg("bob", PASSWORD, device, None))
        .await
        .unwrap();
    let snap = bob
        .recv_until(LIVENESS, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(s) = snap else {
        unreachable!()
    };
    let cursor = s.seq;
    drop(bob);

    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    let id = new_id();
    v.send_json(&VisitorIn::LeaveMessage {
        id,
        body: "nobody home?".into(),
        email: None,
    })
    .await
    .unwrap();
    v.wait_for(
        LIVENESS,
        |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
    )
    .await
    .unwrap();

    let mut bob = RawAgent::handshake(c.nodes[2].agent).await.unwrap();
    bob.send(&RawAgent::login_msg("bob", PASSWORD, device, Some(cursor)))
        .await
        .unwrap();
    let ok = bob.recv(LIVENESS).await.unwrap().unwrap();
    let ServerMsg::LoginOk(ok) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(ok.resume, Resume::Replay { after: cursor });
    bob.recv_until(WAIT, |m| {
        matches!(m, ServerMsg::Event { event: Event::Message(msg), .. } if msg.body == "nobody home?")
    })
    .await
    .unwrap();
}
