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

use super::roles::Voice;
use super::{CallSetup, LlmSettings};
use crate::repo::customers::Customer;

/// The setup for a call to `customer`, at `now`.
pub fn for_call(customer: &Customer, call_sid: &str, now: DateTime<Utc>) -> CallSetup {
    let settings = &customer.provider_settings;
    CallSetup {
        customer_id: customer.customer_id,
        call_sid: call_sid.to_string(),
        system_prompt: system_prompt(customer, now),
        tools: Vec::new(),
        llm: llm_settings(settings.get("llm")),
        voice: voice(customer.voice_id.as_deref(), settings.get("tts")),
        provider_settings: settings.clone(),
    }
}

fn system_prompt(customer: &Customer, now: DateTime<Utc>) -> String {
    format!(
        "You are {agent}, the phone receptionist of {company}. Speak in short sentences. \
         The time is {now} UTC.",
        agent = customer.agent_name,
        company = customer.name,
        now = now.format("%Y-%m-%d %H:%M"),
    )
}

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
        if (0.0..=2.0).contains(&t) {
            settings.temperature = Some(t as f32);
        }
    }
    if let Some(n) = value.get("max_tokens").and_then(Value::as_u64) {
        if (1..=4_096).contains(&n) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
