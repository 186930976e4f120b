//! An invitation rule and whether a visitor meets it, without I/O: the
//! watcher gives it the visitor as the hub knows it and the current time.

use holdfast_protocol::agent::{SiteId, VisitorInfo};

/// A visit is over after this long without the visitor: one who comes back
/// later is "returning", and an invitation may fire again.
pub const VISIT_GAP_MS: i64 = 30 * 60 * 1000;

/// One admin's "invite visitors who ...". Every condition that is set must
/// hold; a rule with none invites every visitor as they arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub site: SiteId,
    pub name: String,
    pub text: String,
    /// A pattern for the current page's URL: `*` stands for any run of
    /// characters, and the rest is compared ignoring ASCII case.
    pub url: Option<String>,
    /// Seconds on the site in this visit, at least.
    pub site_secs: Option<u32>,
    /// Seconds on the current page, at least.
    pub page_secs: Option<u32>,
    /// `Some(true)`: only visitors who were here on an earlier visit;
    /// `Some(false)`: only first-time visitors.
    pub returning: Option<bool>,
    /// Text the visit's referrer contains, ignoring case.
    pub referrer: Option<String>,
    /// The `utm_campaign` of a page of this visit, ignoring case.
    pub campaign: Option<String>,
    /// An attribute from `identify`, and its value ignoring case.
    pub attr: Option<(String, String)>,
    pub enabled: bool,
}

impl Rule {
    /// Whether `v` meets every condition at `now_ms`. Whether the visitor
    /// is chatting, or was invited already, is not the rule's business:
    /// the watcher and the writer check that.
    pub fn matches(&self, v: &VisitorInfo, now_ms: i64) -> bool {
        let page = v.trail.last();
        if let Some(pattern) = &self.url
            && !page.is_some_and(|p| glob(pattern, &p.url))
        {
            return false;
        }
        if let Some(s) = self.site_secs
            && now_ms - v.visit_started_ms < i64::from(s) * 1000
        {
            return false;
        }
        if let Some(s) = self.page_secs
            && page.is_none_or(|p| now_ms - p.at_ms < i64::from(s) * 1000)
        {
            return false;
        }
        if let Some(want) = self.returning
            && returning(v) != want
        {
            return false;
        }
        if let Some(r) = &self.referrer
            && !v
                .referrer
                .as_deref()
                .is_some_and(|have| contains_ignoring_case(have, r))
        {
            return false;
        }
        if let Some(c) = &self.campaign
            && !v
                .trail
                .iter()
                .filter(|p| p.at_ms >= v.visit_started_ms)
                .filter_map(|p| query_value(&p.url, "utm_campaign"))
                .any(|have| have.to_lowercase() == c.to_lowercase())
        {
            return false;
        }
        if let Some((key, value)) = &self.attr
            && !v
                .attrs
                .iter()
                .any(|(k, have)| k == key && have.to_lowercase() == value.to_lowercase())
        {
            return false;
        }
        true
    }

    /// The conditions in words, for `invite-rule list`.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        if let Some(u) = &self.url {
            out.push(format!("page {u}"));
        }
        if let Some(s) = self.site_secs {
            out.push(format!("{s} s on the site"));
        }
        if let Some(s) = self.page_secs {
            out.push(format!("{s} s on the page"));
        }
        match self.returning {
            Some(true) => out.push("returning".into()),
            Some(false) => out.push("first visit".into()),
            None => {}
        }
        if let Some(r) = &self.referrer {
            out.push(format!("referrer contains {r:?}"));
        }
        if let Some(c) = &self.campaign {
            out.push(format!("campaign {c:?}"));
        }
        if let Some((k, v)) = &self.attr {
            out.push(format!("{k} = {v:?}"));
        }
        if out.is_empty() {
            "every visitor".into()
        } else {
            out.join(", ")
        }
    }
}

/// Whether this visit follows an earlier one: the visitor was first seen
/// more than a visit's gap before this visit began.
pub fn returning(v: &VisitorInfo) -> bool {
    v.first_seen_ms + VISIT_GAP_MS < v.visit_started_ms
}

fn contains_ignoring_case(have: &str, want: &str) -> bool {
    have.to_lowercase().contains(&want.to_lowercase())
}

/// `*` matches any run of characters (also none); everything else matches
/// itself, ignoring ASCII case. Iterative with one backtrack point, so a
/// hostile pattern of many stars costs O(pattern × text), not more.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let t: Vec<char> = text.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The first value of `key` in the URL's query string, percent-decoded
/// (`+` is a space), if it has one.
pub fn query_value(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == key).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? * 16 + hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (bytes[i], escaped) {
            (_, Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (b, None) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use holdfast_protocol::agent::PageView;

    const T0: i64 = 1_700_000_000_000;

    fn visitor(url: &str, page_at: i64) -> VisitorInfo {
        VisitorInfo {
            id: "v".into(),
            site: 1,
            name: None,
            email: None,
            attrs: vec![("plan".into(), "Gold".into())],
            external_id: None,
            verified: false,
            online: true,
            user_agent: None,
            referrer: Some("https://www.Google.com/search?q=coffee".into()),
            visit_started_ms: T0,
            first_seen_ms: T0,
            trail: vec![PageView {
                url: url.into(),
                title: String::new(),
                referrer: None,
                at_ms: page_at,
            }],
            conversation: None,
            lang: None,
        }
    }

    fn rule() -> Rule {
        Rule {
            id: 1,
            site: 1,
            name: "r".into(),
            text: "Hi".into(),
            url: None,
            site_secs: None,
            page_secs: None,
            returning: None,
            referrer: None,
            campaign: None,
            attr: None,
            enabled: true,
        }
    }

    #[test]
    fn glob_stars_and_case() {
        assert!(glob("*/pricing*", "https://shop.example/Pricing?x=1"));
        assert!(glob("https://shop.example/*", "https://shop.example/"));
        assert!(!glob("*/pricing", "https://shop.example/pricing/eu"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("*收银台*", "https://shop.example/收银台/1"));
        // Many stars against a long miss stay quick.
        let long = "a".repeat(2000);
        assert!(!glob(&"*a".repeat(50).replace('a', "a*b"), &long));
    }

    #[test]
    fn query_values_are_decoded() {
        let u = "https://x.example/?utm_source=mail&utm_campaign=Spring%20Sale+2026#top";
        assert_eq!(query_value(u, "utm_campaign").unwrap(), "Spring Sale 2026");
        assert_eq!(query_value(u, "utm_medium"), None);
        assert_eq!(query_value("https://x.example/", "utm_campaign"), None);
        // A broken escape stays as typed rather than failing.
        assert_eq!(query_value("/?c=%zz%4", "c").unwrap(), "%zz%4");
    }

    #[test]
    fn every_set_condition_must_hold() {
        let v = visitor("https://shop.example/pricing?utm_campaign=spring", T0);
        let mut r = rule();
        assert!(r.matches(&v, T0));
        r.url = Some("*/pricing*".into());
        assert!(r.matches(&v, T0));
        r.page_secs = Some(30);
        assert!(!r.matches(&v, T0 + 29_999));
        assert!(r.matches(&v, T0 + 30_000));
        r.site_secs = Some(60);
        assert!(!r.matches(&v, T0 + 59_000));
        assert!(r.matches(&v, T0 + 60_000));
        r.referrer = Some("google".into());
        assert!(r.matches(&v, T0 + 60_000));
        r.campaign = Some("SPRING".into());
        assert!(r.matches(&v, T0 + 60_000));
        r.attr = Some(("plan".into(), "gold".into()));
        assert!(r.matches(&v, T0 + 60_000));
        r.returning = Some(true);
        assert!(!r.matches(&v, T0 + 60_000), "first seen this visit");
        let mut back = v.clone();
        back.first_seen_ms = T0 - 3 * VISIT_GAP_MS;
        assert!(r.matches(&back, T0 + 60_000));
        r.returning = Some(false);
        assert!(r.matches(&v, T0 + 60_000));
        assert!(!r.matches(&back, T0 + 60_000));
        // Each condition on its own can refuse.
        let mut other = rule();
        other.url = Some("*/checkout*".into());
        assert!(!other.matches(&v, T0));
        let mut other = rule();
        other.referrer = Some("bing".into());
        assert!(!other.matches(&v, T0));
        let mut other = rule();
        other.campaign = Some("autumn".into());
        assert!(!other.matches(&v, T0));
        let mut other = rule();
        other.attr = Some(("plan".into(), "free".into()));
        assert!(!other.matches(&v, T0));
        let mut other = rule();
        other.attr = Some(("tier".into(), "gold".into()));
        assert!(!other.matches(&v, T0));
    }

    #[test]
    fn a_campaign_from_before_this_visit_does_not_count() {
        let mut v = visitor("https://shop.example/", T0);
        v.trail.insert(
            0,
            PageView {
                url: "https://shop.example/?utm_campaign=spring".into(),
                title: String::new(),
                referrer: None,
                at_ms: T0 - VISIT_GAP_MS * 2,
            },
        );
        let mut r = rule();
        r.campaign = Some("spring".into());
        assert!(!r.matches(&v, T0));
    }

    #[test]
    fn no_page_yet_matches_no_page_rule() {
        let mut v = visitor("https://shop.example/", T0);
        v.trail.clear();
        let mut r = rule();
        r.url = Some("*".into());
        assert!(!r.matches(&v, T0));
        r.url = None;
        r.page_secs = Some(1);
        assert!(!r.matches(&v, T0 + 5000));
    }
}
