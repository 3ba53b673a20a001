//! The edge's abuse ledger in Redis: the failure lockout and the attempts per session counted
//! across every replica of the edge (embedded in `idyntra serve` or run by `idyntra edge serve`),
//! not per process. Each edge still counts in its own memory; while Redis is away that count
//! decides alone, so an outage loosens the limits to what one instance allows and stops nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idyntra_edge::AbuseLimits;
use idyntra_edge::abuse::Refusal;
use idyntra_edge::native::{LedgerFuture, SharedLedger};

use crate::redis_link::RedisLink;

/// Checks the client's recent failures and counts the session's attempt, in one round trip. Time
/// comes from Redis, so replicas with skewed clocks share windows.
///
/// KEYS[1]: the client's failures, a sorted set of failure times (ms); KEYS[2]: the session's
/// attempts. ARGV: max failures, window (ms), max attempts, when the session's count may go (Unix
/// seconds). Answers `{0, 0}` (admitted), `{1, ms until the oldest failure ages}` (locked out) or
/// `{2, 0}` (the session used its attempts).
const ADMIT_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {1, tonumber(oldest[2]) + window - now}
end
local attempts = redis.call('INCR', KEYS[2])
if attempts == 1 then
  redis.call('EXPIREAT', KEYS[2], ARGV[4])
end
if attempts > tonumber(ARGV[3]) then
  return {2, 0}
end
return {0, 0}
";

/// Records a failure of the client: KEYS[1] as above; ARGV: max failures, window (ms), a unique
/// member. Only the latest `max failures` are kept, and the set expires with the window.
const FAILURE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[1]) + 1))
redis.call('PEXPIRE', KEYS[1], window)
return 0
";

/// The ledger of one Redis.
#[derive(Debug)]
pub struct RedisAbuseLedger {
    redis: Arc<RedisLink>,
    limits: AbuseLimits,
    admit: redis::Script,
    failure: redis::Script,
    /// Set while Redis is failing, so the outage is logged once, not per request.
    falling_back: AtomicBool,
}

impl RedisAbuseLedger {
    pub fn new(redis: Arc<RedisLink>, limits: AbuseLimits) -> Self {
        Self {
            redis,
            limits,
            admit: redis::Script::new(ADMIT_SCRIPT),
            failure: redis::Script::new(FAILURE_SCRIPT),
            falling_back: AtomicBool::new(false),
        }
    }

    fn failures_key(&self, client: &str) -> String {
        self.redis.key(&format!("edge:failures:{client}"))
    }

    fn window_ms(&self) -> i64 {
        self.limits.failure_window_secs.saturating_mul(1000)
    }

    /// Runs `invocation` within the link's timeout; `None` when Redis could not answer.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        // A link being skipped answers at once; it marks itself down when a connection fails,
        // so only a failed call is marked here (marking every skipped call would push the retry
        // back for as long as requests come).
        let answer = match self.redis.connection().await {
            Ok(mut connection) => {
                let answer = tokio::time::timeout(
                    self.redis.timeout(),
                    invocation.invoke_async::<T>(&mut connection),
                )
                .await
                .ok()
                .and_then(Result::ok);
                if answer.is_none() {
                    self.redis.mark_down();
                }
                answer
            }
            Err(_) => None,
        };
        match answer {
            Some(_) => {
                if self.falling_back.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is back: edge abuse counts are shared again");
                }
            }
            None => {
                if !self.falling_back.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis unavailable: edge abuse counts are per instance until it is back"
                    );
                }
            }
        }
        answer
    }

    async fn admit_client(
        &self,
        client: &str,
        session: &str,
        expires_at: i64,
    ) -> Result<(), Refusal> {
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(self.failures_key(client))
            .key(self.redis.key(&format!("edge:attempts:{session}")))
            .arg(self.limits.max_failures)
            .arg(self.window_ms())
            .arg(self.limits.max_attempts_per_session)
            // A minute past the token's expiry, so clocks a little apart never drop a live count.
            .arg(expires_at.saturating_add(60));
        match self.run::<(i64, i64)>(invocation).await {
            Some((1, wait_ms)) => Err(Refusal::LockedOut {
                retry_after_secs: (wait_ms.saturating_add(999) / 1000).max(1),
            }),
            Some((2, _)) => Err(Refusal::SessionExhausted),
            // Admitted, or Redis away: this instance's own count has already decided.
            _ => Ok(()),
        }
    }

    async fn record(&self, client: &str) {
        let mut invocation = self.failure.prepare_invoke();
        invocation
            .key(self.failures_key(client))
            .arg(self.limits.max_failures)
            .arg(self.window_ms())
            .arg(uuid::Uuid::new_v4().simple().to_string());
        self.run::<i64>(invocation).await;
    }
}

impl SharedLedger for RedisAbuseLedger {
    fn admit<'a>(
        &'a self,
        client: &'a str,
        session: &'a str,
        expires_at: i64,
    ) -> LedgerFuture<'a, Result<(), Refusal>> {
        Box::pin(self.admit_client(client, session, expires_at))
    }

    fn record_failure<'a>(&'a self, client: &'a str) -> LedgerFuture<'a, ()> {
        Box::pin(self.record(client))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use idyntra_tests::redis_url;

    fn ledger(url: &str, limits: AbuseLimits) -> RedisAbuseLedger {
        let prefix = format!("idyntra-test-{}:", uuid::Uuid::new_v4().simple());
        replica(url, &prefix, limits)
    }

    /// A replica's ledger: its own link to the Redis at `url`, keys under `prefix`.
    fn replica(url: &str, prefix: &str, limits: AbuseLimits) -> RedisAbuseLedger {
        let link = RedisLink::new(url, prefix, Duration::from_secs(2), Duration::from_secs(1));
        RedisAbuseLedger::new(Arc::new(link.unwrap()), limits)
    }

    /// When a test session's token expires: its count goes from Redis soon after.
    fn token_expiry() -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        i64::try_from(now.as_secs()).unwrap() + 600
    }

    #[tokio::test]
    async fn failures_recorded_by_one_replica_lock_the_client_out_at_another() {
        let limits = AbuseLimits::default();
        let first = ledger(&redis_url(), limits);
        let second = replica(&redis_url(), &first.redis.key(""), limits);
        for _ in 0..4 {
            first.record_failure("192.0.2.1").await;
        }
        assert_eq!(
            second.admit("192.0.2.1", "ses_a", token_expiry()).await,
            Ok(())
        );
        first.record_failure("192.0.2.1").await;
        match second.admit("192.0.2.1", "ses_b", token_expiry()).await {
            Err(Refusal::LockedOut { retry_after_secs }) => {
                assert!(
                    (170..=180).contains(&retry_after_secs),
                    "{retry_after_secs}"
                );
            }
            other => panic!("expected a lockout, got {other:?}"),
        }
        // Another client is not concerned.
        assert_eq!(
            second.admit("192.0.2.2", "ses_b", token_expiry()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_session_gets_its_attempts_across_replicas() {
        let limits = AbuseLimits {
            max_attempts_per_session: 3,
            ..AbuseLimits::default()
        };
        let ledger = ledger(&redis_url(), limits);
        for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            assert_eq!(ledger.admit(client, "ses_1", token_expiry()).await, Ok(()));
        }
        assert_eq!(
            ledger.admit("192.0.2.4", "ses_1", token_expiry()).await,
            Err(Refusal::SessionExhausted)
        );
        assert_eq!(
            ledger.admit("192.0.2.4", "ses_2", token_expiry()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn old_failures_age_out_and_only_the_latest_are_kept() {
        let limits = AbuseLimits {
            failure_window_secs: 1,
            max_failures: 2,
            ..AbuseLimits::default()
        };
        let ledger = ledger(&redis_url(), limits);
        for _ in 0..5 {
            ledger.record_failure("192.0.2.9").await;
        }
        let mut connection = ledger.redis.connection().await.unwrap();
        let kept: i64 = redis::cmd("ZCARD")
            .arg(ledger.failures_key("192.0.2.9"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(kept, 2);
        assert!(
            ledger
                .admit("192.0.2.9", "ses", token_expiry())
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            ledger.admit("192.0.2.9", "ses", token_expiry()).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn without_redis_the_ledger_admits_and_leaves_the_instance_to_decide() {
        // Nothing listens on port 1.
        let ledger = ledger("redis://127.0.0.1:1", AbuseLimits::default());
        for _ in 0..10 {
            ledger.record_failure("192.0.2.1").await;
        }
        assert_eq!(
            ledger.admit("192.0.2.1", "ses", token_expiry()).await,
            Ok(())
        );
        assert!(ledger.falling_back.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn calls_skipped_while_redis_is_down_do_not_push_its_retry_back() {
        // The link is skipped for a second after its connection fails.
        let ledger = ledger("redis://127.0.0.1:1", AbuseLimits::default());
        ledger.record_failure("192.0.2.1").await;
        let failed = std::time::Instant::now();
        assert!(ledger.redis.is_down());
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ledger.record_failure("192.0.2.1").await;
        }
        // Each skipped call marking it down again would keep it down until 1 s after the last.
        tokio::time::sleep(Duration::from_millis(1300).saturating_sub(failed.elapsed())).await;
        assert!(!ledger.redis.is_down(), "Redis is never tried again");
    }
}
