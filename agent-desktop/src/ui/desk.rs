//! The workspace's data, as the agent sees it: conversations with a window
//! of their messages, the visitor list, visitor histories and the team.
//!
//! It is filled from the store at start and after every resync, and kept
//! current by the core's updates. Order is a property here, not a case:
//! every conversation's messages are kept sorted by [`MessageOrder`] (the
//! server's commit order, with this device's queued messages after all of
//! them), and any update that moves a message (an ack, an echo from another
//! device, a replay) moves it, so what arrives in which order cannot change
//! what is shown.

use std::collections::{BTreeMap, HashMap};

use holdfast_protocol::agent::{
    AgentId, Author, ChatMessage, ConversationId, ConversationInfo, ConversationState, MessageId,
    Presence, QueryResult, Role, TeamMember, VisitorInfo,
};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::{Notice, system_text};
use iced::widget::text_editor;

use holdfast_client::store::{DeliveryState, MessageOrder, RECENT_PER_CONVERSATION, Session};
use holdfast_client::{ConversationSummary, StoredMessage, Workspace};

/// Messages of one conversation kept in memory when it is not open. The
/// store has the rest; keeping only a window is what keeps memory flat over
/// a long day.
pub const KEEP_PER_CONVERSATION: usize = RECENT_PER_CONVERSATION as usize;
/// Page size for visitor history (server).
pub const HISTORY_PAGE: u32 = 20;
pub const DEFAULT_INVITE: &str = "Hi! Can I help you with anything?";

/// One conversation as the workspace shows it.
#[derive(Debug, Clone)]
pub struct Conv {
    pub info: ConversationInfo,
    pub unread: u32,
    /// A window of the newest messages, sorted by `order`.
    pub messages: Vec<StoredMessage>,
    /// Older messages exist in the store.
    pub more_before: bool,
}

impl Conv {
    pub fn new(info: ConversationInfo) -> Self {
        Self {
            info,
            unread: 0,
            messages: Vec::new(),
            more_before: false,
        }
    }

    pub fn from_summary(s: ConversationSummary, recent: Vec<StoredMessage>) -> Self {
        let more_before = recent.len() >= KEEP_PER_CONVERSATION;
        let mut c = Self {
            info: s.info,
            unread: s.unread,
            messages: Vec::new(),
            more_before,
        };
        for m in recent {
            c.upsert(m);
        }
        if c.messages.is_empty()
            && let Some(m) = s.last_message
        {
            c.upsert(m);
        }
        c
    }

    pub fn last(&self) -> Option<&StoredMessage> {
        self.messages.last()
    }

    /// The newest message a person wrote: what a list row previews.
    pub fn last_said(&self) -> Option<&StoredMessage> {
        self.messages
            .iter()
            .rev()
            .find(|m| !matches!(m.author, Author::System))
    }

    /// The left-message details (email, page), if the visitor left one.
    pub fn left_message(&self) -> Option<Notice> {
        self.messages.iter().rev().find_map(|m| match &m.author {
            Author::System => {
                Notice::parse(&m.body).filter(|n| matches!(n, Notice::LeftMessage { .. }))
            }
            _ => None,
        })
    }

    /// Insert or replace by client id, at the place its order says; true
    /// if it was not there.
    pub fn upsert(&mut self, m: StoredMessage) -> bool {
        let old = self
            .messages
            .iter()
            .position(|o| o.client_id == m.client_id);
        if let Some(i) = old {
            self.messages.remove(i);
        }
        let at = self.messages.partition_point(|o| o.order <= m.order);
        self.messages.insert(at, m);
        old.is_none()
    }

    /// A shown message changed state and, perhaps, place.
    pub fn restate(
        &mut self,
        client_id: MsgId,
        message: Option<MessageId>,
        state: DeliveryState,
        order: MessageOrder,
    ) {
        let Some(m) = self.messages.iter().find(|m| m.client_id == client_id) else {
            return;
        };
        let mut m = m.clone();
        m.state = state;
        m.order = order;
        if message.is_some() {
            m.message = message;
        }
        self.upsert(m);
    }

    pub fn trim(&mut self) {
        if self.messages.len() > KEEP_PER_CONVERSATION {
            let cut = self.messages.len() - KEEP_PER_CONVERSATION;
            self.messages.drain(..cut);
            self.more_before = true;
        }
    }

    /// Older messages from the store, in front of the window.
    pub fn prepend(&mut self, page: Vec<StoredMessage>, page_size: usize) {
        self.more_before = page.len() >= page_size;
        for m in page {
            if !self.messages.iter().any(|o| o.client_id == m.client_id) {
                self.upsert(m);
            }
        }
    }
}

/// A visitor's past conversations, paged from the server and kept current
/// by live updates while it is loaded.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub conversations: Vec<ConversationInfo>,
    /// Newest first, as the server pages them.
    pub messages: Vec<ChatMessage>,
    pub more: bool,
    pub loading: bool,
    pub error: Option<String>,
}

impl History {
    fn merge_conversation(&mut self, c: ConversationInfo) {
        match self.conversations.iter_mut().find(|o| o.id == c.id) {
            Some(o) => *o = c,
            None => self.conversations.push(c),
        }
        self.conversations
            .sort_by_key(|c| std::cmp::Reverse(c.opened_at_ms));
    }

    fn merge_message(&mut self, m: ChatMessage) {
        match self.messages.iter_mut().find(|o| o.message == m.message) {
            Some(o) => *o = m,
            None => self.messages.push(m),
        }
        self.messages.sort_by_key(|m| std::cmp::Reverse(m.message));
    }

    /// Merge one page from the server.
    pub fn apply(&mut self, result: QueryResult) -> Option<Box<VisitorInfo>> {
        self.loading = false;
        match result {
            QueryResult::History {
                visitor,
                conversations,
                messages,
                more,
            } => {
                for c in conversations {
                    self.merge_conversation(c);
                }
                for m in messages {
                    self.merge_message(m);
                }
                // A refresh of the newest page says nothing about whether
                // older pages remain once some have been loaded.
                self.more = more || (self.more && self.messages.len() > HISTORY_PAGE as usize);
                visitor
            }
            QueryResult::Refused(e) => {
                self.error = Some(format!("History refused ({}): {}", e.code, e.message));
                None
            }
        }
    }
}

/// A message as history holds it; `None` while it has no server id.
fn as_chat(m: &StoredMessage) -> Option<ChatMessage> {
    Some(ChatMessage {
        conversation: m.conversation,
        message: m.message?,
        client_id: m.client_id,
        author: m.author.clone(),
        body: m.body.clone(),
        at_ms: m.at_ms,
    })
}

/// What applying a message changed, for the app's side effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageApplied {
    /// It was not shown before.
    pub new: bool,
    pub from_visitor: bool,
}

/// The workspace's data: the cache as it was read, then kept current by
/// the core's updates.
#[derive(Debug, Default)]
pub struct Desk {
    pub me: Option<Session>,
    pub presence: Option<Presence>,
    pub visitors: HashMap<String, VisitorInfo>,
    pub convs: HashMap<ConversationId, Conv>,
    pub team: BTreeMap<AgentId, TeamMember>,
    pub selected: Option<ConversationId>,
    pub details_visitor: Option<String>,
    pub drafts: HashMap<ConversationId, text_editor::Content>,
    pub invite_text: String,
    pub history: HashMap<String, History>,
    pub history_requests: HashMap<u32, String>,
    /// Select the conversation that an invite to (or an accept of) this
    /// opens, when it arrives.
    pub pending_open: Option<PendingOpen>,
    /// The last error worth showing above the workspace.
    pub banner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOpen {
    Visitor(String),
    Conversation(ConversationId),
}

impl Desk {
    pub fn new() -> Self {
        Self {
            invite_text: DEFAULT_INVITE.to_owned(),
            ..Self::default()
        }
    }

    pub fn unread_total(&self) -> u32 {
        self.convs.values().map(|c| c.unread).sum()
    }

    pub fn my_id(&self) -> Option<AgentId> {
        self.me.as_ref().map(|s| s.agent)
    }

    /// This agent's role, as the team list says (agent until it arrives).
    pub fn my_role(&self) -> Role {
        self.my_id()
            .and_then(|id| self.team.get(&id))
            .map_or(Role::Agent, |m| m.role)
    }

    pub fn oversees(&self) -> bool {
        self.my_role().oversees()
    }

    /// Unassigned conversations waiting for an agent, longest wait first.
    pub fn queue(&self) -> Vec<&Conv> {
        let mut q: Vec<&Conv> = self
            .convs
            .values()
            .filter(|c| {
                c.info.assigned.is_none()
                    && matches!(
                        c.info.state,
                        ConversationState::Queued | ConversationState::LeftMessage
                    )
            })
            .collect();
        q.sort_by_key(|c| (c.info.opened_at_ms, c.info.id));
        q
    }

    /// My open conversations, most recently active first.
    pub fn mine(&self) -> Vec<&Conv> {
        let me = self.my_id();
        self.active_where(|c| c.info.assigned == me)
    }

    /// Other agents' open conversations, for a supervisor.
    pub fn team_chats(&self) -> Vec<&Conv> {
        let me = self.my_id();
        self.active_where(|c| c.info.assigned.is_some() && c.info.assigned != me)
    }

    fn active_where(&self, keep: impl Fn(&Conv) -> bool) -> Vec<&Conv> {
        let mut v: Vec<&Conv> = self
            .convs
            .values()
            .filter(|c| c.info.state == ConversationState::Active && keep(c))
            .collect();
        v.sort_by_key(|c| {
            let last = c.last().map_or(c.info.updated_at_ms, |m| m.at_ms);
            (std::cmp::Reverse(last.max(c.info.updated_at_ms)), c.info.id)
        });
        v
    }

    /// Whether I serve this conversation now.
    pub fn is_mine(&self, id: ConversationId) -> bool {
        self.convs.get(&id).is_some_and(|c| {
            c.info.state == ConversationState::Active
                && c.info.assigned.is_some()
                && c.info.assigned == self.my_id()
        })
    }

    /// Online visitors, newest visit first.
    pub fn visitors_sorted(&self) -> Vec<&VisitorInfo> {
        let mut v: Vec<&VisitorInfo> = self.visitors.values().filter(|v| v.online).collect();
        v.sort_by(|a, b| {
            b.visit_started_ms
                .cmp(&a.visit_started_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }

    /// The team, online first, then by name.
    pub fn team_sorted(&self) -> Vec<&TeamMember> {
        let rank = |p: Presence| match p {
            Presence::Online => 0,
            Presence::Away => 1,
            Presence::Offline => 2,
        };
        let mut v: Vec<&TeamMember> = self.team.values().filter(|m| !m.disabled).collect();
        v.sort_by(|a, b| {
            (rank(a.presence), a.name.to_lowercase(), a.agent).cmp(&(
                rank(b.presence),
                b.name.to_lowercase(),
                b.agent,
            ))
        });
        v
    }

    /// Agents a chat could be transferred to now: online, with room, and
    /// not the one serving it.
    pub fn transfer_targets(&self, serving: Option<AgentId>) -> Vec<&TeamMember> {
        self.team_sorted()
            .into_iter()
            .filter(|m| {
                Some(m.agent) != serving && m.presence == Presence::Online && m.active < m.capacity
            })
            .collect()
    }

    /// Open a conversation in the chat pane; returns its visitor.
    pub fn select_local(&mut self, id: ConversationId) -> Option<String> {
        let visitor = self.convs.get(&id)?.info.visitor.clone();
        self.selected = Some(id);
        self.details_visitor = Some(visitor.clone());
        self.drafts.entry(id).or_default();
        Some(visitor)
    }

    /// With nothing open, open my most recent conversation, so the app
    /// starts where the agent left off.
    pub fn select_default(&mut self) {
        if self.selected.is_some() {
            return;
        }
        if let Some(id) = self.mine().first().map(|c| c.info.id) {
            self.select_local(id);
        }
    }

    /// Replace the data with the store's (start, snapshot, resync). Drafts,
    /// selection, team and history survive.
    pub fn load(&mut self, ws: Workspace) {
        let Workspace {
            session,
            conversations,
            mut recent,
            visitors,
            ..
        } = ws;
        if session.is_some() {
            self.me = session;
        }
        self.convs = conversations
            .into_iter()
            .map(|s| {
                let id = s.info.id;
                let msgs = recent.remove(&id).unwrap_or_default();
                (id, Conv::from_summary(s, msgs))
            })
            .collect();
        self.visitors = visitors.into_iter().map(|v| (v.id.clone(), v)).collect();
        self.select_default();
    }

    /// A conversation appeared or changed.
    pub fn apply_conversation(&mut self, info: ConversationInfo) {
        if let Some(h) = self.history.get_mut(&info.visitor) {
            h.merge_conversation(info.clone());
        }
        if let Some(v) = self.visitors.get_mut(&info.visitor) {
            if info.state == ConversationState::Closed {
                if v.conversation == Some(info.id) {
                    v.conversation = None;
                }
            } else {
                v.conversation = Some(info.id);
            }
        }
        match self.convs.get_mut(&info.id) {
            Some(c) => c.info = info,
            None => {
                self.convs.insert(info.id, Conv::new(info));
            }
        }
    }

    /// A message to show (queued here, or new from the server). `None` when
    /// its conversation is unknown.
    pub fn apply_message(&mut self, m: StoredMessage) -> Option<MessageApplied> {
        let from_visitor = matches!(m.author, Author::Visitor { .. });
        let c = self.convs.get_mut(&m.conversation)?;
        if let (Some(chat), Some(h)) = (as_chat(&m), self.history.get_mut(&c.info.visitor)) {
            h.merge_message(chat);
        }
        let new = c.upsert(m);
        Some(MessageApplied { new, from_visitor })
    }

    /// A shown message was acked, echoed, delivered or refused.
    pub fn apply_state(
        &mut self,
        conversation: ConversationId,
        client_id: MsgId,
        message: Option<MessageId>,
        state: DeliveryState,
        order: MessageOrder,
    ) {
        let Some(c) = self.convs.get_mut(&conversation) else {
            return;
        };
        c.restate(client_id, message, state, order);
        if let Some(m) = c.messages.iter().find(|m| m.client_id == client_id)
            && let (Some(chat), Some(h)) = (as_chat(m), self.history.get_mut(&c.info.visitor))
        {
            h.merge_message(chat);
        }
    }

    pub fn apply_team(&mut self, list: Vec<TeamMember>) {
        self.team = list.into_iter().map(|m| (m.agent, m)).collect();
        self.sync_my_presence();
    }

    pub fn apply_member(&mut self, m: TeamMember) {
        self.team.insert(m.agent, m);
        self.sync_my_presence();
    }

    fn sync_my_presence(&mut self) {
        if let Some(me) = self.my_id().and_then(|id| self.team.get(&id))
            && me.presence != Presence::Offline
        {
            self.presence = Some(me.presence);
        }
    }

    /// Who serves a conversation, for the words on screen.
    pub fn serving_name(&self, c: &ConversationInfo) -> Option<String> {
        let a = c.assigned?;
        self.team
            .get(&a)
            .map(|m| m.name.clone())
            .or_else(|| c.assigned_name.clone())
    }
}

/// How a message reads in a list or a notification.
pub fn message_text(m: &StoredMessage) -> String {
    match m.author {
        Author::System => system_text(&m.body),
        _ => m.body.clone(),
    }
}

#[cfg(test)]
mod tests {
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
        let shown: Vec<Option<MessageId>> =
            d.convs[&1].messages.iter().map(|m| m.message).collect();
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
                            let action = Action::Send { conversation: CONV, body: body.clone() };
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
}
