//! The wake-up bus between nodes (issue 15): small typed messages saying
//! "recipient R has events up to seq N" and presence deltas, each tagged
//! with the node that sent it.
//!
//! The bus is never the only copy of anything. Every event is in the store
//! (the log) before its wake is published, so a lost wake only delays a
//! delivery until the receiving node reads the store anyway: on a
//! [`Received::Gap`] (it resubscribed after an outage, or fell behind), on a
//! timer ([`Health::poll_every`]: fast while the bus is down, a slow safety
//! net while it is up, since Redis pub/sub may drop a message without
//! anyone knowing). Publishing therefore never waits: a message that
//! cannot go now is dropped and counted.
//!
//! - [`local`]: one process, no network; what a single node runs (and a
//!   way to put several nodes in one test process).
//! - [`redis`]: Redis pub/sub on one channel, reconnecting by itself.
//! - [`codec`]: the wire format, a version byte and bincode.
//! - [`follow`]: what a node's live side makes of it: wakes, gaps and a
//!   health-paced timer as one stream of "read these from the store".
//!
//! Wired in by `crate::start` when `bus` is a Redis URL (with `local`
//! a node starts no bus at all: there is nobody to wake): the hub
//! publishes one `Wake` per recipient per committed batch, its presence
//! deltas, and a `Changed` note for each committed change to a record
//! nodes show from memory (a team row, a visitor's conversation), and
//! `crate::hub::remote` runs the [`Follower`] that turns what arrives into
//! catch-up reads of the store. `/metrics` shows the bus's health and
//! what the live side sent, received and polled (`holdfast_bus_*`).

pub mod codec;
pub mod follow;
pub mod local;
pub mod redis;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use holdfast_protocol::agent::{AgentId, PageView, Presence, Seq, SiteId, VisitorInfo};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

pub use follow::{Follower, Next, Why};
pub use local::LocalBus;
pub use redis::{RedisBus, RedisBusConfig};

/// Whose event log a wake is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recipient {
    /// 0
    Agent(AgentId),
    /// 1
    Visitor(String),
}

/// One bus message. Variants and fields are encoded by position (bincode):
/// append, never reorder; a change that old nodes cannot read needs a new
/// [`codec::VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BusMsg {
    /// 0: the recipient's events up to `seq` are committed; a node holding
    /// a connection of theirs reads from its cursor to there.
    Wake { recipient: Recipient, seq: Seq },
    /// 1: live state changed on the sending node.
    Presence(PresenceDelta),
    /// 2: a stored record that nodes show live from memory changed (it is
    /// committed): a node that shows it reads it again from the store.
    Changed(Changed),
    /// 3: the sending node has just (re)joined the bus, or missed messages
    /// (a gap): every node announces all of its live entries now, rather
    /// than at its next periodic announcement, up to
    /// `crate::hub::remote::ANNOUNCE_EVERY` later.
    Hello,
    /// 4: a typing signal (PROTOCOL.md 10.18) for connections on other
    /// nodes. Best-effort like the signal itself: a lost one is never
    /// re-read, since nothing of it is stored.
    Typing(TypingSignal),
}

/// A typing signal passed on by the node that got (and throttled) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypingSignal {
    /// 0: a visitor's typing, for these agents (a chat's owner) or every
    /// agent of `site` (a waiting chat).
    ToAgents {
        agents: Vec<AgentId>,
        site: Option<SiteId>,
        conversation: u64,
        visitor: String,
        typing: bool,
        draft: Option<String>,
    },
    /// 1: the chat's agent `name` is typing (or stopped: `None`).
    ToVisitor {
        visitor: String,
        name: Option<String>,
    },
    /// 2: an automatic invitation fired for a visitor of `site`, or what
    /// became of it (10.20), for that site's agents.
    Invitation {
        site: SiteId,
        signal: holdfast_protocol::agent::InvitationSignal,
    },
}

/// Which stored record to read again (see [`BusMsg::Changed`]). It names
/// the record only: the content is read from the store, so a lost note
/// costs freshness, never data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Changed {
    /// 0: an agent's team row (name, role, capacity, load, disabled).
    Member { site: SiteId, agent: AgentId },
    /// 1: the stored part of a visitor's record agents see (identity,
    /// open conversation); the node the visitor is live on re-reads it.
    Visitor { visitor: String },
    /// 2: a canned-reply list (PROTOCOL.md 10.21): the site's (`owner:
    /// None`) or one agent's own. Each connection here that uses it reads
    /// the agent's replies again. A node that does not know this variant
    /// counts the message as malformed and skips it: its agents get the
    /// list when `lists::watch` there sees the change, within a second.
    Canned {
        site: SiteId,
        owner: Option<AgentId>,
    },
    /// 3: a site's invitation rules (PROTOCOL.md 10.20): its admins'
    /// connections here read them again. A node that does not know this
    /// variant skips it, and its `lists::watch` sees the change within a
    /// second unless it kept every length and count the same.
    InviteRules { site: SiteId },
}

/// What the sending node's live state says now. Presence is not stored: a
/// node re-announces its entries periodically, and the others drop an entry
/// not heard of for a while, so a node that dies takes its entries with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceDelta {
    /// 0: an agent's presence, and how many of its devices are connected to
    /// the sending node (0: none there any more).
    Agent {
        site: SiteId,
        agent: AgentId,
        presence: Presence,
        connections: u32,
    },
    /// 1: a visitor is live on the sending node, on this page.
    VisitorHere {
        site: SiteId,
        visitor: String,
        page: Option<PageView>,
    },
    /// 2: the visitor has no connection to the sending node any more.
    VisitorGone { site: SiteId, visitor: String },
    /// 3: a visitor is live on the sending node, with the whole record
    /// agents see (name, trail with the current page last, user agent):
    /// what the hub sends now, so an agent on another node sees the same
    /// line as one on the visitor's node without a read of the store.
    Visitor(Box<VisitorInfo>),
    /// 4: as `Agent`, with when the presence was set (`since_ms`, the
    /// setting node's clock, never lower than an earlier setting it knew
    /// of): what the hub sends now. An agent has one presence whichever
    /// of its devices set it, as on one node; nodes holding devices of the
    /// same agent take the latest one, so they agree.
    AgentAt {
        site: SiteId,
        agent: AgentId,
        presence: Presence,
        since_ms: i64,
        connections: u32,
    },
}

/// A message from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's `node_id` (for logs; two nodes may share a name).
    pub node: Arc<str>,
    pub msg: BusMsg,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Msg(Arc<Incoming>),
    /// Messages may have been missed: the bus (re)subscribed after being
    /// down, or this subscriber fell behind. Read the store for every live
    /// recipient instead of trusting the wakes heard so far.
    Gap,
}

/// What the bus hands to subscribers internally: the sender's process
/// instance rides along so a subscription can skip its own node's messages.
#[derive(Debug, Clone)]
pub(crate) enum Delivery {
    Msg { instance: u64, inc: Arc<Incoming> },
    Gap,
}

/// Whether the bus is delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Disconnected from Redis: publishing drops, nothing arrives; the
    /// store is the only way to hear of new events until it is back.
    Down,
}

impl Health {
    /// How often a node should read the store for its live recipients'
    /// new events whatever the bus says: every 250 ms while the bus is down
    /// (the store is then the only path), and every second while it is up,
    /// which bounds the delay of a pub/sub message Redis dropped silently
    /// (a slow subscriber's buffer, a failover) to well under 2 s.
    #[must_use]
    pub fn poll_every(self) -> Duration {
        match self {
            Health::Up => Duration::from_secs(1),
            Health::Down => Duration::from_millis(250),
        }
    }
}

/// Counters, all since start. Plain atomics so the hot path never locks.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Handed to the transport (Redis acknowledged them, or the local bus
    /// passed them on).
    pub published: AtomicU64,
    /// Dropped at publish: the bus was down or its queue full.
    pub publish_dropped: AtomicU64,
    /// From other nodes, handed to subscribers.
    pub received: AtomicU64,
    /// Our own messages, which the channel echoes back, skipped.
    pub own_skipped: AtomicU64,
    /// Messages that did not decode: counted and ignored.
    pub malformed: AtomicU64,
    /// Messages a slow subscriber missed (it got a [`Received::Gap`]).
    pub lagged: AtomicU64,
    /// Times a Redis connection was (re)established.
    pub connects: AtomicU64,
}

/// A copy of [`BusStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub published: u64,
    pub publish_dropped: u64,
    pub received: u64,
    pub own_skipped: u64,
    pub malformed: u64,
    pub lagged: u64,
    pub connects: u64,
}

impl BusStats {
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            published: g(&self.published),
            publish_dropped: g(&self.publish_dropped),
            received: g(&self.received),
            own_skipped: g(&self.own_skipped),
            malformed: g(&self.malformed),
            lagged: g(&self.lagged),
            connects: g(&self.connects),
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Publish and subscribe between nodes. Implementations never block the
/// caller and never panic on what arrives.
pub trait Bus: Send + Sync + fmt::Debug {
    /// This node's id as configured (`node_id`).
    fn node(&self) -> &str;
    /// Send to every other node. Returns at once: when the message cannot
    /// go now it is dropped and counted (it is only a wake-up).
    fn publish(&self, msg: BusMsg);
    /// Messages from the other nodes from now on (never this node's own).
    fn subscribe(&self) -> Subscription;
    /// Up or down, as it changes.
    fn health(&self) -> watch::Receiver<Health>;
    fn stats(&self) -> StatsSnapshot;
}

/// One subscriber's stream of messages from other nodes. It starts with a
/// [`Received::Gap`]: whatever was published before it existed is only in
/// the store.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Delivery>,
    own: u64,
    stats: Arc<BusStats>,
    fresh: bool,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Delivery>, own: u64, stats: Arc<BusStats>) -> Self {
        Self {
            rx,
            own,
            stats,
            fresh: true,
        }
    }

    /// The next message or gap; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        if std::mem::take(&mut self.fresh) {
            return Some(Received::Gap);
        }
        loop {
            match self.rx.recv().await {
                Ok(Delivery::Msg { instance, inc }) => {
                    if instance == self.own {
                        BusStats::add(&self.stats.own_skipped, 1);
                        continue;
                    }
                    return Some(Received::Msg(inc));
                }
                Ok(Delivery::Gap) => return Some(Received::Gap),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    BusStats::add(&self.stats.lagged, n);
                    return Some(Received::Gap);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// A number for this process's bus instance, so a node skips exactly its
/// own messages even if another node was given the same `node_id`.
pub(crate) fn instance_id() -> u64 {
    rand::random()
}

/// How many messages a subscriber may fall behind before it gets a
/// [`Received::Gap`] instead (and reads the store).
pub(crate) const SUBSCRIBER_BUFFER: usize = 8192;

/// Which bus a node uses, from the `bus` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BusConfig {
    /// One node: the in-process bus.
    #[default]
    Local,
    /// `redis://host:port[/db]`.
    Redis(String),
}

impl std::str::FromStr for BusConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "local" {
            return Ok(Self::Local);
        }
        if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
            return Err(format!(
                "{s:?}: the bus is \"local\" or a redis://host:port URL"
            ));
        }
        // Parsed here so a typo fails at start, not on the first connect.
        ::redis::Client::open(s).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Self::Redis(s.to_owned()))
    }
}

/// Start the bus a node's settings ask for. Needs a tokio runtime.
pub fn start(cfg: &BusConfig, node: &str) -> Result<Arc<dyn Bus>, BusError> {
    Ok(match cfg {
        BusConfig::Local => Arc::new(LocalBus::single(node)),
        BusConfig::Redis(url) => Arc::new(RedisBus::start(RedisBusConfig::new(url, node))?),
    })
}

/// The machine's host name, the default `node_id`.
#[must_use]
pub fn default_node_id() -> String {
    #[cfg(unix)]
    {
        let uts = rustix::system::uname();
        let name = uts.nodename().to_string_lossy().trim().to_owned();
        if !name.is_empty() {
            return name;
        }
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "holdfast".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus URL {url:?}: {source}")]
    Url {
        url: String,
        source: ::redis::RedisError,
    },
    #[error("the Redis bus needs a tokio runtime to run its connections on")]
    NoRuntime,
}
