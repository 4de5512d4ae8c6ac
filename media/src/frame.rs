//! Stream time and 20 ms framing: re-frames Twilio's inbound mu-law payloads
//! (any length, with lost packets filled by silence) into stamped 160-byte
//! frames, and chunks agent audio into 160-byte frames for Twilio.
//!
//! Both framers own one fixed buffer allocated at construction; pushing audio
//! never allocates. Frames are handed to a callback as `&[u8; 160]` borrowed
//! either from that buffer or, when the input is frame-aligned, straight from
//! the input slice.

use crate::g711::{encode_ulaw_into, ULAW_SILENCE};
use crate::FRAME_SAMPLES;

/// Samples at 8 kHz since the stream started: the sample-accurate stream time
/// used across the crate (1 ms = 8 samples, one 20 ms frame = 160 samples).
pub type SampleTime = u64;

/// Samples per millisecond at the telephone rate.
pub const SAMPLES_PER_MS: u64 = 8;

/// One 20 ms frame of 8 kHz mu-law: exactly [`FRAME_SAMPLES`] bytes.
pub type UlawFrame = [u8; FRAME_SAMPLES];

/// A frame of mu-law silence.
pub const SILENCE_FRAME: UlawFrame = [ULAW_SILENCE; FRAME_SAMPLES];

/// Largest timestamp jump [`InboundFramer::align`] fills with silence (60 s).
/// A timestamp further ahead is treated as malformed and ignored, so one bad
/// value cannot make the framer emit an unbounded run of frames.
pub const MAX_GAP_FILL_MS: u64 = 60_000;

/// [`FRAME_SAMPLES`] as a [`SampleTime`] span.
const FRAME_SPAN: SampleTime = FRAME_SAMPLES as SampleTime;

/// Converts milliseconds to samples at 8 kHz (saturating).
pub const fn ms_to_samples(ms: u64) -> SampleTime {
    ms.saturating_mul(SAMPLES_PER_MS)
}

/// Converts samples at 8 kHz to whole milliseconds (rounding down).
pub const fn samples_to_ms(samples: SampleTime) -> u64 {
    samples / SAMPLES_PER_MS
}

/// Counters kept by [`InboundFramer`] for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Frames emitted, silence-filled ones included.
    pub frames: u64,
    /// Mu-law samples received from Twilio (payload bytes).
    pub received_samples: u64,
    /// Gaps (timestamp at least 20 ms ahead of stream time) filled with silence.
    pub gaps: u64,
    /// Silence samples inserted to fill those gaps.
    pub gap_samples: u64,
    /// Timestamps that disagreed with stream time by less than a frame, or
    /// were behind it (jitter, overlap): ignored, time never rewinds.
    pub jittered_timestamps: u64,
    /// Timestamps more than [`MAX_GAP_FILL_MS`] ahead: ignored as malformed.
    pub implausible_timestamps: u64,
}

/// Re-frames Twilio's inbound mu-law payloads of any length into 20 ms frames
/// of exactly 160 bytes, each stamped with the [`SampleTime`] of its first
/// sample.
///
/// Feed every `media` event to [`push_at`](Self::push_at) with its
/// `media.timestamp` (or to [`push`](Self::push) if it has none): a payload
/// whose timestamp is a frame or more ahead of stream time means packets were
/// lost, and the gap is filled with mu-law silence so that stream time stays
/// aligned with wall time. Smaller differences and timestamps behind stream
/// time are ignored; stream time never goes backwards and no received sample
/// is ever dropped.
#[derive(Debug, Clone)]
pub struct InboundFramer {
    /// The frame being assembled; only `buf[..fill]` is meaningful.
    buf: UlawFrame,
    /// How many samples of `buf` are filled.
    fill: usize,
    /// Stream time of `buf[0]`, i.e. of the next frame to be emitted.
    frame_start: SampleTime,
    /// Metrics counters.
    stats: InboundStats,
}

impl Default for InboundFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl InboundFramer {
    /// A framer at stream time 0 with nothing buffered.
    pub const fn new() -> Self {
        Self {
            buf: SILENCE_FRAME,
            fill: 0,
            frame_start: 0,
            stats: InboundStats {
                frames: 0,
                received_samples: 0,
                gaps: 0,
                gap_samples: 0,
                jittered_timestamps: 0,
                implausible_timestamps: 0,
            },
        }
    }

    /// Stream time of the next sample to arrive (emitted plus buffered samples).
    pub fn now(&self) -> SampleTime {
        self.frame_start + self.fill as SampleTime
    }

    /// Samples buffered towards the next frame (always below 160).
    pub fn pending_samples(&self) -> usize {
        self.fill
    }

    /// Counters for metrics.
    pub fn stats(&self) -> InboundStats {
        self.stats
    }

    /// Appends a payload with no timestamp; calls `on_frame` for every frame
    /// completed, in order.
    pub fn push(&mut self, codes: &[u8], mut on_frame: impl FnMut(SampleTime, &UlawFrame)) {
        self.stats.received_samples += codes.len() as u64;
        let mut rest = codes;
        if self.fill > 0 {
            let take = (FRAME_SAMPLES - self.fill).min(rest.len());
            self.buf[self.fill..self.fill + take].copy_from_slice(&rest[..take]);
            self.fill += take;
            rest = &rest[take..];
            if self.fill < FRAME_SAMPLES {
                return;
            }
            self.emit_buffer(&mut on_frame);
        }
        let mut whole = rest.chunks_exact(FRAME_SAMPLES);
        for chunk in &mut whole {
            if let Ok(frame) = <&UlawFrame>::try_from(chunk) {
                self.emit(frame, &mut on_frame);
            }
        }
        let tail = whole.remainder();
        self.buf[..tail.len()].copy_from_slice(tail);
        self.fill = tail.len();
    }

    /// Aligns stream time to a payload's Twilio `media.timestamp` (ms since
    /// stream start), then appends the payload.
    pub fn push_at(
        &mut self,
        timestamp_ms: u64,
        codes: &[u8],
        mut on_frame: impl FnMut(SampleTime, &UlawFrame),
    ) {
        self.align(timestamp_ms, &mut on_frame);
        self.push(codes, on_frame);
    }

    /// Reports that the next payload starts at `timestamp_ms` (Twilio's
    /// `media.timestamp`). If that is at least one frame (20 ms) ahead of
    /// [`now`](Self::now), the gap is filled with mu-law silence (frames go to
    /// `on_frame`) and counted; otherwise the timestamp is ignored. Returns
    /// the number of silence samples inserted.
    pub fn align(
        &mut self,
        timestamp_ms: u64,
        on_frame: impl FnMut(SampleTime, &UlawFrame),
    ) -> u64 {
        let target = ms_to_samples(timestamp_ms);
        let now = self.now();
        if target < now.saturating_add(FRAME_SPAN) {
            if target != now {
                self.stats.jittered_timestamps += 1;
            }
            return 0;
        }
        let gap = target - now;
        if gap > ms_to_samples(MAX_GAP_FILL_MS) {
            self.stats.implausible_timestamps += 1;
            return 0;
        }
        self.stats.gaps += 1;
        self.stats.gap_samples += gap;
        self.fill_silence(gap, on_frame);
        gap
    }

    /// Emits the partial frame, padded with mu-law silence (end of stream).
    /// Returns how many real samples it held (0: nothing was emitted).
    /// Stream time advances by the whole frame, padding included.
    pub fn flush(&mut self, mut on_frame: impl FnMut(SampleTime, &UlawFrame)) -> usize {
        let real = self.fill;
        if real > 0 {
            self.buf[real..].fill(ULAW_SILENCE);
            self.fill = FRAME_SAMPLES;
            self.emit_buffer(&mut on_frame);
        }
        real
    }

    /// Inserts `count` silence samples, emitting the frames they complete.
    fn fill_silence(&mut self, count: u64, mut on_frame: impl FnMut(SampleTime, &UlawFrame)) {
        let mut left = count;
        if self.fill > 0 {
            let take = ((FRAME_SAMPLES - self.fill) as u64).min(left) as usize;
            self.buf[self.fill..self.fill + take].fill(ULAW_SILENCE);
            self.fill += take;
            left -= take as u64;
            if self.fill < FRAME_SAMPLES {
                return;
            }
            self.emit_buffer(&mut on_frame);
        }
        while left >= FRAME_SPAN {
            self.emit(&SILENCE_FRAME, &mut on_frame);
            left -= FRAME_SPAN;
        }
        let tail = left as usize;
        self.buf[..tail].fill(ULAW_SILENCE);
        self.fill = tail;
    }

    /// Emits the (full) internal buffer and empties it.
    fn emit_buffer(&mut self, on_frame: &mut impl FnMut(SampleTime, &UlawFrame)) {
        on_frame(self.frame_start, &self.buf);
        self.frame_start += FRAME_SPAN;
        self.stats.frames += 1;
        self.fill = 0;
    }

    /// Emits a frame that does not live in the internal buffer.
    fn emit(&mut self, frame: &UlawFrame, on_frame: &mut impl FnMut(SampleTime, &UlawFrame)) {
        on_frame(self.frame_start, frame);
        self.frame_start += FRAME_SPAN;
        self.stats.frames += 1;
    }
}

/// Counters kept by [`OutboundChunker`] for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboundStats {
    /// Real samples accepted (mu-law bytes or PCM samples).
    pub samples_in: u64,
    /// Frames emitted, padded ones included.
    pub frames_out: u64,
    /// Silence samples added by [`OutboundChunker::flush`] to complete frames.
    pub padding_samples: u64,
    /// Samples dropped by [`OutboundChunker::discard`] (barge-in).
    pub discarded_samples: u64,
}

/// Turns agent audio (8 kHz mu-law bytes or 8 kHz PCM of any length) into
/// 20 ms mu-law frames for Twilio.
///
/// Frames are handed out in payloads of `payload_frames` frames (default 1):
/// the callback receives `&[UlawFrame]`, a contiguous run of whole frames, so
/// `payload.as_flattened()` is the byte payload to base64 and send. A payload
/// is emitted as soon as it is full; [`flush`](Self::flush) emits what is
/// left, padding the last frame with [`ULAW_SILENCE`], and
/// [`emit_complete_frames`](Self::emit_complete_frames) emits the whole
/// frames buffered so far without padding. Every sample pushed comes out
/// exactly once, in order.
#[derive(Debug, Clone)]
pub struct OutboundChunker {
    /// The payload being assembled, allocated once; as bytes, only
    /// `frames.as_flattened()[..fill]` is meaningful.
    frames: Box<[UlawFrame]>,
    /// Samples filled in `frames`, counted across frame boundaries.
    fill: usize,
    /// Metrics counters.
    stats: OutboundStats,
}

impl Default for OutboundChunker {
    fn default() -> Self {
        Self::new()
    }
}

impl OutboundChunker {
    /// A chunker emitting one 160-byte frame per payload.
    pub fn new() -> Self {
        Self::with_payload_frames(1)
    }

    /// A chunker emitting `payload_frames` frames (at least 1) per payload.
    pub fn with_payload_frames(payload_frames: usize) -> Self {
        Self {
            frames: vec![SILENCE_FRAME; payload_frames.max(1)].into_boxed_slice(),
            fill: 0,
            stats: OutboundStats::default(),
        }
    }

    /// Frames per full payload.
    pub fn payload_frames(&self) -> usize {
        self.frames.len()
    }

    /// Samples buffered and not yet emitted.
    pub fn pending_samples(&self) -> usize {
        self.fill
    }

    /// Counters for metrics.
    pub fn stats(&self) -> OutboundStats {
        self.stats
    }

    /// Appends 8 kHz mu-law bytes; calls `on_payload` for each full payload.
    pub fn push_ulaw(&mut self, codes: &[u8], on_payload: impl FnMut(&[UlawFrame])) {
        self.push_with(codes, |src, dst| dst.copy_from_slice(src), on_payload);
    }

    /// Appends 8 kHz PCM (encoded to mu-law here); calls `on_payload` for
    /// each full payload.
    pub fn push_pcm(&mut self, samples: &[i16], on_payload: impl FnMut(&[UlawFrame])) {
        self.push_with(
            samples,
            |src, dst| {
                encode_ulaw_into(src, dst);
            },
            on_payload,
        );
    }

    /// Emits every whole frame buffered so far as one payload (if any),
    /// keeping the partial frame for later. Returns the frames emitted.
    pub fn emit_complete_frames(&mut self, mut on_payload: impl FnMut(&[UlawFrame])) -> usize {
        let whole = self.fill / FRAME_SAMPLES;
        if whole == 0 {
            return 0;
        }
        on_payload(&self.frames[..whole]);
        self.stats.frames_out += whole as u64;
        let done = whole * FRAME_SAMPLES;
        let rest = self.fill - done;
        self.frames
            .as_flattened_mut()
            .copy_within(done..done + rest, 0);
        self.fill = rest;
        whole
    }

    /// Emits everything buffered as one payload, the last frame padded with
    /// [`ULAW_SILENCE`] (end of a turn). Returns how many real samples it
    /// held; the padding is `frames * 160 - real`. Returns 0 and emits
    /// nothing if nothing was buffered.
    pub fn flush(&mut self, mut on_payload: impl FnMut(&[UlawFrame])) -> usize {
        let real = self.fill;
        if real == 0 {
            return 0;
        }
        let frames = real.div_ceil(FRAME_SAMPLES);
        let padded = frames * FRAME_SAMPLES;
        self.frames.as_flattened_mut()[real..padded].fill(ULAW_SILENCE);
        on_payload(&self.frames[..frames]);
        self.stats.frames_out += frames as u64;
        self.stats.padding_samples += (padded - real) as u64;
        self.fill = 0;
        real
    }

    /// Drops whatever is buffered without emitting it (barge-in: the rest of
    /// a cancelled turn must not leak into the next). Returns the samples
    /// dropped.
    pub fn discard(&mut self) -> usize {
        let dropped = self.fill;
        self.stats.discarded_samples += dropped as u64;
        self.fill = 0;
        dropped
    }

    /// Copies `src` into the payload buffer with `write` (same-length source
    /// and destination slices), emitting each payload as it fills.
    fn push_with<T>(
        &mut self,
        src: &[T],
        write: impl Fn(&[T], &mut [u8]),
        mut on_payload: impl FnMut(&[UlawFrame]),
    ) {
        self.stats.samples_in += src.len() as u64;
        let capacity = self.frames.len() * FRAME_SAMPLES;
        let mut rest = src;
        while !rest.is_empty() {
            let take = (capacity - self.fill).min(rest.len());
            write(
                &rest[..take],
                &mut self.frames.as_flattened_mut()[self.fill..self.fill + take],
            );
            self.fill += take;
            rest = &rest[take..];
            if self.fill == capacity {
                on_payload(&self.frames);
                self.stats.frames_out += self.frames.len() as u64;
                self.fill = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::g711::linear_to_ulaw;

    fn collect_inbound(
        framer: &mut InboundFramer,
        payloads: &[&[u8]],
    ) -> Vec<(SampleTime, Vec<u8>)> {
        let mut out = Vec::new();
        for p in payloads {
            framer.push(p, |t, f| out.push((t, f.to_vec())));
        }
        out
    }

    #[test]
    fn time_helpers_convert_at_eight_samples_per_ms() {
        assert_eq!(ms_to_samples(20), 160);
        assert_eq!(samples_to_ms(160), 20);
        assert_eq!(samples_to_ms(167), 20);
        assert_eq!(ms_to_samples(u64::MAX), u64::MAX);
    }

    #[test]
    fn odd_sized_payloads_become_stamped_160_byte_frames() {
        let input: Vec<u8> = (0..500u32).map(|i| (i % 251) as u8).collect();
        let mut framer = InboundFramer::new();
        let frames = collect_inbound(&mut framer, &[&input[..7], &input[7..300], &input[300..]]);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![0, 160, 320]
        );
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.1.clone()).collect();
        assert_eq!(&joined[..], &input[..480]);
        assert_eq!(framer.pending_samples(), 20);
        assert_eq!(framer.now(), 500);
        let mut tail = Vec::new();
        assert_eq!(framer.flush(|t, f| tail.push((t, f.to_vec()))), 20);
        assert_eq!(tail[0].0, 480);
        assert_eq!(&tail[0].1[..20], &input[480..]);
        assert!(tail[0].1[20..].iter().all(|&b| b == ULAW_SILENCE));
        assert_eq!(framer.flush(|_, _| panic!("nothing left")), 0);
    }

    #[test]
    fn a_timestamp_gap_is_filled_with_silence() {
        let mut framer = InboundFramer::new();
        let mut frames = Vec::new();
        framer.push_at(0, &[1; 160], |t, f| frames.push((t, f.to_vec())));
        // packets for 20..60 ms lost; next payload says 60 ms
        framer.push_at(60, &[2; 160], |t, f| frames.push((t, f.to_vec())));
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[1], (160, SILENCE_FRAME.to_vec()));
        assert_eq!(frames[2], (320, SILENCE_FRAME.to_vec()));
        assert_eq!(frames[3], (480, vec![2; 160]));
        let stats = framer.stats();
        assert_eq!((stats.gaps, stats.gap_samples), (1, 320));
        assert_eq!(stats.received_samples, 320);
    }

    #[test]
    fn a_gap_mid_frame_fills_exactly_to_the_timestamp() {
        let mut framer = InboundFramer::new();
        let mut frames = Vec::new();
        framer.push_at(0, &[1; 100], |t, f| frames.push((t, f.to_vec())));
        assert_eq!(framer.align(40, |t, f| frames.push((t, f.to_vec()))), 220);
        assert_eq!(framer.now(), 320);
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].1[..100], &[1; 100][..]);
        assert!(frames[0].1[100..].iter().all(|&b| b == ULAW_SILENCE));
        assert_eq!(frames[1], (160, SILENCE_FRAME.to_vec()));
    }

    #[test]
    fn jitter_and_overlap_never_move_time() {
        let mut framer = InboundFramer::new();
        framer.push_at(0, &[1; 160], |_, _| {});
        assert_eq!(framer.align(39, |_, _| panic!("no fill under a frame")), 0);
        assert_eq!(framer.align(5, |_, _| panic!("never rewinds")), 0);
        assert_eq!(framer.align(20, |_, _| panic!("on time")), 0);
        assert_eq!(framer.now(), 160);
        assert_eq!(framer.stats().jittered_timestamps, 2);
        assert_eq!(framer.stats().gaps, 0);
    }

    #[test]
    fn an_absurd_timestamp_is_ignored() {
        let mut framer = InboundFramer::new();
        assert_eq!(framer.align(u64::MAX, |_, _| panic!("bounded")), 0);
        assert_eq!(
            framer.align(MAX_GAP_FILL_MS + 1, |_, _| panic!("bounded")),
            0
        );
        assert_eq!(framer.stats().implausible_timestamps, 2);
        let mut count = 0;
        assert_eq!(
            framer.align(MAX_GAP_FILL_MS, |_, _| count += 1),
            ms_to_samples(MAX_GAP_FILL_MS)
        );
        assert_eq!(count, 3000);
    }

    #[test]
    fn chunker_emits_exact_frames_and_pads_the_tail() {
        let mut chunker = OutboundChunker::new();
        let mut out = Vec::new();
        chunker.push_ulaw(&[7; 100], |p| out.extend_from_slice(p));
        chunker.push_ulaw(&[8; 100], |p| out.extend_from_slice(p));
        assert_eq!(out.len(), 1);
        assert_eq!(chunker.pending_samples(), 40);
        assert_eq!(chunker.flush(|p| out.extend_from_slice(p)), 40);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[1][..40], &[8; 40][..]);
        assert!(out[1][40..].iter().all(|&b| b == ULAW_SILENCE));
        assert_eq!(chunker.stats().padding_samples, 120);
        assert_eq!(chunker.flush(|_| panic!("empty")), 0);
    }

    #[test]
    fn chunker_encodes_pcm() {
        let pcm: Vec<i16> = (0..160).map(|i| (i * 200 - 16_000) as i16).collect();
        let mut chunker = OutboundChunker::new();
        let mut got = Vec::new();
        chunker.push_pcm(&pcm, |p| got.extend_from_slice(p.as_flattened()));
        let want: Vec<u8> = pcm.iter().map(|&s| linear_to_ulaw(s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn chunker_batches_frames_into_one_payload() {
        let mut chunker = OutboundChunker::with_payload_frames(5);
        let mut sizes = Vec::new();
        chunker.push_ulaw(&[1; 1000], |p| sizes.push(p.len()));
        assert_eq!(sizes, vec![5]);
        assert_eq!(chunker.emit_complete_frames(|p| sizes.push(p.len())), 1);
        assert_eq!(chunker.pending_samples(), 40);
        assert_eq!(chunker.flush(|p| sizes.push(p.len())), 40);
        assert_eq!(sizes, vec![5, 1, 1]);
        assert_eq!(OutboundChunker::with_payload_frames(0).payload_frames(), 1);
    }

    #[test]
    fn discard_drops_the_partial_frame() {
        let mut chunker = OutboundChunker::new();
        chunker.push_ulaw(&[3; 50], |_| panic!("not full"));
        assert_eq!(chunker.discard(), 50);
        assert_eq!(chunker.flush(|_| panic!("dropped")), 0);
        assert_eq!(chunker.stats().discarded_samples, 50);
    }
}
