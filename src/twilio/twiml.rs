//! A small TwiML builder: the `<Response>` documents we answer Twilio's
//! webhooks with, built from typed verbs and always well-formed (text and
//! attribute values XML-escaped, characters XML cannot carry dropped).

use std::fmt::Write;

/// How `<Reject>` sounds to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// A "not in service" style rejection (Twilio's default).
    Rejected,
    /// A busy signal.
    Busy,
}

impl RejectReason {
    fn as_str(self) -> &'static str {
        match self {
            RejectReason::Rejected => "rejected",
            RejectReason::Busy => "busy",
        }
    }
}

/// A bidirectional media stream, `<Connect><Stream>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// `wss://` (or `ws://`) URL of our media websocket; Twilio forbids a
    /// query string here, so data travels in `parameters`.
    pub url: String,
    /// Where Twilio posts `stream-started` / `stream-stopped` / `stream-error`.
    pub status_callback: Option<String>,
    /// `<Parameter name value/>` pairs, delivered in `start.customParameters`
    /// (name and value under 500 characters each).
    pub parameters: Vec<(String, String)>,
}

/// One TwiML verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// `<Reject reason=…/>`: as the first verb, do not answer (not billed).
    Reject(RejectReason),
    /// `<Say voice language>text</Say>`.
    Say {
        /// What to say.
        text: String,
        /// Twilio voice name (`alice`, `Polly.Joanna`), default when `None`.
        voice: Option<String>,
        /// BCP-47 language (`en-US`), default when `None`.
        language: Option<String>,
    },
    /// `<Hangup/>`.
    Hangup,
    /// `<Pause length=…/>`, in seconds.
    Pause(u32),
    /// `<Dial callerId>number</Dial>`: transfer to a human.
    Dial {
        /// The number to dial.
        number: String,
        /// The caller id to present, default when `None`.
        caller_id: Option<String>,
    },
    /// `<Connect><Stream …/></Connect>`.
    ConnectStream(Stream),
}

/// A TwiML `<Response>` document under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Twiml {
    /// The verbs in the order Twilio runs them.
    verbs: Vec<Verb>,
}

impl Twiml {
    /// An empty `<Response/>` (Twilio does nothing further).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends any verb.
    pub fn verb(mut self, verb: Verb) -> Self {
        self.verbs.push(verb);
        self
    }

    /// Appends `<Reject reason=…/>`.
    pub fn reject(self, reason: RejectReason) -> Self {
        self.verb(Verb::Reject(reason))
    }

    /// Appends `<Say>` with Twilio's default voice and language.
    pub fn say(self, text: impl Into<String>) -> Self {
        self.verb(Verb::Say {
            text: text.into(),
            voice: None,
            language: None,
        })
    }

    /// Appends `<Hangup/>`.
    pub fn hangup(self) -> Self {
        self.verb(Verb::Hangup)
    }

    /// Appends `<Pause length=…/>`.
    pub fn pause(self, seconds: u32) -> Self {
        self.verb(Verb::Pause(seconds))
    }

    /// Appends `<Dial>number</Dial>` with an optional caller id.
    pub fn dial(self, number: impl Into<String>, caller_id: Option<String>) -> Self {
        self.verb(Verb::Dial {
            number: number.into(),
            caller_id,
        })
    }

    /// Appends `<Connect><Stream>…</Stream></Connect>`.
    pub fn connect_stream(self, stream: Stream) -> Self {
        self.verb(Verb::ConnectStream(stream))
    }

    /// The verbs so far.
    pub fn verbs(&self) -> &[Verb] {
        &self.verbs
    }

    /// The document, with its XML declaration.
    pub fn render(&self) -> String {
        let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        if self.verbs.is_empty() {
            out.push_str("<Response/>");
            return out;
        }
        out.push_str("<Response>");
        for verb in &self.verbs {
            render_verb(&mut out, verb);
        }
        out.push_str("</Response>");
        out
    }
}

fn render_verb(out: &mut String, verb: &Verb) {
    match verb {
        Verb::Reject(reason) => {
            out.push_str("<Reject");
            attr(out, "reason", reason.as_str());
            out.push_str("/>");
        }
        Verb::Say {
            text,
            voice,
            language,
        } => {
            out.push_str("<Say");
            if let Some(voice) = voice {
                attr(out, "voice", voice);
            }
            if let Some(language) = language {
                attr(out, "language", language);
            }
            out.push('>');
            escape(out, text, false);
            out.push_str("</Say>");
        }
        Verb::Hangup => out.push_str("<Hangup/>"),
        Verb::Pause(seconds) => {
            // Writing to a String cannot fail.
            let _ = write!(out, r#"<Pause length="{seconds}"/>"#);
        }
        Verb::Dial { number, caller_id } => {
            out.push_str("<Dial");
            if let Some(caller_id) = caller_id {
                attr(out, "callerId", caller_id);
            }
            out.push('>');
            escape(out, number, false);
            out.push_str("</Dial>");
        }
        Verb::ConnectStream(stream) => {
            out.push_str("<Connect><Stream");
            attr(out, "url", &stream.url);
            if let Some(callback) = &stream.status_callback {
                attr(out, "statusCallback", callback);
            }
            if stream.parameters.is_empty() {
                out.push_str("/></Connect>");
                return;
            }
            out.push('>');
            for (name, value) in &stream.parameters {
                out.push_str("<Parameter");
                attr(out, "name", name);
                attr(out, "value", value);
                out.push_str("/>");
            }
            out.push_str("</Stream></Connect>");
        }
    }
}

/// ` name="value"`, the value escaped.
fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape(out, value, true);
    out.push('"');
}

/// Escapes `text` for element content or (with `attribute`) a double-quoted
/// attribute value. Characters XML 1.0 cannot carry at all (most C0
/// controls, U+FFFE, U+FFFF) are dropped; in attributes, tab and line
/// breaks become character references so they survive normalisation.
fn escape(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

    #[test]
    fn empty_response() {
        assert_eq!(Twiml::new().render(), format!("{DECL}<Response/>"));
    }

    #[test]
    fn reject_first() {
        assert_eq!(
            Twiml::new().reject(RejectReason::Rejected).render(),
            format!(r#"{DECL}<Response><Reject reason="rejected"/></Response>"#)
        );
        assert_eq!(
            Twiml::new().reject(RejectReason::Busy).render(),
            format!(r#"{DECL}<Response><Reject reason="busy"/></Response>"#)
        );
    }

    #[test]
    fn say_pause_hangup_and_dial() {
        let doc = Twiml::new()
            .verb(Verb::Say {
                text: "Fish & chips <today>".into(),
                voice: Some("Polly.Joanna".into()),
                language: Some("en-US".into()),
            })
            .pause(1)
            .dial("+15551234567", Some("+18005551212".into()))
            .say("Bye")
            .hangup()
            .render();
        assert_eq!(
            doc,
            format!(
                "{DECL}<Response>\
                 <Say voice=\"Polly.Joanna\" language=\"en-US\">Fish &amp; chips &lt;today&gt;</Say>\
                 <Pause length=\"1\"/>\
                 <Dial callerId=\"+18005551212\">+15551234567</Dial>\
                 <Say>Bye</Say><Hangup/></Response>"
            )
        );
    }

    #[test]
    fn connect_stream_with_escaped_attributes() {
        let doc = Twiml::new()
            .connect_stream(Stream {
                url: "wss://voice.example.com/twilio/media".into(),
                status_callback: Some(
                    "https://voice.example.com/twilio/stream-status?a=1&b=2".into(),
                ),
                parameters: vec![
                    ("callToken".into(), "ct1.abc-_".into()),
                    ("quote".into(), "say \"hi\" & 'bye'\n<x>".into()),
                ],
            })
            .render();
        assert_eq!(
            doc,
            format!(
                "{DECL}<Response><Connect>\
                 <Stream url=\"wss://voice.example.com/twilio/media\" \
                 statusCallback=\"https://voice.example.com/twilio/stream-status?a=1&amp;b=2\">\
                 <Parameter name=\"callToken\" value=\"ct1.abc-_\"/>\
                 <Parameter name=\"quote\" value=\"say &quot;hi&quot; &amp; &apos;bye&apos;&#10;&lt;x&gt;\"/>\
                 </Stream></Connect></Response>"
            )
        );
    }

    #[test]
    fn stream_without_parameters_is_self_closing() {
        let doc = Twiml::new()
            .connect_stream(Stream {
                url: "ws://127.0.0.1:8080/twilio/media".into(),
                status_callback: None,
                parameters: Vec::new(),
            })
            .render();
        assert!(doc.ends_with(
            r#"<Connect><Stream url="ws://127.0.0.1:8080/twilio/media"/></Connect></Response>"#
        ));
    }

    #[test]
    fn characters_xml_cannot_carry_are_dropped() {
        let doc = Twiml::new().say("a\u{0}b\u{7}c\u{FFFF}d\te\r").render();
        assert!(doc.contains("<Say>abcd\te&#13;</Say>"), "{doc}");
    }
}
