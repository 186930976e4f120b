//! Signing out: the prompt asked before a sign-out that leaves open chats
//! behind (hand them to a colleague, or let them go back to the queue),
//! and whether a sign-out is waiting for the server.
//!
//! A component of its own rather than part of the top bar: it replaces the
//! whole workspace while open and has its own choices, which the top bar's
//! one button does not need to know about.

use holdfast_protocol::agent::AgentId;
use iced::widget::{button, column, container, row};
use iced::{Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::widget::{body_text, card, heading, said_preview, small, text};

#[derive(Debug, Default)]
pub struct State {
    /// Asking before a sign-out that leaves open chats behind.
    pub prompt: bool,
    /// A sign-out is waiting for the server.
    pub signing_out: bool,
}

#[derive(Debug, Clone)]
pub enum Message {
    /// Sign out and let the server hand the open chats back.
    Confirm,
    /// Transfer every open chat to this agent, then sign out.
    TransferAll(AgentId),
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Sign out, handing every open chat to `to` first if given.
    SignOut { to: Option<AgentId> },
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        self.prompt = false;
        match message {
            Message::Confirm => Some(Event::SignOut { to: None }),
            Message::TransferAll(to) => Some(Event::SignOut { to: Some(to) }),
            Message::Cancel => None,
        }
    }
}

pub fn view<'a>(desk: &'a Desk, live: bool) -> Element<'a, Message> {
    let t = tr();
    let mine = desk.mine();
    // One chat reads "it", several "them": the agent is deciding about
    // people, and the wording should not make them count.
    let one = mine.len() == 1;
    let mut col = column![
        heading((t.open_chats)(mine.len())),
        body_text(if one { t.sign_out_one } else { t.sign_out_many }),
    ]
    .spacing(10)
    .max_width(560);
    for c in &mine {
        let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
        let last = said_preview(c, 60);
        col = col.push(small(format!("• {name}: {last}")));
    }
    if !live {
        col = col.push(body_text(t.sign_out_offline).style(crate::ui::theme::danger_text));
    }
    col = col.push(
        container(
            button(text(if one { t.return_one } else { t.return_many }))
                .style(button::primary)
                .padding([6, 14])
                .on_press(Message::Confirm),
        )
        .id("sign-out-release"),
    );
    let targets = desk.transfer_targets(desk.my_id());
    if live && !targets.is_empty() {
        col = col.push(text(if one {
            t.transfer_one_to
        } else {
            t.transfer_many_to
        }));
        let mut row_ = row![].spacing(8);
        for m in targets {
            row_ = row_.push(
                container(
                    button(text(format!("{} ({}/{})", m.name, m.active, m.capacity)).size(13))
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::TransferAll(m.agent)),
                )
                .id(format!("sign-out-to-{}", m.agent)),
            );
        }
        col = col.push(row_.wrap());
    }
    col = col.push(
        container(
            button(text(t.cancel))
                .style(button::text)
                .on_press(Message::Cancel),
        )
        .id("sign-out-cancel"),
    );
    container(container(col).id("sign-out-prompt").padding(24).style(card))
        .center(Fill)
        .into()
}
