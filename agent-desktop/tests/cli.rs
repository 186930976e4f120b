//! The binary answers on its command line before any window opens, as the
//! installers' checks rely on (`holdfast-agent --version`).
//!
//! This integration test is also what makes `cargo test --workspace
//! --all-targets` (and nextest) build the `holdfast-agent` binary: cargo
//! builds a package's binaries only for its own integration tests, and the
//! desktop tests in `tests/` run this binary (`workspace_binary` in
//! `tests/src/server.rs`). Before the client core moved to `client/`, its
//! tests here did that.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn run(arg: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast-agent"))
        .arg(arg)
        .env("HOLDFAST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{arg}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_binary_and_the_workspace_version() {
    let v = run("--version");
    assert_eq!(
        v.trim(),
        format!("holdfast-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_options() {
    let h = run("--help");
    for opt in [
        "--server",
        "--user",
        "--password-env",
        "--store",
        "--prefs",
        "--no-notify",
    ] {
        assert!(h.contains(opt), "{opt} missing from:\n{h}");
    }
    assert!(
        !h.contains("--bench-first-frame"),
        "hidden option shown:\n{h}"
    );
}
