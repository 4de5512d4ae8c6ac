//! The offline model behind an OpenAI-compatible HTTP endpoint, so the
//! production LLM client (and any OpenAI SDK) can talk to it:
//! `POST /v1/chat/completions`.
//!
//! - `stream: true` answers `text/event-stream` exactly as OpenAI does:
//!   `data: {chunk}` events of `object: "chat.completion.chunk"` whose
//!   `choices[0].delta` carries first the role, then `content` pieces, then
//!   an empty delta with `finish_reason` (`stop` or `length`); with
//!   `stream_options.include_usage` one more chunk with `choices: []` and
//!   `usage`; then `data: [DONE]`. A failure mid-stream sends
//!   `data: {"error": …}` and ends the stream without `[DONE]`.
//! - `stream: false` (or absent) answers one `chat.completion` object.
//! - `tools` and `tool_choice` are accepted and ignored: the model never
//!   calls tools. `max_tokens` or `max_completion_tokens` and
//!   `temperature` are honoured; the `model` name is echoed back.
//! - Errors are OpenAI error objects (`{"error": {"message", "type",
//!   "code"}}`): 400 for a request the model cannot take, 503 when the
//!   model is not running, 500 when llama.cpp fails.
//!
//! No authentication: bind it to loopback.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::LocalLlm;
use crate::providers::roles::{
    LlmEvent, LlmMessage, LlmRequest, LlmStream, ProviderError, TokenUsage,
};

/// The router serving `POST /v1/chat/completions` with `llm`.
pub fn router(llm: Arc<LocalLlm>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(llm)
}

/// The request fields this server reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    /// Echoed back in every chunk.
    #[serde(default)]
    model: Option<String>,
    /// The conversation.
    messages: Vec<WireMessage>,
    /// Stream as server-sent events.
    #[serde(default)]
    stream: Option<bool>,
    /// `include_usage`.
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    /// Sampling temperature; 0 or absent is greedy.
    #[serde(default)]
    temperature: Option<f32>,
    /// Completion token limit (legacy name).
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Completion token limit (current name; wins).
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default)]
    include_usage: bool,
}

/// One message as OpenAI clients send it.
#[derive(Debug, Deserialize)]
struct WireMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    role: String,
    /// A string, an array of content parts, or null.
    #[serde(default)]
    content: Value,
    /// The tool call a `tool` message answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// The text of a message's `content`: the string itself, or the `text`
/// parts joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The message, or the unknown role it has.
fn to_message(message: WireMessage) -> Result<LlmMessage, String> {
    let text = content_text(&message.content);
    Ok(match message.role.as_str() {
        "system" | "developer" => LlmMessage::System(text),
        "user" => LlmMessage::User(text),
        "assistant" => LlmMessage::Assistant {
            content: text,
            tool_calls: Vec::new(),
        },
        "tool" => LlmMessage::Tool {
            id: message.tool_call_id.unwrap_or_default(),
            content: text,
        },
        _ => return Err(message.role),
    })
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "code": Value::Null }
    });
    (status, Json(body)).into_response()
}

fn provider_error_response(error: &ProviderError) -> Response {
    match error {
        ProviderError::Rejected { .. } => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &error.to_string(),
        ),
        ProviderError::Unavailable { .. } => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            &error.to_string(),
        ),
        _ => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &error.to_string(),
        ),
    }
}

async fn chat_completions(
    State(llm): State<Arc<LocalLlm>>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &rejection.body_text(),
            )
        }
    };
    let model = request.model.clone().unwrap_or_else(|| "smollm2".into());
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let streaming = request.stream.unwrap_or(false);
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in request.messages {
        match to_message(message) {
            Ok(message) => messages.push(message),
            Err(role) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &format!("unknown message role `{role}`"),
                )
            }
        }
    }
    let llm_request = LlmRequest {
        model: model.clone(),
        messages,
        tools: Vec::new(),
        temperature: request.temperature,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
    };
    let events = match llm.complete(llm_request).await {
        Ok(events) => events,
        Err(error) => return provider_error_response(&error),
    };
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = chrono::Utc::now().timestamp();
    if streaming {
        sse_response(events, Chunks { id, created, model }, include_usage)
    } else {
        whole_response(events, id, created, model).await
    }
}

/// What every chunk of one completion repeats.
struct Chunks {
    /// `chatcmpl-…`.
    id: String,
    /// Unix seconds.
    created: i64,
    /// The requested model name.
    model: String,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": Value::Null,
                "finish_reason": finish_reason,
            }],
        })
    }

    fn usage(&self, usage: TokenUsage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(usage),
        })
    }
}

fn usage_json(usage: TokenUsage) -> Value {
    json!({
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
    })
}

fn event_bytes(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The completion as OpenAI's server-sent events. The body stream owns the
/// model's stream: a client that disconnects drops both, which stops
/// generation.
fn sse_response(events: LlmStream, chunks: Chunks, include_usage: bool) -> Response {
    struct Feed {
        events: LlmStream,
        chunks: Chunks,
        include_usage: bool,
        usage: TokenUsage,
        started: bool,
        finished: bool,
    }
    let feed = Feed {
        events,
        chunks,
        include_usage,
        usage: TokenUsage::default(),
        started: false,
        finished: false,
    };
    let body = futures_util::stream::unfold(feed, |mut feed| async move {
        if feed.finished {
            return None;
        }
        if !feed.started {
            feed.started = true;
            let first = feed
                .chunks
                .chunk(json!({"role": "assistant", "content": ""}), None);
            return Some((Ok::<_, std::convert::Infallible>(event_bytes(&first)), feed));
        }
        loop {
            match feed.events.next().await {
                Some(Ok(LlmEvent::Text(text))) => {
                    let chunk = feed.chunks.chunk(json!({ "content": text }), None);
                    return Some((Ok(event_bytes(&chunk)), feed));
                }
                Some(Ok(LlmEvent::Usage(usage))) => feed.usage = usage,
                Some(Ok(LlmEvent::ToolCall(_))) => {}
                Some(Ok(LlmEvent::Done { finish_reason })) => {
                    feed.finished = true;
                    let mut out =
                        event_bytes(&feed.chunks.chunk(json!({}), Some(&finish_reason))).to_vec();
                    if feed.include_usage {
                        out.extend_from_slice(&event_bytes(&feed.chunks.usage(feed.usage)));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    return Some((Ok(Bytes::from(out)), feed));
                }
                Some(Err(error)) => {
                    feed.finished = true;
                    let body = json!({
                        "error": { "message": error.to_string(), "type": "server_error", "code": Value::Null }
                    });
                    return Some((Ok(event_bytes(&body)), feed));
                }
                // The worker went away without finishing.
                None => return None,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The completion as one `chat.completion` object.
async fn whole_response(
    mut events: LlmStream,
    id: String,
    created: i64,
    model: String,
) -> Response {
    let mut content = String::new();
    let mut usage = TokenUsage::default();
    let mut finish_reason = String::from("stop");
    while let Some(event) = events.next().await {
        match event {
            Ok(LlmEvent::Text(text)) => content.push_str(&text),
            Ok(LlmEvent::Usage(u)) => usage = u,
            Ok(LlmEvent::ToolCall(_)) => {}
            Ok(LlmEvent::Done { finish_reason: f }) => finish_reason = f,
            Err(error) => return provider_error_response(&error),
        }
    }
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "logprobs": Value::Null,
            "finish_reason": finish_reason,
        }],
        "usage": usage_json(usage),
    });
    Json(body).into_response()
}
