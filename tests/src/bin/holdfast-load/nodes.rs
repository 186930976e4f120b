//! `--spawn --postgres` and `--spawn --nodes N`: Holdfast on PostgreSQL, as
//! one node or as N nodes sharing one PostgreSQL and one Redis, all started
//! here by the test harness (throwaway instances on free ports, PostgreSQL
//! with fsync on and its data on the same disk as the SQLite runs', so the
//! backends are compared at the same durability).
//!
//! `--pin-server` pins the nodes, PostgreSQL and Redis together: for the
//! generator they are all "the server".

use holdfast_server::store::Database;
use holdfast_tests::cluster::cli;
use holdfast_tests::pg::{TestPg, pg_bin};
use holdfast_tests::redis::RedisServer;
use holdfast_tests::server::{LOOPBACK_LOAD_TOML, ServerProcess};

use crate::shard::WsTarget;
use crate::{Args, Target, pin};

/// Start the engines and the nodes, seed site and agents; the target is the
/// nodes chosen by `--visitor-nodes` and `--agent-nodes` (all by default).
pub fn spawn(args: &Args) -> anyhow::Result<Target> {
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let pg = TestPg::start();
    let url = pg.create_db("holdfast_load");
    let setup = tempfile::tempdir()?;
    cli(&url, setup.path(), &["migrate"]);
    seed(args, &url, setup.path())?;
    let redis = (args.nodes > 1).then(RedisServer::start);
    if let Some(cpus) = &args.pin_server {
        // Backends forked from here on inherit the postmaster's CPUs.
        pin(
            pg.pid()
                .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not running"))?,
            cpus,
        )?;
        if let Some(pid) = redis.as_ref().and_then(RedisServer::pid) {
            pin(pid, cpus)?;
        }
    }
    let cfg = setup.path().join("load.toml");
    std::fs::write(
        &cfg,
        format!(
            "{LOOPBACK_LOAD_TOML}group_commit = {}\n",
            !args.no_group_commit
        ),
    )?;
    let cfg = cfg.to_string_lossy().to_string();
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..args.nodes {
        let dir = tempfile::tempdir()?;
        let id = format!("node{i}");
        let mut extra = vec!["--config".to_owned(), cfg.clone(), "--node-id".into(), id];
        if let Some(r) = &redis {
            extra.extend(["--bus".to_owned(), r.url()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let p = ServerProcess::start_on(dir.path(), Some(&url), &extra, None);
        if let (Some(cpus), Some(child)) = (&args.pin_server, &p.child) {
            pin(child.id(), cpus)?;
        }
        nodes.push(p);
        dirs.push(dir);
    }
    let pick = |chosen: &[usize]| -> anyhow::Result<Vec<usize>> {
        if chosen.is_empty() {
            return Ok((0..args.nodes).collect());
        }
        for &n in chosen {
            anyhow::ensure!(n < args.nodes, "node {n} of {}", args.nodes);
        }
        Ok(chosen.to_vec())
    };
    let visitor_nodes = pick(&args.visitor_nodes)?;
    let agent_nodes = pick(&args.agent_nodes)?;
    let target = Target {
        ws: visitor_nodes
            .iter()
            .map(|&n| WsTarget {
                addr: nodes[n].http,
                path: "/v1/visitor/ws".into(),
                holdfast: true,
            })
            .collect(),
        agent: agent_nodes.iter().map(|&n| nodes[n].agent).collect(),
        admin: nodes.iter().map(|n| n.admin).collect(),
        pids: nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(std::process::Child::id))
            .collect(),
        pg_url: Some(url.clone()),
        name: if args.nodes == 1 {
            "holdfast on postgresql".into()
        } else {
            format!("holdfast, {} nodes on postgresql + redis", args.nodes)
        },
        // Dropped in order: the nodes before the engines they use.
        _guards: vec![
            Box::new(nodes),
            Box::new(dirs),
            Box::new(redis),
            Box::new(pg),
            Box::new(setup),
        ],
    };
    Ok(target)
}

/// The site and agents `PREFIX-i`, as [`crate::spawn_holdfast`] seeds them
/// on SQLite. PostgreSQL's synchronous client starts a runtime of its own,
/// so this runs on a plain thread.
fn seed(args: &Args, url: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let db = Database::new(Some(url), dir)?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let conn = db.open()?;
            let conn = conn.db();
            holdfast_server::admin::add_site(conn, &args.site, "Load test", None)?;
            let cap = (args.visitors / args.agents.max(1) + 1) as u32;
            for i in 0..args.agents {
                let u = format!("{}-{i}", args.agent_prefix);
                holdfast_server::admin::add_agent(
                    conn,
                    &args.site,
                    &u,
                    &u,
                    "load-pass",
                    cap,
                    holdfast_protocol::agent::Role::Agent,
                )?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("seeding panicked"))?
    })
}

/// What PostgreSQL wrote so far: rows inserted, updated and deleted in the
/// store's tables, and WAL bytes (its durable write volume). Backends flush
/// their counters when idle for a second, so read this after a pause.
#[derive(Debug, Clone, Copy, Default)]
pub struct Writes {
    pub inserted: f64,
    pub updated: f64,
    pub deleted: f64,
    pub wal_bytes: f64,
}

pub fn writes(url: &str) -> Option<Writes> {
    let out = std::process::Command::new(pg_bin().join("psql"))
        .args(["-X", "-A", "-t", "-F", " ", "-d", url, "-c"])
        .arg(
            "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), \
             coalesce(sum(n_tup_del), 0), (SELECT wal_bytes FROM pg_stat_wal) \
             FROM pg_stat_user_tables",
        )
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v[..] {
        [inserted, updated, deleted, wal_bytes] => Some(Writes {
            inserted,
            updated,
            deleted,
            wal_bytes,
        }),
        _ => None,
    }
}
