//! Files in the desktop app (issue 18), driven through the real views and
//! the real client core against a real server, with WebSocket visitors on
//! the other end: a pasted screenshot, a file sent while the link is cut, a
//! kill and restart mid-upload, a visitor's image, and a cancel. Each ends
//! by counting what the visitor received: exactly one message with the file,
//! or none.

use std::sync::Arc;

use holdfast_agent::ui::files::{self, Fetched, RawImage};
use holdfast_agent::ui::screen::workspace::chat;
use holdfast_client::UploadState;
use holdfast_client::protocol::ids::MsgId;
use holdfast_client::protocol::visitor::{VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::attach;
use holdfast_tests::visitor::new_id;
use zeroize::Zeroizing;

use super::*;

fn chat_msg(m: chat::Message) -> Message {
    Message::Workspace(workspace::Message::Chat(m))
}

/// The ids of the files the visitor has received, one per message.
fn files_received(v: &WsVisitor) -> Vec<String> {
    v.events
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) => m.attachment.as_ref().map(|a| a.id.clone()),
            _ => None,
        })
        .collect()
}

/// Read until the visitor has a message carrying a file.
async fn wait_file(v: &mut WsVisitor) -> holdfast_client::protocol::agent::AttachmentInfo {
    let m = v
        .wait_for(Duration::from_secs(20), |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Message(msg), .. }
                if msg.attachment.is_some())
        })
        .await
        .unwrap();
    match m {
        VisitorOut::Event {
            event: VisitorEvent::Message(msg),
            ..
        } => *msg.attachment.unwrap(),
        _ => unreachable!(),
    }
}

/// After the file arrived: a text sent afterwards comes through the same
/// ordered outbox, so once it is in, any duplicate would be too.
async fn then_nothing_more(d: &mut Driver, v: &mut WsVisitor, marker: &'static str) {
    d.interact(|ui| {
        ui.click(Id::new("composer")).unwrap();
        ui.typewrite(marker);
        ui.tap_key(Named::Enter);
    });
    v.wait_message(marker).await.unwrap();
}

/// Sign in, let a visitor in, invite them: the chat is open.
async fn open_chat(d: &mut Driver, srv: &TestServer, user: &str) -> WsVisitor {
    d.sign_in(user).await;
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
    v
}

/// A screenshot-like RGBA image: a gradient with a dark bar.
#[allow(clippy::cast_possible_truncation)] // x < w and y < h: at most 255.
fn screenshot(w: u32, h: u32) -> RawImage {
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let bar = y > h / 3 && y < h / 2;
            let (r, g, b) = if bar {
                (40, 40, 60)
            } else {
                ((x * 255 / w) as u8, (y * 255 / h) as u8, 200u8)
            };
            rgba.extend_from_slice(&[r, g, b, 255]);
        }
    }
    RawImage {
        width: w,
        height: h,
        rgba: Arc::new(rgba),
    }
}

fn thumb_ready(d: &Driver, id: &str) -> bool {
    matches!(
        d.app
            .workspace
            .desk
            .files
            .fetched
            .get(&(id.to_owned(), true)),
        Some(Fetched::Ready { .. })
    ) && d.has_id(&format!("thumb-{id}"))
}

fn only_upload(d: &Driver) -> Option<holdfast_agent::ui::files::Upload> {
    match d.app.workspace.desk.files.uploads.as_slice() {
        [u] => Some(u.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_screenshot_and_a_visitors_image_show_as_thumbnails() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    let mut v = open_chat(&mut d, &srv, "alice").await;

    // Ctrl+V in the composer asks for the clipboard (not iced's text-only
    // paste). Headless, there is no clipboard to read: its answer goes in
    // next as the message the real read produces, and on from the pixels.
    let pressed: Vec<Message> = {
        let mut ui = Simulator::with_size(settings(), (1280.0, 800.0), d.app.view());
        ui.click(Id::new("composer")).unwrap();
        let v = iced::keyboard::Key::Character("v".into());
        let _ = ui.simulate([iced::Event::Keyboard(iced::keyboard::Event::KeyPressed {
            key: v.clone(),
            modified_key: v,
            physical_key: iced::keyboard::key::Physical::Code(iced::keyboard::key::Code::KeyV),
            location: iced::keyboard::Location::Standard,
            modifiers: iced::keyboard::Modifiers::CTRL,
            repeat: false,
            text: None,
        })]);
        ui.into_messages().collect()
    };
    assert!(
        pressed.iter().any(|m| matches!(
            m,
            Message::Workspace(workspace::Message::Chat(chat::Message::Paste))
        )),
        "{pressed:?}"
    );
    d.apply(chat_msg(chat::Message::Clipboard(Ok(Some(screenshot(
        320, 200,
    ))))));
    let got = wait_file(&mut v).await;
    assert!(got.image, "{got:?}");
    assert_eq!(got.mime, "image/png");
    assert!(got.name.starts_with("screenshot-") && got.name.ends_with(".png"));
    let mine = got.id.clone();
    d.until("the agent's own thumbnail", |d| thumb_ready(d, &mine))
        .await;
    then_nothing_more(&mut d, &mut v, "that is the screen").await;
    assert_eq!(files_received(&v), std::slice::from_ref(&mine));
    assert!(d.app.workspace.desk.files.uploads.is_empty());

    // The visitor sends a photo: it shows as a thumbnail in the chat.
    let png = attach::png(640, 480);
    let aid = attach::created(srv.http(), &v.token, png.len() as u64, "parcel.png").await;
    let r = attach::patch(srv.http(), &v.token, &aid, 0, &png).await;
    assert!(r.status < 300, "{r:?}");
    let id = new_id();
    v.send_json(&VisitorIn::Send {
        id,
        body: "the box arrived like this".into(),
        attachment: Some(aid.clone()),
    })
    .await
    .unwrap();
    d.until("the visitor's thumbnail", |d| {
        d.shows("the box arrived like this") && thumb_ready(d, &aid)
    })
    .await;
    assert!(d.shows("parcel.png · "), "{:?}", d.texts());
    // Bounded: a 640 px photo is drawn at most THUMB_MAX wide.
    let mut ui = Simulator::with_size(settings(), (1280.0, 800.0), d.app.view());
    let b =
        iced_test::selector::Bounded::bounds(&ui.find(Id::from(format!("thumb-{aid}"))).unwrap());
    assert!(
        b.width <= holdfast_agent::ui::files::THUMB_MAX + 1.0 && b.width > 20.0,
        "{b:?}"
    );
    drop(ui);

    // A fetch that fails (the core's answer for a file past retention)
    // says so with Retry, never a blank; Retry fetches it again.
    let epoch = d.app.core_epoch();
    d.apply(Message::Core(
        epoch,
        Box::new(holdfast_client::Update::AttachmentFailed {
            request: 0,
            id: aid.clone(),
            thumb: true,
            code: holdfast_client::protocol::error::ErrorCode::NotFound,
            message: "not found".into(),
        }),
    ));
    assert!(d.has_id(&format!("thumb-failed-{aid}")));
    assert!(d.shows("No longer available"), "{:?}", d.texts());
    d.interact(|ui| {
        ui.click("Retry").unwrap();
    });
    d.until("the thumbnail fetched again", |d| thumb_ready(d, &aid))
        .await;

    if std::env::var_os("HOLDFAST_WRITE_SCREENSHOTS").is_some() {
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/screenshots/desktop-attachment.png");
        let shot = tempfile::tempdir().unwrap();
        let mut ui = Simulator::with_size(settings(), (1280.0, 800.0), d.app.view());
        let snap = ui.snapshot(&holdfast_agent::ui::theme(&d.app)).unwrap();
        // Writes the file when none is there, under a name with the
        // renderer's in it: the only file in a fresh directory.
        let _ = snap.matches_image(shot.path().join("shot.png")).unwrap();
        let written = std::fs::read_dir(shot.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::copy(written, out).unwrap();
    }

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_while_the_link_is_cut_arrives_once() {
    let srv = TestServer::start().await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), proxy.addr.to_string()));
    let mut v = open_chat(&mut d, &srv, "alice").await;

    // The cable is pulled: bytes vanish, nothing says so.
    proxy.blackhole(true);
    let pdf = dir.path().join("invoice 42.pdf");
    std::fs::write(&pdf, attach::pdf(600_000, 7)).unwrap();
    d.apply(chat_msg(chat::Message::Picked(Some(pdf))));
    d.until("the pending file's bubble", |d| {
        only_upload(d).is_some_and(|u| d.has_id(&format!("upload-{}", u.id)))
    })
    .await;
    assert!(d.shows("invoice 42.pdf"), "{:?}", d.texts());
    assert!(d.shows("Cancel"));

    // Back: it resumes and is sent, once.
    proxy.heal();
    let got = wait_file(&mut v).await;
    assert_eq!(got.name, "invoice 42.pdf");
    assert_eq!(got.mime, "application/pdf");
    assert_eq!(got.size, 600_000);
    d.until("the bubble replaced by the message", |d| {
        d.app.workspace.desk.files.uploads.is_empty() && d.has_id(&format!("file-{}", got.id))
    })
    .await;
    assert!(d.shows("Save as…"));
    // Save as…: the dialog's answer goes in as its message; the whole file
    // comes down through the core and lands there, byte for byte.
    let dest = dir.path().join("saved copy.pdf");
    d.apply(chat_msg(chat::Message::File(files::Action::SaveTo(
        got.clone(),
        Some(dest.clone()),
    ))));
    d.until("the file saved", |_| {
        std::fs::read(&dest).is_ok_and(|b| b == attach::pdf(600_000, 7))
    })
    .await;
    then_nothing_more(&mut d, &mut v, "invoice attached").await;
    assert_eq!(files_received(&v), [got.id]);

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    proxy.stop();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upload_the_file_reappears_resumes_and_arrives_once() {
    let srv = TestServer::start().await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), proxy.addr.to_string()));
    let mut v = open_chat(&mut d, &srv, "alice").await;

    // A slow link, so the kill lands between chunks.
    proxy.latency(Duration::from_millis(80), Duration::ZERO);
    let big = dir.path().join("manual.pdf");
    std::fs::write(&big, attach::pdf(3_000_000, 11)).unwrap();
    d.apply(chat_msg(chat::Message::Picked(Some(big))));
    // Past the first megabyte, where the core records its progress.
    d.until("some of it up", |d| {
        only_upload(d).is_some_and(|u| u.sent > 1_200_000 && u.sent < u.total)
    })
    .await;
    let id: MsgId = only_upload(&d).unwrap().id;

    // Killed: no shutdown, the core stops dead, the app is gone.
    proxy.blackhole(true);
    d.app.handle().unwrap().abort();
    drop(d);
    proxy.heal();
    proxy.latency(Duration::ZERO, Duration::ZERO);

    // Next start, same data dir: the bubble is back before any network,
    // showing what the server had, then it finishes by itself.
    let mut d = Driver::new(Options {
        username: Some("alice".into()),
        password: Some(Zeroizing::new(PASSWORD.to_owned())),
        ..options(dir.path(), proxy.addr.to_string())
    });
    let restored = only_upload(&d).expect("the pending file after a restart");
    assert_eq!(restored.id, id);
    assert_eq!(restored.state, UploadState::Uploading);
    assert!(restored.sent > 0, "resumes from its offset: {restored:?}");
    assert!(d.has_id(&format!("upload-{id}")), "{:?}", d.texts());
    // Never from zero: no progress shown below where it stood.
    let mut lowest = u64::MAX;
    d.until_with(
        "signed in again and the bubble gone",
        |d| {
            if let Some(u) = only_upload(d) {
                lowest = lowest.min(u.sent);
            }
        },
        |d| d.shows("Connected") && d.app.workspace.desk.files.uploads.is_empty(),
    )
    .await;
    assert!(lowest >= restored.sent, "{lowest} < {}", restored.sent);
    let got = wait_file(&mut v).await;
    assert_eq!(got.name, "manual.pdf");
    assert_eq!(got.size, 3_000_000);
    then_nothing_more(&mut d, &mut v, "the manual, as promised").await;
    assert_eq!(files_received(&v), [got.id]);

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    proxy.stop();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_file_is_never_sent() {
    let srv = TestServer::start().await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), proxy.addr.to_string()));
    let mut v = open_chat(&mut d, &srv, "alice").await;

    proxy.blackhole(true);
    let pdf = dir.path().join("wrong.pdf");
    std::fs::write(&pdf, attach::pdf(400_000, 3)).unwrap();
    // Dragged onto the window: the hint covers the chat until the drop.
    d.apply(chat_msg(chat::Message::FileHovered));
    assert!(d.has_id("drop-hint"));
    assert!(d.shows("Drop the file to send it to this visitor"));
    d.apply(chat_msg(chat::Message::FileDropped(pdf)));
    assert!(!d.has_id("drop-hint"));
    d.until("the pending file's bubble", |d| {
        only_upload(d).is_some_and(|u| d.has_id(&format!("upload-cancel-{}", u.id)))
    })
    .await;
    let id = only_upload(&d).unwrap().id;
    d.click_id(&format!("upload-cancel-{id}"));
    d.until("the bubble gone", |d| {
        d.app.workspace.desk.files.uploads.is_empty() && !d.has_id(&format!("upload-{id}"))
    })
    .await;
    assert!(
        d.app
            .handle()
            .unwrap()
            .pending_uploads()
            .unwrap()
            .is_empty()
    );

    proxy.heal();
    then_nothing_more(&mut d, &mut v, "never mind the file").await;
    assert!(files_received(&v).is_empty(), "{:?}", v.events);

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    proxy.stop();
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_file_says_why_and_is_removed_unsent() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(options(dir.path(), srv.agent_addr().to_string()));
    let mut v = open_chat(&mut d, &srv, "alice").await;

    // HTML named .png: sniffed, not trusted, and refused.
    let fake = dir.path().join("totally-a-picture.png");
    std::fs::write(&fake, b"<html><script>alert(1)</script></html>".repeat(50)).unwrap();
    d.apply(chat_msg(chat::Message::Picked(Some(fake))));
    d.until("the refusal in the bubble", |d| {
        only_upload(d).is_some_and(|u| matches!(u.state, UploadState::Failed(_)))
            && d.shows("Not sent:")
    })
    .await;
    let first = only_upload(&d).unwrap().id;
    // Retry sends it again from what was picked, in place of the failed
    // one (dismissed, so at most one can ever go): refused again.
    d.click_id(&format!("upload-retry-{first}"));
    d.until("the second attempt refused", |d| {
        only_upload(d).is_some_and(|u| u.id != first && matches!(u.state, UploadState::Failed(_)))
    })
    .await;
    assert_eq!(d.app.handle().unwrap().pending_uploads().unwrap().len(), 1);
    let id = only_upload(&d).unwrap().id;
    d.click_id(&format!("upload-remove-{id}"));
    d.until("the bubble gone", |d| {
        d.app.workspace.desk.files.uploads.is_empty() && !d.has_id(&format!("upload-{id}"))
    })
    .await;
    assert!(
        d.app
            .handle()
            .unwrap()
            .pending_uploads()
            .unwrap()
            .is_empty()
    );
    then_nothing_more(&mut d, &mut v, "let me send it another way").await;
    assert!(files_received(&v).is_empty(), "{:?}", v.events);

    if let Some(h) = d.app.handle() {
        h.shutdown().await.unwrap();
    }
    srv.stop().await;
}
