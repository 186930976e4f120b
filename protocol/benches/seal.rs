//! Sealed-frame throughput next to its raw primitives.
//!
//! For 128-byte and 4-KiB plaintexts, side by side:
//! - `seal`: `Sealer::seal` with a fixed IV (AES-256-CBC/PKCS#7 + HMAC-SHA256);
//! - `open`: `Opener::open` on frames pre-sealed at the matching counters;
//! - `aes_cbc_encrypt` / `aes_cbc_decrypt`: the cipher alone (key schedule
//!   included, as in `seal`/`open`);
//! - `hmac_sha256`: the tag alone, over the same bytes the seal tag covers
//!   (direction ‖ counter ‖ IV ‖ ciphertext).
//!
//! Throughput is the plaintext size for every op, so MB/s compare directly.
//! Run with `cargo bench -p holdfast-protocol --bench seal`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use holdfast_protocol::seal::{Direction, DirectionKeys, IV_LEN, Opener, Sealer};
use sha2::Sha256;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

const ENC_KEY: [u8; 32] = [0x11; 32];
const MAC_KEY: [u8; 32] = [0x22; 32];
const IV: [u8; IV_LEN] = [0x33; IV_LEN];
const DIR: Direction = Direction::ClientToServer;
/// Frames pre-sealed for the `open` benchmark; the opener is re-created (off
/// the clock) every time they run out.
const BATCH: usize = 1024;

fn keys() -> DirectionKeys {
    DirectionKeys {
        enc: ENC_KEY,
        mac: MAC_KEY,
    }
}

fn bench_size(c: &mut Criterion, label: &str, size: usize) {
    let plaintext: Vec<u8> = (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect();
    let mut group = c.benchmark_group(label);
    group.throughput(Throughput::Bytes(size as u64));

    group.bench_function("seal", |b| {
        let mut sealer = Sealer::new(keys(), DIR);
        b.iter(|| {
            sealer
                .seal(black_box(IV), black_box(&plaintext))
                .expect("seal")
        });
    });

    // The frames sealed at counters 0..BATCH are the same every time (fixed
    // keys, IV and plaintext), so seal them once.
    let frames: Vec<Vec<u8>> = {
        let mut sealer = Sealer::new(keys(), DIR);
        (0..BATCH)
            .map(|_| sealer.seal(IV, &plaintext).expect("seal"))
            .collect()
    };
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = usize::try_from(left).unwrap_or(BATCH).min(BATCH);
                let mut opener = Opener::new(keys(), DIR);
                let start = Instant::now();
                for frame in &frames[..n] {
                    black_box(opener.open(black_box(frame)).expect("open"));
                }
                total += start.elapsed();
                left -= n as u64;
            }
            total
        });
    });

    group.bench_function("aes_cbc_encrypt", |b| {
        b.iter(|| {
            Aes256CbcEnc::new(&ENC_KEY.into(), &black_box(IV).into())
                .encrypt_padded_vec::<Pkcs7>(black_box(&plaintext))
        });
    });

    let ciphertext =
        Aes256CbcEnc::new(&ENC_KEY.into(), &IV.into()).encrypt_padded_vec::<Pkcs7>(&plaintext);
    group.bench_function("aes_cbc_decrypt", |b| {
        b.iter(|| {
            Aes256CbcDec::new(&ENC_KEY.into(), &black_box(IV).into())
                .decrypt_padded_vec::<Pkcs7>(black_box(&ciphertext))
                .expect("padding")
        });
    });

    let mut body = IV.to_vec();
    body.extend_from_slice(&ciphertext);
    group.bench_function("hmac_sha256", |b| {
        b.iter(|| {
            let mut mac = HmacSha256::new_from_slice(&MAC_KEY).expect("any key length");
            mac.update(&[DIR.wire_byte()]);
            mac.update(&black_box(7u64).to_be_bytes());
            mac.update(black_box(&body));
            mac.finalize().into_bytes()
        });
    });

    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_size(c, "128B", 128);
    bench_size(c, "4KiB", 4096);
}

criterion_group! {
    name = seal;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(seal);
