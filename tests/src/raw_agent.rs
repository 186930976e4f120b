//! A protocol-level agent: the real handshake and sealed frames over real
//! TCP, fully scripted. Used where the test must control every byte (hostile
//! input) or count exactly what the server sends.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{Action, ClientMsg, Command, Login, Seq, ServerMsg, VisitorInfo};
use holdfast_protocol::codec::FrameCodec;
use holdfast_protocol::handshake::{ClientHandshake, HandshakeError};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::seal::{Opener, Sealer};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

pub type Io = Framed<TcpStream, FrameCodec>;

#[derive(Debug)]
pub struct RawAgent {
    pub io: Io,
    pub sealer: Sealer,
    pub opener: Opener,
    pub server_static: [u8; 32],
    pub next_cmd: Seq,
}

#[derive(Debug)]
pub enum ConnectError {
    Handshake(HandshakeError),
    Io(String),
}

impl RawAgent {
    /// Connect and complete the handshake (no login yet).
    pub async fn handshake(addr: SocketAddr) -> Result<Self, ConnectError> {
        Self::handshake_version(addr, holdfast_protocol::PROTOCOL_VERSION).await
    }

    /// Connect from another local address (127.x.y.z), so per-address
    /// limits see a different client.
    pub async fn handshake_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
    ) -> Result<Self, ConnectError> {
        let stream = crate::attack::tcp_from(from, addr)
            .await
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        Self::handshake_on(stream, holdfast_protocol::PROTOCOL_VERSION).await
    }

    /// Connect with a receive buffer of a few KiB, so that an agent that
    /// stops reading backs the server up after a few frames instead of the
    /// megabytes a loopback socket would otherwise absorb (slow-consumer
    /// and resync tests).
    pub async fn handshake_narrow(addr: SocketAddr) -> Result<Self, ConnectError> {
        let io = |e: std::io::Error| ConnectError::Io(e.to_string());
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(io)?;
        // Set before connecting: the window scale is agreed in the SYN.
        socket.set_recv_buffer_size(4096).map_err(io)?;
        let stream = socket.connect(addr).await.map_err(io)?;
        Self::handshake_on(stream, holdfast_protocol::PROTOCOL_VERSION).await
    }

    pub async fn handshake_version(addr: SocketAddr, version: u16) -> Result<Self, ConnectError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        Self::handshake_on(stream, version).await
    }

    async fn handshake_on(stream: TcpStream, version: u16) -> Result<Self, ConnectError> {
        let mut io = Framed::new(stream, FrameCodec::default());
        let mut secret = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        let hs = ClientHandshake::with_version(secret, version);
        io.send(Bytes::copy_from_slice(hs.hello()))
            .await
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        let reply = tokio::time::timeout(Duration::from_secs(5), io.next())
            .await
            .map_err(|_| ConnectError::Io("timeout".into()))?
            .ok_or_else(|| ConnectError::Io("closed".into()))?
            .map_err(|e| ConnectError::Io(e.to_string()))?;
        let s = hs.handle_reply(&reply).map_err(ConnectError::Handshake)?;
        Ok(Self {
            io,
            sealer: s.sealer,
            opener: s.opener,
            server_static: s.server_static,
            next_cmd: 1,
        })
    }

    pub async fn send(&mut self, msg: &ClientMsg) -> anyhow::Result<()> {
        let frame = self.sealer.seal_with(&mut rand::rng(), &msg.encode())?;
        self.io.send(Bytes::from(frame)).await?;
        Ok(())
    }

    /// Send raw bytes as one frame (hostile tests).
    pub async fn send_frame(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.io.send(Bytes::from(frame)).await?;
        Ok(())
    }

    /// Next server message; `None` when the server closed the connection.
    pub async fn recv(&mut self, limit: Duration) -> anyhow::Result<Option<ServerMsg>> {
        match tokio::time::timeout(limit, self.io.next()).await {
            Err(_) => anyhow::bail!("timed out waiting for the server"),
            Ok(None) => Ok(None),
            Ok(Some(Err(e))) => {
                if matches!(&e, holdfast_protocol::codec::FrameError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset)
                {
                    return Ok(None);
                }
                Err(e.into())
            }
            Ok(Some(Ok(f))) => {
                let plain = self.opener.open(&f)?;
                Ok(Some(ServerMsg::decode(&plain)?))
            }
        }
    }

    /// Read until `pred` matches, skipping heartbeats and live events.
    pub async fn recv_until(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&ServerMsg) -> bool,
    ) -> anyhow::Result<ServerMsg> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                None => anyhow::bail!("server closed the connection"),
                Some(m) if pred(&m) => return Ok(m),
                Some(_) => {}
            }
        }
    }

    /// Wait for an update of a visitor in the live list (a `Visitor`, or
    /// an entry of a `VisitorUpdates`) that `pred` accepts.
    pub async fn recv_visitor(
        &mut self,
        limit: Duration,
        mut pred: impl FnMut(&VisitorInfo) -> bool,
    ) -> anyhow::Result<VisitorInfo> {
        let mut found = None;
        self.recv_until(limit, |m| {
            if let ServerMsg::Live(ev) = m {
                found = ev.upserts().iter().find(|v| pred(v)).cloned();
            }
            found.is_some()
        })
        .await?;
        found.ok_or_else(|| anyhow::anyhow!("no visitor update matched"))
    }

    pub fn login_msg(
        username: &str,
        password: &str,
        device: MsgId,
        resume_after: Option<Seq>,
    ) -> ClientMsg {
        ClientMsg::Login(Login {
            username: username.into(),
            password: password.into(),
            device_id: device,
            resume_after,
            client: "raw-agent test".into(),
            ticket: None,
        })
    }

    /// Handshake and log in; returns the agent and the LoginOk.
    pub async fn login(
        addr: SocketAddr,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(Self, ServerMsg)> {
        let mut a = Self::handshake(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        a.send(&Self::login_msg(
            username,
            password,
            crate::visitor::new_id(),
            None,
        ))
        .await?;
        let ok = a
            .recv(Duration::from_secs(10))
            .await?
            .ok_or_else(|| anyhow::anyhow!("closed after login"))?;
        Ok((a, ok))
    }

    /// Send an action as the next command; returns (seq, id).
    pub async fn command(&mut self, action: Action) -> anyhow::Result<(Seq, MsgId)> {
        let seq = self.next_cmd;
        self.next_cmd += 1;
        let id = crate::visitor::new_id();
        self.send(&ClientMsg::Command(Command { id, seq, action }))
            .await?;
        Ok((seq, id))
    }
}
