//! The other nodes' live connections as this node hears of them on the bus
//! (issue 15), and the task that follows the bus.
//!
//! What this node shows from memory and another node may change reaches
//! it as a note to read the record again ([`Changed`]), never as the
//! record: a team row (load, role, capacity) committed elsewhere is read
//! and sent to the site's agents here; a visitor's stored record (identity,
//! open conversation) is read by the node the visitor is live on, whose
//! presence delta then carries it to everyone; a canned-reply list
//! changed elsewhere is read again by each connection here that uses it.
//! An agent whose presence moves on another node but who has no team row
//! here yet is read too. Notes lost with the bus are made up for on a gap:
//! the node reads again the teams of the sites with agents here, and the
//! open conversations of its live visitors (one query), and passes on only
//! what differs; each agent connection reads its canned replies again.
//!
//! Presence travels on the bus: each node announces its agents and
//! visitors when they change and all of them every [`ANNOUNCE_EVERY`], and
//! an entry not heard of for [`EXPIRE_AFTER`] is dropped, so a node that
//! dies takes its entries with it within 15 s. While the bus is down
//! nothing can be heard, so nothing expires by age then; instead, on
//! PostgreSQL, every second the other nodes' entries are replaced by
//! presence's copy in the database (`super::fallback`), where each node
//! writes its entries as they change and a heartbeat, so someone who
//! leaves, or a node that dies, during the outage is gone within 15 s too.
//! When the bus is back every node re-announces at once.
//!
//! Delivery never comes from a bus message's content: a wake (or a gap, or
//! the follower's timer) only tells the local connections to read the log
//! from their cursor ([`crate::hub::AgentPush::CatchUp`]). The timer's
//! safety-net poll is one query of the log heads of every recipient live
//! here ([`reads::log_heads`]); only the connections whose recipient's
//! head moved past what they were handed are woken, so an idle node's
//! poll costs one query, not one read per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    AgentId, LiveEvent, Presence, Seq, SiteId, TeamMember, VisitorInfo,
};

use super::{AgentLive, AgentPush, State, VisitorLive, VisitorPush};
use crate::Ctx;
use crate::bus::{BusMsg, Changed, Follower, Next, PresenceDelta, Recipient, Why};
use crate::store::reads;

/// How often a node announces all of its live entries.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(4);
/// The least time between two answers to other nodes' [`BusMsg::Hello`].
const HELLO_ANSWER_EVERY: Duration = Duration::from_secs(1);
/// An entry not re-announced for this long is gone: three announcements
/// missed. With the 1 s expiry sweep an entry of a dead node is gone at
/// most 13 s after the node's last announcement, within the 15 s promised.
pub const EXPIRE_AFTER: Duration = Duration::from_secs(12);

#[derive(Debug, Clone)]
pub(super) struct RemoteAgent {
    pub site: SiteId,
    pub presence: Presence,
    /// When the presence was set (0: unknown, from an old node or from
    /// presence's PostgreSQL copy, which does not keep it).
    pub since_ms: i64,
    pub conns: u32,
    pub heard: Instant,
}

#[derive(Debug, Clone)]
pub(super) struct RemoteVisitor {
    pub info: VisitorInfo,
    pub heard: Instant,
}

/// One other node's entries, keyed by its `node_id` (which must therefore
/// be unique per node; the default, the host name, is).
#[derive(Debug, Default)]
pub(super) struct RemoteNode {
    pub agents: HashMap<AgentId, RemoteAgent>,
    pub visitors: HashMap<String, RemoteVisitor>,
}

#[derive(Debug, Default)]
pub(super) struct RemoteState {
    pub nodes: HashMap<Arc<str>, RemoteNode>,
}

/// Which of two settings of one agent's presence wins: the later one, and
/// on a tie (two nodes in the same millisecond, or settings of unknown
/// time) online over away over offline. Every node orders them the same
/// way, so nodes that hear the same settings agree.
pub(super) fn setting_key(presence: Presence, since_ms: i64) -> (i64, u8) {
    let rank = match presence {
        Presence::Offline => 0,
        Presence::Away => 1,
        Presence::Online => 2,
    };
    (since_ms, rank)
}

impl RemoteState {
    /// Connections of the agent on other nodes, and its presence there
    /// (the latest setting any of them has: see [`setting_key`]).
    pub fn agent(&self, agent: AgentId) -> Option<(SiteId, Presence, usize)> {
        let mut found: Option<(SiteId, Presence, i64, usize)> = None;
        for n in self.nodes.values() {
            if let Some(a) = n.agents.get(&agent).filter(|a| a.conns > 0) {
                let conns = a.conns as usize;
                found = Some(match found {
                    Some((s, p, at, c)) => {
                        if setting_key(a.presence, a.since_ms) > setting_key(p, at) {
                            (s, a.presence, a.since_ms, c + conns)
                        } else {
                            (s, p, at, c + conns)
                        }
                    }
                    None => (a.site, a.presence, a.since_ms, conns),
                });
            }
        }
        found.map(|(s, p, _, c)| (s, p, c))
    }

    /// The agent's latest presence setting on other nodes, and when it
    /// was made.
    pub fn latest(&self, agent: AgentId) -> Option<(Presence, i64)> {
        self.nodes
            .values()
            .filter_map(|n| n.agents.get(&agent).filter(|a| a.conns > 0))
            .map(|a| (a.presence, a.since_ms))
            .max_by_key(|(p, at)| setting_key(*p, *at))
    }

    /// The site's agents connected to other nodes, with their presence.
    pub fn agents_of_site(&self, site: SiteId) -> Vec<(AgentId, Presence)> {
        let mut ids: Vec<AgentId> = self
            .nodes
            .values()
            .flat_map(|n| n.agents.iter())
            .filter(|(_, a)| a.site == site && a.conns > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| self.agent(id).map(|(_, p, _)| (id, p)))
            .collect()
    }

    /// A visitor live on another node, the most recently heard copy.
    pub fn visitor(&self, id: &str) -> Option<&VisitorInfo> {
        self.nodes
            .values()
            .filter_map(|n| n.visitors.get(id))
            .max_by_key(|v| v.heard)
            .map(|v| &v.info)
    }

    pub fn visitors_of_site(&self, site: SiteId) -> Vec<VisitorInfo> {
        let mut out: HashMap<&str, &RemoteVisitor> = HashMap::new();
        for n in self.nodes.values() {
            for (id, v) in n.visitors.iter().filter(|(_, v)| v.info.site == site) {
                let newer = out.get(id.as_str()).is_none_or(|o| o.heard < v.heard);
                if newer {
                    out.insert(id, v);
                }
            }
        }
        out.into_values().map(|v| v.info.clone()).collect()
    }

    /// Forget entries not heard of for `max_age`; what was dropped, for
    /// the caller to tell its agents.
    pub fn expire(&mut self, now: Instant, max_age: Duration) -> Expired {
        let mut gone = Expired::default();
        for n in self.nodes.values_mut() {
            n.agents.retain(|id, a| {
                let keep = now.saturating_duration_since(a.heard) < max_age;
                if !keep {
                    gone.agents.push((*id, a.site, a.presence));
                }
                keep
            });
            n.visitors.retain(|id, v| {
                let keep = now.saturating_duration_since(v.heard) < max_age;
                if !keep {
                    gone.visitors.push((id.clone(), v.info.site));
                }
                keep
            });
        }
        self.nodes
            .retain(|_, n| !n.agents.is_empty() || !n.visitors.is_empty());
        gone
    }

    /// The bus was down: nothing could be heard, so count from now.
    pub fn refresh(&mut self, now: Instant) {
        for n in self.nodes.values_mut() {
            n.agents.values_mut().for_each(|a| a.heard = now);
            n.visitors.values_mut().for_each(|v| v.heard = now);
        }
    }
}

/// What [`RemoteState::expire`] dropped.
#[derive(Debug, Default)]
pub(super) struct Expired {
    pub agents: Vec<(AgentId, SiteId, Presence)>,
    pub visitors: Vec<(String, SiteId)>,
}

/// Follow the bus for this node until shutdown: wakes become catch-up
/// reads of one recipient, gaps and the follower's timer catch-up reads of
/// every local connection, presence deltas the remote entries; and this
/// node's own entries are announced every [`ANNOUNCE_EVERY`].
pub async fn follow(ctx: Arc<Ctx>, bus: Arc<dyn crate::bus::Bus>) {
    let mut follower = Follower::new(&*bus);
    let m = &ctx.metrics.bus;
    m.up.set(i64::from(follower.health() == crate::bus::Health::Up));
    let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expire = tokio::time::interval(Duration::from_secs(1));
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One poll at a time: a slow store makes polls rarer, never pile up.
    let mut polling: Option<tokio::task::JoinHandle<()>> = None;
    // Likewise the reads of presence's PostgreSQL copy while the bus is down.
    let mut copying: Option<tokio::task::JoinHandle<()>> = None;
    let (reread, rereads) = tokio::sync::mpsc::channel(REREAD_QUEUE);
    tokio::spawn(reread_loop(ctx.clone(), rereads));
    // Other nodes' hellos are answered with everything at most once per
    // `HELLO_ANSWER_EVERY` (three nodes starting at once ask three times);
    // one that comes sooner is answered by the expiry tick after that.
    let mut answered: Option<Instant> = None;
    let mut hello_waiting = false;
    let ask = |what: Changed| {
        // Full: the store is slow or gone; the record is read again at
        // its next change or announcement.
        if reread.try_send(what).is_err() {
            tracing::debug!("bus: re-read queue full, dropping a note");
        }
    };
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            next = follower.next() => match next {
                None => return,
                Some(Next::Wake { recipient, seq }) => {
                    m.wakes_received.inc();
                    ctx.hub.wake(&recipient, seq);
                }
                Some(Next::ReadAll(why)) => {
                    m.up.set(i64::from(follower.health() == crate::bus::Health::Up));
                    tracing::trace!(?why, health = ?follower.health(), "bus: reading every local connection");
                    match why {
                        Why::Gap => {
                            m.gaps.inc();
                            // Wakes were lost, for anyone: every connection
                            // reads from its cursor (rare, so the cost of
                            // a read each is fine).
                            ctx.hub.wake_all();
                            // Resubscribed (or went down): whatever was
                            // missed is re-announced by everyone, and
                            // entries get a fresh lease instead of
                            // expiring for our outage.
                            ctx.hub.refresh_remote();
                            ctx.hub.announce_all();
                            // Notes to re-read team rows, visitors'
                            // records and canned replies were lost too.
                            tokio::spawn(reread_teams(ctx.clone()));
                            tokio::spawn(reread_visitors(ctx.clone()));
                            ctx.hub.canned_changed_all();
                            // The others' announcements were missed too:
                            // ask for them now (dropped if the bus is down;
                            // then `Next::Up` asks again).
                            if follower.health() == crate::bus::Health::Up {
                                ctx.hub.hello();
                            }
                        }
                        Why::Poll => {
                            if polling.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                                polling = Some(tokio::spawn(poll_heads(ctx.clone())));
                            }
                        }
                    }
                }
                Some(Next::Presence { node, delta }) => {
                    m.presence_received.inc();
                    if let Some((site, agent)) = ctx.hub.remote_presence(node, delta) {
                        ask(Changed::Member { site, agent });
                    }
                }
                Some(Next::Changed(what)) => {
                    m.changes_received.inc();
                    ask(what);
                }
                Some(Next::Hello) => {
                    m.presence_received.inc();
                    if answered.is_none_or(|t| t.elapsed() >= HELLO_ANSWER_EVERY) {
                        ctx.hub.announce_all();
                        answered = Some(Instant::now());
                    } else {
                        hello_waiting = true;
                    }
                }
                Some(Next::Typing(t)) => ctx.hub.typing_heard(t),
                Some(Next::Up) => {
                    m.up.set(1);
                    // What this node published while the bus was down was
                    // dropped, and it heard nothing: tell and ask.
                    ctx.hub.announce_all();
                    ctx.hub.hello();
                }
            },
            _ = announce.tick() => ctx.hub.announce_all(),
            _ = expire.tick() => {
                if hello_waiting && answered.is_none_or(|t| t.elapsed() >= HELLO_ANSWER_EVERY) {
                    hello_waiting = false;
                    ctx.hub.announce_all();
                    answered = Some(Instant::now());
                }
                // While the bus is down nothing can be re-announced: keep
                // the last known entries rather than call live agents on
                // other nodes offline (which would hand back their chats).
                if follower.health() == crate::bus::Health::Up {
                    for (site, agent) in ctx.hub.expire_remote(EXPIRE_AFTER) {
                        ask(Changed::Member { site, agent });
                    }
                } else if ctx.cfg.database.is_some()
                    && copying.as_ref().is_none_or(tokio::task::JoinHandle::is_finished)
                {
                    copying = Some(tokio::spawn(read_copy(ctx.clone(), reread.clone())));
                }
            }
        }
    }
}

/// Notes waiting to be read again; more are dropped (see `follow`).
const REREAD_QUEUE: usize = 1024;

/// Read again, one at a time and in the order asked, the records other
/// nodes changed (or whose presence moved) and that this node shows live:
/// one at a time so that an older read never lands after a newer one.
async fn reread_loop(ctx: Arc<Ctx>, mut notes: tokio::sync::mpsc::Receiver<Changed>) {
    while let Some(what) = notes.recv().await {
        match what {
            Changed::Member { agent, .. } => {
                let row = ctx
                    .reads
                    .run(move |c| {
                        let Some(row) = reads::agent_by_id(c, agent)? else {
                            return Ok(None);
                        };
                        Ok(Some((row.clone(), reads::agent_load(c, agent)?)))
                    })
                    .await;
                match row {
                    Ok(Some((row, load))) => ctx
                        .hub
                        .update_member(row.site, crate::agent_gw::team_member(&row, load)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(agent, "bus: cannot re-read a team row: {e}"),
                }
            }
            Changed::Visitor { visitor } => {
                // Only the node the visitor is live on shows its record.
                if ctx.hub.visitor_live(&visitor).is_none() {
                    continue;
                }
                match ctx
                    .reads
                    .run(move |c| reads::visitor_info(c, &visitor))
                    .await
                {
                    Ok(Some(stored)) => ctx.hub.visitor_reread(stored),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("bus: cannot re-read a visitor: {e}"),
                }
            }
            // Each connection reads its own list: nothing to read here.
            Changed::Canned { site, owner } => ctx.hub.canned_changed(site, owner),
            Changed::InviteRules { site } => ctx.hub.invite_rules_changed(site),
        }
    }
}

/// After a gap: the teams of the sites with agents here, read again, since
/// notes of team rows changed elsewhere may have been lost; only the rows
/// that differ from what this node knows are sent to its agents.
async fn reread_teams(ctx: Arc<Ctx>) {
    for site in ctx.hub.agent_sites() {
        match ctx.reads.run(move |c| reads::team(c, site)).await {
            Ok(rows) => ctx.hub.team_reread(
                site,
                rows.iter()
                    .map(|(r, n)| crate::agent_gw::team_member(r, *n))
                    .collect(),
            ),
            Err(e) => tracing::warn!(site, "bus: cannot re-read a team after a gap: {e}"),
        }
    }
}

/// After a gap: the stored record (identity, open conversation) of every
/// visitor live here, read again in two queries per
/// [`reads::LOG_HEADS_BATCH`] visitors, since a note that one changed on
/// another node (an identify or a close made through it) may have been
/// lost.
async fn reread_visitors(ctx: Arc<Ctx>) {
    let (ids, epoch) = ctx.hub.live_visitors();
    for chunk in ids.chunks(reads::LOG_HEADS_BATCH) {
        let chunk = chunk.to_vec();
        let asked = chunk.clone();
        match ctx
            .reads
            .run(move |c| {
                Ok((
                    reads::open_conversations(c, &chunk)?,
                    reads::identities(c, &chunk)?,
                ))
            })
            .await
        {
            Ok((open, identities)) => ctx.hub.records_reread(&asked, &open, identities, epoch),
            Err(e) => {
                tracing::warn!("bus: cannot re-read visitors' records after a gap: {e}");
                return;
            }
        }
    }
}

/// At start, before serving: the other nodes' entries as presence's
/// PostgreSQL copy has them, so that the first agent to log in here is
/// shown the visitors and teammates already on other nodes, and not only
/// those re-announced once this node's bus is up. Bounded: a database too
/// slow to answer delays the start by at most `within`, and the entries
/// then come with the bus.
pub async fn seed_from_copy(ctx: &Ctx, within: Duration) {
    let node = ctx.cfg.node_id.clone();
    let read = ctx
        .reads
        .run(move |c| crate::store::presence_pg::others(c, &node));
    match tokio::time::timeout(within, read).await {
        Ok(Ok(others)) => {
            // No agent is connected here yet: no team row to re-read.
            let _rows = ctx.hub.remote_replace(&others);
        }
        Ok(Err(e)) => tracing::warn!("cannot read presence's copy at start: {e}"),
        Err(_) => tracing::warn!("presence's copy not read within {within:?} at start"),
    }
}

/// While the bus is down: the other nodes' entries as presence's
/// PostgreSQL copy has them (see `super::fallback`).
async fn read_copy(ctx: Arc<Ctx>, reread: tokio::sync::mpsc::Sender<Changed>) {
    let node = ctx.cfg.node_id.clone();
    match ctx
        .reads
        .run(move |c| crate::store::presence_pg::others(c, &node))
        .await
    {
        Ok(others) => {
            for (site, agent) in ctx.hub.remote_replace(&others) {
                let _full = reread.try_send(Changed::Member { site, agent });
            }
        }
        Err(e) => {
            if let Some(skipped) = POLL_FAILED.due() {
                tracing::warn!(skipped, "bus down: cannot read presence's copy: {e}");
            }
        }
    }
}

static POLL_FAILED: crate::metrics::WarnEvery =
    crate::metrics::WarnEvery::new(Duration::from_secs(30));

/// The safety-net poll: one query of the log heads of every recipient live
/// here (per [`reads::LOG_HEADS_BATCH`]), and a wake for each one whose
/// head moved past what its connections were handed. It replaces a read
/// of the log per connection per poll: at 5,000 idle visitors that was
/// 5,000 reads a second.
async fn poll_heads(ctx: Arc<Ctx>) {
    let m = &ctx.metrics.bus;
    m.polls.inc();
    let keys = ctx.hub.live_keys();
    let mut heads = Vec::new();
    for chunk in keys.chunks(reads::LOG_HEADS_BATCH) {
        let chunk = chunk.to_vec();
        m.poll_queries.inc();
        match ctx.reads.run(move |c| reads::log_heads(c, &chunk)).await {
            Ok(h) => heads.extend(h),
            Err(e) => {
                // The next poll tries again; connections keep their cursors.
                if let Some(skipped) = POLL_FAILED.due() {
                    tracing::warn!(skipped, "bus: cannot read the log heads: {e}");
                }
                return;
            }
        }
    }
    let woken = ctx.hub.poll_heads(&heads);
    m.poll_woken
        .inc_by(u64::try_from(woken).unwrap_or(u64::MAX));
}

/// What the bus brings in.
impl super::Hub {
    /// Another node committed `recipient`'s events up to `seq`: its
    /// connections here read them from the log (unless they were already
    /// handed that much).
    pub fn wake(&self, recipient: &Recipient, seq: Seq) {
        let mut st = self.lock();
        match recipient {
            Recipient::Agent(agent) => {
                if let Some(a) = st.agents.get_mut(agent).filter(|a| seq > a.head) {
                    a.head = Self::wake_agent(a, seq);
                }
            }
            Recipient::Visitor(visitor) => {
                if let Some(v) = st.visitors.get_mut(visitor).filter(|v| seq > v.head) {
                    v.head = Self::wake_visitor(v, seq);
                }
            }
        }
    }

    /// Tell the agent's connections to catch up to `seq`; the head to keep:
    /// `seq`, or 0 if a queue was full, so that the next poll repeats it
    /// (a full queue is being drained: never cut for a wake).
    fn wake_agent(a: &AgentLive, seq: Seq) -> Seq {
        let mut head = seq;
        for c in &a.conns {
            if let Err(crate::pushq::TrySendError::Full(_)) = c.tx.try_send(AgentPush::CatchUp(seq))
            {
                head = 0;
            }
        }
        head
    }

    /// As [`Self::wake_agent`], and the visitor's long-polls.
    fn wake_visitor(v: &VisitorLive, seq: Seq) -> Seq {
        let mut head = seq;
        for c in &v.conns {
            if let Err(crate::pushq::TrySendError::Full(_)) =
                c.tx.try_send(VisitorPush::CatchUp(seq))
            {
                head = 0;
            }
        }
        v.wake_polls();
        head
    }

    /// Every local connection reads the log from its cursor: wakes may
    /// have been lost (a gap on the bus).
    pub fn wake_all(&self) {
        let mut st = self.lock();
        for a in st.agents.values_mut() {
            Self::wake_agent(a, Seq::MAX);
            a.head = 0;
        }
        for v in st.visitors.values_mut() {
            Self::wake_visitor(v, Seq::MAX);
            v.head = 0;
        }
    }

    /// The log-head keys of every recipient with a live connection here,
    /// for the safety-net poll.
    pub fn live_keys(&self) -> Vec<String> {
        let st = self.lock();
        let agents = st
            .agents
            .iter()
            .filter(|(_, a)| !a.conns.is_empty())
            .map(|(id, _)| reads::agent_key(*id));
        let visitors = st
            .visitors
            .iter()
            .filter(|(_, v)| !v.conns.is_empty() || v.polls_open() > 0)
            .map(|(id, _)| reads::visitor_key(id));
        agents.chain(visitors).collect()
    }

    /// The log heads a poll read (as [`Self::live_keys`] named them):
    /// wake the recipients whose head moved past what their connections
    /// here were handed. How many were woken.
    pub fn poll_heads(&self, heads: &[(String, Seq)]) -> usize {
        let heads: HashMap<&str, Seq> = heads.iter().map(|(k, s)| (k.as_str(), *s)).collect();
        let mut st = self.lock();
        let mut woken = 0;
        for (id, a) in st.agents.iter_mut().filter(|(_, a)| !a.conns.is_empty()) {
            if let Some(&seq) = heads.get(reads::agent_key(*id).as_str())
                && seq > a.head
            {
                a.head = Self::wake_agent(a, seq);
                woken += 1;
            }
        }
        for (id, v) in st.visitors.iter_mut() {
            if let Some(&seq) = heads.get(reads::visitor_key(id).as_str())
                && seq > v.head
            {
                v.head = Self::wake_visitor(v, seq);
                woken += 1;
            }
        }
        woken
    }

    /// Tell the other nodes every live entry here (periodically, so that
    /// they can expire a dead node's; and after a gap).
    pub fn announce_all(&self) {
        if self.bus.get().is_none() {
            return;
        }
        let st = self.lock();
        for (id, a) in &st.agents {
            if !a.conns.is_empty() {
                self.tell_agent(&st, *id);
            }
        }
        for v in st.visitors.values().filter(|v| v.info.online) {
            self.tell(|| BusMsg::Presence(PresenceDelta::Visitor(Box::new(v.info.clone()))));
        }
    }

    /// Ask every other node to announce its entries now (this node just
    /// joined the bus, or missed what was said on it).
    pub fn hello(&self) {
        self.tell(|| BusMsg::Hello);
    }

    /// Another node's live state changed (or was re-announced). An agent
    /// whose presence moved but who has no team row here yet: the caller
    /// reads its row and passes it to [`Self::update_member`].
    pub fn remote_presence(
        &self,
        node: Arc<str>,
        delta: PresenceDelta,
    ) -> Option<(SiteId, AgentId)> {
        let now = Instant::now();
        let mut st = self.lock();
        match delta {
            PresenceDelta::Agent {
                site,
                agent,
                presence,
                connections,
            } => {
                // From an old node or presence's PostgreSQL copy: no time.
                // An unchanged presence keeps the time heard with it.
                let since_ms = st
                    .remote
                    .nodes
                    .get(&node)
                    .and_then(|n| n.agents.get(&agent))
                    .filter(|a| a.presence == presence)
                    .map_or(0, |a| a.since_ms);
                let entry = RemoteAgent {
                    site,
                    presence,
                    since_ms,
                    conns: connections,
                    heard: now,
                };
                return self.remote_agent(&mut st, node, agent, entry);
            }
            PresenceDelta::AgentAt {
                site,
                agent,
                presence,
                since_ms,
                connections,
            } => {
                let entry = RemoteAgent {
                    site,
                    presence,
                    since_ms,
                    conns: connections,
                    heard: now,
                };
                return self.remote_agent(&mut st, node, agent, entry);
            }
            PresenceDelta::Visitor(info) => {
                let (id, site) = (info.id.clone(), info.site);
                let changed = st.remote.visitor(&id) != Some(&*info);
                st.remote.nodes.entry(node).or_default().visitors.insert(
                    id.clone(),
                    RemoteVisitor {
                        info: (*info).clone(),
                        heard: now,
                    },
                );
                // This node's own copy is what its agents see while the
                // visitor is (also) here. A page recorded through the other
                // node (long-poll requests land on any node) reaches that
                // copy from here; an announcement older than the copy's
                // newest page never takes it back.
                let last_page = |i: &VisitorInfo| i.trail.last().map(|p| p.at_ms);
                if let Some(v) = st.visitors.get_mut(&id) {
                    if last_page(&info) > last_page(&v.info) {
                        v.info.trail = info.trail.clone();
                        st.dirty.insert(id);
                    }
                } else if changed {
                    self.broadcast_live(&mut st, site, LiveEvent::Visitor(*info));
                }
            }
            PresenceDelta::VisitorHere { .. } => {
                // Superseded by `Visitor`, which carries what agents see;
                // no node sends it.
            }
            PresenceDelta::VisitorGone { site, visitor } => {
                if let Some(n) = st.remote.nodes.get_mut(&node) {
                    n.visitors.remove(&visitor);
                }
                self.remote_visitor_gone(&mut st, visitor, site);
            }
        }
        None
    }

    /// Another node's entry for an agent (`conns` 0: none there any more).
    fn remote_agent(
        &self,
        st: &mut State,
        node: Arc<str>,
        agent: AgentId,
        entry: RemoteAgent,
    ) -> Option<(SiteId, AgentId)> {
        let site = entry.site;
        let before = (
            Self::presence_in(st, agent),
            Self::site_has_online(st, site),
        );
        let (presence, since_ms, there) = (entry.presence, entry.since_ms, entry.conns > 0);
        let n = st.remote.nodes.entry(node).or_default();
        if there {
            n.agents.insert(agent, entry);
        } else {
            n.agents.remove(&agent);
        }
        // One presence per agent whichever device set it, as on one node:
        // the devices here take a later setting made through another node
        // ("away" on the desktop is away on the phone too). Never
        // "offline": that is said by leaving, per node.
        if there
            && presence != Presence::Offline
            && let Some(a) = st.agents.get_mut(&agent).filter(|a| !a.conns.is_empty())
            && setting_key(presence, since_ms) > setting_key(a.presence, a.presence_ms)
        {
            a.presence = presence;
            a.presence_ms = since_ms;
            // Told on, so that presence's PostgreSQL copy has it too.
            self.tell_agent(st, agent);
        }
        self.remote_agent_changed(st, agent, site, before)
    }

    fn remote_visitor_gone(&self, st: &mut State, visitor: String, site: SiteId) {
        if !st.visitors.contains_key(&visitor) && st.remote.visitor(&visitor).is_none() {
            self.broadcast_live(st, site, LiveEvent::VisitorGone { visitor });
        }
    }

    /// An agent's connections elsewhere changed: tell this node's agents
    /// (team panel) and visitors ("agents online") if what they see moved.
    /// An agent never seen here has no team row in the hub: returned, for
    /// the caller to read it from the store.
    fn remote_agent_changed(
        &self,
        st: &mut State,
        agent: AgentId,
        site: SiteId,
        (presence_before, online_before): (Presence, bool),
    ) -> Option<(SiteId, AgentId)> {
        let mut unknown = None;
        if Self::presence_in(st, agent) != presence_before {
            match st.agents.get(&agent) {
                Some(a) => {
                    let member = TeamMember {
                        presence: Self::presence_in(st, agent),
                        ..a.member.clone()
                    };
                    self.broadcast_live(st, site, LiveEvent::TeamMember(member));
                }
                None => unknown = Some((site, agent)),
            }
        }
        if Self::site_has_online(st, site) != online_before {
            self.broadcast_agents_online(st, site);
        }
        unknown
    }

    /// The visitors live here, and the count of committed changes applied
    /// so far (for [`Self::conversations_reread`]).
    pub fn live_visitors(&self) -> (Vec<String>, u64) {
        let st = self.lock();
        let ids = st
            .visitors
            .iter()
            .filter(|(_, v)| v.info.online)
            .map(|(id, _)| id.clone())
            .collect();
        (ids, st.visitor_changes)
    }

    /// The stored records (identity, open conversation) of the visitors
    /// `asked` about, as read after `epoch`: a live record that says
    /// otherwise, and has no committed change newer than the read, is
    /// corrected, and reaches agents with the next flush.
    pub fn records_reread(
        &self,
        asked: &[String],
        open: &[(String, holdfast_protocol::agent::ConversationId)],
        identities: Vec<reads::Identity>,
        epoch: u64,
    ) {
        let open: HashMap<&str, u64> = open.iter().map(|(v, c)| (v.as_str(), *c)).collect();
        let mut st = self.lock();
        for id in asked {
            let stored = open.get(id.as_str()).copied();
            let stale = st
                .visitors
                .get(id)
                .is_some_and(|v| v.changed <= epoch && v.info.conversation != stored);
            if stale {
                Self::apply_visitor_change(
                    &mut st,
                    id.clone(),
                    super::VisitorChange::Conversation(stored),
                );
            }
        }
        for i in identities {
            let stale = st.visitors.get(&i.visitor).is_some_and(|v| {
                let l = &v.info;
                v.changed <= epoch
                    && (&l.name, &l.email, &l.attrs, &l.external_id, l.verified)
                        != (&i.name, &i.email, &i.attrs, &i.external_id, i.verified)
            });
            if stale {
                Self::apply_visitor_change(
                    &mut st,
                    i.visitor,
                    super::VisitorChange::Identity {
                        name: i.name,
                        email: i.email,
                        attrs: i.attrs,
                        external_id: i.external_id,
                        verified: i.verified,
                    },
                );
            }
        }
    }

    /// Sites with an agent connected here.
    pub fn agent_sites(&self) -> Vec<SiteId> {
        let st = self.lock();
        let mut sites: Vec<SiteId> = st
            .agents
            .values()
            .filter(|a| !a.conns.is_empty())
            .map(|a| a.site)
            .collect();
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// A site's team rows as stored, read again after a gap: the ones
    /// that differ from the row this node holds (or that it holds none of)
    /// go to the site's agents.
    pub fn team_reread(&self, site: SiteId, rows: Vec<TeamMember>) {
        let mut st = self.lock();
        for row in rows {
            let same = st.agents.get(&row.agent).is_some_and(|a| {
                TeamMember {
                    presence: a.member.presence,
                    ..row.clone()
                } == a.member
            });
            if !same {
                self.set_member(&mut st, site, row);
            }
        }
    }

    /// Drop other nodes' entries not re-announced within `max_age`; the
    /// agents among them to read from the store (see
    /// [`Self::remote_presence`]).
    pub fn expire_remote(&self, max_age: Duration) -> Vec<(SiteId, AgentId)> {
        let mut st = self.lock();
        let now = Instant::now();
        let gone = st.remote.expire(now, max_age);
        let mut reread = Vec::new();
        for (visitor, site) in gone.visitors {
            self.remote_visitor_gone(&mut st, visitor, site);
        }
        for (agent, site, presence) in gone.agents {
            // The entry is already gone: compare with what it said (a
            // redundant "agents online: no" at worst).
            let before = (presence, true);
            reread.extend(self.remote_agent_changed(&mut st, agent, site, before));
        }
        reread
    }

    /// The bus was down: give every remote entry a fresh lease.
    pub fn refresh_remote(&self) {
        self.lock().remote.refresh(Instant::now());
    }
}
