//! Turning raw fields into the short strings the workspace shows.

use std::borrow::Cow;
use std::time::Duration;

use crate::ui::i18n::{Texts, tr};

/// `HH:MM` of a Unix-ms timestamp at a fixed UTC offset (seconds).
pub fn clock(at_ms: i64, offset_secs: i32) -> String {
    let secs = at_ms.div_euclid(1000) + i64::from(offset_secs);
    let day_secs = secs.rem_euclid(86_400);
    format!("{:02}:{:02}", day_secs / 3600, (day_secs % 3600) / 60)
}

/// The local day number (days since 1970-01-01 at the offset) of a Unix-ms
/// timestamp: two messages are on one day when these are equal.
pub fn local_day(at_ms: i64, offset_secs: i32) -> i64 {
    (at_ms.div_euclid(1000) + i64::from(offset_secs)).div_euclid(86_400)
}

/// A transcript's day separator: "Today", "Yesterday", or the date
/// ("Mon 30 Nov 2026", "2026年11月30日 周一"), all in the agent's local time
/// and language.
pub fn day_label(at_ms: i64, offset_secs: i32, now_ms: i64) -> String {
    day_label_in(tr(), at_ms, offset_secs, now_ms)
}

/// [`day_label`] in the language of `t`.
pub fn day_label_in(t: &Texts, at_ms: i64, offset_secs: i32, now_ms: i64) -> String {
    let day = local_day(at_ms, offset_secs);
    let today = local_day(now_ms, offset_secs);
    if day == today {
        return t.today.into();
    }
    if day == today - 1 {
        return t.yesterday.into();
    }
    let local = time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (t.date)(
        local.year(),
        u8::from(local.month()),
        local.day(),
        local.weekday().number_days_from_monday(),
    )
}

/// A compact elapsed time: `42 s`, `7 min`, `2 h 05 min`, `3 d` (or
/// `42 秒`, `7 分钟`, …).
pub fn elapsed(ms: i64) -> String {
    elapsed_in(tr(), ms)
}

/// [`elapsed`] in the language of `t`.
pub fn elapsed_in(t: &Texts, ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        (t.seconds)(s)
    } else if s < 3600 {
        (t.minutes)(s / 60)
    } else if s < 86_400 {
        (t.hours_minutes)(s / 3600, (s % 3600) / 60)
    } else {
        (t.days)(s / 86_400)
    }
}

/// Whole seconds left until `d` runs out, rounded up so "0 s" never shows
/// while a retry is still pending.
pub fn seconds_left(d: Duration) -> u64 {
    let ms = d.as_millis();
    u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Browser and OS from a User-Agent string. Heuristic and deliberately
/// small: the raw string is in the details panel for anything it misses.
pub fn browser_and_os(ua: &str) -> (String, String) {
    let version_of = |token: &str| -> Option<String> {
        let start = ua.find(token)? + token.len();
        let v: String = ua[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let major = v.split('.').next().unwrap_or_default().to_owned();
        Some(major)
    };
    let browser = if let Some(v) = version_of("Edg/") {
        format!("Edge {v}")
    } else if let Some(v) = version_of("OPR/") {
        format!("Opera {v}")
    } else if let Some(v) = version_of("Firefox/") {
        format!("Firefox {v}")
    } else if let Some(v) = version_of("Chrome/") {
        format!("Chrome {v}")
    } else if ua.contains("Safari/") {
        match version_of("Version/") {
            Some(v) => format!("Safari {v}"),
            None => "Safari".to_owned(),
        }
    } else {
        ua.split_whitespace()
            .next()
            .map(|t| t.replace('/', " "))
            .unwrap_or_else(|| tr().unknown_browser.to_owned())
    };
    let os = if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        "iOS"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("CrOS") {
        "ChromeOS"
    } else if ua.contains("Linux") || ua.contains("X11") {
        "Linux"
    } else {
        tr().unknown_os
    };
    (browser, os.to_owned())
}

/// The first line of `body`, cut to `max` characters, for list previews.
pub fn preview(body: &str, max: usize) -> String {
    let line = body.lines().next().unwrap_or_default();
    let mut out: String = line.chars().take(max).collect();
    if line.chars().count() > max || body.lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

/// A visitor's display name: the site-supplied name, else a short id.
pub fn visitor_label(name: Option<&str>, id: &str) -> String {
    match name {
        Some(n) if !n.trim().is_empty() => n.to_owned(),
        _ => {
            let short: String = id.chars().take(8).collect();
            (tr().visitor_short)(&short)
        }
    }
}

/// The path of a page's URL, as a label shows where a visitor is
/// (`https://shop.example/pricing?ref=x` is `/pricing`): the host is the
/// site's own and the query is noise. At most 32 characters, cut with `…`,
/// and made [`display_safe`], since a URL is what the visitor's page said.
pub fn page_path(url: &str) -> String {
    let rest = match url.find("://") {
        Some(i) => {
            let after = &url[i + 3..];
            after.find('/').map_or("", |j| &after[j..])
        }
        None => url,
    };
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let path = display_safe(if path.is_empty() { "/" } else { path });
    const MAX: usize = 32;
    if path.chars().count() > MAX {
        let cut: String = path.chars().take(MAX - 1).collect();
        format!("{cut}…")
    } else {
        path
    }
}

/// How a visitor who gave no name is told apart (issue 17): "Visitor ·
/// Chinese · /pricing", from their language tag and current page, the
/// language named in the app's language; `None` when neither is known.
pub fn nameless_label(lang: Option<&str>, page_url: Option<&str>) -> Option<String> {
    if lang.is_none() && page_url.is_none() {
        return None;
    }
    let mut out = tr().visitor_word.to_owned();
    if let Some(l) = lang {
        out.push_str(" · ");
        out.push_str(&crate::ui::i18n::language_name(l));
    }
    if let Some(u) = page_url {
        out.push_str(" · ");
        out.push_str(&page_path(u));
    }
    Some(out)
}

/// Whether `c` reorders or hides the text around it: the bidi embeddings,
/// overrides and isolates (U+202A–U+202E, U+2066–U+2069) and the implicit
/// direction marks (U+200E, U+200F, U+061C), and the zero-width and
/// invisible characters (U+200B–U+200D, U+2060–U+2064, U+FEFF).
/// `char::is_control` covers none of them: they are format characters.
pub fn is_bidi_or_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Text from outside (a visitor's name or message) made safe to show: bidi
/// controls and invisible characters dropped, and control characters other
/// than newline and tab. A right-to-left override in a name shows
/// "Bob\u{202E}gpj.exe" as "Bobexe.jpg", an unclosed one flips whatever is
/// drawn after it, and zero-width characters make different strings look
/// the same. Dropping them loses nothing a reader can see; the text's own
/// right-to-left letters still lay out by the Unicode bidi rules.
///
/// A zero-width joiner between two emoji stays: it is what makes 👨‍👩‍👧 one
/// family instead of three people, and between two pictographs it can
/// neither reorder nor hide anything.
pub fn display_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{200D}' {
            let joins_emoji = out.chars().next_back().is_some_and(is_emoji_part)
                && chars.peek().copied().is_some_and(is_emoji_part);
            if joins_emoji {
                out.push(c);
            }
            continue;
        }
        if is_bidi_or_invisible(c) || (c.is_control() && c != '\n' && c != '\t') {
            continue;
        }
        out.push(c);
    }
    out
}

/// [`display_safe`] for text on its way to the screen, without a copy for
/// the usual text that has nothing to drop.
pub fn shown(text: Cow<'_, str>) -> Cow<'_, str> {
    let drops = |c: char| is_bidi_or_invisible(c) || (c.is_control() && c != '\n' && c != '\t');
    if text.chars().any(drops) {
        Cow::Owned(display_safe(&text))
    } else {
        text
    }
}

/// Pictographs, and the variation selector and skin-tone modifiers that
/// end one, as found on either side of a joiner in an emoji sequence.
fn is_emoji_part(c: char) -> bool {
    matches!(
        c,
        '\u{2600}'..='\u{27BF}' | '\u{2B00}'..='\u{2BFF}' | '\u{FE0F}' | '\u{1F000}'..='\u{1FAFF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_shown_by_its_path() {
        assert_eq!(
            page_path("https://shop.example/pricing?ref=ad#top"),
            "/pricing"
        );
        assert_eq!(page_path("https://shop.example"), "/");
        assert_eq!(page_path("https://shop.example/"), "/");
        assert_eq!(page_path("/local/path"), "/local/path");
        assert_eq!(page_path("https://x.example/a\u{202e}b"), "/ab");
        let long = format!("https://x.example/{}", "a".repeat(50));
        let shown = page_path(&long);
        assert_eq!(shown.chars().count(), 32);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn days_are_local_and_named_near_today() {
        // 2026-11-30 23:30 UTC is 1 Dec 07:30 in Shanghai (UTC+8).
        let late = 1_796_081_400_000;
        let shanghai = 8 * 3600;
        assert_eq!(local_day(late, 0) + 1, local_day(late, shanghai));
        let now = late + 3_600_000; // 1 Dec 00:30 UTC
        assert_eq!(day_label(late, 0, now), "Yesterday");
        assert_eq!(day_label(late, shanghai, now), "Today");
        assert_eq!(day_label(late, 0, late), "Today");
        assert_eq!(day_label(late - 2 * 86_400_000, 0, now), "Sat 28 Nov 2026");
        // The same days in Chinese.
        let zh = &crate::ui::i18n::ZH;
        assert_eq!(day_label_in(zh, late, 0, now), "昨天");
        assert_eq!(day_label_in(zh, late, shanghai, now), "今天");
        assert_eq!(
            day_label_in(zh, late - 2 * 86_400_000, 0, now),
            "2026年11月28日 周六"
        );
        // Before 1970 and far offsets still give a day.
        assert_eq!(
            day_label(-86_400_000, -12 * 3600, 10 * 86_400_000),
            "Tue 30 Dec 1969"
        );
    }

    #[test]
    fn clock_wraps_days_and_offsets() {
        assert_eq!(clock(0, 0), "00:00");
        assert_eq!(clock(13 * 3_600_000 + 5 * 60_000, 0), "13:05");
        assert_eq!(clock(0, -3600), "23:00");
        assert_eq!(clock(0, 2 * 3600), "02:00");
    }

    #[test]
    fn elapsed_is_compact() {
        assert_eq!(elapsed(-5), "0 s");
        assert_eq!(elapsed(42_000), "42 s");
        assert_eq!(elapsed(7 * 60_000 + 5), "7 min");
        assert_eq!(elapsed(2 * 3_600_000 + 5 * 60_000), "2 h 05 min");
        assert_eq!(elapsed(3 * 86_400_000), "3 d");
        let zh = &crate::ui::i18n::ZH;
        assert_eq!(elapsed_in(zh, 42_000), "42 秒");
        assert_eq!(elapsed_in(zh, 7 * 60_000), "7 分钟");
        assert_eq!(elapsed_in(zh, 2 * 3_600_000 + 5 * 60_000), "2 小时 05 分钟");
        assert_eq!(elapsed_in(zh, 3 * 86_400_000), "3 天");
    }

    #[test]
    fn user_agents() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
        assert_eq!(
            browser_and_os(chrome),
            ("Chrome 126".into(), "Windows".into())
        );
        let ff = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(browser_and_os(ff), ("Firefox 128".into(), "Linux".into()));
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_and_os(safari), ("Safari 17".into(), "iOS".into()));
        assert_eq!(
            browser_and_os("HoldfastTest/1.0 (X11; Linux x86_64)"),
            ("HoldfastTest 1.0".into(), "Linux".into())
        );
        assert_eq!(browser_and_os("").1, "Unknown OS");
    }

    #[test]
    fn previews_cut_on_characters_not_bytes() {
        assert_eq!(preview("你好世界", 2), "你好…");
        assert_eq!(preview("one\ntwo", 10), "one…");
        assert_eq!(preview("short", 10), "short");
    }

    #[test]
    fn display_safe_drops_bidi_controls_and_invisibles() {
        // The classic extension spoof: it shows as "Invoice annexe.pdf" and
        // is an .exe.
        assert_eq!(
            display_safe("Invoice ann\u{202E}fdp.exe"),
            "Invoice annfdp.exe"
        );
        for c in [
            '\u{061C}', '\u{200B}', '\u{200C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}',
            '\u{202C}', '\u{202D}', '\u{202E}', '\u{2060}', '\u{2064}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{FEFF}',
        ] {
            assert!(is_bidi_or_invisible(c), "{:04X}", u32::from(c));
            assert_eq!(
                display_safe(&format!("a{c}b")),
                "ab",
                "{:04X}",
                u32::from(c)
            );
        }
        assert_eq!(display_safe("a\u{200D}b"), "ab");
        assert_eq!(display_safe("\u{200D}"), "");
    }

    #[test]
    fn display_safe_keeps_text_emoji_and_layout() {
        assert_eq!(display_safe("line one\n\tline two"), "line one\n\tline two");
        assert_eq!(display_safe("bell\u{7}\r\u{9B}!"), "bell!");
        // Right-to-left letters are text, not controls.
        assert_eq!(display_safe("שלום עולם"), "שלום עולם");
        assert_eq!(display_safe("你好！📦"), "你好！📦");
        // Emoji sequences joined with ZWJ stay whole.
        for seq in [
            "👨\u{200D}👩\u{200D}👧",
            "❤\u{FE0F}\u{200D}🔥",
            "🧑🏽\u{200D}💻",
        ] {
            assert_eq!(display_safe(seq), seq);
        }
        // Markup is text to this helper: escaping is the display's business.
        assert_eq!(display_safe("<b>&</b>"), "<b>&</b>");
    }

    #[test]
    fn shown_copies_only_what_it_changes() {
        let plain = shown(Cow::Borrowed("你好！📦 שלום\n\tline"));
        assert!(matches!(plain, Cow::Borrowed(_)), "{plain:?}");
        // A joiner is looked at (and the text copied), and kept in emoji.
        let family = "👨\u{200D}👩\u{200D}👧";
        assert_eq!(shown(Cow::Borrowed(family)), family);
        assert_eq!(shown(Cow::Borrowed("\u{202E}gpj.exe\u{200B}")), "gpj.exe");
        assert_eq!(shown(Cow::Borrowed("a\u{200D}b")), "ab");
        assert_eq!(shown(Cow::Borrowed("bell\u{7}")), "bell");
    }
}
