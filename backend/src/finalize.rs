//! Finalize: open the session's sealed images, find and embed the faces of the selfie and the
//! document on the inference pool, decide by the policy, and store the result with its event.
//!
//! One process at a time decides a session: it moves `submitted` → `processing` first, and a
//! session left `processing` by a process that died is taken over once it is stale. Finalizing a
//! decided session returns its stored result.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use idyntra_models::{DecodeLimits, LocatedFaces, decode, embedding};
use idyntra_types::{AttestationClaims, Decision, ModelUsed, SessionStatus};

use image::RgbImage;

use crate::app::{App, AppState};
use crate::clock;
use crate::decision::{self, FaceEvidence, Policy};
use crate::face_cache::{CacheEntry, ImageFaces};
use crate::inference::InferenceError;
use crate::store::{AuditEvent, SessionRecord, Transition};
use crate::submission::media_context;
use crate::vault::DataKey;

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
    for model in &claims.models {
        if !models.contains(model) {
            models.push(model.clone());
        }
    }
    let policy = Policy::new(&app.config.decision);
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

/// The faces of the selfie and the document and their similarity: from the cache for images the
/// models saw in an earlier attempt at this session, from the models for the others (detection on
/// the pool, embedding in a batch with other finalizes' crops).
async fn face_evidence(
    app: &App,
    session_id: &str,
    data_key: &DataKey,
    selfie: Vec<u8>,
    document: Option<Vec<u8>>,
) -> Result<(FaceEvidence, BTreeMap<String, f64>), FinalizeError> {
    let models = format!(
        "{}|{}",
        app.faces.engine(),
        app.faces
            .chain()
            .models()
            .map(|model| model.sha256)
            .join(",")
    );
    let selfie_entry = CacheEntry::new(session_id, "selfie", &selfie, &models);
    let document_entry = document
        .as_deref()
        .map(|bytes| CacheEntry::new(session_id, "document", bytes, &models));
    let cached_selfie = app.face_cache.get(data_key, &selfie_entry).await;
    let cached_document = match &document_entry {
        Some(entry) => app.face_cache.get(data_key, entry).await,
        None => None,
    };
    let selfie = cached_selfie.is_none().then_some(selfie);
    let document = document.filter(|_| cached_document.is_none());

    let mut timings = BTreeMap::new();
    let (located_selfie, located_document) = if selfie.is_none() && document.is_none() {
        (None, None)
    } else {
        let (located_selfie, located_document, located_timings) = app
            .faces
            .run(move |models| {
                let mut timings = BTreeMap::new();
                let limits = DecodeLimits::default();
                let mut locate = |bytes: &[u8], role: &str| {
                    let at = Instant::now();
                    // The edge decoded these same bytes already; a failure here is a fault of ours.
                    let photo = decode(bytes, &limits)
                        .map_err(|e| idyntra_models::ModelError {
                            model: "decode",
                            message: format!("{role}: {e}"),
                        })?
                        .image;
                    let located = models.locate(&photo)?;
                    timings.insert(format!("{role}_detect_align"), ms(at));
                    Ok::<_, idyntra_models::ModelError>(located)
                };
                let selfie = selfie.map(|bytes| locate(&bytes, "selfie")).transpose()?;
                let document = document
                    .map(|bytes| locate(&bytes, "document"))
                    .transpose()?;
                Ok((selfie, document, timings))
            })
            .await?;
        timings = located_timings;
        (located_selfie, located_document)
    };

    // One call for this finalize's crops, batched with those of other finalizes: the time
    // includes the batch's wait.
    let crops: Vec<RgbImage> = [&located_selfie, &located_document]
        .into_iter()
        .filter_map(|located| located.as_ref().and_then(|l| l.crop.clone()))
        .collect();
    let mut embeddings = if crops.is_empty() {
        Vec::new()
    } else {
        let at = Instant::now();
        let embeddings = app.faces.embed(crops).await?;
        timings.insert("embed".to_owned(), ms(at));
        embeddings
    }
    .into_iter();
    let mut found = |located: LocatedFaces| ImageFaces {
        faces: located.faces.len(),
        embedding: located.crop.and_then(|_| embeddings.next()),
    };
    let selfie = match (cached_selfie, located_selfie) {
        (Some(cached), _) => cached,
        (None, Some(located)) => {
            let fresh = found(located);
            app.face_cache.put(data_key, &selfie_entry, &fresh).await;
            fresh
        }
        (None, None) => {
            return Err(anyhow::anyhow!(
                "the selfie of {session_id} was neither cached nor located"
            )
            .into());
        }
    };
    let document = match (document_entry, cached_document, located_document) {
        (_, Some(cached), _) => Some(cached),
        (Some(entry), None, Some(located)) => {
            let fresh = found(located);
            app.face_cache.put(data_key, &entry, &fresh).await;
            Some(fresh)
        }
        _ => None,
    };
    let similarity = match (
        &selfie.embedding,
        document.as_ref().and_then(|d| d.embedding.as_ref()),
    ) {
        (Some(a), Some(b)) => Some(embedding::cosine(a, b)),
        _ => None,
    };
    let evidence = FaceEvidence {
        selfie_faces: selfie.faces,
        document_faces: document.map(|d| d.faces),
        similarity,
    };
    Ok((evidence, timings))
}

fn ms(at: Instant) -> f64 {
    at.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    async fn app(dir: &tempfile::TempDir, fault: &Path) -> App {
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.inference.fault_marker = Some(fault.to_owned());
        config.inference.breaker_failures = 100;
        App::open(config).await.unwrap()
    }

    /// The evidence of the selfie img1.jpg and the document `document` for `session`.
    async fn evidence(
        app: &App,
        session: &str,
        key: &DataKey,
        document: &str,
    ) -> Result<(FaceEvidence, BTreeMap<String, f64>), FinalizeError> {
        face_evidence(app, session, key, photo("img1.jpg"), Some(photo(document))).await
    }

    fn photo(name: &str) -> Vec<u8> {
        let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
        std::fs::read(format!("{faces}/{name}")).unwrap()
    }

    #[tokio::test]
    async fn a_repeated_finalize_takes_what_the_models_found_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let fault = dir.path().join("fail-models");
        let app = app(&dir, &fault).await;
        let (key, _, _) = app.vault.new_data_key("ses_a");
        let (first, timings) = evidence(&app, "ses_a", &key, "img2.jpg").await.unwrap();
        assert!(first.similarity.is_some(), "{first:?}");
        assert!(timings.contains_key("embed"));

        // The models fail from now on: only what is cached can be judged.
        std::fs::write(&fault, b"").unwrap();
        let (again, timings) = evidence(&app, "ses_a", &key, "img2.jpg").await.unwrap();
        assert_eq!(again, first);
        assert!(timings.is_empty(), "the models ran: {timings:?}");
        // Another document needs the models, even though the selfie is cached.
        assert!(matches!(
            evidence(&app, "ses_a", &key, "img13.jpg").await,
            Err(FinalizeError::Inference(_))
        ));
        // Another session with the same photos never sees this session's entries.
        let (other_key, _, _) = app.vault.new_data_key("ses_b");
        assert!(matches!(
            evidence(&app, "ses_b", &other_key, "img2.jpg").await,
            Err(FinalizeError::Inference(_))
        ));
        // Nor does this session once its data key changed (redaction destroys it).
        let (new_key, _, _) = app.vault.new_data_key("ses_a");
        assert!(matches!(
            evidence(&app, "ses_a", &new_key, "img2.jpg").await,
            Err(FinalizeError::Inference(_))
        ));
    }
}
