//! Whisper speech-to-text per utterance ([`WhisperStt`]) through the
//! OpenAI-compatible transcription endpoint that self-hosted Whisper servers
//! expose: `POST {base}/audio/transcriptions`, multipart (PROTOCOLS.md §7).
//!
//! Whisper does not stream, so this client relies on our own endpointer:
//! it keeps the caller's frames since the previous utterance end (capped at
//! [`WhisperConfig::max_utterance`], oldest dropped), and when an
//! utterance ends it cuts everything before the end's stream time, decodes
//! it to 8 kHz 16-bit PCM, trims leading silence to
//! [`WhisperConfig::pre_roll`] before the first frame loud enough to be
//! speech, wraps it as WAV (raw mu-law is not accepted) and posts it.
//! Each request runs in its own task so that input keeps being read; the
//! results are reported in utterance order.
//!
//! The request is plain `reqwest` multipart rather than async-openai:
//! async-openai turns an HTTP error into its own `ApiError` without the
//! status code or `Retry-After`, and retries 429s on its own with backoff,
//! which would hide rate limits from the call's fault policy and delay the
//! turn; it would also add a large dependency tree for one form post.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use media::frame::{SampleTime, UlawFrame};
use media::g711::ulaw_to_linear;
use media::vad::level_dbfs;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

use super::roles::{endpoint_under, ProviderError, SpeechToText, SttEvent, SttInput};

/// The client's name in logs, metrics and errors.
pub const NAME: &str = "whisper";

/// Error bodies are read up to this many bytes.
const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// Vendor messages quoted in errors are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Where the Whisper server is and what to ask it.
#[derive(Debug, Clone)]
pub struct WhisperConfig {
    /// API base including the version (`http://127.0.0.1:8000/v1`); the
    /// client posts to `{base_url}/audio/transcriptions`.
    pub base_url: Url,
    /// Bearer token, when the server wants one.
    pub api_key: Option<SecretString>,
    /// Model name (`whisper-1`; self-hosted servers use their own names).
    pub model: String,
    /// ISO-639-1 language hint (`en`), or let the server detect it.
    pub language: Option<String>,
    /// Budget for one transcription request, body included.
    pub request_timeout: Duration,
    /// Longest utterance sent; older audio is dropped first.
    pub max_utterance: Duration,
    /// Audio kept before the first frame loud enough to be speech; longer
    /// leading silence is cut (Whisper invents words in long silence).
    pub pre_roll: Duration,
    /// Frames at least this loud (dBFS) may be speech; quieter ones are
    /// line noise. An utterance with no such frame is sent whole.
    pub speech_level_dbfs: f32,
}

impl WhisperConfig {
    /// A server at `base_url` with the defaults: no key, `whisper-1`, no
    /// language hint, 15 s per request, utterances up to 30 s with 300 ms
    /// of pre-roll before the first frame above −50 dBFS.
    pub fn new(base_url: Url) -> Self {
        Self {
            base_url,
            api_key: None,
            model: "whisper-1".to_string(),
            language: None,
            request_timeout: Duration::from_secs(15),
            max_utterance: Duration::from_secs(30),
            pre_roll: Duration::from_millis(300),
            speech_level_dbfs: -50.0,
        }
    }

    /// The transcription endpoint.
    pub fn endpoint(&self) -> Result<Url, ProviderError> {
        endpoint_under(
            NAME,
            &self.base_url,
            &["http", "https"],
            "/audio/transcriptions",
        )
    }
}

/// Whisper transcription of each utterance our endpointer cuts.
#[derive(Debug, Clone)]
pub struct WhisperStt {
    /// Shared by every call's actor.
    config: Arc<WhisperConfig>,
    /// `{base}/audio/transcriptions`, built once.
    endpoint: Url,
    /// Connection pool shared by every call.
    http: reqwest::Client,
}

impl WhisperStt {
    /// Checks the configuration and builds the client (no request is made).
    pub fn new(config: WhisperConfig) -> Result<Self, ProviderError> {
        let endpoint = config.endpoint()?;
        if config.model.trim().is_empty() {
            return Err(unavailable("no model configured".to_string()));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|error| unavailable(format!("HTTP client: {error}")))?;
        Ok(Self {
            config: Arc::new(config),
            endpoint,
            http,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// Transcribes one WAV file; the text as the server gave it.
    pub async fn transcribe_wav(&self, wav: Vec<u8>) -> Result<String, ProviderError> {
        let budget = self.config.request_timeout;
        match tokio::time::timeout(budget, self.post(wav)).await {
            Ok(result) => result,
            Err(_) => Err(ProviderError::Timeout {
                provider: NAME,
                budget,
            }),
        }
    }

    async fn post(&self, wav: Vec<u8>) -> Result<String, ProviderError> {
        let file = Part::bytes(wav)
            .file_name("utterance.wav")
            .mime_str("audio/wav")
            .map_err(|error| unavailable(format!("multipart: {error}")))?;
        let mut form = Form::new()
            .part("file", file)
            .text("model", self.config.model.clone())
            .text("response_format", "json");
        if let Some(language) = &self.config.language {
            form = form.text("language", language.clone());
        }
        let mut request = self.http.post(self.endpoint.clone()).multipart(form);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        if status.is_success() {
            let is_plain = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/plain"));
            let body = response.bytes().await.map_err(request_error)?;
            return parse_transcript(&body, is_plain);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_capped(response).await;
        Err(classify(status.as_u16(), &body, retry_after))
    }
}

impl SpeechToText for WhisperStt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn run(
        &self,
        input: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<SttEvent>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(run_call(self.clone(), input, events))
    }
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable {
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

fn request_error(error: reqwest::Error) -> ProviderError {
    ProviderError::Network {
        provider: NAME,
        message: error.to_string(),
    }
}

/// `{"text": "…"}`; a server that answers `text/plain` anyway is taken at
/// its word.
fn parse_transcript(body: &[u8], is_plain: bool) -> Result<String, ProviderError> {
    #[derive(Deserialize)]
    struct Transcription {
        text: Option<String>,
    }
    match serde_json::from_slice::<Transcription>(body) {
        Ok(Transcription { text: Some(text) }) => Ok(text.trim().to_string()),
        Ok(Transcription { text: None }) => Err(ProviderError::Protocol {
            provider: NAME,
            message: "transcription JSON without `text`".to_string(),
        }),
        Err(_) if is_plain => Ok(String::from_utf8_lossy(body).trim().to_string()),
        Err(error) => Err(ProviderError::Protocol {
            provider: NAME,
            message: format!("transcription is not JSON: {error}"),
        }),
    }
}

async fn read_capped(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    body
}

/// The server's words from an error body: OpenAI's
/// `{"error":{"message"}}`, a bare `{"error":"…"}`, FastAPI's
/// `{"detail":…}`, or the text itself.
fn error_message(status: u16, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = json.as_ref().and_then(|v| {
        let error = v.get("error");
        error
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .or_else(|| error.and_then(|e| e.as_str()))
            .or_else(|| v.get("message").and_then(|m| m.as_str()))
            .map(str::to_string)
            .or_else(|| {
                v.get("detail").map(|d| match d.as_str() {
                    Some(s) => s.to_string(),
                    None => d.to_string(),
                })
            })
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    if text.trim().is_empty() {
        return reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_string();
    }
    truncate(&text)
}

fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> ProviderError {
    let message = error_message(status, body);
    match status {
        401 | 403 => ProviderError::Unauthorized {
            provider: NAME,
            message,
        },
        429 => ProviderError::RateLimited {
            provider: NAME,
            retry_after,
        },
        500..=599 => ProviderError::Server {
            provider: NAME,
            status,
            message,
        },
        _ => ProviderError::Rejected {
            provider: NAME,
            status,
            message,
        },
    }
}

// ------------------------------------------------------------ the actor

/// The caller's frames since the previous utterance end, capped.
#[derive(Debug)]
struct UtteranceBuffer {
    frames: VecDeque<(SampleTime, UlawFrame)>,
    max_frames: usize,
    pre_roll_frames: usize,
    speech_level_dbfs: f32,
}

fn frames_in(duration: Duration) -> usize {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    usize::try_from(ms / u64::from(media::FRAME_MS)).unwrap_or(usize::MAX)
}

impl UtteranceBuffer {
    fn new(config: &WhisperConfig) -> Self {
        Self {
            frames: VecDeque::new(),
            max_frames: frames_in(config.max_utterance).max(1),
            pre_roll_frames: frames_in(config.pre_roll),
            speech_level_dbfs: config.speech_level_dbfs,
        }
    }

    fn push(&mut self, start: SampleTime, frame: UlawFrame) {
        if self.frames.len() >= self.max_frames {
            self.frames.pop_front();
        }
        self.frames.push_back((start, frame));
    }

    /// Takes every frame that starts before `end`, as PCM, less leading
    /// silence beyond the pre-roll; later frames stay as the next
    /// utterance's pre-roll.
    fn cut(&mut self, end: SampleTime) -> Vec<i16> {
        let count = self
            .frames
            .iter()
            .take_while(|(start, _)| *start < end)
            .count();
        let pcm: Vec<i16> = self
            .frames
            .drain(..count)
            .flat_map(|(_, frame)| frame.into_iter().map(ulaw_to_linear))
            .collect();
        let first_loud = pcm
            .chunks(media::FRAME_SAMPLES)
            .position(|frame| level_dbfs(frame) >= self.speech_level_dbfs);
        match first_loud {
            Some(k) => {
                let from = k.saturating_sub(self.pre_roll_frames) * media::FRAME_SAMPLES;
                pcm[from..].to_vec()
            }
            None => pcm,
        }
    }
}

/// Wraps PCM as an 8 kHz mono 16-bit WAV file.
fn wav_bytes(samples: &[i16]) -> Result<Vec<u8>, ProviderError> {
    let mut out = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    media::wav::write_pcm16_to(&mut out, media::TELEPHONE_RATE_HZ, samples)
        .map_err(|error| unavailable(format!("WAV encoding: {error}")))?;
    Ok(out.into_inner())
}

/// A spawned request that is aborted if the call stops waiting for it.
struct Request {
    handle: JoinHandle<Result<String, ProviderError>>,
    is_short: bool,
}

impl Future for Request {
    type Output = (Result<String, ProviderError>, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let is_short = self.is_short;
        Pin::new(&mut self.handle).poll(cx).map(|joined| {
            let result = joined.unwrap_or_else(|error| {
                Err(unavailable(format!("transcription task failed: {error}")))
            });
            (result, is_short)
        })
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn event_for(result: Result<String, ProviderError>, is_short: bool) -> Option<SttEvent> {
    match result {
        Ok(text) if text.is_empty() => (!is_short).then_some(SttEvent::UtteranceEnd),
        Ok(text) => Some(SttEvent::Final {
            text,
            end_of_turn: !is_short,
        }),
        Err(error) => {
            tracing::warn!(provider = NAME, error = %error, "transcription failed");
            Some(SttEvent::Failed(error))
        }
    }
}

async fn run_call(
    client: WhisperStt,
    mut input: mpsc::Receiver<SttInput>,
    events: mpsc::Sender<SttEvent>,
) {
    let mut buffer = UtteranceBuffer::new(&client.config);
    let mut requests: FuturesOrdered<Request> = FuturesOrdered::new();
    loop {
        tokio::select! {
            item = input.recv() => match item {
                Some(SttInput::Audio { start, frame }) => buffer.push(start, frame),
                // A remote request per pause would cost more than it saves.
                Some(SttInput::Paused { .. }) => {}
                Some(SttInput::UtteranceEnded { end, is_short }) => {
                    let pcm = buffer.cut(end);
                    let client = client.clone();
                    let handle = tokio::spawn(async move {
                        if pcm.is_empty() {
                            return Ok(String::new());
                        }
                        client.transcribe_wav(wav_bytes(&pcm)?).await
                    });
                    requests.push_back(Request { handle, is_short });
                }
                None => break,
            },
            Some((result, is_short)) = requests.next(), if !requests.is_empty() => {
                if let Some(event) = event_for(result, is_short) {
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    // The call ended: report what is still in flight, in order.
    while let Some((result, is_short)) = requests.next().await {
        if let Some(event) = event_for(result, is_short) {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_appends_the_transcription_path() {
        let config = WhisperConfig::new(Url::parse("http://127.0.0.1:8000/v1/").expect("url"));
        assert_eq!(
            config.endpoint().expect("endpoint").as_str(),
            "http://127.0.0.1:8000/v1/audio/transcriptions"
        );
        let config = WhisperConfig::new(Url::parse("ws://127.0.0.1:8000/v1").expect("url"));
        assert!(matches!(
            config.endpoint(),
            Err(ProviderError::Unavailable { .. })
        ));
    }

    fn buffer(max_utterance_ms: u64) -> UtteranceBuffer {
        let mut config = WhisperConfig::new(Url::parse("http://localhost/v1").expect("url"));
        config.max_utterance = Duration::from_millis(max_utterance_ms);
        UtteranceBuffer::new(&config)
    }

    #[test]
    fn leading_silence_is_cut_to_the_pre_roll() {
        let mut buffer = buffer(30_000);
        // 1 s of mu-law silence, then 200 ms of loud audio.
        for k in 0..60u64 {
            let frame = if k < 50 { [0xFF; 160] } else { [0x10; 160] };
            buffer.push(k * 160, frame);
        }
        let pcm = buffer.cut(60 * 160);
        // 300 ms (15 frames) of pre-roll + 10 loud frames.
        assert_eq!(pcm.len(), 25 * 160);
        assert_eq!(pcm[0], ulaw_to_linear(0xFF));
        assert_eq!(pcm[15 * 160], ulaw_to_linear(0x10));
        // All quiet: sent whole.
        for k in 60..70u64 {
            buffer.push(k * 160, [0xFF; 160]);
        }
        assert_eq!(buffer.cut(70 * 160).len(), 10 * 160);
    }

    #[test]
    fn the_buffer_cuts_at_the_end_and_keeps_the_rest_as_pre_roll() {
        let mut buffer = buffer(60);
        for k in 0..4u64 {
            buffer.push(k * 160, [0x10 + k as u8; 160]);
        }
        // Capped at three frames: frame 0 was dropped.
        let pcm = buffer.cut(480);
        assert_eq!(pcm.len(), 320);
        assert_eq!(pcm[0], ulaw_to_linear(0x11));
        assert_eq!(buffer.frames.len(), 1);
        assert!(buffer.cut(480).is_empty());
    }

    #[test]
    fn error_bodies_give_the_servers_words() {
        let openai =
            br#"{"error":{"message":"Invalid file format.","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(400, openai), "Invalid file format.");
        assert_eq!(
            error_message(422, br#"{"detail":"bad model"}"#),
            "bad model"
        );
        assert_eq!(error_message(502, b""), "Bad Gateway");
        assert!(matches!(
            classify(429, b"", Some(Duration::from_secs(3))),
            ProviderError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }

    #[test]
    fn transcripts_parse_leniently() {
        assert_eq!(
            parse_transcript(br#"{"text":" hello ","x_groq":{}}"#, false).expect("json"),
            "hello"
        );
        assert_eq!(
            parse_transcript(b"hi there", true).expect("plain"),
            "hi there"
        );
        assert!(matches!(
            parse_transcript(b"{}", false),
            Err(ProviderError::Protocol { .. })
        ));
    }

    #[test]
    fn the_wav_is_8_khz_mono_16_bit() {
        let wav = wav_bytes(&[0, 1, -1, 1000]).expect("wav");
        let audio = media::wav::read_pcm16_from(&wav[..]).expect("read back");
        assert_eq!(audio.rate_hz, 8000);
        assert_eq!(audio.samples, vec![0, 1, -1, 1000]);
        assert_eq!(&wav[22..24], &1u16.to_le_bytes(), "mono");
        assert_eq!(&wav[34..36], &16u16.to_le_bytes(), "16-bit");
    }
}
