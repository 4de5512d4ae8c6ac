//! Live-call control over Twilio's REST API: hang up or transfer a call in
//! progress (`POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`)
//! with the tenant's own Twilio account (BYOK) or the platform's, with a
//! timeout per request, bounded retries and typed errors. `TwilioRest` is
//! the driver's real `CallControl`.
//!
//! Logs carry the call sid, the tenant id, the action and which account was
//! used; never the auth token, the `Authorization` header or a full phone
//! number.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::call::driver::CallControl;
use crate::configuration::{is_account_sid, url_base::BaseUrl, Settings, TwilioSettings};
use crate::db::CustomerId;
use crate::platform::{phone, Platform, PlatformError};
use crate::twilio::twiml::Twiml;

/// The REST API version in every Twilio voice URL.
pub const API_VERSION: &str = "2010-04-01";

/// Error bodies are read up to this many bytes; Twilio's are a few hundred.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Error messages kept in `RestError` are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// What to do to a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallUpdate {
    /// `Status=completed`: hang up.
    Hangup,
    /// `Twiml=<Response><Dial>to</Dial></Response>`: transfer to a human.
    Transfer {
        /// The number (or SIP/client address) to dial.
        to: String,
    },
}

impl CallUpdate {
    /// A short name for logs.
    pub fn action(&self) -> &'static str {
        match self {
            CallUpdate::Hangup => "hangup",
            CallUpdate::Transfer { .. } => "transfer",
        }
    }

    /// The form fields Twilio's `Calls/{CallSid}.json` update takes.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            CallUpdate::Hangup => vec![("Status", "completed".to_string())],
            CallUpdate::Transfer { to } => {
                vec![("Twiml", Twiml::new().dial(to.trim(), None).render())]
            }
        }
    }
}

/// Timeouts and retries for one call update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests at most, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two tries (also caps `Retry-After`).
    pub max_backoff: Duration,
    /// Limit on one request, from connecting to the end of the body.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(4),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Why a call update did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Twilio refused the credentials (HTTP 401, code 20003).
    #[error("Twilio rejected the credentials (HTTP {status}{}): {message}", code_suffix(.code))]
    Auth {
        /// HTTP status.
        status: u16,
        /// Twilio error code.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
    /// No such call on that account (HTTP 404, code 20404): usually the
    /// call has already ended.
    #[error("Twilio does not know the call (HTTP {status}{}): {message}", code_suffix(.code))]
    NotFound {
        /// HTTP status.
        status: u16,
        /// Twilio error code.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
    /// HTTP 429 after every retry.
    #[error("Twilio is rate limiting us{}: {message}", code_suffix(.code))]
    RateLimited {
        /// Twilio error code (20429).
        code: Option<u32>,
        /// Twilio's message.
        message: String,
        /// What `Retry-After` asked for, if anything.
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx after every retry.
    #[error("Twilio failed (HTTP {status}{}): {message}", code_suffix(.code))]
    Server {
        /// HTTP status.
        status: u16,
        /// Twilio error code.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
    /// Connecting, sending or reading failed, or the request timed out,
    /// after every retry.
    #[error("cannot reach Twilio")]
    Network(#[source] reqwest::Error),
    /// Any other answer (400 `21220` "call not in progress", 403, 3xx…).
    #[error("Twilio refused the update (HTTP {status}{}): {message}", code_suffix(.code))]
    Other {
        /// HTTP status.
        status: u16,
        /// Twilio error code.
        code: Option<u32>,
        /// Twilio's message.
        message: String,
    },
    /// Neither the tenant nor the platform has a Twilio account.
    #[error(
        "no Twilio credentials: the tenant has none and the platform account is not configured"
    )]
    NoCredentials,
    /// The tenant's Twilio credential could not be read or opened.
    #[error("cannot open the tenant's Twilio credential")]
    Credentials(#[source] PlatformError),
    /// The request cannot be sent as asked (bad call sid, empty number,
    /// a stored credential without an AccountSid).
    #[error("invalid call update: {0}")]
    InvalidRequest(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Setup(#[source] reqwest::Error),
}

impl RestError {
    /// Whether trying again may help: network failures, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RestError::Network(_) | RestError::RateLimited { .. } | RestError::Server { .. }
        )
    }

    /// Twilio's error code, when it sent one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            RestError::Auth { code, .. }
            | RestError::NotFound { code, .. }
            | RestError::RateLimited { code, .. }
            | RestError::Server { code, .. }
            | RestError::Other { code, .. } => *code,
            _ => None,
        }
    }
}

fn code_suffix(code: &Option<u32>) -> String {
    code.map(|c| format!(", code {c}")).unwrap_or_default()
}

/// Twilio's JSON error body, read leniently: the classic
/// `{"code","message","more_info","status"}` (401s add `detail`) and
/// RFC 9457 problem details (`type`, `title`, `detail`, `status`, maybe
/// `code`). Anything else parses to all `None`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TwilioErrorBody {
    /// Twilio error code (`20404`), also taken from a `…/errors/NNNNN` URL.
    pub code: Option<u32>,
    /// What went wrong, phone numbers masked.
    pub message: Option<String>,
    /// Documentation link (`more_info` or `type`).
    pub more_info: Option<String>,
    /// HTTP status as the body states it.
    pub status: Option<u16>,
}

impl TwilioErrorBody {
    /// Parses `body`; never fails.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let text = |key: &str| {
            map.get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let number = |key: &str| match map.get(key) {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        let more_info = text("more_info").or_else(|| text("type"));
        let code = number("code")
            .and_then(|c| u32::try_from(c).ok())
            .or_else(|| more_info.as_deref().and_then(code_from_url));
        let headline = text("message").or_else(|| text("title"));
        let message = match (headline, text("detail")) {
            (Some(h), Some(d)) if h != d => Some(format!("{h}: {d}")),
            (Some(h), _) => Some(h),
            (None, d) => d,
        };
        Self {
            code,
            message: message.map(|m| clip(&mask_numbers(&m))),
            more_info,
            status: number("status").and_then(|s| u16::try_from(s).ok()),
        }
    }
}

/// `https://www.twilio.com/docs/errors/20404` → 20404.
fn code_from_url(url: &str) -> Option<u32> {
    let last = url.trim_end_matches('/').rsplit('/').next()?;
    if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    last.parse().ok()
}

/// Masks `+` followed by 7 or more digits (phone numbers Twilio may echo).
fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('+') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits >= 7 {
            out.push_str(&phone::redact(&rest[at..at + 1 + digits]));
        } else {
            out.push('+');
            out.push_str(&after[..digits]);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    out.push('…');
    out
}

/// A number for logs, safe on any input (`phone::redact` expects ASCII).
fn redact_number(number: &str) -> String {
    let number = number.trim();
    if number.is_ascii() {
        phone::redact(number)
    } else {
        "+***".to_string()
    }
}

/// Whether `sid` looks like a Twilio CallSid: `CA` and 32 hex digits.
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// The error for a non-2xx answer.
fn classify(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> RestError {
    let parsed = TwilioErrorBody::parse(body);
    let code = parsed.code;
    let message = parsed.message.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    });
    let status = status.as_u16();
    match status {
        401 => RestError::Auth {
            status,
            code,
            message,
        },
        _ if code == Some(20003) => RestError::Auth {
            status,
            code,
            message,
        },
        404 => RestError::NotFound {
            status,
            code,
            message,
        },
        _ if code == Some(20404) => RestError::NotFound {
            status,
            code,
            message,
        },
        429 => RestError::RateLimited {
            code,
            message,
            retry_after,
        },
        500..=599 => RestError::Server {
            status,
            code,
            message,
        },
        _ => RestError::Other {
            status,
            code,
            message,
        },
    }
}

/// `Retry-After: <seconds>` (the HTTP-date form is ignored).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// Reads at most `MAX_BODY_BYTES` of the body.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_BODY_BYTES {
            break;
        }
    }
    Ok(body)
}

/// Which account an update goes through.
#[derive(Clone)]
struct Account {
    /// `AC…`, part of the URL and the Basic user name.
    sid: String,
    /// The Basic password; never logged.
    token: SecretString,
    /// `tenant` (BYOK) or `platform`, for logs.
    source: &'static str,
}

/// Everything a `TwilioRest` handle shares.
#[derive(Clone)]
struct Inner {
    /// Pooled HTTPS client (rustls), no redirects followed.
    http: reqwest::Client,
    /// `https://api.twilio.com` or a test fake.
    api_base: BaseUrl,
    /// The platform's own account, for tenants without one.
    platform_account: Option<Account>,
    /// Opens tenants' BYOK `twilio` credentials.
    platform: Platform,
    /// Timeouts and retries.
    policy: RetryPolicy,
}

/// Twilio REST live-call control; cheap to clone.
#[derive(Clone)]
pub struct TwilioRest {
    /// Shared state, so spawned updates can own a handle.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("api_base", &self.inner.api_base.as_str())
            .field("platform_account", &self.inner.platform_account.is_some())
            .field("policy", &self.inner.policy)
            .finish()
    }
}

impl TwilioRest {
    /// Builds the client from `settings.twilio` (platform account and API
    /// base) and the platform (tenants' BYOK credentials).
    pub fn from_settings(settings: &Settings, platform: Platform) -> Result<Self, RestError> {
        Self::new(&settings.twilio, platform)
    }

    /// Builds the client from the Twilio settings and the platform.
    pub fn new(twilio: &TwilioSettings, platform: Platform) -> Result<Self, RestError> {
        let policy = RetryPolicy::default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(RestError::Setup)?;
        let platform_account = match (&twilio.account_sid, &twilio.auth_token) {
            (Some(sid), Some(token)) if is_account_sid(sid) => Some(Account {
                sid: sid.clone(),
                token: token.clone(),
                source: "platform",
            }),
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base: twilio.api_base.clone(),
                platform_account,
                platform,
                policy,
            }),
        })
    }

    /// The same client with other timeouts and retries (tests use short ones).
    pub fn with_retry_policy(mut self, mut policy: RetryPolicy) -> Self {
        policy.attempts = policy.attempts.max(1);
        Arc::make_mut(&mut self.inner).policy = policy;
        self
    }

    /// The timeouts and retries in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    /// Hangs up or transfers `call_sid` now, retrying network failures,
    /// 429 and 5xx; logs the outcome. `Err(NotFound)` usually means the
    /// call has already ended.
    pub async fn update_call(
        &self,
        customer_id: CustomerId,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<(), RestError> {
        let span = tracing::info_span!(
            "twilio_call_update",
            call_sid,
            %customer_id,
            action = update.action(),
            account = tracing::field::Empty,
            to = tracing::field::Empty,
        );
        if let CallUpdate::Transfer { to } = update {
            span.record("to", redact_number(to));
        }
        async {
            let result = self.try_update(customer_id, call_sid, update).await;
            log_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    /// Runs `update_call` on the current tokio runtime and returns its
    /// handle (`None`, logged, when called outside a runtime).
    pub fn spawn_update(
        &self,
        customer_id: CustomerId,
        call_sid: &str,
        update: CallUpdate,
    ) -> Option<JoinHandle<Result<(), RestError>>> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                call_sid,
                %customer_id,
                action = update.action(),
                "call update dropped: no tokio runtime to run it on"
            );
            return None;
        };
        let this = self.clone();
        let call_sid = call_sid.to_string();
        Some(runtime.spawn(async move { this.update_call(customer_id, &call_sid, &update).await }))
    }

    async fn try_update(
        &self,
        customer_id: CustomerId,
        call_sid: &str,
        update: &CallUpdate,
    ) -> Result<(), RestError> {
        if !is_call_sid(call_sid) {
            return Err(RestError::InvalidRequest(
                "the call sid is not CA followed by 32 hex digits".into(),
            ));
        }
        if let CallUpdate::Transfer { to } = update {
            if to.trim().is_empty() {
                return Err(RestError::InvalidRequest(
                    "the transfer number is empty".into(),
                ));
            }
        }
        let account = self.account_for(customer_id).await?;
        tracing::Span::current().record("account", account.source);
        let url = self.inner.api_base.join(&format!(
            "/{API_VERSION}/Accounts/{}/Calls/{call_sid}.json",
            account.sid
        ));
        let form = update.form();
        let policy = self.inner.policy;
        let mut attempt = 1;
        loop {
            match self.send_once(&url, &account, &form).await {
                Ok(call_status) => {
                    tracing::info!(
                        attempts = attempt,
                        call_status = call_status.as_deref().unwrap_or("unknown"),
                        "call updated"
                    );
                    return Ok(());
                }
                Err(error) if error.is_retryable() && attempt < policy.attempts => {
                    let mut delay = policy.backoff(attempt);
                    if let RestError::RateLimited {
                        retry_after: Some(asked),
                        ..
                    } = &error
                    {
                        delay = delay.max((*asked).min(policy.max_backoff));
                    }
                    tracing::warn!(
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %describe(&error),
                        "call update failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    if attempt > 1 {
                        tracing::debug!(attempts = attempt, "no more retries");
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The tenant's own account when it has a `twilio` credential, else the
    /// platform's.
    async fn account_for(&self, customer_id: CustomerId) -> Result<Account, RestError> {
        match self
            .inner
            .platform
            .open_credential(customer_id, "twilio")
            .await
        {
            Ok(Some((summary, token))) => match summary.public_id {
                Some(sid) if is_account_sid(&sid) => Ok(Account {
                    sid,
                    token,
                    source: "tenant",
                }),
                _ => Err(RestError::InvalidRequest(
                    "the tenant's Twilio credential has no valid AccountSid".into(),
                )),
            },
            Ok(None) => self
                .inner
                .platform_account
                .clone()
                .ok_or(RestError::NoCredentials),
            Err(error) => Err(RestError::Credentials(error)),
        }
    }

    /// One POST; `Ok` carries the call's new `status` when Twilio sent it.
    async fn send_once(
        &self,
        url: &str,
        account: &Account,
        form: &[(&'static str, String)],
    ) -> Result<Option<String>, RestError> {
        let response = self
            .inner
            .http
            .post(url)
            .basic_auth(&account.sid, Some(account.token.expose_secret()))
            .header(ACCEPT, "application/json")
            .form(form)
            .timeout(self.inner.policy.request_timeout)
            .send()
            .await
            .map_err(|e| RestError::Network(e.without_url()))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = read_capped(response).await;
        if status.is_success() {
            // The update is applied once Twilio answers 2xx; a body that
            // cannot be read or parsed only loses the status for the log.
            let call_status = body.ok().and_then(|b| {
                serde_json::from_slice::<Value>(&b)
                    .ok()?
                    .get("status")?
                    .as_str()
                    .map(str::to_string)
            });
            return Ok(call_status);
        }
        let body = body.unwrap_or_default();
        Err(classify(status, &body, wait))
    }
}

/// The error and its causes, `: `-joined, for logs (reqwest keeps the
/// useful part, such as "connection refused", in its sources).
fn describe(error: &RestError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The final word on an update that failed (success is logged where the
/// attempt count is known); the span carries call sid, tenant and action.
fn log_outcome(result: &Result<(), RestError>) {
    let Err(error) = result else {
        return;
    };
    let text = describe(error);
    match error {
        RestError::NotFound { .. } => tracing::info!(
            error = %text,
            "call update skipped: Twilio no longer has the call (already ended?)"
        ),
        RestError::InvalidRequest(_) => {
            tracing::warn!(error = %text, "call update not sent")
        }
        RestError::NoCredentials => tracing::error!(
            "call update not sent: no Twilio credentials for this tenant or the platform"
        ),
        _ => tracing::error!(error = %text, "call update failed"),
    }
}

impl CallControl for TwilioRest {
    fn hangup(&self, customer_id: CustomerId, call_sid: &str) {
        let _ = self.spawn_update(customer_id, call_sid, CallUpdate::Hangup);
    }

    fn transfer(&self, customer_id: CustomerId, call_sid: &str, to: &str) {
        let _ = self.spawn_update(
            customer_id,
            call_sid,
            CallUpdate::Transfer { to: to.to_string() },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_the_documented_fields() {
        assert_eq!(
            CallUpdate::Hangup.form(),
            vec![("Status", "completed".to_string())]
        );
        let form = CallUpdate::Transfer {
            to: " +15551234567 ".into(),
        }
        .form();
        assert_eq!(form.len(), 1);
        assert_eq!(form[0].0, "Twiml");
        assert!(form[0]
            .1
            .ends_with("<Response><Dial>+15551234567</Dial></Response>"));
        let form = CallUpdate::Transfer {
            to: "+1555<&>".into(),
        }
        .form();
        assert!(form[0].1.contains("<Dial>+1555&lt;&amp;&gt;</Dial>"));
    }

    #[test]
    fn classic_error_bodies() {
        let body = br#"{"code": 20404, "message": "The requested resource /2010-04-01/Accounts/AC1/Calls/CA1.json was not found", "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404}"#;
        let parsed = TwilioErrorBody::parse(body);
        assert_eq!(parsed.code, Some(20404));
        assert_eq!(parsed.status, Some(404));
        assert!(parsed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("not found"));
        let auth = br#"{"code":20003,"detail":"Your AccountSid or AuthToken was incorrect.","message":"Authenticate","more_info":"https://www.twilio.com/docs/errors/20003","status":401}"#;
        let parsed = TwilioErrorBody::parse(auth);
        assert_eq!(parsed.code, Some(20003));
        assert_eq!(
            parsed.message.as_deref(),
            Some("Authenticate: Your AccountSid or AuthToken was incorrect.")
        );
    }

    #[test]
    fn rfc9457_and_odd_bodies() {
        let body = br#"{"type":"https://www.twilio.com/docs/errors/20429","title":"Too Many Requests","status":"429","detail":"slow down","extra":[1]}"#;
        let parsed = TwilioErrorBody::parse(body);
        assert_eq!(parsed.code, Some(20429));
        assert_eq!(parsed.status, Some(429));
        assert_eq!(
            parsed.message.as_deref(),
            Some("Too Many Requests: slow down")
        );
        let string_code = TwilioErrorBody::parse(br#"{"code":"21220","message":"x"}"#);
        assert_eq!(string_code.code, Some(21220));
        for junk in [
            &b""[..],
            b"<html>Bad Gateway</html>",
            b"[1,2]",
            b"null",
            b"{\"code\":-1,\"message\":7,\"status\":1e99}",
            b"{\"code\":99999999999}",
        ] {
            let parsed = TwilioErrorBody::parse(junk);
            assert_eq!(parsed.code, None, "{junk:?}");
            assert_eq!(parsed.message, None);
        }
    }

    #[test]
    fn classification_and_retryability() {
        let retry = |status: u16, body: &[u8]| {
            let error = classify(StatusCode::from_u16(status).expect("status"), body, None);
            (error.is_retryable(), error.twilio_code())
        };
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, b"", None),
            RestError::Auth { status: 401, .. }
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, br#"{"code":20003}"#, None),
            RestError::Auth { status: 403, .. }
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, b"<html/>", None),
            RestError::NotFound { code: None, .. }
        ));
        assert!(matches!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                b"",
                Some(Duration::from_secs(2))
            ),
            RestError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ));
        assert_eq!(retry(429, br#"{"code":20429}"#), (true, Some(20429)));
        assert_eq!(retry(500, b""), (true, None));
        assert_eq!(retry(503, b"oops"), (true, None));
        assert_eq!(retry(400, br#"{"code":21220}"#), (false, Some(21220)));
        assert_eq!(retry(401, b""), (false, None));
        assert_eq!(retry(404, b""), (false, None));
        assert_eq!(retry(409, b""), (false, None));
        assert_eq!(retry(302, b""), (false, None));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, b"", None),
            RestError::Other { status: 400, ref message, .. } if message == "Bad Request"
        ));
    }

    #[test]
    fn messages_do_not_carry_numbers() {
        let body =
            br#"{"code":13223,"message":"Dial: Invalid phone number format +15551234567 or +1 2"}"#;
        let message = TwilioErrorBody::parse(body).message.unwrap_or_default();
        assert!(!message.contains("5551234567"), "{message}");
        assert!(message.contains("+1…67"), "{message}");
        assert!(message.ends_with("or +1 2"), "{message}");
        assert_eq!(mask_numbers("é+ü+"), "é+ü+");
        let long = "x".repeat(1000);
        let clipped = TwilioErrorBody::parse(format!(r#"{{"message":"{long}"}}"#).as_bytes())
            .message
            .unwrap_or_default();
        assert_eq!(clipped.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::from_millis(250));
        assert_eq!(policy.backoff(2), Duration::from_millis(500));
        assert_eq!(policy.backoff(3), Duration::from_secs(1));
        assert_eq!(policy.backoff(10), Duration::from_secs(4));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(4));
    }

    #[test]
    fn sids_headers_and_redaction() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid("CA0123456789abcdef0123456789abcde/"));
        assert!(!is_call_sid("../../Accounts/AC/Calls/CA.json?x=1"));
        assert!(!is_call_sid("CAé123456789abcdef0123456789abcde"));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
        assert_eq!(redact_number("+15551234567"), "+1…67");
        assert_eq!(redact_number("+1€5551234567"), "+***");
        assert_eq!(
            code_from_url("https://www.twilio.com/docs/errors/20404/"),
            Some(20404)
        );
        assert_eq!(code_from_url("https://example.com/problem"), None);
    }
}
