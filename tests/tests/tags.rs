//! Tags (issue 17, PROTOCOL.md 10.18): the site's list reaches agents at
//! login; a chat's tags are set from it, kept with the chat and as an
//! agents-only line in its transcript, so history and a new device's
//! snapshot have them, and no visitor path ever carries one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_client::Update;
use holdfast_protocol::agent::{Author, ConversationId};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;
use holdfast_protocol::visitor::VisitorOut;
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor};

/// The `tagged` lines of a chat in an agent's local store, oldest first.
fn tag_lines(a: &CoreAgent, c: ConversationId) -> Vec<(String, Vec<String>)> {
    a.messages(c)
        .iter()
        .filter(|m| m.author == Author::System)
        .filter_map(|m| match Notice::parse(&m.body) {
            Some(Notice::Tagged { by, tags }) => Some((by, tags)),
            _ => None,
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

async fn tags_are_set_from_the_site_list_kept_and_never_shown_to_visitors(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    srv.admin(|db| {
        holdfast_server::admin::set_site_tags(db, "acme", &strings(&["billing", "refund", "退款"]))
            .unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let list = alice
        .until("the site's tags", |u| match u {
            Update::SiteTags(t) => Some(t.clone()),
            _ => None,
        })
        .await;
    assert_eq!(list, strings(&["billing", "refund", "退款"]));

    let mut ws = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ws.say_acked("where is my refund?").await.unwrap()
    else {
        panic!("not acked")
    };
    let mut lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack {
        conversation: lp_conv,
        ..
    } = lp.say("and mine, over long-poll").await.unwrap()
    else {
        panic!("not acked")
    };

    // Set in the agent's spelling, stored in the site's, in pick order.
    for c in [conversation, lp_conv] {
        let id = alice
            .handle
            .tag(c, strings(&["Refund", "billing", "refund"]))
            .await
            .unwrap();
        alice.outcome(id).await.unwrap();
    }
    assert_eq!(
        tag_lines(&alice, conversation),
        vec![("Alice".to_owned(), strings(&["refund", "billing"]))]
    );
    // A tag off the list is refused, naming it; nothing changes.
    let id = alice
        .handle
        .tag(conversation, strings(&["refund", "vip"]))
        .await
        .unwrap();
    let (code, message) = alice.outcome(id).await.unwrap_err();
    assert_eq!(code, ErrorCode::BadRequest);
    assert!(message.contains("\"vip\""), "{message}");
    // The same set again is done, and writes no second line.
    let id = alice
        .handle
        .tag(conversation, strings(&["refund", "billing"]))
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    assert_eq!(tag_lines(&alice, conversation).len(), 1);
    // Then a change to a Chinese tag, and a reply the visitor does see.
    let id = alice
        .handle
        .tag(conversation, strings(&["退款"]))
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    let id = alice
        .handle
        .send_message(conversation, "Refund is on its way.")
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    assert_eq!(
        tag_lines(&alice, conversation).last().unwrap().1,
        strings(&["退款"])
    );

    // No visitor path carries a tag line: live, replay, long-poll.
    ws.wait_message("Refund is on its way.").await.unwrap();
    let leaked = |b: &String| b.contains("tagged") || b.contains("退款") || b.contains("billing");
    assert!(!ws.bodies().iter().any(leaked), "live: {:?}", ws.bodies());
    let ws = ws.reconnect(srv.http(), "acme").await.unwrap();
    assert!(!ws.bodies().iter().any(leaked), "replay: {:?}", ws.bodies());
    let mut polled = Vec::new();
    for _ in 0..3 {
        polled.extend(lp.poll().await.unwrap());
    }
    lp.cursor = 0;
    polled.extend(lp.poll().await.unwrap());
    let text = format!("{polled:?}");
    assert!(
        !text.contains("tagged") && !text.contains("billing"),
        "long-poll: {text}"
    );

    // History keeps each change, with who made it.
    let messages = alice.history(&ws.visitor).await;
    let changes: Vec<Vec<String>> = messages
        .iter()
        .filter_map(|m| match Notice::parse(&m.body) {
            Some(Notice::Tagged { tags, .. }) => Some(tags),
            _ => None,
        })
        .collect();
    // Newest first.
    assert_eq!(
        changes,
        vec![strings(&["退款"]), strings(&["refund", "billing"])]
    );
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(tags_are_set_from_the_site_list_kept_and_never_shown_to_visitors);

/// A new device learns a chat's tags from its snapshot, even when the
/// `tagged` line is older than the snapshot's recent messages.
async fn a_new_device_gets_tags_set_long_ago(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    srv.admin(|db| {
        holdfast_server::admin::set_site_tags(db, "acme", &strings(&["billing", "vip"])).unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;
    let mut ws = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ws.say_acked("hello").await.unwrap() else {
        panic!("not acked")
    };
    let id = alice
        .handle
        .tag(conversation, strings(&["vip"]))
        .await
        .unwrap();
    alice.outcome(id).await.unwrap();
    // More than a snapshot's 200 recent messages after the tag line.
    let mut last = None;
    for i in 0..210 {
        last = Some(
            alice
                .handle
                .send_message(conversation, format!("line {i}"))
                .await
                .unwrap(),
        );
    }
    alice.outcome(last.unwrap()).await.unwrap();
    alice.shutdown().await;

    let other = tempfile::tempdir().unwrap();
    let mut laptop = live(&srv, "alice", &other).await;
    if !laptop
        .seen
        .iter()
        .any(|u| matches!(u, Update::SnapshotApplied { .. }))
    {
        laptop
            .until("the snapshot", |u| {
                matches!(u, Update::SnapshotApplied { .. }).then_some(())
            })
            .await;
    }
    let lines = tag_lines(&laptop, conversation);
    assert_eq!(lines, vec![("Alice".to_owned(), strings(&["vip"]))]);
    laptop.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_new_device_gets_tags_set_long_ago);

#[tokio::test]
async fn a_site_list_refuses_duplicates_commas_and_overlong_tags() {
    let srv = TestServer::start_on(Backend::Sqlite).await;
    let errors = srv
        .admin(|db| {
            let set = |v: &[&str]| {
                holdfast_server::admin::set_site_tags(db, "acme", &strings(v))
                    .err()
                    .map(|e| e.to_string())
            };
            vec![
                set(&["Billing", "billing"]),
                set(&["a,b"]),
                set(&["line\nbreak"]),
                set(&[&"x".repeat(41)]),
                set(&["  "]),
                set(&["ok", "fine"]),
            ]
        })
        .await;
    assert!(errors[0].as_ref().unwrap().contains("twice"), "{errors:?}");
    assert!(errors[1].as_ref().unwrap().contains("commas"), "{errors:?}");
    assert!(
        errors[2].as_ref().unwrap().contains("control"),
        "{errors:?}"
    );
    assert!(errors[3].as_ref().unwrap().contains("40"), "{errors:?}");
    assert!(
        errors[4].as_ref().unwrap().contains("1 to 40"),
        "{errors:?}"
    );
    assert_eq!(errors[5], None);
    srv.stop().await;
}
