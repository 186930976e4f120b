//! `Op::Identify`: the site tells who the visitor is, verified or not.

use super::Rules;
use crate::store::StoreError;
use crate::store::effect::{Effect, VisitorChange};
use crate::store::reads;
use crate::store::sql::args;

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
        let attrs_json =
            serde_json::to_string(attrs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // An unverified identify of the id this visitor was verified as
        // (a site that dropped its secret) keeps the binding: it proves
        // nothing either way, and unbinding would let any id in later.
        // RETURNING gives the values as stored, for the hub to show agents.
        let stored = self
            .conn
            .query_opt(
                "UPDATE visitors SET name = COALESCE(?3, name), email = COALESCE(?4, email), attrs = ?5, \
                 verified = CASE WHEN verified = 1 AND external_id = ?2 THEN 1 ELSE ?6 END, \
                 external_id = ?2 WHERE id = ?1 \
                 RETURNING name, email, external_id, verified",
                &args![visitor, external_id, name, email, attrs_json, verified],
            )?
            .map(|r| {
                Ok::<_, StoreError>(VisitorChange::Identity {
                    name: r.get(0)?,
                    email: r.get(1)?,
                    attrs: attrs.to_vec(),
                    external_id: r.get(2)?,
                    verified: r.get::<i64>(3)? != 0,
                })
            })
            .transpose()?;
        if let Some(change) = stored {
            self.op.effects.push(Effect::VisitorChanged {
                visitor: visitor.to_string(),
                change,
            });
        }
        Ok(true)
    }
}
