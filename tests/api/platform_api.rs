//! The platform API, black-box over HTTP with real keys.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use switchboard::configuration::MasterKey;
use switchboard::crypto::api_key::KeyScope;
use switchboard::crypto::Keyring;
use switchboard::platform::Platform;

use crate::helpers::{spawn_app, TestApp, TestDb};

async fn call(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}/platform/api{path}", app.address))
        .bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

#[tokio::test]
async fn keys_gate_the_platform_api() {
    let app = spawn_app().await;
    let url = format!("{}/platform/api/tenants", app.address);
    let none = app.client.get(&url).send().await.expect("req");
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    let (status, _) = call(
        &app,
        "sbk_p_0000000000000000000000000000000000000000",
        reqwest::Method::GET,
        "/tenants",
        None,
    )
    .await;
    assert_eq!(status, 401, "unknown key");

    app.platform
        .create_tenant("test", crate::helpers::tenant_input("gate", "+15550001000"))
        .await
        .expect("tenant");
    let tenant_key = app
        .platform
        .create_api_key("test", KeyScope::Tenant, Some("gate"), "k")
        .await
        .expect("tenant key")
        .key;
    let (status, _) = call(&app, &tenant_key, reqwest::Method::GET, "/tenants", None).await;
    assert_eq!(status, 403, "a tenant key is not a platform key");
    let service_key = app
        .platform
        .create_api_key("test", KeyScope::Service, None, "svc")
        .await
        .expect("service key")
        .key;
    let (status, _) = call(&app, &service_key, reqwest::Method::GET, "/tenants", None).await;
    assert_eq!(status, 403, "a service key is not a platform key");

    let key = app.platform_key().await;
    let (status, body) = call(&app, &key, reqwest::Method::GET, "/tenants", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(1));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn tenant_lifecycle_over_http() {
    let app = spawn_app().await;
    let key = app.platform_key().await;
    use reqwest::Method as M;

    let create = json!({
        "slug": "peterson", "name": "Peterson Insurance", "template": "insurance",
        "numbers": ["+1 (800) 555-1212"], "monthly_call_limit": 100
    });
    let (status, body) = call(&app, &key, M::POST, "/tenants", Some(create.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["customer"]["slug"], "peterson");
    assert_eq!(body["numbers"][0]["e164"], "+18005551212");

    let (status, body) = call(&app, &key, M::POST, "/tenants", Some(create)).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = call(
        &app,
        &key,
        M::POST,
        "/tenants",
        Some(json!({"slug": "Bad Slug!", "name": "x", "template": "insurance"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("slug"),
        "{body}"
    );
    let (status, body) = call(
        &app,
        &key,
        M::POST,
        "/tenants",
        Some(json!({"slug": "x1", "name": "x", "template": "bakery"})),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("template"),
        "{body}"
    );
    let (status, _) = call(&app, &key, M::POST, "/tenants", Some(json!({"slug": 5}))).await;
    assert_eq!(status, 400, "malformed JSON body is a 400, not a 500");

    // A second tenant cannot take the first one's number.
    let (status, _) = call(
        &app,
        &key,
        M::POST,
        "/tenants",
        Some(json!({"slug": "harbor", "name": "Harbor", "template": "real_estate"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &app,
        &key,
        M::POST,
        "/tenants/harbor/numbers",
        Some(json!({"number": "+18005551212"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = call(
        &app,
        &key,
        M::POST,
        "/tenants/harbor/numbers",
        Some(json!({"number": "+16195550123"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &app,
        &key,
        M::POST,
        "/tenants/nobody/numbers",
        Some(json!({"number": "+16195550124"})),
    )
    .await;
    assert_eq!(status, 404);

    // Suspend and resume.
    let (status, body) = call(&app, &key, M::POST, "/tenants/peterson/suspend", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("suspended")));
    let (status, body) = call(&app, &key, M::POST, "/tenants/peterson/resume", None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));

    // Release a number, then it can move.
    let (status, _) = call(&app, &key, M::DELETE, "/numbers/+18005551212", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, &key, M::DELETE, "/numbers/+18005551212", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        &key,
        M::POST,
        "/tenants/harbor/numbers",
        Some(json!({"number": "+18005551212"})),
    )
    .await;
    assert_eq!(status, 201);

    // Users and keys.
    let (status, body) = call(
        &app,
        &key,
        M::POST,
        "/users",
        Some(json!({
        "email": "Ops@Peterson.example", "name": "Ops", "role": "admin", "tenant": "peterson",
        "password": "a long enough password"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["email"], "ops@peterson.example");
    assert!(body.get("password").is_none());
    let (status, _) = call(&app, &key, M::POST, "/users", Some(json!({
        "email": "x@y.example", "name": "X", "role": "admin", "tenant": "peterson", "password": "short"}))).await;
    assert_eq!(status, 400);
    let (status, body) = call(
        &app,
        &key,
        M::POST,
        "/apikeys",
        Some(json!({"scope": "tenant", "tenant": "peterson"})),
    )
    .await;
    assert_eq!(status, 201);
    assert!(body["key"].as_str().unwrap_or("").starts_with("sbk_t_"));

    // Credentials: stored sealed, shown only as a hint.
    let secret = "sk-live-abcdefghijklmnop1234";
    let (status, body) = call(
        &app,
        &key,
        M::PUT,
        "/tenants/peterson/credentials/openai",
        Some(json!({
        "secret": secret, "settings": {"model": "gpt-4o-mini"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secret_hint"], "…1234");
    let (status, body) = call(&app, &key, M::GET, "/tenants/peterson", None).await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains(secret), "secret returned by the API: {text}");
    assert_eq!(body["credentials"][0]["provider"], "openai");
    let (status, _) = call(
        &app,
        &key,
        M::PUT,
        "/tenants/peterson/credentials/twilio",
        Some(json!({"secret": "0123456789abcdef"})),
    )
    .await;
    assert_eq!(status, 400, "twilio needs an AccountSid");

    let (status, body) = call(&app, &key, M::GET, "/tenants", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(2));
    let (status, body) = call(&app, &key, M::GET, "/templates", None).await;
    assert_eq!(status, 200);
    assert!(body["templates"].as_array().is_some_and(|t| t.len() >= 2));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn rotation_reseals_credentials_under_the_new_key() {
    let tdb = TestDb::new().await;
    let customer = tdb.tenant("rotate", "+15550002000").await;
    tdb.platform
        .set_credential(
            "test",
            "rotate",
            switchboard::platform::SetCredential {
                provider: "deepgram".into(),
                secret: SecretString::from("dg-secret-value-42".to_string()),
                public_id: None,
                settings: Default::default(),
            },
        )
        .await
        .expect("set");

    // Same key material as the test settings' current key, now as version 1.
    let old_key = tdb
        .settings
        .secrets
        .master_key
        .clone()
        .expect("test sets a key");
    let mut previous = BTreeMap::new();
    previous.insert(1, old_key);
    let rotated = Platform::new(
        tdb.db().clone(),
        Keyring::new(2, MasterKey::from_bytes(rand::random()), previous),
    );
    assert_eq!(rotated.rotate_keys("test").await.expect("rotate"), 1);
    assert_eq!(
        rotated.rotate_keys("test").await.expect("rotate again"),
        0,
        "idempotent"
    );
    let (summary, secret) = rotated
        .open_credential(customer, "deepgram")
        .await
        .expect("open")
        .expect("present");
    assert_eq!(summary.key_version, 2);
    assert_eq!(secret.expose_secret(), "dg-secret-value-42");
    // The old keyring alone can no longer open it.
    assert!(tdb
        .platform
        .open_credential(customer, "deepgram")
        .await
        .is_err());
    tdb.close().await;
}
