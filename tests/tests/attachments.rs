//! Attachments through a real server over real HTTP: resumable uploads,
//! sniffing, thumbnails, limits, and safe, scoped download links.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_protocol::agent::{Action, ClientMsg, Outcome, Query, QueryResult, ServerMsg};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::attach::{
    TOKEN, create, get, head, json_of, messages_with, offset, patch, pdf, png,
};
use holdfast_tests::flows::{T, agent, run};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::PASSWORD;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::new_id;
use holdfast_tests::visitor::{HttpAnswer, LpVisitor, WsVisitor, http_exchange};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Where the creation floods come from.
const FLOOD_FROM: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 66));

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A valid small PNG whose header claims `w`x`h` pixels.
fn bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = png(8, 8);
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A visitor over WebSocket with an open chat (its first message).
async fn visitor(srv: &TestServer) -> WsVisitor {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let ack = v.say_acked("here is my file").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
    v
}

/// Create and send `bytes` in `chunk`-sized PATCHes; the last answer.
async fn upload(
    http: SocketAddr,
    token: &str,
    name: &str,
    bytes: &[u8],
    chunk: usize,
) -> (String, HttpAnswer) {
    let c = create(http, token, bytes.len() as u64, name).await;
    assert_eq!(c.status, 201, "{:?}", String::from_utf8_lossy(&c.body));
    let id = json_of(&c)["id"].as_str().unwrap().to_string();
    let mut at = 0;
    let mut last = None;
    for part in bytes.chunks(chunk) {
        let r = patch(http, token, &id, at, part).await;
        at += part.len() as u64;
        last = Some(r);
    }
    (id, last.unwrap())
}

async fn bystander_still_works(v: &mut WsVisitor) {
    let ack = v.say_acked("still there?").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
}

async fn image_and_pdf_are_stored_and_served_safely(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let v = visitor(&srv).await;

    // An image in three chunks: complete on the last, with a thumbnail.
    let img = png(1200, 800);
    let (id, done) = upload(http, &v.token, "screen shot.png", &img, img.len() / 3 + 1).await;
    assert_eq!(
        done.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&done.body)
    );
    let a = json_of(&done);
    assert_eq!(a["attachment"]["mime"], "image/png");
    assert_eq!(a["attachment"]["image"], true);
    assert_eq!(a["attachment"]["size"], img.len());

    let link = get(http, &format!("/v1/attach/{id}/link"), Some(&v.token)).await;
    assert_eq!(link.status, 200);
    let link = json_of(&link);
    let thumb = get(http, link["thumb_url"].as_str().unwrap(), None).await;
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/png"));
    assert_eq!(thumb.header("content-disposition"), Some("inline"));
    assert_eq!(thumb.header("x-content-type-options"), Some("nosniff"));
    assert!(
        thumb
            .header("content-security-policy")
            .unwrap()
            .starts_with("sandbox")
    );
    let t = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((t.width(), t.height()), (320, 213));

    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body, img);
    assert_eq!(
        file.header("content-disposition"),
        Some("attachment; filename=\"screen shot.png\"")
    );

    // A PDF: a download, never inline, no thumbnail.
    let doc = pdf(300_000, 12345);
    let (id, done) = upload(http, &v.token, "invoice.pdf", &doc, 64 * 1024).await;
    assert_eq!(done.status, 200);
    assert_eq!(json_of(&done)["attachment"]["mime"], "application/pdf");
    let link = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(&v.token)).await);
    assert!(link["thumb_url"].is_null());
    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert_eq!(Sha256::digest(&file.body), Sha256::digest(&doc));
    assert_eq!(file.header("content-type"), Some("application/pdf"));
    assert!(
        file.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(file.header("x-content-type-options"), Some("nosniff"));
    assert!(
        file.header("content-security-policy")
            .unwrap()
            .starts_with("sandbox")
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(image_and_pdf_are_stored_and_served_safely);

/// A JPEG of `w` x `h` with an EXIF segment carrying `secret` (a camera's
/// GPS position, say) right after its start, as cameras write it.
fn jpeg_with_exif(w: u32, h: u32, secret: &[u8]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 90])
    });
    let mut jpg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
    let mut out = jpg.into_inner();
    let mut app1 = vec![0xff, 0xe1, 0, 0];
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(secret);
    let len = u16::try_from(app1.len() - 2).unwrap();
    app1[2..4].copy_from_slice(&len.to_be_bytes());
    out.splice(2..2, app1);
    out
}

/// A click on an image opens its view: the server's own re-encoding,
/// inline, at most 2048 pixels a side, with nothing of the file but its
/// pixels (no EXIF, no script riding after the image data), made once
/// and then kept. The original stays a download; a file that is no image
/// has no view; a view's link is signed for the view alone.
async fn an_image_opens_full_size_inline_without_its_metadata(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let link_of = |id: String| {
        let token = v.token.clone();
        async move { json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(&token)).await) }
    };
    let inline_and_inert = |r: &HttpAnswer, mime: &str| {
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("content-type"), Some(mime));
        assert_eq!(r.header("content-disposition"), Some("inline"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            r.header("content-security-policy"),
            Some("sandbox; default-src 'none'")
        );
    };

    // A photo larger than the bound, with its GPS position in EXIF.
    let secret = b"GPS 48.8584N 2.2945E home-address";
    let photo = jpeg_with_exif(2400, 1000, secret);
    let (id, done) = upload(http, &v.token, "parcel.jpg", &photo, 1 << 20).await;
    assert_eq!(
        done.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&done.body)
    );
    let link = link_of(id.clone()).await;
    let view_url = link["view_url"].as_str().unwrap().to_string();
    assert!(
        view_url.starts_with(&format!("/v1/files/{id}/view?")),
        "{link}"
    );
    let view = get(http, &view_url, None).await;
    inline_and_inert(&view, "image/jpeg");
    assert!(!view.body.windows(secret.len()).any(|w| w == secret));
    assert!(!view.body.windows(4).any(|w| w == b"Exif"));
    let img = image::load_from_memory(&view.body).unwrap();
    assert_eq!((img.width(), img.height()), (2048, 853));
    // Kept after the first request: the same bytes again.
    let again = get(http, &view_url, None).await;
    assert_eq!(again.body, view.body);
    // The original is still the untouched download, EXIF and all.
    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.body, photo);
    assert!(
        file.header("content-disposition")
            .unwrap()
            .starts_with("attachment")
    );

    // A PNG with a script after its image data: a view of the same size,
    // as PNG, without the script.
    let mut sneaky = png(300, 200);
    sneaky.extend_from_slice(b"<script>window.pwned=1</script>");
    let (id2, done) = upload(http, &v.token, "sneaky.png", &sneaky, 1 << 20).await;
    assert_eq!(done.status, 200);
    let link2 = link_of(id2.clone()).await;
    let view2 = get(http, link2["view_url"].as_str().unwrap(), None).await;
    inline_and_inert(&view2, "image/png");
    assert!(!view2.body.windows(7).any(|w| w == b"<script"));
    let img = image::load_from_memory(&view2.body).unwrap();
    assert_eq!((img.width(), img.height()), (300, 200));

    // Each kind is signed apart: the file's or the thumbnail's signature
    // does not open the view, nor the view's the file.
    let file_sig = link["url"].as_str().unwrap().replacen('?', "/view?", 1);
    assert_eq!(get(http, &file_sig, None).await.status, 404);
    let thumb_sig = link["thumb_url"]
        .as_str()
        .unwrap()
        .replacen("/thumb?", "/view?", 1);
    assert_eq!(get(http, &thumb_sig, None).await.status, 404);
    assert_eq!(
        get(http, &view_url.replacen("/view?", "?", 1), None)
            .await
            .status,
        404
    );
    // Another image's view signature does not open this one.
    assert_eq!(
        get(http, &view_url.replace(&id, &id2), None).await.status,
        404
    );

    // A PDF has no view, and no signature makes one.
    let (pid, done) = upload(http, &v.token, "a.pdf", &pdf(3000, 7), 3000).await;
    assert_eq!(done.status, 200);
    let plink = link_of(pid.clone()).await;
    assert!(plink["view_url"].is_null(), "{plink}");
    let attach = srv.running().ctx.attach.clone();
    let meta = attach.meta(&pid).await.unwrap().unwrap();
    let exp = holdfast_server::store::now_ms() + 60_000;
    let forged = format!(
        "/v1/files/{pid}/view?e={exp}&s={}",
        attach.sign(&pid, holdfast_server::attach::LinkKind::View, exp)
    );
    assert_eq!(meta.thumb, None);
    assert_eq!(get(http, &forged, None).await.status, 404);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(an_image_opens_full_size_inline_without_its_metadata);

/// Writes a PATCH head announcing `announced` bytes, sends `sent` of them,
/// and drops the connection: a pulled cable mid-chunk.
async fn cut_patch(
    http: SocketAddr,
    token: &str,
    id: &str,
    offset: u64,
    bytes: &[u8],
    sent: usize,
) {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "PATCH /v1/attach/{id} HTTP/1.1\r\nHost: x\r\n{TOKEN}: {token}\r\nUpload-Offset: {offset}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&bytes[..sent]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
}

/// A pulled cable mid-chunk that the server cannot see (the connection
/// stays open, silent): once the body deadline passes, what arrived is
/// kept and the upload is free again, so the client resumes from there.
async fn a_stalled_chunk_keeps_what_arrived_and_frees_its_upload(backend: Backend) {
    let srv = TestServer::start_with_on(backend, |c| {
        c.http_limits.body_timeout = Duration::from_secs(1);
    })
    .await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let doc = pdf(300_000, 12345);
    let c = create(http, &v.token, doc.len() as u64, "stalled.pdf").await;
    let id = json_of(&c)["id"].as_str().unwrap().to_string();
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head_lines = format!(
        "PATCH /v1/attach/{id} HTTP/1.1\r\nHost: x\r\n{TOKEN}: {}\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        v.token,
        doc.len()
    );
    s.write_all(head_lines.as_bytes()).await.unwrap();
    s.write_all(&doc[..50_000]).await.unwrap();
    s.flush().await.unwrap();
    // The stalled chunk keeps its connection open from here on. Once its
    // deadline (1 s) passes, what arrived is stored.
    let started = std::time::Instant::now();
    let mut at = 0;
    while at < 50_000 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        at = offset(&head(http, &v.token, &id).await);
    }
    assert_eq!(at, 50_000, "what arrived before the stall is kept");
    let r = patch(http, &v.token, &id, at, &doc[50_000..]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let link = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(&v.token)).await);
    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert!(file.body == doc, "the file is whole");
    drop(s);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_stalled_chunk_keeps_what_arrived_and_frees_its_upload);

async fn upload_resumes_after_a_cut_and_a_restart(backend: Backend) {
    let mut srv = TestServer::start_on(backend).await;
    let v = visitor(&srv).await;
    let doc = pdf(1_000_000, 12345);
    let c = create(srv.http(), &v.token, doc.len() as u64, "manual.pdf").await;
    let id = json_of(&c)["id"].as_str().unwrap().to_string();

    let r = patch(srv.http(), &v.token, &id, 0, &doc[..250_000]).await;
    assert_eq!(r.status, 204);
    assert_eq!(offset(&r), 250_000);

    // The cable is pulled 100 000 bytes into a 250 000 byte chunk: what
    // arrived is kept, so the client resumes from there, not from zero.
    cut_patch(
        srv.http(),
        &v.token,
        &id,
        250_000,
        &doc[250_000..500_000],
        100_000,
    )
    .await;
    let mut at = 0;
    for _ in 0..50 {
        at = offset(&head(srv.http(), &v.token, &id).await);
        if at > 250_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(at > 250_000 && at <= 350_000, "offset after the cut: {at}");

    // The server restarts: the upload and its offset are still there.
    srv.restart().await;
    let h = head(srv.http(), &v.token, &id).await;
    assert_eq!(h.status, 200);
    assert_eq!(offset(&h), at);
    assert_eq!(h.header("upload-length"), Some("1000000"));

    let at_usize = usize::try_from(at).unwrap();
    let r = patch(srv.http(), &v.token, &id, at, &doc[at_usize..]).await;
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    let link = json_of(&get(srv.http(), &format!("/v1/attach/{id}/link"), Some(&v.token)).await);
    let file = get(srv.http(), link["url"].as_str().unwrap(), None).await;
    assert_eq!(
        Sha256::digest(&file.body),
        Sha256::digest(&doc),
        "the file is whole"
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(upload_resumes_after_a_cut_and_a_restart);

async fn hostile_uploads_get_clear_errors(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let mut bystander = visitor(&srv).await;
    let v = visitor(&srv).await;
    let t = v.token.as_str();

    // 0 bytes, and 1 byte over the limit: refused at create, before any byte.
    let r = create(http, t, 0, "empty.png").await;
    assert_eq!(r.status, 400);
    assert_eq!(json_of(&r)["error"], "bad_request");
    let r = create(http, t, 20 * 1024 * 1024 + 1, "big.pdf").await;
    assert_eq!(r.status, 413);
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .contains("20971520")
    );

    // Offsets that skip ahead or overlap: 409 with the stored offset.
    let c = create(http, t, 10, "x.pdf").await;
    let id = json_of(&c)["id"].as_str().unwrap().to_string();
    let r = patch(http, t, &id, 5, b"%PDF-").await;
    assert_eq!(r.status, 409);
    assert_eq!(offset(&r), 0);
    assert_eq!(patch(http, t, &id, 0, b"%PDF-").await.status, 204);
    let r = patch(http, t, &id, 0, b"%PDF-").await;
    assert_eq!(r.status, 409);
    assert_eq!(offset(&r), 5);
    // More bytes than declared: refused, and nothing of that chunk is kept.
    let r = patch(http, t, &id, 5, b"123456").await;
    assert_eq!(r.status, 400);
    assert_eq!(offset(&r), 5);
    assert_eq!(offset(&head(http, t, &id).await), 5);
    assert_eq!(patch(http, t, &id, 5, b"12345").await.status, 200);
    // The last PATCH retried (its answer was lost): the upload is
    // complete, and the client is told so with its final offset.
    let r = patch(http, t, &id, 5, b"12345").await;
    assert_eq!(r.status, 409, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(offset(&r), 10);

    // A decompression bomb: 8x8 pixels of data claiming 100000x100000.
    let (_, r) = upload(http, t, "bomb.png", &bomb(100_000, 100_000), 1 << 20).await;
    assert_eq!(r.status, 422, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(json_of(&r)["error"], "bad_image");

    // Script carriers named as images: refused by their content.
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    let (_, r) = upload(http, t, "cat.png", svg, 1 << 20).await;
    assert_eq!(r.status, 415);
    let html = b"<!DOCTYPE html><html><script>alert(document.domain)</script></html>";
    let (_, r) = upload(http, t, "cat.png", html, 1 << 20).await;
    assert_eq!(r.status, 415);
    // A GIF header in front of HTML passes the sniff but not the decoder.
    let mut poly = b"GIF89a\x01\x00\x01\x00".to_vec();
    poly.extend_from_slice(b"<html><script>alert(1)</script></html>");
    let (_, r) = upload(http, t, "cat.png", &poly, 1 << 20).await;
    assert_eq!(r.status, 422);

    // Another visitor's token: every view of the upload is 404.
    let other = visitor(&srv).await;
    let (id, r) = upload(http, t, "mine.pdf", &pdf(1000, 12345), 1000).await;
    assert_eq!(r.status, 200);
    assert_eq!(head(http, &other.token, &id).await.status, 404);
    assert_eq!(
        get(http, &format!("/v1/attach/{id}/link"), Some(&other.token))
            .await
            .status,
        404
    );
    let link = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(t)).await);
    let url = link["url"].as_str().unwrap();
    // A forged or re-targeted signature, and a wrong kind, are 404 too.
    // (Its last character changed, whatever it was: a link that already
    // ended in "0" would otherwise be "forged" into itself, 1 time in 16.)
    let flip = if url.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{flip}", &url[..url.len() - 1]);
    assert_eq!(get(http, &forged, None).await.status, 404);
    assert_eq!(
        get(http, &url.replacen("?", "/thumb?", 1), None)
            .await
            .status,
        404
    );
    let (other_id, _) = upload(http, &other.token, "theirs.pdf", &pdf(1000, 12345), 1000).await;
    assert_eq!(
        get(http, &url.replace(&id, &other_id), None).await.status,
        404
    );
    // No token at all.
    assert_eq!(create(http, "nonsense", 10, "a").await.status, 401);

    bystander_still_works(&mut bystander).await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(hostile_uploads_get_clear_errors);

#[tokio::test]
async fn a_thousand_parallel_creations_are_capped() {
    let srv = TestServer::start().await;
    let http = srv.http();
    let mut bystander = visitor(&srv).await;
    let v = visitor(&srv).await;
    let http_metrics = || &srv.running().ctx.metrics.http;
    let cuts_before = http_metrics().per_ip_cuts.get() + http_metrics().capacity_cuts.get();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let t = v.token.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"length": 1000, "name": "f.pdf"}).to_string();
            http_exchange(
                // Another address than the bystander's: a flood from one
                // address may use up that address's request rate, which
                // is the point; the bystander is someone else.
                Some(FLOOD_FROM),
                http,
                "POST",
                "/v1/attach",
                &[(TOKEN, &t)],
                Some(body.as_bytes()),
            )
            .await
            .map(|a| a.status)
        }));
    }
    let mut created = 0;
    let mut limited = 0;
    let mut cut = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(201) => created += 1,
            Ok(429) => limited += 1,
            Ok(s) => panic!("unexpected status {s}"),
            // The HTTP port's connection caps close the oldest unanswered
            // connections of an address holding too many, by design and
            // before any request is read (hostile_http). That is the only
            // way a creation may go unanswered: each is counted below.
            Err(_) => cut += 1,
        }
    }
    assert_eq!(created, 4, "the per-visitor cap of pending uploads");
    assert_eq!(limited + cut, 996);
    let cuts = http_metrics().per_ip_cuts.get() + http_metrics().capacity_cuts.get() - cuts_before;
    assert!(
        cut <= cuts,
        "{cut} creations went unanswered, but the connection caps cut only {cuts}"
    );
    bystander_still_works(&mut bystander).await;
    // The bystander can still upload.
    let (_, r) = upload(http, &bystander.token, "ok.pdf", &pdf(5000, 12345), 5000).await;
    assert_eq!(r.status, 200);
    srv.stop().await;
}

/// A file lives with its chat: an open chat keeps its files however long
/// it runs, and once it ends they go `retention` later, on every path.
#[tokio::test]
async fn files_live_with_their_chat_then_expire_after_retention() {
    let srv = TestServer::start_with(|c| c.writer.retention = Duration::from_secs(2)).await;
    let http = srv.http();
    let mut v = visitor(&srv).await;
    let (id, r) = upload(http, &v.token, "a.pdf", &pdf(2000, 12345), 2000).await;
    assert_eq!(r.status, 200);
    let link_of = |token: String| {
        let id = id.clone();
        async move { get(http, &format!("/v1/attach/{id}/link"), Some(&token)).await }
    };
    let link = json_of(&link_of(v.token.clone()).await);
    let url = link["url"].as_str().unwrap().to_string();
    assert_eq!(get(http, &url, None).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        get(http, &url, None).await.status,
        200,
        "the chat is still open: its file stays past the retention period"
    );
    assert_eq!(link_of(v.token.clone()).await.status, 200);

    v.send_json(&holdfast_protocol::visitor::VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    v.wait_for(Duration::from_secs(5), |m| {
        matches!(m, VisitorOut::Ack { .. })
    })
    .await
    .unwrap();
    assert_eq!(get(http, &url, None).await.status, 200, "just ended");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(get(http, &url, None).await.status, 404);
    assert_eq!(link_of(v.token.clone()).await.status, 404);
    let attach = srv.running().ctx.attach.clone();
    let reads = srv.running().ctx.reads.clone();
    let now = holdfast_server::store::now_ms();
    assert_eq!(
        attach
            .prune(&reads, now - 2000, now - 86_400_000)
            .await
            .unwrap(),
        1
    );
    srv.stop().await;
}

/// A link stops working when it expires, on every kind (file, thumbnail,
/// view), though the file is still there: a link signed with the server's
/// own key works until its expiry and is 404 from then on, and one whose
/// expiry passed already is 404 at once.
async fn an_expired_link_is_404(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let (id, r) = upload(http, &v.token, "photo.png", &png(400, 300), 1 << 20).await;
    assert_eq!(r.status, 200);
    let attach = srv.running().ctx.attach.clone();
    let meta = attach.meta(&id).await.unwrap().unwrap();
    let now = holdfast_server::store::now_ms();
    let kinds = |l: &holdfast_server::attach::SignedLinks| {
        [
            l.url.clone(),
            l.thumb_url.clone().unwrap(),
            l.view_url.clone().unwrap(),
        ]
    };

    let past = attach.links_until(&meta, now - 1000);
    for url in kinds(&past) {
        assert_eq!(get(http, &url, None).await.status, 404, "{url}");
    }
    let soon = attach.links_until(&meta, now + 1500);
    for url in kinds(&soon) {
        assert_eq!(get(http, &url, None).await.status, 200, "{url}");
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for url in kinds(&soon) {
        assert_eq!(get(http, &url, None).await.status, 404, "{url}");
    }
    // The file itself is fine: a fresh link works.
    let fresh = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(&v.token)).await);
    assert_eq!(
        get(http, fresh["url"].as_str().unwrap(), None).await.status,
        200
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(an_expired_link_is_404);

/// A visitor of another site gets 404 for everything about a file of this
/// site, finished or in progress: its link, its offset, a PATCH.
async fn a_visitor_of_another_site_gets_404(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let (done_id, r) = upload(http, &v.token, "mine.png", &png(64, 64), 1 << 20).await;
    assert_eq!(r.status, 200);
    let doc = pdf(4000, 3);
    let c = create(http, &v.token, doc.len() as u64, "half.pdf").await;
    assert_eq!(c.status, 201);
    let half_id = json_of(&c)["id"].as_str().unwrap().to_string();
    assert_eq!(
        patch(http, &v.token, &half_id, 0, &doc[..2000])
            .await
            .status,
        204
    );

    let mut stranger = WsVisitor::connect(http, "other").await.unwrap();
    let ack = stranger.say_acked("hello from another shop").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
    let t = stranger.token.as_str();
    for id in [&done_id, &half_id] {
        let l = get(http, &format!("/v1/attach/{id}/link"), Some(t)).await;
        assert_eq!(l.status, 404, "{id}");
        assert_eq!(json_of(&l)["error"], "not_found");
        assert_eq!(head(http, t, id).await.status, 404, "{id}");
    }
    let p = patch(http, t, &half_id, 2000, &doc[2000..]).await;
    assert_eq!(p.status, 404);
    // Nothing of the stranger's PATCH was kept; the owner finishes it.
    assert_eq!(offset(&head(http, &v.token, &half_id).await), 2000);
    assert_eq!(
        patch(http, &v.token, &half_id, 2000, &doc[2000..])
            .await
            .status,
        200
    );
    // Its own files work as usual.
    let (own, r) = upload(http, t, "theirs.pdf", &pdf(1000, 4), 1000).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(http, &format!("/v1/attach/{own}/link"), Some(t))
            .await
            .status,
        200
    );
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_visitor_of_another_site_gets_404);

/// The per-visitor upload rate slows a fast client down rather than
/// failing it: 600 kB at 200 kB/s (one second's burst) takes at least 2 s,
/// and arrives whole.
#[tokio::test]
async fn uploads_are_paced_to_the_visitor_rate() {
    let srv = TestServer::start_with(|c| c.attach.rate_bytes_per_sec = 200_000).await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let doc = pdf(600_000, 12345);
    let t = std::time::Instant::now();
    let (id, r) = upload(http, &v.token, "slow.pdf", &doc, 100_000).await;
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(took >= Duration::from_millis(1900), "took {took:?}");
    let link = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(&v.token)).await);
    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.body, doc);
    srv.stop().await;
}

/// The sweep deletes the files of chats that ended before the cutoff and
/// abandoned uploads, keeps an open chat's files however old, and keeps
/// content a newer attachment still names (the same file sent twice is
/// stored once).
async fn the_sweep_prunes_old_attachments_and_abandoned_uploads(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let mut ended = visitor(&srv).await;
    let mut v = visitor(&srv).await;
    let token = v.token.clone();
    let t = token.as_str();
    let same = pdf(200_000, 12345);
    let (old, r) = upload(http, &ended.token, "old.pdf", &same, 100_000).await;
    assert_eq!(r.status, 200);
    let old_link = json_of(&get(http, &format!("/v1/attach/{old}/link"), Some(&ended.token)).await);
    ended
        .send_json(&holdfast_protocol::visitor::VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    ended
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, VisitorOut::Ack { .. })
        })
        .await
        .unwrap();
    let (older, r) = upload(http, t, "older.pdf", &pdf(3000, 7), 3000).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cutoff = holdfast_server::store::now_ms();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (new, r) = upload(http, t, "new.pdf", &same, 100_000).await;
    assert_eq!(r.status, 200);
    let abandoned = json_of(&create(http, t, 5000, "left.pdf").await)["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        patch(http, t, &abandoned, 0, &pdf(5000, 12345)[..1000])
            .await
            .status,
        204
    );

    let attach = srv.running().ctx.attach.clone();
    let reads = srv.running().ctx.reads.clone();
    let far = holdfast_server::store::now_ms() + 1000;
    assert_eq!(
        attach.prune(&reads, cutoff, far).await.unwrap(),
        1,
        "only the ended chat's file goes; `older` is older but its chat is open"
    );
    let link_of =
        |id: String| async move { get(http, &format!("/v1/attach/{id}/link"), Some(t)).await };
    assert_eq!(
        get(http, old_link["url"].as_str().unwrap(), None)
            .await
            .status,
        404
    );
    assert_eq!(link_of(older.clone()).await.status, 200);
    assert_eq!(head(http, t, &abandoned).await.status, 404);
    let l = json_of(&link_of(new.clone()).await);
    let file = get(http, l["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert!(
        file.body == same,
        "content still named by a newer attachment stays"
    );

    // An image whose view was opened: the view goes with it.
    let (photo, r) = upload(http, t, "photo.png", &png(300, 200), 1 << 20).await;
    assert_eq!(r.status, 200);
    let view_url = json_of(&link_of(photo).await)["view_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(http, &view_url, None).await.status, 200);
    let views_dir = match &attach.storage {
        holdfast_server::attach::Storage::Disk(d) => Some(d.root().join("views")),
        holdfast_server::attach::Storage::Postgres(_) => None,
    };
    if let Some(dir) = &views_dir {
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            1,
            "the view is kept"
        );
    }

    v.send_json(&holdfast_protocol::visitor::VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    v.wait_for(Duration::from_secs(5), |m| {
        matches!(m, VisitorOut::Ack { .. })
    })
    .await
    .unwrap();
    let far = holdfast_server::store::now_ms() + 1000;
    assert_eq!(attach.prune(&reads, far, far).await.unwrap(), 3);
    assert_eq!(get(http, &view_url, None).await.status, 404);
    if let Some(dir) = &views_dir {
        let left: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
        assert!(left.is_empty(), "views left behind: {left:?}");
    }
    assert_eq!(link_of(new).await.status, 404);
    assert_eq!(link_of(older).await.status, 404);
    assert_eq!(
        get(http, l["url"].as_str().unwrap(), None).await.status,
        404
    );
    if let Some(url) = srv.database.clone() {
        let left = tokio::task::spawn_blocking(move || {
            let db = holdfast_server::store::Database::new(Some(&url), std::path::Path::new("."))
                .unwrap();
            let conn = db.open_current().unwrap();
            let mut left = Vec::new();
            for table in [
                "attachments",
                "attach_uploads",
                "attach_chunks",
                "attach_contents",
                "attach_blobs",
            ] {
                let n: i64 = conn
                    .db()
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                    .unwrap()
                    .get(0)
                    .unwrap();
                left.push((table, n));
            }
            left
        })
        .await
        .unwrap();
        assert!(left.iter().all(|(_, n)| *n == 0), "left behind: {left:?}");
    }
    srv.stop().await;
}
holdfast_tests::on_both_backends!(the_sweep_prunes_old_attachments_and_abandoned_uploads);

/// Ask for a link to attachment `id` on the agent channel.
async fn link_query(a: &mut RawAgent, request: u32, id: &str) -> QueryResult {
    a.send(&ClientMsg::Query(Query::AttachmentLink {
        request,
        id: id.into(),
    }))
    .await
    .unwrap();
    let m = a
        .recv_until(T, |m| matches!(m, ServerMsg::QueryResult { .. }))
        .await
        .unwrap();
    let ServerMsg::QueryResult { request: r, result } = m else {
        unreachable!()
    };
    assert_eq!(r, request);
    result
}

fn refused_not_found(r: &QueryResult) -> bool {
    matches!(r, QueryResult::Refused(e) if e.code == ErrorCode::NotFound)
}

/// Agents hold no visitor token: they get signed links on their own channel,
/// for complete files of their site only.
async fn agents_get_links_on_their_channel_for_their_site_only(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let v = visitor(&srv).await;
    let img = png(640, 480);
    let (id, done) = upload(http, &v.token, "parcel.png", &img, img.len()).await;
    assert_eq!(done.status, 200);
    let half = create(http, &v.token, 10_000, "half.png").await;
    let half = json_of(&half)["id"].as_str().unwrap().to_string();

    let mut alice = agent(&srv, "alice").await;
    let QueryResult::AttachmentLink {
        url,
        thumb_url,
        expires_ms,
    } = link_query(&mut alice, 1, &id).await
    else {
        panic!("no link for a file of alice's site")
    };
    assert!(expires_ms > 0);
    let file = get(http, &url, None).await;
    assert_eq!(file.status, 200);
    assert_eq!(file.body, img);
    let thumb = get(http, &thumb_url.unwrap(), None).await;
    assert_eq!(thumb.status, 200);
    assert_eq!(thumb.header("content-type"), Some("image/png"));

    // An unfinished upload and an unknown id: the same answer.
    assert!(refused_not_found(&link_query(&mut alice, 2, &half).await));
    let unknown = "0".repeat(id.len());
    assert!(refused_not_found(
        &link_query(&mut alice, 3, &unknown).await
    ));
    // An agent of another site cannot tell the file exists.
    let mut mallory = agent(&srv, "mallory").await;
    assert!(refused_not_found(&link_query(&mut mallory, 4, &id).await));
    srv.stop().await;
}
holdfast_tests::on_both_backends!(agents_get_links_on_their_channel_for_their_site_only);

/// Send a message that carries attachment `aid` (body may be empty); the
/// visitor's answer to it, ack or error.
async fn send_file(v: &mut WsVisitor, id: MsgId, body: &str, aid: &str) -> VisitorOut {
    let msg = json!({"t": "send", "id": id, "body": body, "attachment": aid});
    v.send_raw(&msg.to_string()).await.unwrap();
    v.wait_for(T, |m| match m {
        VisitorOut::Ack { id: a, .. } | VisitorOut::Error { id: Some(a), .. } => *a == id,
        _ => false,
    })
    .await
    .unwrap()
}

async fn fetch_via_agent(srv: &TestServer, a: &mut RawAgent, request: u32, aid: &str) -> Vec<u8> {
    let QueryResult::AttachmentLink { url, .. } = link_query(a, request, aid).await else {
        panic!("no link for {aid}")
    };
    let file = get(srv.http(), &url, None).await;
    assert_eq!(file.status, 200);
    file.body
}

/// The keystone of issue 18: a visitor's file reaches the agent as exactly
/// one message that carries it, in every replay path, and the agent gets
/// the identical bytes through its own channel.
async fn a_visitor_file_reaches_the_agent_as_exactly_one_message(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let mut alice = agent(&srv, "alice").await;
    let mut v = visitor(&srv).await;
    let img = png(900, 600);
    let doc = pdf(200_000, 12345);
    let (img_id, done) = upload(http, &v.token, "damaged parcel.png", &img, 50_000).await;
    assert_eq!(done.status, 200);
    let (doc_id, done) = upload(http, &v.token, "invoice.pdf", &doc, 64 * 1024).await;
    assert_eq!(done.status, 200);

    let img_send = new_id();
    let VisitorOut::Ack {
        conversation,
        message: img_msg,
        ..
    } = send_file(&mut v, img_send, "", &img_id).await
    else {
        panic!("image message refused")
    };
    let VisitorOut::Ack { .. } = send_file(&mut v, new_id(), "the invoice", &doc_id).await else {
        panic!("pdf message refused")
    };
    // A resend of the same send is answered from the record: same message.
    let VisitorOut::Ack { message: again, .. } = send_file(&mut v, img_send, "", &img_id).await
    else {
        panic!("resend refused")
    };
    assert_eq!(again, img_msg);

    let got = messages_with(&mut alice, &img_id, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let f = got[0].attachment.clone().unwrap();
    assert_eq!(
        (f.name.as_str(), f.mime.as_str(), f.size, f.image),
        ("damaged parcel.png", "image/png", img.len() as u64, true)
    );
    assert_eq!(
        (got[0].conversation, got[0].message),
        (conversation, img_msg)
    );
    assert_eq!(fetch_via_agent(&srv, &mut alice, 1, &img_id).await, img);

    // A fresh device of the agent: the snapshot carries both files.
    let mut fresh = RawAgent::login(srv.agent_addr(), "alice", PASSWORD)
        .await
        .unwrap()
        .0;
    let ServerMsg::Snapshot(snap) = fresh
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap()
    else {
        unreachable!()
    };
    let files: Vec<_> = snap
        .messages
        .iter()
        .filter_map(|m| m.attachment.as_ref().map(|f| f.id.clone()))
        .collect();
    assert_eq!(files, vec![img_id.clone(), doc_id.clone()]);
    let pdf_bytes = fetch_via_agent(&srv, &mut fresh, 2, &doc_id).await;
    assert_eq!(Sha256::digest(&pdf_bytes), Sha256::digest(&doc));

    // History has them too, each once.
    fresh
        .send(&ClientMsg::Query(Query::History {
            request: 3,
            visitor: v.visitor.clone(),
            before: None,
            limit: 50,
        }))
        .await
        .unwrap();
    let ServerMsg::QueryResult {
        result: QueryResult::History { messages, .. },
        ..
    } = fresh
        .recv_until(T, |m| matches!(m, ServerMsg::QueryResult { .. }))
        .await
        .unwrap()
    else {
        panic!("no history")
    };
    let mut ids: Vec<_> = messages
        .iter()
        .filter_map(|m| m.attachment.as_ref().map(|f| f.id.clone()))
        .collect();
    ids.reverse();
    assert_eq!(ids, vec![img_id.clone(), doc_id.clone()]);

    // The visitor's live events carried the files, and so does the
    // snapshot of a new tab without a cursor.
    let live: Vec<_> = v
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) => m.attachment.as_ref().map(|f| f.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(live, vec![img_id.clone(), doc_id.clone()]);
    let mut tab = WsVisitor::connect_with(
        http,
        holdfast_tests::visitor::hello(
            "acme",
            Some(v.token.clone()),
            None,
            "https://shop.example/",
        ),
    )
    .await
    .unwrap();
    let snap = tab
        .wait_for(T, |m| matches!(m, VisitorOut::Snapshot { .. }))
        .await
        .unwrap();
    let VisitorOut::Snapshot { messages, .. } = snap else {
        unreachable!()
    };
    let shown: Vec<_> = messages
        .iter()
        .filter_map(|m| m.attachment.as_ref().map(|f| (f.id.clone(), f.image)))
        .collect();
    assert_eq!(shown, vec![(img_id.clone(), true), (doc_id.clone(), false)]);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_visitor_file_reaches_the_agent_as_exactly_one_message);

/// A message may refer only to a complete file its own visitor uploaded
/// into this chat: anything else is refused with a clear error and nothing
/// is stored.
async fn a_message_cannot_carry_someone_elses_or_an_unfinished_file(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let mut alice = agent(&srv, "alice").await;
    let mut owner = visitor(&srv).await;
    let mut other = visitor(&srv).await;
    let img = png(300, 200);
    let (theirs, done) = upload(http, &owner.token, "mine.png", &img, img.len()).await;
    assert_eq!(done.status, 200);
    let half = create(http, &owner.token, 10_000, "half.png").await;
    let half = json_of(&half)["id"].as_str().unwrap().to_string();

    let VisitorOut::Error { code, message, .. } =
        send_file(&mut other, new_id(), "look", &theirs).await
    else {
        panic!("another visitor's file was accepted")
    };
    assert_eq!(code, ErrorCode::NotFound, "{message}");
    let VisitorOut::Error { code, message, .. } = send_file(&mut owner, new_id(), "", &half).await
    else {
        panic!("an unfinished upload was accepted")
    };
    assert_eq!(code, ErrorCode::Conflict, "{message}");
    assert!(message.contains("not complete"), "{message}");
    let VisitorOut::Error { code, .. } = send_file(&mut owner, new_id(), "", "nope").await else {
        panic!("an unknown id was accepted")
    };
    assert_eq!(code, ErrorCode::NotFound);
    // Nothing reached the agent, and the chats still work.
    for aid in [&theirs, &half] {
        assert!(
            messages_with(&mut alice, aid, Duration::from_millis(500))
                .await
                .is_empty()
        );
    }
    bystander_still_works(&mut owner).await;
    bystander_still_works(&mut other).await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_message_cannot_carry_someone_elses_or_an_unfinished_file);

/// An agent's message may carry a file of the chat it serves: the visitor
/// sees it; a file of another chat or an unfinished upload is refused as
/// the command's outcome, and nothing is stored.
async fn an_agent_message_carries_a_file_of_its_chat_only(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    // Alice is online first, so the visitor's chat is hers at once.
    let mut alice = agent(&srv, "alice").await;
    let mut v = visitor(&srv).await;
    let mut w = visitor(&srv).await;
    let doc = pdf(20_000, 12345);
    let (mine, done) = upload(http, &v.token, "manual.pdf", &doc, doc.len()).await;
    assert_eq!(done.status, 200);
    let (elsewhere, done) = upload(http, &w.token, "other.pdf", &doc, doc.len()).await;
    assert_eq!(done.status, 200);
    let half = create(http, &v.token, 10_000, "half.png").await;
    let half = json_of(&half)["id"].as_str().unwrap().to_string();
    let VisitorOut::Ack {
        conversation: conv, ..
    } = v
        .say_acked("here is the manual you asked for?")
        .await
        .unwrap()
    else {
        panic!("no ack")
    };
    let send = |aid: &str| Action::Send {
        conversation: conv,
        body: String::new(),
        attachment: Some(aid.to_string()),
    };

    let o = run(&mut alice, send(&mine)).await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    let got = v
        .wait_for(T, |m| {
            matches!(m, VisitorOut::Event { event: VisitorEvent::Message(m), .. }
                if m.attachment.as_ref().is_some_and(|f| f.id == mine))
        })
        .await
        .unwrap();
    let VisitorOut::Event {
        event: VisitorEvent::Message(m),
        ..
    } = got
    else {
        unreachable!()
    };
    assert_eq!(m.attachment.unwrap().name, "manual.pdf");

    let o = run(&mut alice, send(&elsewhere)).await;
    assert!(
        matches!(
            &o,
            Outcome::Rejected {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{o:?}"
    );
    let o = run(&mut alice, send(&half)).await;
    assert!(
        matches!(&o, Outcome::Rejected { code: ErrorCode::Conflict, message } if message.contains("not complete")),
        "{o:?}"
    );
    // Without words or a file it is still an empty message.
    let o = run(
        &mut alice,
        Action::Send {
            conversation: conv,
            body: " ".into(),
            attachment: None,
        },
    )
    .await;
    assert!(
        matches!(
            o,
            Outcome::Rejected {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{o:?}"
    );
    bystander_still_works(&mut w).await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(an_agent_message_carries_a_file_of_its_chat_only);

/// Sets `acme`'s attachment rules through the admin path the CLI uses.
async fn set_site_rules(srv: &TestServer, rules: holdfast_server::admin::AttachRules) {
    srv.admin(move |db| holdfast_server::admin::set_site_attachments(db, "acme", &rules).unwrap())
        .await;
}

/// A site narrows the server's rules: the widget learns them in its
/// `welcome`, and the server holds to them whatever a client does: the
/// size before a byte is sent, the kind by content at completion, and the
/// rate by pacing.
async fn site_rules_narrow_size_types_and_rate(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    set_site_rules(
        &srv,
        holdfast_server::admin::AttachRules {
            max_bytes: Some(1024 * 1024),
            kinds: Some("png, pdf".into()),
            rate: Some(100 * 1024),
            reset: false,
        },
    )
    .await;
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    let VisitorOut::Welcome { attach, .. } = v.welcome.clone() else {
        panic!("no welcome first: {:?}", v.welcome)
    };
    let rules = attach.expect("the welcome carries the site's rules");
    assert_eq!(rules.max_bytes, 1024 * 1024);
    assert_eq!(rules.types, ["image/png", "application/pdf"]);
    v.say_acked("files coming").await.unwrap();
    let t = v.token.as_str();

    // One byte over the site's limit: refused at create, before any byte.
    let over = create(http, t, 1024 * 1024 + 1, "big.pdf").await;
    assert_eq!(over.status, 413);
    assert!(
        json_of(&over)["message"]
            .as_str()
            .unwrap()
            .contains("1048576"),
        "{over:?}"
    );
    // A zip is a kind the server takes but this site does not.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.resize(4000, 7);
    let (_, r) = upload(http, t, "logs.zip", &zip, zip.len()).await;
    assert_eq!(r.status, 415, "{r:?}");
    let msg = json_of(&r)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("png, pdf") && msg.contains("zip"), "{msg}");
    // What the site takes still goes through, at the site's rate: 300 kB
    // at 100 kB/s after a one-second burst takes two seconds at least.
    let (_, r) = upload(http, t, "ok.png", &png(40, 30), 10_000).await;
    assert_eq!(r.status, 200, "{r:?}");
    let doc = pdf(300 * 1024, 12345);
    let t0 = std::time::Instant::now();
    let (id, r) = upload(http, t, "slow.pdf", &doc, 50 * 1024).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    let link = json_of(&get(http, &format!("/v1/attach/{id}/link"), Some(t)).await);
    assert_eq!(
        get(http, link["url"].as_str().unwrap(), None).await.body,
        doc
    );

    // Back to the server's defaults: the zip is taken again.
    set_site_rules(
        &srv,
        holdfast_server::admin::AttachRules {
            reset: true,
            ..Default::default()
        },
    )
    .await;
    let v2 = WsVisitor::connect(http, "acme").await.unwrap();
    let VisitorOut::Welcome { attach, .. } = v2.welcome.clone() else {
        panic!("no welcome")
    };
    assert_eq!(attach.unwrap().max_bytes, 20 * 1024 * 1024);
    let (_, r) = upload(http, t, "logs.zip", &zip, zip.len()).await;
    assert_eq!(r.status, 200, "{r:?}");
    srv.stop().await;
}
holdfast_tests::on_both_backends!(site_rules_narrow_size_types_and_rate);

/// Alice on device `device`, logged in and resuming after `after` (a fresh
/// device's snapshot with `None`); her `LoginOk`.
async fn alice_on(
    srv: &TestServer,
    device: MsgId,
    after: Option<u64>,
) -> (RawAgent, holdfast_protocol::agent::LoginOk) {
    let mut a = RawAgent::handshake(srv.agent_addr()).await.unwrap();
    a.send(&RawAgent::login_msg("alice", PASSWORD, device, after))
        .await
        .unwrap();
    let Some(ServerMsg::LoginOk(ok)) = a.recv(T).await.unwrap() else {
        panic!("alice cannot log in")
    };
    (a, ok)
}

/// The answer to query `q` on the agent channel.
async fn query(a: &mut RawAgent, q: Query) -> QueryResult {
    let request = q.request();
    a.send(&ClientMsg::Query(q)).await.unwrap();
    let ServerMsg::QueryResult { result, .. } = a
        .recv_until(
            T,
            |m| matches!(m, ServerMsg::QueryResult { request: r, .. } if *r == request),
        )
        .await
        .unwrap()
    else {
        unreachable!()
    };
    result
}

/// How many of `events` are messages carrying attachment `aid`.
fn carrying(events: &[(u64, VisitorEvent)], aid: &str) -> usize {
    events
        .iter()
        .filter(|(_, e)| {
            matches!(e, VisitorEvent::Message(m) if m.attachment.as_ref().is_some_and(|f| f.id == aid))
        })
        .count()
}

/// Poll `lp` until it holds a message carrying each of `aids`.
async fn poll_until_files(lp: &mut LpVisitor, aids: &[&str]) {
    let deadline = tokio::time::Instant::now() + T;
    while aids.iter().any(|a| carrying(&lp.events, a) == 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "long-poll never carried {aids:?}: {:?}",
            lp.events
        );
        lp.poll().await.unwrap();
    }
}

/// The replay paths carry a file message once each: a visitor on
/// long-poll (the widget's fallback transport) gets the agent's file in
/// its poll and, in a new tab polling from the start, both files once
/// each; an agent that reconnects from its cursor gets both files'
/// messages in its replay, once each, and no snapshot.
async fn file_messages_replay_over_long_poll_and_to_a_resuming_agent(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let http = srv.http();
    let device = new_id();
    let (mut alice, ok) = alice_on(&srv, device, None).await;
    assert_eq!(ok.resume, holdfast_protocol::agent::Resume::Snapshot);
    alice
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();

    let mut lp = LpVisitor::connect(http, "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = lp.say("my parcel is broken").await.unwrap() else {
        panic!("no ack")
    };
    // Alice's cursor: the visitor's first line, which she has.
    let ServerMsg::Event { seq: cursor, .. } = alice
        .recv_until(T, |m| {
            matches!(m, ServerMsg::Event { event: holdfast_protocol::agent::Event::Message(c), .. }
                if c.body == "my parcel is broken")
        })
        .await
        .unwrap()
    else {
        unreachable!()
    };

    // Alice sends a manual over her channel.
    let doc = pdf(100_000, 77);
    let QueryResult::Upload { id: pdf_id, .. } = query(
        &mut alice,
        Query::UploadCreate {
            request: 1,
            conversation,
            name: "manual.pdf".into(),
            length: doc.len() as u64,
            mime_hint: "application/pdf".into(),
        },
    )
    .await
    else {
        panic!("no upload")
    };
    let r = query(
        &mut alice,
        Query::UploadWrite {
            request: 2,
            id: pdf_id.clone(),
            offset: 0,
            bytes: doc.clone(),
        },
    )
    .await;
    assert!(matches!(r, QueryResult::UploadDone { .. }), "{r:?}");
    let o = run(
        &mut alice,
        Action::Send {
            conversation,
            body: "the manual".into(),
            attachment: Some(pdf_id.clone()),
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");

    // The long-poll visitor gets it in a poll, and downloads it whole.
    poll_until_files(&mut lp, &[&pdf_id]).await;
    assert_eq!(carrying(&lp.events, &pdf_id), 1);
    let link = json_of(&get(http, &format!("/v1/attach/{pdf_id}/link"), Some(&lp.token)).await);
    let file = get(http, link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    assert!(file.body == doc, "the visitor's copy differs");

    // Alice's link drops; meanwhile the visitor sends a photo over
    // long-poll.
    drop(alice);
    let img = png(500, 400);
    let (png_id, done) = upload(http, &lp.token, "photo.png", &img, 1 << 20).await;
    assert_eq!(done.status, 200);
    let sent = lp
        .send(vec![VisitorIn::Send {
            id: new_id(),
            body: String::new(),
            attachment: Some(png_id.clone()),
        }])
        .await
        .unwrap();
    assert!(
        matches!(sent.as_slice(), [VisitorOut::Ack { .. }]),
        "{sent:?}"
    );

    // Alice back on the same device from her cursor: a replay with both
    // files, once each.
    let (mut alice, ok) = alice_on(&srv, device, Some(cursor)).await;
    assert_eq!(
        ok.resume,
        holdfast_protocol::agent::Resume::Replay { after: cursor }
    );
    let mut replayed = Vec::new();
    let mut seqs = Vec::new();
    // Until both files came, then a second more for any second copy
    // (heartbeats keep the link busy, so "until quiet" would never end).
    let deadline = tokio::time::Instant::now() + T;
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        if settle.is_none() && replayed.len() >= 2 {
            settle = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
        let left = settle
            .unwrap_or(deadline)
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(Some(m)) = alice.recv(left).await else {
            break;
        };
        match m {
            ServerMsg::Event { seq, event } => {
                seqs.push(seq);
                if let holdfast_protocol::agent::Event::Message(c) = event
                    && let Some(f) = c.attachment
                {
                    replayed.push((f.id, f.name));
                }
            }
            ServerMsg::Snapshot(_) => panic!("a snapshot instead of the replay"),
            _ => {}
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(seqs.first().is_some_and(|s| *s == cursor + 1), "{seqs:?}");
    assert_eq!(
        replayed,
        vec![
            (pdf_id.clone(), "manual.pdf".to_string()),
            (png_id.clone(), "photo.png".to_string())
        ]
    );

    // A new tab of the visitor, polling from the start: both, once each.
    let mut tab = LpVisitor {
        http,
        visitor: lp.visitor.clone(),
        token: lp.token.clone(),
        cursor: 0,
        events: Vec::new(),
    };
    poll_until_files(&mut tab, &[&pdf_id, &png_id]).await;
    assert_eq!(
        (
            carrying(&tab.events, &pdf_id),
            carrying(&tab.events, &png_id)
        ),
        (1, 1)
    );
    drop(alice);
    srv.stop().await;
}
holdfast_tests::on_both_backends!(file_messages_replay_over_long_poll_and_to_a_resuming_agent);
