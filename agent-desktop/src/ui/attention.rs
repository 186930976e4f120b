//! A waiting chat that nobody takes must not go quiet: when it alerts again,
//! and how its waiting time is coloured in the queue.
//!
//! Pure functions of the time waited, so the schedule is tested without a
//! clock and the view and the alerts can never disagree about it.

use serde::{Deserialize, Serialize};

/// The agent's attention settings (kept in the prefs file, `attention`).
/// Seconds, so the file stays readable by a person editing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Attention {
    /// After this long waiting, the chat alerts again; 0 turns repeats off.
    pub first_repeat_secs: u32,
    /// Then again every this long, until someone takes it; 0 means once.
    pub repeat_every_secs: u32,
    /// The waiting time turns amber from here...
    pub amber_after_secs: u32,
    /// ...and red from here.
    pub red_after_secs: u32,
}

impl Default for Attention {
    fn default() -> Self {
        Self {
            first_repeat_secs: 30,
            repeat_every_secs: 60,
            amber_after_secs: 60,
            red_after_secs: 180,
        }
    }
}

/// How urgent a wait looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Calm,
    Amber,
    Red,
}

fn ms(secs: u32) -> i64 {
    i64::from(secs) * 1000
}

impl Attention {
    pub fn level(&self, waited_ms: i64) -> Level {
        // A red threshold set below the amber one still means red.
        if waited_ms >= ms(self.red_after_secs) {
            Level::Red
        } else if waited_ms >= ms(self.amber_after_secs) {
            Level::Amber
        } else {
            Level::Calm
        }
    }

    /// How many repeat alerts are due by the time the chat has waited
    /// `waited_ms` (the alert on arrival not counted). A caller that has
    /// raised fewer than this raises one, and notes the number: after a
    /// sleep or a late start the agent gets one alert, not a burst.
    pub fn repeats_due(&self, waited_ms: i64) -> u32 {
        let first = ms(self.first_repeat_secs);
        if self.first_repeat_secs == 0 || waited_ms < first {
            return 0;
        }
        if self.repeat_every_secs == 0 {
            return 1;
        }
        let later = (waited_ms - first) / ms(self.repeat_every_secs);
        u32::try_from(later.saturating_add(1)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_after_30_s_then_every_minute_by_default() {
        let a = Attention::default();
        let due = |s: i64| a.repeats_due(s * 1000);
        assert_eq!(due(0), 0);
        assert_eq!(due(29), 0);
        assert_eq!(due(30), 1);
        assert_eq!(due(89), 1);
        assert_eq!(due(90), 2);
        assert_eq!(due(150), 3);
        // A clock behind the server's gives a negative wait: nothing due.
        assert_eq!(a.repeats_due(-5_000), 0);
    }

    #[test]
    fn repeats_can_be_once_or_off() {
        let once = Attention {
            repeat_every_secs: 0,
            ..Attention::default()
        };
        assert_eq!(once.repeats_due(3_600_000), 1);
        let off = Attention {
            first_repeat_secs: 0,
            ..Attention::default()
        };
        assert_eq!(off.repeats_due(3_600_000), 0);
    }

    #[test]
    fn the_wait_turns_amber_then_red() {
        let a = Attention::default();
        assert_eq!(a.level(59_999), Level::Calm);
        assert_eq!(a.level(60_000), Level::Amber);
        assert_eq!(a.level(179_999), Level::Amber);
        assert_eq!(a.level(180_000), Level::Red);
        let odd = Attention {
            amber_after_secs: 300,
            red_after_secs: 100,
            ..Attention::default()
        };
        assert_eq!(odd.level(150_000), Level::Red);
        assert_eq!(crate::ui::i18n::EN.wait_level(Level::Amber), " · long wait");
        assert_eq!(crate::ui::i18n::ZH.wait_level(Level::Red), " · 等待过久");
    }

    #[test]
    fn an_old_prefs_file_gets_the_defaults() {
        let a: Attention = serde_json::from_str(r#"{"first_repeat_secs": 10}"#).unwrap_or_default();
        assert_eq!(a.first_repeat_secs, 10);
        assert_eq!(a.repeat_every_secs, 60);
    }
}
