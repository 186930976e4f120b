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

/// A tokio-util codec with a typed oversize error carrying the announced
/// length. Encoding goes through [`LengthDelimitedCodec`]; decoding keeps its
/// own two-state machine, because the length must be checked exactly once,
/// when the header arrives, and the inner codec hides whether it has already
/// consumed a header (peeking on every call misread payload bytes as a
/// length whenever TCP split a frame after its header).
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
    /// Payload length of the frame whose header was consumed, if any.
    pending: Option<usize>,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max` payload bytes.
    pub fn new(max: usize) -> Self {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max)
            .new_codec();
        Self {
            inner,
            max,
            pending: None,
        }
    }

    /// The configured maximum payload length.
    pub fn max_frame_length(&self) -> usize {
        self.max
    }

    /// Change the maximum, for frames whose header has not arrived yet: a
    /// server allows only small frames before login, and its full limit
    /// after.
    pub fn set_max_frame_length(&mut self, max: usize) {
        self.max = max;
        self.inner.set_max_frame_length(max);
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
        let len = match self.pending {
            Some(len) => len,
            None => {
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let mut head = &src[..HEADER_LEN];
                let len = head.get_u32() as usize;
                if len > self.max {
                    return Err(FrameError::Oversize { len, max: self.max });
                }
                src.advance(HEADER_LEN);
                // Bounded by `max`, so a hostile header cannot balloon this.
                src.reserve(len.saturating_sub(src.len()));
                self.pending = Some(len);
                len
            }
        };
        if src.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(src.split_to(len)))
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

    /// Found by the frame_decoder fuzz target: a frame split right after its
    /// header must not have its payload read as a second header.
    #[test]
    fn split_after_header_is_not_misread_as_a_length() {
        let mut c = FrameCodec::new(4096);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0x2f][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        let payload = [0xffu8; 0x2f];
        for b in payload {
            buf.extend_from_slice(&[b]);
            if let Some(frame) = c.decode(&mut buf).unwrap() {
                assert!(buf.is_empty());
                assert_eq!(&frame[..], &payload[..]);
                return;
            }
        }
        panic!("frame never decoded");
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
