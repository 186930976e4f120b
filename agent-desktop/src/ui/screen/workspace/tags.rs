//! The open conversation's tags, under the chat header: a chip per tag
//! (click to remove) and a list of the site's other tags to add one.
//!
//! A chat's tags are its latest `tagged` line (PROTOCOL.md 10.18), which
//! history keeps; the site's list comes with each login. A change shows at
//! once as "saving…" and settles when its line comes back from the server.

use holdfast_protocol::agent::ConversationId;
use iced::widget::{Row, button, container, pick_list, text};
use iced::{Alignment, Element};

use super::chat::Message;
use crate::ui::desk::{Conv, Desk};
use crate::ui::i18n::tr;
use crate::ui::widget::{muted, small};

pub fn view<'a>(desk: &'a Desk, c: &'a Conv, can_edit: bool) -> Option<Element<'a, Message>> {
    let pending = desk.tags_pending.get(&c.info.id);
    let shown = pending.cloned().unwrap_or_else(|| c.tags());
    if shown.is_empty() && (!can_edit || desk.site_tags.is_empty()) {
        return None;
    }
    let mut row = Row::new()
        .spacing(6)
        .align_y(Alignment::Center)
        .push(small(tr().tags).style(muted));
    for t in &shown {
        let chip = button(text(format!("{t}  ×")).size(12))
            .padding([2, 8])
            .style(button::secondary);
        row = row.push(if can_edit {
            let rest: Vec<String> = shown.iter().filter(|x| *x != t).cloned().collect();
            chip.on_press(Message::SetTags(c.info.id, rest))
        } else {
            chip
        });
    }
    let others: Vec<String> = desk
        .site_tags
        .iter()
        .filter(|t| !shown.contains(t))
        .cloned()
        .collect();
    if can_edit && !others.is_empty() {
        let id: ConversationId = c.info.id;
        let base = shown.clone();
        row = row.push(
            container(
                pick_list(others, None::<String>, move |t| {
                    let mut next = base.clone();
                    next.push(t);
                    Message::SetTags(id, next)
                })
                .placeholder(tr().add_tag)
                .text_size(12)
                .padding([2, 8]),
            )
            .id("add-tag"),
        );
    }
    if pending.is_some() {
        row = row.push(small(tr().saving_lower).style(muted));
    }
    Some(container(row).id("chat-tags").padding([0, 14]).into())
}
