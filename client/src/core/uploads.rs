//! Files over the agent channel: sending them (a durable upload queue in
//! front of the outbox) and fetching them into a cache.
//!
//! Sending: `send_file` copies the file under the data dir and records it
//! in the store ([`crate::store::UploadRow`]; its docs walk through every
//! crash point). The core then uploads one file at a time with one write in
//! flight: `UploadCreate`, then `UploadWrite` chunks of [`CHUNK`], each
//! sent when the previous answer arrives. After a restart it first asks
//! `UploadOffset`; after a reconnect the session machine resends the write
//! that was in flight, whose answer (the new offset, or a `conflict` that
//! makes us ask `UploadOffset`) says where to go on. Only on `UploadDone`
//! is the `Send` that carries the file queued, under the id `send_file`
//! returned, in the transaction that marks the upload sending.
//!
//! Why one file and one chunk at a time: the server answers an agent's
//! queries one by one anyway, so more in flight would not go faster; and a
//! message typed meanwhile waits on the socket behind at most one chunk.
//!
//! Fetching: `AttachmentBytes` in chunks into `cache/ID.part`, renamed to
//! `cache/ID` (or `ID.thumb`) when whole, with its type beside it; at most
//! [`FETCHES`] at once, so they leave room in the server's query queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdfast_protocol::agent::{Action, ConversationId, Query, QueryResult, WireError};
use holdfast_protocol::error::ErrorCode;
use holdfast_protocol::ids::MsgId;

use super::Core;
use crate::error::ClientError;
use crate::store::{self, UploadRow};
use crate::update::{Update, UploadState};

/// Bytes per `UploadWrite`: half the protocol's cap, so a message queued
/// behind a chunk waits about a second on a 1 Mbit/s link.
pub const CHUNK: usize = 128 * 1024;
/// Bytes asked per `AttachmentBytes`: the protocol's `MAX_UPLOAD_CHUNK`.
const FETCH_CHUNK: u32 = 256 * 1024;
/// Downloads running at once.
const FETCHES: usize = 2;
/// The wait before trying again after a refusal that may pass (storage
/// unavailable, too many queries) when the server names none.
const RETRY: Duration = Duration::from_secs(2);
/// Internal query ids start here; the handle numbers its own from 1, and
/// would need two billion queries to reach this.
const FIRST_INTERNAL: u32 = 0x8000_0000;
/// How often progress is written to the store (it is a hint for a UI after
/// a restart; the server's offset is what resuming relies on).
const PROGRESS_EVERY: u64 = 1024 * 1024;

/// The directory of a store's files: beside it, per account.
pub(crate) fn files_dir(store_path: &Path) -> PathBuf {
    let mut s = OsString::from(store_path.as_os_str());
    s.push(".files");
    PathBuf::from(s)
}

/// Where the copy of file `id` to send is kept.
pub(crate) fn outgoing_path(files: &Path, id: &MsgId) -> PathBuf {
    files.join("outgoing").join(id.to_string())
}

/// A file `send_file` copied, for the core to record.
#[derive(Debug)]
pub(crate) struct NewUpload {
    pub id: MsgId,
    pub conversation: ConversationId,
    pub name: String,
    pub body: String,
    pub file: PathBuf,
    pub total: u64,
}

/// What an internal query was for.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Create(MsgId),
    Write(MsgId),
    Offset(MsgId),
    Fetch(u32),
}

#[derive(Debug)]
struct Job {
    row: UploadRow,
    /// The server's offset as last heard.
    offset: u64,
    /// Since this core started, the server told us where it stands: until
    /// then, ask before writing.
    known: bool,
    in_flight: bool,
    retry_at: Option<Instant>,
    /// The offset last written to the store.
    saved: u64,
}

#[derive(Debug)]
struct Fetch {
    id: String,
    thumb: bool,
    part: PathBuf,
    done: PathBuf,
    offset: u64,
    retry_at: Option<Instant>,
    in_flight: bool,
}

/// The core's upload queue and downloads.
#[derive(Debug)]
pub(crate) struct Uploads {
    files: PathBuf,
    jobs: BTreeMap<MsgId, Job>,
    asked: HashMap<u32, Asked>,
    next: u32,
    /// Running downloads by the caller's request id.
    fetches: BTreeMap<u32, Fetch>,
    waiting: VecDeque<(u32, String, bool)>,
}

impl Uploads {
    /// The queue as the store left it; copies no row names are deleted.
    pub(crate) fn restore(store_path: &Path, store: &store::Store) -> Self {
        let files = files_dir(store_path);
        let rows = store.uploads().unwrap_or_else(|e| {
            tracing::warn!("cannot read pending uploads: {e}");
            Vec::new()
        });
        if let Ok(dir) = std::fs::read_dir(files.join("outgoing")) {
            for e in dir.flatten() {
                let p = e.path();
                if !rows.iter().any(|r| r.file == p) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let jobs = rows
            .into_iter()
            .map(|row| {
                let job = Job {
                    offset: row.sent,
                    saved: row.sent,
                    known: false,
                    in_flight: false,
                    retry_at: None,
                    row,
                };
                (job.row.id, job)
            })
            .collect();
        Self {
            files,
            jobs,
            asked: HashMap::new(),
            next: FIRST_INTERNAL,
            fetches: BTreeMap::new(),
            waiting: VecDeque::new(),
        }
    }

    fn ask(&mut self, what: Asked) -> u32 {
        let r = self.next;
        self.next = self.next.checked_add(1).unwrap_or(FIRST_INTERNAL);
        self.asked.insert(r, what);
        r
    }

    /// Whether `request` is one of ours.
    pub(crate) fn owns(&self, request: u32) -> bool {
        self.asked.contains_key(&request)
    }

    /// The next retry due.
    pub(crate) fn due(&self) -> Option<Instant> {
        let jobs = self.jobs.values().filter_map(|j| j.retry_at);
        let fetches = self.fetches.values().filter_map(|f| f.retry_at);
        jobs.chain(fetches).min()
    }
}

fn progress(row: &UploadRow, sent: u64, state: UploadState) -> Update {
    Update::Upload {
        id: row.id,
        conversation: row.conversation,
        name: row.name.clone(),
        sent,
        total: row.total,
        state,
    }
}

/// Whether a refusal may pass if asked again later.
fn transient(e: &WireError) -> bool {
    matches!(
        e.code,
        ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::Throttled
            | ErrorCode::Internal
            | ErrorCode::GoingAway
    )
}

fn retry_in(e: &WireError) -> Instant {
    Instant::now()
        + e.retry_after_ms
            .map_or(RETRY, |ms| Duration::from_millis(u64::from(ms)))
}

fn valid_attachment_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn read_chunk(path: &Path, at: u64, total: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(at))?;
    let n = usize::try_from(total.saturating_sub(at))
        .unwrap_or(CHUNK)
        .min(CHUNK);
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

impl Core {
    // ------------------------------------------------------------ requests

    pub(super) fn add_upload(&mut self, u: NewUpload) -> Result<(), ClientError> {
        let row = UploadRow {
            id: u.id,
            conversation: u.conversation,
            name: u.name,
            body: u.body,
            file: u.file,
            total: u.total,
            server_id: None,
            sent: 0,
            state: UploadState::Uploading,
        };
        self.store.add_upload(&row, store::now_ms())?;
        self.emit(progress(&row, 0, UploadState::Uploading));
        self.uploads.jobs.insert(
            row.id,
            Job {
                row,
                offset: 0,
                saved: 0,
                known: true,
                in_flight: false,
                retry_at: None,
            },
        );
        self.pump_uploads();
        Ok(())
    }

    pub(super) fn cancel_upload(&mut self, id: MsgId) -> Result<bool, ClientError> {
        if !self.store.cancel_upload(&id)? {
            return Ok(false);
        }
        if let Some(job) = self.uploads.jobs.remove(&id) {
            let _ = std::fs::remove_file(&job.row.file);
            self.emit(progress(&job.row, job.offset, UploadState::Cancelled));
        }
        // An answer still in flight finds no job and is dropped.
        self.pump_uploads();
        Ok(true)
    }

    pub(super) fn fetch(&mut self, request: u32, id: String, thumb: bool) {
        self.uploads.waiting.push_back((request, id, thumb));
        self.pump_fetches();
    }

    // ------------------------------------------------------------ driving

    /// Send the next query of the first upload that can go on, if none is
    /// in flight, and start waiting downloads.
    pub(super) fn pump_uploads(&mut self) {
        self.pump_fetches();
        let now = Instant::now();
        if self.uploads.jobs.values().any(|j| j.in_flight) {
            return;
        }
        let Some(id) = self
            .uploads
            .jobs
            .values()
            .find(|j| j.row.state == UploadState::Uploading && j.retry_at.is_none_or(|t| t <= now))
            .map(|j| j.row.id)
        else {
            return;
        };
        let Some(job) = self.uploads.jobs.get(&id) else {
            return;
        };
        let (row, offset, known) = (job.row.clone(), job.offset, job.known);
        let query = match (&row.server_id, known) {
            (None, _) => {
                let request = self.uploads.ask(Asked::Create(id));
                Query::UploadCreate {
                    request,
                    conversation: row.conversation,
                    name: row.name.clone(),
                    length: row.total,
                    mime_hint: String::new(),
                }
            }
            (Some(server_id), false) => {
                let request = self.uploads.ask(Asked::Offset(id));
                Query::UploadOffset {
                    request,
                    id: server_id.clone(),
                }
            }
            (Some(server_id), true) => {
                let bytes = match read_chunk(&row.file, offset, row.total) {
                    Ok(b) => b,
                    Err(e) => {
                        // The copy under the data dir is gone or short:
                        // nothing can send it any more.
                        let m = format!("the local copy of the file is unreadable: {e}");
                        self.fail_upload(id, &m);
                        return;
                    }
                };
                let request = self.uploads.ask(Asked::Write(id));
                Query::UploadWrite {
                    request,
                    id: server_id.clone(),
                    offset,
                    bytes,
                }
            }
        };
        if let Some(job) = self.uploads.jobs.get_mut(&id) {
            job.in_flight = true;
            job.retry_at = None;
        }
        self.machine.query(query);
    }

    fn pump_fetches(&mut self) {
        let now = Instant::now();
        while self.uploads.fetches.len() < FETCHES {
            let Some((request, id, thumb)) = self.uploads.waiting.pop_front() else {
                break;
            };
            self.start_fetch(request, id, thumb);
        }
        let due: Vec<u32> = self
            .uploads
            .fetches
            .iter()
            .filter(|(_, f)| !f.in_flight && f.retry_at.is_some_and(|t| t <= now))
            .map(|(r, _)| *r)
            .collect();
        for r in due {
            self.ask_bytes(r);
        }
    }

    fn start_fetch(&mut self, request: u32, id: String, thumb: bool) {
        if !valid_attachment_id(&id) {
            self.emit(Update::AttachmentFailed {
                request,
                id,
                thumb,
                code: ErrorCode::NotFound,
                message: "no such attachment".into(),
            });
            return;
        }
        let dir = self.uploads.files.join("cache");
        let name = if thumb {
            format!("{id}.thumb")
        } else {
            id.clone()
        };
        let done = dir.join(&name);
        let mime_path = dir.join(format!("{name}.mime"));
        if done.exists()
            && let Ok(mime) = std::fs::read_to_string(&mime_path)
        {
            self.emit(Update::AttachmentReady {
                request,
                id,
                thumb,
                path: done,
                mime,
            });
            return;
        }
        // Per request: two fetches of one file at once write apart, and
        // the later rename wins with the same bytes.
        let part = dir.join(format!("{name}.{request}.part"));
        let made = std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(&part));
        if let Err(e) = made {
            self.emit(Update::AttachmentFailed {
                request,
                id,
                thumb,
                code: ErrorCode::Unavailable,
                message: format!("cannot write the download cache: {e}"),
            });
            return;
        }
        self.uploads.fetches.insert(
            request,
            Fetch {
                id,
                thumb,
                part,
                done,
                offset: 0,
                retry_at: None,
                in_flight: false,
            },
        );
        self.ask_bytes(request);
    }

    fn ask_bytes(&mut self, request: u32) {
        let Some(f) = self.uploads.fetches.get(&request) else {
            return;
        };
        let (id, thumb, offset) = (f.id.clone(), f.thumb, f.offset);
        let internal = self.uploads.ask(Asked::Fetch(request));
        if let Some(f) = self.uploads.fetches.get_mut(&request) {
            f.in_flight = true;
            f.retry_at = None;
        }
        self.machine.query(Query::AttachmentBytes {
            request: internal,
            id,
            thumb,
            offset,
            max: FETCH_CHUNK,
        });
    }

    // ------------------------------------------------------------ answers

    /// An answer to one of our queries.
    pub(super) fn on_upload_answer(&mut self, request: u32, result: QueryResult) {
        let Some(asked) = self.uploads.asked.remove(&request) else {
            return;
        };
        match asked {
            Asked::Fetch(r) => self.on_bytes(r, result),
            Asked::Create(id) | Asked::Write(id) | Asked::Offset(id) => {
                if let Some(job) = self.uploads.jobs.get_mut(&id) {
                    job.in_flight = false;
                }
                self.on_upload_result(id, asked, result);
            }
        }
        self.pump_uploads();
    }

    fn on_upload_result(&mut self, id: MsgId, asked: Asked, result: QueryResult) {
        let Some(job) = self.uploads.jobs.get(&id) else {
            return; // cancelled meanwhile
        };
        let row = job.row.clone();
        match result {
            QueryResult::Upload {
                id: server_id,
                offset,
                ..
            } => {
                if row.server_id.is_none() {
                    // Stored before the first write: a restart resumes
                    // this upload rather than making another.
                    if let Err(e) = self.store.set_upload_server_id(&id, Some(&server_id)) {
                        self.upload_store_failed(id, &e);
                        return;
                    }
                }
                let save = {
                    let Some(job) = self.uploads.jobs.get_mut(&id) else {
                        return;
                    };
                    job.row.server_id = Some(server_id);
                    job.offset = offset;
                    job.known = true;
                    (offset >= job.saved + PROGRESS_EVERY).then(|| {
                        job.saved = offset;
                        offset
                    })
                };
                if let Some(sent) = save
                    && let Err(e) = self.store.set_upload_sent(&id, sent)
                {
                    tracing::warn!("cannot record upload progress: {e}");
                }
                self.emit(progress(&row, offset, UploadState::Uploading));
            }
            QueryResult::UploadDone { attachment, .. } => {
                let action = Action::Send {
                    conversation: row.conversation,
                    body: row.body.clone(),
                    attachment: Some(attachment.id.clone()),
                };
                let seq = self.machine.next_seq();
                let now = store::now_ms();
                match self
                    .store
                    .queue_upload_send(seq, id, &action, &attachment, now)
                {
                    Ok(Some(stored)) => {
                        let pushed = self.machine.push(id, action);
                        debug_assert_eq!(pushed, seq);
                        if let Some(job) = self.uploads.jobs.get_mut(&id) {
                            job.row.state = UploadState::Sending;
                            job.offset = row.total;
                        }
                        let _ = std::fs::remove_file(&row.file);
                        self.emit(progress(&row, row.total, UploadState::Sending));
                        if let Some(m) = stored {
                            self.emit(Update::Message(m));
                        }
                        self.publish();
                    }
                    Ok(None) => {
                        self.uploads.jobs.remove(&id);
                    }
                    Err(e) => self.upload_store_failed(id, &e),
                }
            }
            QueryResult::Refused(e) if transient(&e) => {
                if let Some(job) = self.uploads.jobs.get_mut(&id) {
                    job.retry_at = Some(retry_in(&e));
                }
            }
            QueryResult::Refused(e) => match (asked, e.code) {
                // Another offset than ours: ask where it stands, as a tus
                // client sends HEAD after a 409. (A second device writing
                // the same upload gets this too, and waits a moment.)
                (Asked::Write(_), ErrorCode::Conflict) => {
                    if let Some(job) = self.uploads.jobs.get_mut(&id) {
                        job.known = false;
                        if e.message.contains("in progress") {
                            job.retry_at = Some(Instant::now() + RETRY);
                        }
                    }
                }
                // The server no longer has the upload (swept after a day
                // untouched): start it over, the only way left.
                (Asked::Write(_) | Asked::Offset(_), ErrorCode::NotFound) => {
                    tracing::warn!(%id, "the server forgot an upload; starting it over");
                    if let Err(err) = self.store.set_upload_server_id(&id, None) {
                        self.upload_store_failed(id, &err);
                        return;
                    }
                    if let Some(job) = self.uploads.jobs.get_mut(&id) {
                        job.row.server_id = None;
                        job.offset = 0;
                        job.saved = 0;
                    }
                }
                _ => self.fail_upload(id, &e.message),
            },
            other => {
                tracing::warn!(?other, "unexpected answer to an upload query");
                if let Some(job) = self.uploads.jobs.get_mut(&id) {
                    job.known = false;
                    job.retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
    }

    /// Refused for good: recorded, so a restart shows it failed and never
    /// sends it.
    fn fail_upload(&mut self, id: MsgId, message: &str) {
        if let Err(e) = self.store.fail_upload(&id, message) {
            self.upload_store_failed(id, &e);
            return;
        }
        if let Some(job) = self.uploads.jobs.get_mut(&id) {
            job.row.state = UploadState::Failed(message.to_string());
            let _ = std::fs::remove_file(&job.row.file);
            let (row, offset) = (job.row.clone(), job.offset);
            self.emit(progress(&row, offset, UploadState::Failed(message.into())));
        }
    }

    fn upload_store_failed(&mut self, id: MsgId, e: &crate::error::StoreError) {
        tracing::error!("local store failed for an upload: {e}");
        self.emit(Update::StoreFailed {
            message: e.to_string(),
        });
        if let Some(job) = self.uploads.jobs.get_mut(&id) {
            job.known = false;
            job.retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// The send of a file was acked (its row is gone from the store with
    /// the outbox row).
    pub(super) fn upload_acked(&mut self, id: MsgId, rejected: Option<&str>) {
        if let Some(job) = self.uploads.jobs.remove(&id) {
            let state = match rejected {
                Some(m) => UploadState::Failed(m.to_string()),
                None => UploadState::Sent,
            };
            self.emit(progress(&job.row, job.row.total, state));
        }
    }

    fn on_bytes(&mut self, request: u32, result: QueryResult) {
        let Some(f) = self.uploads.fetches.get_mut(&request) else {
            return;
        };
        f.in_flight = false;
        match result {
            QueryResult::AttachmentBytes {
                total,
                offset,
                bytes,
                mime,
            } if offset == f.offset => {
                let end = offset + bytes.len() as u64;
                let written = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&f.part)
                    .and_then(|mut p| p.write_all(&bytes));
                if let Err(e) = written {
                    self.fetch_failed(
                        request,
                        ErrorCode::Unavailable,
                        format!("cannot write the download cache: {e}"),
                    );
                    return;
                }
                f.offset = end;
                if end >= total || bytes.is_empty() {
                    let (part, done) = (f.part.clone(), f.done.clone());
                    let mut mime_path = done.clone().into_os_string();
                    mime_path.push(".mime");
                    let finished = std::fs::write(&mime_path, &mime)
                        .and_then(|()| std::fs::rename(&part, &done));
                    match finished {
                        Ok(()) => {
                            if let Some(f) = self.uploads.fetches.remove(&request) {
                                self.emit(Update::AttachmentReady {
                                    request,
                                    id: f.id,
                                    thumb: f.thumb,
                                    path: done,
                                    mime,
                                });
                            }
                        }
                        Err(e) => self.fetch_failed(
                            request,
                            ErrorCode::Unavailable,
                            format!("cannot write the download cache: {e}"),
                        ),
                    }
                } else {
                    self.ask_bytes(request);
                }
            }
            QueryResult::Refused(e) if transient(&e) => f.retry_at = Some(retry_in(&e)),
            QueryResult::Refused(e) => self.fetch_failed(request, e.code, e.message),
            other => {
                tracing::warn!(?other, "unexpected answer to a download");
                self.fetch_failed(request, ErrorCode::Internal, "unexpected answer".into());
            }
        }
        self.pump_fetches();
    }

    fn fetch_failed(&mut self, request: u32, code: ErrorCode, message: String) {
        if let Some(f) = self.uploads.fetches.remove(&request) {
            let _ = std::fs::remove_file(&f.part);
            self.emit(Update::AttachmentFailed {
                request,
                id: f.id,
                thumb: f.thumb,
                code,
                message,
            });
        }
    }
}
