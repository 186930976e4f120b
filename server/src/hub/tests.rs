//! The hub's unit tests: slow consumers, shutdown, and applying committed
//! effects. Kept apart so hub.rs stays readable.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::effect::Effect;
use holdfast_protocol::agent::{Author, ChatMessage, ServerMsg};

fn visitor(i: usize) -> VisitorInfo {
    VisitorInfo {
        id: format!("v{i}"),
        site: 1,
        name: None,
        email: None,
        attrs: Vec::new(),
        external_id: None,
        verified: false,
        online: true,
        user_agent: None,
        referrer: None,
        visit_started_ms: 0,
        first_seen_ms: 0,
        trail: Vec::new(),
        conversation: None,
        lang: None,
    }
}

fn page(url: &str, at_ms: i64) -> holdfast_protocol::agent::PageView {
    holdfast_protocol::agent::PageView {
        url: url.into(),
        title: String::new(),
        referrer: None,
        at_ms,
    }
}

fn event(i: u64) -> Effect {
    Effect::AgentEvent {
        agent: 1,
        seq: i,
        event: Arc::new(Event::Message(ChatMessage {
            conversation: 1,
            message: i,
            client_id: holdfast_protocol::ids::MsgId([0; 16]),
            author: Author::System,
            body: String::new(),
            at_ms: 0,
            attachment: None,
        })),
    }
}

fn member(agent: AgentId, name: &str) -> TeamMember {
    TeamMember {
        agent,
        name: name.into(),
        role: holdfast_protocol::agent::Role::Agent,
        presence: Presence::Offline,
        active: 0,
        capacity: 5,
        disabled: false,
    }
}

fn hub() -> (Arc<Hub>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let cfg = HubConfig {
        agent_queue: 3,
        ..HubConfig::default()
    };
    let h = Hub::new(cfg, metrics.clone());
    (h, metrics)
}

/// `n` visitors arriving one presence interval apart: an update each, as
/// one flush carries all the changes of its interval in one message.
fn arrive_apart(h: &Hub, n: usize) -> Vec<Registration<VisitorPush>> {
    (0..n)
        .map(|i| {
            let r = h.register_visitor(visitor(i));
            h.flush_presence();
            r
        })
        .collect()
}

#[tokio::test]
async fn a_presence_flood_marks_the_agent_stale_instead_of_cutting_it() {
    let (h, metrics) = hub();
    let mut reg = h.register_agent(1, member(1, "Alice"));
    // The agent does not read; 20 visitors arrive in 20 intervals (20
    // presence changes into a queue of 3).
    let _visitors = arrive_apart(&h, 20);
    assert!(!reg.rx.is_kicked(), "cut for presence alone");
    assert!(reg.rx.take_stale());
    assert_eq!(metrics.live_resyncs.get(), 1);
    assert_eq!(metrics.slow_consumer_cuts.get(), 0);
    // What it missed is in the current list, which the gateway resends.
    assert_eq!(h.visitors_of_site(1).len(), 20);
    // Durable events still cut a full queue: they must be resumed from
    // the log, never silently dropped.
    while reg.rx.try_recv().is_some() {}
    h.publish((1..=4).map(event).collect());
    assert!(reg.rx.is_kicked());
    assert_eq!(metrics.slow_consumer_cuts.get(), 1);
}

#[tokio::test]
async fn a_chat_message_makes_room_among_presence_changes_instead_of_cutting() {
    let (h, metrics) = hub();
    let mut reg = h.register_agent(1, member(1, "Alice"));
    let _visitors = arrive_apart(&h, 20);
    assert!(reg.rx.take_stale(), "the flood filled the queue of 3");
    // A message arrives while the queue is full of presence changes: the
    // changes go (the whole list will follow), the message stays.
    h.publish(vec![event(1)]);
    assert!(!reg.rx.is_kicked(), "cut for a full queue of presence");
    assert_eq!(metrics.slow_consumer_cuts.get(), 0);
    assert!(reg.rx.take_stale(), "marked to get the list again");
    let got: Vec<_> = std::iter::from_fn(|| reg.rx.try_recv()).collect();
    assert!(
        matches!(&got[..], [AgentPush::Event(1, _)]),
        "{} items",
        got.len()
    );
}

#[tokio::test]
async fn shutdown_kicks_every_connection_and_any_that_registers_later() {
    let (h, _metrics) = hub();
    let agent = h.register_agent(1, member(1, "Alice"));
    let before = h.register_visitor(visitor(1));
    assert!(!agent.rx.is_kicked() && !before.rx.is_kicked());
    h.kick_all();
    assert!(agent.rx.is_kicked());
    assert!(before.rx.is_kicked());
    // A hello that was in flight when shutdown began.
    let mut late = h.register_visitor(visitor(2));
    let got = tokio::time::timeout(Duration::from_secs(5), late.rx.recv()).await;
    assert!(matches!(got, Ok(crate::pushq::Recv::Kicked)), "{got:?}");
    let late_agent = h.register_agent(1, member(2, "Bob"));
    assert!(late_agent.rx.is_kicked());
}

#[tokio::test]
async fn committed_effects_carry_presence_and_visitor_data() {
    let (h, _metrics) = hub();
    let _alice = h.register_agent(1, member(1, "Alice"));
    let _tab = h.register_visitor(visitor(1));
    h.publish(vec![
        Effect::Presence {
            agent: 1,
            presence: Presence::Away,
        },
        Effect::VisitorChanged {
            visitor: "v1".into(),
            change: VisitorChange::Identity {
                name: Some("Ann".into()),
                email: None,
                attrs: vec![("plan".into(), "pro".into())],
                external_id: Some("u-7".into()),
                verified: true,
            },
        },
        Effect::VisitorChanged {
            visitor: "v1".into(),
            change: VisitorChange::Conversation(Some(7)),
        },
    ]);
    assert_eq!(h.presence(1), Presence::Away);
    assert!(h.available_agents(1).is_empty());
    // Applied from the effect itself: there is no database behind this
    // hub to read back from.
    let v = h.visitor_live("v1").unwrap();
    assert_eq!(v.name.as_deref(), Some("Ann"));
    assert_eq!(v.external_id.as_deref(), Some("u-7"));
    assert!(v.verified);
    assert_eq!(v.attrs, vec![("plan".to_string(), "pro".to_string())]);
    assert_eq!(v.conversation, Some(7));
}

/// What a connection's queue holds now.
fn drain<T>(rx: &mut crate::pushq::Receiver<T>) -> Vec<T> {
    std::iter::from_fn(|| rx.try_recv()).collect()
}

#[tokio::test]
async fn a_committed_batch_wakes_the_other_nodes_once_per_recipient_at_its_highest_seq() {
    use crate::bus::{Bus as _, BusMsg, LocalBus, Received, Recipient};
    let a = LocalBus::single("a");
    let b = a.join("b");
    let mut heard = b.subscribe();
    assert_eq!(heard.recv().await, Some(Received::Gap));
    let (h, _metrics) = hub();
    h.attach_bus(Arc::new(a));
    h.publish((1..=3).map(event).collect());
    let got = tokio::time::timeout(Duration::from_secs(5), heard.recv())
        .await
        .unwrap();
    let Some(Received::Msg(m)) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        m.msg,
        BusMsg::Wake {
            recipient: Recipient::Agent(1),
            seq: 3
        }
    );
    // One wake for the batch, not one per event.
    let more = tokio::time::timeout(Duration::from_millis(100), heard.recv()).await;
    assert!(more.is_err(), "{more:?}");
}

#[tokio::test]
async fn a_wake_asks_local_connections_to_catch_up_and_never_cuts_a_full_queue() {
    use crate::bus::Recipient;
    let (h, metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut tab = h.register_visitor(visitor(1));
    drain(&mut alice.rx);
    drain(&mut tab.rx);
    h.wake(&Recipient::Agent(1), 9);
    h.wake(&Recipient::Visitor("v1".into()), 4);
    assert!(matches!(drain(&mut alice.rx)[..], [AgentPush::CatchUp(9)]));
    assert!(matches!(drain(&mut tab.rx)[..], [VisitorPush::CatchUp(4)]));
    // The agent's queue holds 3: more wakes than that are dropped (the
    // queued ones already make it read the log), never a cut.
    for _ in 0..10 {
        h.wake_all();
    }
    assert!(!alice.rx.is_kicked());
    assert_eq!(metrics.slow_consumer_cuts.get(), 0);
    assert!(
        drain(&mut alice.rx)
            .iter()
            .all(|p| matches!(p, AgentPush::CatchUp(Seq::MAX)))
    );
}

#[tokio::test]
async fn other_nodes_agents_count_for_assignment_until_they_expire() {
    use crate::bus::PresenceDelta;
    let (h, _metrics) = hub();
    let mut tab = h.register_visitor(visitor(1));
    drain(&mut tab.rx);
    assert!(h.available_agents(1).is_empty());
    h.remote_presence(
        "n2".into(),
        PresenceDelta::Agent {
            site: 1,
            agent: 2,
            presence: Presence::Online,
            connections: 2,
        },
    );
    assert_eq!(h.available_agents(1), vec![2]);
    assert_eq!(Availability::connections(&*h, 2), 2);
    assert_eq!(Availability::presence(&*h, 2), Presence::Online);
    assert_eq!(Availability::connected(&*h, 1), vec![(2, Presence::Online)]);
    // The visitor here learns that an agent is online (on another node).
    assert!(matches!(
        drain(&mut tab.rx)[..],
        [VisitorPush::Agents(crate::hub::Agents { online: true, .. })]
    ));
    // Re-announced entries stay; a node not heard of goes.
    h.expire_remote(Duration::from_secs(60));
    assert_eq!(h.available_agents(1), vec![2]);
    h.expire_remote(Duration::ZERO);
    assert!(h.available_agents(1).is_empty());
    assert_eq!(Availability::connections(&*h, 2), 0);
    assert!(matches!(
        drain(&mut tab.rx)[..],
        [VisitorPush::Agents(crate::hub::Agents {
            online: false,
            ..
        })]
    ));
}

#[tokio::test]
async fn other_nodes_visitors_are_listed_and_gone_only_when_no_node_has_them() {
    use crate::bus::PresenceDelta;
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    drain(&mut alice.rx);
    let mut remote = visitor(7);
    remote.trail.push(PageView {
        url: "https://shop.example/cart".into(),
        title: "Cart".into(),
        referrer: None,
        at_ms: 1,
    });
    h.remote_presence(
        "n2".into(),
        PresenceDelta::Visitor(Box::new(remote.clone())),
    );
    let listed = h.visitors_of_site(1);
    assert_eq!(listed, vec![remote.clone()]);
    let got = drain(&mut alice.rx);
    assert!(
        matches!(&got[..], [AgentPush::Live(l)] if matches!(l.event(), LiveEvent::Visitor(v) if *v == remote)),
        "{got:?}"
    );
    // The same announcement again tells agents nothing new.
    h.remote_presence(
        "n2".into(),
        PresenceDelta::Visitor(Box::new(remote.clone())),
    );
    assert!(drain(&mut alice.rx).is_empty());
    // The visitor moves here (its node died): listed once; when the dead
    // node's entry expires the agents are not told it is gone.
    let _tab = h.register_visitor(visitor(7));
    assert_eq!(h.visitors_of_site(1).len(), 1);
    h.expire_remote(Duration::ZERO);
    assert!(!drain(&mut alice.rx).iter().any(
        |p| matches!(p, AgentPush::Live(l) if matches!(l.event(), LiveEvent::VisitorGone { .. }))
    ));
    // One only on the other node, which then expires: gone.
    h.remote_presence("n3".into(), PresenceDelta::Visitor(Box::new(visitor(8))));
    drain(&mut alice.rx);
    h.expire_remote(Duration::ZERO);
    let got = drain(&mut alice.rx);
    assert!(
        got.iter().any(|p| matches!(p, AgentPush::Live(l) if matches!(l.event(), LiveEvent::VisitorGone { visitor } if visitor == "v8"))),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_poll_brings_this_node_s_copy_up_to_a_newer_stored_trail_but_never_back() {
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut v = visitor(1);
    v.trail = vec![page("https://shop/a", 10)];
    let _ = h.poll_begin(v.clone());
    h.poll_end("v1");
    h.flush_presence();
    drain(&mut alice.rx);
    // Another node recorded the checkout; this node hears of it from the
    // store when the visitor's next poll comes here.
    let mut stored = v.clone();
    stored.trail.push(page("https://shop/checkout", 20));
    let _ = h.poll_begin(stored.clone());
    h.flush_presence();
    let seen = drain(&mut alice.rx);
    assert!(
        seen.iter().any(|p| matches!(p, AgentPush::Live(ev)
            if matches!(ev.event(), LiveEvent::Visitor(i) if i.trail.last().map(|p| p.url.as_str()) == Some("https://shop/checkout")))),
        "{seen:?}"
    );
    // A store read that lags behind a page this node just recorded does
    // not take it back.
    h.visitor_page("v1", page("https://shop/thanks", 30), None);
    let _ = h.poll_begin(stored);
    assert_eq!(
        h.visitor_live("v1").unwrap().trail.last().unwrap().url,
        "https://shop/thanks"
    );
}

/// What a connection's queue holds now, as the seqs of its catch-ups.
fn catch_ups(reg: &mut Registration<AgentPush>) -> Vec<Seq> {
    std::iter::from_fn(|| reg.rx.try_recv())
        .filter_map(|p| match p {
            AgentPush::CatchUp(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_poll_of_the_log_heads_wakes_only_the_recipients_that_are_behind() {
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut bob = h.register_agent(1, member(2, "Bob"));
    let _tab = h.register_visitor(visitor(1));
    while alice.rx.try_recv().is_some() {}
    while bob.rx.try_recv().is_some() {}
    let mut keys = h.live_keys();
    keys.sort();
    assert_eq!(keys, ["a:1", "a:2", "v:v1"]);
    // Just registered: whatever the log holds, each is checked once.
    let heads = |a: Seq, b: Seq| vec![("a:1".to_owned(), a), ("a:2".to_owned(), b)];
    assert_eq!(h.poll_heads(&heads(4, 2)), 2);
    assert_eq!(catch_ups(&mut alice), [4]);
    assert_eq!(catch_ups(&mut bob), [2]);
    // Nothing moved: nobody is woken, nothing is read.
    assert_eq!(h.poll_heads(&heads(4, 2)), 0);
    assert!(catch_ups(&mut alice).is_empty());
    // Alice's log moved by a commit here (pushed) and bob's elsewhere (a
    // wake that was lost): only bob is behind.
    h.publish(vec![event(5)]);
    assert_eq!(h.poll_heads(&heads(5, 3)), 1);
    assert!(catch_ups(&mut alice).is_empty());
    assert_eq!(catch_ups(&mut bob), [3]);
    // A wake that did arrive counts too.
    h.wake(&Recipient::Agent(2), 4);
    assert_eq!(catch_ups(&mut bob), [4]);
    assert_eq!(h.poll_heads(&heads(5, 4)), 0);
    // A gap wakes everyone and forgets the heads: the next poll checks all.
    h.wake_all();
    assert_eq!(catch_ups(&mut alice), [Seq::MAX]);
    assert_eq!(h.poll_heads(&heads(5, 4)), 2);
}

#[tokio::test]
async fn a_catch_up_that_did_not_fit_in_a_full_queue_is_repeated_by_the_next_poll() {
    let (h, _metrics) = hub();
    // The queue holds 3: two flushes' worth of live updates fill it.
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let _visitors = arrive_apart(&h, 3);
    assert_eq!(h.poll_heads(&[("a:1".to_owned(), 7)]), 1);
    assert!(!alice.rx.is_kicked(), "never cut for a wake");
    // Drained: the poll tries again, since the catch-up was not handed over.
    while alice.rx.try_recv().is_some() {}
    assert_eq!(h.poll_heads(&[("a:1".to_owned(), 7)]), 1);
    assert_eq!(catch_ups(&mut alice), [7]);
}

#[tokio::test]
async fn the_database_copy_replaces_other_nodes_entries_and_agents_hear_only_what_moved() {
    use crate::bus::PresenceDelta;
    use crate::store::presence_pg::{AgentEntry, Entries};
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    drain(&mut alice.rx);
    h.remote_presence("n2".into(), PresenceDelta::Visitor(Box::new(visitor(7))));
    h.remote_presence("n3".into(), PresenceDelta::Visitor(Box::new(visitor(8))));
    let bob = |connections| PresenceDelta::Agent {
        site: 1,
        agent: 2,
        presence: Presence::Online,
        connections,
    };
    // Bob has no team row here: his row is to be read from the store.
    assert_eq!(h.remote_presence("n2".into(), bob(1)), Some((1, 2)));
    assert_eq!(h.available_agents(1), [1, 2]);
    drain(&mut alice.rx);
    // The copy, during an outage: n2 still has v7 but bob left it, and n3
    // is not heard from any more.
    let mut n2 = Entries::default();
    n2.visitors.insert("v7".into(), visitor(7));
    let others = HashMap::from([("n2".to_owned(), n2.clone())]);
    assert_eq!(h.remote_replace(&others), [(1, 2)]);
    assert_eq!(h.available_agents(1), [1]);
    let got = drain(&mut alice.rx);
    let gone: Vec<&str> = got
        .iter()
        .filter_map(|p| match p {
            AgentPush::Live(l) => match l.event() {
                LiveEvent::VisitorGone { visitor } => Some(visitor.as_str()),
                LiveEvent::Visitor(v) => panic!("v{} did not change: {v:?}", v.id),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(gone, ["v8"]);
    assert_eq!(h.visitors_of_site(1), [visitor(7)]);
    // The same copy again moves nothing.
    assert!(h.remote_replace(&others).is_empty());
    assert!(drain(&mut alice.rx).is_empty());
    // Bob back on n2, per the copy.
    n2.agents.insert(
        2,
        AgentEntry {
            site: 1,
            presence: Presence::Away,
            connections: 1,
        },
    );
    let others = HashMap::from([("n2".to_owned(), n2)]);
    assert_eq!(h.remote_replace(&others), [(1, 2)]);
    assert_eq!(h.presence(2), Presence::Away);
}

#[tokio::test]
async fn another_node_s_newer_page_reaches_this_node_s_copy_and_an_older_one_never_takes_it_back() {
    use crate::bus::PresenceDelta;
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut v = visitor(1);
    v.trail = vec![page("https://shop/a", 10)];
    let _tab = h.register_visitor(v.clone());
    h.flush_presence();
    drain(&mut alice.rx);
    // The visitor's next request went to node 2, which recorded checkout.
    let mut there = v.clone();
    there.trail.push(page("https://shop/checkout", 20));
    h.remote_presence("n2".into(), PresenceDelta::Visitor(Box::new(there.clone())));
    h.flush_presence();
    let last = |h: &Hub| {
        h.visitor_live("v1")
            .unwrap()
            .trail
            .last()
            .unwrap()
            .url
            .clone()
    };
    assert_eq!(last(&h), "https://shop/checkout");
    let seen = drain(&mut alice.rx);
    assert!(
        seen.iter().any(|p| matches!(p, AgentPush::Live(ev)
            if matches!(ev.event(), LiveEvent::Visitor(i) if i.trail.len() == 2))),
        "{seen:?}"
    );
    // Back here, a newer page; node 2's periodic re-announcement of its
    // older copy does not undo it.
    h.visitor_page("v1", page("https://shop/thanks", 30), None);
    h.remote_presence("n2".into(), PresenceDelta::Visitor(Box::new(there)));
    assert_eq!(last(&h), "https://shop/thanks");
}

#[tokio::test]
async fn an_agent_on_two_nodes_has_the_presence_its_latest_setting_gave_on_either() {
    use crate::bus::PresenceDelta;
    let (h, _metrics) = hub();
    let mut phone = h.register_agent(1, member(1, "Alice"));
    let mut bob = h.register_agent(1, member(2, "Bob"));
    drain(&mut phone.rx);
    drain(&mut bob.rx);
    let now = crate::store::now_ms();
    let at = |presence, since_ms| PresenceDelta::AgentAt {
        site: 1,
        agent: 1,
        presence,
        since_ms,
        connections: 1,
    };
    // Her desktop on n2 set "away" after her phone came online here.
    h.remote_presence("n2".into(), at(Presence::Away, now + 60_000));
    assert_eq!(h.presence(1), Presence::Away);
    assert_eq!(h.available_agents(1), vec![2]);
    let team: Vec<Presence> = drain(&mut bob.rx)
        .iter()
        .filter_map(|p| match p {
            AgentPush::Live(l) => match l.event() {
                LiveEvent::TeamMember(m) if m.agent == 1 => Some(m.presence),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(team, [Presence::Away]);
    // n2's periodic re-announcement, or an older setting, changes nothing.
    h.remote_presence("n2".into(), at(Presence::Away, now + 60_000));
    h.remote_presence("n3".into(), at(Presence::Online, now));
    assert_eq!(h.presence(1), Presence::Away);
    // "Online" from the phone here is later than anything heard: it wins
    // here, and what is told to the others says so.
    h.publish(vec![Effect::Presence {
        agent: 1,
        presence: Presence::Online,
    }]);
    assert_eq!(h.presence(1), Presence::Online);
    assert_eq!(h.available_agents(1), vec![1, 2]);
    // A device joining here while she is away on n2 keeps her away.
    let (h2, _m) = hub();
    h2.remote_presence("n2".into(), at(Presence::Away, now));
    let _tablet = h2.register_agent(1, member(1, "Alice"));
    assert_eq!(h2.presence(1), Presence::Away);
}

#[tokio::test]
async fn a_visitor_s_identity_read_again_after_a_gap_reaches_agents_unless_a_newer_change_did() {
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let _tab = h.register_visitor(visitor(1));
    h.flush_presence();
    drain(&mut alice.rx);
    let (ids, epoch) = h.live_visitors();
    let ann = crate::store::reads::Identity {
        visitor: "v1".into(),
        name: Some("Ann".into()),
        email: None,
        attrs: vec![("plan".into(), "pro".into())],
        external_id: Some("u1".into()),
        verified: false,
    };
    h.records_reread(&ids, &[], vec![ann.clone()], epoch);
    h.flush_presence();
    let info = h.visitor_live("v1").unwrap();
    assert_eq!(info.name.as_deref(), Some("Ann"));
    assert!(
        drain(&mut alice.rx)
            .iter()
            .any(|p| matches!(p, AgentPush::Live(l)
        if matches!(l.event(), LiveEvent::Visitor(i) if i.name.as_deref() == Some("Ann"))))
    );
    // A read older than a change committed here since is not applied.
    let (_, old) = h.live_visitors();
    h.publish(vec![Effect::VisitorChanged {
        visitor: "v1".into(),
        change: VisitorChange::Identity {
            name: Some("Ann B".into()),
            email: None,
            attrs: Vec::new(),
            external_id: Some("u1".into()),
            verified: false,
        },
    }]);
    h.records_reread(&ids, &[], vec![ann], old);
    assert_eq!(h.visitor_live("v1").unwrap().name.as_deref(), Some("Ann B"));
}

fn groups_of(reg: &mut Registration<AgentPush>) -> Vec<Vec<(String, bool, Option<bool>)>> {
    drain(&mut reg.rx)
        .into_iter()
        .filter_map(|p| match p {
            AgentPush::Live(l) => match l.event() {
                LiveEvent::Groups(list) => Some(
                    list.iter()
                        .map(|g| (g.key.clone(), g.member, g.open))
                        .collect(),
                ),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn agents_said(reg: &mut Registration<VisitorPush>) -> Vec<bool> {
    drain(&mut reg.rx)
        .into_iter()
        .filter_map(|p| match p {
            VisitorPush::Agents(a) => Some(a.online),
            _ => None,
        })
        .collect()
}

fn site_groups(members: &[AgentId], open: Option<bool>) -> crate::groups::SiteGroups {
    crate::groups::SiteGroups {
        choice: false,
        groups: vec![crate::groups::LiveGroup {
            key: "billing".into(),
            name: "Billing".into(),
            members: members.iter().copied().collect(),
            open,
        }],
    }
}

/// Each agent hears the new list with its own membership, only when its
/// site's groups changed; a visitor of a group hears about that group's
/// agents and hours, one of the whole site about the site's.
#[tokio::test]
async fn groups_reach_each_agent_with_its_membership_and_visitors_per_group() {
    let (h, _metrics) = hub();
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut bob = h.register_agent(1, member(2, "Bob"));
    let mut other = h.register_agent(2, member(3, "Carol"));
    let mut billing = h.register_visitor(visitor(1));
    h.set_visitor_group("v1", Some("billing".into()));
    let mut whole = h.register_visitor(visitor(2));
    for r in [&mut alice, &mut bob, &mut other] {
        drain(&mut r.rx);
    }
    drain(&mut billing.rx);
    drain(&mut whole.rx);

    h.set_groups(HashMap::from([(1, site_groups(&[2], None))]));
    assert_eq!(
        groups_of(&mut alice),
        [vec![("billing".to_string(), false, None)]]
    );
    assert_eq!(
        groups_of(&mut bob),
        [vec![("billing".to_string(), true, None)]]
    );
    assert!(groups_of(&mut other).is_empty(), "another site's agent");
    assert_eq!(agents_said(&mut billing), [true], "Bob is in billing");
    assert_eq!(agents_said(&mut whole), [true]);
    assert!(h.agents_online_for(1, Some("billing")));
    assert!(
        h.agents_online_for(1, Some("no-such-group")),
        "counts as none"
    );

    // The same again: nothing to tell.
    h.set_groups(HashMap::from([(1, site_groups(&[2], None))]));
    assert!(groups_of(&mut alice).is_empty());
    assert!(agents_said(&mut billing).is_empty());

    // Billing closes by its own hours: its visitor hears no one is there,
    // the site's visitor does not.
    h.set_groups(HashMap::from([(1, site_groups(&[2], Some(false)))]));
    assert_eq!(
        groups_of(&mut bob),
        [vec![("billing".to_string(), true, Some(false))]]
    );
    assert_eq!(agents_said(&mut billing), [false]);
    assert_eq!(agents_said(&mut whole), [true]);
    // Open again, but only Alice (not in billing) is online.
    h.set_groups(HashMap::from([(1, site_groups(&[2], Some(true)))]));
    drain(&mut billing.rx);
    h.unregister_agent(2, bob.id);
    assert!(!h.agents_online_for(1, Some("billing")));
    assert!(h.agents_online_for(1, None));
    assert_eq!(agents_said(&mut billing).last(), Some(&false));
}

/// The messages of an encoded visitor list, decoded as a client reads them.
fn listed(l: &visitor_list::VisitorList) -> Vec<LiveEvent> {
    l.messages
        .iter()
        .map(|m| match ServerMsg::decode(m.as_bytes()).unwrap() {
            ServerMsg::Live(ev) => ev,
            other => panic!("not a live event: {other:?}"),
        })
        .collect()
}

#[test]
fn agents_signing_in_share_one_encoded_visitor_list_until_it_changes() {
    let h = Hub::new(
        HubConfig {
            visitor_grace: Duration::ZERO,
            ..HubConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    let mut regs: Vec<_> = (0..2).map(|i| h.register_visitor(visitor(i))).collect();
    h.flush_presence();
    let first = h.visitor_list(1);
    let now = h.visitors_of_site(1);
    assert_eq!(listed(&first), [LiveEvent::Visitors(now.clone())]);
    let ids: Vec<_> = first.online.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["v0", "v1"]);
    assert_eq!(first.online[0].1, now[0].visit_started_ms);
    // Nothing told to agents since: the same copy, not a new one.
    assert!(Arc::ptr_eq(&first, &h.visitor_list(1)));
    // Another site's visitor changes nothing here.
    let mut elsewhere = visitor(9);
    elsewhere.site = 2;
    regs.push(h.register_visitor(elsewhere));
    h.flush_presence();
    assert!(Arc::ptr_eq(&first, &h.visitor_list(1)));
    // A new visitor not yet flushed is still to be broadcast, to whoever
    // read the old copy too; once it is, the copy is dropped.
    regs.push(h.register_visitor(visitor(2)));
    assert!(Arc::ptr_eq(&first, &h.visitor_list(1)));
    h.flush_presence();
    let second = h.visitor_list(1);
    assert!(!Arc::ptr_eq(&first, &second));
    let now = h.visitors_of_site(1);
    assert_eq!(now.len(), 3);
    assert_eq!(listed(&second), [LiveEvent::Visitors(now.clone())]);
    // Too long for one message: the first part replaces the list, the
    // rest are upserts, as many to a message as the budget allows.
    let budget = now[0].encoded_len() + 1;
    assert_eq!(
        listed(&visitor_list::VisitorList::encode(now.clone(), budget)),
        [
            LiveEvent::Visitors(vec![now[0].clone()]),
            LiveEvent::VisitorUpdates(vec![now[1].clone()]),
            LiveEvent::VisitorUpdates(vec![now[2].clone()]),
        ]
    );
    let budget = now[0].encoded_len() + now[1].encoded_len() + now[2].encoded_len();
    assert_eq!(
        listed(&visitor_list::VisitorList::encode(now.clone(), budget - 1)),
        [
            LiveEvent::Visitors(vec![now[0].clone(), now[1].clone()]),
            LiveEvent::VisitorUpdates(vec![now[2].clone()]),
        ]
    );
    // A visitor gone from the site is gone from the next copy.
    let gone = regs.remove(3);
    let kept = h.visitor_list(1);
    h.unregister_visitor("v2", gone.id);
    h.sweep(Duration::ZERO);
    assert!(!Arc::ptr_eq(&kept, &h.visitor_list(1)));
    assert!(h.visitor_list(1).online.iter().all(|(id, _)| id != "v2"));
}

/// An agent's queued live events but its team's changes.
fn live_events(rx: &mut pushq::Receiver<AgentPush>) -> Vec<LiveEvent> {
    drain(rx)
        .into_iter()
        .filter_map(|p| match p {
            AgentPush::Live(l) if !matches!(l.event(), LiveEvent::TeamMember(_)) => {
                Some(l.event().clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn visitors_that_change_within_one_interval_reach_agents_in_one_message() {
    let h = Hub::new(
        HubConfig {
            list_budget: 1 << 20,
            ..HubConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    let mut alice = h.register_agent(1, member(1, "Alice"));
    let mut elsewhere = h.register_agent(2, member(2, "Eve"));
    let _regs: Vec<_> = (0..50).map(|i| h.register_visitor(visitor(i))).collect();
    let mut other = visitor(99);
    other.site = 2;
    let _other = h.register_visitor(other);
    h.flush_presence();
    let got = live_events(&mut alice.rx);
    let [LiveEvent::VisitorUpdates(list)] = &got[..] else {
        panic!("one message for the 50 arrivals, not {got:?}");
    };
    let mut ids: Vec<_> = list.iter().map(|v| v.id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = (0..50).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    // The other site's agent hears of its own visitor only.
    let got = live_events(&mut elsewhere.rx);
    assert!(
        matches!(&got[..], [LiveEvent::Visitor(v)] if v.id == "v99"),
        "{got:?}"
    );
    // One change is one `Visitor`, as before.
    h.visitor_page("v3", page("https://shop/b", 20), None);
    h.flush_presence();
    let got = live_events(&mut alice.rx);
    assert!(
        matches!(&got[..], [LiveEvent::Visitor(v)] if v.id == "v3"),
        "{got:?}"
    );
    // More than a message holds: several, each within the budget, all
    // there once.
    let one = h.visitors_of_site(1)[0].encoded_len();
    let h2 = Hub::new(
        HubConfig {
            list_budget: one * 10,
            ..HubConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    let mut bob = h2.register_agent(1, member(1, "Bob"));
    let _regs2: Vec<_> = (0..50).map(|i| h2.register_visitor(visitor(i))).collect();
    h2.flush_presence();
    let got = live_events(&mut bob.rx);
    assert!(got.len() >= 5, "{} messages", got.len());
    let mut seen = Vec::new();
    for ev in &got {
        assert!(
            ev.upserts()
                .iter()
                .map(VisitorInfo::encoded_len)
                .sum::<usize>()
                <= one * 11
        );
        seen.extend(ev.upserts().iter().map(|v| v.id.clone()));
    }
    seen.sort();
    assert_eq!(seen, want);
}
