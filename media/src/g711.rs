//! G.711 mu-law and A-law, bit-exact with the classic Sun `g711.c`
//! behaviour that telephony stacks (and CPython's `audioop`) share.
//!
//! Decoding is a 256-entry table lookup. Encoding depends only on the top
//! 14 (mu-law) or 13 (A-law) bits of a sample, so it is a lookup in a table
//! of that size. All tables are built at compile time; nothing allocates.

/// Added to the magnitude before mu-law segment search (0x84 in 16-bit units).
const ULAW_BIAS: i32 = 0x84;
/// Largest 14-bit magnitude mu-law can represent before clipping.
const ULAW_CLIP: i32 = 8159;
/// Upper end of each of the eight mu-law segments (14-bit, biased).
const ULAW_SEGMENT_END: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// Upper end of each of the eight A-law segments (13-bit magnitude).
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

const fn segment(value: i32, ends: &[i32; 8]) -> usize {
    let mut i = 0;
    while i < 8 {
        if value <= ends[i] {
            return i;
        }
        i += 1;
    }
    8
}

/// Encodes a 14-bit signed sample (a 16-bit sample shifted right by 2).
const fn encode_ulaw_14(sample14: i32) -> u8 {
    let (mut magnitude, mask) = if sample14 < 0 {
        (-sample14, 0x7F)
    } else {
        (sample14, 0xFF)
    };
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    magnitude += ULAW_BIAS >> 2;
    let seg = segment(magnitude, &ULAW_SEGMENT_END);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let code = ((seg as i32) << 4) | ((magnitude >> (seg + 1)) & 0x0F);
    (code ^ mask) as u8
}

/// Encodes a 13-bit signed sample (a 16-bit sample shifted right by 3).
const fn encode_alaw_13(sample13: i32) -> u8 {
    let (magnitude, mask) = if sample13 >= 0 {
        (sample13, 0xD5)
    } else {
        (-sample13 - 1, 0x55)
    };
    let seg = segment(magnitude, &ALAW_SEGMENT_END);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut code = (seg as i32) << 4;
    if seg < 2 {
        code |= (magnitude >> 1) & 0x0F;
    } else {
        code |= (magnitude >> seg) & 0x0F;
    }
    (code ^ mask) as u8
}

const fn decode_ulaw(code: u8) -> i16 {
    let inverted = !code as i32;
    let mut t = ((inverted & 0x0F) << 3) + ULAW_BIAS;
    t <<= (inverted & 0x70) >> 4;
    if inverted & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn decode_alaw(code: u8) -> i16 {
    let a = (code ^ 0x55) as i32;
    let mut t = (a & 0x0F) << 4;
    let seg = (a & 0x70) >> 4;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const ULAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_ulaw(i as u8);
        i += 1;
    }
    table
};

const ALAW_DECODE: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = decode_alaw(i as u8);
        i += 1;
    }
    table
};

/// Indexed by `(sample >> 2) + 8192`.
static ULAW_ENCODE: [u8; 16384] = {
    let mut table = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        table[i] = encode_ulaw_14(i as i32 - 8192);
        i += 1;
    }
    table
};

/// Indexed by `(sample >> 3) + 4096`.
static ALAW_ENCODE: [u8; 8192] = {
    let mut table = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        table[i] = encode_alaw_13(i as i32 - 4096);
        i += 1;
    }
    table
};

/// Decodes one mu-law byte to a 16-bit linear sample.
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

/// Encodes a 16-bit linear sample as mu-law.
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    ULAW_ENCODE[((sample >> 2) as i32 + 8192) as usize]
}

/// Decodes one A-law byte to a 16-bit linear sample.
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

/// Encodes a 16-bit linear sample as A-law.
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 3) as i32 + 4096) as usize]
}

/// Decodes `codes` into the front of `out`; returns how many samples were
/// written (`min(codes.len(), out.len())`).
pub fn decode_ulaw_into(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (dst, &code) in out[..n].iter_mut().zip(&codes[..n]) {
        *dst = ulaw_to_linear(code);
    }
    n
}

/// Encodes `samples` into the front of `out`; returns how many bytes were
/// written (`min(samples.len(), out.len())`).
pub fn encode_ulaw_into(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (dst, &sample) in out[..n].iter_mut().zip(&samples[..n]) {
        *dst = linear_to_ulaw(sample);
    }
    n
}

/// Decodes A-law `codes` into the front of `out`; returns the count written.
pub fn decode_alaw_into(codes: &[u8], out: &mut [i16]) -> usize {
    let n = codes.len().min(out.len());
    for (dst, &code) in out[..n].iter_mut().zip(&codes[..n]) {
        *dst = alaw_to_linear(code);
    }
    n
}

/// Encodes `samples` as A-law into the front of `out`; returns the count written.
pub fn encode_alaw_into(samples: &[i16], out: &mut [u8]) -> usize {
    let n = samples.len().min(out.len());
    for (dst, &sample) in out[..n].iter_mut().zip(&samples[..n]) {
        *dst = linear_to_alaw(sample);
    }
    n
}

/// The mu-law code for digital silence (linear 0).
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code for digital silence (linear 0 rounds to +8).
pub const ALAW_SILENCE: u8 = 0xD5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_codes_decode_to_near_zero() {
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert_eq!(linear_to_ulaw(0), ULAW_SILENCE);
        assert_eq!(alaw_to_linear(ALAW_SILENCE), 8);
        assert_eq!(linear_to_alaw(0), ALAW_SILENCE);
    }

    #[test]
    fn extremes_clip_to_the_outermost_codes() {
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(alaw_to_linear(linear_to_alaw(i16::MAX)), 32256);
        assert_eq!(alaw_to_linear(linear_to_alaw(i16::MIN)), -32256);
    }

    #[test]
    fn slice_versions_write_only_what_fits() {
        let mut pcm = [0i16; 3];
        assert_eq!(decode_ulaw_into(&[0xFF, 0x80, 0x00, 0x7F], &mut pcm), 3);
        assert_eq!(pcm, [0, 32124, -32124]);
        let mut codes = [0u8; 8];
        assert_eq!(encode_ulaw_into(&pcm, &mut codes), 3);
        assert_eq!(&codes[..3], &[0xFF, 0x80, 0x00]);
    }
}
