//! `Op::Identify`: the site tells who the visitor is, verified or not.

use rusqlite::params;

use super::Rules;
use crate::store::StoreError;
use crate::store::effect::Effect;
use crate::store::reads::{self};

impl Rules<'_> {
    pub(in crate::store) fn identify(
        &mut self,
        visitor: &str,
        external_id: &str,
        name: Option<String>,
        email: Option<String>,
        attrs: &[(String, String)],
        verified: bool,
    ) -> Result<bool, StoreError> {
        // A visitor bound to a verified identity stays bound to it: another
        // identity, verified or not, needs a new visitor.
        if let Some(bound) = reads::verified_identity(self.conn, visitor)?
            && bound != external_id
        {
            return Ok(false);
        }
        let attrs = serde_json::to_string(attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // An unverified identify of the id this visitor was verified as
        // (a site that dropped its secret) keeps the binding: it proves
        // nothing either way, and unbinding would let any id in later.
        self.conn
            .prepare_cached(
                "UPDATE visitors SET name = COALESCE(?3, name), email = COALESCE(?4, email), attrs = ?5, \
                 verified = CASE WHEN verified = 1 AND external_id = ?2 THEN 1 ELSE ?6 END, \
                 external_id = ?2 WHERE id = ?1",
            )?
            .execute(params![visitor, external_id, name, email, attrs, i64::from(verified)])
            .map_err(StoreError::from_sqlite)?;
        self.op.effects.push(Effect::VisitorChanged {
            visitor: visitor.to_string(),
        });
        Ok(true)
    }
}
