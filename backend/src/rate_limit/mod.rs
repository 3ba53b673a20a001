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

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use super::*;

    fn limit(requests: u64) -> Limit {
        Limit {
            requests,
            window: Duration::from_secs(60),
        }
    }

    fn link(url: &str, prefix: &str) -> Arc<RedisLink> {
        Arc::new(
            RedisLink::new(
                url,
                prefix,
                Duration::from_millis(250),
                Duration::from_millis(200),
            )
            .unwrap(),
        )
    }

    fn shared_redis_url() -> String {
        std::env::var("IDYNTRA_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
    }

    #[tokio::test]
    async fn replicas_share_one_count_in_redis() {
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let metrics = Arc::new(Metrics::default());
        let one = RateLimiter::new(Some(link(&shared_redis_url(), &prefix)), metrics.clone());
        let two = RateLimiter::new(Some(link(&shared_redis_url(), &prefix)), metrics.clone());
        assert!(one.check(LimitScope::Key, "k", limit(3)).await.allowed);
        assert!(two.check(LimitScope::Key, "k", limit(3)).await.allowed);
        let third = one.check(LimitScope::Key, "k", limit(3)).await;
        assert!(third.allowed);
        assert_eq!(third.remaining, 0);
        let refused = two.check(LimitScope::Key, "k", limit(3)).await;
        assert!(
            !refused.allowed,
            "the second replica sees the first one's requests"
        );
        assert!(
            two.check(LimitScope::Ip, "k", limit(3)).await.allowed,
            "scopes are apart"
        );
        let text = metrics.render();
        assert!(
            text.contains("idyntra_rate_limit_redis_fallback_total 0"),
            "{text}"
        );
        assert!(text.contains("idyntra_redis_up 1"), "{text}");
    }

    /// A private `redis-server`, so stopping it does not disturb the shared one.
    struct ThrowawayRedis {
        child: Child,
        port: u16,
    }

    impl ThrowawayRedis {
        fn start(port: u16) -> Self {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for the rate-limit tests");
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Self { child, port }
        }

        fn free_port() -> u16 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        }
    }

    impl Drop for ThrowawayRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn redis_going_away_falls_back_and_comes_back() {
        let redis = ThrowawayRedis::start(ThrowawayRedis::free_port());
        let port = redis.port;
        let metrics = Arc::new(Metrics::default());
        let limiter = RateLimiter::new(
            Some(link(&format!("redis://127.0.0.1:{port}/"), "t:")),
            metrics.clone(),
        );
        for _ in 0..2 {
            assert!(limiter.check(LimitScope::Key, "k", limit(2)).await.allowed);
        }
        assert!(!limiter.check(LimitScope::Key, "k", limit(2)).await.allowed);
        assert_eq!(metrics.rate_limit_fallback.get(), 0);

        drop(redis);
        // Redis is gone: answers keep coming, decided in-process, and quickly.
        let started = std::time::Instant::now();
        for _ in 0..20 {
            limiter.check(LimitScope::Key, "other", limit(100)).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(metrics.rate_limit_fallback.get(), 20);
        assert_eq!(metrics.redis_up.get(), 0);
        let local = limiter.check(LimitScope::Key, "k", limit(2)).await;
        assert!(local.allowed, "the local limiter has its own counts");

        // Back on the same port: after the retry interval Redis decides again, with its counts.
        let _redis = ThrowawayRedis::start(port);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut back = false;
        for _ in 0..20 {
            let before = metrics.rate_limit_fallback.get();
            let decision = limiter.check(LimitScope::Key, "fresh", limit(5)).await;
            if metrics.rate_limit_fallback.get() == before {
                assert!(decision.allowed);
                back = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(back, "the limiter went back to Redis");
        assert_eq!(metrics.redis_up.get(), 1);
    }
}
