//! WAV files for fixtures, recordings and the simulator: PCM16 through
//! `hound`, and 8 kHz mono mu-law (format tag 7), which `hound` does not
//! support, parsed and written here.
//!
//! This is the crate's one I/O exception; nothing on the per-frame hot path
//! uses it.

use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Cursor, Read, Seek, Write};
use std::path::Path;

use crate::g711::ulaw_to_linear;
use crate::TELEPHONE_RATE_HZ;

/// `WAVE_FORMAT_PCM`.
const FORMAT_PCM: u16 = 1;
/// `WAVE_FORMAT_MULAW`.
const FORMAT_MULAW: u16 = 7;
/// `WAVE_FORMAT_EXTENSIBLE`: the real tag is the first two bytes of the
/// sub-format GUID.
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// Header bytes before the data of a mu-law file written here:
/// RIFF(12) + fmt(8 + 18) + fact(8 + 4) + data header(8).
const ULAW_HEADER_LEN: usize = 12 + 26 + 12 + 8;

/// Everything that can go wrong reading or writing a WAV file.
#[derive(Debug)]
pub enum WavError {
    /// The file could not be read or written.
    Io(io::Error),
    /// `hound` rejected the PCM data.
    Pcm(hound::Error),
    /// A well-formed WAV file in a format this function does not handle.
    Unsupported {
        /// What the function accepts.
        expected: &'static str,
        /// What the file holds.
        found: WavFormat,
    },
    /// Not a well-formed WAV file.
    Malformed(&'static str),
    /// Too much audio for one WAV file (sizes are 32-bit).
    TooLong,
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "WAV I/O error: {e}"),
            Self::Pcm(e) => write!(f, "WAV PCM error: {e}"),
            Self::Unsupported { expected, found } => {
                write!(
                    f,
                    "unsupported WAV format: expected {expected}, found {found}"
                )
            }
            Self::Malformed(why) => write!(f, "malformed WAV file: {why}"),
            Self::TooLong => f.write_str("audio too long for a WAV file"),
        }
    }
}

impl std::error::Error for WavError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Pcm(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WavError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<hound::Error> for WavError {
    fn from(e: hound::Error) -> Self {
        match e {
            hound::Error::IoError(e) => Self::Io(e),
            other => Self::Pcm(other),
        }
    }
}

/// The format fields of a WAV file's `fmt ` chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavFormat {
    /// Format tag (1 PCM, 3 float, 6 A-law, 7 mu-law; extensible resolved).
    pub format_tag: u16,
    /// Channel count.
    pub channels: u16,
    /// Sample rate in hertz.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits_per_sample: u16,
}

impl fmt::Display for WavFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.format_tag {
            FORMAT_PCM => "PCM",
            3 => "float",
            6 => "A-law",
            FORMAT_MULAW => "mu-law",
            _ => "format",
        };
        write!(
            f,
            "{name} (tag {}) {}-bit, {} channel(s), {} Hz",
            self.format_tag, self.bits_per_sample, self.channels, self.sample_rate
        )
    }
}

/// Mono 16-bit PCM and its sample rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcmAudio {
    /// Sample rate in hertz.
    pub rate_hz: u32,
    /// Mono samples.
    pub samples: Vec<i16>,
}

/// Reads a PCM16 WAV file (mono or stereo, any rate) as mono; stereo is
/// averaged. Other formats (mu-law included: see [`read_ulaw`]) are
/// [`WavError::Unsupported`].
pub fn read_pcm16(path: impl AsRef<Path>) -> Result<PcmAudio, WavError> {
    read_pcm16_from(io::BufReader::new(fs::File::open(path)?))
}

/// [`read_pcm16`] from any reader.
pub fn read_pcm16_from(reader: impl Read) -> Result<PcmAudio, WavError> {
    let bytes = read_all(reader)?;
    let format = parse(&bytes)?.format;
    read_pcm16_bytes(&bytes, format)
}

/// Reads a PCM16 or mu-law WAV file as mono PCM (mu-law is decoded), for
/// callers that accept either.
pub fn read_audio(path: impl AsRef<Path>) -> Result<PcmAudio, WavError> {
    let bytes = read_all(io::BufReader::new(fs::File::open(path)?))?;
    let wav = parse(&bytes)?;
    if wav.format.format_tag == FORMAT_MULAW {
        let codes = ulaw_data(&wav)?;
        return Ok(PcmAudio {
            rate_hz: TELEPHONE_RATE_HZ,
            samples: codes.iter().map(|&c| ulaw_to_linear(c)).collect(),
        });
    }
    read_pcm16_bytes(&bytes, wav.format)
}

/// Writes mono PCM16 at `rate_hz` to a file.
pub fn write_pcm16(path: impl AsRef<Path>, rate_hz: u32, samples: &[i16]) -> Result<(), WavError> {
    let mut file = BufWriter::new(fs::File::create(path)?);
    write_pcm16_to(&mut file, rate_hz, samples)?;
    file.flush()?;
    Ok(())
}

/// [`write_pcm16`] to any seekable writer.
pub fn write_pcm16_to(
    writer: impl Write + Seek,
    rate_hz: u32,
    samples: &[i16],
) -> Result<(), WavError> {
    let data_len = samples.len().checked_mul(2).ok_or(WavError::TooLong)?;
    if data_len > u32::MAX as usize - 44 {
        return Err(WavError::TooLong);
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate_hz,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::new(writer, spec)?;
    for &s in samples {
        wav.write_sample(s)?;
    }
    wav.finalize()?;
    Ok(())
}

/// Reads an 8 kHz mono mu-law WAV file (format tag 7) as raw mu-law bytes.
pub fn read_ulaw(path: impl AsRef<Path>) -> Result<Vec<u8>, WavError> {
    read_ulaw_from(io::BufReader::new(fs::File::open(path)?))
}

/// [`read_ulaw`] from any reader.
pub fn read_ulaw_from(reader: impl Read) -> Result<Vec<u8>, WavError> {
    let bytes = read_all(reader)?;
    let wav = parse(&bytes)?;
    ulaw_data(&wav).map(<[u8]>::to_vec)
}

/// Writes raw mu-law bytes as an 8 kHz mono mu-law WAV file (format tag 7).
pub fn write_ulaw(path: impl AsRef<Path>, codes: &[u8]) -> Result<(), WavError> {
    let mut file = BufWriter::new(fs::File::create(path)?);
    write_ulaw_to(&mut file, codes)?;
    file.flush()?;
    Ok(())
}

/// [`write_ulaw`] to any writer: RIFF/WAVE, an 18-byte `fmt ` chunk (tag 7,
/// 1 channel, 8000 Hz, 8 bits, `cbSize` 0), a `fact` chunk with the sample
/// count, and the `data` chunk (padded to an even length).
pub fn write_ulaw_to(mut writer: impl Write, codes: &[u8]) -> Result<(), WavError> {
    let data_len = u32::try_from(codes.len()).map_err(|_| WavError::TooLong)?;
    let pad = data_len % 2;
    let riff_len = (ULAW_HEADER_LEN as u32 - 8)
        .checked_add(data_len)
        .and_then(|n| n.checked_add(pad))
        .ok_or(WavError::TooLong)?;
    let mut header = [0u8; ULAW_HEADER_LEN];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        header[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&riff_len.to_le_bytes());
    put(b"WAVE");
    put(b"fmt ");
    put(&18u32.to_le_bytes());
    put(&FORMAT_MULAW.to_le_bytes());
    put(&1u16.to_le_bytes()); // channels
    put(&TELEPHONE_RATE_HZ.to_le_bytes()); // sample rate
    put(&TELEPHONE_RATE_HZ.to_le_bytes()); // byte rate: 1 byte per sample
    put(&1u16.to_le_bytes()); // block align
    put(&8u16.to_le_bytes()); // bits per sample
    put(&0u16.to_le_bytes()); // cbSize
    put(b"fact");
    put(&4u32.to_le_bytes());
    put(&data_len.to_le_bytes()); // samples per channel
    put(b"data");
    put(&data_len.to_le_bytes());
    writer.write_all(&header)?;
    writer.write_all(codes)?;
    if pad == 1 {
        writer.write_all(&[0])?;
    }
    Ok(())
}

/// A parsed WAV file: its format and where its data lies.
struct ParsedWav<'a> {
    /// The `fmt ` chunk's fields.
    format: WavFormat,
    /// The `data` chunk's contents (clamped to the file if truncated).
    data: &'a [u8],
}

/// Reads the whole file into memory (fixtures are small).
fn read_all(mut reader: impl Read) -> Result<Vec<u8>, WavError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The little-endian `u16` at `at`, if in bounds.
fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The little-endian `u32` at `at`, if in bounds.
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the RIFF chunks for `fmt ` and `data`. Unknown chunks are skipped;
/// a `data` size running past the end of the file (a recording cut short) is
/// clamped to what is there.
fn parse(bytes: &[u8]) -> Result<ParsedWav<'_>, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::Malformed("not a RIFF/WAVE file"));
    }
    let mut format = None;
    let mut at = 12;
    while let (Some(id), Some(len)) = (bytes.get(at..at + 4), u32_at(bytes, at + 4)) {
        let body_start = at + 8;
        let body_end = body_start.saturating_add(len as usize).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => format = Some(parse_fmt(body)?),
            b"data" => {
                let format = format.ok_or(WavError::Malformed("data chunk before fmt chunk"))?;
                return Ok(ParsedWav { format, data: body });
            }
            _ => {}
        }
        at = body_start
            .saturating_add(len as usize)
            .saturating_add(len as usize % 2);
    }
    Err(WavError::Malformed(if format.is_some() {
        "no data chunk"
    } else {
        "no fmt chunk"
    }))
}

/// Decodes a `fmt ` chunk body (16, 18 or 40 bytes).
fn parse_fmt(body: &[u8]) -> Result<WavFormat, WavError> {
    let field = |v: Option<u16>| v.ok_or(WavError::Malformed("fmt chunk too short"));
    let mut format_tag = field(u16_at(body, 0))?;
    let channels = field(u16_at(body, 2))?;
    let sample_rate = u32_at(body, 4).ok_or(WavError::Malformed("fmt chunk too short"))?;
    let bits_per_sample = field(u16_at(body, 14))?;
    if format_tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4), then the GUID whose first
        // two bytes are the real format tag.
        format_tag =
            u16_at(body, 24).ok_or(WavError::Malformed("extensible fmt chunk too short"))?;
    }
    Ok(WavFormat {
        format_tag,
        channels,
        sample_rate,
        bits_per_sample,
    })
}

/// The data of an 8 kHz mono mu-law file, or why it is not one.
fn ulaw_data<'a>(wav: &ParsedWav<'a>) -> Result<&'a [u8], WavError> {
    let f = wav.format;
    if f.format_tag != FORMAT_MULAW
        || f.channels != 1
        || f.sample_rate != TELEPHONE_RATE_HZ
        || f.bits_per_sample != 8
    {
        return Err(WavError::Unsupported {
            expected: "8 kHz mono 8-bit mu-law",
            found: f,
        });
    }
    Ok(wav.data)
}

/// Decodes a PCM16 file (already parsed as `format`) through `hound`.
fn read_pcm16_bytes(bytes: &[u8], format: WavFormat) -> Result<PcmAudio, WavError> {
    if format.format_tag != FORMAT_PCM
        || format.bits_per_sample != 16
        || !(1..=2).contains(&format.channels)
    {
        return Err(WavError::Unsupported {
            expected: "16-bit PCM, mono or stereo",
            found: format,
        });
    }
    let mut reader = hound::WavReader::new(Cursor::new(bytes))?;
    let rate_hz = reader.spec().sample_rate;
    let interleaved = reader.samples::<i16>().collect::<Result<Vec<i16>, _>>()?;
    let samples = if format.channels == 2 {
        interleaved
            .chunks_exact(2)
            .map(|lr| ((i32::from(lr[0]) + i32::from(lr[1])) / 2) as i16)
            .collect()
    } else {
        interleaved
    };
    Ok(PcmAudio { rate_hz, samples })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcm_bytes(spec: hound::WavSpec, samples: &[i16]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        out.into_inner()
    }

    #[test]
    fn ulaw_header_is_the_documented_layout() {
        let mut out = Vec::new();
        write_ulaw_to(&mut out, &[0xFF, 0x7F, 0x00]).unwrap();
        assert_eq!(out.len(), ULAW_HEADER_LEN + 4);
        assert_eq!(&out[0..4], b"RIFF");
        assert_eq!(u32_at(&out, 4), Some(out.len() as u32 - 8));
        assert_eq!(&out[8..16], b"WAVEfmt ");
        assert_eq!(u32_at(&out, 16), Some(18));
        assert_eq!(u16_at(&out, 20), Some(7));
        assert_eq!(u32_at(&out, 24), Some(8000));
        assert_eq!(&out[38..42], b"fact");
        assert_eq!(u32_at(&out, 46), Some(3));
        assert_eq!(&out[50..54], b"data");
        assert_eq!(u32_at(&out, 54), Some(3));
        assert_eq!(&out[58..61], &[0xFF, 0x7F, 0x00]);
        assert_eq!(read_ulaw_from(&out[..]).unwrap(), vec![0xFF, 0x7F, 0x00]);
    }

    #[test]
    fn ulaw_reader_skips_unknown_chunks_and_accepts_a_16_byte_fmt() {
        let mut f = Vec::new();
        f.extend_from_slice(b"RIFF\0\0\0\0WAVE");
        f.extend_from_slice(b"LIST\x03\0\0\0abc\0"); // odd chunk, padded
        f.extend_from_slice(b"fmt \x10\0\0\0");
        f.extend_from_slice(&[7, 0, 1, 0, 0x40, 0x1F, 0, 0, 0x40, 0x1F, 0, 0, 1, 0, 8, 0]);
        f.extend_from_slice(b"data\x02\0\0\0\x12\x34");
        assert_eq!(read_ulaw_from(&f[..]).unwrap(), vec![0x12, 0x34]);
    }

    #[test]
    fn a_truncated_data_chunk_is_clamped() {
        let mut out = Vec::new();
        write_ulaw_to(&mut out, &[1, 2, 3, 4]).unwrap();
        out.truncate(out.len() - 1);
        assert_eq!(read_ulaw_from(&out[..]).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn wrong_formats_are_reported_clearly() {
        let mut ulaw = Vec::new();
        write_ulaw_to(&mut ulaw, &[1, 2]).unwrap();
        let err = read_pcm16_from(&ulaw[..]).unwrap_err();
        assert!(matches!(
            err,
            WavError::Unsupported {
                found: WavFormat { format_tag: 7, .. },
                ..
            }
        ));
        assert!(err.to_string().contains("mu-law"), "{err}");

        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let pcm = pcm_bytes(spec, &[1, 2, 3]);
        assert!(matches!(
            read_ulaw_from(&pcm[..]),
            Err(WavError::Unsupported { .. })
        ));
        assert!(matches!(
            read_ulaw_from(&b"nonsense"[..]),
            Err(WavError::Malformed(_))
        ));
        assert!(matches!(
            read_ulaw_from(&b"RIFF\0\0\0\0WAVE"[..]),
            Err(WavError::Malformed(_))
        ));

        let eight_bit = hound::WavSpec {
            bits_per_sample: 8,
            ..spec
        };
        let mut out = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut out, eight_bit).unwrap();
        w.write_sample(5i8).unwrap();
        w.finalize().unwrap();
        assert!(matches!(
            read_pcm16_from(&out.get_ref()[..]),
            Err(WavError::Unsupported { .. })
        ));
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = pcm_bytes(spec, &[100, 300, -32768, -32768, 32767, -32768]);
        let audio = read_pcm16_from(&bytes[..]).unwrap();
        assert_eq!(audio.rate_hz, 44_100);
        assert_eq!(audio.samples, vec![200, -32768, 0]);
    }

    #[test]
    fn files_round_trip_on_disk() {
        let dir = std::env::temp_dir().join(format!("media-wav-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pcm_path = dir.join("pcm.wav");
        write_pcm16(&pcm_path, 16_000, &[0, -1, 1, i16::MIN, i16::MAX]).unwrap();
        let audio = read_pcm16(&pcm_path).unwrap();
        assert_eq!(
            audio,
            PcmAudio {
                rate_hz: 16_000,
                samples: vec![0, -1, 1, i16::MIN, i16::MAX]
            }
        );
        assert_eq!(read_audio(&pcm_path).unwrap(), audio);

        let ulaw_path = dir.join("ulaw.wav");
        write_ulaw(&ulaw_path, &[0xFF, 0x80, 0x00]).unwrap();
        assert_eq!(read_ulaw(&ulaw_path).unwrap(), vec![0xFF, 0x80, 0x00]);
        assert_eq!(
            read_audio(&ulaw_path).unwrap().samples,
            vec![0, 32124, -32124]
        );
        assert!(matches!(
            read_ulaw(dir.join("missing.wav")),
            Err(WavError::Io(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
