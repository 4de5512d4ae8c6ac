//! Live-call control against a fake Twilio REST API that behaves like the
//! real one: Basic auth checked (401 `20003`), unknown calls 404 `20404`,
//! updates to ended calls 400 `21220`, a call JSON on success, and scripted
//! 429/5xx/slow answers. Tenants and their BYOK credentials live in the
//! real database.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use secrecy::SecretString;
use serde_json::{json, Value};
use switchboard::call::driver::CallControl;
use switchboard::configuration::Settings;
use switchboard::db::CustomerId;
use switchboard::platform::SetCredential;
use switchboard::twilio::rest::{CallUpdate, RestError, RetryPolicy, TwilioRest};
use tokio::task::JoinHandle;

use crate::helpers::{test_env, TestDb, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN};

const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const OTHER_CALL_SID: &str = "CAfedcba9876543210fedcba9876543210";
const UNKNOWN_CALL_SID: &str = "CA00000000000000000000000000000404";
const TENANT_SID: &str = "ACabcdefabcdefabcdefabcdefabcdef12";
const TENANT_TOKEN: &str = "tenant-own-auth-token";

/// A canned answer the fake gives before its normal behaviour.
#[derive(Clone)]
enum Scripted {
    /// Status, JSON body, optional `Retry-After` seconds.
    Json(u16, Value, Option<u64>),
    /// Status and a non-JSON body (a proxy's HTML page).
    Text(u16, &'static str),
    /// Answer normally, but only after this long.
    Slow(Duration),
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    user: Option<String>,
    password: Option<String>,
    content_type: Option<String>,
    raw_body: String,
    form: Vec<(String, String)>,
}

#[derive(Default)]
struct FakeState {
    /// AccountSid → auth token.
    accounts: BTreeMap<String, String>,
    /// Calls in progress.
    live: BTreeSet<String>,
    /// Calls hung up.
    ended: BTreeSet<String>,
    script: VecDeque<Scripted>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<FakeState>>;

struct FakeTwilio {
    addr: SocketAddr,
    state: Shared,
    server: JoinHandle<()>,
}

impl FakeTwilio {
    async fn start() -> Self {
        let mut state = FakeState::default();
        state
            .accounts
            .insert(TWILIO_ACCOUNT_SID.into(), TWILIO_AUTH_TOKEN.into());
        state
            .accounts
            .insert(TENANT_SID.into(), TENANT_TOKEN.into());
        state.live.insert(CALL_SID.into());
        state.live.insert(OTHER_CALL_SID.into());
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Calls/{call}",
                post(update_call),
            )
            .fallback(not_found_fallback)
            .with_state(state.clone());
        let (addr, server) = crate::helpers::serve_loopback(app, "fake Twilio").await;
        Self {
            addr,
            state,
            server,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().expect("lock").script.extend(answers);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.clone()
    }

    fn clear_seen(&self) {
        self.state.lock().expect("lock").seen.clear();
    }

    /// Waits (up to 5 s) until `n` requests have arrived.
    async fn wait_for(&self, n: usize) -> Vec<Seen> {
        for _ in 0..500 {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} requests, saw {:?}", self.seen());
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let mut body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    if code == 20003 {
        body["message"] = json!("Authenticate");
        body["detail"] = json!("Your AccountSid or AuthToken was incorrect.");
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn not_found_fallback() -> Response {
    twilio_error(404, 20404, "The requested resource was not found")
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(BASE64.decode(encoded).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

async fn update_call(
    State(state): State<Shared>,
    Path((account, call)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = basic_auth(&headers);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let scripted = {
        let mut state = state.lock().expect("lock");
        state.seen.push(Seen {
            path: format!("/2010-04-01/Accounts/{account}/Calls/{call}"),
            user: auth.as_ref().map(|(u, _)| u.clone()),
            password: auth.as_ref().map(|(_, p)| p.clone()),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            raw_body: String::from_utf8_lossy(&body).into_owned(),
            form: form.clone(),
        });
        let authorised = auth.as_ref().is_some_and(|(user, password)| {
            *user == account && state.accounts.get(user) == Some(password)
        });
        if !authorised {
            return twilio_error(401, 20003, "Authenticate");
        }
        state.script.pop_front()
    };
    match scripted {
        Some(Scripted::Json(status, body, retry_after)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (status, Json(body)).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            return response;
        }
        Some(Scripted::Text(status, text)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [(header::CONTENT_TYPE, "text/html")], text).into_response();
        }
        Some(Scripted::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let Some(call_sid) = call.strip_suffix(".json") else {
        return not_found_fallback().await;
    };
    let form_ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut state = state.lock().expect("lock");
    if state.ended.contains(call_sid) {
        return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.");
    }
    if !state.live.contains(call_sid) {
        return twilio_error(
            404,
            20404,
            &format!(
                "The requested resource /2010-04-01/Accounts/{account}/Calls/{call} was not found"
            ),
        );
    }
    let status = match (field("Status").as_deref(), field("Twiml"), field("Url")) {
        _ if !form_ok => return twilio_error(400, 20001, "Missing required parameter"),
        (Some("completed" | "canceled"), None, None) => "completed",
        (None, Some(twiml), None) if twiml.contains("<Response") => "in-progress",
        (None, None, Some(_)) => "in-progress",
        _ => return twilio_error(400, 21218, "Invalid parameter"),
    };
    if status == "completed" {
        state.live.remove(call_sid);
        state.ended.insert(call_sid.to_string());
    }
    Json(json!({
        "sid": call_sid,
        "account_sid": account,
        "parent_call_sid": null,
        "status": status,
        "direction": "inbound",
        "from": "+15557654321",
        "to": "+15550003000",
        "api_version": "2010-04-01",
        "date_updated": "Tue, 01 Jul 2025 12:00:00 +0000",
        "uri": format!("/2010-04-01/Accounts/{account}/Calls/{call}"),
    }))
    .into_response()
}

/// Everything `switchboard` logs on this thread (the tests run on a
/// current-thread runtime, so spawned updates log here too).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("switchboard=debug")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first reached by a test without a subscriber, before any
        // scoped subscriber existed, caches "never" and can miss the rebuild
        // that registering this one triggers; rebuild now that it is live.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }

    fn assert_no_secrets(&self) {
        let logs = self.text();
        for secret in [
            TENANT_TOKEN,
            TWILIO_AUTH_TOKEN,
            "not-the-right-token",
            "Basic ",
            "5551234567",
        ] {
            assert!(!logs.contains(secret), "`{secret}` logged:\n{logs}");
        }
    }
}

/// Short waits so retry tests run in milliseconds.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
    }
}

/// Settings whose REST base is `api_base`, after `edit` changes the env.
fn settings_for(api_base: &str, edit: impl FnOnce(&mut BTreeMap<String, String>)) -> Settings {
    let (mut env, _unused_database) = test_env();
    env.insert("SWITCHBOARD_TWILIO_API_BASE".into(), api_base.into());
    edit(&mut env);
    Settings::load_from(None, &env).expect("settings")
}

fn rest_for(tdb: &TestDb, settings: &Settings) -> TwilioRest {
    TwilioRest::from_settings(settings, tdb.platform.clone())
        .expect("client")
        .with_retry_policy(fast_policy())
}

async fn byok_tenant(tdb: &TestDb, slug: &str, number: &str) -> CustomerId {
    let customer = tdb.tenant(slug, number).await;
    tdb.platform
        .set_credential(
            "test",
            slug,
            SetCredential {
                provider: "twilio".into(),
                secret: SecretString::from(TENANT_TOKEN.to_string()),
                public_id: Some(TENANT_SID.into()),
                settings: Default::default(),
            },
        )
        .await
        .expect("credential stored");
    customer
}

fn call_path(account: &str, call: &str) -> String {
    format!("/2010-04-01/Accounts/{account}/Calls/{call}.json")
}

fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_platform_request(seen: &Seen, call: &str) {
    assert_eq!(seen.path, call_path(TWILIO_ACCOUNT_SID, call));
    assert_eq!(seen.user.as_deref(), Some(TWILIO_ACCOUNT_SID));
    assert_eq!(seen.password.as_deref(), Some(TWILIO_AUTH_TOKEN));
    assert!(
        seen.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn hangup_goes_through_the_platform_account() {
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let customer = tdb.tenant("rest-hangup", "+15550004001").await;
    let rest = rest_for(&tdb, &settings_for(&fake.base(), |_| {}));

    let result = rest
        .update_call(customer, CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(result.is_ok(), "{result:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_platform_request(&seen[0], CALL_SID);
    assert_eq!(seen[0].form, form(&[("Status", "completed")]));
    assert_eq!(seen[0].raw_body, "Status=completed");

    // The driver's fire-and-forget trait method does the same.
    let control: Arc<dyn CallControl> = Arc::new(rest.clone());
    control.hangup(customer, OTHER_CALL_SID);
    let seen = fake.wait_for(2).await;
    assert_platform_request(&seen[1], OTHER_CALL_SID);
    assert_eq!(seen[1].form, form(&[("Status", "completed")]));
    tdb.close().await;
}

#[tokio::test]
async fn transfer_uses_the_tenants_own_account_and_escapes_the_twiml() {
    let logs = LogBuffer::default();
    let _guard = logs.capture();
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let byok = byok_tenant(&tdb, "rest-byok", "+15550004002").await;
    let managed = tdb.tenant("rest-managed", "+15550004003").await;
    let rest = rest_for(&tdb, &settings_for(&fake.base(), |_| {}));

    let handle = rest
        .spawn_update(
            byok,
            CALL_SID,
            CallUpdate::Transfer {
                to: "+15551234567".into(),
            },
        )
        .expect("inside a runtime");
    let result = handle.await.expect("task ran");
    assert!(result.is_ok(), "{result:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, call_path(TENANT_SID, CALL_SID));
    assert_eq!(seen[0].user.as_deref(), Some(TENANT_SID));
    assert_eq!(seen[0].password.as_deref(), Some(TENANT_TOKEN));
    assert_eq!(
        seen[0].form,
        form(&[(
            "Twiml",
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial>+15551234567</Dial></Response>"#
        )])
    );
    assert!(seen[0].raw_body.starts_with("Twiml="), "{seen:?}");
    assert!(!seen[0].raw_body.contains(['<', '"', ' ']), "{seen:?}");
    assert!(seen[0].raw_body.contains("%2B15551234567"), "{seen:?}");

    // Markup in the number is escaped, never injected; another tenant on
    // the same server still uses the platform account.
    fake.clear_seen();
    let result = rest
        .update_call(
            managed,
            OTHER_CALL_SID,
            &CallUpdate::Transfer {
                to: "+1555</Dial><Hangup/>&".into(),
            },
        )
        .await;
    assert!(result.is_ok(), "{result:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_platform_request(&seen[0], OTHER_CALL_SID);
    assert_eq!(seen[0].form.len(), 1);
    let twiml = &seen[0].form[0].1;
    assert!(
        twiml.ends_with("<Response><Dial>+1555&lt;/Dial&gt;&lt;Hangup/&gt;&amp;</Dial></Response>"),
        "{twiml}"
    );
    let text = logs.text();
    assert!(
        text.contains("call updated") && text.contains(CALL_SID),
        "{text}"
    );
    assert!(text.contains("+1…67"), "{text}");
    logs.assert_no_secrets();
    tdb.close().await;
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried() {
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let customer = tdb.tenant("rest-retry", "+15550004004").await;
    let rest = rest_for(&tdb, &settings_for(&fake.base(), |_| {}));
    let transfer = CallUpdate::Transfer {
        to: "+15551234567".into(),
    };

    let cases = [
        Scripted::Json(
            429,
            json!({"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}),
            Some(0),
        ),
        Scripted::Json(
            500,
            json!({"code": 20500, "message": "An internal server error has occurred", "status": 500}),
            None,
        ),
        Scripted::Text(502, "<html><body>Bad Gateway</body></html>"),
        Scripted::Json(
            503,
            json!({"type": "https://www.twilio.com/docs/errors/20503", "title": "Service Unavailable", "status": 503}),
            None,
        ),
    ];
    for case in cases {
        fake.clear_seen();
        fake.script([case]);
        let result = rest.update_call(customer, CALL_SID, &transfer).await;
        assert!(result.is_ok(), "{result:?}");
        let seen = fake.wait_for(2).await;
        assert_eq!(seen.len(), 2, "one failure, one retry");
        assert_eq!(seen[0].form, seen[1].form, "the retry sends the same form");
        assert_platform_request(&seen[1], CALL_SID);
    }

    // Failing every time: exactly `attempts` requests, then the typed error.
    fake.clear_seen();
    fake.script(vec![Scripted::Text(503, "busy"); 3]);
    let result = rest.update_call(customer, CALL_SID, &transfer).await;
    assert!(
        matches!(result, Err(RestError::Server { status: 503, .. })),
        "{result:?}"
    );
    assert_eq!(fake.seen().len(), 3);

    fake.clear_seen();
    let limited = Scripted::Json(
        429,
        json!({"code": 20429, "message": "Too Many Requests"}),
        None,
    );
    fake.script(vec![limited; 3]);
    let result = rest
        .update_call(customer, CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(
        matches!(
            result,
            Err(RestError::RateLimited {
                code: Some(20429),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(fake.seen().len(), 3);
    tdb.close().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let logs = LogBuffer::default();
    let _guard = logs.capture();
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let customer = tdb.tenant("rest-4xx", "+15550004005").await;

    // Wrong platform token: 401 / 20003, one request.
    let wrong = settings_for(&fake.base(), |env| {
        env.insert(
            "SWITCHBOARD_TWILIO_AUTH_TOKEN".into(),
            "not-the-right-token".into(),
        );
    });
    let result = rest_for(&tdb, &wrong)
        .update_call(customer, CALL_SID, &CallUpdate::Hangup)
        .await;
    match &result {
        Err(error @ RestError::Auth { status: 401, .. }) => {
            assert_eq!(error.twilio_code(), Some(20003));
            assert!(!error.to_string().contains("not-the-right-token"));
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert_eq!(fake.seen().len(), 1);

    let rest = rest_for(&tdb, &settings_for(&fake.base(), |_| {}));
    // A call Twilio does not know: 404 / 20404, one request.
    fake.clear_seen();
    let result = rest
        .update_call(customer, UNKNOWN_CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(
        matches!(
            result,
            Err(RestError::NotFound {
                status: 404,
                code: Some(20404),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(fake.seen().len(), 1);

    // A call that has ended: 400 / 21220, one request.
    let ok = rest
        .update_call(customer, CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    fake.clear_seen();
    let result = rest
        .update_call(
            customer,
            CALL_SID,
            &CallUpdate::Transfer {
                to: "+15551234567".into(),
            },
        )
        .await;
    assert!(
        matches!(
            result,
            Err(RestError::Other {
                status: 400,
                code: Some(21220),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(fake.seen().len(), 1);
    let text = logs.text();
    assert!(text.contains("20003") && text.contains("21220"), "{text}");
    logs.assert_no_secrets();
    tdb.close().await;
}

#[tokio::test]
async fn network_failures_and_timeouts_are_retried() {
    let logs = LogBuffer::default();
    let _guard = logs.capture();
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let customer = tdb.tenant("rest-network", "+15550004006").await;

    // A slow answer times out and the retry succeeds.
    let rest = rest_for(&tdb, &settings_for(&fake.base(), |_| {})).with_retry_policy(RetryPolicy {
        request_timeout: Duration::from_millis(300),
        ..fast_policy()
    });
    fake.script([Scripted::Slow(Duration::from_secs(5))]);
    let result = rest
        .update_call(customer, CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(fake.seen().len(), 2);

    // Nobody listening: every try fails to connect, then a Network error.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let rest = rest_for(&tdb, &settings_for(&dead, |_| {}));
    let result = rest
        .update_call(customer, OTHER_CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(matches!(result, Err(RestError::Network(_))), "{result:?}");
    let text = logs.text();
    assert!(
        text.contains("retrying") && text.contains("call update failed"),
        "{text}"
    );
    logs.assert_no_secrets();
    tdb.close().await;
}

#[tokio::test]
async fn missing_credentials_or_bad_input_send_nothing() {
    let tdb = TestDb::new().await;
    let fake = FakeTwilio::start().await;
    let managed = tdb.tenant("rest-nocreds", "+15550004007").await;
    let byok = byok_tenant(&tdb, "rest-byok-only", "+15550004008").await;
    let no_platform = settings_for(&fake.base(), |env| {
        env.remove("SWITCHBOARD_TWILIO_ACCOUNT_SID");
        env.remove("SWITCHBOARD_TWILIO_AUTH_TOKEN");
    });
    let rest = rest_for(&tdb, &no_platform);

    let result = rest
        .update_call(managed, CALL_SID, &CallUpdate::Hangup)
        .await;
    assert!(
        matches!(result, Err(RestError::NoCredentials)),
        "{result:?}"
    );
    let control: &dyn CallControl = &rest;
    control.hangup(managed, CALL_SID);
    control.transfer(managed, CALL_SID, "+15551234567");

    // Bad input is refused before any request.
    let result = rest
        .update_call(managed, "CA../../Accounts", &CallUpdate::Hangup)
        .await;
    assert!(
        matches!(result, Err(RestError::InvalidRequest(_))),
        "{result:?}"
    );
    let result = rest
        .update_call(byok, CALL_SID, &CallUpdate::Transfer { to: "  ".into() })
        .await;
    assert!(
        matches!(result, Err(RestError::InvalidRequest(_))),
        "{result:?}"
    );

    // Outside a tokio runtime the trait methods log and return.
    let outside = rest.clone();
    std::thread::spawn(move || {
        outside.hangup(managed, CALL_SID);
        outside.transfer(managed, CALL_SID, "+15551234567");
    })
    .join()
    .expect("no panic outside a runtime");

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());

    // A BYOK tenant does not need the platform account.
    let result = rest.update_call(byok, CALL_SID, &CallUpdate::Hangup).await;
    assert!(result.is_ok(), "{result:?}");
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].user.as_deref(), Some(TENANT_SID));
    tdb.close().await;
}
