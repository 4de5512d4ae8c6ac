//! flite text-to-speech over its C API (the system's libflite, Debian
//! package `libflite1`, opened with `dlopen`), with a built-in voice:
//! `cmu_us_rms` by default (the one Moonshine transcribes best after the
//! telephone band; `slt` fares worst), or `slt`, `kal`, `kal16`, `awb` by
//! the tenant's voice id.
//!
//! Each text chunk is synthesised whole in `spawn_blocking` (flite is not
//! documented thread-safe, so synthesis is serialised behind a mutex),
//! resampled to 8 kHz, mu-law encoded and reported in 100 ms pieces.
//! `text_end` is estimated: the chunk's characters are spread over its
//! audio in proportion. A `Cancel` drops the turn's queued text, its
//! synthesis in flight and its unsent audio; nothing more of that turn is
//! reported (not even `Done`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{c_char, c_int, c_short, c_void, CString};
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, OptionFuture};
use media::g711::linear_to_ulaw;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::resample_clip;
use crate::providers::roles::{ProviderError, TextToSpeech, TtsEvent, TtsInput, Voice};

const PROVIDER: &str = "flite";

/// Built-in voices we may load, each `libflite_cmu_us_<name>.so.1`.
pub const VOICES: &[&str] = &["slt", "kal", "kal16", "rms", "awb"];

/// Mu-law bytes per reported audio piece: 100 ms at 8 kHz.
const PIECE_BYTES: usize = 800;

/// Which voice speaks when the tenant's voice id names none of [`VOICES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FliteConfig {
    /// One of [`VOICES`].
    pub default_voice: String,
}

impl Default for FliteConfig {
    fn default() -> Self {
        Self {
            default_voice: "rms".to_owned(),
        }
    }
}

/// `cst_wave`.
#[repr(C)]
struct RawWave {
    kind: *const c_char,
    sample_rate: c_int,
    num_samples: c_int,
    num_channels: c_int,
    samples: *const c_short,
}

type InitFn = unsafe extern "C" fn() -> c_int;
type TextToWaveFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> *mut RawWave;
type DeleteWaveFn = unsafe extern "C" fn(*mut RawWave);
type RegisterFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;

/// A registered voice. flite owns it; it lives as long as the process.
struct VoicePtr(*mut c_void);

// SAFETY: a voice is only used while holding the engine's mutex.
unsafe impl Send for VoicePtr {}

/// The library and the voices registered so far; only touched under the
/// mutex in [`FliteTts`], which serialises all of flite.
struct Engine {
    text_to_wave: TextToWaveFn,
    delete_wave: DeleteWaveFn,
    voices: HashMap<String, VoicePtr>,
}

fn unavailable(message: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: PROVIDER,
        message,
    }
}

/// Opens a library for the life of the process.
fn open(name: &str) -> Result<&'static libloading::Library, ProviderError> {
    // SAFETY: flite's libraries have no unusual initialisers.
    let lib = unsafe { libloading::Library::new(name) }.map_err(|e| {
        unavailable(format!(
            "could not load {name} (install the libflite1 package): {e}"
        ))
    })?;
    Ok(Box::leak(Box::new(lib)))
}

impl Engine {
    fn open() -> Result<Self, ProviderError> {
        let lib = open("libflite.so.1")?;
        // SAFETY: signatures as declared in flite.h / cst_wave.h (2.x).
        let (init, text_to_wave, delete_wave) = unsafe {
            let init: InitFn = *lib
                .get::<InitFn>(b"flite_init\0")
                .map_err(|e| unavailable(format!("libflite lacks flite_init: {e}")))?;
            let ttw: TextToWaveFn = *lib
                .get::<TextToWaveFn>(b"flite_text_to_wave\0")
                .map_err(|e| unavailable(format!("libflite lacks flite_text_to_wave: {e}")))?;
            let del: DeleteWaveFn = *lib
                .get::<DeleteWaveFn>(b"delete_wave\0")
                .map_err(|e| unavailable(format!("libflite lacks delete_wave: {e}")))?;
            (init, ttw, del)
        };
        // SAFETY: initialises flite's globals; called under the mutex.
        unsafe { init() };
        Ok(Self {
            text_to_wave,
            delete_wave,
            voices: HashMap::new(),
        })
    }

    fn voice(&mut self, name: &str) -> Result<*mut c_void, ProviderError> {
        if let Some(v) = self.voices.get(name) {
            return Ok(v.0);
        }
        if !VOICES.contains(&name) {
            return Err(unavailable(format!(
                "unknown flite voice `{name}` (available: {})",
                VOICES.join(", ")
            )));
        }
        let lib = open(&format!("libflite_cmu_us_{name}.so.1"))?;
        let symbol = format!("register_cmu_us_{name}\0");
        // SAFETY: `cst_voice *register_cmu_us_X(const char *voxdir)`.
        let register: RegisterFn = unsafe {
            *lib.get::<RegisterFn>(symbol.as_bytes()).map_err(|e| {
                unavailable(format!("voice library lacks its register function: {e}"))
            })?
        };
        // SAFETY: built-in voices ignore `voxdir`; called under the mutex.
        let voice = unsafe { register(std::ptr::null()) };
        if voice.is_null() {
            return Err(unavailable(format!(
                "flite could not register voice `{name}`"
            )));
        }
        self.voices.insert(name.to_owned(), VoicePtr(voice));
        Ok(voice)
    }

    /// Synthesises `text`: mono PCM and its rate.
    fn synthesize(&mut self, voice: &str, text: &str) -> Result<(Vec<i16>, u32), ProviderError> {
        let voice = self.voice(voice)?;
        let text = CString::new(text.replace('\0', " ")).map_err(|_| ProviderError::Protocol {
            provider: PROVIDER,
            message: "text contains a NUL byte".to_owned(),
        })?;
        // SAFETY: the text is NUL-terminated; the voice is registered.
        let wave = unsafe { (self.text_to_wave)(text.as_ptr(), voice) };
        // SAFETY: null or a wave we own until delete_wave.
        let Some(w) = (unsafe { wave.as_ref() }) else {
            return Err(ProviderError::Protocol {
                provider: PROVIDER,
                message: "flite produced no audio".to_owned(),
            });
        };
        let channels = w.num_channels.max(1) as usize;
        let count = w.num_samples.max(0) as usize;
        let rate = w.sample_rate.max(0) as u32;
        let samples = if w.samples.is_null() || count == 0 {
            Vec::new()
        } else {
            // SAFETY: `samples` holds num_samples × num_channels shorts.
            let all = unsafe { std::slice::from_raw_parts(w.samples, count * channels) };
            all.iter().step_by(channels).copied().collect()
        };
        // SAFETY: the wave came from flite_text_to_wave and is freed once.
        unsafe { (self.delete_wave)(wave) };
        Ok((samples, rate))
    }
}

/// flite text-to-speech: cheap to clone, shares one engine.
#[derive(Clone)]
pub struct FliteTts {
    /// The engine. A std mutex: held for one synthesis on a blocking
    /// thread, never across an await.
    engine: Arc<Mutex<Engine>>,
    default_voice: String,
}

impl std::fmt::Debug for FliteTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FliteTts")
            .field("default_voice", &self.default_voice)
            .finish_non_exhaustive()
    }
}

impl FliteTts {
    /// Opens libflite and registers the default voice, so a missing
    /// library fails here. Blocking (milliseconds).
    pub fn load(config: &FliteConfig) -> Result<Self, ProviderError> {
        let mut engine = Engine::open()?;
        engine.voice(&config.default_voice)?;
        Ok(Self {
            engine: Arc::new(Mutex::new(engine)),
            default_voice: config.default_voice.clone(),
        })
    }

    /// Synthesises `text` with `voice` (one of [`VOICES`]) as 8 kHz mu-law,
    /// on this thread (blocking).
    pub fn synthesize_ulaw(&self, voice: &str, text: &str) -> Result<Vec<u8>, ProviderError> {
        let (pcm, rate) = {
            let mut engine = self
                .engine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            engine.synthesize(voice, text)?
        };
        let pcm = resample_clip(&pcm, rate, media::TELEPHONE_RATE_HZ).map_err(|e| {
            ProviderError::Protocol {
                provider: PROVIDER,
                message: format!("could not resample {rate} Hz audio: {e}"),
            }
        })?;
        Ok(pcm.into_iter().map(linear_to_ulaw).collect())
    }

    fn voice_for(&self, voice: &Voice) -> String {
        let id = voice.voice_id.trim().to_ascii_lowercase();
        let id = id.strip_prefix("cmu_us_").unwrap_or(&id);
        if VOICES.contains(&id) {
            id.to_owned()
        } else {
            self.default_voice.clone()
        }
    }
}

/// A text chunk waiting for synthesis.
struct Job {
    turn: u32,
    text: String,
    last: bool,
}

/// The synthesis in flight.
struct InFlight {
    job: Job,
    task: JoinHandle<Result<Vec<u8>, ProviderError>>,
}

impl TextToSpeech for FliteTts {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn run(
        &self,
        voice: Voice,
        mut input: mpsc::Receiver<TtsInput>,
        events: mpsc::Sender<TtsEvent>,
    ) -> BoxFuture<'static, ()> {
        let tts = self.clone();
        let voice = self.voice_for(&voice);
        Box::pin(async move {
            let mut queue: VecDeque<Job> = VecDeque::new();
            let mut outbox: VecDeque<TtsEvent> = VecDeque::new();
            let mut in_flight: Option<InFlight> = None;
            let mut cancelled: HashSet<u32> = HashSet::new();
            // Characters of each turn's text already synthesised.
            let mut spoken: HashMap<u32, usize> = HashMap::new();
            let mut input_open = true;
            loop {
                if in_flight.is_none() {
                    if let Some(job) = queue.pop_front() {
                        let tts = tts.clone();
                        let voice = voice.clone();
                        let text = job.text.clone();
                        let task = tokio::task::spawn_blocking(move || {
                            if text.trim().is_empty() {
                                return Ok(Vec::new());
                            }
                            tts.synthesize_ulaw(&voice, &text)
                        });
                        in_flight = Some(InFlight { job, task });
                    }
                }
                if !input_open && in_flight.is_none() && outbox.is_empty() {
                    return;
                }
                let synthesizing = in_flight.is_some();
                let task = OptionFuture::from(in_flight.as_mut().map(|f| &mut f.task));
                tokio::select! {
                    biased;
                    message = input.recv(), if input_open => match message {
                        None => input_open = false,
                        Some(TtsInput::Cancel { turn }) => {
                            cancelled.insert(turn);
                            queue.retain(|j| j.turn != turn);
                            outbox.retain(|e| event_turn(e) != turn);
                            if in_flight.as_ref().is_some_and(|f| f.job.turn == turn) {
                                // The blocking synthesis finishes unobserved.
                                in_flight = None;
                            }
                        }
                        Some(TtsInput::Text { turn, text, last }) => {
                            if !cancelled.contains(&turn) {
                                queue.push_back(Job { turn, text, last });
                            }
                        }
                    },
                    Some(result) = task, if synthesizing => {
                        let Some(InFlight { job, .. }) = in_flight.take() else { continue };
                        let result = result.unwrap_or_else(|e| {
                            Err(unavailable(format!("the synthesis task failed: {e}")))
                        });
                        match result {
                            Ok(audio) => {
                                let before = spoken.get(&job.turn).copied().unwrap_or(0);
                                let chars = job.text.chars().count();
                                outbox.extend(pieces(job.turn, &audio, before, chars));
                                let total = before + chars;
                                spoken.insert(job.turn, total);
                                if job.last {
                                    spoken.remove(&job.turn);
                                    outbox.push_back(TtsEvent::Done { turn: job.turn, characters: total });
                                }
                            }
                            Err(error) => {
                                // The rest of the turn is skipped.
                                cancelled.insert(job.turn);
                                queue.retain(|j| j.turn != job.turn);
                                spoken.remove(&job.turn);
                                outbox.push_back(TtsEvent::Failed { turn: job.turn, error });
                            }
                        }
                    },
                    permit = events.reserve(), if !outbox.is_empty() => {
                        let Ok(permit) = permit else { return };
                        if let Some(event) = outbox.pop_front() {
                            permit.send(event);
                        }
                    }
                }
            }
        })
    }
}

fn event_turn(event: &TtsEvent) -> u32 {
    match event {
        TtsEvent::Audio { turn, .. }
        | TtsEvent::Done { turn, .. }
        | TtsEvent::Failed { turn, .. } => *turn,
    }
}

/// Splits one chunk's audio into 100 ms `Audio` events, with `text_end`
/// advancing in proportion through the chunk's `chars` characters.
fn pieces(turn: u32, audio: &[u8], before: usize, chars: usize) -> Vec<TtsEvent> {
    let total = audio.len().max(1);
    let mut sent = 0;
    audio
        .chunks(PIECE_BYTES)
        .map(|piece| {
            sent += piece.len();
            TtsEvent::Audio {
                turn,
                audio: piece.to_vec(),
                text_end: Some(before + chars * sent / total),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_100ms_and_text_end_reaches_the_chunk_end() {
        let audio = vec![0x7Fu8; 2000];
        let events = pieces(3, &audio, 10, 20);
        assert_eq!(events.len(), 3);
        let ends: Vec<_> = events
            .iter()
            .map(|e| match e {
                TtsEvent::Audio {
                    audio, text_end, ..
                } => (audio.len(), text_end.unwrap_or(0)),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ends, vec![(800, 18), (800, 26), (400, 30)]);
        assert!(pieces(1, &[], 0, 5).is_empty());
    }
}
