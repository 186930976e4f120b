//! The HTTP port's routes: the visitor transports, the widget and demo
//! files, `/healthz`, and the operators' `/metrics` listener.
//!
//! Routing lives apart from the handlers so that the one place that decides
//! what is public on the HTTP port (and which layers, CORS and compression,
//! wrap what) can be read on one screen. How connections are accepted and
//! timed is in the parent module; what the routes do is in
//! [`crate::visitor`] and [`super::assets`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};

use super::assets::{asset, demo_file, widget_file};
use crate::Ctx;
use crate::visitor::long_poll::{IDENTITY_HEADER, TOKEN_HEADER, long_poll_recv, long_poll_send};
use crate::visitor::ws::ws_upgrade;

/// Serve HTTP (and HTTPS when configured) until shutdown; the listener,
/// TLS and every connection's timers and caps are in [`crate::http`].
pub async fn serve(listener: std::net::TcpListener, ctx: Arc<Ctx>) {
    let app = router(ctx.clone());
    crate::http::serve(listener, ctx, app).await;
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    let body_limit = ctx.cfg.visitor.limits.max_text.saturating_mul(4);
    // The widget runs on customers' own domains, so the long-poll fallback
    // is always a cross-origin request (a JSON POST even needs a preflight).
    // Any origin may call it: the visitor token travels in a header (or,
    // from old widgets, the body or the query), never in a cookie, so there
    // is no ambient credential to abuse. A site that lists its origins gets
    // them checked at hello.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::HeaderName::from_static(TOKEN_HEADER),
            header::HeaderName::from_static(IDENTITY_HEADER),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600));
    let long_poll = Router::new()
        .route("/v1/visitor/lp", post(long_poll_send))
        .route("/v1/visitor/poll", get(long_poll_recv))
        .layer(cors);
    let mut files = Router::new()
        .route(
            "/widget.js",
            get(|h: HeaderMap| async move { asset("/widget/widget.js", &h) }),
        )
        .route("/widget/{*path}", get(widget_file));
    // The demo shop exists only with --demo: a production server shows no
    // demo pieces, and its front page just says what it is.
    if ctx.cfg.demo {
        files = files
            .route(
                "/demo",
                get(|h: HeaderMap| async move { asset("/demo/index.html", &h) }),
            )
            .route(
                "/demo/",
                get(|h: HeaderMap| async move { asset("/demo/index.html", &h) }),
            )
            .route("/demo/{*path}", get(demo_file))
            .route("/", get(|| async { Redirect::temporary("/demo") }));
    } else {
        files = files.route("/", get(front_page));
    }
    Router::new()
        .route("/v1/visitor/ws", get(ws_upgrade))
        .merge(long_poll)
        .merge(crate::attach::serve::routes())
        .merge(files.layer(CompressionLayer::new()))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(ctx)
}

async fn front_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "Holdfast chat server.\n\nAdd the chat to a site with:\n  \
         <script src=\"/widget.js\" data-site=\"SITE_KEY\" async></script>\n",
    )
        .into_response()
}

/// The operators' listener: `/metrics` and `/healthz`, on an address that is
/// not public by default (`--admin-listen`, 127.0.0.1:9090).
pub async fn serve_admin(listener: std::net::TcpListener, ctx: Arc<Ctx>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(ctx.clone());
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the admin listener: {e}");
            return;
        }
    };
    let shutdown = ctx.shutdown.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!("admin listener failed: {e}");
    }
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        ctx.metrics.render(),
    )
        .into_response()
}
