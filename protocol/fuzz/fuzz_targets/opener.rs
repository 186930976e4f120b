//! `Opener::open` on arbitrary bytes, seal/open round trips, and single-byte
//! tampering of valid frames.
//!
//! Input layout: byte 0 selects the mode's extra parameter (tamper position,
//! XOR mask), the rest is either a frame to open or a plaintext to seal.
#![no_main]

use holdfast_protocol::seal::{
    Direction, DirectionKeys, IV_LEN, OpenError, Opener, Sealer, sealed_len,
};
use libfuzzer_sys::fuzz_target;

fn keys() -> DirectionKeys {
    DirectionKeys {
        enc: [0x11; 32],
        mac: [0x22; 32],
    }
}

fn pair() -> (Sealer, Opener) {
    (
        Sealer::new(keys(), Direction::ClientToServer),
        Opener::new(keys(), Direction::ClientToServer),
    )
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, body) = data.split_at(4);
    let pos = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let mask = head[2] | 1; // never zero: the byte must actually change
    let iv = [head[3]; IV_LEN];

    // 1. Arbitrary bytes: never panic. The fuzzer sees the frames this target
    //    seals below (through comparison tracing) and can replay one, so an
    //    accepted frame is not by itself a forgery; it must however be exactly
    //    what the sealer produces for that IV, plaintext and counter 0.
    {
        let (mut s, mut o) = pair();
        match o.open(body) {
            Ok(pt) => {
                let mut iv = [0u8; IV_LEN];
                iv.copy_from_slice(&body[..IV_LEN]);
                assert_eq!(
                    s.seal(iv, &pt).expect("seal"),
                    body,
                    "accepted a non-canonical frame"
                );
                assert_eq!(o.counter(), 1);
            }
            Err(_) => {
                // Poisoned after the first failure, whatever comes next.
                assert_eq!(o.open(body), Err(OpenError::Poisoned));
                assert_eq!(o.counter(), 0);
            }
        }
    }

    // 2. Round trip of a fuzz-provided plaintext, twice to move the counter.
    let (mut s, mut o) = pair();
    let f0 = s.seal(iv, body).expect("seal");
    assert_eq!(f0.len(), sealed_len(body.len()));
    assert_eq!(o.open(&f0).expect("open f0"), body);
    let f1 = s.seal(iv, body).expect("seal");
    assert_ne!(f0, f1, "counter must change the tag");
    assert_eq!(o.open(&f1).expect("open f1"), body);

    // 3. Replaying an old frame fails.
    let (mut s2, mut o2) = pair();
    let g0 = s2.seal(iv, body).expect("seal");
    assert!(o2.open(&g0).is_ok());
    assert_eq!(o2.open(&g0), Err(OpenError::BadTag));

    // 4. One tampered byte anywhere in a valid frame fails, and never with a
    //    padding error (the tag is checked before decryption).
    let (mut s3, mut o3) = pair();
    let mut h = s3.seal(iv, body).expect("seal");
    let at = pos % h.len();
    h[at] ^= mask;
    assert_eq!(o3.open(&h), Err(OpenError::BadTag), "tampered byte {at}");

    // 5. Truncating or extending a valid frame fails.
    let (mut s4, mut o4) = pair();
    let mut t = s4.seal(iv, body).expect("seal");
    if pos % 2 == 0 {
        t.truncate(t.len() - 1 - pos % t.len().min(64));
    } else {
        t.extend(std::iter::repeat_n(head[2], 1 + pos % 64));
    }
    assert!(o4.open(&t).is_err());
});
