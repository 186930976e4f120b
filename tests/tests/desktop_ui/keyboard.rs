//! Keyboard first: Alt+↑/↓ between chats in the lists' order, Ctrl+K to
//! jump to a chat by name, Ctrl+Enter to accept the oldest waiting chat
//! (from inside the composer too, which keeps Enter for sending), Esc, Tab
//! round the workspace's regions with ↑/↓ and Enter in a focused list, and
//! the cursor put in the composer when a chat is opened.
//!
//! Keys reach the app as the window reports them: through
//! `ui::window_event` (and `ui::jump_keys` while the jump box is open), the
//! functions the app's subscription maps events with. Focus is a widget
//! operation, which a simulator built per interaction cannot keep: the
//! driver records the operations the app's tasks ask for, and the tests run
//! them against stand-in fields to see which one they focus.

use holdfast_agent::ui::screen::workspace::ring::{Item, Region};
use holdfast_client::protocol::agent::ConversationId;
use holdfast_client::protocol::visitor::VisitorIn;
use iced::keyboard::{self, Key, Modifiers, key};
use iced_test::core::widget::operation::{Focusable, Operation, Outcome};

use super::*;

fn key_event(key: Key, modifiers: Modifiers) -> iced::Event {
    iced::Event::Keyboard(keyboard::Event::KeyPressed {
        key: key.clone(),
        modified_key: key,
        physical_key: key::Physical::Unidentified(key::NativeCode::Unidentified),
        location: keyboard::Location::Standard,
        modifiers,
        text: None,
        repeat: false,
    })
}

fn ctrl() -> Modifiers {
    // What `modifiers.command()` reads on this platform.
    if cfg!(target_os = "macos") {
        Modifiers::LOGO
    } else {
        Modifiers::CTRL
    }
}

/// A stand-in for a focusable field with this id.
struct Field {
    id: Id,
    focused: bool,
}

impl Focusable for Field {
    fn is_focused(&self) -> bool {
        self.focused
    }
    fn focus(&mut self) {
        self.focused = true;
    }
    fn unfocus(&mut self) {
        self.focused = false;
    }
}

fn run(op: &mut dyn Operation, fields: &mut [Field]) {
    op.traverse(&mut |op| {
        for f in fields.iter_mut() {
            let id = f.id.clone();
            op.focusable(Some(&id), Rectangle::default(), f);
        }
    });
    if let Outcome::Chain(mut next) = op.finish() {
        run(next.as_mut(), fields);
    }
}

impl Driver {
    /// A key pressed, as the window reports it wherever focus is.
    pub(super) fn press(&mut self, key: Key, modifiers: Modifiers) {
        let event = key_event(key, modifiers);
        let status = iced::event::Status::Ignored;
        let window = iced::window::Id::unique();
        let jump_open = self.app.workspace.jump.is_some();
        let mut produced: Vec<Message> =
            holdfast_agent::ui::window_event(event.clone(), status, window)
                .into_iter()
                .collect();
        if jump_open {
            produced.extend(holdfast_agent::ui::jump_keys(event, status, window));
        }
        for m in produced {
            self.apply(m);
        }
    }

    /// Run the focus operations asked for since the last call over fields
    /// with these ids (the one at `focused` focused to begin with), and
    /// say which one ends up focused. `None`: no operation came, or none
    /// focused. The operations come from tasks running beside the test,
    /// so this waits for the first, and a moment for any after it.
    async fn focus_after(&mut self, ids: &[&str], focused: Option<usize>) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.operations.lock().unwrap().is_empty() {
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ops: Vec<_> = std::mem::take(&mut *self.operations.lock().unwrap());
        let mut fields: Vec<Field> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Field {
                id: Id::from((*id).to_owned()),
                focused: Some(i) == focused,
            })
            .collect();
        for mut op in ops {
            run(op.as_mut(), &mut fields);
        }
        let on: Vec<usize> = (0..fields.len()).filter(|i| fields[*i].focused).collect();
        assert!(on.len() <= 1, "two fields focused: {on:?}");
        on.first().map(|i| ids[*i].to_owned())
    }

    /// Let the tasks started so far finish, and forget their operations.
    pub(super) async fn forget_focus(&mut self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.operations.lock().unwrap().clear();
    }

    fn bounds(&self, id: &str) -> Rectangle {
        let mut ui = Simulator::with_size(settings(), self.size, self.app.view());
        let target = ui
            .find(Id::from(id.to_owned()))
            .unwrap_or_else(|e| panic!("no {id}: {e}"));
        iced_test::selector::Bounded::bounds(&target)
    }

    fn selected(&self) -> Option<ConversationId> {
        self.app.workspace.desk.selected
    }
}

/// The fields a focus could go to in the workspace.
const FIELDS: [&str; 3] = ["composer", "jump-input", "transfer-note"];

async fn named_visitor(srv: &TestServer, name: &str, says: &str) -> WsVisitor {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.send_json(&VisitorIn::Identify {
        id: format!("user-{name}"),
        name: Some(name.into()),
        email: None,
        hash: None,
        attrs: Default::default(),
    })
    .await
    .unwrap();
    v.say_acked(says).await.unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_arrows_and_ctrl_k_move_between_chats_and_focus_the_composer() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;

    let _ann = named_visitor(&srv, "Ann Lee", "first question").await;
    let _bo = named_visitor(&srv, "Bo Chen", "second question").await;
    d.until("both chats mine and named", |d| {
        let mine = d.app.workspace.desk.mine();
        mine.len() == 2
            && mine
                .iter()
                .all(|c| c.info.visitor_name.is_some() && c.last_said().is_some())
    })
    .await;
    let by_name = |d: &Driver, name: &str| {
        d.app
            .workspace
            .desk
            .mine()
            .iter()
            .find(|c| c.info.visitor_name.as_deref() == Some(name))
            .map(|c| c.info.id)
            .unwrap()
    };
    let (ann, bo) = (by_name(&d, "Ann Lee"), by_name(&d, "Bo Chen"));
    // The order on screen, top to bottom.
    let (top, bottom) = if d.bounds(&format!("conv-{ann}")).y < d.bounds(&format!("conv-{bo}")).y {
        (ann, bo)
    } else {
        (bo, ann)
    };
    // The first chat opened by itself; that took no focus.
    assert!(d.selected().is_some());
    d.forget_focus().await;

    // Alt+↑ up to the top, and no further.
    d.press(Key::Named(Named::ArrowUp), Modifiers::ALT);
    d.press(Key::Named(Named::ArrowUp), Modifiers::ALT);
    assert_eq!(d.selected(), Some(top));
    d.forget_focus().await;
    // Alt+↓ to the next one, with the cursor in its composer.
    d.press(Key::Named(Named::ArrowDown), Modifiers::ALT);
    assert_eq!(d.selected(), Some(bottom));
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer"),
        "opening a chat puts the cursor in its composer"
    );
    let want = if bottom == ann { "Ann Lee" } else { "Bo Chen" };
    assert!(
        d.texts_in("chat-header").iter().any(|t| t == want),
        "{:?}",
        d.texts_in("chat-header")
    );
    d.press(Key::Named(Named::ArrowDown), Modifiers::ALT);
    assert_eq!(d.selected(), Some(bottom), "no wrapping past the end");
    // Plain arrows are the text fields', not a move.
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    assert_eq!(d.selected(), Some(bottom));
    d.press(Key::Named(Named::ArrowUp), Modifiers::ALT);
    assert_eq!(d.selected(), Some(top));
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );

    // A click in the list focuses the composer too.
    d.click_id(&format!("conv-{bottom}"));
    assert_eq!(d.selected(), Some(bottom));
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );

    // Tab moves on from the chat (the composer lets go of the cursor),
    // Shift+Tab comes back to it (the composer has it again).
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(d.focus_after(&FIELDS, Some(0)).await.as_deref(), None);
    d.press(Key::Named(Named::Tab), Modifiers::SHIFT);
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );

    // Ctrl+K: the jump box, with the cursor in it, listing both chats.
    assert!(!d.has_id("jump"));
    d.press(Key::Character("k".into()), ctrl());
    assert!(d.has_id("jump"));
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("jump-input")
    );
    assert!(d.has_id(&format!("jump-{ann}")) && d.has_id(&format!("jump-{bo}")));
    // Filtered as typed, ignoring case.
    d.interact(|ui| {
        ui.click(Id::new("jump-input")).unwrap();
        ui.typewrite("CHEN");
    });
    assert!(d.has_id(&format!("jump-{bo}")) && !d.has_id(&format!("jump-{ann}")));
    d.interact(|ui| {
        ui.click(Id::new("jump-input")).unwrap();
        ui.tap_key(Named::Enter);
    });
    assert_eq!(d.selected(), Some(bo));
    assert!(!d.has_id("jump"), "opening a chat closes the box");
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );

    // ↓ moves the highlight to the second match, Enter opens it.
    d.press(Key::Character("k".into()), ctrl());
    d.interact(|ui| {
        ui.click(Id::new("jump-input")).unwrap();
        // In both names.
        ui.typewrite("e");
    });
    assert_eq!(d.app.workspace.jump.as_ref().map(|j| j.highlight), Some(0));
    d.press(Key::Named(Named::ArrowDown), Modifiers::empty());
    d.interact(|ui| {
        ui.click(Id::new("jump-input")).unwrap();
        ui.tap_key(Named::Enter);
    });
    assert_eq!(d.selected(), Some(bottom), "the second in the lists' order");

    // No match says so; Esc closes the box and leaves the open chat open.
    d.press(Key::Character("k".into()), ctrl());
    d.interact(|ui| {
        ui.click(Id::new("jump-input")).unwrap();
        ui.typewrite("zzz");
    });
    assert!(d.shows("No conversation has that name."));
    d.press(Key::Named(Named::Escape), Modifiers::empty());
    assert!(!d.has_id("jump"));
    assert_eq!(d.selected(), Some(bottom));

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_enter_accepts_the_oldest_waiting_chat_even_from_the_composer() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;
    // Away: chats wait in the queue.
    d.go_away().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Nothing waits: Ctrl+Enter does nothing.
    d.press(Key::Named(Named::Enter), ctrl());
    assert_eq!(d.selected(), None);

    let _first = named_visitor(&srv, "Ann Lee", "anyone?").await;
    d.until("Ann waiting", |d| d.app.workspace.desk.queue().len() == 1)
        .await;
    let ann = d.app.workspace.desk.queue()[0].info.id;
    d.press(Key::Named(Named::Enter), ctrl());
    d.until("Ann's chat accepted and open", |d| {
        d.selected() == Some(ann) && d.app.workspace.desk.is_mine(ann) && d.has_id("composer")
    })
    .await;
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );

    // Two more wait, Bo first.
    let _bo = named_visitor(&srv, "Bo Chen", "hello").await;
    d.until("Bo waiting", |d| d.app.workspace.desk.queue().len() == 1)
        .await;
    let bo = d.app.workspace.desk.queue()[0].info.id;
    let _cy = named_visitor(&srv, "Cy Park", "hi").await;
    d.until("Cy waiting too", |d| {
        d.app.workspace.desk.queue().len() == 2
    })
    .await;
    assert_eq!(d.app.workspace.desk.queue()[0].info.id, bo);

    // Ctrl+Enter while writing in Ann's composer: the composer neither
    // sends nor adds a line, and Bo's chat is accepted.
    let press = key_event(Key::Named(Named::Enter), ctrl());
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("half");
        let _ = ui.simulate([press.clone()]);
    });
    d.press(Key::Named(Named::Enter), ctrl());
    assert_eq!(
        d.app.workspace.desk.drafts[&ann].text().trim_end(),
        "half",
        "Ctrl+Enter did not send or edit Ann's draft"
    );
    d.until("Bo's chat accepted and open", |d| {
        d.selected() == Some(bo) && d.app.workspace.desk.is_mine(bo)
    })
    .await;
    let waiting: Vec<ConversationId> = d
        .app
        .workspace
        .desk
        .queue()
        .iter()
        .map(|c| c.info.id)
        .collect();
    assert_eq!(waiting.len(), 1, "only the oldest was accepted");
    assert_ne!(waiting[0], bo);
    // Enter alone still sends.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Hi Bo");
        ui.tap_key(Named::Enter);
    });
    d.until("the reply to Bo", |d| d.label_of("Hi Bo").is_some())
        .await;

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// The screen as drawn now, and a way to read the colour just inside the
/// left edge of a widget, halfway down: where a focused region's frame or
/// a highlighted row's outline is. One drawing serves several reads: each
/// costs a whole frame.
struct Drawn {
    img: image::RgbaImage,
}

impl Drawn {
    fn now(d: &Driver) -> Self {
        Self {
            img: super::looks::render(d),
        }
    }

    // Widget bounds on a 1280 px window: small and not negative.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn edge(&self, d: &Driver, id: &str) -> iced::Color {
        let b = d.bounds(id);
        // The simulator draws at scale 2.
        let p = self.img.get_pixel(
            ((b.x + 1.0) * 2.0) as u32,
            ((b.y + b.height / 2.0) * 2.0) as u32,
        );
        iced::Color::from_rgb8(p[0], p[1], p[2])
    }
}

fn close(a: iced::Color, b: iced::Color) -> bool {
    let (a, b) = (a.into_rgba8(), b.into_rgba8());
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_goes_round_the_regions_and_the_arrows_work_the_focused_list() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    // Tall enough that the visitors, under the chats, are on screen.
    d.size = (1280.0, 1400.0);
    d.sign_in("alice").await;
    let _ann = named_visitor(&srv, "Ann Lee", "first question").await;
    let _bo = named_visitor(&srv, "Bo Chen", "second question").await;
    d.until("both chats mine, named, and both visitors listed", |d| {
        let mine = d.app.workspace.desk.mine();
        mine.len() == 2
            && mine
                .iter()
                .all(|c| c.info.visitor_name.is_some() && c.last_said().is_some())
            && d.app.workspace.desk.visitors.len() == 2
    })
    .await;
    let mine: Vec<ConversationId> = d
        .app
        .workspace
        .desk
        .mine()
        .iter()
        .map(|c| c.info.id)
        .collect();
    let (top, bottom) =
        if d.bounds(&format!("conv-{}", mine[0])).y < d.bounds(&format!("conv-{}", mine[1])).y {
            (mine[0], mine[1])
        } else {
            (mine[1], mine[0])
        };
    let opened = d.selected().expect("the first chat opened by itself");
    d.forget_focus().await;
    let ring = |d: &Driver| d.app.workspace.desk.ring.clone();
    let accent = d.app.palette().accent;
    let ink = d.app.palette().text;
    let lists_hint = "↑↓ choose · Enter open · Tab next area";
    // No region has the ring yet: no frame.
    assert!(!close(Drawn::now(&d).edge(&d, "region-lists"), accent));
    assert!(!d.shows(lists_hint));

    // Tab: the lists, framed, with the keys said and the open chat
    // highlighted; the composer lets go of the cursor.
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Lists));
    assert_eq!(ring(&d).highlight, Some(Item::Chat(opened)));
    assert_eq!(d.focus_after(&FIELDS, Some(0)).await, None);
    assert!(d.shows(lists_hint), "{:?}", d.texts());

    // ↑ to the top and no further, ↓ to the next; the open chat stays.
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    assert_eq!(ring(&d).highlight, Some(Item::Chat(top)));
    d.press(Key::Named(Named::ArrowDown), Modifiers::empty());
    assert_eq!(ring(&d).highlight, Some(Item::Chat(bottom)));
    assert_eq!(d.selected(), Some(opened));
    // The lists are framed, the highlighted row outlined in the text
    // colour.
    super::looks::look(&d, "ring-lists.png");
    let drawn = Drawn::now(&d);
    let framed = drawn.edge(&d, "region-lists");
    assert!(close(framed, accent), "{framed:?} is not {accent:?}");
    let outlined = drawn.edge(&d, &format!("conv-{bottom}"));
    assert!(close(outlined, ink), "{outlined:?} is not {ink:?}");
    assert!(!close(drawn.edge(&d, &format!("conv-{top}")), ink));

    // Enter opens it, with the cursor in its composer: the ring is on the
    // chat now, framed.
    d.press(Key::Named(Named::Enter), Modifiers::empty());
    assert_eq!(d.selected(), Some(bottom));
    assert_eq!(
        d.focus_after(&FIELDS, None).await.as_deref(),
        Some("composer")
    );
    assert_eq!(ring(&d).region, Some(Region::Chat));
    let drawn = Drawn::now(&d);
    assert!(close(drawn.edge(&d, "region-chat"), accent));
    assert!(!close(drawn.edge(&d, "region-lists"), accent));
    assert!(!d.shows(lists_hint));

    // On round: the details, then back to the lists.
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Details));
    assert_eq!(d.focus_after(&FIELDS, Some(0)).await, None);
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Lists));
    // The visitors: ↓ and Enter show the highlighted one's details.
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Visitors));
    assert!(d.shows("↑↓ choose · Enter details · Tab next area"));
    let visitors: Vec<String> = d
        .app
        .workspace
        .desk
        .visitors_sorted()
        .iter()
        .map(|v| v.id.clone())
        .collect();
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    assert_eq!(ring(&d).highlight, Some(Item::Visitor(visitors[0].clone())));
    d.press(Key::Named(Named::ArrowDown), Modifiers::empty());
    assert_eq!(ring(&d).highlight, Some(Item::Visitor(visitors[1].clone())));
    assert!(close(
        Drawn::now(&d).edge(&d, &format!("visitor-{}", visitors[1])),
        ink
    ));
    d.press(Key::Named(Named::Enter), Modifiers::empty());
    assert_eq!(
        d.app.workspace.desk.details_visitor.as_deref(),
        Some(visitors[1].as_str())
    );
    // Shift+Tab goes back round the other way.
    d.press(Key::Named(Named::Tab), Modifiers::SHIFT);
    assert_eq!(ring(&d).region, Some(Region::Lists));
    d.press(Key::Named(Named::Tab), Modifiers::SHIFT);
    assert_eq!(ring(&d).region, Some(Region::Details));

    // Collapsed panels are skipped: with the lists shut, the ring is the
    // chat and the details; with both shut, the chat alone.
    d.press(Key::Character("b".into()), ctrl());
    assert!(!d.has_id("region-lists") && !d.has_id("region-visitors"));
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Chat));
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Details));
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Chat));
    d.press(Key::Character("d".into()), ctrl());
    d.press(Key::Named(Named::Tab), Modifiers::SHIFT);
    assert_eq!(ring(&d).region, Some(Region::Chat));
    d.press(Key::Character("b".into()), ctrl());
    d.press(Key::Character("d".into()), ctrl());

    // In the chat the arrows and Enter are the composer's, not a list's.
    d.press(Key::Named(Named::ArrowUp), Modifiers::empty());
    d.press(Key::Named(Named::Enter), Modifiers::empty());
    assert_eq!(d.selected(), Some(bottom));

    // The jump box keeps Tab for its own field, and Esc still closes it.
    d.press(Key::Character("k".into()), ctrl());
    d.forget_focus().await;
    d.press(Key::Named(Named::Tab), Modifiers::empty());
    assert_eq!(ring(&d).region, Some(Region::Chat));
    d.press(Key::Named(Named::Escape), Modifiers::empty());
    assert!(!d.has_id("jump"));

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
