//! `TenantTx`: a transaction bound to one tenant, the only door to tenant rows.

use std::fmt;
use std::str::FromStr;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::StorageError;

/// A tenant's identifier (`customers.customer_id`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct CustomerId(pub Uuid);

impl CustomerId {
    /// A fresh random id for a new tenant.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for CustomerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for CustomerId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim()).map(Self)
    }
}

/// A database transaction in which `app.customer_id` is set
/// transaction-locally (`set_config(…, true)`), so every row-level security
/// policy admits exactly this tenant's rows. Repository functions take it as
/// their executor. Dropping it without [`TenantTx::commit`] rolls back, and
/// the setting dies with the transaction, so a pooled connection never
/// carries one tenant's context into another use.
pub struct TenantTx {
    /// The open transaction; its connection goes back to the pool on end.
    tx: Transaction<'static, Postgres>,
    /// The tenant the transaction was opened for.
    customer_id: CustomerId,
}

impl TenantTx {
    pub(super) async fn begin(
        pool: &PgPool,
        customer_id: CustomerId,
    ) -> Result<Self, StorageError> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('app.customer_id', $1, true)")
            .bind(customer_id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx, customer_id })
    }

    /// The tenant this transaction is scoped to.
    pub fn customer_id(&self) -> CustomerId {
        self.customer_id
    }

    /// The connection to run queries on. Row-level security limits every
    /// statement to [`TenantTx::customer_id`].
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), StorageError> {
        Ok(self.tx.commit().await?)
    }

    /// Rolls the transaction back explicitly.
    pub async fn rollback(self) -> Result<(), StorageError> {
        Ok(self.tx.rollback().await?)
    }
}
