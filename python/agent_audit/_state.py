"""The process's one log writer and its lifecycle: ``init``, ``flush``,
``shutdown``, the flush at exit (``atexit`` and SIGTERM, bounded by a
timeout) and the hand-over to a new writer in a forked child."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any, Optional, Union

from . import _native
from ._native import AuditLog, ConfigError

PathLike = Union[str, "os.PathLike[str]"]

# Options the Python layer handles itself; the rest go to the core.
_LIMIT_OPTIONS = ("max_depth", "max_items", "max_bytes", "max_repr")


class _State:
    """Mutable module state, read on every event (one attribute lookup)."""

    def __init__(self) -> None:
        self.log: Optional[AuditLog] = None
        # The last log shut down, for its exporter's final stats.
        self.closed_log: Optional[AuditLog] = None
        self.options: dict[str, Any] = {}
        self.limits: dict[str, int] = {}
        self.exit_timeout = 5.0
        self.pid = os.getpid()
        self.prev_sigterm: Any = None
        self.sigterm_installed = False
        self.not_logged = 0
        # Policy callbacks (see _policy.py).
        self.approver: Any = None
        self.approval_timeout = 30.0
        self.on_alert: Any = None


STATE = _State()
_lock = threading.Lock()


def init(
    dir: PathLike = "./audit",
    signing_key: Optional[Union[PathLike, str, bytes]] = None,
    tenant_id: Optional[str] = None,
    agent_id: Optional[str] = None,
    retention_class: Optional[str] = None,
    policy: Optional[PathLike] = None,
    capture: str = "redacted",
    *,
    export: Optional[str] = None,
    export_name: Optional[str] = None,
    approver: Any = None,
    approval_timeout: Optional[float] = None,
    on_alert: Any = None,
    exit_timeout: float = 5.0,
    handle_sigterm: bool = True,
    **options: Any,
) -> AuditLog:
    """Opens the process's audit log (a new stream under ``dir``) and starts
    its background writer. Calling it again closes the previous writer
    first.

    ``signing_key`` is a path to an Ed25519 PKCS#8 PEM key, or the PEM text
    itself; without one a development key is created in ``dir`` (with a
    warning from the core). ``policy`` is the path of a TOML policy file
    (``docs/policy.md``), ``"builtin"`` (the default: the built-in rule
    pack, which flags and routes for review but blocks nothing) or
    ``"off"``; ``policy_toml=`` gives the TOML text instead. A bad policy
    raises ``ConfigError`` naming the file, line and reason. ``approver``
    (with ``approval_timeout`` seconds, default 30) answers
    ``require_approval`` rules and ``on_alert`` receives ``alert``
    verdicts: see :func:`agent_audit.set_approver` and
    :func:`agent_audit.on_alert`. Any other option of the
    core may be given by name (``user_id``, ``session_id``, ``hashing_key``,
    ``redaction``, ``queue_capacity``, ``overflow="drop"|"block"``,
    ``block_timeout_ms``, ``checkpoint_every``, ``fsync``, ``sign_records``,
    ``max_string_bytes`` ...), and the bounds of the caller-side copy:
    ``max_depth`` (32), ``max_items`` (1000), ``max_bytes`` (8 MiB),
    ``max_repr`` (1000). ``exit_timeout`` bounds the flush at exit and on
    SIGTERM. Raises ``ConfigError`` (or another ``AuditError``) when the
    log cannot be opened.

    ``export`` ships the log off the machine from a background thread of
    this process: an exporter URL, ``"nats://HOST:PORT"`` (NATS JetStream).
    The exporter follows ``dir`` with a persisted cursor
    (``dir/.ship-cursor.<export_name>.json``; ``export_name`` defaults to
    the URL's scheme, ``nats``), retries with back-off while the receiver
    is down (reported once per outage on stderr, counted in
    :func:`export_stats`) and never slows or fails a logged call. What it
    has not shipped at exit stays in ``dir`` for the next exporter (the
    next run, or an ``agent-audit ship`` sidecar); :func:`shutdown` ships
    the tail within its timeout. Collect centrally with ``python -m
    agent_audit collect --from nats://... --to CENTRAL --trust PUB.pem``.
    A malformed or unsupported URL raises ``ConfigError``.
    """
    limits = {k: int(options.pop(k)) for k in _LIMIT_OPTIONS if k in options}
    opts: dict[str, Any] = {"dir": os.fspath(dir), "capture": capture}
    if signing_key is not None:
        if isinstance(signing_key, bytes):
            signing_key = signing_key.decode("utf-8")
        if isinstance(signing_key, str) and signing_key.lstrip().startswith("-----BEGIN"):
            opts["signing_key_pem"] = signing_key
        else:
            opts["signing_key"] = os.fspath(signing_key)
    for name, value in (
        ("tenant_id", tenant_id),
        ("agent_id", agent_id),
        ("retention_class", retention_class),
        ("export", export),
        ("export_name", export_name),
    ):
        if value is not None:
            opts[name] = value
    if policy is not None:
        if not isinstance(policy, (str, os.PathLike)):
            raise ConfigError(
                "policy must be the path of a TOML policy file, 'builtin' or 'off' "
                f"(or give policy_toml=...), got {type(policy).__name__}"
            )
        opts["policy"] = os.fspath(policy)
    opts.update(options)
    # Checked before the log opens: a mistake leaves the old one running.
    from ._policy import install_alert_handler, set_approver
    from ._policy import on_alert as set_on_alert

    if approver is not None or approval_timeout is not None:
        set_approver(approver if approver is not None else STATE.approver, timeout=approval_timeout)
    if on_alert is not None:
        set_on_alert(on_alert)
    with _lock:
        log = AuditLog(opts, **limits)
        install_alert_handler(log)
        old, STATE.log = STATE.log, log
        STATE.closed_log = None
        STATE.options = opts
        STATE.limits = limits
        STATE.exit_timeout = float(exit_timeout)
        STATE.pid = os.getpid()
    if old is not None:
        old.shutdown(STATE.exit_timeout)
    if handle_sigterm:
        _install_sigterm()
    return log


def get_log() -> Optional[AuditLog]:
    """The current writer, or None before ``init`` / after ``shutdown``."""
    return STATE.log


def flush(timeout: float = 5.0) -> bool:
    """Writes everything recorded so far, checkpoints (signs) and syncs it.
    False if that did not finish within ``timeout`` seconds. The GIL is
    released while waiting."""
    log = STATE.log
    if log is None:
        return True
    return log.flush(timeout)


def shutdown(timeout: float = 5.0) -> bool:
    """Writes what is queued, closes the stream (``stream_end`` and a final
    signed checkpoint) and stops the writer. Later events are not
    recorded. False if it did not finish within ``timeout`` seconds.
    With ``init(export=...)``, the exporter then ships what is left within
    the rest of ``timeout`` (half a second at most while its export
    attempts are failing) and stops; :func:`export_stats` tells how that
    went. The result only says whether the stream closed in time."""
    with _lock:
        log, STATE.log = STATE.log, None
        if log is not None:
            STATE.closed_log = log
    if log is None:
        return True
    return log.shutdown(timeout)


def stats() -> dict[str, int]:
    """Writer counters (written, dropped, queued ...) plus ``not_logged``:
    events the Python layer could not hand to the writer (no log, closed)."""
    log = STATE.log
    out = dict(log.stats()) if log is not None else {}
    out["not_logged"] = STATE.not_logged
    return out


def export_stats() -> Optional[dict[str, Any]]:
    """How the exporter started by ``init(export=...)`` is doing, or None
    without one: ``exporter`` (its name), ``state`` (starting | standby |
    shipping | draining | stopped), ``shipped`` (records the receiver
    acknowledged), ``batches``, ``failures``, ``consecutive_failures``
    (non-zero while the receiver is unreachable), ``last_error`` and
    ``caught_up`` (whether the drain at shutdown shipped everything).
    After :func:`shutdown`, the final stats of the log it closed."""
    log = STATE.log if STATE.log is not None else STATE.closed_log
    return log.export_stats() if log is not None else None


def _at_exit() -> None:
    if STATE.pid != os.getpid():
        return
    log = STATE.log
    if log is not None:
        try:
            log.shutdown(STATE.exit_timeout)
        except Exception:
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    prev = STATE.prev_sigterm
    log = STATE.log
    if callable(prev):
        # The application handles SIGTERM itself (maybe to shut down
        # gracefully): make what is recorded durable, keep logging.
        if log is not None:
            try:
                log.flush(STATE.exit_timeout)
            except Exception:
                pass
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        if log is not None:
            try:
                log.flush(STATE.exit_timeout)
            except Exception:
                pass
        return
    # Default behaviour: close the stream, then die of the signal as the
    # process would have without us.
    if log is not None:
        try:
            log.shutdown(STATE.exit_timeout)
        except Exception:
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm() -> None:
    if STATE.sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        prev = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return
    STATE.prev_sigterm = prev
    STATE.sigterm_installed = True


def _after_fork_in_child() -> None:
    # Only the forking thread exists here: the parent's writer thread does
    # not. Never touch its handle again (no flush, no join); open a new
    # stream of our own with the same options.
    STATE.pid = os.getpid()
    _native.reseed_after_fork()
    closed, STATE.closed_log = STATE.closed_log, None
    if closed is not None:
        closed.abandon()
    old = STATE.log
    if old is None:
        return
    old.abandon()
    try:
        STATE.log = AuditLog(STATE.options, **STATE.limits)
        from ._policy import install_alert_handler

        install_alert_handler(STATE.log)
    except Exception:
        STATE.log = None
        return
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        # multiprocessing children leave through os._exit, after running
        # its finalizers but not atexit: close the stream there.
        try:
            mp_util.register_after_fork(STATE, _register_mp_finalizer)
        except Exception:
            pass


def _register_mp_finalizer(_state: _State) -> None:
    import multiprocessing.util as mp_util

    mp_util.Finalize(None, _at_exit, exitpriority=0)


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
