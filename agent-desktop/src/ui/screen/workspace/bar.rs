//! The two bars above the workspace: the top bar (who, presence, Sign
//! out) and the connection bar (state, Reconnect now, the password to
//! connect with, and the banner of the last error).
//!
//! They stay up while the server key prompt covers the workspace, so the
//! app draws them apart from the workspace's content. Their own state is
//! the connection bar's password field.

use holdfast_client::ConnState;
use holdfast_protocol::agent::{Presence, Role};
use iced::widget::{button, column, container, row, space, text_input};
use iced::{Alignment, Element, Fill, Theme};
use zeroize::Zeroizing;

use super::Context;
use crate::ui::desk::Desk;
use crate::ui::i18n::{Lang, tr};
use crate::ui::theme::Choice;
use crate::ui::theme::{self, Tone};
use crate::ui::widget::{body_text, language_switch, muted, small, text};

#[derive(Debug, Default)]
pub struct State {
    /// Password for re-signing in from the connection bar.
    pub password: Zeroizing<String>,
}

#[derive(Debug, Clone)]
pub enum Message {
    SetPresence(Presence),
    SignOut,
    ReconnectNow,
    PasswordChanged(String),
    /// Sign in with the password typed here.
    Connect,
    DismissBanner,
    SetTheme(Choice),
    SetLang(Lang),
    /// Open the canned replies panel.
    Canned,
    /// Open the invitation rules panel (admins).
    Rules,
}

/// All but typing go up: presence, signing out and reconnecting need the
/// client; connecting is the app's; the banner is the desk's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SetPresence(Presence),
    SignOut,
    ReconnectNow,
    Connect,
    DismissBanner,
    SetTheme(Choice),
    SetLang(Lang),
    Canned,
    Rules,
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        Some(match message {
            Message::PasswordChanged(s) => {
                self.password = Zeroizing::new(s);
                return None;
            }
            Message::SetPresence(p) => Event::SetPresence(p),
            Message::SignOut => Event::SignOut,
            Message::ReconnectNow => Event::ReconnectNow,
            Message::Connect => Event::Connect,
            Message::DismissBanner => Event::DismissBanner,
            Message::SetTheme(c) => Event::SetTheme(c),
            Message::SetLang(l) => Event::SetLang(l),
            Message::Canned => Event::Canned,
            Message::Rules => Event::Rules,
        })
    }

    /// Who is signed in, presence, and Sign out.
    pub fn top_bar<'a>(
        &'a self,
        desk: &'a Desk,
        ctx: &Context<'a>,
        signing_out: bool,
    ) -> Element<'a, Message> {
        let me = desk
            .me
            .as_ref()
            .map_or_else(|| ctx.username.to_owned(), |s| s.display_name.clone());
        let t = tr();
        let presence_button = |label: &'static str, p: Presence| {
            let active = desk.presence == Some(p);
            button(text(label).size(13))
                .padding([4, 10])
                .style(if active {
                    button::primary
                } else {
                    crate::ui::theme::button_secondary
                })
                .on_press(Message::SetPresence(p))
        };
        // Light, Dark, or as the OS says: a small segmented switch.
        let mut switch = row![small(t.theme).style(muted)]
            .spacing(2)
            .align_y(Alignment::Center);
        for c in Choice::ALL {
            let on = ctx.theme == c;
            switch = switch.push(
                container(
                    button(small(t.theme_choice(c)))
                        .padding([2, 8])
                        .style(if on { button::primary } else { button::text })
                        .on_press(Message::SetTheme(c)),
                )
                .id(format!("theme-{}", c.code())),
            );
        }
        let mut bar = row![
            text("Holdfast").size(18),
            text(me),
            space::horizontal(),
            switch,
            space::horizontal().width(8),
            language_switch(ctx.lang, Message::SetLang),
            space::horizontal().width(8),
            container(
                button(text(t.canned_replies).size(13))
                    .padding([4, 10])
                    .style(crate::ui::theme::button_secondary)
                    .on_press(Message::Canned),
            )
            .id("canned-open"),
        ]
        .spacing(10)
        .padding([6, 12]);
        // Only an admin manages the site's invitation rules: nobody else
        // sees the way in (the server would refuse them anyway).
        if desk.my_role() == Role::Admin {
            bar = bar.push(
                container(
                    button(text(t.rules_open).size(13))
                        .padding([4, 10])
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::Rules),
                )
                .id("rules-open"),
            );
        }
        bar.push(presence_button(t.online, Presence::Online))
            .push(presence_button(t.away, Presence::Away))
            .push(
                container(
                    button(
                        text(if signing_out {
                            t.signing_out
                        } else {
                            t.sign_out
                        })
                        .size(13),
                    )
                    .padding([4, 10])
                    .style(button::text)
                    .on_press_maybe((!signing_out).then_some(Message::SignOut)),
                )
                .id("sign-out"),
            )
            .align_y(Alignment::Center)
            .into()
    }

    /// The connection's state, Reconnect now, the password to connect with when
    /// the session needs one, and the banner under it.
    pub fn connection_bar<'a>(&'a self, desk: &'a Desk, ctx: &Context<'a>) -> Element<'a, Message> {
        let t = tr();
        let state = &ctx.status.state;
        let live = matches!(state, ConnState::Live);
        let offline = matches!(state, ConnState::Disconnected | ConnState::Stopped { .. });
        let mut bar = row![text(ctx.connection_text.clone())]
            .spacing(12)
            .align_y(Alignment::Center);
        if matches!(state, ConnState::BackingOff { .. }) {
            bar = bar.push(
                button(text(t.reconnect_now).size(13))
                    .padding([3, 10])
                    .style(crate::ui::theme::button_secondary)
                    .on_press(Message::ReconnectNow),
            );
        }
        // Away is easy to forget after a break, and while it lasts no new
        // chat is routed here: say so where the agent looks for the
        // connection, with the way back beside it.
        if desk.presence == Some(Presence::Away) {
            bar = bar.push(
                container(
                    row![
                        small(t.away_notice).style(muted),
                        button(small(t.go_online))
                            .padding([2, 8])
                            .style(crate::ui::theme::button_secondary)
                            .on_press(Message::SetPresence(Presence::Online)),
                    ]
                    .spacing(8)
                    .align_y(Alignment::Center),
                )
                .id("away-notice")
                .padding([2, 8])
                .style(crate::ui::theme::card),
            );
        }
        if ctx.needs_password {
            bar = bar.push(space::horizontal());
            bar = bar.push(
                text_input(t.password_to_connect, &self.password)
                    .id("bar-password")
                    .secure(true)
                    .on_input(Message::PasswordChanged)
                    .on_submit(Message::Connect)
                    .width(220)
                    .padding(4),
            );
            bar = bar.push(
                button(text(t.connect).size(13))
                    .padding([3, 10])
                    .style(button::primary)
                    .on_press(Message::Connect),
            );
        }
        let mut col = column![
            container(bar)
                .id("connection-bar")
                .padding([6, 12])
                .width(Fill)
                .style(move |theme: &Theme| {
                    let tone = if live {
                        Tone::Good
                    } else if offline {
                        Tone::Bad
                    } else {
                        Tone::Pending
                    };
                    theme::bar(theme, tone)
                })
        ];
        if let Some(b) = &desk.banner {
            col = col.push(
                container(
                    row![
                        body_text(b.text()).width(Fill),
                        button(text(t.dismiss).size(12))
                            .style(button::text)
                            .on_press(Message::DismissBanner),
                    ]
                    .align_y(Alignment::Center),
                )
                .id("banner")
                .padding([4, 12])
                .width(Fill)
                .style(crate::ui::theme::danger_box),
            );
        }
        col.into()
    }
}
