//! The details panel: the visitor in focus (what their page said, the id
//! the site vouches for, their page trail) and their past conversations,
//! paged from the server.
//!
//! No state of its own: the desk holds which visitor is in focus, the
//! visitor list and the histories, which live updates keep current, and the
//! block form and the blocks made from this app. Its messages ask the
//! workspace for a page of history, and fill in, send or cancel a block.

use holdfast_protocol::agent::Author;
use iced::widget::{Column, button, checkbox, column, container, row, scrollable, text_input};
use iced::{Element, Fill, Length};

use crate::ui::desk::{BlockForm, BlockState, Desk};
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::widget::{card, has_stated_name, heading, muted, site_id_line, small, stated, text};

/// The panel's width on a window of ordinary size.
pub const WIDTH: f32 = 300.0;
/// The id of the panel's scrollable, which ↑/↓ and PageUp/PageDown move.
pub const SCROLL: &str = "details";

/// What Enter does on the details: what the visitor's row in the visitors
/// list offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// They have a chat: open it.
    OpenChat,
    /// On the site without one: invite them.
    Invite,
}

/// Enter's action for `visitor`: none once they have left without a chat.
pub fn main_action(desk: &Desk, visitor: &str) -> Option<Action> {
    let v = desk.visitors.get(visitor)?;
    if v.conversation.is_some() {
        Some(Action::OpenChat)
    } else if v.online {
        Some(Action::Invite)
    } else {
        None
    }
}

/// The details' keys, as the region says them while it has the ring.
pub fn keys_hint(desk: &Desk) -> &'static str {
    let t = tr();
    match desk
        .details_visitor
        .as_deref()
        .and_then(|v| main_action(desk, v))
    {
        Some(Action::OpenChat) => t.ring_keys_details_open,
        Some(Action::Invite) => t.ring_keys_details_invite,
        None => t.ring_keys_details,
    }
}

#[derive(Debug, Clone)]
pub enum Message {
    /// Load a visitor's history: the newest page, or (`older`) the page
    /// before the oldest one loaded.
    LoadHistory {
        visitor: String,
        older: bool,
    },
    /// A file in a past conversation.
    File(crate::ui::files::Action),
    /// Open the block form for this visitor.
    BlockOpen(String),
    BlockReason(String),
    BlockByAddress(bool),
    BlockConfirm,
    BlockCancel,
    Unblock(String),
}

pub fn view(desk: &Desk, now_ms: i64, utc_offset_secs: i32, width: f32) -> Element<'_, Message> {
    let t = tr();
    let Some(vid) = &desk.details_visitor else {
        return container(small(t.details_empty).style(muted))
            .width(width)
            .height(Fill)
            .padding(12)
            .into();
    };
    let v = desk.visitors.get(vid);
    let name_from_history = desk
        .history
        .get(vid)
        .and_then(|h| h.conversations.iter().find_map(|c| c.visitor_name.clone()));
    let stated_name = v
        .and_then(|v| v.name.as_deref())
        .or(name_from_history.as_deref())
        .filter(|n| has_stated_name(Some(n)));
    let mut col = Column::new()
        .spacing(6)
        .push(heading(desk.visitor_name(vid, stated_name)));
    if stated_name.is_none() {
        // The label a nameless visitor gets may fit several: the id tells
        // them apart.
        let short: String = vid.chars().take(8).collect();
        col = col.push(
            container(small((t.visitor_id_line)(&short)).style(muted)).id("visitor-short-id"),
        );
    }
    match v {
        Some(v) => {
            // Everything the visitor's page said about them, together
            // under one caption, right under the name; the id the site
            // vouches for apart, after it.
            let email = v.email.as_deref().filter(|e| !e.trim().is_empty());
            if stated_name.is_some() || email.is_some() || !v.attrs.is_empty() {
                let mut block = column![small(t.stated_by_visitor).style(muted)].spacing(2);
                if let Some(n) = stated_name {
                    block = block.push(small((t.name_line)(n)));
                }
                if let Some(e) = email {
                    block = block.push(small((t.email_line)(e)));
                }
                for (k, val) in &v.attrs {
                    block = block.push(small(format!("{k}: {val}")));
                }
                col = col.push(
                    container(block)
                        .id("visitor-stated")
                        .padding(6)
                        .width(Fill)
                        .style(card),
                );
            }
            col = col.push(
                container(site_id_line(v).unwrap_or_else(|| small(t.not_identified).style(muted)))
                    .id("visitor-id"),
            );
            col = col.push(small(if v.online { t.on_site_now } else { t.gone }));
            col = col.push(small((t.on_site_since)(&format::elapsed(
                now_ms - v.visit_started_ms,
            ))));
            if let Some(ua) = &v.user_agent {
                let (b, os) = format::browser_and_os(ua);
                col = col.push(small(format!("{b} · {os}")));
                col = col.push(small(ua.as_str()).style(muted));
            }
            if let Some(r) = v.referrer.as_deref().filter(|r| !r.is_empty()) {
                col = col.push(small((t.came_from)(r)));
            }
            col = col.push(heading(t.page_trail));
            for p in v.trail.iter().rev().take(30) {
                col = col.push(
                    column![
                        small(format!(
                            "{} {}",
                            format::clock(p.at_ms, utc_offset_secs),
                            if p.title.is_empty() {
                                t.untitled
                            } else {
                                p.title.as_str()
                            }
                        )),
                        small(p.url.as_str()).style(muted),
                    ]
                    .spacing(0),
                );
            }
        }
        None => {
            if stated_name.is_some() {
                col = col.push(stated(t.name_stated));
            }
            col = col.push(small(t.not_on_site_now).style(muted));
        }
    }
    col = col.push(block_section(desk, vid));
    col = col.push(heading(t.past_conversations));
    match desk.history.get(vid) {
        None => {
            col = col.push(small(t.not_loaded).style(muted));
            col = col.push(
                button(text(t.load_history).size(12))
                    .style(button::text)
                    .on_press(Message::LoadHistory {
                        visitor: vid.clone(),
                        older: false,
                    }),
            );
        }
        Some(h) => {
            if h.conversations.is_empty() && !h.loading {
                col = col.push(small(t.none).style(muted));
            }
            for conv in &h.conversations {
                let state = t.conversation_state(conv.state);
                let mut block = column![
                    small(format!(
                        "#{} · {} · {state}{}",
                        conv.id,
                        format::clock(conv.opened_at_ms, utc_offset_secs),
                        conv.assigned_name
                            .as_deref()
                            .map(|n| format!(" · {n}"))
                            .unwrap_or_default()
                    ))
                    .style(muted)
                ]
                .spacing(2);
                // Oldest first inside each conversation.
                for m in h
                    .messages
                    .iter()
                    .rev()
                    .filter(|m| m.conversation == conv.id)
                {
                    // A file sent without words still says who sent it.
                    let said = if m.body.is_empty() && m.attachment.is_some() {
                        t.a_file
                    } else {
                        m.body.as_str()
                    };
                    let line = match &m.author {
                        Author::Visitor { .. } => (t.visitor_said)(said),
                        Author::Agent { name, .. } => format!("{name}: {said}"),
                        Author::Note { name, .. } => (t.note_from)(name, said),
                        Author::System => format!("— {}", t.system_text(&m.body)),
                    };
                    block = block.push(small(line));
                    if let Some(a) = &m.attachment {
                        block = block.push(
                            crate::ui::files::attachment_view(&desk.files, a).map(Message::File),
                        );
                    }
                }
                col = col.push(container(block).padding(6).width(Fill).style(card));
            }
            if h.loading {
                col = col.push(small(t.loading).style(muted));
            } else if h.more {
                col = col.push(
                    container(
                        button(text(t.load_older_history).size(12))
                            .style(button::text)
                            .on_press(Message::LoadHistory {
                                visitor: vid.clone(),
                                older: true,
                            }),
                    )
                    .id("history-more"),
                );
            }
            if let Some(e) = &h.error {
                col = col.push(small(e.as_str()).style(crate::ui::theme::danger_text));
            }
        }
    }
    scrollable(container(col).padding(12))
        .id(SCROLL)
        // Beside the content, not over it: the last characters of a line
        // stay readable.
        .spacing(2)
        .width(Length::Fixed(width))
        .height(Fill)
        .into()
}

/// Block and unblock: the button, the form, and what became of a block
/// sent from here. Only blocks made in this session are known (the server
/// does not list older ones to agents), so "Unblock" appears only after
/// one; a visitor blocked earlier simply shows "Block…".
fn block_section<'a>(desk: &'a Desk, vid: &'a str) -> Element<'a, Message> {
    let t = tr();
    if let Some(f) = desk.block_form.as_ref().filter(|f| f.visitor == vid) {
        return block_form(f);
    }
    let mut col = column![].spacing(6);
    let blocking = desk.blocks.get(vid);
    if let Some(b) = blocking {
        if b.blocked() {
            col = col.push(
                container(small((t.blocked)(&b.reason)).style(crate::ui::theme::danger_text))
                    .id("block-status"),
            );
        }
        match &b.state {
            BlockState::Sending { unblock: false, .. } => {
                col = col.push(small(t.blocking).style(muted));
            }
            BlockState::Sending { unblock: true, .. } => {
                col = col.push(small(t.unblocking).style(muted));
            }
            BlockState::Unblocked => {
                col = col.push(container(small(t.unblocked).style(muted)).id("block-status"));
            }
            BlockState::Refused { unblock, message } => {
                let what = if *unblock {
                    (t.not_unblocked)(message)
                } else {
                    (t.not_blocked)(message)
                };
                col = col.push(
                    container(small(what).style(crate::ui::theme::danger_text)).id("block-refused"),
                );
            }
            BlockState::Blocked => {}
        }
    }
    let sending = matches!(blocking.map(|b| &b.state), Some(BlockState::Sending { .. }));
    if sending {
        return col.into();
    }
    if blocking.is_some_and(|b| b.blocked()) {
        col = col.push(
            container(
                button(text(t.unblock).size(12))
                    .padding([4, 10])
                    .style(crate::ui::theme::button_secondary)
                    .on_press(Message::Unblock(vid.to_owned())),
            )
            .id("unblock"),
        );
    } else {
        col = col.push(
            container(
                button(text(t.block).size(12))
                    .padding([4, 10])
                    .style(crate::ui::theme::button_secondary)
                    .on_press(Message::BlockOpen(vid.to_owned())),
            )
            .id("block"),
        );
    }
    col.into()
}

fn block_form(f: &BlockForm) -> Element<'_, Message> {
    let t = tr();
    let col = column![
        small(t.block_explained),
        text_input(t.block_reason, &f.reason)
            .id("block-reason")
            .on_input(Message::BlockReason)
            .on_submit_maybe(f.can_confirm().then_some(Message::BlockConfirm))
            .size(13)
            .padding(6),
        container(
            checkbox(f.by_address)
                .label(t.block_by_address)
                .on_toggle(Message::BlockByAddress)
                .size(14)
                .text_size(12),
        )
        .id("block-by-address"),
        row![
            container(
                button(text(t.confirm).size(13))
                    .padding([4, 12])
                    .style(button::danger)
                    .on_press_maybe(f.can_confirm().then_some(Message::BlockConfirm)),
            )
            .id("block-confirm"),
            button(text(t.cancel).size(13))
                .padding([4, 12])
                .style(button::text)
                .on_press(Message::BlockCancel),
        ]
        .spacing(8),
    ]
    .spacing(6);
    container(col)
        .id("block-form")
        .padding(6)
        .width(Fill)
        .style(card)
        .into()
}
