//! Links in message text: finding them, and handing one to the OS.
//!
//! Only `http://`, `https://` and `mailto:` count as links, as in the
//! widget's `linkify`: a visitor can type `javascript:` or `file:` as
//! easily as anything else, and those must stay words on the screen. The
//! finding follows the widget's rule (a scheme at the start of a word, up to
//! whitespace or `<>"'`, sentence punctuation at the end left out) with two
//! additions for the app's readers: a closing bracket stays when the link
//! opened it (`…/wiki/Rust_(language)`), and Chinese and full-width
//! punctuation ends a link, since Chinese text puts no space before `。`.
//!
//! Opening runs the OS's opener directly (`xdg-open`, `open`, `rundll32`),
//! never a shell, so nothing in a link is ever read as a command.

use std::process::{Command, Stdio};

use crate::ui::i18n::{Texts, tr};

/// The schemes that make a link, lower case.
const SCHEMES: [&str; 3] = ["https://", "http://", "mailto:"];

/// A run of message text: plain, or a link to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Link(&'a str),
}

/// `text` cut into plain runs and links, in order; joined again they are
/// `text` exactly.
pub fn split(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut plain_from = 0;
    let mut at = 0;
    while at < text.len() {
        let Some((start, len)) = next_link(text, at) else {
            break;
        };
        if start > plain_from {
            out.push(Piece::Text(&text[plain_from..start]));
        }
        out.push(Piece::Link(&text[start..start + len]));
        plain_from = start + len;
        at = plain_from;
    }
    if plain_from < text.len() {
        out.push(Piece::Text(&text[plain_from..]));
    }
    out
}

/// Whether `text` holds a link at all (most messages do not, and are drawn
/// as plain text).
pub fn has_link(text: &str) -> bool {
    next_link(text, 0).is_some()
}

/// The next link at or after byte `from`: its start and length.
fn next_link(text: &str, from: usize) -> Option<(usize, usize)> {
    let mut search = from;
    loop {
        let start = scheme_start(text, search)?;
        let candidate = &text[start..];
        let run = candidate
            .char_indices()
            .find(|&(_, c)| ends_link(c))
            .map_or(candidate.len(), |(i, _)| i);
        let scheme = SCHEMES
            .iter()
            .find(|s| starts_with_ignore_case(candidate, s))
            .map_or(0, |s| s.len());
        let link = trim_end(&candidate[..run]);
        if link.len() > scheme {
            return Some((start, link.len()));
        }
        // A bare scheme ("see https://"): not a link, look further on. The
        // run is never empty: it starts with the scheme's letters.
        search = start + run.max(scheme);
    }
}

/// Where the next scheme starts at the start of a word, at or after `from`.
fn scheme_start(text: &str, from: usize) -> Option<usize> {
    let mut prev = text[..from].chars().next_back();
    for (i, c) in text[from..].char_indices() {
        let i = from + i;
        let word_start = !prev.is_some_and(|p| p.is_ascii_alphanumeric() || p == '_');
        if word_start
            && (c == 'h' || c == 'H' || c == 'm' || c == 'M')
            && SCHEMES
                .iter()
                .any(|s| starts_with_ignore_case(&text[i..], s))
        {
            return Some(i);
        }
        prev = Some(c);
    }
    None
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Characters a link never runs across: what the widget stops at, and the
/// punctuation of Chinese text and curly quotes around an address.
fn ends_link(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '<' | '>' | '"' | '\'')
        || matches!(c, '\u{2018}'..='\u{201F}' | '\u{3000}'..='\u{303F}' | '\u{FF00}'..='\u{FF65}')
}

/// Sentence punctuation off the end of a link; a closing bracket stays when
/// the link holds the one that opens it.
fn trim_end(mut link: &str) -> &str {
    loop {
        let Some(last) = link.chars().next_back() else {
            return link;
        };
        let drop = match last {
            '.' | ',' | ';' | ':' | '!' | '?' => true,
            ')' => link.matches('(').count() < link.matches(')').count(),
            ']' => link.matches('[').count() < link.matches(']').count(),
            _ => false,
        };
        if !drop {
            return link;
        }
        link = &link[..link.len() - last.len_utf8()];
    }
}

/// Whether `url` is something [`open`] hands on: one of the link schemes,
/// with something after it, and nothing a command line could split.
pub fn openable(url: &str) -> bool {
    SCHEMES
        .iter()
        .any(|s| starts_with_ignore_case(url, s) && url.len() > s.len())
        && !url.chars().any(ends_link)
}

/// Hand `url` to the OS's opener (the browser, the mail app), without a
/// shell and without waiting. Returns the running opener, so its outcome
/// can be reported: `xdg-open` in particular exits non-zero when nothing
/// can open the link.
pub fn open(url: &str) -> Result<std::process::Child, String> {
    if !openable(url) {
        return Err((tr().link_not_opened)(url));
    }
    opener(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| (tr().could_not_open)(url, &e.to_string()))
}

#[cfg(target_os = "macos")]
fn opener(url: &str) -> Command {
    let mut c = Command::new("open");
    c.arg(url);
    c
}

#[cfg(target_os = "windows")]
fn opener(url: &str) -> Command {
    // `start` would need cmd.exe, a shell; the URL protocol handler takes
    // the link as one argument.
    let mut c = Command::new("rundll32");
    c.arg("url.dll,FileProtocolHandler").arg(url);
    c
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn opener(url: &str) -> Command {
    let mut c = Command::new("xdg-open");
    c.arg(url);
    c
}

/// Wait for an opener started by [`open`]: an error says, in the words of
/// `t` (this runs off the UI thread), that the link did not open.
pub fn finished(mut child: std::process::Child, url: &str, t: &Texts) -> Result<(), String> {
    match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err((t.could_not_open)(url, &status.to_string())),
        Err(e) => Err((t.could_not_open)(url, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(text: &str) -> Vec<&str> {
        split(text)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Link(l) => Some(l),
                Piece::Text(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_three_schemes_are_links_and_nothing_else() {
        assert_eq!(
            links("see https://a.example/x, http://b.example and mailto:bea@example.com"),
            [
                "https://a.example/x",
                "http://b.example",
                "mailto:bea@example.com"
            ]
        );
        for inert in [
            "javascript:alert(1)",
            "data:text/html,<b>x</b>",
            "file:///etc/passwd",
            "ftp://files.example/",
            "www.example.com",
            "vbscript:msgbox",
        ] {
            assert_eq!(links(inert), Vec::<&str>::new(), "{inert}");
            assert!(!has_link(inert), "{inert}");
        }
        assert_eq!(links("HTTPS://SHOP.EXAMPLE/A"), ["HTTPS://SHOP.EXAMPLE/A"]);
    }

    #[test]
    fn a_scheme_counts_only_at_the_start_of_a_word() {
        assert_eq!(links("xhttps://a.example"), Vec::<&str>::new());
        assert_eq!(links("javascript:https://a.example"), ["https://a.example"]);
        assert_eq!(links("看https://a.example"), ["https://a.example"]);
        assert_eq!(links("(https://a.example)"), ["https://a.example"]);
    }

    #[test]
    fn trailing_punctuation_is_left_out_unless_balanced() {
        assert_eq!(links("Go to https://a.example."), ["https://a.example"]);
        assert_eq!(
            links("https://a.example/?q=1!?"),
            ["https://a.example/?q=1"]
        );
        assert_eq!(
            links("(see https://en.wikipedia.org/wiki/Rust_(language))."),
            ["https://en.wikipedia.org/wiki/Rust_(language)"]
        );
        assert_eq!(links("[https://a.example/x]"), ["https://a.example/x"]);
        assert_eq!(links("https://a.example/[1]"), ["https://a.example/[1]"]);
        assert_eq!(
            links("请看https://a.example/订单。谢谢"),
            ["https://a.example/订单"]
        );
        assert_eq!(links("“https://a.example”"), ["https://a.example"]);
    }

    #[test]
    fn a_bare_scheme_is_not_a_link() {
        assert_eq!(links("type https:// then the site"), Vec::<&str>::new());
        assert_eq!(links("mailto: or https://."), Vec::<&str>::new());
        assert_eq!(links("https:// https://a.example"), ["https://a.example"]);
    }

    #[test]
    fn links_end_at_spaces_and_markup() {
        assert_eq!(
            links("<https://a.example/x>\"https://b.example\"'https://c.example'"),
            [
                "https://a.example/x",
                "https://b.example",
                "https://c.example"
            ]
        );
        assert_eq!(
            links("https://a.example\nhttps://b.example\tz"),
            ["https://a.example", "https://b.example"]
        );
    }

    #[test]
    fn the_pieces_join_back_into_the_text() {
        for text in [
            "",
            "no links here",
            "https://a.example",
            "a https://a.example. b mailto:x@y.z, c (http://q.example/(1)) 你好",
            "https:// 看https://a.example/订单。",
        ] {
            let joined: String = split(text)
                .into_iter()
                .map(|p| match p {
                    Piece::Text(t) | Piece::Link(t) => t,
                })
                .collect();
            assert_eq!(joined, text);
        }
        assert_eq!(
            split("a https://b.example c"),
            [
                Piece::Text("a "),
                Piece::Link("https://b.example"),
                Piece::Text(" c")
            ]
        );
    }

    #[test]
    fn only_links_are_openable() {
        assert!(openable("https://a.example/x?y=1"));
        assert!(openable("mailto:bea@example.com"));
        assert!(!openable("https://"));
        assert!(!openable("javascript:alert(1)"));
        assert!(!openable("file:///etc/passwd"));
        assert!(!openable("https://a.example/ --flag"));
        assert!(!openable("https://a.example/\n"));
        assert!(open("javascript:alert(1)").is_err());
    }
}
