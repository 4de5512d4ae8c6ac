//! Percentiles of the call session's end-of-turn → first outbound `media`
//! decision, over many independent turns, with zero-latency providers.
//! Criterion reports means; the target is a p99, so this prints
//! the distribution. Run: `cargo bench -p switchboard --bench decision_latency`.

// A benchmark measures wall time by definition; call logic never does.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use switchboard::call::{CallSession, Input, Output, SessionConfig};

fn main() {
    const TURNS: usize = 20_000;
    let audio = vec![0x7Fu8; 800];
    let mut samples = Vec::with_capacity(TURNS);
    for _ in 0..TURNS {
        let config = SessionConfig {
            greeting: "Hello.".into(),
            ..SessionConfig::default()
        };
        let Ok(mut session) = CallSession::new(config, "MZbench", Duration::ZERO) else {
            eprintln!("session could not be built");
            return;
        };
        session.handle(Input::TtsDone { turn: 1 }, Duration::from_millis(10));
        while session.poll_output().is_some() {}
        let now = Duration::from_secs(5);
        let started = Instant::now();
        session.handle(
            Input::Transcript {
                text: "What are your hours?".into(),
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
                audio: audio.clone(),
                text_end: None,
            },
            now,
        );
        let mut sent = false;
        while let Some(out) = session.poll_output() {
            if matches!(&out, Output::Twilio(t) if t.contains("\"media\"")) {
                sent = true;
                break;
            }
        }
        let elapsed = started.elapsed();
        if sent {
            samples.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((p / 100.0) * (samples.len() - 1) as f64).round() as usize];
    println!(
        "end of turn → first media, {} turns: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
        samples.len(),
        pct(50.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    );
}
