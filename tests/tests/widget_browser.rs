//! The visitor widget in a real browser: headless Chromium (WebDriver via
//! chromedriver, CDP through ChromeDriver) loads the demo page from a real
//! server, and a real agent client talks to it over the agent protocol.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use holdfast_client::DeliveryState;
use holdfast_protocol::agent::{
    Action, Author, ChatMessage, ClientMsg, ConversationState, Event, Outcome, ServerMsg,
    VisitorInfo,
};
use holdfast_protocol::visitor::{Sender, VisitorConvState, VisitorIn, VisitorOut};
use holdfast_server::config::ServerConfig;
use holdfast_server::{admin, store};
use holdfast_tests::browser::{self, Browser, ENTER};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::flows::{agent, run, wait_conv};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::{WsVisitor, new_id};
use serde_json::json;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(15);
/// The widget's shadow root, in page JavaScript.
const ROOT: &str = "document.querySelector('holdfast-widget').shadowRoot";
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// A real server whose data dir also holds the demo site (the one the demo
/// page's script tag names) and an agent "barista" on it.
async fn demo_server() -> TestServer {
    demo_server_with(|_| {}).await
}

/// [`demo_server`], with `tweak` applied to its configuration.
async fn demo_server_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(|cfg| {
        // The server serves the demo page only in demo mode.
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
        tweak(cfg);
    })
    .await
}

fn url(srv: &TestServer, path: &str) -> String {
    format!("http://{}{path}", srv.http())
}

/// A JavaScript string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn wait(b: &Browser, expr: &str) -> serde_json::Value {
    b.wait(expr, T).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The demo page at `path`, with its widget mounted.
async fn load(b: &Browser, srv: &TestServer, path: &str) {
    b.goto(&url(srv, path)).await.unwrap();
    wait(
        b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
}

/// Click the launcher like a user; the panel opens with focus in the input.
async fn open_widget(b: &Browser) {
    let go = b
        .element(&format!("return {ROOT}.querySelector('.go')"))
        .await
        .unwrap();
    b.click(&go).await.unwrap();
    wait(b, &format!("!{ROOT}.querySelector('.p').hidden")).await;
    wait(
        b,
        &format!("{ROOT}.activeElement && {ROOT}.activeElement.id === 'hf-in'"),
    )
    .await;
}

/// Connected: the status line (offline/connecting) is gone.
async fn wait_online(b: &Browser) {
    wait(b, &format!("{ROOT}.querySelector('.st').hidden")).await;
}

/// Type a message and press Enter, with real key events.
async fn say(b: &Browser, text: &str) {
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&input, &format!("{text}{ENTER}"))
        .await
        .unwrap();
}

/// JavaScript: how many message bubbles of `class` show exactly `text`.
fn count_js(class: &str, text: &str) -> String {
    format!(
        "Array.prototype.filter.call({ROOT}.querySelectorAll('.m.{class} .b'), \
         function (n) {{ return n.textContent === {}; }}).length",
        lit(text)
    )
}

/// Wait until a confirmed (not pending) bubble of `class` shows `text`.
async fn wait_shown(b: &Browser, class: &str, text: &str) {
    wait(
        b,
        &format!(
            "Array.prototype.some.call({ROOT}.querySelectorAll('.m.{class}:not(.wait) .b'), \
             function (n) {{ return n.textContent === {}; }})",
            lit(text)
        ),
    )
    .await;
}

fn visitor_message(m: &ServerMsg) -> Option<&ChatMessage> {
    match m {
        ServerMsg::Event {
            event: Event::Message(c),
            ..
        } if matches!(c.author, Author::Visitor { .. }) => Some(c),
        _ => None,
    }
}

async fn next_visitor_message(a: &mut RawAgent) -> ChatMessage {
    let m = a
        .recv_until(T, |m| visitor_message(m).is_some())
        .await
        .unwrap_or_else(|e| panic!("the agent got no visitor message: {e}"));
    visitor_message(&m).unwrap().clone()
}

/// Every visitor message the agent receives within `quiet` (there should be
/// none: used to prove nothing leaks out while offline or is sent twice).
async fn visitor_messages_within(a: &mut RawAgent, quiet: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + quiet;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match a.recv(left).await {
            Ok(Some(m)) => got.extend(visitor_message(&m).map(|c| c.body.clone())),
            Ok(None) => panic!("the server closed the agent's connection"),
            Err(_) => return got, // timed out: quiet
        }
    }
}

async fn visitor_where(a: &mut RawAgent, pred: impl Fn(&VisitorInfo) -> bool) -> VisitorInfo {
    a.recv_visitor(T, pred)
        .await
        .unwrap_or_else(|e| panic!("the agent never saw the expected visitor state: {e}"))
}

async fn reply(a: &mut RawAgent, conversation: u64, body: &str) {
    let o = run(
        a,
        Action::Send {
            conversation,
            body: body.into(),
            attachment: None,
        },
    )
    .await;
    assert!(
        matches!(o, Outcome::Done { .. }),
        "agent reply failed: {o:?}"
    );
}

/// The visitor's messages as the server stored them, in commit order.
fn stored_visitor_bodies(srv: &TestServer, visitor: &str) -> Vec<String> {
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let (_, msgs) = store::reads::visitor_snapshot(&conn, visitor).unwrap();
    msgs.into_iter()
        .filter(|m| m.from == Sender::Visitor)
        .map(|m| m.body)
        .collect()
}

fn gauge(srv: &TestServer, name: &str) -> i64 {
    let m = &srv.running().ctx.metrics;
    match name {
        "ws" => m.visitor_ws_connections.get(),
        _ => m.visitor_long_polls.get(),
    }
}

/// 1. The demo page loads, the agent sees the visitor and its trail (with
///    the identity queued before the script loaded), a message typed in the
///    widget reaches the agent and the agent's reply appears in the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_chats_with_a_real_agent() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;

    // Single-page navigation shows up in the trail, live.
    let coffee = b
        .element("return document.querySelector('a[data-route=coffee]')")
        .await
        .unwrap();
    b.click(&coffee).await.unwrap();
    let info = visitor_where(&mut bea, |i| {
        i.name.as_deref() == Some("Demo shopper")
            && i.trail
                .last()
                .is_some_and(|p| p.url.ends_with("/demo?p=coffee"))
    })
    .await;
    let last = info.trail.last().unwrap();
    assert_eq!(last.title, "Coffee — Harbor & Pine");
    assert!(
        last.referrer
            .as_deref()
            .is_some_and(|r| r.ends_with("/demo")),
        "{last:?}"
    );
    assert!(
        info.trail.iter().any(|p| p.url.ends_with("/demo")),
        "{:?}",
        info.trail
    );
    assert!(
        info.attrs
            .contains(&("plan".to_string(), "Bean Club".to_string())),
        "{:?}",
        info.attrs
    );

    // The page's own "Ask a barista" button opens the chat: wired from
    // shop.js, since the demo's CSP refuses inline handlers.
    let ask = b
        .element("return document.getElementById('ask')")
        .await
        .unwrap();
    b.click(&ask).await.unwrap();
    wait(&b, &format!("!{ROOT}.querySelector('.p').hidden")).await;
    wait_online(&b).await;
    // The shop's heavy-handed CSS (dashed hot-pink textareas, uppercase
    // buttons) does not reach into the widget.
    let styles = b
        .js(
            &format!(
                "return [getComputedStyle({ROOT}.querySelector('#hf-in')).borderTopStyle, \
                 getComputedStyle({ROOT}.querySelector('.sb')).textTransform, \
                 getComputedStyle(document.querySelector('button')).textTransform];"
            ),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(styles, json!(["solid", "none", "uppercase"]));
    say(&b, "Hello from a real browser!").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Hello from a real browser!");
    assert_eq!(
        wait(&b, &format!("{ROOT}.querySelector('#hf-in').value === ''")).await,
        json!(true)
    );
    wait_shown(&b, "visitor", "Hello from a real browser!").await;

    reply(
        &mut bea,
        m.conversation,
        "Hi, I'm Bea. How can I help? 你好",
    )
    .await;
    wait_shown(&b, "agent", "Hi, I'm Bea. How can I help? 你好").await;
    // Each message once, in order, with the line saying who joined; the
    // header names the agent.
    let bodies = b
        .js(
            &format!(
                "return Array.prototype.map.call({ROOT}.querySelectorAll('.m .b'), \
                 function (n) {{ return n.textContent; }});"
            ),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(
        bodies,
        json!([
            "Hello from a real browser!",
            "Bea joined the chat",
            "Hi, I'm Bea. How can I help? 你好"
        ])
    );
    wait(
        &b,
        &format!("{ROOT}.querySelector('.sub').textContent.indexOf('Bea') >= 0"),
    )
    .await;

    // Esc closes the panel and gives focus back to the launcher.
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&input, "\u{E00C}").await.unwrap();
    wait(
        &b,
        &format!(
            "{ROOT}.querySelector('.p').hidden && {ROOT}.activeElement === {ROOT}.querySelector('.go')"
        ),
    )
    .await;

    // An agent message while the widget is closed opens it (an invitation),
    // without taking the focus away from where the visitor is.
    reply(&mut bea, m.conversation, "Anything else I can help with?").await;
    wait_shown(&b, "agent", "Anything else I can help with?").await;
    wait(
        &b,
        &format!(
            "!{ROOT}.querySelector('.p').hidden && {ROOT}.activeElement === {ROOT}.querySelector('.go')"
        ),
    )
    .await;
    b.quit().await;
    srv.stop().await;
}

/// The same conversation with the real agent client core (the library the
/// desktop app runs) on the other end: the visitor's message lands in its
/// local store, and its reply shows in the page and comes back as
/// delivered once the browser has acked it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_chats_with_the_agent_client_core() {
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
    load(&b, &srv, "/demo").await;
    let shopper = bea
        .visitor_where(|i| i.name.as_deref() == Some("Demo shopper"))
        .await;
    assert!(
        shopper.trail.iter().any(|p| p.url.ends_with("/demo")),
        "{:?}",
        shopper.trail
    );
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Do you ship to Shenzhen? 深圳").await;
    let m = bea.visitor_message().await;
    assert_eq!(m.body, "Do you ship to Shenzhen? 深圳");
    let id = bea
        .handle
        .send_message(m.conversation, "We do, in 5–7 days.")
        .await
        .unwrap();
    wait_shown(&b, "agent", "We do, in 5–7 days.").await;
    bea.state_of(id, DeliveryState::Delivered).await;
    // The "joined" system line sits between them; these are the people.
    let mut page = bea
        .handle
        .messages_page(m.conversation, None, 10_000)
        .unwrap();
    page.sort_by_key(|m| m.order);
    let said: Vec<String> = page
        .into_iter()
        .filter(|m| m.author != Author::System)
        .map(|m| m.body)
        .collect();
    assert_eq!(
        said,
        ["Do you ship to Shenzhen? 深圳", "We do, in 5–7 days."]
    );
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 2. Airplane mode: three messages typed offline survive a reload attempt
///    while still offline, and reach the agent exactly once each, in order,
///    when the network is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airplane_mode_messages_arrive_exactly_once_in_order() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    assert_eq!(gauge(&srv, "ws"), 1, "the widget should be on a WebSocket");

    b.set_offline(true).await.unwrap();
    wait(
        &b,
        &format!(
            "!{ROOT}.querySelector('.st').hidden && {ROOT}.querySelector('.st').textContent === {}",
            lit("Offline — will send when back")
        ),
    )
    .await;
    let sent = ["Offline one", "Offline two", "Offline three"];
    for s in sent {
        say(&b, s).await;
    }
    // All three are in the durable outbox (and shown as pending).
    wait(
        &b,
        "(JSON.parse(localStorage.getItem('holdfast:demo:outbox')) || []).length === 3",
    )
    .await;
    assert_eq!(
        wait(
            &b,
            &format!("{ROOT}.querySelectorAll('.m.visitor.wait').length")
        )
        .await,
        json!(3)
    );
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(500)).await,
        Vec::<String>::new(),
        "nothing may get through while offline"
    );
    assert_eq!(
        b.js(
            "return JSON.parse(localStorage.getItem('holdfast:demo:outbox')).length;",
            json!([])
        )
        .await
        .unwrap(),
        json!(3),
        "the outbox must hold all three until the server acks them"
    );

    // Reload while still offline: like a real browser, that fails and shows
    // the browser's own error page; the widget's page (and its JavaScript
    // state) is gone, only localStorage remains.
    let _reload_fails = b.refresh().await;
    wait(&b, "typeof window.Holdfast === 'undefined'").await;
    // Network back, and the visitor opens the page again.
    b.set_offline(false).await.unwrap();
    load(&b, &srv, "/demo").await;

    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next_visitor_message(&mut bea).await);
    }
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, sent, "the agent got these, in this order");
    for s in sent {
        wait_shown(&b, "visitor", s).await;
    }
    wait(&b, "localStorage.getItem('holdfast:demo:outbox') === null").await;

    // One more reload with nothing pending, then a round trip: nothing is
    // resent, and the page still shows each message exactly once.
    load(&b, &srv, "/demo").await;
    reply(&mut bea, got[0].conversation, "All three arrived.").await;
    wait_shown(&b, "agent", "All three arrived.").await;
    for s in sent {
        assert_eq!(wait(&b, &count_js("visitor", s)).await, json!(1), "{s}");
    }
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(300)).await,
        Vec::<String>::new(),
        "a message reached the agent twice"
    );
    let Author::Visitor { visitor } = &got[0].author else {
        unreachable!()
    };
    assert_eq!(stored_visitor_bodies(&srv, visitor), sent);
    b.quit().await;
    srv.stop().await;
}

/// 3. Without WebSocket in the page the same conversation runs over
///    long-poll; and with WebSocket present but refused by a proxy, the
///    widget falls back by itself. (Also: the Chinese UI by browser language.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fallback_without_or_with_blocked_websocket() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    let no_ws = b
        .on_new_document(
            "try { delete window.WebSocket; } catch (e) {} window.WebSocket = undefined; \
             Object.defineProperty(navigator, 'language', { get: function () { return 'zh-CN'; } });",
        )
        .await
        .unwrap();
    load(&b, &srv, "/demo").await;
    assert_eq!(
        b.js("return typeof WebSocket;", json!([])).await.unwrap(),
        json!("undefined")
    );
    // Chinese by browser language.
    assert_eq!(
        b.js(
            &format!("return {ROOT}.querySelector('.go').getAttribute('aria-label');"),
            json!([])
        )
        .await
        .unwrap(),
        json!("打开聊天")
    );
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Hello over long-poll").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Hello over long-poll");
    reply(&mut bea, m.conversation, "Long-poll reply").await;
    wait_shown(&b, "agent", "Long-poll reply").await;
    // Server side: a poll is held open and no WebSocket was ever made.
    let deadline = tokio::time::Instant::now() + T;
    while gauge(&srv, "lp") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no long-poll held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gauge(&srv, "ws"), 0, "a WebSocket was used");

    // WebSocket exists but a proxy in the way refuses the upgrade (as some
    // corporate proxies do): the widget falls back by itself.
    b.cdp(
        "Page.removeScriptToEvaluateOnNewDocument",
        json!({ "identifier": no_ws }),
    )
    .await
    .unwrap();
    let (proxy, refused) = no_websocket_proxy(srv.http()).await;
    b.goto(&format!("http://{proxy}/demo")).await.unwrap();
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    assert_eq!(
        b.js("return typeof WebSocket;", json!([])).await.unwrap(),
        json!("function")
    );
    open_widget(&b).await;
    wait_online(&b).await;
    assert!(
        refused.load(Ordering::SeqCst) >= 1,
        "the widget never tried WebSocket"
    );
    say(&b, "Still here, WebSocket blocked").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Still here, WebSocket blocked");
    reply(&mut bea, m.conversation, "Got it").await;
    wait_shown(&b, "agent", "Got it").await;
    assert_eq!(gauge(&srv, "ws"), 0, "a WebSocket got through");
    b.quit().await;
    srv.stop().await;
}

/// An HTTP proxy that forwards everything except WebSocket upgrades, which
/// it refuses with 403. Returns its address and the count of refusals.
async fn no_websocket_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if text.contains("upgrade: websocket") {
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, refused)
}

/// 4. Markup from either side is shown as text: no element is created and
///    no script runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_markup_shows_as_literal_text() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    b.on_new_document(
        "window.__alerts = 0; window.alert = window.confirm = window.prompt = \
         function () { window.__alerts++; };",
    )
    .await
    .unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, HOSTILE).await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, HOSTILE);
    reply(&mut bea, m.conversation, HOSTILE).await;
    wait_shown(&b, "agent", HOSTILE).await;
    wait_shown(&b, "visitor", HOSTILE).await;

    let check = b
        .js(
            &format!(
                "var r = {ROOT}; return {{ \
                   imgs: r.querySelectorAll('img').length + document.querySelectorAll('img').length, \
                   alerts: window.__alerts, \
                   html: r.querySelector('.m.agent .b').innerHTML }};"
            ),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(check["imgs"], json!(0), "{check}");
    assert_eq!(check["alerts"], json!(0), "{check}");
    assert_eq!(check["html"], json!("&lt;img src=x onerror=alert(1)&gt;"));
    assert_eq!(b.alert_text().await, None, "a dialog is open");
    // After a reload (messages from localStorage and the server) still text.
    load(&b, &srv, "/demo").await;
    wait_shown(&b, "agent", HOSTILE).await;
    assert_eq!(
        b.js(
            &format!("return {ROOT}.querySelectorAll('img').length + window.__alerts;"),
            json!([])
        )
        .await
        .unwrap(),
        json!(0)
    );
    b.quit().await;
    srv.stop().await;
}

/// Web and mail addresses in messages are links, both ways: http, https
/// and mailto only (a `javascript:` or `data:` address stays text), opened
/// in a new tab that cannot reach back (`noopener noreferrer`), and the
/// sentence's full stop is not part of the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_in_messages_are_clickable_and_only_safe_schemes_count() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    let mine = "my order page is https://shop.example/orders/7?x=1.";
    say(&b, mine).await;
    let m = next_visitor_message(&mut bea).await;
    let theirs = "See http://help.example/returns, write to mailto:care@shop.example \
                  but not javascript:alert(1) or data:text/html,hi \
                  (about https://en.wikipedia.org/wiki/Rust_(language)). \
                  订单见https://shop.example/o/8。谢谢";
    reply(&mut bea, m.conversation, theirs).await;
    wait_shown(&b, "agent", theirs).await;
    wait_shown(&b, "visitor", mine).await;
    let links = |class: &str| {
        format!(
            "return Array.prototype.map.call({ROOT}.querySelectorAll('.m.{class} .b a'), \
             function (a) {{ return [a.getAttribute('href'), a.target, a.rel, a.textContent]; }});"
        )
    };
    let agent_links = b.js(&links("agent"), json!([])).await.unwrap();
    assert_eq!(
        agent_links,
        json!([
            [
                "http://help.example/returns",
                "_blank",
                "noopener noreferrer",
                "http://help.example/returns"
            ],
            [
                "mailto:care@shop.example",
                "_blank",
                "noopener noreferrer",
                "mailto:care@shop.example"
            ],
            [
                "https://en.wikipedia.org/wiki/Rust_(language)",
                "_blank",
                "noopener noreferrer",
                "https://en.wikipedia.org/wiki/Rust_(language)"
            ],
            [
                "https://shop.example/o/8",
                "_blank",
                "noopener noreferrer",
                "https://shop.example/o/8"
            ]
        ])
    );
    let visitor_links = b.js(&links("visitor"), json!([])).await.unwrap();
    assert_eq!(
        visitor_links,
        json!([[
            "https://shop.example/orders/7?x=1",
            "_blank",
            "noopener noreferrer",
            "https://shop.example/orders/7?x=1"
        ]])
    );
    // The text around the links is all still there, as text.
    let shown = b
        .js(
            &format!("return {ROOT}.querySelector('.m.agent .b').textContent;"),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(theirs));
    b.quit().await;
    srv.stop().await;
}

/// Outside the site's business hours the widget offers the
/// leave-a-message form, though an agent is signed in; when the hours
/// change, it offers the chat again without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_business_hours_the_widget_offers_the_message_form() {
    let srv = demo_server().await;
    let _bea = agent(&srv, "barista").await;
    // Today in Shanghai (UTC+8 all year) is a holiday there.
    let holiday = holdfast_tests::date_at(store::now_ms(), 8 * 3_600_000);
    let set = |hours: Option<(&str, &str, &str)>| {
        let conn = store::open_connection(srv.dir.path()).unwrap();
        admin::set_site_hours(&conn, "demo", hours).unwrap();
    };
    set(Some(("Asia/Shanghai", "daily 00:00-24:00", &holiday)));
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    let go = b
        .element(&format!("return {ROOT}.querySelector('.go')"))
        .await
        .unwrap();
    b.click(&go).await.unwrap();
    let form = |shown: bool| {
        format!(
            "{ROOT}.querySelector('.lv').hidden === {} && {ROOT}.querySelector('.cp').hidden === {}",
            !shown, shown
        )
    };
    wait(&b, &form(true)).await;
    // The message form has the focus, as when no agent is online.
    wait(
        &b,
        &format!("{ROOT}.activeElement && {ROOT}.activeElement.id === 'hf-lm'"),
    )
    .await;
    set(None);
    wait(&b, &form(false)).await;
    b.quit().await;
    srv.stop().await;
}

/// A waiting visitor sees its place in line and the wait, updated as the
/// queue moves (PROTOCOL.md 10.14). The site's history holds three chats
/// that each waited 40 s at the front of the line, so the estimate is
/// 40 s a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_visitor_sees_its_place_in_line_as_the_queue_moves() {
    let srv = demo_server_with(|cfg| {
        let conn = store::open_connection(&cfg.data_dir).unwrap();
        admin::add_agent(
            &conn,
            "demo",
            "solo",
            "Sol",
            PASSWORD,
            1,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
        let now = store::now_ms();
        for i in 0..3i64 {
            let queued = now - 600_000 + i * 60_000;
            conn.execute(
                "INSERT INTO conversations (site_id, visitor_id, state, opened_ms, updated_ms, \
                 queued_ms, queued_place, taken_ms) \
                 VALUES ((SELECT id FROM sites WHERE key = 'demo'), ?1, 2, ?2, ?2, ?2, 1, ?3)",
                rusqlite::params![format!("past-{i}"), queued, queued + 40_000],
            )
            .unwrap();
        }
    })
    .await;
    let mut sol = agent(&srv, "solo").await;
    let mut served = WsVisitor::connect(srv.http(), "demo").await.unwrap();
    let VisitorOut::Ack {
        conversation: c1, ..
    } = served.say_acked("served first").await.unwrap()
    else {
        panic!("not acked")
    };
    let mut ahead = Vec::new();
    for i in 0..2 {
        let mut v = WsVisitor::connect(srv.http(), "demo").await.unwrap();
        v.say_acked(&format!("waiting {i}")).await.unwrap();
        ahead.push(v);
    }
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Is anyone there? My order never arrived.").await;
    let sub = |want: &str| format!("{ROOT}.querySelector('.sub').textContent === {}", lit(want));
    wait(&b, &sub("You are number 3 in line, about 2 minutes")).await;
    b.js(
        "document.activeElement && document.activeElement.blur();",
        json!([]),
    )
    .await
    .unwrap();
    let png = b.screenshot().await.unwrap();
    if std::env::var("HOLDFAST_WRITE_SCREENSHOTS").as_deref() == Ok("1") {
        let out =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots/widget-queue.png");
        std::fs::write(&out, &png).unwrap();
    }

    // Someone ahead gives up: one place up, live.
    let mut first = ahead.remove(0);
    first
        .send_json(&VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    wait(&b, &sub("You are number 2 in line, about 2 minutes")).await;
    // Sol finishes a chat and takes the next one: next in line.
    let o = run(&mut sol, Action::Close { conversation: c1 }).await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    wait(&b, &sub("You are number 1 in line, less than a minute")).await;
    b.quit().await;
    srv.stop().await;
}

/// 5. A screenshot of the demo page with the widget open (written to
///    assets/screenshots/ with HOLDFAST_WRITE_SCREENSHOTS=1), and the panel
///    fitting a 360 px wide phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshot_of_the_demo_with_the_widget_open() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Hi! Which roast would you suggest for a V60?").await;
    let m = next_visitor_message(&mut bea).await;
    reply(
        &mut bea,
        m.conversation,
        "Try the Ethiopia Guji: bright and floral in a V60. 15 g to 250 ml, medium-fine.",
    )
    .await;
    wait_shown(
        &b,
        "agent",
        "Try the Ethiopia Guji: bright and floral in a V60. 15 g to 250 ml, medium-fine.",
    )
    .await;
    // No caret or focus ring in the picture.
    b.js(
        "document.activeElement && document.activeElement.blur();",
        json!([]),
    )
    .await
    .unwrap();

    let png = b.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w >= 1000 && h >= 600, "{w}x{h}");
    // Not blank: decode it in the browser and count distinct colours.
    let shot = base64::engine::general_purpose::STANDARD.encode(&png);
    let colours = b
        .cmd(
            "POST",
            "/execute/async",
            Some(json!({
                "script": "var done = arguments[1], img = new Image();
                    img.onload = function () {
                      var c = document.createElement('canvas');
                      c.width = img.width; c.height = img.height;
                      var g = c.getContext('2d'); g.drawImage(img, 0, 0);
                      var d = g.getImageData(0, 0, c.width, c.height).data, seen = {}, n = 0;
                      for (var i = 0; i < d.length; i += 4 * 97) {
                        var k = d[i] + ',' + d[i + 1] + ',' + d[i + 2];
                        if (!seen[k]) { seen[k] = 1; n++; }
                      }
                      done(n);
                    };
                    img.onerror = function () { done(-1); };
                    img.src = 'data:image/png;base64,' + arguments[0];",
                "args": [shot],
            })),
        )
        .await
        .unwrap();
    assert!(
        colours.as_i64().unwrap() > 50,
        "blank screenshot? {colours}"
    );
    if std::env::var("HOLDFAST_WRITE_SCREENSHOTS").as_deref() == Ok("1") {
        let out =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots/widget-demo.png");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        std::fs::write(&out, &png).unwrap();
    }

    // A 360 px phone: the panel fills the screen and stays usable.
    b.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": true }),
    )
    .await
    .unwrap();
    let fits = wait(
        &b,
        &format!(
            "(function () {{ var p = {ROOT}.querySelector('.p').getBoundingClientRect(), \
               s = {ROOT}.querySelector('.sb').getBoundingClientRect(); \
               return window.innerWidth === 360 && p.left >= 0 && p.right <= 360 && p.width >= 340 \
                 && s.right <= 360 && s.bottom <= window.innerHeight; }})()"
        ),
    )
    .await;
    assert_eq!(fits, json!(true));
    b.quit().await;
    srv.stop().await;
}

/// 6. Without Shadow DOM the widget isolates itself in an iframe; with no
///    agent online it offers the "leave a message" form (message + email).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iframe_fallback_and_leave_a_message_when_no_agent_is_online() {
    let srv = demo_server().await;
    let b = Browser::start().await.unwrap();
    b.on_new_document("delete Element.prototype.attachShadow;")
        .await
        .unwrap();
    b.goto(&url(&srv, "/demo")).await.unwrap();
    let frame = "document.querySelector('iframe[title=\"Chat with us\"]')";
    wait(
        &b,
        &format!("!!({frame} && {frame}.contentDocument.querySelector('.go'))"),
    )
    .await;
    assert_eq!(
        b.js(
            "return document.querySelectorAll('holdfast-widget').length;",
            json!([])
        )
        .await
        .unwrap(),
        json!(0)
    );
    let el = b.element(&format!("return {frame};")).await.unwrap();
    b.cmd(
        "POST",
        "/frame",
        Some(json!({ "id": { browser::ELEMENT: el } })),
    )
    .await
    .unwrap();
    let go = b
        .element("return document.querySelector('.go');")
        .await
        .unwrap();
    b.click(&go).await.unwrap();
    // No agent online: the form replaces the chat composer, focused.
    wait(
        &b,
        "!document.querySelector('.lv').hidden && document.querySelector('.cp').hidden \
         && document.activeElement.id === 'hf-lm' \
         && getComputedStyle(document.activeElement).borderTopStyle === 'solid'",
    )
    .await;
    let body = "Please call me back about a bulk order.";
    let msg = b
        .element("return document.querySelector('#hf-lm');")
        .await
        .unwrap();
    b.type_into(&msg, body).await.unwrap();
    let email = b
        .element("return document.querySelector('#hf-le');")
        .await
        .unwrap();
    b.type_into(&email, "sam@example.com").await.unwrap();
    let submit = b
        .element("return document.querySelector('.lv button');")
        .await
        .unwrap();
    b.click(&submit).await.unwrap();
    wait(
        &b,
        &format!(
            "Array.prototype.some.call(document.querySelectorAll('.m.visitor:not(.wait) .b'), \
             function (n) {{ return n.textContent === {}; }})",
            lit(body)
        ),
    )
    .await;
    wait(
        &b,
        "document.querySelector('.lv p').textContent.indexOf('Thanks') === 0",
    )
    .await;
    b.cmd("POST", "/frame/parent", None).await.unwrap();

    // The server has it as a left message, with the email.
    let visitor = wait(
        &b,
        "JSON.parse(localStorage.getItem('holdfast:demo:log') || '{}').visitor",
    )
    .await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let (conv, msgs) = store::reads::visitor_snapshot(&conn, visitor.as_str().unwrap()).unwrap();
    let conv = conv.expect("a conversation");
    assert_eq!(conv.state, VisitorConvState::LeftMessage);
    assert_eq!(
        msgs.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        [body]
    );
    let info = store::reads::conversation(&conn, conv.id).unwrap().unwrap();
    assert_eq!(info.contact_email.as_deref(), Some("sam@example.com"));
    b.quit().await;
    srv.stop().await;
}

/// 7. Two tabs of one visitor both show the conversation; a message typed
///    in either reaches the agent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_share_one_conversation_and_send_nothing_twice() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    let first = b.cmd("GET", "/window", None).await.unwrap();
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "From tab one").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "From tab one");

    let second = b
        .cmd("POST", "/window/new", Some(json!({ "type": "tab" })))
        .await
        .unwrap();
    b.cmd(
        "POST",
        "/window",
        Some(json!({ "handle": second["handle"] })),
    )
    .await
    .unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    wait_shown(&b, "visitor", "From tab one").await;
    say(&b, "From tab two").await;
    let m2 = next_visitor_message(&mut bea).await;
    assert_eq!(m2.body, "From tab two");
    assert_eq!(
        m2.conversation, m.conversation,
        "one visitor, one conversation"
    );
    reply(&mut bea, m.conversation, "Hello, both tabs").await;
    wait_shown(&b, "agent", "Hello, both tabs").await;
    wait_shown(&b, "visitor", "From tab two").await;

    b.cmd("POST", "/window", Some(json!({ "handle": first })))
        .await
        .unwrap();
    wait_shown(&b, "agent", "Hello, both tabs").await;
    wait_shown(&b, "visitor", "From tab two").await;
    for (class, text) in [
        ("visitor", "From tab one"),
        ("visitor", "From tab two"),
        ("agent", "Hello, both tabs"),
    ] {
        assert_eq!(wait(&b, &count_js(class, text)).await, json!(1), "{text}");
    }
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(300)).await,
        Vec::<String>::new(),
        "a message reached the agent twice"
    );
    let Author::Visitor { visitor } = &m.author else {
        unreachable!()
    };
    assert_eq!(
        stored_visitor_bodies(&srv, visitor),
        ["From tab one", "From tab two"]
    );
    b.quit().await;
    srv.stop().await;
}

/// 8. A pulled cable (bytes vanish, no browser `offline` event): the
///    application heartbeat notices the dead link, and a message typed into
///    it is resent after the network heals and reaches the agent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_notices_a_pulled_cable_and_resends_once() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let proxy = Proxy::start(srv.http()).await;
    let b = Browser::start().await.unwrap();
    b.goto(&format!("http://{}/demo", proxy.addr))
        .await
        .unwrap();
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    open_widget(&b).await;
    wait_online(&b).await;

    proxy.blackhole(true);
    proxy.refuse_new(true);
    // Typed into the dead link: the WebSocket accepts it, the cable eats it.
    say(&b, "Typed as the cable was pulled").await;
    wait(
        &b,
        &format!(
            "navigator.onLine && {ROOT}.querySelector('.st').textContent === {}",
            lit("Offline — will send when back")
        ),
    )
    .await;
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(300)).await,
        Vec::<String>::new()
    );
    proxy.heal();
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Typed as the cable was pulled");
    wait_shown(&b, "visitor", "Typed as the cable was pulled").await;
    reply(&mut bea, m.conversation, "Welcome back").await;
    wait_shown(&b, "agent", "Welcome back").await;
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(300)).await,
        Vec::<String>::new(),
        "a message reached the agent twice"
    );
    let Author::Visitor { visitor } = &m.author else {
        unreachable!()
    };
    assert_eq!(
        stored_visitor_bodies(&srv, visitor),
        ["Typed as the cable was pulled"]
    );
    b.quit().await;
    proxy.stop();
    srv.stop().await;
}

/// The one tag on a page of another origin (`localhost` embedding a widget
/// from `127.0.0.1`), as a real shop embeds `chat.example.com/widget.js`.
async fn cross_origin_conversation(transport: &str) {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    let port = srv.http().port();
    b.goto(&format!("http://localhost:{port}/healthz"))
        .await
        .unwrap();
    b.js(
        "var s = document.createElement('script'); s.async = true; s.src = arguments[0]; \
         s.setAttribute('data-site', 'demo'); s.setAttribute('data-transport', arguments[1]); \
         document.body.appendChild(s);",
        json!([format!("http://127.0.0.1:{port}/widget.js"), transport]),
    )
    .await
    .unwrap();
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Hello from another origin").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Hello from another origin");
    reply(&mut bea, m.conversation, "Hello back").await;
    wait_shown(&b, "agent", "Hello back").await;
    assert_eq!(
        gauge(&srv, "ws"),
        i64::from(transport == "websocket"),
        "transport"
    );
    b.quit().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_embedding_over_websocket() {
    cross_origin_conversation("websocket").await;
}

/// Long-poll from another origin needs CORS headers (a JSON POST even
/// needs a preflight): without them the browser hides every response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_embedding_over_long_poll() {
    cross_origin_conversation("longpoll").await;
}

/// What a widget tried, as the server's side of a proxy saw it.
#[derive(Debug, Default)]
struct Attempts {
    websockets: AtomicU64,
    long_poll_posts: AtomicU64,
    /// The head (request line and headers) of every request, in order.
    heads: std::sync::Mutex<Vec<String>>,
    /// Close each WebSocket right after the server's first frame.
    cut_websockets: AtomicBool,
}

impl Attempts {
    /// Each WebSocket and each long-poll POST starts with a hello when the
    /// widget has never been welcomed.
    fn hellos(&self) -> u64 {
        self.websockets.load(Ordering::SeqCst) + self.long_poll_posts.load(Ordering::SeqCst)
    }
}

/// A pass-through HTTP proxy that counts WebSocket upgrades and long-poll
/// POSTs. Plain requests are forced to `Connection: close`, because only
/// the first request on a connection is looked at: one request per
/// connection means none goes uncounted.
async fn counting_proxy(target: SocketAddr) -> (SocketAddr, Arc<Attempts>) {
    http_proxy(target, false).await
}

/// [`counting_proxy`], and with `cut_websockets` (also later, through
/// [`Attempts::cut_websockets`]) every WebSocket is closed right after the
/// server's first frame (its `welcome`), as a proxy that cannot pass what
/// follows would.
async fn http_proxy(target: SocketAddr, cut_websockets: bool) -> (SocketAddr, Arc<Attempts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Attempts::default());
    seen.cut_websockets.store(cut_websockets, Ordering::SeqCst);
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                count.heads.lock().unwrap().push(head.clone());
                let lower = head.to_ascii_lowercase();
                let upgrade = lower.contains("upgrade: websocket");
                if upgrade {
                    count.websockets.fetch_add(1, Ordering::SeqCst);
                } else if lower.starts_with("post /v1/visitor/lp") {
                    count.long_poll_posts.fetch_add(1, Ordering::SeqCst);
                }
                let mut out = Vec::new();
                if upgrade {
                    out.extend_from_slice(&buf);
                } else {
                    for line in head.split("\r\n") {
                        let l = line.to_ascii_lowercase();
                        if !l.starts_with("connection:") && !l.starts_with("keep-alive:") {
                            out.extend_from_slice(line.as_bytes());
                            out.extend_from_slice(b"\r\n");
                        }
                    }
                    out.extend_from_slice(b"Connection: close\r\n\r\n");
                    out.extend_from_slice(&buf[end + 4..]);
                }
                let Ok(mut server) = TcpStream::connect(target).await else {
                    return;
                };
                if server.write_all(&out).await.is_err() {
                    return;
                }
                if upgrade && count.cut_websockets.load(Ordering::SeqCst) {
                    cut_after_first_frame(client, server).await;
                } else {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, seen)
}

/// Relay a WebSocket until the server's upgrade answer and its first frame
/// have reached the client, then close both sides.
async fn cut_after_first_frame(client: TcpStream, server: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
    let (mut got, mut sent) = (Vec::new(), 0);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match sr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        got.extend_from_slice(&chunk[..n]);
        // Pass on what arrives (the browser sends its hello only after
        // the 101), up to the end of the first frame.
        let end = head_and_frame(&got);
        let upto = end.unwrap_or(got.len());
        if cw.write_all(&got[sent..upto]).await.is_err() || end.is_some() {
            break;
        }
        sent = upto;
    }
    up.abort();
    let _ = cw.shutdown().await;
}

/// The length of an HTTP response head plus the WebSocket frame after it,
/// once `b` holds both.
fn head_and_frame(b: &[u8]) -> Option<usize> {
    let head = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let f = b.get(head..)?;
    let (b1, mut at) = (*f.get(1)?, 2usize);
    let len = match b1 & 0x7f {
        126 => {
            at += 2;
            u64::from(u16::from_be_bytes(f.get(2..4)?.try_into().ok()?))
        }
        127 => {
            at += 8;
            u64::from_be_bytes(f.get(2..10)?.try_into().ok()?)
        }
        n => u64::from(n),
    };
    if b1 & 0x80 != 0 {
        at += 4; // masked (servers do not mask, but be exact)
    }
    let total = at + usize::try_from(len).ok()?;
    (f.len() >= total).then_some(head + total)
}

/// Put the one tag (with these `data-` attributes) on a plain page of
/// `origin`, with `console.error` recorded in `window.__errors`. The panel
/// starts closed, whatever an earlier page of the tab left open.
async fn embed(b: &Browser, origin: &str, attrs: &[(&str, &str)]) {
    embed_queued(b, origin, attrs, json!([])).await;
}

/// [`embed`], with `queue` (calls such as `["identify", {...}]`) waiting in
/// `window.Holdfast` before the script loads, as a site queues them.
async fn embed_queued(b: &Browser, origin: &str, attrs: &[(&str, &str)], queue: serde_json::Value) {
    b.goto(&format!("{origin}/healthz")).await.unwrap();
    let attrs: serde_json::Map<String, serde_json::Value> = attrs
        .iter()
        .map(|(k, v)| (format!("data-{k}"), json!(v)))
        .collect();
    b.js(
        "sessionStorage.clear(); \
         window.__errors = []; var orig = console.error; \
         console.error = function () { \
           window.__errors.push(Array.prototype.join.call(arguments, ' ')); \
           return orig.apply(console, arguments); }; \
         window.Holdfast = arguments[2]; \
         var s = document.createElement('script'); s.async = true; s.src = arguments[0]; \
         for (var k in arguments[1]) s.setAttribute(k, arguments[1][k]); \
         document.body.appendChild(s);",
        json!([format!("{origin}/widget.js"), attrs, queue]),
    )
    .await
    .unwrap();
}

/// The server refuses the widget's hello for good (`expect` is in its
/// reason): the widget logs that once, takes itself off the page and does
/// not try again.
async fn refused_for_good(
    b: &Browser,
    srv: &TestServer,
    site: &str,
    transport: &str,
    expect: &str,
) {
    let (proxy, seen) = counting_proxy(srv.http()).await;
    embed(
        b,
        &format!("http://{proxy}"),
        &[("site", site), ("transport", transport)],
    )
    .await;
    wait(b, "window.__errors.length > 0").await;
    // Long enough for several reconnects at the widget's backoff, and for
    // the "offline" notice a fresh page shows after 3 s.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let page = b
        .js(
            "return { host: document.querySelectorAll('holdfast-widget').length, \
               frames: document.querySelectorAll('iframe').length, \
               errors: window.__errors.filter(function (e) { return /^Holdfast/.test(e); }) };",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(
        page["host"],
        json!(0),
        "{transport}: the widget stayed: {page}"
    );
    assert_eq!(page["frames"], json!(0), "{transport}: {page}");
    let errors = page["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{transport}: one error, once: {page}");
    let error = errors[0].as_str().unwrap();
    assert!(error.contains(expect), "{transport}: {error}");
    let hellos = seen.hellos();
    assert!(
        (1..=2).contains(&hellos),
        "{transport}: {hellos} hellos reached the server ({seen:?})"
    );
}

/// 9. A script tag with a site key the server does not know: no widget,
///    one console error naming the key, no reconnect storm (on every
///    transport, and `auto` does not "fall back" to long-poll and retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_site_key_shows_no_widget_and_logs_once() {
    let srv = demo_server().await;
    let b = Browser::start().await.unwrap();
    for transport in ["websocket", "longpoll", "auto"] {
        refused_for_good(&b, &srv, "nosuch", transport, "\"nosuch\"").await;
    }
    b.quit().await;
    srv.stop().await;
}

/// 10. A site with an origin allow-list that leaves out the page's origin:
///     no widget, one console error, no reconnect storm. With the origin
///     listed, the same tag chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_not_allowed_shows_no_widget() {
    let srv = demo_server().await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    admin::set_site_origins(&conn, "demo", &["https://shop.example".to_string()]).unwrap();
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    for transport in ["websocket", "longpoll", "auto"] {
        refused_for_good(&b, &srv, "demo", transport, "does not allow its chat").await;
    }

    let page = format!("http://{}", srv.http());
    admin::set_site_origins(
        &conn,
        "demo",
        &["https://shop.example".to_string(), page.clone()],
    )
    .unwrap();
    for transport in ["websocket", "longpoll"] {
        embed(&b, &page, &[("site", "demo"), ("transport", transport)]).await;
        wait(
            &b,
            &format!(
                "!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"
            ),
        )
        .await;
        open_widget(&b).await;
        wait_online(&b).await;
        let text = format!("Allowed now, over {transport}");
        say(&b, &text).await;
        let m = next_visitor_message(&mut bea).await;
        assert_eq!(m.body, text);
        reply(&mut bea, m.conversation, &format!("Welcome, {transport}")).await;
        wait_shown(&b, "agent", &format!("Welcome, {transport}")).await;
        assert_eq!(
            b.js("return window.__errors.length;", json!([]))
                .await
                .unwrap(),
            json!(0)
        );
    }
    b.quit().await;
    srv.stop().await;
}

/// Every bubble's text in the widget's log, in the order shown.
async fn shown(b: &Browser, class: &str) -> Vec<String> {
    let v = b
        .js(
            &format!(
                "return Array.prototype.map.call({ROOT}.querySelectorAll('.m.{class} .b'), \
                 function (n) {{ return n.textContent; }});"
            ),
            json!([]),
        )
        .await
        .unwrap();
    serde_json::from_value(v).unwrap()
}

/// Twelve numbered messages typed as fast as WebDriver types, into a
/// server that takes one a second after a burst of two.
async fn typed_order_under_a_rate_limit(long_poll: bool) {
    let srv = demo_server_with(|cfg| {
        cfg.visitor.msg_rate = 1.0;
        cfg.visitor.msg_burst = 2.0;
    })
    .await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    if long_poll {
        b.on_new_document(
            "try { delete window.WebSocket; } catch (e) {} window.WebSocket = undefined;",
        )
        .await
        .unwrap();
    }
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    let typed: Vec<String> = (1..=12).map(|i| format!("Numbered {i:02}")).collect();
    let started = tokio::time::Instant::now();
    for t in &typed {
        say(&b, t).await;
    }
    let mut got = Vec::new();
    for _ in 0..typed.len() {
        got.push(next_visitor_message(&mut bea).await);
    }
    // Ten messages over the burst at one a second: the limit was hit.
    assert!(
        started.elapsed() > Duration::from_secs(7),
        "no rate limit was hit ({:?})",
        started.elapsed()
    );
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, typed, "the agent got these, in this order");
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(500)).await,
        Vec::<String>::new(),
        "a message reached the agent twice"
    );
    let Author::Visitor { visitor } = &got[0].author else {
        unreachable!()
    };
    assert_eq!(stored_visitor_bodies(&srv, visitor), typed);
    for t in &typed {
        wait_shown(&b, "visitor", t).await;
    }
    assert_eq!(shown(&b, "visitor").await, typed);
    wait(&b, "localStorage.getItem('holdfast:demo:outbox') === null").await;
    assert_eq!(
        gauge(&srv, "ws"),
        i64::from(!long_poll),
        "the wrong transport"
    );
    b.quit().await;
    srv.stop().await;
}

/// 11. Under a tight per-connection send limit the widget sends one
///     message at a time and waits as told, so the agent gets every
///     message once, in the order typed, over both transports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_messages_arrive_in_typed_order() {
    typed_order_under_a_rate_limit(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_messages_arrive_in_typed_order_over_long_poll() {
    typed_order_under_a_rate_limit(true).await;
}

/// JavaScript: the header's status line says exactly `text`.
fn sub_is(text: &str) -> String {
    format!("{ROOT}.querySelector('.sub').textContent === {}", lit(text))
}

/// 12. A transfer and an agent leaving, as the visitor sees them: system
///     lines in the visitor's language, the header naming whoever serves
///     the chat now, and never the note that came with the transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_lines_follow_a_transfer() {
    let srv = demo_server_with(|cfg| {
        let conn = store::open_connection(&cfg.data_dir).unwrap();
        admin::add_agent(
            &conn,
            "demo",
            "brewer",
            "Bob",
            PASSWORD,
            5,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
    })
    .await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let id_of = |name: &str| {
        store::reads::agent_by_username(&conn, name)
            .unwrap()
            .unwrap()
            .id
    };
    let (bea_id, bob_id) = (id_of("barista"), id_of("brewer"));
    // Only Bea is online when the chat starts, so it is hers.
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Can someone help with a wholesale order?").await;
    let m = next_visitor_message(&mut bea).await;
    wait_shown(&b, "system", "Bea joined the chat").await;
    wait(&b, &sub_is("You are chatting with Bea")).await;

    let mut bob = agent(&srv, "brewer").await;
    let o = run(
        &mut bea,
        Action::Transfer {
            conversation: m.conversation,
            from: Some(bea_id),
            to: bob_id,
            note: Some("vip".into()),
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }), "transfer failed: {o:?}");
    wait_shown(&b, "system", "Bea transferred the chat to Bob").await;
    wait(&b, &sub_is("You are chatting with Bob")).await;
    reply(&mut bob, m.conversation, "Bob here, happy to help.").await;
    wait_shown(&b, "agent", "Bob here, happy to help.").await;

    // Bob signs out: the chat goes back to the queue, and to Bea, the one
    // agent left.
    bob.send(&ClientMsg::SignOut).await.unwrap();
    let requeued =
        "Bob had to leave — you are back in the queue; the next available agent will reply";
    wait_shown(&b, "system", requeued).await;
    wait(&b, &sub_is("You are chatting with Bea")).await;
    assert_eq!(
        shown(&b, "system").await,
        [
            "Bea joined the chat",
            "Bea transferred the chat to Bob",
            requeued,
            "Bea joined the chat"
        ]
    );
    let all = b
        .js(
            &format!("return {ROOT}.querySelector('.hf').textContent;"),
            json!([]),
        )
        .await
        .unwrap();
    assert!(
        !all.as_str().unwrap().contains("vip"),
        "the agents' note reached the visitor: {all}"
    );

    // The same visitor in Chinese: the stored lines render in Chinese too.
    let page = format!("http://{}", srv.http());
    embed(&b, &page, &[("site", "demo"), ("lang", "zh-CN")]).await;
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    open_widget(&b).await;
    wait_shown(&b, "system", "Bea 将对话转给了 Bob").await;
    wait(&b, &sub_is("为您服务：Bea")).await;
    b.quit().await;
    srv.stop().await;
}

/// 13. The visitor ends the chat from the header, confirming inline; the
///     agent sees it closed by the visitor, and the next message starts a
///     new chat. An end typed offline waits in the outbox across a failed
///     reload and still ends the chat once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_can_end_the_chat() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    b.on_new_document(
        "window.__dialogs = 0; window.alert = window.confirm = window.prompt = \
         function () { window.__dialogs++; return true; };",
    )
    .await
    .unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    let end = format!("{ROOT}.querySelector('.end')");
    let ask = format!("{ROOT}.querySelector('.ask')");
    assert_eq!(
        b.js(&format!("return {end}.hidden;"), json!([]))
            .await
            .unwrap(),
        json!(true),
        "End chat shows with no chat"
    );
    say(&b, "Just browsing, thanks").await;
    let m = next_visitor_message(&mut bea).await;
    wait(&b, &format!("!{end}.hidden")).await;
    assert_eq!(
        b.js(
            &format!("return [{end}.textContent, {end}.getAttribute('aria-label')];"),
            json!([])
        )
        .await
        .unwrap(),
        json!(["End chat", "End this chat"])
    );

    // Asked, then kept: nothing happens.
    let click = |sel: &'static str| {
        let b = &b;
        async move {
            let e = b
                .element(&format!("return {ROOT}.querySelector('{sel}')"))
                .await
                .unwrap();
            b.click(&e).await.unwrap();
        }
    };
    click(".end").await;
    wait(
        &b,
        &format!("!{ask}.hidden && {ROOT}.activeElement === {ROOT}.querySelector('.yes')"),
    )
    .await;
    click(".no").await;
    wait(&b, &format!("{ask}.hidden && !{end}.hidden")).await;
    // Asked, then confirmed.
    click(".end").await;
    click(".yes").await;
    bea.recv_until(T, |x| {
        matches!(x, ServerMsg::Event { event: Event::Message(c), .. } if c.author == Author::System
            && c.conversation == m.conversation
            && serde_json::from_str::<serde_json::Value>(&c.body).is_ok_and(|v| v["kind"] == "closed_by_visitor"))
    })
    .await
    .unwrap_or_else(|e| panic!("the agent never saw the visitor end the chat: {e}"));
    let closed = wait_conv(&mut bea, |c| c.id == m.conversation).await;
    assert_eq!(closed.state, ConversationState::Closed, "{closed:?}");
    wait_shown(&b, "system", "You ended the chat").await;
    wait(&b, &sub_is("This chat has ended")).await;
    wait(&b, &format!("{end}.hidden")).await;
    assert_eq!(
        b.js("return window.__dialogs;", json!([])).await.unwrap(),
        json!(0),
        "a browser dialog was used"
    );
    assert_eq!(
        shown(&b, "visitor").await,
        ["Just browsing, thanks"],
        "ending is not a bubble"
    );

    // The composer still works: the next message is a new chat.
    say(&b, "Actually, one more question").await;
    let m2 = next_visitor_message(&mut bea).await;
    assert_eq!(m2.body, "Actually, one more question");
    assert_ne!(
        m2.conversation, m.conversation,
        "a closed chat was reopened"
    );
    wait(&b, &sub_is("You are chatting with Bea")).await;
    wait(&b, &format!("!{end}.hidden")).await;

    // Ended while offline: the end waits in the outbox, through a reload
    // that fails, and goes out once the network is back.
    b.set_offline(true).await.unwrap();
    wait(
        &b,
        &format!(
            "{ROOT}.querySelector('.st').textContent === {}",
            lit("Offline — will send when back")
        ),
    )
    .await;
    click(".end").await;
    click(".yes").await;
    wait(
        &b,
        "(JSON.parse(localStorage.getItem('holdfast:demo:outbox')) || [])\
         .filter(function (e) { return e.t === 'end_chat'; }).length === 1",
    )
    .await;
    wait(&b, &format!("{end}.hidden")).await;
    let _reload_fails = b.refresh().await;
    wait(&b, "typeof window.Holdfast === 'undefined'").await;
    b.set_offline(false).await.unwrap();
    load(&b, &srv, "/demo").await;
    let closed = wait_conv(&mut bea, |c| {
        c.id == m2.conversation && c.state == ConversationState::Closed
    })
    .await;
    assert_eq!(closed.assigned_name.as_deref(), Some("Bea"));
    wait(&b, "localStorage.getItem('holdfast:demo:outbox') === null").await;
    wait(
        &b,
        &format!("{}.length === 2", count_system_js("You ended the chat")),
    )
    .await;
    b.quit().await;
    srv.stop().await;
}

/// JavaScript: the system lines that read exactly `text`.
fn count_system_js(text: &str) -> String {
    format!(
        "Array.prototype.filter.call({ROOT}.querySelectorAll('.m.system .b'), \
         function (n) {{ return n.textContent === {}; }})",
        lit(text)
    )
}

/// Wait until the widget is on the page.
async fn mounted(b: &Browser) {
    wait(
        b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
}

/// 14. Over long-poll the token travels in the `X-Holdfast-Token` header,
///     never in a URL (proxies and servers log URLs), across a reload, and
///     the chat still runs both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_keeps_the_token_out_of_urls() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let (proxy, seen) = counting_proxy(srv.http()).await;
    let origin = format!("http://{proxy}");
    let attrs = [("site", "demo"), ("transport", "longpoll")];
    let b = Browser::start().await.unwrap();
    let mut urls = Vec::<String>::new();
    let mut conversation = None;
    for (said, answer) in [
        ("Long-poll, first page", "First reply"),
        ("Long-poll, after a reload", "Second reply"),
    ] {
        embed(&b, &origin, &attrs).await;
        mounted(&b).await;
        open_widget(&b).await;
        wait_online(&b).await;
        say(&b, said).await;
        let m = next_visitor_message(&mut bea).await;
        assert_eq!(m.body, said);
        assert_eq!(*conversation.get_or_insert(m.conversation), m.conversation);
        reply(&mut bea, m.conversation, answer).await;
        wait_shown(&b, "agent", answer).await;
        wait_shown(&b, "visitor", said).await;
        let v = b
            .js(
                "return performance.getEntriesByType('resource')\
                 .map(function (e) { return e.name; });",
                json!([]),
            )
            .await
            .unwrap();
        urls.extend(serde_json::from_value::<Vec<String>>(v).unwrap());
    }
    assert_eq!(gauge(&srv, "ws"), 0, "a WebSocket was used");
    token_only_in_headers(&b, &seen, &urls).await;
    b.quit().await;
    srv.stop().await;
}

/// Every long-poll request after the hello carries the visitor token in the
/// `X-Holdfast-Token` header, and no URL the page requested (the proxy's
/// request lines, and `urls` from the page's resource timing) names it.
async fn token_only_in_headers(b: &Browser, seen: &Attempts, urls: &[String]) {
    let heads = seen.heads.lock().unwrap().clone();
    let header = |head: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-holdfast-token")
                .then(|| v.trim().to_string())
        })
    };
    let mut tokens: Vec<String> = heads.iter().filter_map(|h| header(h)).collect();
    tokens.extend(
        b.js(
            "return localStorage.getItem('holdfast:demo:token');",
            json!([]),
        )
        .await
        .unwrap()
        .as_str()
        .map(str::to_string),
    );
    let polls: Vec<&String> = heads
        .iter()
        .filter(|h| h.starts_with("GET /v1/visitor/poll"))
        .collect();
    assert!(!polls.is_empty(), "no poll went through the proxy");
    for p in &polls {
        assert!(
            header(p).is_some_and(|t| !t.is_empty()),
            "a poll without the token header:\n{p}"
        );
    }
    let lines = heads
        .iter()
        .map(|h| h.lines().next().unwrap_or_default().to_string());
    for url in urls.iter().cloned().chain(lines) {
        assert!(
            !url.to_ascii_lowercase().contains("token"),
            "a URL names the token: {url}"
        );
        for t in &tokens {
            assert!(!url.contains(t.as_str()), "the token is in a URL: {url}");
        }
    }
}

/// Wait (up to [`T`]) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 15. A proxy in the way closes every WebSocket right after the server's
///     welcome. The widget does not reset its backoff for such links: a few
///     WebSockets in 20 s (not hundreds), then long-poll, over which a
///     message reaches the agent (acked) and a reply comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_cut_after_welcome_fall_back_to_long_poll_without_a_storm() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let (proxy, seen) = http_proxy(srv.http(), true).await;
    let b = Browser::start().await.unwrap();
    let started = tokio::time::Instant::now();
    b.goto(&format!("http://{proxy}/demo")).await.unwrap();
    mounted(&b).await;
    open_widget(&b).await;
    let text = "Through a proxy that cuts WebSockets";
    say(&b, text).await;
    let got = bea
        .recv_until(Duration::from_secs(20), |m| visitor_message(m).is_some())
        .await;
    let websockets = || seen.websockets.load(Ordering::SeqCst);
    assert!(
        websockets() <= 10,
        "{} WebSockets in {:?}",
        websockets(),
        started.elapsed()
    );
    let Ok(got) = got else {
        let requests: Vec<String> = seen
            .heads
            .lock()
            .unwrap()
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect();
        panic!(
            "the agent got no message ({} WebSockets, {} long-poll POSTs): {got:?}\n\
             requests: {requests:#?}\nbrowser console:\n{}",
            websockets(),
            seen.long_poll_posts.load(Ordering::SeqCst),
            b.console().await
        )
    };
    let m = visitor_message(&got).unwrap().clone();
    assert_eq!(m.body, text);
    wait_shown(&b, "visitor", text).await; // acked
    reply(&mut bea, m.conversation, "Reply over the fallback").await;
    wait_shown(&b, "agent", "Reply over the fallback").await;
    // Keep watching: no reconnect storm later either.
    tokio::time::sleep_until(started + Duration::from_secs(20)).await;
    let n = websockets();
    assert!((1..=10).contains(&n), "{n} WebSockets in 20 s");
    assert!(seen.long_poll_posts.load(Ordering::SeqCst) >= 2, "{seen:?}");
    assert_eq!(gauge(&srv, "ws"), 0);
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(300)).await,
        Vec::<String>::new(),
        "a message reached the agent twice"
    );
    token_only_in_headers(&b, &seen, &[]).await;
    b.quit().await;
    srv.stop().await;
}

/// 16. After a fallback to long-poll the widget tries WebSocket again later
///     (after 30 s, then 60 s, …): one attempt, straight back to long-poll
///     while it still fails, and WebSocket to stay once it works. The
///     page's clock is moved forward instead of waiting those minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_fallback_websocket_is_tried_again_later() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let (proxy, seen) = http_proxy(srv.http(), true).await;
    let b = Browser::start().await.unwrap();
    b.on_new_document(
        "window.__skew = 0; (function () { var t = Date.prototype.getTime; \
         Date.prototype.getTime = function () { return t.call(this) + window.__skew; }; })();",
    )
    .await
    .unwrap();
    b.goto(&format!("http://{proxy}/demo")).await.unwrap();
    mounted(&b).await;
    let websockets = || seen.websockets.load(Ordering::SeqCst);
    let posts = || seen.long_poll_posts.load(Ordering::SeqCst);
    until("long-poll takes over", || gauge(&srv, "lp") >= 1).await;
    assert_eq!(websockets(), 3, "three WebSockets, then long-poll");

    // 31 s later: one WebSocket, cut again, and back to long-poll.
    let before = posts();
    b.js("window.__skew += 31000;", json!([])).await.unwrap();
    until("WebSocket is tried again", || websockets() == 4).await;
    until("long-poll again", || posts() > before).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(websockets(), 4, "tried WebSocket more than once");

    // The proxy heals; 61 s later WebSocket is tried, works, and stays.
    seen.cut_websockets.store(false, Ordering::SeqCst);
    b.js("window.__skew += 61000;", json!([])).await.unwrap();
    until("a WebSocket is live", || gauge(&srv, "ws") == 1).await;
    open_widget(&b).await;
    say(&b, "Back on WebSocket").await;
    let m = next_visitor_message(&mut bea).await;
    assert_eq!(m.body, "Back on WebSocket");
    reply(&mut bea, m.conversation, "Welcome back").await;
    wait_shown(&b, "agent", "Welcome back").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!((websockets(), gauge(&srv, "ws")), (5, 1));
    b.quit().await;
    srv.stop().await;
}

/// The visitor a chat message came from.
fn author_visitor(m: &ChatMessage) -> String {
    match &m.author {
        Author::Visitor { visitor } => visitor.clone(),
        a => panic!("not a visitor's message: {a:?}"),
    }
}

/// Every message of a visitor as the server stored it: (from, body).
fn stored_messages(srv: &TestServer, visitor: &str) -> Vec<(Sender, String)> {
    let conn = store::open_connection(srv.dir.path()).unwrap();
    let (_, msgs) = store::reads::visitor_snapshot(&conn, visitor).unwrap();
    msgs.into_iter()
        .filter(|m| m.from != Sender::System)
        .map(|m| (m.from, m.body))
        .collect()
}

/// 17. `Holdfast.reset()`, a site's logout: this browser forgets the token,
///     the outbox, the cursor and the log at once, shows none of the old
///     chat, and the next hello is a new visitor. The old conversation is
///     intact on the server, and what the old user left unsent never goes
///     out. A reset queued before the script loads is safe too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_forgets_this_browser_and_starts_a_new_visitor() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Signed in and chatting").await;
    let m = next_visitor_message(&mut bea).await;
    let old = author_visitor(&m);
    reply(&mut bea, m.conversation, "Reply before the logout").await;
    wait_shown(&b, "agent", "Reply before the logout").await;
    wait_shown(&b, "visitor", "Signed in and chatting").await;

    // One more typed offline: it still waits in the outbox at the logout.
    b.set_offline(true).await.unwrap();
    wait(&b, &format!("!{ROOT}.querySelector('.st').hidden")).await;
    say(&b, "Typed before the logout").await;
    wait(
        &b,
        "(JSON.parse(localStorage.getItem('holdfast:demo:outbox')) || []).length === 1",
    )
    .await;

    // Twice (it is idempotent); what is left is read in the same script,
    // before anything can reconnect.
    let left = b
        .js(
            &format!(
                "Holdfast.reset(); Holdfast.reset(); \
                 return {{ keys: Object.keys(localStorage).filter(function (k) {{ \
                             return /^holdfast:demo:(token|outbox|log|identity|lock)$/.test(k); }}), \
                           bubbles: {ROOT}.querySelectorAll('.m').length }};"
            ),
            json!([]),
        )
        .await
        .unwrap_or_else(|e| panic!("Holdfast.reset() failed: {e:#}"));
    assert_eq!(left, json!({ "keys": [], "bubbles": 0 }), "after reset()");

    b.set_offline(false).await.unwrap();
    wait_online(&b).await;
    say(&b, "A new visitor now").await;
    let m2 = next_visitor_message(&mut bea).await;
    assert_eq!(
        m2.body, "A new visitor now",
        "the old user's unsent message went out"
    );
    let new = author_visitor(&m2);
    assert_ne!(new, old, "reset() kept the visitor");
    assert_ne!(m2.conversation, m.conversation);
    wait_shown(&b, "visitor", "A new visitor now").await;
    assert_eq!(shown(&b, "visitor").await, ["A new visitor now"]);
    assert_eq!(shown(&b, "agent").await, Vec::<String>::new());

    // The old conversation is untouched on the server.
    assert_eq!(
        stored_messages(&srv, &old),
        [
            (Sender::Visitor, "Signed in and chatting".to_string()),
            (Sender::Agent, "Reply before the logout".to_string())
        ]
    );
    // A reload shows only the new visitor's chat.
    load(&b, &srv, "/demo").await;
    wait_shown(&b, "visitor", "A new visitor now").await;
    assert_eq!(shown(&b, "visitor").await, ["A new visitor now"]);
    assert_eq!(shown(&b, "agent").await, Vec::<String>::new());
    assert_eq!(
        visitor_messages_within(&mut bea, Duration::from_millis(500)).await,
        Vec::<String>::new(),
        "the old user's unsent message went out"
    );

    // Queued before the script loads, before any connection: a new visitor.
    b.on_new_document("window.Holdfast = [['reset']];")
        .await
        .unwrap();
    load(&b, &srv, "/demo").await;
    // (The panel stays open across loads of this tab.)
    wait(&b, &format!("!{ROOT}.querySelector('.p').hidden")).await;
    wait_online(&b).await;
    say(&b, "Third visitor").await;
    let m3 = next_visitor_message(&mut bea).await;
    assert_eq!(m3.body, "Third visitor");
    let third = author_visitor(&m3);
    assert!(third != new && third != old, "{third}");
    wait_shown(&b, "visitor", "Third visitor").await;
    assert_eq!(shown(&b, "visitor").await, ["Third visitor"]);
    assert_eq!(stored_visitor_bodies(&srv, &new), ["A new visitor now"]);
    b.quit().await;
    srv.stop().await;
}

/// The seeded site "other" has this secret (tests/src/server.rs).
const OTHER_SECRET: &str = "other-secret";

/// What a site's backend hands its page for `Holdfast.identify`:
/// `hash = hex(HMAC-SHA256(site secret, id))`, computed here independently
/// of the server's code.
fn signed_in(id: &str) -> serde_json::Value {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(OTHER_SECRET.as_bytes()).unwrap();
    m.update(id.as_bytes());
    json!({ "id": id, "name": id, "hash": hex::encode(m.finalize().into_bytes()) })
}

/// Page script: every text added to the widget's shadow root, ever, in
/// `window.__seen` (so a flash of someone else's chat counts too).
const RECORD_SHOWN: &str = "window.__seen = []; (function () { \
    var attach = Element.prototype.attachShadow; if (!attach) return; \
    Element.prototype.attachShadow = function (o) { \
      var root = attach.call(this, o); \
      new MutationObserver(function (list) { list.forEach(function (r) { \
        if (r.type === 'characterData') window.__seen.push(r.target.data); \
        r.addedNodes.forEach(function (n) { window.__seen.push(n.textContent); }); \
      }); }).observe(root, { childList: true, subtree: true, characterData: true }); \
      return root; }; })();";

/// 18. A verified identity keeps its chat across reloads even when the page
///     identifies only after the widget connected (the proof is stored with
///     the token and sent in hello). Another user signing in on the same
///     browser gets a new visitor and never sees, even for a moment, the
///     first user's messages, which stay as they were on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_identity_keeps_its_chat_and_the_next_user_sees_none_of_it() {
    verified_identity_across_users("websocket").await;
}

/// The same over long-poll, where every request of a bound visitor carries
/// its identity's hash (`X-Holdfast-Identity`) besides the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_identity_keeps_its_chat_over_long_poll_too() {
    verified_identity_across_users("longpoll").await;
}

async fn verified_identity_across_users(transport: &str) {
    let srv = demo_server().await;
    let mut mallory = agent(&srv, "mallory").await;
    let b = Browser::start().await.unwrap();
    b.on_new_document(RECORD_SHOWN).await.unwrap();
    let page = format!("http://{}", srv.http());
    let site = [("site", "other"), ("transport", transport)];
    let alice = signed_in("alice@shop");
    let said = [
        "Alice: where is order 1234?",
        "Alice: same chat after a reload",
    ];

    embed_queued(&b, &page, &site, json!([["identify", alice]])).await;
    mounted(&b).await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, said[0]).await;
    let m = next_visitor_message(&mut mallory).await;
    assert_eq!(m.body, said[0]);
    let a = author_visitor(&m);
    reply(&mut mallory, m.conversation, "Alice, it ships today").await;
    wait_shown(&b, "agent", "Alice, it ships today").await;
    let conn = store::open_connection(srv.dir.path()).unwrap();
    assert_eq!(
        store::reads::verified_identity(&conn, &a)
            .unwrap()
            .as_deref(),
        Some("alice@shop")
    );

    // A reload where the page identifies late (after the widget connected).
    embed_queued(&b, &page, &site, json!([])).await;
    mounted(&b).await;
    open_widget(&b).await;
    wait_online(&b).await;
    wait_shown(&b, "visitor", said[0]).await;
    wait_shown(&b, "agent", "Alice, it ships today").await;
    b.js("Holdfast.identify(arguments[0]);", json!([alice]))
        .await
        .unwrap();
    say(&b, said[1]).await;
    let m2 = next_visitor_message(&mut mallory).await;
    assert_eq!(m2.body, said[1]);
    assert_eq!(author_visitor(&m2), a, "the reload started a new visitor");
    assert_eq!(m2.conversation, m.conversation);
    wait_shown(&b, "visitor", said[1]).await;
    assert_eq!(shown(&b, "visitor").await, said);

    // Bob signs in on the same browser (the site did not call reset()).
    embed_queued(
        &b,
        &page,
        &site,
        json!([["identify", signed_in("bob@shop")]]),
    )
    .await;
    mounted(&b).await;
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Bob here").await;
    let m3 = next_visitor_message(&mut mallory).await;
    assert_eq!(m3.body, "Bob here");
    let bob = author_visitor(&m3);
    assert_ne!(bob, a, "Bob got Alice's visitor");
    assert_ne!(m3.conversation, m.conversation);
    wait_shown(&b, "visitor", "Bob here").await;
    assert_eq!(shown(&b, "visitor").await, ["Bob here"]);
    assert_eq!(shown(&b, "agent").await, Vec::<String>::new());
    let seen = b
        .js("return window.__seen.join('\\n');", json!([]))
        .await
        .unwrap();
    let seen = seen.as_str().unwrap();
    for text in [said[0], said[1], "Alice, it ships today"] {
        assert!(
            !seen.contains(text),
            "Bob's page showed Alice's {text:?}:\n{seen}"
        );
    }
    assert_eq!(
        store::reads::verified_identity(&conn, &bob)
            .unwrap()
            .as_deref(),
        Some("bob@shop")
    );
    // Alice's conversation is as she left it.
    assert_eq!(
        stored_messages(&srv, &a),
        [
            (Sender::Visitor, said[0].to_string()),
            (Sender::Agent, "Alice, it ships today".to_string()),
            (Sender::Visitor, said[1].to_string()),
        ]
    );

    // The server catches what the widget cannot: with the stored identity
    // gone, Carol's identify reaches Bob's visitor, which the server
    // refuses (`unauthorized`); the widget starts a new visitor for Carol.
    b.js(
        "localStorage.removeItem('holdfast:other:identity'); \
         Holdfast.identify(arguments[0]);",
        json!([signed_in("carol@shop")]),
    )
    .await
    .unwrap();
    wait(
        &b,
        &format!("{ROOT}.querySelectorAll('.m.visitor').length === 0"),
    )
    .await;
    wait_online(&b).await;
    say(&b, "Carol here").await;
    let m4 = next_visitor_message(&mut mallory).await;
    assert_eq!(m4.body, "Carol here");
    let carol = author_visitor(&m4);
    assert!(carol != bob && carol != a, "{carol}");
    wait_shown(&b, "visitor", "Carol here").await;
    assert_eq!(shown(&b, "visitor").await, ["Carol here"]);
    wait(
        &b,
        "JSON.parse(localStorage.getItem('holdfast:other:identity') || '{}').id === 'carol@shop'",
    )
    .await;
    assert_eq!(
        store::reads::verified_identity(&conn, &carol)
            .unwrap()
            .as_deref(),
        Some("carol@shop")
    );
    assert_eq!(stored_visitor_bodies(&srv, &bob), ["Bob here"]);

    // A page that signs another user in without a reload (a single-page
    // app): the widget sees the new id and starts a new visitor at once.
    b.js(
        "Holdfast.identify(arguments[0]);",
        json!([signed_in("dave@shop")]),
    )
    .await
    .unwrap();
    wait(
        &b,
        &format!("{ROOT}.querySelectorAll('.m.visitor').length === 0"),
    )
    .await;
    wait_online(&b).await;
    say(&b, "Dave here").await;
    let m5 = next_visitor_message(&mut mallory).await;
    assert_eq!(m5.body, "Dave here");
    let dave = author_visitor(&m5);
    assert!(![&a, &bob, &carol].contains(&&dave), "{dave}");
    wait_shown(&b, "visitor", "Dave here").await;
    assert_eq!(shown(&b, "visitor").await, ["Dave here"]);
    assert_eq!(stored_visitor_bodies(&srv, &carol), ["Carol here"]);
    b.quit().await;
    srv.stop().await;
}

/// 19. `reset()` in one tab clears every tab of the site: the other tab
///     drops the old chat from its page and memory, writes none of it back,
///     and joins the one new visitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_in_one_tab_clears_the_other_tabs() {
    let srv = demo_server().await;
    let mut bea = agent(&srv, "barista").await;
    let b = Browser::start().await.unwrap();
    load(&b, &srv, "/demo").await;
    let first = b.cmd("GET", "/window", None).await.unwrap();
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "Before the logout").await;
    let m = next_visitor_message(&mut bea).await;
    reply(&mut bea, m.conversation, "Seen in both tabs").await;
    wait_shown(&b, "agent", "Seen in both tabs").await;

    let second = b
        .cmd("POST", "/window/new", Some(json!({ "type": "tab" })))
        .await
        .unwrap();
    b.cmd(
        "POST",
        "/window",
        Some(json!({ "handle": second["handle"] })),
    )
    .await
    .unwrap();
    load(&b, &srv, "/demo").await;
    wait_shown(&b, "agent", "Seen in both tabs").await;
    b.js("Holdfast.reset();", json!([])).await.unwrap();
    open_widget(&b).await;
    wait_online(&b).await;
    say(&b, "After the logout").await;
    let m2 = next_visitor_message(&mut bea).await;
    assert_eq!(m2.body, "After the logout");
    assert_ne!(author_visitor(&m2), author_visitor(&m));
    wait_shown(&b, "visitor", "After the logout").await;

    b.cmd("POST", "/window", Some(json!({ "handle": first })))
        .await
        .unwrap();
    wait_shown(&b, "visitor", "After the logout").await;
    assert_eq!(shown(&b, "visitor").await, ["After the logout"]);
    assert_eq!(shown(&b, "agent").await, Vec::<String>::new());
    let log = b
        .js(
            "return localStorage.getItem('holdfast:demo:log');",
            json!([]),
        )
        .await
        .unwrap();
    let log = log.as_str().unwrap_or_default();
    assert!(
        !log.contains("Before the logout") && !log.contains("Seen in both tabs"),
        "the old chat was written back: {log}"
    );
    // A reload of the first tab: the new visitor's chat only.
    load(&b, &srv, "/demo").await;
    wait_shown(&b, "visitor", "After the logout").await;
    assert_eq!(shown(&b, "visitor").await, ["After the logout"]);
    assert_eq!(shown(&b, "agent").await, Vec::<String>::new());
    b.quit().await;
    srv.stop().await;
}
