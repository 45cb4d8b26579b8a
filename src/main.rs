//! The `lockbridge` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use lockbridge::cli::Cli;

/// The daemon allocates many small, short-lived buffers per request (HTTP, BER, JSON);
/// glibc's allocator spent about a sixth of its CPU time on them under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    lockbridge::cli::main(Cli::parse())
}
