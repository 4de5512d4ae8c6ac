//! Caller memory rows as the memory API reads and writes them: free-form
//! memories, summaries, facts, personality, calls created from a posted
//! transcript, and the erasure of one caller. (The caller card's single
//! statement lives in [`crate::memory::card`].)

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// Whether the transaction's tenant exists (its own `customers` row is the
/// only one row-level security lets it see).
pub async fn customer_exists(tx: &mut TenantTx) -> Result<bool, StorageError> {
    let id = tx.customer_id();
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM customers WHERE customer_id = $1)")
            .bind(id)
            .fetch_one(tx.conn())
            .await?,
    )
}

/// Creates an empty profile for the caller unless one exists.
pub async fn ensure_profile(tx: &mut TenantTx, user_id: &str) -> Result<(), StorageError> {
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO caller_profiles (customer_id, user_id) VALUES ($1, $2)
         ON CONFLICT (customer_id, user_id) DO NOTHING",
    )
    .bind(id)
    .bind(user_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A free-form memory about a caller (`caller_memories`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MemoryRecord {
    /// The memory's id.
    pub memory_id: Uuid,
    /// The caller's E.164 number.
    pub user_id: String,
    /// `note`, `follow_up` or `preference`.
    pub kind: String,
    /// The memory itself.
    pub content: String,
    /// Whatever the writer attached (an object).
    pub metadata: Value,
    /// The call it came from, if any.
    pub source_call_id: Option<Uuid>,
    /// When a follow-up was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

const MEMORY_COLUMNS: &str =
    "memory_id, user_id, kind, content, metadata, source_call_id, resolved_at, created_at";

/// Stores a memory (creating the caller's profile if needed).
pub async fn insert_memory(
    tx: &mut TenantTx,
    user_id: &str,
    kind: &str,
    content: &str,
    metadata: &Value,
) -> Result<MemoryRecord, StorageError> {
    ensure_profile(tx, user_id).await?;
    let id = tx.customer_id();
    let sql = format!(
        "INSERT INTO caller_memories (customer_id, memory_id, user_id, kind, content, metadata)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {MEMORY_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(kind)
        .bind(content)
        .bind(metadata)
        .fetch_one(tx.conn())
        .await?)
}

/// A caller's memories, newest first.
pub async fn list_memories(
    tx: &mut TenantTx,
    user_id: &str,
    limit: i64,
) -> Result<Vec<MemoryRecord>, StorageError> {
    let id = tx.customer_id();
    let sql = format!(
        "SELECT {MEMORY_COLUMNS} FROM caller_memories
         WHERE customer_id = $1 AND user_id = $2
         ORDER BY created_at DESC, memory_id LIMIT $3"
    );
    Ok(sqlx::query_as(&sql)
        .bind(id)
        .bind(user_id)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?)
}

/// Deletes one memory; false when the tenant has no such memory.
pub async fn delete_memory(tx: &mut TenantTx, memory_id: Uuid) -> Result<bool, StorageError> {
    let id = tx.customer_id();
    let done = sqlx::query("DELETE FROM caller_memories WHERE customer_id = $1 AND memory_id = $2")
        .bind(id)
        .bind(memory_id)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// One call's summary (`call_summaries`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SummaryRecord {
    /// The call summarised.
    pub call_id: Uuid,
    /// Two to four sentences.
    pub summary: String,
    /// Key topics.
    pub topics: Vec<String>,
    /// Action items.
    pub action_items: Value,
    /// `llm` or `heuristic`.
    pub source: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// A caller's call summaries, newest first.
pub async fn list_summaries(
    tx: &mut TenantTx,
    user_id: &str,
    limit: i64,
) -> Result<Vec<SummaryRecord>, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "SELECT call_id, summary, topics, action_items, source, created_at FROM call_summaries
         WHERE customer_id = $1 AND user_id = $2
         ORDER BY created_at DESC LIMIT $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// A current fact (`caller_facts`, not superseded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct FactRecord {
    /// The fact's id.
    pub fact_id: Uuid,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// The call it was learnt on.
    pub source_call_id: Option<Uuid>,
    /// When it was learnt.
    pub created_at: DateTime<Utc>,
}

/// A caller's current facts, by key.
pub async fn current_facts(
    tx: &mut TenantTx,
    user_id: &str,
) -> Result<Vec<FactRecord>, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "SELECT fact_id, key, value, source_call_id, created_at FROM caller_facts
         WHERE customer_id = $1 AND user_id = $2 AND superseded_at IS NULL
         ORDER BY key",
    )
    .bind(id)
    .bind(user_id)
    .fetch_all(tx.conn())
    .await?)
}

/// A caller's personality running averages (`caller_personality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PersonalityAveragesRecord {
    /// Calls analysed.
    pub samples: i32,
    /// Average formality, 0 to 1.
    pub avg_formality: f32,
    /// Average verbosity, 0 to 1.
    pub avg_verbosity: f32,
    /// Average sentiment, -1 to 1.
    pub avg_sentiment: f32,
    /// Average patience, 0 to 1.
    pub avg_patience: f32,
    /// Average decisiveness, 0 to 1.
    pub avg_decisiveness: f32,
    /// When the averages last changed.
    pub updated_at: DateTime<Utc>,
}

/// One call's personality scores (`call_personality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct CallPersonalityRecord {
    /// The call analysed.
    pub call_id: Uuid,
    /// Formality, 0 to 1.
    pub formality: f32,
    /// Verbosity, 0 to 1.
    pub verbosity: f32,
    /// Sentiment, -1 to 1.
    pub sentiment: f32,
    /// Patience, 0 to 1.
    pub patience: f32,
    /// Decisiveness, 0 to 1.
    pub decisiveness: f32,
    /// Free-text style notes.
    pub style_notes: String,
    /// When it was analysed.
    pub created_at: DateTime<Utc>,
}

/// A caller's personality averages, if any call was analysed.
pub async fn personality_averages(
    tx: &mut TenantTx,
    user_id: &str,
) -> Result<Option<PersonalityAveragesRecord>, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "SELECT samples, avg_formality, avg_verbosity, avg_sentiment, avg_patience,
                avg_decisiveness, updated_at
         FROM caller_personality WHERE customer_id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(tx.conn())
    .await?)
}

/// A caller's per-call personality scores, newest first.
pub async fn call_personalities(
    tx: &mut TenantTx,
    user_id: &str,
    limit: i64,
) -> Result<Vec<CallPersonalityRecord>, StorageError> {
    let id = tx.customer_id();
    Ok(sqlx::query_as(
        "SELECT call_id, formality, verbosity, sentiment, patience, decisiveness, style_notes,
                created_at
         FROM call_personality WHERE customer_id = $1 AND user_id = $2
         ORDER BY created_at DESC LIMIT $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// A call posted with its transcript (`POST /v2/process-call`).
#[derive(Debug, Clone)]
pub struct ApiCall<'a> {
    /// The caller's call sid (any unique string per tenant).
    pub call_sid: &'a str,
    /// The caller's E.164 number.
    pub user_id: &'a str,
    /// The number dialed, when known ("" otherwise).
    pub to_number: &'a str,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub ended_at: DateTime<Utc>,
}

/// The call row [`create_api_call`] found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCallRow {
    /// The call's id.
    pub call_id: Uuid,
    /// The caller recorded on it.
    pub user_id: Option<String>,
    /// False when the call sid was already recorded.
    pub created: bool,
}

/// Records a completed call of direction `api`, unless the tenant already
/// has a call with this sid (then that one is returned, `created` false).
/// A new call counts on the caller's profile.
pub async fn create_api_call(
    tx: &mut TenantTx,
    call: &ApiCall<'_>,
) -> Result<ApiCallRow, StorageError> {
    let id = tx.customer_id();
    let duration = (call.ended_at - call.started_at).num_seconds().max(0);
    let duration = i32::try_from(duration).unwrap_or(i32::MAX);
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO calls (customer_id, call_id, call_sid, user_id, to_number, direction, status,
                            end_reason, started_at, answered_at, ended_at, duration_seconds)
         VALUES ($1, $2, $3, $4, $5, 'api', 'completed', 'completed', $6, $6, $7, $8)
         ON CONFLICT (customer_id, call_sid) DO NOTHING
         RETURNING call_id",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(call.call_sid)
    .bind(call.user_id)
    .bind(call.to_number)
    .bind(call.started_at)
    .bind(call.ended_at)
    .bind(duration)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(call_id) = inserted {
        super::callers::record_call(tx, call.user_id, call.started_at).await?;
        return Ok(ApiCallRow {
            call_id,
            user_id: Some(call.user_id.to_string()),
            created: true,
        });
    }
    let (call_id, user_id): (Uuid, Option<String>) = sqlx::query_as(
        "SELECT call_id, user_id FROM calls WHERE customer_id = $1 AND call_sid = $2",
    )
    .bind(id)
    .bind(call.call_sid)
    .fetch_one(tx.conn())
    .await?;
    Ok(ApiCallRow {
        call_id,
        user_id,
        created: false,
    })
}

/// Rows removed by [`erase_caller`], per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureCounts {
    /// `caller_profiles`.
    pub profiles: u64,
    /// `caller_facts` (current and superseded).
    pub facts: u64,
    /// `caller_memories`.
    pub memories: u64,
    /// `call_summaries`.
    pub summaries: u64,
    /// `call_personality`.
    pub call_personality: u64,
    /// `caller_personality`.
    pub caller_personality: u64,
    /// `calls`.
    pub calls: u64,
    /// `call_turns` (the transcripts).
    pub turns: u64,
    /// `sms_messages`.
    pub sms_messages: u64,
    /// `sms_consent`.
    pub sms_consent: u64,
    /// `jobs` whose payload names one of the caller's calls or the caller.
    pub jobs: u64,
}

impl ErasureCounts {
    /// Rows removed in all.
    pub fn total(&self) -> u64 {
        self.profiles
            + self.facts
            + self.memories
            + self.summaries
            + self.call_personality
            + self.caller_personality
            + self.calls
            + self.turns
            + self.sms_messages
            + self.sms_consent
            + self.jobs
    }
}

/// Removes every trace of one caller for the transaction's tenant: profile,
/// facts, memories, summaries, personality, calls with their transcripts,
/// SMS and SMS consent, and the jobs that would work on those calls.
/// Counts each table's rows (so nothing is left to a cascade unseen).
pub async fn erase_caller(tx: &mut TenantTx, user_id: &str) -> Result<ErasureCounts, StorageError> {
    let id = tx.customer_id();
    let calls: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT call_id, call_sid FROM calls WHERE customer_id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_all(tx.conn())
    .await?;
    let call_ids: Vec<Uuid> = calls.iter().map(|(c, _)| *c).collect();
    let call_sids: Vec<String> = calls.into_iter().map(|(_, s)| s).collect();

    let mut counts = ErasureCounts::default();
    // (field, statement): $1 tenant, $2 caller, $3 call ids, $4 call sids.
    let steps: [(&mut u64, &str); 11] = [
        (
            &mut counts.jobs,
            "DELETE FROM jobs WHERE customer_id = $1
               AND (payload->>'call_sid' = ANY ($4) OR payload->>'user_id' = $2)",
        ),
        (
            &mut counts.turns,
            "DELETE FROM call_turns WHERE customer_id = $1 AND call_id = ANY ($3)",
        ),
        (
            &mut counts.summaries,
            "DELETE FROM call_summaries WHERE customer_id = $1
               AND (user_id = $2 OR call_id = ANY ($3))",
        ),
        (
            &mut counts.call_personality,
            "DELETE FROM call_personality WHERE customer_id = $1
               AND (user_id = $2 OR call_id = ANY ($3))",
        ),
        (
            &mut counts.facts,
            "DELETE FROM caller_facts WHERE customer_id = $1 AND user_id = $2",
        ),
        (
            &mut counts.memories,
            "DELETE FROM caller_memories WHERE customer_id = $1 AND user_id = $2",
        ),
        (
            &mut counts.caller_personality,
            "DELETE FROM caller_personality WHERE customer_id = $1 AND user_id = $2",
        ),
        (
            &mut counts.sms_messages,
            "DELETE FROM sms_messages WHERE customer_id = $1
               AND (user_id = $2 OR call_id = ANY ($3))",
        ),
        (
            &mut counts.sms_consent,
            "DELETE FROM sms_consent WHERE customer_id = $1 AND user_id = $2",
        ),
        (
            &mut counts.calls,
            "DELETE FROM calls WHERE customer_id = $1 AND (user_id = $2 OR call_id = ANY ($3))",
        ),
        (
            &mut counts.profiles,
            "DELETE FROM caller_profiles WHERE customer_id = $1 AND user_id = $2",
        ),
    ];
    for (count, statement) in steps {
        let done = sqlx::query(statement)
            .bind(id)
            .bind(user_id)
            .bind(&call_ids)
            .bind(&call_sids)
            .execute(tx.conn())
            .await?;
        *count = done.rows_affected();
    }
    Ok(counts)
}
