//! Logging: a `tracing` subscriber writing JSON (default) or text lines to stderr.
//!
//! The level filter comes from `RUST_LOG` (e.g. `info,versori_operator=debug,kube=warn`); when it
//! is unset or invalid, [`DEFAULT_FILTER`] applies.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter used when `RUST_LOG` is unset or invalid.
pub const DEFAULT_FILTER: &str = "info,versori_operator=info";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: the event's fields flattened at the top level, plus the current
    /// span (`span`) with its fields.
    #[default]
    Json,
    /// Human-readable lines (ANSI colours only when stderr is a terminal).
    Text,
}

/// Installs the global subscriber. Calling it again (e.g. from tests) leaves the first one in
/// place.
pub fn init(format: LogFormat) {
    let (filter, rejected) = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(DEFAULT_FILTER), Some(error.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    };

    let installed = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };

    if installed.is_ok()
        && let Some(error) = rejected
    {
        tracing::warn!(%error, default = DEFAULT_FILTER, "RUST_LOG is invalid; using the default filter");
    }
}
