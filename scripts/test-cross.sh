#!/usr/bin/env bash
# Cross-language tests (tests/cross_language): a log written from Python
# and one written from Node are each verified by Python, Node and the
# `agent-audit` binary, which must print the same trace document and
# verifier report, agree on tampering, and find records that validate
# against the v1 JSON Schema. Runs after scripts/test-python.sh (.venv with
# the native module) and scripts/test-node.sh (node/ built). Builds the
# binary (debug) itself. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }

py=.venv/bin/python
if [ ! -x "$py" ] || ! "$py" -c "import agent_audit._native" 2>/dev/null; then
  echo "scripts/test-cross.sh: run scripts/test-python.sh first (.venv with agent_audit)" >&2
  exit 1
fi
if [ ! -f node/dist/cjs/index.js ] || ! compgen -G "node/src/*.node" >/dev/null; then
  echo "scripts/test-cross.sh: run scripts/test-node.sh first (node/ built)" >&2
  exit 1
fi
# The schema test's validator (also in scripts/test-python.sh's tools).
if ! "$py" -c "import jsonschema, rfc3339_validator" 2>/dev/null; then
  step "installing jsonschema"
  "$py" -m pip install -q jsonschema rfc3339-validator
fi

step "cargo build -p agent-audit-cli"
cargo build --locked -q -p agent-audit-cli
target_dir=$(cargo metadata --format-version 1 --no-deps |
  "$py" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export AGENT_AUDIT_BIN="$target_dir/debug/agent-audit"

step "pytest tests/cross_language"
"$py" -m pytest -q tests/cross_language
