//! `holdfast-chaos-agent`: the real agent client core (`holdfast-client`, with
//! its SQLite outbox and cursor) as a headless process, so the chaos suite can
//! SIGKILL it in the middle of a send and start it again on the same store.
//!
//! Input, one command per line on stdin (bodies and ids never contain spaces):
//! - `invite VISITOR BODY`: invite a browsing visitor;
//! - `send CONVERSATION BODY`: post a message;
//! - `shutdown`: stop gracefully (the outbox stays in the store) and exit.
//!
//! Output, one event per line on stdout:
//! - `ready DEVICE_ID` once the core runs;
//! - `ok BODY` once `send`/`invite` returned, i.e. the action is durably in
//!   the local outbox (the client's promise to deliver it starts here);
//! - `done CLIENT_ID CONVERSATION` / `rejected CLIENT_ID CODE` when the
//!   server answered a command;
//! - `msg CONVERSATION MESSAGE_ID BODY` for each new visitor message the core
//!   stored and showed;
//! - `state NAME` on every connection state change (`live`, `backing_off`,
//!   `connecting`, …);
//! - `resync` when the core dropped updates (the store is still complete);
//! - `bye` after a graceful shutdown.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use holdfast_client::protocol::agent::Author;
use holdfast_client::protocol::backoff::BackoffConfig;
use holdfast_client::protocol::liveness::LivenessConfig;
use holdfast_client::{ClientConfig, ConnState, Update};
use tokio::io::{AsyncBufReadExt, BufReader};
use zeroize::Zeroizing;

#[derive(Debug, Parser)]
#[command(about = "Headless Holdfast agent client core for fault-injection tests")]
struct Args {
    /// `host:port` of the agent listener (or of a fault proxy in front of it).
    #[arg(long)]
    server: String,
    #[arg(long)]
    user: String,
    #[arg(long, env = "HOLDFAST_PASSWORD")]
    password: String,
    /// The local store; reuse it to restart the same device.
    #[arg(long)]
    store: PathBuf,
    /// Client heartbeat and dead-server limit; the protocol defaults (3 s and
    /// 10 s) when absent.
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    #[arg(long)]
    dead_after_ms: Option<u64>,
    /// Reconnect backoff; the defaults (250 ms, capped at 10 s) when absent.
    #[arg(long)]
    backoff_base_ms: Option<u64>,
    #[arg(long)]
    backoff_cap_ms: Option<u64>,
}

fn state_name(s: &ConnState) -> &'static str {
    match s {
        ConnState::Disconnected => "disconnected",
        ConnState::Connecting => "connecting",
        ConnState::Handshaking => "handshaking",
        ConnState::AwaitingTrust { .. } => "awaiting_trust",
        ConnState::LoggingIn => "logging_in",
        ConnState::Live => "live",
        ConnState::BackingOff { .. } => "backing_off",
        ConnState::Stopped { .. } => "stopped",
    }
}

/// Print one line and flush at once, so the harness sees each event as it
/// happens and a SIGKILL loses at most the line being written.
fn out(line: &str) {
    let mut o = std::io::stdout().lock();
    // A closed stdout means the harness is gone; nothing left to tell.
    let _ignored = writeln!(o, "{line}").and_then(|()| o.flush());
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The core's own log on stderr (stdout is the harness's line protocol),
    // at HOLDFAST_LOG's level; the harness keeps it only when asked.
    let _ignored = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let mut cfg = ClientConfig::new(
        args.server.clone(),
        args.user.clone(),
        Zeroizing::new(args.password.clone()),
        args.store.clone(),
    );
    cfg.trust_on_first_use = true;
    let mut live = LivenessConfig::default();
    if let Some(v) = args.heartbeat_ms {
        live.heartbeat = Duration::from_millis(v);
    }
    if let Some(v) = args.dead_after_ms {
        live.dead_after = Duration::from_millis(v);
    }
    cfg.liveness = live;
    let mut backoff = BackoffConfig::default();
    if let Some(v) = args.backoff_base_ms {
        backoff.base = Duration::from_millis(v);
    }
    if let Some(v) = args.backoff_cap_ms {
        backoff.cap = Duration::from_millis(v);
    }
    cfg.backoff = backoff;

    let (handle, mut updates) = holdfast_client::start(cfg)?;
    out(&format!("ready {}", handle.device_id()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut last_state = "";
    loop {
        tokio::select! {
            u = updates.recv() => {
                let Some(u) = u else { break };
                match u {
                    Update::Connection(st) => {
                        let name = state_name(&st.state);
                        if name != last_state {
                            last_state = name;
                            out(&format!("state {name}"));
                        }
                    }
                    Update::Message(m) if matches!(m.author, Author::Visitor { .. }) => {
                        out(&format!("msg {} {} {}", m.conversation, m.message.unwrap_or(0), m.body));
                    }
                    Update::CommandDone { id, conversation, .. } => {
                        out(&format!("done {id} {}", conversation.unwrap_or(0)));
                    }
                    Update::CommandRejected { id, code, .. } => out(&format!("rejected {id} {code}")),
                    Update::Resync => out("resync"),
                    Update::StoreFailed { message } => out(&format!("store_failed {message}")),
                    _ => {}
                }
            }
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    // Stdin closed: the harness is gone; stop as asked.
                    Ok(None) | Err(_) => "shutdown".to_owned(),
                };
                let mut parts = line.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("send"), Some(conv), Some(body)) => {
                        let Ok(conv) = conv.parse::<u64>() else {
                            out(&format!("error bad conversation {conv}"));
                            continue;
                        };
                        match handle.send_message(conv, body).await {
                            Ok(_) => out(&format!("ok {body}")),
                            Err(e) => out(&format!("error {body} {e}")),
                        }
                    }
                    (Some("invite"), Some(visitor), Some(body)) => {
                        match handle.invite(visitor, body).await {
                            Ok(id) => out(&format!("ok {body} {id}")),
                            Err(e) => out(&format!("error {body} {e}")),
                        }
                    }
                    (Some("shutdown"), _, _) => {
                        handle.shutdown().await?;
                        out("bye");
                        return Ok(());
                    }
                    _ => out(&format!("error unknown command {line}")),
                }
            }
        }
    }
    Ok(())
}
