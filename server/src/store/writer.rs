//! The single writer thread and its group commit.
//!
//! Every mutation is an [`Op`] sent over a bounded channel. The thread takes
//! whatever is queued (up to `max_batch`), applies each op inside its own
//! savepoint of one transaction, commits once, and only after the commit
//! replies to each op and hands the events to the hub. With fsync costing
//! ~0.2 ms, one commit per batch instead of per message is what makes full
//! durability fast. If the commit fails (a full disk), every op in the batch
//! is answered with an error, no event is published, and nothing is acked.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    Action, AgentId, Author, ChatMessage, Command, CommandResult, ConversationId, ConversationInfo,
    ConversationState, Event, MessageId, Outcome, PageView, Presence, Seq, SiteId, TeamMember,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::{LeaveReason, Notice};
use holdfast_protocol::visitor::VisitorEvent;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::reads::{
    self, AUTHOR_AGENT, AUTHOR_VISITOR, agent_key, state_to_int, to_i64, visitor_key,
};
use super::{StoreError, now_ms};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// The longest chat message body, in bytes.
pub const MAX_BODY: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most ops in one transaction.
    pub max_batch: usize,
    /// When false, every op gets its own transaction and fsync. Only for
    /// measuring what batching buys.
    pub group_commit: bool,
    /// Events older than this are pruned; a cursor older than the oldest kept
    /// event gets a snapshot.
    pub retention: Duration,
    /// Capacity of the op queue; senders wait when it is full.
    pub queue: usize,
    /// How often expired events are pruned.
    pub prune_every: Duration,
    /// Page views kept per visitor (the newest); older ones are deleted as
    /// new ones arrive.
    pub trail_keep: u32,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            group_commit: true,
            retention: Duration::from_secs(7 * 24 * 3600),
            queue: 8192,
            prune_every: Duration::from_secs(60),
            trail_keep: 100,
        }
    }
}

/// Who is acting, for an agent command.
#[derive(Debug, Clone)]
pub struct AgentActor {
    pub id: AgentId,
    pub site: SiteId,
    pub name: String,
    /// The account's auth epoch when this session logged in: a password
    /// change or a disable bumps it, and the session may then act no more.
    pub epoch: i64,
}

/// What a visitor's send resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitorSendOutcome {
    Done {
        conversation: ConversationId,
        message: MessageId,
        at_ms: i64,
    },
    Rejected {
        code: ErrorCode,
        message: String,
    },
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A mutation for the writer.
#[derive(Debug)]
pub enum Op {
    /// Register a device and learn how far its commands are acked.
    AgentLogin {
        agent: AgentId,
        device: MsgId,
        reply: Reply<Seq>,
    },
    AgentCommand {
        actor: AgentActor,
        device: MsgId,
        cmd: Command,
        reply: Reply<CommandResult>,
    },
    /// Create or refresh a visitor; returns the visitor id.
    VisitorHello {
        site: SiteId,
        visitor: Option<String>,
        user_agent: Option<String>,
        /// The page the hello came from, committed with it so the visitor's
        /// first listing already shows it.
        page: Option<PageView>,
        reply: Reply<String>,
    },
    VisitorSend {
        visitor: String,
        site: SiteId,
        id: MsgId,
        body: String,
        /// `Some(email)` for a left message.
        leave: Option<Option<String>>,
        /// The page the visitor is on (shown to agents with a left message).
        page: Option<PageView>,
        reply: Reply<VisitorSendOutcome>,
    },
    /// The visitor ends the open chat; idempotent by `id`.
    VisitorEndChat {
        visitor: String,
        id: MsgId,
        reply: Reply<VisitorSendOutcome>,
    },
    /// Hand an agent's open chats back to the queue (or to another agent by
    /// the normal rules). For `Offline` and `SignedOut` nothing happens if
    /// the agent still has a connected device by the time this runs.
    ReleaseChats {
        agent: AgentId,
        reason: LeaveReason,
        reply: Option<Reply<()>>,
    },
    PageView {
        visitor: String,
        page: PageView,
    },
    Identify {
        visitor: String,
        external_id: String,
        name: Option<String>,
        email: Option<String>,
        attrs: Vec<(String, String)>,
        verified: bool,
        /// False when the visitor is bound to another verified identity;
        /// nothing is changed then.
        reply: Reply<bool>,
    },
    /// The visitor acked events up to `up_to`.
    Delivered {
        visitor: String,
        up_to: Seq,
    },
    /// Agents became available: hand out queued conversations.
    AssignQueued {
        site: SiteId,
    },
    /// Replies once everything queued before it is committed.
    Barrier {
        reply: Reply<()>,
    },
}

/// What the hub must do once a batch is durable.
#[derive(Debug, Clone)]
pub enum Effect {
    AgentEvent {
        agent: AgentId,
        seq: Seq,
        event: Arc<Event>,
    },
    VisitorEvent {
        visitor: String,
        seq: Seq,
        event: Arc<VisitorEvent>,
    },
    /// The stored part of a visitor's record changed (identify, conversation).
    VisitorChanged {
        visitor: String,
    },
    Presence {
        agent: AgentId,
        presence: Presence,
    },
    /// An agent's stored team data (role, capacity, load) as committed; the
    /// hub adds presence and tells the site's agents.
    Team {
        site: SiteId,
        member: TeamMember,
    },
}

/// Cheap handle for submitting ops.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::Sender<Op>,
}

impl WriterHandle {
    /// Submit an op, waiting for queue space.
    pub async fn submit(&self, op: Op) -> Result<(), StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)
    }

    /// Submit an op without waiting; for fire-and-forget ops like page views,
    /// dropped (with a metric) when the queue is full rather than stalling a
    /// connection.
    pub fn try_submit(&self, op: Op) -> bool {
        self.tx.try_send(op).is_ok()
    }

    /// Submit an op and await its reply.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.submit(make(tx)).await?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Wait until everything submitted so far is committed.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        self.call(|reply| Op::Barrier { reply }).await
    }
}

/// Start the writer thread on an open, migrated connection.
pub fn spawn(
    conn: Connection,
    cfg: WriterConfig,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(cfg.queue.max(1));
    let checkpointer = spawn_checkpointer(&conn);
    // The writer touches index pages all over the database (message ids are
    // random); SQLite's default 2 MB cache made it re-read pages through
    // pread on most commits. 8 MB is allocated only as pages are used, and
    // is 8 MB of the 100 MB budget for 15k visitors (BENCHMARKS.md).
    if let Err(e) = conn.pragma_update(None, "cache_size", -8_192) {
        tracing::warn!("cannot set the writer's cache size: {e}");
    }
    let handle = std::thread::Builder::new()
        .name("holdfast-writer".into())
        .spawn(move || {
            Writer::new(conn, cfg, hub, metrics).run(rx);
            // Dropping the sender stops the checkpointer.
            drop(checkpointer);
        });
    match handle {
        Ok(join) => (WriterHandle { tx }, join),
        // Without a writer thread the server cannot do anything useful; the
        // caller sees every op fail with WriterGone.
        Err(e) => {
            tracing::error!("cannot start writer thread: {e}");
            let (tx2, _) = mpsc::channel(1);
            (WriterHandle { tx: tx2 }, std::thread::spawn(|| {}))
        }
    }
}

/// Move WAL checkpoints off the writer thread. SQLite's automatic
/// checkpoint runs inside the commit that crosses 1,000 WAL pages, so the
/// writer (and every op queued behind it) waited for the copy into the main
/// file and its fsync. A second connection checkpoints PASSIVE (never blocking
/// the writer or readers) every 250 ms instead. Returns a guard whose drop
/// stops the thread; if the thread cannot start, the writer keeps SQLite's
/// automatic checkpoints.
fn spawn_checkpointer(conn: &Connection) -> Option<std::sync::mpsc::Sender<()>> {
    let path = conn.path().filter(|p| !p.is_empty())?.to_string();
    let ck = Connection::open(&path)
        .and_then(|c| super::schema::configure(&c).map(|()| c))
        .map_err(|e| tracing::warn!("no checkpoint thread, keeping auto-checkpoint: {e}"))
        .ok()?;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let started = std::thread::Builder::new()
        .name("holdfast-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(Duration::from_millis(250))
            {
                if let Err(e) =
                    ck.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
                {
                    tracing::warn!("WAL checkpoint failed: {e}");
                }
            }
        });
    match started {
        Ok(_) => match conn.pragma_update(None, "wal_autocheckpoint", 0) {
            Ok(()) => Some(stop_tx),
            Err(e) => {
                tracing::warn!("cannot switch off auto-checkpoint: {e}");
                Some(stop_tx)
            }
        },
        Err(e) => {
            tracing::warn!("no checkpoint thread, keeping auto-checkpoint: {e}");
            None
        }
    }
}

enum Pending {
    Login(Reply<Seq>, Seq),
    Command(Reply<CommandResult>, CommandResult),
    Hello(Reply<String>, String),
    Send(Reply<VisitorSendOutcome>, VisitorSendOutcome),
    Unit(Reply<()>),
    Flag(Reply<bool>, bool),
}

impl Pending {
    fn fail(self, err: impl Fn() -> StoreError) {
        // A dropped receiver means the connection already went away; there
        // is nobody left to tell.
        let _ignored = match self {
            Pending::Login(r, _) => r.send(Err(err())).is_ok(),
            Pending::Command(r, _) => r.send(Err(err())).is_ok(),
            Pending::Hello(r, _) => r.send(Err(err())).is_ok(),
            Pending::Send(r, _) => r.send(Err(err())).is_ok(),
            Pending::Unit(r) => r.send(Err(err())).is_ok(),
            Pending::Flag(r, _) => r.send(Err(err())).is_ok(),
        };
    }

    fn succeed(self) {
        let _ignored = match self {
            Pending::Login(r, v) => r.send(Ok(v)).is_ok(),
            Pending::Command(r, v) => r.send(Ok(v)).is_ok(),
            Pending::Hello(r, v) => r.send(Ok(v)).is_ok(),
            Pending::Send(r, v) => r.send(Ok(v)).is_ok(),
            Pending::Unit(r) => r.send(Ok(())).is_ok(),
            Pending::Flag(r, v) => r.send(Ok(v)).is_ok(),
        };
    }
}

/// Per-op scratch: heads and effects only become real if the op's savepoint
/// and then the batch commit succeed.
#[derive(Default)]
struct OpCtx {
    heads: HashMap<String, Seq>,
    effects: Vec<Effect>,
    /// [`WriterConfig::trail_keep`].
    trail_keep: u32,
}

struct Writer {
    conn: Connection,
    cfg: WriterConfig,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    /// Committed log heads.
    heads: HashMap<String, Seq>,
    last_prune: Instant,
}

impl Writer {
    fn new(conn: Connection, cfg: WriterConfig, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Self {
        Self {
            conn,
            cfg,
            hub,
            metrics,
            heads: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.cfg.max_batch.max(1) {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            if self.cfg.group_commit {
                self.process(batch);
            } else {
                for op in batch {
                    self.process(vec![op]);
                }
            }
            if self.last_prune.elapsed() >= self.cfg.prune_every {
                self.prune();
            }
        }
        tracing::info!("writer stopped: all senders gone");
    }

    fn process(&mut self, batch: Vec<Op>) {
        let started = Instant::now();
        let n = batch.len();
        let mut pending = Vec::with_capacity(n);
        let mut batch_heads: HashMap<String, Seq> = HashMap::new();
        let mut effects = Vec::new();
        let mut barriers = Vec::new();

        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!("cannot begin transaction: {msg}");
                for op in batch {
                    fail_op(op, &msg);
                }
                return;
            }
        };
        let mut fatal: Option<String> = None;
        for op in batch {
            if let Op::Barrier { reply } = op {
                barriers.push(Pending::Unit(reply));
                continue;
            }
            if let Some(msg) = &fatal {
                fail_op(op, msg);
                continue;
            }
            let mut ctx = OpCtx {
                trail_keep: self.cfg.trail_keep,
                ..OpCtx::default()
            };
            // Each op runs in its own savepoint, so a failing op is undone
            // without losing the rest of the batch.
            // Cached statements: execute_batch would parse the SQL on every op.
            if let Err(e) = exec_cached(&tx, "SAVEPOINT op") {
                let msg = e.to_string();
                fail_op(op, &msg);
                fatal = Some(msg);
                continue;
            }
            let lookup = |key: &str| {
                batch_heads
                    .get(key)
                    .copied()
                    .or_else(|| self.heads.get(key).copied())
            };
            match apply(&tx, &self.hub, op, &mut ctx, &lookup) {
                Ok(p) => match exec_cached(&tx, "RELEASE op") {
                    Ok(()) => {
                        batch_heads.extend(ctx.heads);
                        effects.extend(ctx.effects);
                        pending.extend(p);
                    }
                    Err(e) => {
                        let e = StoreError::from_sqlite(e);
                        let msg = e.to_string();
                        if let Some(p) = p {
                            p.fail(|| clone_err(&e));
                        }
                        fatal = Some(msg);
                    }
                },
                Err((e, p)) => {
                    if let Err(rb) = tx.execute_batch("ROLLBACK TO op; RELEASE op") {
                        fatal = Some(rb.to_string());
                    }
                    let full = matches!(e, StoreError::Full(_));
                    let msg = e.to_string();
                    if let Some(p) = p {
                        p.fail(|| clone_err(&e));
                    }
                    if full {
                        fatal = Some(msg);
                    }
                }
            }
        }
        let heads_ok = persist_heads(&tx, &batch_heads);
        let result = heads_ok.and_then(|()| tx.commit().map_err(StoreError::from_sqlite));
        let latency = started.elapsed();
        match result {
            Ok(()) => {
                self.heads.extend(batch_heads);
                self.metrics.record_commit(n, latency);
                for p in pending {
                    p.succeed();
                }
                self.hub.publish(effects);
                for b in barriers {
                    b.succeed();
                }
            }
            Err(e) => {
                tracing::error!("commit of {n} ops failed: {e}");
                self.metrics.commit_failures.inc();
                for p in pending.into_iter().chain(barriers) {
                    p.fail(|| clone_err(&e));
                }
            }
        }
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        let cutoff = now_ms() - i64::try_from(self.cfg.retention.as_millis()).unwrap_or(i64::MAX);
        let r = self
            .conn
            .execute("DELETE FROM agent_events WHERE at_ms < ?1", [cutoff])
            .and_then(|a| {
                self.conn
                    .execute("DELETE FROM visitor_events WHERE at_ms < ?1", [cutoff])
                    .map(|b| a + b)
            })
            .and_then(|n| {
                self.conn
                    .execute("DELETE FROM page_views WHERE at_ms < ?1", [cutoff])
                    .map(|p| n + p)
            });
        match r {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} events older than retention"),
            Err(e) => tracing::warn!("pruning failed: {e}"),
        }
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::Revoked { code, message } => StoreError::Revoked {
            code: *code,
            message: message.clone(),
        },
        other => StoreError::Corrupt(other.to_string()),
    }
}

fn fail_op(op: Op, msg: &str) {
    let err = || {
        if msg.contains("full") {
            StoreError::Full(msg.to_string())
        } else {
            StoreError::Corrupt(msg.to_string())
        }
    };
    match op {
        Op::AgentLogin { reply, .. } => Pending::Login(reply, 0).fail(err),
        Op::AgentCommand { reply, .. } => {
            let _ignored = reply.send(Err(err()));
        }
        Op::VisitorHello { reply, .. } => Pending::Hello(reply, String::new()).fail(err),
        Op::VisitorSend { reply, .. } | Op::VisitorEndChat { reply, .. } => {
            let _ignored = reply.send(Err(err()));
        }
        Op::Identify { reply, .. } => Pending::Flag(reply, false).fail(err),
        Op::Barrier { reply } => Pending::Unit(reply).fail(err),
        Op::ReleaseChats { reply, .. } => {
            if let Some(r) = reply {
                Pending::Unit(r).fail(err);
            }
        }
        Op::PageView { .. } | Op::Delivered { .. } | Op::AssignQueued { .. } => {}
    }
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn persist_heads(conn: &Connection, heads: &HashMap<String, Seq>) -> Result<(), StoreError> {
    let mut st = conn
        .prepare_cached(
            "INSERT INTO log_heads (recipient, head) VALUES (?1, ?2) \
             ON CONFLICT(recipient) DO UPDATE SET head = excluded.head",
        )
        .map_err(StoreError::from_sqlite)?;
    for (k, v) in heads {
        st.execute(params![k, to_i64(*v)])
            .map_err(StoreError::from_sqlite)?;
    }
    Ok(())
}

type ApplyResult = Result<Option<Pending>, (StoreError, Option<Pending>)>;

/// Apply one op. The error variant is large, but this runs once per op on
/// one thread; boxing would only add an allocation.
#[allow(clippy::result_large_err)]
/// On error the caller rolls back the op's savepoint and the
/// reply (if any) gets the error.
fn apply(
    conn: &Connection,
    hub: &Hub,
    op: Op,
    ctx: &mut OpCtx,
    heads: &dyn Fn(&str) -> Option<Seq>,
) -> ApplyResult {
    let mut w = Tx {
        conn,
        hub,
        ctx,
        heads,
    };
    match op {
        Op::AgentLogin {
            agent,
            device,
            reply,
        } => match w.agent_login(agent, &device) {
            Ok(v) => Ok(Some(Pending::Login(reply, v))),
            Err(e) => Err((e, Some(Pending::Login(reply, 0)))),
        },
        Op::AgentCommand {
            actor,
            device,
            cmd,
            reply,
        } => match w.agent_command(&actor, &device, &cmd) {
            Ok(v) => Ok(Some(Pending::Command(reply, v))),
            Err(e) => {
                let placeholder = CommandResult {
                    seq: cmd.seq,
                    id: cmd.id,
                    outcome: Outcome::Rejected {
                        code: ErrorCode::Unavailable,
                        message: String::new(),
                    },
                };
                Err((e, Some(Pending::Command(reply, placeholder))))
            }
        },
        Op::VisitorHello {
            site,
            visitor,
            user_agent,
            page,
            reply,
        } => match w.visitor_hello(site, visitor, user_agent, page) {
            Ok(v) => Ok(Some(Pending::Hello(reply, v))),
            Err(e) => Err((e, Some(Pending::Hello(reply, String::new())))),
        },
        Op::VisitorSend {
            visitor,
            site,
            id,
            body,
            leave,
            page,
            reply,
        } => {
            let r = w.visitor_action(&visitor, id, |w| {
                w.visitor_post(&visitor, site, id, &body, leave, page)
            });
            send_result(r, reply)
        }
        Op::VisitorEndChat { visitor, id, reply } => {
            let r = w.visitor_action(&visitor, id, |w| w.visitor_end_chat(&visitor, id));
            send_result(r, reply)
        }
        Op::ReleaseChats {
            agent,
            reason,
            reply,
        } => match w.release_chats(agent, reason) {
            Ok(()) => Ok(reply.map(Pending::Unit)),
            Err(e) => Err((e, reply.map(Pending::Unit))),
        },
        Op::PageView { visitor, page } => w
            .page_view(&visitor, &page)
            .map(|()| None)
            .map_err(|e| (e, None)),
        Op::Identify {
            visitor,
            external_id,
            name,
            email,
            attrs,
            verified,
            reply,
        } => match w.identify(&visitor, &external_id, name, email, &attrs, verified) {
            Ok(ok) => Ok(Some(Pending::Flag(reply, ok))),
            Err(e) => Err((e, Some(Pending::Flag(reply, false)))),
        },
        Op::Delivered { visitor, up_to } => w
            .delivered(&visitor, up_to)
            .map(|()| None)
            .map_err(|e| (e, None)),
        Op::AssignQueued { site } => w
            .assign_queued(site, None)
            .map(|()| None)
            .map_err(|e| (e, None)),
        Op::Barrier { reply } => Ok(Some(Pending::Unit(reply))),
    }
}

#[allow(clippy::result_large_err)]
fn send_result(
    r: Result<VisitorSendOutcome, StoreError>,
    reply: Reply<VisitorSendOutcome>,
) -> ApplyResult {
    match r {
        Ok(v) => Ok(Some(Pending::Send(reply, v))),
        Err(e) => Err((
            e,
            Some(Pending::Send(
                reply,
                VisitorSendOutcome::Rejected {
                    code: ErrorCode::Unavailable,
                    message: String::new(),
                },
            )),
        )),
    }
}

pub(super) fn rejected(code: ErrorCode, message: impl Into<String>) -> Outcome {
    Outcome::Rejected {
        code,
        message: message.into(),
    }
}

pub(super) fn check_body(body: &str) -> Option<Outcome> {
    if body.trim().is_empty() {
        return Some(rejected(ErrorCode::BadRequest, "message is empty"));
    }
    if body.len() > MAX_BODY {
        return Some(rejected(
            ErrorCode::TooLarge,
            format!("message is {} bytes; the limit is {MAX_BODY}", body.len()),
        ));
    }
    None
}

fn encode_outcome(o: &Outcome) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(o, bincode::config::standard())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_outcome(b: &[u8]) -> Result<Outcome, StoreError> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(o, _)| o)
        .map_err(|e| StoreError::Corrupt(format!("stored outcome: {e}")))
}

/// The business logic of one op, inside its savepoint.
pub(super) struct Tx<'a> {
    pub(super) conn: &'a Connection,
    pub(super) hub: &'a Hub,
    ctx: &'a mut OpCtx,
    heads: &'a dyn Fn(&str) -> Option<Seq>,
}

impl Tx<'_> {
    fn next_seq(&mut self, key: String) -> Result<Seq, StoreError> {
        let cur = match self
            .ctx
            .heads
            .get(&key)
            .copied()
            .or_else(|| (self.heads)(&key))
        {
            Some(h) => h,
            None => reads::log_head(self.conn, &key)?,
        };
        let next = cur + 1;
        self.ctx.heads.insert(key, next);
        Ok(next)
    }

    fn agent_event(&mut self, agent: AgentId, event: Event, at: i64) -> Result<(), StoreError> {
        let seq = self.next_seq(agent_key(agent))?;
        let bytes = reads::encode_agent_event(&event)?;
        self.conn
            .prepare_cached(
                "INSERT INTO agent_events (agent_id, seq, event, at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![to_i64(agent), to_i64(seq), bytes, at])
            .map_err(StoreError::from_sqlite)?;
        self.ctx.effects.push(Effect::AgentEvent {
            agent,
            seq,
            event: Arc::new(event),
        });
        Ok(())
    }

    fn visitor_event(
        &mut self,
        visitor: &str,
        event: VisitorEvent,
        agent_message: Option<MessageId>,
        at: i64,
    ) -> Result<(), StoreError> {
        let seq = self.next_seq(visitor_key(visitor))?;
        let text = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conv = match &event {
            VisitorEvent::Message(m) => m.conversation,
            VisitorEvent::Conversation(c) => c.id,
        };
        self.conn
            .prepare_cached(
                "INSERT INTO visitor_events (visitor_id, seq, event, conversation_id, agent_message, at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![visitor, to_i64(seq), text, to_i64(conv), agent_message.map(to_i64), at])
            .map_err(StoreError::from_sqlite)?;
        self.ctx.effects.push(Effect::VisitorEvent {
            visitor: visitor.to_string(),
            seq,
            event: Arc::new(event),
        });
        Ok(())
    }

    pub(super) fn site_agents(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        Ok(reads::agents_of_site(self.conn, site)?
            .into_iter()
            .filter(|a| !a.disabled)
            .map(|a| a.id)
            .collect())
    }

    /// Supervisors and admins of a site, who watch every chat live.
    fn overseers(&self, site: SiteId) -> Result<Vec<AgentId>, StoreError> {
        Ok(reads::agents_of_site(self.conn, site)?
            .into_iter()
            .filter(|a| !a.disabled && a.role.oversees())
            .map(|a| a.id)
            .collect())
    }

    /// Who receives a conversation's messages: its agent and the site's
    /// supervisors once assigned, every agent of the site while it waits.
    fn message_recipients(&self, c: &ConversationInfo) -> Result<Vec<AgentId>, StoreError> {
        match (c.state, c.assigned) {
            (ConversationState::Active | ConversationState::Closed, Some(a)) => {
                let mut v = self.overseers(c.site)?;
                if !v.contains(&a) {
                    v.push(a);
                }
                Ok(v)
            }
            _ => self.site_agents(c.site),
        }
    }

    fn agent_login(&mut self, agent: AgentId, device: &MsgId) -> Result<Seq, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO devices (agent_id, device_id, commands_acked, last_login_ms) VALUES (?1, ?2, 0, ?3) \
                 ON CONFLICT(agent_id, device_id) DO UPDATE SET last_login_ms = excluded.last_login_ms",
            )?
            .execute(params![to_i64(agent), &device.0[..], now_ms()])
            .map_err(StoreError::from_sqlite)?;
        reads::device_commands_acked(self.conn, agent, device)
    }

    /// The actor's account as it is now, if this session may still act.
    /// Checked inside the transaction, so nothing a disabled agent (or a
    /// session from before a password change) sends is applied, however
    /// late the server noticed the change.
    fn current_actor(&self, actor: &AgentActor) -> Result<reads::AgentRow, StoreError> {
        match reads::agent_by_id(self.conn, actor.id)? {
            Some(r) if r.disabled => Err(StoreError::Revoked {
                code: ErrorCode::Disabled,
                message: "your account was disabled".into(),
            }),
            Some(r) if r.auth_epoch != actor.epoch => Err(StoreError::Revoked {
                code: ErrorCode::Revoked,
                message: "your password was changed; sign in again".into(),
            }),
            Some(r) => Ok(r),
            None => Err(StoreError::Revoked {
                code: ErrorCode::Disabled,
                message: "your account no longer exists".into(),
            }),
        }
    }

    fn agent_command(
        &mut self,
        actor: &AgentActor,
        device: &MsgId,
        cmd: &Command,
    ) -> Result<CommandResult, StoreError> {
        let me = self.current_actor(actor)?;
        let actor_key = agent_key(actor.id);
        let outcome = match self.prior_outcome(&cmd.id, &actor_key)? {
            Some(o) => o,
            None => {
                let outcome = self.agent_action(actor, &me, cmd)?;
                self.record_outcome(&cmd.id, &actor_key, cmd.seq, &outcome)?;
                outcome
            }
        };
        self.conn
            .prepare_cached(
                "UPDATE devices SET commands_acked = MAX(commands_acked, ?3) WHERE agent_id = ?1 AND device_id = ?2",
            )?
            .execute(params![to_i64(actor.id), &device.0[..], to_i64(cmd.seq)])
            .map_err(StoreError::from_sqlite)?;
        Ok(CommandResult {
            seq: cmd.seq,
            id: cmd.id,
            outcome,
        })
    }

    /// The idempotency check, for both channels: the original outcome of an
    /// action id this actor already used; a refusal if someone else used it;
    /// `None` if it is new.
    fn prior_outcome(&self, id: &MsgId, actor_key: &str) -> Result<Option<Outcome>, StoreError> {
        let prior: Option<(String, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT actor, outcome FROM actions WHERE client_id = ?1")?
            .query_row([&id.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        Ok(match prior {
            // A resend: answer with the original result, apply nothing.
            Some((who, bytes)) if who == actor_key => Some(decode_outcome(&bytes)?),
            Some(_) => Some(rejected(
                ErrorCode::Conflict,
                "this action id was already used by someone else",
            )),
            None => None,
        })
    }

    fn record_outcome(
        &self,
        id: &MsgId,
        actor_key: &str,
        seq: Seq,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO actions (client_id, actor, seq, outcome) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                &id.0[..],
                actor_key,
                to_i64(seq),
                encode_outcome(outcome)?
            ])
            .map_err(StoreError::from_sqlite)?;
        Ok(())
    }

    /// Look up a conversation the actor may touch. Another site's
    /// conversation gets the same answer as one that does not exist, so ids
    /// cannot be probed across sites.
    pub(super) fn conv_for(
        &self,
        actor: &AgentActor,
        id: ConversationId,
    ) -> Result<Result<ConversationInfo, Outcome>, StoreError> {
        match reads::conversation(self.conn, id)? {
            Some(c) if c.site == actor.site => Ok(Ok(c)),
            _ => Ok(Err(rejected(
                ErrorCode::NotFound,
                format!("no conversation {id}"),
            ))),
        }
    }

    fn agent_action(
        &mut self,
        actor: &AgentActor,
        me: &reads::AgentRow,
        cmd: &Command,
    ) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let done = |conversation, message| Outcome::Done {
            conversation,
            message,
            at_ms: now,
        };
        let author = Author::Agent {
            agent: actor.id,
            name: me.display_name.clone(),
        };
        match &cmd.action {
            Action::Send { conversation, body } => {
                if let Some(bad) = check_body(body) {
                    return Ok(bad);
                }
                let c = match self.conv_for(actor, *conversation)? {
                    Ok(c) => c,
                    Err(o) => return Ok(o),
                };
                if c.state == ConversationState::Closed {
                    return Ok(rejected(ErrorCode::Conflict, "conversation is closed"));
                }
                if c.state != ConversationState::Active || c.assigned != Some(actor.id) {
                    let who = c.assigned_name.as_deref().filter(|_| c.assigned.is_some());
                    return Ok(rejected(
                        ErrorCode::Conflict,
                        match who {
                            Some(n) => format!("{n} is serving this conversation, not you"),
                            None => "conversation is not assigned to you; accept it first".into(),
                        },
                    ));
                }
                let m = self.post(&c, author, body, cmd.id, now, false)?;
                Ok(done(Some(c.id), Some(m)))
            }
            Action::Invite { visitor, body } => {
                if let Some(bad) = check_body(body) {
                    return Ok(bad);
                }
                let site: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT site_id FROM visitors WHERE id = ?1")?
                    .query_row([visitor], |r| r.get(0))
                    .optional()?;
                if site.and_then(|s| u64::try_from(s).ok()) != Some(actor.site) {
                    return Ok(rejected(ErrorCode::NotFound, "no such visitor"));
                }
                let c = match reads::open_conversation(self.conn, visitor)? {
                    Some(c)
                        if c.state == ConversationState::Active && c.assigned != Some(actor.id) =>
                    {
                        return Ok(rejected(
                            ErrorCode::Conflict,
                            format!(
                                "{} is already chatting with this visitor",
                                c.assigned_name.as_deref().unwrap_or("another agent")
                            ),
                        ));
                    }
                    Some(c) if c.state == ConversationState::Active => c,
                    Some(c) => {
                        let c =
                            self.set_state(&c, ConversationState::Active, Some(actor.id), now)?;
                        self.backfill(&c, actor.id, now)?;
                        self.joined(&c, &me.display_name, now)?;
                        c
                    }
                    None => {
                        let id = self.create_conversation(
                            actor.site,
                            visitor,
                            ConversationState::Active,
                            Some(actor.id),
                            None,
                            now,
                        )?;
                        let c = self.announce(id, now)?;
                        self.team_effect(actor.id)?;
                        self.joined(&c, &me.display_name, now)?;
                        c
                    }
                };
                let m = self.post(&c, author, body, cmd.id, now, false)?;
                Ok(done(Some(c.id), Some(m)))
            }
            Action::Accept { conversation } => {
                let c = match self.conv_for(actor, *conversation)? {
                    Ok(c) => c,
                    Err(o) => return Ok(o),
                };
                match c.state {
                    ConversationState::Queued | ConversationState::LeftMessage => {
                        let c =
                            self.set_state(&c, ConversationState::Active, Some(actor.id), now)?;
                        self.backfill(&c, actor.id, now)?;
                        self.joined(&c, &me.display_name, now)?;
                        Ok(done(Some(c.id), None))
                    }
                    ConversationState::Active if c.assigned == Some(actor.id) => {
                        Ok(done(Some(c.id), None))
                    }
                    ConversationState::Active => Ok(rejected(
                        ErrorCode::Conflict,
                        format!(
                            "{} already took it",
                            c.assigned_name.as_deref().unwrap_or("another agent")
                        ),
                    )),
                    ConversationState::Closed => {
                        Ok(rejected(ErrorCode::Conflict, "conversation is closed"))
                    }
                }
            }
            Action::Close { conversation } => {
                let c = match self.conv_for(actor, *conversation)? {
                    Ok(c) => c,
                    Err(o) => return Ok(o),
                };
                match c.state {
                    ConversationState::Closed => Ok(done(Some(c.id), None)),
                    ConversationState::Active
                        if c.assigned != Some(actor.id) && !me.role.oversees() =>
                    {
                        Ok(rejected(
                            ErrorCode::Forbidden,
                            "conversation is assigned to another agent",
                        ))
                    }
                    _ => {
                        let line = Notice::ClosedByAgent {
                            agent: me.display_name.clone(),
                        };
                        self.system_line(&c, &line, now)?;
                        self.set_state(&c, ConversationState::Closed, c.assigned, now)?;
                        self.assign_queued(actor.site, None)?;
                        Ok(done(Some(c.id), None))
                    }
                }
            }
            Action::SetPresence { presence } => {
                // Presence is live state, not data: the hub holds it. The
                // command is still durable so its ack means "applied".
                self.hub.set_presence(actor.id, *presence);
                self.ctx.effects.push(Effect::Presence {
                    agent: actor.id,
                    presence: *presence,
                });
                if *presence == Presence::Online {
                    self.assign_queued(actor.site, None)?;
                }
                Ok(done(None, None))
            }
            Action::Transfer {
                conversation,
                from,
                to,
                note,
            } => self.transfer(actor, me, *conversation, *from, *to, note.as_deref(), now),
        }
    }

    fn create_conversation(
        &mut self,
        site: SiteId,
        visitor: &str,
        state: ConversationState,
        assigned: Option<AgentId>,
        email: Option<String>,
        now: i64,
    ) -> Result<ConversationId, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO conversations (site_id, visitor_id, state, assigned_agent, opened_ms, updated_ms, contact_email) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            )?
            .execute(params![to_i64(site), visitor, state_to_int(state), assigned.map(to_i64), now, email])
            .map_err(StoreError::from_sqlite)?;
        self.ctx.effects.push(Effect::VisitorChanged {
            visitor: visitor.to_string(),
        });
        Ok(u64::try_from(self.conn.last_insert_rowid()).unwrap_or(0))
    }

    /// Tell every site agent and the visitor about a conversation's state.
    fn announce(&mut self, id: ConversationId, now: i64) -> Result<ConversationInfo, StoreError> {
        let c = reads::conversation(self.conn, id)?
            .ok_or_else(|| StoreError::Corrupt(format!("conversation {id} vanished")))?;
        for a in self.site_agents(c.site)? {
            self.agent_event(a, Event::Conversation(c.clone()), now)?;
        }
        let view = reads::conversation_view(&c);
        self.visitor_event(&c.visitor, VisitorEvent::Conversation(view), None, now)?;
        Ok(c)
    }

    /// Move a conversation to `state` and `assigned`, and tell everyone. A
    /// change of owner counts as a handoff (the next owner needs the
    /// history) and updates both agents' load on the team panel.
    pub(super) fn set_state(
        &mut self,
        c: &ConversationInfo,
        state: ConversationState,
        assigned: Option<AgentId>,
        now: i64,
    ) -> Result<ConversationInfo, StoreError> {
        let handoff = c.assigned.is_some() && c.assigned != assigned;
        self.conn
            .prepare_cached(
                "UPDATE conversations SET state = ?2, assigned_agent = ?3, updated_ms = ?4, \
                 handoffs = handoffs + ?5 WHERE id = ?1",
            )?
            .execute(params![
                to_i64(c.id),
                state_to_int(state),
                assigned.map(to_i64),
                now,
                i64::from(handoff)
            ])
            .map_err(StoreError::from_sqlite)?;
        let updated = self.announce(c.id, now)?;
        self.ctx.effects.push(Effect::VisitorChanged {
            visitor: updated.visitor.clone(),
        });
        let load_changed = c.assigned != assigned
            || (c.state == ConversationState::Active) != (state == ConversationState::Active);
        if load_changed {
            for a in [c.assigned, assigned].into_iter().flatten() {
                self.team_effect(a)?;
            }
        }
        Ok(updated)
    }

    /// The agent's team row as committed, for the hub to pass on.
    pub(super) fn team_effect(&mut self, agent: AgentId) -> Result<(), StoreError> {
        let Some(row) = reads::agent_by_id(self.conn, agent)? else {
            return Ok(());
        };
        let active = reads::agent_load(self.conn, agent)?;
        self.ctx.effects.push(Effect::Team {
            site: row.site,
            member: TeamMember {
                agent,
                name: row.display_name,
                role: row.role,
                presence: Presence::Offline,
                active,
                capacity: row.capacity,
                disabled: row.disabled,
            },
        });
        Ok(())
    }

    /// A new owner gets the history it has not seen: every message if the
    /// chat changed hands before (its messages then went only to the owner
    /// and the supervisors), or if the agent was created after it opened.
    pub(super) fn backfill(
        &mut self,
        c: &ConversationInfo,
        agent: AgentId,
        now: i64,
    ) -> Result<(), StoreError> {
        let row: Option<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT a.created_ms, c.handoffs FROM agents a, conversations c WHERE a.id = ?1 AND c.id = ?2",
            )?
            .query_row(params![to_i64(agent), to_i64(c.id)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((created, handoffs)) = row else {
            return Ok(());
        };
        if created <= c.opened_at_ms && handoffs == 0 {
            return Ok(());
        }
        for m in reads::recent_messages(self.conn, c.id, 200)? {
            self.agent_event(agent, Event::Message(m), now)?;
        }
        Ok(())
    }

    /// Store a message and send it to its recipients. `internal` lines go to
    /// agents only: no visitor event is written for them, and visitor
    /// snapshots skip them.
    pub(super) fn post(
        &mut self,
        c: &ConversationInfo,
        author: Author,
        body: &str,
        client_id: MsgId,
        now: i64,
        internal: bool,
    ) -> Result<MessageId, StoreError> {
        let (kind, agent) = match &author {
            Author::Agent { agent, .. } => (AUTHOR_AGENT, Some(*agent)),
            Author::Visitor { .. } => (AUTHOR_VISITOR, None),
            Author::System => (reads::AUTHOR_SYSTEM, None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO messages (conversation_id, client_id, author_kind, author_agent, body, at_ms, internal) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![to_i64(c.id), &client_id.0[..], kind, agent.map(to_i64), body, now, internal])
            .map_err(StoreError::from_sqlite)?;
        let id = u64::try_from(self.conn.last_insert_rowid()).unwrap_or(0);
        self.conn
            .prepare_cached("UPDATE conversations SET updated_ms = ?2 WHERE id = ?1")?
            .execute(params![to_i64(c.id), now])
            .map_err(StoreError::from_sqlite)?;
        let msg = ChatMessage {
            conversation: c.id,
            message: id,
            client_id,
            author,
            body: body.to_string(),
            at_ms: now,
        };
        let vmsg = if internal {
            None
        } else {
            reads::visitor_message(&msg)
        };
        for a in self.message_recipients(c)? {
            self.agent_event(a, Event::Message(msg.clone()), now)?;
        }
        if let Some(vmsg) = vmsg {
            let agent_msg = agent.map(|_| id);
            self.visitor_event(&c.visitor, VisitorEvent::Message(vmsg), agent_msg, now)?;
        }
        Ok(id)
    }

    /// Post a system line; agent-only notices stay internal.
    pub(super) fn system_line(
        &mut self,
        c: &ConversationInfo,
        notice: &Notice,
        now: i64,
    ) -> Result<MessageId, StoreError> {
        // System lines have no client; a fresh id keeps the column unique.
        let id = MsgId::generate(u64::try_from(now).unwrap_or(0), &mut rand::rng());
        self.post(
            c,
            Author::System,
            &notice.to_body(),
            id,
            now,
            notice.agents_only(),
        )
    }

    fn joined(&mut self, c: &ConversationInfo, name: &str, now: i64) -> Result<(), StoreError> {
        self.system_line(
            c,
            &Notice::Joined {
                agent: name.to_owned(),
            },
            now,
        )
        .map(drop)
    }

    fn visitor_hello(
        &mut self,
        site: SiteId,
        visitor: Option<String>,
        ua: Option<String>,
        page: Option<PageView>,
    ) -> Result<String, StoreError> {
        let id = self.visitor_upsert(site, visitor, ua)?;
        if let Some(p) = page {
            self.page_view(&id, &p)?;
        }
        Ok(id)
    }

    fn visitor_upsert(
        &mut self,
        site: SiteId,
        visitor: Option<String>,
        ua: Option<String>,
    ) -> Result<String, StoreError> {
        let now = now_ms();
        if let Some(v) = visitor {
            let n = self
                .conn
                .prepare_cached(
                    "UPDATE visitors SET last_seen_ms = ?3, user_agent = COALESCE(?4, user_agent) WHERE id = ?1 AND site_id = ?2",
                )?
                .execute(params![v, to_i64(site), now, ua])
                .map_err(StoreError::from_sqlite)?;
            if n == 1 {
                return Ok(v);
            }
        }
        let id = crate::token::new_visitor_id();
        self.conn
            .prepare_cached(
                "INSERT INTO visitors (id, site_id, user_agent, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![id, to_i64(site), ua, now])
            .map_err(StoreError::from_sqlite)?;
        Ok(id)
    }

    /// A visitor action, applied once per id: a resend gets the original
    /// outcome.
    fn visitor_action(
        &mut self,
        visitor: &str,
        id: MsgId,
        apply: impl FnOnce(&mut Self) -> Result<Outcome, StoreError>,
    ) -> Result<VisitorSendOutcome, StoreError> {
        let actor_key = visitor_key(visitor);
        let outcome = match self.prior_outcome(&id, &actor_key)? {
            Some(o) => o,
            None => {
                let o = apply(self)?;
                self.record_outcome(&id, &actor_key, 0, &o)?;
                o
            }
        };
        Ok(match outcome {
            Outcome::Done {
                conversation,
                message,
                at_ms,
            } => VisitorSendOutcome::Done {
                conversation: conversation.unwrap_or(0),
                message: message.unwrap_or(0),
                at_ms,
            },
            Outcome::Rejected { code, message } => VisitorSendOutcome::Rejected { code, message },
        })
    }

    fn visitor_post(
        &mut self,
        visitor: &str,
        site: SiteId,
        id: MsgId,
        body: &str,
        leave: Option<Option<String>>,
        page: Option<PageView>,
    ) -> Result<Outcome, StoreError> {
        if let Some(bad) = check_body(body) {
            return Ok(bad);
        }
        let now = now_ms();
        let mut joined = None;
        let c = match reads::open_conversation(self.conn, visitor)? {
            Some(c) => {
                if let Some(Some(email)) = &leave {
                    self.conn
                        .prepare_cached(
                            "UPDATE conversations SET contact_email = ?2 WHERE id = ?1",
                        )?
                        .execute(params![to_i64(c.id), email])
                        .map_err(StoreError::from_sqlite)?;
                }
                c
            }
            None => {
                let (state, email) = match &leave {
                    Some(email) => (ConversationState::LeftMessage, email.clone()),
                    None => (ConversationState::Queued, None),
                };
                let cid = self.create_conversation(site, visitor, state, None, email, now)?;
                if state == ConversationState::Queued
                    && let Some(agent) = self.pick_agent(site, None)?
                {
                    self.conn
                        .prepare_cached(
                            "UPDATE conversations SET state = 1, assigned_agent = ?2 WHERE id = ?1",
                        )?
                        .execute(params![to_i64(cid), to_i64(agent)])
                        .map_err(StoreError::from_sqlite)?;
                    self.team_effect(agent)?;
                    joined = Some(agent);
                }
                self.announce(cid, now)?
            }
        };
        let m = self.post(
            &c,
            Author::Visitor {
                visitor: visitor.to_string(),
            },
            body,
            id,
            now,
            false,
        )?;
        if let Some(email) = leave {
            let line = Notice::LeftMessage {
                email,
                url: page.as_ref().map(|p| p.url.clone()),
                title: page.map(|p| p.title).filter(|t| !t.is_empty()),
            };
            self.system_line(&c, &line, now)?;
        }
        if let Some(agent) = joined
            && let Some(row) = reads::agent_by_id(self.conn, agent)?
        {
            self.joined(&c, &row.display_name, now)?;
        }
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(m),
            at_ms: now,
        })
    }

    fn visitor_end_chat(&mut self, visitor: &str, _id: MsgId) -> Result<Outcome, StoreError> {
        let now = now_ms();
        let Some(c) = reads::open_conversation(self.conn, visitor)? else {
            return Ok(rejected(
                ErrorCode::NotFound,
                "there is no open chat to end",
            ));
        };
        let m = self.system_line(&c, &Notice::ClosedByVisitor, now)?;
        self.set_state(&c, ConversationState::Closed, c.assigned, now)?;
        self.assign_queued(c.site, None)?;
        Ok(Outcome::Done {
            conversation: Some(c.id),
            message: Some(m),
            at_ms: now,
        })
    }

    /// The least-busy online agent of the site with spare capacity, other
    /// than `exclude` (an agent on its way out).
    pub(super) fn pick_agent(
        &self,
        site: SiteId,
        exclude: Option<AgentId>,
    ) -> Result<Option<AgentId>, StoreError> {
        let online = self.hub.available_agents(site);
        let mut best: Option<(u32, AgentId)> = None;
        for agent in online.into_iter().filter(|a| Some(*a) != exclude) {
            let Some(row) = reads::agent_by_id(self.conn, agent)? else {
                continue;
            };
            if row.disabled {
                continue;
            }
            let load = reads::agent_load(self.conn, agent)?;
            if load >= row.capacity {
                continue;
            }
            if best.is_none_or(|(l, a)| (load, agent) < (l, a)) {
                best = Some((load, agent));
            }
        }
        Ok(best.map(|(_, a)| a))
    }

    /// Hand waiting chats, oldest first, to available agents.
    pub(super) fn assign_queued(
        &mut self,
        site: SiteId,
        exclude: Option<AgentId>,
    ) -> Result<(), StoreError> {
        let queued: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT id FROM conversations WHERE site_id = ?1 AND state = 0 ORDER BY id",
            )?
            .query_map([to_i64(site)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let now = now_ms();
        for id in queued {
            let Some(agent) = self.pick_agent(site, exclude)? else {
                break;
            };
            let id = u64::try_from(id).unwrap_or(0);
            let Some(c) = reads::conversation(self.conn, id)? else {
                continue;
            };
            let c = self.set_state(&c, ConversationState::Active, Some(agent), now)?;
            self.backfill(&c, agent, now)?;
            if let Some(name) = c.assigned_name.clone() {
                self.joined(&c, &name, now)?;
            }
        }
        Ok(())
    }

    fn page_view(&mut self, visitor: &str, page: &PageView) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO page_views (visitor_id, url, title, referrer, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![visitor, page.url, page.title, page.referrer, page.at_ms])
            .map_err(StoreError::from_sqlite)?;
        // A visitor's trail keeps its newest views only: page views were
        // never pruned, and one address wrote 1,426 a second.
        self.conn
            .prepare_cached(
                "DELETE FROM page_views WHERE visitor_id = ?1 AND id < \
                 (SELECT id FROM page_views WHERE visitor_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![visitor, self.ctx.trail_keep.max(1) - 1])
            .map_err(StoreError::from_sqlite)?;
        self.conn
            .prepare_cached("UPDATE visitors SET last_seen_ms = ?2 WHERE id = ?1")?
            .execute(params![visitor, page.at_ms])
            .map_err(StoreError::from_sqlite)?;
        Ok(())
    }

    fn identify(
        &mut self,
        visitor: &str,
        external_id: &str,
        name: Option<String>,
        email: Option<String>,
        attrs: &[(String, String)],
        verified: bool,
    ) -> Result<bool, StoreError> {
        // A visitor bound to a verified identity stays bound to it: another
        // identity, verified or not, needs a new visitor.
        if let Some(bound) = reads::verified_identity(self.conn, visitor)?
            && bound != external_id
        {
            return Ok(false);
        }
        let attrs = serde_json::to_string(attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // An unverified identify of the id this visitor was verified as
        // (a site that dropped its secret) keeps the binding: it proves
        // nothing either way, and unbinding would let any id in later.
        self.conn
            .prepare_cached(
                "UPDATE visitors SET name = COALESCE(?3, name), email = COALESCE(?4, email), attrs = ?5, \
                 verified = CASE WHEN verified = 1 AND external_id = ?2 THEN 1 ELSE ?6 END, \
                 external_id = ?2 WHERE id = ?1",
            )?
            .execute(params![visitor, external_id, name, email, attrs, i64::from(verified)])
            .map_err(StoreError::from_sqlite)?;
        self.ctx.effects.push(Effect::VisitorChanged {
            visitor: visitor.to_string(),
        });
        Ok(true)
    }

    fn delivered(&mut self, visitor: &str, up_to: Seq) -> Result<(), StoreError> {
        let prev: Option<i64> = self
            .conn
            .prepare_cached("SELECT delivered_seq FROM visitors WHERE id = ?1")?
            .query_row([visitor], |r| r.get(0))
            .optional()?;
        let Some(prev) = prev else { return Ok(()) };
        let head = match (self.heads)(&visitor_key(visitor)) {
            Some(h) => h,
            None => reads::log_head(self.conn, &visitor_key(visitor))?,
        };
        let up_to = to_i64(up_to.min(head));
        if up_to <= prev {
            return Ok(());
        }
        let rows: Vec<(i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT conversation_id, MAX(agent_message) FROM visitor_events \
                 WHERE visitor_id = ?1 AND seq > ?2 AND seq <= ?3 AND agent_message IS NOT NULL \
                 GROUP BY conversation_id",
            )?
            .query_map(params![visitor, prev, up_to], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        self.conn
            .prepare_cached("UPDATE visitors SET delivered_seq = ?2 WHERE id = ?1")?
            .execute(params![visitor, up_to])
            .map_err(StoreError::from_sqlite)?;
        let now = now_ms();
        for (conv, msg) in rows {
            let conv = u64::try_from(conv).unwrap_or(0);
            let Some(c) = reads::conversation(self.conn, conv)? else {
                continue;
            };
            let event = Event::Delivered {
                conversation: conv,
                message: u64::try_from(msg).unwrap_or(0),
            };
            for a in self.message_recipients(&c)? {
                self.agent_event(a, event.clone(), now)?;
            }
        }
        Ok(())
    }
}
