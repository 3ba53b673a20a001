//! Envelope encryption of biometric data: every session gets its own AES-256 data key, which is
//! stored only wrapped (AES-256-GCM) by a master key named by its key id. Media is sealed with the
//! data key and bound to the row it belongs to, so a sealed image cannot be moved to another
//! session or role. Destroying a session's wrapped key (redaction) makes its media unreadable at
//! once, in backups too.

use std::collections::HashMap;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::{MediaConfig, Secret, aes_key};

/// Why data could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("no master key {0:?} is configured (media.master_key, media.retired_master_keys)")]
    UnknownMasterKey(String),
    #[error("the sealed data is damaged or was sealed for something else")]
    Damaged,
    #[error("the operating system's random number generator failed")]
    NoRandomness,
    /// Beyond GCM's 64 GiB limit, far above any upload cap.
    #[error("the data is too large to seal")]
    TooLarge,
}

/// An AES-256-GCM key. ring's implementation is used for its speed on megabyte images (AES-NI
/// with carry-less multiplication, and VAES where the CPU has it); sealed data is
/// `nonce || ciphertext || tag`, the layout every earlier version wrote.
#[derive(Clone)]
struct Cipher(LessSafeKey);

impl Cipher {
    fn new(key: &[u8; 32]) -> Self {
        // AES-256 takes any 32 bytes, so the key is never refused.
        Self(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).unwrap_or_else(|_| unreachable!()),
        ))
    }

    /// `plaintext` sealed for `context` with a fresh random nonce.
    fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        let mut nonce = [0; NONCE_LEN];
        random(&mut nonce)?;
        self.seal_with_nonce(nonce, context, plaintext)
    }

    /// The sealed form is built in one buffer, encrypted where it lies: a megabyte image is
    /// copied once.
    fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        context: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let tag_len = AES_256_GCM.tag_len();
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + tag_len);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| VaultError::TooLarge)?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(sealed)
    }

    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        let nonce: [u8; NONCE_LEN] = sealed
            .get(..NONCE_LEN)
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or(VaultError::Damaged)?;
        let mut plaintext = sealed[NONCE_LEN..].to_vec();
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut plaintext,
            )
            .map_err(|_| VaultError::Damaged)?
            .len();
        plaintext.truncate(len);
        Ok(plaintext)
    }
}

fn random(bytes: &mut [u8]) -> Result<(), VaultError> {
    SystemRandom::new()
        .fill(bytes)
        .map_err(|_| VaultError::NoRandomness)
}

/// A session's data key, in memory only while media is sealed or opened.
pub struct DataKey(Cipher);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(***)")
    }
}

impl DataKey {
    /// `plaintext` sealed for `context` (what it is and whose).
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.0.seal(context, plaintext)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.0.open(context, sealed)
    }
}

/// The master keys: the current one wraps, every one unwraps.
#[derive(Clone)]
pub struct Vault {
    current: String,
    keys: HashMap<String, Cipher>,
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
        keys.insert(
            config.master_kid.clone(),
            Cipher::new(&aes_key("media.master_key", master_key)?),
        );
        for retired in &config.retired_master_keys {
            keys.insert(
                retired.kid.clone(),
                Cipher::new(&aes_key("media.retired_master_keys", &retired.key)?),
            );
        }
        Ok(Self {
            current: config.master_kid.clone(),
            keys,
        })
    }

    fn current(&self) -> &Cipher {
        // `new` inserts the current key, and nothing removes keys.
        &self.keys[&self.current]
    }

    /// A fresh data key for `session_id`, and its wrapped form with the wrapping key's id.
    pub fn new_data_key(&self, session_id: &str) -> Result<(DataKey, String, Vec<u8>), VaultError> {
        let mut key = [0; 32];
        random(&mut key)?;
        let wrapped = self.current().seal(&wrap_context(session_id), &key)?;
        Ok((DataKey(Cipher::new(&key)), self.current.clone(), wrapped))
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
        let bytes: [u8; 32] = master
            .open(&wrap_context(session_id), wrapped)?
            .try_into()
            .map_err(|_| VaultError::Damaged)?;
        Ok(DataKey(Cipher::new(&bytes)))
    }

    /// Seals a small secret of this deployment (a webhook signing secret) under the current
    /// master key; returns the key id with it.
    pub fn seal_secret(
        &self,
        context: &str,
        secret: &[u8],
    ) -> Result<(String, Vec<u8>), VaultError> {
        Ok((self.current.clone(), self.current().seal(context, secret)?))
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
        master.open(context, sealed)
    }
}

fn wrap_context(session_id: &str) -> String {
    format!("idyntra data key {session_id}")
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
        let (key, kid, wrapped) = vault.new_data_key("ses_1").unwrap();
        let sealed = key.seal("ses_1/selfie/0", b"jpeg bytes").unwrap();
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
        let (key, kid, wrapped) = old.new_data_key("ses_1").unwrap();
        let sealed = key.seal("x", b"data").unwrap();
        let rotated = vault("m2", KEY_B, &[("m1", KEY_A)]);
        let reopened = rotated.data_key("ses_1", &kid, &wrapped).unwrap();
        assert_eq!(reopened.open("x", &sealed).unwrap(), b"data");
        assert_eq!(rotated.new_data_key("ses_2").unwrap().1, "m2");
        let forgotten = vault("m2", KEY_B, &[]);
        assert_eq!(
            forgotten.data_key("ses_1", &kid, &wrapped).unwrap_err(),
            VaultError::UnknownMasterKey("m1".to_owned())
        );
    }

    /// Sealed data stays readable across implementations: this is standard AES-256-GCM over
    /// `nonce || ciphertext || tag`, the layout the `aes-gcm` crate wrote before. The vector comes
    /// from another implementation, Python's `cryptography`
    /// (`AESGCM(key).encrypt(nonce, b"jpeg bytes", b"ses_1/selfie/0")`).
    #[test]
    fn sealing_matches_a_known_answer_and_opens_what_earlier_versions_sealed() {
        const SEALED: &str =
            "a0a1a2a3a4a5a6a7a8a9aaab8c68194a65a97bcb0716b7272ee60ccd11ae48368952bc7917ca";
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let cipher = Cipher::new(&key);
        let sealed = cipher
            .seal_with_nonce(nonce, "ses_1/selfie/0", b"jpeg bytes")
            .unwrap();
        assert_eq!(hex::encode(&sealed), SEALED);
        let earlier = hex::decode(SEALED).unwrap();
        assert_eq!(
            cipher.open("ses_1/selfie/0", &earlier).unwrap(),
            b"jpeg bytes"
        );
        // A fresh nonce each time: the same image never seals to the same bytes.
        let data_key = DataKey(cipher);
        assert_ne!(
            data_key.seal("c", b"same").unwrap(),
            data_key.seal("c", b"same").unwrap()
        );
    }
}
