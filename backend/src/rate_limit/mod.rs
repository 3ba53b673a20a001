//! Rate limits per API key and per client IP: a sliding window in Redis (one atomic script, so all
//! replicas share the count) when Redis is configured, in-process otherwise. When Redis is away the
//! in-process limiter decides, counted in a metric and logged once per outage.

mod local;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderValue};

pub use local::LocalLimiter;
pub use window::Decision;

use crate::config::Limit;
use crate::redis_link::RedisLink;
use crate::telemetry::{Metrics, ScopeLabels};

/// The Redis side of [`window::admits`]: reads both windows, counts the request only if it fits.
/// Time comes from Redis itself so replicas with skewed clocks share windows. Keys carry a hash tag
/// so both windows live in one cluster slot.
const SLIDING_WINDOW_SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = math.floor(now / window)
local elapsed = now - index * window
local current_key = KEYS[1] .. ':' .. index
local previous_key = KEYS[1] .. ':' .. (index - 1)
local current = tonumber(redis.call('GET', current_key) or '0')
local previous = tonumber(redis.call('GET', previous_key) or '0')
local estimate = previous * (window - elapsed) / window + current
if estimate + 1 > limit then
  return {0, previous, current, elapsed}
end
current = redis.call('INCR', current_key)
if current == 1 then
  redis.call('PEXPIRE', current_key, window * 2)
end
return {1, previous, current, elapsed}
";

/// What is being limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Key,
    Ip,
}

impl LimitScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Ip => "ip",
        }
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    local: LocalLimiter,
    redis: Option<Arc<RedisLink>>,
    script: redis::Script,
    metrics: Arc<Metrics>,
    /// Set while Redis is failing, so the outage is logged once, not per request.
    falling_back: AtomicBool,
}

impl RateLimiter {
    pub fn new(redis: Option<Arc<RedisLink>>, metrics: Arc<Metrics>) -> Self {
        Self {
            local: LocalLimiter::default(),
            redis,
            script: redis::Script::new(SLIDING_WINDOW_SCRIPT),
            metrics,
            falling_back: AtomicBool::new(false),
        }
    }

    /// Counts one request of `id` against `limit` and says whether it may proceed.
    pub async fn check(&self, scope: LimitScope, id: &str, limit: Limit) -> Decision {
        let window_ms = u64::try_from(limit.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let decision = match &self.redis {
            Some(redis) => match self
                .check_redis(redis, scope, id, limit.requests, window_ms)
                .await
            {
                Some(decision) => decision,
                None => self.fall_back(scope, id, limit.requests, window_ms),
            },
            None => self.check_local(scope, id, limit.requests, window_ms),
        };
        if !decision.allowed {
            self.metrics
                .rate_limit_rejections
                .get_or_create(&ScopeLabels {
                    scope: scope.as_str(),
                })
                .inc();
        }
        decision
    }

    async fn check_redis(
        &self,
        redis: &RedisLink,
        scope: LimitScope,
        id: &str,
        limit: u64,
        window_ms: u64,
    ) -> Option<Decision> {
        let mut connection = redis.connection().await.ok()?;
        let key = redis.key(&format!("rl:{{{}:{id}}}", scope.as_str()));
        let answer = tokio::time::timeout(
            redis.timeout(),
            self.script
                .key(key)
                .arg(limit)
                .arg(window_ms)
                .invoke_async::<Vec<u64>>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(values)) if values.len() == 4 => {
                self.metrics.redis_up.set(1);
                if self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is back: rate limits are shared again");
                }
                Some(window::decide(
                    limit,
                    window_ms,
                    values[3],
                    values[1],
                    values[2],
                    values[0] == 1,
                ))
            }
            _ => {
                redis.mark_down();
                None
            }
        }
    }

    fn fall_back(&self, scope: LimitScope, id: &str, limit: u64, window_ms: u64) -> Decision {
        self.metrics.rate_limit_fallback.inc();
        self.metrics.redis_up.set(0);
        if !self.falling_back.swap(true, Ordering::Relaxed) {
            tracing::warn!("redis unavailable: rate limits are per instance until it is back");
        }
        self.check_local(scope, id, limit, window_ms)
    }

    fn check_local(&self, scope: LimitScope, id: &str, limit: u64, window_ms: u64) -> Decision {
        let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
        self.local
            .check(&format!("{}:{id}", scope.as_str()), limit, window_ms, now)
    }
}

/// Adds the `RateLimit-*` headers (IETF draft names, as most APIs send them) unless an inner,
/// more specific limit already did.
pub fn add_headers(decision: &Decision, headers: &mut HeaderMap) {
    if headers.contains_key("ratelimit-limit") {
        return;
    }
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    let reset = decision.reset.as_secs_f64().ceil() as u64;
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}
