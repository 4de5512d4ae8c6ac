//! Caller profiles, one per (tenant, caller number).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{StorageError, TenantTx};

/// A caller as the tenant knows them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct CallerProfile {
    /// Caller's E.164 number.
    pub user_id: String,
    /// Name, when known.
    pub display_name: Option<String>,
    /// Template variables.
    pub fields: serde_json::Value,
    /// Rendered one-line bio.
    pub quick_bio: Option<String>,
    /// Calls so far.
    pub call_count: i32,
    /// First call.
    pub first_call_at: Option<DateTime<Utc>>,
    /// Latest call.
    pub last_call_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "user_id, display_name, fields, quick_bio, call_count, first_call_at, last_call_at";

/// Creates the profile or merges `fields` into it (new keys win).
pub async fn upsert(
    tx: &mut TenantTx,
    user_id: &str,
    display_name: Option<&str>,
    fields: &serde_json::Value,
) -> Result<CallerProfile, StorageError> {
    let id = tx.customer_id();
    let sql = format!(
        "INSERT INTO caller_profiles AS p (customer_id, user_id, display_name, fields)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (customer_id, user_id) DO UPDATE SET
             display_name = coalesce(EXCLUDED.display_name, p.display_name),
             fields = p.fields || EXCLUDED.fields,
             updated_at = now()
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(user_id)
        .bind(display_name)
        .bind(fields)
        .fetch_one(tx.conn())
        .await?)
}

/// Records a call from this caller (creating the profile if needed).
pub async fn record_call(
    tx: &mut TenantTx,
    user_id: &str,
    at: DateTime<Utc>,
) -> Result<CallerProfile, StorageError> {
    let id = tx.customer_id();
    let sql = format!(
        "INSERT INTO caller_profiles AS p (customer_id, user_id, call_count, first_call_at, last_call_at)
         VALUES ($1, $2, 1, $3, $3)
         ON CONFLICT (customer_id, user_id) DO UPDATE SET
             call_count = p.call_count + 1,
             first_call_at = coalesce(p.first_call_at, EXCLUDED.first_call_at),
             last_call_at = greatest(p.last_call_at, EXCLUDED.last_call_at),
             updated_at = now()
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(user_id)
        .bind(at)
        .fetch_one(tx.conn())
        .await?)
}

/// One caller's profile.
pub async fn get(tx: &mut TenantTx, user_id: &str) -> Result<Option<CallerProfile>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM caller_profiles WHERE user_id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(user_id)
        .fetch_optional(tx.conn())
        .await?)
}

/// Most recent callers first.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<CallerProfile>, StorageError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM caller_profiles ORDER BY last_call_at DESC NULLS LAST, user_id LIMIT $1"
    );
    Ok(sqlx::query_as(&sql)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?)
}

/// Removes a caller's profile (facts, memories and averages cascade).
pub async fn delete(tx: &mut TenantTx, user_id: &str) -> Result<bool, StorageError> {
    let done = sqlx::query("DELETE FROM caller_profiles WHERE user_id = $1")
        .bind(user_id)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}
