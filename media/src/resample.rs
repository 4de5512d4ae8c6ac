//! Streaming sample-rate conversion between the 8 kHz telephone rate and the
//! rates around it: 8 kHz → 16 kHz for the speech-to-text and VAD path, and
//! 16 / 22.05 / 24 / 44.1 / 48 kHz text-to-speech PCM → 8 kHz for the
//! outbound path.
//!
//! # Which rubato resampler, and why
//!
//! Every supported pair is a fixed rational ratio (2:1, 441:160, 3:1, 441:80,
//! 6:1), so a synchronous resampler is enough and the asynchronous ones
//! (sinc-table interpolation, polynomial) would only add cost and an
//! interpolation error. [`StreamResampler`] wraps rubato's
//! [`FftFixedInOut`]: each 20 ms chunk is transformed once, multiplied by the
//! spectrum of a Blackman-Harris²-windowed sinc whose length equals the input
//! chunk (160 taps at 8 kHz, 320 at 16 kHz, 441 at 22.05 kHz, …), and
//! transformed back at the output size; overlap-add makes it an exact linear
//! convolution. Upsampling 8 → 16 kHz therefore inserts no images at all
//! (the spectrum is zero-padded), and downsampling filters before
//! decimating, with the pass band reaching about 3.66 kHz on the 8 kHz side:
//! the whole 300–3400 Hz telephone band is flat. Cost is two short real FFTs
//! per 20 ms, far below a polyphase sinc of the same length.
//!
//! # Delay
//!
//! The filter is linear-phase, centred on input tap `chunk_in / 2`, so the
//! output lags the input by half a 20 ms chunk: 10 ms for every pair, i.e.
//! 80 samples at 8 kHz and 160 at 16 kHz. The one wrinkle is 22.05 kHz,
//! whose 441-sample chunk is odd: its centre tap sits at 220 input samples.
//! [`StreamResampler::delay_samples`] reports the delay in output samples
//! (rounded), [`StreamResampler::delay_ms`] exactly; the unit tests measure it
//! with an impulse (within half an output sample):
//!
//! | input → output | chunk in → out | delay (output samples) | delay |
//! |---|---|---|---|
//! | 8 000 → 16 000 | 160 → 320 | 160 | 10 ms |
//! | 16 000 → 8 000 | 320 → 160 | 80 | 10 ms |
//! | 22 050 → 8 000 | 441 → 160 | 79.8 (reported 80) | 9.977 ms |
//! | 24 000 → 8 000 | 480 → 160 | 80 | 10 ms |
//! | 44 100 → 8 000 | 882 → 160 | 80 | 10 ms |
//! | 48 000 → 8 000 | 960 → 160 | 80 | 10 ms |
//! | 8 000 → 22 050 | 160 → 441 | 220.5 (reported 221) | 10 ms |
//! | 8 000 → 24 000 / 44 100 / 48 000 | 160 → 480 / 882 / 960 | 240 / 441 / 480 | 10 ms |
//!
//! Output sample `n` therefore shows the input at time `n / out_rate − delay`.
//! On top of this signal delay, input waits until its 20 ms chunk is
//! complete; callers that push whole 20 ms telephone frames (160 samples)
//! never wait, so 10 ms is also the added latency of the inbound path.
//!
//! # Allocation
//!
//! All buffers are allocated in [`StreamResampler::new`]; `process` and
//! `flush` convert i16 ↔ f32 in those buffers and call rubato's
//! `process_into_buffer`, so they never allocate.

use rubato::{FftFixedInOut, Resampler};

use crate::TELEPHONE_RATE_HZ;

/// Rates that can be converted to and from [`TELEPHONE_RATE_HZ`].
pub const SUPPORTED_RATES_HZ: [u32; 5] = [16_000, 22_050, 24_000, 44_100, 48_000];

/// Length of one processing chunk: one telephone frame, so a 160-sample
/// inbound frame completes a chunk and never waits.
pub const CHUNK_MS: u32 = 20;

/// Why a resampler could not be built or could not process.
#[derive(Debug)]
pub enum ResampleError {
    /// The pair is not 8 kHz ↔ one of [`SUPPORTED_RATES_HZ`].
    UnsupportedRates {
        /// Requested input rate in hertz.
        input_hz: u32,
        /// Requested output rate in hertz.
        output_hz: u32,
    },
    /// The caller's output buffer cannot hold what this call produces.
    OutputTooSmall {
        /// Samples this call would write.
        needed: usize,
        /// Length of the buffer given.
        available: usize,
    },
    /// rubato refused to build the resampler.
    Construction(rubato::ResamplerConstructionError),
    /// rubato refused to process a chunk (a bug here: buffers are sized at
    /// construction).
    Backend(rubato::ResampleError),
}

impl std::fmt::Display for ResampleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsupportedRates {
                input_hz,
                output_hz,
            } => write!(
                f,
                "unsupported resampling pair {input_hz} Hz -> {output_hz} Hz \
                 (one side must be 8000 Hz, the other 16000, 22050, 24000, 44100 or 48000 Hz)"
            ),
            Self::OutputTooSmall { needed, available } => write!(
                f,
                "output buffer too small: {needed} samples needed, {available} available"
            ),
            Self::Construction(_) => write!(f, "could not build the resampler"),
            Self::Backend(_) => write!(f, "the resampler failed to process a chunk"),
        }
    }
}

impl std::error::Error for ResampleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Construction(e) => Some(e),
            Self::Backend(e) => Some(e),
            _ => None,
        }
    }
}

/// A mono streaming resampler for one fixed rate pair, fed i16 PCM in chunks
/// of any size. State (filter history, a partial chunk) carries across calls.
pub struct StreamResampler {
    /// rubato's FFT resampler; consumes exactly `chunk_in` and writes exactly
    /// `chunk_out` samples per call.
    inner: FftFixedInOut<f32>,
    /// Input rate in hertz.
    input_hz: u32,
    /// Output rate in hertz.
    output_hz: u32,
    /// Input samples per chunk (20 ms at the input rate).
    chunk_in: usize,
    /// Output samples per chunk (20 ms at the output rate).
    chunk_out: usize,
    /// The chunk being filled, as f32 (one channel, as rubato wants).
    in_buf: [Vec<f32>; 1],
    /// Samples of `in_buf` already filled.
    filled: usize,
    /// rubato's output for one chunk, before conversion to i16.
    out_buf: [Vec<f32>; 1],
    /// Input samples accepted since construction or the last flush/reset.
    consumed: u64,
    /// Output samples written since construction or the last flush/reset.
    produced: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("input_hz", &self.input_hz)
            .field("output_hz", &self.output_hz)
            .field("chunk_in", &self.chunk_in)
            .field("chunk_out", &self.chunk_out)
            .field("filled", &self.filled)
            .finish_non_exhaustive()
    }
}

impl StreamResampler {
    /// Builds a resampler from `input_hz` to `output_hz`; one of them must be
    /// 8000 and the other one of [`SUPPORTED_RATES_HZ`]. Allocates every
    /// buffer it will ever use.
    pub fn new(input_hz: u32, output_hz: u32) -> Result<Self, ResampleError> {
        let other = if input_hz == TELEPHONE_RATE_HZ {
            output_hz
        } else if output_hz == TELEPHONE_RATE_HZ {
            input_hz
        } else {
            0
        };
        if !SUPPORTED_RATES_HZ.contains(&other) {
            return Err(ResampleError::UnsupportedRates {
                input_hz,
                output_hz,
            });
        }
        let chunk_in = (input_hz * CHUNK_MS / 1000) as usize;
        let inner = FftFixedInOut::<f32>::new(input_hz as usize, output_hz as usize, chunk_in, 1)
            .map_err(ResampleError::Construction)?;
        // rubato rounds the chunk to a multiple of the ratio's numerator;
        // every supported rate has a whole number of samples in 20 ms, so
        // the chunk is exactly 20 ms, but read back what it chose.
        let chunk_in = inner.input_frames_max();
        let chunk_out = inner.output_frames_max();
        Ok(Self {
            inner,
            input_hz,
            output_hz,
            chunk_in,
            chunk_out,
            in_buf: [vec![0.0; chunk_in]],
            filled: 0,
            out_buf: [vec![0.0; chunk_out]],
            consumed: 0,
            produced: 0,
        })
    }

    /// 8 kHz → 16 kHz, the inbound speech path.
    pub fn telephone_to_wideband() -> Result<Self, ResampleError> {
        Self::new(TELEPHONE_RATE_HZ, 16_000)
    }

    /// Input rate in hertz.
    pub fn input_hz(&self) -> u32 {
        self.input_hz
    }

    /// Output rate in hertz.
    pub fn output_hz(&self) -> u32 {
        self.output_hz
    }

    /// Input samples per processing chunk (20 ms).
    pub fn chunk_input_samples(&self) -> usize {
        self.chunk_in
    }

    /// Output samples per processing chunk (20 ms).
    pub fn chunk_output_samples(&self) -> usize {
        self.chunk_out
    }

    /// Signal delay in input samples: the filter is centred on tap
    /// `chunk_in / 2`, so this is exact.
    pub fn delay_input_samples(&self) -> usize {
        self.chunk_in / 2
    }

    /// Signal delay in output samples, rounded to the nearest sample: output
    /// sample `n` shows the input at time `(n − delay) / output_hz`. Exact
    /// (a whole number) for every pair except those with 22.05 kHz, whose
    /// odd 441-sample chunk puts the delay at 79.8 (22.05 → 8 kHz) or 220.5
    /// (8 → 22.05 kHz) output samples.
    pub fn delay_samples(&self) -> usize {
        (self.delay_input_samples() * self.output_hz as usize + self.input_hz as usize / 2)
            / self.input_hz as usize
    }

    /// Signal delay in milliseconds, exact: 10 ms for every supported pair
    /// except 22.05 → 8 kHz (9.977 ms).
    pub fn delay_ms(&self) -> f64 {
        self.delay_input_samples() as f64 * 1000.0 / f64::from(self.input_hz)
    }

    /// Input samples waiting for their chunk to complete.
    pub fn pending_input(&self) -> usize {
        self.filled
    }

    /// Input samples accepted since construction or the last flush/reset.
    pub fn input_consumed(&self) -> u64 {
        self.consumed
    }

    /// Output samples written since construction or the last flush/reset.
    pub fn output_produced(&self) -> u64 {
        self.produced
    }

    /// Exactly how many samples [`process`](Self::process) will write for an
    /// input of `input_len` samples, given what is already pending.
    pub fn output_len_for(&self, input_len: usize) -> usize {
        (self.filled + input_len) / self.chunk_in * self.chunk_out
    }

    /// An upper bound on [`output_len_for`](Self::output_len_for) that does
    /// not depend on state: size caller buffers with it.
    pub fn max_output_len(&self, input_len: usize) -> usize {
        input_len.div_ceil(self.chunk_in) * self.chunk_out
    }

    /// The most samples [`flush`](Self::flush) can write (two chunks).
    pub fn max_flush_len(&self) -> usize {
        2 * self.chunk_out
    }

    /// Resamples `input` and writes the completed output into `output`,
    /// returning how many samples were written. Samples that do not complete
    /// a chunk are kept for the next call. Fails without consuming anything
    /// if `output` is shorter than [`output_len_for`](Self::output_len_for).
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<usize, ResampleError> {
        let needed = self.output_len_for(input.len());
        if output.len() < needed {
            return Err(ResampleError::OutputTooSmall {
                needed,
                available: output.len(),
            });
        }
        let mut written = 0;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (self.chunk_in - self.filled).min(rest.len());
            let (head, tail) = rest.split_at(take);
            for (dst, &src) in self.in_buf[0][self.filled..self.filled + take]
                .iter_mut()
                .zip(head)
            {
                *dst = f32::from(src);
            }
            self.filled += take;
            self.consumed += take as u64;
            rest = tail;
            if self.filled == self.chunk_in {
                self.run_chunk(&mut output[written..written + self.chunk_out])?;
                written += self.chunk_out;
            }
        }
        Ok(written)
    }

    /// Ends the stream: pads the pending samples with silence and drains the
    /// filter so that the last input sample (plus the delay) comes out.
    /// After it, the total output is `delay_samples() + ceil(consumed ×
    /// output_hz / input_hz)`. The resampler is then reset, ready for a new
    /// stream. `output` must hold [`max_flush_len`](Self::max_flush_len).
    pub fn flush(&mut self, output: &mut [i16]) -> Result<usize, ResampleError> {
        if self.consumed == 0 {
            self.reset();
            return Ok(0);
        }
        let in_hz = u64::from(self.input_hz);
        let out_hz = u64::from(self.output_hz);
        let expected = self.delay_samples() as u64 + (self.consumed * out_hz).div_ceil(in_hz);
        let remaining = expected.saturating_sub(self.produced) as usize;
        if output.len() < remaining {
            return Err(ResampleError::OutputTooSmall {
                needed: remaining,
                available: output.len(),
            });
        }
        let mut written = 0;
        while written < remaining {
            self.in_buf[0][self.filled..].fill(0.0);
            self.filled = self.chunk_in;
            let take = (remaining - written).min(self.chunk_out);
            self.run_chunk(&mut output[written..written + take])?;
            written += take;
        }
        self.reset();
        Ok(written)
    }

    /// Forgets all state: filter history, pending input and counters.
    pub fn reset(&mut self) {
        self.inner.reset();
        self.in_buf[0].fill(0.0);
        self.out_buf[0].fill(0.0);
        self.filled = 0;
        self.consumed = 0;
        self.produced = 0;
    }

    /// Processes the full `in_buf` and writes the first `out.len()` samples
    /// (at most one chunk) of the result.
    fn run_chunk(&mut self, out: &mut [i16]) -> Result<(), ResampleError> {
        self.inner
            .process_into_buffer(&self.in_buf, &mut self.out_buf, None)
            .map_err(ResampleError::Backend)?;
        self.filled = 0;
        for (dst, &src) in out.iter_mut().zip(&self.out_buf[0]) {
            *dst = to_i16(src);
        }
        self.produced += out.len().min(self.chunk_out) as u64;
        Ok(())
    }
}

/// Rounds and saturates a sample on the i16 scale.
fn to_i16(x: f32) -> i16 {
    // `as` saturates and maps NaN to 0.
    x.round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_pairs() -> Vec<(u32, u32)> {
        SUPPORTED_RATES_HZ
            .iter()
            .flat_map(|&r| [(TELEPHONE_RATE_HZ, r), (r, TELEPHONE_RATE_HZ)])
            .collect()
    }

    /// Runs `input` through a fresh resampler in one call plus flush.
    fn run_all(rs: &mut StreamResampler, input: &[i16]) -> Vec<i16> {
        let mut out = vec![0; rs.max_output_len(input.len()) + rs.max_flush_len()];
        let n = rs.process(input, &mut out).expect("process");
        let m = rs.flush(&mut out[n..]).expect("flush");
        out.truncate(n + m);
        out
    }

    #[test]
    fn rejects_unsupported_pairs() {
        for (a, b) in [
            (8_000, 8_000),
            (16_000, 48_000),
            (8_000, 11_025),
            (0, 8_000),
        ] {
            assert!(matches!(
                StreamResampler::new(a, b),
                Err(ResampleError::UnsupportedRates { .. })
            ));
        }
    }

    #[test]
    fn every_pair_has_twenty_ms_chunks_and_a_ten_ms_delay() {
        for (a, b) in all_pairs() {
            let rs = StreamResampler::new(a, b).expect("supported");
            assert_eq!(rs.chunk_input_samples(), (a / 50) as usize, "{a}->{b}");
            assert_eq!(rs.chunk_output_samples(), (b / 50) as usize, "{a}->{b}");
            assert!((rs.delay_ms() - 10.0).abs() < 0.025, "{a}->{b}");
            let exact = rs.delay_ms() * f64::from(b) / 1000.0;
            assert!((rs.delay_samples() as f64 - exact).abs() <= 0.5, "{a}->{b}");
            if a == 22_050 || b == 22_050 {
                continue;
            }
            assert_eq!(rs.delay_samples(), (b / 100) as usize, "{a}->{b}");
            assert_eq!(rs.delay_ms(), 10.0, "{a}->{b}");
        }
    }

    /// An impulse at input time t comes out at output time t + delay: the
    /// measured group delay (peak position, refined by a parabola through
    /// the three samples around it) matches `delay_samples()` within one
    /// output sample for every pair.
    #[test]
    fn impulse_measures_the_reported_delay() {
        for (a, b) in all_pairs() {
            let mut rs = StreamResampler::new(a, b).expect("supported");
            // 0.3 s in, and at a time that is not on the output grid for the
            // fractional pairs, so the parabola does real work.
            let t_in = (a as usize) * 3 / 10 + 7;
            let mut input = vec![0i16; a as usize];
            input[t_in] = 16_000;
            let out = run_all(&mut rs, &input);
            let (peak, _) = out
                .iter()
                .enumerate()
                .max_by_key(|(_, v)| v.unsigned_abs())
                .expect("output");
            let (y0, y1, y2) = (
                f64::from(out[peak - 1]),
                f64::from(out[peak]),
                f64::from(out[peak + 1]),
            );
            let refined = peak as f64 + 0.5 * (y0 - y2) / (y0 - 2.0 * y1 + y2);
            let expected = (t_in + rs.delay_input_samples()) as f64 * f64::from(b) / f64::from(a);
            assert!(
                (refined - expected).abs() <= 0.5,
                "{a}->{b}: impulse at output {refined:.2}, expected {expected:.2}"
            );
        }
    }

    /// Tones across the telephone band keep their level (within 0.1 dB up
    /// to 3 kHz, 0.5 dB at 3.4 kHz).
    #[test]
    fn telephone_band_passes_at_unity_gain() {
        for (a, b) in all_pairs() {
            for (hz, tolerance_db) in [(300.0, 0.1), (1_000.0, 0.1), (3_000.0, 0.1), (3_400.0, 0.5)]
            {
                let mut rs = StreamResampler::new(a, b).expect("supported");
                let n = a as usize / 2;
                let input: Vec<i16> = (0..n)
                    .map(|i| {
                        let t = i as f64 / f64::from(a);
                        (10_000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
                    })
                    .collect();
                let out = run_all(&mut rs, &input);
                // Steady-state part, away from the edges.
                let mid = &out[out.len() / 4..out.len() * 3 / 4];
                let rms = (mid.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>()
                    / mid.len() as f64)
                    .sqrt();
                let gain_db = 20.0 * (rms / (10_000.0 / 2f64.sqrt())).log10();
                assert!(
                    gain_db.abs() < tolerance_db,
                    "{a}->{b} at {hz} Hz: gain {gain_db:+.3} dB"
                );
            }
        }
    }

    /// Content above the 4 kHz Nyquist of the telephone side must not fold
    /// back into the band when downsampling.
    #[test]
    fn downsampling_rejects_aliases() {
        for &a in &SUPPORTED_RATES_HZ {
            let mut rs = StreamResampler::new(a, TELEPHONE_RATE_HZ).expect("supported");
            let n = a as usize / 2;
            // 5 kHz would alias to 3 kHz at 8 kHz.
            let input: Vec<i16> = (0..n)
                .map(|i| {
                    let t = i as f64 / f64::from(a);
                    (20_000.0 * (2.0 * std::f64::consts::PI * 5_000.0 * t).sin()).round() as i16
                })
                .collect();
            let out = run_all(&mut rs, &input);
            let mid = &out[out.len() / 4..out.len() * 3 / 4];
            let peak = mid.iter().map(|x| x.unsigned_abs()).max().unwrap_or(0);
            // Under −60 dB relative to the input tone.
            assert!(peak < 20, "{a}->8000: alias peak {peak}");
        }
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input: Vec<i16> = (0..4_000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 17) as i16) / 4)
            .collect();
        for (a, b) in [(8_000, 16_000), (22_050, 8_000), (48_000, 8_000)] {
            let mut whole = StreamResampler::new(a, b).expect("supported");
            let reference = run_all(&mut whole, &input);
            let mut rs = StreamResampler::new(a, b).expect("supported");
            let mut out = vec![0; reference.len() + rs.max_flush_len()];
            let mut written = 0;
            let mut pos = 0;
            for step in [1usize, 7, 160, 13, 441, 3, 999].iter().cycle() {
                if pos >= input.len() {
                    break;
                }
                let end = (pos + step).min(input.len());
                written += rs
                    .process(&input[pos..end], &mut out[written..])
                    .expect("process");
                pos = end;
            }
            written += rs.flush(&mut out[written..]).expect("flush");
            assert_eq!(&out[..written], &reference[..], "{a}->{b}");
        }
    }

    #[test]
    fn flush_emits_the_tail_and_the_delay() {
        for (a, b) in all_pairs() {
            for len in [1usize, 100, (a / 50) as usize, 1_234] {
                let mut rs = StreamResampler::new(a, b).expect("supported");
                let delay = rs.delay_samples();
                let out = run_all(&mut rs, &vec![1_000i16; len]);
                let expected = delay + (len as u64 * u64::from(b)).div_ceil(u64::from(a)) as usize;
                assert_eq!(out.len(), expected, "{a}->{b} len {len}");
                assert_eq!(rs.input_consumed(), 0, "flush resets");
            }
        }
    }

    #[test]
    fn too_small_output_is_an_error_and_consumes_nothing() {
        let mut rs = StreamResampler::telephone_to_wideband().expect("supported");
        let mut out = [0i16; 100];
        let err = rs.process(&[0; 160], &mut out);
        assert!(matches!(
            err,
            Err(ResampleError::OutputTooSmall {
                needed: 320,
                available: 100
            })
        ));
        assert_eq!(rs.pending_input(), 0);
        assert_eq!(rs.process(&[0; 100], &mut out).expect("no output due"), 0);
        assert_eq!(rs.pending_input(), 100);
    }
}
