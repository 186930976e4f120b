//! A visitor's words reach the OS notification daemon as text, never as
//! markup, and without the bidi and zero-width characters that would let
//! them disguise themselves.
//!
//! The real `holdfast-agent` binary runs under Xvfb against a real server,
//! with its session bus pointed at a private `dbus-daemon` on which this
//! test serves a stand-in `org.freedesktop.Notifications` that records every
//! `Notify` call. A real WebSocket visitor with a hostile name then sends a
//! hostile message to the signed-in agent. The stand-in advertises
//! `body-markup` (as GNOME Shell, KDE Plasma and dunst do by default) in one
//! test and not in the other, because the app escapes for the first only.
//!
//! Needs `dbus-daemon`, `Xvfb` and `xdotool` (Debian: `dbus-daemon`, `xvfb`,
//! `xdotool`; installed by `scripts/test-all`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::desktop_demo as demo;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_client::protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_client::{ConnState, Update, start};
use holdfast_tests::Reaper;
use holdfast_tests::server::{PASSWORD, TestServer, agent_app_binary};

/// One `Notify` call, as the daemon received it.
#[derive(Clone, Debug)]
struct Shown {
    app_name: String,
    summary: String,
    body: String,
}

/// The stand-in notification daemon.
#[derive(Clone, Debug, Default)]
struct StandIn {
    /// Advertise `body-markup`, that is, parse the body as markup.
    markup: bool,
    shown: Arc<Mutex<Vec<Shown>>>,
    last_id: Arc<AtomicU32>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl StandIn {
    fn get_capabilities(&self) -> Vec<String> {
        let mut caps = vec!["body".to_owned()];
        if self.markup {
            caps.push("body-markup".into());
        }
        caps
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "holdfast-stand-in".into(),
            "Holdfast tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        self.shown.lock().unwrap().push(Shown {
            app_name,
            summary,
            body,
        });
        if replaces_id != 0 {
            replaces_id
        } else {
            self.last_id.fetch_add(1, Ordering::SeqCst) + 1
        }
    }

    fn close_notification(&self, _id: u32) {}
}

/// A private session bus in `dir`, and its address.
fn start_session_bus(dir: &Path) -> (Reaper, String) {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address"])
        .arg(format!("--address=unix:path={}", dir.join("bus").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // It warns that it cannot raise its fd limit in a container; a bus
        // that did not start shows as no address below.
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)");
    let stdout = child.stdout.take().unwrap();
    let reaper = Reaper(child);
    // The daemon prints its address once it listens.
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line.trim().to_owned();
    assert!(
        address.starts_with("unix:"),
        "dbus-daemon printed no address: {line:?}"
    );
    (reaper, address)
}

/// Xvfb, stopped with SIGTERM so it removes its lock file and socket (a
/// killed one leaves them, and each run would take another display number).
struct Xvfb(std::process::Child);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_xvfb() -> (Xvfb, String) {
    // A display number no other test run on this machine is likely to hold;
    // the counter keeps this binary's own tests apart under `cargo test`,
    // where they are threads of one process. Xvfb exits at once when
    // another server holds the number's lock, so a race for one costs a
    // retry, not a shared display.
    static STARTED: AtomicU32 = AtomicU32::new(0);
    let base = 500 + std::process::id() % 400 + 50 * STARTED.fetch_add(1, Ordering::SeqCst);
    for n in base..base + 50 {
        if Path::new(&format!("/tmp/.X{n}-lock")).exists() {
            continue;
        }
        let display = format!(":{n}");
        // `-displayfd 1`: it prints the number once it accepts connections.
        // `-noreset`: by default an X server resets whenever its last client
        // leaves, and a client connecting meanwhile can be refused. Each
        // `xdotool` call below is a client that leaves, and without this
        // flag the app failed to open the display in half of the runs with
        // two of these tests running at once.
        //
        // The screen is larger than the app's 1280x800 window, so the
        // pointer can rest outside it (see `unfocus`).
        let mut child = Command::new("Xvfb")
            .args([&display, "-displayfd", "1", "-noreset", "-nolisten", "tcp"])
            .args(["-screen", "0", "1600x1000x24"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is not installed (Debian: apt-get install xvfb)");
        let stdout = child.stdout.take().unwrap();
        let xvfb = Xvfb(child);
        let mut line = String::new();
        // Nothing, at end of file, when another server holds the number.
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() == n.to_string() {
            return (xvfb, display);
        }
    }
    panic!("no free X display number");
}

/// `xdotool` on `display`: its output when it succeeded.
fn xdotool(display: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("xdotool is not installed (Debian: apt-get install xdotool)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Make the app believe its window lost focus.
///
/// The app starts out assuming it is focused and notifies only once winit
/// reports `Unfocused`, which winit does only for a window it saw gain
/// focus. Under a bare Xvfb no window manager hands focus out, and whether
/// the window gains and loses it anyway depends on X's initial
/// pointer-root focus and on where the pointer is (a trial run without
/// this step did end up unfocused, but nothing promises it). So give the
/// window focus, then move it to the root window, with the pointer parked
/// outside the window: with the pointer over it, focus on the root would
/// count as focus for the window again (X "pointer" focus).
async fn unfocus(display: &str, window: &str) {
    xdotool(display, &["mousemove", "1590", "990"]).expect("xdotool mousemove");
    let location = xdotool(display, &["getmouselocation", "--shell"]).unwrap();
    let root = location
        .lines()
        .find_map(|l| l.strip_prefix("WINDOW="))
        .expect("the window under the pointer")
        .to_owned();
    assert_ne!(root, window, "the pointer is still over the app's window");
    focus(display, window).await;
    // Let winit see the focus before it goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    focus(display, &root).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Give `window` the input focus, retrying while X refuses: a window just
/// mapped may not be viewable yet.
async fn focus(display: &str, window: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while xdotool(display, &["windowfocus", "--sync", window]).is_none() {
        assert!(Instant::now() < deadline, "cannot focus window {window}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bidi controls and invisible characters that must not reach the daemon:
/// this test's own list, not the app's, so a gap in the app's shows here.
fn is_bidi_or_invisible(c: char) -> bool {
    matches!(c,
        '\u{061C}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}'
        | '\u{FEFF}')
}

const HOSTILE_NAME: &str = "<b>Support</b> \u{202E}gpj.exe\u{200B}";
const HOSTILE_BODY: &str = "\u{2067}<a href=\"https://evil.example/login\">Your session expired…</a> <img src=\"file:///etc/passwd\"/>\u{FEFF}";

/// Sign the real app in under Xvfb with a stand-in daemon that advertises
/// `body-markup` or not, have a hostile visitor write to it, and return the
/// `Notify` calls the daemon received.
async fn notifications_for_a_hostile_visitor(markup: bool) -> Vec<Shown> {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = srv.agent_addr().to_string();
    let store = dir.path().join("alice.sqlite3");

    // Pin the server's key in the store the app will use, as an agent who
    // signed in before would have: the app then signs in without asking.
    {
        let (h, mut rx) = start(demo::client_config(&addr, "alice", &store)).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let u = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("alice's core did not connect")
                .expect("closed");
            if matches!(u, Update::Connection(s) if s.state == ConnState::Live) {
                break;
            }
        }
        h.shutdown().await.unwrap();
    }

    let (_bus, bus_address) = start_session_bus(dir.path());
    let daemon = StandIn {
        markup,
        ..StandIn::default()
    };
    let _daemon_conn = zbus::connection::Builder::address(bus_address.as_str())
        .name("org.freedesktop.Notifications")
        .serve_at("/org/freedesktop/Notifications", daemon.clone())
        .build()
        .await
        .unwrap();

    let (_xvfb, display) = start_xvfb();
    // No `--no-notify`: the point is the real notification path.
    let app = Command::new(agent_app_binary())
        .args(["--server", &addr, "--user", "alice"])
        .args(["--password-env", "HOLDFAST_TEST_PASSWORD"])
        .arg("--store")
        .arg(&store)
        .arg("--prefs")
        .arg(dir.path().join("prefs.json"))
        .env("HOLDFAST_TEST_PASSWORD", PASSWORD)
        .env("DISPLAY", &display)
        .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut app = Reaper(app);

    // The title names the agent once the app has signed in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let window = loop {
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited early: {status}");
        }
        if let Some(ids) = xdotool(
            &display,
            &["search", "--onlyvisible", "--name", "Holdfast .* Alice$"],
        ) && let Some(id) = ids.lines().next()
        {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "the app did not sign in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    unfocus(&display, &window).await;

    // A visitor the site named with markup and a right-to-left override
    // (the name a site passes on is whatever its user typed) opens a chat;
    // the only agent online, the app's, gets it.
    let mut visitor = demo::visitor(
        &srv,
        HOSTILE_NAME,
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        &[],
        &[("https://shop.example/account", "Account")],
    )
    .await;
    visitor.say_acked("Hello?").await.unwrap();
    visitor
        .wait_for(Duration::from_secs(20), |m| {
            matches!(
                m,
                VisitorOut::Event {
                    event: VisitorEvent::Conversation(c),
                    ..
                } if c.agent_name.is_some()
            )
        })
        .await
        .expect("the chat was not assigned to the app's agent");
    visitor.say_acked(HOSTILE_BODY).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if daemon
            .shown
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.body.contains("evil.example"))
        {
            break;
        }
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no notification for the hostile message; the daemon got: {:?}",
            daemon.shown.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = app.0.kill();
    srv.stop().await;
    let shown = daemon.shown.lock().unwrap().clone();
    for s in &shown {
        assert_eq!(s.app_name, "Holdfast");
        for field in [&s.summary, &s.body] {
            assert!(
                !field.chars().any(is_bidi_or_invisible),
                "a bidi or invisible character reached the daemon: {s:?}"
            );
        }
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_markup_daemon_gets_visitor_markup_escaped() {
    let shown = notifications_for_a_hostile_visitor(true).await;
    let hostile = shown
        .iter()
        .rfind(|s| s.body.contains("evil.example"))
        .unwrap();
    // The daemon parses the body, so it must arrive escaped: every `<` as
    // `&lt;`, and the visitor's text all there to read.
    assert_eq!(
        hostile.body,
        "&lt;a href=&quot;https://evil.example/login&quot;&gt;Your session expired…&lt;/a&gt; \
         &lt;img src=&quot;file:///etc/passwd&quot;/&gt;"
    );
    for s in &shown {
        for field in [&s.summary, &s.body] {
            assert!(
                !field.contains('<') && !field.contains('>'),
                "raw markup reached the daemon: {s:?}"
            );
        }
    }
    // The summary is plain text by the spec, but some daemons parse it
    // anyway: the name keeps its words and loses the means to open a tag.
    assert_eq!(
        hostile.summary,
        "Message from \u{2039}b\u{203A}Support\u{2039}/b\u{203A} gpj.exe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_daemon_gets_visitor_text_as_typed() {
    let shown = notifications_for_a_hostile_visitor(false).await;
    let hostile = shown
        .iter()
        .rfind(|s| s.body.contains("evil.example"))
        .unwrap();
    // A daemon without `body-markup` shows the body as it is: escaping it
    // would put `&lt;` on the agent's screen. Only the bidi isolate and the
    // zero-width no-break space around it are gone.
    assert_eq!(
        hostile.body,
        "<a href=\"https://evil.example/login\">Your session expired…</a> \
         <img src=\"file:///etc/passwd\"/>"
    );
    assert_eq!(hostile.summary, "Message from <b>Support</b> gpj.exe");
}
