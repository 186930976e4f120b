//! The desktop app: an iced 0.14 UI over the client core.
//!
//! - `app`: the top level ([`App`], [`Message`], [`Options`], [`Screen`]):
//!   which screen is up, routing messages to it, the client session, and
//!   the core's updates turned into screen updates.
//! - `screen`: the screens and their panels, each with its own state,
//!   messages, update and view (stable widget ids for tests).
//! - `desk`: the workspace's data (conversations in commit order, the one
//!   visitor list, histories, the team), kept current by the core's updates.
//! - `widget`: drawing helpers the screens share, and the one seam all text
//!   goes through on its way to the screen.
//! - `files`: attachments on screen (thumbnails, file cards, upload
//!   bubbles) and the OS side of files (clipboard, dialogs, opening).
//! - `i18n`: every word on screen, in English and Simplified Chinese (one
//!   typed table per language), and the language in force.
//! - `format`: timestamps, durations, User-Agent parsing, previews.
//! - `links`: the web and mail links in message text, and opening one with
//!   the OS.
//! - `theme`: the light and dark palettes every colour comes from, the
//!   styles built on them, and their WCAG contrast test.
//! - `prefs`: the remembered server, username, theme, language, collapsed
//!   panels and attention settings (never the password).
//! - `notify`: OS notifications and the chime when the window is unfocused.
//! - `attention`: when a waiting chat alerts again, and its wait's colour.
//! - `canned`: which canned replies a `/` in the composer offers, and the
//!   text a picked one leaves there.
//!
//! The UI holds no networking code: commands go through the
//! [`holdfast_client::ClientHandle`], and the core's [`holdfast_client::Update`] channel is
//! consumed as a stream of messages (see `App::start_core`), in the way
//! halloy's `data/src/stream.rs` feeds its screens.

pub mod app;
pub mod attention;
pub mod canned;
pub mod desk;
pub mod files;
pub mod format;
pub mod i18n;
pub mod links;
pub mod notify;
pub mod prefs;
pub mod screen;
pub mod theme;
pub mod widget;

use std::time::Duration;

use iced::{Subscription, Theme, window};

pub use app::{App, Message, Options, Screen};

/// A CJK-capable fallback font (Droid Sans Fallback, Apache-2.0), bundled
/// so Chinese and Japanese render even where no CJK system font is
/// installed. System fonts are still used first; this only fills gaps.
pub const CJK_FONT: &[u8] = include_bytes!("../../../assets/fonts/DroidSansFallbackFull.ttf");

/// Run the app until its window closes.
pub fn run(options: Options) -> iced::Result {
    iced::application(move || App::new(options.clone()), App::update, App::view)
        .title(App::title)
        .subscription(subscription)
        .theme(theme)
        .font(CJK_FONT)
        .window(window::Settings {
            size: iced::Size::new(1280.0, 800.0),
            min_size: Some(iced::Size::new(900.0, 560.0)),
            icon: window_icon(),
            ..window::Settings::default()
        })
        .run()
}

/// The app's icon, the installers' artwork (`assets/icons/holdfast.svg`
/// rendered by `assets/icons/render`).
pub const ICON_PNG: &[u8] = include_bytes!("../../../assets/icons/holdfast-256.png");

/// The window's icon. A PNG that does not decode only costs the icon.
pub fn window_icon() -> Option<window::Icon> {
    let img = image::load_from_memory_with_format(ICON_PNG, image::ImageFormat::Png)
        .map_err(|e| tracing::warn!("window icon: {e}"))
        .ok()?
        .into_rgba8();
    let (w, h) = img.dimensions();
    window::icon::from_rgba(img.into_raw(), w, h)
        .map_err(|e| tracing::warn!("window icon: {e}"))
        .ok()
}

/// The agent's theme, or the OS's when they chose to follow it.
pub fn theme(app: &App) -> Theme {
    app.palette().theme()
}

/// A one-second tick only where something on screen counts time (time on
/// site, waiting time, the reconnect countdown), and window focus and
/// files dragged onto the window and Esc always.
pub fn subscription(app: &App) -> Subscription<Message> {
    let focus = iced::event::listen_with(window_event);
    let system_theme = iced::system::theme_changes().map(Message::SystemTheme);
    let mut subs = vec![focus, system_theme];
    if app.screen == Screen::Workspace || app.login.busy {
        subs.push(iced::time::every(Duration::from_secs(1)).map(|_| Message::Tick));
    }
    if app.opts.exit_after_first_frame.is_some() {
        subs.push(window::frames().map(|_| Message::FirstFrame));
    }
    if app.workspace.jump.is_some() {
        subs.push(iced::event::listen_with(jump_keys));
    }
    Subscription::batch(subs)
}

/// The window's events the app acts on wherever focus is: focus, files
/// dragged onto it, Esc (which closes an open box or form even while its
/// text field has focus), Tab and Shift+Tab (between the workspace's
/// regions, or a form's fields), ↑, ↓, PageUp, PageDown and Enter that no
/// text field took (the focused region's: see `workspace::ring`), and the
/// shortcuts (⌘ for Ctrl on macOS), none of which a text field uses or
/// the composer keeps: Ctrl+B the lists, Ctrl+D the details, Ctrl+K jump to
/// a conversation, Ctrl+Enter accept the oldest waiting chat, Alt+↑/↓ the
/// previous and next chat.
pub fn window_event(
    event: iced::Event,
    status: iced::event::Status,
    _window: window::Id,
) -> Option<Message> {
    use iced::keyboard::Key;
    use iced::keyboard::key::Named;
    use screen::workspace::Shortcut;
    use screen::workspace::chat::Message as Chat;
    match event {
        iced::Event::Keyboard(iced::keyboard::Event::KeyPressed {
            key: Key::Named(Named::Escape),
            ..
        }) => Some(Message::Workspace(screen::workspace::Message::Escape)),
        // Not a Tab the composer took: with the canned reply picker open,
        // Tab puts the reply in and the cursor stays.
        iced::Event::Keyboard(iced::keyboard::Event::KeyPressed {
            key: Key::Named(Named::Tab),
            modifiers,
            ..
        }) if !modifiers.command()
            && !modifiers.alt()
            && status == iced::event::Status::Ignored =>
        {
            Some(Message::FocusNext(!modifiers.shift()))
        }
        iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { key, modifiers, .. })
            if modifiers.is_empty() && status == iced::event::Status::Ignored =>
        {
            use screen::workspace::ring::Key as Ring;
            let key = match key.as_ref() {
                Key::Named(Named::ArrowUp) => Ring::Up,
                Key::Named(Named::ArrowDown) => Ring::Down,
                Key::Named(Named::PageUp) => Ring::PageUp,
                Key::Named(Named::PageDown) => Ring::PageDown,
                Key::Named(Named::Enter) => Ring::Enter,
                _ => return None,
            };
            Some(Message::Workspace(screen::workspace::Message::Ring(key)))
        }
        iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { key, modifiers, .. })
            if modifiers.alt() && !modifiers.command() && !modifiers.shift() =>
        {
            match key.as_ref() {
                Key::Named(Named::ArrowUp) => Some(Message::Shortcut(Shortcut::Previous)),
                Key::Named(Named::ArrowDown) => Some(Message::Shortcut(Shortcut::Next)),
                _ => None,
            }
        }
        iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { key, modifiers, .. })
            if modifiers.command() && !modifiers.alt() && !modifiers.shift() =>
        {
            use screen::workspace::Panel;
            match key.as_ref() {
                Key::Character("b") => Some(Message::TogglePanel(Panel::Lists)),
                Key::Character("d") => Some(Message::TogglePanel(Panel::Details)),
                Key::Character("k") => Some(Message::Shortcut(Shortcut::Jump)),
                Key::Named(Named::Enter) => Some(Message::Shortcut(Shortcut::AcceptOldest)),
                _ => None,
            }
        }
        iced::Event::Window(window::Event::Focused) => Some(Message::Focus(true)),
        iced::Event::Window(window::Event::Unfocused) => Some(Message::Focus(false)),
        iced::Event::Window(window::Event::FileHovered(_)) => Some(to_chat(Chat::FileHovered)),
        iced::Event::Window(window::Event::FilesHoveredLeft) => Some(to_chat(Chat::HoverLeft)),
        iced::Event::Window(window::Event::FileDropped(path)) => {
            Some(to_chat(Chat::FileDropped(path)))
        }
        _ => None,
    }
}

/// ↑ and ↓ while the "Jump to conversation" box is open: they move its
/// highlight (its text field has no use for them).
pub fn jump_keys(
    event: iced::Event,
    _status: iced::event::Status,
    _window: window::Id,
) -> Option<Message> {
    use iced::keyboard::Key;
    use iced::keyboard::key::Named;
    use screen::workspace::jump::{Direction, Message as Jump};
    let iced::Event::Keyboard(iced::keyboard::Event::KeyPressed { key, modifiers, .. }) = event
    else {
        return None;
    };
    if modifiers.alt() || modifiers.command() || modifiers.shift() {
        return None;
    }
    let direction = match key {
        Key::Named(Named::ArrowUp) => Direction::Up,
        Key::Named(Named::ArrowDown) => Direction::Down,
        _ => return None,
    };
    Some(Message::Workspace(screen::workspace::Message::Jump(
        Jump::Move(direction),
    )))
}

fn to_chat(m: screen::workspace::chat::Message) -> Message {
    Message::Workspace(screen::workspace::Message::Chat(m))
}

#[cfg(test)]
mod tests {
    /// The bundled artwork decodes to the square icon the window gets.
    #[test]
    fn the_window_icon_decodes() {
        let icon = super::window_icon().expect("the icon decodes");
        let (rgba, size) = icon.into_raw();
        assert_eq!((size.width, size.height), (256, 256));
        assert_eq!(rgba.len(), 256 * 256 * 4);
        // Not a blank square: some pixels are drawn, some transparent.
        assert!(rgba.chunks(4).any(|p| p[3] == 255));
        assert!(rgba.chunks(4).any(|p| p[3] == 0));
    }
}
