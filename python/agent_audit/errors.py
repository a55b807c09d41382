"""Exceptions: one class per kind of core error, all under
:class:`AuditError` (defined natively so Rust errors map onto them with
their cause chain), plus :class:`ToolBlocked`."""

from __future__ import annotations

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
    """A policy rule blocked a tool before it ran. Recorded with
    ``result_status`` blocked."""
