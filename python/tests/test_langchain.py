"""LangChain / LangGraph: real agents (``langchain.agents.create_agent``,
a LangGraph graph with a ``ToolNode``) driven by LangChain's fake chat
model answering from a script, recorded through ``AuditCallbackHandler``.
Every log is verified and its parent links checked (conftest)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ToolErrorMiddleware
from langchain_core.agents import AgentAction, AgentFinish
from langchain_core.callbacks import CallbackManagerForChainRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableLambda, RunnablePassthrough
from langchain_core.tools import BaseTool, ToolException, create_retriever_tool, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.vectorstores import InMemoryVectorStore

import agent_audit as audit
from agent_audit.langchain import AuditCallbackHandler

from conftest import check_log, events

TOOLS = ["lookup_order", "search_policies", "issue_refund", "escalate"]
POLICIES = {
    "refund-policy": "Refunds are possible within 30 days of delivery.",
    "shipping-policy": "Orders ship within 3 working days.",
}


class ChatScripted(GenericFakeChatModel):
    """LangChain's fake chat model, answering from a script, with the tool
    binding real chat models have (the tools go to the invocation params in
    OpenAI's format)."""

    model: str = "scripted-1"
    temperature: float = 0.2

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


def ai(
    content: str = "",
    calls: Sequence[tuple[str, dict[str, Any], str]] = (),
    tokens: tuple[int, int] = (10, 5),
    finish: Optional[str] = None,
) -> AIMessage:
    """A scripted model answer: text, tool calls (name, args, id), usage."""
    return AIMessage(
        content=content,
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for n, a, i in calls],
        usage_metadata={
            "input_tokens": tokens[0],
            "output_tokens": tokens[1],
            "total_tokens": sum(tokens),
        },
        response_metadata={
            "finish_reason": finish or ("tool_calls" if calls else "stop"),
            "model_name": "scripted-1-2026-01",
        },
    )


def data(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = record["payload"]["data"]
    return out


def sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# -- the support agent: four tools, one raising, one failing "handled" ------


@tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """Looks up an order by id."""
    return {"order_id": order_id, "status": "delivered", "amount": 42.5}


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refunds an order."""
    raise ValueError(f"refund of {amount} exceeds the limit")


@tool
def escalate(reason: str) -> str:
    """Hands the case to a human."""
    raise ToolException("no human agent is available")


escalate.handle_tool_error = True


def policy_tool() -> BaseTool:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(
        [Document(page_content=text, id=doc_id) for doc_id, text in POLICIES.items()]
    )
    retriever = store.as_retriever(search_kwargs={"k": 2})
    return create_retriever_tool(retriever, "search_policies", "Searches the support policies.")


def on_tool_error(exc: Exception, request: Any) -> Optional[str]:
    if isinstance(exc, ValueError):
        return f"{request.tool_call['name']} failed: {exc}"
    return None


SCRIPT = [
    ai(
        "Let me look at the order and the policy.",
        [
            ("lookup_order", {"order_id": "o-1"}, "call_1"),
            ("search_policies", {"query": "refund policy"}, "call_2"),
        ],
        tokens=(50, 12),
    ),
    ai(calls=[("issue_refund", {"order_id": "o-1", "amount": 42.5}, "call_3")], tokens=(120, 9)),
    ai(calls=[("escalate", {"reason": "refund failed"}, "call_4")], tokens=(160, 8)),
    ai("I have escalated your refund request.", tokens=(190, 7)),
]
QUESTION = "Please refund order o-1"
ANSWER = "I have escalated your refund request."


def support_agent(name: str = "support_agent") -> Any:
    return create_agent(
        ChatScripted(messages=iter(SCRIPT)),
        [lookup_order, policy_tool(), issue_refund, escalate],
        system_prompt="You are a support agent.",
        middleware=[ToolErrorMiddleware(on_tool_error)],
        name=name,
    )


def check_support_run(evs: list[dict[str, Any]], root_span: str) -> None:
    """The recorded steps of one support-agent run whose steps hang under
    ``root_span``: what each model call, decision, tool call and retrieval
    says, and who is whose parent."""
    assert len({e["trace_id"] for e in evs}) == 1
    llm = [e for e in evs if e["kind"] == "llm_call"]
    assert len(llm) == 4
    for e in llm:
        assert e["parent_span_id"] == root_span
        assert e["result_status"] == "ok"
        assert e["model"] == {
            "name": "scripted-1",
            "provider": "scripted",
            "version": "scripted-1-2026-01",
        }
        assert e["params"] == {"temperature": 0.2, "tools": TOOLS}
        assert e["metadata"]["langgraph_node"] == "model"
    assert [(e["input_tokens"], e["output_tokens"]) for e in llm] == [
        (50, 12),
        (120, 9),
        (160, 8),
        (190, 7),
    ]
    assert [e["finish_reason"] for e in llm] == ["tool_calls"] * 3 + ["stop"]
    assert [e.get("tool_calls_requested") for e in llm] == [
        ["lookup_order", "search_policies"],
        ["issue_refund"],
        ["escalate"],
        None,
    ]
    first = data(llm[0])
    assert first["messages"] == [
        {"role": "system", "content": "You are a support agent."},
        {"role": "human", "content": QUESTION},
    ]
    assert first["completion"]["tool_calls"] == [
        {"id": "call_1", "name": "lookup_order", "args": {"order_id": "o-1"}},
        {"id": "call_2", "name": "search_policies", "args": {"query": "refund policy"}},
    ]
    # The second call saw the tool results, the failed refund the fourth.
    assert [m["role"] for m in data(llm[1])["messages"]] == [
        "system",
        "human",
        "ai",
        "tool",
        "tool",
    ]
    tool_msgs = {m["tool_call_id"]: m for m in data(llm[3])["messages"] if m["role"] == "tool"}
    assert sorted(tool_msgs) == ["call_1", "call_2", "call_3", "call_4"]
    assert tool_msgs["call_3"]["status"] == "error"
    assert "status" not in tool_msgs["call_1"]
    assert data(llm[3])["completion"]["content"] == ANSWER

    decisions = [e for e in evs if e["kind"] == "decision"]
    assert [d["decision"] for d in decisions] == ["call_tools"] * 3
    assert [d["parent_span_id"] for d in decisions] == [e["span_id"] for e in llm[:3]]
    assert [d["tools"] for d in decisions] == [
        ["lookup_order", "search_policies"],
        ["issue_refund"],
        ["escalate"],
    ]
    assert [d["metadata"]["tool_call_ids"] for d in decisions] == [
        ["call_1", "call_2"],
        ["call_3"],
        ["call_4"],
    ]
    assert data(decisions[0])["reasoning"] == "Let me look at the order and the policy."

    tools = {e["tool"]["name"]: e for e in evs if e["kind"] == "tool_call"}
    assert sorted(tools) == sorted(TOOLS)
    for name, call_id in zip(TOOLS, ["call_1", "call_2", "call_3", "call_4"]):
        assert tools[name]["parent_span_id"] == root_span
        assert tools[name]["metadata"]["tool_call_id"] == call_id
        assert tools[name]["metadata"]["langgraph_node"] == "tools"
        assert tools[name]["duration_ms"] >= 0
    lookup = tools["lookup_order"]
    assert lookup["result_status"] == "ok"
    assert data(lookup)["args"] == {"order_id": "o-1"}
    assert json.loads(data(lookup)["result"]) == {
        "order_id": "o-1",
        "status": "delivered",
        "amount": 42.5,
    }
    search = tools["search_policies"]
    assert search["result_status"] == "ok"
    assert data(search)["args"] == {"query": "refund policy"}
    assert POLICIES["refund-policy"] in data(search)["result"]
    refund = tools["issue_refund"]
    assert refund["result_status"] == "error"
    assert refund["error_type"] == "ValueError"
    assert data(refund)["args"] == {"order_id": "o-1", "amount": 42.5}
    assert data(refund)["error"] == {
        "type": "ValueError",
        "message": "refund of 42.5 exceeds the limit",
    }
    assert "result" not in data(refund)
    handled = tools["escalate"]
    assert handled["result_status"] == "error"
    assert data(handled)["error"] == {"message": "no human agent is available"}

    (retrieval,) = [e for e in evs if e["kind"] == "retrieval"]
    assert retrieval["parent_span_id"] == search["span_id"]
    assert retrieval["source"] == "InMemoryVectorStore"
    assert retrieval["result_status"] == "ok"
    assert sorted(retrieval["retrieved_docs"], key=lambda d: d["id"]) == [
        {"id": doc_id, "hash": sha256(text)} for doc_id, text in sorted(POLICIES.items())
    ]
    assert data(retrieval)["query"] == "refund policy"
    assert {d["id"]: d["content"] for d in data(retrieval)["documents"]} == POLICIES


def test_agent_run_is_one_trace_of_model_calls_decisions_tools_and_retrieval(
    log_dir: Path,
) -> None:
    handler = AuditCallbackHandler(task_kind="refund_request", user_id="u_abc")
    result = support_agent().invoke(
        {"messages": [("user", QUESTION)]}, config={"callbacks": [handler]}
    )
    assert result["messages"][-1].content == ANSWER
    audit.flush(30)
    evs = events(log_dir)
    start, end = evs[0], evs[-1]
    assert start["kind"] == "trace_start" and end["kind"] == "trace_end"
    assert [e["kind"] for e in evs].count("trace_start") == 1
    assert start["task_kind"] == "refund_request"
    assert start["principal"]["user_id"] == "u_abc"
    assert "parent_span_id" not in start
    assert data(start)["input"] == {"messages": [["user", QUESTION]]}
    assert end["span_id"] == start["span_id"]
    assert end["outcome"] == "completed"
    assert data(end)["output"]["messages"][-1] == {
        "role": "ai",
        "content": ANSWER,
        "name": "support_agent",
    }
    check_support_run(evs[1:-1], start["span_id"])

    doc = audit.show(log_dir, start["trace_id"])
    assert doc["outcome"] == "completed"
    steps = {s["span_id"]: s for s in doc["steps"]}
    search = next(s for s in doc["steps"] if s.get("tool") == "search_policies")
    (retrieval,) = [s for s in doc["steps"] if s["kind"] == "retrieval"]
    assert retrieval["parent_step"] == search["step_id"]
    assert sum(s.get("input_tokens", 0) for s in steps.values()) == 50 + 120 + 160 + 190


def test_async_agent_run_joins_the_current_trace(log_dir: Path) -> None:
    handler = AuditCallbackHandler()

    async def main() -> tuple[Any, audit.Trace]:
        async with audit.trace("refund_request", user_id="u_abc") as t:
            result = await support_agent().ainvoke(
                {"messages": [("user", QUESTION)]}, config={"callbacks": [handler]}
            )
        return result, t

    result, t = asyncio.run(main())
    assert result["messages"][-1].content == ANSWER
    audit.flush(30)
    evs = events(log_dir)
    # The handler started no trace of its own: the steps are in audit.trace's.
    assert [e["kind"] for e in evs].count("trace_start") == 1
    assert evs[0]["span_id"] == t.span_id and evs[-1]["kind"] == "trace_end"
    assert {e["trace_id"] for e in evs} == {t.trace_id}
    check_support_run(evs[1:-1], t.span_id)


def test_streamed_graph_run_is_recorded_like_invoke(log_dir: Path) -> None:
    handler = AuditCallbackHandler(task_kind="refund_request")
    chunks = list(
        support_agent().stream(
            {"messages": [("user", QUESTION)]},
            config={"callbacks": [handler]},
            stream_mode="updates",
        )
    )
    assert "model" in chunks[-1]
    audit.flush(30)
    evs = events(log_dir)
    assert evs[0]["kind"] == "trace_start" and evs[-1]["outcome"] == "completed"
    check_support_run(evs[1:-1], evs[0]["span_id"])


# -- sub-agents, failures, concurrency --------------------------------------


def test_agent_called_as_a_tool_is_a_sub_agent(log_dir: Path) -> None:
    researcher = create_agent(
        ChatScripted(
            messages=iter(
                [
                    ai(calls=[("lookup_order", {"order_id": "o-7"}, "r1")], tokens=(30, 4)),
                    ai("Order o-7 was delivered.", tokens=(45, 6)),
                ]
            )
        ),
        [lookup_order],
        name="researcher",
    )

    @tool
    def ask_researcher(question: str) -> str:
        """Asks the research agent."""
        out = researcher.invoke({"messages": [("user", question)]})
        return str(out["messages"][-1].content)

    supervisor = create_agent(
        ChatScripted(
            messages=iter(
                [
                    ai(calls=[("ask_researcher", {"question": "Where is o-7?"}, "s1")]),
                    ai("It was delivered."),
                ]
            )
        ),
        [ask_researcher],
        name="supervisor",
    )
    handler = AuditCallbackHandler(sub_agents={"researcher"})
    supervisor.invoke({"messages": [("user", "Where is my order o-7?")]}, {"callbacks": [handler]})
    audit.flush(30)
    evs = events(log_dir)
    start = evs[0]
    assert start["kind"] == "trace_start" and start["task_kind"] == "supervisor"
    (spawn,) = [e for e in evs if e["kind"] == "agent_spawn"]
    ask = next(e for e in evs if e["kind"] == "tool_call" and e["tool"]["name"] == "ask_researcher")
    assert ask["parent_span_id"] == start["span_id"]
    assert data(ask)["result"] == "Order o-7 was delivered."
    assert spawn["child_agent_id"] == "researcher"
    assert spawn["parent_span_id"] == ask["span_id"]
    assert spawn["result_status"] == "ok"
    assert data(spawn)["input"] == {"messages": [["user", "Where is o-7?"]]}
    inner = [e for e in evs if e.get("parent_span_id") == spawn["span_id"]]
    assert [e["kind"] for e in inner] == ["llm_call", "tool_call", "llm_call"]
    assert [e["input_tokens"] for e in inner if e["kind"] == "llm_call"] == [30, 45]
    assert inner[1]["tool"]["name"] == "lookup_order"
    assert data(inner[1])["args"] == {"order_id": "o-7"}
    # The sub-agent's steps are attributed to it, the supervisor's to the log's agent.
    assert {e["principal"]["agent_id"] for e in [spawn, *inner]} == {"researcher"}
    outer_llm = [
        e for e in evs if e["kind"] == "llm_call" and e["parent_span_id"] == start["span_id"]
    ]
    assert len(outer_llm) == 2
    assert {e["principal"]["agent_id"] for e in outer_llm} == {"agent-1"}


class ChatDown(GenericFakeChatModel):
    """A chat model whose provider is down."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("model endpoint unreachable")

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        return self


def test_failures_end_the_steps_and_the_trace_with_error_status(log_dir: Path) -> None:
    # A tool error nobody handles ends the run...
    agent = create_agent(
        ChatScripted(
            messages=iter([ai(calls=[("issue_refund", {"order_id": "o-2", "amount": 5.0}, "c")])])
        ),
        [issue_refund],
    )
    with pytest.raises(ValueError, match="exceeds the limit"):
        agent.invoke(
            {"messages": [("user", "refund o-2")]}, {"callbacks": [AuditCallbackHandler()]}
        )
    # ... and so does a model that cannot be reached.
    down = create_agent(ChatDown(messages=iter([])), [lookup_order])
    with pytest.raises(ConnectionError):
        down.invoke({"messages": [("user", "hi")]}, {"callbacks": [AuditCallbackHandler()]})
    audit.flush(30)
    evs = events(log_dir)
    starts = [e for e in evs if e["kind"] == "trace_start"]
    ends = [e for e in evs if e["kind"] == "trace_end"]
    assert len(starts) == len(ends) == 2
    assert [e["outcome"] for e in ends] == ["failed", "failed"]
    assert [e["error_type"] for e in ends] == ["ValueError", "ConnectionError"]
    assert data(ends[0])["error"]["message"] == "refund of 5.0 exceeds the limit"
    (refund,) = [e for e in evs if e["kind"] == "tool_call"]
    assert refund["trace_id"] == starts[0]["trace_id"]
    assert refund["parent_span_id"] == starts[0]["span_id"]
    assert refund["result_status"] == "error" and refund["error_type"] == "ValueError"
    failed_llm = [
        e for e in evs if e["kind"] == "llm_call" and e["trace_id"] == starts[1]["trace_id"]
    ]
    (failed,) = failed_llm
    assert failed["result_status"] == "error"
    assert failed["error_type"] == "ConnectionError"
    assert data(failed)["error"] == {
        "type": "ConnectionError",
        "message": "model endpoint unreachable",
    }
    assert failed["model"]["provider"] == "down"


def test_one_handler_serves_concurrent_runs_on_many_threads(log_dir: Path) -> None:
    handler = AuditCallbackHandler(task_kind="lookup")
    n = 6
    barrier = threading.Barrier(n)

    def run(i: int) -> str:
        agent = create_agent(
            ChatScripted(
                messages=iter(
                    [
                        ai(
                            calls=[("lookup_order", {"order_id": f"o-{i}"}, f"c{i}")], tokens=(i, 1)
                        ),
                        ai(f"order o-{i} delivered", tokens=(i, 2)),
                    ]
                )
            ),
            [lookup_order],
        )
        barrier.wait()
        out = agent.invoke({"messages": [("user", f"where is o-{i}")]}, {"callbacks": [handler]})
        return str(out["messages"][-1].content)

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(run, range(n)))
    assert answers == [f"order o-{i} delivered" for i in range(n)]
    audit.flush(30)
    evs = events(log_dir)
    starts = [e for e in evs if e["kind"] == "trace_start"]
    assert len(starts) == n
    for start in starts:
        i = int(data(start)["input"]["messages"][0][1].removeprefix("where is o-"))
        mine = [e for e in evs if e["trace_id"] == start["trace_id"]]
        assert [e["kind"] for e in mine] == [
            "trace_start",
            "llm_call",
            "decision",
            "tool_call",
            "llm_call",
            "trace_end",
        ]
        llm1, decision, call, llm2 = mine[1:5]
        assert [llm1["input_tokens"], llm2["input_tokens"]] == [i, i]
        assert decision["parent_span_id"] == llm1["span_id"]
        assert decision["metadata"]["tool_call_ids"] == [f"c{i}"]
        assert data(call)["args"] == {"order_id": f"o-{i}"}
        assert call["metadata"]["tool_call_id"] == f"c{i}"
        for e in (llm1, call, llm2):
            assert e["parent_span_id"] == start["span_id"]
        assert data(mine[-1])["output"]["messages"][-1]["content"] == f"order o-{i} delivered"


# -- other run kinds: a LangGraph graph, a RAG chain with a text LLM, agent actions


def test_langgraph_graph_with_parallel_tool_calls(log_dir: Path) -> None:
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    model = ChatScripted(
        messages=iter(
            [
                ai(
                    calls=[
                        ("lookup_order", {"order_id": "o-1"}, "p1"),
                        ("lookup_order", {"order_id": "o-2"}, "p2"),
                        ("lookup_order", {"order_id": "o-3"}, "p3"),
                    ]
                ),
                ai("all three delivered"),
            ]
        )
    ).bind_tools([lookup_order])

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([lookup_order]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile()
    out = app.invoke(
        {"messages": [("user", "status of o-1..3")]}, {"callbacks": [AuditCallbackHandler()]}
    )
    assert out["messages"][-1].content == "all three delivered"
    audit.flush(30)
    evs = events(log_dir)
    start = evs[0]
    assert start["task_kind"] == "LangGraph"
    calls = [e for e in evs if e["kind"] == "tool_call"]
    assert sorted(data(c)["args"]["order_id"] for c in calls) == ["o-1", "o-2", "o-3"]
    assert sorted(c["metadata"]["tool_call_id"] for c in calls) == ["p1", "p2", "p3"]
    assert {c["parent_span_id"] for c in calls} == {start["span_id"]}
    assert len({c["span_id"] for c in calls}) == 3
    (decision,) = [e for e in evs if e["kind"] == "decision"]
    assert decision["tools"] == ["lookup_order"] * 3


def test_rag_chain_with_a_text_llm(log_dir: Path) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents([Document(page_content=t, id=i) for i, t in POLICIES.items()])
    prompt = PromptTemplate.from_template("Context: {context}\nQuestion: {question}")
    llm = FakeListLLM(responses=["Within 30 days."])
    chain = (
        {
            "context": store.as_retriever(search_kwargs={"k": 1})
            | RunnableLambda(lambda docs: docs[0].page_content),
            "question": RunnablePassthrough(),
        }
        | prompt
        | llm
    ).with_config(run_name="policy_qa")
    answer = chain.invoke("How long do refunds take?", {"callbacks": [AuditCallbackHandler()]})
    assert answer == "Within 30 days."
    audit.flush(30)
    evs = events(log_dir)
    assert [e["kind"] for e in evs] == ["trace_start", "retrieval", "llm_call", "trace_end"]
    start, retrieval, llm_call, end = evs
    assert start["task_kind"] == "policy_qa"
    assert data(start)["input"] == "How long do refunds take?"
    assert retrieval["parent_span_id"] == llm_call["parent_span_id"] == start["span_id"]
    (doc,) = retrieval["retrieved_docs"]
    assert doc == {"id": doc["id"], "hash": sha256(POLICIES[doc["id"]])}
    assert data(retrieval)["query"] == "How long do refunds take?"
    assert llm_call["model"]["name"] == "FakeListLLM"
    assert llm_call["model"]["provider"] == "fakelist"
    context = POLICIES[doc["id"]]
    assert data(llm_call)["prompt"] == f"Context: {context}\nQuestion: How long do refunds take?"
    assert data(llm_call)["completion"] == "Within 30 days."
    assert data(end)["output"] == "Within 30 days."


class ScoredRetriever(BaseRetriever):
    """A retriever that puts each document's similarity in its metadata."""

    store: InMemoryVectorStore

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if not query:
            raise ValueError("empty query")
        found = self.store.similarity_search_with_score(query, k=1)
        return [
            Document(page_content=d.page_content, id=d.id, metadata={"score": score})
            for d, score in found
        ]


def test_retriever_scores_and_failures(log_dir: Path) -> None:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents([Document(page_content=t, id=i) for i, t in POLICIES.items()])
    retriever = ScoredRetriever(store=store)
    handler = AuditCallbackHandler()
    (found,) = retriever.invoke("refunds", {"callbacks": [handler], "run_name": "policies"})
    with pytest.raises(ValueError, match="empty query"):
        retriever.invoke("", {"callbacks": [handler]})
    audit.flush(30)
    ok, failed = events(log_dir)
    # Outside any trace, each retrieval is a span of its own.
    assert "parent_span_id" not in ok and ok["trace_id"] != failed["trace_id"]
    assert ok["source"] == "policies" and ok["result_status"] == "ok"
    assert ok["retrieved_docs"] == [
        {"id": found.id, "hash": sha256(found.page_content), "score": found.metadata["score"]}
    ]
    assert failed["source"] == "ScoredRetriever"
    assert failed["result_status"] == "error" and failed["error_type"] == "ValueError"
    assert "retrieved_docs" not in failed
    assert data(failed) == {"query": "", "error": {"type": "ValueError", "message": "empty query"}}


def test_agent_actions_and_finish_are_decisions(log_dir: Path) -> None:
    def plan(question: str, run_manager: CallbackManagerForChainRun) -> str:
        run_manager.on_agent_action(
            AgentAction(
                tool="lookup_order", tool_input={"order_id": "o-9"}, log="I need the order."
            )
        )
        status = lookup_order.invoke({"order_id": "o-9"}, {"callbacks": run_manager.get_child()})
        run_manager.on_agent_finish(
            AgentFinish({"output": status["status"]}, log="Done: delivered.")
        )
        return str(status["status"])

    with audit.trace("planner") as t:
        out = RunnableLambda(plan).invoke("o-9?", {"callbacks": [AuditCallbackHandler()]})
    assert out == "delivered"
    audit.flush(30)
    evs = events(log_dir)
    assert [e["kind"] for e in evs] == [
        "trace_start",
        "decision",
        "tool_call",
        "decision",
        "trace_end",
    ]
    action, call, finish = evs[1:4]
    assert action["decision"] == "call_tool" and action["tools"] == ["lookup_order"]
    assert data(action)["reasoning"] == "I need the order."
    assert finish["decision"] == "finish" and data(finish)["reasoning"] == "Done: delivered."
    assert data(call)["result"] == {"order_id": "o-9", "status": "delivered", "amount": 42.5}
    for e in (action, call, finish):
        assert e["trace_id"] == t.trace_id and e["parent_span_id"] == t.span_id


def test_without_a_log_the_agent_runs_and_nothing_raises() -> None:
    before = audit.stats()["not_logged"]
    result = support_agent().invoke(
        {"messages": [("user", QUESTION)]}, {"callbacks": [AuditCallbackHandler()]}
    )
    assert result["messages"][-1].content == ANSWER
    # trace_start/end, 4 model calls, 3 decisions, 4 tool calls, 1 retrieval.
    assert audit.stats()["not_logged"] - before == 14


# -- policy: the same gates as @audit.tool ----------------------------------

LC_POLICY = """
version = "lc-1"
builtin = false

[[rule]]
id = "no_mass_delete"
description = "Deleting a customer's orders is not allowed"
tools = ["delete_orders"]
flags = ["destructive_operation"]
score = 80
action = "block"

[[rule]]
id = "refund_needs_human"
description = "Refunds need a human"
tools = ["refund_order"]
flags = ["money_movement"]
score = 30
action = "require_approval"
"""


def test_policy_blocks_and_approvals_apply_to_langchain_tools(
    tmp_path: Path, signing_key: Path
) -> None:
    d = tmp_path / "audit"
    audit.init(
        dir=d,
        signing_key=signing_key,
        policy_toml=LC_POLICY,
        overflow="block",
        block_timeout_ms=120_000,
    )
    ran: list[str] = []

    @tool
    def delete_orders(customer_id: str) -> str:
        """Deletes every order of a customer."""
        ran.append(f"delete {customer_id}")
        return "deleted"

    @tool
    def refund_order(order_id: str) -> str:
        """Refunds an order."""
        ran.append(f"refund {order_id}")
        return "refunded"

    asked: list[audit.ApprovalRequest] = []

    def approver(req: audit.ApprovalRequest) -> bool:
        asked.append(req)
        return bool(req.args["order_id"] == "o-1")

    audit.set_approver(approver)
    handler = AuditCallbackHandler()
    config: Any = {"callbacks": [handler]}
    try:
        assert refund_order.invoke({"order_id": "o-1"}, config=config) == "refunded"
        with pytest.raises(audit.ToolBlocked) as denied:
            refund_order.invoke({"order_id": "o-2"}, config=config)
        assert denied.value.review == "denied"

        model = ChatScripted(
            messages=iter(
                [
                    ai(calls=[("delete_orders", {"customer_id": "c-9"}, "call_1")]),
                    ai("Done."),
                ]
            )
        )
        agent = create_agent(model, [delete_orders, refund_order])
        with pytest.raises(audit.ToolBlocked) as blocked:
            agent.invoke({"messages": [("user", "delete all my orders")]}, config=config)
        assert blocked.value.rule_id == "no_mass_delete"
    finally:
        audit.set_approver(None)
    assert ran == ["refund o-1"]
    assert [r.args for r in asked] == [{"order_id": "o-1"}, {"order_id": "o-2"}]
    assert audit.shutdown(30)
    check_log(d)
    tools = events(d, "tool_call")
    assert sorted((e["tool"]["name"], e["result_status"]) for e in tools) == [
        ("delete_orders", "blocked"),
        ("refund_order", "blocked"),
        ("refund_order", "ok"),
    ]
    blocked_delete = next(e for e in tools if e["tool"]["name"] == "delete_orders")
    assert data(blocked_delete)["args"] == {"customer_id": "c-9"}
    assert "destructive_operation" in blocked_delete["risk"]["flags"]
    reviews = events(d, "human_review")
    assert [r["decision"] for r in reviews] == ["approved", "denied"]
    rules = sorted(e["rule_id"] for e in events(d, "policy"))
    assert rules == ["no_mass_delete", "refund_needs_human", "refund_needs_human"]
