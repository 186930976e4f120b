//! Demo traffic for the window test, the screenshot and the benchmark: a
//! real server, visitors with names, attributes and page trails, and a few
//! conversations already in the agent's store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use holdfast_client::protocol::backoff::BackoffConfig;
use holdfast_client::protocol::visitor::{PageInfo, VisitorIn};
use holdfast_client::{ClientConfig, ConnState, Update, start};
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::{WsVisitor, hello};
use zeroize::Zeroizing;

pub fn client_config(server: &str, user: &str, store: &Path) -> ClientConfig {
    let mut c = ClientConfig::new(
        server,
        user,
        Zeroizing::new(PASSWORD.to_owned()),
        store.to_path_buf(),
    );
    c.trust_on_first_use = true;
    c.backoff = BackoffConfig {
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
    };
    c
}

/// A visitor who says who they are and browses a few pages.
pub async fn visitor(
    srv: &TestServer,
    name: &str,
    ua: &str,
    attrs: &[(&str, serde_json::Value)],
    pages: &[(&str, &str)],
) -> WsVisitor {
    let mut h = hello("acme", None, None, pages[0].0);
    if let VisitorIn::Hello {
        user_agent, page, ..
    } = &mut h
    {
        *user_agent = Some(ua.to_owned());
        if let Some(p) = page {
            p.title = pages[0].1.to_owned();
        }
    }
    let mut v = WsVisitor::connect_with(srv.http(), h).await.unwrap();
    let attrs: BTreeMap<String, serde_json::Value> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    v.send_json(&VisitorIn::Identify {
        id: format!("cust-{}", name.len() * 97),
        name: Some(name.to_owned()),
        email: Some(format!(
            "{}@example.com",
            name.split_whitespace().next().unwrap_or("x").to_lowercase()
        )),
        hash: None,
        attrs,
    })
    .await
    .unwrap();
    for (url, title) in &pages[1..] {
        v.send_json(&VisitorIn::Page(PageInfo {
            url: (*url).to_owned(),
            title: (*title).to_owned(),
            referrer: None,
        }))
        .await
        .unwrap();
    }
    v
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// What keeps the demo alive: its visitors and Bob's client, who must stay
/// connected while the app is looked at.
#[allow(dead_code)]
pub struct Demo {
    pub visitors: Vec<WsVisitor>,
    pub bob: holdfast_client::ClientHandle,
}

/// Start demo traffic and leave `alice`'s store pinned and filled: two open
/// conversations (one in Chinese with an emoji), one Bob handed to her with
/// a note, a waiting chat, a browsing visitor, and Bob online in the team.
pub async fn populate(srv: &TestServer, store: &Path) -> Demo {
    let addr = srv.agent_addr().to_string();
    {
        // Room for the three chats; the fourth waits.
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        holdfast_server::admin::update_agent(&conn, "alice", None, Some(3), None).unwrap();
    }
    let (h, mut rx) = start(client_config(&addr, "alice", store)).unwrap();
    wait(&mut rx, |u| {
        matches!(u, Update::Connection(s) if s.state == ConnState::Live).then_some(())
    })
    .await;

    let mut jonas = visitor(
        srv,
        "Jonas Berg",
        FIREFOX,
        &[("plan", "Free".into()), ("trial_days_left", 9.into())],
        &[
            ("https://shop.example/pricing", "Pricing"),
            ("https://shop.example/pricing#teams", "Pricing · Teams"),
        ],
    )
    .await;
    jonas
        .say_acked("Does the Teams plan include SSO?")
        .await
        .unwrap();
    let conv2 = wait(&mut rx, |u| match u {
        Update::Conversation(c) if c.visitor == jonas.visitor => Some(c.id),
        _ => None,
    })
    .await;
    h.send_message(conv2, "Yes, SAML and OIDC on every Teams seat.")
        .await
        .unwrap();
    let mut mei = visitor(
        srv,
        "Mei Chen",
        CHROME,
        &[("plan", "Pro".into()), ("orders", 12.into())],
        &[
            ("https://shop.example/", "Holdfast Shop"),
            ("https://shop.example/orders/1042", "Order #1042"),
        ],
    )
    .await;
    mei.say_acked("你好！我的订单 #1042 还没到，能帮我查一下吗？📦")
        .await
        .unwrap();
    let conv = wait(&mut rx, |u| match u {
        Update::Conversation(c) if c.visitor == mei.visitor => Some(c.id),
        _ => None,
    })
    .await;
    h.send_message(conv, "您好 Mei! Let me check order #1042 for you.")
        .await
        .unwrap();
    mei.wait_message("您好 Mei! Let me check order #1042 for you.")
        .await
        .unwrap();
    mei.say_acked("谢谢! 🙏").await.unwrap();
    h.send_message(
        conv,
        "It left our warehouse this morning; tracking: https://track.example/ZX81-1042-AAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await
    .unwrap();

    // Bob serves a visitor, then hands the chat to Alice with a note.
    let bob_store = store.with_file_name("bob-demo.sqlite3");
    let (bob, mut bob_rx) = start(client_config(&addr, "bob", &bob_store)).unwrap();
    wait(&mut bob_rx, |u| {
        matches!(u, Update::Connection(s) if s.state == ConnState::Live).then_some(())
    })
    .await;
    let ids = {
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        let id = |u: &str| {
            holdfast_server::store::reads::agent_by_username(&conn, u)
                .unwrap()
                .unwrap()
                .id
        };
        (id("alice"), id("bob"))
    };
    let (alice_id, bob_id) = ids;
    // Alice's two chats make Bob the least busy.
    let mut lena = visitor(
        srv,
        "Lena Fischer",
        SAFARI,
        &[("plan", "Business".into()), ("seats", 40.into())],
        &[("https://shop.example/invoices", "Invoices")],
    )
    .await;
    lena.say_acked("I was charged twice for invoice INV-2231.")
        .await
        .unwrap();
    let conv3 = wait(&mut bob_rx, |u| match u {
        Update::Conversation(c) if c.visitor == lena.visitor && c.assigned == Some(bob_id) => {
            Some(c.id)
        }
        _ => None,
    })
    .await;
    bob.send_message(
        conv3,
        "Sorry about that, Lena. Billing can refund it; one moment.",
    )
    .await
    .unwrap();
    bob.transfer(
        conv3,
        Some(bob_id),
        alice_id,
        Some("Duplicate charge on INV-2231, refund approved. Please confirm with her.".into()),
    )
    .await
    .unwrap();
    wait(&mut rx, |u| match u {
        Update::Conversation(c) if c.id == conv3 && c.assigned == Some(alice_id) => Some(()),
        _ => None,
    })
    .await;
    lena.wait_message("Sorry about that, Lena. Billing can refund it; one moment.")
        .await
        .unwrap();
    h.send_message(
        conv3,
        "Hi Lena, I'm Alice from billing: the refund is on its way.",
    )
    .await
    .unwrap();

    // Everything acked before the store is handed to the app.
    let mut st = h.status_watch();
    tokio::time::timeout(Duration::from_secs(10), st.wait_for(|s| s.unsent == 0))
        .await
        .unwrap()
        .unwrap();
    h.shutdown().await.unwrap();

    // Bob steps away, and Alice is at capacity (3) once she is back: this
    // one waits.
    bob.set_presence(holdfast_client::protocol::agent::Presence::Away)
        .await
        .unwrap();
    let mut bst = bob.status_watch();
    tokio::time::timeout(Duration::from_secs(10), bst.wait_for(|s| s.unsent == 0))
        .await
        .unwrap()
        .unwrap();
    let mut ana = visitor(
        srv,
        "Ana Souza",
        SAFARI,
        &[("cart_value", "€84.90".into())],
        &[("https://shop.example/cart", "Your cart")],
    )
    .await;
    ana.say_acked("Can I change the delivery address?")
        .await
        .unwrap();
    let browsing = visitor(
        srv,
        "",
        FIREFOX,
        &[],
        &[
            (
                "https://shop.example/blog/winter-sale",
                "Winter sale — up to 40% off",
            ),
            ("https://shop.example/p/wool-socks", "Merino wool socks"),
        ],
    )
    .await;
    Demo {
        visitors: vec![mei, jonas, lena, ana, browsing],
        bob,
    }
}

async fn wait<T>(
    rx: &mut tokio::sync::mpsc::Receiver<Update>,
    mut f: impl FnMut(&Update) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let u = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out")
            .expect("closed");
        if let Some(t) = f(&u) {
            return t;
        }
    }
}
