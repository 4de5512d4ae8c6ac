//! Switchboard's telephone audio path, kept pure: no async runtime, no I/O
//! and no allocation per frame on the hot path.
//!
//! | module | owns |
//! |---|---|
//! | [`g711`] | mu-law and A-law codecs, bit-exact with the Sun reference |
//! | [`frame`] | stream time ([`frame::SampleTime`]); 20 ms framing of inbound and outbound mu-law |
//! | [`ledger`] | playout ledger: what Twilio played, from echoed marks; barge-in cut |
//! | [`wav`] | WAV files (PCM16, mu-law) for fixtures, recordings and the simulator |
//! | [`resample`] | streaming 8 kHz ↔ 16/22.05/24/44.1/48 kHz conversion, with its delay |
//! | [`vad`] | voice activity detection: earshot (neural) and energy detectors, frames stamped in stream time |
//! | [`endpoint`] | utterance start/end, noise bursts, backchannels and barge-in from VAD scores |
//! | [`path`] | the per-call inbound (payload → events) and outbound (audio → payloads) paths |

pub mod endpoint;
pub mod frame;
pub mod g711;
pub mod ledger;
pub mod path;
pub mod resample;
pub mod vad;
pub mod wav;

/// Telephone sample rate in hertz (G.711 on the PSTN and Twilio Media Streams).
pub const TELEPHONE_RATE_HZ: u32 = 8_000;

/// Length of one telephone frame in milliseconds.
pub const FRAME_MS: u32 = 20;

/// Samples (and, for G.711, bytes) in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = (TELEPHONE_RATE_HZ * FRAME_MS / 1000) as usize;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twenty_ms_frame_is_160_samples() {
        assert_eq!(FRAME_SAMPLES, 160);
    }
}
