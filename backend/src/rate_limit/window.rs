//! The sliding-window counter: the count of the current fixed window plus the previous window's
//! count weighted by how much of it still overlaps the sliding window. Memory is two counters per
//! client; the error against an exact sliding log is small and never lets a burst double the limit
//! the way fixed windows do. The Redis script implements the same admission rule.

use std::time::Duration;

/// Position in time: the index of the fixed window and the milliseconds elapsed in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowPosition {
    pub index: u64,
    pub elapsed_ms: u64,
}

impl WindowPosition {
    pub fn at(now_ms: u64, window_ms: u64) -> Self {
        Self {
            index: now_ms / window_ms,
            elapsed_ms: now_ms % window_ms,
        }
    }
}

/// The estimated number of requests in the sliding window ending now.
pub fn estimate(previous: u64, current: u64, elapsed_ms: u64, window_ms: u64) -> f64 {
    // Same order of operations as the Lua script, so both round alike at the boundary.
    let left = (window_ms - elapsed_ms.min(window_ms)) as f64;
    previous as f64 * left / window_ms as f64 + current as f64
}

/// Whether one more request fits under `limit`.
pub fn admits(limit: u64, previous: u64, current: u64, elapsed_ms: u64, window_ms: u64) -> bool {
    estimate(previous, current, elapsed_ms, window_ms) + 1.0 <= limit as f64
}

/// The answer for one request, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Until the current fixed window ends.
    pub reset: Duration,
    /// When rejected: the earliest time one more request would fit.
    pub retry_after: Duration,
}

/// Builds the decision from the counters as they are after the request was (or was not) counted.
pub fn decide(
    limit: u64,
    window_ms: u64,
    elapsed_ms: u64,
    previous: u64,
    current: u64,
    allowed: bool,
) -> Decision {
    let elapsed_ms = elapsed_ms.min(window_ms);
    let left_in_window = window_ms - elapsed_ms;
    let estimate = estimate(previous, current, elapsed_ms, window_ms);
    let remaining = (limit as f64 - estimate).floor().max(0.0) as u64;
    let retry_after_ms = if allowed {
        0
    } else if current < limit && previous > 0 {
        // The previous window's weight decays until one request fits.
        let excess = estimate + 1.0 - limit as f64;
        ((excess * window_ms as f64 / previous as f64).ceil() as u64).min(left_in_window)
    } else {
        // The current window alone is full: wait for it to end, then for its weight to decay.
        let excess = (current + 1).saturating_sub(limit) as f64;
        left_in_window + (excess * window_ms as f64 / current.max(1) as f64).ceil() as u64
    };
    Decision {
        allowed,
        limit,
        remaining: if allowed { remaining } else { 0 },
        reset: Duration::from_millis(left_in_window),
        retry_after: Duration::from_millis(retry_after_ms.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_window_counts_by_its_overlap() {
        assert_eq!(estimate(10, 0, 0, 1000), 10.0);
        assert_eq!(estimate(10, 0, 500, 1000), 5.0);
        assert_eq!(estimate(10, 3, 1000, 1000), 3.0);
        assert!(!admits(10, 10, 0, 0, 1000));
        assert!(admits(10, 10, 0, 100, 1000));
    }

    #[test]
    fn retry_after_is_when_a_request_fits_again() {
        // 10 per second, previous window full, 50 ms in: 9.5 of 10 still count.
        assert!(!admits(10, 10, 0, 50, 1000));
        let decision = decide(10, 1000, 50, 10, 0, false);
        assert!(!decision.allowed);
        assert_eq!(decision.retry_after, Duration::from_millis(50));
        let later = 50 + decision.retry_after.as_millis() as u64;
        assert!(admits(10, 10, 0, later, 1000));
        // Current window full: wait past its end.
        let decision = decide(10, 1000, 300, 0, 10, false);
        assert_eq!(decision.retry_after, Duration::from_millis(800));
        assert_eq!(decision.remaining, 0);
        assert_eq!(decision.reset, Duration::from_millis(700));
    }

    #[test]
    fn remaining_counts_down() {
        let decision = decide(10, 1000, 0, 0, 3, true);
        assert_eq!((decision.remaining, decision.allowed), (7, true));
    }
}
