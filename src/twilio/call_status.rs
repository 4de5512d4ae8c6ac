//! What Twilio's status callbacks do to a stored call: a pure function from
//! the call as stored and the callback's fields to the update to write.
//!
//! Callbacks can arrive late, twice, or out of order, so a status never
//! moves backwards (`in-progress` does not return to `ringing`), a final
//! status is never replaced (our own `refused` and `interrupted` included),
//! the first end reason recorded wins, and a call's seconds are billed once,
//! when its duration is first learned.

use chrono::{DateTime, Utc};

use crate::repo::calls::Call;

/// `CallStatus` values Twilio sends (PROTOCOLS §1).
pub const TWILIO_CALL_STATUSES: &[&str] = &[
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
];

/// Statuses after which nothing changes (Twilio's five, and our two).
pub const FINAL_STATUSES: &[&str] = &[
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
    "refused",
    "interrupted",
];

/// Whether `status` ends a call.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// How far along a call is; statuses only move to an equal or higher rank.
fn rank(status: &str) -> u8 {
    match status {
        "queued" | "initiated" => 0,
        "ringing" => 1,
        "in-progress" => 2,
        _ if is_final(status) => 3,
        _ => 0,
    }
}

/// The status to record for a new call from the voice webhook's
/// `CallStatus` (`ringing` when absent, unknown or already final).
pub fn initial_status(reported: Option<&str>) -> &'static str {
    reported
        .and_then(|s| TWILIO_CALL_STATUSES.iter().find(|known| **known == s))
        .copied()
        .filter(|s| !is_final(s))
        .unwrap_or("ringing")
}

/// The write a callback asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallUpdate {
    /// The status to store.
    pub status: String,
    /// Set when the call ends now and had no end time.
    pub ended_at: Option<DateTime<Utc>>,
    /// Twilio's `CallDuration`, when the callback has one.
    pub duration_seconds: Option<i32>,
    /// Set when the call ends now and had no end reason.
    pub end_reason: Option<String>,
    /// Seconds to add to the month's `call_seconds` (0 unless this is the
    /// first time the duration of an answered call is learned).
    pub billable_seconds: i64,
}

/// The update for a `/twilio/status` callback reporting `reported` (and
/// perhaps `CallDuration`) for `call`, or `None` when the status is not one
/// Twilio documents (logged and ignored by the caller).
pub fn on_call_status(
    call: &Call,
    reported: &str,
    duration_seconds: Option<i32>,
    now: DateTime<Utc>,
) -> Option<CallUpdate> {
    if !TWILIO_CALL_STATUSES.contains(&reported) {
        return None;
    }
    let duration_seconds = duration_seconds.filter(|d| *d >= 0);
    let status = if is_final(&call.status) || rank(reported) < rank(&call.status) {
        call.status.clone()
    } else {
        reported.to_string()
    };
    let ends_now = is_final(reported);
    let billable_seconds = match duration_seconds {
        Some(d) if call.duration_seconds.is_none() && call.status != "refused" => i64::from(d),
        _ => 0,
    };
    Some(CallUpdate {
        status,
        ended_at: (ends_now && call.ended_at.is_none()).then_some(now),
        duration_seconds,
        end_reason: (ends_now && call.end_reason.is_none()).then(|| reported.to_string()),
        billable_seconds,
    })
}

/// The update for a `/twilio/stream-status` callback's `StreamEvent`, or
/// `None` when it changes nothing: `stream-started` marks a ringing call
/// `in-progress`; `stream-error` records `stream_error` as the end reason
/// if none is set; `stream-stopped` and unknown events change nothing (the
/// call's own status callback reports the end).
pub fn on_stream_event(call: &Call, event: &str) -> Option<CallUpdate> {
    let unchanged = |end_reason: Option<String>| CallUpdate {
        status: call.status.clone(),
        ended_at: None,
        duration_seconds: None,
        end_reason,
        billable_seconds: 0,
    };
    match event {
        "stream-started" if rank(&call.status) < rank("in-progress") => Some(CallUpdate {
            status: "in-progress".to_string(),
            ..unchanged(None)
        }),
        "stream-error" if call.end_reason.is_none() => {
            Some(unchanged(Some("stream_error".to_string())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("time")
    }

    fn call(status: &str) -> Call {
        Call {
            call_id: uuid::Uuid::new_v4(),
            call_sid: "CA1".into(),
            user_id: None,
            to_number: "+18005551212".into(),
            direction: "inbound".into(),
            status: status.into(),
            end_reason: None,
            stream_sid: None,
            started_at: now(),
            ended_at: None,
            duration_seconds: None,
        }
    }

    #[test]
    fn completion_ends_and_bills_once() {
        let update = on_call_status(&call("in-progress"), "completed", Some(42), now())
            .expect("known status");
        assert_eq!(
            update,
            CallUpdate {
                status: "completed".into(),
                ended_at: Some(now()),
                duration_seconds: Some(42),
                end_reason: Some("completed".into()),
                billable_seconds: 42,
            }
        );
        let mut done = call("completed");
        done.duration_seconds = Some(42);
        done.ended_at = Some(now());
        done.end_reason = Some("transferred".into());
        let again = on_call_status(&done, "completed", Some(42), now()).expect("known");
        assert_eq!(again.billable_seconds, 0);
        assert_eq!(again.ended_at, None);
        assert_eq!(again.end_reason, None, "the first end reason wins");
    }

    #[test]
    fn statuses_never_move_backwards_or_leave_a_final_state() {
        let late_ringing =
            on_call_status(&call("in-progress"), "ringing", None, now()).expect("known");
        assert_eq!(late_ringing.status, "in-progress");
        assert_eq!(late_ringing.ended_at, None);
        let refused = on_call_status(&call("refused"), "completed", Some(3), now()).expect("known");
        assert_eq!(refused.status, "refused");
        assert_eq!(refused.billable_seconds, 0, "refused calls are not billed");
        assert_eq!(refused.duration_seconds, Some(3));
        assert_eq!(
            on_call_status(&call("ringing"), "no-answer", None, now())
                .expect("known")
                .status,
            "no-answer"
        );
    }

    #[test]
    fn unknown_statuses_and_negative_durations_are_ignored() {
        assert_eq!(
            on_call_status(&call("ringing"), "teleported", None, now()),
            None
        );
        let update = on_call_status(&call("ringing"), "completed", Some(-1), now()).expect("known");
        assert_eq!(update.duration_seconds, None);
        assert_eq!(update.billable_seconds, 0);
    }

    #[test]
    fn initial_status_is_a_live_twilio_status() {
        assert_eq!(initial_status(Some("ringing")), "ringing");
        assert_eq!(initial_status(Some("in-progress")), "in-progress");
        assert_eq!(initial_status(Some("completed")), "ringing");
        assert_eq!(initial_status(Some("weird")), "ringing");
        assert_eq!(initial_status(None), "ringing");
    }

    #[test]
    fn stream_events() {
        assert_eq!(
            on_stream_event(&call("ringing"), "stream-started")
                .expect("update")
                .status,
            "in-progress"
        );
        assert_eq!(
            on_stream_event(&call("in-progress"), "stream-started"),
            None
        );
        assert_eq!(on_stream_event(&call("completed"), "stream-started"), None);
        let error = on_stream_event(&call("in-progress"), "stream-error").expect("update");
        assert_eq!(error.status, "in-progress");
        assert_eq!(error.end_reason.as_deref(), Some("stream_error"));
        assert_eq!(
            on_stream_event(&call("in-progress"), "stream-stopped"),
            None
        );
        assert_eq!(on_stream_event(&call("in-progress"), "whatever"), None);
    }
}
