//! The shared Redis connection, with the rule that Redis being away must never stop the API:
//! every call is bounded by a short timeout, and after a failure Redis is skipped for a while so
//! requests do not each wait for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Debug, thiserror::Error)]
#[error("redis unavailable")]
pub struct RedisUnavailable;

pub struct RedisLink {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    retry_after: Duration,
    connection: RwLock<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried again.
    down_until: AtomicU64,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Prepares the link; connecting happens on first use so the server starts while Redis is down.
    pub fn new(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
        retry_after: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            key_prefix: key_prefix.to_owned(),
            timeout,
            retry_after,
            connection: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            started: Instant::now(),
            down_until: AtomicU64::new(0),
        })
    }

    /// The link of `config.redis_url`, if one is set.
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<Arc<Self>>> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let link = Self::new(
            url.expose(),
            &config.redis_key_prefix,
            config.rate_limit.redis_timeout,
            config.rate_limit.redis_retry_after,
        );
        Ok(Some(Arc::new(link.context("redis_url")?)))
    }

    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.key_prefix)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether Redis failed recently and is being skipped.
    pub fn is_down(&self) -> bool {
        self.elapsed_ms() < self.down_until.load(Ordering::Relaxed)
    }

    /// Records a failure: Redis is skipped for the retry interval.
    pub fn mark_down(&self) {
        let until = self.elapsed_ms() + u64::try_from(self.retry_after.as_millis()).unwrap_or(0);
        self.down_until.store(until, Ordering::Relaxed);
    }

    /// A connection, unless Redis is being skipped or cannot be reached now.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisUnavailable> {
        if self.is_down() {
            return Err(RedisUnavailable);
        }
        if let Some(connection) = self.read_connection() {
            return Ok(connection);
        }
        // One connection attempt at a time; the others fall back meanwhile.
        let Ok(_guard) = self.connecting.try_lock() else {
            return Err(RedisUnavailable);
        };
        if let Some(connection) = self.read_connection() {
            return Ok(connection);
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(100);
        let connecting = ConnectionManager::new_with_config(self.client.clone(), config);
        match tokio::time::timeout(self.timeout * 4, connecting).await {
            Ok(Ok(connection)) => {
                *self
                    .connection
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner()) = Some(connection.clone());
                Ok(connection)
            }
            _ => {
                self.mark_down();
                Err(RedisUnavailable)
            }
        }
    }

    fn read_connection(&self) -> Option<ConnectionManager> {
        self.connection
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// `PING` within the timeout (readiness).
    pub async fn ping(&self) -> Result<(), RedisUnavailable> {
        let mut connection = self.connection().await?;
        let pong = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async::<String>(&mut connection),
        )
        .await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            _ => {
                self.mark_down();
                Err(RedisUnavailable)
            }
        }
    }
}
