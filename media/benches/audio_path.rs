//! Per-20 ms-frame costs of the telephone audio path.
//!
//! Run: `cargo bench -p media --bench audio_path`. Every figure is the cost
//! of handling ONE 20 ms frame (160 samples at 8 kHz) of one call.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use media::endpoint::{EndpointConfig, Endpointer};
use media::g711;
use media::path::{InboundPath, OutboundPath};
use media::resample::StreamResampler;
use media::vad::{EarshotVad, EnergyVad, TelephoneVad, VoiceActivityDetector};
use media::FRAME_SAMPLES;

/// A few seconds of real speech with pauses, as Twilio would send it.
fn caller_audio() -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/audio");
    let mut audio = Vec::new();
    for clip in ["greeting_reply.wav", "question.wav", "long_answer.wav"] {
        match media::wav::read_ulaw(dir.join(clip)) {
            Ok(codes) => audio.extend(codes),
            Err(e) => panic!("fixture {clip}: {e}"),
        }
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

    let mut path = InboundPath::new(EndpointConfig::default()).expect("path");
    let mut ts = 0u64;
    group.bench_function("whole_path_earshot", |b| {
        b.iter(|| {
            i = (i + 1) % encoded.len();
            ts += 20;
            black_box(path.push_media(Some(ts), &encoded[i], |e| {
                black_box(e);
            }))
        })
    });

    let mut cheap = InboundPath::with_detector(
        EnergyVad::new(Default::default()),
        EndpointConfig::default(),
    )
    .expect("path");
    let mut ts = 0u64;
    group.bench_function("whole_path_energy", |b| {
        b.iter(|| {
            i = (i + 1) % encoded.len();
            ts += 20;
            black_box(cheap.push_media(Some(ts), &encoded[i], |e| {
                black_box(e);
            }))
        })
    });
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
    targets = inbound, outbound
}
criterion_main!(benches);
