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
    Action, AgentId, Command, CommandResult, ConversationId, MessageId, PageView, Seq, SiteId,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::LeaveReason;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::live::Live;
use super::rules::{Rules, Staged, VisitorText, finish_logs};
use super::sql::{self, Db, Dialect, PgConn, PgTarget, args};
use super::{Conn, Database, StoreError, now_ms};
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

/// A visitor's complete upload, as a message will carry it.
#[derive(Debug, Clone)]
pub struct VisitorFile {
    pub info: holdfast_protocol::agent::AttachmentInfo,
    /// The chat it was uploaded into.
    pub conversation: ConversationId,
}

/// An attachment a message refers to, as the gateway found it: the file, or
/// why it may not be sent.
pub type FileCheck = Result<VisitorFile, (ErrorCode, String)>;

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
        /// For a `Send` that carries a file: what the gateway found, read
        /// before the writer; a refusal becomes the command's durable
        /// outcome, so the command is still acked in its place.
        attachment: Option<FileCheck>,
        reply: Reply<CommandResult>,
    },
    /// Create or refresh a visitor; returns the visitor id.
    VisitorHello {
        site: SiteId,
        visitor: Option<String>,
        /// The address the hello came from, kept for a block by address.
        ip: String,
        user_agent: Option<String>,
        /// The page the hello came from, committed with it so the visitor's
        /// first listing already shows it.
        page: Option<PageView>,
        /// The site group its widget targets (checked: the site has it).
        group: Option<String>,
        /// The visitor's language tag, already put in shape (10.24); `None`
        /// keeps the one stored.
        lang: Option<String>,
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
        /// The complete upload the message carries, checked by the gateway
        /// as this visitor's; the writer checks it belongs to the open chat.
        attachment: Option<VisitorFile>,
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
    /// Open chats of `site` for a group it no longer has go back to the
    /// site-wide queue (and are handed out by the normal rules).
    Regroup {
        site: SiteId,
    },
    /// An invitation rule fits `visitor`: record it unless the visitor
    /// chats or was invited in this visit (10.20). `None`: send nothing.
    FireInvitation {
        site: SiteId,
        visitor: String,
        rule: i64,
        visit_started_ms: i64,
        reply: Reply<Option<crate::invite::Fired>>,
    },
    /// The visitor's widget showed (or the visitor closed) invitation `id`.
    InvitationSeen {
        visitor: String,
        id: u64,
        dismissed: bool,
        reply: Reply<Option<crate::invite::Fired>>,
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
    spawn_on(WriteConn::Sqlite(conn), cfg, live, metrics)
}

/// The writer's connection: SQLite in the data dir, or PostgreSQL, which
/// the writer reconnects to by itself after the database restarts.
#[derive(Debug)]
pub enum WriteConn {
    Sqlite(Connection),
    Postgres {
        target: PgTarget,
        /// `None` while the database is out of reach.
        conn: Option<PgConn>,
        /// After a failed connect, batches fail at once until then instead
        /// of each waiting out a connect timeout.
        retry_at: Option<Instant>,
    },
}

impl WriteConn {
    /// The writer's side of an open, migrated connection to `db`.
    pub fn new(conn: Conn, db: &Database) -> Result<Self, StoreError> {
        match (conn, db) {
            (Conn::Postgres(c), Database::Postgres(t)) => Ok(WriteConn::Postgres {
                target: t.clone(),
                conn: Some(c),
                retry_at: None,
            }),
            (Conn::Sqlite(c), Database::Sqlite(_)) => Ok(WriteConn::Sqlite(c)),
            _ => Err(StoreError::Config(
                "the connection is not to the configured database".into(),
            )),
        }
    }

    /// The connection to write on, reconnecting to PostgreSQL if the last
    /// one was lost.
    fn db(&mut self) -> Result<&dyn Db, StoreError> {
        match self {
            WriteConn::Sqlite(c) => Ok(c),
            WriteConn::Postgres {
                target,
                conn,
                retry_at,
            } => {
                if conn.as_ref().is_some_and(PgConn::is_broken) {
                    *conn = None;
                }
                if conn.is_none() {
                    if retry_at.is_some_and(|t| Instant::now() < t) {
                        return Err(StoreError::Unavailable(format!(
                            "{target:?} is unreachable; retrying shortly"
                        )));
                    }
                    match target.connect() {
                        Ok(c) => {
                            *conn = Some(c);
                            *retry_at = None;
                            tracing::info!("writer connected to {target:?}");
                        }
                        Err(e) => {
                            *retry_at = Some(Instant::now() + RECONNECT_PAUSE);
                            return Err(e);
                        }
                    }
                }
                match conn {
                    Some(c) => Ok(c),
                    None => Err(StoreError::Unavailable("no database connection".into())),
                }
            }
        }
    }

    /// Forget a connection that failed, so the next batch opens a new one.
    fn reset(&mut self) {
        if let WriteConn::Postgres { conn, .. } = self {
            *conn = None;
        }
    }

    /// Whether other writers may share the database: then no committed log
    /// head may be cached between batches.
    fn shared(&self) -> bool {
        matches!(self, WriteConn::Postgres { .. })
    }
}

/// How long the writer waits after a failed connect before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Start the writer thread on either engine.
pub fn spawn_on(
    conn: WriteConn,
    cfg: WriterConfig,
    live: Arc<dyn Live>,
    metrics: Arc<Metrics>,
) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (ops, queue) = mpsc::channel(cfg.queue.max(1));
    let checkpointer = match &conn {
        WriteConn::Sqlite(c) => {
            // The writer touches index pages all over the database (message
            // ids are random); SQLite's default 2 MB cache made it re-read
            // pages through pread on most commits. 8 MB is allocated only as
            // pages are used, and is 8 MB of the 100 MB budget for 15k
            // visitors (BENCHMARKS.md).
            if let Err(e) = c.pragma_update(None, "cache_size", -8_192) {
                tracing::warn!("cannot set the writer's cache size: {e}");
            }
            spawn_checkpointer(c)
        }
        WriteConn::Postgres { .. } => None,
    };
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

/// What an applied op answers once its batch is committed.
enum Answer {
    Login(Seq),
    Command(CommandResult),
    Hello(String),
    Send(VisitorSendOutcome),
    Unit,
    Flag(bool),
    Invitation(Option<crate::invite::Fired>),
    /// Ops nobody waits for.
    None,
}

/// Send an op's answer (or error) to whoever submitted it. A dropped
/// receiver means the connection already went away; there is nobody left
/// to tell.
fn reply(op: Op, answer: Result<Answer, StoreError>) {
    fn send<T>(r: Reply<T>, v: Result<T, StoreError>) {
        let _ignored = r.send(v);
    }
    fn mismatch<T>() -> Result<T, StoreError> {
        Err(StoreError::Corrupt(
            "the writer mixed up two answers".into(),
        ))
    }
    match (op, answer) {
        (Op::AgentLogin { reply, .. }, Ok(Answer::Login(v))) => send(reply, Ok(v)),
        (Op::AgentCommand { reply, .. }, Ok(Answer::Command(v))) => send(reply, Ok(v)),
        (Op::VisitorHello { reply, .. }, Ok(Answer::Hello(v))) => send(reply, Ok(v)),
        (Op::VisitorSend { reply, .. } | Op::VisitorEndChat { reply, .. }, Ok(Answer::Send(v))) => {
            send(reply, Ok(v))
        }
        (Op::Identify { reply, .. }, Ok(Answer::Flag(v))) => send(reply, Ok(v)),
        (
            Op::FireInvitation { reply, .. } | Op::InvitationSeen { reply, .. },
            Ok(Answer::Invitation(v)),
        ) => send(reply, Ok(v)),
        (Op::Barrier { reply }, Ok(Answer::Unit)) => send(reply, Ok(())),
        (Op::ReleaseChats { reply, .. }, Ok(Answer::Unit)) => {
            if let Some(r) = reply {
                send(r, Ok(()));
            }
        }
        (
            Op::PageView { .. }
            | Op::Delivered { .. }
            | Op::AssignQueued { .. }
            | Op::Regroup { .. },
            _,
        ) => {}
        (op, Ok(_)) => reply(op, mismatch()),
        (Op::AgentLogin { reply, .. }, Err(e)) => send(reply, Err(e)),
        (Op::AgentCommand { reply, .. }, Err(e)) => send(reply, Err(e)),
        (Op::VisitorHello { reply, .. }, Err(e)) => send(reply, Err(e)),
        (Op::VisitorSend { reply, .. } | Op::VisitorEndChat { reply, .. }, Err(e)) => {
            send(reply, Err(e));
        }
        (Op::Identify { reply, .. }, Err(e)) => send(reply, Err(e)),
        (Op::FireInvitation { reply, .. } | Op::InvitationSeen { reply, .. }, Err(e)) => {
            send(reply, Err(e));
        }
        (Op::Barrier { reply }, Err(e)) => send(reply, Err(e)),
        (Op::ReleaseChats { reply, .. }, Err(e)) => {
            if let Some(r) = reply {
                send(r, Err(e));
            }
        }
    }
}

/// How often a batch that lost a conflict to another node's transaction is
/// redone before its ops are told to retry.
const CONFLICT_RETRIES: u32 = 8;

/// How one attempt at a batch ended.
enum Attempt {
    /// Committed: each op's answer (or its own error), what to publish, and
    /// the new heads of the logs it wrote.
    Committed(
        Vec<Result<Answer, StoreError>>,
        Staged,
        HashMap<String, Seq>,
    ),
    /// Rolled back; the whole batch may be redone.
    Conflict(StoreError),
    /// Rolled back (or in doubt); nothing of it is acked.
    Failed(StoreError),
}

struct Writer {
    conn: WriteConn,
    cfg: WriterConfig,
    /// The hub, behind the store's own traits.
    live: Arc<dyn Live>,
    metrics: Arc<Metrics>,
    /// Committed log heads (one writer only: empty on a shared database).
    heads: HashMap<String, Seq>,
    last_prune: Instant,
}

impl Writer {
    fn new(conn: WriteConn, cfg: WriterConfig, live: Arc<dyn Live>, metrics: Arc<Metrics>) -> Self {
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

    /// Apply a batch in one transaction and answer every op after the
    /// commit. A conflict with another node's transaction redoes the whole
    /// batch (nothing of it was committed, nothing was acked); a lost
    /// database fails the whole batch, so the clients retry.
    fn process(&mut self, batch: Vec<Op>) {
        let started = Instant::now();
        let n = batch.len();
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let attempt = match self.conn.db() {
                Ok(db) => attempt(db, &batch, &*self.live, &self.heads, self.cfg.trail_keep),
                Err(e) => Attempt::Failed(e),
            };
            match attempt {
                Attempt::Conflict(e) if tries <= CONFLICT_RETRIES => {
                    self.metrics.commit_failures.inc();
                    tracing::debug!("batch of {n} ops conflicted (try {tries}), redoing: {e}");
                    // A little jitter, so two nodes that deadlocked do not
                    // meet again in the same order at once.
                    let pause = rand::random_range(0..(2_u64 << tries.min(6)));
                    std::thread::sleep(Duration::from_millis(pause));
                }
                Attempt::Conflict(e) => {
                    break Attempt::Failed(StoreError::Unavailable(format!(
                        "kept conflicting with other writers: {e}"
                    )));
                }
                other => break other,
            }
        };
        match outcome {
            Attempt::Committed(answers, staged, heads) => {
                self.metrics.record_commit(n, started.elapsed());
                if !self.conn.shared() {
                    self.heads.extend(heads);
                }
                let mut barriers = Vec::new();
                for (op, answer) in batch.into_iter().zip(answers) {
                    if matches!(op, Op::Barrier { .. }) {
                        barriers.push(op);
                    } else {
                        reply(op, answer);
                    }
                }
                // Staged presence goes no further: the hub has it from here
                // on, through the effects.
                self.live.publish(staged.effects);
                // Barriers last: everything before them is answered and
                // published.
                for b in barriers {
                    reply(b, Ok(Answer::Unit));
                }
            }
            Attempt::Failed(e) | Attempt::Conflict(e) => {
                tracing::error!("batch of {n} ops failed: {e}");
                self.metrics.commit_failures.inc();
                if e.is_unavailable() || matches!(e, StoreError::Postgres(_)) {
                    self.conn.reset();
                }
                for op in batch {
                    reply(op, Err(clone_err(&e)));
                }
            }
        }
    }

    fn prune(&mut self) {
        self.last_prune = Instant::now();
        let cutoff = now_ms() - i64::try_from(self.cfg.retention.as_millis()).unwrap_or(i64::MAX);
        let r = self.conn.db().and_then(|db| {
            let mut n = 0;
            for table in ["agent_events", "visitor_events", "page_views"] {
                n += db.execute(
                    &format!("DELETE FROM {table} WHERE at_ms < ?1"),
                    &args![cutoff],
                )?;
            }
            Ok(n)
        });
        match r {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} events older than retention"),
            Err(e) => tracing::warn!("pruning failed: {e}"),
        }
    }
}

/// One try at a batch: BEGIN, each op in its own savepoint (a failing op is
/// undone without losing the rest), the heads, COMMIT. Barriers answer
/// after everything before them; their slot is a plain `Unit`.
fn attempt(
    db: &dyn Db,
    batch: &[Op],
    live: &dyn Live,
    committed_heads: &HashMap<String, Seq>,
    trail_keep: u32,
) -> Attempt {
    if let Err(e) = sql::begin_write(db) {
        return end_failed(db, e);
    }
    if db.dialect() == Dialect::Postgres
        && let Err(e) = lock_in_order(db, batch)
    {
        return end_failed(db, e);
    }
    let mut staged = Staged::default();
    let mut answers: Vec<Result<Answer, StoreError>> = Vec::with_capacity(batch.len());
    let mut fatal: Option<StoreError> = None;
    for op in batch {
        if matches!(op, Op::Barrier { .. }) {
            answers.push(Ok(Answer::Unit));
            continue;
        }
        if let Some(e) = &fatal {
            answers.push(Err(clone_err(e)));
            continue;
        }
        if let Err(e) = db.batch("SAVEPOINT op") {
            return end_failed(db, e);
        }
        let mut op_staged = Staged::default();
        let rules = Rules::new(
            db,
            live,
            &mut op_staged,
            &staged,
            committed_heads,
            trail_keep,
        );
        match apply(rules, op) {
            Ok(a) => {
                if let Err(e) = db.batch("RELEASE op") {
                    return end_failed(db, e);
                }
                staged.absorb(op_staged);
                answers.push(Ok(a));
            }
            // Another node holds what this op needs, or the database went
            // away: the batch as a whole is redone or failed.
            Err(e @ (StoreError::Retry(_) | StoreError::Unavailable(_))) => {
                return end_failed(db, e);
            }
            Err(e) => {
                if let Err(rb) = db
                    .batch("ROLLBACK TO op")
                    .and_then(|()| db.batch("RELEASE op"))
                {
                    return end_failed(db, rb);
                }
                // A full disk fails the rest of the batch; what came before
                // is still committed if the commit gets through.
                if matches!(e, StoreError::Full(_)) {
                    fatal = Some(clone_err(&e));
                }
                answers.push(Err(e));
            }
        }
    }
    let heads = match finish_logs(db, &mut staged, committed_heads) {
        Ok(h) => h,
        Err(e) => return end_failed(db, e),
    };
    match db.batch("COMMIT") {
        Ok(()) => Attempt::Committed(answers, staged, heads),
        // A COMMIT that failed may or may not have applied (the connection
        // dropped while it ran): nothing is acked, and the clients' resends
        // are answered from the idempotency records if it did.
        Err(e) => end_failed(db, e),
    }
}

/// On a shared database, lock up front, in id order, the visitor and
/// conversation rows the batch's ops will lock anyway (each rule locks
/// what it decides on, see [`Rules::lock_row`]). Locked op by op, two
/// nodes' batches meeting the same chats in different orders (an agent's
/// replies through one node, the visitors' messages through another)
/// deadlocked, and PostgreSQL only breaks a deadlock after a second. In
/// one order on every node they wait for each other instead. A row an op
/// reaches that is not known here (a chat opened meanwhile) is still
/// locked by the op itself; a rare deadlock then is redone as before.
fn lock_in_order(db: &dyn Db, batch: &[Op]) -> Result<(), StoreError> {
    let mut visitors: Vec<&str> = Vec::new();
    let mut chats: Vec<ConversationId> = Vec::new();
    for op in batch {
        match op {
            Op::VisitorSend { visitor, .. }
            | Op::VisitorEndChat { visitor, .. }
            | Op::PageView { visitor, .. }
            | Op::Identify { visitor, .. }
            | Op::FireInvitation { visitor, .. }
            | Op::InvitationSeen { visitor, .. }
            | Op::Delivered { visitor, .. } => visitors.push(visitor),
            Op::AgentCommand { cmd, .. } => match &cmd.action {
                Action::Send { conversation, .. }
                | Action::Accept { conversation }
                | Action::Close { conversation }
                | Action::Transfer { conversation, .. }
                | Action::TransferToGroup { conversation, .. }
                | Action::Note { conversation, .. }
                | Action::Tag { conversation, .. } => chats.push(*conversation),
                Action::Invite { visitor, .. }
                | Action::Block { visitor, .. }
                | Action::Unblock { visitor } => visitors.push(visitor),
                // Canned replies and invitation rules lock their site's
                // row themselves.
                Action::SetPresence { .. }
                | Action::SaveCanned { .. }
                | Action::DeleteCanned { .. }
                | Action::SaveInviteRule { .. }
                | Action::DeleteInviteRule { .. }
                | Action::EnableInviteRule { .. } => {}
            },
            _ => {}
        }
    }
    if visitors.is_empty() && chats.is_empty() {
        return Ok(());
    }
    let visitors = serde_json::to_string(&visitors)
        .map_err(|e| StoreError::Corrupt(format!("visitor ids: {e}")))?;
    let chats =
        serde_json::to_string(&chats).map_err(|e| StoreError::Corrupt(format!("chat ids: {e}")))?;
    db.query_rows(
        "SELECT id FROM visitors WHERE id IN (SELECT json_array_elements_text(?1::text::json)) \
         ORDER BY id COLLATE \"C\" FOR UPDATE",
        &args![visitors.as_str()],
    )?;
    db.query_rows(
        "SELECT id FROM conversations \
         WHERE id IN (SELECT json_array_elements_text(?1::text::json)::bigint) \
            OR (state != 2 AND visitor_id IN (SELECT json_array_elements_text(?2::text::json))) \
         ORDER BY id FOR UPDATE",
        &args![chats, visitors],
    )?;
    Ok(())
}

/// Roll back after an error and say whether the batch may be redone.
fn end_failed(db: &dyn Db, e: StoreError) -> Attempt {
    // On SQLite a failed COMMIT leaves the transaction open; on PostgreSQL
    // an aborted one must still be ended. On a lost connection this fails
    // too, which changes nothing.
    let _ignored = db.batch("ROLLBACK");
    match e {
        StoreError::Retry(_) => Attempt::Conflict(e),
        e => Attempt::Failed(e),
    }
}

fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full(m) => StoreError::Full(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Retry(m) => StoreError::Retry(m.clone()),
        StoreError::Revoked { code, message } => StoreError::Revoked {
            code: *code,
            message: message.clone(),
        },
        other => StoreError::Corrupt(other.to_string()),
    }
}

/// Apply one op: dispatch to its rule in `rules/`. On error the caller
/// rolls back the op's savepoint and the op is answered with the error.
fn apply(mut rules: Rules<'_>, op: &Op) -> Result<Answer, StoreError> {
    match op {
        Op::AgentLogin { agent, device, .. } => {
            rules.agent_login(*agent, device).map(Answer::Login)
        }
        Op::AgentCommand {
            actor,
            device,
            cmd,
            attachment,
            ..
        } => rules
            .agent_command(actor, device, cmd, attachment.as_ref())
            .map(Answer::Command),
        Op::VisitorHello {
            site,
            visitor,
            ip,
            user_agent,
            page,
            group,
            lang,
            ..
        } => rules
            .visitor_hello(
                *site,
                visitor.clone(),
                ip,
                user_agent.clone(),
                page.clone(),
                group.as_deref(),
                lang.as_deref(),
            )
            .map(Answer::Hello),
        Op::VisitorSend {
            visitor,
            site,
            id,
            body,
            leave,
            page,
            attachment,
            ..
        } => rules
            .visitor_action(visitor, *id, |rules| {
                rules.visitor_post(
                    visitor,
                    *site,
                    *id,
                    VisitorText {
                        body,
                        attachment: attachment.as_ref(),
                    },
                    leave.clone(),
                    page.clone(),
                )
            })
            .map(Answer::Send),
        Op::VisitorEndChat { visitor, id, .. } => rules
            .visitor_action(visitor, *id, |rules| rules.visitor_end_chat(visitor, *id))
            .map(Answer::Send),
        Op::ReleaseChats { agent, reason, .. } => {
            rules.release_chats(*agent, *reason).map(|()| Answer::Unit)
        }
        Op::PageView { visitor, page } => rules.page_view(visitor, page).map(|()| Answer::None),
        Op::Identify {
            visitor,
            external_id,
            name,
            email,
            attrs,
            verified,
            ..
        } => rules
            .identify(
                visitor,
                external_id,
                name.clone(),
                email.clone(),
                attrs,
                *verified,
            )
            .map(Answer::Flag),
        Op::Delivered { visitor, up_to } => rules.delivered(visitor, *up_to).map(|()| Answer::None),
        Op::AssignQueued { site } => rules.assign_queued(*site, None).map(|()| Answer::None),
        Op::Regroup { site } => rules.regroup(*site).map(|()| Answer::None),
        Op::FireInvitation {
            site,
            visitor,
            rule,
            visit_started_ms,
            ..
        } => rules
            .fire_invitation(*site, visitor, *rule, *visit_started_ms, now_ms())
            .map(Answer::Invitation),
        Op::InvitationSeen {
            visitor,
            id,
            dismissed,
            ..
        } => rules
            .invitation_seen(visitor, *id, *dismissed, now_ms())
            .map(Answer::Invitation),
        Op::Barrier { .. } => Ok(Answer::Unit),
    }
}
