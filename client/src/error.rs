//! Typed errors. The store's and the client's are separate because the UI
//! may read the store without a running client.

use std::path::PathBuf;

/// A failure of the local SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create the local store directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the local store {path} has schema version {found}, newer than this app knows ({known}); \
         update the app"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("corrupt local data ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("value {0} does not fit the local store")]
    OutOfRange(u64),
    #[error("cannot encode {what} for the local store: {detail}")]
    Encode { what: &'static str, detail: String },
}

/// A failure of the client core or of a request to it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("start() must be called inside a tokio runtime")]
    NoRuntime,
    #[error("no per-user data directory is available on this system")]
    NoDataDir,
    #[error(
        "the local store belongs to {stored_user}@{stored_server}, not {user}@{server}; \
         use one store per account"
    )]
    AccountMismatch {
        stored_server: String,
        stored_user: String,
        server: String,
        user: String,
    },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("the action needs a {len}-byte frame, more than the {max}-byte maximum")]
    TooLarge { len: usize, max: usize },
    #[error("the client has stopped")]
    Stopped,
    #[error("the client is busy; try again in a moment")]
    Busy,
    #[error("cannot keep a copy of the file {path} to send: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}
