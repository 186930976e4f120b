//! A throwaway Redis for tests: Debian's `redis-server` binary, started by
//! the test itself on a free loopback port with its config and data in a
//! temp dir, never the system service. A test can SIGKILL it and start it
//! again on the same port (what a crashed and restarted Redis looks like to
//! its clients); dropping it kills it.
//!
//! Persistence is off: the bus only carries wake-ups, so a restarted Redis
//! is an empty one, as it would be after a crash without AOF.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// The binary, or what `HOLDFAST_REDIS_SERVER` names.
pub fn binary() -> PathBuf {
    std::env::var_os("HOLDFAST_REDIS_SERVER")
        .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from)
}

/// One `redis-server` process and the port it keeps across restarts.
#[derive(Debug)]
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Start on a free port; panics (failing the test) if Redis does not
    /// answer PING within 10 s.
    pub fn start() -> Self {
        let mut r = Self {
            dir: tempfile::tempdir().unwrap(),
            port: 0,
            child: None,
        };
        // The port is free when picked but another test may take it before
        // Redis binds it: then pick another.
        for _ in 0..5 {
            r.port = free_port();
            if r.try_spawn(Duration::from_secs(10)) {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports (is it installed?)");
    }

    /// The running server's process id (to pin it to a CPU, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://127.0.0.1:<port>`, what `--bus` takes.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    pub fn is_running(&mut self) -> bool {
        crate::server::child_running(&mut self.child)
    }

    /// SIGKILL: clients see their connections reset, nothing is flushed.
    pub fn kill9(&mut self) {
        crate::server::kill_child(&mut self.child);
    }

    /// Start again on the same port (after [`RedisServer::kill9`]). The
    /// port was ours a moment ago, so keep trying it rather than moving:
    /// the clients under test only know this address.
    pub fn restart(&mut self) {
        self.kill9();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.try_spawn(Duration::from_secs(10)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not start again on port {}", self.port);
    }

    /// Send one inline command and return the first reply line (enough for
    /// PING, PUBLISH and CLIENT KILL in tests).
    pub fn command(&self, line: &str) -> std::io::Result<String> {
        command(self.addr(), line)
    }

    /// PUBLISH arbitrary bytes on `channel` (what a buggy or hostile
    /// client could put there); returns how many subscribers got it.
    pub fn publish_raw(&self, channel: &str, payload: &[u8]) -> std::io::Result<i64> {
        let mut req = Vec::new();
        req.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
        for part in [channel.as_bytes(), payload] {
            req.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            req.extend_from_slice(part);
            req.extend_from_slice(b"\r\n");
        }
        let reply = exchange(self.addr(), &req)?;
        reply
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("PUBLISH answered {reply:?}")))
    }

    /// SIGSTOP: Redis keeps its sockets open but answers nothing, like a
    /// paused VM or a partition. [`RedisServer::resume`] undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis is running").id();
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    }

    fn try_spawn(&mut self, wait: Duration) -> bool {
        let conf = self.dir.path().join("redis.conf");
        // Loopback only, no disk writes, logs in the temp dir for a failing
        // test to read.
        let text = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             protected-mode yes\n\
             daemonize no\n\
             dir {dir}\n\
             logfile {dir}/redis.log\n\
             save \"\"\n\
             appendonly no\n\
             databases 1\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        std::fs::write(&conf, text).unwrap();
        let mut child = match Command::new(binary())
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run {}: {e} (scripts/test-all installs redis-server)",
                binary().display()
            ),
        };
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                // Most likely the port was taken.
                return false;
            }
            if command(self.addr(), "PING").is_ok_and(|r| r == "+PONG") {
                // Another test's Redis may have taken the port and answered
                // while ours was failing to bind: ours must still be alive.
                std::thread::sleep(Duration::from_millis(50));
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn command(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    exchange(addr, format!("{line}\r\n").as_bytes())
}

/// Send `req` and read the first reply line.
fn exchange(addr: SocketAddr, req: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(req)?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).trim_end().to_owned())
}
