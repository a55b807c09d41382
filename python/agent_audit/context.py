"""Trace context that follows the agent: the current span lives in a
``contextvars.ContextVar``, so it flows through nested calls, ``asyncio``
tasks (``gather``, ``create_task`` copy the context) and, with
:func:`run_in_context` / :func:`wrap_executor`, into thread pools.

Generators never hold a ``Token`` across a ``yield``: the previous value is
read before each step and set back after it, so a generator resumed in
another context never fails with "Token was created in a different
Context".
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, Callable, Optional, TypeVar

from ._native import SpanContext

T = TypeVar("T")

_current: contextvars.ContextVar[Optional[SpanContext]] = contextvars.ContextVar(
    "agent_audit_current_span", default=None
)

__all__ = [
    "ContextExecutor",
    "current_span",
    "run_in_context",
    "wrap_executor",
]


def current_span() -> Optional[SpanContext]:
    """The span of the innermost trace, tool, LLM call or sub-agent, or None."""
    return _current.get()


def run_in_context(fn: Callable[..., T]) -> Callable[..., T]:
    """Binds ``fn`` to the caller's current context: wherever the result is
    called (another thread, a pool worker), ``fn`` sees the span that was
    current here. Each call runs in its own copy, so concurrent calls never
    share one context object.

    ``executor.submit(run_in_context(fn), *args)``
    """
    captured = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> T:
        return captured.copy().run(fn, *args, **kwargs)

    return bound


class ContextExecutor(Executor):
    """An executor that runs every task in the context it was submitted
    from; see :func:`wrap_executor`."""

    def __init__(self, inner: Executor) -> None:
        self._inner = inner

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._inner.submit(contextvars.copy_context().run, fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: Optional[float] = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        return self._inner.map(run_in_context(fn), *iterables, timeout=timeout, chunksize=chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def wrap_executor(executor: Executor) -> ContextExecutor:
    """Wraps a ``ThreadPoolExecutor`` (or any executor) so ``submit`` and
    ``map`` carry the caller's trace context into the worker."""
    return ContextExecutor(executor)


def otel_ids() -> Optional[tuple[str, str]]:
    """The active OpenTelemetry trace and span ids (hex), if the process
    uses OpenTelemetry and a valid span is current. Never imports it."""
    mod = sys.modules.get("opentelemetry.trace")
    if mod is None:
        return None
    try:
        ctx = mod.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    except Exception:
        return None
