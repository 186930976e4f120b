//! The book: everything recorded during a run, shared by all tasks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::checker::{Checker, SendOutcome};
/// A wait for a link's backlog after it was restored.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) since: Instant,
    pub(crate) pending: HashSet<String>,
}

/// Everything recorded during a run, shared by all tasks.
#[derive(Debug, Default)]
pub(crate) struct Book {
    pub(crate) checker: Checker,
    /// body -> the receiver that must apply it.
    pub(crate) receiver_of: HashMap<String, String>,
    pub(crate) acked: HashSet<String>,
    pub(crate) delivered: HashSet<String>,
    /// How often each agent showed each visitor message (stdout).
    pub(crate) shown: HashMap<String, u32>,
    /// Last server message id per receiver, for the commit-order check.
    pub(crate) last_msg_id: HashMap<String, u64>,
    pub(crate) commit_order_violations: usize,
    pub(crate) snapshots: usize,
    pub(crate) probes: Vec<Probe>,
    pub(crate) backlog: Vec<Duration>,
    /// link -> when its blackhole started (cleared on detection or heal).
    pub(crate) blackhole_at: HashMap<String, Instant>,
    pub(crate) agent_dead: Vec<Duration>,
    pub(crate) visitor_dead: Vec<Duration>,
    pub(crate) blackholes_unnoticed: usize,
    /// agent index -> connection state name.
    pub(crate) agent_state: HashMap<usize, String>,
    pub(crate) visitor_live: HashMap<usize, bool>,
    /// Link -> how many times it has become live: a link is back after a
    /// server kill only on a connection made after the kill.
    pub(crate) connections: HashMap<String, u64>,
    pub(crate) visitor_reconnects: usize,
    pub(crate) agent_disconnects: usize,
    pub(crate) agent_rejects: usize,
    pub(crate) visitor_errors: Vec<String>,
    /// Invite bookkeeping during setup: client id -> visitor index.
    pub(crate) invite_ids: HashMap<String, usize>,
    pub(crate) conv_of: HashMap<usize, u64>,
    pub(crate) from_visitors: usize,
    pub(crate) from_agents: usize,
    /// body -> when the harness handed it to its sender.
    pub(crate) sent_at: HashMap<String, Instant>,
    /// body -> when its receiver first applied it.
    pub(crate) applied_at: HashMap<String, Instant>,
    /// When each visitor message was acked by the server (its commit).
    pub(crate) server_acks: Vec<Instant>,
    /// Link -> when it last stopped being live.
    pub(crate) went_down: HashMap<String, Instant>,
}

impl Book {
    pub(crate) fn sent(&mut self, stream: &str, receiver: &str, body: &str) {
        self.checker.sent(stream, body, SendOutcome::Unknown);
        self.sent_at.insert(body.to_string(), Instant::now());
        self.receiver_of
            .insert(body.to_string(), receiver.to_string());
    }

    pub(crate) fn acked(&mut self, body: &str) {
        if self.receiver_of.contains_key(body) {
            self.checker.acked(body);
            self.acked.insert(body.to_string());
        }
    }

    /// A receiver applied `body`, committed as server message `msg_id`.
    pub(crate) fn applied(&mut self, receiver: &str, body: &str, msg_id: u64) {
        let last = self.last_msg_id.entry(receiver.to_string()).or_insert(0);
        if msg_id < *last {
            self.commit_order_violations += 1;
        }
        *last = (*last).max(msg_id);
        let now = Instant::now();
        if self.receiver_of.get(body).is_some_and(|r| r == receiver) {
            self.delivered.insert(body.to_string());
            self.applied_at.entry(body.to_string()).or_insert(now);
        }
        let mut done = Vec::new();
        for (i, p) in self.probes.iter_mut().enumerate() {
            if p.pending.remove(body) && p.pending.is_empty() {
                done.push(i);
                self.backlog.push(now - p.since);
            }
        }
        for i in done.into_iter().rev() {
            self.probes.remove(i);
        }
    }

    /// Start waiting for everything acked for `receivers` and not delivered.
    pub(crate) fn probe(&mut self, receivers: &HashSet<String>) {
        let pending: HashSet<String> = self
            .acked
            .iter()
            .filter(|b| !self.delivered.contains(*b))
            .filter(|b| {
                self.receiver_of
                    .get(*b)
                    .is_some_and(|r| receivers.contains(r))
            })
            .cloned()
            .collect();
        if !pending.is_empty() {
            self.probes.push(Probe {
                since: Instant::now(),
                pending,
            });
        }
    }

    /// Agent messages handed to an agent and not acked yet. Some never
    /// will be (the agent was killed before storing one, or it was
    /// refused), so the drain waits for these only a while.
    pub(crate) fn agent_unacked(&self) -> usize {
        // Agents' messages go to visitors, "v…".
        self.unacked_to('v')
    }

    /// Visitor messages handed to a visitor and not acked yet. A
    /// visitor's outbox survives reconnects and reloads and is resent until
    /// acked, so each of these will be; the book, not the visitor task,
    /// says so, because a task that is reconnecting cannot report what was
    /// queued for it meanwhile.
    pub(crate) fn visitor_unacked(&self) -> usize {
        // Visitors' messages go to agents, "a…<v…".
        self.unacked_to('a')
    }

    /// Messages sent to receivers whose name starts with `kind`, not acked.
    fn unacked_to(&self, kind: char) -> usize {
        self.receiver_of
            .iter()
            .filter(|(body, r)| r.starts_with(kind) && !self.acked.contains(*body))
            .count()
    }

    pub(crate) fn undelivered(&self) -> usize {
        self.acked
            .iter()
            .filter(|b| !self.delivered.contains(*b))
            .count()
    }

    pub(crate) fn link_dead(&mut self, link: &str, agent: bool) {
        if let Some(t) = self.blackhole_at.remove(link) {
            let d = t.elapsed();
            if agent {
                self.agent_dead.push(d);
            } else {
                self.visitor_dead.push(d);
            }
        }
    }
}

pub(crate) type SharedBook = Arc<Mutex<Book>>;

pub(crate) fn lock(b: &SharedBook) -> std::sync::MutexGuard<'_, Book> {
    b.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
