//! `Op::PageView`: one page of a visitor's trail, keeping only the newest.

use holdfast_protocol::agent::PageView;
use rusqlite::params;

use super::Rules;
use crate::store::StoreError;

impl Rules<'_> {
    pub(in crate::store) fn page_view(
        &mut self,
        visitor: &str,
        page: &PageView,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO page_views (visitor_id, url, title, referrer, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![visitor, page.url, page.title, page.referrer, page.at_ms])
            .map_err(StoreError::from_sqlite)?;
        // A visitor's trail keeps its newest views only: page views were
        // never pruned, and one address wrote 1,426 a second.
        self.conn
            .prepare_cached(
                "DELETE FROM page_views WHERE visitor_id = ?1 AND id < \
                 (SELECT id FROM page_views WHERE visitor_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![visitor, self.trail_keep.max(1) - 1])
            .map_err(StoreError::from_sqlite)?;
        self.conn
            .prepare_cached("UPDATE visitors SET last_seen_ms = ?2 WHERE id = ?1")?
            .execute(params![visitor, page.at_ms])
            .map_err(StoreError::from_sqlite)?;
        Ok(())
    }
}
