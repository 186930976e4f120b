//! Invitation rules managed from the agent app (PROTOCOL.md 10.20): an
//! admin adds, reads (with counts), edits, switches off and removes the
//! site's rules through a real client core; a real WebSocket visitor is
//! invited by them, or no longer is; a plain agent is refused; and bad
//! input gets the very words the CLI gives. On both stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{InviteCounts, InviteRule, InviteRuleSpec, QueryResult, Role};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::visitor::{InvitationEvent, PageInfo, VisitorIn, VisitorOut};
use holdfast_server::invite::admin::{self, RuleSpec};
use holdfast_tests::core_agent::{CoreAgent, live};
use holdfast_tests::server::{Backend, PASSWORD, TestServer};
use holdfast_tests::visitor::WsVisitor;

const TEXT: &str = "Questions about plans? 我们在线。";

fn is_invite(m: &VisitorOut) -> bool {
    matches!(m, VisitorOut::Invite { .. })
}

fn pricing() -> InviteRuleSpec {
    InviteRuleSpec {
        name: "pricing".into(),
        text: TEXT.into(),
        url: Some("*/pricing*".into()),
        ..InviteRuleSpec::default()
    }
}

async fn add_admin(srv: &TestServer) {
    srv.admin(|db| {
        holdfast_server::admin::add_agent(db, "acme", "carol", "Carol", PASSWORD, 2, Role::Admin)
            .unwrap();
    })
    .await;
}

/// A visitor on the pricing page.
async fn on_pricing(srv: &TestServer) -> WsVisitor {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.send_json(&VisitorIn::Page(PageInfo {
        url: "https://shop.example/pricing".into(),
        title: "Pricing".into(),
        referrer: None,
    }))
    .await
    .unwrap();
    v
}

/// No invitation within `secs`, pinging so the quiet socket stays up.
async fn no_invite_for(v: &mut WsVisitor, secs: u64) {
    for _ in 0..secs {
        v.send_json(&VisitorIn::Ping).await.unwrap();
        let got = v.wait_for(Duration::from_secs(1), is_invite).await;
        assert!(got.is_err(), "invited when it should not be: {got:?}");
    }
}

/// The rules as the query answers them now.
async fn read_rules(a: &mut CoreAgent) -> Vec<InviteRule> {
    let request = a.handle.load_invite_rules().unwrap();
    a.until("the rules", |u| match u {
        Update::InviteRules(l) => Some(Ok(l.clone())),
        Update::History { request: r, result } if *r == request => Some(Err(result.clone())),
        _ => None,
    })
    .await
    .unwrap_or_else(|r| panic!("refused: {r:?}"))
}

/// The rules, read again until `pred` holds (counts move after the fact).
async fn rules_until(a: &mut CoreAgent, pred: impl Fn(&[InviteRule]) -> bool) -> Vec<InviteRule> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = read_rules(a).await;
        if pred(&l) {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rules never came to that: {l:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin_manages_rules_from_the_app(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    add_admin(&srv).await;
    let (dc, da) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut carol = live(&srv, "carol", &dc).await;
    let mut alice = live(&srv, "alice", &da).await;
    assert!(read_rules(&mut carol).await.is_empty());

    // Added from the app: the admin's list arrives by itself.
    let cmd = carol
        .handle
        .save_invite_rule(None, pricing())
        .await
        .unwrap();
    carol.outcome(cmd).await.unwrap();
    let pushed = carol
        .until("the new list", |u| match u {
            Update::InviteRules(l) if !l.is_empty() => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].rule, pricing());
    assert!(pushed[0].enabled);
    let id = pushed[0].id;
    // The CLI sees the same rule.
    let cli = srv
        .admin(|db| admin::rules(db, None).unwrap())
        .await
        .into_iter()
        .map(|r| (r.name, r.url))
        .collect::<Vec<_>>();
    assert_eq!(cli, vec![("pricing".into(), Some("*/pricing*".into()))]);

    // A matching visitor is invited; the widget says it showed it.
    let mut v = on_pricing(&srv).await;
    let got = v
        .wait_for(Duration::from_secs(8), is_invite)
        .await
        .expect("the invitation");
    let VisitorOut::Invite { id: inv, text } = got else {
        unreachable!()
    };
    assert_eq!(text, TEXT);
    v.send_json(&VisitorIn::Invitation {
        id: inv,
        event: InvitationEvent::Shown,
    })
    .await
    .unwrap();
    let l = rules_until(&mut carol, |l| l[0].counts.shown == 1).await;
    assert_eq!(
        l[0].counts,
        InviteCounts {
            fired: 1,
            shown: 1,
            accepted: 0,
            ignored: 0
        }
    );

    // A plain agent may neither read nor change them, and gets no list.
    let request = alice.handle.load_invite_rules().unwrap();
    let refused = alice
        .until("the refusal", |u| match u {
            Update::InviteRules(_) => panic!("a plain agent got the rules"),
            Update::History { request: r, result } if *r == request => Some(result.clone()),
            _ => None,
        })
        .await;
    assert!(
        matches!(&refused, QueryResult::Refused(e) if e.code == ErrorCode::Forbidden),
        "{refused:?}"
    );
    for cmd in [
        alice
            .handle
            .save_invite_rule(None, pricing())
            .await
            .unwrap(),
        alice.handle.enable_invite_rule(id, false).await.unwrap(),
        alice.handle.delete_invite_rule(id).await.unwrap(),
    ] {
        let r = alice
            .until("an outcome", |u| match u {
                Update::InviteRules(_) => panic!("a plain agent got the rules"),
                Update::CommandDone { id: i, .. } if *i == cmd => Some(Ok(())),
                Update::CommandRejected {
                    id: i,
                    code,
                    message,
                } if *i == cmd => Some(Err((*code, message.clone()))),
                _ => None,
            })
            .await;
        assert_eq!(r.unwrap_err().0, ErrorCode::Forbidden);
    }

    // Bad input: refused with the CLI's own words, and nothing changes.
    let bad = [
        InviteRuleSpec {
            text: "  ".into(),
            ..pricing()
        },
        InviteRuleSpec {
            name: "PRICING".into(),
            ..pricing()
        },
        InviteRuleSpec {
            name: "plan".into(),
            attr: Some("plan-gold".into()),
            ..pricing()
        },
        InviteRuleSpec {
            name: "slow".into(),
            page_secs: Some(90_000),
            ..pricing()
        },
        InviteRuleSpec {
            name: "bell\u{7}".into(),
            ..pricing()
        },
    ];
    for spec in bad {
        let as_cli: RuleSpec = (&spec).into();
        let cli = srv
            .admin(move |db| {
                admin::add_rule(db, "acme", &as_cli)
                    .unwrap_err()
                    .to_string()
            })
            .await;
        let cmd = carol.handle.save_invite_rule(None, spec).await.unwrap();
        let (code, message) = carol.outcome(cmd).await.unwrap_err();
        assert_eq!((code, message), (ErrorCode::BadRequest, cli));
    }
    // Another site's rule, or none, is not found.
    let cmd = carol
        .handle
        .enable_invite_rule(id + 1000, false)
        .await
        .unwrap();
    assert_eq!(carol.outcome(cmd).await.unwrap_err().0, ErrorCode::NotFound);
    assert_eq!(read_rules(&mut carol).await.len(), 1);

    // Edited to another page: same id, same counts; a new visitor on the
    // pricing page is not invited any more.
    let checkout = InviteRuleSpec {
        name: "checkout".into(),
        url: Some("*/checkout*".into()),
        returning: Some(false),
        attr: Some("plan=gold".into()),
        ..pricing()
    };
    let cmd = carol
        .handle
        .save_invite_rule(Some(id), checkout.clone())
        .await
        .unwrap();
    carol.outcome(cmd).await.unwrap();
    let l = read_rules(&mut carol).await;
    assert_eq!((l[0].id, &l[0].rule), (id, &checkout));
    assert_eq!(l[0].counts.fired, 1);
    let mut late = on_pricing(&srv).await;
    no_invite_for(&mut late, 3).await;

    // Switched off: even a visitor the rule fits is left alone.
    let cmd = carol.handle.enable_invite_rule(id, false).await.unwrap();
    carol.outcome(cmd).await.unwrap();
    carol
        .until("the list with the rule off", |u| match u {
            Update::InviteRules(l) if l.first().is_some_and(|r| !r.enabled) => Some(()),
            _ => None,
        })
        .await;
    let cmd = carol
        .handle
        .save_invite_rule(Some(id), pricing())
        .await
        .unwrap();
    carol.outcome(cmd).await.unwrap();
    let l = read_rules(&mut carol).await;
    assert!(!l[0].enabled, "an edit keeps the rule off");
    let mut off = on_pricing(&srv).await;
    no_invite_for(&mut off, 3).await;

    // Removed: the list is empty, and the CLI agrees.
    let cmd = carol.handle.delete_invite_rule(id).await.unwrap();
    carol.outcome(cmd).await.unwrap();
    carol
        .until("the empty list", |u| match u {
            Update::InviteRules(l) if l.is_empty() => Some(()),
            _ => None,
        })
        .await;
    assert!(
        srv.admin(|db| admin::rules(db, None).unwrap())
            .await
            .is_empty()
    );

    carol.shutdown().await;
    alice.shutdown().await;
    srv.stop().await;
}

holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    admin_manages_rules_from_the_app
);

/// A rule added through the CLI reaches a signed-in admin's list without
/// a query (`lists::watch`), and invites at once rather than at the next
/// periodic reload.
async fn cli_changes_reach_signed_in_admins(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    add_admin(&srv).await;
    let dc = tempfile::tempdir().unwrap();
    let mut carol = live(&srv, "carol", &dc).await;
    // Baseline of the watcher: wait a tick so the add is a change.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    srv.admin(|db| {
        admin::add_rule(db, "acme", &(&pricing()).into()).unwrap();
    })
    .await;
    let l = carol
        .until("the CLI's rule", |u| match u {
            Update::InviteRules(l) if !l.is_empty() => Some(l.clone()),
            _ => None,
        })
        .await;
    assert_eq!(l[0].rule, pricing());
    let mut v = on_pricing(&srv).await;
    v.wait_for(Duration::from_secs(4), is_invite)
        .await
        .expect("the invitation");
    carol.shutdown().await;
    srv.stop().await;
}

holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    cli_changes_reach_signed_in_admins
);

/// Two nodes on one PostgreSQL and Redis: an admin's change through one
/// node reaches an admin signed in on the other, over the bus; an edit that
/// keeps every length (which `lists::watch` cannot tell) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_node_reaches_the_admins_on_another() {
    holdfast_tests::init_logs();
    let c = holdfast_tests::cluster::Cluster::start_async(2, 5).await;
    let setup = tempfile::tempdir().unwrap();
    for user in ["carol", "dave"] {
        holdfast_tests::cluster::cli(
            &c.url,
            setup.path(),
            &["agent", "add", user, "--site", "acme", "--role", "admin"],
        );
    }
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut carol = c.agent(0, &d0, "carol");
    let mut dave = c.agent(1, &d1, "dave");
    carol.live().await;
    dave.live().await;

    let cmd = carol
        .handle
        .save_invite_rule(None, pricing())
        .await
        .unwrap();
    carol.outcome(cmd).await.unwrap();
    let t0 = std::time::Instant::now();
    let l = dave
        .until("the rule from the other node", |u| match u {
            Update::InviteRules(l) if !l.is_empty() => Some(l.clone()),
            _ => None,
        })
        .await;
    eprintln!("a new rule reached the other node in {:?}", t0.elapsed());
    assert_eq!(l[0].rule, pricing());

    // Same lengths, same count, same on/off: only the bus can tell.
    let edited = InviteRuleSpec {
        text: TEXT.replace('Q', "q"),
        ..pricing()
    };
    let cmd = carol
        .handle
        .save_invite_rule(Some(l[0].id), edited.clone())
        .await
        .unwrap();
    carol.outcome(cmd).await.unwrap();
    let t0 = std::time::Instant::now();
    dave.until_within(
        holdfast_tests::cluster::LIVENESS,
        "the edit from the other node",
        |u| match u {
            Update::InviteRules(l) if l.first().is_some_and(|r| r.rule == edited) => Some(()),
            _ => None,
        },
    )
    .await;
    eprintln!("an edit reached the other node in {:?}", t0.elapsed());
    carol.shutdown().await;
    dave.shutdown().await;
}
