//! Voice activity detection: the frame-based [`VoiceActivityDetector`] trait,
//! the neural default [`EarshotVad`], the cheap [`EnergyVad`] baseline, and
//! the adapters that cut a stream into exact frames and stamp each with the
//! caller's 8 kHz stream time ([`VadStream`], [`TelephoneVad`]).
//!
//! # Stream time
//!
//! Stamps are [`SampleTime`]: samples at 8 kHz since the start of the call
//! audio, the crate's one clock. A 16 ms earshot frame is 256 samples at
//! 16 kHz = 128 samples at 8 kHz, so conversions are exact. The 8 → 16 kHz
//! resampler delays the signal by [`StreamResampler::delay_samples`] (160
//! samples at 16 kHz = 10 ms); [`VadStream`] drops that many leading samples
//! (the filter's warm-up) so that frame `k` covers exactly the ORIGINAL 8 kHz
//! samples `[origin + 128k, origin + 128(k+1))`.
//!
//! [`TelephoneVad`] also skips resampling and scoring on frames its
//! [`SpeechGate`] calls noise (see its docs): frames are still reported, with
//! probability 0, so the endpointer sees every frame.
//!
//! Nothing here allocates after construction: frames are cut into a buffer
//! owned by the adapter and handed to a callback.

use crate::endpoint::{SpeechGate, MAX_GATE_LOOKBACK_MS};
use crate::frame::SampleTime;
use crate::g711::decode_ulaw_into;
use crate::resample::{ResampleError, StreamResampler};
use crate::{FRAME_SAMPLES, TELEPHONE_RATE_HZ};

/// A frame-based voice activity detector.
pub trait VoiceActivityDetector {
    /// Sample rate of the frames it wants, in hertz.
    fn sample_rate_hz(&self) -> u32;
    /// Exact number of samples per frame.
    fn frame_samples(&self) -> usize;
    /// Probability (0..=1) that `frame` contains speech. `frame` must be
    /// exactly [`frame_samples`](Self::frame_samples) long; a frame of any
    /// other length scores 0.
    fn speech_probability(&mut self, frame: &[i16]) -> f32;
    /// Forgets all context, for a new, unrelated stream.
    fn reset(&mut self);
}

/// Sample rate earshot works at.
pub const EARSHOT_RATE_HZ: u32 = 16_000;
/// Samples per earshot frame (16 ms at 16 kHz).
pub const EARSHOT_FRAME_SAMPLES: usize = 256;

/// The neural default: earshot's detector (pure Rust, weights compiled in),
/// 16 kHz, 256-sample frames. It looks at a 48 ms window (the frame and the
/// two before it) and keeps a little recurrent context, so its score for a
/// frame reacts to an onset in that frame within one or two frames.
pub struct EarshotVad {
    /// earshot's detector, boxed: about 8 KiB of state.
    detector: Box<earshot::Detector>,
}

impl EarshotVad {
    /// A fresh detector.
    pub fn new() -> Self {
        Self {
            detector: earshot::Detector::default_boxed(),
        }
    }
}

impl Default for EarshotVad {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EarshotVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarshotVad").finish_non_exhaustive()
    }
}

impl VoiceActivityDetector for EarshotVad {
    fn sample_rate_hz(&self) -> u32 {
        EARSHOT_RATE_HZ
    }

    fn frame_samples(&self) -> usize {
        EARSHOT_FRAME_SAMPLES
    }

    fn speech_probability(&mut self, frame: &[i16]) -> f32 {
        if frame.len() != EARSHOT_FRAME_SAMPLES {
            return 0.0;
        }
        self.detector.predict_i16(frame).clamp(0.0, 1.0)
    }

    fn reset(&mut self) {
        self.detector.reset();
    }
}

/// Settings of [`EnergyVad`].
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyVadConfig {
    /// Sample rate of the frames, in hertz (a multiple of 8000).
    pub sample_rate_hz: u32,
    /// Samples per frame.
    pub frame_samples: usize,
    /// Frames quieter than this (dBFS) are never speech: well below
    /// telephone speech (−15 to −30 dBFS) and above the line's idle noise.
    pub min_level_dbfs: f32,
    /// Level above the tracked noise floor (dB) that scores 0.5.
    pub snr_midpoint_db: f32,
    /// Width of the logistic ramp around the midpoint (dB per e-fold).
    pub snr_slope_db: f32,
    /// How fast the noise floor creeps up towards louder input, in dB per
    /// frame; it drops at once to quieter input, and the first frame sets
    /// it. Slow, so speech does not become the floor.
    pub floor_rise_db_per_frame: f32,
    /// The floor never goes below this (dBFS), so near-digital silence does
    /// not make every small sound "speech".
    pub floor_min_dbfs: f32,
}

impl Default for EnergyVadConfig {
    fn default() -> Self {
        Self {
            sample_rate_hz: EARSHOT_RATE_HZ,
            frame_samples: EARSHOT_FRAME_SAMPLES,
            min_level_dbfs: -50.0,
            snr_midpoint_db: 12.0,
            snr_slope_db: 2.0,
            floor_rise_db_per_frame: 0.05,
            floor_min_dbfs: -65.0,
        }
    }
}

/// A cheap fallback and baseline: frame energy against an adaptive noise
/// floor, mapped through a logistic to 0..1. It knows nothing about speech,
/// so tones, hum swells and noise bursts score as speech, and a noise that
/// gets louder reads as speech until the floor catches up (3 dB/s); use it
/// when the neural detector cannot run, or to compare against. About 0.5 µs
/// per frame against earshot's 8 µs.
#[derive(Debug, Clone)]
pub struct EnergyVad {
    /// Its settings.
    config: EnergyVadConfig,
    /// Tracked noise floor in dBFS.
    floor_dbfs: f32,
    /// Whether a frame has set the floor yet.
    floor_known: bool,
    /// Previous input sample of the DC-blocking filter.
    prev_in: f32,
    /// Previous output sample of the DC-blocking filter.
    prev_out: f32,
}

impl EnergyVad {
    /// A detector with these settings.
    pub fn new(config: EnergyVadConfig) -> Self {
        let floor_dbfs = config.floor_min_dbfs;
        Self {
            config,
            floor_dbfs,
            floor_known: false,
            prev_in: 0.0,
            prev_out: 0.0,
        }
    }

    /// The noise floor it currently assumes, in dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor_dbfs
    }
}

impl Default for EnergyVad {
    fn default() -> Self {
        Self::new(EnergyVadConfig::default())
    }
}

/// Logistic function.
fn logistic(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl VoiceActivityDetector for EnergyVad {
    fn sample_rate_hz(&self) -> u32 {
        self.config.sample_rate_hz
    }

    fn frame_samples(&self) -> usize {
        self.config.frame_samples
    }

    fn speech_probability(&mut self, frame: &[i16]) -> f32 {
        if frame.len() != self.config.frame_samples || frame.is_empty() {
            return 0.0;
        }
        // DC blocker (pole at 0.995: a few hertz), then mean square.
        let mut energy = 0.0f64;
        for &s in frame {
            let x = f32::from(s);
            let y = x - self.prev_in + 0.995 * self.prev_out;
            self.prev_in = x;
            self.prev_out = y;
            energy += f64::from(y) * f64::from(y);
        }
        let mean_square = energy / frame.len() as f64 / (32_768.0 * 32_768.0);
        let level = (10.0 * mean_square.max(1e-12).log10()) as f32;
        let c = &self.config;
        if !self.floor_known {
            // The first frame sets the floor: a line that starts noisy is
            // learnt at once; one that starts with speech drops to the
            // noise in the first pause.
            self.floor_known = true;
            self.floor_dbfs = level.max(c.floor_min_dbfs);
        } else if level < self.floor_dbfs {
            self.floor_dbfs = level.max(c.floor_min_dbfs);
        } else {
            self.floor_dbfs += c.floor_rise_db_per_frame;
        }
        let snr = level - self.floor_dbfs;
        let loud_enough = logistic((level - c.min_level_dbfs) / c.snr_slope_db);
        logistic((snr - c.snr_midpoint_db) / c.snr_slope_db) * loud_enough
    }

    fn reset(&mut self) {
        self.floor_dbfs = self.config.floor_min_dbfs;
        self.floor_known = false;
        self.prev_in = 0.0;
        self.prev_out = 0.0;
    }
}

/// One scored frame, stamped in the original 8 kHz stream time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadFrame {
    /// Speech probability, 0..=1.
    pub probability: f32,
    /// Frame energy (mean square) in dBFS, floored at −100: lets the
    /// endpointer place boundaries to the frame, since the neural score
    /// lags an offset by its analysis window and recurrent state.
    pub level_dbfs: f32,
    /// Stream time of the frame's first sample.
    pub start: SampleTime,
    /// Stream time just after the frame's last sample (exclusive end).
    pub end: SampleTime,
    /// Earliest stream time at which this score exists: the frame's end plus
    /// the resampler delay in [`VadStream`], or the exact amount of input
    /// consumed when it was computed in [`TelephoneVad`]. Decisions taken on
    /// this frame are stamped with it.
    pub ready_at: SampleTime,
}

/// Why a [`VadStream`] could not be built.
#[derive(Debug)]
pub enum VadError {
    /// The detector's frames do not map to whole 8 kHz samples: its rate
    /// must be a multiple of 8000 and its frame a multiple of that ratio.
    UnalignedFrames {
        /// The detector's rate.
        sample_rate_hz: u32,
        /// The detector's frame length.
        frame_samples: usize,
    },
    /// The skipped lead-in is not a whole number of 8 kHz samples.
    UnalignedLeadIn {
        /// The lead-in given, in samples at the detector's rate.
        lead_in: usize,
    },
    /// The inbound resampler could not be built.
    Resampler(ResampleError),
}

impl std::fmt::Display for VadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnalignedFrames {
                sample_rate_hz,
                frame_samples,
            } => write!(
                f,
                "a {frame_samples}-sample frame at {sample_rate_hz} Hz is not a whole number of 8 kHz samples"
            ),
            Self::UnalignedLeadIn { lead_in } => {
                write!(f, "a lead-in of {lead_in} samples is not a whole number of 8 kHz samples")
            }
            Self::Resampler(_) => write!(f, "could not build the inbound resampler"),
        }
    }
}

impl std::error::Error for VadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Resampler(e) => Some(e),
            _ => None,
        }
    }
}

/// Mean square of `frame` in dBFS (full scale = 32768), floored at −100.
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    let energy = sum_squares(frame);
    let mean_square = energy as f64 / frame.len() as f64 / (32_768.0 * 32_768.0);
    (10.0 * mean_square.max(1e-10).log10()) as f32
}

/// Cuts audio at the detector's rate, pushed in chunks of any size, into
/// exact frames, scores each, and stamps it in 8 kHz stream time.
#[derive(Debug)]
pub struct VadStream<V> {
    /// The detector.
    vad: V,
    /// The frame being filled (allocated once, `frame_samples` long).
    frame: Vec<i16>,
    /// Samples of `frame` filled so far.
    filled: usize,
    /// Detector-rate samples per 8 kHz sample (2 for 16 kHz).
    ratio: usize,
    /// Leading samples to drop at the start (the resampler's delay).
    lead_in: usize,
    /// Leading samples still to drop.
    skip: usize,
    /// Stream time of the first sample after the lead-in.
    origin: SampleTime,
    /// Frames scored since the origin.
    frames: u64,
    /// Whether to measure each frame's level (off in [`TelephoneVad`],
    /// which measures it on the original 8 kHz samples).
    measure_levels: bool,
}

impl<V: VoiceActivityDetector> VadStream<V> {
    /// Wraps `vad`. `lead_in` samples (at the detector's rate) are dropped
    /// before the first frame: pass the upstream resampler's
    /// [`delay_samples`](StreamResampler::delay_samples) so that stamps refer
    /// to the original stream, or 0 for audio that was never resampled.
    /// Stream time starts at 0.
    pub fn new(vad: V, lead_in: usize) -> Result<Self, VadError> {
        let rate = vad.sample_rate_hz();
        let frame_samples = vad.frame_samples();
        let ratio = (rate / TELEPHONE_RATE_HZ) as usize;
        if rate % TELEPHONE_RATE_HZ != 0 || ratio == 0 || frame_samples % ratio != 0 {
            return Err(VadError::UnalignedFrames {
                sample_rate_hz: rate,
                frame_samples,
            });
        }
        if frame_samples == 0 {
            return Err(VadError::UnalignedFrames {
                sample_rate_hz: rate,
                frame_samples,
            });
        }
        if lead_in % ratio != 0 {
            return Err(VadError::UnalignedLeadIn { lead_in });
        }
        Ok(Self {
            vad,
            frame: vec![0; frame_samples],
            filled: 0,
            ratio,
            lead_in,
            skip: lead_in,
            origin: 0,
            frames: 0,
            measure_levels: true,
        })
    }

    /// The detector.
    pub fn detector(&self) -> &V {
        &self.vad
    }

    /// Length of one frame in 8 kHz samples (128 for earshot).
    pub fn frame_span(&self) -> SampleTime {
        (self.frame.len() / self.ratio) as SampleTime
    }

    /// Stream time at which the next frame will start.
    pub fn next_frame_start(&self) -> SampleTime {
        self.origin + self.frames * self.frame_span()
    }

    /// Feeds audio at the detector's rate; calls `on_frame` for every frame
    /// completed, in order.
    pub fn push(&mut self, audio: &[i16], mut on_frame: impl FnMut(VadFrame)) {
        let lead_in_8k = (self.lead_in / self.ratio) as SampleTime;
        let mut rest = audio;
        if self.skip > 0 {
            let n = self.skip.min(rest.len());
            self.skip -= n;
            rest = &rest[n..];
        }
        while !rest.is_empty() {
            let take = (self.frame.len() - self.filled).min(rest.len());
            self.frame[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest = &rest[take..];
            if self.filled == self.frame.len() {
                self.filled = 0;
                let start = self.next_frame_start();
                let end = start + self.frame_span();
                self.frames += 1;
                let probability = self.vad.speech_probability(&self.frame);
                on_frame(VadFrame {
                    probability,
                    level_dbfs: if self.measure_levels {
                        level_dbfs(&self.frame)
                    } else {
                        -100.0
                    },
                    start,
                    end,
                    ready_at: end + lead_in_8k,
                });
            }
        }
    }

    /// Starts over for a new stream whose first original sample has stream
    /// time `origin`: resets the detector, drops the partial frame and
    /// re-arms the lead-in.
    pub fn reset(&mut self, origin: SampleTime) {
        self.vad.reset();
        self.restart(origin, 0);
    }

    /// Restarts the framing (not the detector) for a stream whose first
    /// original sample has stream time `origin - extra`: the lead-in and
    /// `extra` 8 kHz samples after it are dropped, so the first frame starts
    /// at `origin`.
    fn restart(&mut self, origin: SampleTime, extra: usize) {
        self.filled = 0;
        self.skip = self.lead_in + extra * self.ratio;
        self.origin = origin;
        self.frames = 0;
    }
}

/// The 8 kHz history a [`TelephoneVad`] keeps, in samples (256 ms): the
/// longest look-back it replays ([`MAX_GATE_LOOKBACK_MS`]) plus the chunk
/// alignment before it and the frame, delay and chunk after it.
const HISTORY_SAMPLES: usize = 2_048;

// The look-back (8 samples per ms), a chunk of alignment before it, and the
// frame, the delay and a chunk after it fit in the history.
const _: () = assert!(HISTORY_SAMPLES >= MAX_GATE_LOOKBACK_MS as usize * 8 + 4 * FRAME_SAMPLES);

/// How often a [`TelephoneVad`] ran its detector, since construction or the
/// last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Frames the detector scored.
    pub scored: u64,
    /// Frames reported with probability 0 because the gate was closed.
    pub skipped: u64,
    /// Times the gate opened (each replays the look-back).
    pub openings: u64,
}

/// The whole inbound detection path for 8 kHz telephone audio: 8 → 16 kHz
/// resampling, then [`VadStream`] with the resampler's delay as lead-in, so
/// frame stamps are in the caller's original stream time. Accepts linear
/// PCM or mu-law in chunks of any size, without allocating.
///
/// # The speech gate
///
/// A [`SpeechGate`] decides frame by frame whether the detector must run
/// (see [`crate::endpoint`]). While it is closed, resampling and scoring
/// stop: each frame is reported with probability 0 and its level, at the
/// same time (`ready_at`) and with the same stamps it would have had. A
/// fixed 8 kHz history (256 ms) keeps the recent input. When a frame opens
/// the gate, the detector catches up before scoring it:
///
/// - if the history still holds everything since the resampler stopped (a
///   closure under about 200 ms), the resampler and the detector simply go
///   on from there, and compute exactly what they would have had they never
///   stopped;
/// - otherwise the resampler restarts `gate_lookback_ms` (plus its 10 ms
///   half-width, whose output the restart spoils) before the frame, and the
///   frames in between are scored to refill the detector's 48 ms window.
///   The detector itself is not reset: it keeps the recurrent state it had
///   when the gate closed, a settled state of the same line.
///
/// Frames scored only to catch up are not reported: every frame is
/// reported exactly once, in order, scored or not. Levels are always those
/// of the frame's original 8 kHz samples.
#[derive(Debug)]
pub struct TelephoneVad<V> {
    /// 8 → 16 kHz.
    resampler: StreamResampler,
    /// Framing, scoring and stamping at 16 kHz.
    stream: VadStream<V>,
    /// Resampler output for one chunk.
    wide: Vec<i16>,
    /// Stream time of the first sample pushed since the last reset.
    origin: SampleTime,
    /// Samples pushed since the last reset.
    pushed: u64,
    /// The last [`HISTORY_SAMPLES`] samples pushed; sample `origin + i` is
    /// at `i % HISTORY_SAMPLES`.
    history: Box<[i16; HISTORY_SAMPLES]>,
    /// Stream time of the resampler's first input since it was last reset.
    fed_from: SampleTime,
    /// Whether the resampler and the detector are running (gate open).
    running: bool,
    /// Start of the next frame to report.
    next_start: SampleTime,
    /// Which frames may skip the detector.
    gate: SpeechGate,
    /// Counters.
    stats: GateStats,
}

impl<V: VoiceActivityDetector> TelephoneVad<V> {
    /// Builds the path around `vad`, whose rate must be one the resampler
    /// reaches from 8 kHz and a multiple of it (16 kHz for earshot; 24 or
    /// 48 kHz also work), with the speech gate of the default
    /// [`EndpointConfig`](crate::endpoint::EndpointConfig) (enabled).
    pub fn new(vad: V) -> Result<Self, VadError> {
        Self::with_gate(vad, SpeechGate::default())
    }

    /// [`new`](Self::new) with this gate (built from the endpointer's
    /// configuration, so that it never closes during an utterance).
    pub fn with_gate(vad: V, gate: SpeechGate) -> Result<Self, VadError> {
        let resampler = StreamResampler::new(TELEPHONE_RATE_HZ, vad.sample_rate_hz())
            .map_err(VadError::Resampler)?;
        let lead_in = resampler.delay_samples();
        let wide = vec![0; resampler.chunk_output_samples()];
        let mut stream = VadStream::new(vad, lead_in)?;
        stream.measure_levels = false;
        Ok(Self {
            resampler,
            stream,
            wide,
            origin: 0,
            pushed: 0,
            history: Box::new([0; HISTORY_SAMPLES]),
            fed_from: 0,
            running: true,
            next_start: 0,
            gate,
            stats: GateStats::default(),
        })
    }

    /// The detector.
    pub fn detector(&self) -> &V {
        self.stream.detector()
    }

    /// Stream time just after the last sample pushed.
    pub fn now(&self) -> SampleTime {
        self.origin + self.pushed
    }

    /// The added delay between a sample arriving and the frame that holds it
    /// being scorable, beyond the frame itself (the resampler's 10 ms).
    pub fn delay_samples(&self) -> SampleTime {
        self.resampler.delay_input_samples() as SampleTime
    }

    /// Whether the detector is running (the gate is open) for the next frame.
    pub fn gate_open(&self) -> bool {
        self.running
    }

    /// The speech gate.
    pub fn gate(&self) -> &SpeechGate {
        &self.gate
    }

    /// How often the detector ran, since construction or the last reset.
    pub fn gate_stats(&self) -> GateStats {
        self.stats
    }

    /// Feeds 8 kHz linear PCM; calls `on_frame` for every frame, scored or
    /// skipped, in order.
    pub fn push_pcm(&mut self, pcm: &[i16], mut on_frame: impl FnMut(VadFrame)) {
        let chunk = self.resampler.chunk_input_samples() as u64;
        let mut rest = pcm;
        while !rest.is_empty() {
            // Stop at each chunk boundary, so `ready_at` is exact.
            let room = (chunk - self.pushed % chunk) as usize;
            let (head, tail) = rest.split_at(room.min(rest.len()));
            rest = tail;
            self.remember(head);
            if self.running {
                self.feed(head, &mut on_frame);
                if !self.gate.holds_open(self.next_start) {
                    self.running = false;
                }
            } else if self.pushed % chunk == 0 {
                self.skip_or_open(&mut on_frame);
            }
        }
    }

    /// Feeds 8 kHz mu-law; calls `on_frame` for every frame, scored or
    /// skipped, in order.
    pub fn push_ulaw(&mut self, codes: &[u8], mut on_frame: impl FnMut(VadFrame)) {
        let mut pcm = [0i16; FRAME_SAMPLES];
        for chunk in codes.chunks(FRAME_SAMPLES) {
            let n = decode_ulaw_into(chunk, &mut pcm);
            self.push_pcm(&pcm[..n], &mut on_frame);
        }
    }

    /// Starts over at stream time `origin` (the time of the next sample to be
    /// pushed): clears the resampler, the detector, the history and the gate.
    pub fn reset(&mut self, origin: SampleTime) {
        self.resampler.reset();
        self.stream.reset(origin);
        self.origin = origin;
        self.pushed = 0;
        self.history.fill(0);
        self.fed_from = origin;
        self.running = true;
        self.next_start = origin;
        self.gate.reset(origin);
        self.stats = GateStats::default();
    }

    /// Appends `pcm` (at most one chunk) to the history.
    fn remember(&mut self, pcm: &[i16]) {
        let at = (self.pushed % HISTORY_SAMPLES as u64) as usize;
        let first = pcm.len().min(HISTORY_SAMPLES - at);
        self.history[at..at + first].copy_from_slice(&pcm[..first]);
        self.history[..pcm.len() - first].copy_from_slice(&pcm[first..]);
        self.pushed += pcm.len() as u64;
    }

    /// Resamples and scores `pcm` (the samples just before `now()`), and
    /// reports the frames it completes from `next_start` on.
    fn feed(&mut self, pcm: &[i16], on_frame: &mut impl FnMut(VadFrame)) {
        // `wide` holds one chunk and `pcm` completes at most one, so this
        // cannot fail; if it somehow did, the audio is dropped rather than
        // panicking on the media path.
        let n = self
            .resampler
            .process(pcm, &mut self.wide)
            .unwrap_or_default();
        if n == 0 {
            return;
        }
        let now = self.fed_from + self.resampler.input_consumed();
        let Self {
            stream,
            wide,
            origin,
            history,
            next_start,
            gate,
            stats,
            ..
        } = self;
        stream.push(&wide[..n], |mut f| {
            // Frames before `next_start` were reported already: this is the
            // replayed look-back, scored only for the detector's context.
            if f.start < *next_start {
                return;
            }
            f.ready_at = now;
            f.level_dbfs = history_level(&history[..], *origin, f.start, f.end);
            gate.observe(&f);
            *next_start = f.end;
            stats.scored += 1;
            on_frame(f);
        });
    }

    /// At a chunk boundary with the gate closed: reports every frame whose
    /// time has come (its end plus the resampler delay, as if it had been
    /// scored) with probability 0, until one opens the gate.
    fn skip_or_open(&mut self, on_frame: &mut impl FnMut(VadFrame)) {
        let now = self.now();
        let span = self.stream.frame_span();
        let delay = self.delay_samples();
        while self.next_start + span + delay <= now {
            let start = self.next_start;
            let end = start + span;
            let level_dbfs = history_level(&self.history[..], self.origin, start, end);
            if self.gate.must_score(start, level_dbfs) {
                self.open(on_frame);
                return;
            }
            let frame = VadFrame {
                probability: 0.0,
                level_dbfs,
                start,
                end,
                ready_at: now,
            };
            self.gate.observe(&frame);
            self.next_start = end;
            self.stats.skipped += 1;
            on_frame(frame);
        }
    }

    /// Opens the gate at `next_start` and catches the detector up to `now()`
    /// (a chunk boundary), reporting the frames from `next_start` on whose
    /// time has come. If the history still holds everything since the
    /// resampler last ran, it simply goes on from there: exactly what it
    /// would have computed had it never stopped. Otherwise it restarts the
    /// resampler on the look-back before `next_start` (the first frame it
    /// scores starts a filter half-width after the restart, clear of the
    /// restart's transient) and replays it.
    fn open(&mut self, on_frame: &mut impl FnMut(VadFrame)) {
        let chunk = self.resampler.chunk_input_samples() as u64;
        let pushed = self.pushed;
        let oldest = pushed
            .saturating_sub(HISTORY_SAMPLES as u64)
            .div_ceil(chunk)
            * chunk;
        let fed = self.fed_from + self.resampler.input_consumed() - self.origin;
        let from = if fed >= oldest {
            fed
        } else {
            let span = self.stream.frame_span();
            let delay = self.delay_samples();
            let next = self.next_start - self.origin;
            let wanted = next.saturating_sub(self.gate.lookback() + delay);
            let from = (wanted / chunk * chunk).max(oldest);
            let first = if from == 0 {
                0
            } else {
                ((from + delay).div_ceil(span) * span).min(next)
            };
            self.resampler.reset();
            self.stream
                .restart(self.origin + first, (first - from) as usize);
            self.fed_from = self.origin + from;
            from
        };
        self.running = true;
        self.stats.openings += 1;
        let mut pcm = [0i16; FRAME_SAMPLES];
        let mut at = from;
        while at < pushed {
            let room = chunk - self.resampler.pending_input() as u64;
            let n = (room.min(pushed - at) as usize).min(FRAME_SAMPLES);
            for (k, s) in pcm[..n].iter_mut().enumerate() {
                *s = self.history[((at + k as u64) % HISTORY_SAMPLES as u64) as usize];
            }
            self.feed(&pcm[..n], on_frame);
            at += n as u64;
        }
    }
}

/// Level in dBFS of the original samples `[start, end)` (stream time), read
/// from a history ring whose sample `origin + i` is at `i % len`; like
/// [`level_dbfs`].
fn history_level(history: &[i16], origin: SampleTime, start: SampleTime, end: SampleTime) -> f32 {
    let len = history.len() as u64;
    let n = (end - start) as usize;
    if n == 0 || len == 0 {
        return -100.0;
    }
    let at = ((start - origin) % len) as usize;
    let first = n.min(history.len() - at);
    let energy = sum_squares(&history[at..at + first]) + sum_squares(&history[..n - first]);
    let mean_square = energy as f64 / n as f64 / (32_768.0 * 32_768.0);
    (10.0 * mean_square.max(1e-10).log10()) as f32
}

/// Sum of squared samples.
fn sum_squares(pcm: &[i16]) -> i64 {
    pcm.iter().map(|&s| i64::from(s) * i64::from(s)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake detector that reports the mean absolute sample of the frame.
    struct MeanAbs;

    impl VoiceActivityDetector for MeanAbs {
        fn sample_rate_hz(&self) -> u32 {
            16_000
        }
        fn frame_samples(&self) -> usize {
            256
        }
        fn speech_probability(&mut self, frame: &[i16]) -> f32 {
            frame.iter().map(|&s| f32::from(s).abs()).sum::<f32>() / frame.len() as f32
        }
        fn reset(&mut self) {}
    }

    fn tone(rate: u32, hz: f64, amp: f64, n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                (amp * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn frames_are_cut_exactly_whatever_the_chunking() {
        let audio: Vec<i16> = (0..5_000).map(|i| (i % 300) as i16).collect();
        let mut whole = Vec::new();
        let mut s = VadStream::new(MeanAbs, 160).expect("aligned");
        s.push(&audio, |f| whole.push(f));
        assert_eq!(whole.len(), (5_000 - 160) / 256);
        let mut pieces = Vec::new();
        let mut s = VadStream::new(MeanAbs, 160).expect("aligned");
        for chunk in audio.chunks(37) {
            s.push(chunk, |f| pieces.push(f));
        }
        assert_eq!(whole, pieces);
        for (k, f) in whole.iter().enumerate() {
            assert_eq!(f.start, 128 * k as u64);
            assert_eq!(f.end, 128 * (k as u64 + 1));
            assert_eq!(f.ready_at, f.end + 80);
        }
        // The first frame is audio[160..416].
        let expected = audio[160..416].iter().map(|&s| f32::from(s)).sum::<f32>() / 256.0;
        assert_eq!(whole[0].probability, expected);
    }

    #[test]
    fn reset_restarts_at_the_given_origin() {
        let mut s = VadStream::new(MeanAbs, 0).expect("aligned");
        s.push(&[0; 300], |_| {});
        s.reset(8_000);
        let mut got = Vec::new();
        s.push(&[0; 512], |f| got.push((f.start, f.end)));
        assert_eq!(got, vec![(8_000, 8_128), (8_128, 8_256)]);
    }

    #[test]
    fn unaligned_detectors_are_refused() {
        let cfg = EnergyVadConfig {
            sample_rate_hz: 11_025,
            ..EnergyVadConfig::default()
        };
        assert!(matches!(
            VadStream::new(EnergyVad::new(cfg), 0),
            Err(VadError::UnalignedFrames { .. })
        ));
        assert!(matches!(
            VadStream::new(EnergyVad::default(), 3),
            Err(VadError::UnalignedLeadIn { lead_in: 3 })
        ));
    }

    /// An 8 kHz burst placed at a known stream time shows up in the frames
    /// that cover that time: the resampler's delay is accounted for.
    #[test]
    fn telephone_stamps_refer_to_the_original_stream() {
        let mut tv = TelephoneVad::new(MeanAbs).expect("16 kHz");
        let mut audio = vec![0i16; 8_000];
        // A burst over original samples [2560, 3840): frames 20..30.
        audio[2_560..3_840].copy_from_slice(&tone(8_000, 1_000.0, 8_000.0, 1_280));
        let mut frames = Vec::new();
        for chunk in audio.chunks(160) {
            tv.push_pcm(chunk, |f| frames.push(f));
        }
        let loud: Vec<u64> = frames
            .iter()
            .filter(|f| f.probability > 2_000.0)
            .map(|f| f.start / 128)
            .collect();
        assert_eq!(loud, (20..30).collect::<Vec<_>>());
        // Frames are scored as soon as their end plus 10 ms has been pushed
        // (rounded up to the 20 ms chunk).
        for f in &frames {
            assert!(f.ready_at >= f.end + 80, "{f:?}");
            assert!(f.ready_at < f.end + 80 + 160, "{f:?}");
            assert_eq!(f.ready_at % 160, 0);
        }
    }

    #[test]
    fn earshot_hears_no_speech_in_silence() {
        // earshot scores digital silence 0.1–0.3 (highest on the first
        // frames, while its context is empty): well under 0.5.
        let mut vad = EarshotVad::new();
        for _ in 0..20 {
            assert!(vad.speech_probability(&[0; 256]) < 0.3);
        }
        assert_eq!(vad.speech_probability(&[0; 100]), 0.0);
    }

    #[test]
    fn energy_vad_scores_bursts_over_the_floor() {
        let mut vad = EnergyVad::default();
        // Quiet noise-like signal: learnt as floor, scores low.
        let quiet = tone(16_000, 437.0, 40.0, 256);
        for _ in 0..50 {
            assert!(vad.speech_probability(&quiet) < 0.05);
        }
        let loud = tone(16_000, 437.0, 3_000.0, 256);
        assert!(vad.speech_probability(&loud) > 0.95);
        vad.reset();
        assert!(vad.speech_probability(&[0; 256]) < 0.01);
    }

    /// [`MeanAbs`] plus a trace of how many frames it has scored, so that
    /// any frame skipped or scored twice shows in every later score.
    struct Counting(u32);

    impl VoiceActivityDetector for Counting {
        fn sample_rate_hz(&self) -> u32 {
            16_000
        }
        fn frame_samples(&self) -> usize {
            256
        }
        fn speech_probability(&mut self, frame: &[i16]) -> f32 {
            self.0 += 1;
            MeanAbs.speech_probability(frame) + self.0 as f32 * 1e-6
        }
        fn reset(&mut self) {
            self.0 = 0;
        }
    }

    /// 8 s of digital silence with 100 ms tone bursts: at 2.1 s, just after
    /// the gate closed at the end of its 2 s warm-up; at 2.9 s, just after it
    /// closed again 600 ms after the first (two short closures); at 6.5 s,
    /// after a long closure.
    fn bursts() -> Vec<i16> {
        let mut audio = vec![0i16; 64_000];
        for at in [16_800, 23_200, 52_000] {
            audio[at..at + 800].copy_from_slice(&tone(8_000, 700.0, 6_000.0, 800));
        }
        audio
    }

    fn run<V: VoiceActivityDetector>(
        vad: V,
        gate: bool,
        audio: &[i16],
        piece: usize,
    ) -> (Vec<VadFrame>, GateStats) {
        let config = crate::endpoint::EndpointConfig {
            gate_enabled: gate,
            ..Default::default()
        };
        let gate = SpeechGate::new(&config).expect("valid");
        let mut tv = TelephoneVad::with_gate(vad, gate).expect("16 kHz");
        let mut frames = Vec::new();
        for chunk in audio.chunks(piece) {
            tv.push_pcm(chunk, |f| frames.push(f));
        }
        (frames, tv.gate_stats())
    }

    #[test]
    fn the_gate_reports_every_frame_when_and_as_it_would_have_been() {
        let audio = bursts();
        for piece in [160, 37, 1_000] {
            let (all, ungated) = run(MeanAbs, false, &audio, piece);
            let (gated, stats) = run(MeanAbs, true, &audio, piece);
            assert_eq!(ungated.skipped, 0);
            assert!(stats.skipped > 150, "{stats:?}");
            assert_eq!(stats.openings, 3, "{stats:?}");
            assert_eq!(all.len(), gated.len());
            assert_eq!(stats.scored + stats.skipped, all.len() as u64);
            for (a, g) in all.iter().zip(&gated) {
                assert_eq!((a.start, a.end, a.ready_at), (g.start, g.end, g.ready_at));
                assert_eq!(a.level_dbfs, g.level_dbfs);
                if g.probability == 0.0 {
                    // Skipped frames are the quiet ones.
                    assert!(a.probability < 1.0, "{a:?}");
                } else {
                    // After a restart the resampler's output differs from the
                    // uninterrupted one only by FFT rounding.
                    assert!((a.probability - g.probability).abs() < 1.0, "{a:?} {g:?}");
                }
            }
            // Every loud frame was scored.
            for g in gated.iter().filter(|g| g.level_dbfs > -50.0) {
                assert!(g.probability > 100.0, "{g:?}");
            }
        }
    }

    #[test]
    fn after_a_short_closure_the_detector_goes_on_exactly() {
        let audio = bursts();
        let (all, _) = run(Counting(0), false, &audio, 160);
        let (gated, _) = run(Counting(0), true, &audio, 160);
        // Up to the long closure before 6.5 s, the detector saw exactly the
        // frames it would have seen without the gate: equal scores.
        let mut compared = 0;
        for (a, g) in all.iter().zip(&gated).take_while(|(a, _)| a.start < 50_000) {
            if g.probability != 0.0 {
                assert_eq!(a.probability, g.probability, "{a:?} {g:?}");
                compared += 1;
            }
        }
        assert!(compared > 200, "{compared}");
        // After the long one it resumed from the look-back, with fewer
        // frames behind it.
        let last = gated
            .iter()
            .rev()
            .find(|g| g.probability != 0.0)
            .expect("scored");
        let same = all.iter().find(|a| a.start == last.start).expect("frame");
        assert!(same.probability > last.probability);
    }

    #[test]
    fn reset_restarts_the_gate_too() {
        let mut tv = TelephoneVad::new(MeanAbs).expect("16 kHz");
        let silence = vec![0i16; 32_000];
        tv.push_pcm(&silence, |_| {});
        assert!(!tv.gate_open());
        assert!(tv.gate_stats().skipped > 0);
        tv.reset(100_000);
        assert!(tv.gate_open());
        assert_eq!(tv.gate_stats(), GateStats::default());
        let mut frames = Vec::new();
        tv.push_pcm(&silence[..1_600], |f| frames.push(f));
        assert_eq!(frames[0].start, 100_000);
        assert!(frames
            .iter()
            .all(|f| f.probability == 0.0 && f.level_dbfs == -100.0));
        assert_eq!(tv.now(), 101_600);
    }
}
