//! Canned replies (issue 17, PROTOCOL.md 10.21): texts an agent sends
//! often, found by a shortcut. Two kinds of list: the site's, which its
//! admins manage and all its agents use, and each agent's own.
//!
//! - here: the limits and checks both ways in share (the writer's
//!   `SaveCanned`/`DeleteCanned` rule in `store::rules::canned`, and the
//!   CLI's import), and the store's reads and writes of the table;
//! - [`csv`]: the small RFC 4180 reader and writer of the CLI's files;
//! - [`admin`]: `holdfast-server canned export` and `import`.
//!
//! The lists are data, kept like tags and rules, not in any agent's event
//! log: after a change each connection that uses the list reads it again
//! and gets it whole (`LiveEvent::Canned`).

pub mod admin;
pub mod csv;

use holdfast_protocol::agent::{AgentId, CannedReply, SiteId};

use crate::store::StoreError;
use crate::store::sql::{Db, Dialect, Row, args};

/// The most replies in a site's list.
pub const MAX_SITE: usize = 200;
/// The most replies in one agent's own list.
pub const MAX_PERSONAL: usize = 100;
/// The longest shortcut, in characters.
pub const MAX_SHORTCUT_CHARS: usize = 32;
/// The longest body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 4000;
/// The most bytes of shortcuts and bodies in a site's list. An agent gets
/// the site's list and its own in one `LiveEvent::Canned`, one frame of at
/// most 1 MiB; 200 + 100 replies of 4,000 bytes would be 1.2 MB and could
/// never be sent. With these two budgets a full list is at most 768 KiB of
/// text plus about 30 bytes of framing per reply.
pub const MAX_SITE_BYTES: usize = 512 * 1024;
/// As [`MAX_SITE_BYTES`], for one agent's own list.
pub const MAX_PERSONAL_BYTES: usize = 256 * 1024;

/// Whose list a reply is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The site's, shared by its agents.
    Site,
    /// One agent's own.
    Agent(AgentId),
}

impl Owner {
    /// As stored: 0 for the site's list.
    fn column(self) -> u64 {
        match self {
            Owner::Site => 0,
            Owner::Agent(a) => a,
        }
    }

    fn from_column(v: u64) -> Self {
        match v {
            0 => Owner::Site,
            a => Owner::Agent(a),
        }
    }

    /// The most replies the list may hold.
    #[must_use]
    pub fn max_replies(self) -> usize {
        match self {
            Owner::Site => MAX_SITE,
            Owner::Agent(_) => MAX_PERSONAL,
        }
    }

    /// The most bytes of shortcuts and bodies the list may hold.
    #[must_use]
    pub fn max_bytes(self) -> usize {
        match self {
            Owner::Site => MAX_SITE_BYTES,
            Owner::Agent(_) => MAX_PERSONAL_BYTES,
        }
    }

    /// The list's name in a refusal.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Owner::Site => "the site's list",
            Owner::Agent(_) => "the personal list",
        }
    }

    /// The agent whose own list it is.
    #[must_use]
    pub fn agent(self) -> Option<AgentId> {
        match self {
            Owner::Site => None,
            Owner::Agent(a) => Some(a),
        }
    }
}

/// What makes two shortcuts one: `Refund` and `refund` are the same.
#[must_use]
pub fn key(shortcut: &str) -> String {
    shortcut.to_lowercase()
}

/// A shortcut is 1 to 32 characters, none of them a space or a control
/// character: the composer finds a reply by typing `/` and the shortcut,
/// and a space there ends the word.
pub fn check_shortcut(shortcut: &str) -> Result<(), String> {
    let n = shortcut.chars().count();
    if n == 0 || n > MAX_SHORTCUT_CHARS {
        return Err(format!(
            "a shortcut is 1 to {MAX_SHORTCUT_CHARS} characters, not {n}"
        ));
    }
    if let Some(c) = shortcut
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "a shortcut cannot hold spaces or control characters ({:?} has {c:?})",
            shortcut
        ));
    }
    Ok(())
}

/// A body is 1 to 4,000 bytes and not only whitespace: it is put in the
/// composer to be sent, and the server refuses an empty message.
pub fn check_body(body: &str) -> Result<(), String> {
    if body.trim().is_empty() {
        return Err("the reply's text is empty".into());
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the reply's text is {} bytes; the limit is {MAX_BODY_BYTES}",
            body.len()
        ));
    }
    Ok(())
}

/// What a reply costs its list's byte budget.
#[must_use]
pub fn weight(shortcut: &str, body: &str) -> usize {
    shortcut.len() + body.len()
}

/// Whether a list of `count` replies and `bytes` bytes fits `owner`'s.
pub fn check_size(owner: Owner, count: usize, bytes: usize) -> Result<(), String> {
    if count > owner.max_replies() {
        return Err(format!(
            "{} is full: it holds at most {} replies",
            owner.describe(),
            owner.max_replies()
        ));
    }
    if bytes > owner.max_bytes() {
        return Err(format!(
            "{} is full: its replies may hold at most {} KiB of text",
            owner.describe(),
            owner.max_bytes() / 1024
        ));
    }
    Ok(())
}

/// A reply as stored, with the list it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub site: SiteId,
    pub owner: Owner,
    /// [`key`] of the shortcut.
    pub key: String,
    pub reply: CannedReply,
}

const COLS: &str = "id, site_id, owner_id, shortcut, shortcut_key, body, updated_ms";

fn stored_row(r: &Row) -> Result<Stored, StoreError> {
    let owner = Owner::from_column(r.get(2)?);
    Ok(Stored {
        site: r.get(1)?,
        owner,
        key: r.get(4)?,
        reply: CannedReply {
            id: r.get(0)?,
            personal: owner != Owner::Site,
            shortcut: r.get(3)?,
            body: r.get(5)?,
            updated_ms: r.get(6)?,
        },
    })
}

/// Sorted as agents get it: by shortcut with case ignored. Sorted here,
/// not in SQL: PostgreSQL orders text by the database's collation, which
/// may differ from SQLite's byte order, and every node must agree.
fn sort(list: &mut [Stored]) {
    list.sort_by(|a, b| a.key.cmp(&b.key).then(a.reply.id.cmp(&b.reply.id)));
}

/// Reply `id`, of whatever site or list.
pub fn by_id(conn: &dyn Db, id: u64) -> Result<Option<Stored>, StoreError> {
    conn.query_opt(
        &format!("SELECT {COLS} FROM canned_replies WHERE id = ?1"),
        &args![id],
    )?
    .map(|r| stored_row(&r))
    .transpose()
}

/// One list of a site, by shortcut.
pub fn list(conn: &dyn Db, site: SiteId, owner: Owner) -> Result<Vec<Stored>, StoreError> {
    let mut list = conn
        .query_rows(
            &format!("SELECT {COLS} FROM canned_replies WHERE site_id = ?1 AND owner_id = ?2"),
            &args![site, owner.column()],
        )?
        .iter()
        .map(stored_row)
        .collect::<Result<Vec<_>, _>>()?;
    sort(&mut list);
    Ok(list)
}

/// Every reply `agent` of `site` may use: the site's, then its own, each
/// by shortcut (PROTOCOL.md 10.21).
pub fn for_agent(
    conn: &dyn Db,
    site: SiteId,
    agent: AgentId,
) -> Result<Vec<CannedReply>, StoreError> {
    let mut all = list(conn, site, Owner::Site)?;
    all.extend(list(conn, site, Owner::Agent(agent))?);
    Ok(all.into_iter().map(|s| s.reply).collect())
}

/// On PostgreSQL, hold the site's row until the transaction ends, so that
/// changes to a site's replies from several nodes (and the CLI) apply one
/// after the other: a list's count, size and shortcuts are checked on
/// what the change before left. SQLite has one writer already.
pub fn lock_site(conn: &dyn Db, site: SiteId) -> Result<(), StoreError> {
    if conn.dialect() == Dialect::Postgres {
        conn.query_rows("SELECT 1 FROM sites WHERE id = ?1 FOR UPDATE", &args![site])?;
    }
    Ok(())
}

/// Add a reply, checked by the caller; its id.
pub fn insert(
    conn: &dyn Db,
    site: SiteId,
    owner: Owner,
    shortcut: &str,
    body: &str,
    now: i64,
) -> Result<u64, StoreError> {
    conn.query_opt(
        "INSERT INTO canned_replies \
         (site_id, owner_id, shortcut, shortcut_key, body, created_ms, updated_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
        &args![site, owner.column(), shortcut, key(shortcut), body, now],
    )?
    .ok_or_else(|| StoreError::Corrupt("an insert returned no id".into()))?
    .get(0)
}

/// Replace reply `id`'s shortcut and body, checked by the caller; it keeps
/// its id and its list.
pub fn update(
    conn: &dyn Db,
    id: u64,
    shortcut: &str,
    body: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE canned_replies SET shortcut = ?2, shortcut_key = ?3, body = ?4, updated_ms = ?5 \
         WHERE id = ?1",
        &args![id, shortcut, key(shortcut), body, now],
    )?;
    Ok(())
}

pub fn delete(conn: &dyn Db, id: u64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM canned_replies WHERE id = ?1", &args![id])?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canned_shortcuts_are_one_word_of_1_to_32_characters() {
        for good in [
            "hi",
            "refund",
            "退款",
            "a",
            "x-y_z.1",
            &"é".repeat(32),
            "/rfd",
        ] {
            assert_eq!(check_shortcut(good), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "two words",
            " hi",
            "hi\t",
            "line\nbreak",
            "nul\0",
            "nbsp\u{a0}",
            "ideographic\u{3000}space",
            &"a".repeat(33),
        ] {
            assert!(check_shortcut(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn canned_bodies_are_1_to_4000_bytes_and_not_blank() {
        assert_eq!(check_body("Hi {visitor.name}!"), Ok(()));
        assert_eq!(check_body(&"a".repeat(MAX_BODY_BYTES)), Ok(()));
        // Bytes, not characters: 1,334 CJK characters are 4,002 bytes.
        assert!(check_body(&"退".repeat(1334)).is_err());
        assert_eq!(check_body(&"退".repeat(1333)), Ok(()));
        assert!(check_body(&"a".repeat(MAX_BODY_BYTES + 1)).is_err());
        for blank in ["", " ", "\n\t "] {
            assert!(check_body(blank).is_err(), "{blank:?}");
        }
    }

    #[test]
    fn canned_list_sizes_count_replies_and_bytes() {
        assert_eq!(check_size(Owner::Site, MAX_SITE, 10), Ok(()));
        assert!(check_size(Owner::Site, MAX_SITE + 1, 10).is_err());
        assert_eq!(check_size(Owner::Agent(3), MAX_PERSONAL, 10), Ok(()));
        assert!(check_size(Owner::Agent(3), MAX_PERSONAL + 1, 10).is_err());
        assert!(check_size(Owner::Site, 1, MAX_SITE_BYTES + 1).is_err());
        assert!(check_size(Owner::Agent(3), 1, MAX_PERSONAL_BYTES + 1).is_err());
    }

    /// Both full lists at their largest still go in one frame.
    #[test]
    fn canned_full_lists_fit_one_frame() {
        let body = "b".repeat(MAX_BODY_BYTES);
        let reply = |personal, i: usize| CannedReply {
            id: u64::MAX - u64::try_from(i).unwrap(),
            personal,
            shortcut: format!("{i:0>32}"),
            body: body.clone(),
            updated_ms: i64::MAX,
        };
        let site_n = MAX_SITE_BYTES / (32 + MAX_BODY_BYTES);
        let own_n = MAX_PERSONAL_BYTES / (32 + MAX_BODY_BYTES);
        let list: Vec<CannedReply> = (0..site_n)
            .map(|i| reply(false, i))
            .chain((0..own_n).map(|i| reply(true, i)))
            .collect();
        let ev = holdfast_protocol::agent::ServerMsg::Live(
            holdfast_protocol::agent::LiveEvent::Canned(list),
        );
        let n = holdfast_protocol::agent::encoded_len(&ev);
        // Room left for the frame's envelope and seal.
        assert!(n + 1024 < holdfast_protocol::DEFAULT_MAX_FRAME, "{n} bytes");
    }

    #[test]
    fn canned_keys_ignore_case() {
        assert_eq!(key("Refund"), key("rEFUND"));
        assert_eq!(key("ÉTÉ"), "été");
    }

    #[test]
    fn canned_lists_sort_by_key_then_id() {
        let s = |id, k: &str| Stored {
            site: 1,
            owner: Owner::Site,
            key: k.into(),
            reply: CannedReply {
                id,
                personal: false,
                shortcut: k.to_uppercase(),
                body: "b".into(),
                updated_ms: 0,
            },
        };
        let mut l = vec![s(3, "b"), s(1, "c"), s(2, "a")];
        sort(&mut l);
        let ids: Vec<u64> = l.iter().map(|s| s.reply.id).collect();
        assert_eq!(ids, vec![2, 3, 1]);
    }
}
