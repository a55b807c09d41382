#!/usr/bin/env bash
# Installs the Kafka-protocol broker the Kafka tests run against: Tansu
# (crates.io `tansu`, Apache Kafka compatible, written in Rust), built with
# its SQLite storage only (feature `libsql`: data kept across a broker
# restart), into a cache outside the clone so it is built once per machine:
#   ${AGENT_AUDIT_CACHE:-$HOME/.cache/agent-audit}/tansu/bin/tansu
# Built without optimisation: a test broker needs no speed, and the build
# takes about 6.5 min on 2 idle cores instead of 20-30 min (the tests run
# as fast either way). A cached binary of the same version, features and
# profile is reused. Prints the binary's path.
set -euo pipefail

version=0.6.0
features=libsql
cache="${AGENT_AUDIT_CACHE:-$HOME/.cache/agent-audit}/tansu"
bin="$cache/bin/tansu"
stamp="$cache/.agent-audit-stamp"
want="tansu $version --no-default-features --features $features opt-level=0"

if [ -x "$bin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "$bin"
  exit 0
fi

echo "building the Kafka test broker ($want) into $cache" >&2
start=$(date +%s)
mkdir -p "$cache"
# --locked: the crate's own lock file; its build tree is temporary.
CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_DEBUG=false \
  cargo install tansu --version "$version" --locked --force \
  --no-default-features --features "$features" --root "$cache" >&2
printf '%s' "$want" >"$stamp"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
