//! Drawing the app. Widgets that tests and people act on carry stable ids
//! (`login-server`, `invite-<visitor>`, `accept-<conversation>`,
//! `conv-<conversation>`, `composer`, `connection-bar`, …) and plain words.
//!
//! Everything visitors or sites supply is shown through `text`, which never
//! interprets markup, and wraps at any glyph so one long unbroken string
//! cannot push the layout wider than the window.

use holdfast_protocol::agent::{Author, ConversationState, Presence, VisitorInfo};
use iced::widget::text::Wrapping;
use iced::widget::{
    Column, button, column, container, row, rule, scrollable, space, text, text_editor, text_input,
};
use iced::{Alignment, Border, Color, Element, Fill, Length, Theme, border, keyboard};

use crate::ConnState;
use crate::store::{DeliveryState, StoredMessage};
use crate::ui::app::{App, Message, Screen, TrustPrompt};
use crate::ui::format;

const SIDE: f32 = 330.0;
const DETAILS: f32 = 300.0;

fn body_text<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    text(s).wrapping(Wrapping::WordOrGlyph)
}

fn small<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    text(s).size(12).wrapping(Wrapping::WordOrGlyph)
}

fn muted(theme: &Theme) -> text::Style {
    text::Style {
        color: Some(
            theme
                .extended_palette()
                .background
                .base
                .text
                .scale_alpha(0.6),
        ),
    }
}

fn heading<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    text(s).size(15).font(iced::Font {
        weight: iced::font::Weight::Bold,
        ..iced::Font::DEFAULT
    })
}

fn card(theme: &Theme) -> container::Style {
    let p = theme.extended_palette();
    container::Style {
        background: Some(p.background.weak.color.into()),
        border: border::rounded(8),
        ..container::Style::default()
    }
}

impl App {
    pub fn view(&self) -> Element<'_, Message> {
        let content: Element<'_, Message> = match (&self.trust, self.screen) {
            (Some(prompt), _) => self.trust_view(prompt),
            (None, Screen::Login) => self.login_view(),
            (None, Screen::Workspace) => self.workspace_view(),
        };
        if self.screen == Screen::Workspace {
            column![self.top_bar(), self.connection_bar(), content].into()
        } else {
            content
        }
    }

    fn login_view(&self) -> Element<'_, Message> {
        let f = &self.login;
        let mut sign_in = button(text("Sign in"))
            .style(button::primary)
            .padding([8, 20]);
        if !f.busy {
            sign_in = sign_in.on_press(Message::SignIn);
        }
        let mut form = column![
            text("Holdfast").size(32),
            text("Sign in to your team's chat server").style(muted),
            text("Server address"),
            text_input("chat.example.com:7070", &f.server)
                .id("login-server")
                .on_input(Message::ServerChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            text("Username"),
            text_input("username", &f.username)
                .id("login-user")
                .on_input(Message::UsernameChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            text("Password"),
            text_input("password", &f.password)
                .id("login-password")
                .secure(true)
                .on_input(Message::PasswordChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            row![sign_in].spacing(10).align_y(Alignment::Center),
        ]
        .spacing(8)
        .max_width(420);
        if f.busy {
            form = form.push(
                row![
                    text(self.connection_text()),
                    button(text("Cancel"))
                        .style(button::secondary)
                        .on_press(Message::CancelSignIn),
                ]
                .spacing(10)
                .align_y(Alignment::Center),
            );
        }
        if let Some(e) = &f.error {
            form = form.push(
                container(body_text(e.as_str()))
                    .id("login-error")
                    .padding(10)
                    .width(Fill)
                    .style(container::danger),
            );
        }
        form = form.push(
            small("The password is kept in memory only and never written to disk.").style(muted),
        );
        container(container(form).padding(24).style(card))
            .center(Fill)
            .into()
    }

    fn trust_view<'a>(&'a self, prompt: &'a TrustPrompt) -> Element<'a, Message> {
        let inner: Element<'a, Message> = match prompt {
            TrustPrompt::Unknown {
                server,
                fingerprint,
            } => column![
                heading("First connection to this server"),
                body_text(format!(
                    "Holdfast has not talked to {server} before. Check that the fingerprint \
                     below matches the one your administrator gets from \
                     `holdfast-server fingerprint`, then trust it. It is pinned from then on."
                )),
                container(
                    text(fingerprint.to_string())
                        .font(iced::Font::MONOSPACE)
                        .size(13)
                )
                .id("fingerprint")
                .padding(10)
                .style(container::bordered_box),
                row![
                    button(text("Trust this server"))
                        .style(button::primary)
                        .on_press(Message::Trust(true)),
                    button(text("Cancel"))
                        .style(button::secondary)
                        .on_press(Message::Trust(false)),
                ]
                .spacing(10),
            ]
            .spacing(12)
            .max_width(640)
            .into(),
            TrustPrompt::Mismatch {
                server,
                pinned,
                presented,
            } => container(
                column![
                    text("Stop: the server's identity changed").size(22),
                    body_text(format!(
                        "The key {server} presented is not the one pinned on this computer. \
                         Someone may be intercepting the connection. Nothing was sent. Ask \
                         your administrator before going on."
                    )),
                    text("Pinned fingerprint"),
                    container(
                        text(pinned.to_string())
                            .font(iced::Font::MONOSPACE)
                            .size(13)
                    )
                    .id("fingerprint-pinned")
                    .padding(8)
                    .style(container::bordered_box),
                    text("Presented fingerprint"),
                    container(
                        text(presented.to_string())
                            .font(iced::Font::MONOSPACE)
                            .size(13)
                    )
                    .id("fingerprint-presented")
                    .padding(8)
                    .style(container::bordered_box),
                    row![
                        button(text("Disconnect"))
                            .style(button::secondary)
                            .on_press(Message::Trust(false)),
                        button(text("The administrator confirmed the new key: trust it"))
                            .style(button::danger)
                            .on_press(Message::Trust(true)),
                    ]
                    .spacing(10),
                ]
                .spacing(10)
                .max_width(680),
            )
            .id("fingerprint-mismatch")
            .padding(20)
            .style(|theme: &Theme| {
                let p = theme.extended_palette();
                container::Style {
                    background: Some(p.danger.base.color.into()),
                    text_color: Some(p.danger.base.text),
                    border: border::rounded(8),
                    ..container::Style::default()
                }
            })
            .into(),
        };
        container(container(inner).padding(24).style(card))
            .center(Fill)
            .into()
    }

    fn top_bar(&self) -> Element<'_, Message> {
        let me = self
            .desk
            .me
            .as_ref()
            .map_or_else(|| self.login.username.clone(), |s| s.display_name.clone());
        let presence_button = |label: &'static str, p: Presence| {
            let active = self.desk.presence == Some(p);
            button(text(label).size(13))
                .padding([4, 10])
                .style(if active {
                    button::primary
                } else {
                    button::secondary
                })
                .on_press(Message::SetPresence(p))
        };
        row![
            text("Holdfast").size(18),
            text(me),
            space::horizontal(),
            presence_button("Online", Presence::Online),
            presence_button("Away", Presence::Away),
            button(text("Sign out").size(13))
                .padding([4, 10])
                .style(button::text)
                .on_press(Message::SignOut),
        ]
        .spacing(10)
        .padding([6, 12])
        .align_y(Alignment::Center)
        .into()
    }

    fn connection_bar(&self) -> Element<'_, Message> {
        let state = &self.status.state;
        let live = matches!(state, ConnState::Live);
        let offline = matches!(state, ConnState::Disconnected | ConnState::Stopped { .. });
        let mut bar = row![text(self.connection_text())]
            .spacing(12)
            .align_y(Alignment::Center);
        if matches!(state, ConnState::BackingOff { .. }) {
            bar = bar.push(
                button(text("Reconnect now").size(13))
                    .padding([3, 10])
                    .style(button::secondary)
                    .on_press(Message::ReconnectNow),
            );
        }
        if self.needs_password() {
            bar = bar.push(space::horizontal());
            bar = bar.push(
                text_input("password to connect", &self.bar_password)
                    .id("bar-password")
                    .secure(true)
                    .on_input(Message::PasswordChanged)
                    .on_submit(Message::SignIn)
                    .width(220)
                    .padding(4),
            );
            bar = bar.push(
                button(text("Connect").size(13))
                    .padding([3, 10])
                    .style(button::primary)
                    .on_press(Message::SignIn),
            );
        }
        let mut col = column![
            container(bar)
                .id("connection-bar")
                .padding([6, 12])
                .width(Fill)
                .style(move |theme: &Theme| {
                    let p = theme.extended_palette();
                    let pair = if live {
                        p.success.base
                    } else if offline {
                        p.danger.base
                    } else {
                        p.warning.base
                    };
                    container::Style {
                        background: Some(pair.color.into()),
                        text_color: Some(pair.text),
                        ..container::Style::default()
                    }
                })
        ];
        if let Some(b) = &self.desk.banner {
            col = col.push(
                container(
                    row![
                        body_text(b.as_str()).width(Fill),
                        button(text("Dismiss").size(12))
                            .style(button::text)
                            .on_press(Message::DismissBanner),
                    ]
                    .align_y(Alignment::Center),
                )
                .id("banner")
                .padding([4, 12])
                .width(Fill)
                .style(container::danger),
            );
        }
        col.into()
    }

    fn workspace_view(&self) -> Element<'_, Message> {
        let side = scrollable(
            column![self.queue_view(), self.mine_view(), self.visitors_view()]
                .spacing(16)
                .padding(10),
        )
        .id("side")
        .width(SIDE)
        .height(Fill);
        row![
            side,
            rule::vertical(1),
            self.chat_view(),
            rule::vertical(1),
            self.details_view(),
        ]
        .height(Fill)
        .into()
    }

    fn visitors_view(&self) -> Element<'_, Message> {
        let visitors = self.desk.visitors_sorted();
        // Offline, the list is the cache: say so rather than pass it off as
        // who is on the site now.
        let heading_text = if matches!(self.status.state, ConnState::Live) {
            format!("Visitors on the site ({})", visitors.len())
        } else {
            format!("Visitors, as last seen ({})", visitors.len())
        };
        let mut col = Column::new().spacing(8).push(heading(heading_text));
        col = col.push(
            text_input("Invitation message", &self.desk.invite_text)
                .id("invite-text")
                .on_input(Message::InviteTextChanged)
                .size(13)
                .padding(6),
        );
        if visitors.is_empty() {
            col = col.push(small("Nobody is browsing right now.").style(muted));
        }
        for v in visitors {
            col = col.push(self.visitor_row(v));
        }
        col.into()
    }

    fn visitor_row<'a>(&'a self, v: &'a VisitorInfo) -> Element<'a, Message> {
        let name = format::visitor_label(v.name.as_deref(), &v.id);
        let on_site = format::elapsed(self.now_ms - v.visit_started_ms);
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
            info = info.push(small(attrs));
        }
        let mut actions = row![
            button(text("Details").size(12))
                .padding([3, 8])
                .style(button::text)
                .on_press(Message::SelectVisitor(v.id.clone()))
        ]
        .spacing(6);
        match v.conversation {
            Some(c) => {
                actions = actions.push(
                    container(
                        button(text("Open chat").size(12))
                            .padding([3, 8])
                            .style(button::secondary)
                            .on_press(Message::SelectConversation(c)),
                    )
                    .id(format!("open-{}", v.id)),
                );
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

    fn queue_view(&self) -> Element<'_, Message> {
        let queue = self.desk.queue();
        let mut col = Column::new()
            .spacing(8)
            .push(heading(format!("Waiting ({})", queue.len())));
        if queue.is_empty() {
            col = col.push(small("No one is waiting.").style(muted));
        }
        for (i, c) in queue.into_iter().enumerate() {
            let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
            let waited = format::elapsed(self.now_ms - c.info.opened_at_ms);
            let preview = c
                .last()
                .map(|m| format::preview(&m.body, 60))
                .unwrap_or_default();
            let left = if c.info.state == ConversationState::LeftMessage {
                " · left a message"
            } else {
                ""
            };
            col = col.push(
                container(
                    column![
                        row![
                            text(format!("#{} {name}", i + 1)).size(14).width(Fill),
                            small(format!("waiting {waited}{left}")).style(muted),
                        ],
                        small(preview),
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

    fn mine_view(&self) -> Element<'_, Message> {
        let mine = self.desk.mine();
        let mut col = Column::new()
            .spacing(6)
            .push(heading(format!("My conversations ({})", mine.len())));
        if mine.is_empty() {
            col = col.push(small("No open conversations.").style(muted));
        }
        for c in mine {
            let selected = self.desk.selected == Some(c.info.id);
            let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
            let preview = c
                .last()
                .map(|m| format::preview(&m.body, 60))
                .unwrap_or_default();
            let mut top = row![text(name).size(14).width(Fill)].align_y(Alignment::Center);
            if c.unread > 0 {
                top = top.push(
                    container(text(c.unread.to_string()).size(12))
                        .padding([1, 7])
                        .style(|theme: &Theme| {
                            let p = theme.extended_palette();
                            container::Style {
                                background: Some(p.danger.base.color.into()),
                                text_color: Some(p.danger.base.text),
                                border: border::rounded(9),
                                ..container::Style::default()
                            }
                        }),
                );
            }
            col = col.push(
                container(
                    button(column![top, small(preview).style(muted)].spacing(2))
                        .width(Fill)
                        .padding(8)
                        .style(if selected {
                            button::primary
                        } else {
                            button::secondary
                        })
                        .on_press(Message::SelectConversation(c.info.id)),
                )
                .id(format!("conv-{}", c.info.id)),
            );
        }
        col.into()
    }

    fn chat_view(&self) -> Element<'_, Message> {
        let Some(c) = self.desk.selected.and_then(|id| self.desk.convs.get(&id)) else {
            return container(
                text("Pick a conversation, accept a waiting chat, or invite a visitor.")
                    .style(muted),
            )
            .center(Fill)
            .into();
        };
        let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
        let open = c.info.state == ConversationState::Active;
        let mut header = row![text(name).size(18).width(Fill)]
            .spacing(10)
            .align_y(Alignment::Center);
        let state_label = match c.info.state {
            ConversationState::Queued => "waiting",
            ConversationState::Active => "open",
            ConversationState::Closed => "closed",
            ConversationState::LeftMessage => "left a message",
        };
        header = header.push(small(state_label).style(muted));
        if open {
            header = header.push(
                container(
                    button(text("Close conversation").size(13))
                        .padding([4, 10])
                        .style(button::danger)
                        .on_press(Message::CloseConversation(c.info.id)),
                )
                .id("close-conversation"),
            );
        }
        let mut msgs = Column::new().spacing(8).padding([8, 14]);
        if c.more_before {
            msgs = msgs.push(
                container(
                    button(text("Load earlier messages").size(12))
                        .style(button::text)
                        .on_press(Message::LoadEarlier),
                )
                .id("load-earlier")
                .center_x(Fill),
            );
        }
        for m in &c.messages {
            msgs = msgs.push(self.bubble(m));
        }
        let transcript = scrollable(msgs)
            .id("transcript")
            .anchor_bottom()
            .height(Fill)
            .width(Fill);
        let composer: Element<'_, Message> = match self.desk.drafts.get(&c.info.id) {
            Some(draft) if open => {
                let editor = text_editor(draft)
                    .id("composer")
                    .placeholder("Write a reply. Enter sends, Shift+Enter starts a new line.")
                    .on_action(Message::Compose)
                    .wrapping(Wrapping::WordOrGlyph)
                    .height(96)
                    .key_binding(|press| {
                        let enter =
                            matches!(press.key, keyboard::Key::Named(keyboard::key::Named::Enter));
                        if enter && !press.modifiers.shift() {
                            Some(text_editor::Binding::Custom(Message::Send))
                        } else {
                            text_editor::Binding::from_key_press(press)
                        }
                    });
                row![
                    editor,
                    button(text("Send"))
                        .padding([8, 16])
                        .style(button::primary)
                        .on_press(Message::Send),
                ]
                .spacing(8)
                .align_y(Alignment::End)
                .into()
            }
            _ => small("This conversation is not open; replies are off.")
                .style(muted)
                .into(),
        };
        column![
            container(header).padding([8, 14]),
            rule::horizontal(1),
            transcript,
            container(composer).padding(10),
        ]
        .width(Fill)
        .height(Fill)
        .into()
    }

    fn bubble<'a>(&'a self, m: &'a StoredMessage) -> Element<'a, Message> {
        let time = format::clock(m.at_ms, self.opts.utc_offset_secs);
        match &m.author {
            Author::System => container(small(m.body.as_str()).style(muted))
                .center_x(Fill)
                .into(),
            Author::Visitor { .. } => {
                let b = container(
                    column![body_text(m.body.as_str()), small(time).style(muted)].spacing(2),
                )
                .padding([6, 10])
                .max_width(520)
                .style(|theme: &Theme| {
                    let p = theme.extended_palette();
                    container::Style {
                        background: Some(p.background.weaker.color.into()),
                        text_color: Some(p.background.weaker.text),
                        border: border::rounded(10),
                        ..container::Style::default()
                    }
                });
                row![b, space::horizontal()].into()
            }
            Author::Agent { name, .. } => {
                let own = self.desk.me.as_ref().is_some_and(
                    |me| matches!(&m.author, Author::Agent { agent, .. } if *agent == me.agent),
                );
                let mut meta = row![small(time)].spacing(6);
                if !own {
                    meta = meta.push(small(name.as_str()));
                }
                let label = delivery_label(m.state);
                let failed = m.state == DeliveryState::Failed;
                if own {
                    meta = meta.push(small(label).style(move |theme: &Theme| text::Style {
                        color: failed.then(|| theme.extended_palette().danger.strong.color),
                    }));
                }
                let b = container(column![body_text(m.body.as_str()), meta].spacing(2))
                    .padding([6, 10])
                    .max_width(520)
                    .style(|theme: &Theme| {
                        let p = theme.extended_palette();
                        container::Style {
                            background: Some(p.primary.weak.color.into()),
                            text_color: Some(p.primary.weak.text),
                            border: Border {
                                radius: 10.0.into(),
                                width: 0.0,
                                color: Color::TRANSPARENT,
                            },
                            ..container::Style::default()
                        }
                    });
                row![space::horizontal(), b].into()
            }
        }
    }

    fn details_view(&self) -> Element<'_, Message> {
        let Some(vid) = &self.desk.details_visitor else {
            return container(small("Visitor details appear here.").style(muted))
                .width(DETAILS)
                .height(Fill)
                .padding(12)
                .into();
        };
        let v = self.desk.visitors.get(vid);
        let name_from_history = self
            .desk
            .history
            .get(vid)
            .and_then(|h| h.conversations.iter().find_map(|c| c.visitor_name.clone()));
        let name = format::visitor_label(
            v.and_then(|v| v.name.as_deref())
                .or(name_from_history.as_deref()),
            vid,
        );
        let mut col = Column::new().spacing(6).push(heading(name));
        match v {
            Some(v) => {
                if let Some(e) = &v.email {
                    col = col.push(small(e.as_str()));
                }
                col = col.push(
                    small(if v.verified {
                        "Identity verified by the site"
                    } else {
                        "Identity not verified"
                    })
                    .style(muted),
                );
                col = col.push(small(if v.online { "On the site now" } else { "Gone" }));
                col = col.push(small(format!(
                    "On site {}",
                    format::elapsed(self.now_ms - v.visit_started_ms)
                )));
                if let Some(ua) = &v.user_agent {
                    let (b, os) = format::browser_and_os(ua);
                    col = col.push(small(format!("{b} · {os}")));
                    col = col.push(small(ua.as_str()).style(muted));
                }
                if let Some(r) = v.referrer.as_deref().filter(|r| !r.is_empty()) {
                    col = col.push(small(format!("Came from {r}")));
                }
                if !v.attrs.is_empty() {
                    col = col.push(heading("Attributes"));
                    for (k, val) in &v.attrs {
                        col = col.push(small(format!("{k}: {val}")));
                    }
                }
                col = col.push(heading("Page trail"));
                for p in v.trail.iter().rev().take(30) {
                    col = col.push(
                        column![
                            small(format!(
                                "{} {}",
                                format::clock(p.at_ms, self.opts.utc_offset_secs),
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
                col = col.push(small("Not on the site now.").style(muted));
            }
        }
        col = col.push(heading("Past conversations"));
        match self.desk.history.get(vid) {
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
                            format::clock(conv.opened_at_ms, self.opts.utc_offset_secs),
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
                        let who = match &m.author {
                            Author::Visitor { .. } => "Visitor".to_owned(),
                            Author::Agent { name, .. } => name.clone(),
                            Author::System => "—".to_owned(),
                        };
                        block = block.push(small(format!("{who}: {}", m.body)));
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
                    col = col.push(small(e.as_str()).style(text::danger));
                }
            }
        }
        scrollable(container(col).padding(12))
            .id("details")
            .width(Length::Fixed(DETAILS))
            .height(Fill)
            .into()
    }
}

/// The words shown under the agent's own messages.
pub fn delivery_label(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Queued => "Queued",
        DeliveryState::Sent => "Sent",
        DeliveryState::Delivered => "Delivered",
        DeliveryState::Failed => "Failed",
    }
}
