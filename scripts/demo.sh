#!/usr/bin/env bash
# The main job: an example agent task writes a signed audit log, the log is
# verified, and the task is shown as one timeline.
#   scripts/demo.sh [LOG_DIR]   (default ./audit-demo, recreated each run)
set -euo pipefail
cd "$(dirname "$0")/.."
log="${1:-./audit-demo}"
rm -rf "$log"

# Two builds: with --example, cargo would build only examples.
cargo build --release --locked -q -p agent-audit-cli
cargo build --release --locked -q -p agent-audit --example support_agent
bin=target/release/agent-audit

echo "==> the agent runs a support task (LLM calls, tools, a sub-agent, a human approval)"
trace=$(target/release/examples/support_agent "$log")
echo "    trace $trace written to $log"

echo "==> agent-audit verify $log"
"$bin" verify "$log"

echo "==> agent-audit traces $log"
"$bin" traces "$log"

echo "==> agent-audit show $log $trace"
"$bin" show "$log" "$trace"

echo "==> agent-audit show $log $trace --json"
"$bin" show "$log" "$trace" --json
