//! A fake OpenAI-compatible Whisper server on 127.0.0.1:0:
//! `POST /v1/audio/transcriptions` with a multipart body, parsed here by
//! hand (boundary, part headers, binary-safe bodies). It checks the bearer
//! key (401 with OpenAI's error body), that `model` is present and that
//! `file` is a valid WAV of 8 kHz mono 16-bit PCM (400 otherwise, as the
//! real API rejects bad files), records each request and answers with
//! scripted transcripts, errors (401/429 with `Retry-After`/500) or delays.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;

/// The key the fake accepts.
pub const WHISPER_KEY: &str = "sk-whisper-test-4d2a";

/// A canned answer, used in order before the default one.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `{"text": …}` with 200.
    Text(&'static str),
    /// The same, after a delay.
    Slow(Duration, &'static str),
    /// An error status with OpenAI's error body and an optional
    /// `Retry-After` (seconds).
    Error(u16, &'static str, Option<u64>),
}

/// The WAV file as the fake decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    /// Format tag (1 = PCM).
    pub format_tag: u16,
    /// Channels.
    pub channels: u16,
    /// Sample rate.
    pub sample_rate: u32,
    /// Bits per sample.
    pub bits: u16,
    /// The samples.
    pub samples: Vec<i16>,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// Text fields (`model`, `response_format`, `language`, …).
    pub fields: BTreeMap<String, String>,
    /// `file`'s filename and content type.
    pub file_name: Option<String>,
    /// `file`'s declared content type.
    pub file_type: Option<String>,
    /// The decoded file, when it was a valid WAV.
    pub wav: Option<Wav>,
}

#[derive(Default)]
struct FakeState {
    script: VecDeque<Reply>,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<FakeState>>;

/// The running fake.
pub struct FakeWhisper {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Shared,
    server: JoinHandle<()>,
}

impl Drop for FakeWhisper {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeWhisper {
    /// Starts the fake on an ephemeral loopback port.
    pub async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcribe))
            .with_state(state.clone());
        let (addr, server) = crate::helpers::serve_loopback(app, "the fake Whisper").await;
        Self {
            addr,
            state,
            server,
        }
    }

    /// `http://addr/v1`.
    pub fn base_url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/v1", self.addr)).expect("fake Whisper URL")
    }

    /// Queues canned answers.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("state").script.extend(replies);
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("state").seen.clone()
    }
}

fn openai_error(status: StatusCode, message: &str, kind: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

async fn transcribe(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            let (kind, params) = ct.split_once(';')?;
            (kind.trim() == "multipart/form-data").then_some(params)?;
            params.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == "boundary").then(|| v.trim_matches('"').to_string())
            })
        });
    let Some(parts) = boundary.and_then(|b| parse_multipart(&body, &b)) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Expected a multipart/form-data body.",
            "invalid_request_error",
        );
    };
    let mut seen = Seen {
        authorization: authorization.clone(),
        fields: BTreeMap::new(),
        file_name: None,
        file_type: None,
        wav: None,
    };
    let mut file = None;
    for part in parts {
        if part.name == "file" {
            seen.file_name = part.file_name.clone();
            seen.file_type = part.content_type.clone();
            file = Some(part.body);
        } else {
            seen.fields
                .insert(part.name, String::from_utf8_lossy(&part.body).into_owned());
        }
    }
    seen.wav = file.as_deref().and_then(parse_wav);
    let reply = {
        let mut s = state.lock().expect("state");
        s.seen.push(seen.clone());
        s.script.pop_front()
    };
    if authorization.as_deref() != Some(format!("Bearer {WHISPER_KEY}").as_str()) {
        return openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            "invalid_request_error",
        );
    }
    if !seen.fields.contains_key("model") {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
        );
    }
    let valid = seen.wav.as_ref().is_some_and(|w| {
        w.format_tag == 1 && w.channels == 1 && w.sample_rate == 8000 && w.bits == 16
    });
    if !valid {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid file format. Supported formats: ['flac', 'mp3', 'wav', …]",
            "invalid_request_error",
        );
    }
    let count = state.lock().expect("state").seen.len();
    match reply {
        None => Json(json!({"text": format!("utterance {count}")})).into_response(),
        Some(Reply::Text(text)) => Json(json!({"text": text})).into_response(),
        Some(Reply::Slow(delay, text)) => {
            tokio::time::sleep(delay).await;
            Json(json!({"text": text})).into_response()
        }
        Some(Reply::Error(status, message, retry_after)) => {
            let status = StatusCode::from_u16(status).expect("status");
            let mut response = openai_error(status, message, "server_error");
            if let Some(seconds) = retry_after {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    seconds.to_string().parse().expect("header"),
                );
            }
            response
        }
    }
}

struct Part {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `--boundary CRLF headers CRLF CRLF body CRLF --boundary … --boundary--`.
fn parse_multipart(body: &[u8], boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        let after_head = &rest[head_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let body_end = find(after_head, &closing)?;
        let mut part = Part {
            name: String::new(),
            file_name: None,
            content_type: None,
            body: after_head[..body_end].to_vec(),
        };
        for line in head.split("\r\n") {
            let (key, value) = line.split_once(':')?;
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for param in value.split(';').skip(1) {
                        if let Some((k, v)) = param.trim().split_once('=') {
                            let v = v.trim_matches('"').to_string();
                            match k {
                                "name" => part.name = v,
                                "filename" => part.file_name = Some(v),
                                _ => {}
                            }
                        }
                    }
                }
                "content-type" => part.content_type = Some(value.trim().to_string()),
                _ => {}
            }
        }
        parts.push(part);
        rest = &after_head[body_end + closing.len()..];
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Walks the RIFF chunks: `fmt ` and `data` are required.
fn parse_wav(bytes: &[u8]) -> Option<Wav> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    if le32(bytes, 4)? as usize != bytes.len() - 8 {
        return None;
    }
    let mut at = 12;
    let mut format = None;
    let mut data = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = le32(bytes, at + 4)? as usize;
        let body = bytes.get(at + 8..at + 8 + len)?;
        match id {
            b"fmt " => {
                format = Some((
                    le16(body, 0)?,
                    le16(body, 2)?,
                    le32(body, 4)?,
                    le16(body, 14)?,
                ));
            }
            b"data" => data = Some(body),
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    let (format_tag, channels, sample_rate, bits) = format?;
    let data = data?;
    let samples = data
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    Some(Wav {
        format_tag,
        channels,
        sample_rate,
        bits,
        samples,
    })
}
