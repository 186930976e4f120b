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

use holdfast_client::Update;
use holdfast_protocol::agent::Presence;
use holdfast_protocol::visitor::{PageInfo, VisitorIn};
use holdfast_tests::cluster::{Cluster, LIVENESS, agents_online};
use holdfast_tests::core_agent::CoreAgent;
use holdfast_tests::visitor::{WsVisitor, hello};

async fn team_id(a: &mut CoreAgent, name: &str) -> u64 {
    a.until("the team", |u| match u {
        Update::Team(list) => list.iter().find(|m| m.name == name).map(|m| m.agent),
        _ => None,
    })
    .await
}

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

/// Alice on two devices, her desktop on node 1 and a second device on
/// node 2. On one node the hub keeps one presence per agent, whichever
/// device set it last, so "away" set on either device is what every device
/// and every teammate sees. Node 2 used to keep showing her online: it
/// preferred its own device's "online" over the other node's "away".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_set_on_one_node_shows_on_every_node_an_agent_is_connected_to() {
    holdfast_tests::init_logs();
    let c = Cluster::start_async(2, 5).await;
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut desktop = c.agent(0, &d1, "alice");
    desktop.live().await;
    let alice = team_id(&mut desktop, "Alice").await;
    let mut phone = c.agent(1, &d2, "alice");
    phone.live().await;
    let mut bob = c.agent(1, &d3, "bob");
    bob.live().await;
    bob.member_where(alice, |m| m.presence == Presence::Online)
        .await;

    let id = desktop.handle.set_presence(Presence::Away).await.unwrap();
    desktop.outcome(id).await.unwrap();
    desktop
        .member_where(alice, |m| m.presence == Presence::Away)
        .await;
    bob.member_where(alice, |m| m.presence == Presence::Away)
        .await;
    phone
        .member_where(alice, |m| m.presence == Presence::Away)
        .await;
    // Node 2 decides with it too: a visitor there finds nobody online.
    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    let id = bob.handle.set_presence(Presence::Away).await.unwrap();
    bob.outcome(id).await.unwrap();
    v.wait_for(LIVENESS, |m| {
        matches!(
            m,
            holdfast_protocol::visitor::VisitorOut::Agents { online: false, .. }
        )
    })
    .await
    .expect("node 2 still says an agent is online");

    // Back online from the other device: the desktop and bob follow.
    let id = phone.handle.set_presence(Presence::Online).await.unwrap();
    phone.outcome(id).await.unwrap();
    desktop
        .member_where(alice, |m| m.presence == Presence::Online)
        .await;
    bob.member_where(alice, |m| m.presence == Presence::Online)
        .await;
    agents_online(&mut v).await;

    // A third device joining on node 2 takes her presence as it is, as a
    // second device does on one node: it does not reset her to online.
    let id = desktop.handle.set_presence(Presence::Away).await.unwrap();
    desktop.outcome(id).await.unwrap();
    phone
        .member_where(alice, |m| m.presence == Presence::Away)
        .await;
    phone.shutdown().await;
    let d4 = tempfile::tempdir().unwrap();
    let mut tablet = c.agent(1, &d4, "alice");
    tablet.live().await;
    let m = tablet.member_where(alice, |_| true).await;
    assert_eq!(
        m.presence,
        Presence::Away,
        "a new device reset her presence"
    );
    bob.member_where(alice, |m| m.presence == Presence::Away)
        .await;
    tablet.shutdown().await;
    bob.shutdown().await;
    desktop.shutdown().await;
}

/// A visitor browsing on node 2 before an agent logs in on node 3, a node
/// that has just started, is in the visitor list the agent gets at login,
/// on its current page. Node 3 used to hear of the visitor only at node 2's
/// next periodic announcement, up to 4 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_just_started_lists_the_visitors_already_on_other_nodes() {
    holdfast_tests::init_logs();
    let mut c = Cluster::start_async(2, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut bob = c.agent(0, &dir, "bob");
    bob.live().await;
    let mut v = WsVisitor::connect(c.nodes[1].http, "acme").await.unwrap();
    let page = "https://shop.example/pricing";
    v.send_json(&VisitorIn::Page(PageInfo {
        url: page.into(),
        title: "Pricing".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    // Node 2 has told the others (bob's node heard it)...
    bob.visitor_where(|i| i.id == v.visitor && i.trail.last().is_some_and(|p| p.url == page))
        .await;
    // ...but a node started now has heard nothing of it on the bus, and
    // presence's PostgreSQL copy, which it reads at start, may not have it
    // yet (it is written every half second): the node asks the others to
    // announce themselves as soon as its bus is up.
    tokio::task::block_in_place(|| c.add_node("node3"));
    let mut alice = c.agent(2, &dir, "alice");
    let list = alice
        .until("the visitor list at login", |u| match u {
            Update::Visitors(list) => Some(list.clone()),
            _ => None,
        })
        .await;
    let listed = list.iter().find(|i| i.id == v.visitor);
    assert!(
        listed.is_some_and(|i| i.trail.last().is_some_and(|p| p.url == page)),
        "the visitor on node 2 is not in the login list of node 3 on its page: {list:#?}"
    );
    alice.shutdown().await;
    bob.shutdown().await;
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
