//! A private PostgreSQL for tests: `initdb` and `postgres` from Debian's
//! `postgresql` package (`/usr/lib/postgresql/*/bin`), in a temp dir, on a
//! free loopback port, with its unix socket in the temp dir and fsync on.
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

impl TestPg {
    /// initdb and start a server; returns once it accepts connections.
    pub fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("holdfast-pg")
            .tempdir()
            .unwrap();
        let run_as = is_root().then(postgres_user);
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "holdfast",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path())
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
        let mut pg = Self {
            dir,
            bin,
            port: crate::server::free_port(),
            child: None,
            run_as,
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
                    "fsync=on",
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPg {
    fn drop(&mut self) {
        self.stop();
    }
}
