/**
 * Spans whose end is reported later, for the framework integrations
 * (`agent-audit/langchain`, `agent-audit/ai-sdk`): a framework tells us
 * that a model call or a tool run started in one callback and that it
 * ended in another. Each span here is the public API's own span
 * (`llmCall`, `tool`, `trace`) whose callback returns a promise settled
 * by that second callback, so the records, timings, statuses and any
 * policy gate are exactly those of the wrappers.
 * @internal
 * @module
 */
import { currentFrame, storage, type Frame } from './context.js';
import {
  llmCall,
  tool,
  trace,
  type LlmCallOptions,
  type LlmCallRecord,
  type TraceHandle,
  type TraceOptions,
  type ToolOptions,
} from './index.js';

/** A started span: its frame (for the steps inside it) and how to end it. */
export interface Deferred<R> {
  /** The span's frame; steps inside it nest under it. */
  readonly frame: Frame | undefined;
  /** Ends the span with `ok`. */
  end(result: R): void;
  /** Ends the span with the error's status (`error`, `cancelled`, `timeout`). */
  fail(error: unknown, partial?: R): void;
  /** Resolves once the span's record has been handed to the writer. */
  readonly settled: Promise<void>;
}

const noop = () => undefined;

/** Runs `fn` in `frame`, or outside any trace when there is none. */
export function runIn<T>(frame: Frame | undefined, fn: () => T): T {
  return frame ? storage.run(frame, fn) : storage.exit(fn);
}

interface Settle<T> {
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function pending<T>(): { promise: Promise<T>; settle: Settle<T> } {
  let settle!: Settle<T>;
  const promise = new Promise<T>((resolve, reject) => {
    settle = { resolve, reject };
  });
  return { promise, settle };
}

/** Starts an `llm_call` under `parent`; `end` records usage, finish reason, completion … */
export function startLlmCall(parent: Frame | undefined, options: LlmCallOptions): Deferred<LlmCallRecord> {
  let frame: Frame | undefined;
  let record: ((r: LlmCallRecord) => void) | undefined;
  const { promise, settle } = pending<void>();
  const settled = runIn(parent, () => llmCall(options, (call) => {
    frame = currentFrame();
    record = (r) => call.record(r);
    return promise;
  })).then(noop, noop);
  let done = false;
  return {
    frame,
    settled,
    end(r) {
      if (done) return;
      done = true;
      record?.(r);
      settle.resolve();
    },
    fail(e, partial) {
      if (done) return;
      done = true;
      if (partial) record?.(partial);
      settle.reject(e);
    },
  };
}

/** A started tool call: `ready` settles when the policy lets its body run. */
export interface DeferredTool extends Deferred<unknown> {
  /** Whether the call's body runs (false while an approval is pending). */
  readonly running: boolean;
  /**
   * Resolves when the body runs; rejects with the `ToolBlockedError` when
   * a `require_approval` rule's approval is denied or times out.
   */
  readonly ready: Promise<void>;
}

/**
 * Starts a `tool_call` under `parent` with `args` as its arguments (a
 * plain object is recorded as is, as `tool()` records a function that
 * takes one object); `end(result)` records the result. Goes through the
 * policy gate of `tool()`: a `block` rule throws its `ToolBlockedError`
 * here, a `require_approval` rule makes `ready` wait for the answer.
 */
export function startTool(parent: Frame | undefined, name: string, args: unknown, options: ToolOptions = {}): DeferredTool {
  let frame: Frame | undefined;
  let running = false;
  const { promise, settle } = pending<unknown>();
  const gate = pending<void>();
  gate.promise.catch(noop);
  // A bound function has no readable parameter list, so `tool()` records
  // its single object argument as is rather than under a parameter name.
  const body = (_args: unknown): Promise<unknown> => {
    frame = currentFrame();
    running = true;
    gate.settle.resolve();
    return promise;
  };
  const wrapped = tool(name, body.bind(undefined), options);
  const settled = Promise.resolve(runIn(parent, () => wrapped(args))).then(noop, (e: unknown) => {
    if (!running) gate.settle.reject(e);
  });
  let done = false;
  return {
    get frame() {
      return frame;
    },
    get running() {
      return running;
    },
    ready: gate.promise,
    settled,
    end(result) {
      if (done) return;
      done = true;
      settle.resolve(result);
    },
    fail(e) {
      if (done) return;
      done = true;
      settle.reject(e);
    },
  };
}

/** Starts a trace (`trace_start` now, `trace_end` on `end` / `fail`) under no span. */
export function startTrace(name: string, options: TraceOptions): Deferred<unknown> & { handle: TraceHandle | undefined } {
  let frame: Frame | undefined;
  let handle: TraceHandle | undefined;
  const { promise, settle } = pending<unknown>();
  const settled = runIn(undefined, () => trace(name, options, (t) => {
    frame = currentFrame();
    handle = t;
    return promise;
  })).then(noop, noop);
  let done = false;
  return {
    frame,
    settled,
    handle,
    end(output) {
      if (done) return;
      done = true;
      settle.resolve(output);
    },
    fail(e) {
      if (done) return;
      done = true;
      settle.reject(e);
    },
  };
}

/** The error an abandoned stream ends with: its status is `cancelled`. */
export function abortError(message: string): Error {
  const e = new Error(message);
  e.name = 'AbortError';
  return e;
}
