//! An agent that falls behind on the live lists (PROTOCOL.md 6, "Live
//! state"): while it reads nothing, the server drops the presence updates
//! its queue has no room for and marks the connection stale instead of
//! cutting it. Whatever changed meanwhile (visitors coming and going, a new
//! group with the agent in it, the site's tags, an invitation that fired)
//! must be on its screen once it reads again: the server resends every
//! list as it is now. Before this test only the hub's stale mark had a
//! unit test; nothing checked what the agent ends up with.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use holdfast_protocol::agent::{GroupInfo, InvitationSignal, LiveEvent, ServerMsg};
use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use holdfast_server::invite::admin::RuleSpec;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, TestServer, metric};
use holdfast_tests::visitor::{WsVisitor, hello, new_id};

const RESYNCS: &str = "holdfast_live_resyncs_total";

/// What an agent knows of the site's live state, built only from what
/// the server sent, in order, as the client core applies it.
#[derive(Default)]
struct Seen {
    visitors: HashSet<String>,
    groups: Vec<GroupInfo>,
    tags: Vec<String>,
    invitations: HashMap<String, InvitationSignal>,
}

impl Seen {
    fn apply(&mut self, m: &ServerMsg) {
        let ServerMsg::Live(ev) = m else { return };
        match ev {
            LiveEvent::Visitors(list) => {
                self.visitors = list.iter().map(|v| v.id.clone()).collect();
            }
            LiveEvent::Visitor(_) | LiveEvent::VisitorUpdates(_) => {
                self.visitors
                    .extend(ev.upserts().iter().map(|v| v.id.clone()));
            }
            LiveEvent::VisitorGone { visitor } => {
                self.visitors.remove(visitor);
                self.invitations.remove(visitor);
            }
            LiveEvent::Groups(g) => self.groups = g.clone(),
            LiveEvent::SiteTags(t) => self.tags = t.clone(),
            LiveEvent::Invitation(i) => {
                self.invitations.insert(i.visitor.clone(), i.clone());
            }
            _ => {}
        }
    }
}

/// Read everything the server sends until it has been quiet (heartbeats
/// aside) for `quiet`, or `limit` passed.
async fn drain(a: &mut RawAgent, seen: &mut Seen, quiet: Duration, limit: Duration) {
    let end = tokio::time::Instant::now() + limit;
    let mut last = tokio::time::Instant::now();
    while tokio::time::Instant::now() < end && last.elapsed() < quiet {
        match a.recv(Duration::from_millis(100)).await {
            Ok(Some(ServerMsg::Heartbeat)) | Err(_) => {}
            Ok(Some(m)) => {
                seen.apply(&m);
                last = tokio::time::Instant::now();
            }
            Ok(None) => panic!("the server closed the connection of an agent that fell behind"),
        }
    }
}

/// A visitor whose updates are heavy (a long address), so that a few of
/// them fill the narrow socket and the small queue.
async fn heavy_visitor(srv: &TestServer, i: usize) -> WsVisitor {
    let url = format!("https://shop.example/catalog/{i}/{}", "x".repeat(1800));
    let mut h = hello("acme", None, None, &url);
    if let VisitorIn::Hello { page: Some(p), .. } = &mut h {
        p.title = format!("Catalog page {i}");
    }
    WsVisitor::connect_with(srv.http(), h).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_fell_behind_gets_every_list_as_it_is_now() {
    let srv = TestServer::start_with(|c| {
        // A few items of room, and a queue taken from for 200 ms counts as
        // stalled: the test needs the stale path, not megabytes of churn.
        c.hub.agent_queue = 8;
        c.hub.queue_stall = Duration::from_millis(200);
        // Each heavy visitor in a message of its own (they are bigger
        // than this), not a burst's worth in one: so that a burst of 20
        // overflows the queue of 8.
        c.hub.list_budget = 1024;
        c.visitor.max_ws_per_ip = 10_000;
    })
    .await;
    let metrics = srv.running().admin_addr.expect("an admin listener");
    srv.admin(|db| {
        holdfast_server::admin::set_site_tags(db, "acme", &["billing".into()]).unwrap();
        holdfast_server::invite::admin::add_rule(
            db,
            "acme",
            &RuleSpec {
                name: "offer".into(),
                text: "A discount for you?".into(),
                url: Some("*/offer*".into()),
                page_secs: Some(1),
                ..RuleSpec::default()
            },
        )
        .unwrap();
    })
    .await;

    // One visitor who will leave while Alice is not looking.
    let mut leaver = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    leaver.send_json(&VisitorIn::Ping).await.unwrap();

    let mut alice = RawAgent::handshake_narrow(srv.agent_addr())
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .unwrap();
    alice
        .send(&RawAgent::login_msg("alice", PASSWORD, new_id(), None))
        .await
        .unwrap();
    let ok = alice.recv(Duration::from_secs(10)).await.unwrap();
    assert!(matches!(ok, Some(ServerMsg::LoginOk(_))), "{ok:?}");
    let mut seen = Seen::default();
    drain(
        &mut alice,
        &mut seen,
        Duration::from_millis(700),
        Duration::from_secs(10),
    )
    .await;
    let leaver_id = leaver.visitor.clone();
    assert!(seen.visitors.contains(&leaver_id), "the login's list");
    assert_eq!(seen.tags, ["billing"]);
    assert!(!seen.groups.iter().any(|g| g.key == "vip"));

    // Alice stops reading. Heavy visitors arrive in bursts; while her
    // connection still drains into the kernel's buffers, each burst
    // overflows the small queue and the server counts a resync. Once the
    // buffers are full, her gateway is stuck writing, the mark stays set
    // and the count stands still: only then are the changes below sure to
    // be dropped rather than queued.
    let mut crowd = Vec::new();
    let t0 = std::time::Instant::now();
    let mut last = metric(metrics, RESYNCS).await.unwrap_or(0.0);
    let first = last;
    let mut still = 0;
    while still < 3 || last == first {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "{} visitors arrived and Alice's connection never stuck (resyncs {first} -> {last})",
            crowd.len()
        );
        for _ in 0..20 {
            crowd.push(heavy_visitor(&srv, crowd.len()).await);
        }
        // Two presence rounds, so the burst has been pushed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let now = metric(metrics, RESYNCS).await.unwrap_or(0.0);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }

    // While she is behind: one visitor leaves, a group with her in it
    // appears, the tags change, and an invitation fires. Each of these is
    // pushed to her queue, which is full, so each is dropped.
    leaver.close().await;
    srv.admin(|db| {
        holdfast_server::groups::add(db, "acme", "vip", "VIP desk").unwrap();
        holdfast_server::groups::members(db, "acme", "vip", &["alice".into()], &[]).unwrap();
        holdfast_server::admin::set_site_tags(db, "acme", &["billing".into(), "late".into()])
            .unwrap();
    })
    .await;
    let mut invited = WsVisitor::connect_with(
        srv.http(),
        hello("acme", None, None, "https://shop.example/offer"),
    )
    .await
    .unwrap();
    invited
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, VisitorOut::Invite { .. })
        })
        .await
        .expect("the rule invites the visitor on /offer");
    let invited_id = invited.visitor.clone();
    // The nodes re-read groups and lists every second: give both a turn,
    // and the leaver's grace, so every change has been pushed (and dropped).
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // She reads again: whatever was dropped, what she ends with is the
    // site as it is now.
    drain(
        &mut alice,
        &mut seen,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .await;
    let expected: HashSet<String> = crowd
        .iter()
        .map(|v| v.visitor.clone())
        .chain([invited_id.clone()])
        .collect();
    assert!(
        !seen.visitors.contains(&leaver_id),
        "the visitor who left is still listed"
    );
    let missing: Vec<_> = expected.difference(&seen.visitors).collect();
    assert!(
        missing.is_empty(),
        "{} of {} visitors missing after the resync",
        missing.len(),
        expected.len()
    );
    assert!(
        seen.groups.iter().any(|g| g.key == "vip" && g.member),
        "the new group is not on her screen: {:?}",
        seen.groups
    );
    assert_eq!(seen.tags, ["billing", "late"], "the site's tags now");
    let inv = seen
        .invitations
        .get(&invited_id)
        .expect("the invitation that fired while she was behind");
    assert_eq!(inv.rule, "offer");

    // And nothing else was lost: she can still take a chat.
    let v = crowd.first_mut().unwrap();
    v.say_acked("still there?").await.unwrap();
    let got = alice
        .recv_until(Duration::from_secs(10), |m| {
            matches!(m, ServerMsg::Event { .. })
        })
        .await
        .unwrap();
    assert!(matches!(got, ServerMsg::Event { .. }));
}
