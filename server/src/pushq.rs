//! A small bounded queue from the hub to one live connection.
//!
//! Every visitor tab and agent device holds one, so its empty size is paid
//! once per connection: at 15,000 idle visitors tokio's `mpsc` cost about
//! 1 KB each (a cache-padded channel plus a first block of 32 slots), the
//! biggest item after the session task itself. This one is a `VecDeque`
//! and the receiver's waker under a mutex: about 120 bytes until something
//! is queued. A waker rather than a `Notify`: waiting on a `Notify` keeps a
//! 72-byte `Notified` in the receiving task, in every idle visitor's future.
//!
//! One sender (the hub's entry), one receiver (the connection task). The
//! hub only ever calls `try_send`: a full queue is the hub's signal to cut
//! or mark the connection, never to wait. "Full" means any of: as many
//! items as its capacity, as many bytes as its byte budget (a count alone
//! let one agent that never read hold 600 MB of visitor updates), or no
//! item taken for longer than its stall limit (a consumer that stopped
//! reading is cut by age, not only by size). The queue also carries the hub's
//! two other signals to the connection, a kick (go away now) and a stale
//! mark (presence was dropped; resend the list), so that a connection needs
//! no cancellation token or flag of its own.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::task::{Context, Poll, Waker};

/// What an item costs in memory, roughly: its encoded size is close enough.
pub trait Weigh {
    fn weight(&self) -> usize;

    /// Whether the item may be dropped from a full queue to make room for
    /// one that may not (see [`Sender::try_send_shedding`]): state that a
    /// newer copy supersedes, never a durable event.
    fn sheddable(&self) -> bool {
        false
    }
}

impl Weigh for u32 {
    fn weight(&self) -> usize {
        4
    }
}

/// A queue's limits.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub items: usize,
    pub bytes: usize,
    /// How long items may wait with none taken.
    pub stall: Duration,
}

impl Bounds {
    /// A bound on the count only (tests, and callers that weigh nothing).
    pub fn items(n: usize) -> Self {
        Self {
            items: n,
            bytes: usize::MAX,
            stall: Duration::MAX,
        }
    }
}

/// Why `try_send` did not queue the item.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds its capacity already.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// What `recv` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv<T> {
    Item(T),
    /// The hub cut this connection (queue full, or shutdown): stop now,
    /// even with items still queued; the client resumes from its cursor.
    Kicked,
    /// The sender is gone and the queue drained.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<(T, u32)>,
    bounds: Bounds,
    bytes: usize,
    /// Since when items have waited with none taken.
    stalled_since: Option<Instant>,
    sender_gone: bool,
    receiver_gone: bool,
    kicked: bool,
    stale: bool,
    /// The receiver's task, while it waits for one of the above to change.
    waker: Option<Waker>,
}

/// Whether an item of some weight fits a queue now.
#[derive(Debug, PartialEq, Eq)]
enum Room {
    Yes,
    /// Full by count or bytes: shedding may make room.
    NotBySize,
    /// No item taken for longer than the stall limit: the consumer
    /// stopped reading, and nothing makes room for it.
    NotStalled,
}

impl<T> State<T> {
    fn full_for(&self, weight: usize) -> Room {
        if self.items.is_empty() {
            return Room::Yes;
        }
        let b = self.bounds;
        if self.stalled_since.is_some_and(|t| t.elapsed() >= b.stall) {
            Room::NotStalled
        } else if self.items.len() >= b.items || self.bytes.saturating_add(weight) > b.bytes {
            Room::NotBySize
        } else {
            Room::Yes
        }
    }
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock leaves a consistent deque behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hub's end.
#[derive(Debug)]
pub struct Sender<T>(Arc<Shared<T>>);

/// The connection's end.
#[derive(Debug)]
pub struct Receiver<T>(Arc<Shared<T>>);

/// A queue that holds at most `cap` items (at least one).
pub fn channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    bounded(Bounds::items(cap))
}

/// A queue within `bounds` (at least one item fits, whatever its weight).
pub fn bounded<T>(bounds: Bounds) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            bounds: Bounds {
                items: bounds.items.max(1),
                ..bounds
            },
            bytes: 0,
            stalled_since: None,
            sender_gone: false,
            receiver_gone: false,
            kicked: false,
            stale: false,
            waker: None,
        }),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// A deque that grew past this during a burst is freed once drained, so a
/// busy agent's burst does not stay resident for the rest of its session.
const KEEP_CAPACITY: usize = 64;

impl<T: Weigh> Sender<T> {
    pub fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let waiting = {
            let mut st = self.0.lock();
            if st.receiver_gone {
                return Err(TrySendError::Closed(item));
            }
            let w = item.weight();
            if st.full_for(w) != Room::Yes {
                return Err(TrySendError::Full(item));
            }
            if st.items.is_empty() {
                st.stalled_since = Some(Instant::now());
            }
            st.bytes = st.bytes.saturating_add(w);
            st.items
                .push_back((item, u32::try_from(w).unwrap_or(u32::MAX)));
            // Checking the queue and leaving a waker happen under this same
            // lock, so a receiver that found it empty is woken by this.
            st.waker.take()
        };
        wake(waiting);
        Ok(())
    }

    /// As [`Sender::try_send`], but a queue full by count or bytes first
    /// drops its sheddable items to make room; true when it dropped any.
    /// Without this, 5,000 visitors reconnecting at once filled an agent's
    /// queue with their presence changes, and the next chat message to it
    /// cut the agent, which had to log in and resume in the middle of the
    /// storm. A stalled queue (a consumer that stopped reading) sheds
    /// nothing: it is cut as before.
    pub fn try_send_shedding(&self, item: T) -> Result<bool, TrySendError<T>> {
        let shed = {
            let mut st = self.0.lock();
            if st.full_for(item.weight()) == Room::NotBySize && !st.receiver_gone {
                let before = st.items.len();
                st.items.retain(|(i, _)| !i.sheddable());
                st.bytes = st.items.iter().map(|(_, w)| *w as usize).sum();
                if st.items.is_empty() {
                    st.stalled_since = None;
                }
                st.items.len() < before
            } else {
                false
            }
        };
        self.try_send(item).map(|()| shed)
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.0.lock().bytes
    }
}

impl<T> Sender<T> {
    /// Tell the connection to go away; `recv` answers `Kicked` from now on.
    pub fn kick(&self) {
        let waiting = {
            let mut st = self.0.lock();
            st.kicked = true;
            st.waker.take()
        };
        wake(waiting);
    }

    /// Mark the connection stale; true if it was not already.
    pub fn mark_stale(&self) -> bool {
        !std::mem::replace(&mut self.0.lock().stale, true)
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.0.lock();
            st.sender_gone = true;
            st.waker.take()
        };
        wake(waiting);
    }
}

impl<T> Receiver<T> {
    /// The next item, a kick, or the end. Cancel-safe: an item leaves the
    /// queue only when it is returned.
    pub fn recv(&mut self) -> impl Future<Output = Recv<T>> + '_ {
        std::future::poll_fn(|cx| self.poll_recv(cx))
    }

    /// As [`Receiver::recv`], polled: when nothing is there, the task is
    /// woken by the next item, kick or end.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Recv<T>> {
        let mut st = self.0.lock();
        if st.kicked {
            return Poll::Ready(Recv::Kicked);
        }
        if let Some(item) = pop(&mut st) {
            return Poll::Ready(Recv::Item(item));
        }
        if st.sender_gone {
            return Poll::Ready(Recv::Closed);
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item if one is queued now (none once kicked).
    pub fn try_recv(&mut self) -> Option<T> {
        let mut st = self.0.lock();
        if st.kicked { None } else { pop(&mut st) }
    }

    /// Whether the hub has kicked this connection.
    pub fn is_kicked(&self) -> bool {
        self.0.lock().kicked
    }

    /// Clear the stale mark; true if it was set.
    pub fn take_stale(&self) -> bool {
        std::mem::take(&mut self.0.lock().stale)
    }
}

fn pop<T>(st: &mut State<T>) -> Option<T> {
    let (item, w) = st.items.pop_front()?;
    st.bytes = st.bytes.saturating_sub(w as usize);
    if st.items.is_empty() {
        st.stalled_since = None;
        if st.items.capacity() > KEEP_CAPACITY {
            st.items = VecDeque::new();
        }
    } else {
        st.stalled_since = Some(Instant::now());
    }
    Some(item)
}

/// Wake a receiver that was waiting, outside the queue's lock (its task may
/// run at once, on another thread, and take the lock).
fn wake(waiting: Option<Waker>) {
    if let Some(w) = waiting {
        w.wake();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.receiver_gone = true;
        st.items = VecDeque::new();
        st.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_up_to_the_capacity() {
        let (tx, mut rx) = channel(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.recv().await, Recv::Item(0));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.recv().await, Recv::Item(2));
        assert_eq!(rx.recv().await, Recv::Item(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_later_send() {
        let (tx, mut rx) = channel(1);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.try_send(7).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Recv::Item(7));
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (tx, mut rx) = channel(4);
        // Dropped while waiting, as a select! loop drops its losing arms.
        let timed_out = tokio::time::timeout(Duration::from_millis(10), rx.recv()).await;
        assert!(timed_out.is_err());
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(rx.recv().await, Recv::Item(1));
        assert_eq!(rx.recv().await, Recv::Item(2));
    }

    #[tokio::test]
    async fn the_receiver_drains_then_sees_the_sender_gone() {
        let (tx, mut rx) = channel(4);
        tx.try_send(1).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Recv::Item(1));
        assert_eq!(rx.recv().await, Recv::Closed);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_when_the_sender_goes() {
        let (tx, mut rx) = channel::<u32>(4);
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(tx);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Recv::Closed);
    }

    #[tokio::test]
    async fn a_kick_wakes_the_receiver_and_goes_before_queued_items() {
        let (tx, mut rx) = channel(4);
        tx.try_send(1).unwrap();
        assert_eq!(rx.recv().await, Recv::Item(1));
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await;
            (first, rx)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.kick();
        let (first, mut rx) = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, Recv::Kicked);
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), None);
        assert_eq!(rx.recv().await, Recv::Kicked);
        assert!(rx.is_kicked());
    }

    #[test]
    fn the_stale_mark_is_set_once_and_taken_once() {
        let (tx, rx) = channel::<u32>(4);
        assert!(!rx.take_stale());
        assert!(tx.mark_stale());
        assert!(!tx.mark_stale());
        assert!(rx.take_stale());
        assert!(!rx.take_stale());
    }

    #[test]
    fn sending_to_a_dropped_receiver_is_closed() {
        let (tx, rx) = channel(4);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }

    #[test]
    fn bytes_and_stalls_fill_a_queue_too() {
        let (tx, mut rx) = bounded::<u32>(Bounds {
            items: 100,
            bytes: 10,
            stall: Duration::from_millis(50),
        });
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.queued_bytes(), 8);
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)), "over 10 bytes");
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(3).unwrap();
        // Nothing taken for longer than the stall limit: full, whatever
        // the room.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(rx.try_recv(), Some(2));
        tx.try_send(4).ok();
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(tx.try_send(5), Err(TrySendError::Full(5))));
        // One item always fits an empty queue, however heavy.
        while rx.try_recv().is_some() {}
        assert_eq!(tx.queued_bytes(), 0);
        tx.try_send(6).unwrap();
    }

    /// A test item: odd ones are sheddable.
    #[derive(Debug, PartialEq, Eq)]
    struct Item(u32);

    impl Weigh for Item {
        fn weight(&self) -> usize {
            4
        }
        fn sheddable(&self) -> bool {
            self.0 % 2 == 1
        }
    }

    #[test]
    fn a_full_queue_sheds_what_may_be_dropped_for_what_may_not() {
        let (tx, mut rx) = bounded::<Item>(Bounds {
            items: 3,
            bytes: usize::MAX,
            stall: Duration::from_millis(50),
        });
        for i in [1, 2, 3] {
            tx.try_send(Item(i)).unwrap();
        }
        assert_eq!(tx.try_send(Item(4)), Err(TrySendError::Full(Item(4))));
        // 1 and 3 make room for 4; the order of the rest is kept.
        assert_eq!(tx.try_send_shedding(Item(4)), Ok(true));
        assert_eq!(tx.queued_bytes(), 8);
        tx.try_send_shedding(Item(6)).unwrap();
        // Nothing left to shed: full is full.
        assert_eq!(
            tx.try_send_shedding(Item(8)),
            Err(TrySendError::Full(Item(8)))
        );
        assert_eq!(rx.try_recv(), Some(Item(2)));
        assert_eq!(tx.try_send_shedding(Item(8)), Ok(false));
        let drained: Vec<_> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(drained, [Item(4), Item(6), Item(8)]);
        // A consumer that stopped reading sheds nothing: it is cut.
        for i in [1, 3, 5] {
            tx.try_send(Item(i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(
            tx.try_send_shedding(Item(2)),
            Err(TrySendError::Full(Item(2)))
        );
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = channel(4096);
        for i in 0..1000 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(tx.0.lock().items.capacity(), 0);
    }
}
