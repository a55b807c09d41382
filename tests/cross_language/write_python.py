"""Writes the cross-language scenario (one support-agent task) to a log
with the Python package, signed with a given key.

    python write_python.py LOG_DIR SIGNING_KEY.pem

Prints the trace id on stdout. The Node writer (write_node.cjs) records
the same task, step for step, with the same arguments.
"""

from __future__ import annotations

import sys

import agent_audit as audit


class PaymentDeclined(Exception):
    """The payment provider refused the refund."""


@audit.tool(name="orders.lookup", version="1.2.0")
def lookup_order(order_id, include_items):
    return {"order_id": order_id, "status": "delivered", "total_cents": 4999, "items": 2}


@audit.tool(name="payments.refund", version="3.0.1")
def refund_payment(order_id, amount_cents, reason):
    raise PaymentDeclined("card issuer declined the refund")


@audit.tool(name="kb.search")
def search_kb(query, limit):
    return [{"id": "kb-17", "title": "Refund policy"}, {"id": "kb-42", "title": "Chargebacks"}]


def main() -> int:
    log_dir, key = sys.argv[1], sys.argv[2]
    audit.init(
        dir=log_dir,
        signing_key=key,
        tenant_id="acme",
        agent_id="support-v2",
        retention_class="standard_7y",
        overflow="block",
        block_timeout_ms=60_000,
    )
    ticket = {"ticket_id": "T-1001", "text": "My order o-123 arrived broken, please refund."}
    with audit.trace(
        "customer_support_resolution", user_id="u_abc", session_id="sess-9", input=ticket
    ) as t:
        lookup_order("o-123", True)
        with audit.llm_call(model="claude-opus", provider="anthropic") as call:
            call.record(
                input_tokens=1420,
                output_tokens=312,
                cost_usd=0.0297,
                finish_reason="tool_use",
                completion="I will refund the order.",
            )
        try:
            refund_payment("o-123", 4999, "damaged")
        except PaymentDeclined:
            pass
        with audit.agent_spawn("researcher-v1", task_kind="policy_research"):
            search_kb("refund policy damaged goods", 5)
            with audit.llm_call(model="claude-haiku", provider="anthropic") as call:
                call.record(input_tokens=800, output_tokens=120)
        audit.human_review(
            "approved", reviewer="lead@acme.example", reason="manual refund allowed", wait_ms=1500
        )
        audit.decision("escalate_to_billing", tools=["payments.refund"], confidence=0.82)
        trace_id = t.trace_id
    if not audit.shutdown(30):
        print("shutdown timed out", file=sys.stderr)
        return 1
    print(trace_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
