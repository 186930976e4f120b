//! Agent passwords: argon2id PHC strings.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password must be at least {0} characters")]
    TooShort(usize),
}

pub const MIN_PASSWORD: usize = 4;

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AuthError::TooShort(MIN_PASSWORD));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// A fixed hash to verify against when the user does not exist, so that an
/// unknown username costs the same time as a wrong password.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Qm5i1JbN3M0J0cm8xq9yqQ4pZ9h0f2Y1l8n3wqk2nB8";

pub fn verify_password(password: &str, hash: Option<&str>) -> bool {
    let (target, real) = match hash {
        Some(h) => (h, true),
        None => (DUMMY_HASH, false),
    };
    let Ok(parsed) = PasswordHash::new(target) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        && real
}

/// How long one password check takes on this machine: an unknown username
/// waits this long instead of hashing, so it cannot be told apart from a
/// wrong password by timing. Measured once at start
/// ([`measure_verify_time`]); 50 ms until then.
pub fn typical_verify_time() -> std::time::Duration {
    VERIFY_TIME
        .get()
        .copied()
        .unwrap_or(std::time::Duration::from_millis(50))
}

static VERIFY_TIME: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// Time one check against the dummy hash (blocking: run it off the async
/// threads).
pub fn measure_verify_time() {
    let t = std::time::Instant::now();
    let _ignored = verify_password("not a password", None);
    let _first = VERIFY_TIME.set(t.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", Some(&h)));
        assert!(!verify_password("wrong", Some(&h)));
        assert!(!verify_password("anything", None));
        assert!(hash_password("abc").is_err());
    }
}
