//! Secret-key authentication of the server-to-server API, and the per-key rate limit.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api_keys;
use crate::app::{App, AppState};
use crate::clock;
use crate::config::Profile;
use crate::error::ApiError;
use crate::rate_limit::{self, CountedKeyLimit, LimitScope};
use crate::store::AuditEvent;

/// The authenticated caller: an API key of one account. Shared, not copied: every request takes
/// it from the key cache, puts it in the request and hands it to its handler.
#[derive(Debug, Clone)]
pub struct Principal(Arc<Caller>);

/// What a [`Principal`] knows of its key.
#[derive(Debug)]
pub struct Caller {
    pub account_id: String,
    pub api_key_id: String,
    scopes: Vec<String>,
}

impl Deref for Principal {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl Principal {
    /// `403` unless the key carries `scope`.
    pub fn require(&self, scope: &'static str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope))
        }
    }

    /// The audit actor for changes made with this key.
    pub fn audit(&self, action: &str, target: &str, details: serde_json::Value) -> AuditEvent {
        AuditEvent {
            at: clock::now_ms(),
            actor: format!("api_key:{}", self.api_key_id),
            action: action.to_owned(),
            target: target.to_owned(),
            request_id: crate::request_id::current(),
            details,
        }
    }
}

/// Handlers take the principal the middleware put in the request.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized {
                detail: "send the secret API key as `Authorization: Bearer <key>`",
            })
    }
}

impl App {
    /// Finds the key presented in `Authorization: Bearer …`.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let missing = ApiError::Unauthorized {
            detail: "send the secret API key as `Authorization: Bearer <key>`",
        };
        let invalid = ApiError::Unauthorized {
            detail: "the API key is invalid, expired or revoked",
        };
        let presented = bearer(authorization).ok_or(missing)?;
        let Some(prefix) = api_keys::prefix_of(presented) else {
            tracing::debug!("rejected a malformed API key");
            return Err(invalid);
        };
        let now = clock::now_ms();
        let hash = self.key_hasher.hash(presented);
        if let Some(principal) = self.key_cache.get(&hash, now) {
            self.touch_key(&principal.api_key_id).await;
            return Ok(principal);
        }
        let candidates = self.store.api_keys_by_prefix(prefix).await?;
        let Some(key) = candidates
            .into_iter()
            .find(|key| bool::from(hash.ct_eq(&key.secret_hash)))
        else {
            tracing::debug!(prefix, "rejected an unknown API key");
            return Err(invalid);
        };
        if !key.is_active(now) {
            tracing::debug!(api_key_id = %key.api_key_id, "rejected an expired or revoked API key");
            return Err(invalid);
        }
        if key.is_dev && self.config.profile != Profile::Dev {
            tracing::debug!(api_key_id = %key.api_key_id, "rejected the dev API key outside dev");
            return Err(invalid);
        }
        self.touch_key(&key.api_key_id).await;
        let principal = Principal(Arc::new(Caller {
            account_id: key.account_id,
            api_key_id: key.api_key_id,
            scopes: key.scopes.split(' ').map(str::to_owned).collect(),
        }));
        self.key_cache.put(hash, principal.clone(), key.expires_at);
        Ok(principal)
    }

    /// The key in `Authorization` if this process verified it recently (the key cache holds it):
    /// known without a database lookup, so its rate limit can be counted together with the
    /// client's and the request needs no second lookup. `None` for anything else, which is then
    /// authenticated as usual.
    pub fn recently_verified_key(&self, authorization: Option<&str>) -> Option<Principal> {
        let presented = bearer(authorization)?;
        api_keys::prefix_of(presented)?;
        let hash = self.key_hasher.hash(presented);
        self.key_cache.get(&hash, clock::now_ms())
    }
}

/// The credential of `Authorization: Bearer …`.
fn bearer(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
}

/// Keys verified in the last `api_keys.cache_ttl`, by their keyed hash, so a busy key costs one
/// database lookup per interval instead of one per request. Expiry (and so rotation grace) is
/// checked on every use; a revocation reaches this process within the interval.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, CachedKey>>,
}

#[derive(Debug)]
struct CachedKey {
    principal: Principal,
    expires_at: Option<i64>,
    cached_at: Instant,
}

/// Beyond this many entries, stale ones are dropped before adding another.
const KEY_CACHE_SWEEP_AT: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &[u8], now: i64) -> Option<Principal> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(hash)?;
        let fresh = entry.cached_at.elapsed() < self.ttl;
        let unexpired = entry.expires_at.is_none_or(|at| at > now);
        (fresh && unexpired).then(|| entry.principal.clone())
    }

    fn put(&self, hash: Vec<u8>, principal: Principal, expires_at: Option<i64>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= KEY_CACHE_SWEEP_AT {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.cached_at.elapsed() < ttl);
        }
        entries.insert(
            hash,
            CachedKey {
                principal,
                expires_at,
                cached_at: Instant::now(),
            },
        );
    }
}

/// Middleware of the `/v1` routes: authenticates, applies the key's rate limit, and hands the
/// [`Principal`] to the handlers.
pub async fn require_api_key(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let counted = request.extensions_mut().remove::<CountedKeyLimit>();
    let (principal, decision) = match counted {
        // The per-IP middleware found the key in the cache and counted its limit already.
        Some(counted) => {
            app.touch_key(&counted.principal.api_key_id).await;
            (counted.principal, Some(counted.decision))
        }
        None => {
            let authorization = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            let principal = match app.authenticate(authorization).await {
                Ok(principal) => principal,
                Err(error) => return error.into_response(),
            };
            let decision = if app.config.rate_limit.enabled {
                Some(
                    app.limiter
                        .check(
                            LimitScope::Key,
                            &principal.api_key_id,
                            app.config.rate_limit.per_key,
                        )
                        .await,
                )
            } else {
                None
            };
            (principal, decision)
        }
    };
    tracing::Span::current().record("account_id", principal.account_id.as_str());
    let mut response = match decision {
        Some(decision) if !decision.allowed => ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response(),
        _ => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
    };
    if let Some(decision) = decision {
        rate_limit::add_headers(&decision, response.headers_mut());
    }
    response
}
