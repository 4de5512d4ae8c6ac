//! Call records.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// A call as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Call {
    /// Our id.
    pub call_id: Uuid,
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Caller's E.164 number, when not withheld.
    pub user_id: Option<String>,
    /// The tenant number dialed.
    pub to_number: String,
    /// `inbound`, `outbound-api`, …
    pub direction: String,
    /// Twilio call status, or `refused` / `interrupted`.
    pub status: String,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// Media stream id once connected.
    pub stream_sid: Option<String>,
    /// When the webhook arrived.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Twilio's `CallDuration`.
    pub duration_seconds: Option<i32>,
}

/// A call about to be recorded.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    /// Twilio's `CallSid`.
    pub call_sid: &'a str,
    /// Caller number, if any.
    pub user_id: Option<&'a str>,
    /// Dialed number.
    pub to_number: &'a str,
    /// Direction.
    pub direction: &'a str,
    /// Initial status.
    pub status: &'a str,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

const COLUMNS: &str = "call_id, call_sid, user_id, to_number, direction, status, end_reason,
    stream_sid, started_at, ended_at, duration_seconds";

/// Records a call; a repeated `CallSid` (webhook retry) returns the existing row.
pub async fn create(tx: &mut TenantTx, new: &NewCall<'_>) -> Result<Call, StorageError> {
    let id = tx.customer_id();
    let sql = format!(
        "INSERT INTO calls (customer_id, call_id, call_sid, user_id, to_number, direction, status, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (customer_id, call_sid) DO UPDATE SET call_sid = EXCLUDED.call_sid
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(new.call_sid)
        .bind(new.user_id)
        .bind(new.to_number)
        .bind(new.direction)
        .bind(new.status)
        .bind(new.started_at)
        .fetch_one(tx.conn())
        .await?)
}

/// A call by Twilio's sid.
pub async fn get_by_sid(tx: &mut TenantTx, call_sid: &str) -> Result<Option<Call>, StorageError> {
    let sql = format!("SELECT {COLUMNS} FROM calls WHERE call_sid = $1");
    Ok(sqlx::query_as(&sql)
        .bind(call_sid)
        .fetch_optional(tx.conn())
        .await?)
}

/// Updates status (and, when given, end time, duration and reason).
pub async fn update_status(
    tx: &mut TenantTx,
    call_sid: &str,
    status: &str,
    ended_at: Option<DateTime<Utc>>,
    duration_seconds: Option<i32>,
    end_reason: Option<&str>,
) -> Result<Option<Call>, StorageError> {
    let sql = format!(
        "UPDATE calls SET status = $2,
             ended_at = coalesce($3, ended_at),
             duration_seconds = coalesce($4, duration_seconds),
             end_reason = coalesce($5, end_reason)
         WHERE call_sid = $1
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(call_sid)
        .bind(status)
        .bind(ended_at)
        .bind(duration_seconds)
        .bind(end_reason)
        .fetch_optional(tx.conn())
        .await?)
}

/// The newest calls, optionally for one caller.
pub async fn list(
    tx: &mut TenantTx,
    user_id: Option<&str>,
    limit: i64,
) -> Result<Vec<Call>, StorageError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM calls WHERE ($1::text IS NULL OR user_id = $1)
         ORDER BY started_at DESC LIMIT $2"
    );
    Ok(sqlx::query_as(&sql)
        .bind(user_id)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?)
}

/// Records the media stream serving the call; false when the tenant has
/// no such call.
pub async fn record_stream(
    tx: &mut TenantTx,
    call_sid: &str,
    stream_sid: &str,
) -> Result<bool, StorageError> {
    let done = sqlx::query("UPDATE calls SET stream_sid = $2 WHERE call_sid = $1")
        .bind(call_sid)
        .bind(stream_sid)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Records why the call ended, unless a reason is already recorded (the
/// first one written wins, e.g. the session's `transferred` over the
/// carrier's later `completed`). False when nothing changed.
pub async fn record_end_reason(
    tx: &mut TenantTx,
    call_sid: &str,
    reason: &str,
) -> Result<bool, StorageError> {
    let done =
        sqlx::query("UPDATE calls SET end_reason = $2 WHERE call_sid = $1 AND end_reason IS NULL")
            .bind(call_sid)
            .bind(reason)
            .execute(tx.conn())
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Calls still open: ringing or in progress, with no end time.
pub async fn list_open(tx: &mut TenantTx) -> Result<Vec<Call>, StorageError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM calls
         WHERE ended_at IS NULL AND status IN ('ringing', 'in-progress')
         ORDER BY started_at"
    );
    Ok(sqlx::query_as(&sql).fetch_all(tx.conn()).await?)
}

/// Closes an open call that a crash cut off: status `interrupted`, ended
/// at the last sign of life (its last transcript row, else its answer or
/// start: a server down for an hour must not bill an hour), end reason `interrupted` unless one was already recorded (the first
/// reason wins, as in [`record_end_reason`]). `None` when the tenant has no
/// such call, or it is not open any more.
pub async fn close_interrupted(
    tx: &mut TenantTx,
    call_sid: &str,
) -> Result<Option<Call>, StorageError> {
    let sql = format!(
        "UPDATE calls c SET status = 'interrupted',
             ended_at = greatest(c.started_at, coalesce(
                 (SELECT max(t.created_at) FROM call_turns t
                  WHERE t.customer_id = c.customer_id AND t.call_id = c.call_id),
                 c.answered_at, c.started_at)),
             end_reason = coalesce(end_reason, 'interrupted')
         WHERE call_sid = $1 AND ended_at IS NULL AND status IN ('ringing', 'in-progress')
         RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(call_sid)
        .fetch_optional(tx.conn())
        .await?)
}
