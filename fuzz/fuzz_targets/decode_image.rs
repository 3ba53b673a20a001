//! Image decoding of uploaded photos and frames: any bytes give an image within the limits or a
//! typed error, never a panic, an abort or an allocation past the limits.
#![no_main]

use idyntra_models::decode::{DecodeLimits, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast and make the pixel and side checks reachable.
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_pixels: 4_000_000,
        max_side: 4_000,
    };
    if let Ok(image) = decode(data, &limits) {
        let (width, height) = image.image.dimensions();
        assert!(u64::from(width) * u64::from(height) <= limits.max_pixels);
        assert!(width <= limits.max_side && height <= limits.max_side);
    }
});
