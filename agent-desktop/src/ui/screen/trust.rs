//! The server key prompt: a first contact to confirm, or a changed key to
//! stop at. It covers whichever screen is up (the core can ask on any
//! reconnect), so the app holds it beside the screen rather than as one.

use holdfast_protocol::handshake::Fingerprint;
use iced::widget::{button, column, container, row};
use iced::{Element, Fill, Theme, border};

use crate::ui::i18n::tr;
use crate::ui::widget::{body_text, card, heading, text};

/// A server key decision the user has to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Unknown {
        server: String,
        fingerprint: Fingerprint,
    },
    Mismatch {
        server: String,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
}

#[derive(Debug, Clone)]
pub enum Message {
    /// Trust the key (`true`), or do not.
    Decide(bool),
}

/// The decision, for the app to pass on to the core: which of the two
/// prompts it answered matters, since refusing a changed key ends the
/// session while refusing a new one only leaves it unconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Trusted,
    Refused { mismatch: bool },
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        let Message::Decide(yes) = message;
        Some(if yes {
            Event::Trusted
        } else {
            Event::Refused {
                mismatch: matches!(self, Self::Mismatch { .. }),
            }
        })
    }

    pub fn view(&self) -> Element<'_, Message> {
        let t = tr();
        let inner: Element<'_, Message> = match self {
            Self::Unknown {
                server,
                fingerprint,
            } => column![
                heading(t.trust_first_title),
                body_text((t.trust_first_body)(server)),
                container(
                    text(fingerprint.to_string())
                        .font(iced::Font::MONOSPACE)
                        .size(13)
                )
                .id("fingerprint")
                .padding(10)
                .style(crate::ui::theme::framed),
                row![
                    button(text(t.trust_this_server))
                        .style(button::primary)
                        .on_press(Message::Decide(true)),
                    button(text(t.cancel))
                        .style(crate::ui::theme::button_secondary)
                        .on_press(Message::Decide(false)),
                ]
                .spacing(10),
            ]
            .spacing(12)
            .max_width(640)
            .into(),
            Self::Mismatch {
                server,
                pinned,
                presented,
            } => container(
                column![
                    text(t.mismatch_title).size(22),
                    body_text((t.mismatch_body)(server)),
                    text(t.pinned_fingerprint),
                    container(
                        text(pinned.to_string())
                            .font(iced::Font::MONOSPACE)
                            .size(13)
                    )
                    .id("fingerprint-pinned")
                    .padding(8)
                    .style(crate::ui::theme::framed),
                    text(t.presented_fingerprint),
                    container(
                        text(presented.to_string())
                            .font(iced::Font::MONOSPACE)
                            .size(13)
                    )
                    .id("fingerprint-presented")
                    .padding(8)
                    .style(crate::ui::theme::framed),
                    row![
                        button(text(t.disconnect))
                            .style(crate::ui::theme::button_secondary)
                            .on_press(Message::Decide(false)),
                        button(text(t.trust_new_key))
                            .style(button::danger)
                            .on_press(Message::Decide(true)),
                    ]
                    .spacing(10),
                ]
                .spacing(10)
                .max_width(680),
            )
            .id("fingerprint-mismatch")
            .padding(20)
            .style(|theme: &Theme| container::Style {
                border: border::rounded(8),
                ..crate::ui::theme::danger_box(theme)
            })
            .into(),
        };
        container(container(inner).padding(24).style(card))
            .center(Fill)
            .into()
    }
}

#[cfg(test)]
mod tests {
    //! The prompt alone, clicked through iced's simulator.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use iced::widget::Id;
    use iced::{Settings, Size};
    use iced_test::{Error, Simulator};

    use super::*;

    fn simulator(view: Element<'_, Message>) -> Simulator<'_, Message> {
        Simulator::with_size(Settings::default(), Size::new(1280.0, 800.0), view)
    }

    /// Click the button with this label and return the prompt's answer.
    fn answer(state: &mut State, label: &'static str) -> Result<Vec<Event>, Error> {
        let messages: Vec<Message> = {
            let mut ui = simulator(state.view());
            let _clicked = ui.click(label)?;
            ui.into_messages().collect()
        };
        Ok(messages
            .into_iter()
            .filter_map(|m| state.update(m))
            .collect())
    }

    #[test]
    fn a_new_server_shows_its_fingerprint_and_can_be_trusted() -> Result<(), Error> {
        let fingerprint = Fingerprint([7; 32]);
        let mut state = State::Unknown {
            server: "chat.example.com:7070".into(),
            fingerprint,
        };
        {
            let mut ui = simulator(state.view());
            let _box = ui.find(Id::new("fingerprint"))?;
            let _shown = ui.find(fingerprint.to_string())?;
            assert!(ui.find(Id::new("fingerprint-mismatch")).is_err());
        }
        assert_eq!(answer(&mut state, "Trust this server")?, [Event::Trusted]);
        assert_eq!(
            answer(&mut state, "Cancel")?,
            [Event::Refused { mismatch: false }]
        );
        Ok(())
    }

    #[test]
    fn a_changed_key_shows_both_and_disconnect_says_it_was_a_mismatch() -> Result<(), Error> {
        let (pinned, presented) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        let mut state = State::Mismatch {
            server: "chat.example.com:7070".into(),
            pinned,
            presented,
        };
        {
            let mut ui = simulator(state.view());
            let _warning = ui.find(Id::new("fingerprint-mismatch"))?;
            let _pinned = ui.find(pinned.to_string())?;
            let _presented = ui.find(presented.to_string())?;
        }
        assert_eq!(
            answer(&mut state, "Disconnect")?,
            [Event::Refused { mismatch: true }]
        );
        assert_eq!(
            answer(
                &mut state,
                "The administrator confirmed the new key: trust it"
            )?,
            [Event::Trusted]
        );
        Ok(())
    }
}
