//! Rate limits per API key and per client IP: a sliding window in Redis (one atomic script, so all
//! replicas share the count) when Redis is configured, in-process otherwise. When Redis is away the
//! in-process limiter decides, counted in a metric and logged once per outage.

mod local;
mod window;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::http::{HeaderMap, HeaderValue};

pub use local::LocalLimiter;
pub use window::Decision;

use crate::batch::Batcher;
use crate::config::Limit;
use crate::redis_link::RedisLink;
use crate::telemetry::{Metrics, ScopeLabels};

/// The Redis side of [`window::admits`], for the limits of one or more requests (see
/// [`crate::batch`]): for each request, its limits in order (per IP, then per key). It reads both
/// windows of a limit and counts the request against it only if it fits, stopping at the
/// request's first limit that refuses, so a refused request costs its later limits nothing. Time
/// comes from Redis itself so replicas with skewed clocks share windows.
///
/// KEYS: every limit's key, request by request. ARGV[1]: the number of requests; then each
/// request's number of limits; then a limit and a window (ms) per key. The answer, per request:
/// how many of its limits were checked, then four values for each of them.
///
/// Each limit's keys carry a hash tag so its two windows live in one cluster slot; a call over
/// several limits touches several tags, which a single Redis (what `RedisLink` connects to) allows
/// and a Redis Cluster would refuse.
const SLIDING_WINDOW_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local requests = tonumber(ARGV[1])
local answer = {}
local k = 0
for r = 1, requests do
  local count = tonumber(ARGV[1 + r])
  local checked_at = #answer + 1
  answer[checked_at] = 0
  local refused = false
  for j = 1, count do
    k = k + 1
    if not refused then
      local limit = tonumber(ARGV[requests + 2 * k])
      local window = tonumber(ARGV[requests + 2 * k + 1])
      local index = math.floor(now / window)
      local elapsed = now - index * window
      local current_key = KEYS[k] .. ':' .. index
      local previous_key = KEYS[k] .. ':' .. (index - 1)
      local current = tonumber(redis.call('GET', current_key) or '0')
      local previous = tonumber(redis.call('GET', previous_key) or '0')
      local estimate = previous * (window - elapsed) / window + current
      local allowed = 1
      if estimate + 1 > limit then
        allowed = 0
        refused = true
      else
        current = redis.call('INCR', current_key)
        if current == 1 then
          redis.call('PEXPIRE', current_key, window * 2)
        end
      end
      answer[checked_at] = answer[checked_at] + 1
      answer[#answer + 1] = allowed
      answer[#answer + 1] = previous
      answer[#answer + 1] = current
      answer[#answer + 1] = elapsed
    end
  end
end
return answer
";

/// Requests whose limits one script call checks at most.
const MAX_BATCH: usize = 64;

/// Concurrent script calls: few, so that requests arriving meanwhile gather into the next ones.
const LANES: usize = 2;

/// One limit as the script takes it.
#[derive(Debug, Clone)]
struct RedisLimit {
    key: String,
    requests: u64,
    window_ms: u64,
}

/// The script call of a batch: per request, the values the script answered for it; `None` for
/// every request when Redis failed or answered something else than the script's shape.
async fn check_batch_in_redis(
    redis: &RedisLink,
    script: &redis::Script,
    batch: &[Vec<RedisLimit>],
) -> Option<Vec<Vec<u64>>> {
    let mut connection = redis.connection().await.ok()?;
    let mut invocation = script.prepare_invoke();
    invocation.arg(batch.len());
    for limits in batch {
        invocation.arg(limits.len());
    }
    for limit in batch.iter().flatten() {
        invocation
            .key(&limit.key)
            .arg(limit.requests)
            .arg(limit.window_ms);
    }
    let answer = tokio::time::timeout(
        redis.timeout(),
        invocation.invoke_async::<Vec<u64>>(&mut connection),
    )
    .await;
    let split = match answer {
        Ok(Ok(values)) => split_answer(&values, batch.len()),
        _ => None,
    };
    if split.is_none() {
        redis.mark_down();
    }
    split
}

/// The script's answer cut into each request's values, if it has the shape described at
/// [`SLIDING_WINDOW_SCRIPT`].
fn split_answer(values: &[u64], requests: usize) -> Option<Vec<Vec<u64>>> {
    let mut rest = values;
    let mut split = Vec::with_capacity(requests);
    for _ in 0..requests {
        let (&checked, after) = rest.split_first()?;
        let width = usize::try_from(checked).ok()?.checked_mul(ANSWER_WIDTH)?;
        if after.len() < width {
            return None;
        }
        let (mine, after) = after.split_at(width);
        split.push(mine.to_vec());
        rest = after;
    }
    rest.is_empty().then_some(split)
}

/// Values the script answers per limit: allowed, previous, current, elapsed.
const ANSWER_WIDTH: usize = 4;

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
    /// Started on first use, inside the runtime.
    batches: OnceLock<Batcher<Vec<RedisLimit>, Option<Vec<u64>>>>,
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
            batches: OnceLock::new(),
            metrics,
            falling_back: AtomicBool::new(false),
        }
    }

    /// Counts one request of `id` against `limit` and says whether it may proceed.
    pub async fn check(&self, scope: LimitScope, id: &str, limit: Limit) -> Decision {
        let decisions = self.check_in_order(&[Check { scope, id, limit }]).await;
        match decisions.first() {
            Some(decision) => *decision,
            // Not reached: one check gets one decision.
            None => window::decide(limit.requests, window_ms(limit), 0, 0, 0, true),
        }
    }

    /// Counts one request against each limit in order, stopping at the first that refuses: one
    /// decision per limit up to and including that one. With Redis, one round trip for all.
    pub async fn check_in_order(&self, checks: &[Check<'_>]) -> Vec<Decision> {
        let decisions = match &self.redis {
            Some(redis) => match self.check_redis(redis, checks).await {
                Some(decisions) => decisions,
                None => self.fall_back(checks),
            },
            None => self.check_local(checks),
        };
        for (check, decision) in checks.iter().zip(&decisions) {
            if !decision.allowed {
                self.metrics
                    .rate_limit_rejections
                    .get_or_create(&ScopeLabels {
                        scope: check.scope.as_str(),
                    })
                    .inc();
            }
        }
        decisions
    }

    async fn check_redis(
        &self,
        redis: &Arc<RedisLink>,
        checks: &[Check<'_>],
    ) -> Option<Vec<Decision>> {
        if redis.is_down() {
            return None;
        }
        let limits = checks
            .iter()
            .map(|check| RedisLimit {
                key: redis.key(&format!("rl:{{{}:{}}}", check.scope.as_str(), check.id)),
                requests: check.limit.requests,
                window_ms: window_ms(check.limit),
            })
            .collect();
        let batches = self.batches.get_or_init(|| {
            let redis = redis.clone();
            let script = self.script.clone();
            Batcher::spawn(LANES, MAX_BATCH, move |batch: Vec<Vec<RedisLimit>>| {
                let redis = redis.clone();
                let script = script.clone();
                async move {
                    match check_batch_in_redis(&redis, &script, &batch).await {
                        Some(answers) => answers.into_iter().map(Some).collect(),
                        None => vec![None; batch.len()],
                    }
                }
            })
        });
        let values = batches.call(limits).await.ok().flatten()?;
        let Some(decisions) = read_answer(checks, &values) else {
            redis.mark_down();
            return None;
        };
        self.metrics.redis_up.set(1);
        if self.falling_back.swap(false, Ordering::Relaxed) {
            tracing::info!("redis is back: rate limits are shared again");
        }
        Some(decisions)
    }

    fn fall_back(&self, checks: &[Check<'_>]) -> Vec<Decision> {
        self.metrics.rate_limit_fallback.inc();
        self.metrics.redis_up.set(0);
        if !self.falling_back.swap(true, Ordering::Relaxed) {
            tracing::warn!("redis unavailable: rate limits are per instance until it is back");
        }
        self.check_local(checks)
    }

    fn check_local(&self, checks: &[Check<'_>]) -> Vec<Decision> {
        let now = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
        let mut decisions = Vec::with_capacity(checks.len());
        for check in checks {
            let decision = self.local.check(
                &format!("{}:{}", check.scope.as_str(), check.id),
                check.limit.requests,
                window_ms(check.limit),
                now,
            );
            decisions.push(decision);
            if !decision.allowed {
                break;
            }
        }
        decisions
    }
}

/// A request's per-key limit, counted by the per-IP limit's middleware in the same round trip
/// because the key was one this process had verified recently. `require_api_key` takes the key
/// and the decision from it instead of looking the key up and counting the request again.
#[derive(Debug, Clone)]
pub struct CountedKeyLimit {
    pub principal: crate::auth::Principal,
    pub decision: Decision,
}

/// One limit a request is counted against.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub scope: LimitScope,
    pub id: &'a str,
    pub limit: Limit,
}

fn window_ms(limit: Limit) -> u64 {
    u64::try_from(limit.window.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The script's answer as decisions, or `None` when it is not the shape the script returns: one
/// group of values per limit, every group but the last allowed, and a short answer ending in a
/// refusal.
fn read_answer(checks: &[Check<'_>], values: &[u64]) -> Option<Vec<Decision>> {
    if values.is_empty() || !values.len().is_multiple_of(ANSWER_WIDTH) {
        return None;
    }
    let groups = values.len() / ANSWER_WIDTH;
    if groups > checks.len() {
        return None;
    }
    let decisions: Vec<Decision> = checks
        .iter()
        .zip(values.chunks_exact(ANSWER_WIDTH))
        .map(|(check, group)| {
            window::decide(
                check.limit.requests,
                window_ms(check.limit),
                group[3],
                group[1],
                group[2],
                group[0] == 1,
            )
        })
        .collect();
    let refused_early = decisions[..groups - 1].iter().any(|d| !d.allowed);
    let cut_short = groups < checks.len() && decisions[groups - 1].allowed;
    (!refused_early && !cut_short).then_some(decisions)
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

    fn ip_then_key(ip_limit: u64) -> [Check<'static>; 2] {
        [
            Check {
                scope: LimitScope::Ip,
                id: "192.0.2.7",
                limit: limit(ip_limit),
            },
            Check {
                scope: LimitScope::Key,
                id: "key_1",
                limit: limit(10),
            },
        ]
    }

    /// Counting in order: both limits while the IP has room; once it is full the request is
    /// refused there and the key's count is left alone.
    async fn a_refusal_spares_the_later_limits(limiter: &RateLimiter) {
        for _ in 0..2 {
            let decisions = limiter.check_in_order(&ip_then_key(2)).await;
            assert_eq!(decisions.len(), 2);
            assert!(decisions.iter().all(|d| d.allowed));
        }
        let decisions = limiter.check_in_order(&ip_then_key(2)).await;
        assert_eq!(decisions.len(), 1);
        assert!(!decisions[0].allowed);
        let key = limiter.check(LimitScope::Key, "key_1", limit(10)).await;
        assert_eq!(
            key.remaining, 7,
            "the key counted 2 requests, then this one"
        );
    }

    #[tokio::test]
    async fn limits_are_counted_in_order_in_redis() {
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        let metrics = Arc::new(Metrics::default());
        let limiter = RateLimiter::new(Some(link(&shared_redis_url(), &prefix)), metrics.clone());
        a_refusal_spares_the_later_limits(&limiter).await;
        assert_eq!(metrics.rate_limit_fallback.get(), 0);
    }

    #[tokio::test]
    async fn limits_are_counted_in_order_in_process() {
        let limiter = RateLimiter::new(None, Arc::new(Metrics::default()));
        a_refusal_spares_the_later_limits(&limiter).await;
    }

    #[test]
    fn answers_of_the_wrong_shape_are_not_believed() {
        let checks = ip_then_key(5);
        let allowed = [1, 0, 1, 10];
        let refused = [0, 0, 5, 10];
        let read = |values: &[u64]| read_answer(&checks, values).map(|d| d.len());
        assert_eq!(read(&[allowed, allowed].concat()), Some(2));
        assert_eq!(read(&refused), Some(1));
        assert_eq!(read(&[allowed, refused].concat()), Some(2));
        // Cut short without a refusal, a refusal before the end, too many groups, ragged.
        assert_eq!(read(&allowed), None);
        assert_eq!(read(&[refused, allowed].concat()), None);
        assert_eq!(read(&[allowed, allowed, allowed].concat()), None);
        assert_eq!(read(&[1, 0, 1]), None);
        assert_eq!(read(&[]), None);
    }

    #[test]
    fn a_batch_answer_is_cut_per_request() {
        let allowed = [1, 0, 1, 10];
        let refused = [0, 0, 5, 10];
        // Request one: both limits checked; request two: refused at its first.
        let answer = [&[2][..], &allowed, &allowed, &[1], &refused].concat();
        assert_eq!(
            split_answer(&answer, 2),
            Some(vec![[allowed, allowed].concat(), refused.to_vec()])
        );
        // A request missing, one too many, a count larger than the values, trailing values.
        assert_eq!(split_answer(&answer, 3), None);
        assert_eq!(split_answer(&answer[..9], 2), None);
        assert_eq!(split_answer(&[3, 1, 0, 1, 10], 1), None);
        assert_eq!(split_answer(&[&answer[..], &[7]].concat(), 2), None);
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

    /// Script calls the server has answered.
    fn script_calls(port: u16) -> u64 {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut connection = client.get_connection().unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .unwrap();
        info.lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .filter_map(|line| {
                line.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    #[tokio::test]
    async fn the_ip_and_key_limits_take_one_round_trip() {
        let redis = ThrowawayRedis::start(ThrowawayRedis::free_port());
        let limiter = RateLimiter::new(
            Some(link(&format!("redis://127.0.0.1:{}/", redis.port), "t:")),
            Arc::new(Metrics::default()),
        );
        // The first call also loads the script.
        limiter.check_in_order(&ip_then_key(100)).await;
        let before = script_calls(redis.port);
        for _ in 0..5 {
            let decisions = limiter.check_in_order(&ip_then_key(100)).await;
            assert!(decisions.len() == 2 && decisions.iter().all(|d| d.allowed));
        }
        assert_eq!(script_calls(redis.port) - before, 5);
    }

    /// Concurrent requests share script calls, and each is still counted exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_counted_in_shared_calls() {
        let redis = ThrowawayRedis::start(ThrowawayRedis::free_port());
        let limiter = Arc::new(RateLimiter::new(
            Some(link(&format!("redis://127.0.0.1:{}/", redis.port), "t:")),
            Arc::new(Metrics::default()),
        ));
        limiter.check(LimitScope::Ip, "warm-up", limit(1)).await;
        let before = script_calls(redis.port);
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..200 {
            let limiter = limiter.clone();
            requests.spawn(async move {
                let checks = [
                    Check {
                        scope: LimitScope::Ip,
                        id: "192.0.2.8",
                        limit: limit(1_000),
                    },
                    Check {
                        scope: LimitScope::Key,
                        id: "k",
                        limit: limit(1_000),
                    },
                ];
                limiter.check_in_order(&checks).await
            });
        }
        let mut allowed = 0;
        while let Some(decisions) = requests.join_next().await {
            let decisions = decisions.unwrap();
            assert_eq!(decisions.len(), 2);
            allowed += usize::from(decisions.iter().all(|d| d.allowed));
        }
        assert_eq!(allowed, 200);
        let calls = script_calls(redis.port) - before;
        assert!(calls < 200, "{calls} script calls for 200 requests");
        // The key's window holds every request once: the next one sees 200 used.
        let next = limiter.check(LimitScope::Key, "k", limit(1_000)).await;
        assert_eq!(next.remaining, 1_000 - 201);
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
