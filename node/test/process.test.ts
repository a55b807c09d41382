// Never lose the tail: a child process killed with SIGTERM mid-run, one
// interrupted with SIGINT, and one that just ends without shutdown() all
// leave a closed, verified log holding every event emitted before.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as audit from 'agent-audit';
import { checkLog, tempLogDir, ENTRY } from './helpers';

function child(script: string, dir: string) {
  return spawn(process.execPath, ['-e', script, ENTRY, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
}

const EMITTER = `
  const audit = require(process.argv[1]);
  audit.init({ dir: process.argv[2], fsync: 'never' });
  const step = audit.tool('step', (i) => i);
  let i = 0;
  audit.trace('long_task', () => new Promise(() => {
    // Runs until killed: emit, then report the count on stdout.
    setInterval(() => { for (let k = 0; k < 50; k++) step(i++); process.stdout.write(i + '\\n'); }, 2);
  }));
`;

async function killMidRun(signal: NodeJS.Signals) {
  const dir = tempLogDir(signal.toLowerCase());
  const p = child(EMITTER, dir);
  let reported = 0;
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += d; });
  await new Promise<void>((resolve) => {
    p.stdout.on('data', (d: Buffer) => {
      const lines = d.toString().trim().split('\n');
      reported = Math.max(reported, Number(lines[lines.length - 1]));
      if (reported >= 2000 && !p.killed) { p.kill(signal); resolve(); }
    });
  });
  const [code, sig] = await new Promise<[number | null, string | null]>((r) => p.on('exit', (c, s) => r([c, s])));
  // Exits as Node would on that signal: killed by it.
  assert.equal(sig, signal, `exit code ${code}, stderr: ${stderr}`);
  const recs = await checkLog(dir);
  const steps = recs.filter((r) => r.kind === 'tool_call');
  assert.ok(steps.length >= reported, `${steps.length} events in the log, ${reported} reported emitted`);
  const seen = new Set(steps.map((r) => r.payload.data.args.i));
  for (let i = 0; i < reported; i++) assert.ok(seen.has(i), `event ${i} missing`);
  const end = (await audit.verify(dir)).streams[0]!;
  assert.equal(end.status, 'clean');
}

test('SIGTERM mid-run: every event emitted before it is in the log', () => killMidRun('SIGTERM'));
test('SIGINT mid-run: same', () => killMidRun('SIGINT'));

test('a process that ends without shutdown() drains on exit; the hooks do not keep it alive', async () => {
  const dir = tempLogDir('exit');
  const p = child(`
    const audit = require(process.argv[1]);
    audit.init({ dir: process.argv[2] });
    const t = audit.tool('t', async (i) => i);
    audit.trace('short', async () => { for (let i = 0; i < 500; i++) await t(i); });
  `, dir);
  const started = Date.now();
  const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  assert.equal(code, 0);
  assert.ok(Date.now() - started < 10_000);
  const recs = await checkLog(dir);
  assert.equal(recs.filter((r) => r.kind === 'tool_call').length, 500);
  assert.equal(recs.filter((r) => r.kind === 'trace_end').length, 1);
});

test('a user SIGTERM handler is chained: it runs and decides; the log is flushed first', async () => {
  const dir = tempLogDir('chain');
  const p = child(`
    const audit = require(process.argv[1]);
    audit.init({ dir: process.argv[2] });
    process.on('SIGTERM', () => { audit.decision({ decision: 'user_handler_ran' }); process.exit(7); });
    audit.decision({ decision: 'before' });
    process.stdout.write('ready\\n');
    setInterval(() => {}, 1000);
  `, dir);
  await new Promise<void>((r) => p.stdout.once('data', () => r()));
  p.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  assert.equal(code, 7);
  const recs = await checkLog(dir);
  assert.deepEqual(recs.map((r) => r.decision), ['before', 'user_handler_ran']);
});
