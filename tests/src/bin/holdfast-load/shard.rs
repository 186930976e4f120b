//! One process's share of visitor WebSockets.
//!
//! A process may hold at most 20,000 open files here, so the generator keeps
//! up to 15,000 connections per process: the parent runs one [`Shard`]
//! itself and starts a `--child` process for each further 15,000 visitors.
//! Every visitor behaves like the widget: `hello`, an application ping after
//! `heartbeat_ms` of quiet, cumulative acks batched for 50 ms or 64 events,
//! and (for a chat run) one message per tick stamped with its send time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::backoff::{Backoff, BackoffConfig};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{Sender, VisitorEvent, VisitorIn, VisitorOut};
use holdfast_tests::visitor::{hello, new_id};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::{now_ns, stamp};

type Ws = WebSocketStream<TcpStream>;

/// Where visitors connect: Holdfast's `/v1/visitor/ws`, or a plain
/// WebSocket server (Node `ws`) that only holds connections.
#[derive(Clone, Debug)]
pub struct WsTarget {
    pub addr: SocketAddr,
    pub path: String,
    /// Expect Holdfast's `welcome`, acks and events.
    pub holdfast: bool,
}

#[derive(Clone, Debug)]
pub struct ShardCfg {
    pub target: WsTarget,
    pub site: String,
    /// Global index of this shard's first visitor (for source addresses).
    pub offset: usize,
    /// Open a conversation (one acked message) before reporting ready.
    pub open_chat: bool,
    /// Message body size in bytes.
    pub size: usize,
    /// Close with RST (SO_LINGER 0), as a pulled cable or a dead NAT does.
    pub rst: bool,
}

/// What a shard measured: visitor-to-agent sends and acks, and
/// agent-to-visitor deliveries with their latencies.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Partial {
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub errors: u64,
    pub lat_us: Vec<u64>,
    /// Storm only: microseconds from the drop to `welcome`, per visitor.
    pub resumed_us: Vec<u64>,
    /// Storm only: reconnect attempts that failed and were retried.
    pub retries: u64,
    /// Connections the server closed outside a storm, each resumed.
    #[serde(default)]
    pub reconnects: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Hold,
    Send {
        per_visitor: f64,
    },
    /// Drop every connection at `at` (RST), queue one message, reconnect.
    Storm {
        at: Instant,
    },
    Quit,
}

#[derive(Debug, Default)]
struct Shared {
    sent: AtomicU64,
    acked: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    lat_us: std::sync::Mutex<Vec<u64>>,
    resumed_us: std::sync::Mutex<Vec<u64>>,
}

#[derive(Debug)]
pub struct Shard {
    cfg: Arc<ShardCfg>,
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    connected: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    handshakes: Arc<Semaphore>,
}

/// Spread across 127.0.0.2.. so one address's ~28k ports never run out.
pub fn source_addr(i: usize) -> IpAddr {
    let n = 2 + (i / 20_000) as u8;
    IpAddr::from([127, 0, 0, n])
}

fn golden(i: usize) -> f64 {
    (i as f64 * 0.618_033_988).fract()
}

impl Shard {
    pub fn new(cfg: ShardCfg) -> Self {
        let (phase, _) = watch::channel(Phase::Hold);
        Self {
            cfg: Arc::new(cfg),
            shared: Arc::new(Shared::default()),
            phase,
            connected: 0,
            tasks: Vec::new(),
            // A burst of 15k SYNs overflows the listen backlog and turns into
            // 1 s SYN retries; a few hundred handshakes in flight is plenty.
            handshakes: Arc::new(Semaphore::new(256)),
        }
    }

    pub fn connected(&self) -> usize {
        self.connected
    }

    /// Make sure the first `k` visitors of this shard are connected and ready.
    pub async fn connect_upto(&mut self, k: usize) -> anyhow::Result<()> {
        let mut ready = Vec::new();
        for i in self.connected..k {
            let (tx, rx) = oneshot::channel();
            let v = Visitor {
                index: self.cfg.offset + i,
                cfg: self.cfg.clone(),
                shared: self.shared.clone(),
                phase: self.phase.subscribe(),
                handshakes: self.handshakes.clone(),
            };
            self.tasks.push(tokio::spawn(v.run(tx)));
            ready.push(rx);
        }
        for r in ready {
            match tokio::time::timeout(Duration::from_secs(120), r).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => anyhow::bail!("visitor failed to connect: {e}"),
                Ok(Err(_)) => anyhow::bail!("visitor task ended before it was ready"),
                Err(_) => anyhow::bail!("visitor not ready after 120 s"),
            }
        }
        self.connected = self.connected.max(k);
        Ok(())
    }

    pub fn set_phase(&self, p: Phase) {
        let _ = self.phase.send(p);
    }

    /// Everything measured since the last call.
    pub fn take(&self) -> Partial {
        let s = &self.shared;
        Partial {
            sent: s.sent.swap(0, Ordering::Relaxed),
            acked: s.acked.swap(0, Ordering::Relaxed),
            received: s.received.swap(0, Ordering::Relaxed),
            errors: s.errors.swap(0, Ordering::Relaxed),
            retries: s.retries.swap(0, Ordering::Relaxed),
            reconnects: s.reconnects.swap(0, Ordering::Relaxed),
            lat_us: std::mem::take(&mut *s.lat_us.lock().unwrap_or_else(|e| e.into_inner())),
            resumed_us: std::mem::take(
                &mut *s.resumed_us.lock().unwrap_or_else(|e| e.into_inner()),
            ),
        }
    }

    pub fn quit(self) {
        let _ = self.phase.send(Phase::Quit);
        for t in self.tasks {
            t.abort();
        }
    }
}

struct Visitor {
    index: usize,
    cfg: Arc<ShardCfg>,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    handshakes: Arc<Semaphore>,
}

struct Session {
    tx: SplitSink<Ws, Message>,
    rx: SplitStream<Ws>,
    heartbeat: Duration,
    token: Option<String>,
}

enum Step {
    Phase(bool),
    Incoming(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Ping,
    Ack,
    Send,
}

/// The next send time of a sender paced at one message per `period`,
/// after the one due at `due` (`None`: the first, at a random point of the
/// first period, so senders started together do not fire together). Like
/// `MissedTickBehavior::Delay`, a sender that fell behind never bursts to
/// catch up.
pub fn next_due(due: Option<Instant>, period: Duration, now: Instant) -> Instant {
    match due {
        None => now + period.mul_f64(rand::random::<f64>()),
        Some(d) if d + period < now => now + period,
        Some(d) => d + period,
    }
}

/// Retry `attempt` as the real clients do, with the protocol's own
/// full-jitter backoff (250 ms doubling to 10 s, a delay before every try),
/// counting the tries that failed.
pub async fn with_backoff<T, F, Fut>(retries: &AtomicU64, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Backoff::new(BackoffConfig::default(), rand::random());
    loop {
        tokio::time::sleep(backoff.next_delay()).await;
        match attempt().await {
            Ok(v) => return v,
            Err(_) => {
                retries.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Resend the message queued while offline, if any (idempotent by its id).
/// True when one was sent.
async fn resend(s: &mut Session, outbox: Option<&(MsgId, String)>) -> bool {
    let Some((id, body)) = outbox else {
        return false;
    };
    let m = VisitorIn::Send {
        id: *id,
        body: body.clone(),
        attachment: None,
    };
    s.tx.send(text(&m)).await.is_ok()
}

fn text(m: &VisitorIn) -> Message {
    Message::Text(serde_json::to_string(m).unwrap_or_default().into())
}

impl Visitor {
    async fn connect(&self, token: Option<String>, after: Option<u64>) -> anyhow::Result<Session> {
        let t = &self.cfg.target;
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(source_addr(self.index), 0))?;
        let stream = sock.connect(t.addr).await?;
        stream.set_nodelay(true)?;
        if self.cfg.rst {
            #[allow(deprecated)] // set_zero_linger is not in this tokio yet
            stream.set_linger(Some(Duration::ZERO))?;
        }
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://{}{}", t.addr, t.path), stream).await?;
        let (mut tx, rx) = ws.split();
        let h = hello(
            &self.cfg.site,
            token.clone(),
            after,
            &format!("https://load.example/{}", self.index),
        );
        tx.send(text(&h)).await?;
        let mut s = Session {
            tx,
            rx,
            heartbeat: Duration::from_secs(3),
            token,
        };
        if !t.holdfast {
            return Ok(s);
        }
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), s.rx.next())
                .await
                .map_err(|_| anyhow::anyhow!("no welcome in 30 s"))?;
            let Some(Ok(Message::Text(m))) = m else {
                anyhow::bail!("closed before welcome: {m:?}");
            };
            match serde_json::from_str::<VisitorOut>(&m)? {
                VisitorOut::Welcome {
                    token,
                    heartbeat_ms,
                    ..
                } => {
                    s.token = Some(token);
                    s.heartbeat = Duration::from_millis(u64::from(heartbeat_ms.max(100)));
                    return Ok(s);
                }
                VisitorOut::Error { code, message, .. } => {
                    anyhow::bail!("hello refused: {code:?} {message}")
                }
                _ => {}
            }
        }
    }

    /// Reconnect after a drop as the widget does, resuming from the last
    /// applied event.
    async fn reconnect(&self, token: Option<String>, after: u64) -> Session {
        with_backoff(&self.shared.retries, || {
            self.connect(token.clone(), Some(after))
        })
        .await
    }

    async fn run(mut self, ready: oneshot::Sender<Result<(), String>>) {
        let permit = self.handshakes.clone().acquire_owned().await;
        let mut s = match self.connect(None, None).await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        };
        let mut last_seq = 0u64;
        if self.cfg.open_chat {
            let id = new_id();
            let open = VisitorIn::Send {
                id,
                body: "open".into(),
                attachment: None,
            };
            let opened = async {
                s.tx.send(text(&open)).await?;
                while let Some(m) = s.rx.next().await {
                    if let Message::Text(t) = m? {
                        match serde_json::from_str::<VisitorOut>(&t)? {
                            VisitorOut::Ack { id: a, .. } if a == id => return Ok(()),
                            VisitorOut::Event { seq, .. } => last_seq = last_seq.max(seq),
                            VisitorOut::Error { code, message, .. } => {
                                anyhow::bail!("open refused: {code:?} {message}")
                            }
                            _ => {}
                        }
                    }
                }
                anyhow::bail!("closed before the opening message was acked")
            };
            if let Err(e) = opened.await {
                let _ = ready.send(Err(e.to_string()));
                return;
            }
        }
        drop(permit);
        let _ = ready.send(Ok(()));

        let pad = "x".repeat(self.cfg.size.saturating_sub(40));
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut last_out = Instant::now();
        let mut period = Duration::from_secs(1);
        let mut next_send: Option<Instant> = None;
        let mut ack_at: Option<Instant> = None;
        let mut unacked = 0u32;
        // Storm: the one message queued while offline, until acked.
        let mut outbox: Option<(MsgId, String)> = None;
        loop {
            let ping_at = last_out + s.heartbeat;
            let step = tokio::select! {
                r = self.phase.changed() => Step::Phase(r.is_ok()),
                m = s.rx.next() => Step::Incoming(m),
                () = tokio::time::sleep_until(ping_at.into()) => Step::Ping,
                () = tokio::time::sleep_until(ack_at.unwrap_or(far).into()), if ack_at.is_some() => Step::Ack,
                () = tokio::time::sleep_until(next_send.unwrap_or(far).into()), if next_send.is_some() => Step::Send,
            };
            let now = Instant::now();
            let was_out = matches!(step, Step::Ping | Step::Ack | Step::Send);
            let sent_ok = match step {
                Step::Phase(false) => return,
                Step::Phase(true) => {
                    let p = *self.phase.borrow_and_update();
                    match p {
                        Phase::Quit => return,
                        Phase::Hold => next_send = None,
                        Phase::Send { per_visitor } => {
                            period = Duration::from_secs_f64(1.0 / per_visitor.max(0.001));
                            // Spread first sends so visitors are not in lockstep.
                            next_send = Some(now + period.mul_f64(golden(self.index)));
                        }
                        Phase::Storm { at } => {
                            next_send = None;
                            ack_at = None;
                            unacked = 0;
                            let token = s.token.clone();
                            drop(s); // both halves: the socket goes with an RST
                            let body = format!("s={} storm", now_ns());
                            outbox = Some((new_id(), body));
                            s = self.reconnect(token, last_seq).await;
                            self.shared
                                .resumed_us
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(at.elapsed().as_micros() as u64);
                            if resend(&mut s, outbox.as_ref()).await {
                                self.shared.sent.fetch_add(1, Ordering::Relaxed);
                            }
                            last_out = Instant::now();
                        }
                    }
                    true
                }
                Step::Incoming(Some(Ok(Message::Text(t)))) => {
                    match serde_json::from_str::<VisitorOut>(&t) {
                        Ok(VisitorOut::Ack { id, .. }) => {
                            if outbox.as_ref().is_some_and(|(o, _)| *o == id) {
                                outbox = None;
                            }
                            self.shared.acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(VisitorOut::Event { seq, event }) => {
                            if seq > last_seq {
                                last_seq = seq;
                                if let VisitorEvent::Message(m) = event
                                    && m.from == Sender::Agent
                                    && let Some(t) = stamp(&m.body, "a=")
                                {
                                    let us = now_ns().saturating_sub(t) / 1000;
                                    self.shared
                                        .lat_us
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push(us);
                                    self.shared.received.fetch_add(1, Ordering::Relaxed);
                                }
                                unacked += 1;
                                if ack_at.is_none() {
                                    ack_at = Some(now + Duration::from_millis(50));
                                }
                                if unacked >= 64 {
                                    ack_at = Some(now);
                                }
                            }
                        }
                        Ok(VisitorOut::Error { .. }) | Err(_) => {
                            self.shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                    }
                    true
                }
                Step::Incoming(Some(Ok(_))) => true,
                Step::Incoming(None | Some(Err(_))) => false,
                Step::Ping => s.tx.send(text(&VisitorIn::Ping)).await.is_ok(),
                Step::Ack => {
                    ack_at = None;
                    unacked = 0;
                    s.tx.send(text(&VisitorIn::Ack { seq: last_seq }))
                        .await
                        .is_ok()
                }
                Step::Send => {
                    next_send = Some(next_due(Some(next_send.unwrap_or(now)), period, now));
                    let m = VisitorIn::Send {
                        id: new_id(),
                        body: format!("t={} {pad}", now_ns()),
                        attachment: None,
                    };
                    let ok = s.tx.send(text(&m)).await.is_ok();
                    if ok {
                        self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    ok
                }
            };
            if !sent_ok {
                if matches!(*self.phase.borrow(), Phase::Quit) {
                    return;
                }
                // The server closed the socket (a kick when this tab's queue
                // overflowed, say): come back and resume as the widget does,
                // resending the message queued during a storm if unacked.
                self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
                let token = s.token.clone();
                drop(s);
                s = self.reconnect(token, last_seq).await;
                ack_at = None;
                unacked = 0;
                resend(&mut s, outbox.as_ref()).await;
                last_out = Instant::now();
                continue;
            }
            if was_out {
                last_out = Instant::now();
            }
        }
    }
}
