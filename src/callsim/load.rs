//! Load mode: many simulated calls at once, ramped up, each repeating a
//! caller turn (speak, wait for the answer) for a duration; then the figures
//! that matter: calls sustained, turn latency percentiles, outbound
//! lateness, underruns, errors, and the server's CPU and memory.

use std::time::Duration;

use tokio::time::Instant;

use super::{place_call, Answer, CallReport, CallSpec, Step};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Template for every call (its script is replaced).
    pub call: CallSpec,
    /// Concurrent calls.
    pub calls: usize,
    /// Time over which calls start, evenly spread.
    pub ramp: Duration,
    /// How long each call keeps talking.
    pub duration: Duration,
    /// The caller's utterance (8 kHz mu-law), repeated.
    pub utterance: Vec<u8>,
    /// The server's process id, to read its CPU time and memory.
    pub server_pid: Option<u32>,
}

/// Aggregated results.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Calls started.
    pub started: usize,
    /// Calls streamed and answered at least once, without error.
    pub sustained: usize,
    /// Calls that failed (webhook, socket, not answered).
    pub errors: Vec<String>,
    /// Caller end of speech → first agent audio, ms, every turn.
    pub turn_latency_ms: Vec<f64>,
    /// Outbound lateness per agent message, ms.
    pub lateness_ms: Vec<f64>,
    /// Agent messages that arrived after Twilio's buffer ran dry.
    pub underruns: usize,
    /// Off-spec frames seen.
    pub off_spec: usize,
    /// Agent audio received over all calls, in 8 kHz samples: with the
    /// fake providers (1 s greeting, 2 s per reply) a run with no dropped
    /// frame receives exactly 8,000 × (calls + 2 × answered turns).
    pub agent_samples: u64,
    /// Caller turns that got an answer.
    pub answered_turns: usize,
    /// Per call, the simulator's worst tick lateness, ms.
    pub tick_lateness_ms: Vec<f64>,
    /// Underruns on calls whose simulator ticks stayed within 20 ms.
    pub underruns_on_punctual_calls: usize,
    /// Server CPU seconds used during the run.
    pub server_cpu_secs: Option<f64>,
    /// Server resident memory before and at the end (bytes).
    pub server_rss: Option<(u64, u64)>,
    /// Server peak resident memory (VmHWM), bytes.
    pub server_peak_rss: Option<u64>,
    /// Wall time of the run.
    pub wall: Duration,
}

/// Runs the load and aggregates.
pub async fn run(spec: LoadSpec) -> LoadReport {
    let before = spec.server_pid.and_then(proc_stats);
    let started_at = Instant::now();
    let mut tasks = Vec::with_capacity(spec.calls);
    for i in 0..spec.calls {
        let mut call = spec.call.clone();
        call.call_sid = format!("CA{}", uuid::Uuid::new_v4().simple());
        call.script = script(&spec.utterance, spec.duration);
        let delay = if spec.calls > 1 {
            spec.ramp.mul_f64(i as f64 / (spec.calls - 1) as f64)
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            place_call(&call).await
        }));
    }
    let mut report = LoadReport {
        started: spec.calls,
        ..Default::default()
    };
    let mut peak_rss = None;
    for task in tasks {
        match task.await {
            Ok(Ok(call)) => absorb(&mut report, call),
            Ok(Err(e)) => report.errors.push(e.to_string()),
            Err(e) => report.errors.push(format!("simulator task failed: {e}")),
        }
        if let Some(stats) = spec.server_pid.and_then(proc_stats) {
            peak_rss = Some(stats.peak_rss);
        }
    }
    report.wall = started_at.elapsed();
    let after = spec.server_pid.and_then(proc_stats);
    if let (Some(b), Some(a)) = (before, after) {
        report.server_cpu_secs = Some(a.cpu_secs - b.cpu_secs);
        report.server_rss = Some((b.rss, a.rss));
    }
    report.server_peak_rss = peak_rss.or(after.map(|a| a.peak_rss));
    report
}

fn script(utterance: &[u8], duration: Duration) -> Vec<Step> {
    let mut steps = vec![Step::WaitAgent {
        timeout: Duration::from_secs(20),
    }];
    // Each round: the utterance, 0.8 s of silence (end of turn), the answer.
    let round = Duration::from_millis(utterance.len() as u64 / 8 + 800 + 2_500);
    let rounds = (duration.as_secs_f64() / round.as_secs_f64())
        .ceil()
        .max(1.0) as usize;
    for _ in 0..rounds {
        steps.push(Step::Say(utterance.to_vec()));
        steps.push(Step::Silence(Duration::from_millis(800)));
        steps.push(Step::WaitAgent {
            timeout: Duration::from_secs(20),
        });
    }
    steps.push(Step::Hangup);
    steps
}

fn absorb(report: &mut LoadReport, call: CallReport) {
    report.off_spec += call.off_spec.len();
    let answered = call.turns.iter().any(|t| t.first_agent_audio.is_some());
    if call.answer == Some(Answer::Streamed) && answered && call.off_spec.is_empty() {
        report.sustained += 1;
    } else {
        report.errors.push(format!(
            "call not sustained: answer {:?}, {} turns answered",
            call.answer,
            call.turns
                .iter()
                .filter(|t| t.first_agent_audio.is_some())
                .count()
        ));
    }
    report.agent_samples += call.agent_audio.len() as u64;
    for t in &call.turns {
        if let Some(first) = t.first_agent_audio {
            report.answered_turns += 1;
            report
                .turn_latency_ms
                .push((first.as_secs_f64() - t.caller_end.as_secs_f64()) * 1_000.0);
        }
    }
    let underruns = call.frame_lateness_ms.iter().filter(|l| **l > 0.0).count();
    report.underruns += underruns;
    if call.max_tick_lateness_ms <= 20.0 {
        report.underruns_on_punctual_calls += underruns;
    }
    report.tick_lateness_ms.push(call.max_tick_lateness_ms);
    report.lateness_ms.extend(call.frame_lateness_ms);
}

/// The `p`-th percentile (0–100) of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied()
}

/// The report as text.
pub fn render(report: &LoadReport) -> String {
    let pct = |v: &[f64], p: f64| percentile(v, p).map_or("-".to_string(), |x| format!("{x:.1}"));
    let mut out = String::new();
    out.push_str(&format!(
        "calls started {}, sustained {}, errors {}, wall {:.1} s\n",
        report.started,
        report.sustained,
        report.errors.len(),
        report.wall.as_secs_f64()
    ));
    out.push_str(&format!(
        "turn latency (caller end of speech → first agent audio): p50 {} ms, p99 {} ms over {} turns\n",
        pct(&report.turn_latency_ms, 50.0),
        pct(&report.turn_latency_ms, 99.0),
        report.turn_latency_ms.len()
    ));
    out.push_str(&format!(
        "outbound lateness: p99 {} ms, max {} ms over {} messages; underruns (late) {}; off-spec frames {}\n",
        pct(&report.lateness_ms, 99.0),
        pct(&report.lateness_ms, 100.0),
        report.lateness_ms.len(),
        report.underruns,
        report.off_spec
    ));
    out.push_str(&format!(
        "agent audio received: {:.1} s over {} answered caller turns\n",
        report.agent_samples as f64 / 8_000.0,
        report.answered_turns
    ));
    out.push_str(&format!(
        "simulator tick lateness (worst per call): p50 {} ms, p99 {} ms; underruns on calls whose ticks stayed within 20 ms: {}\n",
        pct(&report.tick_lateness_ms, 50.0),
        pct(&report.tick_lateness_ms, 99.0),
        report.underruns_on_punctual_calls
    ));
    if let Some(cpu) = report.server_cpu_secs {
        out.push_str(&format!(
            "server CPU {:.1} s ({:.0}% of one core over the run)\n",
            cpu,
            100.0 * cpu / report.wall.as_secs_f64().max(0.001)
        ));
    }
    if let (Some((before, after)), Some(peak)) = (report.server_rss, report.server_peak_rss) {
        let per_call = peak.saturating_sub(before) / report.started.max(1) as u64;
        out.push_str(&format!(
            "server RSS {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB: ≈{} KiB per live call\n",
            before as f64 / 1_048_576.0,
            after as f64 / 1_048_576.0,
            peak as f64 / 1_048_576.0,
            per_call / 1_024
        ));
    }
    for e in report.errors.iter().take(5) {
        out.push_str(&format!("  error: {e}\n"));
    }
    out
}

/// CPU seconds, RSS and peak RSS of a process, from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcStats {
    cpu_secs: f64,
    rss: u64,
    peak_rss: u64,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = 100.0; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1_024)
    };
    Some(ProcStats {
        cpu_secs: (utime + stime) / ticks,
        rss: kb("VmRSS:")?,
        peak_rss: kb("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(51.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn reads_its_own_process_stats() {
        let stats = proc_stats(std::process::id()).expect("/proc is readable");
        assert!(stats.rss > 0 && stats.peak_rss >= stats.rss);
    }
}
