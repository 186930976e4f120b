//! The team panel: who is online, their role and load. A component of its
//! own because it is its own panel in the side column, but with nothing to
//! click it has no messages: it draws the desk's team and that is all.

use holdfast_protocol::agent::{Presence, Role, TeamMember};
use iced::widget::{Column, container, row};
use iced::{Alignment, Element, Fill};

use crate::ui::desk::Desk;
use crate::ui::i18n::tr;
use crate::ui::theme;
use crate::ui::widget::{heading, muted, small, text};

/// Generic over the message so it fits any parent: it sends none.
pub fn view<Message: 'static>(desk: &Desk) -> Element<'_, Message> {
    let team = desk.team_sorted();
    let mut col = Column::new()
        .spacing(4)
        .push(heading((tr().team)(team.len())));
    let me = desk.my_id();
    for m in team {
        col = col.push(container(member(m, Some(m.agent) == me)).id(format!("team-{}", m.agent)));
    }
    col.into()
}

/// One member: presence, name, role and load.
fn member<Message: 'static>(m: &TeamMember, me: bool) -> Element<'_, Message> {
    let t = tr();
    let dot = match m.presence {
        Presence::Online => "●",
        Presence::Away => "◐",
        Presence::Offline => "○",
    };
    let label = t.presence(m.presence);
    let role = match m.role {
        Role::Agent => String::new(),
        r => format!(" · {}", t.role(r)),
    };
    let you = if me { t.you_suffix } else { "" };
    let online = m.presence == Presence::Online;
    row![
        text(dot).size(12).style(theme::dot(online)),
        small(format!("{}{you}{role}", m.name)).width(Fill),
        small(format!("{label} · {}/{}", m.active, m.capacity)).style(muted),
    ]
    .spacing(6)
    .align_y(Alignment::Center)
    .into()
}
