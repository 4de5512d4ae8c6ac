//! Post-call jobs and startup crash recovery.
//!
//! A call that ends normally gets its [`POST_CALL`] job from the call driver
//! when the end reason is recorded. A crash skips that, and leaves the call
//! open (ringing or in progress, no end time); on startup,
//! [`recover_interrupted_calls`] closes such calls as `interrupted` and
//! enqueues the job they missed. Both enqueue with the call sid as the
//! idempotency key, so a call gets exactly one post-call job however often
//! either path runs.

use serde_json::json;

use crate::call::registry::LiveCalls;
use crate::db::{directory, CustomerId, StorageError, TenantTx};
use crate::platform::Platform;
use crate::repo;

use super::Enqueued;

/// The kind of the job that does a call's post-call work (summary, caller
/// memory, personality): see [`super::post_call::PostCallHandler`].
pub const POST_CALL: &str = "post_call";

/// Attempts a post-call job gets before it is dead.
pub const POST_CALL_MAX_ATTEMPTS: u32 = 5;

/// Enqueues the post-call job of `call_sid` (payload `{"call_sid": …}`),
/// once per call.
pub async fn enqueue_post_call(
    tx: &mut TenantTx,
    call_sid: &str,
) -> Result<Enqueued, StorageError> {
    super::enqueue(
        tx,
        POST_CALL,
        call_sid,
        &json!({ "call_sid": call_sid }),
        POST_CALL_MAX_ATTEMPTS,
    )
    .await
}

/// What [`recover_interrupted_calls`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Tenants that had open calls.
    pub tenants: usize,
    /// Calls closed as interrupted.
    pub calls_closed: usize,
    /// Post-call jobs newly enqueued for them.
    pub jobs_enqueued: usize,
}

/// Closes every call a crash left open and enqueues its post-call job.
///
/// Open means ringing or in progress with no end time; calls with a live
/// media stream in this process (`live`) are left alone. Meant for startup,
/// before the server takes calls: with several server processes on one
/// database it would also close calls another process is serving. Each
/// tenant is handled in one transaction (closing and enqueueing together),
/// so a second run finds nothing left to do.
pub async fn recover_interrupted_calls(
    platform: &Platform,
    live: &LiveCalls,
) -> Result<Recovery, StorageError> {
    let db = platform.db();
    let mut recovery = Recovery::default();
    for customer_id in directory::customers_with_open_calls(db).await? {
        let (closed, enqueued) = recover_tenant(platform, live, customer_id).await?;
        if closed > 0 {
            recovery.tenants += 1;
        }
        recovery.calls_closed += closed;
        recovery.jobs_enqueued += enqueued;
    }
    if recovery.calls_closed > 0 {
        tracing::warn!(
            calls = recovery.calls_closed,
            tenants = recovery.tenants,
            "closed calls left open by an earlier crash as interrupted"
        );
    }
    Ok(recovery)
}

async fn recover_tenant(
    platform: &Platform,
    live: &LiveCalls,
    customer_id: CustomerId,
) -> Result<(usize, usize), StorageError> {
    let streaming: Vec<String> = live
        .for_customer(customer_id)
        .into_iter()
        .map(|(sid, _)| sid)
        .collect();
    let mut tx = platform.db().tenant(customer_id).await?;
    let (mut closed, mut enqueued) = (0, 0);
    for call in repo::calls::list_open(&mut tx).await? {
        if streaming.contains(&call.call_sid) {
            continue;
        }
        if repo::calls::close_interrupted(&mut tx, &call.call_sid)
            .await?
            .is_some()
        {
            closed += 1;
            if enqueue_post_call(&mut tx, &call.call_sid).await?.created {
                enqueued += 1;
            }
        }
    }
    tx.commit().await?;
    Ok((closed, enqueued))
}
