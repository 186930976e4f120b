//! The waiting list: chats no agent has yet, longest wait first, each with
//! its Accept button.
//!
//! It has no state of its own (the desk holds the conversations), so it has
//! no `update`: its one message is a request the workspace carries out.

use holdfast_protocol::agent::{ConversationId, ConversationState};
use iced::widget::{Column, button, column, container, row};
use iced::{Element, Fill};

use crate::ui::attention::{Attention, Level};
use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::screen::workspace::ring::Item;
use crate::ui::theme::{self, Tone};
use crate::ui::widget::{heading, left_message_lines, muted, said_preview, small, text};

#[derive(Debug, Clone)]
pub enum Message {
    Accept(ConversationId),
}

pub fn view<'a>(desk: &'a Desk, now_ms: i64, attention: &Attention) -> Element<'a, Message> {
    let t = tr();
    let queue = desk.queue();
    let mut col = Column::new()
        .spacing(8)
        .push(heading((t.waiting_heading)(queue.len())));
    if queue.is_empty() {
        col = col.push(small(t.no_one_waiting).style(muted));
    }
    for (i, c) in queue.into_iter().enumerate() {
        let label = desk.conv_label(&c.info);
        let waited_ms = now_ms - c.info.opened_at_ms;
        let waited = format::elapsed(waited_ms);
        // A left message is not a live visitor waiting: it never turns red.
        let level = if c.info.state == ConversationState::Queued {
            attention.level(waited_ms)
        } else {
            Level::Calm
        };
        let preview = said_preview(c, 60);
        let left = if c.info.state == ConversationState::LeftMessage {
            t.left_a_message_suffix
        } else {
            ""
        };
        let mut details = column![].spacing(1);
        if let Some(g) = &c.info.group {
            details = details.push(
                container(small((t.for_group)(desk.group_name(g))))
                    .id(format!("queued-group-{}", c.info.id)),
            );
        }
        if let Some(place) = label.place {
            details = details.push(small(place).style(muted));
        }
        for line in left_message_lines(c) {
            details = details.push(small(line).style(muted));
        }
        col = col.push(
            container(
                column![
                    row![
                        text(format!("#{} {}", i + 1, label.name))
                            .size(14)
                            .width(Fill),
                        wait_pill(
                            format!("{}{}{left}", (t.waiting_for)(&waited), t.wait_level(level)),
                            level
                        ),
                    ]
                    .spacing(6),
                    small(preview),
                    details,
                    container(
                        button(text(t.accept).size(12))
                            .padding([3, 10])
                            .style(button::success)
                            .on_press(Message::Accept(c.info.id)),
                    )
                    .id(format!("accept-{}", c.info.id)),
                ]
                .spacing(4),
            )
            .id(format!("queued-{}", c.info.id))
            .padding(8)
            .width(Fill)
            .style(theme::card_lit(desk.ring.lit(&Item::Waiting(c.info.id)))),
        );
    }
    col.into()
}

/// The waiting time, on amber or red once the wait is long: the pairs are
/// the connection bar's (amber) and the badge's (red), whose contrast the
/// theme's test already holds.
fn wait_pill<'a>(words: String, level: Level) -> Element<'a, Message> {
    match level {
        Level::Calm => small(words).style(muted).into(),
        Level::Amber => container(small(words))
            .padding([1, 6])
            .style(|t| theme::bar(t, Tone::Pending))
            .into(),
        Level::Red => container(small(words))
            .padding([1, 6])
            .style(theme::badge)
            .into(),
    }
}
