//! Offline providers that need no keys and no network at call time:
//! Moonshine speech-to-text ([`moonshine`]) and flite text-to-speech
//! ([`flite`]). Both are C libraries reached over FFI with `dlopen`
//! (libloading): libmoonshine.so is downloaded by [`crate::models`], and
//! libflite is an optional system package, so neither is linked at build
//! time and a server without them still starts. The blocking C calls run
//! in `tokio::task::spawn_blocking`.

pub mod flite;
pub mod moonshine;

pub use flite::{FliteConfig, FliteTts};
pub use moonshine::{MoonshineConfig, MoonshineStt};

use media::resample::StreamResampler;

/// Resamples a whole clip of mono PCM from `from_hz` to `to_hz` (one side
/// 8 kHz, see [`media::resample`]), compensating the filter delay so the
/// output lines up with the input. Same rates return a copy.
pub(crate) fn resample_clip(input: &[i16], from_hz: u32, to_hz: u32) -> Result<Vec<i16>, String> {
    if from_hz == to_hz {
        return Ok(input.to_vec());
    }
    let mut resampler = StreamResampler::new(from_hz, to_hz).map_err(|e| e.to_string())?;
    let delay = resampler.delay_samples();
    let mut out = vec![0i16; resampler.max_output_len(input.len()) + resampler.max_flush_len()];
    let written = resampler
        .process(input, &mut out)
        .map_err(|e| e.to_string())?;
    let flushed = resampler
        .flush(&mut out[written..])
        .map_err(|e| e.to_string())?;
    out.truncate(written + flushed);
    let wanted = (input.len() as u64 * u64::from(to_hz)).div_ceil(u64::from(from_hz)) as usize;
    let start = delay.min(out.len());
    let end = (start + wanted).min(out.len());
    Ok(out[start..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample_clip_keeps_duration_and_alignment() {
        // A 1 kHz tone burst from 100 ms to 200 ms at 16 kHz.
        let mut input = vec![0i16; 4800];
        for (i, s) in input.iter_mut().enumerate().take(3200).skip(1600) {
            let t = i as f64 / 16_000.0;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16;
        }
        let out = resample_clip(&input, 16_000, 8_000).expect("resample");
        assert_eq!(out.len(), 2400);
        let loud = |range: std::ops::Range<usize>| out[range].iter().any(|s| s.abs() > 4000);
        assert!(!loud(0..780));
        assert!(loud(820..1580));
        assert!(!loud(1620..2400));
        assert_eq!(
            resample_clip(&[1, 2, 3], 8000, 8000).expect("same"),
            vec![1, 2, 3]
        );
    }
}
