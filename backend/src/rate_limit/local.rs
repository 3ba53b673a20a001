//! In-process sliding windows: the limiter without Redis, and its fallback when Redis is away.

use std::collections::HashMap;
use std::sync::Mutex;

use super::window::{self, Decision, WindowPosition};

#[derive(Debug, Clone, Copy)]
struct Counter {
    index: u64,
    previous: u64,
    current: u64,
}

/// Counters per limited key, in this process only.
#[derive(Debug, Default)]
pub struct LocalLimiter {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, Counter>,
    /// The window index of the last sweep: at most one sweep per window, so a flood of distinct
    /// clients cannot make every request pay for one.
    swept_at: u64,
}

/// Beyond this many keys, counters of windows that no longer matter are dropped.
const SWEEP_AT: usize = 100_000;

impl LocalLimiter {
    pub fn check(&self, key: &str, limit: u64, window_ms: u64, now_ms: u64) -> Decision {
        let position = WindowPosition::at(now_ms, window_ms);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if state.counters.len() >= SWEEP_AT && state.swept_at != position.index {
            state.swept_at = position.index;
            state
                .counters
                .retain(|_, counter| counter.index + 1 >= position.index);
        }
        let counter = state.counters.entry(key.to_owned()).or_insert(Counter {
            index: position.index,
            previous: 0,
            current: 0,
        });
        if counter.index != position.index {
            let previous = if counter.index + 1 == position.index {
                counter.current
            } else {
                0
            };
            *counter = Counter {
                index: position.index,
                previous,
                current: 0,
            };
        }
        let allowed = window::admits(
            limit,
            counter.previous,
            counter.current,
            position.elapsed_ms,
            window_ms,
        );
        if allowed {
            counter.current += 1;
        }
        window::decide(
            limit,
            window_ms,
            position.elapsed_ms,
            counter.previous,
            counter.current,
            allowed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_slides() {
        let limiter = LocalLimiter::default();
        let base = 1_000_000; // the start of a window of 1000 ms
        for i in 0..5 {
            assert!(limiter.check("k", 5, 1000, base + i).allowed, "request {i}");
        }
        let rejected = limiter.check("k", 5, 1000, base + 10);
        assert!(!rejected.allowed);
        assert!(
            limiter.check("other", 5, 1000, base + 10).allowed,
            "keys are apart"
        );
        // Half-way through the next window, half of the previous five still count.
        assert!(limiter.check("k", 5, 1000, base + 1500).allowed);
        assert!(limiter.check("k", 5, 1000, base + 1500).allowed);
        assert!(!limiter.check("k", 5, 1000, base + 1500).allowed);
        // Two windows later everything is forgotten.
        assert_eq!(limiter.check("k", 5, 1000, base + 3000).remaining, 4);
    }
}
