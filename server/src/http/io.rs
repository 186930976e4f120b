//! The stream under each HTTP connection: the first bytes, read to tell
//! HTTP/1 from HTTP/2, are handed back to the HTTP server before the rest,
//! and the connection's [`Slot`] lives exactly as long as the socket (after
//! a WebSocket upgrade hyper hands the stream on, so it still counts).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use super::conns::Slot;

/// Plain TCP or TLS, behind one type.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Http1,
    Http2,
}

/// Read until the bytes so far either leave the HTTP/2 preface (HTTP/1)
/// or complete it (HTTP/2). `None` when the peer closed first. The caller
/// puts a deadline on this: a socket that sends nothing, or stops partway
/// through the preface, never decides.
pub(crate) async fn sniff(io: &mut (dyn Io + '_)) -> io::Result<Option<(Proto, Vec<u8>)>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    loop {
        let n = io.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(None);
        }
        filled += n;
        if buf[..filled] != H2_PREFACE[..filled] {
            return Ok(Some((Proto::Http1, buf[..filled].to_vec())));
        }
        if filled == H2_PREFACE.len() {
            return Ok(Some((Proto::Http2, buf.to_vec())));
        }
    }
}

pub(crate) struct HttpIo {
    prefix: Vec<u8>,
    pos: usize,
    inner: Box<dyn Io>,
    _slot: Arc<Slot>,
}

impl HttpIo {
    pub(crate) fn new(prefix: Vec<u8>, inner: Box<dyn Io>, slot: Arc<Slot>) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
            _slot: slot,
        }
    }
}

impl AsyncRead for HttpIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn sniffed(bytes: &[u8]) -> Option<(Proto, Vec<u8>)> {
        let (client, server) = tokio::io::duplex(64);
        let mut client = client;
        client.write_all(bytes).await.unwrap();
        drop(client);
        let mut io: Box<dyn Io> = Box::new(server);
        sniff(&mut *io).await.unwrap()
    }

    #[tokio::test]
    async fn tells_http1_from_http2_and_keeps_the_bytes() {
        let (p, b) = sniffed(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(p, Proto::Http1);
        assert_eq!(b, b"GET / HTTP/1.1\r\n");
        // POST shares the preface's first letter.
        assert_eq!(sniffed(b"POST /").await.unwrap().0, Proto::Http1);
        let (p, b) = sniffed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest")
            .await
            .unwrap();
        assert_eq!(p, Proto::Http2);
        assert_eq!(&b, H2_PREFACE);
        // Half a preface then EOF decides nothing.
        assert_eq!(sniffed(b"PRI * HTTP/2").await, None);
        assert_eq!(sniffed(b"").await, None);
    }
}
