//! Canned replies in the app (issue 17, PROTOCOL.md 10.21): an admin adds
//! the site's in the panel and everyone gets them live; each agent keeps
//! its own; `/` in the composer finds one fuzzily, Enter puts it in the
//! composer with the names filled in, and only Send sends it.

use holdfast_client::protocol::agent::Role;
use holdfast_client::protocol::visitor::VisitorIn;

use super::*;

const REFUND: &str = "Hi {visitor.name}, {agent.name} here: your refund is on its way.";

fn reply<'a>(
    d: &'a Driver,
    shortcut: &str,
) -> Option<&'a holdfast_client::protocol::agent::CannedReply> {
    d.app
        .workspace
        .desk
        .canned
        .iter()
        .find(|r| r.shortcut == shortcut)
}

/// Fill the panel's form and press Save.
fn fill_form(d: &mut Driver, shortcut: &str, body: &str) {
    let (shortcut, body) = (shortcut.to_owned(), body.to_owned());
    d.interact(|ui| {
        ui.click(Id::new("canned-shortcut")).unwrap();
        ui.typewrite(&shortcut);
        ui.click(Id::new("canned-body")).unwrap();
        ui.typewrite(&body);
    });
    d.click_id("canned-save");
}

fn draft(d: &Driver) -> String {
    let id = d.app.workspace.desk.selected.unwrap();
    d.app.workspace.desk.drafts[&id].text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canned_replies_are_managed_in_the_app_and_picked_with_a_slash() {
    let srv = TestServer::start().await;
    {
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        holdfast_server::admin::add_agent(&conn, "acme", "ada", "Ada", PASSWORD, 2, Role::Admin)
            .unwrap();
    }
    let (ada_dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // Ada, an admin, adds one of the site's in the panel.
    let mut ada = Driver::new(options(ada_dir.path(), srv.agent_addr().to_string()));
    ada.sign_in("ada").await;
    ada.until("her role", |d| {
        d.app.workspace.desk.my_role() == Role::Admin
    })
    .await;
    ada.click_id("canned-open");
    assert!(ada.has_id("canned-panel") && ada.shows("None yet."));
    ada.click_text("New reply");
    fill_form(&mut ada, "refund", REFUND);
    ada.until("the site's reply listed", |d| {
        reply(d, "refund").is_some_and(|r| !r.personal && r.body == REFUND)
            && d.shows("/refund")
            && d.app
                .workspace
                .chat
                .canned
                .manager
                .as_ref()
                .is_some_and(|m| m.form.is_none())
    })
    .await;

    // The same shortcut in other letters is refused, and the form says why
    // and keeps what was typed.
    ada.click_text("New reply");
    fill_form(&mut ada, "REFUND", "Another text");
    ada.until("the refusal on the form", |d| d.shows("Not saved:"))
        .await;
    assert!(ada.shows("conflict"), "{:?}", ada.texts());
    ada.click_text("Cancel");

    // One of her own.
    ada.click_text("New reply");
    ada.click_id("canned-personal");
    fill_form(&mut ada, "bye", "Bye from {agent.name}!");
    ada.until("her own reply", |d| {
        reply(d, "bye").is_some_and(|r| r.personal)
    })
    .await;
    super::looks::look(&ada, "canned-panel.png");
    // Esc closes the panel; Ada goes away so that Bob gets the chat.
    ada.apply(Message::Workspace(workspace::Message::Escape));
    assert!(!ada.has_id("canned-panel"));
    ada.go_away().await;

    // Bob, a plain agent, has the site's reply, not Ada's own, and may not
    // change the site's.
    let mut bob = Driver::new(options(bob_dir.path(), srv.agent_addr().to_string()));
    bob.sign_in("bob").await;
    bob.until("the site's replies", |d| reply(d, "refund").is_some())
        .await;
    assert!(reply(&bob, "bye").is_none(), "Ada's own are hers");
    let site_id = reply(&bob, "refund").unwrap().id;
    bob.click_id("canned-open");
    assert!(!bob.has_id(&format!("canned-edit-{site_id}")));
    bob.click_id("canned-close");

    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.send_json(&VisitorIn::Identify {
        id: "cust-88".into(),
        name: Some("Dana".into()),
        email: None,
        hash: None,
        attrs: Default::default(),
    })
    .await
    .unwrap();
    v.say_acked("Where is my refund?").await.unwrap();
    bob.until("the chat open", |d| {
        d.has_id("composer") && d.shows("Where is my refund?")
    })
    .await;
    // The day's separator, once, above the first message.
    let t = bob.texts_in("transcript");
    assert_eq!(
        t.iter().filter(|x| x.as_str() == "Today").count(),
        1,
        "{t:?}"
    );
    assert!(
        t.iter().position(|x| x == "Today") < t.iter().position(|x| x == "Where is my refund?"),
        "{t:?}"
    );

    // "/rfd" finds "refund"; Enter puts it in the composer, filled in, and
    // sends nothing yet.
    bob.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("/rfd");
    });
    assert!(bob.has_id("canned-picker"), "{:?}", bob.texts());
    super::looks::look(&bob, "canned-picker.png");
    assert!(bob.has_id(&format!("canned-{site_id}")));
    bob.interact(|ui| {
        ui.tap_key(Named::ArrowDown);
        ui.tap_key(Named::ArrowUp);
        ui.tap_key(Named::Enter);
    });
    let filled = "Hi Dana, Bob here: your refund is on its way.";
    assert_eq!(draft(&bob), filled);
    assert!(!bob.has_id("canned-picker"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !v.bodies().iter().any(|b| b == filled),
        "picking is not sending"
    );
    bob.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.tap_key(Named::Enter);
    });
    v.wait_message(filled).await.unwrap();

    // Esc closes the picker on that draft; a slash inside a sentence opens
    // nothing.
    bob.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("/re");
    });
    assert!(bob.has_id("canned-picker"));
    bob.apply(Message::Workspace(workspace::Message::Escape));
    assert!(!bob.has_id("canned-picker"));
    assert_eq!(draft(&bob), "/re", "Esc keeps the draft");

    // Tab takes the highlighted reply too. The composer takes that Tab, so
    // the window's Tab (which moves between regions) is not acted on.
    let tab = iced_test::simulator::press_key(Named::Tab, None);
    let mut status = Vec::new();
    bob.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        for _ in 0..3 {
            ui.tap_key(Named::Backspace);
        }
        ui.typewrite("/rfd");
    });
    assert!(bob.has_id("canned-picker"), "{:?}", bob.texts());
    bob.interact(|ui| status = ui.simulate([tab.clone()]));
    assert_eq!(draft(&bob), filled);
    assert_eq!(
        holdfast_agent::ui::window_event(tab, status[0], iced::window::Id::unique())
            .map(|m| format!("{m:?}")),
        None
    );

    // Ada changes the site's reply: Bob's list follows, live.
    ada.click_id("canned-open");
    ada.click_id(&format!("canned-edit-{site_id}"));
    ada.interact(|ui| {
        ui.click(Id::new("canned-body")).unwrap();
        ui.typewrite(" Thanks for waiting.");
    });
    ada.click_id("canned-save");
    bob.until("the changed reply", |d| {
        reply(d, "refund").is_some_and(|r| r.body.ends_with("Thanks for waiting."))
    })
    .await;
    // And deletes it, once she confirms: gone for Bob too.
    ada.click_id(&format!("canned-delete-{site_id}"));
    assert!(ada.shows("Delete it for everyone?"), "{:?}", ada.texts());
    ada.click_text("Keep");
    assert!(!ada.shows("Delete it for everyone?"));
    ada.click_id(&format!("canned-delete-{site_id}"));
    ada.click_id(&format!("canned-confirm-delete-{site_id}"));
    bob.until("the reply gone", |d| reply(d, "refund").is_none())
        .await;

    for d in [&ada, &bob] {
        if let Some(h) = d.app.handle() {
            h.shutdown().await.unwrap();
        }
    }
    srv.stop().await;
}
