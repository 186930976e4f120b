//! `Op::VisitorHello`: create or refresh a visitor, with the page the hello
//! came from committed in the same op.

use holdfast_protocol::agent::{PageView, SiteId};

use super::Rules;
use crate::store::sql::args;
use crate::store::{StoreError, now_ms};

impl Rules<'_> {
    // The fields of `Op::VisitorHello`, one for each thing a hello sets.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::store) fn visitor_hello(
        &mut self,
        site: SiteId,
        visitor: Option<String>,
        ip: &str,
        ua: Option<String>,
        page: Option<PageView>,
        group: Option<&str>,
        lang: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = self.visitor_upsert(site, visitor, ua)?;
        // The latest hello's group: a chat the visitor opens is for it.
        // Its language replaces the stored one only when it has one, so a
        // hello from a browser that sends none keeps what an earlier said.
        self.conn.execute(
            "UPDATE visitors SET last_ip = ?2, group_key = ?3, lang = COALESCE(?4, lang) WHERE id = ?1",
            &args![&id, ip, group, lang],
        )?;
        if let Some(p) = page {
            self.page_view(&id, &p)?;
        }
        Ok(id)
    }

    pub(super) fn visitor_upsert(
        &mut self,
        site: SiteId,
        visitor: Option<String>,
        ua: Option<String>,
    ) -> Result<String, StoreError> {
        let now = now_ms();
        if let Some(v) = visitor {
            let n = self.conn.execute(
                "UPDATE visitors SET last_seen_ms = ?3, user_agent = COALESCE(?4, user_agent) WHERE id = ?1 AND site_id = ?2",
                &args![&v, site, now, &ua],
            )?;
            if n == 1 {
                return Ok(v);
            }
        }
        let id = crate::token::new_visitor_id();
        self.conn.execute(
            "INSERT INTO visitors (id, site_id, user_agent, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            &args![&id, site, ua, now],
        )?;
        Ok(id)
    }
}
