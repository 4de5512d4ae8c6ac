//! What both session benchmarks drive: a session that has greeted and is
//! listening, and one caller turn taken to the first outbound `media`
//! message with zero-latency providers fed back synchronously.

use std::time::Duration;

use switchboard::call::{CallSession, Input, Output, SessionConfig};

/// A session that greeted and is now listening, or `None` if it could not
/// be built.
pub fn listening_session() -> Option<CallSession> {
    let config = SessionConfig {
        greeting: "Hello.".into(),
        ..SessionConfig::default()
    };
    let mut session = CallSession::new(config, "MZbench", Duration::ZERO).ok()?;
    session.handle(Input::TtsDone { turn: 1 }, Duration::from_millis(10));
    while session.poll_output().is_some() {}
    Some(session)
}

/// The caller ends a turn; the reply's text and first audio come back at
/// once. Returns whether a `media` message went out.
pub fn turn_to_first_media(session: &mut CallSession, audio: &[u8]) -> bool {
    let now = Duration::from_secs(5);
    session.handle(
        Input::Transcript {
            text: "What are your opening hours?".into(),
            is_final: true,
            end_of_turn: true,
        },
        now,
    );
    let mut turn = 0;
    while let Some(out) = session.poll_output() {
        if let Output::StartReply { turn: t, .. } = out {
            turn = t;
        }
    }
    session.handle(
        Input::LlmText {
            turn,
            delta: "We open at nine. ".into(),
        },
        now,
    );
    session.handle(Input::LlmDone { turn }, now);
    while session.poll_output().is_some() {}
    session.handle(
        Input::TtsAudio {
            turn,
            audio: audio.to_vec(),
            text_end: None,
        },
        now,
    );
    while let Some(out) = session.poll_output() {
        if matches!(&out, Output::Twilio(t) if t.contains("\"media\"")) {
            return true;
        }
    }
    false
}
