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
/// Every kind, in the order they are listed to users.
pub const ALL: [Kind; 6] = [
    Kind::Png,
    Kind::Jpeg,
    Kind::Gif,
    Kind::Webp,
    Kind::Pdf,
    Kind::Zip,
];

impl Kind {
    /// The short name an admin types and a user reads.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Png => "png",
            Kind::Jpeg => "jpeg",
            Kind::Gif => "gif",
            Kind::Webp => "webp",
            Kind::Pdf => "pdf",
            Kind::Zip => "zip",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Kind::Png => 1,
            Kind::Jpeg => 2,
            Kind::Gif => 4,
            Kind::Webp => 8,
            Kind::Pdf => 16,
            Kind::Zip => 32,
        }
    }
}

/// The kinds a site accepts (a site may narrow the server's list, never
/// widen it: nothing but these kinds is ever sniffed as safe).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Kinds(u8);

impl Default for Kinds {
    fn default() -> Self {
        Self::all()
    }
}

impl Kinds {
    pub fn all() -> Self {
        Kinds(ALL.iter().fold(0, |b, k| b | k.bit()))
    }

    pub fn from_bits(b: u8) -> Self {
        Kinds(b & Self::all().0)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn allows(self, k: Kind) -> bool {
        self.0 & k.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        ALL.into_iter().filter(move |k| self.allows(*k))
    }

    /// "png, jpeg, pdf".
    pub fn names(self) -> String {
        self.iter().map(Kind::name).collect::<Vec<_>>().join(", ")
    }

    /// A comma-separated list of names or MIME types ("png, pdf",
    /// "image/*"); an unknown entry or an empty list is an error, so a typo
    /// never silently allows or refuses everything.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut b = 0u8;
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let item = raw.to_ascii_lowercase();
            let found: Vec<Kind> = match item.as_str() {
                "image/*" | "images" => ALL.into_iter().filter(|k| k.is_image()).collect(),
                "jpg" => vec![Kind::Jpeg],
                _ => ALL
                    .into_iter()
                    .filter(|k| k.name() == item || k.mime() == item)
                    .collect(),
            };
            if found.is_empty() {
                return Err(format!(
                    "unknown file type {raw:?}; the types are {} (or image/*)",
                    Kinds::all().names()
                ));
            }
            for k in found {
                b |= k.bit();
            }
        }
        if b == 0 {
            return Err("the list of file types is empty".into());
        }
        Ok(Kinds(b))
    }
}

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
    fn kinds_parse_names_and_types_and_refuse_typos() {
        let k = Kinds::parse(" PNG, application/pdf ,jpg").unwrap();
        assert_eq!(k.names(), "png, jpeg, pdf");
        assert!(k.allows(Kind::Pdf) && !k.allows(Kind::Zip));
        assert_eq!(
            Kinds::parse("image/*").unwrap().names(),
            "png, jpeg, gif, webp"
        );
        assert!(Kinds::parse("png, svg").unwrap_err().contains("\"svg\""));
        assert!(Kinds::parse(" , ").is_err());
        assert_eq!(Kinds::from_bits(0xff), Kinds::all());
    }

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
