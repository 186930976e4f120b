//! Invitation rules as the CLI manages them, and the counts an admin reads:
//! how many invitations each rule sent, and how many were shown, accepted
//! and ignored.

use holdfast_protocol::agent::{InviteCounts, InviteRule, InviteRuleSpec, Role, SiteId};

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

/// A spec that passed [`check`], ready to store.
struct Checked {
    name: String,
    text: String,
    url: Option<String>,
    site_secs: Option<u32>,
    page_secs: Option<u32>,
    referrer: Option<String>,
    campaign: Option<String>,
    attr: Option<(String, String)>,
}

/// The checks a rule passes to be stored for `site`, from the CLI and
/// from an admin's app alike, so both refuse the same things in the same
/// words. `replacing` is the rule an edit replaces: it keeps its place
/// under [`MAX_RULES`] and may keep its own name.
fn check(
    conn: &dyn Db,
    site: SiteId,
    spec: &RuleSpec,
    replacing: Option<i64>,
) -> Result<Checked, AdminError> {
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
    let have = rules(conn, Some(site))?;
    if replacing.is_none() && have.len() >= MAX_RULES {
        return Err(invalid(format!(
            "a site may have at most {MAX_RULES} invitation rules"
        )));
    }
    if have
        .iter()
        .filter(|r| Some(r.id) != replacing)
        .any(|r| r.name.to_lowercase() == name.to_lowercase())
    {
        return Err(invalid(format!(
            "the site already has a rule named {name:?}"
        )));
    }
    Ok(Checked {
        name,
        text,
        url,
        site_secs,
        page_secs,
        referrer,
        campaign,
        attr,
    })
}

/// Add a rule to the site `key`, enabled.
pub fn add_rule(conn: &dyn Db, key: &str, spec: &RuleSpec) -> Result<Rule, AdminError> {
    let site = reads::site_by_key(conn, key)?.ok_or_else(|| AdminError::NoSite(key.into()))?;
    add_rule_to(conn, site.id, spec)
}

/// Add a rule to `site`, enabled: [`add_rule`] for a caller that knows
/// the site by id (an admin's command).
pub fn add_rule_to(conn: &dyn Db, site: SiteId, spec: &RuleSpec) -> Result<Rule, AdminError> {
    let c = check(conn, site, spec, None)?;
    let (attr_key, attr_value) = c.attr.clone().unzip();
    let row = conn
        .query_opt(
            "INSERT INTO invite_rules (site_id, name, text, url_pattern, site_secs, page_secs, \
             returning_visitor, referrer, campaign, attr_key, attr_value, enabled, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, ?12) RETURNING id",
            &args![
                site,
                &c.name,
                &c.text,
                c.url.clone(),
                c.site_secs,
                c.page_secs,
                spec.returning.map(i64::from),
                c.referrer.clone(),
                c.campaign.clone(),
                attr_key,
                attr_value,
                now_ms()
            ],
        )?
        .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?;
    Ok(Rule {
        id: row.get(0)?,
        site,
        name: c.name,
        text: c.text,
        url: c.url,
        site_secs: c.site_secs,
        page_secs: c.page_secs,
        returning: spec.returning,
        referrer: c.referrer,
        campaign: c.campaign,
        attr: c.attr,
        enabled: true,
    })
}

/// Rule `id` of `site`, if it has one: another site's rule is `None`, so
/// ids cannot be probed across sites.
pub fn rule_of(conn: &dyn Db, site: SiteId, id: i64) -> Result<Option<Rule>, StoreError> {
    Ok(rules(conn, Some(site))?.into_iter().find(|r| r.id == id))
}

/// Replace what rule `old` says and whom it invites, keeping its id, its
/// on/off and its invitations (so its counts go on).
pub fn update_rule(conn: &dyn Db, old: &Rule, spec: &RuleSpec) -> Result<Rule, AdminError> {
    let c = check(conn, old.site, spec, Some(old.id))?;
    let (attr_key, attr_value) = c.attr.clone().unzip();
    conn.execute(
        "UPDATE invite_rules SET name = ?2, text = ?3, url_pattern = ?4, site_secs = ?5, \
         page_secs = ?6, returning_visitor = ?7, referrer = ?8, campaign = ?9, attr_key = ?10, \
         attr_value = ?11 WHERE id = ?1",
        &args![
            old.id,
            &c.name,
            &c.text,
            c.url.clone(),
            c.site_secs,
            c.page_secs,
            spec.returning.map(i64::from),
            c.referrer.clone(),
            c.campaign.clone(),
            attr_key,
            attr_value
        ],
    )?;
    Ok(Rule {
        id: old.id,
        site: old.site,
        name: c.name,
        text: c.text,
        url: c.url,
        site_secs: c.site_secs,
        page_secs: c.page_secs,
        returning: spec.returning,
        referrer: c.referrer,
        campaign: c.campaign,
        attr: c.attr,
        enabled: old.enabled,
    })
}

/// Remove rule `id` (its invitations stay, as with [`remove_rule`]).
pub fn delete_rule(conn: &dyn Db, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM invite_rules WHERE id = ?1", &args![id])?;
    Ok(())
}

/// Switch rule `id` on or off (as [`set_enabled`]).
pub fn enable_rule(conn: &dyn Db, id: i64, on: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE invite_rules SET enabled = ?2 WHERE id = ?1",
        &args![id, on],
    )?;
    Ok(())
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
    delete_rule(conn, r.id)?;
    Ok(r)
}

/// Switch a rule on or off without losing it or its counts.
pub fn set_enabled(conn: &dyn Db, key: &str, name: &str, on: bool) -> Result<Rule, AdminError> {
    let mut r = rule_named(conn, key, name)?;
    enable_rule(conn, r.id, on)?;
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

impl From<&InviteRuleSpec> for RuleSpec {
    fn from(s: &InviteRuleSpec) -> Self {
        RuleSpec {
            name: s.name.clone(),
            text: s.text.clone(),
            url: s.url.clone(),
            site_secs: s.site_secs,
            page_secs: s.page_secs,
            returning: s.returning,
            referrer: s.referrer.clone(),
            campaign: s.campaign.clone(),
            attr: s.attr.clone(),
        }
    }
}

/// A stored rule as an admin's app sees it, with its counts.
pub fn wire(r: Rule, counts: Counts) -> InviteRule {
    InviteRule {
        id: u64::try_from(r.id).unwrap_or_default(),
        rule: InviteRuleSpec {
            name: r.name,
            text: r.text,
            url: r.url,
            site_secs: r.site_secs,
            page_secs: r.page_secs,
            returning: r.returning,
            referrer: r.referrer,
            campaign: r.campaign,
            attr: r.attr.map(|(k, v)| format!("{k}={v}")),
        },
        enabled: r.enabled,
        counts: InviteCounts {
            fired: counts.fired,
            shown: counts.shown,
            accepted: counts.accepted,
            ignored: counts.ignored,
        },
    }
}

/// `site`'s rules in the order they are tried, each with its counts as of
/// `now`: what `Query::InviteRules` answers and `LiveEvent::InviteRules`
/// carries. At most [`MAX_RULES`] small count queries.
pub fn for_admin(conn: &dyn Db, site: SiteId, now: i64) -> Result<Vec<InviteRule>, StoreError> {
    rules(conn, Some(site))?
        .into_iter()
        .map(|r| {
            let c = counts(conn, r.id, now)?;
            Ok(wire(r, c))
        })
        .collect()
}

/// [`for_admin`] for agent `agent` of `site` if it is an admin now (the
/// role as stored, not as it was at sign-in); `None` for anyone else.
pub fn for_admin_agent(
    conn: &dyn Db,
    site: SiteId,
    agent: holdfast_protocol::agent::AgentId,
) -> Result<Option<Vec<InviteRule>>, StoreError> {
    match reads::agent_by_id(conn, agent)? {
        Some(a) if a.site == site && a.role == Role::Admin && !a.disabled => {
            Ok(Some(for_admin(conn, site, now_ms())?))
        }
        _ => Ok(None),
    }
}
