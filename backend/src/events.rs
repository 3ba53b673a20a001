//! Events (`session.submitted`, `session.verified`…): written as an `event` job in the same
//! transaction as the change they report (so none is lost or invented), then fanned out by the
//! job runner to the account's webhook endpoints that want them.

use serde_json::{Value, json};

use crate::api::sessions::view;
use crate::clock;
use crate::ids;
use crate::store::{JobRecord, SessionRecord};

/// Every event type, in the order of a session's life.
pub const EVENT_TYPES: [&str; 6] = [
    "session.submitted",
    "session.verified",
    "session.rejected",
    "session.needs_review",
    "session.canceled",
    "session.redacted",
];

/// The event job reporting that `session` (as it is after the change) had `event_type` at `now`.
pub fn job(event_type: &str, session: &SessionRecord, now: i64) -> JobRecord {
    let event = json!({
        "id": ids::new_id("evt"),
        "object": "event",
        "type": event_type,
        "created": clock::to_secs(now),
        "data": { "object": view(session, now) },
    });
    JobRecord::new(
        "event",
        json!({ "account_id": session.account_id, "event": event }),
        None,
        now,
    )
}

/// The account, id, type and body of the event an `event` job carries.
pub fn parse(payload: &Value) -> Option<(&str, &str, &str, String)> {
    let account = payload.get("account_id")?.as_str()?;
    let event = payload.get("event")?;
    Some((
        account,
        event.get("id")?.as_str()?,
        event.get("type")?.as_str()?,
        event.to_string(),
    ))
}
