//! The `tower-cdn` edge server: `tower-cdn --origin http://127.0.0.1:9000`,
//! or with no origin, in front of a built-in demo site.

use std::process::ExitCode;

use clap::Parser;
use tower_cdn::server::{self, Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let printed = match cli.command.take() {
        Some(Command::Sign(args)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Some(args.sign(now))
        }
        Some(Command::PublicKey(args)) => Some(args.entry()),
        None => None,
    };
    if let Some(printed) = printed {
        return match printed {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("tower-cdn: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // Logs go to stderr so that stdout carries only the startup line, for scripts. The
    // per-request access log (target `tower_cdn::access`) is off unless asked for, e.g.
    // `RUST_LOG=info,tower_cdn::access=info`: formatting it costs a third of a hit's CPU.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_cdn::access=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.into_config() {
        Ok(config) => server::run(config).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tower-cdn: {err}");
            ExitCode::FAILURE
        }
    }
}
