//! The database boundary: pools, role safety checks, migrations, the
//! private cluster, and the only two doors to data: [`TenantTx`] for tenant
//! rows and [`directory`] for the few platform-wide lookups.
//!
//! The raw pool never leaves this module, so application code cannot run a
//! query without either a tenant context or a listed platform function.

pub mod bootstrap;
pub mod connect;
pub mod directory;
pub mod embedded;
mod error;
pub mod migrate;
mod tenant;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub use error::StorageError;
pub use tenant::{CustomerId, TenantTx};

/// Name of the role that owns the schema and runs migrations.
pub const OWNER_ROLE: &str = "switchboard_owner";
/// Name of the role the server connects as.
pub const APP_ROLE: &str = "switchboard_app";

/// The application role's connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    /// Private: every use goes through [`Db::tenant`], [`Db::platform`] or
    /// the [`directory`] functions.
    pool: PgPool,
}

/// What `/readyz` reports about the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Reachable and every migration this binary knows is applied.
    Ready,
    /// The database did not answer.
    Unreachable(String),
    /// Reachable, but migrations are missing (or the database is newer).
    MigrationsPending {
        /// Versions this binary expects but the database lacks.
        missing: Vec<i64>,
    },
}

impl Db {
    /// Connects a pool as the application role and refuses unsafe roles.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StorageError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let db = Self { pool };
        db.verify_role().await?;
        Ok(db)
    }

    /// Fails unless the connected role is the application role and could
    /// not sidestep row-level security: not a superuser, not BYPASSRLS, owns
    /// no relation, and cannot become the owner role.
    pub async fn verify_role(&self) -> Result<(), StorageError> {
        let row: (String, bool, bool, i64, bool) = sqlx::query_as(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid
                        AND c.relnamespace NOT IN ('pg_catalog'::regnamespace,
                                                   'information_schema'::regnamespace)),
                    EXISTS (SELECT 1 FROM pg_roles o WHERE o.rolname = $1
                              AND pg_has_role(r.oid, o.oid, 'MEMBER'))
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .bind(OWNER_ROLE)
        .fetch_one(&self.pool)
        .await?;
        let (name, superuser, bypass, owned, member_of_owner) = row;
        let problem = if superuser {
            Some("is a superuser")
        } else if bypass {
            Some("has BYPASSRLS")
        } else if owned > 0 {
            Some("owns tables (owners can disable row-level security)")
        } else if member_of_owner {
            Some("is a member of the owner role")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(StorageError::UnsafeRole(format!(
                "database role `{name}` {problem}; the server must connect as `{APP_ROLE}`"
            )));
        }
        Ok(())
    }

    /// Opens a transaction scoped to one tenant.
    pub async fn tenant(&self, customer_id: CustomerId) -> Result<TenantTx, StorageError> {
        TenantTx::begin(&self.pool, customer_id).await
    }

    /// Opens a transaction with no tenant context, for platform-level tables
    /// (platform admins, platform keys, platform audit). Tenant tables read
    /// as empty and reject writes in it.
    pub async fn platform(&self) -> Result<Transaction<'static, Postgres>, StorageError> {
        Ok(self.pool.begin().await?)
    }

    /// Database reachability and migration state.
    pub async fn readiness(&self) -> Readiness {
        let applied: Result<Vec<(i64,)>, sqlx::Error> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await;
        match applied {
            Err(e) => match &e {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    Readiness::MigrationsPending {
                        missing: migrate::known_versions(),
                    }
                }
                _ => Readiness::Unreachable(e.to_string()),
            },
            Ok(rows) => {
                let applied: Vec<i64> = rows.into_iter().map(|(v,)| v).collect();
                let missing: Vec<i64> = migrate::known_versions()
                    .into_iter()
                    .filter(|v| !applied.contains(v))
                    .collect();
                if missing.is_empty() {
                    Readiness::Ready
                } else {
                    Readiness::MigrationsPending { missing }
                }
            }
        }
    }

    /// Closes every pooled connection (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for the directory submodule only.
    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
