//! The transcript: one row per turn, appended while the call runs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// One transcript turn.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Turn {
    /// Order within the call.
    pub seq: i32,
    /// `caller`, `agent`, `system`, `tool` or `dtmf`.
    pub speaker: String,
    /// What was said (for agent turns: what the caller actually heard).
    pub text: String,
    /// Agent turn cut short by barge-in.
    pub interrupted: bool,
    /// Stream time of the start, ms.
    pub start_ms: Option<i64>,
    /// Stream time of the end, ms.
    pub end_ms: Option<i64>,
    /// Per-stage latency.
    pub timings: serde_json::Value,
}

/// Appends a turn; writing the same `seq` twice keeps the first.
pub async fn append(tx: &mut TenantTx, call_id: Uuid, turn: &Turn) -> Result<(), StorageError> {
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO call_turns (customer_id, call_id, seq, speaker, text, interrupted, start_ms, end_ms, timings)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (customer_id, call_id, seq) DO NOTHING",
    )
    .bind(id)
    .bind(call_id)
    .bind(turn.seq)
    .bind(&turn.speaker)
    .bind(&turn.text)
    .bind(turn.interrupted)
    .bind(turn.start_ms)
    .bind(turn.end_ms)
    .bind(&turn.timings)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A call's transcript in order.
pub async fn list(tx: &mut TenantTx, call_id: Uuid) -> Result<Vec<Turn>, StorageError> {
    Ok(sqlx::query_as(
        "SELECT seq, speaker, text, interrupted, start_ms, end_ms, timings FROM call_turns
         WHERE call_id = $1 ORDER BY seq",
    )
    .bind(call_id)
    .fetch_all(tx.conn())
    .await?)
}

/// When the newest turn of a call was written.
pub async fn last_written_at(
    tx: &mut TenantTx,
    call_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT max(created_at) FROM call_turns WHERE call_id = $1")
            .bind(call_id)
            .fetch_one(tx.conn())
            .await?,
    )
}
