//! Bytes a version 2 build stored (a server's agent event log, an app's
//! outbox) still decode after the upgrade to version 3.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_protocol::agent::{Action, Author, ClientMsg, Event, ServerMsg, v2};

/// `Event::Message` of the version 2 golden vector
/// `server_event_message_visitor`, without its `ServerMsg::Event` header.
const V2_EVENT_MESSAGE: &str = "000cfb590101901234567a720282020202020202020006762d376633611948692c2063616e2049206368616e6765206d7920706c616e3ffdd0d7ca9f17030000";
/// The version 2 golden vector `client_command_send`.
const V2_COMMAND_SEND: &str = "010190123456797101810101010101010107000c0648656c6c6f21";

#[test]
fn a_version_2_message_event_decodes_without_an_attachment() {
    let bytes = hex::decode(V2_EVENT_MESSAGE).unwrap();
    let Event::Message(m) = v2::decode_event(&bytes).unwrap() else {
        panic!("not a message")
    };
    assert_eq!(m.message, 345);
    assert_eq!(m.conversation, 12);
    assert_eq!(m.body, "Hi, can I change my plan?");
    assert_eq!(
        m.author,
        Author::Visitor {
            visitor: "v-7f3a".into()
        }
    );
    assert_eq!(m.attachment, None);
}

#[test]
fn a_version_2_send_command_decodes_without_an_attachment() {
    let bytes = hex::decode(V2_COMMAND_SEND).unwrap();
    // The current layout runs short on it: that is why the fallback exists.
    assert!(ClientMsg::decode(&bytes).is_err());
    let c = v2::decode_command(&bytes).unwrap().unwrap();
    assert_eq!(c.seq, 7);
    assert_eq!(
        c.action,
        Action::Send {
            conversation: 12,
            body: "Hello!".into(),
            attachment: None
        }
    );
}

#[test]
fn unchanged_variants_decode_the_same_either_way() {
    let e = Event::Delivered {
        conversation: 12,
        message: 345,
    };
    let msg = ServerMsg::Event {
        seq: 1,
        event: e.clone(),
    }
    .encode();
    // Past the variant index (02) and the seq (01).
    assert_eq!(v2::decode_event(&msg[2..]).unwrap(), e);
}
