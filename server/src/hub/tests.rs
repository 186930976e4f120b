//! The hub's unit tests: slow consumers, shutdown, and applying committed
//! effects. Kept apart so hub.rs stays readable.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::effect::Effect;
use holdfast_protocol::agent::{Author, ChatMessage};

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

#[tokio::test]
async fn a_presence_flood_marks_the_agent_stale_instead_of_cutting_it() {
    let (h, metrics) = hub();
    let mut reg = h.register_agent(1, member(1, "Alice"));
    // The agent does not read; 20 visitors arrive (20 presence changes
    // into a queue of 3).
    let _visitors: Vec<_> = (0..20).map(|i| h.register_visitor(visitor(i))).collect();
    // Coalesced, but 20 visitors are 20 updates even then.
    h.flush_presence();
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
