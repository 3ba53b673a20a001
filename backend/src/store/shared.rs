//! The [`Store`](super::Store) methods whose SQL is the same on SQLite and PostgreSQL.
//!
//! Both databases accept `$n` placeholders, `returning` and `on conflict`, and the schemas use the
//! same column types from Rust's side (times are Unix milliseconds), so one body serves both; the
//! macro instantiates it for each concrete pool type because sqlx's generic bounds would cost more
//! than they save. Database-specific work (connecting, migrations) stays in each module.

/// Columns of `session`, in [`SessionRecord`](super::SessionRecord) order.
pub(super) const SESSION_COLUMNS: &str = "session_id, account_id, status, reference, metadata, \
     options, nonce, created_at, updated_at, expires_at, result, redacted_at";

/// Columns of `api_key`, in [`ApiKeyRecord`](super::ApiKeyRecord) order.
pub(super) const API_KEY_COLUMNS: &str = "api_key_id, account_id, name, prefix, secret_hash, \
     scopes, is_dev, created_at, expires_at, revoked_at, last_used_at, rotated_to";

pub(super) const AUDIT_COLUMNS: &str = "audit_log_id, created_at, actor, action, target, \
     request_id, details, chain_seq, prev_hash, hash";

/// Implements [`Store`](super::Store) for `$store` on database `$db`: the methods given in braces
/// (database-specific) plus the common ones below.
macro_rules! impl_store {
    ($store:ty, $db:ty, { $($specific:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
        $($specific)*
        async fn find_account(&self, name_or_id: &str) -> StoreResult<Option<Account>> {
            Ok(sqlx::query_as::<_, Account>(
                "select account_id, name, created_at from account \
                 where account_id = $1 or name = $1",
            )
            .bind(name_or_id)
            .fetch_optional(&self.pool)
            .await?)
        }

        async fn insert_account(&self, account: &Account, audit: &AuditEvent) -> StoreResult<()> {
            let mut tx = self.writer.begin().await?;
            sqlx::query("insert into account (account_id, name, created_at) values ($1, $2, $3)")
                .bind(&account.account_id)
                .bind(&account.name)
                .bind(account.created_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict_or(e, "account"))?;
            Self::audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn count_accounts(&self) -> StoreResult<i64> {
            Ok(sqlx::query_scalar("select count(*) from account")
                .fetch_one(&self.pool)
                .await?)
        }

        async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEvent) -> StoreResult<()> {
            let mut tx = self.writer.begin().await?;
            Self::insert_api_key_in(&mut tx, key).await?;
            Self::audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn api_keys_by_prefix(&self, prefix: &str) -> StoreResult<Vec<ApiKeyRecord>> {
            let sql = format!("select {API_KEY_COLUMNS} from api_key where prefix = $1");
            Ok(sqlx::query_as::<_, ApiKeyRecord>(&sql)
                .bind(prefix)
                .fetch_all(&self.pool)
                .await?)
        }

        async fn get_api_key(&self, api_key_id: &str) -> StoreResult<Option<ApiKeyRecord>> {
            let sql = format!("select {API_KEY_COLUMNS} from api_key where api_key_id = $1");
            Ok(sqlx::query_as::<_, ApiKeyRecord>(&sql)
                .bind(api_key_id)
                .fetch_optional(&self.pool)
                .await?)
        }

        async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
            let sql = format!(
                "select {API_KEY_COLUMNS} from api_key where $1 is null or account_id = $1 \
                 order by created_at, api_key_id"
            );
            Ok(sqlx::query_as::<_, ApiKeyRecord>(&sql)
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?)
        }

        async fn revoke_api_key(
            &self,
            api_key_id: &str,
            now: i64,
            audit: &AuditEvent,
        ) -> StoreResult<bool> {
            let mut tx = self.writer.begin().await?;
            let revoked = sqlx::query(
                "update api_key set revoked_at = $2 where api_key_id = $1 and revoked_at is null",
            )
            .bind(api_key_id)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if revoked {
                Self::audit_in(&mut tx, audit).await?;
            }
            tx.commit().await?;
            Ok(revoked)
        }

        async fn rotate_api_key(
            &self,
            old_key_id: &str,
            new_key: &ApiKeyRecord,
            old_expires_at: i64,
            audit: &AuditEvent,
        ) -> StoreResult<()> {
            let mut tx = self.writer.begin().await?;
            Self::insert_api_key_in(&mut tx, new_key).await?;
            sqlx::query(
                "update api_key set rotated_to = $2, \
                 expires_at = case when expires_at is null or expires_at > $3 then $3 \
                 else expires_at end \
                 where api_key_id = $1",
            )
            .bind(old_key_id)
            .bind(&new_key.api_key_id)
            .bind(old_expires_at)
            .execute(&mut *tx)
            .await?;
            Self::audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn touch_api_key(&self, api_key_id: &str, now: i64) -> StoreResult<()> {
            sqlx::query("update api_key set last_used_at = $2 where api_key_id = $1")
                .bind(api_key_id)
                .bind(now)
                .execute(&self.writer)
                .await?;
            Ok(())
        }

        /// Through the batch of concurrent reads (see [`super::batch`]).
        async fn get_session(
            &self,
            account_id: &str,
            session_id: &str,
        ) -> StoreResult<Option<SessionRecord>> {
            let read = (account_id.to_owned(), session_id.to_owned());
            self.session_reads.call(read).await?
        }

        /// Through the batch of concurrent inserts (see [`super::batch`]): one commit for many.
        async fn insert_session(
            &self,
            session: &SessionRecord,
            audit: &AuditEvent,
        ) -> StoreResult<()> {
            let insert = (session.clone(), audit.clone());
            self.session_writes.call(insert).await?
        }

        async fn list_sessions(&self, query: &SessionQuery) -> StoreResult<Vec<SessionRecord>> {
            let mut sql = sqlx::QueryBuilder::<$db>::new(format!(
                "select {SESSION_COLUMNS} from session where account_id = "
            ));
            sql.push_bind(&query.account_id);
            if let Some(after) = &query.starting_after {
                sql.push(" and session_id < ").push_bind(after);
            }
            match query.status {
                None => {}
                // Unsubmitted sessions past their expiry count as expired before any sweep.
                Some(SessionStatus::Expired) => {
                    sql.push(" and (status = 'expired' or (status = 'created' and expires_at <= ")
                        .push_bind(query.now)
                        .push("))");
                }
                Some(SessionStatus::Created) => {
                    sql.push(" and status = 'created' and expires_at > ")
                        .push_bind(query.now);
                }
                Some(status) => {
                    sql.push(" and status = ").push_bind(status.as_str());
                }
            }
            sql.push(" order by session_id desc limit ")
                .push_bind(i64::from(query.limit) + 1);
            Ok(sql
                .build_query_as::<SessionRecord>()
                .fetch_all(&self.pool)
                .await?)
        }

        async fn cancel_session(
            &self,
            account_id: &str,
            session_id: &str,
            now: i64,
            audit: &AuditEvent,
            jobs: &[JobRecord],
        ) -> StoreResult<Transition> {
            let mut tx = self.writer.begin().await?;
            let sql = format!(
                "update session set status = 'canceled', updated_at = $3 \
                 where account_id = $1 and session_id = $2 \
                 and (status = 'submitted' or (status = 'created' and expires_at > $3)) \
                 returning {SESSION_COLUMNS}"
            );
            let updated = sqlx::query_as::<_, SessionRecord>(&sql)
                .bind(account_id)
                .bind(session_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let outcome = match updated {
                Some(session) => {
                    Self::audit_in(&mut tx, audit).await?;
                    Self::jobs_in(&mut tx, jobs).await?;
                    Transition::Done(session)
                }
                None => {
                    let sql = format!(
                        "select {SESSION_COLUMNS} from session \
                         where account_id = $1 and session_id = $2"
                    );
                    match sqlx::query_as::<_, SessionRecord>(&sql)
                        .bind(account_id)
                        .bind(session_id)
                        .fetch_optional(&mut *tx)
                        .await?
                    {
                        Some(session) => Transition::Refused(session),
                        None => Transition::NotFound,
                    }
                }
            };
            tx.commit().await?;
            Ok(outcome)
        }

        async fn idempotency_start(
            &self,
            account_id: &str,
            key: &str,
            request_hash: &[u8],
            window: IdempotencyWindow,
        ) -> StoreResult<IdempotencyStart> {
            // Forget this key's attempt once it is past retention, so the key starts afresh.
            sqlx::query(
                "delete from idempotency_key where account_id = $1 and key = $2 \
                 and created_at <= $3",
            )
            .bind(account_id)
            .bind(key)
            .bind(window.now - window.retention)
            .execute(&self.writer)
            .await?;
            let inserted = sqlx::query(
                "insert into idempotency_key \
                 (account_id, key, request_hash, created_at, locked_at) \
                 values ($1, $2, $3, $4, $4) on conflict (account_id, key) do nothing",
            )
            .bind(account_id)
            .bind(key)
            .bind(request_hash)
            .bind(window.now)
            .execute(&self.writer)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(IdempotencyStart::Started);
            }
            let row: Option<(Vec<u8>, Option<i32>, Option<String>, Option<Vec<u8>>, i64)> =
                sqlx::query_as(
                    "select request_hash, response_status, response_content_type, \
                     response_body, locked_at \
                     from idempotency_key where account_id = $1 and key = $2",
                )
                .bind(account_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            let Some((stored_hash, status, content_type, body, locked_at)) = row else {
                // Deleted between the two statements by an abandoning request: busy, retry.
                return Ok(IdempotencyStart::InProgress);
            };
            if stored_hash != request_hash {
                return Ok(IdempotencyStart::Mismatch);
            }
            if let Some(status) = status {
                return Ok(IdempotencyStart::Replay(StoredResponse {
                    status: u16::try_from(status).unwrap_or(500),
                    content_type,
                    body: body.unwrap_or_default(),
                }));
            }
            if locked_at <= window.now - window.lock_timeout {
                // The earlier attempt died without an answer; take it over, once.
                let taken = sqlx::query(
                    "update idempotency_key set locked_at = $3 \
                     where account_id = $1 and key = $2 and locked_at = $4 \
                     and response_status is null",
                )
                .bind(account_id)
                .bind(key)
                .bind(window.now)
                .bind(locked_at)
                .execute(&self.writer)
                .await?
                .rows_affected();
                if taken == 1 {
                    return Ok(IdempotencyStart::Started);
                }
            }
            Ok(IdempotencyStart::InProgress)
        }

        async fn idempotency_complete(
            &self,
            account_id: &str,
            key: &str,
            lock: i64,
            response: &StoredResponse,
        ) -> StoreResult<()> {
            sqlx::query(
                "update idempotency_key set response_status = $3, response_content_type = $4, \
                 response_body = $5 where account_id = $1 and key = $2 and locked_at = $6 \
                 and response_status is null",
            )
            .bind(account_id)
            .bind(key)
            .bind(i32::from(response.status))
            .bind(&response.content_type)
            .bind(&response.body)
            .bind(lock)
            .execute(&self.writer)
            .await?;
            Ok(())
        }

        async fn purge_idempotency(&self, before: i64) -> StoreResult<u64> {
            Ok(sqlx::query("delete from idempotency_key where created_at < $1")
                .bind(before)
                .execute(&self.writer)
                .await?
                .rows_affected())
        }

        async fn idempotency_abandon(
            &self,
            account_id: &str,
            key: &str,
            lock: i64,
        ) -> StoreResult<()> {
            sqlx::query(
                "delete from idempotency_key where account_id = $1 and key = $2 \
                 and locked_at = $3 and response_status is null",
            )
            .bind(account_id)
            .bind(key)
            .bind(lock)
            .execute(&self.writer)
            .await?;
            Ok(())
        }

        async fn append_audit(&self, audit: &AuditEvent) -> StoreResult<()> {
            let mut tx = self.writer.begin().await?;
            Self::audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            Ok(())
        }

        async fn seal_audit(&self, limit: i64) -> StoreResult<u64> {
            // Most ticks of an idle server find nothing: a read of the partial index instead of
            // a transaction that writes the head row.
            let unsealed: Option<(i64,)> = sqlx::query_as(
                "select audit_log_id from audit_log where chain_seq is null limit 1",
            )
            .fetch_optional(&self.pool)
            .await?;
            if unsealed.is_none() {
                return Ok(0);
            }
            let mut tx = self.writer.begin().await?;
            // Writing the head first takes its lock: one sealer at a time, across processes.
            let (mut seq, mut hash): (i64, String) = sqlx::query_as(
                "update audit_head set last_seq = last_seq where audit_head_id = 1 \
                 returning last_seq, last_hash",
            )
            .fetch_one(&mut *tx)
            .await?;
            let sql = format!(
                "select {AUDIT_COLUMNS} from audit_log where chain_seq is null \
                 order by audit_log_id limit $1"
            );
            let rows = sqlx::query_as::<_, AuditEntry>(&sql)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            // Each row's (audit_log_id, chain_seq, prev_hash, hash), linked in order.
            let mut links = Vec::with_capacity(rows.len());
            for row in &rows {
                let next = seq + 1;
                let next_hash = row.chain_hash(next, &hash);
                links.push((row.audit_log_id, next, hash, next_hash.clone()));
                seq = next;
                hash = next_hash;
            }
            // A statement for many rows, not a round trip per row.
            for chunk in links.chunks(AUDIT_LINKS_PER_STATEMENT) {
                let mut sql = sqlx::QueryBuilder::<$db>::new(
                    "with link (audit_log_id, chain_seq, prev_hash, hash) as (",
                );
                sql.push_values(chunk, |mut row, (audit_log_id, chain_seq, prev_hash, hash)| {
                    row.push_bind(*audit_log_id)
                        .push_bind(*chain_seq)
                        .push_bind(prev_hash)
                        .push_bind(hash);
                });
                sql.push(
                    ") update audit_log set chain_seq = link.chain_seq, \
                     prev_hash = link.prev_hash, hash = link.hash \
                     from link where audit_log.audit_log_id = link.audit_log_id",
                );
                sql.build().execute(&mut *tx).await?;
            }
            sqlx::query("update audit_head set last_seq = $1, last_hash = $2 where audit_head_id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(rows.len() as u64)
        }

        async fn audit_entries(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditEntry>> {
            let sql = format!(
                "select {AUDIT_COLUMNS} from audit_log where chain_seq > $1 \
                 order by chain_seq limit $2"
            );
            Ok(sqlx::query_as::<_, AuditEntry>(&sql)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
        }

        async fn audit_head(&self) -> StoreResult<(i64, String)> {
            Ok(sqlx::query_as(
                "select last_seq, last_hash from audit_head where audit_head_id = 1",
            )
            .fetch_one(&self.pool)
            .await?)
        }

        async fn unsealed_audit_count(&self) -> StoreResult<i64> {
            Ok(sqlx::query_scalar("select count(*) from audit_log where chain_seq is null")
                .fetch_one(&self.pool)
                .await?)
        }
        }
    };
}

/// Inherent helpers the common methods call inside their transactions.
/// Pushes the twelve [`SESSION_COLUMNS`] of a session as one row of a `values` list.
macro_rules! push_session {
    ($row:expr, $session:expr) => {
        $row.push_bind(&$session.session_id)
            .push_bind(&$session.account_id)
            .push_bind(&$session.status)
            .push_bind(&$session.reference)
            .push_bind(&$session.metadata)
            .push_bind(&$session.options)
            .push_bind(&$session.nonce)
            .push_bind($session.created_at)
            .push_bind($session.updated_at)
            .push_bind($session.expires_at)
            .push_bind(&$session.result)
            .push_bind($session.redacted_at)
    };
}

/// Audit rows the sealer links in one statement (four bound values each).
pub(super) const AUDIT_LINKS_PER_STATEMENT: usize = 500;

/// Columns of `audit_log` a writer sets; the sealer sets the others.
pub(super) const AUDIT_WRITTEN_COLUMNS: &str =
    "created_at, actor, action, target, request_id, details";

/// Pushes the [`AUDIT_WRITTEN_COLUMNS`] of an audit event as one row of a `values` list.
macro_rules! push_audit {
    ($row:expr, $audit:expr) => {
        $row.push_bind($audit.at)
            .push_bind(&$audit.actor)
            .push_bind(&$audit.action)
            .push_bind(&$audit.target)
            .push_bind(&$audit.request_id)
            .push_bind($audit.details.to_string())
    };
}

/// Batched session inserts for `$store` (see [`super::batch`]). `$store` provides
/// `insert_sessions_at_once`: every session of a batch with its audit row, atomically.
macro_rules! session_writes {
    ($store:ty, $db:ty) => {
        impl $store {
            fn start_session_writes(writer: &sqlx::Pool<$db>, lanes: usize) -> SessionWrites {
                let writer = writer.clone();
                Batcher::spawn(lanes, MAX_BATCH, move |batch| {
                    let writer = writer.clone();
                    async move { Self::insert_session_batch(&writer, &batch).await }
                })
            }

            /// The batch at once; if the database refuses its data (a duplicate id), each on
            /// its own, so that only the faulty call fails.
            async fn insert_session_batch(
                writer: &sqlx::Pool<$db>,
                batch: &[(SessionRecord, AuditEvent)],
            ) -> Vec<StoreResult<()>> {
                match Self::insert_sessions_at_once(writer, batch).await {
                    Ok(()) => return batch.iter().map(|_| Ok(())).collect(),
                    Err(error) if batch.len() == 1 => return vec![Err(conflict_or(error, "session"))],
                    Err(error) if error.as_database_error().is_none() => {
                        return fail_all(batch.len(), error);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "a batch of sessions failed; inserting one by one");
                    }
                }
                let mut results = Vec::with_capacity(batch.len());
                for one in batch.chunks(1) {
                    let result = Self::insert_sessions_at_once(writer, one).await;
                    results.push(result.map_err(|e| conflict_or(e, "session")));
                }
                results
            }
        }
    };
}

macro_rules! common_store_helpers {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn audit_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                audit: &AuditEvent,
            ) -> StoreResult<()> {
                let mut sql = sqlx::QueryBuilder::<$db>::new(format!(
                    "insert into audit_log ({AUDIT_WRITTEN_COLUMNS}) "
                ));
                sql.push_values([audit], |mut row, audit| {
                    push_audit!(row, audit);
                });
                sql.build().execute(&mut **tx).await?;
                Ok(())
            }

            async fn insert_api_key_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                key: &ApiKeyRecord,
            ) -> StoreResult<()> {
                let sql = format!(
                    "insert into api_key ({API_KEY_COLUMNS}) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                );
                sqlx::query(&sql)
                    .bind(&key.api_key_id)
                    .bind(&key.account_id)
                    .bind(&key.name)
                    .bind(&key.prefix)
                    .bind(&key.secret_hash)
                    .bind(&key.scopes)
                    .bind(key.is_dev)
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .bind(key.last_used_at)
                    .bind(&key.rotated_to)
                    .execute(&mut **tx)
                    .await
                    .map_err(|e| conflict_or(e, "api key"))?;
                Ok(())
            }
        }
    };
}

pub(super) use common_store_helpers;
pub(super) use impl_store;
pub(super) use push_audit;
pub(super) use push_session;
pub(super) use session_writes;

/// Unique-constraint violations are the caller's conflict; anything else stays a database error.
pub(super) fn conflict_or(error: sqlx::Error, what: &str) -> super::StoreError {
    match error.as_database_error() {
        Some(db) if db.is_unique_violation() => super::StoreError::Conflict(what.to_owned()),
        _ => super::StoreError::Database(error),
    }
}
