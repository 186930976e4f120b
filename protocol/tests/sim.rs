//! A deterministic client/server simulation of the agent channel under
//! virtual time and a hostile network.
//!
//! The promise being tested is the product's (README.md: "no message is ever
//! lost or shown twice"; RELIABILITY.md says what that covers). Both ends
//! are the shipped session machines: every connection's server side is a
//! `session::server::Server`, driven the way the gateway drives it (a Login
//! answered, each command committed and acked at once, the log pushed in
//! order), and the agent app drives a `session::client::Client` the way the
//! client core does (stored before it is pushed, applied before it is
//! acked). The harness supplies only what a real deployment would: a
//! network ([`Net`], [`Link`]), the app's durable outbox and cursor
//! ([`SimClient`]), the server's durable state ([`SimServer`]), and an
//! independent observer ([`Checker`]) that counts every loss, duplicate and
//! reordering it sees.
//!
//! Time is virtual: a fixed base [`Instant`] plus simulated durations, and
//! the loop jumps straight to the next instant anything is due. Nothing
//! sleeps, and past picking the base nothing reads the wall clock, so one
//! seed is one exact run and hours of faults take seconds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::DEFAULT_MAX_FRAME;
use holdfast_protocol::agent::{
    AckBatch, Action, Author, ChatMessage, Command, CommandResult, ConversationId,
    ConversationInfo, ConversationState, Event, Login, LoginOk, MessageId, Outcome, Presence,
    Resume, Seq,
};
use holdfast_protocol::backoff::{Backoff, BackoffConfig};
use holdfast_protocol::delivery::{AckPolicy, Inbox, Outbox, Verdict};
use holdfast_protocol::handshake::ServerIdentity;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::session::SessionError;
use holdfast_protocol::session::client::{
    Client, ClientConfig as SessionClientConfig, ClientEvent, Queued,
};
use holdfast_protocol::session::server::{Server, ServerConfig, ServerEvent};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A handshake (hello, reply, login, login-ok) that has not finished by
/// then is abandoned. Liveness cannot cover it: before the session exists
/// there is no way to send a heartbeat.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Conversations the traffic is spread over, so per-conversation commit
/// order is checked on interleaved streams.
const CONVERSATIONS: u64 = 4;
/// Wall-clock-looking epoch for ids and timestamps; only differences matter.
const EPOCH_MS: u64 = 1_750_000_000_000;

// ====================================================================== network

type LinkId = u64;

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Client,
    Server,
}

impl End {
    fn idx(self) -> usize {
        match self {
            End::Client => 0,
            End::Server => 1,
        }
    }

    fn peer(self) -> End {
        match self {
            End::Client => End::Server,
            End::Server => End::Client,
        }
    }
}

/// What a socket read can return.
#[derive(Debug)]
enum Chunk {
    Data(Vec<u8>),
    /// The peer closed or the connection was torn down under us.
    Fin,
}

/// The send side failed: the connection is gone.
#[derive(Debug)]
struct LinkDown;

/// How hostile an individual link is, apart from the faults.
#[derive(Clone, Copy, Debug)]
struct LinkShape {
    min_latency: Duration,
    max_latency: Duration,
    /// Chance that a chunk is stuck behind a latency spike.
    spike_p: f64,
    spike: Duration,
    /// Chance that a chunk is only a few bytes, which splits frame headers.
    tiny_chunk_p: f64,
    max_chunk: usize,
}

impl Default for LinkShape {
    fn default() -> Self {
        Self {
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(60),
            spike_p: 0.02,
            spike: Duration::from_millis(800),
            tiny_chunk_p: 0.2,
            max_chunk: 1500,
        }
    }
}

/// One direction of a TCP-like byte stream: in order, with latency.
#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(Instant, Chunk)>,
    /// When the last queued chunk arrives; later chunks never overtake it.
    tail: Option<Instant>,
}

impl Pipe {
    fn push(&mut self, at: Instant, chunk: Chunk) {
        let at = self.tail.map_or(at, |t| t.max(at));
        self.tail = Some(at);
        self.queue.push_back((at, chunk));
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.tail = None;
    }
}

/// A connection between the client and the server.
#[derive(Debug)]
struct Link {
    /// Indexed by the *receiving* end.
    pipes: [Pipe; 2],
    /// The end has not been closed: it may still send and receive.
    open: [bool; 2],
    /// A reset this end has not noticed yet: its next send fails.
    reset_pending: [bool; 2],
    /// Bytes in both directions silently vanish, and so does any FIN.
    blackholed: bool,
    /// Reset: the network has forgotten the connection, so a later close by
    /// the end that was told delivers no FIN to the end that was not.
    severed: bool,
}

impl Link {
    fn new() -> Self {
        Self {
            pipes: [Pipe::default(), Pipe::default()],
            open: [true, true],
            reset_pending: [false, false],
            blackholed: false,
            severed: false,
        }
    }

    fn send(
        &mut self,
        from: End,
        bytes: &[u8],
        now: Instant,
        shape: &LinkShape,
        rng: &mut StdRng,
    ) -> Result<(), LinkDown> {
        let me = from.idx();
        if !self.open[me] {
            return Err(LinkDown);
        }
        if self.reset_pending[me] {
            // The write hits the peer's RST: this is how a half-open
            // connection is noticed without waiting for silence.
            self.open[me] = false;
            return Err(LinkDown);
        }
        if self.blackholed || self.severed || !self.open[from.peer().idx()] {
            return Ok(());
        }
        let pipe = &mut self.pipes[from.peer().idx()];
        let mut rest = bytes;
        while !rest.is_empty() {
            let size = if rng.random_bool(shape.tiny_chunk_p) {
                rng.random_range(1..=4)
            } else {
                rng.random_range(1..=shape.max_chunk)
            }
            .min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut latency = rng.random_range(shape.min_latency..=shape.max_latency);
            if rng.random_bool(shape.spike_p) {
                latency += shape.spike;
            }
            pipe.push(now + latency, Chunk::Data(chunk.to_vec()));
        }
        Ok(())
    }

    /// `from` closes its end. A FIN follows the data already in flight.
    fn close(&mut self, from: End, now: Instant, shape: &LinkShape) {
        self.open[from.idx()] = false;
        self.pipes[from.idx()].clear();
        let peer = from.peer().idx();
        if !self.blackholed && !self.severed && self.open[peer] {
            self.pipes[peer].push(now + shape.min_latency, Chunk::Fin);
        }
    }

    fn poll(&mut self, to: End, now: Instant) -> Option<Chunk> {
        let pipe = &mut self.pipes[to.idx()];
        if !self.open[to.idx()] {
            pipe.clear();
            return None;
        }
        if pipe.queue.front().is_some_and(|(at, _)| *at <= now) {
            return pipe.queue.pop_front().map(|(_, c)| c);
        }
        None
    }

    fn next_delivery(&self) -> Option<Instant> {
        [End::Client, End::Server]
            .into_iter()
            .filter(|e| self.open[e.idx()])
            .filter_map(|e| self.pipes[e.idx()].queue.front().map(|(at, _)| *at))
            .min()
    }

    fn finished(&self) -> bool {
        !self.open[0] && !self.open[1]
    }
}

/// Kinds of network and process faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Both ends learn at once; data in flight is lost.
    Close,
    /// One end learns at once; the other only when its next write fails.
    Reset,
    /// Everything vanishes silently until liveness declares the peer dead.
    Blackhole,
    /// The agent app dies and restarts from its durable outbox and cursor.
    Restart,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FaultCounts {
    close: u64,
    reset: u64,
    blackhole: u64,
    restart: u64,
}

impl FaultCounts {
    fn total(&self) -> u64 {
        self.close + self.reset + self.blackhole + self.restart
    }

    fn add(&mut self, o: &Self) {
        self.close += o.close;
        self.reset += o.reset;
        self.blackhole += o.blackhole;
        self.restart += o.restart;
    }
}

/// All links, and the randomness that shapes them.
#[derive(Debug)]
struct Net {
    links: BTreeMap<LinkId, Link>,
    next_id: LinkId,
    shape: LinkShape,
    rng: StdRng,
}

impl Net {
    fn new(seed: u64, shape: LinkShape) -> Self {
        Self {
            links: BTreeMap::new(),
            next_id: 1,
            shape,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn dial(&mut self) -> LinkId {
        let id = self.next_id;
        self.next_id += 1;
        self.links.insert(id, Link::new());
        id
    }

    fn send(&mut self, id: LinkId, from: End, bytes: &[u8], now: Instant) -> Result<(), LinkDown> {
        match self.links.get_mut(&id) {
            Some(link) => link.send(from, bytes, now, &self.shape, &mut self.rng),
            None => Err(LinkDown),
        }
    }

    fn close(&mut self, id: LinkId, from: End, now: Instant) {
        if let Some(link) = self.links.get_mut(&id) {
            link.close(from, now, &self.shape);
        }
    }

    /// Whether a peer may legitimately fall silent: nothing gets through.
    fn silent(&self, id: LinkId) -> bool {
        self.links
            .get(&id)
            .is_none_or(|l| l.blackholed || l.severed)
    }

    /// Up in both directions and not already broken in some quieter way.
    fn healthy(&self, id: LinkId) -> bool {
        self.links
            .get(&id)
            .is_some_and(|l| !l.blackholed && !l.severed && l.open == [true, true])
    }

    fn fault(&mut self, id: LinkId, fault: Fault, now: Instant) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        for p in &mut link.pipes {
            p.clear();
        }
        match fault {
            Fault::Close => {
                for end in [End::Client, End::Server] {
                    if link.open[end.idx()] {
                        link.pipes[end.idx()].push(now, Chunk::Fin);
                    }
                }
            }
            Fault::Reset => {
                let (told, later) = if self.rng.random_bool(0.5) {
                    (End::Client, End::Server)
                } else {
                    (End::Server, End::Client)
                };
                if link.open[told.idx()] {
                    link.pipes[told.idx()].push(now, Chunk::Fin);
                }
                link.reset_pending[later.idx()] = true;
                link.severed = true;
            }
            Fault::Blackhole => link.blackholed = true,
            Fault::Restart => {}
        }
    }

    /// Every chunk due by `now`, in a deterministic order.
    fn due(&mut self, now: Instant) -> Vec<(LinkId, End, Chunk)> {
        let mut out = Vec::new();
        for (id, link) in &mut self.links {
            for end in [End::Client, End::Server] {
                while let Some(c) = link.poll(end, now) {
                    out.push((*id, end, c));
                }
            }
        }
        out
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.links.values().filter_map(Link::next_delivery).min()
    }

    fn gc(&mut self) {
        self.links.retain(|_, l| !l.finished());
    }
}

// ====================================================================== framing

/// Why an endpoint dropped a connection.
#[derive(Debug)]
enum Why {
    PeerClosed,
    SendFailed,
    Dead,
    HandshakeTimeout,
    Framing(String),
    Protocol(String),
    Superseded,
}

/// How often each [`Why`] happened on one side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DropCounts {
    peer_closed: u64,
    send_failed: u64,
    dead: u64,
    handshake_timeout: u64,
    framing: u64,
    protocol: u64,
    superseded: u64,
}

/// Keep the first few framing and protocol errors for the report: in a
/// healthy run there are none, and when there are, the text says why.
fn note_error(errors: &mut Vec<String>, why: &Why) {
    if let Why::Framing(e) | Why::Protocol(e) = why
        && errors.len() < 5
    {
        errors.push(e.clone());
    }
}

impl DropCounts {
    fn count(&mut self, why: &Why) {
        match why {
            Why::PeerClosed => self.peer_closed += 1,
            Why::SendFailed => self.send_failed += 1,
            Why::Dead => self.dead += 1,
            Why::HandshakeTimeout => self.handshake_timeout += 1,
            Why::Framing(_) => self.framing += 1,
            Why::Protocol(_) => self.protocol += 1,
            Why::Superseded => self.superseded += 1,
        }
    }

    fn add(&mut self, o: &Self) {
        self.peer_closed += o.peer_closed;
        self.send_failed += o.send_failed;
        self.dead += o.dead;
        self.handshake_timeout += o.handshake_timeout;
        self.framing += o.framing;
        self.protocol += o.protocol;
        self.superseded += o.superseded;
    }
}

fn unix_ms(start: Instant, now: Instant) -> u64 {
    EPOCH_MS + u64::try_from((now - start).as_millis()).unwrap()
}

fn at_ms(start: Instant, now: Instant) -> i64 {
    i64::try_from(unix_ms(start, now)).unwrap()
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

// ====================================================================== checker

/// The independent observer. Both sides report what they do; the checker
/// holds them to "every command applied exactly once, in order, and never
/// acked before it was applied; every event applied exactly once, in seq
/// order, and identical to what the server logged".
#[derive(Debug, Default)]
struct Checker {
    commands: Vec<CommandTrace>,
    by_id: HashMap<MsgId, usize>,
    server_last_seq: Seq,
    /// The server's event log, as appended.
    log: Vec<Event>,
    /// How often the client applied each logged event.
    applied: Vec<u32>,
    client_last_seq: Seq,
    reordered_up: u64,
    reordered_down: u64,
    acked_early: u64,
    mismatched: u64,
}

#[derive(Debug)]
struct CommandTrace {
    seq: Seq,
    applied: u32,
    /// The client dropped it from its outbox, believing it done.
    released: bool,
    result: Option<CommandResult>,
}

/// What the checker found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Violations {
    lost_up: u64,
    lost_down: u64,
    duplicated_up: u64,
    duplicated_down: u64,
    reordered_up: u64,
    reordered_down: u64,
    /// Released by the client before the server had applied it. Loss waiting
    /// to happen even if a resend happened to save it.
    acked_early: u64,
    /// An event or result that differs from what the server recorded.
    mismatched: u64,
}

impl Violations {
    fn lost(&self) -> u64 {
        self.lost_up + self.lost_down
    }
    fn duplicated(&self) -> u64 {
        self.duplicated_up + self.duplicated_down
    }
    fn reordered(&self) -> u64 {
        self.reordered_up + self.reordered_down
    }

    fn add(&mut self, o: &Self) {
        self.lost_up += o.lost_up;
        self.lost_down += o.lost_down;
        self.duplicated_up += o.duplicated_up;
        self.duplicated_down += o.duplicated_down;
        self.reordered_up += o.reordered_up;
        self.reordered_down += o.reordered_down;
        self.acked_early += o.acked_early;
        self.mismatched += o.mismatched;
    }
}

impl Checker {
    fn command_created(&mut self, id: MsgId, seq: Seq) {
        let prev = self.by_id.insert(id, self.commands.len());
        assert!(prev.is_none(), "the client reused id {id}");
        self.commands.push(CommandTrace {
            seq,
            applied: 0,
            released: false,
            result: None,
        });
    }

    fn server_applied(&mut self, id: MsgId, seq: Seq, result: &CommandResult) {
        let Some(&i) = self.by_id.get(&id) else {
            self.mismatched += 1;
            return;
        };
        let t = &mut self.commands[i];
        t.applied += 1;
        if t.seq != seq {
            self.mismatched += 1;
        }
        if seq != self.server_last_seq + 1 {
            self.reordered_up += 1;
        }
        self.server_last_seq = self.server_last_seq.max(seq);
        t.result.get_or_insert_with(|| result.clone());
    }

    fn client_released(&mut self, id: MsgId) {
        let t = &mut self.commands[self.by_id[&id]];
        if t.applied == 0 {
            self.acked_early += 1;
        }
        t.released = true;
    }

    /// A result the server reported for a command, first time or re-ack.
    fn result_seen(&mut self, r: &CommandResult) {
        let ok = self
            .by_id
            .get(&r.id)
            .and_then(|&i| self.commands[i].result.as_ref())
            .is_some_and(|original| original == r);
        if !ok {
            self.mismatched += 1;
        }
    }

    fn server_appended(&mut self, seq: Seq, event: &Event) {
        if seq != self.log.len() as u64 + 1 {
            self.mismatched += 1;
        }
        self.log.push(event.clone());
        self.applied.push(0);
    }

    fn client_applied(&mut self, seq: Seq, event: &Event) {
        let Some(i) = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1)) else {
            self.mismatched += 1;
            return;
        };
        if i >= self.log.len() || self.log[i] != *event {
            self.mismatched += 1;
            return;
        }
        if seq > self.client_last_seq && seq != self.client_last_seq + 1 {
            self.reordered_down += 1;
        }
        self.client_last_seq = self.client_last_seq.max(seq);
        self.applied[i] += 1;
    }

    /// Settle the books. `client_view` and `server_convs` are each side's
    /// message ids per conversation in the order that side committed them.
    fn finish(
        &self,
        client_view: &BTreeMap<ConversationId, Vec<MessageId>>,
        server_convs: &BTreeMap<ConversationId, Vec<MessageId>>,
    ) -> Violations {
        let mut v = Violations {
            reordered_up: self.reordered_up,
            reordered_down: self.reordered_down,
            acked_early: self.acked_early,
            mismatched: self.mismatched,
            ..Violations::default()
        };
        for t in &self.commands {
            match t.applied {
                0 => v.lost_up += 1,
                n => v.duplicated_up += u64::from(n - 1),
            }
        }
        for &n in &self.applied {
            match n {
                0 => v.lost_down += 1,
                n => v.duplicated_down += u64::from(n - 1),
            }
        }
        // Within a conversation everyone must see the server's commit order.
        for (conv, seen) in client_view {
            let committed = server_convs.get(conv).map(Vec::as_slice).unwrap_or(&[]);
            let pos: HashMap<MessageId, usize> =
                committed.iter().enumerate().map(|(i, m)| (*m, i)).collect();
            let mut last = None;
            for m in seen {
                match pos.get(m) {
                    None => v.mismatched += 1,
                    Some(&p) => {
                        if last.is_some_and(|l| p <= l) {
                            v.reordered_down += 1;
                        }
                        last = Some(p);
                    }
                }
            }
        }
        v
    }
}

// ====================================================================== client

/// How the client treats its outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutboxPolicy {
    /// What the shipped outbox does: clear an entry only on the server's ack.
    ClearOnAck,
    /// The classic bug: treat "written to the socket" as "delivered".
    ClearOnTransmit,
}

/// One connection as the app sees it; the protocol state is the machine's.
#[derive(Debug)]
struct ClientConn {
    link: LinkId,
    /// A login not complete by then is abandoned.
    deadline: Instant,
    ready: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ClientStats {
    dials: u64,
    logins: u64,
    dropped: DropCounts,
    commands_sent: u64,
    duplicate_events_ignored: u64,
    acks_sent: u64,
    heartbeats_sent: u64,
    /// Peers declared dead on a link that was not silent: liveness bugs.
    spurious_dead: u64,
    /// Redial delays past the backoff schedule.
    backoff_violations: u64,
}

fn session_config() -> SessionClientConfig {
    SessionClientConfig {
        liveness: LivenessConfig::default(),
        ack_policy: AckPolicy::default(),
        max_frame: DEFAULT_MAX_FRAME,
    }
}

/// The agent app: the shipped `session::client` machine, a durable outbox
/// of commands and a durable event cursor beside it, and one connection at
/// a time.
#[derive(Debug)]
struct SimClient {
    device: MsgId,
    policy: OutboxPolicy,
    start: Instant,
    rng: StdRng,
    backoff: Backoff,
    // Durable: survives disconnects and restarts.
    outbox: BTreeMap<Seq, Command>,
    acked: Seq,
    cursor: Seq,
    view: BTreeMap<ConversationId, Vec<MessageId>>,
    // Volatile: rebuilt from the durable state on restart.
    machine: Client,
    conn: Option<ClientConn>,
    redial_at: Instant,
    next_command_at: Instant,
    command_gap: Duration,
    /// The app's counts, and its machines' from before the last restart
    /// (see [`SimClient::stats`]).
    stats: ClientStats,
    errors: Vec<String>,
}

impl SimClient {
    fn new(cfg: &SimConfig, start: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x00C1_1E47);
        // A cursor of 0, not none: the sim server always replays.
        let machine = Client::new(
            session_config(),
            Some(0),
            Outbox::new(),
            start,
            rng.random(),
        );
        Self {
            device: MsgId::generate(EPOCH_MS, &mut rng),
            policy: cfg.policy,
            start,
            backoff: Backoff::new(BackoffConfig::default(), rng.random()),
            rng,
            outbox: BTreeMap::new(),
            acked: 0,
            cursor: 0,
            view: BTreeMap::new(),
            machine,
            conn: None,
            redial_at: start,
            next_command_at: start,
            command_gap: cfg.command_gap,
            stats: ClientStats::default(),
            errors: Vec::new(),
        }
    }

    /// This app's counts and its machines'.
    fn stats(&self) -> ClientStats {
        let m = self.machine.stats();
        ClientStats {
            commands_sent: self.stats.commands_sent + m.commands_sent,
            duplicate_events_ignored: self.stats.duplicate_events_ignored + m.duplicate_events,
            acks_sent: self.stats.acks_sent + m.acks_sent,
            heartbeats_sent: self.stats.heartbeats_sent + m.heartbeats_sent,
            ..self.stats
        }
    }

    fn link(&self) -> Option<LinkId> {
        self.conn.as_ref().map(|c| c.link)
    }

    fn ready(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.ready)
    }

    fn wants_dial(&self, now: Instant) -> bool {
        self.conn.is_none() && now >= self.redial_at
    }

    /// A new connection: the machine sends its hello, and rewinds its
    /// outbox at login so every unacked command goes out again, in order.
    fn start(&mut self, link: LinkId, net: &mut Net, checker: &mut Checker, now: Instant) {
        self.stats.dials += 1;
        self.machine.connect(now);
        self.conn = Some(ClientConn {
            link,
            deadline: now + HANDSHAKE_TIMEOUT,
            ready: false,
        });
        if let Err(why) = self.transmit(net, checker, now) {
            self.disconnect(net, now, why);
        }
    }

    fn disconnect(&mut self, net: &mut Net, now: Instant, why: Why) {
        let mut was_ready = false;
        if let Some(conn) = self.conn.take() {
            was_ready = conn.ready;
            net.close(conn.link, End::Client, now);
        }
        self.machine.disconnect();
        self.stats.dropped.count(&why);
        note_error(&mut self.errors, &why);
        let delay = self.backoff.next_delay();
        // A client that got as far as logging in starts its backoff over,
        // and no client ever waits longer than the cap.
        let cfg = BackoffConfig::default();
        if delay > cfg.cap || (was_ready && delay > cfg.base) {
            self.stats.backoff_violations += 1;
        }
        self.redial_at = now + delay;
    }

    /// The app process dies and comes back: everything volatile is gone, and
    /// the machine is rebuilt from what was durable.
    fn restart(&mut self, net: &mut Net, now: Instant) {
        if let Some(conn) = self.conn.take() {
            // The kernel closes the dead process's socket.
            net.close(conn.link, End::Client, now);
        }
        self.stats = self.stats();
        let items = self.outbox.iter().map(|(seq, c)| {
            (
                *seq,
                Queued {
                    id: c.id,
                    action: c.action.clone(),
                },
            )
        });
        let outbox = Outbox::restore(self.acked, items);
        self.machine = Client::new(
            session_config(),
            Some(self.cursor),
            outbox,
            now,
            self.rng.random(),
        );
        self.backoff = Backoff::new(BackoffConfig::default(), self.rng.random());
        self.redial_at = now + Duration::from_millis(self.rng.random_range(100..2000));
    }

    fn on_chunk(&mut self, chunk: Chunk, net: &mut Net, checker: &mut Checker, now: Instant) {
        if self.conn.is_none() {
            return;
        }
        let result = match chunk {
            Chunk::Fin => Err(Why::PeerClosed),
            Chunk::Data(bytes) => {
                self.machine.handle_bytes(now, &bytes);
                self.drive(net, checker, now)
            }
        };
        if let Err(why) = result {
            self.disconnect(net, now, why);
        }
    }

    /// Act on everything the machine surfaces, then write what it queued.
    fn drive(&mut self, net: &mut Net, checker: &mut Checker, now: Instant) -> Result<(), Why> {
        loop {
            match self.machine.poll_event() {
                Ok(Some(ev)) => self.on_event(ev, checker, now)?,
                Ok(None) => break,
                Err(e) => return Err(why(e)),
            }
        }
        self.transmit(net, checker, now)
    }

    fn on_event(
        &mut self,
        ev: ClientEvent,
        checker: &mut Checker,
        now: Instant,
    ) -> Result<(), Why> {
        match ev {
            ClientEvent::ServerKey(_) => {
                let login = Login {
                    username: "agent".into(),
                    password: "hunter2".into(),
                    device_id: self.device,
                    // The machine fills in the cursor, which is stored with
                    // the data it covers, so resuming from it can neither
                    // skip nor repeat an event.
                    resume_after: None,
                    client: "holdfast-sim".into(),
                    ticket: None,
                };
                self.machine.login(now, login).map_err(why)
            }
            ClientEvent::LoggedIn(ok) => {
                // A replay from before the cursor is allowed (the server's
                // copy may lag; the machine drops the repeats); one from
                // after it would skip events.
                if !matches!(ok.resume, Resume::Replay { after } if after <= self.cursor) {
                    return Err(Why::Protocol(format!("resume {:?}", ok.resume)));
                }
                self.release(ok.commands_acked, checker)?;
                if let Some(c) = self.conn.as_mut() {
                    c.ready = true;
                }
                self.backoff.reset();
                self.stats.logins += 1;
                Ok(())
            }
            ClientEvent::Acked(batch) => {
                for r in &batch.results {
                    checker.result_seen(r);
                }
                self.release(batch.up_to, checker)
            }
            ClientEvent::Event { seq, event } => {
                // "Apply and store the cursor in one transaction", then tell
                // the machine, which acks it.
                checker.client_applied(seq, &event);
                if let Event::Message(m) = &event {
                    self.view.entry(m.conversation).or_default().push(m.message);
                }
                self.cursor = seq;
                self.machine.applied(seq, now);
                Ok(())
            }
            other => Err(Why::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Forget commands the server says are durable: from the durable
    /// outbox first, then from the machine's.
    fn release(&mut self, up_to: Seq, checker: &mut Checker) -> Result<(), Why> {
        if up_to <= self.acked {
            return Ok(());
        }
        let kept = self.outbox.split_off(&(up_to + 1));
        for cmd in std::mem::replace(&mut self.outbox, kept).into_values() {
            checker.client_released(cmd.id);
        }
        self.acked = up_to;
        self.machine.commands_acked(up_to).map_err(why)
    }

    /// Write what the machine has queued.
    fn transmit(&mut self, net: &mut Net, checker: &mut Checker, now: Instant) -> Result<(), Why> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let mut wrote = false;
        while let Some(bytes) = self.machine.poll_transmit(now) {
            net.send(link, End::Client, &bytes, now)
                .map_err(|LinkDown| Why::SendFailed)?;
            wrote = true;
        }
        // The bug under test: every command pushed is in those bytes once
        // the session is live, and it forgets them as if acked.
        if wrote && self.policy == OutboxPolicy::ClearOnTransmit && self.machine.is_live() {
            self.release(self.machine.next_seq() - 1, checker)?;
        }
        Ok(())
    }

    /// The user acts: commands are written to the (durable) outbox first and
    /// sent whenever a connection is up.
    fn generate_commands(&mut self, checker: &mut Checker, now: Instant) {
        let burst = if self.rng.random_bool(0.1) {
            self.rng.random_range(2..=20)
        } else {
            1
        };
        for _ in 0..burst {
            let seq = self.machine.next_seq();
            let id = MsgId::generate(unix_ms(self.start, now), &mut self.rng);
            let conversation = self.rng.random_range(1..=CONVERSATIONS);
            let action = match self.rng.random_range(0..20) {
                0 => Action::SetPresence {
                    presence: Presence::Away,
                },
                1 => Action::Accept { conversation },
                2 => Action::Close { conversation },
                _ => Action::Send {
                    conversation,
                    body: format!("agent #{seq}: 了解しました 👍"),
                    attachment: None,
                },
            };
            checker.command_created(id, seq);
            self.outbox.insert(
                seq,
                Command {
                    id,
                    seq,
                    action: action.clone(),
                },
            );
            let pushed = self.machine.push(id, action);
            assert_eq!(pushed, seq);
        }
        let gap = self.rng.random_range(Duration::ZERO..=self.command_gap * 2);
        self.next_command_at = now + gap;
    }

    fn poll(&mut self, net: &mut Net, checker: &mut Checker, now: Instant, workload: bool) {
        if workload && now >= self.next_command_at {
            self.generate_commands(checker, now);
        }
        if let Err(why) = self.poll_conn(net, checker, now) {
            self.disconnect(net, now, why);
        }
    }

    fn poll_conn(&mut self, net: &mut Net, checker: &mut Checker, now: Instant) -> Result<(), Why> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        if !conn.ready && now >= conn.deadline {
            return Err(Why::HandshakeTimeout);
        }
        if let Err(e) = self.machine.handle_timeout(now) {
            if matches!(e, SessionError::Dead(_)) && !net.silent(conn.link) {
                self.stats.spurious_dead += 1;
            }
            return Err(why(e));
        }
        self.transmit(net, checker, now)
    }

    fn next_wakeup(&self, workload: bool) -> Option<Instant> {
        let t = workload.then_some(self.next_command_at);
        let Some(conn) = &self.conn else {
            return min_opt(t, Some(self.redial_at));
        };
        let t = if conn.ready {
            t
        } else {
            min_opt(t, Some(conn.deadline))
        };
        min_opt(t, self.machine.poll_timeout())
    }
}

// ====================================================================== server

/// What the server must never forget: it is committed before anything is
/// acked, and survives every connection.
#[derive(Debug, Default)]
struct Durable {
    /// Idempotency keys: command id → the result it got the first time.
    results: HashMap<MsgId, CommandResult>,
    /// The device's commands apply contiguously; this is the last one.
    applied_seq: Seq,
    /// Message ids per conversation in commit order.
    conversations: BTreeMap<ConversationId, Vec<MessageId>>,
    /// The agent's event log; an event's seq is its index + 1.
    events: Vec<Event>,
    next_message: MessageId,
}

impl Durable {
    fn append(&mut self, event: Event, checker: &mut Checker) {
        if let Event::Message(m) = &event {
            self.conversations
                .entry(m.conversation)
                .or_default()
                .push(m.message);
        }
        self.events.push(event);
        checker.server_appended(
            self.events.len() as u64,
            &self.events[self.events.len() - 1],
        );
    }

    fn new_message_id(&mut self) -> MessageId {
        self.next_message += 1;
        self.next_message
    }
}

/// One connection as the server sees it: the shipped session machine, and
/// what the gateway keeps beside it (the pre-auth deadline, the device).
#[derive(Debug)]
struct ServerConn {
    link: LinkId,
    machine: Server,
    /// A login not complete by then is abandoned, as by the gateway's
    /// pre-auth deadline.
    deadline: Instant,
    device: Option<MsgId>,
    closed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ServerStats {
    accepted: u64,
    logins: u64,
    dropped: DropCounts,
    duplicates_reacked: u64,
    events_sent: u64,
    /// Peers declared dead on a link that was not silent: liveness bugs.
    spurious_dead: u64,
    /// Events deliberately replayed again from before the client's cursor.
    events_resent: u64,
    ack_batches: u64,
    visitor_messages: u64,
}

/// Everything but the connection list, so a connection can be borrowed
/// mutably alongside the state it acts on.
#[derive(Debug)]
struct ServerCore {
    identity: Arc<ServerIdentity>,
    start: Instant,
    rng: StdRng,
    durable: Durable,
    stats: ServerStats,
    errors: Vec<String>,
}

/// The server: the shipped `session::server` machine per connection, driven
/// the way `server/src/agent_gw.rs` drives it (answer a Login, commit a
/// command and ack it at once, push the log in order), over durable state.
#[derive(Debug)]
struct SimServer {
    core: ServerCore,
    conns: Vec<ServerConn>,
}

impl SimServer {
    fn new(cfg: &SimConfig, start: Instant) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x005E_47E4);
        Self {
            core: ServerCore {
                identity: Arc::new(ServerIdentity::from_secret_bytes(rng.random())),
                start,
                rng,
                durable: Durable::default(),
                stats: ServerStats::default(),
                errors: Vec::new(),
            },
            conns: Vec::new(),
        }
    }

    fn accept(&mut self, link: LinkId, now: Instant) {
        self.core.stats.accepted += 1;
        let machine = Server::new(
            ServerConfig {
                identity: self.core.identity.clone(),
                liveness: LivenessConfig::default(),
                max_frame: DEFAULT_MAX_FRAME,
                preauth_max_frame: DEFAULT_MAX_FRAME,
            },
            now,
            self.core.rng.random(),
        );
        self.conns.push(ServerConn {
            link,
            machine,
            deadline: now + HANDSHAKE_TIMEOUT,
            device: None,
            closed: false,
        });
    }

    fn on_chunk(
        &mut self,
        link: LinkId,
        chunk: Chunk,
        net: &mut Net,
        checker: &mut Checker,
        now: Instant,
    ) {
        let Some(i) = self.conns.iter().position(|c| c.link == link && !c.closed) else {
            return;
        };
        let result = match chunk {
            Chunk::Fin => Err(Why::PeerClosed),
            Chunk::Data(bytes) => {
                self.conns[i].machine.handle_bytes(now, &bytes);
                self.core.drive(&mut self.conns[i], net, checker, now)
            }
        };
        match result {
            Err(why) => self.core.close(&mut self.conns[i], net, now, why),
            Ok(true) => {
                // A device has one session: a new login retires the older
                // ones (remove-if-same, never the newer).
                let device = self.conns[i].device;
                for (j, c) in self.conns.iter_mut().enumerate() {
                    if j != i && !c.closed && c.device == device {
                        self.core.close(c, net, now, Why::Superseded);
                    }
                }
            }
            Ok(false) => {}
        }
    }

    /// A visitor writes in one of the conversations: downstream traffic the
    /// client did not cause.
    fn visitor_writes(&mut self, checker: &mut Checker, now: Instant) {
        let core = &mut self.core;
        let conversation = core.rng.random_range(1..=CONVERSATIONS);
        let message = core.durable.new_message_id();
        let event = Event::Message(ChatMessage {
            conversation,
            message,
            client_id: MsgId::generate(unix_ms(core.start, now), &mut core.rng),
            author: Author::Visitor {
                visitor: format!("visitor-{conversation}"),
            },
            body: format!("visitor #{message}: 你好, is anyone there? 🙋"),
            at_ms: at_ms(core.start, now),
            attachment: None,
        });
        core.durable.append(event, checker);
        core.stats.visitor_messages += 1;
    }

    fn poll(&mut self, net: &mut Net, now: Instant) {
        for conn in &mut self.conns {
            if conn.closed {
                continue;
            }
            if let Err(why) = self.core.poll_conn(conn, net, now) {
                self.core.close(conn, net, now, why);
            }
        }
        self.conns.retain(|c| !c.closed);
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let mut t = None;
        for c in &self.conns {
            if !c.machine.is_live() {
                t = min_opt(t, Some(c.deadline));
            }
            t = min_opt(t, c.machine.poll_timeout());
        }
        t
    }
}

/// Why a session machine ended a connection, in the sim's terms.
fn why(e: SessionError) -> Why {
    match e {
        SessionError::Dead(_) => Why::Dead,
        SessionError::Frame(e) => Why::Framing(e.to_string()),
        e => Why::Protocol(e.to_string()),
    }
}

impl ServerCore {
    fn close(&mut self, conn: &mut ServerConn, net: &mut Net, now: Instant, why: Why) {
        conn.closed = true;
        net.close(conn.link, End::Server, now);
        self.stats.dropped.count(&why);
        note_error(&mut self.errors, &why);
    }

    /// Answer everything the machine surfaces, then write what it queued.
    /// Returns whether a login completed.
    fn drive(
        &mut self,
        conn: &mut ServerConn,
        net: &mut Net,
        checker: &mut Checker,
        now: Instant,
    ) -> Result<bool, Why> {
        let mut logged_in = false;
        loop {
            match conn.machine.poll_event() {
                Ok(Some(ev)) => logged_in |= self.on_event(conn, ev, checker, now)?,
                Ok(None) => break,
                Err(e) => {
                    // What the machine queued for the peer (an Error naming
                    // the reason) goes out before the close.
                    let _sent = transmit(conn, net, now);
                    return Err(why(e));
                }
            }
        }
        transmit(conn, net, now)?;
        Ok(logged_in)
    }

    fn on_event(
        &mut self,
        conn: &mut ServerConn,
        ev: ServerEvent,
        checker: &mut Checker,
        now: Instant,
    ) -> Result<bool, Why> {
        match ev {
            ServerEvent::Login(login) => {
                let log_len = self.durable.events.len() as u64;
                let after = match login.resume_after {
                    Some(after) if after <= log_len => after,
                    other => return Err(Why::Protocol(format!("bad cursor {other:?}"))),
                };
                conn.device = Some(login.device_id);
                // Replay starts after the client's cursor; the cursor also
                // stands in for any ack the client could not send. Now and
                // then start a little early, as a server whose copy of the
                // cursor lags would: delivery is at-least-once on the wire,
                // and the client's inbox must turn that into exactly-once.
                let overlap = if self.rng.random_bool(0.2) {
                    self.rng.random_range(1..=5).min(after)
                } else {
                    0
                };
                self.stats.events_resent += overlap;
                // The same for the commands it reports committed: the client
                // resends those it had no ack for, and the server must answer
                // them from its idempotency keys, never apply them twice.
                let acked_lag = if self.rng.random_bool(0.2) {
                    self.rng.random_range(1..=5).min(self.durable.applied_seq)
                } else {
                    0
                };
                self.stats.logins += 1;
                let ok = LoginOk {
                    agent: 1,
                    display_name: "Sim Agent".into(),
                    site: 1,
                    resume: Resume::Replay {
                        after: after - overlap,
                    },
                    commands_acked: self.durable.applied_seq - acked_lag,
                    heartbeat_ms: 3000,
                    dead_after_ms: 10_000,
                    server_time_ms: at_ms(self.start, now),
                    ticket: Vec::new(),
                    ticket_expires_ms: 0,
                };
                conn.machine.accept_login(now, ok).map_err(why)?;
                self.fan_out(conn)?;
                Ok(true)
            }
            ServerEvent::Command(cmd) => {
                // Committed, then acked at once: the gateway acks each
                // commit as the writer reports it, without holding acks
                // back for a batch.
                let result = self.apply(cmd, checker, now)?;
                self.stats.ack_batches += 1;
                let ack = AckBatch {
                    up_to: self.durable.applied_seq,
                    results: vec![result],
                };
                conn.machine.ack(ack).map_err(why)?;
                Ok(false)
            }
            // Checked against what was sent by the machine.
            ServerEvent::Acked { .. } => Ok(false),
            // A signal: the simulated server forwards nothing.
            ServerEvent::Typing { .. } => Ok(false),
            ServerEvent::Query(_) | ServerEvent::SignOut => Err(Why::Protocol(
                "the sim client sends no queries or sign-outs".into(),
            )),
        }
    }

    /// Idempotent apply. A known id gets its original result back; a new id
    /// must carry the next seq, so commands apply exactly in device order.
    fn apply(
        &mut self,
        cmd: Command,
        checker: &mut Checker,
        now: Instant,
    ) -> Result<CommandResult, Why> {
        if let Some(r) = self.durable.results.get(&cmd.id) {
            self.stats.duplicates_reacked += 1;
            return Ok(r.clone());
        }
        if cmd.seq != self.durable.applied_seq + 1 {
            return Err(Why::Protocol(format!(
                "command seq {} after {}",
                cmd.seq, self.durable.applied_seq
            )));
        }
        let at = at_ms(self.start, now);
        let outcome = match cmd.action {
            Action::Send {
                conversation, body, ..
            } => {
                let message = self.durable.new_message_id();
                let event = Event::Message(ChatMessage {
                    conversation,
                    message,
                    client_id: cmd.id,
                    author: Author::Agent {
                        agent: 1,
                        name: "Sim Agent".into(),
                    },
                    body,
                    at_ms: at,
                    attachment: None,
                });
                self.durable.append(event, checker);
                Outcome::Done {
                    conversation: Some(conversation),
                    message: Some(message),
                    at_ms: at,
                }
            }
            Action::Accept { conversation } => {
                let info = ConversationInfo {
                    id: conversation,
                    site: 1,
                    visitor: format!("visitor-{conversation}"),
                    visitor_name: Some("Zoë 🦊".into()),
                    state: ConversationState::Active,
                    assigned: Some(1),
                    assigned_name: Some("Sim Agent".into()),
                    opened_at_ms: 0,
                    updated_at_ms: at,
                    contact_email: None,
                    group: None,
                };
                self.durable.append(Event::Conversation(info), checker);
                Outcome::Done {
                    conversation: Some(conversation),
                    message: None,
                    at_ms: at,
                }
            }
            Action::Close { conversation } => Outcome::Done {
                conversation: Some(conversation),
                message: None,
                at_ms: at,
            },
            Action::Invite { .. }
            | Action::SetPresence { .. }
            | Action::Transfer { .. }
            | Action::Block { .. }
            | Action::Unblock { .. }
            | Action::Note { .. }
            | Action::Tag { .. }
            | Action::SaveCanned { .. }
            | Action::DeleteCanned { .. }
            | Action::SaveInviteRule { .. }
            | Action::DeleteInviteRule { .. }
            | Action::EnableInviteRule { .. }
            | Action::TransferToGroup { .. } => Outcome::Done {
                conversation: None,
                message: None,
                at_ms: at,
            },
        };
        let result = CommandResult {
            seq: cmd.seq,
            id: cmd.id,
            outcome,
        };
        // Commit (results map and seq together), then report: nothing is
        // acked before this point.
        self.durable.results.insert(cmd.id, result.clone());
        self.durable.applied_seq = cmd.seq;
        checker.server_applied(cmd.id, cmd.seq, &result);
        Ok(result)
    }

    fn fan_out(&mut self, conn: &mut ServerConn) -> Result<(), Why> {
        while conn.machine.last_sent() < self.durable.events.len() as u64 {
            let seq = conn.machine.last_sent() + 1;
            let event = self.durable.events[usize::try_from(seq - 1).unwrap()].clone();
            conn.machine.push_event(seq, event).map_err(why)?;
            self.stats.events_sent += 1;
        }
        Ok(())
    }

    fn poll_conn(&mut self, conn: &mut ServerConn, net: &mut Net, now: Instant) -> Result<(), Why> {
        if !conn.machine.is_live() && now >= conn.deadline {
            return Err(Why::HandshakeTimeout);
        }
        if let Err(e) = conn.machine.handle_timeout(now) {
            if matches!(e, SessionError::Dead(_)) && !net.silent(conn.link) {
                self.stats.spurious_dead += 1;
            }
            return Err(why(e));
        }
        if conn.machine.is_live() {
            self.fan_out(conn)?;
        }
        transmit(conn, net, now)
    }
}

/// Write whatever the machine has queued.
fn transmit(conn: &mut ServerConn, net: &mut Net, now: Instant) -> Result<(), Why> {
    while let Some(bytes) = conn.machine.poll_transmit(now) {
        net.send(conn.link, End::Server, &bytes, now)
            .map_err(|LinkDown| Why::SendFailed)?;
    }
    Ok(())
}

// ====================================================================== the simulation

#[derive(Clone, Copy, Debug)]
struct SimConfig {
    seed: u64,
    policy: OutboxPolicy,
    /// Stop injecting faults and traffic after this many faults, then drain.
    faults: u64,
    /// Mean gap between fault attempts, calm spells apart.
    fault_gap: Duration,
    /// Mean gap between bursts of user commands.
    command_gap: Duration,
    /// Mean gap between bursts of visitor messages.
    visitor_gap: Duration,
    /// Give up draining after this long with a healthy link.
    drain_limit: Duration,
    /// Give up after this many steps; see `Sim::over_budget`.
    max_steps: u64,
    shape: LinkShape,
}

impl SimConfig {
    fn new(seed: u64, faults: u64) -> Self {
        Self {
            seed,
            policy: OutboxPolicy::ClearOnAck,
            faults,
            fault_gap: Duration::from_millis(2500),
            command_gap: Duration::from_millis(4000),
            visitor_gap: Duration::from_millis(4000),
            drain_limit: Duration::from_secs(300),
            max_steps: 5_000_000,
            shape: LinkShape::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Report {
    seed: u64,
    virtual_time: Duration,
    steps: u64,
    /// Gave up early; see `Sim::over_budget`.
    aborted: bool,
    faults: FaultCounts,
    commands: u64,
    events: u64,
    drained: bool,
    /// The client's conversations hold exactly the server's messages, in
    /// the server's commit order.
    views_match: bool,
    violations: Violations,
    client: ClientStats,
    server: ServerStats,
    /// First framing/protocol errors seen by the client, then the server.
    errors: Vec<String>,
}

/// The client, the server, the network between them, and the observer.
#[derive(Debug)]
struct Sim {
    cfg: SimConfig,
    start: Instant,
    now: Instant,
    rng: StdRng,
    net: Net,
    client: SimClient,
    server: SimServer,
    checker: Checker,
    faults: FaultCounts,
    next_fault_at: Instant,
    next_visitor_at: Instant,
    /// When faults and traffic stopped, once they have.
    quiet_since: Option<Instant>,
    steps: u64,
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        // The only real clock read: an arbitrary origin. Everything after is
        // this plus simulated durations.
        let start = Instant::now();
        Self {
            cfg,
            start,
            now: start,
            rng: StdRng::seed_from_u64(cfg.seed),
            net: Net::new(cfg.seed ^ 0x4E7, cfg.shape),
            client: SimClient::new(&cfg, start),
            server: SimServer::new(&cfg, start),
            checker: Checker::default(),
            faults: FaultCounts::default(),
            next_fault_at: start + cfg.fault_gap,
            next_visitor_at: start,
            quiet_since: None,
            steps: 0,
        }
    }

    fn run(mut self) -> Report {
        loop {
            self.step();
            self.steps += 1;
            if self.over_budget() {
                break;
            }
            if self.quiet_since.is_none() && self.faults.total() >= self.cfg.faults {
                self.quiet_since = Some(self.now);
            }
            if let Some(q) = self.quiet_since
                && (self.drained() || self.now >= q + self.cfg.drain_limit)
            {
                break;
            }
            self.advance();
        }
        self.report()
    }

    /// A broken implementation must fail the test, not hang it: give up
    /// after too many steps, or once the client has resent so much that it
    /// is plainly going round in circles (a healthy run sends each command
    /// about twice).
    fn over_budget(&self) -> bool {
        let commands = self.checker.commands.len() as u64;
        self.steps >= self.cfg.max_steps
            || self.client.stats().commands_sent > 10 * (commands + 1000)
    }

    fn stressing(&self) -> bool {
        self.quiet_since.is_none()
    }

    /// Everything due at `now`, in a fixed order.
    fn step(&mut self) {
        let now = self.now;
        if self.stressing() && now >= self.next_fault_at {
            self.inject_fault();
        }
        if self.stressing() && now >= self.next_visitor_at {
            let burst = if self.rng.random_bool(0.1) {
                self.rng.random_range(2..=10)
            } else {
                1
            };
            for _ in 0..burst {
                self.server.visitor_writes(&mut self.checker, now);
            }
            let gap = self
                .rng
                .random_range(Duration::ZERO..=self.cfg.visitor_gap * 2);
            self.next_visitor_at = now + gap;
        }
        for (link, end, chunk) in self.net.due(now) {
            match end {
                End::Client if self.client.link() == Some(link) => {
                    self.client
                        .on_chunk(chunk, &mut self.net, &mut self.checker, now);
                }
                End::Client => {}
                End::Server => {
                    self.server
                        .on_chunk(link, chunk, &mut self.net, &mut self.checker, now);
                }
            }
        }
        if self.client.wants_dial(now) {
            let link = self.net.dial();
            self.server.accept(link, now);
            self.client
                .start(link, &mut self.net, &mut self.checker, now);
        }
        let workload = self.stressing();
        self.client
            .poll(&mut self.net, &mut self.checker, now, workload);
        self.server.poll(&mut self.net, now);
        self.net.gc();
    }

    /// Jump to the next instant anything is due.
    fn advance(&mut self) {
        let stressing = self.stressing();
        let mut next = self.net.next_delivery();
        next = min_opt(next, self.client.next_wakeup(stressing));
        next = min_opt(next, self.server.next_wakeup());
        if stressing {
            next = min_opt(next, Some(self.next_fault_at));
            next = min_opt(next, Some(self.next_visitor_at));
        }
        let next = next.expect("something is always pending");
        // Never stand still: anything due now was handled by `step`.
        self.now = next.max(self.now + Duration::from_micros(1));
    }

    fn inject_fault(&mut self) {
        // Now and then a calm spell, so connections also live long enough
        // for heartbeats to be what keeps them alive.
        let gap = if self.rng.random_bool(0.15) {
            self.rng
                .random_range(Duration::from_secs(15)..=Duration::from_secs(60))
        } else {
            self.rng
                .random_range(Duration::from_millis(10)..=self.cfg.fault_gap * 2)
        };
        self.next_fault_at = self.now + gap;
        // Only a healthy connection can be broken. In particular a
        // blackhole must not be rescued by a later, noisier fault: it has to
        // be noticed by heartbeat silence alone.
        let Some(link) = self.client.link().filter(|l| self.net.healthy(*l)) else {
            return;
        };
        let fault = match self.rng.random_range(0..100) {
            0..30 => Fault::Close,
            30..60 => Fault::Reset,
            60..90 => Fault::Blackhole,
            _ => Fault::Restart,
        };
        match fault {
            Fault::Close => self.faults.close += 1,
            Fault::Reset => self.faults.reset += 1,
            Fault::Blackhole => self.faults.blackhole += 1,
            Fault::Restart => self.faults.restart += 1,
        }
        if fault == Fault::Restart {
            self.client.restart(&mut self.net, self.now);
        } else {
            self.net.fault(link, fault, self.now);
        }
    }

    fn drained(&self) -> bool {
        self.client.ready()
            && self.client.machine.unacked() == 0
            && self.client.cursor == self.server.core.durable.events.len() as u64
    }

    fn report(&self) -> Report {
        Report {
            seed: self.cfg.seed,
            virtual_time: self.now - self.start,
            steps: self.steps,
            aborted: self.over_budget(),
            faults: self.faults,
            commands: self.checker.commands.len() as u64,
            events: self.checker.log.len() as u64,
            drained: self.drained(),
            views_match: self.client.view == self.server.core.durable.conversations,
            violations: self
                .checker
                .finish(&self.client.view, &self.server.core.durable.conversations),
            client: self.client.stats(),
            server: self.server.core.stats,
            errors: [&self.client.errors[..], &self.server.core.errors[..]].concat(),
        }
    }
}

fn print(r: &Report) {
    let v = &r.violations;
    eprintln!(
        "seed {:>3}: {:>6.0}s virtual in {} steps{}, faults {:>4} (close {}, reset {}, blackhole {}, restart {}), \
         commands {}, events {} ({} from visitors), drained {}, \
         lost {} (up {}, down {}), duplicated {}, reordered {}, acked early {}, mismatched {}",
        r.seed,
        r.virtual_time.as_secs_f64(),
        r.steps,
        if r.aborted { " (ABORTED)" } else { "" },
        r.faults.total(),
        r.faults.close,
        r.faults.reset,
        r.faults.blackhole,
        r.faults.restart,
        r.commands,
        r.events,
        r.server.visitor_messages,
        r.drained,
        v.lost(),
        v.lost_up,
        v.lost_down,
        v.duplicated(),
        v.reordered(),
        v.acked_early,
        v.mismatched,
    );
    eprintln!(
        "          client: dials {}, logins {}, drops {:?}, resent-or-sent commands {}, \
         duplicate events ignored {}, spurious dead {}; server: duplicates re-acked {}, \
         events resent {}, spurious dead {}, drops {:?}",
        r.client.dials,
        r.client.logins,
        r.client.dropped,
        r.client.commands_sent,
        r.client.duplicate_events_ignored,
        r.client.spurious_dead,
        r.server.duplicates_reacked,
        r.server.events_resent,
        r.server.spurious_dead,
        r.server.dropped,
    );
    if !r.errors.is_empty() {
        eprintln!("          first errors: {:?}", r.errors);
    }
}

/// Run seeds on all cores; each run is deterministic on its own.
fn run_all(cfgs: Vec<SimConfig>) -> Vec<Report> {
    std::thread::scope(|s| {
        let handles: Vec<_> = cfgs
            .into_iter()
            .map(|cfg| s.spawn(move || Sim::new(cfg).run()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

// ====================================================================== tests

#[test]
fn nothing_lost_duplicated_or_reordered_under_thousands_of_faults() {
    let reports = run_all((1..=4).map(|seed| SimConfig::new(seed, 1000)).collect());
    let mut faults = FaultCounts::default();
    let mut v = Violations::default();
    let (mut commands, mut events, mut visitor) = (0, 0, 0);
    let mut drops = DropCounts::default();
    for r in &reports {
        print(r);
        faults.add(&r.faults);
        v.add(&r.violations);
        commands += r.commands;
        events += r.events;
        visitor += r.server.visitor_messages;
        drops.add(&r.client.dropped);
    }
    eprintln!(
        "TOTAL: faults {} ({faults:?}), commands {commands}, events {events} ({visitor} from \
         visitors), lost {}, duplicated {}, reordered {}, acked early {}, mismatched {}\n\
         client connection drops: {drops:?}",
        faults.total(),
        v.lost(),
        v.duplicated(),
        v.reordered(),
        v.acked_early,
        v.mismatched,
    );
    for r in &reports {
        assert!(r.drained, "seed {} never drained: {r:?}", r.seed);
        assert!(r.views_match, "seed {}", r.seed);
        assert!(!r.aborted, "seed {}", r.seed);
        // Liveness only ever kills connections that really went silent.
        assert_eq!(r.client.spurious_dead + r.server.spurious_dead, 0);
        assert_eq!(r.client.backoff_violations, 0);
        assert_eq!(r.violations, Violations::default(), "seed {}", r.seed);
        // Nothing in a healthy run is a framing or protocol error.
        assert_eq!(r.client.dropped.framing + r.client.dropped.protocol, 0);
        assert_eq!(r.server.dropped.framing + r.server.dropped.protocol, 0);
    }
    assert_eq!(v.lost(), 0);
    assert_eq!(v.duplicated(), 0);
    assert_eq!(v.reordered(), 0);
    assert!(faults.total() >= 3000, "{faults:?}");
    assert!(commands >= 10_000, "{commands} commands");
    assert!(events >= 10_000, "{events} events");
    assert!(visitor >= 5_000, "{visitor} visitor events");
    // Blackholes were noticed by heartbeat silence (or, mid-handshake, by
    // the handshake timeout), each one by the client.
    assert!(
        drops.dead + drops.handshake_timeout >= faults.blackhole,
        "{drops:?} for {} blackholes",
        faults.blackhole
    );
    // Resends happened in both directions, so both dedup paths ran.
    for r in &reports {
        assert!(r.server.duplicates_reacked > 0, "seed {}", r.seed);
        assert!(r.client.duplicate_events_ignored > 0, "seed {}", r.seed);
    }
}

/// The checker can fail: an outbox that forgets commands once written to the
/// socket loses whatever was in flight when a connection died.
#[test]
fn outbox_cleared_on_transmit_is_caught_losing_commands() {
    let mut cfg = SimConfig::new(7, 60);
    cfg.policy = OutboxPolicy::ClearOnTransmit;
    cfg.drain_limit = Duration::from_secs(60);
    let r = Sim::new(cfg).run();
    print(&r);
    assert!(r.violations.lost_up > 0, "{r:?}");
    assert!(r.violations.acked_early > 0, "{r:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let a = Sim::new(SimConfig::new(11, 40)).run();
    let b = Sim::new(SimConfig::new(11, 40)).run();
    assert_eq!(a, b);
    let c = Sim::new(SimConfig::new(12, 40)).run();
    assert_ne!(a, c);
}

/// Regression: `Inbox::poll_timeout` once fell back to `Instant::now()` when a
/// duplicate had made an ack due "now". The crate is sans-IO ("no clock"); a caller on a
/// virtual (or merely different) clock gets a deadline from the wall clock:
/// here, an hour after its own "now", so an event loop that sleeps until
/// `poll_timeout` delays the re-ack by that hour, and a seeded replay
/// depends on how fast the test machine is.
#[test]
fn inbox_poll_timeout_does_not_read_the_wall_clock() {
    let Some(virtual_now) = Instant::now().checked_sub(Duration::from_secs(3600)) else {
        return;
    };
    let mut inbox = Inbox::new(0, AckPolicy::default());
    assert_eq!(inbox.check(1), Ok(Verdict::Apply));
    inbox.applied(1, virtual_now);
    assert_eq!(
        inbox.poll_ack(virtual_now + Duration::from_secs(1)),
        Some(1)
    );
    // The peer resends event 1: a re-ack is due at once.
    assert_eq!(inbox.check(1), Ok(Verdict::Duplicate));
    let due = inbox.poll_timeout().expect("an ack is due");
    assert!(
        due <= virtual_now + Duration::from_secs(1),
        "re-ack scheduled {:?} after the caller's clock",
        due - virtual_now
    );
}
