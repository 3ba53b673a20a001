//! Abuse controls at the edge: a session gets a bounded number of attempts, and a client (an IP
//! address, or a device id the host trusts) that fails too often is locked out for a while — AWS's
//! guidance for face liveness is at most 5 failed checks in 3 minutes.
//!
//! [`AbuseGuard`] counts in the memory of one edge instance (one Worker isolate, one native
//! process). Hosts also share the counts across instances when they can: the native hosts in Redis,
//! the Worker in a Durable Object, both with the rules of [`FailureLog`] and [`next_attempt`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbuseLimits {
    /// Attempts per session (a client token lasts 15 minutes).
    pub max_attempts_per_session: u32,
    /// Failed attempts a client may make within the window.
    pub max_failures: usize,
    pub failure_window_secs: i64,
    /// Clients and sessions remembered; the oldest are forgotten beyond this.
    pub max_tracked: usize,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            max_attempts_per_session: 10,
            max_failures: 5,
            failure_window_secs: 180,
            max_tracked: 100_000,
        }
    }
}

/// Why an attempt is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The session has used its attempts.
    SessionExhausted,
    /// The client failed too often; it may try again after this many seconds.
    LockedOut { retry_after_secs: i64 },
}

/// The recent failures of one client: their times (Unix seconds), oldest first, no more than
/// the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FailureLog(VecDeque<i64>);

impl FailureLog {
    /// Forgets the failures that aged out of the window, then refuses a client that failed too
    /// often, saying when the oldest failure ages out.
    pub fn check(&mut self, limits: &AbuseLimits, now: i64) -> Result<(), Refusal> {
        let window = limits.failure_window_secs;
        while self.0.front().is_some_and(|&at| at + window <= now) {
            self.0.pop_front();
        }
        if self.0.len() >= limits.max_failures {
            let oldest = self.0.front().copied().unwrap_or(now);
            return Err(Refusal::LockedOut {
                retry_after_secs: (oldest + window - now).max(1),
            });
        }
        Ok(())
    }

    /// Records a failure at `now`.
    pub fn record(&mut self, limits: &AbuseLimits, now: i64) {
        self.0.push_back(now);
        // Only the latest `max_failures` matter.
        while self.0.len() > limits.max_failures {
            self.0.pop_front();
        }
    }

    /// When every recorded failure has aged out (Unix seconds), if any is recorded.
    pub fn forgotten_at(&self, limits: &AbuseLimits) -> Option<i64> {
        self.0.back().map(|&at| at + limits.failure_window_secs)
    }
}

/// The count of a session after one more attempt, when it has made `made` so far; refused once
/// the session has used its attempts.
pub fn next_attempt(made: u32, limits: &AbuseLimits) -> Result<u32, Refusal> {
    if made >= limits.max_attempts_per_session {
        return Err(Refusal::SessionExhausted);
    }
    Ok(made + 1)
}

#[derive(Debug, Default)]
struct Ledger {
    attempts: HashMap<String, (u32, i64)>,
    failures: HashMap<String, FailureLog>,
}

/// Counts attempts and failures.
#[derive(Debug, Default)]
pub struct AbuseGuard {
    limits: AbuseLimits,
    ledger: Mutex<Ledger>,
}

impl AbuseGuard {
    pub fn new(limits: AbuseLimits) -> Self {
        Self {
            limits,
            ledger: Mutex::default(),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic while holding the lock leaves counts that are still counts.
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `client` may make an attempt now (Unix seconds), before anything is counted.
    pub fn check_client(&self, client: &str, now: i64) -> Result<(), Refusal> {
        let mut ledger = self.ledger();
        match ledger.failures.get_mut(client) {
            Some(failures) => failures.check(&self.limits, now),
            None => Ok(()),
        }
    }

    /// Counts an attempt of `session` (whose token expires at `expires_at`), refusing it when
    /// the session has used its attempts.
    pub fn admit_session(&self, session: &str, expires_at: i64, now: i64) -> Result<(), Refusal> {
        let mut ledger = self.ledger();
        if ledger.attempts.len() >= self.limits.max_tracked {
            ledger.attempts.retain(|_, (_, expires)| *expires > now);
            if ledger.attempts.len() >= self.limits.max_tracked {
                ledger.attempts.clear();
            }
        }
        let (count, _) = ledger
            .attempts
            .entry(session.to_owned())
            .or_insert((0, expires_at));
        *count = next_attempt(*count, &self.limits)?;
        Ok(())
    }

    /// Records a failed attempt of `client`.
    pub fn record_failure(&self, client: &str, now: i64) {
        let mut ledger = self.ledger();
        let limits = self.limits;
        if ledger.failures.len() >= limits.max_tracked {
            ledger
                .failures
                .retain(|_, log| log.forgotten_at(&limits).is_some_and(|at| at > now));
            if ledger.failures.len() >= limits.max_tracked {
                ledger.failures.clear();
            }
        }
        ledger
            .failures
            .entry(client.to_owned())
            .or_default()
            .record(&limits, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_in_three_minutes_lock_a_client_out_until_the_oldest_ages() {
        let guard = AbuseGuard::new(AbuseLimits::default());
        for t in [0, 10, 20, 30] {
            guard.record_failure("ip", 1000 + t);
            assert_eq!(guard.check_client("ip", 1000 + t), Ok(()));
        }
        guard.record_failure("ip", 1040);
        assert_eq!(
            guard.check_client("ip", 1050),
            Err(Refusal::LockedOut {
                retry_after_secs: 130
            })
        );
        assert_eq!(guard.check_client("another-ip", 1050), Ok(()));
        // The first failure ages out at 1180.
        assert!(guard.check_client("ip", 1179).is_err());
        assert_eq!(guard.check_client("ip", 1180), Ok(()));
    }

    #[test]
    fn a_session_gets_a_bounded_number_of_attempts() {
        let guard = AbuseGuard::new(AbuseLimits {
            max_attempts_per_session: 3,
            ..AbuseLimits::default()
        });
        for _ in 0..3 {
            assert_eq!(guard.admit_session("ses_1", 2000, 1000), Ok(()));
        }
        assert_eq!(
            guard.admit_session("ses_1", 2000, 1000),
            Err(Refusal::SessionExhausted)
        );
        assert_eq!(guard.admit_session("ses_2", 2000, 1000), Ok(()));
    }

    #[test]
    fn a_failure_log_keeps_the_latest_failures_and_says_when_they_are_forgotten() {
        let limits = AbuseLimits::default();
        let mut log = FailureLog::default();
        assert_eq!(log.forgotten_at(&limits), None);
        for t in 0..8 {
            log.record(&limits, 1000 + t);
        }
        // Stored as the bare list of times (a Durable Object keeps it as JSON).
        assert_eq!(
            serde_json::to_string(&log).unwrap(),
            "[1003,1004,1005,1006,1007]"
        );
        assert_eq!(log.forgotten_at(&limits), Some(1187));
        assert_eq!(
            log.check(&limits, 1100),
            Err(Refusal::LockedOut {
                retry_after_secs: 83
            })
        );
        assert_eq!(log.check(&limits, 1183), Ok(()));
        assert_eq!(next_attempt(9, &limits), Ok(10));
        assert_eq!(next_attempt(10, &limits), Err(Refusal::SessionExhausted));
    }

    #[test]
    fn memory_stays_bounded() {
        let guard = AbuseGuard::new(AbuseLimits {
            max_tracked: 10,
            ..AbuseLimits::default()
        });
        for i in 0..100 {
            guard.record_failure(&format!("ip{i}"), 1000);
            guard.admit_session(&format!("ses{i}"), 2000, 1000).unwrap();
        }
        let ledger = guard.ledger();
        assert!(ledger.failures.len() <= 10 && ledger.attempts.len() <= 10);
    }
}
