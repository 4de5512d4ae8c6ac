//! Transcript retention: each tenant may keep call transcripts for a number
//! of days (`customers.transcript_retention_days`; `NULL` keeps them
//! forever). Enforced by a periodic, durable job:
//!
//! * [`schedule`] (run every [`SCHEDULE_EVERY`] by [`run_schedule`]) finds
//!   the tenants with a retention period through one narrow directory
//!   function and enqueues one [`RETENTION`] job per tenant per UTC day
//!   (idempotency key `YYYY-MM-DD`), carrying the scheduling time;
//! * [`RetentionHandler`] runs it inside the tenant's transaction: the
//!   turns of ended calls that started more than the period before that
//!   time are deleted, SMS bodies older than that are blanked (the rows
//!   stay: delivery status and segments are billing records), and an audit
//!   entry says how much went.
//!
//! A call whose post-call job is still queued or running keeps its
//! transcript until the job settles, so memory is never lost to retention.
//! Summaries, facts and personality scores are the caller's memory and are
//! kept; only erasure removes them. Time is an input: the job's `now`
//! travels in its payload, and [`expire`] takes it as a parameter.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{JobError, JobHandler};
use crate::db::{directory, CustomerId, Db, StorageError, TenantTx};
use crate::repo;
use crate::repo::insights::Expired;

/// The kind of the daily retention job.
pub const RETENTION: &str = "retention";

/// Attempts a retention job gets before it is dead (tomorrow's job tries
/// again anyway).
pub const RETENTION_MAX_ATTEMPTS: u32 = 3;

/// How often [`run_schedule`] looks for tenants due a retention run.
pub const SCHEDULE_EVERY: Duration = Duration::from_secs(3600);

/// Enqueues today's retention job (UTC date of `now`) for every tenant with
/// a retention period; returns how many were new.
pub async fn schedule(db: &Db, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let key = now.date_naive().to_string();
    let payload = json!({ "now": now.to_rfc3339() });
    let mut enqueued = 0;
    for customer_id in directory::customers_with_retention(db).await? {
        let mut tx = db.tenant(customer_id).await?;
        if super::enqueue(&mut tx, RETENTION, &key, &payload, RETENTION_MAX_ATTEMPTS)
            .await?
            .created
        {
            enqueued += 1;
        }
        tx.commit().await?;
    }
    Ok(enqueued)
}

/// Calls [`schedule`] now and every `every` until `shutdown` is cancelled;
/// failures are logged and tried again at the next tick.
pub async fn run_schedule(db: Db, every: Duration, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match schedule(&db, Utc::now()).await {
            Ok(0) => {}
            Ok(enqueued) => tracing::info!(enqueued, "retention jobs scheduled"),
            Err(error) => tracing::warn!(%error, "could not schedule retention jobs"),
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Applies the transaction's tenant's retention period as of `now`:
/// `None` when the tenant keeps transcripts forever.
pub async fn expire(
    tx: &mut TenantTx,
    now: DateTime<Utc>,
) -> Result<Option<Expired>, StorageError> {
    let customer = repo::customers::get(tx).await?;
    let Some(days) = customer.transcript_retention_days else {
        return Ok(None);
    };
    let cutoff = now - chrono::Duration::days(i64::from(days));
    let expired = repo::insights::expire_transcripts(tx, cutoff).await?;
    if expired != Expired::default() {
        repo::audit::record(
            tx,
            "retention",
            "transcripts.expire",
            None,
            json!({
                "retention_days": days,
                "cutoff": cutoff.to_rfc3339(),
                "calls": expired.calls,
                "turns": expired.turns,
                "sms_bodies": expired.sms_bodies,
            }),
        )
        .await?;
    }
    Ok(Some(expired))
}

/// Runs [`RETENTION`] jobs: payload `{"now": RFC 3339 time}`.
pub struct RetentionHandler {
    /// The application-role pool.
    db: Db,
}

impl RetentionHandler {
    /// A handler working through `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

impl JobHandler for RetentionHandler {
    fn run(&self, customer_id: CustomerId, payload: Value) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            let now = payload
                .get("now")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .ok_or_else(|| JobError::Permanent("the payload has no valid `now`".into()))?
                .with_timezone(&Utc);
            let retry = |e: StorageError| JobError::Retry(format!("database: {e}"));
            let mut tx = self.db.tenant(customer_id).await.map_err(retry)?;
            let expired = expire(&mut tx, now).await.map_err(retry)?;
            tx.commit().await.map_err(retry)?;
            if let Some(expired) = expired {
                tracing::info!(
                    calls = expired.calls,
                    turns = expired.turns,
                    sms_bodies = expired.sms_bodies,
                    "transcript retention applied"
                );
            }
            Ok(())
        })
    }
}
