#!/usr/bin/env bash
# Runs every test of the project from a fresh clone: formatting, lints and
# the Rust tests, then each language's tests (scripts/test-*.sh), then the
# cross-language tests. Each part installs what it needs itself.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v prlimit >/dev/null 2>&1; then
  step "installing util-linux (prlimit, for the I/O fault test)"
  apt-get update -qq && apt-get install -y -qq util-linux >/dev/null
fi
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
  step "installing nats-server (JetStream broker, for the shipping tests)"
  apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
fi
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  step "installing make and a C compiler (librdkafka is built from source, for feature kafka)"
  apt-get update -qq && apt-get install -y -qq build-essential >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# Kafka is an opt-in feature (it builds librdkafka from source): lint and
# test it on its own, against a real Kafka-protocol broker (Tansu) built once
# into a cache outside the clone (about 6.5 min cold on 2 cores; later runs
# reuse it).
step "scripts/kafka-broker.sh (Kafka test broker, cached)"
AGENT_AUDIT_TANSU="$(bash scripts/kafka-broker.sh)"
export AGENT_AUDIT_TANSU

step "cargo clippy -D warnings, feature kafka"
cargo clippy -p agent-audit-ship -p agent-audit-cli \
  --features agent-audit-ship/kafka,agent-audit-cli/kafka --all-targets --locked -- -D warnings

step "cargo test, feature kafka (ship crate and CLI, real broker)"
cargo test -p agent-audit-ship --features kafka --locked --lib --test kafka
cargo test -p agent-audit-cli --features kafka --locked --test ship_kafka

for part in python node cross; do
  if [ -f "scripts/test-$part.sh" ]; then
    step "scripts/test-$part.sh"
    bash "scripts/test-$part.sh"
  fi
done

step "tests/install/check.sh (pip install ./python and npm install ./node, as a user does)"
bash tests/install/check.sh
