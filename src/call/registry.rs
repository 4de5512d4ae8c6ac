//! The registry of live calls: who is on the line right now, and the
//! cancellation handle that ends each call (used by shutdown, and later by
//! the admin panel's live view).

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use crate::db::CustomerId;

/// One live call.
#[derive(Debug, Clone)]
pub struct LiveCall {
    /// The tenant.
    pub customer_id: CustomerId,
    /// Twilio's stream id.
    pub stream_sid: String,
    /// When the media stream started.
    pub started_at: DateTime<Utc>,
    /// Cancelling it ends the call's driver.
    pub cancel: CancellationToken,
}

/// Live calls by `CallSid`. A concurrent map: drivers insert and remove
/// their own entry; readers take snapshots.
#[derive(Debug, Default)]
pub struct LiveCalls {
    /// The calls.
    calls: DashMap<String, LiveCall>,
}

impl LiveCalls {
    /// Registers a call; false if that `CallSid` is already live (a second
    /// stream for the same call is refused).
    pub fn insert(&self, call_sid: &str, call: LiveCall) -> bool {
        match self.calls.entry(call_sid.to_string()) {
            dashmap::mapref::entry::Entry::Occupied(_) => false,
            dashmap::mapref::entry::Entry::Vacant(slot) => {
                slot.insert(call);
                true
            }
        }
    }

    /// Forgets a call.
    pub fn remove(&self, call_sid: &str) {
        self.calls.remove(call_sid);
    }

    /// How many calls are live.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is live.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Live calls of one tenant.
    pub fn for_customer(&self, customer_id: CustomerId) -> Vec<(String, LiveCall)> {
        self.calls
            .iter()
            .filter(|c| c.customer_id == customer_id)
            .map(|c| (c.key().clone(), c.value().clone()))
            .collect()
    }

    /// Ends every live call (shutdown after the grace period).
    pub fn cancel_all(&self) {
        for call in self.calls.iter() {
            call.cancel.cancel();
        }
    }
}
