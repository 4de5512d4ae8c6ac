//! Golden test of the inbound detection path over every clip in
//! `fixtures/audio/`: mu-law decode → 8 → 16 kHz resampling → earshot VAD →
//! endpointer, at DEFAULT settings, clean and with line noise at 20 dB SNR.
//! Detected utterance boundaries must lie within ±40 ms of the sidecar's
//! ground truth; backchannel clips must come out as short utterances;
//! silence and line noise must produce nothing. Also: the barge-in detector
//! on the interruption clip. (`no_alloc.rs` proves the path allocates nothing.)
//!
//! `cargo test -p media --test fixtures_vad -- --nocapture` prints the
//! per-clip boundary errors.

use std::path::{Path, PathBuf};

use media::endpoint::{BargeInDetector, EndpointConfig, EndpointEvent, Endpointer};
use media::g711::{linear_to_ulaw, ulaw_to_linear};
use media::vad::{EarshotVad, EnergyVad, TelephoneVad, VadFrame, VoiceActivityDetector};

/// Allowed boundary error.
const TOLERANCE_MS: f64 = 40.0;
/// Noise is this far below the clip's speech RMS.
const SNR_DB: f64 = 20.0;
/// Speech level assumed for clips without speech, when adding noise: the
/// level every speech fixture is normalised to.
const REFERENCE_SPEECH_DBFS: f64 = -20.0;

/// One expected speech segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start_ms: f64,
    end_ms: f64,
    backchannel: bool,
}

/// A fixture: its mu-law audio and its ground truth.
struct Fixture {
    name: String,
    codes: Vec<u8>,
    segments: Vec<Segment>,
}

/// `fixtures/audio/`, or the directory named by `MEDIA_AUDIO_FIXTURES`
/// (to run the same checks over another clip set, e.g. a held-out one made
/// with the generator).
fn fixtures_dir() -> PathBuf {
    std::env::var_os("MEDIA_AUDIO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/audio"))
}

/// Reads the sidecar's `[[segment]]` tables (a fixed, generated layout:
/// `key = value` lines).
fn parse_sidecar(text: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    for line in text.lines().map(str::trim) {
        if line == "[[segment]]" {
            segments.push(Segment {
                start_ms: f64::NAN,
                end_ms: f64::NAN,
                backchannel: false,
            });
            continue;
        }
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        let Some(seg) = segments.last_mut() else {
            continue;
        };
        match key {
            "start_ms" => seg.start_ms = value.parse().expect("start_ms"),
            "end_ms" => seg.end_ms = value.parse().expect("end_ms"),
            "backchannel" => seg.backchannel = value == "true",
            _ => {}
        }
    }
    for s in &segments {
        assert!(s.start_ms.is_finite() && s.end_ms.is_finite(), "{s:?}");
    }
    segments
}

fn load_fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/audio")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {:?}", fixtures_dir());
    paths
        .iter()
        .map(|toml| {
            let text = std::fs::read_to_string(toml).expect("sidecar");
            let wav = toml.with_extension("wav");
            Fixture {
                name: toml
                    .file_stem()
                    .expect("stem")
                    .to_string_lossy()
                    .into_owned(),
                codes: media::wav::read_ulaw(&wav).expect("mu-law wav"),
                segments: parse_sidecar(&text),
            }
        })
        .collect()
}

/// What the pipeline found in one clip.
#[derive(Debug, Default)]
struct Detection {
    events: Vec<EndpointEvent>,
    barge_ins: Vec<media::endpoint::BargeIn>,
    frames: usize,
}

/// Runs the whole inbound path with earshot at default settings, 20 ms
/// (160-byte) payloads as Twilio sends them.
fn detect(codes: &[u8]) -> Detection {
    detect_with(codes, EarshotVad::new())
}

/// [`detect`] with another detector.
fn detect_with(codes: &[u8], detector: impl VoiceActivityDetector) -> Detection {
    let config = EndpointConfig::default();
    let mut vad = TelephoneVad::new(detector).expect("vad");
    let mut endpointer = Endpointer::new(config.clone()).expect("config");
    let mut barge_in = BargeInDetector::new(&config).expect("config");
    let mut out = Detection::default();
    for payload in codes.chunks(160) {
        vad.push_ulaw(payload, |frame: VadFrame| {
            out.frames += 1;
            out.events.extend(endpointer.push(&frame));
            out.barge_ins.extend(barge_in.push(&frame));
        });
    }
    out.events.extend(endpointer.finish(vad.now()));
    out
}

/// Fixed-seed xorshift64*, uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        v as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// RBJ biquad at 8 kHz, direct form I.
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    fn new(f0: f64, q: f64, highpass: bool) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * f0 / 8_000.0;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * q);
        let a0 = 1.0 + alpha;
        let b = if highpass {
            [(1.0 + cos) / 2.0, -(1.0 + cos), (1.0 + cos) / 2.0]
        } else {
            [(1.0 - cos) / 2.0, 1.0 - cos, (1.0 - cos) / 2.0]
        };
        Self {
            b: b.map(|v| v / a0),
            a: [-2.0 * cos / a0, (1.0 - alpha) / a0],
            x: [0.0; 2],
            y: [0.0; 2],
        }
    }

    fn run(&mut self, signal: &mut [f64]) {
        for s in signal.iter_mut() {
            let x0 = *s;
            let y0 = self.b[0] * x0 + self.b[1] * self.x[0] + self.b[2] * self.x[1]
                - self.a[0] * self.y[0]
                - self.a[1] * self.y[1];
            self.x = [x0, self.x[0]];
            self.y = [y0, self.y[0]];
            *s = y0;
        }
    }
}

fn rms(x: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = x.fold((0.0, 0usize), |(s, n), v| (s + v * v, n + 1));
    (sum / n.max(1) as f64).sqrt()
}

/// Line noise: seeded white noise band-limited to 300–3400 Hz (4th-order
/// Butterworth each side) plus 60 Hz hum with a third harmonic, the hum 6 dB
/// below the hiss; unit RMS overall.
fn line_noise(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    let mut hiss: Vec<f64> = (0..len).map(|_| rng.next()).collect();
    Biquad::new(300.0, 0.541_196_1, true).run(&mut hiss);
    Biquad::new(300.0, 1.306_563, true).run(&mut hiss);
    Biquad::new(3_400.0, 0.541_196_1, false).run(&mut hiss);
    Biquad::new(3_400.0, 1.306_563, false).run(&mut hiss);
    let hiss_rms = rms(hiss.iter().copied());
    let noise: Vec<f64> = hiss
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let w = 2.0 * std::f64::consts::PI * 60.0 * i as f64 / 8_000.0;
            // Hum RMS = 0.5 × hiss RMS (−6 dB).
            h / hiss_rms
                + 0.5 * (0.9 * w.sin() + 0.3 * (3.0 * w).sin()) / 0.670_8 * 2f64.sqrt() / 2.0
        })
        .collect();
    let total = rms(noise.iter().copied());
    noise.iter().map(|v| v / total).collect()
}

/// The clip decoded to linear PCM.
fn decoded(fixture: &Fixture) -> Vec<f64> {
    fixture
        .codes
        .iter()
        .map(|&c| f64::from(ulaw_to_linear(c)))
        .collect()
}

/// RMS of the noise added to a clip: 20 dB below its speech RMS (measured
/// over the ground-truth segments), or below −20 dBFS for clips without
/// speech.
fn noise_rms(fixture: &Fixture) -> f64 {
    let pcm = decoded(fixture);
    let speech_rms = if fixture.segments.is_empty() {
        32_768.0 * 10f64.powf(REFERENCE_SPEECH_DBFS / 20.0)
    } else {
        rms(fixture.segments.iter().flat_map(|s| {
            let a = (s.start_ms * 8.0) as usize;
            let b = ((s.end_ms * 8.0) as usize).min(pcm.len());
            pcm[a..b].iter().copied()
        }))
    };
    speech_rms * 10f64.powf(-SNR_DB / 20.0)
}

/// The clip with line noise at [`noise_rms`], re-encoded to mu-law as the
/// line would.
fn with_noise(fixture: &Fixture) -> Vec<u8> {
    let pcm = decoded(fixture);
    let gain = noise_rms(fixture);
    let seed = fixture.name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    line_noise(pcm.len(), seed)
        .iter()
        .zip(&pcm)
        .map(|(n, s)| linear_to_ulaw((s + gain * n).round().clamp(-32_768.0, 32_767.0) as i16))
        .collect()
}

/// How long the clean speech at each boundary of `truth` stays below the
/// added noise: from the ground-truth start to the first 10 ms window whose
/// clean RMS reaches the noise RMS, and from the last such window to the
/// ground-truth end, in milliseconds. Over that span the speech is masked:
/// no detector working on the noisy signal can be expected to see it.
fn masked_ms(fixture: &Fixture, truth: &Segment) -> (f64, f64) {
    let pcm = decoded(fixture);
    let noise = noise_rms(fixture);
    let a = (truth.start_ms * 8.0) as usize;
    let b = ((truth.end_ms * 8.0) as usize).min(pcm.len());
    let audible: Vec<usize> = (a..b.saturating_sub(80))
        .filter(|&i| rms(pcm[i..i + 80].iter().copied()) >= noise)
        .collect();
    match (audible.first(), audible.last()) {
        (Some(&f), Some(&l)) => ((f - a) as f64 / 8.0, (b - (l + 80)) as f64 / 8.0),
        _ => (f64::NAN, f64::NAN),
    }
}

/// Which end of an utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boundary {
    Start,
    End,
}

/// The boundaries that ±40 ms cannot hold at 20 dB SNR, and why. At each,
/// the clean speech stays under the added noise for longer than 40 ms (see
/// [`masked_ms`], printed with the results), so the detector can only find
/// where the speech becomes audible. These are held to 40 ms beyond the
/// masked span, in the masked direction only (a late start, an early end);
/// every other boundary is held to ±40 ms. See fixtures/audio/README.md.
const MASKED_AT_20_DB: &[(&str, Boundary, &str)] = &[
    (
        "interruption",
        Boundary::Start,
        "\"Sorry\" (kal) opens with an /s/ at -49 to -40 dBFS for ~50 ms, under the -41.8 dBFS noise",
    ),
    (
        "question",
        Boundary::End,
        "\"shop?\" ends in a ~10 ms /p/ release at -43 to -48 dBFS after a ~90 ms closure, under the -40.4 dBFS noise",
    ),
];

/// Checks one boundary error; `None` if it is within what is allowed.
fn boundary_failure(
    label: &str,
    fixture: &str,
    which: Boundary,
    error_ms: f64,
    masked: f64,
    noisy: bool,
) -> Option<String> {
    let excused = noisy
        && MASKED_AT_20_DB
            .iter()
            .any(|&(name, b, _)| name == fixture && b == which);
    let ok = if excused {
        match which {
            Boundary::Start => (-TOLERANCE_MS..=TOLERANCE_MS + masked).contains(&error_ms),
            Boundary::End => (-TOLERANCE_MS - masked..=TOLERANCE_MS).contains(&error_ms),
        }
    } else {
        error_ms.abs() <= TOLERANCE_MS
    };
    (!ok).then(|| {
        format!(
            "{label} {fixture}: {which:?} off by {error_ms:+.1} ms (allowed ±{TOLERANCE_MS} ms{})",
            if excused {
                format!(", plus {masked:.1} ms masked")
            } else {
                String::new()
            }
        )
    })
}

/// Utterances found: (start ms, end ms, is_short).
fn utterances(d: &Detection) -> Vec<(f64, f64, bool)> {
    d.events
        .iter()
        .filter_map(|e| match e {
            EndpointEvent::SpeechEnded(u) => {
                Some((u.start as f64 / 8.0, u.end as f64 / 8.0, u.is_short))
            }
            _ => None,
        })
        .collect()
}

/// Checks one condition (clean or noisy) over all fixtures with earshot;
/// returns the failures and prints the per-clip errors.
fn check_all(label: &str, noisy: bool) -> Vec<String> {
    check_all_with(label, noisy, detect)
}

/// [`check_all`] with another detection path.
fn check_all_with(label: &str, noisy: bool, detect: fn(&[u8]) -> Detection) -> Vec<String> {
    let mut failures = Vec::new();
    println!("\n{label}: clip, truth (ms), detected (ms), start/end error (ms)");
    for fixture in load_fixtures() {
        let codes = if noisy {
            with_noise(&fixture)
        } else {
            fixture.codes.clone()
        };
        let detection = detect(&codes);
        let found = utterances(&detection);
        let started = detection
            .events
            .iter()
            .filter(|e| matches!(e, EndpointEvent::SpeechStarted { .. }))
            .count();
        if fixture.segments.is_empty() {
            println!("  {:<18} none, {:?}", fixture.name, detection.events);
            if !detection.events.is_empty() {
                failures.push(format!(
                    "{label} {}: expected no speech, got {:?}",
                    fixture.name, detection.events
                ));
            }
            continue;
        }
        if found.len() != fixture.segments.len() || started != found.len() {
            failures.push(format!(
                "{label} {}: expected {} utterance(s), got events {:?}",
                fixture.name,
                fixture.segments.len(),
                detection.events
            ));
            continue;
        }
        for (truth, &(start, end, short)) in fixture.segments.iter().zip(&found) {
            let (ds, de) = (start - truth.start_ms, end - truth.end_ms);
            let (masked_start, masked_end) = masked_ms(&fixture, truth);
            println!(
                "  {:<18} {:>8.1}-{:<8.1} {:>8.1}-{:<8.1} {:+6.1} {:+6.1}  short={short:<5} \
                 masked at 20 dB {masked_start:.1}/{masked_end:.1} ms, noise {:.1} dBFS, barge-in {}",
                fixture.name,
                truth.start_ms,
                truth.end_ms,
                start,
                end,
                ds,
                de,
                20.0 * (noise_rms(&fixture) / 32_768.0).log10(),
                detection
                    .barge_ins
                    .first()
                    .map_or("none".to_string(), |b| format!("at {:.0} ms", b.decided_at as f64 / 8.0)),
            );
            failures.extend(boundary_failure(
                label,
                &fixture.name,
                Boundary::Start,
                ds,
                masked_start,
                noisy,
            ));
            failures.extend(boundary_failure(
                label,
                &fixture.name,
                Boundary::End,
                de,
                masked_end,
                noisy,
            ));
            if short != truth.backchannel {
                failures.push(format!(
                    "{label} {}: is_short = {short}, backchannel = {}",
                    fixture.name, truth.backchannel
                ));
            }
        }
    }
    failures
}

#[test]
fn every_fixture_is_endpointed_within_40_ms_clean() {
    let failures = check_all("clean", false);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_is_endpointed_within_40_ms_at_20_db_snr() {
    for (name, which, why) in MASKED_AT_20_DB {
        println!("masked at 20 dB SNR: {name} {which:?}: {why}");
    }
    let failures = check_all("20 dB SNR", true);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The energy baseline places the same boundaries on clean telephone audio
/// (the endpointer's level refinement does the placing) and stays quiet on
/// silence and steady line noise. It is not held to the noisy test: it
/// cannot tell speech from noise that changes.
#[test]
fn the_energy_baseline_endpoints_clean_fixtures_within_40_ms() {
    let failures = check_all_with("energy, clean", false, |codes| {
        detect_with(codes, EnergyVad::default())
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_interrupting_caller_barges_in_promptly() {
    let fixture = load_fixtures()
        .into_iter()
        .find(|f| f.name == "interruption")
        .expect("interruption fixture");
    let truth = fixture.segments[0];
    for (label, codes) in [
        ("clean", fixture.codes.clone()),
        ("noisy", with_noise(&fixture)),
    ] {
        let d = detect(&codes);
        assert_eq!(d.barge_ins.len(), 1, "{label}: {:?}", d.barge_ins);
        let b = d.barge_ins[0];
        let start_ms = b.start as f64 / 8.0;
        let decided_ms = b.decided_at as f64 / 8.0;
        println!(
            "{label}: barge-in run from {start_ms:.1} ms, decided at {decided_ms:.1} ms (speech at {:.1} ms)",
            truth.start_ms
        );
        // Decided within half a second of the caller starting to talk.
        assert!(decided_ms - truth.start_ms < 500.0, "{label}: {b:?}");
        assert!(start_ms >= truth.start_ms - TOLERANCE_MS, "{label}: {b:?}");
    }
}

#[test]
fn silence_and_noise_never_barge_in() {
    for fixture in load_fixtures().iter().filter(|f| f.segments.is_empty()) {
        for codes in [fixture.codes.clone(), with_noise(fixture)] {
            assert!(detect(&codes).barge_ins.is_empty(), "{}", fixture.name);
        }
    }
}
