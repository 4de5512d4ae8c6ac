//! The HTTP streaming client: one `POST /v1/text-to-speech/{voice}/stream`
//! per text chunk, strictly one after the other, each response body passed
//! on as audio as it arrives. [`HttpSynth`] is the engine (a queue of text
//! and at most one request in flight) that both [`ElevenLabsHttp`] and the
//! websocket client's fallback drive.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use reqwest::header::RETRY_AFTER;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;
use url::Url;

use super::{
    classify, endpoint_url, retry_after, wire_chunk, ElevenLabsConfig, HTTP_NAME, OUTPUT_FORMAT,
};
use crate::providers::roles::{ProviderError, TextToSpeech, TtsEvent, TtsInput, Voice};

/// Error bodies are read up to this many bytes.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// ElevenLabs over HTTP streaming (`elevenlabs-http`).
#[derive(Clone)]
pub struct ElevenLabsHttp {
    /// Shared settings.
    config: Arc<ElevenLabsConfig>,
    /// One connection pool for every call.
    client: reqwest::Client,
}

impl std::fmt::Debug for ElevenLabsHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsHttp")
            .field("http_base", &self.config.http_base.as_str())
            .finish_non_exhaustive()
    }
}

impl ElevenLabsHttp {
    /// A client with its own connection pool.
    pub fn new(config: ElevenLabsConfig) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| ProviderError::Unavailable {
                provider: HTTP_NAME,
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            config: Arc::new(config),
            client,
        })
    }

    /// The synthesis engine for one call with `voice`.
    pub(super) fn synth(&self, voice: &Voice) -> HttpSynth {
        HttpSynth::new(self.client.clone(), self.config.clone(), voice)
    }
}

impl TextToSpeech for ElevenLabsHttp {
    fn name(&self) -> &'static str {
        HTTP_NAME
    }

    fn run(
        &self,
        voice: Voice,
        mut input: mpsc::Receiver<TtsInput>,
        events: mpsc::Sender<TtsEvent>,
    ) -> BoxFuture<'static, ()> {
        let mut synth = self.synth(&voice);
        Box::pin(async move {
            loop {
                tokio::select! {
                    // Inputs first, so that a cancel stops a turn before
                    // more of its audio goes out.
                    biased;
                    next = input.recv() => match next {
                        None => break,
                        Some(TtsInput::Text { turn, text, last }) => synth.push(turn, &text, last),
                        Some(TtsInput::Cancel { turn }) => synth.cancel(turn),
                    },
                    event = synth.next_event() => {
                        if events.send(event).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// Text waiting to be synthesised.
#[derive(Debug)]
struct Piece {
    /// The agent turn.
    turn: u32,
    /// The text to post (`None`: only marks the end of the turn).
    text: Option<String>,
    /// The turn ends after this piece.
    last: bool,
}

/// The request being streamed.
struct InFlight {
    /// The agent turn.
    turn: u32,
    /// The turn ends after this request.
    last: bool,
    /// The response body, piece by piece; dropping it aborts the request.
    audio: BoxStream<'static, Result<Vec<u8>, ProviderError>>,
}

/// What the engine knows about a turn.
#[derive(Debug, Default)]
struct Tally {
    /// Characters of the turn's text (wire form, trailing spaces included).
    characters: usize,
}

/// One call's HTTP synthesis: text queued per turn, one request at a time,
/// in order. Cancelling a turn drops its queued text and aborts its request.
pub(super) struct HttpSynth {
    /// Shared connection pool.
    client: reqwest::Client,
    /// Shared settings.
    config: Arc<ElevenLabsConfig>,
    /// The stream endpoint for the call's voice (or why there is none).
    url: Result<Url, ProviderError>,
    /// `model_id` of every request.
    model: String,
    /// `voice_settings` of every request.
    settings: Option<Value>,
    /// Text not yet requested, in order.
    queue: VecDeque<Piece>,
    /// The request being streamed.
    in_flight: Option<InFlight>,
    /// Turns still being synthesised.
    turns: BTreeMap<u32, Tally>,
    /// Turns that are over (done, failed or cancelled): later text for
    /// them is ignored.
    finished: BTreeSet<u32>,
}

impl HttpSynth {
    fn new(client: reqwest::Client, config: Arc<ElevenLabsConfig>, voice: &Voice) -> Self {
        let url = endpoint_url(
            &config.http_base,
            &voice.voice_id,
            "stream",
            &[("output_format", OUTPUT_FORMAT.to_string())],
            HTTP_NAME,
        );
        Self {
            model: config.model_for(voice),
            settings: config.settings_for(voice),
            client,
            config,
            url,
            queue: VecDeque::new(),
            in_flight: None,
            turns: BTreeMap::new(),
            finished: BTreeSet::new(),
        }
    }

    /// Counts `characters` already synthesised elsewhere (by the websocket
    /// before it dropped) towards `turn`'s total.
    pub(super) fn add_characters(&mut self, turn: u32, characters: usize) {
        if !self.finished.contains(&turn) {
            self.turns.entry(turn).or_default().characters += characters;
        }
    }

    /// Queues `text` for `turn`; `last` ends the turn.
    pub(super) fn push(&mut self, turn: u32, text: &str, last: bool) {
        if self.finished.contains(&turn) {
            tracing::debug!(turn, "text for a finished turn ignored");
            return;
        }
        let tally = self.turns.entry(turn).or_default();
        let text = wire_chunk(text).map(|chunk| {
            tally.characters += chunk.chars().count();
            chunk.trim().to_string()
        });
        if text.is_some() || last {
            self.queue.push_back(Piece { turn, text, last });
        }
    }

    /// Stops `turn`: its queued text is dropped and its request aborted.
    pub(super) fn cancel(&mut self, turn: u32) {
        self.finished.insert(turn);
        self.turns.remove(&turn);
        self.queue.retain(|piece| piece.turn != turn);
        if self.in_flight.as_ref().is_some_and(|f| f.turn == turn) {
            self.in_flight = None;
        }
    }

    /// The next event; never resolves while there is nothing to do.
    /// Cancel-safe: all state lives in `self` between awaits.
    pub(super) async fn next_event(&mut self) -> TtsEvent {
        loop {
            let Some(flight) = self.in_flight.as_mut() else {
                let Some(piece) = self.queue.pop_front() else {
                    return std::future::pending().await;
                };
                match piece.text {
                    Some(text) => {
                        self.in_flight = Some(InFlight {
                            turn: piece.turn,
                            last: piece.last,
                            audio: self.request(text),
                        });
                        continue;
                    }
                    None if piece.last => return self.done(piece.turn),
                    None => continue,
                }
            };
            match flight.audio.next().await {
                Some(Ok(audio)) => {
                    return TtsEvent::Audio {
                        turn: flight.turn,
                        audio,
                        text_end: None,
                    }
                }
                Some(Err(error)) => {
                    let turn = flight.turn;
                    self.in_flight = None;
                    self.cancel(turn);
                    tracing::warn!(turn, error = %error, "speech synthesis failed");
                    return TtsEvent::Failed { turn, error };
                }
                None => {
                    let (turn, last) = (flight.turn, flight.last);
                    self.in_flight = None;
                    if last {
                        return self.done(turn);
                    }
                }
            }
        }
    }

    /// Closes `turn` and reports it done.
    fn done(&mut self, turn: u32) -> TtsEvent {
        let characters = self
            .turns
            .remove(&turn)
            .map(|t| t.characters.saturating_sub(1))
            .unwrap_or(0);
        self.finished.insert(turn);
        TtsEvent::Done { turn, characters }
    }

    /// The audio of `text`, streamed.
    fn request(&self, text: String) -> BoxStream<'static, Result<Vec<u8>, ProviderError>> {
        let url = match &self.url {
            Ok(url) => url.clone(),
            Err(error) => return stream::once(std::future::ready(Err(error.clone()))).boxed(),
        };
        let key = match self.config.key_header() {
            Ok(key) => key,
            Err(_) => {
                let error = ProviderError::Unavailable {
                    provider: HTTP_NAME,
                    message: "the API key is not a valid header value".into(),
                };
                return stream::once(std::future::ready(Err(error))).boxed();
            }
        };
        let mut body = json!({ "text": text, "model_id": self.model });
        if let Some(settings) = &self.settings {
            body["voice_settings"] = settings.clone();
        }
        let request = self
            .client
            .post(url)
            .header("xi-api-key", key)
            .header(reqwest::header::ACCEPT, "audio/basic")
            .json(&body);
        let limits = Limits {
            request: self.config.request_timeout,
            idle: self.config.stream_idle_timeout,
        };
        stream::unfold(Step::Send(request), move |step| async move {
            match step {
                Step::Send(request) => start(request, limits).await,
                Step::Body(response) => next_piece(response, limits).await,
                Step::End => None,
            }
        })
        .boxed()
    }
}

/// Timeouts of one request.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Until the response headers.
    request: std::time::Duration,
    /// Between two pieces of the body.
    idle: std::time::Duration,
}

/// Where a streamed request stands.
enum Step {
    /// Not sent yet.
    Send(reqwest::RequestBuilder),
    /// Streaming the body.
    Body(reqwest::Response),
    /// Finished (after an error).
    End,
}

type Next = Option<(Result<Vec<u8>, ProviderError>, Step)>;

/// Sends the request and yields the first piece of audio (or the error).
async fn start(request: reqwest::RequestBuilder, limits: Limits) -> Next {
    let response = match timeout(limits.request, request.send()).await {
        Err(_) => {
            let error = ProviderError::Timeout {
                provider: HTTP_NAME,
                budget: limits.request,
            };
            return Some((Err(error), Step::End));
        }
        Ok(Err(e)) => return Some((Err(network(&e, "cannot reach ElevenLabs")), Step::End)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let wait = retry_after(response.headers().get(RETRY_AFTER));
        let body = read_error_body(response, limits).await;
        let error = classify(HTTP_NAME, status.as_u16(), &body, wait);
        return Some((Err(error), Step::End));
    }
    next_piece(response, limits).await
}

/// The next non-empty piece of the body, `None` at its end.
async fn next_piece(mut response: reqwest::Response, limits: Limits) -> Next {
    loop {
        match timeout(limits.idle, response.chunk()).await {
            Err(_) => {
                let error = ProviderError::Timeout {
                    provider: HTTP_NAME,
                    budget: limits.idle,
                };
                return Some((Err(error), Step::End));
            }
            Ok(Err(e)) => {
                let error = network(&e, "the audio stream broke off");
                return Some((Err(error), Step::End));
            }
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(bytes))) if bytes.is_empty() => continue,
            Ok(Ok(Some(bytes))) => return Some((Ok(bytes.to_vec()), Step::Body(response))),
        }
    }
}

/// Up to [`MAX_ERROR_BODY`] bytes of an error answer's body.
async fn read_error_body(mut response: reqwest::Response, limits: Limits) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY {
        match timeout(limits.idle, response.chunk()).await {
            Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY);
    body
}

/// A network error with its causes (which never include headers).
fn network(error: &(dyn std::error::Error + 'static), what: &str) -> ProviderError {
    let mut message = what.to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    ProviderError::Network {
        provider: HTTP_NAME,
        message,
    }
}
