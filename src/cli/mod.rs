//! The command line: clap definitions, one file per subcommand, and the exit-code mapping.

pub mod catalog;
pub mod common;
pub mod deploy;
pub mod fleet_view;
pub mod journal;
pub mod nodes;
pub mod output;
pub mod ovh;
pub mod reinstall;
pub mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nodeup::driver::ProviderError;

/// nodeup: create a machine, then provision it over SSH.
#[derive(Debug, Parser)]
#[command(name = "nodeup", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); NODEUP_LOG=debug does the same.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one file of `cli/` each.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a node and provision it with a step file.
    Deploy(deploy::DeployArgs),
    /// Provision machines that exist already with a step file.
    Run(run::RunArgs),
    /// Create, list, reboot and destroy nodes.
    #[command(subcommand)]
    Nodes(nodes::NodesCommand),
    /// List the journal's runs, or one run in detail (orphans are marked).
    Journal(journal::JournalArgs),
    /// Destroy orphans: nodes whose deploy died without finishing (dry run without --yes).
    Cleanup(journal::CleanupArgs),
    /// Reinstall an OVH dedicated server with your own image, then provision it.
    Reinstall(Box<reinstall::ReinstallArgs>),
    /// OVH helpers: ask for a consumer key, list Public Cloud projects.
    #[command(subcommand)]
    Ovh(ovh::OvhCommand),
    /// List the providers.
    Providers {
        /// Print the list as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List a provider's images.
    Images(catalog::CatalogArgs),
    /// List a provider's sizes.
    Sizes(catalog::CatalogArgs),
    /// List a provider's locations.
    Locations(catalog::CatalogArgs),
}

/// What went wrong, sorted by exit code: 2 for bad input or configuration (nothing was created),
/// 1 for a failure while working.
#[derive(Debug)]
pub enum Failure {
    /// Bad input or configuration: exit code 2.
    Usage(anyhow::Error),
    /// A failure while working: exit code 1.
    Failed(anyhow::Error),
}

impl From<ProviderError> for Failure {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::InvalidRequest { .. }
            | ProviderError::InvalidCredentials { .. }
            | ProviderError::Requirement { .. }
            | ProviderError::NotFound { .. }
            | ProviderError::NotSupported { .. } => Failure::Usage(e.into()),
            ProviderError::Failed { .. } => Failure::Failed(e.into()),
        }
    }
}

impl Failure {
    /// The same failure, its message prefixed with where it comes from (a step file, say).
    pub fn context(self, context: String) -> Self {
        match self {
            Failure::Usage(e) => Failure::Usage(e.context(context)),
            Failure::Failed(e) => Failure::Failed(e.context(context)),
        }
    }

    /// Prints the whole cause chain on stderr and gives the exit code.
    pub fn report(self) -> ExitCode {
        let (error, code) = match self {
            Failure::Usage(e) => (e, 2),
            Failure::Failed(e) => (e, 1),
        };
        eprintln!("error: {error}");
        for cause in error.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        ExitCode::from(code)
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Deploy(args) => deploy::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Nodes(cmd) => nodes::run(cmd).await,
        Command::Ovh(cmd) => ovh::run(cmd).await,
        Command::Journal(args) => journal::list(args).await,
        Command::Cleanup(args) => journal::clean(args).await,
        Command::Reinstall(args) => reinstall::run(*args).await,
        Command::Providers { json } => {
            catalog::providers(json);
            Ok(())
        }
        Command::Images(args) => catalog::list(catalog::Catalog::Images, args).await,
        Command::Sizes(args) => catalog::list(catalog::Catalog::Sizes, args).await,
        Command::Locations(args) => catalog::list(catalog::Catalog::Locations, args).await,
    }
}
