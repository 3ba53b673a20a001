//! Session reads on SQLite, without a thread hand-over.
//!
//! sqlx gives every SQLite connection a thread of its own and hands each statement to it over a
//! channel, then wakes the caller's task with the rows: two thread switches for a lookup that
//! SQLite itself answers in microseconds from pages the OS holds. Here a batch of concurrent
//! reads (see [`super::batch`]) runs as one statement on the batch's own task, on a connection
//! taken from a small stack of idle ones, with no `.await` in between: it is as short as the CPU
//! work of the requests around it. One statement for the batch, not one per read: each statement
//! is a read transaction, which takes and drops the database file's shared lock (a system call
//! and a process-wide mutex that concurrent readers contend for). A read never waits for the
//! writer: in WAL mode it reads the last committed state while the writer goes on.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Row};
use sqlx::types::Json;

use super::SessionRecord;
use super::batch::{MAX_BATCH, SessionRead};
use super::shared::SESSION_COLUMNS;

/// How long a read waits on a lock before it fails. Readers in WAL mode meet one only while the
/// WAL is being reset or recovered, which takes milliseconds; a read that met a longer one would
/// hold its thread, so it gives up soon and the client retries.
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Idle read connections of one database file.
#[derive(Debug)]
pub(super) struct SqliteReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Connections kept when idle; more may be open at a moment (one per batch running at once),
    /// and those beyond it are closed when they are done.
    keep: usize,
}

impl SqliteReaders {
    /// Readers of the database file at `path`; they open on first use.
    pub(super) fn new(path: &Path, keep: usize) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    /// The rows of the sessions `batch` names, each once, whichever account they belong to (the
    /// caller answers each read from them, see [`super::batch::answer_reads`]).
    pub(super) fn sessions(&self, batch: &[SessionRead]) -> rusqlite::Result<Vec<SessionRecord>> {
        let connection = match self.take() {
            Some(connection) => connection,
            None => self.open()?,
        };
        let found = Self::select(&connection, batch);
        // A connection whose read failed may be broken; it goes, and the next read opens another.
        if found.is_ok() {
            self.put_back(connection);
        }
        found
    }

    fn select(
        connection: &Connection,
        batch: &[SessionRead],
    ) -> rusqlite::Result<Vec<SessionRecord>> {
        // One statement text per batch size, each prepared once per connection.
        let marks = vec!["?"; batch.len()].join(", ");
        let mut statement = connection.prepare_cached(&format!(
            "select {SESSION_COLUMNS} from session where session_id in ({marks})"
        ))?;
        let ids = batch.iter().map(|(_, session_id)| session_id);
        let rows = statement.query_map(rusqlite::params_from_iter(ids), session_from_row)?;
        rows.collect()
    }

    fn take(&self) -> Option<Connection> {
        // A poisoned stack only means another read panicked between two pushes: the
        // connections in it are whole.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    }

    fn put_back(&self, connection: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.keep {
            idle.push(connection);
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        // Read-write, so that it can take part in the WAL's shared memory like any connection,
        // and `query_only` so that nothing it runs can write.
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(BUSY_TIMEOUT)?;
        connection.set_prepared_statement_cache_capacity(MAX_BATCH);
        connection.pragma_update(None, "query_only", true)?;
        Ok(connection)
    }
}

/// A row of [`SESSION_COLUMNS`], in that order.
fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        session_id: row.get(0)?,
        account_id: row.get(1)?,
        status: row.get(2)?,
        reference: row.get(3)?,
        metadata: Json(row.get(4)?),
        options: Json(row.get(5)?),
        nonce: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        expires_at: row.get(9)?,
        result: row.get::<_, Option<serde_json::Value>>(10)?.map(Json),
        redacted_at: row.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::config::DatabaseConfig;
    use crate::store::story::{account, event, session, sqlite_store};
    use crate::store::{SqliteStore, Store, StoreError};

    /// A fresh store with one account, and `sessions` made that account's and written through it.
    async fn store_with(
        sessions: Vec<SessionRecord>,
    ) -> (Arc<dyn Store>, tempfile::TempDir, Vec<SessionRecord>) {
        let (store, dir) = sqlite_store().await;
        let owner = account("acme");
        store
            .insert_account(&owner, &event("account.created", "x"))
            .await
            .unwrap();
        let mut written = Vec::new();
        for mut record in sessions {
            record.account_id.clone_from(&owner.account_id);
            store
                .insert_session(&record, &event("session.created", "x"))
                .await
                .unwrap();
            written.push(record);
        }
        (store, dir, written)
    }

    /// A session as [`store_with`] writes it (its account set there).
    fn fresh() -> SessionRecord {
        session("", 1_000, 60_000)
    }

    /// Every column comes back as written, the optional ones filled in too, as soon as the write
    /// has returned.
    #[tokio::test]
    async fn a_read_sees_every_column_of_a_session_just_written() {
        let mut full = fresh();
        full.status = "verified".to_owned();
        full.result = Some(Json(json!({"decision": "approve", "score": 0.93})));
        full.redacted_at = Some(2_000);
        let (store, _dir, written) = store_with(vec![full]).await;
        let written = &written[0];

        let read = store
            .get_session(&written.account_id, &written.session_id)
            .await
            .unwrap();
        assert_eq!(read.as_ref(), Some(written));
        assert_eq!(
            store
                .get_session("acct_other", &written.session_id)
                .await
                .unwrap(),
            None
        );
    }

    /// A row the reader cannot decode is an error for that read, and the next read works.
    #[tokio::test]
    async fn an_undecodable_row_fails_its_read_only() {
        let (store, dir, written) = store_with(vec![fresh(), fresh()]).await;
        let [good, bad] = &written[..] else {
            unreachable!()
        };
        Connection::open(dir.path().join("test.db"))
            .unwrap()
            .execute(
                "update session set metadata = '{not json' where session_id = ?1",
                [&bad.session_id],
            )
            .unwrap();

        let failed = store.get_session(&bad.account_id, &bad.session_id).await;
        assert!(matches!(failed, Err(StoreError::Sqlite(_))), "{failed:?}");
        let read = store
            .get_session(&good.account_id, &good.session_id)
            .await
            .unwrap();
        assert_eq!(read.as_ref(), Some(good));
    }

    /// Readers open connections of their own, which an in-memory database would not share.
    #[tokio::test]
    async fn an_in_memory_database_is_refused_by_name() {
        for url in ["sqlite::memory:", "sqlite://file.db?mode=memory"] {
            let refused = SqliteStore::connect(url, &DatabaseConfig::default()).await;
            let Err(StoreError::Unsupported(message)) = refused else {
                panic!("{url}: {refused:?}");
            };
            assert!(message.contains("database_url"), "{message}");
        }
    }

    /// One statement answers a batch: every session it names once, a repeated id included, and
    /// nothing for an unknown one.
    #[tokio::test]
    async fn a_batch_finds_each_named_session_once() {
        let (_store, dir, mut written) = store_with(vec![fresh(), fresh()]).await;
        let readers = SqliteReaders::new(&dir.path().join("test.db"), 1);
        let read = |record: &SessionRecord| (record.account_id.clone(), record.session_id.clone());
        let batch = [
            read(&written[0]),
            read(&written[1]),
            read(&written[0]),
            (written[0].account_id.clone(), "ses_unknown".to_owned()),
        ];
        let mut found = readers.sessions(&batch).unwrap();
        found.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        written.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        assert_eq!(found, written);
    }

    /// Connections beyond those kept are closed when done; the kept ones are reused.
    #[test]
    fn idle_connections_are_kept_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kept.db");
        Connection::open(&path).unwrap();
        let readers = SqliteReaders::new(&path, 1);
        let first = readers.open().unwrap();
        let second = readers.open().unwrap();
        readers.put_back(first);
        readers.put_back(second);
        assert_eq!(readers.idle.lock().unwrap().len(), 1);
        assert!(readers.take().is_some());
        assert!(readers.take().is_none());
    }
}
