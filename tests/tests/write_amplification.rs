//! What a visitor message costs the store, on both backends (issue 19's
//! write amplification): rows written per table and bytes that reach the
//! disk (SQLite: the server process's block writes; PostgreSQL: WAL bytes),
//! for a chat an agent owns and for one waiting in the queue, on a site of
//! ten agents. It prints figures and asserts only that the messages were
//! stored: the counts are a benchmark's, in BENCHMARKS.md.
//!
//! Each message is sent and acked before the next, so each is a commit of
//! its own: the worst case for bytes, and the per-batch rows (`log_heads`)
//! are per message. The rows are counted by triggers added for a second
//! round, after the bytes were measured without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use holdfast_protocol::agent::{ConversationState, Presence, Role};
use holdfast_tests::core_agent::{CoreAgent, fast_config};
use holdfast_tests::server::{Backend, LOOPBACK_LOAD_TOML, PASSWORD, ServerProcess, seed_on};
use holdfast_tests::visitor::WsVisitor;

/// Messages per measured round.
const BYTES_ROUND: usize = 200;
const ROWS_ROUND: usize = 50;
/// Agents of the site, counting the two the seed adds.
const AGENTS: usize = 10;

/// The store under the server, read from outside it.
enum Store<'a> {
    Sqlite(&'a Path),
    Postgres(String),
}

impl Store<'_> {
    fn sql(&self, sql: &str) -> String {
        match self {
            Store::Sqlite(dir) => {
                let c =
                    rusqlite::Connection::open(dir.join(holdfast_server::store::DB_FILE)).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                // One statement, one value (or none).
                let v: Option<rusqlite::types::Value> = c.query_row(sql, [], |r| r.get(0)).unwrap();
                match v {
                    Some(rusqlite::types::Value::Integer(i)) => i.to_string(),
                    Some(rusqlite::types::Value::Real(f)) => f.to_string(),
                    Some(rusqlite::types::Value::Text(t)) => t,
                    _ => String::new(),
                }
            }
            Store::Postgres(db) => holdfast_tests::pg::shared().psql_in(db, sql),
        }
    }

    fn batch(&self, sql: &str) {
        match self {
            Store::Sqlite(dir) => {
                let c =
                    rusqlite::Connection::open(dir.join(holdfast_server::store::DB_FILE)).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Store::Postgres(db) => {
                holdfast_tests::pg::shared().psql_in(db, sql);
            }
        }
    }

    fn tables(&self) -> Vec<String> {
        let q = match self {
            Store::Sqlite(_) => {
                "SELECT group_concat(name, ',') FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> 'amp_counts'"
            }
            Store::Postgres(_) => {
                "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public' \
                 AND tablename <> 'amp_counts'"
            }
        };
        self.sql(q).split(',').map(str::to_owned).collect()
    }

    /// A trigger on every table counts each row inserted, updated or
    /// deleted into `amp_counts`.
    fn count_rows(&self) {
        let tables = self.tables();
        let mut sql = String::new();
        match self {
            Store::Sqlite(_) => {
                sql.push_str(
                    "CREATE TABLE amp_counts (tbl TEXT NOT NULL, op TEXT NOT NULL, n INTEGER NOT NULL, \
                     PRIMARY KEY (tbl, op));",
                );
                for t in &tables {
                    for op in ["INSERT", "UPDATE", "DELETE"] {
                        sql.push_str(&format!(
                            "CREATE TRIGGER amp_{t}_{op} AFTER {op} ON {t} BEGIN \
                             INSERT INTO amp_counts VALUES ('{t}', '{op}', 1) \
                             ON CONFLICT (tbl, op) DO UPDATE SET n = n + 1; END;"
                        ));
                    }
                }
            }
            Store::Postgres(_) => {
                sql.push_str(
                    "CREATE TABLE amp_counts (tbl TEXT NOT NULL, op TEXT NOT NULL, n BIGINT NOT NULL, \
                     PRIMARY KEY (tbl, op)); \
                     CREATE FUNCTION amp_count() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     INSERT INTO amp_counts VALUES (TG_TABLE_NAME, TG_OP, 1) \
                     ON CONFLICT (tbl, op) DO UPDATE SET n = amp_counts.n + 1; RETURN NULL; END $$;",
                );
                for t in &tables {
                    sql.push_str(&format!(
                        "CREATE TRIGGER amp_{t} AFTER INSERT OR UPDATE OR DELETE ON {t} \
                         FOR EACH ROW EXECUTE FUNCTION amp_count();"
                    ));
                }
            }
        }
        self.batch(&sql);
    }

    fn counts(&self) -> BTreeMap<(String, String), u64> {
        let q = match self {
            Store::Sqlite(_) => {
                "SELECT group_concat(tbl || ':' || op || ':' || n, ',') FROM amp_counts"
            }
            Store::Postgres(_) => {
                "SELECT string_agg(tbl || ':' || op || ':' || n, ',') FROM amp_counts"
            }
        };
        self.sql(q)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut p = s.split(':');
                let (t, o, n) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
                ((t.to_owned(), o.to_owned()), n.parse().unwrap())
            })
            .collect()
    }

    fn reset_counts(&self) {
        self.batch("DELETE FROM amp_counts;");
    }

    /// Bytes this store has sent toward the disk so far.
    fn bytes(&self, server_pid: u32) -> u64 {
        match self {
            Store::Sqlite(_) => {
                let io = std::fs::read_to_string(format!("/proc/{server_pid}/io")).unwrap();
                io.lines()
                    .find_map(|l| l.strip_prefix("write_bytes: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            }
            Store::Postgres(_) => self
                .sql("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")
                .parse()
                .unwrap(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "SQLite",
            Store::Postgres(_) => "PostgreSQL",
        }
    }
}

/// Send `n` messages one at a time, each acked before the next.
async fn say(v: &mut WsVisitor, tag: &str, n: usize) {
    for i in 0..n {
        let r = v
            .say_acked(&format!("{tag} message {i} of a round"))
            .await
            .unwrap();
        assert!(
            matches!(r, holdfast_protocol::visitor::VisitorOut::Ack { .. }),
            "{r:?}"
        );
    }
}

fn per_message(counts: &BTreeMap<(String, String), u64>, n: usize) -> String {
    let mut total = 0;
    let mut parts = Vec::new();
    for ((t, op), c) in counts {
        total += c;
        parts.push(format!(
            "{t} {} {:.2}",
            op.to_lowercase(),
            *c as f64 / n as f64
        ));
    }
    format!("{:.2} rows ({})", total as f64 / n as f64, parts.join(", "))
}

async fn a_visitor_message_costs(backend: Backend) {
    holdfast_tests::init_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("srv");
    let database = backend.fresh_database();
    seed_on(&dir, database.as_deref());
    {
        let db = holdfast_server::store::Database::new(database.as_deref(), &dir).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let conn = db.open().unwrap();
                for i in 3..=AGENTS {
                    holdfast_server::admin::add_agent(
                        conn.db(),
                        "acme",
                        &format!("agent{i}"),
                        &format!("Agent {i}"),
                        PASSWORD,
                        2,
                        Role::Agent,
                    )
                    .unwrap();
                }
            })
            .join()
            .unwrap();
        });
    }
    let cfg = dir.join("load.toml");
    std::fs::write(&cfg, LOOPBACK_LOAD_TOML).unwrap();
    let srv = ServerProcess::start_on(
        &dir,
        database.as_deref(),
        &["--config", cfg.to_str().unwrap()],
        None,
    );
    let pid = srv.child.as_ref().unwrap().id();
    let store = match &database {
        None => Store::Sqlite(&dir),
        Some(url) => Store::Postgres(url.rsplit('/').next().unwrap().to_owned()),
    };

    // Alice takes the first chat; then, away, she leaves the next one to
    // wait in the queue, where every agent of the site is told of it.
    let mut cfg = fast_config(
        &srv.agent.to_string(),
        "alice",
        &tmp.path().join("alice.sqlite3"),
        holdfast_client::protocol::handshake::Fingerprint([0; 32]),
    );
    cfg.expected_fingerprint = None;
    cfg.trust_on_first_use = true;
    let mut alice = CoreAgent::start(cfg);
    alice.live().await;
    let mut owned = WsVisitor::connect(srv.http, "acme").await.unwrap();
    say(&mut owned, "owned", 1).await;
    alice
        .conversation_where(|c| c.state == ConversationState::Active)
        .await;
    let away = alice.handle.set_presence(Presence::Away).await.unwrap();
    alice.outcome(away).await.unwrap();
    let mut queued = WsVisitor::connect(srv.http, "acme").await.unwrap();
    say(&mut queued, "queued", 1).await;
    alice
        .conversation_where(|c| c.state == ConversationState::Queued)
        .await;

    println!(
        "=== write amplification, {} ({AGENTS} agents on the site, one online) ===",
        store.name()
    );
    for (what, v) in [("owned", &mut owned), ("queued", &mut queued)] {
        // Let the writes of the setup (and PostgreSQL's own) settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = store.bytes(pid);
        let t0 = std::time::Instant::now();
        say(v, what, BYTES_ROUND).await;
        let took = t0.elapsed();
        let bytes = store.bytes(pid) - before;
        println!(
            "{what}: {:.0} bytes to disk per message ({BYTES_ROUND} messages, one commit each, \
             {:.1} ms a round trip)",
            bytes as f64 / BYTES_ROUND as f64,
            took.as_secs_f64() * 1000.0 / BYTES_ROUND as f64
        );
    }
    store.count_rows();
    for (what, v) in [("owned", &mut owned), ("queued", &mut queued)] {
        store.reset_counts();
        say(v, what, ROWS_ROUND).await;
        let counts = store.counts();
        println!("{what}: {} per message", per_message(&counts, ROWS_ROUND));
        let messages = counts
            .get(&("messages".to_owned(), "INSERT".to_owned()))
            .copied()
            .unwrap_or(0);
        assert_eq!(messages, ROWS_ROUND as u64, "{counts:?}");
        // The visitor acks its own messages as they come back; an ack
        // is stored only to tell agents theirs were delivered, so these
        // cost nothing.
        assert!(
            !counts.contains_key(&("visitors".to_owned(), "UPDATE".to_owned())),
            "{counts:?}"
        );
    }
    let event_bytes = store.sql(match &store {
        Store::Sqlite(_) => "SELECT avg(length(event)) FROM agent_events",
        Store::Postgres(_) => "SELECT round(avg(octet_length(event))) FROM agent_events",
    });
    println!("an agent's copy of a message event: {event_bytes} bytes on average");
    alice.shutdown().await;
}

holdfast_tests::on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_visitor_message_costs
);
