//! Attention (issue 17): a waiting chat alerts again on the agent's
//! schedule and its wait turns amber, then red, until someone takes it;
//! rows that would read alike are told apart and say where the visitor
//! is; Away shows beside the connection.

use holdfast_client::protocol::agent::Presence;
use holdfast_client::protocol::visitor::VisitorIn;
use holdfast_tests::visitor::hello;

use super::*;

/// A visitor on `page` whom the site names "Demo shopper", as the demo
/// names every one.
async fn shopper(srv: &TestServer, page: &str, customer: &str) -> WsVisitor {
    let url = format!("https://shop.example/{page}");
    let mut v = WsVisitor::connect_with(srv.http(), hello("acme", None, None, &url))
        .await
        .unwrap();
    v.send_json(&VisitorIn::Identify {
        id: customer.into(),
        name: Some("Demo shopper".into()),
        email: None,
        hash: None,
        attrs: Default::default(),
    })
    .await
    .unwrap();
    v
}

/// Repeat alerts raised so far for the visitor whose label starts so.
fn repeats(d: &Driver, label: &str) -> usize {
    d.app
        .notifier
        .log
        .iter()
        .filter(|a| a.title == "Chat still waiting" && a.body.starts_with(label))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_chat_alerts_again_and_turns_red_until_taken() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The schedule is the agent's: again after 1 s, then every 2 s; amber
    // from 1 s, red from 3 s (the defaults are 30 s, 60 s, 1 and 3 min).
    std::fs::write(
        dir.path().join("prefs.json"),
        r#"{"attention": {"first_repeat_secs": 1, "repeat_every_secs": 2,
            "amber_after_secs": 1, "red_after_secs": 3}}"#,
    )
    .unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("bob").await;
    assert!(!d.has_id("away-notice"));

    // Away, where the connection is shown, with the way back beside it.
    d.go_away().await;
    let bar = d.texts_in("connection-bar");
    assert!(
        bar.iter().any(|t| t == "Away: no new chats come to you"),
        "{bar:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut a = shopper(&srv, "checkout", "cust-k3x9").await;
    let mut b = shopper(&srv, "pricing", "cust-p7q2").await;
    a.say_acked("where is my parcel?").await.unwrap();
    b.say_acked("do you ship to Lyon?").await.unwrap();

    // Both rows would read "Demo shopper": each gets the site's id for its
    // visitor, and says which page they are on.
    d.until("two labelled waiting chats", |d| {
        d.shows("#1 Demo shopper · cust-k3x9")
            && d.shows("#2 Demo shopper · cust-p7q2")
            && d.shows("on Page https://shop.example/checkout")
            && d.shows("on Page https://shop.example/pricing")
    })
    .await;
    let cid = d.app.workspace.desk.queue()[0].info.id;
    super::looks::look(&d, "attention-labels.png");

    // Again after 1 s, then every 2 s; the wait turns red, in words as
    // well as colour.
    let all = |d: &Driver| repeats(d, "");
    d.until("two repeats for each chat, and red", |d| {
        all(d) >= 4 && d.shows("· very long wait")
    })
    .await;
    let due: usize = d
        .app
        .workspace
        .desk
        .queue()
        .iter()
        .map(|c| {
            d.app
                .prefs
                .attention
                .repeats_due(d.app.now_ms - c.info.opened_at_ms) as usize
        })
        .sum();
    // At most one per due time: a tick that comes late (a busy machine,
    // a laptop waking) raises one alert, never the ones it missed.
    assert!(all(&d) <= due, "{due} due: {:?}", d.app.notifier.log);
    assert!(
        repeats(&d, "Demo shopper · cust-k3x9") >= 1,
        "{:?}",
        d.app.notifier.log
    );
    super::looks::look(&d, "attention-red.png");

    // Taken: that chat goes quiet, the other keeps alerting.
    d.click_id(&format!("accept-{cid}"));
    d.until("the accepted chat open", |d| {
        d.app.workspace.desk.selected == Some(cid) && d.has_id("composer")
    })
    .await;
    let (taken, left) = (
        repeats(&d, "Demo shopper · cust-k3x9"),
        repeats(&d, "Demo shopper · cust-p7q2"),
    );
    d.until("another repeat for the one still waiting", |d| {
        repeats(d, "Demo shopper · cust-p7q2") > left
    })
    .await;
    assert_eq!(repeats(&d, "Demo shopper · cust-k3x9"), taken);

    // Back online from the bar itself.
    d.click_text("Go online");
    d.until("online", |d| {
        d.app.workspace.desk.presence == Some(Presence::Online) && !d.has_id("away-notice")
    })
    .await;

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
