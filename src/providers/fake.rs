//! Scripted, deterministic providers: the test and benchmark doubles
//! (`--providers fake`). The LLM answers every caller turn with the same
//! sentence, the TTS speaks a 1 s greeting and a 2 s reply as a quiet tone,
//! and the STT turns every caller utterance the endpointer finds into
//! "caller utterance N" (backchannel-length ones into "mm-hm"). Latency is
//! zero unless configured, so benchmarks measure orchestration alone.

use std::time::Duration;

use media::endpoint::EndpointEvent;
use media::frame::{SampleTime, UlawFrame};
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;

use super::{CallProviders, CallSetup, ProviderEvent, ProviderEvents, ProviderFactory};
use crate::call::{ChatMessage, Input};

/// What the fake LLM says to every caller turn.
pub const FAKE_REPLY: &str = "Thanks, I heard you. Is there anything else I can help with?";

/// Settings of the fake providers.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Delay before the LLM's first text.
    pub llm_latency: Duration,
    /// Delay before the TTS's first audio.
    pub tts_latency: Duration,
    /// Audio length of the greeting (turn 1).
    pub greeting_audio: Duration,
    /// Audio length of every other agent turn.
    pub reply_audio: Duration,
    /// Audio is delivered in chunks of this length.
    pub chunk: Duration,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            llm_latency: Duration::ZERO,
            tts_latency: Duration::ZERO,
            greeting_audio: Duration::from_secs(1),
            reply_audio: Duration::from_secs(2),
            chunk: Duration::from_millis(100),
        }
    }
}

/// Builds [`FakeProviders`] per call.
#[derive(Debug, Clone, Default)]
pub struct FakeFactory {
    /// Shared settings.
    pub config: FakeConfig,
}

impl ProviderFactory for FakeFactory {
    fn for_call<'a>(
        &'a self,
        _setup: &'a CallSetup,
        events: ProviderEvents,
    ) -> BoxFuture<'a, Box<dyn CallProviders>> {
        let providers: Box<dyn CallProviders> = Box::new(FakeProviders {
            config: self.config.clone(),
            events,
            utterances: 0,
            text: Default::default(),
        });
        Box::pin(std::future::ready(providers))
    }
}

/// One call's fake providers.
pub struct FakeProviders {
    /// Settings.
    config: FakeConfig,
    /// Where events go.
    events: ProviderEvents,
    /// Caller utterances transcribed so far.
    utterances: u32,
    /// Text received per turn (the fake TTS speaks on the last piece).
    text: std::collections::BTreeMap<u32, usize>,
}

/// A quiet 400 Hz tone in mu-law, so recordings are audibly not silence.
fn tone(samples: usize, phase: &mut f32) -> Vec<u8> {
    (0..samples)
        .map(|_| {
            *phase += 400.0 * std::f32::consts::TAU / 8_000.0;
            if *phase > std::f32::consts::TAU {
                *phase -= std::f32::consts::TAU;
            }
            media::g711::linear_to_ulaw((phase.sin() * 3_000.0) as i16)
        })
        .collect()
}

impl CallProviders for FakeProviders {
    fn start_reply(&mut self, turn: u32, _history: Vec<ChatMessage>, cancel: CancellationToken) {
        let events = self.events.clone();
        let latency = self.config.llm_latency;
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tokio::time::sleep(latency) => {
                    let _ = events.send(ProviderEvent::Session(Input::LlmText { turn, delta: FAKE_REPLY.to_string() })).await;
                    let _ = events.send(ProviderEvent::Session(Input::LlmDone { turn })).await;
                }
            }
        });
    }

    fn speak(&mut self, turn: u32, text: String, last: bool, cancel: CancellationToken) {
        let fed = self.text.entry(turn).or_default();
        *fed += text.len();
        if !last {
            return;
        }
        let text_len = *fed;
        let events = self.events.clone();
        let config = self.config.clone();
        tokio::spawn(async move {
            let length = if turn == 1 {
                config.greeting_audio
            } else {
                config.reply_audio
            };
            let total = (length.as_millis() as usize) * 8;
            let chunk = ((config.chunk.as_millis() as usize) * 8).max(160);
            let mut phase = 0.0f32;
            let mut sent = 0usize;
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(config.tts_latency) => {}
            }
            while sent < total {
                if cancel.is_cancelled() {
                    return;
                }
                let n = chunk.min(total - sent);
                sent += n;
                let text_end = Some(text_len * sent / total.max(1));
                let audio = tone(n, &mut phase);
                if events
                    .send(ProviderEvent::Session(Input::TtsAudio {
                        turn,
                        audio,
                        text_end,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = events
                .send(ProviderEvent::Session(Input::TtsDone { turn }))
                .await;
        });
    }

    fn caller_audio(&mut self, _start: SampleTime, _frame: &UlawFrame) {}

    fn caller_endpoint(&mut self, event: &EndpointEvent) {
        let EndpointEvent::SpeechEnded(utterance) = event else {
            return;
        };
        let text = if utterance.is_short {
            "mm-hm".to_string()
        } else {
            self.utterances += 1;
            format!("caller utterance {}", self.utterances)
        };
        let input = Input::Transcript {
            text,
            is_final: true,
            end_of_turn: true,
        };
        // Never block the media path: a full channel drops the transcript
        // and the session's silence handling recovers.
        let _ = self.events.try_send(ProviderEvent::Session(input));
    }
}
