//! The schema's versioned steps, one SQL file each under
//! `server/migrations/{sqlite,postgres}/`, embedded by `build.rs` so the one
//! binary still carries them. A file, once released, never changes: a
//! database records each applied step's checksum (PostgreSQL) and a
//! changed file is refused rather than half-matching what was applied.

use sha2::{Digest as _, Sha256};

/// One step: upgrades the schema from `version - 1` to `version`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: usize,
    /// The file name without `.sql`: `0001_initial`.
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the file's bytes.
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every file in the directories is embedded, in order, under its name.
    #[test]
    fn every_file_is_embedded_in_name_order() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for (engine, embedded) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let mut names: Vec<String> = std::fs::read_dir(root.join(engine))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let got: Vec<String> = embedded.iter().map(|m| format!("{}.sql", m.name)).collect();
            assert_eq!(got, names, "{engine}");
            for (i, m) in embedded.iter().enumerate() {
                assert_eq!(m.version, i + 1);
                let on_disk = std::fs::read_to_string(root.join(engine).join(&got[i])).unwrap();
                assert_eq!(m.sql, on_disk);
            }
        }
    }
}
