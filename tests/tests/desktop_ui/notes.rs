//! Internal notes from the composer: shown to agents as notes, never sent
//! to the visitor.

use holdfast_client::protocol::agent::Author;
use holdfast_client::protocol::visitor::{VisitorEvent, VisitorOut};

use super::*;

/// The label drawn right above the text `body` in the transcript.
fn label_above(d: &Driver, body: &str) -> Option<String> {
    let texts = d.texts_in("transcript");
    let at = texts.iter().position(|t| t == body)?;
    at.checked_sub(1).map(|i| texts[i].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_is_shown_as_a_note_and_never_reaches_the_visitor() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("my order is late").await.unwrap();
    d.until("the chat open", |d| {
        d.has_id("composer") && d.shows("my order is late")
    })
    .await;
    let conv = d.app.workspace.desk.selected.unwrap();
    assert!(d.shows("Send") && !d.shows("Add note"));

    // Switch the composer to notes: it says so, and Enter adds a note.
    d.click_text("Internal note");
    assert!(d.app.workspace.chat.writes_note(conv));
    assert!(
        d.shows("Add note") && !d.has_id("attach"),
        "{:?}",
        d.texts()
    );
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Refund already approved by billing");
        ui.tap_key(Named::Enter);
    });
    d.until("the note in the transcript", |d| {
        d.texts_in("transcript")
            .iter()
            .any(|t| t == "Refund already approved by billing")
    })
    .await;
    let label = label_above(&d, "Refund already approved by billing").unwrap();
    assert!(
        label.starts_with("Note from Alice · agents only"),
        "a note is labelled as one: {label}"
    );
    // It carries no delivery label: nothing is on its way to anyone.
    assert_eq!(d.label_of("Refund already approved by billing"), None);
    let stored = d.app.workspace.desk.convs[&conv]
        .messages
        .iter()
        .find(|m| m.body == "Refund already approved by billing")
        .unwrap();
    assert!(
        matches!(stored.author, Author::Note { .. }),
        "{:?}",
        stored.author
    );

    // Back to replies, which the visitor does get, after the note.
    d.click_text("Internal note");
    assert!(!d.app.workspace.chat.writes_note(conv));
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Your refund is on its way.");
        ui.tap_key(Named::Enter);
    });
    v.wait_message("Your refund is on its way.").await.unwrap();
    d.until("the reply delivered", |d| {
        d.label_of("Your refund is on its way.").as_deref() == Some("Delivered")
    })
    .await;
    // The visitor's log is in order, so a leaked note would have come
    // before the reply: there is none, in any event or anything else.
    let leaked = |s: String| s.contains("Refund already approved");
    assert!(!v.bodies().into_iter().any(leaked), "{:?}", v.bodies());
    assert!(
        !v.events
            .iter()
            .any(|(_, e): &(_, VisitorEvent)| leaked(format!("{e:?}"))),
        "{:?}",
        v.events
    );
    assert!(
        !v.other
            .iter()
            .any(|m: &VisitorOut| leaked(format!("{m:?}"))),
        "{:?}",
        v.other
    );
    // And not on a reload either, replaying the whole log.
    let token = v.token.clone();
    drop(v);
    let mut again = WsVisitor::connect_with(
        srv.http(),
        holdfast_tests::visitor::hello("acme", Some(token), Some(0), "https://shop.example/"),
    )
    .await
    .unwrap();
    again
        .wait_message("Your refund is on its way.")
        .await
        .unwrap();
    assert!(
        !format!("{:?} {:?}", again.events, again.other).contains("Refund already approved"),
        "a replay carried the note"
    );

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
