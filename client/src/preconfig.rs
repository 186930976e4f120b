//! Machine-wide preconfiguration from the installer or the admin: the server
//! address to offer and the server key fingerprint to pin on first contact.
//!
//! An admin rolling the app out to a team sets these once, so nobody types an
//! address or has to judge a fingerprint by eye (see `installer/README.md`).
//!
//! # Where it is read from, first found wins
//!
//! | OS | sources, in order |
//! | --- | --- |
//! | all | the file named by `HOLDFAST_AGENT_PRECONFIG`, if set |
//! | Windows | registry `HKLM\SOFTWARE\Holdfast\Agent`, string values `Server` and `Fingerprint` (the MSI writes them from its `SERVER=` and `FINGERPRINT=` properties); then `agent.toml` next to `holdfast-agent.exe` |
//! | macOS | `/Library/Application Support/Holdfast/agent.toml`; then `agent.toml` in the app bundle's `Contents/Resources` |
//! | Linux and others | `/etc/holdfast/agent.toml` |
//!
//! A source counts only if it sets at least one value; the first such source
//! is used whole. Values are never mixed across sources, so a fingerprint is
//! never paired with another source's server.
//!
//! # File format
//!
//! A TOML file with two optional string keys:
//!
//! ```toml
//! # Holdfast agent preconfiguration
//! server = "chat.example.com:7070"
//! fingerprint = "1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809:1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809"
//! ```
//!
//! The fingerprint is what `holdfast-server fingerprint` prints (bare hex,
//! either case, also accepted). An empty string means "not set". Unknown
//! keys are an error, so a typo is reported rather than silently ignored.
//! The file is read by the `toml` crate, so anything TOML allows works.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use holdfast_protocol::handshake::Fingerprint;

/// The environment variable naming a preconfiguration file to use instead
/// of the system locations (tests, portable installs).
pub const ENV_VAR: &str = "HOLDFAST_AGENT_PRECONFIG";

/// The file name used in every location.
pub const FILE_NAME: &str = "agent.toml";

/// The registry key the Windows installer writes (64-bit view).
pub const REGISTRY_KEY: &str = r"HKLM\SOFTWARE\Holdfast\Agent";

/// The file's keys. Both optional; anything else is refused.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileValues {
    server: Option<String>,
    fingerprint: Option<String>,
}

/// Values an admin set for every user of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preconfig {
    /// `host:port` of the server's agent listener.
    pub server: Option<String>,
    /// The server key to pin when this machine first talks to `server`.
    pub fingerprint: Option<Fingerprint>,
    /// Where the values came from, for logs and error messages.
    pub source: String,
}

/// A preconfiguration source that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PreconfigError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}, line {line}: {message}")]
    Syntax {
        origin: String,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl Preconfig {
    /// Parse the file format; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PreconfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text); // Notepad's BOM
        let values: FileValues = toml::from_str(text).map_err(|e| PreconfigError::Syntax {
            origin: origin.to_owned(),
            line: e
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
            message: e.message().to_owned(),
        })?;
        Self::from_values(values.server, values.fingerprint, origin)
    }

    /// Build from raw values, treating empty strings as unset.
    pub fn from_values(
        server: Option<String>,
        fingerprint: Option<String>,
        origin: &str,
    ) -> Result<Self, PreconfigError> {
        let invalid = |message: String| PreconfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let server = server
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(s) = &server
            && s.chars().any(char::is_whitespace)
        {
            return Err(invalid(format!("server `{s}` is not a host:port address")));
        }
        let fingerprint = match fingerprint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(f) => Some(
                Fingerprint::from_str(f).map_err(|e| invalid(format!("fingerprint `{f}`: {e}")))?,
            ),
        };
        Ok(Self {
            server,
            fingerprint,
            source: origin.to_owned(),
        })
    }

    /// True when no value is set (such a source is skipped).
    pub fn is_empty(&self) -> bool {
        self.server.is_none() && self.fingerprint.is_none()
    }

    /// The fingerprint to expect from `server`: the preconfigured one when
    /// `server` is the preconfigured server (compared without case), or when
    /// only a fingerprint was preconfigured.
    pub fn fingerprint_for(&self, server: &str) -> Option<Fingerprint> {
        match &self.server {
            Some(s) if !s.eq_ignore_ascii_case(server.trim()) => None,
            _ => self.fingerprint,
        }
    }

    /// Read one file. A missing file is `Ok(None)`, and so is a file that
    /// sets nothing.
    pub fn load_file(path: &Path) -> Result<Option<Self>, PreconfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PreconfigError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let p = Self::parse(&text, &path.display().to_string())?;
        Ok((!p.is_empty()).then_some(p))
    }

    /// Load from this machine's sources (see the module docs). `Ok(None)`
    /// when nothing is preconfigured; an error when a source exists but is
    /// broken, so the app can say so instead of silently ignoring the admin.
    pub fn load() -> Result<Option<Self>, PreconfigError> {
        if let Some(path) = std::env::var_os(ENV_VAR) {
            return Self::load_file(Path::new(&path));
        }
        #[cfg(windows)]
        if let Some(p) = windows::load_registry()? {
            return Ok(Some(p));
        }
        for path in system_files() {
            if let Some(p) = Self::load_file(&path)? {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

impl fmt::Display for Preconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: server ", self.source)?;
        match &self.server {
            Some(s) => write!(f, "{s}")?,
            None => f.write_str("(not set)")?,
        }
        f.write_str(", fingerprint ")?;
        match &self.fingerprint {
            Some(fp) => write!(f, "{fp}"),
            None => f.write_str("(not set)"),
        }
    }
}

/// The preconfiguration files for this OS, in the order they are tried
/// (the Windows registry comes before all of them).
pub fn system_files() -> Vec<PathBuf> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    files_for(std::env::consts::OS, exe_dir.as_deref())
}

fn files_for(os: &str, exe_dir: Option<&Path>) -> Vec<PathBuf> {
    match os {
        "windows" => exe_dir.map(|d| d.join(FILE_NAME)).into_iter().collect(),
        "macos" => {
            let mut v =
                vec![PathBuf::from("/Library/Application Support/Holdfast").join(FILE_NAME)];
            // .../Holdfast Agent.app/Contents/MacOS/holdfast-agent
            if let Some(contents) = exe_dir.and_then(Path::parent) {
                v.push(contents.join("Resources").join(FILE_NAME));
            }
            v
        }
        _ => vec![PathBuf::from("/etc/holdfast").join(FILE_NAME)],
    }
}

#[cfg(windows)]
mod windows {
    use winreg::RegKey;
    use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY};

    use super::{Preconfig, PreconfigError, REGISTRY_KEY};

    /// Read the values the MSI wrote, from the 64-bit view whatever this
    /// build's bitness. No key (or no access to it) means nothing was
    /// preconfigured there.
    pub(super) fn load_registry() -> Result<Option<Preconfig>, PreconfigError> {
        let Ok(key) = RegKey::predef(HKEY_LOCAL_MACHINE)
            .open_subkey_with_flags(r"SOFTWARE\Holdfast\Agent", KEY_READ | KEY_WOW64_64KEY)
        else {
            return Ok(None);
        };
        let value = |name: &str| key.get_value::<String, _>(name).ok();
        let p = Preconfig::from_values(
            value("Server"),
            value("Fingerprint"),
            &format!("registry {REGISTRY_KEY}"),
        )?;
        Ok((!p.is_empty()).then_some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str =
        "1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809:1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809";

    #[test]
    fn parses_the_documented_file() {
        let text = format!(
            "\u{feff}# Holdfast agent preconfiguration\r\n\
             server = \"chat.example.com:7070\"  # the agent port\r\n\
             \r\n\
             fingerprint = '{FP}'\r\n"
        );
        let p = Preconfig::parse(&text, "agent.toml").unwrap();
        assert_eq!(p.server.as_deref(), Some("chat.example.com:7070"));
        assert_eq!(p.fingerprint.unwrap().to_string(), FP);
        assert_eq!(p.source, "agent.toml");
        assert!(p.to_string().contains("chat.example.com:7070"));
    }

    #[test]
    fn both_keys_are_optional_and_empty_means_unset() {
        let p = Preconfig::parse("server = \"h:1\"", "t").unwrap();
        assert_eq!((p.server.as_deref(), p.fingerprint), (Some("h:1"), None));
        let p = Preconfig::parse("server = \"\"\nfingerprint = \"\"", "t").unwrap();
        assert!(p.is_empty());
        assert!(Preconfig::parse("# nothing\n", "t").unwrap().is_empty());
    }

    #[test]
    fn fingerprint_accepts_bare_hex_and_escapes_work() {
        let bare = FP.replace(':', "").to_uppercase();
        let p = Preconfig::parse(&format!("fingerprint = \"{bare}\""), "t").unwrap();
        assert_eq!(p.fingerprint.unwrap().to_string(), FP);
        let p = Preconfig::parse(r#"server = "h\u0041:1\\""#, "t");
        // A backslash is whitespace-free, so it parses; the value is literal.
        assert_eq!(p.unwrap().server.as_deref(), Some("hA:1\\"));
    }

    #[test]
    fn mistakes_are_reported_with_the_line() {
        let err = |t: &str| Preconfig::parse(t, "f.toml").unwrap_err().to_string();
        for (text, says) in [
            ("\nsever = \"h:1\"", "f.toml, line 2: unknown field `sever`"),
            ("server = h:1", "line 1: string values must be quoted"),
            ("server = \"h:1", "line 1: invalid basic string"),
            ("server = \"a\"\nserver = \"b\"", "line 2: duplicate key"),
            ("server = \"a\" b", "line 1: unexpected key or value"),
            ("[agent]", "unknown field `agent`"),
            ("server", "key with no value"),
            ("fingerprint = \"abcd\"", "64 hex digits"),
            ("server = \"a b:1\"", "not a host:port"),
            (r#"server = "\q""#, "missing escaped value"),
        ] {
            let e = err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn fingerprint_applies_to_the_preconfigured_server_only() {
        let p = Preconfig::parse(
            &format!("server = \"Chat.Example.com:7070\"\nfingerprint = \"{FP}\""),
            "t",
        )
        .unwrap();
        assert!(p.fingerprint_for("chat.example.com:7070").is_some());
        assert!(p.fingerprint_for("other:7070").is_none());
        let only_fp = Preconfig::parse(&format!("fingerprint = \"{FP}\""), "t").unwrap();
        assert!(only_fp.fingerprint_for("anything:1").is_some());
    }

    #[test]
    fn files_missing_or_empty_are_none_and_broken_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(Preconfig::load_file(&path).unwrap().is_none());
        std::fs::write(&path, "server = \"\"\n").unwrap();
        assert!(Preconfig::load_file(&path).unwrap().is_none());
        std::fs::write(&path, "server = \"h:7070\"\n").unwrap();
        let p = Preconfig::load_file(&path).unwrap().unwrap();
        assert_eq!(p.server.as_deref(), Some("h:7070"));
        assert_eq!(p.source, path.display().to_string());
        std::fs::write(&path, "server = 7070\n").unwrap();
        assert!(Preconfig::load_file(&path).is_err());
    }

    #[test]
    fn locations_per_os() {
        let win = files_for("windows", Some(Path::new(r"C:\Program Files\Holdfast")));
        assert_eq!(
            win,
            [Path::new(r"C:\Program Files\Holdfast").join("agent.toml")]
        );
        let mac = files_for(
            "macos",
            Some(Path::new("/Applications/Holdfast Agent.app/Contents/MacOS")),
        );
        assert_eq!(
            mac,
            [
                PathBuf::from("/Library/Application Support/Holdfast/agent.toml"),
                PathBuf::from("/Applications/Holdfast Agent.app/Contents/Resources/agent.toml"),
            ]
        );
        assert_eq!(
            files_for("linux", None),
            [PathBuf::from("/etc/holdfast/agent.toml")]
        );
    }
}
