//! Every end-to-end test of Holdfast, one module per area, linked into one
//! test binary. Forty binaries each linked the server, the client core and
//! their dependencies again: about 4 GB of a cold CI target dir and minutes of
//! linking, and a CI machine ran out of disk in the middle of the run. Run
//! one area with a filter: `cargo nextest run -p holdfast-tests -E
//! 'test(/^queue::/)'` or `cargo test -p holdfast-tests --test e2e queue::`.

mod support {
    pub mod desktop_demo;
}
mod agent_files;
mod assets;
mod attachments;
mod attacks_agent;
mod attacks_visitor;
mod block;
mod bus_redis;
mod canned;
mod chaos;
mod client_core;
mod cluster;
mod cluster_attachments;
mod cluster_chaos;
mod cluster_flows;
mod cluster_longpoll;
mod cluster_ownership;
mod cluster_presence;
mod cluster_typing;
mod conversation;
mod desktop_notify;
mod desktop_ui;
mod desktop_window;
mod engines;
mod flows;
mod groups;
mod haproxy;
mod hostile;
mod hostile_http;
mod hostile_resources;
mod hours;
mod installer;
mod invitations;
mod invite_rules;
mod load_generator;
mod nat_office;
mod notes;
mod operations;
mod ownership;
mod process;
mod queue;
mod resync;
mod store_pg;
mod tags;
mod typing;
mod visitor_lang;
mod widget_attachments;
mod widget_browser;
mod widget_groups;
mod widget_invitations;
mod widget_typing;
mod write_amplification;
