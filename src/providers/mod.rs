//! Speech and language providers as the call driver sees them: one
//! [`CallProviders`] per call, which starts LLM replies and TTS turns, takes
//! caller audio and endpoint events for STT, and reports back through a
//! channel of [`ProviderEvent`]s. Every piece of work carries its turn's
//! cancellation token; a cancelled turn's late events are ignored by the
//! session anyway.
//!
//! - [`fake`]: scripted, deterministic doubles (`--providers fake`).
//! - [`roles`]: the STT, LLM and TTS traits every vendor client and offline
//!   model implements.
//! - [`pipeline`]: [`CallProviders`] built from chains of those roles, with
//!   the fault policy (budgets, retries, fallbacks, filler, apology).

pub mod assemble;
pub mod catalog;
pub mod deepgram;
pub mod elevenlabs;
pub mod fake;
pub mod llama;
pub mod local;
pub mod openai;
pub mod pipeline;
pub mod prompt;
pub mod roles;
pub mod setup;
pub mod whisper;

use futures_util::future::BoxFuture;
use media::endpoint::EndpointEvent;
use media::frame::{SampleTime, UlawFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::{ChatMessage, Input};
use crate::db::CustomerId;
use roles::{ToolSpec, Voice};

/// Something a provider produced for the call.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// Feed this to the session.
    Session(Input),
}

/// Where providers send their events.
pub type ProviderEvents = mpsc::Sender<ProviderEvent>;

/// The model settings of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmSettings {
    /// Model name.
    pub model: String,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token limit per request.
    pub max_tokens: Option<u32>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self {
            model: "gpt-4o-mini".into(),
            temperature: Some(0.6),
            max_tokens: Some(250),
        }
    }
}

/// What the providers of one call need to know about it.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The tenant.
    pub customer_id: CustomerId,
    /// Twilio's call id.
    pub call_sid: String,
    /// The system prompt: platform rules, the tenant's voice, the caller.
    pub system_prompt: String,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Model settings.
    pub llm: LlmSettings,
    /// Voice settings.
    pub voice: Voice,
    /// The tenant's `provider_settings` (choices per role).
    pub provider_settings: serde_json::Value,
}

impl CallSetup {
    /// A setup with defaults, for tests and the fake providers.
    pub fn basic(customer_id: CustomerId, call_sid: &str) -> Self {
        Self {
            customer_id,
            call_sid: call_sid.to_string(),
            system_prompt: "You are a helpful phone receptionist.".into(),
            tools: Vec::new(),
            llm: LlmSettings::default(),
            voice: Voice {
                voice_id: String::new(),
                model: None,
                settings: None,
            },
            provider_settings: serde_json::Value::Object(Default::default()),
        }
    }
}

/// What a call consumed, for metering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// LLM prompt tokens.
    pub llm_prompt_tokens: u64,
    /// LLM completion tokens.
    pub llm_completion_tokens: u64,
    /// TTS characters.
    pub tts_characters: u64,
    /// Caller audio sent to STT, in seconds.
    pub stt_seconds: u64,
}

/// The providers serving one call.
pub trait CallProviders: Send {
    /// Starts an LLM reply for `turn` given the conversation.
    fn start_reply(&mut self, turn: u32, history: Vec<ChatMessage>, cancel: CancellationToken);
    /// Speaks `text` as part of `turn`; `last` ends the turn's text.
    fn speak(&mut self, turn: u32, text: String, last: bool, cancel: CancellationToken);
    /// Caller audio, one 20 ms frame starting at stream time `start`.
    fn caller_audio(&mut self, start: SampleTime, frame: &UlawFrame);
    /// An endpointer decision on the caller's audio.
    fn caller_endpoint(&mut self, event: &EndpointEvent);
    /// The session's answer to a tool call of `turn`.
    fn tool_result(&mut self, _turn: u32, _id: String, _content: String) {}
    /// The first-choice provider names (STT, LLM, TTS), for metrics labels.
    fn names(&self) -> [&str; 3] {
        ["fake", "fake", "fake"]
    }
    /// What the call consumed so far.
    fn usage(&self) -> Usage {
        Usage::default()
    }
}

/// Builds the providers for each new call.
pub trait ProviderFactory: Send + Sync {
    /// Providers for one call, reporting to `events`.
    fn for_call<'a>(
        &'a self,
        setup: &'a CallSetup,
        events: ProviderEvents,
    ) -> BoxFuture<'a, Box<dyn CallProviders>>;
}

#[cfg(test)]
mod pipeline_tests;
