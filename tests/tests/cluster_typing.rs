//! Typing across nodes (PROTOCOL.md 10.18): a visitor on one node and the
//! chat's agent on another see each other type; the bus carries the signal
//! best-effort, and nothing of it is stored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_client::Update;
use holdfast_protocol::agent::ConversationState;
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_tests::cluster::{Cluster, LIVENESS, agents_online};
use holdfast_tests::visitor::WsVisitor;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_and_its_agent_on_different_nodes_see_each_other_type() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(2, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    agents_online(&mut v).await;
    let VisitorOut::Ack { conversation, .. } = v.say_acked("anyone there?").await.unwrap() else {
        panic!("not acked")
    };
    alice
        .conversation_where(|i| i.id == conversation && i.state == ConversationState::Active)
        .await;

    v.send_json(&VisitorIn::Typing {
        typing: true,
        draft: Some("my parcel".into()),
    })
    .await
    .unwrap();
    let got = alice
        .until("the visitor's typing from the other node", |u| match u {
            Update::Typing {
                conversation: c,
                typing,
                draft,
                ..
            } if *c == conversation => Some((*typing, draft.clone())),
            _ => None,
        })
        .await;
    assert_eq!(got, (true, Some("my parcel".into())));

    alice.handle.typing(conversation, true).unwrap();
    let m = v
        .wait_for(LIVENESS, |m| matches!(m, VisitorOut::Typing { .. }))
        .await
        .unwrap();
    assert_eq!(
        m,
        VisitorOut::Typing {
            typing: true,
            name: Some("Alice".into())
        }
    );
}
