//! `Op::PageView`: one page of a visitor's trail, keeping only the newest.

use holdfast_protocol::agent::PageView;

use super::Rules;
use crate::store::StoreError;
use crate::store::sql::args;

impl Rules<'_> {
    pub(in crate::store) fn page_view(
        &mut self,
        visitor: &str,
        page: &PageView,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO page_views (visitor_id, url, title, referrer, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            &args![visitor, &page.url, &page.title, &page.referrer, page.at_ms],
        )?;
        // A visitor's trail keeps its newest views only: page views were
        // never pruned, and one address wrote 1,426 a second.
        self.conn.execute(
            "DELETE FROM page_views WHERE visitor_id = ?1 AND id < \
             (SELECT id FROM page_views WHERE visitor_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            &args![visitor, self.trail_keep.max(1) - 1],
        )?;
        self.conn.execute(
            "UPDATE visitors SET last_seen_ms = ?2 WHERE id = ?1",
            &args![visitor, page.at_ms],
        )?;
        Ok(())
    }
}
