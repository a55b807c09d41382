"""What the framework integrations (``agent_audit.langchain``,
``agent_audit.openai``) share: the names of the tools offered to a model,
recording the tool calls it asks for as a ``decision`` under the model
call's span, and keeping logging trouble away from the host."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable, Optional, TypeVar

from ._native import SpanContext
from ._spans import decision
from ._state import STATE
from .context import _current
from .errors import ToolBlocked

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def within(ctx: Optional[SpanContext]) -> Iterator[None]:
    """Makes ``ctx`` the current span for a synchronous block, so the
    point-event functions (``decision`` ...) nest under it."""
    token = _current.set(ctx)
    try:
        yield
    finally:
        _current.reset(token)


def guarded(fn: F) -> F:
    """An integration hook that never raises into the host: a failure
    while recording counts as an event not logged (``stats()``). The one
    exception is a policy decision: :class:`ToolBlocked` stops the tool."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ToolBlocked:
            raise
        except Exception:
            STATE.not_logged += 1
            return None

    return wrapper  # type: ignore[return-value]


def tool_decision(
    llm_ctx: Optional[SpanContext],
    tools: Sequence[str],
    call_ids: Sequence[Optional[str]],
    *,
    reasoning: Any = None,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> None:
    """Records the model's choice to call ``tools`` as a ``decision``
    (``call_tools``) nested under the model call that made it; the tool
    call ids go to the metadata, so each ``tool_call`` can be matched to
    the decision that asked for it."""
    if not tools:
        return
    meta = dict(metadata or {})
    ids = [i for i in call_ids if i]
    if ids:
        meta["tool_call_ids"] = ids
    with within(llm_ctx):
        decision(
            "call_tools",
            tools=list(tools),
            reasoning=reasoning or None,
            metadata=meta or None,
            capture=capture,
        )


def tool_name(tool: Any) -> Optional[str]:
    """The name of a tool as offered to a model in OpenAI's format (also
    what LangChain binds): ``{"type": "function", "function": {"name"}}``,
    ``{"type": "custom", "custom": {"name"}}``, ``{"type": "function",
    "name"}`` (Responses API), or a built-in tool's ``type``."""
    if not isinstance(tool, dict):
        return None
    for key in ("function", "custom"):
        inner = tool.get(key)
        if isinstance(inner, dict) and inner.get("name"):
            return str(inner["name"])
    name = tool.get("name") or tool.get("type")
    return str(name) if name else None


def tool_names(tools: Any) -> Optional[list[str]]:
    """The names of the tools offered, or None when there are none."""
    if not isinstance(tools, (list, tuple)):
        return None
    names = [n for n in (tool_name(t) for t in tools) if n]
    return names or None
