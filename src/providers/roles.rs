//! The three provider roles a call needs, as the pipeline sees them:
//! speech-to-text, a language model and text-to-speech. Every vendor client
//! (Deepgram, OpenAI-compatible, ElevenLabs) and every offline model
//! implements one of these traits; [`super::CallProviders`] is built on top
//! of them, with the fault policy in between.
//!
//! The shapes follow how each role is used on a call:
//! - STT and TTS are per-call actors: the pipeline hands them a channel of
//!   inputs and a channel for their events, and their future runs until the
//!   input channel closes. A vendor socket lives as long as that future.
//! - The LLM is per request: a stream of events that is cancelled by being
//!   dropped (which drops the HTTP connection).
//!
//! Nothing here blocks the media path: inputs are sent with `try_send`
//! by the pipeline, and every provider buffers what it must keep.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use media::frame::{SampleTime, UlawFrame};
use tokio::sync::mpsc;

/// Why a provider request failed. `provider` names the client
/// (`deepgram`, `openai`, `elevenlabs`, `moonshine`, …) for logs and
/// metrics; messages never contain credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The vendor refused the credentials (HTTP 401/403, or the socket's
    /// equivalent).
    #[error("{provider}: credentials refused: {message}")]
    Unauthorized {
        /// The client.
        provider: &'static str,
        /// The vendor's words.
        message: String,
    },
    /// Too many requests (HTTP 429).
    #[error("{provider}: rate limited")]
    RateLimited {
        /// The client.
        provider: &'static str,
        /// The vendor's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The vendor failed (HTTP 5xx).
    #[error("{provider}: server error {status}: {message}")]
    Server {
        /// The client.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// The vendor's words.
        message: String,
    },
    /// The vendor rejected the request itself (another 4xx): retrying the
    /// same request cannot help.
    #[error("{provider}: request rejected ({status}): {message}")]
    Rejected {
        /// The client.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// The vendor's words.
        message: String,
    },
    /// The vendor could not be reached, or the connection dropped
    /// mid-stream.
    #[error("{provider}: connection failed: {message}")]
    Network {
        /// The client.
        provider: &'static str,
        /// What happened.
        message: String,
    },
    /// The vendor sent something off protocol (bad JSON, a frame that
    /// cannot be decoded).
    #[error("{provider}: protocol error: {message}")]
    Protocol {
        /// The client.
        provider: &'static str,
        /// What was wrong.
        message: String,
    },
    /// A stage budget ran out.
    #[error("{provider}: no answer within {budget:?}")]
    Timeout {
        /// The client.
        provider: &'static str,
        /// The budget that ran out.
        budget: Duration,
    },
    /// The provider is not usable as configured (a missing model file, a
    /// missing key).
    #[error("{provider}: unavailable: {message}")]
    Unavailable {
        /// The client.
        provider: &'static str,
        /// Why.
        message: String,
    },
}

impl ProviderError {
    /// The client that failed.
    pub fn provider(&self) -> &'static str {
        match self {
            Self::Unauthorized { provider, .. }
            | Self::RateLimited { provider, .. }
            | Self::Server { provider, .. }
            | Self::Rejected { provider, .. }
            | Self::Network { provider, .. }
            | Self::Protocol { provider, .. }
            | Self::Timeout { provider, .. }
            | Self::Unavailable { provider, .. } => provider,
        }
    }

    /// Whether the same request may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Network { .. }
                | Self::Timeout { .. }
        )
    }

    /// A short label for metrics (`unauthorized`, `rate_limited`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server",
            Self::Rejected { .. } => "rejected",
            Self::Network { .. } => "network",
            Self::Protocol { .. } => "protocol",
            Self::Timeout { .. } => "timeout",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// `base` with `suffix` appended to its path (a base's own path, such as a
/// self-hosted server's `/v1`, is kept), once its scheme is checked to be
/// one of `schemes`.
pub fn endpoint_under(
    provider: &'static str,
    base: &url::Url,
    schemes: &[&str],
    suffix: &str,
) -> Result<url::Url, ProviderError> {
    if !schemes.contains(&base.scheme()) {
        return Err(ProviderError::Unavailable {
            provider,
            message: format!(
                "base URL scheme must be {}, not {}",
                schemes.join(" or "),
                base.scheme()
            ),
        });
    }
    let mut url = base.clone();
    let path = format!("{}{suffix}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    Ok(url)
}

// ---------------------------------------------------------------- STT

/// What the pipeline feeds a per-call STT actor.
#[derive(Debug, Clone, PartialEq)]
pub enum SttInput {
    /// One 20 ms frame of caller audio (8 kHz mu-law) at stream time
    /// `start`.
    Audio {
        /// Stream time of the frame's first sample.
        start: SampleTime,
        /// The frame.
        frame: UlawFrame,
    },
    /// Our endpointer decided the caller's utterance ended at `end`
    /// (stream time). Streaming vendors may use it to finalize early
    /// (Deepgram `Finalize`); per-utterance providers transcribe now.
    UtteranceEnded {
        /// Stream time of the end of speech.
        end: SampleTime,
        /// Backchannel-length utterance.
        is_short: bool,
    },
    /// Our endpointer heard the caller pause inside an utterance that may
    /// end at `end`. A per-utterance provider may transcribe the audio up
    /// to `end` speculatively (see [`crate::providers::local::moonshine`]);
    /// streaming vendors ignore it.
    Paused {
        /// Stream time where the utterance ends if the caller says no more.
        end: SampleTime,
    },
}

/// What a per-call STT actor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The vendor heard speech start (Deepgram `SpeechStarted`).
    SpeechStarted,
    /// An interim (unstable) guess at the current words.
    Interim {
        /// The words so far.
        text: String,
    },
    /// Stable words. `end_of_turn` marks the end of the caller's turn as
    /// far as the vendor can tell (Deepgram `speech_final`, or the
    /// transcription of an utterance our endpointer cut).
    Final {
        /// The words.
        text: String,
        /// The turn is over.
        end_of_turn: bool,
    },
    /// The vendor's end-of-utterance marker without new words (Deepgram
    /// `UtteranceEnd`).
    UtteranceEnd,
    /// The provider failed; what it could not transcribe is lost unless it
    /// recovers on its own (it reports again if it does not).
    Failed(ProviderError),
}

/// A speech-to-text provider.
pub trait SpeechToText: Send + Sync {
    /// The client's name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Runs one call's transcription: reads `input` until it closes (the
    /// call ended) and reports on `events`. Reconnecting a dropped vendor
    /// socket, buffering audio meanwhile, is the provider's job.
    fn run(
        &self,
        input: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<SttEvent>,
    ) -> BoxFuture<'static, ()>;
}

// ---------------------------------------------------------------- LLM

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The id to answer with.
    pub id: String,
    /// The function name.
    pub name: String,
    /// JSON arguments, as the model wrote them.
    pub arguments: String,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmMessage {
    /// Instructions.
    System(String),
    /// The caller.
    User(String),
    /// The agent: text (as heard) and any tool calls it made.
    Assistant {
        /// The text.
        content: String,
        /// Tool calls made in this message.
        tool_calls: Vec<ToolCall>,
    },
    /// The answer to a tool call.
    Tool {
        /// The tool call's id.
        id: String,
        /// The result.
        content: String,
    },
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The function name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// One chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// Model name.
    pub model: String,
    /// The conversation, system prompt first.
    pub messages: Vec<LlmMessage>,
    /// Tools offered.
    pub tools: Vec<ToolSpec>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token limit.
    pub max_tokens: Option<u32>,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt: u32,
    /// Completion tokens.
    pub completion: u32,
}

/// What a streaming completion yields, in this order: text and tool calls
/// as they come, `Usage` (when the server reports it), then `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// More reply text.
    Text(String),
    /// A complete tool call (arguments assembled from the deltas).
    ToolCall(ToolCall),
    /// Token usage, when the server reports it.
    Usage(TokenUsage),
    /// The completion ended; `finish_reason` as the server gave it
    /// (`stop`, `tool_calls`, `length`, or empty).
    Done {
        /// The server's finish reason.
        finish_reason: String,
    },
}

/// A stream of completion events; dropping it cancels the request.
pub type LlmStream = BoxStream<'static, Result<LlmEvent, ProviderError>>;

/// A chat-completion language model.
pub trait LanguageModel: Send + Sync {
    /// The client's name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Starts a streaming completion. The future resolves once the server
    /// accepted the request (HTTP status known), with the event stream.
    fn stream(&self, request: LlmRequest) -> BoxFuture<'static, Result<LlmStream, ProviderError>>;

    /// Warms the model for a conversation that will start with `messages`
    /// (a local model evaluates the system prompt once, at call set-up,
    /// instead of at the caller's first turn). Vendors need nothing: the
    /// default does nothing.
    fn prefill(&self, _messages: Vec<LlmMessage>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------- TTS

/// Voice settings of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Voice {
    /// Vendor voice id (ElevenLabs voice id; ignored by flite).
    pub voice_id: String,
    /// Vendor model id (e.g. `eleven_flash_v2_5`).
    pub model: Option<String>,
    /// Vendor voice settings JSON (stability, similarity_boost, speed…).
    pub settings: Option<serde_json::Value>,
}

/// What the pipeline feeds a per-call TTS actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtsInput {
    /// Text for agent turn `turn`; `last` ends the turn's text.
    Text {
        /// The agent turn.
        turn: u32,
        /// The text (a clause or more).
        text: String,
        /// No more text follows for this turn.
        last: bool,
    },
    /// Stop the turn now (barge-in): no more of its audio may be sent.
    Cancel {
        /// The agent turn.
        turn: u32,
    },
}

/// What a per-call TTS actor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    /// Audio for a turn: 8 kHz mu-law, any length.
    Audio {
        /// The agent turn.
        turn: u32,
        /// Mu-law bytes.
        audio: Vec<u8>,
        /// Characters of the turn's text spoken by this and all earlier
        /// audio, when the vendor reports alignment.
        text_end: Option<usize>,
    },
    /// All of the turn's audio has been delivered.
    Done {
        /// The agent turn.
        turn: u32,
        /// Characters synthesised (for metering).
        characters: usize,
    },
    /// The turn could not be synthesised.
    Failed {
        /// The agent turn.
        turn: u32,
        /// Why.
        error: ProviderError,
    },
}

/// A text-to-speech provider.
pub trait TextToSpeech: Send + Sync {
    /// The client's name, for logs and metrics.
    fn name(&self) -> &'static str;

    /// Runs one call's synthesis with `voice`: reads `input` until it
    /// closes and reports on `events`. After `Cancel { turn }` no audio of
    /// that turn may be reported.
    fn run(
        &self,
        voice: Voice,
        input: mpsc::Receiver<TtsInput>,
        events: mpsc::Sender<TtsEvent>,
    ) -> BoxFuture<'static, ()>;
}
