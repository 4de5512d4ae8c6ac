//! Switchboard's telephone audio path, kept pure: no async runtime, no I/O
//! and no allocation per frame on the hot path.
//!
//! | module | owns |
//! |---|---|
//! | [`g711`] | mu-law and A-law codecs, bit-exact with the Sun reference |

pub mod g711;

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
