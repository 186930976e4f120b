//! Blocking a visitor (issue 17, PROTOCOL.md 10.16) with a real agent
//! client core, over WebSocket and long-poll visitors: the block ends the
//! chat and drops the visitor, its hello and messages are refused with a
//! clear error, a block by address keeps a new visitor id from that address
//! out, and an unblock lets it back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello};

const WAIT: Duration = Duration::from_secs(10);

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A hello from `ip` (with `token` if given): the visitor, or the error.
async fn hello_from(
    srv: &TestServer,
    ip: IpAddr,
    token: Option<String>,
) -> Result<WsVisitor, String> {
    WsVisitor::connect_from(
        srv.http(),
        ip,
        hello("acme", token, None, "https://shop.example/"),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn block(
    a: &mut CoreAgent,
    visitor: &str,
    by_address: bool,
    reason: &str,
) -> Result<(), (ErrorCode, String)> {
    let id = a.handle.block(visitor, by_address, reason).await.unwrap();
    a.outcome(id).await
}

async fn blocked_visitors_are_refused_and_an_unblock_lets_them_back(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let mut v = hello_from(&srv, from(7), None).await.unwrap();
    v.say_acked("you are useless").await.unwrap();
    let lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    assert!(matches!(
        lp.say("me too").await.unwrap(),
        VisitorOut::Ack { .. }
    ));

    // A reason is required, and another site's agent cannot see this one.
    let e = block(&mut alice, &v.visitor, false, "  ")
        .await
        .unwrap_err();
    assert_eq!(e.0, ErrorCode::BadRequest, "{e:?}");
    let mut mallory = live(&srv, "mallory", &dir).await;
    let e = block(&mut mallory, &v.visitor, false, "mine now")
        .await
        .unwrap_err();
    assert_eq!(e.0, ErrorCode::NotFound, "{e:?}");

    // Blocked by id and address: dropped at once, its chat ended.
    block(&mut alice, &v.visitor, true, "abusive language")
        .await
        .unwrap();
    v.wait_for(WAIT, |m| matches!(m, VisitorOut::GoingAway { .. }))
        .await
        .expect("the blocked visitor's connection is dropped");
    let e = hello_from(&srv, from(7), Some(v.token.clone()))
        .await
        .unwrap_err();
    assert!(
        e.contains("Forbidden") && e.contains("not available to you"),
        "{e}"
    );
    // A fresh visitor id from the blocked address is refused too; another
    // address is not.
    let e = hello_from(&srv, from(7), None).await.unwrap_err();
    assert!(e.contains("Forbidden"), "{e}");
    let mut bystander = hello_from(&srv, from(8), None).await.unwrap();
    bystander.say_acked("hello, unrelated").await.unwrap();

    // Long-poll: blocked by id only; its message racing the block is
    // refused in the writer, with words the widget shows, and not stored.
    block(&mut alice, &lp.visitor, false, "spam").await.unwrap();
    let r = lp.say("still here?").await.unwrap();
    let VisitorOut::Error { code, message, .. } = r else {
        panic!("a blocked visitor's message was taken: {r:?}")
    };
    assert_eq!(code, ErrorCode::Forbidden);
    assert!(message.contains("was not sent"), "{message}");
    let refused = lp
        .send(vec![hello(
            "acme",
            Some(lp.token.clone()),
            None,
            "https://shop.example/",
        )])
        .await
        .unwrap();
    assert!(
        matches!(
            refused.first(),
            Some(VisitorOut::Error {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bodies: Vec<String> = alice
        .handle
        .conversations()
        .unwrap()
        .iter()
        .flat_map(|c| alice.bodies(c.info.id))
        .collect();
    assert!(!bodies.iter().any(|b| b == "still here?"), "{bodies:?}");

    // Unblocked: back in, by token and from the address.
    let id = alice.handle.unblock(v.visitor.clone()).await.unwrap();
    alice.outcome(id).await.unwrap();
    let mut back = hello_from(&srv, from(7), Some(v.token.clone()))
        .await
        .unwrap();
    back.say_acked("sorry about that").await.unwrap();
    hello_from(&srv, from(7), None).await.unwrap();
    let _ = back.send_json(&VisitorIn::Ping).await;
    mallory.shutdown().await;
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(blocked_visitors_are_refused_and_an_unblock_lets_them_back);
