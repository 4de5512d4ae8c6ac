//! The async driver of one call: wires a Twilio Media Streams socket, the
//! audio path, the providers, the transcript writer and the live-call
//! registry to a [`CallSession`]. All protocol and conversation decisions
//! live in the session; this file only moves data and keeps time.
//!
//! The socket is abstracted as a stream of [`WsIn`] and a channel of
//! [`WsOut`], so the same code runs over a real websocket or test channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use media::endpoint::{EndpointConfig, EndpointEvent};
use media::path::{InboundEvent, InboundPath};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Inbound, StreamStart};
use super::registry::{LiveCall, LiveCalls};
use super::transcript;
use super::{CallSession, EndReason, Input, Output, SessionConfig, Speaker, TurnTimings};
use crate::db::CustomerId;
use crate::memory::service::EnrichedContext;
use crate::memory::MemoryClient;
use crate::metrics::{Metrics, Stage};
use crate::platform::Platform;
use crate::providers::setup::CallDefaults;
use crate::providers::{CallSetup, ProviderEvent, ProviderFactory};
use crate::repo;
use crate::twilio::call_token::CallTokenKey;

/// How long a socket may stay open without sending `start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame from the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsIn {
    /// A text frame.
    Text(String),
    /// A binary frame (Twilio never sends these); its length.
    Binary(usize),
}

/// A frame to the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsOut {
    /// A text frame.
    Text(String),
    /// Close with this code and reason.
    Close(u16, String),
}

/// Websocket close code for policy violations (bad or missing call token).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;

/// Ends or transfers calls through the carrier (Twilio's REST API).
pub trait CallControl: Send + Sync {
    /// Hangs the call up.
    fn hangup(&self, customer_id: CustomerId, call_sid: &str);
    /// Transfers the call to `to` with `<Dial>`.
    fn transfer(&self, customer_id: CustomerId, call_sid: &str, to: &str);
}

/// A control that only logs (for tests and `--providers fake` runs with no
/// Twilio account).
#[derive(Debug, Default)]
pub struct LogOnlyControl;

impl CallControl for LogOnlyControl {
    fn hangup(&self, _customer_id: CustomerId, call_sid: &str) {
        tracing::info!(
            call_sid,
            "hang-up requested (no carrier control configured)"
        );
    }
    fn transfer(&self, _customer_id: CustomerId, call_sid: &str, _to: &str) {
        tracing::info!(
            call_sid,
            "transfer requested (no carrier control configured)"
        );
    }
}

/// What every call's driver shares.
#[derive(Clone)]
pub struct CallContext {
    /// Database and keys.
    pub platform: Platform,
    /// Makes each call's providers.
    pub providers: Arc<dyn ProviderFactory>,
    /// Live calls.
    pub live: Arc<LiveCalls>,
    /// Cancelled when the server must cut remaining calls.
    pub shutdown: CancellationToken,
    /// Verifies the call token minted by the voice webhook.
    pub token_key: CallTokenKey,
    /// Hang-up and transfer.
    pub control: Arc<dyn CallControl>,
    /// Endpointing settings for the audio path.
    pub endpoint: EndpointConfig,
    /// What the websocket upgrade's `X-Twilio-Signature` showed.
    pub upgrade: UpgradeSignature,
    /// Per-turn latency and provider failures.
    pub metrics: Arc<Metrics>,
    /// Platform defaults for the model and voice.
    pub defaults: CallDefaults,
    /// Caller memory, read at call start (in process or a memory service).
    pub memory: Arc<dyn MemoryClient>,
}

/// The outcome of checking the websocket upgrade's signature before the
/// tenant is known. The call token at `start` is the primary gate; a
/// signature that is present must also hold, with the platform's token or,
/// once the tenant is known, the tenant's own Twilio token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UpgradeSignature {
    /// No signature header (Twilio does not always sign upgrades).
    #[default]
    Absent,
    /// Valid under the platform's auth token.
    Verified,
    /// Present but not valid under the platform's token: check it with the
    /// tenant's own token at `start`.
    Unverified {
        /// The header's value.
        signature: String,
        /// The `wss://` URL it must sign.
        url: String,
    },
}

/// How a media socket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamOutcome {
    /// The call ran and ended.
    Ended(EndReason),
    /// The socket never sent `start` in time, or closed first.
    NoStart,
    /// The call token was missing, invalid or expired: closed with 1008.
    Refused(String),
}

/// Counters of input the driver dropped, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Malformed text frames.
    pub malformed: u64,
    /// Binary frames.
    pub binary: u64,
    /// Messages out of order (media before start, a second start).
    pub out_of_order: u64,
    /// Media payloads the audio path rejected.
    pub bad_payloads: u64,
}

/// Runs one media stream to its end.
pub async fn run(
    mut incoming: impl Stream<Item = WsIn> + Unpin,
    outgoing: mpsc::Sender<WsOut>,
    ctx: CallContext,
) -> (StreamOutcome, Dropped) {
    let mut dropped = Dropped::default();
    let start = match wait_for_start(&mut incoming, &mut dropped).await {
        Some(start) => start,
        None => return (StreamOutcome::NoStart, dropped),
    };
    let Some(token) = start.custom_parameters.get("callToken") else {
        return (refuse(&outgoing, "missing call token").await, dropped);
    };
    let claims = match ctx
        .token_key
        .verify_for_call(token, &start.call_sid, chrono::Utc::now())
    {
        Ok(claims) => claims,
        Err(error) => return (refuse(&outgoing, &error.to_string()).await, dropped),
    };
    let customer_id = claims.customer_id;
    if let UpgradeSignature::Unverified { signature, url } = &ctx.upgrade {
        let tenant_token = ctx
            .platform
            .open_credential(customer_id, "twilio")
            .await
            .ok()
            .flatten()
            .map(|(_, token)| token);
        let valid = tenant_token.is_some_and(|token| {
            crate::twilio::signature::validate(
                secrecy::ExposeSecret::expose_secret(&token),
                url,
                crate::twilio::signature::SignedPayload::Form(&[]),
                signature,
            )
            .is_ok()
        });
        if !valid {
            return (
                refuse(&outgoing, "the upgrade signature is invalid").await,
                dropped,
            );
        }
    }
    let span = tracing::info_span!("call", call_sid = %start.call_sid, %customer_id, stream_sid = %start.stream_sid);
    let _entered = span.enter();

    // A busy database gets a few tries: the caller is already on the line.
    let mut attempt = 0;
    let (config, call_id, setup) = loop {
        attempt += 1;
        match load_call(
            &ctx.platform,
            ctx.memory.as_ref(),
            customer_id,
            &start.call_sid,
            &start.stream_sid,
            &ctx.defaults,
        )
        .await
        {
            Ok(found) => break found,
            Err(LoadError::Busy(reason)) if attempt < 4 => {
                tracing::warn!(%reason, attempt, "call setup: database busy; retrying");
                tokio::time::sleep(Duration::from_millis(250 * attempt)).await;
            }
            Err(LoadError::Busy(reason) | LoadError::Refused(reason)) => {
                return (refuse(&outgoing, &reason).await, dropped)
            }
        }
    };
    let cancel = ctx.shutdown.child_token();
    let live = LiveCall {
        customer_id,
        stream_sid: start.stream_sid.clone(),
        started_at: chrono::Utc::now(),
        cancel: cancel.clone(),
    };
    if !ctx.live.insert(&start.call_sid, live) {
        return (
            refuse(&outgoing, "a stream for this call is already live").await,
            dropped,
        );
    }
    let outcome = converse(
        &mut incoming,
        &outgoing,
        &ctx,
        &start,
        customer_id,
        call_id,
        config,
        setup,
        cancel,
        &mut dropped,
    )
    .await;
    ctx.live.remove(&start.call_sid);
    (StreamOutcome::Ended(outcome), dropped)
}

async fn wait_for_start(
    incoming: &mut (impl Stream<Item = WsIn> + Unpin),
    dropped: &mut Dropped,
) -> Option<StreamStart> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let frame = tokio::time::timeout_at(deadline, incoming.next())
            .await
            .ok()??;
        match frame {
            WsIn::Binary(_) => dropped.binary += 1,
            WsIn::Text(text) => match protocol::parse(&text) {
                Ok(Inbound::Start(start)) => return Some(start),
                Ok(Inbound::Connected) => {}
                Ok(Inbound::Stop) => return None,
                Ok(_) => dropped.out_of_order += 1,
                Err(_) => dropped.malformed += 1,
            },
        }
    }
}

async fn refuse(outgoing: &mpsc::Sender<WsOut>, reason: &str) -> StreamOutcome {
    tracing::warn!(reason, "media stream refused");
    let _ = outgoing
        .send(WsOut::Close(
            CLOSE_POLICY_VIOLATION,
            "call not authorised".into(),
        ))
        .await;
    StreamOutcome::Refused(reason.to_string())
}

/// Why a call could not be set up.
enum LoadError {
    /// The database is unavailable or overloaded: worth another try.
    Busy(String),
    /// The call must not run (no call record, unknown tenant).
    Refused(String),
}

impl From<crate::db::StorageError> for LoadError {
    fn from(error: crate::db::StorageError) -> Self {
        match error {
            crate::db::StorageError::Database(e) => LoadError::Busy(format!("database: {e}")),
            other => LoadError::Refused(other.to_string()),
        }
    }
}

/// How long call set-up waits for the caller's memory before going on
/// without it: the caller is already listening for the greeting.
const MEMORY_BUDGET: Duration = Duration::from_millis(400);

/// Summaries read into the call's context.
const MEMORY_RECENT_CALLS: i64 = 3;

/// The tenant's session settings and the call's id.
async fn load_call(
    platform: &Platform,
    memory: &dyn MemoryClient,
    customer_id: CustomerId,
    call_sid: &str,
    stream_sid: &str,
    defaults: &CallDefaults,
) -> Result<(SessionConfig, uuid::Uuid, CallSetup), LoadError> {
    let mut tx = platform.db().tenant(customer_id).await?;
    let customer = repo::customers::get(&mut tx).await?;
    let call = repo::calls::get_by_sid(&mut tx, call_sid)
        .await?
        .ok_or_else(|| LoadError::Refused("no call record for this CallSid".into()))?;
    if call.status == "refused" || call.ended_at.is_some() {
        return Err(LoadError::Refused(format!(
            "the call is already {}",
            call.status
        )));
    }
    repo::calls::update_status(&mut tx, call_sid, "in-progress", None, None, None).await?;
    repo::calls::record_stream(&mut tx, call_sid, stream_sid).await?;
    tx.commit().await?;
    let caller = match call.user_id.as_deref() {
        Some(user_id) => caller_memory(memory, customer_id, user_id).await,
        None => None,
    };
    let setup = crate::providers::setup::for_call(
        &customer,
        call_sid,
        chrono::Utc::now(),
        caller.as_ref().map(|c| c.context.as_str()),
        defaults,
    );
    let config = SessionConfig {
        greeting: greeting_for(&customer, caller.as_ref()),
        transfer_number: customer.transfer_number,
        ..SessionConfig::default()
    };
    Ok((config, call.call_id, setup))
}

/// What the tenant remembers of the caller, redacted (caller ID alone
/// proves nothing), or nothing if memory is slow or failing: the call goes
/// on as with a new caller.
async fn caller_memory(
    memory: &dyn MemoryClient,
    customer_id: CustomerId,
    user_id: &str,
) -> Option<EnrichedContext> {
    let read = memory.enriched_context(customer_id, user_id, false, MEMORY_RECENT_CALLS);
    match tokio::time::timeout(MEMORY_BUDGET, read).await {
        Ok(Ok(context)) => Some(context),
        Ok(Err(error)) => {
            tracing::warn!(%error, "caller memory unavailable; greeting as a new caller");
            None
        }
        Err(_) => {
            tracing::warn!(
                budget_ms = MEMORY_BUDGET.as_millis() as u64,
                "caller memory too slow; greeting as a new caller"
            );
            None
        }
    }
}

/// The greeting: the tenant's own for a new caller; for one the tenant
/// knows, a welcome back (by name when known) that recalls the last call's
/// first topic.
pub fn greeting_for(
    customer: &repo::customers::Customer,
    caller: Option<&EnrichedContext>,
) -> String {
    let Some(caller) = caller.filter(|c| c.known) else {
        return customer.greeting.clone();
    };
    let first_name = caller
        .greeting_name
        .as_deref()
        .and_then(|n| n.split_whitespace().next());
    let mut text = match first_name {
        Some(name) => format!("Hi {name}, welcome back to {}.", customer.name),
        None => format!("Welcome back to {}.", customer.name),
    };
    text.push_str(&format!(" This is {}.", customer.agent_name));
    let topic = caller
        .card
        .as_ref()
        .and_then(|card| card.recent_calls.first())
        .and_then(|last| last.topics.first())
        .map(|t| t.trim().trim_end_matches('.'))
        .filter(|t| !t.is_empty());
    if let Some(topic) = topic {
        text.push_str(&format!(" Last time we talked about {topic}."));
    }
    text.push_str(" How can I help you today?");
    text
}

#[allow(clippy::too_many_arguments)]
async fn converse(
    incoming: &mut (impl Stream<Item = WsIn> + Unpin),
    outgoing: &mpsc::Sender<WsOut>,
    ctx: &CallContext,
    start: &StreamStart,
    customer_id: CustomerId,
    call_id: uuid::Uuid,
    config: SessionConfig,
    setup: CallSetup,
    cancel: CancellationToken,
    dropped: &mut Dropped,
) -> EndReason {
    let epoch = Instant::now();
    let now = || Instant::now().saturating_duration_since(epoch);
    let (events_tx, mut events) = mpsc::channel::<ProviderEvent>(256);
    let mut providers = ctx.providers.for_call(&setup, events_tx).await;
    ctx.metrics.call_started();
    let (transcript_tx, writer) =
        transcript::spawn_writer(ctx.platform.db().clone(), customer_id, call_id);
    let mut inbound = match InboundPath::new(ctx.endpoint.clone()) {
        Ok(path) => path,
        Err(error) => {
            tracing::error!(%error, "audio path could not be built");
            return EndReason::SocketClosed;
        }
    };
    let mut session = match CallSession::new(config, start.stream_sid.clone(), now()) {
        Ok(session) => session,
        Err(error) => {
            tracing::error!(%error, "call session could not be built");
            return EndReason::SocketClosed;
        }
    };
    let mut turns: HashMap<u32, CancellationToken> = HashMap::new();
    let mut endpoints: Vec<EndpointEvent> = Vec::with_capacity(4);
    let reason;
    // Why we ended the call ourselves, if we did: more telling than the
    // `stop` that follows a hang-up or transfer.
    let mut requested_end: Option<EndReason> = None;

    'call: loop {
        // Everything the session wants done, in order.
        while let Some(output) = session.poll_output() {
            match output {
                Output::Twilio(text) => {
                    if outgoing.send(WsOut::Text(text)).await.is_err() {
                        session.handle(Input::SocketClosed, now());
                    }
                }
                Output::StartReply { turn, history } => {
                    let token = turns
                        .entry(turn)
                        .or_insert_with(|| cancel.child_token())
                        .clone();
                    providers.start_reply(turn, history, token);
                }
                Output::Speak { turn, text, last } => {
                    let token = turns
                        .entry(turn)
                        .or_insert_with(|| cancel.child_token())
                        .clone();
                    providers.speak(turn, text, last, token);
                }
                Output::CancelTurn { turn } => {
                    if let Some(token) = turns.remove(&turn) {
                        token.cancel();
                    }
                }
                Output::AgentSpeaking(speaking) => inbound.set_agent_speaking(speaking),
                Output::Persist(entry) => {
                    if entry.speaker == Speaker::Agent {
                        observe_turn(&ctx.metrics, providers.names(), &entry.timings);
                    }
                    let _ = transcript_tx.send(entry);
                }
                Output::ToolResult { turn, id, content } => {
                    providers.tool_result(turn, id, content)
                }
                Output::TakeMessage { arguments } => {
                    tracing::info!(len = arguments.len(), "message taken for the tenant");
                }
                Output::Hangup { reason } => {
                    requested_end = Some(reason);
                    tracing::info!(?reason, "hanging up");
                    ctx.control.hangup(customer_id, &start.call_sid);
                }
                Output::Transfer { to } => {
                    requested_end = Some(EndReason::Transferred);
                    tracing::info!("transferring");
                    ctx.control.transfer(customer_id, &start.call_sid, &to);
                }
                Output::Ended { reason: why } => {
                    reason = why;
                    break 'call;
                }
            }
        }
        let deadline = session.poll_timeout().map(|t| epoch + t);
        tokio::select! {
            frame = incoming.next() => match frame {
                None => session.handle(Input::SocketClosed, now()),
                Some(WsIn::Binary(_)) => dropped.binary += 1,
                Some(WsIn::Text(text)) => match protocol::parse(&text) {
                    Err(_) => dropped.malformed += 1,
                    Ok(Inbound::Media { timestamp_ms, payload }) => {
                        let pushed = inbound.push_media(timestamp_ms, &payload, |event| match event {
                            InboundEvent::Audio { start, frame } => providers.caller_audio(start, frame),
                            InboundEvent::Endpoint(e) => endpoints.push(e),
                            InboundEvent::BargeIn(_) => {}
                        });
                        if pushed.is_err() {
                            dropped.bad_payloads += 1;
                        }
                        for event in endpoints.drain(..) {
                            providers.caller_endpoint(&event);
                            match event {
                                EndpointEvent::SpeechStarted { .. } => session.handle(Input::CallerSpeechStarted, now()),
                                EndpointEvent::SpeechEnded(u) => session.handle(Input::CallerSpeechEnded { is_short: u.is_short }, now()),
                                EndpointEvent::NoiseBurst { .. } => session.handle(Input::CallerSpeechEnded { is_short: true }, now()),
                                EndpointEvent::Paused { .. } => session.handle(Input::CallerPaused, now()),
                                EndpointEvent::Resumed { .. } => session.handle(Input::CallerSpeechStarted, now()),
                            }
                        }
                    }
                    Ok(Inbound::Mark { name }) => session.handle(Input::Mark { name }, now()),
                    Ok(Inbound::Dtmf { digit }) => session.handle(Input::Dtmf { digit }, now()),
                    Ok(Inbound::Stop) => session.handle(Input::Stop, now()),
                    Ok(Inbound::Start(_)) | Ok(Inbound::Connected) => dropped.out_of_order += 1,
                    Ok(Inbound::Other { .. }) => {}
                },
            },
            Some(ProviderEvent::Session(input)) = events.recv() => session.handle(input, now()),
            () = sleep_until(deadline) => session.tick(now()),
            () = cancel.cancelled() => session.handle(Input::SocketClosed, now()),
        }
    }
    for token in turns.values() {
        token.cancel();
    }
    drop(transcript_tx);
    let usage = providers.usage();
    drop(providers);
    ctx.metrics.call_ended();
    let written = writer.await.unwrap_or(0);
    meter_usage(&ctx.platform, customer_id, usage).await;
    record_end_reason(
        &ctx.platform,
        customer_id,
        &start.call_sid,
        requested_end.unwrap_or(reason),
    )
    .await;
    tracing::info!(?reason, written, ?dropped, "call ended");
    let _ = outgoing.send(WsOut::Close(1000, "call ended".into())).await;
    reason
}

/// Writes why the call ended (best effort: the carrier's status callback
/// records the final status and duration either way) and, in the same
/// transaction, enqueues the call's post-call job.
async fn record_end_reason(
    platform: &Platform,
    customer_id: CustomerId,
    call_sid: &str,
    reason: EndReason,
) {
    let text = match reason {
        EndReason::Stopped => "stream_stopped",
        EndReason::SocketClosed => "socket_closed",
        EndReason::Silence => "silence",
        EndReason::MaxDuration => "max_duration",
        EndReason::AgentHangup => "agent_hangup",
        EndReason::Transferred => "transferred",
    };
    let result = async {
        let mut tx = platform.db().tenant(customer_id).await?;
        repo::calls::record_end_reason(&mut tx, call_sid, text).await?;
        crate::jobs::recovery::enqueue_post_call(&mut tx, call_sid).await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "could not record the call's end reason or queue its post-call job");
    }
}

/// Exports an agent turn's stage latencies, labelled by the providers that
/// served it.
fn observe_turn(metrics: &Metrics, names: [&str; 3], timings: &TurnTimings) {
    let Some(first_media) = timings.first_media_ms else {
        return;
    };
    metrics.turn();
    let [stt, llm, tts] = names;
    let gap = |from: Option<u64>, to: Option<u64>| {
        from.zip(to)
            .map(|(a, b)| Duration::from_millis(b.saturating_sub(a)))
    };
    if let Some(d) = gap(timings.speech_end_ms, timings.caller_end_ms) {
        metrics.observe(Stage::SttFinal, stt, d);
    }
    if let Some(d) = gap(timings.caller_end_ms, timings.llm_first_token_ms) {
        metrics.observe(Stage::LlmFirstToken, llm, d);
    }
    if let Some(d) = gap(timings.llm_first_token_ms, timings.tts_first_byte_ms) {
        metrics.observe(Stage::TtsFirstByte, tts, d);
    }
    if let Some(d) = gap(timings.tts_first_byte_ms, Some(first_media)) {
        metrics.observe(Stage::FirstMedia, tts, d);
    }
    if let Some(d) = gap(
        timings.speech_end_ms.or(timings.caller_end_ms),
        Some(first_media),
    ) {
        metrics.observe(Stage::VoiceToVoice, llm, d);
    }
}

/// Adds what the call's providers consumed to the tenant's monthly usage.
async fn meter_usage(platform: &Platform, customer_id: CustomerId, usage: crate::providers::Usage) {
    if usage == crate::providers::Usage::default() {
        return;
    }
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let delta = repo::usage::Usage {
        llm_prompt_tokens: clamp(usage.llm_prompt_tokens),
        llm_completion_tokens: clamp(usage.llm_completion_tokens),
        tts_characters: clamp(usage.tts_characters),
        stt_seconds: clamp(usage.stt_seconds),
        ..Default::default()
    };
    let result = async {
        let mut tx = platform.db().tenant(customer_id).await?;
        repo::usage::add(&mut tx, chrono::Utc::now().date_naive(), &delta).await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "could not meter the call's provider usage");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
