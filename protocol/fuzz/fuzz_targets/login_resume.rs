//! Login and resume: the first sealed frame of a real session, and the
//! outbox/inbox machines across reconnects, restarts and acks.
//!
//! Input layout: byte 0 = length L of the login plaintext; bytes 1..=L are
//! sealed by a client session (keys from the real key schedule) and
//! opened by the server session, as a first frame is; the rest is a script of
//! one-byte operations on a client outbox, its durable copy, and an inbox.
//!
//! Properties:
//! - the first frame opens to exactly what was sealed; decoding it never
//!   panics; a decoded `Login` round-trips and its `Debug` never shows the
//!   password; a frame sealed for the other direction or replayed is refused;
//! - resume: after any mix of sends, acks (stale, duplicate or beyond), lost
//!   connections and restarts from the durable copy, every connection
//!   transmits exactly the unacked items, oldest first, each once; nothing
//!   acked is sent again; an ack beyond what was numbered is an error that
//!   changes nothing;
//! - the inbox applies each seq exactly once, in order, and refuses gaps.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{ClientMsg, Seq};
use holdfast_protocol::delivery::{AckPolicy, Inbox, Outbox, Verdict};
use holdfast_protocol::handshake::{
    ClientHandshake, ServerIdentity, SessionKeys, derive_keys, server_accept_with,
};
use holdfast_protocol::seal::{Direction, Opener, Sealer};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

/// Session keys from the key schedule over a real exchange of hellos, made
/// once: an X25519 handshake per input would cap the fuzzer at a few dozen
/// execs per second under ASan, and the handshake has its own target.
fn keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let identity = ServerIdentity::from_secret_bytes([7; 32]);
        let client = ClientHandshake::new([9; 32]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let acc =
            server_accept_with(&identity, &mut rng, client.hello()).expect("own hello accepted");
        derive_keys(client.hello(), &acc.reply, &[1; 32], &[2; 32])
    })
}

fn login_frame(plain: &[u8]) {
    let k = keys();
    let mut client_sealer = Sealer::new(k.c2s.clone(), Direction::ClientToServer);
    let mut client_opener = Opener::new(k.s2c.clone(), Direction::ServerToClient);
    let mut server_opener = Opener::new(k.c2s.clone(), Direction::ClientToServer);
    let iv = [plain.first().copied().unwrap_or(0); 16];
    let frame = client_sealer
        .seal(iv, plain)
        .expect("sealing within the limit");
    let opened = server_opener.open(&frame).expect("a sealed frame opens");
    assert_eq!(opened, plain);
    assert!(server_opener.open(&frame).is_err(), "replay accepted");
    // A client frame does not open as a server frame: directions are bound.
    assert!(client_opener.open(&frame).is_err(), "direction not bound");
    if let Ok(m) = ClientMsg::decode(&opened) {
        let again = ClientMsg::decode(&m.encode()).expect("re-encoded message decodes");
        assert_eq!(again, m);
        if let ClientMsg::Login(l) = &m
            && l.password.len() >= 4
        {
            let shown = format!("{l:?}");
            assert!(!shown.contains(&l.password), "password in Debug: {shown}");
        }
    }
}

/// The durable outbox: what survives a restart.
#[derive(Default)]
struct Durable {
    acked: Seq,
    items: BTreeMap<Seq, u32>,
}

fn resume_script(ops: &[u8]) {
    let mut durable = Durable::default();
    let mut outbox: Outbox<u32> = Outbox::new();
    // The seq this connection must transmit next (None: the oldest unacked).
    let mut expect_next: Option<Seq> = None;
    let mut next_item = 0u32;
    let t0 = Instant::now();
    let mut inbox = Inbox::new(0, AckPolicy::default());
    let mut applied: Vec<Seq> = Vec::new();
    let mut server_head: Seq = 0;

    for (i, op) in ops.iter().enumerate() {
        let arg = u64::from(op >> 3);
        match op & 7 {
            // Send: durable first, then the machine.
            0 => {
                let seq = outbox.next_seq();
                durable.items.insert(seq, next_item);
                assert_eq!(outbox.push(next_item), seq);
                next_item += 1;
            }
            // Transmit whatever is due.
            1 => {
                while let Some((seq, item)) = outbox.poll_transmit() {
                    assert_eq!(durable.items.get(&seq), Some(item));
                    assert!(seq > durable.acked, "acked item {seq} sent again");
                    if let Some(next) = expect_next {
                        assert_eq!(seq, next, "not in order");
                    } else {
                        assert_eq!(
                            Some(&seq),
                            durable.items.keys().next(),
                            "a connection must start at the oldest unacked item"
                        );
                    }
                    expect_next = Some(seq + 1);
                }
            }
            // A cumulative ack, anywhere from stale to beyond.
            2 => {
                let up_to = durable.acked.saturating_sub(2) + arg;
                let before = outbox.unacked();
                match outbox.on_ack(up_to) {
                    Ok(done) => {
                        for (seq, item) in done {
                            assert!(seq <= up_to);
                            assert_eq!(durable.items.remove(&seq), Some(item));
                        }
                        durable.acked = durable.acked.max(up_to);
                        // An ack may cover items not yet sent on this
                        // connection (sent on an earlier one).
                        expect_next = expect_next.map(|n| n.max(up_to + 1));
                    }
                    Err(_) => {
                        assert!(up_to >= outbox.next_seq());
                        assert_eq!(outbox.unacked(), before, "a refused ack changed state");
                    }
                }
                assert_eq!(outbox.unacked(), durable.items.len());
            }
            // The connection drops.
            3 => {
                outbox.on_reconnect();
                expect_next = None;
                inbox.on_reconnect();
            }
            // The process restarts: rebuild from the durable copy.
            4 => {
                outbox =
                    Outbox::restore(durable.acked, durable.items.iter().map(|(s, v)| (*s, *v)));
                expect_next = None;
                inbox = Inbox::new(applied.last().copied().unwrap_or(0), AckPolicy::default());
            }
            // The server has new events; deliver one, possibly a resend or a jump.
            5 => {
                server_head += 1;
                let cursor = inbox.cursor();
                let seq = match arg % 4 {
                    0 => cursor.saturating_sub(arg / 4),
                    1 => cursor + 1 + arg / 4,
                    _ => cursor + 1,
                }
                .min(server_head.max(cursor + 1));
                match inbox.check(seq) {
                    Ok(Verdict::Apply) => {
                        assert_eq!(seq, cursor + 1);
                        inbox.applied(seq, t0 + Duration::from_millis(i as u64));
                        applied.push(seq);
                    }
                    Ok(Verdict::Duplicate) => assert!(seq <= cursor),
                    Err(g) => {
                        assert!(seq > cursor + 1);
                        assert_eq!(g.expected, cursor + 1);
                    }
                }
            }
            // Ack timing.
            6 => {
                if let Some(a) = inbox.poll_ack(t0 + Duration::from_millis(i as u64 + arg * 10)) {
                    assert!(a <= inbox.cursor());
                }
            }
            // A snapshot moves the cursor forward.
            _ => {
                let to = inbox.cursor() + arg;
                inbox.reset_to(to, t0 + Duration::from_millis(i as u64));
                if arg > 0 {
                    applied.push(to);
                }
                server_head = server_head.max(to);
            }
        }
    }
    // Exactly once, in order: the applied seqs strictly increase.
    for w in applied.windows(2) {
        assert!(w[0] < w[1], "{applied:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (plain, ops) = rest.split_at(n);
    login_frame(plain);
    resume_script(ops);
});
