#!/usr/bin/env node
// Writes the cross-language scenario (one support-agent task) to a log
// with the Node package (../../node, built), signed with a given key.
//
//     node write_node.cjs LOG_DIR SIGNING_KEY.pem
//
// Prints the trace id on stdout. write_python.py records the same task,
// step for step, with the same arguments.
'use strict';
const path = require('node:path');
const audit = require(path.join(__dirname, '..', '..', 'node'));

class PaymentDeclined extends Error {
  constructor(message) {
    super(message);
    this.name = 'PaymentDeclined';
  }
}

const lookupOrder = audit.tool(
  'orders.lookup',
  async (order_id, include_items) => ({ order_id, status: 'delivered', total_cents: 4999, items: 2 }),
  { version: '1.2.0' },
);
const refundPayment = audit.tool(
  'payments.refund',
  // eslint-disable-next-line no-unused-vars
  async (order_id, amount_cents, reason) => {
    throw new PaymentDeclined('card issuer declined the refund');
  },
  { version: '3.0.1' },
);
// eslint-disable-next-line no-unused-vars
const searchKb = audit.tool('kb.search', async (query, limit) => [
  { id: 'kb-17', title: 'Refund policy' },
  { id: 'kb-42', title: 'Chargebacks' },
]);

async function main() {
  const [logDir, key] = process.argv.slice(2);
  audit.init({
    dir: logDir,
    signingKey: key,
    tenantId: 'acme',
    agentId: 'support-v2',
    retentionClass: 'standard_7y',
    overflow: 'block',
    blockTimeoutMs: 60000,
  });
  const ticket = { ticket_id: 'T-1001', text: 'My order o-123 arrived broken, please refund.' };
  let traceId;
  await audit.trace(
    'customer_support_resolution',
    { userId: 'u_abc', sessionId: 'sess-9', input: ticket, captureOutput: false },
    async (t) => {
      traceId = t.traceId;
      await lookupOrder('o-123', true);
      await audit.llmCall({ model: 'claude-opus', provider: 'anthropic' }, async (call) => {
        call.record({
          inputTokens: 1420,
          outputTokens: 312,
          costUsd: 0.0297,
          finishReason: 'tool_use',
          completion: 'I will refund the order.',
        });
      });
      try {
        await refundPayment('o-123', 4999, 'damaged');
      } catch (e) {
        if (!(e instanceof PaymentDeclined)) throw e;
      }
      await audit.agentSpawn({ childAgentId: 'researcher-v1', taskKind: 'policy_research' }, async () => {
        await searchKb('refund policy damaged goods', 5);
        await audit.llmCall({ model: 'claude-haiku', provider: 'anthropic' }, async (call) => {
          call.record({ inputTokens: 800, outputTokens: 120 });
        });
      });
      audit.humanReview({
        decision: 'approved',
        reviewer: 'lead@acme.example',
        reason: 'manual refund allowed',
        waitMs: 1500,
      });
      audit.decision({ decision: 'escalate_to_billing', tools: ['payments.refund'], confidence: 0.82 });
    },
  );
  if (!(await audit.shutdown(30000))) {
    process.stderr.write('shutdown timed out\n');
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`${traceId}\n`);
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exitCode = 1;
});
