//! Speech and language providers as the call driver sees them: one
//! [`CallProviders`] per call, which starts LLM replies and TTS turns, takes
//! caller audio and endpoint events for STT, and reports back through a
//! channel of [`ProviderEvent`]s. Every piece of work carries its turn's
//! cancellation token; a cancelled turn's late events are ignored by the
//! session anyway.
//!
//! Only the scripted [`fake`] providers exist so far; the vendor clients
//! and offline models implement the same trait.

pub mod fake;
pub mod llama;
pub mod roles;

use media::endpoint::EndpointEvent;
use media::frame::{SampleTime, UlawFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::call::{ChatMessage, Input};

/// Something a provider produced for the call.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderEvent {
    /// Feed this to the session.
    Session(Input),
}

/// Where providers send their events.
pub type ProviderEvents = mpsc::Sender<ProviderEvent>;

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
}

/// Builds the providers for each new call.
pub trait ProviderFactory: Send + Sync {
    /// Providers for one call, reporting to `events`.
    fn for_call(&self, events: ProviderEvents) -> Box<dyn CallProviders>;
}
