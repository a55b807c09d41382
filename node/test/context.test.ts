// Trace context across await, Promise.all, timers, event emitters, async
// iterators and worker threads, and 1,000 concurrent tool calls.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import * as audit from 'agent-audit';
import { closeAndCheck, tempLogDir, ENTRY, type Rec } from './helpers';

const tools = (recs: Rec[], name?: string) => recs.filter((r) => r.kind === 'tool_call' && (!name || r.tool.name === name));

test('context survives await, timers, emitters and async iterators; nested tools link to their caller', async () => {
  const dir = tempLogDir('ctx');
  audit.init({ dir });
  const leaf = audit.tool('leaf', async (where: string) => where);
  const outer = audit.tool('outer', async () => {
    await new Promise((r) => setTimeout(r, 1));
    await leaf('in-outer');
  });
  let root = '';
  await audit.trace('ctx', async (t) => {
    root = t.spanId;
    await outer();
    await new Promise<void>((resolve) => setTimeout(() => { void leaf('timer').then(() => resolve()); }, 2));
    await new Promise<void>((resolve) => setImmediate(() => { void leaf('immediate').then(() => resolve()); }));
    const em = new EventEmitter();
    const heard = new Promise<void>((resolve) => em.on('go', () => { void leaf('emitter').then(() => resolve()); }));
    setTimeout(() => em.emit('go'), 1);
    await heard;
    // A listener bound now runs in this trace even when emitted from outside it.
    const outside = new EventEmitter();
    const boundHeard = new Promise<void>((resolve) => outside.on('go', audit.context.bind(() => { void leaf('bound').then(() => resolve()); })));
    audit.context.run(undefined, () => undefined);
    setTimeout(() => outside.emit('go'), 1);
    await boundHeard;
    async function* gen() { yield await leaf('iterator'); }
    for await (const _ of gen()) { /* consume */ }
  });
  // Outside the trace: a tool gets a trace of its own.
  await leaf('outside');
  const recs = await closeAndCheck(dir);
  const start = recs.find((r) => r.kind === 'trace_start')!;
  const outerRec = tools(recs, 'outer')[0]!;
  const leaves = new Map(tools(recs, 'leaf').map((r) => [r.payload.data.args.where, r]));
  assert.equal(leaves.get('in-outer')!.parent_span_id, outerRec.span_id);
  for (const w of ['timer', 'immediate', 'emitter', 'bound', 'iterator']) {
    assert.equal(leaves.get(w)!.trace_id, start.trace_id, w);
    assert.equal(leaves.get(w)!.parent_span_id, root, w);
  }
  assert.notEqual(leaves.get('outside')!.trace_id, start.trace_id);
  assert.equal(leaves.get('outside')!.parent_span_id, undefined);
});

test('Promise.all over 1,000 concurrent tool calls gives 1,000 events with the right parents', async () => {
  const dir = tempLogDir('thousand');
  audit.init({ dir });
  const child = audit.tool('child', async (i: number) => { await new Promise((r) => setTimeout(r, i % 3)); return i; });
  const parent = audit.tool('parent', async (i: number) => child(i));
  let traceId = '';
  await audit.trace('fanout', async (t) => {
    traceId = t.traceId;
    const out = await Promise.all(Array.from({ length: 1000 }, (_, i) => parent(i)));
    assert.equal(out.length, 1000);
  });
  const recs = await closeAndCheck(dir);
  const parents = tools(recs, 'parent');
  const children = tools(recs, 'child');
  assert.equal(parents.length, 1000);
  assert.equal(children.length, 1000);
  const parentOf = new Map(parents.map((p) => [p.payload.data.args.i, p.span_id]));
  const root = recs.find((r) => r.kind === 'trace_start')!.span_id;
  for (const p of parents) { assert.equal(p.parent_span_id, root); assert.equal(p.trace_id, traceId); }
  for (const c of children) assert.equal(c.parent_span_id, parentOf.get(c.payload.data.args.i));
  assert.equal(new Set([...parents, ...children].map((r) => r.span_id)).size, 2000);
});

test('4 worker threads emit into the trace they were started in, through one writer', async () => {
  const dir = tempLogDir('workers');
  const info = audit.init({ dir });
  const code = `
    const { workerData, parentPort } = require('node:worker_threads');
    const audit = require(workerData.entry);
    const work = audit.tool('worker.step', async (worker, i) => worker * 100 + i);
    audit.context.run(workerData.ctx, async () => {
      for (let i = 0; i < 25; i++) await work(workerData.n, i);
      audit.decision({ decision: 'worker_done', metadata: { worker: workerData.n } });
      parentPort.postMessage(audit.stats().notLogged);
    });`;
  let spawnSpan = '';
  await audit.trace('parallel', async () => {
    await audit.agentSpawn({ childAgentId: 'workers' }, async (a) => {
      spawnSpan = a.spanId;
      const ctx = audit.context.capture();
      assert.equal(ctx!.dir, info.dir);
      await Promise.all([0, 1, 2, 3].map((n) => new Promise<void>((resolve, reject) => {
        const w = new Worker(code, { eval: true, workerData: { entry: ENTRY, ctx, n } });
        w.once('message', (notLogged) => { assert.equal(notLogged, 0); });
        w.once('error', reject);
        w.once('exit', (c) => (c === 0 ? resolve() : reject(new Error(`worker exit ${c}`))));
      })));
    });
  });
  const recs = await closeAndCheck(dir);
  const steps = tools(recs, 'worker.step');
  assert.equal(steps.length, 100);
  const traceId = recs.find((r) => r.kind === 'trace_start')!.trace_id;
  for (const s of steps) {
    assert.equal(s.trace_id, traceId);
    assert.equal(s.parent_span_id, spawnSpan);
  }
  assert.equal(recs.filter((r) => r.kind === 'decision').length, 4);
  // One process, one stream.
  assert.equal(new Set(recs.map((r) => r.stream_id)).size, 1);
});
