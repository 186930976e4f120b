//! Visitor-channel JSON messages.
//!
//! Over WebSocket (`GET /v1/visitor/ws`) each text frame is one
//! [`VisitorIn`] or [`VisitorOut`] object, tagged by its `"t"` field. Over
//! long-poll the same objects travel in arrays: `POST /v1/visitor/lp` takes a
//! [`LongPollRequest`] and answers a [`LongPollResponse`];
//! `GET /v1/visitor/poll?token=…&after=SEQ` answers a [`LongPollResponse`]
//! after at most ~25 s.
//!
//! Parsing goes through [`parse_in`], which applies size limits before and
//! field limits after deserializing, so no handler sees an unbounded string.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::{ConversationId, MessageId, Seq};
use crate::error::ErrorCode;
use crate::ids::MsgId;
use crate::notice::Notice;

/// A page the visitor is looking at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageInfo {
    pub url: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub referrer: Option<String>,
}

/// The identity a page vouches for, with the site's HMAC of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityProof {
    pub id: String,
    #[serde(default)]
    pub hash: Option<String>,
}

/// Browser to server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum VisitorIn {
    /// First message on every WebSocket and the start of a long-poll session.
    Hello {
        /// The site key from the script tag.
        site: String,
        /// The token from an earlier `welcome`; absent for a new visitor.
        #[serde(default)]
        token: Option<String>,
        /// Last event seq this browser applied; absent on first visit.
        #[serde(default)]
        after: Option<Seq>,
        #[serde(default)]
        page: Option<PageInfo>,
        #[serde(default)]
        user_agent: Option<String>,
        #[serde(default)]
        lang: Option<String>,
        /// Protocol version; absent means 1.
        #[serde(default)]
        v: Option<u16>,
        /// The verified identity the page has for this visitor, if any
        /// (what `Holdfast.identify` got). A token that belongs to a
        /// verified identity resumes only with the same one.
        #[serde(default)]
        identity: Option<IdentityProof>,
        /// The site group (department) the widget targets, by key: the
        /// page's `data-group`, or the visitor's choice (10.23). A chat the
        /// visitor opens is for it. A key the site does not have counts as
        /// none: the visitor is never refused for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// A chat message; idempotent by `id`.
    Send {
        id: MsgId,
        body: String,
        /// A complete upload of this visitor into its open chat (10.13)
        /// that the message carries; with one, the body may be empty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<String>,
    },
    /// A message left while no agent is online; idempotent by `id`.
    LeaveMessage {
        id: MsgId,
        body: String,
        #[serde(default)]
        email: Option<String>,
    },
    /// A page view or a single-page-app navigation.
    Page(PageInfo),
    /// `Holdfast.identify(...)` from the host site.
    Identify {
        id: String,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        email: Option<String>,
        /// hex(HMAC-SHA256(site secret, id)); required when the site has a
        /// secret.
        #[serde(default)]
        hash: Option<String>,
        /// Custom attributes: strings, numbers or booleans.
        #[serde(default)]
        attrs: BTreeMap<String, serde_json::Value>,
    },
    /// Cumulative ack of events.
    Ack { seq: Seq },
    /// Application heartbeat (browsers cannot send WebSocket pings).
    Ping,
    /// The visitor ends the open chat; idempotent by `id`. Answered with an
    /// `ack` whose `message` is the "ended" system line (or, when there was
    /// no open chat, an `error` with code `not_found`).
    EndChat { id: MsgId },
    /// The visitor is typing (`typing: true`, with the draft so far when
    /// the welcome said `sneak_peek`) or stopped. A signal, not an action:
    /// no id, no answer, never stored; the server forwards at most 4 a
    /// second and drops the rest (10.18).
    Typing {
        typing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        draft: Option<String>,
    },
    /// What became of an automatic invitation (`invite`, 10.20): the widget
    /// `shown` it, or the visitor `dismissed` it. Accepting is replying:
    /// the server sees that from the chat itself. Not acked.
    Invitation { id: u64, event: InvitationEvent },
}

/// What the widget reports about an invitation it was sent (10.20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationEvent {
    /// It is on the visitor's screen.
    Shown,
    /// The visitor closed it without replying.
    Dismissed,
}

/// What files a site takes (10.13): checked again by the server, by
/// content, whatever the widget did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRules {
    /// The largest file, in bytes.
    pub max_bytes: u64,
    /// The accepted MIME types, as the server sniffs them.
    pub types: Vec<String>,
}

/// One of the site's groups as the widget offers it (10.23).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupChoice {
    pub key: String,
    pub name: String,
    /// Someone of the group would answer now (an agent of it is online and
    /// it is within its hours); otherwise choosing it leads to the
    /// leave-a-message form.
    pub online: bool,
}

/// Server to browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum VisitorOut {
    Welcome {
        visitor: String,
        /// Server-signed; store it and send it in every later `hello`.
        token: String,
        /// Replay follows from `after` when true; a `snapshot` follows when
        /// false.
        resumed: bool,
        agents_online: bool,
        heartbeat_ms: u32,
        /// The site's attachment rules, so the widget refuses a file that
        /// is too large or of a type the site does not take before sending
        /// a byte (10.13). Absent from servers before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attach: Option<AttachRules>,
        /// Whether the site lets its agents see the visitor's draft as it
        /// is typed (10.18): without `true` the widget sends typing without
        /// the text. Absent from servers before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sneak_peek: Option<bool>,
        /// The group this visitor's chat is for, as the server took it
        /// from the hello (10.23): absent for none or an unknown key.
        /// `agents_online` and `agents` are about this group's agents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        /// The site's groups to choose from before the first message, when
        /// the site offers a choice (10.23); absent otherwise. The widget
        /// shows them only when neither the page nor the visitor chose.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<Vec<GroupChoice>>,
    },
    Event {
        seq: Seq,
        event: VisitorEvent,
    },
    /// Sent instead of a replay when the cursor is older than retention.
    Snapshot {
        seq: Seq,
        recovered: bool,
        conversation: Option<ConversationView>,
        messages: Vec<VisitorMessage>,
    },
    /// The result of a `send` or `leave_message`: durable.
    Ack {
        id: MsgId,
        conversation: ConversationId,
        message: MessageId,
        at_ms: i64,
    },
    Pong,
    /// Whether any agent is online changed (for a visitor of a group,
    /// any agent of it). On a site that offers a choice of groups it also
    /// carries each group's state, as `welcome.groups` does (10.23), so a
    /// choice still on screen stays true; absent otherwise and from
    /// servers before it.
    Agents {
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups: Option<Vec<GroupChoice>>,
    },
    /// The visitor's chat waits in the queue at `position` (1: next), and
    /// about `wait_ms` remain by the site's recent real waits (absent when
    /// there are too few to tell). A signal, not an event: never stored,
    /// sent when it changes and again after every (re)connect (10.14).
    Queue {
        position: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_ms: Option<u64>,
    },
    /// The chat's agent `name` is typing (`typing: true`) or stopped. A
    /// signal (10.18): never stored or replayed, dropped when the
    /// connection has no room; the widget also ends it at the agent's next
    /// message or after 6 s without a refresh.
    Typing {
        typing: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An automatic invitation from one of the site's rules (10.20): show
    /// `text` unless a chat is open, then answer `invitation` with `shown`
    /// (or `dismissed`). At most one a visit; never while the visitor
    /// chats. A signal, not in the log: a reload does not bring it back.
    Invite {
        id: u64,
        text: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// The action this answers, if any.
        #[serde(default)]
        id: Option<MsgId>,
        /// For `rate_limited`: when the refused action (and, in order, those
        /// after it) may be sent again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u32>,
    },
    GoingAway {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitorConvState {
    Queued,
    Active,
    Closed,
    LeftMessage,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationView {
    pub id: ConversationId,
    pub state: VisitorConvState,
    pub agent_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    Visitor,
    Agent,
    System,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorMessage {
    pub conversation: ConversationId,
    pub message: MessageId,
    pub id: MsgId,
    pub from: Sender,
    pub name: Option<String>,
    pub body: String,
    pub at_ms: i64,
    /// For `from: "system"`: what happened, to render in the visitor's
    /// language (`body` has it in English).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// The file the message carries: the HTTP `attachment` object. Fetch
    /// it through `GET /v1/attach/{id}/link`.
    /// Boxed: most messages carry none, and events stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<crate::agent::AttachmentInfo>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VisitorEvent {
    Message(VisitorMessage),
    Conversation(ConversationView),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LongPollRequest {
    #[serde(default)]
    pub token: Option<String>,
    pub msgs: Vec<VisitorIn>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LongPollResponse {
    pub msgs: Vec<VisitorOut>,
}

/// Limits applied by [`parse_in`]. Lengths are in bytes of UTF-8.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_text: usize,
    pub max_body: usize,
    pub max_url: usize,
    pub max_title: usize,
    pub max_short: usize,
    pub max_attrs: usize,
    pub max_attr_value: usize,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text: 64 * 1024,
            max_body: 8 * 1024,
            max_url: 2048,
            max_title: 512,
            max_short: 256,
            max_attrs: 50,
            max_attr_value: 1024,
            max_batch: 64,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VisitorParseError {
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid JSON message: {0}")]
    Json(String),
    #[error("field `{field}` is invalid: {why}")]
    Field { field: &'static str, why: String },
}

impl VisitorParseError {
    pub fn code(&self) -> ErrorCode {
        match self {
            VisitorParseError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        }
    }
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), VisitorParseError> {
    if s.len() > max {
        return Err(VisitorParseError::Field {
            field,
            why: format!("{} bytes, limit {max}", s.len()),
        });
    }
    // NUL and other C0 controls except tab/newline have no business in chat
    // text and confuse log and terminal viewers.
    if s.chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(VisitorParseError::Field {
            field,
            why: "contains control characters".into(),
        });
    }
    Ok(())
}

fn check_opt(field: &'static str, s: &Option<String>, max: usize) -> Result<(), VisitorParseError> {
    match s {
        Some(s) => check_len(field, s, max),
        None => Ok(()),
    }
}

fn check_body(field: &'static str, s: &str, lim: &Limits) -> Result<(), VisitorParseError> {
    check_len(field, s, lim.max_body)?;
    if s.trim().is_empty() {
        return Err(VisitorParseError::Field {
            field,
            why: "empty".into(),
        });
    }
    Ok(())
}

fn check_page(p: &PageInfo, lim: &Limits) -> Result<(), VisitorParseError> {
    check_len("url", &p.url, lim.max_url)?;
    check_len("title", &p.title, lim.max_title)?;
    check_opt("referrer", &p.referrer, lim.max_url)
}

fn check_identity_id(id: &str, lim: &Limits) -> Result<(), VisitorParseError> {
    check_len("id", id, lim.max_short)?;
    if id.is_empty() {
        return Err(VisitorParseError::Field {
            field: "id",
            why: "empty".into(),
        });
    }
    Ok(())
}

/// Validate an already-deserialized message against `lim`.
pub fn validate_in(msg: &VisitorIn, lim: &Limits) -> Result<(), VisitorParseError> {
    match msg {
        VisitorIn::Hello {
            site,
            token,
            page,
            user_agent,
            lang,
            identity,
            group,
            ..
        } => {
            check_len("site", site, lim.max_short)?;
            check_opt("token", token, lim.max_short * 2)?;
            if let Some(p) = page {
                check_page(p, lim)?;
            }
            check_opt("user_agent", user_agent, lim.max_title)?;
            check_opt("group", group, lim.max_short)?;
            if let Some(p) = identity {
                check_identity_id(&p.id, lim)?;
                check_opt("identity.hash", &p.hash, 128)?;
            }
            check_opt("lang", lang, MAX_LANG_TAG)
        }
        VisitorIn::Send {
            body,
            attachment: Some(a),
            ..
        } => {
            // A file alone needs no words, but the body keeps its limit.
            check_len("body", body, lim.max_body)?;
            check_len("attachment", a, lim.max_short)
        }
        VisitorIn::Send { body, .. } => check_body("body", body, lim),
        VisitorIn::LeaveMessage { body, email, .. } => {
            check_body("body", body, lim)?;
            check_opt("email", email, lim.max_short)
        }
        VisitorIn::Page(p) => check_page(p, lim),
        VisitorIn::Identify {
            id,
            name,
            email,
            hash,
            attrs,
        } => {
            check_identity_id(id, lim)?;
            check_opt("name", name, lim.max_short)?;
            check_opt("email", email, lim.max_short)?;
            check_opt("hash", hash, 128)?;
            if attrs.len() > lim.max_attrs {
                return Err(VisitorParseError::Field {
                    field: "attrs",
                    why: format!("{} attributes, limit {}", attrs.len(), lim.max_attrs),
                });
            }
            for (k, v) in attrs {
                check_len("attrs key", k, lim.max_short)?;
                match v {
                    serde_json::Value::String(s) => {
                        check_len("attrs value", s, lim.max_attr_value)?
                    }
                    serde_json::Value::Number(_)
                    | serde_json::Value::Bool(_)
                    | serde_json::Value::Null => {}
                    _ => {
                        return Err(VisitorParseError::Field {
                            field: "attrs value",
                            why: "must be a string, number, boolean or null".into(),
                        });
                    }
                }
            }
            Ok(())
        }
        VisitorIn::Typing { draft, .. } => check_opt("draft", draft, lim.max_body),
        VisitorIn::Ack { .. }
        | VisitorIn::Ping
        | VisitorIn::EndChat { .. }
        | VisitorIn::Invitation { .. } => Ok(()),
    }
}

/// Parse and validate one inbound visitor message.
pub fn parse_in(text: &[u8], lim: &Limits) -> Result<VisitorIn, VisitorParseError> {
    if text.len() > lim.max_text {
        return Err(VisitorParseError::TooLarge {
            len: text.len(),
            max: lim.max_text,
        });
    }
    let msg: VisitorIn =
        serde_json::from_slice(text).map_err(|e| VisitorParseError::Json(e.to_string()))?;
    validate_in(&msg, lim)?;
    Ok(msg)
}

/// The action id of a message that failed [`parse_in`], when it has one, so
/// the refusal can name the action: a client that sends one action at a time
/// would otherwise wait for an answer that never names it.
pub fn action_id(text: &[u8], lim: &Limits) -> Option<MsgId> {
    if text.len() > lim.max_text {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(text).ok()?;
    serde_json::from_value(v.get("id")?.clone()).ok()
}

/// Parse and validate a long-poll POST body.
pub fn parse_long_poll(text: &[u8], lim: &Limits) -> Result<LongPollRequest, VisitorParseError> {
    let max = lim.max_text.saturating_mul(4);
    if text.len() > max {
        return Err(VisitorParseError::TooLarge {
            len: text.len(),
            max,
        });
    }
    let req: LongPollRequest =
        serde_json::from_slice(text).map_err(|e| VisitorParseError::Json(e.to_string()))?;
    if req.msgs.len() > lim.max_batch {
        return Err(VisitorParseError::Field {
            field: "msgs",
            why: format!("{} messages, limit {}", req.msgs.len(), lim.max_batch),
        });
    }
    check_opt("token", &req.token, lim.max_short * 2)?;
    for m in &req.msgs {
        validate_in(m, lim)?;
    }
    Ok(req)
}

/// Render an attribute value as the text agents see.
pub fn attr_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The longest language tag kept (and the most `hello.lang` may hold):
/// BCP 47's own advice for the longest tag worth supporting.
pub const MAX_LANG_TAG: usize = 35;

/// A visitor's language tag as agents are given it (10.24), or `None` for
/// anything that is not one. BCP 47 in shape only, without the registry:
/// a primary language of 2 to 3 letters (or 5 to 8), then subtags of 1 to
/// 8 ASCII letters or digits separated by `-` (a `_` counts as one, as in
/// POSIX locales), at most [`MAX_LANG_TAG`] characters. The case is put
/// right (`zh-Hant-TW`, `en-GB`), so one language is always spelt one way.
/// Markup, spaces, bidi controls or a sentence in the field are not a
/// language: the caller drops them rather than show them to an agent.
pub fn lang_tag(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_LANG_TAG {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for (i, sub) in raw.split(['-', '_']).enumerate() {
        let ok_len = if i == 0 {
            matches!(sub.len(), 2 | 3 | 5..=8)
        } else {
            (1..=8).contains(&sub.len())
        };
        if !ok_len || !sub.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        if i == 0 && !sub.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        if i > 0 {
            out.push('-');
        }
        match (i, sub.len()) {
            (0, _) => out.push_str(&sub.to_ascii_lowercase()),
            // A script: title case (`Hant`).
            (_, 4) if sub.bytes().all(|b| b.is_ascii_alphabetic()) => {
                let lower = sub.to_ascii_lowercase();
                let mut cs = lower.chars();
                if let Some(first) = cs.next() {
                    out.push(first.to_ascii_uppercase());
                    out.push_str(cs.as_str());
                }
            }
            // A region: upper case (`CN`).
            (_, 2) => out.push_str(&sub.to_ascii_uppercase()),
            _ => out.push_str(&sub.to_ascii_lowercase()),
        }
    }
    Some(out)
}

/// The first language of an HTTP `Accept-Language` header
/// (`zh-CN,zh;q=0.9,en;q=0.8` gives `zh-CN`), as [`lang_tag`] accepts it:
/// the fallback for a widget whose hello says none (10.24). Browsers list
/// the preferred language first; `*` names none.
pub fn accept_language_tag(header: &str) -> Option<String> {
    let first = header.split(',').next()?;
    let tag = first.split(';').next()?.trim();
    if tag == "*" { None } else { lang_tag(tag) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags_are_put_in_shape_and_anything_else_dropped() {
        assert_eq!(lang_tag("zh-CN").as_deref(), Some("zh-CN"));
        assert_eq!(lang_tag(" ZH_hant_tw ").as_deref(), Some("zh-Hant-TW"));
        assert_eq!(lang_tag("en").as_deref(), Some("en"));
        assert_eq!(lang_tag("es-419").as_deref(), Some("es-419"));
        assert_eq!(lang_tag("de-DE-1996").as_deref(), Some("de-DE-1996"));
        for bad in [
            "",
            "e",
            "english please",
            "<script>alert(1)</script>",
            "zh-\u{202e}NC",
            "1234",
            "zh--CN",
            "zh-",
            "en-toolongsubtag",
            "en;q=0.8",
            &"en-abcdefgh".repeat(4),
        ] {
            assert_eq!(lang_tag(bad), None, "{bad:?}");
        }
        assert_eq!(
            accept_language_tag("zh-CN,zh;q=0.9,en;q=0.8").as_deref(),
            Some("zh-CN")
        );
        assert_eq!(accept_language_tag("fr;q=0.7").as_deref(), Some("fr"));
        assert_eq!(accept_language_tag("*"), None);
        assert_eq!(accept_language_tag(""), None);
        assert_eq!(accept_language_tag("<b>,en").as_deref(), None);
    }

    #[test]
    fn parses_send_and_rejects_oversize() {
        let lim = Limits::default();
        let m = parse_in(
            br#"{"t":"send","id":"01901234-5678-7fff-bfff-ffffffffffff","body":"<img src=x onerror=alert(1)>"}"#,
            &lim,
        )
        .unwrap();
        assert!(
            matches!(m, VisitorIn::Send { ref body, .. } if body == "<img src=x onerror=alert(1)>")
        );
        let big = format!(
            r#"{{"t":"send","id":"01901234-5678-7fff-bfff-ffffffffffff","body":"{}"}}"#,
            "a".repeat(9000)
        );
        assert!(matches!(
            parse_in(big.as_bytes(), &lim),
            Err(VisitorParseError::Field { field: "body", .. })
        ));
        let huge = vec![b' '; lim.max_text + 1];
        assert_eq!(
            parse_in(&huge, &lim).unwrap_err().code(),
            ErrorCode::TooLarge
        );
        assert!(parse_in(br#"{"t":"nope"}"#, &lim).is_err());
        assert!(parse_in(br#"{"t":"send","id":"x","body":"hi"}"#, &lim).is_err());
    }

    #[test]
    fn a_refused_action_keeps_its_id() {
        let lim = Limits::default();
        let text = format!(
            r#"{{"t":"send","id":"01901234-5678-7fff-bfff-ffffffffffff","body":"{}"}}"#,
            "a".repeat(9000)
        );
        assert!(parse_in(text.as_bytes(), &lim).is_err());
        assert_eq!(
            action_id(text.as_bytes(), &lim).map(|i| i.to_string()),
            Some("01901234-5678-7fff-bfff-ffffffffffff".into())
        );
        assert_eq!(action_id(br#"{"t":"ping"}"#, &lim), None);
        assert_eq!(action_id(b"not json", &lim), None);
        assert_eq!(action_id(br#"{"id":"nope"}"#, &lim), None);
    }

    #[test]
    fn ping_and_page() {
        let lim = Limits::default();
        assert_eq!(parse_in(br#"{"t":"ping"}"#, &lim).unwrap(), VisitorIn::Ping);
        let p = parse_in(br#"{"t":"page","url":"https://a/b","title":"B"}"#, &lim).unwrap();
        assert_eq!(
            p,
            VisitorIn::Page(PageInfo {
                url: "https://a/b".into(),
                title: "B".into(),
                referrer: None
            })
        );
    }
}
