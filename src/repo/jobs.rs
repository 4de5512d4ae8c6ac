//! Durable background jobs (`jobs` table), seen from inside one tenant.
//!
//! Claiming due jobs across tenants is the directory's
//! [`crate::db::directory::claim_due_jobs`]; everything here runs in the
//! job's own tenant transaction. The settling functions are fenced by the
//! attempt number the worker claimed: a worker whose lease expired and whose
//! job was claimed again cannot overwrite the newer attempt's outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// A job as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    /// Our id.
    pub job_id: Uuid,
    /// Which handler runs it (`post_call`, …).
    pub kind: String,
    /// What makes enqueueing idempotent (e.g. the call sid).
    pub idempotency_key: String,
    /// The handler's input.
    pub payload: Value,
    /// `queued`, `running`, `done` or `dead`.
    pub status: String,
    /// Runs started so far (a claim counts one).
    pub attempts: i32,
    /// After this many failed runs the job is dead.
    pub max_attempts: i32,
    /// When it is due next.
    pub run_at: DateTime<Utc>,
    /// While running: when the worker's lease ends.
    pub locked_until: Option<DateTime<Utc>>,
    /// The most recent failure.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the existing one when the key was already used).
    pub job_id: Uuid,
    /// False when a job with the same kind and key already existed: nothing
    /// changed.
    pub created: bool,
}

const COLUMNS: &str = "job_id, kind, idempotency_key, payload, status, attempts, max_attempts,
    run_at, locked_until, last_error, created_at, updated_at";

/// Enqueues a job due now. Idempotent per (kind, key): a second enqueue with
/// the same key, whatever its state (even done or dead), changes nothing and
/// returns the existing job's id.
pub async fn enqueue(
    tx: &mut TenantTx,
    kind: &str,
    idempotency_key: &str,
    payload: &Value,
    max_attempts: u32,
) -> Result<Enqueued, StorageError> {
    let max_attempts = i32::try_from(max_attempts)
        .map_err(|_| StorageError::Invalid("max_attempts is out of range".into()))?;
    let id = tx.customer_id();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (customer_id, job_id, kind, idempotency_key, payload, max_attempts)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (customer_id, kind, idempotency_key) DO NOTHING
         RETURNING job_id",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(kind)
    .bind(idempotency_key)
    .bind(payload)
    .bind(max_attempts)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(job_id) = inserted {
        return Ok(Enqueued {
            job_id,
            created: true,
        });
    }
    let existing: Uuid =
        sqlx::query_scalar("SELECT job_id FROM jobs WHERE kind = $1 AND idempotency_key = $2")
            .bind(kind)
            .bind(idempotency_key)
            .fetch_one(tx.conn())
            .await?;
    Ok(Enqueued {
        job_id: existing,
        created: false,
    })
}

/// A job by id.
pub async fn get(tx: &mut TenantTx, job_id: Uuid) -> Result<Option<Job>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE job_id = $1");
    Ok(sqlx::query_as(&sql)
        .bind(job_id)
        .fetch_optional(tx.conn())
        .await?)
}

/// A job by kind and idempotency key.
pub async fn find(
    tx: &mut TenantTx,
    kind: &str,
    idempotency_key: &str,
) -> Result<Option<Job>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE kind = $1 AND idempotency_key = $2");
    Ok(sqlx::query_as(&sql)
        .bind(kind)
        .bind(idempotency_key)
        .fetch_optional(tx.conn())
        .await?)
}

/// Marks the claimed attempt `attempt` of a running job done. False when
/// the job is not running that attempt any more (or is not this tenant's).
pub async fn mark_done(
    tx: &mut TenantTx,
    job_id: Uuid,
    attempt: i32,
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = now()
         WHERE job_id = $1 AND status = 'running' AND attempts = $2",
    )
    .bind(job_id)
    .bind(attempt)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Puts a failed running attempt back in the queue, due `delay` from the
/// database's now, with the error kept. False as for [`mark_done`].
pub async fn retry_later(
    tx: &mut TenantTx,
    job_id: Uuid,
    attempt: i32,
    delay: Duration,
    error: &str,
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'queued', locked_until = NULL, last_error = $3,
             run_at = now() + make_interval(secs => $4), updated_at = now()
         WHERE job_id = $1 AND status = 'running' AND attempts = $2",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Moves a running attempt to the dead letters (`dead`), with the error
/// kept. False as for [`mark_done`].
pub async fn mark_dead(
    tx: &mut TenantTx,
    job_id: Uuid,
    attempt: i32,
    error: &str,
) -> Result<bool, StorageError> {
    let done = sqlx::query(
        "UPDATE jobs SET status = 'dead', locked_until = NULL, last_error = $3, updated_at = now()
         WHERE job_id = $1 AND status = 'running' AND attempts = $2",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(error)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() > 0)
}
