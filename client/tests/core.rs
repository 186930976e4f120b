//! The client core against a scripted server written here with the real
//! protocol crate, over real TCP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_client::{
    ClientConfig, ClientHandle, ConnState, DeliveryState, StopReason, Update, start,
};
use holdfast_protocol::agent::{
    AckBatch, Action, Author, ChatMessage, ClientMsg, Command, CommandResult, ConversationInfo,
    ConversationState, Event, LiveEvent, Login, LoginOk, Outcome, Query, QueryResult, Resume,
    ServerMsg, Snapshot, VisitorInfo, WireError,
};
use holdfast_protocol::backoff::BackoffConfig;
use holdfast_protocol::codec::FrameCodec;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::{ServerIdentity, server_accept_with};
use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::seal::{Opener, Sealer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_util::codec::Framed;
use zeroize::Zeroizing;

const WAIT: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------- scripted peer

struct Peer {
    listener: TcpListener,
    identity: ServerIdentity,
    addr: String,
}

struct Conn {
    framed: Framed<TcpStream, FrameCodec>,
    sealer: Sealer,
    opener: Opener,
}

impl Peer {
    async fn new(secret: u8) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Self {
            listener,
            identity: ServerIdentity::from_secret_bytes([secret; 32]),
            addr,
        }
    }

    /// Accept one connection and complete the server half of the handshake.
    async fn accept(&self) -> Conn {
        let (stream, _) = timeout(WAIT, self.listener.accept())
            .await
            .expect("no connection from the client")
            .unwrap();
        let mut framed = Framed::new(stream, FrameCodec::default());
        let hello = timeout(WAIT, framed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let acc = server_accept_with(&self.identity, &mut rand::rng(), &hello).unwrap();
        framed.send(Bytes::from(acc.reply)).await.unwrap();
        Conn {
            framed,
            sealer: acc.session.sealer,
            opener: acc.session.opener,
        }
    }

    /// True if the client does not connect within `d`.
    async fn quiet_for(&self, d: Duration) -> bool {
        timeout(d, self.listener.accept()).await.is_err()
    }
}

impl Conn {
    async fn send(&mut self, m: ServerMsg) {
        let f = self
            .sealer
            .seal_with(&mut rand::rng(), &m.encode())
            .unwrap();
        self.framed.send(Bytes::from(f)).await.unwrap();
    }

    /// The next message, or None on close or after `d`.
    async fn recv_within(&mut self, d: Duration) -> Option<ClientMsg> {
        match timeout(d, self.framed.next()).await {
            Ok(Some(Ok(f))) => Some(ClientMsg::decode(&self.opener.open(&f).unwrap()).unwrap()),
            _ => None,
        }
    }

    async fn recv(&mut self) -> ClientMsg {
        self.recv_within(WAIT)
            .await
            .expect("expected a message from the client")
    }

    /// The next message that is not a heartbeat or an event ack.
    async fn recv_business(&mut self) -> ClientMsg {
        loop {
            match self.recv().await {
                ClientMsg::Heartbeat | ClientMsg::Ack { .. } => {}
                m => return m,
            }
        }
    }

    async fn command(&mut self) -> Command {
        match self.recv_business().await {
            ClientMsg::Command(c) => c,
            other => panic!("expected a command, got {other:?}"),
        }
    }

    async fn login(&mut self) -> Login {
        match self.recv().await {
            ClientMsg::Login(l) => l,
            other => panic!("expected Login, got {other:?}"),
        }
    }

    async fn login_ok(&mut self, commands_acked: u64, resume: Resume) {
        self.send(ServerMsg::LoginOk(LoginOk {
            agent: 7,
            display_name: "Alice".into(),
            site: 1,
            resume,
            commands_acked,
            heartbeat_ms: 3000,
            dead_after_ms: 10_000,
            server_time_ms: 0,
            ticket: Vec::new(),
            ticket_expires_ms: 0,
        }))
        .await;
    }

    /// Login answered with an empty snapshot at `seq`.
    async fn accept_login(&mut self, commands_acked: u64, snapshot_seq: u64) -> Login {
        let l = self.login().await;
        self.login_ok(commands_acked, Resume::Snapshot).await;
        self.send(ServerMsg::Snapshot(Snapshot {
            seq: snapshot_seq,
            recovered: false,
            conversations: vec![conv(1)],
            messages: vec![],
        }))
        .await;
        l
    }

    async fn ack(&mut self, up_to: u64, results: Vec<CommandResult>) {
        self.send(ServerMsg::Ack(AckBatch { up_to, results })).await;
    }
}

// ---------------------------------------------------------------- client side

fn config(peer: &Peer, dir: &Path) -> ClientConfig {
    let mut c = ClientConfig::new(
        peer.addr.clone(),
        "alice",
        Zeroizing::new("secret".to_owned()),
        dir.join("agent.sqlite3"),
    );
    c.trust_on_first_use = true;
    c.backoff = BackoffConfig {
        base: Duration::from_millis(20),
        cap: Duration::from_millis(100),
    };
    c.liveness = LivenessConfig {
        heartbeat: Duration::from_millis(1000),
        dead_after: Duration::from_millis(3000),
    };
    c
}

/// Wait for the first update matching `f`, skipping others.
async fn wait_for<T>(rx: &mut Receiver<Update>, mut f: impl FnMut(&Update) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let u = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for an update")
            .expect("update channel closed");
        if let Some(t) = f(&u) {
            return t;
        }
    }
}

async fn wait_state(rx: &mut Receiver<Update>, f: impl Fn(&ConnState) -> bool) -> ConnState {
    wait_for(rx, |u| match u {
        Update::Connection(s) if f(&s.state) => Some(s.state.clone()),
        _ => None,
    })
    .await
}

async fn wait_unsent(handle: &ClientHandle, n: usize) {
    let mut w = handle.status_watch();
    timeout(WAIT, w.wait_for(|s| s.unsent == n))
        .await
        .expect("unsent count never reached")
        .unwrap();
}

/// Kill the core task as a crash would, and wait until it is gone.
async fn crash(handle: &ClientHandle) {
    handle.abort();
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(start.elapsed() < WAIT, "core task did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn conv(id: u64) -> ConversationInfo {
    ConversationInfo {
        id,
        site: 1,
        visitor: "v-1".into(),
        visitor_name: None,
        state: ConversationState::Active,
        assigned: Some(7),
        assigned_name: Some("Alice".into()),
        opened_at_ms: 1,
        updated_at_ms: 1,
        contact_email: None,
        group: None,
    }
}

fn visitor_msg(message: u64, body: &str) -> ChatMessage {
    ChatMessage {
        conversation: 1,
        message,
        client_id: holdfast_protocol::ids::MsgId::v7(message, [9; 10]),
        author: Author::Visitor {
            visitor: "v-1".into(),
        },
        body: body.into(),
        at_ms: 1,
        attachment: None,
    }
}

fn done(c: &Command, message: u64) -> CommandResult {
    CommandResult {
        seq: c.seq,
        id: c.id,
        outcome: Outcome::Done {
            conversation: Some(1),
            message: Some(message),
            at_ms: 5,
        },
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn first_use_asks_then_pins_the_key() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&peer, dir.path());
    cfg.trust_on_first_use = false;
    let (h, mut rx) = start(cfg.clone()).unwrap();

    let mut c = peer.accept().await;
    let fp = wait_for(&mut rx, |u| match u {
        Update::FingerprintUnknown { fingerprint, .. } => Some(*fingerprint),
        _ => None,
    })
    .await;
    assert_eq!(fp, peer.identity.fingerprint());
    assert!(matches!(h.status().state, ConnState::AwaitingTrust { .. }));
    // Nothing sealed (the password) goes out before the user decides.
    assert!(c.recv_within(Duration::from_millis(200)).await.is_none());

    h.trust_fingerprint(true).await.unwrap();
    let login = c.login().await;
    assert_eq!(login.username, "alice");
    assert_eq!(login.password, "secret");
    assert_eq!(login.device_id, h.device_id());
    assert_eq!(login.resume_after, None, "a fresh store has no cursor");
    assert!(
        login.client.starts_with("holdfast-agent "),
        "{}",
        login.client
    );
    c.login_ok(0, Resume::Snapshot).await;
    wait_for(&mut rx, |u| {
        matches!(u, Update::LoggedIn { agent: 7, .. }).then_some(())
    })
    .await;
    wait_state(&mut rx, |s| *s == ConnState::Live).await;
    h.shutdown().await.unwrap();

    // Pinned now: the next start logs in without asking.
    let (h, mut rx) = start(cfg).unwrap();
    let mut c = peer.accept().await;
    c.login().await;
    c.login_ok(0, Resume::Snapshot).await;
    wait_state(&mut rx, |s| *s == ConnState::Live).await;
    h.shutdown().await.unwrap();
    while let Ok(u) = rx.try_recv() {
        assert!(!matches!(u, Update::FingerprintUnknown { .. }));
    }
}

#[tokio::test]
async fn key_mismatch_is_a_hard_stop_showing_both() {
    let peer = Peer::new(7).await;
    let pinned = ServerIdentity::from_secret_bytes([8; 32]).fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&peer, dir.path());
    cfg.expected_fingerprint = Some(pinned);
    let (h, mut rx) = start(cfg).unwrap();

    let mut c = peer.accept().await;
    let (p, presented) = wait_for(&mut rx, |u| match u {
        Update::FingerprintMismatch {
            pinned, presented, ..
        } => Some((*pinned, *presented)),
        _ => None,
    })
    .await;
    assert_eq!(p, pinned);
    assert_eq!(presented, peer.identity.fingerprint());
    let state = wait_state(&mut rx, |s| matches!(s, ConnState::Stopped { .. })).await;
    assert_eq!(
        state,
        ConnState::Stopped {
            reason: StopReason::FingerprintMismatch { pinned, presented }
        }
    );
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "no login may be sent to a mismatched key"
    );
    assert!(
        peer.quiet_for(Duration::from_millis(500)).await,
        "must not retry"
    );

    // Only an explicit decision replaces the pin.
    h.trust_fingerprint(true).await.unwrap();
    let mut c = peer.accept().await;
    c.login().await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_surfaced_and_not_retried() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();

    let mut c = peer.accept().await;
    c.login().await;
    c.send(ServerMsg::Error(WireError {
        code: ErrorCode::Unauthorized,
        message: "wrong username or password".into(),
        retry_after_ms: None,
    }))
    .await;
    drop(c);
    let (code, message) = wait_for(&mut rx, |u| match u {
        Update::LoginFailed { code, message, .. } => Some((*code, message.clone())),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::Unauthorized);
    assert_eq!(message, "wrong username or password");
    let state = wait_state(&mut rx, |s| matches!(s, ConnState::Stopped { .. })).await;
    assert!(matches!(
        state,
        ConnState::Stopped {
            reason: StopReason::LoginRejected {
                code: ErrorCode::Unauthorized,
                ..
            }
        }
    ));
    assert!(
        peer.quiet_for(Duration::from_millis(500)).await,
        "must not retry"
    );

    h.set_password(Zeroizing::new("right".into()))
        .await
        .unwrap();
    let mut c = peer.accept().await;
    assert_eq!(c.login().await.password, "right");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn throttled_login_waits_as_told_then_retries() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();
    let mut c = peer.accept().await;
    c.login().await;
    c.send(ServerMsg::Error(WireError {
        code: ErrorCode::Throttled,
        message: "too many attempts".into(),
        retry_after_ms: Some(400),
    }))
    .await;
    let told = Instant::now();
    drop(c);
    let retry = wait_for(&mut rx, |u| match u {
        Update::LoginFailed { retry_after, .. } => Some(*retry_after),
        _ => None,
    })
    .await;
    assert_eq!(retry, Some(Duration::from_millis(400)));
    let mut c = peer.accept().await;
    assert!(
        told.elapsed() >= Duration::from_millis(350),
        "{:?}",
        told.elapsed()
    );
    c.login().await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_backs_off_with_a_reason() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ClientConfig::new(
        addr.clone(),
        "alice",
        Zeroizing::new("x".to_owned()),
        dir.path().join("a.sqlite3"),
    );
    cfg.trust_on_first_use = true;
    let (h, mut rx) = start(cfg).unwrap();
    let state = wait_state(&mut rx, |s| matches!(s, ConnState::BackingOff { .. })).await;
    let ConnState::BackingOff { reason, retry_at } = state else {
        unreachable!()
    };
    assert!(
        reason.contains("cannot reach") && reason.contains(&addr),
        "{reason}"
    );
    assert!(retry_at <= Instant::now() + Duration::from_millis(260));
    // Actions still become durable while offline.
    h.send_message(1, "offline").await.unwrap();
    assert_eq!(h.status().unsent, 1);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn outbox_is_resent_in_order_after_a_drop_and_cleared_only_on_ack() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();
    // Queued before any connection exists.
    let a = h.send_message(1, "one").await.unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    let b = h.send_message(1, "two").await.unwrap();
    let d = h.accept(2).await.unwrap();
    let first: Vec<Command> = vec![c.command().await, c.command().await, c.command().await];
    assert_eq!(
        first.iter().map(|c| (c.seq, c.id)).collect::<Vec<_>>(),
        vec![(1, a), (2, b), (3, d)]
    );
    assert_eq!(first[2].action, Action::Accept { conversation: 2 });
    drop(c); // cable pulled before any ack

    let mut c = peer.accept().await;
    let login = c.login().await;
    assert_eq!(login.resume_after, Some(0));
    c.login_ok(0, Resume::Replay { after: 0 }).await;
    let again = vec![c.command().await, c.command().await, c.command().await];
    assert_eq!(again, first, "resent unchanged and in order");
    assert_eq!(h.status().unsent, 3);

    c.ack(2, vec![done(&again[0], 100), done(&again[1], 101)])
        .await;
    wait_unsent(&h, 1).await;
    let ws = h.cached_workspace().unwrap();
    assert_eq!(ws.unsent, 1);
    let msgs = &ws.recent[&1];
    assert_eq!(
        msgs.iter()
            .map(|m| (m.message, m.state))
            .collect::<Vec<_>>(),
        vec![
            (Some(100), DeliveryState::Sent),
            (Some(101), DeliveryState::Sent)
        ]
    );
    wait_for(&mut rx, |u| match u {
        Update::MessageState {
            client_id,
            message: Some(101),
            state: DeliveryState::Sent,
            ..
        } if *client_id == b => Some(()),
        _ => None,
    })
    .await;

    c.ack(3, vec![done(&again[2], 0)]).await;
    wait_unsent(&h, 0).await;
    assert_eq!(h.cached_workspace().unwrap().unsent, 0);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn after_a_crash_acked_commands_are_not_resent_and_unacked_are() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&peer, dir.path());
    let (h, _rx) = start(cfg.clone()).unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    let mut ids = Vec::new();
    for body in ["a", "b", "c"] {
        ids.push(h.send_message(1, body).await.unwrap());
    }
    let cmds = [c.command().await, c.command().await, c.command().await];
    c.ack(2, vec![done(&cmds[0], 10), done(&cmds[1], 11)]).await;
    wait_unsent(&h, 1).await;
    crash(&h).await;
    drop(c);

    let (h, _rx) = start(cfg).unwrap();
    assert_eq!(h.status().unsent, 1);
    let mut c = peer.accept().await;
    c.login().await;
    c.login_ok(2, Resume::Replay { after: 0 }).await;
    let resent = c.command().await;
    assert_eq!((resent.seq, resent.id), (3, ids[2]));
    // Nothing else follows: 1 and 2 were acked before the crash.
    loop {
        match c.recv_within(Duration::from_millis(300)).await {
            None => break,
            Some(ClientMsg::Heartbeat | ClientMsg::Ack { .. }) => {}
            Some(other) => panic!("unexpected resend {other:?}"),
        }
    }
    // New commands continue the numbering.
    let next = h.close(1).await.unwrap();
    let cmd = c.command().await;
    assert_eq!((cmd.seq, cmd.id), (4, next));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn events_are_applied_once_and_the_cursor_resumes() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&peer, dir.path());
    let (h, mut rx) = start(cfg.clone()).unwrap();
    let mut c = peer.accept().await;
    c.login().await;
    c.login_ok(0, Resume::Snapshot).await;
    c.send(ServerMsg::Snapshot(Snapshot {
        seq: 2,
        recovered: false,
        conversations: vec![conv(1)],
        messages: vec![visitor_msg(10, "hello")],
    }))
    .await;
    c.send(ServerMsg::Live(LiveEvent::Visitors(vec![visitor("v-1")])))
        .await;
    c.send(ServerMsg::Event {
        seq: 3,
        event: Event::Message(visitor_msg(11, "anyone?")),
    })
    .await;
    c.send(ServerMsg::Event {
        seq: 4,
        event: Event::Message(visitor_msg(12, "hi?")),
    })
    .await;
    // Acked cumulatively, only after they are stored.
    loop {
        match c.recv().await {
            ClientMsg::Ack { up_to: 4 } => break,
            ClientMsg::Ack { up_to } => assert!(up_to < 4),
            ClientMsg::Heartbeat => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(h.messages_page(1, None, 50).unwrap().len(), 3);
    assert_eq!(h.cached_workspace().unwrap().visitors.len(), 1);

    // A duplicate is dropped and re-acked promptly.
    c.send(ServerMsg::Event {
        seq: 4,
        event: Event::Message(visitor_msg(12, "hi?")),
    })
    .await;
    let reack = loop {
        match c.recv().await {
            ClientMsg::Heartbeat => {}
            m => break m,
        }
    };
    assert_eq!(reack, ClientMsg::Ack { up_to: 4 });
    assert_eq!(h.messages_page(1, None, 50).unwrap().len(), 3);

    // The agent's own message comes back as an event: still one message.
    let mine = h.send_message(1, "Hello, how can I help?").await.unwrap();
    let cmd = c.command().await;
    c.ack(1, vec![done(&cmd, 13)]).await;
    c.send(ServerMsg::Event {
        seq: 5,
        event: Event::Message(ChatMessage {
            conversation: 1,
            message: 13,
            client_id: mine,
            author: Author::Agent {
                agent: 7,
                name: "Alice".into(),
            },
            body: "Hello, how can I help?".into(),
            at_ms: 5,
            attachment: None,
        }),
    })
    .await;
    c.send(ServerMsg::Event {
        seq: 6,
        event: Event::Delivered {
            conversation: 1,
            message: 13,
        },
    })
    .await;
    wait_for(&mut rx, |u| match u {
        Update::MessageState {
            client_id,
            state: DeliveryState::Delivered,
            ..
        } if *client_id == mine => Some(()),
        _ => None,
    })
    .await;
    let page = h.messages_page(1, None, 50).unwrap();
    assert_eq!(page.len(), 4, "{page:#?}");
    assert_eq!(page.iter().filter(|m| m.client_id == mine).count(), 1);
    assert_eq!(h.unread(1).unwrap(), 3);
    h.mark_read(1).await.unwrap();
    assert_eq!(h.unread(1).unwrap(), 0);

    // A gap resets the connection; the resume cursor is the last applied.
    c.send(ServerMsg::Event {
        seq: 8,
        event: Event::Message(visitor_msg(20, "lost one before me")),
    })
    .await;
    let mut c = peer.accept().await;
    assert_eq!(c.login().await.resume_after, Some(6));
    c.login_ok(1, Resume::Replay { after: 6 }).await;
    wait_state(&mut rx, |s| *s == ConnState::Live).await;

    // And after a crash too.
    crash(&h).await;
    drop(c);
    let (h, _rx) = start(cfg).unwrap();
    let mut c = peer.accept().await;
    assert_eq!(c.login().await.resume_after, Some(6));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn history_queries_are_answered_and_survive_a_reconnect() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();
    // Asked while still connecting: sent once live.
    let req = h.load_history("v-1", None, 20).unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    let q = c.recv_business().await;
    assert_eq!(
        q,
        ClientMsg::Query(Query::History {
            request: req,
            visitor: "v-1".into(),
            before: None,
            limit: 20
        })
    );
    drop(c);
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    assert_eq!(c.recv_business().await, q, "unanswered query resent");
    let result = QueryResult::History {
        visitor: None,
        conversations: vec![conv(1)],
        messages: vec![visitor_msg(3, "old")],
        more: false,
    };
    c.send(ServerMsg::QueryResult {
        request: req,
        result: result.clone(),
    })
    .await;
    let got = wait_for(&mut rx, |u| match u {
        Update::History { request, result } if *request == req => Some(result.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, result);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn heartbeats_when_quiet_and_a_blackholed_peer_is_declared_dead() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&peer, dir.path());
    cfg.liveness = LivenessConfig {
        heartbeat: Duration::from_millis(200),
        dead_after: Duration::from_millis(700),
    };
    let (_h, mut rx) = start(cfg).unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    let last_sent = Instant::now();
    // The snapshot's ack goes out first; then, with nothing to say, a
    // heartbeat after 200 ms of quiet.
    loop {
        match c.recv().await {
            ClientMsg::Heartbeat => break,
            ClientMsg::Ack { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let hb = last_sent.elapsed();
    assert!(
        hb >= Duration::from_millis(150),
        "heartbeat too early: {hb:?}"
    );
    assert!(
        hb < Duration::from_millis(600),
        "heartbeat too late: {hb:?}"
    );

    // Blackhole: the socket stays open, nothing is read or written.
    let reason = wait_for(&mut rx, |u| match u {
        Update::Connection(s) => match &s.state {
            ConnState::BackingOff { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        _ => None,
    })
    .await;
    let dead = last_sent.elapsed();
    assert!(reason.contains("considered dead"), "{reason}");
    assert!(
        dead >= Duration::from_millis(650),
        "declared dead too early: {dead:?}"
    );
    assert!(
        dead < Duration::from_millis(1500),
        "declared dead too late: {dead:?}"
    );
    let _c2 = peer.accept().await;
    drop(c);
}

fn visitor(id: &str) -> VisitorInfo {
    VisitorInfo {
        id: id.into(),
        site: 1,
        name: None,
        email: None,
        attrs: vec![],
        external_id: None,
        verified: false,
        online: true,
        user_agent: Some("Mozilla/5.0".into()),
        referrer: None,
        visit_started_ms: 1,
        first_seen_ms: 1,
        trail: vec![],
        conversation: None,
        lang: None,
    }
}

#[tokio::test]
async fn version_refusal_names_both_versions_and_stops() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();
    let (stream, _) = timeout(WAIT, peer.listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut framed = Framed::new(stream, FrameCodec::default());
    framed.next().await.unwrap().unwrap();
    let ours = holdfast_protocol::PROTOCOL_VERSION;
    let refusal = holdfast_protocol::handshake::encode_version_refusal(9, ours);
    framed.send(Bytes::from(refusal)).await.unwrap();
    let (code, message) = wait_for(&mut rx, |u| match u {
        Update::LoginFailed { code, message, .. } => Some((*code, message.clone())),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::VersionMismatch);
    assert!(
        message.contains('9') && message.contains(&ours.to_string()),
        "{message}"
    );
    wait_state(&mut rx, |s| matches!(s, ConnState::Stopped { .. })).await;
    assert!(
        peer.quiet_for(Duration::from_millis(300)).await,
        "must not retry"
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn going_away_reconnects_with_backoff() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let (h, mut rx) = start(config(&peer, dir.path())).unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    c.send(ServerMsg::GoingAway {
        reason: "restarting".into(),
    })
    .await;
    let reason = wait_for(&mut rx, |u| match u {
        Update::Connection(s) => match &s.state {
            ConnState::BackingOff { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        _ => None,
    })
    .await;
    assert!(reason.contains("restarting"), "{reason}");
    let mut c = peer.accept().await;
    assert_eq!(c.login().await.resume_after, Some(0));
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_action_too_big_for_a_frame_is_refused_up_front() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&peer, dir.path());
    cfg.max_frame = 1024;
    let (h, _rx) = start(cfg).unwrap();
    let err = h.send_message(1, "x".repeat(2000)).await.unwrap_err();
    assert!(
        matches!(
            err,
            holdfast_client::ClientError::TooLarge { max: 1024, .. }
        ),
        "{err}"
    );
    assert_eq!(h.status().unsent, 0);
    h.send_message(1, "fits").await.unwrap();
    assert_eq!(h.status().unsent, 1);
    h.shutdown().await.unwrap();
    assert!(h.send_message(1, "late").await.is_err());
}

#[tokio::test]
async fn several_visitors_in_one_message_are_each_applied_and_cached() {
    let peer = Peer::new(7).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&peer, dir.path());
    let (h, mut rx) = start(cfg.clone()).unwrap();
    let mut c = peer.accept().await;
    c.accept_login(0, 0).await;
    c.send(ServerMsg::Live(LiveEvent::Visitors(vec![visitor("v-1")])))
        .await;
    let named = VisitorInfo {
        name: Some("Ann".into()),
        ..visitor("v-1")
    };
    c.send(ServerMsg::Live(LiveEvent::VisitorUpdates(vec![
        named.clone(),
        visitor("v-2"),
        visitor("v-3"),
    ])))
    .await;
    // The app hears of each, in order, as it would of three `Visitor`s.
    let mut upserts = Vec::new();
    wait_for(&mut rx, |u| match u {
        Update::Visitor(v) => {
            upserts.push((v.id.clone(), v.name.clone()));
            (v.id == "v-3").then_some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        upserts,
        [
            ("v-1".to_string(), Some("Ann".to_string())),
            ("v-2".to_string(), None),
            ("v-3".to_string(), None),
        ]
    );
    // And the local cache holds all three, as they are now.
    h.shutdown().await.unwrap();
    let (h, _rx) = start(cfg).unwrap();
    let mut cached = h.cached_workspace().unwrap().visitors;
    cached.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(cached, vec![named, visitor("v-2"), visitor("v-3")]);
    h.shutdown().await.unwrap();
}
