// bench/tool-overhead.mjs (`npm run bench`) with small counts: it runs to
// the end and prints every row with numbers, its audit logs verify, and
// its OTel spans all reach the exporter. The timing targets are the
// benchmark's business (its PASS / FAIL lines), not this test's: only
// that each target line carries a verdict is checked here.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { PACKAGE_DIR } from './helpers';

const BENCH = path.join(PACKAGE_DIR, 'bench', 'tool-overhead.mjs');
const CALLS = 2000;
const EVENTS = 5000;

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BENCH, ...args], { cwd: PACKAGE_DIR, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const NUM = String.raw`(-?\d[\d,]*(?:\.\d+)?)`;

/** The one line matching `re`; its captures as numbers (thousands separators dropped). */
function numbers(out: string, re: RegExp, what: string): number[] {
  const lines = out.split('\n').filter((l) => re.test(l));
  assert.equal(lines.length, 1, `one ${what} line in:\n${out}`);
  const m = re.exec(lines[0]!)!;
  const nums = m.slice(1).map((s) => Number(s!.replace(/,/g, '')));
  for (const n of nums) assert.ok(Number.isFinite(n), `${what}: ${lines[0]}`);
  return nums;
}

test('the benchmark prints every row with numbers (2,000 calls, 5,000 events)', { timeout: 300_000 }, async () => {
  const { code, stdout, stderr } = await runBench(['--calls', String(CALLS), '--events', String(EVENTS)]);
  assert.equal(code, 0, `exit ${code}\nstdout:\n${stdout}\nstderr:\n${stderr}`);

  // Timing rows: p50, p99 (µs per call), and for all but bare the overhead at both.
  const row = (name: string, label: string, overhead: boolean) => {
    const cols = overhead ? `${NUM}\\s+${NUM}\\s+${NUM}\\s+${NUM}` : `${NUM}\\s+${NUM}\\s+-\\s+-`;
    const [p50, p99, o50, o99] = numbers(stdout, new RegExp(`^${name.replace(/[.+]/g, '\\$&')}\\s+${label.replace(/[()+.*]/g, '\\$&')}\\s+${cols}\\s*$`), name);
    assert.ok(p50! > 0 && p99! >= p50!, `${name}: p50 ${p50}, p99 ${p99}`);
    return { p50: p50!, p99: p99!, o50, o99 };
  };
  const bare = row('bare', 'bare call', false);
  row('floor', 'hand-written timing wrapper (floor)', true);
  const a = row('audit.tool', 'audit.tool (captures the arguments)', true);
  row('otel', 'OTel startActiveSpan, batch processor, ALS context', true);
  row('otel+hash', 'OTel span + sha256(JSON.stringify(args))', true);
  row('bare', 'bare call (LangSmith process)', false);
  row('langsmith', 'LangSmith traceable, closed local port', true);
  // Overhead is the difference at the same percentile (printed to 3 decimals).
  assert.ok(Math.abs(a.o50! - (a.p50 - bare.p50)) < 0.002, `audit.tool overhead ${a.o50} vs ${a.p50} - ${bare.p50}`);

  numbers(stdout, new RegExp(`^per call, ${NUM} calls per candidate in blocks of ${NUM}, ${NUM} rounds`), 'timing header');

  // The audit log of the timing run: every call written and verified.
  const [written, dropped, , records] = numbers(stdout,
    new RegExp(`^audit log: ${NUM} records written, ${NUM} dropped, ${NUM} not logged; verify: ${NUM} records, not tampered, 0 findings$`), 'audit log (timing)');
  assert.ok(written! >= CALLS, `written ${written}`);
  assert.equal(dropped, 0);
  assert.ok(records! >= written!, `verified ${records} of ${written}`);
  const [exported, spans] = numbers(stdout, new RegExp(`^otel: ${NUM} of ${NUM} spans exported`), 'otel export');
  assert.ok(spans! >= 2 * CALLS, `spans ${spans}`);
  assert.equal(exported, spans);

  // Ratios, and the targets with their verdicts.
  for (const peer of ['floor', 'langsmith']) numbers(stdout, new RegExp(`^audit\\.tool / ${peer}\\s+${NUM}x\\s*$`), `ratio to ${peer}`);
  for (const [peer, target] of [['otel', '1\\.00'], ['otel\\+hash', '0\\.50']]) {
    numbers(stdout, new RegExp(`^audit\\.tool / ${peer}\\s+${NUM}x\\s+target <= ${target}x\\s+(?:PASS|FAIL)$`), `ratio to ${peer}`);
  }

  // Event loop and RSS: calls ms, delay p50 / p99 / max, RSS start / peak / end / growth.
  const evCols = Array(8).fill(NUM).join('\\s+');
  for (const label of ['audit.tool, until flushed', 'audit.tool, overflow block', 'bare, as long (audit process)', 'langsmith', 'bare, as long (LangSmith process)']) {
    const [ms, d50, d99, dmax, start, peak, end, growth] = numbers(stdout,
      new RegExp(`^events: ${label.replace(/[().]/g, '\\$&')}\\s+${evCols}\\s*$`), `events: ${label}`);
    assert.ok(ms! > 0 && d50! > 0 && d99! >= d50! && dmax! >= d99!, `events: ${label} delays`);
    assert.ok(start! > 0 && peak! >= start! && peak! >= end!, `events: ${label} RSS`);
    assert.ok(Math.abs(growth! - (peak! - start!)) < 0.11, `events: ${label} growth`);
  }
  // The default run may drop what its queue cannot hold (not at 5,000
  // events); the overflow-block run may not.
  for (const label of ['audit log', 'audit log, overflow block']) {
    const [evWritten, evDropped, evRecords] = numbers(stdout,
      new RegExp(`^${label}: ${NUM} records written, ${NUM} dropped; verify: ${NUM} records, not tampered, 0 findings$`), `${label} (events)`);
    assert.ok(evWritten! + evDropped! >= EVENTS, `${label}: events written ${evWritten}, dropped ${evDropped}`);
    assert.ok(evRecords! >= evWritten!);
    if (label.endsWith('block')) assert.equal(evDropped, 0);
  }
  numbers(stdout, new RegExp(`^event-loop delay p99, audit\\s+${NUM} ms\\s+target < 5 ms\\s+(?:PASS|FAIL)\\s+\\(bare, as long: ${NUM} ms\\)$`), 'loop delay target');
  numbers(stdout, new RegExp(`^RSS growth, audit\\s+${NUM} MB\\s+target < 50 MB\\s+(?:PASS|FAIL)$`), 'RSS target');
  numbers(stdout, new RegExp(`^events dropped, overflow block\\s+${NUM}\\s+target 0 \\(every event written\\)\\s+(?:PASS|FAIL)$`), 'dropped target');
  assert.match(stdout, /^(all targets PASS|\d of 5 targets FAIL)$/m);
});

test('the benchmark refuses a bad count', async () => {
  const { code, stderr } = await runBench(['--calls', '0']);
  assert.equal(code, 2);
  assert.match(stderr, /--calls needs a positive integer/);
});
