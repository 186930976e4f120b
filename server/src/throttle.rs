//! Throttling for agent logins and visitor traffic.
//!
//! - [`LoginThrottle`]: after a few failed logins under a key (an address,
//!   or a username at an address), further attempts are refused for a
//!   doubling lock-out, so a brute force gets a handful of guesses per
//!   minute instead of thousands.
//! - [`TokenBucket`]: a rate limit; [`SendGate`]: the one on a visitor's
//!   messages, which also keeps their order when one is refused.
//! - [`ConnLimiter`]: concurrent connections per IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// After this many failures, a key is locked out. Attempts in flight
    /// are bounded by what is left of it: the ones past it wait (never
    /// refused) until earlier ones are decided.
    pub free_failures: u32,
    pub first_lockout: Duration,
    pub max_lockout: Duration,
    /// Failures older than this no longer count: one typo a morning does
    /// not add up to a lockout by the afternoon.
    pub forget_after: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            first_lockout: Duration::from_secs(2),
            max_lockout: Duration::from_secs(300),
            forget_after: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    /// Attempts started and not yet decided.
    in_flight: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Failed logins per key, with a doubling lock-out.
///
/// Only failures lock a key out. But an attempt is bounded when it *starts*
/// ([`LoginThrottle::begin`]), not when its password check ends: otherwise
/// 60 logins sent at once all get checked before the first failure is
/// counted. So at most `free_failures - failures` attempts of a key are in
/// flight; one past that is told [`NotYet::Busy`] and waits for
/// [`LoginThrottle::changed`], not refused: fifty agents of one office
/// behind one address logging in at once after a restart are queued, not
/// told "too many failed logins" when nothing failed. Keys are chosen by the
/// caller; the gateway uses the source address and the (username, address)
/// pair, never the username alone, so guessing at someone's account from
/// one address slows that address down and never locks the owner out.
#[derive(Debug)]
pub struct LoginThrottle {
    cfg: ThrottleConfig,
    map: Mutex<HashMap<String, Entry>>,
    /// Woken whenever an attempt is decided or given up, for the ones
    /// waiting on [`NotYet::Busy`].
    changed: tokio::sync::Notify,
}

/// Why [`LoginThrottle::begin`] did not start an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// Locked out by failures, for this long: refuse the login.
    Locked(Duration),
    /// Enough attempts in flight to reach the lock-out if they all fail:
    /// wait for [`LoginThrottle::changed`] and try again.
    Busy,
}

/// One attempt in progress; say how it went with `fail` or `succeed`.
/// Dropped undecided (the connection went away mid-check), it counts as
/// a failure, so hanging up early is not a free guess.
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    keys: Vec<String>,
    decided: bool,
}

impl Attempt<'_> {
    pub fn fail(mut self, now: Instant) {
        self.decided = true;
        self.throttle.finish(&self.keys, Some(now));
    }

    /// The attempt succeeded: its keys start clean again.
    pub fn succeed(mut self) {
        self.decided = true;
        self.throttle.finish(&self.keys, None);
    }
}

impl Attempt<'_> {
    /// Never decided: another key refused the attempt before its check, so
    /// it counts neither way.
    pub fn cancel(mut self) {
        self.decided = true;
        self.throttle.undo(&self.keys);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.decided {
            self.throttle.finish(&self.keys, Some(Instant::now()));
        }
    }
}

impl LoginThrottle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            cfg,
            map: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Fires when an attempt in flight is decided. Create (and `enable`)
    /// it before calling `begin`, so a decision in between is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lockout(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.cfg.free_failures)?;
        Some(
            self.cfg
                .first_lockout
                .saturating_mul(1 << over.min(16))
                .min(self.cfg.max_lockout),
        )
    }

    /// Start an attempt under `keys`, or say why not.
    pub fn begin(&self, keys: Vec<String>, now: Instant) -> Result<Attempt<'_>, NotYet> {
        let mut map = self.lock();
        if map.len() > 100_000 {
            let forget = self.cfg.forget_after;
            map.retain(|_, e| e.in_flight > 0 || now.saturating_duration_since(e.last) < forget);
        }
        let mut wait = None::<Duration>;
        let mut busy = false;
        for k in &keys {
            let Some(e) = map.get_mut(k) else { continue };
            if now.saturating_duration_since(e.last) >= self.cfg.forget_after && e.in_flight == 0 {
                e.failures = 0;
                e.locked_until = None;
            }
            if let Some(t) = e.locked_until.filter(|t| *t > now) {
                wait = Some(wait.map_or(t - now, |w| w.max(t - now)));
            } else if e.in_flight > 0 && e.failures + e.in_flight >= self.cfg.free_failures {
                // Attempts in flight would take it to the lock-out if they
                // all failed: the next one waits for them to be decided.
                // Not refused: they may well all be right passwords.
                busy = true;
            }
        }
        if let Some(w) = wait {
            return Err(NotYet::Locked(w));
        }
        if busy {
            return Err(NotYet::Busy);
        }
        for k in &keys {
            let e = map.entry(k.clone()).or_insert(Entry {
                failures: 0,
                in_flight: 0,
                locked_until: None,
                last: now,
            });
            e.in_flight += 1;
            e.last = now;
        }
        drop(map);
        Ok(Attempt {
            throttle: self,
            keys,
            decided: false,
        })
    }

    fn undo(&self, keys: &[String]) {
        let mut map = self.lock();
        for k in keys {
            if let Some(e) = map.get_mut(k) {
                e.in_flight = e.in_flight.saturating_sub(1);
            }
        }
        drop(map);
        self.changed.notify_waiters();
    }

    fn finish(&self, keys: &[String], failed_at: Option<Instant>) {
        let mut map = self.lock();
        for k in keys {
            let Some(e) = map.get_mut(k) else { continue };
            e.in_flight = e.in_flight.saturating_sub(1);
            match failed_at {
                Some(now) => {
                    e.failures = e.failures.saturating_add(1);
                    e.last = now;
                    e.locked_until = self.lockout(e.failures).map(|d| now + d);
                }
                None => {
                    e.failures = 0;
                    e.locked_until = None;
                    if e.in_flight == 0 {
                        map.remove(k);
                    }
                }
            }
        }
        drop(map);
        self.changed.notify_waiters();
    }

    /// If any key is locked out now, how long until it is not.
    pub fn blocked(&self, keys: &[String], now: Instant) -> Option<Duration> {
        let map = self.lock();
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|e| now.saturating_duration_since(e.last) < self.cfg.forget_after)
            .filter_map(|e| e.locked_until)
            .filter(|t| *t > now)
            .map(|t| t - now)
            .max()
    }
}

/// A classic token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate: rate_per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Give back a token taken for something another limit then refused.
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// How long until the next token (after a refused `take`).
    pub fn wait(&self) -> Duration {
        if self.rate <= 0.0 {
            return Duration::from_secs(60);
        }
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / self.rate).min(60.0))
    }
}

/// The rate limit on a visitor's messages, and the order it keeps.
///
/// A refused message blocks every later one until it is sent again and
/// accepted: otherwise a client that pipelines (sends B while A waits for
/// its answer) could have B stored before A, out of the order it was
/// typed. The block lapses after a minute in case the client gave A up.
#[derive(Debug, Clone)]
pub struct SendGate {
    bucket: TokenBucket,
    blocked: Option<(holdfast_protocol::ids::MsgId, Instant)>,
    /// When the limit that refused the blocking message lets it through
    /// (another limit than this gate's bucket).
    held_until: Option<Instant>,
}

/// Why the gate refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
    /// The earlier message that must be resent first, when it is not this
    /// one.
    pub waiting_for: Option<holdfast_protocol::ids::MsgId>,
}

const BLOCK_LAPSES: Duration = Duration::from_secs(60);

impl SendGate {
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(rate_per_sec, burst, now),
            blocked: None,
            held_until: None,
        }
    }

    /// Let `id` through, or say why not.
    pub fn admit(
        &mut self,
        id: holdfast_protocol::ids::MsgId,
        now: Instant,
    ) -> Result<(), Refused> {
        if let Some((first, since)) = self.blocked {
            if now.saturating_duration_since(since) >= BLOCK_LAPSES {
                self.blocked = None;
                self.held_until = None;
            } else if first != id {
                let held = self
                    .held_until
                    .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                return Err(Refused {
                    retry_after: self.bucket.wait().max(held),
                    waiting_for: Some(first),
                });
            }
        }
        if self.bucket.take(now) {
            self.blocked = None;
            self.held_until = None;
            Ok(())
        } else {
            if self.blocked.is_none() {
                self.blocked = Some((id, now));
            }
            Err(Refused {
                retry_after: self.bucket.wait(),
                waiting_for: None,
            })
        }
    }

    /// Another limit refused `id` after this gate let it through, for
    /// `retry_after`: hold its place all the same, so nothing after it is
    /// stored first, and give back this gate's token, which bought nothing.
    pub fn hold(&mut self, id: holdfast_protocol::ids::MsgId, now: Instant, retry_after: Duration) {
        self.bucket.refund();
        if self.blocked.is_none_or(|(first, _)| first == id) {
            self.blocked = Some((id, now));
            self.held_until = Some(now + retry_after);
        }
    }
}

/// Concurrent connections per source address.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    max_per_ip: usize,
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Releases its slot when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    ip: IpAddr,
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(max_per_ip: usize) -> Self {
        Self {
            max_per_ip,
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn acquire(&self, ip: IpAddr) -> Option<ConnSlot> {
        let ip = crate::limits::addr_key(ip);
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            ip,
            map: self.map.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_doubles_and_success_clears() {
        let t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        let keys = || vec!["u:bob".to_string()];
        for _ in 0..4 {
            t.begin(keys(), now).unwrap().fail(now);
        }
        assert_eq!(t.blocked(&keys(), now), None);
        t.begin(keys(), now).unwrap().fail(now);
        assert_eq!(t.blocked(&keys(), now), Some(Duration::from_secs(2)));
        assert!(t.begin(keys(), now).is_err(), "locked");
        let later = now + Duration::from_secs(3);
        t.begin(keys(), later).unwrap().fail(later);
        assert_eq!(t.blocked(&keys(), later), Some(Duration::from_secs(4)));
        let after = later + Duration::from_secs(5);
        t.begin(keys(), after).unwrap().succeed();
        assert_eq!(t.blocked(&keys(), after), None);
        assert!(t.begin(keys(), after).is_ok());
    }

    #[test]
    fn attempts_count_when_they_start_not_when_they_end() {
        let t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        let keys = || vec!["ip:10.0.0.1".to_string()];
        // 61 at once: only the free ones start; the rest wait, not refused.
        let tries: Vec<_> = (0..61).map(|_| t.begin(keys(), now)).collect();
        assert!(tries[5..].iter().all(|r| matches!(r, Err(NotYet::Busy))));
        let started: Vec<_> = tries.into_iter().filter_map(Result::ok).collect();
        assert_eq!(started.len(), 5);
        // Hanging up mid-check counts as a failure.
        drop(started);
        assert!(t.blocked(&keys(), now).is_some());
    }

    #[test]
    fn right_passwords_in_flight_never_lock_a_key_out() {
        let t = LoginThrottle::new(ThrottleConfig::default());
        let now = Instant::now();
        let keys = || vec!["ip:10.0.0.1".to_string()];
        // An office of 50 at once: each one past the bound waits for an
        // earlier one to be decided, and none is ever locked out.
        let mut in_flight: Vec<_> = (0..5).map(|_| t.begin(keys(), now).unwrap()).collect();
        for _ in 0..45 {
            assert_eq!(t.begin(keys(), now).err(), Some(NotYet::Busy));
            in_flight.remove(0).succeed();
            in_flight.push(t.begin(keys(), now).unwrap());
        }
        for a in in_flight {
            a.succeed();
        }
        assert_eq!(t.blocked(&keys(), now), None);
        // Wrong passwords still lock it out after the free ones.
        for _ in 0..5 {
            t.begin(keys(), now).unwrap().fail(now);
        }
        assert!(matches!(t.begin(keys(), now), Err(NotYet::Locked(_))));
    }

    #[test]
    fn failures_decay() {
        let cfg = ThrottleConfig::default();
        let t = LoginThrottle::new(cfg.clone());
        let now = Instant::now();
        let keys = || vec!["ip:10.0.0.1".to_string()];
        for _ in 0..4 {
            t.begin(keys(), now).unwrap().fail(now);
        }
        // A typo much later is the first of a new count, not the fifth.
        let later = now + cfg.forget_after + Duration::from_secs(1);
        t.begin(keys(), later).unwrap().fail(later);
        assert_eq!(t.blocked(&keys(), later), None);
    }

    #[test]
    fn bucket_and_limiter() {
        let now = Instant::now();
        let mut b = TokenBucket::new(1.0, 2.0, now);
        assert!(b.take(now) && b.take(now) && !b.take(now));
        assert!(b.take(now + Duration::from_secs(1)));
        let l = ConnLimiter::new(1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let s = l.acquire(ip).unwrap();
        assert!(l.acquire(ip).is_none());
        drop(s);
        assert!(l.acquire(ip).is_some());
    }

    #[test]
    fn a_refused_message_holds_back_the_ones_after_it() {
        use holdfast_protocol::ids::MsgId;
        let t0 = Instant::now();
        let (a, b) = (MsgId([1; 16]), MsgId([2; 16]));
        let mut g = SendGate::new(1.0, 1.0, t0);
        assert_eq!(g.admit(MsgId([0; 16]), t0), Ok(()));
        let refused = g.admit(a, t0).unwrap_err();
        assert_eq!(refused.waiting_for, None);
        assert!(refused.retry_after > Duration::ZERO);
        // B arrives later, when a token is there: still refused, since A
        // came first and has not been stored.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(g.admit(b, t1).unwrap_err().waiting_for, Some(a));
        assert_eq!(g.admit(a, t1), Ok(()));
        assert_eq!(g.admit(b, t1 + Duration::from_secs(1)), Ok(()));
        // A block the client gave up on lapses.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(g.admit(a, t2), Ok(()));
        assert!(g.admit(b, t2).is_err());
        let later = t2 + BLOCK_LAPSES + Duration::from_secs(1);
        assert_eq!(g.admit(MsgId([3; 16]), later), Ok(()));
    }

    #[test]
    fn a_message_held_by_another_limit_costs_no_token_and_tells_its_wait() {
        use holdfast_protocol::ids::MsgId;
        let t0 = Instant::now();
        let (a, b) = (MsgId([1; 16]), MsgId([2; 16]));
        let mut g = SendGate::new(100.0, 2.0, t0);
        assert_eq!(g.admit(a, t0), Ok(()));
        // The visitor's share refused A for 3 s.
        g.hold(a, t0, Duration::from_secs(3));
        let r = g.admit(b, t0).unwrap_err();
        assert_eq!(r.waiting_for, Some(a));
        assert!(r.retry_after >= Duration::from_millis(2900), "{r:?}");
        // Both of the gate's tokens are still there for A and B.
        assert_eq!(g.admit(a, t0), Ok(()));
        assert_eq!(g.admit(b, t0), Ok(()));
    }
}
