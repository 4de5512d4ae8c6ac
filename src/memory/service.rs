//! `MemoryService`: the memory operations on the database. Each opens one
//! transaction for the named tenant, checks the tenant exists, and works
//! through row-level security; the memory API and the in-process
//! [`super::MemoryClient`] both call it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::card::{self, CallerCard};
use super::{is_e164, thread_id};
use crate::db::{CustomerId, Db, StorageError, TenantTx};
use crate::repo;
use crate::repo::callers::CallerProfile;
use crate::repo::memory::{
    ApiCall, CallPersonalityRecord, ErasureCounts, FactRecord, MemoryRecord,
    PersonalityAveragesRecord, SummaryRecord,
};

/// The message of [`MemoryError::MissingCustomer`], the memory API's
/// exact 400 error.
pub const CUSTOMER_REQUIRED: &str = "customer_id is required for multi-tenant security";
/// The message of [`MemoryError::UnknownCustomer`].
pub const UNKNOWN_CUSTOMER: &str = "unknown customer";
/// The message of [`MemoryError::NotFound`] for a caller with no profile.
pub const CALLER_NOT_FOUND: &str = "caller not found";
/// The message of [`MemoryError::NotFound`] for a missing memory.
pub const MEMORY_NOT_FOUND: &str = "memory not found";

/// Default page size of list operations.
pub const DEFAULT_LIMIT: i64 = 50;
/// Largest page size of list operations.
pub const MAX_LIMIT: i64 = 500;
/// Summaries an enriched context carries unless asked otherwise.
pub const DEFAULT_RECENT_CALLS: i64 = 3;
/// Largest transcript `process_call` accepts, in turns.
pub const MAX_TRANSCRIPT_TURNS: usize = 5_000;

/// Why a memory operation did not happen: the memory boundary's error, the
/// same for the in-process service and the HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// No tenant was named.
    #[error("customer_id is required for multi-tenant security")]
    MissingCustomer,
    /// The named tenant does not exist.
    #[error("unknown customer")]
    UnknownCustomer,
    /// No or a bad API key (HTTP client only).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The key may not act for this tenant (HTTP client only).
    #[error("{0}")]
    Forbidden(String),
    /// The request is invalid (bad number, empty content, …).
    #[error("{0}")]
    Invalid(String),
    /// The thing named does not exist for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with what is stored (a call sid recorded for another caller).
    #[error("{0}")]
    Conflict(String),
    /// The remote memory service could not be reached or answered
    /// something unexpected (HTTP client only).
    #[error("memory service unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A memory to store (`POST /v1/memories`, `POST /memory/store`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMemory {
    /// The caller's E.164 number.
    pub user_id: String,
    /// The memory itself.
    pub content: String,
    /// `note` (default), `follow_up` or `preference`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Anything to attach (an object).
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// The enriched context of a caller (`POST /v2/context/enriched`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrichedContext {
    /// `customer_{customer_id}_user_{digits}`.
    pub thread_id: String,
    /// The caller's E.164 number.
    pub user_id: String,
    /// Whether the tenant knows this caller.
    pub known: bool,
    /// The name to greet the caller by.
    pub greeting_name: Option<String>,
    /// The card, redacted unless sensitive details were asked for.
    pub card: Option<CallerCard>,
    /// The text block for the LLM's system prompt.
    pub context: String,
}

/// The context block for a caller the tenant has never seen.
pub const NEW_CALLER_CONTEXT: &str = "New caller: no previous calls with this business.\n";

/// One transcript turn posted to `process_call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptTurn {
    /// `caller` (or `user`), `agent` (or `assistant`), `system`, `tool`, `dtmf`.
    pub speaker: String,
    /// What was said.
    pub text: String,
}

/// A finished call handed to the memory service (`POST /v2/process-call`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessCall {
    /// The call's id in the calling system; idempotency key per tenant.
    pub call_sid: String,
    /// The caller's E.164 number.
    pub user_id: String,
    /// The number dialed, when known.
    #[serde(default)]
    pub to_number: Option<String>,
    /// The transcript in order.
    pub transcript: Vec<TranscriptTurn>,
    /// When the call started (default: now).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended (default: now).
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
}

/// What `process_call` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedCall {
    /// `customer_{customer_id}_user_{digits}`.
    pub thread_id: String,
    /// The call's row id.
    pub call_id: Uuid,
    /// The call sid posted.
    pub call_sid: String,
    /// The post-call job's id.
    pub job_id: Uuid,
    /// False when the call sid had been posted (or recorded) before.
    pub created: bool,
    /// False when the post-call job already existed.
    pub job_created: bool,
}

/// A caller's profile with the current facts (`GET /v2/profile/…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileView {
    /// The profile row.
    pub profile: CallerProfileView,
    /// Current facts, by key.
    pub facts: Vec<FactRecord>,
}

/// The profile row as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerProfileView {
    /// Caller's E.164 number.
    pub user_id: String,
    /// Name, when known.
    pub display_name: Option<String>,
    /// Template variables.
    pub fields: Value,
    /// Rendered one-line bio.
    pub quick_bio: Option<String>,
    /// Calls so far.
    pub call_count: i32,
    /// First call.
    pub first_call_at: Option<DateTime<Utc>>,
    /// Latest call.
    pub last_call_at: Option<DateTime<Utc>>,
}

impl From<CallerProfile> for CallerProfileView {
    fn from(p: CallerProfile) -> Self {
        Self {
            user_id: p.user_id,
            display_name: p.display_name,
            fields: p.fields,
            quick_bio: p.quick_bio,
            call_count: p.call_count,
            first_call_at: p.first_call_at,
            last_call_at: p.last_call_at,
        }
    }
}

/// A caller's personality (`GET /v2/personality/…`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalityView {
    /// Running averages.
    pub averages: PersonalityAveragesRecord,
    /// The newest per-call scores.
    pub calls: Vec<CallPersonalityRecord>,
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// Rows removed, per table.
    pub erased: ErasureCounts,
}

/// Memory operations over the application's pool. Cheap to clone.
#[derive(Clone)]
pub struct MemoryService {
    /// The application role's pool; every use is a [`TenantTx`].
    db: Db,
}

/// Checks `user_id` is E.164.
fn check_user(user_id: &str) -> Result<(), MemoryError> {
    if is_e164(user_id) {
        Ok(())
    } else {
        Err(MemoryError::Invalid(
            "user_id must be an E.164 number (+ then 7 to 15 digits)".into(),
        ))
    }
}

/// A list size within 1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub fn page_size(limit: Option<i64>) -> i64 {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

impl MemoryService {
    /// A service over the application role's pool.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Opens the tenant's transaction; [`MemoryError::UnknownCustomer`]
    /// when there is no such tenant.
    async fn open(&self, customer_id: CustomerId) -> Result<TenantTx, MemoryError> {
        let mut tx = self.db.tenant(customer_id).await?;
        if !repo::memory::customer_exists(&mut tx).await? {
            return Err(MemoryError::UnknownCustomer);
        }
        Ok(tx)
    }

    /// Whether the tenant exists.
    pub async fn customer_exists(&self, customer_id: CustomerId) -> Result<bool, MemoryError> {
        let mut tx = self.db.tenant(customer_id).await?;
        Ok(repo::memory::customer_exists(&mut tx).await?)
    }

    /// Stores a memory about a caller.
    pub async fn store(
        &self,
        customer_id: CustomerId,
        memory: &NewMemory,
    ) -> Result<MemoryRecord, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(&memory.user_id)?;
        let content = memory.content.trim();
        if content.is_empty() || content.len() > 10_000 {
            return Err(MemoryError::Invalid(
                "content must be 1 to 10000 characters".into(),
            ));
        }
        let kind = memory.kind.as_deref().unwrap_or("note");
        if !["note", "follow_up", "preference"].contains(&kind) {
            return Err(MemoryError::Invalid(
                "kind must be note, follow_up or preference".into(),
            ));
        }
        let metadata = memory.metadata.clone().unwrap_or_else(|| json!({}));
        if !metadata.is_object() {
            return Err(MemoryError::Invalid("metadata must be an object".into()));
        }
        let record =
            repo::memory::insert_memory(&mut tx, &memory.user_id, kind, content, &metadata).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// A caller's memories, newest first.
    pub async fn list_memories(
        &self,
        customer_id: CustomerId,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<MemoryRecord>, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let memories = repo::memory::list_memories(&mut tx, user_id, limit).await?;
        tx.commit().await?;
        Ok(memories)
    }

    /// Deletes one memory; [`MemoryError::NotFound`] when the tenant has
    /// no such memory.
    pub async fn delete_memory(
        &self,
        customer_id: CustomerId,
        memory_id: Uuid,
    ) -> Result<(), MemoryError> {
        let mut tx = self.open(customer_id).await?;
        if !repo::memory::delete_memory(&mut tx, memory_id).await? {
            return Err(MemoryError::NotFound(MEMORY_NOT_FOUND.into()));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The caller's card and its rendered context. Unless
    /// `reveal_sensitive`, the card is [`CallerCard::redacted`] and the
    /// context leaves the tenant's sensitive fields out.
    pub async fn enriched_context(
        &self,
        customer_id: CustomerId,
        user_id: &str,
        reveal_sensitive: bool,
        recent: i64,
    ) -> Result<EnrichedContext, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let card = card::load_card(&mut tx, user_id, recent).await?;
        tx.commit().await?;
        let thread_id = thread_id(customer_id, user_id);
        Ok(match card {
            None => EnrichedContext {
                thread_id,
                user_id: user_id.to_string(),
                known: false,
                greeting_name: None,
                card: None,
                context: NEW_CALLER_CONTEXT.to_string(),
            },
            Some(card) => {
                let card = if reveal_sensitive {
                    card
                } else {
                    card.redacted()
                };
                EnrichedContext {
                    thread_id,
                    user_id: user_id.to_string(),
                    known: true,
                    greeting_name: card.greeting_name().map(str::to_string),
                    context: card.prompt_context(reveal_sensitive),
                    card: Some(card),
                }
            }
        })
    }

    /// Records a finished call with its transcript and enqueues its
    /// post-call job, all in one transaction. Idempotent per call sid:
    /// posting the same call again changes nothing (turns already stored
    /// are kept) and returns the same job.
    pub async fn process_call(
        &self,
        customer_id: CustomerId,
        call: &ProcessCall,
        now: DateTime<Utc>,
    ) -> Result<ProcessedCall, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(&call.user_id)?;
        let sid = call.call_sid.trim();
        if sid.is_empty() || sid.len() > 128 {
            return Err(MemoryError::Invalid(
                "call_sid must be 1 to 128 characters".into(),
            ));
        }
        if call.transcript.len() > MAX_TRANSCRIPT_TURNS {
            return Err(MemoryError::Invalid(format!(
                "a transcript has at most {MAX_TRANSCRIPT_TURNS} turns"
            )));
        }
        let mut turns = Vec::with_capacity(call.transcript.len());
        for (seq, turn) in call.transcript.iter().enumerate() {
            let speaker = match turn.speaker.trim().to_ascii_lowercase().as_str() {
                "caller" | "user" | "customer" => "caller",
                "agent" | "assistant" | "ai" => "agent",
                "system" => "system",
                "tool" => "tool",
                "dtmf" => "dtmf",
                other => {
                    return Err(MemoryError::Invalid(format!(
                        "transcript turn {seq}: unknown speaker `{other}`"
                    )))
                }
            };
            turns.push(repo::turns::Turn {
                seq: i32::try_from(seq).unwrap_or(i32::MAX),
                speaker: speaker.to_string(),
                text: turn.text.clone(),
                interrupted: false,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            });
        }
        let ended_at = call.ended_at.unwrap_or(now);
        let started_at = call.started_at.unwrap_or(ended_at);
        if started_at > ended_at {
            return Err(MemoryError::Invalid("started_at is after ended_at".into()));
        }
        let row = repo::memory::create_api_call(
            &mut tx,
            &ApiCall {
                call_sid: sid,
                user_id: &call.user_id,
                to_number: call.to_number.as_deref().unwrap_or(""),
                started_at,
                ended_at,
            },
        )
        .await?;
        if row.user_id.as_deref() != Some(call.user_id.as_str()) {
            return Err(MemoryError::Conflict(
                "this call_sid is recorded for another caller".into(),
            ));
        }
        for turn in &turns {
            repo::turns::append(&mut tx, row.call_id, turn).await?;
        }
        let job = crate::jobs::recovery::enqueue_post_call(&mut tx, sid).await?;
        tx.commit().await?;
        Ok(ProcessedCall {
            thread_id: thread_id(customer_id, &call.user_id),
            call_id: row.call_id,
            call_sid: sid.to_string(),
            job_id: job.job_id,
            created: row.created,
            job_created: job.created,
        })
    }

    /// A caller's call summaries, newest first.
    pub async fn summaries(
        &self,
        customer_id: CustomerId,
        user_id: &str,
        limit: i64,
    ) -> Result<Vec<SummaryRecord>, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let rows = repo::memory::list_summaries(&mut tx, user_id, limit).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A caller's profile and current facts; `None` for an unknown caller.
    pub async fn profile(
        &self,
        customer_id: CustomerId,
        user_id: &str,
    ) -> Result<Option<ProfileView>, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let Some(profile) = repo::callers::get(&mut tx, user_id).await? else {
            return Ok(None);
        };
        let facts = repo::memory::current_facts(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(Some(ProfileView {
            profile: profile.into(),
            facts,
        }))
    }

    /// A caller's personality averages and newest per-call scores; `None`
    /// when no call of theirs was analysed.
    pub async fn personality(
        &self,
        customer_id: CustomerId,
        user_id: &str,
        limit: i64,
    ) -> Result<Option<PersonalityView>, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let Some(averages) = repo::memory::personality_averages(&mut tx, user_id).await? else {
            return Ok(None);
        };
        let calls = repo::memory::call_personalities(&mut tx, user_id, limit).await?;
        tx.commit().await?;
        Ok(Some(PersonalityView { averages, calls }))
    }

    /// Erases every trace of one caller for one tenant and records it in
    /// the tenant's audit log (`caller.erased`, the number redacted, the
    /// counts), in one transaction. Erasing an unknown caller succeeds with
    /// zero counts, and is audited too.
    pub async fn erase_caller(
        &self,
        customer_id: CustomerId,
        user_id: &str,
        actor: &str,
    ) -> Result<ErasureReport, MemoryError> {
        let mut tx = self.open(customer_id).await?;
        check_user(user_id)?;
        let erased = repo::memory::erase_caller(&mut tx, user_id).await?;
        let target = crate::platform::phone::redact(user_id);
        repo::audit::record(
            &mut tx,
            actor,
            "caller.erased",
            Some(&target),
            json!({ "counts": erased, "total": erased.total() }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(%customer_id, caller = %target, rows = erased.total(), "caller erased");
        Ok(ErasureReport { erased })
    }
}
