//! The `agent-audit` binary; the commands live in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(agent_audit_cli::run_cli(std::env::args_os()))
}
