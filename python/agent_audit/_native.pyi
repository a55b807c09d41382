"""Type stubs of the native module (checked by ``mypy.stubtest``)."""

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any, Callable, Final, Optional, final

__all__ = [
    "ERROR_KINDS",
    "AuditError",
    "AuditIOError",
    "AuditLog",
    "ClosedError",
    "ConfigError",
    "InvalidEventError",
    "InvalidLogError",
    "NotFoundError",
    "ParseError",
    "PolicyDecision",
    "ProofError",
    "SigningKeyError",
    "SpanContext",
    "ToolFunction",
    "ToolGate",
    "ToolHooks",
    "ToolSpec",
    "__version__",
    "capture_value",
    "reseed_after_fork",
    "run_cli",
    "show",
    "traces",
    "verify",
]

__version__: Final[str]
ERROR_KINDS: Final[list[str]]

class AuditError(Exception): ...
class ConfigError(AuditError): ...
class InvalidEventError(AuditError): ...
class SigningKeyError(AuditError): ...
class AuditIOError(AuditError): ...
class ClosedError(AuditError): ...
class ParseError(AuditError): ...
class InvalidLogError(AuditError): ...
class ProofError(AuditError): ...
class NotFoundError(AuditError): ...

@final
class SpanContext:
    @staticmethod
    def new_trace(
        *,
        user_id: Optional[str] = None,
        session_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        caller: Optional[str] = None,
        retention_class: Optional[str] = None,
    ) -> SpanContext: ...
    def child(self) -> SpanContext: ...
    def child_agent(self, agent_id: str) -> SpanContext: ...
    @property
    def trace_id(self) -> str: ...
    @property
    def span_id(self) -> str: ...
    @property
    def parent_span_id(self) -> Optional[str]: ...
    @property
    def agent_id(self) -> Optional[str]: ...

@final
class ToolGate: ...

@final
class ToolSpec:
    def __new__(
        cls,
        name: str,
        version: Optional[str],
        names: Sequence[str],
        skip: int,
        varargs: Optional[str],
        capture: Optional[str] = None,
        metadata: Any = None,
        risk_flags: Optional[Sequence[str]] = None,
    ) -> ToolSpec: ...
    @property
    def name(self) -> str: ...

@final
class ToolHooks:
    def __new__(
        cls,
        state: Any,
        current: ContextVar[Optional[SpanContext]],
        otel_ids: Callable[[], Optional[tuple[str, str]]],
        status_of: Callable[[BaseException], str],
    ) -> ToolHooks: ...

@final
class ToolFunction:
    __name__: str
    __qualname__: str
    __wrapped__: Callable[..., Any]
    def __new__(
        cls,
        spec: ToolSpec,
        func: Callable[..., Any],
        slow: Callable[[tuple[Any, ...], Optional[dict[str, Any]]], Any],
        hooks: ToolHooks,
        pop_extra: bool,
    ) -> ToolFunction: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: Any, owner: Any = None, /) -> Any: ...
    def __reduce__(self) -> str: ...

@final
class PolicyDecision:
    @property
    def action(self) -> str: ...
    @property
    def rule_id(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def family(self) -> str: ...
    @property
    def tool(self) -> str: ...
    @property
    def flags(self) -> list[str]: ...
    @property
    def score(self) -> int: ...
    @property
    def rule_ids(self) -> list[str]: ...
    @property
    def args(self) -> Any: ...

@final
class AuditLog:
    def __new__(
        cls,
        options: dict[str, Any],
        *,
        max_depth: int = 32,
        max_items: int = 1000,
        max_bytes: int = 8388608,
        max_repr: int = 1000,
    ) -> AuditLog: ...
    def tool_call(
        self,
        ctx: SpanContext,
        name: str,
        version: Optional[str],
        names: tuple[str, ...],
        skip: int,
        varargs: Optional[str],
        args: tuple[Any, ...],
        kwargs: Optional[dict[str, Any]],
        status: str,
        result: Any,
        error: Optional[BaseException],
        duration_ns: int,
        capture: Optional[str] = None,
        metadata: Any = None,
        risk_flags: Optional[list[str]] = None,
        otel: Optional[tuple[str, str]] = None,
    ) -> bool: ...
    def tool_ok(
        self,
        spec: ToolSpec,
        ctx: SpanContext,
        args: tuple[Any, ...],
        kwargs: Optional[dict[str, Any]],
        result: Any,
        duration_ns: int,
        otel: Optional[tuple[str, str]] = None,
    ) -> bool: ...
    def tool_error(
        self,
        spec: ToolSpec,
        ctx: SpanContext,
        args: tuple[Any, ...],
        kwargs: Optional[dict[str, Any]],
        status: str,
        error: BaseException,
        duration_ns: int,
        otel: Optional[tuple[str, str]] = None,
    ) -> bool: ...
    def gate(self, name: str) -> Optional[ToolGate]: ...
    def pre_check(
        self,
        gate: ToolGate,
        ctx: SpanContext,
        name: str,
        names: tuple[str, ...],
        skip: int,
        varargs: Optional[str],
        args: tuple[Any, ...],
        kwargs: Optional[dict[str, Any]],
    ) -> Optional[PolicyDecision]: ...
    def blocked(
        self,
        decision: PolicyDecision,
        ctx: SpanContext,
        version: Optional[str],
        error: BaseException,
        duration_ns: int,
        capture: Optional[str] = None,
        metadata: Any = None,
        risk_flags: Optional[list[str]] = None,
        otel: Optional[tuple[str, str]] = None,
    ) -> bool: ...
    def review(
        self,
        decision: PolicyDecision,
        ctx: SpanContext,
        outcome: str,
        reviewer: Optional[str] = None,
        reason: Optional[str] = None,
        wait_ns: int = 0,
    ) -> bool: ...
    def set_alert_handler(self, handler: Optional[Callable[[dict[str, Any]], Any]]) -> None: ...
    @property
    def policy_version(self) -> Optional[str]: ...
    def emit(
        self,
        kind: str,
        ctx: Optional[SpanContext] = None,
        fields: Optional[dict[str, Any]] = None,
        payload: Optional[dict[str, Any]] = None,
        start_ns: Optional[int] = None,
    ) -> bool: ...
    def flush(self, timeout: float = 5.0) -> bool: ...
    def shutdown(self, timeout: float = 5.0) -> bool: ...
    def abandon(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def export_stats(self) -> Optional[dict[str, Any]]: ...
    def capture_value(self, value: Any) -> Any: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def stream_dir(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def closed(self) -> bool: ...

def verify(path: str, trusted_keys: Optional[list[str]] = None) -> dict[str, Any]: ...
def traces(
    path: str, flag: Optional[str] = None, since: Optional[str] = None
) -> list[dict[str, Any]]: ...
def show(path: str, trace_id: str) -> dict[str, Any]: ...
def run_cli(args: list[str]) -> int: ...
def reseed_after_fork() -> None: ...
def capture_value(value: Any) -> Any: ...
