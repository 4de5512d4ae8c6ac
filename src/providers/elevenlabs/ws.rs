//! The multi-context websocket client: one socket per call
//! (`/v1/text-to-speech/{voice}/multi-stream-input`), one context per agent
//! turn (`turn-N`).
//!
//! A turn's context opens with a lone space carrying the voice settings and
//! the chunk schedule; text chunks follow with `try_trigger_generation`, the
//! last one with `flush`. When the server marks the context final the turn
//! is `Done` and we close the context (so at most the current turn and a
//! cancelled one hold one of the vendor's five context slots). A cancel
//! closes the context at once and every later message of it is dropped.
//!
//! The socket opens when the call starts. If it cannot be opened (401
//! aside), or drops while a turn is being spoken, the rest of the call goes
//! over HTTP streaming, starting with the unspoken text of the turns in
//! progress. If the server closes an idle socket between turns, the next
//! turn opens a new one. A 401 fails every turn of the call.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::http::HttpSynth;
use super::{
    classify, endpoint_url, retry_after, wire, wire_chunk, ElevenLabsConfig, ElevenLabsHttp,
    MAX_INACTIVITY_TIMEOUT, OUTPUT_FORMAT, WS_NAME,
};
use crate::providers::roles::{ProviderError, TextToSpeech, TtsEvent, TtsInput, Voice};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// ElevenLabs over the multi-context websocket (`elevenlabs`), with HTTP
/// streaming as its fallback.
#[derive(Debug, Clone)]
pub struct ElevenLabsWs {
    /// Shared settings.
    config: Arc<ElevenLabsConfig>,
    /// The fallback.
    http: ElevenLabsHttp,
}

impl ElevenLabsWs {
    /// A client; the fallback HTTP client shares `config`.
    pub fn new(config: ElevenLabsConfig) -> Result<Self, ProviderError> {
        let http = ElevenLabsHttp::new(config.clone())?;
        Ok(Self {
            config: Arc::new(config),
            http,
        })
    }
}

impl TextToSpeech for ElevenLabsWs {
    fn name(&self) -> &'static str {
        WS_NAME
    }

    fn run(
        &self,
        voice: Voice,
        input: mpsc::Receiver<TtsInput>,
        events: mpsc::Sender<TtsEvent>,
    ) -> BoxFuture<'static, ()> {
        let call = WsCall {
            config: self.config.clone(),
            http: self.http.clone(),
            settings: self.config.settings_for(&voice),
            voice,
            events,
            sink: None,
            stream: None,
            fallback: None,
            refused: None,
            turns: BTreeMap::new(),
            over: BTreeSet::new(),
            last_send: Instant::now(),
        };
        Box::pin(call.run(input))
    }
}

/// A turn being spoken over the socket.
#[derive(Debug)]
struct Turn {
    /// Its context id.
    context: String,
    /// The context has been opened on the current socket.
    opened: bool,
    /// The turn's text as sent (each chunk with its one trailing space).
    text: String,
    /// Characters of `text` the audio so far covers (from alignment).
    spoken: usize,
    /// The last chunk has been sent.
    last: bool,
}

impl Turn {
    /// Characters of the turn's text (without the final space).
    fn characters(&self) -> usize {
        self.text.trim_end().chars().count()
    }
}

/// One call's synthesis.
struct WsCall {
    /// Shared settings.
    config: Arc<ElevenLabsConfig>,
    /// Builds the fallback.
    http: ElevenLabsHttp,
    /// The tenant's voice.
    voice: Voice,
    /// Voice settings sent when a context opens.
    settings: Option<Value>,
    /// Where events go.
    events: mpsc::Sender<TtsEvent>,
    /// Writing half of the socket, while it is open.
    sink: Option<SplitSink<Socket, Message>>,
    /// Reading half of the socket, while it is open.
    stream: Option<SplitStream<Socket>>,
    /// The HTTP engine, once the socket has failed.
    fallback: Option<HttpSynth>,
    /// Why the vendor refused us (401): every turn fails with it.
    refused: Option<ProviderError>,
    /// Turns in progress on the socket.
    turns: BTreeMap<u32, Turn>,
    /// Turns that are over (done, failed or cancelled): their text is
    /// ignored and their late audio dropped.
    over: BTreeSet<u32>,
    /// When we last sent something (for keep-alives).
    last_send: Instant,
}

/// The context id of `turn`.
fn context_id(turn: u32) -> String {
    format!("turn-{turn}")
}

impl WsCall {
    async fn run(mut self, mut input: mpsc::Receiver<TtsInput>) {
        self.connect().await;
        loop {
            let keep_alive = self.needs_keep_alive();
            let deadline = self.last_send + self.config.keep_alive;
            tokio::select! {
                // Inputs first, so that a cancel is handled before any more
                // audio of its turn is read.
                biased;
                next = input.recv() => match next {
                    None => break,
                    Some(TtsInput::Text { turn, text, last }) => {
                        if !self.text(turn, &text, last).await {
                            break;
                        }
                    }
                    Some(TtsInput::Cancel { turn }) => self.cancel(turn).await,
                },
                frame = next_frame(self.stream.as_mut()) => {
                    if !self.frame(frame).await {
                        break;
                    }
                }
                event = next_fallback(self.fallback.as_mut()) => {
                    if self.events.send(event).await.is_err() {
                        break;
                    }
                }
                () = sleep_until(deadline), if keep_alive => self.keep_alive().await,
            }
        }
        self.hang_up().await;
    }

    /// Opens the socket; on failure records the 401 or switches to HTTP.
    async fn connect(&mut self) {
        match open_socket(&self.config, &self.voice).await {
            Ok(socket) => {
                let (sink, stream) = socket.split();
                self.sink = Some(sink);
                self.stream = Some(stream);
                self.last_send = Instant::now();
                for turn in self.turns.values_mut() {
                    turn.opened = false;
                }
            }
            Err(error @ ProviderError::Unauthorized { .. }) => {
                tracing::error!(error = %error, "ElevenLabs refused the API key");
                self.refused = Some(error);
            }
            Err(error) => {
                tracing::warn!(error = %error, "ElevenLabs websocket unavailable; using HTTP streaming for this call");
                self.fail_over();
            }
        }
    }

    /// Handles text for `turn`; `false` once the call's events are unread.
    async fn text(&mut self, turn: u32, text: &str, last: bool) -> bool {
        if self.over.contains(&turn) {
            tracing::debug!(turn, "text for a finished turn ignored");
            return true;
        }
        if self.sink.is_none() && self.fallback.is_none() && self.refused.is_none() {
            self.connect().await;
        }
        if let Some(error) = &self.refused {
            self.over.insert(turn);
            let event = TtsEvent::Failed {
                turn,
                error: error.clone(),
            };
            return self.events.send(event).await.is_ok();
        }
        if let Some(fallback) = self.fallback.as_mut() {
            fallback.push(turn, text, last);
            return true;
        }
        let chunk = wire_chunk(text);
        let entry = self.turns.entry(turn).or_insert_with(|| Turn {
            context: context_id(turn),
            opened: false,
            text: String::new(),
            spoken: 0,
            last: false,
        });
        if let Some(chunk) = &chunk {
            entry.text.push_str(chunk);
        }
        entry.last |= last;
        let context = entry.context.clone();
        let mut messages = Vec::new();
        if !entry.opened {
            entry.opened = true;
            messages.push(wire::open_context(
                &context,
                self.settings.as_ref(),
                &self.config.chunk_length_schedule,
            ));
        }
        let nothing_to_say = last && entry.text.is_empty();
        match &chunk {
            Some(chunk) => messages.push(wire::text(&context, chunk, last)),
            None if last && !nothing_to_say => messages.push(wire::flush(&context)),
            None => {}
        }
        for message in messages {
            if !self.send(&message).await {
                return true;
            }
        }
        if nothing_to_say {
            // A turn without text: nothing will come back for it.
            self.turns.remove(&turn);
            self.over.insert(turn);
            self.send(&wire::close_context(&context)).await;
            let event = TtsEvent::Done {
                turn,
                characters: 0,
            };
            return self.events.send(event).await.is_ok();
        }
        true
    }

    /// Barge-in: closes `turn`'s context and drops whatever comes later.
    async fn cancel(&mut self, turn: u32) {
        self.over.insert(turn);
        if let Some(fallback) = self.fallback.as_mut() {
            fallback.cancel(turn);
        }
        if let Some(state) = self.turns.remove(&turn) {
            if state.opened && self.sink.is_some() {
                self.send(&wire::close_context(&state.context)).await;
            }
        }
    }

    /// Handles one frame from the socket (`None`: it closed); `false`
    /// once the call's events are unread.
    async fn frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> bool {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!("unexpected binary frame from ElevenLabs skipped");
                return true;
            }
            Some(Ok(Message::Close(close))) => {
                tracing::info!(?close, "ElevenLabs closed the websocket");
                self.dropped();
                return true;
            }
            Some(Ok(_)) => return true,
            Some(Err(error)) => {
                tracing::warn!(error = %error, "ElevenLabs websocket failed");
                self.dropped();
                return true;
            }
            None => {
                self.dropped();
                return true;
            }
        };
        let message = match wire::parse(text.as_str()) {
            Ok(message) => message,
            Err(problem) => {
                tracing::warn!(%problem, "malformed ElevenLabs message skipped");
                return true;
            }
        };
        if let Some(error) = &message.error {
            tracing::warn!(context = ?message.context, %error, "ElevenLabs reported an error");
        }
        let Some(context) = message.context.as_deref() else {
            if message.audio.is_some() {
                tracing::warn!("ElevenLabs audio without a context skipped");
            }
            return true;
        };
        let Some((&turn, state)) = self.turns.iter_mut().find(|(_, t)| t.context == context) else {
            tracing::debug!(context, "message for a closed context dropped");
            return true;
        };
        if let Some(audio) = message.audio.filter(|a| !a.is_empty()) {
            let text_end = message.aligned_chars.map(|n| {
                state.spoken += n;
                state.spoken.min(state.characters())
            });
            let event = TtsEvent::Audio {
                turn,
                audio,
                text_end,
            };
            if self.events.send(event).await.is_err() {
                return false;
            }
        }
        if message.is_final {
            let Some(state) = self.turns.get_mut(&turn) else {
                return true;
            };
            if !state.last {
                // The vendor ended the context early (its own timeout):
                // the next text opens it again.
                tracing::info!(turn, "ElevenLabs ended a context before its turn did");
                state.opened = false;
                return true;
            }
            let characters = state.characters();
            let context = state.context.clone();
            self.turns.remove(&turn);
            self.over.insert(turn);
            self.send(&wire::close_context(&context)).await;
            return self
                .events
                .send(TtsEvent::Done { turn, characters })
                .await
                .is_ok();
        }
        true
    }

    /// Whether a context is open and waiting for more text.
    fn needs_keep_alive(&self) -> bool {
        self.sink.is_some() && self.turns.values().any(|t| t.opened && !t.last)
    }

    /// Keeps the waiting contexts open.
    async fn keep_alive(&mut self) {
        let waiting: Vec<String> = self
            .turns
            .values()
            .filter(|t| t.opened && !t.last)
            .map(|t| t.context.clone())
            .collect();
        for context in waiting {
            if !self.send(&wire::keep_alive(&context)).await {
                return;
            }
        }
        // Nothing waiting (or the send failed): still move the deadline on.
        self.last_send = Instant::now();
    }

    /// Sends one message; on failure the socket is treated as dropped and
    /// `false` returned.
    async fn send(&mut self, message: &Value) -> bool {
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        match sink.send(Message::Text(message.to_string().into())).await {
            Ok(()) => {
                self.last_send = Instant::now();
                true
            }
            Err(error) => {
                tracing::warn!(error = %error, "sending to ElevenLabs failed");
                self.dropped();
                false
            }
        }
    }

    /// The socket is gone: between turns it reopens with the next one;
    /// during a turn the call moves to HTTP.
    fn dropped(&mut self) {
        self.sink = None;
        self.stream = None;
        if self.turns.is_empty() {
            tracing::info!("ElevenLabs websocket closed between turns; the next turn reopens it");
        } else {
            tracing::warn!("ElevenLabs websocket dropped mid-turn; finishing the call over HTTP");
            self.fail_over();
        }
    }

    /// Moves the call to HTTP streaming, handing over the unspoken text of
    /// the turns in progress.
    fn fail_over(&mut self) {
        self.sink = None;
        self.stream = None;
        let mut synth = self.http.synth(&self.voice);
        for (turn, state) in std::mem::take(&mut self.turns) {
            let cut = unspoken_from(&state.text, state.spoken);
            let (said, rest) = state.text.split_at(cut);
            synth.add_characters(turn, said.chars().count());
            synth.push(turn, rest, state.last);
        }
        self.fallback = Some(synth);
    }

    /// Ends the call's socket politely.
    async fn hang_up(&mut self) {
        if self.sink.is_some() {
            self.send(&wire::close_socket()).await;
        }
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.close().await;
        }
        self.stream = None;
    }
}

/// The byte offset in `text` where the unspoken part starts, given that
/// `spoken` characters were heard: backed up to the start of a word cut
/// in the middle, so a word is repeated rather than lost.
fn unspoken_from(text: &str, spoken: usize) -> usize {
    let Some((offset, _)) = text.char_indices().nth(spoken) else {
        return text.len();
    };
    let before = &text[..offset];
    if before.is_empty() || before.ends_with(char::is_whitespace) {
        return offset;
    }
    before
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_whitespace())
        .map(|(i, c)| i + c.len_utf8())
        .unwrap_or(0)
}

/// The next frame of the socket; never resolves without one.
async fn next_frame(
    stream: Option<&mut SplitStream<Socket>>,
) -> Option<Result<Message, tungstenite::Error>> {
    match stream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The next event of the fallback; never resolves without one.
async fn next_fallback(fallback: Option<&mut HttpSynth>) -> TtsEvent {
    match fallback {
        Some(fallback) => fallback.next_event().await,
        None => std::future::pending().await,
    }
}

/// Opens the multi-context socket for `voice`.
async fn open_socket(config: &ElevenLabsConfig, voice: &Voice) -> Result<Socket, ProviderError> {
    let inactivity = config
        .inactivity_timeout
        .min(MAX_INACTIVITY_TIMEOUT)
        .as_secs()
        .max(1);
    let url = endpoint_url(
        &config.ws_base,
        &voice.voice_id,
        "multi-stream-input",
        &[
            ("model_id", config.model_for(voice)),
            ("output_format", OUTPUT_FORMAT.to_string()),
            ("inactivity_timeout", inactivity.to_string()),
            ("sync_alignment", "true".to_string()),
        ],
        WS_NAME,
    )?;
    let mut request =
        url.as_str()
            .into_client_request()
            .map_err(|e| ProviderError::Unavailable {
                provider: WS_NAME,
                message: format!("bad websocket URL: {e}"),
            })?;
    let key = config
        .key_header()
        .map_err(|_| ProviderError::Unavailable {
            provider: WS_NAME,
            message: "the API key is not a valid header value".into(),
        })?;
    request.headers_mut().insert("xi-api-key", key);
    match timeout(
        config.connect_timeout,
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Err(_) => Err(ProviderError::Timeout {
            provider: WS_NAME,
            budget: config.connect_timeout,
        }),
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let wait = retry_after(response.headers().get("retry-after"));
            let body = response.body().as_deref().unwrap_or_default();
            Err(classify(WS_NAME, response.status().as_u16(), body, wait))
        }
        Ok(Err(e)) => Err(ProviderError::Network {
            provider: WS_NAME,
            message: format!("cannot open the websocket: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::unspoken_from;

    #[test]
    fn the_unspoken_part_starts_at_a_word() {
        let text = "Hello there. How are you? ";
        assert_eq!(&text[unspoken_from(text, 0)..], text);
        assert_eq!(&text[unspoken_from(text, 13)..], "How are you? ");
        assert_eq!(&text[unspoken_from(text, 15)..], "How are you? ");
        assert_eq!(&text[unspoken_from(text, 3)..], text);
        assert_eq!(&text[unspoken_from(text, 99)..], "");
        assert_eq!(
            &"héllo wörld "[unspoken_from("héllo wörld ", 8)..],
            "wörld "
        );
    }
}
