//! The real server binary as a process: SIGKILL between send and delivery
//! loses nothing acked; SIGTERM says goodbye and flushes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::{Action, Event, Outcome, Resume, ServerMsg};
use holdfast_protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_tests::flows::{T, run};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, PASSWORD, ServerProcess, seed_on};
use holdfast_tests::visitor::{WsVisitor, hello, new_id};

/// Log in on `device`; returns the agent, how it resumed, and its cursor
/// after reading the snapshot or the replay.
async fn login_device(
    p: &ServerProcess,
    device: holdfast_protocol::ids::MsgId,
    cursor: Option<u64>,
) -> (RawAgent, Resume, u64, Vec<String>) {
    let mut a = RawAgent::handshake(p.agent).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, cursor))
        .await
        .unwrap();
    let ok = a.recv(T).await.unwrap().unwrap();
    let ServerMsg::LoginOk(ok) = ok else {
        panic!("{ok:?}")
    };
    let mut cursor = cursor.unwrap_or(0);
    let mut bodies = Vec::new();
    // Read everything the server has for us until it goes quiet.
    while let Ok(Some(m)) = a.recv(Duration::from_millis(700)).await {
        match m {
            ServerMsg::Snapshot(s) => cursor = s.seq,
            ServerMsg::Event { seq, event } => {
                assert_eq!(seq, cursor + 1, "events arrive in seq order without gaps");
                cursor = seq;
                if let Event::Message(msg) = event
                    && !matches!(msg.author, holdfast_protocol::agent::Author::System)
                {
                    bodies.push(msg.body);
                }
            }
            _ => {}
        }
    }
    (a, ok.resume, cursor, bodies)
}

async fn sigkill_between_send_and_delivery_loses_nothing_acked(backend: Backend) {
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let database = backend.fresh_database();
    seed_on(dir.path(), database.as_deref());
    let mut p = ServerProcess::start_on(dir.path(), database.as_deref(), &[], None);
    let device = new_id();

    // Alice's device has seen everything so far, then goes offline.
    let (a, _, cursor, _) = login_device(&p, device, None).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A visitor sends 20 messages; each is acked, so each is durable.
    let mut v = WsVisitor::connect(p.http, "acme").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        let body = format!("durable {i}");
        let ack = v.say_acked(&body).await.unwrap();
        assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
        sent.push(body);
    }
    let (token, vcursor) = (v.token.clone(), v.cursor);
    drop(v);

    // kill -9 before any agent received them.
    p.kill9();
    p.spawn();

    let (mut a, resume, _, bodies) = login_device(&p, device, Some(cursor)).await;
    assert_eq!(resume, Resume::Replay { after: cursor });
    assert_eq!(bodies, sent, "every acked message, once each, in order");

    // The other direction: Alice's acked replies survive a kill too.
    let conv = match a.command(Action::Accept { conversation: 1 }).await {
        Ok(_) => 1,
        Err(e) => panic!("{e}"),
    };
    a.recv_until(T, |m| matches!(m, ServerMsg::Ack(_)))
        .await
        .unwrap();
    let mut replies = Vec::new();
    for i in 0..10 {
        let body = format!("reply {i}");
        let o = run(
            &mut a,
            Action::Send {
                conversation: conv,
                body: body.clone(),
                attachment: None,
            },
        )
        .await;
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
        replies.push(body);
    }
    p.kill9();
    p.spawn();
    let mut v = WsVisitor::connect_with(
        p.http,
        hello(
            "acme",
            Some(token),
            Some(vcursor),
            "https://shop.example/back",
        ),
    )
    .await
    .unwrap();
    let VisitorOut::Welcome { resumed, .. } = &v.welcome else {
        panic!()
    };
    assert!(*resumed);
    v.wait_message("reply 9").await.unwrap();
    let got: Vec<String> = v
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) if m.body.starts_with("reply") => Some(m.body.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got, replies);
}
holdfast_tests::on_both_backends!(sigkill_between_send_and_delivery_loses_nothing_acked);

async fn sigterm_says_going_away_and_keeps_everything(backend: Backend) {
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let database = backend.fresh_database();
    seed_on(dir.path(), database.as_deref());
    let mut p = ServerProcess::start_on(dir.path(), database.as_deref(), &[], None);
    let device = new_id();
    let (mut a, _, _, _) = login_device(&p, device, None).await;
    let mut v = WsVisitor::connect(p.http, "acme").await.unwrap();
    v.say_acked("before shutdown").await.unwrap();
    a.recv_until(T, |m| {
        matches!(
            m,
            ServerMsg::Event {
                event: Event::Message(_),
                ..
            }
        )
    })
    .await
    .unwrap();

    let status = tokio::task::spawn_blocking(move || {
        let s = p.terminate();
        (s, p)
    });
    a.recv_until(T, |m| matches!(m, ServerMsg::GoingAway { .. }))
        .await
        .unwrap();
    v.wait_for(T, |m| matches!(m, VisitorOut::GoingAway { .. }))
        .await
        .unwrap();
    let (status, mut p) = status.await.unwrap();
    assert!(status.unwrap().success(), "clean exit on SIGTERM");

    p.spawn();
    let (_, _, _, bodies) = login_device(&p, new_id(), None).await;
    let _ = bodies;
    let mut a2 = RawAgent::handshake(p.agent).await.unwrap();
    a2.send(&RawAgent::login_msg("alice", PASSWORD, new_id(), None))
        .await
        .unwrap();
    let snap = a2
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    let ServerMsg::Snapshot(s) = snap else {
        unreachable!()
    };
    assert!(s.messages.iter().any(|m| m.body == "before shutdown"));
}
holdfast_tests::on_both_backends!(sigterm_says_going_away_and_keeps_everything);
