//! The OpenAI-compatible chat client against the fake server over real
//! loopback HTTP: streamed text and tool calls, the lenient variants of
//! "compatible" servers, OpenAI's error statuses, cut and stalled streams,
//! and cancellation by dropping the stream. The API key must never show
//! in an error.

use std::time::Duration;

use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use switchboard::providers::openai::{OpenAiConfig, OpenAiLlm};
use switchboard::providers::prompt::standard_tools;
use switchboard::providers::roles::{
    LanguageModel, LlmEvent, LlmMessage, LlmRequest, LlmStream, ProviderError, TokenUsage, ToolCall,
};

use crate::fake_openai::{
    chunk, mask, sse_body, text_chunks, tool_call_chunks, usage_chunk, End, FakeOpenAi, Reply,
};

const KEY: &str = "sk-test-4f8a2c9d1e7b3a6f0c5d8e2b";

fn client(fake: &FakeOpenAi, key: Option<&str>) -> OpenAiLlm {
    OpenAiLlm::new(OpenAiConfig {
        api_key: key.map(|k| SecretString::from(k.to_owned())),
        ..OpenAiConfig::with_base_url(fake.base_url.clone())
    })
    .expect("client")
}

fn request() -> LlmRequest {
    LlmRequest {
        model: "gpt-4o-mini".to_owned(),
        messages: vec![
            LlmMessage::System("You are Ava.".to_owned()),
            LlmMessage::User("Hi, are you open today?".to_owned()),
        ],
        tools: standard_tools(),
        temperature: Some(0.25),
        max_tokens: Some(150),
    }
}

/// Every item of a stream: the events, then the error that ended it, if
/// any (nothing may follow an error).
async fn drain(mut stream: LlmStream) -> (Vec<LlmEvent>, Option<ProviderError>) {
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => {
                assert!(stream.next().await.is_none(), "items after an error");
                return (events, Some(error));
            }
        }
    }
    (events, None)
}

fn text_of(events: &[LlmEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            LlmEvent::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn assert_no_key(error: &ProviderError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(KEY), "the key leaked: {shown}");
    assert!(
        !shown.contains(&KEY[8..]),
        "part of the key leaked: {shown}"
    );
}

async fn start_error(llm: &OpenAiLlm) -> ProviderError {
    match llm.stream(request()).await {
        Ok(_) => panic!("the request should have been refused"),
        Err(error) => {
            assert_no_key(&error);
            error
        }
    }
}

#[tokio::test]
async fn text_is_streamed_with_usage_and_done_and_the_request_is_openai_shaped() {
    let pieces = ["Yes", ", we're", " open", " until five", " today. ☎"];
    let body = sse_body(&text_chunks(&pieces, 31, 9));
    let fake = FakeOpenAi::start(Some(KEY), vec![Reply::sse(&body, 7)]).await;
    let llm = client(&fake, Some(KEY));
    assert_eq!(llm.name(), "openai");

    let stream = llm.stream(request()).await.expect("accepted");
    let (events, error) = drain(stream).await;
    assert_eq!(error, None);
    assert_eq!(text_of(&events), pieces.concat());
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, LlmEvent::Text(_)))
            .count(),
        pieces.len(),
        "text deltas arrive as sent"
    );
    assert_eq!(
        events[events.len() - 2..],
        [
            LlmEvent::Usage(TokenUsage {
                prompt: 31,
                completion: 9
            }),
            LlmEvent::Done {
                finish_reason: "stop".into()
            }
        ]
    );

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.headers["authorization"].to_str().expect("ascii"),
        format!("Bearer {KEY}")
    );
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
    assert_eq!(sent.body["temperature"], json!(0.25));
    assert_eq!(sent.body["max_tokens"], 150);
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "You are Ava."},
            {"role": "user", "content": "Hi, are you open today?"}
        ])
    );
    let tools = sent.body["tools"].as_array().expect("tools");
    let names: Vec<&str> = tools
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "function");
            t["function"]["name"].as_str().expect("name")
        })
        .collect();
    assert_eq!(names, ["transfer_to_human", "end_call", "take_message"]);
    assert_eq!(
        tools[2]["function"]["parameters"]["required"],
        json!(["caller_name", "callback_number", "message"])
    );
}

#[tokio::test]
async fn crlf_comments_and_one_byte_reads_decode_the_same() {
    let pieces = ["Grüße", " aus", " Zürich ", "☎️"];
    let body = sse_body(&text_chunks(&pieces, 5, 4));
    let crlf = format!(": ping\r\n\r\n{}", body.replace('\n', "\r\n")).replacen(
        "\r\n\r\ndata:",
        "\r\n\r\n: OPENROUTER PROCESSING\r\n\r\ndata:",
        2,
    );
    for piece in [1, 2, 3] {
        let fake = FakeOpenAi::start(None, vec![Reply::sse(&crlf, piece)]).await;
        let stream = client(&fake, None)
            .stream(request())
            .await
            .expect("accepted");
        let (events, error) = drain(stream).await;
        assert_eq!(error, None, "piece {piece}");
        assert_eq!(text_of(&events), pieces.concat(), "piece {piece}");
        assert_eq!(
            events.last(),
            Some(&LlmEvent::Done {
                finish_reason: "stop".into()
            })
        );
        // No key configured: no Authorization header at all.
        assert!(fake.requests()[0].headers.get("authorization").is_none());
    }
}

#[tokio::test]
async fn a_tool_call_round_trip() {
    let arguments = r#"{"caller_name":"Dana Smith","callback_number":"+15551234567","message":"Call me about my claim"}"#;
    let cuts = [0, 9, 31, 60, 80, arguments.len()];
    let fragments: Vec<&str> = cuts.windows(2).map(|w| &arguments[w[0]..w[1]]).collect();
    assert_eq!(fragments.concat(), arguments);
    let first = sse_body(&tool_call_chunks("call_Xy12", "take_message", &fragments));
    let second = sse_body(&text_chunks(
        &["Done. ", "Someone will call you back."],
        80,
        8,
    ));
    let fake = FakeOpenAi::start(
        Some(KEY),
        vec![Reply::sse(&first, 11), Reply::sse(&second, 11)],
    )
    .await;
    let llm = client(&fake, Some(KEY));

    let (events, error) = drain(llm.stream(request()).await.expect("accepted")).await;
    assert_eq!(error, None);
    let call = ToolCall {
        id: "call_Xy12".into(),
        name: "take_message".into(),
        arguments: arguments.into(),
    };
    assert_eq!(
        events,
        [
            LlmEvent::ToolCall(call.clone()),
            LlmEvent::Usage(TokenUsage {
                prompt: 50,
                completion: 12
            }),
            LlmEvent::Done {
                finish_reason: "tool_calls".into()
            }
        ]
    );
    let parsed: Value = serde_json::from_str(&call.arguments).expect("arguments are JSON");
    assert_eq!(parsed["caller_name"], "Dana Smith");

    let mut follow_up = request();
    follow_up.messages.push(LlmMessage::Assistant {
        content: String::new(),
        tool_calls: vec![call],
    });
    follow_up.messages.push(LlmMessage::Tool {
        id: "call_Xy12".into(),
        content: "message saved".into(),
    });
    let (events, error) = drain(llm.stream(follow_up).await.expect("accepted")).await;
    assert_eq!(error, None);
    assert_eq!(text_of(&events), "Done. Someone will call you back.");

    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].body["messages"].as_array().expect("messages")[2..],
        [
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_Xy12", "type": "function",
                "function": {"name": "take_message", "arguments": arguments}}]}),
            json!({"role": "tool", "tool_call_id": "call_Xy12", "content": "message saved"}),
        ]
    );
}

#[tokio::test]
async fn lenient_compatible_server_variants() {
    // finish_reason "" everywhere, no `object`, `usage: {}`, unknown fields,
    // `data:` without a space.
    let mut body = String::new();
    for (content, finish) in [
        ("Hello", json!(null)),
        (" there", json!("")),
        ("", json!("")),
    ] {
        let chunk = json!({"id": "x", "model": "llama", "choices": [{"index": 0,
            "delta": {"content": content}, "finish_reason": finish}], "usage": {},
            "timings": {"predicted_ms": 3.5}});
        body.push_str(&format!("data:{chunk}\n\n"));
    }
    body.push_str("data: {\"choices\":[],\"usage\":{}}\n\ndata: [DONE]\n\n");
    // A llama.cpp-style stream whose finish chunk says "stop" but whose
    // usage chunk has no counts.
    let second = sse_body(&[
        chunk(json!({"content": "Hi"}), json!("stop")),
        json!({"choices": [], "usage": {}}),
    ]);
    let fake = FakeOpenAi::start(None, vec![Reply::sse(&body, 4), Reply::sse(&second, 4)]).await;
    let llm = client(&fake, None);

    let (events, error) = drain(llm.stream(request()).await.expect("accepted")).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        [
            LlmEvent::Text("Hello".into()),
            LlmEvent::Text(" there".into()),
            LlmEvent::Done {
                finish_reason: String::new()
            }
        ],
        "empty usage is not reported; an empty finish reason passes through"
    );

    let (events, error) = drain(llm.stream(request()).await.expect("accepted")).await;
    assert_eq!(error, None);
    assert_eq!(
        events,
        [
            LlmEvent::Text("Hi".into()),
            LlmEvent::Done {
                finish_reason: "stop".into()
            }
        ]
    );
}

#[tokio::test]
async fn refused_requests_map_to_provider_errors() {
    let fake = FakeOpenAi::start(
        Some(KEY),
        vec![Reply::rate_limited(20), Reply::server_error()],
    )
    .await;

    // A wrong key: OpenAI's own 401, which quotes the key masked.
    let wrong = "sk-test-wrongwrongwrongwrong1234";
    let error = start_error(&client(&fake, Some(wrong))).await;
    match &error {
        ProviderError::Unauthorized { provider, message } => {
            assert_eq!(*provider, "openai");
            assert!(
                message.starts_with("Incorrect API key provided: "),
                "{message}"
            );
            assert!(message.contains(&mask(wrong)));
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(!format!("{error} {error:?}").contains(wrong));
    assert!(!error.is_retryable());

    // No key at all.
    let error = start_error(&client(&fake, None)).await;
    assert!(
        matches!(&error, ProviderError::Unauthorized { message, .. } if message.starts_with("You didn't provide an API key")),
        "{error:?}"
    );

    let llm = client(&fake, Some(KEY));
    let error = start_error(&llm).await;
    assert_eq!(
        error,
        ProviderError::RateLimited {
            provider: "openai",
            retry_after: Some(Duration::from_secs(20)),
        }
    );
    assert!(error.is_retryable());

    let error = start_error(&llm).await;
    assert_eq!(
        error,
        ProviderError::Server {
            provider: "openai",
            status: 500,
            message: "The server had an error while processing your request. Sorry about that!"
                .into(),
        }
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn other_client_errors_are_rejections_with_the_vendor_message() {
    let body = json!({"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": null, "code": "model_not_found"}});
    let fake = FakeOpenAi::start(
        None,
        vec![Reply::Error {
            status: 404,
            retry_after: None,
            body: body.to_string(),
        }],
    )
    .await;
    let error = start_error(&client(&fake, None)).await;
    assert_eq!(
        error,
        ProviderError::Rejected {
            provider: "openai",
            status: 404,
            message: "The model `gpt-9` does not exist or you do not have access to it.".into(),
        }
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_server_echoing_the_key_is_scrubbed() {
    let body = json!({"error": {"message": format!("key {KEY} is not valid for this project")}});
    let fake = FakeOpenAi::start(
        None,
        vec![Reply::Error {
            status: 403,
            retry_after: None,
            body: body.to_string(),
        }],
    )
    .await;
    let llm = client(&fake, Some(KEY));
    assert!(!format!("{llm:?}").contains(KEY), "Debug of the client");
    let error = start_error(&llm).await;
    assert!(
        matches!(&error, ProviderError::Unauthorized { message, .. } if message == "key [redacted] is not valid for this project"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_connection_cut_mid_stream_ends_with_a_network_error_after_the_text() {
    let mut chunks = text_chunks(&["Let me", " check", " that"], 1, 1);
    chunks.truncate(3); // role + two text pieces, no finish
    let body = sse_body(&chunks).replace("data: [DONE]\n\n", "");
    let fake = FakeOpenAi::start(
        Some(KEY),
        vec![Reply::sse(&body, 16).ending(End::Disconnect)],
    )
    .await;
    let (events, error) = drain(
        client(&fake, Some(KEY))
            .stream(request())
            .await
            .expect("accepted"),
    )
    .await;
    assert_eq!(text_of(&events), "Let me check");
    assert!(!events.iter().any(|e| matches!(e, LlmEvent::Done { .. })));
    let error = error.expect("the stream ends with an error");
    assert!(matches!(error, ProviderError::Network { .. }), "{error:?}");
    assert_no_key(&error);
}

#[tokio::test]
async fn a_body_that_ends_before_the_finish_is_a_network_error() {
    let body =
        sse_body(&[chunk(json!({"content": "Half"}), json!(null))]).replace("data: [DONE]\n\n", "");
    let fake = FakeOpenAi::start(None, vec![Reply::sse(&body, 8)]).await;
    let (events, error) = drain(client(&fake, None).stream(request()).await.expect("ok")).await;
    assert_eq!(text_of(&events), "Half");
    assert!(
        matches!(error, Some(ProviderError::Network { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_malformed_frame_is_a_protocol_error() {
    let good =
        sse_body(&[chunk(json!({"content": "Sure"}), json!(null))]).replace("data: [DONE]\n\n", "");
    let body = format!(
        "{good}data: {{\"choices\":[{{\"delta\":{{\"content\":\n\n{}",
        sse_body(&[chunk(json!({"content": "never seen"}), json!("stop"))])
    );
    let fake = FakeOpenAi::start(Some(KEY), vec![Reply::sse(&body, 9)]).await;
    let (events, error) = drain(
        client(&fake, Some(KEY))
            .stream(request())
            .await
            .expect("accepted"),
    )
    .await;
    assert_eq!(events, [LlmEvent::Text("Sure".into())]);
    let error = error.expect("protocol error");
    assert!(matches!(error, ProviderError::Protocol { .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert_no_key(&error);
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    let mut chunks = text_chunks(&["One moment"], 1, 1);
    chunks.truncate(2);
    let body = sse_body(&chunks).replace("data: [DONE]\n\n", "");
    let fake = FakeOpenAi::start(None, vec![Reply::sse(&body, 1000).ending(End::Hang)]).await;
    let mut stream = client(&fake, None)
        .stream(request())
        .await
        .expect("accepted");
    let first = stream.next().await.expect("an item").expect("text");
    assert_eq!(first, LlmEvent::Text("One moment".into()));
    drop(stream);
    fake.wait_for_abandoned(1).await;
}

#[tokio::test]
async fn latency_before_the_first_byte_is_waited_for() {
    let body = sse_body(&text_chunks(&["Slow", " but sure"], 1, 1));
    let fake = FakeOpenAi::start(
        None,
        vec![Reply::sse(&body, 5)
            .after(Duration::from_millis(150))
            .paced(Duration::from_millis(2))],
    )
    .await;
    let (events, error) = drain(client(&fake, None).stream(request()).await.expect("ok")).await;
    assert_eq!(error, None);
    assert_eq!(text_of(&events), "Slow but sure");
}

#[tokio::test]
async fn a_mute_server_times_out() {
    let body = sse_body(&text_chunks(&["Hmm"], 1, 1));
    let mut chunks = text_chunks(&["Thinking"], 1, 1);
    chunks.truncate(2);
    let stalled = sse_body(&chunks).replace("data: [DONE]\n\n", "");
    let fake = FakeOpenAi::start(
        None,
        vec![
            Reply::sse(&body, 5).after(Duration::from_secs(30)),
            Reply::sse(&stalled, 100).ending(End::Stall),
        ],
    )
    .await;
    let llm = OpenAiLlm::new(OpenAiConfig {
        idle_timeout: Duration::from_millis(200),
        ..OpenAiConfig::with_base_url(fake.base_url.clone())
    })
    .expect("client");

    let error = start_error(&llm).await;
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");

    let (events, error) = drain(llm.stream(request()).await.expect("accepted")).await;
    assert_eq!(text_of(&events), "Thinking");
    assert!(
        matches!(error, Some(ProviderError::Timeout { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let llm = OpenAiLlm::new(OpenAiConfig {
        api_key: Some(SecretString::from(KEY.to_owned())),
        ..OpenAiConfig::with_base_url(
            url::Url::parse(&format!("http://{address}/v1")).expect("url"),
        )
    })
    .expect("client");
    let error = start_error(&llm).await;
    assert!(matches!(error, ProviderError::Network { .. }), "{error:?}");
}

#[tokio::test]
async fn a_json_answer_to_a_streaming_request_is_a_protocol_error() {
    // A server that ignores `stream: true` and answers with one JSON body.
    let fake = FakeOpenAi::start(
        None,
        vec![Reply::Error {
            status: 200,
            retry_after: None,
            body: json!({"object": "chat.completion", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
                "usage": usage_chunk(1, 1)["usage"]})
            .to_string(),
        }],
    )
    .await;
    let error = start_error(&client(&fake, None)).await;
    assert!(
        matches!(&error, ProviderError::Protocol { message, .. } if message.contains("stream: true")),
        "{error:?}"
    );
}
