//! Thumbnails, made on the server so that what a browser renders inline is
//! always an image we encoded ourselves: re-encoding keeps the pixels and
//! drops everything else (EXIF with its GPS position, comments, and any
//! polyglot payload riding in a chunk).

use std::io::{BufRead, Cursor, Seek};

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder as _, ImageFormat, ImageReader, Limits};

use super::sniff::Kind;
use super::upload::Refusal;

/// The longest side of a thumbnail, in pixels.
pub const THUMB_SIDE: u32 = 320;
/// The longest side of the full-size view: sharp on most screens, and a
/// tenth of the pixels of a 48-megapixel phone photo.
pub const VIEW_SIDE: u32 = 2048;
/// The JPEG quality of a photo's view: no visible loss at that size.
const VIEW_JPEG_QUALITY: u8 = 85;
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

/// The pixels of `src` (a whole image file of `kind`), turned upright by
/// its EXIF orientation, or why not. The dimensions come from the header
/// first, so a small file that claims to be 100000x100000 pixels is refused
/// before anything is decoded.
fn decode<R: BufRead + Seek>(kind: Kind, mut src: R) -> Result<DynamicImage, Refusal> {
    let Some(fmt) = format(kind) else {
        return Err(Refusal::BadType);
    };
    let bad = |e: image::ImageError| Refusal::BadImage(e.to_string());
    let mut header = ImageReader::with_format(&mut src, fmt);
    header.limits(limits());
    let (width, height) = header.into_dimensions().map_err(bad)?;
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
    let mut decoder = reader.into_decoder().map_err(bad)?;
    // What `ImageReader::decode` does: the whole buffer counts against
    // the allocation limit, so 16-bit colour cannot double past it.
    let mut l = limits();
    l.reserve(decoder.total_bytes()).map_err(bad)?;
    decoder.set_limits(l).map_err(bad)?;
    // The orientation lives in the EXIF that re-encoding drops: applied
    // to the pixels, a phone's portrait photo stays upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// A thumbnail of `src` (a whole image file of `kind`) as PNG, or why not.
pub fn thumbnail<R: BufRead + Seek>(kind: Kind, src: R) -> Result<Vec<u8>, Refusal> {
    let thumb = decode(kind, src)?.thumbnail(THUMB_SIDE, THUMB_SIDE);
    let mut out = Cursor::new(Vec::new());
    thumb
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| Refusal::BadImage(e.to_string()))?;
    Ok(out.into_inner())
}

/// The type of the full-size view of an image of type `mime`: a JPEG
/// stays a JPEG (a photo as PNG would be several times larger), anything
/// else becomes a PNG (screenshots keep sharp edges, and alpha survives).
pub fn view_mime(mime: &str) -> &'static str {
    if mime == Kind::Jpeg.mime() {
        "image/jpeg"
    } else {
        "image/png"
    }
}

/// The full-size view of `src` (a whole image file of `kind`): at most
/// [`VIEW_SIDE`] pixels on its long side, re-encoded as [`view_mime`]
/// says, so what a browser opens inline is our own encoding of the pixels
/// and nothing else of the file (no EXIF, no payload in a chunk). Only
/// the first frame of an animation.
pub fn view<R: BufRead + Seek>(kind: Kind, src: R) -> Result<Vec<u8>, Refusal> {
    let mut img = decode(kind, src)?;
    if img.width() > VIEW_SIDE || img.height() > VIEW_SIDE {
        img = img.resize(VIEW_SIDE, VIEW_SIDE, FilterType::Triangle);
    }
    let mut out = Cursor::new(Vec::new());
    let encoded = if view_mime(kind.mime()) == "image/jpeg" {
        let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
        rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, VIEW_JPEG_QUALITY))
    } else {
        img.write_to(&mut out, ImageFormat::Png)
    };
    encoded.map_err(|e| Refusal::BadImage(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;

    /// `img` as a JPEG with `exif` in an APP1 Exif segment.
    fn jpeg_with_exif(img: &image::RgbImage, exif: &[u8]) -> Vec<u8> {
        let mut jpg = Cursor::new(Vec::new());
        img.write_to(&mut jpg, ImageFormat::Jpeg).unwrap();
        let jpg = jpg.into_inner();
        // An APP1 Exif segment right after SOI, as cameras write it.
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(exif);
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
        let img = image::RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let src = jpeg_with_exif(&img, secret);
        assert!(src.windows(secret.len()).any(|w| w == secret));
        let thumb = thumbnail(Kind::Jpeg, Cursor::new(&src)).unwrap();
        assert!(thumb.starts_with(b"\x89PNG"));
        assert!(!thumb.windows(4).any(|w| w == b"Exif"));
        assert!(!thumb.windows(secret.len()).any(|w| w == secret));
        let t = image::load_from_memory(&thumb).unwrap();
        assert_eq!((t.width(), t.height()), (320, 240));
    }

    /// For the thumbnail and the view alike: both decode through `decode`.
    #[test]
    fn huge_dimensions_are_refused_from_the_header() {
        // A valid 1x1 PNG whose IHDR is rewritten to claim 100000x100000.
        let mut png = Cursor::new(Vec::new());
        image::RgbImage::new(1, 1)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let bomb =
            super::super::tests_support::png_with_dimensions(&png.into_inner(), 100_000, 100_000);
        for e in [
            thumbnail(Kind::Png, Cursor::new(&bomb)).unwrap_err(),
            view(Kind::Png, Cursor::new(&bomb)).unwrap_err(),
        ] {
            assert!(
                matches!(e, Refusal::ImageTooBig { .. } | Refusal::BadImage(_)),
                "{e:?}"
            );
        }
    }

    #[test]
    fn the_view_is_bounded_and_keeps_nothing_but_the_pixels() {
        let secret = b"GPS 52.5200N 13.4050E secret-spot";
        // A photo larger than the bound: a JPEG view, 2048 on the long side.
        let img = image::RgbImage::from_fn(2400, 1200, |x, y| {
            image::Rgb([(x % 251) as u8, (y % 241) as u8, 7])
        });
        let src = jpeg_with_exif(&img, secret);
        let v = view(Kind::Jpeg, Cursor::new(&src)).unwrap();
        assert!(v.starts_with(&[0xff, 0xd8]), "a JPEG");
        assert!(!v.windows(secret.len()).any(|w| w == secret));
        assert!(!v.windows(4).any(|w| w == b"Exif"));
        let got = image::load_from_memory(&v).unwrap();
        assert_eq!((got.width(), got.height()), (2048, 1024));

        // A small PNG with a script after its image data: a PNG of the same
        // size, without the script.
        let mut png = Cursor::new(Vec::new());
        image::RgbaImage::from_fn(300, 200, |x, _| image::Rgba([x as u8, 9, 9, 200]))
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let mut sneaky = png.into_inner();
        sneaky.extend_from_slice(b"<script>window.pwned=1</script>");
        let v = view(Kind::Png, Cursor::new(&sneaky)).unwrap();
        assert!(v.starts_with(b"\x89PNG"));
        assert!(!v.windows(7).any(|w| w == b"<script"));
        let got = image::load_from_memory(&v).unwrap();
        assert_eq!((got.width(), got.height()), (300, 200));
        assert!(got.color().has_alpha());
        assert_eq!(view_mime("image/png"), "image/png");
        assert_eq!(view_mime("image/gif"), "image/png");
        assert_eq!(view_mime("image/jpeg"), "image/jpeg");
    }

    #[test]
    fn a_rotated_photo_is_turned_upright() {
        // A landscape JPEG whose EXIF says "rotate 90° clockwise to show"
        // (orientation 6), as a phone held upright writes it.
        let img = image::RgbImage::from_fn(300, 100, |x, _| image::Rgb([x as u8, 0, 0]));
        // A big-endian TIFF header, then one IFD entry: Orientation = 6.
        let mut exif = b"MM\0\x2a\0\0\0\x08".to_vec();
        exif.extend_from_slice(&[0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let src = jpeg_with_exif(&img, &exif);
        let v = image::load_from_memory(&view(Kind::Jpeg, Cursor::new(&src)).unwrap()).unwrap();
        assert_eq!((v.width(), v.height()), (100, 300));
        let t =
            image::load_from_memory(&thumbnail(Kind::Jpeg, Cursor::new(&src)).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (107, 320));
    }
}
