//! Hostile HTTP connections: silent sockets past the descriptor limit, a
//! bare HTTP/2 preface, slow request bodies, slowloris headers and idle
//! keep-alives, and one address opening thousands of connections.
//!
//! Each test runs the real server binary with its descriptor limit lowered
//! (`ulimit -n`), attacks from other loopback addresses (127.0.0.2 and up)
//! so the per-address cap does not simply shield the bystander on
//! 127.0.0.1, and keeps a bystander visitor chatting with an agent: every
//! ack, the visitor's and the agent's, must come within 1 s throughout.
//!
//! The timers are short here (see [`TIMERS`]) so the suite stays fast; the
//! defaults are in `HttpConfig`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use holdfast_protocol::agent::{Action, LiveEvent, Outcome, ServerMsg};
use holdfast_protocol::visitor::{LongPollResponse, VisitorOut};
use holdfast_tests::flows::{T, run, wait_body};
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{Backend, PASSWORD, ServerProcess, seed_on};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello, http_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// The server's timers in these tests, as `--config` keys.
const TIMERS: [(&str, &str); 8] = [
    // Scripted agents talk only when the test makes them.
    ("heartbeat_ms", "500"),
    ("dead_after_ms", "60000"),
    ("http_detect_timeout_ms", "1000"),
    ("http_header_timeout_ms", "1000"),
    ("http_body_timeout_ms", "1500"),
    ("http_idle_timeout_ms", "1500"),
    ("http2_keepalive_interval_ms", "1000"),
    ("http2_keepalive_timeout_ms", "1000"),
];

/// Every ack the bystander gets must come within this.
const ACK_LIMIT: Duration = Duration::from_secs(1);

/// Slack for a loaded two-core machine on top of a server timer, when
/// checking that a socket was closed "by" that timer.
const MARGIN: Duration = Duration::from_millis(1500);

/// The server binary with a lowered descriptor limit and short timers.
struct Server {
    p: ServerProcess,
    _dir: tempfile::TempDir,
    /// These tests each push a server to its limits; one at a time keeps
    /// their timings about the attack, not about each other.
    _serial: std::fs::File,
}

fn serial() -> std::fs::File {
    let path = std::env::temp_dir().join("holdfast-hostile-http.lock");
    let f = std::fs::File::create(path).unwrap();
    f.lock().unwrap();
    f
}

fn start(backend: Backend, nofile: u64, overrides: &[(&str, &str)]) -> Server {
    let serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let database = backend.fresh_database();
    seed_on(dir.path(), database.as_deref());
    let mut keys: Vec<(&str, &str)> = TIMERS.to_vec();
    for (k, v) in overrides {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v,
            None => keys.push((k, v)),
        }
    }
    let toml: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, toml).unwrap();
    let p = ServerProcess::start_on(
        dir.path(),
        database.as_deref(),
        &["--config", cfg.to_str().unwrap()],
        Some(nofile),
    );
    Server {
        p,
        _dir: dir,
        _serial: serial,
    }
}

/// Log in and read up to live traffic, as `flows::agent` does in-process.
async fn agent_login(addr: SocketAddr, name: &str) -> RawAgent {
    let (mut a, ok) = timeout(T, RawAgent::login(addr, name, PASSWORD))
        .await
        .expect("agent login timed out")
        .expect("agent login failed");
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "login failed: {ok:?}");
    a.recv_until(T, |m| matches!(m, ServerMsg::Snapshot(_)))
        .await
        .unwrap();
    a.recv_until(T, |m| matches!(m, ServerMsg::Live(LiveEvent::Visitors(_))))
        .await
        .unwrap();
    a
}

/// A visitor and an agent chatting in a loop while the attack runs.
struct Bystander {
    stop: Arc<AtomicBool>,
    /// Acks so far: `finish` lets it chat until it has enough to judge.
    acked: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<Vec<Duration>>,
}

/// The acks a bystander needs before it is judged: three round trips.
const BYSTANDER_ACKS: usize = 6;

impl Bystander {
    async fn start(srv: &ServerProcess) -> Self {
        let mut agent = agent_login(srv.agent, "bob").await;
        let mut visitor = WsVisitor::connect(srv.http, "acme").await.unwrap();
        let VisitorOut::Ack { conversation, .. } =
            visitor.say_acked("bystander here").await.unwrap()
        else {
            panic!("bystander's first message not acked")
        };
        wait_body(&mut agent, "bystander here").await;
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = acked.clone();
        let task = tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("bystander {n}");
                let t = Instant::now();
                match timeout(Duration::from_secs(5), visitor.say_acked(&text)).await {
                    Ok(Ok(VisitorOut::Ack { .. })) => acks.push(t.elapsed()),
                    other => panic!("bystander message {n} not acked: {other:?}"),
                }
                count.fetch_add(1, Ordering::Relaxed);
                wait_body(&mut agent, &text).await;
                let reply = format!("reply {n}");
                let t = Instant::now();
                let o = run(
                    &mut agent,
                    Action::Send {
                        conversation,
                        body: reply.clone(),
                        attachment: None,
                    },
                )
                .await;
                assert!(matches!(o, Outcome::Done { .. }), "{o:?}");
                acks.push(t.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
                visitor.wait_message(&reply).await.unwrap();
                // Under the visitor's 5 messages a second.
                sleep(Duration::from_millis(250)).await;
            }
            acks
        });
        Self { stop, acked, task }
    }

    /// Let it chat until it has [`BYSTANDER_ACKS`] acks (an attack the
    /// server shrugs off at once is over before three round trips), then
    /// stop; every ack must have come within [`ACK_LIMIT`].
    async fn finish(self, attack: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.load(Ordering::Relaxed) < BYSTANDER_ACKS
            && !self.task.is_finished()
            && Instant::now() < deadline
        {
            sleep(Duration::from_millis(50)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut acks = self.task.await.expect("the bystander conversation failed");
        acks.sort();
        assert!(
            acks.len() >= BYSTANDER_ACKS,
            "the bystander barely chatted: {acks:?}"
        );
        let p99 = acks[(acks.len() * 99).div_ceil(100) - 1];
        let p50 = acks[acks.len() / 2];
        let max = acks[acks.len() - 1];
        println!(
            "{attack}: bystander {} acks, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            acks.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        assert!(p99 <= ACK_LIMIT, "{attack}: bystander p99 {p99:?}");
        assert!(max <= ACK_LIMIT, "{attack}: a bystander ack took {max:?}");
    }
}

/// A TCP connection from `ip`; `None` when it cannot be made within 2 s
/// (a server out of descriptors leaves connections in its backlog).
async fn connect_from(ip: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::from((ip, 0))).ok()?;
    timeout(Duration::from_secs(2), s.connect(to))
        .await
        .ok()?
        .ok()
}

/// `n` connections spread over `ips`, made in parallel; each sends `first`.
async fn open_many(
    n: usize,
    ips: &[[u8; 4]],
    to: SocketAddr,
    first: &'static [u8],
) -> (Vec<(TcpStream, Instant)>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let made = join_all(chunk.iter().map(|i| async move {
            let mut s = connect_from(ips[i % ips.len()], to).await?;
            let at = Instant::now();
            if !first.is_empty() {
                s.write_all(first).await.ok()?;
            }
            Some((s, at))
        }))
        .await;
        for m in made {
            match m {
                Some(s) => out.push(s),
                None => failed += 1,
            }
        }
    }
    (out, failed)
}

/// Hold `s` (writing `trickle` a byte at a time every 200 ms, if given)
/// until the server closes it; how long after `at` that was, or `None` if
/// it was still open after `limit`.
async fn until_closed(
    mut s: TcpStream,
    at: Instant,
    trickle: Option<&'static [u8]>,
    limit: Duration,
) -> Option<Duration> {
    let deadline = at + limit;
    let mut buf = [0u8; 1024];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut next = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return None,
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(at.elapsed()),
                Ok(_) => {}
            },
            _ = tick.tick(), if trickle.is_some() => {
                let t = trickle.unwrap_or_default();
                if s.write_all(&t[next % t.len()..next % t.len() + 1]).await.is_err() {
                    return Some(at.elapsed());
                }
                next += 1;
            }
        }
    }
}

fn hold_all(
    socks: Vec<(TcpStream, Instant)>,
    trickle: Option<&'static [u8]>,
    limit: Duration,
) -> Vec<JoinHandle<Option<Duration>>> {
    socks
        .into_iter()
        .map(|(s, at)| tokio::spawn(until_closed(s, at, trickle, limit)))
        .collect()
}

/// How long the held sockets took to be closed: (closed times sorted,
/// still open).
async fn close_times(held: Vec<JoinHandle<Option<Duration>>>) -> (Vec<Duration>, usize) {
    let mut closed = Vec::new();
    let mut open = 0;
    for r in join_all(held).await {
        match r.unwrap() {
            Some(d) => closed.push(d),
            None => open += 1,
        }
    }
    closed.sort();
    (closed, open)
}

/// Split connections into those the server still holds open (a read that
/// neither ends nor fails within 300 ms) and a count of the closed.
async fn still_open(socks: Vec<(TcpStream, Instant)>) -> (Vec<TcpStream>, usize) {
    let checked = join_all(socks.into_iter().map(|(mut s, _)| async move {
        let mut buf = [0u8; 64];
        let open = timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_err();
        (s, open)
    }))
    .await;
    let total = checked.len();
    let open: Vec<TcpStream> = checked
        .into_iter()
        .filter_map(|(s, open)| open.then_some(s))
        .collect();
    let closed = total - open.len();
    (open, closed)
}

fn summary(what: &str, closed: &[Duration], open: usize) -> Duration {
    let max = closed.last().copied().unwrap_or_default();
    let p50 = closed.get(closed.len() / 2).copied().unwrap_or_default();
    println!(
        "{what}: {} closed (median {:.2} s, slowest {:.2} s), {open} still open",
        closed.len(),
        p50.as_secs_f64(),
        max.as_secs_f64()
    );
    max
}

/// GET a path; status and body, or an error after 2 s.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    timeout(
        Duration::from_secs(2),
        http_request(addr, "GET", path, None),
    )
    .await
    .map_err(|_| anyhow::anyhow!("GET {path} timed out"))?
}

/// One counter or gauge from the admin listener's `/metrics` (all of the
/// ones used here count whole things).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
async fn metric(srv: &ServerProcess, name: &str) -> u64 {
    let v = holdfast_tests::server::metric(srv.admin, name)
        .await
        .unwrap_or_else(|| panic!("no metric {name}"));
    v as u64
}

/// A new visitor from `ip` connects over WebSocket and gets `text` acked.
async fn visitor_from(ip: [u8; 4], http: SocketAddr, text: &str) -> WsVisitor {
    let mut v = timeout(
        T,
        WsVisitor::connect_from(
            http,
            IpAddr::from(ip),
            hello("acme", None, None, "https://new-visitor/"),
        ),
    )
    .await
    .expect("a new visitor timed out")
    .expect("a new visitor could not connect");
    let acked = v.say_acked(text).await.unwrap();
    assert!(matches!(acked, VisitorOut::Ack { .. }), "{acked:?}");
    v
}

fn addrs(from: u8, to: u8) -> Vec<[u8; 4]> {
    (from..=to).map(|i| [127, 0, 0, i]).collect()
}

async fn silent_sockets_beyond_the_descriptor_limit_are_cut_and_both_ports_stay_up(
    backend: Backend,
) {
    // 512 descriptors; HTTP may hold 512 - 128 = 384 connections.
    let srv = start(backend, 512, &[("http_fd_reserve", "128")]);
    let by = Bystander::start(&srv.p).await;

    // 600 silent sockets at once, then 100 more every 200 ms: well past
    // the server's 512 descriptors within one detection timeout.
    let attackers = addrs(2, 8);
    let (first, mut failed) = open_many(600, &attackers, srv.p.http, b"").await;
    let mut held = hold_all(first, None, Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (stop, http, attackers) = (stop.clone(), srv.p.http, attackers.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                let (socks, f) = open_many(100, &attackers, http, b"").await;
                failed += f;
                held.extend(hold_all(socks, None, Duration::from_secs(10)));
                sleep(Duration::from_millis(200)).await;
            }
            (held, failed)
        })
    };
    sleep(Duration::from_millis(500)).await;

    // During the flood: /healthz answers, an agent logs in, and a new
    // visitor connects and chats.
    let t = Instant::now();
    let health = get(srv.p.http, "/healthz").await;
    println!(
        "healthz during the flood: {:?} in {:.1} ms",
        health.as_ref().map(|r| r.0),
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(health.unwrap().0, 200);
    let t = Instant::now();
    let _alice = agent_login(srv.p.agent, "alice").await;
    println!(
        "agent login during the flood: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let _new = visitor_from([127, 0, 0, 1], srv.p.http, "new during the flood").await;
    println!(
        "new visitor connected and acked during the flood: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (more, f) = flood.await.unwrap();
    failed += f;
    let opened = held.len() + more.len();
    held.extend(more);

    // Every silent socket is closed, by the 1 s detection timer or sooner
    // (to make room), and none is left.
    let (closed, open) = close_times(held).await;
    println!("silent sockets opened: {opened}, connects that failed: {failed}");
    let slowest = summary("silent sockets", &closed, open);
    assert_eq!(open, 0, "silent sockets still open after 10 s");
    assert!(slowest <= Duration::from_secs(1) + MARGIN, "{slowest:?}");
    assert!(
        failed * 20 <= opened,
        "{failed} of {opened} connects failed"
    );
    let detect = metric(&srv.p, "holdfast_http_detect_timeouts_total").await;
    let capacity = metric(&srv.p, "holdfast_http_capacity_cuts_total").await;
    println!("server: {detect} detection timeouts, {capacity} cut to make room");
    assert!(detect > 0 && capacity > 0);
    by.finish("silent sockets").await;
    assert_eq!(metric(&srv.p, "holdfast_http_accept_errors_total").await, 0);
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    silent_sockets_beyond_the_descriptor_limit_are_cut_and_both_ports_stay_up
);

async fn an_http2_preface_then_silence_is_cut(backend: Backend) {
    let srv = start(backend, 512, &[("http_fd_reserve", "128")]);
    let by = Bystander::start(&srv.p).await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // The preface and an empty SETTINGS frame: a complete HTTP/2 start.
    const PREFACE_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    const HALF: &[u8] = b"PRI * HTTP/2.0\r\n";
    let attackers = addrs(2, 7);
    let (a, fa) = open_many(100, &attackers, srv.p.http, PREFACE).await;
    let (b, fb) = open_many(100, &attackers, srv.p.http, PREFACE_SETTINGS).await;
    let (c, fc) = open_many(100, &attackers, srv.p.http, HALF).await;
    assert_eq!(fa + fb + fc, 0);

    // The server does speak HTTP/2: it answers a preface with its SETTINGS.
    let (mut probe, _) = open_many(1, &attackers, srv.p.http, PREFACE_SETTINGS)
        .await
        .0
        .pop()
        .unwrap();
    let mut head = [0u8; 9];
    timeout(Duration::from_secs(2), probe.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "first frame from the server is not SETTINGS");
    drop(probe);

    let limit = Duration::from_secs(10);
    let (ha, hb, hc) = (
        hold_all(a, None, limit),
        hold_all(b, None, limit),
        hold_all(c, None, limit),
    );
    assert_eq!(get(srv.p.http, "/healthz").await.unwrap().0, 200);
    let _new = visitor_from([127, 0, 0, 1], srv.p.http, "next to the silent preface").await;

    // No first request within the 1 s header timeout: closed (the half
    // preface by the 1 s detection timer).
    let (closed, open) = close_times(ha).await;
    let s1 = summary("HTTP/2 preface, then silence", &closed, open);
    let (closed, open2) = close_times(hb).await;
    let s2 = summary("HTTP/2 preface and SETTINGS, then silence", &closed, open2);
    let (closed, open3) = close_times(hc).await;
    let s3 = summary("half an HTTP/2 preface", &closed, open3);
    assert_eq!(open + open2 + open3, 0, "HTTP/2 sockets left open");
    assert!(
        s1.max(s2) <= Duration::from_secs(1) + MARGIN,
        "{s1:?} {s2:?}"
    );
    assert!(s3 <= Duration::from_secs(1) + MARGIN, "{s3:?}");
    by.finish("HTTP/2 preface").await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_http2_preface_then_silence_is_cut
);

async fn a_slow_post_body_on_long_poll_is_cut(backend: Backend) {
    let srv = start(backend, 512, &[("http_fd_reserve", "128")]);
    let by = Bystander::start(&srv.p).await;
    // Content-Length promises 100 kB; the body then trickles one byte every
    // 200 ms (or stops), well inside the body size limit.
    const HEAD: &[u8] = b"POST /v1/visitor/lp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"token\":null,\"msgs\":[";
    let attackers = addrs(2, 5);
    let (trickling, f1) = open_many(60, &attackers, srv.p.http, HEAD).await;
    let (stalled, f2) = open_many(60, &attackers, srv.p.http, HEAD).await;
    assert_eq!(f1 + f2, 0);
    let limit = Duration::from_secs(10);
    let trickle = hold_all(trickling, Some(b"     "), limit);
    let stall = hold_all(stalled, None, limit);

    // Long-poll visitors are served meanwhile.
    let lp = timeout(T, LpVisitor::connect(srv.p.http, "acme"))
        .await
        .unwrap()
        .unwrap();
    let r = timeout(T, lp.say("long-poll next to slow bodies"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, VisitorOut::Ack { .. }), "{r:?}");

    let (closed, open) = close_times(trickle).await;
    let s1 = summary("slow POST body, trickled", &closed, open);
    let (closed, open2) = close_times(stall).await;
    let s2 = summary("slow POST body, stalled", &closed, open2);
    assert_eq!(open + open2, 0, "slow bodies still open after 10 s");
    // Headers end at once, then the 1.5 s body deadline.
    assert!(
        s1.max(s2) <= Duration::from_millis(1500) + MARGIN,
        "{s1:?} {s2:?}"
    );
    let cut = metric(&srv.p, "holdfast_http_body_timeouts_total").await;
    println!("server: {cut} body timeouts");
    assert!(cut >= 120, "{cut}");
    by.finish("slow POST body").await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_slow_post_body_on_long_poll_is_cut
);

async fn slowloris_headers_and_idle_keep_alives_are_cut_but_long_polls_and_websockets_are_not(
    backend: Backend,
) {
    let srv = start(backend, 512, &[("http_fd_reserve", "128")]);
    let by = Bystander::start(&srv.p).await;
    let attackers = addrs(2, 5);
    let limit = Duration::from_secs(10);

    // Headers that never end: one byte every 200 ms.
    let (loris, f) = open_many(
        60,
        &attackers,
        srv.p.http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    )
    .await;
    assert_eq!(f, 0);
    let loris = hold_all(loris, Some(b"X-Slow: yes\r\n"), limit);

    // Keep-alive connections that make one request, then sit idle.
    let (idle, f) = open_many(
        60,
        &attackers,
        srv.p.http,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(f, 0);
    let mut answered = Vec::new();
    for (mut s, _) in idle {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.ends_with(b"ok\n") {
            let n = timeout(Duration::from_secs(2), s.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed before answering");
            buf.extend_from_slice(&chunk[..n]);
        }
        answered.push((s, Instant::now()));
    }
    let idle = hold_all(answered, None, limit);

    // A long-poll held past every one of those timers is not cut: it
    // returns when the visitor's own next message arrives 3.5 s later.
    let mut lp = timeout(T, LpVisitor::connect(srv.p.http, "acme"))
        .await
        .unwrap()
        .unwrap();
    lp.say("long-poll before the hold").await.unwrap();
    lp.poll().await.unwrap();
    let path = format!("/v1/visitor/poll?token={}&after={}", lp.token, lp.cursor);
    let http = srv.p.http;
    let held_poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = http_request(http, "GET", &path, None).await;
        (r, t.elapsed())
    });
    // A WebSocket visitor that stays silent past them too.
    let mut quiet = WsVisitor::connect(srv.p.http, "acme").await.unwrap();
    sleep(Duration::from_millis(3500)).await;
    lp.say("after the hold").await.unwrap();
    let (r, held_for) = held_poll.await.unwrap();
    let (status, body) = r.expect("the held long-poll was cut");
    assert_eq!(status, 200);
    let resp: LongPollResponse = serde_json::from_slice(&body).unwrap();
    assert!(!resp.msgs.is_empty(), "{resp:?}");
    println!(
        "long-poll held {:.2} s and answered",
        held_for.as_secs_f64()
    );
    assert!(held_for >= Duration::from_secs(3));
    let ack = quiet.say_acked("websocket after 3.5 s of silence").await;
    assert!(matches!(ack, Ok(VisitorOut::Ack { .. })), "{ack:?}");

    let (closed, open) = close_times(loris).await;
    let s1 = summary("slowloris headers", &closed, open);
    let (closed, open2) = close_times(idle).await;
    let s2 = summary("idle keep-alive after one request", &closed, open2);
    assert_eq!(open + open2, 0, "slowloris or idle sockets still open");
    // Header timer 1 s; HTTP/1 keeps that timer while it waits for the next
    // request, so an idle keep-alive goes at 1 s too (idle timer 1.5 s).
    assert!(s1 <= Duration::from_secs(1) + MARGIN, "{s1:?}");
    assert!(s2 <= Duration::from_millis(1500) + MARGIN, "{s2:?}");
    by.finish("slowloris and idle keep-alive").await;
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    slowloris_headers_and_idle_keep_alives_are_cut_but_long_polls_and_websockets_are_not
);

/// The issue saw 20,113 sockets from one address at a 20,000 limit. This
/// test process's own limit is about that, so it opens 2,000 against a
/// per-address cap of 200: ten times the cap shows the cap the same way.
async fn twenty_thousand_connections_from_one_address_are_capped(backend: Backend) {
    const FLOOD: usize = 2_000;
    const CAP: u64 = 200;
    // The timers are long here so the cap, not a timer, does the work.
    let srv = start(
        backend,
        4096,
        &[
            ("http_max_per_ip", "200"),
            ("http_detect_timeout_ms", "60000"),
            ("http_header_timeout_ms", "60000"),
        ],
    );
    let by = Bystander::start(&srv.p).await;
    let attacker = [127, 0, 0, 9];
    let (socks, failed) = open_many(FLOOD, &[attacker], srv.p.http, b"").await;
    println!(
        "one address opened {} connections ({failed} failed)",
        socks.len()
    );
    let gauge = metric(&srv.p, "holdfast_http_connections").await;
    let cuts = metric(&srv.p, "holdfast_http_per_ip_cuts_total").await;
    println!("server: {gauge} HTTP connections open, {cuts} per-address cuts");
    let (open, closed) = still_open(socks).await;
    println!(
        "after the flood: {} of its connections open, {closed} closed",
        open.len()
    );
    assert!(
        open.len() as u64 <= CAP,
        "{} open from one address",
        open.len()
    );
    assert!(gauge <= CAP + 5, "{gauge}");

    // Other addresses are unaffected, and so is a real visitor from the
    // flooding address (an office behind the same NAT): it takes the place
    // of a connection that never sent a request.
    assert_eq!(get(srv.p.http, "/healthz").await.unwrap().0, 200);
    let _other = visitor_from([127, 0, 0, 10], srv.p.http, "from elsewhere").await;
    let _same = visitor_from(attacker, srv.p.http, "from the same NAT").await;
    // The bystander is judged while the flood still holds its places.
    by.finish("one-address flood").await;
    drop(open);
}
holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    twenty_thousand_connections_from_one_address_are_capped
);
