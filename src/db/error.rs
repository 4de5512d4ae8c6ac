//! The storage boundary's error type.

/// A database failure as the rest of the application sees it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The row does not exist, or belongs to another tenant (which is the
    /// same thing as far as the caller can tell).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was hit.
    #[error("already exists: {0}")]
    Conflict(String),
    /// A row was written outside the transaction's tenant, or with no tenant.
    #[error("row-level security rejected a write outside the current tenant")]
    TenantViolation,
    /// A CHECK or foreign-key rule rejected the data.
    #[error("invalid data: {0}")]
    Invalid(String),
    /// The server's role could bypass row-level security.
    #[error("refusing to run: {0}")]
    UnsafeRole(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Anything else the database or driver reported.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StorageError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => StorageError::NotFound,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // unique_violation
                Some("23505") => StorageError::Conflict(
                    db.constraint().unwrap_or("unique constraint").to_string(),
                ),
                // insufficient_privilege: RLS WITH CHECK failures land here.
                Some("42501") if db.message().contains("row-level security") => {
                    StorageError::TenantViolation
                }
                // check_violation, foreign_key_violation, not_null_violation,
                // invalid_text_representation
                Some("23514") | Some("23503") | Some("23502") | Some("22P02") => {
                    StorageError::Invalid(db.message().to_string())
                }
                _ => StorageError::Database(error),
            },
            _ => StorageError::Database(error),
        }
    }
}
