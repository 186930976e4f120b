//! The Holdfast test harness, shared by every end-to-end and fault test.
//!
//! - [`server`]: start a real server in-process on port 0, or the real
//!   binary as a child process that can be SIGKILLed and restarted.
//! - [`visitor`]: scripted visitors over WebSocket and over long-poll.
//! - [`raw_agent`]: a protocol-level agent for hostile-input tests.
//! - [`proxy`]: a TCP fault proxy (blackhole, reset, slice, latency).
//! - [`checker`]: counts lost, duplicated and reordered messages.
//! - [`core_agent`]: the real agent client core as a test peer.
//! - [`browser`]: a small WebDriver client for headless Chromium.
//! - [`pg`]: a private PostgreSQL (initdb + postgres) in a temp dir.
//! - [`chaos`]: the chaos run (every fault at once, real processes, checker).
//! - [`attach`]: the attachment upload calls over HTTP, and test files.
//! - [`attack`]: connections from other loopback addresses, and the
//!   bystander chat that must stay fast while an attack runs.
//! - [`redis`], [`haproxy`]: throwaway `redis-server` and `haproxy`
//!   processes (Debian's binaries) on free ports, that a test can kill.
//!
//! Test code may unwrap: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_possible_truncation
)]

pub mod attach;
pub mod attack;
pub mod browser;
pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod core_agent;
pub mod flows;
pub mod proxy;
// PostgreSQL for the tests of the PostgreSQL store, and the shared one the
// end-to-end suites run their second backend on.
pub mod pg;
pub mod raw_agent;
pub mod server;
pub mod visitor;

// Real engines for the scale-out tests, started by the tests themselves.
pub mod haproxy;
pub mod redis;

/// Run one end-to-end test body on both stores: for `async fn name(backend:
/// Backend)` in the test file, `on_both_backends!(name);` adds the tests
/// `name::sqlite` and `name::postgres`, which nextest lists and runs in
/// parallel like any other two. A test attribute other than
/// `#[tokio::test]` goes first: `on_both_backends!(#[tokio::test(flavor =
/// "multi_thread", worker_threads = 2)] name);`.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        $crate::on_both_backends!(
            #[tokio::test]
            $name
        );
    };
    (#[$test:meta] $name:ident) => {
        // A module may share its name with the body: they live in different
        // namespaces, and the test names read `body::backend`.
        mod $name {
            #[$test]
            async fn sqlite() {
                super::$name($crate::server::Backend::Sqlite).await;
            }

            #[$test]
            async fn postgres() {
                super::$name($crate::server::Backend::Postgres).await;
            }
        }
    };
}

/// A child process killed (and reaped) on drop, so a failing assertion or
/// an early return leaves no X server, app or broker behind.
#[derive(Debug)]
pub struct Reaper(pub std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start tracing once per test binary; `HOLDFAST_LOG=debug` to see it.
pub fn init_logs() {
    let _ignored = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The date ("2026-12-01") at Unix time `ms` in a zone `offset_ms` ahead
/// of UTC, for tests that set business hours in another zone.
pub fn date_at(ms: i64, offset_ms: i64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (ms + offset_ms).div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_at_an_offset() {
        assert_eq!(super::date_at(0, 0), "1970-01-01");
        assert_eq!(super::date_at(1_796_083_200_000, 0), "2026-12-01");
        assert_eq!(super::date_at(1_709_164_800_000, 0), "2024-02-29");
        // 20:00 UTC on 2026-11-30 is already 2026-12-01 in Shanghai.
        assert_eq!(
            super::date_at(1_796_068_800_000, 8 * 3_600_000),
            "2026-12-01"
        );
    }
}
