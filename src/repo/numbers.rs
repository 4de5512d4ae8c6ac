//! The tenant's phone numbers.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{StorageError, TenantTx};

/// A number assigned to the tenant.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct PhoneNumber {
    /// E.164 number.
    pub e164: String,
    /// Free-form label ("main line").
    pub label: Option<String>,
    /// Owning Twilio account when not the platform's.
    pub twilio_account_sid: Option<String>,
    /// Assigned at.
    pub created_at: DateTime<Utc>,
}

/// Assigns `e164` to the tenant. A number held by any tenant is a conflict.
pub async fn assign(
    tx: &mut TenantTx,
    e164: &str,
    label: Option<&str>,
    twilio_account_sid: Option<&str>,
) -> Result<PhoneNumber, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "INSERT INTO phone_numbers (customer_id, e164, label, twilio_account_sid)
         VALUES ($1, $2, $3, $4)
         RETURNING e164, label, twilio_account_sid, created_at",
    )
    .bind(id)
    .bind(e164)
    .bind(label)
    .bind(twilio_account_sid)
    .fetch_one(tx.conn())
    .await?)
}

/// Releases a number; false when the tenant does not hold it.
pub async fn release(tx: &mut TenantTx, e164: &str) -> Result<bool, StorageError> {
    let done = sqlx::query("DELETE FROM phone_numbers WHERE e164 = $1")
        .bind(e164)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The tenant's numbers.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<PhoneNumber>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT e164, label, twilio_account_sid, created_at FROM phone_numbers ORDER BY e164",
    )
    .fetch_all(tx.conn())
    .await?)
}
