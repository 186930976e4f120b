//! Who holds the HTTP port's connections, and which one to close when there
//! are too many.
//!
//! Every accepted socket gets a [`Slot`] for as long as its descriptor is
//! open, WebSockets included (the slot travels inside the upgraded stream).
//! Two caps apply: per source address, and in total (the descriptor limit
//! less a reserve). At either cap the server would rather close the oldest
//! connection that has not been answered yet than refuse a new one: such a
//! connection is either a slow client or an attacker's silent socket, and
//! refusing instead would let a few thousand silent sockets lock every new
//! visitor out until their timers run out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::limits::addr_key;
use crate::metrics::Metrics;

/// Connections that were told to close may still hold their descriptors
/// for a moment; a burst of new ones must not push past the cap by more
/// than this while they do.
const CLOSING_SLACK: usize = 64;

#[derive(Debug)]
pub(crate) struct Conns {
    cap: usize,
    per_ip: usize,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Open descriptors, including those told to close.
    total: usize,
    /// Told to close (evicted) but not closed yet.
    closing: usize,
    ips: HashMap<IpAddr, PerAddr>,
    /// (unanswered connections, address): the last entry is the address
    /// holding the most.
    by_unanswered: BTreeSet<(usize, IpAddr)>,
}

#[derive(Debug, Default)]
struct PerAddr {
    open: usize,
    /// Connections with no response yet, oldest first, and how to cut them.
    unanswered: BTreeMap<u64, CancellationToken>,
}

impl Inner {
    fn reindex(&mut self, key: IpAddr, old: usize, new: usize) {
        if old > 0 {
            self.by_unanswered.remove(&(old, key));
        }
        if new > 0 {
            self.by_unanswered.insert((new, key));
        }
    }

    /// Cut the oldest unanswered connection of `key`; false when it has none.
    fn evict_from(&mut self, key: IpAddr) -> bool {
        let Some(p) = self.ips.get_mut(&key) else {
            return false;
        };
        let old = p.unanswered.len();
        let Some((_, cut)) = p.unanswered.pop_first() else {
            return false;
        };
        cut.cancel();
        self.closing += 1;
        self.reindex(key, old, old - 1);
        true
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address has its cap of connections, all of them answered.
    PerIp,
    /// The port has its cap and none of its connections can be spared.
    Full,
}

/// What admitting a connection cost another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    None,
    /// An older unanswered connection from the same address was cut.
    PerIp,
    /// The oldest unanswered connection of the address holding the most
    /// was cut to stay under the descriptor cap.
    Capacity,
}

impl Conns {
    pub(crate) fn new(cap: usize, per_ip: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            cap: cap.max(1),
            per_ip: per_ip.max(1),
            inner: Mutex::new(Inner::default()),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot for a connection from `ip`, cutting an unanswered one
    /// when a cap is reached. `per_ip_cap` false exempts the address from
    /// the per-address cap: a trusted reverse proxy carries every visitor's
    /// connections from its one address.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        per_ip_cap: bool,
    ) -> Result<Admitted, Refusal> {
        let key = addr_key(ip);
        let mut g = self.lock();
        if g.total >= self.cap + CLOSING_SLACK {
            return Err(Refusal::Full);
        }
        let mut eviction = Eviction::None;
        let open_here = g.ips.get(&key).map_or(0, |p| p.open);
        if per_ip_cap && open_here >= self.per_ip {
            if !g.evict_from(key) {
                return Err(Refusal::PerIp);
            }
            eviction = Eviction::PerIp;
        }
        if g.total - g.closing >= self.cap {
            let Some(&(_, victim)) = g.by_unanswered.last() else {
                return Err(Refusal::Full);
            };
            g.evict_from(victim);
            eviction = Eviction::Capacity;
        }
        g.next_id += 1;
        let id = g.next_id;
        let cut = CancellationToken::new();
        let p = g.ips.entry(key).or_default();
        p.open += 1;
        let old = p.unanswered.len();
        p.unanswered.insert(id, cut.clone());
        g.reindex(key, old, old + 1);
        g.total += 1;
        drop(g);
        self.metrics.http.connections.inc();
        Ok(Admitted {
            slot: Arc::new(Slot {
                conns: self.clone(),
                id,
                key,
                answered: AtomicBool::new(false),
            }),
            cut,
            eviction,
        })
    }
}

/// A connection let in.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) slot: Arc<Slot>,
    /// Cancelled when the connection is to be closed at once. Not part of
    /// the slot: the slot lives as long as the socket, WebSockets included,
    /// and only an unanswered connection is ever cut. Kept in the slot, the
    /// token's 112 bytes stayed with every idle visitor.
    pub(crate) cut: CancellationToken,
    pub(crate) eviction: Eviction,
}

/// One open HTTP connection's place under the caps; released when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    conns: Arc<Conns>,
    id: u64,
    key: IpAddr,
    answered: AtomicBool,
}

impl Slot {
    /// The connection has had a response: it is someone's live connection
    /// now, not a candidate for eviction.
    pub(crate) fn answered(&self) {
        if self.answered.load(Ordering::Relaxed) {
            return;
        }
        let mut g = self.conns.lock();
        let Some(p) = g.ips.get_mut(&self.key) else {
            return;
        };
        let old = p.unanswered.len();
        // Absent when it was just evicted: it is closing, leave it so.
        if p.unanswered.remove(&self.id).is_some() {
            g.reindex(self.key, old, old - 1);
            self.answered.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut g = self.conns.lock();
        g.total = g.total.saturating_sub(1);
        let mut gone = false;
        let mut reindex = None;
        if let Some(p) = g.ips.get_mut(&self.key) {
            p.open = p.open.saturating_sub(1);
            if !self.answered.load(Ordering::Relaxed) {
                let old = p.unanswered.len();
                if p.unanswered.remove(&self.id).is_some() {
                    reindex = Some(old);
                }
            }
            gone = p.open == 0;
        }
        match reindex {
            Some(old) => g.reindex(self.key, old, old - 1),
            // Neither answered nor still listed: it was evicted.
            None if !self.answered.load(Ordering::Relaxed) => {
                g.closing = g.closing.saturating_sub(1);
            }
            None => {}
        }
        if gone {
            g.ips.remove(&self.key);
        }
        drop(g);
        self.conns.metrics.http.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn per_address_cap_cuts_the_oldest_unanswered_then_refuses() {
        let c = Conns::new(100, 2, Arc::new(Metrics::default()));
        let a = c.admit(ip(2), true).unwrap();
        let b = c.admit(ip(2), true).unwrap();
        let x = c.admit(ip(2), true).unwrap();
        assert_eq!(x.eviction, Eviction::PerIp);
        assert!(a.cut.is_cancelled() && !b.cut.is_cancelled());
        drop(a);
        b.slot.answered();
        x.slot.answered();
        assert_eq!(c.admit(ip(2), true).unwrap_err(), Refusal::PerIp);
        // Another address is not affected.
        assert!(c.admit(ip(3), true).is_ok());
        // A trusted proxy's address is not held to the per-address cap.
        for _ in 0..4 {
            assert!(c.admit(ip(2), false).is_ok());
        }
    }

    #[test]
    fn the_total_cap_cuts_from_the_address_holding_the_most() {
        let c = Conns::new(4, 100, Arc::new(Metrics::default()));
        let mine = c.admit(ip(1), true).unwrap();
        mine.slot.answered();
        let attack: Vec<_> = (0..3).map(|_| c.admit(ip(9), true).unwrap()).collect();
        let new = c.admit(ip(1), true).unwrap();
        assert_eq!(new.eviction, Eviction::Capacity);
        assert!(attack[0].cut.is_cancelled());
        assert!(!mine.cut.is_cancelled() && !new.cut.is_cancelled());
        drop(attack);
        assert_eq!(c.lock().total, 2);
        assert_eq!(c.lock().closing, 0);
        // All answered: nothing to spare, so a new one is refused.
        new.slot.answered();
        let more: Vec<_> = (0..2)
            .map(|_| {
                let s = c.admit(ip(3), true).unwrap();
                s.slot.answered();
                s
            })
            .collect();
        assert_eq!(c.admit(ip(4), true).unwrap_err(), Refusal::Full);
        drop(more);
        assert!(c.admit(ip(4), true).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(addr_key(a), addr_key(b));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(addr_key(m), IpAddr::from([10, 1, 2, 3]));
    }
}
