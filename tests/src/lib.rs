//! The Holdfast test harness. End-to-end tests arrive with the server
//! (issue 3); the protocol's own tests live beside it in `protocol/tests`.

pub use holdfast_protocol as protocol;
