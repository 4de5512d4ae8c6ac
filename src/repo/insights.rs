//! What post-call work writes about a call and its caller (summary, facts
//! with supersession, personality and its running averages, profile fields
//! and quick bio), and what the retention job removes (old transcripts, old
//! SMS bodies).
//!
//! The post-call handler calls these inside ONE tenant transaction. The
//! summary insert is the gate: [`insert_summary`] reports whether the row
//! is new, and the handler rolls everything back when it is not, so a call
//! is analysed into memory exactly once however often its job runs.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::db::{StorageError, TenantTx};

/// Where a summary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummarySource {
    /// The language model's validated reply.
    Llm,
    /// The rule-based fallback.
    Heuristic,
}

impl SummarySource {
    /// The stored form (`llm`, `heuristic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Heuristic => "heuristic",
        }
    }
}

/// A call's summary, as stored.
#[derive(Debug, Clone)]
pub struct NewSummary<'a> {
    /// The call.
    pub call_id: Uuid,
    /// The caller, `None` when caller ID was withheld.
    pub user_id: Option<&'a str>,
    /// Two to four sentences.
    pub summary: &'a str,
    /// Key topics.
    pub topics: &'a [String],
    /// Action items, a JSON array of `{"text", "due"}`.
    pub action_items: &'a Value,
    /// Model or fallback.
    pub source: SummarySource,
}

/// The tenant's industry template: (profile fields JSON, quick-bio format).
pub async fn tenant_template(tx: &mut TenantTx) -> Result<(Value, String), StorageError> {
    sqlx::query_as(
        "SELECT t.profile_fields, t.quick_bio_format
         FROM customers c
         JOIN industry_templates t ON t.slug = c.template_slug AND t.version = c.template_version",
    )
    .fetch_optional(tx.conn())
    .await?
    .ok_or(StorageError::NotFound)
}

/// Whether the call already has a summary (its post-call work is done).
pub async fn has_summary(tx: &mut TenantTx, call_id: Uuid) -> Result<bool, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM call_summaries WHERE call_id = $1)")
            .bind(call_id)
            .fetch_one(tx.conn())
            .await?,
    )
}

/// Stores the call's summary unless it has one; true when this inserted it.
pub async fn insert_summary(tx: &mut TenantTx, new: &NewSummary<'_>) -> Result<bool, StorageError> {
    let id = tx.customer_id();
    let done = sqlx::query(
        "INSERT INTO call_summaries (customer_id, call_id, user_id, summary, topics, action_items, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (customer_id, call_id) DO NOTHING",
    )
    .bind(id)
    .bind(new.call_id)
    .bind(new.user_id)
    .bind(new.summary)
    .bind(new.topics)
    .bind(new.action_items)
    .bind(new.source.as_str())
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts one more call from `user_id`, made at `at` (creating the profile
/// if needed): call count, first and last call times. Call once per call
/// (behind [`insert_summary`]'s gate).
pub async fn count_call(
    tx: &mut TenantTx,
    user_id: &str,
    at: DateTime<Utc>,
) -> Result<(), StorageError> {
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO caller_profiles AS p (customer_id, user_id, call_count, first_call_at, last_call_at)
         VALUES ($1, $2, 1, $3, $3)
         ON CONFLICT (customer_id, user_id) DO UPDATE SET
             call_count = p.call_count + 1,
             first_call_at = least(p.first_call_at, EXCLUDED.first_call_at),
             last_call_at = greatest(p.last_call_at, EXCLUDED.last_call_at),
             updated_at = now()",
    )
    .bind(id)
    .bind(user_id)
    .bind(at)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// What recording one fact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactChange {
    /// The caller had no value for the key: this one is current.
    New,
    /// This value replaced an older one, which now points at it.
    Superseded,
    /// The current value is the same: nothing written.
    Unchanged,
    /// The current value stays (it came from a later call, because this
    /// job ran late, or this value is only tentative): this value is kept
    /// as history, already superseded by the current one.
    History,
}

/// Records that call `call_id` (made at `call_at`) said `key` = `value`
/// about caller `user_id`, whose profile must exist. A different value from
/// an earlier (or no) call is superseded (`superseded_by`, `superseded_at`)
/// and kept; a value from a later call is never superseded by this one.
/// A fact's time is its call's start, or its own creation when it came from
/// no call (entered by staff). A `tentative` value (a rule-based guess)
/// fills a key nobody knew, but never supersedes a value.
pub async fn record_fact(
    tx: &mut TenantTx,
    user_id: &str,
    key: &str,
    value: &Value,
    call_id: Uuid,
    call_at: DateTime<Utc>,
    tentative: bool,
) -> Result<FactChange, StorageError> {
    let current: Option<(Uuid, Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT f.fact_id, f.value, coalesce(c.started_at, f.created_at)
         FROM caller_facts f
         LEFT JOIN calls c ON c.customer_id = f.customer_id AND c.call_id = f.source_call_id
         WHERE f.user_id = $1 AND f.key = $2 AND f.superseded_at IS NULL
         FOR UPDATE OF f",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(tx.conn())
    .await?;
    let fact_id = Uuid::new_v4();
    let (change, superseded_by) = match &current {
        Some((_, current_value, _)) if current_value == value => {
            return Ok(FactChange::Unchanged);
        }
        Some((current_id, _, as_of)) if tentative || *as_of > call_at => {
            (FactChange::History, Some(*current_id))
        }
        Some((current_id, _, _)) => {
            sqlx::query(
                "UPDATE caller_facts SET superseded_by = $2, superseded_at = now() WHERE fact_id = $1",
            )
            .bind(current_id)
            .bind(fact_id)
            .execute(tx.conn())
            .await?;
            (FactChange::Superseded, None)
        }
        None => (FactChange::New, None),
    };
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO caller_facts (customer_id, fact_id, user_id, key, value, source_call_id,
                                   superseded_by, superseded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7::uuid IS NULL THEN NULL ELSE now() END)",
    )
    .bind(id)
    .bind(fact_id)
    .bind(user_id)
    .bind(key)
    .bind(value)
    .bind(call_id)
    .bind(superseded_by)
    .execute(tx.conn())
    .await?;
    Ok(change)
}

/// Merges `fields` into the caller's profile fields (given keys win) and
/// sets the display name when one is given; returns the merged fields and
/// the display name now stored.
pub async fn merge_profile(
    tx: &mut TenantTx,
    user_id: &str,
    display_name: Option<&str>,
    fields: &Map<String, Value>,
) -> Result<(Map<String, Value>, Option<String>), StorageError> {
    let (fields, name): (Value, Option<String>) = sqlx::query_as(
        "UPDATE caller_profiles SET
             fields = fields || $2,
             display_name = coalesce($3, display_name),
             updated_at = now()
         WHERE user_id = $1
         RETURNING fields, display_name",
    )
    .bind(user_id)
    .bind(Value::Object(fields.clone()))
    .bind(display_name)
    .fetch_optional(tx.conn())
    .await?
    .ok_or(StorageError::NotFound)?;
    Ok((fields.as_object().cloned().unwrap_or_default(), name))
}

/// Sets the caller's quick bio.
pub async fn set_quick_bio(
    tx: &mut TenantTx,
    user_id: &str,
    quick_bio: &str,
) -> Result<(), StorageError> {
    sqlx::query("UPDATE caller_profiles SET quick_bio = $2, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .bind(quick_bio)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// One call's personality scores (see `call_personality`).
#[derive(Debug, Clone, PartialEq)]
pub struct PersonalityScores<'a> {
    /// 0 casual … 1 formal.
    pub formality: f32,
    /// 0 terse … 1 talkative.
    pub verbosity: f32,
    /// -1 negative … 1 positive.
    pub sentiment: f32,
    /// 0 impatient … 1 patient.
    pub patience: f32,
    /// 0 hesitant … 1 decisive.
    pub decisiveness: f32,
    /// A few words on style.
    pub style_notes: &'a str,
}

/// Stores the call's personality scores and, only when that row is new,
/// folds them into the caller's running averages, in one statement:
/// `avg + (x - avg) / (samples + 1)`. True when the scores were new.
pub async fn record_personality(
    tx: &mut TenantTx,
    call_id: Uuid,
    user_id: &str,
    scores: &PersonalityScores<'_>,
) -> Result<bool, StorageError> {
    let id = tx.customer_id();
    let folded: Option<i32> = sqlx::query_scalar(
        "WITH scored AS (
             INSERT INTO call_personality (customer_id, call_id, user_id, formality, verbosity,
                                           sentiment, patience, decisiveness, style_notes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (customer_id, call_id) DO NOTHING
             RETURNING customer_id, user_id, formality, verbosity, sentiment, patience, decisiveness
         )
         INSERT INTO caller_personality AS p (customer_id, user_id, samples, avg_formality,
             avg_verbosity, avg_sentiment, avg_patience, avg_decisiveness)
         SELECT customer_id, user_id, 1, formality, verbosity, sentiment, patience, decisiveness
         FROM scored
         ON CONFLICT (customer_id, user_id) DO UPDATE SET
             samples = p.samples + 1,
             avg_formality = p.avg_formality + (EXCLUDED.avg_formality - p.avg_formality) / (p.samples + 1),
             avg_verbosity = p.avg_verbosity + (EXCLUDED.avg_verbosity - p.avg_verbosity) / (p.samples + 1),
             avg_sentiment = p.avg_sentiment + (EXCLUDED.avg_sentiment - p.avg_sentiment) / (p.samples + 1),
             avg_patience = p.avg_patience + (EXCLUDED.avg_patience - p.avg_patience) / (p.samples + 1),
             avg_decisiveness = p.avg_decisiveness
                 + (EXCLUDED.avg_decisiveness - p.avg_decisiveness) / (p.samples + 1),
             updated_at = now()
         RETURNING p.samples",
    )
    .bind(id)
    .bind(call_id)
    .bind(user_id)
    .bind(scores.formality)
    .bind(scores.verbosity)
    .bind(scores.sentiment)
    .bind(scores.patience)
    .bind(scores.decisiveness)
    .bind(scores.style_notes)
    .fetch_optional(tx.conn())
    .await?;
    Ok(folded.is_some())
}

/// What [`expire_transcripts`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Calls whose transcript was deleted.
    pub calls: u64,
    /// Transcript turns deleted.
    pub turns: u64,
    /// SMS messages whose body was blanked.
    pub sms_bodies: u64,
}

/// Deletes the transcripts of calls that started before `cutoff` and have
/// ended, except those whose post-call job is still queued or running (its
/// summary is not written yet), and blanks the bodies of SMS messages
/// created before `cutoff` (the rows stay: delivery status and segments
/// are billing records). Summaries, facts and personality are kept: they
/// are the caller memory, which only erasure removes.
pub async fn expire_transcripts(
    tx: &mut TenantTx,
    cutoff: DateTime<Utc>,
) -> Result<Expired, StorageError> {
    let (calls, turns): (i64, i64) = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM call_turns t
             USING calls c
             WHERE c.customer_id = t.customer_id AND c.call_id = t.call_id
               AND c.started_at < $1 AND c.ended_at IS NOT NULL
               AND NOT EXISTS (
                   SELECT 1 FROM jobs j
                   WHERE j.customer_id = c.customer_id AND j.kind = $2
                     AND j.idempotency_key = c.call_sid AND j.status IN ('queued', 'running'))
             RETURNING t.call_id
         )
         SELECT count(DISTINCT call_id), count(*) FROM gone",
    )
    .bind(cutoff)
    .bind(crate::jobs::recovery::POST_CALL)
    .fetch_one(tx.conn())
    .await?;
    let sms = sqlx::query(
        "UPDATE sms_messages SET body = '', updated_at = now() WHERE created_at < $1 AND body <> ''",
    )
    .bind(cutoff)
    .execute(tx.conn())
    .await?;
    Ok(Expired {
        calls: u64::try_from(calls).unwrap_or(0),
        turns: u64::try_from(turns).unwrap_or(0),
        sms_bodies: sms.rows_affected(),
    })
}
