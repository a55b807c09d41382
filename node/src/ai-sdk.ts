/**
 * The Vercel AI SDK (`ai`): a language model middleware and a tool wrapper.
 *
 * ```ts
 * import { generateText, stepCountIs, wrapLanguageModel } from 'ai';
 * import { auditMiddleware, auditTools } from 'agent-audit/ai-sdk';
 * const model = wrapLanguageModel({ model: openai('gpt-4o'), middleware: auditMiddleware() });
 * await audit.trace('support', () => generateText({ model, tools: auditTools(tools), stopWhen: stepCountIs(5), prompt }));
 * ```
 *
 * - every model call (`generateText`, `streamText`, `generateObject` …,
 *   one per step) is an `llm_call`: model id, provider, parameters, token
 *   usage, finish reason, the tool calls the model asked for, the prompt
 *   and the completion. A streamed call is recorded when its stream ends
 *   (`cancelled` when the reader gives up, `error` on an error part);
 * - `auditTools(tools)` wraps each tool's `execute`: one `tool_call` per
 *   execution with the arguments, the result or error, status and
 *   duration, exactly as `audit.tool()` records a function.
 *
 * Only types are imported from `ai`: the package is the user's.
 * @module
 */
import type { LanguageModelMiddleware, ToolExecutionOptions, ToolSet } from 'ai';
import { currentFrame } from './context.js';
import { llmCall, tool, type LlmCallOptions, type LlmCallRecord } from './index.js';
import { abortError, startLlmCall } from './deferred.js';

/** Options of {@link auditMiddleware}. */
export interface AuditMiddlewareOptions {
  /** Record the prompt sent to the model (default true; it is redacted like any payload). */
  capturePrompt?: boolean;
  /** Record the completion (default true). */
  captureCompletion?: boolean;
  /** Overrides the provider reported by the model (`openai.chat` …). */
  provider?: string;
  /** System prompt version, recorded as `system_prompt_version`. */
  systemPromptVersion?: string;
}

type Middleware = LanguageModelMiddleware;
type WrapGenerate = NonNullable<Middleware['wrapGenerate']>;
type WrapStream = NonNullable<Middleware['wrapStream']>;
type CallParams = Parameters<WrapGenerate>[0]['params'];
type Model = Parameters<WrapGenerate>[0]['model'];
type GenerateResult = Awaited<ReturnType<WrapGenerate>>;
type StreamResult = Awaited<ReturnType<WrapStream>>;
type StreamPart = StreamResult['stream'] extends ReadableStream<infer P> ? P : never;

/** Token counts in the V3 shape (`{ total, … }`) or the V2 one (a number). */
function tokens(v: unknown): number | undefined {
  const n = typeof v === 'object' && v !== null ? (v as { total?: unknown }).total : v;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : undefined;
}

/** The finish reason in the V3 shape (`{ unified, raw }`) or the V2 one (a string). */
function finishReasonOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  const u = (v as { unified?: unknown } | null)?.unified;
  return typeof u === 'string' ? u : undefined;
}

const PARAMS: Array<[keyof CallParams, string]> = [
  ['temperature', 'temperature'],
  ['maxOutputTokens', 'max_tokens'],
  ['topP', 'top_p'],
  ['topK', 'top_k'],
  ['presencePenalty', 'presence_penalty'],
  ['frequencyPenalty', 'frequency_penalty'],
  ['seed', 'seed'],
  ['stopSequences', 'stop_sequences'],
];

function callOptions(model: Model, params: CallParams, o: AuditMiddlewareOptions): LlmCallOptions {
  const p: Record<string, unknown> = {};
  for (const [k, name] of PARAMS) if (params[k] !== undefined) p[name] = params[k];
  if (params.toolChoice) p.tool_choice = params.toolChoice.type === 'tool' ? params.toolChoice.toolName : params.toolChoice.type;
  if (params.tools?.length) p.tools = params.tools.map((t) => t.name);
  if (params.responseFormat) p.response_format = params.responseFormat.type;
  return {
    model: model.modelId || 'unknown',
    provider: o.provider ?? model.provider,
    params: Object.keys(p).length ? p : undefined,
    systemPromptVersion: o.systemPromptVersion,
    messages: o.capturePrompt === false ? undefined : params.prompt,
  };
}

type Content = GenerateResult['content'][number];
type ToolCallPart = Extract<Content, { type: 'tool-call' }>;

function parseInput(input: string): unknown {
  try {
    return JSON.parse(input);
  } catch {
    return input;
  }
}

function generateRecord(r: GenerateResult, o: AuditMiddlewareOptions): LlmCallRecord {
  const calls = r.content.filter((c): c is ToolCallPart => c.type === 'tool-call');
  const reasoning = r.content.filter((c): c is Extract<Content, { type: 'reasoning' }> => c.type === 'reasoning').map((c) => c.text).join('');
  return {
    inputTokens: tokens(r.usage.inputTokens),
    outputTokens: tokens(r.usage.outputTokens),
    finishReason: finishReasonOf(r.finishReason),
    toolCallsRequested: calls.length ? calls.map((c) => c.toolName) : undefined,
    modelVersion: r.response?.modelId,
    completion: o.captureCompletion === false ? undefined : r.content
      .filter((c) => c.type !== 'reasoning')
      .map((c) => (c.type === 'tool-call' ? { ...c, input: parseInput(c.input) } : c)),
    reasoning: o.captureCompletion === false || !reasoning ? undefined : reasoning,
  };
}

/** Follows a streamed call's parts and builds its record when it ends. */
class StreamRecorder {
  private text = '';
  private reasoning = '';
  private calls: ToolCallPart[] = [];
  private inputTokens: number | undefined;
  private outputTokens: number | undefined;
  private finishReason: string | undefined;
  private modelVersion: string | undefined;
  error: unknown;
  failed = false;

  constructor(private readonly o: AuditMiddlewareOptions) {}

  see(part: StreamPart): void {
    switch (part.type) {
      case 'text-delta':
        this.text += part.delta;
        break;
      case 'reasoning-delta':
        this.reasoning += part.delta;
        break;
      case 'tool-call':
        this.calls.push(part);
        break;
      case 'response-metadata':
        if (part.modelId) this.modelVersion = part.modelId;
        break;
      case 'finish':
        this.inputTokens = tokens(part.usage.inputTokens);
        this.outputTokens = tokens(part.usage.outputTokens);
        this.finishReason = finishReasonOf(part.finishReason);
        break;
      case 'error':
        if (!this.failed) {
          this.failed = true;
          this.error = part.error;
        }
        break;
      default:
        break;
    }
  }

  record(): LlmCallRecord {
    const completion: unknown[] = [];
    if (this.text) completion.push({ type: 'text', text: this.text });
    for (const c of this.calls) completion.push({ type: 'tool-call', toolCallId: c.toolCallId, toolName: c.toolName, input: parseInput(c.input) });
    const capture = this.o.captureCompletion !== false;
    return {
      inputTokens: this.inputTokens,
      outputTokens: this.outputTokens,
      finishReason: this.finishReason,
      toolCallsRequested: this.calls.length ? this.calls.map((c) => c.toolName) : undefined,
      modelVersion: this.modelVersion,
      completion: capture ? completion : undefined,
      reasoning: capture && this.reasoning ? this.reasoning : undefined,
    };
  }
}

/**
 * A middleware for `wrapLanguageModel` recording every call of the model
 * as an `llm_call`, under the current `audit.trace` (or span) if any.
 */
export function auditMiddleware(options: AuditMiddlewareOptions = {}): LanguageModelMiddleware {
  const o = { ...options };
  return {
    specificationVersion: 'v3',
    wrapGenerate: ({ doGenerate, params, model }) =>
      llmCall(callOptions(model, params, o), async (call) => {
        const r = await doGenerate();
        call.record(generateRecord(r, o));
        return r;
      }),
    wrapStream: async ({ doStream, params, model }) => {
      const span = startLlmCall(currentFrame(), callOptions(model, params, o));
      let r: StreamResult;
      try {
        r = await doStream();
      } catch (e) {
        span.fail(e);
        throw e;
      }
      const rec = new StreamRecorder(o);
      const reader = r.stream.getReader();
      const end = (error?: unknown) => {
        if (error !== undefined) span.fail(error, rec.record());
        else if (rec.failed) span.fail(rec.error ?? new Error('stream error'), rec.record());
        else span.end(rec.record());
      };
      const stream = new ReadableStream<StreamPart>({
        async pull(controller) {
          let next: Awaited<ReturnType<typeof reader.read>>;
          try {
            next = await reader.read();
          } catch (e) {
            end(e);
            controller.error(e);
            return;
          }
          if (next.done) {
            end();
            controller.close();
            return;
          }
          rec.see(next.value);
          controller.enqueue(next.value);
        },
        async cancel(reason) {
          end(abortError('the stream was cancelled before it ended'));
          await reader.cancel(reason);
        },
      });
      return { ...r, stream };
    },
  };
}

/** Options of {@link auditTools}. */
export interface AuditToolsOptions {
  /** Tool versions by tool name, recorded as `tool.version`. */
  versions?: Record<string, string>;
  /** Record the results (default true; errors are always recorded). */
  captureResult?: boolean;
}

/**
 * Wraps the `execute` of every tool of a tool set: each execution is a
 * `tool_call` with the arguments the model gave, the result or the error,
 * status and duration, nested in the current trace; what the tool itself
 * logs nests under its call. Results that are async iterables (the AI
 * SDK's preliminary results) are followed to their end. Tools without
 * `execute` are passed through. Returns a new tool set of the same type.
 */
export function auditTools<T extends ToolSet>(tools: T, options: AuditToolsOptions = {}): T {
  const out: Record<string, unknown> = {};
  for (const [name, t] of Object.entries(tools)) {
    const execute = (t as { execute?: unknown }).execute;
    if (typeof execute !== 'function') {
      out[name] = t;
      continue;
    }
    const toolOptions = { version: options.versions?.[name], captureResult: options.captureResult };
    out[name] = {
      ...t,
      execute(input: unknown, execOptions: ToolExecutionOptions): unknown {
        // Only the input is the call's arguments (the options hold the whole
        // conversation). A bound function has no readable parameter list, so
        // `tool()` records its one object argument as is.
        const run = (i: unknown): unknown => execute.call(t, i, execOptions);
        const wrapped = tool(name, run.bind(undefined), {
          ...toolOptions,
          metadata: execOptions?.toolCallId ? { tool_call_id: execOptions.toolCallId } : undefined,
        });
        return wrapped(input);
      },
    };
  }
  return out as T;
}
