//! Site groups in a real browser (issue 17, PROTOCOL.md 10.23): a page's
//! `data-group` sends its chats to that group's agents, and shows the
//! leave-a-message form when no one of the group is there though others
//! are; a site that offers a choice shows its groups (names as text, never
//! markup) before the first message, the choice takes the chat to that
//! group and survives a reload. Over WebSocket and over long-poll (a page
//! without WebSocket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_protocol::agent::{ConversationState, Role};
use holdfast_server::{admin, groups, store};
use holdfast_tests::browser::{Browser, ENTER};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::server::{PASSWORD, TestServer};
use serde_json::json;

const T: Duration = Duration::from_secs(15);
const ROOT: &str = "document.querySelector('holdfast-widget').shadowRoot";
/// A group name with markup in it: it must reach the page as text.
const HOSTILE: &str = "<img src=x onerror=alert(1)> Billing";

/// The demo site with Bea ("barista") in billing and Sam in sales (Sam is
/// never signed in); the choice before the first message `choice`.
async fn demo_server(choice: bool) -> TestServer {
    TestServer::start_with(|cfg| {
        cfg.demo = true;
        let conn = store::open_connection(&cfg.data_dir).unwrap();
        admin::ensure_demo(&conn).unwrap();
        admin::add_agent(&conn, "demo", "barista", "Bea", PASSWORD, 5, Role::Agent).unwrap();
        admin::add_agent(&conn, "demo", "sam", "Sam", PASSWORD, 5, Role::Agent).unwrap();
        groups::add(&conn, "demo", "billing", HOSTILE).unwrap();
        groups::add(&conn, "demo", "sales", "Sales").unwrap();
        groups::members(&conn, "demo", "billing", &["barista".into()], &[]).unwrap();
        groups::members(&conn, "demo", "sales", &["sam".into()], &[]).unwrap();
        groups::set_choice(&conn, "demo", choice).unwrap();
    })
    .await
}

async fn wait(b: &Browser, expr: &str) {
    b.wait(expr, T).await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// A browser whose pages have no WebSocket when `long_poll`.
async fn browser(long_poll: bool) -> Browser {
    let b = Browser::start().await.unwrap();
    if long_poll {
        b.on_new_document(
            "try { delete window.WebSocket; } catch (e) {} window.WebSocket = undefined;",
        )
        .await
        .unwrap();
    }
    b
}

/// The one tag, with `data-group` when given, on a plain page of the
/// server; then the launcher clicked.
async fn embed_and_open(b: &Browser, srv: &TestServer, group: Option<&str>) {
    let origin = format!("http://{}", srv.http());
    b.goto(&format!("{origin}/healthz")).await.unwrap();
    let mut attrs = json!({ "data-site": "demo" });
    if let Some(g) = group {
        attrs["data-group"] = json!(g);
    }
    b.js(
        // The panel starts closed, whatever the page before left open.
        "sessionStorage.clear(); \
         var s = document.createElement('script'); s.async = true; s.src = arguments[0]; \
         for (var k in arguments[1]) s.setAttribute(k, arguments[1][k]); \
         document.body.appendChild(s);",
        json!([format!("{origin}/widget.js"), attrs]),
    )
    .await
    .unwrap();
    wait(
        b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    let go = b
        .element(&format!("return {ROOT}.querySelector('.go')"))
        .await
        .unwrap();
    b.click(&go).await.unwrap();
    wait(b, &format!("!{ROOT}.querySelector('.p').hidden")).await;
}

/// Which of the picker (`.pk`), the leave-a-message form (`.lv`) and the
/// composer (`.cp`) shows.
fn showing(part: &str) -> String {
    let all = ["pk", "lv", "cp"];
    let parts: Vec<String> = all
        .iter()
        .map(|p| format!("{ROOT}.querySelector('.{p}').hidden === {}", *p != part))
        .collect();
    parts.join(" && ")
}

async fn say(b: &Browser, text: &str) {
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&input, &format!("{text}{ENTER}"))
        .await
        .unwrap();
}

/// Bea signed in through a real client core.
async fn bea(srv: &TestServer) -> (CoreAgent, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let a = core_agent::live(srv, "barista", &dir).await;
    (a, dir)
}

async fn data_group_targets_its_group(long_poll: bool) {
    let srv = demo_server(false).await;
    let (mut bea, _dir) = bea(&srv).await;

    // Billing: Bea is there; the chat is billing's and goes to her.
    let b = browser(long_poll).await;
    embed_and_open(&b, &srv, Some("billing")).await;
    wait(&b, &showing("cp")).await;
    say(&b, "a question about my invoice").await;
    let c = bea
        .conversation_where(|c| c.state == ConversationState::Active)
        .await;
    assert_eq!(c.group.as_deref(), Some("billing"));
    b.quit().await;

    // Sales: Sam is not signed in, so no one of sales would answer,
    // though Bea is online: the leave-a-message form.
    let b = browser(long_poll).await;
    embed_and_open(&b, &srv, Some("sales")).await;
    wait(&b, &showing("lv")).await;
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_group_targets_its_group_over_websocket() {
    data_group_targets_its_group(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_group_targets_its_group_over_long_poll() {
    data_group_targets_its_group(true).await;
}

async fn the_visitor_chooses_a_group_before_the_first_message(long_poll: bool) {
    let srv = demo_server(true).await;
    let (mut bea, _dir) = bea(&srv).await;
    let b = browser(long_poll).await;
    embed_and_open(&b, &srv, None).await;
    // The groups, by name, as text; no composer yet.
    wait(&b, &showing("pk")).await;
    let names = b
        .js(
            &format!(
                "return Array.prototype.map.call({ROOT}.querySelectorAll('.pk button'), \
                 function (n) {{ return n.firstChild.textContent; }})"
            ),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(names, json!([HOSTILE, "Sales"]));
    let markup = b
        .js(
            &format!("return {ROOT}.querySelectorAll('.pk img').length"),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(markup, json!(0), "a name is never markup");

    // Billing chosen: Bea is there, so the composer; the chat is billing's.
    let pick = b
        .element(&format!(
            "return {ROOT}.querySelector('.pk button[data-group=\"billing\"]')"
        ))
        .await
        .unwrap();
    b.click(&pick).await.unwrap();
    wait(&b, &showing("cp")).await;
    say(&b, "chose billing").await;
    let c = bea
        .conversation_where(|c| c.state == ConversationState::Active)
        .await;
    assert_eq!(c.group.as_deref(), Some("billing"));

    // After a reload (the page embeds the tag again) the choice holds: no
    // picker, the same chat.
    b.refresh().await.unwrap();
    embed_and_open(&b, &srv, None).await;
    wait(&b, &showing("cp")).await;
    wait(
        &b,
        &format!(
            "Array.prototype.some.call({ROOT}.querySelectorAll('.m.visitor .b'), \
             function (n) {{ return n.textContent === 'chose billing'; }})"
        ),
    )
    .await;
    b.quit().await;

    // Another visitor, with the choice on screen: sales says no one is
    // there; Sam signs in and it says so at once, and again when he steps
    // away, without a reload.
    let b = browser(long_poll).await;
    embed_and_open(&b, &srv, None).await;
    wait(&b, &showing("pk")).await;
    let sales_away = |away: bool| {
        format!(
            "!!{ROOT}.querySelector('.pk button[data-group=\"sales\"]') && \
             ({ROOT}.querySelector('.pk button[data-group=\"sales\"] span') !== null) === {away}"
        )
    };
    wait(&b, &sales_away(true)).await;
    let sam_dir = tempfile::tempdir().unwrap();
    let sam = core_agent::live(&srv, "sam", &sam_dir).await;
    wait(&b, &sales_away(false)).await;
    sam.handle
        .set_presence(holdfast_protocol::agent::Presence::Away)
        .await
        .unwrap();
    wait(&b, &sales_away(true)).await;
    // Choosing sales now, where no one is: the message form.
    let pick = b
        .element(&format!(
            "return {ROOT}.querySelector('.pk button[data-group=\"sales\"]')"
        ))
        .await
        .unwrap();
    b.click(&pick).await.unwrap();
    wait(&b, &showing("lv")).await;
    b.quit().await;
    sam.shutdown().await;
    bea.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitor_chooses_a_group_before_the_first_message_over_websocket() {
    the_visitor_chooses_a_group_before_the_first_message(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitor_chooses_a_group_before_the_first_message_over_long_poll() {
    the_visitor_chooses_a_group_before_the_first_message(true).await;
}
