// examples/node, run as its README says: compiled with tsc against the
// installed package (a link to this package, as `npm install` makes it),
// then run; its log must verify, link up and hold the whole task.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as audit from 'agent-audit';
import { checkLog, tempLogDir, PACKAGE_DIR, type Rec } from './helpers';

const EXAMPLE = path.resolve(PACKAGE_DIR, '..', 'examples', 'node');

/** A copy of the example with node_modules as `npm install` would leave it. */
function installExample(): string {
  const dir = tempLogDir('example-app');
  fs.cpSync(path.join(EXAMPLE, 'src'), path.join(dir, 'src'), { recursive: true });
  fs.copyFileSync(path.join(EXAMPLE, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  fs.mkdirSync(path.join(dir, 'node_modules', '@types'), { recursive: true });
  fs.symlinkSync(PACKAGE_DIR, path.join(dir, 'node_modules', 'agent-audit'), 'dir');
  fs.symlinkSync(path.join(PACKAGE_DIR, 'node_modules', '@types', 'node'), path.join(dir, 'node_modules', '@types', 'node'), 'dir');
  return dir;
}

test('examples/node: the support agent compiles, runs and writes a verified log of the whole task', async () => {
  const app = installExample();
  const tsc = require.resolve('typescript/bin/tsc', { paths: [PACKAGE_DIR] });
  const build = spawnSync(process.execPath, [tsc, '-p', path.join(app, 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(build.status, 0, build.stdout + build.stderr);
  const log = tempLogDir('example-log');
  const run = spawnSync(process.execPath, [path.join(app, 'dist', 'support-agent.js'), log], { encoding: 'utf8', env: { ...process.env, AGENT_AUDIT_SIGNING_KEY: '' } });
  assert.equal(run.status, 0, run.stderr);
  const traceId = run.stdout.trim();
  assert.match(traceId, /^[0-9a-f]{32}$/);
  assert.match(run.stderr, /refunded \(re_a-17_01\); \d+ steps, \d+ records, verified/);

  const recs = await checkLog(log);
  const by = (kind: string) => recs.filter((r) => r.kind === kind);
  for (const r of recs) assert.equal(r.trace_id, traceId);
  const [start] = by('trace_start');
  const [end] = by('trace_end');
  assert.equal(start!.task_kind, 'customer_support_resolution');
  assert.deepEqual(start!.principal, { tenant_id: 'acme', agent_id: 'support-agent', user_id: 'u_abc', session_id: 's_77' });
  assert.equal(end!.outcome, 'completed');
  assert.ok(end!.risk.flags.includes('refund_issued'));
  assert.ok(end!.risk.flags.includes('moves_money'));

  // Two model calls of the agent and one of the sub-agent.
  const llm = by('llm_call');
  assert.equal(llm.length, 3);
  for (const r of llm) {
    assert.deepEqual([r.model.name, r.model.provider, r.model.version], ['claude-opus-4', 'anthropic', 'claude-opus-4-20260301']);
    assert.ok(r.input_tokens > 0 && r.output_tokens > 0);
  }
  assert.deepEqual(llm.map((r) => r.tool_calls_requested), [['crm.lookup_customer', 'orders.get'], ['payments.refund', 'email.send'], undefined]);

  // Tools: the order service timed out once and the retry succeeded.
  const tools = by('tool_call');
  const tool = (n: string) => tools.filter((r) => r.tool.name === n);
  assert.deepEqual(tool('orders.get').map((r) => r.result_status), ['timeout', 'ok']);
  assert.equal(tool('orders.get')[0]!.error_type, 'TimeoutError');
  assert.equal(tool('payments.refund')[0]!.tool.version, '3.0.0');
  assert.deepEqual(tool('payments.refund')[0]!.permissions_used, ['payments:refund']);
  // The customer's e-mail address is redacted in the stored arguments; the hash is of the real ones.
  const email = tool('email.send')[0]!;
  assert.equal(email.args_redacted, true);
  assert.ok(!JSON.stringify(email.payload.data).includes('dana.reyes@example.com'));
  assert.match(email.args_hash, /^sha256:[0-9a-f]{64}$/);

  // The sub-agent: its steps nest under the spawn and act as fraud-checker.
  const [spawn] = by('agent_spawn');
  assert.equal(spawn!.child_agent_id, 'fraud-checker');
  assert.equal(spawn!.parent_span_id, start!.span_id);
  const inside = recs.filter((r) => r.parent_span_id === spawn!.span_id);
  assert.deepEqual(inside.map((r) => r.kind).sort(), ['decision', 'llm_call', 'tool_call']);
  for (const r of inside) assert.equal(r.principal.agent_id, 'fraud-checker');

  // The escalation and the person who approved it, before the refund ran.
  const escalation = by('decision').find((r) => r.decision === 'escalate_to_human')!;
  const [review] = by('human_review');
  assert.equal(review!.decision, 'approved');
  assert.equal(review!.reviewer, 'alice@acme.example');
  assert.equal(review!.subject_span_id, escalation.span_id);
  assert.equal(review!.rule_id, 'refund_over_200_eur');
  assert.ok(review!.seq < tool('payments.refund')[0]!.seq);
  assert.equal(by('guardrail')[0]!.guardrails[0].verdict, 'pass');
  assert.equal(by('memory')[0]!.key, 'cus_881');

  const doc = await audit.showTrace(log, traceId) as Rec;
  assert.equal(doc.outcome, 'completed');
  assert.ok(doc.steps.length >= 17, `${doc.steps.length} steps`);
});
