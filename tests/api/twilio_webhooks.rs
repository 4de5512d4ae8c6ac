//! The Twilio webhooks, black-box over HTTP: requests signed by a test-side
//! signer (written here from PROTOCOLS §3, independent of the server's),
//! over URLs under the configured public URL, sent to the real server.

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha1::Sha1;
use switchboard::db::CustomerId;
use switchboard::platform::SetCredential;
use switchboard::repo::{self, calls::Call, usage::Usage};
use switchboard::twilio::CallTokenKey;

use crate::helpers::{
    spawn_app, tenant_input, TestApp, PUBLIC_URL, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
};

/// A tenant's own Twilio account (bring your own account).
const BYOK_ACCOUNT_SID: &str = "AC0000000000000000000000000000b10c";
/// That account's auth token, stored sealed as the tenant's credential.
const BYOK_AUTH_TOKEN: &str = "tenant-own-auth-token-5678";
/// The caller in every test.
const CALLER: &str = "+14155550100";

/// `X-Twilio-Signature` as Twilio computes it: the URL, then every
/// `name + value` sorted (a repeated pair counts once), HMAC-SHA1, base64.
fn twilio_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A fresh `CA…` sid.
fn call_sid() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
}

/// The fields of an incoming-call webhook.
fn incoming<'a>(sid: &'a str, to: &'a str, account: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", account),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("Caller", CALLER),
        ("FromCity", "SAN FRANCISCO"),
        ("To", to),
        ("Called", to),
    ]
}

/// An answer from the server.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    /// The `callToken` parameter of a `<Connect><Stream>` answer.
    fn call_token(&self) -> &str {
        let start = self
            .body
            .find(r#"<Parameter name="callToken" value=""#)
            .unwrap_or_else(|| panic!("no call token in {}", self.body))
            + r#"<Parameter name="callToken" value=""#.len();
        let len = self.body[start..].find('"').expect("closing quote");
        &self.body[start..start + len]
    }

    /// The stream's statusCallback URL.
    fn stream_status_callback(&self) -> String {
        let start = self
            .body
            .find(r#"statusCallback=""#)
            .unwrap_or_else(|| panic!("no statusCallback in {}", self.body))
            + r#"statusCallback=""#.len();
        let len = self.body[start..].find('"').expect("closing quote");
        self.body[start..start + len].replace("&amp;", "&")
    }

    fn assert_connects(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert!(
            self.body.contains(
                r#"<Response><Connect><Stream url="wss://switchboard.test/twilio/media" statusCallback="https://switchboard.test/twilio/stream-status?customer="#
            ),
            "{}",
            self.body
        );
    }

    fn assert_rejects(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert!(
            self.body
                .ends_with(r#"<Response><Reject reason="rejected"/></Response>"#),
            "Reject must be the first (and only) verb: {}",
            self.body
        );
    }

    fn assert_refuses_politely(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert!(self.body.contains("<Response><Say>"), "{}", self.body);
        assert!(
            self.body.ends_with("</Say><Hangup/></Response>"),
            "{}",
            self.body
        );
    }

    fn assert_empty_response(&self) {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert!(self.body.ends_with("<Response/>"), "{}", self.body);
    }
}

/// Twilio, as far as these tests need it.
struct Twilio<'a> {
    app: &'a TestApp,
}

impl Twilio<'_> {
    /// POSTs `params` to `path_and_query`, signed with `auth_token` over the
    /// public URL, as Twilio does.
    async fn post(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        auth_token: &str,
    ) -> Answer {
        let url = format!("{PUBLIC_URL}{path_and_query}");
        let signature = twilio_signature(auth_token, &url, params);
        self.send(path_and_query, params, Some(&signature), &[])
            .await
    }

    /// POSTs with an explicit signature header (or none) and extra headers.
    async fn send(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        signature: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut request = self
            .app
            .client
            .post(format!("{}{path_and_query}", self.app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("X-Twilio-Signature", signature);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.text().await.expect("body");
        Answer {
            status,
            content_type,
            body,
        }
    }

    async fn call(&self, sid: &str, to: &str) -> Answer {
        self.post(
            "/twilio/voice",
            &incoming(sid, to, TWILIO_ACCOUNT_SID),
            TWILIO_AUTH_TOKEN,
        )
        .await
    }
}

async fn tenant(app: &TestApp, slug: &str, number: &str, limit: Option<i32>) -> CustomerId {
    let mut input = tenant_input(slug, number);
    input.monthly_call_limit = limit;
    app.platform
        .create_tenant("test", input)
        .await
        .expect("tenant created")
        .customer
        .customer_id
}

async fn stored_call(app: &TestApp, customer: CustomerId, sid: &str) -> Option<Call> {
    let mut tx = app.platform.db().tenant(customer).await.expect("tx");
    let call = repo::calls::get_by_sid(&mut tx, sid).await.expect("query");
    tx.commit().await.expect("commit");
    call
}

async fn usage(app: &TestApp, customer: CustomerId) -> Usage {
    let mut tx = app.platform.db().tenant(customer).await.expect("tx");
    let usage = repo::usage::get(&mut tx, Utc::now().date_naive())
        .await
        .expect("query");
    tx.commit().await.expect("commit");
    usage
}

#[tokio::test]
async fn a_known_number_connects_a_stream_with_a_verifiable_call_token() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let customer = tenant(&app, "acme", "+18005550101", None).await;
    let sid = call_sid();

    let answer = twilio.call(&sid, "+18005550101").await;
    answer.assert_connects();
    assert!(
        answer
            .body
            .contains(&format!("stream-status?customer={customer}\">")),
        "{}",
        answer.body
    );
    let key = CallTokenKey::from_keyring(app.platform.keyring()).expect("key");
    let claims = key
        .verify_for_call(answer.call_token(), &sid, Utc::now())
        .expect("the call token verifies");
    assert_eq!(claims.customer_id, customer);
    assert!(claims.expires_at > Utc::now());
    assert!(key
        .verify_for_call(answer.call_token(), &call_sid(), Utc::now())
        .is_err());

    let call = stored_call(&app, customer, &sid)
        .await
        .expect("call recorded");
    assert_eq!(call.status, "ringing");
    assert_eq!(call.to_number, "+18005550101");
    assert_eq!(call.user_id.as_deref(), Some(CALLER));
    assert_eq!(call.direction, "inbound");
    assert_eq!(usage(&app, customer).await.calls, 1);

    // Twilio retrying the same CallSid: same answer, counted once.
    let again = twilio.call(&sid, "+18005550101").await;
    again.assert_connects();
    assert_eq!(usage(&app, customer).await.calls, 1);

    app.stop().await.expect("stop");
}

#[tokio::test]
async fn unknown_numbers_and_suspended_tenants_are_rejected() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let customer = tenant(&app, "paused", "+18005550102", None).await;

    twilio
        .call(&call_sid(), "+18005559999")
        .await
        .assert_rejects();
    // Not a phone number at all.
    twilio
        .call(&call_sid(), "client:alice")
        .await
        .assert_rejects();

    app.platform
        .set_tenant_status("test", "paused", "suspended")
        .await
        .expect("suspend");
    let sid = call_sid();
    twilio.call(&sid, "+18005550102").await.assert_rejects();
    assert!(stored_call(&app, customer, &sid).await.is_none());
    assert_eq!(usage(&app, customer).await, Usage::default());

    app.stop().await.expect("stop");
}

#[tokio::test]
async fn signatures_are_required_and_checked_against_the_public_url() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let customer = tenant(&app, "guarded", "+18005550103", None).await;
    let sid = call_sid();
    let params = incoming(&sid, "+18005550103", TWILIO_ACCOUNT_SID);

    let missing = twilio.send("/twilio/voice", &params, None, &[]).await;
    assert_eq!(missing.status, 400, "{}", missing.body);

    let wrong_token = twilio_signature(
        "not-the-token",
        &format!("{PUBLIC_URL}/twilio/voice"),
        &params,
    );
    let bad = twilio
        .send("/twilio/voice", &params, Some(&wrong_token), &[])
        .await;
    assert_eq!(bad.status, 403, "{}", bad.body);
    assert!(!bad.body.contains(TWILIO_AUTH_TOKEN));

    let garbage = twilio
        .send("/twilio/voice", &params, Some("not base64 at all"), &[])
        .await;
    assert_eq!(garbage.status, 403);

    // Signed over another host, which a proxy (or attacker) puts in Host and
    // X-Forwarded-*: the server must rebuild the URL from public_url.
    let spoofed_url = "https://evil.example/twilio/voice";
    let spoofed = twilio_signature(TWILIO_AUTH_TOKEN, spoofed_url, &params);
    let answer = twilio
        .send(
            "/twilio/voice",
            &params,
            Some(&spoofed),
            &[
                ("host", "evil.example"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    // Nor the address the request actually reached.
    let direct = twilio_signature(
        TWILIO_AUTH_TOKEN,
        &format!("{}/twilio/voice", app.address),
        &params,
    );
    let answer = twilio
        .send("/twilio/voice", &params, Some(&direct), &[])
        .await;
    assert_eq!(answer.status, 403, "{}", answer.body);

    // A field changed after signing.
    let good = twilio_signature(
        TWILIO_AUTH_TOKEN,
        &format!("{PUBLIC_URL}/twilio/voice"),
        &params,
    );
    let mut tampered = params.clone();
    tampered.push(("Digits", "1"));
    let answer = twilio
        .send("/twilio/voice", &tampered, Some(&good), &[])
        .await;
    assert_eq!(answer.status, 403);

    // The query string is part of what is signed.
    let answer = twilio
        .send("/twilio/voice?x=1", &params, Some(&good), &[])
        .await;
    assert_eq!(answer.status, 403);
    twilio
        .post("/twilio/voice?x=1", &params, TWILIO_AUTH_TOKEN)
        .await
        .assert_connects();

    // The status callbacks are guarded the same way.
    for path in ["/twilio/status", "/twilio/stream-status"] {
        let missing = twilio.send(path, &params, None, &[]).await;
        assert_eq!(missing.status, 400, "{path}");
        let bad = twilio.send(path, &params, Some(&wrong_token), &[]).await;
        assert_eq!(bad.status, 403, "{path}");
    }

    // Only the properly signed request was recorded.
    assert_eq!(usage(&app, customer).await.calls, 1);
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn over_the_monthly_limit_the_caller_hears_a_message_and_the_call_is_refused() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let customer = tenant(&app, "small", "+18005550104", Some(1)).await;

    twilio
        .call(&call_sid(), "+18005550104")
        .await
        .assert_connects();
    let sid = call_sid();
    let refused = twilio.call(&sid, "+18005550104").await;
    refused.assert_refuses_politely();
    assert!(!refused.body.contains("<Connect>"));

    let call = stored_call(&app, customer, &sid).await.expect("recorded");
    assert_eq!(call.status, "refused");
    assert_eq!(call.end_reason.as_deref(), Some("monthly_call_limit"));
    assert!(call.ended_at.is_some());
    let counted = usage(&app, customer).await;
    assert_eq!((counted.calls, counted.refused_calls), (1, 1));

    // A retry of the refused call gets the same answer and is not recounted.
    twilio
        .call(&sid, "+18005550104")
        .await
        .assert_refuses_politely();
    let counted = usage(&app, customer).await;
    assert_eq!((counted.calls, counted.refused_calls), (1, 1));

    // Its final status callback keeps it refused and bills nothing.
    let mut params = incoming(&sid, "+18005550104", TWILIO_ACCOUNT_SID);
    params.retain(|(name, _)| *name != "CallStatus");
    params.extend([("CallStatus", "completed"), ("CallDuration", "4")]);
    twilio
        .post("/twilio/status", &params, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let call = stored_call(&app, customer, &sid).await.expect("recorded");
    assert_eq!(call.status, "refused");
    assert_eq!(usage(&app, customer).await.call_seconds, 0);

    app.stop().await.expect("stop");
}

#[tokio::test]
async fn status_callbacks_update_status_and_duration() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let customer = tenant(&app, "chatty", "+18005550105", None).await;
    let sid = call_sid();
    let answer = twilio.call(&sid, "+18005550105").await;
    answer.assert_connects();

    // The stream callback URL we handed Twilio, signed as Twilio would.
    let callback = answer.stream_status_callback();
    let path = callback
        .strip_prefix(PUBLIC_URL)
        .expect("callback under the public URL");
    let stream = [
        ("AccountSid", TWILIO_ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("StreamSid", "MZ00000000000000000000000000000001"),
        ("StreamName", "MZ00000000000000000000000000000001"),
        ("StreamEvent", "stream-started"),
        ("Timestamp", "2026-11-22T12:00:00Z"),
    ];
    twilio
        .post(path, &stream, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let call = stored_call(&app, customer, &sid).await.expect("recorded");
    assert_eq!(call.status, "in-progress");

    let mut params = incoming(&sid, "+18005550105", TWILIO_ACCOUNT_SID);
    params.retain(|(name, _)| *name != "CallStatus");
    params.extend([("CallStatus", "completed"), ("CallDuration", "42")]);
    twilio
        .post("/twilio/status", &params, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let call = stored_call(&app, customer, &sid).await.expect("recorded");
    assert_eq!(call.status, "completed");
    assert_eq!(call.duration_seconds, Some(42));
    assert_eq!(call.end_reason.as_deref(), Some("completed"));
    assert!(call.ended_at.is_some());
    assert_eq!(usage(&app, customer).await.call_seconds, 42);

    // Repeated and late callbacks change nothing.
    twilio
        .post("/twilio/status", &params, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let mut late = incoming(&sid, "+18005550105", TWILIO_ACCOUNT_SID);
    late.retain(|(name, _)| *name != "CallStatus");
    late.push(("CallStatus", "in-progress"));
    twilio
        .post("/twilio/status", &late, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let call = stored_call(&app, customer, &sid).await.expect("recorded");
    assert_eq!(call.status, "completed");
    assert_eq!(usage(&app, customer).await.call_seconds, 42);

    // Unknown calls: 200 and an empty Response, so Twilio does not retry.
    let other = call_sid();
    let mut unknown = incoming(&other, "+18005550105", TWILIO_ACCOUNT_SID);
    unknown.push(("CallDuration", "5"));
    twilio
        .post("/twilio/status", &unknown, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let unknown_stream = [
        ("AccountSid", TWILIO_ACCOUNT_SID),
        ("CallSid", other.as_str()),
        ("StreamEvent", "stream-stopped"),
    ];
    twilio
        .post(path, &unknown_stream, TWILIO_AUTH_TOKEN)
        .await
        .assert_empty_response();
    assert!(stored_call(&app, customer, &other).await.is_none());

    app.stop().await.expect("stop");
}

#[tokio::test]
async fn a_byok_number_validates_with_the_tenants_token_and_not_the_platforms() {
    let app = spawn_app().await;
    let twilio = Twilio { app: &app };
    let mut input = tenant_input("own", "+18005550106");
    input.numbers.clear();
    let own = app
        .platform
        .create_tenant("test", input)
        .await
        .expect("tenant")
        .customer
        .customer_id;
    let mut tx = app.platform.db().tenant(own).await.expect("tx");
    repo::numbers::assign(&mut tx, "+18005550106", None, Some(BYOK_ACCOUNT_SID))
        .await
        .expect("assign");
    tx.commit().await.expect("commit");
    app.platform
        .set_credential(
            "test",
            "own",
            SetCredential {
                provider: "twilio".into(),
                secret: SecretString::from(BYOK_AUTH_TOKEN),
                public_id: Some(BYOK_ACCOUNT_SID.into()),
                settings: Default::default(),
            },
        )
        .await
        .expect("credential");
    let plain = tenant(&app, "plain", "+18005550107", None).await;

    let sid = call_sid();
    let params = incoming(&sid, "+18005550106", BYOK_ACCOUNT_SID);
    let with_platform_token = twilio
        .post("/twilio/voice", &params, TWILIO_AUTH_TOKEN)
        .await;
    assert_eq!(
        with_platform_token.status, 403,
        "{}",
        with_platform_token.body
    );
    assert!(stored_call(&app, own, &sid).await.is_none());

    let answer = twilio.post("/twilio/voice", &params, BYOK_AUTH_TOKEN).await;
    answer.assert_connects();
    let key = CallTokenKey::from_keyring(app.platform.keyring()).expect("key");
    let claims = key
        .verify_for_call(answer.call_token(), &sid, Utc::now())
        .expect("token");
    assert_eq!(claims.customer_id, own);
    assert!(stored_call(&app, own, &sid).await.is_some());

    // The tenant's token does not sign for the platform's account…
    let as_platform = incoming(&sid, "+18005550106", TWILIO_ACCOUNT_SID);
    let answer = twilio
        .post("/twilio/voice", &as_platform, BYOK_AUTH_TOKEN)
        .await;
    assert_eq!(answer.status, 403);
    // …nor for another tenant's number, whichever account it names.
    let other_sid = call_sid();
    let elsewhere = incoming(&other_sid, "+18005550107", BYOK_ACCOUNT_SID);
    let answer = twilio
        .post("/twilio/voice", &elsewhere, BYOK_AUTH_TOKEN)
        .await;
    assert_eq!(answer.status, 403);
    assert!(stored_call(&app, plain, &other_sid).await.is_none());

    // Its callbacks are checked with the tenant's token too.
    let callback = answer_callback_path(&twilio, &sid).await;
    let stream = [
        ("AccountSid", BYOK_ACCOUNT_SID),
        ("CallSid", sid.as_str()),
        ("StreamEvent", "stream-started"),
    ];
    assert_eq!(
        twilio
            .post(&callback, &stream, TWILIO_AUTH_TOKEN)
            .await
            .status,
        403
    );
    twilio
        .post(&callback, &stream, BYOK_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let mut done = incoming(&sid, "+18005550106", BYOK_ACCOUNT_SID);
    done.retain(|(name, _)| *name != "CallStatus");
    done.extend([("CallStatus", "completed"), ("CallDuration", "7")]);
    assert_eq!(
        twilio
            .post("/twilio/status", &done, TWILIO_AUTH_TOKEN)
            .await
            .status,
        403
    );
    twilio
        .post("/twilio/status", &done, BYOK_AUTH_TOKEN)
        .await
        .assert_empty_response();
    let call = stored_call(&app, own, &sid).await.expect("recorded");
    assert_eq!(call.status, "completed");
    assert_eq!(call.duration_seconds, Some(7));

    app.stop().await.expect("stop");
}

/// The stream status callback path for an admitted BYOK call (a retry of
/// the voice webhook answers with the same TwiML shape).
async fn answer_callback_path(twilio: &Twilio<'_>, sid: &str) -> String {
    let params = incoming(sid, "+18005550106", BYOK_ACCOUNT_SID);
    let answer = twilio.post("/twilio/voice", &params, BYOK_AUTH_TOKEN).await;
    answer.assert_connects();
    answer
        .stream_status_callback()
        .strip_prefix(PUBLIC_URL)
        .expect("under the public URL")
        .to_string()
}
