//! The app's screens, halloy-style: each owns its `State`, its `Message`,
//! an `update` that hands its parent an `Event` for what only the parent
//! can do, and a `view`.
//!
//! - [`login`]: the sign-in form.
//! - [`trust`]: the server key prompt, over either screen.
//! - [`workspace`]: everything after sign-in, made of panels:
//!   `bar` (top and connection bars), `queue`, `conversations`, `team`,
//!   `visitors`, `chat`, `details`, and the `sign_out` prompt.
//!
//! A panel with no state of its own (queue, conversations, details, team)
//! has no `update`: its messages are requests the workspace carries out on
//! the data it owns. The top level that picks a screen and routes to it is
//! [`crate::ui::app`].

pub mod login;
pub mod trust;
pub mod workspace;
