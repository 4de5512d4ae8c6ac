//! Process metrics in the Prometheus text exposition format, served at
//! `GET /metrics`.
//!
//! Per-turn latency is recorded as histograms labelled by stage and provider
//! only: never by tenant or caller, so the label set stays small and the
//! endpoint leaks nothing about who called. Provider failures are counters
//! labelled by provider, stage and error kind.
//!
//! A handful of fixed series does not justify a metrics crate: the registry
//! is a mutex-guarded map written a few times per turn, far from the media
//! path's per-frame work.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds: fine around the 0.1–1 s range
/// where turn latency lives.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
];

/// One turn-latency stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Caller end of speech (endpointer) → final transcript.
    SttFinal,
    /// Final transcript → first LLM text.
    LlmFirstToken,
    /// First LLM text → first TTS audio.
    TtsFirstByte,
    /// First TTS audio → first media frame sent to Twilio.
    FirstMedia,
    /// Caller end of speech → first media frame: what the caller feels.
    VoiceToVoice,
}

impl Stage {
    /// The `stage` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::SttFinal => "stt_final",
            Stage::LlmFirstToken => "llm_first_token",
            Stage::TtsFirstByte => "tts_first_byte",
            Stage::FirstMedia => "first_media",
            Stage::VoiceToVoice => "voice_to_voice",
        }
    }
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (stage, provider) → histogram.
    latency: Mutex<BTreeMap<(Stage, String), Histogram>>,
    /// (provider, stage, kind) → failures.
    failures: Mutex<BTreeMap<(String, String, String), u64>>,
    /// (provider, stage) → fallbacks taken to another provider or the
    /// apology.
    fallbacks: Mutex<BTreeMap<(String, String), u64>>,
    calls_started: AtomicU64,
    calls_live: AtomicU64,
    turns: AtomicU64,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one turn stage's latency.
    pub fn observe(&self, stage: Stage, provider: &str, latency: Duration) {
        if let Ok(mut map) = self.latency.lock() {
            map.entry((stage, provider.to_string()))
                .or_default()
                .observe(latency.as_secs_f64());
        }
    }

    /// Counts a provider failure.
    pub fn failure(&self, provider: &str, stage: &str, kind: &str) {
        if let Ok(mut map) = self.failures.lock() {
            *map.entry((provider.to_string(), stage.to_string(), kind.to_string()))
                .or_default() += 1;
        }
    }

    /// Counts a fallback away from `provider` at `stage`.
    pub fn fallback(&self, provider: &str, stage: &str) {
        if let Ok(mut map) = self.fallbacks.lock() {
            *map.entry((provider.to_string(), stage.to_string()))
                .or_default() += 1;
        }
    }

    /// Failures counted so far for `provider` (all stages and kinds).
    pub fn failures_of(&self, provider: &str) -> u64 {
        self.failures
            .lock()
            .map(|map| {
                map.iter()
                    .filter(|((p, _, _), _)| p == provider)
                    .map(|(_, n)| *n)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// A call's media stream started.
    pub fn call_started(&self) {
        self.calls_started.fetch_add(1, Ordering::Relaxed);
        self.calls_live.fetch_add(1, Ordering::Relaxed);
    }

    /// A call's media stream ended.
    pub fn call_ended(&self) {
        let _ = self
            .calls_live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// An agent turn was heard.
    pub fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP switchboard_turn_stage_seconds Per-turn latency by stage and provider."
        );
        let _ = writeln!(out, "# TYPE switchboard_turn_stage_seconds histogram");
        if let Ok(map) = self.latency.lock() {
            for ((stage, provider), h) in map.iter() {
                let labels = format!(
                    "stage=\"{}\",provider=\"{}\"",
                    stage.as_str(),
                    escape(provider)
                );
                for (bound, count) in BUCKETS.iter().zip(h.counts.iter()) {
                    let _ = writeln!(
                        out,
                        "switchboard_turn_stage_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    out,
                    "switchboard_turn_stage_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "switchboard_turn_stage_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "switchboard_turn_stage_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_provider_failures_total Provider failures by provider, stage and kind."
        );
        let _ = writeln!(out, "# TYPE switchboard_provider_failures_total counter");
        if let Ok(map) = self.failures.lock() {
            for ((provider, stage, kind), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "switchboard_provider_failures_total{{provider=\"{}\",stage=\"{}\",kind=\"{}\"}} {n}",
                    escape(provider),
                    escape(stage),
                    escape(kind)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchboard_provider_fallbacks_total Times a stage moved on from a provider (retry elsewhere, filler or apology)."
        );
        let _ = writeln!(out, "# TYPE switchboard_provider_fallbacks_total counter");
        if let Ok(map) = self.fallbacks.lock() {
            for ((provider, stage), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "switchboard_provider_fallbacks_total{{provider=\"{}\",stage=\"{}\"}} {n}",
                    escape(provider),
                    escape(stage)
                );
            }
        }
        for (name, help, kind, value) in [
            (
                "switchboard_calls_started_total",
                "Media streams started.",
                "counter",
                self.calls_started.load(Ordering::Relaxed),
            ),
            (
                "switchboard_calls_live",
                "Media streams live now.",
                "gauge",
                self.calls_live.load(Ordering::Relaxed),
            ),
            (
                "switchboard_agent_turns_total",
                "Agent turns heard by callers.",
                "counter",
                self.turns.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled_by_stage_and_provider() {
        let metrics = Metrics::new();
        metrics.observe(Stage::LlmFirstToken, "openai", Duration::from_millis(80));
        metrics.observe(Stage::LlmFirstToken, "openai", Duration::from_millis(400));
        metrics.failure("deepgram", "stt", "network");
        metrics.fallback("deepgram", "stt");
        let text = metrics.render();
        assert!(text.contains(
            "switchboard_turn_stage_seconds_bucket{stage=\"llm_first_token\",provider=\"openai\",le=\"0.1\"} 1"
        ));
        assert!(text.contains(
            "switchboard_turn_stage_seconds_bucket{stage=\"llm_first_token\",provider=\"openai\",le=\"0.5\"} 2"
        ));
        assert!(text.contains(
            "switchboard_turn_stage_seconds_count{stage=\"llm_first_token\",provider=\"openai\"} 2"
        ));
        assert!(text.contains(
            "switchboard_provider_failures_total{provider=\"deepgram\",stage=\"stt\",kind=\"network\"} 1"
        ));
        assert!(text.contains(
            "switchboard_provider_fallbacks_total{provider=\"deepgram\",stage=\"stt\"} 1"
        ));
        assert_eq!(metrics.failures_of("deepgram"), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
