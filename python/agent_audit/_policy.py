"""The policy on the caller's side: the check before a gated tool runs,
approvals and alerts.

The rules themselves live in the core (``init(policy="policy.toml")``;
the format is in ``docs/policy.md``). Only tools that a ``block`` or
``require_approval`` rule can match are checked here, once per call and
before the tool body: a ``block`` raises :class:`ToolBlocked`; a
``require_approval`` asks the approver the application registered
(:func:`set_approver`, sync or async, bounded by a timeout, denied when
there is none or it fails) and records its answer as a ``human_review``.
``alert`` verdicts reach the handler of :func:`on_alert` on a thread of
the core's, never the agent's.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any, Callable, Optional, Union

from ._native import AuditLog, PolicyDecision, SpanContext
from ._state import STATE
from .errors import ConfigError, ToolBlocked

__all__ = [
    "Alert",
    "Approval",
    "ApprovalRequest",
    "Approver",
    "on_alert",
    "set_approver",
]


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver is asked: may ``tool`` run with ``args``? ``rule_id``
    and ``reason`` say which rule asks; ``flags`` and ``score`` are what
    every matching rule adds; ``trace_id`` / ``span_id`` place the call."""

    tool: str
    args: Any
    rule_id: str
    reason: str
    flags: list[str] = field(default_factory=list)
    score: int = 0
    trace_id: str = ""
    span_id: str = ""


@dataclass(frozen=True)
class Approval:
    """An approver's answer: ``approved``, who decided and why (the reason
    is stored in the erasable payload of the ``human_review`` record)."""

    approved: bool
    reviewer: Optional[str] = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class Alert:
    """An ``alert`` verdict, as handed to the :func:`on_alert` handler."""

    rule_id: str
    reason: str
    flags: list[str]
    score: int
    trace_id: Optional[str]
    span_id: Optional[str]
    tool: Optional[str]


Answer = Union[bool, Approval, dict[str, Any]]
Approver = Callable[[ApprovalRequest], Union[Answer, Awaitable[Answer]]]


def set_approver(approver: Optional[Approver], *, timeout: Optional[float] = None) -> None:
    """Registers the function asked before a call that a
    ``require_approval`` rule matches. It gets an :class:`ApprovalRequest`
    and returns (or, as a coroutine function, resolves to) ``True`` /
    ``False``, an :class:`Approval` or ``{"approved": ..., "reviewer": ...,
    "reason": ...}``. No answer within ``timeout`` seconds (default 30) is
    a denial recorded as ``timeout``; so is an approver that raises or
    answers something else (recorded as ``denied``)."""
    if approver is not None and not callable(approver):
        raise ConfigError(f"approver must be callable, got {type(approver).__name__}")
    if timeout is not None:
        if not timeout > 0:
            raise ConfigError(f"approval timeout must be positive seconds, got {timeout!r}")
        STATE.approval_timeout = float(timeout)
    STATE.approver = approver


def on_alert(handler: Optional[Callable[[Alert], Any]]) -> None:
    """Registers the function called with each ``alert`` verdict (an
    :class:`Alert`). It runs on a thread of the core's, off the agent's
    path; what it raises is reported as unraisable and does not stop later
    alerts."""
    if handler is not None and not callable(handler):
        raise ConfigError(f"alert handler must be callable, got {type(handler).__name__}")
    STATE.on_alert = handler
    log = STATE.log
    if log is not None:
        install_alert_handler(log)


def install_alert_handler(log: AuditLog) -> None:
    """Hands the registered alert handler (or none) to ``log``'s core."""
    handler = STATE.on_alert
    if handler is None:
        log.set_alert_handler(None)
        return

    def deliver(alert: dict[str, Any]) -> None:
        handler(
            Alert(
                rule_id=alert["rule_id"],
                reason=alert["reason"],
                flags=list(alert["flags"]),
                score=int(alert["score"]),
                trace_id=alert.get("trace_id"),
                span_id=alert.get("span_id"),
                tool=alert.get("tool"),
            )
        )

    log.set_alert_handler(deliver)


def _request(decision: PolicyDecision, ctx: SpanContext) -> ApprovalRequest:
    return ApprovalRequest(
        tool=decision.tool,
        args=decision.args,
        rule_id=decision.rule_id,
        reason=decision.reason,
        flags=decision.flags,
        score=decision.score,
        trace_id=ctx.trace_id,
        span_id=ctx.span_id,
    )


# (outcome, reviewer, reason): outcome is approved | denied | timeout.
_Outcome = tuple[str, Optional[str], Optional[str]]


def _outcome(answer: Any) -> _Outcome:
    if isinstance(answer, bool):
        return ("approved" if answer else "denied", None, None)
    if isinstance(answer, Approval):
        return ("approved" if answer.approved else "denied", answer.reviewer, answer.reason)
    if isinstance(answer, dict) and isinstance(answer.get("approved"), bool):
        reviewer = answer.get("reviewer")
        reason = answer.get("reason")
        return (
            "approved" if answer["approved"] else "denied",
            None if reviewer is None else str(reviewer),
            None if reason is None else str(reason),
        )
    return ("denied", None, f"the approver answered {type(answer).__name__}, not an approval")


def _failed(e: BaseException) -> _Outcome:
    return ("denied", None, f"the approver raised {type(e).__name__}: {e}")


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _ask_sync(request: ApprovalRequest) -> _Outcome:
    """Asks the approver from a sync tool: on a thread of its own, so that
    the timeout holds even if it never answers (the call is then denied
    and the thread left to finish)."""
    approver = STATE.approver
    if approver is None:
        return ("denied", None, "no approver is registered")
    timeout = STATE.approval_timeout
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def ask() -> None:
        try:
            answer = context.run(approver, request)
            if inspect.isawaitable(answer):
                answer = asyncio.run(_await(answer))
            box["answer"] = answer
        except BaseException as e:
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=ask, name="agent-audit-approval", daemon=True).start()
    if not done.wait(timeout):
        return ("timeout", None, f"no answer within {timeout:g} s")
    if "error" in box:
        return _failed(box["error"])
    return _outcome(box.get("answer"))


async def _ask_async(request: ApprovalRequest) -> _Outcome:
    """Asks the approver from an async tool without blocking the loop: a
    coroutine function is awaited, a plain function runs in the loop's
    default executor."""
    approver = STATE.approver
    if approver is None:
        return ("denied", None, "no approver is registered")
    timeout = STATE.approval_timeout

    async def ask() -> Any:
        if inspect.iscoroutinefunction(approver) or inspect.iscoroutinefunction(
            getattr(approver, "__call__", None)  # noqa: B004 - async callable objects
        ):
            answer = approver(request)
        else:
            context = contextvars.copy_context()
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(None, context.run, approver, request)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    try:
        answer = await asyncio.wait_for(ask(), timeout)
    except asyncio.TimeoutError:
        return ("timeout", None, f"no answer within {timeout:g} s")
    except Exception as e:
        return _failed(e)
    return _outcome(answer)


class CallSite:
    """What the record of a stopped call needs besides the decision."""

    __slots__ = ("capture", "metadata", "otel", "risk_flags", "version")

    def __init__(
        self,
        version: Optional[str],
        capture: Optional[str],
        metadata: Any,
        risk_flags: Optional[list[str]],
        otel: Optional[tuple[str, str]],
    ) -> None:
        self.version = version
        self.capture = capture
        self.metadata = metadata
        self.risk_flags = risk_flags
        self.otel = otel


def _stop(
    log: AuditLog,
    decision: PolicyDecision,
    ctx: SpanContext,
    site: CallSite,
    review: Optional[str],
    t0: int,
) -> ToolBlocked:
    if review is None:
        message = f"{decision.tool} blocked by policy rule {decision.rule_id}: {decision.reason}"
    else:
        message = (
            f"{decision.tool} needs approval (policy rule {decision.rule_id}: "
            f"{decision.reason}); approval {review}"
        )
    exc = ToolBlocked(
        message,
        rule_id=decision.rule_id,
        tool=decision.tool,
        action=decision.action,
        reason=decision.reason,
        review=review,
    )
    try:
        if not log.blocked(
            decision,
            ctx,
            site.version,
            exc,
            perf_counter_ns() - t0,
            site.capture,
            site.metadata,
            site.risk_flags,
            site.otel,
        ):
            STATE.not_logged += 1
    except Exception:
        STATE.not_logged += 1
    return exc


def _record_review(
    log: AuditLog, decision: PolicyDecision, ctx: SpanContext, outcome: _Outcome, wait_ns: int
) -> None:
    try:
        if not log.review(decision, ctx, outcome[0], outcome[1], outcome[2], wait_ns):
            STATE.not_logged += 1
    except Exception:
        STATE.not_logged += 1


def enforce_sync(log: AuditLog, decision: PolicyDecision, ctx: SpanContext, site: CallSite) -> None:
    """Acts on a decision before a sync tool runs: returns when an approver
    approved the call, raises :class:`ToolBlocked` otherwise."""
    t0 = perf_counter_ns()
    review = None
    if decision.action == "require_approval":
        outcome = _ask_sync(_request(decision, ctx))
        _record_review(log, decision, ctx, outcome, perf_counter_ns() - t0)
        if outcome[0] == "approved":
            return
        review = outcome[0]
    raise _stop(log, decision, ctx, site, review, t0)


async def enforce_async(
    log: AuditLog, decision: PolicyDecision, ctx: SpanContext, site: CallSite
) -> None:
    """:func:`enforce_sync` for async tools: the approver is awaited."""
    t0 = perf_counter_ns()
    review = None
    if decision.action == "require_approval":
        outcome = await _ask_async(_request(decision, ctx))
        _record_review(log, decision, ctx, outcome, perf_counter_ns() - t0)
        if outcome[0] == "approved":
            return
        review = outcome[0]
    raise _stop(log, decision, ctx, site, review, t0)
