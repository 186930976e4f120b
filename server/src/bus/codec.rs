//! The bus's wire format: one version byte, then bincode 2 (standard
//! configuration: little endian, varint integers) of the sender's node id,
//! its process instance and the [`BusMsg`]. A wake for an agent is about
//! 20 bytes plus the node id.
//!
//! Anything can be published on a Redis channel, so decoding trusts
//! nothing: a wrong version, a truncated or oversized message, or trailing
//! bytes are an error the caller counts and skips.

use serde::{Deserialize, Serialize};

use super::BusMsg;

/// Bumped when old nodes could no longer read what new ones send (a mixed
/// cluster during a rolling upgrade then ignores, and counts, the other
/// version's messages, and falls back to reading the store). 2: visitors
/// carry their language (`VisitorInfo.lang`), which version 1 nodes would
/// misread.
pub const VERSION: u8 = 2;

/// The largest message decoded; a presence delta with a long page URL is
/// well under this, and a length prefix cannot make us allocate more.
pub const MAX_LEN: usize = 64 * 1024;

#[derive(Serialize)]
struct Out<'a> {
    node: &'a str,
    instance: u64,
    msg: &'a BusMsg,
}

#[derive(Deserialize)]
struct In {
    node: String,
    instance: u64,
    msg: BusMsg,
}

/// A decoded message: who sent it and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub node: String,
    pub instance: u64,
    pub msg: BusMsg,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown bus format version {0}")]
    Version(u8),
    #[error("message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("undecodable: {0}")]
    Bincode(String),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

#[derive(Debug, thiserror::Error)]
#[error("encoding a bus message: {0}")]
pub struct EncodeError(String);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_LEN>()
}

pub fn encode(node: &str, instance: u64, msg: &BusMsg) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![VERSION];
    bincode::serde::encode_into_std_write(
        Out {
            node,
            instance,
            msg,
        },
        &mut out,
        config(),
    )
    .map_err(|e| EncodeError(e.to_string()))?;
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    if bytes.len() > MAX_LEN {
        return Err(DecodeError::TooLong(bytes.len()));
    }
    let (m, used): (In, usize) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| DecodeError::Bincode(e.to_string()))?;
    if used != body.len() {
        return Err(DecodeError::Trailing(body.len() - used));
    }
    Ok(Decoded {
        node: m.node,
        instance: m.instance,
        msg: m.msg,
    })
}

#[cfg(test)]
mod tests {
    use holdfast_protocol::agent::{PageView, Presence};
    use proptest::prelude::*;

    use super::*;
    use crate::bus::{PresenceDelta, Recipient};

    fn samples() -> Vec<BusMsg> {
        vec![
            BusMsg::Wake {
                recipient: Recipient::Agent(7),
                seq: 1_000_000,
            },
            BusMsg::Wake {
                recipient: Recipient::Visitor("v-123".into()),
                seq: 1,
            },
            BusMsg::Presence(PresenceDelta::Agent {
                site: 1,
                agent: 7,
                presence: Presence::Away,
                connections: 2,
            }),
            BusMsg::Presence(PresenceDelta::VisitorHere {
                site: 1,
                visitor: "v-123".into(),
                page: Some(PageView {
                    url: "https://shop.example/cart".into(),
                    title: "Cart".into(),
                    referrer: None,
                    at_ms: 1_700_000_000_000,
                }),
            }),
            BusMsg::Presence(PresenceDelta::VisitorGone {
                site: 1,
                visitor: "v-123".into(),
            }),
            BusMsg::Changed(crate::bus::Changed::Member { site: 1, agent: 7 }),
            BusMsg::Changed(crate::bus::Changed::Canned {
                site: 1,
                owner: None,
            }),
            BusMsg::Changed(crate::bus::Changed::Canned {
                site: 1,
                owner: Some(7),
            }),
            BusMsg::Changed(crate::bus::Changed::InviteRules { site: 1 }),
            BusMsg::Changed(crate::bus::Changed::Visitor {
                visitor: "v-123".into(),
            }),
            BusMsg::Hello,
            BusMsg::Typing(crate::bus::TypingSignal::ToAgents {
                agents: vec![7],
                site: None,
                conversation: 12,
                visitor: "v-123".into(),
                typing: true,
                draft: Some("where is".into()),
            }),
            BusMsg::Typing(crate::bus::TypingSignal::ToVisitor {
                visitor: "v-123".into(),
                name: Some("Alice".into()),
            }),
            BusMsg::Presence(PresenceDelta::AgentAt {
                site: 1,
                agent: 7,
                presence: Presence::Away,
                since_ms: 1_700_000_000_123,
                connections: 2,
            }),
            BusMsg::Presence(PresenceDelta::Visitor(Box::new(
                holdfast_protocol::agent::VisitorInfo {
                    id: "v-123".into(),
                    site: 1,
                    name: Some("Ann".into()),
                    email: None,
                    attrs: vec![("plan".into(), "pro".into())],
                    external_id: None,
                    verified: false,
                    online: true,
                    user_agent: Some("Firefox".into()),
                    referrer: None,
                    visit_started_ms: 1_700_000_000_000,
                    first_seen_ms: 1_600_000_000_000,
                    trail: vec![PageView {
                        url: "https://shop.example/cart".into(),
                        title: "Cart".into(),
                        referrer: None,
                        at_ms: 1_700_000_000_000,
                    }],
                    conversation: Some(9),
                    lang: Some("zh-CN".into()),
                },
            ))),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            let b = encode("node-a", 42, &m).unwrap();
            assert_eq!(b[0], VERSION);
            let d = decode(&b).unwrap();
            assert_eq!((d.node.as_str(), d.instance, d.msg), ("node-a", 42, m));
        }
    }

    #[test]
    fn a_wake_is_small() {
        let b = encode(
            "node-a",
            u64::MAX,
            &BusMsg::Wake {
                recipient: Recipient::Agent(123_456),
                seq: 9_999_999,
            },
        )
        .unwrap();
        // version + node (1 + 6) + instance (9) + variant tags and varints.
        assert!(b.len() <= 32, "{} bytes", b.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode("n", 1, &samples()[1]).unwrap();
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[9, 1, 2]), Err(DecodeError::Version(9)));
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DecodeError::Bincode(_))
        ));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Trailing(1)));
        // A length prefix claiming gigabytes: refused, not allocated.
        let mut huge = vec![VERSION];
        huge.extend_from_slice(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode(&huge).is_err());
        assert!(matches!(
            decode(&vec![VERSION; MAX_LEN + 1]),
            Err(DecodeError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let mut v = vec![VERSION];
            v.extend_from_slice(&bytes);
            let _ = decode(&v);
        }
    }
}
