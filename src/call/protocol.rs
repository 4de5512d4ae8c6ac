//! Twilio Media Streams messages: lenient parsing of what Twilio sends,
//! exact construction of the only three messages we may send (`media`,
//! `mark`, `clear`; anything else is error 31924 on Twilio's side).

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Largest text frame we parse (a 20 ms payload is ~300 bytes of JSON; a
/// generous margin for odd senders, far below anything abusive).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The `start` message's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    /// `MZ…`: names the stream in everything we send back.
    pub stream_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `AC…`.
    pub account_sid: Option<String>,
    /// `start.customParameters` (our call token lives here).
    pub custom_parameters: BTreeMap<String, String>,
    /// `mediaFormat.encoding`, expected `audio/x-mulaw`.
    pub encoding: Option<String>,
    /// `mediaFormat.sampleRate`, expected 8000.
    pub sample_rate: Option<u32>,
}

/// One message from Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `connected`: the socket is up; `start` follows.
    Connected,
    /// `start`: stream metadata.
    Start(StreamStart),
    /// `media`: caller audio.
    Media {
        /// `media.timestamp`: ms since stream start, when present and numeric.
        timestamp_ms: Option<u64>,
        /// `media.payload`: base64 mu-law, decoded by the audio path.
        payload: String,
    },
    /// `dtmf`: a key press.
    Dtmf {
        /// The digit (`0`–`9`, `*`, `#`, `A`–`D`).
        digit: char,
    },
    /// `mark`: audio before this mark finished playing (or was cleared).
    Mark {
        /// `mark.name`.
        name: String,
    },
    /// `stop`: the stream ended (the call is over or was transferred).
    Stop,
    /// A well-formed message of an event we do not handle.
    Other {
        /// Its `event` field.
        event: String,
    },
}

/// Why a frame was rejected (it is dropped; the call goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
    /// Not JSON, or not an object.
    #[error("message is not a JSON object")]
    NotJson,
    /// No `event` string.
    #[error("message has no event")]
    NoEvent,
    /// An event we handle lacks a field it must have.
    #[error("`{event}` message lacks `{field}`")]
    Missing {
        /// The event.
        event: &'static str,
        /// The missing field.
        field: &'static str,
    },
}

/// Parses one text frame. Unknown fields are ignored; numeric-looking
/// fields are accepted as strings or numbers.
pub fn parse(text: &str) -> Result<Inbound, ProtocolError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge(text.len()));
    }
    let value: Value = serde_json::from_str(text).map_err(|_| ProtocolError::NotJson)?;
    let object = value.as_object().ok_or(ProtocolError::NotJson)?;
    let event = object
        .get("event")
        .and_then(Value::as_str)
        .ok_or(ProtocolError::NoEvent)?;
    Ok(match event {
        "connected" => Inbound::Connected,
        "start" => {
            let start = object.get("start").and_then(Value::as_object);
            let field = |name: &str| {
                start
                    .and_then(|s| s.get(name))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            let stream_sid = field("streamSid")
                .or_else(|| {
                    object
                        .get("streamSid")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .ok_or(ProtocolError::Missing {
                    event: "start",
                    field: "streamSid",
                })?;
            let call_sid = field("callSid").ok_or(ProtocolError::Missing {
                event: "start",
                field: "callSid",
            })?;
            let custom_parameters = start
                .and_then(|s| s.get("customParameters"))
                .and_then(Value::as_object)
                .map(|params| {
                    params
                        .iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            let format = start
                .and_then(|s| s.get("mediaFormat"))
                .and_then(Value::as_object);
            Inbound::Start(StreamStart {
                stream_sid,
                call_sid,
                account_sid: field("accountSid"),
                custom_parameters,
                encoding: format
                    .and_then(|f| f.get("encoding"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                sample_rate: format
                    .and_then(|f| f.get("sampleRate"))
                    .and_then(number)
                    .and_then(|n| u32::try_from(n).ok()),
            })
        }
        "media" => {
            let media =
                object
                    .get("media")
                    .and_then(Value::as_object)
                    .ok_or(ProtocolError::Missing {
                        event: "media",
                        field: "media",
                    })?;
            let payload =
                media
                    .get("payload")
                    .and_then(Value::as_str)
                    .ok_or(ProtocolError::Missing {
                        event: "media",
                        field: "payload",
                    })?;
            Inbound::Media {
                timestamp_ms: media.get("timestamp").and_then(number),
                payload: payload.to_string(),
            }
        }
        "dtmf" => {
            let digit = object
                .get("dtmf")
                .and_then(|d| d.get("digit"))
                .and_then(Value::as_str)
                .and_then(|d| d.chars().next())
                .filter(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
                .ok_or(ProtocolError::Missing {
                    event: "dtmf",
                    field: "digit",
                })?;
            Inbound::Dtmf { digit }
        }
        "mark" => {
            let name = object
                .get("mark")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .ok_or(ProtocolError::Missing {
                    event: "mark",
                    field: "name",
                })?;
            Inbound::Mark {
                name: name.to_string(),
            }
        }
        "stop" => Inbound::Stop,
        other => Inbound::Other {
            event: other.chars().take(64).collect(),
        },
    })
}

/// A number given as a JSON number or a numeric string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `{"event":"media","streamSid":…,"media":{"payload":…}}`.
pub fn media(stream_sid: &str, payload_base64: &str) -> String {
    json!({ "event": "media", "streamSid": stream_sid, "media": { "payload": payload_base64 } })
        .to_string()
}

/// `{"event":"mark","streamSid":…,"mark":{"name":…}}`.
pub fn mark(stream_sid: &str, name: &str) -> String {
    json!({ "event": "mark", "streamSid": stream_sid, "mark": { "name": name } }).to_string()
}

/// `{"event":"clear","streamSid":…}`.
pub fn clear(stream_sid: &str) -> String {
    json!({ "event": "clear", "streamSid": stream_sid }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_sequence() {
        assert_eq!(
            parse(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
            Ok(Inbound::Connected)
        );
        let start = parse(
            r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ1",
                "start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],
                "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
                "customParameters":{"callToken":"tok"}}}"#,
        );
        let Ok(Inbound::Start(s)) = start else {
            panic!("start not parsed: {start:?}");
        };
        assert_eq!((s.stream_sid.as_str(), s.call_sid.as_str()), ("MZ1", "CA1"));
        assert_eq!(
            s.custom_parameters.get("callToken").map(String::as_str),
            Some("tok")
        );
        assert_eq!(s.sample_rate, Some(8000));
        assert_eq!(
            parse(
                r#"{"event":"media","sequenceNumber":"4","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"AAA="}}"#
            ),
            Ok(Inbound::Media {
                timestamp_ms: Some(5),
                payload: "AAA=".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"event":"dtmf","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"0"}}"#
            ),
            Ok(Inbound::Dtmf { digit: '0' })
        );
        assert_eq!(
            parse(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"3:17"}}"#),
            Ok(Inbound::Mark {
                name: "3:17".into()
            })
        );
        assert_eq!(
            parse(r#"{"event":"stop","streamSid":"MZ1","stop":{"callSid":"CA1"}}"#),
            Ok(Inbound::Stop)
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "nope",
            "[]",
            "{}",
            r#"{"event":5}"#,
            r#"{"event":"media"}"#,
            r#"{"event":"media","media":{"payload":7}}"#,
            r#"{"event":"mark","mark":{}}"#,
            r#"{"event":"dtmf","dtmf":{"digit":"x"}}"#,
            r#"{"event":"start","start":{}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let huge = format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            "A".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(matches!(parse(&huge), Err(ProtocolError::TooLarge(_))));
        assert!(matches!(
            parse(r#"{"event":"surprise"}"#),
            Ok(Inbound::Other { .. })
        ));
    }

    #[test]
    fn outbound_messages_are_exactly_shaped() {
        let m: Value = serde_json::from_str(&media("MZ1", "AAA=")).expect("json");
        assert_eq!(
            m,
            json!({"event":"media","streamSid":"MZ1","media":{"payload":"AAA="}})
        );
        let k: Value = serde_json::from_str(&mark("MZ1", "2:5")).expect("json");
        assert_eq!(
            k,
            json!({"event":"mark","streamSid":"MZ1","mark":{"name":"2:5"}})
        );
        let c: Value = serde_json::from_str(&clear("MZ1")).expect("json");
        assert_eq!(c, json!({"event":"clear","streamSid":"MZ1"}));
    }
}
