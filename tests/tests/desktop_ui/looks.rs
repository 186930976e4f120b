//! Looks that last a day (issue 17): the dark theme and its switch, the
//! selected row readable in it (measured on the drawn pixels), the side
//! panels collapsed at 1024×700 by button and by shortcut, and the room of
//! a 1920×1080 window used. With `HOLDFAST_WRITE_SCREENSHOTS` set, the
//! dark workspace and the collapsed 1024×700 one are written to
//! `assets/screenshots/`.

use holdfast_agent::ui::prefs::Prefs;
use holdfast_agent::ui::screen::workspace::chat::BUBBLE_MAX;
use holdfast_agent::ui::theme::{self, Choice, DARK, LIGHT, Palette};
use iced::theme::Mode;

use super::*;

use crate::support::desktop_demo as demo;

/// Sign in, let a visitor in and invite them; they answer. The chat is
/// open and selected.
pub(super) async fn chat_open(d: &mut Driver, srv: &TestServer) -> WsVisitor {
    d.sign_in("alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let vid = v.visitor.clone();
    d.until("the visitor in the list", |d| {
        d.has_id(&format!("visitor-{vid}"))
    })
    .await;
    d.click_id(&format!("invite-{vid}"));
    d.until("the invited conversation to open", |d| d.has_id("composer"))
        .await;
    v.wait_message("Hi! Can I help you with anything?")
        .await
        .unwrap();
    v.say_acked("Where is my parcel? It was due on Monday.")
        .await
        .unwrap();
    d.until("the visitor's message", |d| {
        d.shows("Where is my parcel? It was due on Monday.")
    })
    .await;
    v
}

/// The view drawn with the app's own theme, decoded to RGBA (the
/// simulator draws at scale 2).
pub(super) fn render(d: &Driver) -> image::RgbaImage {
    let dir = tempfile::tempdir().unwrap();
    let mut ui = Simulator::with_size(settings(), d.size, d.app.view());
    let snap = ui.snapshot(&holdfast_agent::ui::theme(&d.app)).unwrap();
    // Writes the file when none is there, under a name with the renderer's
    // in it: the only file in a fresh directory.
    let _ = snap.matches_image(dir.path().join("shot.png")).unwrap();
    let written = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    image::open(written).unwrap().into_rgba8()
}

/// With `HOLDFAST_LOOK_DIR` set, the screen as it is now goes there as
/// `name`, for a person to look at (never compared).
pub(super) fn look(d: &Driver, name: &str) {
    if let Some(dir) = std::env::var_os("HOLDFAST_LOOK_DIR") {
        render(d).save(Path::new(&dir).join(name)).unwrap();
    }
}

pub(super) fn keep_screenshot(img: &image::RgbaImage, name: &str) {
    if std::env::var_os("HOLDFAST_WRITE_SCREENSHOTS").is_some() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/screenshots");
        img.save(out.join(name)).unwrap();
    }
}

fn bounds_of(d: &Driver, id: &str) -> Rectangle {
    let mut ui = Simulator::with_size(settings(), d.size, d.app.view());
    let target = ui
        .find(Id::from(id.to_owned()))
        .unwrap_or_else(|e| panic!("no {id}: {e}"));
    iced_test::selector::Bounded::bounds(&target)
}

fn text_bounds(d: &Driver, needle: &str) -> Rectangle {
    d.text_boxes()
        .into_iter()
        .find(|(t, _)| t.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen"))
        .1
}

fn rgb(p: image::Rgba<u8>) -> iced::Color {
    iced::Color::from_rgb8(p[0], p[1], p[2])
}

/// The pixels inside `area` (logical pixels), at the snapshot's scale.
// Widget bounds on a window of at most 1920 px: small and not negative.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn pixels(img: &image::RgbaImage, area: Rectangle) -> Vec<iced::Color> {
    let mut out = Vec::new();
    let (x0, y0) = ((area.x * 2.0).ceil() as u32, (area.y * 2.0).ceil() as u32);
    let (x1, y1) = (
        ((area.x + area.width) * 2.0).floor() as u32,
        ((area.y + area.height) * 2.0).floor() as u32,
    );
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            out.push(rgb(*img.get_pixel(x, y)));
        }
    }
    out
}

/// The colour most of an area is painted.
fn dominant(px: &[iced::Color]) -> iced::Color {
    let mut counts: std::collections::HashMap<[u8; 3], usize> = Default::default();
    for c in px {
        let k = c.into_rgba8();
        *counts.entry([k[0], k[1], k[2]]).or_default() += 1;
    }
    let ([r, g, b], _) = counts.into_iter().max_by_key(|(_, n)| *n).unwrap();
    iced::Color::from_rgb8(r, g, b)
}

/// How readable the text drawn in `area` is: the contrast between the
/// area's background and the glyph pixel furthest from it.
fn drawn_contrast(img: &image::RgbaImage, area: Rectangle) -> f32 {
    let px = pixels(img, area);
    let bg = dominant(&px);
    px.iter()
        .map(|c| theme::contrast(*c, bg))
        .fold(1.0, f32::max)
}

fn same(a: iced::Color, b: iced::Color) -> bool {
    let (a, b) = (a.into_rgba8(), b.into_rgba8());
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dark_mode_switches_the_palette_and_the_selected_row_stays_readable() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    let _v = chat_open(&mut d, &srv).await;
    let conv = d.app.workspace.desk.selected.unwrap();
    // The OS says nothing here: the default, System, is light.
    assert_eq!(d.app.prefs.theme, Choice::System);
    assert!(std::ptr::eq(d.app.palette(), &LIGHT));

    // The switch in the top bar: Dark.
    d.click_id("theme-dark");
    assert_eq!(d.app.prefs.theme, Choice::Dark);
    let dark = holdfast_agent::ui::theme(&d.app);
    assert!(std::ptr::eq(Palette::of(&dark), &DARK));
    assert_eq!(
        dark.extended_palette().background.base.color,
        DARK.background
    );
    let saved = Prefs::load(&dir.path().join("prefs.json"));
    assert_eq!(saved.theme, Choice::Dark, "the choice is remembered");
    assert_eq!(saved.username, "alice", "and the account with it");

    // Drawn: the window is the dark background, the open conversation's
    // row the dark selection colour, and its name and preview read at AA.
    let img = render(&d);
    let top = rgb(*img.get_pixel(4, 4));
    assert!(same(top, DARK.background), "window drawn {top:?}");
    let row = bounds_of(&d, &format!("conv-{conv}"));
    let row_bg = dominant(&pixels(&img, row));
    assert!(same(row_bg, DARK.selected), "selected row drawn {row_bg:?}");
    let rows: Vec<(String, Rectangle)> = d
        .text_boxes()
        .into_iter()
        .filter(|(_, b)| row.contains(b.center()))
        .collect();
    assert!(rows.len() >= 2, "name and preview in the row: {rows:?}");
    for (t, b) in &rows {
        let c = drawn_contrast(&img, *b);
        assert!(c >= 4.5, "{t:?} on the selected row is {c:.2}:1");
    }
    // The visitor's words in their bubble, too.
    let said = text_bounds(&d, "Where is my parcel?");
    let c = drawn_contrast(&img, said);
    assert!(c >= 4.5, "the visitor's message is {c:.2}:1");

    // System follows the OS, both ways, live.
    d.click_id("theme-system");
    d.apply(Message::SystemTheme(Mode::Dark));
    assert!(std::ptr::eq(d.app.palette(), &DARK));
    d.apply(Message::SystemTheme(Mode::Light));
    assert!(std::ptr::eq(d.app.palette(), &LIGHT));
    let img = render(&d);
    let row_bg = dominant(&pixels(&img, bounds_of(&d, &format!("conv-{conv}"))));
    assert!(
        same(row_bg, LIGHT.selected),
        "light selected row {row_bg:?}"
    );
    // Light chosen outright stays light whatever the OS says.
    d.click_id("theme-light");
    d.apply(Message::SystemTheme(Mode::Dark));
    assert!(std::ptr::eq(d.app.palette(), &LIGHT));

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// Ctrl (⌘) plus a letter, as the window reports it.
fn shortcut(letter: &str) -> Option<Message> {
    let mut ev = iced_test::simulator::press_key(
        iced::keyboard::Key::Character(letter.into()),
        Some(letter.into()),
    );
    if let iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { modifiers, .. }) = &mut ev {
        *modifiers = iced::keyboard::Modifiers::COMMAND;
    }
    holdfast_agent::ui::window_event(ev, iced::event::Status::Ignored, iced::window::Id::unique())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_1024_by_700_the_panels_collapse_and_the_chat_keeps_its_width() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.size = (1024.0, 700.0);
    let _v = chat_open(&mut d, &srv).await;
    let open = bounds_of(&d, "transcript").width;
    assert!(open < 500.0, "both panels open leave {open}");

    // The lists by their button, the details by the shortcut.
    d.click_id("collapse-lists");
    assert!(d.has_id("expand-lists") && !d.has_id("side"));
    let m = shortcut("d").expect("Ctrl+D is a shortcut");
    d.apply(m);
    assert!(d.has_id("expand-details") && !d.has_id("details"));
    let wide = bounds_of(&d, "transcript").width;
    assert!(wide > 900.0, "collapsed, the chat has {wide}");
    // Bubbles stay a readable width however wide the chat.
    let said = text_bounds(&d, "Where is my parcel?");
    assert!(said.width <= BUBBLE_MAX, "{said:?}");
    assert!(d.has_id("composer"));
    // The rail still says what waits: away, a second visitor's chat
    // waits in the queue.
    d.go_away().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut w = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    w.say_acked("hello?").await.unwrap();
    d.until("the waiting count on the rail", |d| {
        d.has_id("rail-waiting")
    })
    .await;
    assert_eq!(d.texts_in("rail-waiting"), ["1"]);

    let img = render(&d);
    keep_screenshot(&img, "desktop-collapsed-1024.png");

    // Remembered: the next start has them collapsed too.
    let saved = Prefs::load(&dir.path().join("prefs.json"));
    assert!(saved.panels.lists_collapsed && saved.panels.details_collapsed);

    // And back: Ctrl+B shows the lists, the rail's button the details.
    d.apply(shortcut("b").unwrap());
    assert!(d.has_id("side"));
    d.click_id("expand-details");
    assert!(d.has_id("details"));
    assert_eq!(shortcut("x").map(|_| ()), None, "Ctrl+X is the editor's");

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_1920_by_1080_the_room_is_used() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.size = (1920.0, 1080.0);
    let _v = chat_open(&mut d, &srv).await;

    // The visitors have a column of their own beside the chats, and the
    // details stay beside the chat, wider than on a small window.
    let side = bounds_of(&d, "side");
    let visitors = bounds_of(&d, "visitors-column");
    let details = bounds_of(&d, "details");
    let chat = bounds_of(&d, "transcript");
    assert!(visitors.x >= side.x + side.width, "{side:?} {visitors:?}");
    assert!(
        chat.x >= visitors.x + visitors.width,
        "{visitors:?} {chat:?}"
    );
    assert!(details.x >= chat.x + chat.width, "{chat:?} {details:?}");
    assert!(details.width > 300.0, "{details:?}");
    // The chat is neither squeezed nor a screen-wide line.
    assert!(chat.width > 700.0 && chat.width < 1000.0, "{chat:?}");
    let said = text_bounds(&d, "Where is my parcel?");
    assert!(said.width <= BUBBLE_MAX, "{said:?}");

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// The demo workspace (three chats, one handed over with a note, one
/// waiting, visitors browsing) in dark mode, with Lena's chat open: every
/// text in the selected row, the note and the own bubbles reads at AA on
/// the drawn pixels. This is where `desktop-dark.png` comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_workspace_in_dark_mode_reads_at_aa() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("agent.sqlite3");
    let _demo = demo::populate(&srv, &store).await;
    let mut opts = options(dir.path(), srv.agent_addr().to_string());
    opts.username = Some("alice".into());
    opts.password = Some(zeroize::Zeroizing::new(PASSWORD.to_owned()));
    let mut d = Driver::new(opts);
    d.until("the demo workspace", |d| {
        d.shows("Connected")
            && d.app.workspace.desk.mine().len() == 3
            && d.shows("Waiting (1)")
            && d.shows("Team (2)")
    })
    .await;
    let lena = d
        .app
        .workspace
        .desk
        .mine()
        .iter()
        .find(|c| c.info.visitor_name.as_deref() == Some("Lena Fischer"))
        .map(|c| c.info.id)
        .unwrap();
    d.click_id(&format!("conv-{lena}"));
    d.until("Lena's chat with the note", |d| {
        d.shows("Duplicate charge on INV-2231")
            && d.has_id("composer")
            && d.shows("On the site now")
            && d.shows("Past conversations")
            && !d.shows("Loading…")
    })
    .await;
    d.click_id("theme-dark");
    let img = render(&d);
    let row = bounds_of(&d, &format!("conv-{lena}"));
    assert!(same(dominant(&pixels(&img, row)), DARK.selected));
    for needle in [
        "Lena Fischer",
        "Hi Lena, I'm Alice from billing",
        "Duplicate charge on INV-2231",
        "Note from Bob",
        "Sorry about that, Lena.",
        "I was charged twice",
        "Waiting (1)",
    ] {
        // Those scrolled out of the window are not drawn: the visible ones
        // are measured, and there is at least one.
        let window = Rectangle::new(iced::Point::ORIGIN, d.size.into());
        let mut seen = 0;
        for (t, b) in d
            .text_boxes()
            .into_iter()
            .filter(|(t, _)| t.contains(needle))
        {
            if !window.contains(b.position()) || !window.contains(b.center()) {
                continue;
            }
            seen += 1;
            let c = drawn_contrast(&img, b);
            assert!(c >= 4.5, "{t:?} is drawn at {c:.2}:1");
        }
        assert!(seen > 0, "{needle:?} is not on screen");
    }
    keep_screenshot(&img, "desktop-dark.png");

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
