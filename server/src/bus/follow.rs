//! What a node's live side does with the bus: one stream that says which
//! recipients to read from the store, combining the three sources that
//! together make delivery independent of Redis:
//! - a wake from another node: read that recipient now (milliseconds);
//! - a gap (the bus resubscribed, or this follower fell behind): read every
//!   live recipient, since wakes were lost;
//! - a timer: poll every [`Health::poll_every`], 250 ms while the bus is
//!   down (the store is then the only path) and 1 s while it is up (a
//!   safety net for a wake Redis dropped silently). The node's live side
//!   answers a poll with one query of the log heads of all its live
//!   recipients and wakes only those whose head moved
//!   (`crate::hub::remote`), not with a read per connection.
//!
//! The reads themselves are cursor reads the store already serves (the
//! events after a recipient's cursor), so a wake that arrives after the
//! poll already delivered its events, or twice, costs one empty read.

use std::sync::Arc;
use std::time::Duration;

use holdfast_protocol::agent::Seq;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{Bus, BusMsg, Changed, Health, PresenceDelta, Received, Recipient, Subscription};

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read this recipient's events from its cursor; another node
    /// committed up to `seq`.
    Wake { recipient: Recipient, seq: Seq },
    /// Another node's live state changed.
    Presence {
        node: Arc<str>,
        delta: PresenceDelta,
    },
    /// A gap: read every live recipient's events from its cursor. A poll:
    /// check every live recipient's log head (see the module docs).
    ReadAll(Why),
    /// A stored record changed on another node: read it again.
    Changed(Changed),
    /// Another node (re)joined or missed messages: announce every entry.
    Hello,
    /// A typing signal from another node, for connections here.
    Typing(crate::bus::TypingSignal),
    /// The bus is up again (both links): what this node published while
    /// it was down was dropped, so it announces its entries and asks the
    /// others for theirs.
    Up,
}

/// Why a [`Next::ReadAll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Wake-ups may have been missed.
    Gap,
    /// The periodic read.
    Poll,
}

/// Follows one bus for one node's live side.
#[derive(Debug)]
pub struct Follower {
    sub: Subscription,
    health: watch::Receiver<Health>,
    tick: Interval,
    current: Health,
    /// The read period while the bus is up and while it is down.
    pace: (Duration, Duration),
    /// False once the bus dropped its health sender (a node leaving a
    /// shared in-process bus): then only the subscription and the timer.
    health_open: bool,
}

impl Follower {
    /// Reads paced by [`Health::poll_every`].
    #[must_use]
    pub fn new(bus: &dyn Bus) -> Self {
        Self::with_pace(bus, Health::Up.poll_every(), Health::Down.poll_every())
    }

    /// Reads every `up` while the bus is up and every `down` while it is
    /// down.
    #[must_use]
    pub fn with_pace(bus: &dyn Bus, up: Duration, down: Duration) -> Self {
        let health = bus.health();
        let current = *health.borrow();
        let pace = (up, down);
        Self {
            sub: bus.subscribe(),
            health,
            tick: Self::timer(pace, current),
            current,
            pace,
            health_open: true,
        }
    }

    fn timer((up, down): (Duration, Duration), h: Health) -> Interval {
        let every = match h {
            Health::Up => up,
            Health::Down => down,
        };
        let mut t = tokio::time::interval_at(Instant::now() + every, every);
        // After a stall, one read covers everything: no burst of reads.
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    }

    /// The bus's health as last seen.
    #[must_use]
    pub fn health(&self) -> Health {
        self.current
    }

    /// The next thing to do; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Next> {
        loop {
            tokio::select! {
                // A health change first, so a tick of the old pace that is
                // due at the same moment does not slip through; the timer
                // before the subscription, so a flood of wakes cannot
                // starve the periodic read.
                biased;
                changed = self.health.changed(), if self.health_open => {
                    if changed.is_err() {
                        self.health_open = false;
                        continue;
                    }
                    let h = *self.health.borrow_and_update();
                    if h != self.current {
                        self.current = h;
                        self.tick = Self::timer(self.pace, h);
                        // From now on wakes are lost: read at once
                        // rather than wait for the first tick.
                        return Some(match h {
                            Health::Down => Next::ReadAll(Why::Gap),
                            Health::Up => Next::Up,
                        });
                    }
                }
                _ = self.tick.tick() => return Some(Next::ReadAll(Why::Poll)),
                r = self.sub.recv() => {
                    return match r? {
                        Received::Gap => Some(Next::ReadAll(Why::Gap)),
                        Received::Msg(m) => Some(match &m.msg {
                            BusMsg::Wake { recipient, seq } => Next::Wake {
                                recipient: recipient.clone(),
                                seq: *seq,
                            },
                            BusMsg::Presence(delta) => Next::Presence {
                                node: m.node.clone(),
                                delta: delta.clone(),
                            },
                            BusMsg::Changed(c) => Next::Changed(c.clone()),
                            BusMsg::Hello => Next::Hello,
                            BusMsg::Typing(t) => Next::Typing(t.clone()),
                        }),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::LocalBus;

    const SLOW: Duration = Duration::from_secs(3600);
    const FAST: Duration = Duration::from_millis(10);
    /// Liveness only: a follower that hangs fails instead of blocking.
    const LIVE: Duration = Duration::from_secs(10);

    fn wake(seq: u64) -> BusMsg {
        BusMsg::Wake {
            recipient: Recipient::Agent(3),
            seq,
        }
    }

    async fn next(f: &mut Follower) -> Next {
        tokio::time::timeout(LIVE, f.next())
            .await
            .expect("the follower hung")
            .expect("the bus closed")
    }

    /// Nothing for a while (the slow timer has not fired).
    async fn nothing(f: &mut Follower) {
        if let Ok(n) = tokio::time::timeout(Duration::from_millis(150), f.next()).await {
            panic!("expected nothing yet, got {n:?}");
        }
    }

    #[tokio::test]
    async fn wakes_come_through_and_the_store_is_read_periodically_anyway() {
        let a = LocalBus::single("a");
        let b = a.join("b");
        let mut f = Follower::with_pace(&b, FAST, SLOW);
        // A new follower has heard nothing: read everything first.
        assert_eq!(next(&mut f).await, Next::ReadAll(Why::Gap));
        a.publish(wake(5));
        let mut got = next(&mut f).await;
        while got == Next::ReadAll(Why::Poll) {
            got = next(&mut f).await;
        }
        assert_eq!(
            got,
            Next::Wake {
                recipient: Recipient::Agent(3),
                seq: 5
            }
        );
        // Our own messages are not for us: only the timer's reads come.
        b.publish(wake(6));
        for _ in 0..3 {
            assert_eq!(next(&mut f).await, Next::ReadAll(Why::Poll));
        }
        assert_eq!(f.health(), Health::Up);
    }

    /// A bus whose health the test sets, to drive the follower's pacing.
    /// The Redis bus's own health, and a follower on it across a real
    /// outage, are tested against a real Redis in tests/tests/bus_redis.rs.
    #[derive(Debug)]
    struct SetHealth {
        inner: LocalBus,
        health: watch::Sender<Health>,
    }

    impl Bus for SetHealth {
        fn node(&self) -> &str {
            self.inner.node()
        }
        fn publish(&self, msg: BusMsg) {
            self.inner.publish(msg);
        }
        fn subscribe(&self) -> Subscription {
            self.inner.subscribe()
        }
        fn health(&self) -> watch::Receiver<Health> {
            self.health.subscribe()
        }
        fn stats(&self) -> crate::bus::StatsSnapshot {
            self.inner.stats()
        }
    }

    #[tokio::test]
    async fn the_pace_follows_the_health() {
        let bus = SetHealth {
            inner: LocalBus::single("a"),
            health: watch::Sender::new(Health::Up),
        };
        let mut f = Follower::with_pace(&bus, SLOW, FAST);
        assert_eq!(next(&mut f).await, Next::ReadAll(Why::Gap));
        nothing(&mut f).await;
        bus.health.send_replace(Health::Down);
        // Going down: read at once, then at the fast pace.
        assert_eq!(next(&mut f).await, Next::ReadAll(Why::Gap));
        assert_eq!(f.health(), Health::Down);
        for _ in 0..3 {
            assert_eq!(next(&mut f).await, Next::ReadAll(Why::Poll));
        }
        // Back up: said once, then the slow safety net again.
        bus.health.send_replace(Health::Up);
        assert_eq!(next(&mut f).await, Next::Up);
        nothing(&mut f).await;
        assert_eq!(f.health(), Health::Up);
    }

    #[test]
    fn the_default_pace_keeps_delivery_within_two_seconds() {
        assert!(Health::Up.poll_every() < Duration::from_secs(2));
        assert!(Health::Down.poll_every() < Health::Up.poll_every());
    }
}
