//! SQLite's schema and migrations, versioned by `PRAGMA user_version`.
//!
//! The steps are the files in `server/migrations/sqlite/` (see
//! [`super::migrations`]). Unlike PostgreSQL's, they record no checksums:
//! a SQLite database belongs to one server, which migrates it on start
//! with the very files it embeds, and no other binary shares it; an older
//! server still reads `user_version` and refuses a newer schema, as it
//! always has.

use rusqlite::Connection;

use super::migrations::{Migration, SQLITE};

const MIGRATIONS: &[Migration] = SQLITE;

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "database schema version {found} is newer than this server understands ({supported}); upgrade the server"
    )]
    TooNew { found: usize, supported: usize },
    /// PostgreSQL without `--migrate`: only `migrate` changes a shared
    /// schema, so a node never upgrades it under the others' feet.
    #[error(
        "the database schema is at version {found} and this server needs version {needed}: \
         run `holdfast-server migrate --database URL` first (or start with `holdfast-server serve --migrate`)"
    )]
    Behind { found: usize, needed: usize },
    #[error(
        "migration {name} was applied with checksum {recorded}, but this server's copy has {embedded}: \
         an applied migration file must never change (restore it, and put the change in a new file)"
    )]
    ChecksumMismatch {
        name: String,
        recorded: String,
        embedded: String,
    },
    #[error(
        "the recorded migrations are not 1, 2, 3, ... in order (found {found} at position {at})"
    )]
    Gap { found: usize, at: usize },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Bring the schema up to date, one transaction per step.
pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > SCHEMA_VERSION {
        return Err(MigrateError::TooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for m in MIGRATIONS.iter().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(m.version).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Pragmas for every connection: WAL so readers never block the writer, and
/// FULL sync so a commit survives power loss before we ack it.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First: the pragmas below read the database too, and a connection
    // opened while the writer is busy must wait for it, not fail at once.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint (statement) journals stay in memory instead of spilling to
    // temp files: the writer opens one savepoint per op.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Plan each statement once. Without this, SQLite (built with STAT4)
    // re-prepares some cached statements on every new binding, which was
    // a sixth of the writer's CPU in the load profile (BENCHMARKS.md).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    // rusqlite keeps 16 prepared statements by default, fewer than one
    // visitor message's op runs through: the cache thrashed, and every
    // message re-parsed and re-planned about ten statements, over half of
    // the server's instructions per message (BENCHMARKS.md section 11).
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Prepared statements kept per connection: room for every statement the
/// writer's rules use, with margin. Each costs a few KiB once prepared, and
/// a connection only holds the ones it has run.
pub const STATEMENT_CACHE: usize = 512;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn indexes(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'conversations'")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_version_1_database_upgrades_in_place_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // What a server from before migration 2 left behind.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO conversations (site_id, visitor_id, state, assigned_agent, opened_ms, updated_ms) \
                 VALUES (1, 'v', 1, 7, 0, 0)",
                [],
            )
            .unwrap();
            assert!(!indexes(&conn).contains(&"conversations_agent_state".to_string()));
        }
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(usize::try_from(v).unwrap(), SCHEMA_VERSION);
        assert!(indexes(&conn).contains(&"conversations_agent_state".to_string()));
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM conversations WHERE assigned_agent = 7 AND state = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        // The assignment count uses the index instead of scanning.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM conversations WHERE assigned_agent = ?1 AND state = 1",
                [7],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("conversations_agent_state"), "{plan}");
        // Running it again is a no-op.
        migrate(&mut conn).unwrap();
    }

    #[test]
    fn a_newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(
            None,
            "user_version",
            i64::try_from(SCHEMA_VERSION + 1).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            migrate(&mut conn),
            Err(MigrateError::TooNew { .. })
        ));
    }
}
