//! The durable job queue against real PostgreSQL as the application role:
//! idempotent enqueue, retries with backoff, dead letters, concurrent
//! runners, expired leases, kinds with no handler, the polling loop, and
//! startup crash recovery of calls left open (with their post-call jobs).
//!
//! Retries are made due by moving `run_at` into the past, never by sleeping.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use switchboard::call::registry::{LiveCall, LiveCalls};
use switchboard::db::CustomerId;
use switchboard::jobs::recovery::{self, Recovery, POST_CALL};
use switchboard::jobs::{
    self, Backoff, Job, JobError, JobHandler, JobRunner, RunnerConfig, StepOutcome,
};
use switchboard::repo;
use switchboard::repo::calls::NewCall;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{drop_database, test_settings, TestDb};

const KIND: &str = "test_work";

/// Deterministic settings: no jitter, a 30 s base so retries are never due
/// by themselves during a test.
fn config() -> RunnerConfig {
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

/// Fails its first `failures` runs, then succeeds; counts runs.
#[derive(Default)]
struct Flaky {
    failures: u32,
    permanent: bool,
    runs: AtomicU32,
}

impl JobHandler for Flaky {
    fn run(&self, _customer: CustomerId, _payload: Value) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if n > self.failures {
                Ok(())
            } else if self.permanent {
                Err(JobError::Permanent(format!("bad payload (run {n})")))
            } else {
                Err(JobError::Retry(format!("vendor unavailable (run {n})")))
            }
        })
    }
}

/// Records every (tenant, payload `n`) it runs.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(CustomerId, i64)>>,
}

impl JobHandler for Recorder {
    fn run(&self, customer: CustomerId, payload: Value) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let n = payload["n"]
                .as_i64()
                .ok_or_else(|| JobError::Permanent("no n".into()))?;
            // Give the other runner a chance to interleave.
            tokio::task::yield_now().await;
            self.seen.lock().expect("recorder lock").push((customer, n));
            Ok(())
        })
    }
}

async fn enqueue(tdb: &TestDb, customer: CustomerId, key: &str, max_attempts: u32) -> Uuid {
    let mut tx = tdb.db().tenant(customer).await.expect("tenant tx");
    let enqueued = jobs::enqueue(&mut tx, KIND, key, &json!({ "key": key }), max_attempts)
        .await
        .expect("enqueue");
    tx.commit().await.expect("commit");
    assert!(enqueued.created, "{key} is a new key");
    enqueued.job_id
}

async fn job(tdb: &TestDb, customer: CustomerId, job_id: Uuid) -> Job {
    let mut tx = tdb.db().tenant(customer).await.expect("tenant tx");
    let job = repo::jobs::get(&mut tx, job_id)
        .await
        .expect("read job")
        .expect("job exists");
    tx.rollback().await.expect("rollback");
    job
}

/// Runs `sql` on one job in its tenant's transaction (test set-up only).
async fn alter(tdb: &TestDb, customer: CustomerId, job_id: Uuid, sql: &str) {
    let mut tx = tdb.db().tenant(customer).await.expect("tenant tx");
    let done = sqlx::query(sql)
        .bind(job_id)
        .execute(tx.conn())
        .await
        .expect("alter job");
    assert_eq!(done.rows_affected(), 1, "{sql}");
    tx.commit().await.expect("commit");
}

/// Makes a rescheduled job due now instead of waiting for its backoff.
async fn make_due(tdb: &TestDb, customer: CustomerId, job_id: Uuid) {
    alter(
        tdb,
        customer,
        job_id,
        "UPDATE jobs SET run_at = now() - interval '1 second' WHERE job_id = $1",
    )
    .await;
}

/// How far in the future the job was rescheduled, in seconds, measured
/// against the time of the update that rescheduled it.
async fn backoff_secs(tdb: &TestDb, customer: CustomerId, job_id: Uuid) -> f64 {
    let mut tx = tdb.db().tenant(customer).await.expect("tenant tx");
    let secs: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - updated_at)::float8 FROM jobs WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(tx.conn())
    .await
    .expect("read run_at");
    tx.rollback().await.expect("rollback");
    secs
}

async fn count_jobs(tdb: &TestDb, customer: CustomerId, kind: &str) -> i64 {
    let mut tx = tdb.db().tenant(customer).await.expect("tenant tx");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1")
        .bind(kind)
        .fetch_one(tx.conn())
        .await
        .expect("count");
    tx.rollback().await.expect("rollback");
    n
}

#[tokio::test]
async fn enqueue_is_idempotent_per_key() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-idem", "+15550004000").await;
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let first = jobs::enqueue(&mut tx, KIND, "CAkey", &json!({"v": 1}), 3)
        .await
        .expect("first");
    let second = jobs::enqueue(&mut tx, KIND, "CAkey", &json!({"v": 2}), 9)
        .await
        .expect("second");
    // The same key under another kind is another job.
    let other_kind = jobs::enqueue(&mut tx, "other_kind", "CAkey", &json!({}), 3)
        .await
        .expect("other kind");
    tx.commit().await.expect("commit");
    assert!(first.created && !second.created && other_kind.created);
    assert_eq!(
        first.job_id, second.job_id,
        "the existing job id comes back"
    );
    assert_ne!(first.job_id, other_kind.job_id);
    assert_eq!(count_jobs(&tdb, customer, KIND).await, 1);
    let stored = job(&tdb, customer, first.job_id).await;
    assert_eq!(
        stored.payload,
        json!({"v": 1}),
        "the second enqueue changed nothing"
    );
    assert_eq!((stored.max_attempts, stored.attempts), (3, 0));
    assert_eq!(stored.status, "queued");
    tdb.close().await;
}

#[tokio::test]
async fn a_job_that_fails_twice_backs_off_and_is_done_on_the_third_run() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-flaky", "+15550004001").await;
    let handler = Arc::new(Flaky {
        failures: 2,
        ..Flaky::default()
    });
    let runner = JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone());
    let job_id = enqueue(&tdb, customer, "CAflaky", 5).await;

    let outcomes = runner.drain().await.expect("drain 1");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Retrying {
            customer_id: customer,
            job_id,
            attempt: 1,
            delay: Duration::from_secs(30),
        }]
    );
    let after_one = job(&tdb, customer, job_id).await;
    assert_eq!(after_one.status, "queued");
    assert_eq!(after_one.attempts, 1);
    assert_eq!(after_one.locked_until, None);
    assert_eq!(
        after_one.last_error.as_deref(),
        Some("vendor unavailable (run 1)")
    );
    assert!((backoff_secs(&tdb, customer, job_id).await - 30.0).abs() < 1e-3);
    // Not due yet: the runner leaves it alone.
    assert_eq!(runner.step().await.expect("step"), StepOutcome::Idle);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);

    make_due(&tdb, customer, job_id).await;
    let outcomes = runner.drain().await.expect("drain 2");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Retrying {
            customer_id: customer,
            job_id,
            attempt: 2,
            delay: Duration::from_secs(60),
        }]
    );
    let after_two = job(&tdb, customer, job_id).await;
    assert_eq!(
        (after_two.status.as_str(), after_two.attempts),
        ("queued", 2)
    );
    assert_eq!(
        after_two.last_error.as_deref(),
        Some("vendor unavailable (run 2)")
    );
    assert!((backoff_secs(&tdb, customer, job_id).await - 60.0).abs() < 1e-3);

    make_due(&tdb, customer, job_id).await;
    let outcomes = runner.drain().await.expect("drain 3");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Done {
            customer_id: customer,
            job_id
        }]
    );
    let done = job(&tdb, customer, job_id).await;
    assert_eq!((done.status.as_str(), done.attempts), ("done", 3));
    assert_eq!(done.locked_until, None);
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
    assert!(runner.drain().await.expect("drain 4").is_empty());
    tdb.close().await;
}

#[tokio::test]
async fn a_job_that_always_fails_is_dead_after_max_attempts_with_its_last_error() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-dead", "+15550004002").await;
    let handler = Arc::new(Flaky {
        failures: u32::MAX,
        ..Flaky::default()
    });
    let runner = JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone());
    let job_id = enqueue(&tdb, customer, "CAdead", 3).await;
    let mut outcomes = runner.drain().await.expect("drain");
    while job(&tdb, customer, job_id).await.status == "queued" && outcomes.len() < 10 {
        make_due(&tdb, customer, job_id).await;
        outcomes.extend(runner.drain().await.expect("drain"));
    }
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(matches!(
        outcomes[..2],
        [
            StepOutcome::Retrying { attempt: 1, .. },
            StepOutcome::Retrying { attempt: 2, .. }
        ]
    ));
    assert_eq!(
        outcomes[2],
        StepOutcome::Dead {
            customer_id: customer,
            job_id,
            attempts: 3
        }
    );
    let dead = job(&tdb, customer, job_id).await;
    assert_eq!((dead.status.as_str(), dead.attempts), ("dead", 3));
    assert_eq!(
        dead.last_error.as_deref(),
        Some("vendor unavailable (run 3)")
    );
    // Dead letters are never claimed again.
    make_due(&tdb, customer, job_id).await;
    assert!(runner.drain().await.expect("drain").is_empty());
    assert_eq!(handler.runs.load(Ordering::SeqCst), 3);
    tdb.close().await;
}

#[tokio::test]
async fn a_permanent_failure_is_dead_at_once() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-perm", "+15550004003").await;
    let handler = Arc::new(Flaky {
        failures: u32::MAX,
        permanent: true,
        ..Flaky::default()
    });
    let runner = JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone());
    let job_id = enqueue(&tdb, customer, "CAperm", 5).await;
    let outcomes = runner.drain().await.expect("drain");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Dead {
            customer_id: customer,
            job_id,
            attempts: 1
        }]
    );
    let dead = job(&tdb, customer, job_id).await;
    assert_eq!(dead.status, "dead");
    assert_eq!(
        dead.last_error.as_deref(),
        Some("permanent failure: bad payload (run 1)")
    );
    tdb.close().await;
}

#[tokio::test]
async fn enqueueing_a_done_job_again_changes_nothing_and_runs_nothing() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-twice", "+15550004004").await;
    let handler = Arc::new(Flaky::default());
    let runner = JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone());
    let job_id = enqueue(&tdb, customer, "CAonce", 5).await;
    assert_eq!(runner.drain().await.expect("drain").len(), 1);
    let before = job(&tdb, customer, job_id).await;
    assert_eq!(before.status, "done");

    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let again = jobs::enqueue(&mut tx, KIND, "CAonce", &json!({"again": true}), 5)
        .await
        .expect("enqueue again");
    tx.commit().await.expect("commit");
    assert_eq!(again.job_id, job_id);
    assert!(!again.created);
    assert!(runner.drain().await.expect("drain").is_empty());
    let after = job(&tdb, customer, job_id).await;
    assert_eq!(
        (
            after.status.as_str(),
            after.attempts,
            &after.payload,
            after.updated_at
        ),
        (
            before.status.as_str(),
            before.attempts,
            &before.payload,
            before.updated_at
        )
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    tdb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_draining_together_never_run_a_job_twice() {
    let tdb = TestDb::new().await;
    let tenants = [
        tdb.tenant("jobs-conc-a", "+15550004005").await,
        tdb.tenant("jobs-conc-b", "+15550004006").await,
    ];
    let mut expected = Vec::new();
    for (t, customer) in tenants.iter().enumerate() {
        let mut tx = tdb.db().tenant(*customer).await.expect("tx");
        for i in 0..20i64 {
            let n = i64::try_from(t).expect("index") * 100 + i;
            jobs::enqueue(&mut tx, KIND, &format!("job-{n}"), &json!({ "n": n }), 3)
                .await
                .expect("enqueue");
            expected.push((*customer, n));
        }
        tx.commit().await.expect("commit");
    }
    let recorder = Arc::new(Recorder::default());
    let first =
        Arc::new(JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, recorder.clone()));
    let second = Arc::new(
        JobRunner::new(tdb.app_pool(3).await, config()).with_handler(KIND, recorder.clone()),
    );
    let a = tokio::spawn({
        let r = first.clone();
        async move { r.drain().await }
    });
    let b = tokio::spawn({
        let r = second.clone();
        async move { r.drain().await }
    });
    let a = a.await.expect("runner a").expect("drain a");
    let b = b.await.expect("runner b").expect("drain b");
    let done = a
        .iter()
        .chain(&b)
        .filter(|o| matches!(o, StepOutcome::Done { .. }))
        .count();
    assert_eq!(done, 40, "runner a: {a:?}\nrunner b: {b:?}");

    let seen = recorder.seen.lock().expect("lock").clone();
    let mut runs: BTreeMap<(CustomerId, i64), usize> = BTreeMap::new();
    for key in seen {
        *runs.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "jobs run more than once: {twice:?}");
    expected.sort();
    assert_eq!(runs.keys().cloned().collect::<Vec<_>>(), expected);
    for customer in tenants {
        let mut tx = tdb.db().tenant(customer).await.expect("tx");
        let (done, attempts): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'done'), sum(attempts)::int8 FROM jobs",
        )
        .fetch_one(tx.conn())
        .await
        .expect("count");
        assert_eq!((done, attempts), (20, 20), "each job claimed exactly once");
    }
    tdb.close().await;
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_a_live_one_is_not() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-lease", "+15550004007").await;
    let handler = Arc::new(Flaky::default());
    let runner = JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone());
    let crashed = enqueue(&tdb, customer, "CAcrashed", 5).await;
    let busy = enqueue(&tdb, customer, "CAbusy", 5).await;
    // A worker claimed both, then crashed: one lease has run out, the other
    // worker is still within its lease.
    alter(
        &tdb,
        customer,
        crashed,
        "UPDATE jobs SET status = 'running', attempts = 1,
             locked_until = now() - interval '1 minute' WHERE job_id = $1",
    )
    .await;
    alter(
        &tdb,
        customer,
        busy,
        "UPDATE jobs SET status = 'running', attempts = 1,
             locked_until = now() + interval '10 minutes' WHERE job_id = $1",
    )
    .await;
    let outcomes = runner.drain().await.expect("drain");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Done {
            customer_id: customer,
            job_id: crashed
        }]
    );
    let recovered = job(&tdb, customer, crashed).await;
    assert_eq!((recovered.status.as_str(), recovered.attempts), ("done", 2));
    let untouched = job(&tdb, customer, busy).await;
    assert_eq!(
        (untouched.status.as_str(), untouched.attempts),
        ("running", 1)
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);

    // A job whose every allowed attempt was lost with its worker is dead,
    // not run again.
    let lost = enqueue(&tdb, customer, "CAlost", 2).await;
    alter(
        &tdb,
        customer,
        lost,
        "UPDATE jobs SET status = 'running', attempts = 2,
             locked_until = now() - interval '1 minute' WHERE job_id = $1",
    )
    .await;
    let outcomes = runner.drain().await.expect("drain");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Dead {
            customer_id: customer,
            job_id: lost,
            attempts: 3
        }]
    );
    let dead = job(&tdb, customer, lost).await;
    assert_eq!(dead.status, "dead");
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("lease expired")),
        "{:?}",
        dead.last_error
    );
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    tdb.close().await;
}

#[tokio::test]
async fn kinds_without_a_handler_stay_queued_with_their_attempts() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-kinds", "+15550004008").await;
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let post_call = recovery::enqueue_post_call(&mut tx, "CApostcall")
        .await
        .expect("post_call");
    tx.commit().await.expect("commit");
    let mine = enqueue(&tdb, customer, "CAmine", 5).await;
    let runner =
        JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, Arc::new(Flaky::default()));
    assert_eq!(runner.kinds(), [KIND.to_string()]);
    let outcomes = runner.drain().await.expect("drain");
    assert_eq!(
        outcomes,
        vec![StepOutcome::Done {
            customer_id: customer,
            job_id: mine
        }]
    );
    let waiting = job(&tdb, customer, post_call.job_id).await;
    assert_eq!(
        (waiting.status.as_str(), waiting.attempts),
        ("queued", 0),
        "no handler for post_call: never claimed"
    );
    assert_eq!(waiting.payload, json!({"call_sid": "CApostcall"}));
    // A runner with no handlers at all claims nothing.
    let idle = JobRunner::new(tdb.db().clone(), config());
    assert_eq!(idle.step().await.expect("step"), StepOutcome::Idle);
    tdb.close().await;
}

#[tokio::test]
async fn the_polling_loop_runs_due_jobs_and_stops_on_shutdown() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-loop", "+15550004009").await;
    let handler = Arc::new(Flaky::default());
    let runner =
        Arc::new(JobRunner::new(tdb.db().clone(), config()).with_handler(KIND, handler.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let runner = runner.clone();
        let shutdown = shutdown.clone();
        async move { runner.run(shutdown).await }
    });
    // Enqueued after the loop started: picked up by polling.
    let job_id = enqueue(&tdb, customer, "CAloop", 5).await;
    let finished = tokio::time::timeout(Duration::from_secs(20), async {
        while job(&tdb, customer, job_id).await.status != "done" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(finished.is_ok(), "the loop never ran the job");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the loop stops on shutdown")
        .expect("no panic");
    assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    tdb.close().await;
}

// ---------------------------------------------------------------------------
// Crash recovery.
// ---------------------------------------------------------------------------

async fn open_call(tdb: &TestDb, customer: CustomerId, sid: &str, to: &str, status: &str) {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    repo::calls::create(
        &mut tx,
        &NewCall {
            call_sid: sid,
            user_id: Some("+15557654321"),
            to_number: to,
            direction: "inbound",
            status,
            started_at: chrono::Utc::now(),
        },
    )
    .await
    .expect("call row");
    tx.commit().await.expect("commit");
}

async fn call(tdb: &TestDb, customer: CustomerId, sid: &str) -> repo::calls::Call {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let call = repo::calls::get_by_sid(&mut tx, sid)
        .await
        .expect("read call")
        .expect("call exists");
    tx.rollback().await.expect("rollback");
    call
}

async fn post_call_jobs(tdb: &TestDb, customer: CustomerId) -> Vec<(String, Value)> {
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let rows: Vec<(String, Value)> = sqlx::query_as(
        "SELECT idempotency_key, payload FROM jobs WHERE kind = $1 ORDER BY idempotency_key",
    )
    .bind(POST_CALL)
    .fetch_all(tx.conn())
    .await
    .expect("jobs");
    tx.rollback().await.expect("rollback");
    rows
}

#[tokio::test]
async fn crash_recovery_closes_open_calls_and_enqueues_one_post_call_job_each() {
    let tdb = TestDb::new().await;
    let a = tdb.tenant("jobs-crash-a", "+15550004010").await;
    let b = tdb.tenant("jobs-crash-b", "+15550004011").await;
    open_call(&tdb, a, "CAa_inprogress", "+15550004010", "in-progress").await;
    open_call(&tdb, a, "CAa_ringing", "+15550004010", "ringing").await;
    open_call(&tdb, a, "CAa_completed", "+15550004010", "in-progress").await;
    open_call(&tdb, a, "CAa_live", "+15550004010", "in-progress").await;
    open_call(&tdb, b, "CAb_reason", "+15550004011", "in-progress").await;
    {
        // A finished call, and one whose conversation ended (reason and
        // post-call job recorded by the driver) before the crash, with the
        // carrier's final status still to come.
        let mut tx = tdb.db().tenant(a).await.expect("tx");
        repo::calls::update_status(
            &mut tx,
            "CAa_completed",
            "completed",
            Some(chrono::Utc::now()),
            Some(30),
            None,
        )
        .await
        .expect("complete");
        tx.commit().await.expect("commit");
        let mut tx = tdb.db().tenant(b).await.expect("tx");
        repo::calls::record_end_reason(&mut tx, "CAb_reason", "agent_hangup")
            .await
            .expect("reason");
        recovery::enqueue_post_call(&mut tx, "CAb_reason")
            .await
            .expect("driver's job");
        tx.commit().await.expect("commit");
    }
    // This process is serving CAa_live right now.
    let live = LiveCalls::default();
    assert!(live.insert(
        "CAa_live",
        LiveCall {
            customer_id: a,
            stream_sid: "MZlive".into(),
            started_at: chrono::Utc::now(),
            cancel: CancellationToken::new(),
        }
    ));

    let first = recovery::recover_interrupted_calls(&tdb.platform, &live)
        .await
        .expect("recovery");
    assert_eq!(
        first,
        Recovery {
            tenants: 2,
            calls_closed: 3,
            jobs_enqueued: 2
        }
    );
    let second = recovery::recover_interrupted_calls(&tdb.platform, &live)
        .await
        .expect("second recovery");
    assert_eq!(second, Recovery::default(), "nothing left to recover");

    for sid in ["CAa_inprogress", "CAa_ringing"] {
        let c = call(&tdb, a, sid).await;
        assert_eq!(c.status, "interrupted", "{sid}");
        assert_eq!(c.end_reason.as_deref(), Some("interrupted"), "{sid}");
        assert!(c.ended_at.is_some(), "{sid}");
    }
    let kept = call(&tdb, b, "CAb_reason").await;
    assert_eq!(kept.status, "interrupted");
    assert!(kept.ended_at.is_some());
    assert_eq!(
        kept.end_reason.as_deref(),
        Some("agent_hangup"),
        "the first recorded reason wins"
    );
    let completed = call(&tdb, a, "CAa_completed").await;
    assert_eq!(completed.status, "completed");
    assert_eq!(completed.end_reason, None);
    let streaming = call(&tdb, a, "CAa_live").await;
    assert_eq!(
        (streaming.status.as_str(), streaming.ended_at),
        ("in-progress", None),
        "a call live in this process is not closed"
    );

    assert_eq!(
        post_call_jobs(&tdb, a).await,
        vec![
            (
                "CAa_inprogress".to_string(),
                json!({"call_sid": "CAa_inprogress"})
            ),
            (
                "CAa_ringing".to_string(),
                json!({"call_sid": "CAa_ringing"})
            ),
        ]
    );
    assert_eq!(
        post_call_jobs(&tdb, b).await,
        vec![("CAb_reason".to_string(), json!({"call_sid": "CAb_reason"}))],
        "exactly one post-call job per call"
    );
    tdb.close().await;
}

#[tokio::test]
async fn the_server_recovers_calls_a_crash_left_open_when_it_starts() {
    let (settings, database) = test_settings();
    // The previous process: a call in progress when it died.
    let runtime = switchboard::startup::Runtime::open(&settings)
        .await
        .expect("database opens");
    let customer = runtime
        .platform
        .create_tenant(
            "test",
            crate::helpers::tenant_input("jobs-restart", "+15550004012"),
        )
        .await
        .expect("tenant")
        .customer
        .customer_id;
    let mut tx = runtime.platform.db().tenant(customer).await.expect("tx");
    repo::calls::create(
        &mut tx,
        &NewCall {
            call_sid: "CArestart",
            user_id: None,
            to_number: "+15550004012",
            direction: "inbound",
            status: "in-progress",
            started_at: chrono::Utc::now(),
        },
    )
    .await
    .expect("call");
    tx.commit().await.expect("commit");
    runtime.close().await.expect("close");

    let app = switchboard::startup::Application::build(settings)
        .await
        .expect("app builds");
    let platform = app.state().platform.clone();
    let mut tx = platform.db().tenant(customer).await.expect("tx");
    let c = repo::calls::get_by_sid(&mut tx, "CArestart")
        .await
        .expect("read")
        .expect("call");
    let job = repo::jobs::find(&mut tx, POST_CALL, "CArestart")
        .await
        .expect("read job");
    tx.rollback().await.expect("rollback");
    drop(app);
    platform.db().close().await;
    drop_database(&database).await;
    assert_eq!(c.status, "interrupted");
    assert_eq!(c.end_reason.as_deref(), Some("interrupted"));
    let job = job.expect("a post_call job was enqueued at startup");
    assert_eq!((job.status.as_str(), job.attempts), ("queued", 0));
}

#[tokio::test]
async fn a_call_that_ends_normally_gets_its_post_call_job() {
    use switchboard::call::driver::{self, StreamOutcome, WsIn, WsOut};
    use tokio::sync::mpsc;

    const SID: &str = "CAfeedfacefeedfacefeedfacefeedface";
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("jobs-driver", "+15550004013").await;
    open_call(&tdb, customer, SID, "+15550004013", "ringing").await;
    let (ctx, token) = crate::helpers::driver_context(&tdb, customer, SID);
    let (to_driver, rx) = mpsc::channel::<WsIn>(16);
    let (out, mut from_driver) = mpsc::channel::<WsOut>(4096);
    let incoming =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let driver = tokio::spawn(driver::run(Box::pin(incoming), out, ctx));
    for message in [
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
               "start": {"accountSid": "AC0", "streamSid": "MZ1", "callSid": SID,
                         "tracks": ["inbound"],
                         "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                         "customParameters": {"callToken": token}}}),
    ] {
        to_driver
            .send(WsIn::Text(message.to_string()))
            .await
            .expect("driver listening");
    }
    // The greeting starts; the caller hangs up.
    let first = tokio::time::timeout(Duration::from_secs(10), from_driver.recv())
        .await
        .expect("the driver answers");
    assert!(matches!(first, Some(WsOut::Text(_))), "{first:?}");
    to_driver
        .send(WsIn::Text(
            json!({"event": "stop", "sequenceNumber": "2", "streamSid": "MZ1",
                   "stop": {"callSid": SID}})
            .to_string(),
        ))
        .await
        .expect("driver listening");
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the call ends")
        .expect("no panic");
    assert!(matches!(outcome, StreamOutcome::Ended(_)), "{outcome:?}");

    assert_eq!(
        post_call_jobs(&tdb, customer).await,
        vec![(SID.to_string(), json!({"call_sid": SID}))]
    );
    // Crash recovery later finds nothing new to enqueue for it.
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    let again = recovery::enqueue_post_call(&mut tx, SID)
        .await
        .expect("enqueue");
    tx.rollback().await.expect("rollback");
    assert!(!again.created);
    tdb.close().await;
}
