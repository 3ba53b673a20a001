//! Wall-clock time in the units the store and the API use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the store's unit).
pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// Whole seconds from store milliseconds (the API's unit, as in Stripe's).
pub fn to_secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// A `Duration` as store milliseconds.
pub fn ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
