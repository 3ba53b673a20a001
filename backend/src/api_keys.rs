//! Secret API keys: 256 random bits shown once, stored as HMAC-SHA256 under a server pepper,
//! found by a non-secret prefix and compared in constant time.
//!
//! A slow password KDF is not needed: the keys are high-entropy, so a keyed fast hash resists
//! offline guessing as long as the pepper stays secret, and it costs microseconds per request.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::Secret;
use crate::ids;
use crate::store::ApiKeyRecord;

/// Every key starts with this, so secret scanners and people recognise it.
pub const KEY_START: &str = "idk_";
/// Length of the stored, non-secret prefix (`idk_` and 8 characters: 48 random bits).
const PREFIX_LEN: usize = KEY_START.len() + 8;
/// Length of a whole key (`idk_` and 43 base64url characters).
const KEY_LEN: usize = KEY_START.len() + 43;

/// What a key may do.
pub const SCOPE_SESSIONS_READ: &str = "sessions:read";
pub const SCOPE_SESSIONS_WRITE: &str = "sessions:write";
/// Manage webhook endpoints and read their deliveries.
pub const SCOPE_WEBHOOKS: &str = "webhooks";
pub const ALL_SCOPES: [&str; 3] = [SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE, SCOPE_WEBHOOKS];

/// A freshly made key: the only moment the secret exists outside the caller's hands.
pub struct PlainKey(String);

impl PlainKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{KEY_START}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainKey({}…)", &self.0[..PREFIX_LEN])
    }
}

/// The lookup prefix of a presented key, or `None` when it cannot be a key of ours (answered
/// without touching the database).
pub fn prefix_of(presented: &str) -> Option<&str> {
    let well_formed = presented.len() == KEY_LEN
        && presented.starts_with(KEY_START)
        && presented[KEY_START.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| &presented[..PREFIX_LEN])
}

/// Hashes keys with the server pepper.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: Secret,
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    pub fn new(pepper: Secret) -> Self {
        Self { pepper }
    }

    pub fn hash(&self, key: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.pepper.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Checks and normalises a list of scopes; empty means every scope.
pub fn parse_scopes(scopes: &[String]) -> Result<String, String> {
    if scopes.is_empty() {
        return Ok(ALL_SCOPES.join(" "));
    }
    let mut parsed: Vec<&str> = Vec::new();
    for scope in scopes.iter().flat_map(|s| s.split([',', ' '])) {
        let scope = scope.trim();
        if scope.is_empty() {
            continue;
        }
        let Some(known) = ALL_SCOPES.iter().find(|known| **known == scope) else {
            return Err(format!(
                "unknown scope {scope:?}; known scopes: {}",
                ALL_SCOPES.join(", ")
            ));
        };
        if !parsed.contains(known) {
            parsed.push(known);
        }
    }
    Ok(parsed.join(" "))
}

/// A new key for `account_id`: the record to store and the secret to show once.
pub fn mint(
    hasher: &KeyHasher,
    account_id: &str,
    name: &str,
    scopes: String,
    expires_at: Option<i64>,
    is_dev: bool,
    now: i64,
) -> (ApiKeyRecord, PlainKey) {
    let plain = PlainKey::generate();
    let record = ApiKeyRecord {
        api_key_id: ids::new_id("key"),
        account_id: account_id.to_owned(),
        name: name.to_owned(),
        prefix: plain.expose()[..PREFIX_LEN].to_owned(),
        secret_hash: hasher.hash(plain.expose()),
        scopes,
        is_dev,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        rotated_to: None,
    };
    (record, plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(pepper: &str) -> KeyHasher {
        KeyHasher::new(Secret::new(pepper))
    }

    #[test]
    fn minted_keys_verify_only_with_their_pepper() {
        let (record, plain) = mint(
            &hasher("pepper-one-0123456789abcdef012345"),
            "acct_1",
            "ci",
            parse_scopes(&[]).unwrap(),
            None,
            false,
            0,
        );
        assert_eq!(prefix_of(plain.expose()), Some(record.prefix.as_str()));
        assert!(
            (hasher("pepper-one-0123456789abcdef012345").hash(plain.expose())
                == record.secret_hash)
        );
        assert!(
            hasher("pepper-two-0123456789abcdef012345").hash(plain.expose()) != record.secret_hash
        );
        let mut wrong = plain.expose().to_owned();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        assert!(hasher("pepper-one-0123456789abcdef012345").hash(&wrong) != record.secret_hash);
        assert!(!format!("{plain:?}").contains(&plain.expose()[PREFIX_LEN..]));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(prefix_of(""), None);
        assert_eq!(prefix_of("idk_short"), None);
        assert_eq!(prefix_of(&format!("sk_{}", "a".repeat(44))), None);
        assert_eq!(prefix_of(&format!("idk_{}", "é".repeat(21))), None);
        assert!(prefix_of(PlainKey::generate().expose()).is_some());
    }

    #[test]
    fn scopes_are_checked() {
        assert_eq!(
            parse_scopes(&[]).unwrap(),
            "sessions:read sessions:write webhooks"
        );
        assert_eq!(
            parse_scopes(&["sessions:read,sessions:read".to_owned()]).unwrap(),
            "sessions:read"
        );
        assert!(parse_scopes(&["admin".to_owned()]).is_err());
    }
}
