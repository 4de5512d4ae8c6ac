//! A fake ElevenLabs on 127.0.0.1:0 that speaks the vendor's protocol
//! (PROTOCOLS.md §5): the multi-context websocket
//! (`/v1/text-to-speech/{voice}/multi-stream-input`) and the HTTP stream
//! endpoint (`/v1/text-to-speech/{voice}/stream`).
//!
//! It checks `xi-api-key` (401 at the handshake, HTTP 401 JSON), the query
//! parameters and the message shapes, records every message, and answers
//! each text chunk with deterministic mu-law ([`fake_audio`]: two bytes per
//! character) in several base64 messages with per-message alignment. Flush
//! queues the context's final message; `close_context` drops what is still
//! queued for the context, after one late chunk of it. Scriptable: holding
//! a context mid-turn, disconnecting mid-stream, malformed frames, the
//! snake_case spelling, handshake refusals and HTTP 401/422/429/500/drops,
//! and a whole-vendor outage ([`FakeElevenLabs::go_down`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::stream;
use secrecy::SecretString;
use serde_json::{json, Value};
use switchboard::providers::elevenlabs::ElevenLabsConfig;
use tokio::task::JoinHandle;

/// The only key the fake accepts.
pub const FAKE_KEY: &str = "xi-fake-key-5b0c2e1d9a";

/// The voice the tests use.
pub const VOICE_ID: &str = "voice-rachel";

/// Deterministic mu-law for `text`: two bytes per character.
pub fn fake_audio(text: &str) -> Vec<u8> {
    text.chars()
        .flat_map(|c| {
            let v = (c as u32 % 251) as u8;
            [v, 0xff ^ v]
        })
        .collect()
}

/// How the websocket side behaves (set before the client connects).
#[derive(Debug, Clone)]
pub struct WsScript {
    /// Refuse the handshake with this HTTP status (401 is automatic for a
    /// wrong key).
    pub handshake_status: Option<u16>,
    /// Audio messages per text chunk.
    pub pieces: usize,
    /// Pause before each audio message.
    pub delay: Duration,
    /// After this many audio messages of this context, send nothing more of
    /// it until it is closed.
    pub hold: Option<(&'static str, usize)>,
    /// Drop the connection (no close frame) after this many audio messages.
    pub disconnect_after: Option<usize>,
    /// Send malformed frames before a context's first audio.
    pub malformed: bool,
    /// Use `context_id`, `is_final` and snake_case alignment.
    pub snake_case: bool,
}

impl Default for WsScript {
    fn default() -> Self {
        Self {
            handshake_status: None,
            pieces: 3,
            delay: Duration::ZERO,
            hold: None,
            disconnect_after: None,
            malformed: false,
            snake_case: false,
        }
    }
}

/// A canned answer of the HTTP endpoint (the default is normal streaming).
#[derive(Debug, Clone)]
pub enum HttpAnswer {
    /// 422 with this validation message.
    Invalid(&'static str),
    /// 429 with this `Retry-After` (seconds).
    Busy(u64),
    /// 500.
    Broken,
    /// 200, but the body breaks off after this many bytes.
    DropAfter(usize),
}

/// One HTTP request as the fake saw it.
#[derive(Debug, Clone)]
pub struct HttpSeen {
    /// The voice in the path.
    pub voice: String,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// The JSON body.
    pub body: Value,
}

/// Everything the fake knows.
#[derive(Default)]
struct FakeState {
    ws: WsScript,
    http: VecDeque<HttpAnswer>,
    /// Websocket connections accepted.
    connections: usize,
    /// Query parameters of each websocket handshake (refused ones too).
    ws_queries: Vec<HashMap<String, String>>,
    /// Every websocket message received: (connection number, message).
    ws_messages: Vec<(usize, Value)>,
    http_seen: Vec<HttpSeen>,
    /// Late chunks sent after a `close_context`.
    late_chunks: usize,
    /// The vendor is down: see [`FakeElevenLabs::go_down`].
    down: bool,
}

type Shared = Arc<Mutex<FakeState>>;

/// The running fake.
pub struct FakeElevenLabs {
    addr: SocketAddr,
    state: Shared,
    server: JoinHandle<()>,
}

impl FakeElevenLabs {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route(
                "/v1/text-to-speech/{voice}/multi-stream-input",
                any(multi_stream_input),
            )
            .route("/v1/text-to-speech/{voice}/stream", post(http_stream))
            .with_state(state.clone());
        let (addr, server) = crate::helpers::serve_loopback(app, "fake ElevenLabs").await;
        Self {
            addr,
            state,
            server,
        }
    }

    /// Client settings pointing at the fake, with `key`.
    pub fn config_with_key(&self, key: &str) -> ElevenLabsConfig {
        let mut config = ElevenLabsConfig::new(SecretString::from(key.to_string()));
        config.http_base = format!("http://{}", self.addr).parse().expect("http base");
        config.ws_base = format!("ws://{}", self.addr).parse().expect("ws base");
        config.default_voice_settings =
            Some(json!({"stability": 0.5, "similarity_boost": 0.75, "speed": 1.0}));
        config.connect_timeout = Duration::from_secs(5);
        config
    }

    /// Client settings pointing at the fake, with the right key.
    pub fn config(&self) -> ElevenLabsConfig {
        self.config_with_key(FAKE_KEY)
    }

    /// Sets the websocket behaviour for the next connections.
    pub fn script_ws(&self, script: WsScript) {
        self.state.lock().expect("lock").ws = script;
    }

    /// Queues canned HTTP answers.
    pub fn script_http(&self, answers: impl IntoIterator<Item = HttpAnswer>) {
        self.state.lock().expect("lock").http.extend(answers);
    }

    /// The vendor goes down: new handshakes are refused with 503, open
    /// sockets drop (no close frame) on the next message they receive, and
    /// the HTTP endpoint answers 500.
    pub fn go_down(&self) {
        self.state.lock().expect("lock").down = true;
    }

    /// Websocket connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().expect("lock").connections
    }

    /// Query parameters of every websocket handshake.
    pub fn ws_queries(&self) -> Vec<HashMap<String, String>> {
        self.state.lock().expect("lock").ws_queries.clone()
    }

    /// Every websocket message received.
    pub fn ws_messages(&self) -> Vec<(usize, Value)> {
        self.state.lock().expect("lock").ws_messages.clone()
    }

    /// Late chunks sent after a `close_context`.
    pub fn late_chunks(&self) -> usize {
        self.state.lock().expect("lock").late_chunks
    }

    /// Every HTTP request that reached the stream endpoint.
    pub fn http_seen(&self) -> Vec<HttpSeen> {
        self.state.lock().expect("lock").http_seen.clone()
    }

    /// Waits (up to 5 s) until a websocket message matches `pred`.
    pub async fn wait_for_message(&self, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            if let Some((_, m)) = self.ws_messages().into_iter().find(|(_, m)| pred(m)) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such message; saw {:?}", self.ws_messages());
    }
}

impl Drop for FakeElevenLabs {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn key_ok(headers: &HeaderMap) -> bool {
    headers
        .get("xi-api-key")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| k == FAKE_KEY)
}

fn invalid_key() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})),
    )
        .into_response()
}

fn validation_error(field: &str, msg: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"detail": [{"loc": ["query", field], "msg": msg, "type": "value_error"}]})),
    )
        .into_response()
}

async fn multi_stream_input(
    State(state): State<Shared>,
    Path(voice): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let (script, down) = {
        let mut s = state.lock().expect("lock");
        s.ws_queries.push(query.clone());
        (s.ws.clone(), s.down)
    };
    if !key_ok(&headers) {
        return invalid_key();
    }
    if down {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"detail": {"status": "service_unavailable", "message": "down"}})),
        )
            .into_response();
    }
    if let Some(status) = script.handshake_status {
        let status = StatusCode::from_u16(status).expect("status");
        return (status, Json(json!({"detail": "scripted refusal"}))).into_response();
    }
    if voice != VOICE_ID {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "voice not found"})),
        )
            .into_response();
    }
    if query.get("output_format").map(String::as_str) != Some("ulaw_8000") {
        return validation_error("output_format", "expected ulaw_8000");
    }
    if query.get("model_id").is_none_or(|m| m.is_empty()) {
        return validation_error("model_id", "model_id required");
    }
    let connection = {
        let mut s = state.lock().expect("lock");
        s.connections += 1;
        s.connections
    };
    ws.on_upgrade(move |socket| serve_socket(socket, state, script, connection))
}

/// Something queued for a context.
enum Out {
    Audio(String),
    Final,
}

async fn serve_socket(mut socket: WebSocket, state: Shared, script: WsScript, connection: usize) {
    let mut queue: VecDeque<(String, Out)> = VecDeque::new();
    let mut sent_per_context: HashMap<String, usize> = HashMap::new();
    let mut sent_total = 0usize;
    let mut closed: Vec<String> = Vec::new();
    loop {
        // Send all that may go now.
        while let Some(index) = queue.iter().position(|(ctx, _)| {
            script.hold.is_none_or(|(held, n)| {
                held != ctx.as_str() || sent_per_context.get(ctx).copied().unwrap_or(0) < n
            })
        }) {
            let Some((ctx, out)) = queue.remove(index) else {
                break;
            };
            let frame = match out {
                Out::Audio(text) => {
                    if !script.delay.is_zero() {
                        tokio::time::sleep(script.delay).await;
                    }
                    let count = sent_per_context.entry(ctx.clone()).or_insert(0);
                    if *count == 0 && script.malformed {
                        let _ = socket.send(Message::Text("{not json".into())).await;
                        let bad =
                            json!({"audio": "@@not base64@@", "contextId": ctx, "isFinal": false});
                        let _ = socket.send(Message::Text(bad.to_string().into())).await;
                    }
                    *count += 1;
                    sent_total += 1;
                    audio_message(&ctx, &text, script.snake_case)
                }
                Out::Final => final_message(&ctx, script.snake_case),
            };
            if socket
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                return;
            }
            if script.disconnect_after.is_some_and(|n| sent_total >= n) {
                // Abrupt: no close frame.
                return;
            }
        }
        let message = match socket.recv().await {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => continue,
        };
        if state.lock().expect("lock").down {
            // Abrupt: no close frame.
            return;
        }
        let Ok(value) = serde_json::from_str::<Value>(&message) else {
            let _ = socket
                .send(Message::Text(
                    json!({"message": "invalid JSON", "error": "invalid_message"})
                        .to_string()
                        .into(),
                ))
                .await;
            continue;
        };
        state
            .lock()
            .expect("lock")
            .ws_messages
            .push((connection, value.clone()));
        if value.get("close_socket") == Some(&Value::Bool(true)) {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        let Some(ctx) = value
            .get("context_id")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            continue;
        };
        if value.get("close_context") == Some(&Value::Bool(true)) {
            let pending: Vec<String> = queue
                .iter()
                .filter_map(|(c, out)| match out {
                    Out::Audio(text) if *c == ctx => Some(text.clone()),
                    _ => None,
                })
                .collect();
            queue.retain(|(c, _)| *c != ctx);
            closed.push(ctx.clone());
            if let Some(late) = pending.first() {
                // The vendor may still deliver one chunk it had in flight.
                let frame = audio_message(&ctx, late, script.snake_case);
                state.lock().expect("lock").late_chunks += 1;
                if socket
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            continue;
        }
        if closed.contains(&ctx) {
            continue;
        }
        let text = value
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !text.trim().is_empty() {
            for piece in split(text, script.pieces) {
                queue.push_back((ctx.clone(), Out::Audio(piece)));
            }
        }
        if value.get("flush") == Some(&Value::Bool(true)) {
            queue.push_back((ctx.clone(), Out::Final));
        }
    }
}

/// `text` cut into at most `pieces` runs of characters.
fn split(text: &str, pieces: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(pieces.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn audio_message(ctx: &str, text: &str, snake_case: bool) -> Value {
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let starts: Vec<u64> = (0..chars.len() as u64).map(|i| i * 60).collect();
    let durations: Vec<u64> = vec![60; chars.len()];
    let audio = BASE64.encode(fake_audio(text));
    if snake_case {
        json!({
            "audio": audio,
            "is_final": false,
            "context_id": ctx,
            "alignment": {"chars": chars, "char_start_times_ms": starts, "chars_durations_ms": durations},
        })
    } else {
        let alignment =
            json!({"chars": chars, "charStartTimesMs": starts, "charsDurationsMs": durations});
        json!({
            "audio": audio,
            "isFinal": false,
            "contextId": ctx,
            "normalizedAlignment": alignment,
            "alignment": alignment,
        })
    }
}

fn final_message(ctx: &str, snake_case: bool) -> Value {
    if snake_case {
        json!({"is_final": true, "context_id": ctx})
    } else {
        json!({"audio": null, "isFinal": true, "contextId": ctx})
    }
}

async fn http_stream(
    State(state): State<Shared>,
    Path(voice): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !key_ok(&headers) {
        return invalid_key();
    }
    if query.get("output_format").map(String::as_str) != Some("ulaw_8000") {
        return validation_error("output_format", "expected ulaw_8000");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return validation_error("body", "invalid JSON");
    };
    let answer = {
        let mut s = state.lock().expect("lock");
        s.http_seen.push(HttpSeen {
            voice: voice.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if s.down {
            Some(HttpAnswer::Broken)
        } else {
            s.http.pop_front()
        }
    };
    let Some(text) = body
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"detail": [{"loc": ["body", "text"], "msg": "Field required", "type": "missing"}]})),
        )
            .into_response();
    };
    let audio = fake_audio(text);
    let drop_after = match answer {
        Some(HttpAnswer::Invalid(msg)) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"loc": ["body", "text"], "msg": msg, "type": "value_error"}]})),
            )
                .into_response()
        }
        Some(HttpAnswer::Busy(seconds)) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", seconds.to_string())],
                Json(json!({"detail": {"status": "too_many_concurrent_requests", "message": "busy"}})),
            )
                .into_response()
        }
        Some(HttpAnswer::Broken) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"detail": {"status": "internal_error", "message": "synthesis backend down"}})),
            )
                .into_response()
        }
        Some(HttpAnswer::DropAfter(n)) => Some(n.min(audio.len())),
        None => None,
    };
    // Three body pieces, a little apart, so the client must stream.
    let size = audio.len().div_ceil(3).max(1);
    let mut pieces: Vec<Result<Bytes, std::io::Error>> = match drop_after {
        None => audio
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect(),
        Some(n) => vec![
            Ok(Bytes::copy_from_slice(&audio[..n])),
            Err(std::io::Error::other("scripted drop")),
        ],
    };
    pieces.reverse();
    let body = stream::unfold(pieces, |mut pieces| async move {
        let next = pieces.pop()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((next, pieces))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "audio/basic")
        .body(Body::from_stream(body))
        .expect("response")
}
