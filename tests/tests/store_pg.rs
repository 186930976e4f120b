//! The store on a real PostgreSQL (started by the test, see `tests/src/pg.rs`),
//! with the same store-level scenario run on SQLite as well:
//!
//! - a chat through the writer on both engines: visitor send opens a
//!   conversation, an agent accepts and answers, replay after a cursor,
//!   history, and a resent action id answered with its first outcome;
//! - two writers ("nodes") on one database racing hundreds of sends whose
//!   events go to the same recipients: every log stays gap-free, and each
//!   node saw its seqs for a recipient strictly increasing;
//! - `migrate` (with the shared server key) run twice at once, and two
//!   nodes started with `serve --migrate` at once; `serve` without it
//!   refusing a schema that is behind or a migration file that changed;
//!   a schema recorded the old way adopted by `migrate`;
//! - the real `holdfast-server` binary with `--database`: CLI set-up, a
//!   visitor and an agent chatting end to end, one fingerprint for every
//!   node;
//! - PostgreSQL SIGKILLed under load and restarted: the server answers
//!   "unavailable" meanwhile, resumes on its own, and loses nothing acked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{
    Action, AgentId, Command, ConversationState, Outcome, Presence, QueryResult, ServerMsg, SiteId,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::visitor::{VisitorEvent, VisitorOut};
use holdfast_server::metrics::Metrics;
use holdfast_server::store::effect::Effect;
use holdfast_server::store::writer::{AgentActor, VisitorSendOutcome, WriteConn};
use holdfast_server::store::{
    self, Availability, Database, Op, Publish, ReadPool, WriterConfig, WriterHandle, reads,
};
use holdfast_server::{admin, identity};
use holdfast_tests::cluster::cli;
use holdfast_tests::pg::TestPg;
use holdfast_tests::raw_agent::RawAgent;
use holdfast_tests::server::{PASSWORD, ServerProcess};
use holdfast_tests::visitor::{WsVisitor, new_id};

/// The live side as the writer sees it: who is online (set by the test)
/// and every committed effect, in publish order.
#[derive(Default)]
struct Hub {
    online: Mutex<Vec<AgentId>>,
    effects: Mutex<Vec<Effect>>,
}

impl Availability for Hub {
    fn connections(&self, agent: AgentId) -> usize {
        usize::from(self.online.lock().unwrap().contains(&agent))
    }
    fn presence(&self, agent: AgentId) -> Presence {
        if self.connections(agent) > 0 {
            Presence::Online
        } else {
            Presence::Offline
        }
    }
    fn connected(&self, _site: SiteId) -> Vec<(AgentId, Presence)> {
        self.online
            .lock()
            .unwrap()
            .iter()
            .map(|a| (*a, Presence::Online))
            .collect()
    }
}

impl Publish for Hub {
    fn publish(&self, effects: Vec<Effect>) {
        self.effects.lock().unwrap().extend(effects);
    }
}

/// One node's store: its own writer thread and read pool on `db`.
struct Node {
    writer: WriterHandle,
    reads: ReadPool,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Node {
    async fn start(db: &Database) -> Self {
        let d = db.clone();
        let conn = tokio::task::spawn_blocking(move || WriteConn::new(d.open()?, &d))
            .await
            .unwrap()
            .unwrap();
        let hub = Arc::new(Hub::default());
        let cfg = WriterConfig::default();
        let metrics = Arc::new(Metrics::default());
        let (writer, _join) = store::writer::spawn_on(conn, cfg, hub.clone(), metrics.clone());
        Self {
            writer,
            reads: ReadPool::for_database(db),
            hub,
            metrics,
        }
    }

    async fn hello(&self, site: SiteId) -> String {
        self.writer
            .call(|reply| Op::VisitorHello {
                site,
                visitor: None,
                ip: "127.0.0.1".into(),
                user_agent: Some("test".into()),
                page: None,
                group: None,
                lang: None,
                reply,
            })
            .await
            .unwrap()
    }

    async fn send(
        &self,
        visitor: &str,
        site: SiteId,
        id: MsgId,
        body: &str,
    ) -> Result<VisitorSendOutcome, store::StoreError> {
        let visitor = visitor.to_owned();
        let body = body.to_owned();
        self.writer
            .call(|reply| Op::VisitorSend {
                visitor,
                site,
                id,
                body,
                leave: None,
                page: None,
                attachment: None,
                reply,
            })
            .await
    }

    async fn command(&self, actor: &AgentActor, seq: u64, id: MsgId, action: Action) -> Outcome {
        let actor = actor.clone();
        let device = MsgId([9; 16]);
        self.writer
            .call(|reply| Op::AgentCommand {
                attachment: None,
                actor,
                device,
                cmd: Command { id, seq, action },
                reply,
            })
            .await
            .unwrap()
            .outcome
    }
}

/// The site "acme" with agents alice and bob; returns (site, alice, bob).
async fn seed(db: &Database) -> (SiteId, AgentId, AgentId) {
    let d = db.clone();
    tokio::task::spawn_blocking(move || {
        let conn = d.open().unwrap();
        let c = conn.db();
        let site = admin::add_site(c, "acme", "Acme", None).unwrap();
        let alice = admin::add_agent(
            c,
            "acme",
            "alice",
            "Alice",
            PASSWORD,
            2,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
        let bob = admin::add_agent(
            c,
            "acme",
            "bob",
            "Bob",
            PASSWORD,
            2,
            holdfast_protocol::agent::Role::Agent,
        )
        .unwrap();
        (site.id, alice.id, bob.id)
    })
    .await
    .unwrap()
}

fn actor(id: AgentId, site: SiteId, name: &str) -> AgentActor {
    AgentActor {
        id,
        site,
        name: name.into(),
        epoch: 0,
    }
}

/// The chat scenario, the same on both engines.
async fn chat_scenario(db: Database) {
    let (site, alice, _bob) = seed(&db).await;
    let node = Node::start(&db).await;
    let v = node.hello(site).await;

    // Nobody is online: the chat waits in the queue.
    let first = new_id();
    let VisitorSendOutcome::Done {
        conversation,
        message,
        ..
    } = node.send(&v, site, first, "hi there").await.unwrap()
    else {
        panic!("send refused")
    };
    let c = node
        .reads
        .run(move |c| reads::conversation(c, conversation))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state, ConversationState::Queued);

    // The same action id again: the first answer, nothing applied twice.
    let again = node.send(&v, site, first, "hi there").await.unwrap();
    assert!(
        matches!(again, VisitorSendOutcome::Done { message: m, .. } if m == message),
        "{again:?}"
    );

    // Alice takes it and answers.
    let me = actor(alice, site, "Alice");
    let login = node
        .writer
        .call(|reply| Op::AgentLogin {
            agent: alice,
            device: MsgId([9; 16]),
            reply,
        })
        .await
        .unwrap();
    assert_eq!(login, 0);
    let accepted = node
        .command(&me, 1, new_id(), Action::Accept { conversation })
        .await;
    assert!(matches!(accepted, Outcome::Done { .. }), "{accepted:?}");
    let send_id = new_id();
    let reply = Action::Send {
        conversation,
        body: "hello, how can I help?".into(),
        attachment: None,
    };
    let sent = node.command(&me, 2, send_id, reply.clone()).await;
    let Outcome::Done {
        message: Some(answer),
        ..
    } = sent
    else {
        panic!("agent send: {sent:?}")
    };
    // A resent command gets its first outcome.
    assert_eq!(node.command(&me, 2, send_id, reply).await, sent);
    // The device's acked commands survived in the store.
    let acked = node
        .writer
        .call(|reply| Op::AgentLogin {
            agent: alice,
            device: MsgId([9; 16]),
            reply,
        })
        .await
        .unwrap();
    assert_eq!(acked, 2);

    // The visitor's log: gap-free from 1, and a replay after a cursor gives
    // exactly what follows it.
    let vid = v.clone();
    let all = node
        .reads
        .run(move |c| reads::visitor_events_after(c, &vid, 0, 256))
        .await
        .unwrap();
    let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let bodies: Vec<String> = all
        .iter()
        .filter_map(|(_, e)| match e {
            VisitorEvent::Message(m) => Some(m.body.clone()),
            VisitorEvent::Conversation(_) => None,
        })
        .collect();
    assert!(bodies.contains(&"hi there".to_string()), "{bodies:?}");
    assert!(bodies.contains(&"hello, how can I help?".to_string()));
    let vid = v.clone();
    let after = node
        .reads
        .run(move |c| reads::visitor_events_after(c, &vid, 2, 256))
        .await
        .unwrap();
    assert_eq!(after.len(), all.len() - 2);
    assert_eq!(after.first().map(|(s, _)| *s), Some(3));

    // Alice's log too, and what the hub was handed matches it.
    let head = node
        .reads
        .run(move |c| reads::agent_log_bounds(c, alice))
        .await
        .unwrap()
        .1;
    let published: Vec<u64> = node
        .hub
        .effects
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Effect::AgentEvent { agent, seq, .. } if *agent == alice => Some(*seq),
            _ => None,
        })
        .collect();
    assert_eq!(published, (1..=head).collect::<Vec<_>>());

    // The safety-net poll's one query for many heads agrees with the
    // heads read one by one, and leaves out a recipient with no log.
    let vid = v.clone();
    let mut heads = node
        .reads
        .run(move |c| {
            let keys = [
                reads::agent_key(alice),
                reads::visitor_key(&vid),
                reads::agent_key(999_999),
            ];
            reads::log_heads(c, &keys)
        })
        .await
        .unwrap();
    heads.sort();
    let vhead = node
        .reads
        .run({
            let vid = v.clone();
            move |c| reads::log_head(c, &reads::visitor_key(&vid))
        })
        .await
        .unwrap();
    let mut expect = vec![
        (reads::agent_key(alice), head),
        (reads::visitor_key(&v), vhead),
    ];
    expect.sort();
    assert_eq!(heads, expect);
    // Likewise the open conversations read again after a bus gap.
    let vid = v.clone();
    let (many, one) = node
        .reads
        .run(move |c| {
            let many = reads::open_conversations(c, &[vid.clone(), "nobody".to_owned()])?;
            let one = reads::open_conversation(c, &vid)?.map(|c| (vid.clone(), c.id));
            Ok((many, one))
        })
        .await
        .unwrap();
    assert_eq!(many, one.into_iter().collect::<Vec<_>>());

    // History, newest first, with both lines exactly once.
    let vid = v.clone();
    let h = node
        .reads
        .run(move |c| reads::history(c, site, &vid, None, 50))
        .await
        .unwrap();
    let QueryResult::History { messages, .. } = h else {
        panic!("history refused: {h:?}")
    };
    let people: Vec<&str> = messages
        .iter()
        .filter(|m| !matches!(m.author, holdfast_protocol::agent::Author::System))
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(people, vec!["hello, how can I help?", "hi there"]);
    assert!(messages.iter().any(|m| m.message == answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_through_the_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    chat_scenario(Database::Sqlite(dir.path().to_path_buf())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_through_the_store_on_postgres() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = Database::new(Some(&pg.url()), std::path::Path::new("/nonexistent")).unwrap();
    chat_scenario(db).await;
}

/// Two writer threads on one database, as two nodes: every send of every
/// visitor (on either node) writes to alice's and bob's logs, since the
/// chats wait in the queue for all of the site's agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_the_same_recipients_keep_every_log_gap_free() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = Database::new(Some(&pg.url()), std::path::Path::new("/nonexistent")).unwrap();
    let (site, alice, bob) = seed(&db).await;
    let nodes = [Node::start(&db).await, Node::start(&db).await];
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();

    // Six visitors; each opens its chat first so the race is about logs,
    // not about who opens a visitor's conversation.
    let mut visitors = Vec::new();
    for i in 0..6 {
        let n = &nodes[i % 2];
        let v = n.hello(site).await;
        n.send(&v, site, new_id(), "opening").await.unwrap();
        visitors.push(v);
    }
    const PER_VISITOR_PER_NODE: usize = 30;
    let mut tasks = Vec::new();
    for v in &visitors {
        for n in &nodes {
            let (n, v) = (n.clone(), v.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = 0;
                for i in 0..PER_VISITOR_PER_NODE {
                    match n.send(&v, site, new_id(), &format!("{v} #{i}")).await {
                        Ok(VisitorSendOutcome::Done { .. }) => acked += 1,
                        other => panic!("send failed: {other:?}"),
                    }
                }
                acked
            }));
        }
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    let sends = visitors.len() * nodes.len() * PER_VISITOR_PER_NODE;
    assert_eq!(acked, sends);

    // In the database: every log is 1..=head, no gap, no duplicate.
    let reads = nodes[0].reads.clone();
    let vs = visitors.clone();
    let logs = reads
        .run(move |c| {
            let mut logs = BTreeMap::new();
            for a in [alice, bob] {
                let ev = reads::agent_events_after(c, a, 0, 100_000)?;
                let head = reads::log_head(c, &reads::agent_key(a))?;
                logs.insert(
                    reads::agent_key(a),
                    (ev.into_iter().map(|(s, _)| s).collect::<Vec<_>>(), head),
                );
            }
            for v in &vs {
                let ev = reads::visitor_events_after(c, v, 0, 100_000)?;
                let head = reads::log_head(c, &reads::visitor_key(v))?;
                logs.insert(
                    reads::visitor_key(v),
                    (ev.into_iter().map(|(s, _)| s).collect::<Vec<_>>(), head),
                );
            }
            Ok(logs)
        })
        .await
        .unwrap();
    for (who, (seqs, head)) in &logs {
        assert_eq!(
            *seqs,
            (1..=*head).collect::<Vec<_>>(),
            "{who}'s log has a gap or a duplicate"
        );
    }
    // Alice heard every message (and the conversation events): at least
    // one event per send.
    assert!(logs[&reads::agent_key(alice)].1 as usize >= sends + visitors.len());

    // What each node published, per recipient: strictly increasing, and
    // both nodes together published each seq exactly once.
    let mut union: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in &nodes {
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for e in n.hub.effects.lock().unwrap().iter() {
            let (key, seq) = match e {
                Effect::AgentEvent { agent, seq, .. } => (reads::agent_key(*agent), *seq),
                Effect::VisitorEvent { visitor, seq, .. } => (reads::visitor_key(visitor), *seq),
                _ => continue,
            };
            let prev = last.insert(key.clone(), seq).unwrap_or(0);
            assert!(seq > prev, "{key}: {seq} published after {prev}");
            union.entry(key).or_default().push(seq);
        }
    }
    for (key, mut seqs) in union {
        seqs.sort_unstable();
        let head = logs[&key].1;
        assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{key}");
    }
    // Both nodes really wrote to the same logs.
    let wrote_alice = nodes
        .iter()
        .filter(|n| {
            n.hub
                .effects
                .lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, Effect::AgentEvent { agent, .. } if *agent == alice))
        })
        .count();
    assert_eq!(wrote_alice, 2);
}

#[test]
fn migrate_twice_at_once_is_safe_and_both_get_the_same_key() {
    let pg = TestPg::start();
    let url = pg.create_db("fresh");
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let db = Database::new(Some(&url), std::path::Path::new("/nonexistent")).unwrap();
                barrier.wait();
                let conn = db.open().unwrap();
                identity::load_or_create_for(&db, conn.db())
                    .unwrap()
                    .fingerprint()
                    .to_string()
            })
        })
        .collect();
    let fps: HashSet<String> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(fps.len(), 1, "{fps:?}");
    let v = pg.psql_in(
        "fresh",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations",
    );
    let all: Vec<String> = (1..=store::schema_pg::SCHEMA_VERSION)
        .map(|v| v.to_string())
        .collect();
    assert_eq!(v, all.join(","));
    assert_eq!(pg.psql_in("fresh", "SELECT count(*) FROM server_key"), "1");
}

/// `serve` on `url` with ephemeral ports: `Some(status, stderr)` if it
/// exited within a few seconds, `None` if it was still serving (then
/// killed).
fn serve_briefly(url: &str, extra: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(holdfast_tests::server::server_binary())
        .args(["serve", "--database", url, "--data-dir"])
        .arg(dir.path())
        .args(["--http", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "off"])
        .args(extra)
        .env("HOLDFAST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some((
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The CLI's `migrate`: its status and stderr.
fn migrate_outcome(url: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(holdfast_tests::server::server_binary())
        .args(["migrate", "--database", url, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_refuses_a_schema_behind_until_migrate_runs_and_refuses_a_changed_file() {
    let pg = TestPg::start();
    let url = pg.create_db("holdfast");
    // A fresh database: serve without --migrate stops, naming the command.
    let (status, err) = serve_briefly(&url, &[]).expect("serve started on an empty schema");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("schema is at version 0")
            && err.contains("holdfast-server migrate --database"),
        "{err}"
    );
    // Nothing was created behind the operator's back.
    assert_eq!(
        pg.psql_in(
            "holdfast",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    // The other commands refuse too, rather than writing into no schema.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(holdfast_tests::server::server_binary())
        .args(["site", "add", "acme", "--database", &url, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holdfast-server migrate"));

    // migrate, then serve: it runs.
    let (status, err) = migrate_outcome(&url);
    assert!(status.success(), "{err}");
    assert!(
        serve_briefly(&url, &[]).is_none(),
        "serve on a current schema exited"
    );

    // An applied file that changed since (here: its recorded checksum no
    // longer matches) stops both serve and migrate, naming the file.
    pg.psql_in(
        "holdfast",
        "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
    );
    let (status, err) = serve_briefly(&url, &[]).expect("serve started on a changed migration");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("migration 0001_initial was applied with checksum edited"),
        "{err}"
    );
    let (status, err) = migrate_outcome(&url);
    assert!(!status.success());
    assert!(
        err.contains("0001_initial") && err.contains("must never change"),
        "{err}"
    );
    let (status, err) = serve_briefly(&url, &["--migrate"]).expect("serve --migrate started");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("0001_initial"), "{err}");
}

#[test]
fn a_database_migrated_the_old_way_is_adopted_by_migrate() {
    let pg = TestPg::start();
    let url = pg.create_db("old");
    // What the server wrote before the steps were files: version 1 (the
    // first file) in `schema_version`.
    let initial = store::migrations::POSTGRES[0].sql;
    pg.psql_in(
        "old",
        &format!(
            "{initial}\nCREATE TABLE schema_version (version BIGINT NOT NULL);\n\
             INSERT INTO schema_version VALUES (1);\n\
             INSERT INTO sites (key, name, created_ms) VALUES ('acme', 'Acme', 0);"
        ),
    );
    let (status, err) = serve_briefly(&url, &[]).expect("serve started on an old-style schema");
    assert_eq!(status.code(), Some(1), "{err}");
    let (status, err) = migrate_outcome(&url);
    assert!(status.success(), "{err}");
    assert_eq!(pg.psql_in("old", "SELECT count(*) FROM sites"), "1");
    assert_eq!(
        pg.psql_in("old", "SELECT min(version) FROM schema_migrations"),
        "1"
    );
    assert_eq!(
        pg.psql_in("old", "SELECT to_regclass('schema_version') IS NULL"),
        "t"
    );
    assert!(serve_briefly(&url, &[]).is_none());
}

#[test]
fn two_nodes_starting_with_migrate_at_once_share_one_schema_and_key() {
    let pg = TestPg::start();
    let url = pg.create_db("fresh");
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                barrier.wait();
                let p = ServerProcess::start_on(dir.path(), Some(&url), &["--migrate"], None);
                (p, dir)
            })
        })
        .collect();
    let nodes: Vec<_> = nodes.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(nodes.len(), 2);
    let n = pg.psql_in("fresh", "SELECT count(*) FROM schema_migrations");
    assert_eq!(n, store::schema_pg::SCHEMA_VERSION.to_string());
    assert_eq!(pg.psql_in("fresh", "SELECT count(*) FROM server_key"), "1");
    // Both run: a plain `serve` now finds the schema current too.
    assert!(serve_briefly(&url, &[]).is_none());
}

/// The CLI and the real server against one PostgreSQL: two "nodes" with
/// different data dirs.
fn pg_with_site() -> (TestPg, String, tempfile::TempDir, tempfile::TempDir) {
    let pg = TestPg::start();
    let url = pg.create_db("holdfast");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let m = cli(&url, a.path(), &["migrate"]);
    assert!(m.contains("schema is at version"), "{m}");
    cli(&url, a.path(), &["site", "add", "acme"]);
    cli(
        &url,
        b.path(),
        &["agent", "add", "alice", "--site", "acme", "--name", "Alice"],
    );
    (pg, url, a, b)
}

async fn online_agent(addr: std::net::SocketAddr) -> RawAgent {
    let (mut a, ok) = RawAgent::login(addr, "alice", PASSWORD).await.unwrap();
    assert!(matches!(ok, ServerMsg::LoginOk(_)), "login failed: {ok:?}");
    let (seq, _) = a
        .command(Action::SetPresence {
            presence: Presence::Online,
        })
        .await
        .unwrap();
    a.recv_until(
        Duration::from_secs(10),
        |m| matches!(m, ServerMsg::Ack(b) if b.results.iter().any(|r| r.seq == seq)),
    )
    .await
    .unwrap();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binary_serves_a_chat_from_postgres_and_every_node_shares_one_key() {
    holdfast_tests::init_logs();
    let (pg, url, a_dir, b_dir) = tokio::task::spawn_blocking(pg_with_site).await.unwrap();
    let (u, ad, bd) = (
        url.clone(),
        a_dir.path().to_owned(),
        b_dir.path().to_owned(),
    );
    let fps = tokio::task::spawn_blocking(move || {
        [
            cli(&u, &ad, &["fingerprint"]),
            cli(&u, &bd, &["fingerprint"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(fps[0], fps[1], "two nodes, two keys");
    let list = cli(&url, a_dir.path(), &["agent", "list"]);
    assert!(list.contains("alice"), "{list}");

    let (u, ad) = (url.clone(), a_dir.path().to_owned());
    let srv = tokio::task::spawn_blocking(move || ServerProcess::start(&ad, &["--database", &u]))
        .await
        .unwrap();
    let mut agent = online_agent(srv.agent).await;
    let mut v = WsVisitor::connect(srv.http, "acme").await.unwrap();
    let ack = v.say_acked("is anyone there?").await.unwrap();
    let VisitorOut::Ack { conversation, .. } = ack else {
        panic!("not acked: {ack:?}")
    };
    agent
        .recv_until(Duration::from_secs(10), |m| {
            holdfast_tests::flows::body(m) == Some("is anyone there?")
        })
        .await
        .unwrap();
    let (seq, _) = agent
        .command(Action::Send {
            conversation,
            body: "yes, Alice here".into(),
            attachment: None,
        })
        .await
        .unwrap();
    agent
        .recv_until(
            Duration::from_secs(10),
            |m| matches!(m, ServerMsg::Ack(b) if b.results.iter().any(|r| r.seq == seq && matches!(r.outcome, Outcome::Done { .. }))),
        )
        .await
        .unwrap();
    v.wait_message("yes, Alice here").await.unwrap();
    // Everything is in PostgreSQL, not in a file of the data dir.
    assert_eq!(
        pg.psql_in(
            "holdfast",
            "SELECT count(*) FROM messages WHERE internal = 0 AND author_kind IN (0, 1)"
        ),
        "2"
    );
    assert!(!a_dir.path().join(store::DB_FILE).exists());
    drop(srv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load_loses_nothing_acked_and_the_server_resumes() {
    holdfast_tests::init_logs();
    let (pg, url, a_dir, _b) = tokio::task::spawn_blocking(pg_with_site).await.unwrap();
    // Every visitor here is 127.0.0.1: no per-address limit may refuse
    // the load this test measures.
    let config = a_dir.path().join("load.toml");
    std::fs::write(&config, holdfast_tests::server::LOOPBACK_LOAD_TOML).unwrap();
    let (u, ad, cf) = (
        url.clone(),
        a_dir.path().to_owned(),
        config.display().to_string(),
    );
    let srv = tokio::task::spawn_blocking(move || {
        ServerProcess::start(&ad, &["--database", &u, "--config", &cf])
    })
    .await
    .unwrap();
    let http = srv.http;
    let pg = Arc::new(Mutex::new(pg));

    // Three visitors send as fast as their acks come back; each remembers
    // what was acked and what was refused as unavailable.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for k in 0..3 {
        let stop = stop.clone();
        senders.push(tokio::spawn(async move {
            let mut v = WsVisitor::connect(http, "acme").await.unwrap();
            let (mut acked, mut unavailable) = (Vec::new(), 0_usize);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = format!("v{k} m{i}");
                match v.say_acked(&body).await {
                    Ok(VisitorOut::Ack { .. }) => acked.push(body),
                    Ok(VisitorOut::Error { code, .. }) => {
                        assert_eq!(code, ErrorCode::Unavailable);
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => panic!("visitor {k} lost its connection: {e}"),
                }
                i += 1;
            }
            (acked, unavailable)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.lock().unwrap().kill9())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.lock().unwrap().spawn())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut unavailable = 0;
    for s in senders {
        let (a, u) = s.await.unwrap();
        acked.extend(a);
        unavailable += u;
    }
    assert!(unavailable > 0, "the outage was never noticed");
    println!(
        "{} acked, {unavailable} refused as unavailable",
        acked.len()
    );
    // A new send succeeds after the restart (the senders above already
    // had theirs acked again; this is a new visitor, so a new connection).
    let mut v = WsVisitor::connect(http, "acme").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match v.say_acked("after the restart").await.unwrap() {
            VisitorOut::Ack { .. } => break,
            other => {
                assert!(Instant::now() < deadline, "never resumed: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let p = pg.clone();
    let stored: HashSet<String> = tokio::task::spawn_blocking(move || {
        p.lock()
            .unwrap()
            .psql_in(
                "holdfast",
                "SELECT body FROM messages WHERE author_kind = 0",
            )
            .lines()
            .map(str::to_owned)
            .collect()
    })
    .await
    .unwrap();
    let lost: Vec<&String> = acked.iter().filter(|b| !stored.contains(*b)).collect();
    assert!(lost.is_empty(), "acked but lost: {lost:?}");
    drop(srv);
}

fn pg_database(pg: &TestPg) -> Database {
    Database::new(Some(&pg.url()), std::path::Path::new("/nonexistent")).unwrap()
}

/// Queued chats, each opened by its own new visitor through `node`.
async fn queued_chats(node: &Node, site: SiteId, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        let v = node.hello(site).await;
        let VisitorSendOutcome::Done { conversation, .. } =
            node.send(&v, site, new_id(), "anyone?").await.unwrap()
        else {
            panic!("send refused")
        };
        out.push(conversation);
    }
    out
}

/// Two agents on two nodes accept the same waiting chat at the same
/// instant, twenty times: each chat is taken exactly once, the loser is told
/// who took it, and exactly one "joined" line is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_accepting_one_waiting_chat_at_once_assign_it_exactly_once() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = pg_database(&pg);
    let (site, alice, bob) = seed(&db).await;
    let a = Arc::new(Node::start(&db).await);
    let b = Arc::new(Node::start(&db).await);
    let convs = queued_chats(&a, site, 20).await;
    let (me_a, me_b) = (actor(alice, site, "Alice"), actor(bob, site, "Bob"));
    let mut wins = BTreeMap::new();
    for (i, &conversation) in convs.iter().enumerate() {
        let seq = i as u64 + 1;
        let (ra, rb) = tokio::join!(
            a.command(&me_a, seq, new_id(), Action::Accept { conversation }),
            b.command(&me_b, seq, new_id(), Action::Accept { conversation }),
        );
        let winner = match (&ra, &rb) {
            (Outcome::Done { .. }, Outcome::Rejected { code, message }) => {
                assert_eq!(*code, ErrorCode::Conflict);
                assert!(message.contains("Alice"), "{message}");
                alice
            }
            (Outcome::Rejected { code, message }, Outcome::Done { .. }) => {
                assert_eq!(*code, ErrorCode::Conflict);
                assert!(message.contains("Bob"), "{message}");
                bob
            }
            other => panic!("not exactly one winner: {other:?}"),
        };
        wins.insert(conversation, winner);
    }
    let c2 = convs.clone();
    let stored = a
        .reads
        .run(move |c| {
            c2.iter()
                .map(|id| reads::conversation(c, *id).map(|c| c.unwrap()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
    for c in stored {
        assert_eq!(c.state, ConversationState::Active);
        assert_eq!(Some(wins[&c.id]), c.assigned, "chat {}", c.id);
    }
    let joined = pg.psql(
        "SELECT conversation_id, count(*) FROM messages WHERE body LIKE '%joined the chat%' \
         GROUP BY conversation_id HAVING count(*) <> 1",
    );
    assert_eq!(joined, "", "chats with other than one joined line");
}

/// Alice (capacity 2) is online on both nodes, and ten visitors open chats
/// through both at once: she gets exactly two, the rest wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_holds_across_nodes_assigning_at_once() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = pg_database(&pg);
    let (site, alice, _bob) = seed(&db).await;
    let nodes = [
        Arc::new(Node::start(&db).await),
        Arc::new(Node::start(&db).await),
    ];
    for n in &nodes {
        n.hub.online.lock().unwrap().push(alice);
    }
    let mut visitors = Vec::new();
    for i in 0..10 {
        visitors.push((nodes[i % 2].clone(), nodes[i % 2].hello(site).await));
    }
    let sends = visitors.into_iter().map(|(n, v)| {
        tokio::spawn(async move { n.send(&v, site, new_id(), "hello?").await.unwrap() })
    });
    for s in sends.collect::<Vec<_>>() {
        assert!(matches!(s.await.unwrap(), VisitorSendOutcome::Done { .. }));
    }
    let load = nodes[0]
        .reads
        .run(move |c| reads::agent_load(c, alice))
        .await
        .unwrap();
    assert_eq!(load, 2, "capacity 2, across both nodes");
    assert_eq!(
        pg.psql("SELECT count(*) FROM conversations WHERE state = 0"),
        "8"
    );
}

/// Transfer, then a sign-out that hands the chat back: the same rules on
/// both engines.
async fn transfer_and_release_scenario(db: Database) {
    let (site, alice, bob) = seed(&db).await;
    let node = Node::start(&db).await;
    node.hub.online.lock().unwrap().extend([alice, bob]);
    let v = node.hello(site).await;
    // Both online with nothing: the least busy, lowest id (alice) gets it.
    let VisitorSendOutcome::Done { conversation, .. } =
        node.send(&v, site, new_id(), "help").await.unwrap()
    else {
        panic!("send refused")
    };
    let owner = |node: &Node| {
        let reads = node.reads.clone();
        async move {
            reads
                .run(move |c| reads::conversation(c, conversation))
                .await
                .unwrap()
                .unwrap()
        }
    };
    assert_eq!(owner(&node).await.assigned, Some(alice));
    let me = actor(alice, site, "Alice");
    // A transfer that names the wrong current owner is refused.
    let stale = node
        .command(
            &me,
            1,
            new_id(),
            Action::Transfer {
                conversation,
                from: Some(bob),
                to: bob,
                note: None,
            },
        )
        .await;
    assert!(
        matches!(
            stale,
            Outcome::Rejected {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{stale:?}"
    );
    let moved = node
        .command(
            &me,
            2,
            new_id(),
            Action::Transfer {
                conversation,
                from: Some(alice),
                to: bob,
                note: Some("VIP".into()),
            },
        )
        .await;
    assert!(matches!(moved, Outcome::Done { .. }), "{moved:?}");
    let c = owner(&node).await;
    assert_eq!(
        (c.state, c.assigned),
        (ConversationState::Active, Some(bob))
    );
    // Bob signs out (his one device): the chat goes back to the queue and
    // on to alice, the one still available.
    node.writer
        .call(|reply| Op::ReleaseChats {
            agent: bob,
            reason: holdfast_protocol::notice::LeaveReason::SignedOut,
            reply: Some(reply),
        })
        .await
        .unwrap();
    let c = owner(&node).await;
    assert_eq!(
        (c.state, c.assigned),
        (ConversationState::Active, Some(alice))
    );
    let load_bob = node
        .reads
        .run(move |c| reads::agent_load(c, bob))
        .await
        .unwrap();
    assert_eq!(load_bob, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_release_on_sign_out_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    transfer_and_release_scenario(Database::Sqlite(dir.path().to_path_buf())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_and_release_on_sign_out_on_postgres() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    transfer_and_release_scenario(pg_database(&pg)).await;
}

/// A batch that loses a conflict (here: the first two attempts at storing a
/// message fail with a serialization failure, as when another node's
/// transaction wins) is redone whole: both sends are acked once, stored
/// once, and nothing of the failed attempts was published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_loses_a_conflict_is_redone_whole_and_acked_once() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = pg_database(&pg);
    let (site, _alice, _bob) = seed(&db).await;
    let node = Node::start(&db).await;
    let v = node.hello(site).await;
    node.send(&v, site, new_id(), "first").await.unwrap();
    // nextval is not rolled back with the transaction, so exactly the next
    // two attempts fail.
    pg.psql(
        "CREATE SEQUENCE conflicts; \
         CREATE FUNCTION conflict_twice() RETURNS trigger AS $$ BEGIN \
           IF nextval('conflicts') <= 2 THEN \
             RAISE EXCEPTION 'injected conflict' USING ERRCODE = '40001'; \
           END IF; RETURN NEW; END $$ LANGUAGE plpgsql; \
         CREATE TRIGGER conflict_twice BEFORE INSERT ON messages \
           FOR EACH ROW EXECUTE FUNCTION conflict_twice();",
    );
    let published_before = node.hub.effects.lock().unwrap().len();
    let (a, b) = tokio::join!(
        node.send(&v, site, new_id(), "second"),
        node.send(&v, site, new_id(), "third"),
    );
    assert!(matches!(a, Ok(VisitorSendOutcome::Done { .. })), "{a:?}");
    assert!(matches!(b, Ok(VisitorSendOutcome::Done { .. })), "{b:?}");
    assert!(node.metrics.commit_failures.get() >= 2);
    assert_eq!(
        pg.psql("SELECT string_agg(body, ',' ORDER BY id) FROM messages WHERE author_kind = 0"),
        "first,second,third"
    );
    let vid = v.clone();
    let log = node
        .reads
        .run(move |c| reads::visitor_events_after(c, &vid, 0, 1000))
        .await
        .unwrap();
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Each committed event was published once: none from the failed tries.
    let effects = node.hub.effects.lock().unwrap();
    let visitor_seqs: Vec<u64> = effects[published_before..]
        .iter()
        .filter_map(|e| match e {
            Effect::VisitorEvent { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect();
    let unique: HashSet<u64> = visitor_seqs.iter().copied().collect();
    assert_eq!(unique.len(), visitor_seqs.len(), "{visitor_seqs:?}");
    assert_eq!(visitor_seqs.last().copied(), seqs.last().copied());
}

/// The cross layout of a cluster: the agents sit on node A and their
/// visitors on node B, and both write to the same chats at once (A the
/// replies, B the visitors' messages). Each write touches the chat's row
/// and both parties' logs, in whatever order the ops come in a batch. No
/// batch may lose a deadlock or a lock conflict to the other node: a lost
/// one is redone whole after PostgreSQL's one-second deadlock check,
/// which is what made a cluster write slower than one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_node_and_a_visitor_node_writing_the_same_chats_never_deadlock() {
    let pg = tokio::task::spawn_blocking(TestPg::start).await.unwrap();
    let db = pg_database(&pg);
    let (site, alice, bob) = seed(&db).await;
    let a = Arc::new(Node::start(&db).await);
    let b = Arc::new(Node::start(&db).await);
    for n in [&a, &b] {
        n.hub.online.lock().unwrap().extend([alice, bob]);
    }
    // Four chats, two each (their capacity), opened through node B.
    let mut chats: Vec<(String, u64, AgentId)> = Vec::new();
    for _ in 0..4 {
        let v = b.hello(site).await;
        let VisitorSendOutcome::Done { conversation, .. } =
            b.send(&v, site, new_id(), "hello").await.unwrap()
        else {
            panic!("send refused")
        };
        chats.push((v, conversation, AgentId::default()));
    }
    let c: Vec<u64> = chats.iter().map(|(_, c, _)| *c).collect();
    let owners = a
        .reads
        .run(move |conn| {
            c.iter()
                .map(|id| reads::conversation(conn, *id).map(|c| c.unwrap().assigned.unwrap()))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap();
    for (chat, owner) in chats.iter_mut().zip(owners) {
        chat.2 = owner;
    }

    const ROUNDS: usize = 40;
    let mut tasks = Vec::new();
    // Node B: every visitor sends, all at once.
    for (v, _, _) in &chats {
        let (b, v) = (b.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                let r = b.send(&v, site, new_id(), &format!("question {i}")).await;
                assert!(matches!(r, Ok(VisitorSendOutcome::Done { .. })), "{r:?}");
            }
        }));
    }
    // Node A: each agent answers in its chats in turn, newest chat first
    // for one and oldest first for the other, so the batches meet the
    // chats in every order.
    for (who, name) in [(alice, "Alice"), (bob, "Bob")] {
        let mut mine: Vec<u64> = chats
            .iter()
            .filter(|(_, _, o)| *o == who)
            .map(|(_, c, _)| *c)
            .collect();
        if who == bob {
            mine.reverse();
        }
        let (a, me) = (a.clone(), actor(who, site, name));
        tasks.push(tokio::spawn(async move {
            for i in 0..ROUNDS {
                for (k, &conversation) in mine.iter().enumerate() {
                    let seq = (i * mine.len() + k + 1) as u64;
                    let action = Action::Send {
                        conversation,
                        body: format!("answer {i}"),
                        attachment: None,
                    };
                    let r = a.command(&me, seq, new_id(), action).await;
                    assert!(matches!(r, Outcome::Done { .. }), "{r:?}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM messages WHERE author_kind <> 2"),
        (4 + 4 * ROUNDS + 4 * ROUNDS).to_string(),
        "every send stored once"
    );
    assert_eq!(
        (
            a.metrics.commit_failures.get(),
            b.metrics.commit_failures.get()
        ),
        (0, 0),
        "batches lost to the other node (deadlock or lock conflict) and were redone"
    );
}
