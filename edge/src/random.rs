//! Random ids from the operating system, or from the JavaScript crypto API in wasm hosts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub(crate) fn fill(bytes: &mut [u8]) {
    // Without a random source nothing can be signed safely: fail loudly rather than sign with
    // predictable ids or keys.
    if let Err(error) = getrandom::getrandom(bytes) {
        panic!("no random source: {error}");
    }
}

/// `prefix_` followed by 128 random bits, base64url.
pub(crate) fn id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes))
}
