//! System lines in a transcript: who joined, who handed the chat to whom,
//! who closed it, why it went back to the queue, and agent-only notes.
//!
//! A system line is a chat message like any other (it has a server message
//! id, so it sits in commit order, and it is replayed, snapshotted and paged
//! with the rest), authored by [`crate::agent::Author::System`]. Its body is
//! a [`Notice`] as JSON, so each side renders it in its own language instead
//! of reading text the server wrote in one. A body that is not a notice is
//! shown as plain text.
//!
//! Some notices are for agents only ([`Notice::agents_only`]): the server
//! never puts them in a visitor's log, snapshot or poll.

use serde::{Deserialize, Serialize};

/// Why an agent's open chats went back to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The agent signed out.
    SignedOut,
    /// An administrator disabled the account.
    Disabled,
    /// The agent stayed offline past the grace period.
    Offline,
}

/// The structured content of a system line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// An agent took the chat (accept, invite, or auto-assignment).
    Joined { agent: String },
    /// The chat moved from one agent to another; `by` did it (the owner, or
    /// a supervisor).
    Transferred {
        from: Option<String>,
        to: String,
        by: String,
    },
    /// An agent closed the chat.
    ClosedByAgent { agent: String },
    /// The visitor ended the chat.
    ClosedByVisitor,
    /// The chat went back to the queue because its agent left.
    Requeued { agent: String, reason: LeaveReason },
    /// Agents only: where and how to reach a visitor who left a message.
    LeftMessage {
        email: Option<String>,
        url: Option<String>,
        title: Option<String>,
    },
    /// Agents only: a note (for example, the one that came with a transfer).
    Note { author: String, text: String },
    /// Agents only: `by` set the chat's tags to `tags` (empty: cleared).
    Tagged { by: String, tags: Vec<String> },
    /// The chat began as a reply to the site's automatic invitation `text`
    /// from the rule named `rule` (10.20). The visitor sees the text.
    Invited { rule: String, text: String },
}

impl Notice {
    /// Whether only agents may see this line.
    pub fn agents_only(&self) -> bool {
        matches!(
            self,
            Notice::LeftMessage { .. } | Notice::Note { .. } | Notice::Tagged { .. }
        )
    }

    /// The message body that carries this notice.
    pub fn to_body(&self) -> String {
        // A tagged enum of strings and options always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The notice in a system line's body, if it is one.
    pub fn parse(body: &str) -> Option<Notice> {
        if !body.starts_with('{') {
            return None;
        }
        serde_json::from_str(body).ok()
    }

    /// The line in English.
    pub fn english(&self) -> String {
        match self {
            Notice::Joined { agent } => format!("{agent} joined the chat"),
            Notice::Transferred { from, to, by } => match from {
                Some(f) if f == by => format!("{f} transferred the chat to {to}"),
                Some(f) => format!("{by} transferred the chat from {f} to {to}"),
                None => format!("{by} assigned the chat to {to}"),
            },
            Notice::ClosedByAgent { agent } => format!("{agent} closed the chat"),
            Notice::ClosedByVisitor => "The visitor ended the chat".to_owned(),
            Notice::Requeued { agent, reason } => {
                let why = match reason {
                    LeaveReason::SignedOut => "signed out",
                    LeaveReason::Disabled => "was signed out by an administrator",
                    LeaveReason::Offline => "went offline",
                };
                format!("{agent} {why}; the chat went back to the queue")
            }
            Notice::LeftMessage { email, url, .. } => {
                let mut s = "Left a message".to_owned();
                if let Some(u) = url {
                    s.push_str(" on ");
                    s.push_str(u);
                }
                match email {
                    Some(e) => {
                        s.push_str(" · reply to ");
                        s.push_str(e);
                    }
                    None => s.push_str(" · no email given"),
                }
                s
            }
            Notice::Note { author, text } => format!("Note from {author}: {text}"),
            Notice::Tagged { by, tags } if tags.is_empty() => {
                format!("{by} removed the chat's tags")
            }
            Notice::Tagged { by, tags } => format!("{by} tagged the chat: {}", tags.join(", ")),
            Notice::Invited { rule, text } => format!("Invited by the rule {rule:?}: {text}"),
        }
    }
}

impl Notice {
    /// The line in English as the visitor reads it (the `body` of a visitor
    /// system message, a fallback for widgets that do not know the kind).
    pub fn english_for_visitor(&self) -> String {
        match self {
            Notice::Joined { agent } => format!("{agent} joined the chat"),
            Notice::Transferred { to, .. } => format!("You are now chatting with {to}"),
            Notice::ClosedByAgent { agent } => format!("{agent} ended the chat"),
            Notice::ClosedByVisitor => "You ended the chat".to_owned(),
            Notice::Requeued { agent, .. } => {
                format!("{agent} had to leave; the next available agent will reply")
            }
            // The words the visitor replied to, as they read them.
            Notice::Invited { text, .. } => text.clone(),
            // Never sent to visitors.
            Notice::LeftMessage { .. } | Notice::Note { .. } | Notice::Tagged { .. } => {
                String::new()
            }
        }
    }
}

/// How a system line reads: its notice in English, or its body as it is.
pub fn system_text(body: &str) -> String {
    Notice::parse(body).map_or_else(|| body.to_owned(), |n| n.english())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_plain_text_stays_text() {
        let n = Notice::Transferred {
            from: Some("Alice".into()),
            to: "Bob".into(),
            by: "Alice".into(),
        };
        let body = n.to_body();
        assert_eq!(
            body,
            r#"{"kind":"transferred","from":"Alice","to":"Bob","by":"Alice"}"#
        );
        assert_eq!(Notice::parse(&body), Some(n.clone()));
        assert_eq!(system_text(&body), "Alice transferred the chat to Bob");
        assert_eq!(system_text("plain words"), "plain words");
        assert_eq!(Notice::parse("{not json"), None);
        assert!(!n.agents_only());
        assert!(
            Notice::Note {
                author: "A".into(),
                text: "t".into()
            }
            .agents_only()
        );
    }
}
