//! "Jump to conversation" (Ctrl+K): a box over the workspace that finds a
//! chat by the name the lists show, as it is typed.
//!
//! It searches every chat the lists show, in their order: my
//! conversations, a supervisor's team chats, then the waiting ones. ↑ and
//! ↓ move the highlight, Enter opens the highlighted chat (the first match
//! until an arrow is pressed), Esc closes the box. Opening is the
//! workspace's to do, as for a click in the lists.

use holdfast_protocol::agent::ConversationId;
use iced::widget::{Column, button, column, container, row, text_input};
use iced::{Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::theme;
use crate::ui::widget::{card, muted, small, text};

/// The text field's id, for focusing it and for tests.
pub const INPUT: &str = "jump-input";

/// The most matches listed at once.
const SHOWN: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub query: String,
    /// The highlighted match, an index into [`matches`].
    pub highlight: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

#[derive(Debug, Clone)]
pub enum Message {
    Query(String),
    Move(Direction),
    /// Enter in the field: open the highlighted match.
    Submit,
    /// A match clicked.
    Pick(ConversationId),
}

/// What the workspace does for the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Open(ConversationId),
}

/// Every chat the lists show, in their order, with the name they show it
/// under.
pub fn listed(desk: &Desk) -> Vec<(ConversationId, String)> {
    let mut all = desk.mine();
    if desk.oversees() {
        all.extend(desk.team_chats());
    }
    all.extend(desk.queue());
    all.into_iter()
        .map(|c| {
            // The lists' own label, so a name shared by two visitors
            // reads the same (told apart) here as there.
            let name = desk.conv_label(&c.info).name;
            (c.info.id, format::display_safe(&name))
        })
        .collect()
}

/// The listed chats whose name holds every word of `query`, ignoring case,
/// in list order.
pub fn matches(desk: &Desk, query: &str) -> Vec<(ConversationId, String)> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    listed(desk)
        .into_iter()
        .filter(|(_, name)| {
            let name = name.to_lowercase();
            words.iter().all(|w| name.contains(w.as_str()))
        })
        .collect()
}

impl State {
    pub fn update(&mut self, message: Message, desk: &Desk) -> Option<Event> {
        match message {
            Message::Query(q) => {
                self.query = q;
                self.highlight = 0;
                None
            }
            Message::Move(d) => {
                let n = matches(desk, &self.query).len().min(SHOWN);
                self.highlight = match d {
                    Direction::Up => self.highlight.saturating_sub(1),
                    Direction::Down => (self.highlight + 1).min(n.saturating_sub(1)),
                };
                None
            }
            Message::Submit => matches(desk, &self.query)
                .get(self.highlight)
                .map(|(id, _)| Event::Open(*id)),
            Message::Pick(id) => Some(Event::Open(id)),
        }
    }

    pub fn view<'a>(&'a self, desk: &'a Desk) -> Element<'a, Message> {
        let t = tr();
        let found = matches(desk, &self.query);
        let mut list = Column::new().spacing(2);
        if found.is_empty() {
            list = list.push(small(t.jump_none).style(muted));
        }
        for (i, (id, name)) in found.into_iter().take(SHOWN).enumerate() {
            let on = i == self.highlight;
            list = list.push(
                container(
                    button(text(name).size(14))
                        .width(Fill)
                        .padding([4, 8])
                        .style(theme::row(on))
                        .on_press(Message::Pick(id)),
                )
                .id(format!("jump-{id}")),
            );
        }
        container(
            column![
                row![
                    text(t.jump_title).size(13).width(Fill),
                    small(t.jump_keys).style(muted),
                ],
                text_input(t.jump_placeholder, &self.query)
                    .id(INPUT)
                    .on_input(Message::Query)
                    .on_submit(Message::Submit)
                    .padding(6),
                list,
            ]
            .spacing(6),
        )
        .id("jump")
        .padding(10)
        .max_width(420)
        .style(card)
        .into()
    }
}
