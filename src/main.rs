//! The `moongate` command: `run`, `check`, `version`, and `echo` (a small backend for demos,
//! tests and benchmarks).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use moongate::cli;

#[global_allocator]
static GLOBAL: moongate::alloc::MiAlloc = moongate::alloc::MiAlloc;

#[derive(Parser)]
#[command(
    name = "moongate",
    version,
    about = "An API gateway that runs Apache APISIX plugins"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Node configuration file, relative to the prefix.
        #[arg(short = 'c', long = "config", default_value = "conf/config.yaml")]
        config: PathBuf,
        /// Prefix directory that relative paths (conf/, logs/) start from.
        #[arg(short = 'p', long = "prefix", default_value = ".")]
        prefix: PathBuf,
        /// Read routes, clusters and listeners from this Envoy v3 bootstrap file (the envoy
        /// provider) instead of the node config's provider.
        #[arg(long = "envoy")]
        envoy: Option<PathBuf>,
    },
    /// Validate the configuration and exit: non-zero with every error found.
    Check {
        #[arg(short = 'c', long = "config", default_value = "conf/config.yaml")]
        config: PathBuf,
        #[arg(short = 'p', long = "prefix", default_value = ".")]
        prefix: PathBuf,
        /// Check this Envoy v3 bootstrap file instead of the node config's provider.
        #[arg(long = "envoy")]
        envoy: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Run Test::Nginx-style `.t` files (moongate's own or APISIX's) against real gateways.
    Test(cli::TestArgs),
    /// Serve a small echo backend (answers with the request it received, as JSON).
    Echo {
        #[arg(long, default_value = "127.0.0.1:1980")]
        listen: std::net::SocketAddr,
        /// Name reported in `X-Echo-Server` and in the body.
        #[arg(long, default_value = "echo")]
        name: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run {
            config,
            prefix,
            envoy,
        } => cli::run(&prefix, &config, envoy.as_deref()),
        Command::Check {
            config,
            prefix,
            envoy,
        } => cli::check(&prefix, &config, envoy.as_deref()),
        Command::Version => {
            println!("moongate {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Echo { listen, name } => cli::echo(listen, name),
        Command::Test(t) => match cli::test(t) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moongate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
