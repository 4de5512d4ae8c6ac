//! Turns the provider mode in the settings into the process's
//! [`ProviderFactory`]: the scripted fakes, or the pipeline over the vendor
//! clients and the local models (see [`super::catalog`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;

use super::catalog::{AutoChains, LocalModels, VendorAccounts};
use super::fake::FakeFactory;
use super::llama::{LlamaConfig, LocalLlm};
use super::local::flite::{FliteConfig, FliteTts};
use super::local::moonshine::{MoonshineConfig, MoonshineStt};
use super::openai::{OpenAiConfig, OpenAiLlm};
use super::pipeline::{FixedChains, PipelineFactory};
use super::roles::{LanguageModel, SpeechToText, TextToSpeech};
use super::ProviderFactory;
use crate::configuration::{ProviderMode, Settings};
use crate::metrics::Metrics;
use crate::models;
use crate::platform::Platform;

/// The factory for `settings.providers`.
pub async fn factory(
    settings: &Settings,
    platform: &Platform,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn ProviderFactory>> {
    let vendors = VendorAccounts::from_settings(&settings.vendors);
    let any_vendor = settings
        .vendors
        .iter()
        .any(|(name, account)| account.is_configured(name));
    match settings.providers {
        ProviderMode::Fake => Ok(Arc::new(FakeFactory::default())),
        ProviderMode::Offline => {
            let local = load_local(&settings.data_dir).await;
            require_complete(&local)?;
            Ok(Arc::new(PipelineFactory::new(
                Arc::new(FixedChains(local.chains())),
                metrics,
            )))
        }
        ProviderMode::Auto => {
            let local = load_local(&settings.data_dir).await;
            if !any_vendor {
                require_complete(&local)
                    .context("no vendor account is configured, so calls need the local models")?;
            }
            let auto = AutoChains::new(platform.clone(), vendors, local);
            let chains = auto.platform_chains();
            tracing::info!(?chains, "platform provider chains (tenant keys go first)");
            Ok(Arc::new(PipelineFactory::new(Arc::new(auto), metrics)))
        }
    }
}

fn require_complete(local: &LocalModels) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if local.stt.is_none() {
        missing.push("speech-to-text (Moonshine)");
    }
    if local.llm.is_none() {
        missing.push("language model (SmolLM2)");
    }
    if local.tts.is_none() {
        missing.push("text-to-speech (flite)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "the local models are not available: {}. Run `switchboard models fetch` \
         (and install Debian's flite1-dev for flite), configure vendor keys, \
         or use `--providers fake`",
        missing.join(", ")
    )
}

/// Loads whichever local models are installed; missing ones are logged.
pub async fn load_local(data_dir: &Path) -> LocalModels {
    let data_dir = data_dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        let stt: Option<Arc<dyn SpeechToText>> =
            match models::installed(&data_dir, &models::MOONSHINE) {
                Some(dir) => match MoonshineStt::load(&MoonshineConfig::new(dir)) {
                    Ok(stt) => Some(Arc::new(stt)),
                    Err(error) => {
                        tracing::warn!(%error, "Moonshine could not be loaded");
                        None
                    }
                },
                None => {
                    tracing::info!("Moonshine is not installed (`switchboard models fetch`)");
                    None
                }
            };
        let tts: Option<Arc<dyn TextToSpeech>> = match FliteTts::load(&FliteConfig::default()) {
            Ok(tts) => Some(Arc::new(tts)),
            Err(error) => {
                tracing::warn!(%error, "flite could not be loaded");
                None
            }
        };
        let llm = match models::installed(&data_dir, &models::SMOLLM2) {
            Some(dir) => match LocalLlm::load(LlamaConfig::new(dir.join(models::SMOLLM2_GGUF))) {
                Ok(llm) => Some(Arc::new(llm)),
                Err(error) => {
                    tracing::warn!(%error, "SmolLM2 could not be loaded");
                    None
                }
            },
            None => {
                tracing::info!("SmolLM2 is not installed (`switchboard models fetch`)");
                None
            }
        };
        (stt, tts, llm)
    })
    .await;
    let (stt, tts, llm) = loaded.unwrap_or((None, None, None));
    let llm = match llm {
        Some(llm) => serve_local_llm(llm).await,
        None => None,
    };
    LocalModels { stt, llm, tts }
}

/// Serves SmolLM2 behind its own OpenAI-compatible endpoint on a loopback
/// port, and returns the production OpenAI client pointed at it: offline
/// calls exercise the same LLM client (streaming, SSE parsing, tool
/// plumbing) as calls to a vendor.
async fn serve_local_llm(llm: Arc<LocalLlm>) -> Option<Arc<dyn LanguageModel>> {
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", 0)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "could not bind the local LLM endpoint");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    let router = super::llama::http::router(llm.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the local LLM endpoint stopped");
        }
    });
    let base = url::Url::parse(&format!("http://{addr}/v1")).ok()?;
    tracing::info!(%base, "local LLM (SmolLM2) serving an OpenAI-compatible endpoint");
    match OpenAiLlm::new(OpenAiConfig::with_base_url(base)) {
        Ok(client) => Some(Arc::new(LocalEndpoint {
            name: "smollm2",
            inner: client,
            local: llm,
        })),
        Err(error) => {
            tracing::warn!(%error, "could not build the local LLM client");
            None
        }
    }
}

/// The most tokens the local model may say in one reply.
const LOCAL_MAX_TOKENS: u32 = 60;

/// The local model as calls see it: the OpenAI client on its loopback
/// endpoint, reported as `smollm2` in metrics and logs, with the prompt
/// prefill going straight to the model.
struct LocalEndpoint<T> {
    name: &'static str,
    inner: T,
    local: Arc<LocalLlm>,
}

impl<T: LanguageModel> LanguageModel for LocalEndpoint<T> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn prefill(
        &self,
        messages: Vec<super::roles::LlmMessage>,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let warm = self.local.prefill(messages);
        Box::pin(async move {
            if let Err(error) = warm.await {
                tracing::debug!(%error, "local LLM prefill failed");
            }
        })
    }

    fn stream(
        &self,
        request: super::roles::LlmRequest,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<super::roles::LlmStream, super::roles::ProviderError>,
    > {
        let name = self.name;
        let mut request = request;
        // A 135M model rambles: on the phone a short answer is the right one.
        request.max_tokens = Some(
            request
                .max_tokens
                .map_or(LOCAL_MAX_TOKENS, |n| n.min(LOCAL_MAX_TOKENS)),
        );
        let stream = self.inner.stream(request);
        Box::pin(async move {
            let events = stream.await.map_err(|e| rename(e, name))?;
            let renamed: super::roles::LlmStream =
                Box::pin(events.map(move |item| item.map_err(|e| rename(e, name))));
            Ok(renamed)
        })
    }
}

/// The same error, attributed to `name`.
fn rename(error: super::roles::ProviderError, name: &'static str) -> super::roles::ProviderError {
    use super::roles::ProviderError as E;
    match error {
        E::Unauthorized { message, .. } => E::Unauthorized {
            provider: name,
            message,
        },
        E::RateLimited { retry_after, .. } => E::RateLimited {
            provider: name,
            retry_after,
        },
        E::Server {
            status, message, ..
        } => E::Server {
            provider: name,
            status,
            message,
        },
        E::Rejected {
            status, message, ..
        } => E::Rejected {
            provider: name,
            status,
            message,
        },
        E::Network { message, .. } => E::Network {
            provider: name,
            message,
        },
        E::Protocol { message, .. } => E::Protocol {
            provider: name,
            message,
        },
        E::Timeout { budget, .. } => E::Timeout {
            provider: name,
            budget,
        },
        E::Unavailable { message, .. } => E::Unavailable {
            provider: name,
            message,
        },
    }
}
