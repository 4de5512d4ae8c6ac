//! The platform API, black-box over HTTP with real keys.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use switchboard::configuration::MasterKey;
use switchboard::crypto::api_key::KeyScope;
use switchboard::crypto::Keyring;
use switchboard::platform::Platform;

use crate::helpers::{spawn_app, TestApp, TestDb};

/// A platform API client bound to one server and key.
struct Api<'a> {
    app: &'a TestApp,
    key: String,
}

impl Api<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .app
            .client
            .request(method, format!("{}/platform/api{path}", self.app.address))
            .bearer_auth(&self.key);
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

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

/// The `error.message` of an error body.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn keys_gate_the_platform_api() {
    let app = spawn_app().await;
    let url = format!("{}/platform/api/tenants", app.address);
    let none = app.client.get(&url).send().await.expect("req");
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unauthorized");

    let unknown = Api {
        app: &app,
        key: "sbk_p_0000000000000000000000000000000000000000".into(),
    };
    let (status, _) = unknown.get("/tenants").await;
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
    let (status, _) = Api {
        app: &app,
        key: tenant_key,
    }
    .get("/tenants")
    .await;
    assert_eq!(status, 403, "a tenant key is not a platform key");
    let service_key = app
        .platform
        .create_api_key("test", KeyScope::Service, None, "svc")
        .await
        .expect("service key")
        .key;
    let (status, _) = Api {
        app: &app,
        key: service_key,
    }
    .get("/tenants")
    .await;
    assert_eq!(status, 403, "a service key is not a platform key");

    let key = app.platform_key().await;
    let (status, body) = Api { app: &app, key }.get("/tenants").await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(1));
    app.stop().await.expect("stop");
}

#[tokio::test]
async fn tenant_lifecycle_over_http() {
    let app = spawn_app().await;
    let api = Api {
        app: &app,
        key: app.platform_key().await,
    };

    let create = json!({
        "slug": "peterson", "name": "Peterson Insurance", "template": "insurance",
        "numbers": ["+1 (800) 555-1212"], "monthly_call_limit": 100
    });
    let (status, body) = api.post("/tenants", create.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["customer"]["slug"], "peterson");
    assert_eq!(body["numbers"][0]["e164"], "+18005551212");

    let (status, body) = api.post("/tenants", create).await;
    assert_eq!(status, 409, "{body}");
    let bad_slug = json!({"slug": "Bad Slug!", "name": "x", "template": "insurance"});
    let (status, body) = api.post("/tenants", bad_slug).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("slug"), "{body}");
    let bad_template = json!({"slug": "x1", "name": "x", "template": "bakery"});
    let (status, body) = api.post("/tenants", bad_template).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("template"), "{body}");
    let (status, _) = api.post("/tenants", json!({"slug": 5})).await;
    assert_eq!(status, 400, "malformed JSON body is a 400, not a 500");

    // A second tenant cannot take the first one's number.
    let harbor = json!({"slug": "harbor", "name": "Harbor", "template": "real_estate"});
    assert_eq!(api.post("/tenants", harbor).await.0, 201);
    let taken = json!({"number": "+18005551212"});
    let (status, body) = api.post("/tenants/harbor/numbers", taken.clone()).await;
    assert_eq!(status, 409, "{body}");
    let free = json!({"number": "+16195550123"});
    assert_eq!(api.post("/tenants/harbor/numbers", free).await.0, 201);
    let other = json!({"number": "+16195550124"});
    assert_eq!(api.post("/tenants/nobody/numbers", other).await.0, 404);

    // Suspend and resume.
    let (status, body) = api.post("/tenants/peterson/suspend", Value::Null).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("suspended")));
    let (status, body) = api.post("/tenants/peterson/resume", Value::Null).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));

    // Release a number, then it can move.
    assert_eq!(api.delete("/numbers/+18005551212").await.0, 204);
    assert_eq!(api.delete("/numbers/+18005551212").await.0, 404);
    assert_eq!(api.post("/tenants/harbor/numbers", taken).await.0, 201);

    // Users and keys.
    let admin = json!({"email": "Ops@Peterson.example", "name": "Ops", "role": "admin",
                       "tenant": "peterson", "password": "a long enough password"});
    let (status, body) = api.post("/users", admin).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["email"], "ops@peterson.example");
    assert!(body.get("password").is_none());
    let weak = json!({"email": "x@y.example", "name": "X", "role": "admin",
                      "tenant": "peterson", "password": "short"});
    assert_eq!(api.post("/users", weak).await.0, 400);
    let (status, body) = api
        .post("/apikeys", json!({"scope": "tenant", "tenant": "peterson"}))
        .await;
    assert_eq!(status, 201);
    assert!(body["key"].as_str().unwrap_or("").starts_with("sbk_t_"));

    // Credentials: stored sealed, shown only as a hint.
    let secret = "sk-live-abcdefghijklmnop1234";
    let openai = json!({"secret": secret, "settings": {"model": "gpt-4o-mini"}});
    let (status, body) = api
        .put("/tenants/peterson/credentials/openai", openai)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["secret_hint"], "…1234");
    let (status, body) = api.get("/tenants/peterson").await;
    assert_eq!(status, 200);
    let text = body.to_string();
    assert!(!text.contains(secret), "secret returned by the API: {text}");
    assert_eq!(body["credentials"][0]["provider"], "openai");
    let no_sid = json!({"secret": "0123456789abcdef"});
    let (status, _) = api
        .put("/tenants/peterson/credentials/twilio", no_sid)
        .await;
    assert_eq!(status, 400, "twilio needs an AccountSid");

    // Provider choices per role: validated, stored, shown, audited.
    let choice = json!({"llm": {"provider": "local", "temperature": 0.4}, "tts": {"provider": "elevenlabs"}});
    let (status, body) = api
        .put("/tenants/peterson/provider-settings", choice.clone())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider_settings"], choice);
    let (status, body) = api
        .put(
            "/tenants/peterson/provider-settings",
            json!({"llm": {"provider": "anthropic"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("llm.provider"), "{body}");
    let (_, body) = api.get("/tenants/peterson").await;
    assert_eq!(body["customer"]["provider_settings"], choice, "{body}");

    let (status, body) = api.get("/tenants").await;
    assert_eq!(status, 200);
    assert_eq!(body["tenants"].as_array().map(Vec::len), Some(2));
    let (status, body) = api.get("/templates").await;
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
