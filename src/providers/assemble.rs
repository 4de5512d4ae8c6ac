//! Turns the provider mode in the settings into the process's
//! [`ProviderFactory`]: the scripted fakes, or the pipeline over the vendor
//! clients and the local models (see [`super::catalog`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::catalog::{AutoChains, LocalModels, VendorAccounts};
use super::fake::FakeFactory;
use super::local::flite::{FliteConfig, FliteTts};
use super::local::moonshine::{MoonshineConfig, MoonshineStt};
use super::pipeline::{FixedChains, PipelineFactory};
use super::roles::{SpeechToText, TextToSpeech};
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
        (stt, tts)
    })
    .await;
    let (stt, tts) = loaded.unwrap_or((None, None));
    LocalModels {
        stt,
        llm: None,
        tts,
    }
}
