/**
 * The policy on the caller's side: approvals and alerts. The rules live
 * in the core (`init({ policy: 'policy.toml' })`; the format is in
 * docs/policy.md). Only tools that a `block` or `require_approval` rule
 * can match are checked, once per call, before the tool body: a `block`
 * throws {@link ToolBlockedError}; a `require_approval` asks the approver
 * registered with {@link setApprover} (sync or async, bounded by a
 * timeout, denied when there is none or it fails) and records the answer
 * as a `human_review`. `alert` verdicts reach the handler of
 * {@link onAlert} on the event loop, never keeping the process alive.
 * @module
 */
import type * as native from './native.js';
import { ConfigError } from './errors.js';

/** What an approver is asked: may `tool` run with `args`? */
export interface ApprovalRequest {
  tool: string;
  /** The arguments as they will be recorded (before redaction). */
  args: unknown;
  /** The rule asking. */
  ruleId: string;
  /** Its description. */
  reason: string;
  /** What every matching rule adds. */
  flags: string[];
  score: number;
  traceId: string;
  spanId: string;
}

/** An approver's answer: who decided and why (stored in the erasable payload). */
export interface Approval {
  approved: boolean;
  reviewer?: string;
  reason?: string;
}

/** `true` / `false` or an {@link Approval}. */
export type ApprovalAnswer = boolean | Approval;

/** Answers approval requests, synchronously or with a promise. */
export type Approver = (request: ApprovalRequest) => ApprovalAnswer | PromiseLike<ApprovalAnswer>;

/** An `alert` verdict, as handed to the {@link onAlert} handler. */
export interface Alert {
  ruleId: string;
  reason: string;
  flags: string[];
  score: number;
  traceId?: string;
  spanId?: string;
  tool?: string;
}

/** How an approval ended. */
export interface ApprovalOutcome {
  outcome: 'approved' | 'denied' | 'timeout';
  reviewer?: string;
  reason?: string;
}

let approver: Approver | undefined;
let approvalTimeoutMs = 30_000;
let alertHandler: ((alert: Alert) => void) | undefined;

/**
 * Registers the function asked before a call that a `require_approval`
 * rule matches. No answer within `timeoutMs` (default 30 000) is a denial
 * recorded as `timeout`; an approver that throws, rejects or answers
 * something else denies (recorded as `denied`). A synchronous answer
 * keeps a synchronous tool synchronous; a promise makes that call return
 * a promise.
 */
export function setApprover(fn: Approver | undefined | null, options: { timeoutMs?: number } = {}): void {
  if (fn !== undefined && fn !== null && typeof fn !== 'function') {
    throw new ConfigError(`approver must be a function, got ${typeof fn}`);
  }
  const t = options.timeoutMs;
  if (t !== undefined) {
    if (typeof t !== 'number' || !(t > 0)) throw new ConfigError(`approval timeout must be positive milliseconds, got ${String(t)}`);
    approvalTimeoutMs = t;
  }
  approver = fn ?? undefined;
}

/**
 * Registers the function called with each `alert` verdict, or removes it
 * (`undefined`). It runs on the event loop, off the tool's path; what it
 * throws is reported as a process warning.
 */
export function onAlert(fn: ((alert: Alert) => void) | undefined | null, log?: native.NativeLog): void {
  if (fn !== undefined && fn !== null && typeof fn !== 'function') {
    throw new ConfigError(`alert handler must be a function, got ${typeof fn}`);
  }
  alertHandler = fn ?? undefined;
  if (log && !log.closed) installAlertHandler(log);
}

/** Hands the registered alert handler (or none) to `log`'s core. */
export function installAlertHandler(log: native.NativeLog): void {
  const handler = alertHandler;
  if (!handler) {
    log.setAlertHandler(undefined);
    return;
  }
  log.setAlertHandler((json: string) => {
    try {
      const a = JSON.parse(json) as Record<string, unknown>;
      handler({
        ruleId: String(a.rule_id),
        reason: String(a.reason),
        flags: (a.flags as string[] | undefined) ?? [],
        score: Number(a.score),
        traceId: (a.trace_id as string | null) ?? undefined,
        spanId: (a.span_id as string | null) ?? undefined,
        tool: (a.tool as string | null) ?? undefined,
      });
    } catch (e) {
      process.emitWarning(`agent-audit: the alert handler threw: ${e instanceof Error ? e.message : String(e)}`, {
        code: 'AGENT_AUDIT_ALERT_HANDLER',
      });
    }
  });
}

function outcomeOf(answer: unknown): ApprovalOutcome {
  if (typeof answer === 'boolean') return { outcome: answer ? 'approved' : 'denied' };
  if (typeof answer === 'object' && answer !== null && typeof (answer as Approval).approved === 'boolean') {
    const a = answer as Approval;
    return {
      outcome: a.approved ? 'approved' : 'denied',
      reviewer: a.reviewer === undefined ? undefined : String(a.reviewer),
      reason: a.reason === undefined ? undefined : String(a.reason),
    };
  }
  return { outcome: 'denied', reason: `the approver answered ${answer === null ? 'null' : typeof answer}, not an approval` };
}

function failed(e: unknown): ApprovalOutcome {
  const what = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { outcome: 'denied', reason: `the approver failed: ${what}` };
}

function isThenable(x: unknown): x is PromiseLike<unknown> {
  return (typeof x === 'object' || typeof x === 'function') && x !== null && typeof (x as PromiseLike<unknown>).then === 'function';
}

/**
 * Asks the approver: the outcome at once when it answers synchronously,
 * else a promise of it, settled by the answer or the timeout.
 */
export function askApproval(request: ApprovalRequest): ApprovalOutcome | Promise<ApprovalOutcome> {
  const fn = approver;
  if (!fn) return { outcome: 'denied', reason: 'no approver is registered' };
  let answer: unknown;
  try {
    answer = fn(request);
  } catch (e) {
    return failed(e);
  }
  if (!isThenable(answer)) return outcomeOf(answer);
  const timeoutMs = approvalTimeoutMs;
  return new Promise<ApprovalOutcome>((resolve) => {
    const timer = setTimeout(() => resolve({ outcome: 'timeout', reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
    Promise.resolve(answer).then(
      (a) => {
        clearTimeout(timer);
        resolve(outcomeOf(a));
      },
      (e: unknown) => {
        clearTimeout(timer);
        resolve(failed(e));
      },
    );
  });
}

/** The request an approver sees for `decision`. */
export function requestOf(decision: native.PolicyDecision, traceId: string, spanId: string): ApprovalRequest {
  return {
    tool: decision.tool,
    args: decision.args,
    ruleId: decision.ruleId,
    reason: decision.reason,
    flags: decision.flags,
    score: decision.score,
    traceId,
    spanId,
  };
}
