//! Turn boundaries from per-frame speech probabilities: the [`Endpointer`]
//! (speech start, end of utterance, noise bursts, short "backchannel"
//! utterances), the stricter [`BargeInDetector`] (the caller talking over
//! the agent) and the [`SpeechGate`] (which frames the neural detector may
//! skip), all configured by one plain [`EndpointConfig`].
//!
//! Sans-IO: no clocks. Time comes only from the frames' stream stamps
//! ([`VadFrame::start`], [`VadFrame::end`], [`VadFrame::ready_at`]), so every
//! event is sample-accurate and tests replay audio faster than real time.
//!
//! # The state machine
//!
//! ```text
//!             p ≥ enter                 speech run ≥ start_min_speech
//!   Silent ─────────────▶ Candidate ───────────────────────────────▶ Speaking ──▶ SpeechStarted
//!     ▲                     │ p < exit                                 │
//!     └─────────────────────┘                                          │ silence ≥ end_silence
//!     ▲                                                                ▼
//!     └──────────────────────────────── SpeechEnded (or NoiseBurst if shorter than min_utterance)
//! ```
//!
//! A frame is "speech" when its probability is at least `enter_probability`
//! while silent, and at least the lower `exit_probability` once a run has
//! begun (hysteresis: a word's quiet tail does not flicker in and out).
//! While speaking, the utterance ends only after `end_silence_ms` without a
//! speech frame (the hangover), so pauses between words and sentences do not
//! cut it.
//!
//! # Where the boundaries are
//!
//! The neural score decides WHETHER there is speech; the frame levels
//! ([`VadFrame::level_dbfs`]) decide exactly WHERE it starts and ends.
//! earshot reacts to an onset within a frame but its score outlasts the
//! speech by 50–170 ms (a 48 ms analysis window plus recurrent state), and
//! in noise it is late on weak onsets. So the endpointer tracks the noise
//! floor over non-speech frames and calls a frame "loud" when it is
//! `boundary_margin_db` above it:
//!
//! - start = the first speech frame of the run, moved back over contiguous
//!   loud frames just before it (at most `onset_lookback_ms`), or forward to
//!   the first loud frame of the run if it is not loud itself;
//! - end = the end of the last loud speech frame, moved forward over
//!   contiguous loud frames just after it (at most `offset_lookahead_ms`
//!   past the last speech frame).
//!
//! Both are stamps in the original stream (the start of a frame, the end of a
//! frame), never the time of the decision, which events carry separately.
//! On the fixtures this puts every boundary within 18 ms of the ground truth
//! on clean telephone audio (see `media/tests/fixtures_vad.rs`).
//!
//! # Skipping the detector: the speech gate
//!
//! The neural score is only needed to tell speech from noise in frames that
//! could be speech. A caller's channel is silent or line noise much of the
//! call (while the agent talks), and a frame whose level stays within
//! `gate_margin_db` of the noise floor carries no more energy than the
//! noise, while a telephone speech onset rises far above it. The
//! [`SpeechGate`] tracks the floor like the endpointer does and tells
//! [`TelephoneVad`](crate::vad::TelephoneVad) when it may skip resampling and
//! scoring: only when the frame is not above `floor + gate_margin_db`, no
//! frame above it came within `gate_hangover_ms`, and no frame scoring
//! `exit_probability` came within `end_silence_ms` (so the detector always
//! runs from the onset of an utterance to its end decision). Skipped frames
//! reach the endpointer with probability 0 and their level, so its floor
//! tracking, its loud/quiet calls and its look-back see every frame as
//! before: skipping never moves a boundary by itself. What can change is
//! the detector's score on the frames after a skip of more than about
//! 200 ms, which it meets with the recurrent state it had when the gate
//! closed rather than the one it would have drifted to (see
//! [`TelephoneVad`](crate::vad::TelephoneVad)).

use std::collections::VecDeque;

use crate::frame::SampleTime;
use crate::vad::VadFrame;

/// 8 kHz samples per millisecond.
const SAMPLES_PER_MS: u64 = 8;

/// Share of the gap closed per frame when the level drops below the noise
/// floor: the floor follows quieter input quickly.
const FLOOR_FALL: f32 = 0.5;

/// Every endpointing, barge-in and speech-gate knob. Defaults were
/// calibrated on telephone-band (300–3400 Hz, mu-law) speech with
/// [`EarshotVad`](crate::vad::EarshotVad) on the clips in `fixtures/audio/`,
/// clean and with line noise at 20 dB SNR; each field says why it has its
/// value.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// A run of speech begins at a frame scoring at least this. Above
    /// earshot's own 0.5 cut because band-limited line noise at 20 dB SNR
    /// scores up to 0.48 on its own; telephone speech scores 0.7–0.99.
    pub enter_probability: f32,
    /// Once a run has begun, frames scoring at least this still count as
    /// speech (hysteresis). Not lower, because line noise hovers at 0.2–0.48
    /// and would keep an utterance open after the caller stopped.
    pub exit_probability: f32,
    /// Speech must last this long (from the start of its first frame) before
    /// SpeechStarted is declared: shorter blips are ignored. 80 ms is five
    /// 16 ms frames: a syllable, not a click.
    pub start_min_speech_ms: u32,
    /// Frames the detector calls non-speech, counted from the end of the last
    /// speech frame, that end the utterance. Longer than the pauses between a
    /// caller's sentences (300–500 ms), short enough that the agent answers
    /// promptly. The detector's score outlasts speech by 50–100 ms, which
    /// adds to this.
    pub end_silence_ms: u32,
    /// After this much silence inside an utterance (counted like
    /// `end_silence_ms`), report [`EndpointEvent::Paused`] once per pause,
    /// so that speech-to-text can transcribe speculatively while the end
    /// silence runs: by the time the utterance ends the words are known,
    /// and a caller whose words already make a whole sentence can be
    /// answered before the end silence is over. 0 (the default) reports no
    /// pauses; otherwise it must be shorter than `end_silence_ms`.
    pub pause_ms: u32,
    /// Utterances shorter than this (start to end of speech) are reported as
    /// [`EndpointEvent::NoiseBurst`] instead of [`EndpointEvent::SpeechEnded`]:
    /// clicks, line hits, a breath. The shortest words ("no", "uh-huh",
    /// "yeah") last 200 ms and more.
    pub min_utterance_ms: u32,
    /// Utterances no longer than this are flagged `is_short`: the length of
    /// "mm-hm", "okay", "yeah" (300–650 ms), which acknowledge rather than
    /// take the turn; the shortest real answers ("yes, that's right") are
    /// over a second.
    pub max_backchannel_ms: u32,
    /// A frame carries the utterance's energy when its level is at least
    /// this far above the tracked noise floor. Used only to place the start
    /// and end precisely, never to decide that there is speech. 3 dB is five
    /// standard deviations of a 16 ms frame's level in steady line noise.
    pub boundary_margin_db: f32,
    /// The noise floor is never assumed quieter than this (dBFS), so on a
    /// digitally silent line the boundaries sit where speech reaches
    /// −52 dBFS, inaudible on a telephone.
    pub boundary_floor_min_dbfs: f32,
    /// The start may move this far before the first speech frame, over
    /// contiguous frames above the floor: the neural score is late on weak
    /// onsets ("s", "h") and later still in noise.
    pub onset_lookback_ms: u32,
    /// The end may move this far past the last speech frame, over contiguous
    /// frames above the floor that the detector no longer calls speech: a
    /// fading vowel or nasal in noise, whose score drops before its energy.
    pub offset_lookahead_ms: u32,
    /// Time constant with which the noise floor follows non-speech frames
    /// within `boundary_margin_db` of it (it falls at once towards quieter
    /// input): steady noise is learnt in a few hundred milliseconds.
    pub noise_floor_track_ms: u32,
    /// How fast the floor creeps up under non-speech frames louder than
    /// that, in dB per second: a real rise in the noise is learnt within
    /// seconds, while a weak word the detector does not call speech ("sure"
    /// in noise scores 0.3–0.5) barely moves it.
    pub noise_floor_rise_db_per_s: f32,
    /// Barge-in needs frames scoring at least this, with no hysteresis:
    /// stricter than the endpointer, since a false barge-in cuts the agent
    /// off mid-sentence.
    pub barge_in_probability: f32,
    /// Barge-in needs an unbroken run of such frames this long: longer than
    /// a cough or a click, short enough to stop the agent within a word.
    pub barge_in_min_speech_ms: u32,
    /// Whether [`TelephoneVad`](crate::vad::TelephoneVad) may skip resampling
    /// and neural scoring on frames the [`SpeechGate`] calls noise. On by
    /// default: the golden test (`media/tests/fixtures_vad.rs`) passes with
    /// it, and after seconds of silence or line noise every fixture is
    /// endpointed to the same frame as without it (the `path` tests), at
    /// about half the cost of a call whose caller speaks 38 % of the time.
    /// Off runs the detector on every frame.
    pub gate_enabled: bool,
    /// A frame opens the gate when its level is at least this far above the
    /// gate's noise floor. It only decides when the detector runs, never
    /// where a boundary goes (the endpointer's loud/quiet call uses the
    /// level, reported for every frame). 3 dB is 5 standard deviations of a
    /// 16 ms frame's level in steady line noise, so noise alone rarely opens
    /// the gate, while speech even at 20 dB SNR sits some 20 dB above it
    /// (a weak onset that stays under the margin is scored from the first
    /// louder frame, and the endpointer's look-back still stamps it).
    pub gate_margin_db: f32,
    /// The gate stays open this long after the last frame above its margin,
    /// so the detector sees a sound to its end even where its score lags the
    /// energy (earshot is late on weak onsets, and in noise).
    pub gate_hangover_ms: u32,
    /// When the gate opens after a closure too long for the detector simply
    /// to catch up (about 200 ms), this much of the audio before the opening
    /// frame (at most [`MAX_GATE_LOOKBACK_MS`]) is replayed through the
    /// restarted resampler and the detector, unreported, so that the first
    /// frame they score has its context: earshot's 48 ms window and a few
    /// frames more. Longer look-backs changed nothing on the fixtures.
    pub gate_lookback_ms: u32,
    /// The gate stays open for this long at the start of a stream (at least
    /// `end_silence_ms`): the floor is learnt with the detector's help, a
    /// call that opens with speech is scored from its first frame, and the
    /// detector's recurrent state, which it keeps while the gate is closed,
    /// has settled on the line. earshot's score on a noise onset after
    /// digital silence keeps falling for about 2 s: frozen sooner, its state
    /// scores the hiss after a silent lead 0.03–0.1 higher than a detector
    /// that never stopped, enough to cross `enter_probability`.
    pub gate_warm_up_ms: u32,
}

/// Longest [`EndpointConfig::gate_lookback_ms`]: what the 8 kHz history kept
/// by [`TelephoneVad`](crate::vad::TelephoneVad) can replay.
pub const MAX_GATE_LOOKBACK_MS: u32 = 160;

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            enter_probability: 0.6,
            exit_probability: 0.5,
            start_min_speech_ms: 80,
            end_silence_ms: 600,
            pause_ms: 0,
            min_utterance_ms: 150,
            max_backchannel_ms: 800,
            boundary_margin_db: 2.0,
            boundary_floor_min_dbfs: -55.0,
            onset_lookback_ms: 240,
            offset_lookahead_ms: 160,
            noise_floor_track_ms: 160,
            noise_floor_rise_db_per_s: 1.0,
            barge_in_probability: 0.8,
            barge_in_min_speech_ms: 240,
            gate_enabled: true,
            gate_margin_db: 3.0,
            gate_hangover_ms: 160,
            gate_lookback_ms: 96,
            gate_warm_up_ms: 2_000,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointConfigError {
    /// A probability outside 0..=1, or the exit threshold above the enter
    /// threshold.
    Thresholds,
    /// `end_silence_ms` or `noise_floor_track_ms` is 0.
    ZeroDuration,
    /// `pause_ms` is not shorter than `end_silence_ms`.
    Pause,
    /// A decibel setting that is not finite, or a negative margin or rise.
    Levels,
    /// `gate_lookback_ms` above [`MAX_GATE_LOOKBACK_MS`].
    GateLookback,
}

impl std::fmt::Display for EndpointConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Thresholds => write!(
                f,
                "probabilities must lie in 0..=1 and exit_probability must not exceed enter_probability"
            ),
            Self::ZeroDuration => {
                write!(f, "end_silence_ms and noise_floor_track_ms must be greater than 0")
            }
            Self::Pause => write!(f, "pause_ms must be shorter than end_silence_ms"),
            Self::Levels => write!(
                f,
                "boundary_margin_db, gate_margin_db and noise_floor_rise_db_per_s must be finite and not negative, \
                 boundary_floor_min_dbfs finite"
            ),
            Self::GateLookback => write!(
                f,
                "gate_lookback_ms must not exceed {MAX_GATE_LOOKBACK_MS}"
            ),
        }
    }
}

impl std::error::Error for EndpointConfigError {}

impl EndpointConfig {
    /// Checks thresholds, durations and levels.
    pub fn validate(&self) -> Result<(), EndpointConfigError> {
        let unit = 0.0..=1.0;
        if !unit.contains(&self.enter_probability)
            || !unit.contains(&self.exit_probability)
            || !unit.contains(&self.barge_in_probability)
            || self.exit_probability > self.enter_probability
        {
            return Err(EndpointConfigError::Thresholds);
        }
        if self.end_silence_ms == 0 || self.noise_floor_track_ms == 0 {
            return Err(EndpointConfigError::ZeroDuration);
        }
        if !self.boundary_margin_db.is_finite()
            || self.boundary_margin_db < 0.0
            || !self.boundary_floor_min_dbfs.is_finite()
            || !self.noise_floor_rise_db_per_s.is_finite()
            || self.noise_floor_rise_db_per_s < 0.0
            || !self.gate_margin_db.is_finite()
            || self.gate_margin_db < 0.0
        {
            return Err(EndpointConfigError::Levels);
        }
        if self.gate_lookback_ms > MAX_GATE_LOOKBACK_MS {
            return Err(EndpointConfigError::GateLookback);
        }
        if self.pause_ms >= self.end_silence_ms {
            return Err(EndpointConfigError::Pause);
        }
        Ok(())
    }
}

/// A finished utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utterance {
    /// Start of speech (see [`EndpointEvent::SpeechStarted`]).
    pub start: SampleTime,
    /// End of speech: the end of the last speech frame above the noise
    /// floor, extended over contiguous loud frames just after it (at most
    /// `offset_lookahead_ms` past the last speech frame); the end of the last
    /// speech frame if no frame was above the floor.
    pub end: SampleTime,
    /// When the end was decided: `ready_at` of the frame that completed the
    /// end silence.
    pub decided_at: SampleTime,
    /// Backchannel-length (at most `max_backchannel_ms`).
    pub is_short: bool,
}

impl Utterance {
    /// Length from start to end of speech, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        (self.end - self.start) / SAMPLES_PER_MS
    }
}

/// What the endpointer decided on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// The caller started speaking.
    SpeechStarted {
        /// Start of speech: the start of the first speech frame of the run,
        /// moved back over the contiguous frames above the noise floor just
        /// before it (at most `onset_lookback_ms`), or forward to the first
        /// such frame in the run. Not the time of the decision.
        start: SampleTime,
        /// `ready_at` of the frame that completed the minimum run.
        decided_at: SampleTime,
    },
    /// The caller has paused for `pause_ms` inside an utterance that is
    /// still open: it may end at `end` (as [`Utterance::end`] would be if
    /// no more speech came), or go on. At most one per pause.
    Paused {
        /// Start of the utterance's speech.
        start: SampleTime,
        /// Where the utterance ends if the caller says no more.
        end: SampleTime,
        /// `ready_at` of the frame that completed the pause.
        decided_at: SampleTime,
    },
    /// Speech came back after a reported [`EndpointEvent::Paused`]: the
    /// utterance goes on.
    Resumed {
        /// `ready_at` of the speech frame.
        decided_at: SampleTime,
    },
    /// The caller stopped speaking: the utterance is complete.
    SpeechEnded(Utterance),
    /// What started as speech ended shorter than `min_utterance_ms`: treat
    /// as noise (it was preceded by a `SpeechStarted`, which this retracts).
    NoiseBurst {
        /// Start of its first speech frame.
        start: SampleTime,
        /// End of its last speech frame.
        end: SampleTime,
        /// When it was decided.
        decided_at: SampleTime,
    },
}

/// Where the endpointer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No speech.
    Silent,
    /// A run of speech frames shorter than the start minimum.
    Candidate {
        /// Start of its first speech frame.
        vad_start: SampleTime,
        /// Start of speech from the levels, once a loud frame was seen.
        onset: Option<SampleTime>,
        /// End of the latest loud speech frame.
        last_loud_end: Option<SampleTime>,
    },
    /// An utterance in progress.
    Speaking {
        /// Start of speech.
        start: SampleTime,
        /// End of its latest speech frame.
        last_speech_end: SampleTime,
        /// End of its latest speech frame above the noise floor.
        last_loud_end: Option<SampleTime>,
        /// Whether the current pause was reported.
        paused: bool,
    },
}

/// A recent frame, kept for the onset look-back.
#[derive(Debug, Clone, Copy)]
struct Recent {
    /// Its start.
    start: SampleTime,
    /// Its end.
    end: SampleTime,
    /// Whether it was above the noise floor.
    loud: bool,
}

/// Start and end of caller utterances from per-frame speech probabilities
/// and levels.
#[derive(Debug, Clone)]
pub struct Endpointer {
    /// Its settings.
    config: EndpointConfig,
    /// Where it is.
    state: State,
    /// Noise floor, from non-speech frames.
    floor: NoiseFloor,
    /// Frames before the current one, newest last; capacity fixed at
    /// construction (one per millisecond of look-back, so frames of 1 ms and
    /// up fit), never grown.
    recent: VecDeque<Recent>,
}

impl Endpointer {
    /// An endpointer with these settings, in silence.
    pub fn new(config: EndpointConfig) -> Result<Self, EndpointConfigError> {
        config.validate()?;
        let capacity = config.onset_lookback_ms as usize + 1;
        Ok(Self {
            floor: NoiseFloor::new(&config),
            config,
            state: State::Silent,
            recent: VecDeque::with_capacity(capacity),
        })
    }

    /// Its settings.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Whether an utterance has started and not yet ended.
    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// The noise floor it currently assumes, in dBFS (never below
    /// `boundary_floor_min_dbfs`).
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor.dbfs()
    }

    /// Takes the next frame; frames must come in stream order.
    pub fn push(&mut self, frame: &VadFrame) -> Option<EndpointEvent> {
        let loud = frame.level_dbfs >= self.noise_floor_dbfs() + self.config.boundary_margin_db;
        let event = self.step(frame, loud);
        if !self.is_speaking() && frame.probability < self.config.exit_probability {
            self.floor.track(frame, loud);
        }
        if self.recent.len() == self.recent.capacity() {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            start: frame.start,
            end: frame.end,
            loud,
        });
        event
    }

    /// Ends the stream at `at` (hang-up, stream stop): closes an utterance in
    /// progress as if its end silence had elapsed.
    pub fn finish(&mut self, at: SampleTime) -> Option<EndpointEvent> {
        let event = match self.state {
            State::Speaking {
                start,
                last_speech_end,
                last_loud_end,
                ..
            } => Some(self.close(start, last_speech_end, last_loud_end, at)),
            _ => None,
        };
        self.state = State::Silent;
        event
    }

    /// Back to silence, forgetting any run or utterance in progress, the
    /// recent frames and the noise floor.
    pub fn reset(&mut self) {
        self.state = State::Silent;
        self.recent.clear();
        self.floor.reset();
    }

    /// The state machine proper.
    fn step(&mut self, frame: &VadFrame, loud: bool) -> Option<EndpointEvent> {
        let c = &self.config;
        let p = frame.probability;
        match self.state {
            State::Silent => {
                if p < c.enter_probability {
                    return None;
                }
                let (onset, last_loud_end) = self.look_back(frame, loud);
                self.state = State::Candidate {
                    vad_start: frame.start,
                    onset,
                    last_loud_end,
                };
                self.maybe_start(frame)
            }
            State::Candidate {
                vad_start,
                onset,
                last_loud_end,
            } => {
                if p < c.exit_probability {
                    self.state = State::Silent;
                    return None;
                }
                self.state = State::Candidate {
                    vad_start,
                    onset: if loud {
                        onset.or(Some(frame.start))
                    } else {
                        onset
                    },
                    last_loud_end: if loud { Some(frame.end) } else { last_loud_end },
                };
                self.maybe_start(frame)
            }
            State::Speaking {
                start,
                last_speech_end,
                last_loud_end,
                paused,
            } => {
                if p >= c.exit_probability {
                    self.state = State::Speaking {
                        start,
                        last_speech_end: frame.end,
                        last_loud_end: if loud { Some(frame.end) } else { last_loud_end },
                        paused: false,
                    };
                    return paused.then_some(EndpointEvent::Resumed {
                        decided_at: frame.ready_at,
                    });
                }
                // A loud frame right after the loud end (no gap), not too far
                // past the last speech frame, extends the end.
                let last_loud_end = if loud
                    && last_loud_end == Some(frame.start)
                    && frame.end <= last_speech_end + ms(c.offset_lookahead_ms)
                {
                    Some(frame.end)
                } else {
                    last_loud_end
                };
                let silence = frame.end.saturating_sub(last_speech_end);
                if silence >= ms(c.end_silence_ms) {
                    return Some(self.close(start, last_speech_end, last_loud_end, frame.ready_at));
                }
                let pause = c.pause_ms > 0 && !paused && silence >= ms(c.pause_ms);
                self.state = State::Speaking {
                    start,
                    last_speech_end,
                    last_loud_end,
                    paused: paused || pause,
                };
                pause.then(|| EndpointEvent::Paused {
                    start,
                    end: utterance_end(start, last_speech_end, last_loud_end),
                    decided_at: frame.ready_at,
                })
            }
        }
    }

    /// At the first speech frame of a run: where the energy onset is (this
    /// frame if loud, moved back over contiguous loud recent frames within
    /// the look-back), and the end of the latest loud frame.
    fn look_back(&self, frame: &VadFrame, loud: bool) -> (Option<SampleTime>, Option<SampleTime>) {
        let limit = frame
            .start
            .saturating_sub(ms(self.config.onset_lookback_ms));
        let mut onset = loud.then_some(frame.start);
        let mut last_loud_end = loud.then_some(frame.end);
        for r in self.recent.iter().rev() {
            if !r.loud || r.start < limit {
                break;
            }
            onset = Some(r.start);
            last_loud_end = last_loud_end.or(Some(r.end));
        }
        (onset, last_loud_end)
    }

    /// In a candidate run ending with `frame`: declares speech if the run is
    /// long enough.
    fn maybe_start(&mut self, frame: &VadFrame) -> Option<EndpointEvent> {
        let State::Candidate {
            vad_start,
            onset,
            last_loud_end,
        } = self.state
        else {
            return None;
        };
        if frame.end - vad_start < ms(self.config.start_min_speech_ms) {
            return None;
        }
        let start = onset.unwrap_or(vad_start);
        self.state = State::Speaking {
            start,
            last_speech_end: frame.end,
            last_loud_end,
            paused: false,
        };
        Some(EndpointEvent::SpeechStarted {
            start,
            decided_at: frame.ready_at,
        })
    }

    /// Ends the utterance that started at `start`, decided at `decided_at`.
    fn close(
        &mut self,
        start: SampleTime,
        last_speech_end: SampleTime,
        last_loud_end: Option<SampleTime>,
        decided_at: SampleTime,
    ) -> EndpointEvent {
        self.state = State::Silent;
        let end = utterance_end(start, last_speech_end, last_loud_end);
        let length = end - start;
        if length < ms(self.config.min_utterance_ms) {
            return EndpointEvent::NoiseBurst {
                start,
                end,
                decided_at,
            };
        }
        EndpointEvent::SpeechEnded(Utterance {
            start,
            end,
            decided_at,
            is_short: length <= ms(self.config.max_backchannel_ms),
        })
    }
}

/// Where an utterance ends: its last loud frame when there was one after
/// the start, else its last speech frame.
fn utterance_end(
    start: SampleTime,
    last_speech_end: SampleTime,
    last_loud_end: Option<SampleTime>,
) -> SampleTime {
    match last_loud_end {
        Some(e) if e > start => e,
        _ => last_speech_end,
    }
}

/// A noise floor in dBFS, followed over frames that are not speech: the
/// first one sets it; then it falls halfway at once towards quieter frames,
/// follows frames within the boundary margin with `noise_floor_track_ms`,
/// and creeps up by `noise_floor_rise_db_per_s` under louder ones; never
/// below `boundary_floor_min_dbfs`. Shared by the [`Endpointer`] and the
/// [`SpeechGate`], so both learn the same floor the same way.
#[derive(Debug, Clone)]
struct NoiseFloor {
    /// The floor, in dBFS.
    dbfs: f32,
    /// Whether a frame has set it yet.
    known: bool,
    /// `boundary_floor_min_dbfs`.
    min_dbfs: f32,
    /// `noise_floor_track_ms`.
    track_ms: u32,
    /// `noise_floor_rise_db_per_s`.
    rise_db_per_s: f32,
}

impl NoiseFloor {
    /// Unknown, at the minimum.
    fn new(config: &EndpointConfig) -> Self {
        Self {
            dbfs: config.boundary_floor_min_dbfs,
            known: false,
            min_dbfs: config.boundary_floor_min_dbfs,
            track_ms: config.noise_floor_track_ms,
            rise_db_per_s: config.noise_floor_rise_db_per_s,
        }
    }

    /// The floor (the minimum until a frame has set it).
    fn dbfs(&self) -> f32 {
        self.dbfs
    }

    /// Follows a non-speech frame; `loud` says whether it is above the floor
    /// by the boundary margin.
    fn track(&mut self, frame: &VadFrame, loud: bool) {
        let level = frame.level_dbfs;
        if !self.known {
            self.known = true;
            self.dbfs = level.max(self.min_dbfs);
            return;
        }
        let span_ms = (frame.end - frame.start) as f32 / SAMPLES_PER_MS as f32;
        let step = if level < self.dbfs {
            FLOOR_FALL * (level - self.dbfs)
        } else if loud {
            self.rise_db_per_s * span_ms / 1000.0
        } else {
            (span_ms / self.track_ms as f32).min(1.0) * (level - self.dbfs)
        };
        self.dbfs = (self.dbfs + step).max(self.min_dbfs);
    }

    /// Unknown again.
    fn reset(&mut self) {
        self.dbfs = self.min_dbfs;
        self.known = false;
    }
}

/// Decides, frame by frame, whether the neural detector must score a frame
/// or may skip it (see the module docs). Sans-IO like the rest: it sees each
/// frame's 8 kHz level before the decision and the frame as reported after
/// it; [`TelephoneVad`](crate::vad::TelephoneVad) does the skipping.
///
/// The detector must run on a frame when the gate is disabled, when the
/// floor is not known yet, when the frame starts within the hangover of an
/// earlier frame (`gate_hangover_ms` after one above the margin,
/// `end_silence_ms` after one scoring `exit_probability`), or when the
/// frame itself is at least `gate_margin_db` above the floor. The hangover
/// is armed for `end_silence_ms` at the start of the stream, so the floor is
/// learnt with the detector's help and a call that opens with speech is
/// scored from its first frame.
///
/// Since the endpointer's utterance can only last `end_silence_ms` past its
/// last frame scoring `exit_probability`, and a candidate run is made of
/// such frames, the detector is never skipped while an utterance is in
/// progress or being decided, whatever the levels.
#[derive(Debug, Clone)]
pub struct SpeechGate {
    /// `gate_enabled`.
    enabled: bool,
    /// `gate_margin_db`: above the floor by this, a frame opens the gate.
    margin_db: f32,
    /// `boundary_margin_db`: how the floor tells "within" from "louder".
    boundary_margin_db: f32,
    /// `exit_probability`: scores at least this are speech.
    exit_probability: f32,
    /// `gate_hangover_ms` in samples.
    hangover: SampleTime,
    /// `end_silence_ms` in samples.
    speech_hangover: SampleTime,
    /// `gate_lookback_ms` in samples.
    lookback: SampleTime,
    /// `gate_warm_up_ms` (at least `end_silence_ms`) in samples.
    warm_up: SampleTime,
    /// The noise floor it compares levels with.
    floor: NoiseFloor,
    /// Frames starting before this are scored whatever their level.
    open_until: SampleTime,
}

impl SpeechGate {
    /// A gate with the gate, floor and hangover settings of `config`, for a
    /// stream starting at 0.
    pub fn new(config: &EndpointConfig) -> Result<Self, EndpointConfigError> {
        config.validate()?;
        Ok(Self::from_valid(config))
    }

    /// [`new`](Self::new) for a configuration already validated.
    fn from_valid(config: &EndpointConfig) -> Self {
        let warm_up = ms(config.gate_warm_up_ms).max(ms(config.end_silence_ms));
        Self {
            enabled: config.gate_enabled,
            margin_db: config.gate_margin_db,
            boundary_margin_db: config.boundary_margin_db,
            exit_probability: config.exit_probability,
            hangover: ms(config.gate_hangover_ms),
            speech_hangover: ms(config.end_silence_ms),
            lookback: ms(config.gate_lookback_ms),
            warm_up,
            floor: NoiseFloor::new(config),
            open_until: warm_up,
        }
    }

    /// Whether it may ever skip the detector.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// How much audio to replay before the frame that opens it, in samples.
    pub fn lookback(&self) -> SampleTime {
        self.lookback
    }

    /// The noise floor it compares levels with, in dBFS.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.floor.dbfs()
    }

    /// Whether the frame starting at `start` must be scored whatever its
    /// level (disabled, floor unknown, or within a hangover).
    pub fn holds_open(&self, start: SampleTime) -> bool {
        !self.enabled || !self.floor.known || start < self.open_until
    }

    /// Whether the detector must score the frame starting at `start` whose
    /// 8 kHz level is `level_dbfs`.
    pub fn must_score(&self, start: SampleTime, level_dbfs: f32) -> bool {
        self.holds_open(start) || level_dbfs >= self.floor.dbfs() + self.margin_db
    }

    /// Learns from a frame as reported to the endpointer: its level, and its
    /// score (0 where the detector was skipped). Frames must come in order.
    pub fn observe(&mut self, frame: &VadFrame) {
        let floor = self.floor.dbfs();
        if frame.level_dbfs >= floor + self.margin_db {
            self.open_until = self.open_until.max(frame.end + self.hangover);
        }
        if frame.probability >= self.exit_probability {
            self.open_until = self.open_until.max(frame.end + self.speech_hangover);
        } else {
            let loud = frame.level_dbfs >= floor + self.boundary_margin_db;
            self.floor.track(frame, loud);
        }
    }

    /// Starts over for a stream whose first frame starts at `origin`.
    pub fn reset(&mut self, origin: SampleTime) {
        self.floor.reset();
        self.open_until = origin + self.warm_up;
    }
}

impl Default for SpeechGate {
    /// The gate of the default [`EndpointConfig`] (enabled).
    fn default() -> Self {
        Self::from_valid(&EndpointConfig::default())
    }
}

/// The caller started talking over the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BargeIn {
    /// Start of the first frame of the qualifying run.
    pub start: SampleTime,
    /// `ready_at` of the frame that completed the run.
    pub decided_at: SampleTime,
}

/// Detects the caller speaking while the agent talks: an unbroken run of
/// frames scoring at least `barge_in_probability`, lasting
/// `barge_in_min_speech_ms`. Fires at most once until [`reset`](Self::reset),
/// which the call session does at the start of every agent turn.
#[derive(Debug, Clone)]
pub struct BargeInDetector {
    /// Minimum score of a run frame.
    probability: f32,
    /// Minimum run length in 8 kHz samples.
    min_run: SampleTime,
    /// Start of the current run, if one is in progress.
    run_start: Option<SampleTime>,
    /// Whether it has fired since the last reset.
    fired: bool,
}

impl BargeInDetector {
    /// A detector using the barge-in fields of `config`.
    pub fn new(config: &EndpointConfig) -> Result<Self, EndpointConfigError> {
        config.validate()?;
        Ok(Self {
            probability: config.barge_in_probability,
            min_run: ms(config.barge_in_min_speech_ms),
            run_start: None,
            fired: false,
        })
    }

    /// Whether it has fired since the last reset.
    pub fn has_fired(&self) -> bool {
        self.fired
    }

    /// Takes the next frame's score; returns the barge-in once per turn.
    pub fn push(&mut self, frame: &VadFrame) -> Option<BargeIn> {
        if self.fired {
            return None;
        }
        if frame.probability < self.probability {
            self.run_start = None;
            return None;
        }
        let start = *self.run_start.get_or_insert(frame.start);
        if frame.end - start >= self.min_run {
            self.fired = true;
            return Some(BargeIn {
                start,
                decided_at: frame.ready_at,
            });
        }
        None
    }

    /// Re-arms it for a new agent turn.
    pub fn reset(&mut self) {
        self.run_start = None;
        self.fired = false;
    }
}

/// Milliseconds to 8 kHz samples.
fn ms(ms: u32) -> SampleTime {
    SampleTime::from(ms) * SAMPLES_PER_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quiet frame level (digital-silence line).
    const QUIET: f32 = -90.0;
    /// A speech frame level.
    const LOUD: f32 = -20.0;

    /// Frames of 128 samples (16 ms) with these probabilities and levels,
    /// starting at 0; `ready_at` is the frame end plus the resampler's 80
    /// samples.
    fn frames_with(probs: &[(f32, f32)]) -> Vec<VadFrame> {
        probs
            .iter()
            .enumerate()
            .map(|(k, &(p, level))| VadFrame {
                probability: p,
                level_dbfs: level,
                start: 128 * k as u64,
                end: 128 * (k as u64 + 1),
                ready_at: 128 * (k as u64 + 1) + 80,
            })
            .collect()
    }

    /// Frames whose level follows the probability: loud when p ≥ 0.5.
    fn frames(probs: &[f32]) -> Vec<VadFrame> {
        let with: Vec<(f32, f32)> = probs
            .iter()
            .map(|&p| (p, if p >= 0.5 { LOUD } else { QUIET }))
            .collect();
        frames_with(&with)
    }

    /// `n` frames of probability `p`.
    fn run(p: f32, n: usize) -> Vec<f32> {
        vec![p; n]
    }

    fn events_of(config: EndpointConfig, fs: &[VadFrame]) -> Vec<EndpointEvent> {
        let mut ep = Endpointer::new(config).expect("valid");
        let mut out: Vec<EndpointEvent> = fs.iter().filter_map(|f| ep.push(f)).collect();
        if let Some(last) = fs.last() {
            out.extend(ep.finish(last.ready_at));
        }
        out
    }

    fn events(config: EndpointConfig, probs: &[f32]) -> Vec<EndpointEvent> {
        events_of(config, &frames(probs))
    }

    fn ended(ev: &[EndpointEvent]) -> Utterance {
        match ev.get(1) {
            Some(EndpointEvent::SpeechEnded(u)) => *u,
            _ => panic!("no utterance in {ev:?}"),
        }
    }

    #[test]
    fn start_is_stamped_at_the_first_speech_frame_not_the_decision() {
        // 10 silent frames, then 100 speech frames, then 60 silent (960 ms).
        let probs = [run(0.0, 10), run(0.9, 100), run(0.0, 60)].concat();
        let ev = events(EndpointConfig::default(), &probs);
        // Minimum run 80 ms = 5 frames: decided on frame 14.
        assert_eq!(
            ev[0],
            EndpointEvent::SpeechStarted {
                start: 1_280,
                decided_at: 15 * 128 + 80
            }
        );
        // End of speech: end of frame 109; decided once 600 ms of silence
        // has passed (frame end ≥ 14 080 + 4 800).
        let u = ended(&ev);
        assert_eq!((u.start, u.end), (1_280, 14_080));
        assert_eq!(u.decided_at, 18_944 + 80);
        assert!(!u.is_short);
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn pauses_shorter_than_the_end_silence_do_not_split() {
        let probs = [
            run(0.9, 30),
            run(0.05, 30), // 480 ms pause
            run(0.9, 30),
            run(0.0, 60),
        ]
        .concat();
        let ev = events(EndpointConfig::default(), &probs);
        assert_eq!(ev.len(), 2, "{ev:?}");
        let u = ended(&ev);
        assert_eq!((u.start, u.end), (0, 90 * 128));
    }

    #[test]
    fn a_pause_is_reported_once_with_the_end_the_utterance_would_have() {
        let config = EndpointConfig {
            pause_ms: 200,
            ..EndpointConfig::default()
        };
        let probs = [
            run(0.9, 30),
            run(0.05, 30), // 480 ms pause: reported, then speech resumes
            run(0.9, 30),
            run(0.0, 60), // the real end
        ]
        .concat();
        let ev = events(config.clone(), &probs);
        assert_eq!(ev.len(), 5, "{ev:?}");
        // 200 ms of silence after frame 29 ends at 3 840: frame 42 ends at
        // 5 504 ≥ 3 840 + 1 600.
        assert_eq!(
            ev[1],
            EndpointEvent::Paused {
                start: 0,
                end: 30 * 128,
                decided_at: 43 * 128 + 80
            }
        );
        assert_eq!(
            ev[2],
            EndpointEvent::Resumed {
                decided_at: 61 * 128 + 80
            },
            "the first speech frame after the pause"
        );
        let EndpointEvent::Paused { end, .. } = ev[3] else {
            panic!("{ev:?}")
        };
        let EndpointEvent::SpeechEnded(u) = ev[4] else {
            panic!("{ev:?}")
        };
        assert_eq!(end, u.end, "the last pause announces the final end");
        // Off by default, and never as long as the end silence.
        assert_eq!(events(EndpointConfig::default(), &probs).len(), 2);
        let bad = EndpointConfig {
            pause_ms: 600,
            ..EndpointConfig::default()
        };
        assert_eq!(bad.validate(), Err(EndpointConfigError::Pause));
    }

    #[test]
    fn hysteresis_keeps_weaker_frames_inside_speech() {
        // 0.55 is below enter but above exit.
        let probs = [run(0.9, 10), run(0.55, 20), run(0.0, 60)].concat();
        let u = ended(&events(EndpointConfig::default(), &probs));
        assert_eq!(u.end, 30 * 128);
        // But 0.55 alone never starts speech.
        assert!(events(EndpointConfig::default(), &run(0.55, 100)).is_empty());
    }

    #[test]
    fn the_end_is_the_last_loud_speech_frame_not_the_detector_tail() {
        // The detector's score outlasts the speech energy by 5 frames.
        let mut fs = vec![(0.0, QUIET); 10];
        fs.extend(vec![(0.9, LOUD); 40]);
        fs.extend(vec![(0.8, QUIET); 5]);
        fs.extend(vec![(0.0, QUIET); 60]);
        let u = ended(&events_of(EndpointConfig::default(), &frames_with(&fs)));
        assert_eq!((u.start, u.end), (10 * 128, 50 * 128));
    }

    #[test]
    fn the_start_moves_back_over_a_weak_onset_the_detector_missed() {
        // Steady line noise at −40 dBFS, then a weak onset (−33 dBFS) that
        // the detector scores low for 6 frames, then clear speech.
        let mut fs = vec![(0.3, -40.0); 60];
        fs.extend(vec![(0.2, -33.0); 6]);
        fs.extend(vec![(0.9, -20.0); 40]);
        fs.extend(vec![(0.1, -40.0); 60]);
        let ev = events_of(EndpointConfig::default(), &frames_with(&fs));
        let u = ended(&ev);
        assert_eq!(u.start, 60 * 128);
        assert_eq!(u.end, 106 * 128);
        // At most `onset_lookback_ms` back: 240 ms = 15 frames.
        let mut fs = vec![(0.3, -40.0); 60];
        fs.extend(vec![(0.2, -33.0); 30]);
        fs.extend(vec![(0.9, -20.0); 40]);
        fs.extend(vec![(0.1, -40.0); 60]);
        let u = ended(&events_of(EndpointConfig::default(), &frames_with(&fs)));
        assert_eq!(u.start, 75 * 128);
    }

    #[test]
    fn the_floor_follows_noise_but_never_drops_below_its_minimum() {
        let mut ep = Endpointer::new(EndpointConfig::default()).expect("valid");
        assert_eq!(ep.noise_floor_dbfs().round(), -55.0);
        for f in frames_with(&[(0.1, -40.0); 100]) {
            ep.push(&f);
        }
        assert!((ep.noise_floor_dbfs() + 40.0).abs() < 0.1);
        for f in frames_with(&[(0.1, -100.0); 10]) {
            ep.push(&f);
        }
        assert_eq!(ep.noise_floor_dbfs().round(), -55.0);
    }

    #[test]
    fn short_blips_never_start_and_short_runs_are_noise() {
        // 4 frames = 64 ms < 80 ms minimum: nothing.
        let probs = [run(0.9, 4), run(0.0, 60)].concat();
        assert!(events(EndpointConfig::default(), &probs).is_empty());
        // 8 frames = 128 ms: starts, but < 150 ms minimum utterance.
        let probs = [run(0.9, 8), run(0.0, 60)].concat();
        let ev = events(EndpointConfig::default(), &probs);
        assert!(matches!(
            ev[0],
            EndpointEvent::SpeechStarted { start: 0, .. }
        ));
        assert!(matches!(
            ev[1],
            EndpointEvent::NoiseBurst {
                start: 0,
                end: 1_024,
                ..
            }
        ));
    }

    #[test]
    fn backchannel_length_utterances_are_short() {
        // 50 frames = 800 ms: short. 51 frames: not.
        for (n, short) in [(20, true), (50, true), (51, false), (60, false)] {
            let probs = [run(0.9, n), run(0.0, 60)].concat();
            let u = ended(&events(EndpointConfig::default(), &probs));
            assert_eq!(u.is_short, short, "{n} frames");
        }
    }

    #[test]
    fn finish_closes_an_open_utterance() {
        let u = ended(&events(EndpointConfig::default(), &run(0.9, 30)));
        assert_eq!((u.start, u.end, u.decided_at), (0, 3_840, 3_920));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = EndpointConfig {
            exit_probability: 0.9,
            ..EndpointConfig::default()
        };
        assert_eq!(bad.validate(), Err(EndpointConfigError::Thresholds));
        let bad = EndpointConfig {
            end_silence_ms: 0,
            ..EndpointConfig::default()
        };
        assert!(Endpointer::new(bad).is_err());
        let bad = EndpointConfig {
            boundary_margin_db: f32::NAN,
            ..EndpointConfig::default()
        };
        assert_eq!(bad.validate(), Err(EndpointConfigError::Levels));
        assert!(EndpointConfig::default().validate().is_ok());
    }

    #[test]
    fn barge_in_needs_a_strict_unbroken_run_and_fires_once_per_turn() {
        let config = EndpointConfig::default();
        let mut b = BargeInDetector::new(&config).expect("valid");
        // 0.7 is speech for the endpointer but not for barge-in.
        let probs = [
            run(0.7, 30),
            run(0.9, 10),
            run(0.1, 1),
            run(0.9, 20),
            run(0.9, 20),
        ]
        .concat();
        let fired: Vec<BargeIn> = frames(&probs).iter().filter_map(|f| b.push(f)).collect();
        // First strong run (10 frames = 160 ms) is too short; the second
        // starts at frame 41 and reaches 240 ms at frame 55.
        assert_eq!(
            fired,
            vec![BargeIn {
                start: 41 * 128,
                decided_at: 56 * 128 + 80
            }]
        );
        assert!(b.has_fired());
        b.reset();
        assert!(!b.has_fired());
        let again: Vec<BargeIn> = frames(&run(0.95, 20))
            .iter()
            .filter_map(|f| b.push(f))
            .collect();
        assert_eq!(again.len(), 1);
    }

    /// The gate's decision for the frame `k` (128 samples from 0), of this
    /// level, then what it learns from it with score `p`.
    fn gate_step(gate: &mut SpeechGate, k: u64, level: f32, p: f32) -> bool {
        let must = gate.must_score(128 * k, level);
        let f = VadFrame {
            probability: if must { p } else { 0.0 },
            level_dbfs: level,
            start: 128 * k,
            end: 128 * (k + 1),
            ready_at: 128 * (k + 1) + 80,
        };
        gate.observe(&f);
        must
    }

    #[test]
    fn the_gate_skips_only_quiet_frames_after_its_warm_up_and_hangovers() {
        let mut gate = SpeechGate::new(&EndpointConfig::default()).expect("valid");
        // Warm-up: 2 s = 125 frames scored whatever the level.
        let mut k = 0;
        while k < 125 {
            assert!(gate_step(&mut gate, k, -40.0, 0.3), "frame {k}");
            k += 1;
        }
        assert!((gate.noise_floor_dbfs() + 40.0).abs() < 0.1);
        // Steady noise within the margin: skipped.
        assert!(!gate_step(&mut gate, k, -38.5, 0.3));
        k += 1;
        // A frame 3 dB over the floor opens it, and it holds for 160 ms
        // (10 frames) of quiet frames the detector calls noise.
        assert!(gate_step(&mut gate, k, -36.5, 0.3));
        k += 1;
        for _ in 0..10 {
            assert!(gate_step(&mut gate, k, -40.0, 0.3));
            k += 1;
        }
        assert!(!gate_step(&mut gate, k, -40.0, 0.3));
        k += 1;
        // Speech: held open 600 ms (end_silence_ms) after the last frame
        // scoring exit_probability, however quiet the frames after it.
        for _ in 0..20 {
            assert!(gate_step(&mut gate, k, -20.0, 0.9));
            k += 1;
        }
        assert!(gate_step(&mut gate, k, -40.0, 0.5));
        k += 1;
        // 37.5 frames: the 38th still starts within it.
        for _ in 0..38 {
            assert!(gate_step(&mut gate, k, -40.0, 0.2));
            k += 1;
        }
        assert!(!gate_step(&mut gate, k, -40.0, 0.2));
        // The floor did not learn the speech.
        assert!((gate.noise_floor_dbfs() + 40.0).abs() < 0.5);
        // Reset: warm-up again from the new origin, floor forgotten.
        gate.reset(128 * 1_000);
        for k in 1_000..1_125 {
            assert!(gate_step(&mut gate, k, -60.0, 0.1), "frame {k}");
        }
        assert!(!gate_step(&mut gate, 1_125, -60.0, 0.1));
        assert_eq!(gate.noise_floor_dbfs(), -55.0);
    }

    #[test]
    fn a_disabled_gate_always_scores() {
        let config = EndpointConfig {
            gate_enabled: false,
            ..EndpointConfig::default()
        };
        let mut gate = SpeechGate::new(&config).expect("valid");
        assert!(!gate.is_enabled());
        for k in 0..500 {
            assert!(gate_step(&mut gate, k, -90.0, 0.0));
        }
    }

    #[test]
    fn gate_settings_are_validated() {
        let long = EndpointConfig {
            gate_lookback_ms: MAX_GATE_LOOKBACK_MS + 1,
            ..EndpointConfig::default()
        };
        assert_eq!(long.validate(), Err(EndpointConfigError::GateLookback));
        assert!(SpeechGate::new(&long).is_err());
        let negative = EndpointConfig {
            gate_margin_db: -1.0,
            ..EndpointConfig::default()
        };
        assert_eq!(negative.validate(), Err(EndpointConfigError::Levels));
    }
}
