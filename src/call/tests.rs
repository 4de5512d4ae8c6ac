//! `CallSession` behaviour under a virtual clock: a simulated Twilio (plays
//! audio in real time, echoes marks, flushes on `clear`) and scripted
//! zero-latency providers. No sockets, no real time.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::*;

/// Mu-law bytes the fake TTS produces per character (50 ms of audio:
/// about 20 characters a second, brisk speech).
const BYTES_PER_CHAR: usize = 400;
/// Simulation step.
const STEP: Duration = Duration::from_millis(10);

/// Twilio's side of the media stream.
#[derive(Default)]
struct FakeTwilio {
    /// Queued audio samples and marks, in order.
    queue: VecDeque<Queued>,
    /// Samples of agent audio actually played.
    played: u64,
    /// Every `clear` received.
    clears: usize,
    /// Marks whose echo is due (played or flushed).
    echoes: Vec<String>,
}

enum Queued {
    Audio(u64),
    Mark(String),
}

impl FakeTwilio {
    fn receive(&mut self, text: &str) {
        let v: Value = serde_json::from_str(text).expect("we send JSON");
        match v["event"].as_str() {
            Some("media") => {
                let payload = v["media"]["payload"].as_str().expect("payload");
                let bytes =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, payload)
                        .expect("base64");
                assert_eq!(bytes.len() % 160, 0, "media in 20 ms multiples");
                assert!(v["streamSid"].as_str().is_some());
                self.queue.push_back(Queued::Audio(bytes.len() as u64));
            }
            Some("mark") => {
                let name = v["mark"]["name"].as_str().expect("mark name").to_string();
                self.queue.push_back(Queued::Mark(name));
            }
            Some("clear") => {
                self.clears += 1;
                for item in self.queue.drain(..) {
                    if let Queued::Mark(name) = item {
                        self.echoes.push(name);
                    }
                }
            }
            other => panic!("off-spec message {other:?}: {text}"),
        }
    }

    /// Plays `samples` worth of audio; marks whose audio is done echo.
    fn play(&mut self, mut samples: u64) {
        loop {
            match self.queue.front_mut() {
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                        self.echoes.push(name);
                    }
                }
                Some(Queued::Audio(left)) if samples > 0 => {
                    let n = (*left).min(samples);
                    *left -= n;
                    samples -= n;
                    self.played += n;
                    if *left == 0 {
                        self.queue.pop_front();
                    }
                }
                _ => return,
            }
        }
    }

    fn queued_samples(&self) -> u64 {
        self.queue
            .iter()
            .map(|q| match q {
                Queued::Audio(n) => *n,
                Queued::Mark(_) => 0,
            })
            .sum()
    }
}

/// The session with simulated Twilio and providers around it.
struct Sim {
    session: CallSession,
    now: Duration,
    twilio: FakeTwilio,
    /// Scripted LLM replies, used in order.
    replies: VecDeque<String>,
    /// Inputs the fake providers will deliver next step.
    pending: VecDeque<Input>,
    /// Everything the session emitted.
    log: Vec<Output>,
    /// Text handed to the TTS per turn.
    tts_text: Vec<(u32, String)>,
    /// Characters of text handed to the TTS per turn so far.
    tts_chars: std::collections::BTreeMap<u32, usize>,
    /// LLM providers never answer when set (to test mid-reply states).
    llm_silent: bool,
}

impl Sim {
    fn new(config: SessionConfig) -> Self {
        let session = CallSession::new(config, "MZtest", Duration::ZERO).expect("session");
        let mut sim = Self {
            session,
            now: Duration::ZERO,
            twilio: FakeTwilio::default(),
            replies: VecDeque::new(),
            pending: VecDeque::new(),
            log: Vec::new(),
            tts_text: Vec::new(),
            tts_chars: Default::default(),
            llm_silent: false,
        };
        sim.drain();
        sim.deliver();
        sim
    }

    fn reply(mut self, text: &str) -> Self {
        self.replies.push_back(text.to_string());
        self
    }

    fn drain(&mut self) {
        while let Some(out) = self.session.poll_output() {
            match &out {
                Output::Twilio(text) => self.twilio.receive(text),
                Output::Speak { turn, text, last } => {
                    self.tts_text.push((*turn, text.clone()));
                    let fed = self.tts_chars.entry(*turn).or_default();
                    *fed += text.len();
                    self.pending.push_back(Input::TtsAudio {
                        turn: *turn,
                        audio: vec![0x7F; text.len() * BYTES_PER_CHAR],
                        text_end: Some(*fed),
                    });
                    if *last {
                        self.pending.push_back(Input::TtsDone { turn: *turn });
                    }
                }
                Output::StartReply { turn, .. } if !self.llm_silent => {
                    let text = self.replies.pop_front().unwrap_or_else(|| "Okay.".into());
                    for word in text.split_inclusive(' ') {
                        self.pending.push_back(Input::LlmText {
                            turn: *turn,
                            delta: word.to_string(),
                        });
                    }
                    self.pending.push_back(Input::LlmDone { turn: *turn });
                }
                _ => {}
            }
            self.log.push(out);
        }
    }

    fn input(&mut self, input: Input) {
        self.session.handle(input, self.now);
        self.drain();
        self.deliver();
    }

    fn deliver(&mut self) {
        while let Some(input) = self.pending.pop_front() {
            self.session.handle(input, self.now);
            self.drain();
        }
    }

    /// Runs the clock forward in 10 ms steps.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while self.now < end {
            self.now += STEP;
            self.twilio.play(80);
            for name in std::mem::take(&mut self.twilio.echoes) {
                self.session.handle(Input::Mark { name }, self.now);
                self.drain();
            }
            if self.session.poll_timeout().is_some_and(|t| t <= self.now) {
                self.session.tick(self.now);
                self.drain();
            }
            self.deliver();
        }
    }

    /// Flushes echoes of a clear right away (Twilio does so at once).
    fn echo_now(&mut self) {
        for name in std::mem::take(&mut self.twilio.echoes) {
            self.session.handle(Input::Mark { name }, self.now);
            self.drain();
        }
    }

    fn say_caller(&mut self, text: &str) {
        self.input(Input::CallerSpeechStarted);
        self.advance(Duration::from_millis(300));
        self.input(Input::CallerSpeechEnded { is_short: false });
        self.input(Input::Transcript {
            text: text.into(),
            is_final: true,
            end_of_turn: true,
        });
    }

    fn transcript(&self) -> Vec<TranscriptEntry> {
        self.log
            .iter()
            .filter_map(|o| match o {
                Output::Persist(e) => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    fn agent_lines(&self) -> Vec<(String, bool)> {
        self.transcript()
            .into_iter()
            .filter(|e| e.speaker == Speaker::Agent)
            .map(|e| (e.text, e.interrupted))
            .collect()
    }

    fn count(&self, f: impl Fn(&Output) -> bool) -> usize {
        self.log.iter().filter(|o| f(o)).count()
    }
}

fn greeting_config() -> SessionConfig {
    SessionConfig {
        greeting: "Thanks for calling Peterson Insurance, this is Ava.".into(),
        transfer_number: Some("+17145550100".into()),
        ..SessionConfig::default()
    }
}

#[test]
fn greets_on_connect_and_paces_audio_with_marks() {
    let mut sim = Sim::new(greeting_config());
    assert!(matches!(sim.log.first(), Some(Output::AgentSpeaking(true))));
    assert_eq!(
        sim.tts_text[0].1,
        "Thanks for calling Peterson Insurance, this is Ava."
    );
    // Audio went out, but never more than ~queue_ahead beyond what played.
    assert!(sim.twilio.queued_samples() > 0);
    for _ in 0..60 {
        assert!(
            sim.twilio.queued_samples() <= 2_400 + 800,
            "{} samples queued at Twilio",
            sim.twilio.queued_samples()
        );
        sim.advance(Duration::from_millis(50));
    }
    let greeting_samples = (51 * BYTES_PER_CHAR) as u64;
    assert!(
        sim.twilio.played >= greeting_samples,
        "the whole greeting played"
    );
    assert_eq!(
        sim.agent_lines(),
        vec![(
            "Thanks for calling Peterson Insurance, this is Ava.".to_string(),
            false
        )]
    );
    assert!(matches!(
        sim.log
            .iter()
            .rev()
            .find(|o| matches!(o, Output::AgentSpeaking(_))),
        Some(Output::AgentSpeaking(false))
    ));
    // Marks are named {turn}:{seq}.
    let marks: Vec<String> = sim
        .log
        .iter()
        .filter_map(|o| match o {
            Output::Twilio(t) if t.contains("\"mark\"") => serde_json::from_str::<Value>(t)
                .ok()
                .and_then(|v| v["mark"]["name"].as_str().map(str::to_string)),
            _ => None,
        })
        .collect();
    assert_eq!(marks.first().map(String::as_str), Some("1:1"));
    assert!(marks.iter().all(|m| m.starts_with("1:")));
}

#[test]
fn a_normal_turn_streams_the_reply_and_records_both_sides() {
    let mut sim = Sim::new(greeting_config())
        .reply("Sure, I can help with your auto policy. What is your policy number?");
    sim.advance(Duration::from_secs(3));
    sim.say_caller("Hi, I have a question about my auto policy.");
    // The reply's text reached the TTS clause by clause, not only at the end.
    let turn2: Vec<&String> = sim
        .tts_text
        .iter()
        .filter(|(t, _)| *t == 2)
        .map(|(_, s)| s)
        .collect();
    assert!(
        turn2.len() >= 2,
        "clauses handed over as they stream: {turn2:?}"
    );
    sim.advance(Duration::from_secs(4));
    let lines = sim.transcript();
    let speakers: Vec<Speaker> = lines.iter().map(|e| e.speaker).collect();
    assert_eq!(
        speakers,
        vec![Speaker::Agent, Speaker::Caller, Speaker::Agent]
    );
    assert_eq!(
        lines[2].text,
        "Sure, I can help with your auto policy. What is your policy number?"
    );
    assert!(!lines[2].interrupted);
    let t = lines[2].timings;
    assert!(
        t.caller_end_ms.is_some() && t.llm_first_token_ms.is_some() && t.first_media_ms.is_some()
    );
    assert_eq!(
        sim.session
            .history()
            .iter()
            .map(|m| m.role)
            .collect::<Vec<_>>(),
        vec!["assistant", "user", "assistant"]
    );
    // Sequence numbers are consecutive, in the order things happened.
    assert_eq!(
        lines.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn a_turn_answered_at_a_pause_times_from_the_pause_and_resumed_speech_barges_in() {
    let mut sim =
        Sim::new(greeting_config()).reply("Yes, rentals are covered while yours is repaired.");
    sim.advance(Duration::from_secs(3));
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(2_000));
    sim.input(Input::CallerPaused);
    sim.advance(Duration::from_millis(150));
    // The speech-to-text finished the turn at the pause.
    sim.input(Input::Transcript {
        text: "Does my policy cover a rental car?".into(),
        is_final: true,
        end_of_turn: true,
    });
    sim.advance(Duration::from_millis(400));
    // The endpointer closes the utterance afterwards: same turn, no new
    // end of speech for a later one.
    sim.input(Input::CallerSpeechEnded { is_short: false });
    sim.advance(Duration::from_secs(5));
    let lines = sim.transcript();
    let reply = lines
        .iter()
        .find(|e| e.speaker == Speaker::Agent && e.seq > 1)
        .expect("a reply");
    let t = reply.timings;
    assert_eq!(
        t.speech_end_ms,
        Some(5_000),
        "the pause, not the later close"
    );
    assert_eq!(t.caller_end_ms, Some(5_150));
    sim.say_caller("And what about towing?");
    sim.advance(Duration::from_secs(5));
    let lines = sim.transcript();
    let second = lines
        .iter()
        .filter(|e| e.speaker == Speaker::Agent)
        .nth(2)
        .expect("a second reply");
    assert!(
        second.timings.speech_end_ms > Some(10_000),
        "the next turn has its own end of speech: {:?}",
        second.timings
    );

    // Answered at a pause, then the caller goes on: their speech barges in.
    let mut sim = Sim::new(greeting_config())
        .reply("Let me check that for you, one moment please, I am looking it up now.");
    sim.advance(Duration::from_secs(3));
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(1_000));
    sim.input(Input::CallerPaused);
    sim.input(Input::Transcript {
        text: "Is towing covered?".into(),
        is_final: true,
        end_of_turn: true,
    });
    sim.advance(Duration::from_millis(500));
    sim.input(Input::CallerSpeechStarted); // the endpointer's Resumed
    sim.advance(Duration::from_millis(1_000));
    assert!(
        sim.twilio.clears >= 1,
        "resumed speech interrupts the early answer"
    );
}

#[test]
fn barge_in_clears_cancels_and_keeps_only_what_was_heard() {
    let long = "Your policy covers collision and comprehensive damage. It also includes roadside assistance and a rental car for up to thirty days while your car is repaired.";
    let mut sim = Sim::new(greeting_config()).reply(long);
    sim.advance(Duration::from_secs(3));
    sim.say_caller("What does my policy cover?");
    let played_before_reply = sim.twilio.played;
    sim.advance(Duration::from_millis(1_500));
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(600));
    sim.echo_now();
    assert_eq!(sim.twilio.clears, 1, "one clear");
    assert!(
        sim.count(|o| matches!(o, Output::CancelTurn { turn: 2 })) >= 1,
        "LLM and TTS work cancelled"
    );
    assert_eq!(
        sim.twilio.queued_samples(),
        0,
        "nothing of the cut turn left at Twilio"
    );
    let (heard, interrupted) = sim.agent_lines().last().cloned().expect("agent line");
    assert!(interrupted);
    assert!(
        long.starts_with(&heard) && heard.len() < long.len(),
        "heard {heard:?}"
    );
    // What was kept matches the audio the caller heard (50 ms a character),
    // cut back to a whole word.
    let played_chars = ((sim.twilio.played - played_before_reply) / BYTES_PER_CHAR as u64) as usize;
    assert!(
        heard.len() <= played_chars + 1 && heard.len() + 16 >= played_chars,
        "{} chars kept, {played_chars} played: {heard:?}",
        heard.len()
    );
    assert_eq!(
        sim.session.history().last().map(|m| m.content.clone()),
        Some(heard.clone())
    );
    // Nothing of the cancelled turn reaches Twilio afterwards, even if the
    // providers still deliver it.
    let sent_before = sim.count(|o| matches!(o, Output::Twilio(_)));
    sim.input(Input::TtsAudio {
        turn: 2,
        audio: vec![0x7F; 4_000],
        text_end: None,
    });
    sim.input(Input::LlmText {
        turn: 2,
        delta: "late words".into(),
    });
    assert_eq!(sim.count(|o| matches!(o, Output::Twilio(_))), sent_before);
}

#[test]
fn a_backchannel_does_not_interrupt() {
    let long = "Let me walk you through the claims process. First you report the claim, then an adjuster contacts you within two business days.";
    let mut sim = Sim::new(greeting_config()).reply(long);
    sim.advance(Duration::from_secs(3));
    sim.say_caller("How do claims work?");
    sim.advance(Duration::from_millis(800));
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(250));
    sim.input(Input::Transcript {
        text: "mm-hm".into(),
        is_final: false,
        end_of_turn: false,
    });
    sim.input(Input::CallerSpeechEnded { is_short: true });
    sim.input(Input::Transcript {
        text: "Mm-hm.".into(),
        is_final: true,
        end_of_turn: true,
    });
    sim.advance(Duration::from_secs(2));
    sim.input(Input::Transcript {
        text: "okay".into(),
        is_final: true,
        end_of_turn: true,
    });
    sim.advance(Duration::from_secs(5));
    assert_eq!(sim.twilio.clears, 0);
    assert_eq!(sim.agent_lines().last(), Some(&(long.to_string(), false)));
    assert!(
        sim.transcript().iter().all(|e| e.text != "Mm-hm."),
        "a backchannel is not a turn"
    );
}

#[test]
fn a_false_interruption_offers_the_cut_sentence_again() {
    let long =
        "Your deductible is five hundred dollars. The premium is due on the first of every month.";
    let mut sim = Sim::new(greeting_config()).reply(long);
    sim.advance(Duration::from_secs(3));
    sim.say_caller("Remind me of my deductible?");
    sim.advance(Duration::from_millis(1_000));
    // A cough: speech long enough to interrupt, but no words follow.
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(550));
    sim.input(Input::CallerSpeechEnded { is_short: true });
    assert_eq!(sim.twilio.clears, 1);
    let cut = sim.agent_lines().last().cloned().expect("cut line");
    assert!(cut.1);
    sim.advance(Duration::from_millis(2_000));
    let resumed: Vec<&(u32, String)> = sim.tts_text.iter().filter(|(t, _)| *t == 3).collect();
    assert_eq!(
        resumed.len(),
        1,
        "turn 3 re-offers the cut sentence: {:?}",
        sim.tts_text
    );
    assert!(long.ends_with(resumed[0].1.as_str()), "{:?}", resumed[0].1);
    assert!(resumed[0].1.starts_with("Your deductible") || resumed[0].1.starts_with("The premium"));
}

#[test]
fn words_after_an_interruption_are_a_real_turn_not_a_false_one() {
    let mut sim = Sim::new(greeting_config())
        .reply(
            "We are open from nine to five on weekdays, and on Saturday mornings by appointment.",
        )
        .reply("Yes, you can book online.");
    sim.advance(Duration::from_secs(3));
    sim.say_caller("When are you open?");
    sim.advance(Duration::from_millis(900));
    sim.input(Input::CallerSpeechStarted);
    sim.input(Input::Transcript {
        text: "can I book".into(),
        is_final: false,
        end_of_turn: false,
    });
    assert_eq!(
        sim.twilio.clears, 1,
        "a non-backchannel interim interrupts at once"
    );
    sim.advance(Duration::from_millis(400));
    sim.input(Input::CallerSpeechEnded { is_short: false });
    sim.input(Input::Transcript {
        text: "Can I book online?".into(),
        is_final: true,
        end_of_turn: true,
    });
    sim.advance(Duration::from_secs(3));
    let lines = sim.agent_lines();
    assert_eq!(
        lines.last().map(|l| l.0.as_str()),
        Some("Yes, you can book online.")
    );
    assert!(
        sim.tts_text.iter().all(|(t, _)| *t != 4),
        "no re-offer after real words"
    );
}

#[test]
fn silence_prompts_then_hangs_up() {
    let mut sim = Sim::new(greeting_config());
    sim.advance(Duration::from_secs(3));
    sim.advance(Duration::from_secs(9));
    assert!(sim
        .tts_text
        .iter()
        .any(|(_, t)| t == "Are you still there?"));
    sim.advance(Duration::from_secs(14));
    assert!(sim
        .tts_text
        .iter()
        .any(|(_, t)| t.starts_with("I haven't heard anything")));
    assert!(sim.log.iter().any(|o| matches!(
        o,
        Output::Hangup {
            reason: EndReason::Silence
        }
    )));
    // The goodbye played in full before the hang-up was asked for.
    let hangup_at = sim
        .log
        .iter()
        .position(|o| matches!(o, Output::Hangup { .. }))
        .expect("hangup");
    let goodbye_done = sim
        .log
        .iter()
        .position(|o| matches!(o, Output::Persist(e) if e.text.starts_with("I haven't heard")))
        .expect("goodbye recorded");
    assert!(goodbye_done < hangup_at);
}

#[test]
fn caller_speech_resets_the_silence_timer() {
    let mut sim = Sim::new(greeting_config()).reply("Sure.");
    sim.advance(Duration::from_secs(7));
    sim.say_caller("Hello?");
    sim.advance(Duration::from_secs(7));
    assert!(!sim
        .tts_text
        .iter()
        .any(|(_, t)| t == "Are you still there?"));
}

#[test]
fn max_duration_warns_then_ends_the_call() {
    let config = SessionConfig {
        max_call_duration: Duration::from_secs(30),
        max_duration_warning_before: Duration::from_secs(10),
        silence_prompt_after: Duration::from_secs(60),
        ..greeting_config()
    };
    let mut sim = Sim::new(config);
    sim.advance(Duration::from_secs(21));
    assert!(sim
        .tts_text
        .iter()
        .any(|(_, t)| t.contains("about a minute left")));
    sim.advance(Duration::from_secs(15));
    assert!(sim.tts_text.iter().any(|(_, t)| t.contains("time limit")));
    assert!(sim.log.iter().any(|o| matches!(
        o,
        Output::Hangup {
            reason: EndReason::MaxDuration
        }
    )));
}

#[test]
fn dtmf_zero_transfers_to_the_tenant_number() {
    let mut sim = Sim::new(greeting_config());
    sim.advance(Duration::from_millis(500));
    sim.input(Input::Dtmf { digit: '0' });
    assert_eq!(sim.twilio.clears, 1, "the greeting is cut at once");
    sim.echo_now();
    sim.advance(Duration::from_secs(4));
    assert!(sim
        .tts_text
        .iter()
        .any(|(_, t)| t.starts_with("Let me connect you")));
    assert!(sim
        .log
        .iter()
        .any(|o| matches!(o, Output::Transfer { to } if to == "+17145550100")));
    assert!(sim
        .transcript()
        .iter()
        .any(|e| e.speaker == Speaker::Dtmf && e.text == "0"));
}

#[test]
fn dtmf_transfer_without_a_number_explains_and_keeps_listening() {
    let config = SessionConfig {
        transfer_number: None,
        ..greeting_config()
    };
    let mut sim = Sim::new(config);
    sim.advance(Duration::from_secs(3));
    sim.input(Input::Dtmf { digit: '0' });
    sim.advance(Duration::from_secs(6));
    assert!(sim
        .tts_text
        .iter()
        .any(|(_, t)| t.contains("can't transfer")));
    assert!(!sim
        .log
        .iter()
        .any(|o| matches!(o, Output::Transfer { .. } | Output::Hangup { .. })));
}

#[test]
fn marks_echoed_after_a_clear_count_as_flushed() {
    let long = "This is a long answer that will be cut off part of the way through by the caller speaking.";
    let mut sim = Sim::new(greeting_config()).reply(long);
    sim.advance(Duration::from_secs(3));
    sim.say_caller("Tell me everything.");
    sim.advance(Duration::from_millis(700));
    sim.input(Input::CallerSpeechStarted);
    sim.advance(Duration::from_millis(500));
    let heard_before = sim.agent_lines().last().cloned().expect("cut");
    // Twilio echoes every pending mark after the clear, and some late ones.
    sim.echo_now();
    for name in ["2:1", "2:2", "2:3", "2:99", "garbage", ""] {
        sim.input(Input::Mark { name: name.into() });
    }
    assert_eq!(
        sim.agent_lines().last().cloned(),
        Some(heard_before),
        "flushed echoes change nothing"
    );
    assert_eq!(
        sim.count(
            |o| matches!(o, Output::Twilio(t) if t.contains("\"media\"") && t.contains("2:"))
        ),
        0
    );
}

#[test]
fn stop_mid_turn_ends_cleanly_and_records_the_heard_part() {
    let long = "Here is a detailed explanation of every option available to you on your current plan and the costs of each.";
    let mut sim = Sim::new(greeting_config()).reply(long);
    sim.advance(Duration::from_secs(3));
    sim.say_caller("What are my options?");
    sim.advance(Duration::from_millis(800));
    sim.input(Input::Stop);
    assert!(sim.session.is_ended());
    assert!(sim.log.iter().any(|o| matches!(
        o,
        Output::Ended {
            reason: EndReason::Stopped
        }
    )));
    let (heard, interrupted) = sim
        .agent_lines()
        .last()
        .cloned()
        .expect("partial agent line");
    assert!(interrupted && long.starts_with(&heard) && !heard.is_empty());
    // Nothing comes out after the end.
    let n = sim.log.len();
    sim.input(Input::Dtmf { digit: '0' });
    sim.advance(Duration::from_secs(20));
    assert_eq!(sim.log.len(), n);
}

#[test]
fn stop_before_anything_is_said_still_ends() {
    let mut sim = Sim::new(greeting_config());
    sim.input(Input::SocketClosed);
    assert!(sim.log.iter().any(|o| matches!(
        o,
        Output::Ended {
            reason: EndReason::SocketClosed
        }
    )));
    assert_eq!(sim.session.poll_timeout(), None);
}

#[test]
fn a_provider_failure_before_audio_is_answered_with_an_apology() {
    let mut sim = Sim::new(greeting_config());
    sim.advance(Duration::from_secs(3));
    sim.llm_silent = true;
    sim.say_caller("Can you check my claim?");
    sim.input(Input::TurnFailed {
        turn: 2,
        reason: "llm: 503".into(),
    });
    sim.advance(Duration::from_secs(8));
    assert!(sim
        .tts_text
        .iter()
        .any(|(t, s)| *t == 3 && s.starts_with("I'm sorry, I'm having trouble")));
    assert!(sim
        .transcript()
        .iter()
        .any(|e| e.speaker == Speaker::System && e.text.contains("llm: 503")));
}

#[test]
fn a_provider_fallback_is_noted_in_the_transcript_and_the_turn_goes_on() {
    let mut sim = Sim::new(greeting_config());
    sim.advance(Duration::from_secs(3));
    sim.llm_silent = true;
    sim.say_caller("Can you check my claim?");
    sim.input(Input::ProviderFallback {
        reason: "tts-a: 503; tts-b takes over".into(),
    });
    sim.input(Input::LlmText {
        turn: 2,
        delta: "Let me look.".into(),
    });
    sim.input(Input::LlmDone { turn: 2 });
    sim.advance(Duration::from_secs(3));
    assert!(sim
        .transcript()
        .iter()
        .any(|e| e.speaker == Speaker::System && e.text.contains("tts-b takes over")));
    assert!(sim
        .tts_text
        .iter()
        .all(|(_, s)| !s.starts_with("I'm sorry")));
    assert!(sim
        .transcript()
        .iter()
        .any(|e| e.speaker == Speaker::Agent && e.text == "Let me look."));
}

#[test]
fn tool_calls_end_or_transfer_after_the_words_are_heard() {
    let mut sim = Sim::new(greeting_config());
    sim.advance(Duration::from_secs(3));
    sim.llm_silent = true;
    sim.say_caller("Please end the call.");
    sim.input(Input::LlmText {
        turn: 2,
        delta: "Of course, goodbye!".into(),
    });
    sim.input(Input::ToolCall {
        turn: 2,
        id: "call_1".into(),
        name: "end_call".into(),
        arguments: "{}".into(),
    });
    sim.input(Input::LlmDone { turn: 2 });
    assert!(sim
        .log
        .iter()
        .any(|o| matches!(o, Output::ToolResult { id, .. } if id == "call_1")));
    assert!(
        !sim.log.iter().any(|o| matches!(o, Output::Hangup { .. })),
        "not before the words play"
    );
    sim.advance(Duration::from_secs(2));
    assert!(sim.log.iter().any(|o| matches!(
        o,
        Output::Hangup {
            reason: EndReason::AgentHangup
        }
    )));
}

#[test]
fn clause_boundaries_are_sensible() {
    assert_eq!(
        super::session::tests_support::clause_boundary("Hello. More"),
        Some(7)
    );
    assert_eq!(
        super::session::tests_support::clause_boundary("Hi, there"),
        None
    );
    assert_eq!(
        super::session::tests_support::clause_boundary(
            "Well, if you want the long version, here it is"
        ),
        Some(36)
    );
    assert_eq!(
        super::session::tests_support::clause_boundary("3.5 percent"),
        None
    );
}
