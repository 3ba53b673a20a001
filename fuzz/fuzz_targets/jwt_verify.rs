//! JWT verification: attestations (backend side) and client tokens (edge side). The input is
//! tried as a whole token, and as the claims of a token correctly signed by a known key, so the
//! claim checks after the signature are reached too. Nothing is accepted that is not signed by
//! the key, and nothing panics.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idyntra_edge::{AttestationVerifier, ClientTokenVerifier, EdKey, KeySet};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let key =
        EdKey::parse("fuzz-1", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").expect("a key");
    let keys = || KeySet::new([key.public()]).expect("a key set");
    let attestations = AttestationVerifier::new(keys(), &["idyntra-edge".to_owned()]);
    let tokens = ClientTokenVerifier::new(keys(), "idyntra-backend", "idyntra-edge");

    let text = String::from_utf8_lossy(data);
    // Unsigned input never verifies.
    assert!(attestations.verify(&text, "ses_1", "nonce", NOW).is_err());
    assert!(tokens.verify(&text, NOW).is_err());

    // The input as the claims of a token signed by the known key.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz-1"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
    let signature = URL_SAFE_NO_PAD.encode(key.sign(signed.as_bytes()));
    let token = format!("{signed}.{signature}");
    let _ = attestations.verify(&token, "ses_1", "nonce", NOW);
    let _ = tokens.verify(&token, NOW);
});
