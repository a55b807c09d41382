"""LangChain and LangGraph: a callback handler that records what an agent
does as audit events.

>>> from agent_audit.langchain import AuditCallbackHandler
>>> handler = AuditCallbackHandler(user_id="u_abc")
>>> agent.invoke({"messages": [...]}, config={"callbacks": [handler]})

What each LangChain run becomes:

- a chat model or LLM: ``llm_call`` (model, provider, generation params,
  token usage, finish reason, messages and completion); the tool calls it
  asks for also become a ``decision`` (``call_tools``) under it;
- a tool: ``tool_call`` (name, arguments, result, or the error with
  ``result_status`` error);
- a retriever: ``retrieval`` (query, source, document ids and content
  hashes);
- an agent action or finish: ``decision`` (``call_tool`` / ``finish``);
- the outermost chain: the trace (``trace_start`` / ``trace_end``) when no
  ``audit.trace`` is active; inside one, its steps join that trace;
- a chain named in ``sub_agents``: ``agent_spawn``, whose steps nest under
  it and are attributed to that agent.

Other chains (graph nodes, sequences, lambdas) record nothing of their own:
their steps nest under the closest enclosing span that does. Parents
follow LangChain's ``run_id`` / ``parent_run_id``, so steps nest correctly
even when callbacks fire on other threads (LangChain runs sync tools in a
thread pool) or interleave (parallel tool calls, ``asyncio`` runs). The
handler works for sync and async runs alike; it runs inline (it only
copies values and queues them) and never raises into the agent.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Sequence
from time import perf_counter_ns, time_ns
from typing import TYPE_CHECKING, Any, Optional, Union
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage, ToolMessage

from ._integration import guarded, tool_decision, tool_names, within
from ._native import AuditLog, SpanContext, ToolGate
from ._policy import CallSite, enforce_sync
from ._spans import (
    AgentSpawn,
    LlmCall,
    Trace,
    _common,
    _duration_ms,
    _emit,
    _message,
    _qualname,
    decision,
)
from ._state import STATE
from ._tool import status_of
from .context import _current, otel_ids

if TYPE_CHECKING:
    from langchain_core.agents import AgentAction, AgentFinish
    from langchain_core.documents import Document
    from langchain_core.outputs import LLMResult

__all__ = ["AuditCallbackHandler"]

# Generation parameters worth keeping from a model's invocation params.
_PARAMS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "stop",
    "stop_sequences",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
)
# LangSmith's standard params (run metadata), for models whose invocation
# params do not carry them.
_LS_PARAMS = (
    ("ls_temperature", "temperature"),
    ("ls_max_tokens", "max_tokens"),
    ("ls_stop", "stop"),
)
# Run metadata worth keeping on every event: where in a graph it happened.
_LG_KEYS = ("langgraph_node", "langgraph_step")

_AnySpan = Union[Trace, AgentSpawn, LlmCall]


class _Run:
    """One LangChain run in flight. ``ctx`` is the span its children nest
    under: its own, or (for a chain that records nothing) its parent's.
    ``args``: a tool's arguments, a retriever's query."""

    __slots__ = ("args", "ctx", "metadata", "name", "span", "start_ns", "t0")

    def __init__(
        self,
        ctx: SpanContext,
        span: Optional[_AnySpan] = None,
        *,
        name: str = "",
        args: Any = None,
        metadata: Optional[dict[str, Any]] = None,
    ) -> None:
        self.ctx = ctx
        self.span = span
        self.name = name
        self.args = args
        self.metadata = metadata
        self.start_ns = time_ns()
        self.t0 = perf_counter_ns()


class AuditCallbackHandler(BaseCallbackHandler):
    """Records LangChain / LangGraph runs as audit events (see the module
    doc). Pass it in ``config={"callbacks": [handler]}``; one handler may
    serve many runs, concurrently.

    ``task_kind`` names the trace an outermost chain starts (default: the
    chain's name); ``user_id`` and ``session_id`` go to that trace's
    principal. ``sub_agents``: names of chains (``create_agent(name=...)``,
    compiled graphs, runnables with ``run_name``) to record as sub-agents.
    ``metadata`` is added to every event; ``capture`` overrides the log's
    capture mode for them.
    """

    # Only copies values and queues them: safe to run on the event loop,
    # and inline is what keeps it in the run's own context.
    run_inline = True
    # Every hook swallows its own failures (``guarded``) except a policy
    # decision: a ToolBlocked from on_tool_start must stop the tool.
    raise_error = True

    def __init__(
        self,
        *,
        task_kind: Optional[str] = None,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        sub_agents: Collection[str] = (),
        metadata: Optional[dict[str, Any]] = None,
        capture: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._task_kind = task_kind
        self._user_id = user_id
        self._session_id = session_id
        self._sub_agents = frozenset(sub_agents)
        self._metadata = dict(metadata or {})
        self._capture = capture
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()
        # Policy gates by tool name, for the log they were computed for.
        self._gates: dict[str, Optional[ToolGate]] = {}
        self._gates_log: Optional[AuditLog] = None

    # -- run bookkeeping ---------------------------------------------------

    def _put(self, run_id: UUID, run: _Run) -> None:
        with self._lock:
            self._runs[run_id] = run

    def _pop(self, run_id: UUID) -> Optional[_Run]:
        with self._lock:
            return self._runs.pop(run_id, None)

    def _span_of(self, run_id: Optional[UUID]) -> Optional[SpanContext]:
        """The span a child of ``run_id`` nests under: that run's, or when
        LangChain's parent is unknown here, the current ``audit`` span."""
        if run_id is not None:
            with self._lock:
                run = self._runs.get(run_id)
            if run is not None:
                return run.ctx
        return _current.get()

    def _meta(
        self, run_id: UUID, metadata: Optional[dict[str, Any]], **extra: Any
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"langchain_run_id": str(run_id)}
        for key in _LG_KEYS:
            if metadata and metadata.get(key) is not None:
                meta[key] = metadata[key]
        meta.update((k, v) for k, v in extra.items() if v is not None)
        meta.update(self._metadata)
        return meta

    # -- chains ------------------------------------------------------------

    @guarded
    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        name = _run_name(serialized, kwargs, "chain")
        parent = self._span_of(parent_run_id)
        span: Union[Trace, AgentSpawn]
        if parent is None:
            span = Trace(
                self._task_kind or name,
                user_id=self._user_id,
                session_id=self._session_id,
                agent_id=name if name in self._sub_agents else None,
                input=_compact(inputs),
                metadata=self._meta(run_id, metadata),
                capture=self._capture,
            )
        elif name in self._sub_agents:
            span = AgentSpawn(
                name,
                input=_compact(inputs),
                metadata=self._meta(run_id, metadata),
                capture=self._capture,
            )
        else:
            self._put(run_id, _Run(parent))
            return
        self._put(run_id, _Run(span._begin(parent), span))

    @guarded
    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is not None and isinstance(run.span, (Trace, AgentSpawn)):
            run.span.set_output(_compact(outputs))
            run.span._end(None)

    @guarded
    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is not None and isinstance(run.span, (Trace, AgentSpawn)):
            run.span._end(error)

    @guarded
    def on_agent_action(
        self,
        action: AgentAction,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        with within(self._span_of(run_id)):
            decision(
                "call_tool",
                tools=[action.tool],
                reasoning=action.log or None,
                metadata=self._meta(run_id, None),
                capture=self._capture,
            )

    @guarded
    def on_agent_finish(
        self,
        finish: AgentFinish,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        with within(self._span_of(run_id)):
            decision(
                "finish",
                reasoning=finish.log or None,
                metadata=self._meta(run_id, None),
                capture=self._capture,
            )

    # -- models ------------------------------------------------------------

    @guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        msgs = [[_message_dict(m) for m in batch] for batch in messages]
        self._model_start(
            serialized, run_id, parent_run_id, metadata, kwargs, messages=_one_or_all(msgs)
        )

    @guarded
    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(
            serialized, run_id, parent_run_id, metadata, kwargs, prompt=_one_or_all(prompts)
        )

    def _model_start(
        self,
        serialized: Optional[dict[str, Any]],
        run_id: UUID,
        parent_run_id: Optional[UUID],
        metadata: Optional[dict[str, Any]],
        kwargs: dict[str, Any],
        *,
        messages: Any = None,
        prompt: Any = None,
    ) -> None:
        md = metadata or {}
        inv = kwargs.get("invocation_params") or {}
        model = (
            md.get("ls_model_name")
            or inv.get("model")
            or inv.get("model_name")
            or _run_name(serialized, kwargs, "unknown")
        )
        provider = md.get("ls_provider")
        call = LlmCall(
            str(model),
            str(provider) if provider else None,
            params=_params(inv, md) or None,
            messages=messages,
            prompt=prompt,
            metadata=self._meta(run_id, metadata),
            capture=self._capture,
        )
        self._put(run_id, _Run(call._begin(self._span_of(parent_run_id)), call))

    @guarded
    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is None or not isinstance(run.span, LlmCall):
            return
        call = run.span
        gens = response.generations[0] if response.generations else []
        gen = gens[0] if gens else None
        message = getattr(gen, "message", None)
        llm_output = response.llm_output or {}
        tokens_in, tokens_out = _usage(message, llm_output)
        tool_calls = list(getattr(message, "tool_calls", None) or [])
        names = [str(tc.get("name")) for tc in tool_calls]
        info = getattr(gen, "generation_info", None) or {}
        meta = getattr(message, "response_metadata", None) or {}
        finish = meta.get("finish_reason") or meta.get("stop_reason") or info.get("finish_reason")
        version = meta.get("model_name") or meta.get("model") or llm_output.get("model_name")
        completion: Any = None
        if message is not None:
            completion = _message_dict(message)
        elif gen is not None:
            completion = gen.text
        call.record(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            finish_reason=str(finish) if finish else None,
            model_version=str(version) if version else None,
            tool_calls_requested=names or None,
            completion=completion,
        )
        call._end(None)
        if names:
            text = getattr(message, "content", None)
            tool_decision(
                run.ctx,
                names,
                [tc.get("id") for tc in tool_calls],
                reasoning=text or None,
                metadata=self._meta(run_id, None),
                capture=self._capture,
            )

    @guarded
    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is not None and isinstance(run.span, LlmCall):
            run.span._end(error)

    # -- tools -------------------------------------------------------------

    @guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        inputs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        parent = self._span_of(parent_run_id)
        run = _Run(
            parent.child() if parent is not None else SpanContext.new_trace(),
            name=_run_name(serialized, kwargs, "tool"),
            args=inputs if inputs is not None else {"input": input_str},
            metadata=self._meta(run_id, metadata, tool_call_id=kwargs.get("tool_call_id")),
        )
        self._check_policy(run)
        self._put(run_id, run)

    def _check_policy(self, run: _Run) -> None:
        """The policy check before a tool runs, as ``@audit.tool`` does it:
        raises ToolBlocked (recorded with the tool's span) when a rule
        blocks the call or its approval is denied. Approvers are asked
        synchronously here (LangChain calls this hook inline)."""
        log = STATE.log
        if log is None:
            return
        with self._lock:
            if self._gates_log is not log:
                self._gates = {}
                self._gates_log = log
            if run.name not in self._gates:
                self._gates[run.name] = log.gate(run.name)
            gate = self._gates[run.name]
        if gate is None:
            return
        args = run.args
        if not (isinstance(args, dict) and all(isinstance(k, str) for k in args)):
            args = {"input": args}
        decision = log.pre_check(gate, run.ctx, run.name, (), 0, None, (), args)
        if decision is not None:
            site = CallSite(None, self._capture, run.metadata, None, otel_ids())
            enforce_sync(log, decision, run.ctx, site)

    @guarded
    def on_tool_end(
        self,
        output: Any,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is None:
            return
        if isinstance(output, ToolMessage):
            result: Any = output.content
            if output.artifact is not None:
                result = {"content": output.content, "artifact": output.artifact}
            if output.status == "error":
                # A handled failure (ToolException with handle_tool_error,
                # a validation error): the model gets the message back.
                self._tool_call(run, "error", {"error": {"message": output.content}})
                return
        else:
            result = output
        self._tool_call(run, "ok", {"result": result})

    @guarded
    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is not None:
            self._tool_call(run, status_of(error), {"error": _error(error)}, _qualname(error))

    def _tool_call(
        self,
        run: _Run,
        status: str,
        outcome: dict[str, Any],
        error_type: Optional[str] = None,
    ) -> None:
        fields: dict[str, Any] = {
            "tool": {"name": run.name},
            "result_status": status,
            "duration_ms": _duration_ms(run.t0),
        }
        if error_type is not None:
            fields["error_type"] = error_type
        _common(fields, None, None, run.metadata, self._capture)
        _emit("tool_call", run.ctx, fields, {"args": run.args, **outcome}, run.start_ns)

    # -- retrievers --------------------------------------------------------

    @guarded
    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        tags: Optional[list[str]] = None,
        metadata: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        md = metadata or {}
        source = md.get("ls_vector_store_provider") or _run_name(
            serialized, kwargs, md.get("ls_retriever_name") or "retriever"
        )
        parent = self._span_of(parent_run_id)
        self._put(
            run_id,
            _Run(
                parent.child() if parent is not None else SpanContext.new_trace(),
                name=str(source),
                args=query,
                metadata=self._meta(run_id, metadata),
            ),
        )

    @guarded
    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is None:
            return
        docs: list[dict[str, Any]] = []
        contents: list[dict[str, Any]] = []
        for i, d in enumerate(documents):
            text = d.page_content
            doc_id = d.id or d.metadata.get("id") or d.metadata.get("source") or f"#{i}"
            digest = "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
            doc: dict[str, Any] = {"id": str(doc_id), "hash": digest}
            score = d.metadata.get("score")
            if isinstance(score, (int, float)) and not isinstance(score, bool):
                doc["score"] = score
            docs.append(doc)
            contents.append({"id": str(doc_id), "content": text, "metadata": d.metadata})
        self._retrieval(run, "ok", docs, {"documents": contents or None})

    @guarded
    def on_retriever_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: Optional[UUID] = None,
        **kwargs: Any,
    ) -> None:
        run = self._pop(run_id)
        if run is not None:
            self._retrieval(run, status_of(error), [], {"error": _error(error)}, _qualname(error))

    def _retrieval(
        self,
        run: _Run,
        status: str,
        docs: list[dict[str, Any]],
        outcome: dict[str, Any],
        error_type: Optional[str] = None,
    ) -> None:
        fields: dict[str, Any] = {
            "source": run.name,
            "result_status": status,
            "duration_ms": _duration_ms(run.t0),
        }
        if docs:
            fields["retrieved_docs"] = docs
        if error_type is not None:
            fields["error_type"] = error_type
        _common(fields, None, None, run.metadata, self._capture)
        _emit("retrieval", run.ctx, fields, {"query": run.args, **outcome}, run.start_ns)


def _run_name(serialized: Optional[dict[str, Any]], kwargs: dict[str, Any], default: str) -> str:
    """A run's name: ``run_name`` / the runnable's name, else the
    serialized class name."""
    name = kwargs.get("name")
    if name:
        return str(name)
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return default


def _one_or_all(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else items


def _message_dict(m: Any) -> Any:
    """A chat message as a compact dict (role, content, tool calls)."""
    if not isinstance(m, BaseMessage):
        return m
    out: dict[str, Any] = {"role": m.type, "content": m.content}
    if m.name:
        out["name"] = m.name
    tool_calls = getattr(m, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [
            {"id": tc.get("id"), "name": tc.get("name"), "args": tc.get("args")}
            for tc in tool_calls
        ]
    if isinstance(m, ToolMessage):
        out["tool_call_id"] = m.tool_call_id
        if m.status != "success":
            out["status"] = m.status
    return out


def _compact(value: Any, depth: int = 0) -> Any:
    """A chain's inputs or outputs with its chat messages as compact dicts
    (a LangGraph state is mostly messages; their full dump is noisy)."""
    if isinstance(value, BaseMessage):
        return _message_dict(value)
    if depth >= 3:
        return value
    if isinstance(value, dict):
        return {k: _compact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compact(v, depth + 1) for v in value]
    return value


def _params(inv: dict[str, Any], md: dict[str, Any]) -> dict[str, Any]:
    """Generation parameters from the invocation params, LangSmith's
    standard params filling the gaps, plus the names of the tools offered."""
    params = {k: inv[k] for k in _PARAMS if inv.get(k) is not None}
    for ls_key, key in _LS_PARAMS:
        if key not in params and md.get(ls_key) is not None:
            params[key] = md[ls_key]
    tools = tool_names(inv.get("tools"))
    if tools:
        params["tools"] = tools
    return params


def _usage(message: Any, llm_output: dict[str, Any]) -> tuple[Optional[int], Optional[int]]:
    """Input and output tokens: the message's ``usage_metadata``, else the
    provider's ``token_usage`` / ``usage`` in ``llm_output``."""
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return usage.get("input_tokens"), usage.get("output_tokens")
    raw = llm_output.get("token_usage") or llm_output.get("usage")
    if isinstance(raw, dict):
        tokens_in = raw.get("input_tokens", raw.get("prompt_tokens"))
        tokens_out = raw.get("output_tokens", raw.get("completion_tokens"))
        return (
            int(tokens_in) if tokens_in is not None else None,
            int(tokens_out) if tokens_out is not None else None,
        )
    return None, None


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": _qualname(exc), "message": _message(exc)}
