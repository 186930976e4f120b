//! The chat pane: the open conversation's header (who, state, transfer
//! and close), its transcript, the composer, and the transfer panel.
//!
//! Its own state is the transfer form; drafts stay in the desk, since they
//! survive switching conversations and the desk's reloads. Sending,
//! closing, transferring and paging need the client, so they go up to the
//! workspace as events.
//!
//! Files come in three ways, all ending in [`Event::SendFile`]: the attach
//! button's picker, a file dropped on the window (a hint covers the chat
//! while one is dragged over it), and Ctrl+V in the composer when the
//! clipboard holds an image. The OS side of each (dialog, window event,
//! clipboard) answers with a message, so tests inject the same message.
//!
//! Message text cannot be selected in iced 0.14, so each message has a
//! "Copy" button that puts its text on the clipboard, and its web and mail
//! links are drawn as links ([`crate::ui::links`]) that open in the OS's
//! browser or mail app.

use std::collections::HashSet;
use std::path::PathBuf;

use holdfast_protocol::agent::{AgentId, Author, ConversationId, ConversationState};
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::notice::Notice;
use iced::widget::text::Wrapping;
use iced::widget::{
    Column, button, checkbox, column, container, row, rule, scrollable, space, stack, text_editor,
    text_input,
};
use iced::{Alignment, Element, Fill, Theme, keyboard};

use crate::ui::desk::{Desk, message_text};
use crate::ui::files::{self, RawImage, Source};
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::theme;
use crate::ui::widget::{
    card, has_stated_name, left_message_lines, linked_text, muted, site_id_line, small, stated,
    text,
};
use holdfast_client::store::{DeliveryState, StoredMessage};

/// The composer's id: the chat's one text field, focused when a chat is
/// opened.
pub const COMPOSER: &str = "composer";

/// The widest a message bubble gets: about 70 characters of body text, a
/// line length that stays readable however wide the window is.
pub const BUBBLE_MAX: f32 = 560.0;

/// The transfer panel of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferForm {
    pub conversation: ConversationId,
    /// Who served it when the panel opened: the server refuses the transfer
    /// if that changed meanwhile.
    pub from: Option<AgentId>,
    pub to: Option<TransferTarget>,
    pub note: String,
}

/// Where a chat is moved: to one agent, or to a group (10.23), whose free
/// member gets it or whose queue it waits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Agent(AgentId),
    Group(String),
}

#[derive(Debug, Default)]
pub struct State {
    pub transfer: Option<TransferForm>,
    /// Conversations whose composer writes internal notes, not replies.
    /// Per chat, so a note mode left on in one cannot swallow a reply
    /// meant for another visitor.
    pub note_mode: HashSet<ConversationId>,
    /// Whether each chat's visitor is typing, and its draft.
    pub typing: super::typing::State,
    /// The canned reply picker and panel.
    pub canned: super::canned::State,
    /// The message whose text was just copied: its button says so for a
    /// moment, the only sign a clipboard write gives.
    pub copied: Option<MsgId>,
}

impl State {
    pub fn writes_note(&self, conversation: ConversationId) -> bool {
        self.note_mode.contains(&conversation)
    }
}

#[derive(Debug, Clone)]
pub enum Message {
    Compose(text_editor::Action),
    Send,
    /// The "Internal note" switch of the open conversation's composer.
    NoteMode(bool),
    /// Set the chat's tags to exactly these (a chip removed or one added).
    SetTags(ConversationId, Vec<String>),
    LoadEarlier,
    Close(ConversationId),
    TransferOpen(ConversationId),
    TransferTo(TransferTarget),
    TransferNote(String),
    TransferSend,
    TransferCancel,
    /// The attach button: ask for a file.
    Attach,
    /// The picker's answer (`None`: cancelled).
    Picked(Option<PathBuf>),
    /// Ctrl+V in the composer.
    Paste,
    /// What the clipboard held on Ctrl+V: an image, or (`Ok(None)`)
    /// something else, pasted as text.
    Clipboard(Result<Option<RawImage>, String>),
    FileHovered,
    HoverLeft,
    FileDropped(PathBuf),
    File(files::Action),
    /// `send_file` answered: the file is kept and will be sent.
    FileQueued(Result<(files::Upload, Source), String>),
    /// `cancel_upload` answered for this file.
    UploadStopped(MsgId, Result<bool, String>),
    Canned(super::canned::Message),
    /// A link in a message was clicked.
    OpenLink(String),
    /// A message's "Copy" button: its id and its text as shown.
    Copy(MsgId, String),
    /// The "Copied" sign of this message has been up long enough.
    CopiedShown(MsgId),
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Send the open conversation's draft.
    Send,
    LoadEarlier,
    Close(ConversationId),
    Transfer {
        conversation: ConversationId,
        from: Option<AgentId>,
        to: TransferTarget,
        note: Option<String>,
    },
    SetTags(ConversationId, Vec<String>),
    Attach,
    /// Read the clipboard for an image.
    Paste,
    /// The clipboard held no image: paste its text.
    PasteText,
    /// Send this file in the open conversation.
    SendFile(Source),
    File(files::Action),
    FileQueued(Result<(files::Upload, Source), String>),
    UploadStopped(MsgId, Result<bool, String>),
    /// The agent edited the chat's draft: whether something is written.
    Typing(ConversationId, bool),
    Canned(super::canned::Event),
    /// Open this link with the OS.
    OpenLink(String),
    /// Put this text on the clipboard, and take the "Copied" sign of this
    /// message down after a moment.
    Copy(MsgId, String),
}

impl State {
    /// Typing goes into the desk's draft of the open conversation.
    pub fn update(&mut self, message: Message, desk: &mut Desk) -> Option<Event> {
        match message {
            Message::Compose(action) => {
                let id = desk.selected?;
                let edit = action.is_edit();
                let draft = desk.drafts.entry(id).or_default();
                draft.perform(action);
                edit.then(|| Event::Typing(id, !draft.text().trim().is_empty()))
            }
            Message::Send => Some(Event::Send),
            Message::Canned(m) => {
                let draft = desk
                    .selected
                    .and_then(|id| desk.drafts.get(&id))
                    .map(text_editor::Content::text)
                    .unwrap_or_default();
                self.canned.update(m, desk, &draft).map(Event::Canned)
            }
            Message::OpenLink(url) => Some(Event::OpenLink(url)),
            Message::Copy(id, text) => {
                self.copied = Some(id);
                Some(Event::Copy(id, text))
            }
            Message::CopiedShown(id) => {
                if self.copied == Some(id) {
                    self.copied = None;
                }
                None
            }
            Message::NoteMode(on) => {
                if let Some(id) = desk.selected {
                    if on {
                        self.note_mode.insert(id);
                    } else {
                        self.note_mode.remove(&id);
                    }
                }
                None
            }
            Message::SetTags(id, tags) => {
                let now = desk
                    .tags_pending
                    .get(&id)
                    .cloned()
                    .or_else(|| desk.convs.get(&id).map(|c| c.tags()));
                if now.as_ref() == Some(&tags) {
                    return None;
                }
                desk.tags_pending.insert(id, tags.clone());
                Some(Event::SetTags(id, tags))
            }
            Message::Attach => Some(Event::Attach),
            Message::Picked(path) => path.map(|p| Event::SendFile(Source::Path(p))),
            Message::Paste => Some(Event::Paste),
            Message::Clipboard(Ok(Some(img))) => Some(Event::SendFile(Source::Image(img))),
            Message::Clipboard(Ok(None)) => Some(Event::PasteText),
            Message::Clipboard(Err(e)) => {
                // No clipboard to read images from (a headless session, an
                // X server that went away): the paste is still text.
                tracing::debug!("clipboard image unreadable: {e}");
                Some(Event::PasteText)
            }
            Message::FileHovered => {
                desk.files.hovering = true;
                None
            }
            Message::HoverLeft => {
                desk.files.hovering = false;
                None
            }
            Message::FileDropped(p) => {
                desk.files.hovering = false;
                Some(Event::SendFile(Source::Path(p)))
            }
            Message::File(a) => Some(Event::File(a)),
            Message::FileQueued(r) => Some(Event::FileQueued(r)),
            Message::UploadStopped(id, r) => Some(Event::UploadStopped(id, r)),
            Message::LoadEarlier => Some(Event::LoadEarlier),
            Message::Close(id) => Some(Event::Close(id)),
            Message::TransferOpen(id) => {
                let from = desk
                    .convs
                    .get(&id)
                    .filter(|c| c.info.state == ConversationState::Active)
                    .and_then(|c| c.info.assigned);
                self.transfer = Some(TransferForm {
                    conversation: id,
                    from,
                    to: None,
                    note: String::new(),
                });
                None
            }
            Message::TransferTo(target) => {
                if let Some(t) = &mut self.transfer {
                    t.to = Some(target);
                }
                None
            }
            Message::TransferNote(note) => {
                if let Some(t) = &mut self.transfer {
                    t.note = note;
                }
                None
            }
            Message::TransferCancel => {
                self.transfer = None;
                None
            }
            Message::TransferSend => {
                let Some(TransferForm {
                    conversation,
                    from,
                    to: Some(to),
                    note,
                }) = self.transfer.take()
                else {
                    return None;
                };
                let note = Some(note.trim().to_owned()).filter(|n| !n.is_empty());
                Some(Event::Transfer {
                    conversation,
                    from,
                    to,
                    note,
                })
            }
        }
    }

    pub fn view<'a>(
        &'a self,
        desk: &'a Desk,
        utc_offset_secs: i32,
        now_ms: i64,
    ) -> Element<'a, Message> {
        if let Some(panel) = self.canned.manager(desk) {
            return panel.map(Message::Canned);
        }
        let t = tr();
        let Some(c) = desk.selected.and_then(|id| desk.convs.get(&id)) else {
            return container(text(t.pick_a_conversation).style(muted))
                .center(Fill)
                .into();
        };
        let name = desk.conv_label(&c.info).name;
        let mine = desk.is_mine(c.info.id);
        let oversees = desk.oversees();
        let active = c.info.state == ConversationState::Active;
        let serving = desk.serving_name(&c.info);
        // Who this is, as far as anyone can tell: the name the visitor gave
        // and, apart from it, the id the site vouches for.
        let mut who = column![text(name).size(18)].spacing(1).width(Fill);
        if has_stated_name(c.info.visitor_name.as_deref()) {
            who = who.push(stated(t.name_stated));
        }
        if let Some(id) = desk.visitors.get(&c.info.visitor).and_then(site_id_line) {
            who = who.push(id);
        }
        if let Some(g) = &c.info.group {
            who = who.push(
                container(small((t.for_group)(desk.group_name(g))).style(muted)).id("chat-group"),
            );
        }
        let mut header = row![who].spacing(10).align_y(Alignment::Center);
        let who_serves = || serving.clone().unwrap_or_else(|| t.another_agent.into());
        let state_label = match c.info.state {
            ConversationState::Active if mine => t.state_open.to_owned(),
            ConversationState::Active if oversees => (t.serving_read_only)(&who_serves()),
            ConversationState::Active => (t.serving_now)(&who_serves()),
            s => t.conversation_state(s).to_owned(),
        };
        header = header.push(small(state_label).style(muted));
        let can_transfer = (mine || oversees) && c.info.state != ConversationState::Closed;
        if can_transfer && self.transfer.is_none() {
            header = header.push(
                container(
                    button(text(t.transfer_open).size(13))
                        .padding([4, 10])
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::TransferOpen(c.info.id)),
                )
                .id("transfer"),
            );
        }
        if active && (mine || oversees) {
            header = header.push(
                container(
                    button(text(t.close_conversation).size(13))
                        .padding([4, 10])
                        .style(button::danger)
                        .on_press(Message::Close(c.info.id)),
                )
                .id("close-conversation"),
            );
        }
        let mut top = column![container(header).id("chat-header").padding([8, 14])];
        // Who may note in a chat may tag it (the server's rule too).
        let can_tag = mine || oversees || !active;
        if let Some(tags) = super::tags::view(desk, c, can_tag) {
            top = top.push(tags);
        }
        let left = left_message_lines(c);
        if !left.is_empty() {
            let mut block = column![].spacing(2);
            for line in left {
                block = block.push(small(line));
            }
            top = top.push(
                container(block)
                    .id("left-message")
                    .padding([4, 14])
                    .width(Fill),
            );
        }
        if let Some(t) = self
            .transfer
            .as_ref()
            .filter(|t| t.conversation == c.info.id)
        {
            top = top.push(transfer_panel(desk, t));
        }
        let mut msgs = Column::new().spacing(8).padding([8, 14]);
        if c.more_before {
            msgs = msgs.push(
                container(
                    button(text(t.load_earlier).size(12))
                        .style(button::text)
                        .on_press(Message::LoadEarlier),
                )
                .id("load-earlier")
                .center_x(Fill),
            );
        }
        // A separator wherever the local day changes (and above the first
        // message), so "09:12" under yesterday's messages is not read as
        // this morning.
        let mut day = None;
        for m in &c.messages {
            let d = format::local_day(m.at_ms, utc_offset_secs);
            if day != Some(d) {
                day = Some(d);
                msgs = msgs.push(
                    container(
                        small(format::day_label(m.at_ms, utc_offset_secs, now_ms)).style(muted),
                    )
                    .id(format!("day-{d}"))
                    .center_x(Fill),
                );
            }
            msgs = msgs.push(bubble(desk, m, utc_offset_secs, self.copied));
        }
        for u in desk.files.in_conversation(c.info.id) {
            msgs = msgs.push(row![
                space::horizontal(),
                files::upload_bubble(&desk.files, u).map(Message::File)
            ]);
        }
        let transcript = scrollable(msgs)
            .id("transcript")
            .anchor_bottom()
            .height(Fill)
            .width(Fill);
        let composer: Element<'_, Message> = match desk.drafts.get(&c.info.id) {
            Some(draft) if active && mine => {
                let note = self.writes_note(c.info.id);
                let draft_text = draft.text();
                let picker = self.canned.picker(desk, &draft_text);
                // While the picker is open, Enter and Tab take the
                // highlighted reply and the arrows move through them.
                let picking = picker.is_some();
                let editor = text_editor(draft)
                    .id(COMPOSER)
                    .placeholder(if note {
                        t.note_placeholder
                    } else {
                        t.reply_placeholder
                    })
                    .style(move |theme: &Theme, status| {
                        let mut style = text_editor::default(theme, status);
                        if note {
                            // The same colours as a note in the transcript,
                            // so what is being written is plain to see.
                            let p = theme::Palette::of(theme);
                            style.background = p.note.into();
                            style.value = p.on_note;
                            style.placeholder = p.muted;
                        }
                        style
                    })
                    .on_action(Message::Compose)
                    .wrapping(Wrapping::WordOrGlyph)
                    .height(96)
                    .key_binding(move |press| {
                        use keyboard::key::Named;
                        let named =
                            |n: Named| matches!(press.key, keyboard::Key::Named(k) if k == n);
                        if picking && !press.modifiers.shift() && !press.modifiers.alt() {
                            let pick = |m| Some(text_editor::Binding::Custom(Message::Canned(m)));
                            if (named(Named::Enter) && !press.modifiers.command())
                                || named(Named::Tab)
                            {
                                return pick(super::canned::Message::PickSelected);
                            } else if named(Named::ArrowUp) {
                                return pick(super::canned::Message::Move(-1));
                            } else if named(Named::ArrowDown) {
                                return pick(super::canned::Message::Move(1));
                            }
                        }
                        let enter = named(Named::Enter);
                        let paste = press.modifiers.command()
                            && matches!(press.key.as_ref(), keyboard::Key::Character("v"));
                        // The app's own shortcuts, which the editor would
                        // otherwise take too: Ctrl+Enter accepts the oldest
                        // waiting chat, Alt+↑/↓ moves between chats, and Tab
                        // moves to the next field rather than typing a tab.
                        let app_shortcut = (enter && press.modifiers.command())
                            || (press.modifiers.alt()
                                && (named(Named::ArrowUp) || named(Named::ArrowDown)))
                            || named(Named::Tab);
                        if app_shortcut {
                            None
                        } else if enter && !press.modifiers.shift() {
                            Some(text_editor::Binding::Custom(Message::Send))
                        } else if paste {
                            // Looked at for an image first; text is pasted
                            // by the workspace when there is none.
                            Some(text_editor::Binding::Custom(Message::Paste))
                        } else {
                            text_editor::Binding::from_key_press(press)
                        }
                    });
                let switch = container(
                    checkbox(note)
                        .label(t.internal_note)
                        .on_toggle(Message::NoteMode)
                        .size(14)
                        .text_size(12),
                )
                .id("note-toggle");
                // Notes carry no files: the attach button goes while one
                // is written, so a file cannot look like part of a note.
                let attach: Element<'_, Message> = if note {
                    space::horizontal().width(0).into()
                } else {
                    container(
                        button(text(t.attach))
                            .padding([8, 12])
                            .style(crate::ui::theme::button_secondary)
                            .on_press(Message::Attach),
                    )
                    .id("attach")
                    .into()
                };
                let mut composer = column![switch].spacing(6);
                if let Some(p) = picker {
                    composer = composer.push(p.map(Message::Canned));
                }
                composer
                    .push(
                        row![
                            attach,
                            editor,
                            button(text(if note { t.add_note } else { t.send }))
                                .padding([8, 16])
                                .style(if note {
                                    button::warning
                                } else {
                                    button::primary
                                })
                                .on_press(Message::Send),
                        ]
                        .spacing(8)
                        .align_y(Alignment::End),
                    )
                    .into()
            }
            // Only a supervisor follows other agents' chats live; anyone
            // else would be looking at a transcript that silently stopped
            // (after handing the chat on, say), so say that it did.
            _ if active && oversees => container(
                small((t.read_only)(
                    &serving.unwrap_or_else(|| t.another_agent.into()),
                ))
                .style(muted),
            )
            .id("read-only")
            .into(),
            _ if active => container(
                small((t.serves_now)(
                    &serving.unwrap_or_else(|| t.another_agent.into()),
                ))
                .style(muted),
            )
            .id("read-only")
            .into(),
            // A group's waiting chat seen by an agent outside the group
            // (from the visitor list): say whose it is to take, rather
            // than leave them wondering why there is no Accept.
            _ if c.info.state == ConversationState::Queued && !desk.offered(&c.info) => {
                let group = c.info.group.as_deref().unwrap_or_default();
                container(small((t.waits_for_group)(desk.group_name(group))).style(muted))
                    .id("read-only")
                    .into()
            }
            _ => small(t.not_open).style(muted).into(),
        };
        let pane = column![top, rule::horizontal(1), transcript]
            .push(self.typing.view(c.info.id))
            .push(container(composer).padding(10));
        let pane = pane.width(Fill).height(Fill);
        if desk.files.hovering {
            let hint = if active && mine {
                t.drop_to_send
            } else {
                t.drop_not_here
            };
            stack![
                pane,
                container(container(text(hint).size(18)).padding(24).style(card))
                    .id("drop-hint")
                    .center(Fill)
                    .style(|theme: &Theme| container::Style {
                        // The chat shows through, dimmed, under the hint.
                        background: Some(
                            theme::Palette::of(theme).background.scale_alpha(0.8).into()
                        ),
                        ..container::Style::default()
                    })
            ]
            .into()
        } else {
            pane.into()
        }
    }
}

fn transfer_panel<'a>(desk: &'a Desk, t: &'a TransferForm) -> Element<'a, Message> {
    let words = tr();
    let targets = desk.transfer_targets(t.from);
    let mut col = column![small(words.transfer_to)].spacing(6);
    if targets.is_empty() {
        col = col.push(small(words.no_transfer_targets).style(crate::ui::theme::danger_text));
    }
    let mut choices = row![].spacing(6);
    for m in targets {
        let chosen = t.to == Some(TransferTarget::Agent(m.agent));
        choices = choices.push(
            container(
                button(text(format!("{} ({}/{})", m.name, m.active, m.capacity)).size(13))
                    .padding([4, 10])
                    .style(if chosen {
                        button::primary
                    } else {
                        crate::ui::theme::button_secondary
                    })
                    .on_press(Message::TransferTo(TransferTarget::Agent(m.agent))),
            )
            .id(format!("transfer-to-{}", m.agent)),
        );
    }
    col = col.push(choices.wrap());
    // Or to a group: whoever of it is free, or its queue. The chat's own
    // group is left out while it waits there already.
    let current = desk
        .convs
        .get(&t.conversation)
        .and_then(|c| c.info.group.as_deref());
    let groups: Vec<_> = desk
        .groups
        .iter()
        .filter(|g| t.from.is_some() || Some(g.key.as_str()) != current)
        .collect();
    if !groups.is_empty() {
        col = col.push(small(words.transfer_to_group));
        let mut choices = row![].spacing(6);
        for g in groups {
            let target = TransferTarget::Group(g.key.clone());
            let label = match g.open {
                Some(false) => (words.group_closed)(&g.name),
                _ => g.name.clone(),
            };
            choices = choices.push(
                container(
                    button(text(label).size(13))
                        .padding([4, 10])
                        .style(if t.to.as_ref() == Some(&target) {
                            button::primary
                        } else {
                            crate::ui::theme::button_secondary
                        })
                        .on_press(Message::TransferTo(target)),
                )
                .id(format!("transfer-to-group-{}", g.key)),
            );
        }
        col = col.push(choices.wrap());
    }
    col = col.push(
        text_input(words.transfer_note, &t.note)
            .id("transfer-note")
            .on_input(Message::TransferNote)
            .size(13)
            .padding(6),
    );
    col = col.push(
        row![
            container(
                button(text(words.transfer).size(13))
                    .padding([4, 12])
                    .style(button::primary)
                    .on_press_maybe(t.to.as_ref().map(|_| Message::TransferSend)),
            )
            .id("transfer-send"),
            button(text(words.cancel).size(13))
                .padding([4, 12])
                .style(button::text)
                .on_press(Message::TransferCancel),
        ]
        .spacing(8),
    );
    container(col)
        .id("transfer-panel")
        .padding([6, 14])
        .width(Fill)
        .style(card)
        .into()
}

/// A note for agents only: another colour and its own label, never to be
/// taken for something the visitor sees.
fn note_bubble<'a>(
    id: MsgId,
    author: &str,
    note: &str,
    time: &str,
    copied: Option<MsgId>,
) -> Element<'a, Message> {
    container(
        row![
            column![
                small((tr().note_header)(author, time)),
                linked_text(note, Message::OpenLink),
            ]
            .spacing(2)
            .width(Fill),
            copy_button(id, note, copied, theme::muted),
        ]
        .spacing(6),
    )
    .padding([6, 10])
    .width(Fill)
    .style(theme::note)
    .into()
}

/// The small button that copies a message's text (as shown: without the
/// invisible characters [`format::display_safe`] drops), and says "Copied"
/// for a moment after.
fn copy_button<'a>(
    id: MsgId,
    body: &str,
    copied: Option<MsgId>,
    style: fn(&Theme) -> iced::widget::text::Style,
) -> Element<'a, Message> {
    let label = if copied == Some(id) {
        tr().copied
    } else {
        tr().copy
    };
    container(
        button(small(label).style(style))
            .padding([0, 4])
            .style(button::text)
            .on_press(Message::Copy(id, format::display_safe(body))),
    )
    .id(format!("copy-{id}"))
    .into()
}

fn bubble<'a>(
    desk: &'a Desk,
    m: &'a StoredMessage,
    utc_offset_secs: i32,
    copied: Option<MsgId>,
) -> Element<'a, Message> {
    let time = format::clock(m.at_ms, utc_offset_secs);
    let id = m.client_id;
    let has_text = !m.body.trim().is_empty();
    match &m.author {
        // An internal note, as a transfer's note: agents only, and marked so.
        Author::Note { name, .. } => note_bubble(id, name, &m.body, &time, copied),
        Author::System => match Notice::parse(&m.body) {
            Some(Notice::Note { author, text: note }) => {
                note_bubble(id, &author, &note, &time, copied)
            }
            _ => container(small(format!("{} · {time}", message_text(m))).style(muted))
                .center_x(Fill)
                .into(),
        },
        Author::Visitor { .. } => {
            let mut meta = row![small(time).style(muted)]
                .spacing(6)
                .align_y(Alignment::Center);
            if has_text {
                meta = meta.push(copy_button(id, &m.body, copied, theme::muted));
            }
            let b = container(content(desk, m).push(meta))
                .padding([6, 10])
                .max_width(BUBBLE_MAX)
                .style(theme::visitor_bubble);
            row![b, space::horizontal()].into()
        }
        Author::Agent { name, .. } => {
            let own = desk.me.as_ref().is_some_and(
                |me| matches!(&m.author, Author::Agent { agent, .. } if *agent == me.agent),
            );
            let mut meta = row![small(time).style(theme::own_bubble_muted)]
                .spacing(6)
                .align_y(Alignment::Center);
            if !own {
                meta = meta.push(small(name.as_str()).style(theme::own_bubble_muted));
            }
            let label = delivery_label(m.state);
            let failed = m.state == DeliveryState::Failed;
            if own {
                meta = meta.push(small(label).style(if failed {
                    theme::danger_text
                } else {
                    theme::own_bubble_muted
                }));
            }
            if has_text {
                meta = meta.push(copy_button(id, &m.body, copied, theme::own_bubble_muted));
            }
            let b = container(content(desk, m).push(meta))
                .padding([6, 10])
                .max_width(BUBBLE_MAX)
                .style(theme::own_bubble);
            row![space::horizontal(), b].into()
        }
    }
}

/// What a person's message says: its text (if any) and its file (if any).
fn content<'a>(desk: &'a Desk, m: &'a StoredMessage) -> Column<'a, Message> {
    let mut col = Column::new().spacing(4);
    if !m.body.is_empty() || m.attachment.is_none() {
        col = col.push(
            container(linked_text(&m.body, Message::OpenLink)).id(format!("body-{}", m.client_id)),
        );
    }
    if let Some(a) = &m.attachment {
        col = col.push(files::attachment_view(&desk.files, a).map(Message::File));
    }
    col
}

/// The words shown under the agent's own messages.
pub fn delivery_label(state: DeliveryState) -> &'static str {
    tr().delivery(state)
}
