//! The multipart forms of `POST /v1/attest` and of the media upload: the first line of the input
//! is the `Content-Type` header, the rest the body. Any input is read or refused with a typed
//! error within the limits.
#![no_main]

use bytes::Bytes;
use idyntra_edge::{Capture, CaptureLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&byte| byte == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    let content_type = std::str::from_utf8(header).ok();
    let limits = CaptureLimits {
        max_body_bytes: 64 * 1024,
        max_image_bytes: 16 * 1024,
        max_selfie_parts: 4,
        max_json_bytes: 4 * 1024,
    };
    let body = Bytes::copy_from_slice(body);
    if let Ok(capture) = Capture::parse(content_type, body.clone(), &limits) {
        assert!(capture.selfies.len() <= limits.max_selfie_parts);
        assert!(
            capture
                .selfies
                .iter()
                .all(|part| part.len() <= limits.max_image_bytes)
        );
    }
    let _ = Capture::parse_upload(content_type, body, &limits);
});
