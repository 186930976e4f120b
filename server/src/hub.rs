//! The in-memory hub: who is connected, who is on which page, and the
//! registry of live connections with their bounded outbound queues.
//!
//! The hub holds no durable data; the store does. It only routes committed
//! effects (`store::effect::Effect`) to live connections, and answers the
//! store's questions about who is available (`store::live`). Presence
//! changes only by connecting, disconnecting, or a committed
//! `Effect::Presence`. A connection whose queue is full is cut (its
//! queue answers `Kicked`) instead of growing memory; it resumes later from
//! its cursor. Presence is the exception: it is not durable and a newer list
//! supersedes it, so an agent whose queue is full of presence changes (5,000
//! visitors reconnecting at once) drops them, is marked stale, and gets the
//! whole current list once it has caught up. Unregistering removes that
//! exact connection, never a newer one for the same agent or visitor.
//!
//! - `publish`: committed effects to live connections, and wake-ups for
//!   the other nodes.
//! - [`fallback`]: presence's PostgreSQL copy, which keeps the other
//!   nodes' entries right while the bus is down.
//! - [`remote`]: the other nodes' connections as heard on the bus, the
//!   task that follows it, and the safety-net poll of the log heads (each
//!   live recipient's head as last handed to its connections here is kept
//!   in `AgentLive::head` / `VisitorLive::head`, so a poll wakes only the
//!   connections that are behind).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    AgentId, Event, LiveEvent, PageView, Presence, Role, Seq, SiteId, TeamMember, VisitorInfo,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::session::server::EncodedLive;
use holdfast_protocol::visitor::VisitorEvent;
use tokio::sync::Notify;

use crate::bus::{Bus, BusMsg, Changed, PresenceDelta, Recipient};
use crate::metrics::Metrics;
use crate::pushq::{self, TrySendError};
use crate::store::effect::Effect;
use crate::store::effect::VisitorChange;
use crate::store::reads::TRAIL_LEN;
use crate::store::{Availability, Publish};

/// A live event on its way to every agent of a site, encoded at most once
/// (by the first connection that sends it) however many agents it goes
/// to: with 100 agents signed in, each visitor change used to be cloned
/// and encoded 100 times.
#[derive(Debug)]
pub struct SharedLive {
    event: LiveEvent,
    encoded: OnceLock<EncodedLive>,
}

impl SharedLive {
    pub fn new(event: LiveEvent) -> Arc<Self> {
        Arc::new(Self {
            event,
            encoded: OnceLock::new(),
        })
    }

    pub fn event(&self) -> &LiveEvent {
        &self.event
    }

    /// The event as `Server::live_encoded` seals it.
    pub fn encoded(&self) -> &EncodedLive {
        self.encoded
            .get_or_init(|| EncodedLive::new(self.event.clone()))
    }
}

/// What an agent connection receives.
#[derive(Debug, Clone)]
pub enum AgentPush {
    Event(Seq, Arc<Event>),
    Live(Arc<SharedLive>),
    /// The session lost its rights (disabled, password changed): say why
    /// and close, unless it was opened at `epoch` or later (a sign-in with
    /// the new password that raced the change feed).
    Revoke(ErrorCode, Arc<str>, i64),
    /// Another node committed events for this agent up to this seq (or the
    /// node is reading every connection: `Seq::MAX`): read from the log
    /// what was not sent yet. The only way events written elsewhere reach
    /// a connection, so nothing is delivered from a bus message.
    CatchUp(Seq),
    /// A canned-reply list this agent uses changed (committed here or on
    /// another node): read the agent's replies from the store and send
    /// them whole. The list is read by the connection, not carried here,
    /// because each agent's list is the site's and its own.
    Canned,
    /// The site's invitation rules changed (here, on another node or
    /// through the CLI): an admin's connection reads them, with their
    /// counts, and sends them whole; anyone else's ignores it.
    InviteRules,
}

/// What a visitor is told of who would answer: `online` for its own chat
/// (its group's, if it has one), and each group's state where the site
/// offers a choice (10.23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agents {
    pub online: bool,
    pub groups: Option<Arc<Vec<holdfast_protocol::visitor::GroupChoice>>>,
}

/// What a visitor connection receives.
#[derive(Debug, Clone)]
pub enum VisitorPush {
    Event(Seq, Arc<VisitorEvent>),
    /// Whether someone would answer (see [`Hub::agents_online_for`]), and,
    /// on a site that offers a choice of groups, each group's state.
    Agents(Agents),
    /// Read the log up to this seq (see [`AgentPush::CatchUp`]).
    CatchUp(Seq),
    /// The chat's place in the queue changed (a signal, not in the log).
    Queue(crate::queue::Place),
    /// The chat's agent (named) is typing, or stopped (`None`): a signal,
    /// queued only when there is room (see `crate::typing`).
    Typing(Option<Arc<str>>),
    /// An automatic invitation for the visitor (10.20): a signal, sent once.
    Invite(crate::invite::Invite),
}

fn visitor_weight(v: &VisitorInfo) -> usize {
    let trail: usize = v
        .trail
        .iter()
        .map(|p| 32 + p.url.len() + p.title.len() + p.referrer.as_ref().map_or(0, String::len))
        .sum();
    let attrs: usize = v.attrs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    200 + v.id.len()
        + v.name.as_ref().map_or(0, String::len)
        + v.email.as_ref().map_or(0, String::len)
        + v.user_agent.as_ref().map_or(0, String::len)
        + v.lang.as_ref().map_or(0, String::len)
        + trail
        + attrs
}

impl pushq::Weigh for AgentPush {
    fn weight(&self) -> usize {
        match self {
            AgentPush::Event(_, e) => match &**e {
                Event::Message(m) => 128 + m.body.len(),
                Event::Conversation(_) => 256,
                Event::Delivered { .. } => 48,
            },
            AgentPush::Live(l) => match l.event() {
                LiveEvent::Visitors(list) => list.iter().map(visitor_weight).sum(),
                LiveEvent::Visitor(v) => visitor_weight(v),
                LiveEvent::VisitorUpdates(list) => list.iter().map(visitor_weight).sum(),
                LiveEvent::Team(t) => 96 * t.len(),
                LiveEvent::Typing { draft, .. } => 96 + draft.as_ref().map_or(0, String::len),
                _ => 96,
            },
            AgentPush::Revoke(_, m, _) => 64 + m.len(),
            AgentPush::CatchUp(_) | AgentPush::Canned | AgentPush::InviteRules => 16,
        }
    }

    /// Live state is queued only while there is room (see `push_live`),
    /// and a connection that lost some gets the whole lists again once it
    /// has caught up: so it may also make room for a durable event.
    fn sheddable(&self) -> bool {
        matches!(self, AgentPush::Live(_))
    }
}

impl pushq::Weigh for VisitorPush {
    fn weight(&self) -> usize {
        match self {
            VisitorPush::Event(_, e) => match &**e {
                VisitorEvent::Message(m) => 160 + m.body.len(),
                VisitorEvent::Conversation(_) => 96,
            },
            // The groups are shared; their text is what the frame carries.
            VisitorPush::Agents(a) => 16 + a.groups.as_ref().map_or(0, |g| 48 * g.len()),
            VisitorPush::CatchUp(_) | VisitorPush::Queue(_) => 16,
            VisitorPush::Typing(n) => 32 + n.as_ref().map_or(0, |n| n.len()),
            VisitorPush::Invite(i) => 48 + i.text.len(),
        }
    }
}

/// A live connection's side of the registry.
#[derive(Debug)]
pub struct Registration<T> {
    pub id: u64,
    /// Pushes, the kick, and the stale mark (set when presence updates were
    /// dropped for a full queue: the connection then sends the whole visitor
    /// list again).
    pub rx: pushq::Receiver<T>,
}

#[derive(Debug)]
struct Conn<T> {
    id: u64,
    tx: pushq::Sender<T>,
}

#[derive(Debug)]
struct AgentLive {
    site: SiteId,
    presence: Presence,
    conns: Vec<Conn<AgentPush>>,
    /// When `presence` was set (`crate::store::now_ms`, raised past any
    /// setting heard of): of the nodes holding devices of the agent, the
    /// latest setting wins (see `remote`), so that they agree.
    presence_ms: i64,
    /// The agent's team row (name, role, capacity, load) as last committed.
    member: TeamMember,
    /// When the last connection went away: the grace period before the
    /// agent's open chats are handed back runs from here.
    offline_since: Option<Instant>,
    /// The newest seq of the agent's log its connections here were handed
    /// (pushed, or told to catch up to); 0 when unknown (a connection just
    /// registered). A poll of the log heads wakes only who is behind it.
    head: Seq,
}

#[derive(Debug)]
struct VisitorLive {
    info: VisitorInfo,
    conns: Vec<Conn<VisitorPush>>,
    /// Made by the first long-poll: most visitors use a WebSocket, and
    /// each idle one counts (15,000 of them, 1 MB for these fields).
    poll: Option<Box<LongPoll>>,
    /// When the last connection went away (a grace period follows, so a page
    /// navigation does not flicker the visitor off the agents' list).
    gone_since: Option<Instant>,
    /// As [`AgentLive::head`], for the visitor's log.
    head: Seq,
    /// `State::visitor_changes` when a committed change last reached this
    /// record here: a re-read started before that is older than it.
    changed: u64,
    /// Its chat's place in the queue as last told, while it waits.
    queue: Option<crate::queue::Place>,
    /// Counts changes of `queue`; [`LongPoll::queue_polled`] is the count
    /// a long-poll last answered with, so each change reaches long-poll
    /// once.
    queue_gen: u32,
    /// The visitor's typing signals forwarded to agents so far.
    typing_in: crate::typing::Throttle,
    /// Its agent's typing as last told (the agent's name while typing),
    /// and, as for `queue`, its change count.
    agent_typing: Option<Arc<str>>,
    typing_gen: u32,
    /// An invitation rule was tried for this visit here (fired or not):
    /// the writer decides once, not every tick.
    invite_tried: bool,
    /// The site group its widget targets (10.23), as its hello here said:
    /// whether anyone is there to answer is about that group's agents.
    group: Option<String>,
    /// Who would answer, as last told, and as for `queue`, its change
    /// count: a long-poll answers with each change once.
    agents: Option<Agents>,
    agents_gen: u32,
}

/// A visitor's long-poll state. The counts start at 0 like the record's
/// change counts, so a first poll answers with whatever changed since the
/// record was made.
#[derive(Debug)]
struct LongPoll {
    /// Polls held open now.
    open: usize,
    last: Option<Instant>,
    /// Wakes the polls when anything for the visitor is committed or told.
    notify: Arc<Notify>,
    queue_polled: u32,
    typing_polled: u32,
    agents_polled: u32,
    /// The invitation a long-poll has not answered with yet.
    invite: Option<crate::invite::Invite>,
}

impl VisitorLive {
    fn polls_open(&self) -> usize {
        self.poll.as_ref().map_or(0, |p| p.open)
    }

    fn wake_polls(&self) {
        if let Some(p) = &self.poll {
            p.notify.notify_waiters();
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub agent_queue: usize,
    pub visitor_queue: usize,
    /// How long a visitor stays listed after their last tab closed.
    pub visitor_grace: Duration,
    /// Bytes a connection's queue may hold before it is cut (agents) or
    /// marked stale (agents' presence), and how long it may hold items
    /// without taking any.
    pub agent_queue_bytes: usize,
    pub visitor_queue_bytes: usize,
    pub queue_stall: Duration,
    /// How often changed visitors are sent to agents.
    pub presence_every: Duration,
    /// The most one visitor-list message may hold, in encoded bytes: a
    /// long list, or many changes at once, go in several. Far below a
    /// frame on purpose, at about the gateway's write chunk: each message
    /// is sealed into buffers of its size, per agent. Parts of half a
    /// megabyte made a reconnect storm peak at 165 MB (100 agents each
    /// sealing one), and 32 KiB parts left 15,000 idle visitors with 200
    /// agents 20 MB bigger than one visitor a frame did; 8 KiB parts cost
    /// neither, and 150 frames for 5,000 visitors.
    pub list_budget: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            agent_queue: 4096,
            visitor_queue: 256,
            visitor_grace: Duration::from_secs(10),
            agent_queue_bytes: 16 * 1024 * 1024,
            visitor_queue_bytes: 512 * 1024,
            queue_stall: Duration::from_secs(30),
            presence_every: Duration::from_millis(250),
            list_budget: 8 * 1024,
        }
    }
}

impl State {
    /// A new connection's two ends, under the lock that registers it: kicked
    /// at once if shutdown has begun, so a hello in flight cannot slip past
    /// `kick_all`.
    fn connect<T: pushq::Weigh>(&mut self, bounds: pushq::Bounds) -> (Conn<T>, Registration<T>) {
        let (tx, rx) = pushq::bounded(bounds);
        if self.closing {
            tx.kick();
        }
        self.next_conn += 1;
        let id = self.next_conn;
        (Conn { id, tx }, Registration { id, rx })
    }
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<AgentId, AgentLive>,
    /// Boxed: an entry is over 500 bytes, and a map keeps up to twice as
    /// many slots as entries (32,768 for 15,000 visitors), so inline
    /// entries cost an idle visitor about 1.2 KB where boxed ones cost
    /// their own size and a pointer.
    visitors: HashMap<String, Box<VisitorLive>>,
    /// Visitors whose new state agents have not been sent yet: sent in
    /// one go every `presence_every`, the latest state only, so a visitor
    /// who navigates (or identifies) 1,000 times a second costs agents a
    /// few updates a second, not 1,000.
    dirty: std::collections::HashSet<String>,
    /// Visitors here whose chat waits in the queue (see `Hub::set_queue`).
    queued: std::collections::HashSet<String>,
    /// Sites outside their business hours now (see `hours::watch`).
    closed_sites: std::collections::HashSet<SiteId>,
    /// Each site's groups, their members and hours (see `groups::watch`).
    groups: HashMap<SiteId, crate::groups::SiteGroups>,
    /// The group a long-poll hello named, for a visitor with no entry here
    /// yet (its entry is made by its first poll): taken when it is made.
    poll_groups: HashMap<String, (Option<String>, Instant)>,
    /// The latest invitation signal heard here for each visitor, from this
    /// node or another: an agent signing in (an app restarted) gets those
    /// of the visitors online now, so it still sees whom a rule invited
    /// this visit and how it went. Forgotten with the visitor.
    invitations: HashMap<String, holdfast_protocol::agent::InvitationSignal>,
    /// Shutting down: `kick_all` has run.
    closing: bool,
    /// The other nodes' agents and visitors, as heard on the bus.
    remote: remote::RemoteState,
    /// Counts committed changes applied to visitors' records (see
    /// `VisitorLive::changed`).
    visitor_changes: u64,
    /// Each site's visitor list as last encoded for agents signing in
    /// (see `visitor_list`), valid while its generation is the site's.
    visitor_lists: HashMap<SiteId, Arc<visitor_list::VisitorList>>,
    /// Per site: bumped whenever its agents are told of a change to its
    /// visitor list, which makes the encoded list above stale.
    visitor_list_gen: HashMap<SiteId, u64>,
    next_conn: u64,
}

#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    cfg: HubConfig,
    metrics: Arc<Metrics>,
    /// Set once at start when there are other nodes (`bus` is Redis):
    /// committed batches then wake them and presence changes are told.
    /// Unset on a single node, which then pays nothing for any of it.
    bus: OnceLock<Arc<dyn Bus>>,
    /// Set when this node tells the bus of a presence change (or
    /// re-announces): the PostgreSQL copy's writer looks for what changed.
    presence_dirty: std::sync::atomic::AtomicBool,
    /// Set when some site's invitation rules changed (here, on another
    /// node or through the CLI): `invite::watch` reads them again at its
    /// next tick rather than at its next periodic reload.
    invite_rules_dirty: std::sync::atomic::AtomicBool,
}

/// Send a presence change to an agent; a full queue drops it and marks the
/// connection stale instead of cutting it (see the module docs).
fn push_live(conn: &Conn<AgentPush>, ev: Arc<SharedLive>, metrics: &Metrics) -> bool {
    match conn.tx.try_send(AgentPush::Live(ev)) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            if conn.tx.mark_stale() {
                metrics.live_resyncs.inc();
            }
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

/// Send a typing signal to one connection only when its queue holds less
/// than [`crate::typing::SIGNAL_ROOM`] bytes; otherwise drop it. Never cuts
/// or marks the connection: a signal must not cost a real message anything.
fn push_signal<T: pushq::Weigh>(conn: &Conn<T>, item: T) -> bool {
    if conn.tx.queued_bytes() >= crate::typing::SIGNAL_ROOM {
        return true;
    }
    !matches!(conn.tx.try_send(item), Err(TrySendError::Closed(_)))
}

/// Send to one connection; a full queue first sheds the live state it
/// holds (the connection is then marked stale, to get the lists again),
/// and cuts the connection only if that does not make room.
fn push<T: pushq::Weigh>(conn: &Conn<T>, item: T, metrics: &Metrics) -> bool {
    match conn.tx.try_send_shedding(item) {
        Ok(shed) => {
            if shed && conn.tx.mark_stale() {
                metrics.live_resyncs.inc();
            }
            true
        }
        Err(TrySendError::Full(_)) => {
            metrics.slow_consumer_cuts.inc();
            conn.tx.kick();
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

impl Hub {
    pub fn new(cfg: HubConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            cfg,
            metrics,
            bus: OnceLock::new(),
            presence_dirty: std::sync::atomic::AtomicBool::new(false),
            invite_rules_dirty: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Share this node's live side with the others over `bus`. Once, at
    /// start; a second call is ignored.
    pub fn attach_bus(&self, bus: Arc<dyn Bus>) {
        let _first = self.bus.set(bus);
    }

    fn tell(&self, msg: impl FnOnce() -> BusMsg) {
        if let Some(bus) = self.bus.get() {
            let msg = msg();
            let counter = match &msg {
                BusMsg::Wake { .. } => &self.metrics.bus.wakes_published,
                BusMsg::Presence(_) => {
                    self.presence_dirty
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    &self.metrics.bus.presence_sent
                }
                BusMsg::Changed(_) => &self.metrics.bus.changes_sent,
                BusMsg::Hello | BusMsg::Typing(_) => &self.metrics.bus.presence_sent,
            };
            counter.inc();
            bus.publish(msg);
        }
    }

    /// Tell the other nodes how many devices of `agent` are here now.
    fn tell_agent(&self, st: &State, agent: AgentId) {
        let Some(a) = st.agents.get(&agent) else {
            return;
        };
        self.tell(|| {
            BusMsg::Presence(PresenceDelta::AgentAt {
                site: a.site,
                agent,
                presence: a.presence,
                since_ms: a.presence_ms,
                connections: u32::try_from(a.conns.len()).unwrap_or(u32::MAX),
            })
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state is still
        // a consistent routing table, so keep serving rather than cascade.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn broadcast_live(&self, st: &mut State, site: SiteId, ev: LiveEvent) {
        if matches!(
            ev,
            LiveEvent::Visitor(_)
                | LiveEvent::VisitorGone { .. }
                | LiveEvent::Visitors(_)
                | LiveEvent::VisitorUpdates(_)
        ) {
            visitor_list::changed(st, site);
        }
        let ev = SharedLive::new(ev);
        for a in st.agents.values_mut().filter(|a| a.site == site) {
            a.conns.retain(|c| push_live(c, ev.clone(), &self.metrics));
        }
    }

    /// Tell the connections that use a canned-reply list to read it again:
    /// every agent of `site` for the site's (`owner: None`), or the one
    /// agent whose own list it is. Called for changes committed here and
    /// for those other nodes announce.
    pub fn canned_changed(&self, site: SiteId, owner: Option<AgentId>) {
        let mut st = self.lock();
        self.canned_changed_in(&mut st, site, owner);
    }

    fn canned_changed_in(&self, st: &mut State, site: SiteId, owner: Option<AgentId>) {
        for (id, a) in &mut st.agents {
            if a.site == site && owner.is_none_or(|o| o == *id) {
                a.conns
                    .retain(|c| push(c, AgentPush::Canned, &self.metrics));
            }
        }
    }

    /// `site`'s invitation rules changed: its admins' connections here
    /// read them again. Called for changes committed here and for those
    /// `lists::watch` sees.
    pub fn invite_rules_changed(&self, site: SiteId) {
        let mut st = self.lock();
        self.invite_rules_changed_in(&mut st, site);
    }

    /// Whether invitation rules changed since the last call.
    pub fn take_invite_rules_changed(&self) -> bool {
        self.invite_rules_dirty
            .swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    fn invite_rules_changed_in(&self, st: &mut State, site: SiteId) {
        self.invite_rules_dirty
            .store(true, std::sync::atomic::Ordering::Release);
        // Only admins read the rules; the role as the hub last heard it
        // is enough to skip the rest, and the connection checks again.
        for a in st
            .agents
            .values_mut()
            .filter(|a| a.site == site && a.member.role == Role::Admin)
        {
            a.conns
                .retain(|c| push(c, AgentPush::InviteRules, &self.metrics));
        }
    }

    /// A site's tag list changed (through the CLI, seen by `lists::watch`):
    /// its agents' pickers get the new list at once.
    pub fn site_tags_changed(&self, site: SiteId, tags: Vec<String>) {
        let mut st = self.lock();
        let ev = SharedLive::new(LiveEvent::SiteTags(tags));
        for a in st.agents.values_mut().filter(|a| a.site == site) {
            a.conns.retain(|c| push_live(c, ev.clone(), &self.metrics));
        }
    }

    /// Every agent connection here reads its canned replies again: notes
    /// of changes on other nodes may have been lost (a bus gap).
    pub fn canned_changed_all(&self) {
        let mut st = self.lock();
        for a in st.agents.values_mut() {
            a.conns
                .retain(|c| push(c, AgentPush::Canned, &self.metrics));
        }
    }

    /// Tell the site's agents about one agent's presence, role or load.
    fn broadcast_member(&self, st: &mut State, agent: AgentId) {
        let Some(a) = st.agents.get(&agent) else {
            return;
        };
        // Its presence on any node: seen here once, it may be on another.
        let member = TeamMember {
            presence: Self::presence_in(st, agent),
            ..a.member.clone()
        };
        let site = a.site;
        self.broadcast_live(st, site, LiveEvent::TeamMember(member));
    }

    fn broadcast_agents_online(&self, st: &mut State, site: SiteId) {
        // Outside business hours no one is there to answer, whoever is
        // signed in: visitors get the leave-a-message form. A visitor of a
        // group hears about that group's agents and hours.
        let whole = Self::online_for(st, site, None);
        let per_group = Self::online_per_group(st, site);
        // A choice on screen must not go on saying "online" for a group
        // whose last agent left, nor "away" for one who came.
        let choices = Self::group_choices(st, site, &per_group);
        for v in st.visitors.values_mut().filter(|v| v.info.site == site) {
            let online = v
                .group
                .as_ref()
                .and_then(|g| per_group.get(g).copied())
                .unwrap_or(whole);
            let now = Agents {
                online,
                groups: choices.clone(),
            };
            if v.agents.as_ref() != Some(&now) {
                v.agents = Some(now.clone());
                v.agents_gen = v.agents_gen.wrapping_add(1);
                v.wake_polls();
            }
            v.conns
                .retain(|c| push(c, VisitorPush::Agents(now.clone()), &self.metrics));
        }
    }

    /// Whether someone of each of the site's groups would answer, by key.
    fn online_per_group(st: &State, site: SiteId) -> HashMap<String, bool> {
        st.groups
            .get(&site)
            .map(|g| {
                g.groups
                    .iter()
                    .map(|g| (g.key.clone(), Self::online_for(st, site, Some(&g.key))))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Who would answer for a visitor of `site` (of `group`), now: what a
    /// welcome says, on both transports.
    pub fn agents_for(&self, site: SiteId, group: Option<&str>) -> Agents {
        Self::agents_now(&self.lock(), site, group)
    }

    /// Who would answer for a visitor of `site` (of `group`), now.
    fn agents_now(st: &State, site: SiteId, group: Option<&str>) -> Agents {
        let per_group = Self::online_per_group(st, site);
        Agents {
            online: Self::online_for(st, site, group),
            groups: Self::group_choices(st, site, &per_group),
        }
    }

    /// The site's groups to choose from with each one's state, where the
    /// site offers a choice, as `welcome.groups` has them.
    fn group_choices(
        st: &State,
        site: SiteId,
        per_group: &HashMap<String, bool>,
    ) -> Option<Arc<Vec<holdfast_protocol::visitor::GroupChoice>>> {
        let g = st.groups.get(&site)?;
        (g.choice && !g.groups.is_empty()).then(|| {
            Arc::new(
                g.groups
                    .iter()
                    .map(|g| holdfast_protocol::visitor::GroupChoice {
                        key: g.key.clone(),
                        name: g.name.clone(),
                        online: per_group.get(&g.key).copied().unwrap_or(false),
                    })
                    .collect(),
            )
        })
    }

    /// Who would answer, when it changed since a long-poll of `visitor`
    /// last answered with it.
    pub fn poll_agents(&self, visitor: &str) -> Option<Agents> {
        let mut st = self.lock();
        let v = st.visitors.get_mut(visitor)?;
        let now = v.agents.clone()?;
        let gen_now = v.agents_gen;
        let p = v.poll.as_mut()?;
        (p.agents_polled != gen_now).then(|| {
            p.agents_polled = gen_now;
            now
        })
    }

    /// Whether a visitor of `site` (for `group`, if the site has it) would
    /// find someone to answer: an agent (of the group) available, within
    /// the business hours (the group's own, if it has them, else the
    /// site's).
    fn online_for(st: &State, site: SiteId, group: Option<&str>) -> bool {
        let site_open = !st.closed_sites.contains(&site);
        let Some(g) = group.and_then(|k| st.groups.get(&site)?.get(k)) else {
            return site_open && Self::site_has_online(st, site);
        };
        g.open.unwrap_or(site_open)
            && Self::connected_in(st, site)
                .iter()
                .any(|(a, p)| *p == Presence::Online && g.members.contains(a))
    }

    /// The groups as read now: each site whose groups changed tells its
    /// agents here their new list, and its visitors whether someone of
    /// their group is there.
    pub fn set_groups(&self, groups: HashMap<SiteId, crate::groups::SiteGroups>) {
        let mut st = self.lock();
        let empty = crate::groups::SiteGroups::default();
        let changed: Vec<SiteId> = st
            .groups
            .keys()
            .chain(groups.keys())
            .copied()
            .collect::<std::collections::HashSet<_>>()
            .into_iter()
            .filter(|s| st.groups.get(s).unwrap_or(&empty) != groups.get(s).unwrap_or(&empty))
            .collect();
        st.groups = groups;
        for site in changed {
            let now = st.groups.get(&site).cloned().unwrap_or_default();
            for (id, a) in st.agents.iter_mut().filter(|(_, a)| a.site == site) {
                let ev = SharedLive::new(LiveEvent::Groups(now.for_agent(*id)));
                a.conns.retain(|c| push_live(c, ev.clone(), &self.metrics));
            }
            self.broadcast_agents_online(&mut st, site);
        }
    }

    /// The group a visitor's hello here named (known to the site), so its
    /// `agents` signals are about that group.
    pub fn set_visitor_group(&self, visitor: &str, group: Option<String>) {
        let mut st = self.lock();
        match st.visitors.get_mut(visitor) {
            Some(v) => v.group = group,
            // A long-poll hello comes before the poll that makes the entry.
            None => {
                st.poll_groups
                    .insert(visitor.to_owned(), (group, Instant::now()));
            }
        }
    }

    /// Register an agent connection; `member` is its team row as read at
    /// login.
    pub fn register_agent(&self, site: SiteId, member: TeamMember) -> Registration<AgentPush> {
        let mut st = self.lock();
        let (conn, reg) = st.connect(pushq::Bounds {
            items: self.cfg.agent_queue,
            bytes: self.cfg.agent_queue_bytes,
            stall: self.cfg.queue_stall,
        });
        let agent = member.agent;
        // On one node a device that joins keeps the presence the agent's
        // other devices have ("away" stays away); so does one that joins
        // here while the others are on other nodes.
        let elsewhere = st
            .remote
            .latest(agent)
            .filter(|(p, _)| *p != Presence::Offline);
        let entry = st.agents.entry(agent).or_insert_with(|| AgentLive {
            site,
            presence: Presence::Offline,
            presence_ms: 0,
            conns: Vec::new(),
            member: member.clone(),
            offline_since: None,
            head: 0,
        });
        entry.member = member;
        entry.conns.push(conn);
        entry.offline_since = None;
        // The new connection read the log before registering: whatever was
        // committed elsewhere since, the next poll finds it behind.
        entry.head = 0;
        let came_online = entry.presence == Presence::Offline;
        if came_online {
            (entry.presence, entry.presence_ms) = elsewhere.unwrap_or((
                Presence::Online,
                crate::store::now_ms().max(entry.presence_ms + 1),
            ));
        }
        // Even a second device broadcasts: the row may have changed.
        self.broadcast_member(&mut st, agent);
        self.tell_agent(&st, agent);
        if came_online {
            self.broadcast_agents_online(&mut st, site);
        }
        self.metrics.agent_connections.inc();
        reg
    }

    /// Remove exactly this connection. Returns true when it was the agent's
    /// last one.
    pub fn unregister_agent(&self, agent: AgentId, conn: u64) -> bool {
        let mut st = self.lock();
        let Some(a) = st.agents.get_mut(&agent) else {
            return false;
        };
        let before = a.conns.len();
        a.conns.retain(|c| c.id != conn);
        if a.conns.len() < before {
            self.metrics.agent_connections.dec();
        }
        let last = a.conns.is_empty();
        self.tell_agent(&st, agent);
        let Some(a) = st.agents.get_mut(&agent).filter(|_| last) else {
            return false;
        };
        a.offline_since = Some(Instant::now());
        if a.presence != Presence::Offline {
            let site = a.site;
            a.presence = Presence::Offline;
            self.broadcast_member(&mut st, agent);
            self.broadcast_agents_online(&mut st, site);
        }
        true
    }

    /// A committed presence change (`Effect::Presence`): the only way an
    /// agent's presence moves other than connecting and disconnecting.
    fn apply_presence(&self, st: &mut State, agent: AgentId, presence: Presence) {
        let Some(a) = st.agents.get_mut(&agent) else {
            return;
        };
        if a.conns.is_empty() || a.presence == presence {
            return;
        }
        // Later than any setting known, whatever the clocks say, so that
        // it wins over what it replaces on every node.
        let heard = st.remote.latest(agent).map_or(0, |(_, at)| at);
        let Some(a) = st.agents.get_mut(&agent) else {
            return;
        };
        a.presence = presence;
        a.presence_ms = crate::store::now_ms().max(a.presence_ms + 1).max(heard + 1);
        let site = a.site;
        self.broadcast_member(st, agent);
        self.broadcast_agents_online(st, site);
        self.tell_agent(st, agent);
    }

    /// How many connections (devices) the agent has now, on any node.
    pub fn connections(&self, agent: AgentId) -> usize {
        let st = self.lock();
        let here = st.agents.get(&agent).map_or(0, |a| a.conns.len());
        here + st.remote.agent(agent).map_or(0, |(_, _, n)| n)
    }

    /// Presence of an agent: this node's connections first, then the
    /// other nodes'.
    fn presence_in(st: &State, agent: AgentId) -> Presence {
        match st.agents.get(&agent).filter(|a| !a.conns.is_empty()) {
            Some(a) => a.presence,
            None => st
                .remote
                .agent(agent)
                .map_or(Presence::Offline, |(_, p, _)| p),
        }
    }

    fn site_has_online(st: &State, site: SiteId) -> bool {
        st.agents
            .values()
            .any(|a| a.site == site && a.presence == Presence::Online && !a.conns.is_empty())
            || st
                .remote
                .agents_of_site(site)
                .iter()
                .any(|(_, p)| *p == Presence::Online)
    }

    /// Since when the agent has had no connection: `None` while connected,
    /// and for an agent this server has not seen since it started (the
    /// caller counts from the start).
    pub fn offline_since(&self, agent: AgentId) -> Option<Instant> {
        self.lock().agents.get(&agent).and_then(|a| a.offline_since)
    }

    /// The team as the hub knows it: presence for the agents it has seen,
    /// over the stored rows the caller read.
    pub fn team(&self, mut rows: Vec<TeamMember>) -> Vec<TeamMember> {
        let st = self.lock();
        for m in &mut rows {
            m.presence = Self::presence_in(&st, m.agent);
        }
        rows
    }

    /// An agent's stored row changed (committed by the writer, or by the
    /// CLI): keep it and tell the site.
    pub fn update_member(&self, site: SiteId, member: TeamMember) {
        let mut st = self.lock();
        self.set_member(&mut st, site, member);
    }

    fn set_member(&self, st: &mut State, site: SiteId, member: TeamMember) {
        let agent = member.agent;
        match st.agents.get_mut(&agent) {
            Some(a) => {
                a.member = member;
                self.broadcast_member(st, agent);
            }
            None => {
                // Not connected here since start: its presence is another
                // node's (or offline), and the panel still wants its load.
                let member = TeamMember {
                    presence: Self::presence_in(st, agent),
                    ..member
                };
                self.broadcast_live(st, site, LiveEvent::TeamMember(member));
            }
        }
    }

    /// End every session of the agent opened before auth epoch `epoch`,
    /// with the reason, within a moment.
    pub fn revoke(&self, agent: AgentId, code: ErrorCode, message: &str, epoch: i64) {
        let st = self.lock();
        let Some(a) = st.agents.get(&agent) else {
            return;
        };
        let msg: Arc<str> = Arc::from(message);
        for c in &a.conns {
            if c.tx
                .try_send(AgentPush::Revoke(code, msg.clone(), epoch))
                .is_err()
            {
                c.tx.kick();
            }
        }
    }

    /// Online, connected agents of a site (for auto-assignment), on any
    /// node.
    pub fn available_agents(&self, site: SiteId) -> Vec<AgentId> {
        let st = self.lock();
        let mut v: Vec<AgentId> = Self::connected_in(&st, site)
            .into_iter()
            .filter(|(_, p)| *p == Presence::Online)
            .map(|(id, _)| id)
            .collect();
        v.sort_unstable();
        v
    }

    /// The site's agents with a connection on any node, and their presence.
    fn connected_in(st: &State, site: SiteId) -> Vec<(AgentId, Presence)> {
        let mut v: Vec<(AgentId, Presence)> = st
            .agents
            .iter()
            .filter(|(_, a)| a.site == site && !a.conns.is_empty())
            .map(|(id, a)| (*id, a.presence))
            .collect();
        for (id, p) in st.remote.agents_of_site(site) {
            if !v.iter().any(|(a, _)| *a == id) {
                v.push((id, p));
            }
        }
        v
    }

    /// Whether a visitor of `site` would find someone to answer: an agent
    /// is available and the site is within its business hours.
    pub fn agents_online(&self, site: SiteId) -> bool {
        self.agents_online_for(site, None)
    }

    /// As [`Hub::agents_online`], for a visitor of `group`: an agent of
    /// the group is available, within the group's hours (or the site's,
    /// without its own). A group the site does not have counts as none.
    pub fn agents_online_for(&self, site: SiteId, group: Option<&str>) -> bool {
        Self::online_for(&self.lock(), site, group)
    }

    /// The sites outside their business hours now: the visitors of each
    /// site that opened or closed are told.
    pub fn set_closed_sites(&self, closed: std::collections::HashSet<SiteId>) {
        let mut st = self.lock();
        let changed: Vec<SiteId> = st
            .closed_sites
            .symmetric_difference(&closed)
            .copied()
            .collect();
        st.closed_sites = closed;
        for site in changed {
            self.broadcast_agents_online(&mut st, site);
        }
    }

    pub fn presence(&self, agent: AgentId) -> Presence {
        let st = self.lock();
        match st.agents.get(&agent) {
            // Seen here: its presence as last published here, even with no
            // connection here (the writer's overlay depends on that)...
            Some(a) if !a.conns.is_empty() || st.remote.agent(agent).is_none() => a.presence,
            // ...unless it is connected to another node.
            _ => Self::presence_in(&st, agent),
        }
    }

    /// Register a visitor tab (WebSocket). `info` is the stored record.
    pub fn register_visitor(&self, mut info: VisitorInfo) -> Registration<VisitorPush> {
        let mut st = self.lock();
        let (conn, reg) = st.connect(pushq::Bounds {
            items: self.cfg.visitor_queue,
            bytes: self.cfg.visitor_queue_bytes,
            stall: self.cfg.queue_stall,
        });
        let entry = self.visitor_entry(&mut st, &mut info);
        // A new connection learns its place at once, not at the next tick.
        if let Some(place) = entry.queue {
            push(&conn, VisitorPush::Queue(place), &self.metrics);
        }
        // Most visitors have one tab: a `Vec`'s first push makes room for
        // four (64 bytes), which 15,000 idle records would carry unused.
        entry.conns.reserve_exact(1);
        entry.conns.push(conn);
        entry.gone_since = None;
        let id = entry.info.id.clone();
        st.dirty.insert(id);
        self.metrics.visitor_ws_connections.inc();
        reg
    }

    /// The visitor's live entry, made from `info` (the stored record) if
    /// there is none. An existing entry takes the stored trail when that is
    /// newer: with several nodes a visitor's requests land on any of them
    /// (long-poll above all), and a page recorded through another node
    /// reaches this node's copy, which is what this node's agents see,
    /// only through the store.
    fn visitor_entry<'a>(&self, st: &'a mut State, info: &mut VisitorInfo) -> &'a mut VisitorLive {
        let now = crate::store::now_ms();
        let last_page = |i: &VisitorInfo| i.trail.last().map(|p| p.at_ms);
        if let Some(v) = st.visitors.get_mut(&info.id)
            && last_page(info) > last_page(&v.info)
        {
            v.info.trail = info.trail.clone();
            if v.info.referrer.is_none() {
                v.info.referrer = info.referrer.clone();
            }
            st.dirty.insert(info.id.clone());
        }
        // A later hello (another tab, a browser now set to another
        // language) may name a new language; none keeps the one known.
        if let Some(v) = st.visitors.get_mut(&info.id)
            && info.lang.is_some()
            && v.info.lang != info.lang
        {
            v.info.lang = info.lang.clone();
            st.dirty.insert(info.id.clone());
        }
        let group = st.poll_groups.remove(&info.id).and_then(|(g, _)| g);
        let entry = st.visitors.entry(info.id.clone()).or_insert_with(|| {
            let mut i = info.clone();
            i.visit_started_ms = now;
            Box::new(VisitorLive {
                info: i,
                conns: Vec::new(),
                poll: None,
                gone_since: None,
                head: 0,
                changed: 0,
                queue: None,
                queue_gen: 0,
                typing_in: crate::typing::Throttle::default(),
                agent_typing: None,
                typing_gen: 0,
                invite_tried: false,
                agents: None,
                agents_gen: 0,
                group,
            })
        });
        entry.info.online = true;
        // A new connection or long-poll: checked by the next poll (see
        // `register_agent`).
        entry.head = 0;
        entry
    }

    pub fn unregister_visitor(&self, visitor: &str, conn: u64) {
        let mut st = self.lock();
        let Some(v) = st.visitors.get_mut(visitor) else {
            return;
        };
        let before = v.conns.len();
        v.conns.retain(|c| c.id != conn);
        if v.conns.len() < before {
            self.metrics.visitor_ws_connections.dec();
        }
        if v.conns.is_empty() && v.polls_open() == 0 {
            v.gone_since = Some(Instant::now());
        }
    }

    /// A long-poll began: the visitor is online while polls keep coming.
    pub fn poll_begin(&self, mut info: VisitorInfo) -> Arc<Notify> {
        let mut st = self.lock();
        let fresh = !st.visitors.get(&info.id).is_some_and(|v| v.info.online);
        let site = info.site;
        let told = st
            .visitors
            .get(&info.id)
            .is_some_and(|v| v.agents.is_some());
        let now = (!told).then(|| {
            let group = match st.visitors.get(&info.id) {
                Some(v) => v.group.clone(),
                None => st.poll_groups.get(&info.id).and_then(|(g, _)| g.clone()),
            };
            Self::agents_now(&st, site, group.as_deref())
        });
        let entry = self.visitor_entry(&mut st, &mut info);
        entry.gone_since = None;
        let v = entry;
        let p = v.poll.get_or_insert_with(|| {
            Box::new(LongPoll {
                open: 0,
                last: None,
                notify: Arc::new(Notify::new()),
                queue_polled: 0,
                typing_polled: 0,
                agents_polled: 0,
                invite: None,
            })
        });
        p.open += 1;
        p.last = Some(Instant::now());
        // A long-poll visitor new here (or forgotten and back) may have
        // missed a change since its welcome: its first poll answers with
        // the state as it is now.
        if let Some(now) = now {
            v.agents = Some(now);
            v.agents_gen = p.agents_polled.wrapping_add(1);
        }
        let notify = p.notify.clone();
        let id = v.info.id.clone();
        if fresh {
            st.dirty.insert(id);
        }
        self.metrics.visitor_long_polls.inc();
        notify
    }

    pub fn poll_end(&self, visitor: &str) {
        let mut st = self.lock();
        if let Some(v) = st.visitors.get_mut(visitor) {
            if let Some(p) = v.poll.as_mut() {
                p.open = p.open.saturating_sub(1);
                p.last = Some(Instant::now());
            }
            self.metrics.visitor_long_polls.dec();
        }
    }

    /// The queue as read now: each waiting visitor here whose place changed
    /// is told on every connection and long-poll; one that stopped waiting
    /// is forgotten (its `conversation` event already said why).
    pub fn set_queue(&self, mut places: HashMap<String, crate::queue::Place>) {
        let mut st = self.lock();
        let st = &mut *st;
        for id in std::mem::take(&mut st.queued) {
            if !places.contains_key(&id)
                && let Some(v) = st.visitors.get_mut(&id)
            {
                v.queue = None;
            }
        }
        for (id, place) in places.drain() {
            let Some(v) = st.visitors.get_mut(&id) else {
                continue;
            };
            if place.worth_sending_over(v.queue.as_ref()) {
                v.queue = Some(place);
                v.queue_gen = v.queue_gen.wrapping_add(1);
                v.conns
                    .retain(|c| push(c, VisitorPush::Queue(place), &self.metrics));
                v.wake_polls();
            }
            st.queued.insert(id);
        }
    }

    /// The place a long-poll of `visitor` has not answered with yet, if
    /// its chat waits.
    pub fn poll_queue(&self, visitor: &str) -> Option<crate::queue::Place> {
        let mut st = self.lock();
        let v = st.visitors.get_mut(visitor)?;
        let place = v.queue?;
        let gen_now = v.queue_gen;
        let p = v.poll.as_mut()?;
        (p.queue_polled != gen_now).then(|| {
            p.queue_polled = gen_now;
            place
        })
    }

    /// A long-poll visitor said hello again (a reload, a new tab): its next
    /// poll answers with its place even if an earlier one did.
    pub fn poll_queue_again(&self, visitor: &str) {
        if let Some(v) = self.lock().visitors.get_mut(visitor)
            && let Some(p) = v.poll.as_mut()
        {
            p.queue_polled = v.queue_gen.wrapping_sub(1);
        }
    }

    /// Whether a typing signal of `visitor` at `now` may go out (at most 4
    /// a second, see [`crate::typing::Throttle`]); false for a visitor not
    /// live here.
    pub fn visitor_typing_admit(&self, visitor: &str, typing: bool, now: Instant) -> bool {
        self.lock()
            .visitors
            .get_mut(visitor)
            .is_some_and(|v| v.typing_in.admit(now, typing))
    }

    /// The visitor sent a message: its typing throttle starts over.
    pub fn visitor_typing_reset(&self, visitor: &str) {
        if let Some(v) = self.lock().visitors.get_mut(visitor) {
            v.typing_in.reset();
        }
    }

    /// A typing signal to the given agents' connections here, or, with
    /// `site`, to every agent of that site connected here. Best-effort: see
    /// [`push_signal`].
    pub fn signal_agents(&self, to: &[AgentId], site: Option<SiteId>, ev: LiveEvent) {
        if let (LiveEvent::Invitation(signal), Some(site)) = (&ev, site) {
            self.tell(|| {
                BusMsg::Typing(crate::bus::TypingSignal::Invitation {
                    site,
                    signal: signal.clone(),
                })
            });
        }
        if let LiveEvent::Typing {
            conversation,
            visitor,
            typing,
            draft,
        } = &ev
        {
            self.tell(|| {
                BusMsg::Typing(crate::bus::TypingSignal::ToAgents {
                    agents: to.to_vec(),
                    site,
                    conversation: *conversation,
                    visitor: visitor.clone(),
                    typing: *typing,
                    draft: draft.clone(),
                })
            });
        }
        self.signal_agents_here(to, site, ev);
    }

    /// A typing signal another node passed on, for connections here.
    pub fn typing_heard(&self, t: crate::bus::TypingSignal) {
        match t {
            crate::bus::TypingSignal::ToAgents {
                agents,
                site,
                conversation,
                visitor,
                typing,
                draft,
            } => self.signal_agents_here(
                &agents,
                site,
                LiveEvent::Typing {
                    conversation,
                    visitor,
                    typing,
                    draft,
                },
            ),
            crate::bus::TypingSignal::ToVisitor { visitor, name } => {
                self.agent_typing_here(&visitor, name.as_deref());
            }
            crate::bus::TypingSignal::Invitation { site, signal } => {
                self.signal_agents_here(&[], Some(site), LiveEvent::Invitation(signal));
            }
        }
    }

    fn signal_agents_here(&self, to: &[AgentId], site: Option<SiteId>, ev: LiveEvent) {
        let mut st = self.lock();
        if let LiveEvent::Invitation(i) = &ev {
            st.invitations.insert(i.visitor.clone(), i.clone());
        }
        let ev = SharedLive::new(ev);
        for (id, a) in st.agents.iter_mut() {
            if to.contains(id) || site == Some(a.site) {
                a.conns
                    .retain(|c| push_signal(c, AgentPush::Live(ev.clone())));
            }
        }
    }

    /// The chat's agent is typing (`Some(name)`) or stopped, to every live
    /// connection and long-poll of `visitor` here. Best-effort.
    pub fn agent_typing(&self, visitor: &str, name: Option<&str>) {
        self.tell(|| {
            BusMsg::Typing(crate::bus::TypingSignal::ToVisitor {
                visitor: visitor.to_owned(),
                name: name.map(str::to_owned),
            })
        });
        self.agent_typing_here(visitor, name);
    }

    fn agent_typing_here(&self, visitor: &str, name: Option<&str>) {
        let mut st = self.lock();
        let Some(v) = st.visitors.get_mut(visitor) else {
            return;
        };
        let name: Option<Arc<str>> = name.map(Arc::from);
        v.agent_typing = name.clone();
        v.typing_gen = v.typing_gen.wrapping_add(1);
        v.conns
            .retain(|c| push_signal(c, VisitorPush::Typing(name.clone())));
        v.wake_polls();
    }

    /// The agent's typing a long-poll of `visitor` has not answered with
    /// yet: `Some(None)` is a stop.
    pub fn poll_typing(&self, visitor: &str) -> Option<Option<Arc<str>>> {
        let mut st = self.lock();
        let v = st.visitors.get_mut(visitor)?;
        let gen_now = v.typing_gen;
        let p = v.poll.as_mut()?;
        (p.typing_polled != gen_now).then(|| {
            p.typing_polled = gen_now;
            v.agent_typing.clone()
        })
    }

    /// Visitors connected here (a WebSocket or a recent long-poll) of
    /// `site` that no invitation rule was tried for in this visit and that
    /// are not chatting: the ones [`crate::invite::watch`] may invite.
    pub fn invite_candidates(&self, site: SiteId) -> Vec<VisitorInfo> {
        let st = self.lock();
        st.visitors
            .values()
            .filter(|v| {
                v.info.site == site
                    && v.info.online
                    && !v.invite_tried
                    && v.info.conversation.is_none()
                    && v.gone_since.is_none()
            })
            .map(|v| v.info.clone())
            .collect()
    }

    /// The writer is deciding on an invitation for `visitor`: do not ask
    /// again in this visit.
    pub fn invite_tried(&self, visitor: &str) {
        if let Some(v) = self.lock().visitors.get_mut(visitor) {
            v.invite_tried = true;
        }
    }

    /// Hand `invite` to every live connection and long-poll of `visitor`
    /// here. Best-effort like every signal: a tab with no room misses it,
    /// and the rule does not fire again in this visit.
    pub fn invite(&self, visitor: &str, invite: crate::invite::Invite) {
        let mut st = self.lock();
        let Some(v) = st.visitors.get_mut(visitor) else {
            return;
        };
        v.conns
            .retain(|c| push_signal(c, VisitorPush::Invite(invite.clone())));
        if let Some(p) = v.poll.as_mut() {
            p.invite = Some(invite);
            p.notify.notify_waiters();
        }
    }

    /// The invitation a long-poll of `visitor` has not answered with yet.
    pub fn poll_invite(&self, visitor: &str) -> Option<crate::invite::Invite> {
        self.lock()
            .visitors
            .get_mut(visitor)
            .and_then(|v| v.poll.as_mut()?.invite.take())
    }

    /// Whether the visitor is known to the hub (online or within grace).
    pub fn visitor_live(&self, visitor: &str) -> Option<VisitorInfo> {
        self.lock().visitors.get(visitor).map(|v| v.info.clone())
    }

    pub fn visitor_page(&self, visitor: &str, page: PageView, user_agent: Option<String>) {
        let mut st = self.lock();
        let Some(v) = st.visitors.get_mut(visitor) else {
            return;
        };
        if v.info.trail.is_empty() {
            v.info.referrer = page.referrer.clone();
        }
        v.info.trail.push(page);
        if v.info.trail.len() > TRAIL_LEN {
            let excess = v.info.trail.len() - TRAIL_LEN;
            v.info.trail.drain(..excess);
        }
        if user_agent.is_some() {
            v.info.user_agent = user_agent;
        }
        st.dirty.insert(visitor.to_owned());
    }

    /// Online visitors of a site, on any node, for an agent's login.
    pub fn visitors_of_site(&self, site: SiteId) -> Vec<VisitorInfo> {
        Self::visitors_of_site_in(&self.lock(), site)
    }

    fn visitors_of_site_in(st: &State, site: SiteId) -> Vec<VisitorInfo> {
        let mut v: Vec<VisitorInfo> = st
            .visitors
            .values()
            .filter(|v| v.info.site == site && v.info.online)
            .map(|v| v.info.clone())
            .collect();
        // A visitor who moved here from another node is listed once, with
        // this node's copy.
        v.extend(
            st.remote
                .visitors_of_site(site)
                .into_iter()
                .filter(|r| !st.visitors.contains_key(&r.id)),
        );
        v.sort_by(|a, b| {
            a.visit_started_ms
                .cmp(&b.visit_started_ms)
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// The latest invitation signal of each of `online` (a site's visitors
    /// online now with the start of their visit, as [`Hub::visitor_list`]
    /// lists them), fired in their current visit: what an agent signing in
    /// needs to show whom the rules invited and how each answered.
    pub fn invitations_of(&self, online: &[(String, i64)]) -> Vec<LiveEvent> {
        let st = self.lock();
        online
            .iter()
            .filter_map(|(id, visit_started_ms)| {
                st.invitations
                    .get(id)
                    .filter(|i| i.at_ms >= *visit_started_ms)
                    .map(|i| LiveEvent::Invitation(i.clone()))
            })
            .collect()
    }

    /// Send agents the latest state of every visitor that changed since the
    /// last call. Run every `presence_every`.
    pub fn flush_presence(&self) {
        let mut st = self.lock();
        if st.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut st.dirty);
        // One message per site (or a few, each within a frame), not one
        // per visitor: 5,000 visitors reconnecting cost each agent a
        // handful of frames, and its queue a handful of items.
        let mut by_site: HashMap<SiteId, Vec<VisitorInfo>> = HashMap::new();
        for id in dirty {
            let Some(v) = st.visitors.get(&id) else {
                continue;
            };
            let info = v.info.clone();
            if info.online {
                self.tell(|| BusMsg::Presence(PresenceDelta::Visitor(Box::new(info.clone()))));
            }
            by_site.entry(info.site).or_default().push(info);
        }
        for (site, changed) in by_site {
            for ev in visitor_list::updates(changed, self.cfg.list_budget) {
                self.broadcast_live(&mut st, site, ev);
            }
        }
    }

    pub fn presence_every(&self) -> Duration {
        self.cfg.presence_every
    }

    /// Drop visitors whose grace period is over.
    pub fn sweep(&self, poll_timeout: Duration) {
        let mut st = self.lock();
        let now = Instant::now();
        let grace = self.cfg.visitor_grace;
        let gone: Vec<(String, SiteId)> = st
            .visitors
            .iter()
            .filter(|(_, v)| {
                let ws_gone = v.conns.is_empty() && v.polls_open() == 0;
                let since = v
                    .gone_since
                    .or_else(|| v.poll.as_ref()?.last.map(|t| t + poll_timeout))
                    .unwrap_or(now);
                ws_gone && now.saturating_duration_since(since) >= grace
            })
            .map(|(k, v)| (k.clone(), v.info.site))
            .collect();
        // Invitations of visitors gone from every node, whichever node
        // they were on.
        let State {
            invitations,
            visitors,
            remote,
            ..
        } = &mut *st;
        invitations.retain(|id, _| visitors.contains_key(id) || remote.visitor(id).is_some());
        // A hello whose poll never came (or went to another node).
        st.poll_groups
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(60));
        for (id, site) in gone {
            st.visitors.remove(&id);
            st.dirty.remove(&id);
            self.tell(|| {
                BusMsg::Presence(PresenceDelta::VisitorGone {
                    site,
                    visitor: id.clone(),
                })
            });
            // Still live on another node (it moved): agents keep it.
            if st.remote.visitor(&id).is_none() {
                self.broadcast_live(&mut st, site, LiveEvent::VisitorGone { visitor: id });
            }
        }
    }

    /// The stored part of a live visitor's record, read again because
    /// another node committed a change to it ([`Changed::Visitor`]): as a
    /// committed change made here, it reaches agents with the next flush
    /// (and the other nodes with its presence delta).
    pub fn visitor_reread(&self, stored: VisitorInfo) {
        let mut st = self.lock();
        let id = stored.id.clone();
        let Some(v) = st.visitors.get(&id) else {
            return;
        };
        let i = &v.info;
        if (
            &i.name,
            &i.email,
            &i.attrs,
            &i.external_id,
            i.verified,
            i.conversation,
        ) == (
            &stored.name,
            &stored.email,
            &stored.attrs,
            &stored.external_id,
            stored.verified,
            stored.conversation,
        ) {
            return;
        }
        Self::apply_visitor_change(
            &mut st,
            id.clone(),
            VisitorChange::Identity {
                name: stored.name,
                email: stored.email,
                attrs: stored.attrs,
                external_id: stored.external_id,
                verified: stored.verified,
            },
        );
        Self::apply_visitor_change(
            &mut st,
            id,
            VisitorChange::Conversation(stored.conversation),
        );
    }

    /// A committed change to a visitor's stored record: update the live
    /// copy and send it to agents with the next presence flush.
    fn apply_visitor_change(st: &mut State, visitor: String, change: VisitorChange) {
        let Some(v) = st.visitors.get_mut(&visitor) else {
            return;
        };
        st.visitor_changes += 1;
        v.changed = st.visitor_changes;
        match change {
            VisitorChange::Identity {
                name,
                email,
                attrs,
                external_id,
                verified,
            } => {
                v.info.name = name;
                v.info.email = email;
                v.info.attrs = attrs;
                v.info.external_id = external_id;
                v.info.verified = verified;
            }
            VisitorChange::Conversation(open) => v.info.conversation = open,
            VisitorChange::Blocked => {
                // Their reconnect's hello is refused: the widget goes.
                for c in v.conns.drain(..) {
                    c.tx.kick();
                }
                v.wake_polls();
            }
        }
        st.dirty.insert(visitor);
    }

    /// Tell every connection to go away (shutdown), and any that registers
    /// from now on as it registers.
    pub fn kick_all(&self) {
        let mut st = self.lock();
        st.closing = true;
        for a in st.agents.values() {
            for c in &a.conns {
                c.tx.kick();
            }
        }
        for v in st.visitors.values() {
            for c in &v.conns {
                c.tx.kick();
            }
            v.wake_polls();
        }
    }
}

/// The store asks the hub who can take a chat (see `store::live`).
impl Availability for Hub {
    fn connections(&self, agent: AgentId) -> usize {
        Hub::connections(self, agent)
    }

    fn presence(&self, agent: AgentId) -> Presence {
        Hub::presence(self, agent)
    }

    fn connected(&self, site: SiteId) -> Vec<(AgentId, Presence)> {
        Self::connected_in(&self.lock(), site)
    }
}

pub mod fallback;
mod publish;
pub mod remote;
pub mod visitor_list;

#[cfg(test)]
mod tests;
