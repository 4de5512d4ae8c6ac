//! The fault policy of [`super::pipeline`], with scripted role providers on
//! tokio's paused clock: budgets and fallbacks are checked without waiting.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::pipeline::{Budgets, Chains, PipelineCall};
use super::roles::*;
use super::{CallProviders, CallSetup, ProviderEvent};
use crate::call::{ChatMessage, Input};
use crate::db::CustomerId;
use crate::metrics::Metrics;

/// What a scripted LLM does with one request.
#[derive(Clone)]
enum Reply {
    Text(&'static str),
    Tool(&'static str),
    Fail(ProviderError),
    Slow(Duration, &'static str),
}

struct ScriptedLlm {
    name: &'static str,
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<LlmRequest>>,
}

impl ScriptedLlm {
    fn new(name: &'static str, replies: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            name,
            replies: Mutex::new(replies.into()),
            requests: Mutex::new(Vec::new()),
        })
    }
}

impl LanguageModel for ScriptedLlm {
    fn name(&self) -> &'static str {
        self.name
    }

    fn stream(&self, request: LlmRequest) -> BoxFuture<'static, Result<LlmStream, ProviderError>> {
        self.requests.lock().expect("lock").push(request);
        let reply = self
            .replies
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or(Reply::Text("default"));
        Box::pin(async move {
            let events: Vec<Result<LlmEvent, ProviderError>> = match reply {
                Reply::Fail(error) => return Err(error),
                Reply::Slow(delay, text) => {
                    tokio::time::sleep(delay).await;
                    vec![
                        Ok(LlmEvent::Text(text.into())),
                        Ok(LlmEvent::Done {
                            finish_reason: "stop".into(),
                        }),
                    ]
                }
                Reply::Text(text) => vec![
                    Ok(LlmEvent::Text(text.into())),
                    Ok(LlmEvent::Usage(TokenUsage {
                        prompt: 10,
                        completion: 3,
                    })),
                    Ok(LlmEvent::Done {
                        finish_reason: "stop".into(),
                    }),
                ],
                Reply::Tool(name) => vec![
                    Ok(LlmEvent::ToolCall(ToolCall {
                        id: "call_1".into(),
                        name: name.into(),
                        arguments: "{}".into(),
                    })),
                    Ok(LlmEvent::Done {
                        finish_reason: "tool_calls".into(),
                    }),
                ],
            };
            let stream: LlmStream = Box::pin(stream::iter(events));
            Ok(stream)
        })
    }
}

/// A TTS that answers every text with `bytes_per_char` bytes of audio, or
/// fails / stays silent as told.
struct ScriptedTts {
    name: &'static str,
    mode: TtsMode,
    seen: Arc<Mutex<Vec<TtsInput>>>,
}

#[derive(Clone, Copy)]
enum TtsMode {
    Speak,
    Fail,
    Silent,
}

impl TextToSpeech for ScriptedTts {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(
        &self,
        _voice: Voice,
        mut input: mpsc::Receiver<TtsInput>,
        events: mpsc::Sender<TtsEvent>,
    ) -> BoxFuture<'static, ()> {
        let (mode, name, seen) = (self.mode, self.name, self.seen.clone());
        Box::pin(async move {
            let mut chars = 0usize;
            while let Some(message) = input.recv().await {
                seen.lock().expect("lock").push(message.clone());
                let TtsInput::Text { turn, text, last } = message else {
                    continue;
                };
                match mode {
                    TtsMode::Silent => {}
                    TtsMode::Fail => {
                        let error = ProviderError::Server {
                            provider: name,
                            status: 500,
                            message: "boom".into(),
                        };
                        let _ = events.send(TtsEvent::Failed { turn, error }).await;
                    }
                    TtsMode::Speak => {
                        chars += text.len();
                        let _ = events
                            .send(TtsEvent::Audio {
                                turn,
                                audio: vec![0x7f; text.len() * 8],
                                text_end: Some(chars),
                            })
                            .await;
                        if last {
                            let _ = events
                                .send(TtsEvent::Done {
                                    turn,
                                    characters: chars,
                                })
                                .await;
                        }
                    }
                }
            }
        })
    }
}

/// An STT that fails at once, or transcribes each utterance as
/// "words N" where N counts the frames it received.
struct ScriptedStt {
    name: &'static str,
    fail: bool,
}

impl SpeechToText for ScriptedStt {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(
        &self,
        mut input: mpsc::Receiver<SttInput>,
        events: mpsc::Sender<SttEvent>,
    ) -> BoxFuture<'static, ()> {
        let (fail, name) = (self.fail, self.name);
        Box::pin(async move {
            let mut frames = 0;
            while let Some(message) = input.recv().await {
                match message {
                    SttInput::Audio { .. } => frames += 1,
                    SttInput::Paused { .. } => {}
                    SttInput::UtteranceEnded { is_short, .. } => {
                        let event = if fail {
                            SttEvent::Failed(ProviderError::Network {
                                provider: name,
                                message: "socket dropped".into(),
                            })
                        } else {
                            SttEvent::Final {
                                text: format!("{name} heard {frames} frames"),
                                end_of_turn: !is_short,
                            }
                        };
                        frames = 0;
                        let _ = events.send(event).await;
                    }
                }
            }
        })
    }
}

fn setup() -> CallSetup {
    CallSetup::basic(CustomerId(uuid::Uuid::nil()), "CAtest")
}

fn new_call(chains: Chains) -> (PipelineCall, mpsc::Receiver<ProviderEvent>, Arc<Metrics>) {
    let (tx, rx) = mpsc::channel(256);
    let metrics = Arc::new(Metrics::new());
    let call = PipelineCall::start(
        chains,
        setup(),
        Budgets::default(),
        metrics.clone(),
        "One moment. ".into(),
        tx,
    );
    (call, rx, metrics)
}

fn history() -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user",
        content: "hello".into(),
    }]
}

/// Session inputs until `stop` matches one (inclusive), or the clock runs
/// 30 s without one.
async fn until(
    rx: &mut mpsc::Receiver<ProviderEvent>,
    stop: impl Fn(&Input) -> bool,
) -> Vec<Input> {
    let mut seen = Vec::new();
    while let Ok(Some(ProviderEvent::Session(input))) =
        tokio::time::timeout(Duration::from_secs(30), rx.recv()).await
    {
        let done = stop(&input);
        seen.push(input);
        if done {
            break;
        }
    }
    seen
}

fn server_error(provider: &'static str) -> ProviderError {
    ProviderError::Server {
        provider,
        status: 503,
        message: "overloaded".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_model_is_retried_once_then_the_next_one_answers() {
    let first = ScriptedLlm::new(
        "first",
        vec![
            Reply::Fail(server_error("first")),
            Reply::Fail(server_error("first")),
        ],
    );
    let second = ScriptedLlm::new("second", vec![Reply::Text("Hello from second.")]);
    let (mut call, mut rx, metrics) = new_call(Chains {
        llm: vec![first.clone(), second.clone()],
        ..Default::default()
    });
    call.start_reply(2, history(), CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::LlmDone { .. })).await;
    assert!(inputs.contains(&Input::LlmText {
        turn: 2,
        delta: "Hello from second.".into()
    }));
    assert_eq!(first.requests.lock().expect("lock").len(), 2);
    assert_eq!(second.requests.lock().expect("lock").len(), 1);
    assert_eq!(metrics.failures_of("first"), 2);
    // The system prompt leads the conversation.
    let request = second.requests.lock().expect("lock")[0].clone();
    assert!(matches!(request.messages[0], LlmMessage::System(_)));
    assert_eq!(request.messages[1], LlmMessage::User("hello".into()));
    assert_eq!(call.usage().llm_prompt_tokens, 10);
}

#[tokio::test(start_paused = true)]
async fn credentials_refused_move_on_without_a_retry_and_all_failing_fails_the_turn() {
    let refused = ProviderError::Unauthorized {
        provider: "first",
        message: "bad key".into(),
    };
    let first = ScriptedLlm::new("first", vec![Reply::Fail(refused)]);
    let second = ScriptedLlm::new(
        "second",
        vec![
            Reply::Fail(server_error("second")),
            Reply::Fail(server_error("second")),
        ],
    );
    let (mut call, mut rx, _) = new_call(Chains {
        llm: vec![first.clone(), second],
        ..Default::default()
    });
    call.start_reply(2, history(), CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::TurnFailed { .. })).await;
    assert!(matches!(
        inputs.last(),
        Some(Input::TurnFailed { turn: 2, .. })
    ));
    assert_eq!(first.requests.lock().expect("lock").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_model_gets_a_filler_then_times_out_to_the_next() {
    let slow = ScriptedLlm::new("slow", vec![Reply::Slow(Duration::from_secs(10), "late")]);
    let fast = ScriptedLlm::new("fast", vec![Reply::Text("Here you go.")]);
    let (mut call, mut rx, metrics) = new_call(Chains {
        llm: vec![slow, fast],
        ..Default::default()
    });
    call.start_reply(2, history(), CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::LlmDone { .. })).await;
    let texts: Vec<_> = inputs
        .iter()
        .filter_map(|i| match i {
            Input::LlmText { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["One moment. ", "Here you go."]);
    assert!(metrics.render().contains("kind=\"timeout\""));
}

#[tokio::test(start_paused = true)]
async fn tool_calls_go_to_the_session_and_their_results_back_to_the_model() {
    let llm = ScriptedLlm::new(
        "llm",
        vec![
            Reply::Tool("take_message"),
            Reply::Text("Your message is saved."),
        ],
    );
    let (mut call, mut rx, _) = new_call(Chains {
        llm: vec![llm.clone()],
        ..Default::default()
    });
    call.start_reply(3, history(), CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::ToolCall { .. })).await;
    assert!(
        matches!(inputs.last(), Some(Input::ToolCall { turn: 3, name, .. }) if name == "take_message")
    );
    call.tool_result(3, "call_1".into(), "Message saved.".into());
    let inputs = until(&mut rx, |i| matches!(i, Input::LlmDone { .. })).await;
    assert!(inputs.contains(&Input::LlmText {
        turn: 3,
        delta: "Your message is saved.".into()
    }));
    let requests = llm.requests.lock().expect("lock");
    assert_eq!(requests.len(), 2);
    let follow_up = &requests[1].messages;
    assert!(
        matches!(&follow_up[follow_up.len() - 2], LlmMessage::Assistant { tool_calls, .. } if tool_calls.len() == 1)
    );
    assert_eq!(
        follow_up.last(),
        Some(&LlmMessage::Tool {
            id: "call_1".into(),
            content: "Message saved.".into()
        })
    );
}

fn tts(name: &'static str, mode: TtsMode) -> (Arc<dyn TextToSpeech>, Arc<Mutex<Vec<TtsInput>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (
        Arc::new(ScriptedTts {
            name,
            mode,
            seen: seen.clone(),
        }),
        seen,
    )
}

#[tokio::test(start_paused = true)]
async fn a_failed_or_silent_synthesiser_hands_the_whole_turn_to_the_next() {
    for mode in [TtsMode::Fail, TtsMode::Silent] {
        let (broken, _) = tts("broken", mode);
        let (backup, backup_seen) = tts("backup", TtsMode::Speak);
        let (mut call, mut rx, metrics) = new_call(Chains {
            tts: vec![broken, backup],
            ..Default::default()
        });
        let cancel = CancellationToken::new();
        call.speak(2, "Hello there. ".into(), false, cancel.clone());
        call.speak(2, "How can I help?".into(), true, cancel);
        let inputs = until(&mut rx, |i| matches!(i, Input::TtsDone { .. })).await;
        let audio: usize = inputs
            .iter()
            .map(|i| match i {
                Input::TtsAudio { audio, .. } => audio.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(audio, "Hello there. How can I help?".len() * 8);
        assert_eq!(
            backup_seen.lock().expect("lock")[0],
            TtsInput::Text {
                turn: 2,
                text: "Hello there. How can I help?".into(),
                last: true
            }
        );
        assert_eq!(metrics.failures_of("broken"), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn when_every_synthesiser_fails_the_turn_fails_and_cancelled_turns_stay_quiet() {
    let (broken, _) = tts("broken", TtsMode::Fail);
    let (mut call, mut rx, _) = new_call(Chains {
        tts: vec![broken],
        ..Default::default()
    });
    call.speak(2, "Hello.".into(), true, CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::TurnFailed { .. })).await;
    assert!(matches!(
        inputs.last(),
        Some(Input::TurnFailed { turn: 2, .. })
    ));

    let (speaker, seen) = tts("speaker", TtsMode::Speak);
    let (mut call, mut rx, _) = new_call(Chains {
        tts: vec![speaker],
        ..Default::default()
    });
    let cancel = CancellationToken::new();
    cancel.cancel();
    call.speak(4, "Never heard.".into(), true, cancel);
    call.speak(5, "Heard.".into(), true, CancellationToken::new());
    let inputs = until(&mut rx, |i| matches!(i, Input::TtsDone { turn: 5 })).await;
    assert!(inputs.iter().all(|i| !matches!(
        i,
        Input::TtsAudio { turn: 4, .. } | Input::TtsDone { turn: 4 }
    )));
    // An already-cancelled turn never reaches the synthesiser; one
    // cancelled mid-way is cancelled there too.
    let interrupted = CancellationToken::new();
    call.speak(6, "Cut short.".into(), false, interrupted.clone());
    interrupted.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let seen = seen.lock().expect("lock");
    assert!(!seen
        .iter()
        .any(|m| matches!(m, TtsInput::Text { turn: 4, .. })));
    assert!(seen.contains(&TtsInput::Cancel { turn: 6 }));
}

fn utterance(call: &mut PipelineCall, frames: u64) {
    for i in 0..frames {
        call.caller_audio(i * 160, &[0xff; 160]);
    }
    call.caller_endpoint(&media::endpoint::EndpointEvent::SpeechEnded(
        media::endpoint::Utterance {
            start: 0,
            end: frames * 160,
            decided_at: frames * 160,
            is_short: false,
        },
    ));
}

#[tokio::test(start_paused = true)]
async fn a_failing_transcriber_hands_the_utterance_to_the_next() {
    let (mut call, mut rx, metrics) = new_call(Chains {
        stt: vec![
            Arc::new(ScriptedStt {
                name: "primary",
                fail: true,
            }),
            Arc::new(ScriptedStt {
                name: "backup",
                fail: false,
            }),
        ],
        ..Default::default()
    });
    utterance(&mut call, 40);
    let inputs = until(&mut rx, |i| matches!(i, Input::Transcript { .. })).await;
    assert_eq!(
        inputs.last(),
        Some(&Input::Transcript {
            text: "backup heard 40 frames".into(),
            is_final: true,
            end_of_turn: true
        })
    );
    assert_eq!(metrics.failures_of("primary"), 1);
}

#[tokio::test(start_paused = true)]
async fn when_no_transcriber_works_the_session_hears_of_it() {
    let (mut call, mut rx, _) = new_call(Chains {
        stt: vec![Arc::new(ScriptedStt {
            name: "only",
            fail: true,
        })],
        ..Default::default()
    });
    utterance(&mut call, 10);
    let inputs = until(&mut rx, |i| matches!(i, Input::SttFailed { .. })).await;
    assert!(matches!(inputs.last(), Some(Input::SttFailed { .. })));
}
