//! The durable job queue for post-call work, on PostgreSQL.
//!
//! Jobs are rows of the tenant table `jobs`. [`enqueue`] adds one inside a
//! tenant's transaction, idempotently per (kind, key). A [`JobRunner`]
//! claims due jobs across tenants through one narrow directory function
//! (`FOR UPDATE SKIP LOCKED`, identifiers only), then reads, runs and
//! settles each job inside its own tenant's [`TenantTx`]:
//!
//! * success: `done`;
//! * failure: back to `queued`, due after an exponential [`Backoff`], with
//!   the error kept in `last_error`;
//! * failure on the last allowed attempt, or a [`JobError::Permanent`]:
//!   `dead` (the dead letters), `last_error` kept.
//!
//! A claim leases the job; a worker that crashes leaves it `running` with a
//! lease that runs out, and any worker then claims it again. Only kinds with
//! a registered handler are ever claimed, so a kind nobody handles yet stays
//! queued with its attempts untouched.
//!
//! [`recovery`] closes calls a crash left open and enqueues their
//! [`recovery::POST_CALL`] jobs; [`post_call`] is their handler (summary,
//! facts, personality, quick bio); [`retention`] enforces each tenant's
//! transcript retention with a daily job.

pub mod post_call;
pub mod recovery;
pub mod retention;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{directory, CustomerId, Db, StorageError, TenantTx};
use crate::repo;

pub use crate::repo::jobs::{Enqueued, Job};

/// Enqueues a job of `kind`, due now, for the transaction's tenant.
/// Idempotent per (kind, key): a second enqueue with the same key changes
/// nothing and returns the existing job's id (`created` false).
pub async fn enqueue(
    tx: &mut TenantTx,
    kind: &str,
    idempotency_key: &str,
    payload: &Value,
    max_attempts: u32,
) -> Result<Enqueued, StorageError> {
    repo::jobs::enqueue(tx, kind, idempotency_key, payload, max_attempts).await
}

/// Why a job's run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another try later (vendor down, database busy).
    #[error("{0}")]
    Retry(String),
    /// Will never succeed (bad payload, the call is gone): dead now.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

/// Runs the jobs of one kind.
pub trait JobHandler: Send + Sync {
    /// Does the work for one job of `customer_id`. The handler opens its own
    /// tenant transactions; the job row is settled by the runner afterwards.
    /// A run may be repeated (a worker crash after the work but before the
    /// job is marked done), so handlers must be idempotent.
    fn run(&self, customer_id: CustomerId, payload: Value) -> BoxFuture<'_, Result<(), JobError>>;
}

/// Exponential backoff between attempts: `base`, doubling per failed
/// attempt, at most `cap`, less a random share of up to `jitter` (0 to 1)
/// so that jobs failing together do not all retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// Largest share of the delay taken off at random; 0 is deterministic.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1 for the first),
    /// given `random` in [0, 1) for the jitter (an input, so tests choose).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let doublings = attempt.saturating_sub(1);
        let full = if doublings >= 32 {
            self.cap
        } else {
            self.base
                .checked_mul(1u32 << doublings)
                .map_or(self.cap, |d| d.min(self.cap))
        };
        let share = self.jitter.clamp(0.0, 1.0) * random.clamp(0.0, 1.0);
        if !share.is_finite() {
            return full;
        }
        full.mul_f64(1.0 - share)
    }
}

/// How a [`JobRunner`] behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerConfig {
    /// How long a claimed job is the worker's; after that another worker
    /// may claim it. Handlers get this long before they are timed out.
    pub lease: Duration,
    /// How long [`JobRunner::run`] sleeps when nothing is due.
    pub poll_interval: Duration,
    /// Delay between failed attempts.
    pub backoff: Backoff,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
        }
    }
}

/// What one [`JobRunner::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Nothing was due.
    Idle,
    /// The job ran and is done.
    Done {
        /// The tenant.
        customer_id: CustomerId,
        /// The job.
        job_id: Uuid,
    },
    /// The job failed and is queued again.
    Retrying {
        /// The tenant.
        customer_id: CustomerId,
        /// The job.
        job_id: Uuid,
        /// The attempt that failed (1 for the first).
        attempt: i32,
        /// How long until it is due again.
        delay: Duration,
    },
    /// The job failed for the last time and is dead.
    Dead {
        /// The tenant.
        customer_id: CustomerId,
        /// The job.
        job_id: Uuid,
        /// Attempts made.
        attempts: i32,
    },
    /// The claim was overtaken before it settled (the lease ran out and
    /// another worker claimed the job, or the job was deleted): this
    /// worker's result was dropped.
    Lost {
        /// The tenant.
        customer_id: CustomerId,
        /// The job.
        job_id: Uuid,
    },
}

/// Claims due jobs and runs them with the handler registered for their kind.
pub struct JobRunner {
    /// The application-role pool.
    db: Db,
    /// Handlers by job kind; only these kinds are claimed.
    handlers: BTreeMap<String, Arc<dyn JobHandler>>,
    /// The kinds, in the form the claim takes.
    kinds: Vec<String>,
    /// Lease, poll interval, backoff.
    config: RunnerConfig,
}

impl JobRunner {
    /// A runner with no handlers yet (it claims nothing until one is
    /// registered).
    pub fn new(db: Db, config: RunnerConfig) -> Self {
        Self {
            db,
            handlers: BTreeMap::new(),
            kinds: Vec::new(),
            config,
        }
    }

    /// Registers the handler for `kind` (replacing any earlier one).
    pub fn with_handler(mut self, kind: &str, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(kind.to_string(), handler);
        self.kinds = self.handlers.keys().cloned().collect();
        self
    }

    /// The kinds this runner claims.
    pub fn kinds(&self) -> &[String] {
        &self.kinds
    }

    /// Claims one due job, runs it and records the outcome.
    pub async fn step(&self) -> Result<StepOutcome, StorageError> {
        let claimed =
            directory::claim_due_jobs(&self.db, &self.kinds, self.config.lease, 1).await?;
        let Some(&(customer_id, job_id)) = claimed.first() else {
            return Ok(StepOutcome::Idle);
        };
        let mut tx = self.db.tenant(customer_id).await?;
        let job = repo::jobs::get(&mut tx, job_id).await?;
        tx.rollback().await?;
        let Some(job) = job else {
            return Ok(StepOutcome::Lost {
                customer_id,
                job_id,
            });
        };
        let span = tracing::info_span!("job", %customer_id, %job_id, kind = %job.kind, attempt = job.attempts);
        let _entered = span.enter();

        if job.attempts > job.max_attempts {
            // Only claims after crashed workers get here: every allowed
            // attempt was started, and the last one never reported back.
            let error = match &job.last_error {
                Some(last) => format!("{last} (then its worker was lost mid-run)"),
                None => format!(
                    "its workers were lost mid-run {} times (lease expired)",
                    job.max_attempts
                ),
            };
            return self.settle_dead(customer_id, &job, &error).await;
        }

        let result = match self.handlers.get(&job.kind) {
            None => Err(JobError::Retry(format!(
                "no handler is registered for job kind `{}`",
                job.kind
            ))),
            Some(handler) => {
                let run =
                    AssertUnwindSafe(handler.run(customer_id, job.payload.clone())).catch_unwind();
                match tokio::time::timeout(self.config.lease, run).await {
                    Err(_) => Err(JobError::Retry(format!(
                        "timed out after {} s (the lease)",
                        self.config.lease.as_secs()
                    ))),
                    Ok(Err(_)) => Err(JobError::Retry("the handler panicked".to_string())),
                    Ok(Ok(result)) => result,
                }
            }
        };

        match result {
            Ok(()) => {
                let mut tx = self.db.tenant(customer_id).await?;
                let settled = repo::jobs::mark_done(&mut tx, job_id, job.attempts).await?;
                tx.commit().await?;
                if !settled {
                    tracing::warn!("job ran, but its claim was overtaken; result dropped");
                    return Ok(StepOutcome::Lost {
                        customer_id,
                        job_id,
                    });
                }
                tracing::info!("job done");
                Ok(StepOutcome::Done {
                    customer_id,
                    job_id,
                })
            }
            Err(error @ JobError::Permanent(_)) => {
                self.settle_dead(customer_id, &job, &error.to_string())
                    .await
            }
            Err(error) if job.attempts >= job.max_attempts => {
                self.settle_dead(customer_id, &job, &error.to_string())
                    .await
            }
            Err(error) => {
                let attempt = u32::try_from(job.attempts).unwrap_or(1);
                let random = if self.config.backoff.jitter > 0.0 {
                    rand::random::<f64>()
                } else {
                    0.0
                };
                let delay = self.config.backoff.delay(attempt, random);
                let message = error.to_string();
                let mut tx = self.db.tenant(customer_id).await?;
                let settled =
                    repo::jobs::retry_later(&mut tx, job_id, job.attempts, delay, &message).await?;
                tx.commit().await?;
                if !settled {
                    return Ok(StepOutcome::Lost {
                        customer_id,
                        job_id,
                    });
                }
                tracing::warn!(error = %message, delay_secs = delay.as_secs_f64(), "job failed; will retry");
                Ok(StepOutcome::Retrying {
                    customer_id,
                    job_id,
                    attempt: job.attempts,
                    delay,
                })
            }
        }
    }

    async fn settle_dead(
        &self,
        customer_id: CustomerId,
        job: &Job,
        error: &str,
    ) -> Result<StepOutcome, StorageError> {
        let mut tx = self.db.tenant(customer_id).await?;
        let settled = repo::jobs::mark_dead(&mut tx, job.job_id, job.attempts, error).await?;
        tx.commit().await?;
        if !settled {
            return Ok(StepOutcome::Lost {
                customer_id,
                job_id: job.job_id,
            });
        }
        tracing::error!(error, attempts = job.attempts, "job is dead (dead letters)");
        Ok(StepOutcome::Dead {
            customer_id,
            job_id: job.job_id,
            attempts: job.attempts,
        })
    }

    /// Steps until nothing is due; returns what each step did (the final
    /// `Idle` left out). Jobs rescheduled into the future are not waited for.
    pub async fn drain(&self) -> Result<Vec<StepOutcome>, StorageError> {
        let mut outcomes = Vec::new();
        loop {
            match self.step().await? {
                StepOutcome::Idle => return Ok(outcomes),
                outcome => outcomes.push(outcome),
            }
        }
    }

    /// Runs jobs until `shutdown` is cancelled, sleeping `poll_interval`
    /// whenever nothing is due or the database fails. A job already running
    /// when shutdown comes is finished and settled first.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(kinds = ?self.kinds, "job runner started");
        while !shutdown.is_cancelled() {
            let pause = match self.step().await {
                Ok(StepOutcome::Idle) => true,
                Ok(_) => false,
                Err(error) => {
                    tracing::warn!(%error, "job runner: could not claim or settle a job");
                    true
                }
            };
            if pause {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        tracing::info!("job runner stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: f64) -> Backoff {
        Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let b = backoff(0.0);
        let secs: Vec<u64> = (1..=7).map(|n| b.delay(n, 0.9).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(60));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_its_share() {
        let b = backoff(0.5);
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(8));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        for r in [0.1, 0.5, 0.99] {
            let d = b.delay(3, r);
            assert!(d <= Duration::from_secs(8) && d >= Duration::from_secs(4));
        }
        // Out-of-range inputs are clamped, never panic.
        assert_eq!(backoff(7.0).delay(1, 2.0), Duration::ZERO);
        assert_eq!(backoff(-1.0).delay(1, -3.0), Duration::from_secs(2));
    }
}
