//! The focus ring: Tab and Shift+Tab move between the workspace's regions
//! (the chat lists, the visitors, the chat, the details panel), left to
//! right as they stand on screen, skipping a collapsed panel. The focused
//! region has an accent edge. In a list region ↑/↓ move a highlight over
//! its rows and Enter acts on the highlighted one (accepts a waiting chat,
//! opens one of the agent's, shows a visitor's details), the list scrolling
//! to keep the highlighted row in view ([`super::scroll`]). On the details
//! ↑/↓ and PageUp/PageDown scroll it and Enter does what the visitor's row
//! offers (opens their chat, else invites them). Esc leaves a list or the
//! details for the chat. Entering the chat region puts the cursor in the
//! composer, and leaving it takes the cursor out, so the arrows and Enter
//! are the list's and not the composer's.
//!
//! The ring lives in the [`Desk`] beside the selection it moves towards, so
//! the lists draw the highlight without being handed it, and a sign-out
//! (a new desk) forgets it.

use holdfast_protocol::agent::ConversationId;

use crate::ui::desk::Desk;
use crate::ui::prefs::Panels;

/// A part of the workspace Tab stops at, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Waiting chats, the agent's chats and (for a supervisor) the team's.
    Lists,
    Visitors,
    /// The open chat: its composer has the cursor.
    Chat,
    Details,
}

impl Region {
    const ORDER: [Region; 4] = [
        Region::Lists,
        Region::Visitors,
        Region::Chat,
        Region::Details,
    ];

    /// The id of the region's frame on screen.
    pub fn id(self) -> &'static str {
        match self {
            Region::Lists => "region-lists",
            Region::Visitors => "region-visitors",
            Region::Chat => "region-chat",
            Region::Details => "region-details",
        }
    }

    /// Whether the region is on screen with these panels: the lists'
    /// collapse takes the visitors with it.
    fn shown(self, panels: Panels) -> bool {
        match self {
            Region::Lists | Region::Visitors => !panels.lists_collapsed,
            Region::Chat => true,
            Region::Details => !panels.details_collapsed,
        }
    }
}

/// A key the ring acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Tab.
    Next,
    /// Shift+Tab.
    Previous,
    Up,
    Down,
    /// PageUp and PageDown: a page of the details.
    PageUp,
    PageDown,
    Enter,
}

/// A row a list region's highlight can be on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Waiting(ConversationId),
    /// One of the agent's chats, or (for a supervisor) a colleague's.
    Chat(ConversationId),
    Visitor(String),
}

impl Item {
    /// The id of the row's frame on screen, which the view scrolls to.
    pub fn row_id(&self, desk: &Desk) -> String {
        match self {
            Item::Waiting(id) => format!("queued-{id}"),
            Item::Chat(id) if desk.mine().iter().any(|c| c.info.id == *id) => {
                format!("conv-{id}")
            }
            Item::Chat(id) => format!("team-conv-{id}"),
            Item::Visitor(v) => format!("visitor-{v}"),
        }
    }
}

/// Where the ring is: the focused region (none until Tab is first
/// pressed or a chat is opened), and the highlighted row of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    pub region: Option<Region>,
    pub highlight: Option<Item>,
}

/// What Enter on a highlighted row asks the workspace to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Act {
    Accept(ConversationId),
    Open(ConversationId),
    Details(String),
}

impl Ring {
    /// The region after (or before) the focused one that is on screen;
    /// from none, the first (or last). A collapsed panel that was focused
    /// is left for its neighbour.
    pub fn step(&self, forward: bool, panels: Panels) -> Region {
        let n = Region::ORDER.len();
        let at = self
            .region
            .and_then(|r| Region::ORDER.iter().position(|o| *o == r));
        let start = match (at, forward) {
            (Some(i), true) => i + 1,
            (Some(i), false) => i + n - 1,
            (None, true) => 0,
            (None, false) => n - 1,
        };
        (0..n)
            .map(|k| {
                let i = if forward { start + k } else { start + n - k };
                Region::ORDER[i % n]
            })
            .find(|r| r.shown(panels))
            // The chat is always on screen.
            .unwrap_or(Region::Chat)
    }

    /// Focus `region` in `desk`'s ring: a list's highlight starts on the
    /// row already open there (the open chat, the visitor in the details),
    /// else the first.
    pub fn enter(desk: &mut Desk, region: Region) {
        let rows = items(desk, region);
        let current = match region {
            Region::Lists => desk.selected.and_then(|id| {
                rows.iter()
                    .find(|i| matches!(i, Item::Waiting(c) | Item::Chat(c) if *c == id))
                    .cloned()
            }),
            Region::Visitors => desk
                .details_visitor
                .clone()
                .map(Item::Visitor)
                .filter(|v| rows.contains(v)),
            Region::Chat | Region::Details => None,
        };
        desk.ring = Ring {
            region: Some(region),
            highlight: current.or_else(|| rows.first().cloned()),
        };
    }

    /// ↑ or ↓ in a list region of `desk`'s ring: the highlight moves one
    /// row, stopping at the ends; a row that went away starts it again
    /// from an end.
    pub fn step_row(desk: &mut Desk, down: bool) {
        let Some(region) = desk.ring.region else {
            return;
        };
        let rows = items(desk, region);
        let at = desk
            .ring
            .highlight
            .as_ref()
            .and_then(|h| rows.iter().position(|r| r == h));
        let next = match (at, down) {
            (Some(i), true) => rows.get(i + 1).or(rows.get(i)),
            (Some(i), false) => rows.get(i.saturating_sub(1)),
            (None, true) => rows.first(),
            (None, false) => rows.last(),
        };
        desk.ring.highlight = next.cloned();
    }

    /// Enter in a list region: what to do with the highlighted row, if it
    /// is still there.
    pub fn act(&self, desk: &Desk) -> Option<Act> {
        let region = self.region?;
        let h = self.highlight.as_ref()?;
        if !items(desk, region).contains(h) {
            return None;
        }
        Some(match h {
            Item::Waiting(id) => Act::Accept(*id),
            Item::Chat(id) => Act::Open(*id),
            Item::Visitor(v) => Act::Details(v.clone()),
        })
    }

    /// Whether `region` is the focused one (its edge is drawn).
    pub fn on(&self, region: Region) -> bool {
        self.region == Some(region)
    }

    /// Whether `item` has the highlight of the focused list.
    pub fn lit(&self, item: &Item) -> bool {
        matches!(self.region, Some(Region::Lists | Region::Visitors))
            && self.highlight.as_ref() == Some(item)
    }
}

/// The rows of a list region, top to bottom as drawn.
fn items(desk: &Desk, region: Region) -> Vec<Item> {
    match region {
        Region::Lists => {
            let mut rows: Vec<Item> = desk
                .queue()
                .iter()
                .map(|c| Item::Waiting(c.info.id))
                .collect();
            rows.extend(desk.mine().iter().map(|c| Item::Chat(c.info.id)));
            if desk.oversees() {
                rows.extend(desk.team_chats().iter().map(|c| Item::Chat(c.info.id)));
            }
            rows
        }
        Region::Visitors => desk
            .visitors_sorted()
            .iter()
            .map(|v| Item::Visitor(v.id.clone()))
            .collect(),
        Region::Chat | Region::Details => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panels(lists: bool, details: bool) -> Panels {
        Panels {
            lists_collapsed: lists,
            details_collapsed: details,
        }
    }

    #[test]
    fn tab_goes_round_the_regions_and_skips_collapsed_panels() {
        let mut ring = Ring::default();
        let open = panels(false, false);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let r = ring.step(true, open);
            ring.region = Some(r);
            seen.push(r);
        }
        use Region::*;
        assert_eq!(seen, [Lists, Visitors, Chat, Details, Lists]);
        assert_eq!(ring.step(false, open), Details);

        let lists_shut = panels(true, false);
        ring.region = Some(Details);
        assert_eq!(ring.step(true, lists_shut), Chat);
        ring.region = Some(Chat);
        assert_eq!(ring.step(false, lists_shut), Details);
        // A region whose panel was collapsed while focused: on to the next.
        ring.region = Some(Visitors);
        assert_eq!(ring.step(true, lists_shut), Chat);
        assert_eq!(ring.step(true, panels(true, true)), Chat);
        ring.region = None;
        assert_eq!(ring.step(false, panels(false, true)), Chat);
    }
}
