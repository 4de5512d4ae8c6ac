//! The ElevenLabs TTS clients against the fake vendor over real loopback
//! websockets and HTTP: audio, alignment and `Done` over the multi-context
//! socket, one socket for a whole call, barge-in with a late chunk, a
//! refused key, a socket that drops mid-turn (finished over HTTP), malformed
//! frames, keep-alives, and the HTTP client's streaming and errors.

use std::time::Duration;

use serde_json::Value;
use switchboard::providers::elevenlabs::{ElevenLabsHttp, ElevenLabsWs};
use switchboard::providers::roles::{ProviderError, TextToSpeech, TtsEvent, TtsInput, Voice};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fake_elevenlabs::{
    fake_audio, FakeElevenLabs, HttpAnswer, WsScript, FAKE_KEY, VOICE_ID,
};

const WRONG_KEY: &str = "xi-wrong-key-77aa";

/// One call's synthesis, driven from the test.
struct Call {
    input: mpsc::Sender<TtsInput>,
    events: mpsc::Receiver<TtsEvent>,
    task: JoinHandle<()>,
}

impl Call {
    fn start(tts: &dyn TextToSpeech) -> Self {
        let (input, input_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        let voice = Voice {
            voice_id: VOICE_ID.into(),
            model: None,
            settings: None,
        };
        let task = tokio::spawn(tts.run(voice, input_rx, events_tx));
        Self {
            input,
            events,
            task,
        }
    }

    async fn text(&self, turn: u32, text: &str, last: bool) {
        self.input
            .send(TtsInput::Text {
                turn,
                text: text.into(),
                last,
            })
            .await
            .expect("provider alive");
    }

    async fn cancel(&self, turn: u32) {
        self.input
            .send(TtsInput::Cancel { turn })
            .await
            .expect("provider alive");
    }

    async fn next(&mut self) -> TtsEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("events open")
    }

    /// Events up to and including the first `Done` or `Failed` of `turn`.
    async fn until_end_of(&mut self, turn: u32) -> Vec<TtsEvent> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let end = matches!(
                &event,
                TtsEvent::Done { turn: t, .. } | TtsEvent::Failed { turn: t, .. } if *t == turn
            );
            seen.push(event);
            if end {
                return seen;
            }
        }
    }

    /// Ends the call and waits for the provider to finish.
    async fn hang_up(self) {
        drop(self.input);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("provider ends when its input closes")
            .expect("provider task");
    }
}

/// The audio bytes of `turn` in `events`.
fn audio_of(events: &[TtsEvent], turn: u32) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Audio { turn: t, audio, .. } if *t == turn => Some(audio.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn text_ends(events: &[TtsEvent]) -> Vec<Option<usize>> {
    events
        .iter()
        .filter_map(|e| match e {
            TtsEvent::Audio { text_end, .. } => Some(*text_end),
            _ => None,
        })
        .collect()
}

fn last_event(events: &[TtsEvent]) -> &TtsEvent {
    events.last().expect("at least one event")
}

fn failure(events: &[TtsEvent]) -> ProviderError {
    match last_event(events) {
        TtsEvent::Failed { error, .. } => error.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn assert_no_key(error: &ProviderError) {
    for text in [format!("{error}"), format!("{error:?}")] {
        assert!(!text.contains(FAKE_KEY), "key leaked: {text}");
        assert!(!text.contains(WRONG_KEY), "key leaked: {text}");
    }
}

fn context_messages(fake: &FakeElevenLabs, context: &str) -> Vec<Value> {
    fake.ws_messages()
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.get("context_id").and_then(Value::as_str) == Some(context))
        .collect()
}

fn ws_client(fake: &FakeElevenLabs) -> ElevenLabsWs {
    ElevenLabsWs::new(fake.config()).expect("client")
}

#[tokio::test]
async fn a_turn_over_the_websocket_gives_its_audio_alignment_and_done() {
    let fake = FakeElevenLabs::start().await;
    let tts = ws_client(&fake);
    assert_eq!(tts.name(), "elevenlabs");
    let mut call = Call::start(&tts);
    call.text(1, "Hello there.", false).await;
    call.text(1, "How are you today?", true).await;
    let events = call.until_end_of(1).await;

    let mut expected = fake_audio("Hello there. ");
    expected.extend(fake_audio("How are you today? "));
    assert_eq!(audio_of(&events, 1), expected);
    let spoken = "Hello there. How are you today?".chars().count();
    let ends: Vec<usize> = text_ends(&events)
        .into_iter()
        .map(|e| e.expect("alignment on every chunk"))
        .collect();
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]),
        "text_end grows: {ends:?}"
    );
    assert_eq!(ends.last(), Some(&spoken));
    assert_eq!(
        last_event(&events),
        &TtsEvent::Done {
            turn: 1,
            characters: spoken
        }
    );

    let query = &fake.ws_queries()[0];
    assert_eq!(query["model_id"], "eleven_flash_v2_5");
    assert_eq!(query["output_format"], "ulaw_8000");
    assert_eq!(query["sync_alignment"], "true");
    assert_eq!(query["inactivity_timeout"], "180");

    fake.wait_for_message(|m| {
        m["context_id"] == "turn-1" && m["close_context"] == Value::Bool(true)
    })
    .await;
    let sent = context_messages(&fake, "turn-1");
    assert_eq!(sent[0]["text"], " ");
    assert_eq!(sent[0]["voice_settings"]["stability"], 0.5);
    assert_eq!(
        sent[0]["generation_config"]["chunk_length_schedule"],
        serde_json::json!([120, 160, 250, 290])
    );
    assert_eq!(sent[1]["text"], "Hello there. ");
    assert_eq!(sent[1]["try_trigger_generation"], true);
    assert!(sent[1].get("flush").is_none());
    assert_eq!(sent[2]["text"], "How are you today? ");
    assert_eq!(sent[2]["flush"], true);
    call.hang_up().await;
    fake.wait_for_message(|m| m["close_socket"] == Value::Bool(true))
        .await;
}

#[tokio::test]
async fn turns_of_a_call_share_one_socket_and_the_snake_case_spelling_is_read() {
    let fake = FakeElevenLabs::start().await;
    fake.script_ws(WsScript {
        snake_case: true,
        ..WsScript::default()
    });
    let tts = ws_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "Good morning.", true).await;
    let first = call.until_end_of(1).await;
    assert_eq!(audio_of(&first, 1), fake_audio("Good morning. "));
    assert_eq!(text_ends(&first).last(), Some(&Some(13)));
    call.text(2, "Anything else?", true).await;
    let second = call.until_end_of(2).await;
    assert_eq!(audio_of(&second, 2), fake_audio("Anything else? "));
    assert_eq!(
        last_event(&second),
        &TtsEvent::Done {
            turn: 2,
            characters: 14
        }
    );
    assert_eq!(fake.connections(), 1);
    assert!(fake.ws_messages().iter().all(|(conn, _)| *conn == 1));
    assert!(fake.http_seen().is_empty());
    call.hang_up().await;
}

#[tokio::test]
async fn barge_in_closes_the_context_and_drops_its_late_audio() {
    let fake = FakeElevenLabs::start().await;
    fake.script_ws(WsScript {
        hold: Some(("turn-1", 1)),
        ..WsScript::default()
    });
    let tts = ws_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "One two three four five six.", true).await;
    let first = call.next().await;
    let TtsEvent::Audio { turn: 1, audio, .. } = &first else {
        panic!("expected turn 1 audio, got {first:?}");
    };
    assert_eq!(audio, &fake_audio("One two th"));

    call.cancel(1).await;
    fake.wait_for_message(|m| {
        m["context_id"] == "turn-1" && m["close_context"] == Value::Bool(true)
    })
    .await;
    call.text(1, "More words for a cancelled turn.", true).await;
    call.text(2, "Sure, go ahead.", true).await;
    let after = call.until_end_of(2).await;
    assert!(
        after.iter().all(|e| !matches!(
            e,
            TtsEvent::Audio { turn: 1, .. }
                | TtsEvent::Done { turn: 1, .. }
                | TtsEvent::Failed { turn: 1, .. }
        )),
        "turn 1 spoke after its cancel: {after:?}"
    );
    assert_eq!(audio_of(&after, 2), fake_audio("Sure, go ahead. "));
    assert_eq!(fake.late_chunks(), 1, "the fake sent its late chunk");
    assert_eq!(fake.connections(), 1);
    assert!(
        !context_messages(&fake, "turn-1")
            .iter()
            .any(|m| m["text"] == "More words for a cancelled turn. "),
        "text of a cancelled turn was sent"
    );
    call.hang_up().await;
}

#[tokio::test]
async fn a_refused_key_fails_the_turn_without_leaking_it() {
    let fake = FakeElevenLabs::start().await;
    let tts = ElevenLabsWs::new(fake.config_with_key(WRONG_KEY)).expect("client");
    let mut call = Call::start(&tts);
    call.text(1, "Hello.", true).await;
    let events = call.until_end_of(1).await;
    let error = failure(&events);
    assert!(
        matches!(&error, ProviderError::Unauthorized { provider: "elevenlabs", message } if message == "Invalid API key"),
        "{error:?}"
    );
    assert_no_key(&error);
    assert!(audio_of(&events, 1).is_empty());
    assert!(fake.http_seen().is_empty(), "no fallback after a 401");
    call.hang_up().await;
}

#[tokio::test]
async fn a_socket_dropped_mid_turn_is_finished_over_http() {
    let fake = FakeElevenLabs::start().await;
    fake.script_ws(WsScript {
        disconnect_after: Some(1),
        ..WsScript::default()
    });
    let tts = ws_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "Hello there. How are you today?", true).await;
    let events = call.until_end_of(1).await;

    // The socket delivered "Hello there" (11 characters, cut mid-word);
    // HTTP re-synthesises from the start of that word.
    let seen = fake.http_seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body["text"], "there. How are you today?");
    assert_eq!(seen[0].body["model_id"], "eleven_flash_v2_5");
    assert_eq!(seen[0].query["output_format"], "ulaw_8000");
    let mut expected = fake_audio("Hello there");
    expected.extend(fake_audio("there. How are you today?"));
    assert_eq!(audio_of(&events, 1), expected);
    assert_eq!(
        last_event(&events),
        &TtsEvent::Done {
            turn: 1,
            characters: 31
        }
    );

    // The rest of the call stays on HTTP.
    call.text(2, "Bye now.", true).await;
    let second = call.until_end_of(2).await;
    assert_eq!(audio_of(&second, 2), fake_audio("Bye now."));
    assert_eq!(fake.connections(), 1);
    call.hang_up().await;
}

#[tokio::test]
async fn a_socket_that_cannot_open_sends_the_call_over_http() {
    let fake = FakeElevenLabs::start().await;
    fake.script_ws(WsScript {
        handshake_status: Some(503),
        ..WsScript::default()
    });
    let tts = ws_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "Please hold.", true).await;
    let events = call.until_end_of(1).await;
    assert_eq!(audio_of(&events, 1), fake_audio("Please hold."));
    assert_eq!(
        last_event(&events),
        &TtsEvent::Done {
            turn: 1,
            characters: 12
        }
    );
    assert_eq!(fake.connections(), 0);
    call.hang_up().await;
}

#[tokio::test]
async fn malformed_frames_are_skipped() {
    let fake = FakeElevenLabs::start().await;
    fake.script_ws(WsScript {
        malformed: true,
        ..WsScript::default()
    });
    let tts = ws_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "Still here.", true).await;
    let events = call.until_end_of(1).await;
    assert_eq!(audio_of(&events, 1), fake_audio("Still here. "));
    assert!(matches!(
        last_event(&events),
        TtsEvent::Done { turn: 1, .. }
    ));
    assert!(
        fake.http_seen().is_empty(),
        "a bad frame is no reason to fail over"
    );
    call.hang_up().await;
}

#[tokio::test]
async fn a_context_waiting_for_text_gets_keep_alives() {
    let fake = FakeElevenLabs::start().await;
    let mut config = fake.config();
    config.keep_alive = Duration::from_millis(20);
    let tts = ElevenLabsWs::new(config).expect("client");
    let mut call = Call::start(&tts);
    call.text(1, "Let me check.", false).await;
    fake.wait_for_message(|m| {
        m["context_id"] == "turn-1" && m["text"] == " " && m.get("generation_config").is_none()
    })
    .await;
    call.text(1, "Found it.", true).await;
    let events = call.until_end_of(1).await;
    let mut expected = fake_audio("Let me check. ");
    expected.extend(fake_audio("Found it. "));
    assert_eq!(audio_of(&events, 1), expected);
    call.hang_up().await;
}

// ------------------------------------------------------------- HTTP client

fn http_client(fake: &FakeElevenLabs) -> ElevenLabsHttp {
    ElevenLabsHttp::new(fake.config()).expect("client")
}

#[tokio::test]
async fn http_streams_each_chunk_in_order() {
    let fake = FakeElevenLabs::start().await;
    let tts = http_client(&fake);
    assert_eq!(tts.name(), "elevenlabs-http");
    let mut call = Call::start(&tts);
    call.text(1, "Hello there.", false).await;
    call.text(1, "How are you?", true).await;
    let events = call.until_end_of(1).await;
    let mut expected = fake_audio("Hello there.");
    expected.extend(fake_audio("How are you?"));
    assert_eq!(audio_of(&events, 1), expected);
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, TtsEvent::Audio { .. }))
            .count()
            >= 2,
        "the body is passed on as it streams"
    );
    assert_eq!(
        last_event(&events),
        &TtsEvent::Done {
            turn: 1,
            characters: 25
        }
    );
    let seen = fake.http_seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].voice, VOICE_ID);
    assert_eq!(seen[0].body["text"], "Hello there.");
    assert_eq!(seen[1].body["text"], "How are you?");
    assert_eq!(seen[0].body["model_id"], "eleven_flash_v2_5");
    assert_eq!(seen[0].body["voice_settings"]["similarity_boost"], 0.75);
    call.hang_up().await;
}

#[tokio::test]
async fn http_errors_are_typed_and_keyless() {
    let fake = FakeElevenLabs::start().await;
    fake.script_http([
        HttpAnswer::Invalid("voice_id is not a valid voice"),
        HttpAnswer::Busy(7),
        HttpAnswer::Broken,
    ]);
    let tts = http_client(&fake);
    let mut call = Call::start(&tts);

    call.text(1, "First.", true).await;
    let error = failure(&call.until_end_of(1).await);
    assert_eq!(
        error,
        ProviderError::Rejected {
            provider: "elevenlabs-http",
            status: 422,
            message: "voice_id is not a valid voice".into()
        }
    );
    call.text(2, "Second.", true).await;
    let error = failure(&call.until_end_of(2).await);
    assert_eq!(
        error,
        ProviderError::RateLimited {
            provider: "elevenlabs-http",
            retry_after: Some(Duration::from_secs(7))
        }
    );
    call.text(3, "Third.", true).await;
    let error = failure(&call.until_end_of(3).await);
    assert!(
        matches!(&error, ProviderError::Server { status: 500, message, .. } if message == "synthesis backend down"),
        "{error:?}"
    );
    assert_no_key(&error);
    call.hang_up().await;

    let refused = ElevenLabsHttp::new(fake.config_with_key(WRONG_KEY)).expect("client");
    let mut call = Call::start(&refused);
    call.text(1, "Hi.", true).await;
    let error = failure(&call.until_end_of(1).await);
    assert!(
        matches!(error, ProviderError::Unauthorized { .. }),
        "{error:?}"
    );
    assert_no_key(&error);
    call.hang_up().await;
}

#[tokio::test]
async fn http_body_dropped_mid_stream_fails_the_turn_after_its_audio() {
    let fake = FakeElevenLabs::start().await;
    fake.script_http([HttpAnswer::DropAfter(10)]);
    let tts = http_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "This answer breaks off.", false).await;
    call.text(1, "Never requested.", true).await;
    let events = call.until_end_of(1).await;
    assert_eq!(
        audio_of(&events, 1),
        fake_audio("This answer breaks off.")[..10]
    );
    let error = failure(&events);
    assert!(matches!(error, ProviderError::Network { .. }), "{error:?}");
    assert_no_key(&error);

    call.text(2, "Next turn.", true).await;
    let second = call.until_end_of(2).await;
    assert_eq!(audio_of(&second, 2), fake_audio("Next turn."));
    let texts: Vec<Value> = fake
        .http_seen()
        .iter()
        .map(|s| s.body["text"].clone())
        .collect();
    assert_eq!(texts, ["This answer breaks off.", "Next turn."]);
    call.hang_up().await;
}

#[tokio::test]
async fn http_cancel_drops_the_turns_remaining_text() {
    let fake = FakeElevenLabs::start().await;
    let tts = http_client(&fake);
    let mut call = Call::start(&tts);
    call.text(1, "First clause,", false).await;
    let first = call.next().await;
    assert!(
        matches!(first, TtsEvent::Audio { turn: 1, .. }),
        "{first:?}"
    );
    call.cancel(1).await;
    call.text(1, "second clause.", true).await;
    call.text(2, "Yes?", true).await;
    let after = call.until_end_of(2).await;
    assert!(after.iter().all(|e| !matches!(
        e,
        TtsEvent::Done { turn: 1, .. } | TtsEvent::Failed { turn: 1, .. }
    )));
    assert_eq!(audio_of(&after, 2), fake_audio("Yes?"));
    let texts: Vec<Value> = fake
        .http_seen()
        .iter()
        .map(|s| s.body["text"].clone())
        .collect();
    assert_eq!(texts, ["First clause,", "Yes?"]);
    call.hang_up().await;
}
