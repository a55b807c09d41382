"""A support agent in plain Python, recorded with agent-audit.

It handles one refund request: a planning model (a deterministic stand-in,
so the example runs offline) chooses tools, a policy researcher sub-agent
searches the knowledge base, a refund over the approval limit waits for a
person, and the agent answers. Every step becomes a signed audit record.

    python examples/python/plain_agent.py ./audit [--key signing.pem]
    python -m agent_audit verify ./audit
    python -m agent_audit show ./audit TRACE_ID

Prints the trace id.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any, Optional

import agent_audit as audit

ORDERS = {"o-1001": {"customer": "u_123", "amount": 129.0, "status": "delivered"}}
POLICIES = [
    {"id": "kb-refunds", "text": "Delivered orders can be refunded within 30 days."},
    {"id": "kb-approval", "text": "Refunds over 100 EUR need a team lead's approval."},
]
APPROVAL_LIMIT = 100.0


@audit.tool(name="orders.lookup", version="1.0")
def lookup_order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, **ORDERS[order_id]}


@audit.tool(name="kb.search", version="1.0")
def search_kb(query: str) -> list[dict[str, str]]:
    words = set(re.findall(r"\w+", query.lower()))
    return [p for p in POLICIES if words & set(re.findall(r"\w+", p["text"].lower()))]


@audit.tool(name="payments.refund", version="2.1", risk_flags=["moves_money"])
def issue_refund(order_id: str, amount: float) -> dict[str, Any]:
    return {"refund_id": "rf-5521", "order_id": order_id, "amount": amount, "state": "sent"}


def plan(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The planning model: asks for the order first, then answers."""
    seen = [m for m in messages if m["role"] == "tool"]
    if not seen:
        return {"tool_calls": [{"name": "orders.lookup", "args": {"order_id": "o-1001"}}]}
    refund = next((m["content"] for m in seen if "refund_id" in m["content"]), None)
    if refund is None:
        return {"content": "The order can be refunded.", "finish_reason": "stop"}
    return {"content": f"Refund {refund['refund_id']} is on its way.", "finish_reason": "stop"}


def call_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    with audit.llm_call(
        model="rule-planner-1", provider="local", params={"temperature": 0}, messages=messages
    ) as call:
        reply = plan(messages)
        names = [c["name"] for c in reply.get("tool_calls", [])]
        call.record(
            input_tokens=sum(len(str(m["content"]).split()) for m in messages),
            output_tokens=len(str(reply).split()),
            finish_reason=reply.get("finish_reason", "tool_calls"),
            tool_calls_requested=names or None,
            completion=reply,
        )
    return reply


def research(question: str) -> str:
    """The policy researcher: a sub-agent with its own steps."""
    with audit.agent_spawn("policy-researcher-v1", task_kind="policies", input=question) as sub:
        docs = search_kb(question)
        audit.retrieval(
            question,
            source="kb",
            documents=[{"id": d["id"], "content": d["text"]} for d in docs],
        )
        with audit.llm_call(model="rule-summarizer-1", provider="local") as call:
            summary = " ".join(d["text"] for d in docs)
            call.record(
                input_tokens=len(question.split()) + len(summary.split()),
                output_tokens=len(summary.split()),
                completion=summary,
                finish_reason="stop",
            )
        sub.set_output(summary)
    return summary


def ask_team_lead(order_id: str, amount: float) -> tuple[str, float]:
    """Stands in for a real approval queue."""
    t0 = time.perf_counter()
    decision = "approved" if ORDERS[order_id]["status"] == "delivered" else "denied"
    return decision, (time.perf_counter() - t0) * 1000


def handle(ticket: dict[str, Any]) -> str:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You resolve refund requests."},
        {"role": "user", "content": ticket["text"]},
    ]
    reply = call_model(messages)
    audit.decision("call_tools", tools=[c["name"] for c in reply["tool_calls"]], confidence=0.9)
    order = lookup_order(**reply["tool_calls"][0]["args"])
    messages.append({"role": "tool", "content": order})

    policy = research("refund delivered approval")
    amount = float(order["amount"])
    if amount > APPROVAL_LIMIT:
        audit.decision(
            "request_approval",
            reasoning=f"{amount} EUR is over the {APPROVAL_LIMIT} EUR limit. {policy}",
            alternatives=["refund", "deny", "request_approval"],
            confidence=0.8,
        )
        verdict, waited = ask_team_lead(order["order_id"], amount)
        audit.human_review(verdict, reviewer="lead-7", reason="within policy", wait_ms=waited)
        if verdict != "approved":
            return "A team lead declined the refund."
    refund = issue_refund(order["order_id"], amount)
    messages.append({"role": "tool", "content": refund})
    return str(call_model(messages)["content"])


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", help="audit log directory (created if missing)")
    parser.add_argument("--key", help="Ed25519 signing key (PEM); a dev key otherwise")
    args = parser.parse_args(argv)

    audit.init(
        dir=args.log_dir,
        signing_key=args.key,
        tenant_id="acme",
        agent_id="support-agent-v1",
        retention_class="standard_7y",
    )
    ticket = {"id": "T-88", "text": "Please refund my order o-1001."}
    with audit.trace("refund_request", user_id="u_123", input=ticket) as t:
        t.set_output(handle(ticket))
    audit.shutdown()
    print(t.trace_id)


if __name__ == "__main__":
    main()
