//! The plaintext handshake on arbitrary bytes: `server_accept` with a fixed
//! identity, and `ClientHandshake::handle_reply`.
//!
//! Properties: never panics; an accepted ClientHello yields a 71-byte
//! ServerHello that a client with the matching ephemeral key (when the input is
//! that client's hello) completes to the same keys; a refusal's reply, when
//! present, is a 9-byte VersionRefusal.
#![no_main]

use holdfast_protocol::PROTOCOL_VERSION;
use holdfast_protocol::handshake::{
    ClientHandshake, HandshakeError, SERVER_HELLO_LEN, ServerIdentity, VERSION_REFUSAL_LEN,
    server_accept,
};
use libfuzzer_sys::fuzz_target;

const SERVER_STATIC: [u8; 32] = [7; 32];
const SERVER_EPH: [u8; 32] = [5; 32];
const CLIENT_EPH: [u8; 32] = [3; 32];

fuzz_target!(|data: &[u8]| {
    let id = ServerIdentity::from_secret_bytes(SERVER_STATIC);

    // Server side: arbitrary bytes as a ClientHello.
    match server_accept(&id, SERVER_EPH, data) {
        Ok(acc) => {
            assert_eq!(acc.reply.len(), SERVER_HELLO_LEN);
            assert_eq!(&acc.reply[39..], &id.public_bytes());
            // If the fuzzer happened to produce the fixed client's hello, the
            // client must complete and both sides must agree.
            let c = ClientHandshake::new(CLIENT_EPH);
            if c.hello() == data {
                let mut cs = c.handle_reply(&acc.reply).expect("client completes");
                let mut ss = acc.session;
                let f = cs.sealer.seal([1; 16], data).expect("seal");
                assert_eq!(ss.opener.open(&f).expect("server opens"), data);
            }
        }
        Err(refusal) => {
            if let Some(reply) = &refusal.reply {
                assert_eq!(reply.len(), VERSION_REFUSAL_LEN);
                assert!(matches!(
                    refusal.error,
                    HandshakeError::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        ..
                    }
                ));
            }
        }
    }

    // Client side: arbitrary bytes as the server's reply.
    let c = ClientHandshake::new(CLIENT_EPH);
    match c.handle_reply(data) {
        Ok(session) => {
            assert_eq!(data.len(), SERVER_HELLO_LEN);
            assert_eq!(&session.server_static[..], &data[39..]);
        }
        Err(HandshakeError::VersionMismatch { ours, .. }) => assert_eq!(ours, PROTOCOL_VERSION),
        Err(_) => {}
    }
});
