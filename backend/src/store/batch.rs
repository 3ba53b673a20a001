//! The batched session calls of the stores (see [`crate::batch`]).

use std::sync::Arc;

pub(super) use crate::batch::Batcher;

use super::{AuditEvent, SessionRecord, StoreError, StoreResult};

/// The most calls one batch takes: large enough to cover a burst of 100 concurrent requests in a
/// few batches, small enough to stay far below the databases' limits on bound parameters.
pub(super) const MAX_BATCH: usize = 64;

/// Who reads which session: `(account_id, session_id)`.
pub(super) type SessionRead = (String, String);

/// Batched session inserts, each with its audit row.
pub(super) type SessionWrites = Batcher<(SessionRecord, AuditEvent), StoreResult<()>>;

/// Batched session reads by id.
pub(super) type SessionReads = Batcher<SessionRead, StoreResult<Option<SessionRecord>>>;

/// Lanes for a pool of `max_connections`: a quarter of it for each kind of batch, so batches
/// leave most connections to everything else.
pub(super) fn lanes(max_connections: u32) -> usize {
    usize::try_from(max_connections / 4).unwrap_or(1).max(1)
}

/// One answer per read of `batch`, from the rows one query found: a session of another account
/// is not found, as when it is read alone.
pub(super) fn answer_reads(
    batch: &[SessionRead],
    rows: &[SessionRecord],
) -> Vec<StoreResult<Option<SessionRecord>>> {
    batch
        .iter()
        .map(|(account_id, session_id)| {
            Ok(rows
                .iter()
                .find(|row| &row.session_id == session_id && &row.account_id == account_id)
                .cloned())
        })
        .collect()
}

/// The same failure for every call of a batch.
pub(super) fn fail_all<T>(count: usize, error: sqlx::Error) -> Vec<StoreResult<T>> {
    fail_all_as(count, error, StoreError::Batch)
}

/// The same failure for every call of a batch, shared as `wrap` makes it a [`StoreError`].
pub(super) fn fail_all_as<T, E>(
    count: usize,
    error: E,
    wrap: impl Fn(Arc<E>) -> StoreError,
) -> Vec<StoreResult<T>> {
    let shared = Arc::new(error);
    (0..count).map(|_| Err(wrap(shared.clone()))).collect()
}
