//! A site's visitor list as an agent signing in gets it: built and encoded
//! once, then shared by every agent of the site that signs in (or resyncs)
//! until the list changes, with later changes reaching each of them as the
//! usual live upserts.
//!
//! In a reconnect storm 100 agents sign in to a site with 5,000 visitors
//! within seconds; each used to clone, sort and encode the whole list for
//! itself (1.2 MB each) and hold it while sending. Now one copy is encoded
//! and each session only seals it.
//!
//! Why a shared copy is never stale for its reader: an agent's connection
//! is registered before it reads the list, so every change broadcast after
//! the read reaches it. The copy is dropped (its site's generation bumped)
//! inside `Hub::broadcast_live`, under the hub lock, whenever agents are
//! told of a visitor change; so a copy still in the cache has missed no
//! broadcast, and whatever it lacks (a change not flushed yet) is still to
//! be broadcast, to this reader too.

use std::sync::Arc;

use holdfast_protocol::agent::{LiveEvent, SiteId, VisitorInfo};
use holdfast_protocol::session::server::EncodedLive;

use super::{Hub, State};

/// One site's visitor list, encoded.
#[derive(Debug)]
pub struct VisitorList {
    /// A `Visitors` (which replaces the client's list) with as many as fit
    /// in the frame budget, then `VisitorUpdates` with the rest: a list of
    /// 5,000 is 1.2 MB, over the 1 MiB frame limit.
    pub messages: Vec<EncodedLive>,
    /// Who is on it, and when their visit started: for their invitations.
    pub online: Vec<(String, i64)>,
}

impl VisitorList {
    /// Split `visitors` into messages of at most `budget` bytes each: a
    /// `Visitors` (which replaces the client's list) with as many as fit,
    /// then `VisitorUpdates` with the rest.
    pub(super) fn encode(visitors: Vec<VisitorInfo>, budget: usize) -> Self {
        let online = visitors
            .iter()
            .map(|v| (v.id.clone(), v.visit_started_ms))
            .collect();
        let mut parts = chunks(visitors, budget).into_iter();
        let first = parts.next().unwrap_or_default();
        let mut messages = vec![EncodedLive::new(LiveEvent::Visitors(first))];
        messages.extend(parts.map(|p| EncodedLive::new(LiveEvent::VisitorUpdates(p))));
        VisitorList { messages, online }
    }
}

/// Visitors that changed, as the events that tell agents of them: one
/// `Visitor` for a single change, else `VisitorUpdates` of at most
/// `budget` bytes each.
pub(super) fn updates(changed: Vec<VisitorInfo>, budget: usize) -> Vec<LiveEvent> {
    chunks(changed, budget)
        .into_iter()
        .map(|mut part| match part.len() {
            1 => LiveEvent::Visitor(part.remove(0)),
            _ => LiveEvent::VisitorUpdates(part),
        })
        .collect()
}

/// `visitors` in order, in parts of at most `budget` encoded bytes (a
/// visitor bigger than that still goes, alone).
fn chunks(visitors: Vec<VisitorInfo>, budget: usize) -> Vec<Vec<VisitorInfo>> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut size = 0;
    for v in visitors {
        let n = v.encoded_len();
        if size + n > budget && !part.is_empty() {
            parts.push(std::mem::take(&mut part));
            size = 0;
        }
        size += n;
        part.push(v);
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// Agents of `site` are being told of a change to its visitor list: the
/// encoded copy no longer holds.
pub(super) fn changed(st: &mut State, site: SiteId) {
    *st.visitor_list_gen.entry(site).or_default() += 1;
    st.visitor_lists.remove(&site);
}

impl Hub {
    /// `site`'s visitors online now, encoded in messages of at most the
    /// list budget: the cached copy while nothing changed, or a new one.
    pub fn visitor_list(&self, site: SiteId) -> Arc<VisitorList> {
        let (generation, visitors) = {
            let st = self.lock();
            if let Some(l) = st.visitor_lists.get(&site) {
                return l.clone();
            }
            let generation = st.visitor_list_gen.get(&site).copied().unwrap_or(0);
            (generation, Self::visitors_of_site_in(&st, site))
        };
        // Encoded outside the lock: 5,000 visitors take milliseconds.
        let list = Arc::new(VisitorList::encode(visitors, self.cfg.list_budget));
        let mut st = self.lock();
        if st.visitor_list_gen.get(&site).copied().unwrap_or(0) == generation {
            st.visitor_lists.insert(site, list.clone());
        }
        list
    }
}
