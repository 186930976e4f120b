//! The desk's unit tests: conversation windows, the queue and mine split,
//! live history, and the order property (kept apart so `desk.rs` stays a
//! readable size).

use super::*;

fn info(id: ConversationId) -> ConversationInfo {
    ConversationInfo {
        id,
        site: 1,
        visitor: format!("v-{id}"),
        visitor_name: None,
        state: ConversationState::Active,
        assigned: Some(7),
        assigned_name: None,
        opened_at_ms: 0,
        updated_at_ms: 0,
        contact_email: None,
        group: None,
    }
}

fn msg(conv: ConversationId, n: u64) -> StoredMessage {
    StoredMessage {
        order: MessageOrder(i64::try_from(n).unwrap_or(i64::MAX)),
        conversation: conv,
        message: Some(n),
        client_id: MsgId::v7(n, [u8::try_from(conv).unwrap_or(0); 10]),
        author: Author::Visitor {
            visitor: format!("v-{conv}"),
        },
        body: format!("m{n}"),
        at_ms: 0,
        state: DeliveryState::Sent,
        attachment: None,
    }
}

#[test]
fn upsert_orders_dedups_and_trims() {
    let mut c = Conv::new(info(1));
    assert!(c.upsert(msg(1, 5)));
    assert!(c.upsert(msg(1, 3)));
    assert!(!c.upsert(msg(1, 5)), "same client id is an update");
    let order: Vec<u64> = c.messages.iter().filter_map(|m| m.message).collect();
    assert_eq!(order, [3, 5]);
    for n in 10..300 {
        c.upsert(msg(1, n));
        c.trim();
    }
    assert_eq!(c.messages.len(), KEEP_PER_CONVERSATION);
    assert!(c.more_before);
    assert_eq!(c.last().and_then(|m| m.message), Some(299));
}

#[test]
fn queue_and_mine_split_by_assignment() {
    let mut d = Desk {
        me: Some(Session {
            agent: 7,
            display_name: "A".into(),
            site: 1,
        }),
        ..Desk::default()
    };
    for (id, assigned, state) in [
        (1, Some(7), ConversationState::Active),
        (2, None, ConversationState::Queued),
        (3, Some(8), ConversationState::Active),
        (4, None, ConversationState::LeftMessage),
        (5, Some(7), ConversationState::Closed),
    ] {
        let mut i = info(id);
        i.assigned = assigned;
        i.state = state;
        i.opened_at_ms = i64::try_from(10 - id).unwrap_or(0);
        let mut c = Conv::new(i);
        c.unread = u32::try_from(id).unwrap_or(0);
        d.convs.insert(id, c);
    }
    let mine: Vec<_> = d.mine().iter().map(|c| c.info.id).collect();
    assert_eq!(mine, [1]);
    let team: Vec<_> = d.team_chats().iter().map(|c| c.info.id).collect();
    assert_eq!(team, [3]);
    // Longest wait first.
    let queue: Vec<_> = d.queue().iter().map(|c| c.info.id).collect();
    assert_eq!(queue, [4, 2]);
    assert_eq!(d.unread_total(), 15);
}

/// "Past conversations" follows what happens while it is open: a new
/// message and a state change show at once, not on the next select.
#[test]
fn a_loaded_history_stays_current() {
    let mut d = Desk::new();
    d.convs.insert(1, Conv::new(info(1)));
    let h = d.history.entry("v-1".into()).or_default();
    h.apply(QueryResult::History {
        visitor: None,
        conversations: vec![info(1)],
        messages: vec![as_chat(&msg(1, 5)).unwrap()],
        more: false,
    });
    d.apply_message(msg(1, 6));
    let mut closed = info(1);
    closed.state = ConversationState::Closed;
    d.apply_conversation(closed);
    let h = &d.history["v-1"];
    assert_eq!(h.conversations[0].state, ConversationState::Closed);
    let ids: Vec<MessageId> = h.messages.iter().map(|m| m.message).collect();
    assert_eq!(ids, [6, 5], "newest first");
    // A queued message has no server id yet: it joins once acked.
    let mut queued = msg(1, 0);
    queued.message = None;
    queued.order = MessageOrder(holdfast_client::store::QUEUED_SORT_BASE + 1);
    queued.client_id = MsgId([7; 16]);
    d.apply_message(queued);
    assert_eq!(d.history["v-1"].messages.len(), 2);
    d.apply_state(
        1,
        MsgId([7; 16]),
        Some(9),
        DeliveryState::Sent,
        MessageOrder(9),
    );
    assert_eq!(d.history["v-1"].messages[0].message, 9);
    let shown: Vec<Option<MessageId>> = d.convs[&1].messages.iter().map(|m| m.message).collect();
    assert_eq!(shown, [Some(6), Some(9)]);
}

/// Order is a property: whatever order the server's events, acks,
/// replays, snapshots and resyncs reach this device in, the chat pane
/// shows the server's commit order, with this device's unacked
/// messages after it in the order they were typed. Driven through the
/// real store and the core's real update conversion.
mod order {
    use holdfast_protocol::agent::{Action, CommandResult, Event, Outcome, Snapshot};
    use proptest::prelude::*;

    use super::*;
    use holdfast_client::store::Store;
    use holdfast_client::update::Update;
    use holdfast_client::{ack_update, event_updates};

    const ME: AgentId = 7;
    const CONV: ConversationId = 1;

    #[derive(Debug, Clone)]
    enum Step {
        /// The agent types a message here (queued in the outbox).
        Type,
        /// The visitor writes (committed by the server).
        Visitor,
        /// The agent writes from another device (committed).
        OtherDevice,
        /// The server commits the next message this device sent.
        Commit,
        /// The next event in this device's log arrives.
        Event,
        /// A cumulative ack of everything committed, with results, or
        /// without (a reconnect's LoginOk covering it).
        Ack { with_results: bool },
        /// The UI re-reads the store (a lagging update channel).
        Resync,
        /// A resume too old to replay: the server's snapshot.
        Snapshot,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Type),
            3 => Just(Step::Visitor),
            1 => Just(Step::OtherDevice),
            3 => Just(Step::Commit),
            5 => Just(Step::Event),
            2 => any::<bool>().prop_map(|with_results| Step::Ack { with_results }),
            1 => Just(Step::Resync),
            1 => Just(Step::Snapshot),
        ]
    }

    fn info() -> ConversationInfo {
        ConversationInfo {
            assigned: Some(ME),
            ..super::info(CONV)
        }
    }

    /// The server side of one conversation and this device's log.
    struct Server {
        /// Committed messages, in commit order (message ids 1, 2, …).
        committed: Vec<ChatMessage>,
        /// This device's log: events not yet delivered start here.
        log: Vec<Event>,
        delivered: usize,
        /// Sent by this device (seq, id, body), not yet committed.
        outbox: std::collections::VecDeque<(u64, MsgId, String)>,
        /// Committed from this device, not yet acked: (seq, id, message id).
        unacked: Vec<(u64, MsgId, MessageId)>,
        next_seq: u64,
        n: u64,
    }

    impl Server {
        fn commit(&mut self, client_id: MsgId, author: Author, body: String) -> MessageId {
            let message = self.committed.len() as u64 + 1;
            let m = ChatMessage {
                conversation: CONV,
                message,
                client_id,
                author,
                body,
                at_ms: i64::try_from(message).unwrap_or(0),
                attachment: None,
            };
            self.committed.push(m.clone());
            self.log.push(Event::Message(m));
            message
        }

        fn id(&mut self) -> MsgId {
            self.n += 1;
            MsgId::v7(self.n, [9; 10])
        }
    }

    fn me() -> Author {
        Author::Agent {
            agent: ME,
            name: "Alice".into(),
        }
    }

    /// Apply updates to the desk the way the app does.
    fn apply(desk: &mut Desk, updates: Vec<Update>) {
        for u in updates {
            match u {
                Update::Message(m) => {
                    desk.apply_message(m);
                }
                Update::MessageState {
                    client_id,
                    conversation,
                    message,
                    state,
                    order,
                } => desk.apply_state(conversation, client_id, message, state, order),
                Update::Conversation(c) => desk.apply_conversation(c),
                _ => {}
            }
        }
    }

    fn shown(desk: &Desk) -> Vec<(Option<MessageId>, String)> {
        desk.convs[&CONV]
            .messages
            .iter()
            .map(|m| (m.message, m.body.clone()))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_chat_pane_shows_commit_order_whatever_arrives_when(
            steps in proptest::collection::vec(step(), 1..45)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path().join("s.sqlite3")).unwrap();
            store.set_session(&Session { agent: ME, display_name: "Alice".into(), site: 1 }).unwrap();
            let mut seq = 1;
            let effect = store.apply_event(seq, &Event::Conversation(info())).unwrap();
            let mut desk = Desk::new();
            desk.me = Some(Session { agent: ME, display_name: "Alice".into(), site: 1 });
            apply(&mut desk, event_updates(effect));
            let mut srv = Server {
                committed: Vec::new(),
                log: Vec::new(),
                delivered: 0,
                outbox: Default::default(),
                unacked: Vec::new(),
                next_seq: 1,
                n: 0,
            };
            let mut typed = 0;
            for st in steps {
                match st {
                    Step::Type => {
                        typed += 1;
                        let id = srv.id();
                        let body = format!("typed {typed}");
                        let action = Action::Send { conversation: CONV, body: body.clone(), attachment: None };
                        let stored = store.enqueue(srv.next_seq, id, &action, 0).unwrap();
                        srv.outbox.push_back((srv.next_seq, id, body));
                        srv.next_seq += 1;
                        apply(&mut desk, stored.into_iter().map(Update::Message).collect());
                    }
                    Step::Visitor => {
                        let id = srv.id();
                        let n = srv.committed.len();
                        srv.commit(id, Author::Visitor { visitor: "v-1".into() }, format!("visitor {n}"));
                    }
                    Step::OtherDevice => {
                        let id = srv.id();
                        let n = srv.committed.len();
                        srv.commit(id, me(), format!("laptop {n}"));
                    }
                    Step::Commit => {
                        if let Some((s, id, body)) = srv.outbox.pop_front() {
                            let m = srv.commit(id, me(), body);
                            srv.unacked.push((s, id, m));
                        }
                    }
                    Step::Event => {
                        if let Some(ev) = srv.log.get(srv.delivered).cloned() {
                            srv.delivered += 1;
                            seq += 1;
                            let effect = store.apply_event(seq, &ev).unwrap();
                            apply(&mut desk, event_updates(effect));
                        }
                    }
                    Step::Ack { with_results } => {
                        if let Some(&(up_to, _, _)) = srv.unacked.last() {
                            let results: Vec<CommandResult> = if with_results {
                                srv.unacked
                                    .iter()
                                    .map(|&(s, id, m)| CommandResult {
                                        seq: s,
                                        id,
                                        outcome: Outcome::Done {
                                            conversation: Some(CONV),
                                            message: Some(m),
                                            at_ms: i64::try_from(m).unwrap_or(0),
                                        },
                                    })
                                    .collect()
                            } else {
                                Vec::new()
                            };
                            let acked = store.apply_ack(up_to, &results).unwrap();
                            srv.unacked.clear();
                            let updates = acked
                                .iter()
                                .filter_map(|a| ack_update(a.message.as_ref()))
                                .collect();
                            apply(&mut desk, updates);
                        }
                    }
                    Step::Resync => desk.load(store.cached_workspace().unwrap()),
                    Step::Snapshot => {
                        seq += 1;
                        store
                            .apply_snapshot(&Snapshot {
                                seq,
                                recovered: false,
                                conversations: vec![info()],
                                messages: srv.committed.clone(),
                            })
                            .unwrap();
                        // Everything committed so far is in it.
                        srv.delivered = srv.log.len();
                        desk.load(store.cached_workspace().unwrap());
                    }
                }
                // At every step: sorted, no duplicates, and what has a
                // server id is in commit order, ahead of what has not.
                let s = shown(&desk);
                let ids: Vec<MessageId> = s.iter().filter_map(|(m, _)| *m).collect();
                prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order: {s:?}");
                let first_queued = s.iter().position(|(m, _)| m.is_none()).unwrap_or(s.len());
                prop_assert!(s[first_queued..].iter().all(|(m, _)| m.is_none()), "queued before committed: {s:?}");
                let order: Vec<MessageOrder> = desk.convs[&CONV].messages.iter().map(|m| m.order).collect();
                prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
            }
            // Then everything arrives.
            while let Some((s, id, body)) = srv.outbox.pop_front() {
                let m = srv.commit(id, me(), body);
                srv.unacked.push((s, id, m));
            }
            while let Some(ev) = srv.log.get(srv.delivered).cloned() {
                srv.delivered += 1;
                seq += 1;
                let effect = store.apply_event(seq, &ev).unwrap();
                apply(&mut desk, event_updates(effect));
            }
            if let Some(&(up_to, _, _)) = srv.unacked.last() {
                let acked = store.apply_ack(up_to, &[]).unwrap();
                apply(&mut desk, acked.iter().filter_map(|a| ack_update(a.message.as_ref())).collect());
            }
            let want: Vec<(Option<MessageId>, String)> = srv
                .committed
                .iter()
                .map(|m| (Some(m.message), m.body.clone()))
                .collect();
            let keep = want.len().saturating_sub(KEEP_PER_CONVERSATION);
            prop_assert_eq!(&shown(&desk)[shown(&desk).len().saturating_sub(want.len() - keep)..], &want[keep..]);
            // What a restart shows is the same.
            let mut fresh = Desk::new();
            fresh.load(store.cached_workspace().unwrap());
            prop_assert_eq!(shown(&fresh), shown(&desk));
            // The preview is the newest message.
            let last = desk.convs[&CONV].last_said().map(|m| m.body.clone());
            prop_assert_eq!(last, srv.committed.last().map(|m| m.body.clone()));
        }
    }
}

fn sending(desk: &mut Desk, visitor: &str, unblock: bool) {
    desk.blocks.insert(
        visitor.to_owned(),
        Blocking {
            reason: "spam".into(),
            state: BlockState::Sending { unblock, id: None },
        },
    );
}

#[test]
fn a_block_outcome_that_beats_its_id_still_lands() {
    let mut desk = Desk::new();
    sending(&mut desk, "v1", false);
    let id = MsgId([1; 16]);
    // The server answered before the outbox handed the id back.
    assert!(!desk.command_outcome(id, Ok(())));
    desk.block_queued("v1", id);
    assert_eq!(desk.blocks["v1"].state, BlockState::Blocked);
    assert!(desk.early_outcomes.is_empty());

    // In the usual order, a refused unblock leaves the visitor blocked.
    let id2 = MsgId([2; 16]);
    desk.blocks.get_mut("v1").unwrap().state = BlockState::Sending {
        unblock: true,
        id: None,
    };
    desk.block_queued("v1", id2);
    assert!(desk.command_outcome(id2, Err("no".into())));
    assert!(desk.blocks["v1"].blocked());
    // Someone else's outcomes do not pile up.
    for n in 0..100u8 {
        desk.command_outcome(MsgId([n.wrapping_add(3); 16]), Ok(()));
    }
    assert!(desk.early_outcomes.len() <= EARLY_OUTCOMES);
}

fn visitor(id: &str, external: Option<&str>, page: &str, online: bool) -> VisitorInfo {
    VisitorInfo {
        id: id.into(),
        site: 1,
        name: Some("Demo shopper".into()),
        email: None,
        attrs: Vec::new(),
        external_id: external.map(Into::into),
        verified: false,
        online,
        user_agent: None,
        referrer: None,
        visit_started_ms: 0,
        first_seen_ms: 0,
        trail: vec![holdfast_protocol::agent::PageView {
            url: format!("https://shop.example/{page}"),
            title: page.into(),
            referrer: None,
            at_ms: 0,
        }],
        conversation: None,
        lang: None,
    }
}

/// Rows that read alike cannot be told apart, so a shared name gets each
/// visitor's own tag, and every row says where its visitor is.
#[test]
fn conversations_with_one_name_are_told_apart() {
    let mut d = Desk::default();
    let named = |id: ConversationId, v: &str| ConversationInfo {
        visitor: v.into(),
        visitor_name: Some("Demo shopper".into()),
        ..info(id)
    };
    d.convs.insert(1, Conv::new(named(1, "v-aaaaaaaaaaaaaaaa")));
    d.visitors.insert(
        "v-aaaaaaaaaaaaaaaa".into(),
        visitor("v-aaaaaaaaaaaaaaaa", Some("cust-k3x9"), "Checkout", true),
    );
    // Alone, the name is enough.
    let one = d.conv_label(&d.convs[&1].info);
    assert_eq!(one.name, "Demo shopper");
    assert_eq!(one.place.as_deref(), Some("on Checkout"));

    d.convs
        .insert(2, Conv::new(named(2, "v-bbbbbbbbbbbbbbbbbb")));
    let a = d.conv_label(&d.convs[&1].info);
    let b = d.conv_label(&d.convs[&2].info);
    assert_eq!(a.name, "Demo shopper · cust-k3x9");
    assert_eq!(
        b.name, "Demo shopper · v-bbbbbbbbbb",
        "no site id: the visitor's own"
    );
    assert_eq!(b.place, None, "a visitor not in the list has no known page");

    // A closed chat with the same name does not count, nor does a second
    // chat of the same visitor.
    if let Some(c) = d.convs.get_mut(&2) {
        c.info.state = ConversationState::Closed;
    }
    d.convs.insert(3, Conv::new(named(3, "v-aaaaaaaaaaaaaaaa")));
    assert_eq!(d.conv_label(&d.convs[&1].info).name, "Demo shopper");

    d.visitors.insert(
        "v-aaaaaaaaaaaaaaaa".into(),
        visitor("v-aaaaaaaaaaaaaaaa", None, "Pricing", false),
    );
    assert_eq!(
        d.conv_label(&d.convs[&1].info).place.as_deref(),
        Some("left the site · last on Pricing")
    );
}

/// A visitor who gave no name is labelled by language and page (issue 17),
/// the language named in the app's language; without either, by the start
/// of their id; and two that still read alike get their own tags.
#[test]
fn nameless_visitors_are_labelled_by_language_and_page() {
    crate::ui::i18n::set(crate::ui::i18n::Lang::En);
    let mut d = Desk::default();
    let nameless = |id: ConversationId, v: &str| ConversationInfo {
        visitor: v.into(),
        visitor_name: None,
        ..info(id)
    };
    let mut zh = visitor("v-zh00000000000000", None, "pricing?ref=ad", true);
    zh.name = None;
    zh.lang = Some("zh-CN".into());
    d.visitors.insert(zh.id.clone(), zh);
    d.convs
        .insert(1, Conv::new(nameless(1, "v-zh00000000000000")));
    assert_eq!(
        d.conv_label(&d.convs[&1].info).name,
        "Visitor · Chinese · /pricing"
    );
    crate::ui::i18n::set(crate::ui::i18n::Lang::Zh);
    assert_eq!(
        d.conv_label(&d.convs[&1].info).name,
        "访客 · 中文 · /pricing"
    );
    crate::ui::i18n::set(crate::ui::i18n::Lang::En);

    // Nothing known of the visitor: the start of the id, as before.
    d.convs
        .insert(2, Conv::new(nameless(2, "v-unknown000000000")));
    assert_eq!(d.conv_label(&d.convs[&2].info).name, "Visitor v-unknow");

    // A language the app has no name for shows as its tag; a second
    // Chinese visitor on the same page makes both rows carry their tag.
    let mut other = visitor("v-zh11111111111111", None, "pricing", true);
    other.name = None;
    other.lang = Some("zh-Hant-TW".into());
    d.visitors.insert(other.id.clone(), other);
    d.convs
        .insert(3, Conv::new(nameless(3, "v-zh11111111111111")));
    assert_eq!(
        d.conv_label(&d.convs[&1].info).name,
        "Visitor · Chinese · /pricing · v-zh00000000"
    );
    if let Some(v) = d.visitors.get_mut("v-zh11111111111111") {
        v.lang = Some("tlh".into());
    }
    assert_eq!(
        d.conv_label(&d.convs[&3].info).name,
        "Visitor · tlh · /pricing"
    );
    assert_eq!(
        d.conv_label(&d.convs[&1].info).name,
        "Visitor · Chinese · /pricing"
    );
}
