//! How the server hands out the widget and answers the widget's
//! cross-origin requests, checked on the wire with a plain HTTP/1.1 client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use holdfast_tests::server::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `head` (request line and headers, without the blank line) and
/// return the response's status, lower-cased headers and raw body.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
}

#[tokio::test]
async fn widget_is_compressed_and_revalidated_with_an_etag() {
    let srv = TestServer::start().await;
    let (status, plain_head, plain) = raw(srv.http(), "GET /widget.js HTTP/1.1").await;
    assert_eq!(status, 200);
    assert_eq!(header(&plain_head, "content-encoding"), None);
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../assets/widget/widget.js"
    ))
    .unwrap();
    assert_eq!(plain, file);
    let etag = header(&plain_head, "etag").expect("an etag").to_owned();
    assert_eq!(header(&plain_head, "cache-control"), Some("no-cache"));

    let (status, gz_head, gz) = raw(
        srv.http(),
        "GET /widget.js HTTP/1.1\r\nAccept-Encoding: gzip",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&gz_head, "content-encoding"), Some("gzip"));
    assert!(
        gz.len() * 2 < plain.len(),
        "gzip {} vs plain {}",
        gz.len(),
        plain.len()
    );

    // A returning visitor's browser revalidates and gets no body.
    let (status, _, body) = raw(
        srv.http(),
        &format!("GET /widget.js HTTP/1.1\r\nIf-None-Match: {etag}"),
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, _, _) = raw(
        srv.http(),
        "GET /widget.js HTTP/1.1\r\nIf-None-Match: \"stale\"",
    )
    .await;
    assert_eq!(status, 200);
    srv.stop().await;
}

#[tokio::test]
async fn long_poll_answers_cross_origin_preflights() {
    let srv = TestServer::start().await;
    let (status, head, _) = raw(
        srv.http(),
        "OPTIONS /v1/visitor/lp HTTP/1.1\r\nOrigin: https://shop.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type",
    )
    .await;
    assert!((200..300).contains(&status), "{status} {head}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&head, "access-control-allow-methods").is_some_and(|m| m.contains("post")),
        "{head}"
    );
    assert!(
        header(&head, "access-control-allow-headers").is_some_and(|m| m.contains("content-type")),
        "{head}"
    );

    // The real request carries the header too; a bad token is still refused.
    let (status, head, _) = raw(
        srv.http(),
        "GET /v1/visitor/poll?token=forged&after=0 HTTP/1.1\r\nOrigin: https://shop.example",
    )
    .await;
    assert!(status >= 400, "{status}");
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));

    // The agent-facing and operational endpoints do not opt in.
    let (_, head, _) = raw(
        srv.http(),
        "GET /metrics HTTP/1.1\r\nOrigin: https://shop.example",
    )
    .await;
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    srv.stop().await;
}
