//! The per-frame paths allocate nothing: a counting global allocator
//! watches one thread while a call's worth of audio goes in (base64 payloads
//! → framing → mu-law decode → resampling → earshot VAD → endpointer →
//! barge-in) and out (TTS PCM at 24 kHz and mu-law at 8 kHz → frames →
//! base64 payloads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use media::endpoint::EndpointConfig;
use media::path::{InboundEvent, InboundPath, OutboundPath};
use media::FRAME_SAMPLES;

/// Counts heap allocations made by the current thread, so the check is not
/// disturbed by other tests running in parallel.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to the system allocator; only counts.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/audio")
        .join(name);
    media::wav::read_ulaw(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_inbound_path_allocates_nothing_per_frame() {
    let mut audio = fixture("long_answer.wav");
    audio.extend(fixture("interruption.wav"));
    // Odd payload sizes exercise re-framing; prepared before counting.
    let payloads: Vec<(u64, String)> = audio
        .chunks(FRAME_SAMPLES + 37)
        .scan(0u64, |sent, chunk| {
            let at = *sent / 8;
            *sent += chunk.len() as u64;
            Some((at, BASE64.encode(chunk)))
        })
        .collect();
    let mut path = InboundPath::new(EndpointConfig::default()).expect("path");
    path.set_agent_speaking(true);
    let mut frames = 0usize;
    let mut endpoints = 0usize;
    let before = allocations();
    for (at, payload) in &payloads {
        let pushed = path.push_media(Some(*at), payload, |event| match event {
            InboundEvent::Audio { .. } => frames += 1,
            InboundEvent::Endpoint(_) => endpoints += 1,
            InboundEvent::BargeIn(_) => {}
        });
        assert!(pushed.is_ok());
    }
    let after = allocations();
    assert!(frames > 700, "{frames} frames");
    assert!(endpoints >= 2, "{endpoints} endpoint events");
    assert_eq!(after - before, 0, "heap allocations on the inbound path");
}

#[test]
fn the_outbound_path_allocates_nothing_per_frame() {
    let ulaw = fixture("long_answer.wav");
    let pcm: Vec<i16> = ulaw
        .iter()
        .map(|&c| media::g711::ulaw_to_linear(c))
        .collect();
    let pcm24: Vec<i16> = pcm.iter().flat_map(|&s| [s, s, s]).collect();
    let mut from_ulaw = OutboundPath::new(8_000, 1).expect("path");
    let mut from_tts = OutboundPath::new(24_000, 2).expect("path");
    let mut bytes = 0usize;
    let before = allocations();
    for chunk in ulaw.chunks(333) {
        from_ulaw.push_ulaw(chunk, |payload, _| bytes += payload.len());
    }
    from_ulaw.flush(|payload, _| bytes += payload.len());
    for chunk in pcm24.chunks(1_001) {
        from_tts.push_pcm(chunk, |payload, _| bytes += payload.len());
    }
    from_tts.flush(|payload, _| bytes += payload.len());
    from_tts.discard();
    let after = allocations();
    assert!(bytes > 100_000, "{bytes} base64 bytes");
    assert_eq!(after - before, 0, "heap allocations on the outbound path");
}
