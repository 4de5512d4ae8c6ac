//! Which providers serve a call: the provider mode, the platform's vendor
//! accounts, a tenant's own keys and the local models, assembled into the
//! [`Chains`] the pipeline runs.
//!
//! In `auto` mode each role's chain is, in order: the vendor with the
//! tenant's own key (bring your own key), the vendor with the platform's
//! key, then the local model of that role. `offline` uses the local models
//! only. A vendor client that cannot be built (a malformed key, say) is
//! logged and left out; the call still gets the rest of the chain.
//!
//! A tenant picks its first choice per role in `provider_settings`
//! (`{"stt": {"provider": "deepgram"}, "llm": {"provider": "openai"},
//! "tts": {"provider": "elevenlabs"}}`, or `"local"` for the local model):
//! every client of that vendor moves to the front of the role's chain, the
//! rest stay behind it as fallbacks, in the order above. A tenant's own key
//! is used with the non-secret settings stored beside it (`base_url`,
//! `model`; `credentials set … --setting base_url=https://…`), falling back
//! to the platform account's.

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

    /// The tenant's own account for `provider`: its key, with its stored
    /// base URL and model over the platform account's.
    async fn tenant_account(
        &self,
        setup: &CallSetup,
        provider: &str,
        platform: &VendorAccount,
    ) -> Option<(VendorAccount, SecretString)> {
        match self
            .platform
            .open_credential(setup.customer_id, provider)
            .await
        {
            Ok(found) => found
                .map(|(summary, key)| (tenant_account(platform, &summary.settings, provider), key)),
            Err(error) => {
                tracing::warn!(provider, %error, "could not open the tenant's credential; using the platform's");
                None
            }
        }
    }
}

/// The platform account overlaid with a tenant credential's non-secret
/// settings. A base URL that does not parse is ignored (and logged): the
/// platform's endpoint serves instead.
pub fn tenant_account(
    platform: &VendorAccount,
    settings: &serde_json::Value,
    provider: &str,
) -> VendorAccount {
    let text = |key: &str| {
        settings
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let mut account = VendorAccount {
        api_key: None,
        ..platform.clone()
    };
    if let Some(raw) = text("base_url") {
        match url::Url::parse(raw) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => account.base_url = Some(url),
            _ => tracing::warn!(
                provider,
                "the tenant's base_url setting is not an http(s) URL; using the platform's"
            ),
        }
    }
    if let Some(model) = text("model") {
        account.model = Some(model.to_string());
    }
    if let Some(voice) = text("voice_id") {
        account.voice_id = Some(voice.to_string());
    }
    account
}

/// Moves the tenant's chosen provider of a role to the front of its chain.
/// `choice` is the tenant's `provider_settings.<role>.provider`; `local`
/// means the role's local model. Unknown names change nothing (the call
/// must not fail over a typo; the platform API validates what it stores).
pub fn prefer<T: ?Sized>(
    chain: &mut Vec<Arc<T>>,
    choice: Option<&str>,
    local_name: Option<&str>,
    name: impl Fn(&T) -> &'static str,
) {
    let Some(choice) = choice.map(str::trim).filter(|c| !c.is_empty()) else {
        return;
    };
    let wanted = if choice.eq_ignore_ascii_case("local") {
        match local_name {
            Some(local) => local,
            None => return,
        }
    } else {
        choice
    };
    let matches = |client: &Arc<T>| {
        let n = name(client);
        // `elevenlabs` also picks its HTTP streaming fallback client.
        n.eq_ignore_ascii_case(wanted)
            || n.split('-')
                .next()
                .is_some_and(|base| base.eq_ignore_ascii_case(wanted))
    };
    // A stable partition: chosen clients first, each side in its order.
    let (mut first, rest): (Vec<_>, Vec<_>) = chain.drain(..).partition(|c| matches(c));
    first.extend(rest);
    *chain = first;
}

/// The tenant's chosen provider for `role` (`stt`, `llm`, `tts`).
fn choice<'a>(setup: &'a CallSetup, role: &str) -> Option<&'a str> {
    setup.provider_settings.get(role)?.get("provider")?.as_str()
}

impl ChainSource for AutoChains {
    fn chains<'a>(&'a self, setup: &'a CallSetup) -> BoxFuture<'a, Chains> {
        Box::pin(async move {
            let mut chains = Chains::default();
            let vendors = &self.vendors;
            if let Some((account, key)) = self
                .tenant_account(setup, "deepgram", &vendors.deepgram)
                .await
            {
                chains.stt.extend(keep(deepgram(&account, key)));
            }
            if let Some((account, key)) =
                self.tenant_account(setup, "openai", &vendors.openai).await
            {
                chains.llm.extend(keep(openai(&account, key)));
            }
            if let Some((account, key)) = self
                .tenant_account(setup, "elevenlabs", &vendors.elevenlabs)
                .await
            {
                chains.tts.extend(keep(elevenlabs(&account, key)));
            }
            chains.stt.extend(self.platform_chains.stt.iter().cloned());
            chains.llm.extend(self.platform_chains.llm.iter().cloned());
            chains.tts.extend(self.platform_chains.tts.iter().cloned());
            append_local(&mut chains, &self.local);
            let local_stt = self.local.stt.as_ref().map(|c| c.name());
            let local_llm = self.local.llm.as_ref().map(|c| c.name());
            let local_tts = self.local.tts.as_ref().map(|c| c.name());
            prefer(&mut chains.stt, choice(setup, "stt"), local_stt, |c| {
                c.name()
            });
            prefer(&mut chains.llm, choice(setup, "llm"), local_llm, |c| {
                c.name()
            });
            prefer(&mut chains.tts, choice(setup, "tts"), local_tts, |c| {
                c.name()
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stand-in client: only its name matters to the ordering.
    struct Named(&'static str);

    fn chain(names: &[&'static str]) -> Vec<Arc<Named>> {
        names.iter().map(|n| Arc::new(Named(n))).collect()
    }

    fn names(chain: &[Arc<Named>]) -> Vec<&'static str> {
        chain.iter().map(|c| c.0).collect()
    }

    #[test]
    fn the_tenants_choice_goes_first_and_the_rest_stay_as_fallbacks() {
        let mut tts = chain(&["elevenlabs", "elevenlabs-http", "flite"]);
        prefer(&mut tts, Some("local"), Some("flite"), |c| c.0);
        assert_eq!(names(&tts), ["flite", "elevenlabs", "elevenlabs-http"]);
        prefer(&mut tts, Some("ElevenLabs"), Some("flite"), |c| c.0);
        assert_eq!(names(&tts), ["elevenlabs", "elevenlabs-http", "flite"]);

        let mut stt = chain(&["deepgram", "whisper", "moonshine"]);
        prefer(&mut stt, Some("whisper"), Some("moonshine"), |c| c.0);
        assert_eq!(names(&stt), ["whisper", "deepgram", "moonshine"]);
    }

    #[test]
    fn no_unknown_or_unavailable_choice_changes_the_order() {
        let original = ["openai", "smollm2"];
        for choice in [None, Some(""), Some("anthropic"), Some("  ")] {
            let mut llm = chain(&original);
            prefer(&mut llm, choice, Some("smollm2"), |c| c.0);
            assert_eq!(names(&llm), original, "{choice:?}");
        }
        // `local` with no local model loaded.
        let mut llm = chain(&["openai"]);
        prefer(&mut llm, Some("local"), None, |c| c.0);
        assert_eq!(names(&llm), ["openai"]);
    }

    #[test]
    fn a_tenant_credential_overrides_base_url_and_model_but_not_with_junk() {
        let platform = VendorAccount {
            api_key: Some(SecretString::from("platform-key".to_string())),
            base_url: Some(url::Url::parse("https://api.deepgram.com").expect("url")),
            model: Some("nova-2".into()),
            voice_id: None,
        };
        let own = tenant_account(
            &platform,
            &json!({"base_url": "https://dg.example.net/v1", "model": "nova-3"}),
            "deepgram",
        );
        assert_eq!(
            own.base_url.as_ref().map(url::Url::as_str),
            Some("https://dg.example.net/v1")
        );
        assert_eq!(own.model.as_deref(), Some("nova-3"));
        assert!(own.api_key.is_none(), "the platform key never rides along");

        let junk = tenant_account(
            &platform,
            &json!({"base_url": "ftp://x", "model": " "}),
            "deepgram",
        );
        assert_eq!(junk.base_url, platform.base_url);
        assert_eq!(junk.model.as_deref(), Some("nova-2"));
    }
}
