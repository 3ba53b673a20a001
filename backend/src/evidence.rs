//! The faces finalize judges: how many the selfie and the document show, and the similarity of
//! their main faces. From the face cache for images the models saw in an earlier attempt at the
//! same session, from the models for the others: detection on the pool, then the embedding in a
//! batch with other finalizes' crops.

use std::collections::BTreeMap;
use std::time::Instant;

use idyntra_models::manipulation::BlendModel;
use idyntra_models::{DecodeLimits, LocatedFaces, decode, embedding};
use image::RgbImage;

use crate::app::App;
use crate::decision::{FaceEvidence, Manipulation};
use crate::face_cache::{CacheEntry, ImageFaces};
use crate::finalize::FinalizeError;
use crate::vault::DataKey;

/// The evidence of a session's selfie and document (their decrypted bytes); the timings of the
/// model stages that ran.
pub async fn face_evidence(
    app: &App,
    session_id: &str,
    data_key: &DataKey,
    selfie: Vec<u8>,
    document: Option<Vec<u8>>,
) -> Result<(FaceEvidence, BTreeMap<String, f64>), FinalizeError> {
    let models = format!(
        "{}|{}|{}",
        app.faces.engine(),
        app.faces
            .chain()
            .models()
            .map(|model| model.sha256)
            .join(","),
        BlendModel::bundled_sha256(),
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
                    let at = Instant::now();
                    let manipulation = located
                        .main_face()
                        .and_then(|face| models.blend.score_face(&photo, face));
                    timings.insert(format!("{role}_manipulation"), ms(at));
                    Ok::<_, idyntra_models::ModelError>((located, manipulation))
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
        .filter_map(|located| located.as_ref().and_then(|(l, _)| l.crop.clone()))
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
    let mut found = |(located, manipulation): (LocatedFaces, Option<f32>)| ImageFaces {
        faces: located.faces.len(),
        embedding: located.crop.and_then(|_| embeddings.next()),
        manipulation,
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
        document_faces: document.as_ref().map(|d| d.faces),
        similarity,
        manipulation: Manipulation {
            selfie: selfie.manipulation,
            document: document.and_then(|d| d.manipulation),
        },
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
        let (key, _, _) = app.vault.new_data_key("ses_a").unwrap();
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
        let (other_key, _, _) = app.vault.new_data_key("ses_b").unwrap();
        assert!(matches!(
            evidence(&app, "ses_b", &other_key, "img2.jpg").await,
            Err(FinalizeError::Inference(_))
        ));
        // Nor does this session once its data key changed (redaction destroys it).
        let (new_key, _, _) = app.vault.new_data_key("ses_a").unwrap();
        assert!(matches!(
            evidence(&app, "ses_a", &new_key, "img2.jpg").await,
            Err(FinalizeError::Inference(_))
        ));
    }
}
