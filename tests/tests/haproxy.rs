//! Holdfast behind the shipped `deploy/haproxy.cfg`: the real server binary
//! behind Debian's real `haproxy`, both started by the test (addresses
//! replaced by loopback ports, see `holdfast_tests::haproxy::deploy_config`).
//!
//! Everything goes through the balancer: a visitor over WebSocket and one
//! over long-poll chat with an agent (the real client core) on the agent
//! TCP port; an idle agent link, an idle WebSocket and a long-poll held
//! its full 25 s are not cut by HAProxy's timers; the server sees each
//! visitor's own address through X-Forwarded-For, and each agent's own
//! address through the PROXY protocol header (a header from anyone but the
//! balancer is not believed); and the health checks on `/healthz` take a
//! dead node out and put it back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use holdfast_client::{ConnState, Update};
use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::visitor::{LongPollRequest, LongPollResponse, VisitorOut};
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::haproxy::{DeployAddrs, HaProxy, deploy_config};
use holdfast_tests::server::{ServerProcess, free_port, seed};
use holdfast_tests::visitor::{LpVisitor, WsVisitor, hello, http_exchange};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A seeded server process that trusts the balancer (on 127.0.0.1) for
/// X-Forwarded-For and for the PROXY protocol header on the agent port,
/// with a tiny new-visitor allowance per address so the test can tell
/// addresses apart by it.
fn server(dir: &Path) -> ServerProcess {
    seed(dir);
    ServerProcess::start(
        dir,
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--agent-proxy-protocol-from",
            "127.0.0.1",
            "--addr-new-visitors-burst",
            "2",
            "--addr-new-visitors-per-sec",
            "0.01",
        ],
    )
}

/// HAProxy from the deploy config in front of `srv`, with the node UP.
async fn balancer(srv: &ServerProcess) -> (HaProxy, DeployAddrs) {
    let addrs = DeployAddrs {
        visitors: loopback(),
        agents: loopback(),
        stats: loopback(),
        node_http: srv.http,
        node_agent: srv.agent,
    };
    let h = HaProxy::start(
        &deploy_config(addrs),
        &[addrs.visitors, addrs.agents, addrs.stats],
    );
    HaProxy::wait_up(addrs.stats, "holdfast_http", "node1").await;
    HaProxy::wait_up(addrs.stats, "holdfast_agents", "node1").await;
    (h, addrs)
}

/// Alice's client core through the balancer's agent port, with the
/// production heartbeat (3 s) and dead-peer cut (10 s), so its link is as
/// idle as a real one.
async fn alice(addrs: &DeployAddrs, data: &Path, store: &Path) -> CoreAgent {
    let fp = holdfast_server::identity::load_or_create(data)
        .unwrap()
        .fingerprint();
    let mut cfg = fast_config(
        &addrs.agents.to_string(),
        "alice",
        &store.join("alice.sqlite3"),
        fp,
    );
    cfg.liveness = LivenessConfig::default();
    let mut a = CoreAgent::start(cfg);
    a.live().await;
    a
}

/// One new-visitor hello over long-poll through the balancer, from local
/// address `from`, with an extra X-Forwarded-For the client wrote itself.
/// True when the server welcomed it.
async fn new_visitor_from(lb: SocketAddr, from: IpAddr, xff: Option<&str>) -> bool {
    let body = serde_json::to_vec(&LongPollRequest {
        token: None,
        msgs: vec![hello("acme", None, None, "https://shop.example/xff")],
    })
    .unwrap();
    let extra: Vec<(&str, &str)> = xff.map(|x| ("X-Forwarded-For", x)).into_iter().collect();
    let r = http_exchange(
        Some(from),
        lb,
        "POST",
        "/v1/visitor/lp",
        &extra,
        Some(&body),
    )
    .await
    .unwrap();
    if r.status != 200 {
        return false;
    }
    let resp: LongPollResponse = serde_json::from_slice(&r.body).unwrap();
    matches!(resp.msgs.first(), Some(VisitorOut::Welcome { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_and_an_agent_chat_through_haproxy_and_idle_links_survive() {
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let srv = server(&data);
    let (lb, addrs) = balancer(&srv).await;
    let mut alice = alice(&addrs, &data, dir.path()).await;

    // A visitor over WebSocket, through HAProxy's HTTP mode and upgrade.
    let ws_from = IpAddr::from([127, 0, 2, 1]);
    let mut ws = WsVisitor::connect_from(
        addrs.visitors,
        ws_from,
        hello("acme", None, None, "https://shop.example/ws"),
    )
    .await
    .unwrap();
    ws.say_acked("Hello over WebSocket").await.unwrap();
    let m = alice.visitor_message().await;
    assert_eq!(m.body, "Hello over WebSocket");
    alice
        .handle
        .send_message(m.conversation, "Hi, WebSocket!")
        .await
        .unwrap();
    ws.wait_message("Hi, WebSocket!").await.unwrap();

    // A visitor over long-poll.
    let mut lp = LpVisitor::connect(addrs.visitors, "acme").await.unwrap();
    let ack = lp.say("Hello over long-poll").await.unwrap();
    assert!(matches!(ack, VisitorOut::Ack { .. }), "{ack:?}");
    let m = alice.visitor_message().await;
    assert_eq!(m.body, "Hello over long-poll");
    alice
        .handle
        .send_message(m.conversation, "Hi, long-poll!")
        .await
        .unwrap();
    lp.wait_message("Hi, long-poll!").await.unwrap();

    // Quiet for over 20 s: the agent link carries only heartbeats, the
    // WebSocket only the server's pings, and a long-poll is held by the
    // server until its 25 s are up. HAProxy must cut none of them.
    while alice.updates.try_recv().is_ok() {}
    let idle_from = Instant::now();
    let mut longest_poll = Duration::ZERO;
    while idle_from.elapsed() < Duration::from_secs(21) {
        let t = Instant::now();
        // An error here is a cut poll (HAProxy answers 504 when its server
        // timeout fires first).
        let got = lp.poll().await.unwrap();
        longest_poll = longest_poll.max(t.elapsed());
        assert!(
            got.iter().all(|m| !matches!(m, VisitorOut::Event { .. })),
            "nothing was said, got {got:?}"
        );
    }
    assert!(
        longest_poll >= Duration::from_secs(20),
        "no poll was held long: {longest_poll:?} (is poll_timeout still 25 s?)"
    );
    // The agent's link never left Live...
    while let Ok(u) = alice.updates.try_recv() {
        if let Update::Connection(s) = &u {
            assert!(
                matches!(s.state, ConnState::Live),
                "the agent link dropped while idle: {s:?}\n{}",
                lb.log()
            );
        }
    }
    // ...and HAProxy closed neither it nor the WebSocket: it logs a
    // connection (tcplog) or a WebSocket request (httplog) when it ends.
    let log = lb.log();
    assert!(
        !log.contains("agents holdfast_agents/") && !log.contains("/v1/visitor/ws"),
        "HAProxy ended a long-lived link:\n{log}"
    );
    // Both still carry a chat, both ways.
    ws.say_acked("Still there?").await.unwrap();
    let m = alice.visitor_message().await;
    assert_eq!(m.body, "Still there?");
    alice
        .handle
        .send_message(m.conversation, "Yes, still here.")
        .await
        .unwrap();
    ws.wait_message("Yes, still here.").await.unwrap();

    // The server sees each visitor's own address, which HAProxy sends in
    // X-Forwarded-For: the new-visitor allowance (2 per address) runs out
    // for one address while others still have theirs. Without it every
    // visitor would share the balancer's address, whose allowance the two
    // visitors above have already used up.
    let a = IpAddr::from([127, 0, 2, 3]);
    let b = IpAddr::from([127, 0, 2, 4]);
    let mut welcomed_a = 0;
    for _ in 0..4 {
        welcomed_a += usize::from(new_visitor_from(addrs.visitors, a, None).await);
    }
    assert_eq!(welcomed_a, 2, "address {a} got its own allowance, once");
    assert!(new_visitor_from(addrs.visitors, b, None).await);
    assert!(new_visitor_from(addrs.visitors, b, None).await);
    // What a client writes in X-Forwarded-For itself does not buy it
    // another address: HAProxy appends the real one, which the server
    // believes.
    assert!(!new_visitor_from(addrs.visitors, a, Some("203.0.113.77")).await);

    alice.shutdown().await;
    drop(lb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_dead_node_out_and_put_it_back() {
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let mut srv = server(&data);
    let (_lb, addrs) = balancer(&srv).await;
    let mut alice = alice(&addrs, &data, dir.path()).await;

    srv.kill9();
    // Three failed checks 2 s apart; the agent port's server tracks the
    // HTTP one.
    wait_status(addrs.stats, "holdfast_http", "DOWN").await;
    wait_status(addrs.stats, "holdfast_agents", "DOWN").await;
    alice.not_live().await;

    srv.spawn();
    wait_status(addrs.stats, "holdfast_http", "UP").await;
    wait_status(addrs.stats, "holdfast_agents", "UP").await;
    // The client core finds its way back through the balancer by itself.
    alice.live().await;
    let mut ws = WsVisitor::connect(addrs.visitors, "acme").await.unwrap();
    ws.say_acked("Back again").await.unwrap();
    assert_eq!(alice.visitor_message().await.body, "Back again");
    alice.shutdown().await;
}

async fn wait_status(stats: SocketAddr, backend: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let st = HaProxy::server_status(stats, backend, "node1").await;
        if st.as_deref().is_some_and(|s| s.starts_with(want)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{backend}/node1 never {want} (last {st:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP connection to `to` from local address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    sock.connect(to).await.unwrap()
}

/// Whether the server closed `s` (before login, a refusal closes at once;
/// an admitted connection waits silently for the agent's hello).
async fn closed_soon(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut b = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut b)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("the server spoke first: {:?}", &b[..n]),
        Err(_) => false,
    }
}

/// A PROXY protocol v2 header naming `src` as the client.
fn proxy_v2(src: [u8; 4]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1, 0x12, 0x34, 0x1b, 0x9e]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_each_agent_s_own_address_meets_the_per_address_limits() {
    use tokio::io::AsyncWriteExt as _;
    holdfast_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    seed(&data);
    // One agent connection per address: behind a balancer that does not
    // say whose connections they are, a second agent anywhere would be
    // refused.
    let srv = ServerProcess::start(
        &data,
        &[
            "--agent-proxy-protocol-from",
            "127.0.0.1",
            "--agent-max-per-ip",
            "1",
        ],
    );
    let (lb, addrs) = balancer(&srv).await;
    let (a, b) = (IpAddr::from([127, 0, 3, 1]), IpAddr::from([127, 0, 3, 2]));
    let mut first_a = connect_from(a, addrs.agents).await;
    let mut first_b = connect_from(b, addrs.agents).await;
    assert!(
        !closed_soon(&mut first_a).await,
        "the first agent connection was refused:\n{}",
        lb.log()
    );
    assert!(
        !closed_soon(&mut first_b).await,
        "an agent at another address was refused: the node saw the balancer's address\n{}",
        lb.log()
    );
    let mut second_a = connect_from(a, addrs.agents).await;
    assert!(
        closed_soon(&mut second_a).await,
        "a second connection from the same agent address was let in"
    );
    // A real agent logs in through the balancer, header and all.
    let alice = alice(&addrs, &data, dir.path()).await;

    // Straight to the node from the balancer's address without a header:
    // refused, whatever follows.
    let mut bare = connect_from(IpAddr::from([127, 0, 0, 1]), srv.agent).await;
    bare.write_all(&[0u8; 32]).await.unwrap();
    assert!(
        closed_soon(&mut bare).await,
        "a listed sender got in without a header"
    );

    // From an address that is not the balancer, a header is not believed:
    // the connection counts against its real address, which already holds
    // one, however new the address it claims.
    let c = IpAddr::from([127, 0, 3, 3]);
    let mut held = connect_from(c, srv.agent).await;
    assert!(!closed_soon(&mut held).await);
    let mut forged = connect_from(c, srv.agent).await;
    forged.write_all(&proxy_v2([10, 9, 8, 7])).await.unwrap();
    assert!(
        closed_soon(&mut forged).await,
        "a header from an unlisted address was believed"
    );
    drop((first_a, first_b, held));
    alice.shutdown().await;
}
