#!/usr/bin/env bash
# Python tests: builds the native module (agent_audit._native, release
# build) into .venv with maturin, then runs ruff, mypy, stubtest and pytest.
# Needs Python >= 3.9 and network access to PyPI the first time only;
# quick when nothing changed (the build is skipped when its inputs are
# unchanged). Honours CARGO_TARGET_DIR and PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }

venv=.venv
py="$venv/bin/python"
if [ ! -x "$py" ]; then
  step "creating $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi

tools="maturin>=1.9,<2 pytest>=8 pytest-timeout pytest-asyncio>=0.23 mypy>=1.11 ruff opentelemetry-sdk pydantic>=2 numpy langchain-core>=1.0 langchain>=1.5 langgraph>=1.0 openai>=1.66 langfuse langsmith jsonschema rfc3339-validator"
stamp="$venv/.agent-audit-tools"
if [ "$(cat "$stamp" 2>/dev/null)" != "$tools" ]; then
  step "installing test tools"
  "$py" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$py" -m pip install -q $tools
  printf '%s' "$tools" >"$stamp"
fi

# Rebuild only when the Rust sources, manifests or lock file changed.
inputs_hash() {
  find bindings/python crates/agent-audit/src crates/agent-audit-cli/src \
    -type f \( -name '*.rs' -o -name 'Cargo.toml' \) -print0 |
    sort -z | xargs -0 cat Cargo.toml Cargo.lock python/pyproject.toml | sha256sum | cut -d' ' -f1
}
built="$venv/.agent-audit-native"
if [ "$(cat "$built" 2>/dev/null)" != "$(inputs_hash)" ] ||
  ! compgen -G "python/agent_audit/_native*.so" >/dev/null ||
  ! "$py" -c "import agent_audit._native" 2>/dev/null; then
  step "building agent_audit._native (maturin develop --release)"
  (cd python && VIRTUAL_ENV="$PWD/../$venv" PATH="$PWD/../$venv/bin:$PATH" \
    maturin develop --release --quiet)
  # After the build: cargo may have updated Cargo.lock.
  inputs_hash >"$built"
fi

cd python
step "ruff"
"../$py" -m ruff check .
"../$py" -m ruff format --check .
step "mypy"
"../$py" -m mypy
step "stubtest"
"../$py" -m mypy.stubtest agent_audit._native
step "pytest"
"../$py" -m pytest -q
