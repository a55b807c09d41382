"""Shared fixtures: every test that logs gets a fresh log directory whose
every stream is verified, and whose parent links are checked, after the
test."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_audit as audit
from agent_audit import _native


def read_records(log_dir: Path) -> list[dict[str, Any]]:
    """Every record of every stream of a log directory, in file order."""
    out: list[dict[str, Any]] = []
    for stream in sorted(p for p in Path(log_dir).iterdir() if p.is_dir()):
        for seg in sorted(stream.glob("seg-*.jsonl")):
            for line in seg.read_text("utf-8").splitlines():
                if line.strip():
                    out.append(json.loads(line))
    return out


def events(log_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The agent's events (no writer records), optionally of one kind."""
    writer_kinds = {"stream_start", "stream_end", "checkpoint", "gap"}
    return [
        r
        for r in read_records(log_dir)
        if r["kind"] not in writer_kinds and (kind is None or r["kind"] == kind)
    ]


def check_log(log_dir: Path, *, allow_open: bool = False) -> list[dict[str, Any]]:
    """Verifies the log (no tampering, every stream closed cleanly unless
    ``allow_open``), checks that no event was lost and that every
    parent_span_id names a span of the same trace. Returns the records."""
    report = audit.verify(log_dir)
    assert not report["tampered"], report["findings"]
    assert report["exit_code"] == 0
    for s in report["streams"]:
        assert s["status"] == "clean" or (allow_open and s["status"] == "open"), report
    records = read_records(log_dir)
    assert not [r for r in records if r["kind"] == "gap"], "events were lost"
    spans = {(r["trace_id"], r["span_id"]) for r in records if r.get("span_id")}
    for r in records:
        parent = r.get("parent_span_id")
        if parent is not None:
            assert (r["trace_id"], parent) in spans, f"dangling parent in {r}"
    return records


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Ed25519 key for the session, made with the CLI's keygen."""
    key = tmp_path_factory.mktemp("keys") / "signing.pem"
    assert _native.run_cli(["keygen", "--out", str(key)]) == 0
    return key


@pytest.fixture
def log_dir(tmp_path: Path, signing_key: Path) -> Iterator[Path]:
    """An initialised audit log that cannot drop events; verified after the test."""
    d = tmp_path / "audit"
    audit.init(
        dir=d,
        signing_key=signing_key,
        tenant_id="acme",
        agent_id="agent-1",
        overflow="block",
        block_timeout_ms=120_000,
    )
    yield d
    assert audit.shutdown(30)
    check_log(d)


@pytest.fixture(autouse=True)
def _no_log_leaks() -> Iterator[None]:
    yield
    audit.shutdown(30)


def flushed(d: Path) -> None:
    assert audit.flush(30)


def env_with_package() -> dict[str, str]:
    """Environment for subprocesses that import the package under test."""
    env = dict(os.environ)
    root = str(Path(audit.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env
