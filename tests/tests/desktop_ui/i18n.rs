//! Chinese and English in the app (issue 17): the OS's locale picks the
//! first language, the switch on the sign-in screen and in the top bar
//! changes every word at once, the pick is remembered over the OS's, and
//! the demo workspace in Chinese is drawn with real glyphs (no missing-glyph
//! boxes). With `HOLDFAST_WRITE_SCREENSHOTS` set, it is written to
//! `assets/screenshots/desktop-zh.png`, and in dark mode to
//! `desktop-zh-dark.png`.

use holdfast_agent::ui::i18n::{EN, Lang, ZH};
use holdfast_agent::ui::prefs::Prefs;

use super::looks::{chat_open, keep_screenshot, look, render};
use super::*;

use crate::support::desktop_demo as demo;

/// Words of the workspace with a chat open, in both languages: each pair
/// is the same place on screen.
fn workspace_words() -> Vec<(String, String)> {
    vec![
        (EN.connected.into(), ZH.connected.into()),
        (EN.sign_out.into(), ZH.sign_out.into()),
        (EN.canned_replies.into(), ZH.canned_replies.into()),
        (EN.online.into(), ZH.online.into()),
        (EN.away.into(), ZH.away.into()),
        ((EN.waiting_heading)(0), (ZH.waiting_heading)(0)),
        ((EN.my_conversations)(1), (ZH.my_conversations)(1)),
        (EN.today.into(), ZH.today.into()),
        (EN.send.into(), ZH.send.into()),
        (EN.internal_note.into(), ZH.internal_note.into()),
        (EN.close_conversation.into(), ZH.close_conversation.into()),
        (EN.page_trail.into(), ZH.page_trail.into()),
        (EN.past_conversations.into(), ZH.past_conversations.into()),
        (EN.theme.into(), ZH.theme.into()),
    ]
}

/// Apply every message that has come in, then look at the screen once,
/// until `pred` holds. A debug build lays Chinese out slowly (the glyphs
/// come from the fallback font, looked up glyph by glyph), so this looks
/// once per batch rather than once per message as `Driver::until` does.
async fn until_drained(d: &mut Driver, what: &str, pred: impl Fn(&[String]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        d.apply(Message::Tick);
        while let Ok(m) = d.rx.try_recv() {
            d.apply(m);
        }
        let texts = d.texts();
        if pred(&texts) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; on screen: {texts:?}"
        );
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), d.rx.recv()).await {
            d.apply(m);
        }
    }
}

/// Whether a text on screen is exactly `word`, or starts with it (the
/// connection bar says more after "Connected").
fn on_screen(texts: &[String], word: &str) -> bool {
    texts.iter().any(|t| t == word || t.starts_with(word))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_language_switch_turns_the_workspace_chinese_and_back() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    assert_eq!(d.app.lang, Lang::En, "no locale given: English");

    // On the sign-in screen, both ways, before anyone signs in; the error
    // already up is reworded too.
    assert!(d.shows("Sign in") && d.shows("Server address"));
    d.click_text("Sign in");
    assert!(d.shows(EN.enter_username), "{:?}", d.texts());
    d.click_id("lang-zh");
    assert!(d.shows(ZH.enter_username) && !d.shows(EN.enter_username));
    assert!(
        d.shows(ZH.sign_in) && d.shows(ZH.server_address),
        "{:?}",
        d.texts()
    );
    assert!(!d.shows("Sign in") && !d.shows("Server address"));
    // The languages are named in themselves, whichever is on.
    assert!(d.shows("中文") && d.shows("English"));
    d.click_id("lang-en");
    assert!(d.shows("Sign in"), "{:?}", d.texts());

    let _v = chat_open(&mut d, &srv).await;
    let texts = d.texts();
    for (en, zh) in workspace_words() {
        assert!(on_screen(&texts, &en), "{en:?} not on screen: {texts:?}");
        assert!(!on_screen(&texts, &zh), "{zh:?} on the English screen");
    }

    // The top bar's switch: every word at once, no restart.
    d.click_id("lang-zh");
    assert_eq!(d.app.lang, Lang::Zh);
    let texts = d.texts();
    for (en, zh) in workspace_words() {
        assert!(on_screen(&texts, &zh), "{zh:?} not on screen: {texts:?}");
        assert!(!on_screen(&texts, &en), "{en:?} still on screen: {texts:?}");
    }
    // Times too: the visitor's time on the site, in Chinese units.
    assert!(texts.iter().any(|t| t.starts_with("已停留 ")), "{texts:?}");
    // Nothing on the Chinese screen is a sentence of English words, except
    // what the visitor and the site wrote (their words, the page titles and
    // the browser's name).
    let theirs = ["Where is my parcel?", "Hi! Can I help", "Linux", "Firefox"];
    for t in &texts {
        let english_words = t
            .split_whitespace()
            .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_alphabetic()))
            .count();
        assert!(
            english_words < 2 || theirs.iter().any(|s| t.contains(s)) || t.contains("://"),
            "English left on the Chinese screen: {t:?}"
        );
    }
    // Remembered with the rest of the prefs.
    let saved = Prefs::load(&dir.path().join("prefs.json"));
    assert_eq!(saved.lang, Some(Lang::Zh));
    assert_eq!(saved.username, "alice");

    // And back.
    d.click_id("lang-en");
    let texts = d.texts();
    for (en, zh) in workspace_words() {
        assert!(on_screen(&texts, &en), "{en:?} not back: {texts:?}");
        assert!(!on_screen(&texts, &zh), "{zh:?} left over: {texts:?}");
    }
    assert_eq!(
        Prefs::load(&dir.path().join("prefs.json")).lang,
        Some(Lang::En)
    );

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_os_locale_picks_the_first_language_and_a_pick_outlasts_it() {
    let dir = tempfile::tempdir().unwrap();
    let with_locale = |locale: &str| Options {
        locale: Some(locale.to_owned()),
        ..options(dir.path(), "chat.example:7070".into())
    };
    // A Chinese system: the sign-in screen is Chinese from the start.
    let d = Driver::new(with_locale("zh_CN.UTF-8"));
    assert_eq!(d.app.lang, Lang::Zh);
    assert!(d.shows(ZH.sign_in) && d.shows(ZH.password_in_memory));
    assert!(!d.shows("Sign in"), "{:?}", d.texts());
    look(&d, "login-zh.png");
    // Never picked: nothing remembered, so the OS goes on deciding.
    assert_eq!(Prefs::load(&dir.path().join("prefs.json")).lang, None);
    let d = Driver::new(with_locale("en_US.UTF-8"));
    assert_eq!(d.app.lang, Lang::En);

    // English picked in the app on a Chinese system: English at the next
    // start, and the other way round.
    let mut d = Driver::new(with_locale("zh-Hans-CN"));
    d.click_id("lang-en");
    let d = Driver::new(with_locale("zh-Hans-CN"));
    assert_eq!(d.app.lang, Lang::En);
    assert!(d.shows("Sign in"), "{:?}", d.texts());
    let mut d = Driver::new(with_locale("C"));
    d.click_id("lang-zh");
    let d = Driver::new(with_locale("C"));
    assert_eq!(d.app.lang, Lang::Zh);
    assert!(d.shows(ZH.sign_in), "{:?}", d.texts());
}

/// How many distinct ink patterns the glyphs inside `area` make: a row of
/// missing-glyph boxes is one box drawn again and again, real Chinese
/// words are all different. Counted as the distinct 0/1 columns of the
/// area's dark-on-light (or light-on-dark) pixels.
// Widget bounds on a window of at most 1920 px: small and not negative.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn glyph_shapes(img: &image::RgbaImage, area: Rectangle) -> usize {
    let (x0, y0) = ((area.x * 2.0) as u32, (area.y * 2.0) as u32);
    let (x1, y1) = (
        (((area.x + area.width) * 2.0) as u32).min(img.width()),
        (((area.y + area.height) * 2.0) as u32).min(img.height()),
    );
    let luma = |x: u32, y: u32| {
        let p = img.get_pixel(x, y);
        u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])
    };
    let bg = luma(x0, y0);
    let mut columns = std::collections::HashSet::new();
    for x in x0..x1 {
        let col: Vec<bool> = (y0..y1).map(|y| luma(x, y).abs_diff(bg) > 200).collect();
        if col.iter().any(|b| *b) {
            columns.insert(col);
        }
    }
    columns.len()
}

/// The demo workspace (Mei's chat in Chinese open) with the app in
/// Chinese, light and dark: the Chinese words of the top bar, the lists
/// and the chat are drawn as glyphs, and fit at 1280×800 and 1024×700.
/// This is where `desktop-zh.png` and `desktop-zh-dark.png` come from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_workspace_in_chinese_draws_real_glyphs() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("agent.sqlite3");
    let _demo = demo::populate(&srv, &store).await;
    let mut opts = options(dir.path(), srv.agent_addr().to_string());
    opts.username = Some("alice".into());
    opts.password = Some(zeroize::Zeroizing::new(PASSWORD.to_owned()));
    opts.locale = Some("zh_CN.UTF-8".into());
    let mut d = Driver::new(opts);
    until_drained(&mut d, "the demo workspace", |t| {
        on_screen(t, ZH.connected)
            && on_screen(t, &(ZH.my_conversations)(3))
            && on_screen(t, &(ZH.waiting_heading)(1))
            && on_screen(t, &(ZH.team)(2))
    })
    .await;
    let mei = d
        .app
        .workspace
        .desk
        .mine()
        .iter()
        .find(|c| c.info.visitor_name.as_deref() == Some("Mei Chen"))
        .map(|c| c.info.id)
        .unwrap();
    d.click_id(&format!("conv-{mei}"));
    until_drained(&mut d, "Mei's chat", |t| {
        t.iter().any(|t| t.contains("谢谢!"))
            && on_screen(t, ZH.internal_note)
            && on_screen(t, ZH.on_site_now)
            && on_screen(t, ZH.past_conversations)
            && !on_screen(t, ZH.loading)
    })
    .await;

    for (size, dark, name) in [
        ((1280.0, 800.0), false, "desktop-zh.png"),
        ((1280.0, 800.0), true, "desktop-zh-dark.png"),
        ((1024.0, 700.0), false, ""),
    ] {
        d.size = size;
        if dark {
            d.click_id("theme-dark");
        }
        let img = render(&d);
        let window = Rectangle::new(iced::Point::ORIGIN, d.size.into());
        let boxes = d.text_boxes();
        for word in [
            ZH.sign_out,
            ZH.canned_replies,
            ZH.send,
            ZH.page_trail,
            &(ZH.waiting_heading)(1),
            &(ZH.my_conversations)(3),
        ] {
            let (_, b) = boxes
                .iter()
                .find(|(t, _)| t == word)
                .unwrap_or_else(|| panic!("{word:?} not on screen at {size:?}"));
            // Inside the window, not clipped by its edge.
            assert!(
                window.contains(b.position())
                    && b.x + b.width <= window.width
                    && b.y + b.height <= window.height,
                "{word:?} at {b:?} leaves the {size:?} window"
            );
            // As many ink shapes as characters, give or take: a string of
            // identical boxes would be one or two.
            let chars = word.chars().filter(|c| !c.is_ascii()).count();
            let shapes = glyph_shapes(&img, *b);
            assert!(
                shapes >= chars * 3,
                "{word:?} draws {shapes} distinct columns for {chars} characters at {size:?}"
            );
        }
        if !name.is_empty() {
            keep_screenshot(&img, name);
        }
    }

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
