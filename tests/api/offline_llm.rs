//! The offline language model (SmolLM2-135M-Instruct on llama.cpp), for
//! real: direct streaming through `LanguageModel`, and the OpenAI-compatible
//! endpoint over loopback HTTP.
//!
//! The GGUF file is taken from `SWITCHBOARD_SMOLLM2_GGUF`, else from where
//! `switchboard models fetch` installs it under the data dir
//! (`SWITCHBOARD_DATA_DIR`, default the checkout's `.switchboard`). When it is missing the
//! tests print why and pass, unless `SWITCHBOARD_REQUIRE_MODELS` is set,
//! in which case they fail.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchboard::providers::llama::{http, LlamaConfig, LocalLlm};
use switchboard::providers::roles::{LanguageModel, LlmEvent, LlmMessage, LlmRequest};

const RECEPTIONIST: &str = "You are the friendly receptionist of Bright Smile Dental. \
     Answer callers briefly and politely.";

/// The model file, or `None` (after saying so) when the tests should skip.
fn model_path() -> Option<PathBuf> {
    let data_dir = std::env::var_os("SWITCHBOARD_DATA_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".switchboard"));
    let path = std::env::var_os("SWITCHBOARD_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            switchboard::models::install_dir(&data_dir, &switchboard::models::SMOLLM2)
                .join(switchboard::models::SMOLLM2_GGUF)
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("SWITCHBOARD_REQUIRE_MODELS").is_none(),
        "SWITCHBOARD_REQUIRE_MODELS is set but the SmolLM2 GGUF is not at {}",
        path.display()
    );
    eprintln!(
        "SKIPPED: SmolLM2 GGUF not found at {} (set SWITCHBOARD_SMOLLM2_GGUF)",
        path.display()
    );
    None
}

/// A model of its own (for tests that read the counters).
fn own_model() -> Option<Arc<LocalLlm>> {
    let path = model_path()?;
    Some(Arc::new(
        LocalLlm::load(LlamaConfig::new(path)).expect("the model loads"),
    ))
}

/// One model shared by the tests that do not read counters.
fn shared_model() -> Option<Arc<LocalLlm>> {
    static MODEL: OnceLock<Arc<LocalLlm>> = OnceLock::new();
    let path = model_path()?;
    Some(
        MODEL
            .get_or_init(|| {
                Arc::new(LocalLlm::load(LlamaConfig::new(path)).expect("the model loads"))
            })
            .clone(),
    )
}

fn greeting(max_tokens: u32) -> LlmRequest {
    LlmRequest {
        model: "smollm2".into(),
        messages: vec![
            LlmMessage::System(RECEPTIONIST.into()),
            LlmMessage::User("Hello, who are you?".into()),
        ],
        tools: Vec::new(),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
    }
}

/// Serves the endpoint on a free loopback port; returns its base URL.
async fn serve(llm: Arc<LocalLlm>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, http::router(llm))
            .await
            .expect("serve");
    });
    format!("http://{address}")
}

fn chat_body(prompt: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": RECEPTIONIST},
            {"role": "user", "content": prompt},
        ],
        "stream": stream,
        "stream_options": {"include_usage": true},
        "temperature": 0,
        "max_tokens": max_tokens,
        "tools": [{"type": "function", "function": {
            "name": "transfer_call", "description": "Transfer the caller",
            "parameters": {"type": "object", "properties": {}}
        }}],
    })
}

/// The `data:` payloads of an SSE body, in order.
fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_string()
        })
        .collect()
}

/// Waits (bounded) until `done` holds for the model's counters.
async fn wait_for(llm: &LocalLlm, done: impl Fn(&switchboard::providers::llama::LlmStats) -> bool) {
    for _ in 0..1200 {
        if done(&llm.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the model never got there: {:?}", llm.stats());
}

#[tokio::test]
async fn offline_llm_answers_a_caller_greeting() {
    let Some(llm) = shared_model() else { return };
    assert_eq!(llm.name(), "smollm2");
    let mut events = llm.stream(greeting(48)).await.expect("request accepted");
    let mut text = String::new();
    let mut usage = None;
    let mut finish = None;
    while let Some(event) = events.next().await {
        match event.expect("no error") {
            LlmEvent::Text(piece) => text.push_str(&piece),
            LlmEvent::Usage(u) => usage = Some(u),
            LlmEvent::Done { finish_reason } => finish = Some(finish_reason),
            LlmEvent::ToolCall(call) => panic!("unexpected tool call {call:?}"),
        }
    }
    println!("smollm2 said: {text:?}");
    assert!(!text.trim().is_empty(), "a real reply");
    assert!(!text.contains("<|im_end|>") && !text.contains("<|im_start|>"));
    let usage = usage.expect("usage reported");
    assert!(
        usage.prompt > 10,
        "the system prompt was counted: {usage:?}"
    );
    assert!(usage.completion >= 1 && usage.completion <= 48, "{usage:?}");
    assert!(
        matches!(finish.as_deref(), Some("stop" | "length")),
        "{finish:?}"
    );
}

#[tokio::test]
async fn offline_llm_streams_openai_chunks_over_http() {
    let Some(llm) = shared_model() else { return };
    let base = serve(llm).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body("Hello, who are you?", 32, true))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("ascii"),
        "text/event-stream"
    );
    let body = response.text().await.expect("body");
    let payloads = sse_payloads(&body);
    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{body}"
    );
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("each chunk is JSON"))
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "smollm2");
        assert!(chunk["id"].as_str().expect("id").starts_with("chatcmpl-"));
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.trim().is_empty(), "content arrived");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1, "one finish chunk");
    assert!(matches!(
        finishes[0]["choices"][0]["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    let completion = usage["usage"]["completion_tokens"].as_u64().expect("count");
    let prompt = usage["usage"]["prompt_tokens"].as_u64().expect("count");
    assert!((1..=32).contains(&completion), "{usage}");
    assert_eq!(
        usage["usage"]["total_tokens"].as_u64(),
        Some(prompt + completion)
    );
}

#[tokio::test]
async fn offline_llm_honours_max_tokens() {
    let Some(llm) = shared_model() else { return };
    let base = serve(llm).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body(
            "Please tell me a long story about the history of dentistry.",
            4,
            false,
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
}

#[tokio::test]
async fn offline_llm_rejects_what_it_cannot_take() {
    let Some(llm) = shared_model() else { return };
    let base = serve(llm).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/chat/completions");
    let long = "tooth ".repeat(3000);
    for body in [
        json!({"messages": "not a list"}),
        json!({"messages": [{"role": "wizard", "content": "hi"}]}),
        chat_body(&long, 16, true),
    ] {
        let response = client.post(&url).json(&body).send().await.expect("request");
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("JSON error");
        assert!(error["error"]["message"].is_string(), "{error}");
    }
}

#[tokio::test]
async fn offline_llm_answers_a_call_longer_than_its_context_by_leaving_out_old_turns() {
    let Some(llm) = shared_model() else { return };
    let base = serve(llm).await;
    let mut messages = vec![json!({"role": "system", "content": "You are Ava, a receptionist."})];
    // About 3,000 tokens of conversation: more than the 2,048 the model holds.
    for i in 0..30 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: {}", "could you tell me about my policy, my car and my house insurance again? ".repeat(2))}));
        messages.push(json!({"role": "assistant", "content": "Of course. Your policy covers your car and your house, and rentals while your car is repaired."}));
    }
    messages.push(json!({"role": "user", "content": "Thanks. Are you open on Saturday?"}));
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "smollm2", "messages": messages, "max_tokens": 8}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        200,
        "the oldest turns are left out, not the call"
    );
    let body: Value = response.json().await.expect("JSON");
    let prompt = body["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
    assert!(
        prompt > 0 && prompt < 2_048 * 3 / 4,
        "cut to three quarters of the context: {body}"
    );
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap_or(0) >= 1,
        "{body}"
    );
}

#[tokio::test]
async fn offline_llm_stops_generating_when_the_http_client_leaves() {
    let Some(llm) = own_model() else { return };
    let base = serve(llm.clone()).await;
    let mut response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&chat_body(
            "Please tell me a very long story about the history of dentistry.",
            1000,
            true,
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data: ").count() < 3 {
        let chunk = response.chunk().await.expect("body").expect("more body");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    wait_for(&llm, |s| s.cancelled == 1).await;
    let stats = llm.stats();
    assert_eq!(stats.completed, 0, "{stats:?}");
    assert!(stats.generated_tokens < 1000, "{stats:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        llm.stats().generated_tokens,
        stats.generated_tokens,
        "nothing is generated after the cancel"
    );
}

#[tokio::test]
async fn offline_llm_stops_generating_when_the_stream_is_dropped() {
    let Some(llm) = own_model() else { return };
    let mut request = greeting(1000);
    request.messages[1] = LlmMessage::User("Write a very long poem about teeth.".into());
    let mut events = llm.stream(request).await.expect("accepted");
    match events.next().await {
        Some(Ok(LlmEvent::Text(_))) => {}
        other => panic!("expected text first, got {other:?}"),
    }
    drop(events);
    wait_for(&llm, |s| s.cancelled == 1).await;
    assert_eq!(llm.stats().completed, 0);
}

#[tokio::test]
async fn offline_llm_serves_two_requests_at_once() {
    let Some(llm) = shared_model() else { return };
    let base = serve(llm).await;
    let client = reqwest::Client::new();
    let ask = |prompt: &'static str| {
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            let response = client
                .post(url)
                .json(&chat_body(prompt, 16, true))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200);
            response.text().await.expect("body")
        }
    };
    let (first, second) = tokio::join!(
        ask("Hello, who are you?"),
        ask("What are your opening hours?")
    );
    for body in [first, second] {
        let payloads = sse_payloads(&body);
        assert_eq!(
            payloads.last().map(String::as_str),
            Some("[DONE]"),
            "{body}"
        );
        assert!(body.contains("\"finish_reason\":\""), "{body}");
        assert!(body.contains("\"usage\":{"), "{body}");
    }
}

/// Prints time to first token and generation speed for a ~150-token
/// prompt; run by hand: `cargo test --release --test api
/// offline_llm_speed -- --ignored --nocapture`. Asserts nothing.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn offline_llm_speed() {
    let Some(llm) = own_model() else { return };
    let system = format!(
        "{RECEPTIONIST} The practice is open Monday to Friday from 8 am to 6 pm \
         and on Saturday from 9 am to 1 pm. Dr. Alvarez and Dr. Chen see new \
         patients; cleanings take 45 minutes and cost 95 dollars without \
         insurance. We accept Delta Dental, Cigna and Aetna. Emergencies are \
         seen the same day. Parking is free behind the building on Oak Street. \
         If the caller wants to book, ask for their name, date of birth and a \
         preferred day, then confirm the details back to them. Never give \
         medical advice; offer an appointment instead."
    );
    for round in 0..3 {
        let request = LlmRequest {
            model: "smollm2".into(),
            messages: vec![
                LlmMessage::System(system.clone()),
                LlmMessage::User(
                    "Hi, I'd like to book a cleaning next week. What times do you have?".into(),
                ),
            ],
            tools: Vec::new(),
            temperature: Some(0.0),
            max_tokens: Some(64),
        };
        let start = tokio::time::Instant::now();
        let mut events = llm.stream(request).await.expect("accepted");
        let mut first = None;
        let mut usage = None;
        while let Some(event) = events.next().await {
            match event.expect("no error") {
                LlmEvent::Text(_) if first.is_none() => first = Some(start.elapsed()),
                LlmEvent::Usage(u) => usage = Some(u),
                _ => {}
            }
        }
        let total = start.elapsed();
        let usage = usage.expect("usage");
        let first = first.unwrap_or(total);
        let rate =
            f64::from(usage.completion.saturating_sub(1)) / (total - first).as_secs_f64().max(1e-9);
        println!(
            "round {round}: threads {} prompt {} tokens, TTFT {:?}, {} tokens in {:?}, {:.1} tokens/s after the first",
            llm.threads(),
            usage.prompt,
            first,
            usage.completion,
            total,
            rate
        );
    }
}

/// A long receptionist system prompt (about 300 tokens), as a tenant's
/// agent would have.
fn long_system_prompt() -> String {
    format!(
        "{RECEPTIONIST} The practice is open Monday to Friday from 8 am to 6 pm \
         and on Saturday from 9 am to 1 pm; it is closed on Sundays and public \
         holidays. Dr. Alvarez and Dr. Chen see new patients; Dr. Patel sees \
         children under twelve only. Cleanings take 45 minutes and cost 95 \
         dollars without insurance; a check-up with X-rays costs 140 dollars; \
         whitening starts at 300 dollars. We accept Delta Dental, Cigna, Aetna, \
         MetLife and Guardian; other insurers are billed by the patient. \
         Emergencies such as a broken tooth, swelling or severe pain are seen \
         the same day: put the caller through to the emergency line. Parking is \
         free behind the building on Oak Street; the entrance is next to the \
         pharmacy, and there is a lift to the second floor. If the caller wants \
         to book, ask for their full name, date of birth, phone number and a \
         preferred day and time, then confirm every detail back to them before \
         ending the call. To cancel or move an appointment, ask for the name and \
         the date of the existing appointment. Cancellations with less than 24 \
         hours notice cost 50 dollars. Never give medical advice and never \
         diagnose; offer an appointment instead. Never promise a price for \
         treatment that the dentist has not seen. Speak in short sentences, one \
         or two at a time, because the caller hears you on the phone. If you do \
         not know an answer, say that a colleague will call back, and take a \
         message with the caller's name and number."
    )
}

/// The caller's side of a realistic booking call.
const CALLER_TURNS: [&str; 5] = [
    "Hi, I'd like to book a cleaning next week. What times do you have?",
    "Tuesday morning would be great, maybe around ten?",
    "My name is Maria Gonzalez, born March 3rd 1985.",
    "Do you take Cigna insurance?",
    "Great, and where do I park?",
];

/// Asks `messages` with greedy decoding; returns the reply, the time to
/// its first text piece and the prompt length.
async fn timed_turn(
    llm: &LocalLlm,
    messages: Vec<LlmMessage>,
    max_tokens: u32,
) -> (String, Duration, u32) {
    let request = LlmRequest {
        model: "smollm2".into(),
        messages,
        tools: Vec::new(),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
    };
    let start = tokio::time::Instant::now();
    let mut events = llm.stream(request).await.expect("accepted");
    let mut first = None;
    let mut text = String::new();
    let mut prompt = 0;
    while let Some(event) = events.next().await {
        match event.expect("no error") {
            LlmEvent::Text(piece) => {
                first.get_or_insert_with(|| start.elapsed());
                text.push_str(&piece);
            }
            LlmEvent::Usage(u) => prompt = u.prompt,
            _ => {}
        }
    }
    (text, first.unwrap_or_else(|| start.elapsed()), prompt)
}

/// Prints time to first token per turn of a five-turn phone conversation
/// with a ~300-token system prompt: every turn re-sends the whole
/// conversation, as the call pipeline does. Run by hand: `cargo test
/// --test api offline_llm_multi_turn_speed -- --ignored --nocapture`.
/// Asserts nothing.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn offline_llm_multi_turn_speed() {
    let Some(llm) = own_model() else { return };
    for run in 0..2 {
        let mut messages = vec![LlmMessage::System(long_system_prompt())];
        for (turn, caller) in CALLER_TURNS.iter().enumerate() {
            messages.push(LlmMessage::User((*caller).to_string()));
            let decoded_before = llm.stats().prompt_tokens;
            let (reply, ttft, prompt) = timed_turn(&llm, messages.clone(), 24).await;
            let decoded = llm.stats().prompt_tokens - decoded_before;
            println!(
                "run {run} turn {turn}: prompt {prompt} tokens, {decoded} decoded, TTFT {:.0} ms",
                ttft.as_secs_f64() * 1000.0
            );
            messages.push(LlmMessage::Assistant {
                content: reply,
                tool_calls: Vec::new(),
            });
        }
    }
}

/// A fresh model with an empty cache, for the answers to compare with.
fn cold_model() -> Arc<LocalLlm> {
    own_model().expect("the model is there")
}

/// The greedy reply to `messages` and how many prompt tokens it reused.
async fn greedy(llm: &LocalLlm, messages: &[LlmMessage]) -> (String, u64) {
    let before = llm.stats().reused_prompt_tokens;
    let (reply, _, _) = timed_turn(llm, messages.to_vec(), 16).await;
    (reply, llm.stats().reused_prompt_tokens - before)
}

fn assistant(content: &str) -> LlmMessage {
    LlmMessage::Assistant {
        content: content.to_string(),
        tool_calls: Vec::new(),
    }
}

/// Asserts that a reply from a warm cache is the cold one up to near ties:
/// llama.cpp's logits are not bit-identical when a prompt is decoded in
/// different batch splits, so where two words score almost alike the
/// choice may flip a few tokens in ("Cigna" or "CIGNA"). A corrupted cache
/// goes wrong from the first word, so: the same first word and most words
/// in common.
fn assert_agree(warm: &str, cold: &str) {
    let words =
        |text: &str| -> Vec<String> { text.split_whitespace().map(|w| w.to_lowercase()).collect() };
    let (warm_words, cold_words) = (words(warm), words(cold));
    let shared = warm_words.iter().filter(|w| cold_words.contains(w)).count();
    assert!(
        !warm_words.is_empty()
            && warm_words.first() == cold_words.first()
            && shared * 2 >= warm_words.len(),
        "warm {warm:?} and cold {cold:?} differ too much"
    );
}

#[tokio::test]
async fn offline_llm_prefix_cache_keeps_answers_and_slots_intact() {
    let (Some(llm), Some(twin)) = (own_model(), own_model()) else {
        return;
    };
    let system = LlmMessage::System(long_system_prompt());
    let turn1 = vec![system.clone(), LlmMessage::User(CALLER_TURNS[0].into())];

    // Cold, then the very same prompt twice: all but its last token reused,
    // and the two warm answers (same split) are identical.
    let (cold1, reused) = greedy(&llm, &turn1).await;
    assert_eq!(reused, 0);
    let (warm1, reused) = greedy(&llm, &turn1).await;
    assert!(reused > 300, "the prompt was reused: {reused}");
    let (warm1_again, _) = greedy(&llm, &turn1).await;
    assert_eq!(
        warm1_again, warm1,
        "the same prompt, the same greedy answer"
    );
    assert_agree(&warm1, &cold1);

    // The next turn of the same call reuses the whole previous turn.
    let mut turn2 = turn1.clone();
    turn2.push(assistant(&warm1));
    turn2.push(LlmMessage::User(CALLER_TURNS[1].into()));
    let (warm2, reused) = greedy(&llm, &turn2).await;
    assert!(reused > 300, "{reused}");
    assert_agree(&warm2, &greedy(&cold_model(), &turn2).await.0);

    // Another call with the same system prompt takes the other slot,
    // copying the shared system prompt from the first call's slot.
    let other = vec![system.clone(), LlmMessage::User(CALLER_TURNS[3].into())];
    let (warm_other, reused) = greedy(&llm, &other).await;
    assert!(reused > 250, "the system prompt was reused: {reused}");
    assert_agree(&warm_other, &greedy(&cold_model(), &other).await.0);

    // The first call's slot was not disturbed by the other call: its third
    // turn answers exactly as on a twin that never saw the other call.
    let mut turn3 = turn2.clone();
    turn3.push(assistant(&warm2));
    turn3.push(LlmMessage::User(CALLER_TURNS[2].into()));
    let (warm3, reused) = greedy(&llm, &turn3).await;
    assert!(reused > 350, "{reused}");
    for messages in [&turn1, &turn1, &turn1, &turn2] {
        greedy(&twin, messages).await;
    }
    let (twin3, twin_reused) = greedy(&twin, &turn3).await;
    assert_eq!(warm3, twin3, "turn 3 of the first call");
    assert_eq!(reused, twin_reused);

    let stats = llm.stats();
    assert_eq!((stats.completed, stats.failed), (6, 0), "{stats:?}");
}

#[tokio::test]
async fn offline_llm_prefill_warms_the_cache() {
    let Some(llm) = own_model() else { return };
    let system = LlmMessage::System(long_system_prompt());
    llm.prefill(vec![system.clone()])
        .await
        .expect("the system prompt is prefilled");
    let prefilled = llm.stats().prompt_tokens;
    assert!(prefilled > 250, "{:?}", llm.stats());
    assert_eq!(llm.stats().generated_tokens, 0);

    let call = vec![system, LlmMessage::User(CALLER_TURNS[0].into())];
    let (warm, reused) = greedy(&llm, &call).await;
    assert_eq!(reused, prefilled, "the whole prefill was reused");
    assert_agree(&warm, &greedy(&cold_model(), &call).await.0);
}
