//! What the client needs to know to run.

use std::fmt;
use std::path::PathBuf;

use holdfast_protocol::backoff::BackoffConfig;
use holdfast_protocol::delivery::AckPolicy;
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::liveness::LivenessConfig;
use zeroize::Zeroizing;

use crate::error::ClientError;

/// Configuration for [`crate::start`].
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of the server's agent listener. Pins are kept per address.
    pub server: String,
    pub username: String,
    pub password: Zeroizing<String>,
    /// The local SQLite store; see [`default_store_path`].
    pub store_path: PathBuf,
    /// Heartbeat after this much quiet; the server is dead after
    /// `dead_after` of silence. A smaller heartbeat in `LoginOk` wins.
    pub liveness: LivenessConfig,
    pub backoff: BackoffConfig,
    /// Largest frame payload accepted or sent.
    pub max_frame: usize,
    /// A fingerprint preconfigured by the installer, used when the store has
    /// no pin for this server yet.
    pub expected_fingerprint: Option<Fingerprint>,
    /// Pin an unknown server key without asking (tests and CLI tools only:
    /// it gives up the protection pinning exists for on the first contact).
    pub trust_on_first_use: bool,
    pub ack_policy: AckPolicy,
}

impl ClientConfig {
    /// A configuration with the protocol's default timings.
    pub fn new(
        server: impl Into<String>,
        username: impl Into<String>,
        password: Zeroizing<String>,
        store_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            server: server.into(),
            username: username.into(),
            password,
            store_path: store_path.into(),
            liveness: LivenessConfig::default(),
            backoff: BackoffConfig::default(),
            max_frame: holdfast_protocol::DEFAULT_MAX_FRAME,
            expected_fingerprint: None,
            trust_on_first_use: false,
            ack_policy: AckPolicy::default(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: &str| Err(ClientError::InvalidConfig(m.to_owned()));
        if self.server.trim().is_empty() {
            return bad("the server address is empty");
        }
        if self.username.is_empty() {
            return bad("the username is empty");
        }
        if self.liveness.heartbeat.is_zero() || self.liveness.dead_after <= self.liveness.heartbeat
        {
            return bad("liveness needs 0 < heartbeat < dead_after");
        }
        // Room for a Login with a long password and a few hundred bytes of
        // event; anything smaller cannot work at all.
        if self.max_frame < 1024 {
            return bad("max_frame must be at least 1024 bytes");
        }
        Ok(())
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("store_path", &self.store_path)
            .field("liveness", &self.liveness)
            .field("backoff", &self.backoff)
            .field("max_frame", &self.max_frame)
            .field("expected_fingerprint", &self.expected_fingerprint)
            .field("trust_on_first_use", &self.trust_on_first_use)
            .field("ack_policy", &self.ack_policy)
            .finish()
    }
}

/// The store for one account under the OS data directory, e.g.
/// `~/.local/share/holdfast/accounts/<server>_<user>.sqlite3` on Linux.
///
/// One store per account because the event cursor and the outbox belong to
/// one agent's stream. The name escapes everything but `[A-Za-z0-9.-]` as
/// `_XX`, so distinct accounts never share a file.
pub fn default_store_path(server: &str, username: &str) -> Result<PathBuf, ClientError> {
    let dirs = directories::ProjectDirs::from("io", "Holdfast", "Holdfast")
        .ok_or(ClientError::NoDataDir)?;
    let mut name = escape(server);
    name.push_str("__");
    name.push_str(&escape(username));
    name.push_str(".sqlite3");
    Ok(dirs.data_dir().join("accounts").join(name))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_accounts_apart() {
        assert_eq!(escape("127.0.0.1:7000"), "127.0.0.1_3a7000");
        assert_ne!(escape("a_b"), escape("a:b"));
        assert_ne!(escape("a__b"), escape("a_5fb"));
    }

    #[test]
    fn default_path_is_per_account_under_the_data_dir() {
        match default_store_path("chat.example:7000", "alice") {
            Ok(p) => {
                assert!(
                    p.ends_with("accounts/chat.example_3a7000__alice.sqlite3"),
                    "{p:?}"
                );
            }
            // No home directory in this environment.
            Err(ClientError::NoDataDir) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
