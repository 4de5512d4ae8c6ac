//! `MemoryClient`: how the orchestrator (the call session, jobs, tools)
//! reaches caller memory. In-process by default ([`InProcessMemoryClient`],
//! straight to the database); over HTTP ([`HttpMemoryClient`]) when memory
//! runs as a separately deployed service, authenticated with a service key.
//! Both return the same types and the same [`MemoryError`]s.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use url::Url;
use uuid::Uuid;

use super::service::{
    EnrichedContext, ErasureReport, MemoryError, MemoryService, NewMemory, PersonalityView,
    ProcessCall, ProcessedCall, ProfileView, CALLER_NOT_FOUND, CUSTOMER_REQUIRED, UNKNOWN_CUSTOMER,
};
use crate::db::CustomerId;
use crate::repo::memory::{MemoryRecord, SummaryRecord};

/// Caller memory, wherever it is served from. Every call names its tenant.
pub trait MemoryClient: Send + Sync {
    /// Stores a memory about a caller.
    fn store<'a>(
        &'a self,
        customer_id: CustomerId,
        memory: &'a NewMemory,
    ) -> BoxFuture<'a, Result<MemoryRecord, MemoryError>>;

    /// A caller's memories, newest first (at most `limit`).
    fn list_memories<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<MemoryRecord>, MemoryError>>;

    /// Deletes one memory; [`MemoryError::NotFound`] when there is none.
    fn delete_memory(
        &self,
        customer_id: CustomerId,
        memory_id: Uuid,
    ) -> BoxFuture<'_, Result<(), MemoryError>>;

    /// The caller's card and prompt context (see
    /// [`MemoryService::enriched_context`]).
    fn enriched_context<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        reveal_sensitive: bool,
        recent: i64,
    ) -> BoxFuture<'a, Result<EnrichedContext, MemoryError>>;

    /// Records a finished call's transcript and enqueues its post-call job.
    fn process_call<'a>(
        &'a self,
        customer_id: CustomerId,
        call: &'a ProcessCall,
    ) -> BoxFuture<'a, Result<ProcessedCall, MemoryError>>;

    /// A caller's call summaries, newest first.
    fn summaries<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<SummaryRecord>, MemoryError>>;

    /// A caller's profile and current facts; `None` for an unknown caller.
    fn profile<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProfileView>, MemoryError>>;

    /// A caller's personality; `None` when no call was analysed.
    fn personality<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PersonalityView>, MemoryError>>;

    /// Erases every trace of the caller for the tenant (audited).
    fn erase_caller<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<ErasureReport, MemoryError>>;
}

/// Personality rows per call returned by [`MemoryClient::personality`].
const PERSONALITY_CALLS: i64 = 20;

/// Memory in this process: straight to the database.
#[derive(Clone)]
pub struct InProcessMemoryClient {
    /// The service doing the work.
    service: MemoryService,
    /// Who erasures are audited as (`service:orchestrator`, …).
    actor: String,
}

impl InProcessMemoryClient {
    /// A client over `service`; erasures are audited as `actor`.
    pub fn new(service: MemoryService, actor: impl Into<String>) -> Self {
        Self {
            service,
            actor: actor.into(),
        }
    }
}

impl MemoryClient for InProcessMemoryClient {
    fn store<'a>(
        &'a self,
        customer_id: CustomerId,
        memory: &'a NewMemory,
    ) -> BoxFuture<'a, Result<MemoryRecord, MemoryError>> {
        self.service.store(customer_id, memory).boxed()
    }

    fn list_memories<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<MemoryRecord>, MemoryError>> {
        self.service
            .list_memories(customer_id, user_id, limit)
            .boxed()
    }

    fn delete_memory(
        &self,
        customer_id: CustomerId,
        memory_id: Uuid,
    ) -> BoxFuture<'_, Result<(), MemoryError>> {
        self.service.delete_memory(customer_id, memory_id).boxed()
    }

    fn enriched_context<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        reveal_sensitive: bool,
        recent: i64,
    ) -> BoxFuture<'a, Result<EnrichedContext, MemoryError>> {
        self.service
            .enriched_context(customer_id, user_id, reveal_sensitive, recent)
            .boxed()
    }

    fn process_call<'a>(
        &'a self,
        customer_id: CustomerId,
        call: &'a ProcessCall,
    ) -> BoxFuture<'a, Result<ProcessedCall, MemoryError>> {
        self.service
            .process_call(customer_id, call, chrono::Utc::now())
            .boxed()
    }

    fn summaries<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<SummaryRecord>, MemoryError>> {
        self.service.summaries(customer_id, user_id, limit).boxed()
    }

    fn profile<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProfileView>, MemoryError>> {
        self.service.profile(customer_id, user_id).boxed()
    }

    fn personality<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PersonalityView>, MemoryError>> {
        self.service
            .personality(customer_id, user_id, PERSONALITY_CALLS)
            .boxed()
    }

    fn erase_caller<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<ErasureReport, MemoryError>> {
        self.service
            .erase_caller(customer_id, user_id, &self.actor)
            .boxed()
    }
}

/// Memory served by a separately deployed Switchboard memory API, reached
/// with a service key (`switchboard apikey create --service`).
#[derive(Clone)]
pub struct HttpMemoryClient {
    /// Connection pool, with the request timeout.
    http: reqwest::Client,
    /// The service's base URL (paths are appended to it).
    base: Url,
    /// The service key, sent as `Authorization: Bearer`.
    key: SecretString,
}

impl HttpMemoryClient {
    /// A client for the memory API at `base` (e.g. `http://memory:8080/`),
    /// each request limited to `timeout`.
    pub fn new(base: Url, key: SecretString, timeout: Duration) -> Result<Self, MemoryError> {
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(MemoryError::Invalid(
                "the memory service URL must be http(s)://host[/path]".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| MemoryError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self { http, base, key })
    }

    /// `base` + the path segments (each percent-encoded as needed) +
    /// `customer_id` and any extra query pairs.
    fn url(&self, segments: &[&str], customer_id: CustomerId, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("customer_id", &customer_id.to_string());
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        url
    }

    /// Sends one request and returns the JSON body of a success, or the
    /// error the status and message stand for.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Value, MemoryError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.key.expose_secret());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| MemoryError::Unavailable(e.without_url().to_string()))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| MemoryError::Unavailable(format!("HTTP {status}: {}", e.without_url())))?;
        if status.is_success() && body.get("success") == Some(&Value::Bool(true)) {
            return Ok(body);
        }
        let message = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no error message")
            .to_string();
        Err(match status {
            StatusCode::BAD_REQUEST if message == CUSTOMER_REQUIRED => MemoryError::MissingCustomer,
            StatusCode::BAD_REQUEST => MemoryError::Invalid(message),
            StatusCode::UNAUTHORIZED => MemoryError::Unauthorized,
            StatusCode::FORBIDDEN => MemoryError::Forbidden(message),
            StatusCode::NOT_FOUND if message == UNKNOWN_CUSTOMER => MemoryError::UnknownCustomer,
            StatusCode::NOT_FOUND => MemoryError::NotFound(message),
            StatusCode::CONFLICT => MemoryError::Conflict(message),
            other => MemoryError::Unavailable(format!("HTTP {other}: {message}")),
        })
    }
}

/// Decodes `value` (a whole body or one field of it).
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, MemoryError> {
    serde_json::from_value(value)
        .map_err(|e| MemoryError::Unavailable(format!("unexpected response: {e}")))
}

/// Takes one field of a response body.
fn field(body: &mut Value, name: &str) -> Value {
    body.get_mut(name).map(Value::take).unwrap_or(Value::Null)
}

/// `Ok(None)` for a 404 meaning `absent`, else the result as is.
fn absent_as_none<T>(
    result: Result<T, MemoryError>,
    absent: &str,
) -> Result<Option<T>, MemoryError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(MemoryError::NotFound(message)) if message == absent => Ok(None),
        Err(other) => Err(other),
    }
}

impl MemoryClient for HttpMemoryClient {
    fn store<'a>(
        &'a self,
        customer_id: CustomerId,
        memory: &'a NewMemory,
    ) -> BoxFuture<'a, Result<MemoryRecord, MemoryError>> {
        async move {
            let mut body = serde_json::to_value(memory)
                .map_err(|e| MemoryError::Invalid(format!("memory: {e}")))?;
            body["customer_id"] = json!(customer_id);
            let url = self.url(&["v1", "memories"], customer_id, &[]);
            let mut reply = self.send(Method::POST, url, Some(body)).await?;
            decode(field(&mut reply, "memory"))
        }
        .boxed()
    }

    fn list_memories<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<MemoryRecord>, MemoryError>> {
        async move {
            let url = self.url(
                &["v1", "memories", "user", user_id],
                customer_id,
                &[("limit", limit.to_string())],
            );
            let mut reply = self.send(Method::GET, url, None).await?;
            decode(field(&mut reply, "memories"))
        }
        .boxed()
    }

    fn delete_memory(
        &self,
        customer_id: CustomerId,
        memory_id: Uuid,
    ) -> BoxFuture<'_, Result<(), MemoryError>> {
        async move {
            let id = memory_id.to_string();
            let url = self.url(&["v1", "memories", &id], customer_id, &[]);
            self.send(Method::DELETE, url, None).await.map(|_| ())
        }
        .boxed()
    }

    fn enriched_context<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        reveal_sensitive: bool,
        recent: i64,
    ) -> BoxFuture<'a, Result<EnrichedContext, MemoryError>> {
        async move {
            let url = self.url(&["v2", "context", "enriched"], customer_id, &[]);
            let body = json!({
                "customer_id": customer_id,
                "user_id": user_id,
                "reveal_sensitive": reveal_sensitive,
                "recent_calls": recent,
            });
            decode(self.send(Method::POST, url, Some(body)).await?)
        }
        .boxed()
    }

    fn process_call<'a>(
        &'a self,
        customer_id: CustomerId,
        call: &'a ProcessCall,
    ) -> BoxFuture<'a, Result<ProcessedCall, MemoryError>> {
        async move {
            let mut body = serde_json::to_value(call)
                .map_err(|e| MemoryError::Invalid(format!("call: {e}")))?;
            body["customer_id"] = json!(customer_id);
            let url = self.url(&["v2", "process-call"], customer_id, &[]);
            decode(self.send(Method::POST, url, Some(body)).await?)
        }
        .boxed()
    }

    fn summaries<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<SummaryRecord>, MemoryError>> {
        async move {
            let url = self.url(
                &["v2", "summaries", user_id],
                customer_id,
                &[("limit", limit.to_string())],
            );
            let mut reply = self.send(Method::GET, url, None).await?;
            decode(field(&mut reply, "summaries"))
        }
        .boxed()
    }

    fn profile<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ProfileView>, MemoryError>> {
        async move {
            let url = self.url(&["v2", "profile", user_id], customer_id, &[]);
            let reply = self.send(Method::GET, url, None).await;
            absent_as_none(reply, CALLER_NOT_FOUND)?
                .map(decode)
                .transpose()
        }
        .boxed()
    }

    fn personality<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<PersonalityView>, MemoryError>> {
        async move {
            let url = self.url(
                &["v2", "personality", user_id],
                customer_id,
                &[("limit", PERSONALITY_CALLS.to_string())],
            );
            let reply = self.send(Method::GET, url, None).await;
            absent_as_none(reply, CALLER_NOT_FOUND)?
                .map(decode)
                .transpose()
        }
        .boxed()
    }

    fn erase_caller<'a>(
        &'a self,
        customer_id: CustomerId,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<ErasureReport, MemoryError>> {
        async move {
            let url = self.url(&["v2", "callers", user_id], customer_id, &[]);
            decode(self.send(Method::DELETE, url, None).await?)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::service::MEMORY_NOT_FOUND;

    #[test]
    fn urls_keep_the_base_path_and_encode_segments() {
        let client = HttpMemoryClient::new(
            Url::parse("http://memory.internal:8080/api/").expect("url"),
            SecretString::from("sbk_s_x".to_string()),
            Duration::from_secs(1),
        )
        .expect("client");
        let customer: CustomerId = "6f1c1a52-3c0e-4a57-9f53-5a0b2f4c8d11".parse().expect("id");
        let url = client.url(
            &["v2", "profile", "+15551234567"],
            customer,
            &[("limit", "5".into())],
        );
        assert_eq!(
            url.as_str(),
            "http://memory.internal:8080/api/v2/profile/+15551234567\
             ?customer_id=6f1c1a52-3c0e-4a57-9f53-5a0b2f4c8d11&limit=5"
        );
        assert!(HttpMemoryClient::new(
            Url::parse("mailto:x@y").expect("url"),
            SecretString::from(String::new()),
            Duration::from_secs(1)
        )
        .is_err());
    }

    #[test]
    fn not_found_maps_to_none_only_for_the_absent_message() {
        let absent: Result<(), MemoryError> = Err(MemoryError::NotFound(CALLER_NOT_FOUND.into()));
        assert!(matches!(absent_as_none(absent, CALLER_NOT_FOUND), Ok(None)));
        let other: Result<(), MemoryError> = Err(MemoryError::NotFound(MEMORY_NOT_FOUND.into()));
        assert!(matches!(
            absent_as_none(other, CALLER_NOT_FOUND),
            Err(MemoryError::NotFound(_))
        ));
    }
}
