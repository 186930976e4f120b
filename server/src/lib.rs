//! The Holdfast server. It is built up in issue 3; for now it only re-exports
//! the protocol crate it is built on, so the workspace links end to end.

pub use holdfast_protocol as protocol;
