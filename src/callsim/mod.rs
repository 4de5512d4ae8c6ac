//! `switchboard callsim`: plays Twilio faithfully against any Switchboard
//! server. It signs and posts the voice webhook, follows the TwiML, opens
//! the media websocket, sends `connected` and `start` with the custom
//! parameters, streams caller audio as real-time paced 20 ms mu-law frames
//! (correct `sequenceNumber`, `chunk`, `timestamp`), plays the agent's audio
//! in real time like Twilio's buffer (a mark echoes when the audio before it
//! has played; `clear` flushes and echoes every pending mark), sends DTMF and
//! `stop`, records the agent's audio, and checks every frame it receives is
//! on spec. It reports per-turn latency: caller end of speech → first agent
//! audio, and barge-in onset → `clear` received.

mod fuzz;
pub mod load;
mod script;

use std::collections::VecDeque;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

pub use script::{load_ulaw, parse_duration, parse_script, ScriptError, Step};

use crate::twilio::signature;

/// A buffer that ran dry this recently and then got more audio is an
/// underrun; a longer silence is a new answer.
const UNDERRUN_WINDOW: Duration = Duration::from_millis(400);

/// How long the agent must have been silent before a waiting caller takes
/// its turn to be over.
const AGENT_DONE_QUIET: Duration = Duration::from_millis(700);

/// Where and how to place a call.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// Base URL the simulator actually connects to (`http://127.0.0.1:8080`).
    pub server: String,
    /// The server's configured public URL: what Twilio signs (`https://…`).
    pub public_url: String,
    /// The Twilio account's AccountSid.
    pub account_sid: String,
    /// Its auth token (signs the webhook).
    pub auth_token: String,
    /// Caller number.
    pub from: String,
    /// Dialed number (a tenant's).
    pub to: String,
    /// `CallSid` to use.
    pub call_sid: String,
    /// What the caller does.
    pub script: Vec<Step>,
    /// Malformed messages to mix into the stream (robustness testing):
    /// spread over the call, several per 20 ms tick if need be.
    pub fuzz: usize,
}

/// How the server answered the voice webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `<Connect><Stream>`: the call was streamed.
    Streamed,
    /// `<Reject>`.
    Rejected,
    /// Anything else (e.g. `<Say>` + `<Hangup>` over the limit).
    Other(String),
}

/// One caller turn's latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnLatency {
    /// When the caller's speech ended, since the stream started.
    pub caller_end: Duration,
    /// First agent audio received after it (None: none came).
    pub first_agent_audio: Option<Duration>,
}

/// One barge-in's reaction time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BargeIn {
    /// When the interrupting speech started.
    pub onset: Duration,
    /// When `clear` arrived (None: it never did).
    pub clear: Option<Duration>,
}

/// What happened on a simulated call.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// The TwiML answer.
    pub twiml: String,
    /// How the server answered, if it did.
    pub answer: Option<Answer>,
    /// Agent audio received (mu-law, 8 kHz), in arrival order.
    pub agent_audio: Vec<u8>,
    /// Per caller turn.
    pub turns: Vec<TurnLatency>,
    /// Per interruption.
    pub barge_ins: Vec<BargeIn>,
    /// `clear` messages received.
    pub clears: usize,
    /// Marks echoed back.
    pub marks_echoed: usize,
    /// Marks (each follows the audio it ends) of an agent turn that had
    /// already been cleared: audio of a cancelled turn reaching the caller
    /// after `clear`. Must be 0.
    pub audio_after_clear: usize,
    /// Frames that broke the protocol (should be empty).
    pub off_spec: Vec<String>,
    /// Close code the server sent, if any.
    pub close_code: Option<u16>,
    /// Malformed messages sent (fuzz).
    pub fuzz_sent: usize,
    /// How late the simulator's own 20 ms ticks ran, worst case, ms: when
    /// this is large, lateness measured on this call says more about the
    /// simulator's machine than about the server.
    pub max_tick_lateness_ms: f64,
    /// Per agent `media` message: how late it came, in ms, if Twilio's
    /// buffer had run dry mid-answer (0 when audio was still queued). An
    /// answer's first message after a real pause is not counted.
    pub frame_lateness_ms: Vec<f64>,
}

/// Why a simulated call could not run.
#[derive(Debug, thiserror::Error)]
pub enum CallsimError {
    /// The webhook request failed.
    #[error("voice webhook: {0}")]
    Webhook(String),
    /// The TwiML has no stream URL or call token.
    #[error("TwiML without a usable <Stream>: {0}")]
    Twiml(String),
    /// The websocket could not be opened.
    #[error("media websocket: {0}")]
    Socket(String),
}

/// Places one call and plays the script.
pub async fn place_call(spec: &CallSpec) -> Result<CallReport, CallsimError> {
    let mut report = CallReport::default();
    let twiml = post_voice_webhook(spec).await?;
    report.twiml = twiml.clone();
    if twiml.contains("<Reject") {
        report.answer = Some(Answer::Rejected);
        return Ok(report);
    }
    let Some((stream_url, params)) = stream_of(&twiml) else {
        report.answer = Some(Answer::Other(twiml));
        return Ok(report);
    };
    report.answer = Some(Answer::Streamed);
    let ws_url = local_ws_url(&spec.server, &stream_url)
        .ok_or_else(|| CallsimError::Twiml(stream_url.clone()))?;
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .map_err(|e| CallsimError::Socket(error_chain(&e)))?;
    run_stream(socket, spec, &params, &mut report).await;
    Ok(report)
}

async fn post_voice_webhook(spec: &CallSpec) -> Result<String, CallsimError> {
    let params: Vec<(String, String)> = [
        ("AccountSid", spec.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", spec.call_sid.as_str()),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", spec.from.as_str()),
        ("To", spec.to.as_str()),
        ("Caller", spec.from.as_str()),
        ("Called", spec.to.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signed_url = format!("{}/twilio/voice", spec.public_url.trim_end_matches('/'));
    let sig = signature::sign(&spec.auth_token, &signed_url, &params);
    let response = http_client()
        .post(format!(
            "{}/twilio/voice",
            spec.server.trim_end_matches('/')
        ))
        .header("X-Twilio-Signature", sig)
        .form(&params)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| CallsimError::Webhook(error_chain(&e)))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| CallsimError::Webhook(e.to_string()))?;
    if !status.is_success() {
        return Err(CallsimError::Webhook(format!("HTTP {status}: {body}")));
    }
    Ok(body)
}

/// One HTTP client (and connection pool) for every simulated call.
fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// An error with its causes, for reports.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `<Stream url>` and its `<Parameter>`s, from TwiML.
pub fn stream_of(twiml: &str) -> Option<(String, Vec<(String, String)>)> {
    let stream = twiml.find("<Stream")?;
    let url = attribute(&twiml[stream..], "url")?;
    let mut params = Vec::new();
    let mut rest = &twiml[stream..];
    while let Some(i) = rest.find("<Parameter") {
        rest = &rest[i + 1..];
        if let (Some(name), Some(value)) = (attribute(rest, "name"), attribute(rest, "value")) {
            params.push((name, value));
        }
    }
    Some((url, params))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let end = tag.find('>')?;
    let head = &tag[..end];
    let key = format!(" {name}=\"");
    let start = head.find(&key)? + key.len();
    let len = head[start..].find('"')?;
    Some(unescape(&head[start..start + len]))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The server's real websocket address for the stream URL's path.
fn local_ws_url(server: &str, stream_url: &str) -> Option<String> {
    let path_start = stream_url.find("://").map(|i| i + 3)?;
    let path = &stream_url[path_start..];
    let path = &path[path.find('/')?..];
    let base = server.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return None;
    };
    Some(format!("{ws_base}{path}"))
}

/// Twilio's playout buffer: audio plays at 8 samples a millisecond; marks
/// echo when the audio queued before them has played.
#[derive(Default)]
struct Playout {
    /// Queued audio (samples) and marks, in order.
    queue: VecDeque<Queued>,
}

enum Queued {
    Audio(u64),
    Mark(String),
}

impl Playout {
    /// Plays `samples`; returns marks whose audio is done.
    fn play(&mut self, mut samples: u64) -> Vec<String> {
        let mut echoed = Vec::new();
        loop {
            match self.queue.front_mut() {
                Some(Queued::Mark(_)) => {
                    if let Some(Queued::Mark(name)) = self.queue.pop_front() {
                        echoed.push(name);
                    }
                }
                Some(Queued::Audio(left)) if samples > 0 => {
                    let n = (*left).min(samples);
                    *left -= n;
                    samples -= n;
                    if *left == 0 {
                        self.queue.pop_front();
                    }
                }
                _ => return echoed,
            }
        }
    }

    /// Flushes everything; returns every pending mark.
    fn clear(&mut self) -> Vec<String> {
        self.queue
            .drain(..)
            .filter_map(|q| match q {
                Queued::Mark(name) => Some(name),
                Queued::Audio(_) => None,
            })
            .collect()
    }

    fn is_playing(&self) -> bool {
        self.queue.iter().any(|q| matches!(q, Queued::Audio(_)))
    }
}

/// Checks one outbound frame against the spec; returns the parsed value.
fn check_frame(text: &str, stream_sid: &str, report: &mut CallReport) -> Option<Value> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        report.off_spec.push(text.chars().take(200).collect());
        return None;
    };
    let keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let sid_ok = v["streamSid"].as_str() == Some(stream_sid);
    let ok = match v["event"].as_str() {
        Some("media") => {
            keys.len() == 3
                && v["media"].as_object().is_some_and(|m| m.len() == 1)
                && v["media"]["payload"]
                    .as_str()
                    .and_then(|p| BASE64.decode(p).ok())
                    .is_some_and(|b| !b.is_empty() && b.len() % 160 == 0)
        }
        Some("mark") => {
            keys.len() == 3
                && v["mark"].as_object().is_some_and(|m| m.len() == 1)
                && v["mark"]["name"].as_str().is_some()
        }
        Some("clear") => keys.len() == 2,
        _ => false,
    };
    if !(ok && sid_ok) {
        report.off_spec.push(text.chars().take(200).collect());
        return None;
    }
    Some(v)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_stream(
    mut socket: Socket,
    spec: &CallSpec,
    params: &[(String, String)],
    report: &mut CallReport,
) {
    let stream_sid = format!("MZ{}", &spec.call_sid.get(2..).unwrap_or("0"));
    let mut seq: u64 = 0;
    let mut send = |value: Value| {
        seq += 1;
        let mut value = value;
        if let Some(o) = value.as_object_mut() {
            o.insert("sequenceNumber".into(), Value::String(seq.to_string()));
        }
        Message::Text(value.to_string().into())
    };
    let custom: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let _ = socket
        .send(Message::Text(
            json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
                .to_string()
                .into(),
        ))
        .await;
    let start = send(json!({"event": "start", "streamSid": stream_sid,
        "start": {"accountSid": spec.account_sid, "streamSid": stream_sid, "callSid": spec.call_sid,
                  "tracks": ["inbound"], "customParameters": custom,
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}));
    if socket.send(start).await.is_err() {
        return;
    }

    let epoch = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut playout = Playout::default();
    let mut chunk: u64 = 0;
    let mut steps: VecDeque<Step> = spec.script.iter().cloned().collect();
    let mut current: Option<(Step, usize)> = None;
    // Where the current clip's speech ends (found once per clip: scanning
    // it every tick would cost the simulator most of its CPU under load).
    let mut clip_speech_end = 0usize;
    let mut waiting_since: Option<Instant> = None;
    // Agent audio bytes received when the current wait began, and since
    // when Twilio's buffer has been dry.
    let mut audio_at_wait = 0usize;
    let mut quiet_since: Option<Instant> = None;
    // The agent turn of the latest mark, and the latest turn cleared.
    let mut last_mark_turn: Option<u64> = None;
    let mut cleared_turn: Option<u64> = None;
    let mut dry_since: Option<Instant> = None;
    let mut stopping = false;
    let mut fuzz_left = spec.fuzz;
    // Spread the junk over the first ~3 s of the call.
    let fuzz_per_tick = spec.fuzz.div_ceil(150).max(1);
    let mut fuzz_rng = fuzz::Rng::new(spec.call_sid.bytes().map(u64::from).sum());

    loop {
        tokio::select! {
            message = socket.next() => {
                match message {
                    Some(Ok(Message::Text(text))) => {
                        let Some(v) = check_frame(&text, &stream_sid, report) else { continue };
                        let now = Instant::now();
                        match v["event"].as_str() {
                            Some("media") => {
                                let bytes = v["media"]["payload"].as_str().and_then(|p| BASE64.decode(p).ok()).unwrap_or_default();
                                if let Some(turn) = report.turns.last_mut() {
                                    if turn.first_agent_audio.is_none() {
                                        turn.first_agent_audio = Some(now - epoch);
                                    }
                                }
                                // Lateness: how long the caller heard nothing
                                // because the buffer ran dry mid-answer (an
                                // underrun shortly after audio was playing).
                                if !playout.is_playing() {
                                    if let Some(dry) = dry_since.filter(|d| now - *d < UNDERRUN_WINDOW) {
                                        report.frame_lateness_ms.push((now - dry).as_secs_f64() * 1_000.0);
                                    }
                                } else {
                                    report.frame_lateness_ms.push(0.0);
                                }
                                dry_since = None;
                                report.agent_audio.extend_from_slice(&bytes);
                                playout.queue.push_back(Queued::Audio(bytes.len() as u64));
                            }
                            Some("mark") => {
                                let name = v["mark"]["name"].as_str().unwrap_or_default().to_string();
                                // Our server names marks `{turn}:{seq}`.
                                let turn = name.split(':').next().and_then(|t| t.parse::<u64>().ok());
                                if let (Some(turn), Some(cleared)) = (turn, cleared_turn) {
                                    if turn <= cleared {
                                        report.audio_after_clear += 1;
                                    }
                                }
                                last_mark_turn = turn.or(last_mark_turn);
                                playout.queue.push_back(Queued::Mark(name));
                            }
                            Some("clear") => {
                                report.clears += 1;
                                cleared_turn = last_mark_turn.max(cleared_turn);
                                if let Some(b) = report.barge_ins.last_mut() {
                                    b.clear.get_or_insert(now - epoch);
                                }
                                for name in playout.clear() {
                                    report.marks_echoed += 1;
                                    let echo = send(json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}));
                                    let _ = socket.send(echo).await;
                                }
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        report.close_code = frame.map(|f| u16::from(f.code));
                        return;
                    }
                    Some(Ok(Message::Binary(_))) => report.off_spec.push("binary frame".into()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
            scheduled = ticker.tick() => {
                let late = Instant::now().saturating_duration_since(scheduled).as_secs_f64() * 1_000.0;
                report.max_tick_lateness_ms = report.max_tick_lateness_ms.max(late);
                let elapsed = epoch.elapsed();
                let was_playing = playout.is_playing();
                let echoed = playout.play(160);
                if was_playing && !playout.is_playing() {
                    dry_since = Some(Instant::now());
                }
                for name in echoed {
                    report.marks_echoed += 1;
                    let echo = send(json!({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}));
                    if socket.send(echo).await.is_err() {
                        return;
                    }
                }
                if stopping {
                    let stop = send(json!({"event": "stop", "streamSid": stream_sid,
                        "stop": {"accountSid": spec.account_sid, "callSid": spec.call_sid}}));
                    let _ = socket.send(stop).await;
                    let _ = socket.close(None).await;
                    // Read until the server closes, briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(m)) = socket.next().await {
                            if let Message::Close(frame) = m {
                                report.close_code = frame.map(|f| u16::from(f.code));
                                break;
                            }
                        }
                    }).await;
                    return;
                }
                // The caller's side: one 20 ms frame per tick.
                let mut frame = [0xFFu8; 160];
                if current.is_none() {
                    current = steps.pop_front().map(|s| (s, 0));
                    if let Some((step, _)) = &current {
                        if let Step::Say(audio) | Step::Interrupt { audio } = step {
                            clip_speech_end = speech_end(audio);
                        }
                        match step {
                            Step::Interrupt { .. } => report.barge_ins.push(BargeIn { onset: elapsed, clear: None }),
                            Step::WaitAgent { .. } | Step::WaitAgentStart { .. } => {
                                waiting_since = Some(Instant::now());
                                audio_at_wait = report.agent_audio.len();
                            }
                            _ => {}
                        }
                    }
                }
                if playout.is_playing() {
                    quiet_since = None;
                } else {
                    quiet_since.get_or_insert_with(Instant::now);
                }
                let mut finished = false;
                match current.as_mut() {
                    None => stopping = true,
                    Some((Step::WaitAgentStart { timeout }, _)) => {
                        let started = report.turns.last().is_none_or(|t| t.first_agent_audio.is_some());
                        let waited = waiting_since.map(|s| s.elapsed()).unwrap_or_default();
                        finished = started || waited >= *timeout;
                    }
                    Some((Step::Say(audio) | Step::Interrupt { audio }, pos)) => {
                        let n = (audio.len() - *pos).min(160);
                        frame[..n].copy_from_slice(&audio[*pos..*pos + n]);
                        let before = *pos;
                        *pos += n;
                        // The turn's clock starts at the end of speech, not
                        // of the file: the agent may answer while the clip's
                        // trailing silence is still streaming.
                        let end = clip_speech_end;
                        if before < end.max(1) && *pos >= end.max(1) {
                            let into_frame = Duration::from_millis((end - before) as u64 / 8);
                            report.turns.push(TurnLatency { caller_end: elapsed + into_frame, first_agent_audio: None });
                        }
                        finished = *pos >= audio.len();
                    }
                    Some((Step::Silence(d), pos)) => {
                        *pos += 20;
                        finished = *pos as u128 >= d.as_millis();
                    }
                    Some((Step::WaitAgent { timeout }, _)) => {
                        // Done once the agent spoke during this wait and has
                        // been quiet for a beat, as a person would wait: a
                        // short gap between two of the agent's sentences is
                        // not the end of its turn.
                        let spoke = report.agent_audio.len() > audio_at_wait;
                        let waited = waiting_since.map(|s| s.elapsed()).unwrap_or_default();
                        let quiet = quiet_since.map(|s| s.elapsed()).unwrap_or_default();
                        finished = (spoke && quiet >= AGENT_DONE_QUIET) || waited >= *timeout;
                    }
                    Some((Step::Dtmf(digit), _)) => {
                        let dtmf = send(json!({"event": "dtmf", "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": digit.to_string()}}));
                        let _ = socket.send(dtmf).await;
                        finished = true;
                    }
                    Some((Step::Hangup, _)) => {
                        stopping = true;
                        finished = true;
                    }
                }
                if finished {
                    current = None;
                }
                chunk += 1;
                let media = send(json!({"event": "media", "streamSid": stream_sid,
                    "media": {"track": "inbound", "chunk": chunk.to_string(),
                              "timestamp": (elapsed.as_millis()).to_string(), "payload": BASE64.encode(frame)}}));
                if socket.send(media).await.is_err() {
                    return;
                }
                for _ in 0..fuzz_per_tick.min(fuzz_left) {
                    fuzz_left -= 1;
                    let junk = fuzz::message(&mut fuzz_rng, &stream_sid);
                    report.fuzz_sent += 1;
                    if socket.send(junk).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Index just past the last sample of `audio` louder than near-silence.
fn speech_end(audio: &[u8]) -> usize {
    audio
        .iter()
        .rposition(|&c| media::g711::ulaw_to_linear(c).unsigned_abs() > 300)
        .map_or(0, |i| i + 1)
}

/// A report as a per-turn table.
pub fn render_report(report: &CallReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("answer: {:?}\n", report.answer));
    out.push_str("turn  caller end (s)  first agent audio (s)  latency (ms)\n");
    for (i, t) in report.turns.iter().enumerate() {
        let latency = t
            .first_agent_audio
            .map(|a| {
                format!(
                    "{:.0}",
                    (a.as_secs_f64() - t.caller_end.as_secs_f64()) * 1_000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:>4}  {:>14.2}  {:>21}  {:>12}\n",
            i + 1,
            t.caller_end.as_secs_f64(),
            t.first_agent_audio
                .map(|a| format!("{:.2}", a.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
            latency
        ));
    }
    for (i, b) in report.barge_ins.iter().enumerate() {
        let reaction = b
            .clear
            .map(|c| {
                format!(
                    "{:.0} ms",
                    (c.as_secs_f64() - b.onset.as_secs_f64()) * 1_000.0
                )
            })
            .unwrap_or_else(|| "no clear".into());
        out.push_str(&format!(
            "barge-in {}: onset {:.2} s → clear {reaction}\n",
            i + 1,
            b.onset.as_secs_f64()
        ));
    }
    out.push_str(&format!(
        "agent audio {:.2} s, clears {}, marks echoed {}, audio after clear {}, off-spec frames {}, close {:?}\n",
        report.agent_audio.len() as f64 / 8_000.0,
        report.clears,
        report.marks_echoed,
        report.audio_after_clear,
        report.off_spec.len(),
        report.close_code
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stream_and_its_parameters_from_twiml() {
        let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://voice.example.com/twilio/media" statusCallback="https://x/y?customer=1&amp;a=b"><Parameter name="callToken" value="ct1.abc.def"/></Stream></Connect></Response>"#;
        let (url, params) = stream_of(twiml).expect("stream");
        assert_eq!(url, "wss://voice.example.com/twilio/media");
        assert_eq!(
            params,
            vec![("callToken".to_string(), "ct1.abc.def".to_string())]
        );
        assert_eq!(
            local_ws_url("http://127.0.0.1:9000", &url).as_deref(),
            Some("ws://127.0.0.1:9000/twilio/media")
        );
    }

    #[test]
    fn playout_echoes_marks_in_order_and_flushes_on_clear() {
        let mut p = Playout::default();
        p.queue.push_back(Queued::Audio(320));
        p.queue.push_back(Queued::Mark("1:1".into()));
        p.queue.push_back(Queued::Audio(160));
        p.queue.push_back(Queued::Mark("1:2".into()));
        assert!(p.play(160).is_empty());
        assert_eq!(p.play(160), vec!["1:1".to_string()]);
        assert_eq!(p.clear(), vec!["1:2".to_string()]);
        assert!(!p.is_playing());
    }
}
