//! What the models found in a session's images — how many faces, and the embedding of the main
//! one — kept for a few minutes (`inference.cache_ttl`), so a repeated finalize of the same session
//! (a retry after `503`, the take-over of a decision that went stale, a job run after a deadline)
//! does not run the models again. In Redis when it is configured, so every replica and worker
//! shares it; in this process otherwise.
//!
//! Embeddings are biometric templates. An entry is therefore sealed with the session's own data
//! key and bound to the image's SHA-256, the engine and the models' sha256: redaction, which
//! destroys the data key, makes the session's entries unreadable at once, as it does its media;
//! another image or another engine never matches. Entries belong to one session, so the same photo
//! in two sessions is never linked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::redis_link::RedisLink;
use crate::vault::DataKey;

/// What the models found in one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageFaces {
    /// Faces found.
    pub faces: usize,
    /// The embedding of the largest face; `None` when it could not be aligned.
    pub embedding: Option<Vec<f32>>,
    /// The manipulation score of the largest face.
    #[serde(default)]
    pub manipulation: Option<f32>,
}

/// Which image of which session, under which models.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    session_id: String,
    role: &'static str,
    /// What the sealed entry is bound to: the image's hash, the engine and the models.
    context: String,
}

impl CacheEntry {
    /// The entry of `image` (its bytes), the `role` image of `session_id`, as `models` (the
    /// engine and the models' sha256) see it.
    pub fn new(session_id: &str, role: &'static str, image: &[u8], models: &str) -> Self {
        let sha256 = hex::encode(Sha256::digest(image));
        Self {
            session_id: session_id.to_owned(),
            role,
            context: format!("faces|{session_id}|{role}|{sha256}|{models}"),
        }
    }

    fn key(&self) -> String {
        format!("faces:{}:{}", self.session_id, self.role)
    }
}

/// The roles whose results are cached.
const ROLES: [&str; 2] = ["selfie", "document"];
/// Beyond this many in-process entries, expired ones are dropped; if none is, nothing is added.
const LOCAL_CAPACITY: usize = 4096;

/// The cache: Redis when configured, else a map in this process.
pub struct FaceCache {
    ttl: Duration,
    redis: Option<Arc<RedisLink>>,
    local: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl std::fmt::Debug for FaceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceCache")
            .field("ttl", &self.ttl)
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl FaceCache {
    /// A cache keeping entries for `ttl` (zero: nothing is cached).
    pub fn new(ttl: Duration, redis: Option<Arc<RedisLink>>) -> Self {
        Self {
            ttl,
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// The cached result of `entry`, if there is one sealed by `data_key` for the same image and
    /// models. Redis being away is a miss, never an error.
    pub async fn get(&self, data_key: &DataKey, entry: &CacheEntry) -> Option<ImageFaces> {
        if self.ttl.is_zero() {
            return None;
        }
        let sealed = match &self.redis {
            Some(redis) => {
                let mut connection = redis.connection().await.ok()?;
                let mut command = redis::cmd("GET");
                command.arg(redis.key(&entry.key()));
                let get = command.query_async::<Option<Vec<u8>>>(&mut connection);
                match tokio::time::timeout(redis.timeout(), get).await {
                    Ok(Ok(sealed)) => sealed?,
                    _ => {
                        redis.mark_down();
                        return None;
                    }
                }
            }
            None => {
                let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                let (stored, sealed) = local.get(&entry.key())?;
                if stored.elapsed() >= self.ttl {
                    return None;
                }
                sealed.clone()
            }
        };
        // Sealed for another image, engine or data key: not this entry.
        let plain = data_key.open(&entry.context, &sealed).ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// Keeps `faces` for `entry`, sealed by `data_key`. Best effort: a failure loses only the
    /// saving of a later run.
    pub async fn put(&self, data_key: &DataKey, entry: &CacheEntry, faces: &ImageFaces) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(plain) = serde_json::to_vec(faces) else {
            return;
        };
        let Ok(sealed) = data_key.seal(&entry.context, &plain) else {
            return;
        };
        match &self.redis {
            Some(redis) => {
                let Ok(mut connection) = redis.connection().await else {
                    return;
                };
                let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
                let mut command = redis::cmd("SET");
                command
                    .arg(redis.key(&entry.key()))
                    .arg(sealed)
                    .arg("PX")
                    .arg(ttl_ms);
                let set = command.query_async::<()>(&mut connection);
                if !matches!(tokio::time::timeout(redis.timeout(), set).await, Ok(Ok(()))) {
                    redis.mark_down();
                }
            }
            None => {
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                if local.len() >= LOCAL_CAPACITY {
                    let ttl = self.ttl;
                    local.retain(|_, (stored, _)| stored.elapsed() < ttl);
                }
                if local.len() < LOCAL_CAPACITY {
                    local.insert(entry.key(), (Instant::now(), sealed));
                }
            }
        }
    }

    /// Drops the entries of `session_id` (redaction). They are unreadable already once its data
    /// key is gone; this frees them early.
    pub async fn forget(&self, session_id: &str) {
        let keys = ROLES.map(|role| format!("faces:{session_id}:{role}"));
        match &self.redis {
            Some(redis) => {
                let Ok(mut connection) = redis.connection().await else {
                    return;
                };
                let mut delete = redis::cmd("DEL");
                for key in &keys {
                    delete.arg(redis.key(key));
                }
                let delete = delete.query_async::<i64>(&mut connection);
                let _ = tokio::time::timeout(redis.timeout(), delete).await;
            }
            None => {
                let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                for key in &keys {
                    local.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MediaConfig, Secret};
    use crate::vault::Vault;

    fn vault() -> Vault {
        Vault::new(
            &MediaConfig::default(),
            &Secret::new("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
        )
        .unwrap()
    }

    fn found() -> ImageFaces {
        ImageFaces {
            faces: 1,
            embedding: Some(vec![0.25, -0.5, 1.0]),
            manipulation: Some(0.25),
        }
    }

    /// The story every store of the cache must tell.
    async fn remembers_only_what_it_was_given(cache: &FaceCache, session: &str) {
        let vault = vault();
        let (key, _, _) = vault.new_data_key(session).unwrap();
        let selfie = CacheEntry::new(session, "selfie", b"selfie bytes", "burn-flex|m1");
        assert_eq!(cache.get(&key, &selfie).await, None);
        cache.put(&key, &selfie, &found()).await;
        assert_eq!(cache.get(&key, &selfie).await, Some(found()));
        // Another image, other models or another data key (a redacted and re-keyed session)
        // never match.
        let other_image = CacheEntry::new(session, "selfie", b"other bytes", "burn-flex|m1");
        assert_eq!(cache.get(&key, &other_image).await, None);
        let other_models = CacheEntry::new(session, "selfie", b"selfie bytes", "tract-cpu|m1");
        assert_eq!(cache.get(&key, &other_models).await, None);
        let (other_key, _, _) = vault.new_data_key(session).unwrap();
        assert_eq!(cache.get(&other_key, &selfie).await, None);
        // The document is its own entry.
        let document = CacheEntry::new(session, "document", b"selfie bytes", "burn-flex|m1");
        assert_eq!(cache.get(&key, &document).await, None);
        cache.forget(session).await;
        assert_eq!(cache.get(&key, &selfie).await, None);
    }

    #[tokio::test]
    async fn the_in_process_cache_keeps_sealed_entries_and_forgets_them() {
        let cache = FaceCache::new(Duration::from_secs(60), None);
        remembers_only_what_it_was_given(&cache, "ses_local").await;
    }

    #[tokio::test]
    async fn entries_expire_and_a_zero_ttl_caches_nothing() {
        let vault = vault();
        let (key, _, _) = vault.new_data_key("ses_ttl").unwrap();
        let entry = CacheEntry::new("ses_ttl", "selfie", b"bytes", "m");
        let cache = FaceCache::new(Duration::from_millis(50), None);
        cache.put(&key, &entry, &found()).await;
        assert_eq!(cache.get(&key, &entry).await, Some(found()));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(cache.get(&key, &entry).await, None);
        let off = FaceCache::new(Duration::ZERO, None);
        off.put(&key, &entry, &found()).await;
        assert_eq!(off.get(&key, &entry).await, None);
    }

    #[tokio::test]
    async fn the_redis_cache_keeps_sealed_entries_and_forgets_them() {
        let prefix = format!("idyntra-test-{}:", uuid::Uuid::new_v4().simple());
        let redis = Arc::new(
            RedisLink::new(
                &idyntra_tests::redis_url(),
                &prefix,
                Duration::from_secs(2),
                Duration::from_secs(1),
            )
            .unwrap(),
        );
        let cache = FaceCache::new(Duration::from_secs(60), Some(redis.clone()));
        remembers_only_what_it_was_given(&cache, "ses_redis").await;
        // What Redis holds is sealed: the embedding is not readable from it.
        let vault = vault();
        let (key, _, _) = vault.new_data_key("ses_redis2").unwrap();
        let entry = CacheEntry::new("ses_redis2", "selfie", b"bytes", "m");
        cache.put(&key, &entry, &found()).await;
        let mut connection = redis.connection().await.unwrap();
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(format!("{prefix}faces:ses_redis2:selfie"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(!stored.is_empty());
        assert!(serde_json::from_slice::<ImageFaces>(&stored).is_err());
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}faces:ses_redis2:selfie"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((1..=60_000).contains(&ttl), "{ttl}");
        cache.forget("ses_redis2").await;
    }
}
