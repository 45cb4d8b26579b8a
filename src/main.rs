//! The `lockbridge` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use lockbridge::cli::{Cli, Command};

/// The daemon allocates many small, short-lived buffers per request (HTTP, BER, JSON);
/// glibc's allocator spent about a sixth of its CPU time on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // A one-shot sweep is one stream consumed in order: a single thread avoids waking
    // another core for every entry. The daemon serves requests on all cores.
    let runtime = match cli.command {
        Command::Sweep { .. } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    Ok(runtime.block_on(lockbridge::cli::run(cli)))
}
