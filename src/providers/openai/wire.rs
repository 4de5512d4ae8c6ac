//! The chat-completions wire format: the request body we send, the lenient
//! shape of the streamed chunks, and the sans-IO [`CompletionAssembler`]
//! that turns chunk payloads into [`LlmEvent`]s.
//!
//! Every response field is optional and unknown fields are ignored, so the
//! deviations of "compatible" servers (`finish_reason: ""`, no `object`,
//! `usage: {}`, `tool_calls: null`, a missing tool-call `index`) decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::providers::roles::{
    LlmEvent, LlmMessage, LlmRequest, ProviderError, TokenUsage, ToolCall, ToolSpec,
};

/// The client's name in errors, logs and metrics.
pub const PROVIDER: &str = "openai";

// ------------------------------------------------------------ request

/// `POST /chat/completions` body.
#[derive(Debug, Serialize)]
pub struct ChatRequest<'a> {
    /// Model name.
    model: &'a str,
    /// The conversation.
    messages: Vec<WireMessage<'a>>,
    /// Always `true`: we stream.
    stream: bool,
    /// Asks for the final usage chunk.
    stream_options: StreamOptions,
    /// Functions offered; omitted when none (some servers reject `[]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    /// Sampling temperature, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    /// Completion token limit, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

/// `stream_options`.
#[derive(Debug, Serialize)]
struct StreamOptions {
    /// One last chunk with `choices: []` and `usage`.
    include_usage: bool,
}

/// One message, tagged by `role`.
#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum WireMessage<'a> {
    /// Instructions.
    System {
        /// The text.
        content: &'a str,
    },
    /// The caller.
    User {
        /// The text.
        content: &'a str,
    },
    /// The agent; `content` is `null` when it only called tools.
    Assistant {
        /// The text.
        content: Option<&'a str>,
        /// Tool calls made; omitted when none.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<WireToolCall<'a>>,
    },
    /// A tool result.
    Tool {
        /// The call it answers.
        tool_call_id: &'a str,
        /// The result.
        content: &'a str,
    },
}

/// A tool call echoed back in an assistant message.
#[derive(Debug, Serialize)]
struct WireToolCall<'a> {
    /// The call id.
    id: &'a str,
    /// Always `function`.
    r#type: &'static str,
    /// Name and arguments.
    function: WireFunctionCall<'a>,
}

/// The function part of a tool call.
#[derive(Debug, Serialize)]
struct WireFunctionCall<'a> {
    /// Function name.
    name: &'a str,
    /// JSON arguments as the model wrote them.
    arguments: &'a str,
}

/// A tool offered to the model.
#[derive(Debug, Serialize)]
struct WireTool<'a> {
    /// Always `function`.
    r#type: &'static str,
    /// The function.
    function: WireFunction<'a>,
}

/// A function offered to the model.
#[derive(Debug, Serialize)]
struct WireFunction<'a> {
    /// Function name.
    name: &'a str,
    /// What it does.
    description: &'a str,
    /// JSON Schema of its arguments.
    parameters: &'a serde_json::Value,
}

impl<'a> ChatRequest<'a> {
    /// The streaming request body for `request`.
    pub fn new(request: &'a LlmRequest) -> Self {
        Self {
            model: &request.model,
            messages: request.messages.iter().map(wire_message).collect(),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            tools: request.tools.iter().map(wire_tool).collect(),
            temperature: request.temperature,
            max_tokens: request.max_tokens,
        }
    }
}

/// One of our messages in wire form.
fn wire_message(message: &LlmMessage) -> WireMessage<'_> {
    match message {
        LlmMessage::System(content) => WireMessage::System { content },
        LlmMessage::User(content) => WireMessage::User { content },
        LlmMessage::Assistant {
            content,
            tool_calls,
        } => WireMessage::Assistant {
            content: (!content.is_empty() || tool_calls.is_empty()).then_some(content.as_str()),
            tool_calls: tool_calls
                .iter()
                .map(|call| WireToolCall {
                    id: &call.id,
                    r#type: "function",
                    function: WireFunctionCall {
                        name: &call.name,
                        arguments: &call.arguments,
                    },
                })
                .collect(),
        },
        LlmMessage::Tool { id, content } => WireMessage::Tool {
            tool_call_id: id,
            content,
        },
    }
}

/// One of our tool specs in wire form.
fn wire_tool(spec: &ToolSpec) -> WireTool<'_> {
    WireTool {
        r#type: "function",
        function: WireFunction {
            name: &spec.name,
            description: &spec.description,
            parameters: &spec.parameters,
        },
    }
}

// ------------------------------------------------------------ response

/// One streamed chunk (`chat.completion.chunk`), leniently.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk {
    /// Choices; `[]` in the usage chunk, or missing.
    #[serde(deserialize_with = "null_as_default")]
    choices: Vec<Choice>,
    /// Token counts, when reported (may be `{}` or `null`).
    usage: Option<Usage>,
    /// An error some servers send mid-stream instead of a chunk.
    error: Option<serde_json::Value>,
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    /// Which choice (we ask for one: 0; missing means 0).
    index: Option<u32>,
    /// What it adds.
    delta: Option<Delta>,
    /// Why it finished; `null` or `""` while it has not.
    finish_reason: Option<String>,
}

/// New content of a choice.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Delta {
    /// More text.
    content: Option<String>,
    /// Tool-call pieces.
    #[serde(deserialize_with = "null_as_default")]
    tool_calls: Vec<ToolCallDelta>,
}

/// A piece of a tool call.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCallDelta {
    /// Which call this piece belongs to.
    index: Option<u32>,
    /// The call id (first piece).
    id: Option<String>,
    /// Name (first piece) and an arguments fragment.
    function: Option<FunctionDelta>,
}

/// The function part of a tool-call piece.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FunctionDelta {
    /// Function name (first piece).
    name: Option<String>,
    /// A fragment of the JSON arguments.
    arguments: Option<String>,
}

/// Token counts.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Usage {
    /// Prompt tokens.
    prompt_tokens: Option<u32>,
    /// Completion tokens.
    completion_tokens: Option<u32>,
}

/// `null` decodes as the type's default (e.g. `"tool_calls": null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A tool call being assembled from its pieces.
#[derive(Debug, Default)]
struct PendingCall {
    /// Call id, once seen.
    id: Option<String>,
    /// Function name, concatenated (servers send it whole, in one piece).
    name: String,
    /// Arguments fragments, concatenated.
    arguments: String,
}

/// Whether the completion is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More chunks expected.
    Streaming,
    /// `[DONE]` seen (or a fatal error reported): stop reading.
    Finished,
}

/// Turns chunk payloads into events: text as it arrives, tool calls when
/// the choice finishes, usage and `Done` at `[DONE]`.
#[derive(Debug, Default)]
pub struct CompletionAssembler {
    /// Tool calls under construction, by `index`.
    calls: BTreeMap<u32, PendingCall>,
    /// The finish reason, once a non-empty one was seen.
    finish_reason: Option<String>,
    /// The latest usage reported.
    usage: Option<TokenUsage>,
    /// `[DONE]` or an error ended the stream.
    finished: bool,
}

impl CompletionAssembler {
    /// An assembler before the first chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one event payload, pushing what it yields onto `out`.
    pub fn feed(
        &mut self,
        payload: &str,
        out: &mut Vec<Result<LlmEvent, ProviderError>>,
    ) -> Progress {
        if self.finished {
            return Progress::Finished;
        }
        let payload = payload.trim();
        if payload == "[DONE]" {
            self.complete(out);
            return Progress::Finished;
        }
        if payload.is_empty() {
            return Progress::Streaming;
        }
        let chunks = match parse_chunks(payload) {
            Ok(chunks) => chunks,
            Err(error) => return self.fail(out, error),
        };
        for chunk in chunks {
            if let Progress::Finished = self.chunk(chunk, out) {
                return Progress::Finished;
            }
        }
        Progress::Streaming
    }

    /// The body ended without `[DONE]`. A completion whose finish reason
    /// was seen is complete (some servers omit `[DONE]`); anything else
    /// was cut off.
    pub fn end_of_body(&mut self, out: &mut Vec<Result<LlmEvent, ProviderError>>) {
        if self.finished {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.fail(
                out,
                ProviderError::Network {
                    provider: PROVIDER,
                    message: "the stream ended before the completion finished ([DONE] missing)"
                        .to_owned(),
                },
            );
        }
    }

    /// Reports `error` as the last item.
    pub fn fail(
        &mut self,
        out: &mut Vec<Result<LlmEvent, ProviderError>>,
        error: ProviderError,
    ) -> Progress {
        self.finished = true;
        out.push(Err(error));
        Progress::Finished
    }

    /// One decoded chunk.
    fn chunk(&mut self, chunk: Chunk, out: &mut Vec<Result<LlmEvent, ProviderError>>) -> Progress {
        if let Some(error) = chunk.error {
            return self.fail(
                out,
                ProviderError::Network {
                    provider: PROVIDER,
                    message: format!(
                        "the server reported an error mid-stream: {}",
                        error_text(&error)
                    ),
                },
            );
        }
        if let Some(usage) = chunk.usage {
            if usage.prompt_tokens.is_some() || usage.completion_tokens.is_some() {
                self.usage = Some(TokenUsage {
                    prompt: usage.prompt_tokens.unwrap_or(0),
                    completion: usage.completion_tokens.unwrap_or(0),
                });
            }
        }
        for choice in chunk
            .choices
            .into_iter()
            .filter(|c| c.index.unwrap_or(0) == 0)
        {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(Ok(LlmEvent::Text(text)));
                }
                for (position, piece) in delta.tool_calls.into_iter().enumerate() {
                    let index = piece
                        .index
                        .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX));
                    let call = self.calls.entry(index).or_default();
                    if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
                        call.id = Some(id);
                    }
                    if let Some(function) = piece.function {
                        if let Some(name) = function.name {
                            call.name.push_str(&name);
                        }
                        if let Some(arguments) = function.arguments {
                            call.arguments.push_str(&arguments);
                        }
                    }
                }
            }
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
                if let Progress::Finished = self.flush_calls(out) {
                    return Progress::Finished;
                }
            }
        }
        Progress::Streaming
    }

    /// Emits the assembled tool calls.
    fn flush_calls(&mut self, out: &mut Vec<Result<LlmEvent, ProviderError>>) -> Progress {
        for (index, call) in std::mem::take(&mut self.calls) {
            if call.name.is_empty() {
                return self.fail(
                    out,
                    ProviderError::Protocol {
                        provider: PROVIDER,
                        message: format!("tool call {index} has no function name"),
                    },
                );
            }
            out.push(Ok(LlmEvent::ToolCall(ToolCall {
                // A call must be answerable: servers that omit the id get
                // one made up from the index.
                id: call.id.unwrap_or_else(|| format!("call_{index}")),
                name: call.name,
                arguments: call.arguments,
            })));
        }
        Progress::Streaming
    }

    /// `[DONE]`: pending tool calls, usage, then `Done`.
    fn complete(&mut self, out: &mut Vec<Result<LlmEvent, ProviderError>>) {
        if let Progress::Finished = self.flush_calls(out) {
            return;
        }
        self.finished = true;
        if let Some(usage) = self.usage.take() {
            out.push(Ok(LlmEvent::Usage(usage)));
        }
        out.push(Ok(LlmEvent::Done {
            finish_reason: self.finish_reason.take().unwrap_or_default(),
        }));
    }
}

/// Decodes an event payload: one chunk, or (from servers that put several
/// `data:` lines in one event) one chunk per line.
fn parse_chunks(payload: &str) -> Result<Vec<Chunk>, ProviderError> {
    match serde_json::from_str::<Chunk>(payload) {
        Ok(chunk) => Ok(vec![chunk]),
        Err(error) => {
            if payload.contains('\n') {
                let lines: Result<Vec<Chunk>, _> = payload
                    .lines()
                    .filter(|line| !line.trim().is_empty())
                    .map(serde_json::from_str::<Chunk>)
                    .collect();
                if let Ok(chunks) = lines {
                    return Ok(chunks);
                }
            }
            Err(ProviderError::Protocol {
                provider: PROVIDER,
                message: format!(
                    "undecodable stream chunk ({error}): {}",
                    truncate(payload, 120)
                ),
            })
        }
    }
}

/// The human part of a vendor error body: `{"error":{"message":…}}` as
/// OpenAI sends it, or the shapes other servers use (`{"error":"…"}`,
/// `{"message":…}`, `{"detail":…}`).
pub fn error_text(body: &serde_json::Value) -> String {
    let candidates = [
        body.pointer("/error/message"),
        body.get("error"),
        body.get("message"),
        body.get("detail"),
    ];
    for candidate in candidates.into_iter().flatten() {
        if let Some(text) = candidate.as_str() {
            return text.to_owned();
        }
    }
    truncate(&body.to_string(), 200)
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(payloads: &[&str]) -> Vec<Result<LlmEvent, ProviderError>> {
        let mut assembler = CompletionAssembler::new();
        let mut out = Vec::new();
        for payload in payloads {
            if assembler.feed(payload, &mut out) == Progress::Finished {
                return out;
            }
        }
        assembler.end_of_body(&mut out);
        out
    }

    #[test]
    fn request_body_has_the_openai_shape() {
        let request = LlmRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                LlmMessage::System("be brief".into()),
                LlmMessage::User("hi".into()),
                LlmMessage::Assistant {
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "end_call".into(),
                        arguments: "{\"reason\":\"done\"}".into(),
                    }],
                },
                LlmMessage::Tool {
                    id: "call_1".into(),
                    content: "ok".into(),
                },
                LlmMessage::Assistant {
                    content: "bye".into(),
                    tool_calls: vec![],
                },
            ],
            tools: vec![ToolSpec {
                name: "end_call".into(),
                description: "Ends the call".into(),
                parameters: json!({"type": "object"}),
            }],
            temperature: Some(0.5),
            max_tokens: None,
        };
        let body = serde_json::to_value(ChatRequest::new(&request)).expect("serializes");
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "end_call", "arguments": "{\"reason\":\"done\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
                    {"role": "assistant", "content": "bye"}
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
                "tools": [{"type": "function", "function": {
                    "name": "end_call", "description": "Ends the call",
                    "parameters": {"type": "object"}}}],
                "temperature": 0.5
            })
        );
    }

    #[test]
    fn text_usage_and_done() {
        let out = run(&[
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            out,
            vec![
                Ok(LlmEvent::Text("Hel".into())),
                Ok(LlmEvent::Text("lo".into())),
                Ok(LlmEvent::Usage(TokenUsage {
                    prompt: 9,
                    completion: 2
                })),
                Ok(LlmEvent::Done {
                    finish_reason: "stop".into()
                }),
            ]
        );
    }

    #[test]
    fn tool_calls_are_assembled_by_index() {
        let out = run(&[
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"take_message","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"end_call","arguments":"{\"rea"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"message\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"hi\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"son\":\"x\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        assert_eq!(
            out,
            vec![
                Ok(LlmEvent::ToolCall(ToolCall {
                    id: "call_a".into(),
                    name: "take_message".into(),
                    arguments: "{\"message\":\"hi\"}".into(),
                })),
                Ok(LlmEvent::ToolCall(ToolCall {
                    id: "call_b".into(),
                    name: "end_call".into(),
                    arguments: "{\"reason\":\"x\"}".into(),
                })),
                Ok(LlmEvent::Done {
                    finish_reason: "tool_calls".into()
                }),
            ]
        );
    }

    #[test]
    fn lenient_servers() {
        // finish_reason "" throughout, no object, usage {}, tool_calls null,
        // a tool call without index or id, unknown fields.
        let out = run(&[
            r#"{"choices":[{"delta":{"content":"Hi","tool_calls":null},"finish_reason":"","logprobs":null}],"usage":{},"x_vendor":1}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"name":"end_call","arguments":"{}"}}]},"finish_reason":""}],"usage":null}"#,
            r#"{"choices":null}"#,
            "[DONE]",
        ]);
        assert_eq!(
            out,
            vec![
                Ok(LlmEvent::Text("Hi".into())),
                Ok(LlmEvent::ToolCall(ToolCall {
                    id: "call_0".into(),
                    name: "end_call".into(),
                    arguments: "{}".into(),
                })),
                Ok(LlmEvent::Done {
                    finish_reason: String::new()
                }),
            ]
        );
    }

    #[test]
    fn finished_completion_without_done_marker_is_complete() {
        let out = run(&[r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"length"}]}"#]);
        assert_eq!(
            out.last(),
            Some(&Ok(LlmEvent::Done {
                finish_reason: "length".into()
            }))
        );
    }

    #[test]
    fn unfinished_body_is_a_network_error() {
        let out = run(&[r#"{"choices":[{"delta":{"content":"a"}}]}"#]);
        assert_eq!(out[0], Ok(LlmEvent::Text("a".into())));
        assert!(matches!(out[1], Err(ProviderError::Network { .. })));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn malformed_chunk_is_a_protocol_error_and_ends_the_stream() {
        let out = run(&[
            r#"{"choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":"#,
            r#"{"choices":[{"delta":{"content":"never"}}]}"#,
        ]);
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], Err(ProviderError::Protocol { .. })));
    }

    #[test]
    fn several_json_lines_in_one_event() {
        let out = run(&[
            "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n{\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":\"stop\"}]}",
            "[DONE]",
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1], Ok(LlmEvent::Text("b".into())));
    }

    #[test]
    fn error_mid_stream() {
        let out = run(&[r#"{"error":{"message":"overloaded","type":"server_error"}}"#]);
        assert!(
            matches!(&out[0], Err(ProviderError::Network { message, .. }) if message.contains("overloaded"))
        );
    }

    #[test]
    fn tool_call_without_name_is_a_protocol_error() {
        let out = run(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"x","function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#,
            "[DONE]",
        ]);
        assert!(matches!(out[0], Err(ProviderError::Protocol { .. })));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn error_text_shapes() {
        assert_eq!(
            error_text(&json!({"error": {"message": "bad key", "type": "invalid_request_error"}})),
            "bad key"
        );
        assert_eq!(error_text(&json!({"error": "nope"})), "nope");
        assert_eq!(error_text(&json!({"detail": "missing"})), "missing");
        assert_eq!(error_text(&json!({"x": 1})), "{\"x\":1}");
        assert_eq!(truncate("héllo", 2), "hé…");
    }
}
