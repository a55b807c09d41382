#!/usr/bin/env bash
# Sourced by scripts/test-python.sh and scripts/demo.sh from the repository
# root: creates .venv (Python >= 3.9; PyPI the first time only), installs
# the tools and integrations the tests and examples use, and builds the
# native module (agent_audit._native, release) into it with maturin when
# its Rust inputs changed. Honours CARGO_TARGET_DIR and PYTHON. Defines
# $py, the virtualenv's python.

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
  find bindings/python crates/agent-audit crates/agent-audit-cli crates/agent-audit-ship \
    -path '*/tests' -prune -o -path '*/benches' -prune -o \
    -type f \( -name '*.rs' -o -name '*.toml' \) -print0 |
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

