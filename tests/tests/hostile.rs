//! Hostile input on both channels. Each case gets a clear error, and a
//! bystander conversation keeps working throughout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::{
    Action, ClientMsg, Outcome, Query, QueryResult, ServerMsg, WireError,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::HandshakeError;
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::flows::{T, agent, run, wait_body};
use holdfast_tests::raw_agent::{ConnectError, RawAgent};
use holdfast_tests::server::{Backend, PASSWORD, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello, http_request, new_id};
use tokio::io::AsyncWriteExt;

/// A healthy conversation that must survive whatever else happens.
struct Bystander {
    agent: RawAgent,
    visitor: WsVisitor,
    conversation: u64,
    n: usize,
}

impl Bystander {
    async fn new(srv: &TestServer) -> Self {
        let mut agent = agent(srv, "bob").await;
        let mut visitor = WsVisitor::connect(srv.http(), "acme").await.unwrap();
        let VisitorOut::Ack { conversation, .. } =
            visitor.say_acked("bystander here").await.unwrap()
        else {
            panic!()
        };
        wait_body(&mut agent, "bystander here").await;
        Self {
            agent,
            visitor,
            conversation,
            n: 0,
        }
    }

    /// A full round trip still works.
    async fn still_fine(&mut self) {
        self.n += 1;
        let text = format!("still fine {}", self.n);
        self.visitor.say_acked(&text).await.unwrap();
        wait_body(&mut self.agent, &text).await;
        let reply = format!("reply {}", self.n);
        let o = run(
            &mut self.agent,
            Action::Send {
                conversation: self.conversation,
                body: reply.clone(),
                attachment: None,
            },
        )
        .await;
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
        self.visitor.wait_message(&reply).await.unwrap();
    }
}

fn error_code(m: &ServerMsg) -> Option<ErrorCode> {
    match m {
        ServerMsg::Error(WireError { code, .. }) => Some(*code),
        _ => None,
    }
}

async fn wrong_password_is_refused_then_throttled_without_locking_out_others(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut by = Bystander::new(&srv).await;
    for i in 0..5 {
        let (mut a, reply) = RawAgent::login(srv.agent_addr(), "alice", "wrong")
            .await
            .unwrap();
        assert_eq!(
            error_code(&reply),
            Some(ErrorCode::Unauthorized),
            "attempt {i}: {reply:?}"
        );
        let ServerMsg::Error(e) = &reply else {
            unreachable!()
        };
        assert_eq!(e.message, "wrong username or password");
        assert!(
            a.recv(T).await.unwrap().is_none(),
            "closed after a wrong password"
        );
    }
    // The sixth attempt is throttled, even with the right password.
    let (_, reply) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let ServerMsg::Error(e) = &reply else {
        panic!("{reply:?}")
    };
    assert_eq!(e.code, ErrorCode::Throttled);
    assert!(e.retry_after_ms.unwrap() >= 1000);
    // An unknown user costs the same and says the same.
    let (_, reply) = RawAgent::login(srv.agent_addr(), "nobody", "x")
        .await
        .unwrap();
    assert_eq!(error_code(&reply), Some(ErrorCode::Unauthorized));
    // A colleague behind the same address still logs in.
    let (_, ok) = RawAgent::login(srv.agent_addr(), "bob", PASSWORD)
        .await
        .unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "{ok:?}");
    by.still_fine().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    wrong_password_is_refused_then_throttled_without_locking_out_others
);

async fn bad_protocol_version_is_refused_naming_both_versions(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let err = RawAgent::handshake_version(srv.agent_addr(), 9)
        .await
        .unwrap_err();
    let ConnectError::Handshake(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e, HandshakeError::VersionMismatch { ours: 9, theirs: 4 });
    assert!(
        e.to_string().contains("version 9") && e.to_string().contains("version 4"),
        "{e}"
    );
    // A version 3 app (before agents sent files) is told to update, rather
    // than failing on the first answer it cannot decode.
    let err = RawAgent::handshake_version(srv.agent_addr(), 3)
        .await
        .unwrap_err();
    let ConnectError::Handshake(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(e, HandshakeError::VersionMismatch { ours: 3, theirs: 4 });
    srv.stop().await;
}
holdfast_tests::on_both_backends!(bad_protocol_version_is_refused_naming_both_versions);

async fn oversize_and_tampered_frames_close_only_that_connection(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut by = Bystander::new(&srv).await;

    // Oversize: announce 16 MiB. The server answers TooLarge and closes
    // without reading (or allocating) the body.
    let (mut a, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    a.io.get_mut()
        .write_all(&(16u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let m = a.recv_until(T, |m| error_code(m).is_some()).await.unwrap();
    assert_eq!(error_code(&m), Some(ErrorCode::TooLarge));
    let ServerMsg::Error(e) = &m else {
        unreachable!()
    };
    assert!(e.message.contains("16777216"), "{}", e.message);

    // Tampered: flip one bit of a valid sealed frame.
    let (mut a, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let mut frame = a
        .sealer
        .seal_with(&mut rand::rng(), &ClientMsg::Heartbeat.encode())
        .unwrap();
    frame[20] ^= 0x01;
    a.send_frame(frame).await.unwrap();
    let closed = loop {
        match a.recv(T).await {
            Ok(None) | Err(_) => break true,
            Ok(Some(_)) => continue,
        }
    };
    assert!(closed);

    // Replay: resend an earlier frame verbatim.
    let (mut a, _) = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap();
    let hb = a
        .sealer
        .seal_with(&mut rand::rng(), &ClientMsg::Heartbeat.encode())
        .unwrap();
    a.send_frame(hb.clone()).await.unwrap();
    a.send_frame(hb).await.unwrap();
    let closed = loop {
        match a.recv(T).await {
            Ok(None) | Err(_) => break true,
            Ok(Some(_)) => continue,
        }
    };
    assert!(closed);

    // Garbage before login: no handshake at all.
    let mut s = tokio::net::TcpStream::connect(srv.agent_addr())
        .await
        .unwrap();
    s.write_all(b"\x00\x00\x00\x05GET /").await.unwrap();
    by.still_fine().await;
    let m = srv.running().ctx.metrics.rejected_frames.get();
    assert!(m >= 3, "rejected frames counted: {m}");
    srv.stop().await;
}
holdfast_tests::on_both_backends!(oversize_and_tampered_frames_close_only_that_connection);

async fn malformed_visitor_json_gets_an_error_and_the_socket_survives(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    for bad in [
        "{not json",
        r#"{"t":"send","id":"nope","body":"x"}"#,
        r#"{"t":"send","id":"01901234-5678-7fff-bfff-ffffffffffff","body":""}"#,
        r#"{"t":"launch_missiles"}"#,
        r#"[1,2,3]"#,
    ] {
        v.send_raw(bad).await.unwrap();
        let m = v
            .wait_for(T, |m| matches!(m, VisitorOut::Error { .. }))
            .await
            .unwrap();
        let VisitorOut::Error { code, .. } = m else {
            unreachable!()
        };
        assert_eq!(code, ErrorCode::BadRequest, "{bad}");
    }
    // A send that fails validation is refused by its id, so a widget that
    // waits for each answer is not left waiting.
    let big_id = new_id();
    let big = format!(
        r#"{{"t":"send","id":"{big_id}","body":"{}"}}"#,
        "x".repeat(9000)
    );
    v.send_raw(&big).await.unwrap();
    let m = v
        .wait_for(T, |m| matches!(m, VisitorOut::Error { .. }))
        .await
        .unwrap();
    assert!(
        matches!(m, VisitorOut::Error { id: Some(i), code: ErrorCode::BadRequest, .. } if i == big_id),
        "{m:?}"
    );
    v.send_json(&VisitorIn::Ping).await.unwrap();
    v.wait_for(T, |m| matches!(m, VisitorOut::Pong))
        .await
        .unwrap();
    v.say_acked("still here").await.unwrap();
    // Long-poll: malformed body gets 400 with a JSON error.
    let (status, body) = http_request(srv.http(), "POST", "/v1/visitor/lp", Some(b"{oops"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("bad_request"));
    srv.stop().await;
}
holdfast_tests::on_both_backends!(malformed_visitor_json_gets_an_error_and_the_socket_survives);

async fn forged_tokens_cannot_read_or_write_as_another_visitor(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut by = Bystander::new(&srv).await;
    let victim = by.visitor.token.clone();
    // Flip one hex digit of the signature.
    let mut forged = victim.clone().into_bytes();
    forged[79] = if forged[79] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    let err = WsVisitor::connect_with(
        srv.http(),
        hello("acme", Some(forged.clone()), Some(0), "https://x/"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    // Long-poll read with a forged token: 401, no events.
    let (status, body) = http_request(
        srv.http(),
        "GET",
        &format!("/v1/visitor/poll?token={forged}&after=0"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 401);
    assert!(!String::from_utf8_lossy(&body).contains("bystander"));
    // A token for another site is refused on this one.
    let other = WsVisitor::connect(srv.http(), "other").await.unwrap();
    let err = WsVisitor::connect_with(
        srv.http(),
        hello("acme", Some(other.token.clone()), Some(0), "https://x/"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("Unauthorized"), "{err}");
    // Reusing another visitor's message id is refused, not merged.
    let mut lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let id = new_id();
    by.visitor
        .send_json(&VisitorIn::Send {
            id,
            body: "mine".into(),
            attachment: None,
        })
        .await
        .unwrap();
    by.visitor
        .wait_for(
            T,
            |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
        )
        .await
        .unwrap();
    let r = lp
        .send(vec![VisitorIn::Send {
            id,
            body: "hijack".into(),
            attachment: None,
        }])
        .await
        .unwrap();
    assert!(
        matches!(
            r[0],
            VisitorOut::Error {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{r:?}"
    );
    let _ = lp.poll().await;
    by.still_fine().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(forged_tokens_cannot_read_or_write_as_another_visitor);

async fn identify_hash_is_enforced_when_the_site_has_a_secret(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut mallory = agent(&srv, "mallory").await;
    let mut v = WsVisitor::connect(srv.http(), "other").await.unwrap();
    let identify = |hash: Option<String>| VisitorIn::Identify {
        id: "customer-42".into(),
        name: Some("Real Customer".into()),
        email: Some("real@example.com".into()),
        hash,
        attrs: [("plan".to_string(), serde_json::json!("gold"))]
            .into_iter()
            .collect(),
    };
    v.send_json(&identify(Some("00".repeat(32)))).await.unwrap();
    let m = v
        .wait_for(T, |m| matches!(m, VisitorOut::Error { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            m,
            VisitorOut::Error {
                code: ErrorCode::BadIdentity,
                ..
            }
        ),
        "{m:?}"
    );
    v.send_json(&identify(None)).await.unwrap();
    let m = v
        .wait_for(T, |m| matches!(m, VisitorOut::Error { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            m,
            VisitorOut::Error {
                code: ErrorCode::BadIdentity,
                ..
            }
        ),
        "{m:?}"
    );
    // The right hash is accepted and the agent sees a verified identity.
    let good = holdfast_server::token::identity_hash("other-secret", "customer-42");
    v.send_json(&identify(Some(good))).await.unwrap();
    mallory
        .recv_visitor(T, |i| {
            i.id == v.visitor
                && i.verified
                && i.name.as_deref() == Some("Real Customer")
                && i.attrs == vec![("plan".to_string(), "gold".to_string())]
        })
        .await
        .unwrap();
    srv.stop().await;
}
holdfast_tests::on_both_backends!(identify_hash_is_enforced_when_the_site_has_a_secret);

async fn an_agent_of_one_site_cannot_reach_another(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut by = Bystander::new(&srv).await;
    let mut mallory = agent(&srv, "mallory").await;
    let o = run(
        &mut mallory,
        Action::Send {
            conversation: by.conversation,
            body: "phish".into(),
            attachment: None,
        },
    )
    .await;
    // The same answer as for a conversation that does not exist, so ids
    // cannot be probed across sites.
    assert_eq!(
        o,
        Outcome::Rejected {
            code: ErrorCode::NotFound,
            message: format!("no conversation {}", by.conversation),
        }
    );
    for action in [
        Action::Accept {
            conversation: by.conversation,
        },
        Action::Close {
            conversation: by.conversation,
        },
        Action::Invite {
            visitor: by.visitor.visitor.clone(),
            body: "hi".into(),
        },
    ] {
        let o = run(&mut mallory, action).await;
        assert!(
            matches!(
                o,
                Outcome::Rejected {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{o:?}"
        );
    }
    mallory
        .send(&ClientMsg::Query(Query::History {
            request: 1,
            visitor: by.visitor.visitor.clone(),
            before: None,
            limit: 50,
        }))
        .await
        .unwrap();
    let r = mallory
        .recv_until(T, |m| matches!(m, ServerMsg::QueryResult { .. }))
        .await
        .unwrap();
    assert!(
        matches!(
            r,
            ServerMsg::QueryResult {
                result: QueryResult::Refused(WireError {
                    code: ErrorCode::NotFound,
                    ..
                }),
                ..
            }
        ),
        "{r:?}"
    );
    // Nothing of site A leaked to mallory meanwhile.
    by.still_fine().await;
    while let Ok(Some(m)) = mallory.recv(Duration::from_millis(300)).await {
        if let ServerMsg::Live(ev) = &m {
            for i in ev.upserts() {
                assert_ne!(
                    i.id, by.visitor.visitor,
                    "site A visitor shown to site B agent"
                );
            }
        }
        assert!(
            !matches!(m, ServerMsg::Event { .. }),
            "site B agent got an event: {m:?}"
        );
    }
    srv.stop().await;
}
holdfast_tests::on_both_backends!(an_agent_of_one_site_cannot_reach_another);

/// Long-poll POSTs of one visitor sent at once cannot each spend the same
/// tokens: they take turns, so the limit holds.
async fn concurrent_long_poll_posts_cannot_race_the_rate_limit(backend: Backend) {
    let srv = TestServer::start_with_on(backend, |c| {
        c.visitor.msg_rate = 0.5;
        c.visitor.msg_burst = 2.0;
    })
    .await;
    let lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let posts = (0..10).map(|i| {
        let (http, token) = (lp.http, lp.token.clone());
        tokio::spawn(async move {
            let req = holdfast_protocol::visitor::LongPollRequest {
                token: Some(token),
                msgs: vec![VisitorIn::Send {
                    id: new_id(),
                    body: format!("burst {i}"),
                    attachment: None,
                }],
            };
            LpVisitor::post(http, &req).await.unwrap().1.msgs
        })
    });
    let mut acked = 0;
    for p in posts {
        for m in p.await.unwrap() {
            if matches!(m, VisitorOut::Ack { .. }) {
                acked += 1;
            }
        }
    }
    assert!(acked <= 3, "{acked} of 10 got through a burst of 2");
    assert!(acked >= 2);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    concurrent_long_poll_posts_cannot_race_the_rate_limit
);
