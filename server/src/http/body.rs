//! A request body with one deadline for its last byte.
//!
//! tower-http's `RequestBodyTimeoutLayer` restarts its timer on every
//! frame, so a client that trickles a byte a second under a large
//! Content-Length holds its connection for as long as it likes. Visitor
//! bodies are a few KiB: the whole body gets one deadline, counted from
//! the end of the request's headers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{CutLog, Reason};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub(crate) struct BodyTimeout(Duration);

pub(crate) struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    limit: Duration,
    /// Made on the first wait only: most bodies are empty or already here.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Cancelled on expiry to close the whole connection (HTTP/1, where the
    /// rest of the body would otherwise sit in front of the next request).
    cut: Option<CancellationToken>,
    expired: bool,
    peer: SocketAddr,
    log: Arc<CutLog>,
}

impl DeadlineBody {
    pub(crate) fn new(
        inner: Incoming,
        limit: Duration,
        cut: Option<CancellationToken>,
        peer: SocketAddr,
        log: Arc<CutLog>,
    ) -> Self {
        Self {
            inner,
            deadline: Instant::now() + limit,
            limit,
            sleep: None,
            cut,
            expired: false,
            peer,
            log,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.expired {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.expired = true;
        this.log.cut(Reason::Body, this.peer);
        if let Some(cut) = &this.cut {
            cut.cancel();
        }
        Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
