//! `video-server`: parse the command line (including the original's `-conf x` style), load the
//! configuration, run until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use video_server::app::{self, telemetry};
use video_server::config::{Config, StorageKind};

#[derive(Debug, Parser)]
#[command(
    name = "video-server",
    version,
    about = "Re-streaming gateway for IP cameras"
)]
struct Cli {
    /// Configuration file, TOML or JSON by extension.
    #[arg(long, global = true, default_value = "conf.toml")]
    conf: PathBuf,
    /// Accepted for compatibility with the original; no effect.
    #[arg(long, global = true, hide = true)]
    cpuprofile: Option<String>,
    /// Accepted for compatibility with the original; no effect.
    #[arg(long, global = true, hide = true)]
    memprofile: Option<String>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the configuration and print it resolved, credentials masked.
    Check,
}

/// Rewrites the Go flag package's single-dash long options (`-conf x`, `-conf=x`) to clap's.
fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    const LONG: [&str; 4] = ["conf", "cpuprofile", "memprofile", "log-format"];
    args.into_iter()
        .map(|a| {
            let bare = a.strip_prefix('-').filter(|r| !r.starts_with('-'));
            match bare {
                Some(rest)
                    if LONG
                        .iter()
                        .any(|l| rest == *l || rest.starts_with(&format!("{l}="))) =>
                {
                    format!("-{a}")
                }
                _ => a,
            }
        })
        .collect()
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    let config = match Config::load(&cli.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let verbose = config
        .streams
        .iter()
        .map(|s| s.verbose.as_str())
        .chain([config.api.verbose.as_str(), config.video.verbose.as_str()])
        .map(|v| {
            if v.chars().all(|c| c.eq_ignore_ascii_case(&'v')) {
                v.len()
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0);
    telemetry::init(cli.log_format, telemetry::default_filter(verbose));
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if matches!(cli.command, Some(Command::Check)) {
        match serde_json::to_string_pretty(&config) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        println!("configuration OK: {} stream(s)", config.streams.len());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> std::io::Result<()> {
    let (video, api) = app::bind(&config).await?;
    let video_addr = video.local_addr()?;
    let api_addr = api.as_ref().map(|l| l.local_addr()).transpose()?;
    print_banner(&config, video_addr, api_addr);
    let state = app::App::new(config);
    let token = state.stop.clone();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        token.cancel();
    });
    app::serve(state, video, api).await
}

/// One line per listener and stream, so an operator sees at a glance what runs where.
fn print_banner(config: &Config, video: std::net::SocketAddr, api: Option<std::net::SocketAddr>) {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), conf = %config.path.display(), "video-server starting");
    tracing::info!("video server (MSE websocket, web page): http://{video}/");
    match api {
        Some(a) => tracing::info!(
            "API server: http://{a}/status  metrics http://{a}/metrics  health http://{a}/health"
        ),
        None => tracing::info!("API server: disabled ([api] enabled = false)"),
    }
    for s in &config.streams {
        let outs = s.outputs.names();
        let hls = if s.outputs.hls {
            format!("  http://{video}/hls/{}.m3u8", s.id)
        } else {
            String::new()
        };
        let archive = match &s.archive {
            Some(a) if a.recording => match a.kind {
                StorageKind::Filesystem => format!("  records to {}", a.directory),
                StorageKind::Minio => format!(
                    "  records to s3://{}/{} (spool {})",
                    a.minio_bucket,
                    a.minio_path.trim_matches('/'),
                    a.directory
                ),
            },
            _ => String::new(),
        };
        tracing::info!(
            "stream {}  {}  outputs [{}]  ws://{video}/ws/live?stream_id={}{hls}{archive}",
            s.id,
            s.source.display_url(),
            outs.join(","),
            s.id
        );
    }
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per core), and each
/// arena keeps what was freed in it. The gateway's file I/O runs on tokio's blocking threads
/// (archive writes, HLS spill files, reads for clients), so with every output on, memory freed
/// there piled up per arena: 5.7 MB of RSS per camera at 50 cameras against 1.9 MB with two
/// arenas (docs/benchmarks.md, "Memory"). glibc reads the limit from the environment before
/// `main`, so the process starts itself again (same PID, `exec`) with `MALLOC_ARENA_MAX=2`,
/// unless the variable is set already; if that fails it runs on as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("MALLOC_ARENA_MAX", "2")
        .exec();
    eprintln!("note: could not restart with MALLOC_ARENA_MAX=2 ({err}); running on");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_flags_are_accepted() {
        let a = normalize_args(
            ["vs", "-conf", "x.toml", "-cpuprofile=p", "--conf=y", "-h"].map(String::from),
        );
        assert_eq!(
            a,
            vec!["vs", "--conf", "x.toml", "--cpuprofile=p", "--conf=y", "-h"]
        );
        let cli = Cli::try_parse_from(normalize_args(
            ["vs", "-conf=/etc/v.s/conf.toml", "-memprofile", "m"].map(String::from),
        ))
        .expect("parses");
        assert_eq!(cli.conf, PathBuf::from("/etc/v.s/conf.toml"));
        let cli = Cli::try_parse_from(["vs", "check", "--conf", "c.json"]).expect("parses");
        assert!(matches!(cli.command, Some(Command::Check)));
    }
}
