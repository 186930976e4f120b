//! Proactive invitations by rule (issue 17, PROTOCOL.md 10.20): a rule the
//! admin set invites a matching visitor by itself, once a visit and never
//! while they chat, over both transports; the agents see it fire; a reply
//! starts the chat with the invitation's words; and the site's counts say
//! how many were shown, accepted and ignored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{Author, InvitationState};
use holdfast_protocol::notice::Notice;
use holdfast_protocol::visitor::{
    InvitationEvent, PageInfo, Sender, VisitorEvent, VisitorIn, VisitorOut,
};
use holdfast_server::invite::admin::{self, Counts, RuleSpec};
use holdfast_tests::core_agent::live;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::{LpVisitor, WsVisitor};

const TEXT: &str = "Questions about plans? 我们在线。";

fn is_invite(m: &VisitorOut) -> bool {
    matches!(m, VisitorOut::Invite { .. })
}

async fn add_rule(srv: &TestServer, spec: RuleSpec) -> i64 {
    srv.admin(move |db| admin::add_rule(db, "acme", &spec).unwrap().id)
        .await
}

async fn counts(srv: &TestServer, rule: i64) -> Counts {
    srv.admin(move |db| admin::counts(db, rule, holdfast_server::store::now_ms()).unwrap())
        .await
}

/// No invitation within `secs` (the watcher runs every second), with a
/// ping each second so the quiet socket stays up.
async fn no_invite_for(v: &mut WsVisitor, secs: u64) {
    for _ in 0..secs {
        v.send_json(&VisitorIn::Ping).await.unwrap();
        let got = v.wait_for(Duration::from_secs(1), is_invite).await;
        assert!(got.is_err(), "invited when it should not be: {got:?}");
    }
}

async fn a_page_rule_invites_once_a_visit_and_a_reply_starts_the_chat(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let rule = add_rule(
        &srv,
        RuleSpec {
            name: "pricing".into(),
            text: TEXT.into(),
            url: Some("*/pricing*".into()),
            page_secs: Some(1),
            ..RuleSpec::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = live(&srv, "alice", &dir).await;

    // On the home page: the rule does not fit.
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    no_invite_for(&mut v, 3).await;

    // On the pricing page for a second: invited, and the agents see it.
    v.send_json(&VisitorIn::Page(PageInfo {
        url: "https://shop.example/pricing?plan=pro".into(),
        title: "Pricing".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    let got = v
        .wait_for(Duration::from_secs(6), is_invite)
        .await
        .expect("the invitation");
    let VisitorOut::Invite { id, text } = got else {
        unreachable!()
    };
    assert_eq!(text, TEXT);
    let fired = alice
        .until("the invitation to fire", |u| match u {
            Update::Invitation(i) if i.visitor == v.visitor => Some(i.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        (fired.id, fired.rule.as_str(), fired.state),
        (id, "pricing", InvitationState::Fired)
    );

    // The widget shows it; the agents hear that too.
    v.send_json(&VisitorIn::Invitation {
        id,
        event: InvitationEvent::Shown,
    })
    .await
    .unwrap();
    alice
        .until("the invitation to be shown", |u| match u {
            Update::Invitation(i) if i.id == id && i.state == InvitationState::Shown => Some(()),
            _ => None,
        })
        .await;
    // An app started now (a new device) still sees it and how it stands.
    let later = tempfile::tempdir().unwrap();
    let mut bea = live(&srv, "bob", &later).await;
    let known = bea
        .until("the invitation at sign-in", |u| match u {
            Update::Invitation(i) if i.visitor == v.visitor => Some(i.clone()),
            _ => None,
        })
        .await;
    assert_eq!((known.id, known.state), (id, InvitationState::Shown));
    bea.shutdown().await;

    // Once a visit: another pricing page brings no second one.
    v.send_json(&VisitorIn::Page(PageInfo {
        url: "https://shop.example/pricing/teams".into(),
        title: "Teams".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    no_invite_for(&mut v, 3).await;

    // Replying accepts it: the chat starts with the invitation's words,
    // then the visitor's, for the agent and the visitor alike.
    let VisitorOut::Ack { conversation, .. } = v.say_acked("yes, which plan fits?").await.unwrap()
    else {
        panic!("not acked")
    };
    alice
        .until("the visitor's reply", |u| match u {
            Update::Message(m)
                if m.conversation == conversation && m.body == "yes, which plan fits?" =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let lines: Vec<(Author, String)> = alice
        .messages(conversation)
        .into_iter()
        .map(|m| (m.author, m.body))
        .collect();
    let first = lines.first().expect("a first line");
    assert_eq!(first.0, Author::System, "{lines:?}");
    assert_eq!(
        Notice::parse(&first.1),
        Some(Notice::Invited {
            rule: "pricing".into(),
            text: TEXT.into()
        }),
        "{lines:?}"
    );
    assert!(matches!(lines[1].0, Author::Visitor { .. }), "{lines:?}");
    // And the agents hear that it was accepted, as they heard it fire.
    let accepted = alice
        .until("the invitation to be accepted", |u| match u {
            Update::Invitation(i) if i.id == id && i.state == InvitationState::Accepted => {
                Some(i.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(
        (accepted.visitor.as_str(), accepted.rule.as_str()),
        (v.visitor.as_str(), "pricing")
    );
    v.wait_message("yes, which plan fits?").await.unwrap();
    let seen: Vec<(Sender, String)> = v
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) => Some((m.from.clone(), m.body.clone())),
            VisitorEvent::Conversation(_) => None,
        })
        .collect();
    assert_eq!(seen[0], (Sender::System, TEXT.to_owned()), "{seen:?}");
    assert_eq!(
        seen[1],
        (Sender::Visitor, "yes, which plan fits?".to_owned()),
        "{seen:?}"
    );

    assert_eq!(
        counts(&srv, rule).await,
        Counts {
            fired: 1,
            shown: 1,
            accepted: 1,
            ignored: 0
        }
    );
}

holdfast_tests::on_both_backends!(a_page_rule_invites_once_a_visit_and_a_reply_starts_the_chat);

/// Over long-poll the invitation rides a poll; closing it counts as
/// ignored. A visitor already chatting is never invited.
async fn long_poll_gets_it_a_closed_one_is_ignored_and_chatting_visitors_are_left_alone(
    backend: Backend,
) {
    let srv = TestServer::start_on(backend).await;
    let rule = add_rule(
        &srv,
        RuleSpec {
            name: "everyone".into(),
            text: "Hello from the shop".into(),
            site_secs: Some(2),
            ..RuleSpec::default()
        },
    )
    .await;

    // Chatting before the rule's two seconds are up.
    let mut busy = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    busy.say_acked("I need help now").await.unwrap();

    let mut lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let id = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invitation by long-poll"
        );
        let got = lp.poll().await.unwrap();
        if let Some(VisitorOut::Invite { id, text }) = got.iter().find(|m| is_invite(m)) {
            assert_eq!(text, "Hello from the shop");
            break *id;
        }
    };
    lp.send(vec![VisitorIn::Invitation {
        id,
        event: InvitationEvent::Dismissed,
    }])
    .await
    .unwrap();
    // Someone else's invitation id from another visitor changes nothing.
    busy.send_json(&VisitorIn::Invitation {
        id,
        event: InvitationEvent::Shown,
    })
    .await
    .unwrap();

    no_invite_for(&mut busy, 2).await;
    let c = counts(&srv, rule).await;
    assert_eq!(
        c,
        Counts {
            fired: 1,
            shown: 1,
            accepted: 0,
            ignored: 1
        }
    );

    // A rule switched off fires no more, and it keeps its counts.
    srv.admin(|db| admin::set_enabled(db, "acme", "EVERYONE", false).unwrap())
        .await;
    let mut late = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    // The rules are read again within five seconds.
    no_invite_for(&mut late, 8).await;
    assert_eq!(counts(&srv, rule).await, c);
}

holdfast_tests::on_both_backends!(
    long_poll_gets_it_a_closed_one_is_ignored_and_chatting_visitors_are_left_alone
);

/// Bad rules are refused with a reason, and nothing is stored.
#[tokio::test]
async fn bad_rules_are_refused_clearly() {
    let srv = TestServer::start_on(Backend::Sqlite).await;
    let errors = srv
        .admin(|db| {
            let base = RuleSpec {
                name: "r".into(),
                text: "hi".into(),
                ..RuleSpec::default()
            };
            let cases = [
                RuleSpec {
                    text: "  ".into(),
                    ..base.clone()
                },
                RuleSpec {
                    text: "x".repeat(501),
                    ..base.clone()
                },
                RuleSpec {
                    attr: Some("plan".into()),
                    ..base.clone()
                },
                RuleSpec {
                    page_secs: Some(90_000),
                    ..base.clone()
                },
                RuleSpec {
                    name: "bad\u{7}name".into(),
                    ..base.clone()
                },
            ];
            let mut out: Vec<String> = cases
                .iter()
                .map(|c| admin::add_rule(db, "acme", c).unwrap_err().to_string())
                .collect();
            admin::add_rule(db, "acme", &base).unwrap();
            out.push(admin::add_rule(db, "acme", &base).unwrap_err().to_string());
            out.push(admin::add_rule(db, "nope", &base).unwrap_err().to_string());
            assert_eq!(admin::rules(db, None).unwrap().len(), 1);
            out
        })
        .await;
    let want = [
        "the invitation text must be 1 to 500 characters",
        "the invitation text must be 1 to 500 characters",
        "an attribute is key=value",
        "at most 86400 seconds",
        "cannot hold control characters",
        "already has a rule named",
        "no site with key",
    ];
    for (got, want) in errors.iter().zip(want) {
        assert!(got.contains(want), "{got:?} should say {want:?}");
    }
}
