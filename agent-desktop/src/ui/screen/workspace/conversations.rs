//! The chats the agent can open: their own, most recently active first,
//! and, for a supervisor, everyone else's.
//!
//! No state of its own (the desk holds the conversations and the
//! selection), so no `update`: selecting is the workspace's to do.

use holdfast_protocol::agent::ConversationId;
use iced::widget::{Column, button, column, container, row};
use iced::{Alignment, Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::i18n::tr;
use crate::ui::screen::workspace::ring::Item;
use crate::ui::theme;
use crate::ui::widget::{heading, muted, said_preview, small, text};

#[derive(Debug, Clone)]
pub enum Message {
    Select(ConversationId),
}

/// "My conversations", with unread counts.
pub fn mine(desk: &Desk) -> Element<'_, Message> {
    let mine = desk.mine();
    let mut col = Column::new()
        .spacing(6)
        .push(heading((tr().my_conversations)(mine.len())));
    if mine.is_empty() {
        col = col.push(small(tr().no_open_conversations).style(muted));
    }
    for c in mine {
        let selected = desk.selected == Some(c.info.id);
        let label = desk.conv_label(&c.info);
        let preview = said_preview(c, 60);
        let mut top = row![text(label.name).size(14).width(Fill)].align_y(Alignment::Center);
        if c.unread > 0 {
            top = top.push(
                container(text(c.unread.to_string()).size(12))
                    .padding([1, 7])
                    .style(theme::badge),
            );
        }
        col = col.push(card(
            top,
            label.place,
            preview,
            selected,
            desk.ring.lit(&Item::Chat(c.info.id)),
            c.info.id,
            format!("conv-{}", c.info.id),
        ));
    }
    col.into()
}

/// A supervisor's view of everyone else's open chats.
pub fn team_chats(desk: &Desk) -> Element<'_, Message> {
    let chats = desk.team_chats();
    let mut col = Column::new()
        .spacing(6)
        .push(heading((tr().team_chats)(chats.len())));
    if chats.is_empty() {
        col = col.push(small(tr().no_team_chats).style(muted));
    }
    for c in chats {
        let selected = desk.selected == Some(c.info.id);
        let label = desk.conv_label(&c.info);
        let who = desk.serving_name(&c.info).unwrap_or_default();
        let preview = said_preview(c, 50);
        col = col.push(card(
            row![
                text(label.name).size(14).width(Fill),
                small(who).style(theme::row_muted(selected))
            ],
            label.place,
            preview,
            selected,
            desk.ring.lit(&Item::Chat(c.info.id)),
            c.info.id,
            format!("team-conv-{}", c.info.id),
        ));
    }
    col.into()
}

/// One conversation in a list: its top line, where the visitor is, and
/// the last thing said, highlighted when open and outlined while Tab's
/// ring has it ([`theme::highlight`]); pressing it opens the chat.
#[allow(clippy::too_many_arguments)]
fn card<'a>(
    top: impl Into<Element<'a, Message>>,
    place: Option<String>,
    preview: String,
    selected: bool,
    lit: bool,
    conversation: ConversationId,
    id: String,
) -> Element<'a, Message> {
    let mut lines = column![top.into()].spacing(2);
    if let Some(place) = place {
        lines = lines.push(small(place).style(theme::row_muted(selected)));
    }
    container(
        button(lines.push(small(preview).style(theme::row_muted(selected))))
            .width(Fill)
            .padding(8)
            .style(theme::row(selected))
            .on_press(Message::Select(conversation)),
    )
    // Room for the outline outside the row's own edge, lit or not, so
    // the list does not shift as the highlight moves.
    .padding(3)
    .style(theme::highlight(lit))
    .id(id)
    .into()
}
