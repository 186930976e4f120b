//! Links and copying in the transcript: `http`, `https` and `mailto` links
//! open with the OS's opener (a fake `xdg-open` first on PATH here, which
//! records what it was given), anything else stays inert text, and each
//! message's Copy button writes its text to the clipboard.

use std::path::PathBuf;

use holdfast_client::protocol::ids::MsgId;
use iced::Point;

use super::*;

/// A fake `xdg-open` in its own directory, put first on PATH for this test
/// binary: it writes its one argument to `opened` (and exits 3 on any other
/// count), or fails with 4 while `fail` exists. Only this module's tests
/// open links, so no other test can run it.
struct FakeOpener {
    dir: tempfile::TempDir,
}

impl FakeOpener {
    #[allow(unsafe_code)]
    fn install() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("xdg-open");
        let opened = dir.path().join("opened");
        let fail = dir.path().join("fail");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 [ -e '{fail}' ] && exit 4\n\
                 [ \"$#\" -eq 1 ] || exit 3\n\
                 printf '%s' \"$1\" > '{opened}'\n",
                fail = fail.display(),
                opened = opened.display(),
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        let joined = std::env::join_paths(dirs).unwrap();
        // SAFETY: the test binary's other threads read the environment only
        // through std (which locks it around every access) and through the
        // programs they spawn; the one change is a directory prepended to
        // PATH, so every other program still resolves as before.
        unsafe {
            std::env::set_var("PATH", joined);
        }
        Self { dir }
    }

    fn opened(&self) -> PathBuf {
        self.dir.path().join("opened")
    }

    /// What the opener was given, once it has written it all.
    fn read(&self) -> Option<String> {
        std::fs::read_to_string(self.opened())
            .ok()
            .filter(|s| !s.is_empty())
    }
}

/// The client id of the message with this body in the open conversation.
fn message_id(d: &Driver, body: &str) -> MsgId {
    let conv = d.app.workspace.desk.selected.unwrap();
    d.app.workspace.desk.convs[&conv]
        .messages
        .iter()
        .find(|m| m.body == body)
        .unwrap_or_else(|| panic!("no message {body:?}"))
        .client_id
}

/// Click at a point of the window, returning what the view produced.
fn click_at(d: &mut Driver, at: Point) -> Vec<Message> {
    let mut ui = Simulator::with_size(settings(), d.size, d.app.view());
    ui.point_at(at);
    let _ = ui.simulate(iced_test::simulator::click());
    ui.into_messages().collect()
}

/// The bounds of the widget with this id.
fn bounds_of(d: &Driver, id: &str) -> Rectangle {
    let mut ui = Simulator::with_size(settings(), d.size, d.app.view());
    let target = ui
        .find(Id::from(id.to_owned()))
        .unwrap_or_else(|e| panic!("no {id}: {e}"));
    iced_test::selector::Bounded::bounds(&target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_open_with_the_os_and_nothing_else_does() {
    let opener = FakeOpener::install();
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    // The link starts the message (so its first glyphs are a point on it)
    // and ends before the sentence's full stop.
    let tracked = "https://track.example/p?id=42&x=1. Thanks!";
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked(tracked).await.unwrap();
    v.say_acked("javascript:alert(1)").await.unwrap();
    // A right-to-left override inside a link: dropped on screen, and the
    // link opened is the one shown.
    let spoof = "https://evil.example/\u{202E}fdp.exe";
    v.say_acked(spoof).await.unwrap();
    d.until("the messages", |d| {
        d.has_id("composer")
            && d.app.workspace.desk.selected.is_some_and(|c| {
                let have = |b: &str| {
                    d.app.workspace.desk.convs[&c]
                        .messages
                        .iter()
                        .any(|m| m.body == b)
                };
                have(tracked) && have("javascript:alert(1)") && have(spoof)
            })
    })
    .await;
    let body = format!("body-{}", message_id(&d, tracked));
    d.until("the link drawn", |d| d.has_id(&body)).await;

    // A click on the link runs the opener with exactly the link.
    let b = bounds_of(&d, &body);
    let produced = click_at(&mut d, Point::new(b.x + 6.0, b.y + 8.0));
    assert_eq!(produced.len(), 1, "{produced:?}");
    for m in produced {
        d.apply(m);
    }
    d.until("the opener run", |_| opener.read().is_some()).await;
    assert_eq!(
        opener.read().as_deref(),
        Some("https://track.example/p?id=42&x=1")
    );
    assert!(d.app.workspace.desk.banner.is_none());

    // The words after the link are not part of it: a click there does
    // nothing.
    std::fs::remove_file(opener.opened()).unwrap();
    let b = bounds_of(&d, &body);
    assert!(b.height < 30.0, "the message is one line: {b:?}");
    let produced = click_at(&mut d, Point::new(b.x + b.width - 3.0, b.y + 8.0));
    assert!(
        produced.is_empty(),
        "a click past the link did {produced:?}"
    );

    // The spoofed one: opened without the override, as it is shown.
    let spoof_body = format!("body-{}", message_id(&d, spoof));
    let b = bounds_of(&d, &spoof_body);
    for m in click_at(&mut d, Point::new(b.x + 6.0, b.y + 8.0)) {
        d.apply(m);
    }
    d.until("the opener run again", |_| opener.read().is_some())
        .await;
    assert_eq!(
        opener.read().as_deref(),
        Some("https://evil.example/fdp.exe")
    );

    // `javascript:` is text: drawn as such, and a click on it does nothing.
    let (_, js) = d
        .text_boxes()
        .into_iter()
        .find(|(t, _)| t == "javascript:alert(1)")
        .expect("javascript: shown as plain text");
    let produced = click_at(&mut d, js.center());
    assert!(produced.is_empty(), "clicking javascript: did {produced:?}");

    // An opener that fails says so in the banner; the app carries on.
    std::fs::write(opener.dir.path().join("fail"), "").unwrap();
    let b = bounds_of(&d, &body);
    for m in click_at(&mut d, Point::new(b.x + 6.0, b.y + 8.0)) {
        d.apply(m);
    }
    d.until("the failure in the banner", |d| {
        d.app
            .workspace
            .desk
            .banner
            .as_ref()
            .map(holdfast_agent::ui::i18n::Words::text)
            .is_some_and(|b| b.starts_with("Could not open https://track.example/p?id=42&x=1"))
    })
    .await;
    assert!(d.has_id("banner"));

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_puts_the_message_text_on_the_clipboard() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    // Invisible characters are not copied: the clipboard gets the text as
    // it reads on screen.
    let said = "Order 7731\u{200B}-B, \u{202E}please";
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked(said).await.unwrap();
    d.until("the message", |d| d.shows("Order 7731-B, please"))
        .await;
    let copy = format!("copy-{}", message_id(&d, said));
    assert_eq!(d.texts_in(&copy), ["Copy"]);
    d.click_id(&copy);
    assert_eq!(d.texts_in(&copy), ["Copied"]);
    // The write is a task of its own; give it its turn.
    d.until("the clipboard written", |d| {
        !d.clipboard.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*d.clipboard.lock().unwrap(), ["Order 7731-B, please"]);
    // The sign goes after a moment.
    d.until("the Copy label back", |d| d.texts_in(&copy) == ["Copy"])
        .await;

    // The agent's own replies have one too.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Found it: 7731-B ships today.");
        ui.tap_key(Named::Enter);
    });
    d.until("the reply", |d| {
        d.label_of("Found it: 7731-B ships today.").is_some()
    })
    .await;
    let reply = format!("copy-{}", message_id(&d, "Found it: 7731-B ships today."));
    d.click_id(&reply);
    d.until("the reply copied", |d| {
        d.clipboard.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        d.clipboard.lock().unwrap()[1],
        "Found it: 7731-B ships today."
    );

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
