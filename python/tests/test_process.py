"""Many threads, fork, SIGTERM and exit: nothing lost, nothing shared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import agent_audit as audit

from conftest import check_log, env_with_package, events, read_records


@audit.tool
def work(i: int) -> int:
    return i + 1


def test_eight_threads_ten_thousand_calls_each(log_dir: Path) -> None:
    n_threads, per_thread = 8, 10_000
    roots: dict[int, str] = {}
    barrier = threading.Barrier(n_threads)

    def run(t: int) -> None:
        with audit.trace(f"worker-{t}") as tr:
            roots[t] = tr.span_id
            barrier.wait()
            for i in range(per_thread):
                work(i)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert audit.flush(60)
    tools = events(log_dir, "tool_call")
    assert len(tools) == n_threads * per_thread
    assert audit.stats()["dropped"] == 0
    by_parent: dict[str, int] = {}
    for e in tools:
        by_parent[e["parent_span_id"]] = by_parent.get(e["parent_span_id"], 0) + 1
    assert by_parent == {span: per_thread for span in roots.values()}
    assert len({e["span_id"] for e in tools}) == len(tools)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_its_own_stream(log_dir: Path) -> None:
    with audit.trace("parent") as t:
        work(1)
        parent_stream = audit.get_log().stream_id  # type: ignore[union-attr]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(r)
                log = audit.get_log()
                assert log is not None and log.stream_id != parent_stream
                work(2)  # nested under the parent's trace, in the child's stream
                ok = audit.shutdown(20)
                os.write(w, f"{log.stream_id} {ok}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        child_stream, ok = os.read(r, 200).decode().split()
        os.close(r)
        assert os.WEXITSTATUS(status) == 0 and ok == "True"
        work(3)  # the parent's writer is untouched
    assert audit.get_log().stream_id == parent_stream  # type: ignore[union-attr]
    assert audit.flush(20)
    streams = {p.name for p in log_dir.iterdir() if p.is_dir()}
    assert streams == {parent_stream, child_stream}
    tools = events(log_dir, "tool_call")
    assert sorted(e["payload"]["data"]["args"]["i"] for e in tools) == [1, 2, 3]
    assert {e["parent_span_id"] for e in tools} == {t.span_id}
    assert len({e["span_id"] for e in tools}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_multiprocessing_fork_child_closes_its_stream(log_dir: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with audit.trace("mp"):
        p = ctx.Process(target=work, args=(41,))
        p.start()
        p.join(30)
        assert p.exitcode == 0
    assert audit.flush(20)
    args = sorted(e["payload"]["data"]["args"]["i"] for e in events(log_dir, "tool_call"))
    assert args == [41]
    # check_log (fixture teardown) requires the child's stream to be closed.


CHILD = textwrap.dedent(
    """
    import os, sys, time
    import agent_audit as audit

    audit.init(dir=sys.argv[1], signing_key=sys.argv[2], fsync="never",
               checkpoint_interval_ms=60000, exit_timeout=20)

    @audit.tool
    def step(i):
        return i

    with audit.trace("long_task"):
        i = 0
        while True:
            step(i)
            if i == 500:
                print("ready", flush=True)
            if i >= 500:
                time.sleep(0.001)
            i += 1
    """
)


def run_child(tmp_path: Path, signing_key: Path, script: str) -> subprocess.Popen[str]:
    path = tmp_path / "child.py"
    path.write_text(script)
    return subprocess.Popen(
        [sys.executable, str(path), str(tmp_path / "audit"), str(signing_key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with_package(),
    )


def test_sigterm_mid_run_keeps_every_event(tmp_path: Path, signing_key: Path) -> None:
    proc = run_child(tmp_path, signing_key, CHILD)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, err  # default behaviour after our flush
    records = check_log(tmp_path / "audit")
    steps = [r["payload"]["data"]["args"]["i"] for r in records if r["kind"] == "tool_call"]
    # Every call made before the signal is there, in order, with no gap.
    assert len(steps) > 500
    assert steps == list(range(len(steps)))
    assert records[-2]["kind"] == "stream_end"


def test_sigterm_chains_the_application_handler(tmp_path: Path, signing_key: Path) -> None:
    script = textwrap.dedent(
        """
        import signal, sys
        import agent_audit as audit
        got = []
        signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
        audit.init(dir=sys.argv[1], signing_key=sys.argv[2])
        audit.decision("before")
        signal.raise_signal(signal.SIGTERM)
        assert got == [signal.SIGTERM], got
        audit.decision("after")   # still logging: the app decides when to stop
        print("alive", flush=True)
        """
    )
    proc = run_child(tmp_path, signing_key, script)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "alive"
    records = check_log(tmp_path / "audit")  # closed by atexit
    assert [r["decision"] for r in records if r["kind"] == "decision"] == ["before", "after"]


def test_atexit_closes_the_stream(tmp_path: Path, signing_key: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import agent_audit as audit
        audit.init(dir=sys.argv[1], signing_key=sys.argv[2])
        for i in range(1000):
            audit.memory("write", key=str(i))
        """
    )
    proc = run_child(tmp_path, signing_key, script)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = check_log(tmp_path / "audit")
    assert len([r for r in records if r["kind"] == "memory"]) == 1000
    assert [r for r in read_records(tmp_path / "audit") if r["kind"] == "stream_end"]
