//! Proactive invite, queue and capacity, leave-a-message, history across
//! visits, and one agent on two devices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_protocol::agent::{
    Action, Author, ClientMsg, ConversationState, Outcome, Presence, Query, QueryResult, Resume,
    ServerMsg,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{VisitorConvState, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::flows::{T, agent, run, set_presence, wait_body, wait_conv};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, PASSWORD, TestServer};
use holdfast_tests::visitor::{WsVisitor, new_id};

async fn agent_invites_a_browsing_visitor(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut alice = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    // Navigation shows up live in the visitor's trail.
    v.send_json(&VisitorIn::Page(holdfast_protocol::visitor::PageInfo {
        url: "https://shop.example/pricing".into(),
        title: "Pricing".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    alice
        .recv_visitor(T, |i| {
            i.id == v.visitor
                && i.trail.last().is_some_and(|p| p.title == "Pricing")
                && i.trail.len() == 2
        })
        .await
        .unwrap();

    let o = run(
        &mut alice,
        Action::Invite {
            visitor: v.visitor.clone(),
            body: "Can I help you choose a plan?".into(),
        },
    )
    .await;
    let Outcome::Done {
        conversation: Some(conv),
        ..
    } = o
    else {
        panic!("{o:?}")
    };
    // The visitor's widget learns of the conversation and the invitation.
    v.wait_for(T, |m| {
        matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
            if c.id == conv && c.state == VisitorConvState::Active && c.agent_name.as_deref() == Some("Alice"))
    })
    .await
    .unwrap();
    v.wait_message("Can I help you choose a plan?")
        .await
        .unwrap();
    v.say_acked("Yes please").await.unwrap();
    wait_body(&mut alice, "Yes please").await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(agent_invites_a_browsing_visitor);

async fn queue_auto_assigns_by_load_within_capacity_and_accept_takes_the_rest(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    // Alice has capacity 2. Bob is present but away, so only Alice is picked.
    let mut alice = agent(&srv, "alice").await;
    let mut bob = agent(&srv, "bob").await;
    set_presence(&mut bob, Presence::Away).await;

    let mut visitors = Vec::new();
    let mut convs = Vec::new();
    for i in 0..3 {
        let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
        let VisitorOut::Ack { conversation, .. } = v
            .say_acked(&format!("visitor {i} needs help"))
            .await
            .unwrap()
        else {
            panic!()
        };
        convs.push(conversation);
        visitors.push(v);
    }
    let c0 = wait_conv(&mut alice, |c| {
        c.id == convs[0] && c.state == ConversationState::Active
    })
    .await;
    let c1 = wait_conv(&mut alice, |c| {
        c.id == convs[1] && c.state == ConversationState::Active
    })
    .await;
    assert_eq!(
        (c0.assigned_name.as_deref(), c1.assigned_name.as_deref()),
        (Some("Alice"), Some("Alice"))
    );
    // The third waits in the queue, visible to every agent, Bob included.
    let q = wait_conv(&mut bob, |c| c.id == convs[2]).await;
    assert_eq!(q.state, ConversationState::Queued);
    assert_eq!(q.assigned, None);

    // Bob takes it by hand; a second accept by Alice is refused.
    let o = run(
        &mut bob,
        Action::Accept {
            conversation: convs[2],
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    let o = run(
        &mut alice,
        Action::Accept {
            conversation: convs[2],
        },
    )
    .await;
    assert!(
        matches!(
            o,
            Outcome::Rejected {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{o:?}"
    );
    visitors[2]
        .wait_for(T, |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Conversation(c), .. }
                if c.state == VisitorConvState::Active && c.agent_name.as_deref() == Some("Bob"))
        })
        .await
        .unwrap();

    // Closing frees capacity; the next queued chat goes to Alice by itself.
    let o = run(
        &mut alice,
        Action::Close {
            conversation: convs[0],
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }));
    let mut v4 = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack {
        conversation: c4, ..
    } = v4.say_acked("fourth").await.unwrap()
    else {
        panic!()
    };
    let got = wait_conv(&mut alice, |c| {
        c.id == c4 && c.state == ConversationState::Active
    })
    .await;
    assert_eq!(got.assigned_name.as_deref(), Some("Alice"));
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    queue_auto_assigns_by_load_within_capacity_and_accept_takes_the_rest
);

async fn left_message_while_no_agent_is_online_reaches_agents_later(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Welcome { agents_online, .. } = &v.welcome else {
        panic!()
    };
    assert!(!agents_online);
    let id = new_id();
    v.send_json(&VisitorIn::LeaveMessage {
        id,
        body: "Please call me back about my order".into(),
        email: Some("sam@example.com".into()),
    })
    .await
    .unwrap();
    v.wait_for(
        T,
        |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
    )
    .await
    .unwrap();

    // Alice logs in later on a fresh device: the snapshot carries it.
    let (mut alice, ok) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let ServerMsg::LoginOk(ok) = ok else { panic!() };
    assert_eq!(ok.resume, Resume::Snapshot);
    let snap = alice
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(snap) = snap else {
        unreachable!()
    };
    assert!(!snap.recovered);
    let conv = snap
        .conversations
        .iter()
        .find(|c| c.visitor == v.visitor)
        .unwrap();
    assert_eq!(conv.state, ConversationState::LeftMessage);
    assert_eq!(conv.contact_email.as_deref(), Some("sam@example.com"));
    assert!(
        snap.messages
            .iter()
            .any(|m| m.body == "Please call me back about my order")
    );
    // She can take it and answer.
    let o = run(
        &mut alice,
        Action::Accept {
            conversation: conv.id,
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    run(
        &mut alice,
        Action::Send {
            conversation: conv.id,
            body: "Calling you now".into(),
            attachment: None,
        },
    )
    .await;
    v.wait_message("Calling you now").await.unwrap();

    srv.stop().await;
}
holdfast_tests::on_both_backends!(left_message_while_no_agent_is_online_reaches_agents_later);

async fn offline_agent_with_a_cursor_gets_the_left_message_by_replay(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let device = new_id();
    let mut bob = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    bob.send(&RawAgent::login_msg("bob", PASSWORD, device, None))
        .await
        .unwrap();
    let snap = bob
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(s) = snap else {
        unreachable!()
    };
    let cursor = s.seq;
    drop(bob);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.send_json(&VisitorIn::LeaveMessage {
        id: new_id(),
        body: "nobody home?".into(),
        email: None,
    })
    .await
    .unwrap();
    v.wait_for(T, |m| matches!(m, VisitorOut::Ack { .. }))
        .await
        .unwrap();

    let mut bob = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    bob.send(&RawAgent::login_msg("bob", PASSWORD, device, Some(cursor)))
        .await
        .unwrap();
    let ok = bob.recv(T).await.unwrap().unwrap();
    let ServerMsg::LoginOk(ok) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(ok.resume, Resume::Replay { after: cursor });
    wait_body(&mut bob, "nobody home?").await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(offline_agent_with_a_cursor_gets_the_left_message_by_replay);

async fn history_spans_every_visit_and_pages(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut alice = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack {
        conversation: first,
        ..
    } = v.say_acked("first visit, message 1").await.unwrap()
    else {
        panic!()
    };
    v.say_acked("first visit, message 2").await.unwrap();
    run(
        &mut alice,
        Action::Close {
            conversation: first,
        },
    )
    .await;

    // The visitor leaves and comes back later (same token): a new visit.
    let v = v.reconnect(srv.http(), "acme").await.unwrap();
    let mut v = v;
    let VisitorOut::Ack {
        conversation: second,
        ..
    } = v.say_acked("second visit").await.unwrap()
    else {
        panic!()
    };
    assert_ne!(first, second);
    run(
        &mut alice,
        Action::Send {
            conversation: second,
            body: "welcome back".into(),
            attachment: None,
        },
    )
    .await;

    let history = |before, limit| {
        ClientMsg::Query(Query::History {
            request: 7,
            visitor: v.visitor.clone(),
            before,
            limit,
        })
    };
    // Page back two messages at a time until the start: every message of
    // both visits, newest first, each once (system lines are messages too).
    let mut all = Vec::new();
    let mut before = None;
    let mut pages = 0;
    let mut seen_convs = std::collections::BTreeSet::new();
    loop {
        alice.send(&history(before, 2)).await.unwrap();
        let r = alice
            .recv_until(T, |m| matches!(m, ServerMsg::QueryResult { .. }))
            .await
            .unwrap();
        let ServerMsg::QueryResult {
            request: 7,
            result:
                QueryResult::History {
                    conversations,
                    messages,
                    more,
                    visitor,
                },
        } = r
        else {
            panic!("{r:?}")
        };
        pages += 1;
        // A page lists the conversations its own messages belong to (so
        // its size stays bounded however many visits there were), and
        // every one of those.
        for m in &messages {
            assert!(
                conversations.iter().any(|c| c.id == m.conversation),
                "message {} without its conversation",
                m.message
            );
        }
        for c in &conversations {
            seen_convs.insert(c.id);
        }
        assert!(
            visitor.unwrap().trail.len() >= 2,
            "trail covers both visits"
        );
        assert!(messages.len() <= 2);
        before = messages.last().map(|m| m.message);
        all.extend(messages);
        if !more {
            break;
        }
    }
    assert!(pages > 2, "{pages} pages");
    assert_eq!(
        seen_convs,
        [first, second].into_iter().collect(),
        "both visits listed"
    );
    let ids: Vec<u64> = all.iter().map(|m| m.message).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    let said: Vec<_> = all
        .iter()
        .filter(|m| !matches!(m.author, Author::System))
        .map(|m| m.body.clone())
        .collect();
    assert_eq!(
        said,
        [
            "welcome back",
            "second visit",
            "first visit, message 2",
            "first visit, message 1"
        ]
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(history_spans_every_visit_and_pages);

async fn one_agent_on_two_devices_sees_everything_on_both(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut laptop = agent(&srv, "alice").await;
    let mut desktop = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("hi from the visitor").await.unwrap()
    else {
        panic!()
    };
    wait_body(&mut laptop, "hi from the visitor").await;
    wait_body(&mut desktop, "hi from the visitor").await;
    // A reply from one device shows on the other too.
    run(
        &mut laptop,
        Action::Send {
            conversation,
            body: "typed on the laptop".into(),
            attachment: None,
        },
    )
    .await;
    wait_body(&mut desktop, "typed on the laptop").await;
    wait_body(&mut laptop, "typed on the laptop").await;
    v.wait_message("typed on the laptop").await.unwrap();
    // Going offline on one device keeps the agent online.
    drop(laptop);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(srv.running().ctx.hub.agents_online(1));
    srv.stop().await;
}
holdfast_tests::on_both_backends!(one_agent_on_two_devices_sees_everything_on_both);
