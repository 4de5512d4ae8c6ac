//! The tenant's own `customers` row: identity, plan, agent persona.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{CustomerId, StorageError, TenantTx};

/// A tenant as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Customer {
    /// Tenant id.
    pub customer_id: CustomerId,
    /// Short unique name used in URLs and the CLI.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `active`, `suspended` or `closed`.
    pub status: String,
    /// Plan tier name.
    pub plan_tier: String,
    /// Calls allowed per month (`None` = unlimited).
    pub monthly_call_limit: Option<i32>,
    /// Minutes allowed per month (`None` = unlimited).
    pub monthly_minute_limit: Option<i32>,
    /// Concurrent live calls allowed.
    pub max_concurrent_calls: i32,
    /// The receptionist's name ("Ava").
    pub agent_name: String,
    /// What the agent says when it picks up.
    pub greeting: String,
    /// TTS voice id.
    pub voice_id: Option<String>,
    /// Brand voice and personality settings.
    pub personality: serde_json::Value,
    /// Topics the agent must not discuss.
    pub prohibited_topics: Vec<String>,
    /// Industry template slug.
    pub template_slug: String,
    /// Industry template version.
    pub template_version: i32,
    /// IANA time zone for the agent's sense of "now".
    pub timezone: String,
    /// Where DTMF 0 / "talk to a human" transfers.
    pub transfer_number: Option<String>,
    /// Per-tenant provider choices.
    pub provider_settings: serde_json::Value,
    /// Transcript retention (`None` = keep).
    pub transcript_retention_days: Option<i32>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a new tenant starts with.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// Unique slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Plan tier.
    pub plan_tier: String,
    /// Monthly call limit.
    pub monthly_call_limit: Option<i32>,
    /// Agent name.
    pub agent_name: String,
    /// Greeting.
    pub greeting: String,
    /// Voice id.
    pub voice_id: Option<String>,
    /// Personality JSON.
    pub personality: serde_json::Value,
    /// Prohibited topics.
    pub prohibited_topics: Vec<String>,
    /// Template slug.
    pub template_slug: String,
    /// Template version.
    pub template_version: i32,
    /// Time zone.
    pub timezone: String,
    /// Transfer number.
    pub transfer_number: Option<String>,
}

const COLUMNS: &str = "customer_id, slug, name, status, plan_tier, monthly_call_limit,
    monthly_minute_limit, max_concurrent_calls, agent_name, greeting, voice_id, personality,
    prohibited_topics, template_slug, template_version, timezone, transfer_number,
    provider_settings, transcript_retention_days, created_at, updated_at";

/// Inserts the transaction's tenant row.
pub async fn create(tx: &mut TenantTx, new: &NewCustomer) -> Result<Customer, StorageError> {
    let id = tx.customer_id();
    let sql = format!(
        "INSERT INTO customers (customer_id, slug, name, plan_tier, monthly_call_limit, agent_name,
             greeting, voice_id, personality, prohibited_topics, template_slug, template_version,
             timezone, transfer_number)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(&new.slug)
        .bind(&new.name)
        .bind(&new.plan_tier)
        .bind(new.monthly_call_limit)
        .bind(&new.agent_name)
        .bind(&new.greeting)
        .bind(&new.voice_id)
        .bind(&new.personality)
        .bind(&new.prohibited_topics)
        .bind(&new.template_slug)
        .bind(new.template_version)
        .bind(&new.timezone)
        .bind(&new.transfer_number)
        .fetch_one(tx.conn())
        .await?)
}

/// The transaction's tenant.
pub async fn get(tx: &mut TenantTx) -> Result<Customer, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM customers");
    sqlx::query_as(&sql)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(StorageError::NotFound)
}

/// Sets the tenant's status; returns the previous one.
/// Replaces the tenant's `provider_settings`; returns the previous value.
pub async fn set_provider_settings(
    tx: &mut TenantTx,
    settings: &serde_json::Value,
) -> Result<serde_json::Value, StorageError> {
    let previous: Option<serde_json::Value> = sqlx::query_scalar(
        "UPDATE customers c SET provider_settings = $1, updated_at = now()
         FROM (SELECT customer_id, provider_settings FROM customers FOR UPDATE) old
         WHERE c.customer_id = old.customer_id
         RETURNING old.provider_settings",
    )
    .bind(settings)
    .fetch_optional(tx.conn())
    .await?;
    previous.ok_or(StorageError::NotFound)
}

/// Sets the tenant's status; returns the previous one.
pub async fn set_status(tx: &mut TenantTx, status: &str) -> Result<String, StorageError> {
    let previous: Option<String> = sqlx::query_scalar(
        "UPDATE customers c SET status = $1, updated_at = now()
         FROM (SELECT customer_id, status FROM customers FOR UPDATE) old
         WHERE c.customer_id = old.customer_id
         RETURNING old.status",
    )
    .bind(status)
    .fetch_optional(tx.conn())
    .await?;
    previous.ok_or(StorageError::NotFound)
}
