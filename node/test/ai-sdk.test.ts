// agent-audit/ai-sdk against the real `ai` package: its own mock language
// model (ai/test) behind wrapLanguageModel + auditMiddleware, tools wrapped
// by auditTools, in a multi-step generateText loop and in streamText; every
// test verifies its log and checks the parent links, then asserts on the
// records.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as audit from 'agent-audit';
import { auditMiddleware, auditTools } from 'agent-audit/ai-sdk';
import { generateText, stepCountIs, streamText, tool, wrapLanguageModel } from 'ai';
import { MockLanguageModelV3, convertArrayToReadableStream } from 'ai/test';
import { z } from 'zod';
import { closeAndCheck, tempLogDir, type Rec } from './helpers';

const byKind = (recs: Rec[], kind: string) => recs.filter((r) => r.kind === kind);

type GenerateResult = Awaited<ReturnType<MockLanguageModelV3['doGenerate']>>;
type StreamPart = Awaited<ReturnType<MockLanguageModelV3['doStream']>>['stream'] extends ReadableStream<infer P> ? P : never;

function usage(input: number, output: number) {
  return {
    inputTokens: { total: input, noCache: input, cacheRead: 0, cacheWrite: 0 },
    outputTokens: { total: output, text: output, reasoning: 0 },
  };
}

function toolCall(id: string, name: string, input: unknown) {
  return { type: 'tool-call' as const, toolCallId: id, toolName: name, input: JSON.stringify(input) };
}

function step(content: GenerateResult['content'], finish: 'tool-calls' | 'stop', u: ReturnType<typeof usage>): GenerateResult {
  return {
    content,
    finishReason: { unified: finish, raw: finish === 'stop' ? 'stop' : 'tool_calls' },
    usage: u,
    warnings: [],
    response: { id: `resp-${content.length}-${finish}`, modelId: 'mock-gpt-2026-01', timestamp: new Date(0) },
  };
}

/** Three tools: one nests its own audited helper, one converts, one throws. */
function travelTools(executed: string[]) {
  const forecast = audit.tool('weather.forecast_api', async (city: string) => ({ city, tempC: 21, sky: 'clear' }));
  return {
    get_weather: tool({
      description: 'Weather for a city',
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        executed.push(`get_weather:${city}`);
        return forecast(city);
      },
    }),
    convert_currency: tool({
      description: 'Converts an amount',
      inputSchema: z.object({ amount: z.number(), from: z.string(), to: z.string() }),
      execute: async ({ amount, from, to }) => {
        executed.push(`convert_currency:${amount}${from}->${to}`);
        return { amount: Math.round(amount * 1.08 * 100) / 100, currency: to };
      },
    }),
    book_flight: tool({
      description: 'Books a flight',
      inputSchema: z.object({ to: z.string(), date: z.string() }),
      execute: async ({ to, date }): Promise<{ booking: string }> => {
        executed.push(`book_flight:${to}:${date}`);
        throw new TypeError(`no seats to ${to} on ${date}`);
      },
    }),
  };
}

test('generateText, multi-step with tools: one llm_call per step, one tool_call per execution (one fails), nested helper', async () => {
  const dir = tempLogDir('ai-generate');
  audit.init({ dir, tenantId: 'acme', agentId: 'travel-v1', capture: 'raw' });
  const mock = new MockLanguageModelV3({
    provider: 'mock-provider',
    modelId: 'mock-gpt',
    doGenerate: [
      step([{ type: 'text', text: 'Checking the weather and the price.' }, toolCall('c1', 'get_weather', { city: 'Lisbon' }), toolCall('c2', 'convert_currency', { amount: 250, from: 'EUR', to: 'USD' })], 'tool-calls', usage(100, 40)),
      step([toolCall('c3', 'book_flight', { to: 'Lisbon', date: '2026-05-01' })], 'tool-calls', usage(180, 20)),
      step([{ type: 'text', text: 'Lisbon is sunny at 21°C; 250 EUR is 270 USD. The flight could not be booked.' }], 'stop', usage(260, 30)),
    ],
  });
  const model = wrapLanguageModel({ model: mock, middleware: auditMiddleware({ systemPromptVersion: 'travel-2026-04' }) });
  const executed: string[] = [];
  let traceId = '';
  const result = await audit.trace('plan_trip', { userId: 'u_4' }, async (t) => {
    traceId = t.traceId;
    return generateText({
      model,
      tools: auditTools(travelTools(executed), { versions: { book_flight: '3.1.0' } }),
      stopWhen: stepCountIs(5),
      temperature: 0.3,
      maxOutputTokens: 400,
      system: 'You are a travel agent.',
      prompt: 'Plan a trip to Lisbon on 2026-05-01 with a 250 EUR budget.',
    });
  });
  // The loop really ran: three model calls, three tool executions.
  assert.equal(result.steps.length, 3);
  assert.equal(mock.doGenerateCalls.length, 3);
  assert.deepEqual(executed, ['get_weather:Lisbon', 'convert_currency:250EUR->USD', 'book_flight:Lisbon:2026-05-01']);
  assert.match(result.text, /could not be booked/);
  const failed = result.steps[1]!.content.find((c) => c.type === 'tool-error');
  assert.ok(failed, 'the AI SDK saw the tool error');

  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  for (const r of recs) {
    assert.equal(r.trace_id, traceId);
    assert.equal(r.principal.user_id, 'u_4');
  }
  const llm = byKind(recs, 'llm_call');
  assert.equal(llm.length, 3);
  for (const r of llm) {
    assert.equal(r.parent_span_id, start!.span_id);
    assert.deepEqual(r.model, { name: 'mock-gpt', provider: 'mock-provider', version: 'mock-gpt-2026-01' });
    assert.equal(r.result_status, 'ok');
    assert.equal(r.system_prompt_version, 'travel-2026-04');
    assert.deepEqual(r.params, { temperature: 0.3, max_tokens: 400, tool_choice: 'auto', tools: ['get_weather', 'convert_currency', 'book_flight'] });
  }
  assert.deepEqual(llm.map((r) => [r.input_tokens, r.output_tokens]), [[100, 40], [180, 20], [260, 30]]);
  assert.deepEqual(llm.map((r) => r.finish_reason), ['tool-calls', 'tool-calls', 'stop']);
  assert.deepEqual(llm.map((r) => r.tool_calls_requested), [['get_weather', 'convert_currency'], ['book_flight'], undefined]);
  // What the model was sent: the system prompt and the question; later the tool results, the error among them.
  assert.deepEqual(llm[0]!.payload.data.messages.map((m: Rec) => m.role), ['system', 'user']);
  assert.equal(llm[0]!.payload.data.messages[0].content, 'You are a travel agent.');
  const third = llm[2]!.payload.data.messages;
  assert.deepEqual(third.map((m: Rec) => m.role), ['system', 'user', 'assistant', 'tool', 'assistant', 'tool']);
  assert.match(JSON.stringify(third[5]), /no seats to Lisbon/);
  assert.deepEqual(llm[0]!.payload.data.completion[1], { type: 'tool-call', toolCallId: 'c1', toolName: 'get_weather', input: { city: 'Lisbon' } });

  const tools = byKind(recs, 'tool_call');
  const by = (n: string) => tools.filter((r) => r.tool.name === n);
  assert.equal(tools.length, 4);
  for (const n of ['get_weather', 'convert_currency', 'book_flight']) {
    assert.equal(by(n).length, 1, n);
    assert.equal(by(n)[0]!.parent_span_id, start!.span_id);
  }
  const weather = by('get_weather')[0]!;
  assert.deepEqual(weather.payload.data.args, { city: 'Lisbon' });
  assert.deepEqual(weather.payload.data.result, { city: 'Lisbon', tempC: 21, sky: 'clear' });
  assert.equal(weather.metadata.tool_call_id, 'c1');
  // The audited helper the tool called nests under the tool's call.
  const helper = by('weather.forecast_api')[0]!;
  assert.equal(helper.parent_span_id, weather.span_id);
  assert.deepEqual(helper.payload.data.args, { city: 'Lisbon' });
  assert.deepEqual(by('convert_currency')[0]!.payload.data.result, { amount: 270, currency: 'USD' });
  const booking = by('book_flight')[0]!;
  assert.equal(booking.tool.version, '3.1.0');
  assert.equal(booking.result_status, 'error');
  assert.equal(booking.error_type, 'TypeError');
  assert.deepEqual(booking.payload.data.args, { to: 'Lisbon', date: '2026-05-01' });
  assert.equal(booking.payload.data.error.message, 'no seats to Lisbon on 2026-05-01');
  for (const r of tools) assert.ok(typeof r.duration_ms === 'number' && r.duration_ms >= 0);
  // Model call, its tools (run concurrently, each written when it ends), next call: the log reads in the loop's order.
  const order = recs.filter((r) => r.kind === 'llm_call' || (r.kind === 'tool_call' && r.parent_span_id === start!.span_id))
    .map((r) => (r.kind === 'llm_call' ? 'llm' : r.tool.name));
  assert.deepEqual([order[0], ...order.slice(1, 3).sort(), ...order.slice(3)], ['llm', 'convert_currency', 'get_weather', 'llm', 'book_flight', 'llm']);
  const doc = await audit.showTrace(dir, traceId) as Rec;
  assert.equal(doc.steps.length, recs.length - 2);
});

function streamStep(parts: StreamPart[]) {
  return { stream: convertArrayToReadableStream(parts) };
}

test('streamText, multi-step with tools: the llm_call is written when its stream ends, with the streamed usage and tool calls', async () => {
  const dir = tempLogDir('ai-stream');
  audit.init({ dir, capture: 'raw' });
  const mock = new MockLanguageModelV3({
    provider: 'mock-provider',
    modelId: 'mock-gpt-stream',
    doStream: [
      streamStep([
        { type: 'stream-start', warnings: [] },
        { type: 'response-metadata', id: 'r1', modelId: 'mock-gpt-stream-0501', timestamp: new Date(0) },
        { type: 'reasoning-start', id: 'r' },
        { type: 'reasoning-delta', id: 'r', delta: 'Need the weather first.' },
        { type: 'reasoning-end', id: 'r' },
        toolCall('s1', 'get_weather', { city: 'Porto' }),
        { type: 'finish', finishReason: { unified: 'tool-calls', raw: 'tool_calls' }, usage: usage(90, 12) },
      ]),
      streamStep([
        { type: 'stream-start', warnings: [] },
        toolCall('s2', 'book_flight', { to: 'Porto', date: '2026-06-01' }),
        toolCall('s3', 'convert_currency', { amount: 99, from: 'EUR', to: 'GBP' }),
        { type: 'finish', finishReason: { unified: 'tool-calls', raw: 'tool_calls' }, usage: usage(150, 25) },
      ]),
      streamStep([
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id: 't' },
        { type: 'text-delta', id: 't', delta: 'Porto is clear, ' },
        { type: 'text-delta', id: 't', delta: 'but no flight is available.' },
        { type: 'text-end', id: 't' },
        { type: 'finish', finishReason: { unified: 'stop', raw: 'stop' }, usage: usage(210, 11) },
      ]),
    ],
  });
  const executed: string[] = [];
  const model = wrapLanguageModel({ model: mock, middleware: auditMiddleware() });
  let traceId = '';
  let streamed = '';
  await audit.trace('plan_trip_streamed', async (t) => {
    traceId = t.traceId;
    const result = streamText({ model, tools: auditTools(travelTools(executed)), stopWhen: stepCountIs(4), prompt: 'Fly me to Porto on 2026-06-01.' });
    for await (const delta of result.textStream) streamed += delta;
    assert.equal((await result.steps).length, 3);
  });
  assert.equal(streamed, 'Porto is clear, but no flight is available.');
  assert.equal(mock.doStreamCalls.length, 3);
  assert.equal(executed.length, 3);

  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  for (const r of recs) assert.equal(r.trace_id, traceId);
  const llm = byKind(recs, 'llm_call');
  assert.equal(llm.length, 3);
  for (const r of llm) {
    assert.equal(r.parent_span_id, start!.span_id);
    assert.equal(r.result_status, 'ok');
    assert.equal(r.model.name, 'mock-gpt-stream');
  }
  assert.equal(llm[0]!.model.version, 'mock-gpt-stream-0501');
  assert.deepEqual(llm.map((r) => [r.input_tokens, r.output_tokens]), [[90, 12], [150, 25], [210, 11]]);
  assert.deepEqual(llm.map((r) => r.finish_reason), ['tool-calls', 'tool-calls', 'stop']);
  assert.deepEqual(llm.map((r) => r.tool_calls_requested), [['get_weather'], ['book_flight', 'convert_currency'], undefined]);
  assert.equal(llm[0]!.payload.data.reasoning, 'Need the weather first.');
  assert.deepEqual(llm[2]!.payload.data.completion, [{ type: 'text', text: 'Porto is clear, but no flight is available.' }]);
  // The stream took time to read: the call lasted until its end.
  for (const r of llm) assert.ok(r.duration_ms >= 0);
  const tools = byKind(recs, 'tool_call').filter((r) => r.parent_span_id === start!.span_id);
  assert.deepEqual(tools.map((r) => [r.tool.name, r.result_status]).sort(), [['book_flight', 'error'], ['convert_currency', 'ok'], ['get_weather', 'ok']]);
  assert.equal(tools.find((r) => r.tool.name === 'book_flight')!.payload.data.error.message, 'no seats to Porto on 2026-06-01');
  // Each step's llm_call precedes the tools it asked for.
  const seq = (r: Rec) => r.seq as number;
  const toolSeq = (n: string) => seq(tools.find((r) => r.tool.name === n)!);
  assert.ok(seq(llm[0]!) < toolSeq('get_weather') && toolSeq('get_weather') < seq(llm[1]!));
  assert.ok(seq(llm[1]!) < toolSeq('book_flight') && toolSeq('convert_currency') < seq(llm[2]!));
});

test('a failing model call, a stream error part and a cancelled stream have their statuses', async () => {
  const dir = tempLogDir('ai-errors');
  audit.init({ dir, capture: 'raw' });
  const failing = wrapLanguageModel({
    model: new MockLanguageModelV3({ modelId: 'down', doGenerate: async () => { throw new Error('503 overloaded'); } }),
    middleware: auditMiddleware({ provider: 'acme-llm' }),
  });
  const erroring = wrapLanguageModel({
    model: new MockLanguageModelV3({
      modelId: 'flaky-stream',
      doStream: streamStep([
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id: 't' },
        { type: 'text-delta', id: 't', delta: 'partial' },
        { type: 'error', error: new Error('connection reset') },
      ]),
    }),
    middleware: auditMiddleware(),
  });
  const slow = wrapLanguageModel({
    model: new MockLanguageModelV3({
      modelId: 'slow-stream',
      doStream: streamStep([
        { type: 'stream-start', warnings: [] },
        { type: 'text-start', id: 't' },
        { type: 'text-delta', id: 't', delta: 'one ' },
        { type: 'text-delta', id: 't', delta: 'two ' },
        { type: 'text-end', id: 't' },
        { type: 'finish', finishReason: { unified: 'stop', raw: 'stop' }, usage: usage(5, 2) },
      ]),
    }),
    middleware: auditMiddleware(),
  });
  await audit.trace('failures', async () => {
    await assert.rejects(generateText({ model: failing, prompt: 'hi', maxRetries: 0 }), /503 overloaded/);
    const errors: unknown[] = [];
    const r = streamText({ model: erroring, prompt: 'hi', onError: ({ error }) => { errors.push(error); } });
    await r.consumeStream();
    assert.equal(errors.length, 1);
    // The model's stream read in part, then dropped.
    const { stream } = await slow.doStream({ prompt: [{ role: 'user', content: [{ type: 'text', text: 'count' }] }] });
    const reader = stream.getReader();
    await reader.read();
    await reader.read();
    await reader.cancel('user went away');
  });
  const recs = await closeAndCheck(dir);
  const llm = byKind(recs, 'llm_call');
  const of = (name: string) => llm.find((r) => r.model.name === name)!;
  assert.equal(llm.length, 3);
  assert.equal(of('down').result_status, 'error');
  assert.equal(of('down').model.provider, 'acme-llm');
  assert.equal(of('down').payload.data.error.message, '503 overloaded');
  assert.equal(of('flaky-stream').result_status, 'error');
  assert.equal(of('flaky-stream').payload.data.error.message, 'connection reset');
  assert.deepEqual(of('flaky-stream').payload.data.completion, [{ type: 'text', text: 'partial' }]);
  assert.equal(of('slow-stream').result_status, 'cancelled');
  assert.equal(of('slow-stream').error_type, 'AbortError');
  assert.equal(of('slow-stream').input_tokens, undefined);
});

test('auditTools passes tools without execute through and follows preliminary results; ESM shares the module', async () => {
  const dir = tempLogDir('ai-tools');
  audit.init({ dir, capture: 'raw' });
  const progress = tool({
    description: 'Searches with progress updates',
    inputSchema: z.object({ q: z.string() }),
    async *execute({ q }) {
      yield { status: 'searching', q };
      yield { status: 'done', hits: 3 };
    },
  });
  const clientSide = tool({ description: 'Runs in the browser', inputSchema: z.object({ x: z.number() }) });
  const wrapped = auditTools({ progress, clientSide });
  assert.equal(wrapped.clientSide, clientSide);
  assert.equal(wrapped.progress.description, 'Searches with progress updates');
  const model = wrapLanguageModel({
    model: new MockLanguageModelV3({
      doGenerate: [
        step([toolCall('p1', 'progress', { q: 'hotels' })], 'tool-calls', usage(10, 5)),
        step([{ type: 'text', text: 'Found 3 hotels.' }], 'stop', usage(20, 5)),
      ],
    }),
    middleware: auditMiddleware(),
  });
  const r = await audit.trace('search', () => generateText({ model, tools: wrapped, stopWhen: stepCountIs(3), prompt: 'hotels?' }));
  assert.equal(r.text, 'Found 3 hotels.');
  const recs = await closeAndCheck(dir);
  const [t] = byKind(recs, 'tool_call');
  assert.equal(t!.tool.name, 'progress');
  assert.equal(t!.result_status, 'ok');
  assert.deepEqual(t!.payload.data.result, { $stream: 'AsyncIterable', count: 2, items: [{ status: 'searching', q: 'hotels' }, { status: 'done', hits: 3 }] });
  assert.equal(byKind(recs, 'llm_call').length, 2);
  const esm = await import('agent-audit/ai-sdk');
  assert.equal(esm.auditMiddleware, auditMiddleware);
  assert.equal(esm.auditTools, auditTools);
});

test('a policy stops AI SDK tools before they run: block, and a denied approval', async () => {
  const dir = tempLogDir('ai-policy');
  audit.init({
    dir,
    capture: 'raw',
    policyToml: `
version = "travel-test-1"

[[rule]]
id = "no_bookings"
description = "Bookings are made by people"
tools = ["book_flight"]
action = "block"

[[rule]]
id = "fx_needs_approval"
description = "Currency conversions need a reviewer"
tools = ["convert_currency"]
action = "require_approval"
`,
    approver: async () => ({ approved: false, reviewer: 'dave', reason: 'not today' }),
  });
  const mock = new MockLanguageModelV3({
    doGenerate: [
      step([toolCall('c1', 'get_weather', { city: 'Lisbon' }), toolCall('c2', 'convert_currency', { amount: 250, from: 'EUR', to: 'USD' })], 'tool-calls', usage(100, 40)),
      step([toolCall('c3', 'book_flight', { to: 'Lisbon', date: '2026-05-01' })], 'tool-calls', usage(180, 20)),
      step([{ type: 'text', text: 'I could neither convert nor book.' }], 'stop', usage(260, 30)),
    ],
  });
  const executed: string[] = [];
  const result = await audit.trace('plan_trip', () => generateText({
    model: wrapLanguageModel({ model: mock, middleware: auditMiddleware() }),
    tools: auditTools(travelTools(executed)),
    stopWhen: stepCountIs(5),
    prompt: 'Plan a trip to Lisbon.',
  }));
  assert.deepEqual(executed, ['get_weather:Lisbon']);
  const errors = result.steps.flatMap((s) => s.content).filter((c) => c.type === 'tool-error');
  assert.deepEqual(errors.map((c) => c.toolName).sort(), ['book_flight', 'convert_currency']);
  assert.equal(result.text, 'I could neither convert nor book.');

  const recs = await closeAndCheck(dir);
  const tools = byKind(recs, 'tool_call').filter((r) => r.tool.name !== 'weather.forecast_api');
  assert.deepEqual(tools.map((r) => [r.tool.name, r.result_status]).sort(), [['book_flight', 'blocked'], ['convert_currency', 'blocked'], ['get_weather', 'ok']]);
  const fx = tools.find((r) => r.tool.name === 'convert_currency')!;
  const review = byKind(recs, 'human_review').find((r) => r.subject_span_id === fx.span_id)!;
  assert.equal(review.decision, 'denied');
  assert.equal(review.reviewer, 'dave');
  const booking = tools.find((r) => r.tool.name === 'book_flight')!;
  assert.equal(byKind(recs, 'policy').find((r) => r.rule_id === 'no_bookings')!.subject_span_id, booking.span_id);
});
