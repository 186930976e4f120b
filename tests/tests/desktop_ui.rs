//! The desktop app driven like a person would: `iced_test` simulators of the
//! real views, clicked and typed into by widget id and by text, against a
//! real in-process server and real WebSocket visitors. Each interaction's
//! messages go through the app's real `update`, and every `Task` it returns
//! (including the core's update stream) runs on the test's tokio runtime,
//! feeding its messages back in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use holdfast_agent::ui::screen::workspace::{self, details, visitors};
use holdfast_agent::ui::{App, Message, Options, Screen};
use holdfast_client::preconfig::Preconfig;
use holdfast_client::protocol::backoff::BackoffConfig;
use holdfast_client::protocol::handshake::Fingerprint;
use holdfast_client::protocol::liveness::LivenessConfig;
use holdfast_client::{ClientConfig, ConnState, Store};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::WsVisitor;
use iced::keyboard::key::Named;
use iced::widget::Id;
use iced::{Rectangle, Settings, Task};
use iced_test::Simulator;
use iced_test::runtime::Action;
use iced_test::selector::Candidate;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn fast(cfg: &mut ClientConfig) {
    cfg.backoff = BackoffConfig {
        base: Duration::from_millis(1500),
        cap: Duration::from_secs(3),
    };
    cfg.liveness = LivenessConfig {
        heartbeat: Duration::from_millis(300),
        dead_after: Duration::from_millis(1500),
    };
}

fn options(dir: &Path, server: String) -> Options {
    Options {
        server: Some(server),
        username: None,
        password: None,
        store: Some(dir.join("agent.sqlite3")),
        prefs_path: Some(dir.join("prefs.json")),
        notifications: false,
        utc_offset_secs: 0,
        tune: Some(fast),
        exit_after_first_frame: None,
        expected_fingerprint: None,
        preconfig: None,
        // English whatever the machine's locale: the tests read English words.
        locale: None,
    }
}

/// The simulators' settings: the app's bundled CJK font loaded as the real
/// window loads it (`ui::CJK_FONT`), so Chinese is laid out and drawn with
/// it rather than looked for glyph by glyph among the machine's fonts
/// (slow, and missing-glyph boxes where none has them). Loaded once: the
/// font system is shared and knows a font it has seen.
fn settings() -> Settings {
    Settings {
        fonts: vec![holdfast_agent::ui::CJK_FONT.into()],
        ..Settings::default()
    }
}

/// The app plus a runner for the tasks its `update` returns.
struct Driver {
    app: App,
    /// The window the views are laid out in (1280×800 unless a test
    /// sizes it).
    size: (f32, f32),
    tx: mpsc::UnboundedSender<Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    /// What the app's tasks wrote to the clipboard, in order: the runtime
    /// would write it to the OS's; a simulator has none.
    clipboard: Arc<Mutex<Vec<String>>>,
    /// The widget operations (focus) the app's tasks asked for, in order:
    /// a fresh simulator is built per interaction, so they are kept here
    /// for tests to run against the fields they expect.
    operations: Arc<Mutex<Vec<Box<dyn iced_test::core::widget::Operation>>>>,
    /// Messages from the app's tasks that a test holds back (to apply
    /// them later, out of their usual order), and which ones.
    hold: Option<fn(&Message) -> bool>,
    held: Vec<Message>,
}

impl Driver {
    fn new(options: Options) -> Self {
        let (app, task) = App::new(options);
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Self {
            app,
            size: (1280.0, 800.0),
            tx,
            rx,
            clipboard: Arc::default(),
            operations: Arc::default(),
            hold: None,
            held: Vec::new(),
        };
        d.spawn(task);
        d
    }

    fn spawn(&self, task: Task<Message>) {
        let Some(mut stream) = iced_test::runtime::task::into_stream(task) else {
            return;
        };
        let tx = self.tx.clone();
        let clipboard = self.clipboard.clone();
        let operations = self.operations.clone();
        tokio::spawn(async move {
            while let Some(action) = stream.next().await {
                match action {
                    Action::Output(m) => {
                        let _ = tx.send(m);
                    }
                    Action::Clipboard(iced_test::runtime::clipboard::Action::Write {
                        contents,
                        ..
                    }) => clipboard.lock().unwrap().push(contents),
                    Action::Widget(op) => operations.lock().unwrap().push(op),
                    _ => {}
                }
            }
        });
    }

    fn apply(&mut self, m: Message) {
        let task = self.app.update(m);
        self.spawn(task);
    }

    /// Build the current view, let `f` click and type in it, then apply
    /// what it produced.
    fn interact(&mut self, f: impl FnOnce(&mut Simulator<'_, Message>)) {
        let size = self.size;
        let messages: Vec<Message> = {
            let mut ui = Simulator::with_size(settings(), size, self.app.view());
            f(&mut ui);
            ui.into_messages().collect()
        };
        for m in messages {
            self.apply(m);
        }
    }

    fn click_id(&mut self, id: &str) {
        let id = Id::from(id.to_owned());
        self.interact(|ui| {
            ui.click(id.clone())
                .unwrap_or_else(|e| panic!("cannot click {id:?}: {e}"));
        });
    }

    fn click_text(&mut self, text: &'static str) {
        self.interact(|ui| {
            ui.click(text)
                .unwrap_or_else(|e| panic!("cannot click {text:?}: {e}"));
        });
    }

    /// Every text on screen, in widget-tree order.
    fn texts(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut ui = Simulator::with_size(settings(), self.size, self.app.view());
        let _none = ui.find(|c: Candidate<'_>| {
            if let Candidate::Text { content, .. } = c {
                out.push(content.to_owned());
            }
            None::<()>
        });
        out
    }

    /// Every text on screen with its bounds, in widget-tree order.
    fn text_boxes(&self) -> Vec<(String, Rectangle)> {
        let mut out = Vec::new();
        let mut ui = Simulator::with_size(settings(), self.size, self.app.view());
        let _none = ui.find(|c: Candidate<'_>| {
            if let Candidate::Text {
                content, bounds, ..
            } = c
            {
                out.push((content.to_owned(), bounds));
            }
            None::<()>
        });
        out
    }

    /// The texts drawn inside the widget with this id.
    fn texts_in(&self, id: &str) -> Vec<String> {
        let mut ui = Simulator::with_size(settings(), self.size, self.app.view());
        let Ok(target) = ui.find(Id::from(id.to_owned())) else {
            return Vec::new();
        };
        let area = iced_test::selector::Bounded::bounds(&target);
        self.text_boxes()
            .into_iter()
            .filter(|(_, b)| area.contains(b.center()))
            .map(|(t, _)| t)
            .collect()
    }

    fn shows(&self, needle: &str) -> bool {
        self.texts().iter().any(|t| t.contains(needle))
    }

    fn has_id(&self, id: &str) -> bool {
        let mut ui = Simulator::with_size(settings(), self.size, self.app.view());
        ui.find(Id::from(id.to_owned())).is_ok()
    }

    /// The delivery label under the message with this body.
    fn label_of(&self, body: &str) -> Option<String> {
        let texts = self.texts();
        let at = texts.iter().rposition(|t| t == body)?;
        texts[at..]
            .iter()
            .find(|t| matches!(t.as_str(), "Queued" | "Sent" | "Delivered" | "Failed"))
            .cloned()
    }

    /// Apply messages as they come until `pred` holds; `on_step` sees the
    /// app after every message (to record transient states).
    async fn until_with(
        &mut self,
        what: &str,
        mut on_step: impl FnMut(&Self),
        pred: impl Fn(&Self) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut next_tick = tokio::time::Instant::now();
        loop {
            on_step(self);
            if pred(self) {
                return;
            }
            let now = tokio::time::Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; on screen: {:?}",
                self.texts()
            );
            if now >= next_tick {
                self.apply(Message::Tick);
                next_tick = now + Duration::from_millis(250);
            }
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(50), self.rx.recv()).await
            {
                if self.hold.is_some_and(|held| held(&m)) {
                    self.held.push(m);
                } else {
                    self.apply(m);
                }
            }
        }
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&Self) -> bool) {
        self.until_with(what, |_| {}, pred).await;
    }

    /// Press "Away" and wait until the app says so: new chats then wait
    /// in the queue instead of being assigned.
    async fn go_away(&mut self) {
        self.click_text("Away");
        self.until("away", |d| {
            d.app.workspace.desk.presence == Some(holdfast_client::protocol::agent::Presence::Away)
        })
        .await;
    }

    /// Type a username and password into the login form and press Sign in.
    fn submit_login(&mut self, user: &str, password: &str) {
        let (user, password) = (user.to_owned(), password.to_owned());
        self.interact(|ui| {
            ui.click(Id::new("login-user")).unwrap();
            ui.typewrite(&user);
            ui.click(Id::new("login-password")).unwrap();
            ui.typewrite(&password);
            ui.click("Sign in").unwrap();
        });
    }

    /// Log in through the login screen, trusting the server key.
    async fn sign_in(&mut self, user: &str) {
        self.submit_login(user, PASSWORD);
        assert!(self.app.login.busy, "sign-in did not start");
        self.until("the fingerprint prompt", |d| d.shows("First connection"))
            .await;
        self.click_text("Trust this server");
        self.until("the workspace", |d| {
            d.app.screen == Screen::Workspace && d.shows("Connected")
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_invite_chat_and_survive_an_outage() {
    let srv = TestServer::start().await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), proxy.addr.to_string()));
    assert_eq!(d.app.screen, Screen::Login);
    assert!(d.has_id("login-server"));

    d.sign_in("alice").await;
    let prefs = std::fs::read_to_string(dir.path().join("prefs.json")).unwrap();
    assert!(
        prefs.contains("alice") && !prefs.contains(PASSWORD),
        "{prefs}"
    );

    // A visitor arrives and shows up with their page and browser.
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let vid = v.visitor.clone();
    d.until("the visitor in the list", |d| {
        d.has_id(&format!("visitor-{vid}"))
    })
    .await;
    assert!(d.shows("Page https://shop.example/"), "{:?}", d.texts());
    assert!(d.shows("HoldfastTest 1.0 · Linux"), "{:?}", d.texts());

    // Invite them: the conversation opens in the chat pane.
    d.click_id(&format!("invite-{vid}"));
    d.until("the invited conversation to open", |d| {
        d.app.workspace.desk.selected.is_some() && d.has_id("composer")
    })
    .await;
    v.wait_message("Hi! Can I help you with anything?")
        .await
        .unwrap();

    // The visitor answers, in Chinese with an emoji and a long word.
    let long = "x".repeat(300);
    let question = format!("你好！我的订单在哪里？ 📦 {long}");
    v.say_acked(&question).await.unwrap();
    let q = question.clone();
    d.until("the visitor's message", |d| d.shows(&q)).await;

    // Reply with Enter; Shift+Enter would have added a line instead.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("It ships today.");
        ui.tap_key(Named::Enter);
    });
    let mut seen: Vec<String> = Vec::new();
    let mut record = |d: &Driver| {
        if let Some(l) = d.label_of("It ships today.")
            && seen.last() != Some(&l)
        {
            seen.push(l);
        }
    };
    d.until_with("the reply acked", &mut record, |d| {
        d.label_of("It ships today.").as_deref() == Some("Sent")
    })
    .await;
    // Delivered once the visitor's browser has it.
    v.wait_message("It ships today.").await.unwrap();
    d.until_with("the reply delivered", &mut record, |d| {
        d.label_of("It ships today.").as_deref() == Some("Delivered")
    })
    .await;
    assert_eq!(seen, ["Queued", "Sent", "Delivered"]);
    // The draft was cleared by sending.
    let conv = d.app.workspace.desk.selected.unwrap();
    assert_eq!(d.app.workspace.desk.drafts[&conv].text().trim(), "");

    // The link drops and stays down: the bar says so and offers a retry.
    proxy.refuse_new(true);
    proxy.reset_all();
    d.until("the reconnecting bar", |d| d.shows("Reconnecting in"))
        .await;
    assert!(d.shows("Reconnect now"));

    // The agent keeps typing; the message queues and is counted.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Sent while offline");
        ui.tap_key(Named::Enter);
    });
    d.until("the queued message", |d| {
        d.label_of("Sent while offline").as_deref() == Some("Queued") && d.shows("1 unsent")
    })
    .await;

    // Back online: "Reconnect now", and it goes out by itself.
    proxy.heal();
    d.click_text("Reconnect now");
    d.until("reconnected and acked", |d| {
        d.shows("Connected") && d.label_of("Sent while offline").as_deref() != Some("Queued")
    })
    .await;
    v.wait_message("Sent while offline").await.unwrap();
    d.until("the offline message delivered", |d| {
        d.label_of("Sent while offline").as_deref() == Some("Delivered")
    })
    .await;
    assert_eq!(
        v.bodies()
            .iter()
            .filter(|b| *b == "Sent while offline")
            .count(),
        1
    );

    // Per-conversation drafts: type without sending, leave, come back.
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("half a thought");
    });
    assert_eq!(
        d.app.workspace.desk.drafts[&conv].text().trim_end(),
        "half a thought"
    );

    // Close the conversation.
    d.click_id("close-conversation");
    d.until("the conversation closed", |d| {
        d.shows("This conversation is not open; replies are off.")
    })
    .await;

    // Past conversations load from the server into the details panel.
    d.apply(Message::Workspace(workspace::Message::Details(
        details::Message::LoadHistory {
            visitor: vid.clone(),
            older: false,
        },
    )));
    d.until("history", |d| {
        d.app
            .workspace
            .desk
            .history
            .get(&vid)
            .is_some_and(|h| !h.loading && h.messages.len() >= 4)
    })
    .await;

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    proxy.stop();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_queue_accept_notifications_and_unread_title() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("bob").await;

    // Away: new chats wait in the queue instead of being assigned.
    d.go_away().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    d.apply(Message::Focus(false));
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("Anyone there?").await.unwrap();
    d.until("the waiting chat", |d| {
        !d.app.workspace.desk.queue().is_empty()
    })
    .await;
    let cid = d.app.workspace.desk.queue()[0].info.id;
    // Nameless: told apart by language and page once the visitor list
    // has them (issue 17).
    d.until("the waiting chat's label", |d| {
        d.shows("#1 Visitor · English · /")
    })
    .await;
    assert!(d.shows("Waiting (1)"));
    assert!(
        d.app
            .notifier
            .log
            .iter()
            .any(|a| a.title == "New chat waiting"),
        "{:?}",
        d.app.notifier.log
    );
    // The same alert when the chat reaches the window through a store
    // reload (the core coalesces updates into Resync when the UI lags).
    d.app.notifier.log.clear();
    d.app.workspace.desk.convs.remove(&cid);
    let epoch = d.app.core_epoch();
    d.apply(Message::Core(
        epoch,
        Box::new(holdfast_client::Update::Resync),
    ));
    assert!(d.app.workspace.desk.convs.contains_key(&cid));
    assert!(
        d.app
            .notifier
            .log
            .iter()
            .any(|a| a.title == "New chat waiting"),
        "{:?}",
        d.app.notifier.log
    );

    // Accept: it becomes mine and opens.
    d.click_id(&format!("accept-{cid}"));
    d.until("the accepted chat open", |d| {
        d.app.workspace.desk.selected == Some(cid) && d.has_id("composer")
    })
    .await;
    assert!(d.shows("Waiting (0)"));

    // While unfocused, messages notify and count as unread in the window
    // title, even in the open conversation.
    assert!(
        d.app.title().starts_with("(1) Holdfast"),
        "{}",
        d.app.title()
    );
    v.say_acked("Hello?").await.unwrap();
    d.until("the unread count in the title", |d| {
        d.app.title().starts_with("(2) Holdfast")
    })
    .await;
    assert!(
        d.app.notifier.log.iter().any(|a| a.body == "Hello?"),
        "{:?}",
        d.app.notifier.log
    );
    // Focusing the window reads the open conversation.
    d.apply(Message::Focus(true));
    assert_eq!(d.app.workspace.desk.unread_total(), 0);
    assert!(!d.app.title().starts_with('('));

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_errors_are_clear() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    // Nothing listens there.
    let closed = holdfast_tests::server::free_port();
    let mut d = Driver::new(options(dir.path(), format!("127.0.0.1:{closed}")));
    d.submit_login("alice", "whatever");
    d.until("unreachable", |d| d.shows("Cannot reach 127.0.0.1:"))
        .await;
    d.click_text("Cancel");
    assert!(!d.app.login.busy);

    // Wrong password against the real server (after trusting its key).
    let dir2 = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir2.path(), srv.agent_addr().to_string()));
    d.submit_login("alice", "not-the-password");
    d.until("the fingerprint prompt", |d| d.shows("First connection"))
        .await;
    d.click_text("Trust this server");
    d.until("wrong password", |d| d.shows("Wrong username or password."))
        .await;
    assert_eq!(d.app.screen, Screen::Login);
    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }

    // A pinned key that does not match: a red hard stop with both.
    let dir3 = tempfile::tempdir().unwrap();
    let store = dir3.path().join("agent.sqlite3");
    let fake = Fingerprint([7; 32]);
    {
        let mut s = Store::open(&store).unwrap();
        s.pin_fingerprint(&srv.agent_addr().to_string(), &fake)
            .unwrap();
    }
    let mut d = Driver::new(options(dir3.path(), srv.agent_addr().to_string()));
    d.submit_login("alice", PASSWORD);
    d.until("the mismatch stop", |d| {
        d.has_id("fingerprint-mismatch") && matches!(d.app.status.state, ConnState::Stopped { .. })
    })
    .await;
    assert!(d.shows(&fake.to_string()), "{:?}", d.texts());
    assert!(d.shows("Presented fingerprint"));
    assert!(matches!(d.app.status.state, ConnState::Stopped { .. }));
    d.click_text("Disconnect");
    assert_eq!(d.app.screen, Screen::Login);
    assert!(d.shows("did not match"));

    // An installer's preconfiguration names the server and its key: the
    // login form starts with that server, and a server presenting another
    // key is stopped the same way, on the very first contact.
    let dir4 = tempfile::tempdir().unwrap();
    let mut d = Driver::new(Options {
        server: None,
        preconfig: Some(Preconfig {
            server: Some(srv.agent_addr().to_string()),
            fingerprint: Some(fake),
            source: "test".into(),
        }),
        ..options(dir4.path(), String::new())
    });
    assert_eq!(d.app.login.server, srv.agent_addr().to_string());
    d.submit_login("alice", PASSWORD);
    d.until("the mismatch stop from the preconfigured pin", |d| {
        d.has_id("fingerprint-mismatch") && matches!(d.app.status.state, ConnState::Stopped { .. })
    })
    .await;
    assert!(d.shows(&fake.to_string()), "{:?}", d.texts());

    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_from_the_cache_before_the_server_answers() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("Remember me").await.unwrap();
    d.until("the chat", |d| d.shows("Remember me")).await;
    d.app.handle().unwrap().shutdown().await.unwrap();
    srv.stop().await;

    // Next run: the server is gone, no password: the workspace is there at
    // once, read from the store, with the way to sign in in the bar.
    let d = Driver::new(Options {
        server: None,
        ..options(dir.path(), String::new())
    });
    assert_eq!(d.app.screen, Screen::Workspace);
    assert!(d.shows("Remember me"), "{:?}", d.texts());
    assert!(d.shows("Offline · 0 unsent"));
    assert!(d.has_id("bar-password"));
}

/// Position of the first text containing `needle`, in widget-tree order.
fn at(texts: &[String], needle: &str) -> usize {
    texts
        .iter()
        .position(|t| t.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on screen: {texts:?}"))
}

fn agent_id(srv: &TestServer, user: &str) -> u64 {
    let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
    holdfast_server::store::reads::agent_by_username(&conn, user)
        .unwrap()
        .unwrap()
        .id
}

fn core(srv: &TestServer, user: &str, dir: &Path) -> CoreAgent {
    CoreAgent::start(core_agent::fast_config(
        &srv.agent_addr().to_string(),
        user,
        &dir.join(format!("{user}-core.sqlite3")),
        srv.running().fingerprint,
    ))
}

/// An afternoon's trust issues, on screen: the reply stays where it was
/// committed, the team panel, a transfer with a note, "Open chat" on
/// someone else's visitor, a left message with its email and page, and a
/// sign-out that asks first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_team_transfer_left_message_and_sign_out_on_screen() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bob_id = agent_id(&srv, "bob");
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;
    let mut bob = core(&srv, "bob", dir.path());
    bob.live().await;
    d.until("Bob online in the team panel", |d| {
        d.has_id(&format!("team-{bob_id}")) && d.shows("online · 0/2")
    })
    .await;
    assert!(d.shows("Alice (you)"), "{:?}", d.texts());

    // A visitor writes; Alice (the least busy, lowest id) gets the chat.
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("question 1").await.unwrap();
    d.until("the chat open", |d| {
        d.has_id("composer") && d.shows("question 1")
    })
    .await;
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("answer 1");
        ui.tap_key(Named::Enter);
    });
    d.until("the answer acked", |d| {
        d.label_of("answer 1").as_deref() == Some("Sent")
            || d.label_of("answer 1").as_deref() == Some("Delivered")
    })
    .await;
    v.say_acked("question 2").await.unwrap();
    v.say_acked("question 3").await.unwrap();
    d.until("both questions", |d| d.shows("question 3")).await;
    // The reply sits where the server committed it, not at the bottom, and
    // the list's preview is the newest question.
    let all = d.texts();
    let t = &all[at(&all, "Close conversation")..];
    let (q1, a1, q2, q3) = (
        at(t, "question 1"),
        at(t, "answer 1"),
        at(t, "question 2"),
        at(t, "question 3"),
    );
    assert!(q1 < a1 && a1 < q2 && q2 < q3, "{t:?}");
    let conv = d.app.workspace.desk.selected.unwrap();
    let mine = d.app.workspace.desk.mine();
    assert_eq!(
        mine[0].last_said().map(|m| m.body.as_str()),
        Some("question 3")
    );

    // Transfer to Bob with a note only agents see.
    d.click_id("transfer");
    d.until("the transfer panel", |d| d.has_id("transfer-panel"))
        .await;
    d.click_id(&format!("transfer-to-{bob_id}"));
    d.interact(|ui| {
        ui.click(Id::new("transfer-note")).unwrap();
        ui.typewrite("wants a refund");
    });
    d.click_id("transfer-send");
    bob.conversation_where(|c| c.id == conv && c.assigned == Some(bob_id))
        .await;
    d.until("the transfer on screen", |d| {
        d.shows("Alice transferred the chat to Bob") && d.shows("My conversations (0)")
    })
    .await;
    assert!(d.shows("Note from Alice · agents only"), "{:?}", d.texts());
    assert!(d.shows("wants a refund"));
    assert!(!d.has_id("composer"), "a transferred chat is read-only");
    // Alice no longer follows the chat live, so the pane says so rather
    // than look like a chat that went quiet.
    assert!(d.shows("Bob is serving now"), "{:?}", d.texts());
    assert!(
        d.shows(
            "Bob serves this chat now. New messages go to them, not here; \
             the whole chat stays in the visitor's history."
        ),
        "{:?}",
        d.texts()
    );

    // "Open chat" on Bob's visitor says who serves it.
    let vid = v.visitor.clone();
    d.until("the visitor served by Bob", |d| {
        d.shows("Chatting with Bob")
    })
    .await;
    d.click_id(&format!("open-{vid}"));
    assert!(
        d.shows("Bob is serving this visitor. A supervisor can transfer the chat to you."),
        "{:?}",
        d.texts()
    );
    d.click_text("Dismiss");

    // Everyone away: a visitor leaves a message with an email.
    let p = bob
        .handle
        .set_presence(holdfast_client::protocol::agent::Presence::Away)
        .await
        .unwrap();
    bob.outcome(p).await.unwrap();
    d.go_away().await;
    let mut lm = WsVisitor::connect_with(
        srv.http(),
        holdfast_tests::visitor::hello("acme", None, None, "https://shop.example/pricing"),
    )
    .await
    .unwrap();
    lm.send_json(
        &holdfast_client::protocol::visitor::VisitorIn::LeaveMessage {
            id: holdfast_tests::visitor::new_id(),
            body: "Do you ship to Norway?".into(),
            email: Some("dana@example.com".into()),
        },
    )
    .await
    .unwrap();
    d.until("the left message in the queue", |d| {
        d.shows("✉ dana@example.com")
            && d.shows("Do you ship to Norway?")
            && d.shows("Left on Page https://shop.example/pricing — https://shop.example/pricing")
    })
    .await;
    let left = d.app.workspace.desk.queue()[0].info.id;
    d.click_id(&format!("accept-{left}"));
    d.until("the left message open", |d| {
        d.app.workspace.desk.selected == Some(left)
            && d.has_id("composer")
            && d.has_id("left-message")
    })
    .await;
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite("Yes, we do.");
        ui.tap_key(Named::Enter);
    });
    d.until("the reply acked", |d| {
        d.label_of("Yes, we do.").as_deref() == Some("Sent")
    })
    .await;

    // Signing out with an open chat asks first, then hands it back.
    d.click_id("sign-out");
    d.until("the sign-out prompt", |d| d.has_id("sign-out-prompt"))
        .await;
    assert!(d.shows("You have 1 open chat"), "{:?}", d.texts());
    d.click_id("sign-out-release");
    d.until("signed out", |d| {
        d.app.screen == Screen::Login && d.has_id("login-notice")
    })
    .await;
    assert!(d.shows("Signed out. Your open chats were handed on."));
    let q = bob
        .conversation_where(|c| {
            c.id == left && c.state == holdfast_client::protocol::agent::ConversationState::Queued
        })
        .await;
    assert_eq!(q.assigned, None);
    lm.close().await;
    bob.shutdown().await;
    srv.stop().await;
}

/// `agent disable` and `agent passwd` take the app back to the sign-in
/// screen within a second, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_passwd_say_why_on_screen() {
    let srv = TestServer::start().await;
    for (user, change, words) in [
        (
            "alice",
            "disable",
            "Your account was disabled by an administrator",
        ),
        (
            "bob",
            "passwd",
            "Your password was changed. Sign in again with the new one.",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
        d.sign_in(user).await;
        {
            let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
            match change {
                "disable" => holdfast_server::admin::set_disabled(&conn, user, true).unwrap(),
                _ => holdfast_server::admin::set_password(&conn, user, "new-pass-1").unwrap(),
            }
        }
        let t0 = std::time::Instant::now();
        d.until("the sign-in screen with the reason", |d| {
            d.app.screen == Screen::Login && d.shows(words)
        })
        .await;
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(d.has_id("login-error"));
        if let Some(h) = d.app.handle() {
            h.shutdown().await.unwrap();
        }
    }
    srv.stop().await;
}

/// A supervisor reads someone else's chat live, read-only, and can move it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_opens_a_chat_read_only() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        holdfast_server::admin::add_agent(
            &conn,
            "acme",
            "sue",
            "Sue",
            PASSWORD,
            5,
            holdfast_client::protocol::agent::Role::Supervisor,
        )
        .unwrap();
    }
    let mut alice = core(&srv, "alice", dir.path());
    alice.live().await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    v.say_acked("my order is late").await.unwrap();
    let c = alice
        .conversation_where(|c| {
            c.state == holdfast_client::protocol::agent::ConversationState::Active
        })
        .await;
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("sue").await;
    d.until("the team chats", |d| d.shows("Team chats (1)"))
        .await;
    assert!(d.shows("Sue (you) · supervisor"), "{:?}", d.texts());
    d.click_id(&format!("team-conv-{}", c.id));
    d.until("the chat, read-only", |d| {
        d.shows("my order is late") && d.has_id("read-only")
    })
    .await;
    assert!(!d.has_id("composer"));
    assert!(d.shows("Alice is serving · read-only"), "{:?}", d.texts());
    assert!(d.has_id("transfer"));
    // Live: Alice's reply appears without reselecting.
    let r = alice
        .handle
        .send_message(c.id, "it ships today")
        .await
        .unwrap();
    alice.outcome(r).await.unwrap();
    d.until("Alice's reply", |d| d.shows("it ships today"))
        .await;
    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    alice.shutdown().await;
    srv.stop().await;
}

/// Texts that say "verified": the word itself, in any case.
fn says_verified(t: &str) -> bool {
    t.to_lowercase().contains("verified")
}

/// Whether two boxes sit on one line, side by side (not merely in the same
/// band of the window: the side panel, chat and details are columns).
fn side_by_side(a: &Rectangle, b: &Rectangle) -> bool {
    let same_line = a.y < b.y + b.height && b.y < a.y + a.height;
    let gap = (a.x - (b.x + b.width)).max(b.x - (a.x + a.width));
    same_line && gap < 150.0
}

/// The site's identify hash covers its id for the visitor and nothing else:
/// a visitor who chose the name "Chief Executive" and the attribute
/// `role=admin` on a correctly signed identity must not have them shown as
/// verified. Only the id carries the site's word; the rest is stated by
/// the visitor, in the list, the chat header and the details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_site_id_is_shown_as_verified() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    // Mallory's site, "other", has a secret: identities must be signed.
    d.sign_in("mallory").await;
    let mut v = WsVisitor::connect(srv.http(), "other").await.unwrap();
    let vid = v.visitor.clone();
    v.send_json(&holdfast_client::protocol::visitor::VisitorIn::Identify {
        id: "user-829".into(),
        name: Some("Chief Executive".into()),
        email: Some("ceo@example.com".into()),
        hash: Some(holdfast_server::token::identity_hash(
            "other-secret",
            "user-829",
        )),
        attrs: [("role".to_string(), serde_json::json!("admin"))]
            .into_iter()
            .collect(),
    })
    .await
    .unwrap();
    d.until("the verified visitor", |d| {
        d.app
            .workspace
            .desk
            .visitors
            .get(&vid)
            .is_some_and(|v| v.verified && v.name.as_deref() == Some("Chief Executive"))
    })
    .await;
    v.say_acked("Please reset the admin password")
        .await
        .unwrap();
    d.until("the chat open with the visitor's details", |d| {
        d.has_id("composer")
            && d.shows("Please reset the admin password")
            && d.app.workspace.desk.details_visitor.as_deref() == Some(vid.as_str())
    })
    .await;

    let stated = ["Chief Executive", "ceo@example.com", "admin"];
    let boxes = d.text_boxes();
    // Every "verified" on screen names the id, and only the id.
    let claims: Vec<&(String, Rectangle)> =
        boxes.iter().filter(|(t, _)| says_verified(t)).collect();
    for (t, _) in &claims {
        assert!(
            t.contains("user-829") && !stated.iter().any(|s| t.contains(s)),
            "a \"verified\" that is not about the site's id: {t:?}; on screen: {:?}",
            d.texts()
        );
    }
    // The id is shown as verified in the list, the chat header and the
    // details.
    for place in [
        format!("visitor-{vid}"),
        "chat-header".into(),
        "details".into(),
    ] {
        let texts = d.texts_in(&place);
        assert!(
            texts
                .iter()
                .any(|t| t.contains("✓") && t.contains("user-829") && says_verified(t)),
            "no verified id in {place}: {texts:?}"
        );
    }
    // Nothing the visitor stated sits next to a "verified".
    for (t, b) in boxes
        .iter()
        .filter(|(t, _)| stated.iter().any(|s| t.contains(s)))
    {
        for (claim, cb) in &claims {
            assert!(!side_by_side(b, cb), "{t:?} is drawn next to {claim:?}");
        }
    }
    // The details list name, email and attributes under "Stated by the
    // visitor", below the caption, and the verified id is not among them.
    let block = d.texts_in("visitor-stated");
    let caption = block
        .iter()
        .position(|t| t.to_lowercase().contains("stated by the visitor"))
        .unwrap_or_else(|| panic!("no caption in the stated block: {block:?}"));
    for s in ["Chief Executive", "ceo@example.com", "role: admin"] {
        let at = block
            .iter()
            .position(|t| t.contains(s))
            .unwrap_or_else(|| panic!("{s:?} not under the caption: {block:?}"));
        assert!(caption < at, "{block:?}");
    }
    assert!(!block.iter().any(|t| says_verified(t)), "{block:?}");
    // The list row and the chat header say the name is the visitor's word.
    for place in [format!("visitor-{vid}"), "chat-header".into()] {
        let texts = d.texts_in(&place);
        assert!(
            texts
                .iter()
                .any(|t| t.to_lowercase().contains("stated by the visitor")),
            "{place} does not say who stated the name: {texts:?}"
        );
    }

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// This test's own list of the characters that reorder or hide text, so a
/// gap in the app's list shows here.
fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

/// A visitor who puts right-to-left overrides, isolates and zero-width
/// spaces in their name, message, attributes and page reaches the screen
/// as the letters they typed and nothing else: the name cannot pass for
/// "exe.jpg", and no text drawn after it is flipped. The store keeps what
/// was said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidi_and_invisible_characters_never_reach_the_screen() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // An agent whose display name carries an override too: it is in the
    // window title, the team panel and the transcript's system lines.
    {
        let conn = holdfast_server::store::open_connection(srv.dir.path()).unwrap();
        holdfast_server::admin::add_agent(
            &conn,
            "acme",
            "zed",
            "Zed \u{202E}xoN",
            PASSWORD,
            2,
            holdfast_client::protocol::agent::Role::Agent,
        )
        .unwrap();
    }
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("zed").await;
    let mut hello = holdfast_tests::visitor::hello("acme", None, None, "https://shop.example/");
    if let holdfast_client::protocol::visitor::VisitorIn::Hello { page, .. } = &mut hello {
        *page = Some(holdfast_client::protocol::visitor::PageInfo {
            url: "https://shop.example/\u{202E}fdp.exe".into(),
            title: "\u{2067}Checkout\u{200B}".into(),
            referrer: Some("https://ref.example/\u{202E}moc.knab".into()),
        });
    }
    let mut v = WsVisitor::connect_with(srv.http(), hello).await.unwrap();
    let vid = v.visitor.clone();
    // "acme" has no secret: the id is the visitor's word like the rest.
    v.send_json(&holdfast_client::protocol::visitor::VisitorIn::Identify {
        id: "guest\u{200B}-7".into(),
        name: Some("\u{202E}gpj.exe".into()),
        email: Some("eve\u{200B}@example.com".into()),
        hash: None,
        attrs: [(
            "\u{202E}plan".to_string(),
            serde_json::json!("\u{2067}gold\u{200B}"),
        )]
        .into_iter()
        .collect(),
    })
    .await
    .unwrap();
    let body = "Invoice \u{202E}fdp.exe attached, \u{2067}please\u{200B} open it";
    v.say_acked(body).await.unwrap();
    d.until("the chat open with the visitor's details", |d| {
        d.has_id("composer")
            && d.app.workspace.desk.details_visitor.as_deref() == Some(vid.as_str())
    })
    .await;
    d.until("the identity and the message", |d| {
        d.app
            .workspace
            .desk
            .visitors
            .get(&vid)
            .is_some_and(|v| v.email.is_some())
            && d.app.workspace.desk.selected.is_some_and(|c| {
                d.app.workspace.desk.convs[&c]
                    .messages
                    .iter()
                    .any(|m| m.body == body)
            })
    })
    .await;
    // History from the server shows the same message again.
    d.apply(Message::Workspace(workspace::Message::Details(
        details::Message::LoadHistory {
            visitor: vid.clone(),
            older: false,
        },
    )));
    d.until("history", |d| {
        d.app
            .workspace
            .desk
            .history
            .get(&vid)
            .is_some_and(|h| !h.loading && h.messages.iter().any(|m| m.body == body))
    })
    .await;

    let texts = d.texts();
    for t in &texts {
        assert!(
            !t.chars().any(is_bidi_or_invisible),
            "{t:?} ({:?}) reached the screen; on screen: {texts:?}",
            t.chars()
                .filter(|c| is_bidi_or_invisible(*c))
                .map(|c| format!("U+{:04X}", u32::from(c)))
                .collect::<Vec<_>>()
        );
    }
    // What is left is what the visitor typed, everywhere it shows.
    let visible = "Invoice fdp.exe attached, please open it";
    let count = |needle: &str| texts.iter().filter(|t| t.contains(needle)).count();
    assert!(count(visible) >= 3, "bubble, preview, history: {texts:?}");
    for needle in [
        "gpj.exe",
        "eve@example.com",
        "plan: gold",
        "Checkout",
        "https://shop.example/fdp.exe",
        "https://ref.example/moc.knab",
        "guest-7",
    ] {
        assert!(count(needle) > 0, "{needle:?} not on screen: {texts:?}");
    }
    // A site without a secret vouches for nothing, the id included.
    assert!(!texts.iter().any(|t| says_verified(t)), "{texts:?}");
    assert!(count("Zed xoN (you)") > 0, "{texts:?}");
    // The window title is made safe the same way.
    let title = d.app.title();
    assert!(
        !title.chars().any(is_bidi_or_invisible) && title.ends_with("Zed xoN"),
        "{title:?}"
    );
    // The data keeps what was said; only the display drops the controls.
    let conv = d.app.workspace.desk.selected.unwrap();
    assert!(
        d.app.workspace.desk.convs[&conv]
            .messages
            .iter()
            .any(|m| m.body == body),
        "the stored message lost its text"
    );
    assert_eq!(
        d.app.workspace.desk.visitors[&vid].name.as_deref(),
        Some("\u{202E}gpj.exe")
    );

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

/// Page addresses are whatever the visitor's browser reported, `javascript:`
/// included. The app opens nothing (no link, no "open page" action), so they
/// show as text; clicking one does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_urls_show_as_inert_text() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    d.sign_in("alice").await;
    let mut hello = holdfast_tests::visitor::hello("acme", None, None, "https://shop.example/");
    if let holdfast_client::protocol::visitor::VisitorIn::Hello { page, .. } = &mut hello {
        *page = Some(holdfast_client::protocol::visitor::PageInfo {
            url: "javascript:alert(1)".into(),
            title: "Click me".into(),
            referrer: Some("javascript:alert(1)".into()),
        });
    }
    let v = WsVisitor::connect_with(srv.http(), hello).await.unwrap();
    let vid = v.visitor.clone();
    d.until("the visitor in the list", |d| {
        d.has_id(&format!("visitor-{vid}"))
    })
    .await;
    d.apply(Message::Workspace(workspace::Message::Visitors(
        visitors::Message::Details(vid.clone()),
    )));
    d.until("the page in the list and the details", |d| {
        d.texts_in(&format!("visitor-{vid}"))
            .iter()
            .any(|t| t.contains("javascript:alert(1)"))
            && d.texts_in("details")
                .iter()
                .filter(|t| t.contains("javascript:alert(1)"))
                .count()
                >= 2
    })
    .await;
    let boxes: Vec<(String, Rectangle)> = d
        .text_boxes()
        .into_iter()
        .filter(|(t, _)| t.contains("javascript:"))
        .collect();
    // Page, referrer in the list; referrer and trail in the details.
    assert!(boxes.len() >= 4, "{boxes:?}");
    for (t, b) in &boxes {
        // The address is the whole of its text, not a label on something.
        assert!(
            t == "javascript:alert(1)" || t.ends_with(" javascript:alert(1)"),
            "{t:?}"
        );
        let produced: Vec<String> = {
            let mut ui = Simulator::with_size(settings(), (1280.0, 800.0), d.app.view());
            ui.point_at(b.center());
            let _ = ui.simulate(iced_test::simulator::click());
            ui.into_messages().map(|m| format!("{m:?}")).collect()
        };
        assert!(produced.is_empty(), "clicking {t:?} did {produced:?}");
    }

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
// Files in chats (issue 18), on the same driver.
#[path = "desktop_ui/attachments.rs"]
mod files;

mod block;

mod notes;

#[path = "desktop_ui/looks.rs"]
mod looks;
#[path = "desktop_ui/typing.rs"]
mod typing;

#[path = "desktop_ui/attention.rs"]
mod attention;
#[path = "desktop_ui/canned.rs"]
mod canned;
#[path = "desktop_ui/invite_rules.rs"]
mod invite_rules;
mod keyboard;
// The ring's keys that scroll, the details' keys, and one name per visitor.
mod ring_keys;

mod links;

#[path = "desktop_ui/i18n.rs"]
mod i18n;

#[path = "desktop_ui/groups.rs"]
mod groups;

#[path = "desktop_ui/visitor_lang.rs"]
mod visitor_lang;
