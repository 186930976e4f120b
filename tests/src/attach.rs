//! The attachment HTTP client of the tests (`tests/tests/attachments.rs`
//! on one server, `cluster_attachments.rs` across nodes): the tus-style
//! calls of PROTOCOL.md 10.13 as plain requests, and test files.

use std::io::Cursor;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::visitor::{HttpAnswer, http_exchange};

/// The header that carries the visitor's session token.
pub const TOKEN: &str = "x-holdfast-token";

/// A real PNG of `w` × `h` with a pattern, so no two sizes compress alike.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, (x ^ y) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// `len` bytes that sniff as a PDF, the rest pseudo-random from `seed`.
pub fn pdf(len: usize, seed: u32) -> Vec<u8> {
    let mut v = b"%PDF-1.4\n".to_vec();
    let mut x: u32 = seed;
    while v.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push((x >> 16) as u8);
    }
    v
}

/// The answer's body as JSON (`Null` if it is not JSON).
pub fn json_of(a: &HttpAnswer) -> Value {
    serde_json::from_slice(&a.body).unwrap_or(Value::Null)
}

/// The answer's `Upload-Offset`.
pub fn offset(a: &HttpAnswer) -> u64 {
    a.header("upload-offset")
        .unwrap_or_else(|| panic!("no Upload-Offset in {a:?}"))
        .parse()
        .unwrap()
}

/// `POST /v1/attach`: announce an upload of `length` bytes.
pub async fn create(http: SocketAddr, token: &str, length: u64, name: &str) -> HttpAnswer {
    let body = json!({"length": length, "name": name, "type": "image/png"}).to_string();
    http_exchange(
        None,
        http,
        "POST",
        "/v1/attach",
        &[(TOKEN, token)],
        Some(body.as_bytes()),
    )
    .await
    .unwrap()
}

/// Create, expecting success: the upload's id.
pub async fn created(http: SocketAddr, token: &str, length: u64, name: &str) -> String {
    let c = create(http, token, length, name).await;
    assert_eq!(c.status, 201, "{:?}", String::from_utf8_lossy(&c.body));
    json_of(&c)["id"].as_str().unwrap().to_string()
}

/// `PATCH /v1/attach/ID` at `offset`.
pub async fn patch(
    http: SocketAddr,
    token: &str,
    id: &str,
    offset: u64,
    bytes: &[u8],
) -> HttpAnswer {
    let off = offset.to_string();
    http_exchange(
        None,
        http,
        "PATCH",
        &format!("/v1/attach/{id}"),
        &[
            (TOKEN, token),
            ("upload-offset", &off),
            ("content-type", "application/offset+octet-stream"),
        ],
        Some(bytes),
    )
    .await
    .unwrap()
}

/// `HEAD /v1/attach/ID`: where the upload stands.
pub async fn head(http: SocketAddr, token: &str, id: &str) -> HttpAnswer {
    http_exchange(
        None,
        http,
        "HEAD",
        &format!("/v1/attach/{id}"),
        &[(TOKEN, token)],
        None,
    )
    .await
    .unwrap()
}

/// `GET path`, with the visitor's token if given.
pub async fn get(http: SocketAddr, path: &str, token: Option<&str>) -> HttpAnswer {
    let extra: Vec<(&str, &str)> = token.map(|t| vec![(TOKEN, t)]).unwrap_or_default();
    http_exchange(None, http, "GET", path, &extra, None)
        .await
        .unwrap()
}

/// The download link of attachment `id`, asked of `http`.
pub async fn link(http: SocketAddr, token: &str, id: &str) -> Value {
    let l = get(http, &format!("/v1/attach/{id}/link"), Some(token)).await;
    assert_eq!(l.status, 200, "{:?}", String::from_utf8_lossy(&l.body));
    json_of(&l)
}

/// Every message event carrying `aid` that reaches `a` within `wait`.
pub async fn messages_with(
    a: &mut crate::raw_agent::RawAgent,
    aid: &str,
    wait: std::time::Duration,
) -> Vec<holdfast_protocol::agent::ChatMessage> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        // A quiet link ends the wait as an error: nothing more came.
        match a.recv(left).await {
            Ok(Some(holdfast_protocol::agent::ServerMsg::Event {
                event: holdfast_protocol::agent::Event::Message(m),
                ..
            })) if m.attachment.as_ref().is_some_and(|f| f.id == aid) => got.push(m),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return got,
        }
    }
}
