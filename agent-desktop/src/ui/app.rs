//! The top level: which screen is up, routing each screen's messages to
//! it, the client session, and turning the core's updates into screen
//! updates.
//!
//! The app is two screens over one client session: the login screen until
//! the first successful sign-in (or straight to the workspace when a cached
//! store for the remembered account exists), then the workspace. A server
//! key prompt can cover either. Each screen owns its state, messages,
//! `update` and `view` (see [`crate::ui::screen`]); both screens' states
//! live here side by side rather than inside [`Screen`], because both
//! outlive a switch: the workspace's top bar shows the typed username and a
//! re-sign-in reuses the form, and a workspace sent back to the login
//! screen by a revoked password keeps its drafts for the next sign-in.
//!
//! All networking is the core's: the app holds a [`ClientHandle`] for
//! commands and reads the core's [`Update`]s as a stream turned into
//! messages, tagged with a session epoch so a stream from a replaced
//! session can never touch the new one.

use std::path::PathBuf;
use std::time::Instant;

use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::handshake::Fingerprint;
use iced::widget::column;
use iced::{Element, Task};
use zeroize::Zeroizing;

use crate::ui::files;
use crate::ui::format;
use crate::ui::i18n::{self, Lang, Texts, Words, tr};
use crate::ui::notify::Notifier;
use crate::ui::prefs::Prefs;
use crate::ui::screen::workspace::Panel;
use crate::ui::screen::workspace::{self, Context, Env};
use crate::ui::screen::{login, trust};
use crate::ui::theme::{Choice, Palette};
use holdfast_client::store::{Session, now_ms};
use holdfast_client::{
    ClientConfig, ClientHandle, ConnState, ConnectionStatus, SignOutResult, StopReason, Store,
    Update, default_store_path,
};

/// What the workspace borrows from the app for one call. A macro rather
/// than a method so the borrow is of the fields, leaving `self.workspace`
/// free to be borrowed beside it.
macro_rules! env_of {
    ($app:ident) => {
        Env {
            handle: $app.handle.as_ref(),
            focused: $app.focused,
            notifier: &mut $app.notifier,
            store_path: $app.store_path.as_deref(),
            panels: $app.prefs.panels,
        }
    };
}

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
    /// The OS's locale (`zh_CN.UTF-8`, `en-US`), which picks the language
    /// until the agent picks one in the app. `None` (tests, or an OS that
    /// does not say) is English.
    pub locale: Option<String>,
    /// Benchmark mode: print the time from this instant to the first frame
    /// on stderr, then exit.
    pub exit_after_first_frame: Option<Instant>,
}

#[derive(Debug, Clone)]
pub enum Message {
    Login(login::Message),
    Trust(trust::Message),
    Workspace(workspace::Message),
    /// Start the core, once the previous session has closed its store.
    StartCore,
    // The core.
    Core(u64, Box<Update>),
    CoreEnded(u64),
    // The window.
    Tick,
    Focus(bool),
    FirstFrame,
    /// A stopped session's store is closed.
    SignedOut,
    /// The OS's light or dark mode, at start and whenever it changes.
    SystemTheme(iced::theme::Mode),
    /// The agent's theme choice (remembered).
    SetTheme(Choice),
    /// The agent's language choice (remembered, applied at once).
    SetLang(Lang),
    /// Collapse or expand a side panel (remembered).
    TogglePanel(Panel),
    /// A workspace keyboard shortcut, from any screen (acted on only in
    /// the workspace).
    Shortcut(workspace::Shortcut),
    /// Tab (`true`) or Shift+Tab: the next or previous text field.
    FocusNext(bool),
}

/// Which screen is up. Their states are the app's (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Login,
    Workspace,
}

/// The whole app.
#[derive(Debug)]
pub struct App {
    pub opts: Options,
    pub screen: Screen,
    pub login: login::State,
    /// The server key prompt, over whichever screen is up.
    pub trust: Option<trust::State>,
    pub workspace: workspace::State,
    pub status: ConnectionStatus,
    /// Signed in during this run (a `LoggedIn` arrived).
    pub signed_in: bool,
    /// The store the current or next session uses.
    pub store_path: Option<PathBuf>,
    pub focused: bool,
    pub now_ms: i64,
    pub now: Instant,
    pub notifier: Notifier,
    /// What is remembered between runs (the account, the theme, the
    /// collapsed panels), kept whole so saving one part keeps the others.
    pub prefs: Prefs,
    /// The OS's mode as last reported (`None` until it says, or where it
    /// cannot).
    pub system_theme: iced::theme::Mode,
    /// The language on screen: the agent's pick, else the OS's.
    pub lang: Lang,
    handle: Option<ClientHandle>,
    epoch: u64,
}

/// A client call's outcome, reported where the workspace shows errors.
fn action_done(result: Result<(), String>) -> Message {
    Message::Workspace(workspace::Message::ActionDone(result))
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
        let lang = prefs
            .lang
            .unwrap_or_else(|| Lang::from_locale(opts.locale.as_deref().unwrap_or_default()));
        i18n::set(lang);
        let mut app = Self {
            notifier: Notifier::new(opts.notifications),
            opts,
            screen: Screen::Login,
            login: login::State {
                server,
                username,
                password: password.unwrap_or_default(),
                error: None,
                notice: None,
                busy: false,
            },
            trust: None,
            workspace: workspace::State::new(),
            status: ConnectionStatus {
                state: ConnState::Disconnected,
                unsent: 0,
            },
            signed_in: false,
            store_path: None,
            focused: true,
            now_ms: now_ms(),
            now: Instant::now(),
            handle: None,
            epoch: 0,
            prefs,
            system_theme: iced::theme::Mode::None,
            lang,
        };
        if !app.login.username.is_empty() {
            app.open_cached();
        }
        let sign_in = if app.login.password.is_empty() || app.login.username.is_empty() {
            Task::none()
        } else {
            Task::done(Message::Login(login::Message::SignIn))
        };
        // Changes come from the subscription; this is the mode at start.
        let system = iced::system::theme().map(Message::SystemTheme);
        (app, Task::batch([system, sign_in]))
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
            Ok((account, s.cached_workspace()?, s.pending_uploads()?))
        });
        match read {
            Ok((Some(account), ws, uploads))
                if account.server == self.login.server
                    && account.username == self.login.username
                    && ws.session.is_some() =>
            {
                self.status.unsent = ws.unsent;
                self.workspace.desk.load(ws);
                // Files picked before the app last closed: they go out once
                // signed in, and are shown on their way meanwhile.
                self.workspace.desk.files.restore(uploads);
                self.store_path = Some(path);
                self.screen = Screen::Workspace;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the cached workspace: {e}"),
        }
    }

    fn resolve_store_path(&self) -> Result<PathBuf, Words> {
        match &self.opts.store {
            Some(p) => Ok(p.clone()),
            None => default_store_path(self.login.server.trim(), self.login.username.trim())
                .map_err(|e| Words::worded(|t| t.client_error(&e))),
        }
    }

    pub fn handle(&self) -> Option<&ClientHandle> {
        self.handle.as_ref()
    }

    pub fn title(&self) -> String {
        let unread = self.workspace.desk.unread_total();
        // The display name is the server's, set by an administrator; it
        // still goes through the same filter as everything on screen.
        let who = self
            .workspace
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
        let t = tr();
        let unsent = self.status.unsent;
        let unsent_part = if unsent > 0 {
            format!(" · {}", (t.unsent)(unsent))
        } else {
            String::new()
        };
        match &self.status.state {
            ConnState::Live => format!("{}{unsent_part}", t.connected),
            ConnState::BackingOff { retry_at, .. } => {
                let left = format::seconds_left(retry_at.saturating_duration_since(self.now));
                format!("{}{unsent_part}", (t.reconnecting_in)(left))
            }
            ConnState::Connecting
            | ConnState::Handshaking
            | ConnState::LoggingIn
            | ConnState::AwaitingTrust { .. } => format!("{}{unsent_part}", t.connecting),
            ConnState::Disconnected | ConnState::Stopped { .. } => {
                format!("{} · {}", t.offline, (t.unsent)(unsent))
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
        // The app's language is the one in force wherever it runs (see
        // `i18n`): a test, or any caller, gets the words its app speaks.
        i18n::set(self.lang);
        let task = self.route(message);
        if self.screen == Screen::Workspace {
            self.workspace.want_thumbnails(&env_of!(self));
        }
        task
    }

    fn route(&mut self, message: Message) -> Task<Message> {
        match message {
            Message::Login(m) => match self.login.update(m) {
                None => Task::none(),
                Some(login::Event::SignIn) => self.sign_in(),
                Some(login::Event::Cancel) => self.stop_session(),
                Some(login::Event::SetLang(lang)) => self.update(Message::SetLang(lang)),
            },
            Message::Trust(m) => {
                let Some(event) = self.trust.as_mut().and_then(|t| t.update(m)) else {
                    return Task::none();
                };
                self.trust = None;
                self.on_trust(event)
            }
            // The list keys act only on the workspace in view: not from the
            // sign-in screen, nor under the server key prompt.
            Message::Workspace(workspace::Message::Ring(_))
                if self.screen != Screen::Workspace || self.trust.is_some() =>
            {
                Task::none()
            }
            Message::Workspace(m) => {
                let (task, event) = self.workspace.update(m, &mut env_of!(self));
                let task = task.map(Message::Workspace);
                match event {
                    None => task,
                    Some(workspace::Event::Connect) => Task::batch([task, self.sign_in()]),
                    Some(workspace::Event::SignedOut(result)) => {
                        Task::batch([task, self.signed_out(result)])
                    }
                    Some(workspace::Event::SetTheme(choice)) => {
                        Task::batch([task, self.update(Message::SetTheme(choice))])
                    }
                    Some(workspace::Event::SetLang(lang)) => {
                        Task::batch([task, self.update(Message::SetLang(lang))])
                    }
                    Some(workspace::Event::TogglePanel(panel)) => {
                        Task::batch([task, self.update(Message::TogglePanel(panel))])
                    }
                }
            }
            Message::StartCore => self.start_core(),
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
                if self.screen == Screen::Workspace {
                    let attention = self.prefs.attention;
                    self.workspace
                        .tick(&mut env_of!(self), self.now_ms, &attention);
                }
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
                    self.workspace
                        .mark_selected_read(&env_of!(self))
                        .map(Message::Workspace)
                } else {
                    Task::none()
                }
            }
            Message::SignedOut => Task::none(),
            Message::SystemTheme(mode) => {
                self.system_theme = mode;
                Task::none()
            }
            Message::SetTheme(choice) => {
                self.prefs.theme = choice;
                self.save_prefs();
                Task::none()
            }
            Message::SetLang(lang) => {
                self.lang = lang;
                i18n::set(lang);
                self.prefs.lang = Some(lang);
                self.save_prefs();
                Task::none()
            }
            // The shortcuts reach here from any screen; only the
            // workspace has panels.
            Message::TogglePanel(_) if self.screen != Screen::Workspace => Task::none(),
            // Not under the server key prompt either: a chat accepted
            // behind it would be one the agent never saw.
            Message::Shortcut(s) if self.screen == Screen::Workspace && self.trust.is_none() => {
                self.route(Message::Workspace(workspace::Message::Shortcut(s)))
            }
            Message::Shortcut(_) => Task::none(),
            // In the workspace Tab moves between its regions; elsewhere
            // (the sign-in form, a box over the workspace) between fields.
            Message::FocusNext(forward)
                if self.screen == Screen::Workspace
                    && self.trust.is_none()
                    && self.workspace.ring_applies() =>
            {
                let key = if forward {
                    workspace::ring::Key::Next
                } else {
                    workspace::ring::Key::Previous
                };
                self.route(Message::Workspace(workspace::Message::Ring(key)))
            }
            Message::FocusNext(true) => iced::widget::operation::focus_next(),
            Message::FocusNext(false) => iced::widget::operation::focus_previous(),
            Message::TogglePanel(panel) => {
                let panels = &mut self.prefs.panels;
                match panel {
                    Panel::Lists => panels.lists_collapsed = !panels.lists_collapsed,
                    Panel::Details => panels.details_collapsed = !panels.details_collapsed,
                }
                self.save_prefs();
                Task::none()
            }
        }
    }

    /// The palette on screen: the agent's choice, or the OS's mode.
    pub fn palette(&self) -> &'static Palette {
        self.prefs.theme.palette(self.system_theme)
    }

    pub fn view(&self) -> Element<'_, Message> {
        i18n::set(self.lang);
        let ctx = self.context();
        let content: Element<'_, Message> = match (&self.trust, self.screen) {
            (Some(prompt), _) => prompt.view().map(Message::Trust),
            (None, Screen::Login) => self
                .login
                .view(self.connection_text(), self.lang)
                .map(Message::Login),
            (None, Screen::Workspace) => self.workspace.view(&ctx).map(Message::Workspace),
        };
        if self.screen == Screen::Workspace {
            column![self.workspace.bars(&ctx).map(Message::Workspace), content].into()
        } else {
            content
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            status: &self.status,
            connection_text: self.connection_text(),
            needs_password: self.needs_password(),
            username: &self.login.username,
            now_ms: self.now_ms,
            utc_offset_secs: self.opts.utc_offset_secs,
            theme: self.prefs.theme,
            lang: self.lang,
            panels: self.prefs.panels,
            attention: self.prefs.attention,
        }
    }

    /// The answer to the server key prompt, passed on to the core.
    fn on_trust(&mut self, event: trust::Event) -> Task<Message> {
        let Some(h) = self.handle.clone() else {
            return Task::none();
        };
        match event {
            trust::Event::Refused { mismatch: true } => {
                // A refused mismatch is the end of this session: back to
                // the sign-in screen with the reason.
                self.login.error = Some(Words::new(|t| t.key_mismatch_refused.to_owned()));
                self.login.busy = false;
                self.screen = Screen::Login;
                return self.stop_session();
            }
            trust::Event::Refused { mismatch: false } => {
                self.login.busy = false;
                self.login.error = Some(Words::new(|t| t.key_not_trusted.to_owned()));
            }
            trust::Event::Trusted => {}
        }
        let yes = event == trust::Event::Trusted;
        let t = tr();
        Task::perform(
            async move {
                h.trust_fingerprint(yes)
                    .await
                    .map_err(|e| t.client_error(&e))
            },
            action_done,
        )
    }

    /// The sign-out went through (or was given up on): back to the login
    /// screen, saying how it went.
    fn signed_out(&mut self, result: Result<SignOutResult, String>) -> Task<Message> {
        self.login.notice = Some(match result {
            Ok(SignOutResult::Released) => Words::new(|t| t.signed_out_released.to_owned()),
            Ok(SignOutResult::Offline | SignOutResult::TimedOut) | Err(_) => {
                Words::new(|t| t.signed_out_offline.to_owned())
            }
        });
        self.screen = Screen::Login;
        self.signed_in = false;
        self.workspace.clear();
        self.stop_session()
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
        if self.screen == Screen::Workspace && !self.workspace.bar.password.is_empty() {
            let pw = std::mem::take(&mut self.workspace.bar.password);
            if let Some(h) = self.handle.clone() {
                let t = tr();
                return Task::perform(
                    async move { h.set_password(pw).await.map_err(|e| t.client_error(&e)) },
                    action_done,
                );
            }
            self.login.password = pw;
        }
        if !self.login.check() {
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
            let (dir, e) = (dir.display().to_string(), e.to_string());
            return self.fail_sign_in(Words::new(move |t| (t.cannot_create)(&dir, &e)));
        }
        let (handle, rx) = match holdfast_client::start(cfg) {
            Ok(x) => x,
            Err(e) => return self.fail_sign_in(Words::worded(|t| t.client_error(&e))),
        };
        self.epoch += 1;
        let epoch = self.epoch;
        match handle.cached_workspace() {
            Ok(ws) => {
                self.status.unsent = ws.unsent;
                self.workspace.desk.load(ws);
            }
            Err(e) => tracing::warn!("cannot read the cached workspace: {e}"),
        }
        match handle.pending_uploads() {
            Ok(list) => self.workspace.desk.files.restore(list),
            Err(e) => tracing::warn!("cannot read the files waiting to be sent: {e}"),
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

    fn fail_sign_in(&mut self, error: Words) -> Task<Message> {
        self.login.busy = false;
        if self.screen == Screen::Login {
            self.login.error = Some(error);
        } else {
            self.workspace.desk.banner = Some(error);
        }
        Task::none()
    }

    fn remember_account(&mut self) {
        self.prefs.server = self.login.server.trim().to_owned();
        self.prefs.username = self.login.username.trim().to_owned();
        self.save_prefs();
    }

    fn save_prefs(&self) {
        let Some(path) = &self.opts.prefs_path else {
            return;
        };
        if let Err(e) = self.prefs.save(path) {
            tracing::warn!("cannot save prefs to {}: {e}", path.display());
        }
    }

    fn on_update(&mut self, update: Update) -> Task<Message> {
        let task = match update {
            Update::Connection(s) => {
                self.now = Instant::now();
                if self.screen == Screen::Login
                    && self.login.busy
                    && let ConnState::BackingOff { retry_at, reason } = &s.state
                    && !self.signed_in
                {
                    let left = format::seconds_left(retry_at.saturating_duration_since(self.now));
                    let (server, reason) = (self.login.server.trim().to_owned(), reason.clone());
                    self.login.error = Some(Words::new(move |t| {
                        (t.cannot_reach)(&server, &reason, left)
                    }));
                }
                self.status = s;
                Task::none()
            }
            Update::FingerprintUnknown {
                server,
                fingerprint,
            } => {
                self.trust = Some(trust::State::Unknown {
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
                self.trust = Some(trust::State::Mismatch {
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
                    self.workspace.chat.transfer = None;
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
                    self.workspace.desk.banner = Some(text);
                }
                Task::none()
            }
            Update::LoggedIn {
                agent,
                display_name,
                site,
            } => {
                self.signed_in = true;
                self.login.busy = false;
                self.login.error = None;
                self.login.password = Zeroizing::default();
                self.screen = Screen::Workspace;
                self.remember_account();
                let session = Session {
                    agent,
                    display_name,
                    site,
                };
                self.workspace.logged_in(&mut env_of!(self), session)
            }
            // The one visitor list is the desk's; the panels read it there.
            Update::Visitors(list) => {
                self.workspace.desk.visitors =
                    list.into_iter().map(|v| (v.id.clone(), v)).collect();
                Task::none()
            }
            Update::Visitor(v) => {
                self.workspace.desk.visitors.insert(v.id.clone(), *v);
                Task::none()
            }
            Update::VisitorGone { visitor } => {
                self.workspace.desk.invitations.remove(&visitor);
                self.workspace.desk.visitors.remove(&visitor);
                Task::none()
            }
            Update::Team(list) => {
                self.workspace.desk.apply_team(list);
                Task::none()
            }
            Update::TeamMember(m) => {
                self.workspace.desk.apply_member(m);
                Task::none()
            }
            Update::SiteTags(tags) => {
                self.workspace.desk.site_tags = tags;
                Task::none()
            }
            Update::Canned(list) => {
                self.workspace.desk.canned = list;
                Task::none()
            }
            Update::InviteRules(list) => {
                self.workspace.rules.set_rules(list);
                Task::none()
            }
            Update::Groups(list) => {
                self.workspace.desk.groups = list;
                Task::none()
            }
            Update::Invitation(i) => {
                self.workspace.desk.invitations.insert(i.visitor.clone(), i);
                Task::none()
            }
            Update::Conversation(info) => self.workspace.on_conversation(&mut env_of!(self), info),
            Update::Message(m) => {
                if matches!(m.author, holdfast_protocol::agent::Author::Visitor { .. }) {
                    self.workspace
                        .chat
                        .typing
                        .on_visitor_message(m.conversation);
                }
                self.workspace.on_message(&mut env_of!(self), m)
            }
            Update::Typing {
                conversation,
                typing,
                draft,
                ..
            } => {
                self.workspace
                    .chat
                    .typing
                    .on_signal(conversation, typing, draft);
                Task::none()
            }
            Update::MessageState {
                client_id,
                conversation,
                message,
                state,
                order,
            } => {
                self.workspace
                    .desk
                    .apply_state(conversation, client_id, message, state, order);
                Task::none()
            }
            Update::CommandDone { id, .. } => {
                self.workspace.on_command_outcome(id, Ok(()));
                Task::none()
            }
            Update::CommandRejected { id, code, message } => {
                // A refused block says why in the details panel, next to
                // the form it came from; anything else in the banner.
                if !self
                    .workspace
                    .on_command_outcome(id, Err(format!("{message} ({code})")))
                {
                    let code = code.to_string();
                    self.workspace.desk.banner =
                        Some(Words::new(move |t| (t.server_refused)(&code, &message)));
                    // A refused tag change never comes back as a line:
                    // show the tags as the server has them.
                    self.workspace.desk.tags_pending.clear();
                }
                Task::none()
            }
            Update::History { request, result } => {
                self.workspace.on_history(request, result);
                Task::none()
            }
            Update::SnapshotApplied { .. } | Update::Resync => {
                let reload = match self.handle.clone() {
                    Some(h) => {
                        let ws = h.cached_workspace().map_err(|e| e.to_string());
                        self.status = h.status();
                        // A dropped Groups update is not replayed; the
                        // core holds the latest list.
                        self.workspace.desk.groups = h.groups();
                        if let Ok(list) = h.pending_uploads() {
                            self.workspace.desk.files.restore(list);
                        }
                        self.workspace.reload(&mut env_of!(self), ws)
                    }
                    None => Task::none(),
                };
                // What is on screen in a focused window has been read, even
                // if the snapshot brought older read marks.
                let read = self.workspace.mark_selected_read(&env_of!(self));
                Task::batch([reload, read])
            }
            Update::ServerError { code, message } => {
                let code = code.to_string();
                self.workspace.desk.banner =
                    Some(Words::new(move |t| (t.server_error)(&code, &message)));
                Task::none()
            }
            Update::StoreFailed { message } => {
                self.workspace.desk.banner = Some(Words::new(move |t| (t.store_error)(&message)));
                Task::none()
            }
            Update::Upload {
                id,
                conversation,
                name,
                sent,
                total,
                state,
            } => {
                self.workspace.desk.files.progress(files::Upload {
                    id,
                    conversation,
                    name,
                    sent,
                    total,
                    state,
                });
                Task::none()
            }
            Update::AttachmentReady {
                id,
                thumb,
                path,
                mime,
                ..
            } => self.workspace.on_file_ready(id, thumb, path, mime),
            Update::AttachmentFailed {
                id,
                thumb,
                code,
                message,
                ..
            } => {
                self.workspace
                    .on_file_failed(id, thumb, files::fetch_error(code, &message));
                Task::none()
            }
        };
        task.map(Message::Workspace)
    }

    /// The current core session's epoch: updates tagged with an older one
    /// are ignored (tests inject updates with it).
    pub fn core_epoch(&self) -> u64 {
        self.epoch
    }
}

/// A refused sign-in, worded when shown.
fn login_error_text(
    code: ErrorCode,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> Words {
    let message = message.to_owned();
    Words::new(move |t| login_error_in(t, code, &message, retry_after))
}

fn login_error_in(
    t: &Texts,
    code: ErrorCode,
    message: &str,
    retry_after: Option<std::time::Duration>,
) -> String {
    match code {
        ErrorCode::Unauthorized => t.wrong_password.to_owned(),
        ErrorCode::Disabled => t.account_disabled.to_owned(),
        ErrorCode::Revoked => t.password_changed.to_owned(),
        ErrorCode::VersionMismatch => (t.version_mismatch)(message),
        ErrorCode::Throttled => (t.throttled)(retry_after.map_or(0, format::seconds_left)),
        ErrorCode::TooLarge => (t.login_too_large)(message),
        _ => (t.sign_in_failed)(&code.to_string(), message),
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
        )
        .text();
        assert!(
            text.starts_with("The username or password is too long"),
            "{text}"
        );
        assert!(text.contains("8192"), "{text}");
    }
}
