//! Monthly usage counters.

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::db::{StorageError, TenantTx};

/// Counters for one month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Usage {
    /// Calls answered.
    pub calls: i32,
    /// Calls refused (over limit).
    pub refused_calls: i32,
    /// Seconds of answered calls.
    pub call_seconds: i64,
    /// LLM prompt tokens.
    pub llm_prompt_tokens: i64,
    /// LLM completion tokens.
    pub llm_completion_tokens: i64,
    /// TTS characters.
    pub tts_characters: i64,
    /// STT audio seconds.
    pub stt_seconds: i64,
    /// SMS segments sent.
    pub sms_segments: i32,
}

/// The first day of `date`'s month, the key of `usage_monthly`.
pub fn month_of(date: NaiveDate) -> NaiveDate {
    date.with_day(1).unwrap_or(date)
}

/// Adds `delta` to the month's counters.
pub async fn add(
    tx: &mut TenantTx,
    month: NaiveDate,
    delta: &Usage,
) -> Result<Usage, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "INSERT INTO usage_monthly AS u (customer_id, month, calls, refused_calls, call_seconds,
             llm_prompt_tokens, llm_completion_tokens, tts_characters, stt_seconds, sms_segments)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (customer_id, month) DO UPDATE SET
             calls = u.calls + EXCLUDED.calls,
             refused_calls = u.refused_calls + EXCLUDED.refused_calls,
             call_seconds = u.call_seconds + EXCLUDED.call_seconds,
             llm_prompt_tokens = u.llm_prompt_tokens + EXCLUDED.llm_prompt_tokens,
             llm_completion_tokens = u.llm_completion_tokens + EXCLUDED.llm_completion_tokens,
             tts_characters = u.tts_characters + EXCLUDED.tts_characters,
             stt_seconds = u.stt_seconds + EXCLUDED.stt_seconds,
             sms_segments = u.sms_segments + EXCLUDED.sms_segments
         RETURNING calls, refused_calls, call_seconds, llm_prompt_tokens, llm_completion_tokens,
                   tts_characters, stt_seconds, sms_segments",
    )
    .bind(id)
    .bind(month_of(month))
    .bind(delta.calls)
    .bind(delta.refused_calls)
    .bind(delta.call_seconds)
    .bind(delta.llm_prompt_tokens)
    .bind(delta.llm_completion_tokens)
    .bind(delta.tts_characters)
    .bind(delta.stt_seconds)
    .bind(delta.sms_segments)
    .fetch_one(tx.conn())
    .await?)
}

/// The month's counters (zeros when nothing was recorded).
pub async fn get(tx: &mut TenantTx, month: NaiveDate) -> Result<Usage, StorageError> {
    let row: Option<Usage> = sqlx::query_as(
        "SELECT calls, refused_calls, call_seconds, llm_prompt_tokens, llm_completion_tokens,
                tts_characters, stt_seconds, sms_segments
         FROM usage_monthly WHERE month = $1",
    )
    .bind(month_of(month))
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.unwrap_or_default())
}
