//! The listening sockets, with an accept backlog that holds a reconnect
//! storm.
//!
//! `std::net::TcpListener::bind` listens with a backlog of 128. When 5,000
//! visitors reconnect within a quarter of a second (a NAT reset, a server
//! restart), the kernel's queue of connections waiting for `accept` fills
//! in a moment and every further handshake is dropped; each of those
//! browsers then waits for TCP to retransmit its SYN, after 1 s, then 3 s,
//! then 7 s. In the storm benchmark that was most of the visitors' resume
//! time. The kernel still caps the backlog at `net.core.somaxconn` (4,096 on
//! Debian's default).

use std::net::SocketAddr;

/// Connections the kernel may hold for each listener before `accept`.
pub const BACKLOG: u32 = 4096;

/// Bind `addr` and listen with [`BACKLOG`], nonblocking, for tokio or axum
/// to take over. Must run inside the tokio runtime.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std does on Unix: a restarted server rebinds its port at once
    // even while the old one's connections sit in TIME_WAIT. (On Windows
    // the same option would let another process take the port.)
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?.into_std()?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    /// 600 clients connect to a listener that is not accepting (a busy
    /// server): every handshake completes. With std's backlog of 128 only
    /// 129 do, and the rest never do while nothing is accepted, however
    /// often TCP resends their SYN.
    #[tokio::test]
    async fn six_hundred_connections_wait_for_accept() {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let tries = (0..600).map(|_| {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        });
        let results = futures_util::future::join_all(tries).await;
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(ok, 600, "only {ok} of 600 handshakes completed");
        drop(l);
    }
}
