//! Presence across nodes (issue 15, "any node for anyone"): what an agent
//! sees of a teammate or a visitor must not depend on which node either of
//! them is connected to, nor on when that node started or whether Redis
//! was down for a while.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::time::{Duration, Instant};

use holdfast_protocol::visitor::VisitorIn;
use holdfast_tests::cluster::{Cluster, LIVENESS, agents_online};
use holdfast_tests::visitor::{WsVisitor, hello};

async fn bus_down_everywhere(c: &Cluster) {
    for node in 0..c.nodes.len() {
        let t = Instant::now();
        while c.metric(node, "holdfast_bus_up").await != Some(0.0) {
            assert!(
                t.elapsed() < LIVENESS,
                "node {node} never saw the bus go down"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An identify made through node 2 (the visitor's second tab) while Redis
/// is down: node 1, where the visitor's first tab is and whose copy of the
/// visitor its agents see, shows the new name once the bus is back. It
/// used to read again only the open conversation on a gap, never the
/// identity, so alice kept the old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identify_made_on_another_node_during_a_redis_outage_shows_once_the_bus_is_back() {
    holdfast_tests::init_logs();
    let mut c = Cluster::start_async(2, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = c.agent(0, &dir, "alice");
    alice.live().await;
    let mut first = WsVisitor::connect(c.nodes[0].http, "acme").await.unwrap();
    agents_online(&mut first).await;
    alice.visitor_where(|i| i.id == first.visitor).await;

    c.redis.kill9();
    bus_down_everywhere(&c).await;
    let mut second = WsVisitor::connect_with(
        c.nodes[1].http,
        hello(
            "acme",
            Some(first.token.clone()),
            None,
            "https://shop.example/account",
        ),
    )
    .await
    .unwrap();
    assert_eq!(second.visitor, first.visitor);
    second
        .send_json(&VisitorIn::Identify {
            id: "user-17".into(),
            name: Some("Ann Example".into()),
            email: Some("ann@example.com".into()),
            hash: None,
            attrs: [("plan".to_string(), serde_json::json!("pro"))]
                .into_iter()
                .collect(),
        })
        .await
        .unwrap();
    // Committed before the bus comes back: a WebSocket message has no ack,
    // so wait for the store to have it (read through the same node).
    let t = Instant::now();
    loop {
        let sql = format!(
            "SELECT count(*) FROM visitors WHERE id = '{}' AND name = 'Ann Example'",
            first.visitor
        );
        let out = tokio::task::block_in_place(|| c.pg.psql_in("holdfast", &sql));
        if out.trim() == "1" {
            break;
        }
        assert!(t.elapsed() < LIVENESS, "the identify was never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = Instant::now();
    tokio::task::block_in_place(|| c.redis.restart());
    let seen = alice
        .visitor_where(|i| i.id == first.visitor && i.name.as_deref() == Some("Ann Example"))
        .await;
    assert_eq!(seen.email.as_deref(), Some("ann@example.com"));
    assert_eq!(seen.attrs, vec![("plan".to_string(), "pro".to_string())]);
    println!(
        "identified on node 2 during the outage, the name shown on node 1 {:?} after Redis was started again",
        back.elapsed()
    );
    drop(second);
    alice.shutdown().await;
}
