//! Long-poll requests: `parse_long_poll` on bodies built from a template
//! with fuzzed strings in every field, checked against an independent model
//! of the limits.
//!
//! Raw JSON fuzzing (`visitor_json`) rarely forms a well-shaped request, so
//! the limit checks deep inside rarely run. Here the fuzzer picks the batch
//! size, each message's kind and every string, so every field's limit and
//! character rule is exercised; the model says whether the whole request
//! must be accepted, and the parser must agree exactly. Accepted requests
//! must also survive a JSON round trip.
//!
//! Input layout: byte 0 = batch size (mod 70), byte 1 = token mode; then for
//! each message a kind byte and its strings, each as a length byte (scaled
//! so lengths straddle the limits) followed by that many bytes, read as
//! lossy UTF-8.
#![no_main]

use holdfast_protocol::visitor::{self, Limits, LongPollRequest};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// A string whose length may straddle `max`.
    fn string(&mut self, max: usize) -> String {
        let l = usize::from(self.byte());
        let len = if l >= 250 {
            max + (l - 250)
        } else {
            l * max / 240
        };
        let seed: Vec<u8> = (0..len.min(self.0.len())).map(|_| self.byte()).collect();
        let mut s = String::from_utf8_lossy(&seed).into_owned();
        // Pad with 'a' to reach the chosen length.
        while s.len() < len {
            s.push('a');
        }
        s
    }
}

fn ok_chars(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
}

fn fits(s: &str, max: usize) -> bool {
    s.len() <= max && ok_chars(s)
}

fuzz_target!(|data: &[u8]| {
    let lim = Limits::default();
    let mut inp = Input(data);
    let n = usize::from(inp.byte()) % 70;
    let mut ok = n <= lim.max_batch;
    let token = match inp.byte() % 3 {
        0 => Value::Null,
        _ => {
            let t = inp.string(lim.max_short * 2);
            ok &= fits(&t, lim.max_short * 2);
            Value::String(t)
        }
    };
    let mut msgs = Vec::new();
    for _ in 0..n {
        let m = match inp.byte() % 6 {
            0 => {
                let body = inp.string(lim.max_body);
                ok &= fits(&body, lim.max_body) && !body.trim().is_empty();
                json!({"t": "send", "id": "01901234-5678-7abc-8def-0123456789ab", "body": body})
            }
            1 => {
                let url = inp.string(lim.max_url);
                let title = inp.string(lim.max_title);
                let referrer = inp.string(lim.max_url);
                ok &= fits(&url, lim.max_url)
                    && fits(&title, lim.max_title)
                    && fits(&referrer, lim.max_url);
                json!({"t": "page", "url": url, "title": title, "referrer": referrer})
            }
            2 => {
                let site = inp.string(lim.max_short);
                let ua = inp.string(lim.max_title);
                let lang = inp.string(35);
                ok &= fits(&site, lim.max_short) && fits(&ua, lim.max_title) && fits(&lang, 35);
                json!({"t": "hello", "site": site, "user_agent": ua, "lang": lang})
            }
            3 => {
                let id = inp.string(lim.max_short);
                let name = inp.string(lim.max_short);
                let key = inp.string(lim.max_short);
                let val = inp.string(lim.max_attr_value);
                ok &= fits(&id, lim.max_short)
                    && !id.is_empty()
                    && fits(&name, lim.max_short)
                    && fits(&key, lim.max_short)
                    && fits(&val, lim.max_attr_value);
                json!({"t": "identify", "id": id, "name": name, "attrs": {key: val}})
            }
            4 => {
                let body = inp.string(lim.max_body);
                let email = inp.string(lim.max_short);
                ok &= fits(&body, lim.max_body)
                    && !body.trim().is_empty()
                    && fits(&email, lim.max_short);
                json!({"t": "leave_message", "id": "01901234-5678-7abc-8def-0123456789ab",
                       "body": body, "email": email})
            }
            _ => json!({"t": "ack", "seq": u64::from(inp.byte())}),
        };
        msgs.push(m);
    }
    let req = json!({"token": token, "msgs": msgs});
    let bytes = serde_json::to_vec(&req).expect("serializes");
    if bytes.len() > lim.max_text * 4 {
        ok = false;
    }
    match visitor::parse_long_poll(&bytes, &lim) {
        Ok(r) => {
            assert!(ok, "accepted a request the limits refuse");
            assert_eq!(r.msgs.len(), n);
            let json = serde_json::to_vec(&r).expect("serializes");
            let back: LongPollRequest = serde_json::from_slice(&json).expect("parses");
            assert_eq!(back, r);
        }
        Err(e) => assert!(!ok, "refused a valid request: {e}"),
    }
});
