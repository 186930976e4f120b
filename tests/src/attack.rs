//! What attack tests need: connections from other loopback addresses (so
//! per-address limits apply to the attacker, not to the bystander on
//! 127.0.0.1), and a bystander chat that keeps going during an attack and
//! reports its ack latencies.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast_protocol::visitor::{VisitorIn, VisitorOut};
use tokio::net::{TcpSocket, TcpStream};

use crate::core_agent::{CoreAgent, fast_config};
use crate::server::TestServer;
use crate::visitor::{WsVisitor, hello};

/// A TCP connection to `to` from `from` (any 127.x.y.z works on Linux
/// without configuration).
pub async fn tcp_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// The n-th attacker address: 127.0.1.n (never the bystander's 127.0.0.1).
pub fn attacker(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 1, n])
}

/// A visitor chatting with an agent all through an attack: it sends a
/// message every 250 ms and times each ack. `finish` stops it, checks the
/// agent got every message, and returns the ack times.
#[derive(Debug)]
pub struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(WsVisitor, Vec<Duration>, Vec<String>)>,
    pub agent: CoreAgent,
}

impl Bystander {
    /// Bob signs in (a real client core) and a visitor on 127.0.0.1 starts
    /// chatting with him.
    pub async fn start(srv: &TestServer, dir: &std::path::Path) -> Self {
        Self::start_at(srv.http(), srv.agent_addr(), srv.running().fingerprint, dir).await
    }

    /// The same against any server (a [`crate::server::ServerProcess`]),
    /// on site "acme".
    pub async fn start_at(
        http: SocketAddr,
        agent_addr: SocketAddr,
        fingerprint: holdfast_protocol::handshake::Fingerprint,
        dir: &std::path::Path,
    ) -> Self {
        let mut agent = CoreAgent::start(fast_config(
            &agent_addr.to_string(),
            "bob",
            &dir.join("bystander-bob.sqlite3"),
            fingerprint,
        ));
        agent.live().await;
        let mut v = WsVisitor::connect_with(
            http,
            hello("acme", None, None, "https://shop.example/bystander"),
        )
        .await
        .expect("bystander connects");
        v.say_acked("bystander here").await.expect("first ack");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut times = Vec::new();
            let mut sent = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let body = format!("bystander {n}");
                let id = crate::visitor::new_id();
                let t = Instant::now();
                v.send_json(&VisitorIn::Send {
                    id,
                    body: body.clone(),
                    attachment: None,
                })
                .await
                .expect("bystander sends");
                let m = v
                    .wait_for(Duration::from_secs(10), |m| {
                        matches!(m, VisitorOut::Ack { id: a, .. } | VisitorOut::Error { id: Some(a), .. } if *a == id)
                    })
                    .await
                    .expect("bystander's message answered");
                assert!(
                    matches!(m, VisitorOut::Ack { .. }),
                    "the bystander was refused: {m:?}"
                );
                times.push(t.elapsed());
                sent.push(body);
                // Four a second: a brisk typist, inside a visitor's own
                // message limit (5 a second), so only the attack is limited.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (v, times, sent)
        });
        Self { stop, task, agent }
    }

    /// Stop, check every message reached Bob, and return the ack times
    /// (with their p99 and max checked against `limit`).
    pub async fn finish(mut self, limit: Duration) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let (v, mut times, sent) = self.task.await.expect("bystander task");
        assert!(
            !times.is_empty(),
            "the bystander never got a message through"
        );
        let conv = self
            .agent
            .conversation_where(|c| c.visitor == v.visitor)
            .await
            .id;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.agent.bodies(conv);
            if sent.iter().all(|b| got.contains(b)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Bob is missing bystander messages"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        times.sort();
        let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        println!(
            "bystander: {} acks, p50 {:?}, p99 {:?}, max {:?}",
            times.len(),
            times[times.len() / 2],
            p99,
            times[times.len() - 1]
        );
        assert!(p99 <= limit, "bystander p99 {p99:?} over {limit:?}");
        v.close().await;
        self.agent.shutdown().await;
        times
    }
}
