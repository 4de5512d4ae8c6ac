//! Percentiles of the call session's end-of-turn → first outbound `media`
//! decision, over many independent turns, with zero-latency providers.
//! Criterion reports means; the target is a p99, so this prints
//! the distribution. Run: `cargo bench -p switchboard --bench decision_latency`.

// A benchmark measures wall time by definition; call logic never does.
#![allow(clippy::disallowed_types)]

mod common;

use std::time::Instant;

fn main() {
    const TURNS: usize = 20_000;
    let audio = vec![0x7Fu8; 800];
    let mut samples = Vec::with_capacity(TURNS);
    for _ in 0..TURNS {
        let Some(mut session) = common::listening_session() else {
            eprintln!("session could not be built");
            return;
        };
        let started = Instant::now();
        let sent = common::turn_to_first_media(&mut session, &audio);
        let elapsed = started.elapsed();
        if sent {
            samples.push(elapsed.as_secs_f64() * 1e6);
        }
    }
    if samples.is_empty() {
        eprintln!("no turn produced media");
        return;
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
