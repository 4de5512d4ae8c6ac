//! A fake OpenAI chat-completions server on loopback that speaks the wire
//! protocol (PROTOCOLS.md §7): `POST /v1/chat/completions`, bearer auth
//! checked with OpenAI's own 401 body, JSON body validated, and a reply
//! scripted per request: an SSE stream written in arbitrary byte pieces
//! (OpenAI-shaped chunks, comments, CRLF, lenient variants), an error with
//! OpenAI's error body, a cut connection, or a stream that never ends.
//! Every request is recorded; client disconnects are observable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a scripted stream ends after its pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The body ends normally.
    Finish,
    /// The connection is cut (no terminating chunk): a dropped stream.
    Disconnect,
    /// `: ping` comments forever, until the client goes away.
    Hang,
    /// Nothing more is sent, but the connection stays open.
    Stall,
}

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200 text/event-stream`: `pieces` written one by one.
    Stream {
        /// Waited before the status line (time to first byte).
        latency: Duration,
        /// Raw body pieces, each written as its own chunk.
        pieces: Vec<Vec<u8>>,
        /// Waited between pieces.
        gap: Duration,
        /// What happens after the last piece.
        end: End,
    },
    /// An error status with a body and optional `Retry-After`.
    Error {
        /// HTTP status.
        status: u16,
        /// `Retry-After` header value.
        retry_after: Option<String>,
        /// The body (OpenAI sends JSON).
        body: String,
    },
}

impl Reply {
    /// A stream of `body` cut into pieces of `piece` bytes (cuts may fall
    /// inside UTF-8 characters), ending normally.
    pub fn sse(body: &str, piece: usize) -> Self {
        Self::Stream {
            latency: Duration::ZERO,
            pieces: split(body.as_bytes(), piece),
            gap: Duration::ZERO,
            end: End::Finish,
        }
    }

    /// The same reply with a different end.
    pub fn ending(self, how: End) -> Self {
        match self {
            Self::Stream {
                latency,
                pieces,
                gap,
                ..
            } => Self::Stream {
                latency,
                pieces,
                gap,
                end: how,
            },
            other => other,
        }
    }

    /// The same reply, sent after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        match self {
            Self::Stream {
                pieces, gap, end, ..
            } => Self::Stream {
                latency: delay,
                pieces,
                gap,
                end,
            },
            other => other,
        }
    }

    /// The same reply with `gap` between pieces.
    pub fn paced(self, gap: Duration) -> Self {
        match self {
            Self::Stream {
                latency,
                pieces,
                end,
                ..
            } => Self::Stream {
                latency,
                pieces,
                gap,
                end,
            },
            other => other,
        }
    }

    /// OpenAI's 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u32) -> Self {
        Self::Error {
            status: 429,
            retry_after: Some(retry_after_secs.to_string()),
            body: json!({"error": {
                "message": format!("Rate limit reached for gpt-4o-mini in organization \
                    org-test on requests per min (RPM): Limit 3, Used 3, Requested 1. \
                    Please try again in {retry_after_secs}s."),
                "type": "requests",
                "param": null,
                "code": "rate_limit_exceeded"
            }})
            .to_string(),
        }
    }

    /// OpenAI's 500.
    pub fn server_error() -> Self {
        Self::Error {
            status: 500,
            retry_after: None,
            body: json!({"error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error",
                "param": null,
                "code": null
            }})
            .to_string(),
        }
    }
}

/// OpenAI's 401 body, which quotes the key masked.
fn unauthorized_body(masked_key: &str) -> String {
    json!({"error": {
        "message": format!("Incorrect API key provided: {masked_key}. You can find your \
            API key at https://platform.openai.com/account/api-keys."),
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }})
    .to_string()
}

/// `sk-…` as OpenAI shows it in errors: a prefix and the last four.
pub fn mask(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// `bytes` in pieces of at most `piece` bytes.
pub fn split(bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
    bytes.chunks(piece.max(1)).map(<[u8]>::to_vec).collect()
}

/// `data: {json}` events separated by blank lines, then `data: [DONE]`.
pub fn sse_body(chunks: &[Value]) -> String {
    let mut body = String::new();
    for chunk in chunks {
        body.push_str("data: ");
        body.push_str(&chunk.to_string());
        body.push_str("\n\n");
    }
    body.push_str("data: [DONE]\n\n");
    body
}

/// An OpenAI `chat.completion.chunk` with one choice.
pub fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
    })
}

/// The final `include_usage` chunk.
pub fn usage_chunk(prompt: u32, completion: u32) -> Value {
    json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    })
}

/// OpenAI's chunks for a text reply: the role, the pieces, the finish,
/// the usage.
pub fn text_chunks(pieces: &[&str], prompt: u32, completion: u32) -> Vec<Value> {
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for piece in pieces {
        chunks.push(chunk(json!({"content": piece}), Value::Null));
    }
    chunks.push(chunk(json!({}), json!("stop")));
    chunks.push(usage_chunk(prompt, completion));
    chunks
}

/// OpenAI's chunks for one tool call whose arguments arrive in fragments.
pub fn tool_call_chunks(id: &str, name: &str, fragments: &[&str]) -> Vec<Value> {
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "index": 0, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    )];
    for fragment in fragments {
        chunks.push(chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
            Value::Null,
        ));
    }
    chunks.push(chunk(json!({}), json!("tool_calls")));
    chunks.push(usage_chunk(50, 12));
    chunks
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

/// State the handler shares with the test.
struct Shared {
    /// The key requests must carry (`None`: any or none).
    expected_key: Option<String>,
    /// Replies still to give, in order.
    script: Mutex<VecDeque<Reply>>,
    /// Requests received.
    requests: Mutex<Vec<Recorded>>,
    /// Streams the client walked away from before they ended.
    abandoned: watch::Sender<usize>,
}

/// The running fake.
pub struct FakeOpenAi {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: url::Url,
    /// Shared with the handler.
    shared: Arc<Shared>,
    /// The server task.
    task: JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOpenAi {
    /// Starts a fake on 127.0.0.1:0 that requires `expected_key` (if
    /// given) and answers with `script`, one reply per request.
    pub async fn start(expected_key: Option<&str>, script: Vec<Reply>) -> Self {
        let (abandoned, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            expected_key: expected_key.map(str::to_owned),
            script: Mutex::new(script.into()),
            requests: Mutex::new(Vec::new()),
            abandoned,
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let (address, task) = crate::helpers::serve_loopback(app, "the fake OpenAI").await;
        let base_url = url::Url::parse(&format!("http://{address}/v1")).expect("base url");
        Self {
            base_url,
            shared,
            task,
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// Waits until `count` streams were abandoned by the client (at most
    /// 10 s, a safety net for a broken test rather than a timing claim).
    pub async fn wait_for_abandoned(&self, count: usize) {
        let mut watch = self.shared.abandoned.subscribe();
        tokio::time::timeout(Duration::from_secs(10), watch.wait_for(|n| *n >= count))
            .await
            .expect("the client did not close the connection")
            .expect("fake alive");
    }
}

/// `POST /v1/chat/completions`.
async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(Recorded {
            path: "/v1/chat/completions".to_owned(),
            headers: headers.clone(),
            body: parsed.clone().unwrap_or(Value::Null),
        });

    if let Some(expected) = &shared.expected_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(key) if key == expected => {}
            Some(key) => return json_error(401, &unauthorized_body(&mask(key)), None),
            None => {
                let body = json!({"error": {
                    "message": "You didn't provide an API key. You need to provide your API key \
                        in an Authorization header using Bearer auth (i.e. Authorization: \
                        Bearer YOUR_KEY).",
                    "type": "invalid_request_error", "param": null, "code": null}});
                return json_error(401, &body.to_string(), None);
            }
        }
    }
    let Some(request) = parsed else {
        let body = json!({"error": {
            "message": "We could not parse the JSON body of your request.",
            "type": "invalid_request_error", "param": null, "code": null}});
        return json_error(400, &body.to_string(), None);
    };
    if !request["model"].is_string() || !request["messages"].is_array() {
        let body = json!({"error": {
            "message": "you must provide a model parameter",
            "type": "invalid_request_error", "param": null, "code": null}});
        return json_error(400, &body.to_string(), None);
    }

    let reply = shared.script.lock().expect("script lock").pop_front();
    match reply {
        None => json_error(
            500,
            r#"{"error":{"message":"fake: no scripted reply"}}"#,
            None,
        ),
        Some(Reply::Error {
            status,
            retry_after,
            body,
        }) => json_error(status, &body, retry_after.as_deref()),
        Some(Reply::Stream {
            latency,
            pieces,
            gap,
            end,
        }) => {
            tokio::time::sleep(latency).await;
            stream_response(shared, pieces, gap, end)
        }
    }
}

/// A JSON error response.
fn json_error(status: u16, body: &str, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).expect("scripted status");
    let mut response = (status, body.to_owned()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = retry_after {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(value).expect("retry-after value"),
        );
    }
    response
}

/// Counts a stream the client abandoned: dropped while still armed.
struct AbandonGuard {
    /// Shared state to report to.
    shared: Arc<Shared>,
    /// The stream has not ended on its own.
    armed: bool,
}

impl AbandonGuard {
    /// The stream ended on its own: not an abandonment.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.abandoned.send_modify(|n| *n += 1);
        }
    }
}

/// Where a streamed body is.
struct Cursor {
    /// Pieces still to send.
    pieces: VecDeque<Vec<u8>>,
    /// Pause between pieces.
    gap: Duration,
    /// What happens after them.
    end: End,
    /// Reports abandonment.
    guard: AbandonGuard,
    /// No piece sent yet (no gap before the first).
    first: bool,
}

/// The `200 text/event-stream` response.
fn stream_response(shared: Arc<Shared>, pieces: Vec<Vec<u8>>, gap: Duration, end: End) -> Response {
    let cursor = Cursor {
        pieces: pieces.into(),
        gap,
        end,
        guard: AbandonGuard {
            shared,
            armed: true,
        },
        first: true,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        if let Some(piece) = cursor.pieces.pop_front() {
            if !cursor.first && !cursor.gap.is_zero() {
                tokio::time::sleep(cursor.gap).await;
            }
            cursor.first = false;
            return Some((Ok::<Bytes, std::io::Error>(Bytes::from(piece)), cursor));
        }
        match cursor.end {
            End::Finish => {
                cursor.guard.disarm();
                None
            }
            End::Disconnect => {
                // Pending once so hyper flushes what was written: the cut
                // comes after the bytes already sent, as from a server
                // that dies mid-reply.
                tokio::time::sleep(Duration::from_millis(20)).await;
                cursor.guard.disarm();
                cursor.end = End::Finish;
                Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "fake: connection cut",
                    )),
                    cursor,
                ))
            }
            End::Hang => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((Ok(Bytes::from_static(b": ping\n\n")), cursor))
            }
            End::Stall => {
                std::future::pending::<()>().await;
                None
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("openai-processing-ms", HeaderValue::from_static("12"));
    response
}
