//! Whisper per-utterance STT against the fake OpenAI-compatible server over
//! real loopback HTTP: the utterance cut by stream time and posted as a
//! valid 8 kHz mono 16-bit WAV with the form fields, results in utterance
//! order despite latency, short utterances not ending the turn, and 401 /
//! 429 / 500 / 400 mapped to provider errors that never show the key.

use std::time::Duration;

use media::g711::ulaw_to_linear;
use secrecy::SecretString;
use switchboard::providers::roles::{ProviderError, SpeechToText, SttEvent, SttInput};
use switchboard::providers::whisper::{WhisperConfig, WhisperStt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fake_whisper::{FakeWhisper, Reply, WHISPER_KEY};

const FRAME: usize = 160;

fn config(fake: &FakeWhisper, key: &str) -> WhisperConfig {
    let mut config = WhisperConfig::new(fake.base_url());
    config.api_key = Some(SecretString::from(key));
    config.language = Some("en".to_string());
    config
}

struct Call {
    input: Option<mpsc::Sender<SttInput>>,
    events: mpsc::Receiver<SttEvent>,
    task: JoinHandle<()>,
    /// Every frame sent, by index.
    frames: Vec<[u8; FRAME]>,
}

impl Call {
    fn start(config: WhisperConfig) -> Self {
        let stt = WhisperStt::new(config).expect("a valid Whisper config");
        assert_eq!(stt.name(), "whisper");
        let (input, input_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(64);
        let task = tokio::spawn(stt.run(input_rx, events_tx));
        Self {
            input: Some(input),
            events,
            task,
            frames: Vec::new(),
        }
    }

    async fn audio(&mut self, count: usize) {
        for _ in 0..count {
            let k = self.frames.len();
            let mut frame = [0u8; FRAME];
            for (i, b) in frame.iter_mut().enumerate() {
                *b = (k * 13 + i) as u8;
            }
            self.frames.push(frame);
            let start = (k * FRAME) as u64;
            self.send(SttInput::Audio { start, frame }).await;
        }
    }

    /// Ends the utterance at the start of frame `frame`.
    async fn utterance_ended(&self, frame: usize, is_short: bool) {
        let end = (frame * FRAME) as u64;
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

    /// Frames `from..to` decoded, as the server should hear them.
    fn pcm(&self, from: usize, to: usize) -> Vec<i16> {
        self.frames[from..to]
            .iter()
            .flat_map(|f| f.iter().map(|&c| ulaw_to_linear(c)))
            .collect()
    }

    async fn next(&mut self) -> SttEvent {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an STT event within 10 s")
            .expect("the events channel is open")
    }

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

fn final_text(text: &str, end_of_turn: bool) -> SttEvent {
    SttEvent::Final {
        text: text.into(),
        end_of_turn,
    }
}

#[tokio::test]
async fn an_utterance_is_posted_as_a_valid_wav_and_transcribed() {
    let fake = FakeWhisper::start().await;
    fake.script([
        Reply::Text(" I'd like to book a table. "),
        Reply::Text("For two."),
    ]);
    let mut call = Call::start(config(&fake, WHISPER_KEY));

    // Speech ends at frame 20; frames 20..25 are the next utterance's pre-roll.
    call.audio(25).await;
    call.utterance_ended(20, false).await;
    assert_eq!(
        call.next().await,
        final_text("I'd like to book a table.", true)
    );
    call.audio(15).await;
    call.utterance_ended(40, false).await;
    assert_eq!(call.next().await, final_text("For two.", true));
    let (first_pcm, second_pcm) = (call.pcm(0, 20), call.pcm(20, 40));
    assert!(call.finish().await.is_empty());

    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.authorization, Some(format!("Bearer {WHISPER_KEY}")));
    assert_eq!(
        first.fields.get("model").map(String::as_str),
        Some("whisper-1")
    );
    assert_eq!(
        first.fields.get("response_format").map(String::as_str),
        Some("json")
    );
    assert_eq!(first.fields.get("language").map(String::as_str), Some("en"));
    assert_eq!(first.file_name.as_deref(), Some("utterance.wav"));
    assert_eq!(first.file_type.as_deref(), Some("audio/wav"));
    let wav = first.wav.as_ref().expect("a valid WAV");
    assert_eq!(
        (wav.format_tag, wav.channels, wav.sample_rate, wav.bits),
        (1, 1, 8000, 16)
    );
    assert_eq!(
        wav.samples, first_pcm,
        "the mu-law frames before the end, decoded"
    );
    assert_eq!(
        call_pcm(&seen, 1),
        second_pcm,
        "frames since the previous end"
    );
}

/// The samples the fake decoded for request `k` (helper for readability).
fn call_pcm(seen: &[crate::fake_whisper::Seen], k: usize) -> Vec<i16> {
    seen[k]
        .wav
        .as_ref()
        .map(|w| w.samples.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_wav_holds_exactly_the_utterance_audio() {
    let fake = FakeWhisper::start().await;
    let mut call = Call::start(config(&fake, WHISPER_KEY));
    call.audio(12).await;
    call.utterance_ended(10, false).await;
    assert_eq!(call.next().await, final_text("utterance 1", true));
    call.audio(8).await;
    call.utterance_ended(20, true).await;
    assert_eq!(call.next().await, final_text("utterance 2", false));
    let first = call.pcm(0, 10);
    let second = call.pcm(10, 20);
    assert!(call.finish().await.is_empty());
    let seen = fake.seen();
    assert_eq!(call_pcm(&seen, 0), first);
    assert_eq!(
        call_pcm(&seen, 1),
        second,
        "the pre-roll after the first end leads the second"
    );
}

#[tokio::test]
async fn results_keep_utterance_order_when_an_earlier_request_is_slow() {
    let fake = FakeWhisper::start().await;
    fake.script([
        Reply::Slow(Duration::from_millis(300), "first"),
        Reply::Text("second"),
    ]);
    let mut call = Call::start(config(&fake, WHISPER_KEY));
    call.audio(5).await;
    call.utterance_ended(5, false).await;
    // Input is still read while the first request is in flight.
    call.audio(5).await;
    call.utterance_ended(10, true).await;
    assert_eq!(call.next().await, final_text("first", true));
    assert_eq!(call.next().await, final_text("second", false));
    assert!(call.finish().await.is_empty());
    assert_eq!(fake.seen().len(), 2);
}

#[tokio::test]
async fn a_short_utterance_does_not_end_the_turn() {
    let fake = FakeWhisper::start().await;
    fake.script([Reply::Text("mm-hmm")]);
    let mut call = Call::start(config(&fake, WHISPER_KEY));
    call.audio(10).await;
    call.utterance_ended(10, true).await;
    assert_eq!(call.next().await, final_text("mm-hmm", false));
    // An empty transcript of a full utterance is the end marker alone.
    fake.script([Reply::Text("")]);
    call.audio(10).await;
    call.utterance_ended(20, false).await;
    assert_eq!(call.next().await, SttEvent::UtteranceEnd);
    assert!(call.finish().await.is_empty());
}

#[tokio::test]
async fn http_errors_map_to_provider_errors() {
    let fake = FakeWhisper::start().await;
    fake.script([
        Reply::Error(429, "Rate limit reached for requests", Some(7)),
        Reply::Error(
            500,
            "The server had an error while processing your request.",
            None,
        ),
        Reply::Error(400, "Audio file is too short.", None),
        Reply::Text("recovered"),
    ]);
    let mut call = Call::start(config(&fake, WHISPER_KEY));
    for k in 0..4 {
        call.audio(5).await;
        call.utterance_ended(5 * (k + 1), false).await;
    }
    let events = [
        call.next().await,
        call.next().await,
        call.next().await,
        call.next().await,
    ];
    assert!(call.finish().await.is_empty());
    let [SttEvent::Failed(limited), SttEvent::Failed(server), SttEvent::Failed(rejected), ok] =
        events
    else {
        panic!("three failures then a transcript: {events:?}");
    };
    assert_eq!(
        limited,
        ProviderError::RateLimited {
            provider: "whisper",
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(
        matches!(
            &server,
            ProviderError::Server { provider: "whisper", status: 500, message }
                if message == "The server had an error while processing your request."
        ),
        "{server:?}"
    );
    assert!(
        matches!(
            &rejected,
            ProviderError::Rejected { provider: "whisper", status: 400, message }
                if message == "Audio file is too short."
        ),
        "{rejected:?}"
    );
    assert_eq!(ok, final_text("recovered", true));
    for error in [&limited, &server, &rejected] {
        assert!(!error.to_string().contains(WHISPER_KEY));
        assert!(!format!("{error:?}").contains(WHISPER_KEY));
    }
}

#[tokio::test]
async fn a_refused_key_is_unauthorized_and_never_shown() {
    let fake = FakeWhisper::start().await;
    let key = "sk-wrong-key-91c3";
    let mut call = Call::start(config(&fake, key));
    call.audio(5).await;
    call.utterance_ended(5, false).await;
    let failure = call.next().await;
    let SttEvent::Failed(error) = failure else {
        panic!("expected Failed, got {failure:?}");
    };
    assert!(
        matches!(
            &error,
            ProviderError::Unauthorized { provider: "whisper", message }
                if message == "Incorrect API key provided."
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains(key));
    assert!(!format!("{error:?}").contains(key));
    let stt = WhisperStt::new(config(&fake, key)).expect("client");
    assert!(!format!("{stt:?}").contains(key), "Debug hides the key");
    assert!(call.finish().await.is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_failure() {
    let fake = FakeWhisper::start().await;
    let mut config = config(&fake, WHISPER_KEY);
    drop(fake);
    // Nothing listens on port 9 of loopback.
    config.base_url = url::Url::parse("http://127.0.0.1:9/v1").expect("url");
    let mut call = Call::start(config);
    call.audio(3).await;
    call.utterance_ended(3, false).await;
    let failure = call.next().await;
    assert!(
        matches!(
            failure,
            SttEvent::Failed(ProviderError::Network {
                provider: "whisper",
                ..
            })
        ),
        "{failure:?}"
    );
    assert!(call.finish().await.is_empty());
}
