//! The master keyring and XChaCha20-Poly1305 sealing of provider credentials.
//!
//! Associated data binds each ciphertext to its tenant, provider and key
//! version, so a sealed secret moved to another row does not open.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

use crate::configuration::{MasterKey, SecretSettings};
use crate::db::CustomerId;

/// A sealed secret as stored in `provider_credentials`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Which master key sealed it.
    pub key_version: u32,
    /// The 24-byte random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext with the Poly1305 tag appended.
    pub ciphertext: Vec<u8>,
}

/// Why a secret could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The secret was sealed under a key version we do not hold.
    #[error("no master key with version {0} is configured (set SWITCHBOARD_PREVIOUS_MASTER_KEYS)")]
    UnknownVersion(u32),
    /// Wrong key, tampered data, or data moved between rows.
    #[error("sealed secret failed authentication")]
    Tampered,
    /// The generated key file could not be read or written.
    #[error("master key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The current master key plus older ones kept for rotation.
#[derive(Clone)]
pub struct Keyring {
    /// Version stamped on everything sealed now.
    current_version: u32,
    /// Keys by version, the current one included.
    keys: BTreeMap<u32, MasterKey>,
}

impl Keyring {
    /// Builds a keyring from settings; without a configured master key it
    /// uses `<data_dir>/master.key`, creating it (mode 0600) on first use.
    pub fn load(settings: &SecretSettings, data_dir: &Path) -> Result<Self, KeyringError> {
        let current = match &settings.master_key {
            Some(key) => key.clone(),
            None => load_or_create_key_file(&data_dir.join("master.key"))?,
        };
        Ok(Self::new(
            settings.master_key_version,
            current,
            settings.previous_master_keys.clone(),
        ))
    }

    /// Builds a keyring from explicit keys.
    pub fn new(
        current_version: u32,
        current: MasterKey,
        previous: BTreeMap<u32, MasterKey>,
    ) -> Self {
        let mut keys = previous;
        keys.insert(current_version, current);
        Self {
            current_version,
            keys,
        }
    }

    /// The version new seals carry.
    pub fn current_version(&self) -> u32 {
        self.current_version
    }

    /// Seals `secret` for (customer, provider) under the current key.
    pub fn seal(
        &self,
        customer: CustomerId,
        provider: &str,
        secret: &SecretString,
    ) -> Result<Sealed, KeyringError> {
        let cipher = self.cipher(self.current_version)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = associated_data(customer, provider, self.current_version);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Tampered)?;
        Ok(Sealed {
            key_version: self.current_version,
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a secret sealed for (customer, provider).
    pub fn open(
        &self,
        customer: CustomerId,
        provider: &str,
        sealed: &Sealed,
    ) -> Result<SecretString, KeyringError> {
        let cipher = self.cipher(sealed.key_version)?;
        if sealed.nonce.len() != 24 {
            return Err(KeyringError::Tampered);
        }
        let nonce = XNonce::from_slice(&sealed.nonce);
        let aad = associated_data(customer, provider, sealed.key_version);
        let plain = cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeyringError::Tampered)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| KeyringError::Tampered)
    }

    /// A 32-byte key for one purpose, derived from the current master key:
    /// HMAC-SHA256(master key, `switchboard/subkey/v1|` + `label`). Distinct
    /// labels give independent keys, none of which reveals the master key.
    /// Keys derived after a rotation differ, so only short-lived values
    /// (call tokens) should depend on them.
    pub fn derive_subkey(&self, label: &str) -> Result<[u8; 32], KeyringError> {
        use hmac::{Hmac, Mac};
        let key = self
            .keys
            .get(&self.current_version)
            .ok_or(KeyringError::UnknownVersion(self.current_version))?;
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.expose())
            .map_err(|_| KeyringError::Tampered)?;
        mac.update(b"switchboard/subkey/v1|");
        mac.update(label.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    fn cipher(&self, version: u32) -> Result<XChaCha20Poly1305, KeyringError> {
        let key = self
            .keys
            .get(&version)
            .ok_or(KeyringError::UnknownVersion(version))?;
        Ok(XChaCha20Poly1305::new(key.expose().into()))
    }
}

fn associated_data(customer: CustomerId, provider: &str, version: u32) -> String {
    format!("switchboard/provider-credential/v1|{customer}|{provider}|{version}")
}

fn load_or_create_key_file(path: &Path) -> Result<MasterKey, KeyringError> {
    let err = |message: String| KeyringError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => MasterKey::from_base64(&text).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
            }
            let key = XChaCha20Poly1305::generate_key(&mut OsRng);
            let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            file.write_all(text.as_bytes())
                .map_err(|e| err(e.to_string()))?;
            tracing::warn!(path = %path.display(), "generated a local master key; set SWITCHBOARD_MASTER_KEY in production");
            let bytes: [u8; 32] = key.into();
            Ok(MasterKey::from_bytes(bytes))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(version: u32, byte: u8) -> Keyring {
        Keyring::new(version, MasterKey::from_bytes([byte; 32]), BTreeMap::new())
    }

    #[test]
    fn seal_then_open_round_trips() {
        let ring = ring(1, 9);
        let customer = CustomerId::new();
        let sealed = ring
            .seal(customer, "openai", &SecretString::from("sk-test-123"))
            .expect("seal");
        assert_eq!(sealed.key_version, 1);
        assert_eq!(sealed.nonce.len(), 24);
        let opened = ring.open(customer, "openai", &sealed).expect("open");
        assert_eq!(opened.expose_secret(), "sk-test-123");
    }

    #[test]
    fn associated_data_binds_tenant_provider_and_version() {
        let ring = ring(1, 9);
        let customer = CustomerId::new();
        let sealed = ring
            .seal(customer, "openai", &SecretString::from("sk"))
            .expect("seal");
        assert!(ring.open(CustomerId::new(), "openai", &sealed).is_err());
        assert!(ring.open(customer, "deepgram", &sealed).is_err());
        let mut relabelled = sealed.clone();
        relabelled.key_version = 2;
        assert!(matches!(
            ring.open(customer, "openai", &relabelled),
            Err(KeyringError::UnknownVersion(2))
        ));
        let mut flipped = sealed;
        flipped.ciphertext[0] ^= 1;
        assert!(ring.open(customer, "openai", &flipped).is_err());
    }

    #[test]
    fn subkeys_are_separated_by_label_and_master_key() {
        let a = ring(1, 9)
            .derive_subkey("twilio-call-token")
            .expect("derive");
        assert_eq!(
            a,
            ring(1, 9)
                .derive_subkey("twilio-call-token")
                .expect("derive")
        );
        assert_ne!(a, ring(1, 9).derive_subkey("other").expect("derive"));
        assert_ne!(
            a,
            ring(1, 8)
                .derive_subkey("twilio-call-token")
                .expect("derive")
        );
        assert_ne!(a, [9u8; 32]);
    }

    #[test]
    fn old_versions_open_after_rotation() {
        let old = ring(1, 1);
        let customer = CustomerId::new();
        let sealed = old
            .seal(customer, "twilio", &SecretString::from("tok"))
            .expect("seal");
        let mut previous = BTreeMap::new();
        previous.insert(1, MasterKey::from_bytes([1; 32]));
        let new = Keyring::new(2, MasterKey::from_bytes([2; 32]), previous);
        assert_eq!(
            new.open(customer, "twilio", &sealed)
                .expect("open")
                .expose_secret(),
            "tok"
        );
        assert_eq!(
            new.seal(customer, "twilio", &SecretString::from("tok"))
                .expect("seal")
                .key_version,
            2
        );
    }
}
