//! `versori-emulator`: serves an in-memory Versori platform API for tests.
//!
//! ```text
//! versori-emulator --listen 127.0.0.1:0 --organisation ORG --token TOKEN [--seed FILE]
//! ```
//!
//! Prints `versori-emulator listening on http://ADDR` on stdout once bound, logs
//! to stderr, and stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use versori_emulator::{EmulatorConfig, Seed, serve};

#[derive(Debug, Parser)]
#[command(
    name = "versori-emulator",
    version,
    about = "An in-memory Versori platform API for tests"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "VERSORI_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The organisation ID served under /o/{org}.
    #[arg(long, env = "VERSORI_EMULATOR_ORGANISATION")]
    organisation: String,
    /// The token API requests must carry (Authorization: Bearer|JWT TOKEN).
    #[arg(long, env = "VERSORI_EMULATOR_TOKEN", hide_env_values = true)]
    token: String,
    /// A YAML file of projects and environments to start with.
    #[arg(long, env = "VERSORI_EMULATOR_SEED")]
    seed: Option<PathBuf>,
    /// Allow listening on a non-loopback address.
    #[arg(long, env = "VERSORI_EMULATOR_ALLOW_NON_LOOPBACK")]
    allow_non_loopback: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("versori-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !args.listen.ip().is_loopback() && !args.allow_non_loopback {
        return Err(format!(
            "refusing to listen on non-loopback address {} (pass --allow-non-loopback)",
            args.listen
        ));
    }
    if args.organisation.is_empty() || args.token.is_empty() {
        return Err("--organisation and --token must not be empty".to_owned());
    }
    let seed = match &args.seed {
        None => Seed::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read seed {}: {e}", path.display()))?;
            Seed::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "versori-emulator listening on http://{addr}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    let config = EmulatorConfig {
        organisation: args.organisation,
        token: args.token,
        seed,
    };
    serve(listener, config, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("versori-emulator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
