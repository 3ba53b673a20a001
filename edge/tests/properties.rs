//! Properties of the edge core on generated input: whatever a client sends, the capture reader,
//! the token check and the frame reader answer with a refusal of the right kind, never a panic;
//! and a token changed in any byte is refused.
#![cfg(not(target_arch = "wasm32"))] // proptest runs natively.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use base64::Engine;
use idyntra_edge::capture::form;
use idyntra_edge::guidance::rgb_from_rgba;
use idyntra_edge::{Capture, CaptureLimits, ClientTokenVerifier, EdKey, KeySet, jwt};
use idyntra_types::{CLIENT_TOKEN_SCOPE, ClientTokenClaims, LivenessMode};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;

fn backend_key() -> EdKey {
    EdKey::parse(
        "backend-1",
        &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
    )
    .unwrap()
}

fn verifier() -> ClientTokenVerifier {
    ClientTokenVerifier::new(
        KeySet::new([backend_key().public()]).unwrap(),
        "idyntra",
        "idyntra-edge",
    )
}

fn valid_token() -> String {
    jwt::sign(
        &ClientTokenClaims {
            iss: "idyntra".to_owned(),
            aud: vec!["idyntra-edge".to_owned()],
            sub: "ses_1".to_owned(),
            sid: "ses_1".to_owned(),
            acct: "acct_1".to_owned(),
            nonce: "n".to_owned(),
            scope: CLIENT_TOKEN_SCOPE.to_owned(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 900,
            jti: "ctk_1".to_owned(),
            liveness: LivenessMode::Active,
            require_document: true,
        },
        &backend_key(),
    )
    .unwrap()
}

fn limits() -> CaptureLimits {
    CaptureLimits {
        max_body_bytes: 4096,
        max_image_bytes: 512,
        max_selfie_parts: 4,
        max_json_bytes: 128,
    }
}

proptest! {
    // Failures are reported with their minimal input; nothing is written beside the tests.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_body_is_read_or_refused_as_a_client_error(
        body in proptest::collection::vec(any::<u8>(), 0..6000),
        multipart in any::<bool>(),
    ) {
        let content_type = if multipart { form::content_type() } else { "text/plain".to_owned() };
        match Capture::parse(Some(&content_type), body.into(), &limits()) {
            Ok(capture) => prop_assert!(!capture.selfies.is_empty()),
            Err(error) => prop_assert!([400, 413, 415].contains(&error.status()), "{error}"),
        }
    }

    #[test]
    fn well_formed_parts_are_counted_or_refused_by_their_limit(
        parts in proptest::collection::vec(
            (prop_oneof![Just("selfie"), Just("document"), Just("timeline"), Just("signals"), Just("other")],
             proptest::collection::vec(any::<u8>(), 0..700)),
            0..7,
        ),
    ) {
        let body = form::body(parts.iter().map(|(name, bytes)| (*name, bytes.as_slice())));
        let selfies = parts.iter().filter(|(name, _)| *name == "selfie").count();
        match Capture::parse(Some(&form::content_type()), body.into(), &limits()) {
            Ok(capture) => {
                prop_assert_eq!(capture.selfies.len(), selfies);
                prop_assert!(parts.iter().all(|(name, _)| *name != "other"));
            }
            Err(error) => prop_assert!([400, 413].contains(&error.status()), "{error}"),
        }
    }

    #[test]
    fn any_string_is_refused_as_a_token(token in ".{0,400}") {
        prop_assert!(verifier().verify(&token, NOW).is_err());
    }

    #[test]
    fn a_token_changed_in_any_byte_is_refused(index in 0usize..10_000, byte in any::<u8>()) {
        let token = valid_token();
        let mut bytes = token.clone().into_bytes();
        let index = index % bytes.len();
        prop_assume!(bytes[index] != byte);
        bytes[index] = byte;
        let changed = String::from_utf8_lossy(&bytes).into_owned();
        // Base64 may decode two spellings of the last character to the same bytes; anything else
        // must fail.
        let same_meaning = index == token.len() - 1;
        prop_assert!(verifier().verify(&changed, NOW).is_err() || same_meaning);
    }

    #[test]
    fn any_frame_shape_is_read_or_refused(
        (width, height) in prop_oneof![
            (0u32..300, 0u32..300),
            (4000u32..4200, 0u32..16),
            (0u32..16, 4000u32..4200),
        ],
        extra in 0usize..3,
    ) {
        let expected = width as usize * height as usize * 4;
        let rgba = vec![7u8; expected + extra];
        let read = rgb_from_rgba(&rgba, width, height);
        prop_assert_eq!(read.is_ok(), extra == 0 && width > 0 && height > 0 && width <= 4096 && height <= 4096);
    }
}
