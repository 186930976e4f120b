//! Attachments in the visitor widget (issue 18, PROTOCOL.md 10.13), in
//! headless Chromium against a real server, with the real agent client
//! core on the other end: files sent through the file input and by paste,
//! an upload that survives going offline and a reload, hostile files, and
//! how files show in the chat.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_client::Update;
use holdfast_protocol::agent::{AttachmentInfo, QueryResult};
use holdfast_server::{admin, store};
use holdfast_tests::attach;
use holdfast_tests::browser::{Browser, ENTER};
use holdfast_tests::core_agent::{self, CoreAgent};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::server::{PASSWORD, TestServer};
use holdfast_tests::visitor::http_exchange;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
/// The widget's shadow root, in page JavaScript.
const ROOT: &str = "document.querySelector('holdfast-widget').shadowRoot";
/// The widget's upload chunk (256 KiB).
const CHUNK: u64 = 262_144;

/// A real server serving the demo site, with an agent "barista" on it.
async fn demo_server() -> TestServer {
    TestServer::start_with(|cfg| {
        cfg.demo = true;
        let conn = store::open_connection(&cfg.data_dir).unwrap();
        admin::ensure_demo(&conn).unwrap();
        admin::add_agent(
            &conn,
            "demo",
            "barista",
            "Bea",
            PASSWORD,
            5,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
    })
    .await
}

/// The agent client core of "barista", live.
async fn barista(srv: &TestServer, dir: &Path) -> CoreAgent {
    let mut bea = CoreAgent::start(core_agent::fast_config(
        &srv.agent_addr().to_string(),
        "barista",
        &dir.join("barista.sqlite3"),
        srv.running().fingerprint,
    ));
    bea.live().await;
    bea
}

fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn wait(b: &Browser, expr: &str) -> Value {
    b.wait(expr, T).await.unwrap_or_else(|e| panic!("{e:#}"))
}

/// The demo page with its widget open and connected.
async fn open_demo(b: &Browser, srv: &TestServer) {
    open_demo_at(b, &srv.http().to_string()).await;
}

/// [`open_demo`] through `host` (the server, or a proxy in front of it).
async fn open_demo_at(b: &Browser, host: &str) {
    b.goto(&format!("http://{host}/demo")).await.unwrap();
    wait(
        b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    if b.js(
        &format!("return {ROOT}.querySelector('.p').hidden"),
        json!([]),
    )
    .await
    .unwrap()
        == json!(true)
    {
        let go = b
            .element(&format!("return {ROOT}.querySelector('.go')"))
            .await
            .unwrap();
        b.click(&go).await.unwrap();
    }
    wait(b, &format!("!{ROOT}.querySelector('.p').hidden")).await;
    wait(b, &format!("{ROOT}.querySelector('.st').hidden")).await;
}

/// Type a message and press Enter.
async fn say(b: &Browser, text: &str) {
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&input, &format!("{text}{ENTER}"))
        .await
        .unwrap();
}

/// Choose `path` in the widget's file input, as the attach button's
/// file dialog would.
async fn attach_file(b: &Browser, path: &Path) {
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-file')"))
        .await
        .unwrap();
    b.type_into(&input, path.to_str().unwrap()).await.unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Wait until the widget has handed the upload of `name` to its outbox.
async fn upload_done(b: &Browser, name: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let u = upload_of(b, name).await;
        if u["state"] == "done" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload of {name} did not finish: {u}\n{}",
            b.console().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `Holdfast.uploads()`: this tab's uploads, as the widget sees them.
async fn uploads(b: &Browser) -> Vec<Value> {
    let v = b
        .js("return window.Holdfast.uploads();", json!([]))
        .await
        .unwrap();
    v.as_array().unwrap().clone()
}

/// The one upload of `name` the widget knows about.
async fn upload_of(b: &Browser, name: &str) -> Value {
    let all = uploads(b).await;
    let mine: Vec<&Value> = all.iter().filter(|u| u["name"] == name).collect();
    assert_eq!(mine.len(), 1, "{all:?}");
    mine[0].clone()
}

async fn token(b: &Browser) -> String {
    wait(b, "localStorage.getItem('holdfast:demo:token')")
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// The server's stored offset of upload `id` (`HEAD`, as the visitor).
async fn stored_offset(srv: &TestServer, token: &str, id: &str) -> u64 {
    let h = attach::head(srv.http(), token, id).await;
    assert_eq!(h.status, 200, "{h:?}");
    attach::offset(&h)
}

/// Wait until the server has stored more than `min` bytes of upload `id`.
async fn stored_beyond(srv: &TestServer, token: &str, id: &str, min: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let k = stored_offset(srv, token, id).await;
        if k > min {
            return k;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload never got past {min} bytes (at {k})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Limit the browser's upload speed (bytes per second), so that "the
/// middle of an upload" is a state the test can wait for.
async fn throttle(b: &Browser, offline: bool, upload: i64) {
    b.cdp("Network.enable", json!({})).await.unwrap();
    b.cdp(
        "Network.emulateNetworkConditions",
        json!({
            "offline": offline,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": upload,
        }),
    )
    .await
    .unwrap();
}

/// The next visitor message the agent gets that carries a file.
async fn file_message(bea: &mut CoreAgent) -> (u64, AttachmentInfo, String) {
    loop {
        let m = bea.visitor_message().await;
        if let Some(a) = m.attachment {
            return (m.conversation, a, m.body);
        }
    }
}

/// The file's bytes as the agent downloads them: a link asked on the agent
/// channel (`Query::AttachmentLink`), then a plain GET.
async fn agent_download(bea: &mut CoreAgent, srv: &TestServer, id: &str) -> Vec<u8> {
    let request = bea.handle.link(id).unwrap();
    let url = bea
        .until("the attachment link", |u| match u {
            Update::History {
                request: r,
                result: QueryResult::AttachmentLink { url, .. },
            } if *r == request => Some(url.clone()),
            _ => None,
        })
        .await;
    let got = http_exchange(None, srv.http(), "GET", &url, &[], None)
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{got:?}");
    got.body
}

/// Files the agent's store holds for conversation `conv`, by id.
fn agent_files(bea: &CoreAgent, conv: u64) -> Vec<String> {
    bea.messages(conv)
        .into_iter()
        .filter_map(|m| m.attachment.map(|a| a.id))
        .collect()
}

/// Nothing left to send in the widget's outbox.
async fn outbox_empty(b: &Browser) {
    wait(b, "localStorage.getItem('holdfast:demo:outbox') === null").await;
}

/// JavaScript: the thumbnail of `name` in a confirmed message has loaded.
fn thumb_loaded(name: &str) -> String {
    format!(
        "Array.prototype.some.call({ROOT}.querySelectorAll('.m:not(.wait) a.th img'), \
           function (i) {{ return i.alt === {} && i.complete && i.naturalWidth > 0; }})",
        lit(name)
    )
}

/// JavaScript: the error shown next to the upload of `name`, if any.
fn upload_error(name: &str) -> String {
    format!(
        "(function () {{ var r = null; Array.prototype.forEach.call({ROOT}.querySelectorAll('.uj.err'), \
           function (n) {{ if (n.querySelector('.un').textContent.indexOf({}) === 0) r = n.querySelector('.um').textContent; }}); \
           return r; }})()",
        lit(name)
    )
}

/// 1. An image and a PDF chosen with the attach button's file input reach
///    the agent once each, byte for byte; the image shows as a thumbnail
///    that opens its full-size view in a new tab, the PDF as a card; both show
///    again after a reload, with fresh links that were never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_and_a_pdf_go_through_the_file_input_and_show() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    // The attach button is a real, labelled button.
    assert_eq!(
        wait(
            &b,
            &format!("{ROOT}.querySelector('button.ab').getAttribute('aria-label')")
        )
        .await,
        json!("Attach a file")
    );
    say(&b, "Hello, my parcel arrived broken").await;
    let first = bea.visitor_message().await;
    let conv = first.conversation;

    let png = attach::png(640, 480);
    let pdf = attach::pdf(300_000, 7); // two chunks
    let png_path = write(dir.path(), "broken parcel.png", &png);
    let pdf_path = write(dir.path(), "receipt.pdf", &pdf);

    attach_file(&b, &png_path).await;
    let (c, a, body) = file_message(&mut bea).await;
    assert_eq!(c, conv);
    assert_eq!(
        (
            a.name.as_str(),
            a.mime.as_str(),
            a.size,
            a.image,
            body.as_str()
        ),
        ("broken parcel.png", "image/png", png.len() as u64, true, "")
    );
    assert_eq!(agent_download(&mut bea, &srv, &a.id).await, png);
    let png_id = a.id;

    // Text typed before attaching goes with the file.
    let input = b
        .element(&format!("return {ROOT}.querySelector('#hf-in')"))
        .await
        .unwrap();
    b.type_into(&input, "and the receipt").await.unwrap();
    attach_file(&b, &pdf_path).await;
    let (_, a, body) = file_message(&mut bea).await;
    assert_eq!(
        (
            a.name.as_str(),
            a.mime.as_str(),
            a.size,
            a.image,
            body.as_str()
        ),
        (
            "receipt.pdf",
            "application/pdf",
            pdf.len() as u64,
            false,
            "and the receipt"
        )
    );
    assert_eq!(agent_download(&mut bea, &srv, &a.id).await, pdf);
    let pdf_id = a.id;
    assert_eq!(
        upload_of(&b, "receipt.pdf").await["sent"],
        json!([0, CHUNK]),
        "the PDF goes up in two sequential chunks"
    );

    outbox_empty(&b).await;
    wait(&b, &thumb_loaded("broken parcel.png")).await;
    let card = wait(
        &b,
        &format!(
            "(function () {{ var c = {ROOT}.querySelector('.m:not(.wait) a.fc'); \
               return c && c.getAttribute('href') && [c.querySelector('.fn').textContent, \
               c.querySelector('.fm').textContent, c.getAttribute('target'), c.getAttribute('rel')]; }})()"
        ),
    )
    .await;
    assert_eq!(
        card,
        json!([
            "receipt.pdf",
            "293 KB · application/pdf",
            "_blank",
            "noopener noreferrer"
        ])
    );
    let th = wait(
        &b,
        &format!(
            "(function () {{ var a = {ROOT}.querySelector('.m:not(.wait) a.th'); \
               return [a.href, a.getAttribute('target'), a.getAttribute('rel'), a.querySelector('img').src]; }})()"
        ),
    )
    .await;
    // The thumbnail opens the server's full-size view, never the original.
    let origin = format!("http://{}/v1/files/{png_id}/view?", srv.http());
    assert!(th[0].as_str().unwrap().starts_with(&origin), "{th}");
    assert_eq!(th[1], "_blank");
    assert_eq!(th[2], "noopener noreferrer");
    assert!(
        th[3]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{}/v1/files/{png_id}/thumb?", srv.http())),
        "{th}"
    );

    // Exactly one message per file, and the text one before them.
    assert_eq!(agent_files(&bea, conv), vec![png_id.clone(), pdf_id]);

    if std::env::var("HOLDFAST_WRITE_SCREENSHOTS").as_deref() == Ok("1") {
        b.js(
            "document.activeElement && document.activeElement.blur();",
            json!([]),
        )
        .await
        .unwrap();
        let shot = b.screenshot().await.unwrap();
        assert_eq!(&shot[..8], b"\x89PNG\r\n\x1a\n");
        let out = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../assets/screenshots/widget-attachment.png");
        std::fs::write(&out, &shot).unwrap();
    }

    // A reload shows both again from the widget's own history, with links
    // fetched afresh: none is ever written to localStorage.
    b.refresh().await.unwrap();
    wait(
        &b,
        &format!("!!(document.querySelector('holdfast-widget') && {ROOT}.querySelector('.go'))"),
    )
    .await;
    open_demo(&b, &srv).await;
    wait(&b, &thumb_loaded("broken parcel.png")).await;
    wait(
        &b,
        &format!("{ROOT}.querySelector('.m:not(.wait) a.fc .fn').textContent === 'receipt.pdf'"),
    )
    .await;
    let stored = b
        .js(
            "var s = ''; for (var i = 0; i < localStorage.length; i++) s += localStorage.getItem(localStorage.key(i)); return s;",
            json!([]),
        )
        .await
        .unwrap();
    let stored = stored.as_str().unwrap();
    assert!(
        stored.contains("broken parcel.png"),
        "the history keeps the file's description"
    );
    assert!(
        !stored.contains("/v1/files/"),
        "a link was stored: {stored}"
    );

    // A browser with no history of its own (the log gone) gets it replayed.
    b.js("localStorage.removeItem('holdfast:demo:log');", json!([]))
        .await
        .unwrap();
    b.refresh().await.unwrap();
    open_demo(&b, &srv).await;
    wait(&b, &thumb_loaded("broken parcel.png")).await;
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 2. Offline in the middle of a large upload (slowed by CDP so that "the
///    middle" is a state, not a moment): the server keeps what it got, and
///    back online the same upload continues from the server's offset, not
///    from zero; the agent gets the file once, intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn going_offline_mid_upload_resumes_from_the_stored_offset() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    say(&b, "Here is the full manual").await;
    let conv = bea.visitor_message().await.conversation;
    let tok = token(&b).await;

    let big = attach::pdf(8 << 20, 3);
    let path = write(dir.path(), "manual.pdf", &big);
    throttle(&b, false, 1_000_000).await;
    attach_file(&b, &path).await;
    let id = wait(
        &b,
        "(function () { var u = window.Holdfast.uploads()[0]; return u && u.id; })()",
    )
    .await
    .as_str()
    .unwrap()
    .to_string();
    stored_beyond(&srv, &tok, &id, 1 << 20).await;

    throttle(&b, true, 1_000_000).await;
    wait(
        &b,
        "(function () { var u = window.Holdfast.uploads()[0]; return u.state === 'offline'; })()",
    )
    .await;
    let before = upload_of(&b, "manual.pdf").await["sent"]
        .as_array()
        .unwrap()
        .len();
    let k = stored_offset(&srv, &tok, &id).await;
    assert!(k > 0 && k < big.len() as u64, "stored offset {k}");
    assert!(
        wait(
            &b,
            &format!(
                "{ROOT}.querySelector('.uj[data-state=offline] .um').textContent === 'Waiting for the network…'"
            )
        )
        .await
            == json!(true)
    );

    b.set_offline(false).await.unwrap();
    upload_done(&b, "manual.pdf").await;
    let (c, a, _) = file_message(&mut bea).await;
    assert_eq!(c, conv);
    assert_eq!(a.id, id, "the same upload completed, not a new one");
    assert_eq!(a.size, big.len() as u64);
    assert_eq!(agent_download(&mut bea, &srv, &a.id).await, big);

    let u = upload_of(&b, "manual.pdf").await;
    assert_eq!(u["state"], "done");
    let sent: Vec<u64> = u["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // A chunk that failed may be sent again at the same offset (a request
    // the offline browser refused before it left); never an earlier one.
    assert_eq!(sent[0], 0);
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "the upload went back: {sent:?}"
    );
    let resumed = sent[before];
    assert!(
        resumed >= k,
        "after going offline at {k} the upload went on from {resumed}: {sent:?}"
    );
    outbox_empty(&b).await;
    assert_eq!(agent_files(&bea, conv), vec![id]);
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 3. A pasted image (a real `paste` event whose DataTransfer holds a PNG
///    file: headless Chromium has no clipboard) is sent and shown; with no
///    chat open yet, a line naming the file starts it first. Then a file
///    dropped onto the panel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_image_starts_the_chat_and_a_dropped_file_follows() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    let size = b
        .js(
            &format!(
                "var input = {ROOT}.querySelector('#hf-in');
                 return new Promise(function (done) {{
                   var c = document.createElement('canvas');
                   c.width = 300; c.height = 200;
                   var g = c.getContext('2d');
                   g.fillStyle = '#c0392b'; g.fillRect(0, 0, 300, 200);
                   g.fillStyle = '#f1c40f'; g.fillRect(40, 40, 120, 80);
                   c.toBlob(function (blob) {{
                     var f = new File([blob], 'screenshot.png', {{ type: 'image/png' }});
                     var dt = new DataTransfer();
                     dt.items.add(f);
                     input.dispatchEvent(new ClipboardEvent('paste', {{ clipboardData: dt, bubbles: true, cancelable: true }}));
                     done(f.size);
                   }}, 'image/png');
                 }});"
            ),
            json!([]),
        )
        .await
        .unwrap()
        .as_u64()
        .unwrap();
    let opener = bea.visitor_message().await;
    assert_eq!(opener.body, "Sending a file: screenshot.png");
    assert!(opener.attachment.is_none());
    let (c, a, _) = file_message(&mut bea).await;
    assert_eq!(c, opener.conversation);
    assert_eq!(
        (a.name.as_str(), a.mime.as_str(), a.size, a.image),
        ("screenshot.png", "image/png", size, true)
    );
    wait(&b, &thumb_loaded("screenshot.png")).await;
    // The composer did not get the file's bytes as text.
    assert_eq!(
        b.js(
            &format!("return {ROOT}.querySelector('#hf-in').value"),
            json!([])
        )
        .await
        .unwrap(),
        json!("")
    );

    // A file dragged onto the panel: a drop hint while it is over it, and
    // the drop sends it.
    let hint = b
        .js(
            &format!(
                "var log = {ROOT}.querySelector('.lg');
                 var bytes = new TextEncoder().encode('%PDF-1.4\\n' + 'x'.repeat(5000));
                 window.dt = new DataTransfer();
                 window.dt.items.add(new File([bytes], 'dropped.pdf', {{ type: 'application/pdf' }}));
                 log.dispatchEvent(new DragEvent('dragenter', {{ dataTransfer: window.dt, bubbles: true, cancelable: true }}));
                 log.dispatchEvent(new DragEvent('dragover', {{ dataTransfer: window.dt, bubbles: true, cancelable: true }}));
                 var dz = {ROOT}.querySelector('.dz');
                 return [dz.hidden, dz.textContent];"
            ),
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(hint, json!([false, "Drop a file here to send it"]));
    b.js(
        &format!(
            "{ROOT}.querySelector('.lg').dispatchEvent(new DragEvent('drop', {{ dataTransfer: window.dt, bubbles: true, cancelable: true }}));"
        ),
        json!([]),
    )
    .await
    .unwrap();
    wait(&b, &format!("{ROOT}.querySelector('.dz').hidden")).await;
    let (_, d, _) = file_message(&mut bea).await;
    assert_eq!(
        (d.name.as_str(), d.mime.as_str(), d.size, d.image),
        ("dropped.pdf", "application/pdf", 5009, false)
    );
    outbox_empty(&b).await;
    assert_eq!(agent_files(&bea, opener.conversation), vec![a.id, d.id]);
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 4. Hostile files: an SVG with script is refused in the page (its type is
///    not one the site takes) and an HTML polyglot named `.png` by the
///    server (415), each with its message shown next to the file and
///    nothing sent; a file over the limit is refused before a
///    byte goes up; and a real PNG carrying `<script>` after its image data
///    is served so that opening it runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_are_refused_or_served_inert() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    say(&b, "I have some files").await;
    let conv = bea.visitor_message().await.conversation;
    let refused = "the content is not an allowed type (png, jpeg, gif, webp, pdf, zip)";

    let svg = write(
        dir.path(),
        "logo.svg",
        br#"<svg xmlns="http://www.w3.org/2000/svg" onload="window.pwned=1"><script>window.pwned=1</script></svg>"#,
    );
    attach_file(&b, &svg).await;
    // The welcome lists the site's types: the browser's own type for an
    // SVG is not among them, so the page refuses it before a byte goes up.
    assert_eq!(
        wait(&b, &upload_error("logo.svg")).await,
        json!("This type of file cannot be sent")
    );
    let poly = write(
        dir.path(),
        "cute cat.png",
        b"<!DOCTYPE html><html><script>window.pwned=1;document.title='pwned'</script></html>",
    );
    attach_file(&b, &poly).await;
    assert_eq!(
        wait(&b, &upload_error("cute cat.png")).await,
        json!(refused)
    );
    // Refusals are announced to screen readers.
    assert_eq!(
        wait(
            &b,
            &format!("{ROOT}.querySelectorAll('.uj.err .um[role=alert]').length")
        )
        .await,
        json!(2)
    );

    // 1 byte over the 20 MB default: refused in the page, before any request.
    let over = dir.path().join("huge.pdf");
    std::fs::File::create(&over)
        .unwrap()
        .set_len(20 * 1024 * 1024 + 1)
        .unwrap();
    attach_file(&b, &over).await;
    assert_eq!(
        wait(&b, &upload_error("huge.pdf")).await,
        json!("This file is too large (20 MB); the limit is 20 MB")
    );
    let u = upload_of(&b, "huge.pdf").await;
    assert_eq!(
        (u["id"].clone(), u["sent"].clone()),
        (Value::Null, json!([]))
    );

    // Dismissing a refusal removes it.
    let dismiss = b
        .element(&format!(
            "return {ROOT}.querySelector('.uj.err button[aria-label=\"Dismiss the note about huge.pdf\"]')"
        ))
        .await
        .unwrap();
    b.click(&dismiss).await.unwrap();
    wait(
        &b,
        &format!("{ROOT}.querySelectorAll('.uj.err').length === 2"),
    )
    .await;

    // A real PNG with a script after its image data is accepted (it is a
    // PNG), and served inert.
    let mut sneaky = attach::png(64, 64);
    sneaky.extend_from_slice(b"<script>window.pwned=1;document.title='pwned'</script>");
    let sneaky_path = write(dir.path(), "sneaky.png", &sneaky);
    attach_file(&b, &sneaky_path).await;
    let (_, a, _) = file_message(&mut bea).await;
    assert_eq!(a.name, "sneaky.png");
    wait(&b, &thumb_loaded("sneaky.png")).await;
    let tok = token(&b).await;
    let link = attach::link(srv.http(), &tok, &a.id).await;
    let url = link["url"].as_str().unwrap();
    let got = attach::get(srv.http(), url, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, sneaky);
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(
        got.header("content-security-policy")
            .is_some_and(|c| c.contains("sandbox")),
        "{got:?}"
    );
    assert!(
        got.header("content-disposition")
            .is_some_and(|c| c.starts_with("attachment")),
        "{got:?}"
    );
    // Opened in the browser, as the widget's link would: nothing runs.
    let title = b.js("return document.title;", json!([])).await.unwrap();
    let _download = b.goto(&format!("http://{}{url}", srv.http())).await;
    let after = b
        .js("return [typeof window.pwned, document.title];", json!([]))
        .await
        .unwrap();
    assert_eq!(after[0], "undefined");
    assert_ne!(after[1], "pwned");
    assert_eq!(after[1], title, "the page changed: {after}");

    assert_eq!(agent_files(&bea, conv), vec![a.id]);
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 5. A reload in the middle of an upload: the page says the upload was
///    interrupted, and the same file attached again continues from the
///    server's offset instead of from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_mid_upload_says_so_and_the_same_file_resumes() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    say(&b, "Sending the warranty").await;
    let conv = bea.visitor_message().await.conversation;
    let tok = token(&b).await;

    let doc = attach::pdf(3 << 20, 11);
    let path = write(dir.path(), "warranty.pdf", &doc);
    throttle(&b, false, 1_000_000).await;
    attach_file(&b, &path).await;
    let id = wait(
        &b,
        "(function () { var u = window.Holdfast.uploads()[0]; return u && u.id; })()",
    )
    .await
    .as_str()
    .unwrap()
    .to_string();
    stored_beyond(&srv, &tok, &id, 512 * 1024).await;

    b.refresh().await.unwrap();
    open_demo(&b, &srv).await;
    let note = "The upload of warranty.pdf was interrupted by reloading the page. Attach it again to send it.";
    assert_eq!(
        wait(&b, &format!("{ROOT}.querySelector('.uj.int .um') && {ROOT}.querySelector('.uj.int .um').textContent")).await,
        json!(note)
    );
    let k = stored_offset(&srv, &tok, &id).await;
    assert!(k > 0 && k < doc.len() as u64, "stored offset {k}");
    b.set_offline(false).await.unwrap(); // full speed from here

    attach_file(&b, &path).await;
    let (c, a, _) = file_message(&mut bea).await;
    assert_eq!(c, conv);
    assert_eq!(a.id, id, "the interrupted upload completed, not a new one");
    assert_eq!(agent_download(&mut bea, &srv, &a.id).await, doc);
    let u = upload_of(&b, "warranty.pdf").await;
    let resumed = u["resumed"].as_u64().unwrap();
    assert!(resumed >= k, "resumed from {resumed}, the server had {k}");
    assert_eq!(u["sent"][0].as_u64(), Some(resumed), "{u}");
    // The note went away once the file was attached again.
    wait(&b, &format!("!{ROOT}.querySelector('.uj.int')")).await;
    outbox_empty(&b).await;
    assert_eq!(agent_files(&bea, conv), vec![id]);

    // A note is dismissed for good.
    throttle(&b, false, 1_000_000).await;
    let other = attach::pdf(2 << 20, 12);
    let other_path = write(dir.path(), "other.pdf", &other);
    attach_file(&b, &other_path).await;
    let oid = wait(
        &b,
        "(function () { var u = window.Holdfast.uploads().filter(function (u) { return u.name === 'other.pdf'; })[0]; return u && u.id; })()",
    )
    .await
    .as_str()
    .unwrap()
    .to_string();
    stored_beyond(&srv, &tok, &oid, 0).await;
    b.refresh().await.unwrap();
    open_demo(&b, &srv).await;
    let dismiss = b
        .element(&format!("return {ROOT}.querySelector('.uj.int button')"))
        .await
        .unwrap();
    b.click(&dismiss).await.unwrap();
    wait(&b, &format!("!{ROOT}.querySelector('.uj.int')")).await;
    b.refresh().await.unwrap();
    open_demo(&b, &srv).await;
    assert_eq!(
        b.js(
            &format!("return !!{ROOT}.querySelector('.uj.int')"),
            json!([])
        )
        .await
        .unwrap(),
        json!(false)
    );
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 6. A connection cut in the middle of a chunk, with no `offline` event
///    (a proxy in the way closes it): the same upload continues from the
///    server's offset, which is inside the cut chunk, not from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_chunk_resumes_the_same_upload() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let proxy = Proxy::start(srv.http()).await;
    let b = Browser::start().await.unwrap();
    open_demo_at(&b, &proxy.addr.to_string()).await;
    say(&b, "One more file").await;
    let conv = bea.visitor_message().await.conversation;
    let tok = token(&b).await;

    let big = attach::pdf(6 << 20, 5);
    let path = write(dir.path(), "catalogue.pdf", &big);
    // 10 ms per 16 KiB read: about 1.6 MB/s, so the upload takes a while.
    proxy.latency(Duration::from_millis(10), Duration::ZERO);
    attach_file(&b, &path).await;
    let id = wait(
        &b,
        "(function () { var u = window.Holdfast.uploads()[0]; return u && u.id; })()",
    )
    .await
    .as_str()
    .unwrap()
    .to_string();
    stored_beyond(&srv, &tok, &id, 1 << 20).await;
    // The upload is nearly all the traffic: the connection that crosses
    // the next 100 000 bytes, cut there, is one carrying a chunk.
    proxy.cut_after(100_000);
    // The server keeps what arrived of the cut chunk, so the upload goes on
    // from an offset that is not a chunk boundary. (Chromium may resend
    // the cut PATCH by itself on a new connection; the server's 409 then
    // tells the widget where it stands.)
    let k = wait(
        &b,
        &format!(
            "window.Holdfast.uploads()[0].sent.filter(function (o) {{ return o % {CHUNK} !== 0; }})[0]"
        ),
    )
    .await
    .as_u64()
    .unwrap();
    assert!(k > 1 << 20 && k < big.len() as u64, "resumed at {k}");
    proxy.heal();

    upload_done(&b, "catalogue.pdf").await;
    let (c, a, _) = file_message(&mut bea).await;
    assert_eq!(c, conv);
    assert_eq!(a.id, id, "the same upload completed, not a new one");
    assert_eq!(agent_download(&mut bea, &srv, &a.id).await, big);
    let u = upload_of(&b, "catalogue.pdf").await;
    let sent: Vec<u64> = u["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "the upload went back: {sent:?}"
    );
    assert!(sent.contains(&k), "no PATCH continued from {k}: {sent:?}");
    outbox_empty(&b).await;
    assert_eq!(agent_files(&bea, conv), vec![id]);
    b.quit().await;
    proxy.stop();
    bea.shutdown().await;
    srv.stop().await;
}

/// 7. Cancel during an upload: the request is aborted, nothing is sent,
///    nothing is left to resume, and the chat goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_an_upload_and_sends_nothing() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    say(&b, "Wait, wrong file").await;
    bea.visitor_message().await;
    let tok = token(&b).await;

    let doc = attach::pdf(3 << 20, 21);
    let path = write(dir.path(), "wrong.pdf", &doc);
    throttle(&b, false, 500_000).await;
    attach_file(&b, &path).await;
    let id = wait(
        &b,
        "(function () { var u = window.Holdfast.uploads()[0]; return u && u.id; })()",
    )
    .await
    .as_str()
    .unwrap()
    .to_string();
    stored_beyond(&srv, &tok, &id, 0).await;
    // The progress shows while it goes up.
    wait(
        &b,
        &format!("{ROOT}.querySelector('.uj progress').value > 0 && /^[0-9]+%$/.test({ROOT}.querySelector('.uj .upc').textContent)"),
    )
    .await;
    let cancel = b
        .element(&format!(
            "return {ROOT}.querySelector('.uj button[aria-label=\"Cancel the upload of wrong.pdf\"]')"
        ))
        .await
        .unwrap();
    b.click(&cancel).await.unwrap();
    wait(
        &b,
        &format!("!{ROOT}.querySelector('.uj') && {ROOT}.querySelector('.tr').hidden"),
    )
    .await;
    assert_eq!(upload_of(&b, "wrong.pdf").await["state"], "cancelled");
    assert_eq!(
        b.js(
            "return [localStorage.getItem('holdfast:demo:uploads'), localStorage.getItem('holdfast:demo:outbox')];",
            json!([])
        )
        .await
        .unwrap(),
        json!([null, null])
    );
    b.set_offline(false).await.unwrap();
    // The next thing the agent gets is the next message, not the file.
    say(&b, "Never mind").await;
    let next = bea.visitor_message().await;
    assert_eq!(
        (next.body.as_str(), next.attachment.is_none()),
        ("Never mind", true)
    );
    let k = stored_offset(&srv, &tok, &id).await;
    assert!(k < doc.len() as u64, "the cancelled upload completed");
    assert!(agent_files(&bea, next.conversation).is_empty());
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// The browser's tabs, in WebDriver's order.
async fn tabs(b: &Browser) -> Vec<String> {
    let v = b.cmd("GET", "/window/handles", None).await.unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

async fn switch_to(b: &Browser, tab: &str) {
    b.cmd("POST", "/window", Some(json!({ "handle": tab })))
        .await
        .unwrap();
}

/// 8. A click on a thumbnail opens the image full size in a new tab,
///    inline: the server's re-encoding (larger than the thumbnail, at most
///    2048 pixels, a PNG without the script that rode after the original's
///    image data), in a tab that has no way back to the page (`noopener`)
///    and where nothing of the file runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_thumbnail_shows_the_image_inline_and_runs_nothing() {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    open_demo(&b, &srv).await;
    say(&b, "Look at this").await;
    bea.visitor_message().await;

    // Wider than the view's bound, with a script after the image data that
    // would mark the page's origin if it ever ran there.
    let mut sneaky = attach::png(2400, 600);
    sneaky.extend_from_slice(
        b"<script>localStorage.setItem('pwned','1');document.title='pwned'</script>",
    );
    let path = write(dir.path(), "wide shot.png", &sneaky);
    attach_file(&b, &path).await;
    let (_, a, _) = file_message(&mut bea).await;
    wait(&b, &thumb_loaded("wide shot.png")).await;
    let href = wait(
        &b,
        &format!(
            "(function () {{ var a = {ROOT}.querySelector('.m:not(.wait) a.th'); \
               return a && a.getAttribute('href'); }})()"
        ),
    )
    .await;
    let href = href.as_str().unwrap().to_string();
    assert!(
        href.starts_with(&format!("http://{}/v1/files/{}/view?", srv.http(), a.id)),
        "the thumbnail opens the view, not the original: {href}"
    );

    let home = tabs(&b).await;
    assert_eq!(home.len(), 1);
    let th = b
        .element(&format!(
            "return {ROOT}.querySelector('.m:not(.wait) a.th')"
        ))
        .await
        .unwrap();
    b.click(&th).await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    let opened = loop {
        let now = tabs(&b).await;
        if let Some(t) = now.iter().find(|t| !home.contains(t)) {
            break t.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no tab opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    switch_to(&b, &opened).await;
    // The tab shows the image itself: an image document whose one image
    // decoded, at the view's size.
    let shown = wait(
        &b,
        "document.readyState === 'complete' && document.images.length === 1 && \
         document.images[0].complete && document.images[0].naturalWidth > 0 && \
         [document.contentType, document.images[0].naturalWidth, document.images[0].naturalHeight, \
          document.title, window.opener === null, document.querySelectorAll('script').length]",
    )
    .await;
    assert_eq!(shown[0], "image/png", "{shown}");
    assert_eq!(
        (shown[1].as_u64(), shown[2].as_u64()),
        (Some(2048), Some(512))
    );
    assert!(
        shown[1].as_u64().unwrap() > 320,
        "larger than the thumbnail"
    );
    assert_ne!(shown[3], "pwned");
    assert_eq!(shown[4], true, "the page is reachable from the new tab");
    assert_eq!(shown[5], 0);
    // The view's bytes are the server's encoding: the script is not in them.
    let view = attach::get(
        srv.http(),
        &href[format!("http://{}", srv.http()).len()..],
        None,
    )
    .await;
    assert_eq!(view.status, 200);
    assert_eq!(view.header("content-disposition"), Some("inline"));
    assert!(!view.body.windows(7).any(|w| w == b"<script"));

    switch_to(&b, &home[0]).await;
    let marks = b
        .js(
            "return [localStorage.getItem('pwned'), document.title];",
            json!([]),
        )
        .await
        .unwrap();
    assert_eq!(
        marks[0],
        Value::Null,
        "a script of the file ran on the origin"
    );
    assert_ne!(marks[1], "pwned");
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

/// 9. Files the agent sends from the app (the real client core): the widget
///    shows the PDF as a card and the photo as a thumbnail, and both links
///    give the bytes the agent sent; over WebSocket and over long-poll.
async fn files_from_the_agent_show_in_the_widget(long_poll: bool) {
    let srv = demo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bea = barista(&srv, dir.path()).await;
    let b = Browser::start().await.unwrap();
    if long_poll {
        b.on_new_document(
            "try { delete window.WebSocket; } catch (e) {} window.WebSocket = undefined;",
        )
        .await
        .unwrap();
    }
    open_demo(&b, &srv).await;
    say(&b, "Can you send me the invoice?").await;
    let conv = bea.visitor_message().await.conversation;
    if long_poll {
        assert_eq!(
            b.js("return typeof window.WebSocket;", json!([]))
                .await
                .unwrap(),
            "undefined"
        );
    }

    let doc = attach::pdf(300_000, 31);
    let photo = attach::png(800, 600);
    let pdf_id = bea
        .handle
        .send_file_bytes(
            conv,
            "invoice 42.pdf".into(),
            doc.clone(),
            "Here it is".into(),
        )
        .await
        .unwrap();
    let img_id = bea
        .handle
        .send_file_bytes(conv, "shelf.png".into(), photo.clone(), String::new())
        .await
        .unwrap();
    for id in [pdf_id, img_id] {
        bea.until("the file sent", |u| match u {
            Update::Upload { id: i, state, .. }
                if *i == id && *state == holdfast_client::UploadState::Sent =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    }

    let card = wait(
        &b,
        &format!(
            "(function () {{ var c = {ROOT}.querySelector('.m a.fc'); \
               return c && c.getAttribute('href') && [c.querySelector('.fn').textContent, \
               c.querySelector('.fm').textContent, c.getAttribute('href'), c.getAttribute('rel')]; }})()"
        ),
    )
    .await;
    assert_eq!(card[0], "invoice 42.pdf");
    assert_eq!(card[1], "293 KB · application/pdf");
    assert_eq!(card[3], "noopener noreferrer");
    wait(&b, &thumb_loaded("shelf.png")).await;
    let th = wait(
        &b,
        &format!(
            "(function () {{ var a = {ROOT}.querySelector('.m a.th'); \
               return a && a.getAttribute('href') && [a.getAttribute('href'), a.querySelector('img').naturalWidth]; }})()"
        ),
    )
    .await;
    assert_eq!(th[1], 320, "the thumbnail's width");
    // The agent's text came with the file, once; each file shows once.
    assert_eq!(
        b.js(
            &format!(
                "return [{ROOT}.querySelectorAll('.m a.fc').length, {ROOT}.querySelectorAll('.m a.th').length];"
            ),
            json!([])
        )
        .await
        .unwrap(),
        json!([1, 1])
    );

    // The card's link is the download, byte for byte; the thumbnail's is the
    // view, the same pixels.
    let origin = format!("http://{}", srv.http());
    let path_of = |v: &Value| v.as_str().unwrap()[origin.len()..].to_string();
    let got = attach::get(srv.http(), &path_of(&card[2]), None).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body == doc,
        "the visitor's PDF differs from the agent's"
    );
    assert!(
        got.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment")),
        "{got:?}"
    );
    let view = attach::get(srv.http(), &path_of(&th[0]), None).await;
    assert_eq!(view.status, 200);
    let shown = image::load_from_memory(&view.body).unwrap().to_rgb8();
    let sent = image::load_from_memory(&photo).unwrap().to_rgb8();
    assert!(shown == sent, "the view is not the photo's pixels");
    // And the original photo, as the agent sent it.
    let files = {
        let tok = token(&b).await;
        let aid = agent_files(&bea, conv);
        assert_eq!(aid.len(), 2, "{aid:?}");
        let l = attach::link(srv.http(), &tok, &aid[1]).await;
        attach::get(srv.http(), l["url"].as_str().unwrap(), None).await
    };
    assert!(files.body == photo, "the visitor's photo differs");
    b.quit().await;
    bea.shutdown().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_the_agent_show_in_the_widget_over_websocket() {
    files_from_the_agent_show_in_the_widget(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_the_agent_show_in_the_widget_over_long_poll() {
    files_from_the_agent_show_in_the_widget(true).await;
}
