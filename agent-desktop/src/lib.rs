//! The Holdfast agent desktop app: an iced UI over the client core
//! (`holdfast-client`, in `client/`), which holds all networking, the local
//! store and the connection state machine.
//!
//! - [`ui`]: the iced app that the `holdfast-agent` binary (`src/main.rs`)
//!   runs: state and update logic, the workspace's data, drawing, the
//!   remembered preferences, and OS notifications.

pub mod ui;
