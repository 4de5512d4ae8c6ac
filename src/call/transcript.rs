//! Writes the transcript turn by turn while the call runs, so a crash loses
//! nothing already said. One writer task per call, fed by a channel; what
//! has queued up is written in one transaction (usually one entry; a burst
//! under load becomes one commit), retried briefly on failure.

use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use super::{Speaker, TranscriptEntry};
use crate::db::{CustomerId, Db};
use crate::repo::turns::{self, Turn};

/// Attempts per entry before it is given up (and logged).
const ATTEMPTS: u32 = 5;

/// Starts the writer; send entries to the returned channel, drop it to
/// finish, and await the handle to know everything was written.
pub fn spawn_writer(
    db: Db,
    customer_id: CustomerId,
    call_id: Uuid,
) -> (
    mpsc::UnboundedSender<TranscriptEntry>,
    tokio::task::JoinHandle<usize>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<TranscriptEntry>();
    let handle = tokio::spawn(async move {
        let mut written = 0;
        while let Some(entry) = rx.recv().await {
            let mut batch = vec![to_turn(&entry)];
            while let Ok(more) = rx.try_recv() {
                batch.push(to_turn(&more));
            }
            let mut delay = Duration::from_millis(50);
            for attempt in 1..=ATTEMPTS {
                match write(&db, customer_id, call_id, &batch).await {
                    Ok(()) => {
                        written += batch.len();
                        break;
                    }
                    Err(error) if attempt < ATTEMPTS => {
                        tracing::warn!(%error, attempt, entries = batch.len(), "transcript write failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(error) => {
                        tracing::error!(%error, entries = batch.len(), "transcript entries lost after retries");
                    }
                }
            }
        }
        written
    });
    (tx, handle)
}

async fn write(
    db: &Db,
    customer_id: CustomerId,
    call_id: Uuid,
    batch: &[Turn],
) -> Result<(), crate::db::StorageError> {
    let mut tx = db.tenant(customer_id).await?;
    for turn in batch {
        // Appending is idempotent per seq, so a retried batch is safe.
        turns::append(&mut tx, call_id, turn).await?;
    }
    tx.commit().await
}

fn to_turn(entry: &TranscriptEntry) -> Turn {
    let speaker = match entry.speaker {
        Speaker::Caller => "caller",
        Speaker::Agent => "agent",
        Speaker::Dtmf => "dtmf",
        Speaker::Tool => "tool",
        Speaker::System => "system",
    };
    Turn {
        seq: i32::try_from(entry.seq).unwrap_or(i32::MAX),
        speaker: speaker.to_string(),
        text: entry.text.clone(),
        interrupted: entry.interrupted,
        start_ms: i64::try_from(entry.start_ms).ok(),
        end_ms: i64::try_from(entry.end_ms).ok(),
        timings: serde_json::to_value(entry.timings).unwrap_or_default(),
    }
}
