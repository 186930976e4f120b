//! What the app remembers between runs: the server address and username of
//! the last sign-in, the theme (light, dark or the OS's), the language the
//! agent picked (none: the OS's), which side panels the agent collapsed,
//! and the attention settings. Never the password: it lives only in memory (zeroized
//! on drop) for the life of the process. An OS keyring was considered and
//! left out: the maintained crates need a running Secret Service, which a
//! headless box or a bare window manager does not have, and a silent
//! fallback to a file would be exactly the plain-text store to avoid.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ui::attention::Attention;
use crate::ui::i18n::{Lang, lenient_lang};
use crate::ui::theme::Choice;

/// Every field has a default, so a prefs file from an older version (or
/// one missing a field) still loads with what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    pub server: String,
    pub username: String,
    pub theme: Choice,
    pub panels: Panels,
    /// When a waiting chat alerts again and turns amber and red.
    pub attention: Attention,
    /// The language the agent picked in the app; `None` (never picked)
    /// follows the OS's locale at each start. One this version does not
    /// know reads as `None` rather than failing the whole file.
    #[serde(
        deserialize_with = "lenient_lang",
        skip_serializing_if = "Option::is_none"
    )]
    pub lang: Option<Lang>,
}

/// The side panels the agent collapsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Panels {
    /// The lists: waiting, conversations, team, visitors.
    pub lists_collapsed: bool,
    /// The visitor details.
    pub details_collapsed: bool,
}

/// `~/.config/holdfast/agent.json` on Linux.
pub fn default_path() -> Option<PathBuf> {
    directories::ProjectDirs::from("io", "Holdfast", "Holdfast")
        .map(|d| d.config_dir().join("agent.json"))
}

impl Prefs {
    /// The saved prefs, or the defaults when there are none or they do not
    /// parse (a broken prefs file must never keep the app from starting).
    pub fn load(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable prefs {}: {e}", path.display());
                Self::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => {
                tracing::warn!("cannot read prefs {}: {e}", path.display());
                Self::default()
            }
        }
    }

    /// Write atomically (temp file + rename) so a crash mid-write leaves the
    /// old prefs, not a torn file.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_no_password_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.json");
        assert_eq!(Prefs::load(&path), Prefs::default());
        let p = Prefs {
            server: "chat.example:7070".into(),
            username: "alice".into(),
            theme: Choice::Dark,
            panels: Panels {
                lists_collapsed: true,
                details_collapsed: false,
            },
            attention: Attention {
                first_repeat_secs: 10,
                ..Attention::default()
            },
            lang: Some(Lang::Zh),
        };
        p.save(&path).unwrap();
        assert_eq!(Prefs::load(&path), p);
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("password"), "{raw}");
        std::fs::write(&path, "{not json").unwrap();
        assert_eq!(Prefs::load(&path), Prefs::default());
    }

    /// A prefs file written before the theme and panels were remembered
    /// keeps its account and gets the defaults for the rest.
    #[test]
    fn an_older_file_loads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        std::fs::write(&path, r#"{"server":"s:7070","username":"bea"}"#).unwrap();
        let p = Prefs::load(&path);
        assert_eq!(p.username, "bea");
        assert_eq!(p.theme, Choice::System);
        assert_eq!(p.panels, Panels::default());
        std::fs::write(
            &path,
            r#"{"server":"s:7070","username":"bea","theme":"dark"}"#,
        )
        .unwrap();
        assert_eq!(Prefs::load(&path).theme, Choice::Dark);
        assert_eq!(Prefs::load(&path).lang, None);
    }

    /// The language the agent picked is kept; a file naming a language
    /// this version does not have keeps its account and follows the OS.
    #[test]
    fn the_language_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        for lang in [Lang::Zh, Lang::En] {
            let p = Prefs {
                username: "bea".into(),
                lang: Some(lang),
                ..Prefs::default()
            };
            p.save(&path).unwrap();
            assert_eq!(Prefs::load(&path), p);
        }
        std::fs::write(&path, r#"{"username":"bea","lang":"tlh"}"#).unwrap();
        let p = Prefs::load(&path);
        assert_eq!((p.username.as_str(), p.lang), ("bea", None));
        // Never picked: nothing written, so the OS's language goes on
        // being followed.
        Prefs::default().save(&path).unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(!raw.contains("lang"), "{raw}");
    }
}
