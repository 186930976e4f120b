//! `visitor::parse_in` and `visitor::parse_long_poll` with default limits on
//! arbitrary bytes.
//!
//! Properties: never panics; whatever parses serializes back to JSON that
//! parses (through the same validating entry point) to an equal value.
#![no_main]

use holdfast_protocol::visitor::{self, Limits, LongPollRequest, VisitorIn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lim = Limits::default();

    if let Ok(m) = visitor::parse_in(data, &lim) {
        let json = serde_json::to_vec(&m).expect("VisitorIn serializes");
        let back: VisitorIn = serde_json::from_slice(&json).expect("VisitorIn JSON parses");
        assert_eq!(back, m, "serde_json round trip changed a VisitorIn");
        // Validation is idempotent: the re-serialized form may be longer
        // (escapes) but only the byte cap may refuse it.
        match visitor::parse_in(&json, &lim) {
            Ok(again) => assert_eq!(again, m),
            Err(visitor::VisitorParseError::TooLarge { .. }) => {}
            Err(e) => panic!("re-serialized VisitorIn refused: {e}"),
        }
    }

    if let Ok(r) = visitor::parse_long_poll(data, &lim) {
        let json = serde_json::to_vec(&r).expect("LongPollRequest serializes");
        let back: LongPollRequest =
            serde_json::from_slice(&json).expect("LongPollRequest JSON parses");
        assert_eq!(back, r, "serde_json round trip changed a LongPollRequest");
        match visitor::parse_long_poll(&json, &lim) {
            Ok(again) => assert_eq!(again, r),
            Err(visitor::VisitorParseError::TooLarge { .. }) => {}
            Err(e) => panic!("re-serialized LongPollRequest refused: {e}"),
        }
    }
});
