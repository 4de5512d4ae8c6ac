//! Secrets at rest: the master keyring and credential sealing, API key
//! generation and hashing, staff password hashing.

pub mod api_key;
pub mod keyring;
pub mod password;

pub use keyring::{Keyring, KeyringError, Sealed};
