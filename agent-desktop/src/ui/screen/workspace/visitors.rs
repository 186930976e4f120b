//! The visitors on the site, newest visit first, with what their page told
//! us, and the invitation to send them.
//!
//! It reads the visitor list from the desk, the one place it is held (the
//! chat header and the details panel read the same map); its own state is
//! only the invitation text being typed.

use holdfast_protocol::agent::{ConversationState, VisitorInfo};
use iced::widget::{Column, button, column, container, row, text_input};
use iced::{Alignment, Element, Fill};

use crate::ui::desk::{DEFAULT_INVITE, Desk};
use crate::ui::format;
use crate::ui::widget::{card, has_stated_name, heading, muted, site_id_line, small, stated, text};

#[derive(Debug)]
pub struct State {
    pub invite_text: String,
}

impl Default for State {
    fn default() -> Self {
        Self {
            invite_text: DEFAULT_INVITE.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Message {
    InviteTextChanged(String),
    /// Show this visitor in the details panel.
    Details(String),
    /// "Open chat" on a visitor already chatting.
    OpenChat(String),
    Invite(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Details(String),
    OpenChat(String),
    /// Invite `visitor` with `body` (the typed text, or the default one).
    Invite {
        visitor: String,
        body: String,
    },
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        match message {
            Message::InviteTextChanged(s) => {
                self.invite_text = s;
                None
            }
            Message::Details(v) => Some(Event::Details(v)),
            Message::OpenChat(v) => Some(Event::OpenChat(v)),
            Message::Invite(visitor) => {
                let body = self.invite_text.trim();
                let body = if body.is_empty() {
                    DEFAULT_INVITE
                } else {
                    body
                };
                Some(Event::Invite {
                    visitor,
                    body: body.to_owned(),
                })
            }
        }
    }

    /// `live`: connected now. Offline, the list is the cache, and the
    /// heading says so.
    pub fn view<'a>(&'a self, desk: &'a Desk, live: bool, now_ms: i64) -> Element<'a, Message> {
        let visitors = desk.visitors_sorted();
        // Offline, the list is the cache: say so rather than pass it off as
        // who is on the site now.
        let heading_text = if live {
            format!("Visitors on the site ({})", visitors.len())
        } else {
            format!("Visitors, as last seen ({})", visitors.len())
        };
        let mut col = Column::new().spacing(8).push(heading(heading_text));
        col = col.push(
            text_input("Invitation message", &self.invite_text)
                .id("invite-text")
                .on_input(Message::InviteTextChanged)
                .size(13)
                .padding(6),
        );
        if visitors.is_empty() {
            col = col.push(small("Nobody is browsing right now.").style(muted));
        }
        for v in visitors {
            col = col.push(row_view(desk, v, now_ms));
        }
        col.into()
    }
}

fn row_view<'a>(desk: &'a Desk, v: &'a VisitorInfo, now_ms: i64) -> Element<'a, Message> {
    let name = format::visitor_label(v.name.as_deref(), &v.id);
    let on_site = format::elapsed(now_ms - v.visit_started_ms);
    let page = v.trail.last();
    let (browser, os) = format::browser_and_os(v.user_agent.as_deref().unwrap_or_default());
    let mut info = column![
        row![
            text(name).size(14).width(Fill),
            small(format!("on site {on_site}")).style(muted),
        ]
        .align_y(Alignment::Center),
    ]
    .spacing(2);
    if has_stated_name(v.name.as_deref()) {
        info = info.push(stated("name"));
    }
    if let Some(id) = site_id_line(v) {
        info = info.push(id);
    }
    if let Some(p) = page {
        let title = if p.title.trim().is_empty() {
            "(untitled page)"
        } else {
            p.title.as_str()
        };
        info = info.push(small(title));
        info = info.push(small(p.url.as_str()).style(muted));
    }
    info = info.push(small(format!("{browser} · {os}")).style(muted));
    if let Some(r) = v.referrer.as_deref().filter(|r| !r.is_empty()) {
        info = info.push(small(format!("from {r}")).style(muted));
    }
    if !v.attrs.is_empty() {
        let attrs = v
            .attrs
            .iter()
            .map(|(k, val)| format!("{k}: {val}"))
            .collect::<Vec<_>>()
            .join(" · ");
        info = info.push(stated("attributes"));
        info = info.push(small(attrs));
    }
    let mut actions = row![
        button(text("Details").size(12))
            .padding([3, 8])
            .style(button::text)
            .on_press(Message::Details(v.id.clone()))
    ]
    .spacing(6);
    match v.conversation {
        Some(c) => {
            actions = actions.push(
                container(
                    button(text("Open chat").size(12))
                        .padding([3, 8])
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::OpenChat(v.id.clone())),
                )
                .id(format!("open-{}", v.id)),
            );
            if let Some(conv) = desk.convs.get(&c) {
                let serving = (conv.info.state == ConversationState::Active)
                    .then(|| desk.serving_name(&conv.info))
                    .flatten();
                let label = match serving {
                    _ if desk.is_mine(c) => "Chatting with you".to_owned(),
                    Some(n) => format!("Chatting with {n}"),
                    None => "Waiting in the queue".to_owned(),
                };
                actions = actions.push(small(label).style(muted));
            }
        }
        None => {
            actions = actions.push(
                container(
                    button(text("Invite to chat").size(12))
                        .padding([3, 8])
                        .style(button::primary)
                        .on_press(Message::Invite(v.id.clone())),
                )
                .id(format!("invite-{}", v.id)),
            );
        }
    }
    container(column![info, actions].spacing(4))
        .id(format!("visitor-{}", v.id))
        .padding(8)
        .width(Fill)
        .style(card)
        .into()
}
