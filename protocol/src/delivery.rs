//! Sans-IO delivery state machines, used on both channels.
//!
//! - [`Outbox`] is the sender side of an upstream stream: it numbers items,
//!   remembers every unacked one, hands them out for transmission in order,
//!   rewinds on reconnect, and forgets them only on a cumulative ack.
//! - [`Inbox`] is the receiver side of a downstream stream: it holds the
//!   cursor, tells duplicates from new events, refuses gaps, and batches
//!   cumulative acks by count and by time.
//!
//! Persistence is the caller's: write an item to the durable outbox before
//! [`Outbox::push`] returns it for sending, and store the cursor in the same
//! transaction as the data before calling [`Inbox::applied`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::agent::Seq;

/// An ack that acknowledges something never sent: the peer is broken or
/// confused, and the connection must be reset.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ack up to {acked} but only {sent} items were ever numbered")]
pub struct AckBeyondSent {
    pub acked: Seq,
    pub sent: Seq,
}

/// The sender side.
#[derive(Debug, Clone)]
pub struct Outbox<T> {
    /// Seq the next pushed item gets.
    next_seq: Seq,
    /// Highest seq acked by the peer.
    acked: Seq,
    /// Unacked items in seq order.
    pending: VecDeque<(Seq, T)>,
    /// How many of `pending` were handed out on the current connection.
    transmitted: usize,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Outbox<T> {
    pub fn new() -> Self {
        Self {
            next_seq: 1,
            acked: 0,
            pending: VecDeque::new(),
            transmitted: 0,
        }
    }

    /// Rebuild from a durable outbox after a restart. `acked` is the highest
    /// seq known to be acked; `items` are the unacked entries in seq order.
    pub fn restore(acked: Seq, items: impl IntoIterator<Item = (Seq, T)>) -> Self {
        let pending: VecDeque<(Seq, T)> = items.into_iter().filter(|(s, _)| *s > acked).collect();
        let next_seq = pending.back().map_or(acked, |(s, _)| *s).max(acked) + 1;
        Self {
            next_seq,
            acked,
            pending,
            transmitted: 0,
        }
    }

    /// The seq the next [`Outbox::push`] will assign. Persist the item under
    /// this seq *before* pushing it.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Add an item; returns its seq.
    pub fn push(&mut self, item: T) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back((seq, item));
        seq
    }

    /// The next item to transmit on the current connection, in order.
    pub fn poll_transmit(&mut self) -> Option<(Seq, &T)> {
        let (seq, item) = self.pending.get(self.transmitted)?;
        self.transmitted += 1;
        Some((*seq, item))
    }

    /// The connection dropped: everything unacked will be handed out again.
    pub fn on_reconnect(&mut self) {
        self.transmitted = 0;
    }

    /// A cumulative ack. Returns the items it newly acknowledged (empty for a
    /// duplicate or stale ack).
    pub fn on_ack(&mut self, up_to: Seq) -> Result<Vec<(Seq, T)>, AckBeyondSent> {
        if up_to >= self.next_seq {
            return Err(AckBeyondSent {
                acked: up_to,
                sent: self.next_seq - 1,
            });
        }
        if up_to <= self.acked {
            return Ok(Vec::new());
        }
        self.acked = up_to;
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|(s, _)| *s <= up_to) {
            if let Some(item) = self.pending.pop_front() {
                done.push(item);
            }
            self.transmitted = self.transmitted.saturating_sub(1);
        }
        Ok(done)
    }

    pub fn acked(&self) -> Seq {
        self.acked
    }

    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// Items handed out on this connection and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.transmitted
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Seq, T)> {
        self.pending.iter()
    }
}

/// When to send a cumulative ack.
#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    /// Ack at most this long after the first unacked applied event.
    pub max_delay: Duration,
    /// Ack at once when this many events are waiting.
    pub max_batch: u64,
}

impl Default for AckPolicy {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_millis(50),
            max_batch: 64,
        }
    }
}

/// What to do with a received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New and next in line: apply it, store the cursor with it, then call
    /// [`Inbox::applied`].
    Apply,
    /// Already applied: drop it (but the ack still goes out, so a sender that
    /// missed our ack stops resending).
    Duplicate,
}

/// An event arrived out of order: events were lost in between. The stream
/// must be reset and resumed from the cursor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected seq {expected}, got {got}: events are missing; resume from the cursor")]
pub struct Gap {
    pub expected: Seq,
    pub got: Seq,
}

/// The receiver side.
#[derive(Debug, Clone)]
pub struct Inbox {
    cursor: Seq,
    acked: Seq,
    first_unacked_at: Option<Instant>,
    ack_due_now: bool,
    /// The latest time we were told, so a due-now ack can be scheduled
    /// without reading the clock.
    last_now: Option<Instant>,
    policy: AckPolicy,
}

impl Inbox {
    /// Start from the cursor stored with the local data.
    pub fn new(cursor: Seq, policy: AckPolicy) -> Self {
        Self {
            cursor,
            acked: cursor,
            first_unacked_at: None,
            ack_due_now: false,
            last_now: None,
            policy,
        }
    }

    /// The last applied seq: send it when resuming.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// Classify an incoming event.
    pub fn check(&mut self, seq: Seq) -> Result<Verdict, Gap> {
        if seq <= self.cursor {
            // Re-ack promptly: the peer resent because it missed our ack.
            self.ack_due_now = true;
            return Ok(Verdict::Duplicate);
        }
        if seq != self.cursor + 1 {
            return Err(Gap {
                expected: self.cursor + 1,
                got: seq,
            });
        }
        Ok(Verdict::Apply)
    }

    /// The event `seq` (just approved by [`Inbox::check`]) is applied and
    /// durable.
    pub fn applied(&mut self, seq: Seq, now: Instant) {
        self.last_now = Some(now);
        if seq == self.cursor + 1 {
            self.cursor = seq;
            self.first_unacked_at.get_or_insert(now);
        }
    }

    /// Jump the cursor (after applying a snapshot).
    pub fn reset_to(&mut self, seq: Seq, now: Instant) {
        self.last_now = Some(now);
        self.cursor = seq;
        self.acked = self.acked.min(seq);
        self.first_unacked_at = Some(now);
        self.ack_due_now = true;
    }

    /// A new connection: the resume cursor does the job of any pending ack.
    pub fn on_reconnect(&mut self) {
        self.acked = self.cursor;
        self.first_unacked_at = None;
        self.ack_due_now = false;
    }

    /// A cumulative ack to send now, if one is due.
    pub fn poll_ack(&mut self, now: Instant) -> Option<Seq> {
        self.last_now = Some(now);
        let waiting = self.cursor - self.acked;
        let by_time = self
            .first_unacked_at
            .is_some_and(|t| now.saturating_duration_since(t) >= self.policy.max_delay);
        if (waiting > 0 && (waiting >= self.policy.max_batch || by_time)) || self.ack_due_now {
            self.acked = self.cursor;
            self.first_unacked_at = None;
            self.ack_due_now = false;
            return Some(self.cursor);
        }
        None
    }

    /// When [`Inbox::poll_ack`] will next have something, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ack_due_now {
            // Due already: any instant not in the future will do. A driver
            // that has never passed a time polls after each frame anyway.
            return self.first_unacked_at.or(self.last_now);
        }
        self.first_unacked_at.map(|t| t + self.policy.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_resends_in_order_and_forgets_only_on_ack() {
        let mut o = Outbox::new();
        for c in ['a', 'b', 'c'] {
            o.push(c);
        }
        assert_eq!(o.poll_transmit(), Some((1, &'a')));
        assert_eq!(o.poll_transmit(), Some((2, &'b')));
        o.on_reconnect();
        assert_eq!(o.poll_transmit(), Some((1, &'a')));
        assert_eq!(o.on_ack(1).unwrap(), vec![(1, 'a')]);
        assert_eq!(o.on_ack(1).unwrap(), vec![]);
        assert_eq!(o.on_ack(0).unwrap(), vec![]);
        assert_eq!(o.poll_transmit(), Some((2, &'b')));
        assert_eq!(o.poll_transmit(), Some((3, &'c')));
        assert_eq!(o.poll_transmit(), None);
        assert_eq!(o.on_ack(9), Err(AckBeyondSent { acked: 9, sent: 3 }));
        assert_eq!(o.on_ack(3).unwrap().len(), 2);
        assert_eq!(o.unacked(), 0);
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn outbox_restore_continues_numbering() {
        let mut o = Outbox::restore(4, vec![(5, 'x'), (6, 'y')]);
        assert_eq!(o.next_seq(), 7);
        assert_eq!(o.poll_transmit(), Some((5, &'x')));
        let empty: Outbox<char> = Outbox::restore(9, vec![]);
        assert_eq!(empty.next_seq(), 10);
    }

    #[test]
    fn inbox_batches_by_count_and_time() {
        let t0 = Instant::now();
        let mut i = Inbox::new(
            0,
            AckPolicy {
                max_delay: Duration::from_millis(50),
                max_batch: 3,
            },
        );
        for s in 1..=2 {
            assert_eq!(i.check(s), Ok(Verdict::Apply));
            i.applied(s, t0);
        }
        assert_eq!(i.poll_ack(t0), None);
        assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(i.poll_ack(t0 + Duration::from_millis(50)), Some(2));
        for s in 3..=5 {
            i.check(s).unwrap();
            i.applied(s, t0);
        }
        assert_eq!(i.poll_ack(t0), Some(5));
        assert_eq!(i.check(4), Ok(Verdict::Duplicate));
        assert_eq!(i.poll_ack(t0), Some(5));
        assert_eq!(
            i.check(7),
            Err(Gap {
                expected: 6,
                got: 7
            })
        );
    }
}
