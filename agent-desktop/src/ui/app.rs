//! The application state and its update logic (the view is in `view.rs`).
//!
//! The app is two screens over one client session: the login screen until
//! the first successful sign-in (or straight to the workspace when a cached
//! store for the remembered account exists), then the workspace. A server
//! key prompt can cover either. All networking is the core's: the app holds
//! a [`ClientHandle`] for commands and reads the core's [`Update`]s as a
//! stream turned into messages, tagged with a session epoch so a stream from
//! a replaced session can never touch the new one.

use std::path::PathBuf;
use std::time::Instant;

use holdfast_protocol::agent::{
    AgentId, ConversationId, ConversationInfo, ConversationState, Presence, QueryResult,
};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::Fingerprint;
use iced::Task;
use iced::widget::text_editor;
use zeroize::Zeroizing;

use crate::ui::desk::{DEFAULT_INVITE, Desk, HISTORY_PAGE, PendingOpen, message_text};
use crate::ui::format;
use crate::ui::notify::{Alert, Notifier};
use crate::ui::prefs::Prefs;
use holdfast_client::store::{Session, now_ms};
use holdfast_client::{
    ClientConfig, ClientHandle, ConnState, ConnectionStatus, SignOutResult, StopReason, Store,
    StoredMessage, Update, default_store_path,
};

/// Page size for "Load earlier messages" (local store).
pub const PAGE: u32 = 50;
/// Visitor histories kept in memory at once.
const HISTORY_KEEP: usize = 32;

/// How the app was started (command line, or a test).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub server: Option<String>,
    pub username: Option<String>,
    /// Sign in at once with this password (from the environment; never
    /// stored).
    pub password: Option<Zeroizing<String>>,
    /// Use this store instead of the per-account one under the data dir.
    pub store: Option<PathBuf>,
    /// Where the remembered server and username live; `None` to remember
    /// nothing.
    pub prefs_path: Option<PathBuf>,
    /// Show OS notifications and play the chime.
    pub notifications: bool,
    /// Local time offset for timestamps, in seconds east of UTC.
    pub utc_offset_secs: i32,
    /// Adjust the client configuration before start (tests shorten
    /// timings).
    pub tune: Option<fn(&mut ClientConfig)>,
    /// A server key fingerprint preconfigured by the installer, pinned on
    /// first contact instead of asking.
    pub expected_fingerprint: Option<Fingerprint>,
    /// What an admin preconfigured for this machine (installer): the
    /// default server, and the key to pin when first talking to it.
    pub preconfig: Option<holdfast_client::preconfig::Preconfig>,
    /// Benchmark mode: print the time from this instant to the first frame
    /// on stderr, then exit.
    pub exit_after_first_frame: Option<Instant>,
}

#[derive(Debug, Clone)]
pub enum Message {
    // Login screen.
    ServerChanged(String),
    UsernameChanged(String),
    PasswordChanged(String),
    SignIn,
    StartCore,
    CancelSignIn,
    // Server key prompt.
    Trust(bool),
    // The core.
    Core(u64, Box<Update>),
    CoreEnded(u64),
    // Workspace.
    Tick,
    Focus(bool),
    FirstFrame,
    SelectConversation(ConversationId),
    SelectVisitor(String),
    InviteTextChanged(String),
    Invite(String),
    Accept(ConversationId),
    CloseConversation(ConversationId),
    SetPresence(Presence),
    Compose(text_editor::Action),
    Send,
    LoadEarlier,
    /// Load a visitor's history: the newest page, or (`older`) the page
    /// before the oldest one loaded.
    LoadHistory {
        visitor: String,
        older: bool,
    },
    ReconnectNow,
    /// "Open chat" on a visitor in the list.
    OpenVisitorChat(String),
    // Transfer.
    TransferOpen(ConversationId),
    TransferTo(AgentId),
    TransferNote(String),
    TransferSend,
    TransferCancel,
    // Signing out.
    SignOut,
    /// Sign out and let the server hand the open chats back.
    SignOutConfirm,
    /// Transfer every open chat to this agent, then sign out.
    SignOutTransferAll(AgentId),
    SignOutCancel,
    SignOutFinished(Result<SignOutResult, String>),
    SignedOut,
    DismissBanner,
    /// An action reached the outbox (or failed to).
    ActionDone(Result<(), String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Login,
    Workspace,
}

/// A server key decision the user has to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustPrompt {
    Unknown {
        server: String,
        fingerprint: Fingerprint,
    },
    Mismatch {
        server: String,
        pinned: Fingerprint,
        presented: Fingerprint,
    },
}

/// The transfer panel of one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferForm {
    pub conversation: ConversationId,
    /// Who served it when the panel opened: the server refuses the transfer
    /// if that changed meanwhile.
    pub from: Option<AgentId>,
    pub to: Option<AgentId>,
    pub note: String,
}

#[derive(Debug, Default)]
pub struct LoginForm {
    pub server: String,
    pub username: String,
    pub password: Zeroizing<String>,
    pub error: Option<String>,
    /// Something to know that is not an error (how the last sign-out went).
    pub notice: Option<String>,
    /// A sign-in is in progress.
    pub busy: bool,
}

/// The whole app.
#[derive(Debug)]
pub struct App {
    pub opts: Options,
    pub screen: Screen,
    pub login: LoginForm,
    pub trust: Option<TrustPrompt>,
    pub desk: Desk,
    pub status: ConnectionStatus,
    /// Signed in during this run (a `LoggedIn` arrived).
    pub signed_in: bool,
    /// The store the current or next session uses.
    pub store_path: Option<PathBuf>,
    /// Password for re-signing in from the workspace's connection bar.
    pub bar_password: Zeroizing<String>,
    pub focused: bool,
    pub now_ms: i64,
    pub now: Instant,
    pub notifier: Notifier,
    pub transfer: Option<TransferForm>,
    /// Asking before a sign-out that leaves open chats behind.
    pub sign_out_prompt: bool,
    /// A sign-out is waiting for the server.
    pub signing_out: bool,
    handle: Option<ClientHandle>,
    epoch: u64,
}

impl App {
    /// Boot: remembered account, cached workspace, and a sign-in at once
    /// when a password was supplied.
    pub fn new(mut opts: Options) -> (Self, Task<Message>) {
        let prefs = opts
            .prefs_path
            .as_deref()
            .map(Prefs::load)
            .unwrap_or_default();
        let server = opts
            .server
            .clone()
            .or_else(|| (!prefs.server.is_empty()).then(|| prefs.server.clone()))
            .or_else(|| opts.preconfig.as_ref().and_then(|p| p.server.clone()))
            .unwrap_or_else(|| "localhost:7070".to_owned());
        let username = opts
            .username
            .clone()
            .or_else(|| (!prefs.username.is_empty()).then(|| prefs.username.clone()))
            .unwrap_or_default();
        let password = opts.password.take();
        let mut app = Self {
            notifier: Notifier::new(opts.notifications),
            opts,
            screen: Screen::Login,
            login: LoginForm {
                server,
                username,
                password: password.unwrap_or_default(),
                error: None,
                notice: None,
                busy: false,
            },
            trust: None,
            desk: Desk::new(),
            status: ConnectionStatus {
                state: ConnState::Disconnected,
                unsent: 0,
            },
            signed_in: false,
            store_path: None,
            bar_password: Zeroizing::default(),
            focused: true,
            now_ms: now_ms(),
            now: Instant::now(),
            transfer: None,
            sign_out_prompt: false,
            signing_out: false,
            handle: None,
            epoch: 0,
        };
        if !app.login.username.is_empty() {
            app.open_cached();
        }
        let task = if app.login.password.is_empty() || app.login.username.is_empty() {
            Task::none()
        } else {
            Task::done(Message::SignIn)
        };
        (app, task)
    }

    /// Show the remembered account's cached workspace at once, before any
    /// network, if its store exists.
    fn open_cached(&mut self) {
        let Ok(path) = self.resolve_store_path() else {
            return;
        };
        if !path.exists() {
            return;
        }
        let read = Store::open(&path).and_then(|s| {
            let account = s.account()?;
            Ok((account, s.cached_workspace()?))
        });
        match read {
            Ok((Some(account), ws))
                if account.server == self.login.server
                    && account.username == self.login.username
                    && ws.session.is_some() =>
            {
                self.status.unsent = ws.unsent;
                self.desk.load(ws);
                self.store_path = Some(path);
                self.screen = Screen::Workspace;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the cached workspace: {e}"),
        }
    }

    fn resolve_store_path(&self) -> Result<PathBuf, String> {
        match &self.opts.store {
            Some(p) => Ok(p.clone()),
            None => default_store_path(self.login.server.trim(), self.login.username.trim())
                .map_err(|e| e.to_string()),
        }
    }

    pub fn handle(&self) -> Option<&ClientHandle> {
        self.handle.as_ref()
    }

    pub fn title(&self) -> String {
        let unread = self.desk.unread_total();
        // The display name is the server's, set by an administrator; it
        // still goes through the same filter as everything on screen.
        let who = self
            .desk
            .me
            .as_ref()
            .map(|s| format!(" — {}", format::display_safe(&s.display_name)))
            .unwrap_or_default();
        if unread > 0 {
            format!("({unread}) Holdfast{who}")
        } else {
            format!("Holdfast{who}")
        }
    }

    /// The connection bar's words.
    pub fn connection_text(&self) -> String {
        let unsent = self.status.unsent;
        let unsent_part = if unsent > 0 {
            format!(" · {unsent} unsent")
        } else {
            String::new()
        };
        match &self.status.state {
            ConnState::Live => format!("Connected{unsent_part}"),
            ConnState::BackingOff { retry_at, .. } => {
                let left = format::seconds_left(retry_at.saturating_duration_since(self.now));
                format!("Reconnecting in {left} s{unsent_part}")
            }
            ConnState::Connecting
            | ConnState::Handshaking
            | ConnState::LoggingIn
            | ConnState::AwaitingTrust { .. } => format!("Connecting…{unsent_part}"),
            ConnState::Disconnected | ConnState::Stopped { .. } => {
                format!("Offline · {unsent} unsent")
            }
        }
    }

    /// The bar needs a password: never signed in this run, or refused.
    pub fn needs_password(&self) -> bool {
        self.handle.is_none()
            || matches!(
                self.status.state,
                ConnState::Stopped {
                    reason: StopReason::LoginRejected { .. }
                }
            )
    }

    pub fn update(&mut self, message: Message) -> Task<Message> {
        match message {
            Message::ServerChanged(s) => {
                self.login.server = s;
                Task::none()
            }
            Message::UsernameChanged(s) => {
                self.login.username = s;
                Task::none()
            }
            Message::PasswordChanged(s) => {
                if self.screen == Screen::Login {
                    self.login.password = Zeroizing::new(s);
                } else {
                    self.bar_password = Zeroizing::new(s);
                }
                Task::none()
            }
            Message::SignIn => self.sign_in(),
            Message::StartCore => self.start_core(),
            Message::CancelSignIn => {
                self.login.busy = false;
                self.stop_session()
            }
            Message::Trust(yes) => {
                let prompt = self.trust.take();
                let Some(h) = self.handle.clone() else {
                    return Task::none();
                };
                if !yes && matches!(prompt, Some(TrustPrompt::Mismatch { .. })) {
                    // A refused mismatch is the end of this session: back to
                    // the sign-in screen with the reason.
                    self.login.error = Some(
                        "Not connected: the server's key did not match the pinned key.".to_owned(),
                    );
                    self.login.busy = false;
                    self.screen = Screen::Login;
                    return self.stop_session();
                }
                if !yes {
                    self.login.busy = false;
                    self.login.error =
                        Some("Not connected: the server key was not trusted.".into());
                }
                Task::perform(
                    async move { h.trust_fingerprint(yes).await.map_err(|e| e.to_string()) },
                    Message::ActionDone,
                )
            }
            Message::Core(epoch, update) => {
                if epoch != self.epoch {
                    return Task::none();
                }
                self.on_update(*update)
            }
            Message::CoreEnded(epoch) => {
                if epoch == self.epoch {
                    self.handle = None;
                }
                Task::none()
            }
            Message::Tick => {
                self.now_ms = now_ms();
                self.now = Instant::now();
                Task::none()
            }
            Message::FirstFrame => match self.opts.exit_after_first_frame {
                Some(started) => {
                    eprintln!(
                        "first-frame-ms {:.1}",
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                    iced::exit()
                }
                None => Task::none(),
            },
            Message::Focus(f) => {
                self.focused = f;
                if f {
                    self.mark_selected_read()
                } else {
                    Task::none()
                }
            }
            Message::SelectConversation(id) => self.select(id),
            Message::SelectVisitor(v) => {
                self.desk.details_visitor = Some(v.clone());
                self.ensure_history(v)
            }
            Message::InviteTextChanged(s) => {
                self.desk.invite_text = s;
                Task::none()
            }
            Message::Invite(visitor) => {
                let body = self.desk.invite_text.trim().to_owned();
                let body = if body.is_empty() {
                    DEFAULT_INVITE.to_owned()
                } else {
                    body
                };
                self.desk.pending_open = Some(PendingOpen::Visitor(visitor.clone()));
                self.desk.details_visitor = Some(visitor.clone());
                self.with_handle(move |h| async move { h.invite(visitor, body).await.map(drop) })
            }
            Message::Accept(id) => {
                self.desk.pending_open = Some(PendingOpen::Conversation(id));
                self.with_handle(move |h| async move { h.accept(id).await.map(drop) })
            }
            Message::CloseConversation(id) => {
                self.with_handle(move |h| async move { h.close(id).await.map(drop) })
            }
            Message::SetPresence(p) => {
                self.desk.presence = Some(p);
                self.with_handle(move |h| async move { h.set_presence(p).await.map(drop) })
            }
            Message::Compose(action) => {
                if let Some(id) = self.desk.selected {
                    self.desk.drafts.entry(id).or_default().perform(action);
                }
                Task::none()
            }
            Message::Send => self.send(),
            Message::LoadEarlier => {
                self.load_earlier();
                Task::none()
            }
            Message::LoadHistory { visitor, older } => self.load_history(visitor, older),
            Message::ReconnectNow => self.with_handle(|h| async move { h.reconnect_now().await }),
            Message::OpenVisitorChat(visitor) => self.open_visitor_chat(&visitor),
            Message::TransferOpen(id) => {
                let from = self
                    .desk
                    .convs
                    .get(&id)
                    .filter(|c| c.info.state == ConversationState::Active)
                    .and_then(|c| c.info.assigned);
                self.transfer = Some(TransferForm {
                    conversation: id,
                    from,
                    to: None,
                    note: String::new(),
                });
                Task::none()
            }
            Message::TransferTo(agent) => {
                if let Some(t) = &mut self.transfer {
                    t.to = Some(agent);
                }
                Task::none()
            }
            Message::TransferNote(note) => {
                if let Some(t) = &mut self.transfer {
                    t.note = note;
                }
                Task::none()
            }
            Message::TransferCancel => {
                self.transfer = None;
                Task::none()
            }
            Message::TransferSend => {
                let Some(TransferForm {
                    conversation,
                    from,
                    to: Some(to),
                    note,
                }) = self.transfer.take()
                else {
                    return Task::none();
                };
                let note = Some(note.trim().to_owned()).filter(|n| !n.is_empty());
                self.with_handle(move |h| async move {
                    h.transfer(conversation, from, to, note).await.map(drop)
                })
            }
            Message::SignOut => {
                if self.desk.mine().is_empty() {
                    self.sign_out(None)
                } else {
                    self.sign_out_prompt = true;
                    Task::none()
                }
            }
            Message::SignOutConfirm => self.sign_out(None),
            Message::SignOutTransferAll(to) => self.sign_out(Some(to)),
            Message::SignOutCancel => {
                self.sign_out_prompt = false;
                Task::none()
            }
            Message::SignOutFinished(result) => {
                self.signing_out = false;
                self.login.notice = Some(match result {
                    Ok(SignOutResult::Released) => {
                        "Signed out. Your open chats were handed on.".to_owned()
                    }
                    Ok(SignOutResult::Offline | SignOutResult::TimedOut) | Err(_) => {
                        "Signed out while offline. Anything unsent goes out at your next \
                         sign-in; the server hands your open chats on once you have been \
                         offline for its grace period (2 minutes by default)."
                            .to_owned()
                    }
                });
                self.screen = Screen::Login;
                self.signed_in = false;
                self.desk = Desk::new();
                self.transfer = None;
                self.stop_session()
            }
            Message::SignedOut => Task::none(),
            Message::DismissBanner => {
                self.desk.banner = None;
                Task::none()
            }
            Message::ActionDone(res) => {
                if let Err(e) = res {
                    self.desk.banner = Some(e);
                }
                Task::none()
            }
        }
    }

    fn with_handle<F, Fut>(&mut self, f: F) -> Task<Message>
    where
        F: FnOnce(ClientHandle) -> Fut,
        Fut: Future<Output = Result<(), holdfast_client::ClientError>> + Send + 'static,
    {
        match self.handle.clone() {
            Some(h) => {
                let fut = f(h);
                Task::perform(
                    async move { fut.await.map_err(|e| e.to_string()) },
                    Message::ActionDone,
                )
            }
            None => {
                self.desk.banner = Some("Not signed in: enter your password to connect.".into());
                Task::none()
            }
        }
    }

    fn stop_session(&mut self) -> Task<Message> {
        self.epoch += 1;
        self.trust = None;
        self.status.state = ConnState::Disconnected;
        match self.handle.take() {
            Some(h) => Task::perform(async move { h.shutdown().await }, |_| Message::SignedOut),
            None => Task::none(),
        }
    }

    fn sign_in(&mut self) -> Task<Message> {
        if self.screen == Screen::Workspace && !self.bar_password.is_empty() {
            let pw = std::mem::take(&mut self.bar_password);
            if let Some(h) = self.handle.clone() {
                return Task::perform(
                    async move { h.set_password(pw).await.map_err(|e| e.to_string()) },
                    Message::ActionDone,
                );
            }
            self.login.password = pw;
        }
        if self.login.server.trim().is_empty() {
            self.login.error = Some("Enter the server address (host:port).".into());
            return Task::none();
        }
        if self.login.username.trim().is_empty() {
            self.login.error = Some("Enter your username.".into());
            return Task::none();
        }
        if self.login.password.is_empty() {
            self.login.error = Some("Enter your password.".into());
            return Task::none();
        }
        self.login.error = None;
        self.login.busy = true;
        // A previous session (another account, or a refused one) must have
        // closed its store before the next one opens it.
        let stop = self.stop_session();
        stop.chain(Task::done(Message::StartCore))
    }

    fn start_core(&mut self) -> Task<Message> {
        let path = match self.resolve_store_path() {
            Ok(p) => p,
            Err(e) => return self.fail_sign_in(e),
        };
        let mut cfg = ClientConfig::new(
            self.login.server.trim(),
            self.login.username.trim(),
            self.login.password.clone(),
            path.clone(),
        );
        // The installer's pin applies only to the server it names, so an
        // agent who types another address still gets the trust prompt.
        cfg.expected_fingerprint = self.opts.expected_fingerprint.or_else(|| {
            self.opts
                .preconfig
                .as_ref()
                .and_then(|p| p.fingerprint_for(self.login.server.trim()))
        });
        if let Some(tune) = self.opts.tune {
            tune(&mut cfg);
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            return self.fail_sign_in(format!("Cannot create {}: {e}", dir.display()));
        }
        let (handle, rx) = match holdfast_client::start(cfg) {
            Ok(x) => x,
            Err(e) => return self.fail_sign_in(e.to_string()),
        };
        self.epoch += 1;
        let epoch = self.epoch;
        match handle.cached_workspace() {
            Ok(ws) => {
                self.status.unsent = ws.unsent;
                self.desk.load(ws);
            }
            Err(e) => tracing::warn!("cannot read the cached workspace: {e}"),
        }
        self.status = handle.status();
        self.store_path = Some(path);
        self.handle = Some(handle);
        let updates =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|u| (u, rx)) },
            );
        Task::run(updates, move |u| Message::Core(epoch, Box::new(u)))
            .chain(Task::done(Message::CoreEnded(epoch)))
    }

    fn fail_sign_in(&mut self, error: String) -> Task<Message> {
        self.login.busy = false;
        if self.screen == Screen::Login {
            self.login.error = Some(error);
        } else {
            self.desk.banner = Some(error);
        }
        Task::none()
    }

    fn remember_account(&self) {
        let Some(path) = &self.opts.prefs_path else {
            return;
        };
        let prefs = Prefs {
            server: self.login.server.trim().to_owned(),
            username: self.login.username.trim().to_owned(),
        };
        if let Err(e) = prefs.save(path) {
            tracing::warn!("cannot save prefs to {}: {e}", path.display());
        }
    }

    fn on_update(&mut self, update: Update) -> Task<Message> {
        match update {
            Update::Connection(s) => {
                self.now = Instant::now();
                if self.screen == Screen::Login
                    && self.login.busy
                    && let ConnState::BackingOff { retry_at, reason } = &s.state
                    && !self.signed_in
                {
                    let left = format::seconds_left(retry_at.saturating_duration_since(self.now));
                    self.login.error = Some(format!(
                        "Cannot reach {}: {reason}. Retrying in {left} s.",
                        self.login.server.trim()
                    ));
                }
                self.status = s;
                Task::none()
            }
            Update::FingerprintUnknown {
                server,
                fingerprint,
            } => {
                self.trust = Some(TrustPrompt::Unknown {
                    server,
                    fingerprint,
                });
                Task::none()
            }
            Update::FingerprintMismatch {
                server,
                pinned,
                presented,
            } => {
                self.trust = Some(TrustPrompt::Mismatch {
                    server,
                    pinned,
                    presented,
                });
                Task::none()
            }
            Update::LoginFailed {
                code,
                message,
                retry_after,
            } => {
                let text = login_error_text(code, &message, retry_after);
                // The account lost its rights mid-session: back to the
                // sign-in screen, saying why.
                if matches!(code, ErrorCode::Disabled | ErrorCode::Revoked)
                    && self.screen == Screen::Workspace
                {
                    self.screen = Screen::Login;
                    self.signed_in = false;
                    self.transfer = None;
                    self.login.busy = false;
                    self.login.error = Some(text);
                    return Task::none();
                }
                if self.screen == Screen::Login {
                    self.login.error = Some(text);
                    if retry_after.is_none() {
                        self.login.busy = false;
                    }
                } else {
                    self.desk.banner = Some(text);
                }
                Task::none()
            }
            Update::LoggedIn {
                agent,
                display_name,
                site,
            } => {
                self.desk.me = Some(Session {
                    agent,
                    display_name,
                    site,
                });
                self.signed_in = true;
                self.login.busy = false;
                self.login.error = None;
                self.login.password = Zeroizing::default();
                self.desk.banner = None;
                if self.desk.presence.is_none() {
                    self.desk.presence = Some(Presence::Online);
                }
                self.screen = Screen::Workspace;
                self.remember_account();
                self.desk.select_default();
                let read = self.mark_selected_read();
                let history = match self.desk.details_visitor.clone() {
                    Some(v) => self.ensure_history(v),
                    None => Task::none(),
                };
                Task::batch([read, history])
            }
            Update::Visitors(list) => {
                self.desk.visitors = list.into_iter().map(|v| (v.id.clone(), v)).collect();
                Task::none()
            }
            Update::Visitor(v) => {
                self.desk.visitors.insert(v.id.clone(), *v);
                Task::none()
            }
            Update::VisitorGone { visitor } => {
                self.desk.visitors.remove(&visitor);
                Task::none()
            }
            Update::Team(list) => {
                self.desk.apply_team(list);
                Task::none()
            }
            Update::TeamMember(m) => {
                self.desk.apply_member(m);
                Task::none()
            }
            Update::Conversation(info) => self.on_conversation(info),
            Update::Message(m) => self.on_message(m),
            Update::MessageState {
                client_id,
                conversation,
                message,
                state,
                order,
            } => {
                self.desk
                    .apply_state(conversation, client_id, message, state, order);
                Task::none()
            }
            Update::CommandDone { .. } => Task::none(),
            Update::CommandRejected { code, message, .. } => {
                self.desk.banner = Some(format!("The server refused that ({code}): {message}"));
                Task::none()
            }
            Update::History { request, result } => {
                // Every request this app made was filed when it was made (the
                // id comes back at once): an answer to none of them is no
                // one's.
                if let Some(visitor) = self.desk.history_requests.remove(&request) {
                    self.apply_history(&visitor, result);
                }
                Task::none()
            }
            Update::SnapshotApplied { .. } | Update::Resync => {
                if let Some(h) = &self.handle {
                    let waiting_before: Vec<ConversationId> = self
                        .desk
                        .convs
                        .values()
                        .filter(|c| is_waiting(&c.info))
                        .map(|c| c.info.id)
                        .collect();
                    match h.cached_workspace() {
                        Ok(ws) => self.desk.load(ws),
                        Err(e) => self.desk.banner = Some(e.to_string()),
                    }
                    self.status = h.status();
                    // A chat that started waiting while updates were
                    // coalesced into this reload still deserves its alert.
                    if !self.focused {
                        let new: Vec<Alert> = self
                            .desk
                            .convs
                            .values()
                            .filter(|c| is_waiting(&c.info) && !waiting_before.contains(&c.info.id))
                            .map(|c| waiting_alert(&c.info))
                            .collect();
                        for a in new {
                            self.notifier.alert(a);
                        }
                    }
                }
                // What is on screen in a focused window has been read, even
                // if the snapshot brought older read marks.
                self.mark_selected_read()
            }
            Update::ServerError { code, message } => {
                self.desk.banner = Some(format!("Server error ({code}): {message}"));
                Task::none()
            }
            Update::StoreFailed { message } => {
                self.desk.banner = Some(format!("Local store error: {message}"));
                Task::none()
            }
        }
    }

    /// The current core session's epoch: updates tagged with an older one
    /// are ignored (tests inject updates with it).
    pub fn core_epoch(&self) -> u64 {
        self.epoch
    }

    fn on_conversation(&mut self, info: ConversationInfo) -> Task<Message> {
        let id = info.id;
        let me = self.desk.my_id();
        let previous = self.desk.convs.get(&id).map(|c| c.info.state);
        if is_waiting(&info) && previous != Some(ConversationState::Queued) && !self.focused {
            self.notifier.alert(waiting_alert(&info));
        }
        let mine = info.assigned.is_some() && info.assigned == me;
        let open_now = mine
            && match &self.desk.pending_open {
                Some(PendingOpen::Visitor(v)) => *v == info.visitor,
                Some(PendingOpen::Conversation(c)) => *c == id,
                None => false,
            };
        let closed = info.state == ConversationState::Closed;
        let selected = self.desk.selected == Some(id);
        // A transfer panel for a chat that changed hands meanwhile would
        // only be refused: close it.
        if self
            .transfer
            .as_ref()
            .is_some_and(|t| t.conversation == id && t.from != info.assigned)
        {
            self.transfer = None;
        }
        self.desk.apply_conversation(info);
        if let Some(c) = self.desk.convs.get_mut(&id)
            && closed
            && !selected
            && c.messages.len() > 1
        {
            // A closed chat is history: keep only its preview in memory
            // unless it is on screen (the store has the rest).
            let cut = c.messages.len() - 1;
            c.messages.drain(..cut);
            c.more_before = true;
        }
        if closed
            && !selected
            && self
                .desk
                .drafts
                .get(&id)
                .is_some_and(|d| d.text().trim().is_empty())
        {
            self.desk.drafts.remove(&id);
        }
        if open_now || (mine && self.desk.selected.is_none()) {
            if open_now {
                self.desk.pending_open = None;
            }
            return self.select(id);
        }
        Task::none()
    }

    fn on_message(&mut self, m: StoredMessage) -> Task<Message> {
        let conv_id = m.conversation;
        let body = message_text(&m);
        let selected = self.desk.selected == Some(conv_id);
        if !self.desk.convs.contains_key(&conv_id) {
            // The conversation's own event comes first; if not, the store
            // has it.
            if let Some(h) = &self.handle
                && let Ok(list) = h.conversations()
            {
                for s in list {
                    let id = s.info.id;
                    self.desk
                        .convs
                        .entry(id)
                        .or_insert_with(|| crate::ui::desk::Conv::from_summary(s, Vec::new()));
                }
            }
            if !self.desk.convs.contains_key(&conv_id) {
                return Task::none();
            }
        }
        let Some(applied) = self.desk.apply_message(m) else {
            return Task::none();
        };
        let Some(c) = self.desk.convs.get_mut(&conv_id) else {
            return Task::none();
        };
        if !selected {
            c.trim();
        }
        let name = format::visitor_label(c.info.visitor_name.as_deref(), &c.info.visitor);
        if !(applied.new && applied.from_visitor) {
            return Task::none();
        }
        if !self.focused {
            self.notifier.alert(Alert {
                title: format!("Message from {name}"),
                body: format::preview(&body, 120),
            });
        }
        if selected && self.focused {
            self.mark_selected_read()
        } else {
            c.unread = c.unread.saturating_add(1);
            Task::none()
        }
    }

    /// "Open chat" on a visitor: mine or waiting opens; someone else's
    /// opens read-only for a supervisor, and otherwise says who serves it.
    fn open_visitor_chat(&mut self, visitor: &str) -> Task<Message> {
        let conv = self
            .desk
            .visitors
            .get(visitor)
            .and_then(|v| v.conversation)
            .and_then(|id| self.desk.convs.get(&id));
        let Some(c) = conv else {
            self.desk.banner = Some(
                "That chat is not on this device yet; it appears once the server sends it.".into(),
            );
            return Task::none();
        };
        let id = c.info.id;
        let theirs = c.info.state == ConversationState::Active
            && c.info.assigned.is_some()
            && c.info.assigned != self.desk.my_id();
        if theirs && !self.desk.oversees() {
            let who = self
                .desk
                .serving_name(&c.info)
                .unwrap_or_else(|| "Another agent".into());
            self.desk.banner = Some(format!(
                "{who} is serving this visitor. A supervisor can transfer the chat to you."
            ));
            return Task::none();
        }
        self.select(id)
    }

    /// Sign out: optionally hand every open chat to `to` first; the server
    /// releases what is left once everything queued is acked.
    fn sign_out(&mut self, to: Option<AgentId>) -> Task<Message> {
        self.sign_out_prompt = false;
        let Some(h) = self.handle.clone() else {
            return Task::done(Message::SignOutFinished(Ok(SignOutResult::Offline)));
        };
        let me = self.desk.my_id();
        let chats: Vec<ConversationId> = match to {
            Some(_) => self.desk.mine().iter().map(|c| c.info.id).collect(),
            None => Vec::new(),
        };
        self.signing_out = true;
        Task::perform(
            async move {
                if let Some(to) = to {
                    for id in chats {
                        h.transfer(id, me, to, None)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                h.sign_out().await.map_err(|e| e.to_string())
            },
            Message::SignOutFinished,
        )
    }

    fn select(&mut self, id: ConversationId) -> Task<Message> {
        // The one we leave goes back to a small window.
        if let Some(prev) = self.desk.selected
            && prev != id
            && let Some(c) = self.desk.convs.get_mut(&prev)
        {
            c.trim();
        }
        let Some(visitor) = self.desk.select_local(id) else {
            return Task::none();
        };
        let read = self.mark_selected_read();
        Task::batch([read, self.ensure_history(visitor)])
    }

    fn mark_selected_read(&mut self) -> Task<Message> {
        let Some(id) = self.desk.selected else {
            return Task::none();
        };
        let Some(c) = self.desk.convs.get_mut(&id) else {
            return Task::none();
        };
        if c.unread == 0 || !self.focused {
            return Task::none();
        }
        c.unread = 0;
        match self.handle.clone() {
            Some(h) => Task::perform(
                async move { h.mark_read(id).await.map_err(|e| e.to_string()) },
                Message::ActionDone,
            ),
            None => Task::none(),
        }
    }

    fn send(&mut self) -> Task<Message> {
        let Some(id) = self.desk.selected else {
            return Task::none();
        };
        let Some(draft) = self.desk.drafts.get(&id) else {
            return Task::none();
        };
        let text = draft.text();
        let body = text.trim_end_matches(['\n', '\r']).to_owned();
        if body.trim().is_empty() {
            return Task::none();
        }
        let Some(h) = self.handle.clone() else {
            self.desk.banner = Some("Not signed in: enter your password to connect.".into());
            return Task::none();
        };
        self.desk.drafts.insert(id, text_editor::Content::new());
        Task::perform(
            async move {
                h.send_message(id, body)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
            Message::ActionDone,
        )
    }

    fn load_earlier(&mut self) {
        let Some(id) = self.desk.selected else { return };
        let Some(h) = self.handle.clone() else {
            return self.load_earlier_from_file(id);
        };
        let Some(c) = self.desk.convs.get_mut(&id) else {
            return;
        };
        let before = c.messages.first().map(|m| m.order);
        match h.messages_page(id, before, PAGE) {
            Ok(page) => c.prepend(page, PAGE as usize),
            Err(e) => self.desk.banner = Some(e.to_string()),
        }
    }

    /// Paging before a session exists (cached workspace, no password yet).
    fn load_earlier_from_file(&mut self, id: ConversationId) {
        let Some(path) = self.store_path.clone() else {
            return;
        };
        let Some(c) = self.desk.convs.get_mut(&id) else {
            return;
        };
        let before = c.messages.first().map(|m| m.order);
        match Store::open(&path).and_then(|s| s.messages_page(id, before, PAGE)) {
            Ok(page) => c.prepend(page, PAGE as usize),
            Err(e) => self.desk.banner = Some(e.to_string()),
        }
    }

    /// Refresh the newest page of a visitor's history (merged with what is
    /// loaded, so older pages already fetched stay).
    fn ensure_history(&mut self, visitor: String) -> Task<Message> {
        self.load_history(visitor, false)
    }

    fn load_history(&mut self, visitor: String, older: bool) -> Task<Message> {
        let Some(h) = self.handle.clone() else {
            return Task::none();
        };
        // Histories of visitors looked at earlier in the day are dropped
        // past a few dozen; they reload on demand.
        if self.desk.history.len() >= HISTORY_KEEP && !self.desk.history.contains_key(&visitor) {
            let keep = self.desk.details_visitor.clone();
            self.desk
                .history
                .retain(|v, h| h.loading || Some(v) == keep.as_ref());
        }
        let entry = self.desk.history.entry(visitor.clone()).or_default();
        if entry.loading {
            return Task::none();
        }
        entry.loading = true;
        entry.error = None;
        let before = if older {
            entry.messages.last().map(|m| m.message)
        } else {
            None
        };
        // The id comes back at once, so the request is filed before its
        // answer can arrive on the update stream.
        match h.load_history(visitor.clone(), before, HISTORY_PAGE) {
            Ok(req) => {
                self.desk.history_requests.insert(req, visitor);
            }
            Err(e) => {
                entry.loading = false;
                entry.error = Some(e.to_string());
            }
        }
        Task::none()
    }

    fn apply_history(&mut self, visitor: &str, result: QueryResult) {
        let h = self.desk.history.entry(visitor.to_owned()).or_default();
        if let Some(info) = h.apply(result) {
            self.desk
                .visitors
                .entry(info.id.clone())
                .or_insert_with(|| *info);
        }
    }
}

fn login_error_text(
    code: ErrorCode,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> String {
    match code {
        ErrorCode::Unauthorized => "Wrong username or password.".to_owned(),
        ErrorCode::Disabled => {
            "Your account was disabled by an administrator. Your open chats went back to \
             the queue."
                .to_owned()
        }
        ErrorCode::Revoked => {
            "Your password was changed. Sign in again with the new one.".to_owned()
        }
        ErrorCode::VersionMismatch => format!(
            "Incompatible version: this app and the server speak different protocol versions \
             ({message}). Update the app or the server."
        ),
        ErrorCode::Throttled => {
            let secs = retry_after.map_or(0, format::seconds_left);
            format!("Too many failed sign-ins. Trying again in {secs} s.")
        }
        ErrorCode::TooLarge => format!(
            "The username or password is too long for the server to take ({message}). \
             Shorten it and sign in again."
        ),
        _ => format!("Sign-in failed ({code}): {message}"),
    }
}

/// In the queue with no agent yet.
fn is_waiting(info: &ConversationInfo) -> bool {
    info.assigned.is_none() && info.state == ConversationState::Queued
}

fn waiting_alert(info: &ConversationInfo) -> Alert {
    Alert {
        title: "New chat waiting".into(),
        body: format::visitor_label(info.visitor_name.as_deref(), &info.visitor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_too_big_to_send_says_what_to_change() {
        let text = login_error_text(
            ErrorCode::TooLarge,
            "frame of 9100 bytes exceeds the limit of 8192 before login",
            None,
        );
        assert!(
            text.starts_with("The username or password is too long"),
            "{text}"
        );
        assert!(text.contains("8192"), "{text}");
    }
}
