//! Per-20 ms-frame costs of the telephone audio path.
//!
//! Run: `cargo bench -p media --bench audio_path`. Every figure is the cost
//! of handling ONE 20 ms frame (160 samples at 8 kHz) of one call.
//!
//! Two groups:
//!
//! - `inbound_per_20ms_frame`: each stage alone, and the whole inbound path
//!   with the speech gate off (the detector on every frame), on a few
//!   seconds of speech with pauses; plus the path on line noise with the
//!   gate closed (the cost of a skipped frame).
//! - `inbound_call_mix_per_20ms_frame`: the whole inbound path (default
//!   configuration, earshot) averaged over realistic calls, gate off and on,
//!   and over continuous speech, the gate's worst case. Each iteration is one
//!   payload; the calls are replayed in a loop, and the long flat-sampled
//!   measurement covers them hundreds of times, so the mean is the amortised
//!   cost per frame.
//!
//! # The call mix
//!
//! Two calls of about 32 s, built from `fixtures/audio/` (see
//! [`quiet_call`] and [`noisy_call`]). In each, the caller's turns are
//! fixture utterances (their ground-truth speech span plus 30 ms either
//! side), separated by the agent's turns, 2.5–5.5 s during which the caller
//! is silent; caller speech is about 38 % of the time, the rest silence
//! (what the caller's channel carries while the agent talks and between
//! turns). One call is on a quiet line (digital silence, as a VoIP leg with
//! silence suppression sends); the other on a noisy one: the `line_noise`
//! fixture (300–3400 Hz hiss and 60 Hz hum, −47 dBFS together, about 27 dB
//! under the −20 dBFS speech) looped under the whole call, speech included.
//! Each call has its own `InboundPath`, as on a real server; the benchmark
//! alternates whole calls. Before measuring, it prints each call's speech
//! share, how often the gate let the detector run, and the utterances found
//! with the gate off and on.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use media::endpoint::{EndpointConfig, EndpointEvent, Endpointer};
use media::g711;
use media::path::{InboundEvent, InboundPath, OutboundPath};
use media::resample::StreamResampler;
use media::vad::{EarshotVad, EnergyVad, TelephoneVad, VoiceActivityDetector};
use media::FRAME_SAMPLES;

/// 8 kHz samples per millisecond.
const PER_MS: usize = 8;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/audio")
}

/// A fixture clip's mu-law codes.
fn clip(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(format!("{name}.wav"));
    match media::wav::read_ulaw(&path) {
        Ok(codes) => codes,
        Err(e) => panic!("fixture {}: {e}", path.display()),
    }
}

/// A few seconds of real speech with pauses, as Twilio would send it.
fn caller_audio() -> Vec<u8> {
    let mut audio = Vec::new();
    for name in ["greeting_reply", "question", "long_answer"] {
        audio.extend(clip(name));
    }
    audio.truncate(audio.len() / FRAME_SAMPLES * FRAME_SAMPLES);
    audio
}

fn payloads(audio: &[u8]) -> Vec<String> {
    audio
        .chunks(FRAME_SAMPLES)
        .map(|c| BASE64.encode(c))
        .collect()
}

/// The ground-truth speech span of a one-utterance clip, in samples, from
/// its sidecar (`start_ms = …` / `end_ms = …` lines).
fn speech_span(name: &str) -> (usize, usize) {
    let path = fixtures_dir().join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("sidecar {}: {e}", path.display()));
    let field = |key: &str| -> usize {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.trim().strip_prefix('='))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|ms| (ms * PER_MS as f64) as usize)
            .unwrap_or_else(|| panic!("{key} in {}", path.display()))
    };
    (field("start_ms"), field("end_ms"))
}

/// One part of a call as heard on the caller's channel.
enum Part {
    /// A caller utterance: the clip's speech span plus 30 ms either side.
    Caller(&'static str),
    /// The caller silent for this many milliseconds (the agent talking).
    Silent(usize),
}

/// A call built from `script`, as 8 kHz PCM, and its speech samples.
fn build_call(script: &[Part]) -> (Vec<i16>, usize) {
    let margin = 30 * PER_MS;
    let mut pcm = Vec::new();
    let mut speech = 0;
    for part in script {
        match part {
            Part::Caller(name) => {
                let codes = clip(name);
                let (start, end) = speech_span(name);
                let (a, b) = (start - margin, (end + margin).min(codes.len()));
                pcm.extend(codes[a..b].iter().map(|&c| g711::ulaw_to_linear(c)));
                speech += end - start;
            }
            Part::Silent(ms) => pcm.resize(pcm.len() + ms * PER_MS, 0),
        }
    }
    pcm.truncate(pcm.len() / FRAME_SAMPLES * FRAME_SAMPLES);
    (pcm, speech)
}

/// Caller speech on a quiet line: digital silence between the turns.
fn quiet_call() -> (Vec<u8>, usize) {
    use Part::*;
    let (pcm, speech) = build_call(&[
        Silent(2_500),
        Caller("greeting_reply"),
        Silent(4_000),
        Caller("question"),
        Silent(3_500),
        Caller("backchannel_okay"),
        Silent(4_500),
        Caller("interruption"),
        Silent(3_000),
        Caller("backchannel_yeah"),
        Silent(2_500),
    ]);
    (
        pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect(),
        speech,
    )
}

/// Caller speech on a noisy line: the `line_noise` fixture looped under the
/// whole call.
fn noisy_call() -> (Vec<u8>, usize) {
    use Part::*;
    let (pcm, speech) = build_call(&[
        Silent(3_000),
        Caller("long_answer"),
        Silent(5_000),
        Caller("backchannel_mhm"),
        Silent(5_500),
        Caller("greeting_reply"),
        Silent(5_500),
    ]);
    let noise: Vec<i16> = clip("line_noise")
        .iter()
        .map(|&c| g711::ulaw_to_linear(c))
        .collect();
    let codes = pcm
        .iter()
        .zip(noise.iter().cycle())
        .map(|(&s, &n)| g711::linear_to_ulaw(s.saturating_add(n)))
        .collect();
    (codes, speech)
}

/// Continuous speech, the gate's worst case: every caller turn back to back.
fn continuous_speech() -> Vec<u8> {
    use Part::*;
    let (pcm, _) = build_call(&[
        Caller("greeting_reply"),
        Caller("question"),
        Caller("long_answer"),
        Caller("interruption"),
        Caller("backchannel_okay"),
    ]);
    pcm.iter().map(|&s| g711::linear_to_ulaw(s)).collect()
}

/// A path built from the default configuration, with the gate on or off.
fn path(gate: bool) -> InboundPath {
    let config = EndpointConfig {
        gate_enabled: gate,
        ..EndpointConfig::default()
    };
    match InboundPath::new(config) {
        Ok(path) => path,
        Err(e) => panic!("inbound path: {e}"),
    }
}

/// One call's payloads replayed in a loop through its own path.
struct Replay {
    path: InboundPath,
    payloads: Vec<String>,
    next: usize,
    ts: u64,
}

impl Replay {
    fn new(payloads: Vec<String>, gate: bool) -> Self {
        Self {
            path: path(gate),
            payloads,
            next: 0,
            ts: 0,
        }
    }

    /// Feeds the next payload; true when the call wrapped around.
    fn step(&mut self) -> bool {
        let payload = &self.payloads[self.next];
        self.next = (self.next + 1) % self.payloads.len();
        self.ts += 20;
        let pushed = self.path.push_media(Some(self.ts), payload, |e| {
            black_box(e);
        });
        black_box(pushed.ok());
        self.next == 0
    }
}

/// Several calls, each through its own path, one call after the other.
struct Mix {
    calls: Vec<Replay>,
    current: usize,
}

impl Mix {
    fn new(calls: &[Vec<String>], gate: bool) -> Self {
        Self {
            calls: calls.iter().map(|p| Replay::new(p.clone(), gate)).collect(),
            current: 0,
        }
    }

    fn step(&mut self) {
        if self.calls[self.current].step() {
            self.current = (self.current + 1) % self.calls.len();
        }
    }
}

/// Runs one call twice through a fresh path: the utterances of the first
/// pass (start, end in ms), and the share of frames the detector scored and
/// the gate openings in the second (the steady state that the benchmark
/// loop measures, past the gate's 2 s warm-up).
fn survey(payloads: &[String], gate: bool) -> (Vec<(f64, f64)>, f64, u64) {
    let mut p = path(gate);
    let mut utterances = Vec::new();
    let mut first = Default::default();
    for (k, payload) in payloads.iter().chain(payloads).enumerate() {
        if k == payloads.len() {
            first = p.gate_stats();
        }
        let pushed = p.push_media(Some(20 * k as u64), payload, |e| {
            if let InboundEvent::Endpoint(EndpointEvent::SpeechEnded(u)) = e {
                if k < payloads.len() {
                    utterances.push((u.start as f64 / 8.0, u.end as f64 / 8.0));
                }
            }
        });
        assert!(pushed.is_ok());
    }
    let last: media::vad::GateStats = p.gate_stats();
    let scored = (last.scored - first.scored) as f64;
    let skipped = (last.skipped - first.skipped) as f64;
    (
        utterances,
        scored / (scored + skipped).max(1.0),
        last.openings - first.openings,
    )
}

/// Prints what a call is and what the gate did on it.
fn describe(label: &str, codes: &[u8], speech: usize) {
    let encoded = payloads(codes);
    let (off, _, _) = survey(&encoded, false);
    let (on, scored, openings) = survey(&encoded, true);
    let worst = off
        .iter()
        .zip(&on)
        .map(|(a, b)| (a.0 - b.0).abs().max((a.1 - b.1).abs()))
        .fold(0.0f64, f64::max);
    eprintln!(
        "{label}: {:.1} s, caller speech {:.1} %; gate on, in a loop: detector ran on {:.1} % of \
         frames, gate opened {openings} times per pass; utterances found gate off {}, gate on {}, \
         boundaries differ by at most {worst:.0} ms",
        codes.len() as f64 / 8_000.0,
        100.0 * speech as f64 / codes.len() as f64,
        100.0 * scored,
        off.len(),
        on.len(),
    );
    assert_eq!(off.len(), on.len(), "{label}: {off:?} vs {on:?}");
}

fn inbound(c: &mut Criterion) {
    let audio = caller_audio();
    let frames: Vec<&[u8]> = audio.chunks(FRAME_SAMPLES).collect();
    let encoded = payloads(&audio);
    let mut group = c.benchmark_group("inbound_per_20ms_frame");

    let mut buf = [0u8; FRAME_SAMPLES];
    let mut i = 0;
    group.bench_function("base64_decode", |b| {
        b.iter(|| {
            i = (i + 1) % encoded.len();
            black_box(BASE64.decode_slice(encoded[i].as_bytes(), &mut buf).ok())
        })
    });

    let mut pcm = [0i16; FRAME_SAMPLES];
    group.bench_function("ulaw_decode", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(g711::decode_ulaw_into(frames[i], &mut pcm))
        })
    });

    let mut resampler = StreamResampler::new(8_000, 16_000).expect("8k→16k");
    let mut wide = vec![0i16; resampler.max_output_len(FRAME_SAMPLES)];
    group.bench_function("resample_8k_to_16k", |b| {
        b.iter(|| black_box(resampler.process(black_box(&pcm), &mut wide).ok()))
    });

    // 20 ms at 16 kHz is 1.25 earshot frames: score 5 frames per 4 iterations.
    let mut earshot = EarshotVad::new();
    let earshot_frame = vec![100i16; earshot.frame_samples()];
    let mut n = 0u32;
    group.bench_function("earshot_vad", |b| {
        b.iter(|| {
            n += 1;
            let extra = n % 4 == 0;
            let mut p = earshot.speech_probability(black_box(&earshot_frame));
            if extra {
                p += earshot.speech_probability(black_box(&earshot_frame));
            }
            black_box(p)
        })
    });

    let mut energy = EnergyVad::new(Default::default());
    let energy_frame = vec![100i16; energy.frame_samples()];
    group.bench_function("energy_vad", |b| {
        b.iter(|| {
            n += 1;
            let mut p = energy.speech_probability(black_box(&energy_frame));
            if n % 4 == 0 {
                p += energy.speech_probability(black_box(&energy_frame));
            }
            black_box(p)
        })
    });

    // The endpointer alone, fed pre-scored frames of the real audio.
    let mut scored = Vec::new();
    let mut tvad = TelephoneVad::new(EarshotVad::new()).expect("vad");
    for frame in &frames {
        tvad.push_ulaw(frame, |f| scored.push(f));
    }
    let mut endpointer = Endpointer::new(EndpointConfig::default()).expect("config");
    group.bench_function("endpointer", |b| {
        b.iter(|| {
            i = (i + 1) % scored.len();
            black_box(endpointer.push(&scored[i]))
        })
    });

    // The detector on every frame: the cost of a frame the gate lets through.
    let mut full = Replay::new(encoded.clone(), false);
    group.bench_function("whole_path_earshot_gate_off", |b| b.iter(|| full.step()));

    let off = EndpointConfig {
        gate_enabled: false,
        ..EndpointConfig::default()
    };
    let mut cheap =
        InboundPath::with_detector(EnergyVad::new(Default::default()), off).expect("path");
    let mut ts = 0u64;
    group.bench_function("whole_path_energy_gate_off", |b| {
        b.iter(|| {
            i = (i + 1) % encoded.len();
            ts += 20;
            black_box(cheap.push_media(Some(ts), &encoded[i], |e| {
                black_box(e);
            }))
        })
    });

    // Line noise alone, gate on: after its 2 s warm-up (spent in criterion's
    // warm-up) every frame is skipped; the cost of a skipped frame.
    let noise = payloads(&clip("line_noise"));
    let mut closed = Replay::new(noise, true);
    group.bench_function("whole_path_gate_closed_line_noise", |b| {
        b.iter(|| closed.step())
    });
    group.finish();
}

fn call_mix(c: &mut Criterion) {
    let (quiet, quiet_speech) = quiet_call();
    let (noisy, noisy_speech) = noisy_call();
    let speech = continuous_speech();
    describe("quiet-line call", &quiet, quiet_speech);
    describe("noisy-line call", &noisy, noisy_speech);
    let total = quiet.len() + noisy.len();
    eprintln!(
        "call mix: {:.1} s, caller speech {:.1} %",
        total as f64 / 8_000.0,
        100.0 * (quiet_speech + noisy_speech) as f64 / total as f64
    );
    describe(
        "continuous speech (one utterance, never ended)",
        &speech,
        speech.len(),
    );
    let calls = [payloads(&quiet), payloads(&noisy)];
    let speech = [payloads(&speech)];

    let mut group = c.benchmark_group("inbound_call_mix_per_20ms_frame");
    group
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10));
    for (name, calls, gate) in [
        ("call_mix_gate_off", &calls[..], false),
        ("call_mix_gate_on", &calls[..], true),
        ("continuous_speech_gate_off", &speech[..], false),
        ("continuous_speech_gate_on", &speech[..], true),
    ] {
        let mut mix = Mix::new(calls, gate);
        group.bench_function(name, |b| b.iter(|| mix.step()));
    }
    group.finish();
}

fn outbound(c: &mut Criterion) {
    let audio = caller_audio();
    let mut group = c.benchmark_group("outbound_per_20ms_frame");
    let mut i = 0;

    // ElevenLabs `ulaw_8000`: chunk into frames and base64.
    let mut ulaw = OutboundPath::new(8_000, 1).expect("path");
    group.bench_function("ulaw_chunk_base64", |b| {
        b.iter(|| {
            i = (i + FRAME_SAMPLES) % (audio.len() - FRAME_SAMPLES);
            ulaw.push_ulaw(&audio[i..i + FRAME_SAMPLES], |p, _| {
                black_box(p);
            })
        })
    });

    // 8 kHz PCM (offline TTS after resampling): mu-law encode, chunk, base64.
    let pcm: Vec<i16> = audio.iter().map(|&c| g711::ulaw_to_linear(c)).collect();
    let mut pcm8 = OutboundPath::new(8_000, 1).expect("path");
    group.bench_function("pcm8k_encode_chunk_base64", |b| {
        b.iter(|| {
            i = (i + FRAME_SAMPLES) % (pcm.len() - FRAME_SAMPLES);
            pcm8.push_pcm(&pcm[i..i + FRAME_SAMPLES], |p, _| {
                black_box(p);
            })
        })
    });

    // 24 kHz PCM TTS: resample to 8 kHz as well (480 input samples per frame).
    let pcm24: Vec<i16> = pcm.iter().flat_map(|&s| [s, s, s]).collect();
    let mut tts = OutboundPath::new(24_000, 1).expect("path");
    group.bench_function("pcm24k_resample_encode_chunk_base64", |b| {
        b.iter(|| {
            i = (i + 3 * FRAME_SAMPLES) % (pcm24.len() - 3 * FRAME_SAMPLES);
            tts.push_pcm(&pcm24[i..i + 3 * FRAME_SAMPLES], |p, _| {
                black_box(p);
            })
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = inbound, call_mix, outbound
}
criterion_main!(benches);
