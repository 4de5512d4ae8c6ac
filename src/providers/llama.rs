//! The offline language model: a GGUF chat model (SmolLM2-135M-Instruct in
//! the demo) run in-process on llama.cpp through the `llama-cpp-2` crate.
//!
//! One [`LocalLlm`] owns one dedicated worker thread, which owns the model
//! and one llama.cpp context with a few sequence slots. Every request is a
//! sequence: the worker decodes all active sequences together in one batch
//! per step (prompt chunks and generated tokens side by side), so two
//! concurrent calls share the CPU fairly instead of oversubscribing it.
//! Requests beyond the slot count wait in the worker's queue.
//!
//! Prompt prefix caching: a slot keeps the KV cache of the tokens it last
//! decoded (prompt plus completion) after its request ends. A phone call
//! re-sends the whole conversation every turn, so the next turn's prompt
//! starts with exactly what the slot already holds: the worker gives a new
//! request the free slot that loses least of its cache while matching the
//! prompt's start, drops the cache past the common prefix, and decodes
//! only the rest (always at least the last prompt token, for its logits).
//! When another slot holds a longer matching prefix (a tenant's system
//! prompt cached by another call), its cache is copied into the chosen
//! slot first. A running request owns its slot; nothing else touches that
//! slot's cache until it ends. [`LocalLlm::prefill`] warms a slot with a
//! conversation's start (the system prompt at call setup) without
//! generating anything.
//!
//! llama.cpp contexts are not `Sync` and must not be created in parallel;
//! keeping the model, the context and the samplers on one thread makes
//! [`LocalLlm`] `Send + Sync` without a lock. The thread count of llama.cpp
//! is the number of available cores (its default of 4 is ruinous on a
//! 2-core machine).
//!
//! Prompts are formatted with the chat template stored in the GGUF (ChatML
//! for SmolLM2), falling back to llama.cpp's built-in ChatML. Generation
//! stops at an end-of-generation or control token (`<|im_end|>`), or at
//! `max_tokens`. Text is streamed as it is produced; a token that ends in
//! the middle of a UTF-8 sequence is held back until the sequence
//! completes. Dropping the stream cancels the request: the worker checks
//! before every token whether anyone is still listening.
//!
//! Tools are accepted and ignored: a 135M-parameter model cannot call them
//! reliably. [`http::router`] serves the model as an OpenAI-compatible
//! `POST /v1/chat/completions` endpoint, so the production LLM client can
//! be pointed at it.

pub mod http;

use std::collections::VecDeque;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::roles::{
    LanguageModel, LlmEvent, LlmMessage, LlmRequest, LlmStream, ProviderError, TokenUsage,
};

/// The provider name in errors, logs and metrics.
const PROVIDER: &str = "smollm2";

/// Completion token limit when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// Settings of the offline model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// The `.gguf` file.
    pub model_path: PathBuf,
    /// Requests generated at the same time (sequence slots of the
    /// context); further requests queue.
    pub slots: u32,
    /// Context length of each slot in tokens: prompt plus completion.
    pub context_tokens: u32,
    /// llama.cpp worker threads; `None` means every available core.
    pub threads: Option<NonZeroUsize>,
}

impl LlamaConfig {
    /// Defaults for `model_path`: two slots of 2,048 tokens, all cores.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            slots: 2,
            context_tokens: 2048,
            threads: None,
        }
    }
}

/// Counters of the worker, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmStats {
    /// Requests accepted.
    pub requests: u64,
    /// Requests that ran to a stop token or their token limit.
    pub completed: u64,
    /// Requests abandoned because their consumer went away.
    pub cancelled: u64,
    /// Requests that failed inside llama.cpp.
    pub failed: u64,
    /// Prompt tokens decoded.
    pub prompt_tokens: u64,
    /// Prompt tokens not decoded because their KV cache was resident from
    /// an earlier request (prefix caching).
    pub reused_prompt_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
}

/// The worker's counters, shared with the handle.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    reused_prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LlmStats {
        LlmStats {
            requests: self.requests.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            reused_prompt_tokens: self.reused_prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
        }
    }
}

/// One request on its way to the worker.
struct Job {
    /// The conversation and sampling settings.
    request: LlmRequest,
    /// Answered once the prompt is tokenized and fits (or why not).
    accepted: oneshot::Sender<Result<(), ProviderError>>,
    /// Where the completion goes; closed when the consumer drops it, which
    /// is the cancellation signal.
    events: mpsc::UnboundedSender<Result<LlmEvent, ProviderError>>,
    /// Only decode the conversation into a slot's cache (no generation
    /// prompt, no completion): [`LocalLlm::prefill`].
    prefill: bool,
}

/// SmolLM2 (or any GGUF chat model) running in this process. Cheap to
/// share behind an `Arc`; dropping the last handle stops the worker once
/// its running requests end.
pub struct LocalLlm {
    /// The worker's queue.
    jobs: std_mpsc::Sender<Job>,
    /// The worker's counters.
    counters: Arc<Counters>,
    /// Threads llama.cpp uses.
    threads: usize,
}

impl std::fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLlm")
            .field("threads", &self.threads)
            .field("stats", &self.counters.snapshot())
            .finish()
    }
}

/// llama.cpp's backend may be initialised once per process.
fn backend() -> Result<&'static LlamaBackend, ProviderError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| unavailable(format!("llama.cpp backend: {message}")))
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: PROVIDER,
        message,
    }
}

fn rejected(message: String) -> ProviderError {
    ProviderError::Rejected {
        provider: PROVIDER,
        status: 400,
        message,
    }
}

fn internal(message: String) -> ProviderError {
    ProviderError::Server {
        provider: PROVIDER,
        status: 500,
        message,
    }
}

impl LocalLlm {
    /// Loads the model and starts the worker thread. Blocks while the
    /// model loads (well under a second for SmolLM2-135M); call it at
    /// startup or from `spawn_blocking`.
    pub fn load(config: LlamaConfig) -> Result<Self, ProviderError> {
        if !config.model_path.is_file() {
            return Err(unavailable(format!(
                "model file {} not found",
                config.model_path.display()
            )));
        }
        if config.slots == 0 || config.context_tokens < 16 {
            return Err(unavailable(
                "slots must be at least 1 and context_tokens at least 16".into(),
            ));
        }
        let threads = config
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let backend = backend()?;
        let (jobs, queue) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let counters = Arc::new(Counters::default());
        let worker_counters = counters.clone();
        std::thread::Builder::new()
            .name("llama-worker".into())
            .spawn(move || worker(backend, config, threads, queue, ready_tx, worker_counters))
            .map_err(|e| unavailable(format!("cannot start the model thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                jobs,
                counters,
                threads,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(unavailable("the model thread died while loading".into())),
        }
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> LlmStats {
        self.counters.snapshot()
    }

    /// Threads llama.cpp computes with.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Starts a streaming completion: resolves once the prompt has been
    /// formatted and tokenized and fits the context (a prompt that does not
    /// is `Rejected` with status 400), then yields `Text` pieces, one
    /// `Usage` and `Done` (`stop` or `length`). Dropping the stream stops
    /// generation before the next token.
    pub fn complete(
        &self,
        request: LlmRequest,
    ) -> impl std::future::Future<Output = Result<LlmStream, ProviderError>> + Send + 'static {
        let submitted = self.submit(request, false);
        async move {
            let events_rx = submitted.await?;
            let mut events_rx = events_rx;
            let stream = futures_util::stream::poll_fn(move |cx| events_rx.poll_recv(cx));
            Ok(Box::pin(stream) as LlmStream)
        }
    }

    /// Decodes `messages` (formatted without the assistant's generation
    /// prompt) into a free slot's cache and generates nothing, so that a
    /// later request starting with the same conversation decodes only what
    /// follows. Meant for call setup: prefill the system prompt while the
    /// caller is still listening to the greeting. Resolves once the cache
    /// is warm; dropping the future stops the prefill (what was decoded
    /// stays cached). Waits for a free slot like any request.
    pub fn prefill(
        &self,
        messages: Vec<LlmMessage>,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send + 'static {
        let request = LlmRequest {
            model: PROVIDER.into(),
            messages,
            tools: Vec::new(),
            temperature: None,
            max_tokens: None,
        };
        let submitted = self.submit(request, true);
        async move {
            let mut events_rx = submitted.await?;
            while let Some(event) = events_rx.recv().await {
                match event {
                    Ok(LlmEvent::Done { .. }) => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
            Err(unavailable("the model thread has stopped".into()))
        }
    }

    /// Queues a job; resolves to its event channel once it is accepted.
    fn submit(
        &self,
        request: LlmRequest,
        prefill: bool,
    ) -> impl std::future::Future<
        Output = Result<mpsc::UnboundedReceiver<Result<LlmEvent, ProviderError>>, ProviderError>,
    > + Send
           + 'static {
        let (accepted, accepted_rx) = oneshot::channel();
        let (events, events_rx) = mpsc::unbounded_channel();
        let sent = self.jobs.send(Job {
            request,
            accepted,
            events,
            prefill,
        });
        async move {
            if sent.is_err() {
                return Err(unavailable("the model thread has stopped".into()));
            }
            match accepted_rx.await {
                Ok(Ok(())) => Ok(events_rx),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(unavailable("the model thread has stopped".into())),
            }
        }
    }
}

impl LanguageModel for LocalLlm {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn stream(&self, request: LlmRequest) -> BoxFuture<'static, Result<LlmStream, ProviderError>> {
        self.complete(request).boxed()
    }
}

// ---------------------------------------------------------------- worker

/// Copying another slot's cache pays off only for a prefix at least this
/// much longer than the chosen slot's own (a copy moves the whole slot
/// buffer, a few megabytes for SmolLM2).
const COPY_GAIN_TOKENS: usize = 32;

/// A request admitted to the worker, waiting for or holding a slot.
struct Sequence {
    /// The whole prompt, until the request gets a slot.
    prompt: Vec<LlamaToken>,
    /// Prompt tokens not yet decoded, then the last sampled token.
    pending: VecDeque<LlamaToken>,
    /// Prompt length, for usage.
    prompt_tokens: u32,
    /// Tokens generated so far.
    generated: u32,
    /// Completion token limit; 0 for a prefill.
    max_tokens: u32,
    /// Only warm the cache: end once the prompt is decoded.
    prefill: bool,
    /// Sampler chain of this request.
    sampler: LlamaSampler,
    /// Bytes of a UTF-8 sequence split across tokens.
    partial: Vec<u8>,
    /// Where the completion goes.
    events: mpsc::UnboundedSender<Result<LlmEvent, ProviderError>>,
}

/// One sequence of the context: the request using it, if any, and the
/// tokens whose KV cache it holds.
#[derive(Default)]
struct Slot {
    /// The request that owns the slot now.
    running: Option<Sequence>,
    /// Tokens at positions `0..cached.len()` of this sequence's KV cache,
    /// exactly as decoded; kept after the request ends for reuse.
    cached: Vec<LlamaToken>,
    /// When the slot was last given to a request (`Serve::assigned` then),
    /// for least-recently-used ties.
    last_used: u64,
}

/// The model thread: loads the model, then serves jobs until every handle
/// is gone and no request is running.
fn worker(
    backend: &'static LlamaBackend,
    config: LlamaConfig,
    threads: usize,
    queue: std_mpsc::Receiver<Job>,
    ready: std_mpsc::Sender<Result<(), ProviderError>>,
    counters: Arc<Counters>,
) {
    let model =
        match LlamaModel::load_from_file(backend, &config.model_path, &LlamaModelParams::default())
        {
            Ok(model) => model,
            Err(e) => {
                let _ = ready.send(Err(unavailable(format!(
                    "cannot load {}: {e}",
                    config.model_path.display()
                ))));
                return;
            }
        };
    let threads_i32 = i32::try_from(threads).unwrap_or(1);
    let n_ctx = config.context_tokens.saturating_mul(config.slots);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(config.slots)
        .with_n_threads(threads_i32)
        .with_n_threads_batch(threads_i32);
    let mut context = match model.new_context(backend, params) {
        Ok(context) => context,
        Err(e) => {
            let _ = ready.send(Err(unavailable(format!(
                "cannot create a llama.cpp context: {e}"
            ))));
            return;
        }
    };
    let template = model
        .chat_template(None)
        .or_else(|_| LlamaChatTemplate::new("chatml"))
        .ok();
    let Some(template) = template else {
        let _ = ready.send(Err(unavailable("no usable chat template".into())));
        return;
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut serve = Serve {
        model: &model,
        template,
        slot_tokens: config.context_tokens,
        slots: (0..config.slots).map(|_| Slot::default()).collect(),
        waiting: VecDeque::new(),
        assigned: 0,
        counters,
    };
    let mut batch = LlamaBatch::new(512, 1);
    loop {
        // Block for work when idle; otherwise take what has arrived.
        if serve.idle() {
            match queue.recv() {
                Ok(job) => serve.accept(job),
                Err(_) => return,
            }
        }
        while let Ok(job) = queue.try_recv() {
            serve.accept(job);
        }
        serve.step(&mut context, &mut batch);
    }
}

/// The worker's state between steps.
struct Serve<'m> {
    /// The model (vocabulary, template).
    model: &'m LlamaModel,
    /// Its chat template.
    template: LlamaChatTemplate,
    /// Context tokens per slot.
    slot_tokens: u32,
    /// The slots; the index is llama.cpp's sequence id.
    slots: Vec<Slot>,
    /// Admitted requests waiting for a free slot.
    waiting: VecDeque<Sequence>,
    /// Slot assignments so far (the clock of `Slot::last_used`).
    assigned: u64,
    /// Shared counters.
    counters: Arc<Counters>,
}

/// Length of the common prefix of `a` and `b`.
fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Where a waiting request goes: the free slot `slot`, first taking the
/// cache of slot `copy_from` when that holds a longer prefix, keeping the
/// first `keep` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    slot: usize,
    copy_from: Option<usize>,
    keep: usize,
}

/// Chooses a free slot for `prompt` (non-empty), given each slot's cached
/// tokens, whether it is free, and when it was last used. The slot chosen
/// is the one whose cache loses least (tokens past the common prefix, which
/// belong to another conversation), then the longest prefix, then the least
/// recently used. Another slot's (running or not) longer prefix is copied
/// in when it gains at least [`COPY_GAIN_TOKENS`]. At least the last prompt
/// token is always left to decode.
fn place(prompt: &[LlamaToken], slots: &[(&[LlamaToken], bool, u64)]) -> Option<Placement> {
    let limit = prompt.len().saturating_sub(1);
    let prefix = |cached: &[LlamaToken]| common_prefix(cached, prompt).min(limit);
    let slot = slots
        .iter()
        .enumerate()
        .filter(|(_, (_, free, _))| *free)
        .min_by_key(|(_, (cached, _, last_used))| {
            let own = prefix(cached);
            (
                cached.len() - own.min(cached.len()),
                std::cmp::Reverse(own),
                *last_used,
            )
        })
        .map(|(index, _)| index)?;
    let own = prefix(slots[slot].0);
    let donor = slots
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != slot)
        .map(|(index, (cached, _, _))| (index, prefix(cached)))
        .max_by_key(|(_, keep)| *keep);
    Some(match donor {
        Some((index, keep)) if keep >= own + COPY_GAIN_TOKENS => Placement {
            slot,
            copy_from: Some(index),
            keep,
        },
        _ => Placement {
            slot,
            copy_from: None,
            keep: own,
        },
    })
}

impl Serve<'_> {
    fn idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(|s| s.running.is_none())
    }

    /// Formats and tokenizes a job's prompt and queues it, or answers why
    /// it cannot run.
    fn accept(&mut self, job: Job) {
        match self.admit(&job.request, job.prefill) {
            Ok((prompt, max_tokens, sampler)) => {
                if job.accepted.send(Ok(())).is_err() {
                    // The caller gave up before the answer.
                    return;
                }
                Counters::bump(&self.counters.requests, 1);
                self.waiting.push_back(Sequence {
                    prompt_tokens: u32::try_from(prompt.len()).unwrap_or(u32::MAX),
                    prompt,
                    pending: VecDeque::new(),
                    generated: 0,
                    max_tokens,
                    prefill: job.prefill,
                    sampler,
                    partial: Vec::new(),
                    events: job.events,
                });
            }
            Err(error) => {
                let _ = job.accepted.send(Err(error));
            }
        }
    }

    fn admit(
        &self,
        request: &LlmRequest,
        prefill: bool,
    ) -> Result<(Vec<LlamaToken>, u32, LlamaSampler), ProviderError> {
        let want = if prefill {
            0
        } else {
            request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
        };
        let tokens = self.fitting_prompt(&request.messages, !prefill, want)?;
        if tokens.is_empty() {
            return Err(rejected("the prompt is empty".into()));
        }
        let prompt_len = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        if prompt_len.saturating_add(1) >= self.slot_tokens {
            return Err(rejected(format!(
                "the prompt is {prompt_len} tokens; this model's context holds {}",
                self.slot_tokens
            )));
        }
        let sampler = sampler_for(self.model.n_vocab(), request.temperature);
        if prefill {
            return Ok((tokens, 0, sampler));
        }
        let room = self.slot_tokens - prompt_len - 1;
        let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).min(room);
        if max_tokens == 0 {
            return Err(rejected("max_tokens must be at least 1".into()));
        }
        Ok((tokens, max_tokens, sampler))
    }

    /// The prompt's tokens, with the oldest turns of a conversation too
    /// long for the context left out: the system prompt and the newest
    /// message always stay, and what is kept starts at a caller turn. When
    /// it must cut, it cuts down to three quarters of the context, so that
    /// the next several turns share the cut prompt's prefix (and its cache)
    /// instead of cutting, and re-evaluating, at every turn. (The caller's
    /// memory in the system prompt carries what older turns said.)
    fn fitting_prompt(
        &self,
        messages: &[LlmMessage],
        add_assistant: bool,
        reply: u32,
    ) -> Result<Vec<LlamaToken>, ProviderError> {
        let tokenize = |messages: &[LlmMessage]| -> Result<Vec<LlamaToken>, ProviderError> {
            let prompt = format_prompt(self.model, &self.template, messages, add_assistant)?;
            // Special tokens in the template (`<|im_start|>`) are parsed as
            // such; the BOS token is added only if the model asks for it.
            Ok(self.model.vocab().tokenize(prompt.as_bytes(), true, true))
        };
        let reply = reply.min(self.slot_tokens / 4);
        let fits = |tokens: &[LlamaToken], limit: u32| {
            u32::try_from(tokens.len())
                .is_ok_and(|n| n.saturating_add(reply).saturating_add(1) < limit)
        };
        let tokens = tokenize(messages)?;
        if fits(&tokens, self.slot_tokens) {
            return Ok(tokens);
        }
        let target = self.slot_tokens / 4 * 3;
        let mut kept = messages.to_vec();
        let mut best = tokens;
        while drop_oldest_turn(&mut kept) {
            best = tokenize(&kept)?;
            if fits(&best, target) {
                break;
            }
        }
        tracing::debug!(
            messages = messages.len(),
            kept = kept.len(),
            tokens = best.len(),
            "conversation cut to fit the local model's context"
        );
        Ok(best)
    }

    /// Gives the front waiting request a free slot, reusing the longest
    /// cached prefix it can; false when no slot is free.
    fn assign(&mut self, context: &mut LlamaContext<'_>) -> bool {
        let Some(sequence) = self.waiting.front() else {
            return false;
        };
        let view: Vec<(&[LlamaToken], bool, u64)> = self
            .slots
            .iter()
            .map(|s| (s.cached.as_slice(), s.running.is_none(), s.last_used))
            .collect();
        let Some(placement) = place(&sequence.prompt, &view) else {
            return false;
        };
        let Some(mut sequence) = self.waiting.pop_front() else {
            return false;
        };
        let id = placement.slot;
        let mut keep = placement.keep;
        if let Some(donor) = placement.copy_from {
            // The copy holds the donor's whole cache; the trim below keeps
            // the shared prefix.
            let copied = self.slots.get(donor).map(|d| d.cached.clone());
            match (copied, seq_id(donor), seq_id(id)) {
                (Some(tokens), Some(src), Some(dst)) => {
                    // A whole-sequence copy (the only kind llama.cpp does
                    // between separate KV streams), trimmed below.
                    clear_slot(context, id);
                    match context.copy_kv_cache_seq(src, dst, None, None) {
                        Ok(()) => self.slots[id].cached = tokens,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot copy a llama.cpp sequence");
                            self.slots[id].cached.clear();
                            keep = 0;
                        }
                    }
                }
                _ => keep = 0,
            }
        }
        let slot = &mut self.slots[id];
        keep = keep.min(slot.cached.len());
        if keep < slot.cached.len() {
            let removed = u32::try_from(keep)
                .ok()
                .zip(u32::try_from(id).ok())
                .and_then(|(p0, seq)| context.clear_kv_cache_seq(Some(seq), Some(p0), None).ok());
            if removed == Some(true) {
                slot.cached.truncate(keep);
            } else {
                clear_slot(context, id);
                slot.cached.clear();
                keep = 0;
            }
        }
        Counters::bump(&self.counters.reused_prompt_tokens, keep as u64);
        let prompt = std::mem::take(&mut sequence.prompt);
        sequence.pending = prompt
            .get(keep..)
            .unwrap_or_default()
            .iter()
            .copied()
            .collect();
        self.assigned += 1;
        slot.last_used = self.assigned;
        slot.running = Some(sequence);
        true
    }

    /// Drops a failed request from every running slot, with its cache.
    fn fail_all(&mut self, context: &mut LlamaContext<'_>, message: &str) {
        for (id, slot) in self.slots.iter_mut().enumerate() {
            if let Some(sequence) = slot.running.take() {
                Counters::bump(&self.counters.failed, 1);
                let _ = sequence.events.send(Err(internal(message.to_string())));
                clear_slot(context, id);
                slot.cached.clear();
            }
        }
    }

    /// One decode of every active sequence, then one token each.
    fn step(&mut self, context: &mut LlamaContext<'_>, batch: &mut LlamaBatch<'_>) {
        // Forget sequences nobody listens to any more (what they decoded
        // stays cached), then fill free slots.
        for slot in &mut self.slots {
            if slot.running.as_ref().is_some_and(|s| s.events.is_closed()) {
                slot.running = None;
                Counters::bump(&self.counters.cancelled, 1);
            }
        }
        self.waiting.retain(|s| {
            let open = !s.events.is_closed();
            if !open {
                Counters::bump(&self.counters.cancelled, 1);
            }
            open
        });
        while self.assign(context) {}

        // Every generating sequence contributes its one token first; the
        // prompts share what is left of the batch.
        batch.clear();
        let capacity = 512usize;
        let generating = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref())
            .filter(|s| s.generated > 0 || s.pending.len() == 1)
            .count();
        let mut room = capacity.saturating_sub(generating);
        let mut sample_at: Vec<(usize, i32)> = Vec::new();
        let mut used = 0i32;
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(sequence) = slot.running.as_mut() else {
                continue;
            };
            let take = if sequence.generated > 0 || sequence.pending.len() == 1 {
                1
            } else {
                let take = sequence.pending.len().min(room);
                room -= take;
                take
            };
            let Some(seq) = seq_id(id) else { continue };
            let mut taken = 0u64;
            for i in 0..take {
                let Some(&token) = sequence.pending.front() else {
                    break;
                };
                let last = sequence.pending.len() == 1 && i + 1 == take;
                let Ok(position) = i32::try_from(slot.cached.len()) else {
                    break;
                };
                if batch.add(token, position, &[seq], last).is_err() {
                    break;
                }
                sequence.pending.pop_front();
                slot.cached.push(token);
                taken += 1;
                if last {
                    sample_at.push((id, used));
                }
                used += 1;
            }
            if sequence.generated == 0 {
                Counters::bump(&self.counters.prompt_tokens, taken);
            }
        }
        if used == 0 {
            return;
        }
        if let Err(e) = context.decode(batch) {
            tracing::error!(error = %e, "llama.cpp decode failed");
            self.fail_all(context, &format!("llama.cpp decode failed: {e}"));
            return;
        }

        for (id, index) in sample_at {
            let Some(sequence) = self.slots.get_mut(id).and_then(|s| s.running.as_mut()) else {
                continue;
            };
            let finish = if sequence.prefill {
                Some("prefill")
            } else {
                let token = sequence.sampler.sample(context, index);
                self.emit(id, token)
            };
            if let Some(reason) = finish {
                if let Some(sequence) = self.slots.get_mut(id).and_then(|s| s.running.take()) {
                    finish_sequence(sequence, reason, &self.counters);
                }
            }
        }
    }

    /// Handles one sampled token of slot `id`; returns the finish reason
    /// when the sequence is over.
    fn emit(&mut self, id: usize, token: LlamaToken) -> Option<&'static str> {
        let model = self.model;
        let sequence = self.slots.get_mut(id).and_then(|s| s.running.as_mut())?;
        let vocab = model.vocab();
        if vocab.is_eog(token) || vocab.is_control(token) {
            return Some("stop");
        }
        sequence.generated += 1;
        Counters::bump(&self.counters.generated_tokens, 1);
        vocab.token_to_piece_into(token, &mut sequence.partial, false, None);
        let text = take_utf8(&mut sequence.partial);
        if !text.is_empty() && sequence.events.send(Ok(LlmEvent::Text(text))).is_err() {
            // The consumer left; the next step frees the slot.
            return None;
        }
        if sequence.generated >= sequence.max_tokens {
            return Some("length");
        }
        sequence.pending.push_back(token);
        None
    }
}

/// Sends the tail of a finished sequence: leftover bytes, usage, done.
fn finish_sequence(mut sequence: Sequence, reason: &'static str, counters: &Counters) {
    Counters::bump(&counters.completed, 1);
    if !sequence.partial.is_empty() {
        let rest = String::from_utf8_lossy(&sequence.partial).into_owned();
        sequence.partial.clear();
        let _ = sequence.events.send(Ok(LlmEvent::Text(rest)));
    }
    let _ = sequence.events.send(Ok(LlmEvent::Usage(TokenUsage {
        prompt: sequence.prompt_tokens,
        completion: sequence.generated,
    })));
    let _ = sequence.events.send(Ok(LlmEvent::Done {
        finish_reason: reason.to_string(),
    }));
}

/// llama.cpp's sequence id of slot `id`.
fn seq_id(id: usize) -> Option<i32> {
    i32::try_from(id).ok()
}

/// Empties slot `id`'s KV cache.
fn clear_slot(context: &mut LlamaContext<'_>, id: usize) {
    let id = u32::try_from(id).unwrap_or(0);
    if let Err(e) = context.clear_kv_cache_seq(Some(id), None, None) {
        tracing::warn!(error = %e, "cannot clear a llama.cpp sequence");
    }
}

/// Greedy at temperature 0 or none; otherwise top-k 40, top-p 0.95 and
/// the temperature, seeded at random. A mild repetition penalty keeps a
/// small model from looping.
fn sampler_for(n_vocab: i32, temperature: Option<f32>) -> LlamaSampler {
    let penalties = LlamaSampler::penalties(n_vocab, 64, 1.1, 0.0, 0.0);
    match temperature {
        Some(t) if t.is_finite() && t > 0.0 => LlamaSampler::chain_simple([
            penalties,
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(0.95, 1),
            LlamaSampler::temp(t.min(2.0)),
            LlamaSampler::dist(rand::random()),
        ]),
        _ => LlamaSampler::chain_simple([penalties, LlamaSampler::greedy()]),
    }
}

/// The conversation in the model's chat template, ending with the opened
/// assistant turn when `add_assistant` is set. Tool calls are left out; tool results are shown to the
/// model as user messages.
/// Removes the oldest turn after the system prompt (and any tool results
/// or agent lines left leading), keeping the last message; false when
/// nothing more can go.
fn drop_oldest_turn(messages: &mut Vec<LlmMessage>) -> bool {
    let first = usize::from(matches!(messages.first(), Some(LlmMessage::System(_))));
    if messages.len() <= first + 1 {
        return false;
    }
    messages.remove(first);
    while messages.len() > first + 1 && !matches!(messages[first], LlmMessage::User(_)) {
        messages.remove(first);
    }
    true
}

fn format_prompt(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    messages: &[LlmMessage],
    add_assistant: bool,
) -> Result<String, ProviderError> {
    let chat = messages
        .iter()
        .map(|message| {
            let (role, content) = match message {
                LlmMessage::System(text) => ("system", text.clone()),
                LlmMessage::User(text) => ("user", text.clone()),
                LlmMessage::Assistant { content, .. } => ("assistant", content.clone()),
                LlmMessage::Tool { content, .. } => ("user", format!("Tool result: {content}")),
            };
            LlamaChatMessage::new(role.into(), content)
                .map_err(|e| rejected(format!("unusable message: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    model
        .apply_chat_template(template, &chat, add_assistant)
        .map_err(|e| rejected(format!("cannot apply the chat template: {e}")))
}

/// Takes the complete UTF-8 text at the front of `bytes`, leaving an
/// unfinished sequence at the end for the next token. Invalid bytes become
/// U+FFFD.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                bytes.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // The prefix is valid by construction.
                out.push_str(&String::from_utf8_lossy(&bytes[..valid]));
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes.drain(..valid + bad);
                    }
                    None => {
                        bytes.drain(..valid);
                        return out;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_held_back() {
        let euro = "€".as_bytes();
        let mut buffer = vec![b'a', euro[0], euro[1]];
        assert_eq!(take_utf8(&mut buffer), "a");
        assert_eq!(buffer, &euro[..2]);
        buffer.push(euro[2]);
        assert_eq!(take_utf8(&mut buffer), "€");
        assert!(buffer.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut buffer = vec![b'a', 0xff, b'b'];
        assert_eq!(take_utf8(&mut buffer), "a\u{fffd}b");
        assert!(buffer.is_empty());
    }

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken::new).collect()
    }

    #[test]
    fn a_conversation_goes_back_to_its_own_slot() {
        let own = tokens(&[1, 2, 3, 4, 5]);
        let other = tokens(&[1, 2, 9]);
        let prompt = tokens(&[1, 2, 3, 4, 5, 6, 7]);
        for slots in [
            vec![(own.as_slice(), true, 1), (other.as_slice(), true, 2)],
            vec![(other.as_slice(), true, 2), (own.as_slice(), true, 1)],
        ] {
            let placement = place(&prompt, &slots).expect("a free slot");
            assert_eq!(slots[placement.slot].0, own.as_slice());
            assert_eq!(placement.keep, 5);
            assert_eq!(placement.copy_from, None);
        }
    }

    #[test]
    fn the_last_prompt_token_is_always_decoded() {
        let prompt = tokens(&[1, 2, 3]);
        let cached = tokens(&[1, 2, 3, 4]);
        let placement = place(&prompt, &[(cached.as_slice(), true, 1)]).expect("free");
        assert_eq!(placement.keep, 2);
    }

    #[test]
    fn a_new_conversation_prefers_an_empty_slot_and_copies_the_shared_prefix() {
        let system: Vec<i32> = (0..100).collect();
        let busy = tokens(&[system.as_slice(), &[500, 501]].concat());
        let prompt = tokens(&[system.as_slice(), &[700, 701]].concat());
        let slots = [(busy.as_slice(), false, 1), (&[][..], true, 0)];
        let placement = place(&prompt, &slots).expect("a free slot");
        assert_eq!(
            placement,
            Placement {
                slot: 1,
                copy_from: Some(0),
                keep: 100
            }
        );
        // A short shared prefix is not worth a copy.
        let short = tokens(&[0, 1, 2, 800]);
        let slots = [(short.as_slice(), false, 1), (&[][..], true, 0)];
        let placement = place(&prompt, &slots).expect("a free slot");
        assert_eq!(placement.copy_from, None);
        assert_eq!(placement.keep, 0);
    }

    #[test]
    fn no_free_slot_no_placement() {
        let cached = tokens(&[1]);
        assert_eq!(
            place(&tokens(&[1, 2]), &[(cached.as_slice(), false, 1)]),
            None
        );
    }

    #[test]
    fn a_missing_model_file_is_unavailable() {
        let error = LocalLlm::load(LlamaConfig::new("/nonexistent/model.gguf"))
            .expect_err("no model there");
        assert_eq!(error.kind(), "unavailable");
        assert_eq!(error.provider(), "smollm2");
    }
}

#[cfg(test)]
mod trim_tests {
    use super::*;

    fn user(t: &str) -> LlmMessage {
        LlmMessage::User(t.into())
    }

    fn agent(t: &str) -> LlmMessage {
        LlmMessage::Assistant {
            content: t.into(),
            tool_calls: Vec::new(),
        }
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_system_prompt_and_last_message_stay() {
        let mut m = vec![
            LlmMessage::System("rules".into()),
            user("one"),
            agent("a1"),
            LlmMessage::Tool {
                id: "t".into(),
                content: "done".into(),
            },
            agent("a2"),
            user("two"),
            agent("a3"),
            user("three"),
        ];
        assert!(drop_oldest_turn(&mut m));
        // "one" went, and the agent lines and tool result it led to.
        assert_eq!(m[0], LlmMessage::System("rules".into()));
        assert_eq!(m[1], user("two"));
        assert!(drop_oldest_turn(&mut m));
        assert_eq!(m, vec![LlmMessage::System("rules".into()), user("three")]);
        assert!(!drop_oldest_turn(&mut m), "the newest message stays");
    }
}
