//! Canned replies on screen (PROTOCOL.md 10.21): the picker that opens
//! over the composer when a draft starts with `/`, and the panel where an
//! agent manages its own replies and an admin the site's.
//!
//! The list itself is the desk's (the server sends it whole after every
//! change); this state is only what is highlighted and what is being
//! edited. Saving and deleting need the client, so they go up as events.

use holdfast_protocol::agent::{CannedReply, Role};
use holdfast_protocol::ids::MsgId;
use iced::widget::text::Wrapping;
use iced::widget::text_editor::{self, Motion};
use iced::widget::{Column, button, checkbox, column, container, row, scrollable, text_input};
use iced::{Alignment, Element, Fill};

use crate::ui::canned::{self, SHOWN};
use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::theme;
use crate::ui::widget::{card, heading, muted, small, text};

/// Longest shortcut and body the server takes (10.21); the form says so
/// before the server has to.
const MAX_SHORTCUT: usize = 32;
const MAX_BODY: usize = 4000;

#[derive(Debug, Default)]
pub struct State {
    /// The highlighted match, and the query it belongs to: a new query
    /// starts again from the best match.
    sel: usize,
    sel_query: String,
    /// The draft the agent closed the picker on with Esc: it stays closed
    /// until the draft changes.
    dismissed: Option<String>,
    /// The management panel, when open.
    pub manager: Option<Manager>,
}

#[derive(Debug, Default)]
pub struct Manager {
    pub form: Option<Form>,
    /// The reply whose Delete was pressed, waiting for a second press: a
    /// site reply deleted by a slip is gone for every agent at once.
    pub confirm_delete: Option<u64>,
}

/// A reply being added or changed.
#[derive(Debug, Default)]
pub struct Form {
    pub id: Option<u64>,
    /// For an admin, "only for me"; anyone else's replies are their own
    /// whatever this says (decided at Save, when the role is surely known:
    /// the team list can arrive after the panel opens).
    pub personal: bool,
    pub shortcut: String,
    pub body: text_editor::Content,
    /// Sent: the outbox's id for it once known, and the server's refusal
    /// if it refused.
    pub sending: bool,
    pub command: Option<MsgId>,
    pub error: Option<String>,
}

impl Form {
    fn problem(&self) -> Option<&'static str> {
        let t = tr();
        let s = self.shortcut.trim();
        if s.is_empty() {
            Some(t.canned_no_shortcut)
        } else if s.chars().count() > MAX_SHORTCUT {
            Some(t.canned_shortcut_long)
        } else if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(t.canned_shortcut_spaces)
        } else if self.body.text().trim().is_empty() {
            Some(t.canned_no_body)
        } else if self.body.text().trim_end().len() > MAX_BODY {
            Some(t.canned_body_long)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub enum Message {
    /// ↑/↓ in the picker.
    Move(i32),
    /// Enter or Tab in the picker: the highlighted one.
    PickSelected,
    Pick(u64),
    Open,
    Close,
    New,
    Edit(u64),
    Delete(u64),
    ConfirmDelete(u64),
    KeepReply,
    Shortcut(String),
    Body(text_editor::Action),
    Personal(bool),
    Save,
    CancelForm,
    /// The outbox took the save or delete as this command (or could not).
    Queued(Result<MsgId, String>),
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Put this text in the open chat's composer, in place of the query.
    Insert(String),
    Save {
        id: Option<u64>,
        personal: bool,
        shortcut: String,
        body: String,
    },
    Delete(u64),
}

/// Whether the agent may change `r`: its own, or the site's as an admin.
fn may_change(desk: &Desk, r: &CannedReply) -> bool {
    r.personal || desk.my_role() == Role::Admin
}

impl State {
    /// The replies the picker offers for `draft`, or `None` when it is
    /// closed: no query, Esc on this very draft, or nothing matches.
    pub fn offered<'a>(&self, desk: &'a Desk, draft: &str) -> Option<Vec<&'a CannedReply>> {
        let q = canned::query(draft)?;
        if self.dismissed.as_deref() == Some(draft) {
            return None;
        }
        let hits = canned::ranked(&desk.canned, q);
        (!hits.is_empty()).then_some(hits)
    }

    fn selected(&self, hits: usize, query: &str) -> usize {
        if query == self.sel_query {
            self.sel.min(hits.saturating_sub(1))
        } else {
            0
        }
    }

    /// Esc: close the picker on this draft. True if it was open.
    pub fn dismiss(&mut self, desk: &Desk, draft: &str) -> bool {
        if self.offered(desk, draft).is_none() {
            return false;
        }
        self.dismissed = Some(draft.to_owned());
        true
    }

    /// The server's outcome of a command; true if it was this panel's.
    pub fn outcome(&mut self, id: MsgId, outcome: &Result<(), String>) -> bool {
        let Some(m) = &mut self.manager else {
            return false;
        };
        let Some(f) = m.form.as_mut().filter(|f| f.command == Some(id)) else {
            return false;
        };
        match outcome {
            Ok(()) => m.form = None,
            Err(e) => {
                f.sending = false;
                f.command = None;
                f.error = Some(e.clone());
            }
        }
        true
    }

    pub fn update(&mut self, message: Message, desk: &Desk, draft: &str) -> Option<Event> {
        match message {
            Message::Move(by) => {
                let q = canned::query(draft)?.to_owned();
                let n = self.offered(desk, draft)?.len().min(SHOWN);
                let at = self.selected(n, &q);
                let next = i64::try_from(at).unwrap_or(0) + i64::from(by);
                let max = i64::try_from(n).unwrap_or(1) - 1;
                self.sel = usize::try_from(next.clamp(0, max.max(0))).unwrap_or(0);
                self.sel_query = q;
                None
            }
            Message::PickSelected => {
                let q = canned::query(draft)?.to_owned();
                let hits = self.offered(desk, draft)?;
                let r = hits.get(self.selected(hits.len().min(SHOWN), &q))?;
                Some(self.insert(desk, r.id))
            }
            Message::Pick(id) => Some(self.insert(desk, id)),
            Message::Open => {
                self.manager = Some(Manager::default());
                None
            }
            Message::Close => {
                self.manager = None;
                None
            }
            Message::New => {
                if let Some(m) = &mut self.manager {
                    m.form = Some(Form::default());
                }
                None
            }
            Message::Edit(id) => {
                let r = desk.canned.iter().find(|r| r.id == id)?;
                if let Some(m) = &mut self.manager {
                    m.form = Some(Form {
                        id: Some(r.id),
                        personal: r.personal,
                        shortcut: r.shortcut.clone(),
                        body: text_editor::Content::with_text(&r.body),
                        ..Form::default()
                    });
                }
                None
            }
            Message::Delete(id) => {
                if let Some(m) = &mut self.manager {
                    m.confirm_delete = Some(id);
                }
                None
            }
            Message::ConfirmDelete(id) => {
                let m = self.manager.as_mut()?;
                (m.confirm_delete.take() == Some(id)).then_some(Event::Delete(id))
            }
            Message::KeepReply => {
                if let Some(m) = &mut self.manager {
                    m.confirm_delete = None;
                }
                None
            }
            Message::Shortcut(s) => {
                let f = self.form()?;
                f.shortcut = s;
                f.error = None;
                None
            }
            Message::Body(a) => {
                let f = self.form()?;
                f.body.perform(a);
                f.error = None;
                None
            }
            Message::Personal(p) => {
                let f = self.form()?;
                if f.id.is_none() {
                    f.personal = p;
                }
                None
            }
            Message::Save => {
                let admin = desk.my_role() == Role::Admin;
                let f = self.form()?;
                if f.sending || f.problem().is_some() {
                    return None;
                }
                f.sending = true;
                Some(Event::Save {
                    id: f.id,
                    personal: f.personal || !admin,
                    shortcut: f.shortcut.trim().to_owned(),
                    body: f.body.text().trim_end().to_owned(),
                })
            }
            Message::CancelForm => {
                if let Some(m) = &mut self.manager {
                    m.form = None;
                }
                None
            }
            Message::Queued(r) => {
                let f = self.form()?;
                match r {
                    Ok(id) => f.command = Some(id),
                    Err(e) => {
                        f.sending = false;
                        f.error = Some(e);
                    }
                }
                None
            }
        }
    }

    fn form(&mut self) -> Option<&mut Form> {
        self.manager.as_mut()?.form.as_mut()
    }

    fn insert(&mut self, desk: &Desk, id: u64) -> Event {
        let body = desk
            .canned
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.body.as_str())
            .unwrap_or_default();
        let conv = desk.selected.and_then(|c| desk.convs.get(&c));
        let visitor = conv.and_then(|c| c.info.visitor_name.as_deref());
        let lang = conv
            .and_then(|c| desk.visitors.get(&c.info.visitor))
            .and_then(|v| v.lang.as_deref());
        let agent = desk.me.as_ref().map_or("", |s| s.display_name.as_str());
        self.sel = 0;
        self.sel_query.clear();
        Event::Insert(canned::fill(body, visitor, lang, agent))
    }

    /// The picker over the composer, when the draft asks for one.
    pub fn picker<'a>(&self, desk: &'a Desk, draft: &str) -> Option<Element<'a, Message>> {
        let t = tr();
        let hits = self.offered(desk, draft)?;
        let q = canned::query(draft).unwrap_or_default();
        let sel = self.selected(hits.len().min(SHOWN), q);
        let mut col = Column::new()
            .spacing(2)
            .push(small((t.canned_picker)(hits.len())).style(muted));
        for (i, r) in hits.into_iter().take(SHOWN).enumerate() {
            let on = i == sel;
            let whose = if r.personal {
                t.canned_mine
            } else {
                t.canned_site
            };
            col = col.push(
                container(
                    button(
                        column![
                            row![
                                text(format!("/{}", r.shortcut)).size(13).width(Fill),
                                small(whose).style(theme::row_muted(on)),
                            ],
                            small(format::preview(&r.body, 90)).style(theme::row_muted(on)),
                        ]
                        .spacing(1),
                    )
                    .width(Fill)
                    .padding([4, 8])
                    .style(theme::row(on))
                    .on_press(Message::Pick(r.id)),
                )
                .id(format!("canned-{}", r.id)),
            );
        }
        Some(
            container(col)
                .id("canned-picker")
                .padding(6)
                .width(Fill)
                .style(card)
                .into(),
        )
    }

    /// The management panel, in place of the chat.
    pub fn manager<'a>(&'a self, desk: &'a Desk) -> Option<Element<'a, Message>> {
        let m = self.manager.as_ref()?;
        let t = tr();
        let admin = desk.my_role() == Role::Admin;
        let mut col = Column::new().spacing(8).push(
            row![
                heading(t.canned_replies).width(Fill),
                button(text(t.canned_new).size(13))
                    .padding([4, 10])
                    .style(iced::widget::button::primary)
                    .on_press(Message::New),
                container(
                    button(text(t.done).size(13))
                        .padding([4, 10])
                        .style(theme::button_secondary)
                        .on_press(Message::Close),
                )
                .id("canned-close"),
            ]
            .spacing(8)
            .align_y(Alignment::Center),
        );
        col = col.push(small(t.canned_help).style(muted));
        if let Some(f) = &m.form {
            col = col.push(form(f, admin));
        }
        for (personal, title) in [
            (false, t.canned_site_heading),
            (true, t.canned_mine_heading),
        ] {
            let list: Vec<&CannedReply> = desk
                .canned
                .iter()
                .filter(|r| r.personal == personal)
                .collect();
            col = col.push(heading(title(list.len())));
            if list.is_empty() {
                col = col.push(small(t.none_yet).style(muted));
            }
            for r in list {
                let mut line = row![
                    column![
                        text(format!("/{}", r.shortcut)).size(13),
                        small(r.body.as_str()).wrapping(Wrapping::WordOrGlyph),
                    ]
                    .spacing(2)
                    .width(Fill)
                ]
                .spacing(6)
                .align_y(Alignment::Center);
                if m.confirm_delete == Some(r.id) {
                    let whose = if r.personal {
                        t.delete_it
                    } else {
                        t.delete_for_everyone
                    };
                    line = line.push(small(whose));
                    line = line.push(
                        container(
                            button(small(t.delete))
                                .padding([2, 8])
                                .style(iced::widget::button::danger)
                                .on_press(Message::ConfirmDelete(r.id)),
                        )
                        .id(format!("canned-confirm-delete-{}", r.id)),
                    );
                    line = line.push(
                        button(small(t.keep))
                            .padding([2, 8])
                            .style(theme::button_secondary)
                            .on_press(Message::KeepReply),
                    );
                } else if may_change(desk, r) {
                    line = line.push(
                        container(
                            button(small(t.edit))
                                .padding([2, 8])
                                .style(theme::button_secondary)
                                .on_press(Message::Edit(r.id)),
                        )
                        .id(format!("canned-edit-{}", r.id)),
                    );
                    line = line.push(
                        container(
                            button(small(t.delete))
                                .padding([2, 8])
                                .style(iced::widget::button::danger)
                                .on_press(Message::Delete(r.id)),
                        )
                        .id(format!("canned-delete-{}", r.id)),
                    );
                }
                col = col.push(container(line).padding(6).width(Fill).style(card));
            }
        }
        Some(
            container(scrollable(col.padding(12)).height(Fill))
                .id("canned-panel")
                .width(Fill)
                .height(Fill)
                .into(),
        )
    }
}

fn form(f: &Form, admin: bool) -> Element<'_, Message> {
    let t = tr();
    let mut col = column![
        text(if f.id.is_some() {
            t.canned_change
        } else {
            t.canned_add
        })
        .size(14),
        text_input(t.canned_shortcut_placeholder, &f.shortcut)
            .id("canned-shortcut")
            .on_input(Message::Shortcut)
            .on_submit(Message::Save)
            .padding(6),
        iced::widget::text_editor(&f.body)
            .id("canned-body")
            .placeholder(t.canned_body_placeholder)
            .on_action(Message::Body)
            .wrapping(Wrapping::WordOrGlyph)
            .height(96),
    ]
    .spacing(6);
    // Only an admin chooses: everyone else's replies are their own.
    if admin && f.id.is_none() {
        col = col.push(
            container(
                checkbox(f.personal)
                    .label(t.canned_only_me)
                    .on_toggle(Message::Personal)
                    .size(14)
                    .text_size(12),
            )
            .id("canned-personal"),
        );
    }
    let problem = f.problem();
    if let Some(e) = &f.error {
        col = col.push(small((t.not_saved)(e)).style(theme::danger_text));
    } else if let Some(p) =
        problem.filter(|_| !f.shortcut.is_empty() || !f.body.text().trim().is_empty())
    {
        col = col.push(small(p).style(muted));
    }
    let ready = problem.is_none() && !f.sending;
    col = col.push(
        row![
            container(
                button(text(if f.sending { t.saving } else { t.save }).size(13))
                    .padding([4, 12])
                    .style(iced::widget::button::primary)
                    .on_press_maybe(ready.then_some(Message::Save)),
            )
            .id("canned-save"),
            button(text(t.cancel).size(13))
                .padding([4, 12])
                .style(theme::button_secondary)
                .on_press(Message::CancelForm),
        ]
        .spacing(8),
    );
    container(col).padding(8).width(Fill).style(card).into()
}

/// Put `text` in a composer as a picked reply leaves it: the whole draft
/// replaced, the cursor at its end, ready to read over and send.
pub fn replace_draft(draft: &mut text_editor::Content, text: &str) {
    *draft = text_editor::Content::with_text(text);
    draft.perform(text_editor::Action::Move(Motion::DocumentEnd));
}
