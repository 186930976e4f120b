//! The workspace: the side column (waiting list, the agent's chats, a
//! supervisor's view of the team's chats, the team, the visitors), the chat
//! pane and the details panel, under the top and connection bars; or, when
//! signing out with chats open, the sign-out prompt in their place.
//!
//! Its data is the [`Desk`], held here once and read by every panel: the
//! visitor list in particular lives only in `desk.visitors`, which the
//! visitors panel lists, the chat header reads the site's id from and the
//! details panel describes. Each panel sends its own messages; a panel with
//! state of its own (the bars, visitors, chat, sign-out) turns them into
//! events in its `update`, and a panel without (queue, conversations,
//! details) sends requests only this module can carry out. Everything that
//! needs the client happens here, with the handle the app lends for the
//! call ([`Env`]).
//!
//! The app turns the core's updates into calls on this state
//! (`on_conversation`, `on_message`, `on_history`, `reload`, `logged_in`).
//!
//! The layout follows the room it gets ([`Layout::for_width`]): the lists
//! and the details can each be collapsed to a thin rail (a button, Ctrl+B
//! and Ctrl+D; remembered) so a 1024 px window keeps a readable chat, and
//! past 1600 px the visitors get a column of their own beside the chats
//! and the panels widen, rather than the transcript stretching into empty
//! space. Bubbles stay at most [`chat::BUBBLE_MAX`] wide either way.
//!
//! The keyboard reaches everything that matters in a day ([`Shortcut`]):
//! Alt+↑/↓ the previous and next chat in the lists' order, Ctrl+Enter
//! accepts the longest waiting chat, Ctrl+K finds a chat by name
//! ([`jump`]), Tab goes round the regions with ↑/↓ and Enter working the
//! focused list or the details, which scroll to follow ([`ring`],
//! [`scroll`]), and opening a chat puts the cursor in its composer.

pub mod bar;
pub mod canned;
pub mod chat;
pub mod conversations;
pub mod details;
pub mod invite_rules;
pub mod jump;
pub mod queue;
pub mod ring;
pub mod scroll;
pub mod sign_out;
pub mod tags;
pub mod team;
pub mod typing;
pub mod visitors;

use std::collections::HashMap;
use std::path::Path;

use holdfast_protocol::agent::{
    AgentId, ConversationId, ConversationInfo, ConversationState, Presence, QueryResult,
};
use holdfast_protocol::ids::MsgId;
use iced::widget::{
    button, column, container, responsive, row, rule, scrollable, space, stack, text_editor,
    tooltip,
};
use iced::{Alignment, Element, Fill, Task};

use crate::ui::attention::Attention;
use crate::ui::desk::{BlockState, Blocking, Conv, Desk, HISTORY_PAGE, PendingOpen, message_text};
use crate::ui::files::{self, Fetched, Source, Then};
use crate::ui::format;
use crate::ui::i18n::{Lang, Words, tr};
use crate::ui::notify::{Alert, Notifier};
use crate::ui::prefs::Panels;
use crate::ui::theme::{self, Choice};
use crate::ui::widget::{card, small, text};
use holdfast_client::store::Session;
use holdfast_client::{ClientHandle, ConnState, ConnectionStatus, SignOutResult, Store};
use holdfast_client::{StoredMessage, Workspace};

/// Page size for "Load earlier messages" (local store).
pub const PAGE: u32 = 50;
/// Visitor histories kept in memory at once.
const HISTORY_KEEP: usize = 32;
/// The side column's width.
const SIDE: f32 = 330.0;
/// A collapsed panel's rail.
pub const RAIL: f32 = 44.0;
/// From this width on, the visitors get a column of their own.
pub const WIDE: f32 = 1600.0;
/// Below this width, the open panels are narrower.
const NARROW: f32 = 1200.0;
/// Thumbnails and downloads kept in memory before those off screen go.
const FILES_KEEP: usize = 64;

/// What the views need from outside the workspace: the connection, the
/// clock, and the username typed at sign-in (shown until the server names
/// the agent).
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub status: &'a ConnectionStatus,
    pub connection_text: String,
    pub needs_password: bool,
    pub username: &'a str,
    pub now_ms: i64,
    pub utc_offset_secs: i32,
    /// The theme the agent chose (the top bar's switch shows it).
    pub theme: Choice,
    /// The language on screen (the top bar's switch shows it).
    pub lang: Lang,
    pub panels: Panels,
    pub attention: Attention,
}

/// A side panel that can be collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Waiting, conversations, team and visitors.
    Lists,
    Details,
}

/// The widths of the workspace's columns for one window width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// The chats column (waiting, conversations, team), or the whole side
    /// column when the visitors share it; `None` when collapsed.
    pub lists: Option<f32>,
    /// The visitors' own column, on wide windows.
    pub visitors: Option<f32>,
    pub details: Option<f32>,
}

impl Layout {
    pub fn for_width(width: f32, panels: Panels) -> Self {
        let (lists, visitors, details) = if width >= WIDE {
            (340.0, Some(360.0), 380.0)
        } else if width < NARROW {
            (290.0, None, 270.0)
        } else {
            (SIDE, None, details::WIDTH)
        };
        Self {
            lists: (!panels.lists_collapsed).then_some(lists),
            visitors: visitors.filter(|_| !panels.lists_collapsed),
            details: (!panels.details_collapsed).then_some(details),
        }
    }

    /// What is left for the chat.
    pub fn chat_width(&self, width: f32) -> f32 {
        let rail = |w: Option<f32>| w.unwrap_or(RAIL) + 1.0;
        width - rail(self.lists) - self.visitors.map_or(0.0, |w| w + 1.0) - rail(self.details)
    }
}

/// What an update borrows from the app: the session's handle (none before
/// a sign-in), the window's focus, the notifier, and the store to page from
/// when there is no session yet. All of it outlives the workspace.
#[derive(Debug)]
pub struct Env<'a> {
    pub handle: Option<&'a ClientHandle>,
    pub focused: bool,
    pub notifier: &'a mut Notifier,
    pub store_path: Option<&'a Path>,
    /// The panels the agent collapsed (Tab skips them).
    pub panels: Panels,
}

#[derive(Debug)]
pub struct State {
    pub desk: Desk,
    pub bar: bar::State,
    pub visitors: visitors::State,
    pub chat: chat::State,
    pub sign_out: sign_out::State,
    /// The invitation rules panel (admins).
    pub rules: invite_rules::State,
    /// Repeat alerts raised so far for each chat still waiting.
    realerted: HashMap<ConversationId, u32>,
    /// The "Jump to conversation" box, when open.
    pub jump: Option<jump::State>,
}

#[derive(Debug, Clone)]
pub enum Message {
    Bar(bar::Message),
    Queue(queue::Message),
    Conversations(conversations::Message),
    Visitors(visitors::Message),
    Chat(chat::Message),
    Details(details::Message),
    Rules(invite_rules::Message),
    SignOut(sign_out::Message),
    SignOutFinished(Result<SignOutResult, String>),
    /// An action reached the outbox (or failed to).
    ActionDone(Result<(), String>),
    /// A fetched thumbnail, decoded (or not).
    Thumbnail(String, Result<iced::widget::image::Handle, String>),
    /// A block or unblock of this visitor reached the outbox as this
    /// command, or failed to.
    BlockQueued {
        visitor: String,
        result: Result<MsgId, String>,
    },
    /// Esc: close the box or form that is open.
    Escape,
    Shortcut(Shortcut),
    /// Tab, Shift+Tab, and ↑, ↓ and Enter outside a text field.
    Ring(ring::Key),
    Jump(jump::Message),
    SetTheme(Choice),
    TogglePanel(Panel),
}

/// The workspace's keyboard shortcuts, which work wherever focus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// Ctrl+K: open the "Jump to conversation" box.
    Jump,
    /// Alt+↑: the chat above the open one in the lists.
    Previous,
    /// Alt+↓: the chat below.
    Next,
    /// Ctrl+Enter: accept the chat that has waited longest.
    AcceptOldest,
}

/// What only the app can do: start a session, and leave the workspace.
#[derive(Debug, Clone)]
pub enum Event {
    /// Connect with the password typed in the connection bar.
    Connect,
    SignedOut(Result<SignOutResult, String>),
    /// The theme switch: the choice is the app's to remember.
    SetTheme(Choice),
    /// The language switch: the app applies and remembers it.
    SetLang(Lang),
    /// Collapse or expand a panel: remembered by the app.
    TogglePanel(Panel),
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    pub fn new() -> Self {
        Self {
            desk: Desk::new(),
            bar: bar::State::default(),
            visitors: visitors::State::default(),
            chat: chat::State::default(),
            sign_out: sign_out::State::default(),
            rules: invite_rules::State::default(),
            realerted: HashMap::new(),
            jump: None,
        }
    }

    /// After a sign-out: nothing of this account stays on screen. (The
    /// connection bar's password field is left as typed.)
    pub fn clear(&mut self) {
        self.desk = Desk::new();
        self.visitors = visitors::State::default();
        self.chat = chat::State::default();
        self.sign_out = sign_out::State::default();
        self.rules = invite_rules::State::default();
        self.jump = None;
    }

    pub fn update(
        &mut self,
        message: Message,
        env: &mut Env<'_>,
    ) -> (Task<Message>, Option<Event>) {
        let task = match message {
            Message::Bar(m) => match self.bar.update(m) {
                None => Task::none(),
                Some(bar::Event::Connect) => return (Task::none(), Some(Event::Connect)),
                Some(bar::Event::SetPresence(p)) => {
                    self.desk.presence = Some(p);
                    self.with_handle(
                        env,
                        move |h| async move { h.set_presence(p).await.map(drop) },
                    )
                }
                Some(bar::Event::SignOut) => {
                    if self.desk.mine().is_empty() {
                        self.start_sign_out(env, None)
                    } else {
                        self.sign_out.prompt = true;
                        Task::none()
                    }
                }
                Some(bar::Event::ReconnectNow) => {
                    self.with_handle(env, |h| async move { h.reconnect_now().await })
                }
                Some(bar::Event::DismissBanner) => {
                    self.desk.banner = None;
                    Task::none()
                }
                Some(bar::Event::SetTheme(c)) => return (Task::none(), Some(Event::SetTheme(c))),
                Some(bar::Event::SetLang(l)) => return (Task::none(), Some(Event::SetLang(l))),
                Some(bar::Event::Canned) => {
                    self.rules.panel = None;
                    self.chat.canned.manager = Some(canned::Manager::default());
                    Task::none()
                }
                Some(bar::Event::Rules) => {
                    self.chat.canned.manager = None;
                    let e = self.rules.update(invite_rules::Message::Open);
                    self.on_rules(env, e)
                }
            },
            Message::Rules(m) => {
                let queued = match &m {
                    invite_rules::Message::Queued(Ok(id)) => Some(*id),
                    _ => None,
                };
                let e = self.rules.update(m);
                // As with canned replies: the server may have answered first.
                if let Some(id) = queued
                    && let Some(outcome) = self.desk.take_early_outcome(id)
                {
                    self.rules.outcome(id, &outcome);
                }
                self.on_rules(env, e)
            }
            Message::Queue(queue::Message::Accept(id)) => self.accept(env, id),
            Message::Conversations(conversations::Message::Select(id)) => {
                self.select_and_focus(env, id)
            }
            Message::Shortcut(s) => self.shortcut(env, s),
            Message::Ring(key) => self.ring(env, key),
            Message::Jump(m) => {
                let Some(jump) = &mut self.jump else {
                    return (Task::none(), None);
                };
                match jump.update(m, &self.desk) {
                    None => Task::none(),
                    Some(jump::Event::Open(id)) => {
                        self.jump = None;
                        self.select_and_focus(env, id)
                    }
                }
            }
            Message::Visitors(m) => match self.visitors.update(m, &self.desk) {
                None => Task::none(),
                Some(visitors::Event::Details(v)) => {
                    self.desk.details_visitor = Some(v.clone());
                    self.load_history(env, v, false)
                }
                Some(visitors::Event::OpenChat(v)) => self.open_visitor_chat(env, &v),
                Some(visitors::Event::Invite { visitor, body }) => {
                    self.desk.pending_open = Some(PendingOpen::Visitor(visitor.clone()));
                    self.desk.details_visitor = Some(visitor.clone());
                    self.with_handle(env, move |h| async move {
                        h.invite(visitor, body).await.map(drop)
                    })
                }
            },
            // The server may answer before the outbox has told us the
            // command's id: such an outcome waits in the desk.
            Message::Chat(chat::Message::Canned(canned::Message::Queued(Ok(id)))) => {
                self.chat.update(
                    chat::Message::Canned(canned::Message::Queued(Ok(id))),
                    &mut self.desk,
                );
                if let Some(outcome) = self.desk.take_early_outcome(id) {
                    self.chat.canned.outcome(id, &outcome);
                }
                Task::none()
            }
            // The composer answers a click or typing: the cursor is in the
            // chat, so the ring is too.
            Message::Chat(chat::Message::Compose(action))
                if !self.desk.ring.on(ring::Region::Chat)
                    && !matches!(action, text_editor::Action::Scroll { .. }) =>
            {
                self.desk.ring.region = Some(ring::Region::Chat);
                return self.update(Message::Chat(chat::Message::Compose(action)), env);
            }
            Message::Chat(m) => match self.chat.update(m, &mut self.desk) {
                None => Task::none(),
                Some(chat::Event::Send) => self.send(env),
                Some(chat::Event::Canned(e)) => self.on_canned(env, e),
                Some(chat::Event::OpenLink(url)) => open_link(url),
                Some(chat::Event::Copy(id, text)) => Task::batch([
                    iced::clipboard::write(text),
                    Task::perform(tokio::time::sleep(COPIED_SHOWN), move |()| {
                        Message::Chat(chat::Message::CopiedShown(id))
                    }),
                ]),
                // A signal: the core throttles it and drops it offline.
                Some(chat::Event::Typing(id, typing)) => {
                    if let Some(h) = env.handle {
                        let _best_effort = h.typing(id, typing);
                    }
                    Task::none()
                }
                Some(chat::Event::LoadEarlier) => {
                    self.load_earlier(env);
                    Task::none()
                }
                Some(chat::Event::SetTags(id, tags)) => {
                    self.with_handle(env, move |h| async move { h.tag(id, tags).await.map(drop) })
                }
                Some(chat::Event::Close(id)) => {
                    self.with_handle(env, move |h| async move { h.close(id).await.map(drop) })
                }
                Some(chat::Event::Transfer {
                    conversation,
                    from,
                    to,
                    note,
                }) => self.with_handle(env, move |h| async move {
                    match to {
                        chat::TransferTarget::Agent(to) => {
                            h.transfer(conversation, from, to, note).await.map(drop)
                        }
                        chat::TransferTarget::Group(group) => h
                            .transfer_to_group(conversation, from, group, note)
                            .await
                            .map(drop),
                    }
                }),
                Some(chat::Event::Attach) => {
                    Task::perform(files::pick_file(tr().send_a_file), |p| {
                        Message::Chat(chat::Message::Picked(p))
                    })
                }
                Some(chat::Event::Paste) => Task::perform(
                    async {
                        tokio::task::spawn_blocking(files::read_clipboard_image)
                            .await
                            .map_err(|e| e.to_string())?
                    },
                    |r| Message::Chat(chat::Message::Clipboard(r)),
                ),
                Some(chat::Event::PasteText) => iced::clipboard::read().map(|t| {
                    let t = std::sync::Arc::new(t.unwrap_or_default());
                    Message::Chat(chat::Message::Compose(text_editor::Action::Edit(
                        text_editor::Edit::Paste(t),
                    )))
                }),
                Some(chat::Event::SendFile(source)) => self.send_file(env, source, None),
                Some(chat::Event::File(a)) => self.file_action(env, a),
                Some(chat::Event::FileQueued(Ok((upload, source)))) => {
                    self.desk.files.queued(upload, source);
                    Task::none()
                }
                Some(chat::Event::FileQueued(Err(e))) => {
                    self.desk.banner = Some(Words::new(move |t| (t.file_not_sent)(&e)));
                    Task::none()
                }
                Some(chat::Event::UploadStopped(id, r)) => {
                    match r {
                        Ok(true) => self.desk.files.forget(id),
                        Ok(false) => {
                            self.desk.files.forget(id);
                            self.desk.banner = Some(Words::new(|t| t.too_late_to_cancel.into()));
                        }
                        Err(e) => self.desk.banner = Some(e.into()),
                    }
                    Task::none()
                }
            },
            Message::Details(details::Message::LoadHistory { visitor, older }) => {
                self.load_history(env, visitor, older)
            }
            Message::Details(details::Message::File(a)) => self.file_action(env, a),
            Message::Details(details::Message::BlockOpen(visitor)) => {
                self.desk.block_form = Some(crate::ui::desk::BlockForm {
                    visitor,
                    ..Default::default()
                });
                Task::none()
            }
            Message::Details(details::Message::BlockReason(r)) => {
                if let Some(f) = &mut self.desk.block_form {
                    f.reason = r;
                }
                Task::none()
            }
            Message::Details(details::Message::BlockByAddress(on)) => {
                if let Some(f) = &mut self.desk.block_form {
                    f.by_address = on;
                }
                Task::none()
            }
            // Esc closes the innermost thing open: the jump box, the reply
            // picker, the canned replies panel, then the forms (the jump
            // box alone when it is open, so a form under it keeps what was
            // typed).
            Message::Escape if self.jump.is_some() => {
                self.jump = None;
                Task::none()
            }
            Message::Escape if self.chat.canned.dismiss(&self.desk, &self.selected_draft()) => {
                Task::none()
            }
            Message::Escape if self.chat.canned.manager.is_some() => {
                self.chat.canned.manager = None;
                Task::none()
            }
            Message::Escape if self.rules.panel.is_some() => {
                self.rules.panel = None;
                Task::none()
            }
            Message::Escape if self.desk.block_form.is_some() || self.chat.transfer.is_some() => {
                self.desk.block_form = None;
                self.chat.transfer = None;
                Task::none()
            }
            // Nothing open to close: out of a list or the details, back to
            // the chat, as Tab round to it would.
            Message::Escape
                if matches!(
                    self.desk.ring.region,
                    Some(ring::Region::Lists | ring::Region::Visitors | ring::Region::Details)
                ) && !self.sign_out.prompt =>
            {
                ring::Ring::enter(&mut self.desk, ring::Region::Chat);
                iced::widget::operation::focus(chat::COMPOSER)
            }
            Message::Escape => Task::none(),
            Message::Details(details::Message::BlockCancel) => {
                self.desk.block_form = None;
                Task::none()
            }
            Message::Details(details::Message::BlockConfirm) => self.block(env),
            Message::Details(details::Message::Unblock(visitor)) => self.unblock(env, visitor),
            Message::BlockQueued { visitor, result } => {
                match result {
                    Ok(id) => self.desk.block_queued(&visitor, id),
                    Err(message) => {
                        if let Some(b) = self.desk.blocks.get_mut(&visitor) {
                            let unblock = b.blocked();
                            b.state = BlockState::Refused { unblock, message };
                        }
                    }
                }
                Task::none()
            }
            Message::SignOut(m) => match self.sign_out.update(m) {
                None => Task::none(),
                Some(sign_out::Event::SignOut { to }) => self.start_sign_out(env, to),
            },
            Message::SignOutFinished(result) => {
                self.sign_out.signing_out = false;
                return (Task::none(), Some(Event::SignedOut(result)));
            }
            Message::Thumbnail(id, r) => {
                let key = (id, true);
                match (r, self.desk.files.fetched.get_mut(&key)) {
                    (Ok(h), Some(Fetched::Ready { handle, .. })) => *handle = Some(h),
                    (Err(e), _) => {
                        self.desk.files.fetched.insert(key, Fetched::Failed(e));
                    }
                    // Dropped meanwhile (a sign-out): nothing to show it in.
                    (Ok(_), _) => {}
                }
                Task::none()
            }
            Message::SetTheme(c) => return (Task::none(), Some(Event::SetTheme(c))),
            Message::TogglePanel(p) => return (Task::none(), Some(Event::TogglePanel(p))),
            Message::ActionDone(res) => {
                if let Err(e) = res {
                    self.desk.banner = Some(e.into());
                }
                Task::none()
            }
        };
        (task, None)
    }

    /// The top and connection bars, drawn above the content (and above the
    /// server key prompt when it covers the workspace).
    pub fn bars<'a>(&'a self, ctx: &Context<'a>) -> Element<'a, Message> {
        column![
            self.bar
                .top_bar(&self.desk, ctx, self.sign_out.signing_out)
                .map(Message::Bar),
            self.bar.connection_bar(&self.desk, ctx).map(Message::Bar),
        ]
        .into()
    }

    /// The panes, or the sign-out prompt in their place.
    pub fn view<'a>(&'a self, ctx: &Context<'a>) -> Element<'a, Message> {
        let desk = &self.desk;
        if self.sign_out.prompt {
            let live = matches!(ctx.status.state, ConnState::Live);
            return sign_out::view(desk, live).map(Message::SignOut);
        }
        let panels = ctx.panels;
        let live = matches!(ctx.status.state, ConnState::Live);
        let (now_ms, offset) = (ctx.now_ms, ctx.utc_offset_secs);
        let attention = ctx.attention;
        let ring = &desk.ring;
        responsive(move |size| {
            let layout = Layout::for_width(size.width, panels);
            // The panels' scrollbars sit beside their content (`spacing`),
            // not over the end of its lines.
            let mut panes = row![].height(Fill);
            match layout.lists {
                Some(width) => {
                    let mut chats = column![].spacing(16);
                    if ring.on(ring::Region::Lists) {
                        chats = chats.push(small(tr().ring_keys_lists).style(theme::muted));
                    }
                    chats = chats
                        .push(queue::view(desk, now_ms, &attention).map(Message::Queue))
                        .push(conversations::mine(desk).map(Message::Conversations));
                    if desk.oversees() {
                        chats =
                            chats.push(conversations::team_chats(desk).map(Message::Conversations));
                    }
                    let mut side_col = column![
                        collapse_button(Panel::Lists),
                        region(ring::Region::Lists, ring, chats),
                    ]
                    .spacing(16)
                    .padding(10);
                    side_col = side_col.push(team::view(desk));
                    let mut visitors = column![].spacing(8);
                    if ring.on(ring::Region::Visitors) {
                        visitors =
                            visitors.push(small(tr().ring_keys_visitors).style(theme::muted));
                    }
                    let visitors = region(
                        ring::Region::Visitors,
                        ring,
                        visitors.push(
                            self.visitors
                                .view(desk, live, now_ms, offset)
                                .map(Message::Visitors),
                        ),
                    );
                    match layout.visitors {
                        None => {
                            side_col = side_col.push(visitors);
                            panes =
                                panes.push(scrollable(side_col).id("side").spacing(2).width(width));
                        }
                        Some(vw) => {
                            panes = panes
                                .push(scrollable(side_col).id("side").spacing(2).width(width))
                                .push(rule::vertical(1))
                                .push(
                                    scrollable(container(visitors).padding(10))
                                        .id("visitors-column")
                                        .spacing(2)
                                        .width(vw),
                                );
                        }
                    }
                }
                None => panes = panes.push(lists_rail(desk)),
            }
            panes = panes
                .push(rule::vertical(1))
                .push(
                    region(
                        ring::Region::Chat,
                        ring,
                        match self.rules.view() {
                            Some(panel) => panel.map(Message::Rules),
                            None => self.chat.view(desk, offset, now_ms).map(Message::Chat),
                        },
                    )
                    .width(Fill)
                    .height(Fill),
                )
                .push(rule::vertical(1));
            panes = panes.push(match layout.details {
                Some(width) => column![
                    container(collapse_button(Panel::Details)).padding([6, 10]),
                    region(
                        ring::Region::Details,
                        ring,
                        column![]
                            .push(ring.on(ring::Region::Details).then(|| {
                                container(small(details::keys_hint(desk)).style(theme::muted))
                                    .padding([4, 10])
                            }))
                            .push(details::view(desk, now_ms, offset, width).map(Message::Details)),
                    )
                    .height(Fill),
                ]
                .width(width)
                .into(),
                None => rail(Panel::Details, column![]),
            });
            match &self.jump {
                Some(jump) => stack![
                    panes,
                    container(jump.view(desk).map(Message::Jump))
                        .center_x(Fill)
                        .padding([40, 0])
                ]
                .into(),
                None => panes.into(),
            }
        })
        .into()
    }

    fn with_handle<F, Fut>(&mut self, env: &Env<'_>, f: F) -> Task<Message>
    where
        F: FnOnce(ClientHandle) -> Fut,
        Fut: Future<Output = Result<(), holdfast_client::ClientError>> + Send + 'static,
    {
        match env.handle.cloned() {
            Some(h) => {
                let fut = f(h);
                let t = tr();
                Task::perform(
                    async move { fut.await.map_err(|e| t.client_error(&e)) },
                    Message::ActionDone,
                )
            }
            None => {
                self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
                Task::none()
            }
        }
    }

    /// Send the block form: the visitor shows as being blocked until the
    /// server's outcome says done or why not.
    fn block(&mut self, env: &Env<'_>) -> Task<Message> {
        let Some(form) = self.desk.block_form.take_if(|f| f.can_confirm()) else {
            return Task::none();
        };
        let Some(h) = env.handle.cloned() else {
            self.desk.block_form = Some(form);
            self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
            return Task::none();
        };
        let reason = form.reason.trim().to_owned();
        self.desk.blocks.insert(
            form.visitor.clone(),
            Blocking {
                reason: reason.clone(),
                state: BlockState::Sending {
                    unblock: false,
                    id: None,
                },
            },
        );
        let visitor = form.visitor;
        let t = tr();
        Task::perform(
            {
                let visitor = visitor.clone();
                async move { h.block(visitor, form.by_address, reason).await }
            },
            move |r| Message::BlockQueued {
                visitor: visitor.clone(),
                result: r.map_err(|e| t.client_error(&e)),
            },
        )
    }

    fn unblock(&mut self, env: &Env<'_>, visitor: String) -> Task<Message> {
        let Some(h) = env.handle.cloned() else {
            self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
            return Task::none();
        };
        let Some(b) = self.desk.blocks.get_mut(&visitor).filter(|b| b.blocked()) else {
            return Task::none();
        };
        b.state = BlockState::Sending {
            unblock: true,
            id: None,
        };
        let t = tr();
        Task::perform(
            {
                let visitor = visitor.clone();
                async move { h.unblock(visitor).await }
            },
            move |r| Message::BlockQueued {
                visitor: visitor.clone(),
                result: r.map_err(|e| t.client_error(&e)),
            },
        )
    }

    /// The server's outcome of a command; true if it was a block shown
    /// here, which then says it in the details panel.
    pub fn on_command_outcome(&mut self, id: MsgId, outcome: Result<(), String>) -> bool {
        if self.chat.canned.outcome(id, &outcome) || self.rules.outcome(id, &outcome) {
            return true;
        }
        self.desk.command_outcome(id, outcome)
    }

    /// The server named the agent: the workspace opens where they left off.
    pub fn logged_in(&mut self, env: &mut Env<'_>, session: Session) -> Task<Message> {
        self.desk.me = Some(session);
        self.desk.banner = None;
        if self.desk.presence.is_none() {
            self.desk.presence = Some(Presence::Online);
        }
        self.desk.select_default();
        let read = self.mark_selected_read(env);
        let history = match self.desk.details_visitor.clone() {
            Some(v) => self.load_history(env, v, false),
            None => Task::none(),
        };
        Task::batch([read, history])
    }

    /// The store's workspace replaces what is shown (a snapshot, or a
    /// resync after the update channel lagged).
    pub fn reload(&mut self, env: &mut Env<'_>, ws: Result<Workspace, String>) -> Task<Message> {
        let waiting_before: Vec<ConversationId> = self
            .desk
            .convs
            .values()
            .filter(|c| is_waiting(&c.info))
            .map(|c| c.info.id)
            .collect();
        match ws {
            Ok(ws) => self.desk.load(ws),
            Err(e) => self.desk.banner = Some(e.into()),
        }
        // A chat that started waiting while updates were coalesced into
        // this reload still deserves its alert.
        if !env.focused {
            let new: Vec<Alert> = self
                .desk
                .convs
                .values()
                .filter(|c| {
                    is_waiting(&c.info)
                        && self.desk.offered(&c.info)
                        && !waiting_before.contains(&c.info.id)
                })
                .map(|c| waiting_alert(&self.desk, &c.info))
                .collect();
            for a in new {
                env.notifier.alert(a);
            }
        }
        Task::none()
    }

    pub fn on_conversation(&mut self, env: &mut Env<'_>, info: ConversationInfo) -> Task<Message> {
        let id = info.id;
        let me = self.desk.my_id();
        let previous = self.desk.convs.get(&id).map(|c| c.info.state);
        if is_waiting(&info)
            && self.desk.offered(&info)
            && previous != Some(ConversationState::Queued)
            && !env.focused
        {
            env.notifier.alert(waiting_alert(&self.desk, &info));
        }
        let mine = info.assigned.is_some() && info.assigned == me;
        let open_now = mine
            && match &self.desk.pending_open {
                Some(PendingOpen::Visitor(v)) => *v == info.visitor,
                Some(PendingOpen::Conversation(c)) => *c == id,
                None => false,
            };
        let closed = info.state == ConversationState::Closed;
        let selected = self.desk.selected == Some(id);
        // A transfer panel for a chat that changed hands meanwhile would
        // only be refused: close it.
        if self
            .chat
            .transfer
            .as_ref()
            .is_some_and(|t| t.conversation == id && t.from != info.assigned)
        {
            self.chat.transfer = None;
        }
        self.desk.apply_conversation(info);
        if let Some(c) = self.desk.convs.get_mut(&id)
            && closed
            && !selected
            && c.messages.len() > 1
        {
            // A closed chat is history: keep only its preview in memory
            // unless it is on screen (the store has the rest).
            let cut = c.messages.len() - 1;
            c.messages.drain(..cut);
            c.more_before = true;
        }
        if closed
            && !selected
            && self
                .desk
                .drafts
                .get(&id)
                .is_some_and(|d| d.text().trim().is_empty())
        {
            self.desk.drafts.remove(&id);
        }
        if open_now {
            self.desk.pending_open = None;
            return self.select_and_focus(env, id);
        }
        if mine && self.desk.selected.is_none() {
            return self.select(env, id);
        }
        Task::none()
    }

    pub fn on_message(&mut self, env: &mut Env<'_>, m: StoredMessage) -> Task<Message> {
        let conv_id = m.conversation;
        let body = message_text(&m);
        let selected = self.desk.selected == Some(conv_id);
        if !self.desk.convs.contains_key(&conv_id) {
            // The conversation's own event comes first; if not, the store
            // has it.
            if let Some(h) = env.handle
                && let Ok(list) = h.conversations()
            {
                for s in list {
                    let id = s.info.id;
                    self.desk
                        .convs
                        .entry(id)
                        .or_insert_with(|| Conv::from_summary(s, Vec::new()));
                }
            }
            if !self.desk.convs.contains_key(&conv_id) {
                return Task::none();
            }
        }
        let Some(applied) = self.desk.apply_message(m) else {
            return Task::none();
        };
        let name = match self.desk.convs.get(&conv_id) {
            Some(c) => self.desk.conv_label(&c.info).name,
            None => return Task::none(),
        };
        let Some(c) = self.desk.convs.get_mut(&conv_id) else {
            return Task::none();
        };
        if !selected {
            c.trim();
        }
        if !(applied.new && applied.from_visitor) {
            return Task::none();
        }
        if !env.focused {
            env.notifier.alert(Alert {
                title: (tr().message_from)(&name),
                body: format::preview(&body, 120),
            });
        }
        if selected && env.focused {
            self.mark_selected_read(env)
        } else {
            c.unread = c.unread.saturating_add(1);
            Task::none()
        }
    }

    /// A page of history arrived.
    pub fn on_history(&mut self, request: u32, result: QueryResult) {
        if self.rules.on_answer(request, &result) {
            return;
        }
        // Every request this session made was filed when it was made (the
        // id comes back at once): an answer to none of them is no one's.
        let Some(visitor) = self.desk.history_requests.remove(&request) else {
            return;
        };
        let h = self.desk.history.entry(visitor).or_default();
        if let Some(info) = h.apply(result) {
            // The one visitor list: the history's record joins it only if
            // the live list has none (the live one is newer).
            self.desk
                .visitors
                .entry(info.id.clone())
                .or_insert_with(|| *info);
        }
    }

    /// "Open chat" on a visitor: mine or waiting opens; someone else's
    /// opens read-only for a supervisor, and otherwise says who serves it.
    fn open_visitor_chat(&mut self, env: &mut Env<'_>, visitor: &str) -> Task<Message> {
        let conv = self
            .desk
            .visitors
            .get(visitor)
            .and_then(|v| v.conversation)
            .and_then(|id| self.desk.convs.get(&id));
        let Some(c) = conv else {
            self.desk.banner = Some(Words::new(|t| t.chat_not_here.into()));
            return Task::none();
        };
        let id = c.info.id;
        let theirs = c.info.state == ConversationState::Active
            && c.info.assigned.is_some()
            && c.info.assigned != self.desk.my_id();
        if theirs && !self.desk.oversees() {
            let who = self
                .desk
                .serving_name(&c.info)
                .unwrap_or_else(|| tr().another_agent.into());
            self.desk.banner = Some(Words::new(move |t| (t.serving_this_visitor)(&who)));
            return Task::none();
        }
        self.select(env, id)
    }

    /// Sign out: optionally hand every open chat to `to` first; the server
    /// releases what is left once everything queued is acked.
    fn start_sign_out(&mut self, env: &Env<'_>, to: Option<AgentId>) -> Task<Message> {
        self.sign_out.prompt = false;
        let Some(h) = env.handle.cloned() else {
            return Task::done(Message::SignOutFinished(Ok(SignOutResult::Offline)));
        };
        let me = self.desk.my_id();
        let chats: Vec<ConversationId> = match to {
            Some(_) => self.desk.mine().iter().map(|c| c.info.id).collect(),
            None => Vec::new(),
        };
        self.sign_out.signing_out = true;
        let t = tr();
        Task::perform(
            async move {
                if let Some(to) = to {
                    for id in chats {
                        h.transfer(id, me, to, None)
                            .await
                            .map_err(|e| t.client_error(&e))?;
                    }
                }
                h.sign_out().await.map_err(|e| t.client_error(&e))
            },
            Message::SignOutFinished,
        )
    }

    /// Open a chat the agent chose, with the cursor in its composer, ready
    /// to type. (A chat opened by itself, as the first one assigned, leaves
    /// the cursor where it is: the agent may be typing elsewhere.)
    fn select_and_focus(&mut self, env: &mut Env<'_>, id: ConversationId) -> Task<Message> {
        let task = self.select(env, id);
        if self.desk.selected != Some(id) {
            return task;
        }
        self.desk.ring.region = Some(ring::Region::Chat);
        Task::batch([task, iced::widget::operation::focus(chat::COMPOSER)])
    }

    /// Whether Tab moves the focus ring: not while the jump box, the
    /// canned replies manager or the sign-out prompt is up, whose fields
    /// Tab moves between instead.
    pub fn ring_applies(&self) -> bool {
        self.jump.is_none()
            && self.chat.canned.manager.is_none()
            && self.rules.panel.is_none()
            && !self.sign_out.prompt
    }

    /// Tab and Shift+Tab move the ring; ↑, ↓ and Enter (which reach here
    /// only when no text field took them) act in a focused list.
    fn ring(&mut self, env: &mut Env<'_>, key: ring::Key) -> Task<Message> {
        use ring::{Act, Key, Region};
        match key {
            Key::Next | Key::Previous => {
                if !self.ring_applies() {
                    return Task::none();
                }
                let region = self.desk.ring.step(key == Key::Next, env.panels);
                ring::Ring::enter(&mut self.desk, region);
                if region == Region::Chat {
                    iced::widget::operation::focus(chat::COMPOSER)
                } else {
                    // Out of the chat, the composer lets go of the cursor:
                    // the arrows and Enter are the list's now.
                    Task::batch([
                        iced::advanced::widget::operate(
                            iced::advanced::widget::operation::focusable::unfocus(),
                        ),
                        self.reveal_highlight(),
                    ])
                }
            }
            Key::Up | Key::Down | Key::PageUp | Key::PageDown if self.jump.is_none() => {
                let down = matches!(key, Key::Down | Key::PageDown);
                match self.desk.ring.region {
                    Some(Region::Lists | Region::Visitors)
                        if matches!(key, Key::Up | Key::Down) =>
                    {
                        ring::Ring::step_row(&mut self.desk, down);
                        self.reveal_highlight()
                    }
                    Some(Region::Details) => scroll::nudge(
                        details::SCROLL,
                        down,
                        matches!(key, Key::PageUp | Key::PageDown),
                    ),
                    _ => Task::none(),
                }
            }
            Key::Up | Key::Down | Key::PageUp | Key::PageDown => Task::none(),
            Key::Enter => {
                if self.jump.is_some() {
                    return Task::none();
                }
                if self.desk.ring.on(Region::Details) {
                    return self.details_action(env);
                }
                match self.desk.ring.act(&self.desk) {
                    None => Task::none(),
                    Some(Act::Accept(id)) => self.accept(env, id),
                    Some(Act::Open(id)) => self.select_and_focus(env, id),
                    Some(Act::Details(v)) => {
                        self.desk.details_visitor = Some(v.clone());
                        self.load_history(env, v, false)
                    }
                }
            }
        }
    }

    /// Scroll the focused list so its highlighted row is in view.
    fn reveal_highlight(&self) -> Task<Message> {
        match &self.desk.ring.highlight {
            Some(item) if self.desk.ring.lit(item) => scroll::reveal(item.row_id(&self.desk)),
            _ => Task::none(),
        }
    }

    /// Enter on the details: what its visitor's row in the visitors list
    /// offers, open their chat if they have one, else invite them (with
    /// the text typed for them there, or the default).
    fn details_action(&mut self, env: &mut Env<'_>) -> Task<Message> {
        let Some(v) = self.desk.details_visitor.clone() else {
            return Task::none();
        };
        match details::main_action(&self.desk, &v) {
            None => Task::none(),
            Some(details::Action::OpenChat) => self.open_visitor_chat(env, &v),
            Some(details::Action::Invite) => {
                self.update(Message::Visitors(visitors::Message::Invite(v)), env)
                    .0
            }
        }
    }

    fn accept(&mut self, env: &mut Env<'_>, id: ConversationId) -> Task<Message> {
        self.desk.pending_open = Some(PendingOpen::Conversation(id));
        self.with_handle(env, move |h| async move { h.accept(id).await.map(drop) })
    }

    fn shortcut(&mut self, env: &mut Env<'_>, shortcut: Shortcut) -> Task<Message> {
        match shortcut {
            Shortcut::Jump => {
                self.jump = Some(jump::State::default());
                iced::widget::operation::focus(jump::INPUT)
            }
            Shortcut::AcceptOldest => match self.desk.queue().first().map(|c| c.info.id) {
                Some(id) => self.accept(env, id),
                None => Task::none(),
            },
            Shortcut::Previous | Shortcut::Next => {
                match neighbour(&self.desk, shortcut == Shortcut::Next) {
                    Some(id) => self.select_and_focus(env, id),
                    None => Task::none(),
                }
            }
        }
    }

    fn select(&mut self, env: &mut Env<'_>, id: ConversationId) -> Task<Message> {
        // The one we leave goes back to a small window.
        if let Some(prev) = self.desk.selected
            && prev != id
            && let Some(c) = self.desk.convs.get_mut(&prev)
        {
            c.trim();
        }
        let Some(visitor) = self.desk.select_local(id) else {
            return Task::none();
        };
        let read = self.mark_selected_read(env);
        Task::batch([read, self.load_history(env, visitor, false)])
    }

    pub fn mark_selected_read(&mut self, env: &Env<'_>) -> Task<Message> {
        let Some(id) = self.desk.selected else {
            return Task::none();
        };
        let Some(c) = self.desk.convs.get_mut(&id) else {
            return Task::none();
        };
        if c.unread == 0 || !env.focused {
            return Task::none();
        }
        c.unread = 0;
        match env.handle.cloned() {
            Some(h) => Task::perform(
                {
                    let t = tr();
                    async move { h.mark_read(id).await.map_err(|e| t.client_error(&e)) }
                },
                Message::ActionDone,
            ),
            None => Task::none(),
        }
    }

    fn send(&mut self, env: &Env<'_>) -> Task<Message> {
        let Some(id) = self.desk.selected else {
            return Task::none();
        };
        let Some(draft) = self.desk.drafts.get(&id) else {
            return Task::none();
        };
        let text = draft.text();
        let body = text.trim_end_matches(['\n', '\r']).to_owned();
        if body.trim().is_empty() {
            return Task::none();
        }
        let Some(h) = env.handle.cloned() else {
            self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
            return Task::none();
        };
        self.desk.drafts.insert(id, text_editor::Content::new());
        let _best_effort = h.typing(id, false);
        let note = self.chat.writes_note(id);
        let t = tr();
        Task::perform(
            async move {
                // A note shows once the server has it (it is not queued on
                // screen as a reply is): it must never look like something
                // on its way to the visitor.
                let sent = if note {
                    h.note(id, body).await
                } else {
                    h.send_message(id, body).await
                };
                sent.map(drop).map_err(|e| t.client_error(&e))
            },
            Message::ActionDone,
        )
    }

    /// The page before the oldest message shown: from the session's store,
    /// or, before there is a session (a cached workspace, no password yet),
    /// from the store file.
    fn load_earlier(&mut self, env: &Env<'_>) {
        let Some(id) = self.desk.selected else { return };
        let Some(c) = self.desk.convs.get_mut(&id) else {
            return;
        };
        let before = c.messages.first().map(|m| m.order);
        let page = match (env.handle, env.store_path) {
            (Some(h), _) => h
                .messages_page(id, before, PAGE)
                .map_err(|e| tr().client_error(&e)),
            (None, Some(path)) => Store::open(path)
                .and_then(|s| s.messages_page(id, before, PAGE))
                .map_err(|e| e.to_string()),
            (None, None) => return,
        };
        match page {
            Ok(page) => c.prepend(page, PAGE as usize),
            Err(e) => self.desk.banner = Some(e.into()),
        }
    }

    /// Send a file in the open conversation: the core keeps a copy and
    /// records it before answering, so it goes out even if the app closes.
    /// `to` a conversation, or the open one.
    fn send_file(
        &mut self,
        env: &Env<'_>,
        source: Source,
        to: Option<ConversationId>,
    ) -> Task<Message> {
        let open = to
            .or(self.desk.selected)
            .filter(|id| self.desk.is_mine(*id))
            .and_then(|id| self.desk.convs.get(&id))
            .filter(|c| c.info.state == ConversationState::Active)
            .map(|c| c.info.id);
        let Some(conversation) = open else {
            self.desk.banner = Some(Words::new(|t| t.open_chat_to_send_file.into()));
            return Task::none();
        };
        let Some(h) = env.handle.cloned() else {
            self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
            return Task::none();
        };
        let now = holdfast_client::store::now_ms();
        let t = tr();
        Task::perform(
            async move {
                let (id, name, total) = match &source {
                    Source::Path(p) => {
                        let name = p.file_name().map_or_else(
                            || "file".to_owned(),
                            |n| n.to_string_lossy().into_owned(),
                        );
                        let total = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                        let id = h
                            .send_file(conversation, p.clone(), String::new())
                            .await
                            .map_err(|e| t.client_error(&e))?;
                        (id, name, total)
                    }
                    Source::Image(img) => {
                        let img = img.clone();
                        // A full-screen screenshot takes a moment to encode:
                        // off the UI's thread.
                        let png = tokio::task::spawn_blocking(move || files::encode_png(&img, t))
                            .await
                            .map_err(|e| e.to_string())??;
                        let name = files::screenshot_name(now);
                        let total = png.len() as u64;
                        let id = h
                            .send_file_bytes(conversation, name.clone(), png, String::new())
                            .await
                            .map_err(|e| t.client_error(&e))?;
                        (id, name, total)
                    }
                };
                let upload = files::Upload {
                    id,
                    conversation,
                    name,
                    sent: 0,
                    total,
                    state: holdfast_client::UploadState::Uploading,
                };
                Ok((upload, source))
            },
            |r| Message::Chat(chat::Message::FileQueued(r)),
        )
    }

    fn file_action(&mut self, env: &Env<'_>, action: files::Action) -> Task<Message> {
        let Some(h) = env.handle.cloned() else {
            self.desk.banner = Some(Words::new(|t| t.not_signed_in.into()));
            return Task::none();
        };
        match action {
            files::Action::Open(a) => {
                if !files::openable(&a.mime) {
                    let (name, mime) = (a.name.clone(), a.mime.clone());
                    self.desk.banner =
                        Some(Words::new(move |t| (t.could_run_script)(&name, &mime)));
                    return Task::none();
                }
                self.want_full(&h, a.id, Then::Open)
            }
            files::Action::SaveAs(a) => {
                Task::perform(files::pick_save_path(tr().save_as_title, a.name.clone()), {
                    move |p| Message::Chat(chat::Message::File(files::Action::SaveTo(a.clone(), p)))
                })
            }
            files::Action::SaveTo(_, None) => Task::none(),
            files::Action::SaveTo(a, Some(dest)) => self.want_full(&h, a.id, Then::SaveTo(dest)),
            files::Action::Retry { id, thumb } => {
                self.desk.files.fetched.remove(&(id.clone(), thumb));
                self.fetch(&h, id, thumb);
                Task::none()
            }
            files::Action::CancelUpload(id) | files::Action::RemoveUpload(id) => Task::perform(
                {
                    let t = tr();
                    async move { h.cancel_upload(id).await.map_err(|e| t.client_error(&e)) }
                },
                move |r| Message::Chat(chat::Message::UploadStopped(id, r)),
            ),
            files::Action::RetryUpload(id) => {
                let Some(source) = self.desk.files.sources.get(&id).cloned() else {
                    return Task::none();
                };
                let conversation = self
                    .desk
                    .files
                    .uploads
                    .iter()
                    .find(|u| u.id == id)
                    .map(|u| u.conversation);
                self.desk.files.forget(id);
                // The failed one is dismissed first, so only the new one can
                // ever be sent.
                let dismiss = Task::perform(
                    {
                        let t = tr();
                        async move { h.cancel_upload(id).await.map_err(|e| t.client_error(&e)) }
                    },
                    |r| Message::ActionDone(r.map(drop)),
                );
                Task::batch([dismiss, self.send_file(env, source, conversation)])
            }
        }
    }

    /// The whole file, then `then`: at once if it is here already.
    fn want_full(&mut self, h: &ClientHandle, id: String, then: Then) -> Task<Message> {
        if let Some(Fetched::Ready { path, .. }) = self.desk.files.fetched.get(&(id.clone(), false))
        {
            return self.finish(path.clone(), then);
        }
        self.desk.files.then.insert(id.clone(), then);
        if !matches!(
            self.desk.files.fetched.get(&(id.clone(), false)),
            Some(Fetched::Loading)
        ) {
            self.desk.files.fetched.remove(&(id.clone(), false));
            self.fetch(h, id, false);
        }
        Task::none()
    }

    fn fetch(&mut self, h: &ClientHandle, id: String, thumb: bool) {
        let state = match h.fetch_attachment(id.clone(), thumb) {
            Ok(_) => Fetched::Loading,
            Err(e) => Fetched::Failed(tr().client_error(&e)),
        };
        self.desk.files.fetched.insert((id, thumb), state);
    }

    fn finish(&mut self, path: std::path::PathBuf, then: Then) -> Task<Message> {
        match then {
            Then::Open => {
                if let Err(e) = files::open_with_os(&path) {
                    self.desk.banner = Some(e.into());
                }
                Task::none()
            }
            Then::SaveTo(dest) => Task::perform(
                {
                    let t = tr();
                    async move {
                        let d = dest.clone();
                        tokio::task::spawn_blocking(move || std::fs::copy(&path, &d))
                            .await
                            .map_err(|e| e.to_string())?
                            .map(drop)
                            .map_err(|e| {
                                (t.cannot_save_to)(&dest.display().to_string(), &e.to_string())
                            })
                    }
                },
                Message::ActionDone,
            ),
        }
    }

    /// Ask for the thumbnail of every image on screen not asked for yet:
    /// the open chat and the visitor history in the details panel. Called
    /// after every update, so whatever path put a message on screen (live,
    /// a page from the store, a replay, a history page) its image follows.
    pub fn want_thumbnails(&mut self, env: &Env<'_>) {
        let Some(h) = env.handle else { return };
        let mut ids: Vec<String> = Vec::new();
        if let Some(c) = self.desk.selected.and_then(|id| self.desk.convs.get(&id)) {
            ids.extend(
                c.messages
                    .iter()
                    .filter_map(|m| m.attachment.as_ref())
                    .filter(|a| a.image)
                    .map(|a| a.id.clone()),
            );
        }
        if let Some(hist) = self
            .desk
            .details_visitor
            .as_ref()
            .and_then(|v| self.desk.history.get(v))
        {
            ids.extend(
                hist.messages
                    .iter()
                    .filter_map(|m| m.attachment.as_ref())
                    .filter(|a| a.image)
                    .map(|a| a.id.clone()),
            );
        }
        self.desk.files.trim(&ids, FILES_KEEP);
        for id in ids {
            if !self.desk.files.fetched.contains_key(&(id.clone(), true)) {
                self.fetch(h, id, true);
            }
        }
    }

    /// A fetched file is in the cache.
    pub fn on_file_ready(
        &mut self,
        id: String,
        thumb: bool,
        path: std::path::PathBuf,
        mime: String,
    ) -> Task<Message> {
        self.desk.files.fetched.insert(
            (id.clone(), thumb),
            Fetched::Ready {
                path: path.clone(),
                mime,
                handle: None,
            },
        );
        if thumb {
            let t = tr();
            return Task::perform(
                async move {
                    tokio::task::spawn_blocking(move || files::decode_thumbnail(&path, t))
                        .await
                        .map_err(|e| e.to_string())?
                },
                move |r| Message::Thumbnail(id.clone(), r),
            );
        }
        match self.desk.files.then.remove(&id) {
            Some(then) => self.finish(path, then),
            None => Task::none(),
        }
    }

    pub fn on_file_failed(&mut self, id: String, thumb: bool, text: String) {
        if !thumb {
            self.desk.files.then.remove(&id);
        }
        self.desk
            .files
            .fetched
            .insert((id, thumb), Fetched::Failed(text));
    }

    /// Load a page of a visitor's history: the newest (merged with what is
    /// loaded, so older pages already fetched stay), or the one before the
    /// oldest loaded.
    fn load_history(&mut self, env: &Env<'_>, visitor: String, older: bool) -> Task<Message> {
        let Some(h) = env.handle else {
            return Task::none();
        };
        // Histories of visitors looked at earlier in the day are dropped
        // past a few dozen; they reload on demand.
        if self.desk.history.len() >= HISTORY_KEEP && !self.desk.history.contains_key(&visitor) {
            let keep = self.desk.details_visitor.clone();
            self.desk
                .history
                .retain(|v, h| h.loading || Some(v) == keep.as_ref());
        }
        let entry = self.desk.history.entry(visitor.clone()).or_default();
        if entry.loading {
            return Task::none();
        }
        entry.loading = true;
        entry.error = None;
        let before = if older {
            entry.messages.last().map(|m| m.message)
        } else {
            None
        };
        // The id comes back at once, so the request is filed before its
        // answer can arrive on the update stream.
        match h.load_history(visitor.clone(), before, HISTORY_PAGE) {
            Ok(req) => {
                self.desk.history_requests.insert(req, visitor);
            }
            Err(e) => {
                entry.loading = false;
                entry.error = Some(tr().client_error(&e));
            }
        }
        Task::none()
    }
}

/// How long a message's "Copied" sign stays up.
const COPIED_SHOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// The chat after (`down`) or before the open one among the chats the
/// agent works in, as the lists show them: my conversations, then a
/// supervisor's team chats. With none of them open, the first (down) or the
/// last. No wrapping round: at the end of the list the key does nothing.
/// A region's frame: the accent edge while Tab's ring is on it, and room
/// for it either way, so nothing moves as the ring goes round.
fn region<'a>(
    region: ring::Region,
    ring: &ring::Ring,
    content: impl Into<Element<'a, Message>>,
) -> container::Container<'a, Message> {
    // The lists' rows and headings would touch the edge: they get room
    // inside it. The chat and the details have their own padding.
    let room = match region {
        ring::Region::Lists | ring::Region::Visitors => 6,
        ring::Region::Chat | ring::Region::Details => 2,
    };
    container(content)
        .id(region.id())
        .padding(room)
        .style(theme::region(ring.on(region)))
}

fn neighbour(desk: &Desk, down: bool) -> Option<ConversationId> {
    let mut order: Vec<ConversationId> = desk.mine().iter().map(|c| c.info.id).collect();
    if desk.oversees() {
        order.extend(desk.team_chats().iter().map(|c| c.info.id));
    }
    let at = desk
        .selected
        .and_then(|s| order.iter().position(|id| *id == s));
    match (at, down) {
        (Some(i), true) => order.get(i + 1).copied(),
        (Some(i), false) => i.checked_sub(1).and_then(|i| order.get(i).copied()),
        (None, true) => order.first().copied(),
        (None, false) => order.last().copied(),
    }
}

/// Hand a clicked link to the OS, and say so in the banner if it could not
/// be opened. The opener is waited for off the UI's thread: `xdg-open`
/// reports a link nothing can open only by how it exits.
fn open_link(url: String) -> Task<Message> {
    match crate::ui::links::open(&url) {
        Err(e) => Task::done(Message::ActionDone(Err(e))),
        Ok(child) => Task::perform(
            {
                let t = tr();
                async move {
                    tokio::task::spawn_blocking(move || crate::ui::links::finished(child, &url, t))
                        .await
                        .map_err(|e| e.to_string())?
                }
            },
            Message::ActionDone,
        ),
    }
}

/// In the queue with no agent yet.
fn is_waiting(info: &ConversationInfo) -> bool {
    info.assigned.is_none() && info.state == ConversationState::Queued
}

impl State {
    /// The open chat's draft as text ("" with none).
    fn selected_draft(&self) -> String {
        self.desk
            .selected
            .and_then(|id| self.desk.drafts.get(&id))
            .map(text_editor::Content::text)
            .unwrap_or_default()
    }

    fn on_rules(&mut self, env: &Env<'_>, e: Option<invite_rules::Event>) -> Task<Message> {
        let Some(e) = e else {
            return Task::none();
        };
        let Some(h) = env.handle.cloned() else {
            let m = tr().not_signed_in;
            let undo = match e {
                invite_rules::Event::Load => invite_rules::Message::Asked(Err(m.into())),
                _ => invite_rules::Message::Queued(Err(m.into())),
            };
            self.rules.update(undo);
            return Task::none();
        };
        let t = tr();
        match e {
            invite_rules::Event::Load => {
                let asked = h.load_invite_rules().map_err(|e| t.client_error(&e));
                self.rules.update(invite_rules::Message::Asked(asked));
                Task::none()
            }
            invite_rules::Event::Save { id, rule } => Task::perform(
                async move { h.save_invite_rule(id, rule).await },
                move |r| {
                    Message::Rules(invite_rules::Message::Queued(
                        r.map_err(|e| t.client_error(&e)),
                    ))
                },
            ),
            invite_rules::Event::Enable(id, on) => self.with_handle(env, move |h| async move {
                h.enable_invite_rule(id, on).await.map(drop)
            }),
            invite_rules::Event::Delete(id) => self.with_handle(env, move |h| async move {
                h.delete_invite_rule(id).await.map(drop)
            }),
        }
    }

    fn on_canned(&mut self, env: &Env<'_>, e: canned::Event) -> Task<Message> {
        match e {
            canned::Event::Insert(text) => {
                let Some(id) = self.desk.selected else {
                    return Task::none();
                };
                let draft = self.desk.drafts.entry(id).or_default();
                canned::replace_draft(draft, &text);
                if let Some(h) = env.handle {
                    let _best_effort = h.typing(id, !text.trim().is_empty());
                }
                Task::none()
            }
            canned::Event::Save {
                id,
                personal,
                shortcut,
                body,
            } => {
                let Some(h) = env.handle.cloned() else {
                    let m = tr().not_signed_in;
                    self.chat
                        .canned
                        .update(canned::Message::Queued(Err(m.into())), &self.desk, "");
                    return Task::none();
                };
                let t = tr();
                Task::perform(
                    async move { h.save_canned(id, personal, shortcut, body).await },
                    move |r| {
                        Message::Chat(chat::Message::Canned(canned::Message::Queued(
                            r.map_err(|e| t.client_error(&e)),
                        )))
                    },
                )
            }
            canned::Event::Delete(id) => {
                self.with_handle(
                    env,
                    move |h| async move { h.delete_canned(id).await.map(drop) },
                )
            }
        }
    }

    /// Once a second: a chat that is still waiting alerts again on the
    /// agent's schedule, whether or not the window has focus (the agent
    /// may be deep in another chat), until someone takes it.
    pub fn tick(&mut self, env: &mut Env<'_>, now_ms: i64, attention: &Attention) {
        let desk = &self.desk;
        self.realerted
            .retain(|id, _| desk.convs.get(id).is_some_and(|c| is_waiting(&c.info)));
        for c in desk.queue() {
            if !is_waiting(&c.info) {
                continue;
            }
            let waited = now_ms - c.info.opened_at_ms;
            let due = attention.repeats_due(waited);
            let done = self.realerted.entry(c.info.id).or_default();
            if due > *done {
                *done = due;
                env.notifier.alert(Alert {
                    title: tr().chat_still_waiting.into(),
                    body: (tr().has_waited)(
                        &desk.conv_label(&c.info).name,
                        &format::elapsed(waited),
                    ),
                });
            }
        }
    }
}

fn waiting_alert(desk: &Desk, info: &ConversationInfo) -> Alert {
    let label = desk.conv_label(info);
    Alert {
        title: tr().new_chat_waiting.into(),
        body: match label.place {
            Some(place) => format!("{} · {place}", label.name),
            None => label.name,
        },
    }
}

/// The button that collapses a panel, with its shortcut in the tooltip.
fn collapse_button<'a>(panel: Panel) -> Element<'a, Message> {
    let t = tr();
    let (label, id, tip) = match panel {
        Panel::Lists => (t.hide_lists, "collapse-lists", t.hide_lists_tip),
        Panel::Details => (t.hide_details, "collapse-details", t.hide_details_tip),
    };
    let b = container(
        button(small(label))
            .padding([2, 8])
            .style(button::text)
            .on_press(Message::TogglePanel(panel)),
    )
    .id(id);
    let b = tooltip(b, small(tip), tooltip::Position::Bottom)
        .style(card)
        .padding(6);
    match panel {
        Panel::Lists => row![space::horizontal(), b].into(),
        Panel::Details => row![b].into(),
    }
}

/// A collapsed panel: a thin rail with the button that brings it back.
fn rail<'a>(panel: Panel, extra: iced::widget::Column<'a, Message>) -> Element<'a, Message> {
    let (label, id, tip) = match panel {
        Panel::Lists => ("»", "expand-lists", tr().show_lists_tip),
        Panel::Details => ("«", "expand-details", tr().show_details_tip),
    };
    let b = container(
        button(text(label).size(16))
            .padding([4, 10])
            .style(theme::button_secondary)
            .on_press(Message::TogglePanel(panel)),
    )
    .id(id);
    let pos = match panel {
        Panel::Lists => tooltip::Position::Right,
        Panel::Details => tooltip::Position::Left,
    };
    let b = tooltip(b, small(tip), pos).style(card).padding(6);
    container(
        column![b]
            .push(extra)
            .spacing(10)
            .align_x(Alignment::Center),
    )
    .id(format!("rail-{id}"))
    .padding([8, 0])
    .width(RAIL)
    .height(Fill)
    .center_x(RAIL)
    .into()
}

/// The collapsed lists still say what needs the agent: how many wait, and
/// how many messages are unread.
fn lists_rail(desk: &Desk) -> Element<'_, Message> {
    let waiting = desk.queue().len();
    let unread = desk.unread_total();
    let mut extra = column![].spacing(8).align_x(Alignment::Center);
    if waiting > 0 {
        extra = extra.push(
            tooltip(
                container(small(waiting.to_string()))
                    .id("rail-waiting")
                    .padding([1, 7])
                    .style(|t: &iced::Theme| theme::bar(t, theme::Tone::Pending)),
                small((tr().n_waiting)(waiting)),
                tooltip::Position::Right,
            )
            .style(card)
            .padding(6),
        );
    }
    if unread > 0 {
        extra = extra.push(
            tooltip(
                container(small(unread.to_string()))
                    .id("rail-unread")
                    .padding([1, 7])
                    .style(theme::badge),
                small((tr().n_unread)(unread)),
                tooltip::Position::Right,
            )
            .style(card)
            .padding(6),
        );
    }
    rail(Panel::Lists, extra)
}
