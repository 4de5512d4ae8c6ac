//! A sans-IO, lenient `text/event-stream` decoder: bytes in (split at any
//! position, even inside a UTF-8 character), event payloads out.
//!
//! It follows the WHATWG server-sent events rules where they matter to a
//! chat-completions stream: lines end with LF, CRLF or a lone CR; a line
//! starting with `:` is a comment (`: ping`); `data:` lines of one event
//! are joined with `\n`; a blank line dispatches the event; an event
//! without data is not dispatched. Other fields (`event`, `id`, `retry`)
//! are ignored. Unlike the browser rules, an event still pending when the
//! body ends is dispatched (some servers end with `data: [DONE]` and no
//! blank line).

/// Decodes a server-sent events body.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes received but not yet forming a complete line.
    partial: Vec<u8>,
    /// `data` lines of the event being read.
    data: Vec<String>,
    /// The last byte seen was a CR ending a line: a LF right after it
    /// belongs to the same line ending.
    after_cr: bool,
}

impl SseDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the body; returns the payload (the joined
    /// `data` lines) of every event they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.partial);
                    self.line(&line, &mut events);
                }
                _ => self.partial.push(byte),
            }
        }
        events
    }

    /// The body ended: returns the payload of an event left without its
    /// closing blank line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut events);
        }
        self.line(b"", &mut events);
        events.pop()
    }

    /// Handles one complete line (without its line ending).
    fn line(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            self.data.push(String::from_utf8_lossy(value).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], piece: usize) -> Vec<String> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            events.extend(decoder.push(chunk));
        }
        events.extend(decoder.finish());
        events
    }

    #[test]
    fn data_lines_separated_by_blank_lines() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            decode_in_pieces(body, 1000),
            vec!["{\"a\":1}", "{\"b\":2}", "[DONE]"]
        );
    }

    #[test]
    fn every_split_position_gives_the_same_events() {
        let body = "data: {\"t\":\"héllo ☎ wörld\"}\r\n\r\n: ping\r\n\r\ndata: [DONE]\r\n\r\n";
        let whole = decode_in_pieces(body.as_bytes(), body.len());
        assert_eq!(whole, vec!["{\"t\":\"héllo ☎ wörld\"}", "[DONE]"]);
        for piece in 1..body.len() {
            assert_eq!(
                decode_in_pieces(body.as_bytes(), piece),
                whole,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn comments_and_other_fields_are_ignored() {
        let body = b": ping\n\nevent: message\nid: 7\nretry: 100\ndata: x\n\n:\n\n";
        assert_eq!(decode_in_pieces(body, 3), vec!["x"]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let body = b"data: {\"a\":\ndata: 1}\n\n";
        assert_eq!(decode_in_pieces(body, 2), vec!["{\"a\":\n1}"]);
    }

    #[test]
    fn lone_cr_ends_lines() {
        let body = b"data: one\r\rdata: two\r\r";
        assert_eq!(decode_in_pieces(body, 1), vec!["one", "two"]);
    }

    #[test]
    fn data_without_space_and_without_value() {
        let body = b"data:x\n\ndata\n\n";
        // A bare `data` line is an empty data line: the event is "".
        assert_eq!(decode_in_pieces(body, 4), vec!["x", ""]);
    }

    #[test]
    fn a_pending_event_is_dispatched_at_the_end() {
        assert_eq!(decode_in_pieces(b"data: [DONE]", 5), vec!["[DONE]"]);
        assert_eq!(decode_in_pieces(b"data: [DONE]\n", 5), vec!["[DONE]"]);
        assert!(decode_in_pieces(b": only a comment", 5).is_empty());
    }

    #[test]
    fn invalid_utf8_does_not_panic() {
        let events = decode_in_pieces(b"data: \xff\xfe\n\n", 1);
        assert_eq!(events.len(), 1);
    }
}
