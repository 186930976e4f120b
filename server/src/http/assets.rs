//! Static files embedded at build time from `assets/widget` and
//! `assets/demo`, so the server stays one self-contained binary.

/// (URL path, content type, bytes)
pub type Asset = (&'static str, &'static str, &'static [u8]);

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Strong validators for every embedded file, computed once: browsers then
/// revalidate `/widget.js` on each page load with a cheap 304 instead of
/// downloading it again.
static ETAGS: std::sync::LazyLock<std::collections::HashMap<&'static str, String>> =
    std::sync::LazyLock::new(|| {
        use sha2::Digest as _;
        ASSETS
            .iter()
            .map(|(p, _, bytes)| {
                let digest = sha2::Sha256::digest(bytes);
                (*p, format!("\"{}\"", hex::encode(&digest[..12])))
            })
            .collect()
    });

/// The quoted ETag of an embedded file.
pub fn etag(path: &str) -> Option<&'static str> {
    ETAGS.get(path).map(String::as_str)
}

/// Find an embedded file by URL path.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|(p, _, _)| *p == path)
}
