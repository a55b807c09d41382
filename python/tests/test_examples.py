"""The runnable examples in examples/python: each runs as its own process,
writes a log, prints its trace id; the log verifies and holds the steps
the example takes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import agent_audit as audit

from conftest import check_log, env_with_package

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"


def run_example(name: str, log_dir: Path, key: Path) -> tuple[str, list[dict[str, Any]]]:
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), str(log_dir), "--key", str(key)],
        env=env_with_package(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    trace_id = proc.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), proc.stdout
    records = check_log(log_dir)
    return trace_id, [r for r in records if r.get("trace_id") == trace_id]


def steps(doc: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(kind, what, parent step) of each step of a trace document."""
    out = []
    for s in doc["steps"]:
        what = s.get("tool") or s.get("model") or s.get("decision") or s.get("agent")
        if s["kind"] == "retrieval":
            what = s["source"]
        out.append((s["kind"], what, s["parent_step"]))
    return out


def test_plain_agent(tmp_path: Path, signing_key: Path) -> None:
    log_dir = tmp_path / "audit"
    trace_id, records = run_example("plain_agent.py", log_dir, signing_key)
    assert records[0]["kind"] == "trace_start"
    assert records[-1]["kind"] == "trace_end" and records[-1]["outcome"] == "completed"
    doc = audit.show(log_dir, trace_id)
    assert doc["task"]["kind"] == "refund_request"
    assert steps(doc) == [
        ("llm_call", "rule-planner-1", None),
        ("decision", "call_tools", None),
        ("tool_call", "orders.lookup", None),
        ("agent_spawn", "policy-researcher-v1", None),
        ("tool_call", "kb.search", 4),
        ("retrieval", "kb", 4),
        ("llm_call", "rule-summarizer-1", 4),
        ("decision", "request_approval", None),
        ("human_review", "approved", None),
        ("tool_call", "payments.refund", None),
        ("llm_call", "rule-planner-1", None),
    ]
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["human_review"]["reviewer"] == "lead-7"
    refund = next(r for r in records if r.get("tool", {}).get("name") == "payments.refund")
    assert refund["risk"]["flags"] == ["moves_money"]
    assert refund["payload"]["data"]["args"] == {"order_id": "o-1001", "amount": 129.0}
    spawned = [r for r in records if r.get("parent_span_id") == by_kind["agent_spawn"]["span_id"]]
    assert {r["principal"]["agent_id"] for r in spawned} == {"policy-researcher-v1"}
    assert records[-1]["payload"]["data"]["output"] == "Refund rf-5521 is on its way."


def test_langchain_agent(tmp_path: Path, signing_key: Path) -> None:
    log_dir = tmp_path / "audit"
    trace_id, records = run_example("langchain_agent.py", log_dir, signing_key)
    doc = audit.show(log_dir, trace_id)
    assert doc["outcome"] == "completed"
    got = steps(doc)
    # The two tools of the first step run in parallel: either may come
    # first; the retrieval is the search tool's child (step ids from 1).
    search_step = got.index(("tool_call", "search_policy", None)) + 1
    assert sorted(got[2:5]) == sorted(
        [
            ("tool_call", "lookup_order", None),
            ("tool_call", "search_policy", None),
            ("retrieval", "InMemoryVectorStore", search_step),
        ]
    )
    assert got[:2] == [("llm_call", "scripted-support-1", None), ("decision", "call_tools", 1)]
    assert got[5:] == [
        ("llm_call", "scripted-support-1", None),
        ("decision", "call_tools", 6),
        ("tool_call", "issue_refund", None),
        ("llm_call", "scripted-support-1", None),
        ("decision", "call_tools", 9),
        ("tool_call", "escalate", None),
        ("llm_call", "scripted-support-1", None),
    ]
    statuses = {s.get("tool"): s["result_status"] for s in doc["steps"] if s["kind"] == "tool_call"}
    assert statuses == {
        "lookup_order": "ok",
        "search_policy": "ok",
        "issue_refund": "error",
        "escalate": "ok",
    }
    assert [s["input_tokens"] for s in doc["steps"] if s["kind"] == "llm_call"] == [
        40,
        90,
        120,
        150,
    ]
    end = records[-1]
    assert end["kind"] == "trace_end"
    assert end["payload"]["data"]["output"].startswith("Your refund needs a colleague")
