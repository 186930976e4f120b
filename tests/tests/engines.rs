//! The harness's throwaway engines (`tests/src/redis.rs`,
//! `tests/src/haproxy.rs`) do what the scale-out tests rely on: they start
//! from the real Debian binaries on free ports, die on SIGKILL, and come
//! back on the same port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use std::net::SocketAddr;
use std::time::Duration;

use holdfast_tests::haproxy::HaProxy;
use holdfast_tests::redis::RedisServer;
use holdfast_tests::server::free_port;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[test]
fn redis_dies_on_sigkill_and_comes_back_on_the_same_port() {
    let mut r = RedisServer::start();
    let addr = r.addr();
    assert_eq!(r.command("PING").unwrap(), "+PONG");
    // Nobody is subscribed: PUBLISH reaches zero clients.
    assert_eq!(r.command("PUBLISH ch hello").unwrap(), ":0");
    r.kill9();
    assert!(!r.is_running());
    assert!(std::net::TcpStream::connect(addr).is_err());
    r.restart();
    assert_eq!(r.addr(), addr);
    assert_eq!(r.command("PING").unwrap(), "+PONG", "{}", r.log());
}

#[test]
fn two_redis_servers_do_not_share_a_port() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.addr(), b.addr());
}

/// A TCP echo server for HAProxy to pass bytes to.
async fn echo() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await??;
    Ok(buf.to_vec())
}

#[tokio::test]
async fn haproxy_passes_bytes_dies_on_sigkill_and_comes_back() {
    let backend = echo().await;
    let front = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         listen echo\n  bind {front}\n  server e {backend}\n"
    );
    let mut h = HaProxy::start(&cfg, &[front]);
    assert_eq!(round_trip(front).await.unwrap(), b"ping");
    h.kill9();
    assert!(!h.is_running());
    assert!(round_trip(front).await.is_err());
    h.restart();
    assert_eq!(round_trip(front).await.unwrap(), b"ping", "{}", h.log());
}

#[test]
#[should_panic(expected = "haproxy -c refused the config")]
fn a_bad_haproxy_config_fails_with_haproxys_words() {
    let _h = HaProxy::start("frontend x\n  bogus_keyword 1\n", &[]);
}
