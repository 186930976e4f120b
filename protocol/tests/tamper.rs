//! An active attacker on the wire, after a real handshake.
//!
//! Sealed frames carry an implicit per-direction counter under the MAC, so
//! every edit an attacker can make to the byte stream (flip, replay, reorder,
//! drop, splice, reflect, truncate, extend) must fail the tag, and after the
//! first failure the opener must refuse everything, even genuine frames.
//!
//! Every test opens the untampered frames first through an identical session
//! (`Pair::new` is deterministic), so a rejection below cannot come from a
//! broken setup.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_protocol::handshake::{ClientHandshake, ServerIdentity, server_accept};
use holdfast_protocol::seal::{
    IV_LEN, MIN_SEALED_LEN, OpenError, Opener, Sealer, TAG_LEN, sealed_len,
};

/// Plaintexts of the frames each direction carries, in order. Two share a
/// length so their parts can be spliced.
const PLAINTEXTS: [&[u8]; 4] = [
    b"hello",
    b"forty bytes of agent command plaintext..",
    b"heartbeat",
    b"ninebytes",
];

/// One session, from real handshake messages, with fixed secrets so it can
/// be rebuilt bit-for-bit for every trial.
struct Pair {
    client_sealer: Sealer,
    client_opener: Opener,
    server_sealer: Sealer,
    server_opener: Opener,
}

impl Pair {
    fn new() -> Self {
        Self::with_secrets([3; 32], [5; 32])
    }

    fn with_secrets(client_eph: [u8; 32], server_eph: [u8; 32]) -> Self {
        let identity = ServerIdentity::from_secret_bytes([7; 32]);
        let client = ClientHandshake::new(client_eph);
        let accepted = server_accept(&identity, server_eph, client.hello()).unwrap();
        let session = client.handle_reply(&accepted.reply).unwrap();
        assert_eq!(session.server_static, identity.public_bytes());
        Self {
            client_sealer: session.sealer,
            client_opener: session.opener,
            server_sealer: accepted.session.sealer,
            server_opener: accepted.session.opener,
        }
    }

    /// The client-to-server frames, sealed with fixed IVs.
    fn upstream(&mut self) -> Vec<Vec<u8>> {
        seal_all(&mut self.client_sealer, 0x10)
    }

    /// The server-to-client frames.
    fn downstream(&mut self) -> Vec<Vec<u8>> {
        seal_all(&mut self.server_sealer, 0x20)
    }
}

fn seal_all(sealer: &mut Sealer, iv_base: u8) -> Vec<Vec<u8>> {
    PLAINTEXTS
        .iter()
        .enumerate()
        .map(|(i, pt)| {
            let iv = [iv_base + u8::try_from(i).unwrap(); IV_LEN];
            sealer.seal(iv, pt).unwrap()
        })
        .collect()
}

/// Open `frames` in order and require each to fail or succeed as told.
/// Returns the first error (the opener is poisoned from then on).
fn expect_rejected(opener: &mut Opener, accepted_prefix: &[&[u8]], bad: &[u8]) -> OpenError {
    for (i, f) in accepted_prefix.iter().enumerate() {
        assert_eq!(
            opener.open(f).as_deref().ok(),
            Some(PLAINTEXTS[i]),
            "genuine frame {i} must open"
        );
    }
    let err = opener.open(bad).expect_err("tampered frame was accepted");
    assert_poisoned(opener);
    err
}

/// Once rejected, the opener refuses everything, including the genuine next
/// frame and the genuine frame it just refused a forgery of.
fn assert_poisoned(opener: &mut Opener) {
    let mut fresh = Pair::new();
    for f in fresh.upstream().iter().chain(fresh.downstream().iter()) {
        assert_eq!(opener.open(f), Err(OpenError::Poisoned));
    }
}

#[test]
fn untampered_streams_open_in_both_directions() {
    let mut p = Pair::new();
    for (f, pt) in p.upstream().iter().zip(PLAINTEXTS) {
        assert_eq!(p.server_opener.open(f).unwrap(), pt);
    }
    for (f, pt) in p.downstream().iter().zip(PLAINTEXTS) {
        assert_eq!(p.client_opener.open(f).unwrap(), pt);
    }
    // The setup the other tests lean on: rebuilding gives identical frames.
    assert_eq!(Pair::new().upstream(), Pair::new().upstream());
    assert_eq!(p.server_opener.counter(), PLAINTEXTS.len() as u64);
}

/// Every single-bit flip of a 5-byte and a 40-byte frame, in both
/// directions, at counters 0 and 1.
#[test]
fn every_single_bit_flip_is_rejected() {
    let reference = {
        let mut p = Pair::new();
        (p.upstream(), p.downstream())
    };
    assert_eq!(reference.0[0].len(), sealed_len(5));
    assert_eq!(reference.0[1].len(), sealed_len(40));
    let mut trials = 0usize;
    for upstream in [true, false] {
        let frames = if upstream { &reference.0 } else { &reference.1 };
        for target in 0..2 {
            let frame = &frames[target];
            for bit in 0..frame.len() * 8 {
                let mut bad = frame.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                let mut p = Pair::new();
                let opener = if upstream {
                    &mut p.server_opener
                } else {
                    &mut p.client_opener
                };
                let prefix: Vec<&[u8]> = frames[..target].iter().map(Vec::as_slice).collect();
                for (i, f) in prefix.iter().enumerate() {
                    assert_eq!(opener.open(f).unwrap(), PLAINTEXTS[i]);
                }
                // BadTag, never BadPadding: a padding error would mean the
                // MAC passed and the forged ciphertext was decrypted.
                assert_eq!(
                    opener.open(&bad),
                    Err(OpenError::BadTag),
                    "bit {bit} of frame {target} (upstream={upstream})"
                );
                assert_eq!(opener.open(frame), Err(OpenError::Poisoned));
                trials += 1;
            }
        }
    }
    assert_eq!(trials, 2 * 8 * (sealed_len(5) + sealed_len(40)));
}

#[test]
fn replay_is_rejected() {
    let mut p = Pair::new();
    let up = p.upstream();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[&up[0]], &up[0]),
        OpenError::BadTag
    );
    // Replaying an older frame later in the stream as well.
    let mut p = Pair::new();
    let up = p.upstream();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[&up[0], &up[1], &up[2]], &up[1]),
        OpenError::BadTag
    );
}

#[test]
fn swapped_frames_are_rejected() {
    let mut p = Pair::new();
    let up = p.upstream();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[], &up[1]),
        OpenError::BadTag
    );
    let mut p = Pair::new();
    let down = p.downstream();
    assert_eq!(
        expect_rejected(&mut p.client_opener, &[&down[0], &down[1]], &down[3]),
        OpenError::BadTag
    );
}

#[test]
fn dropped_frame_is_detected_at_the_next_one() {
    let mut p = Pair::new();
    let up = p.upstream();
    // Frame 1 never arrives; frame 2 is genuine but out of place.
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[&up[0]], &up[2]),
        OpenError::BadTag
    );
}

#[test]
fn spliced_tag_is_rejected() {
    let mut p = Pair::new();
    let up = p.upstream();
    // Frames 2 and 3 have equal lengths; take IV and ciphertext from 3 and
    // the tag from 2, presented where 2 is expected.
    assert_eq!(up[2].len(), up[3].len());
    let n = up[2].len();
    let mut bad = up[3][..n - TAG_LEN].to_vec();
    bad.extend_from_slice(&up[2][n - TAG_LEN..]);
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[&up[0], &up[1]], &bad),
        OpenError::BadTag
    );
    // And the IV swapped in from another frame under a genuine ciphertext
    // and tag.
    let mut p = Pair::new();
    let up = p.upstream();
    let mut bad = up[2].clone();
    bad[..IV_LEN].copy_from_slice(&up[3][..IV_LEN]);
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[&up[0], &up[1]], &bad),
        OpenError::BadTag
    );
}

#[test]
fn frame_from_another_session_is_rejected() {
    let mut other = Pair::with_secrets([4; 32], [6; 32]);
    let foreign_up = other.upstream();
    let foreign_down = other.downstream();
    // Same server identity, same plaintexts, same IVs, same counters: only
    // the ephemeral keys differ.
    let mut p = Pair::new();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[], &foreign_up[0]),
        OpenError::BadTag
    );
    let mut p = Pair::new();
    let up = p.upstream();
    assert_ne!(up[0], foreign_up[0]);
    assert_eq!(
        expect_rejected(&mut p.client_opener, &[], &foreign_down[0]),
        OpenError::BadTag
    );
    // Only the client ephemeral differs.
    let mut half = Pair::with_secrets([4; 32], [5; 32]);
    let half_up = half.upstream();
    let mut p = Pair::new();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[], &half_up[0]),
        OpenError::BadTag
    );
}

#[test]
fn frame_sealed_for_the_other_direction_is_rejected() {
    // Reflection: the server's own frame bounced back at it.
    let mut p = Pair::new();
    let down = p.downstream();
    assert_eq!(
        expect_rejected(&mut p.server_opener, &[], &down[0]),
        OpenError::BadTag
    );
    // The client's own frame bounced back at the client.
    let mut p = Pair::new();
    let up = p.upstream();
    assert_eq!(
        expect_rejected(&mut p.client_opener, &[], &up[0]),
        OpenError::BadTag
    );
}

#[test]
fn truncation_and_extension_are_rejected() {
    let reference = Pair::new().upstream();
    let long = &reference[1];
    assert!(long.len() >= MIN_SEALED_LEN + 16);
    let mut variants: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("IV only".into(), long[..IV_LEN].to_vec()),
        (
            "one short of minimum".into(),
            long[..MIN_SEALED_LEN - 1].to_vec(),
        ),
        ("tag dropped".into(), long[..long.len() - TAG_LEN].to_vec()),
        ("first IV block dropped".into(), long[IV_LEN..].to_vec()),
        (
            "last ciphertext block dropped".into(),
            [
                &long[..long.len() - TAG_LEN - 16],
                &long[long.len() - TAG_LEN..],
            ]
            .concat(),
        ),
        (
            "block appended after tag".into(),
            [&long[..], &[0u8; 16]].concat(),
        ),
        (
            "block inserted before tag".into(),
            [
                &long[..long.len() - TAG_LEN],
                &[0u8; 16],
                &long[long.len() - TAG_LEN..],
            ]
            .concat(),
        ),
        ("doubled".into(), [&long[..], &long[..]].concat()),
    ];
    for cut in 1..long.len() {
        variants.push((
            format!("truncated by {cut}"),
            long[..long.len() - cut].to_vec(),
        ));
    }
    for extra in 1..=48usize {
        let mut v = long.clone();
        v.extend(std::iter::repeat_n(0xA5, extra));
        variants.push((format!("extended by {extra}"), v));
    }
    for (what, bad) in variants {
        let mut p = Pair::new();
        let up = p.upstream();
        assert_eq!(up[1], *long);
        assert_eq!(p.server_opener.open(&up[0]).unwrap(), PLAINTEXTS[0]);
        let err = p
            .server_opener
            .open(&bad)
            .expect_err(&format!("{what} was accepted"));
        assert!(
            matches!(err, OpenError::BadTag | OpenError::Malformed(_)),
            "{what}: {err:?}"
        );
        assert_eq!(
            p.server_opener.open(long),
            Err(OpenError::Poisoned),
            "{what}"
        );
    }
}

#[test]
fn poison_outlives_every_later_frame() {
    let mut p = Pair::new();
    let up = p.upstream();
    let mut bad = up[0].clone();
    bad[IV_LEN] ^= 0x80;
    assert_eq!(p.server_opener.open(&bad), Err(OpenError::BadTag));
    for f in &up {
        assert_eq!(p.server_opener.open(f), Err(OpenError::Poisoned));
    }
    // The counter did not move: nothing after the failure was processed.
    assert_eq!(p.server_opener.counter(), 0);
    // The other direction of the same session is independent and unharmed.
    let down = p.downstream();
    assert_eq!(p.client_opener.open(&down[0]).unwrap(), PLAINTEXTS[0]);
}
