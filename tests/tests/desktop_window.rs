//! The real `holdfast-agent` binary opens its real window under Xvfb, signs
//! in to a real server with demo traffic, and a screenshot taken with
//! ImageMagick's `import` shows a drawn workspace, not a blank screen: once
//! on an English system, once on a Chinese one (`LC_ALL=zh_CN.UTF-8`), where
//! the app starts in Chinese and draws it with the bundled CJK font.
//!
//! Needs `Xvfb` and `import` (Debian: `xvfb`, `imagemagick`; installed by
//! `scripts/test-all`). Set `HOLDFAST_SCREENSHOT=path.png` to keep the
//! capture (that is how `assets/screenshots/agent-workspace.png` is made),
//! and `HOLDFAST_SCREENSHOT_ZH=path.png` for the Chinese one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::desktop_demo as demo;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_tests::Reaper;
use holdfast_tests::server::{PASSWORD, TestServer, agent_app_binary};

fn start_xvfb() -> (Reaper, String) {
    // A display number no other test run on this machine is likely to hold.
    let base = 40 + std::process::id() % 400;
    for n in base..base + 50 {
        if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            || Path::new(&format!("/tmp/.X{n}-lock")).exists()
        {
            continue;
        }
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb is not installed (Debian: apt-get install xvfb)");
        let reaper = Reaper(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
                return (reaper, display);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Xvfb did not start on {display}");
    }
    panic!("no free X display number");
}

/// Distinct colours in a PNG, by ImageMagick.
fn colours(png: &Path) -> usize {
    let out = Command::new("identify")
        .args(["-format", "%k"])
        .arg(png)
        .output()
        .expect("ImageMagick is not installed (Debian: apt-get install imagemagick)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn screenshot(display: &str, out: &Path) -> bool {
    Command::new("import")
        .args(["-display", display, "-window", "root"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_window_draws_the_workspace_under_xvfb() {
    real_window("C.UTF-8", "HOLDFAST_SCREENSHOT").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_window_draws_chinese_on_a_chinese_system() {
    real_window("zh_CN.UTF-8", "HOLDFAST_SCREENSHOT_ZH").await;
}

/// The demo workspace in the real window, the OS's locale `locale`; the
/// capture kept where `keep` (an environment variable) says, if set.
async fn real_window(locale: &str, keep: &str) {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("alice.sqlite3");
    let _demo = demo::populate(&srv, &store).await;
    let (_xvfb, display) = start_xvfb();

    let app = Command::new(agent_app_binary())
        .args(["--server", &srv.agent_addr().to_string(), "--user", "alice"])
        .args(["--password-env", "HOLDFAST_TEST_PASSWORD", "--no-notify"])
        .arg("--store")
        .arg(&store)
        .arg("--prefs")
        .arg(dir.path().join("prefs.json"))
        .env("HOLDFAST_TEST_PASSWORD", PASSWORD)
        .env("DISPLAY", &display)
        // The OS's language as the app reads it (LANGUAGE would come first).
        .env("LC_ALL", locale)
        .env_remove("LANGUAGE")
        .env_remove("WAYLAND_DISPLAY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut app = Reaper(app);

    // Poll until the capture is a drawn window: an empty Xvfb root is one
    // colour; the workspace has text, cards and the connection bar. Then
    // one more second so the live visitor list has arrived.
    let shot = dir.path().join("shot.png");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = app.0.try_wait() {
            panic!("the app exited early: {status}");
        }
        if screenshot(&display, &shot) {
            n = colours(&shot);
            if n > 64 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(n > 64, "the window looks blank: {n} colours");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(screenshot(&display, &shot));
    let n = colours(&shot);
    assert!(n > 64, "the window looks blank: {n} colours");
    if let Ok(keep) = std::env::var(keep) {
        std::fs::copy(&shot, keep).unwrap();
    }
    let _ = app.0.kill();
    srv.stop().await;
}
