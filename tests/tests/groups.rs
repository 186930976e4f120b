//! Site groups (departments, issue 17; PROTOCOL.md 10.23) end to end, with
//! real agent client cores and WebSocket and long-poll visitors, on both
//! stores: routing per group (a billing chat goes to billing's agent and
//! never to sales', waits when billing is full, is refused to an agent
//! outside it), transfer to a group, queue positions per group under
//! arrivals and departures, the groups list live to agents, a removed
//! group's chats back in the site-wide queue, and a group's own business
//! hours at the boundary minute in a time zone that is not the server's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::{AgentId, ConversationInfo, ConversationState, Presence, Role};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::notice::Notice;
use holdfast_protocol::visitor::{
    ConversationView, VisitorConvState, VisitorEvent, VisitorIn, VisitorOut,
};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, PASSWORD, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello_in_group, new_id};

const WAIT: Duration = Duration::from_secs(10);

/// Adds `bea` (one chat at a time) and `sue` (a supervisor), the groups
/// billing (bea) and sales (bob); returns bea's and bob's ids.
async fn departments(srv: &TestServer) -> (AgentId, AgentId) {
    srv.admin(|db| {
        use holdfast_server::{admin, groups};
        let bea = admin::add_agent(db, "acme", "bea", "Bea", PASSWORD, 1, Role::Agent).unwrap();
        admin::add_agent(db, "acme", "sue", "Sue", PASSWORD, 5, Role::Supervisor).unwrap();
        groups::add(db, "acme", "billing", "Billing & refunds").unwrap();
        groups::add(db, "acme", "Sales", "Sales").unwrap();
        groups::members(db, "acme", "billing", &["bea".into()], &[]).unwrap();
        groups::members(db, "acme", "sales", &["bob".into()], &[]).unwrap();
        let bob = holdfast_server::store::reads::agent_by_username(db, "bob")
            .unwrap()
            .unwrap();
        (bea.id, bob.id)
    })
    .await
}

async fn ws_in(srv: &TestServer, group: &str, url: &str) -> WsVisitor {
    WsVisitor::connect_with(srv.http(), hello_in_group("acme", group, url))
        .await
        .unwrap()
}

async fn lp_in(srv: &TestServer, group: &str, url: &str) -> (LpVisitor, VisitorOut) {
    LpVisitor::connect_with(srv.http(), hello_in_group("acme", group, url))
        .await
        .unwrap()
}

fn welcome_group(w: &VisitorOut) -> Option<String> {
    match w {
        VisitorOut::Welcome { group, .. } => group.clone(),
        other => panic!("not a welcome: {other:?}"),
    }
}

async fn ws_says(v: &mut WsVisitor, text: &str) -> u64 {
    match v.say_acked(text).await.unwrap() {
        VisitorOut::Ack { conversation, .. } => conversation,
        other => panic!("not acked: {other:?}"),
    }
}

async fn lp_says(v: &LpVisitor, text: &str) -> u64 {
    match v.say(text).await.unwrap() {
        VisitorOut::Ack { conversation, .. } => conversation,
        other => panic!("not acked: {other:?}"),
    }
}

async fn conv(
    a: &mut CoreAgent,
    id: u64,
    pred: impl Fn(&ConversationInfo) -> bool,
) -> ConversationInfo {
    a.conversation_where(|c| c.id == id && pred(c)).await
}

/// Billing chats go to Bea, never to Bob, even while Bob is free; a
/// second one waits for Bea (who serves one at a time), and Bob cannot
/// take it, though a supervisor can; a sales chat goes to Bob; a chat for
/// a group the site does not have goes to the whole site. Moving Bea's
/// chat to sales gives it to Bob, with the line the visitor sees, and lets
/// the waiting billing chat in to Bea.
async fn chats_go_to_their_groups_agents(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let (bea_id, bob_id) = departments(&srv).await;
    let mut bea = live(&srv, "bea", &dir).await;
    let mut bob = live(&srv, "bob", &dir).await;

    let mut v1 = ws_in(&srv, "billing", "https://shop.example/invoice").await;
    assert_eq!(welcome_group(&v1.welcome).as_deref(), Some("billing"));
    let c1 = ws_says(&mut v1, "my invoice is wrong").await;
    let info = conv(&mut bea, c1, |c| c.state == ConversationState::Active).await;
    assert_eq!(info.assigned, Some(bea_id));
    assert_eq!(info.group.as_deref(), Some("billing"));

    // Bea is full: the next billing chat waits, though Bob is free.
    let (v2, w2) = lp_in(&srv, "BILLING", "https://shop.example/refund").await;
    assert_eq!(
        welcome_group(&w2).as_deref(),
        Some("billing"),
        "keys ignore case"
    );
    let c2 = lp_says(&v2, "refund please").await;
    let waiting = conv(&mut bob, c2, |c| c.state == ConversationState::Queued).await;
    assert_eq!(waiting.group.as_deref(), Some("billing"));
    assert!(
        !bob.handle.offered_to_me(&waiting, false),
        "not offered to Bob"
    );
    assert!(
        bob.handle.offered_to_me(&waiting, true),
        "a supervisor's view"
    );
    let groups = bob.handle.groups();
    assert!(
        groups.iter().any(|g| g.key == "sales" && g.member)
            && groups.iter().any(|g| g.key == "billing" && !g.member),
        "{groups:?}"
    );
    let id = bob.handle.accept(c2).await.unwrap();
    let (code, message) = bob.outcome(id).await.unwrap_err();
    assert_eq!(code, ErrorCode::Forbidden, "{message}");

    // A sales chat goes to Bob over long-poll.
    let (v3, _) = lp_in(&srv, "sales", "https://shop.example/pricing").await;
    let c3 = lp_says(&v3, "a quote for 40 seats?").await;
    let info = conv(&mut bob, c3, |c| c.state == ConversationState::Active).await;
    assert_eq!(info.assigned, Some(bob_id));

    // A group the site does not have: the whole site's, never refused.
    let mut v4 = ws_in(&srv, "no-such-team", "https://shop.example/").await;
    assert_eq!(welcome_group(&v4.welcome), None);
    let c4 = ws_says(&mut v4, "hello?").await;
    let info = conv(&mut bob, c4, |c| c.state == ConversationState::Active).await;
    assert_eq!(info.group, None);
    assert_eq!(info.assigned, Some(bob_id), "Bea is full; Bob takes it");
    let id = bob.handle.close(c4).await.unwrap();
    bob.outcome(id).await.unwrap();

    // Bea moves her chat to sales: Bob (one chat of two now) takes it;
    // Bea takes the billing chat that waited.
    let id = bea
        .handle
        .transfer_to_group(c1, Some(bea_id), "sales", Some("needs a discount".into()))
        .await
        .unwrap();
    bea.outcome(id).await.unwrap();
    let moved = conv(&mut bob, c1, |c| c.assigned == Some(bob_id)).await;
    assert_eq!(moved.group.as_deref(), Some("sales"));
    conv(&mut bea, c2, |c| c.assigned == Some(bea_id)).await;
    v1.wait_for(WAIT, |m| {
        matches!(m, VisitorOut::Event { event: VisitorEvent::Message(m), .. }
            if matches!(&m.notice, Some(Notice::Transferred { to, by, .. }) if to == "Sales" && by == "Bea"))
    })
    .await
    .unwrap();

    // A supervisor moves a waiting billing chat to sales, where Bob (two
    // chats of two) has no room: it waits there, for sales now.
    let mut v5 = ws_in(&srv, "billing", "https://shop.example/late").await;
    let c5 = ws_says(&mut v5, "late billing question").await;
    conv(&mut bob, c5, |c| c.state == ConversationState::Queued).await;
    let sue_dir = tempfile::tempdir().unwrap();
    let mut sue = live(&srv, "sue", &sue_dir).await;
    let id = sue
        .handle
        .transfer_to_group(c5, None, "sales", None)
        .await
        .unwrap();
    sue.outcome(id).await.unwrap();
    let moved = conv(&mut bob, c5, |c| c.group.as_deref() == Some("sales")).await;
    assert_eq!(moved.state, ConversationState::Queued);
    assert!(
        bob.handle.offered_to_me(&moved, false),
        "sales' now: Bob's to take"
    );
    sue.shutdown().await;

    // Moving it to a group the site does not have is refused.
    let id = bob
        .handle
        .transfer_to_group(c1, Some(bob_id), "nope", None)
        .await
        .unwrap();
    assert_eq!(bob.outcome(id).await.unwrap_err().0, ErrorCode::NotFound);

    bea.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(chats_go_to_their_groups_agents);

fn place(m: &VisitorOut) -> Option<u32> {
    match m {
        VisitorOut::Queue { position, .. } => Some(*position),
        _ => None,
    }
}

async fn ws_place(v: &mut WsVisitor) -> u32 {
    place(&v.wait_for(WAIT, |m| place(m).is_some()).await.unwrap()).unwrap()
}

async fn lp_place(v: &mut LpVisitor) -> u32 {
    let end = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < end {
        if let Some(p) = v.poll().await.unwrap().iter().find_map(place) {
            return p;
        }
    }
    panic!("no queue position over long-poll")
}

/// With no one signed in everything waits, and each visitor's place counts
/// only its own group's chats ahead of it: billing, sales and the whole
/// site's queue move on their own as visitors arrive and give up, and as
/// Bea (billing only) starts taking chats.
async fn queue_positions_count_per_group(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    departments(&srv).await;

    let mut b1 = ws_in(&srv, "billing", "https://shop.example/b1").await;
    ws_says(&mut b1, "b1").await;
    let (mut s1, _) = lp_in(&srv, "sales", "https://shop.example/s1").await;
    lp_says(&s1, "s1").await;
    let (mut b2, _) = lp_in(&srv, "billing", "https://shop.example/b2").await;
    lp_says(&b2, "b2").await;
    let mut s2 = ws_in(&srv, "sales", "https://shop.example/s2").await;
    ws_says(&mut s2, "s2").await;
    let mut n1 = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    ws_says(&mut n1, "n1").await;
    assert_eq!(ws_place(&mut b1).await, 1);
    assert_eq!(
        lp_place(&mut s1).await,
        1,
        "sales waits behind no billing chat"
    );
    assert_eq!(lp_place(&mut b2).await, 2);
    assert_eq!(ws_place(&mut s2).await, 2);
    assert_eq!(ws_place(&mut n1).await, 1, "the site's own queue");

    // b1 gives up: b2 moves up; sales does not move.
    b1.send_json(&VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    assert_eq!(lp_place(&mut b2).await, 1);
    // b3 arrives behind b2.
    let mut b3 = ws_in(&srv, "billing", "https://shop.example/b3").await;
    ws_says(&mut b3, "b3").await;
    assert_eq!(ws_place(&mut b3).await, 2);

    // Bea signs in and takes billing's first (b2): b3 moves up; Bea is
    // not in sales, so s1 and s2 keep their places.
    let bea = live(&srv, "bea", &dir).await;
    let mut taken = false;
    let end = tokio::time::Instant::now() + WAIT;
    while !taken && tokio::time::Instant::now() < end {
        b2.poll().await.unwrap();
        taken = b2.events.iter().any(|(_, e)| {
            matches!(
                e,
                VisitorEvent::Conversation(ConversationView {
                    state: VisitorConvState::Active,
                    ..
                })
            )
        });
    }
    assert!(taken, "b2 was taken by Bea");
    assert_eq!(ws_place(&mut b3).await, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !s2.other.iter().filter_map(place).any(|p| p != 2),
        "s2 kept its place: {:?}",
        s2.other
    );
    assert!(
        !n1.other.iter().filter_map(place).any(|p| p != 1),
        "n1 kept its place: {:?}",
        n1.other
    );
    bea.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(queue_positions_count_per_group);

/// The groups list reaches agents at login and follows changes made
/// through the CLI while they are signed in; a site that offers a choice
/// lists its groups in the welcome of a widget that names none; removing
/// a group puts its waiting chat back in the site-wide queue, where an
/// agent outside the group then takes it.
async fn groups_live_to_agents_and_removal_strands_nothing(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, bob_id) = departments(&srv).await;
    let mut bob = live(&srv, "bob", &dir).await;
    // Sent at login, right after the connection is live.
    let mut watch = bob.handle.groups_watch();
    let list = tokio::time::timeout(WAIT, watch.wait_for(|l| !l.is_empty()))
        .await
        .expect("the groups came with the login")
        .unwrap()
        .clone();
    assert!(
        list.iter()
            .any(|g| g.key == "billing" && g.name == "Billing & refunds" && !g.member)
            && list.iter().any(|g| g.key == "sales" && g.member),
        "{list:?}"
    );

    // No choice offered yet; then on.
    let v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    assert!(matches!(
        &v.welcome,
        VisitorOut::Welcome { groups: None, .. }
    ));
    srv.admin(|db| holdfast_server::groups::set_choice(db, "acme", true).unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Welcome {
        groups: Some(list), ..
    } = &v.welcome
    else {
        panic!("no choice offered: {:?}", v.welcome)
    };
    let keys: Vec<(&str, bool)> = list.iter().map(|g| (g.key.as_str(), g.online)).collect();
    assert_eq!(
        keys,
        [("billing", false), ("sales", true)],
        "Bob is in sales only"
    );
    // A widget that names its group gets the list too (and shows none of
    // it); what it hears is about its own group.
    let v = ws_in(&srv, "sales", "https://shop.example/").await;
    assert!(
        matches!(&v.welcome, VisitorOut::Welcome { groups: Some(_), agents_online: true, group: Some(g), .. } if g == "sales"),
        "{:?}",
        v.welcome
    );

    // A billing chat waits (Bea is not here); Bob is added to billing
    // through the CLI: his list says so within a second or two, and the
    // waiting chat comes to him.
    let mut w = ws_in(&srv, "billing", "https://shop.example/").await;
    assert!(matches!(
        &w.welcome,
        VisitorOut::Welcome {
            agents_online: false,
            ..
        }
    ));
    let c = ws_says(&mut w, "anyone in billing?").await;
    conv(&mut bob, c, |c| c.state == ConversationState::Queued).await;
    srv.admin(|db| {
        holdfast_server::groups::members(db, "acme", "billing", &["bob".into()], &[]).unwrap()
    })
    .await;
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|l| l.iter().any(|g| g.key == "billing" && g.member)),
    )
    .await
    .expect("the new membership reached Bob")
    .unwrap();
    conv(&mut bob, c, |c| c.assigned == Some(bob_id)).await;
    // The waiting visitor hears someone of its group is there now.
    w.wait_for(WAIT, |m| {
        matches!(m, VisitorOut::Agents { online: true, .. })
    })
    .await
    .unwrap();

    // Bob takes billing out again and is at capacity (2 chats); a new
    // billing chat waits, then billing is removed: the chat goes back to
    // the whole site's queue, and Alice (in no group) takes it.
    srv.admin(|db| {
        holdfast_server::groups::members(db, "acme", "billing", &[], &["bob".into()]).unwrap()
    })
    .await;
    let mut x = ws_in(&srv, "sales", "https://shop.example/").await;
    ws_says(&mut x, "sales chat for Bob").await;
    let mut y = ws_in(&srv, "billing", "https://shop.example/").await;
    let cy = ws_says(&mut y, "stuck in billing?").await;
    conv(&mut bob, cy, |c| c.state == ConversationState::Queued).await;
    let mut alice = live(&srv, "alice", &dir).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = conv(&mut alice, cy, |_| true).await;
    assert_eq!(
        still.state,
        ConversationState::Queued,
        "not Alice's: {still:?}"
    );
    srv.admin(|db| holdfast_server::groups::remove(db, "acme", "billing").unwrap())
        .await;
    let back = conv(&mut alice, cy, |c| {
        c.group.is_none() && c.state == ConversationState::Active
    })
    .await;
    assert!(back.assigned.is_some());
    assert!(
        !alice.handle.groups().iter().any(|g| g.key == "billing"),
        "{:?}",
        alice.handle.groups()
    );
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(groups_live_to_agents_and_removal_strands_nothing);

/// Each group's state as a message about the groups says it.
fn choice_states(m: &VisitorOut) -> Option<Vec<(String, bool)>> {
    let list = match m {
        VisitorOut::Welcome { groups, .. } | VisitorOut::Agents { groups, .. } => {
            groups.as_ref()?
        }
        _ => return None,
    };
    Some(list.iter().map(|g| (g.key.clone(), g.online)).collect())
}

fn states(billing: bool, sales: bool) -> Vec<(String, bool)> {
    vec![("billing".into(), billing), ("sales".into(), sales)]
}

/// The choice of groups a visitor still has on screen follows the groups'
/// agents as they come and go, over WebSocket and long-poll alike: a
/// group shown "online" when its last agent left would lead the visitor
/// into a chat no one answers.
async fn a_choice_on_screen_follows_the_groups_agents(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let (bea_dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    departments(&srv).await;
    srv.admin(|db| holdfast_server::groups::set_choice(db, "acme", true).unwrap())
        .await;
    let bob = live(&srv, "bob", &bob_dir).await;
    tokio::time::timeout(WAIT, bob.handle.groups_watch().wait_for(|l| !l.is_empty()))
        .await
        .expect("the groups reached Bob")
        .unwrap();
    // The nodes read the groups once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let (mut lp, welcome) = LpVisitor::connect_with(
        srv.http(),
        holdfast_tests::visitor::hello("acme", None, None, "https://shop.example/lp"),
    )
    .await
    .unwrap();
    assert_eq!(choice_states(&ws.welcome), Some(states(false, true)));
    assert_eq!(choice_states(&welcome), Some(states(false, true)));

    // Bea (billing) comes online, then steps away: both visitors hear it.
    let bea = live(&srv, "bea", &bea_dir).await;
    for (billing, step) in [(true, None), (false, Some(Presence::Away))] {
        if let Some(p) = step {
            bea.handle.set_presence(p).await.unwrap();
        }
        let want = states(billing, true);
        ws.wait_for(WAIT, |m| choice_states(m).as_ref() == Some(&want))
            .await
            .unwrap_or_else(|e| panic!("WebSocket not told {want:?}: {e}"));
        let end = tokio::time::Instant::now() + WAIT;
        loop {
            let got = lp.poll().await.unwrap();
            if got.iter().any(|m| choice_states(m).as_ref() == Some(&want)) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "long-poll not told {want:?}: {got:?}"
            );
        }
    }
    bea.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_choice_on_screen_follows_the_groups_agents);

/// Asia/Shanghai is UTC+8 all year (no daylight saving): a zone that is
/// not the server's (UTC here), with arithmetic the test can do itself.
const SHANGHAI_MS: i64 = 8 * 3600 * 1000;

/// Billing has its own hours, closing at the next whole minute Shanghai
/// time; the site has none. At that minute billing's visitors are told no
/// one is there (over WebSocket, and a long-poll visitor at its welcome),
/// while a visitor of the whole site is not; Bea sees billing closed.
async fn a_groups_hours_close_it_at_the_boundary_minute(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    departments(&srv).await;
    let bea = live(&srv, "bea", &dir).await;
    let _bob = live(&srv, "bob", &dir).await;

    let now = holdfast_server::store::now_ms();
    let mut boundary = (now / 60_000 + 1) * 60_000;
    if boundary - now < 4_000 {
        boundary += 60_000;
    }
    let mut local_min = ((boundary + SHANGHAI_MS) / 60_000) % (24 * 60);
    if local_min == 0 {
        boundary += 60_000;
        local_min = 1;
    }
    let until = format!("{:02}:{:02}", local_min / 60, local_min % 60);
    let open = format!("daily 00:00-{until}");
    srv.admin(move |db| {
        holdfast_server::groups::set_hours(
            db,
            "acme",
            "billing",
            Some(("Asia/Shanghai", &open, "")),
        )
        .unwrap()
    })
    .await;
    let mut watch = bea.handle.groups_watch();
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|l| l.iter().any(|g| g.key == "billing" && g.open == Some(true))),
    )
    .await
    .expect("Bea sees billing open")
    .unwrap();

    let mut v = ws_in(&srv, "billing", "https://shop.example/").await;
    assert!(
        matches!(
            &v.welcome,
            VisitorOut::Welcome {
                agents_online: true,
                ..
            }
        ),
        "open before {until}: {:?}",
        v.welcome
    );
    let mut site = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let end = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(boundary - now).unwrap() + 5_000);
    let told = loop {
        v.send_json(&VisitorIn::Ping).await.unwrap();
        site.send_json(&VisitorIn::Ping).await.unwrap();
        match v
            .wait_for(Duration::from_secs(1), |m| {
                matches!(m, VisitorOut::Agents { online: false, .. })
            })
            .await
        {
            Ok(_) => break holdfast_server::store::now_ms(),
            Err(_) if tokio::time::Instant::now() < end => {}
            Err(e) => panic!("not told billing closed at {until}: {e}"),
        }
    };
    assert!(
        told >= boundary && told <= boundary + 2_500,
        "told {} ms after {until} Shanghai time",
        told - boundary
    );
    // A long-poll visitor of billing arriving now is told at once.
    let (_, w) = lp_in(&srv, "billing", "https://shop.example/closed").await;
    assert!(
        matches!(
            w,
            VisitorOut::Welcome {
                agents_online: false,
                ..
            }
        ),
        "{w:?}"
    );
    // The whole site's visitor still has someone to talk to.
    site.send_json(&VisitorIn::Ping).await.unwrap();
    site.wait_for(WAIT, |m| matches!(m, VisitorOut::Pong))
        .await
        .unwrap();
    assert!(
        !site
            .other
            .iter()
            .any(|m| matches!(m, VisitorOut::Agents { online: false, .. })),
        "{:?}",
        site.other
    );
    tokio::time::timeout(
        WAIT,
        watch.wait_for(|l| {
            l.iter()
                .any(|g| g.key == "billing" && g.open == Some(false))
        }),
    )
    .await
    .expect("Bea sees billing closed")
    .unwrap();
    bea.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_groups_hours_close_it_at_the_boundary_minute);

/// Two nodes on one PostgreSQL and Redis, groups made through the CLI:
/// a billing visitor on one node goes to Alice (billing) on the other,
/// never to Bob beside it; the next one waits for billing; Bob, added to
/// billing through the CLI, hears of it on his node and takes that chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_route_across_two_nodes() {
    holdfast_tests::init_logs();
    let c = holdfast_tests::cluster::Cluster::start_async(2, 1).await;
    let setup = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| holdfast_tests::cluster::cli(&c.url, setup.path(), args);
    cli(&["group", "add", "acme", "billing", "--name", "Billing"]);
    cli(&["group", "add", "acme", "sales", "--name", "Sales"]);
    cli(&["group", "members", "acme", "billing", "--add", "alice"]);
    let out = cli(&["group", "members", "acme", "sales", "--add", "bob"]);
    assert!(out.contains("members: bob"), "{out}");
    let listed = cli(&["group", "list", "acme"]);
    assert!(
        listed.contains("billing\tBilling\tmembers: alice"),
        "{listed}"
    );
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut alice = c.agent(0, &dirs[0], "alice");
    let mut bob = c.agent(1, &dirs[1], "bob");
    alice.live().await;
    bob.live().await;

    let mut v = WsVisitor::connect_with(
        c.nodes[1].http,
        hello_in_group("acme", "billing", "https://shop.example/"),
    )
    .await
    .unwrap();
    holdfast_tests::cluster::agents_online(&mut v).await;
    let c1 = ws_says(&mut v, "billing on node 2").await;
    let info = conv(&mut alice, c1, |c| c.state == ConversationState::Active).await;
    assert_eq!(info.assigned_name.as_deref(), Some("Alice"));

    // Alice is full (capacity 1): the next billing chat waits, Bob is free.
    let (w, _) = LpVisitor::connect_with(
        c.nodes[1].http,
        hello_in_group("acme", "billing", "https://shop.example/lp"),
    )
    .await
    .unwrap();
    let c2 = lp_says(&w, "billing again").await;
    conv(&mut bob, c2, |c| c.state == ConversationState::Queued).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        conv(&mut bob, c2, |_| true).await.state,
        ConversationState::Queued
    );

    cli(&["group", "members", "acme", "billing", "--add", "bob"]);
    let mut watch = bob.handle.groups_watch();
    tokio::time::timeout(
        holdfast_tests::cluster::LIVENESS,
        watch.wait_for(|l| l.iter().any(|g| g.key == "billing" && g.member)),
    )
    .await
    .expect("Bob's node told him he is in billing")
    .unwrap();
    let taken = conv(&mut bob, c2, |c| c.state == ConversationState::Active).await;
    assert_eq!(taken.assigned_name.as_deref(), Some("Bob"));
    alice.shutdown().await;
    bob.shutdown().await;
}
