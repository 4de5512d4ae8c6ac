//! The call session's own cost on the hot decision: from the caller's end of
//! turn to the first outbound `media` message, with zero-latency providers
//! (their work is fed back synchronously), so only orchestration is timed.
//!
//! Run: `cargo bench -p switchboard --bench session`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use switchboard::call::{CallSession, Input, Output, SessionConfig};

/// A session that greeted and is now listening.
fn listening_session() -> CallSession {
    let config = SessionConfig {
        greeting: "Hello.".into(),
        ..SessionConfig::default()
    };
    let mut session = match CallSession::new(config, "MZbench", Duration::ZERO) {
        Ok(s) => s,
        Err(e) => panic!("session: {e}"),
    };
    session.handle(Input::TtsDone { turn: 1 }, Duration::from_millis(10));
    while session.poll_output().is_some() {}
    session
}

fn end_of_turn_to_first_media(c: &mut Criterion) {
    let audio = vec![0x7Fu8; 800];
    c.bench_function("session/end_of_turn_to_first_media", |b| {
        b.iter_batched(
            listening_session,
            |mut session| {
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
                let mut sent = false;
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
                        audio: audio.clone(),
                        text_end: None,
                    },
                    now,
                );
                while let Some(out) = session.poll_output() {
                    if matches!(&out, Output::Twilio(t) if t.contains("\"media\"")) {
                        sent = true;
                        break;
                    }
                }
                black_box(sent)
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = end_of_turn_to_first_media
}
criterion_main!(benches);
