//! The platform directory: the only cross-tenant reads in the application,
//! and the job queue's cross-tenant claim.
//!
//! Each function calls one `SECURITY DEFINER` SQL function listed in a
//! migration and in the catalog test; each returns identifiers and
//! counters, never tenant content. Every use is traced with the
//! `switchboard::directory` target so the path can be audited.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{CustomerId, Db, StorageError};

/// Where a dialed number rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRoute {
    /// The tenant that owns the number.
    pub customer_id: CustomerId,
    /// The tenant's status (`active`, `suspended`, `closed`).
    pub status: String,
    /// The Twilio account that owns the number, `None` for the platform's.
    pub twilio_account_sid: Option<String>,
}

/// One line of the platform's tenant list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DirectoryEntry {
    /// Tenant id.
    pub customer_id: CustomerId,
    /// Tenant slug.
    pub slug: String,
    /// Tenant display name.
    pub name: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    /// Plan tier name.
    pub plan_tier: String,
    /// Phone numbers assigned.
    pub numbers: i64,
    /// Calls this month.
    pub calls_this_month: i32,
    /// Call seconds this month.
    pub call_seconds_this_month: i64,
    /// When the tenant was created.
    pub created_at: DateTime<Utc>,
}

/// Which tenant (if any) a dialed E.164 number belongs to.
pub async fn resolve_number(db: &Db, e164: &str) -> Result<Option<NumberRoute>, StorageError> {
    let row: Option<(Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT customer_id, status, twilio_account_sid FROM platform_resolve_number($1)",
    )
    .bind(e164)
    .fetch_optional(db.pool())
    .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "resolve_number", found = row.is_some());
    Ok(row.map(|(id, status, twilio_account_sid)| NumberRoute {
        customer_id: CustomerId(id),
        status,
        twilio_account_sid,
    }))
}

/// The tenant id for a slug.
pub async fn customer_by_slug(db: &Db, slug: &str) -> Result<Option<CustomerId>, StorageError> {
    let id: Option<Uuid> = sqlx::query_scalar("SELECT platform_customer_by_slug($1)")
        .bind(slug)
        .fetch_one(db.pool())
        .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "customer_by_slug", found = id.is_some());
    Ok(id.map(CustomerId))
}

/// Every tenant with this month's headline usage.
pub async fn customer_directory(
    db: &Db,
    month: NaiveDate,
) -> Result<Vec<DirectoryEntry>, StorageError> {
    type Row = (
        Uuid,
        String,
        String,
        String,
        String,
        i64,
        i32,
        i64,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT customer_id, slug, name, status, plan_tier, numbers, calls, call_seconds, created_at
         FROM platform_customer_directory($1)",
    )
    .bind(month)
    .fetch_all(db.pool())
    .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "customer_directory", rows = rows.len());
    Ok(rows
        .into_iter()
        .map(
            |(id, slug, name, status, plan_tier, numbers, calls, secs, created_at)| {
                DirectoryEntry {
                    customer_id: CustomerId(id),
                    slug,
                    name,
                    status,
                    plan_tier,
                    numbers,
                    calls_this_month: calls,
                    call_seconds_this_month: secs,
                    created_at,
                }
            },
        )
        .collect())
}

/// The tenant and key id of an unrevoked tenant API key, by the key's SHA-256.
pub async fn authenticate_tenant_key(
    db: &Db,
    key_hash: &[u8; 32],
) -> Result<Option<(CustomerId, Uuid)>, StorageError> {
    let row: Option<(Uuid, Uuid)> =
        sqlx::query_as("SELECT customer_id, key_id FROM platform_authenticate_tenant_key($1)")
            .bind(key_hash.as_slice())
            .fetch_optional(db.pool())
            .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "authenticate_tenant_key", found = row.is_some());
    Ok(row.map(|(c, k)| (CustomerId(c), k)))
}

/// (tenant, provider) pairs whose credential is sealed under a key version
/// other than `current_version`.
pub async fn credentials_to_rotate(
    db: &Db,
    current_version: u32,
) -> Result<Vec<(CustomerId, String)>, StorageError> {
    let version = i32::try_from(current_version)
        .map_err(|_| StorageError::Invalid("key version out of range".into()))?;
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT customer_id, provider FROM platform_credentials_to_rotate($1)")
            .bind(version)
            .fetch_all(db.pool())
            .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "credentials_to_rotate", rows = rows.len());
    Ok(rows.into_iter().map(|(c, p)| (CustomerId(c), p)).collect())
}

/// Claims up to `limit` due jobs of the given kinds, across tenants, and
/// leases each for `lease` (see `platform_claim_due_jobs` in the jobs
/// migration). Returns (tenant, job id) pairs only: the worker reads and
/// settles each job inside that tenant's [`super::TenantTx`].
pub async fn claim_due_jobs(
    db: &Db,
    kinds: &[String],
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<(CustomerId, Uuid)>, StorageError> {
    if kinds.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT customer_id, job_id FROM platform_claim_due_jobs($1, $2, $3)")
            .bind(kinds)
            .bind(lease.as_secs_f64())
            .bind(limit)
            .fetch_all(db.pool())
            .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "claim_due_jobs", rows = rows.len());
    Ok(rows.into_iter().map(|(c, j)| (CustomerId(c), j)).collect())
}

/// Tenants that have calls still open (ringing or in progress with no end
/// time), for startup crash recovery.
pub async fn customers_with_open_calls(db: &Db) -> Result<Vec<CustomerId>, StorageError> {
    let rows: Vec<Uuid> =
        sqlx::query_scalar("SELECT customer_id FROM platform_customers_with_open_calls()")
            .fetch_all(db.pool())
            .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "customers_with_open_calls", rows = rows.len());
    Ok(rows.into_iter().map(CustomerId).collect())
}

/// Tenants with a transcript retention period, for the periodic retention
/// job (see `platform_customers_with_retention` in the post-call
/// migration). The period itself is read inside each tenant's transaction.
pub async fn customers_with_retention(db: &Db) -> Result<Vec<CustomerId>, StorageError> {
    let rows: Vec<Uuid> =
        sqlx::query_scalar("SELECT customer_id FROM platform_customers_with_retention()")
            .fetch_all(db.pool())
            .await?;
    tracing::debug!(target: "switchboard::directory", lookup = "customers_with_retention", rows = rows.len());
    Ok(rows.into_iter().map(CustomerId).collect())
}
