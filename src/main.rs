//! The `switchboard` binary: see `switchboard --help`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    switchboard::cli::run().await
}
