//! The lists admins change from the CLI while agents are signed in: canned
//! replies (`holdfast-server canned import`), a site's tags
//! (`holdfast-server site tags`) and its invitation rules
//! (`holdfast-server invite-rule`). The CLI writes the store directly, on a
//! machine where no node may be running, so it cannot tell the nodes; a
//! change made through an agent's command is announced by the writer
//! instead. [`watch`] reads a small fingerprint of each list once a second
//! and tells the agents whose list it saw change, the way `groups::watch`
//! does for groups. A change announced twice (by the writer and here) only
//! makes a connection read its list once more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use holdfast_protocol::agent::{AgentId, SiteId};

use crate::Ctx;
use crate::store::StoreError;
use crate::store::reads::{self, u64_col};
use crate::store::sql::{Db, args};

/// How often the lists are looked at: a second, as for groups and hours.
const EVERY: Duration = Duration::from_secs(1);

/// What is compared, per list: enough that an import, a delete or an edit
/// in place (same id, new text) changes it, and small enough to read for
/// every site each second.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lists {
    /// (site, owner: 0 for the site's list) → (count, newest update, sum of
    /// ids, bytes of shortcuts and bodies).
    canned: HashMap<(SiteId, AgentId), (i64, i64, i64, i64)>,
    /// Each site's tags as stored.
    tags: HashMap<SiteId, Vec<String>>,
    /// site → (count, sum of ids, rules on, bytes of names, texts and
    /// patterns): what the CLI can change (add, remove, on/off). An edit
    /// from the app is announced by the writer, on every node.
    invite: HashMap<SiteId, (i64, i64, i64, i64)>,
}

/// The lists' fingerprints as stored now.
pub fn read(conn: &dyn Db) -> Result<Lists, StoreError> {
    let mut canned = HashMap::new();
    // SUM over integers is NUMERIC on PostgreSQL; the casts keep both
    // engines' answers plain 64-bit integers.
    for r in conn.query_rows(
        "SELECT site_id, owner_id, COUNT(*), CAST(MAX(updated_ms) AS BIGINT), \
         CAST(SUM(id) AS BIGINT), \
         CAST(SUM(LENGTH(shortcut) + LENGTH(body)) AS BIGINT) \
         FROM canned_replies GROUP BY site_id, owner_id",
        &args![],
    )? {
        canned.insert(
            (u64_col(&r, 0)?, u64_col(&r, 1)?),
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        );
    }
    let tags = reads::list_sites(conn)?
        .into_iter()
        .map(|s| (s.id, s.tags))
        .collect();
    let mut invite = HashMap::new();
    for r in conn.query_rows(
        "SELECT site_id, COUNT(*), CAST(SUM(id) AS BIGINT), \
         CAST(SUM(enabled) AS BIGINT), \
         CAST(SUM(LENGTH(name) + LENGTH(text) + COALESCE(LENGTH(url_pattern), 0)) AS BIGINT) \
         FROM invite_rules GROUP BY site_id",
        &args![],
    )? {
        invite.insert(
            u64_col(&r, 0)?,
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
        );
    }
    Ok(Lists {
        canned,
        tags,
        invite,
    })
}

/// What changed between two reads.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Canned lists as (site, owner), owner `None` for a site's own list.
    pub canned: Vec<(SiteId, Option<AgentId>)>,
    /// Sites whose tags changed, with their new tags.
    pub tags: Vec<(SiteId, Vec<String>)>,
    /// Sites whose invitation rules changed.
    pub invite: Vec<SiteId>,
}

/// What changed from `old` to `new`.
pub fn changes(old: &Lists, new: &Lists) -> Changes {
    let mut canned: Vec<_> = old
        .canned
        .keys()
        .chain(new.canned.keys())
        .filter(|k| old.canned.get(k) != new.canned.get(k))
        .map(|&(site, owner)| (site, (owner != 0).then_some(owner)))
        .collect();
    canned.sort_unstable();
    canned.dedup();
    let mut tags: Vec<_> = new
        .tags
        .iter()
        .filter(|(site, t)| old.tags.get(site) != Some(t))
        .map(|(site, t)| (*site, t.clone()))
        .collect();
    tags.sort_unstable();
    let mut invite: Vec<_> = old
        .invite
        .keys()
        .chain(new.invite.keys())
        .filter(|k| old.invite.get(k) != new.invite.get(k))
        .copied()
        .collect();
    invite.sort_unstable();
    invite.dedup();
    Changes {
        canned,
        tags,
        invite,
    }
}

pub async fn watch(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Lists> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = match ctx.reads.run(read).await {
            Ok(l) => l,
            Err(e) => {
                // Once per outage, as the agent change feed does.
                if !failing {
                    tracing::warn!("cannot read canned replies and tags (until it is back): {e}");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        // The first read is the baseline: agents signing in get the lists
        // whole at login, so nothing before it needs telling.
        if let Some(old) = &last {
            let Changes {
                canned,
                tags,
                invite,
            } = changes(old, &now);
            for site in invite {
                ctx.hub.invite_rules_changed(site);
            }
            for (site, owner) in canned {
                ctx.hub.canned_changed(site, owner);
            }
            for (site, tags) in tags {
                ctx.hub.site_tags_changed(site, tags);
            }
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_changes_name_what_moved_and_only_that() {
        let mut a = Lists::default();
        a.canned.insert((1, 0), (2, 10, 3, 40));
        a.canned.insert((1, 7), (1, 10, 4, 20));
        a.canned.insert((2, 0), (1, 5, 9, 8));
        a.tags.insert(1, vec!["billing".into()]);
        a.tags.insert(2, vec![]);
        assert_eq!(changes(&a, &a), Changes::default());

        let mut b = a.clone();
        // Same count and time, one body edited to another length.
        b.canned.insert((1, 0), (2, 10, 3, 41));
        // Agent 7's whole list deleted; a list for agent 8 appears.
        b.canned.remove(&(1, 7));
        b.canned.insert((2, 8), (1, 11, 12, 5));
        b.tags.insert(2, vec!["refund".into()]);
        a.invite.insert(1, (2, 3, 2, 40));
        a.invite.insert(2, (1, 4, 1, 20));
        // Site 1: a rule switched off; site 3: its first rule.
        b.invite.insert(1, (2, 3, 1, 40));
        b.invite.insert(2, (1, 4, 1, 20));
        b.invite.insert(3, (1, 9, 1, 12));
        assert_eq!(
            changes(&a, &b),
            Changes {
                canned: vec![(1, None), (1, Some(7)), (2, Some(8))],
                tags: vec![(2, vec!["refund".to_string()])],
                invite: vec![1, 3],
            }
        );
    }
}
