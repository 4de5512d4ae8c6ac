//! Regenerates `fixtures/audio/`: 8 kHz mu-law speech clips synthesised
//! with flite, a silence clip and a line-noise clip, each with a `.toml`
//! sidecar giving the ground-truth speech segments. See
//! `fixtures/audio/README.md` for what the clips are and how the ground
//! truth is defined.
//!
//! ```sh
//! apt-get install -y flite        # flite 2.2 (Debian 2.2-5)
//! cargo run -p media --example make_audio_fixtures [-- OUT_DIR]
//! ```
//!
//! Deterministic: flite is deterministic for a given version, and every
//! step after it (resampling with `media::resample`, filtering, level,
//! placement, noise from a fixed-seed generator, mu-law) is plain integer
//! and floating-point arithmetic, so re-running rewrites identical bytes.

use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use media::g711::encode_ulaw_into;
use media::resample::StreamResampler;
use media::wav::{read_pcm16, write_ulaw};

/// Telephone rate.
const RATE: u32 = 8_000;
/// Samples per millisecond at 8 kHz.
const PER_MS: usize = 8;
/// Ground-truth window: 10 ms.
const WINDOW: usize = 10 * PER_MS;
/// A window is speech when its RMS exceeds this.
const SPEECH_DBFS: f64 = -45.0;
/// Segments closer than this are merged (the endpointer's default end
/// silence: such gaps are pauses inside one utterance).
const MERGE_GAP_MS: usize = 600;
/// Active speech level every clip is normalised to.
const TARGET_LEVEL_DBFS: f64 = -20.0;

/// One flite call and the silence that follows it.
struct Piece {
    /// flite voice name.
    voice: &'static str,
    /// Text spoken.
    text: &'static str,
    /// Silence inserted after this piece (before the next one), in ms.
    pause_after_ms: usize,
}

/// What a clip holds besides its silences.
enum Body {
    /// Synthesised speech.
    Speech(Vec<Piece>),
    /// Nothing: digital silence.
    Silence,
    /// Line noise without speech.
    LineNoise,
}

/// One fixture.
struct Clip {
    /// File stem.
    name: &'static str,
    /// One-line description for the sidecar.
    description: &'static str,
    /// Silence before the body, in ms.
    lead_ms: usize,
    /// The body.
    body: Body,
    /// Silence after the body, in ms.
    trail_ms: usize,
    /// Whether the speech is a backchannel.
    backchannel: bool,
}

fn clips() -> Vec<Clip> {
    let one = |voice, text| {
        vec![Piece {
            voice,
            text,
            pause_after_ms: 0,
        }]
    };
    vec![
        Clip {
            name: "greeting_reply",
            description: "reply to the agent's greeting",
            lead_ms: 800,
            body: Body::Speech(one("slt", "Hi, yes, I'm calling about my auto policy.")),
            trail_ms: 1_200,
            backchannel: false,
        },
        Clip {
            name: "question",
            description: "a caller's question",
            lead_ms: 700,
            body: Body::Speech(one(
                "rms",
                "Could you tell me whether my policy covers a rental car while mine is in the shop?",
            )),
            trail_ms: 1_200,
            backchannel: false,
        },
        Clip {
            name: "introduction",
            description: "a caller who gives their name, then asks",
            lead_ms: 700,
            body: Body::Speech(vec![
                Piece { voice: "rms", text: "My name is Jane Doe.", pause_after_ms: 300 },
                Piece {
                    voice: "rms",
                    text: "I'd like to add my son to my auto policy.",
                    pause_after_ms: 0,
                },
            ]),
            trail_ms: 1_200,
            backchannel: false,
        },
        Clip {
            name: "long_answer",
            description: "a long answer: four sentences with 350-450 ms pauses between them",
            lead_ms: 600,
            body: Body::Speech(vec![
                Piece { voice: "awb", text: "Sure.", pause_after_ms: 400 },
                Piece {
                    voice: "awb",
                    text: "I was driving home on Tuesday evening.",
                    pause_after_ms: 450,
                },
                Piece {
                    voice: "awb",
                    text: "Another car ran the red light and hit my door.",
                    pause_after_ms: 350,
                },
                Piece { voice: "awb", text: "Nobody was hurt, but the door won't open.", pause_after_ms: 0 },
            ]),
            trail_ms: 1_200,
            backchannel: false,
        },
        Clip {
            name: "backchannel_mhm",
            description: "backchannel \"mhm\"",
            lead_ms: 800,
            body: Body::Speech(one("awb", "Mhm.")),
            trail_ms: 1_200,
            backchannel: true,
        },
        Clip {
            name: "backchannel_okay",
            description: "backchannel \"okay\"",
            lead_ms: 800,
            body: Body::Speech(one("kal16", "Okay.")),
            trail_ms: 1_200,
            backchannel: true,
        },
        Clip {
            name: "backchannel_yeah",
            description: "backchannel \"yeah\"",
            lead_ms: 800,
            body: Body::Speech(one("rms", "Yeah.")),
            trail_ms: 1_200,
            backchannel: true,
        },
        Clip {
            name: "interruption",
            description: "a caller interrupting: speech starts 2 s into the clip",
            lead_ms: 2_000,
            body: Body::Speech(one("kal", "Sorry, can I stop you there? That's the wrong address.")),
            trail_ms: 1_200,
            backchannel: false,
        },
        Clip {
            name: "silence",
            description: "digital silence, no speech",
            lead_ms: 3_000,
            body: Body::Silence,
            trail_ms: 0,
            backchannel: false,
        },
        Clip {
            name: "line_noise",
            description: "line noise without speech: hiss (300-3400 Hz, -50 dBFS) and 60 Hz hum",
            lead_ms: 0,
            body: Body::LineNoise,
            trail_ms: 0,
            backchannel: false,
        },
    ]
}

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/audio"));
    std::fs::create_dir_all(&out_dir)?;
    let version = flite_version()?;
    let tmp = std::env::temp_dir().join(format!("make_audio_fixtures_{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    for clip in clips() {
        let (pcm, provenance) = render(&clip, &tmp)?;
        let segments = ground_truth(&pcm);
        let mut codes = vec![0u8; pcm.len()];
        encode_ulaw_into(&pcm, &mut codes);
        write_ulaw(out_dir.join(format!("{}.wav", clip.name)), &codes)?;
        let sidecar = sidecar(&clip, &pcm, &segments, &provenance, &version);
        std::fs::write(out_dir.join(format!("{}.toml", clip.name)), sidecar)?;
        let spans: Vec<String> = segments
            .iter()
            .map(|&(s, e)| format!("{}-{} ms", ms(s), ms(e)))
            .collect();
        println!(
            "{:<18} {:>6} ms  speech: {}",
            clip.name,
            pcm.len() / PER_MS,
            if spans.is_empty() {
                "none".to_string()
            } else {
                spans.join(", ")
            }
        );
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}

/// `flite --version`'s version line.
fn flite_version() -> Result<String, Box<dyn Error>> {
    let out = Command::new("flite").arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .find_map(|l| l.trim().strip_prefix("version: "))
        .unwrap_or("unknown")
        .to_string())
}

/// The clean 8 kHz clip (before mu-law) and the flite commands that made it.
fn render(clip: &Clip, tmp: &Path) -> Result<(Vec<i16>, Vec<String>), Box<dyn Error>> {
    let mut commands = Vec::new();
    let body: Vec<f64> = match &clip.body {
        Body::Silence => Vec::new(),
        Body::LineNoise => line_noise(3_000 * PER_MS, 0x5eed_0001),
        Body::Speech(pieces) => {
            let mut speech = Vec::new();
            for piece in pieces {
                let wav = tmp.join("piece.wav");
                let status = Command::new("flite")
                    .args(["-voice", piece.voice, "-t", piece.text, "-o"])
                    .arg(&wav)
                    .status()?;
                if !status.success() {
                    return Err(format!("flite failed for {:?}", piece.text).into());
                }
                commands.push(format!(
                    "flite -voice {} -t {:?} -o piece.wav",
                    piece.voice, piece.text
                ));
                let audio = read_pcm16(&wav)?;
                speech.extend(telephone_piece(&to_telephone_rate(
                    audio.rate_hz,
                    &audio.samples,
                )?));
                speech.extend(std::iter::repeat_n(0.0, piece.pause_after_ms * PER_MS));
            }
            speech
        }
    };
    let mut signal = vec![0.0; clip.lead_ms * PER_MS];
    signal.extend(&body);
    signal.extend(std::iter::repeat_n(0.0, clip.trail_ms * PER_MS));
    let pcm = signal
        .iter()
        .map(|&x| x.round().clamp(-32_768.0, 32_767.0) as i16)
        .collect();
    Ok((pcm, commands))
}

/// Resamples to 8 kHz with the crate's resampler, dropping its delay so the
/// output is aligned with the input.
fn to_telephone_rate(rate: u32, samples: &[i16]) -> Result<Vec<f64>, Box<dyn Error>> {
    if rate == RATE {
        return Ok(samples.iter().map(|&s| f64::from(s)).collect());
    }
    let mut rs = StreamResampler::new(rate, RATE)?;
    let mut out = vec![0i16; rs.max_output_len(samples.len()) + rs.max_flush_len()];
    let n = rs.process(samples, &mut out)?;
    let delay = rs.delay_samples();
    let m = rs.flush(&mut out[n..])?;
    Ok(out[delay..n + m].iter().map(|&s| f64::from(s)).collect())
}

/// RMS in dBFS of a slice.
fn rms_dbfs(x: &[f64]) -> f64 {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64;
    10.0 * (ms / (32_768.0 * 32_768.0)).max(1e-20).log10()
}

/// Margin kept around a piece's speech span, faded in and out.
const MARGIN: usize = 30 * PER_MS;

/// One flite utterance made telephone-like and cut out of flite's own
/// silence: 300 Hz high-pass (the resampler already cut above ~3.7 kHz),
/// active level set to −20 dBFS (peaks kept under −1 dBFS), then cut to its
/// speech span (as [`ground_truth`] defines it) plus 30 ms on each side,
/// faded in and out over those 30 ms so the cut makes no click.
fn telephone_piece(x: &[f64]) -> Vec<f64> {
    let pad = 100 * PER_MS;
    let mut signal = vec![0.0; pad];
    signal.extend(x);
    signal.extend(std::iter::repeat_n(0.0, pad));
    highpass_300(&mut signal);
    let gain = 10f64.powf((TARGET_LEVEL_DBFS - active_level_dbfs(&signal)) / 20.0);
    let peak = signal.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let gain = gain.min(0.9 * 32_767.0 / peak);
    signal.iter_mut().for_each(|v| *v *= gain);
    let rounded: Vec<i16> = signal.iter().map(|&v| v.round() as i16).collect();
    let segments = ground_truth(&rounded);
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Vec::new();
    };
    let from = first.0.saturating_sub(MARGIN);
    let to = (last.1 + MARGIN).min(signal.len());
    let mut piece = signal[from..to].to_vec();
    let n = piece.len();
    for i in 0..MARGIN.min(n / 2) {
        let w = 0.5 - 0.5 * (std::f64::consts::PI * i as f64 / MARGIN as f64).cos();
        piece[i] *= w;
        piece[n - 1 - i] *= w;
    }
    piece
}

/// Active speech level: RMS over the 10 ms windows within 30 dB of the
/// loudest one (a simple stand-in for ITU-T P.56).
fn active_level_dbfs(x: &[f64]) -> f64 {
    let windows: Vec<&[f64]> = x.chunks_exact(WINDOW).collect();
    let loudest = windows.iter().map(|w| rms_dbfs(w)).fold(f64::MIN, f64::max);
    let active: Vec<f64> = windows
        .iter()
        .filter(|w| rms_dbfs(w) > loudest - 30.0)
        .flat_map(|w| w.iter().copied())
        .collect();
    rms_dbfs(&active)
}

/// A biquad section (direct form I), coefficients normalised by a0.
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
    x: [f64; 2],
    y: [f64; 2],
}

impl Biquad {
    /// RBJ cookbook high-pass or low-pass at `f0` Hz with quality `q`.
    fn new(f0: f64, q: f64, highpass: bool) -> Self {
        let w0 = 2.0 * std::f64::consts::PI * f0 / f64::from(RATE);
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

/// Fourth-order Butterworth high-pass at 300 Hz (two biquads).
fn highpass_300(signal: &mut [f64]) {
    Biquad::new(300.0, 0.541_196_1, true).run(signal);
    Biquad::new(300.0, 1.306_563_0, true).run(signal);
}

/// Fixed-seed xorshift64* uniform in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        v as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// Hiss band-limited to 300–3400 Hz at −50 dBFS plus 60 Hz hum (and its
/// third harmonic) at −50 dBFS: a poor but ordinary analogue line.
fn line_noise(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = Noise(seed);
    let mut hiss: Vec<f64> = (0..len).map(|_| rng.next()).collect();
    highpass_300(&mut hiss);
    Biquad::new(3_400.0, 0.541_196_1, false).run(&mut hiss);
    Biquad::new(3_400.0, 1.306_563_0, false).run(&mut hiss);
    let gain = 10f64.powf((-50.0 - rms_dbfs(&hiss)) / 20.0);
    let hum_amp = 32_768.0 * 10f64.powf(-50.0 / 20.0) * 2f64.sqrt();
    (0..len)
        .map(|i| {
            let t = i as f64 / f64::from(RATE);
            let w = 2.0 * std::f64::consts::PI * 60.0 * t;
            hiss[i] * gain + hum_amp * (0.9 * w.sin() + 0.3 * (3.0 * w).sin())
        })
        .collect()
}

/// Ground truth: runs of 10 ms windows (sliding by one sample) whose RMS
/// exceeds −45 dBFS, from the start of the first such window to the end of
/// the last, merged across gaps shorter than 600 ms. In samples.
fn ground_truth(pcm: &[i16]) -> Vec<(usize, usize)> {
    let threshold = (32_768.0 * 10f64.powf(SPEECH_DBFS / 20.0)).powi(2) * WINDOW as f64;
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut energy: f64 = pcm[..WINDOW.min(pcm.len())]
        .iter()
        .map(|&s| f64::from(s).powi(2))
        .sum();
    let mut run: Option<usize> = None;
    for start in 0..=pcm.len().saturating_sub(WINDOW) {
        if start > 0 {
            energy +=
                f64::from(pcm[start + WINDOW - 1]).powi(2) - f64::from(pcm[start - 1]).powi(2);
        }
        let loud = energy > threshold;
        match (loud, run) {
            (true, None) => run = Some(start),
            (false, Some(s)) => {
                segments.push((s, start - 1 + WINDOW));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run {
        segments.push((s, pcm.len()));
    }
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for seg in segments {
        match merged.last_mut() {
            Some(last) if seg.0.saturating_sub(last.1) < MERGE_GAP_MS * PER_MS => last.1 = seg.1,
            _ => merged.push(seg),
        }
    }
    merged
}

/// Samples to milliseconds, as a decimal (0.125 ms resolution).
fn ms(samples: usize) -> String {
    let whole = samples / PER_MS;
    let frac = samples % PER_MS;
    if frac == 0 {
        format!("{whole}")
    } else {
        format!("{whole}.{}", 1000 * frac / PER_MS)
    }
}

fn sidecar(
    clip: &Clip,
    pcm: &[i16],
    segments: &[(usize, usize)],
    commands: &[String],
    version: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Ground truth for {}.wav (generated by media/examples/make_audio_fixtures.rs;",
        clip.name
    );
    let _ = writeln!(
        s,
        "# see README.md for the definition). Do not edit by hand."
    );
    let _ = writeln!(s, "description = {:?}", clip.description);
    let _ = writeln!(s, "encoding = \"mulaw\"");
    let _ = writeln!(s, "sample_rate_hz = {RATE}");
    let _ = writeln!(s, "duration_ms = {}", ms(pcm.len()));
    let _ = writeln!(s, "lead_silence_ms = {}", clip.lead_ms);
    if matches!(clip.body, Body::Speech(_)) {
        let speech: Vec<f64> = segments
            .iter()
            .flat_map(|&(a, b)| pcm[a..b].iter().map(|&v| f64::from(v)))
            .collect();
        let _ = writeln!(s, "speech_rms_dbfs = {:.1}", rms_dbfs(&speech));
        let _ = writeln!(s, "flite_version = {version:?}");
        for c in commands {
            let _ = writeln!(s, "# {c}");
        }
    }
    for &(a, b) in segments {
        let _ = writeln!(s, "\n[[segment]]");
        let _ = writeln!(s, "start_ms = {}", ms(a));
        let _ = writeln!(s, "end_ms = {}", ms(b));
        let _ = writeln!(s, "backchannel = {}", clip.backchannel);
    }
    s
}
