//! Where attachment bytes and upload state live: files under the data
//! directory.
//!
//! ```text
//! attachments/uploads/ID.part   the bytes received so far
//! attachments/uploads/ID.json   UploadState (offset, length, owner, chat)
//! attachments/meta/ID.json      Meta, once complete
//! attachments/ab/cdef…          content, named by its SHA-256
//! attachments/views/abcdef…      an image's full-size view, named by the
//!                                original's SHA-256 (made on first request)
//! attachments/link.key          the key of download links
//! ```
//!
//! Every step that acknowledges bytes fsyncs the file and then its
//! directory first, so what a client was told is stored survives a crash,
//! and state files are replaced by rename so a crash leaves the old or the
//! new one, never half of one. Upload state is kept here beside the bytes
//! rather than in the database because the two must agree, and a rename in
//! one directory is atomic where a file write plus a row update are not.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::sniff::{self, Kind};
use super::thumb;
use super::upload::{Refusal, UploadState};

/// A complete attachment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub id: String,
    pub site: u64,
    pub visitor: String,
    pub conversation: u64,
    pub name: String,
    /// The sniffed type, never the declared one.
    pub mime: String,
    pub size: u64,
    pub sha256: String,
    /// The thumbnail's SHA-256, for images.
    pub thumb: Option<String>,
    pub completed_ms: i64,
}

/// Why finishing failed: the client's file, or our disk.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Clone, Debug)]
pub struct Disk {
    root: PathBuf,
}

/// Ids are 32 hex digits we made; anything else never reaches a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `bytes` to `path` by way of a temp file and a rename, fsynced.
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

impl Disk {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("attachments");
        fs::create_dir_all(root.join("uploads"))?;
        fs::create_dir_all(root.join("meta"))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The download-link key, made once and kept so links survive a restart.
    pub fn link_key(&self) -> io::Result<[u8; 32]> {
        let path = self.root.join("link.key");
        if let Ok(bytes) = fs::read(&path)
            && let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(k);
        }
        let k: [u8; 32] = rand::random();
        replace(&path, &k)?;
        Ok(k)
    }

    pub fn part_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.part"))
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.json"))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.root.join("meta").join(format!("{id}.json"))
    }

    pub fn content_path(&self, sha: &str) -> PathBuf {
        let (a, b) = sha.split_at(2.min(sha.len()));
        self.root.join(a).join(b)
    }

    /// The full-size view of the image whose content is `sha`.
    pub fn view_path(&self, sha: &str) -> PathBuf {
        self.root.join("views").join(sha)
    }

    /// Stores the full-size view of content `sha`. The temporary name is
    /// unique, so two nodes' processes (or a restart mid-way) never write
    /// one file together; the rename makes it appear whole or not at all.
    pub fn put_view(&self, sha: &str, view: &[u8]) -> io::Result<()> {
        let path = self.view_path(sha);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(
            ".{sha}.{}.tmp",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(view)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    pub fn create(&self, s: &UploadState) -> io::Result<()> {
        File::create(self.part_path(&s.id))?.sync_all()?;
        self.save(s)
    }

    pub fn save(&self, s: &UploadState) -> io::Result<()> {
        let json = serde_json::to_vec(s).map_err(io::Error::other)?;
        replace(&self.state_path(&s.id), &json)
    }

    pub fn load(&self, id: &str) -> io::Result<Option<UploadState>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match fs::read(self.state_path(id)) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn meta(&self, id: &str) -> io::Result<Option<Meta>> {
        if !valid_id(id) {
            return Ok(None);
        }
        match fs::read(self.meta_path(id)) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the part file for appending at the stored offset. Bytes past
    /// it (a chunk cut before its end was recorded) are dropped, so the file
    /// and the state agree again.
    pub fn open_part(&self, s: &UploadState) -> io::Result<File> {
        let f = OpenOptions::new().write(true).open(self.part_path(&s.id))?;
        f.set_len(s.offset)?;
        let mut f = f;
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(s.offset))?;
        Ok(f)
    }

    /// Checks a complete upload, moves it under its content address, makes
    /// its thumbnail and records it. A refused file is deleted.
    pub fn finish(&self, s: &UploadState, now_ms: i64) -> Result<Meta, FinishError> {
        let part = self.part_path(&s.id);
        let refuse = |r: Refusal| {
            let _ = fs::remove_file(&part);
            let _ = fs::remove_file(self.state_path(&s.id));
            FinishError::Refused(r)
        };
        let mut head = [0u8; sniff::SNIFF_LEN];
        let n = read_up_to(&mut File::open(&part)?, &mut head)?;
        let Some(kind) = sniff::sniff(&head[..n]) else {
            return Err(refuse(Refusal::BadType));
        };
        if let Err(r) = super::upload::check_kind(s, kind) {
            return Err(refuse(r));
        }
        let thumb_sha = if kind.is_image() {
            let reader = BufReader::new(File::open(&part)?);
            match thumb::thumbnail(kind, reader) {
                Ok(t) => {
                    let sha = hex::encode(Sha256::digest(&t));
                    self.put_content(&sha, |p| replace(p, &t))?;
                    Some(sha)
                }
                Err(r) => return Err(refuse(r)),
            }
        } else {
            None
        };
        let sha = hash_file(&part)?;
        self.put_content(&sha, |p| {
            fs::rename(&part, p)?;
            Ok(())
        })?;
        let meta = Meta {
            id: s.id.clone(),
            site: s.site,
            visitor: s.visitor.clone(),
            conversation: s.conversation,
            name: s.name.clone(),
            mime: kind.mime().to_string(),
            size: s.length,
            sha256: sha,
            thumb: thumb_sha,
            completed_ms: now_ms,
        };
        let json = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        replace(&self.meta_path(&s.id), &json)?;
        let _ = fs::remove_file(self.state_path(&s.id));
        let _ = fs::remove_file(&part);
        Ok(meta)
    }

    /// Stores content under its address unless it is there already (the
    /// same screenshot sent twice is kept once), then fsyncs the directory.
    fn put_content(
        &self,
        sha: &str,
        write: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        let path = self.content_path(sha);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        if !path.exists() {
            write(&path)?;
            if let Ok(f) = File::open(&path) {
                f.sync_all()?;
            }
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// Deletes attachments completed before `cutoff_ms` and uploads
    /// started before `stale_ms`; content still named by a newer
    /// attachment stays.
    /// The chats of the attachments completed before `cutoff_ms`: the
    /// only ones whose files can be past retention.
    pub fn chats_completed_before(&self, cutoff_ms: i64) -> io::Result<Vec<u64>> {
        let mut chats = std::collections::BTreeSet::new();
        for (_, m) in self.metas()? {
            if m.completed_ms < cutoff_ms {
                chats.insert(m.conversation);
            }
        }
        Ok(chats.into_iter().collect())
    }

    fn metas(&self) -> io::Result<Vec<(std::path::PathBuf, Meta)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("meta"))? {
            let e = e?;
            let Ok(b) = fs::read(e.path()) else { continue };
            let Ok(m) = serde_json::from_slice::<Meta>(&b) else {
                continue;
            };
            out.push((e.path(), m));
        }
        Ok(out)
    }

    /// Deletes the attachments completed before `cutoff_ms` whose chat is
    /// in `ended`, the content no other attachment names, and the uploads
    /// created before `stale_ms`.
    pub fn prune(
        &self,
        cutoff_ms: i64,
        stale_ms: i64,
        ended: &std::collections::HashSet<u64>,
    ) -> io::Result<usize> {
        let mut keep = std::collections::HashSet::new();
        let mut gone = Vec::new();
        for (path, m) in self.metas()? {
            if m.completed_ms < cutoff_ms && ended.contains(&m.conversation) {
                gone.push((path, m));
            } else {
                keep.insert(m.sha256.clone());
                keep.extend(m.thumb.clone());
            }
        }
        let n = gone.len();
        for (path, m) in gone {
            fs::remove_file(path)?;
            if !keep.contains(&m.sha256) {
                // The view is made from the content, and goes with it.
                let _ = fs::remove_file(self.view_path(&m.sha256));
            }
            for sha in std::iter::once(m.sha256).chain(m.thumb) {
                if !keep.contains(&sha) {
                    let _ = fs::remove_file(self.content_path(&sha));
                }
            }
        }
        for e in fs::read_dir(self.root.join("uploads"))? {
            let e = e?;
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && let Ok(b) = fs::read(&p)
                && let Ok(s) = serde_json::from_slice::<UploadState>(&b)
                && s.created_ms < stale_ms
            {
                let _ = fs::remove_file(self.part_path(&s.id));
                let _ = fs::remove_file(&p);
            }
        }
        Ok(n)
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn hash_file(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match f.read(&mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// The serving type of a stored attachment.
pub fn kind_of(m: &Meta) -> Option<Kind> {
    Kind::from_mime(&m.mime)
}
