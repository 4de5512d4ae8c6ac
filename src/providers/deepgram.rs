//! Deepgram live speech-to-text ([`DeepgramStt`]): one websocket per call
//! to `/v1/listen`, caller audio streamed as binary mu-law frames, Deepgram's
//! `Results` / `UtteranceEnd` / `SpeechStarted` turned into [`SttEvent`]s.
//!
//! The wire facts are PROTOCOLS.md §6. What this client adds on top:
//! - **Batching without delay**: audio is sent as soon as it arrives; only
//!   frames already queued behind it are coalesced (at most
//!   [`DeepgramConfig::max_batch_frames`] per message).
//! - **KeepAlive** when no audio was sent for
//!   [`DeepgramConfig::keepalive_interval`] (Deepgram closes an idle socket
//!   after ~10 s), **Finalize** when our endpointer ends a non-short
//!   utterance, **CloseStream** when the call ends, then a short wait for
//!   the last results.
//! - **Reconnect**: a socket that drops mid-call (not after our
//!   CloseStream) is reopened with backoff while caller audio keeps being
//!   read and buffered (bounded by [`DeepgramConfig::max_buffered_audio`],
//!   oldest dropped first); the buffer goes out first on the new socket.
//!   Audio already written into the dead socket's kernel buffer before the
//!   drop was noticed cannot be recovered. [`SttEvent::Failed`] is reported
//!   only when reconnecting gives up, or at once for a refused key (401/403)
//!   or a rejected request (another 4xx), which no retry can fix.
//! - Unknown or malformed server frames are logged and skipped.
//!
//! All timing is `tokio::time`, so tests may pause the clock. The API key
//! only ever goes into the `Authorization` header; it is never logged and
//! never part of an error.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, RETRY_AFTER};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use super::roles::{endpoint_under, ProviderError, SpeechToText, SttEvent, SttInput};
use media::FRAME_SAMPLES;

/// The client's name in logs, metrics and errors.
pub const NAME: &str = "deepgram";

/// Deepgram's public websocket endpoint.
pub const DEFAULT_BASE_URL: &str = "wss://api.deepgram.com";

/// Vendor messages quoted in errors are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// How to reach Deepgram and how the live stream behaves.
#[derive(Debug, Clone)]
pub struct DeepgramConfig {
    /// Websocket base (`wss://api.deepgram.com`); the client appends
    /// `/v1/listen` to its path. Tests point it at a fake.
    pub base_url: Url,
    /// The Deepgram API key, sent as `Authorization: Token <key>`.
    pub api_key: SecretString,
    /// Deepgram model (`nova-3`).
    pub model: String,
    /// Silence (ms) after which Deepgram marks `speech_final`.
    pub endpointing_ms: u32,
    /// Word gap (ms) after which Deepgram sends `UtteranceEnd` (≥ 1000).
    pub utterance_end_ms: u32,
    /// A `KeepAlive` goes out when no audio was sent for this long
    /// (Deepgram wants one every 3–5 s of silence).
    pub keepalive_interval: Duration,
    /// Caller audio kept while the socket is down; older audio is dropped
    /// first once this much is buffered.
    pub max_buffered_audio: Duration,
    /// Most 20 ms frames coalesced into one binary message (5 = 100 ms).
    pub max_batch_frames: usize,
    /// Budget for one websocket handshake (TCP, TLS, HTTP upgrade).
    pub connect_timeout: Duration,
    /// Budget for one write to the socket; a stalled write counts as a
    /// dropped connection.
    pub send_timeout: Duration,
    /// After `CloseStream`, how long to wait for the last results.
    pub close_timeout: Duration,
    /// Consecutive failed connections (handshakes or drops) tolerated
    /// before the client gives up and reports [`SttEvent::Failed`].
    pub reconnect_attempts: u32,
    /// Delay before the second retry; doubles for each further one.
    pub reconnect_backoff: Duration,
    /// Longest delay between retries.
    pub max_reconnect_backoff: Duration,
    /// A connection that stayed up this long resets the failure count.
    pub stable_after: Duration,
}

impl DeepgramConfig {
    /// Deepgram's public endpoint with the defaults (nova-3, endpointing
    /// 300 ms, utterance end 1000 ms, KeepAlive every 4 s, 10 s of audio
    /// buffered across a reconnect).
    pub fn new(api_key: SecretString) -> Self {
        Self {
            base_url: Url::parse(DEFAULT_BASE_URL).expect("the default base URL is valid"),
            api_key,
            model: "nova-3".to_string(),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            keepalive_interval: Duration::from_secs(4),
            max_buffered_audio: Duration::from_secs(10),
            max_batch_frames: 5,
            connect_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(2),
            reconnect_attempts: 5,
            reconnect_backoff: Duration::from_millis(250),
            max_reconnect_backoff: Duration::from_secs(4),
            stable_after: Duration::from_secs(10),
        }
    }

    /// `base_url` with the listen path and the query string of
    /// PROTOCOLS.md §6.
    pub fn listen_url(&self) -> Result<Url, ProviderError> {
        let mut url = endpoint_under(NAME, &self.base_url, &["ws", "wss"], "/v1/listen")?;
        url.query_pairs_mut()
            .clear()
            .append_pair("model", &self.model)
            .append_pair("encoding", "mulaw")
            .append_pair("sample_rate", "8000")
            .append_pair("channels", "1")
            .append_pair("interim_results", "true")
            .append_pair("endpointing", &self.endpointing_ms.to_string())
            .append_pair("utterance_end_ms", &self.utterance_end_ms.to_string())
            .append_pair("vad_events", "true")
            .append_pair("smart_format", "true");
        Ok(url)
    }
}

/// Deepgram live transcription, one websocket per call.
#[derive(Debug, Clone)]
pub struct DeepgramStt {
    /// Shared by every call's actor.
    config: Arc<DeepgramConfig>,
    /// The listen URL, built and checked once.
    url: Url,
    /// `Token <key>`, marked sensitive so it is never printed.
    auth: HeaderValue,
}

impl DeepgramStt {
    /// Checks the configuration (ws/wss URL, a usable key) and builds the
    /// client. Nothing is connected until a call runs.
    pub fn new(config: DeepgramConfig) -> Result<Self, ProviderError> {
        let url = config.listen_url()?;
        let key = config.api_key.expose_secret();
        if key.trim().is_empty() {
            return Err(unavailable("no API key configured".to_string()));
        }
        let mut auth = HeaderValue::from_str(&format!("Token {key}"))
            .map_err(|_| unavailable("the API key is not a valid header value".to_string()))?;
        auth.set_sensitive(true);
        if config.max_batch_frames == 0 {
            return Err(unavailable(
                "max_batch_frames must be at least 1".to_string(),
            ));
        }
        Ok(Self {
            config: Arc::new(config),
            url,
            auth,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DeepgramConfig {
        &self.config
    }
}

impl SpeechToText for DeepgramStt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(
        &self,
        input: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<SttEvent>,
    ) -> BoxFuture<'static, ()> {
        let actor = CallStream::new(self.clone(), events);
        Box::pin(actor.run(input))
    }
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: NAME,
        message,
    }
}

fn network(message: String) -> ProviderError {
    ProviderError::Network {
        provider: NAME,
        message,
    }
}

fn truncate(text: &str) -> String {
    let trimmed = text.trim();
    match trimmed.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

// ------------------------------------------------------------ wire types

/// A server message, internally tagged on `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum ServerMessage {
    Results(ResultsMessage),
    UtteranceEnd(Ignored),
    SpeechStarted(Ignored),
    Metadata(Ignored),
    Error(ErrorMessage),
    #[serde(other)]
    Unknown,
}

/// Fields this client does not read.
#[derive(Debug, Deserialize)]
struct Ignored {}

/// The parts of `Results` that matter here; every field is optional so
/// that a lenient server cannot make a transcript unreadable.
#[derive(Debug, Default, Deserialize)]
struct ResultsMessage {
    is_final: Option<bool>,
    speech_final: Option<bool>,
    from_finalize: Option<bool>,
    channel: Option<ResultsChannel>,
}

#[derive(Debug, Default, Deserialize)]
struct ResultsChannel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Default, Deserialize)]
struct Alternative {
    transcript: Option<String>,
}

/// `{"type":"Error","description":…}` (older servers: `message`).
#[derive(Debug, Default, Deserialize)]
struct ErrorMessage {
    description: Option<String>,
    message: Option<String>,
    variant: Option<String>,
}

/// Deepgram's HTTP error body at the handshake.
#[derive(Debug, Default, Deserialize)]
struct HttpErrorBody {
    err_msg: Option<String>,
    err_code: Option<String>,
}

const KEEPALIVE: &str = r#"{"type":"KeepAlive"}"#;
const FINALIZE: &str = r#"{"type":"Finalize"}"#;
const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

// ------------------------------------------------------------ transcript

/// Turns `Results` and `UtteranceEnd` into events: `is_final` segments
/// accumulate until `speech_final` (or a `from_finalize` result) ends the
/// turn; `UtteranceEnd` flushes what is still pending, once.
#[derive(Debug, Default)]
struct Transcript {
    /// Final segments of the current turn, space-joined.
    finals: String,
}

impl Transcript {
    fn with_finals(&self, text: &str) -> String {
        if self.finals.is_empty() {
            text.to_string()
        } else if text.is_empty() {
            self.finals.clone()
        } else {
            format!("{} {}", self.finals, text)
        }
    }

    fn on_results(&mut self, results: &ResultsMessage) -> Option<SttEvent> {
        let text = results
            .channel
            .as_ref()
            .and_then(|c| c.alternatives.first())
            .and_then(|a| a.transcript.as_deref())
            .unwrap_or("")
            .trim();
        let from_finalize = results.from_finalize.unwrap_or(false);
        let is_final = results.is_final.unwrap_or(false) || from_finalize;
        if !is_final {
            if text.is_empty() {
                return None;
            }
            return Some(SttEvent::Interim {
                text: self.with_finals(text),
            });
        }
        if !text.is_empty() {
            self.finals = self.with_finals(text);
        }
        if results.speech_final.unwrap_or(false) || from_finalize {
            return self.flush();
        }
        // Stable words, turn still open: show them as the current guess.
        (!text.is_empty()).then(|| SttEvent::Interim {
            text: self.finals.clone(),
        })
    }

    fn on_utterance_end(&mut self) -> SttEvent {
        self.flush().unwrap_or(SttEvent::UtteranceEnd)
    }

    /// The pending words as the end of the turn, if there are any.
    fn flush(&mut self) -> Option<SttEvent> {
        if self.finals.is_empty() {
            return None;
        }
        Some(SttEvent::Final {
            text: std::mem::take(&mut self.finals),
            end_of_turn: true,
        })
    }
}

// ------------------------------------------------------------ audio backlog

/// Caller audio not yet written to a socket: the batch being built, or
/// everything heard while the socket was down. Bounded; the oldest audio
/// goes first when it overflows.
#[derive(Debug)]
struct Backlog {
    bytes: VecDeque<u8>,
    capacity: usize,
    dropped: u64,
}

impl Backlog {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: VecDeque::new(),
            capacity: capacity.max(FRAME_SAMPLES),
            dropped: 0,
        }
    }

    fn push(&mut self, frame: &[u8]) {
        self.bytes.extend(frame);
        let excess = self.bytes.len().saturating_sub(self.capacity);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A copy of the first `max` bytes (removed only once sent).
    fn peek(&self, max: usize) -> Vec<u8> {
        self.bytes.iter().take(max).copied().collect()
    }

    fn consume(&mut self, count: usize) {
        let count = count.min(self.bytes.len());
        self.bytes.drain(..count);
    }

    /// Bytes dropped since the last call.
    fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }
}

// ------------------------------------------------------------ the actor

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The events receiver is gone: nobody listens, stop transcribing.
struct EventsClosed;

/// How a connected stretch ended.
enum Connected {
    /// The call ended (input closed); the socket is still open.
    InputClosed,
    /// The socket dropped; reconnect.
    Dropped(ProviderError),
}

/// How a connecting stretch ended.
enum Connecting {
    Up(Box<Socket>),
    InputClosed,
    GaveUp(ProviderError),
}

/// A handshake failure and whether another try may help.
struct ConnectFailure {
    error: ProviderError,
    fatal: bool,
    retry_after: Option<Duration>,
}

/// One call's transcription.
struct CallStream {
    client: DeepgramStt,
    events: mpsc::Sender<SttEvent>,
    transcript: Transcript,
    backlog: Backlog,
    /// Our endpointer asked for a Finalize while the socket was down.
    finalize_pending: bool,
    /// Consecutive failed handshakes and unstable connections.
    failures: u32,
}

impl CallStream {
    fn new(client: DeepgramStt, events: mpsc::Sender<SttEvent>) -> Self {
        let capacity = media::frame::ms_to_samples(
            u64::try_from(client.config.max_buffered_audio.as_millis()).unwrap_or(u64::MAX),
        );
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            client,
            events,
            transcript: Transcript::default(),
            backlog: Backlog::new(capacity),
            finalize_pending: false,
            failures: 0,
        }
    }

    fn config(&self) -> &DeepgramConfig {
        &self.client.config
    }

    async fn run(mut self, mut input: mpsc::Receiver<SttInput>) {
        if self.stream(&mut input).await.is_err() {
            tracing::debug!(provider = NAME, "STT events receiver closed; stream ended");
        }
    }

    async fn stream(&mut self, input: &mut mpsc::Receiver<SttInput>) -> Result<(), EventsClosed> {
        loop {
            let mut socket = match self.connect(input).await {
                Connecting::Up(socket) => socket,
                Connecting::InputClosed => return Ok(()),
                Connecting::GaveUp(error) => {
                    tracing::warn!(provider = NAME, error = %error, "giving up on the STT stream");
                    self.emit(SttEvent::Failed(error)).await?;
                    // The call goes on without us: keep the channel open so
                    // the pipeline's sends never fail, and drop the audio.
                    while input.recv().await.is_some() {}
                    return Ok(());
                }
            };
            let connected_at = Instant::now();
            match self.serve(&mut socket, input).await? {
                Connected::InputClosed => {
                    self.close(&mut socket).await?;
                    return Ok(());
                }
                Connected::Dropped(error) => {
                    if connected_at.elapsed() >= self.config().stable_after {
                        self.failures = 0;
                    }
                    self.failures += 1;
                    tracing::warn!(
                        provider = NAME,
                        error = %error,
                        failures = self.failures,
                        "STT socket dropped mid-call; reconnecting"
                    );
                    if self.failures > self.config().reconnect_attempts {
                        self.emit(SttEvent::Failed(error)).await?;
                        while input.recv().await.is_some() {}
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn emit(&self, event: SttEvent) -> Result<(), EventsClosed> {
        self.events.send(event).await.map_err(|_| EventsClosed)
    }

    /// Delay before the next handshake after `failures` failures: none for
    /// the first try and the first retry, then exponential.
    fn backoff(&self) -> Duration {
        let config = self.config();
        if self.failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (self.failures - 2).min(16);
        config
            .reconnect_backoff
            .saturating_mul(1 << doublings)
            .min(config.max_reconnect_backoff)
    }

    /// Opens the socket, retrying with backoff, while reading (and
    /// buffering) caller audio so that nothing queues up in front of us.
    async fn connect(&mut self, input: &mut mpsc::Receiver<SttInput>) -> Connecting {
        let mut delay = self.backoff();
        loop {
            let attempt = handshake(self.client.clone(), delay);
            tokio::pin!(attempt);
            let failure = loop {
                tokio::select! {
                    result = &mut attempt => match result {
                        Ok(socket) => return Connecting::Up(socket),
                        Err(failure) => break failure,
                    },
                    item = input.recv() => match item {
                        Some(SttInput::Audio { frame, .. }) => self.buffer(&frame),
                        Some(SttInput::UtteranceEnded { is_short, .. }) => {
                            if !is_short {
                                self.finalize_pending = true;
                            }
                        }
                        // Deepgram endpoints on its own.
                        Some(SttInput::Paused { .. }) => {}
                        None => return Connecting::InputClosed,
                    },
                }
            };
            if failure.fatal {
                return Connecting::GaveUp(failure.error);
            }
            self.failures += 1;
            tracing::warn!(
                provider = NAME,
                error = %failure.error,
                failures = self.failures,
                "STT handshake failed"
            );
            if self.failures > self.config().reconnect_attempts {
                return Connecting::GaveUp(failure.error);
            }
            delay = self.backoff().max(
                failure
                    .retry_after
                    .unwrap_or_default()
                    .min(self.config().max_reconnect_backoff),
            );
        }
    }

    fn buffer(&mut self, frame: &[u8]) {
        self.backlog.push(frame);
        let dropped = self.backlog.take_dropped();
        if dropped > 0 {
            tracing::warn!(
                provider = NAME,
                dropped_bytes = dropped,
                "STT reconnect buffer full; oldest caller audio dropped"
            );
        }
    }

    /// Streams on a connected socket until the call ends or it drops.
    async fn serve(
        &mut self,
        socket: &mut Socket,
        input: &mut mpsc::Receiver<SttInput>,
    ) -> Result<Connected, EventsClosed> {
        let keepalive = self.config().keepalive_interval;
        let mut keepalive_at = Instant::now() + keepalive;
        // What was buffered during the outage goes first.
        if !self.backlog.is_empty() {
            if let Err(error) = self.send_backlog(socket).await {
                return Ok(Connected::Dropped(error));
            }
            keepalive_at = Instant::now() + keepalive;
        }
        if std::mem::take(&mut self.finalize_pending) {
            if let Err(error) = self.send_text(socket, FINALIZE).await {
                self.finalize_pending = true;
                return Ok(Connected::Dropped(error));
            }
        }
        let mut deferred: Option<SttInput> = None;
        loop {
            let item = match deferred.take() {
                Some(item) => Some(Some(item)),
                None => tokio::select! {
                    message = socket.next() => {
                        if let Some(dropped) = self.on_server_frame(message).await? {
                            return Ok(Connected::Dropped(dropped));
                        }
                        None
                    }
                    item = input.recv() => Some(item),
                    () = sleep_until(keepalive_at) => {
                        if let Err(error) = self.send_text(socket, KEEPALIVE).await {
                            return Ok(Connected::Dropped(error));
                        }
                        keepalive_at = Instant::now() + keepalive;
                        None
                    }
                },
            };
            let Some(item) = item else { continue };
            match item {
                None => return Ok(Connected::InputClosed),
                Some(SttInput::Audio { frame, .. }) => {
                    self.buffer(&frame);
                    // Coalesce frames already queued behind this one.
                    while self.backlog.len() < self.batch_bytes() {
                        match input.try_recv() {
                            Ok(SttInput::Audio { frame, .. }) => self.buffer(&frame),
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = self.send_backlog(socket).await {
                        if let Some(SttInput::UtteranceEnded {
                            is_short: false, ..
                        }) = deferred
                        {
                            self.finalize_pending = true;
                        }
                        return Ok(Connected::Dropped(error));
                    }
                    keepalive_at = Instant::now() + keepalive;
                }
                Some(SttInput::Paused { .. }) => {}
                Some(SttInput::UtteranceEnded { is_short, .. }) => {
                    if !is_short {
                        if let Err(error) = self.send_text(socket, FINALIZE).await {
                            self.finalize_pending = true;
                            return Ok(Connected::Dropped(error));
                        }
                    }
                }
            }
        }
    }

    fn batch_bytes(&self) -> usize {
        self.config().max_batch_frames.saturating_mul(FRAME_SAMPLES)
    }

    /// Writes the backlog in batch-sized binary messages; what fails to go
    /// out stays in the backlog for the next socket.
    async fn send_backlog(&mut self, socket: &mut Socket) -> Result<(), ProviderError> {
        while !self.backlog.is_empty() {
            let chunk = self.backlog.peek(self.batch_bytes());
            let sent = chunk.len();
            self.send(socket, Message::binary(chunk)).await?;
            self.backlog.consume(sent);
        }
        Ok(())
    }

    async fn send_text(
        &self,
        socket: &mut Socket,
        text: &'static str,
    ) -> Result<(), ProviderError> {
        self.send(socket, Message::text(text)).await
    }

    async fn send(&self, socket: &mut Socket, message: Message) -> Result<(), ProviderError> {
        match timeout(self.config().send_timeout, socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(network(format!("write failed: {error}"))),
            Err(_) => Err(ProviderError::Timeout {
                provider: NAME,
                budget: self.config().send_timeout,
            }),
        }
    }

    /// Handles one frame from the server; `Some(error)` when the socket is
    /// gone.
    async fn on_server_frame(
        &mut self,
        message: Option<Result<Message, WsError>>,
    ) -> Result<Option<ProviderError>, EventsClosed> {
        match message {
            None => Ok(Some(network(
                "the server closed the connection".to_string(),
            ))),
            Some(Err(error)) => Ok(Some(network(format!("read failed: {error}")))),
            Some(Ok(Message::Close(frame))) => {
                let detail = frame
                    .map(|f| {
                        format!(
                            " (code {}: {})",
                            u16::from(f.code),
                            truncate(f.reason.as_str())
                        )
                    })
                    .unwrap_or_default();
                Ok(Some(network(format!(
                    "the server closed the stream{detail}"
                ))))
            }
            Some(Ok(Message::Text(text))) => {
                self.on_server_text(text.as_str()).await?;
                Ok(None)
            }
            Some(Ok(Message::Binary(bytes))) => {
                tracing::debug!(
                    provider = NAME,
                    len = bytes.len(),
                    "unexpected binary frame skipped"
                );
                Ok(None)
            }
            Some(Ok(_)) => Ok(None),
        }
    }

    /// Handles a text frame; returns whether it was `Metadata` (the last
    /// message after CloseStream).
    async fn on_server_text(&mut self, text: &str) -> Result<bool, EventsClosed> {
        let message = match serde_json::from_str::<ServerMessage>(text) {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(provider = NAME, error = %error, len = text.len(), "malformed server message skipped");
                return Ok(false);
            }
        };
        match message {
            ServerMessage::Results(results) => {
                if let Some(event) = self.transcript.on_results(&results) {
                    self.emit(event).await?;
                }
            }
            ServerMessage::UtteranceEnd(_) => {
                let event = self.transcript.on_utterance_end();
                self.emit(event).await?;
            }
            ServerMessage::SpeechStarted(_) => self.emit(SttEvent::SpeechStarted).await?,
            ServerMessage::Metadata(_) => return Ok(true),
            ServerMessage::Error(error) => {
                let message = error
                    .description
                    .or(error.message)
                    .or(error.variant)
                    .unwrap_or_else(|| "unspecified error".to_string());
                tracing::warn!(provider = NAME, message = %truncate(&message), "server reported an error");
                // Sent over the socket, not HTTP: there is no status code.
                self.emit(SttEvent::Failed(ProviderError::Server {
                    provider: NAME,
                    status: 0,
                    message: truncate(&message),
                }))
                .await?;
            }
            ServerMessage::Unknown => {
                tracing::debug!(provider = NAME, "unknown server message type skipped");
            }
        }
        Ok(false)
    }

    /// Ends the stream: CloseStream, the last results until Metadata or
    /// the server's close (bounded), then our close.
    async fn close(&mut self, socket: &mut Socket) -> Result<(), EventsClosed> {
        let budget = self.config().close_timeout;
        let drained = async {
            if !self.backlog.is_empty() && self.send_backlog(socket).await.is_err() {
                return Ok::<(), EventsClosed>(());
            }
            if self.send_text(socket, CLOSE_STREAM).await.is_err() {
                return Ok(());
            }
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if self.on_server_text(text.as_str()).await? {
                            return Ok(());
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ok(()),
                    Some(Ok(_)) => {}
                }
            }
        };
        let result = timeout(budget, drained).await;
        if result.is_err() {
            tracing::debug!(
                provider = NAME,
                "no Metadata after CloseStream within the budget"
            );
        }
        let _ = timeout(budget, socket.close(None)).await;
        if let Ok(Err(closed)) = result {
            return Err(closed);
        }
        if let Some(event) = self.transcript.flush() {
            self.emit(event).await?;
        }
        Ok(())
    }
}

/// One handshake after `delay`.
async fn handshake(client: DeepgramStt, delay: Duration) -> Result<Box<Socket>, ConnectFailure> {
    if !delay.is_zero() {
        sleep(delay).await;
    }
    let config = &client.config;
    let mut request =
        client
            .url
            .as_str()
            .into_client_request()
            .map_err(|error| ConnectFailure {
                error: unavailable(format!("bad listen URL: {error}")),
                fatal: true,
                retry_after: None,
            })?;
    request
        .headers_mut()
        .insert(AUTHORIZATION, client.auth.clone());
    let connecting = tokio_tungstenite::connect_async_with_config(request, None, true);
    match timeout(config.connect_timeout, connecting).await {
        Ok(Ok((socket, _response))) => Ok(Box::new(socket)),
        Ok(Err(error)) => Err(classify_handshake(error)),
        Err(_) => Err(ConnectFailure {
            error: ProviderError::Timeout {
                provider: NAME,
                budget: config.connect_timeout,
            },
            fatal: false,
            retry_after: None,
        }),
    }
}

/// Maps a failed handshake to a provider error; 401/403 and other 4xx are
/// fatal, 429 and 5xx and network failures are worth another try.
fn classify_handshake(error: WsError) -> ConnectFailure {
    let WsError::Http(response) = error else {
        return ConnectFailure {
            error: network(format!("handshake failed: {error}")),
            fatal: false,
            retry_after: None,
        };
    };
    let status = response.status().as_u16();
    let body = response.body().as_deref().unwrap_or_default();
    let parsed: HttpErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let message = parsed
        .err_msg
        .or(parsed.err_code)
        .map(|m| truncate(&m))
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            (!text.trim().is_empty()).then(|| truncate(&text))
        })
        .unwrap_or_else(|| {
            response
                .status()
                .canonical_reason()
                .unwrap_or("no message")
                .to_string()
        });
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (error, fatal) = match status {
        401 | 403 => (
            ProviderError::Unauthorized {
                provider: NAME,
                message,
            },
            true,
        ),
        429 => (
            ProviderError::RateLimited {
                provider: NAME,
                retry_after,
            },
            false,
        ),
        500..=599 => (
            ProviderError::Server {
                provider: NAME,
                status,
                message,
            },
            false,
        ),
        _ => (
            ProviderError::Rejected {
                provider: NAME,
                status,
                message,
            },
            true,
        ),
    };
    ConnectFailure {
        error,
        fatal,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(json: &str) -> ResultsMessage {
        match serde_json::from_str::<ServerMessage>(json) {
            Ok(ServerMessage::Results(r)) => r,
            other => panic!("not Results: {other:?}"),
        }
    }

    fn segment(text: &str, is_final: bool, speech_final: bool) -> ResultsMessage {
        results(&format!(
            r#"{{"type":"Results","is_final":{is_final},"speech_final":{speech_final},
               "channel":{{"alternatives":[{{"transcript":"{text}","confidence":0.9,"words":[]}}]}}}}"#
        ))
    }

    #[test]
    fn the_listen_url_carries_the_documented_query() {
        let config = DeepgramConfig::new(SecretString::from("k"));
        let url = config.listen_url().expect("url");
        assert_eq!(
            url.as_str(),
            "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000\
             &channels=1&interim_results=true&endpointing=300&utterance_end_ms=1000\
             &vad_events=true&smart_format=true"
        );
        let mut http = config.clone();
        http.base_url = Url::parse("https://api.deepgram.com").expect("url");
        assert!(matches!(
            http.listen_url(),
            Err(ProviderError::Unavailable { .. })
        ));
    }

    #[test]
    fn finals_accumulate_until_speech_final() {
        let mut t = Transcript::default();
        assert_eq!(
            t.on_results(&segment("hello", false, false)),
            Some(SttEvent::Interim {
                text: "hello".into()
            })
        );
        assert_eq!(
            t.on_results(&segment("hello there", true, false)),
            Some(SttEvent::Interim {
                text: "hello there".into()
            })
        );
        assert_eq!(
            t.on_results(&segment("I need", false, false)),
            Some(SttEvent::Interim {
                text: "hello there I need".into()
            })
        );
        assert_eq!(t.on_results(&segment("", false, false)), None);
        assert_eq!(
            t.on_results(&segment("I need a plumber", true, true)),
            Some(SttEvent::Final {
                text: "hello there I need a plumber".into(),
                end_of_turn: true
            })
        );
        // Flushed: the UtteranceEnd that follows adds no second Final.
        assert_eq!(t.on_utterance_end(), SttEvent::UtteranceEnd);
    }

    #[test]
    fn utterance_end_flushes_pending_finals_once() {
        let mut t = Transcript::default();
        t.on_results(&segment("book a table", true, false));
        assert_eq!(
            t.on_utterance_end(),
            SttEvent::Final {
                text: "book a table".into(),
                end_of_turn: true
            }
        );
        assert_eq!(t.on_utterance_end(), SttEvent::UtteranceEnd);
    }

    #[test]
    fn an_empty_speech_final_flushes_what_is_pending() {
        let mut t = Transcript::default();
        t.on_results(&segment("yes", true, false));
        assert_eq!(
            t.on_results(&segment("", true, true)),
            Some(SttEvent::Final {
                text: "yes".into(),
                end_of_turn: true
            })
        );
        assert_eq!(t.on_results(&segment("", true, true)), None);
    }

    #[test]
    fn from_finalize_ends_the_turn() {
        let mut t = Transcript::default();
        let r = results(
            r#"{"type":"Results","is_final":true,"speech_final":false,"from_finalize":true,
                "channel":{"alternatives":[{"transcript":"thanks"}]}}"#,
        );
        assert_eq!(
            t.on_results(&r),
            Some(SttEvent::Final {
                text: "thanks".into(),
                end_of_turn: true
            })
        );
    }

    #[test]
    fn lenient_and_unknown_messages_parse() {
        let r = results(r#"{"type":"Results","is_final":null}"#);
        assert_eq!(Transcript::default().on_results(&r), None);
        assert!(matches!(
            serde_json::from_str::<ServerMessage>(r#"{"type":"Whatever","x":1}"#),
            Ok(ServerMessage::Unknown)
        ));
        assert!(matches!(
            serde_json::from_str::<ServerMessage>(
                r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.395}"#
            ),
            Ok(ServerMessage::UtteranceEnd(_))
        ));
    }

    #[test]
    fn the_backlog_drops_the_oldest_audio_when_full() {
        let mut b = Backlog::new(320);
        b.push(&[1; 160]);
        b.push(&[2; 160]);
        b.push(&[3; 160]);
        assert_eq!(b.len(), 320);
        assert_eq!(b.take_dropped(), 160);
        assert_eq!(b.peek(1), vec![2]);
        b.consume(160);
        assert_eq!(b.peek(400), vec![3; 160]);
    }

    #[test]
    fn a_config_debug_hides_the_key() {
        let config = DeepgramConfig::new(SecretString::from("dg-secret-key"));
        let client = DeepgramStt::new(config).expect("client");
        assert!(!format!("{client:?}").contains("dg-secret-key"));
    }
}
