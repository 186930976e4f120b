//! The focus ring's keys where a list or the details are longer than the
//! window: the highlighted row is scrolled into view going down, coming
//! back up and on entering the region; on the details ↑/↓ and
//! PageUp/PageDown scroll, Enter invites the visitor (or opens their
//! chat) and Esc goes back to the chat. And a visitor who gave no name is
//! labelled alike in the chats, the visitors list and the details.
//!
//! Scrolling is a widget operation, and a simulator is built afresh per
//! interaction, which a real window is not: [`Scrolled`] keeps what the
//! window would, how far each scrollable is scrolled, and runs the app's
//! operations over each new view from there.

use holdfast_agent::ui::i18n::{EN, ZH};
use holdfast_agent::ui::screen::workspace::ring::{Item, Region};
use holdfast_client::protocol::agent::ConversationId;
use holdfast_client::protocol::visitor::{PageInfo, VisitorIn};
use holdfast_tests::visitor::hello;
use iced::keyboard::{Key, Modifiers};
use iced::mouse;
use iced_test::core::widget::operation::scrollable::{AbsoluteOffset, RelativeOffset};
use iced_test::core::widget::operation::{Operation, Outcome, Scrollable};

use super::*;

/// A scrollable's state as an operation sees it: a simulator's can be
/// read but not written through `find`, so a scroll an operation asks for
/// lands here, clamped as iced clamps it, and is then made in the view
/// with the mouse wheel.
struct Standin {
    offset: f32,
    max: f32,
}

impl Scrollable for Standin {
    fn snap_to(&mut self, to: RelativeOffset<Option<f32>>) {
        if let Some(y) = to.y {
            self.offset = self.max * y.clamp(0.0, 1.0);
        }
    }
    fn scroll_to(&mut self, to: AbsoluteOffset<Option<f32>>) {
        if let Some(y) = to.y {
            self.offset = y.clamp(0.0, self.max);
        }
    }
    fn scroll_by(&mut self, by: AbsoluteOffset, _: Rectangle, _: Rectangle) {
        self.offset = (self.offset + by.y).clamp(0.0, self.max);
    }
}

/// How far each scrollable with an id is scrolled, as a window keeps it.
#[derive(Default)]
struct Scrolled(Vec<(Id, f32)>);

/// Where a widget is, and how much of it the scrolling leaves in view.
#[derive(Debug)]
struct Seen {
    bounds: Rectangle,
    visible: Option<Rectangle>,
}

impl Seen {
    fn whole(&self) -> bool {
        self.visible
            .is_some_and(|v| v.height >= self.bounds.height - 0.5 && v.height > 0.0)
    }
}

impl Scrolled {
    /// After a key: run the operations the app asked for since the last
    /// call over the current view scrolled as before, keep the offsets
    /// they leave, and say how `id` is seen then. The operations come from
    /// tasks running beside the test: wait for the first, and a moment for
    /// any after it.
    async fn after_key(&mut self, d: &Driver, id: &str) -> Seen {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while d.operations.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ops: Vec<_> = std::mem::take(&mut *d.operations.lock().unwrap());
        for mut op in ops {
            self.run(d, op.as_mut());
        }
        let mut ui = self.view(d);
        let target = ui
            .find(Id::from(id.to_owned()))
            .unwrap_or_else(|e| panic!("no {id}: {e}"));
        Seen {
            bounds: iced_test::selector::Bounded::bounds(&target),
            visible: target.visible_bounds(),
        }
    }

    /// Run `op` (and what it chains to) over the view's containers and
    /// scrollables, which is all a scroll needs, and keep where it leaves
    /// the scrollables.
    fn run(&mut self, d: &Driver, op: &mut dyn Operation) {
        let mut moved = Vec::new();
        {
            let mut ui = self.view(d);
            let _none = ui.find(|c: Candidate<'_>| {
                match c {
                    Candidate::Container { id, bounds, .. } => op.container(id, bounds),
                    Candidate::Scrollable {
                        id,
                        bounds,
                        content_bounds,
                        translation,
                        ..
                    } => {
                        let mut state = Standin {
                            offset: translation.y,
                            max: (content_bounds.height - bounds.height).max(0.0),
                        };
                        op.scrollable(id, bounds, content_bounds, translation, &mut state);
                        if let Some(id) = id
                            && (state.offset - translation.y).abs() > 0.01
                        {
                            moved.push((id.clone(), state.offset));
                        }
                    }
                    _ => {}
                }
                None::<()>
            });
        }
        for (id, y) in moved {
            self.0.retain(|(s, _)| *s != id);
            self.0.push((id, y));
        }
        if let Outcome::Chain(mut next) = op.finish() {
            self.run(d, next.as_mut());
        }
    }

    /// The current view, scrolled as the window has it: with the wheel,
    /// over each scrollable.
    fn view<'a>(&self, d: &'a Driver) -> Simulator<'a, Message> {
        let mut ui = Simulator::with_size(settings(), d.size, d.app.view());
        for (id, y) in &self.0 {
            let Some(area) = ui.find(id.clone()).ok().and_then(|t| t.visible_bounds()) else {
                continue;
            };
            ui.point_at(area.center());
            let _ = ui.simulate([iced::Event::Mouse(mouse::Event::WheelScrolled {
                delta: mouse::ScrollDelta::Pixels { x: 0.0, y: -*y },
            })]);
        }
        ui
    }

    /// The texts wholly in view inside the widget `id`.
    fn texts_shown_in(&self, d: &Driver, id: &str) -> Vec<String> {
        let mut ui = self.view(d);
        let area = iced_test::selector::Bounded::bounds(
            &ui.find(Id::from(id.to_owned()))
                .unwrap_or_else(|e| panic!("no {id}: {e}")),
        );
        let mut out = Vec::new();
        let _none = ui.find(|c: Candidate<'_>| {
            if let Candidate::Text {
                content,
                bounds,
                visible_bounds,
                ..
            } = c
                && area.contains(bounds.center())
                && visible_bounds.is_some_and(|v| v.height >= bounds.height - 0.5)
            {
                out.push(content.to_owned());
            }
            None::<()>
        });
        out
    }

    fn offset(&self, id: &str) -> f32 {
        let id = Id::from(id.to_owned());
        self.0
            .iter()
            .find(|(s, _)| *s == id)
            .map_or(0.0, |(_, y)| *y)
    }
}

fn key(named: Named) -> Key {
    Key::Named(named)
}

/// A visitor browsing `url` (no chat), whose widget says `lang`.
async fn browsing(srv: &TestServer, lang: &str, url: &str) -> WsVisitor {
    let mut h = hello("acme", None, None, url);
    if let VisitorIn::Hello { lang: l, .. } = &mut h {
        *l = Some(lang.into());
    }
    WsVisitor::connect_with(srv.http(), h).await.unwrap()
}

fn visitor_ids(d: &Driver) -> Vec<String> {
    d.app
        .workspace
        .desk
        .visitors_sorted()
        .iter()
        .map(|v| v.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highlighted_row_is_scrolled_into_view_both_ways() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    // A small window: the lists, the team and a dozen visitors share one
    // scrolled column, and most of the visitors are below its fold.
    d.size = (1024.0, 600.0);
    d.sign_in("alice").await;
    let mut tabs = Vec::new();
    for i in 0..12 {
        tabs.push(browsing(&srv, "en", &format!("https://shop.example/item/{i}")).await);
    }
    d.until("the dozen visitors listed", |d| {
        d.app.workspace.desk.visitors_sorted().len() == 12
    })
    .await;
    let order = visitor_ids(&d);
    let row = |i: usize| format!("visitor-{}", order[i]);
    let mut window = Scrolled::default();
    d.forget_focus().await;
    // The last row starts off screen.
    let last = window.after_key(&d, &row(11)).await;
    assert!(last.visible.is_none(), "{last:?}");

    // Tab to the lists, Tab to the visitors: the first row is lit, and in
    // view.
    d.press(key(Named::Tab), Modifiers::empty());
    let _ = window.after_key(&d, "side").await;
    d.press(key(Named::Tab), Modifiers::empty());
    assert_eq!(d.app.workspace.desk.ring.region, Some(Region::Visitors));
    assert_eq!(
        d.app.workspace.desk.ring.highlight,
        Some(Item::Visitor(order[0].clone()))
    );
    let seen = window.after_key(&d, &row(0)).await;
    assert!(seen.whole(), "entering: {seen:?}");

    // ↓ down to the last: each highlighted row wholly in view.
    for i in 1..order.len() {
        d.press(key(Named::ArrowDown), Modifiers::empty());
        assert_eq!(
            d.app.workspace.desk.ring.highlight,
            Some(Item::Visitor(order[i].clone()))
        );
        let seen = window.after_key(&d, &row(i)).await;
        assert!(
            seen.whole(),
            "row {i} of {} after ↓: {seen:?}, scrolled {}",
            order.len(),
            window.offset("side")
        );
    }
    let bottom = window.offset("side");
    assert!(bottom > 0.0, "the column scrolled down");
    // And the text on it is on screen: its page, say.
    let shown = window.texts_shown_in(&d, &row(11));
    assert!(
        shown
            .iter()
            .any(|t| t.starts_with("https://shop.example/item/")),
        "{shown:?}"
    );

    // ↑ back up to the first: each one in view again.
    for i in (0..order.len() - 1).rev() {
        d.press(key(Named::ArrowUp), Modifiers::empty());
        let seen = window.after_key(&d, &row(i)).await;
        assert!(seen.whole(), "row {i} after ↑: {seen:?}");
    }
    assert!(window.offset("side") < bottom);

    for t in tabs {
        t.close().await;
    }
    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// The visitor's chat, once they have one.
fn chat_of(d: &Driver, visitor: &str) -> Option<ConversationId> {
    d.app.workspace.desk.visitors.get(visitor)?.conversation
}

/// With the ring on the visitors, move the highlight to `visitor` and
/// press Enter: their details show.
fn show_details(d: &mut Driver, visitor: &str) {
    assert_eq!(d.app.workspace.desk.ring.region, Some(Region::Visitors));
    for _ in 0..visitor_ids(d).len() {
        d.press(key(Named::ArrowUp), Modifiers::empty());
    }
    let at = visitor_ids(d).iter().position(|v| v == visitor).unwrap();
    for _ in 0..at {
        d.press(key(Named::ArrowDown), Modifiers::empty());
    }
    d.press(key(Named::Enter), Modifiers::empty());
    assert_eq!(
        d.app.workspace.desk.details_visitor.as_deref(),
        Some(visitor)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_details_scroll_invite_and_open_the_chat_from_the_keys() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    // Short: a visitor who went round the site overflows the details.
    d.size = (1280.0, 600.0);
    d.sign_in("alice").await;
    // Someone chatting already: their chat opened by itself.
    let mut asking = browsing(&srv, "en", "https://shop.example/help").await;
    asking.say_acked("a question").await.unwrap();
    let mut browser = browsing(&srv, "en", "https://shop.example/").await;
    for i in 0..20 {
        browser
            .send_json(&VisitorIn::Page(PageInfo {
                url: format!("https://shop.example/step/{i}"),
                title: format!("Step {i}"),
                referrer: None,
            }))
            .await
            .unwrap();
    }
    let (asker, wanderer) = (asking.visitor.clone(), browser.visitor.clone());
    d.until("the asker's chat open and the wanderer's trail", |d| {
        let desk = &d.app.workspace.desk;
        chat_of(d, &asker).is_some_and(|c| desk.selected == Some(c) && desk.is_mine(c))
            && desk
                .visitors
                .get(&wanderer)
                .is_some_and(|v| v.trail.last().is_some_and(|p| p.url.ends_with("/step/19")))
    })
    .await;
    d.forget_focus().await;

    // The wanderer's details, by the keys; then round to the details.
    d.press(key(Named::Tab), Modifiers::empty());
    d.press(key(Named::Tab), Modifiers::empty());
    show_details(&mut d, &wanderer);
    d.press(key(Named::Tab), Modifiers::empty());
    d.press(key(Named::Tab), Modifiers::empty());
    assert_eq!(d.app.workspace.desk.ring.region, Some(Region::Details));
    assert!(
        d.shows(EN.ring_keys_details_invite),
        "the keys said: {:?}",
        d.texts()
    );
    let mut window = Scrolled::default();
    let _ = window.after_key(&d, "details").await;
    assert!(window.offset("details") == 0.0);
    let side = window.offset("side");

    // ↓ a line, PageDown a page, PageUp and ↑ back to the top.
    d.press(key(Named::ArrowDown), Modifiers::empty());
    let _ = window.after_key(&d, "details").await;
    let line = window.offset("details");
    assert!(line > 0.0, "↓ scrolled the details");
    d.press(key(Named::PageDown), Modifiers::empty());
    let _ = window.after_key(&d, "details").await;
    let paged = window.offset("details");
    assert!(
        paged > 3.0 * line,
        "a page is more than a line: {line} then {paged}"
    );
    assert!(
        !window
            .texts_shown_in(&d, "region-details")
            .iter()
            .any(|t| t.contains("Page trail")),
        "the top is out of view a page down"
    );
    d.press(key(Named::PageUp), Modifiers::empty());
    let _ = window.after_key(&d, "details").await;
    let back = window.offset("details");
    assert!(paged - back > 3.0 * line, "PageUp: {paged} to {back}");
    d.press(key(Named::PageUp), Modifiers::empty());
    d.press(key(Named::ArrowDown), Modifiers::empty());
    d.press(key(Named::ArrowUp), Modifiers::empty());
    let _ = window.after_key(&d, "details").await;
    assert_eq!(window.offset("details"), 0.0);
    // The panel's own keys are its alone: the lists did not move.
    assert_eq!(window.offset("side"), side);
    assert_eq!(
        d.app.workspace.desk.details_visitor.as_deref(),
        Some(wanderer.as_str())
    );

    // Enter invites the wanderer, with the default invitation.
    d.press(key(Named::Enter), Modifiers::empty());
    browser.wait_message(EN.default_invite).await.unwrap();

    // Esc: back to the chat, with the cursor in its composer.
    d.forget_focus().await;
    d.press(key(Named::Escape), Modifiers::empty());
    assert_eq!(d.app.workspace.desk.ring.region, Some(Region::Chat));
    assert!(!d.shows(EN.ring_keys_details_invite));

    // The wanderer answers: now both have a chat, and Enter on the
    // details of the one not open opens it.
    browser.say_acked("yes please").await.unwrap();
    d.until("the wanderer's chat", |d| {
        chat_of(d, &wanderer).is_some_and(|c| d.app.workspace.desk.is_mine(c))
    })
    .await;
    let open = d.app.workspace.desk.selected;
    let other = if open == chat_of(&d, &asker) {
        wanderer.clone()
    } else {
        asker.clone()
    };
    d.press(key(Named::Tab), Modifiers::SHIFT);
    show_details(&mut d, &other);
    d.press(key(Named::Tab), Modifiers::empty());
    d.press(key(Named::Tab), Modifiers::empty());
    assert_eq!(d.app.workspace.desk.ring.region, Some(Region::Details));
    assert!(d.shows(EN.ring_keys_details_open), "{:?}", d.texts());
    d.press(key(Named::Enter), Modifiers::empty());
    assert_eq!(d.app.workspace.desk.selected, chat_of(&d, &other));
    assert_ne!(d.app.workspace.desk.selected, open);

    asking.close().await;
    browser.close().await;
    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nameless_visitor_has_one_label_in_the_visitors_the_details_and_the_chat() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.size = (1280.0, 1000.0);
    d.sign_in("alice").await;
    // Two alike: same language, same page, no name.
    let mut first = browsing(&srv, "zh-CN", "https://shop.example/pricing?ref=ad").await;
    let second = browsing(&srv, "zh-CN", "https://shop.example/pricing").await;
    d.until("both listed", |d| visitor_ids(d).len() == 2).await;
    let label = "Visitor · Chinese · /pricing";
    for v in [&first.visitor, &second.visitor] {
        let row = d.texts_in(&format!("visitor-{v}"));
        assert!(row.iter().any(|t| t == label), "{row:?}");
    }
    let short = |v: &str| v.chars().take(8).collect::<String>();
    assert!(
        !d.texts().iter().any(|t| t.contains(&short(&first.visitor))),
        "no bare id in the list"
    );

    // The details: the same label, and the id, small, to tell them apart.
    d.press(key(Named::Tab), Modifiers::empty());
    d.press(key(Named::Tab), Modifiers::empty());
    show_details(&mut d, &first.visitor);
    let details = d.texts_in("region-details");
    assert!(details.iter().any(|t| t == label), "{details:?}");
    let id_line = format!("Visitor id {}", short(&first.visitor));
    assert_eq!(d.texts_in("visitor-short-id"), [id_line]);

    // Chatting: the chat header says the same.
    first.say_acked("多少钱？").await.unwrap();
    let v = first.visitor.clone();
    d.until("the chat open", |d| {
        chat_of(d, &v).is_some_and(|c| d.app.workspace.desk.selected == Some(c))
    })
    .await;
    let header = d.texts_in("chat-header");
    assert!(header.iter().any(|t| t == label), "{header:?}");

    // In Chinese, all three in Chinese.
    d.click_id("lang-zh");
    let zh_label = "访客 · 中文 · /pricing";
    let row = d.texts_in(&format!("visitor-{}", first.visitor));
    assert!(row.iter().any(|t| t == zh_label), "{row:?}");
    let details = d.texts_in("region-details");
    assert!(details.iter().any(|t| t == zh_label), "{details:?}");
    assert_eq!(
        d.texts_in("visitor-short-id"),
        [(ZH.visitor_id_line)(&short(&first.visitor))]
    );
    let header = d.texts_in("chat-header");
    assert!(header.iter().any(|t| t == zh_label), "{header:?}");
    assert!(!d.texts().iter().any(|t| t.contains("Visitor")));

    d.click_id("lang-en");
    first.close().await;
    second.close().await;
    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
