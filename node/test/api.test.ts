// The public API of DESIGN.md against a real log: every test writes a log,
// shuts it down, verifies it and checks its parent links (checkLog).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as audit from 'agent-audit';
import { closeAndCheck, tempLogDir, PACKAGE_DIR, type Rec } from './helpers';

const byKind = (recs: Rec[], kind: string) => recs.filter((r) => r.kind === kind);

test('trace + tool (sync, async, error) + llmCall write linked events', async () => {
  const dir = tempLogDir('api');
  const info = audit.init({ dir, tenantId: 'acme', agentId: 'support-v2', capture: 'raw' });
  assert.match(info.streamId, /^[0-9a-f-]{36}$/);
  const add = audit.tool('math.add', (a: number, b: number) => a + b, { version: '1.0.0' });
  const query = audit.tool('db.query', async (sql: string) => { await new Promise((r) => setTimeout(r, 5)); return [{ n: 1 }]; });
  const fail = audit.tool('flaky', async () => { throw new RangeError('nope'); });
  let traceId = '';
  const out = await audit.trace('customer_support', { userId: 'u_1', input: { ticket: 42 } }, async (t) => {
    traceId = t.traceId;
    assert.deepEqual(audit.currentTrace(), { traceId: t.traceId, spanId: t.spanId });
    assert.equal(add(2, 3), 5);
    assert.deepEqual(await query('select 1'), [{ n: 1 }]);
    await assert.rejects(fail(), RangeError);
    await audit.llmCall({ model: 'claude-opus', provider: 'anthropic' }, async (call) => {
      call.record({ inputTokens: 1420, outputTokens: 312, finishReason: 'stop', toolCallsRequested: ['db.query'] });
    });
    t.addRisk('sends_external_message', 40);
    return 'resolved';
  });
  assert.equal(out, 'resolved');
  assert.equal(audit.currentTrace(), undefined);
  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  const [end] = byKind(recs, 'trace_end');
  assert.equal(start!.task_kind, 'customer_support');
  assert.equal(start!.principal.user_id, 'u_1');
  assert.equal(start!.principal.tenant_id, 'acme');
  assert.equal(end!.outcome, 'completed');
  assert.deepEqual(end!.risk, { flags: ['sends_external_message'], score: 40 });
  const tools = byKind(recs, 'tool_call');
  assert.equal(tools.length, 3);
  for (const r of recs) assert.equal(r.trace_id, traceId);
  for (const r of tools) assert.equal(r.parent_span_id, start!.span_id);
  const addRec = tools.find((r) => r.tool.name === 'math.add')!;
  assert.equal(addRec.tool.version, '1.0.0');
  assert.equal(addRec.result_status, 'ok');
  assert.deepEqual(addRec.payload.data.args, { a: 2, b: 3 });
  assert.equal(addRec.payload.data.result, 5);
  assert.ok(typeof addRec.duration_ms === 'number' && addRec.duration_ms >= 0);
  const q = tools.find((r) => r.tool.name === 'db.query')!;
  assert.deepEqual(q.payload.data.args, { sql: 'select 1' });
  assert.ok(q.duration_ms >= 4);
  const f = tools.find((r) => r.tool.name === 'flaky')!;
  assert.equal(f.result_status, 'error');
  assert.equal(f.error_type, 'RangeError');
  assert.deepEqual(f.payload.data.error, { type: 'RangeError', message: 'nope' });
  const [llm] = byKind(recs, 'llm_call');
  assert.equal(llm!.model.name, 'claude-opus');
  assert.equal(llm!.model.provider, 'anthropic');
  assert.equal(llm!.input_tokens, 1420);
  assert.equal(llm!.output_tokens, 312);
  assert.equal(llm!.result_status, 'ok');
  // The trace reads back as one document, the same one `agent-audit show` prints.
  const doc = await audit.showTrace(dir, traceId) as any;
  assert.equal(doc.outcome, 'completed');
  assert.equal(doc.steps.length, 4);
  const list = await audit.listTraces(dir);
  assert.equal(list.length, 1);
  assert.equal(list[0]!.trace_id, traceId);
});

test('a failing trace ends failed; cancelled and timeout statuses come from the error name', async () => {
  const dir = tempLogDir('fail');
  audit.init({ dir });
  const aborted = audit.tool('aborted', async () => { throw new DOMException('stop', 'AbortError'); });
  const slow = audit.tool('slow', async () => { throw new DOMException('late', 'TimeoutError'); });
  await assert.rejects(audit.trace('doomed', async () => {
    await assert.rejects(aborted());
    await assert.rejects(slow());
    throw new Error('task failed');
  }), /task failed/);
  const recs = await closeAndCheck(dir);
  assert.equal(byKind(recs, 'trace_end')[0]!.outcome, 'failed');
  assert.equal(byKind(recs, 'trace_end')[0]!.error_type, 'Error');
  const statuses = Object.fromEntries(byKind(recs, 'tool_call').map((r) => [r.tool.name, r.result_status]));
  assert.deepEqual(statuses, { aborted: 'cancelled', slow: 'timeout' });
});

test('results that are async iterables, generators and ReadableStreams are logged when consumed', async () => {
  const dir = tempLogDir('streams');
  audit.init({ dir, capture: 'raw' });
  const inner = audit.tool('inner', (x: number) => x * 2);
  const asyncGen = audit.tool('tokens', async function* (n: number) {
    for (let i = 0; i < n; i++) yield inner(i);
  });
  const syncGen = audit.tool('rows', function* () { yield 'a'; yield 'b'; });
  const web = audit.tool('web', () => new ReadableStream<string>({
    start(c) { c.enqueue('x'); c.enqueue('y'); c.close(); },
  }));
  const stopped = audit.tool('stopped', async function* () { yield 1; yield 2; yield 3; });
  await audit.trace('streams', async () => {
    const got: number[] = [];
    for await (const v of asyncGen(3)) got.push(v as number);
    assert.deepEqual(got, [0, 2, 4]);
    assert.deepEqual([...syncGen()], ['a', 'b']);
    const chunks: string[] = [];
    const reader = (web() as ReadableStream<string>).getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
    assert.deepEqual(chunks, ['x', 'y']);
    for await (const v of stopped()) if (v === 1) break;
  });
  const recs = await closeAndCheck(dir);
  const tools = byKind(recs, 'tool_call');
  const by = (n: string) => tools.filter((r) => r.tool.name === n);
  const tok = by('tokens')[0]!;
  assert.equal(tok.result_status, 'ok');
  assert.deepEqual(tok.payload.data.result, { $stream: 'AsyncIterable', count: 3, items: [0, 2, 4] });
  // The producer's own tool calls nest under the streaming tool.
  assert.equal(by('inner').length, 3);
  for (const r of by('inner')) assert.equal(r.parent_span_id, tok.span_id);
  assert.deepEqual(by('rows')[0]!.payload.data.result, { $stream: 'Generator', count: 2, items: ['a', 'b'] });
  assert.deepEqual(by('web')[0]!.payload.data.result, { $stream: 'ReadableStream', count: 2, items: ['x', 'y'] });
  assert.equal(by('stopped')[0]!.result_status, 'cancelled');
});

test('class methods: decorator and wrapTool keep `this`', async () => {
  const dir = tempLogDir('methods');
  audit.init({ dir, capture: 'raw' });
  class Crm {
    prefix = 'cust_';
    @audit.tool('crm.lookup', { version: '2' })
    async lookup(id: number) { return this.prefix + id; }
  }
  const crm = new Crm();
  const bound = audit.wrapTool(function greet(this: { who: string }, greeting: string) { return `${greeting} ${this.who}`; });
  await audit.trace('methods', async () => {
    assert.equal(await crm.lookup(7), 'cust_7');
    assert.equal(bound.call({ who: 'ada' }, 'hi'), 'hi ada');
  });
  const recs = byKind(await closeAndCheck(dir), 'tool_call');
  assert.deepEqual(recs.map((r) => [r.tool.name, r.payload.data.args, r.payload.data.result]), [
    ['crm.lookup', { id: 7 }, 'cust_7'],
    ['greet', { greeting: 'hi' }, 'hi ada'],
  ]);
});

test('decision, memory, retrieval, guardrail, humanReview, agentSpawn', async () => {
  const dir = tempLogDir('kinds');
  audit.init({ dir, agentId: 'planner' });
  await audit.trace('kinds', async () => {
    const d = audit.decision({ decision: 'call_tools', tools: ['db.query'], confidence: 0.8, reasoning: 'needs data' });
    assert.equal(d.queued, true);
    audit.memory({ operation: 'write', store: 'notes', key: 'k1', content: 'remember' });
    audit.retrieval({ source: 'kb', query: 'refunds', documents: [{ id: 'doc1', score: 0.9, content: 'text' }] });
    audit.guardrail({ id: 'prompt_guard_v2', verdict: 'BENIGN', score: 0.01, target: 'input', action: 'allow' });
    audit.humanReview({ decision: 'approved', reviewer: 'alice', subjectSpanId: d.spanId, waitMs: 1200 });
    await audit.agentSpawn({ childAgentId: 'researcher', taskKind: 'research' }, async (a) => {
      assert.equal(audit.currentTrace()!.spanId, a.spanId);
      audit.decision({ decision: 'search' });
    });
  });
  const recs = await closeAndCheck(dir);
  const kinds = recs.map((r) => r.kind).sort();
  assert.deepEqual(kinds, ['agent_spawn', 'decision', 'decision', 'guardrail', 'human_review', 'memory', 'retrieval', 'trace_end', 'trace_start']);
  const spawn = byKind(recs, 'agent_spawn')[0]!;
  assert.equal(spawn.child_agent_id, 'researcher');
  const childDecision = byKind(recs, 'decision').find((r) => r.decision === 'search')!;
  assert.equal(childDecision.parent_span_id, spawn.span_id);
  assert.equal(childDecision.principal.agent_id, 'researcher');
  assert.equal(byKind(recs, 'retrieval')[0]!.retrieved_docs[0].id, 'doc1');
  assert.equal(byKind(recs, 'guardrail')[0]!.guardrails[0].verdict, 'BENIGN');
  const d = byKind(recs, 'decision').find((r) => r.decision === 'call_tools')!;
  assert.equal(byKind(recs, 'human_review')[0]!.subject_span_id, d.span_id);
});

test('misuse throws AuditError subclasses with stable codes; logging trouble does not', async () => {
  assert.throws(() => audit.init({ dir: tempLogDir('bad'), bogusOption: 1 } as any), (e: any) =>
    e instanceof audit.ConfigError && e instanceof audit.AuditError && e.code === 'ERR_AUDIT_CONFIG');
  assert.throws(() => audit.init({ dir: tempLogDir('bad'), policy: { rules: [] } } as any), { code: 'ERR_AUDIT_CONFIG' });
  assert.throws(() => audit.init({ dir: tempLogDir('bad'), signingKey: '/nonexistent/key.pem' }), { code: 'ERR_AUDIT_KEY' });
  const dir = tempLogDir('misuse');
  audit.init({ dir });
  assert.throws(() => audit.init({ dir }), (e: any) => e instanceof audit.AlreadyInitializedError && e.code === 'ERR_AUDIT_ALREADY_INITIALIZED');
  assert.throws(() => audit.decision({} as any), { code: 'ERR_AUDIT_INVALID_ARGUMENT' });
  assert.throws(() => audit.decision({ decision: 'x', confidence: 7 }), (e: any) => e instanceof audit.InvalidEventError && e.code === 'ERR_AUDIT_INVALID_EVENT');
  assert.throws(() => audit.tool(42 as any), audit.InvalidArgumentError);
  await assert.rejects(audit.verify('/nonexistent-log-dir'), (e: any) => e instanceof audit.InvalidLogError && e.code === 'ERR_AUDIT_INVALID_LOG');
  await assert.rejects(audit.showTrace(dir, 'f'.repeat(32)), { code: 'ERR_AUDIT_NOT_FOUND' });
  await closeAndCheck(dir);
  // After shutdown a tool still runs; the lost event is counted, not thrown.
  const t = audit.tool('after', (x: number) => x + 1);
  assert.equal(t(1), 2);
  assert.ok(audit.stats().notLogged >= 1);
});

test('npx agent-audit runs the Rust command line; ESM and CommonJS share one module', async () => {
  const dir = tempLogDir('cli');
  audit.init({ dir });
  let traceId = '';
  await audit.trace('cli_task', async (t) => { traceId = t.traceId; audit.decision({ decision: 'x' }); });
  await closeAndCheck(dir);
  const bin = `${PACKAGE_DIR}/bin/agent-audit.cjs`;
  const v = spawnSync(process.execPath, [bin, 'verify', dir], { encoding: 'utf8' });
  assert.equal(v.status, 0, v.stderr);
  const show = spawnSync(process.execPath, [bin, 'show', dir, traceId, '--json'], { encoding: 'utf8' });
  assert.equal(show.status, 0, show.stderr);
  assert.deepEqual(JSON.parse(show.stdout), await audit.showTrace(dir, traceId));
  assert.equal(spawnSync(process.execPath, [bin, 'verify', '/nonexistent'], { encoding: 'utf8' }).status, 2);
  assert.equal(audit.runCli(['--version']), 0);
  const esm = spawnSync(process.execPath, ['--input-type=module', '-e', `
    import * as a from 'agent-audit'; import { createRequire } from 'node:module';
    const c = createRequire(import.meta.url)('agent-audit');
    if (a.init !== c.init || a.trace !== c.trace || a.default !== c) process.exit(3);
    const missing = Object.keys(c).filter((k) => !(k in a)); if (missing.length) { console.error(missing); process.exit(4); }
  `], { cwd: PACKAGE_DIR, encoding: 'utf8' });
  assert.equal(esm.status, 0, esm.stderr);
});

test('the JSON-text fast path and the native converter store the same values', async () => {
  const dir = tempLogDir('fastpath');
  audit.init({ dir, capture: 'raw' });
  const cycle: Record<string, unknown> = { name: 'loop' };
  cycle.self = cycle;
  // Plain values take the text path; the rest (bigint, NaN, Map, Date,
  // class instances, cycles, lone surrogates, unsafe integers) the native one.
  const values: unknown[] = [
    { a: 1, b: 'two', c: [true, null, 1.25, -0, { d: 'é\u2028"\\' }], e: undefined, f: [undefined] },
    { nested: { deeper: { list: Array.from({ length: 50 }, (_, i) => i) } } },
    Object.assign(Object.create(null), { bare: 'object' }),
    { big: 10n ** 20n, nan: NaN, inf: -Infinity, unsafe: 2 ** 60 },
    { map: new Map([['k', 1]]), set: new Set([1, 2]), when: new Date(Date.UTC(2026, 0, 2)) },
    { lone: 'a\ud800b', [String.fromCharCode(0xdc00)]: 1 },
    cycle,
    JSON.parse('['.repeat(60) + '"deep"' + ']'.repeat(60)),
  ];
  const echo = audit.tool('echo', (value: unknown) => value);
  for (const v of values) echo(v);
  const recs = await closeAndCheck(dir);
  const tools = recs.filter((r) => r.kind === 'tool_call');
  assert.equal(tools.length, values.length);
  values.forEach((v, i) => {
    // The arguments sit one level deeper (under the parameter's name).
    assert.deepEqual(tools[i]!.payload.data.args, audit.toAuditValue({ value: v }), `args of value ${i}`);
    assert.deepEqual(tools[i]!.payload.data.result, audit.toAuditValue(v), `result of value ${i}`);
  });
});

test('primitive arguments and results passed as they are store what the native converter stores', async () => {
  const dir = tempLogDir('primitives');
  audit.init({ dir, capture: 'raw' });
  // All-primitive arguments go to the native side as they are and are
  // named there; any object among them takes the copy path. Results that
  // are numbers, booleans or null go as they are too.
  const calls: unknown[][] = [
    [1, 2], [NaN, -Infinity], [2 ** 60, -0], [10n ** 20n, Symbol('s')], ['a\ud800b', 'é\u2028"\\'],
    [true, null], [undefined, 1], ['only'], [], [1.5, -1e21], [() => 1, 2], [{ o: 1 }, 'x'], [new Map([[1, 2]]), 3],
  ];
  // (Typed as taking any arguments: the calls pass zero to two.)
  const first = audit.tool('first', (a?: unknown, b?: unknown) => [a, b][0]) as (...args: unknown[]) => unknown;
  const second = audit.tool('second', async (a?: unknown, b?: unknown) => [a, b][1]) as (...args: unknown[]) => Promise<unknown>;
  let traceId = '';
  await audit.trace('prims', { userId: 'u_9', retentionClass: 'short_1y' }, async (t) => {
    traceId = t.traceId;
    for (const c of calls) {
      first(...c);
      await second(...c);
    }
  });
  const recs = await closeAndCheck(dir);
  const tools = recs.filter((r) => r.kind === 'tool_call');
  assert.equal(tools.length, 2 * calls.length);
  calls.forEach((c, i) => {
    const named: Record<string, unknown> = {};
    if (c.length > 0) named.a = c[0];
    if (c.length > 1) named.b = c[1];
    for (const [k, r] of [[0, tools[2 * i]!], [1, tools[2 * i + 1]!]] as const) {
      assert.deepEqual(r.payload.data.args, audit.toAuditValue(named), `args of call ${i}`);
      const result = c[k];
      if (result === undefined) assert.equal('result' in r.payload.data, false, `no result for call ${i}`);
      else assert.deepEqual(r.payload.data.result, audit.toAuditValue(result), `result of call ${i}`);
      assert.equal(r.trace_id, traceId);
      assert.equal(r.principal.user_id, 'u_9');
      assert.equal(r.retention_class, 'short_1y');
    }
  });
});
