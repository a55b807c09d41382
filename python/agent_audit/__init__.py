"""agent-audit: tamper-evident audit trails for AI agents.

>>> import agent_audit as audit
>>> audit.init(dir="./audit", tenant_id="acme", agent_id="support-v2")
>>> with audit.trace("customer_support_resolution", user_id="u_abc", input=ticket):
...     answer = lookup_order(order_id)       # an @audit.tool function

Events are copied on the caller's thread and redacted, hashed, chained,
signed and written by a background thread of the Rust core. Check a log
with :func:`verify` (or ``python -m agent_audit verify DIR``).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from . import _native, context
from ._policy import Alert, Approval, ApprovalRequest, on_alert, set_approver
from ._spans import (
    AgentSpawn,
    LlmCall,
    Trace,
    agent_spawn,
    current_trace,
    decision,
    guardrail,
    human_review,
    llm_call,
    memory,
    retrieval,
    trace,
)
from ._state import export_stats, flush, get_log, init, shutdown, stats
from ._tool import tool
from .errors import (
    AuditError,
    AuditIOError,
    ClosedError,
    ConfigError,
    InvalidEventError,
    InvalidLogError,
    NotFoundError,
    ParseError,
    ProofError,
    SigningKeyError,
    ToolBlocked,
)

__version__: str = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]


def verify(dir: PathLike, trusted_keys: Optional[list[PathLike]] = None) -> dict[str, Any]:
    """Verifies every stream of a log directory. Returns the report:
    ``streams`` (status clean | open | truncated | tampered), ``findings``
    (code, severity, stream, seq, file, offset, message), ``records``,
    ``tampered`` and ``exit_code`` (0 clean, 1 tampered). Raises
    ``InvalidLogError`` if ``dir`` is not a log at all. The GIL is released
    while it runs."""
    keys = [os.fspath(k) for k in trusted_keys] if trusted_keys else None
    report: dict[str, Any] = _native.verify(os.fspath(dir), keys)
    return report


def traces(
    dir: PathLike, *, flag: Optional[str] = None, since: Optional[str] = None
) -> list[dict[str, Any]]:
    """The traces of a log, oldest first (optionally only those with a risk
    flag, or started at or after an RFC 3339 time)."""
    out: list[dict[str, Any]] = _native.traces(os.fspath(dir), flag, since)
    return out


def show(dir: PathLike, trace_id: str) -> dict[str, Any]:
    """The trace document of one trace: steps with their parents, tokens,
    statuses, hashes and redacted arguments. Raises ``NotFoundError``."""
    doc: dict[str, Any] = _native.show(os.fspath(dir), trace_id)
    return doc


__all__ = [
    "AgentSpawn",
    "Alert",
    "Approval",
    "ApprovalRequest",
    "AuditError",
    "AuditIOError",
    "ClosedError",
    "ConfigError",
    "InvalidEventError",
    "InvalidLogError",
    "LlmCall",
    "NotFoundError",
    "ParseError",
    "ProofError",
    "SigningKeyError",
    "ToolBlocked",
    "Trace",
    "__version__",
    "agent_spawn",
    "context",
    "current_trace",
    "decision",
    "export_stats",
    "flush",
    "get_log",
    "guardrail",
    "human_review",
    "init",
    "llm_call",
    "memory",
    "on_alert",
    "retrieval",
    "set_approver",
    "show",
    "shutdown",
    "stats",
    "tool",
    "trace",
    "traces",
    "verify",
]
