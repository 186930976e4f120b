//! Hostile input, part two: floods of connections from one address, a
//! half-open (slowloris-style) WebSocket, script injection in every text
//! field, and a full disk under the server's data dir. Each case checks what
//! the sender gets back and that a bystander is unaffected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{Action, ClientMsg, Command, Event, Outcome, ServerMsg, WireError};
use holdfast_protocol::codec::FrameCodec;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::ClientHandshake;
use holdfast_protocol::visitor::{PageInfo, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::flows::{T, agent, body, run, wait_body};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, PASSWORD, TestServer, fast_config, seed};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello, new_id};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Framed;

/// A TCP connection from another loopback address (another "user").
async fn connect_from(ip: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((ip, 0))).unwrap();
    s.connect(to).await.unwrap()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_json(ws: &mut Ws, m: &VisitorIn) {
    ws.send(Message::Text(serde_json::to_string(m).unwrap().into()))
        .await
        .unwrap();
}

async fn ws_until(ws: &mut Ws, pred: impl Fn(&VisitorOut) -> bool) -> VisitorOut {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out")
            .expect("closed")
            .unwrap();
        if let Message::Text(t) = m {
            let out: VisitorOut = serde_json::from_str(&t).unwrap();
            if pred(&out) {
                return out;
            }
        }
    }
}

/// A visitor from `ip` that says `text` and gets it acked.
async fn visitor_from(ip: [u8; 4], http: SocketAddr, text: &str) -> Ws {
    let s = connect_from(ip, http).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{http}/v1/visitor/ws"), s)
        .await
        .unwrap();
    ws_json(&mut ws, &hello("acme", None, None, "https://bystander/")).await;
    ws_until(&mut ws, |m| matches!(m, VisitorOut::Welcome { .. })).await;
    let id = new_id();
    ws_json(
        &mut ws,
        &VisitorIn::Send {
            id,
            body: text.into(),
            attachment: None,
        },
    )
    .await;
    ws_until(
        &mut ws,
        |m| matches!(m, VisitorOut::Ack { id: a, .. } if *a == id),
    )
    .await;
    ws
}

/// Log in as `user` from another loopback address.
async fn agent_from(ip: [u8; 4], addr: SocketAddr, user: &str) -> RawAgent {
    let stream = connect_from(ip, addr).await;
    let mut io = Framed::new(stream, FrameCodec::default());
    let mut secret = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
    let hs = ClientHandshake::new(secret);
    io.send(Bytes::copy_from_slice(hs.hello())).await.unwrap();
    let reply = tokio::time::timeout(T, io.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s = hs.handle_reply(&reply).unwrap();
    let mut a = RawAgent {
        io,
        sealer: s.sealer,
        opener: s.opener,
        server_static: s.server_static,
        next_cmd: 1,
    };
    a.send(&RawAgent::login_msg(user, PASSWORD, new_id(), None))
        .await
        .unwrap();
    let ok = a.recv(T).await.unwrap().unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "{ok:?}");
    a
}

/// True when the peer closes `s` within `limit` (EOF or reset).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn a_connection_flood_from_one_address_is_capped_and_others_still_connect(backend: Backend) {
    let srv = TestServer::start_with_on(backend, |c| {
        c.visitor.max_ws_per_ip = 20;
        c.agent_max_per_ip = 5;
    })
    .await;
    // A bystander conversation that exists before the flood.
    let mut bob = agent(&srv, "bob").await;
    let mut by = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = by.say_acked("before the flood").await.unwrap()
    else {
        panic!()
    };
    wait_body(&mut bob, "before the flood").await;

    // 60 WebSocket upgrades from 127.0.0.1: the first 18 more fit under the
    // cap of 20 (the bystander holds one), the rest get 429.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        match tokio_tungstenite::connect_async(format!("ws://{}/v1/visitor/ws", srv.http())).await {
            Ok((ws, _)) => held.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!(
        "websocket flood: {} held, {refused} refused with 429",
        held.len()
    );
    assert_eq!(held.len(), 19);
    assert_eq!(refused, 41);

    // 30 raw TCP connections to the agent port from 127.0.0.1: bob holds
    // one of the 5 slots, 4 more are held, the rest are closed at once.
    let mut raw = Vec::new();
    for _ in 0..30 {
        raw.push(TcpStream::connect(srv.agent_addr()).await.unwrap());
    }
    let mut cut = 0;
    for s in &mut raw {
        if closed_within(s, Duration::from_millis(300)).await {
            cut += 1;
        }
    }
    println!(
        "agent-port flood: {} held, {cut} closed at once",
        raw.len() - cut
    );
    assert_eq!(cut, 26);

    // Bystanders: the existing conversation works both ways, and users on
    // other addresses connect and log in during the flood.
    by.say_acked("during the flood").await.unwrap();
    wait_body(&mut bob, "during the flood").await;
    let o = run(
        &mut bob,
        Action::Send {
            conversation,
            body: "bob still here".into(),
            attachment: None,
        },
    )
    .await;
    assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    by.wait_message("bob still here").await.unwrap();
    let _v2 = visitor_from([127, 0, 0, 2], srv.http(), "from another address").await;
    wait_body(&mut bob, "from another address").await;
    let mut alice = agent_from([127, 0, 0, 3], srv.agent_addr(), "alice").await;
    alice
        .recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();

    // When the flood ends its slots come back.
    drop(held);
    drop(raw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    again.say_acked("after the flood").await.unwrap();
    srv.stop().await;
}
holdfast_tests::on_both_backends!(
    a_connection_flood_from_one_address_is_capped_and_others_still_connect
);

async fn half_open_websockets_are_closed_after_the_hello_timeout(backend: Backend) {
    let srv = TestServer::start_with_on(backend, |c| {
        c.visitor.hello_timeout = Duration::from_millis(800);
        c.visitor.max_ws_per_ip = 30;
    })
    .await;
    let mut bob = agent(&srv, "bob").await;
    // 25 upgrades that never say hello (a slowloris on the WebSocket), plus
    // 5 raw connections that stop halfway through the upgrade request.
    let mut silent = Vec::new();
    for _ in 0..25 {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/visitor/ws", srv.http()))
                .await
                .unwrap();
        silent.push(ws);
    }
    let mut partial = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(srv.http()).await.unwrap();
        s.write_all(b"GET /v1/visitor/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        partial.push(s);
    }
    // A bystander is served normally meanwhile.
    let _v = visitor_from([127, 0, 0, 2], srv.http(), "while they hang").await;
    wait_body(&mut bob, "while they hang").await;

    let start = Instant::now();
    let mut closed = 0;
    for ws in &mut silent {
        let r = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match r {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => closed += 1,
            other => panic!("silent socket got {other:?}"),
        }
    }
    println!(
        "{closed} silent websockets closed within {:.2}s of the 0.8 s hello timeout",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(closed, 25);
    // Their per-address slots are free again: 25 more fit.
    for _ in 0..25 {
        WsVisitor::connect(srv.http(), "acme").await.unwrap();
    }
    // A half-sent upgrade request is not a WebSocket yet: the HTTP server
    // closes it once its headers are overdue (the same 0.8 s here).
    let mut still_open = 0;
    for s in &mut partial {
        if !closed_within(s, Duration::from_secs(5)).await {
            still_open += 1;
        }
    }
    println!(
        "partial upgrade requests still open after {:.1}s: {still_open}",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(still_open, 0, "half-sent requests must not hold sockets");
    let _v3 = visitor_from([127, 0, 0, 2], srv.http(), "still served").await;
    wait_body(&mut bob, "still served").await;
    srv.stop().await;
}
holdfast_tests::on_both_backends!(half_open_websockets_are_closed_after_the_hello_timeout);

const INJECTIONS: [&str; 4] = [
    "<script>alert('x')</script>",
    "\"><img src=x onerror=alert(1)>",
    "javascript:alert(document.cookie)",
    "{{constructor.constructor('alert(1)')()}} ${alert(1)} </textarea><svg/onload=alert(1)>",
];

async fn script_injection_in_every_text_field_arrives_as_inert_text(backend: Backend) {
    let srv = TestServer::start_on(backend).await;
    let mut bob = agent(&srv, "bob").await;
    for (i, evil) in INJECTIONS.iter().enumerate() {
        let url = format!("https://shop.example/?q={evil}");
        let mut h = hello("acme", None, None, &url);
        if let VisitorIn::Hello {
            page, user_agent, ..
        } = &mut h
        {
            *page = Some(PageInfo {
                url: url.clone(),
                title: format!("title {evil}"),
                referrer: Some(format!("https://ref.example/{evil}")),
            });
            *user_agent = Some(format!("UA {evil}"));
        }
        let mut v = WsVisitor::connect_with(srv.http(), h).await.unwrap();
        v.send_json(&VisitorIn::Identify {
            id: format!("id-{i}-{evil}"),
            name: Some(format!("name {evil}")),
            email: Some(format!("{evil}@example.com")),
            hash: None,
            attrs: [(
                "plan".to_string(),
                serde_json::json!(format!("attr {evil}")),
            )]
            .into_iter()
            .collect(),
        })
        .await
        .unwrap();
        let msg = format!("body {evil}");
        let VisitorOut::Ack { conversation, .. } = v.say_acked(&msg).await.unwrap() else {
            panic!()
        };
        // The agent gets every field back byte for byte: data, not markup.
        let m = bob
            .recv_until(T, |m| body(m) == Some(msg.as_str()))
            .await
            .unwrap();
        assert_eq!(body(&m), Some(msg.as_str()));
        let info = bob
            .recv_visitor(T, |x| x.id == v.visitor && x.name.is_some())
            .await
            .unwrap();
        assert_eq!(info.name.as_deref(), Some(format!("name {evil}").as_str()));
        assert_eq!(
            info.email.as_deref(),
            Some(format!("{evil}@example.com").as_str())
        );
        assert!(
            info.attrs
                .contains(&("plan".into(), format!("attr {evil}"))),
            "{info:?}"
        );
        let page = info.trail.last().unwrap();
        assert_eq!(page.url, url);
        assert_eq!(page.title, format!("title {evil}"));
        assert_eq!(
            page.referrer.as_deref(),
            Some(format!("https://ref.example/{evil}").as_str())
        );
        // An agent reply carrying markup reaches the visitor as the same
        // JSON string.
        let _ = run(&mut bob, Action::Accept { conversation }).await;
        let reply = format!("reply {evil}");
        let o = run(
            &mut bob,
            Action::Send {
                conversation,
                body: reply.clone(),
                attachment: None,
            },
        )
        .await;
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
        v.wait_message(&reply).await.unwrap();
        let o = run(&mut bob, Action::Close { conversation }).await;
        assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
    }
    // Long-poll answers are JSON, never HTML, whatever they carry.
    let lp = LpVisitor::connect(srv.http(), "acme").await.unwrap();
    let r = lp.say(&format!("lp {}", INJECTIONS[0])).await.unwrap();
    assert!(matches!(r, VisitorOut::Ack { .. }), "{r:?}");
    let mut s = TcpStream::connect(srv.http()).await.unwrap();
    let req = format!(
        "GET /v1/visitor/poll?token={}&after=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        lp.token
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let head = String::from_utf8_lossy(&resp).to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    // The markup travels inside a JSON string, which a browser never
    // renders; the widget then shows it with textContent (see
    // widget_browser::hostile_markup_shows_as_literal_text).
    assert!(head.contains(r#""body":"lp <script>"#), "{head}");
    srv.stop().await;
}
holdfast_tests::on_both_backends!(script_injection_in_every_text_field_arrives_as_inert_text);

// ---------------------------------------------------------------- full disk

/// A small tmpfs mounted on a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    /// [`Self::mount`], or `None` with a note where mounting is not
    /// allowed (it needs CAP_SYS_ADMIN). In CI (`CI=true`), which runs as
    /// root and mounts, not mounting fails the test rather than letting it
    /// pass without having run.
    fn mount_or_skip(size: &str) -> Option<Self> {
        let disk = Self::mount(size);
        if disk.is_none() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but a tmpfs of {size} cannot be mounted: the full-disk test would not run"
            );
            println!("SKIPPED: cannot mount a tmpfs here (not root?)");
        }
        disk
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write zeros into `filler` until the filesystem refuses.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

// SQLite only: the disk that fills is the one under the SQLite file in the
// data dir (and the check is SQLite's integrity_check); PostgreSQL keeps its
// data elsewhere, and its own outage is store_pg's kill-and-restart test.
#[tokio::test]
async fn a_full_disk_gives_clear_errors_and_no_acks_then_recovers() {
    holdfast_tests::init_logs();
    let Some(disk) = SmallDisk::mount_or_skip("8m") else {
        return;
    };
    let data = disk.path().join("data");
    seed(&data);
    let mut cfg = fast_config(&data);
    // This test sends as fast as the store answers; the per-visitor rate
    // limit is covered elsewhere.
    cfg.visitor.msg_rate = 1e6;
    cfg.visitor.msg_burst = 1e6;
    let server = holdfast_server::start(cfg).await.unwrap();
    let srv = TestServer {
        dir: tempfile::tempdir().unwrap(),
        server: Some(server),
        site_key: "acme".into(),
        database: None,
    };
    let mut bob = agent(&srv, "bob").await;
    let mut v = WsVisitor::connect(srv.http(), "acme").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = v.say_acked("before full").await.unwrap() else {
        panic!()
    };
    wait_body(&mut bob, "before full").await;
    let mut acked_before = vec!["before full".to_string()];
    for i in 0..20 {
        let b = format!("acked {i}");
        v.say_acked(&b).await.unwrap();
        acked_before.push(b);
    }

    let filler = disk.fill();
    // Keep sending until the store refuses; every answer is either an ack
    // (then it is durable) or a clear Unavailable error (then nothing is
    // stored), never silence.
    let mut refused_id = None;
    for i in 0..2000 {
        let b = format!("while full {i}");
        let id = v.say(&b).await.unwrap();
        let m = v
            .wait_for(T, |m| match m {
                VisitorOut::Ack { id: a, .. } | VisitorOut::Error { id: Some(a), .. } => *a == id,
                _ => false,
            })
            .await
            .unwrap();
        match m {
            VisitorOut::Ack { .. } => acked_before.push(b),
            VisitorOut::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::Unavailable, "{message}");
                println!("visitor send {i} on a full disk: {code}: {message}");
                refused_id = Some((id, b));
                break;
            }
            _ => unreachable!(),
        }
    }
    let (refused_id, refused_body) = refused_id.expect("the disk never filled");
    // The agent side: a command gets Unavailable, no ack for its seq.
    let (seq, cmd_id) = bob
        .command(Action::Send {
            conversation,
            body: "agent while full".into(),
            attachment: None,
        })
        .await
        .unwrap();
    let m = bob
        .recv_until(T, |m| {
            matches!(m, ServerMsg::Error(_)) || matches!(m, ServerMsg::Ack(b) if b.up_to >= seq)
        })
        .await
        .unwrap();
    let ServerMsg::Error(WireError { code, message, .. }) = &m else {
        panic!("acked on a full disk: {m:?}")
    };
    assert_eq!(*code, ErrorCode::Unavailable);
    println!("agent command on a full disk: {code}: {message}");
    // Reads still work meanwhile: a resume replays what was stored.
    let mut reader = WsVisitor::connect_with(
        srv.http(),
        hello("acme", Some(v.token.clone()), Some(0), "https://x/"),
    )
    .await;
    if let Ok(r) = &mut reader {
        r.wait_message("before full").await.unwrap();
    }
    println!(
        "resume while full: {}",
        if reader.is_ok() { "served" } else { "refused" }
    );

    // Space returns: the same message id and the same command go through,
    // exactly once each.
    std::fs::remove_file(filler).unwrap();
    let mut resent = None;
    for _ in 0..50 {
        v.send_json(&VisitorIn::Send {
            id: refused_id,
            body: refused_body.clone(),
            attachment: None,
        })
        .await
        .unwrap();
        let m = v
            .wait_for(T, |m| match m {
                VisitorOut::Ack { id: a, .. } | VisitorOut::Error { id: Some(a), .. } => {
                    *a == refused_id
                }
                _ => false,
            })
            .await
            .unwrap();
        if matches!(m, VisitorOut::Ack { .. }) {
            resent = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resent.is_some(), "never recovered");
    let mut bob2 = RawAgent::login(srv.agent_addr(), "bob", PASSWORD)
        .await
        .unwrap()
        .0;
    bob2.next_cmd = 1;
    bob2.send(&ClientMsg::Command(Command {
        id: cmd_id,
        seq: 1,
        action: Action::Send {
            conversation,
            body: "agent while full".into(),
            attachment: None,
        },
    }))
    .await
    .unwrap();
    bob2.recv_until(T, |m| matches!(m, ServerMsg::Ack(b) if b.up_to >= 1))
        .await
        .unwrap();
    v.wait_message("agent while full").await.unwrap();

    // Nothing acked was lost, nothing refused was stored twice, and the
    // database is intact.
    let mut check = WsVisitor::connect_with(
        srv.http(),
        hello("acme", Some(v.token.clone()), Some(0), "https://x/"),
    )
    .await
    .unwrap();
    check.wait_message("agent while full").await.unwrap();
    let bodies = check.bodies();
    for b in &acked_before {
        assert_eq!(bodies.iter().filter(|x| *x == b).count(), 1, "{b}");
    }
    assert_eq!(bodies.iter().filter(|x| **x == refused_body).count(), 1);
    assert_eq!(
        bodies.iter().filter(|x| *x == "agent while full").count(),
        1
    );
    let integrity: String = srv
        .running()
        .ctx
        .reads
        .run_blocking(|c| c.query_one("PRAGMA integrity_check", &[])?.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let events: Vec<_> = check
        .events
        .iter()
        .filter(|(_, e)| matches!(e, VisitorEvent::Message(_)))
        .collect();
    println!(
        "after recovery: {} messages replayed, integrity_check = {integrity}",
        events.len()
    );
    let _ = Event::Message;
    srv.stop().await;
}

/// Attachments on a full disk: a chunk that cannot be stored is 507 with a
/// clear message and acknowledges nothing; the offset acknowledged before
/// stays, a finished file stays whole and served, and once space returns
/// the upload resumes from its acknowledged offset and is carried by
/// exactly one message.
#[tokio::test]
async fn a_full_disk_refuses_upload_chunks_clearly_and_loses_no_acknowledged_byte() {
    use holdfast_tests::attach::{
        create, get, head, json_of, link, messages_with, offset, patch, pdf,
    };
    holdfast_tests::init_logs();
    let Some(disk) = SmallDisk::mount_or_skip("24m") else {
        return;
    };
    let data = disk.path().join("data");
    seed(&data);
    let server = holdfast_server::start(fast_config(&data)).await.unwrap();
    let srv = TestServer {
        dir: tempfile::tempdir().unwrap(),
        server: Some(server),
        site_key: "acme".into(),
        database: None,
    };
    let http = srv.http();
    let mut bob = agent(&srv, "bob").await;
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    v.say_acked("my invoice follows").await.unwrap();
    let t = v.token.clone();

    // A finished file, then half of a 6 MB one, both acknowledged.
    let small = pdf(50_000, 1);
    let c = create(http, &t, small.len() as u64, "small.pdf").await;
    let small_id = json_of(&c)["id"].as_str().unwrap().to_string();
    assert_eq!(patch(http, &t, &small_id, 0, &small).await.status, 200);
    let big = pdf(6 * 1024 * 1024, 2);
    let c = create(http, &t, big.len() as u64, "big.pdf").await;
    let big_id = json_of(&c)["id"].as_str().unwrap().to_string();
    let half = 3 * 1024 * 1024;
    let r = patch(http, &t, &big_id, 0, &big[..half]).await;
    assert_eq!((r.status, offset(&r)), (204, half as u64));

    let filler = disk.fill();
    let r = patch(http, &t, &big_id, half as u64, &big[half..]).await;
    assert_eq!(r.status, 507, "{r:?}");
    let msg = json_of(&r)["message"].as_str().unwrap().to_string();
    assert!(msg.contains("disk is full"), "{msg}");
    println!("a chunk on a full disk: {} {msg}", r.status);
    // Nothing of the refused chunk was acknowledged, nothing before it lost.
    let h = head(http, &t, &big_id).await;
    assert_eq!((h.status, offset(&h)), (200, half as u64));
    let l = link(http, &t, &small_id).await;
    let got = get(http, l["url"].as_str().unwrap(), None).await;
    assert_eq!((got.status, got.body == small), (200, true));

    // Space returns: resume from the acknowledged offset, not from zero.
    std::fs::remove_file(filler).unwrap();
    let at = offset(&head(http, &t, &big_id).await);
    assert_eq!(at, half as u64);
    let r = patch(http, &t, &big_id, at, &big[half..]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = new_id();
    let send = serde_json::json!({"t": "send", "id": id, "body": "", "attachment": big_id});
    for _ in 0..2 {
        // Sent twice (a lost ack): stored once.
        v.send_raw(&send.to_string()).await.unwrap();
        let m = v
            .wait_for(T, |m| match m {
                VisitorOut::Ack { id: a, .. } | VisitorOut::Error { id: Some(a), .. } => *a == id,
                _ => false,
            })
            .await
            .unwrap();
        assert!(matches!(m, VisitorOut::Ack { .. }), "{m:?}");
    }
    let carried = messages_with(&mut bob, &big_id, Duration::from_secs(2)).await;
    assert_eq!(carried.len(), 1, "exactly one message carries the file");
    let l = link(http, &t, &big_id).await;
    let got = get(http, l["url"].as_str().unwrap(), None).await;
    assert_eq!(got.status, 200);
    assert!(got.body == big, "the whole file, byte for byte");
    srv.stop().await;
}
