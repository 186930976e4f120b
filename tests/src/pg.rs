//! A private PostgreSQL for tests: `initdb` and `postgres` from Debian's
//! `postgresql` package (`/usr/lib/postgresql/*/bin`), in a temp dir, on a
//! free loopback port, with its unix socket in the temp dir and fsync on (off for the
//! end-to-end suites' [`shared`] one).
//! Nothing depends on a system service, so tests run in parallel, and a test
//! may SIGKILL the server and start it again on the same data.
//!
//! PostgreSQL refuses to run as root, and tests (CI too) run as root: then
//! the temp dir is handed to the `postgres` system user and both programs
//! run as that user (uid and gid set on the child, so the child's pid is the
//! server's and a kill reaches it). As anyone else they run as is.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway PostgreSQL server; stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct TestPg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
    /// The uid and gid to run as, when this process is root.
    run_as: Option<(u32, u32)>,
    /// Flush to disk at each commit (`fsync`); see [`TestPg::start_unsynced`].
    fsync: bool,
}

/// The newest installed PostgreSQL's programs, or `HOLDFAST_PG_BIN`.
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_PG_BIN") {
        return p.into();
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .expect("PostgreSQL is not installed: apt-get install postgresql (scripts/test-all does)")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The `postgres` system user's uid and gid, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres")).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("running as root needs the `postgres` user (Debian's postgresql package adds it)")
}

/// Fill `data` with a fresh cluster: a copy of one `initdb` made once per
/// machine (per PostgreSQL build and user), which takes a second of CPU,
/// where copying its 40 MB takes a tenth of that. The end-to-end suites
/// start a cluster in every test process, so that second adds up.
fn init_data(bin: &Path, data: &Path, run_as: Option<(u32, u32)>) {
    let template = template(bin, run_as);
    // `cp -a` keeps the owner (the `postgres` user when root) and the 0700
    // modes PostgreSQL insists on.
    let out = Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "copying the initdb template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `initdb` template for [`init_data`], made on first use under a file
/// lock (test processes start in parallel) and marked complete only once
/// `initdb` succeeded, so a killed run never leaves a half-made one in use.
fn template(bin: &Path, run_as: Option<(u32, u32)>) -> PathBuf {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    (bin, run_as).hash(&mut h);
    let root = std::env::temp_dir().join(format!("holdfast-pg-template-{:016x}", h.finish()));
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join("lock")).unwrap();
    lock.lock().unwrap();
    let data = root.join("data");
    let done = root.join("complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&data);
        let work = root.join("work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&work, Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "holdfast",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&work)
            .stdout(Stdio::null());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // --no-sync above: make the template durable before calling it done.
        let _ = Command::new("sync").arg("-f").arg(&data).status();
        std::fs::write(&done, "").unwrap();
    }
    data
}

impl TestPg {
    /// initdb and start a server; returns once it accepts connections.
    pub fn start() -> Self {
        Self::start_with_fsync(true)
    }

    /// Like [`TestPg::start`] with `fsync=off`: commits still wait for their
    /// WAL write, so nothing a test can do short of crashing the machine
    /// (killing servers, or this PostgreSQL) tells the difference, but a
    /// commit no longer waits for the disk, which a busy CI machine's builds
    /// keep busy. For [`shared`]; the store's own durability tests
    /// (`store_pg.rs`) keep fsync on, as production does.
    pub fn start_unsynced() -> Self {
        Self::start_with_fsync(false)
    }

    fn start_with_fsync(fsync: bool) -> Self {
        let bin = pg_bin();
        // Without fsync nothing needs a disk: in memory, copying the cluster
        // and CREATE DATABASE take tens of milliseconds instead of seconds
        // behind a busy machine's writeback.
        let shm = Path::new("/dev/shm");
        let parent = if !fsync && shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg")
            .tempdir_in(parent)
            .unwrap();
        let run_as = is_root().then(postgres_user);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        init_data(&bin, &dir.path().join("data"), run_as);
        let mut pg = Self {
            dir,
            bin,
            port: crate::server::free_port(),
            child: None,
            run_as,
            fsync,
        };
        pg.spawn();
        pg
    }

    /// `postgres://` URL of the `postgres` database, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://holdfast@127.0.0.1:{}/postgres", self.port)
    }

    /// A fresh database on this server; its URL.
    pub fn create_db(&self, name: &str) -> String {
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://holdfast@127.0.0.1:{}/{name}", self.port)
    }

    /// Run one SQL command in the `postgres` database; see [`TestPg::psql_in`].
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Run one SQL command in database `db` with `psql` (a child process,
    /// so it works from async tests too); its output, unaligned and without
    /// headers.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!("postgres://holdfast@127.0.0.1:{}/{db}", self.port))
            .arg("-c")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Start the server on the existing data (after [`TestPg::kill9`] too:
    /// it then runs crash recovery first).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            let mut cmd = Command::new(self.bin.join("postgres"));
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    if self.fsync { "fsync=on" } else { "fsync=off" },
                    "-c",
                    "synchronous_commit=on",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=32MB",
                    // A deadlock between two nodes' batches is found (and
                    // one batch redone) sooner than the default 1 s.
                    "-c",
                    "deadlock_timeout=100ms",
                ])
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if let Some((uid, gid)) = self.run_as {
                cmd.uid(uid).gid(gid);
            }
            let mut child = cmd.spawn().unwrap();
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if self.is_ready() {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("postgres did not start: {}", self.log_tail());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if ready {
                self.child = Some(child);
                return;
            }
            // Exited: after a SIGKILL the old backends may still hold the
            // shared memory for a moment. Try again.
            assert!(
                Instant::now() < deadline,
                "postgres kept exiting: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL the postmaster: no shutdown, no checkpoint.
    pub fn kill9(&mut self) {
        crate::server::kill_child(&mut self.child);
    }

    /// Immediate shutdown (SIGQUIT), then SIGKILL if it lingers.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-QUIT")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// This test process's PostgreSQL, started on first use and shared by every
/// test in the process that asks for a database (each gets its own, see
/// [`fresh_database`]), so a suite pays for `initdb` once per process, not
/// once per test.
///
/// A static is never dropped, so [`TestPg::reap_on_exit`] stops it when the
/// process ends, however it ends.
pub fn shared() -> &'static TestPg {
    static SHARED: std::sync::OnceLock<TestPg> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let pg = TestPg::start_unsynced();
        pg.reap_on_exit();
        pg
    })
}

/// A new, empty database on [`shared`]; its URL. Each name is unique in the
/// process (and the cluster is the process's own), so parallel tests never
/// see each other's rows.
pub fn fresh_database() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared().create_db(&format!("holdfast_test_{n}"))
}

impl TestPg {
    /// Stop this server and remove its files once this process exits, even
    /// by a panic, `process::exit` or SIGKILL: nextest runs each test as a
    /// process that exits without dropping statics.
    ///
    /// A watchdog shell blocks reading a pipe whose only write end this
    /// process holds (std opens it close-on-exec, so no other child inherits
    /// it); the kernel closes it when the process dies, the read returns,
    /// and the watchdog shuts PostgreSQL down immediately (SIGQUIT, then
    /// SIGKILL if it lingers) and deletes the temp dir.
    fn reap_on_exit(&self) {
        let Some(child) = &self.child else { return };
        let script = r#"read _ignored
kill -QUIT "$1" 2>/dev/null
i=0
while [ $i -lt 100 ] && [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
done
kill -KILL "$1" 2>/dev/null
rm -rf "$2""#;
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(child.id().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the PostgreSQL watchdog");
        // Held (never closed) until the process exits: that close is the
        // signal. The watchdog itself outlives us on purpose.
        std::mem::forget(watchdog.stdin.take());
        std::mem::forget(watchdog);
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        self.stop();
    }
}
