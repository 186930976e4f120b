//! The waiting list: chats no agent has yet, longest wait first, each with
//! its Accept button.
//!
//! It has no state of its own (the desk holds the conversations), so it has
//! no `update`: its one message is a request the workspace carries out.

use holdfast_protocol::agent::{ConversationId, ConversationState};
use iced::widget::{Column, button, column, container, row};
use iced::{Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::widget::{card, heading, left_message_lines, muted, said_preview, small, text};

#[derive(Debug, Clone)]
pub enum Message {
    Accept(ConversationId),
}

pub fn view(desk: &Desk, now_ms: i64) -> Element<'_, Message> {
    let queue = desk.queue();
    let mut col = Column::new()
        .spacing(8)
        .push(heading(format!("Waiting ({})", queue.len())));
    if queue.is_empty() {
        col = col.push(small("No one is waiting.").style(muted));
    }
    for (i, c) in queue.into_iter().enumerate() {
        let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
        let waited = format::elapsed(now_ms - c.info.opened_at_ms);
        let preview = said_preview(c, 60);
        let left = if c.info.state == ConversationState::LeftMessage {
            " · left a message"
        } else {
            ""
        };
        let mut details = column![].spacing(1);
        for line in left_message_lines(c) {
            details = details.push(small(line).style(muted));
        }
        col = col.push(
            container(
                column![
                    row![
                        text(format!("#{} {name}", i + 1)).size(14).width(Fill),
                        small(format!("waiting {waited}{left}")).style(muted),
                    ],
                    small(preview),
                    details,
                    container(
                        button(text("Accept").size(12))
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
            .style(card),
        );
    }
    col.into()
}
