//! Tenant staff accounts (admin, agent, viewer).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// A staff account, without its password hash.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StaffUser {
    /// Account id.
    pub user_id: Uuid,
    /// Login email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// `admin`, `agent` or `viewer`.
    pub role: String,
    /// Created at.
    pub created_at: DateTime<Utc>,
}

/// Creates a staff account; a duplicate email within the tenant conflicts.
pub async fn create(
    tx: &mut TenantTx,
    email: &str,
    display_name: &str,
    role: &str,
    password_hash: &str,
) -> Result<StaffUser, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "INSERT INTO staff_users (customer_id, user_id, email, display_name, role, password_hash)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING user_id, email, display_name, role, created_at",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(email)
    .bind(display_name)
    .bind(role)
    .bind(password_hash)
    .fetch_one(tx.conn())
    .await?)
}

/// The tenant's staff.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<StaffUser>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT user_id, email, display_name, role, created_at FROM staff_users
         WHERE disabled_at IS NULL ORDER BY email",
    )
    .fetch_all(tx.conn())
    .await?)
}
