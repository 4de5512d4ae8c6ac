//! The memory API: `/memory/store`, `/v1/memories…`, `/v2/…` and
//! `/openapi.json`.
//!
//! Every memory route checks, in this order:
//!
//! 1. `Authorization: Bearer` names a live service or tenant key, else
//!    401 (nothing else is looked at first);
//! 2. `customer_id` (query string or JSON body) is present, else 400 with
//!    the exact body `{"success": false, "error": "customer_id is required
//!    for multi-tenant security"}`;
//! 3. a tenant key names its own customer, else 403 (whether or not the
//!    other customer exists, so a tenant key cannot probe for tenants);
//!    platform keys get 403 on every memory route;
//! 4. the customer exists, else 404;
//! 5. then the request itself (E.164 `user_id`, body fields): 400.
//!
//! Successes are `{"success": true, …}` and errors `{"success": false,
//! "error": "…"}`; internal details are logged, never returned.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::service::{
    page_size, MemoryError, MemoryService, NewMemory, ProcessCall, CALLER_NOT_FOUND,
    CUSTOMER_REQUIRED, DEFAULT_RECENT_CALLS, UNKNOWN_CUSTOMER,
};
use super::thread_id;
use crate::crypto::api_key::{self, KeyScope};
use crate::db::directory;
use crate::db::{CustomerId, StorageError};
use crate::http::auth::bearer;
use crate::http::AppState;
use crate::repo;

/// The memory API's routes (and its OpenAPI document).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/memory/store", post(store))
        .route("/v1/memories", post(store))
        .route("/v1/memories/user/{user_id}", get(list_memories))
        .route("/v1/memories/{memory_id}", delete(delete_memory))
        .route("/v2/context/enriched", post(enriched_context))
        .route("/v2/process-call", post(process_call))
        .route("/v2/summaries/{user_id}", get(summaries))
        .route("/v2/profile/{user_id}", get(profile))
        .route("/v2/personality/{user_id}", get(personality))
        .route("/v2/callers/{user_id}", delete(erase_caller))
        .route("/openapi.json", get(openapi))
}

/// A memory API error as clients see it: a status and one message.
#[derive(Debug)]
pub(crate) struct MemoryApiError {
    /// The HTTP status.
    status: StatusCode,
    /// The `error` string of the body.
    message: String,
}

impl MemoryApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid API key")
    }

    fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, "memory API request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for MemoryApiError {
    fn into_response(self) -> Response {
        let body = json!({ "success": false, "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<StorageError> for MemoryApiError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Invalid(_) => Self::bad_request("invalid data"),
            StorageError::Conflict(_) => Self::new(StatusCode::CONFLICT, "already exists"),
            other => Self::internal(&other),
        }
    }
}

impl From<MemoryError> for MemoryApiError {
    fn from(error: MemoryError) -> Self {
        match error {
            MemoryError::MissingCustomer => Self::bad_request(CUSTOMER_REQUIRED),
            MemoryError::UnknownCustomer => Self::new(StatusCode::NOT_FOUND, UNKNOWN_CUSTOMER),
            MemoryError::Unauthorized => Self::unauthorized(),
            MemoryError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            MemoryError::Invalid(m) => Self::bad_request(m),
            MemoryError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            MemoryError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            MemoryError::Storage(e) => e.into(),
            unavailable @ MemoryError::Unavailable(_) => Self::internal(&unavailable),
        }
    }
}

/// Who is calling the memory API.
pub(crate) enum MemoryKey {
    /// An internal service: may name any customer.
    Service {
        /// `service-key:<prefix>`, for the audit log.
        actor: String,
    },
    /// One tenant's integration: its own customer only.
    Tenant {
        /// The key's tenant.
        customer_id: CustomerId,
        /// `tenant-key:<prefix>`, for the audit log.
        actor: String,
    },
}

impl MemoryKey {
    fn actor(&self) -> &str {
        match self {
            MemoryKey::Service { actor } | MemoryKey::Tenant { actor, .. } => actor,
        }
    }
}

impl FromRequestParts<AppState> for MemoryKey {
    type Rejection = MemoryApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(MemoryApiError::unauthorized)?;
        let scope = api_key::scope_of(&token).ok_or_else(MemoryApiError::unauthorized)?;
        let hash = api_key::hash(token.expose_secret());
        // The first 12 characters are the key's non-secret display prefix.
        let prefix: String = token.expose_secret().chars().take(12).collect();
        let db = state.platform.db();
        if scope == KeyScope::Tenant {
            return match directory::authenticate_tenant_key(db, &hash).await? {
                Some((customer_id, _key_id)) => Ok(MemoryKey::Tenant {
                    customer_id,
                    actor: format!("tenant-key:{prefix}"),
                }),
                None => Err(MemoryApiError::unauthorized()),
            };
        }
        let mut conn = db.platform().await?;
        let key = repo::platform::find_key(&mut conn, &hash)
            .await?
            .ok_or_else(MemoryApiError::unauthorized)?;
        if key.scope != KeyScope::Service.as_str() {
            return Err(MemoryApiError::new(
                StatusCode::FORBIDDEN,
                "the memory API needs a service or tenant key",
            ));
        }
        Ok(MemoryKey::Service {
            actor: format!("service-key:{}", key.prefix),
        })
    }
}

/// The query string's pairs.
fn query_pairs(query: &Option<String>) -> Vec<(String, String)> {
    query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn query_value<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A JSON request body as an object (`{}` when empty).
fn json_body(bytes: &Bytes) -> Result<Value, MemoryApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(MemoryApiError::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

/// The tenant a request acts for, after rules 2 and 3 of the module docs
/// (rule 4, existence, is checked by the service in its transaction).
fn tenant_of(
    key: &MemoryKey,
    pairs: &[(String, String)],
    body: Option<&Value>,
) -> Result<CustomerId, MemoryApiError> {
    let from_query = query_value(pairs, "customer_id").map(str::trim);
    let from_body = match body.and_then(|b| b.get("customer_id")) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim()),
        Some(_) => return Err(MemoryApiError::bad_request("customer_id must be a string")),
    };
    let named = match (
        from_query.filter(|s| !s.is_empty()),
        from_body.filter(|s| !s.is_empty()),
    ) {
        (None, None) => return Err(MemoryApiError::bad_request(CUSTOMER_REQUIRED)),
        (Some(q), Some(b)) if q != b => {
            return Err(MemoryApiError::bad_request(
                "customer_id differs between the query string and the body",
            ))
        }
        (Some(id), _) | (None, Some(id)) => id,
    };
    let customer_id = named.parse::<CustomerId>().ok();
    if let MemoryKey::Tenant {
        customer_id: own, ..
    } = key
    {
        if customer_id != Some(*own) {
            return Err(MemoryApiError::new(
                StatusCode::FORBIDDEN,
                "this API key belongs to another customer",
            ));
        }
    }
    customer_id.ok_or_else(|| MemoryApiError::new(StatusCode::NOT_FOUND, UNKNOWN_CUSTOMER))
}

/// An optional numeric query parameter.
fn query_limit(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, MemoryApiError> {
    query_value(pairs, name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| MemoryApiError::bad_request(format!("{name} must be an integer")))
        })
        .transpose()
}

/// Decodes the body into the request type (after the tenant was resolved).
fn decode<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, MemoryApiError> {
    serde_json::from_value(body)
        .map_err(|e| MemoryApiError::bad_request(format!("invalid request body: {e}")))
}

fn service(state: &AppState) -> MemoryService {
    MemoryService::new(state.platform.db().clone())
}

/// The customer a request acts for ([`tenant_of`]), checked to exist
/// (rule 4), and the service to act with.
async fn customer(
    state: &AppState,
    key: &MemoryKey,
    pairs: &[(String, String)],
    body: Option<&Value>,
) -> Result<(CustomerId, MemoryService), MemoryApiError> {
    let customer_id = tenant_of(key, pairs, body)?;
    let service = service(state);
    if !service.customer_exists(customer_id).await? {
        return Err(MemoryError::UnknownCustomer.into());
    }
    Ok((customer_id, service))
}

type Reply = Result<(StatusCode, Json<Value>), MemoryApiError>;

fn ok(status: StatusCode, mut body: Value) -> Reply {
    body["success"] = json!(true);
    Ok((status, Json(body)))
}

async fn store(
    State(state): State<AppState>,
    key: MemoryKey,
    RawQuery(query): RawQuery,
    bytes: Bytes,
) -> Reply {
    let body = json_body(&bytes)?;
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), Some(&body)).await?;
    let memory: NewMemory = decode(body)?;
    let record = service.store(customer_id, &memory).await?;
    ok(
        StatusCode::CREATED,
        json!({ "thread_id": thread_id(customer_id, &record.user_id), "memory": record }),
    )
}

async fn list_memories(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let pairs = query_pairs(&query);
    let (customer_id, service) = customer(&state, &key, &pairs, None).await?;
    let limit = page_size(query_limit(&pairs, "limit")?);
    let memories = service.list_memories(customer_id, &user_id, limit).await?;
    ok(
        StatusCode::OK,
        json!({
            "thread_id": thread_id(customer_id, &user_id),
            "user_id": user_id,
            "memories": memories,
        }),
    )
}

async fn delete_memory(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(memory_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), None).await?;
    let memory_id: Uuid = memory_id
        .parse()
        .map_err(|_| MemoryApiError::bad_request("the memory id must be a UUID"))?;
    service.delete_memory(customer_id, memory_id).await?;
    ok(
        StatusCode::OK,
        json!({ "deleted": true, "memory_id": memory_id }),
    )
}

/// `POST /v2/context/enriched` body.
#[derive(Deserialize)]
struct EnrichedRequest {
    user_id: String,
    #[serde(default)]
    reveal_sensitive: bool,
    #[serde(default)]
    recent_calls: Option<i64>,
}

async fn enriched_context(
    State(state): State<AppState>,
    key: MemoryKey,
    RawQuery(query): RawQuery,
    bytes: Bytes,
) -> Reply {
    let body = json_body(&bytes)?;
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), Some(&body)).await?;
    let request: EnrichedRequest = decode(body)?;
    let context = service
        .enriched_context(
            customer_id,
            &request.user_id,
            request.reveal_sensitive,
            request.recent_calls.unwrap_or(DEFAULT_RECENT_CALLS),
        )
        .await?;
    ok(StatusCode::OK, json!(context))
}

async fn process_call(
    State(state): State<AppState>,
    key: MemoryKey,
    RawQuery(query): RawQuery,
    bytes: Bytes,
) -> Reply {
    let body = json_body(&bytes)?;
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), Some(&body)).await?;
    let call: ProcessCall = decode(body)?;
    let processed = service
        .process_call(customer_id, &call, chrono::Utc::now())
        .await?;
    ok(StatusCode::ACCEPTED, json!(processed))
}

async fn summaries(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let pairs = query_pairs(&query);
    let (customer_id, service) = customer(&state, &key, &pairs, None).await?;
    let limit = page_size(query_limit(&pairs, "limit")?);
    let summaries = service.summaries(customer_id, &user_id, limit).await?;
    ok(
        StatusCode::OK,
        json!({
            "thread_id": thread_id(customer_id, &user_id),
            "user_id": user_id,
            "summaries": summaries,
        }),
    )
}

async fn profile(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), None).await?;
    let view = service
        .profile(customer_id, &user_id)
        .await?
        .ok_or_else(|| MemoryApiError::new(StatusCode::NOT_FOUND, CALLER_NOT_FOUND))?;
    let mut body = json!(view);
    body["thread_id"] = json!(thread_id(customer_id, &user_id));
    ok(StatusCode::OK, body)
}

async fn personality(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let pairs = query_pairs(&query);
    let (customer_id, service) = customer(&state, &key, &pairs, None).await?;
    let limit = page_size(query_limit(&pairs, "limit")?);
    let view = service
        .personality(customer_id, &user_id, limit)
        .await?
        .ok_or_else(|| MemoryApiError::new(StatusCode::NOT_FOUND, CALLER_NOT_FOUND))?;
    let mut body = json!(view);
    body["thread_id"] = json!(thread_id(customer_id, &user_id));
    ok(StatusCode::OK, body)
}

async fn erase_caller(
    State(state): State<AppState>,
    key: MemoryKey,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Reply {
    let (customer_id, service) = customer(&state, &key, &query_pairs(&query), None).await?;
    let report = service
        .erase_caller(customer_id, &user_id, key.actor())
        .await?;
    let mut body = json!(report);
    body["thread_id"] = json!(thread_id(customer_id, &user_id));
    ok(StatusCode::OK, body)
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}
