//! The `canopy` binary: parse the command line, run one command, map the
//! outcome to an exit code. The commands live in `canopy::cli`, the run
//! sequence in `canopy::ops`.

/// mimalloc underneath: rendering allocates millions of small JSON nodes,
/// and with the system allocator a 1,000-cluster render took 922 ms against
/// 554 ms with mimalloc (`cargo bench --bench pipeline`, same machine, same
/// run shape). `canopy::alloc` adds the per-render memory allowance.
#[global_allocator]
static GLOBAL: canopy::alloc::Canopy = canopy::alloc::Canopy;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = canopy::cli::args::Cli::parse();
    match canopy::cli::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("{}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
