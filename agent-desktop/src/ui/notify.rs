//! Desktop notifications and the alert sound, for when the window is not
//! focused.
//!
//! Notifications go through `notify-rust` (freedesktop D-Bus on Linux via
//! the pure-Rust zbus, native APIs on macOS and Windows), so there is no C
//! library to build against. The sound is asked for twice, because neither
//! way works everywhere: the notification carries the freedesktop
//! `sound-name` hint (the notification daemon plays the theme's sound), and
//! where `paplay` or `aplay` is on the PATH a short bundled chime is played
//! through it. A Rust audio crate (rodio/cpal) would need the ALSA
//! development headers at build time for a two-note chime, so it is not used.
//!
//! Titles and bodies carry a visitor's name and words, so they are made safe
//! on the way out (see [`notification_text`]): a freedesktop server that
//! advertises `body-markup` parses the body as a subset of HTML, links and
//! images included, and would otherwise render whatever a visitor typed.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::ui::format;

/// What happened, for the notification text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub title: String,
    pub body: String,
}

/// Shows alerts, or records them when disabled (tests, `--no-notify`).
#[derive(Debug, Default)]
pub struct Notifier {
    pub enabled: bool,
    /// Every alert raised, newest last; capped so a long day stays flat.
    pub log: Vec<Alert>,
}

const LOG_CAP: usize = 32;

impl Notifier {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            log: Vec::new(),
        }
    }

    pub fn alert(&mut self, alert: Alert) {
        if self.log.len() >= LOG_CAP {
            self.log.remove(0);
        }
        self.log.push(alert.clone());
        if !self.enabled {
            return;
        }
        // Both calls block (D-Bus round trip, child process); keep them off
        // the UI thread.
        std::thread::spawn(move || {
            let (summary, body) = notification_text(&alert, server_renders_markup());
            let shown = notify_rust::Notification::new()
                .appname("Holdfast")
                .summary(&summary)
                .body(&body)
                .sound_name("message-new-instant")
                .show();
            if let Err(e) = shown {
                tracing::debug!("notification not shown: {e}");
            }
            play_chime();
        });
    }
}

/// Whether the notification server would parse markup in what it is sent.
///
/// The freedesktop spec makes the body plain text unless the server
/// advertises `body-markup`, and then it is markup: `<a>`, `<img>` and
/// entities. So the body is escaped exactly when the server says it parses
/// it. Escaping always would be one D-Bus call cheaper, but a server
/// without `body-markup` (dunst with its markup setting off, for one) shows
/// text as it is, so an agent would read `&lt;` and `&amp;` in every message
/// that has them. Chromium and qutebrowser decide the same way.
///
/// Asked on every alert, in the alert's own thread, rather than once: the
/// daemon can be replaced while the app runs (a user switching dunst's
/// markup on and restarting it), and a stale "plain" would let markup
/// through. Alerts come at a person's pace, so the extra round trip is
/// nothing. When the question fails the answer is "yes": a server that
/// cannot be asked may still parse markup, and a stray `&lt;` on screen is
/// the cheaper mistake.
#[cfg(all(unix, not(target_os = "macos")))]
fn server_renders_markup() -> bool {
    match notify_rust::get_capabilities() {
        Ok(caps) => caps.iter().any(|c| c == "body-markup"),
        Err(e) => {
            tracing::debug!("cannot ask the notification server what it renders: {e}");
            true
        }
    }
}

/// Windows toasts (the text is set as XML text content, not parsed) and
/// macOS notifications take plain text.
#[cfg(not(all(unix, not(target_os = "macos"))))]
fn server_renders_markup() -> bool {
    false
}

/// The summary and body to send for `alert`, for a server that parses
/// markup in the body (`markup`) or not.
///
/// Both lose bidi controls and invisible characters
/// ([`format::display_safe`]), so a visitor named with a right-to-left
/// override cannot reorder the notification. The summary is one line.
///
/// With `markup`, the body is escaped. The summary is plain text by the
/// spec and is not escaped: dunst, for one, escapes it itself, so escaping
/// it here would show "Tom &amp; Jerry". But mako, for one, puts it into
/// its Pango markup as it is. So its angle brackets become the look-alike
/// single guillemets ‹ ›, which nothing parses: a name cannot open a tag on
/// either kind of server, and reads the same.
fn notification_text(alert: &Alert, markup: bool) -> (String, String) {
    let summary: String = format::display_safe(&alert.title)
        .chars()
        .map(|c| match c {
            '\n' | '\t' => ' ',
            '<' if markup => '\u{2039}',
            '>' if markup => '\u{203A}',
            c => c,
        })
        .collect();
    let body = format::display_safe(&alert.body);
    let body = if markup { escape_markup(&body) } else { body };
    (summary, body)
}

/// `text` as markup that shows it literally: the five characters XML
/// gives meaning to, escaped as GLib's `g_markup_escape_text` does (Pango
/// and Qt's rich text, which the daemons parse with, both read these).
fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn play_chime() {
    let Some(path) = chime_file() else { return };
    for player in ["paplay", "aplay"] {
        let mut cmd = Command::new(player);
        if player == "aplay" {
            cmd.arg("-q");
        }
        let status = cmd
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if matches!(status, Ok(s) if s.success()) {
            return;
        }
    }
}

/// The chime as a WAV file in the temp dir, written once per run.
fn chime_file() -> Option<&'static PathBuf> {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("holdfast-chime-{}.wav", std::process::id()));
        match std::fs::write(&path, chime_wav()) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::debug!("cannot write the chime: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// Two short sine notes (E6 then A5), 8-bit mono 16 kHz PCM in a WAV.
pub fn chime_wav() -> Vec<u8> {
    const RATE: u32 = 16_000;
    let mut pcm = Vec::new();
    for (freq, ms) in [(1318.5_f32, 90_u32), (880.0, 140)] {
        let n = RATE * ms / 1000;
        for i in 0..n {
            let t = i as f32 / RATE as f32;
            // Linear fade-out so the note does not click when it stops.
            let env = 1.0 - i as f32 / n as f32;
            let v = (t * freq * std::f32::consts::TAU).sin() * env * 0.35;
            let sample = (128.0 + v * 127.0).clamp(0.0, 255.0);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            pcm.push(sample as u8);
        }
    }
    let data_len = u32::try_from(pcm.len()).unwrap_or(u32::MAX);
    let mut wav = Vec::with_capacity(pcm.len() + 44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes()); // byte rate
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(&pcm);
    wav
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chime_is_a_wav_of_the_declared_length() {
        let w = chime_wav();
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(&w[8..16], b"WAVEfmt ");
        let declared = u32::from_le_bytes([w[40], w[41], w[42], w[43]]) as usize;
        assert_eq!(declared + 44, w.len());
    }

    #[test]
    fn disabled_notifier_only_records_and_stays_bounded() {
        let mut n = Notifier::new(false);
        for i in 0..100 {
            n.alert(Alert {
                title: format!("t{i}"),
                body: String::new(),
            });
        }
        assert_eq!(n.log.len(), LOG_CAP);
        assert_eq!(n.log.last().map(|a| a.title.as_str()), Some("t99"));
    }

    const HOSTILE_BODY: &str = "\u{2067}<a href=\"https://evil.example/login\">Your session expired…</a> <img src=\"file:///etc/passwd\"/>\u{FEFF}";

    fn hostile() -> Alert {
        Alert {
            title: "Message from <b>Support</b> \u{202E}gpj.exe\u{200B}\n".into(),
            body: HOSTILE_BODY.into(),
        }
    }

    #[test]
    fn markup_servers_get_an_escaped_body_and_a_tagless_summary() {
        let (summary, body) = notification_text(&hostile(), true);
        assert_eq!(
            body,
            "&lt;a href=&quot;https://evil.example/login&quot;&gt;Your session expired…&lt;/a&gt; \
             &lt;img src=&quot;file:///etc/passwd&quot;/&gt;"
        );
        assert_eq!(
            summary,
            "Message from \u{2039}b\u{203A}Support\u{2039}/b\u{203A} gpj.exe "
        );
    }

    #[test]
    fn plain_servers_get_the_text_as_typed_less_bidi_and_invisibles() {
        let (summary, body) = notification_text(&hostile(), false);
        assert_eq!(
            body,
            "<a href=\"https://evil.example/login\">Your session expired…</a> <img src=\"file:///etc/passwd\"/>"
        );
        assert_eq!(summary, "Message from <b>Support</b> gpj.exe ");
        let (summary, body) = notification_text(
            &Alert {
                title: "Message from Tom & Jerry's".into(),
                body: "Fish & chips \"now\"".into(),
            },
            false,
        );
        assert_eq!(summary, "Message from Tom & Jerry's");
        assert_eq!(body, "Fish & chips \"now\"");
    }

    #[test]
    fn escaping_covers_the_xml_five_and_nothing_else() {
        assert_eq!(
            escape_markup("a&b<c>d\"e'f 你好 &amp;"),
            "a&amp;b&lt;c&gt;d&quot;e&#39;f 你好 &amp;amp;"
        );
        // A markup server keeps an ampersand in the summary as it is: the
        // spec makes the summary plain text.
        let (summary, _) = notification_text(
            &Alert {
                title: "Message from Tom & Jerry".into(),
                body: String::new(),
            },
            true,
        );
        assert_eq!(summary, "Message from Tom & Jerry");
    }
}
