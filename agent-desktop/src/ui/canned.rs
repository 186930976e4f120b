//! Canned replies in the composer (PROTOCOL.md 10.21): when a draft asks
//! for one, which ones match and in what order, and the text a picked one
//! puts in the composer.
//!
//! Pure, so the ranking and the filling are tested without a window.

use holdfast_protocol::agent::CannedReply;

/// Most replies the picker lists at once; more typing narrows it.
pub const SHOWN: usize = 6;

/// The query when the draft asks for a canned reply: a `/` at the very
/// start, then no space or line break (a `/` inside a sentence, or a path
/// someone pastes with spaces after it, is just text).
pub fn query(draft: &str) -> Option<&str> {
    let q = draft.strip_prefix('/')?;
    (!q.chars().any(char::is_whitespace)).then_some(q)
}

/// How well `needle`'s characters appear in order in `hay` (case ignored):
/// `None` when they do not all appear. Higher is better: a prefix beats a
/// run in the middle, which beats characters scattered apart.
fn score(needle: &str, hay: &str) -> Option<u32> {
    if needle.is_empty() {
        return Some(1);
    }
    let hay: Vec<char> = hay.chars().flat_map(char::to_lowercase).collect();
    let needle: Vec<char> = needle.chars().flat_map(char::to_lowercase).collect();
    let mut at = 0;
    let mut total = 0u32;
    let mut last: Option<usize> = None;
    for &c in &needle {
        let found = hay[at..].iter().position(|&h| h == c)? + at;
        total += match last {
            _ if found == 0 => 8,
            Some(l) if found == l + 1 => 5,
            _ => 1,
        };
        last = Some(found);
        at = found + 1;
    }
    Some(total)
}

/// The replies matching `q`, best first: a match on the shortcut before a
/// match in the text only, then by score, then the site's before the
/// agent's own as the list has them, then by shortcut.
pub fn ranked<'a>(list: &'a [CannedReply], q: &str) -> Vec<&'a CannedReply> {
    let mut hits: Vec<(bool, u32, usize, &CannedReply)> = list
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match score(q, &r.shortcut) {
            Some(s) => Some((true, s, i, r)),
            None => score(q, &r.body).map(|s| (false, s, i, r)),
        })
        .collect();
    hits.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    hits.into_iter().map(|h| h.3).collect()
}

/// The reply's text as it goes into the composer: `{visitor.name}` is the
/// name the visitor gave (or the catalog's stand-in: "Hi there", in the
/// language of `visitor_lang`, the visitor's tag, when it is known, since
/// the visitor reads it), `{agent.name}` the agent's. Any other `{...}`
/// stays as written, for the agent to see.
pub fn fill(
    body: &str,
    visitor_name: Option<&str>,
    visitor_lang: Option<&str>,
    agent_name: &str,
) -> String {
    let visitor = visitor_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(crate::ui::i18n::for_visitor(visitor_lang).visitor_name_fallback);
    body.replace("{visitor.name}", visitor)
        .replace("{agent.name}", agent_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64, personal: bool, shortcut: &str, body: &str) -> CannedReply {
        CannedReply {
            id,
            personal,
            shortcut: shortcut.into(),
            body: body.into(),
            updated_ms: 0,
        }
    }

    #[test]
    fn only_a_leading_slash_without_spaces_asks() {
        assert_eq!(query("/"), Some(""));
        assert_eq!(query("/ref"), Some("ref"));
        assert_eq!(query("/ref und"), None);
        assert_eq!(query("/ref\n"), None);
        assert_eq!(query("see /ref"), None);
        assert_eq!(query(""), None);
    }

    #[test]
    fn shortcuts_first_then_text_in_order_fuzzy() {
        let list = [
            r(1, false, "hello", "Hi {visitor.name}, how can I help?"),
            r(2, false, "refund", "Your refund is on its way."),
            r(
                3,
                true,
                "ship",
                "We ship to every country, refunds within 30 days.",
            ),
            r(
                4,
                true,
                "Refurb",
                "Refurbished units carry a one-year warranty.",
            ),
        ];
        let ids = |q: &str| ranked(&list, q).iter().map(|x| x.id).collect::<Vec<_>>();
        // Everything for a bare slash, in the list's order.
        assert_eq!(ids(""), [1, 2, 3, 4]);
        // "rfd" is r…f…d in the shortcut "refund" only; the texts of
        // "Refurb" ("Refurbished", from its start) and "ship" ("every …
        // refunds", scattered) come after it, the better match first.
        assert_eq!(ids("rfd"), [2, 4, 3]);
        // A prefix run beats a scattered match; case is ignored.
        assert_eq!(ids("REF"), [2, 4, 3]);
        assert_eq!(ids("warranty"), [4]);
        assert!(ids("zzz").is_empty());
    }

    #[test]
    fn variables_are_filled_and_others_left_alone() {
        assert_eq!(
            fill(
                "Hi {visitor.name}, I am {agent.name}. {order.id}?",
                Some("Dana"),
                Some("zh-CN"),
                "Bea"
            ),
            "Hi Dana, I am Bea. {order.id}?"
        );
        assert_eq!(fill("Hi {visitor.name}!", None, None, "Bea"), "Hi there!");
        assert_eq!(
            fill("Hi {visitor.name}!", Some("  "), None, "Bea"),
            "Hi there!"
        );
        assert_eq!(
            fill("贝为您服务：{agent.name}", None, None, "贝"),
            "贝为您服务：贝"
        );
    }

    /// The stand-in for a nameless visitor is in the visitor's language,
    /// whatever the agent's app speaks; unknown, it is the app's.
    #[test]
    fn a_nameless_visitor_is_greeted_in_their_language() {
        use crate::ui::i18n::{Lang, set};
        set(Lang::Zh);
        assert_eq!(
            fill("Hi {visitor.name}!", None, Some("en-US"), "贝"),
            "Hi there!"
        );
        assert_eq!(fill("{visitor.name}，您好", None, None, "贝"), "朋友，您好");
        set(Lang::En);
        assert_eq!(
            fill("{visitor.name}，您好", None, Some("zh-TW"), "Bea"),
            "朋友，您好"
        );
        assert_eq!(
            fill("Hi {visitor.name}!", None, Some("fr"), "Bea"),
            "Hi there!"
        );
    }
}
