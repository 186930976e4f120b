//! A queue checker in the spirit of Jepsen's: every message has a unique
//! body; senders record what they were told, receivers what they applied.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The sender got an ack: the message must be delivered.
    Acked,
    /// The sender does not know (crash, timeout): delivery is optional.
    Unknown,
}

#[derive(Debug, Default)]
pub struct Checker {
    /// body -> (stream, index in stream, outcome)
    sent: HashMap<String, (String, usize, SendOutcome)>,
    next_index: HashMap<String, usize>,
    /// receiver -> bodies in the order applied
    received: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub sent: usize,
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    pub recovered: usize,
    pub unexpected: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent={} acked={} lost={} duplicated={} reordered={} recovered={} unexpected={}",
            self.sent,
            self.acked,
            self.lost,
            self.duplicated,
            self.reordered,
            self.recovered,
            self.unexpected
        )
    }
}

impl Checker {
    /// Record a send on an ordered `stream` (a conversation direction).
    pub fn sent(&mut self, stream: &str, body: &str, outcome: SendOutcome) {
        let idx = self.next_index.entry(stream.to_string()).or_insert(0);
        let i = *idx;
        *idx += 1;
        self.sent
            .insert(body.to_string(), (stream.to_string(), i, outcome));
    }

    /// Upgrade an unknown outcome once an ack arrives.
    pub fn acked(&mut self, body: &str) {
        if let Some(e) = self.sent.get_mut(body) {
            e.2 = SendOutcome::Acked;
        }
    }

    pub fn received(&mut self, receiver: &str, body: &str) {
        self.received
            .entry(receiver.to_string())
            .or_default()
            .push(body.to_string());
    }

    /// Check every receiver that should have seen `stream`.
    pub fn report(&self, expect: &[(&str, &str)]) -> Report {
        let mut r = Report {
            sent: self.sent.len(),
            acked: self
                .sent
                .values()
                .filter(|s| s.2 == SendOutcome::Acked)
                .count(),
            ..Report::default()
        };
        for (receiver, stream) in expect {
            let got = self.received.get(*receiver).cloned().unwrap_or_default();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            let mut last_index: Option<usize> = None;
            for body in &got {
                let n = seen.entry(body.as_str()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    r.duplicated += 1;
                    continue;
                }
                match self.sent.get(body) {
                    None => r.unexpected += 1,
                    Some((s, i, outcome)) if s == stream => {
                        if last_index.is_some_and(|l| *i < l) {
                            r.reordered += 1;
                        }
                        last_index = Some(*i);
                        if *outcome == SendOutcome::Unknown {
                            r.recovered += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
            for (body, (s, _, outcome)) in &self.sent {
                if s == stream
                    && *outcome == SendOutcome::Acked
                    && !seen.contains_key(body.as_str())
                {
                    r.lost += 1;
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_anomaly() {
        let mut c = Checker::default();
        for b in ["a", "b", "c", "d"] {
            c.sent("s", b, SendOutcome::Acked);
        }
        c.sent("s", "e", SendOutcome::Unknown);
        for b in ["a", "c", "b", "b", "e", "zz"] {
            c.received("r", b);
        }
        let r = c.report(&[("r", "s")]);
        assert_eq!(r.lost, 1, "{r}");
        assert_eq!(r.duplicated, 1, "{r}");
        assert_eq!(r.reordered, 1, "{r}");
        assert_eq!(r.recovered, 1, "{r}");
        assert_eq!(r.unexpected, 1, "{r}");
    }
}
