//! A TCP fault proxy, in the spirit of toxiproxy. It sits between a client
//! and the server and can:
//! - blackhole the link without closing it (a pulled cable: bytes vanish,
//!   both sockets stay open, only heartbeats can notice);
//! - reset every connection with an RST;
//! - slice traffic into 1-byte writes;
//! - cut a connection mid-stream after N more bytes;
//! - add latency with jitter;
//! - refuse new connections for a while.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Faults {
    blackhole: AtomicBool,
    slice: AtomicBool,
    refuse: AtomicBool,
    /// Cut every connection after this many more bytes (0 = off).
    cut_after: AtomicU64,
    latency_ms: AtomicU64,
    jitter_ms: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    faults: Faults,
    conns: Mutex<Vec<CancellationToken>>,
    /// Cancelled to reset: each live connection closes with an RST.
    reset: Mutex<CancellationToken>,
    accepted: AtomicU64,
}

/// A running proxy; faults apply to every connection through it.
#[derive(Debug, Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            faults: Faults::default(),
            conns: Mutex::new(Vec::new()),
            reset: Mutex::new(CancellationToken::new()),
            accepted: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let (s2, stop2) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                if s2.faults.refuse.load(Ordering::SeqCst) {
                    let _ = client.set_zero_linger();
                    drop(client);
                    continue;
                }
                s2.accepted.fetch_add(1, Ordering::SeqCst);
                let s3 = s2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let reset = s3.reset.lock().unwrap().clone();
                    let kill = CancellationToken::new();
                    s3.conns.lock().unwrap().push(kill.clone());
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pump(cr, sw, s3.clone(), kill.clone(), reset.clone()));
                    let down = tokio::spawn(pump(sr, cw, s3.clone(), kill.clone(), reset.clone()));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Self { addr, shared, stop }
    }

    /// Bytes vanish in both directions; sockets stay open.
    pub fn blackhole(&self, on: bool) {
        self.shared.faults.blackhole.store(on, Ordering::SeqCst);
    }

    pub fn slice(&self, on: bool) {
        self.shared.faults.slice.store(on, Ordering::SeqCst);
    }

    pub fn refuse_new(&self, on: bool) {
        self.shared.faults.refuse.store(on, Ordering::SeqCst);
    }

    pub fn latency(&self, base: Duration, jitter: Duration) {
        self.shared
            .faults
            .latency_ms
            .store(base.as_millis() as u64, Ordering::SeqCst);
        self.shared
            .faults
            .jitter_ms
            .store(jitter.as_millis() as u64, Ordering::SeqCst);
    }

    /// Cut each connection after `n` more bytes in either direction.
    pub fn cut_after(&self, n: u64) {
        self.shared.faults.cut_after.store(n, Ordering::SeqCst);
    }

    /// RST every live connection now.
    pub fn reset_all(&self) {
        let mut r = self.shared.reset.lock().unwrap();
        r.cancel();
        *r = CancellationToken::new();
    }

    /// Close every live connection with a FIN.
    pub fn close_all(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.cancel();
        }
    }

    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    pub fn heal(&self) {
        self.blackhole(false);
        self.slice(false);
        self.refuse_new(false);
        self.cut_after(0);
        self.latency(Duration::ZERO, Duration::ZERO);
    }

    pub fn stop(&self) {
        self.stop.cancel();
        self.close_all();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    s: Arc<Shared>,
    kill: CancellationToken,
    reset: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            () = kill.cancelled() => { let _ = to.shutdown().await; return; }
            () = reset.cancelled() => {
                // An RST: linger 0 then drop.
                if let Ok(stream) = from.reunite(to) {
                    let _ = stream.set_zero_linger();
                }
                return;
            }
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => { let _ = to.shutdown().await; return; } Ok(n) => n },
        };
        let f = &s.faults;
        if f.blackhole.load(Ordering::SeqCst) {
            continue;
        }
        let lat = f.latency_ms.load(Ordering::SeqCst);
        if lat > 0 {
            let jit = f.jitter_ms.load(Ordering::SeqCst);
            let d = if jit > 0 {
                lat.saturating_sub(jit) + rand::rng().random_range(0..=2 * jit)
            } else {
                lat
            };
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        let mut chunk = &buf[..n];
        let mut cut_now = false;
        let len = chunk.len() as u64;
        let prev = f
            .cut_after
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                (c > 0).then(|| c.saturating_sub(len))
            });
        if let Ok(c) = prev
            && c <= len
        {
            chunk = &chunk[..c as usize];
            cut_now = true;
        }
        let wrote = if f.slice.load(Ordering::SeqCst) {
            let mut ok = true;
            for b in chunk {
                if to.write_all(std::slice::from_ref(b)).await.is_err() {
                    ok = false;
                    break;
                }
                to.flush().await.ok();
            }
            ok
        } else {
            to.write_all(chunk).await.is_ok()
        };
        if !wrote || cut_now {
            if cut_now {
                kill.cancel();
            }
            let _ = to.shutdown().await;
            return;
        }
    }
}
