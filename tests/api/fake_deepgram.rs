//! A fake Deepgram live-transcription server on 127.0.0.1:0 that speaks
//! PROTOCOLS.md §6: `GET /v1/listen` upgraded to a websocket only with the
//! documented query and `Authorization: Token <key>` (HTTP 401 with
//! Deepgram's error body otherwise), binary audio recorded byte for byte,
//! every text control message recorded, `Metadata` and a close after
//! `CloseStream`. Scripted rules send `Results`, `SpeechStarted`,
//! `UtteranceEnd`, `Error`, malformed frames, drop the TCP connection, or
//! take the whole vendor down (later handshakes answered 503) when a
//! connection has received N audio bytes or its (n-th) `Finalize`.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The key the fake accepts.
pub const DEEPGRAM_KEY: &str = "dg-test-key-7c1f9e";

/// When a rule fires (once, on the first message that satisfies it).
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The connection has received at least this many audio bytes.
    AudioBytes(usize),
    /// A `{"type":"Finalize"}` arrived.
    Finalize,
    /// The connection's `n`-th `Finalize` (1-based) arrived: one rule per
    /// caller turn on a long-lived connection.
    NthFinalize(usize),
}

/// What the fake does when a rule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this JSON as a text frame.
    Send(Value),
    /// Send this text as is (malformed JSON, unknown types).
    SendRaw(String),
    /// Send a binary frame (Deepgram never does).
    SendBinary(Vec<u8>),
    /// Drop the TCP connection without a close handshake.
    Drop,
    /// The vendor goes down: this connection drops without a close
    /// handshake and every later handshake is answered 503.
    GoDown,
}

/// A scripted reaction.
#[derive(Debug, Clone)]
struct Rule {
    /// Websocket connection index it applies to (0 = first accepted);
    /// `None` = every connection.
    connection: Option<usize>,
    trigger: Trigger,
    actions: Vec<Action>,
}

/// One accepted websocket as the fake saw it.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Request path.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Binary audio received, in order.
    pub audio: Vec<u8>,
    /// Binary messages received.
    pub audio_messages: usize,
    /// Text messages received, in order.
    pub controls: Vec<String>,
    /// `Finalize` messages received.
    pub finalizes: usize,
    /// The connection is over (either side).
    pub ended: bool,
}

impl Connection {
    /// The `type` of each control message.
    pub fn control_types(&self) -> Vec<String> {
        self.controls
            .iter()
            .map(|c| {
                serde_json::from_str::<Value>(c)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("<bad: {c}>"))
            })
            .collect()
    }
}

/// Everything the fake has seen.
#[derive(Debug, Default)]
pub struct State {
    /// Upgrade requests received (accepted or refused).
    pub handshakes: usize,
    /// `Authorization` headers of those requests.
    pub authorizations: Vec<Option<String>>,
    /// Handshakes refused with 401.
    pub unauthorized: usize,
    /// Accepted websockets, in order.
    pub connections: Vec<Connection>,
    /// TCP connections waiting for [`FakeDeepgram::release`].
    pub held: usize,
    /// Statuses to answer the next handshakes with instead of upgrading.
    fail_handshakes: VecDeque<u16>,
    /// Hold the next TCP connection before its handshake.
    hold_next: bool,
    /// The vendor is down ([`Action::GoDown`]): handshakes get 503.
    down: bool,
    /// Each rule with the connections it already fired on.
    rules: Vec<(Rule, Vec<usize>)>,
}

impl State {
    /// Audio received on every connection, concatenated in order.
    pub fn all_audio(&self) -> Vec<u8> {
        self.connections
            .iter()
            .flat_map(|c| c.audio.clone())
            .collect()
    }
}

/// The running fake.
pub struct FakeDeepgram {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    release: Arc<Notify>,
    server: JoinHandle<()>,
}

impl Drop for FakeDeepgram {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeDeepgram {
    /// Starts the fake on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Deepgram");
        let addr = listener.local_addr().expect("fake Deepgram address");
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let server = tokio::spawn({
            let state = state.clone();
            let changed = changed.clone();
            let release = release.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    tokio::spawn(serve(tcp, state.clone(), changed.clone(), release.clone()));
                }
            }
        });
        Self {
            addr,
            state,
            changed,
            release,
            server,
        }
    }

    /// The base URL to configure the client with.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("ws://{}", self.addr)).expect("fake Deepgram URL")
    }

    /// Adds a rule for connection `connection` (`None`: every connection).
    pub fn on(&self, connection: Option<usize>, trigger: Trigger, actions: Vec<Action>) {
        let rule = Rule {
            connection,
            trigger,
            actions,
        };
        self.lock().rules.push((rule, Vec::new()));
    }

    /// The next handshakes are answered with these HTTP statuses.
    pub fn fail_handshakes(&self, statuses: &[u16]) {
        self.lock().fail_handshakes.extend(statuses);
    }

    /// The next TCP connection waits before its handshake until
    /// [`release`](Self::release).
    pub fn hold_next_connection(&self) {
        self.lock().hold_next = true;
    }

    /// Lets a held connection go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Reads the state.
    pub fn with<T>(&self, read: impl FnOnce(&State) -> T) -> T {
        read(&self.lock())
    }

    /// Waits until `condition` holds (10 s at most, then panics with `what`).
    pub async fn wait_until(&self, what: &str, condition: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if condition(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "fake Deepgram: timed out waiting for {what}: {:?}",
                    self.lock()
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake Deepgram state")
    }
}

/// The documented query (PROTOCOLS.md §6) with the client's defaults.
pub fn expected_query() -> BTreeMap<String, String> {
    [
        ("model", "nova-3"),
        ("encoding", "mulaw"),
        ("sample_rate", "8000"),
        ("channels", "1"),
        ("interim_results", "true"),
        ("endpointing", "300"),
        ("utterance_end_ms", "1000"),
        ("vad_events", "true"),
        ("smart_format", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn error_response(status: u16, body: Value) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(body.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

// tungstenite's handshake callback returns its `ErrorResponse` unboxed.
#[allow(clippy::result_large_err)]
async fn serve(
    tcp: TcpStream,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    release: Arc<Notify>,
) {
    let held = {
        let mut s = state.lock().expect("state");
        std::mem::take(&mut s.hold_next)
    };
    if held {
        state.lock().expect("state").held += 1;
        changed.notify_waiters();
        release.notified().await;
        state.lock().expect("state").held -= 1;
    }
    let accepted: Arc<Mutex<Option<Connection>>> = Arc::new(Mutex::new(None));
    let callback = {
        let state = state.clone();
        let accepted = accepted.clone();
        move |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            let mut s = state.lock().expect("state");
            s.handshakes += 1;
            let auth = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            s.authorizations.push(auth.clone());
            if s.down {
                return Err(error_response(
                    503,
                    json!({"err_code": "SERVICE_UNAVAILABLE", "err_msg": "service unavailable"}),
                ));
            }
            if let Some(status) = s.fail_handshakes.pop_front() {
                return Err(error_response(
                    status,
                    json!({"err_code": "SERVICE_UNAVAILABLE", "err_msg": "try again"}),
                ));
            }
            if auth.as_deref() != Some(format!("Token {DEEPGRAM_KEY}").as_str()) {
                s.unauthorized += 1;
                return Err(error_response(
                    401,
                    json!({
                        "err_code": "INVALID_AUTH",
                        "err_msg": "Invalid credentials.",
                        "request_id": "5b4e0f3a-0000-0000-0000-000000000000"
                    }),
                ));
            }
            let path = request.uri().path().to_string();
            let query: BTreeMap<String, String> = request
                .uri()
                .query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default();
            let expected = expected_query();
            let bad = path != "/v1/listen"
                || expected
                    .iter()
                    .any(|(k, v)| k != "model" && query.get(k) != Some(v))
                || !query.contains_key("model");
            if bad {
                return Err(error_response(
                    400,
                    json!({"err_code": "Bad Request", "err_msg": format!("bad listen request {path}?{query:?}")}),
                ));
            }
            *accepted.lock().expect("accepted") = Some(Connection {
                path,
                query,
                ..Connection::default()
            });
            Ok(response)
        }
    };
    let socket = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
    changed.notify_waiters();
    let Ok(socket) = socket else { return };
    let Some(connection) = accepted.lock().expect("accepted").take() else {
        return;
    };
    let index = {
        let mut s = state.lock().expect("state");
        s.connections.push(connection);
        s.connections.len() - 1
    };
    changed.notify_waiters();
    stream(socket, index, &state, &changed).await;
    if let Some(c) = state.lock().expect("state").connections.get_mut(index) {
        c.ended = true;
    }
    changed.notify_waiters();
}

/// Rules that fire now on connection `index`; marks them fired.
fn due(state: &Mutex<State>, index: usize, finalize: bool) -> Vec<Action> {
    let mut s = state.lock().expect("state");
    let received = s.connections.get(index).map_or(0, |c| c.audio.len());
    let finalizes = s.connections.get(index).map_or(0, |c| c.finalizes);
    let mut actions = Vec::new();
    for (rule, fired_on) in &mut s.rules {
        if fired_on.contains(&index) || rule.connection.is_some_and(|c| c != index) {
            continue;
        }
        let now = match rule.trigger {
            Trigger::AudioBytes(n) => received >= n,
            Trigger::Finalize => finalize,
            Trigger::NthFinalize(n) => finalize && finalizes == n,
        };
        if now {
            fired_on.push(index);
            actions.extend(rule.actions.clone());
        }
    }
    actions
}

/// Runs the actions; false once the connection was dropped.
async fn act(
    socket: &mut WebSocketStream<TcpStream>,
    state: &Mutex<State>,
    actions: Vec<Action>,
) -> bool {
    for action in actions {
        let sent = match action {
            Action::Send(value) => socket.send(Message::text(value.to_string())).await,
            Action::SendRaw(text) => socket.send(Message::text(text)).await,
            Action::SendBinary(bytes) => socket.send(Message::binary(bytes)).await,
            Action::Drop => return false,
            Action::GoDown => {
                state.lock().expect("state").down = true;
                return false;
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    true
}

async fn stream(
    mut socket: WebSocketStream<TcpStream>,
    index: usize,
    state: &Mutex<State>,
    changed: &Notify,
) {
    while let Some(Ok(message)) = socket.next().await {
        let mut finalize = false;
        let mut close_stream = false;
        match message {
            Message::Binary(bytes) => {
                let mut s = state.lock().expect("state");
                if let Some(c) = s.connections.get_mut(index) {
                    c.audio.extend_from_slice(&bytes);
                    c.audio_messages += 1;
                }
            }
            Message::Text(text) => {
                let kind = serde_json::from_str::<Value>(text.as_str())
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_string));
                finalize = kind.as_deref() == Some("Finalize");
                close_stream = kind.as_deref() == Some("CloseStream");
                let mut s = state.lock().expect("state");
                if let Some(c) = s.connections.get_mut(index) {
                    c.controls.push(text.as_str().to_string());
                    c.finalizes += usize::from(finalize);
                }
            }
            Message::Close(_) => break,
            _ => continue,
        }
        changed.notify_waiters();
        let actions = due(state, index, finalize);
        if !act(&mut socket, state, actions).await {
            return;
        }
        if close_stream {
            let metadata = json!({
                "type": "Metadata",
                "transaction_key": "deprecated",
                "request_id": "5b4e0f3a-0000-0000-0000-000000000000",
                "duration": 1.0,
                "channels": 1
            });
            let _ = socket.send(Message::text(metadata.to_string())).await;
            let _ = socket.close(None).await;
            return;
        }
    }
}

/// A `Results` message with one alternative.
pub fn results(transcript: &str, is_final: bool, speech_final: bool, from_finalize: bool) -> Value {
    json!({
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.0,
        "start": 0.0,
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [{
                "transcript": transcript,
                "confidence": 0.98,
                "words": transcript.split_whitespace().enumerate().map(|(i, w)| json!({
                    "word": w.to_lowercase(), "start": i as f64 * 0.3, "end": i as f64 * 0.3 + 0.25,
                    "confidence": 0.98, "punctuated_word": w
                })).collect::<Vec<_>>()
            }]
        },
        "metadata": {"request_id": "5b4e0f3a", "model_info": {"name": "nova-3"}}
    })
}

/// `SpeechStarted`.
pub fn speech_started() -> Value {
    json!({"type": "SpeechStarted", "channel": [0], "timestamp": 0.5})
}

/// `UtteranceEnd`.
pub fn utterance_end() -> Value {
    json!({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.395})
}

/// An in-stream `Error`.
pub fn error(description: &str) -> Value {
    json!({"type": "Error", "description": description, "message": "", "variant": "DATA-0000"})
}
