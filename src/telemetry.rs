//! Tracing subscriber setup: human-readable or JSON lines on stderr.

use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level so a developer can turn on one module quickly. Calling
/// it twice (tests, `demo` inside one process) is harmless.
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // PostgreSQL notices ("relation already exists, skipping") reach us
    // through sqlx at INFO, and llama.cpp describes every model load at
    // INFO: noise unless asked for.
    let mut filter = filter;
    for (name, directive) in [("sqlx", "sqlx=warn"), ("llama", "llama-cpp-2=warn")] {
        if !filter.to_string().contains(name) {
            if let Ok(directive) = directive.parse() {
                filter = filter.add_directive(directive);
            }
        }
    }
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Human => builder.with_target(false).compact().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
