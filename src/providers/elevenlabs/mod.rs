//! ElevenLabs text-to-speech (PROTOCOLS.md §5): the multi-context websocket
//! client [`ElevenLabsWs`] (one socket per call, one context per agent turn)
//! and the HTTP streaming client [`ElevenLabsHttp`], which is also the
//! websocket client's fallback when its socket cannot be opened or drops.
//!
//! Both ask for `ulaw_8000`, so the audio they report is headerless 8 kHz
//! mu-law that goes to Twilio as is. The API key travels only in the
//! `xi-api-key` header (marked sensitive); it is never logged and never part
//! of an error message.
//!
//! Text handling, shared by both clients: each text chunk of a turn is cut
//! of trailing whitespace and sent with exactly one trailing space (empty
//! chunks are skipped). "The turn's text" (for `text_end` and the character
//! counts in `Done`) is the concatenation of those chunks without the final
//! space.

mod http;
mod wire;
mod ws;

use std::time::Duration;

use reqwest::header::{HeaderValue, InvalidHeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

pub use http::ElevenLabsHttp;
pub use ws::ElevenLabsWs;

use super::roles::{ProviderError, Voice};

/// The audio format both clients request: 8 kHz mu-law, no header.
pub const OUTPUT_FORMAT: &str = "ulaw_8000";

/// The longest `inactivity_timeout` the websocket accepts.
pub const MAX_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(180);

/// Name of the websocket client in logs, metrics and errors.
pub const WS_NAME: &str = "elevenlabs";

/// Name of the HTTP client in logs, metrics and errors.
pub const HTTP_NAME: &str = "elevenlabs-http";

/// Vendor messages kept in errors are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Settings shared by both ElevenLabs clients.
#[derive(Debug, Clone)]
pub struct ElevenLabsConfig {
    /// Base of the HTTP API (`https://api.elevenlabs.io`); tests point it at
    /// a fake.
    pub http_base: Url,
    /// Base of the websocket API (`wss://api.elevenlabs.io`).
    pub ws_base: Url,
    /// The account's API key, sent as `xi-api-key`.
    pub api_key: SecretString,
    /// Model used when the tenant's voice names none.
    pub default_model: String,
    /// Voice settings used when the tenant's voice has none (omitted from
    /// requests when `None`, so the voice's stored settings apply).
    pub default_voice_settings: Option<Value>,
    /// `generation_config.chunk_length_schedule` of every websocket context:
    /// how many buffered characters trigger generation, chunk after chunk.
    pub chunk_length_schedule: Vec<u32>,
    /// The websocket's `inactivity_timeout` query parameter (capped at
    /// 180 s): how long the vendor keeps an idle socket open.
    pub inactivity_timeout: Duration,
    /// A keep-alive (`{"text":" "}`) goes to the open context after this
    /// long without sending anything; keep it below `inactivity_timeout`.
    pub keep_alive: Duration,
    /// Limit on opening the websocket (TCP, TLS and handshake).
    pub connect_timeout: Duration,
    /// Limit on an HTTP request until its response headers arrive.
    pub request_timeout: Duration,
    /// Limit on the wait for the next piece of a streamed HTTP body.
    pub stream_idle_timeout: Duration,
}

impl ElevenLabsConfig {
    /// The production endpoints, `eleven_flash_v2_5`, the schedule from the
    /// vendor's documentation and the longest inactivity timeout.
    pub fn new(api_key: SecretString) -> Self {
        Self {
            http_base: Url::parse("https://api.elevenlabs.io").unwrap_or_else(|_| unreachable!()),
            ws_base: Url::parse("wss://api.elevenlabs.io").unwrap_or_else(|_| unreachable!()),
            api_key,
            default_model: "eleven_flash_v2_5".to_string(),
            default_voice_settings: None,
            chunk_length_schedule: vec![120, 160, 250, 290],
            inactivity_timeout: MAX_INACTIVITY_TIMEOUT,
            keep_alive: Duration::from_secs(150),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(10),
        }
    }

    /// The `xi-api-key` header value, marked sensitive so that it is
    /// redacted from any debug output.
    fn key_header(&self) -> Result<HeaderValue, InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(self.api_key.expose_secret())?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The model for `voice`.
    fn model_for(&self, voice: &Voice) -> String {
        voice
            .model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| self.default_model.clone())
    }

    /// The voice settings for `voice`, if any.
    fn settings_for(&self, voice: &Voice) -> Option<Value> {
        voice
            .settings
            .clone()
            .or_else(|| self.default_voice_settings.clone())
    }
}

/// `base` with `/v1/text-to-speech/{voice_id}/{endpoint}` as its path (the
/// voice id percent-encoded as one segment) and `query` as its query.
fn endpoint_url(
    base: &Url,
    voice_id: &str,
    endpoint: &str,
    query: &[(&str, String)],
    provider: &'static str,
) -> Result<Url, ProviderError> {
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| ProviderError::Unavailable {
                provider,
                message: format!("base URL {base} cannot take a path"),
            })?;
        segments
            .pop_if_empty()
            .extend(["v1", "text-to-speech", voice_id, endpoint]);
    }
    url.set_query(None);
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in query {
            pairs.append_pair(name, value);
        }
    }
    Ok(url)
}

/// A chunk as it goes on the wire: trailing whitespace cut, one space
/// added; `None` for a chunk with nothing to say.
fn wire_chunk(text: &str) -> Option<String> {
    let trimmed = text.trim_end();
    if trimmed.trim_start().is_empty() {
        None
    } else {
        Some(format!("{trimmed} "))
    }
}

/// Cuts a vendor message to a length fit for logs and errors.
fn short(message: &str) -> String {
    let message = message.trim();
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        message.to_string()
    } else {
        let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push('…');
        cut
    }
}

/// The words of an ElevenLabs error body: `detail` as a string, as an
/// object with `message`, or as a list of validation errors with `msg`.
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let detail = value.get("detail").unwrap_or(&value);
    let message = match detail {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.get("msg").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(map) => map
            .get("message")
            .or_else(|| map.get("msg"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                map.get("status")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })?,
        _ => return None,
    };
    (!message.trim().is_empty()).then(|| short(&message))
}

/// The error for a non-success HTTP answer (or websocket handshake answer).
fn classify(
    provider: &'static str,
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> ProviderError {
    let message = error_message(body).unwrap_or_else(|| {
        reqwest::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("no message")
            .to_string()
    });
    match status {
        401 | 403 => ProviderError::Unauthorized { provider, message },
        429 => ProviderError::RateLimited {
            provider,
            retry_after,
        },
        500..=599 => ProviderError::Server {
            provider,
            status,
            message,
        },
        _ => ProviderError::Rejected {
            provider,
            status,
            message,
        },
    }
}

/// A `Retry-After` header in seconds (HTTP dates are ignored).
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let seconds: f64 = value?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_the_vendors_words() {
        let validation = br#"{"detail":[{"loc":["body","text"],"msg":"text too long","type":"x"},{"msg":"bad voice"}]}"#;
        assert_eq!(
            error_message(validation).as_deref(),
            Some("text too long; bad voice")
        );
        let auth = br#"{"detail":{"status":"invalid_api_key","message":"Invalid API key"}}"#;
        assert_eq!(error_message(auth).as_deref(), Some("Invalid API key"));
        assert_eq!(error_message(b"<html>").as_deref(), None);
        let err = classify(HTTP_NAME, 503, b"oops", None);
        assert_eq!(
            err,
            ProviderError::Server {
                provider: HTTP_NAME,
                status: 503,
                message: "Service Unavailable".into()
            }
        );
    }

    #[test]
    fn urls_escape_the_voice_and_keep_the_base_path() {
        let base = Url::parse("http://127.0.0.1:9/proxy/").expect("url");
        let url = endpoint_url(
            &base,
            "a/b c",
            "stream",
            &[("output_format", OUTPUT_FORMAT.into())],
            HTTP_NAME,
        )
        .expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/proxy/v1/text-to-speech/a%2Fb%20c/stream?output_format=ulaw_8000"
        );
    }

    #[test]
    fn chunks_end_with_one_space() {
        assert_eq!(
            wire_chunk("Hello there.  \n").as_deref(),
            Some("Hello there. ")
        );
        assert_eq!(wire_chunk("  \t"), None);
        assert_eq!(
            retry_after(Some(&HeaderValue::from_static("7"))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
    }

    #[test]
    fn the_key_stays_out_of_debug_output() {
        let config = ElevenLabsConfig::new(SecretString::from("sk-very-secret".to_string()));
        assert!(!format!("{config:?}").contains("sk-very-secret"));
        let header = config.key_header().expect("header");
        assert!(!format!("{header:?}").contains("sk-very-secret"));
    }
}
