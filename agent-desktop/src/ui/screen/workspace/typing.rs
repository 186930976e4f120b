//! "Visitor is typing…" and the visitor's live draft (sneak peek) under the
//! open chat's transcript (PROTOCOL.md 10.18).
//!
//! Signals, not data: held in memory only, per conversation, and forgotten
//! at the visitor's stop, its next message, or after
//! [`holdfast_client::TYPING_TIMEOUT`] without a refresh (a lost stop must
//! not leave "typing…" on for good). The draft is shown muted, italic and
//! labelled as not sent, so it never reads as something the visitor said.

use std::collections::HashMap;
use std::time::Instant;

use holdfast_protocol::agent::ConversationId;
use iced::widget::{column, container};
use iced::{Element, Font, font};

use crate::ui::i18n::tr;
use crate::ui::widget::{muted, small};

/// What the visitor of one chat is doing now.
#[derive(Debug, Clone)]
struct Peek {
    draft: Option<String>,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct State {
    typing: HashMap<ConversationId, Peek>,
}

impl State {
    /// A typing signal from the server.
    pub fn on_signal(&mut self, conversation: ConversationId, typing: bool, draft: Option<String>) {
        if typing {
            self.typing.insert(
                conversation,
                Peek {
                    draft,
                    at: Instant::now(),
                },
            );
        } else {
            self.typing.remove(&conversation);
        }
    }

    /// The visitor's message arrived: what it typed is now in the
    /// transcript, not a draft.
    pub fn on_visitor_message(&mut self, conversation: ConversationId) {
        self.typing.remove(&conversation);
    }

    /// The indicator for `conversation`, if its visitor is typing now.
    pub fn view<'a, M: 'a>(&'a self, conversation: ConversationId) -> Option<Element<'a, M>> {
        let p = self
            .typing
            .get(&conversation)
            .filter(|p| p.at.elapsed() < holdfast_client::TYPING_TIMEOUT)?;
        let mut col = column![small(tr().visitor_typing).style(muted)].spacing(2);
        if let Some(d) = p.draft.as_deref().filter(|d| !d.trim().is_empty()) {
            col = col.push(small((tr().not_sent_yet)(d)).style(muted).font(Font {
                style: font::Style::Italic,
                ..Font::DEFAULT
            }));
        }
        Some(container(col).id("typing").padding([2, 10]).into())
    }
}
