//! The visitor list as last seen, so the app can draw it offline.

use super::*;

pub(super) fn visitors(conn: &Connection) -> Result<Vec<VisitorInfo>> {
    let rows = conn
        .prepare_cached("SELECT info FROM visitors ORDER BY id")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .iter()
        .filter_map(|j| match serde_json::from_str(j) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("skipping a cached visitor that does not decode: {e}");
                None
            }
        })
        .collect())
}

impl Store {
    /// Replace the cached visitor list.
    pub fn replace_visitors(&mut self, visitors: &[VisitorInfo]) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.prepare_cached("DELETE FROM visitors")?.execute([])?;
        for v in visitors {
            tx.prepare_cached("INSERT OR REPLACE INTO visitors(id, info) VALUES (?1, ?2)")?
                .execute(params![v.id, to_json(v, "visitor")?])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Update some cached visitors and forget others.
    pub fn update_visitors<'a>(
        &mut self,
        upserts: impl IntoIterator<Item = &'a VisitorInfo>,
        removed: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for v in upserts {
            tx.prepare_cached("INSERT OR REPLACE INTO visitors(id, info) VALUES (?1, ?2)")?
                .execute(params![v.id, to_json(v, "visitor")?])?;
        }
        for id in removed {
            tx.prepare_cached("DELETE FROM visitors WHERE id = ?1")?
                .execute([id])?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn visitors(&self) -> Result<Vec<VisitorInfo>> {
        visitors(&self.conn)
    }
}
