//! Moonshine speech-to-text over its C API (libmoonshine.so from the
//! `moonshine-voice` wheel, fetched by [`crate::models`]).
//!
//! Moonshine transcribes whole utterances, so the per-call actor buffers
//! caller audio (mu-law decoded to linear PCM) and transcribes when our
//! endpointer reports [`SttInput::UtteranceEnded`]: the audio since the
//! previous utterance, trimmed (or padded) to start 300 ms before the
//! first frame loud enough to be speech, with 300 ms of silence after it,
//! upsampled to 16 kHz with [`media::resample`] (measurably better than
//! handing the library 8 kHz). One `Final` is reported per `UtteranceEnded`, in
//! order (empty text when nothing was said).
//!
//! Speculation: when our endpointer reports a pause inside an utterance
//! ([`SttInput::Paused`]), the audio so far is transcribed at once, while
//! the end silence runs. If the utterance then ends where the pause began,
//! that text is the final, ready without waiting for the model. And if the
//! words already make a turn by [`AnswerAtPause`] (by default: a question),
//! the final is reported at the pause itself, so the agent can answer
//! before the end silence is over; if the caller goes on after all, what
//! follows is transcribed as a turn of its own (and the endpointer's
//! `Resumed` lets the session treat it as a barge-in).
//!
//! The library and model are loaded once per [`MoonshineStt`] and shared
//! by every call. A transcriber handle keeps its last transcript inside
//! the library (the caller never frees it), so one handle serves one
//! transcription at a time: handles are pooled, up to
//! [`MoonshineConfig::transcribers`], each loaded on first need. The C API
//! has no thread-count option; onnxruntime's default (one thread per
//! physical core) applies to each running transcription.

use std::collections::VecDeque;
use std::ffi::{c_char, c_float, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use media::frame::SampleTime;
use media::g711::ulaw_to_linear;
use tokio::sync::mpsc;

use super::resample_clip;
use crate::models;
use crate::providers::roles::{ProviderError, SpeechToText, SttEvent, SttInput};

const PROVIDER: &str = "moonshine";

/// The C header version this binding was written against
/// (`MOONSHINE_HEADER_VERSION` of moonshine-c-api.h, API 2.0).
const HEADER_VERSION: i32 = 20000;
/// `MOONSHINE_MODEL_ARCH_TINY`.
const MODEL_ARCH_TINY: u32 = 0;
/// Rate the model runs at; we upsample to it ourselves.
const MODEL_RATE_HZ: u32 = 16_000;
/// Caller audio rate.
const CALL_RATE_HZ: u32 = media::TELEPHONE_RATE_HZ;
/// Audio kept before the first loud frame of an utterance.
const PRE_ROLL_SAMPLES: usize = 300 * 8;
/// Longest utterance kept (Moonshine's tiny model is meant for short
/// segments); older audio is dropped.
const MAX_BUFFER_SAMPLES: usize = 30 * 8000;
/// A 20 ms frame at this level or above counts as speech when trimming.
const SPEECH_DBFS: f32 = -45.0;
/// Gaps in the caller's stream longer than this are not filled with
/// silence (the buffer restarts instead).
const MAX_GAP_SAMPLES: u64 = 2 * 8000;

/// Where the model is and how many transcriptions may run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoonshineConfig {
    /// The installed [`models::MOONSHINE`] package directory (what
    /// `models::ensure(data_dir, "moonshine")` returns).
    pub install_dir: PathBuf,
    /// Transcriber handles (concurrent transcriptions), at least 1.
    pub transcribers: usize,
    /// Which speculative transcripts end the caller's turn at a pause.
    pub answer_at_pause: AnswerAtPause,
}

impl MoonshineConfig {
    /// Defaults for an install directory: two transcribers, questions
    /// answered at a pause.
    pub fn new(install_dir: impl Into<PathBuf>) -> Self {
        Self {
            install_dir: install_dir.into(),
            transcribers: 2,
            answer_at_pause: AnswerAtPause::Questions,
        }
    }
}

/// When the words heard up to a pause end the caller's turn without
/// waiting for the rest of the end silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerAtPause {
    /// Never: the pause only prepares the final.
    Never,
    /// When they end in a question of at least three words: a question
    /// hands the turn over, while a statement is often followed by more
    /// (a caller explaining a claim pauses 350–500 ms between sentences).
    Questions,
}

impl AnswerAtPause {
    /// Whether `text` ends the turn.
    pub fn ends_turn(self, text: &str) -> bool {
        match self {
            AnswerAtPause::Never => false,
            AnswerAtPause::Questions => {
                let text = text.trim();
                text.ends_with('?') && text.split_whitespace().count() >= 3
            }
        }
    }
}

/// `transcript_line_t` (88 bytes on LP64).
#[repr(C)]
struct RawLine {
    text: *const c_char,
    audio_data: *const c_float,
    audio_data_count: usize,
    start_time: c_float,
    duration: c_float,
    id: u64,
    is_complete: i8,
    is_updated: i8,
    is_new: i8,
    has_text_changed: i8,
    have_speakers_changed: i8,
    speaker_spans: *const c_void,
    speaker_span_count: u64,
    last_transcription_latency_ms: u32,
    words: *const c_void,
    word_count: u64,
}

/// `transcript_t`.
#[repr(C)]
struct RawTranscript {
    lines: *const RawLine,
    line_count: u64,
}

/// `moonshine_option_t`.
#[repr(C)]
struct RawOption {
    name: *const c_char,
    value: *const c_char,
}

const _: () = assert!(std::mem::size_of::<RawLine>() == 88);
const _: () = assert!(std::mem::size_of::<RawTranscript>() == 16);

type LoadFn = unsafe extern "C" fn(*const c_char, u32, *const RawOption, u64, i32) -> i32;
type FreeFn = unsafe extern "C" fn(i32);
type TranscribeFn =
    unsafe extern "C" fn(i32, *const c_float, u64, i32, u32, *mut *mut RawTranscript) -> i32;
type ErrorFn = unsafe extern "C" fn(i32) -> *const c_char;

/// The library's entry points. The library is never unloaded (its
/// onnxruntime keeps threads), so these stay valid for the process.
struct Api {
    load: LoadFn,
    free: FreeFn,
    transcribe: TranscribeFn,
    error_to_string: ErrorFn,
}

impl Api {
    fn open(library: &Path) -> Result<Self, String> {
        // SAFETY: loading runs the library's initialisers; libmoonshine and
        // its onnxruntime come from the pinned, checksummed wheel.
        let lib = unsafe { libloading::Library::new(library) }
            .map_err(|e| format!("could not load {}: {e}", library.display()))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY: the signatures match moonshine-c-api.h (API 2.0), as read
        // from the wheel's own ctypes bindings.
        unsafe {
            Ok(Self {
                load: *symbol(lib, b"moonshine_load_transcriber_from_files\0")?,
                free: *symbol(lib, b"moonshine_free_transcriber\0")?,
                transcribe: *symbol(lib, b"moonshine_transcribe_without_streaming\0")?,
                error_to_string: *symbol(lib, b"moonshine_error_to_string\0")?,
            })
        }
    }

    fn error_text(&self, code: i32) -> String {
        // SAFETY: returns a static string or null.
        let ptr = unsafe { (self.error_to_string)(code) };
        if ptr.is_null() {
            return format!("error {code}");
        }
        // SAFETY: non-null, NUL-terminated, static.
        let text = unsafe { CStr::from_ptr(ptr) }.to_string_lossy();
        format!("{text} ({code})")
    }
}

unsafe fn symbol<T>(
    lib: &'static libloading::Library,
    name: &[u8],
) -> Result<libloading::Symbol<'static, T>, String> {
    // SAFETY: the caller names the right type for the symbol.
    unsafe { lib.get::<T>(name) }.map_err(|e| {
        format!(
            "libmoonshine lacks {}: {e}",
            String::from_utf8_lossy(name).trim_end_matches('\0')
        )
    })
}

/// One loaded transcriber handle.
struct Transcriber(i32);

/// The shared model: the library, the model path and a pool of handles.
struct Model {
    api: Api,
    model_dir: CString,
    /// Idle handles and how many exist. A std mutex: held only to check a
    /// handle out or in, never across a transcription.
    pool: Mutex<Pool>,
    /// Signalled when a handle is checked in (or a load failed).
    returned: Condvar,
    /// Most handles that may exist.
    limit: usize,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Transcriber>,
    loaded: usize,
}

impl Model {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes an idle handle, loads a new one under the limit, or waits for
    /// one to come back. Blocking.
    fn check_out(&self) -> Result<Transcriber, ProviderError> {
        let mut pool = self.lock_pool();
        loop {
            if let Some(handle) = pool.idle.pop() {
                return Ok(handle);
            }
            if pool.loaded < self.limit {
                pool.loaded += 1;
                drop(pool);
                let loaded = self.load_transcriber();
                if loaded.is_err() {
                    self.lock_pool().loaded -= 1;
                    self.returned.notify_one();
                }
                return loaded;
            }
            pool = self
                .returned
                .wait(pool)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn check_in(&self, handle: Transcriber) {
        self.lock_pool().idle.push(handle);
        self.returned.notify_one();
    }

    fn load_transcriber(&self) -> Result<Transcriber, ProviderError> {
        // SAFETY: the path is NUL-terminated and outlives the call; no
        // options are passed.
        let handle = unsafe {
            (self.api.load)(
                self.model_dir.as_ptr(),
                MODEL_ARCH_TINY,
                std::ptr::null(),
                0,
                HEADER_VERSION,
            )
        };
        if handle < 0 {
            return Err(unavailable(format!(
                "could not load the model in {}: {}",
                self.model_dir.to_string_lossy(),
                self.api.error_text(handle)
            )));
        }
        Ok(Transcriber(handle))
    }

    /// Transcribes 16 kHz float audio with a handle held exclusively.
    fn transcribe(&self, handle: &Transcriber, audio: &[f32]) -> Result<String, ProviderError> {
        let mut out: *mut RawTranscript = std::ptr::null_mut();
        // SAFETY: `audio` is valid for its length; the handle is used by this
        // thread only; `out` receives a pointer owned by the transcriber.
        let code = unsafe {
            (self.api.transcribe)(
                handle.0,
                audio.as_ptr(),
                audio.len() as u64,
                MODEL_RATE_HZ as i32,
                0,
                &mut out,
            )
        };
        if code != 0 {
            return Err(ProviderError::Protocol {
                provider: PROVIDER,
                message: format!("transcription failed: {}", self.api.error_text(code)),
            });
        }
        // SAFETY: on success `out` is null or a transcript that stays valid
        // until the next call on this handle, which cannot happen before we
        // return (we hold the handle).
        Ok(unsafe { transcript_text(out) })
    }
}

/// Joins the text of every line of a transcript.
unsafe fn transcript_text(transcript: *const RawTranscript) -> String {
    let mut words: Vec<String> = Vec::new();
    // SAFETY: the caller guarantees `transcript` is null or valid.
    let Some(t) = (unsafe { transcript.as_ref() }) else {
        return String::new();
    };
    if t.lines.is_null() {
        return String::new();
    }
    for i in 0..t.line_count as usize {
        // SAFETY: `lines` holds `line_count` entries.
        let line = unsafe { &*t.lines.add(i) };
        if line.text.is_null() {
            continue;
        }
        // SAFETY: line text is NUL-terminated UTF-8 owned by the transcript.
        let text = unsafe { CStr::from_ptr(line.text) }.to_string_lossy();
        let text = text.trim();
        if !text.is_empty() {
            words.push(text.to_owned());
        }
    }
    words.join(" ")
}

impl Drop for Model {
    fn drop(&mut self) {
        let pool = self
            .pool
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for t in std::mem::take(&mut pool.idle) {
            // SAFETY: each handle was loaded by this library and is idle.
            unsafe { (self.api.free)(t.0) };
        }
    }
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: PROVIDER,
        message,
    }
}

/// Moonshine speech-to-text: cheap to clone, shares one loaded model.
#[derive(Clone)]
pub struct MoonshineStt {
    model: Arc<Model>,
    /// Which speculative transcripts end a turn at a pause.
    answer_at_pause: AnswerAtPause,
}

impl std::fmt::Debug for MoonshineStt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoonshineStt")
            .field("model_dir", &self.model.model_dir)
            .finish_non_exhaustive()
    }
}

impl MoonshineStt {
    /// Loads the library and one transcriber (so a broken install fails
    /// here, not on the first call). Blocking: call it from
    /// `spawn_blocking` or at start-up.
    pub fn load(config: &MoonshineConfig) -> Result<Self, ProviderError> {
        let library = config.install_dir.join(models::MOONSHINE_LIBRARY);
        let model_dir = config.install_dir.join(models::MOONSHINE_MODEL_DIR);
        if !library.is_file() || !model_dir.is_dir() {
            return Err(unavailable(format!(
                "the Moonshine model is not installed in {} (run `switchboard models fetch --model moonshine`)",
                config.install_dir.display()
            )));
        }
        // dlopen treats a relative path as relative to the working
        // directory; make it absolute so a later chdir cannot matter.
        let library = std::fs::canonicalize(&library).unwrap_or(library);
        let model_dir = std::fs::canonicalize(&model_dir).unwrap_or(model_dir);
        let api = Api::open(&library).map_err(unavailable)?;
        let model_dir = CString::new(model_dir.to_string_lossy().into_owned())
            .map_err(|_| unavailable("the model path contains a NUL byte".to_owned()))?;
        let model = Model {
            api,
            model_dir,
            pool: Mutex::new(Pool::default()),
            returned: Condvar::new(),
            limit: config.transcribers.max(1),
        };
        let first = model.check_out()?;
        model.check_in(first);
        Ok(Self {
            model: Arc::new(model),
            answer_at_pause: config.answer_at_pause,
        })
    }

    /// Transcribes 8 kHz linear PCM on this thread (blocking; waits for a
    /// free transcriber). Calls go through [`SpeechToText::run`], which
    /// runs this in `spawn_blocking`.
    pub fn transcribe_blocking(&self, pcm_8k: &[i16]) -> Result<String, ProviderError> {
        transcribe_with(&self.model, pcm_8k)
    }

    async fn transcribe(model: Arc<Model>, pcm_8k: Vec<i16>) -> Result<String, ProviderError> {
        tokio::task::spawn_blocking(move || transcribe_with(&model, &pcm_8k))
            .await
            .map_err(|e| unavailable(format!("the transcription task failed: {e}")))?
    }
}

/// Checks a handle out, transcribes, and checks it back in: a handle is
/// never used by two threads at once.
fn transcribe_with(model: &Model, pcm_8k: &[i16]) -> Result<String, ProviderError> {
    let handle = model.check_out()?;
    let result = resample_clip(&prepare(pcm_8k), CALL_RATE_HZ, MODEL_RATE_HZ)
        .map_err(|e| ProviderError::Protocol {
            provider: PROVIDER,
            message: format!("could not resample the audio: {e}"),
        })
        .and_then(|pcm| {
            let audio: Vec<f32> = pcm.iter().map(|&s| f32::from(s) / 32768.0).collect();
            model.transcribe(&handle, &audio)
        });
    model.check_in(handle);
    result
}

/// The caller's audio since the last utterance, as linear 8 kHz PCM.
#[derive(Debug, Default)]
struct UtteranceBuffer {
    /// Stream time of `samples[0]`.
    start: SampleTime,
    /// Decoded samples.
    samples: VecDeque<i16>,
}

impl UtteranceBuffer {
    fn end(&self) -> SampleTime {
        self.start + self.samples.len() as u64
    }

    fn push(&mut self, start: SampleTime, frame: &[u8]) {
        if self.samples.is_empty() {
            self.start = start;
        }
        let end = self.end();
        if start > end {
            let gap = start - end;
            if gap > MAX_GAP_SAMPLES {
                self.samples.clear();
                self.start = start;
            } else {
                self.samples.extend(std::iter::repeat_n(0i16, gap as usize));
            }
        }
        // Skip whatever part of the frame we already hold (a repeat).
        let skip = (self.end().saturating_sub(start) as usize).min(frame.len());
        self.samples
            .extend(frame[skip..].iter().map(|&c| ulaw_to_linear(c)));
        let excess = self.samples.len().saturating_sub(MAX_BUFFER_SAMPLES);
        if excess > 0 {
            self.samples.drain(..excess);
            self.start += excess as u64;
        }
    }

    /// A copy of the audio up to stream time `end`, left in place.
    fn peek_until(&self, end: SampleTime) -> Vec<i16> {
        let cut = (end.saturating_sub(self.start) as usize).min(self.samples.len());
        self.samples.iter().take(cut).copied().collect()
    }

    /// Drops the audio up to stream time `end` (already transcribed).
    fn drop_until(&mut self, end: SampleTime) {
        let cut = (end.saturating_sub(self.start) as usize).min(self.samples.len());
        self.samples.drain(..cut);
        self.start += cut as u64;
    }

    /// Removes and returns the audio up to stream time `end`.
    fn take_until(&mut self, end: SampleTime) -> Vec<i16> {
        let utterance = self.peek_until(end);
        self.drop_until(end);
        utterance
    }
}

/// Shapes an utterance the way the tiny model hears best: exactly
/// [`PRE_ROLL_SAMPLES`] of lead-in before the first frame at
/// [`SPEECH_DBFS`] or louder (older audio dropped, digital silence added
/// when there is less), and as much silence again after the end. (Without
/// lead-in the model tends to invent a word such as "You" at the start.)
/// Audio with no loud frame is only padded.
fn prepare(pcm: &[i16]) -> Vec<i16> {
    let frame = media::FRAME_SAMPLES;
    let first_loud = pcm
        .chunks(frame)
        .position(|chunk| media::vad::level_dbfs(chunk) >= SPEECH_DBFS);
    let (body, lead) = match first_loud {
        Some(index) => {
            let onset = index * frame;
            let from = onset.saturating_sub(PRE_ROLL_SAMPLES);
            (&pcm[from..], PRE_ROLL_SAMPLES - (onset - from))
        }
        None => (pcm, PRE_ROLL_SAMPLES),
    };
    let mut out = Vec::with_capacity(lead + body.len() + PRE_ROLL_SAMPLES);
    out.resize(lead, 0);
    out.extend_from_slice(body);
    out.resize(out.len() + PRE_ROLL_SAMPLES, 0);
    out
}

impl SpeechToText for MoonshineStt {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn run(
        &self,
        mut input: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<SttEvent>,
    ) -> BoxFuture<'static, ()> {
        let model = Arc::clone(&self.model);
        let answer_at_pause = self.answer_at_pause;
        Box::pin(async move {
            let mut buffer = UtteranceBuffer::default();
            let mut pending: FuturesOrdered<BoxFuture<'static, SttEvent>> = FuturesOrdered::new();
            // The speculative transcription of the utterance up to a pause.
            let mut speculation: Option<Speculation> = None;
            // The stream time up to which a turn was already answered at a
            // pause (its audio taken from the buffer).
            let mut answered_until: Option<SampleTime> = None;
            loop {
                let watch = speculation
                    .as_ref()
                    .filter(|s| !s.reported)
                    .map(|s| s.text.clone());
                tokio::select! {
                    message = input.recv() => match message {
                        None => break,
                        Some(SttInput::Audio { start, frame }) => buffer.push(start, &frame),
                        Some(SttInput::Paused { end }) => {
                            // A later pause makes an earlier guess stale.
                            let pcm = buffer.peek_until(end);
                            let model = Arc::clone(&model);
                            let text = async move { MoonshineStt::transcribe(model, pcm).await }
                                .boxed()
                                .shared();
                            speculation = Some(Speculation { end, text, reported: false });
                        }
                        Some(SttInput::UtteranceEnded { end, is_short }) => {
                            let answered = answered_until.take();
                            let guess = speculation.take();
                            if answered.is_some_and(|at| end <= at) {
                                // Already answered at the pause, and nothing
                                // was said since.
                                pending.push_back(std::future::ready(SttEvent::UtteranceEnd).boxed());
                                continue;
                            }
                            let reuse = guess.filter(|g| g.end == end && answered.is_none());
                            let end_of_turn = !is_short;
                            match reuse {
                                // The caller said no more after the pause:
                                // its transcript is the final.
                                Some(guess) => {
                                    buffer.drop_until(end);
                                    pending.push_back(
                                        async move { final_event(guess.text.await, end_of_turn) }.boxed(),
                                    );
                                }
                                None => {
                                    let pcm = buffer.take_until(end);
                                    let model = Arc::clone(&model);
                                    pending.push_back(
                                        async move {
                                            final_event(MoonshineStt::transcribe(model, pcm).await, end_of_turn)
                                        }
                                        .boxed(),
                                    );
                                }
                            }
                        }
                    },
                    text = async {
                        match watch {
                            Some(text) => text.await,
                            None => std::future::pending().await,
                        }
                    }, if watch.is_some() => {
                        let Some(guess) = speculation.as_mut() else { continue };
                        guess.reported = true;
                        let ends_turn = matches!(&text, Ok(t) if answer_at_pause.ends_turn(t));
                        if ends_turn && pending.is_empty() && answered_until.is_none() {
                            let end = guess.end;
                            speculation = None;
                            buffer.drop_until(end);
                            answered_until = Some(end);
                            if events.send(final_event(text, true)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(event) = pending.next(), if !pending.is_empty() => {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // The call ended: report what was already being transcribed.
            while let Some(event) = pending.next().await {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        })
    }
}

/// A transcription started at a pause, shared between the pause (which
/// may answer with it) and the utterance's end (which may reuse it).
struct Speculation {
    /// Where the utterance ends if the caller says no more.
    end: SampleTime,
    /// The transcript, once the model has it.
    text: futures_util::future::Shared<BoxFuture<'static, Result<String, ProviderError>>>,
    /// Whether the pause already looked at its result.
    reported: bool,
}

/// A transcription's result as the event the pipeline expects.
fn final_event(text: Result<String, ProviderError>, end_of_turn: bool) -> SttEvent {
    match text {
        Ok(text) => SttEvent::Final { text, end_of_turn },
        Err(error) => SttEvent::Failed(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(level: u8) -> [u8; 160] {
        [level; 160]
    }

    #[test]
    fn buffer_fills_gaps_skips_repeats_and_cuts_at_end() {
        let mut b = UtteranceBuffer::default();
        b.push(1000, &frame(0xFF));
        b.push(1160, &frame(0xFF));
        b.push(1160, &frame(0xFF)); // repeat
        b.push(1400, &frame(0xFF)); // 80-sample gap
        assert_eq!(b.start, 1000);
        assert_eq!(b.end(), 1560);
        let taken = b.take_until(1320);
        assert_eq!(taken.len(), 320);
        assert_eq!(b.start, 1320);
        assert_eq!(b.samples.len(), 240);
    }

    #[test]
    fn preparing_leaves_exactly_the_pre_roll_around_speech() {
        let mut late = vec![0i16; 8000];
        late[6080..7000].fill(8000);
        let out = prepare(&late);
        assert_eq!(out.len(), PRE_ROLL_SAMPLES + 1920 + PRE_ROLL_SAMPLES);
        assert_eq!(out.iter().position(|&s| s != 0), Some(PRE_ROLL_SAMPLES));

        let mut early = vec![0i16; 1000];
        early[160..].fill(8000);
        let out = prepare(&early);
        assert_eq!(out.iter().position(|&s| s != 0), Some(PRE_ROLL_SAMPLES));
        assert_eq!(out.len(), PRE_ROLL_SAMPLES + 840 + PRE_ROLL_SAMPLES);

        assert_eq!(prepare(&[0i16; 1600]).len(), 1600 + 2 * PRE_ROLL_SAMPLES);
    }

    #[test]
    fn missing_install_is_unavailable() {
        let err = MoonshineStt::load(&MoonshineConfig::new("/nonexistent/moonshine"))
            .expect_err("not installed");
        assert_eq!(err.kind(), "unavailable");
        assert!(err.to_string().contains("models fetch"), "{err}");
    }
}
