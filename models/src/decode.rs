//! Decoding uploaded photos safely: a byte cap, only JPEG, PNG and WebP recognised by their content
//! (never by a name or a declared type), a pixel cap checked from the header before any pixel is
//! decoded (decompression bombs), and the EXIF orientation applied so the face is upright, then
//! dropped with the rest of the metadata.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

/// What an upload may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded size.
    pub max_bytes: usize,
    /// Largest width × height.
    pub max_pixels: u64,
    /// Largest width or height.
    pub max_side: u32,
}

impl Default for DecodeLimits {
    /// A phone photo fits (12–50 MP cameras save at most about 8000 × 6000).
    fn default() -> Self {
        Self {
            max_bytes: 15 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_side: 10_000,
        }
    }
}

/// Why a photo was refused. [`DecodeError::code`] is the stable code clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the image is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error("only JPEG, PNG and WebP images are accepted")]
    UnsupportedFormat,
    #[error("the image is {width}×{height} pixels, more than accepted")]
    TooManyPixels { width: u32, height: u32 },
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "image_too_large",
            Self::UnsupportedFormat => "unsupported_image_format",
            Self::TooManyPixels { .. } => "image_too_many_pixels",
            Self::Corrupt(_) => "image_corrupt",
        }
    }
}

/// A decoded, upright photo.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    pub image: RgbImage,
    /// `jpeg`, `png` or `webp`.
    pub format: &'static str,
}

/// Decodes `bytes` within `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            bytes: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => "jpeg",
        Ok(ImageFormat::Png) => "png",
        Ok(ImageFormat::WebP) => "webp",
        _ => return Err(DecodeError::UnsupportedFormat),
    };
    let corrupt = |error: image::ImageError| DecodeError::Corrupt(error.to_string());
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|error| DecodeError::Corrupt(error.to_string()))?;
    // The decoder's own limits also bound what it allocates beyond the pixels (e.g. metadata).
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(4).saturating_add(1 << 20));
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(|error| match error {
        image::ImageError::Limits(_) => DecodeError::TooManyPixels {
            width: 0,
            height: 0,
        },
        other => corrupt(other),
    })?;
    let (width, height) = decoder.dimensions();
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(DecodeError::TooManyPixels { width, height });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt("the image has no pixels".to_owned()));
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(DecodedImage {
        image: image.into_rgb8(),
        format,
    })
}

#[cfg(test)]
mod tests {
    use image::codecs::jpeg::JpegEncoder;
    use image::{ImageEncoder, Rgb};

    use super::*;

    /// A `width`×`height` picture whose top-left 8×8 corner is red and the rest blue.
    fn picture(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            if x < 8 && y < 8 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        })
    }

    fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    fn jpeg(image: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 100)
            .write_image(
                image,
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        bytes
    }

    /// Inserts an EXIF segment with `orientation` right after the JPEG's start marker.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
        exif.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // one value
        exif.extend_from_slice(&orientation.to_be_bytes());
        exif.extend_from_slice(&[0, 0]);
        exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap().to_be_bytes());
        out.extend_from_slice(&exif);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn decodes_the_three_formats_by_content() {
        let image = picture(6, 4);
        for (format, name) in [
            (ImageFormat::Png, "png"),
            (ImageFormat::WebP, "webp"),
            (ImageFormat::Jpeg, "jpeg"),
        ] {
            let decoded = decode(&encode(&image, format), &DecodeLimits::default()).unwrap();
            assert_eq!(decoded.format, name);
            assert_eq!(decoded.image.dimensions(), (6, 4));
        }
    }

    #[test]
    fn refuses_other_formats_and_garbage() {
        let image = picture(4, 4);
        for format in [ImageFormat::Bmp, ImageFormat::Gif, ImageFormat::Tiff] {
            let mut bytes = Cursor::new(Vec::new());
            if DynamicImage::ImageRgb8(image.clone())
                .write_to(&mut bytes, format)
                .is_ok()
            {
                let error = decode(bytes.get_ref(), &DecodeLimits::default()).unwrap_err();
                assert_eq!(error, DecodeError::UnsupportedFormat, "{format:?}");
            }
        }
        let svg = decode(
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            &DecodeLimits::default(),
        );
        assert_eq!(svg.unwrap_err(), DecodeError::UnsupportedFormat);
        let truncated = jpeg(&picture(64, 64));
        let error = decode(&truncated[..truncated.len() / 2], &DecodeLimits::default());
        assert!(matches!(error, Err(DecodeError::Corrupt(_))), "{error:?}");
    }

    #[test]
    fn enforces_byte_and_pixel_caps_before_decoding() {
        let bytes = encode(&picture(100, 100), ImageFormat::Png);
        let small = DecodeLimits {
            max_bytes: 10,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode(&bytes, &small).unwrap_err().code(),
            "image_too_large"
        );
        let few_pixels = DecodeLimits {
            max_pixels: 99 * 100,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode(&bytes, &few_pixels).unwrap_err(),
            DecodeError::TooManyPixels {
                width: 100,
                height: 100
            }
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A 1×1 PNG whose header claims 60000×60000 pixels (with a valid checksum): refused
        // without allocating 10 GB.
        let mut bytes = encode(&picture(1, 1), ImageFormat::Png);
        bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        let error = decode(&bytes, &DecodeLimits::default()).unwrap_err();
        assert_eq!(error.code(), "image_too_many_pixels", "{error}");
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Orientation 6: the camera was turned, the picture must be rotated 90° clockwise.
        let bytes = with_orientation(&jpeg(&picture(40, 20)), 6);
        let decoded = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.image.dimensions(), (20, 40));
        // The red corner moved from top-left to top-right.
        let top_right = decoded.image.get_pixel(17, 2);
        assert!(top_right[0] > 200 && top_right[2] < 60, "{top_right:?}");
        let plain = decode(&jpeg(&picture(40, 20)), &DecodeLimits::default()).unwrap();
        assert_eq!(plain.image.dimensions(), (40, 20));
    }

    #[test]
    fn decodes_a_real_photo() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/faces/img1.jpg"
        );
        let bytes = std::fs::read(path).expect("the shared face fixtures are beside the checkout");
        let decoded = decode(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded.format, "jpeg");
        assert_eq!(decoded.image.dimensions(), (1382, 1868));
    }
}
