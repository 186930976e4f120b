//! The Holdfast agent desktop app: an iced UI over the client core
//! (`holdfast-client`, in `client/`), which holds all networking, the local
//! store and the connection state machine.
//!
//! - [`ui`]: the iced app that the `holdfast-agent` binary (`src/main.rs`)
//!   runs: the top level, the screens (login, server key prompt, workspace
//!   and its panels) each with its own state, messages, update and view,
//!   the workspace's data, the remembered preferences, and OS
//!   notifications.

pub mod ui;
