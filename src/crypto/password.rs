//! Staff password hashing with Argon2id (PHC strings).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use secrecy::{ExposeSecret, SecretString};

/// Minimum accepted password length.
pub const MIN_PASSWORD_LEN: usize = 12;

/// Why a password was not accepted or could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_LEN`].
    #[error("password must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    /// The hasher failed.
    #[error("password hashing failed")]
    Hash,
}

/// Hashes a password into a PHC string.
pub fn hash(password: &SecretString) -> Result<String, PasswordError> {
    if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Checks a password against a stored PHC string.
pub fn verify(password: &SecretString, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.expose_secret().as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_short_passwords_are_refused() {
        let good = SecretString::from("correct horse battery");
        let phc = hash(&good).expect("hash");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(&good, &phc));
        assert!(!verify(&SecretString::from("wrong horse battery"), &phc));
        assert!(matches!(
            hash(&SecretString::from("short")),
            Err(PasswordError::TooShort)
        ));
    }
}
