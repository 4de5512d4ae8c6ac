//! Playout ledger: how much agent audio Twilio has actually played, worked
//! out from the `{turn}:{seq}` marks it echoes (PROTOCOLS §2).
//!
//! The session sends a chunk of audio, then a mark, and records both with
//! [`PlayoutLedger::sent_at`]. Twilio plays its buffer in order and echoes a
//! mark when the audio before it has finished playing, or when a `clear`
//! flushed it. The ledger therefore knows, per turn, how much audio was sent,
//! how much was confirmed played, and how much is still queued at Twilio.
//!
//! On barge-in the session sends `clear` and calls
//! [`PlayoutLedger::clear_at`] in the same step; the returned
//! [`ClearReport::played_samples`] is what the caller heard of that turn (trim
//! the assistant's history to it), and every later echo of a mark of that
//! turn (or an older one) comes back as [`EchoOutcome::Flushed`] and changes
//! nothing.
//!
//! Bounds: at most [`DEFAULT_MAX_PENDING_MARKS`] (or the capacity given to
//! [`PlayoutLedger::with_capacity`]) marks may be awaiting their echo; one
//! more is [`LedgerError::Full`], not a panic. Per-turn tallies are kept for
//! the last [`TURN_HISTORY`] turns. Both queues are allocated at
//! construction and never grow.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use crate::frame::SampleTime;

/// Default bound on marks awaiting their echo: 256 marks of 20 ms each is
/// 5.1 s of audio queued at Twilio, far above the 200–400 ms the session
/// keeps there.
pub const DEFAULT_MAX_PENDING_MARKS: usize = 256;

/// Number of most recent turns whose tallies [`PlayoutLedger::turn`] can report.
pub const TURN_HISTORY: usize = 16;

/// A mark name, `{turn}:{seq}` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MarkName {
    /// The agent turn the audio before the mark belongs to.
    pub turn: u32,
    /// The mark's sequence number within its turn (strictly increasing).
    pub seq: u32,
}

/// The name of mark `seq` of `turn`; its `Display` is the wire form
/// `{turn}:{seq}`.
pub fn mark_name(turn: u32, seq: u32) -> MarkName {
    MarkName { turn, seq }
}

impl fmt::Display for MarkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.turn, self.seq)
    }
}

/// Why a string is not a mark name of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkNameError {
    /// No `:` between turn and sequence number.
    NoSeparator,
    /// The turn is not a `u32`.
    BadTurn,
    /// The sequence number is not a `u32`.
    BadSeq,
}

impl fmt::Display for MarkNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSeparator => "mark name has no ':' separator",
            Self::BadTurn => "mark name's turn is not a number",
            Self::BadSeq => "mark name's sequence number is not a number",
        })
    }
}

impl std::error::Error for MarkNameError {}

impl FromStr for MarkName {
    type Err = MarkNameError;

    /// Parses `{turn}:{seq}` leniently: surrounding whitespace and a leading
    /// `t`/`T` on the turn (`t3:17`) are accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (turn, seq) = s.trim().split_once(':').ok_or(MarkNameError::NoSeparator)?;
        let turn = turn.trim();
        let turn = turn
            .strip_prefix(['t', 'T'])
            .unwrap_or(turn)
            .parse()
            .map_err(|_| MarkNameError::BadTurn)?;
        let seq = seq.trim().parse().map_err(|_| MarkNameError::BadSeq)?;
        Ok(Self { turn, seq })
    }
}

/// What an echoed mark meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoOutcome {
    /// The audio before the mark finished playing.
    Played {
        /// The echoed mark.
        mark: MarkName,
        /// Samples newly confirmed played by this echo: the mark's chunk, plus
        /// the chunks of any earlier marks whose echoes were skipped (playback
        /// is in order, so they played too).
        samples: SampleTime,
    },
    /// The mark belongs to a turn that was cleared: its audio was flushed (or
    /// its echo raced the clear). Nothing changes.
    Flushed {
        /// The echoed mark.
        mark: MarkName,
    },
    /// Not a mark the ledger is waiting for. Nothing changes.
    Unknown(UnknownEcho),
}

/// Why an echo was not recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownEcho {
    /// The name does not parse as `{turn}:{seq}`.
    Malformed(MarkNameError),
    /// A well-formed name that is not pending (never sent, or echoed twice).
    NotPending(MarkName),
}

/// Why [`PlayoutLedger::sent`] refused a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// Too many marks awaiting their echo.
    Full {
        /// The ledger's bound on pending marks.
        capacity: usize,
    },
    /// The turn was already cleared: the session must start a new turn after
    /// a barge-in.
    TurnCleared {
        /// The mark refused.
        mark: MarkName,
        /// Highest turn cleared so far.
        cleared_through: u32,
    },
    /// Marks must be sent in increasing `(turn, seq)` order.
    OutOfOrder {
        /// The mark refused.
        mark: MarkName,
        /// The last mark accepted.
        last: MarkName,
    },
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { capacity } => write!(f, "playout ledger full ({capacity} marks pending)"),
            Self::TurnCleared {
                mark,
                cleared_through,
            } => write!(
                f,
                "mark {mark} belongs to a cleared turn (cleared through {cleared_through})"
            ),
            Self::OutOfOrder { mark, last } => write!(f, "mark {mark} sent after {last}"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// What a turn's audio amounted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnPlayout {
    /// The turn.
    pub turn: u32,
    /// Samples sent to Twilio for this turn (padding included).
    pub sent_samples: SampleTime,
    /// Samples confirmed played (echoed marks), plus the time-based estimate
    /// made by [`PlayoutLedger::clear_at`]. Never exceeds `sent_samples`.
    pub played_samples: SampleTime,
    /// Whether a `clear` cut this turn's audio.
    pub cleared: bool,
}

/// Returned by [`PlayoutLedger::clear`]: how much of the interrupted turn was
/// heard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearReport {
    /// Samples of the turn heard before the clear (confirmed plus estimate).
    pub played_samples: SampleTime,
    /// Samples of the turn sent but not heard: `sent - played`.
    pub unplayed_samples: SampleTime,
    /// The part of `played_samples` that is a time-based estimate (0 for
    /// [`PlayoutLedger::clear`]).
    pub estimated_samples: SampleTime,
    /// Pending marks (of any turn) flushed by the clear.
    pub flushed_marks: usize,
    /// Samples (of any turn) queued at Twilio that the clear flushed, estimate
    /// excluded.
    pub flushed_samples: SampleTime,
}

/// Counters kept by [`PlayoutLedger`] for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerStats {
    /// Marks accepted by `sent`.
    pub marks_sent: u64,
    /// Echoes that confirmed playback.
    pub played_echoes: u64,
    /// Echoes of cleared turns.
    pub flushed_echoes: u64,
    /// Echoes not recognised.
    pub unknown_echoes: u64,
    /// Clears recorded.
    pub clears: u64,
}

/// A mark awaiting its echo.
#[derive(Debug, Clone, Copy)]
struct PendingMark {
    /// Its name.
    mark: MarkName,
    /// Samples queued between the previous mark and this one.
    samples: u32,
    /// When it was sent, if the caller said.
    sent_at: Option<SampleTime>,
}

/// When playback of the first pending chunk could have started, as far as
/// echoes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastEcho {
    /// No echo since the start or the last clear: the buffer was empty.
    None,
    /// The last echo arrived at this time.
    At(SampleTime),
    /// The last echo arrived at a time nobody told us.
    Untimed,
}

/// Tracks outbound audio and Twilio marks: sent, played, flushed, queued.
#[derive(Debug, Clone)]
pub struct PlayoutLedger {
    /// Marks awaiting their echo, in send (= playback) order.
    pending: VecDeque<PendingMark>,
    /// Bound on `pending`; its capacity is reserved up front.
    capacity: usize,
    /// Tallies of the most recent turns, oldest first, at most `TURN_HISTORY`.
    turns: VecDeque<TurnPlayout>,
    /// The last mark accepted, to keep marks in order.
    last_sent: Option<MarkName>,
    /// Highest turn cleared: its echoes (and older ones) are `Flushed`.
    cleared_through: Option<u32>,
    /// Sum of `pending` samples: audio Twilio still buffers.
    queued_ahead: SampleTime,
    /// When the last echo arrived, for the `clear_at` estimate.
    last_echo: LastEcho,
    /// Metrics counters.
    stats: LedgerStats,
}

impl Default for PlayoutLedger {
    fn default() -> Self {
        Self::new()
    }
}

impl PlayoutLedger {
    /// A ledger bounded at [`DEFAULT_MAX_PENDING_MARKS`] pending marks.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MAX_PENDING_MARKS)
    }

    /// A ledger bounded at `max_pending_marks` (at least 1) pending marks.
    pub fn with_capacity(max_pending_marks: usize) -> Self {
        let capacity = max_pending_marks.max(1);
        Self {
            pending: VecDeque::with_capacity(capacity),
            capacity,
            turns: VecDeque::with_capacity(TURN_HISTORY),
            last_sent: None,
            cleared_through: None,
            queued_ahead: 0,
            last_echo: LastEcho::None,
            stats: LedgerStats::default(),
        }
    }

    /// Records that `samples` of `turn` were queued at Twilio, then mark
    /// `{turn}:{seq}` was sent. Without a time, [`clear_at`](Self::clear_at)
    /// cannot refine the cut inside this chunk; prefer [`sent_at`](Self::sent_at).
    pub fn sent(&mut self, turn: u32, seq: u32, samples: u32) -> Result<(), LedgerError> {
        self.record_sent(mark_name(turn, seq), samples, None)
    }

    /// [`sent`](Self::sent), stamped with the caller's clock `now` (in
    /// samples, the same clock passed to `on_echo_at` and `clear_at`).
    pub fn sent_at(
        &mut self,
        turn: u32,
        seq: u32,
        samples: u32,
        now: SampleTime,
    ) -> Result<(), LedgerError> {
        self.record_sent(mark_name(turn, seq), samples, Some(now))
    }

    /// Handles Twilio's echo of mark `name`. Never panics on odd input.
    pub fn on_echo(&mut self, name: &str) -> EchoOutcome {
        self.record_echo(name, LastEcho::Untimed)
    }

    /// [`on_echo`](Self::on_echo), stamped with the caller's clock `now`.
    pub fn on_echo_at(&mut self, name: &str, now: SampleTime) -> EchoOutcome {
        self.record_echo(name, LastEcho::At(now))
    }

    /// Records that `clear` was sent while `turn` was speaking, at chunk
    /// granularity: the turn's played time is what echoed marks confirmed.
    /// Every pending mark (of any turn) is flushed; their later echoes, and
    /// any echo of `turn` or an older turn, are [`EchoOutcome::Flushed`].
    pub fn clear(&mut self, turn: u32) -> ClearReport {
        self.record_clear(turn, 0)
    }

    /// [`clear`](Self::clear) refined by time: if the first pending chunk
    /// belongs to `turn`, the part of it played since it started (the later
    /// of the last echo and its `sent_at`, until `now`, capped at its size)
    /// counts as played. Needs marks recorded with `sent_at` and echoes with
    /// `on_echo_at` on the same clock; otherwise it is the same as `clear`.
    /// This is the one the session should call on barge-in.
    pub fn clear_at(&mut self, turn: u32, now: SampleTime) -> ClearReport {
        let estimate = self.playing_estimate(turn, now);
        self.record_clear(turn, estimate)
    }

    /// Samples sent but not yet echoed: what Twilio still has buffered (keep
    /// it around 200–400 ms, i.e. 1600–3200 samples).
    pub fn queued_ahead_samples(&self) -> SampleTime {
        self.queued_ahead
    }

    /// Samples of `turn` played so far (0 for a turn never sent or no longer
    /// in the last [`TURN_HISTORY`] turns).
    pub fn played_samples(&self, turn: u32) -> SampleTime {
        self.turn(turn).map_or(0, |t| t.played_samples)
    }

    /// The tally of `turn`, if it is one of the last [`TURN_HISTORY`] turns sent.
    pub fn turn(&self, turn: u32) -> Option<TurnPlayout> {
        self.turns.iter().find(|t| t.turn == turn).copied()
    }

    /// Marks awaiting their echo.
    pub fn pending_marks(&self) -> usize {
        self.pending.len()
    }

    /// Bound on pending marks.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Highest turn cleared so far.
    pub fn cleared_through(&self) -> Option<u32> {
        self.cleared_through
    }

    /// Counters for metrics.
    pub fn stats(&self) -> LedgerStats {
        self.stats
    }

    /// Shared body of `sent` and `sent_at`.
    fn record_sent(
        &mut self,
        mark: MarkName,
        samples: u32,
        sent_at: Option<SampleTime>,
    ) -> Result<(), LedgerError> {
        if let Some(cleared_through) = self.cleared_through.filter(|&c| mark.turn <= c) {
            return Err(LedgerError::TurnCleared {
                mark,
                cleared_through,
            });
        }
        if let Some(last) = self.last_sent.filter(|&last| mark <= last) {
            return Err(LedgerError::OutOfOrder { mark, last });
        }
        if self.pending.len() >= self.capacity {
            return Err(LedgerError::Full {
                capacity: self.capacity,
            });
        }
        let samples_t = SampleTime::from(samples);
        // Turns only grow, so an existing tally for this turn is the newest.
        match self.turns.back_mut() {
            Some(tally) if tally.turn == mark.turn => tally.sent_samples += samples_t,
            _ => {
                if self.turns.len() >= TURN_HISTORY {
                    self.turns.pop_front();
                }
                self.turns.push_back(TurnPlayout {
                    turn: mark.turn,
                    sent_samples: samples_t,
                    played_samples: 0,
                    cleared: false,
                });
            }
        }
        self.pending.push_back(PendingMark {
            mark,
            samples,
            sent_at,
        });
        self.queued_ahead += samples_t;
        self.last_sent = Some(mark);
        self.stats.marks_sent += 1;
        Ok(())
    }

    /// Shared body of `on_echo` and `on_echo_at`.
    fn record_echo(&mut self, name: &str, at: LastEcho) -> EchoOutcome {
        let mark = match name.parse::<MarkName>() {
            Ok(mark) => mark,
            Err(e) => {
                self.stats.unknown_echoes += 1;
                return EchoOutcome::Unknown(UnknownEcho::Malformed(e));
            }
        };
        if let Some(index) = self.pending.iter().position(|p| p.mark == mark) {
            let mut samples = 0;
            for _ in 0..=index {
                if let Some(done) = self.pending.pop_front() {
                    let s = SampleTime::from(done.samples);
                    self.queued_ahead -= s;
                    samples += s;
                    if let Some(tally) = self.tally_mut(done.mark.turn) {
                        tally.played_samples += s;
                    }
                }
            }
            self.last_echo = at;
            self.stats.played_echoes += 1;
            return EchoOutcome::Played { mark, samples };
        }
        if self.cleared_through.is_some_and(|c| mark.turn <= c) {
            self.stats.flushed_echoes += 1;
            return EchoOutcome::Flushed { mark };
        }
        self.stats.unknown_echoes += 1;
        EchoOutcome::Unknown(UnknownEcho::NotPending(mark))
    }

    /// How much of the first pending chunk has played by `now`, if it
    /// belongs to `turn` and its start time is known.
    fn playing_estimate(&self, turn: u32, now: SampleTime) -> SampleTime {
        let Some(front) = self.pending.front().filter(|p| p.mark.turn == turn) else {
            return 0;
        };
        let Some(sent_at) = front.sent_at else {
            return 0;
        };
        let started = match self.last_echo {
            LastEcho::None => sent_at,
            LastEcho::At(echo) => echo.max(sent_at),
            LastEcho::Untimed => return 0,
        };
        now.saturating_sub(started)
            .min(SampleTime::from(front.samples))
    }

    /// Shared body of `clear` and `clear_at`, crediting `estimate` to `turn`.
    fn record_clear(&mut self, turn: u32, estimate: SampleTime) -> ClearReport {
        let flushed_marks = self.pending.len();
        let flushed_samples = self.queued_ahead;
        while let Some(flushed) = self.pending.pop_front() {
            if let Some(tally) = self.tally_mut(flushed.mark.turn) {
                tally.cleared = true;
            }
        }
        self.queued_ahead = 0;
        self.last_echo = LastEcho::None;
        self.cleared_through = Some(self.cleared_through.map_or(turn, |c| c.max(turn)));
        self.stats.clears += 1;
        let mut report = ClearReport {
            flushed_marks,
            flushed_samples,
            ..ClearReport::default()
        };
        if let Some(tally) = self.tally_mut(turn) {
            // The estimate comes from a flushed chunk of this turn, so
            // played + estimate <= sent still holds.
            let estimate = estimate.min(tally.sent_samples - tally.played_samples);
            tally.played_samples += estimate;
            tally.cleared = true;
            report.played_samples = tally.played_samples;
            report.unplayed_samples = tally.sent_samples - tally.played_samples;
            report.estimated_samples = estimate;
        }
        report
    }

    /// The tally of `turn`, if still in the history.
    fn tally_mut(&mut self, turn: u32) -> Option<&mut TurnPlayout> {
        self.turns.iter_mut().find(|t| t.turn == turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_names_round_trip_and_parse_leniently() {
        assert_eq!(mark_name(3, 17).to_string(), "3:17");
        assert_eq!("3:17".parse(), Ok(mark_name(3, 17)));
        assert_eq!(" t3 : 17 ".parse(), Ok(mark_name(3, 17)));
        assert_eq!("T0:0".parse(), Ok(mark_name(0, 0)));
        assert_eq!("".parse::<MarkName>(), Err(MarkNameError::NoSeparator));
        assert_eq!("x:1".parse::<MarkName>(), Err(MarkNameError::BadTurn));
        assert_eq!("1:".parse::<MarkName>(), Err(MarkNameError::BadSeq));
        assert_eq!("1:2:3".parse::<MarkName>(), Err(MarkNameError::BadSeq));
        assert_eq!("-1:2".parse::<MarkName>(), Err(MarkNameError::BadTurn));
    }

    #[test]
    fn echoes_confirm_playback_in_order() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent(1, 0, 1600).unwrap();
        ledger.sent(1, 1, 800).unwrap();
        assert_eq!(ledger.queued_ahead_samples(), 2400);
        assert_eq!(
            ledger.on_echo("1:0"),
            EchoOutcome::Played {
                mark: mark_name(1, 0),
                samples: 1600
            }
        );
        assert_eq!(ledger.queued_ahead_samples(), 800);
        assert_eq!(ledger.played_samples(1), 1600);
        assert_eq!(
            ledger.on_echo("1:0"),
            EchoOutcome::Unknown(UnknownEcho::NotPending(mark_name(1, 0)))
        );
        assert_eq!(ledger.played_samples(1), 1600);
    }

    #[test]
    fn a_later_echo_implies_the_earlier_chunks_played() {
        let mut ledger = PlayoutLedger::new();
        for seq in 0..3 {
            ledger.sent(2, seq, 160).unwrap();
        }
        assert_eq!(
            ledger.on_echo("2:1"),
            EchoOutcome::Played {
                mark: mark_name(2, 1),
                samples: 320
            }
        );
        assert_eq!(ledger.pending_marks(), 1);
    }

    #[test]
    fn clear_reports_what_was_heard_and_flushes_the_rest() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent(1, 0, 1600).unwrap();
        ledger.sent(1, 1, 1600).unwrap();
        ledger.sent(1, 2, 1600).unwrap();
        ledger.on_echo("1:0");
        let report = ledger.clear(1);
        assert_eq!(report.played_samples, 1600);
        assert_eq!(report.unplayed_samples, 3200);
        assert_eq!(report.flushed_marks, 2);
        assert_eq!(report.flushed_samples, 3200);
        assert_eq!(ledger.queued_ahead_samples(), 0);
        assert_eq!(
            ledger.on_echo("1:1"),
            EchoOutcome::Flushed {
                mark: mark_name(1, 1)
            }
        );
        assert_eq!(
            ledger.on_echo("1:2"),
            EchoOutcome::Flushed {
                mark: mark_name(1, 2)
            }
        );
        assert_eq!(ledger.played_samples(1), 1600);
        assert!(ledger.turn(1).is_some_and(|t| t.cleared));
        assert!(matches!(
            ledger.sent(1, 3, 160),
            Err(LedgerError::TurnCleared { .. })
        ));
        ledger.sent(2, 0, 160).unwrap();
        assert_eq!(ledger.queued_ahead_samples(), 160);
    }

    #[test]
    fn clear_at_estimates_inside_the_playing_chunk() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent_at(1, 0, 1600, 0).unwrap();
        ledger.sent_at(1, 1, 1600, 10).unwrap();
        assert!(matches!(
            ledger.on_echo_at("1:0", 1700),
            EchoOutcome::Played { .. }
        ));
        // 400 samples (50 ms) into the second chunk
        let report = ledger.clear_at(1, 2100);
        assert_eq!(report.estimated_samples, 400);
        assert_eq!(report.played_samples, 2000);
        assert_eq!(report.unplayed_samples, 1200);
        assert_eq!(ledger.played_samples(1), 2000);
    }

    #[test]
    fn clear_at_caps_the_estimate_at_the_chunk() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent_at(1, 0, 800, 100).unwrap();
        let report = ledger.clear_at(1, 1_000_000);
        assert_eq!(report.estimated_samples, 800);
        assert_eq!(report.unplayed_samples, 0);
    }

    #[test]
    fn clear_at_does_not_credit_a_turn_still_behind_an_older_one() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent_at(1, 0, 800, 0).unwrap();
        ledger.sent_at(2, 0, 800, 0).unwrap();
        let report = ledger.clear_at(2, 500);
        assert_eq!(report.played_samples, 0);
        assert_eq!(report.unplayed_samples, 800);
        assert!(ledger.turn(1).is_some_and(|t| t.cleared));
        assert_eq!(
            ledger.on_echo("1:0"),
            EchoOutcome::Flushed {
                mark: mark_name(1, 0)
            }
        );
    }

    #[test]
    fn untimed_echoes_disable_the_estimate() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent_at(1, 0, 800, 0).unwrap();
        ledger.sent_at(1, 1, 800, 0).unwrap();
        ledger.on_echo("1:0");
        assert_eq!(ledger.clear_at(1, 900).estimated_samples, 0);
    }

    #[test]
    fn marks_must_go_forward() {
        let mut ledger = PlayoutLedger::new();
        ledger.sent(2, 5, 10).unwrap();
        assert!(matches!(
            ledger.sent(2, 5, 10),
            Err(LedgerError::OutOfOrder { .. })
        ));
        assert!(matches!(
            ledger.sent(1, 9, 10),
            Err(LedgerError::OutOfOrder { .. })
        ));
        ledger.sent(3, 0, 10).unwrap();
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        let mut ledger = PlayoutLedger::with_capacity(2);
        ledger.sent(1, 0, 1).unwrap();
        ledger.sent(1, 1, 1).unwrap();
        assert_eq!(ledger.sent(1, 2, 1), Err(LedgerError::Full { capacity: 2 }));
        assert_eq!(ledger.queued_ahead_samples(), 2);
    }

    #[test]
    fn odd_echoes_are_reported() {
        let mut ledger = PlayoutLedger::new();
        assert!(matches!(
            ledger.on_echo("hello"),
            EchoOutcome::Unknown(UnknownEcho::Malformed(_))
        ));
        assert!(matches!(
            ledger.on_echo("9:9"),
            EchoOutcome::Unknown(UnknownEcho::NotPending(_))
        ));
        assert_eq!(ledger.stats().unknown_echoes, 2);
    }

    #[test]
    fn only_recent_turns_are_tallied() {
        let mut ledger = PlayoutLedger::new();
        for turn in 0..(TURN_HISTORY as u32 + 2) {
            ledger.sent(turn, 0, 1).unwrap();
        }
        assert!(ledger.turn(0).is_none());
        assert!(ledger.turn(TURN_HISTORY as u32 + 1).is_some());
        // an evicted turn's echo still drains the queue
        assert!(matches!(
            ledger.on_echo("0:0"),
            EchoOutcome::Played { samples: 1, .. }
        ));
        assert_eq!(ledger.queued_ahead_samples(), TURN_HISTORY as u64 + 1);
    }

    #[test]
    fn clearing_a_turn_that_sent_nothing_reports_zero() {
        let mut ledger = PlayoutLedger::new();
        assert_eq!(ledger.clear(4), ClearReport::default());
        assert_eq!(ledger.cleared_through(), Some(4));
        assert_eq!(
            ledger.on_echo("3:1"),
            EchoOutcome::Flushed {
                mark: mark_name(3, 1)
            }
        );
    }
}
