//! Industry templates (platform-wide, read-only to the application).

use serde::Serialize;
use sqlx::PgConnection;

use crate::db::StorageError;

/// A versioned industry template.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Template {
    /// `insurance`, `real_estate`, …
    pub slug: String,
    /// Version number.
    pub version: i32,
    /// Display name.
    pub name: String,
    /// Profile fields.
    pub profile_fields: serde_json::Value,
    /// Quick-bio format with `{field}` placeholders.
    pub quick_bio_format: String,
}

/// The latest version of a template, or `None` when the slug is unknown.
pub async fn latest(conn: &mut PgConnection, slug: &str) -> Result<Option<Template>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT slug, version, name, profile_fields, quick_bio_format FROM industry_templates
         WHERE slug = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(slug)
    .fetch_optional(conn)
    .await?)
}

/// Every template slug with its newest version.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Template>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (slug) slug, version, name, profile_fields, quick_bio_format
         FROM industry_templates ORDER BY slug, version DESC",
    )
    .fetch_all(conn)
    .await?)
}
