//! The tenant's sealed bring-your-own vendor credentials.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::Sealed;
use crate::db::{StorageError, TenantTx};

/// Vendors a tenant may bring keys for.
pub const PROVIDERS: &[&str] = &["twilio", "openai", "elevenlabs", "deepgram"];

/// A credential as listed: never the secret, only its last four characters.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CredentialSummary {
    /// Vendor.
    pub provider: String,
    /// Non-secret identifier (Twilio AccountSid).
    pub public_id: Option<String>,
    /// Non-secret settings (base URL, model).
    pub settings: serde_json::Value,
    /// `…abcd`.
    pub secret_hint: String,
    /// Master key version that sealed it.
    pub key_version: i32,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A credential with its sealed secret, for the code that must use it.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    /// Listing fields.
    pub summary: CredentialSummary,
    /// The sealed secret.
    pub sealed: Sealed,
}

/// Inserts or replaces the tenant's credential for `provider`.
pub async fn upsert(
    tx: &mut TenantTx,
    provider: &str,
    public_id: Option<&str>,
    settings: &serde_json::Value,
    sealed: &Sealed,
    secret_hint: &str,
) -> Result<CredentialSummary, StorageError> {
    let id = tx.customer_id();
    let version = i32::try_from(sealed.key_version)
        .map_err(|_| StorageError::Invalid("key version out of range".into()))?;
    Ok(sqlx::query_as(
        "INSERT INTO provider_credentials
             (customer_id, provider, public_id, settings, key_version, nonce, ciphertext, secret_hint)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (customer_id, provider) DO UPDATE SET
             public_id = EXCLUDED.public_id, settings = EXCLUDED.settings,
             key_version = EXCLUDED.key_version, nonce = EXCLUDED.nonce,
             ciphertext = EXCLUDED.ciphertext, secret_hint = EXCLUDED.secret_hint,
             updated_at = now()
         RETURNING provider, public_id, settings, secret_hint, key_version, updated_at",
    )
    .bind(id)
    .bind(provider)
    .bind(public_id)
    .bind(settings)
    .bind(version)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(secret_hint)
    .fetch_one(tx.conn())
    .await?)
}

/// Replaces only the sealed secret (key rotation).
pub async fn reseal(
    tx: &mut TenantTx,
    provider: &str,
    sealed: &Sealed,
) -> Result<bool, StorageError> {
    let version = i32::try_from(sealed.key_version)
        .map_err(|_| StorageError::Invalid("key version out of range".into()))?;
    let done = sqlx::query(
        "UPDATE provider_credentials SET key_version = $2, nonce = $3, ciphertext = $4, updated_at = now()
         WHERE provider = $1",
    )
    .bind(provider)
    .bind(version)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The tenant's credential for `provider`, sealed.
pub async fn get(
    tx: &mut TenantTx,
    provider: &str,
) -> Result<Option<StoredCredential>, StorageError> {
    type Row = (
        String,
        Option<String>,
        serde_json::Value,
        String,
        i32,
        DateTime<Utc>,
        Vec<u8>,
        Vec<u8>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT provider, public_id, settings, secret_hint, key_version, updated_at, nonce, ciphertext
         FROM provider_credentials WHERE provider = $1 FOR UPDATE",
    )
    .bind(provider)
    .fetch_optional(tx.conn())
    .await?;
    row.map(
        |(
            provider,
            public_id,
            settings,
            secret_hint,
            key_version,
            updated_at,
            nonce,
            ciphertext,
        )| {
            let version = u32::try_from(key_version)
                .map_err(|_| StorageError::Invalid("negative key version".into()))?;
            Ok(StoredCredential {
                summary: CredentialSummary {
                    provider,
                    public_id,
                    settings,
                    secret_hint,
                    key_version,
                    updated_at,
                },
                sealed: Sealed {
                    key_version: version,
                    nonce,
                    ciphertext,
                },
            })
        },
    )
    .transpose()
}

/// The tenant's credentials, secrets omitted.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<CredentialSummary>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT provider, public_id, settings, secret_hint, key_version, updated_at
         FROM provider_credentials ORDER BY provider",
    )
    .fetch_all(tx.conn())
    .await?)
}
