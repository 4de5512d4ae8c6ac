//! Deepgram live STT against the fake Deepgram over real loopback
//! websockets: the handshake (query, `Token` auth, 401), audio intact and
//! in order, Finalize / KeepAlive / CloseStream, the transcript events,
//! malformed frames, in-stream errors, and reconnecting with the audio of
//! the outage replayed on the new socket.

use std::time::Duration;

use secrecy::SecretString;
use switchboard::providers::deepgram::{DeepgramConfig, DeepgramStt};
use switchboard::providers::roles::{ProviderError, SpeechToText, SttEvent, SttInput};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fake_deepgram::{
    error, expected_query, results, speech_started, utterance_end, Action, FakeDeepgram, Trigger,
    DEEPGRAM_KEY,
};

const FRAME: usize = 160;

fn config(fake: &FakeDeepgram, key: &str) -> DeepgramConfig {
    let mut config = DeepgramConfig::new(SecretString::from(key));
    config.base_url = fake.base_url();
    // Long enough never to fire unless a test wants it.
    config.keepalive_interval = Duration::from_secs(60);
    config.reconnect_backoff = Duration::from_millis(10);
    config.max_reconnect_backoff = Duration::from_millis(50);
    config.close_timeout = Duration::from_secs(5);
    config
}

/// A running call: its input, its events and the actor's task.
struct Call {
    input: Option<mpsc::Sender<SttInput>>,
    events: mpsc::Receiver<SttEvent>,
    task: JoinHandle<()>,
    /// Audio sent so far, to compare with what the fake received.
    sent: Vec<u8>,
    frames: u64,
}

impl Call {
    fn start(config: DeepgramConfig, input_capacity: usize) -> Self {
        let stt = DeepgramStt::new(config).expect("a valid Deepgram config");
        assert_eq!(stt.name(), "deepgram");
        let (input, input_rx) = mpsc::channel(input_capacity);
        let (events_tx, events) = mpsc::channel(64);
        let task = tokio::spawn(stt.run(input_rx, events_tx));
        Self {
            input: Some(input),
            events,
            task,
            sent: Vec::new(),
            frames: 0,
        }
    }

    /// Sends `count` distinct 20 ms frames.
    async fn audio(&mut self, count: usize) {
        for _ in 0..count {
            let mut frame = [0u8; FRAME];
            for (i, b) in frame.iter_mut().enumerate() {
                *b = (self.frames as usize * 7 + i) as u8;
            }
            self.sent.extend_from_slice(&frame);
            let start = self.frames * FRAME as u64;
            self.frames += 1;
            self.send(SttInput::Audio { start, frame }).await;
        }
    }

    async fn utterance_ended(&mut self, is_short: bool) {
        let end = self.frames * FRAME as u64;
        self.send(SttInput::UtteranceEnded { end, is_short }).await;
    }

    async fn send(&self, item: SttInput) {
        self.input
            .as_ref()
            .expect("input still open")
            .send(item)
            .await
            .expect("the STT actor reads its input");
    }

    async fn next(&mut self) -> SttEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an STT event within 10 s")
            .expect("the events channel is open")
    }

    /// Closes the input and waits for the actor to end; the events left.
    async fn finish(mut self) -> Vec<SttEvent> {
        self.input = None;
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the STT actor ends after its input closes")
            .expect("the STT actor does not panic");
        let mut rest = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            rest.push(event);
        }
        rest
    }
}

fn interim(text: &str) -> SttEvent {
    SttEvent::Interim { text: text.into() }
}

fn final_turn(text: &str) -> SttEvent {
    SttEvent::Final {
        text: text.into(),
        end_of_turn: true,
    }
}

fn assert_no_key(error: &ProviderError, key: &str) {
    assert!(!error.to_string().contains(key), "key in Display: {error}");
    assert!(
        !format!("{error:?}").contains(key),
        "key in Debug: {error:?}"
    );
}

#[tokio::test]
async fn deepgram_streams_audio_and_reports_interim_then_final() {
    let fake = FakeDeepgram::start().await;
    let send = |v| Action::Send(v);
    fake.on(
        Some(0),
        Trigger::AudioBytes(800),
        vec![
            send(speech_started()),
            send(results("hello", false, false, false)),
        ],
    );
    fake.on(
        Some(0),
        Trigger::AudioBytes(1600),
        vec![send(results("hello there", true, false, false))],
    );
    fake.on(
        Some(0),
        Trigger::AudioBytes(2400),
        vec![
            send(results("", false, false, false)),
            send(results("I need", false, false, false)),
        ],
    );
    fake.on(
        Some(0),
        Trigger::AudioBytes(3200),
        vec![send(results("I need a plumber.", true, true, false))],
    );
    // Deepgram answers a Finalize with nothing left to flush with an empty result.
    fake.on(
        Some(0),
        Trigger::Finalize,
        vec![send(results("", true, false, true))],
    );

    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(20).await;
    assert_eq!(call.next().await, SttEvent::SpeechStarted);
    assert_eq!(call.next().await, interim("hello"));
    assert_eq!(call.next().await, interim("hello there"));
    assert_eq!(call.next().await, interim("hello there I need"));
    assert_eq!(
        call.next().await,
        final_turn("hello there I need a plumber.")
    );

    call.utterance_ended(false).await;
    fake.wait_until("a Finalize", |s| {
        s.connections[0]
            .control_types()
            .contains(&"Finalize".to_string())
    })
    .await;
    // A backchannel-length utterance does not finalize.
    call.utterance_ended(true).await;
    let sent = call.sent.clone();
    let rest = call.finish().await;
    assert!(rest.is_empty(), "no further events: {rest:?}");

    fake.with(|s| {
        assert_eq!(s.handshakes, 1);
        assert_eq!(
            s.authorizations,
            vec![Some(format!("Token {DEEPGRAM_KEY}"))]
        );
        let c = &s.connections[0];
        assert_eq!(c.path, "/v1/listen");
        assert_eq!(c.query, expected_query());
        assert_eq!(c.audio, sent, "audio bytes arrive intact and in order");
        assert!(c.audio_messages <= 20);
        assert_eq!(c.control_types(), vec!["Finalize", "CloseStream"]);
        assert!(c.ended);
    });
}

#[tokio::test]
async fn finalize_results_end_the_turn() {
    let fake = FakeDeepgram::start().await;
    fake.on(
        Some(0),
        Trigger::AudioBytes(800),
        vec![Action::Send(results("book a table", true, false, false))],
    );
    fake.on(
        Some(0),
        Trigger::Finalize,
        vec![Action::Send(results("for two", true, false, true))],
    );

    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(5).await;
    assert_eq!(call.next().await, interim("book a table"));
    call.utterance_ended(false).await;
    assert_eq!(call.next().await, final_turn("book a table for two"));
    assert!(call.finish().await.is_empty());
}

#[tokio::test]
async fn utterance_end_is_a_fallback_end_of_turn_and_deduplicated() {
    let fake = FakeDeepgram::start().await;
    fake.on(
        Some(0),
        Trigger::AudioBytes(800),
        vec![
            Action::Send(results("yes please", true, false, false)),
            Action::Send(utterance_end()),
        ],
    );
    fake.on(
        Some(0),
        Trigger::AudioBytes(1600),
        vec![
            Action::Send(results("thank you", true, true, false)),
            Action::Send(utterance_end()),
        ],
    );

    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(5).await;
    assert_eq!(call.next().await, interim("yes please"));
    assert_eq!(call.next().await, final_turn("yes please"));
    call.audio(5).await;
    assert_eq!(call.next().await, final_turn("thank you"));
    // Already flushed by speech_final: the marker alone, no second Final.
    assert_eq!(call.next().await, SttEvent::UtteranceEnd);
    assert!(call.finish().await.is_empty());
}

#[tokio::test]
async fn keepalive_goes_out_when_no_audio_is_sent() {
    let fake = FakeDeepgram::start().await;
    let mut config = config(&fake, DEEPGRAM_KEY);
    config.keepalive_interval = Duration::from_millis(30);
    let mut call = Call::start(config, 8);
    call.audio(2).await;
    fake.wait_until("two KeepAlives", |s| {
        s.connections.first().is_some_and(|c| {
            c.control_types()
                .iter()
                .filter(|t| *t == "KeepAlive")
                .count()
                >= 2
        })
    })
    .await;
    let sent = call.sent.clone();
    call.finish().await;
    fake.with(|s| {
        let c = &s.connections[0];
        assert_eq!(c.audio, sent);
        assert_eq!(
            c.control_types().last().map(String::as_str),
            Some("CloseStream")
        );
        assert!(c
            .controls
            .iter()
            .all(|m| m == r#"{"type":"KeepAlive"}"# || m == r#"{"type":"CloseStream"}"#));
    });
}

#[tokio::test]
async fn a_refused_key_fails_at_once_without_retries() {
    let fake = FakeDeepgram::start().await;
    let key = "dg-wrong-key-0b9d";
    let mut call = Call::start(config(&fake, key), 8);
    let failure = call.next().await;
    let SttEvent::Failed(error) = failure else {
        panic!("expected Failed, got {failure:?}");
    };
    assert!(
        matches!(
            error,
            ProviderError::Unauthorized {
                provider: "deepgram",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_no_key(&error, key);
    // The actor keeps reading (and dropping) audio until the call ends.
    call.audio(10).await;
    assert!(call.finish().await.is_empty());
    fake.with(|s| {
        assert_eq!(s.handshakes, 1, "no retry storm after a 401");
        assert_eq!(s.unauthorized, 1);
        assert!(s.connections.is_empty());
    });
}

#[tokio::test]
async fn a_dropped_socket_reconnects_and_replays_the_outage_audio() {
    let fake = FakeDeepgram::start().await;
    fake.on(Some(0), Trigger::AudioBytes(10 * FRAME), vec![Action::Drop]);
    fake.on(
        Some(1),
        Trigger::AudioBytes(20 * FRAME),
        vec![Action::Send(results("still with you", true, true, false))],
    );

    // Capacity 1: once a send returns, the actor has taken every earlier frame.
    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 1);
    call.audio(1).await;
    fake.wait_until("the first connection", |s| s.connections.len() == 1)
        .await;
    fake.hold_next_connection();
    call.audio(9).await;
    fake.wait_until("the drop and a reconnect attempt", |s| {
        s.connections[0].ended && s.held == 1
    })
    .await;
    // The outage: the handshake is held, so this audio must be buffered.
    call.audio(15).await;
    fake.release();
    fake.wait_until("the second connection", |s| s.connections.len() == 2)
        .await;
    call.audio(5).await;
    assert_eq!(call.next().await, final_turn("still with you"));
    let sent = call.sent.clone();
    let rest = call.finish().await;
    assert!(
        rest.is_empty(),
        "no Failed after a successful reconnect: {rest:?}"
    );

    fake.with(|s| {
        assert_eq!(s.connections.len(), 2);
        assert_eq!(s.connections[0].audio.len(), 10 * FRAME);
        assert_eq!(
            s.all_audio().len(),
            sent.len(),
            "every byte sent arrived once"
        );
        assert_eq!(s.all_audio(), sent, "in order, across both connections");
        assert_eq!(s.connections[1].query, expected_query());
        assert_eq!(s.connections[1].control_types(), vec!["CloseStream"]);
    });
}

#[tokio::test]
async fn a_failed_handshake_is_retried_and_audio_kept() {
    let fake = FakeDeepgram::start().await;
    fake.fail_handshakes(&[503, 429]);
    fake.on(
        Some(0),
        Trigger::AudioBytes(6 * FRAME),
        vec![Action::Send(results("hi", true, true, false))],
    );
    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(6).await;
    assert_eq!(call.next().await, final_turn("hi"));
    let sent = call.sent.clone();
    assert!(call.finish().await.is_empty());
    fake.with(|s| {
        assert_eq!(s.handshakes, 3);
        assert_eq!(s.all_audio(), sent);
    });
}

#[tokio::test]
async fn reconnecting_gives_up_after_the_configured_attempts() {
    let fake = FakeDeepgram::start().await;
    // Every connection drops as soon as audio arrives.
    fake.on(None, Trigger::AudioBytes(1), vec![Action::Drop]);
    let mut config = config(&fake, DEEPGRAM_KEY);
    config.reconnect_attempts = 2;
    let mut call = Call::start(config, 8);
    let failure = loop {
        call.audio(1).await;
        match tokio::time::timeout(Duration::from_millis(20), call.events.recv()).await {
            Ok(Some(event)) => break event,
            Ok(None) => panic!("events closed"),
            Err(_) => continue,
        }
    };
    let SttEvent::Failed(error) = failure else {
        panic!("expected Failed, got {failure:?}");
    };
    assert!(
        matches!(
            error,
            ProviderError::Network {
                provider: "deepgram",
                ..
            }
        ),
        "{error:?}"
    );
    assert_no_key(&error, DEEPGRAM_KEY);
    call.audio(3).await;
    assert!(call.finish().await.is_empty());
    fake.with(|s| assert_eq!(s.connections.len(), 3, "one connection and two retries"));
}

#[tokio::test]
async fn malformed_and_unknown_frames_are_skipped() {
    let fake = FakeDeepgram::start().await;
    fake.on(
        Some(0),
        Trigger::AudioBytes(FRAME),
        vec![
            Action::SendRaw("{not json".into()),
            Action::SendRaw(r#"{"type":"Results","channel":"oops"}"#.into()),
            Action::SendRaw(r#"{"type":"SomethingNew","x":1}"#.into()),
            Action::SendRaw(r#"{"no_type":true}"#.into()),
            Action::SendBinary(vec![1, 2, 3]),
            Action::Send(results("still here", true, true, false)),
        ],
    );
    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(1).await;
    assert_eq!(call.next().await, final_turn("still here"));
    call.audio(3).await;
    let sent = call.sent.clone();
    assert!(call.finish().await.is_empty());
    fake.with(|s| {
        assert_eq!(s.connections.len(), 1, "skipping is not a reconnect");
        assert_eq!(s.connections[0].audio, sent);
    });
}

#[tokio::test]
async fn an_error_message_is_reported_and_the_stream_continues() {
    let fake = FakeDeepgram::start().await;
    fake.on(
        Some(0),
        Trigger::AudioBytes(FRAME),
        vec![Action::Send(error("Failed to decode audio."))],
    );
    fake.on(
        Some(0),
        Trigger::AudioBytes(2 * FRAME),
        vec![Action::Send(results("okay", true, true, false))],
    );
    let mut call = Call::start(config(&fake, DEEPGRAM_KEY), 8);
    call.audio(1).await;
    let failure = call.next().await;
    let SttEvent::Failed(ProviderError::Server {
        provider, message, ..
    }) = failure
    else {
        panic!("expected Failed(Server), got {failure:?}");
    };
    assert_eq!(provider, "deepgram");
    assert!(message.contains("Failed to decode audio."), "{message}");
    call.audio(1).await;
    assert_eq!(call.next().await, final_turn("okay"));
    assert!(call.finish().await.is_empty());
}
