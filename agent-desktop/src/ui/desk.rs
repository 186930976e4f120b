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

use std::collections::{BTreeMap, HashMap, VecDeque};

use holdfast_protocol::agent::{
    AgentId, Author, ChatMessage, ConversationId, ConversationInfo, ConversationState, MessageId,
    Presence, QueryResult, Role, TeamMember, VisitorInfo,
};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;
use iced::widget::text_editor;

use holdfast_client::store::{DeliveryState, MessageOrder, RECENT_PER_CONVERSATION, Session};
use holdfast_client::{ConversationSummary, StoredMessage, Workspace};

use crate::ui::format;
use crate::ui::i18n::{Words, tr};

/// Messages of one conversation kept in memory when it is not open. The
/// store has the rest; keeping only a window is what keeps memory flat over
/// a long day.
pub const KEEP_PER_CONVERSATION: usize = RECENT_PER_CONVERSATION as usize;
/// Page size for visitor history (server).
pub const HISTORY_PAGE: u32 = 20;

/// A conversation's name on screen; see [`Desk::conv_label`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLabel {
    pub name: String,
    /// "on Checkout", from the visitor's current page, when it is known.
    pub place: Option<String>,
}

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

    /// The chat's tags: those of its latest `tagged` line.
    pub fn tags(&self) -> Vec<String> {
        self.messages
            .iter()
            .rev()
            .find_map(|m| match (&m.author, Notice::parse(&m.body)) {
                (Author::System, Some(Notice::Tagged { tags, .. })) => Some(tags),
                _ => None,
            })
            .unwrap_or_default()
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
                self.error = Some((tr().history_refused)(&e.code.to_string(), &e.message));
                None
            }
            // Not a history answer: link queries are answered elsewhere.
            QueryResult::AttachmentLink { .. }
            | QueryResult::Upload { .. }
            | QueryResult::UploadDone { .. }
            | QueryResult::AttachmentBytes { .. }
            | QueryResult::InviteRules(_) => None,
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
        attachment: m.attachment.clone(),
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
    /// The visitor list: held here only. The visitors panel, the chat
    /// header and the details panel all read it from here.
    pub visitors: HashMap<String, VisitorInfo>,
    pub convs: HashMap<ConversationId, Conv>,
    pub team: BTreeMap<AgentId, TeamMember>,
    pub selected: Option<ConversationId>,
    pub details_visitor: Option<String>,
    pub drafts: HashMap<ConversationId, text_editor::Content>,
    pub history: HashMap<String, History>,
    /// History requests in flight, by the id the client handed back.
    pub history_requests: HashMap<u32, String>,
    /// Select the conversation that an invite to (or an accept of) this
    /// opens, when it arrives.
    pub pending_open: Option<PendingOpen>,
    /// The last error worth showing above the workspace.
    pub banner: Option<Words>,
    /// Attachments fetched, and files on their way up.
    pub files: crate::ui::files::Files,
    /// The block form, open in the details panel for one visitor.
    pub block_form: Option<BlockForm>,
    /// Blocks and unblocks made from this app since it started, by visitor.
    /// The server does not list a visitor's older blocks to agents, so a
    /// visitor missing here may still be blocked: the app only knows what
    /// it did itself.
    pub blocks: HashMap<String, Blocking>,
    /// Command outcomes no one here was waiting for yet: the server can
    /// answer before the outbox has told the app the command's id.
    pub early_outcomes: VecDeque<(MsgId, Result<(), String>)>,
    /// The tags this site's chats may carry, from the last login.
    pub site_tags: Vec<String>,
    /// The canned replies this agent may use (the site's, then its own),
    /// as the server last listed them.
    pub canned: Vec<holdfast_protocol::agent::CannedReply>,
    /// The site's groups (10.23) as last sent: names to show for a
    /// chat's group key, which queues are this agent's, and where a chat
    /// can be moved.
    pub groups: Vec<holdfast_protocol::agent::GroupInfo>,
    /// Tag changes sent but not yet back as a `tagged` line, by chat.
    pub tags_pending: HashMap<ConversationId, Vec<String>>,
    /// The latest automatic invitation of each visitor, as signalled (not
    /// stored: after a restart only new ones show).
    pub invitations: HashMap<String, holdfast_protocol::agent::InvitationSignal>,
    /// Where Tab's focus ring is, and the highlighted row of a list.
    pub ring: crate::ui::screen::workspace::ring::Ring,
}

/// Outcomes kept while their command's id is on its way; the race they
/// cover lasts one round of the event loop, so a few are plenty.
const EARLY_OUTCOMES: usize = 16;

/// The block form being filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockForm {
    pub visitor: String,
    pub reason: String,
    pub by_address: bool,
}

impl BlockForm {
    /// The server takes 1 to 500 characters that are not all blanks.
    pub fn can_confirm(&self) -> bool {
        let r = self.reason.trim();
        !r.is_empty() && r.chars().count() <= BLOCK_REASON_MAX
    }
}

/// The longest reason the server keeps (PROTOCOL.md, `Action::Block`).
pub const BLOCK_REASON_MAX: usize = 500;

/// A block (or unblock) this app sent, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocking {
    pub reason: String,
    pub state: BlockState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockState {
    /// On its way; `id` is `None` until the outbox has it.
    Sending {
        unblock: bool,
        id: Option<MsgId>,
    },
    Blocked,
    Unblocked,
    /// The server (or the outbox) said no; what it said.
    Refused {
        unblock: bool,
        message: String,
    },
}

impl Blocking {
    /// Whether, as far as this app knows, the visitor is blocked now.
    pub fn blocked(&self) -> bool {
        match &self.state {
            BlockState::Blocked => true,
            BlockState::Sending { unblock, .. } | BlockState::Refused { unblock, .. } => *unblock,
            BlockState::Unblocked => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingOpen {
    Visitor(String),
    Conversation(ConversationId),
}

impl Desk {
    pub fn new() -> Self {
        Self::default()
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

    /// Whether a waiting chat is this agent's to take: one for no group is
    /// everyone's, one for a group its members' and a supervisor's or
    /// admin's (10.23; the server refuses anyone else). A group this app
    /// has not heard of yet counts as not this agent's, as the server
    /// would say.
    pub fn offered(&self, info: &ConversationInfo) -> bool {
        match &info.group {
            None => true,
            Some(g) => self.oversees() || self.groups.iter().any(|x| &x.key == g && x.member),
        }
    }

    /// A group's name for display, or its key while the list has not
    /// arrived (or the group was just removed).
    pub fn group_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.groups
            .iter()
            .find(|g| g.key == key)
            .map_or(key, |g| g.name.as_str())
    }

    /// Unassigned conversations waiting for this agent (see
    /// [`Desk::offered`]), longest wait first.
    pub fn queue(&self) -> Vec<&Conv> {
        let mut q: Vec<&Conv> = self
            .convs
            .values()
            .filter(|c| {
                self.offered(&c.info)
                    && c.info.assigned.is_none()
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

    /// How a conversation is named in lists, alerts and its header: the
    /// visitor's name (or short id), and where they are on the site.
    ///
    /// A site may name every visitor alike (the demo calls each one "Demo
    /// shopper", a shop may say "Guest"), and two rows that read the same
    /// cannot be told apart; so when another open chat has the same name
    /// but another visitor, the name gets the visitor's own short tag: the
    /// site's id for them, else the start of theirs.
    pub fn conv_label(&self, info: &ConversationInfo) -> ConvLabel {
        let visitor = self.visitors.get(&info.visitor);
        let name = self.base_name(info);
        let open = |s: ConversationState| {
            matches!(
                s,
                ConversationState::Active
                    | ConversationState::Queued
                    | ConversationState::LeftMessage
            )
        };
        let clash = self.convs.values().any(|o| {
            o.info.visitor != info.visitor && open(o.info.state) && self.base_name(&o.info) == name
        });
        let name = if clash {
            let tag: String = visitor
                .and_then(|v| v.external_id.as_deref())
                .filter(|x| !x.trim().is_empty())
                .unwrap_or(&info.visitor)
                .chars()
                .take(12)
                .collect();
            format!("{name} · {tag}")
        } else {
            name
        };
        let place = visitor.and_then(|v| {
            let page = v.trail.last()?;
            let title = page.title.trim();
            let at = if title.is_empty() {
                page.url.as_str()
            } else {
                title
            };
            Some(if v.online {
                (tr().place_on)(at)
            } else {
                (tr().place_left)(at)
            })
        });
        ConvLabel { name, place }
    }

    /// A chat's name before it is told apart from others: the name the
    /// visitor gave; else, as issue 17 asks, their language and current
    /// page ("Visitor · Chinese · /pricing"); else the start of their id.
    fn base_name(&self, info: &ConversationInfo) -> String {
        self.visitor_name(&info.visitor, info.visitor_name.as_deref())
    }

    /// How the visitor `visitor` is named wherever they appear (a chat,
    /// the visitors list, the details): the name they gave (`stated`);
    /// else their language and current page ("Visitor · Chinese ·
    /// /pricing"); else the start of their id.
    pub fn visitor_name(&self, visitor: &str, stated: Option<&str>) -> String {
        if crate::ui::widget::has_stated_name(stated) {
            return format::visitor_label(stated, visitor);
        }
        let v = self.visitors.get(visitor);
        let lang = v.and_then(|v| v.lang.as_deref());
        let page = v.and_then(|v| v.trail.last()).map(|p| p.url.as_str());
        format::nameless_label(lang, page).unwrap_or_else(|| format::visitor_label(None, visitor))
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
        if let (Author::System, Some(Notice::Tagged { tags, .. })) =
            (&m.author, Notice::parse(&m.body))
            && self.tags_pending.get(&m.conversation) == Some(&tags)
        {
            self.tags_pending.remove(&m.conversation);
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

    /// The outbox took a block or unblock of `visitor` as command `id`.
    pub fn block_queued(&mut self, visitor: &str, id: MsgId) {
        let early = self.take_early_outcome(id);
        let Some(b) = self.blocks.get_mut(visitor) else {
            return;
        };
        let BlockState::Sending { unblock, .. } = b.state else {
            return;
        };
        b.state = BlockState::Sending {
            unblock,
            id: Some(id),
        };
        if let Some(outcome) = early {
            self.command_outcome(id, outcome);
        }
    }

    /// The server's outcome of command `id` if it came before the outbox
    /// handed `id` back (the two travel different roads).
    pub fn take_early_outcome(&mut self, id: MsgId) -> Option<Result<(), String>> {
        let at = self.early_outcomes.iter().position(|(o, _)| *o == id)?;
        self.early_outcomes.remove(at).map(|(_, outcome)| outcome)
    }

    /// The server's outcome of command `id`; false if it was none of the
    /// blocks shown here (it is kept a while in case it is one whose id
    /// is still on its way).
    pub fn command_outcome(&mut self, id: MsgId, outcome: Result<(), String>) -> bool {
        let found = self
            .blocks
            .values_mut()
            .find(|b| matches!(b.state, BlockState::Sending { id: Some(i), .. } if i == id));
        let Some(b) = found else {
            if self.early_outcomes.len() >= EARLY_OUTCOMES {
                self.early_outcomes.pop_front();
            }
            self.early_outcomes.push_back((id, outcome));
            return false;
        };
        let unblock = matches!(b.state, BlockState::Sending { unblock: true, .. });
        b.state = match (outcome, unblock) {
            (Ok(()), false) => BlockState::Blocked,
            (Ok(()), true) => BlockState::Unblocked,
            (Err(message), unblock) => BlockState::Refused { unblock, message },
        };
        true
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
        Author::System => tr().system_text(&m.body),
        _ => m.body.clone(),
    }
}

#[cfg(test)]
mod tests;
