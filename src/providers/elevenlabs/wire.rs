//! The multi-context websocket's JSON messages: what we send and how the
//! server's answers are read. Both spellings the vendor uses are accepted
//! (`contextId`/`context_id`, `isFinal`/`is_final`, camelCase or
//! snake_case alignment); audio is decoded from base64 here, so undecoded
//! payloads never leave this module.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

/// One server message, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ServerMessage {
    /// The context it belongs to.
    pub context: Option<String>,
    /// Decoded mu-law audio (absent or empty: none).
    pub audio: Option<Vec<u8>>,
    /// How many characters of text the audio covers, from its alignment.
    pub aligned_chars: Option<usize>,
    /// The context's last message.
    pub is_final: bool,
    /// An error the server reported.
    pub error: Option<String>,
}

/// Reads a server text frame; `Err` says what is wrong with it.
pub(super) fn parse(text: &str) -> Result<ServerMessage, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = &value else {
        return Err("not a JSON object".into());
    };
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| map.get(*n).filter(|v| !v.is_null()))
    };
    let context = match field(&["contextId", "context_id"]) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("contextId is not a string".into()),
    };
    let audio = match field(&["audio"]) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(
            BASE64
                .decode(s.as_bytes())
                .map_err(|e| format!("audio is not base64: {e}"))?,
        ),
        Some(_) => return Err("audio is not a string".into()),
    };
    let is_final = match field(&["isFinal", "is_final"]) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("isFinal is not a boolean".into()),
    };
    // `alignment` follows the text as sent; the normalized one may differ
    // (numbers spelled out), so it only counts when the other is missing.
    let aligned_chars = match field(&["alignment", "normalizedAlignment", "normalized_alignment"]) {
        None => None,
        Some(alignment) => match alignment.get("chars") {
            Some(Value::Array(chars)) => Some(chars.len()),
            _ => return Err("alignment without a chars list".into()),
        },
    };
    let error = field(&["error", "message"])
        .filter(|_| audio.is_none())
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        });
    Ok(ServerMessage {
        context,
        audio,
        aligned_chars,
        is_final,
        error,
    })
}

/// Opens a context: a lone space with the voice and generation settings.
pub(super) fn open_context(context: &str, settings: Option<&Value>, schedule: &[u32]) -> Value {
    let mut message = json!({
        "text": " ",
        "context_id": context,
        "generation_config": { "chunk_length_schedule": schedule },
    });
    if let Some(settings) = settings {
        message["voice_settings"] = settings.clone();
    }
    message
}

/// A chunk of text (ending in one space); `flush` at the end of the turn.
pub(super) fn text(context: &str, text: &str, flush: bool) -> Value {
    let mut message = json!({
        "text": text,
        "context_id": context,
        "try_trigger_generation": true,
    });
    if flush {
        message["flush"] = Value::Bool(true);
    }
    message
}

/// Generates whatever the context still buffers (a turn that ended
/// without new text).
pub(super) fn flush(context: &str) -> Value {
    json!({ "text": " ", "context_id": context, "flush": true })
}

/// Keeps a context (and the socket) from timing out.
pub(super) fn keep_alive(context: &str) -> Value {
    json!({ "text": " ", "context_id": context })
}

/// Closes a context: the server stops generating for it.
pub(super) fn close_context(context: &str) -> Value {
    json!({ "context_id": context, "close_context": true })
}

/// Ends the connection.
pub(super) fn close_socket() -> Value {
    json!({ "close_socket": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_are_read() {
        let camel = r#"{"audio":"AAEC","isFinal":false,"contextId":"turn-1",
            "normalizedAlignment":{"chars":["h","i"],"charStartTimesMs":[0,1],"charsDurationsMs":[1,1]},
            "alignment":{"chars":["h","i"," "],"charStartTimesMs":[0,1,2],"charsDurationsMs":[1,1,1]}}"#;
        let read = parse(camel).expect("camelCase");
        assert_eq!(read.context.as_deref(), Some("turn-1"));
        assert_eq!(read.audio, Some(vec![0, 1, 2]));
        assert_eq!(read.aligned_chars, Some(3));
        assert!(!read.is_final);

        let snake = r#"{"audio":"AAEC","is_final":false,"context_id":"turn-2",
            "normalized_alignment":{"chars":["h"],"char_start_times_ms":[0],"chars_durations_ms":[1]}}"#;
        let read = parse(snake).expect("snake_case");
        assert_eq!(read.context.as_deref(), Some("turn-2"));
        assert_eq!(read.aligned_chars, Some(1));

        let last = parse(r#"{"audio":null,"is_final":true,"contextId":"turn-2"}"#).expect("final");
        assert!(last.is_final);
        assert_eq!(last.audio, None);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        assert!(parse("not json").is_err());
        assert!(parse("[1,2]").is_err());
        assert!(parse(r#"{"audio":"@@@","contextId":"turn-1"}"#).is_err());
        assert!(parse(r#"{"audio":5}"#).is_err());
        assert!(parse(r#"{"isFinal":"yes"}"#).is_err());
        let error =
            parse(r#"{"message":"quota exceeded","error":"quota_exceeded"}"#).expect("error");
        assert_eq!(error.error.as_deref(), Some("quota_exceeded"));
    }
}
