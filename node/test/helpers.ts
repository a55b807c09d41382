// Shared by the tests: fresh log directories, reading records back, and
// checkLog(), which every test runs on the logs it wrote: the log
// verifies clean and every parent link points at a span of its trace.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as audit from 'agent-audit';

export type Rec = Record<string, any>;

/** A new empty directory for one test's log. */
export function tempLogDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `agent-audit-node-${label}-`));
}

/** Every record of every stream of `dir`, in file order. */
export function readRecords(dir: string): Rec[] {
  const out: Rec[] = [];
  for (const stream of fs.readdirSync(dir).sort()) {
    const sdir = path.join(dir, stream);
    if (!fs.statSync(sdir).isDirectory()) continue;
    for (const f of fs.readdirSync(sdir).filter((f) => f.startsWith('seg-')).sort()) {
      for (const line of fs.readFileSync(path.join(sdir, f), 'utf8').split('\n')) {
        if (line.trim()) out.push(JSON.parse(line));
      }
    }
  }
  return out;
}

/** Records of the kinds agents emit (not the writer's own). */
export function agentRecords(records: Rec[]): Rec[] {
  const writer = new Set(['checkpoint', 'stream_start', 'stream_end', 'gap']);
  return records.filter((r) => !writer.has(r.kind));
}

/**
 * Verifies `dir` (no finding beyond `allow`), checks that every stream is
 * closed unless `open` is set, and that every parent_span_id names a span
 * of the same trace. Returns the agent records.
 */
export async function checkLog(dir: string, opts: { allow?: string[]; open?: boolean } = {}): Promise<Rec[]> {
  const report = await audit.verify(dir);
  const allowed = new Set(opts.allow ?? []);
  const bad = report.findings.filter((f) => !allowed.has(f.code));
  assert.deepEqual(bad, [], `verify findings in ${dir}`);
  assert.equal(report.tampered, false);
  if (!opts.open) for (const s of report.streams) assert.equal(s.status, 'clean', `stream ${s.stream_id}`);
  const records = readRecords(dir);
  const spans = new Map<string, Set<string>>();
  for (const r of records) {
    if (!r.trace_id || !r.span_id) continue;
    if (!spans.has(r.trace_id)) spans.set(r.trace_id, new Set());
    spans.get(r.trace_id)!.add(r.span_id);
  }
  for (const r of records) {
    if (r.parent_span_id === undefined) continue;
    assert.ok(spans.get(r.trace_id)?.has(r.parent_span_id), `parent ${r.parent_span_id} of ${r.kind} ${r.span_id} is not a span of trace ${r.trace_id}`);
  }
  return agentRecords(records);
}

/** Shuts the log down and checks it. */
export async function closeAndCheck(dir: string, opts: { allow?: string[] } = {}): Promise<Rec[]> {
  assert.equal(await audit.shutdown(), true);
  return checkLog(dir, opts);
}

/** The absolute path of the compiled CommonJS entry point (for workers and child processes). */
export const ENTRY = require.resolve('agent-audit');

/** The package directory (node/). */
export const PACKAGE_DIR = path.resolve(path.dirname(ENTRY), '..', '..');
