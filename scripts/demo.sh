#!/usr/bin/env bash
# The main job: example agents write one signed audit log, the log is
# verified, and a task is shown as one timeline.
#   scripts/demo.sh [LOG_DIR]   (default ./audit-demo, recreated each run)
# Sets up what it needs: the `agent-audit` command (cargo), and .venv with
# the Python package and LangChain (scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
log="${1:-./audit-demo}"
rm -rf "$log"
step() { printf '\n==> %s\n' "$*"; }

step "building the agent-audit command and the Rust example"
# Two builds: with --example, cargo would build only examples.
cargo build --release --locked -q -p agent-audit-cli
cargo build --release --locked -q -p agent-audit --example support_agent
bin=target/release/agent-audit

step "setting up .venv (the Python package, LangChain)"
# shellcheck source=scripts/python-env.sh
. scripts/python-env.sh

mkdir -p "$log/keys"
key="$log/keys/signing.pem"
step "agent-audit keygen --out $key"
"$bin" keygen --out "$key"

step "a LangChain agent (Python) handles a refund request: model calls, tools (one fails), a retriever"
lc_trace=$("$py" examples/python/langchain_agent.py "$log" --key "$key")
echo "    trace $lc_trace"

step "a plain Python agent: tools, a sub-agent, a human approval"
py_trace=$("$py" examples/python/plain_agent.py "$log" --key "$key")
echo "    trace $py_trace"

step "the same support task from Rust: LLM calls, tools, a sub-agent, a human approval"
rs_trace=$(target/release/examples/support_agent "$log" "$key")
echo "    trace $rs_trace"

step "agent-audit verify $log --key ${key%.pem}.pub.pem"
"$bin" verify "$log" --key "${key%.pem}.pub.pem"

step "agent-audit traces $log"
"$bin" traces "$log"

step "agent-audit show $log $lc_trace"
"$bin" show "$log" "$lc_trace"

step "agent-audit show $log $lc_trace --json"
"$bin" show "$log" "$lc_trace" --json
