//! Scrolling for the keyboard: the focus ring's highlighted row brought
//! into view, and the details panel moved a line or a page.
//!
//! Rows differ in height (a visitor with attributes, a referrer or an open
//! invitation text is taller than one without), so no offset is worked out
//! from row counts: the operation reads where the row was laid out and the
//! scrollable that holds it, and scrolls that one just enough. It runs
//! after the view is rebuilt, so it sees the row where the new state puts
//! it (and the keys hint a region shows once it has the ring).

use iced::Task;
use iced::advanced::widget::operation::scrollable::{AbsoluteOffset, scroll_to};
use iced::advanced::widget::operation::{Operation, Outcome, Scrollable};
use iced::widget::Id;
use iced::{Rectangle, Vector};

/// Room left between a revealed row and the scrollable's edge, so the row
/// does not sit flush against it (its outline is drawn just outside it).
const MARGIN: f32 = 8.0;
/// What ↑/↓ move the details by: about two lines of its small text.
const LINE: f32 = 40.0;

/// Scroll the scrollable holding the widget `row` so all of the row is in
/// view (its top, when it is taller than the view); nothing if it already
/// is, or is not on screen.
pub fn reveal<T: Send + 'static>(row: String) -> Task<T> {
    iced::advanced::widget::operate(Reveal {
        row: Id::from(row),
        found: None,
        holders: Vec::new(),
    })
}

/// A line (↑/↓) or a page (PageUp/PageDown) of the scrollable `id`.
pub fn nudge<T: Send + 'static>(id: &'static str, down: bool, page: bool) -> Task<T> {
    iced::advanced::widget::operate(Nudge {
        id: Id::new(id),
        down,
        page,
    })
}

/// A scrollable with an id, as the first pass saw it.
struct Holder {
    id: Id,
    bounds: Rectangle,
    content: Rectangle,
    offset: f32,
}

struct Reveal {
    row: Id,
    found: Option<Rectangle>,
    holders: Vec<Holder>,
}

impl<T: 'static> Operation<T> for Reveal {
    fn traverse(&mut self, operate: &mut dyn FnMut(&mut dyn Operation<T>)) {
        operate(self);
    }

    fn container(&mut self, id: Option<&Id>, bounds: Rectangle) {
        if id == Some(&self.row) {
            self.found = Some(bounds);
        }
    }

    fn scrollable(
        &mut self,
        id: Option<&Id>,
        bounds: Rectangle,
        content: Rectangle,
        translation: Vector,
        _state: &mut dyn Scrollable,
    ) {
        if let Some(id) = id {
            self.holders.push(Holder {
                id: id.clone(),
                bounds,
                content,
                offset: translation.y,
            });
        }
    }

    // The scrollable is met before what it holds, so the scroll is a
    // second pass, once both are known.
    fn finish(&self) -> Outcome<T> {
        let Some(row) = self.found else {
            return Outcome::None;
        };
        // Layout places a scrollable's content unscrolled: the innermost
        // one whose content holds the row is the one to move.
        let holder = self
            .holders
            .iter()
            .filter(|h| h.content.contains(row.center()))
            .min_by(|a, b| {
                (a.content.width * a.content.height)
                    .total_cmp(&(b.content.width * b.content.height))
            });
        let Some(h) = holder else {
            return Outcome::None;
        };
        let top = row.y - h.content.y;
        match offset_showing(h.offset, h.bounds.height, top, top + row.height) {
            Some(y) => Outcome::Chain(Box::new(scroll_to(
                h.id.clone(),
                AbsoluteOffset {
                    x: None,
                    y: Some(y),
                },
            ))),
            None => Outcome::None,
        }
    }
}

/// The offset at which the rows from `top` to `bottom` (in content
/// coordinates) show in a view `height` tall now scrolled to `offset`:
/// `None` when they already do. Moved as little as it takes, so going
/// down a list keeps the highlight at the bottom edge and coming back up
/// at the top edge; a row taller than the view shows its top.
pub fn offset_showing(offset: f32, height: f32, top: f32, bottom: f32) -> Option<f32> {
    let want_top = (top - MARGIN).max(0.0);
    let want_bottom = bottom + MARGIN;
    if want_top < offset {
        Some(want_top)
    } else if want_bottom > offset + height {
        Some((want_bottom - height).min(want_top))
    } else {
        None
    }
}

struct Nudge {
    id: Id,
    down: bool,
    page: bool,
}

impl<T> Operation<T> for Nudge {
    fn traverse(&mut self, operate: &mut dyn FnMut(&mut dyn Operation<T>)) {
        operate(self);
    }

    fn scrollable(
        &mut self,
        id: Option<&Id>,
        bounds: Rectangle,
        content: Rectangle,
        _translation: Vector,
        state: &mut dyn Scrollable,
    ) {
        if id != Some(&self.id) {
            return;
        }
        // A page keeps a line of what was on screen, to read on from.
        let step = if self.page {
            (bounds.height - LINE).max(LINE)
        } else {
            LINE
        };
        let y = if self.down { step } else { -step };
        state.scroll_by(AbsoluteOffset { x: 0.0, y }, bounds, content);
    }
}

#[cfg(test)]
mod tests {
    use super::offset_showing;

    #[test]
    fn a_row_is_brought_into_view_by_as_little_as_it_takes() {
        // In view: no scroll.
        assert_eq!(offset_showing(0.0, 500.0, 100.0, 200.0), None);
        // Below the fold: its bottom (and the margin) at the bottom edge.
        assert_eq!(offset_showing(0.0, 500.0, 520.0, 620.0), Some(128.0));
        // Above the top: its top (less the margin) at the top edge.
        assert_eq!(offset_showing(300.0, 500.0, 200.0, 260.0), Some(192.0));
        // Taller than the view: its top shows.
        assert_eq!(offset_showing(0.0, 100.0, 300.0, 600.0), Some(292.0));
        // The first row: right to the top.
        assert_eq!(offset_showing(50.0, 500.0, 4.0, 60.0), Some(0.0));
    }
}
