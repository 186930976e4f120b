//! PROTOCOL.md sections 3 and 9: once the handshake is done, a first
//! sealed frame the server refuses gets an `Error` before the close, so a
//! client can tell "my Login was too big" or "my Login was malformed" from
//! a network fault. Against a real server on loopback ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_protocol::agent::{ClientMsg, ServerMsg};
use holdfast_protocol::codec::FrameCodec;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::ClientHandshake;
use holdfast_protocol::seal::{Opener, Sealer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const T: Duration = Duration::from_secs(5);

type Io = Framed<TcpStream, FrameCodec>;

async fn server() -> (tempfile::TempDir, holdfast_server::RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = holdfast_server::config::ServerConfig::for_tests(dir.path().to_path_buf());
    let srv = holdfast_server::start(cfg).await.unwrap();
    (dir, srv)
}

/// Connect and complete the handshake; no Login yet.
async fn handshake(srv: &holdfast_server::RunningServer) -> (Io, Sealer, Opener) {
    let stream = TcpStream::connect(srv.agent_addr).await.unwrap();
    let mut io = Framed::new(stream, FrameCodec::default());
    let hs = ClientHandshake::new([7; 32]);
    io.send(Bytes::copy_from_slice(hs.hello())).await.unwrap();
    let reply = tokio::time::timeout(T, io.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let s = hs.handle_reply(&reply).unwrap();
    (io, s.sealer, s.opener)
}

/// The server's next message, then that it closed the connection.
async fn error_then_close(io: &mut Io, opener: &mut Opener) -> (ErrorCode, String) {
    let frame = tokio::time::timeout(T, io.next())
        .await
        .expect("no answer before the timeout")
        .expect("closed without an Error")
        .unwrap();
    let msg = ServerMsg::decode(&opener.open(&frame).unwrap()).unwrap();
    let ServerMsg::Error(e) = msg else {
        panic!("expected an Error, got {msg:?}");
    };
    let after = tokio::time::timeout(T, io.next()).await.unwrap();
    assert!(
        !matches!(after, Some(Ok(_))),
        "the connection stayed open after the Error"
    );
    (e.code, e.message)
}

#[tokio::test]
async fn an_oversize_login_frame_gets_too_large_before_the_close() {
    let (_dir, srv) = server().await;
    let (mut io, _sealer, mut opener) = handshake(&srv).await;
    // Announce a 64 KiB frame: over the 8 KiB allowed before login. Only
    // the prefix is sent; the server must answer without reading the rest.
    io.get_mut()
        .write_all(&(64u32 << 10).to_be_bytes())
        .await
        .unwrap();
    let (code, message) = error_then_close(&mut io, &mut opener).await;
    assert_eq!(code, ErrorCode::TooLarge, "{message}");
    assert!(message.contains("65536"), "{message}");
    assert!(message.contains("8192"), "{message}");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_login_gets_bad_request_before_the_close() {
    let (_dir, srv) = server().await;
    let (mut io, mut sealer, mut opener) = handshake(&srv).await;
    let frame = sealer
        .seal_with(&mut rand::rng(), &ClientMsg::Heartbeat.encode())
        .unwrap();
    io.send(Bytes::from(frame)).await.unwrap();
    let (code, message) = error_then_close(&mut io, &mut opener).await;
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_first_frame_gets_bad_request_before_the_close() {
    let (_dir, srv) = server().await;
    let (mut io, mut sealer, mut opener) = handshake(&srv).await;
    // A sealed frame whose MAC is good but whose plaintext is no ClientMsg
    // (variant index 99).
    let frame = sealer.seal_with(&mut rand::rng(), &[99]).unwrap();
    io.send(Bytes::from(frame)).await.unwrap();
    let (code, message) = error_then_close(&mut io, &mut opener).await;
    assert_eq!(code, ErrorCode::BadRequest, "{message}");
    srv.shutdown().await;
}
