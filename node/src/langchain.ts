/**
 * LangChain.js: a callback handler that turns the runs of any LangChain or
 * LangGraph program into audit events.
 *
 * ```ts
 * import * as audit from 'agent-audit';
 * import { AuditCallbackHandler } from 'agent-audit/langchain';
 * await audit.trace('support', { userId }, () =>
 *   agent.invoke({ messages }, { callbacks: [new AuditCallbackHandler()] }));
 * ```
 *
 * - chat model and LLM runs: `llm_call` (model, provider, parameters,
 *   token usage from `usage_metadata` or `llmOutput.tokenUsage`, finish
 *   reason, tool calls requested, messages and completion);
 * - tool runs: `tool_call` (name, arguments, result, or the error and
 *   status `error`);
 * - retriever runs: `retrieval` (query, documents by id, content hash and
 *   score);
 * - agent actions and finishes (`AgentExecutor`), and the tool calls a
 *   model asks for inside a LangGraph agent: `decision`;
 * - chains and graph nodes carry no record of their own: the steps inside
 *   them nest under the closest enclosing span, the current `audit.trace`
 *   or, for a run started outside any trace, a trace the handler opens
 *   for it (`trace_start` … `trace_end` with the run's outcome);
 * - a policy rule that blocks a tool (or an approval denied) stops it
 *   before LangChain runs it: `handleToolStart` throws the
 *   `ToolBlockedError`.
 * @module
 */
import { createHash } from 'node:crypto';
import { BaseCallbackHandler, type BaseCallbackHandlerInput } from '@langchain/core/callbacks/base';
import type { AgentAction, AgentFinish } from '@langchain/core/agents';
import type { DocumentInterface } from '@langchain/core/documents';
import type { Serialized } from '@langchain/core/load/serializable';
import type { BaseMessage } from '@langchain/core/messages';
import type { LLMResult } from '@langchain/core/outputs';
import type { ChainValues } from '@langchain/core/utils/types';
import { currentFrame, type Frame } from './context.js';
import { decision, retrieval, type LlmCallRecord, type RetrievedDocument } from './index.js';
import { runIn, startLlmCall, startTool, startTrace, type Deferred } from './deferred.js';

/** Options of {@link AuditCallbackHandler}. */
export interface AuditCallbackHandlerOptions extends BaseCallbackHandlerInput {
  /**
   * A run started outside any `audit.trace` opens a trace of its own
   * (default true), named after the run or after this string.
   */
  trace?: boolean | string;
  /**
   * Record a `decision` (`call_tools`) when a model inside a LangGraph
   * graph asks for tools (default true). `AgentExecutor` actions are
   * always recorded.
   */
  decisions?: boolean;
  /** Provider of the models, when they do not say (`ls_provider`). */
  provider?: string;
  /** Tool versions by tool name, recorded as `tool.version`. */
  toolVersions?: Record<string, string>;
}

type RunKind = 'chain' | 'trace' | 'llm' | 'tool' | 'retriever';

interface Run {
  kind: RunKind;
  /** Where the steps inside this run nest. */
  frame: Frame | undefined;
  /** The frame the run itself was started in. */
  parent: Frame | undefined;
  /** The run's own span (trace, model call, tool call). */
  span?: Deferred<unknown>;
  /** performance.now() at the start (retrievers: their record is written at the end). */
  started?: number;
  name?: string;
  query?: string;
  /** A model run inside a LangGraph node: its tool calls are the agent's decision. */
  inGraph?: boolean;
}

/** Shared between a handler and its copies (`copy()`). */
interface State {
  runs: Map<string, Run>;
  /** The frame the handler was created in: the fallback for root runs. */
  home: Frame | undefined;
  warned: boolean;
}

const STATE = Symbol('agent-audit.langchain.state');

/**
 * A LangChain callback handler writing audit events. Pass it in
 * `callbacks` of `invoke` / `stream` (or of a model, tool or graph).
 * Its handlers run inline (`awaitHandlers`), so the events keep the
 * caller's trace context; each costs a copy of the run's data.
 */
export class AuditCallbackHandler extends BaseCallbackHandler {
  name = 'agent_audit';
  private readonly opts: AuditCallbackHandlerOptions;
  private readonly [STATE]: State;

  constructor(options: AuditCallbackHandlerOptions = {}) {
    super(options);
    // Inline: the events are cheap to capture and must see the caller's
    // AsyncLocalStorage context, which a background queue would lose.
    this.awaitHandlers = true;
    // LangChain passes on what a handler throws only with raiseError. The
    // handlers throw nothing but a policy's ToolBlockedError, which must
    // stop the tool before it runs (every other trouble is swallowed).
    this.raiseError = true;
    // copy() passes the handler itself: the copy shares its runs.
    const from: unknown = options;
    if (from instanceof AuditCallbackHandler) {
      this.opts = from.opts;
      this[STATE] = from[STATE];
    } else {
      this.opts = { ...options };
      this[STATE] = { runs: new Map(), home: currentFrame(), warned: false };
    }
  }

  private get runs(): Map<string, Run> {
    return this[STATE].runs;
  }

  /**
   * Runs `fn`; a failure here is reported once and never reaches the
   * agent. The end handlers return a promise that LangChain awaits (they
   * run inline): it resolves once the span's record is with the writer,
   * so the records are in the log's order and complete when the run
   * returns.
   */
  private guard(what: string, fn: () => void | Promise<void>): void | Promise<void> {
    try {
      const r = fn();
      if (r) {
        return r.catch((e: unknown) => {
          if (isBlocked(e)) throw e;
          this.warn(what, e);
        });
      }
    } catch (e) {
      if (isBlocked(e)) throw e;
      this.warn(what, e);
    }
  }

  private warn(what: string, e: unknown): void {
    const s = this[STATE];
    if (s.warned) return;
    s.warned = true;
    process.emitWarning(`agent-audit: LangChain ${what} was not fully recorded: ${(e as Error)?.message ?? e}`, {
      code: 'AGENT_AUDIT_NOT_LOGGED',
    });
  }

  /** The frame a new run nests in: its parent run's, else the caller's. */
  private parentFrame(parentRunId: string | undefined): Frame | undefined {
    const parent = parentRunId ? this.runs.get(parentRunId) : undefined;
    if (parent) return parent.frame;
    return currentFrame() ?? this[STATE].home;
  }

  private finish(runId: string): Run | undefined {
    const run = this.runs.get(runId);
    if (run) this.runs.delete(runId);
    return run;
  }

  // ------------------------------------------------------------ chains

  override handleChainStart(
    chain: Serialized,
    inputs: ChainValues,
    runId: string,
    // The order LangChain calls with (its declaration names the 4th
    // parameter runType): parent run, tags, metadata, run type, run name.
    parentRunId?: string,
    _tags?: string[],
    _metadata?: Record<string, unknown>,
    _runType?: string,
    runName?: string,
  ): void {
    this.guard('a chain start', () => {
      const known = parentRunId !== undefined && this.runs.has(parentRunId);
      const parent = this.parentFrame(parentRunId);
      if (!known && parent === undefined && this.opts.trace !== false) {
        const name = typeof this.opts.trace === 'string' ? this.opts.trace : runName ?? lastId(chain) ?? 'langchain';
        const span = startTrace(name, { input: plain(inputs), metadata: { langchain_run_id: runId } });
        this.runs.set(runId, { kind: 'trace', frame: span.frame, parent, span });
        return;
      }
      this.runs.set(runId, { kind: 'chain', frame: parent, parent });
    });
  }

  override handleChainEnd(outputs: ChainValues, runId: string): void | Promise<void> {
    return this.guard('a chain end', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'trace') return;
      run.span!.end(plain(outputs));
      return run.span!.settled;
    });
  }

  override handleChainError(err: unknown, runId: string): void | Promise<void> {
    return this.guard('a chain error', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'trace') return;
      run.span!.fail(err);
      return run.span!.settled;
    });
  }

  // ------------------------------------------------------------ models

  override handleChatModelStart(
    llm: Serialized,
    messages: BaseMessage[][],
    runId: string,
    parentRunId?: string,
    extraParams?: Record<string, unknown>,
    _tags?: string[],
    metadata?: Record<string, unknown>,
    runName?: string,
  ): void {
    this.guard('a chat model start', () => {
      this.startModel(llm, runId, parentRunId, extraParams, metadata, runName, { messages: messages.map((group) => group.map(plainMessage)) });
    });
  }

  override handleLLMStart(
    llm: Serialized,
    prompts: string[],
    runId: string,
    parentRunId?: string,
    extraParams?: Record<string, unknown>,
    _tags?: string[],
    metadata?: Record<string, unknown>,
    runName?: string,
  ): void {
    this.guard('an LLM start', () => {
      this.startModel(llm, runId, parentRunId, extraParams, metadata, runName, { prompt: prompts.length === 1 ? prompts[0] : prompts });
    });
  }

  private startModel(
    llm: Serialized,
    runId: string,
    parentRunId: string | undefined,
    extraParams: Record<string, unknown> | undefined,
    metadata: Record<string, unknown> | undefined,
    runName: string | undefined,
    input: { messages?: unknown; prompt?: unknown },
  ): void {
    const parent = this.parentFrame(parentRunId);
    const invocation = asRecord(extraParams?.invocation_params);
    const kwargs = asRecord((llm as { kwargs?: unknown }).kwargs);
    const model = str(metadata?.ls_model_name) ?? str(invocation.model) ?? str(invocation.model_name) ??
      str(invocation.modelName) ?? str(invocation.model_id) ?? str(kwargs.model) ?? str(kwargs.model_name) ??
      str(kwargs.modelName) ?? lastId(llm) ?? runName ?? 'unknown';
    const provider = str(metadata?.ls_provider) ?? this.opts.provider;
    const span = startLlmCall(parent, { model, provider, params: modelParams(invocation, metadata), ...input });
    this.runs.set(runId, {
      kind: 'llm',
      frame: span.frame,
      parent,
      span,
      inGraph: metadata?.langgraph_node !== undefined,
    });
  }

  override handleLLMEnd(output: LLMResult, runId: string): void | Promise<void> {
    return this.guard('a model end', async () => {
      const run = this.finish(runId);
      if (run?.kind !== 'llm') return;
      const r = modelResult(output);
      run.span!.end(r.record);
      await run.span!.settled;
      // The model's choice, after the call that made it.
      if (r.toolCalls.length && run.inGraph && this.opts.decisions !== false) {
        runIn(run.parent, () => decision({
          decision: 'call_tools',
          tools: [...new Set(r.toolCalls.map((c) => c.name))],
          reasoning: r.text || undefined,
          metadata: { tool_call_ids: r.toolCalls.map((c) => c.id).filter((id): id is string => typeof id === 'string') },
        }));
      }
    });
  }

  override handleLLMError(err: unknown, runId: string): void | Promise<void> {
    return this.guard('a model error', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'llm') return;
      run.span!.fail(err);
      return run.span!.settled;
    });
  }

  // ------------------------------------------------------------- tools

  override handleToolStart(
    tool: Serialized,
    input: string,
    runId: string,
    parentRunId?: string,
    _tags?: string[],
    _metadata?: Record<string, unknown>,
    runName?: string,
    toolCallId?: string,
  ): void | Promise<void> {
    return this.guard('a tool start', () => {
      const parent = this.parentFrame(parentRunId);
      const name = runName ?? str((tool as { name?: unknown }).name) ?? lastId(tool) ?? 'tool';
      // A policy `block` rule throws here: LangChain does not run the tool.
      const span = startTool(parent, name, toolArgs(input), {
        version: this.opts.toolVersions?.[name],
        metadata: toolCallId ? { tool_call_id: toolCallId } : undefined,
      });
      const run: Run = { kind: 'tool', frame: span.frame ?? parent, parent, span, name };
      this.runs.set(runId, run);
      if (span.running) return;
      // A `require_approval` rule: the tool waits for the answer.
      return span.ready.then(
        () => {
          run.frame = span.frame ?? parent;
        },
        (e: unknown) => {
          this.runs.delete(runId);
          throw e;
        },
      );
    });
  }

  override handleToolEnd(output: unknown, runId: string): void | Promise<void> {
    return this.guard('a tool end', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'tool') return;
      // A ToolMessage (the tool was called with a tool call): its content.
      run.span!.end(isMessage(output) ? plain(output.content) : plain(output));
      return run.span!.settled;
    });
  }

  override handleToolError(err: unknown, runId: string): void | Promise<void> {
    return this.guard('a tool error', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'tool') return;
      run.span!.fail(err);
      return run.span!.settled;
    });
  }

  // -------------------------------------------------------- retrievers

  override handleRetrieverStart(
    retriever: Serialized,
    query: string,
    runId: string,
    parentRunId?: string,
    _tags?: string[],
    _metadata?: Record<string, unknown>,
    name?: string,
  ): void {
    this.guard('a retriever start', () => {
      const parent = this.parentFrame(parentRunId);
      this.runs.set(runId, {
        kind: 'retriever',
        frame: parent,
        parent,
        started: performance.now(),
        name: name ?? lastId(retriever) ?? 'retriever',
        query,
      });
    });
  }

  override handleRetrieverEnd(documents: DocumentInterface[], runId: string): void {
    this.guard('a retriever end', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'retriever') return;
      runIn(run.parent, () => retrieval({
        source: run.name,
        query: run.query,
        documents: documents.map(retrievedDocument),
        durationMs: performance.now() - run.started!,
        status: 'ok',
      }));
    });
  }

  override handleRetrieverError(err: unknown, runId: string): void {
    this.guard('a retriever error', () => {
      const run = this.finish(runId);
      if (run?.kind !== 'retriever') return;
      const name = (err as { name?: unknown } | null)?.name;
      runIn(run.parent, () => retrieval({
        source: run.name,
        query: run.query,
        durationMs: performance.now() - run.started!,
        status: name === 'AbortError' ? 'cancelled' : name === 'TimeoutError' ? 'timeout' : 'error',
        metadata: { error: errorText(err) },
      }));
    });
  }

  // ------------------------------------------------------------ agents

  override handleAgentAction(action: AgentAction, runId: string): void {
    this.guard('an agent action', () => {
      runIn(this.parentFrame(runId), () => decision({
        decision: 'call_tools',
        tools: [action.tool],
        reasoning: action.log || undefined,
      }));
    });
  }

  override handleAgentEnd(finish: AgentFinish, runId: string): void {
    this.guard('an agent finish', () => {
      runIn(this.parentFrame(runId), () => decision({
        decision: 'finish',
        reasoning: finish.log || undefined,
      }));
    });
  }
}

// ---------------------------------------------------------------- helpers

/** A policy stopped a tool (`ToolBlockedError`). */
function isBlocked(e: unknown): boolean {
  return (e as { code?: unknown } | null)?.code === 'ERR_AUDIT_TOOL_BLOCKED';
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v ? v : undefined;
}

function asRecord(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function lastId(s: Serialized | undefined): string | undefined {
  const id = (s as { id?: unknown } | undefined)?.id;
  return Array.isArray(id) && id.length ? str(id[id.length - 1]) : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

const PARAM_KEYS: Record<string, string> = {
  ls_temperature: 'temperature',
  ls_max_tokens: 'max_tokens',
  ls_stop: 'stop',
};

/**
 * The generation parameters: the scalar invocation parameters (and stop
 * lists), the `ls_*` ones LangChain adds to the metadata, and the names of
 * the tools bound to the model.
 */
function modelParams(invocation: Record<string, unknown>, metadata: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(invocation)) {
    if (k === 'tools' || k === '_type' || k === 'model' || k === 'model_name' || k === 'modelName') continue;
    if (['string', 'number', 'boolean'].includes(typeof v)) out[k] = v;
    else if (Array.isArray(v) && v.every((x) => typeof x === 'string')) out[k] = v;
  }
  for (const [k, name] of Object.entries(PARAM_KEYS)) {
    const v = metadata?.[k];
    if (v !== undefined && v !== null && out[name] === undefined) out[name] = v;
  }
  const tools = Array.isArray(invocation.tools) ? invocation.tools.map(toolName).filter((n): n is string => !!n) : [];
  if (tools.length) out.tools = tools;
  return Object.keys(out).length ? out : undefined;
}

/** A bound tool's name in any provider's format (OpenAI, Anthropic, Bedrock …). */
function toolName(t: unknown): string | undefined {
  const o = asRecord(t);
  return str(o.name) ?? str(asRecord(o.function).name) ?? str(asRecord(o.toolSpec).name);
}

interface ToolCallLike {
  name: string;
  id?: string;
  args?: unknown;
}

interface MessageLike {
  content: unknown;
  getType(): string;
  name?: string;
  tool_calls?: ToolCallLike[];
  tool_call_id?: string;
  usage_metadata?: { input_tokens?: number; output_tokens?: number };
  response_metadata?: Record<string, unknown>;
}

function isMessage(x: unknown): x is MessageLike {
  return typeof x === 'object' && x !== null && typeof (x as { getType?: unknown }).getType === 'function' && 'content' in x;
}

/** A message as `{ role, content, name?, tool_calls?, tool_call_id? }`. */
function plainMessage(m: unknown): unknown {
  if (!isMessage(m)) return plain(m);
  const out: Record<string, unknown> = { role: m.getType(), content: plain(m.content) };
  if (m.name) out.name = m.name;
  if (m.tool_calls?.length) out.tool_calls = m.tool_calls.map((c) => ({ id: c.id, name: c.name, args: plain(c.args) }));
  if (m.tool_call_id) out.tool_call_id = m.tool_call_id;
  return out;
}

function isDocument(x: unknown): x is DocumentInterface {
  return typeof x === 'object' && x !== null && typeof (x as DocumentInterface).pageContent === 'string' &&
    typeof (x as DocumentInterface).metadata === 'object';
}

/**
 * Chain inputs and outputs as plain data: messages and documents by their
 * content rather than as class instances (whose serialised kwargs repeat
 * everything).
 */
function plain(v: unknown, depth = 0): unknown {
  if (typeof v !== 'object' || v === null) return v;
  if (depth > 16) return v;
  if (isMessage(v)) return plainMessage(v);
  if (isDocument(v)) return { id: v.id, pageContent: v.pageContent, metadata: v.metadata };
  if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
  const proto = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = plain(x, depth + 1);
  return out;
}

/** A tool's input as recorded: the JSON object LangChain passes as text, else `{ input }`. */
function toolArgs(input: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(input);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // plain text input
  }
  return { input };
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((b) => (typeof b === 'string' ? b : str(asRecord(b).text) ?? '')).join('');
}

/** What a model run produced: usage, finish reason, tool calls, completion. */
function modelResult(output: LLMResult): { record: LlmCallRecord; toolCalls: ToolCallLike[]; text: string } {
  const gens = (output.generations ?? []).flat();
  const llmOutput = asRecord(output.llmOutput);
  let inputTokens: number | undefined;
  let outputTokens: number | undefined;
  let finishReason: string | undefined;
  let modelVersion: string | undefined;
  const toolCalls: ToolCallLike[] = [];
  const completion: unknown[] = [];
  let text = '';
  for (const g of gens) {
    const gen = g as { text?: string; message?: unknown; generationInfo?: Record<string, unknown> };
    const info = asRecord(gen.generationInfo);
    finishReason ??= str(info.finish_reason) ?? str(info.stop_reason);
    if (isMessage(gen.message)) {
      const m = gen.message;
      const usage = m.usage_metadata;
      if (usage) {
        inputTokens = (inputTokens ?? 0) + (num(usage.input_tokens) ?? 0);
        outputTokens = (outputTokens ?? 0) + (num(usage.output_tokens) ?? 0);
      }
      const meta = asRecord(m.response_metadata);
      finishReason ??= str(meta.finish_reason) ?? str(meta.stop_reason);
      modelVersion ??= str(meta.model_name) ?? str(meta.model);
      for (const c of m.tool_calls ?? []) toolCalls.push(c);
      text += textOf(m.content);
      completion.push(plainMessage(m));
    } else {
      text += gen.text ?? '';
      completion.push(gen.text);
    }
  }
  if (inputTokens === undefined && outputTokens === undefined) {
    const usage = asRecord(llmOutput.tokenUsage ?? llmOutput.estimatedTokenUsage ?? llmOutput.usage);
    inputTokens = num(usage.promptTokens) ?? num(usage.prompt_tokens) ?? num(usage.input_tokens);
    outputTokens = num(usage.completionTokens) ?? num(usage.completion_tokens) ?? num(usage.output_tokens);
  }
  modelVersion ??= str(llmOutput.model_name) ?? str(llmOutput.model);
  const record: LlmCallRecord = {
    inputTokens,
    outputTokens,
    finishReason,
    toolCallsRequested: toolCalls.length ? toolCalls.map((c) => c.name) : undefined,
    modelVersion,
    completion: completion.length === 1 ? completion[0] : completion,
  };
  return { record, toolCalls, text };
}

function retrievedDocument(d: DocumentInterface, i: number): RetrievedDocument {
  const meta = asRecord(d.metadata);
  const id = str(d.id) ?? str(meta.id) ?? (typeof meta.id === 'number' ? String(meta.id) : undefined) ?? str(meta.source) ?? `#${i}`;
  const score = [meta.score, meta.relevance_score, meta.relevanceScore, meta._distance].find((s) => typeof s === 'number' && Number.isFinite(s)) as number | undefined;
  return {
    id,
    hash: `sha256:${createHash('sha256').update(d.pageContent).digest('hex')}`,
    score,
    content: d.pageContent,
  };
}

function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}
