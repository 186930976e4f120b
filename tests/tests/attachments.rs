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
use holdfast_protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_tests::attach::{
    TOKEN, create, get, head, json_of, messages_with, offset, patch, pdf, png,
};
use holdfast_tests::flows::{T, agent, run};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::PASSWORD;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::new_id;
use holdfast_tests::visitor::{HttpAnswer, WsVisitor, http_exchange};
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
    for t in tasks {
        match t.await.unwrap() {
            Ok(201) => created += 1,
            Ok(429) => limited += 1,
            Ok(s) => panic!("unexpected status {s}"),
            // A connection refused under the flood is a limit too.
            Err(_) => limited += 1,
        }
    }
    assert_eq!(created, 4, "the per-visitor cap of pending uploads");
    assert_eq!(limited, 996);
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

    v.send_json(&holdfast_protocol::visitor::VisitorIn::EndChat { id: new_id() })
        .await
        .unwrap();
    v.wait_for(Duration::from_secs(5), |m| {
        matches!(m, VisitorOut::Ack { .. })
    })
    .await
    .unwrap();
    let far = holdfast_server::store::now_ms() + 1000;
    assert_eq!(attach.prune(&reads, far, far).await.unwrap(), 2);
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
