//! Starting the core, and the handle the UI holds.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use holdfast_protocol::agent::{
    Action, AgentId, ConversationId, ConversationInfo, GroupInfo, InviteRuleSpec, MessageId,
    Presence,
};
use holdfast_protocol::delivery::Outbox;
use holdfast_protocol::ids::MsgId;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use zeroize::Zeroizing;

use crate::config::ClientConfig;
use crate::core::{Core, CoreParts, Pending, Request};
use crate::error::ClientError;
use crate::store::{ConversationSummary, MessageOrder, Store, StoredMessage, Workspace};
use crate::update::{ConnState, ConnectionStatus, PendingUpload, SignOutResult, Update};

/// Capacity of the update channel. Past it, updates are dropped and a
/// `Resync` follows (see [`crate::update`]).
pub const UPDATE_CAPACITY: usize = 1024;
const REQUEST_CAPACITY: usize = 64;

/// Open the store, restore the outbox and spawn the core task. Must be
/// called inside a tokio runtime.
pub fn start(config: ClientConfig) -> Result<(ClientHandle, mpsc::Receiver<Update>), ClientError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
    config.validate()?;
    let mut store = Store::open(&config.store_path)?;
    match store.account()? {
        Some(a) if a.server != config.server || a.username != config.username => {
            return Err(ClientError::AccountMismatch {
                stored_server: a.server,
                stored_user: a.username,
                server: config.server,
                user: config.username,
            });
        }
        Some(_) => {}
        None => store.set_account(&config.server, &config.username)?,
    }
    let outbox = Outbox::restore(
        store.commands_acked()?,
        store.outbox()?.into_iter().map(|e| {
            (
                e.seq,
                Pending {
                    id: e.id,
                    action: e.action,
                },
            )
        }),
    );
    let cursor = store.cursor()?;
    let device_id = store.device_id();
    let files = crate::core::uploads::files_dir(&config.store_path);
    let reader = Store::open(&config.store_path)?;

    let (req_tx, req_rx) = mpsc::channel(REQUEST_CAPACITY);
    let (upd_tx, upd_rx) = mpsc::channel(UPDATE_CAPACITY);
    let (status_tx, status_rx) = watch::channel(ConnectionStatus {
        state: ConnState::Disconnected,
        unsent: outbox.unacked(),
    });
    let (groups_tx, groups_rx) = watch::channel(Vec::new());
    let core = Core::new(CoreParts {
        cfg: config,
        store,
        outbox,
        cursor,
        requests: req_rx,
        updates: upd_tx,
        status: status_tx,
        groups: groups_tx,
    });
    let task = runtime.spawn(core.run());
    Ok((
        ClientHandle {
            requests: req_tx,
            status: status_rx,
            groups: groups_rx,
            reader: Arc::new(Mutex::new(reader)),
            abort: task.abort_handle(),
            device_id,
            next_history: Arc::new(Mutex::new(1)),
            files,
        },
        upd_rx,
    ))
}

/// The UI's handle on the core. Cheap to clone. When every clone is
/// dropped, the core shuts down as if `shutdown` had been called.
///
/// Action methods return once the action is durably in the local outbox;
/// the server's verdict arrives later as an [`Update`]. Read methods query
/// the store directly through a separate read connection; they block for a
/// few milliseconds at most.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<ConnectionStatus>,
    groups: watch::Receiver<Vec<GroupInfo>>,
    reader: Arc<Mutex<Store>>,
    abort: AbortHandle,
    device_id: MsgId,
    /// The id of the next history query, 1, 2, … (wrapping to 1), shared by
    /// every clone of the handle: the id goes with the request, so the
    /// caller has it before any answer can arrive.
    next_history: Arc<Mutex<u32>>,
    /// Where files to send are kept until sent, and downloads are cached:
    /// beside the store, per account.
    files: PathBuf,
}

impl ClientHandle {
    async fn request(&self, req: Request) -> Result<(), ClientError> {
        self.requests
            .send(req)
            .await
            .map_err(|_| ClientError::Stopped)
    }

    async fn action(&self, action: Action) -> Result<MsgId, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Action { action, reply }).await?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Post a message; it shows as `Queued` at once (an `Update::Message`).
    pub async fn send_message(
        &self,
        conversation: ConversationId,
        body: impl Into<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Send {
            conversation,
            body: body.into(),
            attachment: None,
        })
        .await
    }

    /// Open a conversation with a browsing visitor.
    pub async fn invite(
        &self,
        visitor: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Invite {
            visitor: visitor.into(),
            body: body.into(),
        })
        .await
    }

    pub async fn accept(&self, conversation: ConversationId) -> Result<MsgId, ClientError> {
        self.action(Action::Accept { conversation }).await
    }

    pub async fn close(&self, conversation: ConversationId) -> Result<MsgId, ClientError> {
        self.action(Action::Close { conversation }).await
    }

    /// Shut a visitor out of the site's chat (and, with `by_address`, the
    /// address it last came from); ends its open chat. `reason` is kept for
    /// the site's staff.
    pub async fn block(
        &self,
        visitor: impl Into<String>,
        by_address: bool,
        reason: impl Into<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Block {
            visitor: visitor.into(),
            by_address,
            reason: reason.into(),
        })
        .await
    }

    /// An internal note in a conversation: agents see it as
    /// `Author::Note`; the visitor never does.
    pub async fn note(
        &self,
        conversation: ConversationId,
        body: impl Into<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Note {
            conversation,
            body: body.into(),
        })
        .await
    }

    /// Set a conversation's tags to exactly `tags` (from the site's list;
    /// empty clears them).
    pub async fn tag(
        &self,
        conversation: ConversationId,
        tags: Vec<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Tag { conversation, tags }).await
    }

    /// Add a canned reply (`id: None`) or replace one: the agent's own
    /// (`personal`) or, for an admin, the site's. The new list arrives as
    /// [`crate::Update::Canned`].
    pub async fn save_canned(
        &self,
        id: Option<u64>,
        personal: bool,
        shortcut: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::SaveCanned {
            id,
            personal,
            shortcut: shortcut.into(),
            body: body.into(),
        })
        .await
    }

    pub async fn delete_canned(&self, id: u64) -> Result<MsgId, ClientError> {
        self.action(Action::DeleteCanned { id }).await
    }

    /// Add an invitation rule to the site (`id: None`) or replace rule
    /// `id`'s words and conditions (10.20). Admins only: anyone else's is
    /// refused `forbidden`. Every admin of the site signed in gets the new
    /// list as [`crate::Update::InviteRules`].
    pub async fn save_invite_rule(
        &self,
        id: Option<u64>,
        rule: InviteRuleSpec,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::SaveInviteRule { id, rule }).await
    }

    /// Remove invitation rule `id`; its invitations stay on record.
    pub async fn delete_invite_rule(&self, id: u64) -> Result<MsgId, ClientError> {
        self.action(Action::DeleteInviteRule { id }).await
    }

    /// Switch invitation rule `id` on or off, keeping it and its counts.
    pub async fn enable_invite_rule(&self, id: u64, enabled: bool) -> Result<MsgId, ClientError> {
        self.action(Action::EnableInviteRule { id, enabled }).await
    }

    /// Ask for the site's invitation rules with their counts as of now (an
    /// admin's; anyone else is refused `forbidden`). Returns the request id
    /// at once; the list comes as [`crate::Update::InviteRules`], a refusal
    /// as `Update::History` with that id and `QueryResult::Refused`. Kept
    /// and resent after a reconnect like a history request.
    pub fn load_invite_rules(&self) -> Result<u32, ClientError> {
        self.query(|request| Request::InviteRules { request })
    }

    /// Let a blocked visitor back in.
    pub async fn unblock(&self, visitor: impl Into<String>) -> Result<MsgId, ClientError> {
        self.action(Action::Unblock {
            visitor: visitor.into(),
        })
        .await
    }

    pub async fn set_presence(&self, presence: Presence) -> Result<MsgId, ClientError> {
        self.action(Action::SetPresence { presence }).await
    }

    /// Move a conversation to one of the site's groups (10.23): it leaves
    /// its owner and goes to a free agent of the group, or waits in the
    /// group's queue. `from` is who serves it now as this app last saw it,
    /// as for [`ClientHandle::transfer`].
    pub async fn transfer_to_group(
        &self,
        conversation: ConversationId,
        from: Option<AgentId>,
        group: impl Into<String>,
        note: Option<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::TransferToGroup {
            conversation,
            from,
            group: group.into(),
            note: note.filter(|n| !n.trim().is_empty()),
        })
        .await
    }

    /// Hand a conversation to another agent. `from` is who serves it now as
    /// this app last saw it (`None` for a waiting chat): if it has changed
    /// hands since, the server refuses, so two people moving one chat at
    /// once cannot both win.
    pub async fn transfer(
        &self,
        conversation: ConversationId,
        from: Option<AgentId>,
        to: AgentId,
        note: Option<String>,
    ) -> Result<MsgId, ClientError> {
        self.action(Action::Transfer {
            conversation,
            from,
            to,
            note: note.filter(|n| !n.trim().is_empty()),
        })
        .await
    }

    /// The agent is typing in `conversation`'s composer (`true`, on every
    /// edit: the core sends a start at most every 2 s) or cleared it or
    /// sent (`false`). A signal: dropped when offline or when the core is
    /// busy, never stored.
    pub fn typing(&self, conversation: ConversationId, typing: bool) -> Result<(), ClientError> {
        self.requests
            .try_send(Request::Typing {
                conversation,
                typing,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => ClientError::Busy,
                TrySendError::Closed(_) => ClientError::Stopped,
            })
    }

    /// Sign out on purpose: once everything queued is acked, the server
    /// hands this agent's open chats back (unless another of its devices is
    /// connected) and the core stops. Offline, it answers at once and the
    /// server's grace period takes over. Call `shutdown` after it.
    pub async fn sign_out(&self) -> Result<SignOutResult, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::SignOut { reply }).await?;
        rx.await.map_err(|_| ClientError::Stopped)
    }

    /// Ask for a page of a visitor's history. Returns at once with the
    /// request id the `Update::History` will carry, so the caller can note
    /// what it asked for before any answer can reach it. Sent when live;
    /// kept and resent after a reconnect until answered. `Busy` if the core
    /// is too far behind on requests to take one more now.
    pub fn load_history(
        &self,
        visitor: impl Into<String>,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<u32, ClientError> {
        let visitor = visitor.into();
        self.query(|request| Request::History {
            request,
            visitor,
            before,
            limit,
        })
    }

    /// Ask for a signed, expiring download link for an attachment a message
    /// carries. Returns the request id at once; the answer comes as
    /// `Update::History` with that id and a `QueryResult::AttachmentLink`
    /// (paths on the server's HTTP origin) or `Refused`. Kept and resent
    /// after a reconnect like a history request.
    pub fn link(&self, attachment_id: impl Into<String>) -> Result<u32, ClientError> {
        let id = attachment_id.into();
        self.query(|request| Request::AttachmentLink { request, id })
    }

    /// Send a file, with `body` as the message text (may be empty). The file
    /// is copied into the client's data directory and recorded in the store
    /// before this returns, so it is sent even if the app is closed or
    /// killed meanwhile: it uploads in the background (resuming where the
    /// server's stored bytes end after a reconnect or a restart, never from
    /// zero), and only once the server has all of it does the message that
    /// carries it go into the outbox, under the returned id. Progress comes
    /// as `Update::Upload`; the message itself as `Update::Message` once
    /// queued. The original file may be changed or deleted after this
    /// returns.
    pub async fn send_file(
        &self,
        conversation: ConversationId,
        path: PathBuf,
        body: String,
    ) -> Result<MsgId, ClientError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_string());
        self.upload(conversation, name, Source::Path(path), body)
            .await
    }

    /// As [`ClientHandle::send_file`] for bytes in memory (a pasted
    /// screenshot), named `name`.
    pub async fn send_file_bytes(
        &self,
        conversation: ConversationId,
        name: String,
        bytes: Vec<u8>,
        body: String,
    ) -> Result<MsgId, ClientError> {
        self.upload(conversation, name, Source::Bytes(bytes), body)
            .await
    }

    async fn upload(
        &self,
        conversation: ConversationId,
        name: String,
        source: Source,
        body: String,
    ) -> Result<MsgId, ClientError> {
        let now = u64::try_from(crate::store::now_ms()).unwrap_or(0);
        let id = MsgId::generate(now, &mut rand::rng());
        let dest = crate::core::uploads::outgoing_path(&self.files, &id);
        let d2 = dest.clone();
        let total = tokio::task::spawn_blocking(move || keep_copy(&source, &d2))
            .await
            .map_err(|_| ClientError::Stopped)??;
        let (reply, rx) = oneshot::channel();
        let sent = self
            .request(Request::Upload {
                upload: crate::core::uploads::NewUpload {
                    id,
                    conversation,
                    name,
                    body,
                    file: dest.clone(),
                    total,
                },
                reply,
            })
            .await;
        let r = match sent {
            Ok(()) => rx.await.map_err(|_| ClientError::Stopped)?,
            Err(e) => Err(e),
        };
        if r.is_err() {
            // Not recorded: nothing will send it, so the copy goes.
            let _ = std::fs::remove_file(&dest);
        }
        r.map(|()| id)
    }

    /// Stop sending file `id` (the id `send_file` returned). `true` if it
    /// was stopped (or had failed and is now dismissed): nothing of it is
    /// sent. `false` if it is too late: the upload has completed and its
    /// message is in the outbox (or sent), where it is sent like any other
    /// message; or no such file is pending.
    pub async fn cancel_upload(&self, id: MsgId) -> Result<bool, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::CancelUpload { id, reply }).await?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Files not sent yet (uploading, waiting for the send's ack, or
    /// failed), oldest first: what a UI shows after a restart.
    pub fn pending_uploads(&self) -> Result<Vec<PendingUpload>, ClientError> {
        Ok(self.reader().pending_uploads()?)
    }

    /// Download attachment `id` (its thumbnail with `thumb`) into a cache
    /// file under the client's data directory, in chunks over the agent
    /// channel. Returns the request id at once; the answer is
    /// `Update::AttachmentReady` (with the file's path and type) or
    /// `Update::AttachmentFailed` with that id. A file fetched before is
    /// answered from the cache.
    pub fn fetch_attachment(&self, id: impl Into<String>, thumb: bool) -> Result<u32, ClientError> {
        let id = id.into();
        self.query(|request| Request::Fetch { request, id, thumb })
    }

    /// Queue a query under the next request id, which the answer carries.
    fn query(&self, make: impl FnOnce(u32) -> Request) -> Result<u32, ClientError> {
        let mut next = self
            .next_history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let request = *next;
        self.requests.try_send(make(request)).map_err(|e| match e {
            TrySendError::Full(_) => ClientError::Busy,
            TrySendError::Closed(_) => ClientError::Stopped,
        })?;
        *next = next.checked_add(1).unwrap_or(1);
        Ok(request)
    }

    /// Drop the current connection (or wait) and connect at once.
    pub async fn reconnect_now(&self) -> Result<(), ClientError> {
        self.request(Request::ReconnectNow).await
    }

    /// Answer `Update::FingerprintUnknown`. After a mismatch (or a refusal),
    /// `true` replaces the pin with the key the server presented and
    /// connects again.
    pub async fn trust_fingerprint(&self, trust: bool) -> Result<(), ClientError> {
        self.request(Request::Trust(trust)).await
    }

    /// Use another password from now on and connect again.
    pub async fn set_password(&self, password: Zeroizing<String>) -> Result<(), ClientError> {
        self.request(Request::SetPassword(password)).await
    }

    /// Everything in `conversation` so far has been read.
    pub async fn mark_read(&self, conversation: ConversationId) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::MarkRead {
            conversation,
            reply,
        })
        .await?;
        rx.await.map_err(|_| ClientError::Stopped)?
    }

    /// Stop the core and close its store. Unsent actions stay in the outbox
    /// for the next start. Returns once the store is closed.
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        if self.request(Request::Shutdown { reply }).await.is_err() {
            return Ok(()); // already stopped
        }
        let _stopped = rx.await;
        Ok(())
    }

    /// Kill the core task at its next await point, with no graceful steps,
    /// as a crash would. For fault-injection tests.
    #[doc(hidden)]
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Whether the core task has ended.
    pub fn is_finished(&self) -> bool {
        self.requests.is_closed()
    }

    /// The current connection status.
    pub fn status(&self) -> ConnectionStatus {
        self.status.borrow().clone()
    }

    /// A receiver that always holds the latest status (never lags).
    pub fn status_watch(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.clone()
    }

    /// The site's groups (departments, 10.23) as the server last sent
    /// them: at each login and within a second of any change. Each says
    /// whether this agent is in it (its waiting chats are this agent's to
    /// take) and whether it is open. Empty until the first login.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups.borrow().clone()
    }

    /// A receiver that always holds the latest groups list: `changed()`
    /// wakes on each new one.
    pub fn groups_watch(&self) -> watch::Receiver<Vec<GroupInfo>> {
        self.groups.clone()
    }

    /// Whether a chat is this agent's to take from the queue: a chat for
    /// no group is everyone's; one for a group is its members' (and,
    /// `oversees`, a supervisor's or admin's, who see every queue). The
    /// server refuses an agent outside the group who tries.
    pub fn offered_to_me(&self, info: &ConversationInfo, oversees: bool) -> bool {
        match &info.group {
            None => true,
            Some(g) => oversees || self.groups.borrow().iter().any(|x| &x.key == g && x.member),
        }
    }

    pub fn device_id(&self) -> MsgId {
        self.device_id
    }

    fn reader(&self) -> MutexGuard<'_, Store> {
        // A panic while reading cannot leave a read connection inconsistent.
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything the UI needs to draw, from the store.
    pub fn cached_workspace(&self) -> Result<Workspace, ClientError> {
        Ok(self.reader().cached_workspace()?)
    }

    pub fn conversations(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        Ok(self.reader().conversations()?)
    }

    /// See [`Store::messages_page`].
    pub fn messages_page(
        &self,
        conversation: ConversationId,
        before: Option<MessageOrder>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        Ok(self.reader().messages_page(conversation, before, limit)?)
    }

    pub fn unread(&self, conversation: ConversationId) -> Result<u32, ClientError> {
        Ok(self.reader().unread(conversation)?)
    }
}

/// Where the bytes of a file to send come from.
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// Copies `source` to `dest`, fsynced with its directory, so the file is
/// on disk before the store says it is to be sent; its length.
fn keep_copy(source: &Source, dest: &Path) -> Result<u64, ClientError> {
    use std::io::Write as _;
    let fail = |source: std::io::Error| ClientError::File {
        path: dest.to_path_buf(),
        source,
    };
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut f = std::fs::File::create(dest).map_err(fail)?;
    let total = match source {
        Source::Path(p) => {
            let mut src = std::fs::File::open(p).map_err(|source| ClientError::File {
                path: p.clone(),
                source,
            })?;
            std::io::copy(&mut src, &mut f).map_err(fail)?
        }
        Source::Bytes(b) => {
            f.write_all(b).map_err(fail)?;
            b.len() as u64
        }
    };
    f.sync_all().map_err(fail)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)?;
    Ok(total)
}
