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

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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
            let shown = notify_rust::Notification::new()
                .appname("Holdfast")
                .summary(&alert.title)
                .body(&alert.body)
                .sound_name("message-new-instant")
                .show();
            if let Err(e) = shown {
                tracing::debug!("notification not shown: {e}");
            }
            play_chime();
        });
    }
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
}
