#!/usr/bin/env bash
# The Node package (node/) from a fresh clone: install its npm dependencies
# from package-lock.json, build the native module (napi build --release of
# bindings/node, incremental) and the TypeScript, typecheck (tsc --noEmit),
# then run node's test runner on node/test. Quick when already set up.
# Honours CARGO_TARGET_DIR; without it cargo uses the workspace's target/.
set -euo pipefail
cd "$(dirname "$0")/../node"

step() { printf '\n==> node: %s\n' "$*"; }

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm install (package-lock.json)"
  # --ignore-scripts: the package's own install script is the build below.
  # Not `npm ci`: npm leaves platform-specific optional packages of
  # @napi-rs/cli out of the lock file and `ci` then refuses it.
  npm install --ignore-scripts --no-audit --no-fund
fi

step "build (native module, release; TypeScript)"
node scripts/build.cjs

step "tsc --noEmit"
npx --no-install tsc --noEmit -p tsconfig.json
npx --no-install tsc --noEmit -p tsconfig.test.json
# The tsconfigs skip library checks (the LangChain and AI SDK declarations
# do not check under node16 CommonJS); check the generated addon types alone.
npx --no-install tsc --noEmit --strict --skipLibCheck false --types node --lib ES2023 \
  --module node16 --moduleResolution node16 src/native.d.ts

step "node --test"
rm -rf build-test
npx --no-install tsc -p tsconfig.test.json
node --test --test-concurrency=1 build-test/test/*.test.js
