//! Real servers for tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::Role;
use holdfast_server::config::ServerConfig;
use holdfast_server::{RunningServer, admin, store};

/// Which store a test's server runs on. The end-to-end suites run each body
/// on both (see [`crate::on_both_backends`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the data dir, the default.
    Sqlite,
    /// A fresh database on this test process's shared PostgreSQL
    /// ([`crate::pg::shared`]).
    Postgres,
}

impl Backend {
    /// A new, empty store for one test: `None` for SQLite (in whatever data
    /// dir the test uses), or the URL of a new PostgreSQL database.
    pub fn fresh_database(self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(crate::pg::fresh_database()),
        }
    }
}

/// A server running in this process on loopback ports chosen by the OS.
#[derive(Debug)]
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub site_key: String,
    /// The PostgreSQL URL the server runs on; `None` for SQLite in `dir`.
    pub database: Option<String>,
}

pub const PASSWORD: &str = "hunter22";

/// Create the data dir with one site "acme" and agents `alice` and `bob`
/// (password [`PASSWORD`]), plus a second site "other" with agent `mallory`.
pub fn seed(dir: &Path) {
    seed_on(dir, None);
}

/// [`seed`] on the given store: SQLite in `dir` when `database` is `None`,
/// else that PostgreSQL database (the data dir is still created: the server
/// keeps its key there). On PostgreSQL this first migrates the schema, as
/// an operator's `holdfast-server migrate` would, so servers started on it
/// afterwards need no `--migrate`.
pub fn seed_on(dir: &Path, database: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let db = store::Database::new(database, dir).unwrap();
    // PostgreSQL's synchronous client runs a runtime of its own and panics
    // inside a tokio one, and async tests seed too: a plain thread is
    // neither.
    std::thread::scope(|s| {
        s.spawn(|| {
            let conn = db.open().unwrap();
            let conn = conn.db();
            admin::add_site(conn, "acme", "Acme", None).unwrap();
            admin::add_site(conn, "other", "Other Co", Some("other-secret")).unwrap();
            admin::add_agent(conn, "acme", "alice", "Alice", PASSWORD, 2, Role::Agent).unwrap();
            admin::add_agent(conn, "acme", "bob", "Bob", PASSWORD, 2, Role::Agent).unwrap();
            admin::add_agent(
                conn,
                "other",
                "mallory",
                "Mallory",
                PASSWORD,
                2,
                Role::Agent,
            )
            .unwrap();
        })
        .join()
        .unwrap();
    });
}

/// A server on `dir` runs on the store it was given: the SQLite file is
/// there exactly when no PostgreSQL URL was, so a `::postgres` test that
/// quietly ran on SQLite fails here.
fn assert_store(dir: &Path, database: Option<&str>) {
    assert_eq!(
        dir.join(store::DB_FILE).exists(),
        database.is_none(),
        "the server in {} is not on the store it was given ({database:?})",
        dir.display()
    );
}

/// [`fast_config`] on the given store (see [`seed_on`]).
pub fn fast_config_on(dir: &Path, database: Option<&str>) -> ServerConfig {
    let mut cfg = fast_config(dir);
    cfg.database = database.map(|u| store::PgTarget::parse(u).unwrap());
    cfg
}

/// Settings for fast tests: short heartbeats, loopback.
pub fn fast_config(dir: &Path) -> ServerConfig {
    let mut cfg = ServerConfig::for_tests(dir.to_path_buf());
    // Scripted agents only talk when a test makes them, so the server's
    // silence cut is long here; liveness tests set short values themselves.
    cfg.liveness.heartbeat = Duration::from_millis(500);
    cfg.liveness.dead_after = Duration::from_secs(60);
    cfg.visitor.liveness.heartbeat = Duration::from_millis(200);
    // Scripted visitors only talk when a test makes them, so their silence
    // cut is long; tests of it set their own.
    cfg.visitor.liveness.dead_after = Duration::from_secs(60);
    cfg.visitor.poll_timeout = Duration::from_secs(2);
    cfg.hub.visitor_grace = Duration::from_millis(300);
    // Every test visitor and agent comes from 127.0.0.1: the per-address
    // shares would make them all one greedy neighbour. Tests of those
    // limits set their own.
    let r = &mut cfg.visitor.rates;
    for rate in [
        &mut r.visitor_messages,
        &mut r.visitor_pages,
        &mut r.visitor_identifies,
        &mut r.addr_messages,
        &mut r.addr_pages,
        &mut r.addr_identifies,
        &mut r.addr_new_visitors,
        &mut r.addr_http_requests,
    ] {
        *rate = holdfast_server::limits::Rate::new(10_000.0, 100_000);
    }
    cfg.preauth.max_per_ip = cfg.preauth.max;
    cfg
}

/// Config-file lines for servers driven from one address by thousands of
/// clients (the load generator, the chaos run): no per-address or
/// per-visitor share gets in the way of the traffic they measure.
pub const LOOPBACK_LOAD_TOML: &str = "\
visitor_msg_rate = 100000.0
visitor_msg_burst = 100000.0
http_rate = 100000.0
http_burst = 100000.0
visitor_max_ws_per_ip = 100000
agent_max_per_ip = 100000
visitor_messages_per_sec = 100000.0
visitor_messages_burst = 100000
addr_messages_per_sec = 100000.0
addr_messages_burst = 100000
visitor_pages_per_sec = 100000.0
visitor_pages_burst = 100000
addr_pages_per_sec = 100000.0
addr_pages_burst = 100000
visitor_identifies_per_sec = 100000.0
visitor_identifies_burst = 100000
addr_identifies_per_sec = 100000.0
addr_identifies_burst = 100000
addr_new_visitors_per_sec = 100000.0
addr_new_visitors_burst = 100000
preauth_max_per_ip = 1024
http_max_per_ip = 100000
";

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_with_on(Backend::Sqlite, tweak).await
    }

    /// A seeded server on a fresh store of `backend`.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_with_on(backend, |_| {}).await
    }

    pub async fn start_with_on(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        crate::init_logs();
        let dir = tempfile::tempdir().unwrap();
        // Creating the database runs psql (and maybe starts PostgreSQL):
        // blocking, so off this async worker.
        let database = tokio::task::spawn_blocking(move || backend.fresh_database())
            .await
            .unwrap();
        seed_on(dir.path(), database.as_deref());
        let mut cfg = fast_config_on(dir.path(), database.as_deref());
        tweak(&mut cfg);
        let server = holdfast_server::start(cfg).await.unwrap();
        assert_store(dir.path(), database.as_deref());
        Self {
            dir,
            server: Some(server),
            site_key: "acme".into(),
            database,
        }
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn http(&self) -> SocketAddr {
        self.running().http_addr
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.running().agent_addr
    }

    /// Runs `f` on a connection of its own to this server's store, as the
    /// CLI would while the server runs (off the async workers: the
    /// PostgreSQL client blocks).
    pub async fn admin<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn holdfast_server::store::Db) -> T + Send + 'static,
    ) -> T {
        let (url, dir) = (self.database.clone(), self.dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || {
            let db = store::Database::new(url.as_deref(), &dir).unwrap();
            let conn = db.open_current().unwrap();
            f(conn.db())
        })
        .await
        .unwrap()
    }

    /// Graceful stop, then start again on the same data dir and ports.
    pub async fn restart(&mut self) {
        let old = self.server.take().unwrap();
        let (http, agent) = (old.http_addr, old.agent_addr);
        old.shutdown().await;
        let mut cfg = fast_config_on(self.dir.path(), self.database.as_deref());
        cfg.http = http;
        cfg.agent_listen = agent;
        // The old sockets may linger briefly; retry the bind.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match holdfast_server::start(cfg.clone()).await {
                Ok(s) => {
                    self.server = Some(s);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("restart bind retry: {e:#}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restart failed: {e:#}"),
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// Path of the `holdfast-server` binary, built for this test run.
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_SERVER_BIN") {
        return p.into();
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| workspace_binary("holdfast-server", "holdfast-server"))
        .clone()
}

/// Path of the desktop app (`holdfast-agent`) binary, built for this test
/// run, or the one `HOLDFAST_AGENT_BIN` names.
pub fn agent_app_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_AGENT_BIN") {
        return p.into();
    }
    workspace_binary("holdfast-agent", "holdfast-agent")
}

/// Binary `bin` of workspace package `package`, in this build's target dir
/// and profile, built first if stale: `cargo test -p holdfast-tests` does not
/// build another package's binaries.
///
/// Inside a test, the build selects what the suite selects (`cargo test
/// --no-run --workspace --all-targets`, which is what `scripts/test-all` has
/// just built), so it is a sub-second no-op there. That build includes a
/// package's binaries only because the package has integration tests of its
/// own (`server/tests/cli.rs`, `agent-desktop/tests/cli.rs`). Cargo resolves dependency
/// features over the packages it is asked for: `-p holdfast-agent` alone
/// turns off a few features of futures-util, iced_graphics and others, which
/// re-compiles a second copy of most of the tree in the middle of the run.
/// On a cold CI machine that cost minutes of both cores and gigabytes of
/// disk. A harness binary started by hand (`cargo run --bin holdfast-load`)
/// builds just the one package, as a user would expect.
pub fn workspace_binary(package: &str, bin: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // A test is target/<profile>/deps/<test>, an example
    // target/<profile>/examples/<name>, and a harness binary such as
    // holdfast-load target/<profile>/<bin>. Either way the binary is
    // target/<profile>/<bin>.
    let mut profile_dir = exe.parent().unwrap();
    let in_test = profile_dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples");
    if in_test {
        profile_dir = profile_dir.parent().unwrap();
    }
    let mut args = if in_test {
        vec!["test", "--no-run", "-q", "--workspace", "--all-targets"]
    } else {
        vec!["build", "-q", "-p", package, "--bin", bin]
    };
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        args.push("--release");
    }
    let status = Command::new(env!("CARGO"))
        .args(args)
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
        // So a harness binary works when started from any directory.
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "building {bin} failed");
    profile_dir.join(bin)
}

/// Pick a free loopback port (the OS may hand it out again, so use at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real server binary as a child process: SIGKILL it and restart it on
/// the same data dir and ports.
#[derive(Debug)]
pub struct ServerProcess {
    pub dir: PathBuf,
    pub http: SocketAddr,
    pub agent: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub admin: SocketAddr,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// `--database`: the PostgreSQL URL; `None` for SQLite in `dir`.
    pub database: Option<String>,
    /// RLIMIT_NOFILE (soft and hard) for the server, to test running out of
    /// descriptors without exhausting the machine's.
    pub nofile: Option<u64>,
}

impl ServerProcess {
    pub fn start(dir: &Path, extra_args: &[&str]) -> Self {
        Self::start_limited(dir, extra_args, None)
    }

    /// Like [`ServerProcess::start`], with the descriptor limit lowered to
    /// `nofile` when given.
    pub fn start_limited(dir: &Path, extra_args: &[&str], nofile: Option<u64>) -> Self {
        Self::start_on(dir, None, extra_args, nofile)
    }

    /// Like [`ServerProcess::start_limited`], on PostgreSQL database
    /// `database` when given (seed it with [`seed_on`]).
    pub fn start_on(
        dir: &Path,
        database: Option<&str>,
        extra_args: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        // A `--database URL` among the extra arguments is the store too:
        // taken out of them, so the store check knows it and it is passed once.
        let mut extra: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut database = database.map(str::to_owned);
        if let Some(i) = extra.iter().position(|a| a == "--database")
            && i + 1 < extra.len()
        {
            let url = extra.remove(i + 1);
            extra.remove(i);
            database.get_or_insert(url);
        }
        let mut p = Self {
            dir: dir.to_path_buf(),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            agent: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            child: None,
            extra_args: extra,
            database,
            nofile,
        };
        p.spawn_on_fresh_ports();
        p
    }

    /// Restart on the same ports (clients and balancers know them).
    pub fn spawn(&mut self) {
        self.spawn_with(false);
    }

    /// The first start. The ports came from [`free_port`], which frees them
    /// again before the server binds them, so a parallel test may take one
    /// meanwhile: then the server exits on the bind and is started again on
    /// new ones, rather than retried on a port someone else now holds.
    fn spawn_on_fresh_ports(&mut self) {
        self.spawn_with(true);
    }

    fn spawn_with(&mut self, new_ports_on_exit: bool) {
        let bin = server_binary();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The shell sets the limit and execs the server, so the child's
            // pid is the server's (kill9 and terminate reach it).
            let mut cmd = match self.nofile {
                Some(n) => {
                    let mut c = Command::new("sh");
                    c.arg("-c")
                        .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                        .arg(&bin);
                    c
                }
                None => Command::new(&bin),
            };
            let mut child = cmd
                .arg("serve")
                .arg("--data-dir")
                .arg(&self.dir)
                .arg("--http")
                .arg(self.http.to_string())
                .arg("--agent-listen")
                .arg(self.agent.to_string())
                .arg("--admin-listen")
                .arg(self.admin.to_string())
                .args(
                    self.database
                        .iter()
                        .flat_map(|u| ["--database", u.as_str()]),
                )
                .args(&self.extra_args)
                .env(
                    "HOLDFAST_LOG",
                    std::env::var("HOLDFAST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            // Ready when both ports accept.
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if std::net::TcpStream::connect(self.agent).is_ok()
                    && std::net::TcpStream::connect(self.http).is_ok()
                    && std::net::TcpStream::connect(self.admin).is_ok()
                {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("server process did not become ready");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                self.child = Some(child);
                assert_store(&self.dir, self.database.as_deref());
                return;
            }
            // Exited: a port still held by the killed predecessor (retry
            // on it), or taken by someone else before the first start.
            assert!(Instant::now() < deadline, "server process kept exiting");
            if new_ports_on_exit {
                self.http = SocketAddr::from(([127, 0, 0, 1], free_port()));
                self.agent = SocketAddr::from(([127, 0, 0, 1], free_port()));
                self.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A process's resident memory in MB, from `/proc`.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let kb = p.status().ok()?.vmrss?;
    Some(kb as f64 / 1024.0)
}

/// One counter or gauge from a server's admin listener (`/metrics`).
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = crate::visitor::http_request(admin, "GET", "/metrics", None)
        .await
        .ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// SIGKILL a harness's child process and reap it, if it is running: what
/// every `kill9` of the real server and of the engines the tests start does.
pub fn kill_child(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Whether a harness's child process is still running.
pub fn child_running(child: &mut Option<std::process::Child>) -> bool {
    child
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
}
