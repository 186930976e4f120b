//! Static files embedded at build time from `assets/widget` and
//! `assets/demo`, so the server stays one self-contained binary.

/// (URL path, content type, bytes)
pub type Asset = (&'static str, &'static str, &'static [u8]);

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Find an embedded file by URL path.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _, _)| *p == path)
}
