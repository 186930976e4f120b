//! Static files embedded at build time from `assets/widget` and
//! `assets/demo`, so the server stays one self-contained binary, and their
//! answers over HTTP.
//!
//! The embedded table and the way it is served sit together because the
//! table exists only to be served: its ETags are HTTP validators, and the
//! demo pages' security headers depend on which file is asked for.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (URL path, content type, bytes)
pub type Asset = (&'static str, &'static str, &'static [u8]);

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Strong validators for every embedded file, computed once: browsers then
/// revalidate `/widget.js` on each page load with a cheap 304 instead of
/// downloading it again.
static ETAGS: std::sync::LazyLock<std::collections::HashMap<&'static str, String>> =
    std::sync::LazyLock::new(|| {
        use sha2::Digest as _;
        ASSETS
            .iter()
            .map(|(p, _, bytes)| {
                let digest = sha2::Sha256::digest(bytes);
                (*p, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect()
    });

/// The quoted ETag of an embedded file.
pub fn etag(path: &str) -> Option<&'static str> {
    ETAGS.get(path).map(String::as_str)
}

/// Find an embedded file by URL path.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _, _)| *p == path)
}

/// The demo pages' policy: scripts and connections from this server only
/// (WebSocket included), styles inline (the shop's and the widget's), no
/// framing, no plugins.
const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; frame-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'; object-src 'none'";

pub(crate) fn asset(path: &str, req: &HeaderMap) -> Response {
    let Some((_, mime, bytes)) = find(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = etag(path).unwrap_or("\"0\"");
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
        // no-cache means "revalidate", so a deploy reaches every visitor on
        // their next page load while unchanged files cost a 304.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::ETAG, HeaderValue::from_static(etag)),
    ];
    let mut resp = if fresh {
        (StatusCode::NOT_MODIFIED, headers).into_response()
    } else {
        (headers, *bytes).into_response()
    };
    if path.starts_with("/demo/") {
        // The demo shop is a page on this origin: it runs no inline script
        // and may not be framed, so a hostile visitor field that slipped
        // into it could neither run nor be clickjacked.
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEMO_CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        );
    }
    resp
}

pub(crate) async fn widget_file(
    axum::extract::Path(path): axum::extract::Path<String>,
    h: HeaderMap,
) -> Response {
    asset(&format!("/widget/{path}"), &h)
}

pub(crate) async fn demo_file(
    axum::extract::Path(path): axum::extract::Path<String>,
    h: HeaderMap,
) -> Response {
    asset(&format!("/demo/{path}"), &h)
}
