//! The bus over Redis pub/sub: every node publishes on one channel and
//! subscribes to it, skipping its own messages.
//!
//! Two background tasks own the two Redis connections (a subscriber
//! cannot publish on its own connection):
//! - the publisher takes encoded messages from a bounded queue and sends
//!   them in pipelines of up to [`BATCH`]; [`Bus::publish`] only
//!   `try_send`s into that queue, and drops (and counts) when the
//!   publisher is disconnected or the queue is full;
//! - the subscriber decodes what arrives and hands it to the in-process
//!   subscriptions; after every (re)subscribe it tells them
//!   [`Received::Gap`], since whatever was published meanwhile is gone.
//!
//! Each task reconnects by itself with exponential backoff and jitter
//! (100 ms doubling to 2 s, so N nodes do not reconnect in lockstep), and
//! pings Redis every second on an idle connection, so a Redis that vanished
//! without closing the socket (a partition, a paused VM) is noticed within
//! about 2 s. [`Health`] is `Up` only while both are connected.
//!
//! [`Received::Gap`]: super::Received::Gap

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use rand::RngExt as _;
use redis::AsyncConnectionConfig;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Bus, BusError, BusMsg, BusStats, Delivery, Health, Incoming, SUBSCRIBER_BUFFER, StatsSnapshot,
    Subscription, codec, instance_id,
};

/// Most messages sent in one pipeline.
pub const BATCH: usize = 256;

/// How a [`RedisBus`] connects.
#[derive(Debug, Clone)]
pub struct RedisBusConfig {
    pub url: String,
    /// This node's id, sent with every message.
    pub node: String,
    /// The one channel all nodes of a cluster share.
    pub channel: String,
    /// Reconnect backoff: the first wait, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A connection with no traffic for this long is pinged.
    pub ping_every: Duration,
    /// Connecting, a ping, a pipeline: longer than this and the connection
    /// is taken for dead.
    pub io_timeout: Duration,
    /// Encoded messages waiting for the publisher; beyond this, publish
    /// drops.
    pub queue: usize,
}

impl RedisBusConfig {
    #[must_use]
    pub fn new(url: &str, node: &str) -> Self {
        Self {
            url: url.to_owned(),
            node: node.to_owned(),
            channel: "holdfast:bus".to_owned(),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ping_every: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            queue: 16 * 1024,
        }
    }
}

/// A node's handle on the Redis bus. Dropping it stops both tasks and
/// closes the connections.
#[derive(Debug)]
pub struct RedisBus {
    node: Arc<str>,
    instance: u64,
    queue: mpsc::Sender<Vec<u8>>,
    inbound: broadcast::Sender<Delivery>,
    state: Arc<State>,
    stats: Arc<BusStats>,
    _stop: DropGuard,
}

/// The two connections' states, and the health derived from them.
#[derive(Debug)]
struct State {
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    health: watch::Sender<Health>,
}

impl State {
    fn set(&self, which: &AtomicBool, up: bool) {
        which.store(up, Ordering::SeqCst);
        let h = if self.publisher_up.load(Ordering::SeqCst)
            && self.subscriber_up.load(Ordering::SeqCst)
        {
            Health::Up
        } else {
            Health::Down
        };
        self.health.send_if_modified(|old| {
            let changed = *old != h;
            *old = h;
            changed
        });
    }
}

impl RedisBus {
    /// Check the URL and start connecting in the background; returns at
    /// once, with health `Down` until Redis answers. Needs a tokio runtime.
    pub fn start(cfg: RedisBusConfig) -> Result<Self, BusError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(|source| BusError::Url {
            url: cfg.url.clone(),
            source,
        })?;
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BusError::NoRuntime)?;
        let stop = CancellationToken::new();
        let stats = Arc::new(BusStats::default());
        let state = Arc::new(State {
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
            health: watch::Sender::new(Health::Down),
        });
        let (queue, rx) = mpsc::channel(cfg.queue.max(1));
        let (inbound, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let cfg = Arc::new(cfg);
        rt.spawn(publisher(
            client.clone(),
            cfg.clone(),
            rx,
            state.clone(),
            stats.clone(),
            stop.clone(),
        ));
        rt.spawn(subscriber(
            client,
            cfg.clone(),
            inbound.clone(),
            state.clone(),
            stats.clone(),
            stop.clone(),
        ));
        Ok(Self {
            node: cfg.node.as_str().into(),
            instance: instance_id(),
            queue,
            inbound,
            state,
            stats,
            _stop: stop.drop_guard(),
        })
    }
}

impl Bus for RedisBus {
    fn node(&self) -> &str {
        &self.node
    }

    fn publish(&self, msg: BusMsg) {
        // While disconnected nothing would be sent: drop now rather than
        // fill the queue with wakes that are stale by the time Redis is
        // back (the receivers read the store meanwhile).
        if !self.state.publisher_up.load(Ordering::SeqCst) {
            BusStats::add(&self.stats.publish_dropped, 1);
            return;
        }
        let bytes = match codec::encode(&self.node, self.instance, &msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("bus: {e}");
                BusStats::add(&self.stats.publish_dropped, 1);
                return;
            }
        };
        if self.queue.try_send(bytes).is_err() {
            BusStats::add(&self.stats.publish_dropped, 1);
        }
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.inbound.subscribe(), self.instance, self.stats.clone())
    }

    fn health(&self) -> watch::Receiver<Health> {
        self.state.health.subscribe()
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

/// Exponential backoff with jitter between reconnects.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(cfg: &RedisBusConfig) -> Self {
        Self {
            next: cfg.backoff_min,
            min: cfg.backoff_min,
            max: cfg.backoff_max.max(cfg.backoff_min),
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The wait before the next attempt: between half and all of the
    /// current step, which then doubles.
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    /// Wait, unless stopped first; false when stopped.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let d = self.step();
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

fn conn_config(cfg: &RedisBusConfig) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.io_timeout))
        .set_response_timeout(Some(cfg.io_timeout))
}

async fn publisher(
    client: redis::Client,
    cfg: Arc<RedisBusConfig>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    state: Arc<State>,
    stats: Arc<BusStats>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(&cfg);
    let mut batch = Vec::with_capacity(BATCH);
    let conn_cfg = conn_config(&cfg);
    loop {
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = client.get_multiplexed_async_connection_with_config(&conn_cfg) => c,
        };
        let mut conn = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("bus: publisher cannot connect to Redis: {e}");
                if !wait_dropping(&mut backoff, &mut rx, &stats, &stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        BusStats::add(&stats.connects, 1);
        state.set(&state.publisher_up, true);
        tracing::info!(channel = %cfg.channel, "bus: publisher connected to Redis");
        let mut ping = tokio::time::interval(cfg.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        // Every handle is gone.
                        return;
                    }
                    let mut pipe = redis::pipe();
                    for m in &batch {
                        pipe.publish(&cfg.channel, m.as_slice()).ignore();
                    }
                    let sent = pipe.query_async::<()>(&mut conn).await;
                    let n = batch.len() as u64;
                    batch.clear();
                    match sent {
                        Ok(()) => BusStats::add(&stats.published, n),
                        Err(e) => {
                            BusStats::add(&stats.publish_dropped, n);
                            break e.to_string();
                        }
                    }
                    ping.reset();
                }
                _ = ping.tick() => {
                    if let Err(e) = redis::cmd("PING").query_async::<()>(&mut conn).await {
                        break e.to_string();
                    }
                }
            }
        };
        state.set(&state.publisher_up, false);
        tracing::warn!("bus: publisher lost Redis ({why}); reconnecting");
        if !wait_dropping(&mut backoff, &mut rx, &stats, &stop).await {
            return;
        }
    }
}

/// The backoff wait of a disconnected publisher. What is queued, or slips
/// in (a publish that saw the link up just before it went down), is
/// dropped and counted now: it would be stale by the time Redis is back.
/// False when stopped or when every handle is gone.
async fn wait_dropping(
    backoff: &mut Backoff,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    stats: &BusStats,
    stop: &CancellationToken,
) -> bool {
    let until = tokio::time::sleep(backoff.step());
    tokio::pin!(until);
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = &mut until => return true,
            m = rx.recv() => {
                if m.is_none() {
                    return false;
                }
                BusStats::add(&stats.publish_dropped, 1);
            }
        }
    }
}

async fn subscriber(
    client: redis::Client,
    cfg: Arc<RedisBusConfig>,
    out: broadcast::Sender<Delivery>,
    state: Arc<State>,
    stats: Arc<BusStats>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(&cfg);
    loop {
        let subscribed = tokio::select! {
            () = stop.cancelled() => return,
            s = tokio::time::timeout(cfg.io_timeout * 2, async {
                let mut ps = client.get_async_pubsub().await?;
                ps.subscribe(&cfg.channel).await?;
                Ok::<_, redis::RedisError>(ps)
            }) => s,
        };
        let ps = match subscribed {
            Ok(Ok(ps)) => ps,
            Ok(Err(e)) => {
                tracing::debug!("bus: subscriber cannot connect to Redis: {e}");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!("bus: subscriber timed out connecting to Redis");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        BusStats::add(&stats.connects, 1);
        state.set(&state.subscriber_up, true);
        // Whatever was published while we were not subscribed is lost to
        // us: the subscribers read the store to make up for it.
        let _none = out.send(Delivery::Gap);
        tracing::info!(channel = %cfg.channel, "bus: subscribed on Redis");
        let (mut sink, mut stream) = ps.split();
        let mut ping = tokio::time::interval(cfg.ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                m = stream.next() => {
                    let Some(m) = m else { break "connection closed".to_owned() };
                    deliver(m.get_payload_bytes(), &out, &stats);
                    ping.reset();
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(cfg.io_timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break "ping timed out".to_owned(),
                    }
                }
            }
        };
        state.set(&state.subscriber_up, false);
        tracing::warn!("bus: subscriber lost Redis ({why}); reconnecting");
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Decode one message off the channel and pass it on; anything that does
/// not decode is counted and dropped.
fn deliver(bytes: &[u8], out: &broadcast::Sender<Delivery>, stats: &BusStats) {
    match codec::decode(bytes) {
        Ok(d) => {
            BusStats::add(&stats.received, 1);
            let _none = out.send(Delivery::Msg {
                instance: d.instance,
                inc: Arc::new(Incoming {
                    node: d.node.into(),
                    msg: d.msg,
                }),
            });
        }
        Err(e) => {
            BusStats::add(&stats.malformed, 1);
            tracing::debug!(
                "bus: ignoring a malformed message ({} bytes): {e}",
                bytes.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_and_resets() {
        let cfg = RedisBusConfig::new("redis://127.0.0.1:1", "t");
        let mut b = Backoff::new(&cfg);
        let waits: Vec<Duration> = (0..8).map(|_| b.step()).collect();
        assert!(waits[0] >= Duration::from_millis(50) && waits[0] <= Duration::from_millis(100));
        assert!(waits[7] >= Duration::from_secs(1) && waits[7] <= Duration::from_secs(2));
        b.reset();
        assert!(b.step() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn with_nothing_listening_publish_returns_at_once_and_counts_the_drop() {
        // Port 1 on loopback: connections are refused.
        let bus = RedisBus::start(RedisBusConfig::new("redis://127.0.0.1:1", "t")).unwrap();
        for _ in 0..1000 {
            bus.publish(BusMsg::Wake {
                recipient: super::super::Recipient::Agent(1),
                seq: 1,
            });
        }
        assert_eq!(bus.stats().publish_dropped, 1000);
        assert_eq!(*bus.health().borrow(), Health::Down);
    }

    #[test]
    fn a_bad_url_and_a_missing_runtime_are_errors_not_panics() {
        assert!(matches!(
            RedisBus::start(RedisBusConfig::new("http://nope", "t")),
            Err(BusError::Url { .. })
        ));
        assert!(matches!(
            RedisBus::start(RedisBusConfig::new("redis://127.0.0.1:1", "t")),
            Err(BusError::NoRuntime)
        ));
    }
}
