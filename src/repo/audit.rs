//! The tenant's audit log.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{StorageError, TenantTx};

/// One audit entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    /// Monotonic id.
    pub audit_id: i64,
    /// Who acted: `cli`, `platform-key:<prefix>`, `staff:<email>`.
    pub actor: String,
    /// What happened: `tenant.create`, `number.assign`, …
    pub action: String,
    /// What it happened to.
    pub target: Option<String>,
    /// Extra detail (never secrets).
    pub details: serde_json::Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// Appends an entry.
pub async fn record(
    tx: &mut TenantTx,
    actor: &str,
    action: &str,
    target: Option<&str>,
    details: serde_json::Value,
) -> Result<(), StorageError> {
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO audit_log (customer_id, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(details)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The newest `limit` entries.
pub async fn list(tx: &mut TenantTx, limit: i64) -> Result<Vec<AuditEntry>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT audit_id, actor, action, target, details, at FROM audit_log
         ORDER BY audit_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}
