/**
 * The trace context: which trace and span the code running now belongs
 * to, carried by one `AsyncLocalStorage` across `await`, `Promise.all`,
 * timers, event-emitter callbacks and async iterators. A frame is
 * immutable; a new span runs its code in a new frame whose parent is the
 * frame it was started in. {@link captureContext} / {@link runInContext}
 * carry a frame into a worker thread as a plain, structured-cloneable
 * object.
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** Who the agent acts for, in the record's field names. */
export interface PrincipalFields {
  tenant_id?: string;
  user_id?: string;
  agent_id?: string;
  session_id?: string;
  caller?: 'human' | 'system';
}

/** One frame of the trace context. */
export interface Frame {
  readonly traceId: string;
  readonly spanId: string;
  readonly principal?: PrincipalFields;
  readonly retentionClass?: string;
}

/** A frame as a plain object, safe to `postMessage` to a worker. */
export interface CapturedContext {
  readonly traceId: string;
  readonly spanId: string;
  readonly principal?: PrincipalFields;
  readonly retentionClass?: string;
  /** The log directory, so a worker can join this process's writer. */
  readonly dir?: string;
}

/** The store every span of this module instance reads. */
export const storage = new AsyncLocalStorage<Frame>();

/** The frame of the code running now, if it runs inside a trace. */
export function currentFrame(): Frame | undefined {
  return storage.getStore();
}

/** The trace and span the caller runs in, or `undefined` outside a trace. */
export function currentTrace(): { traceId: string; spanId: string } | undefined {
  const f = storage.getStore();
  return f ? { traceId: f.traceId, spanId: f.spanId } : undefined;
}

/** Binds `fn` to the current context: it runs in this trace wherever it is called later. */
export function bind<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  return AsyncLocalStorage.bind(fn);
}

function isFrame(x: unknown): x is CapturedContext {
  const c = x as CapturedContext | null;
  return typeof c === 'object' && c !== null && typeof c.traceId === 'string' && /^[0-9a-f]{32}$/.test(c.traceId) &&
    typeof c.spanId === 'string' && /^[0-9a-f]{16}$/.test(c.spanId);
}

/** Checks a captured context received from another thread. */
export function validCaptured(x: unknown): x is CapturedContext {
  return isFrame(x);
}
