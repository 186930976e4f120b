//! Agents send and fetch files over the agent channel (PROTOCOL.md
//! 10.13.1): the real client core against a real server, with the link cut
//! and the app killed mid-upload, on both storages. The promise under test
//! is the issue's: a file the agent was told is sent reaches the visitor as
//! exactly one message, with identical bytes, however the upload went.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use std::time::Duration;

use holdfast_client::{Update, UploadState};
use holdfast_protocol::agent::{
    AttachmentInfo, ClientMsg, ConversationState, Query, QueryResult, ServerMsg,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_tests::attach::{get, pdf, png};
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::flows::{T, agent};
use holdfast_tests::proxy::Proxy;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, TestServer};
use holdfast_tests::visitor::WsVisitor;

fn core_at(srv: &TestServer, server: &str, user: &str, dir: &tempfile::TempDir) -> CoreAgent {
    CoreAgent::start(fast_config(
        server,
        user,
        &dir.path().join(format!("{user}.sqlite3")),
        srv.running().fingerprint,
    ))
}

fn core(srv: &TestServer, user: &str, dir: &tempfile::TempDir) -> CoreAgent {
    core_at(srv, &srv.agent_addr().to_string(), user, dir)
}

/// A visitor whose chat `agent` serves: the agent is online first, so the
/// chat is assigned to it; its id once the agent sees it active.
async fn chat_with(srv: &TestServer, agent: &mut CoreAgent) -> (WsVisitor, u64) {
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("can you send it?").await.unwrap()
    else {
        panic!("no ack")
    };
    agent
        .conversation_where(|c| c.id == conversation && c.state == ConversationState::Active)
        .await;
    (v, conversation)
}

/// The progress of upload `id` until `pred` holds; every `sent` seen.
async fn upload_until(
    a: &mut CoreAgent,
    id: MsgId,
    pred: impl Fn(u64, &UploadState) -> bool,
) -> (u64, UploadState) {
    a.until("upload progress", |u| match u {
        Update::Upload {
            id: i, sent, state, ..
        } if *i == id && pred(*sent, state) => Some((*sent, state.clone())),
        _ => None,
    })
    .await
}

/// Every `sent` an upload of `id` reported so far, in order.
fn progress_of(a: &CoreAgent, id: MsgId) -> Vec<u64> {
    a.seen
        .iter()
        .filter_map(|u| match u {
            Update::Upload { id: i, sent, .. } if *i == id => Some(*sent),
            _ => None,
        })
        .collect()
}

/// Every message event carrying a file that reaches the visitor within
/// `wait` (a quiet link ends the wait).
async fn files_seen(v: &mut WsVisitor, wait: Duration) -> Vec<AttachmentInfo> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match v
            .wait_for(left, |m| {
                matches!(m, VisitorOut::Event { event: VisitorEvent::Message(m), .. }
                    if m.attachment.is_some())
            })
            .await
        {
            Ok(VisitorOut::Event {
                event: VisitorEvent::Message(m),
                ..
            }) => {
                got.extend(m.attachment.map(|a| *a));
            }
            _ => return got,
        }
    }
}

/// The bytes of attachment `aid` as `a`'s core fetches them into its cache.
async fn fetched(a: &mut CoreAgent, aid: &str, thumb: bool) -> (Vec<u8>, String) {
    let request = a.handle.fetch_attachment(aid, thumb).unwrap();
    a.until("a fetched file", |u| match u {
        Update::AttachmentReady {
            request: r,
            path,
            mime,
            ..
        } if *r == request => Some((std::fs::read(path).unwrap(), mime.clone())),
        Update::AttachmentFailed {
            request: r,
            message,
            ..
        } if *r == request => panic!("fetch failed: {message}"),
        _ => None,
    })
    .await
}

/// The visitor's own download of `aid`: a visitor may link any file of
/// its own chats, the agents' included.
async fn visitor_download(srv: &TestServer, v: &WsVisitor, aid: &str) -> Vec<u8> {
    let link = get(
        srv.http(),
        &format!("/v1/attach/{aid}/link"),
        Some(&v.token),
    )
    .await;
    assert_eq!(
        link.status,
        200,
        "the visitor gets no link to a file of its own chat: {}",
        String::from_utf8_lossy(&link.body)
    );
    let link: serde_json::Value = serde_json::from_slice(&link.body).unwrap();
    let file = get(srv.http(), link["url"].as_str().unwrap(), None).await;
    assert_eq!(file.status, 200);
    file.body
}

/// The keystone: the app is killed mid-upload (no shutdown), reopened on
/// the same data dir, resumes from the server's stored offset, and the
/// visitor gets exactly one message with the file.
async fn a_killed_app_resumes_its_upload_and_sends_it_once(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice).await;

    let doc = pdf(3_000_000, 4242);
    let id = alice
        .handle
        .send_file_bytes(conv, "manual.pdf".into(), doc.clone(), "the manual".into())
        .await
        .unwrap();
    let (before, _) = upload_until(&mut alice, id, |sent, _| sent >= 512 * 1024).await;
    alice.handle.abort();
    while !alice.handle.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(alice);

    let mut alice = core(&srv, "alice", &dir);
    let pending = alice.handle.pending_uploads().unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].id, id);
    assert_eq!(pending[0].total, doc.len() as u64);
    alice.live().await;
    upload_until(&mut alice, id, |_, s| *s == UploadState::Sent).await;
    // Resumed where the server's bytes ended, never from zero: every
    // offset the restarted app heard is at least the last one before.
    let after = progress_of(&alice, id);
    assert!(
        after.iter().all(|s| *s >= before),
        "restarted from below {before}: {after:?}"
    );

    let files = files_seen(&mut v, Duration::from_secs(3)).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].name, "manual.pdf");
    assert_eq!(files[0].mime, "application/pdf");
    assert_eq!(files[0].size, doc.len() as u64);
    assert!(!files[0].image);
    let carried: Vec<_> = alice
        .messages(conv)
        .into_iter()
        .filter(|m| m.attachment.is_some())
        .collect();
    assert_eq!(carried.len(), 1, "{carried:?}");
    assert_eq!(carried[0].client_id, id);
    assert_eq!(carried[0].body, "the manual");
    assert!(alice.handle.pending_uploads().unwrap().is_empty());
    let (bytes, mime) = fetched(&mut alice, &files[0].id, false).await;
    assert_eq!(mime, "application/pdf");
    assert!(bytes == doc, "the fetched file differs");
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_killed_app_resumes_its_upload_and_sends_it_once);

/// A PNG (from a path) and a PDF (from memory, as a pasted file would be)
/// reach the visitor as exactly one message each with the right metadata,
/// and the bytes come back identical, thumbnail included.
async fn png_and_pdf_reach_the_visitor_once_with_identical_bytes(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice).await;
    let mut bob = core(&srv, "bob", &dir);
    bob.live().await;

    let img = png(1024, 768);
    let img_path = dir.path().join("parcel.png");
    std::fs::write(&img_path, &img).unwrap();
    let doc = pdf(700_000, 99);
    let img_id = alice
        .handle
        .send_file(conv, img_path.clone(), "the photo".into())
        .await
        .unwrap();
    // The app's copy is its own: the original may go at once.
    std::fs::remove_file(&img_path).unwrap();
    let doc_id = alice
        .handle
        .send_file_bytes(conv, "invoice.pdf".into(), doc.clone(), String::new())
        .await
        .unwrap();
    upload_until(&mut alice, img_id, |_, s| *s == UploadState::Sent).await;
    upload_until(&mut alice, doc_id, |_, s| *s == UploadState::Sent).await;

    let files = files_seen(&mut v, Duration::from_secs(3)).await;
    assert_eq!(files.len(), 2, "{files:?}");
    let (f_img, f_doc) = (&files[0], &files[1]);
    assert_eq!(
        (
            f_img.name.as_str(),
            f_img.mime.as_str(),
            f_img.size,
            f_img.image
        ),
        ("parcel.png", "image/png", img.len() as u64, true)
    );
    assert_eq!(
        (
            f_doc.name.as_str(),
            f_doc.mime.as_str(),
            f_doc.size,
            f_doc.image
        ),
        ("invoice.pdf", "application/pdf", doc.len() as u64, false)
    );
    let bodies: Vec<_> = alice
        .messages(conv)
        .into_iter()
        .filter(|m| m.attachment.is_some())
        .map(|m| (m.client_id, m.body))
        .collect();
    assert_eq!(
        bodies,
        [(img_id, "the photo".to_string()), (doc_id, String::new())]
    );

    // The visitor downloads both, and a second agent of the site fetches
    // them over its channel: the same bytes every way.
    for (f, want) in [(f_img, &img), (f_doc, &doc)] {
        let bytes = visitor_download(&srv, &v, &f.id).await;
        assert!(bytes == *want, "the visitor's copy of {} differs", f.name);
        let (bytes, mime) = fetched(&mut bob, &f.id, false).await;
        assert_eq!(mime, f.mime);
        assert!(bytes == *want, "bob's copy of {} differs", f.name);
    }
    let (thumb, mime) = fetched(&mut bob, &f_img.id, true).await;
    assert_eq!(mime, "image/png");
    assert!(thumb.starts_with(b"\x89PNG"), "not a PNG thumbnail");
    assert!(thumb.len() < img.len());
    // A second fetch comes from the cache, the same file.
    let (again, _) = fetched(&mut bob, &f_img.id, true).await;
    assert!(again == thumb);
    alice.shutdown().await;
    bob.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(png_and_pdf_reach_the_visitor_once_with_identical_bytes);

/// The link is reset mid-upload: the app reconnects and goes on from the
/// server's stored offset (every offset it hears is at least the one
/// before: it never starts over), and the visitor gets one message.
async fn a_cut_link_resumes_from_the_stored_offset(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let proxy = Proxy::start(srv.agent_addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core_at(&srv, &proxy.addr.to_string(), "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice).await;

    let doc = pdf(4_000_000, 7);
    let id = alice
        .handle
        .send_file_bytes(
            conv,
            "big.pdf".into(),
            doc.clone(),
            "over a bad link".into(),
        )
        .await
        .unwrap();
    let (before, _) = upload_until(&mut alice, id, |sent, _| sent >= 512 * 1024).await;
    proxy.blackhole(true);
    alice.not_live().await;
    proxy.heal();
    proxy.reset_all();
    upload_until(&mut alice, id, |_, s| *s == UploadState::Sent).await;
    let sent = progress_of(&alice, id);
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "an offset went back: {sent:?}"
    );
    assert!(sent.iter().any(|s| *s > before && *s < doc.len() as u64));
    assert!(proxy.connections_accepted() >= 2, "the link was never cut");

    let files = files_seen(&mut v, Duration::from_secs(3)).await;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].size, doc.len() as u64);
    let (bytes, _) = fetched(&mut alice, &files[0].id, false).await;
    assert!(bytes == doc, "the stored file differs");
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_cut_link_resumes_from_the_stored_offset);

/// Cancelled before it completes: nothing reaches the visitor and nothing
/// stays pending. After the send is queued it is too late to cancel.
async fn a_cancelled_upload_sends_nothing(backend: Backend) {
    // Slow uploads (the per-uploader rate) so the cancel lands mid-way.
    let srv =
        TestServer::start_with_on(backend, |c| c.attach.rate_bytes_per_sec = 256 * 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice).await;

    let doc = pdf(3_000_000, 5);
    let id = alice
        .handle
        .send_file_bytes(conv, "never.pdf".into(), doc, "never sent".into())
        .await
        .unwrap();
    upload_until(&mut alice, id, |sent, _| sent > 0).await;
    assert!(alice.handle.cancel_upload(id).await.unwrap());
    upload_until(&mut alice, id, |_, s| *s == UploadState::Cancelled).await;
    assert!(alice.handle.pending_uploads().unwrap().is_empty());
    assert!(!alice.handle.cancel_upload(id).await.unwrap());

    // A small file goes through; once sent, cancelling it is too late.
    let small = pdf(10_000, 6);
    let id2 = alice
        .handle
        .send_file_bytes(conv, "small.pdf".into(), small, String::new())
        .await
        .unwrap();
    upload_until(&mut alice, id2, |_, s| *s == UploadState::Sent).await;
    assert!(!alice.handle.cancel_upload(id2).await.unwrap());

    let files = files_seen(&mut v, Duration::from_secs(3)).await;
    let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["small.pdf"]);
    assert!(
        alice
            .messages(conv)
            .iter()
            .all(|m| m.client_id != id && m.body != "never sent")
    );
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(a_cancelled_upload_sends_nothing);

/// A file the server refuses for good becomes Failed with the server's
/// words, is never sent, and stays listed (across a restart) until the
/// user dismisses it.
async fn refused_files_fail_with_the_servers_message(backend: Backend) {
    let srv = TestServer::start_with_on(backend, |c| c.attach.max_size = 100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = core(&srv, "alice", &dir);
    alice.live().await;
    let (mut v, conv) = chat_with(&srv, &mut alice).await;

    let big = alice
        .handle
        .send_file_bytes(conv, "big.pdf".into(), pdf(100_001, 1), String::new())
        .await
        .unwrap();
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    let script = alice
        .handle
        .send_file_bytes(conv, "x.svg".into(), svg.to_vec(), String::new())
        .await
        .unwrap();
    let (_, s) = upload_until(&mut alice, big, |_, s| matches!(s, UploadState::Failed(_))).await;
    assert!(
        matches!(&s, UploadState::Failed(m) if m.contains("100001") && m.contains("100000")),
        "{s:?}"
    );
    let (_, s) = upload_until(&mut alice, script, |_, s| {
        matches!(s, UploadState::Failed(_))
    })
    .await;
    assert!(
        matches!(&s, UploadState::Failed(m) if m.contains("not an allowed type")),
        "{s:?}"
    );
    assert!(files_seen(&mut v, Duration::from_secs(2)).await.is_empty());

    alice.shutdown().await;
    let mut alice = core(&srv, "alice", &dir);
    let pending = alice.handle.pending_uploads().unwrap();
    assert_eq!(pending.len(), 2, "{pending:?}");
    assert!(
        pending
            .iter()
            .all(|p| matches!(p.state, UploadState::Failed(_)))
    );
    alice.live().await;
    assert!(files_seen(&mut v, Duration::from_secs(1)).await.is_empty());
    assert!(alice.handle.cancel_upload(big).await.unwrap());
    assert!(alice.handle.cancel_upload(script).await.unwrap());
    assert!(alice.handle.pending_uploads().unwrap().is_empty());
    alice.shutdown().await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(refused_files_fail_with_the_servers_message);

async fn ask(a: &mut RawAgent, q: Query) -> QueryResult {
    let request = q.request();
    a.send(&ClientMsg::Query(q)).await.unwrap();
    let m = a
        .recv_until(
            T,
            |m| matches!(m, ServerMsg::QueryResult { request: r, .. } if *r == request),
        )
        .await
        .unwrap();
    let ServerMsg::QueryResult { result, .. } = m else {
        unreachable!()
    };
    result
}

fn refused_with(r: &QueryResult, code: ErrorCode) -> bool {
    matches!(r, QueryResult::Refused(e) if e.code == code)
}

/// On the wire: only the agent serving a chat uploads into it; an upload
/// is its uploader's alone; unknown ids, other sites' files and bad
/// offsets are refused with clear codes.
async fn foreign_and_unknown_uploads_are_refused(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut alice = agent(&srv, "alice").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("hello").await.unwrap() else {
        panic!("no ack")
    };
    let mut bob = agent(&srv, "bob").await;
    let mut mallory = agent(&srv, "mallory").await;
    let create = |request, conversation| Query::UploadCreate {
        request,
        conversation,
        name: "a.pdf".into(),
        length: 10,
        mime_hint: "application/pdf".into(),
    };

    // Not bob's chat; not mallory's site; no such chat.
    let r = ask(&mut bob, create(1, conversation)).await;
    assert!(
        matches!(&r, QueryResult::Refused(e) if e.code == ErrorCode::Conflict && e.message.contains("not yours")),
        "{r:?}"
    );
    assert!(refused_with(
        &ask(&mut mallory, create(1, conversation)).await,
        ErrorCode::NotFound
    ));
    assert!(refused_with(
        &ask(&mut alice, create(2, 999_999)).await,
        ErrorCode::NotFound
    ));

    let QueryResult::Upload {
        id,
        offset: 0,
        length: 10,
    } = ask(&mut alice, create(3, conversation)).await
    else {
        panic!("alice may upload into her chat")
    };
    let write = |request, id: &str, offset, bytes: &[u8]| Query::UploadWrite {
        request,
        id: id.into(),
        offset,
        bytes: bytes.to_vec(),
    };
    // Someone else's upload and an unknown one look the same.
    let unknown = "0".repeat(32);
    let rs = [
        ask(&mut bob, write(4, &id, 0, b"%PDF-")).await,
        ask(
            &mut bob,
            Query::UploadOffset {
                request: 5,
                id: id.clone(),
            },
        )
        .await,
        ask(&mut mallory, write(4, &id, 0, b"%PDF-")).await,
        ask(&mut alice, write(6, &unknown, 0, b"%PDF-")).await,
        ask(
            &mut alice,
            Query::UploadOffset {
                request: 7,
                id: "../../etc".into(),
            },
        )
        .await,
    ];
    for r in rs {
        assert!(refused_with(&r, ErrorCode::NotFound), "{r:?}");
    }
    // An offset that skips ahead: refused, naming the stored offset.
    let r = ask(&mut alice, write(8, &id, 3, b"%PDF-")).await;
    assert!(
        matches!(&r, QueryResult::Refused(e) if e.code == ErrorCode::Conflict && e.message.contains("offset 0")),
        "{r:?}"
    );
    let r = ask(&mut alice, write(9, &id, 0, &vec![0u8; 256 * 1024 + 1])).await;
    assert!(refused_with(&r, ErrorCode::TooLarge), "{r:?}");
    let r = ask(&mut alice, write(10, &id, 0, b"%PDF-1.7 and more")).await;
    assert!(refused_with(&r, ErrorCode::BadRequest), "{r:?}");
    let r = ask(&mut alice, write(11, &id, 0, b"%PDF-")).await;
    assert!(matches!(r, QueryResult::Upload { offset: 5, .. }), "{r:?}");
    let r = ask(&mut alice, write(12, &id, 5, b"1.7 x")).await;
    let QueryResult::UploadDone {
        offset: 10,
        attachment,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(attachment.mime, "application/pdf");
    // A retried last write and the offset both say it is done.
    let r = ask(&mut alice, write(13, &id, 5, b"1.7 x")).await;
    assert!(matches!(r, QueryResult::UploadDone { .. }), "{r:?}");
    let r = ask(
        &mut alice,
        Query::UploadOffset {
            request: 14,
            id: id.clone(),
        },
    )
    .await;
    assert!(matches!(r, QueryResult::UploadDone { .. }), "{r:?}");

    // Reading: any agent of the site; nobody elsewhere.
    let read = |request, thumb| Query::AttachmentBytes {
        request,
        id: id.clone(),
        thumb,
        offset: 2,
        max: 1_000_000,
    };
    let r = ask(&mut bob, read(15, false)).await;
    assert!(
        matches!(&r, QueryResult::AttachmentBytes { total: 10, offset: 2, bytes, mime }
            if bytes.as_slice() == b"DF-1.7 x" && mime == "application/pdf"),
        "{r:?}"
    );
    assert!(refused_with(
        &ask(&mut bob, read(16, true)).await,
        ErrorCode::NotFound
    ));
    assert!(refused_with(
        &ask(&mut mallory, read(17, false)).await,
        ErrorCode::NotFound
    ));
    srv.stop().await;
}
holdfast_tests::on_both_backends!(foreign_and_unknown_uploads_are_refused);
