"""``python -m agent_audit.bench``: a short run prints every candidate's
row (a peer's row may only be missing when the peer is not installed),
the targets and a verified audit log; the memory mode accounts for every
event while the log cannot be written."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent_audit import bench

from conftest import env_with_package

NUM = r"-?\d+\.\d+"
ROW = re.compile(
    rf"^(?P<id>\w+)\s+.+?\s+(?P<p50>{NUM})\s+(?P<p99>{NUM})\s+(?P<o50>{NUM})\s+(?P<o99>{NUM})"
    rf"\s+(?P<xf>{NUM}x|-)\s+(?P<xo>{NUM}x|-)$"
)
PEER_MODULES = {"otel": "opentelemetry.sdk.trace", "langfuse": "langfuse", "langsmith": "langsmith"}


def run_bench(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_audit.bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_with_package(),
    )


def peer_installed(key: str) -> bool:
    mod = PEER_MODULES.get(key)
    return mod is None or importlib.util.find_spec(mod) is not None


def test_bench_prints_every_row(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    p = run_bench("--calls", "2000", "--json", str(out_json))
    assert p.returncode == 0, p.stderr
    rows = {}
    for line in p.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rows[m["id"]] = m
    for key, label, dist in bench.CANDIDATES:
        if peer_installed(key):
            assert key in rows, f"no row for {key}:\n{p.stdout}"
            assert label in rows[key].group(0)
        else:
            assert re.search(rf"^{key}\s+.*not installed", p.stdout, re.M), p.stdout
            assert f"{key} ({dist})" in p.stdout  # named among the missing peers
    if all(peer_installed(k) for k in PEER_MODULES):
        assert "missing peers: none" in p.stdout
    # The bare call is the baseline: no overhead over itself.
    assert float(rows["bare"]["o50"]) == 0.0
    for key in ("floor", "audit"):
        assert float(rows[key]["p50"]) > 0
    assert rows["floor"]["xf"] == "1.00x"
    assert "target: @audit.tool overhead <= 1.5 x floor + 2 us" in p.stdout
    if peer_installed("otel"):
        assert "target: @audit.tool overhead <= OpenTelemetry's / 5" in p.stdout
        assert rows["otel"]["xo"] == "1.00x"
    assert "audit log:" in p.stdout and "verify clean" in p.stdout

    result = json.loads(out_json.read_text())
    assert result["calls"] == 2000
    assert set(result["candidates"]) == set(rows)
    # Every timed call of @audit.tool was logged and the log verified.
    writer = result["audit_writer"]
    assert writer["dropped"] == 0 and writer["not_logged"] == 0
    assert result["audit_log"]["exit_code"] == 0
    assert result["audit_log"]["records"] > 2000
    assert set(result["targets"]) == ({"floor", "otel"} if peer_installed("otel") else {"floor"})


def test_bench_rejects_unknown_candidates() -> None:
    p = run_bench("--calls", "100", "--only", "bare,nope")
    assert p.returncode == 2
    assert "nope" in p.stderr


def test_bench_imports_no_peer() -> None:
    code = (
        "import sys, agent_audit.bench; "
        "print([m for m in ('langfuse', 'langsmith', 'opentelemetry.sdk') if m in sys.modules])"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env_with_package()
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.skipif(sys.platform != "linux", reason="--memory reads /proc/self/statm")
def test_bench_memory_mode_accounts_for_every_event(tmp_path: Path) -> None:
    out_json = tmp_path / "memory.json"
    p = run_bench(
        "--memory", "--events", "30000", "--queue-capacity", "2048", "--json", str(out_json)
    )
    assert p.returncode == 0, p.stderr
    for word in ("RSS start", "peak", "end", "writer while blocked", "verify: clean"):
        assert word in p.stdout, p.stdout
    r = json.loads(out_json.read_text())
    # The writer could not write, so most events were dropped and counted...
    assert r["writer_blocked"]["io_errors"] > 0
    assert r["lost"] > 20_000
    # ... and once it could, every event is in the log or in a gap record.
    assert r["events_written"] + r["lost"] == 10_000 + 30_000 + 4
    assert r["verify_exit_code"] == 0
    assert r["rss_start"] <= r["rss_peak"]
