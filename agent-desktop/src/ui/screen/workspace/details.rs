//! The details panel: the visitor in focus (what their page said, the id
//! the site vouches for, their page trail) and their past conversations,
//! paged from the server.
//!
//! No state of its own: the desk holds which visitor is in focus, the
//! visitor list and the histories, which live updates keep current, and the
//! block form and the blocks made from this app. Its messages ask the
//! workspace for a page of history, and fill in, send or cancel a block.

use holdfast_protocol::agent::{Author, ConversationState};
use iced::widget::{Column, button, checkbox, column, container, row, scrollable, text_input};
use iced::{Element, Fill, Length};

use crate::ui::desk::{BlockForm, BlockState, Desk};
use crate::ui::format;
use crate::ui::widget::{card, has_stated_name, heading, muted, site_id_line, small, stated, text};

/// The panel's width on a window of ordinary size.
pub const WIDTH: f32 = 300.0;

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
    let Some(vid) = &desk.details_visitor else {
        return container(small("Visitor details appear here.").style(muted))
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
    let name = format::visitor_label(stated_name, vid);
    let mut col = Column::new().spacing(6).push(heading(name));
    match v {
        Some(v) => {
            // Everything the visitor's page said about them, together
            // under one caption, right under the name; the id the site
            // vouches for apart, after it.
            let email = v.email.as_deref().filter(|e| !e.trim().is_empty());
            if stated_name.is_some() || email.is_some() || !v.attrs.is_empty() {
                let mut block = column![small("Stated by the visitor").style(muted)].spacing(2);
                if let Some(n) = stated_name {
                    block = block.push(small(format!("Name: {n}")));
                }
                if let Some(e) = email {
                    block = block.push(small(format!("Email: {e}")));
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
                container(
                    site_id_line(v)
                        .unwrap_or_else(|| small("Not identified by the site").style(muted)),
                )
                .id("visitor-id"),
            );
            col = col.push(small(if v.online { "On the site now" } else { "Gone" }));
            col = col.push(small(format!(
                "On site {}",
                format::elapsed(now_ms - v.visit_started_ms)
            )));
            if let Some(ua) = &v.user_agent {
                let (b, os) = format::browser_and_os(ua);
                col = col.push(small(format!("{b} · {os}")));
                col = col.push(small(ua.as_str()).style(muted));
            }
            if let Some(r) = v.referrer.as_deref().filter(|r| !r.is_empty()) {
                col = col.push(small(format!("Came from {r}")));
            }
            col = col.push(heading("Page trail"));
            for p in v.trail.iter().rev().take(30) {
                col = col.push(
                    column![
                        small(format!(
                            "{} {}",
                            format::clock(p.at_ms, utc_offset_secs),
                            if p.title.is_empty() {
                                "(untitled)"
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
                col = col.push(stated("name"));
            }
            col = col.push(small("Not on the site now.").style(muted));
        }
    }
    col = col.push(block_section(desk, vid));
    col = col.push(heading("Past conversations"));
    match desk.history.get(vid) {
        None => {
            col = col.push(small("Not loaded.").style(muted));
            col = col.push(
                button(text("Load history").size(12))
                    .style(button::text)
                    .on_press(Message::LoadHistory {
                        visitor: vid.clone(),
                        older: false,
                    }),
            );
        }
        Some(h) => {
            if h.conversations.is_empty() && !h.loading {
                col = col.push(small("None.").style(muted));
            }
            for conv in &h.conversations {
                let state = match conv.state {
                    ConversationState::Queued => "waiting",
                    ConversationState::Active => "open",
                    ConversationState::Closed => "closed",
                    ConversationState::LeftMessage => "left a message",
                };
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
                        "(a file)"
                    } else {
                        m.body.as_str()
                    };
                    let line = match &m.author {
                        Author::Visitor { .. } => format!("Visitor: {said}"),
                        Author::Agent { name, .. } => format!("{name}: {said}"),
                        Author::Note { name, .. } => format!("Note from {name}: {said}"),
                        Author::System => {
                            format!("— {}", holdfast_protocol::notice::system_text(&m.body))
                        }
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
                col = col.push(small("Loading…").style(muted));
            } else if h.more {
                col = col.push(
                    container(
                        button(text("Load older history").size(12))
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
        .id("details")
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
    if let Some(f) = desk.block_form.as_ref().filter(|f| f.visitor == vid) {
        return block_form(f);
    }
    let mut col = column![].spacing(6);
    let blocking = desk.blocks.get(vid);
    if let Some(b) = blocking {
        if b.blocked() {
            col = col.push(
                container(
                    small(format!("Blocked: {}", b.reason)).style(crate::ui::theme::danger_text),
                )
                .id("block-status"),
            );
        }
        match &b.state {
            BlockState::Sending { unblock: false, .. } => {
                col = col.push(small("Blocking…").style(muted));
            }
            BlockState::Sending { unblock: true, .. } => {
                col = col.push(small("Unblocking…").style(muted));
            }
            BlockState::Unblocked => {
                col = col.push(container(small("Unblocked.").style(muted)).id("block-status"));
            }
            BlockState::Refused { unblock, message } => {
                let what = if *unblock {
                    "Not unblocked"
                } else {
                    "Not blocked"
                };
                col = col.push(
                    container(
                        small(format!("{what}: {message}")).style(crate::ui::theme::danger_text),
                    )
                    .id("block-refused"),
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
                button(text("Unblock").size(12))
                    .padding([4, 10])
                    .style(crate::ui::theme::button_secondary)
                    .on_press(Message::Unblock(vid.to_owned())),
            )
            .id("unblock"),
        );
    } else {
        col = col.push(
            container(
                button(text("Block…").size(12))
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
    let col = column![
        small("Block this visitor: their chat ends and the widget no longer shows."),
        text_input("Reason (required, only agents see it)", &f.reason)
            .id("block-reason")
            .on_input(Message::BlockReason)
            .on_submit_maybe(f.can_confirm().then_some(Message::BlockConfirm))
            .size(13)
            .padding(6),
        container(
            checkbox(f.by_address)
                .label("Also block their address")
                .on_toggle(Message::BlockByAddress)
                .size(14)
                .text_size(12),
        )
        .id("block-by-address"),
        row![
            container(
                button(text("Confirm").size(13))
                    .padding([4, 12])
                    .style(button::danger)
                    .on_press_maybe(f.can_confirm().then_some(Message::BlockConfirm)),
            )
            .id("block-confirm"),
            button(text("Cancel").size(13))
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
