//! What a file is, from its first bytes only.
//!
//! The name and the declared type come from the client and prove nothing:
//! an HTML page named `cat.png` would run script if a browser ever sniffed
//! it. So a file is accepted only when its magic bytes say it is one of the
//! few kinds a support chat needs, and it is served with the type found
//! here, never the declared one.

/// The kinds an upload may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Png,
    Jpeg,
    Gif,
    Webp,
    Pdf,
    Zip,
}

impl Kind {
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Gif => "image/gif",
            Kind::Webp => "image/webp",
            Kind::Pdf => "application/pdf",
            Kind::Zip => "application/zip",
        }
    }

    /// Raster images the server decodes for a thumbnail.
    pub fn is_image(self) -> bool {
        matches!(self, Kind::Png | Kind::Jpeg | Kind::Gif | Kind::Webp)
    }

    pub fn from_mime(m: &str) -> Option<Kind> {
        [
            Kind::Png,
            Kind::Jpeg,
            Kind::Gif,
            Kind::Webp,
            Kind::Pdf,
            Kind::Zip,
        ]
        .into_iter()
        .find(|k| k.mime() == m)
    }
}

/// How many leading bytes [`sniff`] needs.
pub const SNIFF_LEN: usize = 16;

/// The kind the leading bytes show, or `None` for anything else (SVG,
/// HTML, scripts, executables, text).
pub fn sniff(head: &[u8]) -> Option<Kind> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Kind::Png)
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(Kind::Jpeg)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(Kind::Gif)
    } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
        Some(Kind::Webp)
    } else if head.starts_with(b"%PDF-") {
        Some(Kind::Pdf)
    } else if head.starts_with(b"PK\x03\x04") {
        Some(Kind::Zip)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_by_magic() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(Kind::Png));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0\0\x10JFIF"), Some(Kind::Jpeg));
        assert_eq!(sniff(b"GIF89a\x01\0"), Some(Kind::Gif));
        assert_eq!(sniff(b"RIFF\x10\0\0\0WEBPVP8 "), Some(Kind::Webp));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(Kind::Pdf));
    }

    #[test]
    fn script_carriers_are_refused() {
        assert_eq!(sniff(b"<svg xmlns="), None);
        assert_eq!(sniff(b"<!DOCTYPE html><script>"), None);
        assert_eq!(sniff(b"\xef\xbb\xbf<html>"), None);
        // RIFF that is not WebP (a WAV) is not an image.
        assert_eq!(sniff(b"RIFF\x10\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b""), None);
    }
}
