//! Invitation rules as the CLI manages them, and the counts an admin reads:
//! how many invitations each rule sent, and how many were shown, accepted
//! and ignored.

use holdfast_protocol::agent::SiteId;

use super::rule::{Rule, VISIT_GAP_MS};
use crate::admin::AdminError;
use crate::store::reads;
use crate::store::sql::{Db, Row, args};
use crate::store::{StoreError, now_ms};

/// A site's rules, at most; each is checked for every visitor every second.
pub const MAX_RULES: usize = 50;
/// The longest invitation text, in characters.
pub const MAX_TEXT_CHARS: usize = 500;

/// What an admin asks for; checked by [`add_rule`].
#[derive(Clone, Debug, Default)]
pub struct RuleSpec {
    pub name: String,
    pub text: String,
    pub url: Option<String>,
    pub site_secs: Option<u32>,
    pub page_secs: Option<u32>,
    pub returning: Option<bool>,
    pub referrer: Option<String>,
    pub campaign: Option<String>,
    /// `key=value`.
    pub attr: Option<String>,
}

/// How a rule has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sent to a widget.
    pub fired: u64,
    /// On a visitor's screen.
    pub shown: u64,
    /// Replied to: a chat began with it.
    pub accepted: u64,
    /// Shown and closed, or shown and left unanswered for a visit's gap.
    pub ignored: u64,
}

fn invalid(why: impl Into<String>) -> AdminError {
    AdminError::Invalid(why.into())
}

fn text_field(what: &str, v: &str, max: usize, newlines: bool) -> Result<String, AdminError> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max {
        return Err(invalid(format!("{what} must be 1 to {max} characters")));
    }
    if v.chars()
        .any(|c| c.is_control() && !(newlines && c == '\n'))
    {
        return Err(invalid(format!("{what} cannot hold control characters")));
    }
    Ok(v.to_owned())
}

fn opt_field(what: &str, v: Option<&str>, max: usize) -> Result<Option<String>, AdminError> {
    v.map(|v| text_field(what, v, max, false)).transpose()
}

fn secs(what: &str, v: Option<u32>) -> Result<Option<u32>, AdminError> {
    match v {
        Some(s) if s > 86_400 => Err(invalid(format!(
            "{what} must be at most 86400 seconds (a day), not {s}"
        ))),
        v => Ok(v),
    }
}

/// Add a rule to the site `key`, enabled.
pub fn add_rule(conn: &dyn Db, key: &str, spec: &RuleSpec) -> Result<Rule, AdminError> {
    let site = reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))?;
    let name = text_field("a rule's name", &spec.name, 64, false)?;
    let text = text_field("the invitation text", &spec.text, MAX_TEXT_CHARS, true)?;
    let url = opt_field("the page pattern", spec.url.as_deref(), 2048)?;
    let referrer = opt_field("the referrer", spec.referrer.as_deref(), 200)?;
    let campaign = opt_field("the campaign", spec.campaign.as_deref(), 200)?;
    let attr = match spec.attr.as_deref() {
        None => None,
        Some(a) => {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| invalid(format!("an attribute is key=value, not {a:?}")))?;
            Some((
                text_field("the attribute's key", k, 64, false)?,
                text_field("the attribute's value", v, 200, false)?,
            ))
        }
    };
    let site_secs = secs("time on the site", spec.site_secs)?;
    let page_secs = secs("time on the page", spec.page_secs)?;
    let have = rules(conn, Some(site.id))?;
    if have.len() >= MAX_RULES {
        return Err(invalid(format!(
            "a site may have at most {MAX_RULES} invitation rules"
        )));
    }
    if have
        .iter()
        .any(|r| r.name.to_lowercase() == name.to_lowercase())
    {
        return Err(invalid(format!(
            "the site already has a rule named {name:?}"
        )));
    }
    let (attr_key, attr_value) = attr.clone().unzip();
    let row = conn
        .query_opt(
            "INSERT INTO invite_rules (site_id, name, text, url_pattern, site_secs, page_secs, \
             returning_visitor, referrer, campaign, attr_key, attr_value, enabled, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12) RETURNING id",
            &args![
                site.id,
                &name,
                &text,
                url.clone(),
                site_secs,
                page_secs,
                spec.returning.map(i64::from),
                referrer.clone(),
                campaign.clone(),
                attr_key,
                attr_value,
                now_ms()
            ],
        )?
        .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
    Ok(Rule {
        id: row.get(0)?,
        site: site.id,
        name,
        text,
        url,
        site_secs,
        page_secs,
        returning: spec.returning,
        referrer,
        campaign,
        attr,
        enabled: true,
    })
}

/// The rule `name` of site `key`.
fn rule_named(conn: &dyn Db, key: &str, name: &str) -> Result<Rule, AdminError> {
    let site = reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))?;
    rules(conn, Some(site.id))?
        .into_iter()
        .find(|r| r.name.to_lowercase() == name.trim().to_lowercase())
        .ok_or_else(|| invalid(format!("site {key} has no invitation rule named {name:?}")))
}

/// Remove a rule. Its invitations stay, so history still says what the
/// visitor was invited with.
pub fn remove_rule(conn: &dyn Db, key: &str, name: &str) -> Result<Rule, AdminError> {
    let r = rule_named(conn, key, name)?;
    conn.execute("DELETE FROM invite_rules WHERE id = ?1", &args![r.id])?;
    Ok(r)
}

/// Switch a rule on or off without losing it or its counts.
pub fn set_enabled(conn: &dyn Db, key: &str, name: &str, on: bool) -> Result<Rule, AdminError> {
    let mut r = rule_named(conn, key, name)?;
    conn.execute(
        "UPDATE invite_rules SET enabled = ?2 WHERE id = ?1",
        &args![r.id, on],
    )?;
    r.enabled = on;
    Ok(r)
}

/// Every rule of `site` (of every site with `None`), in the order they
/// were added, which is the order they are tried in.
pub fn rules(conn: &dyn Db, site: Option<SiteId>) -> Result<Vec<Rule>, StoreError> {
    const COLS: &str = "id, site_id, name, text, url_pattern, site_secs, page_secs, returning_visitor, \
                        referrer, campaign, attr_key, attr_value, enabled";
    let rows = match site {
        Some(s) => conn.query_rows(
            &format!("SELECT {COLS} FROM invite_rules WHERE site_id = ?1 ORDER BY id"),
            &args![s],
        )?,
        None => conn.query_rows(
            &format!("SELECT {COLS} FROM invite_rules ORDER BY site_id, id"),
            &args![],
        )?,
    };
    rows.iter().map(rule_row).collect()
}

fn rule_row(r: &Row) -> Result<Rule, StoreError> {
    let secs = |i| -> Result<Option<u32>, StoreError> {
        let v: Option<i64> = r.get(i)?;
        Ok(v.and_then(|v| u32::try_from(v).ok()))
    };
    let returning: Option<i64> = r.get(7)?;
    let attr_key: Option<String> = r.get(10)?;
    let attr_value: Option<String> = r.get(11)?;
    Ok(Rule {
        id: r.get(0)?,
        site: r.get(1)?,
        name: r.get(2)?,
        text: r.get(3)?,
        url: r.get(4)?,
        site_secs: secs(5)?,
        page_secs: secs(6)?,
        returning: returning.map(|v| v == 1),
        referrer: r.get(8)?,
        campaign: r.get(9)?,
        attr: attr_key.zip(attr_value),
        enabled: r.get(12)?,
    })
}

/// How the rule `rule` has done, as of `now`.
pub fn counts(conn: &dyn Db, rule: i64, now: i64) -> Result<Counts, StoreError> {
    let row = conn
        .query_opt(
            "SELECT COUNT(*), \
               COUNT(shown_ms), \
               COUNT(accepted_ms), \
               COALESCE(SUM(CASE WHEN shown_ms IS NOT NULL AND accepted_ms IS NULL \
                 AND (dismissed_ms IS NOT NULL OR shown_ms < ?2) THEN 1 ELSE 0 END), 0) \
             FROM invitations WHERE rule_id = ?1",
            &args![rule, now - VISIT_GAP_MS],
        )?
        .ok_or_else(|| StoreError::Corrupt("a count returned no row".into()))?;
    Ok(Counts {
        fired: row.get(0)?,
        shown: row.get(1)?,
        accepted: row.get(2)?,
        ignored: row.get(3)?,
    })
}
