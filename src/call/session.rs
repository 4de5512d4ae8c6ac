//! `CallSession`: the sans-IO conversation state machine of one call.
//!
//! It never reads a clock, spawns a task or touches a socket. The driver
//! feeds [`Input`]s with `now` (time since the call started) and drains
//! [`Output`]s: exactly shaped Twilio messages, commands for the LLM and TTS
//! providers, transcript entries to persist, hang-up and transfer requests.
//! [`CallSession::poll_timeout`] says when to call [`CallSession::tick`].
//!
//! Turn-taking: the agent speaks in turns numbered from 1 (the greeting).
//! Agent audio is paced: it is sent in messages of whole 20 ms frames, each
//! followed by a mark `{turn}:{seq}`, keeping only `queue_ahead` of audio at
//! Twilio beyond what echoed marks show as played, so a `clear` acts at once.
//! A barge-in sends `clear`, cancels the turn's provider work, and keeps in
//! the history only the text the playout ledger says the caller heard.

use std::collections::VecDeque;
use std::time::Duration;

use media::frame::SampleTime;
use media::ledger::{EchoOutcome, PlayoutLedger};
use media::path::{OutboundPath, PathError};
use media::FRAME_SAMPLES;
use serde::Serialize;

use super::config::{DtmfAction, SessionConfig};
use super::protocol;

/// Something that happened, fed to [`CallSession::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The endpointer heard the caller start speaking.
    CallerSpeechStarted,
    /// The endpointer heard the caller pause inside an utterance (it may
    /// end there): the speech-to-text may already finish the turn, before
    /// the end silence is over.
    CallerPaused,
    /// The endpointer heard the caller stop; `is_short` marks
    /// backchannel-length utterances.
    CallerSpeechEnded {
        /// Backchannel-length utterance.
        is_short: bool,
    },
    /// A transcript from STT. `end_of_turn` on a final transcript means the
    /// caller finished their turn.
    Transcript {
        /// The words.
        text: String,
        /// Final (stable) text rather than an interim guess.
        is_final: bool,
        /// The caller's turn is over.
        end_of_turn: bool,
    },
    /// Streaming LLM text for an agent turn.
    LlmText {
        /// The turn it belongs to.
        turn: u32,
        /// The new text.
        delta: String,
    },
    /// The LLM finished the turn's text.
    LlmDone {
        /// The turn.
        turn: u32,
    },
    /// The LLM asked for a tool.
    ToolCall {
        /// The turn.
        turn: u32,
        /// The call id to answer.
        id: String,
        /// `transfer_to_human`, `end_call`, `take_message`.
        name: String,
        /// JSON arguments.
        arguments: String,
    },
    /// Synthesised agent audio (8 kHz mu-law) for a turn.
    TtsAudio {
        /// The turn.
        turn: u32,
        /// Mu-law bytes, any length.
        audio: Vec<u8>,
        /// How many characters of the turn's text this audio (and all
        /// before it) speaks, when the provider knows (alignment).
        text_end: Option<usize>,
    },
    /// The TTS finished the turn's audio.
    TtsDone {
        /// The turn.
        turn: u32,
    },
    /// A provider failed the turn.
    TurnFailed {
        /// The turn.
        turn: u32,
        /// What failed, for the transcript.
        reason: String,
    },
    /// Speech-to-text failed and no fallback could transcribe the caller:
    /// the session apologises so the caller is not left in silence.
    SttFailed {
        /// What failed, for the transcript.
        reason: String,
    },
    /// A provider failed and the next one of its chain took over: the
    /// caller is still served, so nothing changes but the transcript, which
    /// notes the failure.
    ProviderFallback {
        /// What failed and what took over, for the transcript.
        reason: String,
    },
    /// Twilio echoed a mark.
    Mark {
        /// The mark's name.
        name: String,
    },
    /// The caller pressed a key.
    Dtmf {
        /// The key.
        digit: char,
    },
    /// Twilio sent `stop`.
    Stop,
    /// The websocket closed without `stop`.
    SocketClosed,
}

/// Who a transcript entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The caller.
    Caller,
    /// The agent.
    Agent,
    /// A key press.
    Dtmf,
    /// A tool the agent used.
    Tool,
    /// Something the system did (failures, transfers).
    System,
}

/// Latency of one agent turn, ms since the call started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TurnTimings {
    /// The endpointer's end of the caller's speech before this reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speech_end_ms: Option<u64>,
    /// The caller's end of turn that started this reply: the final
    /// transcript (STT final).
    pub caller_end_ms: Option<u64>,
    /// The first LLM text.
    pub llm_first_token_ms: Option<u64>,
    /// The first TTS audio.
    pub tts_first_byte_ms: Option<u64>,
    /// The first `media` message sent to Twilio.
    pub first_media_ms: Option<u64>,
}

/// A transcript entry, written as the call goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptEntry {
    /// Order within the call.
    pub seq: u32,
    /// Who.
    pub speaker: Speaker,
    /// What was said; for the agent, what the caller actually heard.
    pub text: String,
    /// An agent turn cut short.
    pub interrupted: bool,
    /// When it started, ms since the call started.
    pub start_ms: u64,
    /// When it ended.
    pub end_ms: u64,
    /// Latency of agent turns.
    pub timings: TurnTimings,
}

/// A message of the conversation history handed to the LLM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `user` or `assistant`.
    pub role: &'static str,
    /// The text (assistant text as heard).
    pub content: String,
}

/// Why the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Twilio stopped the stream (the caller hung up, or after our hang-up).
    Stopped,
    /// The socket closed without `stop`.
    SocketClosed,
    /// We hung up after a silent line.
    Silence,
    /// We hung up at the maximum duration.
    MaxDuration,
    /// The agent (or a key press) ended the call.
    AgentHangup,
    /// The call was transferred to a human.
    Transferred,
}

/// What the session wants done, drained with [`CallSession::poll_output`].
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text frame to Twilio (`media`, `mark` or `clear`).
    Twilio(String),
    /// Start an LLM reply for `turn` with this history.
    StartReply {
        /// The agent turn.
        turn: u32,
        /// The conversation so far.
        history: Vec<ChatMessage>,
    },
    /// Hand text to the TTS for `turn`; `last` ends the turn's text.
    Speak {
        /// The agent turn.
        turn: u32,
        /// The text.
        text: String,
        /// No more text follows for this turn.
        last: bool,
    },
    /// Stop all provider work of `turn` (barge-in, hang-up).
    CancelTurn {
        /// The agent turn.
        turn: u32,
    },
    /// Answer a tool call.
    ToolResult {
        /// The agent turn.
        turn: u32,
        /// The tool call's id.
        id: String,
        /// The result text.
        content: String,
    },
    /// Whether the agent is speaking (arms barge-in detection).
    AgentSpeaking(bool),
    /// Write this transcript entry now.
    Persist(TranscriptEntry),
    /// Take a message for the tenant (the `take_message` tool).
    TakeMessage {
        /// The tool's JSON arguments.
        arguments: String,
    },
    /// End the call through the Twilio REST API.
    Hangup {
        /// Why.
        reason: EndReason,
    },
    /// Transfer the call through the Twilio REST API (`<Dial>`).
    Transfer {
        /// E.164 number to dial.
        to: String,
    },
    /// The session is over; nothing more will come out of it.
    Ended {
        /// Why.
        reason: EndReason,
    },
}

/// What happens when an agent turn has been fully heard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    /// Listen to the caller.
    Listen,
    /// Hang up.
    Hangup(EndReason),
    /// Transfer to this number.
    Transfer(String),
}

/// Why the agent is speaking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Fixed text (greeting, prompts, goodbyes); no LLM.
    Fixed,
    /// An LLM reply.
    Reply,
}

/// The agent turn being produced or played.
#[derive(Debug)]
struct AgentTurn {
    /// Turn number (marks are `{id}:{seq}`).
    id: u32,
    /// Fixed text or LLM reply.
    kind: Kind,
    /// Whether a caller may interrupt it.
    interruptible: bool,
    /// All text of the turn so far.
    text: String,
    /// Characters of `text` handed to the TTS.
    tts_fed: usize,
    /// The LLM has finished (always true for fixed text).
    llm_done: bool,
    /// The TTS has finished.
    tts_done: bool,
    /// Audio received but not yet sent.
    audio: VecDeque<u8>,
    /// (audio samples received so far, characters they speak), in order.
    alignment: Vec<(u64, usize)>,
    /// Audio samples received.
    received: u64,
    /// Next mark sequence number.
    seq: u32,
    /// Samples sent to Twilio.
    sent: u64,
    /// What to do when fully heard.
    then: Then,
    /// When the turn started, ms.
    started_ms: u64,
    /// Latency.
    timings: TurnTimings,
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Talking.
    Active,
    /// Waiting for the hang-up or transfer to take effect.
    Closing,
    /// Over.
    Ended,
}

/// A sans-IO call. See the module documentation.
pub struct CallSession {
    /// Behaviour settings.
    config: SessionConfig,
    /// Twilio's stream id, named in everything we send.
    stream_sid: String,
    /// Where the call is.
    phase: Phase,
    /// The agent turn in progress, if any.
    agent: Option<AgentTurn>,
    /// Last turn number used.
    last_turn: u32,
    /// The conversation for the LLM.
    history: Vec<ChatMessage>,
    /// When the caller started speaking, while they speak.
    caller_speaking_since: Option<Duration>,
    /// When the caller's current turn started (first speech since the last
    /// caller turn), ms.
    caller_turn_started_ms: Option<u64>,
    /// When the endpointer last heard the caller stop (not a backchannel).
    speech_end_ms: Option<u64>,
    /// When the endpointer heard the caller pause in the utterance still
    /// open, ms.
    paused_ms: Option<u64>,
    /// A final transcript ended the caller's turn at a pause, before the
    /// endpointer closed the utterance: its end belongs to that turn.
    answered_at_pause: bool,
    /// When the line went quiet (agent finished or caller stopped).
    quiet_since: Duration,
    /// Whether "are you still there?" was said in the current quiet spell.
    prompted: bool,
    /// Whether the max-duration warning was given.
    warned: bool,
    /// After an interruption: the deadline for words and the cut text to
    /// offer again.
    false_interruption: Option<(Duration, String)>,
    /// What Twilio played.
    ledger: PlayoutLedger,
    /// Frames and base64 for outbound audio.
    outbound: OutboundPath,
    /// Next transcript sequence number.
    transcript_seq: u32,
    /// Pending outputs.
    outputs: VecDeque<Output>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn samples(d: Duration) -> SampleTime {
    ms(d).saturating_mul(8)
}

impl CallSession {
    /// Starts the session for a stream that just sent `start`; greets.
    pub fn new(
        config: SessionConfig,
        stream_sid: impl Into<String>,
        now: Duration,
    ) -> Result<Self, PathError> {
        let frames = config.frames_per_message.max(1);
        let outbound = OutboundPath::new(media::TELEPHONE_RATE_HZ, frames)?;
        let greeting = config.greeting.clone();
        let mut session = Self {
            config,
            stream_sid: stream_sid.into(),
            phase: Phase::Active,
            agent: None,
            last_turn: 0,
            history: Vec::new(),
            caller_speaking_since: None,
            caller_turn_started_ms: None,
            speech_end_ms: None,
            paused_ms: None,
            answered_at_pause: false,
            quiet_since: now,
            prompted: false,
            warned: false,
            false_interruption: None,
            ledger: PlayoutLedger::new(),
            outbound,
            transcript_seq: 0,
            outputs: VecDeque::new(),
        };
        session.say(&greeting, Then::Listen, true, now);
        Ok(session)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// The current agent turn number, if the agent is producing or playing one.
    pub fn agent_turn(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.id)
    }

    /// The conversation history as the LLM will see it.
    pub fn history(&self) -> &[ChatMessage] {
        &self.history
    }

    /// When [`CallSession::tick`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.phase != Phase::Active {
            return None;
        }
        let mut next = vec![self.config.max_call_duration];
        if !self.warned {
            next.push(
                self.config
                    .max_call_duration
                    .saturating_sub(self.config.max_duration_warning_before),
            );
        }
        if let Some((deadline, _)) = &self.false_interruption {
            next.push(*deadline);
        }
        if let Some(since) = self.caller_speaking_since {
            if self.agent.as_ref().is_some_and(|a| a.interruptible) {
                next.push(since + self.config.barge_in_min_speech);
            }
        }
        if self.is_quiet() {
            next.push(self.quiet_since + self.silence_limit());
        }
        next.into_iter().min()
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input, now: Duration) {
        if self.phase == Phase::Ended {
            return;
        }
        match input {
            Input::CallerSpeechStarted => {
                if self.caller_speaking_since.is_none() {
                    self.caller_speaking_since = Some(now);
                }
                self.caller_turn_started_ms.get_or_insert(ms(now));
                self.prompted = false;
                self.paused_ms = None;
                self.answered_at_pause = false;
            }
            Input::CallerPaused => {
                self.paused_ms = Some(ms(now));
            }
            Input::CallerSpeechEnded { is_short } => {
                self.caller_speaking_since = None;
                self.quiet_since = now;
                self.paused_ms = None;
                if self.answered_at_pause {
                    // The turn was already answered at the pause, and its
                    // timings start there.
                    self.answered_at_pause = false;
                } else if !is_short {
                    self.speech_end_ms = Some(ms(now));
                }
            }
            Input::SttFailed { reason } => self.on_stt_failure(&reason, now),
            Input::Transcript {
                text,
                is_final,
                end_of_turn,
            } => self.on_transcript(text, is_final, end_of_turn, now),
            Input::LlmText { turn, delta } => self.on_llm_text(turn, &delta, now),
            Input::LlmDone { turn } => {
                if let Some(agent) = self.agent_mut(turn) {
                    agent.llm_done = true;
                    self.feed_tts();
                }
            }
            Input::ToolCall {
                turn,
                id,
                name,
                arguments,
            } => self.on_tool_call(turn, id, &name, arguments, now),
            Input::TtsAudio {
                turn,
                audio,
                text_end,
            } => {
                if let Some(agent) = self.agent_mut(turn) {
                    agent.timings.tts_first_byte_ms.get_or_insert(ms(now));
                    agent.received += audio.len() as u64;
                    let spoken = text_end.unwrap_or(agent.tts_fed).min(agent.text.len());
                    agent.alignment.push((agent.received, spoken));
                    agent.audio.extend(audio);
                }
            }
            Input::TtsDone { turn } => {
                if let Some(agent) = self.agent_mut(turn) {
                    agent.tts_done = true;
                }
            }
            Input::TurnFailed { turn, reason } => self.on_failure(turn, &reason, now),
            Input::ProviderFallback { reason } => self.persist(
                Speaker::System,
                format!("provider failure: {reason}"),
                false,
                ms(now),
                ms(now),
                TurnTimings::default(),
            ),
            Input::Mark { name } => {
                // Flushed echoes (of a cleared turn) and unknown names change
                // nothing; played ones free room in Twilio's buffer.
                if let EchoOutcome::Played { .. } = self.ledger.on_echo_at(&name, samples(now)) {
                    self.pump(now);
                }
            }
            Input::Dtmf { digit } => self.on_dtmf(digit, now),
            Input::Stop => self.end(EndReason::Stopped, now),
            Input::SocketClosed => self.end(EndReason::SocketClosed, now),
        }
        self.pump(now);
        self.check_turn_complete(now);
    }

    /// Advances timers to `now`.
    pub fn tick(&mut self, now: Duration) {
        if self.phase != Phase::Active {
            return;
        }
        if now >= self.config.max_call_duration {
            self.cut_agent(now, false);
            let text = self.config.max_duration_goodbye_text.clone();
            self.say(&text, Then::Hangup(EndReason::MaxDuration), false, now);
            self.check_turn_complete(now);
            return;
        }
        if !self.warned
            && now
                >= self
                    .config
                    .max_call_duration
                    .saturating_sub(self.config.max_duration_warning_before)
            && self.agent.is_none()
            && self.caller_speaking_since.is_none()
        {
            self.warned = true;
            let text = self.config.max_duration_warning_text.clone();
            self.say(&text, Then::Listen, false, now);
        }
        if let Some(since) = self.caller_speaking_since {
            if now >= since + self.config.barge_in_min_speech
                && self.agent.as_ref().is_some_and(|a| a.interruptible)
            {
                self.interrupt(now);
            }
        }
        if let Some((deadline, _)) = &self.false_interruption {
            if now >= *deadline {
                if let Some((_, cut)) = self.false_interruption.take() {
                    if self.agent.is_none()
                        && self.caller_speaking_since.is_none()
                        && !cut.is_empty()
                    {
                        self.say(&cut, Then::Listen, true, now);
                    }
                }
            }
        }
        if self.is_quiet() && now >= self.quiet_since + self.silence_limit() {
            if self.prompted {
                let text = self.config.silence_goodbye_text.clone();
                self.say(&text, Then::Hangup(EndReason::Silence), false, now);
            } else {
                self.prompted = true;
                let text = self.config.silence_prompt_text.clone();
                self.say(&text, Then::Listen, true, now);
            }
        }
        self.pump(now);
        self.check_turn_complete(now);
    }

    fn silence_limit(&self) -> Duration {
        if self.prompted {
            self.config.silence_hangup_after
        } else {
            self.config.silence_prompt_after
        }
    }

    /// Nobody is speaking and nothing is being prepared.
    fn is_quiet(&self) -> bool {
        self.phase == Phase::Active
            && self.agent.is_none()
            && self.caller_speaking_since.is_none()
            && self.false_interruption.is_none()
    }

    fn agent_mut(&mut self, turn: u32) -> Option<&mut AgentTurn> {
        self.agent.as_mut().filter(|a| a.id == turn)
    }

    fn emit(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    fn persist(
        &mut self,
        speaker: Speaker,
        text: String,
        interrupted: bool,
        start_ms: u64,
        end_ms: u64,
        timings: TurnTimings,
    ) {
        self.transcript_seq += 1;
        let entry = TranscriptEntry {
            seq: self.transcript_seq,
            speaker,
            text,
            interrupted,
            start_ms,
            end_ms,
            timings,
        };
        self.emit(Output::Persist(entry));
    }

    fn new_turn(&mut self, kind: Kind, then: Then, interruptible: bool, now: Duration) -> u32 {
        self.last_turn += 1;
        let id = self.last_turn;
        self.agent = Some(AgentTurn {
            id,
            kind,
            interruptible,
            text: String::new(),
            tts_fed: 0,
            llm_done: kind == Kind::Fixed,
            tts_done: false,
            audio: VecDeque::new(),
            alignment: Vec::new(),
            received: 0,
            seq: 0,
            sent: 0,
            then,
            started_ms: ms(now),
            timings: TurnTimings::default(),
        });
        self.emit(Output::AgentSpeaking(true));
        id
    }

    /// Speaks fixed text as a new agent turn (the current one must be over).
    fn say(&mut self, text: &str, then: Then, interruptible: bool, now: Duration) {
        if let Some(turn) = self.agent.as_ref().map(|a| a.id) {
            // Only reached from paths that already cut the agent; be safe.
            self.emit(Output::CancelTurn { turn });
            self.agent = None;
        }
        if then != Then::Listen {
            // A goodbye or transfer notice: no new turns, timers stop.
            self.phase = Phase::Closing;
        }
        let id = self.new_turn(Kind::Fixed, then, interruptible, now);
        if let Some(agent) = self.agent.as_mut() {
            agent.text = text.to_string();
            agent.tts_fed = text.len();
        }
        self.emit(Output::Speak {
            turn: id,
            text: text.to_string(),
            last: true,
        });
    }

    fn on_transcript(&mut self, text: String, is_final: bool, end_of_turn: bool, now: Duration) {
        let text = text.trim().to_string();
        let backchannel = self.config.is_backchannel(&text);
        if !text.is_empty() && !backchannel {
            // Words: any false-interruption wait is over.
            self.false_interruption = None;
            self.prompted = false;
            if self
                .agent
                .as_ref()
                .is_some_and(|a| a.interruptible && a.sent > 0)
            {
                self.interrupt(now);
                self.false_interruption = None;
            }
        }
        if !(is_final && end_of_turn) || text.is_empty() {
            return;
        }
        if self.phase != Phase::Active {
            // Words over the goodbye: kept in the transcript, not answered.
            let start_ms = self.caller_turn_started_ms.take().unwrap_or(ms(now));
            self.persist(
                Speaker::Caller,
                text,
                false,
                start_ms,
                ms(now),
                TurnTimings::default(),
            );
            return;
        }
        let agent_playing = self.agent.as_ref().is_some_and(|a| a.sent > 0);
        if backchannel && agent_playing {
            // "mm-hm" while the agent talks: acknowledged, not a turn.
            return;
        }
        let start_ms = self.caller_turn_started_ms.take().unwrap_or(ms(now));
        self.caller_speaking_since = None;
        self.persist(
            Speaker::Caller,
            text.clone(),
            false,
            start_ms,
            ms(now),
            TurnTimings::default(),
        );
        self.history.push(ChatMessage {
            role: "user",
            content: text,
        });
        if let Some(agent) = &self.agent {
            if agent.kind == Kind::Reply && agent.sent == 0 {
                // The caller added to their turn before we spoke: start over.
                let turn = agent.id;
                self.emit(Output::CancelTurn { turn });
                self.agent = None;
            } else if agent.sent > 0 && agent.interruptible {
                self.interrupt(now);
                self.false_interruption = None;
            } else {
                // A goodbye or transfer notice is playing: let it finish.
                return;
            }
        }
        let id = self.new_turn(Kind::Reply, Then::Listen, true, now);
        // Answered at a pause, before the endpointer closed the utterance:
        // the turn's end of speech is the pause.
        let at_pause = self.paused_ms.take();
        self.answered_at_pause = at_pause.is_some();
        let speech_end_ms = at_pause.or(self.speech_end_ms.take());
        if let Some(agent) = self.agent.as_mut() {
            agent.timings.caller_end_ms = Some(ms(now));
            agent.timings.speech_end_ms = speech_end_ms;
        }
        self.emit(Output::StartReply {
            turn: id,
            history: self.history.clone(),
        });
    }

    fn on_llm_text(&mut self, turn: u32, delta: &str, now: Duration) {
        if let Some(agent) = self.agent_mut(turn) {
            agent.timings.llm_first_token_ms.get_or_insert(ms(now));
            agent.text.push_str(delta);
            self.feed_tts();
        }
    }

    /// Hands the reply's text to the TTS a clause at a time.
    fn feed_tts(&mut self) {
        let Some(agent) = self.agent.as_mut() else {
            return;
        };
        if agent.kind != Kind::Reply {
            return;
        }
        let pending = &agent.text[agent.tts_fed..];
        let cut = if agent.llm_done {
            Some(pending.len())
        } else {
            clause_boundary(pending)
        };
        let Some(cut) = cut else {
            return;
        };
        if cut == 0 && !agent.llm_done {
            return;
        }
        let text = pending[..cut].to_string();
        agent.tts_fed += cut;
        let (turn, last) = (agent.id, agent.llm_done);
        if !text.trim().is_empty() || last {
            self.emit(Output::Speak { turn, text, last });
        }
    }

    fn on_tool_call(
        &mut self,
        turn: u32,
        id: String,
        name: &str,
        arguments: String,
        now: Duration,
    ) {
        let transfer_number = self.config.transfer_number.clone();
        let Some(agent) = self.agent_mut(turn) else {
            return;
        };
        let content = match name {
            "transfer_to_human" => match transfer_number {
                Some(number) => {
                    agent.then = Then::Transfer(number);
                    "Transferring after you finish speaking.".to_string()
                }
                None => "No transfer number is configured; offer to take a message.".to_string(),
            },
            "end_call" => {
                agent.then = Then::Hangup(EndReason::AgentHangup);
                "The call will end after you finish speaking.".to_string()
            }
            "take_message" => {
                self.emit(Output::TakeMessage {
                    arguments: arguments.clone(),
                });
                "Message saved.".to_string()
            }
            other => format!("Unknown tool `{other}`."),
        };
        self.persist(
            Speaker::Tool,
            format!("{name} {arguments}"),
            false,
            ms(now),
            ms(now),
            TurnTimings::default(),
        );
        self.emit(Output::ToolResult { turn, id, content });
    }

    fn on_failure(&mut self, turn: u32, reason: &str, now: Duration) {
        let Some((has_audio, is_apology)) = self.agent.as_ref().filter(|a| a.id == turn).map(|a| {
            (
                a.sent > 0 || !a.audio.is_empty(),
                a.kind == Kind::Fixed && a.text == self.config.apology_text,
            )
        }) else {
            return;
        };
        self.persist(
            Speaker::System,
            format!("provider failure: {reason}"),
            false,
            ms(now),
            ms(now),
            TurnTimings::default(),
        );
        if has_audio {
            // Part of the answer exists: let it finish, then listen.
            if let Some(agent) = self.agent.as_mut() {
                agent.llm_done = true;
                agent.tts_done = true;
            }
            return;
        }
        self.emit(Output::CancelTurn { turn });
        self.agent = None;
        if !is_apology {
            let text = self.config.apology_text.clone();
            self.say(&text, Then::Listen, true, now);
        } else {
            self.emit(Output::AgentSpeaking(false));
        }
    }

    fn on_stt_failure(&mut self, reason: &str, now: Duration) {
        self.persist(
            Speaker::System,
            format!("provider failure: {reason}"),
            false,
            ms(now),
            ms(now),
            TurnTimings::default(),
        );
        if self.phase != Phase::Active || self.agent.is_some() {
            return;
        }
        let text = self.config.apology_text.clone();
        self.say(&text, Then::Listen, true, now);
    }

    fn on_dtmf(&mut self, digit: char, now: Duration) {
        self.persist(
            Speaker::Dtmf,
            digit.to_string(),
            false,
            ms(now),
            ms(now),
            TurnTimings::default(),
        );
        let Some(action) = self.config.dtmf.get(&digit).cloned() else {
            return;
        };
        self.cut_agent(now, false);
        match action {
            DtmfAction::Transfer => match self.config.transfer_number.clone() {
                Some(number) => {
                    let text = self.config.transfer_text.clone();
                    self.say(&text, Then::Transfer(number), false, now);
                }
                None => {
                    let text = self.config.transfer_unavailable_text.clone();
                    self.say(&text, Then::Listen, true, now);
                }
            },
            DtmfAction::Hangup => {
                let text = self.config.goodbye_text.clone();
                self.say(&text, Then::Hangup(EndReason::AgentHangup), false, now);
            }
            DtmfAction::Say(text) => self.say(&text, Then::Listen, true, now),
        }
    }

    /// Barge-in: the caller talks over an interruptible agent turn.
    fn interrupt(&mut self, now: Duration) {
        let cut = self.cut_agent(now, true);
        self.caller_speaking_since = self.caller_speaking_since.or(Some(now));
        self.false_interruption = cut
            .filter(|rest| !rest.trim().is_empty())
            .map(|rest| (now + self.config.false_interruption_window, rest));
    }

    /// Stops the current agent turn now: `clear` if audio went out, cancel
    /// provider work, record what was heard. Returns the unheard rest of the
    /// sentence that was cut (for a re-offer), if any audio was cut.
    fn cut_agent(&mut self, now: Duration, barge_in: bool) -> Option<String> {
        let agent = self.agent.take()?;
        self.emit(Output::CancelTurn { turn: agent.id });
        self.emit(Output::AgentSpeaking(false));
        self.outbound.discard();
        let heard_samples = if agent.sent > 0 {
            self.emit(Output::Twilio(protocol::clear(&self.stream_sid)));
            self.ledger.clear_at(agent.id, samples(now)).played_samples
        } else {
            0
        };
        let heard_chars = heard_text_len(&agent, heard_samples);
        let heard = agent.text[..heard_chars].trim_end().to_string();
        if agent.sent > 0 || !heard.is_empty() {
            self.persist(
                Speaker::Agent,
                heard.clone(),
                true,
                agent.started_ms,
                ms(now),
                agent.timings,
            );
        }
        if !heard.is_empty() {
            self.history.push(ChatMessage {
                role: "assistant",
                content: heard.clone(),
            });
        }
        self.quiet_since = now;
        if !barge_in || agent.sent == 0 {
            return None;
        }
        // Offer again from the start of the sentence the caller cut into.
        let sentence_start = agent.text[..heard_chars]
            .rfind(['.', '!', '?'])
            .map(|i| i + 1)
            .unwrap_or(0);
        Some(agent.text[sentence_start..].trim().to_string())
    }

    /// Sends queued agent audio while Twilio holds less than `queue_ahead`.
    fn pump(&mut self, now: Duration) {
        if self.phase == Phase::Ended {
            return;
        }
        let target = samples(self.config.queue_ahead);
        let chunk = (self.config.frames_per_message.max(1) * FRAME_SAMPLES) as u64;
        loop {
            let Some(agent) = self.agent.as_mut() else {
                return;
            };
            if self.ledger.queued_ahead_samples() >= target {
                return;
            }
            let available = agent.audio.len() as u64;
            let finishing = agent.tts_done;
            let take = if available >= chunk {
                chunk
            } else if finishing && available > 0 {
                available
            } else {
                return;
            };
            let bytes: Vec<u8> = agent.audio.drain(..take as usize).collect();
            let mut messages: Vec<(String, usize)> = Vec::new();
            self.outbound.push_ulaw(&bytes, |payload, frames| {
                messages.push((payload.to_string(), frames));
            });
            if finishing && agent.audio.is_empty() {
                self.outbound.flush(|payload, frames| {
                    messages.push((payload.to_string(), frames));
                });
            }
            for (payload, frames) in messages {
                agent.seq += 1;
                let sent = (frames * FRAME_SAMPLES) as u32;
                if self
                    .ledger
                    .sent_at(agent.id, agent.seq, sent, samples(now))
                    .is_err()
                {
                    // The ledger is full or the turn was cleared: stop
                    // sending rather than lose track of playout.
                    return;
                }
                agent.sent += u64::from(sent);
                agent.timings.first_media_ms.get_or_insert(ms(now));
                let mark = media::ledger::mark_name(agent.id, agent.seq).to_string();
                self.outputs
                    .push_back(Output::Twilio(protocol::media(&self.stream_sid, &payload)));
                self.outputs
                    .push_back(Output::Twilio(protocol::mark(&self.stream_sid, &mark)));
            }
        }
    }

    /// Finishes the agent turn once everything was produced and heard.
    fn check_turn_complete(&mut self, now: Duration) {
        let done = self.agent.as_ref().is_some_and(|a| {
            a.llm_done
                && a.tts_done
                && a.audio.is_empty()
                && self.outbound.pending_samples() == 0
                && self.ledger.queued_ahead_samples() == 0
        });
        if !done {
            return;
        }
        let Some(agent) = self.agent.take() else {
            return;
        };
        self.emit(Output::AgentSpeaking(false));
        self.persist(
            Speaker::Agent,
            agent.text.clone(),
            false,
            agent.started_ms,
            ms(now),
            agent.timings,
        );
        if !agent.text.is_empty() {
            self.history.push(ChatMessage {
                role: "assistant",
                content: agent.text.clone(),
            });
        }
        self.quiet_since = now;
        match agent.then {
            Then::Listen => {}
            Then::Hangup(reason) => {
                self.phase = Phase::Closing;
                self.emit(Output::Hangup { reason });
            }
            Then::Transfer(to) => {
                self.phase = Phase::Closing;
                self.persist(
                    Speaker::System,
                    format!("transferred to {to}"),
                    false,
                    ms(now),
                    ms(now),
                    TurnTimings::default(),
                );
                self.emit(Output::Transfer { to });
            }
        }
    }

    /// The call is over (stop, socket closed).
    fn end(&mut self, reason: EndReason, now: Duration) {
        if let Some(agent) = self.agent.take() {
            self.emit(Output::CancelTurn { turn: agent.id });
            let heard_samples = if agent.sent > 0 {
                self.ledger.clear_at(agent.id, samples(now)).played_samples
            } else {
                0
            };
            let heard = agent.text[..heard_text_len(&agent, heard_samples)]
                .trim_end()
                .to_string();
            let complete = heard.len() == agent.text.len();
            if agent.sent > 0 || !heard.is_empty() {
                self.persist(
                    Speaker::Agent,
                    heard,
                    !complete,
                    agent.started_ms,
                    ms(now),
                    agent.timings,
                );
            }
        }
        self.phase = Phase::Ended;
        self.emit(Output::Ended { reason });
    }
}

/// How many characters of the turn's text `heard` samples speak, cut back
/// to a word boundary. Interpolates within the alignment chunk that holds
/// the cut.
fn heard_text_len(agent: &AgentTurn, heard: SampleTime) -> usize {
    if heard == 0 || agent.text.is_empty() {
        return 0;
    }
    let mut previous = (0u64, 0usize);
    let mut chars = 0usize;
    for &(audio_end, text_end) in &agent.alignment {
        if heard >= audio_end {
            chars = text_end;
            previous = (audio_end, text_end);
            continue;
        }
        let span = audio_end - previous.0;
        let within = heard - previous.0;
        let extra = (text_end.saturating_sub(previous.1) as u64 * within / span.max(1)) as usize;
        chars = previous.1 + extra;
        break;
    }
    let mut chars = chars.min(agent.text.len());
    while chars > 0 && !agent.text.is_char_boundary(chars) {
        chars -= 1;
    }
    if chars == agent.text.len() {
        return chars;
    }
    // Only whole words count as heard.
    match agent.text[..chars].rfind(char::is_whitespace) {
        Some(space) if !agent.text[chars..].starts_with(char::is_whitespace) => space,
        _ => chars,
    }
}

/// The end of the first sensible place to hand text to the TTS: after a
/// sentence end, or after a clause mark once there is enough to say.
fn clause_boundary(text: &str) -> Option<usize> {
    const MIN_CLAUSE: usize = 24;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let followed_by_space = bytes.get(i + 1).is_some_and(|n| n.is_ascii_whitespace());
        if !followed_by_space {
            continue;
        }
        match b {
            b'.' | b'!' | b'?' => return Some(i + 2),
            b',' | b';' | b':' | b'-' if i + 1 >= MIN_CLAUSE => return Some(i + 2),
            _ => {}
        }
    }
    None
}

/// Internals exposed to the unit tests of this module's parent.
#[cfg(test)]
pub(super) mod tests_support {
    /// See [`super::clause_boundary`].
    pub fn clause_boundary(text: &str) -> Option<usize> {
        super::clause_boundary(text)
    }
}
