//! The in-process bus: a broadcast channel, no encoding, no network. A
//! single node (the default) publishes into a channel nobody else listens
//! on, which costs a few atomic operations; several "nodes" in one test
//! process can share one with [`LocalBus::join`].

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::{
    Bus, BusMsg, BusStats, Delivery, Health, Incoming, SUBSCRIBER_BUFFER, StatsSnapshot,
    Subscription, instance_id,
};

/// One node's handle on an in-process bus.
#[derive(Debug)]
pub struct LocalBus {
    node: Arc<str>,
    instance: u64,
    tx: broadcast::Sender<Delivery>,
    stats: Arc<BusStats>,
    // Always up: kept so `health()` can hand out receivers.
    health: watch::Sender<Health>,
}

impl LocalBus {
    /// A bus of one node.
    #[must_use]
    pub fn single(node: &str) -> Self {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        Self::on(tx, node)
    }

    /// Another node on the same in-process bus as `self`.
    #[must_use]
    pub fn join(&self, node: &str) -> Self {
        Self::on(self.tx.clone(), node)
    }

    fn on(tx: broadcast::Sender<Delivery>, node: &str) -> Self {
        Self {
            node: node.into(),
            instance: instance_id(),
            tx,
            stats: Arc::default(),
            health: watch::Sender::new(Health::Up),
        }
    }
}

impl Bus for LocalBus {
    fn node(&self) -> &str {
        &self.node
    }

    fn publish(&self, msg: BusMsg) {
        let inc = Arc::new(Incoming {
            node: self.node.clone(),
            msg,
        });
        // An error only means nobody subscribes (a single node): nothing
        // to deliver, nothing lost.
        let _nobody = self.tx.send(Delivery::Msg {
            instance: self.instance,
            inc,
        });
        BusStats::add(&self.stats.published, 1);
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.tx.subscribe(), self.instance, self.stats.clone())
    }

    fn health(&self) -> watch::Receiver<Health> {
        self.health.subscribe()
    }

    fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Received, Recipient};

    fn wake(seq: u64) -> BusMsg {
        BusMsg::Wake {
            recipient: Recipient::Agent(1),
            seq,
        }
    }

    #[tokio::test]
    async fn nodes_hear_each_other_but_not_themselves() {
        let a = LocalBus::single("a");
        let b = a.join("b");
        let mut sa = a.subscribe();
        let mut sb = b.subscribe();
        // A new subscription has heard nothing yet.
        assert_eq!(sa.recv().await, Some(Received::Gap));
        assert_eq!(sb.recv().await, Some(Received::Gap));
        a.publish(wake(1));
        b.publish(wake(2));
        let Some(Received::Msg(m)) = sb.recv().await else {
            panic!("b got nothing")
        };
        assert_eq!((&*m.node, &m.msg), ("a", &wake(1)));
        let Some(Received::Msg(m)) = sa.recv().await else {
            panic!("a got nothing")
        };
        assert_eq!((&*m.node, &m.msg), ("b", &wake(2)));
        // Nothing else is pending for either: each skipped its own.
        for s in [&mut sa, &mut sb] {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), s.recv())
                    .await
                    .is_err()
            );
        }
        assert_eq!(a.stats().own_skipped, 1);
        assert_eq!(*a.health().borrow(), Health::Up);
    }

    #[tokio::test]
    async fn a_single_node_publishes_into_nothing_without_error() {
        let a = LocalBus::single("solo");
        for i in 0..10 {
            a.publish(wake(i));
        }
        assert_eq!(a.stats().published, 10);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_a_gap() {
        let a = LocalBus::single("a");
        let b = a.join("b");
        let mut sb = b.subscribe();
        assert_eq!(sb.recv().await, Some(Received::Gap));
        for i in 0..(SUBSCRIBER_BUFFER as u64 + 10) {
            a.publish(wake(i));
        }
        assert_eq!(sb.recv().await, Some(Received::Gap));
        assert_eq!(b.stats().lagged, 10);
    }
}
