//! What the core does with what the session machine surfaces once live:
//! acks, events and snapshots are stored before the machine hears they
//! are, live state is cached, and each becomes an [`Update`] for the UI.

use super::*;

impl Core {
    // ------------------------------------------------------------ server messages

    pub(super) fn on_client_event(&mut self, ev: ClientEvent) -> Option<End> {
        match ev {
            ClientEvent::Acked(batch) => self.on_ack(batch.up_to, &batch.results),
            ClientEvent::Event { seq, event } => self.on_event(seq, event),
            ClientEvent::Snapshot(s) => self.on_snapshot(s),
            ClientEvent::Live(ev) => {
                self.on_live(ev);
                None
            }
            ClientEvent::Error(e) => self.on_error(e),
            ClientEvent::GoingAway { reason } => {
                Some(retry(format!("the server is going away: {reason}")))
            }
            ClientEvent::QueryResult { request, result } => {
                if self.uploads.owns(request) {
                    self.on_upload_answer(request, result);
                } else if let QueryResult::InviteRules(list) = result {
                    self.emit(Update::InviteRules(list));
                } else {
                    self.emit(Update::History { request, result });
                }
                None
            }
            ClientEvent::ServerKey(_) | ClientEvent::LoggedIn(_) | ClientEvent::LoginRefused(_) => {
                Some(retry("protocol error: a login answer after login"))
            }
            ClientEvent::SignedOut => {
                // Forgotten before the caller hears "released", so an app
                // that exits at once leaves nothing of the workspace behind.
                // The visitor list in memory goes too: its pending cache
                // writes would otherwise land after the forgetting, at the
                // next flush or at shutdown.
                self.visitors.clear();
                self.dirty_visitors.clear();
                self.visitors_dirty_since = None;
                if let Err(e) = self.store.forget_workspace() {
                    tracing::warn!("signed out, but the cached workspace stays: {e}");
                }
                if let Some(s) = self.signing_out.take() {
                    let _ignored = s.reply.send(SignOutResult::Released);
                }
                Some(End::Stop(StopReason::SignedOut))
            }
        }
    }

    /// Disk first, memory second: if the store fails, the outbox rows stay
    /// and are resent later, which the server answers idempotently. (The
    /// machine has checked the ack against what it numbered.)
    pub(super) fn on_ack(&mut self, up_to: Seq, results: &[CommandResult]) -> Option<End> {
        if up_to <= self.machine.acked() {
            return None;
        }
        let acked = match self.store.apply_ack(up_to, results) {
            Ok(a) => a,
            Err(e) => return Some(self.store_failed(e)),
        };
        if let Err(e) = self.machine.commands_acked(up_to) {
            return Some(retry(session_failure(e)));
        }
        for a in acked {
            self.emit_acked(a);
        }
        self.publish();
        None
    }

    pub(super) fn emit_acked(&mut self, a: AckedCommand) {
        if let Action::Send {
            attachment: Some(_),
            ..
        } = &a.action
        {
            let rejected = match &a.outcome {
                Some(Outcome::Rejected { message, .. }) => Some(message.as_str()),
                _ => None,
            };
            self.upload_acked(a.id, rejected);
        }
        match a.outcome {
            Some(Outcome::Rejected { code, message }) => {
                tracing::warn!(id = %a.id, %code, %message, "command rejected");
                self.emit(Update::CommandRejected {
                    id: a.id,
                    code,
                    message,
                });
            }
            Some(Outcome::Done {
                conversation,
                message,
                ..
            }) => self.emit(Update::CommandDone {
                id: a.id,
                conversation,
                message,
            }),
            None => self.emit(Update::CommandDone {
                id: a.id,
                conversation: None,
                message: None,
            }),
        }
        if let Some(u) = ack_update(a.message.as_ref()) {
            self.emit(u);
        }
    }

    /// The machine has checked the order; storing it is ours, and only
    /// then is it acked.
    pub(super) fn on_event(&mut self, seq: Seq, event: Event) -> Option<End> {
        let effect = match self.store.apply_event(seq, &event) {
            Ok(e) => e,
            Err(e) => return Some(self.store_failed(e)),
        };
        self.machine.applied(seq, Instant::now());
        for u in event_updates(effect) {
            self.emit(u);
        }
        None
    }

    pub(super) fn on_snapshot(&mut self, s: Snapshot) -> Option<End> {
        if let Err(e) = self.store.apply_snapshot(&s) {
            return Some(self.store_failed(e));
        }
        self.machine.snapshot_applied(s.seq, Instant::now());
        if !s.recovered {
            tracing::info!(
                seq = s.seq,
                "applied a snapshot; history in between may be missing"
            );
        }
        self.emit(Update::SnapshotApplied {
            recovered: s.recovered,
        });
        None
    }

    fn upsert_visitor(&mut self, v: VisitorInfo) {
        self.mark_visitor_dirty(v.id.clone());
        self.visitors.insert(v.id.clone(), v.clone());
        self.emit(Update::Visitor(Box::new(v)));
    }

    pub(super) fn on_live(&mut self, ev: LiveEvent) {
        match ev {
            LiveEvent::Visitors(list) => {
                if let Err(e) = self.store.replace_visitors(&list) {
                    tracing::warn!("cannot cache the visitor list: {e}");
                }
                self.dirty_visitors.clear();
                self.visitors_dirty_since = None;
                self.visitors = list.iter().map(|v| (v.id.clone(), v.clone())).collect();
                self.emit(Update::Visitors(list));
            }
            LiveEvent::Visitor(v) => self.upsert_visitor(v),
            LiveEvent::VisitorUpdates(list) => {
                for v in list {
                    self.upsert_visitor(v);
                }
            }
            LiveEvent::VisitorGone { visitor } => {
                self.mark_visitor_dirty(visitor.clone());
                self.visitors.remove(&visitor);
                self.emit(Update::VisitorGone { visitor });
            }
            // Superseded by TeamMember; servers no longer send it.
            LiveEvent::AgentPresence { .. } => {}
            LiveEvent::Team(list) => self.emit(Update::Team(list)),
            LiveEvent::Typing {
                conversation,
                visitor,
                typing,
                draft,
            } => self.updates.signal(Update::Typing {
                conversation,
                visitor,
                typing,
                draft,
            }),
            LiveEvent::TeamMember(m) => self.emit(Update::TeamMember(m)),
            LiveEvent::SiteTags(tags) => self.emit(Update::SiteTags(tags)),
            LiveEvent::Canned(list) => self.emit(Update::Canned(list)),
            LiveEvent::InviteRules(list) => self.emit(Update::InviteRules(list)),
            // Held for `ClientHandle::groups` (which a caller can read at
            // any time), and emitted for a UI that keeps its own copy.
            LiveEvent::Groups(list) => {
                self.groups.send_replace(list.clone());
                self.emit(Update::Groups(list));
            }
            LiveEvent::Invitation(i) => self.updates.signal(Update::Invitation(i)),
            // Kept for the next reconnect, like the one from LoginOk.
            LiveEvent::Ticket { ticket, .. } => {
                if !ticket.is_empty() {
                    self.ticket = Some(Zeroizing::new(ticket));
                }
            }
        }
    }

    pub(super) fn on_error(&mut self, e: WireError) -> Option<End> {
        match e.code {
            ErrorCode::Unauthorized | ErrorCode::Disabled | ErrorCode::Revoked => {
                Some(self.login_refused(e.code, e.message))
            }
            ErrorCode::GoingAway => Some(retry(format!("the server is going away: {}", e.message))),
            code => {
                tracing::warn!(%code, message = %e.message, "server error");
                self.emit(Update::ServerError {
                    code,
                    message: e.message,
                });
                None
            }
        }
    }

    /// A store failure ends the connection: nothing unstored was acked, and
    /// the next connection replays from the durable cursor.
    pub(super) fn store_failed(&mut self, e: StoreError) -> End {
        tracing::error!("local store failed: {e}");
        self.emit(Update::StoreFailed {
            message: e.to_string(),
        });
        retry(format!("local store failed: {e}"))
    }
}

/// What the UI hears about a message an ack settled.
pub fn ack_update(message: Option<&StoredMessage>) -> Option<Update> {
    message.map(Update::message_state)
}

/// What the UI hears about an applied event.
pub fn event_updates(effect: EventEffect) -> Vec<Update> {
    match effect {
        EventEffect::Message { message, new: true } => vec![Update::Message(message)],
        EventEffect::Message {
            message,
            new: false,
        } => vec![Update::message_state(&message)],
        EventEffect::Conversation(c) => vec![Update::Conversation(c)],
        EventEffect::Delivered { changed, .. } => {
            changed.iter().map(Update::message_state).collect()
        }
        EventEffect::Nothing => Vec::new(),
    }
}
