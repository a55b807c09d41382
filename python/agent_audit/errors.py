"""Exceptions: one class per kind of core error, all under
:class:`AuditError` (defined natively so Rust errors map onto them with
their cause chain), plus :class:`ToolBlocked`."""

from __future__ import annotations

from typing import Optional

from ._native import (
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
)

__all__ = [
    "AuditError",
    "AuditIOError",
    "ClosedError",
    "ConfigError",
    "InvalidEventError",
    "InvalidLogError",
    "NotFoundError",
    "ParseError",
    "ProofError",
    "SigningKeyError",
    "ToolBlocked",
]


class ToolBlocked(AuditError):
    """A policy rule stopped a tool before it ran: a ``block`` rule, or a
    ``require_approval`` rule whose approval was denied or timed out. The
    tool's event is recorded with ``result_status`` blocked, next to a
    ``policy`` record naming the rule.

    ``rule_id`` is the deciding rule, ``action`` its action (``block`` or
    ``require_approval``), ``tool`` the tool, ``reason`` the rule's
    description and ``review`` the approval's outcome (``denied`` or
    ``timeout``; None for a ``block`` rule)."""

    def __init__(
        self,
        message: str,
        *,
        rule_id: str,
        tool: str,
        action: str = "block",
        reason: str = "",
        review: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.tool = tool
        self.action = action
        self.reason = reason
        self.review = review
