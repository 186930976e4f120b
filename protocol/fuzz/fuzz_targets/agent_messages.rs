//! `ClientMsg::decode` and `ServerMsg::decode` on arbitrary bytes.
//!
//! Properties: never panics; whatever decodes re-encodes to bytes that decode
//! to an equal value, and (bincode being canonical for our types) to the very
//! same bytes again.
#![no_main]

use holdfast_protocol::agent::{ClientMsg, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ClientMsg::decode(data) {
        let enc = m.encode();
        let again = ClientMsg::decode(&enc).expect("re-encoded ClientMsg must decode");
        assert_eq!(again, m);
        assert_eq!(again.encode(), enc, "ClientMsg encoding is not stable");
    }
    if let Ok(m) = ServerMsg::decode(data) {
        let enc = m.encode();
        let again = ServerMsg::decode(&enc).expect("re-encoded ServerMsg must decode");
        assert_eq!(again, m);
        assert_eq!(again.encode(), enc, "ServerMsg encoding is not stable");
    }
});
