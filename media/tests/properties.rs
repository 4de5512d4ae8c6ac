//! Property tests: G.711 round-trip stability, framing that never drops or
//! duplicates a sample, a playout ledger that never reports more played than
//! sent, and WAV round trips.

use std::io::Cursor;

use media::frame::{InboundFramer, OutboundChunker, SampleTime, UlawFrame};
use media::g711::{self, ULAW_SILENCE};
use media::ledger::{mark_name, EchoOutcome, PlayoutLedger};
use media::wav;
use media::FRAME_SAMPLES;
use proptest::prelude::*;

/// Splits `data` at the (sorted, clamped) `cuts`.
fn split<'a, T>(data: &'a [T], cuts: &[usize]) -> Vec<&'a [T]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (data.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(&data[start..c]);
        start = c;
    }
    pieces.push(&data[start..]);
    pieces
}

// (a) G.711 ---------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn ulaw_reencoding_is_stable(x in any::<i16>()) {
        let code = g711::linear_to_ulaw(x);
        prop_assert_eq!(g711::linear_to_ulaw(g711::ulaw_to_linear(code)), code);
    }

    #[test]
    fn alaw_reencoding_is_stable(x in any::<i16>()) {
        let code = g711::linear_to_alaw(x);
        prop_assert_eq!(g711::linear_to_alaw(g711::alaw_to_linear(code)), code);
    }

    #[test]
    fn decoded_codes_survive_a_round_trip(c in any::<u8>()) {
        let u = g711::ulaw_to_linear(c);
        prop_assert_eq!(g711::ulaw_to_linear(g711::linear_to_ulaw(u)), u);
        let a = g711::alaw_to_linear(c);
        prop_assert_eq!(g711::alaw_to_linear(g711::linear_to_alaw(a)), a);
    }
}

#[test]
fn g711_stability_holds_exhaustively() {
    for x in i16::MIN..=i16::MAX {
        let u = g711::linear_to_ulaw(x);
        assert_eq!(
            g711::linear_to_ulaw(g711::ulaw_to_linear(u)),
            u,
            "mu-law {x}"
        );
        let a = g711::linear_to_alaw(x);
        assert_eq!(
            g711::linear_to_alaw(g711::alaw_to_linear(a)),
            a,
            "A-law {x}"
        );
    }
    for c in 0..=u8::MAX {
        let u = g711::ulaw_to_linear(c);
        assert_eq!(g711::ulaw_to_linear(g711::linear_to_ulaw(u)), u);
        let a = g711::alaw_to_linear(c);
        assert_eq!(g711::alaw_to_linear(g711::linear_to_alaw(a)), a);
    }
}

// (b) framing -------------------------------------------------------------

proptest! {
    #[test]
    fn inbound_framer_keeps_every_sample(
        data in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut framer = InboundFramer::new();
        let mut frames: Vec<(SampleTime, UlawFrame)> = Vec::new();
        for piece in split(&data, &cuts) {
            framer.push(piece, |t, f| frames.push((t, *f)));
        }
        let pending = framer.pending_samples();
        prop_assert_eq!(frames.len() * FRAME_SAMPLES + pending, data.len());
        let real = framer.flush(|t, f| frames.push((t, *f)));
        prop_assert_eq!(real, pending);
        for (i, (t, _)) in frames.iter().enumerate() {
            prop_assert_eq!(*t, (i * FRAME_SAMPLES) as SampleTime);
        }
        let joined: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        prop_assert_eq!(&joined[..data.len()], &data[..]);
        prop_assert!(joined[data.len()..].iter().all(|&b| b == ULAW_SILENCE));
    }

    #[test]
    fn inbound_gaps_only_insert_silence(
        payloads in prop::collection::vec((0u64..120, 0usize..400), 0..30),
    ) {
        // Each payload claims a timestamp some ms after the previous one.
        let mut framer = InboundFramer::new();
        let mut frames: Vec<(SampleTime, UlawFrame)> = Vec::new();
        let mut expected = Vec::new();
        let mut ts = 0;
        let mut filled = 0;
        let mut marker = 0u8;
        for (advance_ms, len) in payloads {
            ts += advance_ms;
            let before = framer.now();
            let gap = framer.align(ts, |t, f| frames.push((t, *f)));
            prop_assert!(framer.now() >= before);
            if gap > 0 {
                prop_assert_eq!(framer.now(), ts * 8);
                expected.extend(std::iter::repeat_n(ULAW_SILENCE, gap as usize));
            }
            filled += gap;
            // payload bytes avoid the silence code so they can be told apart
            let payload: Vec<u8> = (0..len).map(|_| { marker = (marker + 1) % 0x7F; marker }).collect();
            framer.push(&payload, |t, f| frames.push((t, *f)));
            expected.extend_from_slice(&payload);
        }
        framer.flush(|t, f| frames.push((t, *f)));
        prop_assert_eq!(framer.stats().gap_samples, filled);
        for (i, (t, _)) in frames.iter().enumerate() {
            prop_assert_eq!(*t, (i * FRAME_SAMPLES) as SampleTime);
        }
        let joined: Vec<u8> = frames.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        prop_assert_eq!(&joined[..expected.len()], &expected[..]);
        prop_assert!(joined[expected.len()..].iter().all(|&b| b == ULAW_SILENCE));
    }

    #[test]
    fn outbound_chunker_keeps_every_sample(
        pieces in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..500).prop_map(Ok),
                prop::collection::vec(any::<i16>(), 0..500).prop_map(Err),
            ],
            0..12,
        ),
        payload_frames in 1usize..6,
        drain_every in prop::option::of(1usize..5),
    ) {
        let mut chunker = OutboundChunker::with_payload_frames(payload_frames);
        let mut out: Vec<u8> = Vec::new();
        let mut expected: Vec<u8> = Vec::new();
        let mut payloads = 0;
        for (i, piece) in pieces.iter().enumerate() {
            let mut on_payload = |p: &[UlawFrame]| {
                assert!(!p.is_empty() && p.len() <= payload_frames);
                out.extend_from_slice(p.as_flattened());
                payloads += 1;
            };
            match piece {
                Ok(codes) => {
                    chunker.push_ulaw(codes, &mut on_payload);
                    expected.extend_from_slice(codes);
                }
                Err(pcm) => {
                    chunker.push_pcm(pcm, &mut on_payload);
                    expected.extend(pcm.iter().map(|&s| g711::linear_to_ulaw(s)));
                }
            }
            if drain_every.is_some_and(|n| i % n == 0) {
                chunker.emit_complete_frames(&mut on_payload);
            }
        }
        let pending = chunker.pending_samples();
        prop_assert_eq!(out.len() + pending, expected.len());
        let real = chunker.flush(|p| out.extend_from_slice(p.as_flattened()));
        prop_assert_eq!(real, pending);
        prop_assert_eq!(out.len() % FRAME_SAMPLES, 0);
        prop_assert_eq!(out.len() - expected.len(), chunker.stats().padding_samples as usize);
        prop_assert!(out.len() - expected.len() < FRAME_SAMPLES);
        prop_assert_eq!(&out[..expected.len()], &expected[..]);
        prop_assert!(out[expected.len()..].iter().all(|&b| b == ULAW_SILENCE));
    }
}

// (c) ledger --------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// Send a chunk + mark, optionally starting a new turn.
    Sent {
        new_turn: bool,
        samples: u32,
        dt: u64,
    },
    /// Echo the pending mark at this index (modulo), or a past one.
    Echo { pick: usize, dt: u64 },
    /// Clear the current turn, with or without a time estimate.
    Clear { timed: bool, dt: u64 },
    /// An echo of garbage or of a mark never sent.
    Unknown(String),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0u32..4000, 0u64..2000)
            .prop_map(|(new_turn, samples, dt)| Op::Sent { new_turn, samples, dt }),
        4 => (any::<usize>(), 0u64..2000).prop_map(|(pick, dt)| Op::Echo { pick, dt }),
        1 => (any::<bool>(), 0u64..4000).prop_map(|(timed, dt)| Op::Clear { timed, dt }),
        1 => prop_oneof![Just("999:999".to_owned()), Just("".to_owned()), "[a-z0-9:]{0,8}"]
            .prop_map(Op::Unknown),
    ]
}

proptest! {
    #[test]
    fn ledger_never_plays_more_than_it_sent(ops in prop::collection::vec(op(), 0..200)) {
        let mut ledger = PlayoutLedger::with_capacity(64);
        let mut now: SampleTime = 0;
        let mut turn = 0u32;
        let mut seq = 0u32;
        let mut all_sent: Vec<(u32, u32)> = Vec::new();
        let mut sent_by_turn = std::collections::BTreeMap::<u32, SampleTime>::new();
        for op in ops {
            match op {
                Op::Sent { new_turn, samples, dt } => {
                    now += dt;
                    if new_turn || ledger.cleared_through().is_some_and(|c| turn <= c) {
                        turn += 1;
                        seq = 0;
                    }
                    if ledger.sent_at(turn, seq, samples, now).is_ok() {
                        all_sent.push((turn, seq));
                        *sent_by_turn.entry(turn).or_default() += SampleTime::from(samples);
                    }
                    seq += 1;
                }
                Op::Echo { pick, dt } => {
                    now += dt;
                    if !all_sent.is_empty() {
                        let (t, s) = all_sent[pick % all_sent.len()];
                        let before = ledger.queued_ahead_samples();
                        let outcome = ledger.on_echo_at(&mark_name(t, s).to_string(), now);
                        match outcome {
                            EchoOutcome::Played { samples, .. } => {
                                prop_assert_eq!(ledger.queued_ahead_samples(), before - samples);
                            }
                            _ => prop_assert_eq!(ledger.queued_ahead_samples(), before),
                        }
                    }
                }
                Op::Clear { timed, dt } => {
                    now += dt;
                    let played_before = ledger.played_samples(turn);
                    let report = if timed { ledger.clear_at(turn, now) } else { ledger.clear(turn) };
                    let sent = sent_by_turn.get(&turn).copied().unwrap_or(0);
                    prop_assert_eq!(report.played_samples + report.unplayed_samples, sent);
                    prop_assert!(report.played_samples >= played_before);
                    prop_assert_eq!(ledger.queued_ahead_samples(), 0);
                }
                Op::Unknown(name) => {
                    let before = (ledger.queued_ahead_samples(), ledger.played_samples(turn));
                    let outcome = ledger.on_echo(&name);
                    if !matches!(outcome, EchoOutcome::Played { .. }) {
                        prop_assert_eq!(before, (ledger.queued_ahead_samples(), ledger.played_samples(turn)));
                    }
                }
            }
            let mut queued_total = 0;
            for (&t, &sent) in &sent_by_turn {
                if let Some(tally) = ledger.turn(t) {
                    prop_assert_eq!(tally.sent_samples, sent);
                    prop_assert!(tally.played_samples <= tally.sent_samples,
                        "turn {t}: played {} > sent {}", tally.played_samples, tally.sent_samples);
                }
                queued_total += sent;
            }
            prop_assert!(ledger.queued_ahead_samples() <= queued_total);
        }
    }
}

// (d) WAV -----------------------------------------------------------------

proptest! {
    #[test]
    fn ulaw_wav_round_trips_bytes(codes in prop::collection::vec(any::<u8>(), 0..3000)) {
        let mut file = Vec::new();
        wav::write_ulaw_to(&mut file, &codes).unwrap();
        prop_assert_eq!(file.len() % 2, 0);
        prop_assert_eq!(wav::read_ulaw_from(&file[..]).unwrap(), codes);
    }

    #[test]
    fn pcm16_wav_round_trips_samples(
        samples in prop::collection::vec(any::<i16>(), 0..3000),
        rate in prop_oneof![Just(8_000u32), Just(16_000), Just(22_050), Just(24_000), Just(44_100), Just(48_000)],
    ) {
        let mut file = Cursor::new(Vec::new());
        wav::write_pcm16_to(&mut file, rate, &samples).unwrap();
        let audio = wav::read_pcm16_from(&file.get_ref()[..]).unwrap();
        prop_assert_eq!(audio.rate_hz, rate);
        prop_assert_eq!(audio.samples, samples);
    }
}
