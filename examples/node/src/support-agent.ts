/**
 * A customer-support agent task logged with agent-audit from TypeScript:
 * two model calls, tool calls (one times out and is retried), a sub-agent
 * that checks the refund for fraud, a guardrail verdict, a human approval
 * before the refund, an e-mail to the customer and a memory write. The same
 * task as the Rust example (crates/agent-audit/examples/support_agent.rs),
 * through the plain API: audit.trace, audit.tool, audit.llmCall,
 * audit.agentSpawn, audit.decision, audit.guardrail, audit.humanReview,
 * audit.memory.
 *
 *   node dist/support-agent.js ./audit-demo     # prints the trace id
 *   npx agent-audit verify ./audit-demo
 *   npx agent-audit show ./audit-demo <trace_id>
 *
 * The model is a scripted stand-in with the shape of a chat-completion
 * client (messages in; text, tool calls, usage out), so the example runs
 * offline; swap `model.complete` for your provider's SDK call and record
 * the usage it returns.
 */
import * as audit from 'agent-audit';

// ------------------------------------------------------------------ model

interface ToolCallRequest {
  name: string;
  args: Record<string, unknown>;
}

interface Completion {
  model: string;
  text: string;
  toolCalls: ToolCallRequest[];
  stopReason: 'tool_use' | 'end_turn';
  usage: { inputTokens: number; outputTokens: number };
}

interface Message {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
}

/** Answers from a script, in turn, as a model client would. */
class ScriptedModel {
  private turn = 0;
  constructor(private readonly script: Array<Omit<Completion, 'model' | 'usage'>>) {}

  async complete(messages: Message[]): Promise<Completion> {
    await new Promise((r) => setTimeout(r, 5)); // the network round trip
    const next = this.script[this.turn++];
    if (!next) throw new Error('the scripted model has no more answers');
    const inputTokens = Math.ceil(messages.reduce((n, m) => n + m.content.length, 0) / 4);
    return { ...next, model: 'claude-opus-4-20260301', usage: { inputTokens, outputTokens: Math.ceil(next.text.length / 4) + 20 * next.toolCalls.length } };
  }
}

// ------------------------------------------------------------------ tools

const customers = new Map([['cus_881', { id: 'cus_881', name: 'Dana Reyes', email: 'dana.reyes@example.com', tier: 'gold' }]]);
let orderServiceCalls = 0;

const lookupCustomer = audit.tool('crm.lookup_customer', async (customerId: string) => {
  const c = customers.get(customerId);
  if (!c) throw new Error(`no customer ${customerId}`);
  return c;
}, { version: '2.3.1', dataClassification: 'pii' });

const getOrder = audit.tool('orders.get', async (orderId: string) => {
  // The order service is slow the first time: the call times out and the agent retries.
  if (orderServiceCalls++ === 0) throw new DOMException(`orders.get ${orderId} took longer than 2000 ms`, 'TimeoutError');
  return { id: orderId, customerId: 'cus_881', totalEur: 540, status: 'delivered', damaged: true };
}, { version: '1.4.0' });

const riskScore = audit.tool('risk.score', async (customerId: string, amountEur: number) => ({
  customerId,
  amountEur,
  score: 0.07,
  signals: ['long_tenure', 'first_refund'],
}), { version: '0.9.2' });

const refund = audit.tool('payments.refund', async (orderId: string, amountEur: number) => ({
  refundId: `re_${orderId.toLowerCase()}_01`,
  orderId,
  amountEur,
}), { version: '3.0.0', permissionsUsed: ['payments:refund'], riskFlags: ['moves_money'], riskScore: 40 });

const sendEmail = audit.tool('email.send', async (to: string, subject: string, body: string) => ({
  messageId: `msg_${subject.length}_${body.length}`,
  to,
}), { version: '1.0.0', riskFlags: ['sends_external_message'], riskScore: 20 });

// ------------------------------------------------------------------ agent

const MODEL = { model: 'claude-opus-4', provider: 'anthropic', params: { temperature: 0.2, max_tokens: 1024 } };

async function askModel(model: ScriptedModel, messages: Message[]): Promise<Completion> {
  return audit.llmCall({ ...MODEL, messages }, async (call) => {
    const r = await model.complete(messages);
    call.record({
      inputTokens: r.usage.inputTokens,
      outputTokens: r.usage.outputTokens,
      finishReason: r.stopReason,
      toolCallsRequested: r.toolCalls.length ? r.toolCalls.map((c) => c.name) : undefined,
      modelVersion: r.model,
      completion: { text: r.text, toolCalls: r.toolCalls },
    });
    return r;
  });
}

async function withRetry<T>(attempts: number, fn: () => Promise<T>): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= attempts || (e as Error).name !== 'TimeoutError') throw e;
    }
  }
}

/** The fraud checker: a sub-agent with its own model call and tool. */
async function fraudCheck(customerId: string, amountEur: number): Promise<{ approve: boolean; score: number }> {
  return audit.agentSpawn({ childAgentId: 'fraud-checker', taskKind: 'refund_risk' }, async () => {
    const risk = await riskScore(customerId, amountEur);
    const checker = new ScriptedModel([{ text: 'Low risk: long tenure, first refund.', toolCalls: [], stopReason: 'end_turn' }]);
    await askModel(checker, [
      { role: 'system', content: 'You assess refund fraud risk.' },
      { role: 'user', content: JSON.stringify(risk) },
    ]);
    audit.decision({ decision: 'approve_refund', confidence: 1 - risk.score, reasoning: risk.signals.join(', ') });
    return { approve: risk.score < 0.5, score: risk.score };
  });
}

async function resolveTicket(ticket: { id: string; customerId: string; orderId: string; text: string }) {
  const model = new ScriptedModel([
    {
      text: 'I will look up the customer and the order.',
      toolCalls: [{ name: 'crm.lookup_customer', args: { customerId: ticket.customerId } }, { name: 'orders.get', args: { orderId: ticket.orderId } }],
      stopReason: 'tool_use',
    },
    {
      text: 'The order arrived damaged; refund 540 EUR and tell the customer.',
      toolCalls: [{ name: 'payments.refund', args: { orderId: ticket.orderId, amountEur: 540 } }, { name: 'email.send', args: { to: 'customer' } }],
      stopReason: 'tool_use',
    },
  ]);
  const messages: Message[] = [
    { role: 'system', content: 'You are a support agent for Acme. Refunds above 200 EUR need a human approval.' },
    { role: 'user', content: ticket.text },
  ];

  const plan = await askModel(model, messages);
  audit.decision({ decision: 'call_tools', tools: plan.toolCalls.map((c) => c.name), confidence: 0.86, reasoning: plan.text });
  const customer = await lookupCustomer(ticket.customerId);
  const order = await withRetry(3, () => getOrder(ticket.orderId));
  messages.push({ role: 'assistant', content: plan.text }, { role: 'tool', content: JSON.stringify({ customer, order }) });

  const next = await askModel(model, messages);
  const fraud = await fraudCheck(customer.id, order.totalEur);
  if (!fraud.approve) throw new Error('refund refused by the fraud check');

  // Above the agent's own limit: a person approves the refund before it runs.
  const escalation = audit.decision({
    decision: 'escalate_to_human',
    tools: ['payments.refund'],
    confidence: 0.9,
    reasoning: `refund of ${order.totalEur} EUR is above the 200 EUR limit`,
  });
  const requested = Date.now();
  const approvedBy = 'alice@acme.example'; // from your review queue
  audit.humanReview({
    decision: 'approved',
    reviewer: approvedBy,
    subjectSpanId: escalation.spanId,
    waitMs: Date.now() - requested,
    ruleId: 'refund_over_200_eur',
    reason: 'damage confirmed by photo',
  });
  const done = await refund(order.id, order.totalEur);

  const body = `Dear ${customer.name}, we refunded ${done.amountEur} EUR for order ${order.id} (${done.refundId}).`;
  audit.guardrail({ id: 'outbound_pii_v1', version: '1.2', verdict: 'pass', score: 0.02, target: 'tool_args', action: 'allow' });
  await sendEmail(customer.email, `Your refund for ${order.id}`, body);
  audit.memory({ operation: 'write', store: 'customer_notes', key: customer.id, content: `Refunded ${order.id} (${done.amountEur} EUR): ${next.text}` });
  return { resolution: 'refunded', refundId: done.refundId };
}

async function main(): Promise<void> {
  const dir = process.argv[2] ?? './audit-demo';
  audit.init({
    dir,
    tenantId: 'acme',
    agentId: 'support-agent',
    // A key from `npx agent-audit keygen`; without one a development key is created in the log directory.
    signingKey: process.env.AGENT_AUDIT_SIGNING_KEY || undefined,
  });
  const ticket = { id: 'T-1042', customerId: 'cus_881', orderId: 'A-17', text: 'My order A-17 arrived broken, I want my money back.' };
  let traceId = '';
  const outcome = await audit.trace('customer_support_resolution', { userId: 'u_abc', sessionId: 's_77', input: ticket }, async (t) => {
    traceId = t.traceId;
    const r = await resolveTicket(ticket);
    t.addRisk('refund_issued', 35);
    return r;
  });
  await audit.shutdown();

  const report = await audit.verify(dir);
  const steps = (await audit.showTrace(dir, traceId)).steps as unknown[];
  process.stderr.write(`${outcome.resolution} (${outcome.refundId}); ${steps.length} steps, ${report.records} records, ` +
    `${report.tampered ? 'TAMPERED' : 'verified'}\n`);
  process.stdout.write(`${traceId}\n`);
  if (report.tampered) process.exitCode = 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`support-agent: ${(e as Error)?.stack ?? e}\n`);
  process.exitCode = 1;
});
