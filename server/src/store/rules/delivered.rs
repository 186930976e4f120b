//! `Op::Delivered`: a visitor acked its events; the agents who wrote the
//! messages it received hear that they were delivered.

use holdfast_protocol::agent::{Event, Seq};

use super::Rules;
use crate::store::reads::{self, to_i64, visitor_key};
use crate::store::sql::args;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    pub(in crate::store) fn delivered(
        &mut self,
        visitor: &str,
        up_to: Seq,
    ) -> Result<(), StoreError> {
        let prev: Option<i64> = self
            .conn
            .query_opt(
                "SELECT delivered_seq FROM visitors WHERE id = ?1",
                &args![visitor],
            )?
            .map(|r| r.get(0))
            .transpose()?;
        let Some(prev) = prev else { return Ok(()) };
        // A visitor can only have received what is committed.
        let head = self.committed_head(&visitor_key(visitor))?;
        let up_to = to_i64(up_to.min(head));
        if up_to <= prev {
            return Ok(());
        }
        let rows: Vec<(i64, i64)> = self
            .conn
            .query_rows(
                "SELECT conversation_id, MAX(agent_message) FROM visitor_events \
                 WHERE visitor_id = ?1 AND seq > ?2 AND seq <= ?3 AND agent_message IS NOT NULL \
                 GROUP BY conversation_id",
                &args![visitor, prev, up_to],
            )?
            .iter()
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .collect::<Result<_, StoreError>>()?;
        self.conn.execute(
            "UPDATE visitors SET delivered_seq = ?2 WHERE id = ?1",
            &args![visitor, up_to],
        )?;
        let now = now_ms();
        for (conv, msg) in rows {
            let conv = u64::try_from(conv).unwrap_or(0);
            let Some(c) = reads::conversation(self.conn, conv)? else {
                continue;
            };
            let event = Event::Delivered {
                conversation: conv,
                message: u64::try_from(msg).unwrap_or(0),
            };
            for a in self.message_recipients(&c)? {
                self.agent_event(a, event.clone(), now)?;
            }
        }
        Ok(())
    }
}
