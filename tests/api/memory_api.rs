//! The memory API, black-box over HTTP with real keys, plus the caller card
//! and both memory clients. Two tenants share one caller number throughout:
//! nothing of one may ever show up in, or be changed through, the other.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use secrecy::SecretString;
use serde_json::{json, Value};
use switchboard::crypto::api_key::KeyScope;
use switchboard::db::{CustomerId, Db};
use switchboard::memory::service::{MemoryError, NewMemory, ProcessCall, TranscriptTurn};
use switchboard::memory::{
    load_card, HttpMemoryClient, InProcessMemoryClient, MemoryClient, MemoryService,
};
use switchboard::repo;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};

/// The caller both tenants know.
const CALLER: &str = "+15557654321";
/// The call sid both tenants recorded (sids are unique per tenant only).
const SHARED_SID: &str = "CAshared0001";
const EXACT_400: &str = "customer_id is required for multi-tenant security";

/// Two tenants with keys, both knowing [`CALLER`].
struct World {
    app: TestApp,
    a: CustomerId,
    b: CustomerId,
    key_a: String,
    key_b: String,
    service_key: String,
    platform_key: String,
    /// The follow-up memory seeded in each tenant.
    memory_a: Uuid,
    memory_b: Uuid,
}

async fn world() -> World {
    // No background job runner: the post-call jobs that process-call
    // enqueues would change the row counts these tests compare.
    let app = spawn_app_with(|s| s.run_jobs = false).await;
    let a = app
        .platform
        .create_tenant(
            "test",
            crate::helpers::tenant_input("alpha", "+18005550101"),
        )
        .await
        .expect("tenant a")
        .customer
        .customer_id;
    let b = app
        .platform
        .create_tenant(
            "test",
            crate::helpers::tenant_input("bravo", "+18005550202"),
        )
        .await
        .expect("tenant b")
        .customer
        .customer_id;
    let key = |scope, tenant: Option<&'static str>| {
        let platform = app.platform.clone();
        async move {
            platform
                .create_api_key("test", scope, tenant, "memory-test")
                .await
                .expect("key")
                .key
        }
    };
    let key_a = key(KeyScope::Tenant, Some("alpha")).await;
    let key_b = key(KeyScope::Tenant, Some("bravo")).await;
    let service_key = key(KeyScope::Service, None).await;
    let platform_key = key(KeyScope::Platform, None).await;
    let memory_a = seed(app.platform.db(), a, "ALPHA").await;
    let memory_b = seed(app.platform.db(), b, "BRAVO").await;
    World {
        app,
        a,
        b,
        key_a,
        key_b,
        service_key,
        platform_key,
        memory_a,
        memory_b,
    }
}

/// Writes a full memory of [`CALLER`] for one tenant, every value tagged
/// with `marker`, through the tenant's own transaction. Returns the id of
/// the seeded follow-up.
async fn seed(db: &Db, customer: CustomerId, marker: &str) -> Uuid {
    let mut tx = db.tenant(customer).await.expect("tx");
    let now = chrono::Utc::now();
    repo::callers::upsert(
        &mut tx,
        CALLER,
        Some(&format!("Jane {marker}")),
        &json!({
            "name": format!("Jane {marker}"),
            "city": format!("{marker}-city"),
            "since": 2020,
            "policies": format!("{marker}-POLICY 2 Auto + 1 Home"),
        }),
    )
    .await
    .expect("profile");
    repo::callers::record_call(&mut tx, CALLER, now)
        .await
        .expect("record call");
    let call = repo::calls::create(
        &mut tx,
        &repo::calls::NewCall {
            call_sid: SHARED_SID,
            user_id: Some(CALLER),
            to_number: "+18005550000",
            direction: "inbound",
            status: "completed",
            started_at: now,
        },
    )
    .await
    .expect("call");
    for (seq, speaker) in [(0, "caller"), (1, "agent")] {
        repo::turns::append(
            &mut tx,
            call.call_id,
            &repo::turns::Turn {
                seq,
                speaker: speaker.into(),
                text: format!("{marker} turn {seq}"),
                interrupted: false,
                start_ms: None,
                end_ms: None,
                timings: json!({}),
            },
        )
        .await
        .expect("turn");
    }
    let id = tx.customer_id();
    sqlx::query(
        "INSERT INTO call_summaries (customer_id, call_id, user_id, summary, topics, action_items)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(call.call_id)
    .bind(CALLER)
    .bind(format!(
        "{marker}-SUMMARY: asked to add her son to the auto policy."
    ))
    .bind(vec!["auto".to_string(), marker.to_lowercase()])
    .bind(json!([format!("{marker}-ACTION send the forms")]))
    .execute(tx.conn())
    .await
    .expect("summary");
    let old_fact = Uuid::new_v4();
    let new_fact = Uuid::new_v4();
    for (fact_id, key, value, superseded) in [
        (old_fact, "household", format!("{marker}-OLD single"), true),
        (
            new_fact,
            "household",
            format!("{marker}-HOUSEHOLD married, one son"),
            false,
        ),
        (
            Uuid::new_v4(),
            "vehicle",
            format!("{marker}-VEHICLE 2019 Civic"),
            false,
        ),
    ] {
        sqlx::query(
            "INSERT INTO caller_facts (customer_id, fact_id, user_id, key, value, source_call_id,
                                       superseded_at, superseded_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(fact_id)
        .bind(CALLER)
        .bind(key)
        .bind(json!(value))
        .bind(call.call_id)
        .bind(superseded.then_some(now))
        .bind(superseded.then_some(new_fact))
        .execute(tx.conn())
        .await
        .expect("fact");
    }
    let follow_up = repo::memory::insert_memory(
        &mut tx,
        CALLER,
        "follow_up",
        &format!("{marker}-FOLLOWUP check the son was added"),
        &json!({}),
    )
    .await
    .expect("memory");
    sqlx::query(
        "INSERT INTO call_personality (customer_id, call_id, user_id, formality, verbosity,
                                       sentiment, patience, decisiveness, style_notes)
         VALUES ($1, $2, $3, 0.7, 0.3, 0.4, 0.8, 0.6, $4)",
    )
    .bind(id)
    .bind(call.call_id)
    .bind(CALLER)
    .bind(format!("{marker}-STYLE brief and friendly"))
    .execute(tx.conn())
    .await
    .expect("call personality");
    sqlx::query(
        "INSERT INTO caller_personality (customer_id, user_id, samples, avg_formality,
             avg_verbosity, avg_sentiment, avg_patience, avg_decisiveness)
         VALUES ($1, $2, 1, 0.7, 0.3, 0.4, 0.8, 0.6)",
    )
    .bind(id)
    .bind(CALLER)
    .execute(tx.conn())
    .await
    .expect("caller personality");
    sqlx::query(
        "INSERT INTO sms_messages (customer_id, sms_id, direction, user_id, from_number, to_number,
                                   body, status, call_id)
         VALUES ($1, $2, 'outbound', $3, '+18005550000', $3, $4, 'delivered', $5)",
    )
    .bind(id)
    .bind(Uuid::new_v4())
    .bind(CALLER)
    .bind(format!("{marker}-SMS your forms"))
    .bind(call.call_id)
    .execute(tx.conn())
    .await
    .expect("sms");
    sqlx::query(
        "INSERT INTO sms_consent (customer_id, user_id, status, source) VALUES ($1, $2, 'opted_in', 'call')",
    )
    .bind(id)
    .bind(CALLER)
    .execute(tx.conn())
    .await
    .expect("consent");
    switchboard::jobs::recovery::enqueue_post_call(&mut tx, SHARED_SID)
        .await
        .expect("job");
    tx.commit().await.expect("commit");
    follow_up.memory_id
}

/// Rows per table for one tenant (the tenant's own transaction).
async fn counts(db: &Db, customer: CustomerId) -> BTreeMap<&'static str, i64> {
    let mut tx = db.tenant(customer).await.expect("tx");
    let mut out = BTreeMap::new();
    for table in [
        "caller_profiles",
        "caller_facts",
        "caller_memories",
        "call_summaries",
        "call_personality",
        "caller_personality",
        "calls",
        "call_turns",
        "sms_messages",
        "sms_consent",
        "jobs",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(tx.conn())
            .await
            .expect("count");
        out.insert(table, n);
    }
    out
}

/// One request: status, JSON body and raw text.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

/// Every memory endpoint, parameterised by the tenant it names (if any).
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    StoreLegacy,
    StoreV1,
    ListMemories,
    DeleteMemory,
    Enriched,
    ProcessCall,
    Summaries,
    Profile,
    Personality,
    Erase,
}

const ENDPOINTS: [Endpoint; 10] = [
    Endpoint::StoreLegacy,
    Endpoint::StoreV1,
    Endpoint::ListMemories,
    Endpoint::DeleteMemory,
    Endpoint::Enriched,
    Endpoint::ProcessCall,
    Endpoint::Summaries,
    Endpoint::Profile,
    Endpoint::Personality,
    Endpoint::Erase,
];

impl Endpoint {
    /// Method, path and body naming `customer` (nothing when `None`).
    /// `probe` tags whatever the request writes; `memory` is the id a
    /// delete names.
    fn request(
        self,
        customer: Option<CustomerId>,
        probe: &str,
        memory: Uuid,
    ) -> (Method, String, Option<Value>) {
        let query = customer
            .map(|c| format!("?customer_id={c}"))
            .unwrap_or_default();
        let with_customer = |mut body: Value| {
            if let Some(c) = customer {
                body["customer_id"] = json!(c);
            }
            Some(body)
        };
        match self {
            Endpoint::StoreLegacy | Endpoint::StoreV1 => (
                Method::POST,
                if matches!(self, Endpoint::StoreLegacy) {
                    "/memory/store".to_string()
                } else {
                    "/v1/memories".to_string()
                },
                with_customer(json!({ "user_id": CALLER, "content": probe })),
            ),
            Endpoint::ListMemories => (
                Method::GET,
                format!("/v1/memories/user/{CALLER}{query}"),
                None,
            ),
            Endpoint::DeleteMemory => (
                Method::DELETE,
                format!("/v1/memories/{memory}{query}"),
                None,
            ),
            Endpoint::Enriched => (
                Method::POST,
                "/v2/context/enriched".to_string(),
                with_customer(json!({ "user_id": CALLER, "reveal_sensitive": true })),
            ),
            Endpoint::ProcessCall => (
                Method::POST,
                "/v2/process-call".to_string(),
                with_customer(json!({
                    "call_sid": probe,
                    "user_id": CALLER,
                    "transcript": [
                        { "speaker": "caller", "text": probe },
                        { "speaker": "agent", "text": "Noted." }
                    ]
                })),
            ),
            Endpoint::Summaries => (Method::GET, format!("/v2/summaries/{CALLER}{query}"), None),
            Endpoint::Profile => (Method::GET, format!("/v2/profile/{CALLER}{query}"), None),
            Endpoint::Personality => (
                Method::GET,
                format!("/v2/personality/{CALLER}{query}"),
                None,
            ),
            Endpoint::Erase => (Method::DELETE, format!("/v2/callers/{CALLER}{query}"), None),
        }
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Endpoint::StoreLegacy
                | Endpoint::StoreV1
                | Endpoint::DeleteMemory
                | Endpoint::ProcessCall
                | Endpoint::Erase
        )
    }
}

#[tokio::test]
async fn missing_customer_id_gives_the_exact_400_on_every_route() {
    let w = world().await;
    for key in [&w.service_key, &w.key_a] {
        for endpoint in ENDPOINTS {
            let (method, path, body) = endpoint.request(None, "probe", w.memory_a);
            let (status, value, text) = send(&w.app, method, &path, Some(key), body).await;
            assert_eq!(status, 400, "{endpoint:?}: {text}");
            assert_eq!(
                value,
                json!({ "success": false, "error": EXACT_400 }),
                "{endpoint:?}: {text}"
            );
        }
    }
    // An empty customer_id counts as missing, in the query or the body.
    let (status, value, _) = send(
        &w.app,
        Method::GET,
        &format!("/v2/profile/{CALLER}?customer_id="),
        Some(&w.service_key),
        None,
    )
    .await;
    assert_eq!((status, value["error"].as_str()), (400, Some(EXACT_400)));
    let (status, value, _) = send(
        &w.app,
        Method::POST,
        "/v2/context/enriched",
        Some(&w.service_key),
        Some(json!({ "customer_id": "", "user_id": CALLER })),
    )
    .await;
    assert_eq!((status, value["error"].as_str()), (400, Some(EXACT_400)));
    w.app.stop().await.expect("stop");
}

#[tokio::test]
async fn keys_are_checked_first_then_tenant_then_request() {
    let w = world().await;
    let unknown = CustomerId::new();
    let before = (
        counts(w.app.platform.db(), w.a).await,
        counts(w.app.platform.db(), w.b).await,
    );
    for endpoint in ENDPOINTS {
        for customer in [None, Some(w.a)] {
            // No key, a malformed key, a well-formed unknown key: 401, even
            // without a customer_id.
            let forged = format!("sbk_s_{}", "A".repeat(40));
            for key in [None, Some("nonsense"), Some(forged.as_str())] {
                let (method, path, body) = endpoint.request(customer, "probe", w.memory_a);
                let (status, value, text) = send(&w.app, method, &path, key, body).await;
                assert_eq!(status, 401, "{endpoint:?} {key:?}: {text}");
                assert_eq!(value["success"], json!(false));
            }
        }
        // A platform key is not a memory key.
        let (method, path, body) = endpoint.request(Some(w.a), "probe", w.memory_a);
        let (status, _, text) = send(&w.app, method, &path, Some(&w.platform_key), body).await;
        assert_eq!(status, 403, "{endpoint:?} platform key: {text}");
        // A tenant key naming another customer, existing or not.
        for other in [w.b, unknown] {
            let (method, path, body) = endpoint.request(Some(other), "probe", w.memory_b);
            let (status, value, text) = send(&w.app, method, &path, Some(&w.key_a), body).await;
            assert_eq!(status, 403, "{endpoint:?} tenant key for another: {text}");
            assert_eq!(value["success"], json!(false));
        }
        // A service key naming an unknown customer, or not a customer id.
        let (method, path, body) = endpoint.request(Some(unknown), "probe", w.memory_a);
        let (status, value, text) = send(&w.app, method, &path, Some(&w.service_key), body).await;
        assert_eq!(status, 404, "{endpoint:?} unknown customer: {text}");
        assert_eq!(
            value,
            json!({ "success": false, "error": "unknown customer" })
        );
        let (method, path, _) = endpoint.request(None, "probe", w.memory_a);
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, text) = send(
            &w.app,
            method,
            &format!("{path}{sep}customer_id=not-a-uuid"),
            Some(&w.service_key),
            Some(json!({ "user_id": CALLER, "content": "x" })),
        )
        .await;
        assert_eq!(status, 404, "{endpoint:?} bad customer id: {text}");
    }
    // Only then the request itself: a caller id that is not E.164.
    for path in [
        "/v1/memories/user/5551234",
        "/v2/summaries/5551234",
        "/v2/profile/+0551234567",
        "/v2/personality/abc",
    ] {
        let (status, value, text) = send(
            &w.app,
            Method::GET,
            &format!("{path}?customer_id={}", w.a),
            Some(&w.key_a),
            None,
        )
        .await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            value["error"].as_str().unwrap_or("").contains("E.164"),
            "{text}"
        );
    }
    let (status, _, text) = send(
        &w.app,
        Method::DELETE,
        &format!("/v2/callers/5551234?customer_id={}", w.a),
        Some(&w.key_a),
        None,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    // Nothing was written or removed by any refused request.
    let after = (
        counts(w.app.platform.db(), w.a).await,
        counts(w.app.platform.db(), w.b).await,
    );
    assert_eq!(before, after);
    w.app.stop().await.expect("stop");
}

#[tokio::test]
async fn every_endpoint_honours_its_contract() {
    let w = world().await;
    let (a, key) = (w.a, w.key_a.as_str());
    let thread = format!("customer_{a}_user_15557654321");

    // Store, both paths; list; delete.
    let mut stored = Vec::new();
    for path in ["/memory/store", "/v1/memories"] {
        let (status, value, text) = send(
            &w.app,
            Method::POST,
            path,
            Some(key),
            Some(json!({ "customer_id": a, "user_id": CALLER, "content": format!("prefers email ({path})"),
                         "kind": "preference", "metadata": {"source": "crm"} })),
        )
        .await;
        assert_eq!(status, 201, "{text}");
        assert_eq!(value["success"], json!(true));
        assert_eq!(value["thread_id"], json!(thread));
        assert_eq!(value["memory"]["kind"], json!("preference"));
        assert_eq!(value["memory"]["metadata"]["source"], json!("crm"));
        stored.push(
            value["memory"]["memory_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    let (status, value, _) = send(
        &w.app,
        Method::POST,
        "/v1/memories",
        Some(key),
        Some(json!({ "customer_id": a, "user_id": CALLER, "content": "x", "kind": "secret" })),
    )
    .await;
    assert_eq!((status, value["success"].clone()), (400, json!(false)));
    let (status, value, text) = send(
        &w.app,
        Method::GET,
        &format!("/v1/memories/user/{CALLER}?customer_id={a}&limit=10"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["thread_id"], json!(thread));
    let listed = value["memories"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 3, "{text}");
    let (status, value, text) = send(
        &w.app,
        Method::DELETE,
        &format!("/v1/memories/{}?customer_id={a}", stored[0]),
        Some(key),
        None,
    )
    .await;
    assert_eq!(
        (status, value["deleted"].clone()),
        (200, json!(true)),
        "{text}"
    );
    let (status, value, _) = send(
        &w.app,
        Method::DELETE,
        &format!("/v1/memories/{}?customer_id={a}", stored[0]),
        Some(key),
        None,
    )
    .await;
    assert_eq!(
        (status, value),
        (
            404,
            json!({ "success": false, "error": "memory not found" })
        )
    );
    let (status, _, _) = send(
        &w.app,
        Method::DELETE,
        &format!("/v1/memories/not-a-uuid?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Enriched context: redacted by default, full when verified.
    let (status, value, text) = send(
        &w.app,
        Method::POST,
        &format!("/v2/context/enriched?customer_id={a}"),
        Some(key),
        Some(json!({ "user_id": CALLER })),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["known"], json!(true));
    assert_eq!(value["thread_id"], json!(thread));
    assert_eq!(value["greeting_name"], json!("Jane ALPHA"));
    let context = value["context"].as_str().unwrap_or_default();
    assert!(context.contains("ALPHA-SUMMARY"), "{context}");
    assert!(context.contains("ALPHA-FOLLOWUP"), "{context}");
    assert!(context.contains("ALPHA-VEHICLE"), "{context}");
    assert!(
        context.contains("verify the caller's identity"),
        "{context}"
    );
    assert!(
        !text.contains("ALPHA-POLICY"),
        "sensitive field leaked: {text}"
    );
    assert!(
        !text.contains("ALPHA-HOUSEHOLD"),
        "sensitive fact leaked: {text}"
    );
    assert!(!text.contains("ALPHA-OLD"), "superseded fact shown: {text}");
    assert_eq!(value["card"]["call_count"], json!(1));
    assert_eq!(value["card"]["personality"]["samples"], json!(1));
    let (_, value, text) = send(
        &w.app,
        Method::POST,
        "/v2/context/enriched",
        Some(key),
        Some(json!({ "customer_id": a, "user_id": CALLER, "reveal_sensitive": true, "recent_calls": 1 })),
    )
    .await;
    assert!(
        text.contains("ALPHA-POLICY") && text.contains("ALPHA-HOUSEHOLD"),
        "{text}"
    );
    assert_eq!(
        value["card"]["recent_calls"].as_array().map(Vec::len),
        Some(1)
    );
    let (status, value, _) = send(
        &w.app,
        Method::POST,
        "/v2/context/enriched",
        Some(key),
        Some(json!({ "customer_id": a, "user_id": "+15550000000" })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(value["known"], json!(false));
    assert_eq!(value["card"], Value::Null);

    // Process-call: 202, a call, its turns, one job; idempotent.
    let call = json!({
        "customer_id": a, "call_sid": "CAapi0001", "user_id": CALLER, "to_number": "+18005550101",
        "transcript": [
            { "speaker": "user", "text": "Hi, did my son get added?" },
            { "speaker": "assistant", "text": "Let me check." }
        ]
    });
    let (status, first, text) = send(
        &w.app,
        Method::POST,
        "/v2/process-call",
        Some(key),
        Some(call.clone()),
    )
    .await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(first["created"], json!(true));
    assert_eq!(first["job_created"], json!(true));
    assert_eq!(first["thread_id"], json!(thread));
    let (status, second, _) = send(
        &w.app,
        Method::POST,
        "/v2/process-call",
        Some(key),
        Some(call),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(second["created"], json!(false));
    assert_eq!(second["job_created"], json!(false));
    assert_eq!(second["job_id"], first["job_id"]);
    assert_eq!(second["call_id"], first["call_id"]);
    {
        let mut tx = w.app.platform.db().tenant(a).await.expect("tx");
        let stored = repo::calls::get_by_sid(&mut tx, "CAapi0001")
            .await
            .expect("call")
            .expect("call row");
        assert_eq!(
            (stored.direction.as_str(), stored.status.as_str()),
            ("api", "completed")
        );
        assert!(stored.ended_at.is_some());
        let turns = repo::turns::list(&mut tx, stored.call_id)
            .await
            .expect("turns");
        let speakers: Vec<&str> = turns.iter().map(|t| t.speaker.as_str()).collect();
        assert_eq!(speakers, ["caller", "agent"]);
        let job = repo::jobs::find(&mut tx, "post_call", "CAapi0001")
            .await
            .expect("job")
            .expect("job row");
        assert_eq!(json!(job.job_id), first["job_id"]);
        let profile = repo::callers::get(&mut tx, CALLER)
            .await
            .expect("profile")
            .expect("row");
        assert_eq!(profile.call_count, 2, "a new call counts once");
    }
    // The same sid for another caller is a conflict; a bad speaker is invalid.
    let (status, _, _) = send(
        &w.app,
        Method::POST,
        "/v2/process-call",
        Some(key),
        Some(json!({ "customer_id": a, "call_sid": "CAapi0001", "user_id": "+15550001111", "transcript": [] })),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _, _) = send(
        &w.app,
        Method::POST,
        "/v2/process-call",
        Some(key),
        Some(
            json!({ "customer_id": a, "call_sid": "CAapi0002", "user_id": CALLER,
                     "transcript": [{ "speaker": "narrator", "text": "…" }] }),
        ),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = send(
        &w.app,
        Method::POST,
        "/v2/process-call",
        Some(key),
        Some(json!({ "customer_id": a, "call_sid": "CAapi0003" })),
    )
    .await;
    assert_eq!(status, 400);

    // Summaries, profile, personality.
    let (status, value, text) = send(
        &w.app,
        Method::GET,
        &format!("/v2/summaries/{CALLER}?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["summaries"].as_array().map(Vec::len), Some(1));
    assert!(value["summaries"][0]["summary"]
        .as_str()
        .unwrap_or("")
        .starts_with("ALPHA-SUMMARY"));
    let (status, value, text) = send(
        &w.app,
        Method::GET,
        &format!("/v2/profile/{CALLER}?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["thread_id"], json!(thread));
    assert_eq!(value["profile"]["display_name"], json!("Jane ALPHA"));
    let keys: Vec<&str> = value["facts"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["household", "vehicle"], "current facts only");
    let (status, value, _) = send(
        &w.app,
        Method::GET,
        &format!("/v2/profile/+15550009999?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(
        (status, value),
        (
            404,
            json!({ "success": false, "error": "caller not found" })
        )
    );
    let (status, value, text) = send(
        &w.app,
        Method::GET,
        &format!("/v2/personality/{CALLER}?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["averages"]["samples"], json!(1));
    assert_eq!(value["calls"].as_array().map(Vec::len), Some(1));
    let (status, _, _) = send(
        &w.app,
        Method::GET,
        &format!("/v2/personality/+15550009999?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Erasure.
    let (status, value, text) = send(
        &w.app,
        Method::DELETE,
        &format!("/v2/callers/{CALLER}?customer_id={a}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(value["thread_id"], json!(thread));
    assert_eq!(value["erased"]["profiles"], json!(1));
    assert_eq!(value["erased"]["calls"], json!(2));
    assert_eq!(value["erased"]["turns"], json!(4));

    // The OpenAPI document lists every route (no key needed).
    let (status, doc, _) = send(&w.app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3."));
    for (path, method) in [
        ("/memory/store", "post"),
        ("/v1/memories", "post"),
        ("/v1/memories/user/{user_id}", "get"),
        ("/v1/memories/{memory_id}", "delete"),
        ("/v2/context/enriched", "post"),
        ("/v2/process-call", "post"),
        ("/v2/summaries/{user_id}", "get"),
        ("/v2/profile/{user_id}", "get"),
        ("/v2/personality/{user_id}", "get"),
        ("/v2/callers/{user_id}", "delete"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} undocumented"
        );
        for code in ["400", "401", "403", "404"] {
            assert!(
                doc["paths"][path][method]["responses"][code].is_object(),
                "{path} {code}"
            );
        }
    }
    w.app.stop().await.expect("stop");
}

/// For every endpoint and every (key, named tenant) pair: allowed pairs see
/// and change only the named tenant; refused pairs see and change nothing.
#[tokio::test]
async fn property_no_cross_tenant_read_or_write_and_fail_closed() {
    let w = world().await;
    let db = w.app.platform.db().clone();
    let marker = |c: CustomerId| if c == w.a { "ALPHA" } else { "BRAVO" };
    let own_memory = |c: CustomerId| if c == w.a { w.memory_a } else { w.memory_b };
    let other = |c: CustomerId| if c == w.a { w.b } else { w.a };
    // (label, key, named tenant, allowed)
    let principals: Vec<(&str, &str, Option<CustomerId>, bool)> = vec![
        ("tenant A → A", w.key_a.as_str(), Some(w.a), true),
        ("tenant A → B", w.key_a.as_str(), Some(w.b), false),
        ("tenant B → B", w.key_b.as_str(), Some(w.b), true),
        ("tenant B → A", w.key_b.as_str(), Some(w.a), false),
        ("service → A", w.service_key.as_str(), Some(w.a), true),
        ("service → B", w.service_key.as_str(), Some(w.b), true),
        ("tenant A → none", w.key_a.as_str(), None, false),
        ("service → none", w.service_key.as_str(), None, false),
    ];
    let mut probe_n = 0;
    for endpoint in ENDPOINTS {
        for (label, key, named, allowed) in &principals {
            // Erasing for real is the erasure test's job; here only refusals.
            if matches!(endpoint, Endpoint::Erase) && *allowed {
                continue;
            }
            probe_n += 1;
            let probe = format!("PROBE{probe_n}");
            // A delete names the other tenant's memory: never deletable.
            let memory = named.map(|c| own_memory(other(c))).unwrap_or(w.memory_a);
            let before = (counts(&db, w.a).await, counts(&db, w.b).await);
            let (method, path, body) = endpoint.request(*named, &probe, memory);
            let (status, value, text) = send(&w.app, method, &path, Some(key), body).await;
            let after = (counts(&db, w.a).await, counts(&db, w.b).await);
            let ctx = format!("{endpoint:?} as {label}: {status} {text}");
            match (named, allowed) {
                (None, _) => {
                    assert_eq!(status, 400, "{ctx}");
                    assert_eq!(
                        value,
                        json!({ "success": false, "error": EXACT_400 }),
                        "{ctx}"
                    );
                    assert_eq!(before, after, "{ctx}");
                }
                (Some(_), false) => {
                    assert_eq!(status, 403, "{ctx}");
                    assert_eq!(before, after, "{ctx}");
                }
                (Some(c), true) => {
                    let foreign = marker(other(*c));
                    assert!(!text.contains(foreign), "{ctx}");
                    let (mine, theirs) = if *c == w.a {
                        ((&before.0, &after.0), (&before.1, &after.1))
                    } else {
                        ((&before.1, &after.1), (&before.0, &after.0))
                    };
                    assert_eq!(theirs.0, theirs.1, "the other tenant changed: {ctx}");
                    match endpoint {
                        Endpoint::DeleteMemory => {
                            assert_eq!(status, 404, "{ctx}");
                            assert_eq!(mine.0, mine.1, "{ctx}");
                        }
                        Endpoint::StoreLegacy | Endpoint::StoreV1 => {
                            assert_eq!(status, 201, "{ctx}");
                            assert_eq!(mine.1["caller_memories"], mine.0["caller_memories"] + 1);
                        }
                        Endpoint::ProcessCall => {
                            assert_eq!(status, 202, "{ctx}");
                            assert_eq!(mine.1["calls"], mine.0["calls"] + 1);
                            assert_eq!(mine.1["jobs"], mine.0["jobs"] + 1);
                        }
                        _ => {
                            assert!(!endpoint.is_write());
                            assert_eq!(status, 200, "{ctx}");
                            assert_eq!(before, after, "a read wrote: {ctx}");
                            if !matches!(endpoint, Endpoint::ListMemories) {
                                assert!(text.contains(marker(*c)), "own data missing: {ctx}");
                            }
                        }
                    }
                }
            }
        }
    }
    // Each tenant's memories hold exactly the probes written naming it.
    for customer in [w.a, w.b] {
        let mut tx = db.tenant(customer).await.expect("tx");
        let memories = repo::memory::list_memories(&mut tx, CALLER, 500)
            .await
            .expect("memories");
        let probes = memories
            .iter()
            .filter(|m| m.content.starts_with("PROBE"))
            .count();
        // Two store endpoints × three principals allowed per tenant (its own
        // key, the service key): 2 × 2.
        assert_eq!(probes, 4, "{customer}");
        assert!(memories.iter().any(|m| m.memory_id == own_memory(customer)));
    }
    w.app.stop().await.expect("stop");
}

#[tokio::test]
async fn erasure_removes_every_trace_for_one_tenant_only_and_is_audited() {
    let w = world().await;
    let db = w.app.platform.db().clone();
    let b_before = counts(&db, w.b).await;
    let a_before = counts(&db, w.a).await;
    assert!(
        a_before.values().all(|n| *n > 0),
        "seed covers every table: {a_before:?}"
    );
    let (status, value, text) = send(
        &w.app,
        Method::DELETE,
        &format!("/v2/callers/{CALLER}?customer_id={}", w.a),
        Some(&w.service_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let a_after = counts(&db, w.a).await;
    assert!(
        a_after.values().all(|n| *n == 0),
        "left behind: {a_after:?}"
    );
    assert_eq!(counts(&db, w.b).await, b_before, "the other tenant changed");
    let erased = &value["erased"];
    for (table, field) in [
        ("caller_profiles", "profiles"),
        ("caller_facts", "facts"),
        ("caller_memories", "memories"),
        ("call_summaries", "summaries"),
        ("call_personality", "call_personality"),
        ("caller_personality", "caller_personality"),
        ("calls", "calls"),
        ("call_turns", "turns"),
        ("sms_messages", "sms_messages"),
        ("sms_consent", "sms_consent"),
        ("jobs", "jobs"),
    ] {
        assert_eq!(erased[field], json!(a_before[table]), "{field}: {text}");
    }
    // Audited in the tenant's log, the number masked.
    let mut tx = db.tenant(w.a).await.expect("tx");
    let audit = repo::audit::list(&mut tx, 10).await.expect("audit");
    let entry = audit
        .iter()
        .find(|e| e.action == "caller.erased")
        .expect("audit row");
    assert!(
        entry.actor.starts_with("service-key:sbk_s_"),
        "{}",
        entry.actor
    );
    let target = entry.target.clone().unwrap_or_default();
    assert!(
        !target.contains("7654321") && !target.is_empty(),
        "{target}"
    );
    assert_eq!(entry.details["counts"]["calls"], json!(1));
    drop(tx);
    // The other tenant still knows the caller, fully.
    let (status, value, _) = send(
        &w.app,
        Method::POST,
        "/v2/context/enriched",
        Some(&w.key_b),
        Some(json!({ "customer_id": w.b, "user_id": CALLER })),
    )
    .await;
    assert_eq!((status, value["known"].clone()), (200, json!(true)));
    // And erasing again is harmless.
    let (status, value, _) = send(
        &w.app,
        Method::DELETE,
        &format!("/v2/callers/{CALLER}?customer_id={}", w.a),
        Some(&w.key_a),
        None,
    )
    .await;
    assert_eq!(
        (status, value["erased"]["profiles"].clone()),
        (200, json!(0))
    );
    w.app.stop().await.expect("stop");
}

#[tokio::test]
async fn http_and_in_process_clients_behave_alike() {
    let w = world().await;
    let in_process: Box<dyn MemoryClient> = Box::new(InProcessMemoryClient::new(
        MemoryService::new(w.app.platform.db().clone()),
        "service:test",
    ));
    let base = url::Url::parse(&w.app.address).expect("url");
    let over_http: Box<dyn MemoryClient> = Box::new(
        HttpMemoryClient::new(
            base.clone(),
            SecretString::from(w.service_key.clone()),
            Duration::from_secs(10),
        )
        .expect("client"),
    );
    for (n, client) in [in_process, over_http].iter().enumerate() {
        let who = format!("client {n}");
        let stored = client
            .store(
                w.a,
                &NewMemory {
                    user_id: CALLER.into(),
                    content: format!("note from {who}"),
                    kind: Some("follow_up".into()),
                    metadata: None,
                },
            )
            .await
            .expect("store");
        assert_eq!(stored.kind, "follow_up");
        let listed = client.list_memories(w.a, CALLER, 50).await.expect("list");
        assert!(
            listed.iter().any(|m| m.memory_id == stored.memory_id),
            "{who}"
        );
        assert!(listed.iter().all(|m| !m.content.contains("BRAVO")), "{who}");

        let context = client
            .enriched_context(w.a, CALLER, false, 3)
            .await
            .expect("context");
        assert!(context.known);
        assert_eq!(context.greeting_name.as_deref(), Some("Jane ALPHA"));
        assert!(
            context.context.contains(&format!("note from {who}")),
            "{who}"
        );
        let card = context.card.expect("card");
        assert!(
            !card.prompt_context(true).contains("ALPHA-POLICY"),
            "{who}: redacted card"
        );
        let full = client
            .enriched_context(w.a, CALLER, true, 3)
            .await
            .expect("context");
        assert!(full.context.contains("ALPHA-POLICY"), "{who}");

        let processed = client
            .process_call(
                w.a,
                &ProcessCall {
                    call_sid: format!("CAclient{n}"),
                    user_id: CALLER.into(),
                    to_number: None,
                    transcript: vec![TranscriptTurn {
                        speaker: "caller".into(),
                        text: "hello".into(),
                    }],
                    started_at: None,
                    ended_at: None,
                },
            )
            .await
            .expect("process");
        assert!(processed.created && processed.job_created, "{who}");

        let summaries = client.summaries(w.b, CALLER, 10).await.expect("summaries");
        assert_eq!(summaries.len(), 1);
        assert!(summaries[0].summary.starts_with("BRAVO"), "{who}");
        let profile = client
            .profile(w.a, CALLER)
            .await
            .expect("profile")
            .expect("known");
        assert_eq!(profile.profile.display_name.as_deref(), Some("Jane ALPHA"));
        assert!(client
            .profile(w.a, "+15550009999")
            .await
            .expect("profile")
            .is_none());
        let personality = client
            .personality(w.a, CALLER)
            .await
            .expect("personality")
            .expect("analysed");
        assert_eq!(personality.averages.samples, 1);

        client
            .delete_memory(w.a, stored.memory_id)
            .await
            .expect("delete");
        assert!(matches!(
            client.delete_memory(w.a, stored.memory_id).await,
            Err(MemoryError::NotFound(_))
        ));
        assert!(matches!(
            client.list_memories(CustomerId::new(), CALLER, 5).await,
            Err(MemoryError::UnknownCustomer)
        ));
        assert!(matches!(
            client.summaries(w.a, "5551234", 5).await,
            Err(MemoryError::Invalid(_))
        ));
    }
    // Erase through HTTP, then check through the in-process client.
    let over_http = HttpMemoryClient::new(
        base.clone(),
        SecretString::from(w.service_key.clone()),
        Duration::from_secs(10),
    )
    .expect("client");
    let report = over_http.erase_caller(w.b, CALLER).await.expect("erase");
    assert_eq!(report.erased.profiles, 1);
    let local = InProcessMemoryClient::new(MemoryService::new(w.app.platform.db().clone()), "t");
    assert!(local.profile(w.b, CALLER).await.expect("profile").is_none());
    assert!(local.profile(w.a, CALLER).await.expect("profile").is_some());
    // Key errors come back typed.
    let bad = HttpMemoryClient::new(
        base.clone(),
        SecretString::from(format!("sbk_s_{}", "B".repeat(40))),
        Duration::from_secs(10),
    )
    .expect("client");
    assert!(matches!(
        bad.summaries(w.a, CALLER, 5).await,
        Err(MemoryError::Unauthorized)
    ));
    let tenant_a = HttpMemoryClient::new(
        base,
        SecretString::from(w.key_a.clone()),
        Duration::from_secs(10),
    )
    .expect("client");
    assert!(matches!(
        tenant_a.summaries(w.b, CALLER, 5).await,
        Err(MemoryError::Forbidden(_))
    ));
    assert!(tenant_a.summaries(w.a, CALLER, 5).await.is_ok());
    w.app.stop().await.expect("stop");
}

#[tokio::test]
async fn the_card_is_one_tenants_and_hides_sensitive_fields_until_verified() {
    let w = world().await;
    let db = w.app.platform.db();
    let mut tx = db.tenant(w.a).await.expect("tx");
    let card = load_card(&mut tx, CALLER, 5)
        .await
        .expect("card")
        .expect("known");
    assert!(load_card(&mut tx, "+15550009999", 5)
        .await
        .expect("card")
        .is_none());
    drop(tx);
    assert_eq!(card.greeting_name(), Some("Jane ALPHA"));
    assert_eq!(card.call_count, 1);
    assert_eq!(card.recent_calls.len(), 1);
    assert_eq!(card.follow_ups.len(), 1);
    assert_eq!(card.template.slug, "insurance");
    let fact_keys: Vec<&str> = card.facts.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(fact_keys, ["household", "vehicle"]);
    let json = serde_json::to_string(&card).expect("json");
    assert!(!json.contains("BRAVO"), "{json}");

    let hidden = card.prompt_context(false);
    assert!(hidden.contains("Name: Jane ALPHA"), "{hidden}");
    assert!(
        hidden.contains("Quick bio: Jane ALPHA | ALPHA-city | Client since 2020\n"),
        "{hidden}"
    );
    assert!(hidden.contains("ALPHA-VEHICLE"), "{hidden}");
    assert!(hidden.contains("ALPHA-FOLLOWUP"), "{hidden}");
    assert!(hidden.contains("ALPHA-SUMMARY"), "{hidden}");
    assert!(!hidden.contains("ALPHA-POLICY"), "{hidden}");
    assert!(!hidden.contains("ALPHA-HOUSEHOLD"), "{hidden}");
    assert!(hidden.contains("verify the caller's identity before discussing policies, household"));
    let shown = card.prompt_context(true);
    assert!(
        shown.contains("ALPHA-POLICY") && shown.contains("ALPHA-HOUSEHOLD"),
        "{shown}"
    );

    // Tenant B's card of the same number is B's alone.
    let mut tx = db.tenant(w.b).await.expect("tx");
    let card_b = load_card(&mut tx, CALLER, 5)
        .await
        .expect("card")
        .expect("known");
    drop(tx);
    let json = serde_json::to_string(&card_b).expect("json");
    assert!(json.contains("BRAVO") && !json.contains("ALPHA"), "{json}");
    w.app.stop().await.expect("stop");
}
