//! Finalize: open the session's sealed images, find and embed the faces of the selfie and the
//! document on the inference pool, decide by the policy, and store the result with its event.
//!
//! One process at a time decides a session: it moves `submitted` → `processing` first, and a
//! session left `processing` by a process that died is taken over once it is stale. Finalizing a
//! decided session returns its stored result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idyntra_types::{AttestationClaims, Decision, ModelUsed, SessionStatus};

use crate::app::AppState;
use crate::clock;
use crate::decision::{self, Policy};
use crate::evidence::face_evidence;
use crate::inference::InferenceError;
use crate::store::{AuditEvent, SessionRecord, Transition};
use crate::submission::media_context;

/// Why a session was not decided.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("no session {0}")]
    NotFound(String),
    /// The session's status does not allow a decision (yet, or any more).
    #[error("a session in status {0} cannot be finalized")]
    NotReady(&'static str),
    #[error("the session's media was purged or redacted")]
    MediaGone,
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::store::StoreError> for FinalizeError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Internal(error.into())
    }
}

/// Who asked (for the audit trail).
#[derive(Debug, Clone)]
pub struct Requester {
    pub actor: String,
    pub request_id: Option<String>,
}

/// Whether `status` is a decision.
pub fn is_decided(status: SessionStatus) -> bool {
    matches!(
        status,
        SessionStatus::Verified | SessionStatus::Rejected | SessionStatus::NeedsReview
    )
}

/// Decides session `session_id` of `account_id`, or returns it as decided earlier.
pub async fn finalize(
    app: &AppState,
    account_id: &str,
    session_id: &str,
    requester: &Requester,
) -> Result<SessionRecord, FinalizeError> {
    let now = clock::now_ms();
    // A `processing` session this old was left by a process that died mid-decision.
    // (The models stop waiting after `inference.timeout`; the rest is a few database writes.)
    let stale_before = now - clock::ms(app.config.inference.timeout * 2 + Duration::from_secs(1));
    let session = match app
        .store
        .start_processing(account_id, session_id, now, stale_before)
        .await?
    {
        Transition::Done(session) => session,
        Transition::Refused(session) => {
            let status = session.status_at(now);
            return if is_decided(status) {
                Ok(session)
            } else {
                Err(FinalizeError::NotReady(status.as_str()))
            };
        }
        Transition::NotFound => return Err(FinalizeError::NotFound(session_id.to_owned())),
    };
    match decide(app, &session, requester).await {
        Ok(decided) => Ok(decided),
        Err(error) => {
            // Back to `submitted`, so the decision can be asked for again.
            if let Err(store_error) = app
                .store
                .abandon_processing(session_id, clock::now_ms())
                .await
            {
                tracing::warn!(error = %store_error, "could not give a session back to submitted");
            }
            Err(error)
        }
    }
}

async fn decide(
    app: &AppState,
    session: &SessionRecord,
    requester: &Requester,
) -> Result<SessionRecord, FinalizeError> {
    let started = Instant::now();
    let id = &session.session_id;
    let attestation = app
        .store
        .session_attestation(id)
        .await?
        .ok_or(FinalizeError::MediaGone)?;
    let claims: AttestationClaims = serde_json::from_value(attestation.claims.0.clone())
        .map_err(|e| anyhow::anyhow!("stored attestation of {id}: {e}"))?;
    let key = app
        .store
        .session_key(id)
        .await?
        .ok_or(FinalizeError::MediaGone)?;
    let data_key = app
        .vault
        .data_key(id, &key.master_kid, &key.wrapped_key)
        .map_err(|e| anyhow::anyhow!("data key of {id}: {e}"))?;
    let mut selfie = None;
    let mut document = None;
    for media in app.store.session_media(id).await? {
        let slot = match (media.role.as_str(), media.idx) {
            ("selfie", 0) => &mut selfie,
            ("document", 0) => &mut document,
            _ => continue,
        };
        let bytes = data_key
            .open(&media_context(id, &media.role, media.idx), &media.sealed)
            .map_err(|e| anyhow::anyhow!("media {}/{} of {id}: {e}", media.role, media.idx))?;
        *slot = Some(bytes);
    }
    let selfie = selfie.ok_or(FinalizeError::MediaGone)?;
    let mut timings = BTreeMap::new();
    timings.insert(
        "load_ms".to_owned(),
        started.elapsed().as_secs_f64() * 1000.0,
    );

    let evidence_started = Instant::now();
    let (evidence, model_timings) = face_evidence(app, id, &data_key, selfie, document).await?;
    for (stage, value) in model_timings {
        timings.insert(format!("{stage}_ms"), value);
    }
    timings.insert(
        "inference_ms".to_owned(),
        evidence_started.elapsed().as_secs_f64() * 1000.0,
    );

    let mut models: Vec<ModelUsed> = app
        .faces
        .chain()
        .models()
        .iter()
        .map(|m| ModelUsed {
            name: m.name.to_owned(),
            sha256: m.sha256.to_owned(),
        })
        .collect();
    models.push(ModelUsed {
        name: idyntra_models::manipulation::MODEL_NAME.to_owned(),
        sha256: idyntra_models::manipulation::BlendModel::bundled_sha256().to_owned(),
    });
    for model in &claims.models {
        if !models.contains(model) {
            models.push(model.clone());
        }
    }
    let policy = Policy::new(&app.config.decision, app.faces.blend().threshold);
    timings.insert(
        "total_ms".to_owned(),
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let result = decision::decide(
        &policy,
        &claims,
        &evidence,
        models,
        app.faces.engine(),
        timings,
    );
    let status = match result.decision {
        Decision::Verified => SessionStatus::Verified,
        Decision::Rejected => SessionStatus::Rejected,
        Decision::NeedsReview => SessionStatus::NeedsReview,
    };
    let result_json = serde_json::to_value(&result).map_err(anyhow::Error::from)?;
    let now = clock::now_ms();
    let mut decided = session.clone();
    decided.status = status.as_str().to_owned();
    decided.result = Some(sqlx::types::Json(result_json.clone()));
    decided.updated_at = now;
    let event = crate::events::job(&format!("session.{}", status.as_str()), &decided, now);
    let audit = AuditEvent {
        at: now,
        actor: requester.actor.clone(),
        action: format!("session.{}", status.as_str()),
        target: id.clone(),
        request_id: requester.request_id.clone(),
        details: serde_json::json!({
            "reasons": result.reasons,
            "face_match": result.face_match.as_ref().map(|m| m.score),
            "engine": result.engine,
        }),
    };
    let purge_at = now.saturating_add(clock::ms(app.config.media.retention));
    match app
        .store
        .decide(
            id,
            status.as_str(),
            &result_json,
            now,
            purge_at,
            &audit,
            &[event],
        )
        .await?
    {
        Transition::Done(session) => {
            app.metrics
                .decisions
                .get_or_create(&crate::telemetry::OutcomeLabels {
                    outcome: status.as_str(),
                })
                .inc();
            Ok(session)
        }
        // Taken over as stale and decided by another process meanwhile: theirs stands.
        _ => app
            .store
            .get_session(&session.account_id, id)
            .await?
            .ok_or_else(|| FinalizeError::NotFound(id.clone())),
    }
}
