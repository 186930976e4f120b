//! The single writer thread and its group commit.
//!
//! Every mutation is an [`Op`] sent over a bounded channel. The thread takes
//! whatever is queued (up to `max_batch`), applies each op inside its own
//! savepoint of one transaction, commits once, and only after the commit
//! replies to each op and hands the batch's effects to the hub (through
//! [`Publish`](super::live::Publish)). With fsync costing
//! ~0.2 ms, one commit per batch instead of per message is what makes full
//! durability fast. If the commit fails (a full disk), every op in the batch
//! is answered with an error, no event is published, and nothing is acked.
//!
//! What each op does is not here: `apply` dispatches it to its rule in
//! `rules/`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    AgentId, Command, CommandResult, ConversationId, MessageId, Outcome, PageView, Seq, SiteId,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::LeaveReason;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};

use super::live::Live;
use super::reads::to_i64;
use super::rules::{Rules, Staged};
use super::{StoreError, now_ms};
use crate::metrics::Metrics;

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
/// Cheap handle for submitting ops.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    ops: mpsc::Sender<Op>,
}

impl WriterHandle {
    /// Submit an op, waiting for queue space.
    pub async fn submit(&self, op: Op) -> Result<(), StoreError> {
        self.ops.send(op).await.map_err(|_| StoreError::WriterGone)
    }

    /// Submit an op without waiting; for fire-and-forget ops like page views,
    /// dropped (with a metric) when the queue is full rather than stalling a
    /// connection.
    pub fn try_submit(&self, op: Op) -> bool {
        self.ops.try_send(op).is_ok()
    }

    /// Submit an op and await its reply.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(make(reply)).await?;
        answer.await.map_err(|_| StoreError::WriterGone)?
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
    live: Arc<dyn Live>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (ops, queue) = mpsc::channel(cfg.queue.max(1));
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
            Writer::new(conn, cfg, live, metrics).run(queue);
            // Dropping the sender stops the checkpointer.
            drop(checkpointer);
        });
    match handle {
        Ok(join) => (WriterHandle { ops }, join),
        // Without a writer thread the server cannot do anything useful; the
        // caller sees every op fail with WriterGone.
        Err(e) => {
            tracing::error!("cannot start writer thread: {e}");
            let (closed, _) = mpsc::channel(1);
            (WriterHandle { ops: closed }, std::thread::spawn(|| {}))
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

struct Writer {
    conn: Connection,
    cfg: WriterConfig,
    /// The hub, behind the store's own traits.
    live: Arc<dyn Live>,
    metrics: Arc<Metrics>,
    /// Committed log heads.
    heads: HashMap<String, Seq>,
    last_prune: Instant,
}

impl Writer {
    fn new(
        conn: Connection,
        cfg: WriterConfig,
        live: Arc<dyn Live>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            conn,
            cfg,
            live,
            metrics,
            heads: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    fn run(mut self, mut queue: mpsc::Receiver<Op>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < self.cfg.max_batch.max(1) {
                match queue.try_recv() {
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
        let mut staged = Staged::default();
        let mut barriers = Vec::new();

        let txn = match self.conn.transaction() {
            Ok(txn) => txn,
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
            // Each op runs in its own savepoint, so a failing op is undone
            // without losing the rest of the batch.
            // Cached statements: execute_batch would parse the SQL on every op.
            if let Err(e) = exec_cached(&txn, "SAVEPOINT op") {
                let msg = e.to_string();
                fail_op(op, &msg);
                fatal = Some(msg);
                continue;
            }
            let mut op_staged = Staged::default();
            let rules = Rules::new(
                &txn,
                &*self.live,
                &mut op_staged,
                &staged,
                &self.heads,
                self.cfg.trail_keep,
            );
            match apply(rules, op) {
                Ok(p) => match exec_cached(&txn, "RELEASE op") {
                    Ok(()) => {
                        staged.absorb(op_staged);
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
                    if let Err(rb) = txn.execute_batch("ROLLBACK TO op; RELEASE op") {
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
        let heads_ok = persist_heads(&txn, &staged.heads);
        let result = heads_ok.and_then(|()| txn.commit().map_err(StoreError::from_sqlite));
        let latency = started.elapsed();
        match result {
            Ok(()) => {
                self.heads.extend(staged.heads);
                self.metrics.record_commit(n, latency);
                for p in pending {
                    p.succeed();
                }
                // Staged presence goes no further: the hub has it from here
                // on, through the effects.
                self.live.publish(staged.effects);
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

/// Apply one op: dispatch to its rule in `rules/`. The error variant is
/// large, but this runs once per op on one thread; boxing would only add an
/// allocation. On error the caller rolls back the op's savepoint and the
/// reply (if any) gets the error.
#[allow(clippy::result_large_err)]
fn apply(mut rules: Rules<'_>, op: Op) -> ApplyResult {
    match op {
        Op::AgentLogin {
            agent,
            device,
            reply,
        } => match rules.agent_login(agent, &device) {
            Ok(v) => Ok(Some(Pending::Login(reply, v))),
            Err(e) => Err((e, Some(Pending::Login(reply, 0)))),
        },
        Op::AgentCommand {
            actor,
            device,
            cmd,
            reply,
        } => match rules.agent_command(&actor, &device, &cmd) {
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
        } => match rules.visitor_hello(site, visitor, user_agent, page) {
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
            let r = rules.visitor_action(&visitor, id, |rules| {
                rules.visitor_post(&visitor, site, id, &body, leave, page)
            });
            send_result(r, reply)
        }
        Op::VisitorEndChat { visitor, id, reply } => {
            let r =
                rules.visitor_action(&visitor, id, |rules| rules.visitor_end_chat(&visitor, id));
            send_result(r, reply)
        }
        Op::ReleaseChats {
            agent,
            reason,
            reply,
        } => match rules.release_chats(agent, reason) {
            Ok(()) => Ok(reply.map(Pending::Unit)),
            Err(e) => Err((e, reply.map(Pending::Unit))),
        },
        Op::PageView { visitor, page } => rules
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
        } => match rules.identify(&visitor, &external_id, name, email, &attrs, verified) {
            Ok(ok) => Ok(Some(Pending::Flag(reply, ok))),
            Err(e) => Err((e, Some(Pending::Flag(reply, false)))),
        },
        Op::Delivered { visitor, up_to } => rules
            .delivered(&visitor, up_to)
            .map(|()| None)
            .map_err(|e| (e, None)),
        Op::AssignQueued { site } => rules
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
