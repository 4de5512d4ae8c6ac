//! Which providers serve a call: the provider mode, the platform's vendor
//! accounts, a tenant's own keys and the local models, assembled into the
//! [`Chains`] the pipeline runs.
//!
//! In `auto` mode each role's chain is, in order: the vendor with the
//! tenant's own key (bring your own key), the vendor with the platform's
//! key, then the local model of that role. `offline` uses the local models
//! only. A vendor client that cannot be built (a malformed key, say) is
//! logged and left out; the call still gets the rest of the chain.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use secrecy::SecretString;

use super::deepgram::{DeepgramConfig, DeepgramStt};
use super::elevenlabs::{ElevenLabsConfig, ElevenLabsWs};
use super::openai::{OpenAiConfig, OpenAiLlm};
use super::pipeline::{ChainSource, Chains};
use super::roles::{LanguageModel, ProviderError, SpeechToText, TextToSpeech};
use super::whisper::{WhisperConfig, WhisperStt};
use super::CallSetup;
use crate::configuration::VendorAccount;
use crate::platform::Platform;

/// The local models, loaded once per process.
#[derive(Clone, Default)]
pub struct LocalModels {
    /// Moonshine.
    pub stt: Option<Arc<dyn SpeechToText>>,
    /// SmolLM2 (through its loopback OpenAI-compatible endpoint).
    pub llm: Option<Arc<dyn LanguageModel>>,
    /// flite.
    pub tts: Option<Arc<dyn TextToSpeech>>,
}

impl LocalModels {
    /// The local models as the whole chain.
    pub fn chains(&self) -> Chains {
        Chains {
            stt: self.stt.iter().cloned().collect(),
            llm: self.llm.iter().cloned().collect(),
            tts: self.tts.iter().cloned().collect(),
        }
    }
}

/// The platform's vendor accounts, as settings give them.
#[derive(Clone, Default)]
pub struct VendorAccounts {
    /// Deepgram.
    pub deepgram: VendorAccount,
    /// OpenAI-compatible chat completions.
    pub openai: VendorAccount,
    /// ElevenLabs.
    pub elevenlabs: VendorAccount,
    /// OpenAI-compatible transcription (self-hosted Whisper).
    pub whisper: VendorAccount,
}

impl VendorAccounts {
    /// Picks the accounts out of the settings' vendor map.
    pub fn from_settings(
        vendors: &std::collections::BTreeMap<&'static str, VendorAccount>,
    ) -> Self {
        let get = |name: &str| vendors.get(name).cloned().unwrap_or_default();
        Self {
            deepgram: get("deepgram"),
            openai: get("openai"),
            elevenlabs: get("elevenlabs"),
            whisper: get("whisper"),
        }
    }
}

/// Chains per call in `auto` mode.
pub struct AutoChains {
    platform: Platform,
    vendors: VendorAccounts,
    /// The platform-key clients, built once.
    platform_chains: Chains,
    local: LocalModels,
}

impl AutoChains {
    /// Builds the platform's clients once.
    pub fn new(platform: Platform, vendors: VendorAccounts, local: LocalModels) -> Self {
        let platform_chains = Chains {
            stt: [
                vendors
                    .deepgram
                    .api_key
                    .clone()
                    .and_then(|key| keep(deepgram(&vendors.deepgram, key))),
                whisper(&vendors.whisper).and_then(keep),
            ]
            .into_iter()
            .flatten()
            .collect(),
            llm: vendors
                .openai
                .api_key
                .clone()
                .and_then(|key| keep(openai(&vendors.openai, key)))
                .into_iter()
                .collect(),
            tts: vendors
                .elevenlabs
                .api_key
                .clone()
                .and_then(|key| keep(elevenlabs(&vendors.elevenlabs, key)))
                .into_iter()
                .collect(),
        };
        Self {
            platform,
            vendors,
            platform_chains,
            local,
        }
    }

    /// What the platform alone provides (no tenant keys), local models last.
    pub fn platform_chains(&self) -> Chains {
        let mut chains = self.platform_chains.clone();
        append_local(&mut chains, &self.local);
        chains
    }

    async fn tenant_key(&self, setup: &CallSetup, provider: &str) -> Option<SecretString> {
        match self
            .platform
            .open_credential(setup.customer_id, provider)
            .await
        {
            Ok(found) => found.map(|(_, key)| key),
            Err(error) => {
                tracing::warn!(provider, %error, "could not open the tenant's credential; using the platform's");
                None
            }
        }
    }
}

impl ChainSource for AutoChains {
    fn chains<'a>(&'a self, setup: &'a CallSetup) -> BoxFuture<'a, Chains> {
        Box::pin(async move {
            let mut chains = Chains::default();
            if let Some(key) = self.tenant_key(setup, "deepgram").await {
                chains
                    .stt
                    .extend(keep(deepgram(&self.vendors.deepgram, key)));
            }
            if let Some(key) = self.tenant_key(setup, "openai").await {
                chains.llm.extend(keep(openai(&self.vendors.openai, key)));
            }
            if let Some(key) = self.tenant_key(setup, "elevenlabs").await {
                chains
                    .tts
                    .extend(keep(elevenlabs(&self.vendors.elevenlabs, key)));
            }
            chains.stt.extend(self.platform_chains.stt.iter().cloned());
            chains.llm.extend(self.platform_chains.llm.iter().cloned());
            chains.tts.extend(self.platform_chains.tts.iter().cloned());
            append_local(&mut chains, &self.local);
            chains
        })
    }
}

fn append_local(chains: &mut Chains, local: &LocalModels) {
    chains.stt.extend(local.stt.iter().cloned());
    chains.llm.extend(local.llm.iter().cloned());
    chains.tts.extend(local.tts.iter().cloned());
}

/// Keeps a built client, logging one that could not be built.
fn keep<T: ?Sized>(built: Result<Arc<T>, ProviderError>) -> Option<Arc<T>> {
    match built {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::error!(%error, "a provider client could not be built; it is left out");
            None
        }
    }
}

fn deepgram(
    account: &VendorAccount,
    key: SecretString,
) -> Result<Arc<dyn SpeechToText>, ProviderError> {
    let mut config = DeepgramConfig::new(key);
    if let Some(url) = &account.base_url {
        config.base_url = url.clone();
    }
    if let Some(model) = &account.model {
        config.model = model.clone();
    }
    Ok(Arc::new(DeepgramStt::new(config)?))
}

fn whisper(account: &VendorAccount) -> Option<Result<Arc<dyn SpeechToText>, ProviderError>> {
    let url = account.base_url.clone()?;
    let mut config = WhisperConfig::new(url);
    config.api_key = account.api_key.clone();
    if let Some(model) = &account.model {
        config.model = model.clone();
    }
    Some(WhisperStt::new(config).map(|c| Arc::new(c) as Arc<dyn SpeechToText>))
}

fn openai(
    account: &VendorAccount,
    key: SecretString,
) -> Result<Arc<dyn LanguageModel>, ProviderError> {
    let mut config = match &account.base_url {
        Some(url) => OpenAiConfig::with_base_url(url.clone()),
        None => OpenAiConfig::default(),
    };
    config.api_key = Some(key);
    Ok(Arc::new(OpenAiLlm::new(config)?))
}

fn elevenlabs(
    account: &VendorAccount,
    key: SecretString,
) -> Result<Arc<dyn TextToSpeech>, ProviderError> {
    let mut config = ElevenLabsConfig::new(key);
    if let Some(url) = &account.base_url {
        // One base for both: the websocket uses the same host with ws(s).
        config.http_base = url.clone();
        let mut ws = url.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        if ws.set_scheme(scheme).is_ok() {
            config.ws_base = ws;
        }
    }
    if let Some(model) = &account.model {
        config.default_model = model.clone();
    }
    Ok(Arc::new(ElevenLabsWs::new(config)?))
}
