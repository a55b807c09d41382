/**
 * agent-audit for Node.js: tamper-evident audit trails for AI agents.
 *
 * ```ts
 * import * as audit from 'agent-audit';
 * audit.init({ dir: './audit', tenantId: 'acme', agentId: 'support-v2' });
 * const query = audit.tool('db.query', async (sql: string) => db.run(sql), { version: '2.3.1' });
 * await audit.trace('customer_support', { userId }, async (t) => { await query('select 1'); });
 * await audit.shutdown();
 * ```
 *
 * Each call captures the event on the caller's thread (ids, times, a copy
 * of the arguments) and hands it to the native writer, which redacts,
 * hashes, chains, signs and writes it on its own thread. Nothing here
 * blocks the event loop except the last drain on `exit`, bounded by
 * `exitTimeoutMs`.
 * @module
 */
import { isMainThread } from 'node:worker_threads';
import * as native from './native.js';
import {
  AlreadyInitializedError,
  InvalidArgumentError,
  ToolBlockedError,
  fromNative,
} from './errors.js';
import {
  askApproval,
  installAlertHandler,
  onAlert as setAlertHandler,
  requestOf,
  setApprover,
  type Alert,
  type ApprovalOutcome,
  type Approver,
} from './policy.js';
import {
  bind,
  currentFrame,
  currentTrace,
  storage,
  validCaptured,
  type CapturedContext,
  type Frame,
  type PrincipalFields,
} from './context.js';

export * from './errors.js';
export { currentTrace, setApprover };
export type { Alert, Approval, ApprovalAnswer, ApprovalOutcome, ApprovalRequest, Approver } from './policy.js';
export type { CapturedContext, PrincipalFields };

// ---------------------------------------------------------------- options

/** Redaction settings (see the core's `RedactionOptions`). */
export interface RedactionOptions {
  customPatterns?: Record<string, string>;
  allowValues?: string[];
  allowPatterns?: string[];
  secretKeys?: string[];
}

/** Options of {@link init}. Only `dir` is required. */
export interface InitOptions {
  /** Log directory; this process writes one stream under it. */
  dir: string;
  /** Path of an Ed25519 PKCS#8 PEM signing key (`agent-audit keygen`). */
  signingKey?: string;
  /** The signing key as PEM text. */
  signingKeyPem?: string;
  tenantId?: string;
  agentId?: string;
  userId?: string;
  sessionId?: string;
  caller?: 'human' | 'system';
  /** Default retention class (`standard_7y`). */
  retentionClass?: string;
  /** Policy version stamped on every event (default: the policy's own). */
  policyVersion?: string;
  /**
   * The policy: the path of a TOML policy file (docs/policy.md),
   * `builtin` (the default: the built-in rule pack, which flags and routes
   * for review but blocks nothing) or `off`. A bad file throws a
   * {@link ConfigError} naming the file, line and reason.
   */
  policy?: string;
  /** The policy as TOML text instead of a file. */
  policyToml?: string;
  /** Answers `require_approval` rules (see {@link setApprover}). */
  approver?: Approver;
  /** Bound of an approval (default 30 000 ms). */
  approvalTimeoutMs?: number;
  /** Receives `alert` verdicts (see {@link onAlert}). */
  onAlert?: (alert: Alert) => void;
  /** `hash` | `redacted` (default) | `raw`. */
  capture?: 'hash' | 'redacted' | 'raw';
  /** Tenant hashing key: keyed argument hashes and redaction tokens. */
  hashingKey?: string;
  hashUserIds?: boolean;
  redaction?: RedactionOptions;
  queueCapacity?: number;
  queueMaxBytes?: number;
  /** `drop` (default: never wait) or `block` (wait up to `blockTimeoutMs`). */
  overflow?: 'drop' | 'block';
  blockTimeoutMs?: number;
  checkpointEvery?: number;
  checkpointIntervalMs?: number;
  /** `always`, `never` or an interval in milliseconds. */
  fsync?: 'always' | 'never' | number;
  segmentMaxBytes?: number;
  signRecords?: boolean;
  maxStringBytes?: number;
  /**
   * Ship the log off the machine from a background thread of this
   * process: an exporter URL, `nats://HOST:PORT` (NATS JetStream). The
   * exporter follows `dir` with a persisted cursor, retries with back-off
   * while the receiver is down (reported once per outage on stderr,
   * counted in {@link exportStats}) and never slows or fails a logged
   * call. What it has not shipped at exit stays in `dir` for the next
   * exporter (the next run, or an `agent-audit ship` sidecar);
   * {@link shutdown} ships the tail within its timeout. Collect centrally
   * with `npx agent-audit collect --from nats://… --to CENTRAL --trust
   * PUB.pem`. A malformed or unsupported URL throws {@link ConfigError}.
   */
  export?: string;
  /**
   * The exporter's name: its cursor is `dir/.ship-cursor.<name>.json`
   * (default from the URL's scheme: `nats`).
   */
  exportName?: string;
  /** Bound of the drain on exit and on SIGTERM / SIGINT (default 5000 ms). */
  exitTimeoutMs?: number;
  /** Install the beforeExit / exit / SIGTERM / SIGINT hooks (default true, main thread only). */
  exitHooks?: boolean;
}

/** What {@link init} opened. */
export interface LogInfo {
  /** This process's stream id. */
  streamId: string;
  /** Absolute log directory. */
  dir: string;
  /** True when a worker joined the writer another thread had opened. */
  joined: boolean;
}

// ------------------------------------------------------------------ state

let log: native.NativeLog | undefined;
// The last log shut down here, for its exporter's final stats.
let closedLog: native.NativeLog | undefined;
let exitTimeoutMs = 5000;
let emittedSinceFlush = 0;
let notLogged = 0;
let warned = false;

function warnOnce(message: string): void {
  notLogged++;
  if (warned) return;
  warned = true;
  process.emitWarning(message, { code: 'AGENT_AUDIT_NOT_LOGGED' });
}

// ------------------------------------------------------- the copy to Rust

/**
 * A value already copied as JSON text (a call's arguments, taken when the
 * call starts); {@link plainJson} inlines it.
 */
class RawJson {
  constructor(readonly text: string) {}
}

const MAX_PLAIN_DEPTH = 64;
const MAX_PLAIN_NODES = 10_000;

function jsonOf(x: unknown, depth: number, budget: { nodes: number }): string | undefined {
  if (++budget.nodes > MAX_PLAIN_NODES || depth > MAX_PLAIN_DEPTH) return undefined;
  switch (typeof x) {
    case 'string':
      // Lone surrogates take the native path (which writes U+FFFD).
      return (x as unknown as { isWellFormed(): boolean }).isWellFormed() ? JSON.stringify(x) : undefined;
    case 'number':
      // Non-finite numbers and integers past 2^53 take the native path,
      // which marks or keeps them exactly as the log stores them.
      return Number.isFinite(x) && (!Number.isInteger(x) || Number.isSafeInteger(x)) ? JSON.stringify(x) : undefined;
    case 'boolean':
      return x ? 'true' : 'false';
    case 'object': {
      if (x === null) return 'null';
      if (x instanceof RawJson) return x.text;
      const proto = Object.getPrototypeOf(x);
      if (Array.isArray(x)) {
        if (proto !== Array.prototype) return undefined;
        let out = '[';
        for (let i = 0; i < x.length; i++) {
          const item = x[i];
          const j = item === undefined ? 'null' : jsonOf(item, depth + 1, budget);
          if (j === undefined) return undefined;
          out += i === 0 ? j : `,${j}`;
        }
        return `${out}]`;
      }
      if (proto !== Object.prototype && proto !== null) return undefined;
      let out = '{';
      let first = true;
      for (const k of Object.keys(x)) {
        const v = (x as Record<string, unknown>)[k];
        if (v === undefined) continue;
        const j = jsonOf(v, depth + 1, budget);
        if (j === undefined || !(k as unknown as { isWellFormed(): boolean }).isWellFormed()) return undefined;
        out += `${first ? '' : ','}${JSON.stringify(k)}:${j}`;
        first = false;
      }
      return `${out}}`;
    }
    default:
      // undefined, bigint, symbol, function: the native converter knows them.
      return undefined;
  }
}

/**
 * The JSON text of a value that holds only plain data (null, booleans,
 * finite numbers, well-formed strings, arrays and plain objects, copies
 * already taken), as the native converter would store it; undefined when
 * anything else is inside (Map, Date, bigint, NaN, class instances,
 * cycles, very deep or large values), which then takes the native path.
 */
function plainJson(x: unknown): string | undefined {
  try {
    return jsonOf(x, 0, { nodes: 0 });
  } catch {
    return undefined; // a getter threw: the native path records it
  }
}

/** Copies already taken as text, parsed back for the native converter. */
function unraw(event: Record<string, unknown>): Record<string, unknown> {
  const p = event.payload as Record<string, unknown> | undefined;
  if (p && typeof p === 'object') {
    for (const k of Object.keys(p)) {
      const v = p[k];
      if (v instanceof RawJson) p[k] = JSON.parse(v.text) as unknown;
    }
  }
  return event;
}

/**
 * Hands an event to the writer: as JSON text when it holds only plain
 * data (JSON.stringify of the envelope, the payload's parts checked and
 * copied by {@link plainJson}), else through the native converter, which
 * also takes what the text path refuses (a lone surrogate, say).
 */
function send(l: native.NativeLog, event: Record<string, unknown>): boolean {
  let payloadText = '';
  const payload = event.payload as Record<string, unknown> | undefined;
  if (payload !== undefined) {
    if (typeof payload !== 'object' || payload === null) return l.emit(unraw(event));
    let parts = '';
    for (const k of Object.keys(payload)) {
      const v = payload[k];
      if (v === undefined) continue;
      const j = v instanceof RawJson ? v.text : plainJson(v);
      if (j === undefined) return l.emit(unraw(event));
      parts += `${parts ? ',' : ''}${JSON.stringify(k)}:${j}`;
    }
    payloadText = `"payload":{${parts}}`;
  }
  // The envelope's own objects (principal, tool, risk, metadata, params …)
  // are small; only they need the check JSON.stringify does not make.
  for (const k of Object.keys(event)) {
    const v = event[k];
    if (k === 'payload') continue;
    if (typeof v === 'object' ? v !== null && plainJson(v) === undefined : typeof v === 'number' ? !Number.isFinite(v) : typeof v === 'bigint') {
      return l.emit(unraw(event));
    }
  }
  event.payload = undefined;
  let head: string;
  try {
    head = JSON.stringify(event);
  } finally {
    event.payload = payload;
  }
  const text = payloadText === '' ? head : head === '{}' ? `{${payloadText}}` : `${head.slice(0, -1)},${payloadText}}`;
  try {
    return l.emitJson(text);
  } catch {
    // Nothing was queued. Text the core cannot read (a lone surrogate in a
    // name) goes through the native converter, which writes U+FFFD; any
    // other refusal it repeats there with its own typed error.
    return l.emit(unraw(event));
  }
}

/**
 * Emits from the wrappers: never throws. Trouble is counted (`stats()`)
 * and reported once as a warning.
 */
function emitQuiet(event: Record<string, unknown>): boolean {
  const l = log;
  if (!l) {
    warnOnce('agent-audit: an event was not logged because init() has not been called (or shutdown() was)');
    return false;
  }
  try {
    const ok = send(l, event);
    emittedSinceFlush++;
    return ok;
  } catch (e) {
    warnOnce(`agent-audit: an event was not logged: ${fromNative(e).message}`);
    return false;
  }
}

/**
 * Emits an explicit event (`decision`, `memory` …): a malformed event is
 * API misuse and throws; a closed or missing log is logging trouble and
 * does not.
 */
function emitChecked(event: Record<string, unknown>): boolean {
  const l = log;
  if (!l) {
    warnOnce('agent-audit: an event was not logged because init() has not been called (or shutdown() was)');
    return false;
  }
  try {
    const ok = send(l, event);
    emittedSinceFlush++;
    return ok;
  } catch (e) {
    const err = fromNative(e);
    if (err.code === 'ERR_AUDIT_INVALID_EVENT') throw err;
    warnOnce(`agent-audit: an event was not logged: ${err.message}`);
    return false;
  }
}

// ------------------------------------------------------------- lifecycle

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;
let hooksInstalled = false;

function onBeforeExit(): void {
  // Only when something new was emitted, or beforeExit would fire forever.
  const l = log;
  if (!l || l.closed || emittedSinceFlush === 0) return;
  emittedSinceFlush = 0;
  l.flush(exitTimeoutMs).catch(() => undefined);
}

function onExit(): void {
  const l = log;
  if (l && !l.closed) l.shutdownSync(exitTimeoutMs);
}

function onSignal(signal: NodeJS.Signals): void {
  const l = log;
  const othersListen = process.listenerCount(signal) > 1;
  if (l && !l.closed) {
    // Another handler decides what happens next and may still log: flush
    // what is there. Alone, close the stream before the process goes.
    if (othersListen) l.flushSync(exitTimeoutMs);
    else l.shutdownSync(exitTimeoutMs);
  }
  if (!othersListen) {
    // Exit as Node would without a handler: by the signal itself.
    removeHooks();
    process.kill(process.pid, signal);
  }
}

function installHooks(): void {
  if (hooksInstalled || !isMainThread) return;
  hooksInstalled = true;
  process.on('beforeExit', onBeforeExit);
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function removeHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('beforeExit', onBeforeExit);
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/**
 * Opens the audit log. In a worker thread, `init` with the directory the
 * main thread opened joins the same writer (one stream per process).
 * Throws {@link ConfigError}, `KeyError` or `IoError` for a bad
 * configuration and {@link AlreadyInitializedError} when a log is open.
 */
export function init(options: InitOptions): LogInfo {
  if (typeof options !== 'object' || options === null || typeof options.dir !== 'string') {
    throw new InvalidArgumentError('init() needs an options object with a dir');
  }
  if (log && !log.closed) {
    throw new AlreadyInitializedError(`agent-audit is already initialised with ${log.dir}; call shutdown() first`);
  }
  const { exitTimeoutMs: t, exitHooks, approver, approvalTimeoutMs, onAlert: alerts, ...rest } = options;
  // Checked before the log opens, so a mistake opens nothing.
  if (approver !== undefined || approvalTimeoutMs !== undefined) {
    setApprover(approver, approvalTimeoutMs === undefined ? {} : { timeoutMs: approvalTimeoutMs });
  }
  if (alerts !== undefined) setAlertHandler(alerts);
  let opened: native.NativeLog;
  try {
    opened = native.openLog(rest);
  } catch (e) {
    throw fromNative(e);
  }
  log = opened;
  closedLog = undefined;
  // A worker that joined the main thread's writer keeps its handler.
  if (!opened.reused || alerts !== undefined) installAlertHandler(opened);
  exitTimeoutMs = typeof t === 'number' && t >= 0 ? t : 5000;
  emittedSinceFlush = 0;
  if (exitHooks !== false) installHooks();
  return { streamId: opened.streamId, dir: opened.dir, joined: opened.reused };
}

/**
 * Registers the function called with each `alert` verdict (or removes it
 * with `undefined`). It runs on the event loop, off the tool's path, and
 * never keeps the process alive.
 */
export function onAlert(fn: ((alert: Alert) => void) | undefined | null): void {
  setAlertHandler(fn, log);
}

/** Whether a log is open in this thread. */
export function isInitialized(): boolean {
  return log !== undefined && !log.closed;
}

/**
 * Writes everything emitted so far, off the event loop. Resolves to
 * false if it did not finish within `timeoutMs` (default 5000).
 */
export async function flush(timeoutMs = 5000): Promise<boolean> {
  const l = log;
  if (!l || l.closed) return true;
  emittedSinceFlush = 0;
  return l.flush(timeoutMs);
}

/**
 * Closes the stream (`stream_end`, a last signed checkpoint) off the event
 * loop and removes the exit hooks. In a worker thread it only flushes and
 * detaches: the main thread owns the process's writer. With
 * `init({ export })`, the exporter then ships what is left within the
 * rest of `timeoutMs` (at most 500 ms while its export attempts are
 * failing) and stops: {@link exportStats} tells how that went; the result
 * only says whether the stream closed in time.
 */
export async function shutdown(timeoutMs = 5000): Promise<boolean> {
  const l = log;
  if (!l) return true;
  log = undefined;
  closedLog = l;
  if (!isMainThread && l.reused) return l.closed ? true : l.flush(timeoutMs);
  removeHooks();
  return l.shutdown(timeoutMs);
}

/** Counters of the writer plus events this thread could not hand to it. */
export interface AuditStats extends native.LogStats {
  /** Events not logged here (no log, log closed, or refused). */
  notLogged: number;
}

/** Writer counters (written, dropped, queued …). */
export function stats(): AuditStats {
  const s = log?.stats() ?? {
    written: 0, dropped: 0, queued: 0, queuedBytes: 0, bytesWritten: 0, ioErrors: 0, checkpoints: 0,
  };
  return { ...s, notLogged };
}

/** How the exporter of `init({ export })` is doing (see {@link exportStats}). */
export interface ExportStats extends Omit<native.ExportStats, 'state'> {
  state: 'starting' | 'standby' | 'shipping' | 'draining' | 'stopped';
}

/**
 * How the exporter started by `init({ export })` is doing, or null without
 * one: `exporter` (its name), `state` (`starting` | `standby` |
 * `shipping` | `draining` | `stopped`), `shipped` (records the receiver
 * acknowledged), `batches`, `failures`, `consecutiveFailures` (non-zero
 * while the receiver is unreachable), `lastError` and `caughtUp` (whether
 * the drain at shutdown shipped everything). After {@link shutdown}, the
 * final stats of the log it closed.
 */
export function exportStats(): ExportStats | null {
  return ((log ?? closedLog)?.exportStats() as ExportStats | null | undefined) ?? null;
}

// ------------------------------------------------------------ read back

/** One finding of the verifier. */
export interface Finding {
  code: string;
  severity: 'info' | 'warning' | 'tampered';
  stream_id: string;
  seq?: number;
  file?: string;
  offset?: number;
  message: string;
}

/** The verifier's report. */
export interface VerifyReport {
  streams: Array<{
    stream_id: string;
    records: number;
    checkpoints_verified: number;
    key_id: string | null;
    erased_payloads: number;
    status: 'clean' | 'open' | 'truncated' | 'tampered';
  }>;
  findings: Finding[];
  records: number;
  /** Whether any finding is tampering. */
  tampered: boolean;
  /** 0 clean, 1 tampered (as `agent-audit verify`). */
  exitCode: number;
}

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** Keys every stream must be signed with: PEM text, PEM path or hex. */
  trustedKeys?: string[];
}

/**
 * Verifies a log directory off the event loop. Rejects with
 * `InvalidLogError` when `dir` holds no log; tampering is in the report.
 */
export async function verify(dir: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  try {
    return (await native.verifyLogDir(dir, options)) as VerifyReport;
  } catch (e) {
    throw fromNative(e);
  }
}

/** The trace document (`agent-audit show LOG TRACE --json`). */
export async function showTrace(dir: string, traceId: string): Promise<Record<string, unknown>> {
  try {
    return (await native.showTraceDoc(dir, traceId)) as Record<string, unknown>;
  } catch (e) {
    throw fromNative(e);
  }
}

/** A line of `agent-audit traces`. */
export interface TraceSummary {
  trace_id: string;
  task_kind: string | null;
  started_at: string | null;
  ended_at: string | null;
  outcome: string;
  steps: number;
  risk_flags: string[];
  risk_score: number;
}

/** The traces of a log, oldest first. */
export async function listTraces(dir: string, options: { flag?: string; since?: string } = {}): Promise<TraceSummary[]> {
  try {
    return (await native.listTraceSummaries(dir, options)) as TraceSummary[];
  } catch (e) {
    throw fromNative(e);
  }
}

// ------------------------------------------------------------------ spans

/** Risk flags and score of a step (0..100). */
export interface RiskOptions {
  riskFlags?: string[];
  riskScore?: number;
}

interface Span {
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  frame: Frame;
}

const SPAN_ID_BATCH = 256;
let spanIdPool = '';
let spanIdAt = 0;

/**
 * A new span id: the core's ids (`SpanId::random`), fetched in batches so
 * that a span costs neither a call into Rust nor a string of its own.
 */
function nextSpanId(): string {
  if (spanIdAt >= spanIdPool.length) {
    spanIdPool = native.newSpanIds(SPAN_ID_BATCH);
    spanIdAt = 0;
  }
  const id = spanIdPool.slice(spanIdAt, spanIdAt + 16);
  spanIdAt += 16;
  return id;
}

function newSpan(principal?: PrincipalFields): Span {
  const parent = currentFrame();
  const traceId = parent?.traceId ?? native.newTraceId();
  const spanId = nextSpanId();
  const merged = principal ? { ...parent?.principal, ...principal } : parent?.principal;
  const frame: Frame = { traceId, spanId, principal: merged, retentionClass: parent?.retentionClass };
  return { traceId, spanId, parentSpanId: parent?.spanId, frame };
}

function envelope(span: Span, kind: string, ts: number, risk?: RiskOptions): Record<string, unknown> {
  const e: Record<string, unknown> = {
    kind,
    ts,
    trace_id: span.traceId,
    span_id: span.spanId,
    parent_span_id: span.parentSpanId,
    principal: span.frame.principal,
    retention_class: span.frame.retentionClass,
  };
  if (risk && (risk.riskFlags?.length || risk.riskScore)) {
    e.risk = { flags: risk.riskFlags ?? [], score: risk.riskScore ?? 0 };
  }
  return e;
}

type Status = 'ok' | 'error' | 'cancelled' | 'timeout' | 'blocked';

function statusOf(e: unknown): Status {
  const name = (e as { name?: unknown } | null)?.name;
  if (name === 'AbortError') return 'cancelled';
  if (name === 'TimeoutError') return 'timeout';
  return 'error';
}

function errorName(e: unknown): string {
  if (e instanceof Error) return e.name || e.constructor?.name || 'Error';
  return typeof e;
}

/** An error as the log stores it: `{type, message}` (and `code`), the shape Python uses too. */
function errorPart(e: unknown): Record<string, unknown> {
  if (e instanceof Error) {
    const part: Record<string, unknown> = { type: errorName(e), message: e.message };
    const code = (e as { code?: unknown }).code;
    if (code !== undefined) part.code = code;
    return part;
  }
  return { type: typeof e, message: String(e) };
}

function elapsed(t0: number): number {
  return Math.max(0, performance.now() - t0);
}

// Event times: the wall clock read once a second, the monotonic clock in
// between (a read of each costs as much as the rest of a span's start).
let wallOffset = 0;
let wallReadAt = -Infinity;

/**
 * Epoch milliseconds (whole, as `Date.now()`, within its rounding) at `t`,
 * a `performance.now()` reading. Date.now() rounds down, so a re-read
 * that would lower the offset by no more than that rounding is ignored,
 * which keeps times in the order of the monotonic clock; a wall clock set
 * back by more is followed.
 */
function wallClock(t: number): number {
  if (t - wallReadAt >= 1000 || t < wallReadAt) {
    const offset = Date.now() - t;
    if (offset > wallOffset || wallOffset - offset > 2) wallOffset = offset;
    wallReadAt = t;
  }
  return Math.floor(wallOffset + t);
}

// -------------------------------------------------------- results of calls

const MAX_STREAM_ITEMS = 100;

type Finish = (status: Status, result: unknown, error: unknown) => void;

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return (typeof x === 'object' || typeof x === 'function') && x !== null && typeof (x as PromiseLike<unknown>).then === 'function';
}

function isWebStream(x: unknown): x is ReadableStream<unknown> {
  return typeof ReadableStream !== 'undefined' && x instanceof ReadableStream;
}

function isNodeReadable(x: unknown): x is NodeJS.ReadableStream & { on: Function; readableEnded?: boolean } {
  const r = x as { pipe?: unknown; on?: unknown; read?: unknown } | null;
  return typeof r === 'object' && r !== null && typeof r.pipe === 'function' && typeof r.on === 'function' && typeof r.read === 'function';
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function';
}

function isGenerator(x: unknown): x is Generator<unknown> {
  return Object.prototype.toString.call(x) === '[object Generator]';
}

function streamResult(type: string, items: unknown[], count: number): Record<string, unknown> {
  return { $stream: type, count, items, ...(count > items.length ? { truncated: true } : {}) };
}

/**
 * Watches a call's result to its end: a promise until it settles, a
 * stream or iterator until it is consumed (or cancelled), anything else at
 * once. Returns what the caller gets: the same value, or a wrapper that
 * behaves like it.
 */
function settle(out: unknown, finish: Finish, frame: Frame, captureResult: boolean): unknown {
  if (isThenable(out)) {
    return Promise.resolve(out).then(
      (v) => settleValue(v, finish, frame, captureResult),
      (e: unknown) => {
        finish(statusOf(e), undefined, e);
        throw e;
      },
    );
  }
  return settleValue(out, finish, frame, captureResult);
}

function settleValue(v: unknown, finish: Finish, frame: Frame, captureResult: boolean): unknown {
  if (v === null || (typeof v !== 'object' && typeof v !== 'function')) {
    finish('ok', captureResult ? v : undefined, undefined);
    return v;
  }
  if (isWebStream(v)) return wrapWebStream(v, finish, captureResult);
  if (isNodeReadable(v)) return watchNodeReadable(v, finish);
  if (isAsyncIterable(v) && typeof v !== 'string') return wrapAsyncIterable(v, finish, frame, captureResult);
  if (isGenerator(v)) return wrapGenerator(v, finish, frame, captureResult);
  finish('ok', captureResult ? v : undefined, undefined);
  return v;
}

function wrapAsyncIterable(src: AsyncIterable<unknown>, finish: Finish, frame: Frame, captureResult: boolean): AsyncIterableIterator<unknown> {
  const it = src[Symbol.asyncIterator]();
  const items: unknown[] = [];
  let count = 0;
  let done = false;
  const end = (status: Status, error: unknown) => {
    if (done) return;
    done = true;
    finish(status, captureResult ? streamResult('AsyncIterable', items, count) : undefined, error);
  };
  const wrapper: AsyncIterableIterator<unknown> = {
    [Symbol.asyncIterator]() {
      return wrapper;
    },
    async next(...args: [] | [unknown]) {
      try {
        // The producer's body runs in the tool's span, whoever pulls.
        const r = await storage.run(frame, () => it.next(...args));
        if (r.done) end('ok', undefined);
        else {
          count++;
          if (items.length < MAX_STREAM_ITEMS) items.push(r.value);
        }
        return r;
      } catch (e) {
        end(statusOf(e), e);
        throw e;
      }
    },
    async return(value?: unknown) {
      end('cancelled', undefined);
      return it.return ? storage.run(frame, () => it.return!(value)) : { done: true, value };
    },
    async throw(e?: unknown) {
      end(statusOf(e), e);
      if (it.throw) return storage.run(frame, () => it.throw!(e));
      throw e;
    },
  };
  return wrapper;
}

function wrapGenerator(gen: Generator<unknown>, finish: Finish, frame: Frame, captureResult: boolean): Generator<unknown> {
  const items: unknown[] = [];
  let count = 0;
  let done = false;
  const end = (status: Status, error: unknown) => {
    if (done) return;
    done = true;
    finish(status, captureResult ? streamResult('Generator', items, count) : undefined, error);
  };
  const wrapper = {
    [Symbol.iterator]() {
      return wrapper;
    },
    next(...args: [] | [unknown]) {
      try {
        const r = storage.run(frame, () => gen.next(...args));
        if (r.done) end('ok', undefined);
        else {
          count++;
          if (items.length < MAX_STREAM_ITEMS) items.push(r.value);
        }
        return r;
      } catch (e) {
        end(statusOf(e), e);
        throw e;
      }
    },
    return(value?: unknown) {
      end('cancelled', undefined);
      return storage.run(frame, () => gen.return(value));
    },
    throw(e?: unknown) {
      end(statusOf(e), e);
      return storage.run(frame, () => gen.throw(e));
    },
  };
  return wrapper as unknown as Generator<unknown>;
}

function wrapWebStream(src: ReadableStream<unknown>, finish: Finish, captureResult: boolean): ReadableStream<unknown> {
  const reader = src.getReader();
  const items: unknown[] = [];
  let count = 0;
  let done = false;
  const end = (status: Status, error: unknown) => {
    if (done) return;
    done = true;
    finish(status, captureResult ? streamResult('ReadableStream', items, count) : undefined, error);
  };
  return new ReadableStream<unknown>({
    async pull(controller) {
      try {
        const r = await reader.read();
        if (r.done) {
          end('ok', undefined);
          controller.close();
        } else {
          count++;
          if (items.length < MAX_STREAM_ITEMS) items.push(r.value);
          controller.enqueue(r.value);
        }
      } catch (e) {
        end(statusOf(e), e);
        controller.error(e);
      }
    },
    async cancel(reason) {
      end('cancelled', undefined);
      await reader.cancel(reason);
    },
  });
}

function watchNodeReadable<T extends { on: Function }>(r: T, finish: Finish): T {
  let done = false;
  const end = (status: Status, error: unknown) => {
    if (done) return;
    done = true;
    finish(status, { $stream: 'Readable' }, error);
  };
  // Listening for 'data' would switch the stream to flowing mode; count
  // nothing rather than change how the caller reads it.
  r.on('end', () => end('ok', undefined));
  r.on('error', (e: unknown) => end(statusOf(e), e));
  r.on('close', () => end('cancelled', undefined));
  return r;
}

// ------------------------------------------------------------- arguments

const IDENT = /^[A-Za-z_$][\w$]*$/;

/**
 * Parameter names read from the function's source, once, when it is
 * wrapped: a name per parameter, `null` where it is destructured, and
 * `rest` for a `...rest` parameter. `undefined` when the source cannot be
 * read (native or bound functions).
 */
export function parameterNames(fn: Function): { names: Array<string | null>; rest: string | null } | undefined {
  let src: string;
  try {
    src = Function.prototype.toString.call(fn);
  } catch {
    return undefined;
  }
  if (src.includes('[native code]')) return undefined;
  const arrow = /^(?:async\s*)?([A-Za-z_$][\w$]*)\s*=>/.exec(src);
  if (arrow) return { names: [arrow[1]!], rest: null };
  const open = src.indexOf('(');
  if (open < 0) return undefined;
  let depth = 0;
  let close = -1;
  for (let i = open; i < src.length; i++) {
    const c = src[i];
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') {
      depth--;
      if (depth === 0) {
        close = i;
        break;
      }
    } else if (c === '"' || c === "'" || c === '`' || c === '/') {
      return undefined; // strings, regexes or comments in defaults: give up, positional
    }
  }
  if (close < 0) return undefined;
  const params: string[] = [];
  let cur = '';
  depth = 0;
  for (const c of src.slice(open + 1, close)) {
    if (c === '(' || c === '[' || c === '{') depth++;
    else if (c === ')' || c === ']' || c === '}') depth--;
    if (c === ',' && depth === 0) {
      params.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur.trim()) params.push(cur);
  const names: Array<string | null> = [];
  let rest: string | null = null;
  for (const raw of params) {
    const p = raw.split('=')[0]!.trim();
    if (p.startsWith('...')) {
      const n = p.slice(3).trim();
      rest = IDENT.test(n) ? n : null;
      break;
    }
    names.push(IDENT.test(p) ? p : null);
  }
  return { names, rest };
}

function isPlainObject(x: unknown): boolean {
  if (typeof x !== 'object' || x === null) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/** What {@link parameterNames} read, prepared once per wrapped function. */
interface Signature {
  names: Array<string | null>;
  rest: string | null;
  /** How many leading parameters have a name. */
  named: number;
  /**
   * Per parameter (the rest one last), its name as JSON text and a colon,
   * for writing the arguments' JSON text straight from the call's
   * arguments; undefined when the object must be built (a repeated name,
   * or `__proto__`, which an object literal would not keep as a key).
   */
  keys: string[] | undefined;
}

function signatureOf(fn: Function): Signature | undefined {
  const sig = parameterNames(fn);
  if (!sig) return undefined;
  const { names, rest } = sig;
  const firstUnnamed = names.indexOf(null);
  const all = rest === null ? names : [...names, rest];
  const named = all.filter((n) => n !== null);
  const plain = !named.includes('__proto__') && new Set(named).size === named.length;
  return {
    names,
    rest,
    named: firstUnnamed < 0 ? names.length : firstUnnamed,
    keys: plain ? all.map((n) => `${JSON.stringify(n ?? '')}:`) : undefined,
  };
}

/** Whether a call's arguments are recorded by parameter name. */
function byName(args: unknown[], sig: Signature | undefined): sig is Signature {
  if (sig === undefined) return false;
  const n = args.length;
  return (n <= sig.names.length || sig.rest !== null) && Math.min(n, sig.names.length) <= sig.named;
}

/** Arguments by parameter name when every one has a name, else positional. */
function argsValue(args: unknown[], sig: Signature | undefined): unknown {
  if (byName(args, sig)) {
    const { names, rest } = sig;
    const out: Record<string, unknown> = {};
    const n = Math.min(args.length, names.length);
    for (let i = 0; i < n; i++) out[names[i]!] = args[i];
    if (rest !== null && args.length > names.length) out[rest] = args.slice(names.length);
    return out;
  }
  if (args.length === 1 && isPlainObject(args[0])) return args[0];
  return args;
}

/**
 * The JSON text {@link plainJson} makes of {@link argsValue}'s object, for
 * arguments recorded by name, written without building the object;
 * undefined when a value is not plain.
 */
function namedArgsJson(args: unknown[], sig: Signature, keys: string[]): string | undefined {
  const budget = { nodes: 1 };
  const names = sig.names;
  const n = Math.min(args.length, names.length);
  let out = '{';
  try {
    for (let i = 0; i < n; i++) {
      const v = args[i];
      if (v === undefined) continue;
      const j = typeof v === 'object' && v !== null ? jsonOf(v, 1, budget) : scalarJson(v);
      if (j === undefined) return undefined;
      out += out.length === 1 ? keys[i]! + j : `,${keys[i]!}${j}`;
    }
    if (sig.rest !== null && args.length > names.length) {
      const j = jsonOf(args.slice(names.length), 1, budget);
      if (j === undefined) return undefined;
      out += out.length === 1 ? keys[names.length]! + j : `,${keys[names.length]!}${j}`;
    }
  } catch {
    return undefined; // a getter threw: the native path records it
  }
  return `${out}}`;
}

/** At most this many arguments are passed as they are (`NativeLog.toolSite`). */
const MAX_NAMED_PRIMITIVES = 20;

function allPrimitive(args: unknown[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const v = args[i];
    const t = typeof v;
    if (t === 'object' ? v !== null : t === 'function') return false;
  }
  return true;
}

/**
 * Whether a call's arguments are kept as they are: all primitives (they
 * cannot change), recorded by parameter name, named on the native side
 * (`NativeLog.toolSite`'s `params`) without JSON text in between.
 */
function keptAsIs(args: unknown[], sig: Signature | undefined): sig is Signature {
  return sig !== undefined && sig.keys !== undefined && args.length <= sig.named &&
    args.length <= MAX_NAMED_PRIMITIVES && allPrimitive(args);
}

/**
 * Copies a call's arguments now, as they will be recorded: JSON text when
 * they hold only plain data, else a native copy (`native.capture`).
 */
function captureArgs(args: unknown[], sig: Signature | undefined): unknown {
  if (byName(args, sig) && sig.keys !== undefined) {
    const text = namedArgsJson(args, sig, sig.keys);
    return text === undefined ? native.capture(argsValue(args, sig)) : text;
  }
  const value = argsValue(args, sig);
  const text = plainJson(value);
  return text === undefined ? native.capture(value) : text;
}

/**
 * The JSON text of a value that is not an object, as {@link jsonOf}
 * writes it; undefined for what only the native converter stores
 * (undefined, bigint, symbol, function, non-finite numbers, unsafe
 * integers, lone surrogates).
 */
function scalarJson(x: unknown): string | undefined {
  switch (typeof x) {
    case 'number':
      // A finite number's JSON text is its string form.
      return Number.isFinite(x) && (Number.isSafeInteger(x) || !Number.isInteger(x)) ? `${x}` : undefined;
    case 'string':
      return (x as unknown as { isWellFormed(): boolean }).isWellFormed() ? JSON.stringify(x) : undefined;
    case 'boolean':
      return x ? 'true' : 'false';
    default:
      return x === null ? 'null' : undefined;
  }
}

/**
 * A payload part for the native side: JSON text when plain, else a native
 * copy; numbers, booleans and null as they are (the native side converts
 * them as its converter does).
 */
function partOf(value: unknown): unknown {
  switch (typeof value) {
    case 'number':
    case 'boolean':
      return value;
    case 'object':
      if (value === null) return null;
      break;
    case 'string':
      if ((value as unknown as { isWellFormed(): boolean }).isWellFormed()) return JSON.stringify(value);
      return native.capture(value);
    default:
      return native.capture(value);
  }
  const text = plainJson(value);
  return text === undefined ? native.capture(value) : text;
}

/** A call's arguments as an event part of {@link send}. */
function argsPart(call: ToolCall): unknown {
  if (call.named !== undefined) return argsValue(call.args as unknown[], call.named);
  return typeof call.args === 'string' ? new RawJson(call.args) : call.args;
}

/** A call's arguments as a value for the policy check. */
function argsForCheck(call: ToolCall): unknown {
  if (call.named !== undefined) return argsValue(call.args as unknown[], call.named);
  return typeof call.args === 'string' ? JSON.parse(call.args) : call.args;
}

// ------------------------------------------------------------------- tool

/** Options of {@link tool}. */
export interface ToolOptions extends RiskOptions {
  /** Tool name (default: the function's name). */
  name?: string;
  version?: string;
  publisher?: string;
  trustLevel?: string;
  dataClassification?: string;
  environment?: string;
  authorizationMethod?: string;
  permissionsUsed?: string[];
  /** Record the result (default true). The error is always recorded. */
  captureResult?: boolean;
  metadata?: Record<string, unknown>;
}

type AnyFn = (...args: any[]) => any;

interface ToolSite {
  name: string;
  toolInfo: Record<string, unknown>;
  opts: ToolOptions;
  /** The parameter names arguments passed as they are are recorded by. */
  params: string[] | undefined;
  /** The log {@link ToolSite.emit} was made for. */
  nativeLog: native.NativeLog | undefined;
  /**
   * Records a call: the tool's constant fields converted once for
   * `nativeLog` (`NativeLog.toolSite`); null when they could not be (the
   * generic path then records each call, or reports why it cannot).
   */
  emit: NativeToolEmit | null;
}

/** The fields every `tool_call` of a tool carries, set on `e`. */
function toolFields(site: ToolSite, e: Record<string, unknown>): Record<string, unknown> {
  const opts = site.opts;
  e.tool = site.toolInfo;
  e.data_classification = opts.dataClassification;
  e.environment = opts.environment;
  e.authorization_method = opts.authorizationMethod;
  e.permissions_used = opts.permissionsUsed;
  e.metadata = opts.metadata;
  return e;
}

/** The `tool_call` event of one call. */
function toolEvent(
  site: ToolSite,
  span: Span,
  ts: number,
  t0: number,
  args: unknown,
  status: Status,
  result: unknown,
  error: unknown,
): Record<string, unknown> {
  const e = toolFields(site, envelope(span, 'tool_call', ts, site.opts));
  e.result_status = status;
  e.duration_ms = elapsed(t0);
  const payload: Record<string, unknown> = { args };
  if (status === 'ok') {
    if (result !== undefined) payload.result = result;
  } else {
    e.error_type = errorName(error);
    payload.error = errorPart(error);
  }
  e.payload = payload;
  return e;
}

type NativeToolEmit = ReturnType<native.NativeLog['toolSite']>;
type PrincipalHandle = ReturnType<typeof native.principalHandle>;

/** The native recorder of a tool's calls for `l` (see {@link ToolSite.emit}). */
function nativeSite(site: ToolSite, l: native.NativeLog): NativeToolEmit | null {
  if (site.nativeLog !== l) {
    site.nativeLog = l;
    site.emit = null;
    const opts = site.opts;
    const template: Record<string, unknown> = { kind: 'tool_call' };
    if (opts.riskFlags?.length || opts.riskScore) template.risk = { flags: opts.riskFlags ?? [], score: opts.riskScore ?? 0 };
    try {
      site.emit = l.toolSite(toolFields(site, template), site.params);
    } catch {
      // Refused (a bad option): each call takes the generic path, which
      // reports it.
    }
  }
  return site.emit;
}

const principalHandles = new WeakMap<object, PrincipalHandle | null>();

/**
 * A frame's principal converted once (per object: frames are immutable);
 * undefined without one, null when the native side refused it (the
 * generic path then reports it on each event).
 */
function principalHandle(p: PrincipalFields | undefined): PrincipalHandle | undefined | null {
  if (p === undefined || p === null) return undefined;
  if (typeof p !== 'object') return null;
  let h = principalHandles.get(p);
  if (h === undefined) {
    try {
      h = native.principalHandle(p);
    } catch {
      h = null;
    }
    principalHandles.set(p, h);
  }
  return h;
}

const STATUS_CODE: Record<Status, number> = { ok: 0, error: 1, cancelled: 2, timeout: 3, blocked: 4 };

/**
 * One call of a wrapped tool: its span, its times and its copied
 * arguments. It is also the frame the tool body runs in (one object per
 * call rather than two).
 */
class ToolCall implements Span, Frame {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly principal: PrincipalFields | undefined;
  readonly retentionClass: string | undefined;
  finished = false;

  constructor(
    parent: Frame | undefined,
    readonly ts: number,
    readonly t0: number,
    /**
     * JSON text or a native copy (see {@link captureArgs}), or, with
     * `named`, the call's arguments themselves (see {@link keptAsIs});
     * dropped once recorded (the call stays referenced as the frame of
     * whatever its body left running).
     */
    public args: unknown,
    readonly named: Signature | undefined,
  ) {
    if (parent === undefined) {
      this.traceId = native.newTraceId();
      this.parentSpanId = undefined;
      this.principal = undefined;
      this.retentionClass = undefined;
    } else {
      this.traceId = parent.traceId;
      this.parentSpanId = parent.spanId;
      this.principal = parent.principal;
      this.retentionClass = parent.retentionClass;
    }
    this.spanId = nextSpanId();
  }

  get frame(): Frame {
    return this;
  }
}

/**
 * Records a call's `tool_call` (never throws). The tool's constant fields
 * were converted once ({@link nativeSite}); the call passes only what
 * changes, in one call into Rust. What that cannot take takes the
 * generic path ({@link emitQuiet}).
 */
function emitToolCall(site: ToolSite, call: ToolCall, status: Status, result: unknown, error: unknown): void {
  const l = log;
  if (l !== undefined) {
    const ns = nativeSite(site, l);
    const principal = principalHandle(call.principal);
    if (ns !== null && principal !== null) {
      try {
        const duration = elapsed(call.t0);
        const code = STATUS_CODE[status];
        const args = call.args;
        const res = status !== 'ok' || result === undefined ? undefined : partOf(result);
        if (call.named !== undefined) {
          // The arguments themselves, after the fixed ones.
          const v = args as unknown[];
          const rc = call.retentionClass;
          const et = status === 'ok' ? undefined : errorName(error);
          const ep = status === 'ok' ? undefined : partOf(errorPart(error));
          const { ts, traceId, spanId, parentSpanId } = call;
          switch (v.length) {
            case 1:
              ns(ts, code, duration, traceId, spanId, parentSpanId, 1, res, principal, rc, et, ep, v[0]);
              break;
            case 2:
              ns(ts, code, duration, traceId, spanId, parentSpanId, 2, res, principal, rc, et, ep, v[0], v[1]);
              break;
            case 3:
              ns(ts, code, duration, traceId, spanId, parentSpanId, 3, res, principal, rc, et, ep, v[0], v[1], v[2]);
              break;
            default:
              ns(ts, code, duration, traceId, spanId, parentSpanId, v.length, res, principal, rc, et, ep, ...v);
          }
        } else if (status !== 'ok') {
          ns(call.ts, code, duration, call.traceId, call.spanId, call.parentSpanId, args, undefined,
            principal, call.retentionClass, errorName(error), partOf(errorPart(error)));
        } else if (principal === undefined && call.retentionClass === undefined) {
          // The common call: what is not passed reads as absent.
          ns(call.ts, code, duration, call.traceId, call.spanId, call.parentSpanId, args, res);
        } else {
          ns(call.ts, code, duration, call.traceId, call.spanId, call.parentSpanId, args, res, principal, call.retentionClass);
        }
        emittedSinceFlush++;
      } catch (e) {
        warnOnce(`agent-audit: an event was not logged: ${fromNative(e).message}`);
      }
      return;
    }
  }
  emitQuiet(toolEvent(site, call, call.ts, call.t0, argsPart(call), status, result, error));
}

/** Runs the tool body in its span and watches the result. */
function runBody(self: unknown, fn: AnyFn, args: unknown[], span: Span, finish: Finish, captureResult: boolean): unknown {
  let out: unknown;
  try {
    out = storage.run(span.frame, Reflect.apply, fn, self, args);
  } catch (err) {
    finish(statusOf(err), undefined, err);
    throw err;
  }
  return settle(out, finish, span.frame, captureResult);
}

/** Records a call the policy stopped and returns the error for the caller. */
function stopCall(
  l: native.NativeLog,
  decision: native.PolicyDecision,
  site: ToolSite,
  call: ToolCall,
  ts: number,
  t0: number,
  review: ApprovalOutcome | undefined,
): ToolBlockedError {
  const err = new ToolBlockedError(
    review === undefined
      ? `${decision.tool} blocked by policy rule ${decision.ruleId}: ${decision.reason}`
      : `${decision.tool} needs approval (policy rule ${decision.ruleId}: ${decision.reason}); approval ${review.outcome}`,
    {
      ruleId: decision.ruleId,
      tool: decision.tool,
      action: decision.action,
      reason: decision.reason,
      review: review === undefined ? undefined : review.outcome === 'timeout' ? 'timeout' : 'denied',
    },
  );
  try {
    if (!l.emitBlocked(decision, unraw(toolEvent(site, call, ts, t0, argsPart(call), 'blocked', undefined, err)))) notLogged++;
  } catch (e) {
    warnOnce(`agent-audit: a blocked call was not logged: ${fromNative(e).message}`);
  }
  return err;
}

function recordReview(l: native.NativeLog, decision: native.PolicyDecision, site: ToolSite, span: Span, ts: number, o: ApprovalOutcome, waitMs: number): void {
  const subject = envelope(span, 'tool_call', ts);
  subject.tool = site.toolInfo;
  try {
    if (!l.emitReview(decision, subject, o.outcome, o.reviewer, o.reason, waitMs)) notLogged++;
  } catch (e) {
    warnOnce(`agent-audit: an approval was not logged: ${fromNative(e).message}`);
  }
}

function wrapFunction<F extends AnyFn>(name: string, fn: F, opts: ToolOptions): F {
  const sig = signatureOf(fn);
  const site: ToolSite = {
    name,
    toolInfo: { name, version: opts.version, publisher: opts.publisher, trust_level: opts.trustLevel },
    opts,
    params: sig?.keys === undefined ? undefined : (sig.names.slice(0, sig.named) as string[]),
    nativeLog: undefined,
    emit: null,
  };
  const captureResult = opts.captureResult !== false;
  const tag = (fn as { [Symbol.toStringTag]?: unknown })[Symbol.toStringTag];
  // A blocked async function rejects instead of throwing synchronously.
  const isAsync = tag === 'AsyncFunction' || tag === 'AsyncGeneratorFunction';
  // The policy gate, for the log it was computed for: null (no check) for
  // every tool no blocking rule can match.
  let gateLog: native.NativeLog | undefined;
  let gate: native.ToolGate | null = null;
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    let call: ToolCall;
    const t0 = performance.now();
    const ts = wallClock(t0);
    try {
      // The arguments are copied now: what the tool was called with, even
      // if it mutates them.
      call = keptAsIs(args, sig)
        ? new ToolCall(currentFrame(), ts, t0, args, sig)
        : new ToolCall(currentFrame(), ts, t0, captureArgs(args, sig), undefined);
    } catch (e) {
      warnOnce(`agent-audit: a tool call was not logged: ${fromNative(e).message}`);
      return fn.apply(this, args);
    }
    const finish: Finish = (status, result, error) => {
      if (call.finished) return;
      call.finished = true;
      emitToolCall(site, call, status, result, error);
      call.args = undefined;
    };
    const l = log;
    if (l !== gateLog) {
      gateLog = l;
      gate = l && !l.closed ? l.gate(name) : null;
    }
    if (gate === null || l === undefined) return runBody(this, fn, args, call, finish, captureResult);

    const decision = l.preCheck(gate, name, call.traceId, call.spanId, argsForCheck(call));
    if (!decision) return runBody(this, fn, args, call, finish, captureResult);
    const fail = (review: ApprovalOutcome | undefined): never | Promise<never> => {
      call.finished = true;
      const err = stopCall(l, decision, site, call, ts, t0, review);
      if (isAsync) return Promise.reject(err);
      throw err;
    };
    if (decision.action !== 'require_approval') return fail(undefined);
    const answer = askApproval(requestOf(decision, call.traceId, call.spanId));
    const decide = (o: ApprovalOutcome): unknown => {
      recordReview(l, decision, site, call, ts, o, elapsed(t0));
      return o.outcome === 'approved' ? runBody(this, fn, args, call, finish, captureResult) : fail(o);
    };
    if (!isThenable(answer)) return decide(answer);
    return answer.then(decide);
  };
  Object.defineProperty(wrapped, 'name', { value: fn.name || name, configurable: true });
  Object.defineProperty(wrapped, 'length', { value: fn.length, configurable: true });
  return wrapped as unknown as F;
}

/** A decorator for class methods (TC39 standard or TypeScript legacy decorators). */
export type ToolDecorator = {
  <F extends AnyFn>(value: F, context: ClassMethodDecoratorContext): F;
  (target: object, key: string | symbol, descriptor: PropertyDescriptor): PropertyDescriptor;
};

function decorator(name: string | undefined, opts: ToolOptions): ToolDecorator {
  return ((value: unknown, context: unknown, descriptor?: PropertyDescriptor) => {
    if (descriptor && typeof descriptor.value === 'function') {
      const cls = (value as { constructor?: { name?: string } }).constructor?.name;
      const method = String(context);
      descriptor.value = wrapFunction(name ?? (cls ? `${cls}.${method}` : method), descriptor.value, opts);
      return descriptor;
    }
    const ctx = context as ClassMethodDecoratorContext | undefined;
    if (typeof value === 'function' && ctx && ctx.kind === 'method') {
      return wrapFunction(name ?? String(ctx.name), value as AnyFn, opts);
    }
    throw new InvalidArgumentError('audit.tool() used as a decorator must decorate a method');
  }) as ToolDecorator;
}

/**
 * Wraps a tool so every call becomes a `tool_call` event with its
 * arguments (by parameter name when they can be read, else positional),
 * its result or error, status (`ok` | `error` | `cancelled` | `timeout`)
 * and duration. Sync and async functions, and results that are promises,
 * async iterables, generators and streams (the event is written when the
 * result is consumed). Without a function it is a method decorator.
 */
export function tool<F extends AnyFn>(name: string, fn: F, options?: ToolOptions): F;
export function tool(name?: string, options?: ToolOptions): ToolDecorator;
export function tool(options: ToolOptions): ToolDecorator;
export function tool(a?: string | ToolOptions, b?: AnyFn | ToolOptions, c?: ToolOptions): unknown {
  if (typeof a === 'string' && typeof b === 'function') {
    if (!a) throw new InvalidArgumentError('a tool needs a non-empty name');
    return wrapFunction(a, b, c ?? {});
  }
  if (typeof a === 'string' || a === undefined) return decorator(a, (b as ToolOptions | undefined) ?? {});
  if (typeof a === 'object' && a !== null) return decorator(a.name, a);
  throw new InvalidArgumentError('tool(name, fn, options?) or tool(name?, options?) as a decorator');
}

/** Wraps `fn` as a tool named `options.name` or the function's own name. */
export function wrapTool<F extends AnyFn>(fn: F, options: ToolOptions = {}): F {
  if (typeof fn !== 'function') throw new InvalidArgumentError('wrapTool() needs a function');
  const name = options.name ?? fn.name;
  if (!name) throw new InvalidArgumentError('wrapTool() needs options.name for an anonymous function');
  return wrapFunction(name, fn, options);
}

// ------------------------------------------------------------------ trace

/** Options of {@link trace}. */
export interface TraceOptions extends RiskOptions {
  userId?: string;
  sessionId?: string;
  agentId?: string;
  tenantId?: string;
  caller?: 'human' | 'system';
  /** The task input (stored redacted; its hash is the trace's input_hash). */
  input?: unknown;
  /** Record the callback's return value as the output (default true). */
  captureOutput?: boolean;
  retentionClass?: string;
  environment?: string;
  dataClassification?: string;
  authorizationMethod?: string;
  systemPromptVersion?: string;
  metadata?: Record<string, unknown>;
}

/** The running trace, passed to the callback of {@link trace}. */
export class TraceHandle {
  /** The trace id (32 hex). */
  readonly traceId: string;
  /** The trace's root span (16 hex). */
  readonly spanId: string;
  /** @internal */
  riskFlags: string[] = [];
  /** @internal */
  riskScore = 0;
  /** @internal */
  outcome: string | undefined;

  /** @internal */
  constructor(traceId: string, spanId: string) {
    this.traceId = traceId;
    this.spanId = spanId;
  }

  /** Adds risk flags (and raises the score) written on `trace_end`. */
  addRisk(flags: string | string[], score = 0): void {
    for (const f of Array.isArray(flags) ? flags : [flags]) if (!this.riskFlags.includes(f)) this.riskFlags.push(f);
    this.riskScore = Math.min(100, Math.max(this.riskScore, score));
  }

  /** Overrides the outcome written on `trace_end` (default: completed, or failed on error). */
  setOutcome(outcome: 'completed' | 'failed' | 'cancelled' | 'blocked' | 'timeout'): void {
    this.outcome = outcome;
  }
}

function principalOf(o: { userId?: string; sessionId?: string; agentId?: string; tenantId?: string; caller?: 'human' | 'system' }): PrincipalFields | undefined {
  const p: PrincipalFields = {};
  if (o.userId !== undefined) p.user_id = o.userId;
  if (o.sessionId !== undefined) p.session_id = o.sessionId;
  if (o.agentId !== undefined) p.agent_id = o.agentId;
  if (o.tenantId !== undefined) p.tenant_id = o.tenantId;
  if (o.caller !== undefined) p.caller = o.caller;
  return Object.keys(p).length ? p : undefined;
}

/**
 * Runs `fn` as one agent task: a `trace_start`, every event inside it
 * linked to the trace, and a `trace_end` with the outcome (`completed`,
 * `failed`, `cancelled`, `timeout`), duration and risk.
 */
export function trace<T>(name: string, fn: (t: TraceHandle) => T | Promise<T>): Promise<T>;
export function trace<T>(name: string, options: TraceOptions, fn: (t: TraceHandle) => T | Promise<T>): Promise<T>;
export async function trace<T>(
  name: string,
  a: TraceOptions | ((t: TraceHandle) => T | Promise<T>),
  b?: (t: TraceHandle) => T | Promise<T>,
): Promise<T> {
  const fn = typeof a === 'function' ? a : b;
  const opts: TraceOptions = typeof a === 'function' ? {} : (a ?? {});
  if (typeof name !== 'string' || !name) throw new InvalidArgumentError('trace() needs a task name');
  if (typeof fn !== 'function') throw new InvalidArgumentError('trace() needs a callback');
  const outer = currentFrame();
  const traceId = native.newTraceId();
  const spanId = nextSpanId();
  const principal = principalOf(opts);
  const frame: Frame = {
    traceId,
    spanId,
    principal: principal ? { ...outer?.principal, ...principal } : outer?.principal,
    retentionClass: opts.retentionClass ?? outer?.retentionClass,
  };
  const span: Span = { traceId, spanId, parentSpanId: undefined, frame };
  const handle = new TraceHandle(traceId, spanId);
  handle.addRisk(opts.riskFlags ?? [], opts.riskScore ?? 0);
  const t0 = performance.now();
  const ts = wallClock(t0);
  const start = envelope(span, 'trace_start', ts);
  start.task_kind = name;
  start.environment = opts.environment;
  start.data_classification = opts.dataClassification;
  start.authorization_method = opts.authorizationMethod;
  start.system_prompt_version = opts.systemPromptVersion;
  // A trace started inside another trace records where it came from.
  start.metadata = outer ? { ...opts.metadata, parent_trace_id: outer.traceId, parent_span_id: outer.spanId } : opts.metadata;
  if (opts.input !== undefined) start.payload = { input: opts.input };
  emitQuiet(start);
  const end = (outcome: string, output: unknown, error: unknown) => {
    const e = envelope(span, 'trace_end', wallClock(performance.now()));
    e.outcome = handle.outcome ?? outcome;
    e.duration_ms = elapsed(t0);
    if (handle.riskFlags.length || handle.riskScore) e.risk = { flags: handle.riskFlags, score: handle.riskScore };
    if (error !== undefined) {
      e.error_type = errorName(error);
      e.payload = { error: errorPart(error) };
    } else if (output !== undefined && opts.captureOutput !== false) {
      e.payload = { output };
    }
    emitQuiet(e);
  };
  try {
    const out = await storage.run(frame, () => fn(handle));
    end('completed', out, undefined);
    return out;
  } catch (e) {
    const s = statusOf(e);
    end(s === 'error' ? 'failed' : s, undefined, e);
    throw e;
  }
}

// ---------------------------------------------------------------- llmCall

/** Options of {@link llmCall}. */
export interface LlmCallOptions extends RiskOptions {
  model: string;
  provider?: string;
  /** Exact model version as answered. */
  version?: string;
  /** Generation parameters (temperature, max_tokens …). */
  params?: Record<string, unknown>;
  systemPromptVersion?: string;
  messages?: unknown;
  prompt?: unknown;
}

/** What an LLM call reports, through {@link LlmCallHandle.record}. */
export interface LlmCallRecord {
  inputTokens?: number;
  outputTokens?: number;
  costUsd?: number;
  finishReason?: string;
  toolCallsRequested?: string[];
  /** Exact model version as answered. */
  modelVersion?: string;
  messages?: unknown;
  prompt?: unknown;
  completion?: unknown;
  reasoning?: unknown;
}

/** The running LLM call, passed to the callback of {@link llmCall}. */
export class LlmCallHandle {
  /** This call's span. */
  readonly spanId: string;
  /** @internal */
  data: LlmCallRecord = {};

  /** @internal */
  constructor(spanId: string) {
    this.spanId = spanId;
  }

  /** Records token usage, cost, finish reason, messages …; later calls add to earlier ones. */
  record(r: LlmCallRecord): void {
    if (typeof r !== 'object' || r === null) throw new InvalidArgumentError('record() needs an object');
    this.data = { ...this.data, ...r };
  }
}

async function runSpan<T, H>(
  kind: string,
  handle: (span: Span) => H,
  fn: (h: H) => T | Promise<T>,
  fill: (e: Record<string, unknown>, h: H, status: Status, error: unknown) => void,
  risk: RiskOptions | undefined,
  principal?: PrincipalFields,
): Promise<T> {
  const span = newSpan(principal);
  const h = handle(span);
  const t0 = performance.now();
  const ts = wallClock(t0);
  const done = (status: Status, error: unknown) => {
    const e = envelope(span, kind, ts, risk);
    e.result_status = status;
    e.duration_ms = elapsed(t0);
    if (status !== 'ok') e.error_type = errorName(error);
    fill(e, h, status, error);
    emitQuiet(e);
  };
  try {
    const out = await storage.run(span.frame, () => fn(h));
    done('ok', undefined);
    return out;
  } catch (e) {
    done(statusOf(e), e);
    throw e;
  }
}

/** Runs one model call as an `llm_call` event with model, tokens, cost, status and duration. */
export function llmCall<T>(options: LlmCallOptions, fn: (call: LlmCallHandle) => T | Promise<T>): Promise<T> {
  if (typeof options !== 'object' || options === null || typeof options.model !== 'string') {
    throw new InvalidArgumentError('llmCall() needs { model }');
  }
  if (typeof fn !== 'function') throw new InvalidArgumentError('llmCall() needs a callback');
  return runSpan(
    'llm_call',
    (span) => new LlmCallHandle(span.spanId),
    fn,
    (e, h, status, error) => {
      const d = h.data;
      e.model = { name: options.model, provider: options.provider, version: d.modelVersion ?? options.version };
      e.input_tokens = d.inputTokens;
      e.output_tokens = d.outputTokens;
      e.cost_usd = d.costUsd;
      e.finish_reason = d.finishReason;
      e.tool_calls_requested = d.toolCallsRequested;
      e.params = options.params;
      e.system_prompt_version = options.systemPromptVersion;
      const payload: Record<string, unknown> = {
        messages: d.messages ?? options.messages,
        prompt: d.prompt ?? options.prompt,
        completion: d.completion,
        reasoning: d.reasoning,
      };
      if (status !== 'ok') payload.error = errorPart(error);
      e.payload = payload;
    },
    options,
  );
}

// ------------------------------------------------------------- agentSpawn

/** Options of {@link agentSpawn}. */
export interface AgentSpawnOptions extends RiskOptions {
  /** The child agent's id; its events inside carry it as principal agent_id. */
  childAgentId: string;
  taskKind?: string;
}

/** The running sub-agent, passed to the callback of {@link agentSpawn}. */
export interface AgentSpawnHandle {
  /** The spawn's span: the child's steps nest under it. */
  readonly spanId: string;
  readonly childAgentId: string;
}

/** Runs a sub-agent: an `agent_spawn` span its steps nest under. */
export function agentSpawn<T>(options: AgentSpawnOptions, fn: (agent: AgentSpawnHandle) => T | Promise<T>): Promise<T> {
  if (typeof options !== 'object' || options === null || typeof options.childAgentId !== 'string') {
    throw new InvalidArgumentError('agentSpawn() needs { childAgentId }');
  }
  if (typeof fn !== 'function') throw new InvalidArgumentError('agentSpawn() needs a callback');
  return runSpan(
    'agent_spawn',
    (span) => ({ spanId: span.spanId, childAgentId: options.childAgentId }),
    fn,
    (e, _h, status, error) => {
      e.child_agent_id = options.childAgentId;
      e.task_kind = options.taskKind;
      if (status !== 'ok') e.payload = { error: errorPart(error) };
    },
    options,
    { agent_id: options.childAgentId },
  );
}

// ---------------------------------------------------------- point events

/** What an explicit event returns: its span, for later reference (`subjectSpanId`). */
export interface EmittedEvent {
  traceId: string;
  spanId: string;
  /** False when the event was not queued (queue full, no log). */
  queued: boolean;
}

function point(kind: string, fields: Record<string, unknown>, payload: Record<string, unknown> | undefined, risk: RiskOptions): EmittedEvent {
  const span = newSpan();
  const e = envelope(span, kind, wallClock(performance.now()), risk);
  Object.assign(e, fields);
  if (payload) e.payload = payload;
  const queued = emitChecked(e);
  return { traceId: span.traceId, spanId: span.spanId, queued };
}

function need(o: unknown, field: string, what: string): Record<string, unknown> {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError(`${what}() needs an options object`);
  const v = (o as Record<string, unknown>)[field];
  if (typeof v !== 'string' || !v) throw new InvalidArgumentError(`${what}() needs ${field} (a non-empty string)`);
  return o as Record<string, unknown>;
}

/** Options of {@link decision}. */
export interface DecisionOptions extends RiskOptions {
  /** What was decided, e.g. `call_tools` or `escalate_to_human`. */
  decision: string;
  tools?: string[];
  /** 0..1. */
  confidence?: number;
  reasoning?: unknown;
  alternatives?: unknown;
  metadata?: Record<string, unknown>;
}

/** Records a `decision`: the agent chose what to do next. */
export function decision(o: DecisionOptions): EmittedEvent {
  need(o, 'decision', 'decision');
  return point('decision', { decision: o.decision, tools: o.tools, confidence: o.confidence, metadata: o.metadata },
    { reasoning: o.reasoning, alternatives: o.alternatives }, o);
}

/** Options of {@link memory}. */
export interface MemoryOptions extends RiskOptions {
  operation: 'read' | 'write' | 'delete' | (string & {});
  store?: string;
  key?: string;
  content?: unknown;
  metadata?: Record<string, unknown>;
}

/** Records a `memory` read, write or delete. */
export function memory(o: MemoryOptions): EmittedEvent {
  need(o, 'operation', 'memory');
  return point('memory', { operation: o.operation, store: o.store, key: o.key, metadata: o.metadata }, { content: o.content }, o);
}

/** A retrieved document. */
export interface RetrievedDocument {
  id: string;
  /** `sha256:` of the content. */
  hash?: string;
  score?: number;
  /** The content (stored redacted in the payload). */
  content?: unknown;
}

/** Options of {@link retrieval}. */
export interface RetrievalOptions extends RiskOptions {
  source?: string;
  query?: unknown;
  documents?: RetrievedDocument[];
  durationMs?: number;
  status?: Status;
  metadata?: Record<string, unknown>;
}

/** Records a `retrieval` (RAG): the query and the documents by id, hash and score. */
export function retrieval(o: RetrievalOptions): EmittedEvent {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('retrieval() needs an options object');
  const docs = o.documents ?? [];
  const contents = docs.some((d) => d.content !== undefined) ? docs.map((d) => ({ id: d.id, content: d.content })) : undefined;
  return point('retrieval', {
    source: o.source,
    retrieved_docs: docs.map((d) => ({ id: d.id, hash: d.hash, score: d.score })),
    result_status: o.status,
    duration_ms: o.durationMs,
    metadata: o.metadata,
  }, { query: o.query, documents: contents }, o);
}

/** One guardrail verdict. */
export interface GuardrailVerdict {
  id: string;
  version?: string;
  verdict: string;
  score?: number;
}

/** Options of {@link guardrail}: one verdict inline, or several in `guardrails`. */
export interface GuardrailOptions extends RiskOptions {
  guardrails?: GuardrailVerdict[];
  id?: string;
  version?: string;
  verdict?: string;
  score?: number;
  /** What was checked: input, output, tool_args … */
  target?: string;
  /** What followed: allow, flag, redact, block. */
  action?: string;
  metadata?: Record<string, unknown>;
}

/** Records a `guardrail` verdict. */
export function guardrail(o: GuardrailOptions): EmittedEvent {
  if (typeof o !== 'object' || o === null) throw new InvalidArgumentError('guardrail() needs an options object');
  const verdicts = o.guardrails ?? (o.id !== undefined || o.verdict !== undefined
    ? [{ id: o.id, version: o.version, verdict: o.verdict, score: o.score }]
    : []);
  if (verdicts.length === 0) throw new InvalidArgumentError('guardrail() needs guardrails[] or { id, verdict }');
  return point('guardrail', { guardrails: verdicts, target: o.target, action: o.action, metadata: o.metadata }, undefined, o);
}

/** Options of {@link humanReview}. */
export interface HumanReviewOptions extends RiskOptions {
  decision: 'approved' | 'denied' | 'edited' | 'timeout' | (string & {});
  reviewer?: string;
  /** The span of the step reviewed (e.g. from a tool's `EmittedEvent`). */
  subjectSpanId?: string;
  /** RFC 3339 time of the decision. */
  decidedAt?: string;
  waitMs?: number;
  ruleId?: string;
  reason?: unknown;
  metadata?: Record<string, unknown>;
}

/** Records a `human_review`: a person approved, denied or edited an action. */
export function humanReview(o: HumanReviewOptions): EmittedEvent {
  need(o, 'decision', 'humanReview');
  return point('human_review', {
    decision: o.decision,
    reviewer: o.reviewer,
    subject_span_id: o.subjectSpanId,
    decided_at: o.decidedAt,
    wait_ms: o.waitMs,
    rule_id: o.ruleId,
    metadata: o.metadata,
  }, { reason: o.reason }, o);
}

// ---------------------------------------------------------------- context

/**
 * Carrying the trace context where AsyncLocalStorage cannot: into worker
 * threads (`capture()` here, `run(captured, fn)` there) and into callbacks
 * registered now but called from elsewhere (`bind`).
 */
export const context = {
  /** The current context as a plain object for `postMessage`, or undefined outside a trace. */
  capture(): CapturedContext | undefined {
    const f = currentFrame();
    if (!f) return undefined;
    return { traceId: f.traceId, spanId: f.spanId, principal: f.principal, retentionClass: f.retentionClass, dir: log?.dir };
  },
  /**
   * Runs `fn` in a captured context: its events join that trace as
   * children of the span it was captured in. In a worker thread that has
   * not called `init`, it joins the writer the main thread opened for
   * `captured.dir`.
   */
  run<T>(captured: CapturedContext | undefined, fn: () => T): T {
    if (captured === undefined) return fn();
    if (!validCaptured(captured)) throw new InvalidArgumentError('context.run() needs an object from context.capture()');
    if ((!log || log.closed) && captured.dir) {
      const joined = native.attachLog(captured.dir);
      if (joined) log = joined;
    }
    const frame: Frame = {
      traceId: captured.traceId,
      spanId: captured.spanId,
      principal: captured.principal,
      retentionClass: captured.retentionClass,
    };
    return storage.run(frame, fn);
  },
  /** Binds `fn` to the current context (for listeners called from elsewhere). */
  bind,
};

/** The version of this package. */
export const version = '0.1.0';

/** Runs the `agent-audit` command line (what `npx agent-audit` runs); returns the exit code. */
export function runCli(args: string[]): number {
  return native.runCli(['agent-audit', ...args]);
}

/** @internal Exposed for tests: what a value becomes in the log. */
export function toAuditValue(value: unknown): unknown {
  return native.toAuditValue(value);
}

