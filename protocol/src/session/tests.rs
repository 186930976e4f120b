//! The session machines' own tests, and a `Pair` that drives a real client
//! machine against a real server machine through a byte pipe under virtual
//! time (after quinn-proto's `tests/util.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use super::SessionError;
use super::client::{Client, ClientConfig, ClientEvent};
use super::server::{Server, ServerConfig, ServerEvent};
use crate::agent::{
    AckBatch, Action, ClientMsg, CommandResult, Event, LiveEvent, Login, LoginOk, Outcome, Resume,
    Seq, ServerMsg, Snapshot, SnapshotPart,
};
use crate::delivery::{AckPolicy, Outbox};
use crate::error::ErrorCode;
use crate::handshake::{ClientHandshake, ClientSession, ServerIdentity};
use crate::ids::MsgId;
use crate::liveness::LivenessConfig;

fn server_cfg() -> ServerConfig {
    ServerConfig {
        identity: Arc::new(ServerIdentity::from_secret_bytes([7; 32])),
        liveness: LivenessConfig::default(),
        max_frame: crate::DEFAULT_MAX_FRAME,
        preauth_max_frame: 16 * 1024,
    }
}

fn client_cfg() -> ClientConfig {
    ClientConfig {
        liveness: LivenessConfig::default(),
        ack_policy: AckPolicy::default(),
        max_frame: crate::DEFAULT_MAX_FRAME,
    }
}

fn login() -> Login {
    Login {
        username: "ana".into(),
        password: "secret".into(),
        device_id: MsgId([1; 16]),
        resume_after: None,
        client: "test".into(),
        ticket: None,
    }
}

fn login_ok(resume: Resume) -> LoginOk {
    LoginOk {
        agent: 1,
        display_name: "Ana".into(),
        site: 1,
        resume,
        commands_acked: 0,
        heartbeat_ms: 3000,
        dead_after_ms: 10_000,
        server_time_ms: 0,
        ticket: Vec::new(),
        ticket_expires_ms: 0,
    }
}

fn event(n: u64) -> Event {
    Event::Delivered {
        conversation: n,
        message: n,
    }
}

/// A client and a server machine joined by a pipe. The client side plays a
/// well-behaved app (it trusts the key, stores whatever it is given); the
/// server side's answers are the test's.
struct Pair {
    now: Instant,
    client: Client,
    server: Server,
    /// Cut: bytes in either direction are lost.
    cut: bool,
    server_events: Vec<ServerEvent>,
    client_events: Vec<ClientEvent>,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let mut client = Client::new(client_cfg(), None, Outbox::new(), now, [1; 32]);
        client.connect(now);
        Self {
            now,
            client,
            server: Server::new(server_cfg(), now, [2; 32]),
            cut: false,
            server_events: Vec::new(),
            client_events: Vec::new(),
        }
    }

    /// Connected and logged in, with nothing left to say.
    fn live() -> Self {
        let mut p = Self::new();
        p.drive();
        assert!(matches!(p.server_events.pop(), Some(ServerEvent::Login(_))));
        p.server
            .accept_login(p.now, login_ok(Resume::Replay { after: 0 }))
            .unwrap();
        p.drive();
        assert!(matches!(
            p.client_events.pop(),
            Some(ClientEvent::LoggedIn(_))
        ));
        assert!(p.client.is_live() && p.server.is_live());
        p
    }

    /// Move bytes and events until both sides are quiet.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            if let Some(b) = self.client.poll_transmit(self.now) {
                moved = true;
                if !self.cut {
                    self.server.handle_bytes(self.now, &b);
                }
            }
            while let Some(ev) = self.server.poll_event().unwrap() {
                moved = true;
                self.server_events.push(ev);
            }
            if let Some(b) = self.server.poll_transmit(self.now) {
                moved = true;
                if !self.cut {
                    self.client.handle_bytes(self.now, &b);
                }
            }
            while let Some(ev) = self.client.poll_event().unwrap() {
                moved = true;
                self.client_app(&ev);
                self.client_events.push(ev);
            }
            if !moved {
                return;
            }
        }
    }

    fn client_app(&mut self, ev: &ClientEvent) {
        match ev {
            ClientEvent::ServerKey(_) => self.client.login(self.now, login()).unwrap(),
            ClientEvent::Event { seq, .. } => self.client.applied(*seq, self.now),
            ClientEvent::Snapshot(s) => self.client.snapshot_applied(s.seq, self.now),
            ClientEvent::Acked(b) => self.client.commands_acked(b.up_to).unwrap(),
            _ => {}
        }
    }

    /// Advance virtual time, firing both machines' timers on the way.
    fn advance(&mut self, by: Duration) -> (Result<(), SessionError>, Result<(), SessionError>) {
        let end = self.now + by;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = self.now.max(t);
            let c = self.client.handle_timeout(self.now);
            let s = self.server.handle_timeout(self.now);
            if c.is_err() || s.is_err() {
                return (c, s);
            }
            self.drive();
        }
        self.now = end;
        (Ok(()), Ok(()))
    }
}

#[test]
fn login_command_ack_event_ack() {
    let mut p = Pair::live();
    let id = MsgId([9; 16]);
    let seq = p.client.push(id, Action::Accept { conversation: 4 });
    p.drive();
    let Some(ServerEvent::Command(cmd)) = p.server_events.pop() else {
        panic!("no command");
    };
    assert_eq!((cmd.seq, cmd.id), (seq, id));
    p.server
        .ack(AckBatch {
            up_to: seq,
            results: vec![CommandResult {
                seq,
                id,
                outcome: Outcome::Rejected {
                    code: ErrorCode::Conflict,
                    message: "taken".into(),
                },
            }],
        })
        .unwrap();
    p.drive();
    assert!(matches!(p.client_events.pop(), Some(ClientEvent::Acked(_))));
    assert_eq!(p.client.unacked(), 0);

    p.server.push_event(1, event(1)).unwrap();
    p.drive();
    assert!(matches!(
        p.client_events.pop(),
        Some(ClientEvent::Event { seq: 1, .. })
    ));
    // The ack is batched: it goes out after the policy's delay.
    assert!(p.server_events.is_empty());
    let (c, s) = p.advance(AckPolicy::default().max_delay);
    assert!(c.is_ok() && s.is_ok());
    assert!(matches!(
        p.server_events.pop(),
        Some(ServerEvent::Acked { up_to: 1 })
    ));
}

#[test]
fn heartbeats_keep_a_quiet_link_alive_and_silence_kills_it() {
    let mut p = Pair::live();
    let (c, s) = p.advance(Duration::from_secs(30));
    assert!(c.is_ok() && s.is_ok(), "heartbeats keep both sides alive");
    p.cut = true;
    let (c, s) = p.advance(Duration::from_secs(11));
    assert!(
        matches!(c, Err(SessionError::Dead(_))) || matches!(s, Err(SessionError::Dead(_))),
        "{c:?} {s:?}"
    );
}

#[test]
fn reconnect_resends_unacked_and_resumes_from_the_cursor() {
    let mut p = Pair::live();
    p.client
        .push(MsgId([3; 16]), Action::Close { conversation: 1 });
    p.server.push_event(1, event(1)).unwrap();
    p.drive();
    assert!(matches!(
        p.server_events.pop(),
        Some(ServerEvent::Command(_))
    ));
    // The link drops before either ack: a new connection and server side.
    p.client.connect(p.now);
    p.server = Server::new(server_cfg(), p.now, [5; 32]);
    p.drive();
    let Some(ServerEvent::Login(l)) = p.server_events.pop() else {
        panic!("no login");
    };
    assert_eq!(l.resume_after, Some(1));
    p.server
        .accept_login(p.now, login_ok(Resume::Replay { after: 1 }))
        .unwrap();
    p.drive();
    let Some(ServerEvent::Command(c)) = p.server_events.pop() else {
        panic!("the unacked command is not resent");
    };
    assert_eq!(c.seq, 1);
    p.server.push_event(2, event(2)).unwrap();
    p.drive();
    assert!(matches!(
        p.client_events.pop(),
        Some(ClientEvent::Event { seq: 2, .. })
    ));
}

#[test]
fn a_gap_in_events_closes_the_client() {
    let mut p = Pair::live();
    p.server.push_event(2, event(2)).unwrap();
    let b = p.server.poll_transmit(p.now).unwrap();
    p.client.handle_bytes(p.now, &b);
    assert!(matches!(p.client.poll_event(), Err(SessionError::Gap(_))));
    assert!(p.client.is_closed());
}

#[test]
fn snapshot_parts_arrive_as_one_snapshot() {
    let mut p = Pair::new();
    p.drive();
    p.server
        .accept_login(p.now, login_ok(Resume::Snapshot))
        .unwrap();
    p.server
        .push_snapshot_part(SnapshotPart {
            conversations: Vec::new(),
            messages: Vec::new(),
        })
        .unwrap();
    p.server
        .push_snapshot(Snapshot {
            seq: 7,
            recovered: false,
            conversations: Vec::new(),
            messages: Vec::new(),
        })
        .unwrap();
    p.drive();
    assert!(matches!(
        p.client_events.as_slice(),
        [
            ClientEvent::ServerKey(_),
            ClientEvent::LoggedIn(_),
            ClientEvent::Snapshot(Snapshot { seq: 7, .. })
        ]
    ));
    assert_eq!(p.client.cursor(), 7);
    assert_eq!(p.server.last_sent(), 7);
}

#[test]
fn sign_out_waits_for_the_outbox_to_drain() {
    let mut p = Pair::live();
    let seq = p
        .client
        .push(MsgId([4; 16]), Action::Close { conversation: 2 });
    p.client.sign_out().unwrap();
    p.drive();
    assert!(matches!(
        p.server_events.as_slice(),
        [ServerEvent::Command(_)]
    ));
    p.server
        .ack(AckBatch {
            up_to: seq,
            results: Vec::new(),
        })
        .unwrap();
    p.drive();
    assert!(matches!(p.server_events.pop(), Some(ServerEvent::SignOut)));
    p.server.signed_out().unwrap();
    p.drive();
    assert!(matches!(
        p.client_events.pop(),
        Some(ClientEvent::SignedOut)
    ));
    assert!(p.client.is_closed() && p.server.is_closed());
}

#[test]
fn a_refused_login_reaches_the_client() {
    let mut p = Pair::new();
    p.drive();
    p.server.refuse(crate::agent::WireError {
        code: ErrorCode::Unauthorized,
        message: "no".into(),
        retry_after_ms: None,
    });
    p.drive();
    assert!(matches!(
        p.client_events.pop(),
        Some(ClientEvent::LoginRefused(e)) if e.code == ErrorCode::Unauthorized
    ));
    assert!(p.client.is_closed());
}

// ---------------------------------------------------------------- a raw peer

fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(u32::try_from(payload.len()).unwrap());
    b.put_slice(payload);
    b.freeze()
}

fn unframe(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push(b[4..4 + n].to_vec());
        b = &b[4 + n..];
    }
    out
}

/// A server after the hello, and the raw client keys to talk to it.
fn raw_server() -> (Server, ClientSession, Instant) {
    let now = Instant::now();
    let mut s = Server::new(server_cfg(), now, [2; 32]);
    let hs = ClientHandshake::new([3; 32]);
    s.handle_bytes(now, &frame(hs.hello()));
    assert!(s.poll_event().unwrap().is_none());
    let reply = unframe(&s.poll_transmit(now).unwrap()).remove(0);
    (s, hs.handle_reply(&reply).unwrap(), now)
}

fn send_raw(s: &mut Server, k: &mut ClientSession, now: Instant, msg: &ClientMsg) {
    let sealed = k.sealer.seal([0; 16], &msg.encode()).unwrap();
    s.handle_bytes(now, &frame(&sealed));
}

fn answers(s: &mut Server, k: &mut ClientSession, now: Instant) -> Vec<ServerMsg> {
    let Some(b) = s.poll_transmit(now) else {
        return Vec::new();
    };
    unframe(&b)
        .iter()
        .map(|f| ServerMsg::decode(&k.opener.open(f).unwrap()).unwrap())
        .collect()
}

fn error_code(msgs: &[ServerMsg]) -> Option<ErrorCode> {
    match msgs.last() {
        Some(ServerMsg::Error(e)) => Some(e.code),
        _ => None,
    }
}

#[test]
fn the_first_sealed_message_must_be_a_login() {
    let (mut s, mut k, now) = raw_server();
    send_raw(&mut s, &mut k, now, &ClientMsg::Heartbeat);
    assert!(matches!(
        s.poll_event(),
        Err(SessionError::Unexpected {
            got: "Heartbeat",
            ..
        })
    ));
    assert_eq!(
        error_code(&answers(&mut s, &mut k, now)),
        Some(ErrorCode::BadRequest)
    );
    assert!(s.is_closed());
}

#[test]
fn an_oversize_frame_before_login_is_refused_by_name() {
    let (mut s, mut k, now) = raw_server();
    s.handle_bytes(now, &1_000_000u32.to_be_bytes());
    assert!(matches!(s.poll_event(), Err(SessionError::Frame(_))));
    let msgs = answers(&mut s, &mut k, now);
    let Some(ServerMsg::Error(e)) = msgs.last() else {
        panic!("no error");
    };
    assert_eq!(e.code, ErrorCode::TooLarge);
    assert!(e.message.ends_with("before login"), "{}", e.message);
}

#[test]
fn frames_after_login_wait_for_its_answer_and_acks_are_checked() {
    let (mut s, mut k, now) = raw_server();
    send_raw(&mut s, &mut k, now, &ClientMsg::Login(login()));
    send_raw(&mut s, &mut k, now, &ClientMsg::Ack { up_to: 3 });
    assert!(matches!(s.poll_event(), Ok(Some(ServerEvent::Login(_)))));
    // Nothing more is read until the Login is answered.
    assert!(s.poll_event().unwrap().is_none());
    s.accept_login(now, login_ok(Resume::Replay { after: 2 }))
        .unwrap();
    assert!(matches!(
        s.poll_event(),
        Err(SessionError::EventAckBeyondSent { acked: 3, sent: 2 })
    ));
    assert_eq!(
        error_code(&answers(&mut s, &mut k, now)),
        Some(ErrorCode::BadRequest)
    );
}

#[test]
fn a_second_login_and_a_bad_tag_close_the_server() {
    let (mut s, mut k, now) = raw_server();
    send_raw(&mut s, &mut k, now, &ClientMsg::Login(login()));
    assert!(matches!(s.poll_event(), Ok(Some(ServerEvent::Login(_)))));
    s.accept_login(now, login_ok(Resume::Snapshot)).unwrap();
    send_raw(&mut s, &mut k, now, &ClientMsg::Login(login()));
    assert!(matches!(
        s.poll_event(),
        Err(SessionError::Unexpected { .. })
    ));

    let (mut s, _k, now) = raw_server();
    s.handle_bytes(now, &frame(&[0u8; 64]));
    assert!(matches!(s.poll_event(), Err(SessionError::Open(_))));
    assert!(s.poll_transmit(now).is_none(), "a bad tag gets no answer");
}

#[test]
fn events_must_go_out_in_order() {
    let (mut s, mut k, now) = raw_server();
    send_raw(&mut s, &mut k, now, &ClientMsg::Login(login()));
    assert!(s.poll_event().unwrap().is_some());
    s.accept_login(now, login_ok(Resume::Replay { after: 5 }))
        .unwrap();
    let seq: Seq = 5;
    assert!(matches!(
        s.push_event(seq, event(5)),
        Err(SessionError::EventOutOfOrder { .. })
    ));
    s.push_event(6, event(6)).unwrap();
    assert_eq!(s.last_sent(), 6);
}

/// A burst pushed to an agent (a thousand visitors arriving) goes out and
/// leaves no buffer behind: the gateway holds one machine per agent, so a
/// buffer kept at its high-water mark costs every agent that much for the
/// rest of its session.
#[test]
fn a_written_burst_leaves_no_output_buffer_behind() {
    let mut p = Pair::live();
    for seq in 1..=1_000 {
        p.server.push_event(seq, event(seq)).unwrap();
    }
    assert!(p.server.pending_transmit() > 64 * 1024);
    let mut written = Vec::new();
    while let Some(b) = p.server.poll_transmit(p.now) {
        written.push(b);
    }
    assert_eq!(p.server.pending_transmit(), 0);
    drop(written);
    // The next event reuses whatever the buffer still owns.
    p.server.push_event(1_001, event(1_001)).unwrap();
    assert!(
        p.server.retained_out_capacity() <= 16 * 1024,
        "kept {} bytes of output buffer after the burst was written",
        p.server.retained_out_capacity()
    );
}

/// Messages a few KB each (the parts of a visitor list, 8 KiB in the
/// reference server) written two at a time, as the gateway does: the
/// buffer they passed through is not kept at their high-water mark. 200
/// agents each kept 25 KB that way, idle, once visitors had arrived.
#[test]
fn written_parts_of_a_few_kb_leave_no_output_buffer_behind() {
    let mut p = Pair::live();
    let part = super::server::EncodedLive::new(LiveEvent::SiteTags(
        (0..100)
            .map(|i| format!("tag-{i:04}-{}", "x".repeat(80)))
            .collect(),
    ));
    assert!(part.len() > 8 * 1024, "{}", part.len());
    for _ in 0..5 {
        p.server.live_encoded(&part).unwrap();
        p.server.live_encoded(&part).unwrap();
        let written: Vec<_> = std::iter::from_fn(|| p.server.poll_transmit(p.now)).collect();
        drop(written);
    }
    // The next part gets a buffer of its own size, not the two parts'
    // buffer back (which the session held on to all along).
    p.server.live_encoded(&part).unwrap();
    assert!(
        p.server.retained_out_capacity() < part.len() + 4 * 1024,
        "{} bytes of output buffer for a part of {}",
        p.server.retained_out_capacity(),
        part.len()
    );
}

#[test]
fn a_live_event_encoded_once_reaches_two_sessions_as_itself() {
    let team = LiveEvent::SiteTags(vec!["billing".into(), "vip".into()]);
    let shared = super::server::EncodedLive::new(team.clone());
    let (mut a, mut b) = (Pair::live(), Pair::live());
    for p in [&mut a, &mut b] {
        p.server.live_encoded(&shared).unwrap();
        p.server.live_encoded(&shared).unwrap();
        p.drive();
        let got: Vec<_> = p
            .client_events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Live(l) => Some(l.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(got, [team.clone(), team.clone()]);
    }
}
