//! Malformed Media Streams messages for robustness testing: broken JSON,
//! wrong types, missing fields, bad base64, oversized payloads, unknown and
//! out-of-order events. Deterministic from a seed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A small xorshift generator (deterministic, no dependency).
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator (0 is replaced by a constant).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One malformed message.
pub fn message(rng: &mut Rng, stream_sid: &str) -> Message {
    let text = match rng.below(14) {
        0 => "{\"event\":\"media\",\"media\":{\"payload\":".to_string(),
        1 => "not json at all".to_string(),
        2 => json!({"event": "media", "media": {"payload": "%%%not base64%%%"}}).to_string(),
        3 => json!({"event": "media", "media": {"payload": 12345}}).to_string(),
        4 => json!({"event": "media"}).to_string(),
        5 => json!({"event": 7, "streamSid": stream_sid}).to_string(),
        6 => json!({"event": "start", "start": {"streamSid": "MZevil", "callSid": "CAevil",
                     "customParameters": {"callToken": "forged"}}}).to_string(),
        7 => json!({"event": "mark", "mark": {"name": format!("{}:{}", rng.next(), rng.next())}}).to_string(),
        8 => json!({"event": "mark", "mark": {"name": "\u{0000}\u{ffff}::"}}).to_string(),
        9 => json!({"event": "dtmf", "dtmf": {"digit": "🙂"}}).to_string(),
        10 => json!({"event": "surprise", "data": [1, 2, 3]}).to_string(),
        11 => {
            // A payload decoding to more than one second of audio.
            let big = BASE64.encode(vec![0x7Fu8; 9_000]);
            json!({"event": "media", "streamSid": stream_sid, "media": {"timestamp": "1", "payload": big}}).to_string()
        }
        12 => json!({"event": "media", "streamSid": stream_sid,
                      "media": {"timestamp": "999999999999", "payload": BASE64.encode([0xFFu8; 160])}}).to_string(),
        _ => "[]".to_string(),
    };
    if rng.below(20) == 0 {
        return Message::Binary(vec![0u8; 16].into());
    }
    Message::Text(text.into())
}
