//! Twilio's HTTP webhooks: `POST /twilio/voice` (a call arrives: reject it,
//! refuse it politely, or connect it to our media websocket with a call
//! token), `POST /twilio/status` (call progress) and
//! `POST /twilio/stream-status` (media stream progress).
//!
//! Every request must carry a valid `X-Twilio-Signature` over the URL
//! rebuilt from `public_url` (400 without the header, 403 when it does not
//! verify). Answers are `text/xml` TwiML. Callbacks about calls we do not
//! know get an empty `<Response/>` with 200, so Twilio does not retry.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};

use super::call_status::{self, CallUpdate};
use super::call_token::{CallTokenError, CallTokenKey, MAX_CALL_SID_LEN};
use super::request::{is_platform_account, TwilioRequest};
use super::twiml::{RejectReason, Stream, Twiml};
use crate::crypto::KeyringError;
use crate::db::directory::{self, NumberRoute};
use crate::db::{CustomerId, StorageError, TenantTx};
use crate::http::AppState;
use crate::platform::phone::{normalize_e164, redact};
use crate::platform::PlatformError;
use crate::repo::calls::{self, Call, NewCall};
use crate::repo::customers;
use crate::repo::usage::{self, Usage};

/// Twilio's voice webhook (the number's "A call comes in" URL).
pub const VOICE_PATH: &str = "/twilio/voice";
/// The number's call status callback URL.
pub const STATUS_PATH: &str = "/twilio/status";
/// The media stream's `statusCallback`, set by our `<Stream>`.
pub const STREAM_STATUS_PATH: &str = "/twilio/stream-status";
/// The media websocket `<Stream url>` points at (served by the call module).
pub const MEDIA_PATH: &str = "/twilio/media";
/// Name of the `<Parameter>` carrying the call token.
pub const CALL_TOKEN_PARAMETER: &str = "callToken";
/// Query parameter of the stream status callback naming the tenant.
pub const CUSTOMER_QUERY: &str = "customer";

/// What a caller over the monthly limit hears before we hang up.
const OVER_LIMIT_MESSAGE: &str =
    "Sorry, we can't take your call right now. Please try again later. Goodbye.";

/// The webhook boundary's error. Twilio sees a status and a short text;
/// internals are logged.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No `X-Twilio-Signature` header (400).
    #[error("missing X-Twilio-Signature header")]
    MissingSignature,
    /// The signature did not verify, or no auth token could check it (403).
    #[error("invalid request signature")]
    BadSignature,
    /// The database failed (500).
    #[error("storage failed")]
    Storage(#[from] StorageError),
    /// A tenant's Twilio credential could not be read (500).
    #[error("tenant credential unavailable")]
    Credential(#[from] PlatformError),
    /// The call-token key could not be derived (500).
    #[error("call token key unavailable")]
    Keyring(#[from] KeyringError),
    /// A call token could not be minted (500).
    #[error("call token could not be minted")]
    CallToken(#[from] CallTokenError),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::MissingSignature => StatusCode::BAD_REQUEST,
            WebhookError::BadSignature => StatusCode::FORBIDDEN,
            other => {
                tracing::error!(error = ?other, "twilio webhook failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match status {
            StatusCode::INTERNAL_SERVER_ERROR => "internal error".to_string(),
            _ => self.to_string(),
        };
        (status, message).into_response()
    }
}

/// The webhook routes, mounted by [`crate::http::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(VOICE_PATH, post(voice).get(voice))
        .route(STATUS_PATH, post(call_status).get(call_status))
        .route(STREAM_STATUS_PATH, post(stream_status))
}

/// A TwiML answer.
fn twiml(document: &Twiml) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], document.render()).into_response()
}

fn reject() -> Response {
    twiml(&Twiml::new().reject(RejectReason::Rejected))
}

fn over_limit() -> Response {
    twiml(&Twiml::new().say(OVER_LIMIT_MESSAGE).hangup())
}

fn empty() -> Response {
    twiml(&Twiml::new())
}

/// `To` as E.164, and its redacted form for logs.
fn dialed(request: &TwilioRequest) -> (Option<String>, String) {
    match request.field("To").map(normalize_e164) {
        Some(Ok(number)) => {
            let shown = redact(&number);
            (Some(number), shown)
        }
        Some(Err(_)) => (None, "non-e164".to_string()),
        None => (None, "-".to_string()),
    }
}

/// The number's route, and the tenant whose own Twilio account may have
/// signed the request (the number is on that account and the request says so).
async fn route_and_byok(
    state: &AppState,
    request: &TwilioRequest,
    number: Option<&str>,
) -> Result<(Option<NumberRoute>, Option<CustomerId>), WebhookError> {
    let route = match number {
        Some(number) => directory::resolve_number(state.platform.db(), number).await?,
        None => None,
    };
    let account_sid = request.field("AccountSid");
    let byok = route
        .as_ref()
        .filter(|r| {
            !is_platform_account(state, account_sid)
                && r.twilio_account_sid.as_deref() == account_sid
        })
        .map(|r| r.customer_id);
    Ok((route, byok))
}

/// A call webhook whose signature checked out, with its dialed number
/// (E.164 and redacted for logs) and that number's route.
struct SignedCall {
    request: TwilioRequest,
    number: Option<String>,
    shown: String,
    route: Option<NumberRoute>,
}

/// Parses a call webhook, finds the dialed number's tenant, and checks the
/// signature with the right account's token (the tenant's own for BYOK).
async fn signed_call(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<SignedCall, WebhookError> {
    let request = TwilioRequest::parse(&state.settings, method, uri, headers, body)?;
    let (number, shown) = dialed(&request);
    let (route, byok) = route_and_byok(state, &request, number.as_deref()).await?;
    request.authenticate(state, byok).await?;
    Ok(SignedCall {
        request,
        number,
        shown,
        route,
    })
}

async fn voice(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let now = Utc::now();
    let SignedCall {
        request,
        number,
        shown,
        route,
    } = signed_call(&state, &method, &uri, &headers, body).await?;

    let call_sid = request.field("CallSid").unwrap_or_default();
    if call_sid.is_empty()
        || call_sid.len() > MAX_CALL_SID_LEN
        || !call_sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        tracing::warn!(to = %shown, "voice webhook without a usable CallSid: rejected");
        return Ok(reject());
    }
    let (Some(number), Some(route)) = (number, route) else {
        tracing::info!(call_sid, to = %shown, "call to an unknown number: rejected");
        return Ok(reject());
    };
    if route.status != "active" {
        tracing::info!(call_sid, customer_id = %route.customer_id, status = %route.status,
            "call to an inactive tenant: rejected");
        return Ok(reject());
    }
    if state.is_draining() {
        // Shutting down: answer busy so Twilio can fail over, bill nothing.
        tracing::info!(call_sid, customer_id = %route.customer_id, "draining: new call rejected as busy");
        return Ok(twiml(&Twiml::new().reject(RejectReason::Busy)));
    }
    let caller = request.field("From").and_then(|f| normalize_e164(f).ok());
    let call = NewCall {
        call_sid,
        user_id: caller.as_deref(),
        to_number: &number,
        direction: request.field("Direction").unwrap_or("inbound"),
        status: call_status::initial_status(request.field("CallStatus")),
        started_at: now,
    };
    let mut tx = state.platform.db().tenant(route.customer_id).await?;
    match admit(&mut tx, &call, now).await? {
        Admission::Inactive => {
            tx.rollback().await?;
            tracing::info!(call_sid, customer_id = %route.customer_id, "tenant not active: rejected");
            Ok(reject())
        }
        Admission::Retry { refused } => {
            // The webhook came again for a call we already decided on:
            // undo this attempt's count and give the same answer.
            tx.rollback().await?;
            tracing::info!(call_sid, customer_id = %route.customer_id, "voice webhook retried");
            if refused {
                Ok(over_limit())
            } else {
                connect(&state, call_sid, route.customer_id, now)
            }
        }
        Admission::OverLimit => {
            tx.commit().await?;
            tracing::info!(call_sid, customer_id = %route.customer_id, to = %shown,
                "monthly call limit reached: call refused");
            Ok(over_limit())
        }
        Admission::Admitted => {
            tx.commit().await?;
            tracing::info!(call_sid, customer_id = %route.customer_id, to = %shown, "call admitted");
            connect(&state, call_sid, route.customer_id, now)
        }
    }
}

/// The voice webhook's decision for a call to an active tenant's number.
enum Admission {
    /// The tenant row says it is not active (changed since the lookup).
    Inactive,
    /// The call is already recorded; `refused` says how it was answered.
    Retry {
        /// Whether it was refused over the limit.
        refused: bool,
    },
    /// Recorded as `refused`, counted in `refused_calls`.
    OverLimit,
    /// Recorded and counted in `calls`.
    Admitted,
}

/// Records and counts the call in the tenant's transaction. Counting first
/// locks the month's usage row, so concurrent webhooks for one tenant are
/// decided one at a time: the limit holds exactly and a retried `CallSid`
/// that raced its original is seen. The caller commits or rolls back.
async fn admit(
    tx: &mut TenantTx,
    call: &NewCall<'_>,
    now: DateTime<Utc>,
) -> Result<Admission, WebhookError> {
    let customer = customers::get(tx).await?;
    if customer.status != "active" {
        return Ok(Admission::Inactive);
    }
    if let Some(existing) = calls::get_by_sid(tx, call.call_sid).await? {
        return Ok(Admission::Retry {
            refused: existing.status == "refused",
        });
    }
    // Record the call first and count it last: the usage row's lock, which
    // makes the limit exact under concurrent calls, is then held only for
    // the final statement and the commit, not the whole transaction.
    calls::create(tx, call).await?;
    let month = usage::month_of(now.date_naive());
    let one_call = Usage {
        calls: 1,
        ..Usage::default()
    };
    let counted = usage::add(tx, month, &one_call).await?;
    let over = customer
        .monthly_call_limit
        .is_some_and(|limit| counted.calls > limit);
    if !over {
        return Ok(Admission::Admitted);
    }
    let moved_to_refused = Usage {
        calls: -1,
        refused_calls: 1,
        ..Usage::default()
    };
    usage::add(tx, month, &moved_to_refused).await?;
    calls::update_status(
        tx,
        call.call_sid,
        "refused",
        Some(now),
        None,
        Some("monthly_call_limit"),
    )
    .await?;
    Ok(Admission::OverLimit)
}

/// `<Connect><Stream>` to our media websocket with a fresh call token.
fn connect(
    state: &AppState,
    call_sid: &str,
    customer: CustomerId,
    now: DateTime<Utc>,
) -> Result<Response, WebhookError> {
    let key = CallTokenKey::from_keyring(state.platform.keyring())?;
    let ttl = i64::try_from(state.settings.twilio.call_token_ttl.as_secs()).unwrap_or(120);
    let token = key.issue(call_sid, customer, now + chrono::Duration::seconds(ttl))?;
    let public = &state.settings.public_url;
    let stream = Stream {
        url: public.websocket(MEDIA_PATH),
        status_callback: Some(format!(
            "{}?{CUSTOMER_QUERY}={customer}",
            public.join(STREAM_STATUS_PATH)
        )),
        parameters: vec![(CALL_TOKEN_PARAMETER.to_string(), token)],
    };
    Ok(twiml(&Twiml::new().connect_stream(stream)))
}

async fn call_status(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let now = Utc::now();
    let SignedCall {
        request,
        number: _,
        shown,
        route,
    } = signed_call(&state, &method, &uri, &headers, body).await?;

    let (Some(call_sid), Some(route)) = (request.field("CallSid"), route) else {
        tracing::warn!(call_sid = request.field("CallSid").unwrap_or("-"), to = %shown,
            "status callback for no known number: ignored");
        return Ok(empty());
    };
    let Some(reported) = request.field("CallStatus") else {
        tracing::warn!(call_sid, "status callback without CallStatus: ignored");
        return Ok(empty());
    };
    let duration = request
        .field("CallDuration")
        .and_then(|d| d.parse::<i32>().ok());
    let mut tx = state.platform.db().tenant(route.customer_id).await?;
    let Some(call) = calls::get_by_sid(&mut tx, call_sid).await? else {
        tx.rollback().await?;
        tracing::warn!(call_sid, customer_id = %route.customer_id,
            "status callback for an unknown call: ignored");
        return Ok(empty());
    };
    let Some(update) = call_status::on_call_status(&call, reported, duration, now) else {
        tx.rollback().await?;
        tracing::warn!(
            call_sid,
            status = reported,
            "undocumented CallStatus: ignored"
        );
        return Ok(empty());
    };
    apply(&mut tx, &call, &update).await?;
    tx.commit().await?;
    tracing::info!(call_sid, customer_id = %route.customer_id, status = %update.status,
        duration = ?update.duration_seconds, "call status updated");
    Ok(empty())
}

async fn stream_status(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    let request = TwilioRequest::parse(&state.settings, &method, &uri, &headers, body)?;
    // The tenant is named in our own (signed) statusCallback URL.
    let customer: Option<CustomerId> = uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == CUSTOMER_QUERY)
            .and_then(|(_, value)| value.parse().ok())
    });
    let byok = customer.filter(|_| !is_platform_account(&state, request.field("AccountSid")));
    request.authenticate(&state, byok).await?;

    let (Some(call_sid), Some(customer)) = (request.field("CallSid"), customer) else {
        tracing::warn!(
            call_sid = request.field("CallSid").unwrap_or("-"),
            "stream status callback without call or tenant: ignored"
        );
        return Ok(empty());
    };
    let event = request.field("StreamEvent").unwrap_or("-");
    let mut tx = state.platform.db().tenant(customer).await?;
    let Some(call) = calls::get_by_sid(&mut tx, call_sid).await? else {
        tx.rollback().await?;
        tracing::warn!(call_sid, customer_id = %customer,
            "stream status callback for an unknown call: ignored");
        return Ok(empty());
    };
    if event == "stream-error" {
        tracing::warn!(call_sid, customer_id = %customer,
            stream_error = request.field("StreamError").unwrap_or("-"), "media stream error");
    }
    match call_status::on_stream_event(&call, event) {
        Some(update) => {
            apply(&mut tx, &call, &update).await?;
            tx.commit().await?;
        }
        None => tx.rollback().await?,
    }
    tracing::info!(call_sid, customer_id = %customer, event,
        stream_sid = request.field("StreamSid").unwrap_or("-"), "stream status");
    Ok(empty())
}

/// Writes a status update and bills newly learned seconds to the month
/// the call started in.
async fn apply(tx: &mut TenantTx, call: &Call, update: &CallUpdate) -> Result<(), WebhookError> {
    calls::update_status(
        tx,
        &call.call_sid,
        &update.status,
        update.ended_at,
        update.duration_seconds,
        update.end_reason.as_deref(),
    )
    .await?;
    if update.billable_seconds > 0 {
        let seconds = Usage {
            call_seconds: update.billable_seconds,
            ..Usage::default()
        };
        usage::add(tx, call.started_at.date_naive(), &seconds).await?;
    }
    Ok(())
}
