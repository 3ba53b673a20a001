//! The audit trail: who changed what, when, under which request; hash-chained so that editing,
//! deleting or reordering a sealed row is detected by `idyntra audit verify`.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A state change to record, written in the same transaction as the change.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    /// `api_key:<id>`, `cli`, `system`.
    pub actor: String,
    /// `session.created`, `api_key.revoked`, …
    pub action: String,
    /// The id of the object changed.
    pub target: String,
    pub request_id: Option<String>,
    /// Non-personal details (never images, tokens, keys or personal data).
    pub details: Value,
}

/// One stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub audit_log_id: i64,
    pub created_at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub request_id: Option<String>,
    pub details: String,
    pub chain_seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

impl AuditEntry {
    /// The hash of this row at position `chain_seq` after `prev_hash`: SHA-256 of a JSON array of
    /// every field, so no two different rows share an encoding.
    pub fn chain_hash(&self, chain_seq: i64, prev_hash: &str) -> String {
        let encoded = serde_json::to_vec(&(
            chain_seq,
            prev_hash,
            self.audit_log_id,
            self.created_at,
            &self.actor,
            &self.action,
            &self.target,
            &self.request_id,
            &self.details,
        ))
        .expect("a tuple of strings and integers always serializes");
        hex::encode(Sha256::digest(encoded))
    }
}

/// Where a chain stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The position where the chain breaks.
    pub chain_seq: i64,
    /// The row found there, if any.
    pub audit_log_id: Option<i64>,
    pub reason: String,
}

/// Checks the sealed rows of one page of a chain (in `chain_seq` order), continuing from the
/// sequence number and hash of the row before them. Returns the position and hash to continue with.
pub fn verify_page(
    entries: &[AuditEntry],
    mut last_seq: i64,
    mut last_hash: String,
) -> Result<(i64, String), ChainBreak> {
    for entry in entries {
        let expected_seq = last_seq + 1;
        let broken = |reason: String| ChainBreak {
            chain_seq: expected_seq,
            audit_log_id: Some(entry.audit_log_id),
            reason,
        };
        let Some(seq) = entry.chain_seq else {
            return Err(broken("row is not sealed".to_owned()));
        };
        if seq != expected_seq {
            return Err(ChainBreak {
                chain_seq: expected_seq,
                audit_log_id: None,
                reason: format!("row missing: the next sealed row is at {seq}"),
            });
        }
        if entry.prev_hash.as_deref() != Some(last_hash.as_str()) {
            return Err(broken(
                "prev_hash does not match the previous row".to_owned(),
            ));
        }
        let hash = entry.chain_hash(seq, &last_hash);
        if entry.hash.as_deref() != Some(hash.as_str()) {
            return Err(broken("hash does not match the row's content".to_owned()));
        }
        last_seq = seq;
        last_hash = hash;
    }
    Ok((last_seq, last_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|i| {
                let mut entry = AuditEntry {
                    audit_log_id: i * 10,
                    created_at: 1_000 + i,
                    actor: "cli".to_owned(),
                    action: "api_key.created".to_owned(),
                    target: format!("key_{i}"),
                    request_id: None,
                    details: "{}".to_owned(),
                    chain_seq: Some(i),
                    prev_hash: Some(prev.clone()),
                    hash: None,
                };
                let hash = entry.chain_hash(i, &prev);
                entry.hash = Some(hash.clone());
                prev = hash;
                entry
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let chain = sealed_chain(5);
        let (seq, hash) = verify_page(&chain, 0, GENESIS_HASH.to_owned()).unwrap();
        assert_eq!(seq, 5);
        assert_eq!(Some(hash), chain[4].hash);
        // Paging: the second half continues from the first.
        let (seq, hash) = verify_page(&chain[..2], 0, GENESIS_HASH.to_owned()).unwrap();
        verify_page(&chain[2..], seq, hash).unwrap();
    }

    #[test]
    fn an_edited_row_is_named() {
        let mut chain = sealed_chain(5);
        chain[2].target = "key_forged".to_owned();
        let error = verify_page(&chain, 0, GENESIS_HASH.to_owned()).unwrap_err();
        assert_eq!((error.chain_seq, error.audit_log_id), (3, Some(30)));
    }

    #[test]
    fn a_deleted_row_is_named() {
        let mut chain = sealed_chain(5);
        chain.remove(1);
        let error = verify_page(&chain, 0, GENESIS_HASH.to_owned()).unwrap_err();
        assert_eq!((error.chain_seq, error.audit_log_id), (2, None));
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_next_link() {
        let mut chain = sealed_chain(5);
        chain[1].action = "api_key.revoked".to_owned();
        let prev = chain[0].hash.clone().unwrap();
        chain[1].hash = Some(chain[1].chain_hash(2, &prev));
        let error = verify_page(&chain, 0, GENESIS_HASH.to_owned()).unwrap_err();
        assert_eq!(error.chain_seq, 3);
    }
}
