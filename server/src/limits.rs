//! What one visitor, or one address, may do per second: messages, page
//! views, identifies and new visitors.
//!
//! The per-connection buckets alone were multiplied by the per-address
//! connection cap (256): one address sent 451 messages of 8 KB a second,
//! 1,426 page views, 139 identifies on a single socket, and created 377
//! new visitors a second (666 through long-poll, whose POSTs carry up to
//! 64 hellos). Each of these is now also counted per visitor (across all its
//! tabs and transports) and per address, and a refusal says which.
//!
//! Keyed GCRA limiters (`governor`); keys that have been idle long enough to
//! be back at a full burst are pruned by [`VisitorLimits::prune`], instead of
//! a map that was cleared wholesale when it grew.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

/// The key every per-address limit counts by. An IPv6 user is normally
/// handed a whole /64, so one address of it would be no limit at all.
pub fn addr_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Quota {
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        // One cell every 1/rate seconds; a zero or negative rate is the
        // slowest rate governor takes (one a day), never "unlimited".
        let period = if self.per_second > 0.0 {
            Duration::from_secs_f64((1.0 / self.per_second).min(86_400.0))
        } else {
            Duration::from_secs(86_400)
        };
        Quota::with_period(period.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// Every visitor limit; defaults fit a busy site behind one office NAT.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `send`, `leave_message`, `end_chat` by one visitor, all tabs.
    pub visitor_messages: Rate,
    pub addr_messages: Rate,
    pub visitor_pages: Rate,
    pub addr_pages: Rate,
    pub visitor_identifies: Rate,
    pub addr_identifies: Rate,
    /// Hellos that create a visitor (no valid token), over either
    /// transport, however many one long-poll POST carries.
    pub addr_new_visitors: Rate,
    /// Long-poll HTTP requests (sends and polls) per address.
    pub addr_http_requests: Rate,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            visitor_messages: Rate::new(5.0, 20),
            addr_messages: Rate::new(20.0, 100),
            visitor_pages: Rate::new(2.0, 10),
            addr_pages: Rate::new(20.0, 100),
            visitor_identifies: Rate::new(1.0, 5),
            addr_identifies: Rate::new(10.0, 50),
            addr_new_visitors: Rate::new(2.0, 30),
            addr_http_requests: Rate::new(20.0, 60),
        }
    }
}

/// Which limit refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub by: &'static str,
    pub retry_after: Duration,
}

impl Limited {
    pub fn message(&self, what: &str) -> String {
        format!(
            "too many {what} {}; try again in {} ms",
            self.by,
            self.retry_after.as_millis().max(1)
        )
    }
}

/// Charge `ip` one action of `limiter`. The wait is measured on the
/// limiter's own clock, and only when refused: a fresh
/// `DefaultClock::default()` per check calibrated a quanta clock (CPUID
/// and all) for every visitor message, page and HTTP request, 2 % of the
/// server's CPU in a reconnect storm.
fn by_address(limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Result<(), Limited> {
    limiter.check_key(&addr_key(ip)).map_err(|n| Limited {
        by: "from your network address",
        retry_after: n.wait_time_from(limiter.clock().now()),
    })
}

#[derive(Debug)]
struct Pair {
    visitor: DefaultKeyedRateLimiter<String>,
    addr: DefaultKeyedRateLimiter<IpAddr>,
}

impl Pair {
    fn new(visitor: Rate, addr: Rate) -> Self {
        Self {
            visitor: DefaultKeyedRateLimiter::keyed(visitor.quota()),
            addr: DefaultKeyedRateLimiter::keyed(addr.quota()),
        }
    }

    /// Both must allow it; the address is charged only if the visitor was
    /// within its own share, so one greedy visitor does not use up its
    /// neighbours' budget with refused actions.
    fn check(&self, visitor: &str, ip: IpAddr) -> Result<(), Limited> {
        if let Err(n) = self.visitor.check_key(&visitor.to_owned()) {
            return Err(Limited {
                by: "from this visitor",
                retry_after: n.wait_time_from(self.visitor.clock().now()),
            });
        }
        by_address(&self.addr, ip)
    }

    fn prune(&self) {
        self.visitor.retain_recent();
        self.visitor.shrink_to_fit();
        self.addr.retain_recent();
        self.addr.shrink_to_fit();
    }
}

#[derive(Debug)]
pub struct VisitorLimits {
    messages: Pair,
    pages: Pair,
    identifies: Pair,
    new_visitors: DefaultKeyedRateLimiter<IpAddr>,
    http_requests: DefaultKeyedRateLimiter<IpAddr>,
}

impl VisitorLimits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            messages: Pair::new(cfg.visitor_messages, cfg.addr_messages),
            pages: Pair::new(cfg.visitor_pages, cfg.addr_pages),
            identifies: Pair::new(cfg.visitor_identifies, cfg.addr_identifies),
            new_visitors: DefaultKeyedRateLimiter::keyed(cfg.addr_new_visitors.quota()),
            http_requests: DefaultKeyedRateLimiter::keyed(cfg.addr_http_requests.quota()),
        }
    }

    pub fn http_request(&self, ip: IpAddr) -> Result<(), Limited> {
        by_address(&self.http_requests, ip)
    }

    pub fn message(&self, visitor: &str, ip: IpAddr) -> Result<(), Limited> {
        self.messages.check(visitor, ip)
    }

    pub fn page(&self, visitor: &str, ip: IpAddr) -> Result<(), Limited> {
        self.pages.check(visitor, ip)
    }

    pub fn identify(&self, visitor: &str, ip: IpAddr) -> Result<(), Limited> {
        self.identifies.check(visitor, ip)
    }

    pub fn new_visitor(&self, ip: IpAddr) -> Result<(), Limited> {
        by_address(&self.new_visitors, ip)
    }

    /// Forget keys back at a full burst. Run now and then.
    pub fn prune(&self) {
        self.messages.prune();
        self.pages.prune();
        self.identifies.prune();
        self.new_visitors.retain_recent();
        self.new_visitors.shrink_to_fit();
        self.http_requests.retain_recent();
        self.http_requests.shrink_to_fit();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_and_an_address_each_have_their_share() {
        let l = VisitorLimits::new(&LimitsConfig {
            visitor_messages: Rate::new(1.0, 3),
            addr_messages: Rate::new(1.0, 5),
            ..LimitsConfig::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            l.message("a", ip).unwrap();
        }
        let r = l.message("a", ip).unwrap_err();
        assert_eq!(r.by, "from this visitor");
        assert!(r.retry_after > Duration::ZERO);
        // A second visitor on the same address gets the rest of the
        // address's burst, not its own full one.
        l.message("b", ip).unwrap();
        l.message("b", ip).unwrap();
        assert_eq!(
            l.message("b", ip).unwrap_err().by,
            "from your network address"
        );
        // Another address is untouched.
        l.message("c", "10.0.0.2".parse().unwrap()).unwrap();
        l.prune();
    }
}
