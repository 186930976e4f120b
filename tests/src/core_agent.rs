//! The real agent client core (`holdfast-agent`'s library) as a test peer:
//! the same outbox, cursor store, pinning, heartbeats and backoff the
//! desktop app runs, driven by a test instead of a window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_agent::{
    ClientConfig, ClientHandle, ConnState, DeliveryState, StoredMessage, Update, start,
};
use holdfast_protocol::agent::{Author, ConversationId, VisitorInfo};
use holdfast_protocol::backoff::BackoffConfig;
use holdfast_protocol::handshake::Fingerprint;
use holdfast_protocol::ids::MsgId;
use holdfast_protocol::liveness::LivenessConfig;
use tokio::sync::mpsc::Receiver;
use zeroize::Zeroizing;

use crate::server::PASSWORD;

/// How long a test waits for any one update.
pub const WAIT: Duration = Duration::from_secs(15);

/// A client core logged in (or trying to) as one agent.
#[derive(Debug)]
pub struct CoreAgent {
    pub handle: ClientHandle,
    pub updates: Receiver<Update>,
    pub store_path: PathBuf,
    /// Every update seen so far, for assertions after the fact.
    pub seen: Vec<Update>,
}

/// A config for `user` on `server`, with the server's key preconfigured as
/// an installer would, and heartbeats short enough for tests.
pub fn fast_config(
    server: &str,
    user: &str,
    store_path: &Path,
    fingerprint: Fingerprint,
) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        server,
        user,
        Zeroizing::new(PASSWORD.to_owned()),
        store_path,
    );
    cfg.expected_fingerprint = Some(fingerprint);
    cfg.liveness = LivenessConfig {
        heartbeat: Duration::from_millis(300),
        dead_after: Duration::from_millis(1500),
    };
    cfg.backoff = BackoffConfig {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(500),
    };
    cfg
}

impl CoreAgent {
    pub fn start(cfg: ClientConfig) -> Self {
        let store_path = cfg.store_path.clone();
        let (handle, updates) = start(cfg).expect("client core starts");
        Self {
            handle,
            updates,
            store_path,
            seen: Vec::new(),
        }
    }

    /// The next update for which `f` returns `Some`, skipping the rest.
    pub async fn until<T>(&mut self, what: &str, mut f: impl FnMut(&Update) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let u = tokio::time::timeout_at(deadline, self.updates.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; seen {:#?}", self.tail()))
                .unwrap_or_else(|| panic!("client core stopped while waiting for {what}"));
            let hit = f(&u);
            self.seen.push(u);
            if let Some(t) = hit {
                return t;
            }
        }
    }

    fn tail(&self) -> &[Update] {
        &self.seen[self.seen.len().saturating_sub(20)..]
    }

    pub async fn live(&mut self) {
        if self.handle.status().state == ConnState::Live {
            return;
        }
        self.until("the connection to be live", |u| match u {
            Update::Connection(s) if s.state == ConnState::Live => Some(()),
            _ => None,
        })
        .await;
    }

    /// The next state other than live (backing off, stopped…).
    pub async fn not_live(&mut self) -> ConnState {
        self.until("the connection to drop", |u| match u {
            Update::Connection(s) if !matches!(s.state, ConnState::Live) => Some(s.state.clone()),
            _ => None,
        })
        .await
    }

    /// The visitor as the agent's live list shows it, once `pred` holds.
    pub async fn visitor_where(&mut self, pred: impl Fn(&VisitorInfo) -> bool) -> VisitorInfo {
        self.until("a matching visitor", |u| match u {
            Update::Visitor(v) if pred(v) => Some((**v).clone()),
            Update::Visitors(vs) => vs.iter().find(|v| pred(v)).cloned(),
            _ => None,
        })
        .await
    }

    /// The next message from a visitor, as applied to the local store.
    pub async fn visitor_message(&mut self) -> StoredMessage {
        self.until("a visitor message", |u| match u {
            Update::Message(m) if matches!(m.author, Author::Visitor { .. }) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until the agent's own message `id` reaches `state`.
    pub async fn state_of(&mut self, id: MsgId, state: DeliveryState) {
        self.until("a delivery state", |u| match u {
            Update::MessageState {
                client_id,
                state: s,
                ..
            } if *client_id == id && *s == state => Some(()),
            _ => None,
        })
        .await;
    }

    /// Every message body in a conversation as the local store has it,
    /// oldest first.
    pub fn bodies(&self, conversation: ConversationId) -> Vec<String> {
        let mut page = self
            .handle
            .messages_page(conversation, None, 10_000)
            .expect("read the local store");
        page.sort_by_key(|m| m.order);
        page.into_iter().map(|m| m.body).collect()
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}
