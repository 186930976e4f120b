//! `holdfast-agent`: the Holdfast agent desktop app.
// A GUI app: no console window next to it when started from a shortcut.
#![cfg_attr(windows, windows_subsystem = "windows")]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use holdfast_agent::ui::{self, Options};
use zeroize::Zeroizing;

/// The Holdfast agent desktop app.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Server address (host:port of the agent listener). Remembered.
    #[arg(long)]
    server: Option<String>,
    /// Username. Remembered.
    #[arg(long)]
    user: Option<String>,
    /// Sign in at once with the password in this environment variable
    /// (kiosks, demos, benchmarks). The password is never written to disk.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// The local store (outbox and cache) to use instead of the per-account
    /// one under the OS data directory.
    #[arg(long)]
    store: Option<PathBuf>,
    /// Where to remember the server and username (default: the OS config
    /// directory).
    #[arg(long)]
    prefs: Option<PathBuf>,
    /// No OS notifications or sounds.
    #[arg(long)]
    no_notify: bool,
    /// Print the time from process start to the first frame, then exit
    /// (for agent-desktop/BENCHMARKS.md).
    #[arg(long, hide = true)]
    bench_first_frame: bool,
}

fn main() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // Read while the process is still single-threaded: `time` refuses to
    // read the local offset once other threads exist.
    let utc_offset_secs = time::UtcOffset::current_local_offset()
        .map(|o| o.whole_seconds())
        .unwrap_or(0);
    let args = Args::parse();
    let password = match &args.password_env {
        Some(var) => {
            Some(Zeroizing::new(std::env::var(var).with_context(|| {
                format!("environment variable {var} is not set")
            })?))
        }
        None => None,
    };
    // A broken admin file is reported, not fatal: the agent can still type
    // the server in and be asked about its key.
    let preconfig = match holdfast_client::preconfig::Preconfig::load() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("ignoring the preconfiguration: {e}");
            None
        }
    };
    let options = Options {
        server: args.server,
        username: args.user,
        password,
        store: args.store,
        prefs_path: args.prefs.or_else(ui::prefs::default_path),
        notifications: !args.no_notify,
        utc_offset_secs,
        tune: None,
        expected_fingerprint: None,
        preconfig,
        // The OS's language setting (LC_ALL / LC_MESSAGES / LANG on Unix,
        // the user's UI language on Windows and macOS).
        locale: sys_locale::get_locale(),
        exit_after_first_frame: args.bench_first_frame.then_some(started),
    };
    ui::run(options).context("the window could not be opened")
}
