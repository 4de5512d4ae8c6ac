//! The providers acceptance test: a provider outage mid-call (each of STT,
//! LLM and TTS killed in turn) — the caller hears the fallback within 2 s,
//! the call continues or ends politely, and the transcript has every turn.
//!
//! The real server runs in `auto` mode with the platform's vendor accounts
//! pointing at the protocol-faithful fakes on loopback, and no local models
//! but flite (Moonshine and SmolLM2 are not in the test's data dir). The
//! chains are therefore, deterministically:
//!
//! - STT: Deepgram → Whisper (self-hosted, by base URL).
//! - LLM: OpenAI alone: when it dies, the apology (spoken by ElevenLabs)
//!   is the last resort.
//! - TTS: ElevenLabs (websocket, then its own HTTP fallback) → flite.
//!
//! Each call is placed by the call simulator with recorded speech from
//! `fixtures/audio`, has one good caller turn, then loses a vendor, then
//! has two more caller turns. The latency figure asserted is the
//! acceptance criterion itself, measured by the simulator (caller end of
//! speech → first agent audio); run with `--nocapture` to see them.

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard::callsim::{self, Answer, CallReport, CallSpec, Step};
use switchboard::configuration::Settings;
use switchboard::platform::Platform;
use switchboard::repo::turns::Turn;
use switchboard::startup::Application;
use tokio::sync::oneshot;

use crate::fake_deepgram::{self, Action, FakeDeepgram, Trigger, DEEPGRAM_KEY};
use crate::fake_elevenlabs::{FakeElevenLabs, FAKE_KEY as ELEVENLABS_KEY, VOICE_ID};
use crate::fake_openai::{self, FakeOpenAi, Reply};
use crate::fake_whisper::{self, FakeWhisper, WHISPER_KEY};
use crate::helpers::{
    call_transcript, drop_database, fixture_clip, tenant_input, test_env, PUBLIC_URL,
    TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN,
};

/// The OpenAI key the platform account uses.
const OPENAI_KEY: &str = "sk-outage-test-9d3e51f0a7c2";

/// The acceptance criterion: caller end of speech → first agent audio.
const FALLBACK_WITHIN: Duration = Duration::from_secs(2);

/// Caller turns, as the STT fakes transcribe them.
const CALLER_TEXT: [&str; 3] = [
    "Hi, yes, I'm calling about my auto policy.",
    "Does my policy cover a rental car while mine is in the shop?",
    "Okay, can someone call me back about it?",
];

/// The agent's answer to every caller turn the LLM answers.
const ANSWER: [&str; 2] = ["Yes, rental cars are covered ", "for up to thirty days."];

/// The four fake vendors.
struct Vendors {
    deepgram: FakeDeepgram,
    openai: FakeOpenAi,
    elevenlabs: FakeElevenLabs,
    whisper: FakeWhisper,
}

impl Vendors {
    /// Starts the fakes; OpenAI answers with `openai` in order (and 500
    /// once that is used up).
    async fn start(openai: Vec<Reply>) -> Self {
        Self {
            deepgram: FakeDeepgram::start().await,
            openai: FakeOpenAi::start(Some(OPENAI_KEY), openai).await,
            elevenlabs: FakeElevenLabs::start().await,
            whisper: FakeWhisper::start().await,
        }
    }

    /// Deepgram transcribes caller turn `n` (1-based) at its `Finalize`.
    fn deepgram_transcribes(&self, n: usize, then: Vec<Action>) {
        let mut actions = vec![Action::Send(fake_deepgram::results(
            CALLER_TEXT[n - 1],
            true,
            true,
            true,
        ))];
        actions.extend(then);
        self.deepgram.on(None, Trigger::NthFinalize(n), actions);
    }
}

/// A good streamed answer from the fake OpenAI.
fn answer() -> Reply {
    Reply::sse(
        &fake_openai::sse_body(&fake_openai::text_chunks(&ANSWER, 40, 12)),
        48,
    )
}

/// The real server in `auto` mode over the fakes.
struct OutageApp {
    address: String,
    platform: Platform,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    database: String,
}

impl OutageApp {
    async fn spawn(vendors: &Vendors) -> Self {
        let (mut env, database) = test_env();
        let vars: BTreeMap<&str, String> = [
            ("SWITCHBOARD_PROVIDERS", "auto".to_string()),
            ("SWITCHBOARD_DEEPGRAM_API_KEY", DEEPGRAM_KEY.to_string()),
            (
                "SWITCHBOARD_DEEPGRAM_BASE_URL",
                vendors.deepgram.base_url().to_string(),
            ),
            ("SWITCHBOARD_OPENAI_API_KEY", OPENAI_KEY.to_string()),
            (
                "SWITCHBOARD_OPENAI_BASE_URL",
                vendors.openai.base_url.to_string(),
            ),
            ("SWITCHBOARD_ELEVENLABS_API_KEY", ELEVENLABS_KEY.to_string()),
            (
                "SWITCHBOARD_ELEVENLABS_BASE_URL",
                vendors.elevenlabs.config().http_base.to_string(),
            ),
            ("SWITCHBOARD_ELEVENLABS_VOICE_ID", VOICE_ID.to_string()),
            ("SWITCHBOARD_WHISPER_API_KEY", WHISPER_KEY.to_string()),
            (
                "SWITCHBOARD_WHISPER_BASE_URL",
                vendors.whisper.base_url().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        for (key, value) in vars {
            env.insert(key.to_string(), value);
        }
        let settings = Settings::load_from(None, &env).expect("outage test settings are valid");
        let app = Application::build(settings)
            .await
            .expect("the app builds in auto mode");
        let addr = app.local_addr().expect("bound");
        let platform = app.state().platform.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            address: format!("http://{addr}"),
            platform,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            database,
        }
    }

    /// `switchboard_provider_failures_total` summed per provider label.
    async fn failures(&self) -> BTreeMap<String, u64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("switchboard_provider_failures_total{") else {
                continue;
            };
            let provider = rest
                .split("provider=\"")
                .nth(1)
                .and_then(|p| p.split('"').next())
                .unwrap_or_default()
                .to_string();
            let count: u64 = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default();
            *out.entry(provider).or_default() += count;
        }
        out
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task did not panic")
                .expect("server stopped cleanly");
        }
        drop_database(&self.database).await;
    }
}

/// Greeting, then three caller turns, each waited for; a pause after the
/// first answer, during which the vendor goes down.
fn script() -> Vec<Step> {
    let wait = || Step::WaitAgent {
        timeout: Duration::from_secs(10),
    };
    vec![
        wait(),
        Step::Say(fixture_clip("greeting_reply.wav")),
        wait(),
        // Longer than Deepgram's client takes to give up reconnecting
        // (handshakes refused; retries after 0, 0.25, 0.5, 1 and 2 s), so
        // the next turn is Whisper's from its start.
        Step::Silence(Duration::from_secs(5)),
        Step::Say(fixture_clip("question.wav")),
        wait(),
        Step::Silence(Duration::from_millis(500)),
        Step::Say(fixture_clip("greeting_reply.wav")),
        wait(),
        Step::Silence(Duration::from_millis(500)),
        Step::Hangup,
    ]
}

/// Places a call to `number` on the server at `address` with [`script`].
async fn place(address: String, number: &str) -> (CallSpec, CallReport) {
    let spec = CallSpec {
        server: address,
        public_url: PUBLIC_URL.into(),
        account_sid: TWILIO_ACCOUNT_SID.into(),
        auth_token: TWILIO_AUTH_TOKEN.into(),
        from: "+15557654321".into(),
        to: number.into(),
        call_sid: format!("CA{}", uuid::Uuid::new_v4().simple()),
        script: script(),
        fuzz: 0,
    };
    let report = callsim::place_call(&spec).await.expect("call placed");
    (spec, report)
}

/// Caller end of speech → first agent audio of caller turn `i` (0-based).
fn latency(report: &CallReport, i: usize) -> Option<Duration> {
    let turn = report.turns.get(i)?;
    turn.first_agent_audio
        .map(|heard| heard.saturating_sub(turn.caller_end))
}

/// What every outage call must show; `role` names the case in messages.
fn check_call(role: &str, report: &CallReport, turns: &[Turn]) {
    println!("--- {role} outage\n{}", callsim::render_report(report));
    for t in turns {
        println!("  #{:<2} {:<6} {}", t.seq, t.speaker, t.text);
    }
    assert_eq!(report.answer, Some(Answer::Streamed));
    assert!(report.off_spec.is_empty(), "{:?}", report.off_spec);
    assert_eq!(report.audio_after_clear, 0, "{role}: audio after a clear");
    assert_eq!(
        report.turns.len(),
        3,
        "{role}: three caller turns: {:?}",
        report.turns
    );
    // The turn the outage hit was answered within the criterion…
    let hit = latency(report, 1)
        .unwrap_or_else(|| panic!("{role}: the turn after the outage got no audio"));
    println!(
        "{role} outage: caller end of speech → first agent audio = {} ms (criterion ≤ {} ms)",
        hit.as_millis(),
        FALLBACK_WITHIN.as_millis()
    );
    assert!(
        hit <= FALLBACK_WITHIN,
        "{role}: the fallback came {} ms after the caller's turn",
        hit.as_millis()
    );
    // …and the call went on: the next turn was answered too.
    assert!(
        latency(report, 2).is_some(),
        "{role}: the turn after that got no audio: {:?}",
        report.turns
    );
    // Every caller turn is in the transcript, in order.
    let callers: Vec<&str> = turns
        .iter()
        .filter(|t| t.speaker == "caller")
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(callers, CALLER_TEXT, "{role}: caller rows {turns:#?}");
    // The greeting and one agent row per caller turn.
    let agents = turns.iter().filter(|t| t.speaker == "agent").count();
    assert!(agents >= 4, "{role}: agent rows {turns:#?}");
}

/// The system rows noting a provider failure.
fn failure_rows(turns: &[Turn]) -> Vec<&str> {
    turns
        .iter()
        .filter(|t| t.speaker == "system" && t.text.starts_with("provider failure"))
        .map(|t| t.text.as_str())
        .collect()
}

#[tokio::test]
async fn deepgram_dies_mid_call_and_whisper_takes_over() {
    let vendors = Vendors::start(vec![answer(), answer(), answer()]).await;
    // The first turn is transcribed, then Deepgram goes away for good:
    // the socket drops and every reconnect is refused.
    vendors.deepgram_transcribes(1, vec![Action::GoDown]);
    vendors.whisper.script([
        fake_whisper::Reply::Text(CALLER_TEXT[1]),
        fake_whisper::Reply::Text(CALLER_TEXT[2]),
    ]);
    let app = OutageApp::spawn(&vendors).await;
    let tenant = app
        .platform
        .create_tenant("test", tenant_input("stt-outage", "+15550007001"))
        .await
        .expect("tenant");
    let (spec, report) = place(app.address.clone(), "+15550007001").await;
    let (_, turns) = call_transcript(
        app.platform.db(),
        tenant.customer.customer_id,
        &spec.call_sid,
    )
    .await;
    check_call("STT", &report, &turns);
    assert!(
        vendors.whisper.seen().len() >= 2,
        "whisper transcribed the later turns"
    );
    let rows = failure_rows(&turns);
    assert!(
        rows.iter().any(|r| r.contains("deepgram")),
        "a system row notes Deepgram's failure: {turns:#?}"
    );
    let failures = app.failures().await;
    assert!(
        failures.get("deepgram").copied().unwrap_or(0) >= 1,
        "{failures:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn openai_dies_mid_call_and_the_caller_hears_the_apology() {
    // One good answer, then every request fails with OpenAI's 500 (the
    // fake also answers 500 once its script is used up).
    let mut replies = vec![answer()];
    replies.extend(std::iter::repeat_with(Reply::server_error).take(8));
    let vendors = Vendors::start(replies).await;
    for n in 1..=3 {
        vendors.deepgram_transcribes(n, Vec::new());
    }
    let app = OutageApp::spawn(&vendors).await;
    let tenant = app
        .platform
        .create_tenant("test", tenant_input("llm-outage", "+15550007002"))
        .await
        .expect("tenant");
    let (spec, report) = place(app.address.clone(), "+15550007002").await;
    let (_, turns) = call_transcript(
        app.platform.db(),
        tenant.customer.customer_id,
        &spec.call_sid,
    )
    .await;
    check_call("LLM", &report, &turns);
    // With no other language model, the apology is the last resort: each
    // later turn is answered with it, and the call stays open for a
    // message or a transfer.
    let apology = switchboard::call::SessionConfig::default().apology_text;
    let agents: Vec<&str> = turns
        .iter()
        .filter(|t| t.speaker == "agent")
        .map(|t| t.text.as_str())
        .collect();
    assert!(
        agents.iter().filter(|a| **a == apology).count() >= 2,
        "the later turns were answered with the apology: {turns:#?}"
    );
    assert!(
        agents.iter().any(|a| *a == ANSWER.concat()),
        "the first turn was answered by the model: {turns:#?}"
    );
    let rows = failure_rows(&turns);
    assert!(
        rows.len() >= 2 && rows.iter().all(|r| r.contains("openai")),
        "system rows note OpenAI's failure: {turns:#?}"
    );
    let failures = app.failures().await;
    assert!(
        failures.get("openai").copied().unwrap_or(0) >= 2,
        "{failures:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn elevenlabs_dies_mid_call_and_flite_speaks() {
    // flite is the TTS chain's last link: without it this case has no
    // fallback to hear (Debian: flite1-dev, installed here and in CI).
    if let Err(error) = switchboard::providers::local::flite::FliteTts::load(&Default::default()) {
        panic!("this test needs libflite (apt-get install flite1-dev): {error}");
    }
    let vendors = Vendors::start(vec![answer(), answer(), answer()]).await;
    for n in 1..=3 {
        vendors.deepgram_transcribes(n, Vec::new());
    }
    let app = OutageApp::spawn(&vendors).await;
    let tenant = app
        .platform
        .create_tenant("test", tenant_input("tts-outage", "+15550007003"))
        .await
        .expect("tenant");
    let call = tokio::spawn(place(app.address.clone(), "+15550007003"));
    // Once the answer to the first caller turn has been spoken (its
    // context closed), ElevenLabs goes down: websocket and HTTP alike.
    let killed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let spoken = vendors.elevenlabs.ws_messages().iter().any(|(_, m)| {
                m["context_id"] == "turn-2" && m["close_context"] == serde_json::json!(true)
            });
            if spoken {
                vendors.elevenlabs.go_down();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(killed.is_ok(), "the first answer was never spoken");
    let (spec, report) = call.await.expect("call task");
    let (_, turns) = call_transcript(
        app.platform.db(),
        tenant.customer.customer_id,
        &spec.call_sid,
    )
    .await;
    check_call("TTS", &report, &turns);
    assert!(
        !vendors.elevenlabs.http_seen().is_empty(),
        "the websocket client fell back to HTTP first"
    );
    // The fake vendor's audio is two bytes a character; whole seconds of
    // agent audio are flite speaking.
    assert!(
        report.agent_audio.len() > 8_000,
        "flite spoke the later answers: {} bytes of agent audio",
        report.agent_audio.len()
    );
    let rows = failure_rows(&turns);
    assert!(
        rows.iter().any(|r| r.contains("elevenlabs")),
        "a system row notes ElevenLabs' failure: {turns:#?}"
    );
    let failures = app.failures().await;
    assert!(
        failures
            .iter()
            .any(|(provider, n)| provider.starts_with("elevenlabs") && *n >= 1),
        "{failures:?}"
    );
    app.stop().await;
}
