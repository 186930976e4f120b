//! PostgreSQL's schema and migrations.
//!
//! The steps are the files in `server/migrations/postgres/` (see
//! [`super::migrations`]): the same tables as SQLite's in PostgreSQL's
//! types (BIGINT for every integer, BIGSERIAL for generated ids, BYTEA for
//! bytes; integer flags stay integers so that the store's SQL is the same
//! on both engines). Each applied step is a row of `schema_migrations`
//! with the file's checksum; a file that changed after it was applied is
//! refused, both by `migrate` and by a starting node.
//!
//! Only [`migrate`] changes the schema (`holdfast-server migrate`, or
//! `serve --migrate`); a node started without it checks with
//! [`check_current`] and refuses to run on an older schema. Several nodes
//! may migrate at the same moment, so the whole upgrade runs in one
//! transaction holding an advisory lock: the second waits, then finds the
//! schema current and does nothing.

use super::StoreError;
use super::migrations::{Migration, POSTGRES};
use super::schema::MigrateError;
use super::sql::{Db, args, transaction};

const MIGRATIONS: &[Migration] = POSTGRES;

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Any fixed number: the advisory lock migrations take ("hfmigr").
const MIGRATE_LOCK: i64 = 0x6866_6d69_6772;

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_ms BIGINT NOT NULL
)";

fn table_exists(db: &dyn Db, name: &str) -> Result<bool, StoreError> {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
         WHERE schemaname = current_schema() AND tablename = ?1::text)",
        &args![name],
    )?
    .get(0)
}

/// The applied steps as recorded, checked against this build's files; the
/// schema's version.
fn verified_version(db: &dyn Db) -> Result<usize, StoreError> {
    if !table_exists(db, "schema_migrations")? {
        return Ok(0);
    }
    let rows = db.query_rows(
        "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
        &args![],
    )?;
    for (at, row) in rows.iter().enumerate() {
        let version: i64 = row.get(0)?;
        let version = usize::try_from(version).unwrap_or(0);
        if version != at + 1 {
            return Err(MigrateError::Gap {
                found: version,
                at: at + 1,
            }
            .into());
        }
        let Some(m) = MIGRATIONS.get(at) else {
            return Err(MigrateError::TooNew {
                found: rows.len(),
                supported: SCHEMA_VERSION,
            }
            .into());
        };
        let recorded: String = row.get(2)?;
        let embedded = m.checksum();
        if recorded != embedded {
            let name: String = row.get(1)?;
            return Err(MigrateError::ChecksumMismatch {
                name,
                recorded,
                embedded,
            }
            .into());
        }
    }
    Ok(rows.len())
}

/// A database migrated before the steps were files kept one number in
/// `schema_version`; its steps were this build's first files, so they are
/// recorded with these files' checksums, once.
fn adopt_version_table(db: &dyn Db) -> Result<(), StoreError> {
    if !table_exists(db, "schema_version")? {
        return Ok(());
    }
    let old: i64 = db
        .query_opt("SELECT version FROM schema_version", &args![])?
        .map(|r| r.get(0))
        .transpose()?
        .unwrap_or(0);
    let old = usize::try_from(old).unwrap_or(0);
    if old > SCHEMA_VERSION {
        return Err(MigrateError::TooNew {
            found: old,
            supported: SCHEMA_VERSION,
        }
        .into());
    }
    for m in &MIGRATIONS[..old] {
        record(db, m)?;
    }
    db.batch("DROP TABLE schema_version")
}

fn record(db: &dyn Db, m: &Migration) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_ms) VALUES (?1, ?2, ?3, ?4)",
        &args![
            i64::try_from(m.version).unwrap_or(i64::MAX),
            m.name,
            m.checksum(),
            super::now_ms()
        ],
    )?;
    Ok(())
}

/// Bring the schema up to date; its version. Safe to run from several
/// nodes at once.
pub fn migrate(db: &dyn Db) -> Result<usize, StoreError> {
    transaction(db, |db| {
        db.execute("SELECT pg_advisory_xact_lock(?1)", &args![MIGRATE_LOCK])?;
        db.batch(LEDGER)?;
        adopt_version_table(db)?;
        let current = verified_version(db)?;
        for m in MIGRATIONS.iter().skip(current) {
            db.batch(m.sql)?;
            record(db, m)?;
        }
        Ok(SCHEMA_VERSION)
    })
}

/// Whether this build can run on the schema as it is, without changing it:
/// every applied step matches this build's file and none is missing.
pub fn check_current(db: &dyn Db) -> Result<(), StoreError> {
    // A schema recorded the old way (`schema_version` only) counts as 0
    // here: `migrate` adopts it.
    let found = verified_version(db)?;
    if found < SCHEMA_VERSION {
        return Err(MigrateError::Behind {
            found,
            needed: SCHEMA_VERSION,
        }
        .into());
    }
    Ok(())
}
