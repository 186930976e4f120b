//! Files in chats: what the app knows of them (thumbnails and downloads
//! fetched through the client core, files on their way up), how they are
//! drawn, and the few places the app meets the operating system for them
//! (the clipboard, the file dialogs, opening a file with its default app).
//!
//! Every OS call sits behind a message, so tests drive the same code from
//! the bytes or the path on: a pasted screenshot comes in as
//! [`RawImage`], a picked or dropped file as a path.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_client::{PendingUpload, UploadState};
use holdfast_protocol::agent::{AttachmentInfo, ConversationId};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;
use iced::widget::{button, column, container, image, progress_bar, row};
use iced::{Alignment, ContentFit, Element, Length};

use crate::ui::i18n::{Texts, tr};
use crate::ui::widget::{card, muted, small, text};

/// Thumbnails are drawn no larger than this, whatever the server made.
pub const THUMB_MAX: f32 = 240.0;

/// What the agent did to a file on screen.
#[derive(Debug, Clone)]
pub enum Action {
    /// Open the whole file with the system's app for it.
    Open(AttachmentInfo),
    /// Ask where to save it.
    SaveAs(AttachmentInfo),
    /// Save it there (the dialog's answer; `None` if cancelled).
    SaveTo(AttachmentInfo, Option<PathBuf>),
    /// Fetch again after a failure.
    Retry {
        id: String,
        thumb: bool,
    },
    CancelUpload(MsgId),
    /// Send a failed file again, from what was picked or pasted.
    RetryUpload(MsgId),
    /// Dismiss a failed file.
    RemoveUpload(MsgId),
}

/// A thumbnail or whole file as fetched through the core.
#[derive(Debug, Clone)]
pub enum Fetched {
    Loading,
    Ready {
        path: PathBuf,
        mime: String,
        /// The decoded thumbnail; none for a whole file.
        handle: Option<image::Handle>,
    },
    Failed(String),
}

/// A file the agent chose to send, kept while the app runs so a failed
/// send can be retried. (After a restart the core still has the file; only
/// Retry needs this.)
#[derive(Clone)]
pub enum Source {
    Path(PathBuf),
    /// A pasted screenshot, before it is encoded.
    Image(RawImage),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Self::Image(i) => f.debug_tuple("Image").field(i).finish(),
        }
    }
}

/// Clipboard pixels as the OS hands them over: RGBA, row by row.
#[derive(Clone)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub rgba: Arc<Vec<u8>>,
}

impl std::fmt::Debug for RawImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawImage({}×{})", self.width, self.height)
    }
}

/// A file on its way up, as its bubble shows it.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: MsgId,
    pub conversation: ConversationId,
    pub name: String,
    pub sent: u64,
    pub total: u64,
    pub state: UploadState,
}

/// What to do with a whole file once it has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    Open,
    SaveTo(PathBuf),
}

#[derive(Debug, Default)]
pub struct Files {
    /// By attachment id and whether it is the thumbnail.
    pub fetched: HashMap<(String, bool), Fetched>,
    /// Whole files asked for, and what the agent wanted done with each.
    pub then: HashMap<String, Then>,
    /// Files not sent yet, oldest first.
    pub uploads: Vec<Upload>,
    pub sources: HashMap<MsgId, Source>,
    /// A file is being dragged over the window.
    pub hovering: bool,
}

impl Files {
    /// Take the core's list of files not sent yet (at start, after a
    /// restart, after a resync). A file whose message is already queued is
    /// shown by that message, not by a bubble.
    pub fn restore(&mut self, pending: Vec<PendingUpload>) {
        self.uploads = pending
            .into_iter()
            .filter(|p| bubbled(&p.state))
            .map(|p| Upload {
                id: p.id,
                conversation: p.conversation,
                name: p.name,
                sent: p.sent,
                total: p.total,
                state: p.state,
            })
            .collect();
    }

    /// Progress from the core.
    pub fn progress(&mut self, u: Upload) {
        let at = self.uploads.iter().position(|o| o.id == u.id);
        match (at, bubbled(&u.state)) {
            (Some(i), true) => self.uploads[i] = u,
            (None, true) => self.uploads.push(u),
            (Some(i), false) => {
                self.uploads.remove(i);
            }
            (None, false) => {}
        }
    }

    /// `send_file` returned: show the bubble at once, before the first
    /// progress report.
    pub fn queued(&mut self, u: Upload, source: Source) {
        self.sources.insert(u.id, source);
        if !self.uploads.iter().any(|o| o.id == u.id) {
            self.uploads.push(u);
        }
    }

    pub fn forget(&mut self, id: MsgId) {
        self.uploads.retain(|u| u.id != id);
        self.sources.remove(&id);
    }

    /// Decoded thumbnails are what a long day of images costs in memory:
    /// past `keep`, only those of `on_screen` stay, with fetches under way
    /// and files the agent is waiting for. The core's disk cache answers
    /// at once if one comes back into view.
    pub fn trim(&mut self, on_screen: &[String], keep: usize) {
        if self.fetched.len() <= keep {
            return;
        }
        let then = &self.then;
        self.fetched.retain(|(id, _), f| {
            matches!(f, Fetched::Loading) || on_screen.contains(id) || then.contains_key(id)
        });
    }

    pub fn in_conversation(&self, id: ConversationId) -> impl Iterator<Item = &Upload> {
        self.uploads.iter().filter(move |u| u.conversation == id)
    }
}

// The message carrying a file shows it once queued; before, its bubble does.
fn bubbled(state: &UploadState) -> bool {
    matches!(state, UploadState::Uploading | UploadState::Failed(_))
}

/// The words for a failed fetch: what it means for the agent, not the code.
pub fn fetch_error(code: ErrorCode, message: &str) -> String {
    let t = tr();
    match code {
        ErrorCode::NotFound => t.file_gone.to_owned(),
        ErrorCode::Unavailable => (t.cannot_fetch_now)(message),
        _ => (t.could_not_fetch)(&code.to_string(), message),
    }
}

/// "1.4 MB".
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // Display only: the precision lost converting to f64 is far below it.
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// Whether a file may be handed to the system's default app. Anything the
/// default app could run as script (HTML, SVG, XML) is only saved: the
/// sender is a stranger on the internet.
pub fn openable(mime: &str) -> bool {
    let m = mime.to_ascii_lowercase();
    !(m.contains("html") || m.contains("xml") || m.contains("svg") || m.contains("javascript"))
}

/// The image on the clipboard, if it holds one. `Ok(None)` when it holds
/// something else (the paste is then text).
pub fn read_clipboard_image() -> Result<Option<RawImage>, String> {
    let mut cb = arboard::Clipboard::new().map_err(|e| e.to_string())?;
    match cb.get_image() {
        Ok(img) => {
            let width = u32::try_from(img.width).map_err(|e| e.to_string())?;
            let height = u32::try_from(img.height).map_err(|e| e.to_string())?;
            Ok(Some(RawImage {
                width,
                height,
                rgba: Arc::new(img.bytes.into_owned()),
            }))
        }
        Err(arboard::Error::ContentNotAvailable) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Clipboard pixels as a PNG file's bytes; a failure in the words of `t`
/// (this runs off the UI thread).
pub fn encode_png(img: &RawImage, t: &Texts) -> Result<Vec<u8>, String> {
    let buf = ::image::RgbaImage::from_raw(img.width, img.height, img.rgba.to_vec())
        .ok_or_else(|| t.clipboard_size_mismatch.to_owned())?;
    let mut out = Cursor::new(Vec::new());
    buf.write_to(&mut out, ::image::ImageFormat::Png)
        .map_err(|e| (t.cannot_encode_screenshot)(&e.to_string()))?;
    Ok(out.into_inner())
}

/// Decode a thumbnail from the cache, by its content (cache files carry no
/// extension), within bounds: a file that is not what the server made must
/// not take the app's memory. The renderer is handed pixels, never a path,
/// so a file it cannot read shows as an error (in the words of `t`) rather
/// than failing a frame.
pub fn decode_thumbnail(path: &Path, t: &Texts) -> Result<image::Handle, String> {
    let bytes = std::fs::read(path).map_err(|e| (t.cannot_read_thumbnail)(&e.to_string()))?;
    let mut reader = ::image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let mut limits = ::image::Limits::default();
    limits.max_image_width = Some(4096);
    limits.max_image_height = Some(4096);
    limits.max_alloc = Some(64 * 1024 * 1024);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| (t.not_readable_image)(&e.to_string()))?
        .into_rgba8();
    let (w, h) = img.dimensions();
    Ok(image::Handle::from_rgba(w, h, img.into_raw()))
}

/// The name a pasted screenshot is sent under.
pub fn screenshot_name(now_ms: i64) -> String {
    format!("screenshot-{now_ms}.png")
}

/// Ask the agent for a file to send. The dialog's title comes in, worded
/// on the UI thread (this runs on an executor's).
pub async fn pick_file(title: &'static str) -> Option<PathBuf> {
    rfd::AsyncFileDialog::new()
        .set_title(title)
        .pick_file()
        .await
        .map(|f| f.path().to_path_buf())
}

/// Ask the agent where to save `name`, under the dialog title `title`.
pub async fn pick_save_path(title: &'static str, name: String) -> Option<PathBuf> {
    rfd::AsyncFileDialog::new()
        .set_title(title)
        .set_file_name(name)
        .save_file()
        .await
        .map(|f| f.path().to_path_buf())
}

/// Hand `path` to the system's app for its type, without waiting for it.
pub fn open_with_os(path: &Path) -> Result<(), String> {
    #[cfg(target_os = "macos")]
    let mut cmd = std::process::Command::new("open");
    #[cfg(target_os = "windows")]
    let mut cmd = {
        let mut c = std::process::Command::new("cmd");
        // The empty argument is `start`'s window title, so a path with
        // spaces is not taken for one.
        c.args(["/C", "start", ""]);
        c
    };
    #[cfg(not(any(target_os = "macos", target_os = "windows")))]
    let mut cmd = std::process::Command::new("xdg-open");
    let mut child = cmd
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| (tr().could_not_open)(&path.display().to_string(), &e.to_string()))?;
    // Reaped in the background so no zombie stays behind.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// An attachment in a message: a thumbnail for an image, a card otherwise;
/// a loading or error state, never a blank.
pub fn attachment_view<'a>(files: &'a Files, a: &'a AttachmentInfo) -> Element<'a, Action> {
    let caption = small(format!("{} · {}", a.name, human_size(a.size))).style(muted);
    let full = files.fetched.get(&(a.id.clone(), false));
    if a.image {
        let thumb: Element<'a, Action> = match files.fetched.get(&(a.id.clone(), true)) {
            Some(Fetched::Ready {
                handle: Some(handle),
                ..
            }) => container(
                button(
                    image(handle.clone())
                        .content_fit(ContentFit::ScaleDown)
                        .width(Length::Shrink)
                        .height(Length::Shrink),
                )
                .padding(0)
                .style(button::text)
                .on_press(Action::Open(a.clone())),
            )
            .id(format!("thumb-{}", a.id))
            .max_width(THUMB_MAX)
            .max_height(THUMB_MAX)
            .into(),
            Some(Fetched::Failed(e)) => container(
                column![
                    small((tr().image_unavailable)(e)).style(crate::ui::theme::danger_text),
                    retry(&a.id, true),
                ]
                .spacing(4),
            )
            .id(format!("thumb-failed-{}", a.id))
            .padding(8)
            .width(THUMB_MAX)
            .style(card)
            .into(),
            Some(Fetched::Loading | Fetched::Ready { handle: None, .. }) | None => {
                container(small(tr().loading_image).style(muted))
                    .id(format!("thumb-loading-{}", a.id))
                    .center_x(THUMB_MAX)
                    .center_y(THUMB_MAX / 2.0)
                    .style(card)
                    .into()
            }
        };
        let mut col = column![thumb, caption].spacing(2);
        if let Some(s) = full_state(full, &a.id) {
            col = col.push(s);
        }
        return col.into();
    }
    let mut buttons = row![].spacing(6);
    if openable(&a.mime) {
        buttons = buttons.push(
            button(text(tr().open).size(12))
                .padding([3, 10])
                .style(crate::ui::theme::button_secondary)
                .on_press(Action::Open(a.clone())),
        );
    }
    buttons = buttons.push(
        button(text(tr().save_as).size(12))
            .padding([3, 10])
            .style(crate::ui::theme::button_secondary)
            .on_press(Action::SaveAs(a.clone())),
    );
    let mut col = column![
        text(a.name.as_str()).size(14),
        small(format!("{} · {}", human_size(a.size), a.mime)).style(muted),
        buttons,
    ]
    .spacing(4);
    if let Some(s) = full_state(full, &a.id) {
        col = col.push(s);
    }
    container(col)
        .id(format!("file-{}", a.id))
        .padding(8)
        .max_width(320)
        .style(card)
        .into()
}

/// The whole file's download, while it is under way or if it failed.
fn full_state<'a>(full: Option<&'a Fetched>, id: &str) -> Option<Element<'a, Action>> {
    match full? {
        Fetched::Loading => Some(small(tr().downloading).style(muted).into()),
        Fetched::Failed(e) => Some(
            column![
                small(e.as_str()).style(crate::ui::theme::danger_text),
                retry(id, false)
            ]
            .spacing(4)
            .into(),
        ),
        Fetched::Ready { .. } => None,
    }
}

fn retry<'a>(id: &str, thumb: bool) -> Element<'a, Action> {
    button(text(tr().retry).size(12))
        .padding([3, 10])
        .style(crate::ui::theme::button_secondary)
        .on_press(Action::Retry {
            id: id.to_owned(),
            thumb,
        })
        .into()
}

/// A file on its way up: name, progress and Cancel; or the server's
/// refusal with Retry and Remove.
pub fn upload_bubble<'a>(files: &'a Files, u: &'a Upload) -> Element<'a, Action> {
    let pct = u.sent.saturating_mul(100).checked_div(u.total).unwrap_or(0);
    let mut col = column![text(u.name.as_str()).size(14)].spacing(4);
    match &u.state {
        UploadState::Failed(why) => {
            col = col.push(small((tr().not_sent)(why)).style(crate::ui::theme::danger_text));
            let mut buttons = row![].spacing(6);
            if files.sources.contains_key(&u.id) {
                buttons = buttons.push(
                    container(
                        button(text(tr().retry).size(12))
                            .padding([3, 10])
                            .style(crate::ui::theme::button_secondary)
                            .on_press(Action::RetryUpload(u.id)),
                    )
                    .id(format!("upload-retry-{}", u.id)),
                );
            }
            buttons = buttons.push(
                container(
                    button(text(tr().remove).size(12))
                        .padding([3, 10])
                        .style(button::text)
                        .on_press(Action::RemoveUpload(u.id)),
                )
                .id(format!("upload-remove-{}", u.id)),
            );
            col = col.push(buttons);
        }
        _ => {
            // Display only: a fraction of a pixel is all the rounding costs.
            #[allow(clippy::cast_precision_loss)]
            let (sent, total) = (u.sent as f32, u.total.max(1) as f32);
            col = col.push(
                row![
                    progress_bar(0.0..=total, sent)
                        .length(Length::Fixed(200.0))
                        .girth(6),
                    small(format!("{pct}%")),
                    container(
                        button(text(tr().cancel).size(12))
                            .padding([3, 10])
                            .style(button::text)
                            .on_press(Action::CancelUpload(u.id)),
                    )
                    .id(format!("upload-cancel-{}", u.id)),
                ]
                .spacing(8)
                .align_y(Alignment::Center),
            );
            col = col.push(
                small((tr().sending_of)(&human_size(u.sent), &human_size(u.total))).style(muted),
            );
        }
    }
    container(col)
        .id(format!("upload-{}", u.id))
        .padding([6, 10])
        .max_width(320)
        .style(card)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_only_what_is_on_screen_or_awaited_stays() {
        let ready = |n: &str| Fetched::Ready {
            path: PathBuf::from(n),
            mime: "image/png".into(),
            handle: None,
        };
        let mut f = Files::default();
        for i in 0..10 {
            f.fetched.insert((format!("a{i}"), true), ready("x"));
        }
        f.fetched.insert(("loading".into(), true), Fetched::Loading);
        f.fetched.insert(("wanted".into(), false), ready("y"));
        f.then.insert("wanted".into(), Then::Open);
        f.trim(&["a3".to_owned()], 20);
        assert_eq!(f.fetched.len(), 12, "under the limit nothing goes");
        f.trim(&["a3".to_owned()], 5);
        let mut left: Vec<&str> = f.fetched.keys().map(|(id, _)| id.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["a3", "loading", "wanted"]);
    }

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_400_000), "1.4 MB");
        assert_eq!(human_size(20_000_000), "20 MB");
    }

    #[test]
    fn script_capable_types_are_never_opened() {
        assert!(openable("application/pdf"));
        assert!(openable("image/png"));
        assert!(!openable("text/html"));
        assert!(!openable("image/svg+xml"));
    }

    #[test]
    fn clipboard_pixels_become_a_png_and_a_short_buffer_is_refused() {
        let img = RawImage {
            width: 3,
            height: 2,
            rgba: Arc::new(vec![200; 3 * 2 * 4]),
        };
        let png = encode_png(&img, &crate::ui::i18n::EN).unwrap();
        let back = ::image::load_from_memory(&png).unwrap();
        assert_eq!((back.width(), back.height()), (3, 2));
        let short = RawImage {
            width: 3,
            height: 2,
            rgba: Arc::new(vec![0; 5]),
        };
        assert!(encode_png(&short, &crate::ui::i18n::EN).is_err());
    }
}
