"""trace, llm_call, agent_spawn and the point events; flush, shutdown,
verify, show, traces; errors and their classes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agent_audit as audit
from agent_audit import _native

from conftest import env_with_package, events


def data(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = record["payload"]["data"]
    return out


def test_trace_context_manager_records_start_and_end(log_dir: Path) -> None:
    with audit.trace("support", user_id="u_abc", input={"ticket": "T-1"}) as t:
        assert audit.current_trace() is t.context
        t.flag("sends_external_message", score=40)
        t.set_output({"resolved": True})
    assert audit.current_trace() is None
    audit.flush(30)
    start, end = events(log_dir)
    assert start["kind"] == "trace_start" and end["kind"] == "trace_end"
    assert start["trace_id"] == end["trace_id"] == t.trace_id
    assert start["task_kind"] == "support"
    assert start["principal"]["user_id"] == "u_abc"
    assert data(start)["input"] == {"ticket": "T-1"}
    assert end["outcome"] == "completed"
    assert end["risk"] == {"flags": ["sends_external_message"], "score": 40}
    assert data(end)["output"] == {"resolved": True}
    doc = audit.show(log_dir, t.trace_id)
    assert doc["outcome"] == "completed"
    assert [s["trace_id"] for s in audit.traces(log_dir)] == [t.trace_id]


def test_trace_failed_cancelled_and_async(log_dir: Path) -> None:
    with pytest.raises(RuntimeError), audit.trace("fails"):
        raise RuntimeError("x")

    async def main() -> None:
        async with audit.trace("async_ok"):
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            async with audit.trace("cancelled"):
                raise asyncio.CancelledError()

    asyncio.run(main())
    audit.flush(30)
    ends = events(log_dir, "trace_end")
    assert [e["outcome"] for e in ends] == ["failed", "completed", "cancelled"]
    assert ends[0]["error_type"] == "RuntimeError"


def test_trace_as_decorator(log_dir: Path) -> None:
    @audit.trace("answer", user_id="u1")
    def answer(question: str) -> str:
        return question.upper()

    @audit.trace
    async def background(n: int) -> int:
        return n + 1

    assert answer("hi") == "HI"
    assert asyncio.run(background(1)) == 2
    audit.flush(30)
    starts = events(log_dir, "trace_start")
    assert [s["task_kind"] for s in starts] == ["answer", "background"]
    assert data(starts[0])["input"] == {"question": "hi"}
    ends = events(log_dir, "trace_end")
    assert data(ends[0])["output"] == "HI"


def test_llm_call(log_dir: Path) -> None:
    with (
        audit.trace("t"),
        audit.llm_call(
            model="claude-opus", provider="anthropic", messages=[{"role": "user", "content": "hi"}]
        ) as call,
    ):
        call.record(
            input_tokens=1420,
            output_tokens=312,
            cost_usd=0.02,
            finish_reason="stop",
            completion="hello",
        )
    ev = events(log_dir, "llm_call") if audit.flush(30) else []
    (ev,) = ev
    assert ev["model"] == {"name": "claude-opus", "provider": "anthropic"}
    assert (ev["input_tokens"], ev["output_tokens"]) == (1420, 312)
    assert ev["result_status"] == "ok"
    assert data(ev)["completion"] == "hello"
    assert data(ev)["messages"] == [{"role": "user", "content": "hi"}]


def test_async_llm_call_error(log_dir: Path) -> None:
    async def main() -> None:
        with pytest.raises(ConnectionError):
            async with audit.llm_call(model="gpt"):
                raise ConnectionError("reset")

    asyncio.run(main())
    audit.flush(30)
    (ev,) = events(log_dir, "llm_call")
    assert ev["result_status"] == "error"
    assert ev["error_type"] == "ConnectionError"


def test_agent_spawn_nests_child_events_under_the_child_agent(log_dir: Path) -> None:
    @audit.tool
    def search(q: str) -> list[str]:
        return [q]

    with audit.trace("t"), audit.agent_spawn("researcher-v1", task_kind="research") as s:
        search("x")
    audit.flush(30)
    (spawn,) = events(log_dir, "agent_spawn")
    (tool,) = events(log_dir, "tool_call")
    assert spawn["child_agent_id"] == "researcher-v1"
    assert spawn["span_id"] == s.span_id
    assert tool["parent_span_id"] == spawn["span_id"]
    assert tool["principal"]["agent_id"] == "researcher-v1"


def test_point_events(log_dir: Path) -> None:
    with audit.trace("t") as t:
        assert audit.decision(
            "call_tools",
            tools=["search"],
            confidence=0.9,
            reasoning="need data",
            risk_flags=["pii"],
            risk_score=10,
        )
        assert audit.memory("write", store="prefs", key="k1", content={"lang": "fr"})
        assert audit.retrieval(
            "refund policy",
            source="kb",
            documents=["d1", {"id": "d2", "score": 0.5, "content": "text"}],
        )
        assert audit.guardrail("prompt_guard_v2", "BENIGN", score=0.01, target="input")
        assert audit.human_review("approved", reviewer="alice", reason="looks fine", wait_ms=1200.0)
    audit.flush(30)
    evs = {e["kind"]: e for e in events(log_dir)}
    for kind in ("decision", "memory", "retrieval", "guardrail", "human_review"):
        assert evs[kind]["trace_id"] == t.trace_id
        assert evs[kind]["parent_span_id"] == t.span_id
    assert evs["decision"]["tools"] == ["search"]
    assert evs["decision"]["risk"] == {"flags": ["pii"], "score": 10}
    assert data(evs["decision"])["reasoning"] == "need data"
    assert evs["memory"]["operation"] == "write"
    assert evs["retrieval"]["retrieved_docs"] == [{"id": "d1"}, {"id": "d2", "score": 0.5}]
    assert data(evs["retrieval"])["documents"] == [{"id": "d2", "content": "text"}]
    assert evs["guardrail"]["guardrails"][0]["verdict"] == "BENIGN"
    assert evs["human_review"]["reviewer"] == "alice"


def test_invalid_events_raise_invalid_event_error(log_dir: Path) -> None:
    with pytest.raises(audit.InvalidEventError):
        audit.decision("x", confidence=float("nan"))
    with pytest.raises(audit.InvalidEventError):
        audit.decision("x", confidence=2.0)
    with pytest.raises(audit.InvalidEventError):
        audit.guardrail()
    assert issubclass(audit.InvalidEventError, audit.AuditError)


def test_config_errors_and_cause_chain(tmp_path: Path) -> None:
    with pytest.raises(audit.ConfigError, match="invalid option"):
        audit.init(dir=tmp_path / "a", not_an_option=1)
    with pytest.raises(audit.ConfigError):
        audit.init(dir=tmp_path / "a", capture="everything")
    with pytest.raises(audit.SigningKeyError):
        audit.init(dir=tmp_path / "a", signing_key=tmp_path / "missing.pem")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(audit.AuditIOError) as info:
        audit.init(dir=blocker / "sub")
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno is not None
    with pytest.raises(audit.InvalidLogError):
        audit.verify(tmp_path / "empty-not-a-log")
    with pytest.raises(audit.NotFoundError):
        os.makedirs(tmp_path / "x", exist_ok=True)
        d = tmp_path / "log"
        audit.init(dir=d)
        audit.shutdown()
        audit.show(d, "4bf92f3577b34da6a3ce929d0e0e4736")


def test_every_error_kind_has_a_class() -> None:
    classes = [
        audit.ConfigError,
        audit.InvalidEventError,
        audit.SigningKeyError,
        audit.AuditIOError,
        audit.ClosedError,
        audit.ParseError,
        audit.InvalidLogError,
        audit.ProofError,
        audit.NotFoundError,
        audit.ToolBlocked,
    ]
    assert len(_native.ERROR_KINDS) == 9
    for c in classes:
        assert issubclass(c, audit.AuditError)


def test_closed_log_raises_closed_error_natively(tmp_path: Path) -> None:
    log = audit.init(dir=tmp_path / "a")
    assert log.shutdown(10)
    with pytest.raises(audit.ClosedError):
        log.emit("decision", None, {"decision": "x"})


def test_flush_shutdown_and_verify(log_dir: Path) -> None:
    audit.decision("d")
    assert audit.flush(timeout=5.0) is True
    report = audit.verify(log_dir)
    assert report["tampered"] is False
    assert report["streams"][0]["status"] == "open"
    assert audit.stats()["written"] >= 2


def test_tampering_is_found(tmp_path: Path, signing_key: Path) -> None:
    d = tmp_path / "audit"
    audit.init(dir=d, signing_key=signing_key)
    audit.decision("approve_refund")
    audit.shutdown(10)
    seg = next(d.glob("*/seg-000000.jsonl"))
    seg.write_text(seg.read_text().replace("approve_refund", "approve_refunD"))
    report = audit.verify(d)
    assert report["tampered"] is True
    assert report["exit_code"] == 1
    assert any(f["code"] == "hash_mismatch" for f in report["findings"])


def test_python_dash_m_runs_the_cli(tmp_path: Path, signing_key: Path) -> None:
    d = tmp_path / "audit"
    audit.init(dir=d, signing_key=signing_key)
    with audit.trace("cli_task") as t:
        audit.decision("d")
    audit.shutdown(10)
    run = [sys.executable, "-m", "agent_audit"]
    env = env_with_package()
    ok = subprocess.run([*run, "verify", str(d)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    shown = subprocess.run(
        [*run, "show", str(d), t.trace_id, "--json"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0 and t.trace_id in shown.stdout
    listed = subprocess.run([*run, "traces", str(d)], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and t.trace_id in listed.stdout
    bad = subprocess.run(
        [*run, "verify", str(tmp_path / "nothing")], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2
    usage = subprocess.run([*run, "frobnicate"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
