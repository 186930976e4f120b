//! Length-delimited frames: a 4-byte big-endian length, then the payload.
//!
//! The length is checked against the configured maximum *before* anything is
//! reserved, so a hostile peer announcing a 4 GiB frame costs us four bytes of
//! buffer, not four gigabytes.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Errors from the frame codec. Parse errors are distinct from I/O errors so
/// a driver can log "peer sent garbage" separately from "socket died".
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced (or we tried to send) a frame larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    Oversize { len: usize, max: usize },
    /// The underlying transport failed.
    #[error("transport error: {0}")]
    Io(#[from] io::Error),
}

/// A tokio-util codec over [`LengthDelimitedCodec`] with a typed oversize
/// error carrying the announced length.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max` payload bytes.
    pub fn new(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        Self { inner, max }
    }

    /// The configured maximum payload length.
    pub fn max_frame_length(&self) -> usize {
        self.max
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        // Peek the header ourselves so the error names the announced length.
        // The inner codec would refuse too, but only with an opaque io::Error.
        if src.len() >= HEADER_LEN {
            let mut head = &src[..HEADER_LEN];
            let len = head.get_u32() as usize;
            if len > self.max {
                return Err(FrameError::Oversize { len, max: self.max });
            }
        }
        Ok(self.inner.decode(src)?)
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        if item.len() > self.max {
            return Err(FrameError::Oversize {
                len: item.len(),
                max: self.max,
            });
        }
        Ok(self.inner.encode(item, dst)?)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(Bytes::copy_from_slice(item), dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_input_is_not_an_error() {
        let mut c = FrameCodec::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[3, b'a', b'b']);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"c");
        assert_eq!(&c.decode(&mut buf).unwrap().unwrap()[..], b"abc");
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_header_is_typed_and_reserves_nothing() {
        let mut c = FrameCodec::new(1024);
        let mut buf = BytesMut::with_capacity(8);
        buf.extend_from_slice(&u32::MAX.to_be_bytes());
        let cap_before = buf.capacity();
        match c.decode(&mut buf) {
            Err(FrameError::Oversize { len, max }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 1024);
            }
            other => panic!("expected oversize, got {other:?}"),
        }
        assert_eq!(buf.capacity(), cap_before);
    }

    #[test]
    fn exactly_max_is_accepted_and_one_more_refused() {
        let mut c = FrameCodec::new(8);
        let mut out = BytesMut::new();
        c.encode(Bytes::from_static(&[7u8; 8]), &mut out).unwrap();
        assert_eq!(&out[..4], &[0, 0, 0, 8]);
        assert!(matches!(
            c.encode(Bytes::from_static(&[7u8; 9]), &mut out),
            Err(FrameError::Oversize { len: 9, max: 8 })
        ));
        let frame = c.decode(&mut out).unwrap().unwrap();
        assert_eq!(frame.len(), 8);
    }
}
