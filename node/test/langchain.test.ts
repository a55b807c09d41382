// agent-audit/langchain against the real LangChain.js and LangGraph: a
// ReAct agent from @langchain/langgraph/prebuilt, driven by LangChain's
// fake chat model (scripted to ask for tools), runs three tools (one reads
// a retriever, one throws) over several steps; every test verifies its
// log and checks the parent links, then asserts on the records.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as audit from 'agent-audit';
import { AuditCallbackHandler } from 'agent-audit/langchain';
import { CallbackManager, type CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import { Document } from '@langchain/core/documents';
import { AIMessage, AIMessageChunk, HumanMessage, type BaseMessage } from '@langchain/core/messages';
import { ChatGenerationChunk, type ChatResult } from '@langchain/core/outputs';
import { tool } from '@langchain/core/tools';
import { FakeListChatModel, FakeRetriever } from '@langchain/core/utils/testing';
import { createReactAgent } from '@langchain/langgraph/prebuilt';
import { z } from 'zod';
import { closeAndCheck, tempLogDir, type Rec } from './helpers';

const byKind = (recs: Rec[], kind: string) => recs.filter((r) => r.kind === kind);

/** One scripted model answer: a message, and optionally usage reported the older way (`llmOutput.tokenUsage`). */
type Turn = AIMessage | { message: AIMessage; tokenUsage: { promptTokens: number; completionTokens: number } } | Error;

/**
 * LangChain's FakeListChatModel, scripted with whole AI messages (tool
 * calls, usage) instead of strings, with tools bound the way provider
 * models bind them and the `ls_*` tracing parameters providers report.
 */
class ScriptedChatModel extends FakeListChatModel {
  readonly script: Turn[];
  turn = 0;
  streamed = 0;
  boundTools: string[] = [];

  constructor(script: Turn[]) {
    super({ responses: script.map(() => '') });
    this.script = script;
  }

  private next(): { message: AIMessage; llmOutput: Record<string, unknown> } {
    const t = this.script[this.turn++];
    if (t === undefined) throw new Error('the script has no more turns');
    if (t instanceof Error) throw t;
    if (t instanceof AIMessage) return { message: t, llmOutput: {} };
    return { message: t.message, llmOutput: { tokenUsage: t.tokenUsage } };
  }

  override async _generate(_messages: BaseMessage[], _options?: this['ParsedCallOptions'], _runManager?: CallbackManagerForLLMRun): Promise<ChatResult> {
    const { message, llmOutput } = this.next();
    return { generations: [{ message, text: typeof message.content === 'string' ? message.content : '' }], llmOutput };
  }

  override async *_streamResponseChunks(_messages: BaseMessage[], _options: this['ParsedCallOptions'], runManager?: CallbackManagerForLLMRun): AsyncGenerator<ChatGenerationChunk> {
    this.streamed++;
    const { message } = this.next();
    const text = typeof message.content === 'string' ? message.content : '';
    // The text in two chunks, the tool calls and usage with the last one.
    const half = Math.ceil(text.length / 2);
    const parts = [text.slice(0, half), text.slice(half)];
    for (let i = 0; i < parts.length; i++) {
      const last = i === parts.length - 1;
      const chunk = new ChatGenerationChunk({
        text: parts[i]!,
        message: new AIMessageChunk({
          content: parts[i]!,
          tool_call_chunks: last ? (message.tool_calls ?? []).map((c, index) => ({ type: 'tool_call_chunk' as const, id: c.id, name: c.name, args: JSON.stringify(c.args), index })) : [],
          usage_metadata: last ? message.usage_metadata : undefined,
          response_metadata: last ? message.response_metadata : {},
        }),
      });
      yield chunk;
      await runManager?.handleLLMNewToken(parts[i]!, undefined, undefined, undefined, undefined, { chunk });
    }
  }

  override invocationParams(options?: this['ParsedCallOptions']) {
    return { model: 'scripted-gpt-1', temperature: 0.2, max_tokens: 512, tools: (options as { tools?: unknown[] } | undefined)?.tools };
  }

  override getLsParams(options: this['ParsedCallOptions']) {
    return { ...super.getLsParams(options), ls_provider: 'scripted', ls_model_name: 'scripted-gpt-1', ls_temperature: 0.2 };
  }

  override bindTools(tools: Parameters<FakeListChatModel['bindTools']>[0]): ReturnType<FakeListChatModel['bindTools']> {
    this.boundTools = tools.map((t) => t.name);
    const defs = tools.map((t) => ({ type: 'function', function: { name: t.name, description: t.description } }));
    return this.withConfig({ tools: defs } as Partial<this['ParsedCallOptions']>) as ReturnType<FakeListChatModel['bindTools']>;
  }
}

const POLICY = new Document({ pageContent: 'Refunds above 200 EUR need a manager.', metadata: { id: 'kb-12', score: 0.91 } });
const SHIPPING = new Document({ pageContent: 'Orders ship within 2 days.', metadata: { id: 'kb-40', score: 0.42 } });

function supportTools(calls: string[]) {
  const retriever = new FakeRetriever({ output: [POLICY, SHIPPING] });
  const lookupOrder = tool(async ({ orderId }: { orderId: string }) => {
    calls.push(`lookup_order:${orderId}`);
    return JSON.stringify({ orderId, status: 'delivered', total: 540 });
  }, { name: 'lookup_order', description: 'Looks an order up', schema: z.object({ orderId: z.string() }) });
  const searchKb = tool(async ({ query }: { query: string }, config) => {
    calls.push(`search_kb:${query}`);
    // The retriever runs as a child of the tool run (the config carries the callbacks).
    const docs = await retriever.invoke(query, config);
    return docs.map((d) => d.pageContent).join('\n');
  }, { name: 'search_kb', description: 'Searches the knowledge base', schema: z.object({ query: z.string() }) });
  const issueRefund = tool(async ({ orderId, amount }: { orderId: string; amount: number }) => {
    calls.push(`issue_refund:${orderId}:${amount}`);
    throw new RangeError(`refund of ${amount} EUR exceeds the agent's limit`);
  }, { name: 'issue_refund', description: 'Refunds an order', schema: z.object({ orderId: z.string(), amount: z.number() }) });
  return [lookupOrder, searchKb, issueRefund];
}

function supportScript(): Turn[] {
  return [
    new AIMessage({
      content: 'Let me check the order and the refund policy.',
      tool_calls: [
        { id: 'call_1', name: 'lookup_order', args: { orderId: 'A-17' }, type: 'tool_call' },
        { id: 'call_2', name: 'search_kb', args: { query: 'refund policy' }, type: 'tool_call' },
      ],
      usage_metadata: { input_tokens: 120, output_tokens: 30, total_tokens: 150 },
      response_metadata: { finish_reason: 'tool_calls', model_name: 'scripted-gpt-1-2026-01' },
    }),
    {
      message: new AIMessage({
        content: '',
        tool_calls: [{ id: 'call_3', name: 'issue_refund', args: { orderId: 'A-17', amount: 540 }, type: 'tool_call' }],
        response_metadata: { finish_reason: 'tool_calls' },
      }),
      tokenUsage: { promptTokens: 230, completionTokens: 18 },
    },
    new AIMessage({
      content: 'I could not refund order A-17 myself; a manager will follow up.',
      usage_metadata: { input_tokens: 300, output_tokens: 16, total_tokens: 316 },
      response_metadata: { finish_reason: 'stop' },
    }),
  ];
}

/** The assertions shared by the invoke and stream runs of the support agent. */
function checkSupportRun(recs: Rec[], root: Rec) {
  // The log reads in the agent's order: model, its choice, the tools it
  // chose (run in parallel, the retrieval inside one), the next model call …
  const kinds = recs.filter((r) => r.kind !== 'trace_start' && r.kind !== 'trace_end').map((r) => r.kind);
  assert.deepEqual([...kinds.slice(0, 2), ...kinds.slice(2, 5).sort(), ...kinds.slice(5)],
    ['llm_call', 'decision', 'retrieval', 'tool_call', 'tool_call', 'llm_call', 'decision', 'tool_call', 'llm_call']);
  const llm = byKind(recs, 'llm_call');
  assert.equal(llm.length, 3);
  for (const r of llm) {
    assert.equal(r.model.name, 'scripted-gpt-1');
    assert.equal(r.model.provider, 'scripted');
    assert.equal(r.result_status, 'ok');
    assert.equal(r.parent_span_id, root.span_id);
    assert.equal(r.params.temperature, 0.2);
    assert.equal(r.params.max_tokens, 512);
    assert.deepEqual(r.params.tools, ['lookup_order', 'search_kb', 'issue_refund']);
  }
  // In the order the model was called.
  assert.deepEqual(llm.map((r) => r.tool_calls_requested), [['lookup_order', 'search_kb'], ['issue_refund'], undefined]);
  assert.deepEqual(llm.map((r) => r.finish_reason), ['tool_calls', 'tool_calls', 'stop']);
  assert.equal(llm[0]!.model.version, 'scripted-gpt-1-2026-01');
  // The first call saw the user's message; the last one the tool results, the failed refund among them.
  assert.deepEqual(llm[0]!.payload.data.messages[0].map((m: Rec) => m.role), ['human']);
  assert.match(llm[0]!.payload.data.messages[0][0].content, /refund/);
  const lastInput = llm[2]!.payload.data.messages[0];
  assert.deepEqual(lastInput.map((m: Rec) => m.role), ['human', 'ai', 'tool', 'tool', 'ai', 'tool']);
  assert.match(lastInput[5].content, /exceeds the agent's limit/);
  assert.equal(llm[2]!.payload.data.completion.content, 'I could not refund order A-17 myself; a manager will follow up.');

  const tools = byKind(recs, 'tool_call');
  assert.deepEqual(tools.map((r) => r.tool.name).sort(), ['issue_refund', 'lookup_order', 'search_kb']);
  const tool = (n: string) => tools.find((r) => r.tool.name === n)!;
  for (const r of tools) assert.equal(r.parent_span_id, root.span_id);
  assert.equal(tool('lookup_order').result_status, 'ok');
  assert.deepEqual(tool('lookup_order').payload.data.args, { orderId: 'A-17' });
  assert.equal(JSON.parse(tool('lookup_order').payload.data.result).status, 'delivered');
  assert.equal(tool('lookup_order').metadata.tool_call_id, 'call_1');
  assert.deepEqual(tool('search_kb').payload.data.args, { query: 'refund policy' });
  assert.match(tool('search_kb').payload.data.result, /need a manager/);
  const refund = tool('issue_refund');
  assert.equal(refund.result_status, 'error');
  assert.equal(refund.error_type, 'RangeError');
  assert.deepEqual(refund.payload.data.args, { orderId: 'A-17', amount: 540 });
  assert.equal(refund.payload.data.error.message, "refund of 540 EUR exceeds the agent's limit");
  assert.equal(refund.payload.data.result, undefined);
  for (const r of tools) assert.ok(typeof r.duration_ms === 'number' && r.duration_ms >= 0);

  // The retriever ran inside search_kb: its record nests under that tool call.
  const [ret] = byKind(recs, 'retrieval');
  assert.equal(byKind(recs, 'retrieval').length, 1);
  assert.equal(ret!.parent_span_id, tool('search_kb').span_id);
  assert.equal(ret!.result_status, 'ok');
  assert.equal(ret!.source, 'FakeRetriever');
  assert.deepEqual(ret!.retrieved_docs, [
    { id: 'kb-12', hash: `sha256:${createHash('sha256').update(POLICY.pageContent).digest('hex')}`, score: 0.91 },
    { id: 'kb-40', hash: `sha256:${createHash('sha256').update(SHIPPING.pageContent).digest('hex')}`, score: 0.42 },
  ]);
  assert.equal(ret!.payload.data.query, 'refund policy');

  // The agent's choices: call tools twice (then answer).
  const decisions = byKind(recs, 'decision');
  assert.deepEqual(decisions.map((d) => [d.decision, d.tools]), [
    ['call_tools', ['lookup_order', 'search_kb']],
    ['call_tools', ['issue_refund']],
  ]);
  assert.deepEqual(decisions[0]!.metadata.tool_call_ids, ['call_1', 'call_2']);
  for (const d of decisions) assert.equal(d.parent_span_id, root.span_id);
}

test('a LangGraph ReAct agent inside audit.trace: model calls, three tools (one throws), a retriever, decisions', async () => {
  const dir = tempLogDir('langchain');
  audit.init({ dir, tenantId: 'acme', agentId: 'support-v2', capture: 'raw' });
  const calls: string[] = [];
  const model = new ScriptedChatModel(supportScript());
  const agent = createReactAgent({ llm: model, tools: supportTools(calls) });
  let traceId = '';
  const out = await audit.trace('refund_request', { userId: 'u_9' }, async (t) => {
    traceId = t.traceId;
    return agent.invoke(
      { messages: [new HumanMessage('Please refund order A-17, it arrived broken.')] },
      { callbacks: [new AuditCallbackHandler()] },
    );
  });
  // The agent really ran: every tool, then the final answer.
  assert.deepEqual(calls.sort(), ['issue_refund:A-17:540', 'lookup_order:A-17', 'search_kb:refund policy']);
  assert.deepEqual(model.boundTools, ['lookup_order', 'search_kb', 'issue_refund']);
  assert.equal(model.streamed, 0);
  assert.equal(out.messages.at(-1)!.content, 'I could not refund order A-17 myself; a manager will follow up.');

  const recs = await closeAndCheck(dir);
  for (const r of recs) assert.equal(r.trace_id, traceId);
  const [start] = byKind(recs, 'trace_start');
  assert.equal(byKind(recs, 'trace_start').length, 1, 'the handler opens no trace inside audit.trace');
  assert.equal(start!.task_kind, 'refund_request');
  for (const r of recs) assert.equal(r.principal.user_id, 'u_9');
  checkSupportRun(recs, start!);
  const llm = byKind(recs, 'llm_call');
  assert.deepEqual(llm.map((r) => [r.input_tokens, r.output_tokens]), [[120, 30], [230, 18], [300, 16]]);
  assert.equal(byKind(recs, 'trace_end')[0]!.outcome, 'completed');
  // The trace reads back as one document with every step.
  const doc = await audit.showTrace(dir, traceId) as Rec;
  assert.equal(doc.steps.length, recs.length - 2);
});

test('streamed (streamMode messages) outside any trace: the handler opens the trace, usage comes from the chunks', async () => {
  const dir = tempLogDir('langchain-stream');
  audit.init({ dir, capture: 'raw' });
  const calls: string[] = [];
  const model = new ScriptedChatModel(supportScript());
  const agent = createReactAgent({ llm: model, tools: supportTools(calls) });
  assert.equal(audit.currentTrace(), undefined);
  let tokens = '';
  const stream = await agent.stream(
    { messages: [new HumanMessage('Please refund order A-17, it arrived broken.')] },
    { callbacks: [new AuditCallbackHandler({ trace: 'refund_request_streamed' })], streamMode: 'messages' },
  );
  for await (const [chunk] of stream) if (chunk instanceof AIMessageChunk && typeof chunk.content === 'string') tokens += chunk.content;
  assert.match(tokens, /a manager will follow up/);
  assert.equal(calls.length, 3);
  assert.equal(model.streamed, 3, 'the model streamed every turn');

  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  const [end] = byKind(recs, 'trace_end');
  assert.equal(byKind(recs, 'trace_start').length, 1);
  assert.equal(start!.task_kind, 'refund_request_streamed');
  assert.equal(start!.payload.data.input.messages[0].role, 'human');
  assert.equal(end!.outcome, 'completed');
  assert.equal(end!.payload.data.output.messages.at(-1).content, 'I could not refund order A-17 myself; a manager will follow up.');
  for (const r of recs) assert.equal(r.trace_id, start!.trace_id);
  checkSupportRun(recs, start!);
  // Streamed: the token usage LangChain summed from the chunks (the middle turn reported none in its message).
  assert.deepEqual(byKind(recs, 'llm_call').map((r) => [r.input_tokens, r.output_tokens]), [[120, 30], [undefined, undefined], [300, 16]]);
});

test('a failing model: llm_call error, the run fails, the trace the handler opened ends failed', async () => {
  const dir = tempLogDir('langchain-fail');
  audit.init({ dir, capture: 'raw' });
  const calls: string[] = [];
  const script: Turn[] = [supportScript()[0]!, new Error('upstream 503: model overloaded')];
  const agent = createReactAgent({ llm: new ScriptedChatModel(script), tools: supportTools(calls) });
  await assert.rejects(
    agent.invoke({ messages: [new HumanMessage('refund A-17')] }, { callbacks: [new AuditCallbackHandler()] }),
    /model overloaded/,
  );
  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  assert.equal(start!.task_kind, 'LangGraph');
  const llm = byKind(recs, 'llm_call');
  assert.deepEqual(llm.map((r) => r.result_status), ['ok', 'error']);
  assert.equal(llm[1]!.error_type, 'Error');
  assert.equal(llm[1]!.payload.data.error.message, 'upstream 503: model overloaded');
  assert.equal(byKind(recs, 'tool_call').length, 2);
  const [end] = byKind(recs, 'trace_end');
  assert.equal(end!.outcome, 'failed');
  assert.equal(end!.payload.data.error.message, 'upstream 503: model overloaded');
  for (const r of [...llm, ...byKind(recs, 'tool_call')]) assert.equal(r.parent_span_id, start!.span_id);
});

test('AgentExecutor-style runs: agent actions and the finish are decisions under the enclosing span', async () => {
  const dir = tempLogDir('langchain-actions');
  audit.init({ dir, capture: 'raw' });
  const handler = new AuditCallbackHandler();
  let spawnSpan = '';
  await audit.trace('planning', async () => {
    await audit.agentSpawn({ childAgentId: 'planner' }, async (a) => {
      spawnSpan = a.spanId;
      // What LangChain's AgentExecutor does for each step, through its callback manager.
      const manager = CallbackManager.configure([handler])!;
      const run = await manager.handleChainStart({ lc: 1, type: 'not_implemented', id: ['langchain', 'agents', 'AgentExecutor'] }, { input: 'plan a refund' });
      await run.handleAgentAction({ tool: 'lookup_order', toolInput: { orderId: 'A-17' }, log: 'I need the order first.' });
      const toolRun = await run.getChild().handleToolStart({ lc: 1, type: 'not_implemented', id: ['lookup_order'] }, '{"orderId":"A-17"}', undefined, undefined, undefined, undefined, 'lookup_order');
      await toolRun.handleToolEnd('delivered');
      await run.handleAgentEnd({ returnValues: { output: 'refund planned' }, log: 'Final Answer: refund planned' });
      await run.handleChainEnd({ output: 'refund planned' });
    });
  });
  const recs = await closeAndCheck(dir);
  const decisions = byKind(recs, 'decision');
  assert.deepEqual(decisions.map((d) => [d.decision, d.tools]), [['call_tools', ['lookup_order']], ['finish', undefined]]);
  assert.equal(decisions[0]!.payload.data.reasoning, 'I need the order first.');
  assert.equal(decisions[1]!.payload.data.reasoning, 'Final Answer: refund planned');
  const [t] = byKind(recs, 'tool_call');
  assert.deepEqual(t!.payload.data.args, { orderId: 'A-17' });
  assert.equal(t!.payload.data.result, 'delivered');
  // The chain carries no record: its steps nest under the sub-agent it ran in, with its principal.
  for (const r of [...decisions, t!]) {
    assert.equal(r.parent_span_id, spawnSpan);
    assert.equal(r.principal.agent_id, 'planner');
  }
  assert.equal(byKind(recs, 'trace_start').length, 1);
});

test('ESM import of agent-audit/langchain shares the CommonJS module', async () => {
  const esm = await import('agent-audit/langchain');
  assert.equal(esm.AuditCallbackHandler, AuditCallbackHandler);
  const handler = new AuditCallbackHandler();
  assert.equal(handler.awaitHandlers, true);
  assert.equal(handler.copy() instanceof AuditCallbackHandler, true);
});

test('a policy stops a LangChain tool before it runs: block, and require_approval answered by the approver', async () => {
  const dir = tempLogDir('langchain-policy');
  const approvals: string[] = [];
  audit.init({
    dir,
    capture: 'raw',
    policyToml: `
version = "support-test-1"

[[rule]]
id = "agents_never_refund"
description = "Refunds are issued by people"
tools = ["issue_refund"]
action = "block"

[[rule]]
id = "order_lookups_need_approval"
description = "Order data needs a reviewer"
tools = ["lookup_order"]
action = "require_approval"
`,
    approver: async (req) => {
      approvals.push(`${req.tool}:${req.ruleId}`);
      await new Promise((r) => setTimeout(r, 20));
      return { approved: true, reviewer: 'carol' };
    },
  });
  const calls: string[] = [];
  const agent = createReactAgent({ llm: new ScriptedChatModel(supportScript()), tools: supportTools(calls) });
  const out = await audit.trace('refund_request', () => agent.invoke(
    { messages: [new HumanMessage('Please refund order A-17, it arrived broken.')] },
    { callbacks: [new AuditCallbackHandler()] },
  ));
  // The refund never ran; the approved lookup did, after its approval.
  assert.deepEqual(calls.sort(), ['lookup_order:A-17', 'search_kb:refund policy']);
  assert.deepEqual(approvals, ['lookup_order:order_lookups_need_approval']);
  // The agent was told and went on to its answer.
  const toolMessages = out.messages.filter((m: BaseMessage) => m.getType() === 'tool');
  assert.match(String(toolMessages.at(-1)!.content), /agents_never_refund/);
  assert.equal(out.messages.at(-1)!.content, 'I could not refund order A-17 myself; a manager will follow up.');

  const recs = await closeAndCheck(dir);
  const [start] = byKind(recs, 'trace_start');
  const tools = byKind(recs, 'tool_call');
  const refund = tools.find((r) => r.tool.name === 'issue_refund')!;
  assert.equal(refund.result_status, 'blocked');
  assert.equal(refund.parent_span_id, start!.span_id);
  assert.deepEqual(refund.payload.data.args, { orderId: 'A-17', amount: 540 });
  const lookup = tools.find((r) => r.tool.name === 'lookup_order')!;
  assert.equal(lookup.result_status, 'ok');
  assert.ok(lookup.duration_ms >= 15, 'the approval wait is part of the call');
  const policy = byKind(recs, 'policy').find((r) => r.rule_id === 'agents_never_refund')!;
  assert.equal(policy.subject_span_id, refund.span_id);
  const review = byKind(recs, 'human_review').find((r) => r.subject_span_id === lookup.span_id)!;
  assert.equal(review.decision, 'approved');
  assert.equal(review.reviewer, 'carol');
  // The retriever still nests under the tool that ran it.
  const search = tools.find((r) => r.tool.name === 'search_kb')!;
  assert.equal(byKind(recs, 'retrieval')[0]!.parent_span_id, search.span_id);
});
