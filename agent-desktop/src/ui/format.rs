//! Turning raw fields into the short strings the workspace shows.

use std::time::Duration;

/// `HH:MM` of a Unix-ms timestamp at a fixed UTC offset (seconds).
pub fn clock(at_ms: i64, offset_secs: i32) -> String {
    let secs = at_ms.div_euclid(1000) + i64::from(offset_secs);
    let day_secs = secs.rem_euclid(86_400);
    format!("{:02}:{:02}", day_secs / 3600, (day_secs % 3600) / 60)
}

/// A compact elapsed time: `42 s`, `7 min`, `2 h 05 min`, `3 d`.
pub fn elapsed(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", s / 60)
    } else if s < 86_400 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else {
        format!("{} d", s / 86_400)
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
            .unwrap_or_else(|| "Unknown browser".to_owned())
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
        "Unknown OS"
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
            format!("Visitor {short}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
