//! `versori-operator`: `run` reconciles the custom resources against Versori; `crds` prints the CRDs.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "versori-operator", version, about = "Runs Versori integrations from Kubernetes resources")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match versori_operator::resources::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("versori-operator: cannot render the CRDs: {error}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
