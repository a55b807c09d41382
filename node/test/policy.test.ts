// Policy from TypeScript: a blocked tool never runs, approvals approve and
// deny (sync and async approvers, timeouts, no approver), a sequence rule
// spans the tools of one trace only, alerts reach their handler, and a bad
// policy file fails init with its line. Same policy file as the Python tests.
import { test, afterEach } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as audit from 'agent-audit';
import { closeAndCheck, tempLogDir, PACKAGE_DIR, type Rec } from './helpers';

const POLICY = path.resolve(PACKAGE_DIR, '..', 'tests', 'policy', 'flows.toml');

function open(label: string, extra: Partial<audit.InitOptions> = {}): string {
  const dir = tempLogDir(label);
  audit.init({ dir, tenantId: 'acme', agentId: 'agent-1', policy: POLICY, overflow: 'block', blockTimeoutMs: 120_000, ...extra });
  return dir;
}

afterEach(async () => {
  audit.setApprover(undefined, { timeoutMs: 30_000 });
  audit.onAlert(undefined);
  await audit.shutdown();
});

const steps = async (dir: string, traceId: string): Promise<Rec[]> => ((await audit.showTrace(dir, traceId)) as Rec).steps as Rec[];

test('a blocked tool never runs; the error carries the rule; the log shows the blocked step', async () => {
  const dir = open('block');
  const ran: string[] = [];
  const query = audit.tool('db.query', async (sql: string) => { ran.push(sql); return 'rows'; });
  const querySync = audit.tool('db.querySync', (sql: string) => { ran.push(sql); return 'rows'; });
  let traceId = '';
  let err: unknown;
  await audit.trace('cleanup', async (t) => {
    traceId = t.traceId;
    assert.equal(await query('SELECT 1'), 'rows');
    // An async tool rejects; it does not throw synchronously.
    const p = query('DROP TABLE orders');
    assert.ok(p instanceof Promise);
    await p.catch((e: unknown) => { err = e; });
    assert.throws(() => querySync('drop  table users'), audit.ToolBlockedError);
  });
  assert.deepEqual(ran, ['SELECT 1']);
  assert.ok(err instanceof audit.ToolBlockedError);
  assert.ok(err instanceof audit.AuditError);
  const e = err as audit.ToolBlockedError;
  assert.equal(e.code, 'ERR_AUDIT_TOOL_BLOCKED');
  assert.deepEqual([e.ruleId, e.tool, e.action, e.review], ['no_drop', 'db.query', 'block', undefined]);
  assert.match(e.message, /no_drop/);

  const recs = await closeAndCheck(dir);
  const s = await steps(dir, traceId);
  const tools = s.filter((x) => x.kind === 'tool_call');
  assert.deepEqual(tools.map((x) => x.result_status), ['ok', 'blocked', 'blocked']);
  assert.equal(tools[1]!.risk_score, 80);
  assert.ok(tools[1]!.risk_flags.includes('destructive_operation'));
  const policy = s.filter((x) => x.kind === 'policy');
  assert.deepEqual(policy.map((x) => x.rule_id), ['no_drop', 'no_drop']);
  assert.equal(policy[0]!.parent_step, tools[1]!.step_id);
  const blocked = recs.filter((r) => r.kind === 'tool_call' && r.result_status === 'blocked');
  assert.deepEqual(blocked[0]!.payload.data.args, { sql: 'DROP TABLE orders' });
  assert.equal(blocked[0]!.error_type, 'ToolBlockedError');
  assert.equal(blocked[0]!.policy_version, 'flows-1');
});

test('an approver approves one call and denies another; each answer is a human_review', async () => {
  const dir = open('approve');
  const asked: audit.ApprovalRequest[] = [];
  audit.setApprover((req) => {
    asked.push(req);
    const ok = (req.args as { orderId: string }).orderId === 'o-1';
    return { approved: ok, reviewer: 'lead@example.com', reason: `checked ${JSON.stringify(req.args)}` };
  });
  const refunded: string[] = [];
  const refund = audit.tool('payments.refund', (orderId: string, amount: number) => { refunded.push(orderId); return amount; });
  let traceId = '';
  await audit.trace('refunds', async (t) => {
    traceId = t.traceId;
    // A synchronous answer keeps a synchronous tool synchronous.
    assert.equal(refund('o-1', 20), 20);
    assert.throws(() => refund('o-2', 9000), (e: unknown) => e instanceof audit.ToolBlockedError && e.review === 'denied' && e.ruleId === 'refund_approval');
  });
  assert.deepEqual(refunded, ['o-1']);
  assert.deepEqual(asked.map((r) => r.args), [{ orderId: 'o-1', amount: 20 }, { orderId: 'o-2', amount: 9000 }]);
  assert.equal(asked[0]!.ruleId, 'refund_approval');
  assert.deepEqual(asked[0]!.flags, ['money_movement']);
  assert.equal(asked[0]!.traceId, traceId);

  const recs = await closeAndCheck(dir);
  const s = await steps(dir, traceId);
  assert.deepEqual(s.filter((x) => x.kind === 'human_review').map((x) => [x.decision, x.reviewer]), [
    ['approved', 'lead@example.com'],
    ['denied', 'lead@example.com'],
  ]);
  const tools = s.filter((x) => x.kind === 'tool_call');
  assert.deepEqual(tools.map((x) => x.result_status), ['ok', 'blocked']);
  const reviews = recs.filter((r) => r.kind === 'human_review');
  assert.deepEqual(reviews.map((r) => r.subject_span_id), tools.map((x) => x.span_id));
  assert.ok(reviews.every((r) => r.rule_id === 'refund_approval' && r.wait_ms >= 0));
});

test('an async approver: the loop keeps running while approvals are pending', async () => {
  const dir = open('async-approve');
  audit.setApprover(async (req) => {
    await new Promise((r) => setTimeout(r, 10));
    return (req.args as { amount: number }).amount < 100;
  });
  const refunded: number[] = [];
  const refund = audit.tool('payments.refund', async (orderId: string, amount: number) => { refunded.push(amount); return orderId; });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  let traceId = '';
  await audit.trace('async refunds', async (t) => {
    traceId = t.traceId;
    assert.equal(await refund('o-1', 50), 'o-1');
    await assert.rejects(refund('o-2', 500), audit.ToolBlockedError);
    await Promise.all([refund('o-3', 10), refund('o-4', 20)]);
  });
  clearInterval(timer);
  assert.ok(ticks > 0);
  assert.deepEqual(refunded.sort((a, b) => a - b), [10, 20, 50]);
  await closeAndCheck(dir);
  const decisions = (await steps(dir, traceId)).filter((x) => x.kind === 'human_review').map((x) => x.decision).sort();
  assert.deepEqual(decisions, ['approved', 'approved', 'approved', 'denied']);
});

test('no approver, a throwing one, a rejecting one and a timeout all deny', async () => {
  const dir = open('deny');
  const refund = audit.tool('payments.refund', async (orderId: string) => { throw new Error(`must not run: ${orderId}`); });
  const ids: string[] = [];
  const attempt = async (label: string) => {
    await audit.trace(label, async (t) => {
      ids.push(t.traceId);
      await assert.rejects(refund(label), audit.ToolBlockedError);
    });
  };
  await attempt('none');
  audit.setApprover(() => { throw new Error('approval service down'); });
  await attempt('throws');
  audit.setApprover(async () => { throw new TypeError('bad gateway'); });
  await attempt('rejects');
  audit.setApprover(() => new Promise<boolean>(() => undefined), { timeoutMs: 50 });
  const t0 = Date.now();
  await attempt('hangs');
  assert.ok(Date.now() - t0 < 5000);
  const recs = await closeAndCheck(dir);
  const got: string[] = [];
  for (const id of ids) got.push((await steps(dir, id)).find((x) => x.kind === 'human_review')!.decision);
  assert.deepEqual(got, ['denied', 'denied', 'denied', 'timeout']);
  const reasons = recs.filter((r) => r.kind === 'human_review').map((r) => r.payload.data.reason as string);
  assert.equal(reasons[0], 'no approver is registered');
  assert.match(reasons[1]!, /Error: approval service down/);
  assert.match(reasons[2]!, /TypeError: bad gateway/);
  assert.match(reasons[3]!, /no answer within 50 ms/);
});

test('a sequence rule fires across two tools in one trace, not across two traces', async () => {
  const dir = open('sequence');
  const sent: string[] = [];
  const read = audit.tool('fs.read', async (p: string) => `contents of ${p}`);
  const send = audit.tool('email.send', async (to: string, body: string) => { sent.push(to); return body.length; });
  let exfil = '';
  let mailOnly = '';
  await audit.trace('exfil', async (t) => {
    exfil = t.traceId;
    await read('/app/.env');
    await assert.rejects(send('someone@outside.example', 'here you go'), (e: unknown) => e instanceof audit.ToolBlockedError && e.ruleId === 'secret_then_send');
  });
  await audit.trace('read only', async () => { await read('/app/.env'); });
  await audit.trace('mail only', async (t) => {
    mailOnly = t.traceId;
    await send('customer@example.com', 'your order shipped');
  });
  assert.deepEqual(sent, ['customer@example.com']);
  await closeAndCheck(dir);
  const blocked = (await steps(dir, exfil)).filter((x) => x.result_status === 'blocked');
  assert.equal(blocked.length, 1);
  assert.ok(blocked[0]!.risk_flags.includes('possible_exfiltration'));
  const mail = (await steps(dir, mailOnly)).filter((x) => x.kind === 'tool_call');
  assert.equal(mail[0]!.result_status, 'ok');
  assert.ok(!(mail[0]!.risk_flags ?? []).includes('possible_exfiltration'));
});

test('alerts reach the handler on the event loop, once per matching call', async () => {
  const got: audit.Alert[] = [];
  const dir = open('alert', { onAlert: (a) => got.push(a) });
  const exportReport = audit.tool('reports.export', async (query: string) => query.length);
  let traceId = '';
  await audit.trace('export', async (t) => {
    traceId = t.traceId;
    await exportReport('select * from all_customers');
    await exportReport('select * from one_customer');
  });
  await audit.flush();
  for (let i = 0; i < 200 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(got.length, 1);
  assert.deepEqual(
    { ...got[0]!, spanId: undefined },
    { ruleId: 'big_export', reason: 'Large exports get a look', flags: ['bulk_export'], score: 20, traceId, spanId: undefined, tool: 'reports.export' },
  );
  await closeAndCheck(dir);
  assert.deepEqual((await steps(dir, traceId)).filter((x) => x.kind === 'policy').map((x) => x.rule_id), ['big_export']);
});

test('policy options: a bad file fails init with file and line; text; the built-in pack blocks nothing', async () => {
  const bad = path.join(tempLogDir('badpolicy'), 'bad.toml');
  fs.writeFileSync(bad, 'version = "x"\n\n[[rule]]\nid = "r"\ntools = ["t"]\naction = "blok"\n');
  assert.throws(() => audit.init({ dir: tempLogDir('bad'), policy: bad }), (e: unknown) =>
    e instanceof audit.ConfigError && /bad\.toml:6/.test(e.message) && /blok/.test(e.message));
  assert.throws(() => audit.setApprover('yes' as any), { code: 'ERR_AUDIT_CONFIG' });
  assert.equal(audit.isInitialized(), false);

  const textDir = tempLogDir('text');
  audit.init({ dir: textDir, policyToml: fs.readFileSync(POLICY, 'utf8') });
  const q = audit.tool('db.query', (sql: string) => sql);
  assert.throws(() => q('DROP TABLE t'), audit.ToolBlockedError);
  await closeAndCheck(textDir);

  const dir = tempLogDir('builtin');
  audit.init({ dir });
  const sh = audit.tool('shell.exec', (cmd: string) => `ran ${cmd}`);
  let traceId = '';
  await audit.trace('builtin', async (t) => {
    traceId = t.traceId;
    assert.equal(sh('rm -rf / --no-preserve-root'), 'ran rm -rf / --no-preserve-root');
  });
  await closeAndCheck(dir);
  const step = (await steps(dir, traceId)).find((x) => x.kind === 'tool_call')!;
  assert.equal(step.result_status, 'ok');
  assert.ok(step.risk_flags.includes('destructive_operation'));
});
