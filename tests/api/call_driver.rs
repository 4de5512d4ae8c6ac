//! The call driver end to end over channels: a Twilio emulator (plays agent
//! audio in real time, echoes marks, flushes on clear) talks to the real
//! driver, the real audio path, the scripted fake providers and the real
//! database (as the application role). Malformed frames are mixed in.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use switchboard::call::driver::{self, CallContext, StreamOutcome, WsIn, WsOut};
use switchboard::call::EndReason;
use switchboard::db::CustomerId;
use switchboard::providers::fake::{FakeFactory, FAKE_REPLY};
use switchboard::repo;
use tokio::sync::mpsc;

use crate::helpers::{call_transcript, driver_context, fixture_ulaw, TestDb};

const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";

/// The Twilio side: what it received and the channel into the driver.
struct Twilio {
    to_driver: mpsc::Sender<WsIn>,
    from_driver: mpsc::Receiver<WsOut>,
    /// Agent audio received, in samples.
    agent_samples: u64,
    /// Marks echoed.
    echoed: Vec<String>,
    /// Clears received.
    clears: usize,
    /// Close frame, if any.
    closed: Option<(u16, String)>,
    /// Every outbound message was on spec.
    off_spec: Vec<String>,
    /// Sequence number for our messages.
    seq: u64,
    /// Pending marks and when they are due (ms on the emulator clock).
    pending: Vec<(u64, String)>,
    /// Playhead: when queued audio finishes, ms.
    playhead: u64,
    /// Emulator clock, ms.
    clock: u64,
}

impl Twilio {
    async fn send(&mut self, value: Value) {
        self.seq += 1;
        let _ = self.to_driver.send(WsIn::Text(value.to_string())).await;
    }

    async fn raw(&mut self, text: &str) {
        let _ = self.to_driver.send(WsIn::Text(text.to_string())).await;
    }

    /// Reads what the driver sent, then advances 20 ms of real time,
    /// echoing marks whose audio has played.
    async fn step(&mut self) {
        while let Ok(out) = self.from_driver.try_recv() {
            match out {
                WsOut::Close(code, reason) => self.closed = Some((code, reason)),
                WsOut::Text(text) => {
                    let v: Value = match serde_json::from_str(&text) {
                        Ok(v) => v,
                        Err(_) => {
                            self.off_spec.push(text);
                            continue;
                        }
                    };
                    let keys: Vec<&String> = v
                        .as_object()
                        .map(|o| o.keys().collect())
                        .unwrap_or_default();
                    match v["event"].as_str() {
                        Some("media") if keys.len() == 3 => {
                            let bytes = BASE64
                                .decode(v["media"]["payload"].as_str().unwrap_or(""))
                                .unwrap_or_default();
                            if bytes.is_empty() || bytes.len() % 160 != 0 {
                                self.off_spec.push(text.clone());
                            }
                            self.agent_samples += bytes.len() as u64;
                            self.playhead = self.playhead.max(self.clock) + bytes.len() as u64 / 8;
                        }
                        Some("mark") if keys.len() == 3 => {
                            let name = v["mark"]["name"].as_str().unwrap_or("").to_string();
                            self.pending.push((self.playhead.max(self.clock), name));
                        }
                        Some("clear") if keys.len() == 2 => {
                            self.clears += 1;
                            self.playhead = self.clock;
                            for (_, name) in std::mem::take(&mut self.pending) {
                                self.echo(name).await;
                            }
                        }
                        _ => self.off_spec.push(text.clone()),
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.clock += 20;
        let due: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter(|(t, _)| *t <= self.clock)
            .cloned()
            .collect();
        self.pending.retain(|(t, _)| *t > self.clock);
        for (_, name) in due {
            self.echo(name).await;
        }
    }

    async fn echo(&mut self, name: String) {
        self.echoed.push(name.clone());
        self.send(json!({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}))
            .await;
    }

    async fn wait(&mut self, ms: u64) {
        for _ in 0..ms / 20 {
            self.step().await;
        }
    }

    /// Streams caller audio in real time, 20 ms per message.
    async fn speak(&mut self, audio: &[u8]) {
        for chunk in audio.chunks(160) {
            let timestamp = self.clock;
            self.send(json!({"event": "media", "sequenceNumber": self.seq.to_string(), "streamSid": "MZ1",
                             "media": {"track": "inbound", "chunk": "1", "timestamp": timestamp.to_string(),
                                       "payload": BASE64.encode(chunk)}}))
                .await;
            self.step().await;
        }
    }

    async fn start(&mut self, token: &str) {
        self.send(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            .await;
        self.send(json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
            "start": {"accountSid": "AC0", "streamSid": "MZ1", "callSid": CALL_SID, "tracks": ["inbound"],
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                      "customParameters": {"callToken": token}}}))
            .await;
    }
}

async fn setup(tdb: &TestDb) -> (CustomerId, CallContext, String) {
    let customer = tdb.tenant("driver", "+15550003000").await;
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    repo::calls::create(
        &mut tx,
        &repo::calls::NewCall {
            call_sid: CALL_SID,
            user_id: Some("+15557654321"),
            to_number: "+15550003000",
            direction: "inbound",
            status: "ringing",
            started_at: chrono::Utc::now(),
        },
    )
    .await
    .expect("call row");
    tx.commit().await.expect("commit");
    let (ctx, token) = driver_context(tdb, customer, CALL_SID);
    (customer, ctx, token)
}

fn spawn_driver(
    ctx: CallContext,
) -> (
    Twilio,
    tokio::task::JoinHandle<(StreamOutcome, driver::Dropped)>,
) {
    let (to_driver, rx) = mpsc::channel::<WsIn>(1024);
    let (tx, from_driver) = mpsc::channel::<WsOut>(1024);
    let incoming =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let handle = tokio::spawn(driver::run(Box::pin(incoming), tx, ctx));
    let twilio = Twilio {
        to_driver,
        from_driver,
        agent_samples: 0,
        echoed: Vec::new(),
        clears: 0,
        closed: None,
        off_spec: Vec::new(),
        seq: 0,
        pending: Vec::new(),
        playhead: 0,
        clock: 0,
    };
    (twilio, handle)
}

#[tokio::test]
async fn a_call_greets_hears_the_caller_replies_and_writes_the_transcript() {
    let tdb = TestDb::new().await;
    let (customer, ctx, token) = setup(&tdb).await;
    let live = ctx.live.clone();
    let (mut twilio, driver) = spawn_driver(ctx);
    twilio.start(&token).await;
    // Noise from a confused or hostile peer: all dropped, the call goes on.
    twilio.raw("not json").await;
    twilio
        .raw(r#"{"event":"media","media":{"payload":"!!!"}}"#)
        .await;
    twilio
        .raw(r#"{"event":"start","start":{"streamSid":"MZ2","callSid":"CA2"}}"#)
        .await;
    let _ = twilio.to_driver.send(WsIn::Binary(10)).await;
    twilio.wait(1_500).await;
    assert_eq!(live.len(), 1, "the call is registered while live");
    assert!(
        twilio.agent_samples >= 8_000,
        "a 1 s greeting arrived: {}",
        twilio.agent_samples
    );
    assert!(twilio.echoed.iter().any(|m| m.starts_with("1:")));

    let mut question = fixture_ulaw("question.wav");
    question.extend(vec![0xFF; 8_000]); // a second of silence ends the turn
    twilio.speak(&question).await;
    twilio.wait(3_000).await;
    assert!(
        twilio.agent_samples >= 8_000 + 16_000,
        "the 2 s reply arrived: {}",
        twilio.agent_samples
    );
    twilio.send(json!({"event": "stop", "sequenceNumber": "99", "streamSid": "MZ1", "stop": {"callSid": CALL_SID}})).await;
    let (outcome, dropped) = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("driver ends")
        .expect("no panic");
    assert_eq!(outcome, StreamOutcome::Ended(EndReason::Stopped));
    assert_eq!(dropped.malformed, 1);
    assert_eq!(dropped.bad_payloads, 1);
    assert!(dropped.out_of_order >= 1);
    assert_eq!(dropped.binary, 1);
    assert!(
        twilio.off_spec.is_empty(),
        "off-spec frames: {:?}",
        twilio.off_spec
    );
    assert_eq!(live.len(), 0);

    let (call, turns) = call_transcript(tdb.db(), customer, CALL_SID).await;
    assert_eq!(
        call.stream_sid.as_deref(),
        Some("MZ1"),
        "the stream is recorded"
    );
    assert_eq!(call.end_reason.as_deref(), Some("stream_stopped"));
    let lines: Vec<(String, String)> = turns
        .iter()
        .map(|t| (t.speaker.clone(), t.text.clone()))
        .collect();
    assert_eq!(lines[0].0, "agent", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|(s, t)| s == "caller" && t == "caller utterance 1"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|(s, t)| s == "agent" && t == FAKE_REPLY),
        "{lines:?}"
    );
    tdb.close().await;
}

#[tokio::test]
async fn a_bad_call_token_closes_the_socket_with_policy_violation() {
    let tdb = TestDb::new().await;
    let (_, ctx, token) = setup(&tdb).await;
    let (mut twilio, driver) = spawn_driver(ctx);
    let forged = format!("{}x", &token[..token.len() - 1]);
    twilio.start(&forged).await;
    let (outcome, _) = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("ends")
        .expect("no panic");
    assert!(matches!(outcome, StreamOutcome::Refused(_)), "{outcome:?}");
    twilio.step().await;
    assert_eq!(
        twilio.closed.as_ref().map(|c| c.0),
        Some(driver::CLOSE_POLICY_VIOLATION)
    );
    assert_eq!(
        twilio.agent_samples, 0,
        "no audio for an unauthorised stream"
    );
    tdb.close().await;
}

#[tokio::test]
async fn barge_in_over_the_reply_clears_twilio_and_stops_the_audio() {
    let tdb = TestDb::new().await;
    let (customer, mut ctx, token) = setup(&tdb).await;
    // A long reply, so the caller can talk over it.
    ctx.providers = Arc::new(FakeFactory {
        config: switchboard::providers::fake::FakeConfig {
            reply_audio: Duration::from_secs(8),
            ..Default::default()
        },
    });
    let (mut twilio, driver) = spawn_driver(ctx);
    twilio.start(&token).await;
    twilio.wait(1_500).await;
    let mut question = fixture_ulaw("greeting_reply.wav");
    question.extend(vec![0xFF; 6_400]);
    twilio.speak(&question).await;
    // The reply is playing now; the caller talks over it.
    twilio.wait(400).await;
    let before = twilio.agent_samples;
    twilio.speak(&fixture_ulaw("interruption.wav")).await;
    assert_eq!(twilio.clears, 1, "one clear on barge-in");
    twilio.wait(1_000).await;
    twilio
        .send(json!({"event": "stop", "streamSid": "MZ1"}))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("ends");
    assert!(twilio.agent_samples > before);
    assert!(
        twilio.agent_samples < 8_000 + 64_000,
        "the rest of the reply was never sent: {}",
        twilio.agent_samples
    );
    let (_, turns) = call_transcript(tdb.db(), customer, CALL_SID).await;
    assert!(
        turns.iter().any(|t| t.speaker == "agent" && t.interrupted),
        "an interrupted agent turn is recorded: {turns:?}"
    );
    tdb.close().await;
}

#[tokio::test]
async fn a_known_caller_is_welcomed_back_by_name_with_the_last_calls_topic() {
    let tdb = TestDb::new().await;
    let (customer, ctx, token) = setup(&tdb).await;
    // What an earlier call left in memory (as the post-call job writes it).
    let mut tx = tdb.db().tenant(customer).await.expect("tx");
    repo::calls::create(
        &mut tx,
        &repo::calls::NewCall {
            call_sid: "CA-earlier",
            user_id: Some("+15557654321"),
            to_number: "+15550003000",
            direction: "inbound",
            status: "completed",
            started_at: chrono::Utc::now() - chrono::Duration::days(3),
        },
    )
    .await
    .expect("earlier call");
    sqlx::query(
        "INSERT INTO caller_profiles (customer_id, user_id, display_name, fields, call_count)
         VALUES ($1, '+15557654321', 'Jane Doe', '{\"name\": \"Jane Doe\"}', 1)",
    )
    .bind(customer)
    .execute(tx.conn())
    .await
    .expect("profile");
    sqlx::query(
        "INSERT INTO call_summaries (customer_id, call_id, user_id, summary, topics)
         SELECT customer_id, call_id, user_id, 'Jane asked about rental cars.', ARRAY['rental car coverage']
         FROM calls WHERE call_sid = 'CA-earlier'",
    )
    .execute(tx.conn())
    .await
    .expect("summary");
    tx.commit().await.expect("commit");

    let (mut twilio, driver) = spawn_driver(ctx);
    twilio.start(&token).await;
    twilio.wait(1_500).await;
    twilio.send(json!({"event": "stop", "sequenceNumber": "9", "streamSid": "MZ1", "stop": {"callSid": CALL_SID}})).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("driver ends");
    let (_, turns) = call_transcript(tdb.db(), customer, CALL_SID).await;
    let greeting = &turns.first().expect("a greeting").text;
    assert!(
        greeting.starts_with("Hi Jane, welcome back to "),
        "{greeting}"
    );
    assert!(
        greeting.contains("Last time we talked about rental car coverage."),
        "{greeting}"
    );
    tdb.close().await;
}
