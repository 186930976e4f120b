//! The hub's side of a commit: the effects of a committed batch reach the
//! live connections here (and, with a bus, the other nodes: a wake-up per
//! recipient, and a "re-read it" note for each changed team row, visitor
//! record or canned-reply list, which the nodes show from memory).

use super::*;

/// The writer hands each committed batch's effects here.
impl Publish for Hub {
    /// Route committed effects to live connections. Called by the writer
    /// thread right after each commit, in commit order.
    fn publish(&self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        // One wake per recipient per batch, at its highest seq, for the
        // other nodes (only when there are any).
        let mut wakes: HashMap<Recipient, Seq> = HashMap::new();
        if self.bus.get().is_some() {
            for e in &effects {
                let (r, seq) = match e {
                    Effect::AgentEvent { agent, seq, .. } => (Recipient::Agent(*agent), *seq),
                    Effect::VisitorEvent { visitor, seq, .. } => {
                        (Recipient::Visitor(visitor.clone()), *seq)
                    }
                    _ => continue,
                };
                let top = wakes.entry(r).or_insert(seq);
                *top = (*top).max(seq);
            }
        }
        for (recipient, seq) in wakes {
            self.tell(|| BusMsg::Wake { recipient, seq });
        }
        let mut st = self.lock();
        // Signals go out after the lock is let go: sending one takes it.
        let mut signals = Vec::new();
        for e in effects {
            match e {
                Effect::AgentEvent { agent, seq, event } => {
                    if let Some(a) = st.agents.get_mut(&agent) {
                        a.conns.retain(|c| {
                            push(c, AgentPush::Event(seq, event.clone()), &self.metrics)
                        });
                        a.head = a.head.max(seq);
                        self.metrics.events_pushed.inc();
                    }
                }
                Effect::VisitorEvent {
                    visitor,
                    seq,
                    event,
                } => {
                    if let Some(v) = st.visitors.get_mut(&visitor) {
                        v.conns.retain(|c| {
                            push(c, VisitorPush::Event(seq, event.clone()), &self.metrics)
                        });
                        v.head = v.head.max(seq);
                        v.wake_polls();
                        self.metrics.events_pushed.inc();
                    }
                }
                Effect::VisitorChanged { visitor, change } => {
                    // The visitor may be live on another node (its widget
                    // there, the change made here): that node re-reads it.
                    self.tell(|| {
                        BusMsg::Changed(Changed::Visitor {
                            visitor: visitor.clone(),
                        })
                    });
                    Self::apply_visitor_change(&mut st, visitor, change);
                }
                Effect::Presence { agent, presence } => {
                    self.apply_presence(&mut st, agent, presence);
                }
                Effect::Team { site, member } => {
                    let agent = member.agent;
                    self.tell(|| BusMsg::Changed(Changed::Member { site, agent }));
                    self.set_member(&mut st, site, member);
                }
                Effect::Canned { site, owner } => {
                    self.tell(|| BusMsg::Changed(Changed::Canned { site, owner }));
                    self.canned_changed_in(&mut st, site, owner);
                }
                Effect::InviteRules { site } => {
                    self.tell(|| BusMsg::Changed(Changed::InviteRules { site }));
                    self.invite_rules_changed_in(&mut st, site);
                }
                Effect::Invitation { site, signal } => signals.push((site, signal)),
            }
        }
        drop(st);
        for (site, signal) in signals {
            self.signal_agents(&[], Some(site), LiveEvent::Invitation(signal));
        }
    }
}
