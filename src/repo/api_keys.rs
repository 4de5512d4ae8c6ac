//! The tenant's own API keys (hashes only).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// A key as listed (never the secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TenantKey {
    /// Key id.
    pub key_id: Uuid,
    /// Label.
    pub name: String,
    /// Recognisable non-secret prefix.
    pub prefix: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
    /// Revoked at, if revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a new key's hash.
pub async fn create(
    tx: &mut TenantTx,
    name: &str,
    prefix: &str,
    hash: &[u8; 32],
) -> Result<TenantKey, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "INSERT INTO tenant_api_keys (customer_id, key_id, name, prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING key_id, name, prefix, created_at, revoked_at",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(prefix)
    .bind(hash.as_slice())
    .fetch_one(tx.conn())
    .await?)
}

/// The tenant's keys.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<TenantKey>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT key_id, name, prefix, created_at, revoked_at FROM tenant_api_keys ORDER BY created_at",
    )
    .fetch_all(tx.conn())
    .await?)
}

/// Revokes a key; false when the tenant has no such live key.
pub async fn revoke(tx: &mut TenantTx, key_id: Uuid) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE tenant_api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that a key was used.
pub async fn touch(tx: &mut TenantTx, key_id: Uuid) -> Result<(), StorageError> {
    sqlx::query("UPDATE tenant_api_keys SET last_used_at = now() WHERE key_id = $1")
        .bind(key_id)
        .execute(tx.conn())
        .await?;
    Ok(())
}
