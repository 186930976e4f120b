//! Site groups (departments, issue 17; PROTOCOL.md 10.23): a site's agents
//! belong to any number of groups, a visitor's chat may be for one, and a
//! chat for a group is offered to and auto-assigned within it.
//!
//! The store holds the groups, their members and their hours; the chat
//! rules read them inside the writer's transaction, so routing is decided
//! on what is committed, on every node. [`watch`] reads them once a second
//! and gives the hub what it needs for signals (which groups are open and
//! who is in them), the way `hours::watch` does for the sites: a change
//! made through the CLI, or through another node, reaches every node's
//! agents and visitors within a second, with no message to lose.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_protocol::agent::{AgentId, GroupInfo, SiteId};

use crate::Ctx;
use crate::admin::AdminError;
use crate::hours::Hours;
use crate::store::reads::{self, u64_col};
use crate::store::sql::{Db, args, transaction};
use crate::store::{Op, StoreError, now_ms};

/// The most groups a site may have: a list a visitor picks from at a
/// glance, and one that fits a frame with room to spare.
pub const MAX_GROUPS: usize = 50;
/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 80;

/// A group as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: u64,
    pub site: SiteId,
    pub key: String,
    pub name: String,
    /// Its own business hours (time zone, weekly ranges, holidays);
    /// `None`: the site's apply.
    pub hours: Option<(String, String, String)>,
    /// Its members' agent ids, ascending.
    pub members: Vec<AgentId>,
}

/// A group key as the widget and the store have it: 1 to 64 of letters,
/// digits, `-`, `_` or `.`, in lower case (so `Billing` and `billing` are
/// one group, whatever a page writes).
pub fn normalize_key(key: &str) -> Option<String> {
    let k = key.trim();
    (!k.is_empty()
        && k.len() <= 64
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    .then(|| k.to_ascii_lowercase())
}

fn valid_key(key: &str) -> Result<String, AdminError> {
    normalize_key(key).ok_or_else(|| {
        AdminError::Invalid(format!(
            "a group key must be 1-64 characters of letters, digits, '-', '_' or '.', not {key:?}"
        ))
    })
}

fn valid_name(name: &str) -> Result<String, AdminError> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "a group name must be 1 to {MAX_NAME_CHARS} characters without line breaks, not {name:?}"
        )));
    }
    Ok(n.to_owned())
}

const GROUP_SELECT: &str = "SELECT id, site_id, key, name, hours_tz, hours_week, COALESCE(hours_holidays, '') FROM site_groups";

fn read_groups(
    conn: &dyn Db,
    filter: &str,
    a: &[crate::store::sql::Value],
) -> Result<Vec<Group>, StoreError> {
    let mut groups: Vec<Group> = conn
        .query_rows(&format!("{GROUP_SELECT} {filter} ORDER BY site_id, key"), a)?
        .iter()
        .map(|r| {
            let tz: Option<String> = r.get(4)?;
            let week: Option<String> = r.get(5)?;
            Ok(Group {
                id: u64_col(r, 0)?,
                site: u64_col(r, 1)?,
                key: r.get(2)?,
                name: r.get(3)?,
                hours: match (tz, week) {
                    (Some(t), Some(w)) => Some((t, w, r.get(6)?)),
                    _ => None,
                },
                members: Vec::new(),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let by_id: HashMap<u64, usize> = groups.iter().enumerate().map(|(i, g)| (g.id, i)).collect();
    let members = conn.query_rows(
        &format!(
            "SELECT m.group_id, m.agent_id FROM group_members m JOIN site_groups g ON g.id = m.group_id \
             {} ORDER BY m.group_id, m.agent_id",
            filter.replace("site_id", "g.site_id")
        ),
        a,
    )?;
    for r in &members {
        if let Some(&i) = by_id.get(&u64_col(r, 0)?) {
            groups[i].members.push(u64_col(r, 1)?);
        }
    }
    Ok(groups)
}

/// The site's groups, by key, with their members.
pub fn list(conn: &dyn Db, site: SiteId) -> Result<Vec<Group>, StoreError> {
    read_groups(conn, "WHERE site_id = ?1", &args![site])
}

/// Every site's groups.
pub fn list_all(conn: &dyn Db) -> Result<Vec<Group>, StoreError> {
    read_groups(conn, "", &[])
}

/// The site's group `key` (normalized), if it has one.
pub fn by_key(conn: &dyn Db, site: SiteId, key: &str) -> Result<Option<Group>, StoreError> {
    let Some(key) = normalize_key(key) else {
        return Ok(None);
    };
    Ok(
        read_groups(conn, "WHERE site_id = ?1 AND key = ?2", &args![site, &key])?
            .into_iter()
            .next(),
    )
}

/// Sites that offer visitors a choice of group.
fn choice_sites(conn: &dyn Db) -> Result<HashSet<SiteId>, StoreError> {
    conn.query_rows("SELECT id FROM sites WHERE group_choice <> 0", &args![])?
        .iter()
        .map(|r| u64_col(r, 0))
        .collect()
}

// ------------------------------------------------------------------ admin

fn site_id(conn: &dyn Db, site_key: &str) -> Result<SiteId, AdminError> {
    Ok(reads::site_by_key(conn, site_key)?
        .ok_or_else(|| AdminError::NoSite(site_key.into()))?
        .id)
}

fn existing(conn: &dyn Db, site_key: &str, key: &str) -> Result<Group, AdminError> {
    let site = site_id(conn, site_key)?;
    let key = valid_key(key)?;
    by_key(conn, site, &key)?
        .ok_or_else(|| AdminError::Invalid(format!("site {site_key:?} has no group {key:?}")))
}

/// `group add`: a new group of the site.
pub fn add(conn: &dyn Db, site_key: &str, key: &str, name: &str) -> Result<Group, AdminError> {
    let key = valid_key(key)?;
    let name = valid_name(name)?;
    transaction(conn, |conn| {
        let site = site_id(conn, site_key)?;
        let groups = list(conn, site)?;
        if groups.iter().any(|g| g.key == key) {
            return Err(AdminError::Invalid(format!(
                "site {site_key:?} already has a group {key:?}"
            )));
        }
        if groups.len() >= MAX_GROUPS {
            return Err(AdminError::Invalid(format!(
                "a site may have at most {MAX_GROUPS} groups"
            )));
        }
        conn.execute(
            "INSERT INTO site_groups (site_id, key, name, created_ms) VALUES (?1, ?2, ?3, ?4)",
            &args![site, &key, &name, now_ms()],
        )?;
        existing(conn, site_key, &key)
    })
}

/// `group rename`: a new display name.
pub fn rename(conn: &dyn Db, site_key: &str, key: &str, name: &str) -> Result<Group, AdminError> {
    let name = valid_name(name)?;
    let g = existing(conn, site_key, key)?;
    conn.execute(
        "UPDATE site_groups SET name = ?2 WHERE id = ?1",
        &args![g.id, &name],
    )?;
    existing(conn, site_key, key)
}

/// `group remove`: the group and its memberships go. Its open chats are
/// not stranded: each server puts them back in the site-wide queue (and
/// tells the agents) within a second, or at its next start.
pub fn remove(conn: &dyn Db, site_key: &str, key: &str) -> Result<(), AdminError> {
    transaction(conn, |conn| {
        let g = existing(conn, site_key, key)?;
        conn.execute(
            "DELETE FROM group_members WHERE group_id = ?1",
            &args![g.id],
        )?;
        conn.execute("DELETE FROM site_groups WHERE id = ?1", &args![g.id])?;
        Ok(())
    })
}

/// `group members`: add and remove agents (by username, of the site).
pub fn members(
    conn: &dyn Db,
    site_key: &str,
    key: &str,
    add: &[String],
    remove: &[String],
) -> Result<Group, AdminError> {
    transaction(conn, |conn| {
        let g = existing(conn, site_key, key)?;
        let agent = |user: &str| -> Result<AgentId, AdminError> {
            let a = reads::agent_by_username(conn, user.trim())?
                .ok_or_else(|| AdminError::NoAgent(user.trim().into()))?;
            if a.site != g.site {
                return Err(AdminError::Invalid(format!(
                    "{user} is an agent of another site, not of {site_key}"
                )));
            }
            Ok(a.id)
        };
        for u in add {
            let a = agent(u)?;
            conn.execute(
                "INSERT INTO group_members (group_id, agent_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                &args![g.id, a],
            )?;
        }
        for u in remove {
            let a = agent(u)?;
            conn.execute(
                "DELETE FROM group_members WHERE group_id = ?1 AND agent_id = ?2",
                &args![g.id, a],
            )?;
        }
        existing(conn, site_key, key)
    })
}

/// `group hours`: the group's own business hours (checked as the site's
/// are), or with `None` the site's again.
pub fn set_hours(
    conn: &dyn Db,
    site_key: &str,
    key: &str,
    hours: Option<(&str, &str, &str)>,
) -> Result<Group, AdminError> {
    if let Some((tz, week, holidays)) = hours {
        Hours::parse(tz, week, holidays).map_err(AdminError::Invalid)?;
    }
    let g = existing(conn, site_key, key)?;
    let (tz, week, holidays) = match hours {
        Some((t, w, h)) => (Some(t.trim()), Some(w.trim()), Some(h.trim())),
        None => (None, None, None),
    };
    conn.execute(
        "UPDATE site_groups SET hours_tz = ?2, hours_week = ?3, hours_holidays = ?4 WHERE id = ?1",
        &args![g.id, tz, week, holidays],
    )?;
    existing(conn, site_key, key)
}

/// `group choice`: whether the widget offers the site's groups to choose
/// from before the first message, on pages that name none.
pub fn set_choice(conn: &dyn Db, site_key: &str, on: bool) -> Result<(), AdminError> {
    let n = conn.execute(
        "UPDATE sites SET group_choice = ?2 WHERE key = ?1",
        &args![site_key, i64::from(on)],
    )?;
    if n == 0 {
        return Err(AdminError::NoSite(site_key.into()));
    }
    Ok(())
}

/// Whether the site offers a choice.
pub fn choice(conn: &dyn Db, site_key: &str) -> Result<bool, AdminError> {
    let site = site_id(conn, site_key)?;
    Ok(choice_sites(conn)?.contains(&site))
}

// ------------------------------------------------------------------- live

/// A group as the hub needs it for signals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveGroup {
    pub key: String,
    pub name: String,
    pub members: BTreeSet<AgentId>,
    /// Within its own hours now; `None` without hours of its own.
    pub open: Option<bool>,
}

/// A site's groups now, by key, and whether its visitors get a choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteGroups {
    pub choice: bool,
    pub groups: Vec<LiveGroup>,
}

impl SiteGroups {
    pub fn get(&self, key: &str) -> Option<&LiveGroup> {
        self.groups.iter().find(|g| g.key == key)
    }

    /// The list as `agent` gets it: with its memberships.
    pub fn for_agent(&self, agent: AgentId) -> Vec<GroupInfo> {
        self.groups
            .iter()
            .map(|g| GroupInfo {
                key: g.key.clone(),
                name: g.name.clone(),
                member: g.members.contains(&agent),
                open: g.open,
            })
            .collect()
    }

    /// Whether the keys or the members differ (and so routing might):
    /// waiting chats may now have someone to go to.
    pub fn routing_differs(&self, other: &SiteGroups) -> bool {
        self.groups.len() != other.groups.len()
            || self
                .groups
                .iter()
                .zip(&other.groups)
                .any(|(a, b)| a.key != b.key || a.members != b.members)
    }
}

/// The parsed hours of each group, kept while their text is unchanged.
#[derive(Debug, Default)]
pub struct HoursCache(HashMap<u64, (String, Option<Hours>)>);

impl HoursCache {
    fn open(&mut self, g: &Group, now: i64) -> Option<bool> {
        let (tz, week, holidays) = g.hours.as_ref()?;
        let text = format!("{tz}\n{week}\n{holidays}");
        let entry = self.0.entry(g.id).or_insert_with(|| (String::new(), None));
        if entry.0 != text {
            // The CLI checks hours; a row edited by hand that does not
            // parse leaves the group on the site's hours, loudly.
            entry.1 = Hours::parse(tz, week, holidays)
                .inspect_err(|e| tracing::warn!(group = g.key, "group hours ignored: {e}"))
                .ok();
            entry.0 = text;
        }
        entry.1.as_ref().map(|h| h.is_open(now))
    }
}

/// Every site's groups as the hub needs them, from the store.
pub fn load_all(
    conn: &dyn Db,
    cache: &mut HoursCache,
    now: i64,
) -> Result<HashMap<SiteId, SiteGroups>, StoreError> {
    let mut out: HashMap<SiteId, SiteGroups> = HashMap::new();
    for site in choice_sites(conn)? {
        out.entry(site).or_default().choice = true;
    }
    let all = list_all(conn)?;
    let ids: HashSet<u64> = all.iter().map(|g| g.id).collect();
    cache.0.retain(|id, _| ids.contains(id));
    for g in all {
        let open = cache.open(&g, now);
        out.entry(g.site).or_default().groups.push(LiveGroup {
            key: g.key,
            name: g.name,
            members: g.members.into_iter().collect(),
            open,
        });
    }
    Ok(out)
}

/// One site's groups, for an agent's login.
pub fn load_site(conn: &dyn Db, site: SiteId, now: i64) -> Result<SiteGroups, StoreError> {
    let mut cache = HoursCache::default();
    let choice = choice_sites(conn)?.contains(&site);
    let groups = list(conn, site)?
        .into_iter()
        .map(|g| {
            let open = cache.open(&g, now);
            LiveGroup {
                key: g.key,
                name: g.name,
                members: g.members.into_iter().collect(),
                open,
            }
        })
        .collect();
    Ok(SiteGroups { choice, groups })
}

/// Sites with open chats for a group they no longer have.
pub fn orphaned_sites(conn: &dyn Db) -> Result<Vec<SiteId>, StoreError> {
    conn.query_rows(
        "SELECT DISTINCT c.site_id FROM conversations c WHERE c.group_key IS NOT NULL AND c.state <> 2 \
         AND NOT EXISTS (SELECT 1 FROM site_groups g WHERE g.site_id = c.site_id AND g.key = c.group_key)",
        &args![],
    )?
    .iter()
    .map(|r| u64_col(r, 0))
    .collect()
}

/// Logs a hello's unknown group key once per site and key (up to a bound,
/// so a page inventing keys cannot grow it without limit): a typo in a
/// `data-group` is worth one line, not one per visitor.
pub fn unknown_key(site: SiteId, key: &str) {
    static SEEN: Mutex<Option<HashSet<(SiteId, String)>>> = Mutex::new(None);
    let Ok(mut seen) = SEEN.lock() else { return };
    let seen = seen.get_or_insert_with(HashSet::new);
    if seen.len() < 1_000 && seen.insert((site, key.to_owned())) {
        tracing::warn!(
            site,
            group = key,
            "a widget names a group the site does not have; its visitors chat with the whole site"
        );
    }
}

/// Reads every site's groups once a second and gives them to the hub.
/// Where a site's groups or members changed, waiting chats may have
/// someone new to go to; where a group went, its open chats go back to
/// the site-wide queue (checked at start too, for a group removed while
/// no server ran).
pub async fn watch(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cache = Arc::new(Mutex::new(HoursCache::default()));
    let mut last: Option<HashMap<SiteId, SiteGroups>> = None;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let c = cache.clone();
        let check_orphans = last.is_none();
        let read = ctx
            .reads
            .run(move |conn| {
                let mut cache = c
                    .lock()
                    .map_err(|_| StoreError::Corrupt("hours cache".into()))?;
                let now = now_ms();
                let groups = load_all(conn, &mut cache, now)?;
                let orphans = if check_orphans {
                    orphaned_sites(conn)?
                } else {
                    Vec::new()
                };
                Ok((groups, orphans))
            })
            .await;
        let (groups, mut orphans) = match read {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("reading the groups failed: {e}");
                continue;
            }
        };
        let mut reroute = Vec::new();
        if let Some(prev) = &last {
            let empty = SiteGroups::default();
            let sites: HashSet<SiteId> = prev.keys().chain(groups.keys()).copied().collect();
            for site in sites {
                let (a, b) = (
                    prev.get(&site).unwrap_or(&empty),
                    groups.get(&site).unwrap_or(&empty),
                );
                if a.routing_differs(b) {
                    reroute.push(site);
                    if a.groups.iter().any(|g| b.get(&g.key).is_none()) {
                        orphans.push(site);
                    }
                }
            }
        }
        ctx.hub.set_groups(groups.clone());
        last = Some(groups);
        for site in orphans {
            // Puts the chats back and hands out the queue.
            let _queued = ctx.writer.try_submit(Op::Regroup { site });
        }
        for site in reroute {
            let _queued = ctx.writer.try_submit(Op::AssignQueued { site });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_short_plain_and_lower_case() {
        assert_eq!(normalize_key(" Billing "), Some("billing".into()));
        assert_eq!(
            normalize_key("after-sales_2.eu"),
            Some("after-sales_2.eu".into())
        );
        assert_eq!(normalize_key(""), None);
        assert_eq!(normalize_key("<b>x</b>"), None);
        assert_eq!(normalize_key("a b"), None);
        assert_eq!(normalize_key(&"x".repeat(65)), None);
        assert!(valid_name("  Billing & Refunds ").is_ok());
        assert!(valid_name("two\nlines").is_err());
        assert!(valid_name(&"n".repeat(81)).is_err());
    }
}
