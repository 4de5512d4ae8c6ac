//! The call session's own cost on the hot decision: from the caller's end of
//! turn to the first outbound `media` message, with zero-latency providers
//! (their work is fed back synchronously), so only orchestration is timed.
//!
//! Run: `cargo bench -p switchboard --bench session`.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn end_of_turn_to_first_media(c: &mut Criterion) {
    let audio = vec![0x7Fu8; 800];
    c.bench_function("session/end_of_turn_to_first_media", |b| {
        b.iter_batched(
            || common::listening_session().expect("session builds"),
            |mut session| black_box(common::turn_to_first_media(&mut session, &audio)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = end_of_turn_to_first_media
}
criterion_main!(benches);
