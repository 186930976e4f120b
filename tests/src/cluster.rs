//! Several real `holdfast-server` processes on one throwaway PostgreSQL and
//! one throwaway Redis (issue 15): the shape of a scale-out deployment on
//! one machine, for tests that chat across nodes, kill a node or Redis,
//! and watch presence move.
//!
//! Each node has its own data dir (nothing is kept there on PostgreSQL)
//! and its own ports, and a `--node-id` of `node1`, `node2`, ...

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::visitor::VisitorOut;

use crate::core_agent::{CoreAgent, fast_config};
use crate::visitor::WsVisitor;

use crate::pg::TestPg;
use crate::redis::RedisServer;
use crate::server::{PASSWORD, ServerProcess, server_binary};

/// The engines and the nodes.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<ServerProcess>,
    pub redis: RedisServer,
    /// The `holdfast` database's URL.
    pub url: String,
    pub fingerprint: Fingerprint,
    pub pg: TestPg,
    dirs: Vec<tempfile::TempDir>,
    /// Node arguments in place of [`Cluster::node_args`]'s timings, if any.
    node_extra: Vec<String>,
}

/// Run one CLI subcommand against the cluster's database; its stdout.
pub fn cli(url: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(server_binary())
        .args(args)
        .arg("--database")
        .arg(url)
        .arg("--data-dir")
        .arg(dir)
        .env("HOLDFAST_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Cluster {
    /// PostgreSQL with the schema, site `acme` and agents `alice` and `bob`
    /// (capacity `capacity`, password [`PASSWORD`]); Redis; and `n` nodes.
    /// Blocking: call from `spawn_blocking` in async tests.
    pub fn start(n: usize, capacity: u32) -> Self {
        Self::start_with(n, capacity, &[])
    }

    /// Like [`Cluster::start`], each node started with `node_extra` (its
    /// own timings, a config file) instead of the scripted agents' timings.
    pub fn start_with(n: usize, capacity: u32, node_extra: &[&str]) -> Self {
        let pg = TestPg::start();
        let url = pg.create_db("holdfast");
        let setup = tempfile::tempdir().unwrap();
        cli(&url, setup.path(), &["migrate"]);
        cli(&url, setup.path(), &["site", "add", "acme"]);
        let cap = capacity.to_string();
        for (user, name) in [("alice", "Alice"), ("bob", "Bob")] {
            cli(
                &url,
                setup.path(),
                &[
                    "agent",
                    "add",
                    user,
                    "--site",
                    "acme",
                    "--name",
                    name,
                    "--capacity",
                    &cap,
                ],
            );
        }
        let fingerprint = cli(&url, setup.path(), &["fingerprint"]).parse().unwrap();
        let redis = RedisServer::start();
        let mut c = Self {
            nodes: Vec::new(),
            redis,
            url,
            fingerprint,
            pg,
            dirs: vec![setup],
            node_extra: node_extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 1..=n {
            c.add_node(&format!("node{i}"));
        }
        c
    }

    /// Start one more node.
    pub fn add_node(&mut self, id: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut args = Self::node_args(&self.redis.url(), id);
        if !self.node_extra.is_empty() {
            // Keep `--bus` and `--node-id`; the timings are replaced.
            args.truncate(4);
            args.extend(self.node_extra.iter().cloned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The harness passes the database itself, and checks the node is on it.
        self.nodes.push(ServerProcess::start_on(
            dir.path(),
            Some(&self.url),
            &args,
            None,
        ));
        self.dirs.push(dir);
    }

    /// What a node is started with, besides its data dir and ports.
    pub fn node_args(bus: &str, id: &str) -> Vec<String> {
        [
            "--bus",
            bus,
            "--node-id",
            id,
            // Scripted agents only talk when the test makes them.
            "--heartbeat-ms",
            "500",
            "--dead-after-ms",
            "60000",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    }

    /// The node's agent port as the client core takes it.
    pub fn agent_server(&self, node: usize) -> String {
        self.nodes[node].agent.to_string()
    }

    /// The real client core logged in as `user` on node `node`, its store
    /// in `dir`.
    pub fn agent(&self, node: usize, dir: &tempfile::TempDir, user: &str) -> CoreAgent {
        CoreAgent::start(fast_config(
            &self.agent_server(node),
            user,
            &dir.path().join(format!("{user}.sqlite3")),
            self.fingerprint,
        ))
    }

    /// [`Cluster::start`] from an async test.
    pub async fn start_async(n: usize, capacity: u32) -> Self {
        tokio::task::spawn_blocking(move || Self::start(n, capacity))
            .await
            .unwrap()
    }

    /// A Prometheus value from node `node`'s admin listener.
    pub async fn metric(&self, node: usize, name: &str) -> Option<f64> {
        crate::server::metric(self.nodes[node].admin, name).await
    }
}

/// How long the tests allow for what the design promises within 2 s: a
/// liveness bound on a loaded 2-core machine, not a speed assertion (the
/// tests print the measured figure).
pub const LIVENESS: Duration = Duration::from_secs(5);

/// Wait until the visitor's node knows an agent is online (on any node):
/// said in the welcome, or pushed once the bus brings the news.
pub async fn agents_online(v: &mut WsVisitor) {
    if matches!(
        v.welcome,
        VisitorOut::Welcome {
            agents_online: true,
            ..
        }
    ) {
        return;
    }
    v.wait_for(LIVENESS, |m| {
        matches!(m, VisitorOut::Agents { online: true, .. })
    })
    .await
    .expect("the visitor's node never heard that an agent is online");
}
