"""Traces, model calls, sub-agents and the point events (decision, memory,
retrieval, guardrail, human review).

Each is emitted through the native log's generic ``emit`` with the current
span as context. Invalid arguments raise ``InvalidEventError`` (API
misuse); a missing or closed log, or a full queue, is counted in
``stats()["not_logged"]`` and never raises.
"""

from __future__ import annotations

import functools
import inspect
import time
from time import perf_counter_ns
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar, Union

from ._native import AuditError, InvalidEventError, SpanContext
from ._state import STATE
from ._tool import status_of
from .context import _current, otel_ids

F = TypeVar("F", bound=Callable[..., Any])
_MISSING: Any = object()


def _common(
    fields: dict[str, Any],
    risk_flags: Optional[list[str]],
    risk_score: Optional[int],
    metadata: Optional[dict[str, Any]],
    capture: Optional[str],
) -> dict[str, Any]:
    if risk_flags or risk_score:
        fields["risk"] = {"flags": list(risk_flags or []), "score": int(risk_score or 0)}
    if metadata:
        fields["metadata"] = metadata
    if capture is not None:
        fields["capture"] = capture
    otel = otel_ids()
    if otel is not None:
        fields["otel"] = {"trace_id": otel[0], "span_id": otel[1]}
    return fields


def _emit(
    kind: str,
    ctx: Optional[SpanContext],
    fields: dict[str, Any],
    payload: Optional[dict[str, Any]] = None,
    start_ns: Optional[int] = None,
    *,
    strict: bool = True,
) -> bool:
    """Emits one event. ``strict``: invalid events raise (the caller's
    arguments are wrong); otherwise nothing raises."""
    log = STATE.log
    if log is None:
        STATE.not_logged += 1
        return False
    try:
        queued = log.emit(kind, ctx, fields, payload, start_ns)
    except InvalidEventError:
        STATE.not_logged += 1
        if strict:
            raise
        return False
    except Exception:
        STATE.not_logged += 1
        return False
    if not queued:
        STATE.not_logged += 1
    return queued


def _point_ctx() -> Optional[SpanContext]:
    parent = _current.get()
    return parent.child() if parent is not None else None


def _duration_ms(t0: int) -> float:
    return (perf_counter_ns() - t0) / 1e6


class _Span:
    """Shared enter/exit plumbing of span-like context managers: makes its
    span current while open and restores the previous one explicitly.

    Integrations whose start and end arrive in different callbacks, maybe
    on different threads (``agent_audit.langchain``, ``agent_audit.openai``
    streams), use the detached pair instead: ``_begin(parent)`` starts the
    span under an explicit parent and ``_end(exc)`` records it; neither
    touches the current span.
    """

    _ctx: Optional[SpanContext]
    _prev: Optional[SpanContext]

    def _start(self, ctx: SpanContext) -> None:
        self._ctx = ctx
        self._start_ns = time.time_ns()
        self._t0 = perf_counter_ns()

    def _push(self) -> None:
        self._prev = _current.get()
        _current.set(self._ctx)

    def _close(self) -> None:
        _current.set(self._prev)

    @property
    def context(self) -> Optional[SpanContext]:
        """The span's context (trace_id, span_id, parent_span_id)."""
        return self._ctx

    @property
    def trace_id(self) -> Optional[str]:
        return self._ctx.trace_id if self._ctx is not None else None

    @property
    def span_id(self) -> Optional[str]:
        return self._ctx.span_id if self._ctx is not None else None


def _outcome_of(exc: Optional[BaseException]) -> str:
    if exc is None:
        return "completed"
    status = status_of(exc)
    return {"error": "failed", "cancelled": "cancelled", "timeout": "timeout"}.get(status, status)


_TRACE_FIELDS = (
    "authorization_method",
    "data_classification",
    "environment",
    "system_prompt_version",
)


class Trace(_Span):
    """One agent task: ``trace_start`` on entry, ``trace_end`` (outcome
    completed | failed | cancelled | timeout, duration, risk) on exit. A
    context manager, an async context manager and a decorator."""

    def __init__(
        self,
        name: str,
        *,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        caller: Optional[str] = None,
        retention_class: Optional[str] = None,
        input: Any = _MISSING,
        metadata: Optional[dict[str, Any]] = None,
        risk_flags: Optional[list[str]] = None,
        capture: Optional[str] = None,
        **fields: Any,
    ) -> None:
        unknown = set(fields) - set(_TRACE_FIELDS)
        if unknown:
            raise InvalidEventError(f"unknown trace field(s): {', '.join(sorted(unknown))}")
        self.name = name
        self._principal = {
            "user_id": user_id,
            "session_id": session_id,
            "agent_id": agent_id,
            "tenant_id": tenant_id,
            "caller": caller,
            "retention_class": retention_class,
        }
        self._input = input
        self._metadata = metadata
        self._capture = capture
        self._fields = fields
        self._flags: list[str] = list(risk_flags or [])
        self._score = 0
        self._output: Any = _MISSING
        self._ctx = None
        self._prev = None

    def _settings(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self._principal.items() if v is not None},
            "metadata": self._metadata,
            "risk_flags": self._flags or None,
            "capture": self._capture,
            **self._fields,
        }

    def flag(self, *flags: str, score: Optional[int] = None) -> None:
        """Adds risk flags (and raises the risk score) of the trace."""
        self._flags.extend(flags)
        if score is not None:
            self._score = max(self._score, int(score))

    def set_output(self, output: Any) -> None:
        """The task's output, recorded (redacted) in ``trace_end``."""
        self._output = output

    def _begin(self, parent: Optional[SpanContext]) -> SpanContext:
        """Starts the trace (records ``trace_start``) without making it
        current; ``parent`` is the span it was started from, if any."""
        ctx = SpanContext.new_trace(**self._principal)
        meta = dict(self._metadata or {})
        if parent is not None:
            meta.setdefault("parent_trace_id", parent.trace_id)
            meta.setdefault("parent_span_id", parent.span_id)
        fields = _common(
            {"task_kind": self.name, **self._fields}, None, None, meta or None, self._capture
        )
        payload = None if self._input is _MISSING else {"input": self._input}
        self._start(ctx)
        _emit("trace_start", ctx, fields, payload, self._start_ns)
        return ctx

    def __enter__(self) -> Trace:
        self._begin(_current.get())
        self._push()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._close()
        self._end(exc)

    def _end(self, exc: Optional[BaseException]) -> None:
        """Records ``trace_end``; ``exc`` is what ended the task, if anything."""
        fields: dict[str, Any] = {
            "outcome": _outcome_of(exc),
            "duration_ms": _duration_ms(self._t0),
        }
        if exc is not None:
            fields["error_type"] = _qualname(exc)
        payload: dict[str, Any] = {}
        if self._output is not _MISSING:
            payload["output"] = self._output
        if exc is not None:
            payload["error"] = {"type": _qualname(exc), "message": _message(exc)}
        _common(fields, self._flags, self._score, None, self._capture)
        _emit("trace_end", self._ctx, fields, payload or None, strict=False)

    async def __aenter__(self) -> Trace:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: F) -> F:
        """As a decorator: every call of ``fn`` is one trace whose input is
        the call's arguments."""
        settings = self._settings()
        name = self.name
        try:
            sig: Optional[inspect.Signature] = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Trace:
            inp: Any = {"args": args, "kwargs": kwargs}
            if sig is not None:
                try:
                    inp = dict(sig.bind(*args, **kwargs).arguments)
                except TypeError:
                    pass
            return Trace(name, input=inp, **settings)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                async with make(args, kwargs) as t:
                    result = await fn(*args, **kwargs)
                    t.set_output(result)
                    return result

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with make(args, kwargs) as t:
                result = fn(*args, **kwargs)
                t.set_output(result)
                return result

        return wrapper  # type: ignore[return-value]


def trace(name: Union[str, Callable[..., Any], None] = None, **kwargs: Any) -> Any:
    """Starts an agent task: ``with trace("support", user_id=..., input=ticket)
    as t:``, ``async with trace(...)``, ``@trace("support")`` or bare
    ``@trace``. See :class:`Trace` for the options."""
    if callable(name):
        return Trace(getattr(name, "__name__", "task"), **kwargs)(name)
    return Trace(name or "task", **kwargs)


def _qualname(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<str() failed>"


class LlmCall(_Span):
    """One model call, recorded as ``llm_call`` when the block ends; use
    :meth:`record` inside it to add token counts, cost and content."""

    def __init__(
        self,
        model: str,
        provider: Optional[str] = None,
        *,
        model_version: Optional[str] = None,
        params: Optional[dict[str, Any]] = None,
        messages: Any = None,
        prompt: Any = None,
        system_prompt_version: Optional[str] = None,
        metadata: Optional[dict[str, Any]] = None,
        risk_flags: Optional[list[str]] = None,
        capture: Optional[str] = None,
    ) -> None:
        self._model = {"name": model, "version": model_version, "provider": provider}
        self._fields: dict[str, Any] = {
            "params": params,
            "system_prompt_version": system_prompt_version,
        }
        self._payload: dict[str, Any] = {"messages": messages, "prompt": prompt}
        self._metadata = metadata
        self._flags = risk_flags
        self._capture = capture
        self._ctx = None
        self._prev = None

    def record(
        self,
        *,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[float] = None,
        finish_reason: Optional[str] = None,
        model_version: Optional[str] = None,
        tool_calls_requested: Optional[list[str]] = None,
        params: Optional[dict[str, Any]] = None,
        messages: Any = None,
        prompt: Any = None,
        completion: Any = None,
        reasoning: Any = None,
    ) -> None:
        """Adds what the call returned. Only the arguments given change."""
        for key, value in (
            ("input_tokens", input_tokens),
            ("output_tokens", output_tokens),
            ("cost_usd", cost_usd),
            ("finish_reason", finish_reason),
            ("tool_calls_requested", tool_calls_requested),
            ("params", params),
        ):
            if value is not None:
                self._fields[key] = value
        if model_version is not None:
            self._model["version"] = model_version
        for key, value in (
            ("messages", messages),
            ("prompt", prompt),
            ("completion", completion),
            ("reasoning", reasoning),
        ):
            if value is not None:
                self._payload[key] = value

    def _begin(self, parent: Optional[SpanContext]) -> SpanContext:
        """Starts the call under ``parent`` without making it current."""
        ctx = parent.child() if parent is not None else SpanContext.new_trace()
        self._start(ctx)
        return ctx

    def __enter__(self) -> LlmCall:
        self._begin(_current.get())
        self._push()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._close()
        self._end(exc)

    def _end(self, exc: Optional[BaseException]) -> None:
        """Records the ``llm_call``; ``exc`` is the call's failure, if any."""
        model = {k: v for k, v in self._model.items() if v is not None}
        fields = {k: v for k, v in self._fields.items() if v is not None}
        fields["model"] = model
        fields["result_status"] = "ok" if exc is None else status_of(exc)
        fields["duration_ms"] = _duration_ms(self._t0)
        payload = dict(self._payload)
        if exc is not None:
            fields["error_type"] = _qualname(exc)
            payload["error"] = {"type": _qualname(exc), "message": _message(exc)}
        _common(fields, self._flags, None, self._metadata, self._capture)
        _emit("llm_call", self._ctx, fields, payload, self._start_ns, strict=exc is None)

    async def __aenter__(self) -> LlmCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def llm_call(model: str, provider: Optional[str] = None, **kwargs: Any) -> LlmCall:
    """``with llm_call(model="claude-opus", provider="anthropic") as call:
    ...; call.record(input_tokens=1420, output_tokens=312)``. Sync or
    async context manager. See :class:`LlmCall`."""
    return LlmCall(model, provider, **kwargs)


class AgentSpawn(_Span):
    """A sub-agent: ``agent_spawn`` is recorded when the block ends, and
    every event inside it nests under its span and is attributed to the
    child agent's id."""

    def __init__(
        self,
        child_agent_id: str,
        *,
        task_kind: Optional[str] = None,
        input: Any = None,
        metadata: Optional[dict[str, Any]] = None,
        risk_flags: Optional[list[str]] = None,
        capture: Optional[str] = None,
    ) -> None:
        self.child_agent_id = child_agent_id
        self._task_kind = task_kind
        self._input = input
        self._output: Any = None
        self._metadata = metadata
        self._flags = risk_flags
        self._capture = capture
        self._ctx = None
        self._prev = None

    def set_output(self, output: Any) -> None:
        """What the child agent returned."""
        self._output = output

    def _begin(self, parent: Optional[SpanContext]) -> SpanContext:
        """Starts the child agent under ``parent`` without making it current."""
        if parent is not None:
            ctx = parent.child_agent(self.child_agent_id)
        else:
            ctx = SpanContext.new_trace(agent_id=self.child_agent_id)
        self._start(ctx)
        return ctx

    def __enter__(self) -> AgentSpawn:
        self._begin(_current.get())
        self._push()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._close()
        self._end(exc)

    def _end(self, exc: Optional[BaseException]) -> None:
        """Records the ``agent_spawn``; ``exc`` is the child's failure, if any."""
        fields: dict[str, Any] = {
            "child_agent_id": self.child_agent_id,
            "result_status": "ok" if exc is None else status_of(exc),
            "duration_ms": _duration_ms(self._t0),
        }
        if self._task_kind is not None:
            fields["task_kind"] = self._task_kind
        payload: dict[str, Any] = {"input": self._input, "output": self._output}
        if exc is not None:
            fields["error_type"] = _qualname(exc)
            payload["error"] = {"type": _qualname(exc), "message": _message(exc)}
        _common(fields, self._flags, None, self._metadata, self._capture)
        _emit("agent_spawn", self._ctx, fields, payload, self._start_ns, strict=exc is None)

    async def __aenter__(self) -> AgentSpawn:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def agent_spawn(child_agent_id: str, **kwargs: Any) -> AgentSpawn:
    """``with agent_spawn("researcher-v1", task_kind="research"):`` — a
    child agent; see :class:`AgentSpawn`."""
    return AgentSpawn(child_agent_id, **kwargs)


def decision(
    decision: str,
    *,
    tools: Optional[list[str]] = None,
    confidence: Optional[float] = None,
    reasoning: Any = None,
    alternatives: Any = None,
    risk_flags: Optional[list[str]] = None,
    risk_score: Optional[int] = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> bool:
    """Records what the agent chose to do (``call_tools``, ``escalate`` ...)."""
    fields: dict[str, Any] = {"decision": decision}
    if tools:
        fields["tools"] = list(tools)
    if confidence is not None:
        fields["confidence"] = confidence
    _common(fields, risk_flags, risk_score, metadata, capture)
    return _emit(
        "decision", _point_ctx(), fields, {"reasoning": reasoning, "alternatives": alternatives}
    )


def memory(
    operation: str,
    *,
    store: Optional[str] = None,
    key: Optional[str] = None,
    content: Any = None,
    risk_flags: Optional[list[str]] = None,
    risk_score: Optional[int] = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> bool:
    """Records a read, write or delete of agent memory."""
    fields: dict[str, Any] = {"operation": operation}
    if store is not None:
        fields["store"] = store
    if key is not None:
        fields["key"] = key
    _common(fields, risk_flags, risk_score, metadata, capture)
    return _emit("memory", _point_ctx(), fields, {"content": content})


def retrieval(
    query: Any = None,
    *,
    source: Optional[str] = None,
    documents: Optional[list[Any]] = None,
    duration_ms: Optional[float] = None,
    status: Optional[str] = None,
    risk_flags: Optional[list[str]] = None,
    risk_score: Optional[int] = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> bool:
    """Records retrieved documents. ``documents`` are ids (str) or dicts
    with ``id`` and optionally ``hash``, ``score`` and ``content`` (the
    content goes to the erasable payload)."""
    fields: dict[str, Any] = {}
    docs: list[dict[str, Any]] = []
    contents: list[Any] = []
    for d in documents or []:
        if isinstance(d, str):
            docs.append({"id": d})
        elif isinstance(d, dict) and "id" in d:
            docs.append({k: d[k] for k in ("id", "hash", "score") if d.get(k) is not None})
            if d.get("content") is not None:
                contents.append({"id": d["id"], "content": d["content"]})
        else:
            raise InvalidEventError("each document must be an id or a dict with an 'id'")
    if source is not None:
        fields["source"] = source
    if docs:
        fields["retrieved_docs"] = docs
    if duration_ms is not None:
        fields["duration_ms"] = duration_ms
    if status is not None:
        fields["result_status"] = status
    _common(fields, risk_flags, risk_score, metadata, capture)
    return _emit("retrieval", _point_ctx(), fields, {"query": query, "documents": contents or None})


def guardrail(
    id: Optional[str] = None,
    verdict: Optional[str] = None,
    *,
    score: Optional[float] = None,
    version: Optional[str] = None,
    verdicts: Optional[list[dict[str, Any]]] = None,
    target: Optional[str] = None,
    action: Optional[str] = None,
    risk_flags: Optional[list[str]] = None,
    risk_score: Optional[int] = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> bool:
    """Records guardrail verdicts: one (``id``, ``verdict``, ``score``) or
    several (``verdicts=[{"id", "verdict", "score", "version"}, ...]``)."""
    vs = list(verdicts or [])
    if id is not None or verdict is not None:
        one: dict[str, Any] = {"id": id, "verdict": verdict}
        if score is not None:
            one["score"] = score
        if version is not None:
            one["version"] = version
        vs.insert(0, one)
    if not vs:
        raise InvalidEventError("guardrail needs id and verdict, or verdicts")
    fields: dict[str, Any] = {"guardrails": vs}
    if target is not None:
        fields["target"] = target
    if action is not None:
        fields["action"] = action
    _common(fields, risk_flags, risk_score, metadata, capture)
    return _emit("guardrail", _point_ctx(), fields)


def human_review(
    decision: str,
    *,
    reviewer: Optional[str] = None,
    subject_span_id: Optional[str] = None,
    reason: Any = None,
    wait_ms: Optional[float] = None,
    rule_id: Optional[str] = None,
    decided_at: Optional[str] = None,
    risk_flags: Optional[list[str]] = None,
    risk_score: Optional[int] = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> bool:
    """Records a person's approval, denial or edit of an action."""
    fields: dict[str, Any] = {"decision": decision}
    for k, v in (
        ("reviewer", reviewer),
        ("subject_span_id", subject_span_id),
        ("wait_ms", wait_ms),
        ("rule_id", rule_id),
        ("decided_at", decided_at),
    ):
        if v is not None:
            fields[k] = v
    _common(fields, risk_flags, risk_score, metadata, capture)
    return _emit("human_review", _point_ctx(), fields, {"reason": reason})


def current_trace() -> Optional[SpanContext]:
    """The current span context (``trace_id``, ``span_id``,
    ``parent_span_id``), or None outside any trace."""
    return _current.get()


__all__ = [
    "AgentSpawn",
    "AuditError",
    "LlmCall",
    "Trace",
    "agent_spawn",
    "current_trace",
    "decision",
    "guardrail",
    "human_review",
    "llm_call",
    "memory",
    "retrieval",
    "trace",
]
