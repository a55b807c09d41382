"""A LangChain agent recorded with agent-audit's callback handler.

The agent is LangChain's own (``langchain.agents.create_agent``, a
LangGraph graph) with three tools and a policy retriever; its chat model
is LangChain's fake model answering from a script, so the example runs
offline and always takes the same path: look the order up and search the
policy (in parallel), try a refund that fails, escalate, answer.

    pip install './python[langchain]' langchain   # create_agent is in langchain
    python examples/python/langchain_agent.py ./audit [--key signing.pem]
    python -m agent_audit show ./audit TRACE_ID

Prints the trace id.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, Optional

from langchain.agents import create_agent
from langchain.agents.middleware import ToolErrorMiddleware
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.tools import create_retriever_tool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.vectorstores import InMemoryVectorStore

import agent_audit as audit
from agent_audit.langchain import AuditCallbackHandler


class ScriptedChat(GenericFakeChatModel):
    """LangChain's fake chat model with the tool binding of a real one."""

    model: str = "scripted-support-1"
    temperature: float = 0.0

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def answer(
    text: str = "", calls: Sequence[tuple[str, dict[str, Any]]] = (), tokens: int = 20
) -> AIMessage:
    return AIMessage(
        content=text,
        tool_calls=[
            {"name": name, "args": args, "id": f"call_{name}_{tokens}", "type": "tool_call"}
            for name, args in calls
        ],
        usage_metadata={"input_tokens": tokens, "output_tokens": 8, "total_tokens": tokens + 8},
        response_metadata={"finish_reason": "tool_calls" if calls else "stop"},
    )


SCRIPT = [
    answer(
        "Checking the order and the refund policy.",
        [("lookup_order", {"order_id": "o-1001"}), ("search_policy", {"query": "refunds"})],
        tokens=40,
    ),
    answer(calls=[("issue_refund", {"order_id": "o-1001", "amount": 129.0})], tokens=90),
    answer(calls=[("escalate", {"reason": "refund service failed"})], tokens=120),
    answer("Your refund needs a colleague; they will contact you today.", tokens=150),
]


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Looks up an order."""
    return {"order_id": order_id, "amount": 129.0, "status": "delivered"}


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refunds an order."""
    raise RuntimeError("payments service unavailable")


@tool
def escalate(reason: str) -> str:
    """Hands the case to a person."""
    return "ticket ESC-17 opened"


def policy_search() -> Any:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_documents(
        [
            Document(id="kb-refunds", page_content="Delivered orders: refunds within 30 days."),
            Document(id="kb-escalation", page_content="Escalate when a payment system fails."),
        ]
    )
    return create_retriever_tool(
        store.as_retriever(search_kwargs={"k": 2}), "search_policy", "Searches the policies."
    )


def report_tool_error(exc: Exception, request: Any) -> Optional[str]:
    return f"{request.tool_call['name']} failed: {exc}"


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", help="audit log directory (created if missing)")
    parser.add_argument("--key", help="Ed25519 signing key (PEM); a dev key otherwise")
    args = parser.parse_args(argv)

    audit.init(dir=args.log_dir, signing_key=args.key, tenant_id="acme", agent_id="lc-support-v1")
    agent = create_agent(
        ScriptedChat(messages=iter(SCRIPT)),
        [lookup_order, policy_search(), issue_refund, escalate],
        system_prompt="You resolve refund requests.",
        middleware=[ToolErrorMiddleware(report_tool_error)],
        name="support_agent",
    )
    question = "Please refund order o-1001."
    with audit.trace("refund_request", user_id="u_123", input=question) as t:
        result = agent.invoke(
            {"messages": [("user", question)]},
            config={"callbacks": [AuditCallbackHandler()]},
        )
        t.set_output(result["messages"][-1].content)
    audit.shutdown()
    print(t.trace_id)


if __name__ == "__main__":
    main()
