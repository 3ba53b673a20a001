//! `POST /v1/sessions/{id}/media`: the browser's upload of a capture the edge attested.
//!
//! Nothing is stored unless everything holds: the client token is valid and names this session,
//! the session waits for its capture, a trusted edge signed the attestation for this session and
//! its nonce, the attestation was never used before, and every uploaded image is byte for byte the
//! one the attestation names (and every image it names is uploaded). The images are then sealed
//! with a fresh data key and stored with the attestation in one transaction.

use bytes::Bytes;
use idyntra_edge::{AttestationError, Capture, CaptureError, CaptureLimits, TokenError};
use idyntra_types::{
    ATTESTATION_AUDIENCE, AttestationClaims, ClientTokenClaims, ImageRole, Problem, SessionStatus,
};
use sha2::{Digest, Sha256};
use sqlx::types::Json;

use crate::app::AppState;
use crate::clock;
use crate::store::{
    AttestationRecord, AuditEvent, MediaRecord, SessionKeyRecord, StoreError, Submission,
    Transition,
};

/// Why an upload was refused: a problem document to answer, nothing stored.
#[derive(Debug)]
pub enum UploadError {
    Refused(Box<Problem>),
    Internal(anyhow::Error),
}

impl From<StoreError> for UploadError {
    fn from(error: StoreError) -> Self {
        Self::Internal(error.into())
    }
}

fn internal(error: impl Into<anyhow::Error>) -> UploadError {
    UploadError::Internal(error.into())
}

fn refuse(status: u16, code: &str, title: &str, detail: impl Into<String>) -> UploadError {
    UploadError::Refused(Box::new(
        Problem::new(status, code, title).with_detail(detail.into()),
    ))
}

fn token_refusal(error: TokenError) -> UploadError {
    refuse(
        error.status(),
        error.code(),
        "Unauthorized",
        error.to_string(),
    )
}

fn capture_refusal(error: &CaptureError) -> UploadError {
    refuse(
        error.status(),
        error.code(),
        "Invalid upload",
        error.to_string(),
    )
}

/// The problem code of an attestation refusal; the ones a client most often meets have the
/// general names (`attestation_invalid`, `media_mismatch`).
fn attestation_refusal(error: AttestationError) -> UploadError {
    let code = match error {
        AttestationError::Malformed | AttestationError::BadSignature => "attestation_invalid",
        AttestationError::ImageMismatch => "media_mismatch",
        other => other.code(),
    };
    refuse(422, code, "Attestation refused", error.to_string())
}

/// The role and index of the `i`-th `selfie` part.
fn selfie_part(i: usize) -> (ImageRole, u32) {
    if i == 0 {
        (ImageRole::Selfie, 0)
    } else {
        (ImageRole::Frame, u32::try_from(i).unwrap_or(u32::MAX))
    }
}

pub fn role_name(role: ImageRole) -> &'static str {
    match role {
        ImageRole::Selfie => "selfie",
        ImageRole::Frame => "frame",
        ImageRole::Document => "document",
    }
}

/// What a sealed image is bound to: its session, role and position.
pub fn media_context(session_id: &str, role: &str, index: i32) -> String {
    format!("{session_id}/{role}/{index}")
}

/// The uploaded images with their roles, matched one to one against the attested ones.
fn match_images(
    claims: &AttestationClaims,
    capture: &Capture,
) -> Result<Vec<(ImageRole, u32, String, Bytes)>, UploadError> {
    let mut uploaded: Vec<(ImageRole, u32, Bytes)> = capture
        .selfies
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let (role, index) = selfie_part(i);
            (role, index, bytes.clone())
        })
        .collect();
    if let Some(document) = &capture.document {
        uploaded.push((ImageRole::Document, 0, document.clone()));
    }
    let mut matched = Vec::with_capacity(uploaded.len());
    for (role, index, bytes) in uploaded {
        let digest = hex::encode(Sha256::digest(&bytes));
        let attested = claims
            .images
            .iter()
            .find(|image| image.role == role && image.index == index);
        match attested {
            Some(image) if image.sha256 == digest => matched.push((role, index, digest, bytes)),
            Some(_) => {
                return Err(refuse(
                    422,
                    "media_mismatch",
                    "Attestation refused",
                    format!(
                        "the {} #{index} is not the image the attestation names",
                        role_name(role)
                    ),
                ));
            }
            None => {
                return Err(refuse(
                    422,
                    "media_mismatch",
                    "Attestation refused",
                    format!(
                        "the attestation names no {} #{index}: upload exactly the images sent to the edge",
                        role_name(role)
                    ),
                ));
            }
        }
    }
    if let Some(missing) = claims.images.iter().find(|image| {
        !matched
            .iter()
            .any(|(role, index, _, _)| *role == image.role && *index == image.index)
    }) {
        return Err(refuse(
            422,
            "media_missing",
            "Attestation refused",
            format!(
                "the attestation names a {} #{} that was not uploaded",
                role_name(missing.role),
                missing.index
            ),
        ));
    }
    Ok(matched)
}

/// Remembers `jti` in Redis until the attestation expires; `false` when it was already there.
/// Without Redis (or while it is down) the database's unique `jti` is the guard.
async fn first_use(app: &AppState, jti: &str, expires_at_secs: i64) -> bool {
    let Some(redis) = &app.redis else {
        return true;
    };
    let Ok(mut connection) = redis.connection().await else {
        return true;
    };
    let ttl_ms = (expires_at_secs - clock::to_secs(clock::now_ms()) + 60).max(1) * 1000;
    let mut command = redis::cmd("SET");
    command
        .arg(redis.key(&format!("jti:{jti}")))
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms);
    let set = command.query_async::<Option<String>>(&mut connection);
    match tokio::time::timeout(redis.timeout(), set).await {
        Ok(Ok(stored)) => stored.is_some(),
        _ => {
            redis.mark_down();
            true
        }
    }
}

async fn forget_use(app: &AppState, jti: &str) {
    if let Some(redis) = &app.redis
        && let Ok(mut connection) = redis.connection().await
    {
        let mut command = redis::cmd("DEL");
        command.arg(redis.key(&format!("jti:{jti}")));
        let delete = command.query_async::<i64>(&mut connection);
        let _ = tokio::time::timeout(redis.timeout(), delete).await;
    }
}

/// Verifies and stores an upload for session `id`; returns the client token's claims.
pub async fn upload(
    app: &AppState,
    id: &str,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
    request_id: Option<String>,
) -> Result<ClientTokenClaims, UploadError> {
    let token = idyntra_edge::token::bearer(authorization).map_err(token_refusal)?;
    let claims = app
        .client_tokens
        .verify(token, ATTESTATION_AUDIENCE)
        .map_err(token_refusal)?;
    if claims.sid != id {
        return Err(refuse(
            403,
            "client_token_wrong_session",
            "Forbidden",
            "the client token is for another session",
        ));
    }
    let limits = CaptureLimits {
        max_body_bytes: app.config.media.max_body_bytes,
        max_selfie_parts: app.config.media.max_frames,
        ..CaptureLimits::default()
    };
    let capture =
        Capture::parse_upload(content_type, body, &limits).map_err(|e| capture_refusal(&e))?;
    let session = app
        .store
        .get_session(&claims.acct, id)
        .await?
        .ok_or_else(|| refuse(404, "not_found", "Not found", format!("no session {id}")))?;
    let now = clock::now_ms();
    let attestation = std::str::from_utf8(capture.attestation.as_deref().unwrap_or_default())
        .map_err(|_| attestation_refusal(AttestationError::Malformed))?
        .trim()
        .to_owned();
    let attested = app
        .edge_trust
        .verify(&attestation, id, &session.nonce, clock::to_secs(now))
        .await
        .map_err(attestation_refusal)?;
    // An attestation is bound to its session, so a replay can only target the session that
    // already holds it.
    if let Some(stored) = app.store.session_attestation(id).await?
        && stored.jti == attested.jti
    {
        return Err(replayed());
    }
    let status = session.status_at(now);
    if status != SessionStatus::Created {
        return Err(not_waiting(status));
    }
    if claims.require_document && capture.document.is_none() {
        return Err(refuse(
            422,
            "document_missing",
            "Invalid upload",
            "this session requires a `document` part",
        ));
    }
    let images = match_images(&attested, &capture)?;

    let (data_key, master_kid, wrapped_key) = app.vault.new_data_key(id).map_err(internal)?;
    let purge_at = now.saturating_add(clock::ms(app.config.media.retention));
    let media = images
        .into_iter()
        .map(|(role, index, sha256, bytes)| {
            let role = role_name(role);
            let idx = i32::try_from(index).unwrap_or(i32::MAX);
            Ok(MediaRecord {
                session_id: id.to_owned(),
                role: role.to_owned(),
                idx,
                sha256,
                sealed: data_key
                    .seal(&media_context(id, role, idx), &bytes)
                    .map_err(internal)?,
                created_at: now,
                purge_at: Some(purge_at),
            })
        })
        .collect::<Result<Vec<_>, UploadError>>()?;
    let submission = Submission {
        account_id: claims.acct.clone(),
        session_id: id.to_owned(),
        now,
        key: SessionKeyRecord {
            session_id: id.to_owned(),
            master_kid,
            wrapped_key,
            created_at: now,
        },
        attestation: AttestationRecord {
            jti: attested.jti.clone(),
            session_id: id.to_owned(),
            issuer: attested.iss.clone(),
            claims: Json(serde_json::to_value(&attested).map_err(internal)?),
            expires_at: attested.exp.saturating_mul(1000),
            received_at: now,
        },
        media,
    };
    let audit = AuditEvent {
        at: now,
        actor: format!("client_token:{}", claims.jti),
        action: "session.submitted".to_owned(),
        target: id.to_owned(),
        request_id,
        details: serde_json::json!({
            "edge": attested.iss,
            "attestation": attested.jti,
            "images": submission.media.len(),
        }),
    };
    let mut submitted = session.clone();
    submitted.status = SessionStatus::Submitted.as_str().to_owned();
    submitted.updated_at = now;
    let event = crate::events::job("session.submitted", &submitted, now);
    // Claimed last, once nothing but the store can fail: an upload refused before this point
    // leaves the attestation usable for a retry.
    if !first_use(app, &attested.jti, attested.exp).await {
        return Err(replayed());
    }
    let stored = app.store.submit(submission, &audit, &[event]).await;
    if !matches!(stored, Ok(Transition::Done(_))) {
        // Nothing was stored: the same attestation may be tried again.
        forget_use(app, &attested.jti).await;
    }
    match stored {
        Ok(Transition::Done(_)) => Ok(claims),
        Ok(Transition::Refused(current)) => Err(not_waiting(current.status_at(now))),
        Ok(Transition::NotFound) => Err(refuse(
            404,
            "not_found",
            "Not found",
            format!("no session {id}"),
        )),
        Err(StoreError::Conflict(_)) => Err(replayed()),
        Err(error) => Err(error.into()),
    }
}

fn replayed() -> UploadError {
    refuse(
        409,
        "attestation_replayed",
        "Attestation refused",
        "this attestation was already used; capture again for a new one",
    )
}

fn not_waiting(status: SessionStatus) -> UploadError {
    refuse(
        409,
        "session_not_awaiting_media",
        "Conflict",
        format!("the session is {} and takes no capture", status.as_str()),
    )
}
