//! The `sockeye` binary: flags in, `sockeye_cli::execute` with stdout,
//! errors to stderr, and the documented exit code.

use std::io::{IsTerminal, Write};

use clap::Parser;
use sockeye_cli::{execute, exit, Cli, CliError};

fn main() {
    // Bad flags: clap prints usage and exits with 2 (exit::USAGE).
    let mut cli = Cli::parse();
    cli.terminal = std::io::stdout().is_terminal();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(exit::FAILED);
        }
    };
    let mut stdout = std::io::stdout().lock();
    let result = runtime.block_on(execute(cli, &mut stdout));
    match result {
        Ok(outcome) => {
            let code = outcome.exit_code();
            if code != 0 {
                let _ = stdout.flush();
                std::process::exit(code);
            }
        }
        // `sockeye watch | head`: the reader has what it wanted.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => {
            let _ = stdout.flush();
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
