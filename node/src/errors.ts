/**
 * Errors of agent-audit. Every error the package throws is an
 * {@link AuditError} with a stable `code` (`ERR_AUDIT_…`); the native
 * module reports core errors by code and {@link fromNative} maps each code
 * to its class here, the one mapping in JavaScript.
 *
 * Only API misuse and explicit calls (init, verify, showTrace …) throw.
 * Logging trouble inside `trace`, `tool`, `llmCall` and `agentSpawn` never
 * throws into the agent: it is counted in `stats()` and reported once as a
 * process warning.
 * @module
 */

/** Every code an {@link AuditError} can carry. */
export type AuditErrorCode =
  | 'ERR_AUDIT_CONFIG'
  | 'ERR_AUDIT_INVALID_EVENT'
  | 'ERR_AUDIT_KEY'
  | 'ERR_AUDIT_IO'
  | 'ERR_AUDIT_CLOSED'
  | 'ERR_AUDIT_PARSE'
  | 'ERR_AUDIT_INVALID_LOG'
  | 'ERR_AUDIT_PROOF'
  | 'ERR_AUDIT_NOT_FOUND'
  | 'ERR_AUDIT_ALREADY_INITIALIZED'
  | 'ERR_AUDIT_INVALID_ARGUMENT'
  | 'ERR_AUDIT_TOOL_BLOCKED'
  | 'ERR_AUDIT_INTERNAL';

/** Base class of every error agent-audit throws. */
export class AuditError extends Error {
  /** Stable machine-readable code. */
  readonly code: AuditErrorCode;

  constructor(message: string, code: AuditErrorCode = 'ERR_AUDIT_INTERNAL', options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** A configuration value is invalid (bad option, bad directory, bad pattern). */
export class ConfigError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_CONFIG', options); }
}
/** An event is malformed (missing or mistyped field, out-of-range number). */
export class InvalidEventError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_INVALID_EVENT', options); }
}
/** A signing or verifying key is missing, unreadable or malformed. */
export class KeyError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_KEY', options); }
}
/** An operating-system I/O error. */
export class IoError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_IO', options); }
}
/** The log is shut down. */
export class ClosedError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_CLOSED', options); }
}
/** JSON text could not be parsed. */
export class ParseError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_PARSE', options); }
}
/** A directory or file is not a usable audit log. */
export class InvalidLogError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_INVALID_LOG', options); }
}
/** A Merkle proof does not check out or cannot be built. */
export class ProofError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_PROOF', options); }
}
/** A trace, event or stream asked for does not exist. */
export class NotFoundError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_NOT_FOUND', options); }
}
/** `init()` was called while a log is open; call `shutdown()` first. */
export class AlreadyInitializedError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_ALREADY_INITIALIZED', options); }
}
/** An argument to the API has the wrong type or shape. */
export class InvalidArgumentError extends AuditError {
  constructor(message: string, options?: { cause?: unknown }) { super(message, 'ERR_AUDIT_INVALID_ARGUMENT', options); }
}

/** What stopped a tool call (see {@link ToolBlockedError}). */
export interface ToolBlockedDetails {
  /** The deciding policy rule. */
  ruleId: string;
  /** The tool that did not run. */
  tool: string;
  /** The rule's action: `block` or `require_approval`. */
  action: string;
  /** The rule's description. */
  reason: string;
  /** For `require_approval`: how the approval ended (`denied` or `timeout`). */
  review?: 'denied' | 'timeout';
}

/**
 * A policy rule stopped a tool before its body ran: a `block` rule, or a
 * `require_approval` rule whose approval was denied or timed out. The
 * call is recorded with `result_status` blocked next to a `policy` record
 * naming the rule.
 */
export class ToolBlockedError extends AuditError {
  readonly ruleId: string;
  readonly tool: string;
  readonly action: string;
  readonly reason: string;
  readonly review: 'denied' | 'timeout' | undefined;

  constructor(message: string, details: ToolBlockedDetails) {
    super(message, 'ERR_AUDIT_TOOL_BLOCKED');
    this.ruleId = details.ruleId;
    this.tool = details.tool;
    this.action = details.action;
    this.reason = details.reason;
    this.review = details.review;
  }
}

type ErrorClass = new (message: string, options?: { cause?: unknown }) => AuditError;

const BY_CODE: Record<string, ErrorClass> = {
  ERR_AUDIT_CONFIG: ConfigError,
  ERR_AUDIT_INVALID_EVENT: InvalidEventError,
  ERR_AUDIT_KEY: KeyError,
  ERR_AUDIT_IO: IoError,
  ERR_AUDIT_CLOSED: ClosedError,
  ERR_AUDIT_PARSE: ParseError,
  ERR_AUDIT_INVALID_LOG: InvalidLogError,
  ERR_AUDIT_PROOF: ProofError,
  ERR_AUDIT_NOT_FOUND: NotFoundError,
};

/** Maps an error thrown by the native module to its {@link AuditError} class. */
export function fromNative(e: unknown): AuditError {
  if (e instanceof AuditError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  const cls = typeof code === 'string' ? BY_CODE[code] : undefined;
  if (cls) return new cls(message, { cause: e });
  return new AuditError(message, 'ERR_AUDIT_INTERNAL', { cause: e });
}
