//! `holdfast-server`: serve, manage sites and agents, show the fingerprint.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use holdfast_protocol::agent::Role;
use holdfast_server::config;
use holdfast_server::{admin, identity, store};

#[derive(Debug, Parser)]
#[command(name = "holdfast-server", version, about = "Holdfast live chat server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct DataDir {
    /// Data directory (database and server key). Default: the OS data dir.
    #[arg(long, env = "HOLDFAST_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user@host/db) the nodes share. Default:
    /// SQLite in the data dir.
    #[arg(long, env = "HOLDFAST_DATABASE", global = true, hide_env_values = true)]
    database: Option<String>,
}

impl DataDir {
    fn path(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(config::default_data_dir)
    }

    fn database(&self) -> anyhow::Result<store::Database> {
        store::Database::new(self.database.as_deref(), &self.path()).context("the database setting")
    }

    /// Open the configured database, whose schema must be current on
    /// PostgreSQL (see `migrate`).
    fn open(&self) -> anyhow::Result<(store::Database, store::Conn)> {
        let db = self.database()?;
        let conn = db.open_current().context("opening the database")?;
        Ok((db, conn))
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage sites.
    Site {
        #[command(subcommand)]
        cmd: SiteCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Manage agents.
    Agent {
        #[command(subcommand)]
        cmd: AgentCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Manage a site's automatic invitations: whom the widget invites to
    /// chat by itself (at most once a visit, never while chatting).
    InviteRule {
        #[command(subcommand)]
        cmd: InviteRuleCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Export or import canned replies as CSV (`shortcut,body`): the
    /// site's list, or with --agent that agent's own.
    Canned {
        #[command(subcommand)]
        cmd: CannedCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Manage a site's groups (departments): which agents are in each,
    /// their hours, and whether the widget offers a choice of them. A
    /// chat for a group goes to its agents; running servers see a change
    /// within a second.
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Print the server's key fingerprint, for agents to check.
    Fingerprint {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Create or upgrade the database schema (and, on PostgreSQL, the
    /// server key every node shares). Safe to run from several nodes at
    /// once. On PostgreSQL, `serve` and the other commands refuse a schema
    /// that is behind, unless started with `serve --migrate`; SQLite is
    /// upgraded on start as always.
    Migrate {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file: every setting below, by its name with underscores
    /// (`agent_listen = "0.0.0.0:7070"`).
    #[arg(long, env = "HOLDFAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: config::Settings,
}

#[derive(Debug, Subcommand)]
enum SiteCmd {
    /// Add a site. Its key goes in the widget's data-site attribute.
    Add {
        key: String,
        #[arg(long)]
        name: Option<String>,
        /// Secret for verifying Holdfast.identify() hashes.
        #[arg(long)]
        secret: Option<String>,
        /// An origin the widget may run on (https://shop.example.com);
        /// repeat for more. Without any, every origin may.
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Replace the origins a site's widget may run on (none: any origin).
    Origins {
        key: String,
        origins: Vec<String>,
    },
    /// Set a site's attachment rules; what is not given stays as it was.
    Attachments {
        key: String,
        /// The largest file, in MB (at most the server's limit).
        #[arg(long)]
        max_mb: Option<u64>,
        /// The accepted types, checked by content: png, jpeg, gif, webp,
        /// pdf, zip, or image/* (comma-separated).
        #[arg(long)]
        types: Option<String>,
        /// Upload rate per visitor, in KB/s.
        #[arg(long)]
        rate_kb: Option<u64>,
        /// Back to the server's defaults first.
        #[arg(long)]
        reset: bool,
    },
    /// Set a site's business hours; outside them the widget offers the
    /// leave-a-message form instead of a chat.
    Hours {
        key: String,
        /// IANA time zone of the hours (Asia/Shanghai, Europe/Berlin).
        #[arg(long, required_unless_present = "always")]
        tz: Option<String>,
        /// Opening ranges: "mon-fri 09:00-18:00, sat 10:00-14:00".
        #[arg(long, required_unless_present = "always")]
        open: Option<String>,
        /// Closed dates: "2026-12-25, 2027-01-01".
        #[arg(long, default_value = "")]
        holidays: String,
        /// Always open (no hours).
        #[arg(long, conflicts_with_all = ["tz", "open"])]
        always: bool,
    },
    /// Show a site's tags, or change them: agents tag chats from this list.
    Tags {
        key: String,
        /// Replace the list ("billing, refund, bug"; "" clears it).
        #[arg(long, conflicts_with_all = ["add", "remove"])]
        set: Option<String>,
        /// Add tags to the end of the list (comma-separated).
        #[arg(long)]
        add: Option<String>,
        /// Take tags off the list (comma-separated); chats keep them.
        #[arg(long)]
        remove: Option<String>,
    },
    /// Whether the site's agents see a visitor's draft as it is typed
    /// (sneak peek; on unless turned off). Off: the widget sends typing
    /// without the text, and the server strips any text it gets.
    SneakPeek {
        key: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    List,
}

#[derive(Debug, Subcommand)]
enum InviteRuleCmd {
    /// Add a rule. Every condition given must hold; with none, every
    /// visitor is invited as they arrive. Rules are tried in the order
    /// they were added, and the first that fits sends its text.
    Add {
        /// The site key.
        site: String,
        /// A name for the rule, unique in the site (for list, remove).
        #[arg(long)]
        name: String,
        /// What the widget shows, up to 500 characters.
        #[arg(long)]
        text: String,
        /// The page's URL matches this pattern; `*` is any run of
        /// characters, case is ignored: `*/pricing*`.
        #[arg(long)]
        url: Option<String>,
        /// At least this many seconds on the site in this visit.
        #[arg(long)]
        after_site: Option<u32>,
        /// At least this many seconds on the current page.
        #[arg(long)]
        after_page: Option<u32>,
        /// Only visitors who were here on an earlier visit.
        #[arg(long, conflicts_with = "first_visit")]
        returning: bool,
        /// Only first-time visitors.
        #[arg(long)]
        first_visit: bool,
        /// The visit's referrer contains this text (case ignored).
        #[arg(long)]
        referrer: Option<String>,
        /// A page of the visit carries this utm_campaign (case ignored).
        #[arg(long)]
        campaign: Option<String>,
        /// An attribute from Holdfast.identify has this value: key=value.
        #[arg(long)]
        attr: Option<String>,
    },
    /// List a site's rules with what they did: fired (sent to a widget),
    /// shown, accepted (the visitor replied) and ignored (closed, or left
    /// unanswered for 30 minutes).
    List { site: String },
    /// Remove a rule; the invitations it sent stay in history.
    Remove { site: String, name: String },
    /// Switch a rule on again.
    Enable { site: String, name: String },
    /// Switch a rule off, keeping it and its counts.
    Disable { site: String, name: String },
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Add a group. Its key goes in the widget's data-group attribute.
    Add {
        site: String,
        key: String,
        /// The name visitors and agents see (the key if not given).
        #[arg(long)]
        name: Option<String>,
    },
    /// Give a group a new display name.
    Rename {
        site: String,
        key: String,
        #[arg(long)]
        name: String,
    },
    /// Remove a group. Its open chats go back to the site-wide queue.
    Remove { site: String, key: String },
    /// List the site's groups with their members and hours.
    List { site: String },
    /// Add agents to a group or take them out (usernames, comma-separated
    /// or repeated).
    Members {
        site: String,
        key: String,
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// Set a group's own business hours, as `site hours` does for the site;
    /// outside them its visitors get the leave-a-message form.
    Hours {
        site: String,
        key: String,
        /// IANA time zone of the hours (Asia/Shanghai, Europe/Berlin).
        #[arg(long, required_unless_present = "site_hours")]
        tz: Option<String>,
        /// Opening ranges: "mon-fri 09:00-18:00, sat 10:00-14:00".
        #[arg(long, required_unless_present = "site_hours")]
        open: Option<String>,
        /// Closed dates: "2026-12-25, 2027-01-01".
        #[arg(long, default_value = "")]
        holidays: String,
        /// No hours of its own: the site's apply.
        #[arg(long, conflicts_with_all = ["tz", "open"])]
        site_hours: bool,
    },
    /// Whether the widget offers the site's groups to choose from before
    /// the first message, on pages whose widget names no data-group.
    Choice {
        site: String,
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CannedCmd {
    /// Print the list as CSV (RFC 4180) with the header shortcut,body.
    Export {
        /// The site key.
        site: String,
        /// This agent's own list instead of the site's.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Read a CSV file (header shortcut,body; `-` for standard input): a
    /// row whose shortcut the list has replaces its text, the others are
    /// added. One bad row refuses the whole file, naming the row. Agents
    /// signed in get the new list within a second (`lists::watch`).
    Import {
        /// The site key.
        site: String,
        file: PathBuf,
        /// Into this agent's own list instead of the site's.
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AgentCmd {
    /// Add an agent to a site. The password is read from HOLDFAST_PASSWORD or --password.
    Add {
        username: String,
        #[arg(long)]
        site: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, env = "HOLDFAST_PASSWORD", hide_env_values = true)]
        password: String,
        /// Maximum concurrent chats.
        #[arg(long, default_value_t = 5)]
        capacity: u32,
        /// agent, supervisor (reads and transfers every chat of the site)
        /// or admin.
        #[arg(long, default_value = "agent")]
        role: Role,
    },
    /// Change an agent's role, capacity or display name. Sessions stay open.
    Set {
        username: String,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        capacity: Option<u32>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Set an agent's password. Sessions signed in with the old one end.
    Passwd {
        username: String,
        #[arg(long, env = "HOLDFAST_PASSWORD", hide_env_values = true)]
        password: String,
    },
    List,
    /// Disable (or with --enable, re-enable) an agent. Its sessions end at
    /// once and its open chats go back to the queue.
    Disable {
        username: String,
        #[arg(long)]
        enable: bool,
    },
}

/// glibc raises its mmap threshold to the size of the largest block freed
/// (up to 32 MiB). After the first agent login, every Argon2 buffer (19 MiB)
/// therefore came from a heap arena and stayed resident: five logins left the
/// idle server at 67 MB instead of 10 MB (BENCHMARKS.md). A fixed threshold
/// keeps big buffers in their own mappings, which go back to the OS on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn fixed_mmap_threshold() {
    // SAFETY: mallopt only changes an allocator tunable and takes no
    // pointers. It runs early in main, before the runtime or any other
    // thread exists.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
    if ok != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) failed; idle RSS may stay high after logins");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    fixed_mmap_threshold();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => serve(*a),
        Cmd::InviteRule { cmd, dir } => {
            let (_, conn) = dir.open()?;
            invite_rule(conn.db(), cmd)
        }
        Cmd::Canned { cmd, dir } => canned(&dir, cmd),
        Cmd::Group { cmd, dir } => {
            let (_, conn) = dir.open()?;
            group(conn.db(), cmd)
        }
        Cmd::Fingerprint { dir } => {
            let id = match dir.database()? {
                store::Database::Sqlite(path) => identity::load_or_create(&path),
                db @ store::Database::Postgres(_) => {
                    let conn = db.open_current().context("opening the database")?;
                    identity::load_or_create_for(&db, conn.db())
                }
            }
            .context("loading the server key")?;
            println!("{}", id.fingerprint());
            Ok(())
        }
        Cmd::Migrate { dir } => {
            let db = dir.database()?;
            let conn = db.open().context("migrating the database")?;
            let id =
                identity::load_or_create_for(&db, conn.db()).context("loading the server key")?;
            let version = match db {
                store::Database::Sqlite(_) => store::schema::SCHEMA_VERSION,
                store::Database::Postgres(_) => store::schema_pg::SCHEMA_VERSION,
            };
            println!(
                "schema is at version {version}; server key fingerprint {}",
                id.fingerprint()
            );
            Ok(())
        }
        Cmd::Site { cmd, dir } => {
            let (_, conn) = dir.open()?;
            let conn = conn.db();
            match cmd {
                SiteCmd::Add {
                    key,
                    name,
                    secret,
                    origins,
                } => {
                    let name = name.unwrap_or_else(|| key.clone());
                    let mut s = admin::add_site(conn, &key, &name, secret.as_deref())?;
                    if !origins.is_empty() {
                        s = admin::set_site_origins(conn, &key, &origins)?;
                    }
                    println!(
                        "site {} added (id {}); embed with data-site=\"{}\"",
                        s.key, s.id, s.key
                    );
                }
                SiteCmd::Origins { key, origins } => {
                    let s = admin::set_site_origins(conn, &key, &origins)?;
                    println!("{}: {}", s.key, origins_text(&s.origins));
                }
                SiteCmd::Attachments {
                    key,
                    max_mb,
                    types,
                    rate_kb,
                    reset,
                } => {
                    let rules = admin::AttachRules {
                        max_bytes: max_mb.map(|m| m.saturating_mul(1024 * 1024)),
                        kinds: types,
                        rate: rate_kb.map(|k| k.saturating_mul(1024)),
                        reset,
                    };
                    let s = admin::set_site_attachments(conn, &key, &rules)?;
                    println!("{}: {}", s.key, attach_text(&s));
                }
                SiteCmd::Hours {
                    key,
                    tz,
                    open,
                    holidays,
                    always,
                } => {
                    let hours = match (always, &tz, &open) {
                        (false, Some(t), Some(o)) => {
                            Some((t.as_str(), o.as_str(), holidays.as_str()))
                        }
                        _ => None,
                    };
                    let s = admin::set_site_hours(conn, &key, hours)?;
                    println!("{}: {}", s.key, hours_text(&s));
                }
                SiteCmd::Tags {
                    key,
                    set,
                    add,
                    remove,
                } => {
                    let s = store::reads::site_by_key(conn, &key)?
                        .with_context(|| format!("no site with key {key:?}"))?;
                    let split = |l: &str| -> Vec<String> {
                        l.split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned)
                            .collect()
                    };
                    let s = if let Some(list) = set {
                        admin::set_site_tags(conn, &key, &split(&list))?
                    } else if add.is_some() || remove.is_some() {
                        let mut list = s.tags.clone();
                        list.extend(split(add.as_deref().unwrap_or_default()));
                        let gone = split(remove.as_deref().unwrap_or_default());
                        list.retain(|t| !gone.iter().any(|g| g.eq_ignore_ascii_case(t)));
                        admin::set_site_tags(conn, &key, &list)?
                    } else {
                        s
                    };
                    println!("{}: {}", s.key, tags_text(&s.tags));
                }
                SiteCmd::SneakPeek { key, state } => {
                    let s = admin::set_site_sneak_peek(conn, &key, state == "on")?;
                    println!("{}: {}", s.key, peek_text(&s));
                }
                SiteCmd::List => {
                    for s in store::reads::list_sites(conn)? {
                        let secret = if s.secret.is_some() {
                            "identify: verified"
                        } else {
                            "identify: open"
                        };
                        println!(
                            "{}\t{}\t{}\t{secret}\torigins: {}\t{}\t{}\t{}\t{}",
                            s.id,
                            s.key,
                            s.name,
                            origins_text(&s.origins),
                            attach_text(&s),
                            hours_text(&s),
                            tags_text(&s.tags),
                            peek_text(&s)
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Agent { cmd, dir } => {
            let (_, conn) = dir.open()?;
            let conn = conn.db();
            match cmd {
                AgentCmd::Add {
                    username,
                    site,
                    name,
                    password,
                    capacity,
                    role,
                } => {
                    let name = name.unwrap_or_else(|| username.clone());
                    let a =
                        admin::add_agent(conn, &site, &username, &name, &password, capacity, role)?;
                    println!(
                        "{} {} added (id {}) to site {site}",
                        a.role, a.username, a.id
                    );
                }
                AgentCmd::Set {
                    username,
                    role,
                    capacity,
                    name,
                } => {
                    let a = admin::update_agent(conn, &username, role, capacity, name.as_deref())?;
                    println!(
                        "{}: {} · {} · capacity {}",
                        a.username, a.display_name, a.role, a.capacity
                    );
                }
                AgentCmd::Passwd { username, password } => {
                    admin::set_password(conn, &username, &password)?;
                    println!("password changed for {username}");
                }
                AgentCmd::List => {
                    let sites = store::reads::list_sites(conn)?;
                    for a in store::reads::list_agents(conn)? {
                        let site = sites
                            .iter()
                            .find(|s| s.id == a.site)
                            .map_or("?", |s| s.key.as_str());
                        let state = if a.disabled { "disabled" } else { "enabled" };
                        println!(
                            "{}\t{}\t{}\t{site}\t{}\tcapacity {}\t{state}",
                            a.id, a.username, a.display_name, a.role, a.capacity
                        );
                    }
                }
                AgentCmd::Disable { username, enable } => {
                    admin::set_disabled(conn, &username, !enable)?;
                    println!("{username} {}", if enable { "enabled" } else { "disabled" });
                }
            }
            Ok(())
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let file = match &a.config {
        Some(p) => config::load_file(p)?,
        None => config::Settings::default(),
    };
    let cfg = config::resolve(a.settings.over(file))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // Handlers go in before the ports open: a supervisor that sees the
        // port and sends SIGTERM at once must get a clean shutdown, not the
        // default action's kill.
        let signalled = shutdown_signal();
        let server = holdfast_server::start(cfg).await?;
        signalled.await;
        tracing::info!("shutting down: no new connections, flushing the writer");
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn tags_text(tags: &[String]) -> String {
    if tags.is_empty() {
        "tags: none".into()
    } else {
        format!("tags: {}", tags.join(", "))
    }
}

fn peek_text(s: &store::reads::SiteRow) -> &'static str {
    if s.sneak_peek {
        "sneak peek: on"
    } else {
        "sneak peek: off"
    }
}

fn hours_text(s: &store::reads::SiteRow) -> String {
    match &s.hours {
        None => "hours: always open".into(),
        Some((tz, week, holidays)) if holidays.is_empty() => format!("hours: {week} ({tz})"),
        Some((tz, week, holidays)) => format!("hours: {week} ({tz}); closed {holidays}"),
    }
}

fn attach_text(s: &store::reads::SiteRow) -> String {
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "server default".into());
    format!(
        "attachments: max {}, types {}, rate {}",
        or_default(
            s.attach_max_bytes
                .map(|b| format!("{} MB", b / (1024 * 1024)))
        ),
        or_default(s.attach_kinds.map(|k| k.names())),
        or_default(s.attach_rate.map(|r| format!("{} KB/s", r / 1024))),
    )
}

fn origins_text(origins: &[String]) -> String {
    if origins.is_empty() {
        "any".to_owned()
    } else {
        origins.join(" ")
    }
}

/// Registers the handlers now and returns a future that ends on the first
/// SIGINT or SIGTERM (Ctrl-C elsewhere).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match handlers {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ignored = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ignored = tokio::signal::ctrl_c().await;
        }
    }
}

fn group_text(
    conn: &dyn holdfast_server::store::Db,
    g: &holdfast_server::groups::Group,
) -> anyhow::Result<String> {
    let mut names = Vec::new();
    for a in &g.members {
        if let Some(r) = store::reads::agent_by_id(conn, *a)? {
            names.push(r.username);
        }
    }
    let hours = match &g.hours {
        None => "hours: the site's".to_owned(),
        Some((tz, week, h)) if h.is_empty() => format!("hours: {week} ({tz})"),
        Some((tz, week, h)) => format!("hours: {week} ({tz}); closed {h}"),
    };
    Ok(format!(
        "{}\t{}\tmembers: {}\t{hours}",
        g.key,
        g.name,
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    ))
}

// A CLI: its answers are its output.
#[allow(clippy::print_stdout)]
fn group(conn: &dyn holdfast_server::store::Db, cmd: GroupCmd) -> anyhow::Result<()> {
    use holdfast_server::groups;
    match cmd {
        GroupCmd::Add { site, key, name } => {
            let name = name.unwrap_or_else(|| key.clone());
            let g = groups::add(conn, &site, &key, &name)?;
            println!(
                "{site}: group {} added; target it with data-group=\"{}\"",
                g.key, g.key
            );
        }
        GroupCmd::Rename { site, key, name } => {
            let g = groups::rename(conn, &site, &key, &name)?;
            println!("{site}: {}", group_text(conn, &g)?);
        }
        GroupCmd::Remove { site, key } => {
            groups::remove(conn, &site, &key)?;
            println!("{site}: group {key} removed; its open chats go to the site-wide queue");
        }
        GroupCmd::List { site } => {
            let id = store::reads::site_by_key(conn, &site)?
                .with_context(|| format!("no site with key {site:?}"))?
                .id;
            println!(
                "{site}: choice before the first message {}",
                if groups::choice(conn, &site)? {
                    "on"
                } else {
                    "off"
                }
            );
            for g in groups::list(conn, id)? {
                println!("{}", group_text(conn, &g)?);
            }
        }
        GroupCmd::Members {
            site,
            key,
            add,
            remove,
        } => {
            let clean = |l: Vec<String>| -> Vec<String> {
                l.into_iter()
                    .map(|u| u.trim().to_owned())
                    .filter(|u| !u.is_empty())
                    .collect()
            };
            let g = groups::members(conn, &site, &key, &clean(add), &clean(remove))?;
            println!("{site}: {}", group_text(conn, &g)?);
        }
        GroupCmd::Hours {
            site,
            key,
            tz,
            open,
            holidays,
            site_hours,
        } => {
            let hours = match (site_hours, &tz, &open) {
                (false, Some(t), Some(o)) => Some((t.as_str(), o.as_str(), holidays.as_str())),
                _ => None,
            };
            let g = groups::set_hours(conn, &site, &key, hours)?;
            println!("{site}: {}", group_text(conn, &g)?);
        }
        GroupCmd::Choice { site, state } => {
            if let Some(s) = state {
                groups::set_choice(conn, &site, s == "on")?;
            }
            println!(
                "{site}: choice of group before the first message {}",
                if groups::choice(conn, &site)? {
                    "on"
                } else {
                    "off"
                }
            );
        }
    }
    Ok(())
}

// A CLI: its answers are its output.
#[allow(clippy::print_stdout)]
fn canned(dir: &DataDir, cmd: CannedCmd) -> anyhow::Result<()> {
    use holdfast_server::canned::admin;
    match cmd {
        CannedCmd::Export { site, agent } => {
            let (_, conn) = dir.open()?;
            print!("{}", admin::export(conn.db(), &site, agent.as_deref())?);
        }
        CannedCmd::Import { site, file, agent } => {
            // Read before opening the database: a wrong path changes
            // nothing and holds no lock.
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let (_, conn) = dir.open()?;
            let done = admin::import(conn.db(), &site, agent.as_deref(), &text)
                .with_context(|| format!("{} was not imported; nothing changed", file.display()))?;
            let list =
                agent.map_or_else(|| "the site's list".to_owned(), |a| format!("{a}'s list"));
            println!(
                "{site}: {} added, {} replaced in {list}",
                done.added, done.replaced
            );
        }
    }
    Ok(())
}

// A CLI: its answers are its output.
#[allow(clippy::print_stdout)]
fn invite_rule(conn: &dyn holdfast_server::store::Db, cmd: InviteRuleCmd) -> anyhow::Result<()> {
    use holdfast_server::invite::admin;
    let show = |r: &holdfast_server::invite::rule::Rule| {
        format!(
            "{}{}: {} -> {:?}",
            r.name,
            if r.enabled { "" } else { " (off)" },
            r.describe(),
            r.text
        )
    };
    match cmd {
        InviteRuleCmd::Add {
            site,
            name,
            text,
            url,
            after_site,
            after_page,
            returning,
            first_visit,
            referrer,
            campaign,
            attr,
        } => {
            let spec = admin::RuleSpec {
                name,
                text,
                url,
                site_secs: after_site,
                page_secs: after_page,
                returning: match (returning, first_visit) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                referrer,
                campaign,
                attr,
            };
            let r = admin::add_rule(conn, &site, &spec)?;
            println!("{site}: added {}", show(&r));
        }
        InviteRuleCmd::List { site } => {
            let s = holdfast_server::store::reads::site_by_key(conn, &site)?
                .with_context(|| format!("no site with key {site:?}"))?;
            let rules = admin::rules(conn, Some(s.id))?;
            if rules.is_empty() {
                println!("{site}: no invitation rules");
            }
            let now = holdfast_server::store::now_ms();
            for r in rules {
                let c = admin::counts(conn, r.id, now)?;
                println!(
                    "{}\tfired {}\tshown {}\taccepted {}\tignored {}",
                    show(&r),
                    c.fired,
                    c.shown,
                    c.accepted,
                    c.ignored
                );
            }
        }
        InviteRuleCmd::Remove { site, name } => {
            let r = admin::remove_rule(conn, &site, &name)?;
            println!("{site}: removed {}", r.name);
        }
        InviteRuleCmd::Enable { site, name } => {
            let r = admin::set_enabled(conn, &site, &name, true)?;
            println!("{site}: {}", show(&r));
        }
        InviteRuleCmd::Disable { site, name } => {
            let r = admin::set_enabled(conn, &site, &name, false)?;
            println!("{site}: {}", show(&r));
        }
    }
    Ok(())
}
