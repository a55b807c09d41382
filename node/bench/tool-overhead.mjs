#!/usr/bin/env node
// `npm run bench` (in node/): what `audit.tool` costs the caller, next to
// its peers in the same run, plus the event loop and memory while the
// writer works. Runs against the built package (`import 'agent-audit'`).
//
// One trivial async tool, `async function add(a, b) { return a + b; }`, is
// called --calls times (default 200,000) through each candidate:
//
//   bare        the function itself
//   floor       a hand-written timing wrapper: two performance.now() reads
//               and one (name, duration) written to a fixed ring buffer
//   audit.tool  agent-audit's wrapper, log in a temporary directory, an
//               ephemeral Ed25519 signing key, every other option default
//               (arguments captured by name, redacted, hashed, signed
//               checkpoints, the built-in policy)
//   otel        OpenTelemetry: tracer.startActiveSpan around the call,
//               BasicTracerProvider + BatchSpanProcessor (defaults), the
//               AsyncLocalStorage context manager and an exporter that
//               discards; the span captures nothing of the call
//   otel+hash   the same span, plus sha256(JSON.stringify(args)) (node:crypto)
//               set as an attribute: the least a span can do to pin the
//               arguments
//   langsmith   LangSmith `traceable`, tracing on, a dummy key and
//               LANGSMITH_ENDPOINT on a closed local port (127.0.0.1:9):
//               it serializes, batches and tries to send as in production,
//               and fails to connect
//
// Timing. Calls run in blocks of --block (100); a block is timed with two
// process.hrtime.bigint() reads, so the timer's cost and resolution are
// spread over 100 calls. Each block runs inside a parent of its own library
// (an audit.trace, an OTel span, a LangSmith run), entered and left outside
// the timed region, as tools run inside an agent's task, and the event loop
// is yielded to (setImmediate) between blocks so the libraries' timers and
// background work run as in an application that does I/O. The candidates
// take turns in rounds (each runs --blocks-per-round blocks per turn, the
// first one rotating), so drift on a busy machine hits all alike. Per
// candidate: p50 and p99 of the per-call time over its blocks, and the
// overhead over bare at the same percentile.
//
// LangSmith runs in a process of its own, interleaved with a bare baseline
// of that process: with nowhere to send, its client keeps every run in
// memory (up to 1 GB), and that heap would slow the garbage collection of
// the candidates sharing it.
//
// Event loop and memory. A fresh process records --events (100,000) audit
// tool calls, in traces of 1,000, yielding to the event loop (setImmediate)
// every --yield-every (10) calls, as an agent's tool calls are separated by
// I/O, then flushes, while perf_hooks.monitorEventLoopDelay (1 ms
// resolution) records the loop's delay; RSS is sampled every 100 calls.
// What the delay shows beyond the baseline is what stalls the loop (the
// writer, a full queue, flushing, garbage collection) on top of the work
// of --yield-every calls per turn. The baseline follows in the same
// process: the same workload with the bare tool, run as long (at most
// 10 s), which samples the machine's own noise. LangSmith runs the same in
// another process, for contrast. The delay figures are as the histogram
// records them: they include its 1 ms sampling interval.
//
// Targets (printed PASS / FAIL; the exit status is 0 unless --check):
//   audit.tool p50 overhead <= the OTel span's, and <= half the OTel+hash's;
//   event-loop delay p99 < 5 ms while the audit events are written;
//   RSS growth (peak - start) < 50 MB over the audit events;
//   both in two runs: with the default settings (a full queue drops
//   events, counted in a gap record, and never waits) and with overflow
//   'block' (a full queue waits for the writer, up to blockTimeoutMs),
//   where none of the events may be dropped.
//
// Options (flag, or environment variable):
//   --calls N             AGENT_AUDIT_BENCH_CALLS    calls per candidate (200000)
//   --events N            AGENT_AUDIT_BENCH_EVENTS   events of the event-loop / RSS run (100000)
//   --block N             calls per timed block (100)
//   --blocks-per-round N  blocks per candidate per turn (20; fewer when that leaves < 10 rounds)
//   --yield-every N       calls per event-loop turn in the event-loop / RSS run (10)
//   --no-langsmith        leave LangSmith out
//   --check               exit 1 when a target fails
//   --child KIND          internal: run one part and report JSON (KIND: timing, events);
//                         with --candidates a,b,… for timing and --lib audit|langsmith
//                         (and --overflow drop|block for audit) for events. Run by hand
//                         it prints the JSON (e.g. under --cpu-prof).
import { fork } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { setImmediate as yieldLoop } from 'node:timers/promises';

const SELF = fileURLToPath(import.meta.url);
const PACKAGE_DIR = path.resolve(path.dirname(SELF), '..');
const require = createRequire(path.join(PACKAGE_DIR, 'package.json'));

const CLOSED_PORT_URL = 'http://127.0.0.1:9';
const TARGET_OTEL_FACTOR = 1;
const TARGET_OTEL_HASH_FACTOR = 0.5;
const TARGET_LOOP_P99_MS = 5;
const TARGET_RSS_GROWTH_MB = 50;
const EVENTS_PER_TRACE = 1000;
const RSS_EVERY = 100;

const LABELS = {
  bare: 'bare call',
  floor: 'hand-written timing wrapper (floor)',
  audit: 'audit.tool (captures the arguments)',
  otel: 'OTel startActiveSpan, batch processor, ALS context',
  'otel-hash': 'OTel span + sha256(JSON.stringify(args))',
  langsmith: 'LangSmith traceable, closed local port',
};
const ROW = { bare: 'bare', floor: 'floor', audit: 'audit.tool', otel: 'otel', 'otel-hash': 'otel+hash', langsmith: 'langsmith' };

// ------------------------------------------------------------- options

function parseArgs(argv) {
  const envInt = (name, dflt) => (process.env[name] ? Number(process.env[name]) : dflt);
  const o = {
    calls: envInt('AGENT_AUDIT_BENCH_CALLS', 200_000),
    events: envInt('AGENT_AUDIT_BENCH_EVENTS', 100_000),
    block: 100,
    blocksPerRound: 20,
    yieldEvery: 10,
    langsmith: true,
    check: false,
    child: undefined,
    candidates: undefined,
    lib: undefined,
    overflow: 'drop',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v;
    };
    const int = () => {
      const v = Number(value().replace(/_/g, ''));
      if (!Number.isInteger(v) || v < 1) usage(`${flag} needs a positive integer`);
      return v;
    };
    switch (flag) {
      case '--calls': o.calls = int(); break;
      case '--events': o.events = int(); break;
      case '--block': o.block = int(); break;
      case '--blocks-per-round': o.blocksPerRound = int(); break;
      case '--yield-every': o.yieldEvery = int(); break;
      case '--no-langsmith': o.langsmith = false; break;
      case '--check': o.check = true; break;
      case '--child': o.child = value(); break;
      case '--candidates': o.candidates = value().split(','); break;
      case '--lib': o.lib = value(); break;
      case '--overflow': {
        const v = value();
        if (v !== 'drop' && v !== 'block') usage('--overflow needs drop or block');
        o.overflow = v;
        break;
      }
      case '-h': case '--help': usage(undefined); break;
      default: usage(`unknown option ${a}`);
    }
  }
  for (const [k, v] of [['calls', o.calls], ['events', o.events]]) {
    if (!Number.isInteger(v) || v < 1) usage(`${k} must be a positive integer (got ${v})`);
  }
  return o;
}

function usage(error) {
  const lines = fs.readFileSync(SELF, 'utf8').split('\n').slice(1);
  const text = lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).map((l) => l.slice(3)).join('\n');
  if (error) {
    process.stderr.write(`tool-overhead: ${error}\n`);
    process.exit(2);
  }
  process.stdout.write(text + '\n');
  process.exit(0);
}

// ------------------------------------------------------------ the tool

async function add(a, b) {
  return a + b;
}

// The floor: two clock reads and a (name, duration) into a ring buffer.
const RING_SIZE = 4096;
const ringMs = new Float64Array(RING_SIZE);
const ringNames = new Array(RING_SIZE);
let ringAt = 0;
function timed(name, fn) {
  return async function (...args) {
    const t0 = performance.now();
    try {
      return await fn.apply(this, args);
    } finally {
      const i = ringAt++ & (RING_SIZE - 1);
      ringMs[i] = performance.now() - t0;
      ringNames[i] = name;
    }
  };
}

function ephemeralKeyPem() {
  return generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

function versionOf(pkg) {
  try {
    return require(`${pkg}/package.json`).version;
  } catch {
    let dir = path.dirname(require.resolve(pkg));
    while (dir !== path.dirname(dir)) {
      const pj = path.join(dir, 'package.json');
      if (fs.existsSync(pj)) {
        const meta = JSON.parse(fs.readFileSync(pj, 'utf8'));
        if (meta.name === pkg) return meta.version;
      }
      dir = path.dirname(dir);
    }
    return '?';
  }
}

/** LangSmith pointed at a closed port; its console output counted, not printed. */
async function loadLangsmith() {
  process.env.LANGSMITH_TRACING = 'true';
  process.env.LANGSMITH_ENDPOINT = CLOSED_PORT_URL;
  process.env.LANGSMITH_API_KEY = 'lsv2_bench_dummy_key';
  process.env.LANGSMITH_PROJECT = 'agent-audit-bench';
  const silenced = { count: 0 };
  for (const m of ['log', 'info', 'warn', 'error', 'debug']) console[m] = () => void silenced.count++;
  const { traceable } = await import('langsmith/traceable');
  return { traceable, silenced };
}

// ---------------------------------------------------------- candidates

/**
 * Each candidate: `fn` (the wrapped tool), `parent(body)` (runs body inside
 * a parent of the candidate's own library) and `finish()` (flushes, returns
 * what it did with the events).
 */
async function makeCandidates(names, tmp) {
  const out = {};
  let tracer;
  let exporter;
  let provider;
  const needOtel = names.some((n) => n.startsWith('otel'));
  if (needOtel) {
    const api = await import('@opentelemetry/api');
    const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
    const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
    exporter = {
      exported: 0,
      export(spans, done) {
        this.exported += spans.length;
        done({ code: 0 }); // ExportResultCode.SUCCESS
      },
      shutdown: () => Promise.resolve(),
      forceFlush: () => Promise.resolve(),
    };
    provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(exporter)] });
    api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    api.trace.setGlobalTracerProvider(provider);
    tracer = api.trace.getTracer('agent-audit-bench');
    const otelWrap = (name, fn, hash) =>
      function (...args) {
        return tracer.startActiveSpan(name, async (span) => {
          if (hash) span.setAttribute('tool.args.sha256', createHash('sha256').update(JSON.stringify(args)).digest('hex'));
          try {
            return await fn.apply(this, args);
          } catch (e) {
            span.recordException(e);
            span.setStatus({ code: api.SpanStatusCode.ERROR });
            throw e;
          } finally {
            span.end();
          }
        });
      };
    const otelParent = (body) =>
      tracer.startActiveSpan('bench_task', async (span) => {
        try {
          return await body();
        } finally {
          span.end();
        }
      });
    // Spans started: every call and every parent of both OTel candidates.
    const otelFinish = async () => {
      await provider.forceFlush();
      const spans = ['otel', 'otel-hash'].reduce((n, k) => n + (out[k] ? out[k].calls + out[k].parents : 0), 0);
      return { spans, exported: exporter.exported };
    };
    for (const [name, hash] of [['otel', false], ['otel-hash', true]]) {
      if (!names.includes(name)) continue;
      out[name] = { fn: otelWrap('math.add', add, hash), parent: otelParent, finish: otelFinish };
    }
  }
  if (names.includes('bare')) out.bare = { fn: add, parent: (body) => body(), finish: async () => ({}) };
  if (names.includes('floor')) {
    out.floor = { fn: timed('math.add', add), parent: (body) => body(), finish: async () => ({ recorded: ringAt }) };
  }
  if (names.includes('audit')) {
    const audit = await import('agent-audit');
    const dir = path.join(tmp, 'audit-log');
    audit.init({ dir, signingKeyPem: ephemeralKeyPem(), tenantId: 'bench', agentId: 'bench-agent' });
    out.audit = {
      fn: audit.tool('math.add', add),
      parent: (body) => audit.trace('bench_task', body),
      finish: async () => {
        await audit.flush(60_000);
        const s = audit.stats();
        await audit.shutdown(60_000);
        const report = await audit.verify(dir);
        return { written: s.written, dropped: s.dropped, notLogged: s.notLogged, records: report.records, tampered: report.tampered, findings: report.findings.length };
      },
    };
  }
  if (names.includes('langsmith')) {
    const { traceable, silenced } = await loadLangsmith();
    out.langsmith = {
      fn: traceable(add, { name: 'math.add', run_type: 'tool' }),
      parent: (body) => traceable(body, { name: 'bench_task', run_type: 'chain' })(),
      finish: async () => ({ consoleMessagesSuppressed: silenced.count }),
    };
  }
  for (const c of Object.values(out)) Object.assign(c, { calls: 0, parents: 0 });
  return out;
}

// --------------------------------------------------------------- timing

/** Runs `blocks` timed blocks of `block` calls, each inside a parent; pushes ns per call. */
async function runBlocks(c, blocks, block, samples) {
  const fn = c.fn;
  for (let b = 0; b < blocks; b++) {
    await c.parent(async () => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < block; i++) await fn(i, 1);
      const t1 = process.hrtime.bigint();
      if (samples) samples.push(Number(t1 - t0) / block);
    });
    c.calls += block;
    c.parents++;
    await yieldLoop();
  }
}

async function childTiming(o) {
  const names = o.candidates ?? ['bare', 'floor', 'audit', 'otel', 'otel-hash'];
  for (const n of names) if (!(n in LABELS)) throw new Error(`unknown candidate ${n}`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-audit-bench-'));
  try {
    const cands = await makeCandidates(names, tmp);
    const blocks = Math.max(1, Math.ceil(o.calls / o.block));
    const perRound = Math.max(1, Math.min(o.blocksPerRound, Math.floor(blocks / 10)));
    const rounds = Math.ceil(blocks / perRound);
    // Warm-up (JIT, lazy initialisation): a tenth of the calls, at most 10,000, untimed.
    const warmBlocks = Math.max(1, Math.min(Math.ceil(blocks / 10), Math.ceil(10_000 / o.block)));
    for (const n of names) await runBlocks(cands[n], warmBlocks, o.block, undefined);
    const samples = Object.fromEntries(names.map((n) => [n, []]));
    const t0 = Date.now();
    for (let r = 0; r < rounds; r++) {
      const todo = Math.min(perRound, blocks - r * perRound);
      for (let k = 0; k < names.length; k++) {
        const n = names[(r + k) % names.length];
        await runBlocks(cands[n], todo, o.block, samples[n]);
      }
    }
    const seconds = (Date.now() - t0) / 1000;
    const results = {};
    for (const n of names) {
      const s = samples[n].slice().sort((a, b) => a - b);
      results[n] = { p50: pct(s, 50), p99: pct(s, 99), mean: s.reduce((x, y) => x + y, 0) / s.length, blocks: s.length };
    }
    const finished = {};
    for (const n of names) finished[n] = await cands[n].finish();
    return { kind: 'timing', names, results, finished, rounds, perRound, block: o.block, calls: blocks * o.block, seconds };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

// ------------------------------------------------- event loop and memory

const mb = (bytes) => bytes / (1024 * 1024);

const BASELINE_MAX_MS = 10_000;

/**
 * Calls `fn` `events` times (and for at least `minMs`) in tasks of 1,000,
 * yielding to the event loop every `yieldEvery` calls, then runs `after`;
 * the event-loop delay and RSS over all of it.
 */
async function eventRun({ fn, parent, events, yieldEvery, minMs = 0, after }) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  const rssStart = process.memoryUsage.rss();
  let rssPeak = rssStart;
  const t0 = performance.now();
  h.enable();
  let done = 0;
  while (done < events || performance.now() - t0 < minMs) {
    const inTask = Math.min(EVENTS_PER_TRACE, Math.max(events - done, yieldEvery));
    await parent(async () => {
      for (let i = 0; i < inTask; i++) {
        await fn(i, 1);
        if ((i + 1) % RSS_EVERY === 0) {
          const rss = process.memoryUsage.rss();
          if (rss > rssPeak) rssPeak = rss;
        }
        if ((i + 1) % yieldEvery === 0) await yieldLoop();
      }
    });
    done += inTask;
  }
  const callsMs = performance.now() - t0;
  const extra = after ? await after() : {};
  h.disable();
  const rssEnd = process.memoryUsage.rss();
  if (rssEnd > rssPeak) rssPeak = rssEnd;
  return {
    calls: done,
    callsMs,
    totalMs: performance.now() - t0,
    delayMs: { p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6, samples: h.count },
    rssMb: { start: mb(rssStart), peak: mb(rssPeak), end: mb(rssEnd) },
    ...extra,
  };
}

/**
 * The run through `tool`, then the baseline: the bare tool, same workload,
 * for as long as the run took (at most 10 s), so that the machine's own
 * noise is sampled as long.
 */
async function eventRuns(o, tool, parent, after) {
  const y = o.yieldEvery;
  const warm = Math.min(1000, o.events);
  const plain = (body) => body();
  // Warm-up: JIT, and the library's lazy set-up.
  await eventRun({ fn: add, parent: plain, events: warm, yieldEvery: y });
  await eventRun({ fn: tool, parent, events: warm, yieldEvery: y, after });
  const run = await eventRun({ fn: tool, parent, events: o.events, yieldEvery: y, after });
  const bare = await eventRun({ fn: add, parent: plain, events: o.events, yieldEvery: y, minMs: Math.min(run.totalMs, BASELINE_MAX_MS) });
  return { run, bare };
}

async function childEvents(o) {
  const lib = o.lib ?? 'audit';
  if (lib === 'audit') {
    const audit = await import('agent-audit');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-audit-bench-events-'));
    try {
      const dir = path.join(tmp, 'audit-log');
      audit.init({
        dir, signingKeyPem: ephemeralKeyPem(), tenantId: 'bench', agentId: 'bench-agent',
        overflow: o.overflow, blockTimeoutMs: 1000,
      });
      const tool = audit.tool('math.add', add);
      const parent = (body) => audit.trace('bench_task', body);
      let before;
      let after;
      // The run's window ends when everything it emitted is written.
      const flush = async () => {
        const flushed = await audit.flush(60_000);
        [before, after] = [after, audit.stats()];
        return { flushed };
      };
      const { run, bare } = await eventRuns(o, tool, parent, flush);
      await audit.shutdown(60_000);
      const report = await audit.verify(dir);
      return {
        kind: 'events', lib, bare, run,
        written: after.written - before.written, dropped: after.dropped - before.dropped,
        records: report.records, tampered: report.tampered, findings: report.findings.length,
      };
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  if (lib === 'langsmith') {
    const { traceable, silenced } = await loadLangsmith();
    const tool = traceable(add, { name: 'math.add', run_type: 'tool' });
    const parent = (body) => traceable(body, { name: 'bench_task', run_type: 'chain' })();
    const { run, bare } = await eventRuns(o, tool, parent, undefined);
    return { kind: 'events', lib, bare, run, consoleMessagesSuppressed: silenced.count };
  }
  throw new Error(`unknown --lib ${lib}`);
}

// ------------------------------------------------------------ orchestration

function runChild(args) {
  return new Promise((resolve) => {
    const child = fork(SELF, args, { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    let result;
    child.stdout.on('data', (d) => process.stderr.write(d));
    child.on('message', (m) => (result = m));
    child.on('exit', (code, signal) => {
      if (result && result.error === undefined) resolve(result);
      else resolve({ error: result?.error ?? `child ${args.join(' ')} exited with ${signal ?? code}` });
    });
  });
}

const fmtUs = (ns) => (Number.isFinite(ns) ? (ns / 1000).toFixed(3) : 'n/a');
const fmtX = (x) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : 'n/a');
const fmtMs = (ms) => ms.toFixed(2);
const fmtMb = (m) => m.toFixed(1);
const int = (n) => n.toLocaleString('en-US');
const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
const pad = (s, n) => String(s).padEnd(n);
const lpad = (s, n) => String(s).padStart(n);

async function main(o) {
  const out = (line = '') => process.stdout.write(line + '\n');
  const load = os.loadavg().map((x) => x.toFixed(2)).join(' ');
  out(`agent-audit ${versionOf('agent-audit')}: tool-call overhead, node ${process.version} ${process.platform}-${process.arch}, ` +
    `${os.cpus().length} CPUs, load ${load}`);
  out(`peers: @opentelemetry/sdk-trace-base ${versionOf('@opentelemetry/sdk-trace-base')}, ` +
    `@opentelemetry/context-async-hooks ${versionOf('@opentelemetry/context-async-hooks')}, langsmith ${versionOf('langsmith')}`);
  const common = ['--calls', String(o.calls), '--block', String(o.block), '--blocks-per-round', String(o.blocksPerRound)];

  const timing = await runChild(['--child', 'timing', '--candidates', 'bare,floor,audit,otel,otel-hash', ...common]);
  if (timing.error) throw new Error(`timing run failed: ${timing.error}`);
  const ls = o.langsmith ? await runChild(['--child', 'timing', '--candidates', 'bare,langsmith', ...common]) : undefined;

  out();
  out(`per call, ${int(timing.calls)} calls per candidate in blocks of ${timing.block}, ${timing.rounds} rounds of ${timing.perRound} blocks ` +
    `(${timing.seconds.toFixed(1)} s); overhead = candidate - bare at the same percentile`);
  out(`${pad('candidate', 12)}${pad('', 52)}${lpad('p50 µs', 10)}${lpad('p99 µs', 10)}${lpad('+p50 µs', 10)}${lpad('+p99 µs', 10)}`);
  const row = (n, r, base, note = '') =>
    out(`${pad(ROW[n], 12)}${pad(LABELS[n] + note, 52)}${lpad(fmtUs(r.p50), 10)}${lpad(fmtUs(r.p99), 10)}` +
      `${lpad(n === 'bare' ? '-' : fmtUs(r.p50 - base.p50), 10)}${lpad(n === 'bare' ? '-' : fmtUs(r.p99 - base.p99), 10)}`);
  for (const n of timing.names) row(n, timing.results[n], timing.results.bare);
  if (ls && !ls.error) {
    out(`(LangSmith in its own process, ${ls.rounds} rounds, ${ls.seconds.toFixed(1)} s, against that process's bare call:)`);
    row('bare', ls.results.bare, ls.results.bare, ' (LangSmith process)');
    row('langsmith', ls.results.langsmith, ls.results.bare);
  } else if (ls) {
    out(`langsmith   failed: ${ls.error}`);
  }

  const f = timing.finished;
  out(`audit log: ${int(f.audit.written)} records written, ${int(f.audit.dropped)} dropped, ${int(f.audit.notLogged)} not logged; ` +
    `verify: ${int(f.audit.records)} records, ${f.audit.tampered ? 'TAMPERED' : 'not tampered'}, ${f.audit.findings} findings`);
  out(`otel: ${int(f.otel.exported)} of ${int(f.otel.spans)} spans exported (one provider for both otel rows, parents included)`);
  if (ls && !ls.error) out(`langsmith: ${int(ls.finished.langsmith.consoleMessagesSuppressed)} console messages suppressed`);

  const over = (n) => timing.results[n].p50 - timing.results.bare.p50;
  const a = over('audit');
  out();
  out('ratios of p50 overheads');
  out(`${pad('audit.tool / floor', 30)}${lpad(fmtX(a / over('floor')), 10)}`);
  const vsOtel = a / over('otel');
  const vsHash = a / over('otel-hash');
  out(`${pad('audit.tool / otel', 30)}${lpad(fmtX(vsOtel), 10)}   target <= ${TARGET_OTEL_FACTOR.toFixed(2)}x   ${verdict(a <= TARGET_OTEL_FACTOR * over('otel'))}`);
  out(`${pad('audit.tool / otel+hash', 30)}${lpad(fmtX(vsHash), 10)}   target <= ${TARGET_OTEL_HASH_FACTOR.toFixed(2)}x   ${verdict(a <= TARGET_OTEL_HASH_FACTOR * over('otel-hash'))}`);
  if (ls && !ls.error) {
    const lsOver = ls.results.langsmith.p50 - ls.results.bare.p50;
    out(`${pad('audit.tool / langsmith', 30)}${lpad(fmtX(a / lsOver), 10)}`);
  }
  const targets = [a <= TARGET_OTEL_FACTOR * over('otel'), a <= TARGET_OTEL_HASH_FACTOR * over('otel-hash')];

  const evArgs = ['--events', String(o.events), '--yield-every', String(o.yieldEvery)];
  const ev = await runChild(['--child', 'events', '--lib', 'audit', ...evArgs]);
  if (ev.error) throw new Error(`audit events run failed: ${ev.error}`);
  const evBlock = await runChild(['--child', 'events', '--lib', 'audit', '--overflow', 'block', ...evArgs]);
  if (evBlock.error) throw new Error(`audit events run (overflow block) failed: ${evBlock.error}`);
  const lsEv = o.langsmith ? await runChild(['--child', 'events', '--lib', 'langsmith', ...evArgs]) : undefined;
  out();
  out(`event loop and RSS while ${int(o.events)} tool calls are recorded (tasks of ${int(EVENTS_PER_TRACE)}, the loop yielded to every ${o.yieldEvery} calls; ` +
    'delay as monitorEventLoopDelay records it, 1 ms resolution included)');
  out(`${pad('run', 44)}${lpad('ms', 10)}${lpad('delay p50', 11)}${lpad('p99', 8)}${lpad('max', 8)}` +
    `${lpad('RSS start', 11)}${lpad('peak', 8)}${lpad('end', 8)}${lpad('growth', 8)}  (ms, MB)`);
  const evRow = (label, r, tail = '') =>
    out(`${pad(label, 44)}${lpad(fmtMs(r.totalMs), 10)}${lpad(fmtMs(r.delayMs.p50), 11)}${lpad(fmtMs(r.delayMs.p99), 8)}` +
      `${lpad(fmtMs(r.delayMs.max), 8)}${lpad(fmtMb(r.rssMb.start), 11)}${lpad(fmtMb(r.rssMb.peak), 8)}` +
      `${lpad(fmtMb(r.rssMb.end), 8)}${lpad(fmtMb(r.rssMb.peak - r.rssMb.start), 8)}${tail}`);
  evRow('events: audit.tool, until flushed', ev.run);
  evRow('events: audit.tool, overflow block', evBlock.run);
  evRow('events: bare, as long (audit process)', ev.bare);
  if (lsEv && !lsEv.error) {
    evRow('events: langsmith', lsEv.run);
    evRow('events: bare, as long (LangSmith process)', lsEv.bare);
  } else if (lsEv) {
    out(`events: langsmith failed: ${lsEv.error}`);
  }
  for (const [label, r] of [['audit log', ev], ['audit log, overflow block', evBlock]]) {
    out(`${label}: ${int(r.written)} records written, ${int(r.dropped)} dropped; verify: ${int(r.records)} records, ` +
      `${r.tampered ? 'TAMPERED' : 'not tampered'}, ${r.findings} findings`);
  }
  // Both runs count: the default one drops what the queue cannot hold
  // (recorded as a gap) and never waits; the lossless one waits for room,
  // so its figures are those of every event written.
  const p99 = Math.max(ev.run.delayMs.p99, evBlock.run.delayMs.p99);
  const loopOk = p99 < TARGET_LOOP_P99_MS;
  const growth = Math.max(ev.run.rssMb.peak - ev.run.rssMb.start, evBlock.run.rssMb.peak - evBlock.run.rssMb.start);
  const rssOk = growth < TARGET_RSS_GROWTH_MB;
  out(`${pad('event-loop delay p99, audit', 30)}${lpad(`${fmtMs(p99)} ms`, 10)}   target < ${TARGET_LOOP_P99_MS} ms       ${verdict(loopOk)}   (bare, as long: ${fmtMs(ev.bare.delayMs.p99)} ms)`);
  out(`${pad('RSS growth, audit', 30)}${lpad(`${fmtMb(growth)} MB`, 10)}   target < ${TARGET_RSS_GROWTH_MB} MB      ${verdict(rssOk)}`);
  const allWritten = evBlock.dropped === 0 && evBlock.written >= o.events;
  out(`${pad('events dropped, overflow block', 30)}${lpad(int(evBlock.dropped), 10)}   target 0 (every event written)   ${verdict(allWritten)}`);
  targets.push(loopOk, rssOk, allWritten);
  const failed = targets.filter((t) => !t).length;
  out();
  out(failed === 0 ? 'all targets PASS' : `${failed} of ${targets.length} targets FAIL`);
  return o.check && failed > 0 ? 1 : 0;
}

// ------------------------------------------------------------------ entry

const opts = parseArgs(process.argv.slice(2));
if (opts.child) {
  const run = opts.child === 'timing' ? childTiming : opts.child === 'events' ? childEvents : undefined;
  if (!run) usage(`unknown --child ${opts.child}`);
  let msg;
  try {
    msg = await run(opts);
  } catch (e) {
    msg = { error: e instanceof Error ? `${e.stack}` : String(e) };
  }
  // Exit at once: LangSmith's client would keep retrying the closed port.
  if (process.send) process.send(msg, () => process.exit(msg.error ? 1 : 0));
  else {
    process.stdout.write(JSON.stringify(msg, null, 2) + '\n');
    process.exit(msg.error ? 1 : 0);
  }
} else {
  try {
    process.exitCode = await main(opts);
  } catch (e) {
    process.stderr.write(`tool-overhead: ${e instanceof Error ? e.message : e}\n`);
    process.exitCode = 1;
  }
}
