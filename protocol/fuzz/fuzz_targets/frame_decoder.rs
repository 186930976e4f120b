//! Arbitrary bytes, delivered in arbitrary chunks, through `FrameCodec`.
//!
//! Input layout: byte 0 picks how many chunk-size bytes follow (1..=8); those
//! bytes give the chunk sizes (each `b + 1`, cycled); the rest is the stream.
//!
//! Properties:
//! - decoding never panics;
//! - every decoded frame is at most `MAX` bytes;
//! - chunking does not change the outcome: the frames (and whether the stream
//!   ends in an oversize error) equal those of a one-shot reference parser over
//!   the whole stream.
#![no_main]

use bytes::BytesMut;
use holdfast_protocol::codec::{FrameCodec, FrameError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Ran out of input (possibly mid-frame).
    Incomplete,
    /// An announced length above `MAX`.
    Oversize(usize),
}

/// The framing spec, written out directly over the whole stream.
fn reference(mut s: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut frames = Vec::new();
    loop {
        if s.len() < HEADER_LEN {
            return (frames, End::Incomplete);
        }
        let len = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
        if len > MAX {
            return (frames, End::Oversize(len));
        }
        if s.len() < HEADER_LEN + len {
            return (frames, End::Incomplete);
        }
        frames.push(s[HEADER_LEN..HEADER_LEN + len].to_vec());
        s = &s[HEADER_LEN + len..];
    }
}

fn chunked(sizes: &[u8], stream: &[u8]) -> (Vec<Vec<u8>>, End) {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = (usize::from(sizes[i % sizes.len()]) + 1).min(rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= MAX, "frame of {} > {MAX}", frame.len());
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(FrameError::Oversize { len, max }) => {
                    assert_eq!(max, MAX);
                    assert!(len > MAX, "oversize error for {len} <= {MAX}");
                    return (frames, End::Oversize(len));
                }
                Err(FrameError::Io(e)) => panic!("decoder produced an I/O error: {e}"),
            }
        }
    }
    (frames, End::Incomplete)
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, data)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 8) + 1;
    if data.len() < k {
        return;
    }
    let (sizes, stream) = data.split_at(k);
    let got = chunked(sizes, stream);
    let want = reference(stream);
    assert_eq!(got, want, "chunk sizes {sizes:?} changed the decoding");
});
