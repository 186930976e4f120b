//! The store's one SQL interface, so every chat rule and every query is
//! written once and runs on SQLite or PostgreSQL.
//!
//! - [`Value`]: an owned parameter or column value (null, integer, text,
//!   bytes): the four types the schema uses on both engines.
//! - [`Row`]: one result row, with typed getters that answer a wrong type
//!   with [`StoreError::Corrupt`] instead of panicking.
//! - [`Db`]: `execute`, `query_rows`, `query_opt` and plain statements
//!   (`BEGIN`, `SAVEPOINT`), implemented for a `rusqlite::Connection` (with
//!   SQLite's statement cache) and for [`PgConn`].
//!
//! The SQL itself is the common subset: `?1`-style placeholders (rewritten
//! to `$1` for PostgreSQL once per statement, and cached with the prepared
//! statement), `ON CONFLICT ... DO NOTHING/UPDATE`, `RETURNING id`, integer
//! flags compared with `= 1`, no engine-only functions.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;

/// A parameter or a column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_ref().map_or(Value::Null, |s| Value::Text(s.clone()))
    }
}

/// Parameters for a statement: `args![a, b]` is `[Value::from(a), ...]`.
macro_rules! args {
    () => { [] as [$crate::store::sql::Value; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::store::sql::Value::from($v)),+] };
}
pub(crate) use args;

/// A column's value as a Rust type; a mismatch is a corrupt record.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Ids, seqs and counts are stored signed; a negative one (which the store
/// never writes) reads as 0, as it always has.
impl FromValue for u64 {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| u64::try_from(i).unwrap_or(0))
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Option<Self> {
        i64::from_value(v).map(|i| i != 0)
    }
}

impl FromValue for String {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Blob(b) => Some(b.clone()),
            // SQLite keeps whatever was bound; text where bytes are
            // expected is still the same bytes.
            Value::Text(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(Vec<Value>);

impl Row {
    pub fn new(values: Vec<Value>) -> Self {
        Self(values)
    }

    /// Column `i` as `T`, or [`StoreError::Corrupt`] if it is missing or of
    /// another type.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, StoreError> {
        let v = self
            .0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("result has no column {i}")))?;
        T::from_value(v).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column {i} holds {v:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection the store's SQL runs on. Methods take `&self` so that the
/// rules and reads can pass one connection around freely; a statement's
/// rows are read in full before it returns, so no call holds the
/// connection past its own return.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Run a statement; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Every row of a query.
    fn query_rows(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;
    /// The first row of a query, if any.
    fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError>;
    /// One statement without parameters or rows (`BEGIN`, `SAVEPOINT op`).
    fn batch(&self, sql: &str) -> Result<(), StoreError>;

    /// The first row of a query, which must exist.
    fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from: {sql}")))
    }
}

impl std::fmt::Debug for dyn Db + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({:?})", self.dialect())
    }
}

/// Open a transaction that will write. On SQLite a plain BEGIN reads
/// first and asks for the write lock at its first write; if another
/// connection committed in between, that upgrade fails at once with
/// "database is locked", whatever the busy timeout. That happened both
/// ways: a CLI `group members` failed while the server ran, and the
/// server's writer refused a visitor's message while the CLI reset a
/// password. IMMEDIATE takes the write lock up front, waiting its turn.
pub fn begin_write(db: &dyn Db) -> Result<(), StoreError> {
    db.batch(match db.dialect() {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    })
}

/// Run `f` in a transaction: committed if it returns `Ok`, rolled back
/// otherwise.
pub fn transaction<T, E: From<StoreError>>(
    db: &dyn Db,
    f: impl FnOnce(&dyn Db) -> Result<T, E>,
) -> Result<T, E> {
    begin_write(db)?;
    match f(db) {
        Ok(v) => {
            if let Err(e) = db.batch("COMMIT") {
                // A failed COMMIT leaves SQLite inside the transaction.
                let _ignored = db.batch("ROLLBACK");
                return Err(e.into());
            }
            Ok(v)
        }
        Err(e) => {
            let _ignored = db.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Run `f`'s reads against one snapshot of the database, so that a log
/// head and the contents read with it agree. SQLite's read transaction is
/// one snapshot already; PostgreSQL's default (read committed) takes a new
/// one per statement, so it asks for repeatable read.
pub fn read_snapshot<T>(
    db: &dyn Db,
    f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    db.batch(match db.dialect() {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    })?;
    let r = f(db);
    let _ignored = db.batch("COMMIT");
    r
}

// ---- SQLite ----

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn sqlite_value(v: ValueRef<'_>) -> Result<Value, StoreError> {
    Ok(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Text(t) => Value::Text(
            std::str::from_utf8(t)
                .map_err(|e| StoreError::Corrupt(format!("text column is not UTF-8: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        ValueRef::Real(r) => {
            return Err(StoreError::Corrupt(format!(
                "unexpected real value {r} in a column"
            )));
        }
    })
}

fn sqlite_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
    limit: Option<usize>,
) -> Result<Vec<Row>, StoreError> {
    let mut st = conn.prepare_cached(sql).map_err(StoreError::from_sqlite)?;
    let n = st.column_count();
    let mut rows = st
        .query(rusqlite::params_from_iter(params))
        .map_err(StoreError::from_sqlite)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(StoreError::from_sqlite)? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(sqlite_value(r.get_ref(i)?)?);
        }
        out.push(Row(vals));
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(out)
}

impl Db for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let n = self
            .prepare_cached(sql)
            .and_then(|mut st| st.execute(rusqlite::params_from_iter(params)))
            .map_err(StoreError::from_sqlite)?;
        Ok(n as u64)
    }

    fn query_rows(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        sqlite_rows(self, sql, params, None)
    }

    fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        Ok(sqlite_rows(self, sql, params, Some(1))?.pop())
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        // Cached like any statement: the writer opens a savepoint per op.
        self.prepare_cached(sql)
            .and_then(|mut st| st.execute([]))
            .map(drop)
            .map_err(StoreError::from_sqlite)
    }
}

// ---- PostgreSQL ----

/// Rewrite `?N` placeholders as `$N`, leaving quoted text alone.
pub fn pg_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) => out.push('$'),
            None => out.push(c),
        }
    }
    out
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // The engine decides each parameter's type from the statement, so
        // one integer may be asked for as a bigint, an int or a boolean.
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("cannot bind an integer as {ty}").into()),
            },
            Value::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Value::Blob(b) if <&[u8] as ToSql>::accepts(ty) => b.as_slice().to_sql(ty, out),
            Value::Text(_) => Err(format!("cannot bind text as {ty}").into()),
            Value::Blob(_) => Err(format!("cannot bind bytes as {ty}").into()),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value, StoreError> {
    let ty = row.columns()[i].type_().clone();
    let get_err = |e: postgres::Error| StoreError::Corrupt(format!("column {i}: {e}"));
    let v = match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(get_err)?
            .map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(get_err)?
            .map(|v| Value::Int(i64::from(v))),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(get_err)?
            .map(|v| Value::Int(i64::from(v))),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(get_err)?
            .map(|v| Value::Int(i64::from(v))),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(get_err)?
            .map(Value::Blob),
        ref t if <String as postgres::types::FromSql>::accepts(t) => row
            .try_get::<_, Option<String>>(i)
            .map_err(get_err)?
            .map(Value::Text),
        t => {
            return Err(StoreError::Corrupt(format!(
                "column {i} has type {t}, which the store does not use"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// How to reach PostgreSQL: the parsed `postgres://` URL, with timeouts so
/// that a database that is gone fails a request in seconds instead of
/// hanging the writer.
#[derive(Clone)]
pub struct PgTarget {
    config: std::sync::Arc<postgres::Config>,
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PgTarget {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("bad PostgreSQL URL: {e}")))?;
        config
            .connect_timeout(Duration::from_secs(3))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("holdfast");
        if config.get_password().is_none()
            && let Ok(pw) = std::env::var("PGPASSWORD")
        {
            config.password(pw);
        }
        // Never log a password: show user, hosts and database only.
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                postgres::config::Host::Tcp(s) => s.clone(),
                #[cfg(unix)]
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let shown = format!(
            "postgres://{}@{}/{}",
            config.get_user().unwrap_or(""),
            hosts.join(","),
            config.get_dbname().unwrap_or("")
        );
        Ok(Self {
            config: std::sync::Arc::new(config),
            shown,
        })
    }

    /// Open a connection. Blocking: never call it on an async worker thread.
    pub fn connect(&self) -> Result<PgConn, StoreError> {
        let client = self
            .config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to {self:?}: {e}")))?;
        Ok(PgConn {
            client: RefCell::new(Some(Box::new(client))),
            stmts: RefCell::new(HashMap::new()),
        })
    }
}

/// One PostgreSQL connection with its prepared statements.
///
/// The synchronous client runs a small runtime of its own, so it must be
/// used (and dropped) off the async worker threads: the writer thread, the
/// blocking pool, or the CLI.
pub struct PgConn {
    client: RefCell<Option<Box<postgres::Client>>>,
    /// Prepared statements by the SQL as the store writes it.
    stmts: RefCell<HashMap<String, postgres::Statement>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn")
            .field("statements", &self.stmts.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the client runs its runtime, which must not happen on an
        // async worker thread (a pool dropped with the server is dropped
        // there); hand it to a plain thread then.
        if let Some(client) = self.client.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let spawned = std::thread::Builder::new()
                .name("holdfast-pg-close".into())
                .spawn(move || drop(client));
            if let Err(e) = spawned {
                tracing::warn!("cannot close a PostgreSQL connection cleanly: {e}");
            }
        }
    }
}

impl PgConn {
    /// Whether the connection is gone (the server restarted, the network
    /// dropped it): it must be replaced, not reused.
    pub fn is_broken(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(|c| c.is_closed())
    }

    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self.client.borrow_mut();
        let client = slot
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the database connection is closed".into()))?;
        f(client).map_err(StoreError::from_pg)
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(st) = self.stmts.borrow().get(sql) {
            return Ok(st.clone());
        }
        let text = pg_placeholders(sql);
        let st = self.with_client(|c| c.prepare(&text))?;
        self.stmts.borrow_mut().insert(sql.to_owned(), st.clone());
        Ok(st)
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<postgres::Row>, StoreError> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.with_client(|c| c.query(&st, &refs))
    }
}

fn pg_row(row: &postgres::Row) -> Result<Row, StoreError> {
    (0..row.len())
        .map(|i| pg_value(row, i))
        .collect::<Result<_, _>>()
        .map(Row)
}

impl Db for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.with_client(|c| c.execute(&st, &refs))
    }

    fn query_rows(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        self.query(sql, params)?.iter().map(pg_row).collect()
    }

    fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, StoreError> {
        self.query(sql, params)?.first().map(pg_row).transpose()
    }

    fn batch(&self, sql: &str) -> Result<(), StoreError> {
        self.with_client(|c| c.batch_execute(sql))
    }
}

impl StoreError {
    /// Classify a PostgreSQL error. What the clients must hear as
    /// "unavailable, retry" (the database restarting, a lost connection, a
    /// full disk) is told apart from a conflict the writer retries itself
    /// (deadlock, serialization failure) and from everything else.
    pub fn from_pg(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        if let Some(code) = e.code() {
            let class = &code.code()[..2];
            if *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
            {
                return StoreError::Retry(e.to_string());
            }
            if *code == SqlState::DISK_FULL {
                return StoreError::Full(e.to_string());
            }
            // 08: connection exceptions; 53: insufficient resources; 57P:
            // the server shutting down, crashed or starting.
            if class == "08" || class == "53" || code.code().starts_with("57P") {
                return StoreError::Unavailable(e.to_string());
            }
            return StoreError::Postgres(e);
        }
        // No SQLSTATE: the client's own failure. A closed connection or an
        // I/O error means the server is out of reach.
        let io = e
            .source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
        if e.is_closed() || io {
            return StoreError::Unavailable(e.to_string());
        }
        StoreError::Postgres(e)
    }

    /// Whether the error says the database is unreachable or cannot take
    /// writes now (clients hear "unavailable, retry").
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An admin change (the CLI's) reads, then writes, while the server's
    /// writer commits on its own connection: it must wait its turn rather
    /// than fail with "database is locked".
    #[test]
    fn a_transaction_that_reads_then_writes_survives_a_writer_between() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let c = crate::store::open_connection(dir.path()).unwrap();
            c.execute_batch("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
                .unwrap();
            c
        };
        let admin = open();
        let writer = open();
        let result = transaction(&admin as &dyn Db, |db| {
            db.query_rows("SELECT COUNT(*) FROM t", &args![])?;
            // The server's writer commits while the admin's change runs.
            let other = std::thread::spawn(move || {
                writer
                    .execute("INSERT INTO t (v) VALUES (1)", [])
                    .map(|_| ())
            });
            std::thread::sleep(std::time::Duration::from_millis(200));
            db.execute("INSERT INTO t (v) VALUES (2)", &args![])?;
            Ok::<_, StoreError>(other)
        });
        let other = result.unwrap_or_else(|e| panic!("the admin change failed: {e:?}"));
        // The other writer waited for the commit, then wrote too.
        other.join().unwrap().unwrap();
        let n: i64 = open()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn placeholders_are_rewritten_outside_quotes_only() {
        assert_eq!(
            pg_placeholders("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }

    #[test]
    fn a_wrong_type_is_corrupt_not_a_panic() {
        let row = Row::new(vec![Value::Text("x".into()), Value::Null, Value::Int(-3)]);
        assert!(matches!(row.get::<i64>(0), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.get::<String>(1), Err(StoreError::Corrupt(_))));
        assert!(matches!(row.get::<i64>(7), Err(StoreError::Corrupt(_))));
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        assert_eq!(row.get::<u64>(2).unwrap(), 0);
        assert_eq!(row.get::<String>(0).unwrap(), "x");
    }

    #[test]
    fn sqlite_round_trips_every_value_type() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db: &dyn Db = &conn;
        db.batch("CREATE TABLE t (i INTEGER, s TEXT, b BLOB, n TEXT)")
            .unwrap();
        let n = db
            .execute(
                "INSERT INTO t (i, s, b, n) VALUES (?1, ?2, ?3, ?4)",
                &args![7_i64, "hé", &b"\x00\x01"[..], None::<String>],
            )
            .unwrap();
        assert_eq!(n, 1);
        let r = db
            .query_one("SELECT i, s, b, n FROM t WHERE i = ?1", &args![7_i64])
            .unwrap();
        assert_eq!(r.get::<i64>(0).unwrap(), 7);
        assert_eq!(r.get::<String>(1).unwrap(), "hé");
        assert_eq!(r.get::<Vec<u8>>(2).unwrap(), vec![0, 1]);
        assert_eq!(r.get::<Option<String>>(3).unwrap(), None);
        assert!(
            db.query_opt("SELECT i FROM t WHERE i = 8", &args![])
                .unwrap()
                .is_none()
        );
    }
}
