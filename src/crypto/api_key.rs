//! API keys: `sbk_<scope>_<40 random base62 chars>`, shown once, stored as SHA-256.

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    /// Platform operators: the `/platform/api` surface.
    Platform,
    /// Internal services: may name any customer on tenant APIs.
    Service,
    /// One tenant's own integrations.
    Tenant,
}

impl KeyScope {
    fn tag(self) -> &'static str {
        match self {
            KeyScope::Platform => "p",
            KeyScope::Service => "s",
            KeyScope::Tenant => "t",
        }
    }

    /// The scope's name as stored in `platform_api_keys.scope`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Platform => "platform",
            KeyScope::Service => "service",
            KeyScope::Tenant => "tenant",
        }
    }
}

/// A freshly generated key: the full secret (shown once) and what we store.
pub struct NewKey {
    /// The whole key, to print once and forget.
    pub secret: SecretString,
    /// A short non-secret prefix to recognise the key in listings.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 40;

/// Generates a key of `scope` (about 238 bits of entropy).
pub fn generate(scope: KeyScope) -> NewKey {
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..RANDOM_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    let key = format!("sbk_{}_{random}", scope.tag());
    let prefix = key[..12].to_string();
    let hash = hash(&key);
    NewKey {
        secret: SecretString::from(key),
        prefix,
        hash,
    }
}

/// The scope a presented key claims, if it is well-formed.
pub fn scope_of(key: &SecretString) -> Option<KeyScope> {
    let text = key.expose_secret();
    let rest = text.strip_prefix("sbk_")?;
    let (tag, random) = rest.split_once('_')?;
    if random.len() != RANDOM_LEN || !random.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match tag {
        "p" => Some(KeyScope::Platform),
        "s" => Some(KeyScope::Service),
        "t" => Some(KeyScope::Tenant),
        _ => None,
    }
}

/// SHA-256 of a key. Keys are long random strings, so a fast hash is the
/// right tool (no dictionary to defend against).
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_stably() {
        for scope in [KeyScope::Platform, KeyScope::Service, KeyScope::Tenant] {
            let key = generate(scope);
            assert_eq!(scope_of(&key.secret), Some(scope));
            assert_eq!(hash(key.secret.expose_secret()), key.hash);
            assert!(key.secret.expose_secret().starts_with(&key.prefix));
        }
        assert_eq!(scope_of(&SecretString::from("sbk_t_short")), None);
        assert_eq!(scope_of(&SecretString::from("Bearer nonsense")), None);
    }
}
