//! The multipart body of `POST /v1/attest`, read within limits before any image is decoded.
//!
//! Parts: `selfie` one or more times (the first is the selfie the face match uses, the following
//! ones frames of the liveness challenge), `document` at most once, `timeline` (JSON: one
//! `{"at_ms", "step"}` per `selfie` part, for active liveness) and `signals` (JSON object: what the
//! browser noticed about its camera, recorded as received). Anything else is refused.
//!
//! The backend's media upload (`POST /v1/sessions/{id}/media`) is the same form with an
//! `attestation` part instead of `timeline` and `signals`: [`Capture::parse_upload`].

use std::collections::BTreeMap;
use std::convert::Infallible;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use idyntra_types::FrameTiming;
use multer::{Constraints, Field, Multipart, SizeLimit};
use serde_json::Value;

/// How much a capture may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// The whole request body.
    pub max_body_bytes: usize,
    /// One image part.
    pub max_image_bytes: usize,
    /// `selfie` parts: the selfie and the challenge frames.
    pub max_selfie_parts: usize,
    /// The `timeline` and `signals` parts.
    pub max_json_bytes: usize,
}

impl Default for CaptureLimits {
    /// A selfie and a document photo from a phone, and about four frames per challenge step of a
    /// 640×480 camera stream.
    fn default() -> Self {
        Self {
            max_body_bytes: 24 * 1024 * 1024,
            max_image_bytes: 8 * 1024 * 1024,
            max_selfie_parts: 40,
            max_json_bytes: 16 * 1024,
        }
    }
}

/// Why a body could not be read. [`CaptureError::code`] is the stable code clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("the body must be multipart/form-data")]
    NotMultipart,
    #[error("the body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    #[error("the `{part}` part is larger than {max} bytes")]
    PartTooLarge { part: String, max: usize },
    #[error("at most {max} `selfie` parts are accepted")]
    TooManyFrames { max: usize },
    #[error("unknown part `{0}`: the parts are {parts}", parts = .1.join(", "))]
    UnknownPart(String, &'static [&'static str]),
    #[error("the `{0}` part may appear once")]
    RepeatedPart(String),
    #[error("at least one `selfie` part is required")]
    MissingSelfie,
    #[error("the `attestation` part is required: the edge's answer to the capture")]
    MissingAttestation,
    #[error("the `timeline` part is invalid: {0}")]
    BadTimeline(String),
    #[error("the `signals` part must be a JSON object of strings, numbers and booleans")]
    BadSignals,
    #[error("the multipart body is malformed: {0}")]
    Malformed(String),
}

impl CaptureError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotMultipart => "unsupported_media_type",
            Self::BodyTooLarge { .. } => "payload_too_large",
            Self::PartTooLarge { .. } => "part_too_large",
            Self::TooManyFrames { .. } => "too_many_frames",
            Self::UnknownPart(..) => "unknown_part",
            Self::RepeatedPart(_) => "repeated_part",
            Self::MissingSelfie => "selfie_missing",
            Self::MissingAttestation => "attestation_missing",
            Self::BadTimeline(_) => "invalid_timeline",
            Self::BadSignals => "invalid_signals",
            Self::Malformed(_) => "malformed_multipart",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::NotMultipart => 415,
            Self::BodyTooLarge { .. } | Self::PartTooLarge { .. } | Self::TooManyFrames { .. } => {
                413
            }
            _ => 400,
        }
    }
}

/// The parts of a capture, still encoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capture {
    /// The selfie, then the challenge frames.
    pub selfies: Vec<Bytes>,
    pub document: Option<Bytes>,
    /// One timing per `selfie` part, when sent.
    pub timeline: Option<Vec<FrameTiming>>,
    pub signals: BTreeMap<String, Value>,
    /// The edge's attestation, in a media upload.
    pub attestation: Option<Bytes>,
}

/// Parts of `POST /v1/attest`.
const ATTEST_PARTS: &[&str] = &["selfie", "document", "timeline", "signals"];
/// Parts of a media upload to the backend.
const UPLOAD_PARTS: &[&str] = &["attestation", "selfie", "document"];

impl Capture {
    /// Reads a multipart body whose `Content-Type` header is `content_type`.
    pub fn parse(
        content_type: Option<&str>,
        body: Bytes,
        limits: &CaptureLimits,
    ) -> Result<Self, CaptureError> {
        Self::parse_parts(content_type, body, limits, ATTEST_PARTS)
    }

    /// Reads a media upload: the `attestation` (required), `selfie` and `document` parts.
    pub fn parse_upload(
        content_type: Option<&str>,
        body: Bytes,
        limits: &CaptureLimits,
    ) -> Result<Self, CaptureError> {
        let capture = Self::parse_parts(content_type, body, limits, UPLOAD_PARTS)?;
        if capture.attestation.is_none() {
            return Err(CaptureError::MissingAttestation);
        }
        Ok(capture)
    }

    fn parse_parts(
        content_type: Option<&str>,
        body: Bytes,
        limits: &CaptureLimits,
        parts: &'static [&'static str],
    ) -> Result<Self, CaptureError> {
        let content_type = content_type.ok_or(CaptureError::NotMultipart)?;
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("multipart/form-data") {
            return Err(CaptureError::NotMultipart);
        }
        if body.len() > limits.max_body_bytes {
            return Err(CaptureError::BodyTooLarge {
                max: limits.max_body_bytes,
            });
        }
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| CaptureError::Malformed(e.to_string()))?;
        let constraints = Constraints::new()
            .allowed_fields(parts.to_vec())
            .size_limit(
                SizeLimit::new()
                    .whole_stream(limits.max_body_bytes as u64)
                    .per_field(limits.max_image_bytes as u64)
                    .for_field("timeline", limits.max_json_bytes as u64)
                    .for_field("signals", limits.max_json_bytes as u64),
            );
        let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(body) });
        let multipart = Multipart::with_constraints(stream, boundary, constraints);
        // The whole body is already in memory, so reading it never waits.
        read(multipart, limits, parts)
            .now_or_never()
            .unwrap_or_else(|| Err(CaptureError::Malformed("incomplete body".to_owned())))
    }
}

async fn read(
    mut multipart: Multipart<'static>,
    limits: &CaptureLimits,
    parts: &'static [&'static str],
) -> Result<Capture, CaptureError> {
    let mut capture = Capture::default();
    let (mut timeline, mut signals) = (None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| refusal(error, parts))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = part_bytes(field)
            .await
            .map_err(|error| refusal(error, parts))?;
        match name.as_str() {
            "selfie" => {
                if capture.selfies.len() == limits.max_selfie_parts {
                    return Err(CaptureError::TooManyFrames {
                        max: limits.max_selfie_parts,
                    });
                }
                capture.selfies.push(bytes);
            }
            "document" => once(&mut capture.document, bytes, &name)?,
            "timeline" => once(&mut timeline, bytes, &name)?,
            "signals" => once(&mut signals, bytes, &name)?,
            "attestation" => once(&mut capture.attestation, bytes, &name)?,
            _ => return Err(CaptureError::UnknownPart(name, parts)),
        }
    }
    if capture.selfies.is_empty() {
        return Err(CaptureError::MissingSelfie);
    }
    if let Some(bytes) = timeline {
        let frames: Vec<FrameTiming> =
            serde_json::from_slice(&bytes).map_err(|e| CaptureError::BadTimeline(e.to_string()))?;
        if frames.len() != capture.selfies.len() {
            return Err(CaptureError::BadTimeline(format!(
                "{} timings for {} selfie parts",
                frames.len(),
                capture.selfies.len()
            )));
        }
        capture.timeline = Some(frames);
    }
    if let Some(bytes) = signals {
        let object: BTreeMap<String, Value> =
            serde_json::from_slice(&bytes).map_err(|_| CaptureError::BadSignals)?;
        let scalar = |v: &Value| v.is_string() || v.is_number() || v.is_boolean();
        if !object.values().all(scalar) || object.keys().any(|k| k.len() > 64) {
            return Err(CaptureError::BadSignals);
        }
        capture.signals = object;
    }
    Ok(capture)
}

/// A part's bytes. The body is read whole before parsing, so a part comes as one slice of
/// multer's buffer and is kept as it is: a megabyte image is not copied again. Only a part that
/// arrived in pieces is joined.
async fn part_bytes(mut field: Field<'static>) -> Result<Bytes, multer::Error> {
    let Some(first) = field.chunk().await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = field.chunk().await? else {
        return Ok(first);
    };
    let mut joined = BytesMut::with_capacity(first.len() + second.len());
    joined.extend_from_slice(&first);
    joined.extend_from_slice(&second);
    while let Some(chunk) = field.chunk().await? {
        joined.extend_from_slice(&chunk);
    }
    Ok(joined.freeze())
}

fn once(slot: &mut Option<Bytes>, bytes: Bytes, name: &str) -> Result<(), CaptureError> {
    if slot.replace(bytes).is_some() {
        return Err(CaptureError::RepeatedPart(name.to_owned()));
    }
    Ok(())
}

fn refusal(error: multer::Error, parts: &'static [&'static str]) -> CaptureError {
    match error {
        multer::Error::UnknownField { field_name } => {
            CaptureError::UnknownPart(field_name.unwrap_or_default(), parts)
        }
        multer::Error::StreamSizeExceeded { limit } => CaptureError::BodyTooLarge {
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        multer::Error::FieldSizeExceeded { limit, field_name } => CaptureError::PartTooLarge {
            part: field_name.unwrap_or_default(),
            max: usize::try_from(limit).unwrap_or(usize::MAX),
        },
        other => CaptureError::Malformed(other.to_string()),
    }
}

/// Builds multipart bodies, for tests and the benchmark.
pub mod form {
    /// The boundary [`body`] uses.
    pub const BOUNDARY: &str = "idyntra-capture-boundary";

    /// `Content-Type` of a [`body`].
    pub fn content_type() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    /// A multipart body of `(name, bytes)` parts.
    pub fn body<'a>(parts: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, (name, bytes)) in parts.into_iter().enumerate() {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{name}-{i}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts are slices of the one buffer the body was read into, at their places in the
    /// body: an image is not copied once per part.
    #[test]
    fn parts_of_a_body_read_whole_are_not_copied() {
        let (one, two) = (vec![1u8; 4096], vec![2u8; 4096]);
        let parts = [("selfie", one.as_slice()), ("selfie", two.as_slice())];
        let capture = parse(&parts, &CaptureLimits::default()).unwrap();
        let body = form::body(parts);
        let at = |needle: &[u8]| {
            body.windows(needle.len())
                .position(|w| w == needle)
                .unwrap()
        };
        let apart_in_body = (at(&two) - at(&one)) as isize;
        let apart_in_memory =
            capture.selfies[1].as_ptr() as isize - capture.selfies[0].as_ptr() as isize;
        assert_eq!(apart_in_memory, apart_in_body);
    }

    /// `body` as a network delivers it: 7-byte chunks, each after a wait.
    fn trickle(body: &[u8]) -> Multipart<'static> {
        let mut chunks: std::collections::VecDeque<Bytes> =
            body.chunks(7).map(Bytes::copy_from_slice).collect();
        let mut waited = false;
        let stream = futures_util::stream::poll_fn(move |cx| {
            waited = !waited;
            if waited {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(chunks.pop_front().map(Ok::<_, Infallible>))
        });
        Multipart::new(stream, form::BOUNDARY)
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
    }

    #[test]
    fn a_part_that_arrives_in_pieces_is_joined_whole() {
        let image: Vec<u8> = (0..=255).cycle().take(5000).collect();
        let body = form::body([
            ("selfie", image.as_slice()),
            ("document", b"doc".as_slice()),
        ]);
        // The pieces are really there to join.
        let pieces = block_on(async {
            let mut multipart = trickle(&body);
            let mut field = multipart.next_field().await.unwrap().unwrap();
            let mut pieces = 0;
            while field.chunk().await.unwrap().is_some() {
                pieces += 1;
            }
            pieces
        });
        assert!(pieces > 100, "{pieces} pieces");
        let parts = block_on(async {
            let mut multipart = trickle(&body);
            let mut parts = Vec::new();
            while let Some(field) = multipart.next_field().await.unwrap() {
                parts.push(part_bytes(field).await.unwrap());
            }
            parts
        });
        assert_eq!(parts, [Bytes::from(image), Bytes::from_static(b"doc")]);
    }

    fn parse(parts: &[(&str, &[u8])], limits: &CaptureLimits) -> Result<Capture, CaptureError> {
        let body = form::body(parts.iter().copied());
        Capture::parse(Some(&form::content_type()), body.into(), limits)
    }

    #[test]
    fn reads_selfies_in_order_a_document_a_timeline_and_signals() {
        let capture = parse(
            &[
                ("selfie", b"one"),
                ("document", b"doc"),
                ("selfie", b"two"),
                (
                    "timeline",
                    br#"[{"at_ms":0,"step":0},{"at_ms":120,"step":1}]"#,
                ),
                (
                    "signals",
                    br#"{"virtual_camera":false,"camera":"FaceTime HD"}"#,
                ),
            ],
            &CaptureLimits::default(),
        )
        .unwrap();
        assert_eq!(
            capture.selfies,
            vec![Bytes::from("one"), Bytes::from("two")]
        );
        assert_eq!(capture.document, Some(Bytes::from("doc")));
        assert_eq!(
            capture.timeline.unwrap()[1],
            FrameTiming {
                at_ms: 120,
                step: 1
            }
        );
        assert_eq!(capture.signals["virtual_camera"], Value::Bool(false));
    }

    #[test]
    fn every_refusal_has_its_code_and_status() {
        let limits = CaptureLimits {
            max_body_bytes: 2000,
            max_image_bytes: 100,
            max_selfie_parts: 2,
            max_json_bytes: 50,
        };
        let big = [0u8; 101];
        type Case<'a> = (Vec<(&'a str, &'a [u8])>, &'a str, u16);
        let cases: Vec<Case> = vec![
            (vec![("selfie", &big)], "part_too_large", 413),
            (
                vec![("selfie", b"a"), ("selfie", b"b"), ("selfie", b"c")],
                "too_many_frames",
                413,
            ),
            (vec![("selfie", b"a"), ("photo", b"b")], "unknown_part", 400),
            (
                vec![("selfie", b"a"), ("document", b"b"), ("document", b"c")],
                "repeated_part",
                400,
            ),
            (vec![("document", b"b")], "selfie_missing", 400),
            (
                vec![("selfie", b"a"), ("timeline", b"[]")],
                "invalid_timeline",
                400,
            ),
            (
                vec![("selfie", b"a"), ("timeline", b"{")],
                "invalid_timeline",
                400,
            ),
            (
                vec![("selfie", b"a"), ("signals", br#"{"a":[1]}"#)],
                "invalid_signals",
                400,
            ),
            (
                vec![("selfie", b"a"), ("signals", b"[1]")],
                "invalid_signals",
                400,
            ),
            (
                vec![("selfie", b"a"), ("signals", &[b'x'; 51])],
                "part_too_large",
                413,
            ),
        ];
        for (parts, code, status) in cases {
            let error = parse(&parts, &limits).unwrap_err();
            assert_eq!((error.code(), error.status()), (code, status), "{error}");
        }
        let whole = vec![0u8; 2001];
        let error = Capture::parse(Some(&form::content_type()), whole.into(), &limits);
        assert_eq!(error.unwrap_err().status(), 413);
    }

    #[test]
    fn an_upload_carries_the_attestation_and_no_edge_only_parts() {
        let limits = CaptureLimits::default();
        let upload = |parts: &[(&str, &[u8])]| {
            Capture::parse_upload(
                Some(&form::content_type()),
                form::body(parts.iter().copied()).into(),
                &limits,
            )
        };
        let capture = upload(&[
            ("attestation", b"a.b.c"),
            ("selfie", b"s"),
            ("selfie", b"f"),
            ("document", b"d"),
        ])
        .unwrap();
        assert_eq!(capture.attestation.as_deref(), Some(b"a.b.c".as_slice()));
        assert_eq!(capture.selfies.len(), 2);
        let missing = upload(&[("selfie", b"s")]).unwrap_err();
        assert_eq!(missing.code(), "attestation_missing");
        let edge_only = upload(&[("attestation", b"x"), ("selfie", b"s"), ("timeline", b"[]")]);
        let error = edge_only.unwrap_err();
        assert_eq!(error.code(), "unknown_part");
        assert!(
            error.to_string().contains("attestation, selfie, document"),
            "{error}"
        );
        // The edge itself takes no attestation part.
        let error = parse(&[("selfie", b"s"), ("attestation", b"x")], &limits).unwrap_err();
        assert_eq!(error.code(), "unknown_part");
    }

    #[test]
    fn only_multipart_bodies_with_a_boundary_are_read() {
        let limits = CaptureLimits::default();
        for content_type in [
            None,
            Some("application/json"),
            Some("text/plain; boundary=x"),
        ] {
            let error = Capture::parse(content_type, Bytes::from("{}"), &limits).unwrap_err();
            assert_eq!(error.status(), 415, "{content_type:?}");
        }
        let error = Capture::parse(Some("multipart/form-data"), Bytes::from("x"), &limits);
        assert_eq!(error.unwrap_err().code(), "malformed_multipart");
        let truncated = &form::body([("selfie", b"abc".as_slice())])[..40];
        let error = Capture::parse(
            Some(&form::content_type()),
            Bytes::copy_from_slice(truncated),
            &limits,
        );
        assert_eq!(error.unwrap_err().code(), "malformed_multipart");
    }
}
