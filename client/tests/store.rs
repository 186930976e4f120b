//! The local store against real SQLite files in temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use holdfast_client::store::{EventEffect, QUEUED_SORT_BASE};
use holdfast_client::{DeliveryState, Store, StoreError};
use holdfast_protocol::agent::{
    Action, Author, ChatMessage, CommandResult, ConversationInfo, ConversationState, Event,
    Outcome, Presence, Snapshot, VisitorInfo,
};
use holdfast_protocol::delivery::Outbox;
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::ids::MsgId;

fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("agent.sqlite3");
    (dir, path)
}

fn id(n: u8) -> MsgId {
    MsgId::v7(1_700_000_000_000 + u64::from(n), [n; 10])
}

fn conv(id: u64, updated: i64) -> ConversationInfo {
    ConversationInfo {
        id,
        site: 1,
        visitor: format!("v-{id}"),
        visitor_name: Some("Dana".into()),
        state: ConversationState::Active,
        assigned: Some(7),
        assigned_name: Some("Alice".into()),
        opened_at_ms: 1,
        updated_at_ms: updated,
        contact_email: None,
        group: None,
    }
}

fn visitor_msg(conversation: u64, message: u64, client: MsgId, body: &str) -> ChatMessage {
    ChatMessage {
        conversation,
        message,
        client_id: client,
        author: Author::Visitor {
            visitor: format!("v-{conversation}"),
        },
        body: body.into(),
        at_ms: i64::try_from(message).unwrap(),
        attachment: None,
    }
}

fn agent_msg(conversation: u64, message: u64, client: MsgId, body: &str) -> ChatMessage {
    ChatMessage {
        author: Author::Agent {
            agent: 7,
            name: "Alice".into(),
        },
        ..visitor_msg(conversation, message, client, body)
    }
}

fn send(conversation: u64, body: &str) -> Action {
    Action::Send {
        conversation,
        body: body.into(),
        attachment: None,
    }
}

fn done(seq: u64, id: MsgId, message: u64) -> CommandResult {
    CommandResult {
        seq,
        id,
        outcome: Outcome::Done {
            conversation: None,
            message: Some(message),
            at_ms: 99,
        },
    }
}

#[test]
fn outbox_is_written_then_restored_in_order() {
    let (_d, path) = tmp();
    let actions = [
        send(1, "first"),
        Action::Accept { conversation: 2 },
        Action::SetPresence {
            presence: Presence::Away,
        },
    ];
    {
        let mut s = Store::open(&path).unwrap();
        for (i, a) in actions.iter().enumerate() {
            let seq = u64::try_from(i).unwrap() + 1;
            let m = s
                .enqueue(seq, id(u8::try_from(seq).unwrap()), a, 5)
                .unwrap();
            assert_eq!(m.is_some(), matches!(a, Action::Send { .. }));
        }
        assert_eq!(s.unsent().unwrap(), 3);
    }
    let s = Store::open(&path).unwrap();
    let entries = s.outbox().unwrap();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        entries.iter().map(|e| e.action.clone()).collect::<Vec<_>>(),
        actions.to_vec()
    );
    assert_eq!(entries[1].id, id(2));
    let mut o = Outbox::restore(
        s.commands_acked().unwrap(),
        entries.into_iter().map(|e| (e.seq, e.id)),
    );
    assert_eq!(o.next_seq(), 4);
    assert_eq!(o.poll_transmit(), Some((1, &id(1))));
    assert_eq!(o.poll_transmit(), Some((2, &id(2))));
    let queued = s.message(&id(1)).unwrap().unwrap();
    assert_eq!(queued.state, DeliveryState::Queued);
    assert_eq!(queued.message, None);
    assert_eq!(queued.body, "first");
}

#[test]
fn ack_clears_only_what_it_covers_and_settles_messages() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    for seq in 1..=3u8 {
        s.enqueue(u64::from(seq), id(seq), &send(1, "x"), 5)
            .unwrap();
    }
    let rejected = CommandResult {
        seq: 2,
        id: id(2),
        outcome: Outcome::Rejected {
            code: ErrorCode::Conflict,
            message: "closed".into(),
        },
    };
    let acked = s.apply_ack(2, &[done(1, id(1), 100), rejected]).unwrap();
    assert_eq!(acked.len(), 2);
    assert_eq!(acked[0].message.as_ref().unwrap().message, Some(100));
    assert_eq!(
        acked[0].message.as_ref().unwrap().state,
        DeliveryState::Sent
    );
    assert_eq!(
        acked[1].message.as_ref().unwrap().state,
        DeliveryState::Failed
    );
    assert_eq!(s.commands_acked().unwrap(), 2);
    assert_eq!(
        s.outbox()
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3]
    );
    // A stale ack changes nothing and never lowers commands_acked.
    assert!(s.apply_ack(1, &[]).unwrap().is_empty());
    assert_eq!(s.commands_acked().unwrap(), 2);
    assert_eq!(s.unsent().unwrap(), 1);
}

#[test]
fn event_and_cursor_commit_in_one_transaction() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    assert_eq!(s.cursor().unwrap(), None);
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    s.apply_event(2, &Event::Message(visitor_msg(1, 10, id(10), "hi")))
        .unwrap();
    assert_eq!(s.cursor().unwrap(), Some(2));

    // Make the next message insert fail inside the transaction.
    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.body = 'boom'
         BEGIN SELECT RAISE(ABORT, 'injected disk failure'); END;",
    )
    .unwrap();
    let err = s
        .apply_event(3, &Event::Message(visitor_msg(1, 11, id(11), "boom")))
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err}");
    assert_eq!(
        s.cursor().unwrap(),
        Some(2),
        "cursor moved without its data"
    );
    assert!(s.message(&id(11)).unwrap().is_none());
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.cursor().unwrap(), Some(2));
    assert_eq!(s.messages_page(1, None, 10).unwrap().len(), 1);
}

#[test]
fn own_message_echo_is_deduplicated_by_client_id() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();

    // Ack first, then the echo.
    s.enqueue(1, id(1), &send(1, "one"), 5).unwrap();
    s.apply_ack(1, &[done(1, id(1), 20)]).unwrap();
    let e = s
        .apply_event(2, &Event::Message(agent_msg(1, 20, id(1), "one")))
        .unwrap();
    match e {
        EventEffect::Message { message, new } => {
            assert!(!new);
            assert_eq!(message.message, Some(20));
            assert_eq!(message.state, DeliveryState::Sent);
        }
        other => panic!("unexpected {other:?}"),
    }

    // Echo first, then the ack.
    s.enqueue(2, id(2), &send(1, "two"), 6).unwrap();
    let e = s
        .apply_event(3, &Event::Message(agent_msg(1, 21, id(2), "two")))
        .unwrap();
    assert!(matches!(e, EventEffect::Message { new: false, .. }));
    s.apply_ack(2, &[done(2, id(2), 21)]).unwrap();

    // The same server message again under another client id is not shown.
    let e = s
        .apply_event(4, &Event::Message(agent_msg(1, 21, id(9), "two")))
        .unwrap();
    assert_eq!(e, EventEffect::Nothing);

    let page = s.messages_page(1, None, 50).unwrap();
    assert_eq!(page.len(), 2, "{page:#?}");
    assert_eq!(page[0].message, Some(20));
    assert_eq!(page[1].message, Some(21));
    assert!(page.iter().all(|m| m.state == DeliveryState::Sent));
}

#[test]
fn delivered_marks_agent_messages_and_is_remembered() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    s.apply_event(2, &Event::Message(agent_msg(1, 7, id(7), "a")))
        .unwrap();
    s.apply_event(3, &Event::Message(visitor_msg(1, 8, id(8), "b")))
        .unwrap();
    s.apply_event(4, &Event::Message(agent_msg(1, 9, id(9), "c")))
        .unwrap();
    s.enqueue(1, id(1), &send(1, "late"), 5).unwrap();
    let e = s
        .apply_event(
            5,
            &Event::Delivered {
                conversation: 1,
                message: 8,
            },
        )
        .unwrap();
    match e {
        EventEffect::Delivered { changed, .. } => {
            assert_eq!(changed.len(), 1);
            assert_eq!(changed[0].client_id, id(7));
            assert_eq!(changed[0].state, DeliveryState::Delivered);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        s.message(&id(9)).unwrap().unwrap().state,
        DeliveryState::Sent
    );
    // Its ack names a message id already covered by the Delivered event.
    s.apply_ack(1, &[done(1, id(1), 6)]).unwrap();
    assert_eq!(
        s.message(&id(1)).unwrap().unwrap().state,
        DeliveryState::Delivered
    );
}

#[test]
fn snapshot_replaces_cache_but_keeps_queued_messages_and_read_marks() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    s.apply_event(2, &Event::Conversation(conv(2, 2))).unwrap();
    s.apply_event(3, &Event::Message(visitor_msg(1, 10, id(10), "old")))
        .unwrap();
    s.apply_event(4, &Event::Message(visitor_msg(2, 11, id(11), "gone")))
        .unwrap();
    s.mark_read(1).unwrap();
    s.enqueue(1, id(1), &send(1, "queued"), 5).unwrap();

    s.apply_snapshot(&Snapshot {
        seq: 40,
        recovered: false,
        conversations: vec![conv(1, 5), conv(3, 6)],
        messages: vec![
            visitor_msg(1, 30, id(30), "new"),
            visitor_msg(3, 31, id(31), "hello"),
        ],
    })
    .unwrap();

    assert_eq!(s.cursor().unwrap(), Some(40));
    let convs = s.conversations().unwrap();
    assert_eq!(
        convs.iter().map(|c| c.info.id).collect::<Vec<_>>(),
        vec![3, 1]
    );
    let c1 = convs.iter().find(|c| c.info.id == 1).unwrap();
    assert_eq!(c1.last_read, 10, "read mark kept");
    assert_eq!(c1.unread, 1);
    let page = s.messages_page(1, None, 10).unwrap();
    assert_eq!(
        page.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        vec!["new", "queued"]
    );
    assert!(s.messages_page(2, None, 10).unwrap().is_empty());
    assert_eq!(s.unsent().unwrap(), 1);
}

#[test]
fn pages_walk_back_in_commit_order_with_queued_last() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    // Committed out of arrival order across conversations: ids, not arrival,
    // decide the order.
    for (seq, m) in (1..=25u8).rev().enumerate() {
        let seq = u64::try_from(seq).unwrap() + 2;
        s.apply_event(
            seq,
            &Event::Message(visitor_msg(1, u64::from(m) * 10, id(m), &m.to_string())),
        )
        .unwrap();
    }
    s.enqueue(1, id(200), &send(1, "mine"), 5).unwrap();

    let first = s.messages_page(1, None, 10).unwrap();
    assert_eq!(first.len(), 10);
    assert_eq!(first.last().unwrap().body, "mine");
    assert!(first.last().unwrap().order.0 > QUEUED_SORT_BASE);
    assert_eq!(first[0].message, Some(170));
    let mut seen: Vec<u64> = first.iter().filter_map(|m| m.message).collect();
    let mut before = Some(first[0].order);
    loop {
        let page = s.messages_page(1, before, 10).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.windows(2).all(|w| w[0].order < w[1].order));
        before = Some(page[0].order);
        let mut ids: Vec<u64> = page.iter().filter_map(|m| m.message).collect();
        ids.extend(seen);
        seen = ids;
    }
    assert_eq!(seen, (1..=25).map(|m| m * 10).collect::<Vec<_>>());
}

#[test]
fn unread_counts_visitor_messages_after_last_read() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    s.apply_event(2, &Event::Message(visitor_msg(1, 10, id(10), "a")))
        .unwrap();
    s.apply_event(3, &Event::Message(visitor_msg(1, 11, id(11), "b")))
        .unwrap();
    s.apply_event(4, &Event::Message(agent_msg(1, 12, id(12), "c")))
        .unwrap();
    assert_eq!(s.unread(1).unwrap(), 2);
    s.mark_read(1).unwrap();
    assert_eq!(s.unread(1).unwrap(), 0);
    s.apply_event(5, &Event::Message(visitor_msg(1, 13, id(13), "d")))
        .unwrap();
    let summary = s.conversations().unwrap().pop().unwrap();
    assert_eq!(summary.unread, 1);
    assert_eq!(summary.last_read, 12);
    assert_eq!(summary.last_message.unwrap().body, "d");
}

#[test]
fn survives_a_crash_without_clean_close() {
    let (_d, path) = tmp();
    let device;
    {
        let mut s = Store::open(&path).unwrap();
        device = s.device_id();
        s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
        s.enqueue(1, id(1), &send(1, "unsent"), 5).unwrap();
        s.enqueue(2, id(2), &send(1, "acked"), 5).unwrap();
        s.apply_ack(1, &[done(1, id(1), 50)]).unwrap();
        s.pin_fingerprint("127.0.0.1:1", &Fingerprint([3; 32]))
            .unwrap();
        // No close, no checkpoint: the connection (and its WAL) is leaked
        // as a killed process would leave it.
        std::mem::forget(s);
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.device_id(), device);
    assert_eq!(s.cursor().unwrap(), Some(1));
    assert_eq!(s.commands_acked().unwrap(), 1);
    assert_eq!(
        s.outbox().unwrap().iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![id(2)]
    );
    assert_eq!(s.message(&id(1)).unwrap().unwrap().message, Some(50));
    assert_eq!(
        s.pinned_fingerprint("127.0.0.1:1").unwrap(),
        Some(Fingerprint([3; 32]))
    );
    assert_eq!(s.pinned_fingerprint("127.0.0.1:2").unwrap(), None);
}

#[test]
fn workspace_has_everything_to_draw() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.set_account("host:1", "alice").unwrap();
    s.set_session(&holdfast_client::store::Session {
        agent: 7,
        display_name: "Alice".into(),
        site: 1,
    })
    .unwrap();
    s.apply_event(1, &Event::Conversation(conv(1, 1))).unwrap();
    s.apply_event(2, &Event::Message(visitor_msg(1, 10, id(10), "hi")))
        .unwrap();
    s.enqueue(1, id(1), &send(1, "hello"), 5).unwrap();
    let v = VisitorInfo {
        id: "v-1".into(),
        site: 1,
        name: None,
        email: None,
        attrs: vec![("plan".into(), "pro".into())],
        external_id: None,
        verified: false,
        online: true,
        user_agent: None,
        referrer: None,
        visit_started_ms: 1,
        first_seen_ms: 1,
        trail: vec![],
        conversation: Some(1),
        lang: Some("zh-CN".into()),
    };
    s.replace_visitors(std::slice::from_ref(&v)).unwrap();
    s.update_visitors([], ["nobody"]).unwrap();

    let ws = s.cached_workspace().unwrap();
    assert_eq!(ws.account.unwrap().username, "alice");
    assert_eq!(ws.session.unwrap().agent, 7);
    assert_eq!(ws.cursor, Some(2));
    assert_eq!(ws.unsent, 1);
    assert_eq!(ws.visitors, vec![v]);
    assert_eq!(ws.conversations.len(), 1);
    let recent = &ws.recent[&1];
    assert_eq!(recent.len(), 2);
    assert_eq!(
        recent[1].author,
        Author::Agent {
            agent: 7,
            name: "Alice".into()
        }
    );
}

#[test]
fn rebase_renumbers_after_the_servers_seq() {
    let (_d, path) = tmp();
    let mut s = Store::open(&path).unwrap();
    s.enqueue(1, id(1), &send(1, "a"), 5).unwrap();
    s.enqueue(2, id(2), &send(1, "b"), 5).unwrap();
    let e = s.rebase_outbox(10).unwrap();
    assert_eq!(
        e.iter().map(|e| (e.seq, e.id)).collect::<Vec<_>>(),
        vec![(11, id(1)), (12, id(2))]
    );
    assert_eq!(s.commands_acked().unwrap(), 10);
    assert_eq!(s.outbox().unwrap(), e);
}

#[test]
fn a_newer_schema_is_refused() {
    let (_d, path) = tmp();
    drop(Store::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    match Store::open(&path) {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
}

/// A command a version 2 app queued before the upgrade (the older `Send`
/// layout, without an attachment) is still in the outbox afterwards.
#[test]
fn a_send_queued_by_version_2_survives_the_upgrade() {
    let (_d, path) = tmp();
    {
        let mut s = Store::open(&path).unwrap();
        s.enqueue(1, id(1), &send(12, "Hello!"), 5).unwrap();
    }
    // The version 2 golden vector `client_command_send`, as that app's
    // outbox stored it (seq 7 there; the row is rewritten to match).
    let v2 = hex_bytes("010190123456797101810101010101010107000c0648656c6c6f21");
    let mut v2_id = [0u8; 16];
    v2_id.copy_from_slice(&v2[1..17]);
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute(
            "UPDATE outbox SET seq = 7, id = ?1, action = ?2 WHERE seq = 1",
            rusqlite::params![&v2_id[..], &v2],
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let entries = s.outbox().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].seq, 7);
    assert_eq!(entries[0].id, MsgId(v2_id));
    assert_eq!(entries[0].action, send(12, "Hello!"));
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}
