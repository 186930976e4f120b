//! SQLite storage: one writer thread doing group commit, and a small pool of
//! read connections.
//!
//! - [`schema`]: tables and `user_version` migrations.
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

pub mod effect;
pub mod live;
pub mod reads;
mod rules;
pub mod schema;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use live::{Availability, Publish};
pub use writer::{Op, WriterConfig, WriterHandle};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage is full: {0}")]
    Full(String),
    #[error("storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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

/// A pool of read-only connections for queries that must not queue behind the
/// writer.
#[derive(Clone, Debug)]
pub struct ReadPool {
    dir: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl ReadPool {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().ok().and_then(|mut v| v.pop()) {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            self.dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    fn give(&self, conn: Connection) {
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
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let out = f(&conn);
            pool.give(conn);
            out
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// Run `f` synchronously (CLI and tests).
    pub fn run_blocking<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let out = f(&conn);
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
