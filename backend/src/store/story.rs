//! One story of storage tests, told against SQLite and against the running PostgreSQL.

use std::sync::Arc;

use idyntra_types::SessionStatus;
use serde_json::json;
use sqlx::types::Json;

use super::*;
use crate::config::DatabaseConfig;

/// A fresh SQLite database in a temporary directory (kept alive by the returned guard).
pub(crate) async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::connect(&url, &DatabaseConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), dir)
}

pub(crate) async fn postgres_store() -> Arc<dyn Store> {
    // Fails, never skips, when PostgreSQL is not there.
    let url = idyntra_tests::fresh_postgres_database().await;
    let store = PostgresStore::connect(&url, &DatabaseConfig::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

pub(super) fn event(action: &str, target: &str) -> AuditEvent {
    AuditEvent {
        at: 1_000,
        actor: "test".to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        request_id: Some("req_1".to_owned()),
        details: json!({"k": "v"}),
    }
}

pub(super) fn account(name: &str) -> Account {
    Account {
        account_id: crate::ids::new_id("acct"),
        name: name.to_owned(),
        created_at: 1_000,
    }
}

fn key(account_id: &str, prefix: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        api_key_id: crate::ids::new_id("key"),
        account_id: account_id.to_owned(),
        name: "ci".to_owned(),
        prefix: prefix.to_owned(),
        secret_hash: vec![1, 2, 3],
        scopes: "sessions:read sessions:write".to_owned(),
        is_dev: false,
        created_at: 1_000,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        rotated_to: None,
    }
}

pub(super) fn session(account_id: &str, created_at: i64, expires_at: i64) -> SessionRecord {
    SessionRecord {
        session_id: crate::ids::new_id("ses"),
        account_id: account_id.to_owned(),
        status: "created".to_owned(),
        reference: Some("order-1".to_owned()),
        metadata: Json(json!({"plan": "gold"})),
        options: Json(json!({"require_document": true, "liveness": "active"})),
        nonce: "n".to_owned(),
        created_at,
        updated_at: created_at,
        expires_at,
        result: None,
        redacted_at: None,
    }
}

async fn accounts_and_keys(store: &dyn Store) {
    let acme = account("acme");
    store
        .insert_account(&acme, &event("account.created", &acme.account_id))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_account(&account("acme"), &event("account.created", "x"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.find_account("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.find_account(&acme.account_id).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.count_accounts().await.unwrap(), 1);

    let first = key(&acme.account_id, "idk_aaaaaaaa");
    store
        .insert_api_key(&first, &event("api_key.created", &first.api_key_id))
        .await
        .unwrap();
    assert_eq!(
        store.api_keys_by_prefix("idk_aaaaaaaa").await.unwrap(),
        vec![first.clone()]
    );
    assert!(
        store
            .api_keys_by_prefix("idk_bbbbbbbb")
            .await
            .unwrap()
            .is_empty()
    );

    store.touch_api_key(&first.api_key_id, 5_000).await.unwrap();
    let touched = store.get_api_key(&first.api_key_id).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(5_000));

    let second = key(&acme.account_id, "idk_bbbbbbbb");
    store
        .rotate_api_key(
            &first.api_key_id,
            &second,
            9_000,
            &event("api_key.rotated", "x"),
        )
        .await
        .unwrap();
    let rotated = store.get_api_key(&first.api_key_id).await.unwrap().unwrap();
    assert_eq!(rotated.expires_at, Some(9_000));
    assert_eq!(rotated.rotated_to, Some(second.api_key_id.clone()));
    assert!(rotated.is_active(8_999) && !rotated.is_active(9_000));

    assert!(
        store
            .revoke_api_key(&second.api_key_id, 7_000, &event("api_key.revoked", "x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_api_key(&second.api_key_id, 7_001, &event("api_key.revoked", "x"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .get_api_key(&second.api_key_id)
            .await
            .unwrap()
            .unwrap()
            .is_active(7_000)
    );
    assert_eq!(
        store
            .list_api_keys(Some(&acme.account_id))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.list_api_keys(Some("acct_other")).await.unwrap().len(),
        0
    );
    assert_eq!(store.list_api_keys(None).await.unwrap().len(), 2);
}

async fn sessions(store: &dyn Store) {
    let mine = account("mine");
    let theirs = account("theirs");
    for a in [&mine, &theirs] {
        store
            .insert_account(a, &event("account.created", &a.account_id))
            .await
            .unwrap();
    }
    let now = 1_000_000;
    let mut ids = Vec::new();
    for i in 0..5 {
        let record = session(&mine.account_id, now + i, now + 60_000);
        store
            .insert_session(&record, &event("session.created", &record.session_id))
            .await
            .unwrap();
        ids.push(record.session_id);
    }
    let expired = session(&mine.account_id, now + 10, now - 1);
    store
        .insert_session(&expired, &event("session.created", "x"))
        .await
        .unwrap();
    let foreign = session(&theirs.account_id, now, now + 60_000);
    store
        .insert_session(&foreign, &event("session.created", "x"))
        .await
        .unwrap();

    let got = store
        .get_session(&mine.account_id, &ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.metadata.0, json!({"plan": "gold"}));
    assert_eq!(got.status_at(now), SessionStatus::Created);
    assert!(
        store
            .get_session(&mine.account_id, &foreign.session_id)
            .await
            .unwrap()
            .is_none()
    );

    // Newest first, two per page, following the cursor.
    let query = |status, after: Option<String>| SessionQuery {
        account_id: mine.account_id.clone(),
        status,
        starting_after: after,
        limit: 2,
        now,
    };
    let page = store.list_sessions(&query(None, None)).await.unwrap();
    assert_eq!(page.len(), 3, "limit + 1 rows tell there is more");
    assert_eq!(page[0].session_id, expired.session_id);
    assert_eq!(page[1].session_id, ids[4]);
    let next = store
        .list_sessions(&query(None, Some(ids[4].clone())))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|s| &s.session_id).collect::<Vec<_>>(),
        vec![&ids[3], &ids[2], &ids[1]]
    );
    let last = store
        .list_sessions(&query(None, Some(ids[1].clone())))
        .await
        .unwrap();
    assert_eq!(last.len(), 1);

    let expired_only = store
        .list_sessions(&query(Some(SessionStatus::Expired), None))
        .await
        .unwrap();
    assert_eq!(expired_only.len(), 1);
    assert_eq!(expired_only[0].status_at(now), SessionStatus::Expired);
    let created_only = store
        .list_sessions(&query(Some(SessionStatus::Created), None))
        .await
        .unwrap();
    assert!(
        created_only
            .iter()
            .all(|s| s.session_id != expired.session_id)
    );

    let cancel = |id: &str| {
        let id = id.to_owned();
        let account_id = mine.account_id.clone();
        async move {
            store
                .cancel_session(
                    &account_id,
                    &id,
                    now + 100,
                    &event("session.canceled", &id),
                    &[],
                )
                .await
                .unwrap()
        }
    };
    let Transition::Done(canceled) = cancel(&ids[0]).await else {
        panic!("cancel failed")
    };
    assert_eq!(canceled.status, "canceled");
    assert_eq!(canceled.updated_at, now + 100);
    assert!(matches!(cancel(&ids[0]).await, Transition::Refused(_)));
    assert!(matches!(
        cancel(&expired.session_id).await,
        Transition::Refused(_)
    ));
    assert!(matches!(
        cancel(&foreign.session_id).await,
        Transition::NotFound
    ));
    let canceled_only = store
        .list_sessions(&query(Some(SessionStatus::Canceled), None))
        .await
        .unwrap();
    assert_eq!(canceled_only.len(), 1);
}

async fn idempotency(store: &dyn Store) {
    let a = account("idem");
    store
        .insert_account(&a, &event("account.created", "x"))
        .await
        .unwrap();
    let id = &a.account_id;
    let window = |now| IdempotencyWindow {
        now,
        retention: 86_400_000,
        lock_timeout: 60_000,
    };
    let start = |key: &'static str, hash: &'static [u8], now: i64| async move {
        store
            .idempotency_start(id, key, hash, window(now))
            .await
            .unwrap()
    };
    assert_eq!(start("k1", b"h1", 0).await, IdempotencyStart::Started);
    assert_eq!(start("k1", b"h1", 1).await, IdempotencyStart::InProgress);
    assert_eq!(start("k1", b"h2", 1).await, IdempotencyStart::Mismatch);
    let stored = StoredResponse {
        status: 201,
        content_type: Some("application/json".to_owned()),
        body: b"{}".to_vec(),
    };
    store
        .idempotency_complete(id, "k1", 0, &stored)
        .await
        .unwrap();
    assert_eq!(
        start("k1", b"h1", 2).await,
        IdempotencyStart::Replay(stored)
    );
    // Past retention the key starts afresh.
    assert_eq!(
        start("k1", b"h2", 86_400_001).await,
        IdempotencyStart::Started
    );

    // An abandoned attempt frees the key; a crashed one is taken over after the lock timeout.
    assert_eq!(start("k2", b"h", 0).await, IdempotencyStart::Started);
    store.idempotency_abandon(id, "k2", 0).await.unwrap();
    assert_eq!(start("k2", b"h", 1).await, IdempotencyStart::Started);
    assert_eq!(
        start("k2", b"h", 60_000).await,
        IdempotencyStart::InProgress
    );
    assert_eq!(start("k2", b"h", 60_001).await, IdempotencyStart::Started);

    // The attempt that was taken over can neither answer nor free the key any more.
    let late = StoredResponse {
        status: 200,
        content_type: None,
        body: b"late".to_vec(),
    };
    store
        .idempotency_complete(id, "k2", 1, &late)
        .await
        .unwrap();
    store.idempotency_abandon(id, "k2", 1).await.unwrap();
    assert_eq!(
        start("k2", b"h", 60_002).await,
        IdempotencyStart::InProgress
    );
    let current = StoredResponse {
        status: 201,
        content_type: None,
        body: b"current".to_vec(),
    };
    store
        .idempotency_complete(id, "k2", 60_001, &current)
        .await
        .unwrap();
    assert_eq!(
        start("k2", b"h", 60_003).await,
        IdempotencyStart::Replay(current)
    );

    // Purging forgets the keys created before the cut-off (k2, at 1), and only those.
    assert_eq!(store.purge_idempotency(2).await.unwrap(), 1);
    assert_eq!(
        start("k1", b"h9", 86_400_002).await,
        IdempotencyStart::Mismatch
    );
    assert_eq!(
        start("k2", b"h9", 86_400_002).await,
        IdempotencyStart::Started
    );
}

async fn audit_chain(store: &dyn Store) {
    // Earlier chapters wrote rows; seal them and check the chain end to end.
    let unsealed = store.unsealed_audit_count().await.unwrap();
    assert!(unsealed > 0);
    assert_eq!(store.seal_audit(i64::MAX).await.unwrap(), unsealed as u64);
    assert_eq!(store.unsealed_audit_count().await.unwrap(), 0);
    store.append_audit(&event("extra", "x")).await.unwrap();
    assert_eq!(store.seal_audit(i64::MAX).await.unwrap(), 1);
    let entries = store.audit_entries(0, i64::MAX).await.unwrap();
    assert_eq!(entries.len() as i64, unsealed + 1);
    let (seq, hash) = audit_verify_page(&entries, 0, GENESIS_HASH.to_owned()).unwrap();
    assert_eq!(store.audit_head().await.unwrap(), (seq, hash));
    assert_eq!(entries[0].request_id.as_deref(), Some("req_1"));
    // Pages continue where the previous ended.
    assert_eq!(store.audit_entries(seq - 1, 10).await.unwrap().len(), 1);
}

/// Many inserts and reads at once go through batches: each call still gets its own answer, and a
/// duplicate in a batch fails alone without taking the others' rows (or its audit row) with it.
async fn concurrent_sessions(store: Arc<dyn Store>) {
    let owner = account("busy");
    store
        .insert_account(&owner, &event("account.created", &owner.account_id))
        .await
        .unwrap();
    let first = session(&owner.account_id, 1_000, 60_000);
    store
        .insert_session(&first, &event("session.created", &first.session_id))
        .await
        .unwrap();
    let audit_before = store.unsealed_audit_count().await.unwrap();
    let mut records: Vec<SessionRecord> = (0..40)
        .map(|_| session(&owner.account_id, 2_000, 60_000))
        .collect();
    records[18].session_id = first.session_id.clone();
    let mut inserts = tokio::task::JoinSet::new();
    for (i, record) in records.iter().cloned().enumerate() {
        let store = store.clone();
        inserts.spawn(async move {
            let audit = event("session.created", &record.session_id);
            (i, store.insert_session(&record, &audit).await)
        });
    }
    while let Some(joined) = inserts.join_next().await {
        let (i, result) = joined.unwrap();
        match result {
            Err(StoreError::Conflict(_)) => assert_eq!(i, 18),
            other => assert!(other.is_ok(), "insert {i}: {other:?}"),
        }
    }
    assert_eq!(
        store.unsealed_audit_count().await.unwrap(),
        audit_before + 39
    );

    let mut reads = tokio::task::JoinSet::new();
    for (i, record) in records.iter().cloned().enumerate() {
        let store = store.clone();
        // Every other read by a stranger: theirs must come back empty.
        let reader = if i % 2 == 0 {
            record.account_id.clone()
        } else {
            "acct_stranger".to_owned()
        };
        reads.spawn(async move {
            let found = store.get_session(&reader, &record.session_id).await;
            (i, record, found)
        });
    }
    while let Some(joined) = reads.join_next().await {
        let (i, record, found) = joined.unwrap();
        let found = found.unwrap();
        if i % 2 == 1 {
            assert_eq!(found, None, "read {i}");
        } else if i == 18 {
            assert_eq!(found.unwrap().created_at, first.created_at);
        } else {
            assert_eq!(found.unwrap(), record);
        }
    }
}

async fn tell(store: Arc<dyn Store>) {
    accounts_and_keys(store.as_ref()).await;
    sessions(store.as_ref()).await;
    concurrent_sessions(store.clone()).await;
    idempotency(store.as_ref()).await;
    audit_chain(store.as_ref()).await;
    store.ping().await.unwrap();
}

#[tokio::test]
async fn story_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    assert_eq!(store.kind(), "sqlite");
    tell(store).await;
}

#[tokio::test]
async fn story_on_postgres() {
    let store = postgres_store().await;
    assert_eq!(store.kind(), "postgres");
    tell(store).await;
}
