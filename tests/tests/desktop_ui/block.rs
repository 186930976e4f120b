//! Blocking a visitor from the details panel: the form, its outcome on
//! screen, and what the visitor's widget meets afterwards.

use holdfast_tests::visitor::hello;
use iced::keyboard::{self, key};

use super::*;

const PAGE: &str = "https://shop.example/";

/// Esc as the window reports it, through the app's own event mapping.
fn press_escape(d: &mut Driver) {
    let event = iced::Event::Keyboard(keyboard::Event::KeyPressed {
        key: keyboard::Key::Named(Named::Escape),
        modified_key: keyboard::Key::Named(Named::Escape),
        physical_key: key::Physical::Code(key::Code::Escape),
        location: keyboard::Location::Standard,
        modifiers: keyboard::Modifiers::empty(),
        text: None,
        repeat: false,
    });
    let m = holdfast_agent::ui::window_event(
        event,
        iced::event::Status::Ignored,
        iced::window::Id::unique(),
    )
    .expect("Esc is acted on");
    d.apply(m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_from_the_details_panel_then_unblock() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    // A visitor writes; the chat comes to alice and opens with the visitor
    // in the details panel.
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let (vid, token) = (v.visitor.clone(), v.token.clone());
    v.say_acked("you are useless").await.unwrap();
    d.until("the chat open with its visitor's details", |d| {
        d.app.workspace.desk.details_visitor.as_deref() == Some(vid.as_str())
            && d.has_id("composer")
            && d.has_id("block")
    })
    .await;
    assert!(!d.has_id("unblock"), "nothing was blocked yet");

    // Esc closes the form, and what was typed in it goes with it.
    d.click_id("block");
    assert!(d.has_id("block-form"));
    d.interact(|ui| {
        ui.click(Id::new("block-reason")).unwrap();
        ui.typewrite("changed my mind");
    });
    press_escape(&mut d);
    assert!(!d.has_id("block-form") && d.has_id("block"));
    assert!(d.app.workspace.desk.block_form.is_none());

    // An empty reason, or only blanks, cannot be confirmed: not by the
    // button, not by Enter.
    d.click_id("block");
    assert_eq!(
        d.app.workspace.desk.block_form.as_ref().unwrap().reason,
        "",
        "the form opens empty"
    );
    d.click_text("Confirm");
    d.interact(|ui| {
        ui.click(Id::new("block-reason")).unwrap();
        ui.typewrite("   ");
        ui.tap_key(Named::Enter);
    });
    d.click_text("Confirm");
    assert!(d.has_id("block-form"), "the form stays open");
    assert!(d.app.workspace.desk.blocks.is_empty(), "nothing was sent");

    // A reason, and their address too: confirm.
    d.interact(|ui| {
        ui.click(Id::new("block-reason")).unwrap();
        ui.typewrite("abusive language");
    });
    d.click_text("Also block their address");
    assert!(d.app.workspace.desk.block_form.as_ref().unwrap().by_address);
    d.click_text("Confirm");
    assert!(!d.has_id("block-form"));
    d.until("the block done on screen", |d| {
        d.texts_in("block-status") == ["Blocked: abusive language"]
    })
    .await;
    assert!(d.has_id("unblock") && !d.has_id("block"));
    assert!(
        d.app.workspace.desk.banner.is_none(),
        "{:?}",
        d.app.workspace.desk.banner
    );

    // The visitor is dropped, and neither it nor a new visitor from its
    // address gets back in.
    v.wait_for(WAIT, |m| {
        matches!(
            m,
            holdfast_client::protocol::visitor::VisitorOut::GoingAway { .. }
        )
    })
    .await
    .expect("the blocked visitor's connection is dropped");
    let e = WsVisitor::connect_with(srv.http(), hello("acme", Some(token.clone()), None, PAGE))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Forbidden"), "{e}");
    let e = WsVisitor::connect(srv.http(), "acme")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Forbidden"), "blocked by address too: {e}");

    // Unblock: the visitor is let back in, as itself.
    d.click_id("unblock");
    d.until("the unblock done on screen", |d| {
        d.texts_in("block-status") == ["Unblocked."]
    })
    .await;
    assert!(d.has_id("block") && !d.has_id("unblock"));
    let back = WsVisitor::connect_with(srv.http(), hello("acme", Some(token), None, PAGE))
        .await
        .expect("an unblocked visitor gets a welcome");
    assert_eq!(back.visitor, vid);

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
