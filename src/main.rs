//! `versori-operator`: `run` reconciles the custom resources against Versori; `crds` prints the CRDs.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use versori_operator::config::RunArgs;
use versori_operator::{operator, telemetry};

#[derive(Parser)]
#[command(
    name = "versori-operator",
    version,
    about = "Runs Versori integrations from Kubernetes resources"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile System, ProjectSystem and Connection resources against Versori.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Print the Markdown reference of the custom resources' fields (docs/reference.md).
    Reference,
}

fn main() -> ExitCode {
    versori_operator::memory::limit_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match versori_operator::resources::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("versori-operator: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(*args),
        Command::Reference => {
            print!("{}", versori_operator::reference::markdown());
            ExitCode::SUCCESS
        }
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("versori-operator: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let trimmer = versori_operator::memory::spawn_trimmer();
        let result = operator::run(config).await;
        trimmer.abort();
        result
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => {
            tracing::info!("versori-operator stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = %error, "versori-operator stopped");
            ExitCode::FAILURE
        }
    }
}
