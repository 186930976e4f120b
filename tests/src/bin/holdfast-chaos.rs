//! `holdfast-chaos`: the chaos run as a command, for the long runs that are
//! too big for CI.
//!
//! ```sh
//! cargo run --release -p holdfast-tests --bin holdfast-chaos -- --long
//! cargo run --release -p holdfast-tests --bin holdfast-chaos -- --long --cluster 3
//! ```
//!
//! `--long` is 100,000 messages, 10 visitors, 5 agents, 500 link faults,
//! 10 server and 10 agent SIGKILLs, at the real 3 s heartbeat / 10 s dead /
//! 250 ms–10 s backoff settings, stopping by itself after `--time-limit-s`
//! (default 45 min) plus the drain. Without `--long` it is the CI-sized run.
//!
//! `--cluster N` runs it on N nodes (at most 3) on one PostgreSQL and one
//! Redis behind HAProxy instead of one server: `--long --cluster 3` is
//! 12,000 messages, 12 visitors, 4 agents, 60 link faults, 3 node and 3
//! agent SIGKILLs, 2 Redis outages of 20 s and 2 PostgreSQL restarts.
//!
//! The exit status is 0 only when lost = duplicated = reordered =
//! unexpected = 0 (and, on a cluster, no client stranded by a node kill).
#![allow(clippy::print_stdout, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use holdfast_tests::chaos::{ChaosConfig, Timings, Topology, agent_binary, run};

#[derive(Debug, Parser)]
#[command(about = "Chaos run against real Holdfast server and agent processes")]
struct Args {
    /// The long run: 100k messages, 500 faults, 10+10 kills, real timings
    /// (on a cluster: 12k messages, 60 faults, 3+3 kills, 2 Redis outages
    /// and 2 PostgreSQL restarts).
    #[arg(long)]
    long: bool,
    /// Run on this many nodes (1–3) on PostgreSQL + Redis behind HAProxy.
    #[arg(long)]
    cluster: Option<usize>,
    #[arg(long)]
    messages: Option<usize>,
    #[arg(long)]
    visitors: Option<usize>,
    #[arg(long)]
    agents: Option<usize>,
    #[arg(long)]
    link_faults: Option<usize>,
    /// Server SIGKILLs (on a cluster: node SIGKILLs).
    #[arg(long)]
    server_kills: Option<usize>,
    #[arg(long)]
    agent_kills: Option<usize>,
    /// Cluster: Redis outages, and how long each lasts.
    #[arg(long)]
    redis_outages: Option<usize>,
    #[arg(long, default_value_t = 20)]
    redis_down_s: u64,
    /// Cluster: PostgreSQL restarts.
    #[arg(long)]
    pg_restarts: Option<usize>,
    /// Messages per second, all senders together.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop the load and faults after this many seconds, whatever is left.
    #[arg(long)]
    time_limit_s: Option<u64>,
    /// Use the short CI timings even with --long.
    #[arg(long)]
    fast: bool,
    /// Print every fault as it happens.
    #[arg(long)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let agent_bin = agent_binary();
    let long = a.long;
    let cluster = a.cluster.is_some();
    // (single short, single long, cluster short, cluster long)
    let pick = |v: [usize; 4]| v[usize::from(cluster) * 2 + usize::from(long)];
    let cfg = ChaosConfig {
        topology: match a.cluster {
            Some(nodes) => Topology::Cluster { nodes },
            None => Topology::Single,
        },
        visitors: a.visitors.unwrap_or(pick([6, 10, 9, 12])),
        agents: a.agents.unwrap_or(pick([3, 5, 3, 4])),
        messages: a.messages.unwrap_or(pick([5_000, 100_000, 3_000, 12_000])),
        link_faults: a.link_faults.unwrap_or(pick([50, 500, 20, 60])),
        server_kills: a.server_kills.unwrap_or(pick([2, 10, 1, 3])),
        agent_kills: a.agent_kills.unwrap_or(pick([2, 10, 1, 3])),
        redis_outages: a.redis_outages.unwrap_or(pick([0, 0, 1, 2])),
        redis_down: Duration::from_secs(a.redis_down_s),
        pg_restarts: a.pg_restarts.unwrap_or(pick([0, 0, 1, 2])),
        pg_down: Duration::from_secs(3),
        timings: if long && !a.fast {
            Timings::real()
        } else {
            Timings::fast()
        },
        rate: a.rate.unwrap_or(match (cluster, long) {
            (false, false) => 80.0,
            (false, true) => 60.0,
            (true, _) => 40.0,
        }),
        time_limit: Duration::from_secs(a.time_limit_s.unwrap_or(if long { 45 * 60 } else { 300 })),
        drain_limit: Duration::from_secs(if long { 180 } else { 60 }),
        agent_bin,
        verbose: a.verbose,
    };
    println!(
        "chaos: {:?}, {} messages, {} visitors, {} agents, {} link faults, {} server kills, {} agent kills, {} Redis outages of {:?}, {} PostgreSQL restarts, {:?}",
        cfg.topology,
        cfg.messages,
        cfg.visitors,
        cfg.agents,
        cfg.link_faults,
        cfg.server_kills,
        cfg.agent_kills,
        cfg.redis_outages,
        cfg.redis_down,
        cfg.pg_restarts,
        cfg.timings
    );
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(cfg));
    println!("{report}");
    for e in report.visitor_errors.iter().take(20) {
        println!("visitor error: {e}");
    }
    if report.clean() {
        println!("RESULT: clean (lost = duplicated = reordered = unexpected = 0)");
        Ok(())
    } else {
        println!("RESULT: VIOLATION");
        std::process::exit(1)
    }
}
