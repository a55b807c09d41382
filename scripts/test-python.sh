#!/usr/bin/env bash
# Python tests: builds the native module (agent_audit._native, release
# build) into .venv with maturin, then runs ruff, mypy, stubtest and pytest.
# Needs Python >= 3.9 and network access to PyPI the first time only;
# quick when nothing changed (the build is skipped when its inputs are
# unchanged). Honours CARGO_TARGET_DIR and PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n--> %s\n' "$*"; }

# shellcheck source=scripts/python-env.sh
. scripts/python-env.sh

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
