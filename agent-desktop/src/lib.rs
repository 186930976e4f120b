//! The Holdfast agent client core. It is built up in issue 3; for now it only
//! re-exports the protocol crate it is built on.

pub use holdfast_protocol as protocol;
