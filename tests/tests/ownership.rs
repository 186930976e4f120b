//! Chat ownership with real client cores and real WebSocket visitors: every
//! open chat has exactly one owner or waits in the queue, whoever leaves and
//! however. Transfers (with their refusals and races), sign-out, the
//! offline grace period, `agent disable` and `agent passwd`, supervisors,
//! left messages and the visitor ending a chat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use holdfast_client::{ConnState, SignOutResult, StopReason, Update};
use holdfast_protocol::agent::{
    Action, Author, ClientMsg, ConversationState, Presence, Role, ServerMsg,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::{LeaveReason, Notice};
use holdfast_protocol::visitor::{Sender, VisitorConvState, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_server::{admin, store};
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello, new_id};

const WAIT: Duration = Duration::from_secs(10);

fn core_at(srv: &TestServer, addr: &str, user: &str, dir: &tempfile::TempDir) -> CoreAgent {
    CoreAgent::start(fast_config(
        addr,
        user,
        &dir.path().join(format!("{user}.sqlite3")),
        srv.running().fingerprint,
    ))
}

async fn live(srv: &TestServer, user: &str, dir: &tempfile::TempDir) -> CoreAgent {
    let mut a = core_at(srv, &srv.agent_addr().to_string(), user, dir);
    a.live().await;
    a
}

fn add(srv: &TestServer, user: &str, name: &str, role: Role, capacity: u32) -> u64 {
    let conn = store::open_connection(srv.dir.path()).unwrap();
    admin::add_agent(&conn, "acme", user, name, PASSWORD, capacity, role)
        .unwrap()
        .id
}

fn agent_id(srv: &TestServer, user: &str) -> u64 {
    let conn = store::open_connection(srv.dir.path()).unwrap();
    store::reads::agent_by_username(&conn, user)
        .unwrap()
        .unwrap()
        .id
}

/// Wait until the agent's store holds `body` in `conv` (a new owner's
/// history arrives just after the assignment).
async fn wait_body(a: &CoreAgent, conv: u64, body: &str) {
    let deadline = Instant::now() + WAIT;
    while !a.bodies(conv).iter().any(|b| b == body) {
        assert!(
            Instant::now() < deadline,
            "{body:?} not in {:?}",
            a.bodies(conv)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The system lines in a list of messages, decoded.
fn notices(msgs: &[holdfast_client::StoredMessage]) -> Vec<Notice> {
    msgs.iter()
        .filter(|m| matches!(m.author, Author::System))
        .filter_map(|m| Notice::parse(&m.body))
        .collect()
}

/// The visitor's events so far: (sender, body, notice).
fn visitor_lines(v: &WsVisitor) -> Vec<(Sender, String, Option<Notice>)> {
    v.events
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) => Some((m.from.clone(), m.body.clone(), m.notice.clone())),
            VisitorEvent::Conversation(_) => None,
        })
        .collect()
}

/// A system line the visitor has seen, or the next one, matching `pred`.
async fn wait_notice(v: &mut WsVisitor, pred: impl Fn(&Notice) -> bool) -> Notice {
    if let Some(n) = visitor_lines(v)
        .into_iter()
        .filter_map(|(_, _, n)| n)
        .find(|n| pred(n))
    {
        return n;
    }
    let m = v
        .wait_for(WAIT, |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Message(msg), .. }
                if msg.notice.as_ref().is_some_and(&pred))
        })
        .await
        .unwrap();
    match m {
        VisitorOut::Event {
            event: VisitorEvent::Message(msg),
            ..
        } => msg.notice.unwrap(),
        _ => unreachable!(),
    }
}

/// Wait until the visitor's latest view of its chat is "active, with
/// `name`".
async fn wait_agent_name(v: &mut WsVisitor, name: &str) {
    let latest = v.events.iter().rev().find_map(|(_, e)| match e {
        VisitorEvent::Conversation(c) => Some(c.clone()),
        VisitorEvent::Message(_) => None,
    });
    if latest.is_some_and(|c| {
        c.agent_name.as_deref() == Some(name) && c.state == VisitorConvState::Active
    }) {
        return;
    }
    v.wait_for(WAIT, |m| {
        matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
            if c.agent_name.as_deref() == Some(name) && c.state == VisitorConvState::Active)
    })
    .await
    .unwrap_or_else(|e| panic!("visitor never heard it is chatting with {name}: {e}"));
}

/// A visitor's first message, taken by `agent` (the only one online).
async fn chat_with(srv: &TestServer, agent: &mut CoreAgent, body: &str) -> (WsVisitor, u64) {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked(body).await.unwrap();
    let c = agent
        .conversation_where(|c| c.visitor == v.visitor && c.state == ConversationState::Active)
        .await;
    (v, c.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_moves_the_chat_with_its_history_and_everyone_is_told() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "My parcel is damaged").await;
    let reply = alice
        .handle
        .send_message(conv, "Sorry to hear that. Photo?")
        .await
        .unwrap();
    alice.outcome(reply).await.unwrap();
    v.wait_message("Sorry to hear that. Photo?").await.unwrap();

    let mut bob = live(&srv, "bob", &dir).await;
    alice
        .member_where(bob_id, |m| m.presence == Presence::Online)
        .await;
    let t = alice
        .handle
        .transfer(
            conv,
            Some(alice_id),
            bob_id,
            Some("VIP: refund approved".into()),
        )
        .await
        .unwrap();
    alice.outcome(t).await.unwrap();

    // Bob owns it, with the whole history, and the note.
    let c = bob
        .conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    assert_eq!(c.assigned_name.as_deref(), Some("Bob"));
    let deadline = Instant::now() + WAIT;
    loop {
        let msgs = bob.messages(conv);
        let bodies: Vec<&str> = msgs
            .iter()
            .filter(|m| !matches!(m.author, Author::System))
            .map(|m| m.body.as_str())
            .collect();
        if bodies == ["My parcel is damaged", "Sorry to hear that. Photo?"]
            && notices(&msgs)
                .iter()
                .any(|n| matches!(n, Notice::Note { .. }))
        {
            break;
        }
        assert!(Instant::now() < deadline, "bob's history: {msgs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = notices(&bob.messages(conv));
    assert!(lines.contains(&Notice::Transferred {
        from: Some("Alice".into()),
        to: "Bob".into(),
        by: "Alice".into()
    }));
    assert!(lines.contains(&Notice::Note {
        author: "Alice".into(),
        text: "VIP: refund approved".into()
    }));
    // Alice sees the line too, and that the chat is no longer hers.
    alice
        .conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    assert!(
        notices(&alice.messages(conv))
            .iter()
            .any(|n| matches!(n, Notice::Transferred { .. }))
    );

    // The visitor is told, in its own words, and never sees the note.
    let n = wait_notice(&mut v, |n| matches!(n, Notice::Transferred { .. })).await;
    assert_eq!(
        n,
        Notice::Transferred {
            from: Some("Alice".into()),
            to: "Bob".into(),
            by: "Alice".into()
        }
    );
    wait_agent_name(&mut v, "Bob").await;
    let b = bob
        .handle
        .send_message(conv, "Refund is on its way")
        .await
        .unwrap();
    bob.outcome(b).await.unwrap();
    v.wait_message("Refund is on its way").await.unwrap();
    // Alice can no longer write in it.
    let late = alice
        .handle
        .send_message(conv, "one more thing")
        .await
        .unwrap();
    let (code, msg) = alice.outcome(late).await.unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert!(msg.contains("Bob is serving"), "{msg}");

    // No visitor path carries the note: live events, a fresh snapshot, a
    // replay from zero, and long-poll.
    let leaked = |text: &str| text.contains("VIP") || text.contains("refund approved");
    assert!(
        !visitor_lines(&v)
            .iter()
            .any(|(_, b, n)| leaked(b) || n.as_ref().is_some_and(|n| leaked(&format!("{n:?}"))))
    );
    let mut fresh = WsVisitor::connect_with(
        srv.http(),
        hello(
            "acme",
            Some(v.token.clone()),
            None,
            "https://shop.example/again",
        ),
    )
    .await
    .unwrap();
    let snap = fresh
        .wait_for(WAIT, |m| matches!(m, VisitorOut::Snapshot { .. }))
        .await
        .unwrap();
    let text = serde_json::to_string(&snap).unwrap();
    assert!(text.contains("Refund is on its way"), "{text}");
    assert!(!leaked(&text), "snapshot leaked the note: {text}");
    let mut replay = WsVisitor::connect_with(
        srv.http(),
        hello(
            "acme",
            Some(v.token.clone()),
            Some(0),
            "https://shop.example/again",
        ),
    )
    .await
    .unwrap();
    replay.wait_message("Refund is on its way").await.unwrap();
    assert!(!visitor_lines(&replay).iter().any(|(_, b, _)| leaked(b)));
    let mut lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    lp.token = v.token.clone();
    lp.cursor = 0;
    let got = lp.poll().await.unwrap();
    let text = serde_json::to_string(&got).unwrap();
    assert!(text.contains("Refund is on its way"), "{text}");
    assert!(!leaked(&text), "long-poll leaked the note: {text}");
    fresh.close().await;
    replay.close().await;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_someone_who_cannot_take_it_is_refused_clearly() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let carol_id = add(&srv, "carol", "Carol", Role::Agent, 1);
    let mut alice = live(&srv, "alice", &dir).await;
    let (_v, conv) = chat_with(&srv, &mut alice, "hello").await;

    let refused = |a: &mut CoreAgent, to: u64, from: Option<u64>| {
        let h = a.handle.clone();
        async move { h.transfer(conv, from, to, None).await.unwrap() }
    };
    // Offline.
    let t = refused(&mut alice, bob_id, Some(alice_id)).await;
    let (code, msg) = alice.outcome(t).await.unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::Conflict, "Bob is offline")
    );
    // Away.
    let mut bob = live(&srv, "bob", &dir).await;
    let p = bob.handle.set_presence(Presence::Away).await.unwrap();
    bob.outcome(p).await.unwrap();
    let t = refused(&mut alice, bob_id, Some(alice_id)).await;
    let (code, msg) = alice.outcome(t).await.unwrap_err();
    assert_eq!((code, msg.as_str()), (ErrorCode::Conflict, "Bob is away"));
    // At capacity: Carol takes one chat at most and has one.
    let mut carol = live(&srv, "carol", &dir).await;
    let p = bob.handle.set_presence(Presence::Online).await.unwrap();
    bob.outcome(p).await.unwrap();
    let mut v2 = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v2.say_acked("second visitor").await.unwrap();
    // Alice has one, Bob and Carol none: the least busy with the lowest
    // id (Bob) gets it, so give Carol hers by transfer instead.
    let c2 = bob
        .conversation_where(|c| c.visitor == v2.visitor && c.state == ConversationState::Active)
        .await;
    assert_eq!(c2.assigned, Some(bob_id));
    let t = bob
        .handle
        .transfer(c2.id, Some(bob_id), carol_id, None)
        .await
        .unwrap();
    bob.outcome(t).await.unwrap();
    carol
        .conversation_where(|c| c.id == c2.id && c.assigned == Some(carol_id))
        .await;
    let t = refused(&mut alice, carol_id, Some(alice_id)).await;
    let (code, msg) = alice.outcome(t).await.unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert_eq!(msg, "Carol is at capacity (1 of 1 chats)");
    // Disabled.
    {
        let conn = store::open_connection(srv.dir.path()).unwrap();
        admin::set_disabled(&conn, "carol", true).unwrap();
    }
    let t = refused(&mut alice, carol_id, Some(alice_id)).await;
    let (code, msg) = alice.outcome(t).await.unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (ErrorCode::Conflict, "Carol's account is disabled")
    );
    // A stale idea of who serves it.
    let t = refused(&mut alice, bob_id, Some(bob_id)).await;
    let (code, msg) = alice.outcome(t).await.unwrap_err();
    assert_eq!(code, ErrorCode::Conflict);
    assert!(msg.contains("moved on"), "{msg}");
    // An agent moving someone else's chat.
    let t = bob
        .handle
        .transfer(conv, Some(alice_id), bob_id, None)
        .await
        .unwrap();
    let (code, _) = bob.outcome(t).await.unwrap_err();
    assert_eq!(code, ErrorCode::Forbidden);
    // Nothing moved.
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let c = store::reads::conversation(&conn, conv).unwrap().unwrap();
    assert_eq!(c.assigned, Some(alice_id));
    alice.shutdown().await;
    bob.shutdown().await;
    carol.shutdown().await;
    srv.stop().await;
}

/// Two supervisors move the same chat at the same moment: exactly one wins,
/// every time, and the chat has one owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_transferring_one_chat_at_once_exactly_one_wins() {
    let srv = TestServer::start().await;
    let alice_id = agent_id(&srv, "alice");
    let bob_id = agent_id(&srv, "bob");
    let carol_id = add(&srv, "carol", "Carol", Role::Agent, 5);
    add(&srv, "sue", "Sue", Role::Supervisor, 5);
    add(&srv, "sam", "Sam", Role::Supervisor, 5);
    let (mut alice, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let (mut sue, _) = RawAgent::login(srv.agent_addr(), "sue", PASSWORD)
        .await
        .unwrap();
    let (mut sam, _) = RawAgent::login(srv.agent_addr(), "sam", PASSWORD)
        .await
        .unwrap();
    // Supervisors stay away, so chats go to the agents.
    for s in [&mut sue, &mut sam] {
        s.command(Action::SetPresence {
            presence: Presence::Away,
        })
        .await
        .unwrap();
    }
    let (_b, _) = RawAgent::login(srv.agent_addr(), "bob", PASSWORD)
        .await
        .unwrap();
    let (_c, _) = RawAgent::login(srv.agent_addr(), "carol", PASSWORD)
        .await
        .unwrap();
    let _ = &mut alice;
    let mut wins = [0u32; 2];
    for round in 0..6 {
        let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
        let VisitorOut::Ack { conversation, .. } =
            v.say_acked(&format!("round {round}")).await.unwrap()
        else {
            panic!("not acked");
        };
        let owner = {
            let conn = store::open_connection(srv.dir.path()).unwrap();
            store::reads::conversation(&conn, conversation)
                .unwrap()
                .unwrap()
                .assigned
        };
        let owner = owner.expect("auto-assigned");
        let others: Vec<u64> = [alice_id, bob_id, carol_id]
            .into_iter()
            .filter(|a| *a != owner)
            .collect();
        let (s1, id1) = sue
            .command(Action::Transfer {
                conversation,
                from: Some(owner),
                to: others[0],
                note: None,
            })
            .await
            .unwrap();
        let (s2, id2) = sam
            .command(Action::Transfer {
                conversation,
                from: Some(owner),
                to: others[1],
                note: None,
            })
            .await
            .unwrap();
        let result = |m: &ServerMsg, seq: u64, id| match m {
            ServerMsg::Ack(b) => b
                .results
                .iter()
                .find(|r| r.seq == seq && r.id == id)
                .map(|r| r.outcome.clone()),
            _ => None,
        };
        let mut o1 = None;
        let r1 = sue
            .recv_until(WAIT, |m| {
                o1 = result(m, s1, id1);
                o1.is_some()
            })
            .await;
        r1.unwrap();
        let mut o2 = None;
        sam.recv_until(WAIT, |m| {
            o2 = result(m, s2, id2);
            o2.is_some()
        })
        .await
        .unwrap();
        let done = |o: &Option<holdfast_protocol::agent::Outcome>| {
            matches!(o, Some(holdfast_protocol::agent::Outcome::Done { .. }))
        };
        assert!(
            done(&o1) ^ done(&o2),
            "round {round}: exactly one must win: {o1:?} / {o2:?}"
        );
        let loser = if done(&o1) { &o2 } else { &o1 };
        assert!(
            matches!(loser, Some(holdfast_protocol::agent::Outcome::Rejected { code: ErrorCode::Conflict, message }) if message.contains("moved on")),
            "{loser:?}"
        );
        wins[usize::from(!done(&o1))] += 1;
        let conn = store::open_connection(srv.dir.path()).unwrap();
        let c = store::reads::conversation(&conn, conversation)
            .unwrap()
            .unwrap();
        let winner_target = if done(&o1) { others[0] } else { others[1] };
        assert_eq!(c.assigned, Some(winner_target));
        assert_eq!(c.state, ConversationState::Active);
        // Close it so capacity never gets in the way of the next round.
        v.send_json(&VisitorIn::EndChat { id: new_id() })
            .await
            .unwrap();
        v.wait_for(WAIT, |m| matches!(m, VisitorOut::Ack { .. }))
            .await
            .unwrap();
    }
    assert_eq!(wins.iter().sum::<u32>(), 6);
    srv.stop().await;
}

/// The agent hands a chat on while its link is cut: the transfer waits in
/// the outbox, goes out when the link returns, and is applied once; the
/// visitor's messages sent meanwhile reach the new owner once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_during_a_link_fault_is_applied_once_and_in_order() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let link = Proxy::start(srv.agent_addr()).await;
    let mut alice = core_at(&srv, &link.addr.to_string(), "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "v-0").await;
    let mut bob = live(&srv, "bob", &dir).await;
    alice
        .member_where(bob_id, |m| m.presence == Presence::Online)
        .await;

    link.blackhole(true);
    let t = alice
        .handle
        .transfer(conv, Some(alice_id), bob_id, None)
        .await
        .unwrap();
    for i in 1..=5 {
        v.say_acked(&format!("v-{i}")).await.unwrap();
    }
    alice.not_live().await;
    assert_eq!(alice.handle.status().unsent, 1);
    link.blackhole(false);
    link.slice(true);
    alice.outcome(t).await.unwrap();
    link.slice(false);
    // Resent after the reconnect, acked once, applied once.
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    for i in 6..=8 {
        v.say_acked(&format!("v-{i}")).await.unwrap();
    }
    let want: Vec<String> = (0..=8).map(|i| format!("v-{i}")).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let got: Vec<String> = bob
            .messages(conv)
            .into_iter()
            .filter(|m| matches!(m.author, Author::Visitor { .. }))
            .map(|m| m.body)
            .collect();
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "bob has {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let transfers = notices(&bob.messages(conv))
        .into_iter()
        .filter(|n| matches!(n, Notice::Transferred { .. }))
        .count();
    assert_eq!(transfers, 1, "the transfer was applied once");
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE conversation_id = ?1 AND body LIKE '%\"transferred\"%'",
            [i64::try_from(conv).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
    wait_agent_name(&mut v, "Bob").await;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_hands_open_chats_to_the_queue_and_the_next_agent() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_id = agent_id(&srv, "bob");
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut v1, c1) = chat_with(&srv, &mut alice, "first").await;
    let (mut v2, c2) = chat_with(&srv, &mut alice, "second").await;
    // A visitor change the core has not written to its cache yet (it
    // batches those writes) must not land after the sign-out's forgetting.
    v1.send_json(&VisitorIn::Page(holdfast_protocol::visitor::PageInfo {
        url: "https://shop.example/returns".into(),
        title: "Returns".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    alice
        .visitor_where(|i| {
            i.id == v1.visitor
                && i.trail
                    .last()
                    .is_some_and(|p| p.url == "https://shop.example/returns")
        })
        .await;
    // A reply still in flight goes out before the chats are handed back.
    let last = alice.handle.send_message(c1, "one moment…").await.unwrap();
    assert_eq!(
        alice.handle.sign_out().await.unwrap(),
        SignOutResult::Released
    );
    let state = alice.stopped().await;
    assert_eq!(
        state,
        ConnState::Stopped {
            reason: StopReason::SignedOut
        }
    );
    assert_eq!(alice.handle.status().unsent, 0);
    // Signed out, the device keeps none of the workspace: the chats are
    // someone else's now, and whoever opens the app next must sign in
    // before they see any visitor. The pin and the account stay.
    alice.shutdown().await;
    let local = holdfast_client::Store::open(dir.path().join("alice.sqlite3")).unwrap();
    let ws = local.cached_workspace().unwrap();
    assert!(
        ws.session.is_none(),
        "a signed-out store still has a session"
    );
    assert!(ws.conversations.is_empty(), "{:?}", ws.conversations);
    assert!(local.visitors().unwrap().is_empty());
    assert_eq!(local.cursor().unwrap(), None);
    assert!(local.account().unwrap().is_some());
    drop(local);
    let _ = last;
    v1.wait_message("one moment…").await.unwrap();
    for (v, _) in [(&mut v1, c1), (&mut v2, c2)] {
        let n = wait_notice(v, |n| matches!(n, Notice::Requeued { .. })).await;
        assert_eq!(
            n,
            Notice::Requeued {
                agent: "Alice".into(),
                reason: LeaveReason::SignedOut
            }
        );
        v.wait_for(WAIT, |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
                if c.state == VisitorConvState::Queued && c.agent_name.is_none())
        })
        .await
        .unwrap();
    }
    // Bob comes online and gets both, with their history.
    let mut bob = live(&srv, "bob", &dir).await;
    for c in [c1, c2] {
        bob.conversation_where(|x| x.id == c && x.assigned == Some(bob_id))
            .await;
    }
    wait_agent_name(&mut v1, "Bob").await;
    wait_agent_name(&mut v2, "Bob").await;
    wait_body(&bob, c1, "one moment…").await;
    wait_body(&bob, c1, "first").await;
    wait_body(&bob, c2, "second").await;
    // Each chat has exactly one owner.
    let conn = store::open_connection(srv.dir.path()).unwrap();
    for c in [c1, c2] {
        let info = store::reads::conversation(&conn, c).unwrap().unwrap();
        assert_eq!(
            (info.state, info.assigned),
            (ConversationState::Active, Some(bob_id))
        );
    }
    bob.shutdown().await;
    srv.stop().await;
}

/// A chat that went back to the queue and is taken by an invite brings its
/// history along, as an accept does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inviting_a_visitor_whose_chat_was_handed_back_brings_its_history() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_id = agent_id(&srv, "bob");
    // Bob is signed in but away, so the chat Alice hands back stays in the
    // queue until he invites the visitor.
    let mut bob = live(&srv, "bob", &dir).await;
    let p = bob.handle.set_presence(Presence::Away).await.unwrap();
    bob.outcome(p).await.unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let (v, conv) = chat_with(&srv, &mut alice, "before the handover").await;
    let r = alice
        .handle
        .send_message(conv, "alice's answer")
        .await
        .unwrap();
    alice.outcome(r).await.unwrap();
    assert_eq!(
        alice.handle.sign_out().await.unwrap(),
        SignOutResult::Released
    );
    let queued = bob
        .conversation_where(|c| c.id == conv && c.state == ConversationState::Queued)
        .await;
    assert_eq!(queued.assigned, None);
    let i = bob
        .handle
        .invite(v.visitor.clone(), "Bob here")
        .await
        .unwrap();
    bob.outcome(i).await.unwrap();
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    wait_body(&bob, conv, "before the handover").await;
    wait_body(&bob, conv, "alice's answer").await;
    wait_body(&bob, conv, "Bob here").await;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}

/// Signing out on one device while another device of the same agent is
/// connected keeps the chats with the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_one_of_two_devices_keeps_the_chats() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let alice_id = agent_id(&srv, "alice");
    let mut desk = live(&srv, "alice", &dir).await;
    let laptop = live(&srv, "alice", &dir2).await;
    let (_v, conv) = chat_with(&srv, &mut desk, "hi").await;
    assert_eq!(
        laptop.handle.sign_out().await.unwrap(),
        SignOutResult::Released
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let c = store::reads::conversation(&conn, conv).unwrap().unwrap();
    assert_eq!(c.assigned, Some(alice_id));
    let m = desk.handle.send_message(conv, "still here").await.unwrap();
    desk.outcome(m).await.unwrap();
    // Still online on the desk: a colleague sees it, and new chats come.
    let mut bob = live(&srv, "bob", &dir).await;
    let me = bob.member_where(alice_id, |_| true).await;
    assert_eq!(me.presence, Presence::Online);
    let p = bob.handle.set_presence(Presence::Away).await.unwrap();
    bob.outcome(p).await.unwrap();
    let (_v2, conv2) = chat_with(&srv, &mut desk, "second").await;
    assert_ne!(conv2, conv);
    bob.shutdown().await;
    desk.shutdown().await;
    laptop.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_offline_past_the_grace_period_loses_its_chats_and_one_back_in_time_keeps_them() {
    let srv = TestServer::start_with(|c| c.owner_grace = Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let link = Proxy::start(srv.agent_addr()).await;
    let mut alice = core_at(&srv, &link.addr.to_string(), "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "anyone there?").await;

    // A short blip: back well within the grace, the chat stays.
    link.close_all();
    alice.not_live().await;
    alice.live().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let owner = || {
        store::reads::conversation(&conn, conv)
            .unwrap()
            .unwrap()
            .assigned
    };
    assert_eq!(owner(), Some(alice_id));

    // The app is killed: nobody notices for the grace period, then the
    // chat goes back and Bob (online) gets it.
    let mut bob = live(&srv, "bob", &dir).await;
    alice.handle.abort();
    link.close_all();
    let gone = Instant::now();
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    let took = gone.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "released after {took:?}"
    );
    assert!(took < Duration::from_secs(6), "released after {took:?}");
    let n = wait_notice(&mut v, |n| matches!(n, Notice::Requeued { .. })).await;
    assert_eq!(
        n,
        Notice::Requeued {
            agent: "Alice".into(),
            reason: LeaveReason::Offline
        }
    );
    wait_agent_name(&mut v, "Bob").await;
    wait_body(&bob, conv, "anyone there?").await;
    bob.shutdown().await;
    srv.stop().await;
}

/// `agent disable` from the CLI ends the live session within a second, says
/// why, and hands the chats on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_ends_the_session_within_a_second_and_hands_the_chats_on() {
    // Found (or built) before anything is connected, so no session idles
    // through a build.
    let cli = holdfast_tests::server::server_binary();
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_id = agent_id(&srv, "bob");
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "help").await;
    let mut bob = live(&srv, "bob", &dir).await;
    let out = std::process::Command::new(&cli)
        .args(["agent", "disable", "alice", "--data-dir"])
        .arg(srv.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t0 = Instant::now();
    let (code, message) = alice
        .until("the refusal", |u| match u {
            Update::LoginFailed { code, message, .. } => Some((*code, message.clone())),
            _ => None,
        })
        .await;
    let took = t0.elapsed();
    assert_eq!(code, ErrorCode::Disabled);
    assert!(message.contains("disabled"), "{message}");
    assert!(
        took < Duration::from_secs(1),
        "session ended after {took:?}"
    );
    // It stays stopped: no reconnect loop against a disabled account.
    let state = alice
        .until("the stop", |u| match u {
            Update::Connection(s) if !matches!(s.state, ConnState::Live) => Some(s.state.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(
            state,
            ConnState::Stopped {
                reason: StopReason::LoginRejected {
                    code: ErrorCode::Disabled,
                    ..
                }
            }
        ),
        "{state:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        alice.handle.status().state,
        ConnState::Stopped { .. }
    ));
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    let n = wait_notice(&mut v, |n| matches!(n, Notice::Requeued { .. })).await;
    assert!(matches!(
        n,
        Notice::Requeued {
            reason: LeaveReason::Disabled,
            ..
        }
    ));
    // The team panel shows it.
    bob.member_where(agent_id(&srv, "alice"), |m| m.disabled)
        .await;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}

/// Disabled while the cable is pulled: the chats move on at once; when the
/// link returns the app is refused with the reason, and nothing it queued
/// meanwhile is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_during_an_outage() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_id = agent_id(&srv, "bob");
    let link = Proxy::start(srv.agent_addr()).await;
    let mut alice = core_at(&srv, &link.addr.to_string(), "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "hi").await;
    let mut bob = live(&srv, "bob", &dir).await;
    link.blackhole(true);
    let queued = alice
        .handle
        .send_message(conv, "typed offline")
        .await
        .unwrap();
    let _ = queued;
    {
        let conn = store::open_connection(srv.dir.path()).unwrap();
        admin::set_disabled(&conn, "alice", true).unwrap();
    }
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    link.blackhole(false);
    let code = alice
        .until("the refusal", |u| match u {
            Update::LoginFailed { code, .. } => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::Disabled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bob.bodies(conv).contains(&"typed offline".to_owned()));
    assert!(!v.bodies().contains(&"typed offline".to_owned()));
    let _ = &mut v;
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}

/// `agent passwd` ends the sessions signed in with the old password, within
/// a second; the agent signs in again with the new one and keeps its chats
/// (they follow the grace period, not a disable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_ends_the_old_sessions_and_the_new_password_signs_in() {
    let cli = holdfast_tests::server::server_binary();
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice_id = agent_id(&srv, "alice");
    let mut alice = live(&srv, "alice", &dir).await;
    let (_v, conv) = chat_with(&srv, &mut alice, "hi").await;
    let out = std::process::Command::new(&cli)
        .args([
            "agent",
            "passwd",
            "alice",
            "--password",
            "brand-new-pass",
            "--data-dir",
        ])
        .arg(srv.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let t0 = Instant::now();
    let code = alice
        .until("the refusal", |u| match u {
            Update::LoginFailed { code, .. } => Some(*code),
            _ => None,
        })
        .await;
    assert_eq!(code, ErrorCode::Revoked);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    alice
        .handle
        .set_password(zeroize::Zeroizing::new("brand-new-pass".to_owned()))
        .await
        .unwrap();
    alice.live().await;
    let m = alice.handle.send_message(conv, "back").await.unwrap();
    alice.outcome(m).await.unwrap();
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let c = store::reads::conversation(&conn, conv).unwrap().unwrap();
    assert_eq!(c.assigned, Some(alice_id));
    alice.shutdown().await;
    srv.stop().await;
}

/// Tested as an attack: after `disable` or `passwd`, the old session's next
/// command is refused, even if it arrives before the server has polled the
/// change, and nothing of it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_session_cannot_act_after_disable_or_passwd() {
    let srv = TestServer::start().await;
    for (user, change) in [("alice", "disable"), ("bob", "passwd")] {
        let (mut a, _) = RawAgent::login(srv.agent_addr(), user, PASSWORD)
            .await
            .unwrap();
        // Away, so the visitor's chat waits for an Accept.
        a.command(Action::SetPresence {
            presence: Presence::Away,
        })
        .await
        .unwrap();
        a.recv_until(WAIT, |m| matches!(m, ServerMsg::Ack(_)))
            .await
            .unwrap();
        let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
        let VisitorOut::Ack { conversation, .. } = v.say_acked("waiting").await.unwrap() else {
            panic!()
        };
        {
            let conn = store::open_connection(srv.dir.path()).unwrap();
            match change {
                "disable" => admin::set_disabled(&conn, user, true).unwrap(),
                _ => admin::set_password(&conn, user, "another-pass").unwrap(),
            }
        }
        // At once: the change feed is polled every 200 ms, the writer's
        // check is immediate.
        a.command(Action::Accept { conversation }).await.unwrap();
        let m = a
            .recv_until(WAIT, |m| {
                matches!(m, ServerMsg::Error(_) | ServerMsg::Ack(_))
            })
            .await
            .unwrap();
        let ServerMsg::Error(e) = m else {
            panic!("{user}: the old session's command was acked: {m:?}");
        };
        assert!(
            matches!(e.code, ErrorCode::Disabled | ErrorCode::Revoked),
            "{user}: {e:?}"
        );
        let conn = store::open_connection(srv.dir.path()).unwrap();
        let c = store::reads::conversation(&conn, conversation)
            .unwrap()
            .unwrap();
        assert_eq!(
            c.state,
            ConversationState::Queued,
            "{user}: accepted anyway"
        );
        // And the connection is closed, promptly.
        let closed = loop {
            match a.recv(Duration::from_secs(3)).await {
                Ok(Some(_)) => continue,
                Ok(None) => break true,
                Err(e) => break !e.to_string().contains("timed out"),
            }
        };
        assert!(closed, "{user}: the old session stayed open");
        v.close().await;
    }
    srv.stop().await;
}

/// A supervisor reads every chat of the site live, and can move it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_reads_every_chat_live() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sue_id = add(&srv, "sue", "Sue", Role::Supervisor, 5);
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "question one").await;
    let mut sue = live(&srv, "sue", &dir).await;
    let me = sue.member_where(sue_id, |_| true).await;
    assert_eq!(me.role, Role::Supervisor);
    let p = sue.handle.set_presence(Presence::Away).await.unwrap();
    sue.outcome(p).await.unwrap();
    // The snapshot at login already holds Alice's chat.
    wait_body(&sue, conv, "question one").await;
    v.say_acked("question two").await.unwrap();
    let r = alice.handle.send_message(conv, "answer").await.unwrap();
    alice.outcome(r).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let b = sue.bodies(conv);
        let said: Vec<&String> = b.iter().filter(|s| !s.starts_with('{')).collect();
        if said == ["question one", "question two", "answer"] {
            break;
        }
        assert!(Instant::now() < deadline, "{b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A supervisor cannot write in someone else's chat…
    let w = sue.handle.send_message(conv, "butting in").await.unwrap();
    assert_eq!(sue.outcome(w).await.unwrap_err().0, ErrorCode::Conflict);
    // …but can move it.
    let mut bob = live(&srv, "bob", &dir).await;
    sue.member_where(bob_id, |m| m.presence == Presence::Online)
        .await;
    let t = sue
        .handle
        .transfer(conv, Some(alice_id), bob_id, None)
        .await
        .unwrap();
    sue.outcome(t).await.unwrap();
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    let n = wait_notice(&mut v, |n| matches!(n, Notice::Transferred { .. })).await;
    assert_eq!(
        n,
        Notice::Transferred {
            from: Some("Alice".into()),
            to: "Bob".into(),
            by: "Sue".into()
        }
    );
    alice.shutdown().await;
    bob.shutdown().await;
    sue.shutdown().await;
    srv.stop().await;
}

/// With every agent away, a visitor leaves a message with an email: agents
/// see the text, the email and the page; one accepts and replies, and the
/// reply waits for the visitor's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_left_message_shows_its_email_and_page_and_the_reply_waits() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let p = alice.handle.set_presence(Presence::Away).await.unwrap();
    alice.outcome(p).await.unwrap();
    let mut v = WsVisitor::connect_with(
        srv.http(),
        hello("acme", None, None, "https://shop.example/pricing"),
    )
    .await
    .unwrap();
    assert!(matches!(
        v.welcome,
        VisitorOut::Welcome {
            agents_online: false,
            ..
        }
    ));
    let id = new_id();
    v.send_json(&VisitorIn::LeaveMessage {
        id,
        body: "Do you ship to Norway?".into(),
        email: Some("dana@example.com".into()),
    })
    .await
    .unwrap();
    v.wait_for(WAIT, |m| matches!(m, VisitorOut::Ack { .. }))
        .await
        .unwrap();
    let c = alice
        .conversation_where(|c| c.state == ConversationState::LeftMessage)
        .await;
    assert_eq!(c.contact_email.as_deref(), Some("dana@example.com"));
    let deadline = Instant::now() + WAIT;
    let left = loop {
        let msgs = alice.messages(c.id);
        if let Some(n) = notices(&msgs)
            .into_iter()
            .find(|n| matches!(n, Notice::LeftMessage { .. }))
        {
            assert!(msgs.iter().any(|m| m.body == "Do you ship to Norway?"));
            break n;
        }
        assert!(Instant::now() < deadline, "{msgs:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        left,
        Notice::LeftMessage {
            email: Some("dana@example.com".into()),
            url: Some("https://shop.example/pricing".into()),
            title: Some("Page https://shop.example/pricing".into()),
        }
    );
    // The visitor never sees the agents-only line.
    let (token, cursor) = (v.token.clone(), v.cursor);
    v.close().await;
    let a = alice.handle.accept(c.id).await.unwrap();
    alice.outcome(a).await.unwrap();
    let r = alice
        .handle
        .send_message(c.id, "Yes, in 3-5 days.")
        .await
        .unwrap();
    alice.outcome(r).await.unwrap();
    // The visitor comes back later and finds the reply.
    let mut back = WsVisitor::connect_with(
        srv.http(),
        hello("acme", Some(token), Some(cursor), "https://shop.example/"),
    )
    .await
    .unwrap();
    back.wait_message("Yes, in 3-5 days.").await.unwrap();
    let all = serde_json::to_string(&back.events).unwrap();
    assert!(!all.contains(r#""kind":"left_message""#), "{all}");
    assert!(!all.contains("shop.example/pricing"), "{all}");
    alice.shutdown().await;
    srv.stop().await;
}

/// The visitor ends the chat: a line says so, the chat closes, the agent's
/// load drops, and the next message starts a new chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitor_can_end_the_chat() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice_id = agent_id(&srv, "alice");
    let mut alice = live(&srv, "alice", &dir).await;
    let (mut v, conv) = chat_with(&srv, &mut alice, "thanks, that's all").await;
    alice.member_where(alice_id, |m| m.active == 1).await;
    let id = new_id();
    v.send_json(&VisitorIn::EndChat { id }).await.unwrap();
    let ack = v
        .wait_for(
            WAIT,
            |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
        )
        .await
        .unwrap();
    // Idempotent: the same id again gets the same answer.
    v.send_json(&VisitorIn::EndChat { id }).await.unwrap();
    let again = v
        .wait_for(
            WAIT,
            |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
        )
        .await
        .unwrap();
    assert_eq!(ack, again);
    alice
        .conversation_where(|c| c.id == conv && c.state == ConversationState::Closed)
        .await;
    alice.member_where(alice_id, |m| m.active == 0).await;
    assert!(notices(&alice.messages(conv)).contains(&Notice::ClosedByVisitor));
    wait_notice(&mut v, |n| *n == Notice::ClosedByVisitor).await;
    // Nothing left to end.
    let id2 = new_id();
    v.send_json(&VisitorIn::EndChat { id: id2 }).await.unwrap();
    let e = v
        .wait_for(
            WAIT,
            |m| matches!(m, VisitorOut::Error { id: Some(a), .. } if *a == id2),
        )
        .await
        .unwrap();
    assert!(matches!(
        e,
        VisitorOut::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    let VisitorOut::Ack {
        conversation: next, ..
    } = v.say_acked("one more question").await.unwrap()
    else {
        panic!()
    };
    assert_ne!(next, conv);
    alice.shutdown().await;
    srv.stop().await;
}

/// Agents who sign in get the team, and every presence and load change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_team_list_follows_presence_and_load() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (alice_id, bob_id) = (agent_id(&srv, "alice"), agent_id(&srv, "bob"));
    let mut alice = live(&srv, "alice", &dir).await;
    let team = alice
        .until("the team", |u| match u {
            Update::Team(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    let names: Vec<(&str, Presence)> = team.iter().map(|m| (m.name.as_str(), m.presence)).collect();
    assert_eq!(
        names,
        [("Alice", Presence::Online), ("Bob", Presence::Offline)]
    );
    let mut bob = live(&srv, "bob", &dir).await;
    alice
        .member_where(bob_id, |m| m.presence == Presence::Online)
        .await;
    let p = bob.handle.set_presence(Presence::Away).await.unwrap();
    bob.outcome(p).await.unwrap();
    alice
        .member_where(bob_id, |m| m.presence == Presence::Away)
        .await;
    let (_v, _conv) = chat_with(&srv, &mut alice, "hello").await;
    let me = bob.member_where(alice_id, |m| m.active == 1).await;
    assert_eq!((me.active, me.capacity), (1, 2));
    bob.shutdown().await;
    alice
        .member_where(bob_id, |m| m.presence == Presence::Offline)
        .await;
    alice.shutdown().await;
    srv.stop().await;
}

/// The raw protocol: SignOut before the acks of earlier commands would lose
/// them; the server acks them first, then says SignedOut, then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_acks_what_came_before_it_then_closes() {
    let srv = TestServer::start().await;
    let (mut a, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let (seq, _) = a
        .command(Action::SetPresence {
            presence: Presence::Away,
        })
        .await
        .unwrap();
    a.send(&ClientMsg::SignOut).await.unwrap();
    let mut acked = 0;
    let mut signed_out = false;
    while let Ok(Some(m)) = a.recv(WAIT).await {
        match m {
            ServerMsg::Ack(b) => {
                assert!(!signed_out, "ack after SignedOut");
                acked = b.up_to;
            }
            ServerMsg::SignedOut => signed_out = true,
            _ => {}
        }
    }
    assert_eq!(acked, seq);
    assert!(signed_out);
    srv.stop().await;
}

/// A sign-in with the new password that lands before the server has read
/// the change is not ended by it; the session from before is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opened_with_the_new_password_survives_the_revocation() {
    let srv = TestServer::start().await;
    let (mut old, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    {
        let conn = store::open_connection(srv.dir.path()).unwrap();
        admin::set_password(&conn, "alice", "the-new-one").unwrap();
    }
    let (mut new, ok) = RawAgent::login(srv.agent_addr(), "alice", "the-new-one")
        .await
        .unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "{ok:?}");
    let e = old
        .recv_until(WAIT, |m| matches!(m, ServerMsg::Error(_)))
        .await
        .unwrap();
    assert!(
        matches!(e, ServerMsg::Error(ref w) if w.code == ErrorCode::Revoked),
        "{e:?}"
    );
    // Well past the next poll of the change feed, the new session works.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (seq, _) = new
        .command(Action::SetPresence {
            presence: Presence::Away,
        })
        .await
        .unwrap();
    let m = new
        .recv_until(WAIT, |m| {
            matches!(m, ServerMsg::Ack(_) | ServerMsg::Error(_))
        })
        .await
        .unwrap();
    assert!(
        matches!(m, ServerMsg::Ack(ref b) if b.up_to == seq),
        "{m:?}"
    );
    srv.stop().await;
}
