//! Building and running the server: database, keyring, listener, router,
//! the background job runner (post-call work, retention), and graceful
//! shutdown (stop taking work, drain, then cut).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::call::driver::{CallContext, UpgradeSignature};
use crate::call::registry::LiveCalls;
use crate::configuration::Settings;
use crate::crypto::Keyring;
use crate::db::connect::DatabaseTarget;
use crate::db::Db;
use crate::http::{self, AppState};
use crate::jobs::post_call::{Analyst, LlmAnalyst, PostCallConfig, PostCallHandler};
use crate::jobs::recovery::POST_CALL;
use crate::jobs::retention::{self, RetentionHandler, RETENTION};
use crate::jobs::{JobRunner, RunnerConfig};
use crate::platform::Platform;
use crate::providers::ProviderFactory;
use crate::twilio::call_token::CallTokenKey;
use crate::twilio::rest::TwilioRest;
use media::endpoint::EndpointConfig;

/// Everything the CLI commands and the server need: a migrated database,
/// the application-role pool and the keyring.
pub struct Runtime {
    /// Platform operations.
    pub platform: Platform,
    /// Connection targets; owns the private cluster if we started it.
    target: DatabaseTarget,
}

impl Runtime {
    /// Resolves the database (starting the private cluster if needed),
    /// bootstraps roles, applies migrations, connects as the application
    /// role and loads the keyring.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let target = DatabaseTarget::resolve(settings)
            .await
            .context("could not reach the database")?;
        let applied = target
            .migrate()
            .await
            .context("could not migrate the database")?;
        if applied > 0 {
            tracing::info!(applied, "applied database migrations");
        }
        let db = target
            .connect_app(settings.database.max_connections)
            .await
            .context("could not connect as the application role")?;
        let keyring = Keyring::load(&settings.secrets, &settings.data_dir)
            .context("could not load the master key")?;
        Ok(Self {
            platform: Platform::new(db, keyring),
            target,
        })
    }

    /// Closes the pool and stops the private cluster if we started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.platform.db().close().await;
        self.target
            .shutdown()
            .await
            .context("could not stop the private PostgreSQL cluster")?;
        Ok(())
    }
}

/// A built server, bound and ready to run.
pub struct Application {
    /// The bound listener.
    listener: TcpListener,
    /// Handler state.
    state: AppState,
    /// Database handles to close on exit.
    runtime: Runtime,
    /// Cancelled when the drain period ends: live calls must stop.
    shutdown: CancellationToken,
    /// Background jobs, started by [`Application::run_until_stopped`].
    jobs: Arc<JobRunner>,
}

/// How long a stopping server waits for the job a runner is in the middle
/// of; a job cut off after that is claimed again once its lease runs out.
const JOBS_STOP_WAIT: Duration = Duration::from_secs(5);

/// The model post-call analysis asks: the platform's OpenAI-compatible
/// account when it has a key (and providers are not `fake`). Otherwise
/// none, and the rule-based analysis is stored: the local SmolLM2 is not
/// asked, since a 135M model capped at a phone-length reply cannot write
/// the JSON document the analysis needs.
pub fn post_call_analyst(settings: &Settings) -> Option<Arc<dyn Analyst>> {
    use crate::providers::openai::{OpenAiConfig, OpenAiLlm};
    if settings.providers == crate::configuration::ProviderMode::Fake {
        return None;
    }
    let account = settings.vendors.get("openai")?;
    let key = account.api_key.clone()?;
    let mut config = match &account.base_url {
        Some(url) => OpenAiConfig::with_base_url(url.clone()),
        None => OpenAiConfig::default(),
    };
    config.api_key = Some(key);
    match OpenAiLlm::new(config) {
        Ok(llm) => {
            let model = account
                .model
                .clone()
                .unwrap_or_else(|| crate::providers::LlmSettings::default().model);
            Some(Arc::new(LlmAnalyst::new(Arc::new(llm), model)))
        }
        Err(error) => {
            tracing::error!(%error, "post-call analysis: the OpenAI client could not be built; using the heuristic analysis");
            None
        }
    }
}

/// The server's job runner: [`POST_CALL`] jobs with [`post_call_analyst`]
/// (or the heuristic analysis), and [`RETENTION`] jobs.
pub fn job_runner(settings: &Settings, db: Db) -> JobRunner {
    let analyst = post_call_analyst(settings);
    tracing::info!(
        analyst = analyst.as_ref().map_or("heuristic", |a| a.name()),
        "post-call analysis"
    );
    JobRunner::new(db.clone(), RunnerConfig::default())
        .with_handler(
            POST_CALL,
            Arc::new(PostCallHandler::new(
                db.clone(),
                analyst,
                PostCallConfig::default(),
            )),
        )
        .with_handler(RETENTION, Arc::new(RetentionHandler::new(db)))
}

impl Application {
    /// Opens the runtime and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let runtime = Runtime::open(&settings).await?;
        let live = Arc::new(LiveCalls::default());
        // Calls a crash left open: close them and queue their post-call work.
        if let Err(error) =
            crate::jobs::recovery::recover_interrupted_calls(&runtime.platform, &live).await
        {
            tracing::warn!(%error, "could not recover calls left open by a crash");
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("could not listen on {}", settings.listen))?;
        let shutdown = CancellationToken::new();
        let token_key = CallTokenKey::from_keyring(runtime.platform.keyring())
            .context("could not derive the call-token key")?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let providers: Arc<dyn ProviderFactory> =
            crate::providers::assemble::factory(&settings, &runtime.platform, metrics.clone())
                .await
                .context("could not set up the call providers")?;
        tracing::info!(
            providers = settings.providers.as_str(),
            "call providers selected"
        );
        let calls = CallContext {
            platform: runtime.platform.clone(),
            providers,
            live,
            shutdown: shutdown.clone(),
            token_key,
            control: Arc::new(
                TwilioRest::from_settings(&settings, runtime.platform.clone())
                    .context("could not build the Twilio REST client")?,
            ),
            endpoint: call_endpointing(),
            upgrade: UpgradeSignature::Absent,
            metrics,
            memory: memory_client(&settings, &runtime.platform)?,
            defaults: crate::providers::setup::CallDefaults {
                llm_model: settings.vendors.get("openai").and_then(|v| v.model.clone()),
                voice_id: settings
                    .vendors
                    .get("elevenlabs")
                    .and_then(|v| v.voice_id.clone()),
            },
        };
        let jobs = Arc::new(job_runner(&settings, runtime.platform.db().clone()));
        let state = AppState {
            platform: runtime.platform.clone(),
            settings: Arc::new(settings),
            draining: Arc::new(AtomicBool::new(false)),
            calls,
        };
        Ok(Self {
            listener,
            state,
            runtime,
            shutdown,
            jobs,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The handler state (tests use it to reach the database).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `stop` resolves, then drains: readiness turns 503, the
    /// listener closes, in-flight requests and calls get the configured
    /// grace period, and whatever is left is cancelled.
    ///
    /// The job runner and the retention schedule run alongside; they stop
    /// taking jobs when `stop` resolves, and the job in hand gets
    /// [`JOBS_STOP_WAIT`] after the drain to finish.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            runtime,
            shutdown,
            jobs,
        } = self;
        let jobs_stop = CancellationToken::new();
        // A node with `run_jobs = false` serves calls and APIs only; the
        // jobs it enqueues wait for a node that runs them.
        let run_jobs = state.settings.run_jobs;
        let runner = tokio::spawn({
            let stop = jobs_stop.clone();
            async move {
                if run_jobs {
                    jobs.run(stop).await
                }
            }
        });
        let schedule = tokio::spawn({
            let db = runtime.platform.db().clone();
            let stop = jobs_stop.clone();
            async move {
                if run_jobs {
                    retention::run_schedule(db, retention::SCHEDULE_EVERY, stop).await
                }
            }
        });
        let grace = state.settings.shutdown_grace;
        let draining = state.draining.clone();
        let live = state.calls.live.clone();
        let addr = listener.local_addr()?;
        let (begin_drain, drain_started) = tokio::sync::watch::channel(false);
        let app = http::router(state);
        let mut server = tokio::spawn(async move {
            let mut rx = drain_started;
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|started| *started).await;
                })
                .await
        });
        tracing::info!(%addr, "switchboard listening");

        tokio::select! {
            finished = &mut server => {
                finished.context("server task failed")?.context("server failed")?;
            }
            () = stop => {
                tracing::info!(grace_secs = grace.as_secs(), "shutdown requested: draining");
                jobs_stop.cancel();
                draining.store(true, Ordering::Relaxed);
                let _ = begin_drain.send(true);
                let deadline = tokio::time::Instant::now() + grace;
                // HTTP requests finish with the server; calls run on upgraded
                // sockets the server no longer tracks, so wait for them too.
                let drained = tokio::time::timeout_at(deadline, async {
                    let finished = (&mut server).await;
                    while !live.is_empty() {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    finished
                })
                .await;
                match drained {
                    Ok(finished) => {
                        finished.context("server task failed")?.context("server failed")?;
                        tracing::info!("drained cleanly");
                    }
                    Err(_) => {
                        tracing::warn!(live_calls = live.len(), "grace period over: cutting remaining calls");
                        live.cancel_all();
                        shutdown.cancel();
                        server.abort();
                        // Give cut calls a moment to write their last turns.
                        let cut = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                        while !live.is_empty() && tokio::time::Instant::now() < cut {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }
        shutdown.cancel();
        jobs_stop.cancel();
        schedule.abort();
        let mut runner = runner;
        if tokio::time::timeout(JOBS_STOP_WAIT, &mut runner)
            .await
            .is_err()
        {
            tracing::warn!("the job runner is still busy: cutting its job (it runs again later)");
            runner.abort();
        }
        runtime.close().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are
/// installed when this is called, not when the future is first polled, so
/// a signal that arrives as soon as the server announces itself is caught
/// rather than killing the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &'static str| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::error!(%error, "cannot listen for {name}");
            None
        }
    };
    let term = listen(SignalKind::terminate(), "SIGTERM");
    let int = listen(SignalKind::interrupt(), "SIGINT");
    let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
        match stream {
            Some(mut stream) => {
                stream.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = wait(term) => {},
            () = wait(int) => {},
        }
    }
}

/// The caller-memory client calls use: this process's own database, or
/// the memory service configured in `[memory]`.
fn memory_client(
    settings: &Settings,
    platform: &crate::platform::Platform,
) -> anyhow::Result<Arc<dyn crate::memory::MemoryClient>> {
    Ok(match (&settings.memory.url, &settings.memory.service_key) {
        (Some(url), Some(key)) => {
            tracing::info!(%url, "caller memory: the memory service");
            Arc::new(
                crate::memory::HttpMemoryClient::new(
                    url.clone(),
                    key.clone(),
                    std::time::Duration::from_secs(2),
                )
                .context("could not build the memory service client")?,
            )
        }
        _ => Arc::new(crate::memory::InProcessMemoryClient::new(
            crate::memory::MemoryService::new(platform.db().clone()),
            "orchestrator",
        )),
    })
}

/// Endpointing for calls: the media crate's defaults, with pauses reported
/// after 200 ms of silence so the local speech-to-text can transcribe while
/// the rest of the end silence runs (and answer a question at once).
pub fn call_endpointing() -> EndpointConfig {
    EndpointConfig {
        pause_ms: 200,
        ..EndpointConfig::default()
    }
}
