//! Golden tests: every G.711 code and every 16-bit sample against reference
//! tables produced by an independent implementation of the Sun `g711.c`
//! algorithm (CPython's `audioop`; see fixtures/g711/README.md).

use std::path::PathBuf;

use media::g711;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/g711")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn s16le(bytes: &[u8]) -> Vec<i16> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn all_256_ulaw_codes_decode_to_the_reference() {
    let reference = s16le(&fixture("ulaw_decode.s16le"));
    assert_eq!(reference.len(), 256);
    for code in 0..=255u8 {
        assert_eq!(
            g711::ulaw_to_linear(code),
            reference[code as usize],
            "mu-law code {code:#04x}"
        );
    }
}

#[test]
fn all_256_alaw_codes_decode_to_the_reference() {
    let reference = s16le(&fixture("alaw_decode.s16le"));
    assert_eq!(reference.len(), 256);
    for code in 0..=255u8 {
        assert_eq!(
            g711::alaw_to_linear(code),
            reference[code as usize],
            "A-law code {code:#04x}"
        );
    }
}

#[test]
fn all_65536_samples_encode_to_the_reference_ulaw_codes() {
    let reference = fixture("ulaw_encode.u8");
    assert_eq!(reference.len(), 65536);
    for (i, sample) in (i16::MIN..=i16::MAX).enumerate() {
        assert_eq!(
            g711::linear_to_ulaw(sample),
            reference[i],
            "sample {sample}"
        );
    }
}

#[test]
fn all_65536_samples_encode_to_the_reference_alaw_codes() {
    let reference = fixture("alaw_encode.u8");
    assert_eq!(reference.len(), 65536);
    for (i, sample) in (i16::MIN..=i16::MAX).enumerate() {
        assert_eq!(
            g711::linear_to_alaw(sample),
            reference[i],
            "sample {sample}"
        );
    }
}
