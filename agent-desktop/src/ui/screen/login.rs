//! The sign-in screen: server, username and password, and what became of
//! the last attempt (an error, or how the last sign-out went).
//!
//! The form outlives the screen: the workspace's top bar shows the username
//! until the server names the agent, and a re-sign-in from the connection
//! bar reuses the server and username. So the app keeps this state while
//! the workspace is up rather than dropping it with the screen.

use iced::widget::{button, column, container, row, text_input};
use iced::{Alignment, Element, Fill};
use zeroize::Zeroizing;

use crate::ui::i18n::{Lang, Words, tr};
use crate::ui::widget::{body_text, card, language_switch, muted, small, text};

#[derive(Debug, Default)]
pub struct State {
    pub server: String,
    pub username: String,
    pub password: Zeroizing<String>,
    /// Worded when drawn, so a language switch rewords it.
    pub error: Option<Words>,
    /// Something to know that is not an error (how the last sign-out went).
    pub notice: Option<Words>,
    /// A sign-in is in progress.
    pub busy: bool,
}

#[derive(Debug, Clone)]
pub enum Message {
    ServerChanged(String),
    UsernameChanged(String),
    PasswordChanged(String),
    SignIn,
    Cancel,
    SetLang(Lang),
}

/// What the app has to do: starting and stopping a session is its business,
/// since the session outlives this screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    SignIn,
    Cancel,
    /// The language picked here, for the app to apply and remember.
    SetLang(Lang),
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        match message {
            Message::ServerChanged(s) => self.server = s,
            Message::UsernameChanged(s) => self.username = s,
            Message::PasswordChanged(s) => self.password = Zeroizing::new(s),
            Message::SignIn => return Some(Event::SignIn),
            Message::SetLang(lang) => return Some(Event::SetLang(lang)),
            Message::Cancel => {
                self.busy = false;
                return Some(Event::Cancel);
            }
        }
        None
    }

    /// Whether the form has all a sign-in needs; if not, says what is
    /// missing in the error box.
    pub fn check(&mut self) -> bool {
        let missing: fn(&crate::ui::i18n::Texts) -> &'static str = if self.server.trim().is_empty()
        {
            |t| t.enter_server
        } else if self.username.trim().is_empty() {
            |t| t.enter_username
        } else if self.password.is_empty() {
            |t| t.enter_password
        } else {
            return true;
        };
        self.error = Some(Words::new(move |t| missing(t).to_owned()));
        false
    }

    /// `connection` is the connection bar's words, shown beside Cancel
    /// while a sign-in is under way; `lang` the language on screen, lit in
    /// the switch.
    pub fn view(&self, connection: String, lang: Lang) -> Element<'_, Message> {
        let t = tr();
        let mut sign_in = button(text(t.sign_in))
            .style(button::primary)
            .padding([8, 20]);
        if !self.busy {
            sign_in = sign_in.on_press(Message::SignIn);
        }
        let mut form = column![
            row![
                text("Holdfast").size(32).width(Fill),
                language_switch(lang, Message::SetLang),
            ]
            .align_y(Alignment::Center),
            text(t.login_tagline).style(muted),
            text(t.server_address),
            text_input("chat.example.com:7070", &self.server)
                .id("login-server")
                .on_input(Message::ServerChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            text(t.username),
            text_input(t.username_placeholder, &self.username)
                .id("login-user")
                .on_input(Message::UsernameChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            text(t.password),
            text_input(t.password_placeholder, &self.password)
                .id("login-password")
                .secure(true)
                .on_input(Message::PasswordChanged)
                .on_submit(Message::SignIn)
                .padding(8),
            row![sign_in].spacing(10).align_y(Alignment::Center),
        ]
        .spacing(8)
        .max_width(420);
        if self.busy {
            form = form.push(
                row![
                    text(connection),
                    button(text(t.cancel))
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::Cancel),
                ]
                .spacing(10)
                .align_y(Alignment::Center),
            );
        }
        if let Some(e) = &self.error {
            form = form.push(
                container(body_text(e.text()))
                    .id("login-error")
                    .padding(10)
                    .width(Fill)
                    .style(crate::ui::theme::danger_box),
            );
        } else if let Some(n) = &self.notice {
            form = form.push(
                container(body_text(n.text()))
                    .id("login-notice")
                    .padding(10)
                    .width(Fill)
                    .style(crate::ui::theme::framed),
            );
        }
        form = form.push(small(t.password_in_memory).style(muted));
        // The card is as wide as the form: an error or notice box fills
        // its width, which would otherwise stretch the card across the
        // window.
        container(container(form).padding(24).style(card).max_width(468))
            .center(Fill)
            .into()
    }
}

#[cfg(test)]
mod tests {
    //! The form alone, clicked and typed into through iced's simulator, the
    //! way iced's `todos` example tests its task component.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use iced::keyboard::key::Named;
    use iced::widget::Id;
    use iced::{Settings, Size};
    use iced_test::{Error, Simulator};

    use super::*;

    fn simulator(view: Element<'_, Message>) -> Simulator<'_, Message> {
        Simulator::with_size(Settings::default(), Size::new(1280.0, 800.0), view)
    }

    /// Feed what the simulator produced through `update`, collecting events.
    fn apply(state: &mut State, messages: Vec<Message>) -> Vec<Event> {
        messages
            .into_iter()
            .filter_map(|m| state.update(m))
            .collect()
    }

    #[test]
    fn typing_the_password_and_pressing_enter_asks_to_sign_in() -> Result<(), Error> {
        let mut state = State {
            server: "chat.example.com:7070".into(),
            username: "alice".into(),
            ..State::default()
        };
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view(String::new(), Lang::En));
            let _input = ui.click(Id::new("login-password"))?;
            let _typed = ui.typewrite("s3cret");
            let _entered = ui.tap_key(Named::Enter);
            ui.into_messages().collect()
        };
        let events = apply(&mut state, messages);
        assert_eq!(state.password.as_str(), "s3cret");
        assert_eq!(events, [Event::SignIn]);
        assert!(state.check(), "{:?}", state.error);
        Ok(())
    }

    #[test]
    fn a_sign_in_under_way_can_only_be_cancelled() -> Result<(), Error> {
        let mut state = State {
            busy: true,
            ..State::default()
        };
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view("Connecting…".into(), Lang::En));
            let _shown = ui.find("Connecting…")?;
            // The disabled button produces nothing.
            let _sign_in = ui.click("Sign in")?;
            let _cancel = ui.click("Cancel")?;
            ui.into_messages().collect()
        };
        let events = apply(&mut state, messages);
        assert_eq!(events, [Event::Cancel]);
        assert!(!state.busy);
        Ok(())
    }

    #[test]
    fn an_incomplete_form_says_what_is_missing_where_tests_look() -> Result<(), Error> {
        let mut state = State {
            server: "chat.example.com:7070".into(),
            notice: Some("Signed out.".into()),
            ..State::default()
        };
        {
            let mut ui = simulator(state.view(String::new(), Lang::En));
            let _notice = ui.find(Id::new("login-notice"))?;
        }
        assert!(!state.check());
        let mut ui = simulator(state.view(String::new(), Lang::En));
        let _error = ui.find(Id::new("login-error"))?;
        let _words = ui.find("Enter your username.")?;
        // The error takes the notice's place.
        assert!(ui.find(Id::new("login-notice")).is_err());
        Ok(())
    }
}
