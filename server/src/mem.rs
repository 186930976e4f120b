//! Giving memory back to the operating system after a burst.
//!
//! A slow consumer's queue can hold up to `agent_queue_bytes` in many small
//! allocations spread over the allocator's per-thread arenas. Freeing them
//! makes the memory reusable but glibc keeps the pages resident: in the
//! review, RSS stayed at 619 MB after the connection closed. After such a
//! connection ends the server asks glibc to return free pages (at most
//! every few seconds: it walks every arena).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The least time between two trims.
const TRIM_EVERY: Duration = Duration::from_secs(5);

static LAST_TRIM: Mutex<Option<Instant>> = Mutex::new(None);

/// Return freed memory to the OS, off the async threads, unless that was
/// done a moment ago.
pub fn give_back_freed() {
    {
        let mut last = LAST_TRIM.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < TRIM_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    let _detached = tokio::task::spawn_blocking(trim);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only releases pages the
    // allocator already considers free; it is thread-safe (it takes each
    // arena's lock in turn).
    let _released = unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
