//! The caller's script: `--say a.wav --wait-agent --say b.wav
//! --interrupt-after 1.2s c.wav --dtmf 0 --pause 2s --hangup`.

use std::path::Path;
use std::time::Duration;

use media::resample::StreamResampler;

/// One thing the simulated caller does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Speak this 8 kHz mu-law audio (paced in real time).
    Say(Vec<u8>),
    /// Stay silent until the agent has answered and finished playing
    /// (or `timeout`).
    WaitAgent {
        /// Give up waiting after this long.
        timeout: Duration,
    },
    /// Stay silent until agent audio for the last caller turn has started.
    WaitAgentStart {
        /// Give up waiting after this long.
        timeout: Duration,
    },
    /// Stay silent this long.
    Silence(Duration),
    /// Speak over the agent (a barge-in; its reaction time is measured).
    Interrupt {
        /// The interrupting audio.
        audio: Vec<u8>,
    },
    /// Press a key.
    Dtmf(char),
    /// Hang up (send `stop`).
    Hangup,
}

/// Why a script was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// An option lacks its value.
    #[error("`{0}` needs a value")]
    MissingValue(String),
    /// Not a script option.
    #[error("unknown script option `{0}` (use --say, --wait-agent, --interrupt-after, --pause, --dtmf, --hangup)")]
    Unknown(String),
    /// A duration like `1.2s` or `300ms` did not parse.
    #[error("`{0}` is not a duration (e.g. 1.2s, 300ms)")]
    Duration(String),
    /// A WAV file could not be read.
    #[error("{path}: {message}")]
    Audio {
        /// The file.
        path: String,
        /// The problem.
        message: String,
    },
}

/// How long `--wait-agent` waits at most.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses script options (in order) into steps.
pub fn parse_script(args: &[String]) -> Result<Vec<Step>, ScriptError> {
    let mut steps = Vec::new();
    let mut i = 0;
    let value = |i: usize, flag: &str| -> Result<&String, ScriptError> {
        args.get(i + 1)
            .ok_or_else(|| ScriptError::MissingValue(flag.to_string()))
    };
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--say" => {
                steps.push(Step::Say(load_ulaw(value(i, flag)?)?));
                i += 2;
            }
            "--wait-agent" => {
                steps.push(Step::WaitAgent {
                    timeout: WAIT_TIMEOUT,
                });
                i += 1;
            }
            "--pause" => {
                steps.push(Step::Silence(parse_duration(value(i, flag)?)?));
                i += 2;
            }
            "--interrupt-after" => {
                let after = parse_duration(value(i, flag)?)?;
                let audio = trim_leading_silence(load_ulaw(
                    args.get(i + 2)
                        .ok_or_else(|| ScriptError::MissingValue(flag.into()))?,
                )?);
                steps.push(Step::WaitAgentStart {
                    timeout: WAIT_TIMEOUT,
                });
                steps.push(Step::Silence(after));
                steps.push(Step::Interrupt { audio });
                i += 3;
            }
            "--dtmf" => {
                let digit = value(i, flag)?
                    .chars()
                    .next()
                    .ok_or_else(|| ScriptError::MissingValue(flag.into()))?;
                steps.push(Step::Dtmf(digit));
                i += 2;
            }
            "--hangup" => {
                steps.push(Step::Hangup);
                i += 1;
            }
            other => return Err(ScriptError::Unknown(other.to_string())),
        }
    }
    Ok(steps)
}

/// Drops leading near-silence, so an interruption's onset is when its
/// speech starts, not when its file does.
fn trim_leading_silence(audio: Vec<u8>) -> Vec<u8> {
    let first = audio
        .iter()
        .position(|&c| media::g711::ulaw_to_linear(c).unsigned_abs() > 300)
        .unwrap_or(audio.len());
    audio[first.saturating_sub(160)..].to_vec()
}

/// `1.2s`, `300ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, ScriptError> {
    let t = text.trim();
    let parsed = if let Some(ms) = t.strip_suffix("ms") {
        ms.parse::<f64>().ok().map(|v| v / 1_000.0)
    } else if let Some(s) = t.strip_suffix('s') {
        s.parse::<f64>().ok()
    } else {
        t.parse::<f64>().ok()
    };
    parsed
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 3_600.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| ScriptError::Duration(text.to_string()))
}

/// Reads a WAV (PCM16 at a supported rate, or mu-law) as 8 kHz mu-law.
pub fn load_ulaw(path: impl AsRef<Path>) -> Result<Vec<u8>, ScriptError> {
    let path = path.as_ref();
    let err = |message: String| ScriptError::Audio {
        path: path.display().to_string(),
        message,
    };
    let audio = media::wav::read_audio(path).map_err(|e| err(e.to_string()))?;
    let pcm = if audio.rate_hz == media::TELEPHONE_RATE_HZ {
        audio.samples
    } else {
        let mut resampler = StreamResampler::new(audio.rate_hz, media::TELEPHONE_RATE_HZ)
            .map_err(|e| err(e.to_string()))?;
        let mut out =
            vec![0i16; resampler.max_output_len(audio.samples.len()) + resampler.max_flush_len()];
        let n = resampler
            .process(&audio.samples, &mut out)
            .map_err(|e| err(e.to_string()))?;
        let m = resampler
            .flush(&mut out[n..])
            .map_err(|e| err(e.to_string()))?;
        out.truncate(n + m);
        out
    };
    Ok(pcm
        .iter()
        .map(|&s| media::g711::linear_to_ulaw(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_errors() {
        assert_eq!(
            parse_duration("1.2s").ok(),
            Some(Duration::from_millis(1_200))
        );
        assert_eq!(
            parse_duration("300ms").ok(),
            Some(Duration::from_millis(300))
        );
        assert_eq!(parse_duration("2").ok(), Some(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(matches!(
            parse_script(&["--sing".into()]),
            Err(ScriptError::Unknown(_))
        ));
        assert!(matches!(
            parse_script(&["--say".into()]),
            Err(ScriptError::MissingValue(_))
        ));
        let steps = parse_script(&[
            "--wait-agent".into(),
            "--dtmf".into(),
            "0".into(),
            "--hangup".into(),
        ])
        .expect("script");
        assert_eq!(steps.len(), 3);
    }
}
