//! The post-call job ([`crate::jobs::recovery::POST_CALL`]): turns a
//! finished call's transcript into caller memory.
//!
//! [`PostCallHandler`] loads the call, its transcript and the tenant's
//! industry template, asks an [`Analyst`] (a language model) for one JSON
//! object (summary, topics, action items, facts, name, personality; see
//! [`analysis`]) and validates it strictly. An invalid reply is sent back
//! with the fault named and asked again ([`PostCallConfig::invalid_reply_retries`]
//! times); then, or when no model is configured, or the model refuses the
//! request outright, the rule-based [`heuristic`] analysis is stored
//! instead, with source `heuristic`. A model that is down, rate limited or
//! too slow ([`PostCallConfig::analysis_timeout`]) fails the run with
//! [`JobError::Retry`]: the queue backs off, and dead-letters the job after
//! its last attempt. The transcript is only ever read here.
//!
//! Everything is written in ONE tenant transaction (see
//! [`crate::repo::insights`]): the summary, then for a known caller the
//! call count, the facts with supersession, profile fields and display
//! name, the quick bio ([`bio`]) and the personality scores with their
//! running averages. Facts guessed by the heuristic fill keys nobody knew
//! but never supersede a value (they are kept as history instead). The summary insert gates the rest, so running the job
//! twice changes nothing. A call with caller ID withheld gets its summary
//! only. A call in which the caller said nothing (never connected, hung up
//! during the greeting) is not sent to the model: it gets the summary
//! [`heuristic::SILENT_CALL_SUMMARY`] (source `heuristic`), no facts and no
//! personality, and still counts as a call.

pub mod analysis;
pub mod bio;
pub mod heuristic;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use self::analysis::CallAnalysis;
use self::bio::TemplateField;
use super::{JobError, JobHandler};
use crate::db::{CustomerId, Db, StorageError};
use crate::providers::roles::{LanguageModel, LlmEvent, LlmMessage, LlmRequest, ProviderError};
use crate::repo;
use crate::repo::calls::Call;
use crate::repo::insights::{self, FactChange, PersonalityScores, SummarySource};
use crate::repo::turns::Turn;

/// Answers the analysis prompt: the chat messages in, the model's text out.
/// Production wraps a [`LanguageModel`] ([`LlmAnalyst`]); tests script it.
pub trait Analyst: Send + Sync {
    /// The model's name, for logs.
    fn name(&self) -> &'static str;

    /// The complete reply to `messages`.
    fn complete(
        &self,
        messages: Vec<LlmMessage>,
    ) -> BoxFuture<'static, Result<String, ProviderError>>;
}

/// An [`Analyst`] over a streaming chat model: the reply's text events,
/// concatenated.
pub struct LlmAnalyst {
    /// The model client.
    llm: Arc<dyn LanguageModel>,
    /// The model name sent with each request.
    model: String,
}

/// Completion tokens allowed for one analysis (a summary and a few dozen
/// facts fit comfortably).
const ANALYSIS_MAX_TOKENS: u32 = 1000;

impl LlmAnalyst {
    /// An analyst asking `model` through `llm`.
    pub fn new(llm: Arc<dyn LanguageModel>, model: impl Into<String>) -> Self {
        Self {
            llm,
            model: model.into(),
        }
    }
}

impl Analyst for LlmAnalyst {
    fn name(&self) -> &'static str {
        self.llm.name()
    }

    fn complete(
        &self,
        messages: Vec<LlmMessage>,
    ) -> BoxFuture<'static, Result<String, ProviderError>> {
        let started = self.llm.stream(LlmRequest {
            model: self.model.clone(),
            messages,
            tools: Vec::new(),
            temperature: Some(0.2),
            max_tokens: Some(ANALYSIS_MAX_TOKENS),
        });
        Box::pin(async move {
            let mut events = started.await?;
            let mut text = String::new();
            while let Some(event) = events.next().await {
                match event? {
                    LlmEvent::Text(more) => text.push_str(&more),
                    LlmEvent::Done { .. } => break,
                    LlmEvent::ToolCall(_) | LlmEvent::Usage(_) => {}
                }
            }
            Ok(text)
        })
    }
}

/// How the post-call handler treats its analyst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostCallConfig {
    /// How long one analysis request may take; a slower one fails the run
    /// (retried later by the queue). Keep it under the runner's lease.
    pub analysis_timeout: Duration,
    /// How many more times an invalid reply is asked again before the
    /// heuristic fallback is stored.
    pub invalid_reply_retries: u32,
    /// The most transcript characters sent (the end of the call is kept).
    pub max_transcript_chars: usize,
}

impl Default for PostCallConfig {
    fn default() -> Self {
        Self {
            analysis_timeout: Duration::from_secs(90),
            invalid_reply_retries: 2,
            max_transcript_chars: 24_000,
        }
    }
}

/// What [`PostCallHandler::process`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostCallOutcome {
    /// The call's memory was written.
    Stored {
        /// Where the summary came from.
        source: SummarySource,
        /// Facts that became current (new or superseding an older value).
        facts_changed: usize,
        /// Personality scores were recorded.
        personality: bool,
    },
    /// The call already had its summary: nothing was written.
    AlreadyDone,
}

/// Runs [`crate::jobs::recovery::POST_CALL`] jobs.
pub struct PostCallHandler {
    /// The application-role pool.
    db: Db,
    /// The model, or `None` for the heuristic analysis alone.
    analyst: Option<Arc<dyn Analyst>>,
    /// Timeout and retries.
    config: PostCallConfig,
}

/// The most characters of an invalid reply sent back to the model.
const MAX_ECHOED_REPLY: usize = 4000;

fn storage(error: StorageError) -> JobError {
    JobError::Retry(format!("database: {error}"))
}

impl PostCallHandler {
    /// A handler writing through `db`, asking `analyst` (or no model).
    pub fn new(db: Db, analyst: Option<Arc<dyn Analyst>>, config: PostCallConfig) -> Self {
        Self {
            db,
            analyst,
            config,
        }
    }

    /// Does the post-call work for the tenant's call `call_sid`.
    pub async fn process(
        &self,
        customer_id: CustomerId,
        call_sid: &str,
    ) -> Result<PostCallOutcome, JobError> {
        let mut tx = self.db.tenant(customer_id).await.map_err(storage)?;
        let Some(call) = repo::calls::get_by_sid(&mut tx, call_sid)
            .await
            .map_err(storage)?
        else {
            return Err(JobError::Permanent(format!(
                "the tenant has no call {call_sid}"
            )));
        };
        if insights::has_summary(&mut tx, call.call_id)
            .await
            .map_err(storage)?
        {
            return Ok(PostCallOutcome::AlreadyDone);
        }
        let turns = repo::turns::list(&mut tx, call.call_id)
            .await
            .map_err(storage)?;
        let (profile_fields, bio_format) =
            insights::tenant_template(&mut tx).await.map_err(storage)?;
        tx.rollback().await.map_err(storage)?;
        let fields = bio::template_fields(&profile_fields);

        let caller_spoke = turns
            .iter()
            .any(|t| t.speaker == "caller" && !t.text.trim().is_empty());
        let (analysis, source) = match (&self.analyst, caller_spoke) {
            (Some(analyst), true) => self.ask(analyst.as_ref(), &fields, &turns).await?,
            _ => (
                heuristic::analyse(&turns, &fields),
                SummarySource::Heuristic,
            ),
        };
        let outcome = self
            .store(customer_id, &call, &analysis, source, &fields, &bio_format)
            .await
            .map_err(storage)?;
        tracing::info!(?outcome, turns = turns.len(), "post-call work done");
        Ok(outcome)
    }

    /// Asks the model, checks its reply, asks again on an invalid one, and
    /// falls back to the heuristic analysis.
    async fn ask(
        &self,
        analyst: &dyn Analyst,
        fields: &[TemplateField],
        turns: &[Turn],
    ) -> Result<(CallAnalysis, SummarySource), JobError> {
        let mut messages = analysis::prompt(fields, turns, self.config.max_transcript_chars);
        for attempt in 0..=self.config.invalid_reply_retries {
            let asked = analyst.complete(messages.clone());
            let reply = match tokio::time::timeout(self.config.analysis_timeout, asked).await {
                Err(_) => {
                    return Err(JobError::Retry(format!(
                        "{}: no analysis within {} s",
                        analyst.name(),
                        self.config.analysis_timeout.as_secs_f64()
                    )))
                }
                Ok(Err(error)) if error.is_retryable() => {
                    return Err(JobError::Retry(error.to_string()))
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "the analyst refused the request; storing the heuristic analysis");
                    return Ok((heuristic::analyse(turns, fields), SummarySource::Heuristic));
                }
                Ok(Ok(reply)) => reply,
            };
            match analysis::parse(&reply) {
                Ok(parsed) => return Ok((parsed, SummarySource::Llm)),
                Err(invalid) => {
                    tracing::warn!(attempt, %invalid, analyst = analyst.name(), "invalid analysis reply");
                    messages.push(LlmMessage::Assistant {
                        content: reply.chars().take(MAX_ECHOED_REPLY).collect(),
                        tool_calls: Vec::new(),
                    });
                    messages.push(LlmMessage::User(analysis::correction(&invalid)));
                }
            }
        }
        tracing::warn!("the analyst's replies stayed invalid; storing the heuristic analysis");
        Ok((heuristic::analyse(turns, fields), SummarySource::Heuristic))
    }

    /// Writes the analysis in one tenant transaction (see the module docs).
    async fn store(
        &self,
        customer_id: CustomerId,
        call: &Call,
        analysis: &CallAnalysis,
        source: SummarySource,
        fields: &[TemplateField],
        bio_format: &str,
    ) -> Result<PostCallOutcome, StorageError> {
        let mut tx = self.db.tenant(customer_id).await?;
        let action_items =
            serde_json::to_value(&analysis.action_items).unwrap_or_else(|_| json!([]));
        let inserted = insights::insert_summary(
            &mut tx,
            &insights::NewSummary {
                call_id: call.call_id,
                user_id: call.user_id.as_deref(),
                summary: &analysis.summary,
                topics: &analysis.topics,
                action_items: &action_items,
                source,
            },
        )
        .await?;
        if !inserted {
            tx.rollback().await?;
            return Ok(PostCallOutcome::AlreadyDone);
        }
        let Some(user_id) = call.user_id.as_deref() else {
            tx.commit().await?;
            return Ok(PostCallOutcome::Stored {
                source,
                facts_changed: 0,
                personality: false,
            });
        };
        insights::count_call(&mut tx, user_id, call.started_at).await?;

        let mut facts = analysis.facts.clone();
        if let Some(name) = &analysis.display_name {
            facts
                .entry("name".to_string())
                .or_insert_with(|| json!(name));
        }
        let mut now_current = Map::new();
        let mut display_name = None;
        let mut facts_changed = 0;
        for (key, value) in &facts {
            let change = insights::record_fact(
                &mut tx,
                user_id,
                key,
                value,
                call.call_id,
                call.started_at,
                source == SummarySource::Heuristic,
            )
            .await?;
            if matches!(change, FactChange::New | FactChange::Superseded) {
                facts_changed += 1;
                if key == "name" {
                    display_name = value.as_str().map(str::to_string);
                }
                if fields.iter().any(|f| f.key == *key) {
                    now_current.insert(key.clone(), value.clone());
                }
            }
        }
        let (mut values, stored_name) =
            insights::merge_profile(&mut tx, user_id, display_name.as_deref(), &now_current)
                .await?;
        if !values.contains_key("name") {
            if let Some(name) = stored_name {
                values.insert("name".to_string(), Value::String(name));
            }
        }
        if let Some(quick_bio) = bio::render(bio_format, &values, fields) {
            insights::set_quick_bio(&mut tx, user_id, &quick_bio).await?;
        }

        let personality = match &analysis.personality {
            Some(p) => {
                insights::record_personality(
                    &mut tx,
                    call.call_id,
                    user_id,
                    &PersonalityScores {
                        formality: p.formality,
                        verbosity: p.verbosity,
                        sentiment: p.sentiment,
                        patience: p.patience,
                        decisiveness: p.decisiveness,
                        style_notes: &p.style_notes,
                    },
                )
                .await?
            }
            None => false,
        };
        tx.commit().await?;
        Ok(PostCallOutcome::Stored {
            source,
            facts_changed,
            personality,
        })
    }
}

impl JobHandler for PostCallHandler {
    fn run(&self, customer_id: CustomerId, payload: Value) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let call_sid = payload
                .get("call_sid")
                .and_then(Value::as_str)
                .ok_or_else(|| JobError::Permanent("the payload names no call_sid".into()))?;
            self.process(customer_id, call_sid).await.map(|_| ())
        })
    }
}
