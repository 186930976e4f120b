//! Links and copying in the transcript: `http`, `https` and `mailto` links
//! open with the OS's opener (a fake `xdg-open` first on PATH here, which
//! records what it was given), anything else stays inert text, each
//! message's Copy button writes its text to the clipboard, and message text
//! can be selected with the mouse and copied with Ctrl+C.

use std::path::PathBuf;

use holdfast_client::protocol::ids::MsgId;
use iced::keyboard::{self, Key, Modifiers, key};
use iced::{Point, mouse};
use iced_test::core::clipboard::{Clipboard, Kind};
use iced_test::runtime::user_interface::{Cache, UserInterface};

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

/// The clipboard a window hands its widgets, recording what they write.
#[derive(Default)]
struct Recorder(Vec<String>);

impl Clipboard for Recorder {
    fn read(&self, _kind: Kind) -> Option<String> {
        None
    }
    fn write(&mut self, _kind: Kind, contents: String) {
        self.0.push(contents);
    }
}

/// The app in a window, as iced's runtime runs it: each event goes to
/// the view built from the app as it is now, with the widgets' state (a
/// selection, the cursor in a field) kept from one build to the next, and
/// what the event produced goes through the app's `update` before the
/// next. The widgets are handed a clipboard that records what they write
/// (a simulator hands them one that drops it), since a selection is
/// copied by its widget, not by a task of the app.
struct Window {
    renderer: iced_test::renderer::Renderer,
    cache: Option<Cache>,
    cursor: mouse::Cursor,
    modifiers: Modifiers,
    clipboard: Recorder,
    /// Every message the view produced, in order (as `Debug`).
    produced: Vec<String>,
}

impl Window {
    fn open() -> Self {
        // As the simulators are made (`settings()`): the same default font
        // and size, so the same layout as `bounds_of` measures.
        let renderer = iced_test::futures::futures::executor::block_on(
            <iced_test::renderer::Renderer as iced_test::core::renderer::Headless>::new(
                iced::Font::with_name("Fira Sans"),
                Settings::default().default_text_size,
                None,
            ),
        )
        .expect("a headless renderer");
        Self {
            renderer,
            cache: Some(Cache::default()),
            cursor: mouse::Cursor::Unavailable,
            modifiers: Modifiers::empty(),
            clipboard: Recorder::default(),
            produced: Vec::new(),
        }
    }

    fn event(&mut self, d: &mut Driver, e: iced::Event) {
        let mut messages = Vec::new();
        {
            let mut ui = UserInterface::build(
                d.app.view(),
                iced::Size::new(d.size.0, d.size.1),
                self.cache.take().unwrap_or_default(),
                &mut self.renderer,
            );
            let _ = ui.update(
                &[e],
                self.cursor,
                &mut self.renderer,
                &mut self.clipboard,
                &mut messages,
            );
            self.cache = Some(ui.into_cache());
        }
        for m in messages {
            self.produced.push(format!("{m:?}"));
            d.apply(m);
        }
    }

    fn move_to(&mut self, d: &mut Driver, at: Point) {
        self.cursor = mouse::Cursor::Available(at);
        self.event(
            d,
            iced::Event::Mouse(mouse::Event::CursorMoved { position: at }),
        );
    }

    /// Press the left button at `from`, move to `to`, let go.
    fn drag(&mut self, d: &mut Driver, from: Point, to: Point) {
        self.move_to(d, from);
        self.event(
            d,
            iced::Event::Mouse(mouse::Event::ButtonPressed(mouse::Button::Left)),
        );
        self.move_to(d, Point::new((from.x + to.x) / 2.0, (from.y + to.y) / 2.0));
        self.move_to(d, to);
        self.event(
            d,
            iced::Event::Mouse(mouse::Event::ButtonReleased(mouse::Button::Left)),
        );
    }

    fn click(&mut self, d: &mut Driver, at: Point) {
        self.drag(d, at, at);
    }

    /// Hold the modifiers (as the window reports a change in them) and
    /// press and release `k` with them.
    fn chord(&mut self, d: &mut Driver, modifiers: Modifiers, k: Key, text: Option<&str>) {
        if modifiers != self.modifiers {
            self.modifiers = modifiers;
            self.event(
                d,
                iced::Event::Keyboard(keyboard::Event::ModifiersChanged(modifiers)),
            );
        }
        let physical = key::Physical::Unidentified(key::NativeCode::Unidentified);
        self.event(
            d,
            iced::Event::Keyboard(keyboard::Event::KeyPressed {
                key: k.clone(),
                modified_key: k.clone(),
                physical_key: physical,
                location: keyboard::Location::Standard,
                modifiers,
                text: text.map(Into::into),
                repeat: false,
            }),
        );
        self.event(
            d,
            iced::Event::Keyboard(keyboard::Event::KeyReleased {
                key: k.clone(),
                modified_key: k,
                physical_key: physical,
                location: keyboard::Location::Standard,
                modifiers,
            }),
        );
    }

    /// Ctrl (⌘ on macOS) and `c`, then Ctrl let go.
    fn ctrl(&mut self, d: &mut Driver, c: &str) {
        let ctrl = if cfg!(target_os = "macos") {
            Modifiers::LOGO
        } else {
            Modifiers::CTRL
        };
        self.chord(d, ctrl, Key::Character(c.into()), None);
        self.modifiers = Modifiers::empty();
        self.event(
            d,
            iced::Event::Keyboard(keyboard::Event::ModifiersChanged(Modifiers::empty())),
        );
    }

    fn type_text(&mut self, d: &mut Driver, s: &str) {
        for c in s.chars() {
            let c = c.to_string();
            self.chord(
                d,
                Modifiers::empty(),
                Key::Character(c.as_str().into()),
                Some(&c),
            );
        }
    }

    fn copied(&self) -> &[String] {
        &self.clipboard.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_text_selects_with_the_mouse_and_copies_with_ctrl_c() {
    let opener = FakeOpener::install();
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    // Invisible characters are not copied: what is selected is what is on
    // screen.
    let said = "Order 7731\u{200B}-B ships on Tuesday";
    let shown = "Order 7731-B ships on Tuesday";
    let linked = "Parcel https://track.example/p?id=42 is late";
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked(said).await.unwrap();
    v.say_acked(linked).await.unwrap();
    d.until("the messages", |d| {
        d.has_id("composer")
            && d.app.workspace.desk.selected.is_some_and(|c| {
                d.app.workspace.desk.convs[&c]
                    .messages
                    .iter()
                    .any(|m| m.body == linked)
            })
    })
    .await;
    let body = format!("body-{}", message_id(&d, said));
    let link_body = format!("body-{}", message_id(&d, linked));
    d.until("the text drawn", |d| {
        d.has_id(&body) && d.has_id(&link_body)
    })
    .await;
    let b = bounds_of(&d, &body);
    let lb = bounds_of(&d, &link_body);
    let composer = bounds_of(&d, "composer");
    assert!(
        b.height < 30.0 && lb.height < 30.0,
        "one line each: {b:?} {lb:?}"
    );
    let mid = b.y + b.height / 2.0;

    let mut w = Window::open();
    let d = &mut d;
    // Nothing selected: Ctrl+C writes nothing.
    w.ctrl(d, "c");
    assert!(w.copied().is_empty(), "{:?}", w.copied());

    // Dragged from its start to past its end: the whole text.
    let past_end = Point::new(b.x + b.width + 40.0, mid);
    w.drag(d, Point::new(b.x + 1.0, mid), past_end);
    assert!(w.copied().is_empty(), "a selection alone copies nothing");
    w.ctrl(d, "c");
    assert_eq!(w.copied(), [shown]);

    // Dragged to the middle: the words up to there, not the rest.
    w.drag(
        d,
        Point::new(b.x + 1.0, mid),
        Point::new(b.x + b.width / 2.0, mid),
    );
    w.ctrl(d, "c");
    let part = w.copied()[1].clone();
    assert!(
        shown.starts_with(&part) && part.len() >= 5 && part.len() < shown.len() - 5,
        "{part:?}"
    );

    // A drag that starts on a link selects it; it does not open it.
    let lmid = lb.y + lb.height / 2.0;
    w.drag(
        d,
        Point::new(lb.x + 1.0, lmid),
        Point::new(lb.x + lb.width + 40.0, lmid),
    );
    w.ctrl(d, "c");
    assert_eq!(w.copied()[2], linked);
    assert!(
        !w.produced.iter().any(|m| m.contains("OpenLink")),
        "{:?}",
        w.produced
    );

    // A press elsewhere ends the selection: Ctrl+C has nothing to copy.
    w.click(d, Point::new(b.x + b.width + 60.0, mid));
    w.ctrl(d, "c");
    assert_eq!(w.copied().len(), 3, "{:?}", w.copied());

    // The composer keeps its own Ctrl+C: its selection is copied, and a
    // message's selection made before does not take its place.
    w.drag(d, Point::new(b.x + 1.0, mid), past_end);
    w.click(d, composer.center());
    w.type_text(d, "draft words");
    w.ctrl(d, "a");
    w.ctrl(d, "c");
    assert_eq!(w.copied()[3..], ["draft words"]);
    assert!(opener.read().is_none());

    // The draft was typed through the real composer.
    let conv = d.app.workspace.desk.selected.unwrap();
    assert_eq!(
        d.app.workspace.desk.drafts[&conv].text().trim_end(),
        "draft words"
    );

    // A click on the link still opens it.
    let lb = bounds_of(d, &link_body);
    let at = Point::new(lb.x + lb.width * 0.45, lb.y + lb.height / 2.0);
    let produced = click_at(d, at);
    assert_eq!(produced.len(), 1, "{produced:?}");
    for m in produced {
        d.apply(m);
    }
    d.until("the opener run", |_| opener.read().is_some()).await;
    assert_eq!(
        opener.read().as_deref(),
        Some("https://track.example/p?id=42")
    );

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
