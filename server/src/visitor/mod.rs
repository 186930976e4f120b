//! The visitor side of the HTTP port (being split out of the old
//! `visitor_gw.rs`).

pub mod session;
