//! A throwaway HAProxy for tests: Debian's `haproxy` binary run in the
//! foreground by the test, with its config in a temp dir, never the system
//! service. A test can SIGKILL it and start it again on the same ports;
//! dropping it kills it.
//!
//! [`deploy_config`] turns the shipped `deploy/haproxy.cfg` into one for a
//! test by replacing its example addresses with loopback ports, so the test
//! exercises the file users copy, not a look-alike.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, or what `HOLDFAST_HAPROXY` names.
fn binary() -> PathBuf {
    std::env::var_os("HOLDFAST_HAPROXY").map_or_else(|| PathBuf::from("haproxy"), PathBuf::from)
}

/// One `haproxy` process with a fixed config (and so fixed ports).
#[derive(Debug)]
pub struct HaProxy {
    dir: tempfile::TempDir,
    listen: Vec<SocketAddr>,
    child: Option<Child>,
}

impl HaProxy {
    /// Check `config` with `haproxy -c`, then run it, and wait until every
    /// address in `listen` (the config's `bind`s) accepts connections.
    /// Panics (failing the test) with HAProxy's own words if either fails.
    pub fn start(config: &str, listen: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("haproxy.cfg"), config).unwrap();
        let mut h = Self {
            dir,
            listen: listen.to_vec(),
            child: None,
        };
        let check = Command::new(binary())
            .arg("-c")
            .arg("-f")
            .arg(h.config_path())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (scripts/test-all installs haproxy)",
                    binary().display()
                )
            });
        assert!(
            check.status.success(),
            "haproxy -c refused the config:\n{}{}\n--- config ---\n{config}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        h.spawn();
        h
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    /// What HAProxy wrote (its `log stdout` lines and its warnings), for a
    /// failing test's message: each line of a cut connection says which
    /// side and which timer ended it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        crate::server::child_running(&mut self.child)
    }

    /// SIGKILL: every connection through it is reset.
    pub fn kill9(&mut self) {
        crate::server::kill_child(&mut self.child);
    }

    /// Start again with the same config and ports.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            // -db: foreground, no daemon, so the child's pid is HAProxy's
            // and kill9 reaches it.
            let mut child = Command::new(binary())
                .arg("-db")
                .arg("-f")
                .arg(self.config_path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let ready = loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break false;
                }
                if self
                    .listen
                    .iter()
                    .all(|a| std::net::TcpStream::connect(a).is_ok())
                {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("haproxy did not start listening:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if ready {
                self.child = Some(child);
                return;
            }
            // Exited: most likely a port still held by a killed predecessor.
            assert!(
                Instant::now() < deadline,
                "haproxy kept exiting:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The state (`UP`, `DOWN`, `MAINT`...) of `backend/server` from the
    /// stats page at `stats` (the config's `stats uri /`), or `None` if
    /// the page cannot be read.
    pub async fn server_status(stats: SocketAddr, backend: &str, server: &str) -> Option<String> {
        let (status, body) = crate::visitor::http_request(stats, "GET", "/;csv", None)
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        // CSV columns: pxname, svname, ..., status is the 18th.
        String::from_utf8_lossy(&body).lines().find_map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols.first() == Some(&backend) && cols.get(1) == Some(&server))
                .then(|| cols.get(17).map(|s| (*s).to_owned()))
                .flatten()
        })
    }

    /// Wait (up to 30 s) until the stats page says `backend/server` is UP.
    pub async fn wait_up(stats: SocketAddr, backend: &str, server: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = Self::server_status(stats, backend, server).await;
            if st.as_deref().is_some_and(|s| s.starts_with("UP")) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend}/{server} never came UP (last status {st:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Where the balancer listens and where the one Holdfast node under test
/// is, for [`deploy_config`].
#[derive(Debug, Clone, Copy)]
pub struct DeployAddrs {
    /// The balancer's visitor (HTTP/WebSocket) port.
    pub visitors: SocketAddr,
    /// The balancer's agent (TCP) port.
    pub agents: SocketAddr,
    /// The balancer's stats page.
    pub stats: SocketAddr,
    /// The node's `--http`.
    pub node_http: SocketAddr,
    /// The node's `--agent-listen`.
    pub node_agent: SocketAddr,
}

/// The shipped `deploy/haproxy.cfg`, made runnable for a test:
/// - its example listen addresses and its first node's addresses are
///   replaced by `addrs`;
/// - the other example nodes, if they are uncommented, are dropped (they
///   do not exist here, and a server that is not there would take traffic
///   until its checks fail);
/// - `user`, `group` and `chroot` are dropped: the test runs HAProxy as
///   itself, which may not be root.
///
/// Each replaced text must be found, so a change to the shipped file that
/// this does not know about fails the test instead of testing something
/// else.
pub fn deploy_config(addrs: DeployAddrs) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut text: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("server node2")
                || t.starts_with("server node3")
                || t.starts_with("user ")
                || t.starts_with("group ")
                || t.starts_with("chroot "))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    for (from, to) in [
        ("bind :80", format!("bind {}", addrs.visitors)),
        ("bind :7070", format!("bind {}", addrs.agents)),
        ("bind 127.0.0.1:8404", format!("bind {}", addrs.stats)),
        (
            "server node1 10.0.0.11:8080",
            format!("server node1 {}", addrs.node_http),
        ),
        (
            "server node1 10.0.0.11:7070",
            format!("server node1 {}", addrs.node_agent),
        ),
    ] {
        assert!(
            text.contains(from),
            "deploy/haproxy.cfg no longer has {from:?}; update tests/src/haproxy.rs"
        );
        text = text.replace(from, &to);
    }
    text
}

/// Where the balancer listens and where each node is, for
/// [`cluster_config`].
#[derive(Debug, Clone)]
pub struct ClusterAddrs {
    pub visitors: SocketAddr,
    pub agents: SocketAddr,
    pub stats: SocketAddr,
    /// Each node's `--http` and `--agent-listen`, node1 first.
    pub nodes: Vec<(SocketAddr, SocketAddr)>,
}

/// The shipped `deploy/haproxy.cfg` for a cluster of up to three nodes
/// (the file's node1–node3): the example nodes the cluster has are
/// uncommented and pointed at its nodes, the others dropped; listen
/// addresses, `user`, `group` and `chroot` as in [`deploy_config`]. Every
/// node line must be found in both backends, so the test runs the file
/// users copy.
pub fn cluster_config(addrs: &ClusterAddrs) -> String {
    assert!(
        (1..=3).contains(&addrs.nodes.len()),
        "deploy/haproxy.cfg names three nodes"
    );
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut found = vec![0; addrs.nodes.len()];
    let mut out = String::new();
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with("user ") || t.starts_with("group ") || t.starts_with("chroot ") {
            continue;
        }
        // `server nodeK 10.0.0.1K:PORT ...`, commented out or not.
        let bare = t.trim_start_matches('#').trim_start();
        let node = bare
            .strip_prefix("server node")
            .and_then(|r| r.split(' ').next())
            .and_then(|k| k.parse::<usize>().ok());
        let Some(k) = node else {
            out.push_str(l);
            out.push('\n');
            continue;
        };
        let Some((http, agent)) = addrs.nodes.get(k - 1) else {
            continue;
        };
        let mut words: Vec<String> = bare.split(' ').map(str::to_owned).collect();
        let to = match words.get(2).map(String::as_str) {
            Some(a) if a == format!("10.0.0.1{k}:8080") => http,
            Some(a) if a == format!("10.0.0.1{k}:7070") => agent,
            other => {
                panic!("deploy/haproxy.cfg: node{k} at {other:?}; update tests/src/haproxy.rs")
            }
        };
        words[2] = to.to_string();
        found[k - 1] += 1;
        out.push_str("    ");
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    assert!(
        found.iter().all(|n| *n == 2),
        "deploy/haproxy.cfg: node lines found per node {found:?}, expected one per backend"
    );
    for (from, to) in [
        ("bind :80", format!("bind {}", addrs.visitors)),
        ("bind :7070", format!("bind {}", addrs.agents)),
        ("bind 127.0.0.1:8404", format!("bind {}", addrs.stats)),
    ] {
        assert!(
            out.contains(from),
            "deploy/haproxy.cfg no longer has {from:?}; update tests/src/haproxy.rs"
        );
        out = out.replace(from, &to);
    }
    out
}

/// A counter of `backend/server` from the stats page's CSV: column `col`
/// (4 is current sessions, 7 total sessions).
pub async fn server_stat(
    stats: SocketAddr,
    backend: &str,
    server: &str,
    col: usize,
) -> Option<u64> {
    let (status, body) = crate::visitor::http_request(stats, "GET", "/;csv", None)
        .await
        .ok()?;
    if status != 200 {
        return None;
    }
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        let cols: Vec<&str> = l.split(',').collect();
        (cols.first() == Some(&backend) && cols.get(1) == Some(&server))
            .then(|| cols.get(col).and_then(|s| s.parse().ok()))
            .flatten()
    })
}
