//! Envelope encryption of biometric data: every session gets its own AES-256 data key, which is
//! stored only wrapped (AES-256-GCM) by a master key named by its key id. Media is sealed with the
//! data key and bound to the row it belongs to, so a sealed image cannot be moved to another
//! session or role. Destroying a session's wrapped key (redaction) makes its media unreadable at
//! once, in backups too.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

use crate::config::{MediaConfig, Secret, aes_key};

/// GCM nonce length: sealed data is `nonce || ciphertext || tag`.
const NONCE_LEN: usize = 12;

/// Why sealed data could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("no master key {0:?} is configured (media.master_key, media.retired_master_keys)")]
    UnknownMasterKey(String),
    #[error("the sealed data is damaged or was sealed for something else")]
    Damaged,
}

/// A session's data key, in memory only while media is sealed or opened.
pub struct DataKey(Aes256Gcm);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// `plaintext` sealed for `context` (what it is and whose).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        seal(&self.0, context, plaintext)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        open(&self.0, context, sealed)
    }
}

/// The master keys: the current one wraps, every one unwraps.
#[derive(Clone)]
pub struct Vault {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Vault {
    /// The vault of `config` with `master_key` as the current key.
    pub fn new(config: &MediaConfig, master_key: &Secret) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        let cipher = |bytes: [u8; 32]| Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes));
        keys.insert(
            config.master_kid.clone(),
            cipher(aes_key("media.master_key", master_key)?),
        );
        for retired in &config.retired_master_keys {
            keys.insert(
                retired.kid.clone(),
                cipher(aes_key("media.retired_master_keys", &retired.key)?),
            );
        }
        Ok(Self {
            current: config.master_kid.clone(),
            keys,
        })
    }

    /// A fresh data key for `session_id`, and its wrapped form with the wrapping key's id.
    pub fn new_data_key(&self, session_id: &str) -> (DataKey, String, Vec<u8>) {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        let wrapped = seal(&self.keys[&self.current], &wrap_context(session_id), &key);
        (DataKey(Aes256Gcm::new(&key)), self.current.clone(), wrapped)
    }

    /// Unwraps the data key of `session_id` that `master_kid` wrapped.
    pub fn data_key(
        &self,
        session_id: &str,
        master_kid: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, VaultError> {
        let master = self
            .keys
            .get(master_kid)
            .ok_or_else(|| VaultError::UnknownMasterKey(master_kid.to_owned()))?;
        let bytes: [u8; 32] = open(master, &wrap_context(session_id), wrapped)?
            .try_into()
            .map_err(|_| VaultError::Damaged)?;
        Ok(DataKey(Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes))))
    }

    /// Seals a small secret of this deployment (a webhook signing secret) under the current
    /// master key; returns the key id with it.
    pub fn seal_secret(&self, context: &str, secret: &[u8]) -> (String, Vec<u8>) {
        (
            self.current.clone(),
            seal(&self.keys[&self.current], context, secret),
        )
    }

    pub fn open_secret(
        &self,
        master_kid: &str,
        context: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let master = self
            .keys
            .get(master_kid)
            .ok_or_else(|| VaultError::UnknownMasterKey(master_kid.to_owned()))?;
        open(master, context, sealed)
    }
}

fn wrap_context(session_id: &str) -> String {
    format!("idyntra data key {session_id}")
}

fn seal(cipher: &Aes256Gcm, context: &str, plaintext: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let payload = Payload {
        msg: plaintext,
        aad: context.as_bytes(),
    };
    // Encryption fails only for inputs beyond GCM's 64 GiB limit, far above any upload cap.
    let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    sealed
}

fn open(cipher: &Aes256Gcm, context: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
    if sealed.len() < NONCE_LEN {
        return Err(VaultError::Damaged);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| VaultError::Damaged)?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| VaultError::Damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MasterKey;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn vault(kid: &str, key: &str, retired: &[(&str, &str)]) -> Vault {
        let config = MediaConfig {
            master_kid: kid.to_owned(),
            retired_master_keys: retired
                .iter()
                .map(|(kid, key)| MasterKey {
                    kid: (*kid).to_owned(),
                    key: Secret::new(*key),
                })
                .collect(),
            ..MediaConfig::default()
        };
        Vault::new(&config, &Secret::new(key)).unwrap()
    }

    #[test]
    fn media_opens_with_its_data_key_and_context_only() {
        let vault = vault("m1", KEY_A, &[]);
        let (key, kid, wrapped) = vault.new_data_key("ses_1");
        let sealed = key.seal("ses_1/selfie/0", b"jpeg bytes");
        assert_ne!(&sealed[NONCE_LEN..], b"jpeg bytes".as_slice());
        let reopened = vault.data_key("ses_1", &kid, &wrapped).unwrap();
        assert_eq!(
            reopened.open("ses_1/selfie/0", &sealed).unwrap(),
            b"jpeg bytes"
        );
        // Moved to another role, or its wrapped key moved to another session: refused.
        assert_eq!(
            reopened.open("ses_1/document/0", &sealed),
            Err(VaultError::Damaged)
        );
        assert!(vault.data_key("ses_2", &kid, &wrapped).is_err());
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        assert_eq!(
            reopened.open("ses_1/selfie/0", &flipped),
            Err(VaultError::Damaged)
        );
        assert_eq!(
            reopened.open("ses_1/selfie/0", b"short"),
            Err(VaultError::Damaged)
        );
    }

    #[test]
    fn a_rotated_master_key_still_unwraps_what_it_wrapped() {
        let old = vault("m1", KEY_A, &[]);
        let (key, kid, wrapped) = old.new_data_key("ses_1");
        let sealed = key.seal("x", b"data");
        let rotated = vault("m2", KEY_B, &[("m1", KEY_A)]);
        let reopened = rotated.data_key("ses_1", &kid, &wrapped).unwrap();
        assert_eq!(reopened.open("x", &sealed).unwrap(), b"data");
        assert_eq!(rotated.new_data_key("ses_2").1, "m2");
        let forgotten = vault("m2", KEY_B, &[]);
        assert_eq!(
            forgotten.data_key("ses_1", &kid, &wrapped).unwrap_err(),
            VaultError::UnknownMasterKey("m1".to_owned())
        );
    }
}
