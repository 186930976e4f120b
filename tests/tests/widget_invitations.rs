//! Proactive invitations in a real browser (issue 17, PROTOCOL.md 10.20):
//! a rule invites the visitor of the demo page by itself; the widget shows
//! its words as text over the launcher and tells the server; a reply opens
//! the chat with the invitation as its first line; closing it is counted
//! as ignored and a reload does not bring it back. Over WebSocket and over
//! long-poll (a page without WebSocket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{Author, InvitationState};
use holdfast_protocol::notice::Notice;
use holdfast_server::invite::admin::{self as rules, RuleSpec};
use holdfast_server::{admin, store};
use holdfast_tests::browser::{Browser, ENTER};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::server::{PASSWORD, TestServer};

const T: Duration = Duration::from_secs(15);
const ROOT: &str = "document.querySelector('holdfast-widget').shadowRoot";
/// Markup in the rule's words must reach the page as text.
const TEXT: &str = "Questions about our beans? <b>Ask</b> us · 欢迎咨询";

/// The demo site, its agent "barista" (Bea), and a rule inviting whoever
/// has spent a second on the demo page.
async fn demo_server() -> (TestServer, i64) {
    let srv = TestServer::start_with(|cfg| {
        cfg.demo = true;
        let conn = store::open_connection(&cfg.data_dir).unwrap();
        admin::ensure_demo(&conn).unwrap();
        admin::add_agent(
            &conn,
            "demo",
            "barista",
            "Bea",
            PASSWORD,
            5,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
    })
    .await;
    let rule = srv
        .admin(|db| {
            let spec = RuleSpec {
                name: "beans".into(),
                text: TEXT.into(),
                url: Some("*/demo*".into()),
                page_secs: Some(1),
                ..RuleSpec::default()
            };
            rules::add_rule(db, "demo", &spec).unwrap().id
        })
        .await;
    (srv, rule)
}

async fn wait(b: &Browser, expr: &str) {
    b.wait(expr, T).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn open_demo(srv: &TestServer, long_poll: bool) -> Browser {
    let b = Browser::start().await.unwrap();
    if long_poll {
        b.on_new_document(
            "try { delete window.WebSocket; } catch (e) {} window.WebSocket = undefined;",
        )
        .await
        .unwrap();
    }
    b.goto(&format!("http://{}/demo", srv.http()))
        .await
        .unwrap();
    b
}

/// The next invitation signal in `state`.
async fn signal(bea: &mut CoreAgent, state: InvitationState) -> String {
    bea.until("an invitation signal", |u| match u {
        Update::Invitation(i) if i.state == state => Some(i.visitor.clone()),
        _ => None,
    })
    .await
}

async fn invitation_in_the_widget(long_poll: bool) {
    let (srv, rule) = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = CoreAgent::start(core_agent::fast_config(
        &srv.agent_addr().to_string(),
        "barista",
        &dir.path().join("barista.sqlite3"),
        srv.running().fingerprint,
    ));
    bea.live().await;

    // One visitor replies to it.
    let b = open_demo(&srv, long_poll).await;
    wait(
        &b,
        &format!("!!({ROOT} && {ROOT}.querySelector('#hf-inv'))"),
    )
    .await;
    let shown = b
        .js(
            &format!(
                "var c = {ROOT}.querySelector('#hf-inv'); \
                 return [c.querySelector('.it').textContent, c.querySelectorAll('b').length, \
                 c.getBoundingClientRect().height > 0];"
            ),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    assert_eq!(shown, serde_json::json!([TEXT, 0, true]), "shown as text");
    let fired = signal(&mut bea, InvitationState::Fired).await;
    assert_eq!(signal(&mut bea, InvitationState::Shown).await, fired);

    let reply = b
        .element(&format!("return {ROOT}.querySelector('#hf-inv .ir')"))
        .await
        .unwrap();
    b.click(&reply).await.unwrap();
    wait(&b, &format!("!{ROOT}.querySelector('#hf-inv')")).await;
    let field = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&field, &format!("Yes, which beans are decaf?{ENTER}"))
        .await
        .unwrap();
    let m = bea.visitor_message().await;
    assert_eq!(m.body, "Yes, which beans are decaf?");
    // The chat starts with the words the visitor answered.
    let first = bea
        .seen
        .iter()
        .find_map(|u| match u {
            Update::Message(x) if x.conversation == m.conversation => Some(x.clone()),
            _ => None,
        })
        .unwrap();
    assert!(matches!(first.author, Author::System), "{first:?}");
    assert_eq!(
        Notice::parse(&first.body),
        Some(Notice::Invited {
            rule: "beans".into(),
            text: TEXT.into()
        })
    );
    // The widget shows it once, above the reply (its stand-in line gives
    // way to the chat's own first line).
    wait(
        &b,
        &format!(
            "(() => {{ const t = Array.from({ROOT}.querySelectorAll('.m .b')).map(e => e.textContent); \
             return t.filter(x => x === {TEXT:?}).length === 1 && t[0] === {TEXT:?} \
             && t.indexOf('Yes, which beans are decaf?') > 0; }})()"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = b
        .js(
            &format!(
                "return Array.from({ROOT}.querySelectorAll('.m .b')).map(e => e.textContent);"
            ),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    let lines: Vec<String> = serde_json::from_value(lines).unwrap();
    assert_eq!(
        lines.iter().filter(|t| t.as_str() == TEXT).count(),
        1,
        "shown once: {lines:?}"
    );
    b.quit().await;

    // Another visitor closes it: counted as ignored, and a reload in the
    // same visit does not bring it back.
    let b = open_demo(&srv, long_poll).await;
    wait(
        &b,
        &format!("!!({ROOT} && {ROOT}.querySelector('#hf-inv'))"),
    )
    .await;
    let x = b
        .element(&format!("return {ROOT}.querySelector('#hf-inv .ix')"))
        .await
        .unwrap();
    b.click(&x).await.unwrap();
    signal(&mut bea, InvitationState::Dismissed).await;
    b.refresh().await.unwrap();
    wait(&b, &format!("!!({ROOT} && {ROOT}.querySelector('.go'))")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = b
        .js(
            &format!("return !!{ROOT}.querySelector('#hf-inv');"),
            serde_json::json!([]),
        )
        .await
        .unwrap();
    assert_eq!(again, serde_json::json!(false), "once a visit");
    let counts = srv
        .admin(move |db| rules::counts(db, rule, store::now_ms()).unwrap())
        .await;
    assert_eq!(
        (counts.fired, counts.shown, counts.accepted, counts.ignored),
        (2, 2, 1, 1)
    );

    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_shows_in_the_widget_and_a_reply_starts_the_chat() {
    invitation_in_the_widget(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_shows_in_the_widget_over_long_poll() {
    invitation_in_the_widget(true).await;
}
