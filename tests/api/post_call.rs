//! The post-call job and transcript retention against real PostgreSQL as
//! the application role, with scripted analysts standing in for the model:
//! a valid reply, invalid replies (asked again, then the heuristic), a
//! failing model (backoff, dead letter, transcript intact), a slow model
//! (timed out, retried), idempotency, fact supersession, running averages,
//! a withheld caller, a silent call, retention, and the server's own runner.
//!
//! Retries are made due by moving `run_at` into the past, never by sleeping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use switchboard::db::CustomerId;
use switchboard::jobs::post_call::heuristic::SILENT_CALL_SUMMARY;
use switchboard::jobs::post_call::{Analyst, PostCallConfig, PostCallHandler, PostCallOutcome};
use switchboard::jobs::recovery::{self, POST_CALL};
use switchboard::jobs::retention::{self, RetentionHandler, RETENTION};
use switchboard::jobs::{Backoff, JobRunner, RunnerConfig, StepOutcome};
use switchboard::providers::roles::{LlmMessage, ProviderError};
use switchboard::repo;
use switchboard::repo::calls::NewCall;
use switchboard::repo::insights::SummarySource;
use switchboard::repo::turns::Turn;
use uuid::Uuid;

use crate::helpers::{spawn_app, tenant_input, TestDb};

// ---------------------------------------------------------------------------
// Scripted analysts.
// ---------------------------------------------------------------------------

/// Answers with its replies in order, repeating the last; records every
/// prompt it was given.
struct Scripted {
    replies: Vec<Result<String, ProviderError>>,
    prompts: Mutex<Vec<Vec<LlmMessage>>>,
}

impl Scripted {
    fn new(replies: Vec<Result<String, ProviderError>>) -> Arc<Self> {
        Arc::new(Self {
            replies,
            prompts: Mutex::new(Vec::new()),
        })
    }

    fn always(reply: &str) -> Arc<Self> {
        Self::new(vec![Ok(reply.to_string())])
    }

    fn calls(&self) -> usize {
        self.prompts.lock().expect("lock").len()
    }

    fn prompt(&self, n: usize) -> Vec<LlmMessage> {
        self.prompts.lock().expect("lock")[n].clone()
    }
}

impl Analyst for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn complete(
        &self,
        messages: Vec<LlmMessage>,
    ) -> BoxFuture<'static, Result<String, ProviderError>> {
        let mut prompts = self.prompts.lock().expect("lock");
        let n = prompts.len().min(self.replies.len() - 1);
        prompts.push(messages);
        let reply = self.replies[n].clone();
        Box::pin(async move { reply })
    }
}

/// Never answers.
struct Mute {
    calls: AtomicU32,
}

impl Analyst for Mute {
    fn name(&self) -> &'static str {
        "mute"
    }

    fn complete(&self, _: Vec<LlmMessage>) -> BoxFuture<'static, Result<String, ProviderError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(std::future::pending())
    }
}

fn analysis(summary: &str, facts: Value, personality: Value) -> String {
    json!({
        "summary": summary,
        "topics": ["auto policy", "new driver"],
        "action_items": [{"text": "Email the quote", "due": "Friday"}],
        "facts": facts,
        "display_name": null,
        "personality": personality,
    })
    .to_string()
}

fn scores(formality: f64, sentiment: f64) -> Value {
    json!({"formality": formality, "verbosity": 0.5, "sentiment": sentiment,
           "patience": 0.8, "decisiveness": 0.6, "style_notes": "Polite and brief."})
}

const SUMMARY: &str =
    "Jane asked to add her son to the auto policy. The agent promised a quote by email.";

// ---------------------------------------------------------------------------
// Set-up helpers.
// ---------------------------------------------------------------------------

/// No jitter, a 30 s base so retries are never due by themselves.
fn runner_config() -> RunnerConfig {
    RunnerConfig {
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        backoff: Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            jitter: 0.0,
        },
    }
}

fn handler(tdb: &TestDb, analyst: Option<Arc<dyn Analyst>>, retries: u32) -> Arc<PostCallHandler> {
    Arc::new(PostCallHandler::new(
        tdb.db().clone(),
        analyst,
        PostCallConfig {
            analysis_timeout: Duration::from_millis(300),
            invalid_reply_retries: retries,
            max_transcript_chars: 10_000,
        },
    ))
}

fn runner(tdb: &TestDb, analyst: Option<Arc<dyn Analyst>>) -> JobRunner {
    JobRunner::new(tdb.db().clone(), runner_config())
        .with_handler(POST_CALL, handler(tdb, analyst, 2))
}

async fn tenant(tdb: &TestDb, slug: &str, number: &str, template: &str) -> CustomerId {
    let mut input = tenant_input(slug, number);
    input.template = template.to_string();
    tdb.platform
        .create_tenant("test", input)
        .await
        .expect("tenant created")
        .customer
        .customer_id
}

const CALLER: &str = "+15557770001";

/// An ended call with its transcript (speaker, text) and its post-call job.
async fn ended_call(
    tdb: &TestDb,
    customer: CustomerId,
    sid: &str,
    user: Option<&str>,
    started_at: DateTime<Utc>,
    turns: &[(&str, &str)],
) -> Uuid {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let call = repo::calls::create(
        &mut tx,
        &NewCall {
            call_sid: sid,
            user_id: user,
            to_number: "+15550009999",
            direction: "inbound",
            status: "in-progress",
            started_at,
        },
    )
    .await
    .expect("call");
    repo::calls::update_status(
        &mut tx,
        sid,
        "completed",
        Some(started_at + chrono::Duration::minutes(3)),
        Some(180),
        None,
    )
    .await
    .expect("ended");
    for (seq, (speaker, text)) in turns.iter().enumerate() {
        repo::turns::append(
            &mut tx,
            call.call_id,
            &Turn {
                seq: i32::try_from(seq).expect("few turns"),
                speaker: speaker.to_string(),
                text: text.to_string(),
                interrupted: false,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            },
        )
        .await
        .expect("turn");
    }
    recovery::enqueue_post_call(&mut tx, sid)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    call.call_id
}

const CONVERSATION: &[(&str, &str)] = &[
    ("agent", "Thanks for calling, how can I help?"),
    (
        "caller",
        "Hi, my name is Jane Doe. I'd like to add my son to the auto policy.",
    ),
    ("agent", "Happy to help. I'll email you a quote."),
    ("caller", "Great, thank you."),
];

/// One value of a query as the tenant.
async fn scalar<T>(tdb: &TestDb, customer: CustomerId, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let value: T = sqlx::query_scalar(sql)
        .fetch_one(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.rollback().await.expect("rollback");
    value
}

/// One row of a query as the tenant.
async fn scalar_row<T>(tdb: &TestDb, customer: CustomerId, sql: &str) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let row: T = sqlx::query_as(sql)
        .fetch_one(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.rollback().await.expect("rollback");
    row
}

async fn count(tdb: &TestDb, customer: CustomerId, table: &str) -> i64 {
    scalar(tdb, customer, &format!("SELECT count(*) FROM {table}")).await
}

async fn execute(tdb: &TestDb, customer: CustomerId, sql: &str) {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    sqlx::query(sql)
        .execute(tx.conn())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    tx.commit().await.expect("commit");
}

/// (summary, topics, action_items, source) of a call.
async fn summary_of(
    tdb: &TestDb,
    customer: CustomerId,
    call_id: Uuid,
) -> Option<(String, Vec<String>, Value, String)> {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let row = sqlx::query_as(
        "SELECT summary, topics, action_items, source FROM call_summaries WHERE call_id = $1",
    )
    .bind(call_id)
    .fetch_optional(tx.conn())
    .await
    .expect("summary");
    tx.rollback().await.expect("rollback");
    row
}

/// Current facts of the caller, key → value.
async fn current_facts(tdb: &TestDb, customer: CustomerId) -> Vec<(String, Value)> {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let rows = sqlx::query_as(
        "SELECT key, value FROM caller_facts WHERE user_id = $1 AND superseded_at IS NULL ORDER BY key",
    )
    .bind(CALLER)
    .fetch_all(tx.conn())
    .await
    .expect("facts");
    tx.rollback().await.expect("rollback");
    rows
}

/// (display_name, fields, quick_bio, call_count) of the caller.
async fn profile(
    tdb: &TestDb,
    customer: CustomerId,
) -> (Option<String>, Value, Option<String>, i32) {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let row = sqlx::query_as(
        "SELECT display_name, fields, quick_bio, call_count FROM caller_profiles WHERE user_id = $1",
    )
    .bind(CALLER)
    .fetch_one(tx.conn())
    .await
    .expect("profile");
    tx.rollback().await.expect("rollback");
    row
}

/// (samples, avg formality, avg sentiment, avg patience) of the caller.
async fn averages(tdb: &TestDb, customer: CustomerId) -> (i32, f32, f32, f32) {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let row = sqlx::query_as(
        "SELECT samples, avg_formality, avg_sentiment, avg_patience FROM caller_personality
         WHERE user_id = $1",
    )
    .bind(CALLER)
    .fetch_one(tx.conn())
    .await
    .expect("averages");
    tx.rollback().await.expect("rollback");
    row
}

async fn job_of(tdb: &TestDb, customer: CustomerId, sid: &str) -> repo::jobs::Job {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let job = repo::jobs::find(&mut tx, POST_CALL, sid)
        .await
        .expect("read job")
        .expect("the call has its job");
    tx.rollback().await.expect("rollback");
    job
}

async fn make_due(tdb: &TestDb, customer: CustomerId, job_id: Uuid) {
    execute(
        tdb,
        customer,
        &format!("UPDATE jobs SET run_at = now() - interval '1 second' WHERE job_id = '{job_id}'"),
    )
    .await;
}

fn assert_close(got: f32, want: f32, what: &str) {
    assert!((got - want).abs() < 1e-4, "{what}: {got} != {want}");
}

// ---------------------------------------------------------------------------
// The analysis.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_analysis_stores_summary_facts_personality_and_the_quick_bio() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-valid", "+15550005001", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAvalid",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let reply = analysis(
        SUMMARY,
        json!({"name": "Jane Doe", "city": "Irvine", "since": 2020,
               "policies": "2 Auto + 1 Home", "son_name": "Tim", "household": null}),
        scores(0.7, 0.5),
    );
    let analyst = Scripted::always(&format!("```json\n{reply}\n```"));

    let outcomes = runner(&tdb, Some(analyst.clone()))
        .drain()
        .await
        .expect("drain");
    assert!(
        matches!(outcomes.as_slice(), [StepOutcome::Done { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(analyst.calls(), 1);
    // The model saw the template's keys and the transcript.
    let prompt = analyst.prompt(0);
    let text = format!("{prompt:?}");
    assert!(text.contains("- policies (Policies, text)"), "{text}");
    assert!(text.contains("Caller: Hi, my name is Jane Doe."), "{text}");

    let (summary, topics, items, source) = summary_of(&tdb, customer, call_id)
        .await
        .expect("a summary");
    assert_eq!(summary, SUMMARY);
    assert_eq!(topics, vec!["auto policy", "new driver"]);
    assert_eq!(items, json!([{"text": "Email the quote", "due": "Friday"}]));
    assert_eq!(source, "llm");

    assert_eq!(
        current_facts(&tdb, customer).await,
        vec![
            ("city".to_string(), json!("Irvine")),
            ("name".to_string(), json!("Jane Doe")),
            ("policies".to_string(), json!("2 Auto + 1 Home")),
            ("since".to_string(), json!(2020)),
            ("son_name".to_string(), json!("Tim")),
        ]
    );
    let (name, fields, bio, calls) = profile(&tdb, customer).await;
    assert_eq!(name.as_deref(), Some("Jane Doe"));
    assert_eq!(
        fields,
        json!({"name": "Jane Doe", "city": "Irvine", "since": 2020, "policies": "2 Auto + 1 Home"}),
        "template keys become profile fields; free keys stay facts"
    );
    assert_eq!(
        bio.as_deref(),
        Some("Jane Doe | Irvine | Client since 2020 | 2 Auto + 1 Home")
    );
    assert_eq!(calls, 1);
    let (samples, formality, sentiment, patience) = averages(&tdb, customer).await;
    assert_eq!(samples, 1);
    assert_close(formality, 0.7, "formality");
    assert_close(sentiment, 0.5, "sentiment");
    assert_close(patience, 0.8, "patience");
    let notes: String = scalar(&tdb, customer, "SELECT style_notes FROM call_personality").await;
    assert_eq!(notes, "Polite and brief.");
    tdb.close().await;
}

#[tokio::test]
async fn invalid_replies_are_asked_again_then_the_heuristic_analysis_is_stored() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-invalid", "+15550005002", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAinvalid",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let out_of_range = analysis(SUMMARY, json!({}), scores(1.5, 0.0));
    let analyst = Scripted::new(vec![
        Ok("Sure! The caller wanted a quote.".to_string()),
        Ok(out_of_range),
    ]);

    let outcomes = runner(&tdb, Some(analyst.clone()))
        .drain()
        .await
        .expect("drain");
    assert!(
        matches!(outcomes.as_slice(), [StepOutcome::Done { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(
        analyst.calls(),
        3,
        "one ask and two more (invalid_reply_retries = 2)"
    );
    // Each retry carries the bad reply and what was wrong with it.
    let retry = analyst.prompt(2);
    let last = format!("{:?}", retry.last().expect("messages"));
    assert!(last.contains("personality.formality"), "{last}");
    assert_eq!(retry.len(), 2 + 2 * 2);

    let (summary, _, _, source) = summary_of(&tdb, customer, call_id)
        .await
        .expect("a summary");
    assert_eq!(source, "heuristic");
    assert!(summary.contains("spoke 2 times"), "{summary}");
    let (name, _, bio, _) = profile(&tdb, customer).await;
    assert_eq!(
        name.as_deref(),
        Some("Jane Doe"),
        "the heuristic heard the name"
    );
    assert_eq!(bio.as_deref(), Some("Jane Doe"));
    assert_eq!(
        averages(&tdb, customer).await.0,
        1,
        "heuristic personality stored"
    );
    assert_eq!(
        count(&tdb, customer, "call_turns").await,
        4,
        "the transcript is intact"
    );
    tdb.close().await;
}

#[tokio::test]
async fn an_invalid_reply_followed_by_a_valid_one_stores_the_model_analysis() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-second", "+15550005003", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAsecond",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let analyst = Scripted::new(vec![
        Ok("{\"summary\": \"cut off".to_string()),
        Ok(analysis(
            SUMMARY,
            json!({"name": "Jane Doe"}),
            scores(0.5, 0.0),
        )),
    ]);
    let handler = handler(&tdb, Some(analyst.clone()), 1);
    let outcome = handler
        .process(customer, "CAsecond")
        .await
        .expect("processed");
    assert_eq!(
        outcome,
        PostCallOutcome::Stored {
            source: SummarySource::Llm,
            facts_changed: 1,
            personality: true
        }
    );
    assert_eq!(analyst.calls(), 2);
    assert_eq!(
        summary_of(&tdb, customer, call_id)
            .await
            .expect("summary")
            .3,
        "llm"
    );
    tdb.close().await;
}

#[tokio::test]
async fn a_failing_model_backs_off_and_the_job_is_dead_after_its_last_attempt() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-failing", "+15550005004", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAfailing",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let analyst = Scripted::new(vec![Err(ProviderError::Server {
        provider: "scripted",
        status: 503,
        message: "overloaded".into(),
    })]);
    let runner = runner(&tdb, Some(analyst.clone()));
    let job_id = job_of(&tdb, customer, "CAfailing").await.job_id;

    let mut delays = Vec::new();
    for attempt in 1..=recovery::POST_CALL_MAX_ATTEMPTS {
        make_due(&tdb, customer, job_id).await;
        match runner.step().await.expect("step") {
            StepOutcome::Retrying {
                delay, attempt: a, ..
            } => {
                assert_eq!(a, i32::try_from(attempt).expect("small"));
                delays.push(delay.as_secs());
            }
            StepOutcome::Dead { attempts, .. } => {
                assert_eq!(attempt, recovery::POST_CALL_MAX_ATTEMPTS);
                assert_eq!(attempts, 5);
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(delays, vec![30, 60, 120, 240], "exponential backoff");
    assert_eq!(analyst.calls(), 5, "no retry inside a run on vendor errors");
    let job = job_of(&tdb, customer, "CAfailing").await;
    assert_eq!(job.status, "dead");
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("overloaded"),
        "{:?}",
        job.last_error
    );
    assert!(summary_of(&tdb, customer, call_id).await.is_none());
    assert_eq!(
        count(&tdb, customer, "call_turns").await,
        4,
        "the transcript is intact"
    );
    assert_eq!(count(&tdb, customer, "caller_profiles").await, 0);
    tdb.close().await;
}

#[tokio::test]
async fn a_model_refusing_the_request_gets_the_heuristic_at_once() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-refused", "+15550005005", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CArefused",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let analyst = Scripted::new(vec![Err(ProviderError::Unauthorized {
        provider: "scripted",
        message: "bad key".into(),
    })]);
    let outcomes = runner(&tdb, Some(analyst.clone()))
        .drain()
        .await
        .expect("drain");
    assert!(
        matches!(outcomes.as_slice(), [StepOutcome::Done { .. }]),
        "{outcomes:?}"
    );
    assert_eq!(analyst.calls(), 1);
    assert_eq!(
        summary_of(&tdb, customer, call_id)
            .await
            .expect("summary")
            .3,
        "heuristic"
    );
    tdb.close().await;
}

#[tokio::test]
async fn a_slow_model_times_out_the_run_which_is_retried_later() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-slow", "+15550005006", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAslow",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let mute = Arc::new(Mute {
        calls: AtomicU32::new(0),
    });
    let outcome = runner(&tdb, Some(mute.clone())).step().await.expect("step");
    assert!(
        matches!(outcome, StepOutcome::Retrying { attempt: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(mute.calls.load(Ordering::SeqCst), 1);
    let job = job_of(&tdb, customer, "CAslow").await;
    assert!(
        job.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("no analysis within"),
        "{:?}",
        job.last_error
    );
    assert!(summary_of(&tdb, customer, call_id).await.is_none());

    // The model is back: the retry succeeds.
    make_due(&tdb, customer, job.job_id).await;
    let analyst = Scripted::always(&analysis(SUMMARY, json!({}), scores(0.5, 0.0)));
    let outcome = runner(&tdb, Some(analyst)).step().await.expect("step");
    assert!(matches!(outcome, StepOutcome::Done { .. }), "{outcome:?}");
    assert_eq!(
        summary_of(&tdb, customer, call_id)
            .await
            .expect("summary")
            .3,
        "llm"
    );
    tdb.close().await;
}

#[tokio::test]
async fn the_platform_openai_account_analyses_calls_through_the_real_client() {
    use crate::fake_openai::{sse_body, text_chunks, FakeOpenAi, Reply};
    use switchboard::configuration::{ProviderMode, VendorAccount};
    use switchboard::jobs::JobError;

    const KEY: &str = "sk-platform-key-for-post-call-tests";
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-openai", "+15550005013", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAopenai",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    ended_call(
        &tdb,
        customer,
        "CAdown",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    // The reply streamed as the vendor does: fenced JSON in small pieces.
    let reply = format!(
        "```json\n{}\n```",
        analysis(
            SUMMARY,
            json!({"name": "Jane Doe", "policies": "2 Auto"}),
            scores(0.6, 0.4)
        )
    );
    let pieces: Vec<&str> = reply
        .as_bytes()
        .chunks(40)
        .map(|c| std::str::from_utf8(c).expect("ASCII reply"))
        .collect();
    let fake = FakeOpenAi::start(
        Some(KEY),
        vec![
            Reply::sse(&sse_body(&text_chunks(&pieces, 300, 120)), 7),
            Reply::server_error(),
        ],
    )
    .await;

    let mut settings = tdb.settings.clone();
    assert!(
        switchboard::startup::post_call_analyst(&settings).is_none(),
        "fake providers: the heuristic analysis"
    );
    settings.providers = ProviderMode::Auto;
    settings.vendors.insert(
        "openai",
        VendorAccount {
            api_key: Some(KEY.to_string().into()),
            base_url: Some(fake.base_url.clone()),
            model: Some("gpt-4o-mini-test".to_string()),
            voice_id: None,
        },
    );
    let analyst = switchboard::startup::post_call_analyst(&settings).expect("an analyst");
    assert_eq!(analyst.name(), "openai");
    let handler = handler(&tdb, Some(analyst), 2);

    let outcome = handler
        .process(customer, "CAopenai")
        .await
        .expect("processed");
    assert!(
        matches!(
            outcome,
            PostCallOutcome::Stored {
                source: SummarySource::Llm,
                ..
            }
        ),
        "{outcome:?}"
    );
    let (summary, _, _, _) = summary_of(&tdb, customer, call_id).await.expect("summary");
    assert_eq!(summary, SUMMARY);
    assert_eq!(
        profile(&tdb, customer).await.2.as_deref(),
        Some("Jane Doe | 2 Auto")
    );
    let request = &fake.requests()[0].body;
    assert_eq!(request["model"], json!("gpt-4o-mini-test"));
    assert_eq!(request["messages"].as_array().map(Vec::len), Some(2));
    assert!(request
        .get("tools")
        .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty)));

    // The vendor fails: the run fails for the queue to retry.
    let failed = handler.process(customer, "CAdown").await;
    assert!(matches!(failed, Err(JobError::Retry(_))), "{failed:?}");
    tdb.close().await;
}

// ---------------------------------------------------------------------------
// Idempotency, supersession, averages.
// ---------------------------------------------------------------------------

/// (fact_id, value, source_call_id, superseded_by, superseded) of a fact.
type FactRow = (Uuid, Value, Option<Uuid>, Option<Uuid>, bool);

/// Row counts and values that a second run must leave as they were.
async fn snapshot(tdb: &TestDb, customer: CustomerId) -> Vec<String> {
    let mut out = Vec::new();
    for table in [
        "call_summaries",
        "caller_facts",
        "call_personality",
        "caller_personality",
        "caller_profiles",
        "call_turns",
    ] {
        out.push(format!("{table}: {}", count(tdb, customer, table).await));
    }
    out.push(format!("{:?}", averages(tdb, customer).await));
    out.push(format!("{:?}", profile(tdb, customer).await));
    out.push(format!("{:?}", current_facts(tdb, customer).await));
    out
}

#[tokio::test]
async fn running_the_job_twice_changes_nothing() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-twice", "+15550005007", "insurance").await;
    ended_call(
        &tdb,
        customer,
        "CAtwice",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let analyst = Scripted::always(&analysis(
        SUMMARY,
        json!({"name": "Jane Doe", "city": "Irvine"}),
        scores(0.7, 0.5),
    ));
    let runner = runner(&tdb, Some(analyst.clone()));
    runner.drain().await.expect("drain");
    let before = snapshot(&tdb, customer).await;

    // Enqueued again (the driver and crash recovery both enqueue): nothing.
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let again = recovery::enqueue_post_call(&mut tx, "CAtwice")
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert!(!again.created);
    assert!(runner.drain().await.expect("drain").is_empty());

    // A worker that crashed after writing but before settling: the job runs
    // again, and finds the work done.
    execute(
        &tdb,
        customer,
        "UPDATE jobs SET status = 'queued', run_at = now() - interval '1 second'",
    )
    .await;
    let outcomes = runner.drain().await.expect("drain");
    assert!(
        matches!(outcomes.as_slice(), [StepOutcome::Done { .. }]),
        "{outcomes:?}"
    );
    // And the handler called directly.
    let direct = handler(&tdb, Some(analyst.clone()), 2)
        .process(customer, "CAtwice")
        .await
        .expect("processed");
    assert_eq!(direct, PostCallOutcome::AlreadyDone);

    assert_eq!(analyst.calls(), 1, "the model is asked once per call");
    assert_eq!(snapshot(&tdb, customer).await, before);
    tdb.close().await;
}

#[tokio::test]
async fn a_newer_value_supersedes_the_old_one_and_averages_cover_every_call() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-supersede", "+15550005008", "real_estate").await;
    let now = Utc::now();
    let hours = |h: i64| now - chrono::Duration::hours(h);
    let first = ended_call(
        &tdb,
        customer,
        "CAfirst",
        Some(CALLER),
        hours(48),
        CONVERSATION,
    )
    .await;
    let second = ended_call(
        &tdb,
        customer,
        "CAsecond",
        Some(CALLER),
        hours(24),
        CONVERSATION,
    )
    .await;
    let reply = |budget: i64, formality: f64, sentiment: f64| {
        analysis(
            SUMMARY,
            json!({"name": "Jane Doe", "role": "Buyer", "budget": budget, "financing": "Pre-approved"}),
            scores(formality, sentiment),
        )
    };
    let run = |sid: &'static str, reply: String| {
        let handler = handler(&tdb, Some(Scripted::always(&reply)), 0);
        async move { handler.process(customer, sid).await.expect("processed") }
    };
    run("CAfirst", reply(500_000, 0.2, -0.5)).await;
    assert_eq!(
        profile(&tdb, customer).await.2.as_deref(),
        Some("Jane Doe | Buyer | $500K budget | Pre-approved")
    );
    run("CAsecond", reply(750_000, 0.6, 0.5)).await;

    // The budget changed: the old fact is kept, pointing at the new one.
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let budgets: Vec<FactRow> = sqlx::query_as(
        "SELECT fact_id, value, source_call_id, superseded_by, superseded_at IS NOT NULL
         FROM caller_facts WHERE key = 'budget' ORDER BY created_at, superseded_at NULLS LAST",
    )
    .fetch_all(tx.conn())
    .await
    .expect("facts");
    tx.rollback().await.expect("rollback");
    let [old, new] = budgets.as_slice() else {
        panic!("two budget facts: {budgets:?}");
    };
    assert_eq!(
        (&old.1, old.2, old.3, old.4),
        (&json!(500_000), Some(first), Some(new.0), true)
    );
    assert_eq!(
        (&new.1, new.2, new.3, new.4),
        (&json!(750_000), Some(second), None, false)
    );
    // Unchanged values were not written again.
    assert_eq!(count(&tdb, customer, "caller_facts").await, 5);
    let (_, fields, bio, calls) = profile(&tdb, customer).await;
    assert_eq!(fields["budget"], json!(750_000));
    assert_eq!(
        bio.as_deref(),
        Some("Jane Doe | Buyer | $750K budget | Pre-approved")
    );
    assert_eq!(calls, 2);
    // Running averages over the two calls, kept in SQL.
    let (samples, formality, sentiment, patience) = averages(&tdb, customer).await;
    assert_eq!(samples, 2);
    assert_close(formality, 0.4, "formality");
    assert_close(sentiment, 0.0, "sentiment");
    assert_close(patience, 0.8, "patience");

    // A call older than both, processed late, never supersedes the newer
    // budget: its value is kept as history only.
    let late = ended_call(
        &tdb,
        customer,
        "CAlate",
        Some(CALLER),
        hours(72),
        CONVERSATION,
    )
    .await;
    run("CAlate", reply(400_000, 0.8, 0.5)).await;
    assert!(current_facts(&tdb, customer)
        .await
        .contains(&("budget".to_string(), json!(750_000))));
    let (_, fields, bio, calls) = profile(&tdb, customer).await;
    assert_eq!(fields["budget"], json!(750_000));
    assert_eq!(
        bio.as_deref(),
        Some("Jane Doe | Buyer | $750K budget | Pre-approved")
    );
    assert_eq!(calls, 3);
    let history: (Option<Uuid>, bool) = {
        let mut tx = tdb.db().tenant(customer).await.expect("tx");
        let row = sqlx::query_as(
            "SELECT superseded_by, superseded_at IS NOT NULL FROM caller_facts
             WHERE key = 'budget' AND source_call_id = $1",
        )
        .bind(late)
        .fetch_one(tx.conn())
        .await
        .expect("late fact");
        tx.rollback().await.expect("rollback");
        row
    };
    assert_eq!(history, (Some(new.0), true));
    let (samples, formality, _, _) = averages(&tdb, customer).await;
    assert_eq!(samples, 3);
    assert_close(
        formality,
        (0.2 + 0.6 + 0.8) / 3.0,
        "formality over three calls",
    );
    tdb.close().await;
}

#[tokio::test]
async fn heuristic_guesses_fill_unknown_keys_but_never_supersede() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-guess", "+15550005014", "insurance").await;
    let now = Utc::now();
    ended_call(
        &tdb,
        customer,
        "CAmodel",
        Some(CALLER),
        now - chrono::Duration::hours(2),
        CONVERSATION,
    )
    .await;
    ended_call(
        &tdb,
        customer,
        "CAguess",
        Some(CALLER),
        now - chrono::Duration::hours(1),
        &[
            ("agent", "Hello again!"),
            (
                "caller",
                "Hi, my name is Janet Smith. Please email me at jane@example.com.",
            ),
        ],
    )
    .await;
    let model = Scripted::always(&analysis(
        SUMMARY,
        json!({"name": "Jane Doe", "city": "Irvine"}),
        scores(0.5, 0.0),
    ));
    handler(&tdb, Some(model), 0)
        .process(customer, "CAmodel")
        .await
        .expect("processed");
    // No model for the second call: the rules guess.
    let outcome = handler(&tdb, None, 0)
        .process(customer, "CAguess")
        .await
        .expect("processed");
    assert_eq!(
        outcome,
        PostCallOutcome::Stored {
            source: SummarySource::Heuristic,
            facts_changed: 1,
            personality: true
        }
    );
    assert_eq!(
        current_facts(&tdb, customer).await,
        vec![
            ("city".to_string(), json!("Irvine")),
            ("email".to_string(), json!("jane@example.com")),
            ("name".to_string(), json!("Jane Doe")),
        ]
    );
    let kept: (Option<Uuid>, bool) = scalar_row(
        &tdb,
        customer,
        "SELECT superseded_by, superseded_at IS NOT NULL FROM caller_facts
         WHERE key = 'name' AND value = '\"Janet Smith\"'",
    )
    .await;
    assert!(kept.0.is_some() && kept.1, "the guess is history: {kept:?}");
    assert_eq!(profile(&tdb, customer).await.0.as_deref(), Some("Jane Doe"));
    tdb.close().await;
}

#[tokio::test]
async fn a_withheld_caller_gets_a_summary_and_nothing_else() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-withheld", "+15550005009", "insurance").await;
    let call_id = ended_call(&tdb, customer, "CAwithheld", None, Utc::now(), CONVERSATION).await;
    let analyst = Scripted::always(&analysis(
        SUMMARY,
        json!({"name": "Jane Doe"}),
        scores(0.5, 0.0),
    ));
    let outcome = handler(&tdb, Some(analyst), 2)
        .process(customer, "CAwithheld")
        .await
        .expect("processed");
    assert_eq!(
        outcome,
        PostCallOutcome::Stored {
            source: SummarySource::Llm,
            facts_changed: 0,
            personality: false
        }
    );
    assert_eq!(
        summary_of(&tdb, customer, call_id)
            .await
            .expect("summary")
            .0,
        SUMMARY
    );
    for table in [
        "caller_profiles",
        "caller_facts",
        "call_personality",
        "caller_personality",
    ] {
        assert_eq!(count(&tdb, customer, table).await, 0, "{table}");
    }
    tdb.close().await;
}

#[tokio::test]
async fn a_call_where_the_caller_said_nothing_is_summarised_without_the_model() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-silent", "+15550005010", "insurance").await;
    let call_id = ended_call(
        &tdb,
        customer,
        "CAsilent",
        Some(CALLER),
        Utc::now(),
        &[("agent", "Thanks for calling, how can I help?")],
    )
    .await;
    let never_called = ended_call(&tdb, customer, "CAnoturns", Some(CALLER), Utc::now(), &[]).await;
    let analyst = Scripted::always("unused");
    let outcomes = runner(&tdb, Some(analyst.clone()))
        .drain()
        .await
        .expect("drain");
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(analyst.calls(), 0);
    for call in [call_id, never_called] {
        let (summary, topics, _, source) = summary_of(&tdb, customer, call).await.expect("summary");
        assert_eq!(
            (summary.as_str(), source.as_str()),
            (SILENT_CALL_SUMMARY, "heuristic")
        );
        assert!(topics.is_empty());
    }
    assert_eq!(count(&tdb, customer, "call_personality").await, 0);
    assert_eq!(
        profile(&tdb, customer).await.3,
        2,
        "both still count as calls"
    );
    tdb.close().await;
}

#[tokio::test]
async fn a_job_for_a_call_the_tenant_does_not_have_is_dead_at_once() {
    let tdb = TestDb::new().await;
    let customer = tenant(&tdb, "pc-nocall", "+15550005011", "insurance").await;
    let other = tenant(&tdb, "pc-nocall-other", "+15550005012", "insurance").await;
    ended_call(
        &tdb,
        other,
        "CAtheirs",
        Some(CALLER),
        Utc::now(),
        CONVERSATION,
    )
    .await;
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    recovery::enqueue_post_call(&mut tx, "CAtheirs")
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    let analyst = Scripted::always(&analysis(SUMMARY, json!({}), scores(0.5, 0.0)));
    let runner = runner(&tdb, Some(analyst));
    let outcomes = runner.drain().await.expect("drain");
    // The other tenant's own job is done; the job naming its call from
    // this tenant finds no such call (RLS) and is dead.
    assert!(
        outcomes.iter().any(|o| matches!(o, StepOutcome::Dead { customer_id, attempts: 1, .. } if *customer_id == customer)),
        "{outcomes:?}"
    );
    assert_eq!(count(&tdb, customer, "call_summaries").await, 0);
    assert_eq!(count(&tdb, other, "call_summaries").await, 1);
    tdb.close().await;
}

// ---------------------------------------------------------------------------
// Retention.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn retention_deletes_only_old_transcripts_of_tenants_with_a_period() {
    let tdb = TestDb::new().await;
    let keeps = tenant(&tdb, "ret-keep-30", "+15550005020", "insurance").await;
    let forever = tenant(&tdb, "ret-forever", "+15550005021", "insurance").await;
    execute(
        &tdb,
        keeps,
        "UPDATE customers SET transcript_retention_days = 30",
    )
    .await;
    let now = Utc::now();
    let days = |d: i64| now - chrono::Duration::days(d);
    let old = ended_call(&tdb, keeps, "CAold", Some(CALLER), days(40), CONVERSATION).await;
    let recent = ended_call(&tdb, keeps, "CArecent", Some(CALLER), days(1), CONVERSATION).await;
    let pending = ended_call(
        &tdb,
        keeps,
        "CApending",
        Some(CALLER),
        days(45),
        CONVERSATION,
    )
    .await;
    let theirs = ended_call(
        &tdb,
        forever,
        "CAtheirs",
        Some(CALLER),
        days(400),
        CONVERSATION,
    )
    .await;
    // Every post-call job is settled except CApending's.
    execute(
        &tdb,
        keeps,
        "UPDATE jobs SET status = 'done' WHERE idempotency_key <> 'CApending'",
    )
    .await;
    execute(&tdb, forever, "UPDATE jobs SET status = 'done'").await;
    execute(
        &tdb,
        keeps,
        &format!(
            "INSERT INTO sms_messages (customer_id, sms_id, direction, user_id, from_number, to_number,
                                       body, status, created_at)
             VALUES ('{keeps}', gen_random_uuid(), 'outbound', '{CALLER}', '+15550005020', '{CALLER}',
                     'Your quote is ready', 'delivered', now() - interval '31 days'),
                    ('{keeps}', gen_random_uuid(), 'outbound', '{CALLER}', '+15550005020', '{CALLER}',
                     'See you Friday', 'delivered', now() - interval '2 days')"
        ),
    )
    .await;

    assert_eq!(
        retention::schedule(tdb.db(), now).await.expect("schedule"),
        1
    );
    assert_eq!(
        retention::schedule(tdb.db(), now).await.expect("schedule"),
        0,
        "once per tenant per day"
    );
    let runner = JobRunner::new(tdb.db().clone(), runner_config())
        .with_handler(RETENTION, Arc::new(RetentionHandler::new(tdb.db().clone())));
    let outcomes = runner.drain().await.expect("drain");
    assert!(
        matches!(outcomes.as_slice(), [StepOutcome::Done { customer_id, .. }] if *customer_id == keeps),
        "{outcomes:?}"
    );

    let turns_of = |customer: CustomerId, call: Uuid| {
        let tdb = &tdb;
        async move {
            scalar::<i64>(
                tdb,
                customer,
                &format!("SELECT count(*) FROM call_turns WHERE call_id = '{call}'"),
            )
            .await
        }
    };
    assert_eq!(turns_of(keeps, old).await, 0, "older than 30 days: gone");
    assert_eq!(turns_of(keeps, recent).await, 4, "recent: kept");
    assert_eq!(
        turns_of(keeps, pending).await,
        4,
        "post-call work pending: kept"
    );
    assert_eq!(
        turns_of(forever, theirs).await,
        4,
        "no retention period: kept"
    );
    assert_eq!(count(&tdb, keeps, "calls").await, 3, "call records stay");
    let bodies: Vec<String> = {
        let mut tx = tdb.db().tenant(keeps).await.expect("tx");
        let rows = sqlx::query_scalar("SELECT body FROM sms_messages ORDER BY created_at")
            .fetch_all(tx.conn())
            .await
            .expect("sms");
        tx.rollback().await.expect("rollback");
        rows
    };
    assert_eq!(bodies, vec!["".to_string(), "See you Friday".to_string()]);
    let audit: Value = scalar(
        &tdb,
        keeps,
        "SELECT details FROM audit_log WHERE action = 'transcripts.expire'",
    )
    .await;
    assert_eq!(
        (audit["calls"].clone(), audit["turns"].clone()),
        (json!(1), json!(4))
    );
    tdb.close().await;
}

// ---------------------------------------------------------------------------
// The server's own runner.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_server_runs_post_call_jobs_in_the_background() {
    let app = spawn_app().await;
    let customer = app
        .platform
        .create_tenant("test", tenant_input("pc-server", "+15550005030"))
        .await
        .expect("tenant")
        .customer
        .customer_id;
    let mut tx = app.platform.db().tenant(customer).await.expect("tx");
    let call = repo::calls::create(
        &mut tx,
        &NewCall {
            call_sid: "CAserver",
            user_id: Some(CALLER),
            to_number: "+15550005030",
            direction: "inbound",
            status: "completed",
            started_at: Utc::now(),
        },
    )
    .await
    .expect("call");
    repo::turns::append(
        &mut tx,
        call.call_id,
        &Turn {
            seq: 0,
            speaker: "caller".into(),
            text: "Hello, my name is Sam Lee and I need a quote.".into(),
            interrupted: false,
            start_ms: None,
            end_ms: None,
            timings: json!({}),
        },
    )
    .await
    .expect("turn");
    recovery::enqueue_post_call(&mut tx, "CAserver")
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");

    // Fake providers: the heuristic analysis, run by the server's runner.
    let stored = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut tx = app.platform.db().tenant(customer).await.expect("tx");
            let found: Option<(String,)> =
                sqlx::query_as("SELECT source FROM call_summaries WHERE call_id = $1")
                    .bind(call.call_id)
                    .fetch_optional(tx.conn())
                    .await
                    .expect("summary");
            tx.rollback().await.expect("rollback");
            if let Some((source,)) = found {
                return source;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server ran the post-call job");
    assert_eq!(stored, "heuristic");
    app.stop()
        .await
        .expect("the server stops cleanly with its runner");
}
