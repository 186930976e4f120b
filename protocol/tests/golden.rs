//! Golden vectors: they pin the wire format byte for byte, so that every
//! change to it is deliberate.
//!
//! - Handshake, key schedule, sealed frames and length-delimited frames are
//!   pinned as hex constants in this file, and cross-checked against an
//!   independent reference built straight from the RustCrypto primitives
//!   (HMAC with a variable-length key, HKDF written out by hand, AES-CBC with
//!   the padding checked by hand).
//! - Every agent-channel message is pinned in `tests/fixtures/agent/*.hex`,
//!   every visitor-channel message in `tests/fixtures/visitor/*.json`. Run
//!   with `HOLDFAST_BLESS=1` to rewrite the fixtures after a deliberate wire
//!   change; without it a missing, different or orphaned fixture fails.
//! - `PROTOCOL.md` must quote every pinned vector and every agent message
//!   fixture in full, every hex string it quotes
//!   must be one of them, its byte breakdowns must add up, and its variant,
//!   error-code, limit and constant tables must match the code.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::NoPadding};
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio_util::codec::{Decoder, Encoder};
use x25519_dalek::{PublicKey, StaticSecret};

use holdfast_protocol::agent::{
    AckBatch, Action, AttachmentInfo, Author, CannedReply, ChatMessage, ClientMsg, Command,
    CommandResult, ConversationInfo, ConversationState, DECODE_LIMIT, Event, GroupInfo,
    InvitationSignal, InvitationState, InviteCounts, InviteRule, InviteRuleSpec, LiveEvent, Login,
    LoginOk, MAX_UPLOAD_CHUNK, Outcome, PageView, Presence, Query, QueryResult, Resume, Role,
    ServerMsg, Snapshot, SnapshotPart, TeamMember, VisitorInfo, WireError,
};
use holdfast_protocol::backoff::BackoffConfig;
use holdfast_protocol::codec::{FrameCodec, FrameError, HEADER_LEN};
use holdfast_protocol::delivery::AckPolicy;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::{
    CLIENT_HELLO_LEN, ClientHandshake, Fingerprint, HandshakeError, LABEL_C2S_ENC, LABEL_C2S_MAC,
    LABEL_S2C_ENC, LABEL_S2C_MAC, PinCheck, SERVER_HELLO_LEN, ServerIdentity, VERSION_REFUSAL_LEN,
    check_pin, derive_keys, encode_client_hello, server_accept,
};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::liveness::LivenessConfig;
use holdfast_protocol::notice::{LeaveReason, Notice};
use holdfast_protocol::seal::{
    Direction, DirectionKeys, IV_LEN, MIN_SEALED_LEN, OpenError, Opener, Sealer, TAG_LEN,
    max_plaintext, sealed_len,
};
use holdfast_protocol::visitor::{
    ConversationView, IdentityProof, InvitationEvent, Limits, LongPollRequest, LongPollResponse,
    PageInfo, Sender, VisitorConvState, VisitorEvent, VisitorIn, VisitorMessage, VisitorOut,
    parse_in, parse_long_poll,
};
use holdfast_protocol::{DEFAULT_MAX_FRAME, PROTOCOL_VERSION, VISITOR_PROTOCOL_VERSION};

type HmacSha256 = Hmac<Sha256>;

// ================================================================ inputs

/// 32 bytes counting up from `start`.
const fn seq32(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut b = start;
    let mut i = 0;
    while i < 32 {
        out[i] = b;
        b = b.wrapping_add(1);
        i += 1;
    }
    out
}

/// 16 bytes counting up from `start`.
const fn seq16(start: u8) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut b = start;
    let mut i = 0;
    while i < 16 {
        out[i] = b;
        b = b.wrapping_add(1);
        i += 1;
    }
    out
}

const CLIENT_EPH_SECRET: [u8; 32] = seq32(0x01);
const SERVER_EPH_SECRET: [u8; 32] = seq32(0x21);
const SERVER_STATIC_SECRET: [u8; 32] = seq32(0x41);
/// IV of the first client-to-server sealed frame (the Login) in the session vector.
const LOGIN_IV: [u8; 16] = seq16(0x61);
/// IV of the first server-to-client sealed frame (the LoginOk) in the session vector.
const LOGIN_OK_IV: [u8; 16] = seq16(0x71);

/// Keys of the standalone sealed-frame vectors (the same in both directions,
/// so the frames differ only by the direction byte in the MAC input).
const SEAL_ENC: [u8; 32] = seq32(0x80);
const SEAL_MAC: [u8; 32] = seq32(0xa0);
const SEAL_IV_0: [u8; 16] = seq16(0xc0);
const SEAL_IV_1: [u8; 16] = seq16(0xd0);
const SEAL_IV_2: [u8; 16] = seq16(0xe0);
const SEAL_IV_BIG: [u8; 16] = seq16(0xf0);
const SEAL_PT_0: &[u8] = b"";
const SEAL_PT_1: &[u8] = b"hello";
const SEAL_PT_2: &[u8] = b"0123456789abcdef";
const BIG_COUNTER: u64 = 1 << 32;

// ================================================================ pinned outputs

const CLIENT_EPH_PUBLIC: &str = "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
const SERVER_EPH_PUBLIC: &str = "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b";
const SERVER_STATIC_PUBLIC: &str =
    "64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466";
const CLIENT_HELLO: &str =
    "4846535401000407a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
const SERVER_HELLO: &str = "484653540200045869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466";
const SALT: &str = "564f648d844d5b89ccb599560106bba5186841e1b13510f829b935acccb7f8ce";
const DH_EPH: &str = "a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77";
const DH_STATIC: &str = "26c2c17fdb82161cb21ad16e721315355b64d1763119b10bfc962530dc7cc163";
const KEY_C2S_ENC: &str = "ee40c4d12424553bab1068fc66d1005304eb6cf34e1d167bd767d232cfa05a36";
const KEY_C2S_MAC: &str = "4248099a3516c0eb848f24e54e878b31936de9bd5764b0e53d5f98c75beb648e";
const KEY_S2C_ENC: &str = "a16d6c0c2ad036bec97c5b8b06a4d62f8bd3917b6e888eaa875285c56aa58e10";
const KEY_S2C_MAC: &str = "263d766177c77e05b5d8f7061f8ae22caafa91197a48a52786a972decb69775e";
const FINGERPRINT: &str =
    "bc84:1db8:fea3:efd8:4555:a7f8:eeb9:2503:3c90:c9d5:034b:1a4c:48a6:c87d:e3c0:ebde";
/// A version 3 client (an agent app built before version 4) ...
const CLIENT_HELLO_V3: &str =
    "4846535401000307a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
/// ... and the server's refusal (server 4, client 3).
const VERSION_REFUSAL: &str = "484653540300040003";
/// The first sealed frame of the session: `client_login` under the c2s keys, counter 0.
const LOGIN_FRAME: &str = "6162636465666768696a6b6c6d6e6f703ece7a971049c58447343ad1d84c54bc8e5c176988b1126f0cf8b34953a6a6c3d499e1bff67dc4d9e4e6ea148c13074a3b9d232038387e16475a1bd17c33e6f9679799251e27dcbdec6a35f1b8d7920c23f9f5c29ef0c09a1d97534626c98f33";
/// The server's first sealed frame: `server_login_ok_replay` under the s2c keys, counter 0.
const LOGIN_OK_FRAME: &str = "7172737475767778797a7b7c7d7e7f8098946201f19d7abef55993fcd8f564f5aeba192e14f09915a1cbdc420d38c00b56190df3dba08c5283cc84c25b892a31f5450d2f191d37e9a138f2916a6f8e31";
/// The ClientHello as it goes on the wire: length prefix and payload.
const CLIENT_HELLO_FRAMED: &str =
    "000000274846535401000407a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
/// The Login frame as it goes on the wire.
const LOGIN_FRAME_FRAMED: &str = "000000706162636465666768696a6b6c6d6e6f703ece7a971049c58447343ad1d84c54bc8e5c176988b1126f0cf8b34953a6a6c3d499e1bff67dc4d9e4e6ea148c13074a3b9d232038387e16475a1bd17c33e6f9679799251e27dcbdec6a35f1b8d7920c23f9f5c29ef0c09a1d97534626c98f33";

const SEAL_C2S_0: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf02237f5b80287b49f0a8ae4a95d6b036fd0e68984fff7f7313ec7ceadaa3e3460df0caaeb924e0448f7675b95b27a0ef";
const SEAL_C2S_1: &str = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfbafc05c0ae405caea82a290f9fdce533eeb8187c2ca647d2d43fc642d90cb171988ff94b8334196e2e54fce8f49e89de";
const SEAL_C2S_2: &str = "e0e1e2e3e4e5e6e7e8e9eaebecedeeef2049c4702bc5a9fff4ed193fd4012a3764d01f8a4b068a4f6ae9dada8354283d912434165424fd9a51df2f5cd4bae3e9f1a49a1b472ef6f6264908f3d01f7244";
const SEAL_S2C_0: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf02237f5b80287b49f0a8ae4a95d6b0362e55b7ee0f9840c88b7ebdd86aa02a5480da35ed773f90051a7959ca9d0225e8";
const SEAL_S2C_1: &str = "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfbafc05c0ae405caea82a290f9fdce533ce57bc1770b7d15ef18d1f9616e30146b859318f3af03bc6891eb124f7e67671";
const SEAL_S2C_2: &str = "e0e1e2e3e4e5e6e7e8e9eaebecedeeef2049c4702bc5a9fff4ed193fd4012a3764d01f8a4b068a4f6ae9dada8354283dd4031479edadfef304fd6d74032d7900bf6ef4ab47c48ed417746836ac371b4c";
/// Reference implementation only (the crate cannot be fast-forwarded to
/// this counter): client-to-server, counter 2^32, plaintext "hello".
const SEAL_C2S_BIG: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeffa1d969fc7aabae19342681de9b7dc4496e43c3b175974639cee31cca02883452ce859cc8fff0b5112386eaa4b9a372b7";

fn h(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

// ================================================================ reference crypto

/// HMAC-SHA256 with the standard variable-length-key constructor.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    for p in parts {
        Mac::update(&mut mac, p);
    }
    mac.finalize().into_bytes().into()
}

/// RFC 5869 HKDF-SHA256 for a single 32-byte output block, written out.
fn reference_hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac(salt, &[ikm]);
    hmac(&prk, &[info, &[0x01]])
}

/// Seal by hand: PKCS#7 pad, AES-256-CBC without padding, HMAC over
/// direction ‖ counter ‖ IV ‖ ciphertext.
fn reference_seal(
    enc: &[u8; 32],
    mac: &[u8; 32],
    dir: u8,
    counter: u64,
    iv: [u8; 16],
    pt: &[u8],
) -> Vec<u8> {
    let pad = 16 - pt.len() % 16;
    let mut padded = pt.to_vec();
    padded.extend(std::iter::repeat_n(u8::try_from(pad).unwrap(), pad));
    let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(enc, &iv)
        .unwrap()
        .encrypt_padded_vec::<NoPadding>(&padded);
    let tag = hmac(mac, &[&[dir], &counter.to_be_bytes(), &iv, &ct]);
    [&iv[..], &ct, &tag].concat()
}

/// Open by hand, independently of `seal::Opener`.
fn reference_open(enc: &[u8; 32], mac: &[u8; 32], dir: u8, counter: u64, frame: &[u8]) -> Vec<u8> {
    assert!(frame.len() >= IV_LEN + 16 + TAG_LEN);
    let (iv, rest) = frame.split_at(IV_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    assert_eq!(ct.len() % 16, 0);
    let want = hmac(mac, &[&[dir], &counter.to_be_bytes(), iv, ct]);
    assert_eq!(
        h(want),
        h(tag),
        "tag is not HMAC-SHA256(dir ‖ counter ‖ IV ‖ ct)"
    );
    let mut pt = cbc::Decryptor::<aes::Aes256>::new_from_slices(enc, iv)
        .unwrap()
        .decrypt_padded_vec::<NoPadding>(ct)
        .unwrap();
    let pad = *pt.last().unwrap();
    assert!((1..=16).contains(&pad), "bad PKCS#7 padding length {pad}");
    let body = pt.len() - usize::from(pad);
    assert!(pt[body..].iter().all(|b| *b == pad), "bad PKCS#7 padding");
    pt.truncate(body);
    pt
}

fn frame_with_codec(payload: &[u8]) -> Vec<u8> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    codec
        .encode(Bytes::copy_from_slice(payload), &mut buf)
        .unwrap();
    let wire = buf.to_vec();
    let back = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(&back[..], payload);
    assert!(buf.is_empty());
    wire
}

// ================================================================ sample messages

const T0: i64 = 1_700_000_000_000;

fn id(n: u8) -> MsgId {
    MsgId::v7(0x0190_1234_5678 + u64::from(n), [n; 10])
}

fn device() -> MsgId {
    MsgId::v7(0x018f_0000_0000, [0xd0; 10])
}

fn page_views() -> Vec<PageView> {
    vec![
        PageView {
            url: "https://shop.example/".into(),
            title: "Shop".into(),
            referrer: Some("https://search.example/".into()),
            at_ms: T0,
        },
        PageView {
            url: "https://shop.example/pricing".into(),
            title: "Pricing".into(),
            referrer: None,
            at_ms: T0 + 30_000,
        },
    ]
}

fn visitor_info() -> VisitorInfo {
    VisitorInfo {
        id: "v-7f3a".into(),
        site: 1,
        name: Some("Dana".into()),
        email: Some("dana@example.com".into()),
        attrs: vec![("plan".into(), "pro".into()), ("seats".into(), "12".into())],
        external_id: Some("user-829".into()),
        verified: true,
        online: true,
        user_agent: Some("Mozilla/5.0".into()),
        referrer: Some("https://search.example/".into()),
        visit_started_ms: T0,
        first_seen_ms: T0 - 86_400_000,
        trail: page_views(),
        conversation: Some(12),
        lang: None,
    }
}

fn conversation(id: u64, state: ConversationState) -> ConversationInfo {
    let assigned = matches!(state, ConversationState::Active | ConversationState::Closed);
    ConversationInfo {
        id,
        site: 1,
        visitor: "v-7f3a".into(),
        visitor_name: Some("Dana".into()),
        state,
        assigned: assigned.then_some(3),
        assigned_name: assigned.then(|| "Alice".into()),
        opened_at_ms: T0,
        updated_at_ms: T0 + 5_000,
        contact_email: matches!(state, ConversationState::LeftMessage)
            .then(|| "dana@example.com".into()),
        group: None,
    }
}

fn chat_message(message: u64, author: Author, body: &str) -> ChatMessage {
    ChatMessage {
        conversation: 12,
        message,
        client_id: id(2),
        author,
        body: body.into(),
        at_ms: T0 + 1_000,
        attachment: None,
    }
}

fn visitor_author() -> Author {
    Author::Visitor {
        visitor: "v-7f3a".into(),
    }
}

fn agent_author() -> Author {
    Author::Agent {
        agent: 3,
        name: "Alice".into(),
    }
}

fn client_login() -> ClientMsg {
    ClientMsg::Login(Login {
        username: "alice".into(),
        password: "hunter2".into(),
        device_id: device(),
        resume_after: Some(41),
        client: "holdfast-agent 0.1.0 (linux)".into(),
        ticket: None,
    })
}

fn login_ok(resume: Resume) -> ServerMsg {
    ServerMsg::LoginOk(LoginOk {
        agent: 3,
        display_name: "Alice".into(),
        site: 1,
        resume,
        commands_acked: 6,
        heartbeat_ms: 3_000,
        dead_after_ms: 10_000,
        server_time_ms: T0,
        ticket: Vec::new(),
        ticket_expires_ms: 0,
    })
}

/// When the sample ticket expires: 12 h, the server's default lifetime,
/// after the login at `T0` that issued it.
const TICKET_EXPIRES_MS: i64 = T0 + 12 * 3_600_000;

/// A resume ticket as the reference server would issue it to `device()` of
/// agent 3 (auth epoch 1) if it were the test-vector server of section 19.1.
/// Clients never look inside one; it is built the way PROTOCOL.md section
/// 9.2 describes the reference server's, so the example is one a server
/// would really issue, and the spec's layout and key derivation add up.
fn ticket() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&3u64.to_be_bytes());
    body.extend_from_slice(&device().0);
    body.extend_from_slice(&1i64.to_be_bytes());
    body.extend_from_slice(&TICKET_EXPIRES_MS.to_be_bytes());
    let key = reference_hkdf(
        b"holdfast resume tickets",
        &SERVER_STATIC_SECRET,
        b"hf-ticket-v1",
    );
    let tag = hmac(&key, &[b"hf-ticket-v1", &body]);
    [body, tag.to_vec()].concat()
}

/// A visitor who gave no name, with the language its widget said (10.24),
/// on the pricing page with no chat yet: vectors 19.17 and 19.19.
fn nameless_visitor() -> VisitorInfo {
    VisitorInfo {
        name: None,
        email: None,
        attrs: vec![],
        external_id: None,
        verified: false,
        referrer: None,
        trail: vec![PageView {
            url: "https://shop.example/pricing".into(),
            title: "Pricing".into(),
            referrer: None,
            at_ms: T0,
        }],
        conversation: None,
        lang: Some("zh-CN".into()),
        ..visitor_info()
    }
}

/// The rule of the invitation-rule vectors (PROTOCOL.md 19.18).
fn invite_rule() -> InviteRule {
    InviteRule {
        id: 4,
        rule: InviteRuleSpec {
            name: "pricing".into(),
            text: "Questions?".into(),
            url: Some("*/pricing*".into()),
            page_secs: Some(30),
            ..InviteRuleSpec::default()
        },
        enabled: true,
        counts: InviteCounts {
            fired: 10,
            shown: 8,
            accepted: 3,
            ignored: 4,
        },
    }
}

/// The LoginOk of the session vector, as a server that issues tickets
/// sends it.
fn login_ok_with_ticket() -> ServerMsg {
    match login_ok(Resume::Replay { after: 41 }) {
        ServerMsg::LoginOk(ok) => ServerMsg::LoginOk(LoginOk {
            ticket: ticket(),
            ticket_expires_ms: TICKET_EXPIRES_MS,
            ..ok
        }),
        _ => unreachable!(),
    }
}

/// The same device reconnecting with that ticket after a network blip: no
/// password needed.
fn client_login_ticket() -> ClientMsg {
    ClientMsg::Login(Login {
        username: "alice".into(),
        password: String::new(),
        device_id: device(),
        resume_after: Some(57),
        client: "holdfast-agent 0.1.0 (linux)".into(),
        ticket: Some(ticket()),
    })
}

fn command(seq: u64, action: Action) -> ClientMsg {
    ClientMsg::Command(Command {
        id: id(1),
        seq,
        action,
    })
}

fn wire_error(code: ErrorCode, message: &str, retry_after_ms: Option<u32>) -> WireError {
    WireError {
        code,
        message: message.into(),
        retry_after_ms,
    }
}

fn member(
    agent: u64,
    name: &str,
    role: Role,
    presence: Presence,
    (active, capacity): (u32, u32),
    disabled: bool,
) -> TeamMember {
    TeamMember {
        agent,
        name: name.into(),
        role,
        presence,
        active,
        capacity,
        disabled,
    }
}

/// Alice hands conversation 12 to Bob: the line both channels show.
fn transferred() -> Notice {
    Notice::Transferred {
        from: Some("Alice".into()),
        to: "Bob".into(),
        by: "Alice".into(),
    }
}

/// The note that came with that transfer: agents only.
fn transfer_note() -> Notice {
    Notice::Note {
        author: "Alice".into(),
        text: "VIP, wants a refund".into(),
    }
}

/// A system line as agents receive it: the notice as JSON in the body.
fn notice_line(message: u64, client_id: MsgId, notice: &Notice) -> ChatMessage {
    ChatMessage {
        conversation: 12,
        message,
        client_id,
        author: Author::System,
        body: notice.to_body(),
        at_ms: T0 + 3_000,
        attachment: None,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Msg {
    C(ClientMsg),
    S(ServerMsg),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::C(m) => m.encode(),
            Msg::S(m) => m.encode(),
        }
    }

    fn decode_as_same(&self, bytes: &[u8]) -> Msg {
        match self {
            Msg::C(_) => Msg::C(ClientMsg::decode(bytes).unwrap()),
            Msg::S(_) => Msg::S(ServerMsg::decode(bytes).unwrap()),
        }
    }
}

/// One representative value for every variant of every agent-channel enum.
fn agent_samples() -> Vec<(String, Msg)> {
    use Msg::{C, S};
    let mut v: Vec<(String, Msg)> = vec![
        ("client_login".into(), C(client_login())),
        (
            "client_login_new_device".into(),
            C(ClientMsg::Login(Login {
                username: "alice".into(),
                password: "hunter2".into(),
                device_id: device(),
                resume_after: None,
                client: "holdfast-agent 0.1.0 (linux)".into(),
                ticket: None,
            })),
        ),
        ("client_login_ticket".into(), C(client_login_ticket())),
        (
            "client_command_send".into(),
            C(command(
                7,
                Action::Send {
                    conversation: 12,
                    body: "Hello!".into(),
                    attachment: None,
                },
            )),
        ),
        (
            "client_command_send_attachment".into(),
            C(command(
                9,
                Action::Send {
                    conversation: 12,
                    // A file alone: the body may be empty then.
                    body: String::new(),
                    attachment: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
                },
            )),
        ),
        (
            "client_command_invite".into(),
            C(command(
                8,
                Action::Invite {
                    visitor: "v-7f3a".into(),
                    body: "Can I help?".into(),
                },
            )),
        ),
        (
            "client_command_accept".into(),
            C(command(9, Action::Accept { conversation: 12 })),
        ),
        (
            "client_command_close".into(),
            C(command(10, Action::Close { conversation: 12 })),
        ),
        (
            "client_command_set_presence_online".into(),
            C(command(
                11,
                Action::SetPresence {
                    presence: Presence::Online,
                },
            )),
        ),
        (
            "client_command_set_presence_away".into(),
            C(command(
                12,
                Action::SetPresence {
                    presence: Presence::Away,
                },
            )),
        ),
        (
            "client_command_set_presence_offline".into(),
            C(command(
                13,
                Action::SetPresence {
                    presence: Presence::Offline,
                },
            )),
        ),
        (
            "client_command_transfer".into(),
            C(command(
                14,
                Action::Transfer {
                    conversation: 12,
                    from: Some(3),
                    to: 4,
                    note: Some("VIP, wants a refund".into()),
                },
            )),
        ),
        (
            // A supervisor assigning a waiting chat: no owner, no note.
            "client_command_transfer_waiting".into(),
            C(command(
                15,
                Action::Transfer {
                    conversation: 13,
                    from: None,
                    to: 4,
                    note: None,
                },
            )),
        ),
        (
            "client_command_block".into(),
            C(command(
                16,
                Action::Block {
                    visitor: "v-7f3a".into(),
                    by_address: true,
                    reason: "abusive language".into(),
                },
            )),
        ),
        (
            "client_command_unblock".into(),
            C(command(
                17,
                Action::Unblock {
                    visitor: "v-7f3a".into(),
                },
            )),
        ),
        (
            "client_command_note".into(),
            C(command(
                18,
                Action::Note {
                    conversation: 12,
                    body: "Trial plan".into(),
                },
            )),
        ),
        (
            "client_command_tag".into(),
            C(command(
                19,
                Action::Tag {
                    conversation: 12,
                    tags: vec!["refund".into(), "billing".into()],
                },
            )),
        ),
        (
            "client_command_save_canned".into(),
            C(command(
                20,
                Action::SaveCanned {
                    id: None,
                    personal: false,
                    shortcut: "hi".into(),
                    body: "Hi {visitor.name}, I am {agent.name}.".into(),
                },
            )),
        ),
        (
            "client_command_delete_canned".into(),
            C(command(21, Action::DeleteCanned { id: 3 })),
        ),
        (
            "client_command_transfer_to_group".into(),
            C(command(
                22,
                Action::TransferToGroup {
                    conversation: 12,
                    from: Some(3),
                    group: "sales".into(),
                    note: None,
                },
            )),
        ),
        (
            "client_command_save_invite_rule".into(),
            C(command(
                23,
                Action::SaveInviteRule {
                    id: None,
                    rule: InviteRuleSpec {
                        name: "pricing".into(),
                        text: "Questions?".into(),
                        url: Some("*/pricing*".into()),
                        page_secs: Some(30),
                        ..InviteRuleSpec::default()
                    },
                },
            )),
        ),
        (
            "client_command_delete_invite_rule".into(),
            C(command(24, Action::DeleteInviteRule { id: 4 })),
        ),
        (
            "client_command_enable_invite_rule".into(),
            C(command(
                25,
                Action::EnableInviteRule {
                    id: 4,
                    enabled: false,
                },
            )),
        ),
        ("client_ack".into(), C(ClientMsg::Ack { up_to: 300 })),
        ("client_heartbeat".into(), C(ClientMsg::Heartbeat)),
        ("client_sign_out".into(), C(ClientMsg::SignOut)),
        (
            "client_typing".into(),
            C(ClientMsg::Typing {
                conversation: 12,
                typing: true,
            }),
        ),
        (
            "client_query_history".into(),
            C(ClientMsg::Query(Query::History {
                request: 5,
                visitor: "v-7f3a".into(),
                before: Some(1_000),
                limit: 50,
            })),
        ),
        (
            "client_query_attachment_link".into(),
            C(ClientMsg::Query(Query::AttachmentLink {
                request: 7,
                id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            })),
        ),
        (
            "client_query_upload_create".into(),
            C(ClientMsg::Query(Query::UploadCreate {
                request: 8,
                conversation: 12,
                name: "invoice.pdf".into(),
                length: 300_000,
                mime_hint: "application/pdf".into(),
            })),
        ),
        (
            "client_query_upload_write".into(),
            C(ClientMsg::Query(Query::UploadWrite {
                request: 9,
                id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                offset: 262_144,
                bytes: b"%PDF".to_vec(),
            })),
        ),
        (
            "client_query_upload_offset".into(),
            C(ClientMsg::Query(Query::UploadOffset {
                request: 10,
                id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            })),
        ),
        (
            "client_query_attachment_bytes".into(),
            C(ClientMsg::Query(Query::AttachmentBytes {
                request: 11,
                id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                thumb: true,
                offset: 0,
                max: 262_144,
            })),
        ),
        (
            "client_query_invite_rules".into(),
            C(ClientMsg::Query(Query::InviteRules { request: 12 })),
        ),
        (
            "server_login_ok_replay".into(),
            S(login_ok(Resume::Replay { after: 41 })),
        ),
        (
            "server_login_ok_snapshot".into(),
            S(login_ok(Resume::Snapshot)),
        ),
        ("server_login_ok_ticket".into(), S(login_ok_with_ticket())),
        (
            "server_ack_done".into(),
            S(ServerMsg::Ack(AckBatch {
                up_to: 7,
                results: vec![CommandResult {
                    seq: 7,
                    id: id(1),
                    outcome: Outcome::Done {
                        conversation: Some(12),
                        message: Some(345),
                        at_ms: T0 + 1_000,
                    },
                }],
            })),
        ),
        (
            "server_ack_rejected".into(),
            S(ServerMsg::Ack(AckBatch {
                up_to: 10,
                results: vec![CommandResult {
                    seq: 10,
                    id: id(1),
                    outcome: Outcome::Rejected {
                        code: ErrorCode::Conflict,
                        message: "conversation already closed".into(),
                    },
                }],
            })),
        ),
        (
            "server_event_message_visitor".into(),
            S(ServerMsg::Event {
                seq: 42,
                event: Event::Message(chat_message(
                    345,
                    visitor_author(),
                    "Hi, can I change my plan?",
                )),
            }),
        ),
        (
            "server_event_message_agent".into(),
            S(ServerMsg::Event {
                seq: 43,
                event: Event::Message(chat_message(346, agent_author(), "Of course.")),
            }),
        ),
        (
            "server_event_message_attachment".into(),
            S(ServerMsg::Event {
                seq: 45,
                event: Event::Message(ChatMessage {
                    attachment: Some(AttachmentInfo {
                        id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                        name: "broken parcel.png".into(),
                        mime: "image/png".into(),
                        size: 48_213,
                        image: true,
                    }),
                    ..chat_message(348, visitor_author(), "")
                }),
            }),
        ),
        (
            "server_event_message_system".into(),
            S(ServerMsg::Event {
                seq: 44,
                event: Event::Message(chat_message(347, Author::System, "Alice joined")),
            }),
        ),
        (
            "server_event_message_internal_note".into(),
            S(ServerMsg::Event {
                seq: 48,
                event: Event::Message(chat_message(
                    349,
                    Author::Note {
                        agent: 3,
                        name: "Alice".into(),
                    },
                    "Trial plan",
                )),
            }),
        ),
        (
            "server_event_message_notice".into(),
            S(ServerMsg::Event {
                seq: 47,
                event: Event::Message(notice_line(348, id(6), &transferred())),
            }),
        ),
        (
            "server_event_message_note".into(),
            S(ServerMsg::Event {
                seq: 48,
                event: Event::Message(notice_line(349, id(7), &transfer_note())),
            }),
        ),
        (
            "server_event_conversation".into(),
            S(ServerMsg::Event {
                seq: 45,
                event: Event::Conversation(conversation(12, ConversationState::Active)),
            }),
        ),
        (
            "server_event_delivered".into(),
            S(ServerMsg::Event {
                seq: 46,
                event: Event::Delivered {
                    conversation: 12,
                    message: 346,
                },
            }),
        ),
        (
            // A piece of a snapshot too big for one frame (a real one
            // holds up to half a MiB): conversations first, then messages.
            "server_snapshot_part".into(),
            S(ServerMsg::SnapshotPart(SnapshotPart {
                conversations: vec![conversation(12, ConversationState::Active)],
                messages: vec![chat_message(345, visitor_author(), "Hi")],
            })),
        ),
        (
            "server_snapshot".into(),
            S(ServerMsg::Snapshot(Snapshot {
                seq: 500,
                recovered: false,
                conversations: vec![
                    conversation(13, ConversationState::Queued),
                    conversation(14, ConversationState::LeftMessage),
                    conversation(11, ConversationState::Closed),
                ],
                messages: vec![chat_message(345, visitor_author(), "Hi")],
            })),
        ),
        (
            "server_live_visitors".into(),
            S(ServerMsg::Live(LiveEvent::Visitors(vec![visitor_info()]))),
        ),
        (
            "server_live_visitor".into(),
            S(ServerMsg::Live(LiveEvent::Visitor(visitor_info()))),
        ),
        (
            // A site without a secret: the id is what the page said, so
            // it is not verified.
            "server_live_visitor_unverified".into(),
            S(ServerMsg::Live(LiveEvent::Visitor(VisitorInfo {
                verified: false,
                ..visitor_info()
            }))),
        ),
        (
            // A visitor who gave no name, with the language its widget
            // said (10.24): what the app labels a chat by.
            "server_live_visitor_lang".into(),
            S(ServerMsg::Live(LiveEvent::Visitor(nameless_visitor()))),
        ),
        (
            // The visitors that changed within one presence interval, or
            // the rest of a long list after its `Visitors` (9.6): here one
            // entry, the visitor of the vector above.
            "server_live_visitor_updates".into(),
            S(ServerMsg::Live(LiveEvent::VisitorUpdates(vec![nameless_visitor()]))),
        ),
        (
            "server_live_visitor_gone".into(),
            S(ServerMsg::Live(LiveEvent::VisitorGone {
                visitor: "v-7f3a".into(),
            })),
        ),
        (
            "server_live_agent_presence".into(),
            S(ServerMsg::Live(LiveEvent::AgentPresence {
                agent: 4,
                name: "Bob".into(),
                presence: Presence::Away,
            })),
        ),
        (
            "server_live_team".into(),
            S(ServerMsg::Live(LiveEvent::Team(vec![
                member(3, "Alice", Role::Agent, Presence::Online, (2, 5), false),
                member(4, "Bob", Role::Agent, Presence::Away, (1, 5), false),
                member(
                    5,
                    "Carol",
                    Role::Supervisor,
                    Presence::Online,
                    (0, 3),
                    false,
                ),
                member(6, "Dan", Role::Admin, Presence::Offline, (0, 5), true),
            ]))),
        ),
        (
            "server_live_team_member".into(),
            S(ServerMsg::Live(LiveEvent::TeamMember(member(
                4,
                "Bob",
                Role::Agent,
                Presence::Online,
                (2, 5),
                false,
            )))),
        ),
        (
            "server_live_ticket".into(),
            S(ServerMsg::Live(LiveEvent::Ticket {
                ticket: vec![0xab; 4],
                expires_ms: 1_700_021_600_000,
            })),
        ),
        (
            "server_live_typing".into(),
            S(ServerMsg::Live(LiveEvent::Typing {
                conversation: 12,
                visitor: "v-7f3a".into(),
                typing: true,
                draft: Some("Where is".into()),
            })),
        ),
        (
            "server_live_site_tags".into(),
            S(ServerMsg::Live(LiveEvent::SiteTags(vec![
                "billing".into(),
                "refund".into(),
            ]))),
        ),
        (
            "server_live_invitation".into(),
            S(ServerMsg::Live(LiveEvent::Invitation(InvitationSignal {
                visitor: "v-7f3a".into(),
                id: 5,
                rule: "pricing".into(),
                text: "Questions about plans?".into(),
                state: InvitationState::Shown,
                at_ms: 1_700_000_000_000,
            }))),
        ),
        (
            "server_live_canned".into(),
            S(ServerMsg::Live(LiveEvent::Canned(vec![CannedReply {
                id: 3,
                personal: false,
                shortcut: "hi".into(),
                body: "Hi {visitor.name}!".into(),
                updated_ms: 1_700_000_000_000,
            }]))),
        ),
        (
            "server_live_groups".into(),
            S(ServerMsg::Live(LiveEvent::Groups(vec![
                GroupInfo {
                    key: "billing".into(),
                    name: "Billing".into(),
                    member: true,
                    open: Some(false),
                },
                GroupInfo {
                    key: "sales".into(),
                    name: "Sales".into(),
                    member: false,
                    open: None,
                },
            ]))),
        ),
        (
            "server_event_conversation_group".into(),
            S(ServerMsg::Event {
                seq: 43,
                event: Event::Conversation(ConversationInfo {
                    group: Some("billing".into()),
                    ..conversation(14, ConversationState::Queued)
                }),
            }),
        ),
        ("server_heartbeat".into(), S(ServerMsg::Heartbeat)),
        (
            "server_error".into(),
            S(ServerMsg::Error(wire_error(
                ErrorCode::Throttled,
                "too many failed logins",
                Some(2_000),
            ))),
        ),
        (
            "server_error_revoked".into(),
            S(ServerMsg::Error(wire_error(
                ErrorCode::Revoked,
                "your password was changed; sign in again",
                None,
            ))),
        ),
        ("server_signed_out".into(), S(ServerMsg::SignedOut)),
        (
            "server_going_away".into(),
            S(ServerMsg::GoingAway {
                reason: "restarting".into(),
            }),
        ),
        (
            "server_query_result_history".into(),
            S(ServerMsg::QueryResult {
                request: 5,
                result: QueryResult::History {
                    visitor: Some(Box::new(visitor_info())),
                    conversations: vec![conversation(12, ConversationState::Active)],
                    messages: vec![
                        chat_message(346, agent_author(), "Of course."),
                        chat_message(345, visitor_author(), "Hi"),
                    ],
                    more: true,
                },
            }),
        ),
        (
            "server_query_result_attachment_link".into(),
            S(ServerMsg::QueryResult {
                request: 7,
                result: QueryResult::AttachmentLink {
                    url: "/v1/files/a1b2c3d4e5f60718293a4b5c6d7e8f90?e=1767225600000&s=00112233445566778899aabbccddeeff".into(),
                    thumb_url: Some("/v1/files/a1b2c3d4e5f60718293a4b5c6d7e8f90/thumb?e=1767225600000&s=ffeeddccbbaa99887766554433221100".into()),
                    expires_ms: 1_767_225_600_000,
                },
            }),
        ),
        (
            "server_query_result_upload".into(),
            S(ServerMsg::QueryResult {
                request: 9,
                result: QueryResult::Upload {
                    id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                    offset: 262_148,
                    length: 300_000,
                },
            }),
        ),
        (
            "server_query_result_upload_done".into(),
            S(ServerMsg::QueryResult {
                request: 9,
                result: QueryResult::UploadDone {
                    offset: 300_000,
                    attachment: AttachmentInfo {
                        id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
                        name: "invoice.pdf".into(),
                        mime: "application/pdf".into(),
                        size: 300_000,
                        image: false,
                    },
                },
            }),
        ),
        (
            "server_query_result_attachment_bytes".into(),
            S(ServerMsg::QueryResult {
                request: 11,
                result: QueryResult::AttachmentBytes {
                    total: 4,
                    offset: 0,
                    bytes: b"\x89PNG".to_vec(),
                    mime: "image/png".into(),
                },
            }),
        ),
        (
            "server_query_result_invite_rules".into(),
            S(ServerMsg::QueryResult {
                request: 12,
                result: QueryResult::InviteRules(vec![invite_rule()]),
            }),
        ),
        (
            "server_live_invite_rules".into(),
            S(ServerMsg::Live(LiveEvent::InviteRules(vec![invite_rule()]))),
        ),
        (
            "server_query_result_refused".into(),
            S(ServerMsg::QueryResult {
                request: 6,
                // Another site's visitor gets the answer an unknown one gets.
                result: QueryResult::Refused(wire_error(
                    ErrorCode::NotFound,
                    "no such visitor on your site",
                    None,
                )),
            }),
        ),
    ];
    for code in ErrorCode::ALL {
        let name = serde_json::to_value(code).unwrap();
        v.push((
            format!("error_code_{}", name.as_str().unwrap()),
            S(ServerMsg::Error(wire_error(code, "", None))),
        ));
    }
    v
}

#[derive(Clone, Debug, PartialEq)]
enum Json {
    In(VisitorIn),
    Out(VisitorOut),
    LpReq(LongPollRequest),
    LpResp(LongPollResponse),
}

impl Json {
    fn to_text(&self) -> String {
        match self {
            Json::In(m) => serde_json::to_string(m),
            Json::Out(m) => serde_json::to_string(m),
            Json::LpReq(m) => serde_json::to_string(m),
            Json::LpResp(m) => serde_json::to_string(m),
        }
        .unwrap()
    }

    /// Parse `text` the way a receiver does.
    fn parse_as_same(&self, text: &str) -> Json {
        let lim = Limits::default();
        match self {
            Json::In(_) => Json::In(parse_in(text.as_bytes(), &lim).unwrap()),
            Json::Out(_) => Json::Out(serde_json::from_str(text).unwrap()),
            Json::LpReq(_) => Json::LpReq(parse_long_poll(text.as_bytes(), &lim).unwrap()),
            Json::LpResp(_) => Json::LpResp(serde_json::from_str(text).unwrap()),
        }
    }
}

fn visitor_message() -> VisitorMessage {
    VisitorMessage {
        conversation: 12,
        message: 346,
        id: id(3),
        from: Sender::Agent,
        name: Some("Alice".into()),
        body: "Of course.".into(),
        at_ms: T0 + 2_000,
        notice: None,
        attachment: None,
    }
}

/// The transfer line as the visitor sees it: English text, and the notice
/// to render it in the visitor's language instead.
fn visitor_notice_message() -> VisitorMessage {
    let notice = transferred();
    VisitorMessage {
        conversation: 12,
        message: 348,
        id: id(6),
        from: Sender::System,
        name: None,
        body: notice.english_for_visitor(),
        at_ms: T0 + 3_000,
        notice: Some(notice),
        attachment: None,
    }
}

/// The visitor's image message of 19.10, as the visitor channel shows it.
fn visitor_file_message() -> VisitorMessage {
    VisitorMessage {
        conversation: 12,
        message: 348,
        id: id(9),
        from: Sender::Visitor,
        name: None,
        body: String::new(),
        at_ms: T0 + 1_000,
        notice: None,
        attachment: Some(Box::new(AttachmentInfo {
            id: "a1b2c3d4e5f60718293a4b5c6d7e8f90".into(),
            name: "broken parcel.png".into(),
            mime: "image/png".into(),
            size: 48_213,
            image: true,
        })),
    }
}

fn in_send() -> VisitorIn {
    VisitorIn::Send {
        id: id(2),
        body: "Hi, can I change my plan?".into(),
        attachment: None,
    }
}

fn out_ack() -> VisitorOut {
    VisitorOut::Ack {
        id: id(2),
        conversation: 12,
        message: 345,
        at_ms: T0 + 1_000,
    }
}

fn out_event_message() -> VisitorOut {
    VisitorOut::Event {
        seq: 8,
        event: VisitorEvent::Message(visitor_message()),
    }
}

/// A made-up `hash` of `identify` and of `hello.identity`.
const IDENTIFY_HASH: &str = "5f1e8c7d2a1b0c9d8e7f6a5b4c3d2e1f00112233445566778899aabbccddeeff";

/// One representative value for every visitor-channel message.
fn visitor_samples() -> Vec<(&'static str, Json)> {
    let page = PageInfo {
        url: "https://shop.example/pricing".into(),
        title: "Pricing".into(),
        referrer: Some("https://shop.example/".into()),
    };
    let mut attrs = BTreeMap::new();
    attrs.insert("plan".to_string(), serde_json::json!("pro"));
    attrs.insert("seats".to_string(), serde_json::json!(12));
    attrs.insert("trial".to_string(), serde_json::json!(false));
    attrs.insert("company".to_string(), serde_json::Value::Null);
    vec![
        (
            "in_hello",
            Json::In(VisitorIn::Hello {
                site: "pk_demo".into(),
                token: Some("tok.v-7f3a.sig".into()),
                after: Some(7),
                page: Some(page.clone()),
                user_agent: Some("Mozilla/5.0".into()),
                lang: Some("en-GB".into()),
                v: Some(1),
                identity: None,
                group: None,
            }),
        ),
        (
            "in_hello_new_visitor",
            Json::In(VisitorIn::Hello {
                site: "pk_demo".into(),
                token: None,
                after: None,
                page: None,
                user_agent: None,
                lang: None,
                v: None,
                identity: None,
                group: None,
            }),
        ),
        (
            // A page that called `Holdfast.identify` before the widget
            // connected vouches for the identity in its hello.
            "in_hello_identity",
            Json::In(VisitorIn::Hello {
                site: "pk_demo".into(),
                token: Some("tok.v-7f3a.sig".into()),
                after: Some(7),
                page: None,
                user_agent: None,
                lang: None,
                v: Some(1),
                identity: Some(IdentityProof {
                    id: "user-829".into(),
                    hash: Some(IDENTIFY_HASH.into()),
                }),
                group: None,
            }),
        ),
        (
            // A page whose widget targets a site group (10.23).
            "in_hello_group",
            Json::In(VisitorIn::Hello {
                site: "pk_demo".into(),
                token: None,
                after: None,
                page: None,
                user_agent: None,
                lang: None,
                v: Some(1),
                identity: None,
                group: Some("billing".into()),
            }),
        ),
        ("in_send", Json::In(in_send())),
        (
            "in_send_attachment",
            Json::In(VisitorIn::Send {
                id: id(9),
                body: String::new(),
                attachment: Some("a1b2c3d4e5f60718293a4b5c6d7e8f90".into()),
            }),
        ),
        (
            "out_event_message_attachment",
            Json::Out(VisitorOut::Event {
                seq: 11,
                event: VisitorEvent::Message(visitor_file_message()),
            }),
        ),
        (
            "in_leave_message",
            Json::In(VisitorIn::LeaveMessage {
                id: id(4),
                body: "Please call me back".into(),
                email: Some("dana@example.com".into()),
            }),
        ),
        ("in_page", Json::In(VisitorIn::Page(page))),
        (
            "in_identify",
            Json::In(VisitorIn::Identify {
                id: "user-829".into(),
                name: Some("Dana".into()),
                email: Some("dana@example.com".into()),
                hash: Some(IDENTIFY_HASH.into()),
                attrs,
            }),
        ),
        ("in_ack", Json::In(VisitorIn::Ack { seq: 8 })),
        ("in_ping", Json::In(VisitorIn::Ping)),
        ("in_end_chat", Json::In(VisitorIn::EndChat { id: id(8) })),
        (
            "in_typing",
            Json::In(VisitorIn::Typing {
                typing: true,
                draft: Some("Where is my".into()),
            }),
        ),
        (
            "in_typing_stop",
            Json::In(VisitorIn::Typing {
                typing: false,
                draft: None,
            }),
        ),
        (
            "in_invitation",
            Json::In(VisitorIn::Invitation {
                id: 5,
                event: InvitationEvent::Shown,
            }),
        ),
        (
            "in_invitation_dismissed",
            Json::In(VisitorIn::Invitation {
                id: 5,
                event: InvitationEvent::Dismissed,
            }),
        ),
        (
            "out_invite",
            Json::Out(VisitorOut::Invite {
                id: 5,
                text: "Questions about plans? We are here.".into(),
            }),
        ),
        (
            "out_typing",
            Json::Out(VisitorOut::Typing {
                typing: true,
                name: Some("Alice".into()),
            }),
        ),
        (
            "out_welcome",
            Json::Out(VisitorOut::Welcome {
                visitor: "v-7f3a".into(),
                token: "tok.v-7f3a.sig".into(),
                resumed: true,
                agents_online: true,
                heartbeat_ms: 3_000,
                attach: None,
                sneak_peek: None,
                group: None,
                groups: None,
            }),
        ),
        (
            // A site that offers its groups to choose from (10.23).
            "out_welcome_groups",
            Json::Out(VisitorOut::Welcome {
                visitor: "v-7f3a".into(),
                token: "tok.v-7f3a.sig".into(),
                resumed: false,
                agents_online: true,
                heartbeat_ms: 3_000,
                attach: None,
                sneak_peek: Some(true),
                group: None,
                groups: Some(vec![
                    holdfast_protocol::visitor::GroupChoice {
                        key: "billing".into(),
                        name: "Billing & refunds".into(),
                        online: false,
                    },
                    holdfast_protocol::visitor::GroupChoice {
                        key: "sales".into(),
                        name: "Sales".into(),
                        online: true,
                    },
                ]),
            }),
        ),
        (
            // The welcome of a visitor whose hello named a group the site
            // has: `agents_online` is about that group's agents.
            "out_welcome_group",
            Json::Out(VisitorOut::Welcome {
                visitor: "v-7f3a".into(),
                token: "tok.v-7f3a.sig".into(),
                resumed: false,
                agents_online: false,
                heartbeat_ms: 3_000,
                attach: Some(holdfast_protocol::visitor::AttachRules {
                    max_bytes: 5 * 1024 * 1024,
                    types: vec!["image/png".into()],
                }),
                sneak_peek: Some(true),
                group: Some("billing".into()),
                groups: Some(vec![holdfast_protocol::visitor::GroupChoice {
                    key: "billing".into(),
                    name: "Billing".into(),
                    online: false,
                }]),
            }),
        ),
        (
            "out_welcome_attach",
            Json::Out(VisitorOut::Welcome {
                visitor: "v-7f3a".into(),
                token: "tok.v-7f3a.sig".into(),
                resumed: false,
                agents_online: true,
                heartbeat_ms: 3_000,
                attach: Some(holdfast_protocol::visitor::AttachRules {
                    max_bytes: 5 * 1024 * 1024,
                    types: vec!["image/png".into(), "application/pdf".into()],
                }),
                sneak_peek: Some(true),
                group: None,
                groups: None,
            }),
        ),
        ("out_event_message", Json::Out(out_event_message())),
        (
            "out_event_message_notice",
            Json::Out(VisitorOut::Event {
                seq: 10,
                event: VisitorEvent::Message(visitor_notice_message()),
            }),
        ),
        (
            "out_event_conversation",
            Json::Out(VisitorOut::Event {
                seq: 9,
                event: VisitorEvent::Conversation(ConversationView {
                    id: 12,
                    state: VisitorConvState::Active,
                    agent_name: Some("Alice".into()),
                }),
            }),
        ),
        (
            "out_snapshot",
            Json::Out(VisitorOut::Snapshot {
                seq: 9,
                recovered: false,
                conversation: Some(ConversationView {
                    id: 12,
                    state: VisitorConvState::Queued,
                    agent_name: None,
                }),
                messages: vec![
                    VisitorMessage {
                        conversation: 12,
                        message: 345,
                        id: id(2),
                        from: Sender::Visitor,
                        name: None,
                        body: "Hi".into(),
                        at_ms: T0 + 1_000,
                        notice: None,
                        attachment: None,
                    },
                    VisitorMessage {
                        conversation: 12,
                        message: 347,
                        id: id(5),
                        from: Sender::System,
                        name: None,
                        body: "Alice joined".into(),
                        at_ms: T0 + 1_500,
                        notice: None,
                        attachment: None,
                    },
                ],
            }),
        ),
        ("out_ack", Json::Out(out_ack())),
        ("out_pong", Json::Out(VisitorOut::Pong)),
        (
            "out_agents",
            Json::Out(VisitorOut::Agents {
                online: false,
                groups: None,
            }),
        ),
        (
            "out_agents_groups",
            Json::Out(VisitorOut::Agents {
                online: true,
                groups: Some(vec![
                    holdfast_protocol::visitor::GroupChoice {
                        key: "billing".into(),
                        name: "Billing & refunds".into(),
                        online: false,
                    },
                    holdfast_protocol::visitor::GroupChoice {
                        key: "sales".into(),
                        name: "Sales".into(),
                        online: true,
                    },
                ]),
            }),
        ),
        (
            "out_queue",
            Json::Out(VisitorOut::Queue {
                position: 3,
                wait_ms: Some(120_000),
            }),
        ),
        (
            "out_queue_no_estimate",
            Json::Out(VisitorOut::Queue {
                position: 1,
                wait_ms: None,
            }),
        ),
        (
            // The answer to `in_end_chat` when there is nothing to end.
            "out_error",
            Json::Out(VisitorOut::Error {
                code: ErrorCode::NotFound,
                message: "there is no open chat to end".into(),
                id: Some(id(8)),
                retry_after_ms: None,
            }),
        ),
        (
            "out_error_rate_limited",
            Json::Out(VisitorOut::Error {
                code: ErrorCode::RateLimited,
                message: "sending too fast; send this again shortly, before anything after it"
                    .into(),
                id: Some(id(2)),
                retry_after_ms: Some(200),
            }),
        ),
        (
            // The next send, refused because the one above must go first.
            "out_error_held_back",
            Json::Out(VisitorOut::Error {
                code: ErrorCode::RateLimited,
                message: format!(
                    "sending too fast; {} was refused first: send it again, then this one",
                    id(2)
                ),
                id: Some(id(9)),
                retry_after_ms: Some(200),
            }),
        ),
        (
            "out_going_away",
            Json::Out(VisitorOut::GoingAway {
                reason: "restarting".into(),
            }),
        ),
        (
            "long_poll_request",
            Json::LpReq(LongPollRequest {
                token: Some("tok.v-7f3a.sig".into()),
                msgs: vec![in_send(), VisitorIn::Ack { seq: 8 }],
            }),
        ),
        (
            "long_poll_response",
            Json::LpResp(LongPollResponse {
                msgs: vec![out_ack(), out_event_message()],
            }),
        ),
    ]
}

// ================================================================ fixtures

fn blessing() -> bool {
    std::env::var("HOLDFAST_BLESS").is_ok_and(|v| v == "1")
}

/// Compares (or, when blessing, rewrites) one directory of fixture files.
struct Fixtures {
    dir: PathBuf,
    ext: &'static str,
    bless: bool,
    names: BTreeSet<String>,
    problems: Vec<String>,
    changed: Vec<String>,
}

impl Fixtures {
    fn new(sub: &str, ext: &'static str) -> Self {
        Self {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(sub),
            ext,
            bless: blessing(),
            names: BTreeSet::new(),
            problems: Vec::new(),
            changed: Vec::new(),
        }
    }

    /// `actual` is the fixture's content without the trailing newline.
    fn check(&mut self, name: &str, actual: &str) {
        assert!(
            self.names.insert(name.to_string()),
            "duplicate fixture {name}"
        );
        let path = self.dir.join(format!("{name}.{}", self.ext));
        let shown = path.display();
        match fs::read_to_string(&path) {
            Ok(text) if text.trim_end() == actual => {}
            Ok(text) if !self.bless => self.problems.push(format!(
                "{shown} differs\n  fixture: {}\n  now:     {actual}",
                text.trim_end()
            )),
            Err(_) if !self.bless => self.problems.push(format!("{shown} is missing")),
            found => {
                fs::create_dir_all(&self.dir).unwrap();
                fs::write(&path, format!("{actual}\n")).unwrap();
                let what = if found.is_ok() { "changed" } else { "new" };
                self.changed.push(format!("{shown} ({what})"));
            }
        }
    }

    fn finish(mut self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries {
                let path = entry.unwrap().path();
                let ext_ok = path.extension().is_some_and(|e| e == self.ext);
                let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                if ext_ok && !self.names.contains(&stem) {
                    if self.bless {
                        fs::remove_file(&path).unwrap();
                        self.changed.push(format!("{} (removed)", path.display()));
                    } else {
                        self.problems.push(format!(
                            "{} has no sample value in golden.rs",
                            path.display()
                        ));
                    }
                }
            }
        }
        if self.bless {
            if self.changed.is_empty() {
                eprintln!("HOLDFAST_BLESS: {} unchanged", self.dir.display());
            }
            for c in &self.changed {
                eprintln!("HOLDFAST_BLESS: {c}");
            }
        }
        assert!(
            self.problems.is_empty(),
            "{} fixture problem(s):\n{}\n\nIf this wire change is deliberate, re-run with \
             HOLDFAST_BLESS=1 and update PROTOCOL.md.",
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

// ================================================================ enum introspection

/// All variant names of a serde enum, in declaration (= wire index) order,
/// read from serde's "unknown variant" error. `probe` is a JSON value naming
/// a variant that does not exist.
fn variants<T: DeserializeOwned>(probe: &str) -> Vec<String> {
    let err = match serde_json::from_str::<T>(probe) {
        Ok(_) => panic!("probe {probe} unexpectedly parsed"),
        Err(e) => e.to_string(),
    };
    let (_, tail) = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("unexpected serde error: {err}"));
    let names: Vec<String> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect();
    assert!(!names.is_empty(), "no variants in: {err}");
    names
}

const EXTERNAL: &str = r#""zz_no_such_variant""#;

fn agent_enums() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("ClientMsg", variants::<ClientMsg>(EXTERNAL)),
        ("ServerMsg", variants::<ServerMsg>(EXTERNAL)),
        ("Action", variants::<Action>(EXTERNAL)),
        ("Presence", variants::<Presence>(EXTERNAL)),
        ("Query", variants::<Query>(EXTERNAL)),
        ("Resume", variants::<Resume>(EXTERNAL)),
        ("Outcome", variants::<Outcome>(EXTERNAL)),
        ("Event", variants::<Event>(EXTERNAL)),
        ("Author", variants::<Author>(EXTERNAL)),
        ("ConversationState", variants::<ConversationState>(EXTERNAL)),
        ("LiveEvent", variants::<LiveEvent>(EXTERNAL)),
        ("Role", variants::<Role>(EXTERNAL)),
        ("QueryResult", variants::<QueryResult>(EXTERNAL)),
        ("ErrorCode", variants::<ErrorCode>(EXTERNAL)),
    ]
}

fn visitor_enums() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "VisitorIn",
            variants::<VisitorIn>(r#"{"t":"zz_no_such_variant"}"#),
        ),
        (
            "VisitorOut",
            variants::<VisitorOut>(r#"{"t":"zz_no_such_variant"}"#),
        ),
        (
            "VisitorEvent",
            variants::<VisitorEvent>(r#"{"kind":"zz_no_such_variant"}"#),
        ),
        ("VisitorConvState", variants::<VisitorConvState>(EXTERNAL)),
        ("Sender", variants::<Sender>(EXTERNAL)),
    ]
}

/// The wire index of a bare enum value: its leading varint.
fn index_of<T: Serialize>(v: &T) -> usize {
    let b = bincode::serde::encode_to_vec(v, bincode::config::standard()).unwrap();
    assert!(b[0] < 251, "variant index needs a multi-byte varint");
    usize::from(b[0])
}

/// For every enum, the wire indices the samples use, each with the JSON of
/// one such value (to read its field names from).
type Seen = BTreeMap<&'static str, BTreeMap<usize, String>>;

fn note<T: Serialize>(seen: &mut Seen, name: &'static str, v: &T) {
    seen.entry(name)
        .or_default()
        .insert(index_of(v), serde_json::to_string(v).unwrap());
}

/// The keys of a JSON object, in order.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut out = Vec::new();
                while let Some((k, serde::de::IgnoredAny)) =
                    m.next_entry::<String, serde::de::IgnoredAny>()?
                {
                    out.push(k);
                }
                Ok(Keys(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn keys_of(json: &str) -> Vec<String> {
    serde_json::from_str::<Keys>(json).unwrap().0
}

/// `{"Variant":{...}}` → the keys of the inner object.
fn variant_keys(json: &str) -> Vec<String> {
    let m: BTreeMap<String, Keys> = serde_json::from_str(json).unwrap();
    m.into_values().next().unwrap().0
}

/// The field names of a doc cell like `a: u64, b: Vec<(String, String)>`.
fn field_names(cell: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in cell.chars() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| {
            p.split(':')
                .next()
                .unwrap()
                .trim()
                .trim_matches('`')
                .to_string()
        })
        .collect()
}

fn note_conversation(seen: &mut Seen, c: &ConversationInfo) {
    note(seen, "ConversationState", &c.state);
}

fn note_message(seen: &mut Seen, m: &ChatMessage) {
    note(seen, "Author", &m.author);
}

/// Record which variant of which enum every sample (and its contents) uses.
fn walk(seen: &mut Seen, msg: &Msg) {
    match msg {
        Msg::C(m) => {
            note(seen, "ClientMsg", m);
            match m {
                ClientMsg::Command(c) => {
                    note(seen, "Action", &c.action);
                    if let Action::SetPresence { presence } = &c.action {
                        note(seen, "Presence", presence);
                    }
                }
                ClientMsg::Query(q) => note(seen, "Query", q),
                _ => {}
            }
        }
        Msg::S(m) => {
            note(seen, "ServerMsg", m);
            match m {
                ServerMsg::LoginOk(l) => note(seen, "Resume", &l.resume),
                ServerMsg::Ack(b) => {
                    for r in &b.results {
                        note(seen, "Outcome", &r.outcome);
                        if let Outcome::Rejected { code, .. } = &r.outcome {
                            note(seen, "ErrorCode", code);
                        }
                    }
                }
                ServerMsg::Event { event, .. } => {
                    note(seen, "Event", event);
                    match event {
                        Event::Message(cm) => note_message(seen, cm),
                        Event::Conversation(c) => note_conversation(seen, c),
                        Event::Delivered { .. } => {}
                    }
                }
                ServerMsg::Snapshot(s) => {
                    s.conversations
                        .iter()
                        .for_each(|c| note_conversation(seen, c));
                    s.messages.iter().for_each(|cm| note_message(seen, cm));
                }
                ServerMsg::SnapshotPart(p) => {
                    p.conversations
                        .iter()
                        .for_each(|c| note_conversation(seen, c));
                    p.messages.iter().for_each(|cm| note_message(seen, cm));
                }
                ServerMsg::Live(l) => {
                    note(seen, "LiveEvent", l);
                    let members = match l {
                        LiveEvent::AgentPresence { presence, .. } => {
                            note(seen, "Presence", presence);
                            &[][..]
                        }
                        LiveEvent::Team(team) => &team[..],
                        LiveEvent::TeamMember(m) => std::slice::from_ref(m),
                        _ => &[][..],
                    };
                    for m in members {
                        note(seen, "Role", &m.role);
                        note(seen, "Presence", &m.presence);
                    }
                }
                ServerMsg::Error(e) => note(seen, "ErrorCode", &e.code),
                ServerMsg::QueryResult { result, .. } => {
                    note(seen, "QueryResult", result);
                    match result {
                        QueryResult::History {
                            conversations,
                            messages,
                            ..
                        } => {
                            conversations
                                .iter()
                                .for_each(|c| note_conversation(seen, c));
                            messages.iter().for_each(|cm| note_message(seen, cm));
                        }
                        QueryResult::Refused(e) => note(seen, "ErrorCode", &e.code),
                        QueryResult::AttachmentLink { .. }
                        | QueryResult::Upload { .. }
                        | QueryResult::UploadDone { .. }
                        | QueryResult::AttachmentBytes { .. }
                        | QueryResult::InviteRules(_) => {}
                    }
                }
                _ => {}
            }
        }
    }
}

// ================================================================ tests: handshake

#[test]
fn handshake_and_key_schedule_vector() {
    // Public keys, straight from X25519.
    let c_eph = StaticSecret::from(CLIENT_EPH_SECRET);
    let s_eph = StaticSecret::from(SERVER_EPH_SECRET);
    let s_static = StaticSecret::from(SERVER_STATIC_SECRET);
    let c_eph_pub = PublicKey::from(&c_eph);
    let s_eph_pub = PublicKey::from(&s_eph);
    let s_static_pub = PublicKey::from(&s_static);
    assert_eq!(h(c_eph_pub.as_bytes()), CLIENT_EPH_PUBLIC);
    assert_eq!(h(s_eph_pub.as_bytes()), SERVER_EPH_PUBLIC);
    assert_eq!(h(s_static_pub.as_bytes()), SERVER_STATIC_PUBLIC);

    // The hellos, as the crate builds them and as the spec lays them out.
    let client = ClientHandshake::new(CLIENT_EPH_SECRET);
    let hello = client.hello().to_vec();
    assert_eq!(h(&hello), CLIENT_HELLO);
    assert_eq!(hello.len(), CLIENT_HELLO_LEN);
    assert_eq!(
        hello,
        [&b"HFST"[..], &[0x01, 0x00, 0x04], c_eph_pub.as_bytes()].concat()
    );
    let identity = ServerIdentity::from_secret_bytes(SERVER_STATIC_SECRET);
    assert_eq!(h(identity.public_bytes()), SERVER_STATIC_PUBLIC);
    let accepted = server_accept(&identity, SERVER_EPH_SECRET, &hello).unwrap();
    let reply = accepted.reply.clone();
    assert_eq!(h(&reply), SERVER_HELLO);
    assert_eq!(reply.len(), SERVER_HELLO_LEN);
    assert_eq!(
        reply,
        [
            &b"HFST"[..],
            &[0x02, 0x00, 0x04],
            s_eph_pub.as_bytes(),
            s_static_pub.as_bytes()
        ]
        .concat()
    );

    // Both DH outputs, computed from either side.
    let dh_eph = c_eph.diffie_hellman(&s_eph_pub);
    let dh_static = c_eph.diffie_hellman(&s_static_pub);
    assert_eq!(h(dh_eph.as_bytes()), DH_EPH);
    assert_eq!(h(dh_static.as_bytes()), DH_STATIC);
    assert_eq!(h(s_eph.diffie_hellman(&c_eph_pub).as_bytes()), DH_EPH);
    assert_eq!(h(s_static.diffie_hellman(&c_eph_pub).as_bytes()), DH_STATIC);

    // Salt and keys: the crate's derive_keys and HKDF written out by hand.
    let salt = Sha256::digest([&hello[..], &reply[..]].concat());
    assert_eq!(h(salt), SALT);
    let keys = derive_keys(&hello, &reply, dh_eph.as_bytes(), dh_static.as_bytes());
    let ikm = [&dh_eph.as_bytes()[..], &dh_static.as_bytes()[..]].concat();
    for (label, got, want) in [
        (LABEL_C2S_ENC, keys.c2s.enc, KEY_C2S_ENC),
        (LABEL_C2S_MAC, keys.c2s.mac, KEY_C2S_MAC),
        (LABEL_S2C_ENC, keys.s2c.enc, KEY_S2C_ENC),
        (LABEL_S2C_MAC, keys.s2c.mac, KEY_S2C_MAC),
    ] {
        assert_eq!(label.len(), 18);
        assert!(label.starts_with(b"holdfast/1 "));
        assert_eq!(h(got), want, "{}", String::from_utf8_lossy(label));
        assert_eq!(h(reference_hkdf(&salt, &ikm, label)), want);
    }

    // The fingerprint the user compares.
    assert_eq!(identity.fingerprint().to_string(), FINGERPRINT);
    assert_eq!(
        h(Sha256::digest(s_static_pub.as_bytes())),
        FINGERPRINT.replace(':', "")
    );

    // The sessions use exactly those keys: the first sealed frame each way.
    let mut cs = client.handle_reply(&reply).unwrap();
    let mut ss = accepted.session;
    assert_eq!(h(cs.server_static), SERVER_STATIC_PUBLIC);
    let login = client_login().encode();
    let frame = cs.sealer.seal(LOGIN_IV, &login).unwrap();
    assert_eq!(h(&frame), LOGIN_FRAME);
    assert_eq!(
        frame,
        reference_seal(&keys.c2s.enc, &keys.c2s.mac, 0x01, 0, LOGIN_IV, &login)
    );
    assert_eq!(
        reference_open(&keys.c2s.enc, &keys.c2s.mac, 0x01, 0, &frame),
        login
    );
    assert_eq!(
        ClientMsg::decode(&ss.opener.open(&frame).unwrap()).unwrap(),
        client_login()
    );
    let ok = login_ok(Resume::Replay { after: 41 }).encode();
    let frame = ss.sealer.seal(LOGIN_OK_IV, &ok).unwrap();
    assert_eq!(h(&frame), LOGIN_OK_FRAME);
    assert_eq!(
        reference_open(&keys.s2c.enc, &keys.s2c.mac, 0x02, 0, &frame),
        ok
    );
    assert_eq!(cs.opener.open(&frame).unwrap(), ok);
}

#[test]
fn version_refusal_vector() {
    let identity = ServerIdentity::from_secret_bytes(SERVER_STATIC_SECRET);
    // An agent app of version 3 meets a version 4 server: it hears both
    // numbers instead of failing on the first message it cannot decode.
    let client = ClientHandshake::with_version(CLIENT_EPH_SECRET, 3);
    assert_eq!(h(client.hello()), CLIENT_HELLO_V3);
    let refusal = server_accept(&identity, SERVER_EPH_SECRET, client.hello()).unwrap_err();
    assert_eq!(
        refusal.error,
        HandshakeError::VersionMismatch { ours: 4, theirs: 3 }
    );
    let reply = refusal.reply.unwrap();
    assert_eq!(h(&reply), VERSION_REFUSAL);
    assert_eq!(reply.len(), VERSION_REFUSAL_LEN);
    assert_eq!(
        client.handle_reply(&reply).unwrap_err(),
        HandshakeError::VersionMismatch { ours: 3, theirs: 4 }
    );
    // The version is read before the length is checked, so a hello of
    // another version and another length (a future one) still hears which
    // versions differ.
    let mut long = hex::decode(CLIENT_HELLO_V3).unwrap();
    long.extend_from_slice(&[0; 32]);
    let refusal = server_accept(&identity, SERVER_EPH_SECRET, &long).unwrap_err();
    assert_eq!(h(refusal.reply.unwrap()), VERSION_REFUSAL);
}

#[test]
fn low_order_keys_are_refused() {
    let identity = ServerIdentity::from_secret_bytes(SERVER_STATIC_SECRET);
    // Client ephemeral of all zeros (a low-order point): no reply, just close.
    let hello = encode_client_hello(PROTOCOL_VERSION, &[0; 32]);
    let refusal = server_accept(&identity, SERVER_EPH_SECRET, &hello).unwrap_err();
    assert_eq!(refusal.error, HandshakeError::WeakKey);
    assert!(refusal.reply.is_none());
    // A ServerHello whose static key is low order.
    let mut reply = hex::decode(SERVER_HELLO).unwrap();
    reply[39..].fill(0);
    let client = ClientHandshake::new(CLIENT_EPH_SECRET);
    assert_eq!(
        client.handle_reply(&reply).unwrap_err(),
        HandshakeError::WeakKey
    );
    // Anything else that is not exactly a ServerHello is refused.
    let mut reply = hex::decode(SERVER_HELLO).unwrap();
    reply.push(0);
    let client = ClientHandshake::new(CLIENT_EPH_SECRET);
    assert!(matches!(
        client.handle_reply(&reply),
        Err(HandshakeError::BadLength { got: 72, .. })
    ));
}

#[test]
fn fingerprint_pinning() {
    let presented = hex::decode(SERVER_STATIC_PUBLIC).unwrap();
    let presented: [u8; 32] = presented.try_into().unwrap();
    let fp: Fingerprint = FINGERPRINT.parse().unwrap();
    assert_eq!(FINGERPRINT.len(), 79);
    assert_eq!(
        FINGERPRINT
            .replace(':', "")
            .to_uppercase()
            .parse::<Fingerprint>(),
        Ok(fp)
    );
    assert_eq!(check_pin(None, &presented), PinCheck::FirstUse(fp));
    assert_eq!(check_pin(Some(&fp), &presented), PinCheck::Match);
    let other = Fingerprint::of_public_key(&[9; 32]);
    assert_eq!(
        check_pin(Some(&other), &presented),
        PinCheck::Mismatch {
            pinned: other,
            presented: fp
        }
    );
}

// ================================================================ tests: sealed frames

/// Direction, counter, IV, plaintext, expected frame.
type SealVector = (Direction, u64, [u8; 16], &'static [u8], &'static str);

fn seal_vectors() -> [SealVector; 6] {
    use Direction::{ClientToServer as C2S, ServerToClient as S2C};
    [
        (C2S, 0, SEAL_IV_0, SEAL_PT_0, SEAL_C2S_0),
        (C2S, 1, SEAL_IV_1, SEAL_PT_1, SEAL_C2S_1),
        (C2S, 2, SEAL_IV_2, SEAL_PT_2, SEAL_C2S_2),
        (S2C, 0, SEAL_IV_0, SEAL_PT_0, SEAL_S2C_0),
        (S2C, 1, SEAL_IV_1, SEAL_PT_1, SEAL_S2C_1),
        (S2C, 2, SEAL_IV_2, SEAL_PT_2, SEAL_S2C_2),
    ]
}

#[test]
fn sealed_frame_vectors() {
    let keys = DirectionKeys {
        enc: SEAL_ENC,
        mac: SEAL_MAC,
    };
    for dir in [Direction::ClientToServer, Direction::ServerToClient] {
        let mut sealer = Sealer::new(keys.clone(), dir);
        let mut opener = Opener::new(keys.clone(), dir);
        for (d, counter, iv, pt, want) in seal_vectors() {
            if d != dir {
                continue;
            }
            assert_eq!(sealer.counter(), counter);
            let frame = sealer.seal(iv, pt).unwrap();
            assert_eq!(h(&frame), want, "{dir:?} counter {counter}");
            assert_eq!(frame.len(), sealed_len(pt.len()));
            assert_eq!(&frame[..IV_LEN], &iv);
            // The independent check: standard HMAC over
            // direction ‖ counter ‖ IV ‖ ciphertext, and plain AES-256-CBC.
            let pt_again = reference_open(&SEAL_ENC, &SEAL_MAC, dir.wire_byte(), counter, &frame);
            assert_eq!(pt_again, pt);
            assert_eq!(
                reference_seal(&SEAL_ENC, &SEAL_MAC, dir.wire_byte(), counter, iv, pt),
                frame
            );
            assert_eq!(opener.open(&frame).unwrap(), pt);
        }
    }
    assert_eq!(Direction::ClientToServer.wire_byte(), 0x01);
    assert_eq!(Direction::ServerToClient.wire_byte(), 0x02);
    assert_eq!(
        [SEAL_PT_0.len(), SEAL_PT_1.len(), SEAL_PT_2.len()],
        [0, 5, 16]
    );
}

#[test]
fn sealed_frames_are_bound_to_counter_and_direction() {
    let keys = DirectionKeys {
        enc: SEAL_ENC,
        mac: SEAL_MAC,
    };
    // Out of order: counter 1 presented first.
    let mut opener = Opener::new(keys.clone(), Direction::ClientToServer);
    let f1 = hex::decode(SEAL_C2S_1).unwrap();
    assert_eq!(opener.open(&f1), Err(OpenError::BadTag));
    // After a failure the opener refuses everything, even a good frame.
    let f0 = hex::decode(SEAL_C2S_0).unwrap();
    assert_eq!(opener.open(&f0), Err(OpenError::Poisoned));
    // Reflected: a client-to-server frame fed to the client's opener.
    let mut opener = Opener::new(keys.clone(), Direction::ServerToClient);
    assert_eq!(opener.open(&f0), Err(OpenError::BadTag));
    // Tampered ciphertext is caught by the tag, before decryption.
    let mut opener = Opener::new(keys.clone(), Direction::ClientToServer);
    let mut bad = f0.clone();
    bad[IV_LEN] ^= 1;
    assert_eq!(opener.open(&bad), Err(OpenError::BadTag));
    // Wrong shapes.
    let mut opener = Opener::new(keys, Direction::ClientToServer);
    assert_eq!(
        opener.open(&f0[..MIN_SEALED_LEN - 1]),
        Err(OpenError::Malformed(63))
    );
}

#[test]
fn large_counter_reference_vector() {
    // The crate cannot be fast-forwarded to 2^32, so this vector is checked
    // against the reference implementation that matched the crate above.
    let frame = reference_seal(
        &SEAL_ENC,
        &SEAL_MAC,
        0x01,
        BIG_COUNTER,
        SEAL_IV_BIG,
        SEAL_PT_1,
    );
    assert_eq!(h(&frame), SEAL_C2S_BIG);
    assert_eq!(
        reference_open(&SEAL_ENC, &SEAL_MAC, 0x01, BIG_COUNTER, &frame),
        SEAL_PT_1
    );
    assert_eq!(h(BIG_COUNTER.to_be_bytes()), "0000000100000000");
}

#[test]
fn length_delimited_frames() {
    let hello = hex::decode(CLIENT_HELLO).unwrap();
    assert_eq!(h(frame_with_codec(&hello)), CLIENT_HELLO_FRAMED);
    let login = hex::decode(LOGIN_FRAME).unwrap();
    let framed = frame_with_codec(&login);
    assert_eq!(h(&framed), LOGIN_FRAME_FRAMED);
    assert_eq!(&framed[..HEADER_LEN], &[0, 0, 0, 0x70]);
    assert_eq!(framed.len(), HEADER_LEN + 112);

    // A header announcing more than the maximum is an error, not an allocation.
    let mut codec = FrameCodec::default();
    assert_eq!(codec.max_frame_length(), DEFAULT_MAX_FRAME);
    let too_big = u32::try_from(DEFAULT_MAX_FRAME + 1).unwrap();
    let mut buf = BytesMut::from(&too_big.to_be_bytes()[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::Oversize {
            len: 1_048_577,
            max: 1_048_576
        })
    ));
    let exactly = u32::try_from(DEFAULT_MAX_FRAME).unwrap();
    let mut buf = BytesMut::from(&exactly.to_be_bytes()[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
}

/// Before login the reference server reads frames of at most 8 KiB (its
/// `preauth.max_frame` setting). PROTOCOL.md promises that any Login with a
/// ticket and up to 8,000 bytes of strings fits in one.
const PRE_LOGIN_MAX_FRAME: usize = 8 * 1024;

#[test]
fn a_login_fits_the_pre_login_frame_limit() {
    assert_eq!(max_plaintext(PRE_LOGIN_MAX_FRAME), 8_143);
    let fattest = ClientMsg::Login(Login {
        username: "u".repeat(2_000),
        password: "p".repeat(4_000),
        device_id: device(),
        resume_after: Some(u64::MAX),
        client: "c".repeat(2_000),
        ticket: Some(ticket()),
    });
    let len = fattest.encode().len();
    assert!(sealed_len(len) <= PRE_LOGIN_MAX_FRAME, "{len} bytes");
    // The realistic ones are tiny.
    for login in [client_login(), client_login_ticket()] {
        assert!(sealed_len(login.encode().len()) <= 256);
    }
}

// ================================================================ tests: agent messages

#[test]
fn agent_message_fixtures() {
    let mut fx = Fixtures::new("agent", "hex");
    for (name, msg) in agent_samples() {
        let bytes = msg.encode();
        assert_eq!(
            msg.decode_as_same(&bytes),
            msg,
            "{name} does not round-trip"
        );
        fx.check(&name, &h(&bytes));
        // Exactly one message per payload: trailing bytes are an error.
        let mut longer = bytes.clone();
        longer.push(0);
        let trailing = match &msg {
            Msg::C(_) => ClientMsg::decode(&longer).is_err(),
            Msg::S(_) => ServerMsg::decode(&longer).is_err(),
        };
        assert!(trailing, "{name} accepted a trailing byte");
    }
    fx.finish();
    // What is on disk decodes to the sample (a no-op unless it was blessed).
    for (name, msg) in agent_samples() {
        let path = fx_path("agent", &name, "hex");
        let bytes = hex::decode(fs::read_to_string(path).unwrap().trim_end()).unwrap();
        assert_eq!(msg.decode_as_same(&bytes), msg, "{name}");
    }
}

fn fx_path(sub: &str, name: &str, ext: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(sub)
        .join(format!("{name}.{ext}"))
}

#[test]
fn every_agent_enum_variant_has_a_fixture() {
    let mut seen = Seen::new();
    for (_, msg) in agent_samples() {
        walk(&mut seen, &msg);
    }
    for (name, vars) in agent_enums() {
        let want: BTreeSet<usize> = (0..vars.len()).collect();
        let got: BTreeSet<usize> = seen
            .get(name)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        assert_eq!(
            got, want,
            "{name} has variants {vars:?}; samples cover {got:?}"
        );
    }
    let codes = variants::<ErrorCode>(EXTERNAL);
    assert_eq!(codes.len(), ErrorCode::ALL.len());
    for (i, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(index_of(code), i);
        assert_eq!(serde_json::to_value(code).unwrap(), codes[i].as_str());
    }
}

#[test]
fn bincode_rules_hold() {
    // Spot checks of the encoding rules PROTOCOL.md states.
    let enc = |v: &dyn erased::Enc| v.enc();
    assert_eq!(enc(&250u64), "fa");
    assert_eq!(enc(&251u64), "fbfb00");
    assert_eq!(enc(&300u32), "fb2c01");
    assert_eq!(enc(&65_536u64), "fc00000100");
    assert_eq!(enc(&(1u64 << 32)), "fd0000000001000000");
    assert_eq!(enc(&u64::MAX), "fdffffffffffffffff");
    assert_eq!(enc(&0i64), "00");
    assert_eq!(enc(&-1i64), "01");
    assert_eq!(enc(&1i64), "02");
    assert_eq!(enc(&-2i64), "03");
    assert_eq!(enc(&T0), "fd00d0ca9f17030000");
    assert_eq!(enc(&200u8), "c8");
    assert_eq!(enc(&true), "01");
    assert_eq!(enc(&None::<u64>), "00");
    assert_eq!(enc(&Some(5u64)), "0105");
    assert_eq!(enc(&"hi".to_string()), "026869");
    assert_eq!(enc(&vec![1u32, 2]), "020102");
    assert_eq!(enc(&("a".to_string(), "b".to_string())), "01610162");
    assert_eq!(enc(&id(1)), "01901234567971018101010101010101");
    assert_eq!(enc(&id(1)).len(), 32);
    assert_eq!(
        enc(&Box::new(Presence::Away)),
        enc(&Presence::Away),
        "Box is transparent"
    );
}

mod erased {
    pub trait Enc {
        fn enc(&self) -> String;
    }
    impl<T: serde::Serialize> Enc for T {
        fn enc(&self) -> String {
            hex::encode(bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap())
        }
    }
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

#[test]
fn decode_refuses_what_the_spec_refuses() {
    // Unknown variant index: one past the last of each.
    assert_eq!(ClientMsg::decode(&[0x05]).unwrap(), ClientMsg::SignOut);
    assert_eq!(
        ServerMsg::decode(&[0x0a, 0x00, 0x00]).unwrap(),
        ServerMsg::SnapshotPart(SnapshotPart {
            conversations: vec![],
            messages: vec![],
        })
    );
    assert!(ClientMsg::decode(&[0x06]).is_err());
    assert!(ServerMsg::decode(&[0x0b]).is_err());
    let mut code = ServerMsg::Error(wire_error(ErrorCode::Revoked, "", None)).encode();
    assert_eq!(h(&code), "060e0000");
    code[1] = 0x0f;
    assert!(ServerMsg::decode(&code).is_err());
    // Option tag other than 0/1, bool other than 0/1.
    let mut ok = ServerMsg::Error(wire_error(ErrorCode::BadRequest, "", None)).encode();
    assert_eq!(h(&ok), "06000000");
    ok[3] = 2;
    assert!(ServerMsg::decode(&ok).is_err());
    // Truncated.
    assert!(ClientMsg::decode(&[0x02]).is_err());
    // A string length beyond the decode limit is refused without allocating.
    let mut huge = vec![0x07, 0xfc];
    huge.extend_from_slice(&u32::try_from(DECODE_LIMIT + 1).unwrap().to_le_bytes());
    assert!(ServerMsg::decode(&huge).is_err());
    // Invalid UTF-8 in a string.
    assert!(ServerMsg::decode(&[0x07, 0x01, 0xff]).is_err());
}

// ================================================================ tests: visitor messages

#[test]
fn visitor_message_fixtures() {
    let mut fx = Fixtures::new("visitor", "json");
    for (name, msg) in visitor_samples() {
        let text = msg.to_text();
        assert_eq!(msg.parse_as_same(&text), msg, "{name} does not round-trip");
        fx.check(name, &text);
    }
    fx.finish();
    // What is on disk parses (through parse_in / parse_long_poll for inbound
    // messages) to the sample.
    for (name, msg) in visitor_samples() {
        let text = fs::read_to_string(fx_path("visitor", name, "json")).unwrap();
        assert_eq!(msg.parse_as_same(text.trim_end()), msg, "{name}");
    }
}

#[test]
fn visitor_optional_fields_may_be_omitted() {
    let lim = Limits::default();
    let samples: BTreeMap<&str, Json> = visitor_samples().into_iter().collect();
    let minimal = parse_in(br#"{"t":"hello","site":"pk_demo"}"#, &lim).unwrap();
    assert_eq!(Json::In(minimal), samples["in_hello_new_visitor"]);
    // An identity without a hash (a site without a secret).
    let hello = parse_in(
        br#"{"t":"hello","site":"pk_demo","identity":{"id":"user-829"}}"#,
        &lim,
    )
    .unwrap();
    let VisitorIn::Hello { identity, .. } = hello else {
        panic!("not a hello: {hello:?}");
    };
    assert_eq!(
        identity,
        Some(IdentityProof {
            id: "user-829".into(),
            hash: None,
        })
    );
    let page = parse_in(br#"{"url":"https://a/","t":"page"}"#, &lim).unwrap();
    assert_eq!(
        page,
        VisitorIn::Page(PageInfo {
            url: "https://a/".into(),
            title: String::new(),
            referrer: None,
        })
    );
    // Unknown fields are ignored; an unknown type is refused.
    assert_eq!(
        parse_in(br#"{"t":"ping","later":1}"#, &lim).unwrap(),
        VisitorIn::Ping
    );
    let err = parse_in(br#"{"t":"nope"}"#, &lim).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest);
}

/// Every string under `key`, at any depth, except inside a message's
/// `notice`: its `kind` and `from` are the notice's, not the message's.
fn json_strings_at(v: &serde_json::Value, key: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key
                    && let Some(s) = x.as_str()
                {
                    out.insert(s.to_string());
                }
                if k != "notice" {
                    json_strings_at(x, key, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings_at(x, key, out)),
        _ => {}
    }
}

#[test]
fn every_visitor_variant_has_a_fixture() {
    let mut tags = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut states = BTreeSet::new();
    let mut froms = BTreeSet::new();
    let (mut ins, mut outs) = (BTreeSet::new(), BTreeSet::new());
    for (_, msg) in visitor_samples() {
        let v: serde_json::Value = serde_json::from_str(&msg.to_text()).unwrap();
        tags.clear();
        json_strings_at(&v, "t", &mut tags);
        match msg {
            Json::In(_) | Json::LpReq(_) => ins.extend(tags.iter().cloned()),
            Json::Out(_) | Json::LpResp(_) => outs.extend(tags.iter().cloned()),
        }
        json_strings_at(&v, "kind", &mut kinds);
        json_strings_at(&v, "state", &mut states);
        json_strings_at(&v, "from", &mut froms);
    }
    let covered: BTreeMap<&str, BTreeSet<String>> = [
        ("VisitorIn", ins),
        ("VisitorOut", outs),
        ("VisitorEvent", kinds),
        ("VisitorConvState", states),
        ("Sender", froms),
    ]
    .into_iter()
    .collect();
    for (name, vars) in visitor_enums() {
        let want: BTreeSet<String> = vars.iter().cloned().collect();
        let got = covered[name].clone();
        if matches!(name, "VisitorIn" | "VisitorOut" | "VisitorEvent") {
            assert_eq!(got, want, "{name}: samples cover {got:?}");
        } else {
            assert!(got.is_subset(&want), "{name}: {got:?} not in {want:?}");
        }
    }
}

// ================================================================ tests: PROTOCOL.md

const DOC: &str = include_str!("../PROTOCOL.md");

fn pinned() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = [
        ("CLIENT_EPH_SECRET", h(CLIENT_EPH_SECRET)),
        ("SERVER_EPH_SECRET", h(SERVER_EPH_SECRET)),
        ("SERVER_STATIC_SECRET", h(SERVER_STATIC_SECRET)),
        ("CLIENT_EPH_PUBLIC", CLIENT_EPH_PUBLIC.into()),
        ("SERVER_EPH_PUBLIC", SERVER_EPH_PUBLIC.into()),
        ("SERVER_STATIC_PUBLIC", SERVER_STATIC_PUBLIC.into()),
        ("CLIENT_HELLO", CLIENT_HELLO.into()),
        ("SERVER_HELLO", SERVER_HELLO.into()),
        ("SALT", SALT.into()),
        ("DH_EPH", DH_EPH.into()),
        ("DH_STATIC", DH_STATIC.into()),
        ("KEY_C2S_ENC", KEY_C2S_ENC.into()),
        ("KEY_C2S_MAC", KEY_C2S_MAC.into()),
        ("KEY_S2C_ENC", KEY_S2C_ENC.into()),
        ("KEY_S2C_MAC", KEY_S2C_MAC.into()),
        ("FINGERPRINT", FINGERPRINT.into()),
        ("CLIENT_HELLO_V3", CLIENT_HELLO_V3.into()),
        ("VERSION_REFUSAL", VERSION_REFUSAL.into()),
        ("LOGIN_IV", h(LOGIN_IV)),
        ("LOGIN_OK_IV", h(LOGIN_OK_IV)),
        ("LOGIN_FRAME", LOGIN_FRAME.into()),
        ("LOGIN_OK_FRAME", LOGIN_OK_FRAME.into()),
        ("CLIENT_HELLO_FRAMED", CLIENT_HELLO_FRAMED.into()),
        ("LOGIN_FRAME_FRAMED", LOGIN_FRAME_FRAMED.into()),
        ("SEAL_ENC", h(SEAL_ENC)),
        ("SEAL_MAC", h(SEAL_MAC)),
        ("SEAL_IV_0", h(SEAL_IV_0)),
        ("SEAL_IV_1", h(SEAL_IV_1)),
        ("SEAL_IV_2", h(SEAL_IV_2)),
        ("SEAL_IV_BIG", h(SEAL_IV_BIG)),
        ("SEAL_C2S_0", SEAL_C2S_0.into()),
        ("SEAL_C2S_1", SEAL_C2S_1.into()),
        ("SEAL_C2S_2", SEAL_C2S_2.into()),
        ("SEAL_S2C_0", SEAL_S2C_0.into()),
        ("SEAL_S2C_1", SEAL_S2C_1.into()),
        ("SEAL_S2C_2", SEAL_S2C_2.into()),
        ("SEAL_C2S_BIG", SEAL_C2S_BIG.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Derived values the spec walks through for SEAL_C2S_1.
    let f1 = hex::decode(SEAL_C2S_1).unwrap();
    v.push((
        "SEAL_C2S_1 MAC input".into(),
        h([&[0x01][..], &1u64.to_be_bytes(), &f1[..IV_LEN + 16]].concat()),
    ));
    v.push((
        "SEAL_PT_2 (ASCII)".into(),
        String::from_utf8(SEAL_PT_2.to_vec()).unwrap(),
    ));
    v.push((
        "SEAL_PT_1 padded".into(),
        h([SEAL_PT_1, &[0x0b; 11]].concat()),
    ));
    // The example ticket, and the key the test-vector server makes them with.
    v.push(("TICKET".into(), h(ticket())));
    v.push((
        "TICKET_KEY".into(),
        h(reference_hkdf(
            b"holdfast resume tickets",
            &SERVER_STATIC_SECRET,
            b"hf-ticket-v1",
        )),
    ));
    v
}

/// Whether `hex` appears in PROTOCOL.md as a whole run of hex digits, not
/// only inside a longer one (a one-byte message such as `03` would
/// otherwise be "quoted" by any vector that contains those two digits).
fn doc_quotes_whole(hex: &str) -> bool {
    DOC.match_indices(hex).any(|(at, _)| {
        let before = DOC[..at].chars().next_back();
        let after = DOC[at + hex.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_hexdigit())
            && !after.is_some_and(|c| c.is_ascii_hexdigit())
    })
}

/// The rows of the markdown table that follows `marker`, header and
/// separator dropped, cells trimmed and unquoted.
fn table_after(marker: &str) -> Vec<Vec<String>> {
    let at = DOC
        .find(marker)
        .unwrap_or_else(|| panic!("PROTOCOL.md lacks {marker}"));
    DOC[at + marker.len()..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.trim().trim_matches('|').split('|').collect();
            cells
                .iter()
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn columns(rows: &[Vec<String>], n: usize) -> Vec<Vec<String>> {
    rows.iter().map(|r| r[..n].to_vec()).collect()
}

#[test]
fn protocol_md_quotes_every_pinned_vector() {
    let missing: Vec<String> = pinned()
        .into_iter()
        .filter(|(_, v)| !DOC.contains(v.as_str()))
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md lacks:\n{}",
        missing.join("\n")
    );
}

/// Every agent-channel message of the fixtures, one per variant of every
/// enum (section 19), is quoted in full, so a client can be checked against
/// the document alone.
#[test]
fn protocol_md_quotes_every_agent_message() {
    let missing: Vec<String> = agent_samples()
        .into_iter()
        .map(|(name, m)| (name, h(m.encode())))
        .filter(|(_, hex)| !doc_quotes_whole(hex))
        .map(|(name, hex)| format!("{name} = {hex}"))
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md does not quote these agent messages in full:\n{}",
        missing.join("\n")
    );
}

#[test]
fn protocol_md_quotes_no_unchecked_hex() {
    let mut known: Vec<String> = pinned().into_iter().map(|(_, v)| v).collect();
    known.extend(agent_samples().iter().map(|(_, m)| h(m.encode())));
    known.extend(visitor_samples().iter().map(|(_, m)| m.to_text()));
    let mut unknown = Vec::new();
    let mut run = String::new();
    for c in DOC.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        let all_digits = run.chars().all(|c| c.is_ascii_digit());
        if run.len() >= 16 && !all_digits && !known.iter().any(|k| k.contains(run.as_str())) {
            unknown.push(run.clone());
        }
        run.clear();
    }
    assert!(
        unknown.is_empty(),
        "PROTOCOL.md quotes hex that no test pins:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn protocol_md_breakdowns_add_up() {
    let mut known: BTreeSet<String> = pinned().into_iter().map(|(_, v)| v).collect();
    known.extend(agent_samples().iter().map(|(_, m)| h(m.encode())));
    let mut blocks = 0;
    let mut rest = DOC;
    while let Some(at) = rest.find("```breakdown\n") {
        let body = &rest[at + "```breakdown\n".len()..];
        let end = body.find("```").unwrap();
        let mut bytes = String::new();
        for line in body[..end].lines().filter(|l| !l.trim().is_empty()) {
            let (hex_part, _) = line
                .split_once('|')
                .unwrap_or_else(|| panic!("breakdown line without `|`: {line}"));
            let part: String = hex_part.split_whitespace().collect();
            assert!(
                part.chars().all(|c| c.is_ascii_hexdigit()) && part.len().is_multiple_of(2),
                "not hex bytes: {line}"
            );
            bytes.push_str(&part);
        }
        assert!(
            known.contains(&bytes),
            "breakdown does not add up to a pinned vector: {bytes}"
        );
        blocks += 1;
        rest = &body[end..];
    }
    assert!(
        blocks >= 4,
        "expected byte-by-byte breakdowns in PROTOCOL.md"
    );
}

#[test]
fn protocol_md_json_examples_are_fixtures() {
    let known: Vec<serde_json::Value> = visitor_samples()
        .iter()
        .map(|(_, m)| serde_json::from_str(&m.to_text()).unwrap())
        .collect();
    let mut n = 0;
    let mut rest = DOC;
    while let Some(at) = rest.find("```json\n") {
        let body = &rest[at + "```json\n".len()..];
        let end = body.find("```").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body[..end])
            .unwrap_or_else(|e| panic!("bad JSON example ({e}):\n{}", &body[..end]));
        assert!(
            known.contains(&v),
            "JSON example is not a fixture:\n{}",
            &body[..end]
        );
        n += 1;
        rest = &body[end..];
    }
    assert!(n >= 10, "expected visitor JSON examples in PROTOCOL.md");
}

/// A variant's fields cell: `—` for a unit variant, `(Type)` for a newtype
/// variant, else `name: Type, …`. Checked against the sample's JSON.
fn check_fields(what: &str, cell: &str, json: &str, tag: Option<&str>) {
    if cell.starts_with('(') {
        return;
    }
    let got = match tag {
        None if cell == "—" => {
            assert!(
                json.starts_with('"'),
                "{what} is not a unit variant: {json}"
            );
            return;
        }
        None => variant_keys(json),
        Some(tag) => keys_of(json).into_iter().filter(|k| k != tag).collect(),
    };
    let want = if cell == "—" {
        Vec::new()
    } else {
        field_names(cell)
    };
    assert_eq!(want, got, "fields of {what} in PROTOCOL.md vs the code");
}

#[test]
fn protocol_md_agent_variant_tables_match_the_code() {
    let mut seen = Seen::new();
    for (_, msg) in agent_samples() {
        walk(&mut seen, &msg);
    }
    for (name, vars) in agent_enums() {
        if name == "ErrorCode" {
            continue; // its own table, checked below
        }
        let rows = table_after(&format!("<!-- variants: {name} -->"));
        let got = columns(&rows, 2);
        let want: Vec<Vec<String>> = vars
            .iter()
            .enumerate()
            .map(|(i, v)| vec![i.to_string(), v.clone()])
            .collect();
        assert_eq!(got, want, "variant table for {name}");
        for (i, row) in rows.iter().enumerate() {
            let json = &seen[name][&i];
            check_fields(&format!("{name}::{}", row[1]), &row[2], json, None);
        }
    }
}

#[test]
fn protocol_md_visitor_tag_tables_match_the_code() {
    // Inbound and outbound samples apart: both directions have an `ack`.
    let mut inbound = Vec::new();
    let mut outbound = Vec::new();
    for (_, msg) in visitor_samples() {
        match msg {
            Json::In(_) | Json::LpReq(_) => inbound.push(msg.to_text()),
            Json::Out(_) | Json::LpResp(_) => outbound.push(msg.to_text()),
        }
    }
    // The exact text (so in field order) of the sample object with this tag
    // that has the most fields: some optional fields are left out when
    // absent, and the table lists them all.
    let find = |texts: &[String], tag_key: &str, tag: &str| -> String {
        texts
            .iter()
            .flat_map(|text| split_objects(text))
            .filter(|candidate| {
                let v: serde_json::Value = serde_json::from_str(candidate).unwrap();
                v.get(tag_key).and_then(|t| t.as_str()) == Some(tag)
            })
            .max_by_key(|candidate| keys_of(candidate).len())
            .unwrap_or_else(|| panic!("no sample with {tag_key}={tag}"))
    };
    for (name, vars) in visitor_enums() {
        let rows = table_after(&format!("<!-- tags: {name} -->"));
        let got = columns(&rows, 1);
        let want: Vec<Vec<String>> = vars.iter().map(|v| vec![v.clone()]).collect();
        assert_eq!(got, want, "tag table for {name}");
        let (texts, tag_key) = match name {
            "VisitorIn" => (&inbound, "t"),
            "VisitorOut" => (&outbound, "t"),
            "VisitorEvent" => (&outbound, "kind"),
            _ => continue,
        };
        for row in &rows {
            let json = find(texts, tag_key, &row[0]);
            check_fields(&format!("{name} {}", row[0]), &row[1], &json, Some(tag_key));
        }
    }
}

/// Every JSON object in `text` (at any depth), as its exact text.
fn split_objects(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_str {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' => starts.push(i),
            '}' => out.push(text[starts.pop().unwrap()..=i].to_string()),
            _ => {}
        }
    }
    out
}

#[test]
fn protocol_md_struct_tables_match_the_code() {
    let j = |v: &dyn erased::Json| v.json();
    let ok = match login_ok(Resume::Snapshot) {
        ServerMsg::LoginOk(l) => l,
        _ => unreachable!(),
    };
    let login = match client_login() {
        ClientMsg::Login(l) => l,
        _ => unreachable!(),
    };
    let batch = AckBatch {
        up_to: 1,
        results: vec![CommandResult {
            seq: 1,
            id: id(1),
            outcome: Outcome::Done {
                conversation: None,
                message: None,
                at_ms: 0,
            },
        }],
    };
    let snapshot = Snapshot {
        seq: 1,
        recovered: false,
        conversations: vec![],
        messages: vec![],
    };
    let structs: Vec<(&str, String)> = vec![
        ("Login", j(&login)),
        (
            "Command",
            j(&Command {
                id: id(1),
                seq: 1,
                action: Action::Accept { conversation: 1 },
            }),
        ),
        ("LoginOk", j(&ok)),
        ("AckBatch", j(&batch)),
        ("CommandResult", j(&batch.results[0])),
        ("ChatMessage", j(&chat_message(1, Author::System, "x"))),
        (
            "ConversationInfo",
            j(&conversation(1, ConversationState::Queued)),
        ),
        ("Snapshot", j(&snapshot)),
        (
            "SnapshotPart",
            j(&SnapshotPart {
                conversations: vec![],
                messages: vec![],
            }),
        ),
        ("PageView", j(&page_views()[0])),
        ("VisitorInfo", j(&visitor_info())),
        ("WireError", j(&wire_error(ErrorCode::Internal, "", None))),
        (
            "PageInfo",
            j(&PageInfo {
                url: String::new(),
                title: String::new(),
                referrer: None,
            }),
        ),
        (
            "IdentityProof",
            j(&IdentityProof {
                id: String::new(),
                hash: None,
            }),
        ),
        (
            "ConversationView",
            j(&ConversationView {
                id: 1,
                state: VisitorConvState::Closed,
                agent_name: None,
            }),
        ),
        (
            "VisitorMessage",
            j(&VisitorMessage {
                attachment: visitor_file_message().attachment,
                ..visitor_notice_message()
            }),
        ),
        (
            "TeamMember",
            j(&member(1, "", Role::Agent, Presence::Online, (0, 0), false)),
        ),
        (
            "LongPollRequest",
            j(&LongPollRequest {
                token: None,
                msgs: vec![],
            }),
        ),
        ("LongPollResponse", j(&LongPollResponse { msgs: vec![] })),
        ("InviteRule", j(&invite_rule())),
        ("InviteRuleSpec", j(&invite_rule().rule)),
        ("InviteCounts", j(&invite_rule().counts)),
    ];
    for (name, json) in structs {
        let got = columns(&table_after(&format!("<!-- struct: {name} -->")), 1);
        let want: Vec<Vec<String>> = keys_of(&json).into_iter().map(|k| vec![k]).collect();
        assert_eq!(got, want, "field table for {name}");
    }
}

/// One notice of every kind.
fn notices() -> Vec<Notice> {
    vec![
        Notice::Joined {
            agent: "Alice".into(),
        },
        transferred(),
        Notice::ClosedByAgent {
            agent: "Alice".into(),
        },
        Notice::ClosedByVisitor,
        Notice::Requeued {
            agent: "Alice".into(),
            reason: LeaveReason::SignedOut,
        },
        Notice::LeftMessage {
            email: Some("dana@example.com".into()),
            url: Some("https://shop.example/pricing".into()),
            title: Some("Pricing".into()),
        },
        transfer_note(),
        Notice::Tagged {
            by: "Alice".into(),
            tags: vec!["refund".into(), "billing".into()],
        },
        Notice::Invited {
            rule: "pricing".into(),
            text: "Questions about plans?".into(),
        },
    ]
}

#[test]
fn protocol_md_notice_tables_match_the_code() {
    let kinds = variants::<Notice>(r#"{"kind":"zz_no_such_variant"}"#);
    let rows = table_after("<!-- tags: Notice -->");
    let want: Vec<Vec<String>> = kinds.iter().map(|k| vec![k.clone()]).collect();
    assert_eq!(columns(&rows, 1), want, "notice kinds");
    let samples: BTreeMap<String, Notice> = notices()
        .into_iter()
        .map(|n| {
            let v: serde_json::Value = serde_json::from_str(&n.to_body()).unwrap();
            (v["kind"].as_str().unwrap().to_string(), n)
        })
        .collect();
    assert_eq!(samples.keys().collect::<Vec<_>>(), {
        let mut k: Vec<&String> = kinds.iter().collect();
        k.sort();
        k
    });
    for row in &rows {
        let notice = &samples[&row[0]];
        let body = notice.to_body();
        assert_eq!(Notice::parse(&body).as_ref(), Some(notice), "{body}");
        check_fields(&format!("Notice {}", row[0]), &row[1], &body, Some("kind"));
        let agents_only = if notice.agents_only() { "yes" } else { "no" };
        assert_eq!(row[2], agents_only, "agents-only column for {}", row[0]);
    }
    let reasons: Vec<Vec<String>> = variants::<LeaveReason>(EXTERNAL)
        .into_iter()
        .map(|r| vec![r])
        .collect();
    assert_eq!(
        columns(&table_after("<!-- tags: LeaveReason -->"), 1),
        reasons,
        "requeue reasons"
    );
}

#[test]
fn protocol_md_error_codes_limits_and_constants_match_the_code() {
    let rows = columns(&table_after("<!-- error-codes -->"), 4);
    let want: Vec<Vec<String>> = ErrorCode::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| {
            vec![
                i.to_string(),
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
                format!("{c:?}"),
                if c.is_retryable() { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    assert_eq!(rows, want, "error code table");

    let Limits {
        max_text,
        max_body,
        max_url,
        max_title,
        max_short,
        max_attrs,
        max_attr_value,
        max_batch,
    } = Limits::default();
    let limits = [
        ("max_text", max_text),
        ("max_body", max_body),
        ("max_url", max_url),
        ("max_title", max_title),
        ("max_short", max_short),
        ("max_attrs", max_attrs),
        ("max_attr_value", max_attr_value),
        ("max_batch", max_batch),
    ];
    let rows = columns(&table_after("<!-- limits -->"), 2);
    let want: Vec<Vec<String>> = limits
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.to_string()])
        .collect();
    assert_eq!(rows, want, "limits table");

    let live = LivenessConfig::default();
    let backoff = BackoffConfig::default();
    let ack = AckPolicy::default();
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let constants: Vec<(&str, String)> = vec![
        ("PROTOCOL_VERSION", PROTOCOL_VERSION.to_string()),
        (
            "VISITOR_PROTOCOL_VERSION",
            VISITOR_PROTOCOL_VERSION.to_string(),
        ),
        ("HEADER_LEN", HEADER_LEN.to_string()),
        ("DEFAULT_MAX_FRAME", DEFAULT_MAX_FRAME.to_string()),
        ("CLIENT_HELLO_LEN", CLIENT_HELLO_LEN.to_string()),
        ("SERVER_HELLO_LEN", SERVER_HELLO_LEN.to_string()),
        ("VERSION_REFUSAL_LEN", VERSION_REFUSAL_LEN.to_string()),
        ("IV_LEN", IV_LEN.to_string()),
        ("TAG_LEN", TAG_LEN.to_string()),
        ("MIN_SEALED_LEN", MIN_SEALED_LEN.to_string()),
        (
            "MAX_PLAINTEXT",
            max_plaintext(DEFAULT_MAX_FRAME).to_string(),
        ),
        ("DECODE_LIMIT", DECODE_LIMIT.to_string()),
        ("MAX_UPLOAD_CHUNK", MAX_UPLOAD_CHUNK.to_string()),
        ("HEARTBEAT_MS", ms(live.heartbeat)),
        ("DEAD_AFTER_MS", ms(live.dead_after)),
        ("ACK_MAX_DELAY_MS", ms(ack.max_delay)),
        ("ACK_MAX_BATCH", ack.max_batch.to_string()),
        ("BACKOFF_BASE_MS", ms(backoff.base)),
        ("BACKOFF_CAP_MS", ms(backoff.cap)),
    ];
    let rows = columns(&table_after("<!-- constants -->"), 2);
    let want: Vec<Vec<String>> = constants
        .iter()
        .map(|(k, v)| vec![k.to_string(), v.clone()])
        .collect();
    assert_eq!(rows, want, "constants table");

    for label in [LABEL_C2S_ENC, LABEL_C2S_MAC, LABEL_S2C_ENC, LABEL_S2C_MAC] {
        let label = std::str::from_utf8(label).unwrap();
        assert!(DOC.contains(&format!("`{label}`")), "{label}");
    }
}
