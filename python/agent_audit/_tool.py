"""``@tool``: records every call of a function as a ``tool_call`` event.

The signature is read once, at decoration time, into a native
:class:`ToolSpec` (name, version, parameter names, capture mode, flags).
A decorated sync function is a native :class:`ToolFunction`: its call is
one native call that reads the log, opens the tool's span in the context
variable, times the call, sets the caller's span back, copies the
arguments (by parameter name) and the result or exception into Rust and
queues the event. It carries the ``functools.wraps`` attributes, binds as
a method and pickles by qualified name, as the function does. Calls that
need more (an ``audit_extra`` override, a tool a blocking policy rule can
match) go through :func:`_call_sync`. Async and generator tools run here,
with one native call per event. Logging trouble never reaches the caller.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from time import perf_counter_ns
from typing import Any, Callable, Optional, TypeVar, overload

from ._native import (
    AuditLog,
    ConfigError,
    SpanContext,
    ToolFunction,
    ToolGate,
    ToolHooks,
    ToolSpec,
)
from ._policy import CallSite, enforce_async, enforce_sync
from ._state import STATE
from .context import _current, otel_ids
from .errors import ToolBlocked

F = TypeVar("F", bound=Callable[..., Any])

_EXTRA_KEYS = frozenset({"name", "version", "capture", "metadata", "risk_flags"})
_TIMEOUTS: tuple[type[BaseException], ...] = tuple({TimeoutError, asyncio.TimeoutError})
_new_trace = SpanContext.new_trace


def status_of(exc: BaseException) -> str:
    """The ``result_status`` an exception stands for."""
    if isinstance(exc, ToolBlocked):
        return "blocked"
    if isinstance(exc, _TIMEOUTS):
        return "timeout"
    if isinstance(exc, Exception):
        return "error"
    # CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit.
    return "cancelled"


_HOOKS = ToolHooks(STATE, _current, otel_ids, status_of)


class _Spec:
    """What a decorated function's events need, computed once."""

    __slots__ = (
        "capture",
        "gate",
        "gate_log",
        "metadata",
        "name",
        "names",
        "native",
        "pop_extra",
        "risk_flags",
        "skip",
        "varargs",
        "version",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: Optional[str],
        version: Optional[str],
        capture: Optional[str],
        metadata: Optional[dict[str, Any]],
        risk_flags: Optional[list[str]],
    ) -> None:
        if capture is not None and capture not in ("hash", "redacted", "raw"):
            raise ConfigError(f"capture must be hash, redacted or raw, got {capture!r}")
        self.name = name or getattr(fn, "__name__", None) or repr(fn)
        self.version = version
        self.capture = capture
        self.metadata = metadata
        self.risk_flags = list(risk_flags) if risk_flags else None
        names: list[str] = []
        varargs: Optional[str] = None
        params: dict[str, inspect.Parameter] = {}
        try:
            params = dict(inspect.signature(fn).parameters)
        except (TypeError, ValueError):
            pass
        for p in params.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                names.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                varargs = p.name
        # Methods: `self` / `cls` is the object, not an argument.
        self.skip = 1 if names and names[0] in ("self", "cls") else 0
        self.names = tuple(names[self.skip :])
        self.varargs = varargs
        self.pop_extra = "audit_extra" not in params
        try:
            self.native = ToolSpec(
                self.name,
                version,
                self.names,
                self.skip,
                varargs,
                capture,
                metadata,
                self.risk_flags,
            )
        except TypeError as e:
            raise ConfigError(
                f"@tool: name and version must be str and risk_flags a list of str ({e})"
            ) from e
        # The policy gate of this tool, for the log it was computed for:
        # None (no check needed) for every tool no blocking rule names.
        self.gate: Optional[ToolGate] = None
        self.gate_log: Optional[AuditLog] = None

    def needs_check(self, log: AuditLog, extra: Any) -> bool:
        """Whether calls need the policy check before they run (the only
        cost on the fast path: two identity tests)."""
        if self.gate_log is not log:
            self.gate = log.gate(self.name)
            self.gate_log = log
        return self.gate is not None or (extra is not None and "name" in extra)

    def site(self, extra: Any) -> tuple[str, Optional[ToolGate], CallSite]:
        """The name, gate and record fields of one call, after its
        ``audit_extra``."""
        log = self.gate_log
        if extra is None:
            name, version, capture, metadata, flags = (
                self.name,
                self.version,
                self.capture,
                self.metadata,
                self.risk_flags,
            )
        else:
            name, version, capture, metadata, flags = self.overrides(extra)
        gate = self.gate if name == self.name or log is None else log.gate(name)
        return name, gate, CallSite(version, capture, metadata, flags, otel_ids())

    def overrides(self, extra: Any) -> tuple[str, Optional[str], Optional[str], Any, Any]:
        """Name, version, capture, metadata and risk flags after a call's
        ``audit_extra``."""
        if not isinstance(extra, dict) or not set(extra) <= _EXTRA_KEYS:
            raise ConfigError(
                "audit_extra must be a dict with keys among " + ", ".join(sorted(_EXTRA_KEYS))
            )
        metadata = self.metadata
        if extra.get("metadata") is not None:
            metadata = {**(metadata or {}), **extra["metadata"]}
        flags = self.risk_flags
        if extra.get("risk_flags") is not None:
            flags = [*(flags or []), *extra["risk_flags"]]
        capture = extra.get("capture", self.capture)
        if capture is not None and capture not in ("hash", "redacted", "raw"):
            raise ConfigError(f"capture must be hash, redacted or raw, got {capture!r}")
        return (
            extra.get("name", self.name),
            extra.get("version", self.version),
            capture,
            metadata,
            flags,
        )


def _record(
    spec: _Spec,
    ctx: SpanContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    status: str,
    result: Any,
    error: Optional[BaseException],
    duration_ns: int,
    extra: Any,
) -> None:
    log = STATE.log
    if log is None:
        STATE.not_logged += 1
        return
    try:
        if extra is None:
            if error is None:
                queued = log.tool_ok(
                    spec.native, ctx, args, kwargs, result, duration_ns, otel_ids()
                )
            else:
                queued = log.tool_error(
                    spec.native, ctx, args, kwargs, status, error, duration_ns, otel_ids()
                )
        else:
            name, version, capture, metadata, flags = spec.overrides(extra)
            queued = log.tool_call(
                ctx,
                name,
                version,
                spec.names,
                spec.skip,
                spec.varargs,
                args,
                kwargs or None,
                status,
                result,
                error,
                duration_ns,
                capture,
                metadata,
                flags,
                otel_ids(),
            )
        if not queued:
            STATE.not_logged += 1
    except Exception:
        STATE.not_logged += 1


def _begin(
    spec: _Spec, log: AuditLog, kwargs: dict[str, Any]
) -> tuple[Any, Optional[SpanContext], SpanContext, bool]:
    """What every wrapper does first: takes ``audit_extra`` out of the
    keyword arguments (misuse raises here, before the tool runs), opens the
    call's span under the current one, and tells whether the policy must
    check the call before it runs. Returns (extra, parent, span, check)."""
    extra = kwargs.pop("audit_extra", None) if kwargs and spec.pop_extra else None
    if extra is not None:
        spec.overrides(extra)
    parent = _current.get()
    ctx = parent.child() if parent is not None else _new_trace()
    return extra, parent, ctx, spec.needs_check(log, extra)


def _end(
    spec: _Spec,
    ctx: SpanContext,
    parent: Optional[SpanContext],
    args: tuple[Any, ...],
    kwargs: Any,
    t0: int,
    extra: Any,
    result: Any = None,
    error: Optional[BaseException] = None,
) -> None:
    """What a sync or async call does last: the caller's span back, and
    the call recorded with its result or its exception."""
    duration = perf_counter_ns() - t0
    _current.set(parent)
    if error is None:
        _record(spec, ctx, args, kwargs, "ok", result, None, duration, extra)
    else:
        _record(spec, ctx, args, kwargs, status_of(error), None, error, duration, extra)


def _check_sync(
    spec: _Spec, log: AuditLog, ctx: SpanContext, args: tuple[Any, ...], kwargs: Any, extra: Any
) -> None:
    """The policy check before a gated tool runs; raises ToolBlocked."""
    name, gate, site = spec.site(extra)
    if gate is None:
        return
    decision = log.pre_check(
        gate, ctx, name, spec.names, spec.skip, spec.varargs, args, kwargs or None
    )
    if decision is not None:
        enforce_sync(log, decision, ctx, site)


async def _check_async(
    spec: _Spec, log: AuditLog, ctx: SpanContext, args: tuple[Any, ...], kwargs: Any, extra: Any
) -> None:
    """:func:`_check_sync` for async tools: the approver is awaited."""
    name, gate, site = spec.site(extra)
    if gate is None:
        return
    decision = log.pre_check(
        gate, ctx, name, spec.names, spec.skip, spec.varargs, args, kwargs or None
    )
    if decision is not None:
        await enforce_async(log, decision, ctx, site)


def _call_sync(
    fn: Callable[..., Any],
    spec: _Spec,
    args: tuple[Any, ...],
    kwargs: Optional[dict[str, Any]],
) -> Any:
    """A sync tool's call in Python: for the calls :class:`ToolFunction`
    hands back (``audit_extra``, a gated tool)."""
    if kwargs is None:
        kwargs = {}
    log = STATE.log
    if log is None:
        return fn(*args, **kwargs)
    extra, parent, ctx, check = _begin(spec, log, kwargs)
    if check:
        _check_sync(spec, log, ctx, args, kwargs, extra)
    _current.set(ctx)
    t0 = perf_counter_ns()
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:
        _end(spec, ctx, parent, args, kwargs, t0, extra, error=e)
        raise
    _end(spec, ctx, parent, args, kwargs, t0, extra, result=result)
    return result


def _wrap_sync(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    slow = functools.partial(_call_sync, fn, spec)
    return ToolFunction(spec.native, fn, slow, _HOOKS, spec.pop_extra)


def _wrap_async(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        log = STATE.log
        if log is None:
            return await fn(*args, **kwargs)
        extra, parent, ctx, check = _begin(spec, log, kwargs)
        if check:
            await _check_async(spec, log, ctx, args, kwargs, extra)
        _current.set(ctx)
        t0 = perf_counter_ns()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as e:
            _end(spec, ctx, parent, args, kwargs, t0, extra, error=e)
            raise
        _end(spec, ctx, parent, args, kwargs, t0, extra, result=result)
        return result

    return wrapper


def _gen_result(items: list[Any], count: int, returned: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"yielded": count, "items": items}
    if returned is not None:
        out["return"] = returned
    return out


_MAX_KEPT_ITEMS = 1000


def _wrap_gen(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    # A plain function returning a generator: the span's parent is where
    # the tool was called, not wherever the first next() happens.
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        log = STATE.log
        if log is None:
            return fn(*args, **kwargs)
        extra, _, ctx, check = _begin(spec, log, kwargs)
        # Checked when called: a blocked generator tool raises right away.
        if check:
            _check_sync(spec, log, ctx, args, kwargs, extra)
        return _drive_gen(fn, spec, ctx, args, kwargs, extra)

    return wrapper


def _drive_gen(
    fn: Callable[..., Any],
    spec: _Spec,
    ctx: SpanContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    extra: Any,
) -> Any:
    t0 = perf_counter_ns()
    items: list[Any] = []
    count = 0
    to_send: Any = None
    to_throw: Optional[BaseException] = None
    error: Optional[BaseException] = None
    returned: Any = None
    try:
        gen = fn(*args, **kwargs)
        while True:
            # Each step runs in the tool's span; the caller's value is
            # set back after it (no Token survives a yield).
            prev = _current.get()
            _current.set(ctx)
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    item = gen.throw(exc)
                else:
                    item = gen.send(to_send)
            except StopIteration as stop:
                returned = stop.value
                return stop.value
            finally:
                _current.set(prev)
            count += 1
            if len(items) < _MAX_KEPT_ITEMS:
                items.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as e:
                to_throw = e
    except BaseException as e:
        error = e
        raise
    finally:
        duration = perf_counter_ns() - t0
        if error is None:
            _record(
                spec,
                ctx,
                args,
                kwargs,
                "ok",
                _gen_result(items, count, returned),
                None,
                duration,
                extra,
            )
        else:
            _record(spec, ctx, args, kwargs, status_of(error), None, error, duration, extra)


def _wrap_async_gen(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        log = STATE.log
        if log is None:
            return fn(*args, **kwargs)
        extra, _, ctx, check = _begin(spec, log, kwargs)
        # Checked when iteration starts (the approver may be awaited).
        return _drive_async_gen(fn, spec, ctx, args, kwargs, extra, log if check else None)

    return wrapper


async def _drive_async_gen(
    fn: Callable[..., Any],
    spec: _Spec,
    ctx: SpanContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    extra: Any,
    check_log: Optional[AuditLog] = None,
) -> Any:
    if check_log is not None:
        await _check_async(spec, check_log, ctx, args, kwargs, extra)
    t0 = perf_counter_ns()
    items: list[Any] = []
    count = 0
    to_send: Any = None
    to_throw: Optional[BaseException] = None
    error: Optional[BaseException] = None
    try:
        agen = fn(*args, **kwargs)
        while True:
            prev = _current.get()
            _current.set(ctx)
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    item = await agen.athrow(exc)
                else:
                    item = await agen.asend(to_send)
            except StopAsyncIteration:
                return
            finally:
                _current.set(prev)
            count += 1
            if len(items) < _MAX_KEPT_ITEMS:
                items.append(item)
            try:
                to_send = yield item
            except GeneratorExit:
                await agen.aclose()
                raise
            except BaseException as e:
                to_throw = e
    except BaseException as e:
        error = e
        raise
    finally:
        duration = perf_counter_ns() - t0
        if error is None:
            _record(
                spec,
                ctx,
                args,
                kwargs,
                "ok",
                _gen_result(items, count, None),
                None,
                duration,
                extra,
            )
        else:
            _record(spec, ctx, args, kwargs, status_of(error), None, error, duration, extra)


@overload
def tool(fn: F) -> F: ...
@overload
def tool(
    fn: None = None,
    *,
    name: Optional[str] = None,
    version: Optional[str] = None,
    capture: Optional[str] = None,
    metadata: Optional[dict[str, Any]] = None,
    risk_flags: Optional[list[str]] = None,
) -> Callable[[F], F]: ...
def tool(
    fn: Any = None,
    *,
    name: Optional[str] = None,
    version: Optional[str] = None,
    capture: Optional[str] = None,
    metadata: Optional[dict[str, Any]] = None,
    risk_flags: Optional[list[str]] = None,
) -> Any:
    """Records each call of the decorated function as a ``tool_call``:
    arguments by parameter name, the result or the exception (type and
    message), ``result_status`` ok | error | timeout | cancelled | blocked,
    and the duration. Works bare (``@tool``) or with arguments
    (``@tool(name="db.query", version="2.3.1", capture="hash")``), on sync,
    async, generator and async generator functions, methods, static and
    class methods. A call may pass ``audit_extra={"name": ..., "capture":
    ..., "metadata": {...}, "risk_flags": [...]}`` to override them once;
    it is removed before the function is called."""

    def decorate(f: Any) -> Any:
        if isinstance(f, staticmethod):
            return staticmethod(decorate(f.__func__))
        if isinstance(f, classmethod):
            return classmethod(decorate(f.__func__))
        if not callable(f):
            raise ConfigError(f"@tool needs a function, got {type(f).__name__}")
        spec = _Spec(f, name, version, capture, metadata, risk_flags)
        if inspect.isasyncgenfunction(f):
            wrapper = _wrap_async_gen(f, spec)
        elif inspect.iscoroutinefunction(f):
            wrapper = _wrap_async(f, spec)
        elif inspect.isgeneratorfunction(f):
            wrapper = _wrap_gen(f, spec)
        else:
            wrapper = _wrap_sync(f, spec)
        functools.update_wrapper(wrapper, f)
        wrapper.__audit_tool__ = spec.name  # type: ignore[attr-defined]
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate
