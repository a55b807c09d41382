"""``init(export=...)``: the exporter thread next to the writer ships the
log through a real ``nats-server -js`` to the collector (``python -m
agent_audit collect``), whose central log holds every local record and
verifies; with the broker down, the agent's calls and its shutdown do not
wait for it. Needs ``nats-server`` (``scripts/test.sh`` installs it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_audit as audit

from conftest import check_log, env_with_package, read_records


def _nats_binary() -> str:
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "nats-server is not installed: these tests need a real NATS server with JetStream "
        "(Debian: `apt-get install nats-server`; scripts/test.sh installs it)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with JetStream on a free loopback port."""
    d = tmp_path_factory.mktemp("nats")
    port = _free_port()
    log = d / "nats-server.log"
    proc = subprocess.Popen(
        [
            _nats_binary(),
            *("-js", "-sd", str(d / "jetstream")),
            *("-a", "127.0.0.1", "-p", str(port), "-l", str(log)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while "Server is ready" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, f"nats-server exited: {log.read_text()}"
            assert time.monotonic() < deadline, "nats-server did not become ready"
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@audit.tool
def lookup_order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "status": "shipped"}


@audit.tool(name="refund.issue", version="1.2.0")
def issue_refund(order_id: str, amount: float) -> str:
    return f"refunded {amount} on {order_id}"


def _run_agent() -> list[Any]:
    with audit.trace("customer_support_resolution", user_id="u_abc", input="where is my order?"):
        out: list[Any] = [lookup_order(f"o-{i}") for i in range(5)]
        out.append(issue_refund("o-3", 12.5))
    return out


def test_export_ships_every_record_to_a_central_log_that_verifies(
    tmp_path: Path, signing_key: Path, nats_url: str
) -> None:
    local, central = tmp_path / "audit", tmp_path / "central"
    log = audit.init(
        dir=local, signing_key=signing_key, tenant_id="acme", agent_id="agent-1", export=nats_url
    )
    assert audit.export_stats() is not None
    out = _run_agent()
    assert out[-1] == "refunded 12.5 on o-3"
    assert audit.shutdown(10)

    records = check_log(local)
    stats = audit.export_stats()
    assert stats is not None
    assert stats["exporter"] == "nats"
    assert stats["state"] == "stopped" and stats["caught_up"], stats
    # Every local record was acknowledged by JetStream, each once.
    assert stats["shipped"] == len(records), stats
    assert stats["consecutive_failures"] == 0
    assert (local / ".ship-cursor.nats.json").is_file()

    public = signing_key.with_name("signing.pub.pem")
    collect = subprocess.run(
        [
            *(sys.executable, "-m", "agent_audit", "collect", "--from", nats_url),
            *("--to", str(central), "--trust", str(public), "--until-idle", "1.5"),
        ],
        env=env_with_package(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collect.returncode == 0, collect.stderr

    # The collector files the stream under its tenant and retention class;
    # other tests' streams may share the broker, so look at ours.
    partition = central / "acme" / "standard_7y"
    stream_dir = partition / log.stream_id
    assert stream_dir.is_dir(), sorted(p.name for p in partition.iterdir())
    shipped = [
        line
        for seg in sorted(stream_dir.glob("seg-*.jsonl"))
        for line in seg.read_text("utf-8").splitlines()
        if line.strip()
    ]
    local_lines = [
        line
        for seg in sorted(Path(log.stream_dir).glob("seg-*.jsonl"))
        for line in seg.read_text("utf-8").splitlines()
        if line.strip()
    ]
    # Every record of the local stream, byte for byte, in order.
    assert shipped == local_lines
    assert [r for r in read_records(partition) if r["kind"] == "tool_call"] == [
        r for r in records if r["kind"] == "tool_call"
    ]

    verify = subprocess.run(
        [sys.executable, "-m", "agent_audit", "verify", str(partition)],
        env=env_with_package(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = audit.verify(partition, trusted_keys=[public])
    assert not report["tampered"] and report["exit_code"] == 0, report["findings"]
    ours = [s for s in report["streams"] if s["stream_id"] == log.stream_id]
    assert len(ours) == 1 and ours[0]["status"] == "clean", report["streams"]


def test_a_broker_that_is_down_slows_neither_the_agent_nor_its_shutdown(
    tmp_path: Path, signing_key: Path
) -> None:
    local = tmp_path / "audit"
    down = f"nats://127.0.0.1:{_free_port()}"  # nothing listens there
    audit.init(dir=local, signing_key=signing_key, tenant_id="acme", export=down)
    t = time.monotonic()
    out = _run_agent()
    assert time.monotonic() - t < 1.0
    assert out[0] == {"order_id": "o-0", "status": "shipped"}

    # The stream closes at once; the drain of the exporter, which cannot
    # reach the broker, ends at the shutdown's bound.
    t = time.monotonic()
    assert audit.shutdown(2.0)
    took = time.monotonic() - t
    assert took < 5.0, f"shutdown took {took:.2f} s"
    stats = audit.export_stats()
    assert stats is not None
    assert stats["shipped"] == 0 and not stats["caught_up"], stats
    # The local log, the write-ahead log, is complete and verifies.
    records = check_log(local)
    assert len([r for r in records if r["kind"] == "tool_call"]) == 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_stands_by_and_the_parent_ships_its_stream(
    tmp_path: Path, signing_key: Path, nats_url: str
) -> None:
    local = tmp_path / "audit"
    audit.init(dir=local, signing_key=signing_key, tenant_id="acme", export=nats_url)
    _run_agent()
    deadline = time.monotonic() + 20
    while (audit.export_stats() or {}).get("state") != "shipping":
        assert time.monotonic() < deadline, audit.export_stats()
        time.sleep(0.01)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            t = time.monotonic()
            _run_agent()
            ok = audit.shutdown(5.0)
            stats = audit.export_stats() or {}
            # The parent's exporter holds the directory's lock: the child's
            # stands by, and its shutdown does not wait for a drain.
            code = 0 if ok and stats.get("shipped") == 0 and time.monotonic() - t < 2.0 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert audit.shutdown(10)
    records = check_log(local)
    assert len({r["stream_id"] for r in records if r["kind"] == "stream_start"}) == 2
    stats = audit.export_stats()
    assert stats is not None and stats["caught_up"], stats
    # The parent's exporter shipped both streams, each record once.
    assert stats["shipped"] == len(records), stats


def test_a_bad_export_url_is_a_config_error_and_opens_nothing(tmp_path: Path) -> None:
    for bad in ("ftp://host:21", "127.0.0.1:4222", "nats://host:notaport"):
        with pytest.raises(audit.ConfigError, match="export"):
            audit.init(dir=tmp_path / "audit", export=bad)
    assert audit.get_log() is None
    assert not (tmp_path / "audit").exists() or not any((tmp_path / "audit").iterdir())
