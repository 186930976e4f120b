//! The invitation rules panel (PROTOCOL.md 10.20), for the site's admins:
//! each rule with its conditions, on or off, and how it has done (fired,
//! shown, accepted, ignored, and the share of those shown that were
//! accepted); a form to add or change one; delete with a second press;
//! on and off.
//!
//! The list is the server's (a query when the panel opens or on Refresh,
//! and the whole list again after every change); this state is what is
//! being edited and what was asked. Everything that needs the client goes
//! up as an event.

use holdfast_protocol::agent::{InviteRule, InviteRuleSpec, QueryResult};
use holdfast_protocol::ids::MsgId;
use iced::widget::text::Wrapping;
use iced::widget::{Column, button, column, container, row, scrollable, text_input};
use iced::{Alignment, Element, Fill};

use crate::ui::i18n::tr;
use crate::ui::theme;
use crate::ui::widget::{card, heading, muted, small, text};

/// The longest wait a rule may ask for, as the server takes it.
const MAX_SECS: u32 = 86_400;

#[derive(Debug, Default)]
pub struct State {
    /// The panel, when open.
    pub panel: Option<Panel>,
}

#[derive(Debug, Default)]
pub struct Panel {
    /// `None` until the first answer.
    pub rules: Option<Vec<InviteRule>>,
    /// The query in flight, whose refusal is this panel's to show.
    pub request: Option<u32>,
    pub error: Option<String>,
    pub form: Option<Form>,
    /// The rule whose Delete was pressed, waiting for a second press.
    pub confirm_delete: Option<u64>,
}

/// Whom a rule is for, by visit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Visit {
    #[default]
    Any,
    Returning,
    First,
}

/// A rule being added or changed, as typed.
#[derive(Debug, Default)]
pub struct Form {
    pub id: Option<u64>,
    pub name: String,
    pub text: String,
    pub url: String,
    pub site_secs: String,
    pub page_secs: String,
    pub visit: Visit,
    pub referrer: String,
    pub campaign: String,
    pub attr: String,
    pub sending: bool,
    pub command: Option<MsgId>,
    /// The server's refusal, in its words (the CLI's).
    pub error: Option<String>,
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn secs(s: &str) -> Result<Option<u32>, ()> {
    match s.trim() {
        "" => Ok(None),
        s => s
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_SECS)
            .map(Some)
            .ok_or(()),
    }
}

impl Form {
    fn of(r: &InviteRule) -> Self {
        let s = &r.rule;
        let n = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        Form {
            id: Some(r.id),
            name: s.name.clone(),
            text: s.text.clone(),
            url: s.url.clone().unwrap_or_default(),
            site_secs: n(s.site_secs),
            page_secs: n(s.page_secs),
            visit: match s.returning {
                None => Visit::Any,
                Some(true) => Visit::Returning,
                Some(false) => Visit::First,
            },
            referrer: s.referrer.clone().unwrap_or_default(),
            campaign: s.campaign.clone().unwrap_or_default(),
            attr: s.attr.clone().unwrap_or_default(),
            ..Form::default()
        }
    }

    /// What the form says, or why it cannot be sent yet. The server checks
    /// again, with the CLI's words; this only spares a round trip.
    fn spec(&self) -> Result<InviteRuleSpec, &'static str> {
        let t = tr();
        let name = opt(&self.name).ok_or(t.rules_no_name)?;
        let text = opt(&self.text).ok_or(t.rules_no_text)?;
        let site_secs = secs(&self.site_secs).map_err(|()| t.rules_bad_secs)?;
        let page_secs = secs(&self.page_secs).map_err(|()| t.rules_bad_secs)?;
        let attr = opt(&self.attr);
        if attr.as_deref().is_some_and(|a| !a.contains('=')) {
            return Err(t.rules_bad_attr);
        }
        Ok(InviteRuleSpec {
            name,
            text,
            url: opt(&self.url),
            site_secs,
            page_secs,
            returning: match self.visit {
                Visit::Any => None,
                Visit::Returning => Some(true),
                Visit::First => Some(false),
            },
            referrer: opt(&self.referrer),
            campaign: opt(&self.campaign),
            attr,
        })
    }

    fn touched(&self) -> bool {
        [
            &self.name,
            &self.text,
            &self.url,
            &self.site_secs,
            &self.page_secs,
            &self.referrer,
            &self.campaign,
            &self.attr,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }
}

/// A form field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Text,
    Url,
    SiteSecs,
    PageSecs,
    Referrer,
    Campaign,
    Attr,
}

#[derive(Debug, Clone)]
pub enum Message {
    Open,
    Close,
    Refresh,
    /// The core took the query under this id (or could not).
    Asked(Result<u32, String>),
    New,
    Edit(u64),
    Input(Field, String),
    Visit(Visit),
    Save,
    CancelForm,
    /// The outbox took the save as this command (or could not).
    Queued(Result<MsgId, String>),
    Enable(u64, bool),
    Delete(u64),
    ConfirmDelete(u64),
    KeepRule,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// Ask for the rules with their counts.
    Load,
    Save {
        id: Option<u64>,
        rule: InviteRuleSpec,
    },
    Enable(u64, bool),
    Delete(u64),
}

impl State {
    pub fn update(&mut self, message: Message) -> Option<Event> {
        match message {
            Message::Open => {
                // Counts move all the time: each opening reads them afresh.
                let keep = self.panel.take().and_then(|p| p.rules);
                self.panel = Some(Panel {
                    rules: keep,
                    ..Panel::default()
                });
                Some(Event::Load)
            }
            Message::Close => {
                self.panel = None;
                None
            }
            Message::Refresh => {
                let p = self.panel.as_mut()?;
                p.error = None;
                Some(Event::Load)
            }
            Message::Asked(r) => {
                let p = self.panel.as_mut()?;
                match r {
                    Ok(id) => p.request = Some(id),
                    Err(e) => p.error = Some(e),
                }
                None
            }
            Message::New => {
                self.panel.as_mut()?.form = Some(Form::default());
                None
            }
            Message::Edit(id) => {
                let p = self.panel.as_mut()?;
                let r = p.rules.as_ref()?.iter().find(|r| r.id == id)?;
                p.form = Some(Form::of(r));
                None
            }
            Message::Input(field, v) => {
                let f = self.form()?;
                *match field {
                    Field::Name => &mut f.name,
                    Field::Text => &mut f.text,
                    Field::Url => &mut f.url,
                    Field::SiteSecs => &mut f.site_secs,
                    Field::PageSecs => &mut f.page_secs,
                    Field::Referrer => &mut f.referrer,
                    Field::Campaign => &mut f.campaign,
                    Field::Attr => &mut f.attr,
                } = v;
                f.error = None;
                None
            }
            Message::Visit(v) => {
                let f = self.form()?;
                f.visit = v;
                f.error = None;
                None
            }
            Message::Save => {
                let f = self.form()?;
                if f.sending {
                    return None;
                }
                let rule = f.spec().ok()?;
                f.sending = true;
                Some(Event::Save { id: f.id, rule })
            }
            Message::CancelForm => {
                self.panel.as_mut()?.form = None;
                None
            }
            Message::Queued(r) => {
                let f = self.form()?;
                match r {
                    Ok(id) => f.command = Some(id),
                    Err(e) => {
                        f.sending = false;
                        f.error = Some(e);
                    }
                }
                None
            }
            Message::Enable(id, on) => Some(Event::Enable(id, on)),
            Message::Delete(id) => {
                self.panel.as_mut()?.confirm_delete = Some(id);
                None
            }
            Message::ConfirmDelete(id) => {
                let p = self.panel.as_mut()?;
                (p.confirm_delete.take() == Some(id)).then_some(Event::Delete(id))
            }
            Message::KeepRule => {
                self.panel.as_mut()?.confirm_delete = None;
                None
            }
        }
    }

    fn form(&mut self) -> Option<&mut Form> {
        self.panel.as_mut()?.form.as_mut()
    }

    /// The server's list (an answer or a push after a change).
    pub fn set_rules(&mut self, rules: Vec<InviteRule>) {
        if let Some(p) = &mut self.panel {
            p.rules = Some(rules);
            p.error = None;
            p.request = None;
        }
    }

    /// A query's answer that is not a list; true if it was this panel's.
    pub fn on_answer(&mut self, request: u32, result: &QueryResult) -> bool {
        let Some(p) = self.panel.as_mut().filter(|p| p.request == Some(request)) else {
            return false;
        };
        p.request = None;
        if let QueryResult::Refused(e) = result {
            p.error = Some(format!("{} ({})", e.message, e.code));
        }
        true
    }

    /// The server's outcome of a command; true if it was this panel's save.
    pub fn outcome(&mut self, id: MsgId, outcome: &Result<(), String>) -> bool {
        let Some(p) = &mut self.panel else {
            return false;
        };
        let Some(f) = p.form.as_mut().filter(|f| f.command == Some(id)) else {
            return false;
        };
        match outcome {
            Ok(()) => p.form = None,
            Err(e) => {
                f.sending = false;
                f.command = None;
                f.error = Some(e.clone());
            }
        }
        true
    }

    /// The panel, in place of the chat.
    pub fn view(&self) -> Option<Element<'_, Message>> {
        let p = self.panel.as_ref()?;
        let t = tr();
        let mut col = Column::new().spacing(8).push(
            row![
                heading(t.rules_open).width(Fill),
                container(
                    button(text(t.rules_refresh).size(13))
                        .padding([4, 10])
                        .style(theme::button_secondary)
                        .on_press(Message::Refresh),
                )
                .id("rules-refresh"),
                container(
                    button(text(t.rules_new).size(13))
                        .padding([4, 10])
                        .style(iced::widget::button::primary)
                        .on_press(Message::New),
                )
                .id("rules-new"),
                container(
                    button(text(t.done).size(13))
                        .padding([4, 10])
                        .style(theme::button_secondary)
                        .on_press(Message::Close),
                )
                .id("rules-close"),
            ]
            .spacing(8)
            .align_y(Alignment::Center),
        );
        col = col.push(small(t.rules_help).style(muted));
        if let Some(e) = &p.error {
            col = col.push(
                container(small((t.rules_not_loaded)(e)).style(theme::danger_text))
                    .id("rules-error"),
            );
        }
        if let Some(f) = &p.form {
            col = col.push(form(f));
        }
        match &p.rules {
            None => col = col.push(small(t.rules_loading).style(muted)),
            Some(rules) => {
                col = col.push(heading((t.rules_heading)(rules.len())));
                if rules.is_empty() {
                    col = col.push(small(t.none_yet).style(muted));
                }
                for r in rules {
                    col = col.push(rule_card(r, p.confirm_delete == Some(r.id)));
                }
            }
        }
        Some(
            container(scrollable(col.padding(12)).height(Fill))
                .id("rules-panel")
                .width(Fill)
                .height(Fill)
                .into(),
        )
    }
}

/// A rule's conditions in words.
pub fn conditions(s: &InviteRuleSpec) -> String {
    let t = tr();
    let mut out = Vec::new();
    if let Some(u) = &s.url {
        out.push((t.rules_cond_page)(u));
    }
    if let Some(n) = s.site_secs {
        out.push((t.rules_cond_site_secs)(n));
    }
    if let Some(n) = s.page_secs {
        out.push((t.rules_cond_page_secs)(n));
    }
    match s.returning {
        Some(true) => out.push(t.rules_cond_returning.to_owned()),
        Some(false) => out.push(t.rules_cond_first.to_owned()),
        None => {}
    }
    if let Some(r) = &s.referrer {
        out.push((t.rules_cond_referrer)(r));
    }
    if let Some(c) = &s.campaign {
        out.push((t.rules_cond_campaign)(c));
    }
    if let Some(a) = &s.attr {
        out.push((t.rules_cond_attr)(a));
    }
    if out.is_empty() {
        t.rules_every_visitor.to_owned()
    } else {
        out.join(" · ")
    }
}

/// The share of shown invitations that were accepted, in whole percent;
/// `None` before any was shown.
pub fn acceptance(shown: u64, accepted: u64) -> Option<u64> {
    (shown > 0).then(|| accepted.min(shown) * 100 / shown)
}

fn rule_card(r: &InviteRule, confirming: bool) -> Element<'_, Message> {
    let t = tr();
    let c = r.counts;
    let rate =
        acceptance(c.shown, c.accepted).map_or_else(|| t.rules_rate_none.to_owned(), t.rules_rate);
    let state = if r.enabled { t.rules_on } else { t.rules_off };
    let mut actions = row![].spacing(6).align_y(Alignment::Center);
    if confirming {
        actions = actions.push(small(t.rules_delete_it));
        actions = actions.push(
            container(
                button(small(t.delete))
                    .padding([2, 8])
                    .style(iced::widget::button::danger)
                    .on_press(Message::ConfirmDelete(r.id)),
            )
            .id(format!("rules-confirm-delete-{}", r.id)),
        );
        actions = actions.push(
            button(small(t.keep))
                .padding([2, 8])
                .style(theme::button_secondary)
                .on_press(Message::KeepRule),
        );
    } else {
        actions = actions.push(
            container(
                button(small(if r.enabled {
                    t.rules_turn_off
                } else {
                    t.rules_turn_on
                }))
                .padding([2, 8])
                .style(theme::button_secondary)
                .on_press(Message::Enable(r.id, !r.enabled)),
            )
            .id(format!("rules-toggle-{}", r.id)),
        );
        actions = actions.push(
            container(
                button(small(t.edit))
                    .padding([2, 8])
                    .style(theme::button_secondary)
                    .on_press(Message::Edit(r.id)),
            )
            .id(format!("rules-edit-{}", r.id)),
        );
        actions = actions.push(
            container(
                button(small(t.delete))
                    .padding([2, 8])
                    .style(iced::widget::button::danger)
                    .on_press(Message::Delete(r.id)),
            )
            .id(format!("rules-delete-{}", r.id)),
        );
    }
    let body = column![
        row![
            text(r.rule.name.as_str()).size(14).width(Fill),
            if r.enabled {
                small(state).style(theme::success_text)
            } else {
                small(state).style(muted)
            },
        ]
        .spacing(6)
        .align_y(Alignment::Center),
        small(r.rule.text.as_str()).wrapping(Wrapping::WordOrGlyph),
        small(conditions(&r.rule))
            .style(muted)
            .wrapping(Wrapping::WordOrGlyph),
        container(small((t.rules_counts)(
            c.fired, c.shown, c.accepted, c.ignored
        )))
        .id(format!("rules-counts-{}", r.id)),
        small(rate).style(muted),
        actions,
    ]
    .spacing(3);
    container(body)
        .id(format!("rules-rule-{}", r.id))
        .padding(8)
        .width(Fill)
        .style(card)
        .into()
}

fn form(f: &Form) -> Element<'_, Message> {
    let t = tr();
    let input = |id: &'static str, placeholder: &'static str, value: &str, field: Field| {
        text_input(placeholder, value)
            .id(id)
            .on_input(move |v| Message::Input(field, v))
            .on_submit(Message::Save)
            .padding(6)
    };
    let visit = |label: &'static str, v: Visit| {
        container(
            button(small(label))
                .padding([2, 8])
                .style(if f.visit == v {
                    iced::widget::button::primary
                } else {
                    theme::button_secondary
                })
                .on_press(Message::Visit(v)),
        )
        .id(match v {
            Visit::Any => "rules-visit-any",
            Visit::Returning => "rules-visit-returning",
            Visit::First => "rules-visit-first",
        })
    };
    let mut col = column![
        text(if f.id.is_some() {
            t.rules_change
        } else {
            t.rules_add
        })
        .size(14),
        input("rules-name", t.rules_name, &f.name, Field::Name),
        input("rules-text", t.rules_text, &f.text, Field::Text),
        input("rules-url", t.rules_url, &f.url, Field::Url),
        row![
            input(
                "rules-site-secs",
                t.rules_site_secs,
                &f.site_secs,
                Field::SiteSecs
            ),
            input(
                "rules-page-secs",
                t.rules_page_secs,
                &f.page_secs,
                Field::PageSecs
            ),
        ]
        .spacing(6),
        row![
            visit(t.rules_visit_any, Visit::Any),
            visit(t.rules_visit_returning, Visit::Returning),
            visit(t.rules_visit_first, Visit::First),
        ]
        .spacing(4),
        input(
            "rules-referrer",
            t.rules_referrer,
            &f.referrer,
            Field::Referrer
        ),
        input(
            "rules-campaign",
            t.rules_campaign,
            &f.campaign,
            Field::Campaign
        ),
        input("rules-attr", t.rules_attr, &f.attr, Field::Attr),
    ]
    .spacing(6);
    let problem = f.spec().err();
    if let Some(e) = &f.error {
        col = col.push(
            container(small((t.not_saved)(e)).style(theme::danger_text)).id("rules-form-error"),
        );
    } else if let Some(p) = problem.filter(|_| f.touched()) {
        col = col.push(small(p).style(muted));
    }
    let ready = problem.is_none() && !f.sending;
    col = col.push(
        row![
            container(
                button(text(if f.sending { t.saving } else { t.save }).size(13))
                    .padding([4, 12])
                    .style(iced::widget::button::primary)
                    .on_press_maybe(ready.then_some(Message::Save)),
            )
            .id("rules-save"),
            button(text(t.cancel).size(13))
                .padding([4, 12])
                .style(theme::button_secondary)
                .on_press(Message::CancelForm),
        ]
        .spacing(8),
    );
    container(col).padding(8).width(Fill).style(card).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acceptance_is_of_those_shown() {
        assert_eq!(acceptance(0, 0), None);
        assert_eq!(acceptance(8, 3), Some(37));
        assert_eq!(acceptance(4, 4), Some(100));
    }

    #[test]
    fn the_form_reads_what_was_typed() {
        let f = Form {
            name: " pricing ".into(),
            text: "Hi".into(),
            page_secs: "30".into(),
            visit: Visit::First,
            attr: "plan=gold".into(),
            ..Form::default()
        };
        let s = f.spec().unwrap_or_default();
        assert_eq!(
            (s.name.as_str(), s.page_secs, s.returning, s.attr.as_deref()),
            ("pricing", Some(30), Some(false), Some("plan=gold"))
        );
        assert_eq!(s.url, None);
        let bad = Form {
            site_secs: "90000".into(),
            ..f
        };
        assert!(bad.spec().is_err());
    }
}
