//! What a call's providers are told about the tenant: the system prompt,
//! the tools, the model and the voice, read from the tenant's record and
//! its `provider_settings`:
//!
//! ```json
//! {
//!   "llm": {"model": "gpt-4o-mini", "temperature": 0.6, "max_tokens": 250},
//!   "tts": {"model": "eleven_flash_v2_5", "voice_settings": {"stability": 0.5}}
//! }
//! ```
//!
//! Missing or ill-typed settings fall back to the defaults rather than
//! failing the call: the caller is already on the line.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::prompt::{self, PromptInputs};
use super::roles::Voice;
use super::{CallSetup, LlmSettings};
use crate::repo::customers::Customer;

/// Platform-wide defaults a tenant's settings override.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallDefaults {
    /// The LLM model when the tenant names none.
    pub llm_model: Option<String>,
    /// The voice when the tenant has none.
    pub voice_id: Option<String>,
}

/// The setup for a call to `customer`, at `now`. `caller_context` is what
/// caller memory knows about the caller, if anything.
pub fn for_call(
    customer: &Customer,
    call_sid: &str,
    now: DateTime<Utc>,
    caller_context: Option<&str>,
    defaults: &CallDefaults,
) -> CallSetup {
    let settings = &customer.provider_settings;
    let mut llm = llm_settings(settings.get("llm"));
    let tenant_model = settings
        .get("llm")
        .and_then(|l| l.get("model"))
        .and_then(Value::as_str)
        .is_some_and(|m| !m.trim().is_empty());
    if let (false, Some(model)) = (tenant_model, &defaults.llm_model) {
        llm.model = model.clone();
    }
    let voice_id = customer
        .voice_id
        .as_deref()
        .or(defaults.voice_id.as_deref());
    CallSetup {
        customer_id: customer.customer_id,
        call_sid: call_sid.to_string(),
        system_prompt: prompt::system_prompt(&PromptInputs {
            agent_name: &customer.agent_name,
            company_name: &customer.name,
            personality: &customer.personality,
            prohibited_topics: &customer.prohibited_topics,
            caller_context,
            now,
            timezone: &customer.timezone,
        }),
        tools: prompt::standard_tools(),
        llm,
        voice: voice(voice_id, settings.get("tts")),
        provider_settings: settings.clone(),
    }
}

/// Temperatures a tenant may set.
const TEMPERATURE: std::ops::RangeInclusive<f64> = 0.0..=2.0;
/// Completion token limits a tenant may set.
const MAX_TOKENS: std::ops::RangeInclusive<u64> = 1..=4_096;

/// Model settings, defaults where the tenant set nothing valid.
pub fn llm_settings(value: Option<&Value>) -> LlmSettings {
    let mut settings = LlmSettings::default();
    let Some(value) = value else {
        return settings;
    };
    if let Some(model) = value.get("model").and_then(Value::as_str) {
        if !model.trim().is_empty() {
            settings.model = model.trim().to_string();
        }
    }
    if let Some(t) = value.get("temperature").and_then(Value::as_f64) {
        if TEMPERATURE.contains(&t) {
            settings.temperature = Some(t as f32);
        }
    }
    if let Some(n) = value.get("max_tokens").and_then(Value::as_u64) {
        if MAX_TOKENS.contains(&n) {
            settings.max_tokens = u32::try_from(n).ok();
        }
    }
    settings
}

/// The tenant's voice.
pub fn voice(voice_id: Option<&str>, tts: Option<&Value>) -> Voice {
    Voice {
        voice_id: voice_id.unwrap_or_default().to_string(),
        model: tts
            .and_then(|t| t.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string),
        settings: tts.and_then(|t| t.get("voice_settings")).cloned(),
    }
}

/// Providers a tenant may put first, per role (`local` is the role's
/// local model).
pub const PROVIDER_CHOICES: [(&str, &[&str]); 3] = [
    ("stt", &["deepgram", "whisper", "moonshine", "local"]),
    ("llm", &["openai", "smollm2", "local"]),
    ("tts", &["elevenlabs", "elevenlabs-http", "flite", "local"]),
];

/// Checks `provider_settings` before it is stored, so a tenant learns of a
/// typo when saving rather than by a call quietly using the defaults:
/// an object with at most the roles `stt`, `llm`, `tts`, each an object
/// whose known keys have the right type and range.
pub fn validate_provider_settings(value: &Value) -> Result<(), String> {
    let roles = value
        .as_object()
        .ok_or("provider settings must be a JSON object")?;
    for (role, settings) in roles {
        let Some((_, allowed)) = PROVIDER_CHOICES.iter().find(|(r, _)| r == role) else {
            return Err(format!("unknown role `{role}` (expected stt, llm or tts)"));
        };
        let settings = settings
            .as_object()
            .ok_or_else(|| format!("`{role}` must be a JSON object"))?;
        for (key, v) in settings {
            let ok = match (role.as_str(), key.as_str()) {
                (_, "provider") => match v.as_str() {
                    Some(p) if allowed.contains(&p) => true,
                    _ => {
                        return Err(format!(
                            "`{role}.provider` must be one of {}",
                            allowed.join(", ")
                        ))
                    }
                },
                (_, "model") => v.as_str().is_some_and(|m| !m.trim().is_empty()),
                ("llm", "temperature") => v.as_f64().is_some_and(|t| TEMPERATURE.contains(&t)),
                ("llm", "max_tokens") => v.as_u64().is_some_and(|n| MAX_TOKENS.contains(&n)),
                ("tts", "voice_settings") => v.is_object(),
                _ => return Err(format!("unknown setting `{role}.{key}`")),
            };
            if !ok {
                return Err(format!("`{role}.{key}` has an invalid value"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn provider_settings_are_checked_before_they_are_stored() {
        let good = json!({
            "stt": {"provider": "deepgram"},
            "llm": {"provider": "local", "model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 200},
            "tts": {"provider": "elevenlabs", "model": "eleven_flash_v2_5", "voice_settings": {"speed": 1.0}}
        });
        assert_eq!(validate_provider_settings(&good), Ok(()));
        assert_eq!(validate_provider_settings(&json!({})), Ok(()));
        for bad in [
            json!([]),
            json!({"asr": {}}),
            json!({"llm": "openai"}),
            json!({"llm": {"provider": "anthropic"}}),
            json!({"tts": {"provider": "deepgram"}}),
            json!({"llm": {"temperature": 3}}),
            json!({"llm": {"max_tokens": 0}}),
            json!({"llm": {"top_p": 0.5}}),
            json!({"tts": {"voice_settings": 1}}),
        ] {
            assert!(validate_provider_settings(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_settings_override_defaults_and_bad_ones_are_ignored() {
        let s = llm_settings(Some(
            &json!({"model": "llama3", "temperature": 0.2, "max_tokens": 99}),
        ));
        assert_eq!(s.model, "llama3");
        assert_eq!(s.temperature, Some(0.2));
        assert_eq!(s.max_tokens, Some(99));
        let s = llm_settings(Some(
            &json!({"model": " ", "temperature": 9, "max_tokens": -1}),
        ));
        assert_eq!(s, LlmSettings::default());
        let v = voice(
            Some("v1"),
            Some(&json!({"model": "m", "voice_settings": {"speed": 1.1}})),
        );
        assert_eq!(v.voice_id, "v1");
        assert_eq!(v.model.as_deref(), Some("m"));
        assert_eq!(v.settings, Some(json!({"speed": 1.1})));
    }
}
