//! The `agent-audit` binary; the commands live in the library.

use std::process::ExitCode;

// The allocator both language bindings use: `ingest` and `collect` feed a
// writer thread that frees what the reading thread allocated, which
// glibc's allocator serves through its arena lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(agent_audit_cli::run_cli(std::env::args_os()))
}
