//! `switchboard demo`: the offline quick start. It fetches the local
//! models if needed, starts the server on loopback (with the private
//! PostgreSQL cluster unless a database is configured), creates the demo
//! tenants from `fixtures/tenants/*.toml`, and places scripted calls with
//! the call simulator using recorded speech from `fixtures/audio`: a
//! new caller who gives her name and asks a question; the same caller
//! calling back, welcomed back from memory, who interrupts the agent; and
//! the same number calling the other tenant, which knows nothing of her.
//! After each call it waits for the post-call job and prints the tenant's
//! caller card. It prints each transcript as stored and the per-turn
//! latency table, writes the agent's audio to WAV files, and exits non-zero
//! unless every step worked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::callsim::{self, Answer, CallReport, CallSpec, Step};
use crate::configuration::{ProviderMode, Settings};
use crate::platform::{CreateTenant, Platform, PlatformError};
use crate::repo;
use crate::startup::Application;

/// The audit actor for demo changes.
const DEMO_ACTOR: &str = "demo";

/// The public URL the demo's webhooks are signed for (never resolved: the
/// simulator connects to the loopback address it is given).
const DEMO_PUBLIC_URL: &str = "https://demo.switchboard.invalid";

/// What the pipeline says while the model thinks (not an answer).
const FILLER: &str = "One moment.";

/// The demo caller's number.
const DEMO_CALLER: &str = "+14155550142";

/// Options of `switchboard demo`.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Tenant fixture directory (default `fixtures/tenants`).
    pub fixtures: Option<PathBuf>,
    /// Provider mode; the demo defaults to `offline`.
    pub providers: Option<ProviderMode>,
    /// Where the agent's audio goes (default `<data_dir>/demo`).
    pub out_dir: Option<PathBuf>,
    /// Instead of the demo calls, one call of this many caller turns,
    /// reporting voice-to-voice latency percentiles (the offline benchmark).
    pub bench_turns: Option<usize>,
}

/// One scripted call of the demo.
struct Scenario {
    title: &'static str,
    file: &'static str,
    tenant_number: &'static str,
    script: Vec<Step>,
    /// What the greeting must show of caller memory.
    memory: Remembered,
    /// Wait for the post-call job, then print the tenant's caller card.
    card_after: bool,
}

/// What the tenant should remember of the demo caller when a call starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remembered {
    /// Not checked (the benchmark).
    Unchecked,
    /// Nothing: the tenant's own greeting.
    Nothing,
    /// An earlier call: a welcome back.
    EarlierCall,
}

/// How long the demo waits for a call's post-call job.
const POST_CALL_WAIT: Duration = Duration::from_secs(60);

/// Runs the demo.
pub async fn run(mut settings: Settings, options: DemoOptions) -> anyhow::Result<()> {
    let dir = options.fixtures.clone().unwrap_or_else(default_fixture_dir);
    let tenants = load_fixtures(&dir)?;
    let audio_dir = dir
        .parent()
        .map(|p| p.join("audio"))
        .unwrap_or_else(|| PathBuf::from("fixtures/audio"));
    let scenarios = match options.bench_turns {
        Some(turns) => vec![bench_scenario(&audio_dir, turns)?],
        None => scenarios(&audio_dir)?,
    };

    settings.providers = options.providers.unwrap_or(ProviderMode::Offline);
    if settings.providers != ProviderMode::Fake {
        println!("Switchboard demo: checking the local models (the first run downloads ~150 MB)…");
        for name in ["moonshine", "smollm2"] {
            let data_dir = settings.data_dir.clone();
            tokio::task::spawn_blocking(move || crate::models::ensure(&data_dir, name))
                .await
                .context("the model download task failed")?
                .with_context(|| format!("could not fetch the {name} model"))?;
        }
    }
    settings.listen = "127.0.0.1:0".parse().context("loopback address")?;
    settings.public_url = crate::configuration::url_base::BaseUrl::parse(DEMO_PUBLIC_URL)
        .map_err(|e| anyhow::anyhow!("demo public URL: {e}"))?;
    settings.shutdown_grace = Duration::from_secs(5);
    if settings.twilio.account_sid.is_none() {
        // A stand-in platform account: the simulator signs webhooks with
        // it exactly as Twilio would.
        settings.twilio.account_sid = Some(format!("AC{}", "d".repeat(32)));
        settings.twilio.auth_token = Some(SecretString::from(format!(
            "demo-{}",
            uuid::Uuid::new_v4().simple()
        )));
    }
    let account_sid = settings.twilio.account_sid.clone().unwrap_or_default();
    let auth_token = settings
        .twilio
        .auth_token
        .as_ref()
        .map(|t| t.expose_secret().to_string())
        .unwrap_or_default();
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("demo"));
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    if settings.uses_private_cluster() {
        println!(
            "Starting the server (private PostgreSQL cluster in {}; providers: {})…",
            settings.data_dir.join("postgres").display(),
            settings.providers.as_str()
        );
    } else {
        println!(
            "Starting the server (configured database; providers: {})…",
            settings.providers.as_str()
        );
    }
    let app = Application::build(settings).await?;
    let addr = app.local_addr()?;
    let state = app.state();
    create_all(&state.platform, tenants).await?;
    let memory = crate::memory::MemoryService::new(state.platform.db().clone());
    if options.bench_turns.is_none() {
        forget_demo_caller(&state.platform, &memory).await?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    println!("Server listening on {addr}.");

    let mut failures = Vec::new();
    for (i, scenario) in scenarios.into_iter().enumerate() {
        println!("\n== Call {}: {}", i + 1, scenario.title);
        let spec = CallSpec {
            server: format!("http://{addr}"),
            public_url: DEMO_PUBLIC_URL.to_string(),
            account_sid: account_sid.clone(),
            auth_token: auth_token.clone(),
            from: DEMO_CALLER.to_string(),
            to: scenario.tenant_number.to_string(),
            call_sid: format!("CA{}", uuid::Uuid::new_v4().simple()),
            script: scenario.script,
            fuzz: 0,
        };
        let outcome = async {
            let report = call(
                &state.platform,
                &spec,
                &out_dir,
                scenario.file,
                scenario.memory,
            )
            .await?;
            if scenario.card_after {
                print_card(&state.platform, &memory, &spec).await?;
            }
            anyhow::Ok(report)
        };
        match outcome.await {
            Ok(report) => {
                if options.bench_turns.is_some() {
                    print_latency_summary(&report);
                }
            }
            Err(error) => {
                println!("  FAILED: {error:#}");
                failures.push(format!("call {} ({}): {error:#}", i + 1, scenario.title));
            }
        }
    }

    let _ = stop_tx.send(());
    server
        .await
        .context("the server task failed")?
        .context("the server failed")?;
    if failures.is_empty() {
        println!(
            "\nEvery demo call worked. Agent audio is in {}.",
            out_dir.display()
        );
        Ok(())
    } else {
        anyhow::bail!(
            "{} demo call(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        )
    }
}

fn scenarios(audio: &Path) -> anyhow::Result<Vec<Scenario>> {
    let clip = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = audio.join(format!("{name}.wav"));
        callsim::load_ulaw(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let greeting = Step::WaitAgent {
        timeout: Duration::from_secs(20),
    };
    // The answer, and then a little longer: when the model is slow the
    // caller first hears "One moment." and the answer after a pause.
    let answer = || Step::WaitAgent {
        timeout: Duration::from_secs(40),
    };
    let rest = || Step::WaitAgent {
        timeout: Duration::from_secs(4),
    };
    Ok(vec![
        Scenario {
            title: "a new caller gives her name and asks (insurance agency)",
            file: "call1-new-caller.wav",
            tenant_number: "+18005551212",
            script: vec![
                greeting.clone(),
                Step::Say(clip("introduction")?),
                answer(),
                rest(),
                Step::Hangup,
            ],
            memory: Remembered::Nothing,
            card_after: true,
        },
        Scenario {
            title: "she calls back, is welcomed back, and interrupts the agent (insurance agency)",
            file: "call2-callback-interruption.wav",
            tenant_number: "+18005551212",
            script: vec![
                greeting.clone(),
                Step::Say(clip("question")?),
                Step::WaitAgentStart {
                    timeout: Duration::from_secs(40),
                },
                Step::Interrupt {
                    audio: clip("interruption")?,
                },
                answer(),
                rest(),
                Step::Hangup,
            ],
            memory: Remembered::EarlierCall,
            card_after: true,
        },
        Scenario {
            title: "the same number calls the other tenant, which knows nothing of her (real-estate office)",
            file: "call3-other-tenant.wav",
            tenant_number: "+16195550123",
            script: vec![
                greeting,
                Step::Say(clip("question")?),
                answer(),
                rest(),
                Step::Hangup,
            ],
            memory: Remembered::Nothing,
            card_after: true,
        },
    ])
}

/// One long call for the voice-to-voice benchmark: the caller alternates
/// two recorded questions, waiting for each answer.
fn bench_scenario(audio: &Path, turns: usize) -> anyhow::Result<Scenario> {
    let clip = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = audio.join(format!("{name}.wav"));
        callsim::load_ulaw(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let clips = [clip("question")?, clip("greeting_reply")?];
    let mut script = vec![Step::WaitAgent {
        timeout: Duration::from_secs(20),
    }];
    for i in 0..turns.max(1) {
        script.push(Step::Say(clips[i % 2].clone()));
        script.push(Step::WaitAgent {
            timeout: Duration::from_secs(40),
        });
    }
    script.push(Step::Hangup);
    Ok(Scenario {
        title: "voice-to-voice benchmark (insurance agency)",
        file: "bench.wav",
        tenant_number: "+18005551212",
        script,
        memory: Remembered::Unchecked,
        card_after: false,
    })
}

/// p50 / p95 / max of caller end of speech → first agent audio.
fn print_latency_summary(report: &CallReport) {
    let mut ms: Vec<f64> = report
        .turns
        .iter()
        .filter_map(|t| {
            t.first_agent_audio
                .map(|a| a.saturating_sub(t.caller_end).as_secs_f64() * 1_000.0)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        println!("  no answered turns to summarise");
        return;
    }
    let pick = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "  voice-to-voice over {} turns: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms.len(),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
}

/// Places one call, prints what happened, writes the agent's audio.
async fn call(
    platform: &Platform,
    spec: &CallSpec,
    out_dir: &Path,
    file: &str,
    memory: Remembered,
) -> anyhow::Result<CallReport> {
    let report = callsim::place_call(spec).await?;
    if report.answer != Some(Answer::Streamed) {
        anyhow::bail!(
            "the call was not answered with a media stream: {}",
            report.twiml
        );
    }
    let wav = out_dir.join(file);
    media::wav::write_ulaw(&wav, &report.agent_audio)
        .with_context(|| format!("could not write {}", wav.display()))?;
    let turns = stored_transcript(platform, spec).await?;
    println!("  transcript (as stored):");
    for turn in &turns {
        let cut = if turn.interrupted {
            " [interrupted]"
        } else {
            ""
        };
        println!("    {:<7} {}{cut}", turn.speaker, turn.text);
        if let Some(stages) = stages(&turn.timings) {
            println!("            ({stages})");
        }
    }
    print!("{}", indent(&callsim::render_report(&report)));
    println!(
        "  agent audio: {} ({:.1} s)",
        wav.display(),
        report.agent_audio.len() as f64 / 8_000.0
    );
    check(&report, &turns)?;
    check_greeting(&turns, memory)?;
    Ok(report)
}

/// The greeting shows what the tenant remembers, and nothing more.
fn check_greeting(turns: &[repo::turns::Turn], memory: Remembered) -> anyhow::Result<()> {
    let greeting = turns
        .iter()
        .find(|t| t.speaker == "agent")
        .map(|t| t.text.as_str())
        .unwrap_or_default();
    let welcomed_back = greeting.contains("elcome back");
    match memory {
        Remembered::Unchecked => Ok(()),
        Remembered::Nothing if welcomed_back => {
            anyhow::bail!("a caller this tenant never heard from was welcomed back: {greeting}")
        }
        Remembered::EarlierCall if !welcomed_back => {
            anyhow::bail!("the returning caller was not welcomed back: {greeting}")
        }
        _ => Ok(()),
    }
}

/// Erases the demo caller from every demo tenant, so each run starts
/// with a caller nobody knows (and shows erasure working).
async fn forget_demo_caller(
    platform: &Platform,
    memory: &crate::memory::MemoryService,
) -> anyhow::Result<()> {
    let mut erased = 0;
    for number in ["+18005551212", "+16195550123"] {
        let Some(entry) = crate::db::directory::resolve_number(platform.db(), number).await? else {
            continue;
        };
        let report = memory
            .erase_caller(entry.customer_id, DEMO_CALLER, DEMO_ACTOR)
            .await
            .context("could not erase the demo caller from an earlier run")?;
        erased += report.erased.total();
    }
    if erased > 0 {
        println!(
            "  erased the demo caller {DEMO_CALLER} from earlier runs ({erased} rows, audited)"
        );
    }
    Ok(())
}

/// Waits for the call's post-call job (summary, facts, personality, bio),
/// then prints the tenant's caller card as staff see it.
async fn print_card(
    platform: &Platform,
    memory: &crate::memory::MemoryService,
    spec: &CallSpec,
) -> anyhow::Result<()> {
    let customer = crate::db::directory::resolve_number(platform.db(), &spec.to)
        .await?
        .context("the demo number has no tenant")?
        .customer_id;
    print!("  waiting for the post-call job (summary, facts, personality)…");
    let waited = tokio::time::Instant::now();
    loop {
        let mut tx = platform.db().tenant(customer).await?;
        let call = repo::calls::get_by_sid(&mut tx, &spec.call_sid).await?;
        let done = match &call {
            Some(c) => repo::insights::has_summary(&mut tx, c.call_id).await?,
            None => false,
        };
        tx.commit().await?;
        if done {
            println!(" done in {:.1} s", waited.elapsed().as_secs_f64());
            break;
        }
        if waited.elapsed() >= POST_CALL_WAIT {
            println!();
            anyhow::bail!("the post-call job did not finish within {POST_CALL_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let card = memory
        .enriched_context(customer, &spec.from, true, 3)
        .await
        .context("could not read the caller card")?;
    println!(
        "  caller card of {} at this tenant (staff view):",
        spec.from
    );
    print!("{}", indent(&indent(card.context.trim_end())));
    Ok(())
}

/// What must hold for a demo call to count as working.
fn check(report: &CallReport, turns: &[repo::turns::Turn]) -> anyhow::Result<()> {
    if !report.off_spec.is_empty() {
        anyhow::bail!("{} off-spec frames from the server", report.off_spec.len());
    }
    if report.audio_after_clear > 0 {
        anyhow::bail!(
            "{} pieces of an interrupted turn's audio were sent after the clear",
            report.audio_after_clear
        );
    }
    let caller: Vec<_> = turns.iter().filter(|t| t.speaker == "caller").collect();
    let agent: Vec<_> = turns.iter().filter(|t| t.speaker == "agent").collect();
    if caller.iter().all(|t| t.text.trim().is_empty()) {
        anyhow::bail!("nothing the caller said was transcribed");
    }
    let replies = agent
        .iter()
        .skip(1)
        .filter(|t| !t.text.trim().is_empty() && t.text.trim() != FILLER.trim())
        .count();
    if replies == 0 {
        anyhow::bail!("the agent never answered the caller (greeting and fillers only)");
    }
    if report.turns.iter().all(|t| t.first_agent_audio.is_none()) {
        anyhow::bail!("no agent audio followed the caller's turn");
    }
    if turns
        .iter()
        .any(|t| t.speaker == "system" && t.text.starts_with("provider failure"))
    {
        anyhow::bail!("a provider failed during the call (see the transcript)");
    }
    Ok(())
}

/// The call's transcript rows, once the server has finished writing them.
async fn stored_transcript(
    platform: &Platform,
    spec: &CallSpec,
) -> anyhow::Result<Vec<repo::turns::Turn>> {
    let customer = crate::db::directory::resolve_number(platform.db(), &spec.to)
        .await?
        .context("the demo number has no tenant")?
        .customer_id;
    for _ in 0..50 {
        let mut tx = platform.db().tenant(customer).await?;
        let call = repo::calls::get_by_sid(&mut tx, &spec.call_sid).await?;
        let done = call.as_ref().is_some_and(|c| c.end_reason.is_some());
        let turns = match &call {
            Some(c) => repo::turns::list(&mut tx, c.call_id).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        if done {
            return Ok(turns);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the call's transcript was not complete after 5 s")
}

/// An agent turn's stage latencies, from the timings stored with it.
fn stages(timings: &serde_json::Value) -> Option<String> {
    let at = |key: &str| timings.get(key).and_then(serde_json::Value::as_u64);
    let first_media = at("first_media_ms")?;
    let stt_final = at("caller_end_ms")?;
    let gap = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(a), Some(b)) => format!("{} ms", b.saturating_sub(a)),
        _ => "–".to_string(),
    };
    let speech_end = at("speech_end_ms");
    Some(format!(
        "end of speech → STT final {}, → LLM first text {}, → TTS first audio {}, → sent {}; total {}",
        gap(speech_end, Some(stt_final)),
        gap(Some(stt_final), at("llm_first_token_ms")),
        gap(at("llm_first_token_ms"), at("tts_first_byte_ms")),
        gap(at("tts_first_byte_ms"), Some(first_media)),
        gap(speech_end.or(Some(stt_final)), Some(first_media)),
    ))
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

async fn create_all(
    platform: &Platform,
    tenants: Vec<(PathBuf, CreateTenant)>,
) -> anyhow::Result<()> {
    for (path, tenant) in tenants {
        let slug = tenant.slug.clone();
        match platform.create_tenant(DEMO_ACTOR, tenant).await {
            Ok(created) => println!(
                "  created tenant {:<14} {} [{}] numbers: {}",
                created.customer.slug,
                created.customer.name,
                created.customer.template_slug,
                created
                    .numbers
                    .iter()
                    .map(|n| n.e164.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(PlatformError::Conflict(_)) => {
                println!("  kept tenant    {slug:<14} (already present)")
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("could not create the tenant in {}", path.display()))
            }
        }
    }
    Ok(())
}

/// `./fixtures/tenants` when run from a checkout, else the copy beside the
/// sources this binary was built from.
fn default_fixture_dir() -> PathBuf {
    let local = PathBuf::from("fixtures/tenants");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tenants")
    }
}

/// Reads every `*.toml` tenant fixture in `dir`, sorted by file name.
pub fn load_fixtures(dir: &Path) -> anyhow::Result<Vec<(PathBuf, CreateTenant)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read tenant fixtures in {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!("no tenant fixtures (*.toml) in {}", dir.display());
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let tenant: CreateTenant = toml::from_str(&text)
                .with_context(|| format!("invalid tenant fixture {}", path.display()))?;
            Ok((path, tenant))
        })
        .collect()
}
