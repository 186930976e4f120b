//! Thumbnails, made on the server so that what a browser renders inline is
//! always an image we encoded ourselves: re-encoding keeps the pixels and
//! drops everything else (EXIF with its GPS position, comments, and any
//! polyglot payload riding in a chunk).

use std::io::{BufRead, Cursor, Seek};

use image::{ImageFormat, ImageReader, Limits};

use super::sniff::Kind;
use super::upload::Refusal;

/// The longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 320;
/// The longest side an uploaded image may have: a phone photo is ~8000.
pub const MAX_SIDE: u32 = 12_000;
/// Decoded pixels at most (a 12000x12000 RGBA image would be 576 MB).
pub const MAX_PIXELS: u64 = 50_000_000;
/// What the decoder may allocate in all.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

fn format(kind: Kind) -> Option<ImageFormat> {
    match kind {
        Kind::Png => Some(ImageFormat::Png),
        Kind::Jpeg => Some(ImageFormat::Jpeg),
        Kind::Gif => Some(ImageFormat::Gif),
        Kind::Webp => Some(ImageFormat::WebP),
        Kind::Pdf | Kind::Zip => None,
    }
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_ALLOC);
    l
}

/// A thumbnail of `bytes` (a whole image file of `kind`) as PNG, or why
/// not. The dimensions come from the header first, so a small file that
/// claims to be 100000x100000 pixels is refused before anything is decoded.
pub fn thumbnail<R: BufRead + Seek>(kind: Kind, mut src: R) -> Result<Vec<u8>, Refusal> {
    let Some(fmt) = format(kind) else {
        return Err(Refusal::BadType);
    };
    let mut header = ImageReader::with_format(&mut src, fmt);
    header.limits(limits());
    let (width, height) = header
        .into_dimensions()
        .map_err(|e| Refusal::BadImage(e.to_string()))?;
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(Refusal::ImageTooBig {
            width,
            height,
            max: MAX_SIDE,
        });
    }
    src.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Refusal::BadImage(e.to_string()))?;
    let mut reader = ImageReader::with_format(src, fmt);
    reader.limits(limits());
    let img = reader
        .decode()
        .map_err(|e| Refusal::BadImage(e.to_string()))?;
    let thumb = img.thumbnail(THUMB_SIDE, THUMB_SIDE);
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Refusal::BadImage(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;

    fn jpeg_with_exif(secret: &[u8]) -> Vec<u8> {
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut jpg = Cursor::new(Vec::new());
        img.write_to(&mut jpg, ImageFormat::Jpeg).unwrap();
        let jpg = jpg.into_inner();
        // An APP1 Exif segment right after SOI, as cameras write it.
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(secret);
        let len = u16::try_from(payload.len() + 2).unwrap();
        let mut out = jpg[..2].to_vec();
        out.extend_from_slice(&[0xff, 0xe1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpg[2..]);
        out
    }

    #[test]
    fn exif_does_not_survive_the_thumbnail() {
        let secret = b"GPS 52.5200N 13.4050E secret-spot";
        let src = jpeg_with_exif(secret);
        assert!(src.windows(secret.len()).any(|w| w == secret));
        let thumb = thumbnail(Kind::Jpeg, Cursor::new(&src)).unwrap();
        assert!(thumb.starts_with(b"\x89PNG"));
        assert!(!thumb.windows(4).any(|w| w == b"Exif"));
        assert!(!thumb.windows(secret.len()).any(|w| w == secret));
        let t = image::load_from_memory(&thumb).unwrap();
        assert_eq!((t.width(), t.height()), (320, 240));
    }

    #[test]
    fn huge_dimensions_are_refused_from_the_header() {
        // A valid 1x1 PNG whose IHDR is rewritten to claim 100000x100000.
        let mut png = Cursor::new(Vec::new());
        image::RgbImage::new(1, 1)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let bomb =
            super::super::tests_support::png_with_dimensions(&png.into_inner(), 100_000, 100_000);
        let e = thumbnail(Kind::Png, Cursor::new(&bomb)).unwrap_err();
        assert!(
            matches!(e, Refusal::ImageTooBig { .. } | Refusal::BadImage(_)),
            "{e:?}"
        );
    }
}
