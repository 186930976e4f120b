//! The visitors on the site, newest visit first, with what their page told
//! us, and the invitation to send them.
//!
//! It reads the visitor list from the desk, the one place it is held (the
//! chat header and the details panel read the same map); its own state is
//! each visitor's invitation text, typed for that visitor alone, and which
//! visitor's text is open for editing.

use std::collections::HashMap;

use holdfast_protocol::agent::{ConversationState, VisitorInfo};
use iced::widget::{Column, button, column, container, row, text_input};
use iced::{Alignment, Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::format;
use crate::ui::i18n::tr;
use crate::ui::widget::{has_stated_name, heading, muted, site_id_line, small, stated, text};

#[derive(Debug, Default)]
pub struct State {
    /// Each visitor's own invitation text, once the agent edited it; the
    /// others get the catalog's default one, in the visitor's language
    /// when it is known (else the agent's).
    pub invite_text: HashMap<String, String>,
    /// The visitor whose invitation text is open for editing.
    pub editing: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Message {
    /// Open (or close) the invitation text of this visitor.
    EditInvite(String),
    InviteTextChanged(String, String),
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
    pub fn update(&mut self, message: Message, desk: &Desk) -> Option<Event> {
        match message {
            Message::EditInvite(v) => {
                self.editing = if self.editing.as_ref() == Some(&v) {
                    None
                } else {
                    Some(v)
                };
                None
            }
            Message::InviteTextChanged(v, s) => {
                self.invite_text.insert(v, s);
                None
            }
            Message::Details(v) => Some(Event::Details(v)),
            Message::OpenChat(v) => Some(Event::OpenChat(v)),
            Message::Invite(visitor) => {
                let body = self.text_for(desk, &visitor).trim();
                let body = if body.is_empty() {
                    default_invite(desk, &visitor).to_owned()
                } else {
                    body.to_owned()
                };
                // Sent: the next invitation to anyone starts from the
                // default again, and this one's draft is done.
                self.invite_text.remove(&visitor);
                if self.editing.as_ref() == Some(&visitor) {
                    self.editing = None;
                }
                Some(Event::Invite { visitor, body })
            }
        }
    }

    /// The invitation text for `visitor`: their own, or the default.
    pub fn text_for(&self, desk: &Desk, visitor: &str) -> &str {
        self.invite_text
            .get(visitor)
            .map_or_else(|| default_invite(desk, visitor), String::as_str)
    }

    /// `live`: connected now. Offline, the list is the cache, and the
    /// heading says so.
    pub fn view<'a>(
        &'a self,
        desk: &'a Desk,
        live: bool,
        now_ms: i64,
        utc_offset_secs: i32,
    ) -> Element<'a, Message> {
        let visitors = desk.visitors_sorted();
        // Offline, the list is the cache: say so rather than pass it off as
        // who is on the site now.
        let t = tr();
        let heading_text = if live {
            (t.visitors_live)(visitors.len())
        } else {
            (t.visitors_cached)(visitors.len())
        };
        let mut col = Column::new().spacing(8).push(heading(heading_text));
        if visitors.is_empty() {
            col = col.push(small(t.nobody_browsing).style(muted));
        }
        for v in visitors {
            col = col.push(row_view(self, desk, v, now_ms, utc_offset_secs));
        }
        col.into()
    }
}

fn row_view<'a>(
    state: &'a State,
    desk: &'a Desk,
    v: &'a VisitorInfo,
    now_ms: i64,
    utc_offset_secs: i32,
) -> Element<'a, Message> {
    let t = tr();
    let name = desk.visitor_name(&v.id, v.name.as_deref());
    let on_site = format::elapsed(now_ms - v.visit_started_ms);
    let page = v.trail.last();
    let (browser, os) = format::browser_and_os(v.user_agent.as_deref().unwrap_or_default());
    let mut info = column![
        row![
            text(name).size(14).width(Fill),
            small((t.on_site_for)(&on_site)).style(muted),
        ]
        .align_y(Alignment::Center),
    ]
    .spacing(2);
    if has_stated_name(v.name.as_deref()) {
        info = info.push(stated(t.name_stated));
    }
    if let Some(id) = site_id_line(v) {
        info = info.push(id);
    }
    if let Some(p) = page {
        let title = if p.title.trim().is_empty() {
            t.untitled_page
        } else {
            p.title.as_str()
        };
        info = info.push(small(title));
        info = info.push(small(p.url.as_str()).style(muted));
    }
    info = info.push(small(format!("{browser} · {os}")).style(muted));
    if let Some(r) = v.referrer.as_deref().filter(|r| !r.is_empty()) {
        info = info.push(small((t.from_referrer)(r)).style(muted));
    }
    if !v.attrs.is_empty() {
        let attrs = v
            .attrs
            .iter()
            .map(|(k, val)| format!("{k}: {val}"))
            .collect::<Vec<_>>()
            .join(" · ");
        info = info.push(stated(t.attributes_stated));
        info = info.push(small(attrs));
    }
    // The site's automatic invitation, while the visitor has not replied
    // (a reply opens a chat, which then starts with it).
    if let Some(i) = desk
        .invitations
        .get(&v.id)
        .filter(|_| v.conversation.is_none())
    {
        info = info.push(
            container(
                small((t.auto_invited)(
                    &i.rule,
                    &format::clock(i.at_ms, utc_offset_secs),
                    t.invitation(i.state),
                ))
                .style(muted),
            )
            .id(format!("auto-invite-{}", v.id)),
        );
    }
    let mut actions = row![
        button(text(t.details).size(12))
            .padding([3, 8])
            .style(button::text)
            .on_press(Message::Details(v.id.clone()))
    ]
    .spacing(6);
    match v.conversation {
        Some(c) => {
            actions = actions.push(
                container(
                    button(text(t.open_chat).size(12))
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
                    _ if desk.is_mine(c) => t.chatting_with_you.to_owned(),
                    Some(n) => (t.chatting_with)(&n),
                    None => t.waiting_in_queue.to_owned(),
                };
                actions = actions.push(small(label).style(muted));
            }
        }
        None => {
            actions = actions.push(
                container(
                    button(text(t.invite_to_chat).size(12))
                        .padding([3, 8])
                        .style(button::primary)
                        .on_press(Message::Invite(v.id.clone())),
                )
                .id(format!("invite-{}", v.id)),
            );
            actions = actions.push(
                container(
                    button(text(t.edit_invitation).size(12))
                        .padding([3, 8])
                        .style(button::text)
                        .on_press(Message::EditInvite(v.id.clone())),
                )
                .id(format!("invite-edit-{}", v.id)),
            );
        }
    }
    let mut body = column![info, actions].spacing(4);
    if v.conversation.is_none() && state.editing.as_deref() == Some(v.id.as_str()) {
        let id = v.id.clone();
        body = body.push(
            text_input(t.invitation_placeholder, state.text_for(desk, &v.id))
                .id(format!("invite-text-{}", v.id))
                .on_input(move |s| Message::InviteTextChanged(id.clone(), s))
                .on_submit(Message::Invite(v.id.clone()))
                .size(13)
                .padding(6),
        );
    }
    container(body)
        .id(format!("visitor-{}", v.id))
        .padding(8)
        .width(Fill)
        .style(crate::ui::theme::card_lit(
            desk.ring.lit(&super::ring::Item::Visitor(v.id.clone())),
        ))
        .into()
}

/// The invitation a visitor gets when the agent wrote none: in the
/// visitor's language when it is known (PROTOCOL.md 10.24), since it is
/// the visitor who reads it; else in the agent's.
fn default_invite(desk: &Desk, visitor: &str) -> &'static str {
    let lang = desk.visitors.get(visitor).and_then(|v| v.lang.as_deref());
    crate::ui::i18n::for_visitor(lang).default_invite
}
