//! The real agent client core (`holdfast-client`) as a test peer:
//! the same outbox, cursor store, pinning, heartbeats and backoff the
//! desktop app runs, driven by a test instead of a window.

use std::path::{Path, PathBuf};
use std::time::Duration;

use holdfast_client::{
    ClientConfig, ClientHandle, ConnState, DeliveryState, StoredMessage, Update, start,
};
use holdfast_protocol::agent::{
    Author, ChatMessage, ConversationId, ConversationInfo, QueryResult, TeamMember, VisitorInfo,
};
use holdfast_protocol::backoff::BackoffConfig;
use holdfast_protocol::error::ErrorCode;
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
    pub async fn until<T>(&mut self, what: &str, f: impl FnMut(&Update) -> Option<T>) -> T {
        self.until_within(WAIT, what, f).await
    }

    /// [`Self::until`] with its own bound, for a wait whose length is the
    /// point of the test rather than the harness's default.
    pub async fn until_within<T>(
        &mut self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Update) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + limit;
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
        self.live_within(WAIT).await;
    }

    /// Waits for the connection to be live, panicking after `limit`.
    pub async fn live_within(&mut self, limit: Duration) {
        if self.handle.status().state == ConnState::Live {
            return;
        }
        self.until_within(limit, "the connection to be live", |u| match u {
            Update::Connection(s) if s.state == ConnState::Live => Some(()),
            _ => None,
        })
        .await;
    }

    /// The state the core stopped in (it stops for good: a refused login,
    /// a key mismatch, a sign-out).
    pub async fn stopped(&mut self) -> ConnState {
        self.until("the core to stop", |u| match u {
            Update::Connection(s) if matches!(s.state, ConnState::Stopped { .. }) => {
                Some(s.state.clone())
            }
            _ => None,
        })
        .await
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

    /// The server's verdict on the command `id`.
    pub async fn outcome(&mut self, id: MsgId) -> Result<(), (ErrorCode, String)> {
        self.until("a command outcome", |u| match u {
            Update::CommandDone { id: i, .. } if *i == id => Some(Ok(())),
            Update::CommandRejected {
                id: i,
                code,
                message,
            } if *i == id => Some(Err((*code, message.clone()))),
            _ => None,
        })
        .await
    }

    /// A conversation for which `pred` holds in its latest state: one seen
    /// already, or the next update.
    pub async fn conversation_where(
        &mut self,
        pred: impl Fn(&ConversationInfo) -> bool,
    ) -> ConversationInfo {
        let mut latest: std::collections::BTreeMap<ConversationId, &ConversationInfo> =
            std::collections::BTreeMap::new();
        for u in &self.seen {
            if let Update::Conversation(c) = u {
                latest.insert(c.id, c);
            }
        }
        if let Some(c) = latest.values().find(|c| pred(c)) {
            return (*c).clone();
        }
        // A snapshot fills the store without an update per conversation.
        if let Ok(list) = self.handle.conversations()
            && let Some(s) = list.into_iter().find(|s| pred(&s.info))
        {
            return s.info;
        }
        self.until("a matching conversation", |u| match u {
            Update::Conversation(c) if pred(c) => Some(c.clone()),
            _ => None,
        })
        .await
    }

    /// The team member `agent` once `pred` holds for its latest state.
    pub async fn member_where(
        &mut self,
        agent: u64,
        pred: impl Fn(&TeamMember) -> bool,
    ) -> TeamMember {
        let mut latest = None;
        for u in &self.seen {
            match u {
                Update::TeamMember(m) if m.agent == agent => latest = Some(m),
                Update::Team(list) => {
                    if let Some(m) = list.iter().find(|m| m.agent == agent) {
                        latest = Some(m);
                    }
                }
                _ => {}
            }
        }
        if let Some(m) = latest.filter(|m| pred(m)) {
            return m.clone();
        }
        self.until("a matching team member", |u| match u {
            Update::TeamMember(m) if m.agent == agent && pred(m) => Some(m.clone()),
            Update::Team(list) => list.iter().find(|m| m.agent == agent && pred(m)).cloned(),
            _ => None,
        })
        .await
    }

    /// The newest page (up to 50 messages, newest first) of a visitor's
    /// history, as the server answers `Query::History`.
    pub async fn history(&mut self, visitor: &str) -> Vec<ChatMessage> {
        let request = self
            .handle
            .load_history(visitor.to_owned(), None, 50)
            .expect("ask for history");
        let result = self
            .until("history", |u| match u {
                Update::History { request: r, result } if *r == request => Some(result.clone()),
                _ => None,
            })
            .await;
        let QueryResult::History { messages, .. } = result else {
            panic!("history refused: {result:?}")
        };
        messages
    }

    /// Every message in a conversation as the local store has it, in the
    /// order the app shows them.
    pub fn messages(&self, conversation: ConversationId) -> Vec<StoredMessage> {
        let mut page = self
            .handle
            .messages_page(conversation, None, 10_000)
            .expect("read the local store");
        page.sort_by_key(|m| m.order);
        page
    }

    /// Every message body in a conversation as the local store has it,
    /// oldest first: what people wrote, without system lines.
    pub fn bodies(&self, conversation: ConversationId) -> Vec<String> {
        self.messages(conversation)
            .into_iter()
            .filter(|m| !matches!(m.author, Author::System))
            .map(|m| m.body)
            .collect()
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

/// A real client core signed in as `user` to `srv` (its store under
/// `dir`), once it is live.
pub async fn live(
    srv: &crate::server::TestServer,
    user: &str,
    dir: &tempfile::TempDir,
) -> CoreAgent {
    let mut a = CoreAgent::start(fast_config(
        &srv.agent_addr().to_string(),
        user,
        &dir.path().join(format!("{user}.sqlite3")),
        srv.running().fingerprint,
    ));
    a.live().await;
    a
}
