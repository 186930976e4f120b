//! `holdfast-chaos`: the chaos run as a command, for the long run that is too
//! big for CI.
//!
//! ```sh
//! cargo run --release -p holdfast-tests --bin holdfast-chaos -- --long
//! ```
//!
//! `--long` is 100,000 messages, 10 visitors, 5 agents, 500 link faults,
//! 10 server and 10 agent SIGKILLs, at the real 3 s heartbeat / 10 s dead /
//! 250 ms–10 s backoff settings, stopping by itself after `--time-limit-s`
//! (default 45 min) plus the drain. Without `--long` it is the CI-sized run.
//! The exit status is 0 only when lost = duplicated = reordered =
//! unexpected = 0.
#![allow(clippy::print_stdout, clippy::expect_used)]

use std::time::Duration;

use clap::Parser;
use holdfast_tests::chaos::{ChaosConfig, Timings, agent_binary, run};

#[derive(Debug, Parser)]
#[command(about = "Chaos run against real Holdfast server and agent processes")]
struct Args {
    /// The long run: 100k messages, 500 faults, 10+10 kills, real timings.
    #[arg(long)]
    long: bool,
    #[arg(long)]
    messages: Option<usize>,
    #[arg(long)]
    visitors: Option<usize>,
    #[arg(long)]
    agents: Option<usize>,
    #[arg(long)]
    link_faults: Option<usize>,
    #[arg(long)]
    server_kills: Option<usize>,
    #[arg(long)]
    agent_kills: Option<usize>,
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
    let cfg = ChaosConfig {
        visitors: a.visitors.unwrap_or(if long { 10 } else { 6 }),
        agents: a.agents.unwrap_or(if long { 5 } else { 3 }),
        messages: a.messages.unwrap_or(if long { 100_000 } else { 5_000 }),
        link_faults: a.link_faults.unwrap_or(if long { 500 } else { 50 }),
        server_kills: a.server_kills.unwrap_or(if long { 10 } else { 2 }),
        agent_kills: a.agent_kills.unwrap_or(if long { 10 } else { 2 }),
        timings: if long && !a.fast {
            Timings::real()
        } else {
            Timings::fast()
        },
        rate: a.rate.unwrap_or(if long { 60.0 } else { 80.0 }),
        time_limit: Duration::from_secs(a.time_limit_s.unwrap_or(if long { 45 * 60 } else { 300 })),
        drain_limit: Duration::from_secs(if long { 180 } else { 60 }),
        agent_bin,
        verbose: a.verbose,
    };
    println!(
        "chaos: {} messages, {} visitors, {} agents, {} link faults, {} server kills, {} agent kills, {:?}",
        cfg.messages,
        cfg.visitors,
        cfg.agents,
        cfg.link_faults,
        cfg.server_kills,
        cfg.agent_kills,
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
