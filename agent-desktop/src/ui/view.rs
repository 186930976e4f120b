//! Drawing the app. Widgets that tests and people act on carry stable ids
//! (`login-server`, `invite-<visitor>`, `accept-<conversation>`,
//! `conv-<conversation>`, `composer`, `connection-bar`, …) and plain words.
//!
//! Everything visitors or sites supply is shown through `text`, which never
//! interprets markup, and wraps at any glyph so one long unbroken string
//! cannot push the layout wider than the window.
//!
//! Every text widget here is made through this module's own [`text`], which
//! drops bidi controls and invisible characters ([`format::display_safe`])
//! from whatever it draws: names, messages, attributes, pages, user agents,
//! left-message details, team names, history. It is one seam rather than a
//! call at each field, so a field added later is covered, and a string put
//! together from several fields is cleaned as a whole (an override left open
//! in one cannot flip the next). The data itself keeps the raw text: the
//! store, the outbox and the notification log are not touched.
//!
//! Page addresses and referrers are shown as text and nothing here opens a
//! URL: they are whatever the visitor's browser reported, `javascript:` and
//! `file:` included. An "open page" action, if one is ever added, must take
//! only `http` and `https` and leave anything else as text.

use holdfast_protocol::agent::{
    Author, ConversationState, Presence, Role, TeamMember, VisitorInfo,
};
use holdfast_protocol::notice::Notice;
use iced::widget::text::{self, Wrapping};
use iced::widget::{
    Column, button, column, container, row, rule, scrollable, space, text_editor, text_input,
};
use iced::{Alignment, Border, Color, Element, Fill, Length, Theme, border, keyboard};

use crate::ui::app::{App, Message, Screen, TransferForm, TrustPrompt};
use crate::ui::desk::{Conv, message_text};
use crate::ui::format;
use holdfast_client::ConnState;
use holdfast_client::store::{DeliveryState, StoredMessage};

const SIDE: f32 = 330.0;
const DETAILS: f32 = 300.0;

/// The only way text reaches the screen from this module: iced's `text`,
/// minus the characters that reorder or hide what is around them. (The
/// `text` imported above is iced's module, for its types and styles; the
/// widget function is this one.)
fn text<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    iced::widget::text(format::shown(s.into_fragment()))
}

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

/// Whether a visitor-supplied name is there to show (the label falls back
/// to a short id otherwise, which nobody stated).
fn has_stated_name(name: Option<&str>) -> bool {
    name.is_some_and(|n| !n.trim().is_empty())
}

/// The muted words under what the visitor's page told us about them.
fn stated<'a>(what: &str) -> text::Text<'a> {
    small(format!("{what} stated by the visitor")).style(muted)
}

/// The site's own id for the visitor: the one thing the identify hash
/// covers (`hash = HMAC(site secret, id)`), so the one thing shown with a
/// check mark. The name, email and attributes travel beside the hash,
/// unsigned, and are whatever the page said; they are shown as stated (see
/// [`stated`]). Without a secret the site vouches for nothing, so the id is
/// stated too.
fn site_id_line<'a>(v: &VisitorInfo) -> Option<text::Text<'a>> {
    let id = v.external_id.as_deref().filter(|id| !id.trim().is_empty());
    match (id, v.verified) {
        (Some(id), true) => {
            Some(small(format!("✓ ID {id} · verified by the site")).style(text::success))
        }
        // A record from before ids were sent along: the check still holds.
        (None, true) => Some(small("✓ ID verified by the site").style(text::success)),
        (Some(id), false) => Some(small(format!("ID {id} · stated by the visitor")).style(muted)),
        (None, false) => None,
    }
}

impl App {
    pub fn view(&self) -> Element<'_, Message> {
        let content: Element<'_, Message> = match (&self.trust, self.screen) {
            (Some(prompt), _) => self.trust_view(prompt),
            (None, Screen::Login) => self.login_view(),
            (None, Screen::Workspace) if self.sign_out_prompt => self.sign_out_view(),
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
        } else if let Some(n) = &f.notice {
            form = form.push(
                container(body_text(n.as_str()))
                    .id("login-notice")
                    .padding(10)
                    .width(Fill)
                    .style(container::bordered_box),
            );
        }
        form = form.push(
            small("The password is kept in memory only and never written to disk.").style(muted),
        );
        // The card is as wide as the form: an error or notice box fills
        // its width, which would otherwise stretch the card across the
        // window.
        container(container(form).padding(24).style(card).max_width(468))
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
            container(
                button(
                    text(if self.signing_out {
                        "Signing out…"
                    } else {
                        "Sign out"
                    })
                    .size(13)
                )
                .padding([4, 10])
                .style(button::text)
                .on_press_maybe((!self.signing_out).then_some(Message::SignOut)),
            )
            .id("sign-out"),
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

    /// Asked before signing out with open chats.
    fn sign_out_view(&self) -> Element<'_, Message> {
        let mine = self.desk.mine();
        let live = matches!(self.status.state, ConnState::Live);
        // One chat reads "it", several "them": the agent is deciding about
        // people, and the wording should not make them count.
        let one = mine.len() == 1;
        let mut col = column![
            heading(format!(
                "You have {} open chat{}",
                mine.len(),
                if one { "" } else { "s" }
            )),
            body_text(if one {
                "A visitor is waiting on you. Hand the chat to a colleague, or let it go back \
                 to the queue, where the next available agent takes it."
            } else {
                "Visitors are waiting on you. Hand the chats to a colleague, or let them go \
                 back to the queue, where the next available agent takes them."
            }),
        ]
        .spacing(10)
        .max_width(560);
        for c in &mine {
            let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
            let last = said_preview(c, 60);
            col = col.push(small(format!("• {name}: {last}")));
        }
        if !live {
            col = col.push(
                body_text(
                    "You are offline: the server cannot be told now. Your chats go back to the \
                     queue once you have been offline for the server's grace period (2 minutes \
                     by default).",
                )
                .style(text::danger),
            );
        }
        col = col.push(
            container(
                button(text(if one {
                    "Return it to the queue and sign out"
                } else {
                    "Return them to the queue and sign out"
                }))
                .style(button::primary)
                .padding([6, 14])
                .on_press(Message::SignOutConfirm),
            )
            .id("sign-out-release"),
        );
        let targets = self.desk.transfer_targets(self.desk.my_id());
        if live && !targets.is_empty() {
            col = col.push(text(if one {
                "Or transfer it to:"
            } else {
                "Or transfer them all to:"
            }));
            let mut row_ = row![].spacing(8);
            for m in targets {
                row_ = row_.push(
                    container(
                        button(text(format!("{} ({}/{})", m.name, m.active, m.capacity)).size(13))
                            .style(button::secondary)
                            .on_press(Message::SignOutTransferAll(m.agent)),
                    )
                    .id(format!("sign-out-to-{}", m.agent)),
                );
            }
            col = col.push(row_.wrap());
        }
        col = col.push(
            container(
                button(text("Cancel"))
                    .style(button::text)
                    .on_press(Message::SignOutCancel),
            )
            .id("sign-out-cancel"),
        );
        container(container(col).id("sign-out-prompt").padding(24).style(card))
            .center(Fill)
            .into()
    }

    fn workspace_view(&self) -> Element<'_, Message> {
        let mut side_col = column![self.queue_view(), self.mine_view()]
            .spacing(16)
            .padding(10);
        if self.desk.oversees() {
            side_col = side_col.push(self.team_chats_view());
        }
        side_col = side_col.push(self.team_view()).push(self.visitors_view());
        let side = scrollable(side_col).id("side").width(SIDE).height(Fill);
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
                            .on_press(Message::OpenVisitorChat(v.id.clone())),
                    )
                    .id(format!("open-{}", v.id)),
                );
                if let Some(conv) = self.desk.convs.get(&c) {
                    let serving = (conv.info.state == ConversationState::Active)
                        .then(|| self.desk.serving_name(&conv.info))
                        .flatten();
                    let label = match serving {
                        _ if self.desk.is_mine(c) => "Chatting with you".to_owned(),
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
            let preview = said_preview(c, 60);
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

    fn team_view(&self) -> Element<'_, Message> {
        let team = self.desk.team_sorted();
        let mut col = Column::new()
            .spacing(4)
            .push(heading(format!("Team ({})", team.len())));
        let me = self.desk.my_id();
        for m in team {
            col = col
                .push(container(team_row(m, Some(m.agent) == me)).id(format!("team-{}", m.agent)));
        }
        col.into()
    }

    /// A supervisor's view of everyone else's open chats.
    fn team_chats_view(&self) -> Element<'_, Message> {
        let chats = self.desk.team_chats();
        let mut col = Column::new()
            .spacing(6)
            .push(heading(format!("Team chats ({})", chats.len())));
        if chats.is_empty() {
            col = col.push(small("No one else has an open chat.").style(muted));
        }
        for c in chats {
            let selected = self.desk.selected == Some(c.info.id);
            let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
            let who = self.desk.serving_name(&c.info).unwrap_or_default();
            let preview = said_preview(c, 50);
            col = col.push(
                container(
                    button(
                        column![
                            row![text(name).size(14).width(Fill), small(who).style(muted)],
                            small(preview).style(muted)
                        ]
                        .spacing(2),
                    )
                    .width(Fill)
                    .padding(8)
                    .style(if selected {
                        button::primary
                    } else {
                        button::secondary
                    })
                    .on_press(Message::SelectConversation(c.info.id)),
                )
                .id(format!("team-conv-{}", c.info.id)),
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
        let mine = self.desk.is_mine(c.info.id);
        let oversees = self.desk.oversees();
        let active = c.info.state == ConversationState::Active;
        let serving = self.desk.serving_name(&c.info);
        // Who this is, as far as anyone can tell: the name the visitor gave
        // and, apart from it, the id the site vouches for.
        let mut who = column![text(name).size(18)].spacing(1).width(Fill);
        if has_stated_name(c.info.visitor_name.as_deref()) {
            who = who.push(stated("name"));
        }
        if let Some(id) = self
            .desk
            .visitors
            .get(&c.info.visitor)
            .and_then(site_id_line)
        {
            who = who.push(id);
        }
        let mut header = row![who].spacing(10).align_y(Alignment::Center);
        let state_label = match c.info.state {
            ConversationState::Queued => "waiting".to_owned(),
            ConversationState::Active if mine => "open".to_owned(),
            ConversationState::Active => format!(
                "{} is serving · read-only",
                serving.clone().unwrap_or_else(|| "another agent".into())
            ),
            ConversationState::Closed => "closed".to_owned(),
            ConversationState::LeftMessage => "left a message".to_owned(),
        };
        header = header.push(small(state_label).style(muted));
        let can_transfer = (mine || oversees) && c.info.state != ConversationState::Closed;
        if can_transfer && self.transfer.is_none() {
            header = header.push(
                container(
                    button(text("Transfer…").size(13))
                        .padding([4, 10])
                        .style(button::secondary)
                        .on_press(Message::TransferOpen(c.info.id)),
                )
                .id("transfer"),
            );
        }
        if active && (mine || oversees) {
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
        let mut top = column![container(header).id("chat-header").padding([8, 14])];
        let left = left_message_lines(c);
        if !left.is_empty() {
            let mut block = column![].spacing(2);
            for line in left {
                block = block.push(small(line));
            }
            top = top.push(
                container(block)
                    .id("left-message")
                    .padding([4, 14])
                    .width(Fill),
            );
        }
        if let Some(t) = self
            .transfer
            .as_ref()
            .filter(|t| t.conversation == c.info.id)
        {
            top = top.push(self.transfer_panel(t));
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
            Some(draft) if active && mine => {
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
            _ if active => container(
                small(format!(
                    "Read-only: {} is serving this chat.",
                    serving.unwrap_or_else(|| "another agent".into())
                ))
                .style(muted),
            )
            .id("read-only")
            .into(),
            _ => small("This conversation is not open; replies are off.")
                .style(muted)
                .into(),
        };
        column![
            top,
            rule::horizontal(1),
            transcript,
            container(composer).padding(10),
        ]
        .width(Fill)
        .height(Fill)
        .into()
    }

    fn transfer_panel<'a>(&'a self, t: &'a TransferForm) -> Element<'a, Message> {
        let targets = self.desk.transfer_targets(t.from);
        let mut col = column![small("Transfer to:")].spacing(6);
        if targets.is_empty() {
            col = col.push(
                small("No one else is online with room for another chat.").style(text::danger),
            );
        }
        let mut choices = row![].spacing(6);
        for m in targets {
            let chosen = t.to == Some(m.agent);
            choices = choices.push(
                container(
                    button(text(format!("{} ({}/{})", m.name, m.active, m.capacity)).size(13))
                        .padding([4, 10])
                        .style(if chosen {
                            button::primary
                        } else {
                            button::secondary
                        })
                        .on_press(Message::TransferTo(m.agent)),
                )
                .id(format!("transfer-to-{}", m.agent)),
            );
        }
        col = col.push(choices.wrap());
        col = col.push(
            text_input("Note for the next agent (only agents see it)", &t.note)
                .id("transfer-note")
                .on_input(Message::TransferNote)
                .size(13)
                .padding(6),
        );
        col = col.push(
            row![
                container(
                    button(text("Transfer").size(13))
                        .padding([4, 12])
                        .style(button::primary)
                        .on_press_maybe(t.to.map(|_| Message::TransferSend)),
                )
                .id("transfer-send"),
                button(text("Cancel").size(13))
                    .padding([4, 12])
                    .style(button::text)
                    .on_press(Message::TransferCancel),
            ]
            .spacing(8),
        );
        container(col)
            .id("transfer-panel")
            .padding([6, 14])
            .width(Fill)
            .style(card)
            .into()
    }

    fn bubble<'a>(&'a self, m: &'a StoredMessage) -> Element<'a, Message> {
        let time = format::clock(m.at_ms, self.opts.utc_offset_secs);
        match &m.author {
            Author::System => match Notice::parse(&m.body) {
                Some(Notice::Note { author, text: note }) => container(
                    column![
                        small(format!("Note from {author} · agents only · {time}")),
                        body_text(note),
                    ]
                    .spacing(2),
                )
                .padding([6, 10])
                .width(Fill)
                .style(|theme: &Theme| {
                    let p = theme.extended_palette();
                    container::Style {
                        background: Some(p.warning.weak.color.into()),
                        text_color: Some(p.warning.weak.text),
                        border: border::rounded(6),
                        ..container::Style::default()
                    }
                })
                .into(),
                _ => container(small(format!("{} · {time}", message_text(m))).style(muted))
                    .center_x(Fill)
                    .into(),
            },
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
                if stated_name.is_some() {
                    col = col.push(stated("name"));
                }
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
                        let line = match &m.author {
                            Author::Visitor { .. } => format!("Visitor: {}", m.body),
                            Author::Agent { name, .. } => format!("{name}: {}", m.body),
                            Author::System => {
                                format!("— {}", holdfast_protocol::notice::system_text(&m.body))
                            }
                        };
                        block = block.push(small(line));
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

/// One member of the team panel: presence, name, role and load.
fn team_row(m: &TeamMember, me: bool) -> Element<'_, Message> {
    let (dot, label) = match m.presence {
        Presence::Online => ("●", "online"),
        Presence::Away => ("◐", "away"),
        Presence::Offline => ("○", "offline"),
    };
    let role = match m.role {
        Role::Agent => String::new(),
        r => format!(" · {r}"),
    };
    let you = if me { " (you)" } else { "" };
    let online = m.presence == Presence::Online;
    row![
        text(dot).size(12).style(move |theme: &Theme| text::Style {
            color: Some(if online {
                theme.extended_palette().success.base.color
            } else {
                theme.extended_palette().background.strong.color
            }),
        }),
        small(format!("{}{you}{role}", m.name)).width(Fill),
        small(format!("{label} · {}/{}", m.active, m.capacity)).style(muted),
    ]
    .spacing(6)
    .align_y(Alignment::Center)
    .into()
}

/// What a left message tells the agent: how to reach the visitor, and the
/// page it was left on.
fn left_message_lines(c: &Conv) -> Vec<String> {
    let mut out = Vec::new();
    let (email, url) = match c.left_message() {
        Some(Notice::LeftMessage { email, url, title }) => (
            email.or_else(|| c.info.contact_email.clone()),
            url.map(|u| match title {
                Some(t) => format!("{t} — {u}"),
                None => u,
            }),
        ),
        _ => (c.info.contact_email.clone(), None),
    };
    if c.info.state != ConversationState::LeftMessage && email.is_none() && url.is_none() {
        return out;
    }
    match email {
        Some(e) => out.push(format!("✉ {e}")),
        None if c.info.state == ConversationState::LeftMessage => {
            out.push("No email left: your reply waits for the visitor's return.".to_owned());
        }
        None => {}
    }
    if let Some(u) = url {
        out.push(format!("Left on {u}"));
    }
    out
}

/// The start of the newest thing a person said in `c`, for a list row. Cut
/// after the invisible characters are dropped, so a message padded with
/// zero-width spaces cannot preview as nothing.
fn said_preview(c: &Conv, max: usize) -> String {
    c.last_said()
        .map(|m| format::preview(&format::display_safe(&message_text(m)), max))
        .unwrap_or_default()
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
