//! The server's long-term X25519 key, created on first start and kept with
//! mode 0600 in the data dir. Agents pin its fingerprint.

use std::io::Write;
use std::path::Path;

use holdfast_protocol::handshake::ServerIdentity;
use zeroize::Zeroizing;

pub const KEY_FILE: &str = "server.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read server key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write server key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("server key {path} is {len} bytes; expected 32 (corrupt or not a Holdfast key)")]
    BadLength { path: String, len: usize },
}

/// Load the key, creating it if the data dir has none.
pub fn load_or_create(dir: &Path) -> Result<ServerIdentity, IdentityError> {
    let path = dir.join(KEY_FILE);
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let arr: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| IdentityError::BadLength {
                        path: shown.clone(),
                        len: bytes.len(),
                    })?;
            Ok(ServerIdentity::from_secret_bytes(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| IdentityError::Write {
                path: shown.clone(),
                source,
            })?;
            let id = ServerIdentity::generate(&mut rand::rng());
            let write = |p: &Path| -> std::io::Result<()> {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                let mut f = opts.open(p)?;
                f.write_all(id.secret_bytes().as_ref())?;
                f.sync_all()
            };
            write(&path).map_err(|source| IdentityError::Write {
                path: shown,
                source,
            })?;
            Ok(id)
        }
        Err(source) => Err(IdentityError::Read {
            path: shown,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), b"short").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::BadLength { len: 5, .. })
        ));
    }
}
