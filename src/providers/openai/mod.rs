//! The OpenAI-compatible streaming chat-completions client
//! ([`OpenAiLlm`], a [`LanguageModel`]): `POST {base}/chat/completions`
//! with `stream: true`, read as server-sent events (PROTOCOLS.md §7). It
//! serves OpenAI itself and self-hosted "compatible" servers (vLLM,
//! llama.cpp, Ollama, LM Studio…) through a configurable base URL.
//!
//! Layers, bytes up: [`sse`] cuts the body into event payloads, [`wire`]
//! decodes them leniently and assembles text, tool calls, usage and the
//! finish; this module does the HTTP, maps statuses to [`ProviderError`]
//! and exposes the result as an [`LlmStream`]. Dropping the stream drops
//! the response and with it the connection (that is how a barge-in
//! cancels a reply). No retries here: the pipeline's fault policy decides.
//!
//! Why not async-openai for this path: its chat-completion stream types
//! are strict serde types. `finish_reason` is an enum, so the `""` that
//! compatible servers send is a decode error, and `usage: {}` fails its
//! required token counts, so a real llama.cpp/vLLM-style stream errors out
//! part-way. Its bring-your-own-types mode would take lenient types, but
//! what is left of it then is an HTTP call and its SSE reader
//! (reqwest-eventsource), whose failures arrive as event-source errors
//! that we would still have to map ourselves (429 with `Retry-After`, the
//! vendor's `error.message`, a dropped connection versus a bad frame),
//! and it would pull in a large dependency for that. The request and
//! chunk types here are small and unit-tested against OpenAI's shapes,
//! and the SSE decoder is sans-IO.

pub mod sse;
pub mod wire;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use self::sse::SseDecoder;
use self::wire::{error_text, truncate, ChatRequest, CompletionAssembler, Progress, PROVIDER};
use super::roles::{LanguageModel, LlmEvent, LlmRequest, LlmStream, ProviderError};

/// The most of an error body we read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Settings of an [`OpenAiLlm`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// API base, up to and including the version: `https://api.openai.com/v1`,
    /// or `http://127.0.0.1:8000/v1` for a self-hosted server. Requests go
    /// to `{base_url}/chat/completions`.
    pub base_url: Url,
    /// Sent as `Authorization: Bearer …` when set; self-hosted servers
    /// often need none.
    pub api_key: Option<SecretString>,
    /// Limit on opening the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence tolerated: until the response headers, then between
    /// two reads of the body. Servers that think long send `: ping`
    /// comments, which count as traffic. The per-turn latency budget is
    /// the pipeline's; this only catches a server that went mute.
    pub idle_timeout: Duration,
}

impl OpenAiConfig {
    /// OpenAI's public API base.
    pub const OPENAI_BASE_URL: &'static str = "https://api.openai.com/v1";

    /// Defaults with another base URL.
    pub fn with_base_url(base_url: Url) -> Self {
        Self {
            base_url,
            ..Self::default()
        }
    }
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            // A constant, checked by the `default_config_points_at_openai` test.
            base_url: Url::parse(Self::OPENAI_BASE_URL).expect("OPENAI_BASE_URL is a valid URL"),
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// An OpenAI-compatible chat-completions client. Cheap to clone; one per
/// process is enough (connections are pooled).
#[derive(Debug, Clone)]
pub struct OpenAiLlm {
    /// Pooled HTTP client (rustls), no redirects followed.
    http: reqwest::Client,
    /// `{base}/chat/completions`.
    endpoint: Url,
    /// The bearer token, if any; never logged.
    api_key: Option<SecretString>,
    /// See [`OpenAiConfig::idle_timeout`].
    idle_timeout: Duration,
}

impl OpenAiLlm {
    /// Builds the client. Fails only if the base URL cannot take a path
    /// or the TLS stack cannot start.
    pub fn new(config: OpenAiConfig) -> Result<Self, ProviderError> {
        let endpoint = completions_url(&config.base_url)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("switchboard/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ProviderError::Unavailable {
                provider: PROVIDER,
                message: format!("cannot build the HTTP client: {}", describe(&error)),
            })?;
        Ok(Self {
            http,
            endpoint,
            api_key: config.api_key,
            idle_timeout: config.idle_timeout,
        })
    }

    /// Where completions are posted.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }
}

impl LanguageModel for OpenAiLlm {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn stream(&self, request: LlmRequest) -> BoxFuture<'static, Result<LlmStream, ProviderError>> {
        let client = self.clone();
        Box::pin(async move { client.start(request).await })
    }
}

impl OpenAiLlm {
    /// Sends the request and, once the server accepted it, returns the
    /// event stream.
    async fn start(self, request: LlmRequest) -> Result<LlmStream, ProviderError> {
        let body = serde_json::to_vec(&ChatRequest::new(&request)).map_err(|error| {
            ProviderError::Rejected {
                provider: PROVIDER,
                status: 0,
                message: format!("the request cannot be encoded: {error}"),
            }
        })?;
        let mut builder = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(body);
        if let Some(key) = &self.api_key {
            builder = builder.header(AUTHORIZATION, bearer(key)?);
        }
        let response = match tokio::time::timeout(self.idle_timeout, builder.send()).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    provider: PROVIDER,
                    budget: self.idle_timeout,
                })
            }
            Ok(Err(error)) => {
                return Err(ProviderError::Network {
                    provider: PROVIDER,
                    message: describe(&error),
                })
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = read_capped(response, self.idle_timeout).await;
            return Err(self.scrub(classify(status, &headers, &body)));
        }
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim_start().starts_with("application/json"));
        if is_json {
            let body = read_capped(response, self.idle_timeout).await;
            return Err(self.scrub(ProviderError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "expected an event stream, got a JSON body (does the server support \
                     stream: true?): {}",
                    body_text(&body)
                ),
            }));
        }
        Ok(Box::pin(events(response, self.idle_timeout)))
    }

    /// Removes the API key from a vendor message, should a server echo it.
    fn scrub(&self, error: ProviderError) -> ProviderError {
        let Some(key) = &self.api_key else {
            return error;
        };
        let key = key.expose_secret();
        if key.is_empty() {
            return error;
        }
        let clean = |message: String| message.replace(key, "[redacted]");
        match error {
            ProviderError::Unauthorized { provider, message } => ProviderError::Unauthorized {
                provider,
                message: clean(message),
            },
            ProviderError::Server {
                provider,
                status,
                message,
            } => ProviderError::Server {
                provider,
                status,
                message: clean(message),
            },
            ProviderError::Rejected {
                provider,
                status,
                message,
            } => ProviderError::Rejected {
                provider,
                status,
                message: clean(message),
            },
            ProviderError::Protocol { provider, message } => ProviderError::Protocol {
                provider,
                message: clean(message),
            },
            other => other,
        }
    }
}

/// The `Authorization` header value, marked sensitive so it is never
/// printed by the HTTP stack.
fn bearer(key: &SecretString) -> Result<HeaderValue, ProviderError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())).map_err(|_| {
            ProviderError::Unavailable {
                provider: PROVIDER,
                message: "the API key contains characters not allowed in an HTTP header".to_owned(),
            }
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `{base}/chat/completions`, whether or not the base ends with `/`.
fn completions_url(base: &Url) -> Result<Url, ProviderError> {
    if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
        return Err(ProviderError::Unavailable {
            provider: PROVIDER,
            message: format!("base URL {base} is not an http(s) URL"),
        });
    }
    let mut endpoint = base.clone();
    let path = format!("{}/chat/completions", base.path().trim_end_matches('/'));
    endpoint.set_path(&path);
    endpoint.set_query(None);
    endpoint.set_fragment(None);
    Ok(endpoint)
}

/// The status of a refused request as a [`ProviderError`], with the
/// vendor's message.
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let message = body_text(body);
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        message
    };
    match status.as_u16() {
        401 | 403 => ProviderError::Unauthorized {
            provider: PROVIDER,
            message,
        },
        429 => ProviderError::RateLimited {
            provider: PROVIDER,
            retry_after: retry_after(headers),
        },
        code @ 500..=599 => ProviderError::Server {
            provider: PROVIDER,
            status: code,
            message,
        },
        code => ProviderError::Rejected {
            provider: PROVIDER,
            status: code,
            message,
        },
    }
}

/// The readable part of an error body: the JSON error message, or the
/// start of the text.
fn body_text(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => error_text(&json),
        Err(_) => truncate(String::from_utf8_lossy(body).trim(), 200),
    }
}

/// How long the server asks us to wait: OpenAI's `retry-after-ms`, else
/// `Retry-After` in (possibly fractional) seconds. The HTTP-date form is
/// not read (it would need the wall clock); the pipeline's backoff applies.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Duration::try_from_secs_f64(ms / 1000.0).ok();
        }
    }
    let seconds = header(RETRY_AFTER.as_str())?.parse::<f64>().ok()?;
    if seconds.is_finite() && seconds >= 0.0 {
        Duration::try_from_secs_f64(seconds).ok()
    } else {
        None
    }
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an error body; what cannot
/// be read in time is left out.
async fn read_capped(mut response: reqwest::Response, idle: Duration) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(idle, response.chunk()).await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    body
}

/// The error and its causes, `: `-joined (reqwest keeps the useful part,
/// such as "connection refused", in its sources).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What the event stream carries between polls.
struct Reader {
    /// The response body being read; dropped (closing the connection)
    /// when the stream is.
    response: reqwest::Response,
    /// Bytes to event payloads.
    decoder: SseDecoder,
    /// Payloads to events.
    assembler: CompletionAssembler,
    /// Events decoded but not yet yielded.
    ready: VecDeque<Result<LlmEvent, ProviderError>>,
    /// Nothing more will be read.
    finished: bool,
    /// See [`OpenAiConfig::idle_timeout`].
    idle: Duration,
}

/// The response body as a stream of events, ending after `Done` or the
/// first error.
fn events(
    response: reqwest::Response,
    idle: Duration,
) -> impl futures_util::Stream<Item = Result<LlmEvent, ProviderError>> + Send + 'static {
    let reader = Reader {
        response,
        decoder: SseDecoder::new(),
        assembler: CompletionAssembler::new(),
        ready: VecDeque::new(),
        finished: false,
        idle,
    };
    futures_util::stream::unfold(reader, |mut reader| async move {
        loop {
            if let Some(item) = reader.ready.pop_front() {
                return Some((item, reader));
            }
            if reader.finished {
                return None;
            }
            reader.read_more().await;
        }
    })
}

impl Reader {
    /// Reads the next piece of the body and decodes what it completes.
    async fn read_more(&mut self) {
        let mut out = Vec::new();
        match tokio::time::timeout(self.idle, self.response.chunk()).await {
            Err(_) => {
                self.assembler.fail(
                    &mut out,
                    ProviderError::Timeout {
                        provider: PROVIDER,
                        budget: self.idle,
                    },
                );
                self.finished = true;
            }
            Ok(Err(error)) => {
                self.assembler.fail(
                    &mut out,
                    ProviderError::Network {
                        provider: PROVIDER,
                        message: format!("the stream broke off: {}", describe(&error)),
                    },
                );
                self.finished = true;
            }
            Ok(Ok(Some(bytes))) => {
                for payload in self.decoder.push(&bytes) {
                    if self.assembler.feed(&payload, &mut out) == Progress::Finished {
                        self.finished = true;
                        break;
                    }
                }
            }
            Ok(Ok(None)) => {
                let mut progress = Progress::Streaming;
                if let Some(payload) = self.decoder.finish() {
                    progress = self.assembler.feed(&payload, &mut out);
                }
                if progress == Progress::Streaming {
                    self.assembler.end_of_body(&mut out);
                }
                self.finished = true;
            }
        }
        self.ready.extend(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_appends_to_the_base_path() {
        for base in ["https://api.openai.com/v1", "https://api.openai.com/v1/"] {
            let url = Url::parse(base).expect("url");
            assert_eq!(
                completions_url(&url).expect("endpoint").as_str(),
                "https://api.openai.com/v1/chat/completions"
            );
        }
        let local = Url::parse("http://127.0.0.1:8000").expect("url");
        assert_eq!(
            completions_url(&local).expect("endpoint").as_str(),
            "http://127.0.0.1:8000/chat/completions"
        );
        let bad = Url::parse("mailto:x@example.com").expect("url");
        assert!(completions_url(&bad).is_err());
    }

    #[test]
    fn default_config_points_at_openai() {
        let config = OpenAiConfig::default();
        assert_eq!(config.base_url.as_str(), "https://api.openai.com/v1");
        assert!(config.api_key.is_none());
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1.5"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        let mut date = HeaderMap::new();
        date.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
        date.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after(&date), None);
    }

    #[test]
    fn statuses_map_to_errors() {
        let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
        let none = HeaderMap::new();
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &none, body),
            ProviderError::Unauthorized {
                provider: PROVIDER,
                message: "Incorrect API key provided".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, &none, b""),
            ProviderError::Unauthorized { message, .. } if message == "Forbidden"
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &none, b"<html>bad gateway</html>"),
            ProviderError::Server { status: 502, message, .. } if message == "<html>bad gateway</html>"
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &none, br#"{"error":{"message":"no such model"}}"#),
            ProviderError::Rejected { status: 404, message, .. } if message == "no such model"
        ));
    }
}
