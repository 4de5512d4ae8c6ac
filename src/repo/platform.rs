//! Platform-level tables: operators, platform/service API keys, the
//! platform audit log. No tenant rows are reachable from here.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto::api_key::KeyScope;
use crate::db::{CustomerId, StorageError};

/// A platform or service key as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PlatformKey {
    /// Key id.
    pub key_id: Uuid,
    /// `platform` or `service`.
    pub scope: String,
    /// Label.
    pub name: String,
    /// Recognisable prefix.
    pub prefix: String,
}

/// Stores a platform or service key's hash.
pub async fn create_key(
    conn: &mut PgConnection,
    scope: KeyScope,
    name: &str,
    prefix: &str,
    hash: &[u8; 32],
) -> Result<PlatformKey, StorageError> {
    Ok(sqlx::query_as(
        "INSERT INTO platform_api_keys (key_id, scope, name, prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5) RETURNING key_id, scope, name, prefix",
    )
    .bind(Uuid::new_v4())
    .bind(scope.as_str())
    .bind(name)
    .bind(prefix)
    .bind(hash.as_slice())
    .fetch_one(conn)
    .await?)
}

/// The live platform or service key with this hash.
pub async fn find_key(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<PlatformKey>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT key_id, scope, name, prefix FROM platform_api_keys
         WHERE key_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash.as_slice())
    .fetch_optional(conn)
    .await?)
}

/// Creates a platform operator account.
pub async fn create_admin(
    conn: &mut PgConnection,
    email: &str,
    display_name: &str,
    password_hash: &str,
) -> Result<Uuid, StorageError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO platform_admins (admin_id, email, display_name, password_hash)
         VALUES ($1, $2, $3, $4) RETURNING admin_id",
    )
    .bind(Uuid::new_v4())
    .bind(email)
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(conn)
    .await?)
}

/// Appends to the platform audit log.
pub async fn audit(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    subject: Option<CustomerId>,
    details: serde_json::Value,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO platform_audit_log (actor, action, subject_customer_id, details) VALUES ($1, $2, $3, $4)",
    )
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}
