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

    // The operational endpoints do not opt in.
    let (_, head, _) = raw(
        srv.http(),
        "GET /healthz HTTP/1.1\r\nOrigin: https://shop.example",
    )
    .await;
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    srv.stop().await;
}

/// A server started without `--demo` shows no demo pieces, and its metrics
/// are on the admin listener only, never on the visitors' port.
#[tokio::test]
async fn production_defaults_show_no_demo_and_keep_metrics_private() {
    let srv = TestServer::start().await;
    let http = srv.http();
    let (status, head, body) = raw(http, "GET / HTTP/1.1").await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "location"), None, "no redirect to a demo");
    let body = String::from_utf8_lossy(&body).to_string();
    assert!(body.contains("Holdfast chat server"), "{body}");
    assert!(!body.to_lowercase().contains("demo"), "{body}");
    for path in ["/demo", "/demo/", "/demo/index.html", "/metrics"] {
        let (status, _, _) = raw(http, &format!("GET {path} HTTP/1.1")).await;
        assert_eq!(status, 404, "{path} on the public port");
    }
    let admin = srv.running().admin_addr.expect("an admin listener");
    assert!(admin.ip().is_loopback());
    let (status, _, body) = raw(admin, "GET /metrics HTTP/1.1").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("holdfast_agent_connections"));
    let (status, _, body) = raw(admin, "GET /healthz HTTP/1.1").await;
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    srv.stop().await;

    // With --demo the shop is there, and the front page leads to it.
    let srv = TestServer::start_with(|c| c.demo = true).await;
    let (status, head, _) = raw(srv.http(), "GET / HTTP/1.1").await;
    assert_eq!(status, 307);
    assert_eq!(header(&head, "location"), Some("/demo"));
    let (status, _, _) = raw(srv.http(), "GET /demo HTTP/1.1").await;
    assert_eq!(status, 200);
    let (status, _, _) = raw(srv.http(), "GET /metrics HTTP/1.1").await;
    assert_eq!(status, 404, "metrics stay private even in the demo");
    srv.stop().await;
}
