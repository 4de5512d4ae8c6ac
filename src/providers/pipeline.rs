//! [`CallProviders`] built from the three roles, with the fault policy
//! between the call session and the vendors.
//!
//! Each role is a chain: the tenant's or platform's first choice, then any
//! configured fallbacks, usually ending with an offline model. Per stage:
//!
//! - **STT**: audio goes to the current provider; the utterance's audio is
//!   also kept so that, when the provider fails or gives no final
//!   transcript within [`Budgets::stt_final`] of our endpointer's end of
//!   speech, the next provider can be handed the same utterance. When every
//!   provider has failed the session hears [`Input::SttFailed`] and
//!   apologises.
//! - **LLM**: a retryable failure before any text is tried once more on the
//!   same provider, then on the next; [`Budgets::llm_first_token`] bounds
//!   each try. A short filler is spoken if no text has arrived after
//!   [`Budgets::filler_after`], so the line is never dead for long. Tool
//!   calls are answered by the session and sent back to the model in a
//!   follow-up request on the same turn.
//! - **TTS**: one actor per call; a turn that fails, or yields no audio
//!   within [`Budgets::tts_first_byte`], is re-synthesised from its start
//!   by the next provider if none of it was heard yet, otherwise reported
//!   to the session, which lets what exists play out.
//!
//! When a whole chain fails the session receives [`Input::TurnFailed`] and
//! speaks the tenant's apology; when the next provider of a chain takes
//! over, the session hears [`Input::ProviderFallback`] (for the
//! transcript). Every failure and fallback is counted in [`Metrics`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use media::endpoint::EndpointEvent;
use media::frame::{SampleTime, UlawFrame};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::roles::{
    LanguageModel, LlmEvent, LlmMessage, LlmRequest, ProviderError, SpeechToText, SttEvent,
    SttInput, TextToSpeech, ToolCall, ToolSpec, TtsEvent, TtsInput, Voice,
};
use super::{CallProviders, CallSetup, ProviderEvent, ProviderEvents, ProviderFactory, Usage};
use crate::call::{ChatMessage, Input};
use crate::metrics::Metrics;

/// Time limits per stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Our end of speech → the provider's final transcript.
    pub stt_final: Duration,
    /// Request → first LLM event, per try.
    pub llm_first_token: Duration,
    /// No LLM text this long after the request: speak the filler.
    pub filler_after: Duration,
    /// First text of a turn → its first audio.
    pub tts_first_byte: Duration,
    /// How long a turn waits for the session's answer to a tool call.
    pub tool_result: Duration,
}

impl Budgets {
    /// The budget of the provider at `index` of a chain of `len`: the last
    /// one has nobody to hand over to, so it gets [`LAST_RESORT_FACTOR`]
    /// times longer before the caller hears an apology instead.
    pub fn for_position(&self, budget: Duration, index: usize, len: usize) -> Duration {
        if index + 1 >= len {
            budget * LAST_RESORT_FACTOR
        } else {
            budget
        }
    }
}

/// How much longer the last provider of a chain may take (see
/// [`Budgets::for_position`]).
pub const LAST_RESORT_FACTOR: u32 = 3;

impl Default for Budgets {
    fn default() -> Self {
        Self {
            stt_final: Duration::from_millis(1_000),
            llm_first_token: Duration::from_millis(2_500),
            filler_after: Duration::from_millis(1_200),
            tts_first_byte: Duration::from_millis(1_500),
            tool_result: Duration::from_secs(2),
        }
    }
}

/// The providers of each role, first choice first.
#[derive(Clone, Default)]
pub struct Chains {
    /// Speech-to-text.
    pub stt: Vec<Arc<dyn SpeechToText>>,
    /// Language models.
    pub llm: Vec<Arc<dyn LanguageModel>>,
    /// Text-to-speech.
    pub tts: Vec<Arc<dyn TextToSpeech>>,
}

impl std::fmt::Debug for Chains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chains")
            .field(
                "stt",
                &self.stt.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "llm",
                &self.llm.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "tts",
                &self.tts.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How to find each call's chains: the platform's defaults, or a tenant's
/// own (bring-your-own-key) clients.
pub trait ChainSource: Send + Sync {
    /// The chains for this call.
    fn chains<'a>(&'a self, setup: &'a CallSetup) -> BoxFuture<'a, Chains>;
}

/// The same chains for every call.
#[derive(Clone, Debug)]
pub struct FixedChains(pub Chains);

impl ChainSource for FixedChains {
    fn chains<'a>(&'a self, _setup: &'a CallSetup) -> BoxFuture<'a, Chains> {
        let chains = self.0.clone();
        Box::pin(async move { chains })
    }
}

/// Builds a [`PipelineCall`] for each call.
pub struct PipelineFactory {
    /// Where chains come from.
    pub source: Arc<dyn ChainSource>,
    /// Stage budgets.
    pub budgets: Budgets,
    /// Where failures and latency go.
    pub metrics: Arc<Metrics>,
    /// Said when the LLM is slow to start.
    pub filler_text: String,
}

impl PipelineFactory {
    /// A factory with default budgets and filler.
    pub fn new(source: Arc<dyn ChainSource>, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            budgets: Budgets::default(),
            metrics,
            filler_text: "One moment. ".to_string(),
        }
    }
}

impl ProviderFactory for PipelineFactory {
    fn for_call<'a>(
        &'a self,
        setup: &'a CallSetup,
        events: ProviderEvents,
    ) -> BoxFuture<'a, Box<dyn CallProviders>> {
        Box::pin(async move {
            let chains = self.source.chains(setup).await;
            let call: Box<dyn CallProviders> = Box::new(PipelineCall::start(
                chains,
                setup.clone(),
                self.budgets,
                self.metrics.clone(),
                self.filler_text.clone(),
                events,
            ));
            call
        })
    }
}

/// Counters shared by a call's tasks.
#[derive(Debug, Default)]
struct Meter {
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    tts_characters: AtomicU64,
    stt_frames: AtomicU64,
}

impl Meter {
    fn tokens(&self, usage: super::roles::TokenUsage) {
        self.prompt_tokens
            .fetch_add(u64::from(usage.prompt), Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(u64::from(usage.completion), Ordering::Relaxed);
    }
}

/// One call's providers.
pub struct PipelineCall {
    stt: mpsc::Sender<SttInput>,
    tts: mpsc::UnboundedSender<TtsCommand>,
    llm: Arc<LlmShared>,
    tool_results: HashMap<u32, mpsc::UnboundedSender<(String, String)>>,
    watched: std::collections::HashSet<u32>,
    meter: Arc<Meter>,
    names: [String; 3],
}

/// What every reply task of a call shares.
struct LlmShared {
    chain: Vec<Arc<dyn LanguageModel>>,
    setup: CallSetup,
    budgets: Budgets,
    metrics: Arc<Metrics>,
    filler: String,
    events: ProviderEvents,
    meter: Arc<Meter>,
}

impl PipelineCall {
    /// Starts the call's STT and TTS supervisors.
    pub fn start(
        chains: Chains,
        setup: CallSetup,
        budgets: Budgets,
        metrics: Arc<Metrics>,
        filler: String,
        events: ProviderEvents,
    ) -> Self {
        let names = [
            chains.stt.first().map_or("none", |p| p.name()).to_string(),
            chains.llm.first().map_or("none", |p| p.name()).to_string(),
            chains.tts.first().map_or("none", |p| p.name()).to_string(),
        ];
        let meter = Arc::new(Meter::default());
        // Roughly 10 s of audio: beyond that the STT is hopelessly behind
        // and frames are dropped rather than held.
        let (stt_tx, stt_rx) = mpsc::channel(500);
        tokio::spawn(stt_supervisor(
            chains.stt.clone(),
            stt_rx,
            events.clone(),
            budgets,
            metrics.clone(),
        ));
        let (tts_tx, tts_rx) = mpsc::unbounded_channel();
        tokio::spawn(tts_supervisor(
            chains.tts.clone(),
            setup.voice.clone(),
            tts_rx,
            events.clone(),
            budgets,
            metrics.clone(),
            meter.clone(),
        ));
        if let Some(first) = chains.llm.first() {
            // The system prompt is the same for every turn of the call.
            tokio::spawn(first.prefill(vec![LlmMessage::System(setup.system_prompt.clone())]));
        }
        let llm = Arc::new(LlmShared {
            chain: chains.llm,
            setup,
            budgets,
            metrics,
            filler,
            events,
            meter: meter.clone(),
        });
        Self {
            stt: stt_tx,
            tts: tts_tx,
            llm,
            tool_results: HashMap::new(),
            watched: Default::default(),
            meter,
            names,
        }
    }

    fn watch_turn(&mut self, turn: u32, cancel: &CancellationToken) {
        if !self.watched.insert(turn) {
            return;
        }
        let tts = self.tts.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            let _ = tts.send(TtsCommand::Cancel { turn });
        });
    }
}

impl CallProviders for PipelineCall {
    fn start_reply(&mut self, turn: u32, history: Vec<ChatMessage>, cancel: CancellationToken) {
        self.watch_turn(turn, &cancel);
        let (tx, rx) = mpsc::unbounded_channel();
        self.tool_results.retain(|_, sender| !sender.is_closed());
        self.tool_results.insert(turn, tx);
        let shared = self.llm.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = reply(shared, turn, history, rx) => {}
            }
        });
    }

    fn speak(&mut self, turn: u32, text: String, last: bool, cancel: CancellationToken) {
        if cancel.is_cancelled() {
            // Already interrupted: nothing of it may be synthesised.
            return;
        }
        self.watch_turn(turn, &cancel);
        let _ = self.tts.send(TtsCommand::Text { turn, text, last });
    }

    fn caller_audio(&mut self, start: SampleTime, frame: &UlawFrame) {
        self.meter.stt_frames.fetch_add(1, Ordering::Relaxed);
        // Never block the media path: a full queue drops the frame.
        let _ = self.stt.try_send(SttInput::Audio {
            start,
            frame: *frame,
        });
    }

    fn caller_endpoint(&mut self, event: &EndpointEvent) {
        match event {
            EndpointEvent::SpeechEnded(utterance) => {
                let _ = self.stt.try_send(SttInput::UtteranceEnded {
                    end: utterance.end,
                    is_short: utterance.is_short,
                });
            }
            EndpointEvent::Paused { end, .. } => {
                let _ = self.stt.try_send(SttInput::Paused { end: *end });
            }
            _ => {}
        }
    }

    fn tool_result(&mut self, turn: u32, id: String, content: String) {
        if let Some(sender) = self.tool_results.get(&turn) {
            let _ = sender.send((id, content));
        }
    }

    fn names(&self) -> [&str; 3] {
        [&self.names[0], &self.names[1], &self.names[2]]
    }

    fn usage(&self) -> Usage {
        Usage {
            llm_prompt_tokens: self.meter.prompt_tokens.load(Ordering::Relaxed),
            llm_completion_tokens: self.meter.completion_tokens.load(Ordering::Relaxed),
            tts_characters: self.meter.tts_characters.load(Ordering::Relaxed),
            stt_seconds: self.meter.stt_frames.load(Ordering::Relaxed) / 50,
        }
    }
}

async fn send(events: &ProviderEvents, input: Input) -> bool {
    events.send(ProviderEvent::Session(input)).await.is_ok()
}

// ---------------------------------------------------------------- STT

/// Caller audio kept for handing an utterance to a fallback provider:
/// 30 s at 50 frames a second.
const UTTERANCE_FRAMES: usize = 1_500;

struct SttActor {
    name: &'static str,
    input: mpsc::Sender<SttInput>,
    events: mpsc::Receiver<SttEvent>,
}

fn start_stt(provider: &Arc<dyn SpeechToText>) -> SttActor {
    let (input, input_rx) = mpsc::channel(UTTERANCE_FRAMES + 16);
    let (events_tx, events) = mpsc::channel(64);
    tokio::spawn(provider.run(input_rx, events_tx));
    SttActor {
        name: provider.name(),
        input,
        events,
    }
}

async fn stt_supervisor(
    chain: Vec<Arc<dyn SpeechToText>>,
    mut input: mpsc::Receiver<SttInput>,
    events: ProviderEvents,
    budgets: Budgets,
    metrics: Arc<Metrics>,
) {
    if chain.is_empty() {
        // Nothing can transcribe: drain so the pipeline never blocks.
        while input.recv().await.is_some() {}
        return;
    }
    let mut index = 0;
    let mut actor = start_stt(&chain[index]);
    // Frames of the utterance in progress (since the last end of turn).
    let mut utterance: std::collections::VecDeque<SttInput> = Default::default();
    // Set while we wait for a final transcript of an utterance.
    let mut awaiting: Option<(Instant, SttInput)> = None;
    let mut restarts = 0u32;
    loop {
        let deadline = awaiting.as_ref().map(|(at, _)| *at);
        let failure: Option<ProviderError> = tokio::select! {
            message = input.recv() => {
                let Some(message) = message else { break };
                match &message {
                    SttInput::Audio { .. } => {
                        if utterance.len() == UTTERANCE_FRAMES {
                            utterance.pop_front();
                        }
                        utterance.push_back(message.clone());
                    }
                    SttInput::UtteranceEnded { is_short, .. } => {
                        if !is_short {
                            let budget = budgets.for_position(budgets.stt_final, index, chain.len());
                            awaiting = Some((Instant::now() + budget, message.clone()));
                        }
                    }
                    SttInput::Paused { .. } => {}
                }
                let _ = actor.input.try_send(message);
                None
            }
            event = actor.events.recv() => match event {
                None => Some(ProviderError::Network {
                    provider: actor.name,
                    message: "the transcriber stopped".into(),
                }),
                Some(SttEvent::Failed(error)) => Some(error),
                Some(event) => {
                    if let SttEvent::Final { end_of_turn: true, .. } = &event {
                        awaiting = None;
                        utterance.clear();
                    }
                    if let SttEvent::UtteranceEnd = &event {
                        awaiting = None;
                    }
                    if let Some(input) = stt_input(event) {
                        if !send(&events, input).await {
                            break;
                        }
                    }
                    None
                }
            },
            () = sleep_until(deadline) => Some(ProviderError::Timeout {
                provider: actor.name,
                budget: budgets.for_position(budgets.stt_final, index, chain.len()),
            }),
        };
        let Some(error) = failure else { continue };
        tracing::warn!(provider = actor.name, %error, "speech-to-text failed");
        metrics.failure(actor.name, "stt", error.kind());
        metrics.fallback(actor.name, "stt");
        index += 1;
        if index >= chain.len() {
            let _ = send(
                &events,
                Input::SttFailed {
                    reason: error.to_string(),
                },
            )
            .await;
            awaiting = None;
            utterance.clear();
            restarts += 1;
            if restarts > 3 {
                tracing::error!("speech-to-text gave up for this call");
                while input.recv().await.is_some() {}
                return;
            }
            // Start over from the first choice: outages are often short.
            index = 0;
        } else {
            let reason = format!("{error}; {} takes over", chain[index].name());
            if !send(&events, Input::ProviderFallback { reason }).await {
                break;
            }
        }
        actor = start_stt(&chain[index]);
        // The new provider hears the utterance the old one lost.
        for frame in &utterance {
            let _ = actor.input.try_send(frame.clone());
        }
        if let Some((_, ended)) = awaiting.take() {
            let _ = actor.input.try_send(ended.clone());
            let budget = budgets.for_position(budgets.stt_final, index, chain.len());
            awaiting = Some((Instant::now() + budget, ended));
        }
    }
}

fn stt_input(event: SttEvent) -> Option<Input> {
    match event {
        SttEvent::Interim { text } => Some(Input::Transcript {
            text,
            is_final: false,
            end_of_turn: false,
        }),
        SttEvent::Final { text, end_of_turn } => Some(Input::Transcript {
            text,
            is_final: true,
            end_of_turn,
        }),
        SttEvent::SpeechStarted | SttEvent::UtteranceEnd | SttEvent::Failed(_) => None,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------- LLM

/// How many model round trips one turn may take (tool calls).
const MAX_ROUNDS: usize = 3;

/// A turn's LLM work: stream the reply, answer tool calls, fail over.
async fn reply(
    shared: Arc<LlmShared>,
    turn: u32,
    history: Vec<ChatMessage>,
    mut tool_results: mpsc::UnboundedReceiver<(String, String)>,
) {
    let mut messages = Vec::with_capacity(history.len() + 1);
    messages.push(LlmMessage::System(shared.setup.system_prompt.clone()));
    messages.extend(history.into_iter().map(|m| match m.role {
        "assistant" => LlmMessage::Assistant {
            content: m.content,
            tool_calls: Vec::new(),
        },
        _ => LlmMessage::User(m.content),
    }));
    let mut said_anything = false;
    let started = Instant::now();
    for _round in 0..MAX_ROUNDS {
        let request = LlmRequest {
            model: shared.setup.llm.model.clone(),
            messages: messages.clone(),
            tools: shared.setup.tools.clone(),
            temperature: shared.setup.llm.temperature,
            max_tokens: shared.setup.llm.max_tokens,
        };
        let outcome =
            stream_with_failover(&shared, turn, request, started, &mut said_anything).await;
        let (text, calls) = match outcome {
            Ok(done) => done,
            Err(error) => {
                let _ = send(
                    &shared.events,
                    Input::TurnFailed {
                        turn,
                        reason: error.to_string(),
                    },
                )
                .await;
                return;
            }
        };
        if calls.is_empty() {
            let _ = send(&shared.events, Input::LlmDone { turn }).await;
            return;
        }
        for call in &calls {
            let _ = send(
                &shared.events,
                Input::ToolCall {
                    turn,
                    id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                },
            )
            .await;
        }
        messages.push(LlmMessage::Assistant {
            content: text,
            tool_calls: calls.clone(),
        });
        let mut answers: BTreeMap<String, String> = BTreeMap::new();
        let wait = tokio::time::sleep(shared.budgets.tool_result);
        tokio::pin!(wait);
        while answers.len() < calls.len() {
            tokio::select! {
                answer = tool_results.recv() => match answer {
                    Some((id, content)) => { answers.insert(id, content); }
                    None => break,
                },
                () = &mut wait => break,
            }
        }
        for call in &calls {
            let content = answers
                .remove(&call.id)
                .unwrap_or_else(|| "No result.".to_string());
            messages.push(LlmMessage::Tool {
                id: call.id.clone(),
                content,
            });
        }
    }
    // Too many tool rounds: end the turn with what was said.
    let _ = send(&shared.events, Input::LlmDone { turn }).await;
}

/// Runs one request through the chain. Returns the text and tool calls of
/// the completion that succeeded.
async fn stream_with_failover(
    shared: &LlmShared,
    turn: u32,
    request: LlmRequest,
    started: Instant,
    said_anything: &mut bool,
) -> Result<(String, Vec<ToolCall>), ProviderError> {
    let mut last_error = ProviderError::Unavailable {
        provider: "llm",
        message: "no language model is configured".into(),
    };
    let len = shared.chain.len();
    for (position, provider) in shared.chain.iter().enumerate() {
        let budget = shared
            .budgets
            .for_position(shared.budgets.llm_first_token, position, len);
        for attempt in 0..2 {
            let result = stream_once(
                shared,
                provider.as_ref(),
                turn,
                &request,
                started,
                budget,
                said_anything,
            )
            .await;
            match result {
                Ok(done) => return Ok(done),
                Err((error, partial)) => {
                    tracing::warn!(provider = provider.name(), attempt, %error, "language model failed");
                    shared.metrics.failure(provider.name(), "llm", error.kind());
                    if partial {
                        // The caller has heard part of this answer: a
                        // different model cannot continue it.
                        return Err(error);
                    }
                    // A slow provider is not retried: the caller is waiting.
                    let retry = attempt == 0
                        && error.is_retryable()
                        && !matches!(error, ProviderError::Timeout { .. });
                    last_error = error;
                    if !retry {
                        break;
                    }
                }
            }
        }
        shared.metrics.fallback(provider.name(), "llm");
        if let Some(next) = shared.chain.get(position + 1) {
            let reason = format!("{last_error}; {} takes over", next.name());
            let _ = send(&shared.events, Input::ProviderFallback { reason }).await;
        }
    }
    Err(last_error)
}

/// One try on one provider. The error says whether any of this try's text
/// reached the session.
async fn stream_once(
    shared: &LlmShared,
    provider: &dyn LanguageModel,
    turn: u32,
    request: &LlmRequest,
    started: Instant,
    budget: Duration,
    said_anything: &mut bool,
) -> Result<(String, Vec<ToolCall>), (ProviderError, bool)> {
    let filler_at = started + shared.budgets.filler_after;
    let timeout = |_: tokio::time::error::Elapsed| ProviderError::Timeout {
        provider: provider.name(),
        budget,
    };
    let first_deadline = Instant::now() + budget;
    let open = provider.stream(request.clone());
    tokio::pin!(open);
    let mut stream = loop {
        tokio::select! {
            opened = tokio::time::timeout_at(first_deadline, &mut open) => {
                break opened.map_err(timeout).and_then(|r| r).map_err(|e| (e, false))?;
            }
            () = tokio::time::sleep_until(filler_at), if !*said_anything => {
                *said_anything = true;
                let _ = send(&shared.events, Input::LlmText { turn, delta: shared.filler.clone() }).await;
            }
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut got_first = false;
    loop {
        let next = if got_first {
            stream.next().await
        } else {
            tokio::select! {
                next = tokio::time::timeout_at(first_deadline, stream.next()) => {
                    next.map_err(timeout).map_err(|e| (e, false))?
                }
                () = tokio::time::sleep_until(filler_at), if !*said_anything => {
                    *said_anything = true;
                    let _ = send(&shared.events, Input::LlmText { turn, delta: shared.filler.clone() }).await;
                    continue;
                }
            }
        };
        got_first = true;
        match next {
            None => {
                return Err((
                    ProviderError::Network {
                        provider: provider.name(),
                        message: "the stream ended before the completion finished".into(),
                    },
                    !text.is_empty(),
                ))
            }
            Some(Err(error)) => return Err((error, !text.is_empty())),
            Some(Ok(LlmEvent::Text(delta))) => {
                if delta.is_empty() {
                    continue;
                }
                if text.is_empty() {
                    shared.metrics.observe(
                        crate::metrics::Stage::LlmFirstToken,
                        provider.name(),
                        Instant::now().saturating_duration_since(started),
                    );
                }
                text.push_str(&delta);
                *said_anything = true;
                if !send(&shared.events, Input::LlmText { turn, delta }).await {
                    return Ok((text, Vec::new()));
                }
            }
            Some(Ok(LlmEvent::ToolCall(call))) => calls.push(call),
            Some(Ok(LlmEvent::Usage(usage))) => shared.meter.tokens(usage),
            Some(Ok(LlmEvent::Done { .. })) => {
                // Clients report usage before the finish (see LlmEvent).
                return Ok((text, calls));
            }
        }
    }
}

// ---------------------------------------------------------------- TTS

enum TtsCommand {
    Text { turn: u32, text: String, last: bool },
    Cancel { turn: u32 },
}

#[derive(Default)]
struct TurnState {
    /// Everything handed to the TTS for this turn.
    text: String,
    last: bool,
    audio_bytes: usize,
    first_text_at: Option<Instant>,
    done: bool,
}

struct TtsActor {
    name: &'static str,
    input: mpsc::Sender<TtsInput>,
    events: mpsc::Receiver<TtsEvent>,
}

fn start_tts(provider: &Arc<dyn TextToSpeech>, voice: &Voice) -> TtsActor {
    let (input, input_rx) = mpsc::channel(64);
    let (events_tx, events) = mpsc::channel(64);
    tokio::spawn(provider.run(voice.clone(), input_rx, events_tx));
    TtsActor {
        name: provider.name(),
        input,
        events,
    }
}

async fn tts_supervisor(
    chain: Vec<Arc<dyn TextToSpeech>>,
    voice: Voice,
    mut commands: mpsc::UnboundedReceiver<TtsCommand>,
    events: ProviderEvents,
    budgets: Budgets,
    metrics: Arc<Metrics>,
    meter: Arc<Meter>,
) {
    let mut index = 0;
    let mut actor = chain.first().map(|p| start_tts(p, &voice));
    let mut turns: BTreeMap<u32, TurnState> = BTreeMap::new();
    loop {
        // The earliest turn still waiting for its first audio.
        let tts_budget = budgets.for_position(budgets.tts_first_byte, index, chain.len());
        let deadline = turns
            .values()
            .filter(|t| t.audio_bytes == 0 && !t.done)
            .filter_map(|t| t.first_text_at)
            .min()
            .map(|at| at + tts_budget);
        let failed: Option<(u32, ProviderError)> = tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                match command {
                    TtsCommand::Text { turn, text, last } => {
                        let state = turns.entry(turn).or_default();
                        state.text.push_str(&text);
                        state.last |= last;
                        state.first_text_at.get_or_insert_with(Instant::now);
                        if actor.is_none() {
                            actor = chain.get(index).map(|p| start_tts(p, &voice));
                        }
                        match &actor {
                            Some(actor) => {
                                let _ = actor.input.send(TtsInput::Text { turn, text, last }).await;
                                None
                            }
                            None => Some((turn, ProviderError::Unavailable {
                                provider: "tts",
                                message: "no text-to-speech is configured".into(),
                            })),
                        }
                    }
                    TtsCommand::Cancel { turn } => {
                        if let Some(state) = turns.get_mut(&turn) {
                            state.done = true;
                            if let Some(actor) = &actor {
                                let _ = actor.input.send(TtsInput::Cancel { turn }).await;
                            }
                        }
                        None
                    }
                }
            }
            event = recv_tts(&mut actor) => match event {
                None => {
                    // The actor ended; the next text starts a new one.
                    let name = actor.take().map_or("tts", |a| a.name);
                    turns
                        .iter()
                        .find(|(_, t)| !t.done)
                        .map(|(turn, _)| (*turn, ProviderError::Network {
                            provider: name,
                            message: "the synthesiser stopped".into(),
                        }))
                }
                Some(TtsEvent::Audio { turn, audio, text_end }) => {
                    match turns.get_mut(&turn) {
                        Some(state) if !state.done => {
                            state.audio_bytes += audio.len();
                            if !send(&events, Input::TtsAudio { turn, audio, text_end }).await {
                                break;
                            }
                        }
                        _ => {}
                    }
                    None
                }
                Some(TtsEvent::Done { turn, characters }) => {
                    meter.tts_characters.fetch_add(characters as u64, Ordering::Relaxed);
                    if let Some(state) = turns.get_mut(&turn) {
                        if !state.done {
                            state.done = true;
                            if !send(&events, Input::TtsDone { turn }).await {
                                break;
                            }
                        }
                    }
                    None
                }
                Some(TtsEvent::Failed { turn, error }) => Some((turn, error)),
            },
            () = sleep_until(deadline) => turns
                .iter()
                .find(|(_, t)| t.audio_bytes == 0 && !t.done && t.first_text_at.is_some())
                .map(|(turn, _)| (*turn, ProviderError::Timeout {
                    provider: actor.as_ref().map_or("tts", |a| a.name),
                    budget: tts_budget,
                })),
        };
        // Finished turns are forgotten.
        turns.retain(|_, t| !t.done);
        let Some((turn, error)) = failed else {
            continue;
        };
        let provider = error.provider();
        tracing::warn!(provider, turn, %error, "text-to-speech failed");
        metrics.failure(provider, "tts", error.kind());
        metrics.fallback(provider, "tts");
        let Some(state) = turns.get_mut(&turn) else {
            continue;
        };
        if state.audio_bytes > 0 || index + 1 >= chain.len() {
            // Part of it was heard, or nobody else can say it.
            state.done = true;
            if state.audio_bytes == 0 && index + 1 >= chain.len() {
                // The next turn starts over from the first choice.
                index = 0;
                actor = None;
            }
            if !send(
                &events,
                Input::TurnFailed {
                    turn,
                    reason: error.to_string(),
                },
            )
            .await
            {
                break;
            }
            continue;
        }
        // Nothing of this turn was heard: the next provider says all of it,
        // and serves the rest of the call.
        index += 1;
        let Some(next) = chain.get(index).map(|p| start_tts(p, &voice)) else {
            continue;
        };
        let reason = format!("{error}; {} takes over", next.name);
        if !send(&events, Input::ProviderFallback { reason }).await {
            break;
        }
        for (id, pending) in turns.iter_mut().filter(|(_, t)| !t.done) {
            pending.first_text_at = Some(Instant::now());
            let _ = next
                .input
                .send(TtsInput::Text {
                    turn: *id,
                    text: pending.text.clone(),
                    last: pending.last,
                })
                .await;
        }
        actor = Some(next);
    }
}

async fn recv_tts(actor: &mut Option<TtsActor>) -> Option<TtsEvent> {
    match actor {
        Some(actor) => actor.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Everything a role list needs to be named in logs.
pub fn describe(chains: &Chains) -> String {
    format!("{chains:?}")
}

/// Tools offered to the model when the tenant's setup names none.
pub fn no_tools() -> Vec<ToolSpec> {
    Vec::new()
}
