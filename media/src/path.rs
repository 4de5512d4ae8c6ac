//! The per-call audio paths as the call session sees them: [`InboundPath`]
//! (a Twilio `media` payload in, stamped frames, endpoint and barge-in
//! events out) and [`OutboundPath`] (agent audio in, base64 payloads of
//! whole 20 ms frames out). Both allocate only at construction.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::endpoint::{
    BargeIn, BargeInDetector, EndpointConfig, EndpointConfigError, EndpointEvent, Endpointer,
    SpeechGate,
};
use crate::frame::{InboundFramer, OutboundChunker, SampleTime, UlawFrame};
use crate::resample::{ResampleError, StreamResampler};
use crate::vad::{EarshotVad, GateStats, TelephoneVad, VadError, VoiceActivityDetector};
use crate::{FRAME_SAMPLES, TELEPHONE_RATE_HZ};

/// Largest decoded `media` payload accepted: one second of audio. Twilio
/// sends 20 ms; anything this large is malformed input, rejected without
/// touching the stream.
pub const MAX_PAYLOAD_BYTES: usize = 8_000;

/// Why a payload was rejected. The path's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    /// Not valid standard base64.
    Base64,
    /// Decodes to more than [`MAX_PAYLOAD_BYTES`].
    TooLarge {
        /// Upper bound of the decoded size.
        bytes: usize,
    },
}

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadError::Base64 => f.write_str("media payload is not valid base64"),
            PayloadError::TooLarge { bytes } => write!(
                f,
                "media payload of {bytes} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
            ),
        }
    }
}

impl std::error::Error for PayloadError {}

/// Why a path could not be built.
#[derive(Debug)]
pub enum PathError {
    /// The endpointing configuration is invalid.
    Config(EndpointConfigError),
    /// The VAD chain could not be built.
    Vad(VadError),
    /// The resampler could not be built (unsupported rate).
    Resample(ResampleError),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::Config(e) => write!(f, "endpointing configuration: {e}"),
            PathError::Vad(e) => write!(f, "voice activity detection: {e}"),
            PathError::Resample(e) => write!(f, "resampler: {e}"),
        }
    }
}

impl std::error::Error for PathError {}

/// What the inbound path reports, in stream order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InboundEvent<'a> {
    /// A 20 ms frame of caller audio starting at `start` (for STT).
    Audio {
        /// Stream time of the frame's first sample.
        start: SampleTime,
        /// The frame's mu-law bytes.
        frame: &'a UlawFrame,
    },
    /// An utterance boundary.
    Endpoint(EndpointEvent),
    /// The caller is talking over the agent.
    BargeIn(BargeIn),
}

/// One call's inbound audio: base64 → 20 ms frames → 8→16 kHz → VAD →
/// endpointer, plus the barge-in detector while the agent speaks.
pub struct InboundPath<V: VoiceActivityDetector = EarshotVad> {
    /// Decoded payload bytes.
    payload: Box<[u8; MAX_PAYLOAD_BYTES]>,
    /// Re-framing and gap filling.
    framer: InboundFramer,
    /// Resampling, scoring and stamping.
    vad: TelephoneVad<V>,
    /// Utterance boundaries.
    endpointer: Endpointer,
    /// Caller speech over the agent.
    barge_in: BargeInDetector,
    /// Whether the agent is speaking (barge-in armed).
    agent_speaking: bool,
}

impl InboundPath<EarshotVad> {
    /// The default path: earshot VAD and `config`.
    pub fn new(config: EndpointConfig) -> Result<Self, PathError> {
        Self::with_detector(EarshotVad::new(), config)
    }
}

impl<V: VoiceActivityDetector> InboundPath<V> {
    /// A path around any detector. The speech gate (which frames may skip
    /// resampling and scoring) comes from the same `config`.
    pub fn with_detector(detector: V, config: EndpointConfig) -> Result<Self, PathError> {
        let barge_in = BargeInDetector::new(&config).map_err(PathError::Config)?;
        let gate = SpeechGate::new(&config).map_err(PathError::Config)?;
        let endpointer = Endpointer::new(config).map_err(PathError::Config)?;
        Ok(Self {
            payload: Box::new([0; MAX_PAYLOAD_BYTES]),
            framer: InboundFramer::new(),
            vad: TelephoneVad::with_gate(detector, gate).map_err(PathError::Vad)?,
            endpointer,
            barge_in,
            agent_speaking: false,
        })
    }

    /// Arms (or disarms) barge-in detection; arming starts a fresh agent turn.
    pub fn set_agent_speaking(&mut self, speaking: bool) {
        if speaking && !self.agent_speaking {
            self.barge_in.reset();
        }
        self.agent_speaking = speaking;
    }

    /// Stream time after the last frame emitted.
    pub fn now(&self) -> SampleTime {
        self.framer.now()
    }

    /// Whether the caller is mid-utterance.
    pub fn caller_speaking(&self) -> bool {
        self.endpointer.is_speaking()
    }

    /// Whether the VAD is running for the next frame (the speech gate is
    /// open): for metrics.
    pub fn gate_open(&self) -> bool {
        self.vad.gate_open()
    }

    /// How many frames were scored and skipped, and how often the gate
    /// opened, since the path was built.
    pub fn gate_stats(&self) -> GateStats {
        self.vad.gate_stats()
    }

    /// Feeds one Twilio `media` event: its base64 `payload` and, when
    /// present and numeric, its `timestamp` (ms since stream start). Returns
    /// the payload's byte count. A rejected payload changes nothing.
    pub fn push_media(
        &mut self,
        timestamp_ms: Option<u64>,
        payload_base64: &str,
        mut on_event: impl FnMut(InboundEvent<'_>),
    ) -> Result<usize, PayloadError> {
        let estimate = base64::decoded_len_estimate(payload_base64.len());
        if estimate > MAX_PAYLOAD_BYTES + 2 {
            return Err(PayloadError::TooLarge { bytes: estimate });
        }
        let n = BASE64
            .decode_slice(payload_base64.as_bytes(), &mut self.payload[..])
            .map_err(|e| match e {
                base64::DecodeSliceError::OutputSliceTooSmall => {
                    PayloadError::TooLarge { bytes: estimate }
                }
                base64::DecodeSliceError::DecodeError(_) => PayloadError::Base64,
            })?;
        let Self {
            payload,
            framer,
            vad,
            endpointer,
            barge_in,
            agent_speaking,
        } = self;
        let mut on_frame = |start: SampleTime, frame: &UlawFrame| {
            on_event(InboundEvent::Audio { start, frame });
            vad.push_ulaw(frame, |scored| {
                if let Some(event) = endpointer.push(&scored) {
                    on_event(InboundEvent::Endpoint(event));
                }
                if *agent_speaking {
                    if let Some(event) = barge_in.push(&scored) {
                        on_event(InboundEvent::BargeIn(event));
                    }
                }
            });
        };
        match timestamp_ms {
            Some(ms) => framer.push_at(ms, &payload[..n], &mut on_frame),
            None => framer.push(&payload[..n], &mut on_frame),
        }
        Ok(n)
    }
}

/// One call's outbound audio: agent audio (8 kHz mu-law, or PCM at any
/// supported rate) → 20 ms frames → base64 payloads of whole frames.
pub struct OutboundPath {
    /// PCM → 8 kHz, when the source is not 8 kHz.
    resampler: Option<StreamResampler>,
    /// Resampler output.
    narrow: Vec<i16>,
    /// Frames.
    chunker: OutboundChunker,
    /// Base64 of the current payload.
    encoded: String,
}

impl OutboundPath {
    /// A path for audio at `source_hz` (8 kHz for mu-law or 8 kHz PCM)
    /// that emits payloads of `payload_frames` × 20 ms.
    pub fn new(source_hz: u32, payload_frames: usize) -> Result<Self, PathError> {
        let payload_frames = payload_frames.max(1);
        let resampler = if source_hz == TELEPHONE_RATE_HZ {
            None
        } else {
            Some(StreamResampler::new(source_hz, TELEPHONE_RATE_HZ).map_err(PathError::Resample)?)
        };
        let narrow = match &resampler {
            Some(r) => vec![0; r.chunk_output_samples().max(r.max_flush_len())],
            None => Vec::new(),
        };
        let capacity = base64::encoded_len(payload_frames * FRAME_SAMPLES, true).unwrap_or(0);
        Ok(Self {
            resampler,
            narrow,
            chunker: OutboundChunker::with_payload_frames(payload_frames),
            encoded: String::with_capacity(capacity),
        })
    }

    /// Samples buffered but not yet emitted (less than one payload).
    pub fn pending_samples(&self) -> usize {
        self.chunker.pending_samples()
    }

    /// Appends 8 kHz mu-law (ElevenLabs `ulaw_8000`); calls `on_payload`
    /// with the base64 of each full payload and its frame count.
    pub fn push_ulaw(&mut self, codes: &[u8], mut on_payload: impl FnMut(&str, usize)) {
        let encoded = &mut self.encoded;
        self.chunker
            .push_ulaw(codes, |frames| emit(encoded, frames, &mut on_payload));
    }

    /// Appends PCM at the source rate; calls `on_payload` per full payload.
    pub fn push_pcm(&mut self, pcm: &[i16], mut on_payload: impl FnMut(&str, usize)) {
        let encoded = &mut self.encoded;
        match &mut self.resampler {
            None => self
                .chunker
                .push_pcm(pcm, |frames| emit(encoded, frames, &mut on_payload)),
            Some(resampler) => {
                let mut rest = pcm;
                while !rest.is_empty() {
                    let room = resampler.chunk_input_samples() - resampler.pending_input();
                    let (head, tail) = rest.split_at(room.min(rest.len()));
                    rest = tail;
                    // `narrow` holds a whole chunk's output, so this cannot
                    // fail; if it did, the audio is dropped, never a panic.
                    let n = resampler
                        .process(head, &mut self.narrow)
                        .unwrap_or_default();
                    self.chunker.push_pcm(&self.narrow[..n], |frames| {
                        emit(encoded, frames, &mut on_payload)
                    });
                }
            }
        }
    }

    /// End of a turn: drains the resampler and emits what is buffered, the
    /// last frame padded with silence. Returns the real samples emitted.
    pub fn flush(&mut self, mut on_payload: impl FnMut(&str, usize)) -> usize {
        let encoded = &mut self.encoded;
        if let Some(resampler) = &mut self.resampler {
            let n = resampler.flush(&mut self.narrow).unwrap_or_default();
            self.chunker.push_pcm(&self.narrow[..n], |frames| {
                emit(encoded, frames, &mut on_payload)
            });
        }
        self.chunker
            .flush(|frames| emit(encoded, frames, &mut on_payload))
    }

    /// Barge-in: drops everything buffered (and the resampler's state) so
    /// nothing of the cancelled turn is sent. Returns the samples dropped.
    pub fn discard(&mut self) -> usize {
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
        self.chunker.discard()
    }
}

fn emit(encoded: &mut String, frames: &[UlawFrame], on_payload: &mut impl FnMut(&str, usize)) {
    encoded.clear();
    BASE64.encode_string(frames.as_flattened(), encoded);
    on_payload(encoded, frames.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vad::EnergyVad;
    use crate::FRAME_SAMPLES;

    fn silence_payload(samples: usize) -> String {
        BASE64.encode(vec![crate::g711::ULAW_SILENCE; samples])
    }

    #[test]
    fn payloads_of_any_length_become_stamped_frames() {
        let mut path = InboundPath::with_detector(
            EnergyVad::new(Default::default()),
            EndpointConfig::default(),
        )
        .expect("path");
        let mut starts = Vec::new();
        // Timestamps follow the bytes actually sent (12.5 ms → 12 ms).
        for (ms, len) in [(0u64, 100usize), (12, 220), (40, 160), (60, 0), (60, 40)] {
            let n = path
                .push_media(Some(ms), &silence_payload(len), |e| {
                    if let InboundEvent::Audio { start, .. } = e {
                        starts.push(start);
                    }
                })
                .expect("valid payload");
            assert_eq!(n, len);
        }
        assert_eq!(starts, vec![0, 160, 320]);
        // A lost packet: the next payload says 40 ms later than expected.
        starts.clear();
        path.push_media(Some(100), &silence_payload(120), |e| {
            if let InboundEvent::Audio { start, .. } = e {
                starts.push(start);
            }
        })
        .expect("valid payload");
        assert_eq!(
            starts,
            vec![480, 640],
            "the gap is filled, time stays aligned"
        );
    }

    #[test]
    fn malformed_payloads_are_rejected_without_side_effects() {
        let mut path = InboundPath::new(EndpointConfig::default()).expect("path");
        assert_eq!(
            path.push_media(None, "not base64!!", |_| {}),
            Err(PayloadError::Base64)
        );
        let huge = silence_payload(MAX_PAYLOAD_BYTES + 160);
        assert!(matches!(
            path.push_media(None, &huge, |_| {}),
            Err(PayloadError::TooLarge { .. })
        ));
        assert_eq!(path.now(), 0);
        assert_eq!(
            path.push_media(None, &silence_payload(160), |_| {}),
            Ok(160)
        );
        assert_eq!(path.now(), 160);
    }

    #[test]
    fn outbound_emits_whole_frames_and_pads_the_last() {
        let mut path = OutboundPath::new(8_000, 2).expect("path");
        let mut payloads = Vec::new();
        path.push_ulaw(&[0x7F; 500], |b64, frames| {
            payloads.push((b64.len(), frames))
        });
        assert_eq!(payloads, vec![(428, 2)]);
        assert_eq!(path.pending_samples(), 180);
        let real = path.flush(|b64, frames| payloads.push((b64.len(), frames)));
        assert_eq!(real, 180);
        assert_eq!(payloads[1].1, 2);
    }

    #[test]
    fn outbound_resamples_tts_pcm_to_telephone_rate() {
        let mut path = OutboundPath::new(24_000, 1).expect("path");
        let mut frames = 0;
        let tone: Vec<i16> = (0..24_000)
            .map(|i| ((i as f32 * 0.05).sin() * 8_000.0) as i16)
            .collect();
        path.push_pcm(&tone, |_, n| frames += n);
        path.flush(|_, n| frames += n);
        // One second at 24 kHz is 50 frames at 8 kHz (plus the flushed tail).
        assert!((50..=52).contains(&frames), "{frames} frames");
        let mut none = 0;
        path.push_pcm(&tone[..1_000], |_, n| none += n);
        assert!(path.discard() > 0 || none > 0);
        assert_eq!(path.pending_samples(), 0);
    }

    /// A fixture's mu-law codes.
    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/audio")
            .join(format!("{name}.wav"));
        crate::wav::read_ulaw(&path).expect("fixture")
    }

    /// What a whole call produced: utterances, barge-ins (the agent talks
    /// throughout) and the gate's counters.
    fn call(
        codes: &[u8],
        gate: bool,
    ) -> (Vec<crate::endpoint::Utterance>, Vec<BargeIn>, GateStats) {
        let config = EndpointConfig {
            gate_enabled: gate,
            ..EndpointConfig::default()
        };
        let mut path = InboundPath::new(config).expect("path");
        path.set_agent_speaking(true);
        let (mut utterances, mut barge_ins) = (Vec::new(), Vec::new());
        for (k, chunk) in codes.chunks(FRAME_SAMPLES).enumerate() {
            path.push_media(Some(20 * k as u64), &BASE64.encode(chunk), |e| match e {
                InboundEvent::Endpoint(EndpointEvent::SpeechEnded(u)) => utterances.push(u),
                InboundEvent::Endpoint(EndpointEvent::NoiseBurst { .. }) => {
                    panic!("noise burst")
                }
                InboundEvent::BargeIn(b) => barge_ins.push(b),
                _ => {}
            })
            .expect("valid payload");
        }
        (utterances, barge_ins, path.gate_stats())
    }

    /// Every speech fixture after 5 more seconds of its line (digital
    /// silence, or the `line_noise` fixture under everything): the gate
    /// closes, the detector is skipped for seconds, and the utterance it
    /// reopens on is endpointed as without the gate.
    #[test]
    fn the_gate_skips_the_quiet_line_and_finds_the_same_utterances() {
        let noise: Vec<i16> = fixture("line_noise")
            .iter()
            .map(|&c| crate::g711::ulaw_to_linear(c))
            .collect();
        let clips = [
            "backchannel_mhm",
            "backchannel_okay",
            "backchannel_yeah",
            "greeting_reply",
            "interruption",
            "long_answer",
            "question",
        ];
        for name in clips {
            for noisy in [false, true] {
                let mut pcm = vec![0i16; 40_000];
                pcm.extend(
                    fixture(name)
                        .iter()
                        .map(|&c| crate::g711::ulaw_to_linear(c)),
                );
                if noisy {
                    for (s, n) in pcm.iter_mut().zip(noise.iter().cycle()) {
                        *s = s.saturating_add(*n);
                    }
                }
                let codes: Vec<u8> = pcm
                    .iter()
                    .map(|&s| crate::g711::linear_to_ulaw(s))
                    .collect();
                let label = format!("{name}, noisy {noisy}");
                let (off, off_barge, _) = call(&codes, false);
                let (on, on_barge, stats) = call(&codes, true);
                assert!(
                    stats.skipped > 180 && stats.openings >= 1,
                    "{label}: {stats:?}"
                );
                assert_eq!(off.len(), 1, "{label}: {off:?}");
                assert_eq!(on.len(), 1, "{label}: {on:?}");
                let (a, b) = (off[0], on[0]);
                assert!(a.start.abs_diff(b.start) <= 128, "{label}: {a:?} {b:?}");
                assert!(a.end.abs_diff(b.end) <= 128, "{label}: {a:?} {b:?}");
                assert_eq!(a.is_short, b.is_short, "{label}");
                // The end is decided within 80 ms of the ungated decision.
                assert!(
                    a.decided_at.abs_diff(b.decided_at) <= 640,
                    "{label}: {a:?} {b:?}"
                );
                // Barge-in needs an unbroken run scoring 0.8: where earshot
                // hovers around that in noise, its state after a long skip
                // (the one it had when the gate closed, not the one it would
                // have drifted to) can move the decision by a few hundred
                // ms either way. Held to the promptness budget of
                // `fixtures_vad.rs`.
                assert_eq!(off_barge.len(), on_barge.len(), "{label}");
                for (x, y) in off_barge.iter().zip(&on_barge) {
                    assert!(
                        x.decided_at.abs_diff(y.decided_at) <= 4_000,
                        "{label}: {x:?} {y:?}"
                    );
                }
            }
        }
        // Silence, then the line starting to hiss: nothing. (earshot scores
        // such hiss up to 0.59 after seconds of digital silence, more after
        // less: the gate's 2 s warm-up keeps its frozen state a settled one.)
        let mut codes = vec![crate::g711::ULAW_SILENCE; 40_000];
        codes.extend(fixture("line_noise"));
        codes.extend(fixture("silence"));
        let (on, barge, stats) = call(&codes, true);
        assert!(on.is_empty() && barge.is_empty(), "{on:?} {barge:?}");
        assert!(stats.skipped > 300, "{stats:?}");
    }
}
