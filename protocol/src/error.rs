//! Error codes shared by both channels.
//!
//! On the agent channel a code is its bincode variant index (a varint); in
//! visitor JSON it is the snake_case name. The order of variants is part of
//! the wire format: append, never reorder.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 0: the request was malformed or failed validation.
    BadRequest,
    /// 1: wrong username or password, or an invalid/forged token.
    Unauthorized,
    /// 2: too many failed logins; `retry_after_ms` says when to try again.
    Throttled,
    /// 3: the peer speaks another protocol version.
    VersionMismatch,
    /// 4: authenticated, but not allowed to do that (an agent moving someone
    /// else's chat, a widget on an origin its site does not allow). Objects
    /// of another site answer `NotFound`, so their ids cannot be probed.
    Forbidden,
    /// 5: no such object.
    NotFound,
    /// 6: a frame, body or message exceeded a size limit.
    TooLarge,
    /// 7: sending too fast.
    RateLimited,
    /// 8: the server cannot commit right now (disk full, storage error).
    /// Nothing was acked; retry later.
    Unavailable,
    /// 9: a bug on the server.
    Internal,
    /// 10: the server is shutting down; reconnect with backoff.
    GoingAway,
    /// 11: the action conflicts with current state (conversation already
    /// taken, already closed).
    Conflict,
    /// 12: the account is disabled.
    Disabled,
    /// 13: the identify hash did not match the site secret.
    BadIdentity,
    /// 14: an administrator ended this session (the password was changed);
    /// sign in again. Not retryable with the same credentials.
    Revoked,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 15] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Throttled,
        ErrorCode::VersionMismatch,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::GoingAway,
        ErrorCode::Conflict,
        ErrorCode::Disabled,
        ErrorCode::BadIdentity,
        ErrorCode::Revoked,
    ];

    /// Whether a client should retry the same request later unchanged.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Throttled
                | ErrorCode::RateLimited
                | ErrorCode::Unavailable
                | ErrorCode::GoingAway
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Throttled => "throttled",
            ErrorCode::VersionMismatch => "version mismatch",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not found",
            ErrorCode::TooLarge => "too large",
            ErrorCode::RateLimited => "rate limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal error",
            ErrorCode::GoingAway => "going away",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Disabled => "disabled",
            ErrorCode::BadIdentity => "bad identity",
            ErrorCode::Revoked => "session revoked",
        };
        f.write_str(s)
    }
}
