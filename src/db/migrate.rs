//! Schema migrations, embedded in the binary and applied as the owner role.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::StorageError;

/// Every migration under `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Versions of the migrations this binary carries.
pub fn known_versions() -> Vec<i64> {
    MIGRATOR.iter().map(|m| m.version).collect()
}

/// Applies pending migrations, connected as the owner role. Returns how
/// many were applied.
pub async fn run(owner: &PgConnectOptions) -> Result<usize, StorageError> {
    let mut conn = owner.connect().await?;
    let before: i64 = applied_count(&mut conn).await;
    MIGRATOR.run(&mut conn).await?;
    let after: i64 = applied_count(&mut conn).await;
    conn.close().await?;
    Ok(usize::try_from(after - before).unwrap_or(0))
}

async fn applied_count(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(conn)
        .await
        .unwrap_or(0)
}
