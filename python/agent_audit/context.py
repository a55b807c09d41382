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


# The OpenTelemetry API's own context variable and span key, looked up
# once the process has imported ``opentelemetry.trace``: (the globals of
# ``opentelemetry.trace``, its get_current_span, the globals of
# ``opentelemetry.context``, its runtime context, the ``get`` of the
# runtime's ContextVar, the span key), or None where that runtime is not
# the standard contextvars one. See :func:`otel_ids`; the native
# ``ToolHooks`` reads the same tuple.
_otel_fast: Optional[tuple[dict[str, Any], Any, dict[str, Any], Any, Any, str]] = None
_otel_probed: Any = None


def _otel_probe(mod: Any) -> None:
    """Finds OpenTelemetry's context variable (only in modules already
    imported, never importing any)."""
    global _otel_fast, _otel_probed
    try:
        gcs = mod.get_current_span
        cmod = sys.modules["opentelemetry.context"]
        runtime = cmod._RUNTIME_CONTEXT
        cvc = sys.modules["opentelemetry.context.contextvars_context"]
        var = runtime._current_context
        key = sys.modules["opentelemetry.trace.propagation"]._SPAN_KEY
    except (KeyError, AttributeError):
        if hasattr(mod, "get_current_span"):  # not half-imported: give up on it
            _otel_probed = mod
        return
    _otel_probed = mod
    if (
        type(runtime) is cvc.ContextVarsRuntimeContext
        and isinstance(var, contextvars.ContextVar)
        and isinstance(key, str)
    ):
        _otel_fast = (vars(mod), gcs, vars(cmod), runtime, var.get, key)


def otel_ids() -> Optional[tuple[str, str]]:
    """The active OpenTelemetry trace and span ids (hex), if the process
    uses OpenTelemetry and a valid span is current. Never imports it.

    With OpenTelemetry's standard runtime context, a context that holds
    no span (the usual case outside an OTel span) is answered from its
    context variable, without the API's call chain; any other case asks
    ``opentelemetry.trace.get_current_span()``."""
    fast = _otel_fast
    if fast is not None:
        trace_globals, gcs, context_globals, runtime, var_get, key = fast
        try:
            if (
                trace_globals["get_current_span"] is gcs
                and context_globals["_RUNTIME_CONTEXT"] is runtime
            ):
                current = var_get()
                if not current or current.get(key) is None:
                    return None
        except KeyError:
            pass
    mod = sys.modules.get("opentelemetry.trace")
    if mod is None:
        return None
    if fast is None and _otel_probed is not mod:
        _otel_probe(mod)
    return _otel_span_ids(mod)


def _otel_span_ids(mod: Any) -> Optional[tuple[str, str]]:
    try:
        ctx = mod.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))
    except Exception:
        return None
