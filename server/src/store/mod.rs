//! Storage: one writer thread doing group commit, and a small pool of read
//! connections, on SQLite (the default) or PostgreSQL (several nodes).
//!
//! - [`sql`]: the one SQL interface both engines implement, so each rule
//!   and query below is written once.
//! - [`migrations`]: the schema's steps, one SQL file each, embedded;
//!   [`schema`] runs SQLite's (`user_version`), [`schema_pg`] PostgreSQL's
//!   (checksummed in a table, under a lock).
//! - [`writer`]: the single writer thread. Every mutation is an [`Op`]; the
//!   thread drains its queue, applies the whole batch in one transaction,
//!   commits (one fsync for the batch), and only then replies to each op and
//!   publishes its effects. Nothing is acked or delivered before it is
//!   durable. Its own concerns only: queue, batching, savepoints, commit,
//!   checkpoints, pruning, a full disk.
//! - `rules` (private): the chat rules the writer applies to each op, one
//!   file per kind of operation (send, accept, transfer, identify, ...),
//!   with the shared helpers and the idempotency check in `rules/mod.rs`.
//! - [`effect`]: what a committed batch asks of the hub ([`effect::Effect`]),
//!   carrying the data, so the hub never reads back what was just written.
//! - [`live`]: what the store needs from the hub ([`Availability`],
//!   [`Publish`]), declared here so the store never imports the hub.
//! - [`reads`]: queries for logins, replay, snapshots and history.
//! - [`presence_pg`]: presence's PostgreSQL copy, read while the bus is
//!   down.

pub mod effect;
pub mod live;
pub mod migrations;
pub mod presence_pg;
pub mod reads;
mod rules;
pub mod schema;
pub mod schema_pg;
pub mod sql;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use live::{Availability, Publish};
pub use sql::{Db, PgConn, PgTarget};
pub use writer::{Op, WriterConfig, WriterHandle};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage is full: {0}")]
    Full(String),
    /// The database cannot be reached or is restarting: nothing was
    /// applied, and the client should retry.
    #[error("storage unavailable, retry: {0}")]
    Unavailable(String),
    /// Another node's transaction conflicted with this one (deadlock,
    /// serialization failure); the writer redoes the whole batch.
    #[error("storage conflict, retry: {0}")]
    Retry(String),
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage error: {0}")]
    Postgres(postgres::Error),
    #[error("storage settings: {0}")]
    Config(String),
    #[error(transparent)]
    Migrate(#[from] schema::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The acting agent's session no longer has the right to act (disabled,
    /// or opened before a password change). Nothing was applied.
    #[error("{message}")]
    Revoked {
        code: holdfast_protocol::error::ErrorCode,
        message: String,
    },
}

impl StoreError {
    /// Classify a SQLite error: a full disk is an expected, recoverable state
    /// that clients must hear about as "unavailable, retry".
    pub fn from_sqlite(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && matches!(f.code, rusqlite::ErrorCode::DiskFull)
        {
            return StoreError::Full(e.to_string());
        }
        StoreError::Sqlite(e)
    }
}

pub const DB_FILE: &str = "holdfast.db";

/// Where the store lives: SQLite in the data dir (the default, one node),
/// or a PostgreSQL database that any number of nodes share.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

impl Database {
    /// `url` is a `postgres://` URL, or `None` for SQLite in `data_dir`.
    pub fn new(url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        match url {
            None => Ok(Database::Sqlite(data_dir.to_path_buf())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Database::Postgres(PgTarget::parse(u)?))
            }
            Some(_) => Err(StoreError::Config(
                "the database must be a postgres:// URL (without one, SQLite in the data dir is used)"
                    .into(),
            )),
        }
    }

    /// Open a connection, creating and migrating the schema if needed:
    /// what `migrate` (and `serve --migrate`) do.
    /// Blocking (PostgreSQL's client too): call it off the async workers.
    pub fn open(&self) -> Result<Conn, StoreError> {
        match self {
            Database::Sqlite(dir) => open_connection(dir).map(Conn::Sqlite),
            Database::Postgres(t) => {
                let c = t.connect()?;
                schema_pg::migrate(&c)?;
                Ok(Conn::Postgres(c))
            }
        }
    }

    /// Open a connection to a schema that must already be current: on
    /// PostgreSQL, a schema that is behind (or whose applied files
    /// changed) is an error naming `migrate`, since the schema is shared
    /// and only an explicit `migrate` changes it. SQLite is one server's
    /// own file and still migrates here, as it always has.
    pub fn open_current(&self) -> Result<Conn, StoreError> {
        match self {
            Database::Sqlite(_) => self.open(),
            Database::Postgres(t) => {
                let c = t.connect()?;
                schema_pg::check_current(&c)?;
                Ok(Conn::Postgres(c))
            }
        }
    }
}

/// An open connection of either engine.
#[derive(Debug)]
pub enum Conn {
    Sqlite(Connection),
    Postgres(PgConn),
}

impl Conn {
    pub fn db(&self) -> &dyn Db {
        match self {
            Conn::Sqlite(c) => c,
            Conn::Postgres(c) => c,
        }
    }
}

/// Open (creating and migrating if needed) the database in `dir`.
pub fn open_connection(dir: &Path) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut conn = Connection::open(dir.join(DB_FILE))?;
    schema::configure(&conn)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Each pooled SQLite reader's page cache, in KiB, instead of SQLite's
/// 2 MB default. With 15,000 visitors SQLite held 7.6 MB for a 5.7 MB
/// database: the writer's 8 MB cache can hold all of it, and each of up to
/// eight pooled readers could keep another 2 MB of the same pages, read as
/// the visitors' hellos look up their rows. A reader that misses reads the
/// page from the OS's cache; reads are off the message path.
const READ_CACHE_KIB: i64 = 256;

/// How many PostgreSQL connections one node's reads may hold at once.
const PG_READ_CONNECTIONS: usize = 8;

/// A pool of read connections for queries that must not queue behind the
/// writer: read-only SQLite connections, or PostgreSQL clients.
#[derive(Clone, Debug)]
pub struct ReadPool {
    db: Database,
    idle: Arc<Mutex<Vec<Conn>>>,
    /// PostgreSQL only: caps the connections in use, so a burst of reads
    /// waits here instead of exhausting the server's connection slots.
    permits: Option<Arc<tokio::sync::Semaphore>>,
    /// PostgreSQL only: after a failed connect, reads fail at once until
    /// then, instead of each waiting out a connect timeout.
    retry_at: Arc<Mutex<Option<std::time::Instant>>>,
}

impl ReadPool {
    /// SQLite in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self::for_database(&Database::Sqlite(dir.to_path_buf()))
    }

    pub fn for_database(db: &Database) -> Self {
        let permits = match db {
            Database::Sqlite(_) => None,
            Database::Postgres(_) => {
                Some(Arc::new(tokio::sync::Semaphore::new(PG_READ_CONNECTIONS)))
            }
        };
        Self {
            db: db.clone(),
            idle: Arc::new(Mutex::new(Vec::new())),
            permits,
            retry_at: Arc::new(Mutex::new(None)),
        }
    }

    fn take(&self) -> Result<Conn, StoreError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        match &self.db {
            Database::Sqlite(dir) => {
                let conn = Connection::open_with_flags(
                    dir.join(DB_FILE),
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                conn.pragma_update(None, "cache_size", -READ_CACHE_KIB)?;
                Ok(Conn::Sqlite(conn))
            }
            Database::Postgres(t) => {
                let now = std::time::Instant::now();
                if let Ok(at) = self.retry_at.lock()
                    && at.is_some_and(|at| now < at)
                {
                    return Err(StoreError::Unavailable(format!(
                        "{t:?} is unreachable; retrying shortly"
                    )));
                }
                let c = t.connect();
                if let Ok(mut at) = self.retry_at.lock() {
                    *at = c
                        .is_err()
                        .then(|| now + std::time::Duration::from_millis(250));
                }
                c.map(Conn::Postgres)
            }
        }
    }

    fn give(&self, conn: Conn) {
        // A connection the database dropped (a restart) is not reused.
        if let Conn::Postgres(c) = &conn
            && c.is_broken()
        {
            return;
        }
        if let Ok(mut v) = self.idle.lock()
            && v.len() < 8
        {
            v.push(conn);
        }
    }

    /// Run `f` on a read connection on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Db) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = match &self.permits {
            Some(p) => Some(
                p.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| StoreError::WriterGone)?,
            ),
            None => None,
        };
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let out = pool.run_blocking(f);
            drop(permit);
            out
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Run `f` synchronously (CLI and tests; never on an async worker with
    /// PostgreSQL).
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let out = f(conn.db());
        self.give(conn);
        out
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
