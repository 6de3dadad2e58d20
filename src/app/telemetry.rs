//! Logging setup: one place, text or JSON lines on stderr, filter from `RUST_LOG` (default from
//! the config's `verbose` levels), and a panic hook that logs through tracing.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The default filter for the most verbose `verbose` value in the config (`v`, `vv`, `vvv`).
pub fn default_filter(max_verbose: usize) -> &'static str {
    match max_verbose {
        0 | 1 => "info,retina=warn",
        2 => "info,video_server=debug,retina=info",
        _ => "debug,video_server=trace",
    }
}

/// Installs the global subscriber; later calls do nothing.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(%info, "panic");
    }));
}
