//! Queue position and wait for waiting visitors (PROTOCOL.md 10.14).
//!
//! [`estimate`] is the rule, without I/O. [`watch`] reads the waiting
//! chats once a second and hands each local waiting visitor its place
//! through the hub, which sends it only when it changed. Reading the
//! shared store, rather than following the writer's effects, is what makes
//! it right on every node of a cluster: a chat taken on one node moves the
//! queue of visitors connected to all of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_protocol::agent::SiteId;

use crate::Ctx;
use crate::store::reads;

/// How often each node reads the queue.
pub const TICK: Duration = Duration::from_secs(1);
/// Recent waits older than this say little about the queue's pace now.
const WINDOW_MS: i64 = 2 * 3600 * 1000;
/// How many recent waits the estimate takes.
const SAMPLES: usize = 20;
/// Fewer real waits than this give no estimate.
const MIN_SAMPLES: usize = 3;

/// A waiting visitor's place: 1 is next; `wait_ms` is the estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub position: u32,
    pub wait_ms: Option<u64>,
}

impl Place {
    /// Whether a visitor told `old` should be told `self`: a new position
    /// always, an estimate only once it moved by 15 s, so an estimate that
    /// drifts by a second each tick does not become a message each second.
    pub fn worth_sending_over(&self, old: Option<&Place>) -> bool {
        let Some(old) = old else { return true };
        if self.position != old.position {
            return true;
        }
        match (self.wait_ms, old.wait_ms) {
            (Some(a), Some(b)) => a.abs_diff(b) >= 15_000,
            (a, b) => a.is_some() != b.is_some(),
        }
    }
}

/// The wait for `position` from recent real waits, each (waited ms, place
/// on entering the queue): `position` times the median time per place,
/// rounded up to whole seconds; `None` with fewer than three waits.
pub fn estimate(waits: &[(i64, i64)], position: u32) -> Option<u64> {
    let mut per_place: Vec<u64> = waits
        .iter()
        .filter_map(|&(w, place)| {
            let w = u64::try_from(w).ok().filter(|w| *w > 0)?;
            Some(w / u64::try_from(place.max(1)).unwrap_or(1))
        })
        .collect();
    if per_place.len() < MIN_SAMPLES {
        return None;
    }
    per_place.sort_unstable();
    let n = per_place.len();
    let median = if n % 2 == 1 {
        per_place[n / 2]
    } else {
        (per_place[n / 2 - 1] + per_place[n / 2]) / 2
    };
    let ms = median.saturating_mul(u64::from(position.max(1)));
    Some(ms.div_ceil(1000).saturating_mul(1000))
}

/// A queue: a site's chats for one group (`None`: for the whole site).
pub type QueueKey = (SiteId, Option<String>);

/// Every waiting chat's place, by visitor, from the waiting chats in
/// serving order and each queue's recent waits. A chat's place counts only
/// the chats of its own queue ahead of it (10.23): a billing visitor does
/// not wait behind the sales chats.
pub fn places(
    queued: &[reads::Queued],
    waits: &HashMap<QueueKey, Vec<(i64, i64)>>,
) -> HashMap<String, Place> {
    let mut out = HashMap::with_capacity(queued.len());
    let mut counts: HashMap<QueueKey, u32> = HashMap::new();
    for (s, _, visitor, group) in queued {
        let key = (*s, group.clone());
        let position = counts.entry(key.clone()).or_insert(0);
        *position += 1;
        let position = *position;
        let wait_ms = waits.get(&key).and_then(|w| estimate(w, position));
        out.insert(visitor.clone(), Place { position, wait_ms });
    }
    out
}

/// Reads the queue every [`TICK`] and gives the hub each waiting visitor's
/// place. A failed read is logged and tried again next tick: the signal is
/// a courtesy, and the chat itself is safe in the store.
pub async fn watch(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let since = crate::store::now_ms() - WINDOW_MS;
        let read = ctx
            .reads
            .run(move |c| {
                let queued = reads::queued(c)?;
                let mut waits: HashMap<QueueKey, _> = HashMap::new();
                for (site, _, _, group) in &queued {
                    if let std::collections::hash_map::Entry::Vacant(e) =
                        waits.entry((*site, group.clone()))
                    {
                        e.insert(reads::recent_waits(
                            c,
                            *site,
                            group.as_deref(),
                            since,
                            SAMPLES,
                        )?);
                    }
                }
                Ok((queued, waits))
            })
            .await;
        match read {
            Ok((queued, waits)) => ctx.hub.set_queue(places(&queued, &waits)),
            Err(e) => tracing::debug!("reading the queue failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_is_the_position_times_the_median_time_per_place() {
        // 60 s at place 1, 120 s at place 2, 90 s at place 1 (90 s a
        // place), 400 s at place 4 (100): per place 60, 60, 90, 100: the
        // median is 75 s.
        let waits = [(60_000, 1), (120_000, 2), (90_000, 1), (400_000, 4)];
        assert_eq!(estimate(&waits, 1), Some(75_000));
        assert_eq!(estimate(&waits, 3), Some(225_000));
        // Odd count: the middle one.
        assert_eq!(estimate(&waits[..3], 2), Some(120_000));
        // Rounded up to whole seconds.
        assert_eq!(
            estimate(&[(1_500, 1), (1_500, 1), (1_500, 1)], 1),
            Some(2_000)
        );
    }

    #[test]
    fn too_few_waits_give_no_estimate() {
        assert_eq!(estimate(&[], 1), None);
        assert_eq!(estimate(&[(60_000, 1), (60_000, 1)], 1), None);
        // A place of 0 (never recorded right) counts as 1, not a division
        // by zero.
        assert_eq!(
            estimate(&[(60_000, 0), (60_000, 1), (60_000, 1)], 2),
            Some(120_000)
        );
    }

    #[test]
    fn positions_count_per_group_in_queue_order() {
        let q = |site, id, v: &str, g: Option<&str>| (site, id, v.to_string(), g.map(String::from));
        let queued = vec![
            q(1, 10, "x", Some("billing")),
            q(1, 11, "y", Some("sales")),
            q(1, 12, "z", Some("billing")),
            q(1, 13, "w", None),
        ];
        let mut waits = HashMap::new();
        waits.insert((1, Some("billing".to_string())), vec![(10_000, 1); 3]);
        let p = places(&queued, &waits);
        assert_eq!(p["x"].position, 1);
        assert_eq!(p["y"].position, 1, "sales waits behind no billing chat");
        assert_eq!(
            p["z"],
            Place {
                position: 2,
                wait_ms: Some(20_000)
            }
        );
        assert_eq!(p["w"].position, 1);
        assert_eq!(
            p["y"].wait_ms, None,
            "billing's pace says nothing of sales'"
        );
    }

    #[test]
    fn positions_count_per_site_in_queue_order() {
        let q = vec![
            (1, 10, "a".to_string(), None),
            (1, 12, "b".to_string(), None),
            (2, 11, "c".to_string(), None),
            (2, 13, "d".to_string(), None),
            (2, 14, "e".to_string(), None),
        ];
        let mut waits = HashMap::new();
        waits.insert((2, None), vec![(30_000, 1); 3]);
        let p = places(&q, &waits);
        assert_eq!(
            p["a"],
            Place {
                position: 1,
                wait_ms: None
            }
        );
        assert_eq!(
            p["b"],
            Place {
                position: 2,
                wait_ms: None
            }
        );
        assert_eq!(p["c"].position, 1);
        assert_eq!(
            p["e"],
            Place {
                position: 3,
                wait_ms: Some(90_000)
            }
        );
    }

    #[test]
    fn only_real_changes_are_sent() {
        let p = |position, wait_ms| Place { position, wait_ms };
        assert!(p(2, None).worth_sending_over(None));
        assert!(p(1, None).worth_sending_over(Some(&p(2, None))));
        assert!(!p(2, Some(60_000)).worth_sending_over(Some(&p(2, Some(50_000)))));
        assert!(p(2, Some(65_000)).worth_sending_over(Some(&p(2, Some(50_000)))));
        assert!(p(2, Some(60_000)).worth_sending_over(Some(&p(2, None))));
    }
}
