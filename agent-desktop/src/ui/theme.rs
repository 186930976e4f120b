//! The app's two palettes, light and dark, and the one place every colour
//! on screen comes from.
//!
//! Each [`Palette`] names colours by what they are for (a selected row, the
//! agent's own bubble, a note), not by hue, and [`Palette::theme`] builds
//! the iced [`Theme`] from it, so iced's own widgets (text inputs, the
//! editor, checkboxes, scrollbars) draw with the same colours as the
//! screens' styles. A screen's style function asks [`Palette::of`] for the
//! palette of the theme it is handed; nothing else holds a colour.
//!
//! [`pairs`] lists every text colour drawn on every background, both
//! themes, and the tests below hold each to WCAG 2.x AA: 4.5:1 for text,
//! 3:1 for large text and for marks that are not text (the presence dot).
//!
//! Which palette is up is the agent's choice ([`Choice`], remembered in the
//! prefs): light, dark, or whatever the OS says, followed live.

use std::sync::LazyLock;

use iced::theme::palette::{
    Background, Danger, Extended, Pair, Primary, Secondary, Success, Warning,
};
use iced::widget::{button, container, text};
use iced::{Border, Color, Theme, border, color};
use serde::{Deserialize, Serialize};

/// Light, dark, or as the OS says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    Light,
    Dark,
    #[default]
    System,
}

impl Choice {
    pub const ALL: [Choice; 3] = [Choice::Light, Choice::Dark, Choice::System];

    /// A stable name for widget ids (the words on screen are the
    /// catalog's, [`crate::ui::i18n::Texts::theme_choice`]).
    pub fn code(self) -> &'static str {
        match self {
            Choice::Light => "light",
            Choice::Dark => "dark",
            Choice::System => "system",
        }
    }

    /// The palette for this choice when the OS is in `system` mode. An OS
    /// that states no preference gets the light one.
    pub fn palette(self, system: iced::theme::Mode) -> &'static Palette {
        match (self, system) {
            (Choice::Dark, _) | (Choice::System, iced::theme::Mode::Dark) => &DARK,
            _ => &LIGHT,
        }
    }
}

/// Every colour the UI draws, for one theme.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Palette {
    pub name: &'static str,
    pub is_dark: bool,
    /// The window, and the panels on it.
    pub background: Color,
    pub text: Color,
    /// Secondary text (captions, times, pages) on the background and on
    /// cards.
    pub muted: Color,
    /// Cards, the visitor's bubbles, secondary buttons.
    pub surface: Color,
    /// A hovered or pressed card or button.
    pub surface_strong: Color,
    pub border: Color,
    /// The edge of a text field or checkbox: a control's boundary, held to
    /// 3:1 against what is around it (WCAG 1.4.11).
    pub control_border: Color,
    /// Primary buttons and focus.
    pub accent: Color,
    pub accent_strong: Color,
    pub on_accent: Color,
    /// The open conversation's row, and selected text.
    pub selected: Color,
    pub on_selected: Color,
    pub on_selected_muted: Color,
    /// Text selected in a message, under the bubble's own text colour:
    /// apart from every bubble (`selected` is nearly the own bubble's).
    pub text_selection: Color,
    /// The agent's own (and colleagues') bubbles.
    pub own_bubble: Color,
    pub on_own_bubble: Color,
    pub on_own_bubble_muted: Color,
    /// Internal notes: agents only, never to be taken for a reply.
    pub note: Color,
    pub on_note: Color,
    pub success: Color,
    pub on_success: Color,
    pub warning: Color,
    pub on_warning: Color,
    pub danger: Color,
    pub danger_strong: Color,
    pub on_danger: Color,
    /// Green and red as text on the background or a card ("✓ verified",
    /// "Failed", errors).
    pub success_text: Color,
    pub danger_text: Color,
    /// Presence dots: online, and away or offline.
    pub online: Color,
    pub offline: Color,
}

pub static LIGHT: Palette = Palette {
    name: "Holdfast Light",
    is_dark: false,
    background: color!(0xffffff),
    text: color!(0x1b1d22),
    muted: color!(0x5a6170),
    surface: color!(0xeff1f4),
    surface_strong: color!(0xdde1e7),
    border: color!(0xc4cad3),
    control_border: color!(0x80889a),
    accent: color!(0x2f55d4),
    accent_strong: color!(0x2445b3),
    on_accent: color!(0xffffff),
    selected: color!(0xd9e3ff),
    on_selected: color!(0x0f1730),
    on_selected_muted: color!(0x3a4668),
    text_selection: color!(0xa9c0ff),
    own_bubble: color!(0xdde7ff),
    on_own_bubble: color!(0x141a2b),
    on_own_bubble_muted: color!(0x465170),
    note: color!(0xfff0c2),
    on_note: color!(0x3b2c00),
    success: color!(0x1c7340),
    on_success: color!(0xffffff),
    warning: color!(0xf3c552),
    on_warning: color!(0x2a1f00),
    danger: color!(0xc0262d),
    danger_strong: color!(0x9e1c22),
    on_danger: color!(0xffffff),
    success_text: color!(0x1c7340),
    danger_text: color!(0xb3202a),
    online: color!(0x1f8a4c),
    offline: color!(0x8a909c),
};

pub static DARK: Palette = Palette {
    name: "Holdfast Dark",
    is_dark: true,
    background: color!(0x16181d),
    text: color!(0xe6e8ec),
    muted: color!(0xa3aab7),
    surface: color!(0x23262d),
    surface_strong: color!(0x30343d),
    border: color!(0x444a55),
    control_border: color!(0x7a8192),
    accent: color!(0x86a2ff),
    accent_strong: color!(0xa5baff),
    on_accent: color!(0x0b1024),
    selected: color!(0x2d3d6b),
    on_selected: color!(0xf3f5fa),
    on_selected_muted: color!(0xc5cee8),
    text_selection: color!(0x3d5db8),
    own_bubble: color!(0x243357),
    on_own_bubble: color!(0xedf1f8),
    on_own_bubble_muted: color!(0xb6c1de),
    note: color!(0x4a3a0c),
    on_note: color!(0xffe6a0),
    success: color!(0x1d6b3f),
    on_success: color!(0xffffff),
    warning: color!(0xe2b548),
    on_warning: color!(0x231a00),
    danger: color!(0xb3262c),
    danger_strong: color!(0xd0383f),
    on_danger: color!(0xffffff),
    success_text: color!(0x72d69e),
    danger_text: color!(0xff8f87),
    online: color!(0x4cc47f),
    offline: color!(0x7d8391),
};

static LIGHT_THEME: LazyLock<Theme> = LazyLock::new(|| LIGHT.build());
static DARK_THEME: LazyLock<Theme> = LazyLock::new(|| DARK.build());

impl Palette {
    /// The palette a theme was built from. Any theme that is not one of
    /// ours (a test passing `Theme::Light`) reads as the palette of its
    /// tone.
    pub fn of(theme: &Theme) -> &'static Palette {
        if theme.extended_palette().is_dark {
            &DARK
        } else {
            &LIGHT
        }
    }

    /// The iced theme drawn with this palette (built once).
    pub fn theme(&self) -> Theme {
        if self.is_dark {
            DARK_THEME.clone()
        } else {
            LIGHT_THEME.clone()
        }
    }

    fn build(&'static self) -> Theme {
        let base = iced::theme::Palette {
            background: self.background,
            text: self.text,
            primary: self.accent,
            success: self.success,
            warning: self.warning,
            danger: self.danger,
        };
        Theme::custom_with_fn(self.name, base, |_| self.extended())
    }

    /// iced's extended palette, every shade from this one, so its stock
    /// widgets draw the same colours the [`pairs`] test checks: text inputs
    /// and the editor use `background.base` for their value, the
    /// `secondary.base` colour for placeholders and `primary.weak` for the
    /// selection.
    pub fn extended(&self) -> Extended {
        let on_bg = |c| Pair::new(c, self.text);
        Extended {
            background: Background {
                base: on_bg(self.background),
                weakest: on_bg(self.background),
                weaker: on_bg(self.surface),
                weak: on_bg(self.surface),
                neutral: on_bg(self.surface_strong),
                strong: on_bg(self.control_border),
                stronger: on_bg(self.control_border),
                strongest: Pair::new(self.muted, self.background),
            },
            primary: Primary {
                base: Pair::new(self.accent, self.on_accent),
                weak: Pair::new(self.selected, self.on_selected),
                strong: Pair::new(self.accent_strong, self.on_accent),
            },
            secondary: Secondary {
                base: Pair::new(self.muted, self.background),
                weak: Pair::new(self.surface, self.text),
                strong: Pair::new(self.surface_strong, self.text),
            },
            success: Success {
                base: Pair::new(self.success, self.on_success),
                weak: Pair::new(self.success, self.on_success),
                strong: Pair::new(self.success, self.on_success),
            },
            warning: Warning {
                base: Pair::new(self.warning, self.on_warning),
                weak: Pair::new(self.note, self.on_note),
                strong: Pair::new(self.warning, self.on_warning),
            },
            danger: Danger {
                base: Pair::new(self.danger, self.on_danger),
                weak: Pair::new(self.danger, self.on_danger),
                strong: Pair::new(self.danger_strong, self.on_danger),
            },
            is_dark: self.is_dark,
        }
    }
}

/// Where a pair is drawn, for the contrast test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsedPair {
    pub what: &'static str,
    pub fg: Color,
    pub bg: Color,
    /// Large text (18 px and up) or a mark that is not text: 3:1 is AA.
    pub large: bool,
}

/// Every text (or mark) colour the UI draws on every background it draws
/// it on. A style added to this module adds its pair here.
pub fn pairs(p: &Palette) -> Vec<UsedPair> {
    let t = |what, fg, bg| UsedPair {
        what,
        fg,
        bg,
        large: false,
    };
    let mark = |what, fg, bg| UsedPair {
        what,
        fg,
        bg,
        large: true,
    };
    vec![
        t("text on the window", p.text, p.background),
        t("muted text on the window", p.muted, p.background),
        t("text on a card", p.text, p.surface),
        t("muted text on a card", p.muted, p.surface),
        t("text on a hovered card or button", p.text, p.surface_strong),
        t("muted text on a hovered card", p.muted, p.surface_strong),
        t("placeholder in a text field", p.muted, p.background),
        t("primary button", p.on_accent, p.accent),
        t("primary button, hovered", p.on_accent, p.accent_strong),
        t("selected row", p.on_selected, p.selected),
        t(
            "muted text on the selected row",
            p.on_selected_muted,
            p.selected,
        ),
        t("selected text in a field", p.on_selected, p.selected),
        t(
            "selected text in a visitor bubble",
            p.text,
            p.text_selection,
        ),
        t(
            "selected text in an own bubble",
            p.on_own_bubble,
            p.text_selection,
        ),
        t("selected text in a note", p.on_note, p.text_selection),
        t("own bubble", p.on_own_bubble, p.own_bubble),
        t(
            "time and delivery on own bubble",
            p.on_own_bubble_muted,
            p.own_bubble,
        ),
        t("failed delivery on own bubble", p.danger_text, p.own_bubble),
        t("visitor bubble", p.text, p.surface),
        t("note", p.on_note, p.note),
        t("note being written (editor)", p.on_note, p.note),
        t("placeholder in the note editor", p.muted, p.note),
        t("connected bar", p.on_success, p.success),
        t("connecting bar", p.on_warning, p.warning),
        t("offline bar, banner, danger button", p.on_danger, p.danger),
        t("danger button, hovered", p.on_danger, p.danger_strong),
        t("unread badge", p.on_danger, p.danger),
        t("success button", p.on_success, p.success),
        t("verified id on the window", p.success_text, p.background),
        t("verified id on a card", p.success_text, p.surface),
        t("error text on the window", p.danger_text, p.background),
        t("error text on a card", p.danger_text, p.surface),
        mark("online dot", p.online, p.background),
        mark("away or offline dot", p.offline, p.background),
        mark(
            "text field and checkbox border",
            p.control_border,
            p.background,
        ),
        mark("text field border on a card", p.control_border, p.surface),
        mark("focused region's edge", p.accent, p.background),
        mark("highlighted row's outline", p.text, p.background),
        mark("highlighted card's edge", p.text, p.surface),
    ]
}

/// WCAG 2.x relative luminance of an opaque sRGB colour.
pub fn luminance(c: Color) -> f32 {
    let lin = |v: f32| {
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b)
}

/// WCAG 2.x contrast ratio of two opaque colours (1 to 21).
pub fn contrast(a: Color, b: Color) -> f32 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

// The screens' styles. Each reads the palette of the theme it is drawn
// with, so switching themes needs no rebuilt view.

/// Message text that can be selected: the bubble's colour, on
/// [`Palette::text_selection`] where selected.
pub fn selectable(theme: &Theme) -> iced_selection::text::Style {
    iced_selection::text::Style {
        color: None,
        selection: Palette::of(theme).text_selection,
    }
}

/// The frame of a workspace region: an accent edge while Tab's focus
/// ring is on it, nothing otherwise.
pub fn region(focused: bool) -> impl Fn(&Theme) -> container::Style {
    move |theme| {
        if !focused {
            return container::Style::default();
        }
        container::Style {
            border: Border {
                color: Palette::of(theme).accent,
                width: 2.0,
                radius: 6.0.into(),
            },
            ..container::Style::default()
        }
    }
}

/// The outline around a list row that has the focus ring's highlight: in
/// the text colour, so it reads apart from the open row's accent edge.
pub fn highlight(lit: bool) -> impl Fn(&Theme) -> container::Style {
    move |theme| {
        if !lit {
            return container::Style::default();
        }
        container::Style {
            border: Border {
                color: Palette::of(theme).text,
                width: 2.0,
                radius: 8.0.into(),
            },
            ..container::Style::default()
        }
    }
}

/// A [`card`], outlined like [`highlight`] while it has the highlight.
pub fn card_lit(lit: bool) -> impl Fn(&Theme) -> container::Style {
    move |theme| {
        let mut style = card(theme);
        if lit {
            style.border = Border {
                color: Palette::of(theme).text,
                width: 2.0,
                radius: 8.0.into(),
            };
        }
        style
    }
}

/// Secondary text.
pub fn muted(theme: &Theme) -> text::Style {
    text::Style {
        color: Some(Palette::of(theme).muted),
    }
}

pub fn success_text(theme: &Theme) -> text::Style {
    text::Style {
        color: Some(Palette::of(theme).success_text),
    }
}

pub fn danger_text(theme: &Theme) -> text::Style {
    text::Style {
        color: Some(Palette::of(theme).danger_text),
    }
}

pub fn card(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.surface.into()),
        text_color: Some(p.text),
        border: border::rounded(8),
        ..container::Style::default()
    }
}

/// A framed box on the window (the key fingerprints, a form's error).
pub fn framed(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.background.into()),
        text_color: Some(p.text),
        border: Border {
            color: p.border,
            width: 1.0,
            radius: 6.0.into(),
        },
        ..container::Style::default()
    }
}

pub fn danger_box(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.danger.into()),
        text_color: Some(p.on_danger),
        ..container::Style::default()
    }
}

/// A bar across the window: connected, connecting, offline.
pub fn bar(theme: &Theme, tone: Tone) -> container::Style {
    let p = Palette::of(theme);
    let (bg, fg) = match tone {
        Tone::Good => (p.success, p.on_success),
        Tone::Pending => (p.warning, p.on_warning),
        Tone::Bad => (p.danger, p.on_danger),
    };
    container::Style {
        background: Some(bg.into()),
        text_color: Some(fg),
        ..container::Style::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Pending,
    Bad,
}

pub fn badge(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.danger.into()),
        text_color: Some(p.on_danger),
        border: border::rounded(9),
        ..container::Style::default()
    }
}

pub fn note(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.note.into()),
        text_color: Some(p.on_note),
        border: border::rounded(6),
        ..container::Style::default()
    }
}

pub fn visitor_bubble(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.surface.into()),
        text_color: Some(p.text),
        border: border::rounded(10),
        ..container::Style::default()
    }
}

pub fn own_bubble(theme: &Theme) -> container::Style {
    let p = Palette::of(theme);
    container::Style {
        background: Some(p.own_bubble.into()),
        text_color: Some(p.on_own_bubble),
        border: border::rounded(10),
        ..container::Style::default()
    }
}

/// Times and delivery under the agent's own messages.
pub fn own_bubble_muted(theme: &Theme) -> text::Style {
    text::Style {
        color: Some(Palette::of(theme).on_own_bubble_muted),
    }
}

/// A secondary action: a quiet, outlined button on the surface colour.
pub fn button_secondary(theme: &Theme, status: button::Status) -> button::Style {
    let p = Palette::of(theme);
    let base = button::Style {
        background: Some(p.surface.into()),
        text_color: p.text,
        border: Border {
            color: p.border,
            width: 1.0,
            radius: 4.0.into(),
        },
        ..button::Style::default()
    };
    match status {
        button::Status::Hovered | button::Status::Pressed => button::Style {
            background: Some(p.surface_strong.into()),
            ..base
        },
        button::Status::Active => base,
        button::Status::Disabled => button::Style {
            text_color: p.muted,
            ..base
        },
    }
}

/// A row in a list (a conversation): the surface colour, or, when it is
/// the open one, the selection colour with an accent edge. The text on it
/// takes the matching colours (see [`row_muted`]).
pub fn row(selected: bool) -> impl Fn(&Theme, button::Status) -> button::Style {
    move |theme, status| {
        let p = Palette::of(theme);
        let (bg, fg) = if selected {
            (p.selected, p.on_selected)
        } else if matches!(status, button::Status::Hovered | button::Status::Pressed) {
            (p.surface_strong, p.text)
        } else {
            (p.surface, p.text)
        };
        button::Style {
            background: Some(bg.into()),
            text_color: fg,
            border: Border {
                color: if selected { p.accent } else { bg },
                width: if selected { 2.0 } else { 0.0 },
                radius: 6.0.into(),
            },
            ..button::Style::default()
        }
    }
}

/// Secondary text on a list row: darker (or lighter) on the selected one,
/// so it keeps its contrast there.
pub fn row_muted(selected: bool) -> impl Fn(&Theme) -> text::Style {
    move |theme| {
        let p = Palette::of(theme);
        text::Style {
            color: Some(if selected {
                p.on_selected_muted
            } else {
                p.muted
            }),
        }
    }
}

/// The presence dot.
pub fn dot(online: bool) -> impl Fn(&Theme) -> text::Style {
    move |theme| {
        let p = Palette::of(theme);
        text::Style {
            color: Some(if online { p.online } else { p.offline }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(p: &Palette) -> Vec<String> {
        pairs(p)
            .into_iter()
            .filter_map(|u| {
                let need = if u.large { 3.0 } else { 4.5 };
                let got = contrast(u.fg, u.bg);
                (got < need)
                    .then(|| format!("{}: {} is {got:.2}:1, needs {need}:1", p.name, u.what))
            })
            .collect()
    }

    #[test]
    fn every_pair_meets_wcag_aa_in_both_themes() {
        let mut bad = failures(&LIGHT);
        bad.extend(failures(&DARK));
        assert!(bad.is_empty(), "{bad:#?}");
    }

    /// The pairs iced's own widgets draw come from the built themes, not
    /// from a copy: a text field's value and placeholder, the selection,
    /// a stock button's text.
    #[test]
    fn iced_widgets_draw_the_checked_colours() {
        for p in [&LIGHT, &DARK] {
            let theme = p.theme();
            assert!(std::ptr::eq(Palette::of(&theme), p));
            let x = theme.extended_palette();
            for (what, fg, bg, need) in [
                (
                    "field value",
                    x.background.base.text,
                    x.background.base.color,
                    4.5,
                ),
                (
                    "placeholder",
                    x.secondary.base.color,
                    x.background.base.color,
                    4.5,
                ),
                (
                    "placeholder, disabled field",
                    x.background.strongest.color,
                    x.background.weak.color,
                    4.5,
                ),
                ("selection", x.primary.weak.text, x.primary.weak.color, 4.5),
                (
                    "primary button",
                    x.primary.base.text,
                    x.primary.base.color,
                    4.5,
                ),
                (
                    "success button",
                    x.success.base.text,
                    x.success.base.color,
                    4.5,
                ),
                (
                    "danger button",
                    x.danger.base.text,
                    x.danger.base.color,
                    4.5,
                ),
                (
                    "danger button hovered",
                    x.danger.strong.text,
                    x.danger.strong.color,
                    4.5,
                ),
                ("warning", x.warning.base.text, x.warning.base.color, 4.5),
                (
                    "note editor",
                    x.warning.weak.text,
                    x.warning.weak.color,
                    4.5,
                ),
                (
                    "field border",
                    x.background.strongest.color,
                    x.background.base.color,
                    3.0,
                ),
            ] {
                let got = contrast(fg, bg);
                assert!(got >= need, "{}: {what} is {got:.2}:1", p.name);
            }
        }
    }

    /// The check can fail: the selected row as it was drawn before this
    /// palette (grey 60 % text on the primary blue) is caught.
    #[test]
    fn a_bad_pair_is_caught() {
        let mut p = LIGHT;
        p.on_selected_muted = color!(0x8a8fb0);
        let bad = failures(&p);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("muted text on the selected row"), "{bad:?}");
    }

    #[test]
    fn contrast_matches_known_values() {
        assert!((contrast(Color::BLACK, Color::WHITE) - 21.0).abs() < 0.01);
        assert!((contrast(Color::WHITE, Color::WHITE) - 1.0).abs() < 0.001);
        // #767676 on white is the classic 4.54:1.
        assert!((contrast(color!(0x767676), Color::WHITE) - 4.54).abs() < 0.01);
    }

    #[test]
    fn the_choice_picks_the_palette() {
        use iced::theme::Mode;
        assert!(Choice::System.palette(Mode::Dark).is_dark);
        assert!(!Choice::System.palette(Mode::Light).is_dark);
        assert!(!Choice::System.palette(Mode::None).is_dark);
        assert!(Choice::Dark.palette(Mode::Light).is_dark);
        assert!(!Choice::Light.palette(Mode::Dark).is_dark);
    }
}
