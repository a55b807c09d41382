"""``python -m agent_audit.bench``: what ``@audit.tool`` costs the caller,
next to its peers in the same run.

One trivial tool (``add(a, b)``) is called ``--calls`` times (default
200,000) through each candidate:

- ``bare``: the function itself;
- ``floor``: a hand-written timing decorator (two clock reads and one
  append of (name, duration) to a bounded deque), the least any recorder
  can cost;
- ``audit``: ``@audit.tool`` inside an ``audit.trace``, log on a temporary
  directory with an ephemeral signing key;
- ``otel``: the OpenTelemetry SDK, ``tracer.start_as_current_span`` as a
  decorator, a ``BatchSpanProcessor`` and an exporter that discards;
- ``langfuse``: Langfuse ``@observe`` (its own OpenTelemetry pipeline);
- ``langsmith``: LangSmith ``@traceable``.

Langfuse and LangSmith are given keys and an endpoint on a closed local
port (``http://127.0.0.1:9``), so they serialize, batch and try to export
like in production, and fail to connect. The peers are optional: a
missing one is named and its row left out (``pip install
'agent-audit[bench]'`` installs them).

Timing: calls run in blocks of ``--block`` (100); a block is timed with
two ``perf_counter_ns`` reads, so the timer's own cost is spread over 100
calls. The candidates take turns in rounds (each runs
``--blocks-per-round`` blocks per round, the starting candidate rotating)
so that drift on a busy machine hits all of them alike. Each candidate's
blocks run inside a parent of its own library (an ``audit.trace``, an
OpenTelemetry span, a Langfuse observation, a LangSmith run) entered
outside the timed region, as tools run inside an agent's task. Per
candidate: p50 and p99 of the per-call time over its blocks, the overhead
over ``bare`` at the same percentile, and the p50 overhead as a ratio to
the floor's and to OpenTelemetry's.

The target checked: ``@audit.tool`` adds at most 1.5 times the floor's
overhead plus 2 µs, and at most a fifth of OpenTelemetry's (p50).

``--memory``: RSS while the writer cannot write. After a warm-up, the
process's file-size limit (RLIMIT_FSIZE) is set to 0 with SIGXFSZ ignored,
so every write of the log fails with EFBIG and the writer retries with
back-off while the caller keeps logging ``--events`` (1,000,000) tool
calls; the queue fills and the rest is dropped and counted. Prints RSS at
the start, its peak and at the end; then lifts the limit, lets the writer
record the loss (``gap``) and verifies the log.

Run as ``python -m agent_audit.bench`` the process ends with ``os._exit``
once the audit log is closed: the peers' exit hooks would otherwise keep
retrying the closed port for minutes.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from time import perf_counter_ns
from typing import Any, Callable, Optional

CLOSED_PORT_URL = "http://127.0.0.1:9"
TARGET_FLOOR_FACTOR = 1.5
TARGET_FLOOR_SLACK_NS = 2000
TARGET_OTEL_FRACTION = 0.2
MEMORY_LIMIT_BYTES = 20 * 1024 * 1024

# id, label, distribution that provides it (None: always there).
CANDIDATES: list[tuple[str, str, Optional[str]]] = [
    ("bare", "bare call", None),
    ("floor", "hand-written timing decorator (floor)", None),
    ("audit", "@audit.tool", None),
    ("otel", "OpenTelemetry SDK span, BatchSpanProcessor", "opentelemetry-sdk"),
    ("langfuse", "Langfuse @observe", "langfuse"),
    ("langsmith", "LangSmith @traceable", "langsmith"),
]
_MODULES = {
    "opentelemetry-sdk": "opentelemetry.sdk.trace",
    "langfuse": "langfuse",
    "langsmith": "langsmith",
}


def add(a: int, b: int) -> int:
    """The trivial tool."""
    return a + b


def ephemeral_signing_key() -> str:
    """A fresh Ed25519 key as PKCS#8 PEM (the fixed DER prefix of an
    Ed25519 private key, then 32 random bytes)."""
    der = bytes.fromhex("302e020100300506032b657004220420") + os.urandom(32)
    b64 = base64.b64encode(der).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"


def installed(dist: Optional[str]) -> bool:
    if dist is None:
        return True
    try:
        return importlib.util.find_spec(_MODULES[dist]) is not None
    except (ImportError, ValueError):
        return False


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


class _LogCounter(logging.Handler):
    """Counts (and swallows) what a peer logs: its failed exports."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.name.split(".")[0]] += 1


_peer_logs = _LogCounter()


def _quiet(*names: str) -> None:
    for name in names:
        lg = logging.getLogger(name)
        lg.handlers[:] = [_peer_logs]
        lg.propagate = False
        lg.setLevel(logging.WARNING)


# ------------------------------------------------------------ candidates


class Candidate:
    """A wrapped ``add`` and the context its blocks run in (a parent
    span or trace, entered outside the timed region)."""

    def __init__(
        self,
        key: str,
        label: str,
        fn: Callable[[int, int], int],
        parent: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        close: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self.label = label
        self.fn = fn
        self.parent = parent
        self.close = close
        self.samples: list[float] = []  # ns per call, one per block


def make_floor() -> Candidate:
    timings: collections.deque[tuple[str, int]] = collections.deque(maxlen=10_000)

    def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                timings.append((name, perf_counter_ns() - t0))

        return wrapper

    return Candidate("floor", "", timed(add))


def make_audit(log_dir: str, policy: Optional[str] = None) -> Candidate:
    import agent_audit as audit

    audit.init(
        dir=log_dir,
        signing_key=ephemeral_signing_key(),
        tenant_id="bench",
        agent_id="bench-agent",
        policy=policy,
        handle_sigterm=False,
    )
    return Candidate(
        "audit",
        "",
        audit.tool(add),
        parent=lambda: audit.trace("bench_task", user_id="u_bench"),
    )


def make_otel() -> Candidate:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    # A provider of its own, not the global one (Langfuse installs that).
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("agent-audit-bench")
    fn = tracer.start_as_current_span("add")(add)
    return Candidate(
        "otel",
        "",
        fn,
        parent=lambda: tracer.start_as_current_span("bench_task"),
        close=lambda: provider.shutdown(),
    )


def make_langfuse() -> Candidate:
    # Fake keys, always: real ones must not go anywhere, not even to a closed port.
    os.environ["LANGFUSE_PUBLIC_KEY"] = "pk-lf-agent-audit-bench"
    os.environ["LANGFUSE_SECRET_KEY"] = "sk-lf-agent-audit-bench"
    os.environ["LANGFUSE_BASE_URL"] = CLOSED_PORT_URL
    os.environ["LANGFUSE_HOST"] = CLOSED_PORT_URL
    os.environ.setdefault("LANGFUSE_TIMEOUT", "2")
    _quiet("langfuse", "opentelemetry", "urllib3", "httpx", "httpcore")
    from langfuse import get_client, observe

    client = get_client()
    fn = observe(name="add", as_type="tool")(add)

    def close() -> None:
        _bounded(client.shutdown, 2.0)

    return Candidate(
        "langfuse",
        "",
        fn,
        parent=lambda: client.start_as_current_observation(name="bench_task"),
        close=close,
    )


def make_langsmith() -> Candidate:
    os.environ["LANGSMITH_TRACING"] = "true"
    os.environ["LANGSMITH_API_KEY"] = "lsv2_pt_agent_audit_bench"
    os.environ["LANGSMITH_ENDPOINT"] = CLOSED_PORT_URL
    os.environ.pop("LANGSMITH_RUNS_ENDPOINTS", None)
    os.environ["LANGSMITH_PROJECT"] = "agent-audit-bench"
    _quiet("langsmith", "urllib3", "requests", "httpx", "httpcore")
    import langsmith
    from langsmith import traceable

    fn = traceable(name="add", run_type="tool")(add)

    def close() -> None:
        from langsmith.run_trees import get_cached_client

        _bounded(get_cached_client().flush, 2.0)

    return Candidate(
        "langsmith",
        "",
        fn,
        parent=lambda: langsmith.trace("bench_task"),
        close=close,
    )


def _bounded(fn: Callable[[], Any], timeout: float) -> None:
    """Runs a peer's flush/shutdown on a daemon thread, waiting at most
    ``timeout`` seconds (an exporter retrying a closed port may not stop)."""
    import threading

    def run() -> None:
        with contextlib.suppress(Exception):
            fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)


MAKERS: dict[str, Callable[..., Candidate]] = {
    "otel": make_otel,
    "langfuse": make_langfuse,
    "langsmith": make_langsmith,
}


# ------------------------------------------------------------------ timing


def quantile(xs: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    s = sorted(xs)
    i = min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))
    return s[i]


def run_block(fn: Callable[[int, int], int], n: int) -> int:
    t0 = perf_counter_ns()
    for i in range(n):
        fn(i, 1)
    return perf_counter_ns() - t0


def measure(cands: list[Candidate], calls: int, block: int, per_round: int) -> int:
    """Runs the rounds; fills each candidate's ``samples``. Returns the
    number of rounds."""
    # Warm-up: first calls set up lazily created state (clients, threads).
    for c in cands:
        with c.parent():
            for _ in range(5):
                run_block(c.fn, block)
    total_blocks = max(1, calls // block)
    rounds = -(-total_blocks // per_round)
    done = 0
    for r in range(rounds):
        n_blocks = min(per_round, total_blocks - done)
        done += n_blocks
        for k in range(len(cands)):
            c = cands[(r + k) % len(cands)]
            with c.parent():
                for _ in range(n_blocks):
                    c.samples.append(run_block(c.fn, block) / block)
    return rounds


def fmt_us(ns: Optional[float]) -> str:
    return "-" if ns is None else f"{ns / 1000:.3f}"


def fmt_x(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}x"


def bench(args: argparse.Namespace) -> int:
    import agent_audit as audit

    missing = [(key, dist) for key, _label, dist in CANDIDATES if dist and not installed(dist)]
    ids = {k for k, _l, _d in CANDIDATES}
    wanted = set(args.only.split(",")) if args.only else ids
    if wanted - ids:
        print(f"unknown candidate(s): {', '.join(sorted(wanted - ids))}", file=sys.stderr)
        return 2
    log_dir = tempfile.mkdtemp(prefix="agent-audit-bench-")
    cands: list[Candidate] = []
    failed: dict[str, str] = {}
    for key, label, dist in CANDIDATES:
        if key not in wanted or (dist and not installed(dist)):
            continue
        try:
            if key == "bare":
                c = Candidate("bare", label, add)
            elif key == "floor":
                c = make_floor()
            elif key == "audit":
                c = make_audit(log_dir, args.policy)
            else:
                c = MAKERS[key]()
        except Exception as e:  # a peer that cannot be set up is reported, not fatal
            failed[key] = f"{type(e).__name__}: {e}"
            continue
        c.label = label
        cands.append(c)

    versions = [f"python {platform.python_version()}", f"agent-audit {audit.__version__}"]
    versions += [f"{d} {version_of(d)}" for _k, _l, d in CANDIDATES if d and installed(d)]
    out = sys.stdout
    print(
        f"agent-audit bench: {args.calls:,} calls of a trivial tool per candidate, "
        f"blocks of {args.block}, {args.blocks_per_round} blocks per candidate per round",
        file=out,
    )
    print(
        "  " + ", ".join(versions) + f"; {os.cpu_count()} CPUs; "
        f"audit policy {args.policy or 'builtin'}",
        file=out,
    )
    if missing:
        names = ", ".join(f"{key} ({dist})" for key, dist in missing)
        print(
            f"  missing peers: {names}; their rows are left out. "
            f"Install them: pip install 'agent-audit[bench]'",
            file=out,
        )
    else:
        print("  missing peers: none", file=out)
    for key, why in failed.items():
        print(f"  {key}: could not be set up: {why}", file=out)
    out.flush()

    t_start = time.monotonic()
    rounds = measure(cands, args.calls, args.block, args.blocks_per_round)
    elapsed = time.monotonic() - t_start

    by_key = {c.key: c for c in cands}
    stats: dict[str, dict[str, Optional[float]]] = {}
    for c in cands:
        stats[c.key] = {"p50": quantile(c.samples, 0.5), "p99": quantile(c.samples, 0.99)}
    bare = stats.get("bare")
    for st in stats.values():
        for q in ("p50", "p99"):
            v = st[q]
            st[f"over_{q}"] = None if bare is None or v is None else v - (bare[q] or 0.0)

    def ratio(key: str, base: str) -> Optional[float]:
        a = stats.get(key, {}).get("over_p50")
        b = stats.get(base, {}).get("over_p50")
        if a is None or b is None or b <= 0:
            return None
        return a / b

    print(
        f"\n{'id':<10} {'candidate':<44} {'per call p50':>12} {'p99':>9} "
        f"{'overhead p50':>12} {'p99':>9} {'x floor':>8} {'x OTel':>8}",
        file=out,
    )
    print(f"{'':<10} {'':<44} {'(us)':>12} {'(us)':>9} {'(us)':>12} {'(us)':>9}", file=out)
    for key, label, dist in CANDIDATES:
        if key in stats:
            st = stats[key]
            print(
                f"{key:<10} {label:<44} {fmt_us(st['p50']):>12} {fmt_us(st['p99']):>9} "
                f"{fmt_us(st['over_p50']):>12} {fmt_us(st['over_p99']):>9} "
                f"{fmt_x(ratio(key, 'floor')):>8} {fmt_x(ratio(key, 'otel')):>8}",
                file=out,
            )
        elif key in wanted:
            why = failed.get(key) or f"not installed (pip install {dist})"
            print(f"{key:<10} {label:<44} {why}", file=out)

    result: dict[str, Any] = {
        "calls": args.calls,
        "block": args.block,
        "rounds": rounds,
        "seconds": elapsed,
        "missing": [k for k, _d in missing],
        "failed": failed,
        "candidates": stats,
    }
    a = stats.get("audit", {}).get("over_p50")
    f = stats.get("floor", {}).get("over_p50")
    o = stats.get("otel", {}).get("over_p50")
    checks: dict[str, Any] = {}
    print("", file=out)
    if a is not None and f is not None:
        limit = TARGET_FLOOR_FACTOR * max(f, 0.0) + TARGET_FLOOR_SLACK_NS
        ok = a <= limit
        checks["floor"] = {"measured_ns": a, "limit_ns": limit, "ok": ok}
        print(
            f"target: @audit.tool overhead <= 1.5 x floor + 2 us: "
            f"{fmt_us(a)} us vs {fmt_us(limit)} us  {'MET' if ok else 'MISSED'}",
            file=out,
        )
    if a is not None and o is not None:
        limit = TARGET_OTEL_FRACTION * o
        ok = a <= limit
        checks["otel"] = {"measured_ns": a, "limit_ns": limit, "ok": ok}
        print(
            f"target: @audit.tool overhead <= OpenTelemetry's / 5: "
            f"{fmt_us(a)} us vs {fmt_us(limit)} us  {'MET' if ok else 'MISSED'}",
            file=out,
        )
    elif a is not None:
        print("target: @audit.tool vs OpenTelemetry: not measured (no OpenTelemetry row)", file=out)
    result["targets"] = checks

    if "audit" in by_key:
        audit.flush(60)
        wst = audit.stats()
        audit.shutdown(60)
        result["audit_writer"] = wst
        print(
            f"audit writer: {wst.get('written', '?')} records written, "
            f"{wst.get('dropped', 0)} events dropped (queue full), "
            f"{wst.get('not_logged', 0)} not logged",
            file=out,
        )
        report = audit.verify(log_dir)
        result["audit_log"] = {"records": report["records"], "exit_code": report["exit_code"]}
        print(
            f"audit log: {report['records']:,} records, verify "
            f"{'clean' if report['exit_code'] == 0 else 'FAILED'}"
            + (f" ({log_dir})" if args.keep_log else ""),
            file=out,
        )
    if _peer_logs.counts:
        print(
            "peer export errors logged (closed port): "
            + ", ".join(f"{k} {n}" for k, n in sorted(_peer_logs.counts.items())),
            file=out,
        )
    print(f"{elapsed:.1f} s, {rounds} rounds", file=out)
    out.flush()

    for c in cands:
        with contextlib.suppress(Exception):
            c.close()
    if not args.keep_log:
        shutil.rmtree(log_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    if args.check and any(not c["ok"] for c in checks.values()):
        return 1
    return 0


# ------------------------------------------------------------------ memory


def rss_bytes() -> int:
    """The resident set size of this process (Linux: /proc/self/statm)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def writes_fail() -> Iterator[None]:
    """Every file write of this process fails with EFBIG while inside:
    RLIMIT_FSIZE 0 (soft), SIGXFSZ ignored. Root is not exempt."""
    import resource

    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def memory(args: argparse.Namespace) -> int:
    import agent_audit as audit

    if not os.path.exists("/proc/self/statm"):
        print("--memory needs Linux (/proc/self/statm)", file=sys.stderr)
        return 2
    log_dir = tempfile.mkdtemp(prefix="agent-audit-bench-mem-")
    queue: dict[str, Any] = {}
    if args.queue_capacity:
        queue["queue_capacity"] = args.queue_capacity
    audit.init(
        dir=log_dir,
        signing_key=ephemeral_signing_key(),
        tenant_id="bench",
        agent_id="bench-agent",
        handle_sigterm=False,
        **queue,
    )

    @audit.tool(name="crm.note")
    def note(customer_id: int, text: str) -> dict[str, Any]:
        return {"customer_id": customer_id, "saved": True}

    text = "customer asked about the refund of order o-123; promised a call back tomorrow"
    events = args.events
    warmup = 10_000
    with audit.trace("bench_memory"):
        for i in range(warmup):
            note(i, text)
    assert audit.flush(30), "warm-up flush timed out"
    before = audit.stats()
    # The agent's events: the tool calls and two traces (start and end).
    emitted = warmup + events + 4
    samples: list[tuple[int, int]] = []
    with writes_fail():
        start = rss_bytes()
        peak = start
        every = max(1, events // 100)
        with audit.trace("bench_memory"):
            for i in range(events):
                note(i, text)
                if i % every == 0:
                    r = rss_bytes()
                    peak = max(peak, r)
                    samples.append((i, r))
        end = rss_bytes()
        peak = max(peak, end)
        during = audit.stats()
    # The disk has room again: the writer drains, records the loss, closes.
    flushed = audit.flush(60)
    closed = audit.shutdown(60)
    after_full = next((r for i, r in samples if i >= min(events - 1, 100_000)), end)
    report = audit.verify(log_dir)
    written = lost = 0
    for stream in os.listdir(log_dir):
        sdir = os.path.join(log_dir, stream)
        if not os.path.isdir(sdir):
            continue
        for seg in sorted(os.listdir(sdir)):
            if not seg.startswith("seg-"):
                continue
            with open(os.path.join(sdir, seg), encoding="utf-8") as fh:
                for line in fh:
                    rec = json.loads(line)
                    if rec["kind"] in ("tool_call", "trace_start", "trace_end"):
                        written += 1
                    elif rec["kind"] == "gap":
                        lost += int(rec.get("lost", 0))
    growth = peak - start
    mib = 1024 * 1024
    print(
        f"agent-audit bench --memory: {events:,} tool calls while every write of the log "
        f"fails (RLIMIT_FSIZE 0, EFBIG); queue capacity "
        f"{args.queue_capacity or 'default (65,536 events / 16 MiB)'}"
    )
    print(
        f"RSS start {start / mib:.1f} MiB, peak {peak / mib:.1f} MiB, end {end / mib:.1f} MiB; "
        f"growth {growth / mib:.1f} MiB (limit {MEMORY_LIMIT_BYTES / mib:.0f} MiB)  "
        f"{'MET' if growth <= MEMORY_LIMIT_BYTES else 'MISSED'}"
    )
    print(
        f"RSS after the first {min(events, 100_000):,} calls {after_full / mib:.1f} MiB, "
        f"end {end / mib:.1f} MiB: {(end - after_full) / mib:+.1f} MiB over the rest"
    )

    def delta(key: str) -> int:
        return during.get(key, 0) - before.get(key, 0)

    print(
        f"writer while blocked: io_errors {delta('io_errors')}, "
        f"dropped {delta('dropped'):,}, written {delta('written')}; "
        f"queued {during.get('queued', 0):,} events, "
        f"{during.get('queued_bytes', 0) / mib:.1f} MiB by the queue's own count"
    )
    print(
        f"after the limit was lifted: flush {'ok' if flushed else 'TIMED OUT'}, "
        f"shutdown {'ok' if closed else 'TIMED OUT'}; log: {written:,} events written + "
        f"{lost:,} counted lost in gap records = {written + lost:,} of {emitted:,}; "
        f"verify: {'clean' if report['exit_code'] == 0 else 'TAMPERED'} "
        f"({report['records']:,} records)"
    )
    if args.keep_log:
        print(f"log: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "events": events,
                    "rss_start": start,
                    "rss_peak": peak,
                    "rss_end": end,
                    "rss_after_100k": after_full,
                    "samples": samples,
                    "writer_blocked": during,
                    "events_written": written,
                    "lost": lost,
                    "verify_exit_code": report["exit_code"],
                },
                fh,
                indent=2,
            )
    ok = growth <= MEMORY_LIMIT_BYTES and written + lost == emitted and report["exit_code"] == 0
    return 0 if ok or not args.check else 1


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m agent_audit.bench",
        description="Per-call overhead of @audit.tool next to a timing decorator, "
        "OpenTelemetry, Langfuse and LangSmith in the same run; or, with --memory, "
        "RSS while the log cannot be written.",
    )
    p.add_argument("--calls", type=int, default=200_000, help="calls per candidate (200,000)")
    p.add_argument("--block", type=int, default=100, help="calls per timed block (100)")
    p.add_argument(
        "--blocks-per-round", type=int, default=10, help="blocks per candidate per round (10)"
    )
    p.add_argument("--only", help="comma-separated candidate ids (default: all)")
    p.add_argument("--memory", action="store_true", help="RSS while the writer cannot write")
    p.add_argument("--events", type=int, default=1_000_000, help="--memory: events (1,000,000)")
    p.add_argument(
        "--queue-capacity", type=int, help="--memory: the log's queue_capacity (core default)"
    )
    p.add_argument(
        "--policy",
        help="the audit log's policy: builtin (default), off, or a TOML file",
    )
    p.add_argument("--keep-log", action="store_true", help="keep the audit log (a temp dir)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    if args.calls < 1 or args.block < 1 or args.blocks_per_round < 1 or args.events < 1:
        p.error("counts must be positive")
    return memory(args) if args.memory else bench(args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Our log is closed by now. The peers' exit hooks would go on retrying
    # the closed port (LangSmith's holds the exit for minutes): skip them.
    os._exit(code)
