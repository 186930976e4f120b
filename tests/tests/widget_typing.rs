//! Typing and sneak peek in a real browser (issue 17, PROTOCOL.md 10.18):
//! what the visitor types in the widget reaches the agent's client core as
//! it is typed, and the widget shows "Bea is typing…" while the agent types,
//! over WebSocket and over long-poll (a page without WebSocket).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{Author, ConversationId};
use holdfast_server::{admin, store};
use holdfast_tests::browser::{Browser, ENTER};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::server::{PASSWORD, TestServer};

const T: Duration = Duration::from_secs(15);
const ROOT: &str = "document.querySelector('holdfast-widget').shadowRoot";

/// The demo site and its agent "barista" (Bea).
async fn demo_server() -> TestServer {
    TestServer::start_with(|cfg| {
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
    .await
}

async fn wait(b: &Browser, expr: &str) {
    b.wait(expr, T).await.unwrap_or_else(|e| panic!("{e:#}"));
}

async fn input(b: &Browser) -> String {
    b.element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap()
}

/// The next typing update of `conversation` for which `pred` holds.
async fn typing_where(
    a: &mut CoreAgent,
    conversation: ConversationId,
    pred: impl Fn(bool, Option<&str>) -> bool,
) -> (bool, Option<String>) {
    a.until("a typing signal", |u| match u {
        Update::Typing {
            conversation: c,
            typing,
            draft,
            ..
        } if *c == conversation && pred(*typing, draft.as_deref()) => {
            Some((*typing, draft.clone()))
        }
        _ => None,
    })
    .await
}

async fn typing_both_ways(long_poll: bool) {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = CoreAgent::start(core_agent::fast_config(
        &srv.agent_addr().to_string(),
        "barista",
        &dir.path().join("barista.sqlite3"),
        srv.running().fingerprint,
    ));
    bea.live().await;
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
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    let go = b
        .element(&format!("return {ROOT}.querySelector('.go')"))
        .await
        .unwrap();
    b.click(&go).await.unwrap();
    wait(&b, &format!("{ROOT}.querySelector('.st').hidden")).await;
    let field = input(&b).await;
    b.type_into(&field, &format!("Hello there{ENTER}"))
        .await
        .unwrap();
    let m = bea.visitor_message().await;
    let conv = m.conversation;

    // The visitor types: the agent sees that, and the draft as it grows.
    b.type_into(&field, "Do you ship to Shenzhen")
        .await
        .unwrap();
    let (_, draft) = typing_where(&mut bea, conv, |t, d| {
        t && d == Some("Do you ship to Shenzhen")
    })
    .await;
    assert_eq!(draft.as_deref(), Some("Do you ship to Shenzhen"));
    // Sent: the indicator stops, and the message is what arrives. The
    // widget's stop and its message are separate requests over long-poll
    // and may land in either order; the message ends the indicator too
    // (PROTOCOL.md 10.18, and the app clears it on one), and a stop that
    // lands after it is dropped as ending nothing.
    b.type_into(&field, &format!("?{ENTER}")).await.unwrap();
    let ended_by = bea
        .until("the stop or the message", |u| match u {
            Update::Typing {
                conversation: c,
                typing: false,
                ..
            } if *c == conv => Some(None),
            Update::Message(m)
                if m.conversation == conv && matches!(m.author, Author::Visitor { .. }) =>
            {
                Some(Some(m.body.clone()))
            }
            _ => None,
        })
        .await;
    let body = match ended_by {
        Some(body) => body,
        None => bea.visitor_message().await.body,
    };
    assert_eq!(body, "Do you ship to Shenzhen?");

    // The agent types: the widget says so, until the agent's message.
    bea.handle.typing(conv, true).unwrap();
    wait(
        &b,
        &format!(
            "!{ROOT}.querySelector('#hf-typing').hidden && \
             {ROOT}.querySelector('#hf-typing').textContent === 'Bea is typing…'"
        ),
    )
    .await;
    let png = b.screenshot().await.unwrap();
    if !long_poll && std::env::var("HOLDFAST_WRITE_SCREENSHOTS").as_deref() == Ok("1") {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/screenshots/widget-agent-typing.png");
        std::fs::write(&out, &png).unwrap();
    }
    bea.handle.send_message(conv, "We do.").await.unwrap();
    wait(&b, &format!("{ROOT}.querySelector('#hf-typing').hidden")).await;

    // And a stop on its own ends it too.
    bea.handle.typing(conv, true).unwrap();
    wait(&b, &format!("!{ROOT}.querySelector('#hf-typing').hidden")).await;
    bea.handle.typing(conv, false).unwrap();
    wait(&b, &format!("{ROOT}.querySelector('#hf-typing').hidden")).await;

    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_both_ways_in_the_widget_over_websocket() {
    typing_both_ways(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_shows_both_ways_in_the_widget_over_long_poll() {
    typing_both_ways(true).await;
}
