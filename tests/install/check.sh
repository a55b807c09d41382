#!/usr/bin/env bash
# Installs the packages the way a user does and uses them from outside the
# checkout: `pip install ./python` (with its extras) into a fresh
# virtualenv, and `npm install <checkout>/node` into a fresh npm project.
# Each writes a log through the public API, verifies it, and runs the
# command line (`agent-audit`, `python -m agent_audit`, `npx agent-audit`).
# Run by scripts/test.sh after the per-language tests (their build caches
# make the installs quick).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
step() { printf '\n--> install: %s\n' "$*"; }

step "pip install ./python[langchain,openai] into a fresh virtualenv"
"${PYTHON:-python3}" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip install -q "$root/python[langchain,openai]"
cd "$work"
"$py" - <<'PY'
import importlib.metadata as md
import os
import agent_audit as audit
import agent_audit.langchain  # the extras are importable
import agent_audit.openai

assert os.path.realpath(audit.__file__).startswith(os.path.realpath(os.getcwd())), audit.__file__
for dist in ("langchain-core", "openai"):
    md.version(dist)
audit.init(dir="py-log", tenant_id="acme", agent_id="installed")

@audit.tool(name="orders.lookup")
def lookup(order_id: str) -> dict:
    return {"id": order_id, "status": "shipped"}

with audit.trace("install_check", user_id="u_1") as t:
    lookup("o-1")
assert audit.shutdown(10)
report = audit.verify("py-log")
assert not report["tampered"] and report["exit_code"] == 0, report
steps = audit.show("py-log", t.trace_id)["steps"]
assert [s["kind"] for s in steps] == ["tool_call"], steps
open("trace-id", "w").write(t.trace_id)
print("python: wrote and verified", report["records"], "records")
PY
"$work/venv/bin/agent-audit" verify py-log
"$py" -m agent_audit show py-log "$(cat trace-id)" --json >/dev/null

step "npm install <checkout>/node into a fresh project"
mkdir "$work/app" && cd "$work/app"
npm init -y >/dev/null
npm install --no-audit --no-fund "$root/node" >/dev/null
cat > check.cjs <<'JS'
const audit = require('agent-audit');
(async () => {
  audit.init({ dir: 'node-log', tenantId: 'acme', agentId: 'installed' });
  const lookup = audit.tool('orders.lookup', async (orderId) => ({ id: orderId }));
  let traceId;
  await audit.trace('install_check', { userId: 'u_1' }, async (t) => { traceId = t.traceId; await lookup('o-1'); });
  if (!(await audit.shutdown())) throw new Error('shutdown timed out');
  const report = await audit.verify('node-log');
  if (report.tampered || report.exitCode !== 0) throw new Error(JSON.stringify(report.findings));
  require('fs').writeFileSync('trace-id', traceId);
  console.log('node (CommonJS): wrote and verified', report.records, 'records');
})().catch((e) => { console.error(e); process.exit(1); });
JS
node check.cjs
cat > check.mjs <<'JS'
import * as audit from 'agent-audit';
import { AuditCallbackHandler } from 'agent-audit/langchain';
import { auditMiddleware, auditTools } from 'agent-audit/ai-sdk';
if (typeof AuditCallbackHandler !== 'function' || typeof auditMiddleware !== 'function' || typeof auditTools !== 'function') {
  throw new Error('subpath exports missing');
}
const report = await audit.verify('node-log');
if (report.tampered) throw new Error('tampered');
console.log('node (ESM): the package and its subpaths import');
JS
node check.mjs
npx --no-install agent-audit verify node-log
npx --no-install agent-audit show node-log "$(cat trace-id)" --json >/dev/null
# Each language reads the other's log.
"$py" -m agent_audit verify node-log >/dev/null
npx --no-install agent-audit verify ../py-log >/dev/null
echo "install checks passed"
