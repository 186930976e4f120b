//! The drawing helpers every screen shares, and the one seam text goes
//! through on its way to the screen.
//!
//! Every text widget in the screens is made through this module's own
//! [`text`] (or [`small`], [`body_text`], [`heading`], built on it), which
//! drops bidi controls and invisible characters ([`format::display_safe`])
//! from whatever it draws: names, messages, attributes, pages, user agents,
//! left-message details, team names, history. It is one seam rather than a
//! call at each field, so a field added later is covered, and a string put
//! together from several fields is cleaned as a whole (an override left open
//! in one cannot flip the next). The data itself keeps the raw text: the
//! store, the outbox and the notification log are not touched. A screen
//! module imports `text` from here and iced's `text` only as a module, for
//! its types and styles.
//!
//! Everything visitors or sites supply is shown through `text`, which never
//! interprets markup, and wraps at any glyph so one long unbroken string
//! cannot push the layout wider than the window.
//!
//! Page addresses and referrers are shown as text and nothing opens them:
//! they are whatever the visitor's browser reported, `javascript:` and
//! `file:` included. The one place links are followed is message text
//! ([`linked_text`]), and there only `http`, `https` and `mailto` links (see
//! [`links`]); anything else stays text.

use holdfast_protocol::agent::{ConversationState, VisitorInfo};
use holdfast_protocol::notice::Notice;
use iced::Element;
use iced::widget::span;
use iced::widget::text::{self, Wrapping};

use crate::ui::desk::{Conv, message_text};
use crate::ui::format;
use crate::ui::i18n::{Lang, tr};
use crate::ui::links::{self, Piece};
use crate::ui::theme::{self, success_text};
pub use crate::ui::theme::{card, muted};

/// The only way text reaches the screen: iced's `text`, minus the
/// characters that reorder or hide what is around them.
pub fn text<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    iced::widget::text(format::shown(s.into_fragment()))
}

pub fn body_text<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    text(s).wrapping(Wrapping::WordOrGlyph)
}

/// Message text (a bubble's, a note's) that can be selected with the
/// mouse and copied with Ctrl+C, with its web and mail links made
/// clickable: a click produces `on_link` with the link as shown. Cleaned
/// first, like all [`text`], so a link is found in, and opens, exactly what
/// the agent sees (an invisible character cannot hide inside one), and what
/// is copied is what is on screen. Text without a link is one selectable
/// run.
///
/// The selection and the copy are the widget's own (`iced_selection`): a
/// press on the text starts one, a press anywhere else ends it, and Ctrl+C
/// writes it through the window's clipboard while it is not empty. A text
/// field keeps its own Ctrl+C: the field comes later in the tree, so when
/// both hold a selection the field's is the one that stays on the
/// clipboard.
pub fn linked_text<'a, M: 'a>(s: &str, on_link: impl Fn(String) -> M + 'a) -> Element<'a, M> {
    let shown = format::display_safe(s);
    if !links::has_link(&shown) {
        return iced_selection::text(shown)
            .wrapping(Wrapping::WordOrGlyph)
            .style(theme::selectable)
            .into();
    }
    let spans: Vec<text::Span<'a, String>> = links::split(&shown)
        .into_iter()
        .map(|piece| match piece {
            Piece::Text(t) => span(t.to_owned()),
            Piece::Link(l) => span(l.to_owned()).link(l.to_owned()).underline(true),
        })
        .collect();
    iced_selection::rich_text(spans)
        .wrapping(Wrapping::WordOrGlyph)
        .style(theme::selectable)
        .on_link_click(on_link)
        .into()
}

pub fn small<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    text(s).size(12).wrapping(Wrapping::WordOrGlyph)
}

pub fn heading<'a>(s: impl text::IntoFragment<'a>) -> text::Text<'a> {
    // No CJK face here has a bold weight, and in a bold Han run the
    // digits of "排队中（3）" were shaped from a bold serif face, which
    // looked broken. Chinese headings are set a size larger in the
    // regular weight instead, as Chinese interfaces commonly do.
    if crate::ui::i18n::current() == crate::ui::i18n::Lang::Zh {
        return text(s).size(16);
    }
    text(s).size(15).font(iced::Font {
        weight: iced::font::Weight::Bold,
        ..iced::Font::DEFAULT
    })
}

/// The language switch, "中文 English", the one on screen lit: on the
/// sign-in screen and in the top bar. Each language is named in itself, so
/// it is found by someone who cannot read the other. Ids `lang-zh` and
/// `lang-en`.
pub fn language_switch<'a, M: Clone + 'a>(on: Lang, pick: impl Fn(Lang) -> M) -> Element<'a, M> {
    use iced::widget::{button, container, row, tooltip};
    let mut r = row![].spacing(2).align_y(iced::Alignment::Center);
    for lang in Lang::ALL {
        r = r.push(
            container(
                button(small(lang.autonym()))
                    .padding([2, 8])
                    .style(if lang == on {
                        button::primary
                    } else {
                        button::text
                    })
                    .on_press(pick(lang)),
            )
            .id(format!("lang-{}", lang.code())),
        );
    }
    tooltip(r, small(tr().language), tooltip::Position::Bottom)
        .style(card)
        .padding(6)
        .into()
}

/// Whether a visitor-supplied name is there to show (the label falls back
/// to a short id otherwise, which nobody stated).
pub fn has_stated_name(name: Option<&str>) -> bool {
    name.is_some_and(|n| !n.trim().is_empty())
}

/// The muted words under what the visitor's page told us about them
/// ([`crate::ui::i18n::Texts::name_stated`] and the like).
pub fn stated<'a>(words: &'static str) -> text::Text<'a> {
    small(words).style(muted)
}

/// The site's own id for the visitor: the one thing the identify hash
/// covers (`hash = HMAC(site secret, id)`), so the one thing shown with a
/// check mark. The name, email and attributes travel beside the hash,
/// unsigned, and are whatever the page said; they are shown as stated (see
/// [`stated`]). Without a secret the site vouches for nothing, so the id is
/// stated too.
pub fn site_id_line<'a>(v: &VisitorInfo) -> Option<text::Text<'a>> {
    let t = tr();
    let id = v.external_id.as_deref().filter(|id| !id.trim().is_empty());
    match (id, v.verified) {
        (Some(id), true) => Some(small((t.site_id_verified)(id)).style(success_text)),
        // A record from before ids were sent along: the check still holds.
        (None, true) => Some(small(t.id_verified).style(success_text)),
        (Some(id), false) => Some(small((t.site_id_stated)(id)).style(muted)),
        (None, false) => None,
    }
}

/// What a left message tells the agent: how to reach the visitor, and the
/// page it was left on. The queue row and the chat header both show it.
pub fn left_message_lines(c: &Conv) -> Vec<String> {
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
            out.push(tr().no_email_left.to_owned());
        }
        None => {}
    }
    if let Some(u) = url {
        out.push((tr().left_on)(&u));
    }
    out
}

/// The start of the newest thing a person said in `c`, for a list row. Cut
/// after the invisible characters are dropped, so a message padded with
/// zero-width spaces cannot preview as nothing.
pub fn said_preview(c: &Conv, max: usize) -> String {
    c.last_said()
        .map(|m| format::preview(&format::display_safe(&message_text(m)), max))
        .unwrap_or_default()
}
