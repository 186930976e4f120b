//! The rules of a resumable upload, without any I/O.
//!
//! The HTTP shape is tus-like (create with a declared length, `PATCH` at an
//! offset, `HEAD` for the offset) but written here rather than taken from
//! a crate: the Rust tus crates are clients or unmaintained, and the server
//! side is these few rules plus our own auth, limits and storage, which no
//! crate would know about anyway.

use serde::{Deserialize, Serialize};

/// Per-site upload policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The largest file, in bytes.
    pub max_size: u64,
    /// Uploads a visitor may have open (created, not finished) at once.
    pub max_pending_per_visitor: usize,
    /// Uploads open at once from one address (a whole office shares one).
    pub max_pending_per_ip: usize,
    /// Bytes per second one visitor's uploads may take together.
    pub rate_bytes_per_sec: u64,
    /// The longest file name kept.
    pub max_name: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_size: 20 * 1024 * 1024,
            max_pending_per_visitor: 4,
            max_pending_per_ip: 32,
            rate_bytes_per_sec: 8 * 1024 * 1024,
            max_name: 255,
        }
    }
}

/// Why a request is refused; the HTTP layer maps each to a status.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("an empty file cannot be sent")]
    Empty,
    #[error("the file is {declared} bytes; the limit is {max}")]
    TooLarge { declared: u64, max: u64 },
    #[error("Upload-Length is missing or not a number")]
    NoLength,
    #[error("too many uploads in progress; finish or wait for one")]
    TooManyPending,
    #[error(
        "offset {sent} is not the upload's offset {stored}; HEAD for it and continue from there"
    )]
    WrongOffset { sent: u64, stored: u64 },
    #[error("more bytes than the declared {declared}")]
    Overrun { declared: u64 },
    #[error("this upload is already complete")]
    Complete,
    #[error("the content is not an allowed type (png, jpeg, gif, webp, pdf, zip)")]
    BadType,
    #[error("this site accepts only {allowed} files; this one is {kind}")]
    NotAccepted { kind: &'static str, allowed: String },
    #[error("the image is {width}x{height} pixels; the limit is {max} on each side")]
    ImageTooBig { width: u32, height: u32, max: u32 },
    #[error("the image cannot be decoded: {0}")]
    BadImage(String),
}

/// What a stored upload knows about itself; persisted beside its bytes so
/// it survives a restart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadState {
    pub id: String,
    pub site: u64,
    pub visitor: String,
    pub conversation: u64,
    pub name: String,
    pub declared_type: String,
    pub length: u64,
    pub offset: u64,
    pub created_ms: i64,
    /// The site's accepted kinds when the upload was created: checked at
    /// completion, when the content is sniffed.
    #[serde(default)]
    pub kinds: super::sniff::Kinds,
    /// The site's upload rate for this visitor, in bytes per second (0:
    /// the server's).
    #[serde(default)]
    pub rate: u64,
}

/// One site's attachment rules: the server's defaults, narrowed by what
/// the site's admin set (`holdfast-server site attachments`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SitePolicy {
    pub max_size: u64,
    pub kinds: super::sniff::Kinds,
    pub rate_bytes_per_sec: u64,
}

impl Policy {
    /// The rules for a site that set `max_size`, `kinds` and `rate` (each
    /// `None` for the server's default). A site may lower the size limit
    /// but not raise it past the server's, whose memory and disk budget it
    /// is.
    pub fn for_site(
        &self,
        max_size: Option<u64>,
        kinds: Option<super::sniff::Kinds>,
        rate: Option<u64>,
    ) -> SitePolicy {
        SitePolicy {
            max_size: max_size.map_or(self.max_size, |m| m.min(self.max_size)),
            kinds: kinds.unwrap_or_default(),
            rate_bytes_per_sec: rate.unwrap_or(self.rate_bytes_per_sec).max(1),
        }
    }
}

/// Checks a sniffed kind against the upload's site rules.
pub fn check_kind(s: &UploadState, kind: super::sniff::Kind) -> Result<(), Refusal> {
    if s.kinds.allows(kind) {
        Ok(())
    } else {
        Err(Refusal::NotAccepted {
            kind: kind.name(),
            allowed: s.kinds.names(),
        })
    }
}

/// Checks a create request's declared length against the policy: refused
/// here, before a byte is sent.
pub fn check_create(max_size: u64, length: Option<u64>) -> Result<u64, Refusal> {
    let length = length.ok_or(Refusal::NoLength)?;
    if length == 0 {
        return Err(Refusal::Empty);
    }
    if length > max_size {
        return Err(Refusal::TooLarge {
            declared: length,
            max: max_size,
        });
    }
    Ok(length)
}

/// A PATCH may only continue exactly where the stored bytes end: a skip
/// ahead would leave a hole, an overlap would let a chunk rewrite bytes
/// that were already acknowledged.
pub fn check_patch(s: &UploadState, sent_offset: u64) -> Result<(), Refusal> {
    if s.offset >= s.length {
        return Err(Refusal::Complete);
    }
    if sent_offset != s.offset {
        return Err(Refusal::WrongOffset {
            sent: sent_offset,
            stored: s.offset,
        });
    }
    Ok(())
}

/// How many bytes of an arriving chunk fit; anything beyond the declared
/// length refuses the chunk (a declared size that does not match).
pub fn accept_chunk(s: &UploadState, at: u64, chunk: usize) -> Result<(), Refusal> {
    let end = at.saturating_add(chunk as u64);
    if end > s.length {
        return Err(Refusal::Overrun { declared: s.length });
    }
    Ok(())
}

/// A file name safe to put in a header: no path, no control characters,
/// no quotes, bounded.
pub fn clean_name(raw: &str, max: usize) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | ';' | '\\'))
        .take(max)
        .collect();
    if cleaned.trim().is_empty() {
        "file".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(offset: u64, length: u64) -> UploadState {
        UploadState {
            id: "x".into(),
            site: 1,
            visitor: "v".into(),
            conversation: 1,
            name: "a".into(),
            declared_type: String::new(),
            length,
            offset,
            created_ms: 0,
            kinds: super::super::sniff::Kinds::all(),
            rate: 0,
        }
    }

    #[test]
    fn create_limits() {
        let p = Policy::default();
        assert_eq!(check_create(p.max_size, Some(0)), Err(Refusal::Empty));
        assert_eq!(check_create(p.max_size, None), Err(Refusal::NoLength));
        assert!(matches!(
            check_create(p.max_size, Some(p.max_size + 1)),
            Err(Refusal::TooLarge { .. })
        ));
        assert_eq!(check_create(p.max_size, Some(p.max_size)), Ok(p.max_size));
    }

    #[test]
    fn offsets_must_match() {
        let s = state(10, 100);
        assert!(check_patch(&s, 10).is_ok());
        assert_eq!(
            check_patch(&s, 20),
            Err(Refusal::WrongOffset {
                sent: 20,
                stored: 10
            })
        );
        assert!(matches!(
            check_patch(&s, 5),
            Err(Refusal::WrongOffset { .. })
        ));
        assert_eq!(check_patch(&state(100, 100), 100), Err(Refusal::Complete));
        assert!(accept_chunk(&s, 10, 90).is_ok());
        assert_eq!(
            accept_chunk(&s, 10, 91),
            Err(Refusal::Overrun { declared: 100 })
        );
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd", 255), "passwd");
        assert_eq!(clean_name("a\"b;\r\n.png", 255), "ab.png");
        assert_eq!(clean_name("", 255), "file");
    }
}
