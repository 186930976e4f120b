//! Reconnect backoff with full jitter.
//!
//! delay(n) = uniform(0, min(cap, base · 2ⁿ)). Full jitter spreads a
//! reconnect storm (a server restart drops everyone at once) evenly over the
//! window instead of synchronising the herd. The RNG is injected and seeded,
//! so tests are deterministic.

use std::time::Duration;

use rand::{RngExt, SeedableRng, rngs::StdRng};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig, seed: u64) -> Self {
        Self {
            cfg,
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The ceiling for the next delay: min(cap, base · 2^attempt).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.cfg.base.saturating_mul(factor).min(self.cfg.cap)
    }

    /// The delay before the next attempt; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(0..=micros))
    }

    /// The delay before retrying after the server said "come back in
    /// `wait`" (a throttled login): `wait` plus up to half of it again (at
    /// least `base`), at random. Waiting exactly `wait` would bring back a
    /// whole office refused at once (one address, one restart) in the same
    /// instant, to be refused together again.
    pub fn after_server_wait(&mut self, wait: Duration) -> Duration {
        let spread = (wait / 2).max(self.cfg.base);
        let micros = u64::try_from(spread.as_micros()).unwrap_or(u64::MAX);
        wait.saturating_add(Duration::from_micros(self.rng.random_range(0..=micros)))
    }

    /// A connection succeeded (got past login): start over.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_wait_is_kept_and_spread() {
        let mut b = Backoff::new(BackoffConfig::default(), 7);
        let wait = Duration::from_secs(2);
        let delays: Vec<_> = (0..50).map(|_| b.after_server_wait(wait)).collect();
        assert!(delays.iter().all(|d| *d >= wait && *d <= wait * 3 / 2));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "a crowd would retry in lockstep");
        assert_eq!(b.attempt(), 0, "a server wait is not a failed connection");
    }

    #[test]
    fn ceilings_double_to_the_cap_and_delays_stay_under() {
        let mut b = Backoff::new(BackoffConfig::default(), 7);
        let expect = [250u64, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
        for ms in expect {
            assert_eq!(b.ceiling(), Duration::from_millis(ms));
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(ms));
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }

    #[test]
    fn seeded_is_deterministic() {
        let mut a = Backoff::new(BackoffConfig::default(), 42);
        let mut b = Backoff::new(BackoffConfig::default(), 42);
        for _ in 0..20 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
