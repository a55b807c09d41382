"""Policy from Python: a blocked tool never runs, approvals approve and
deny (sync and async approvers, timeouts, no approver), sequence rules
span the tools of one trace only, alerts reach their handler, and a bad
policy file fails ``init`` with its line."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_audit as audit
from agent_audit import _native

from conftest import check_log, events

# One rule per action and a blocking sequence; the Node tests use it too.
POLICY_FILE = Path(__file__).resolve().parents[2] / "tests" / "policy" / "flows.toml"
POLICY = POLICY_FILE.read_text("utf-8")


@pytest.fixture
def policy_log(tmp_path: Path, signing_key: Path) -> Iterator[Path]:
    """A log under POLICY; verified (and parent links checked) after the test."""
    d = tmp_path / "audit"
    audit.init(
        dir=d,
        signing_key=signing_key,
        tenant_id="acme",
        agent_id="agent-1",
        retention_class="standard_7y",
        policy=POLICY_FILE,
        overflow="block",
        block_timeout_ms=120_000,
    )
    yield d
    audit.set_approver(None)
    audit.on_alert(None)
    assert audit.shutdown(30)
    check_log(d)


def steps_of(log_dir: Path, trace_id: str) -> list[dict[str, Any]]:
    assert audit.flush(30)
    steps: list[dict[str, Any]] = audit.show(log_dir, trace_id)["steps"]
    return steps


def test_a_blocked_tool_never_runs_and_the_log_shows_it(policy_log: Path) -> None:
    ran: list[str] = []

    @audit.tool(name="db.query")
    def query(sql: str) -> str:
        ran.append(sql)
        return "rows"

    with audit.trace("cleanup") as t:
        assert query("SELECT 1") == "rows"
        with pytest.raises(audit.ToolBlocked) as info:
            query("DROP TABLE orders")
    assert ran == ["SELECT 1"]
    err = info.value
    assert isinstance(err, audit.AuditError)
    assert (err.rule_id, err.tool, err.action, err.review) == ("no_drop", "db.query", "block", None)
    assert "no_drop" in str(err)

    steps = steps_of(policy_log, t.trace_id)
    tools = [s for s in steps if s["kind"] == "tool_call"]
    assert [s["result_status"] for s in tools] == ["ok", "blocked"]
    blocked = tools[1]
    assert blocked["risk_score"] == 80
    assert "destructive_operation" in blocked["risk_flags"]
    policy = [s for s in steps if s["kind"] == "policy"]
    assert [p["rule_id"] for p in policy] == ["no_drop"]
    assert policy[0]["parent_step"] == blocked["step_id"]
    raw = [e for e in events(policy_log, "tool_call") if e["result_status"] == "blocked"]
    assert raw[0]["payload"]["data"]["args"] == {"sql": "DROP TABLE orders"}
    assert raw[0]["error_type"] == "agent_audit.errors.ToolBlocked"
    assert raw[0]["policy_version"] == "flows-1"


def test_tools_no_blocking_rule_names_skip_the_check(policy_log: Path) -> None:
    log = audit.get_log()
    assert log is not None
    assert log.gate("search.web") is None
    assert log.gate("db.query") is not None
    assert log.gate("payments.refund") is not None
    # Both ends of a blocking sequence are checked.
    assert log.gate("fs.read") is not None
    assert log.gate("email.send") is not None
    assert log.policy_version == "flows-1"


def test_sync_approver_approves_one_call_and_denies_another(policy_log: Path) -> None:
    asked: list[audit.ApprovalRequest] = []
    refunded: list[str] = []

    def approver(req: audit.ApprovalRequest) -> audit.Approval:
        asked.append(req)
        ok = req.args["order_id"] == "o-1"
        return audit.Approval(ok, reviewer="lead@example.com", reason=f"checked {req.args}")

    audit.set_approver(approver)

    @audit.tool(name="payments.refund")
    def refund(order_id: str, amount: int) -> str:
        refunded.append(order_id)
        return "refunded"

    with audit.trace("refunds") as t:
        assert refund("o-1", 20) == "refunded"
        with pytest.raises(audit.ToolBlocked) as info:
            refund("o-2", 9000)
    assert refunded == ["o-1"]
    assert info.value.rule_id == "refund_approval"
    assert info.value.review == "denied"
    assert [r.args for r in asked] == [
        {"order_id": "o-1", "amount": 20},
        {"order_id": "o-2", "amount": 9000},
    ]
    assert asked[0].rule_id == "refund_approval"
    assert asked[0].flags == ["money_movement"]
    assert asked[0].trace_id == t.trace_id

    steps = steps_of(policy_log, t.trace_id)
    reviews = [s for s in steps if s["kind"] == "human_review"]
    assert [r["decision"] for r in reviews] == ["approved", "denied"]
    assert all(r["reviewer"] == "lead@example.com" for r in reviews)
    tools = [s for s in steps if s["kind"] == "tool_call"]
    assert [s["result_status"] for s in tools] == ["ok", "blocked"]
    # Each review names the call it decided.
    raw = events(policy_log, "human_review")
    assert [r["subject_span_id"] for r in raw] == [s["span_id"] for s in tools]
    assert all(r["rule_id"] == "refund_approval" and r["wait_ms"] >= 0 for r in raw)


def test_async_approver_with_an_async_tool(policy_log: Path) -> None:
    async def approver(req: audit.ApprovalRequest) -> bool:
        await asyncio.sleep(0.01)
        return bool(req.args["amount"] < 100)

    audit.set_approver(approver)
    refunded: list[int] = []

    @audit.tool(name="payments.refund")
    async def refund(order_id: str, amount: int) -> str:
        refunded.append(amount)
        return "ok"

    async def main() -> str:
        async with audit.trace("async refunds") as t:
            assert await refund("o-1", 50) == "ok"
            with pytest.raises(audit.ToolBlocked):
                await refund("o-2", 500)
            # The loop kept running while approvals were pending.
            await asyncio.gather(refund("o-3", 10), refund("o-4", 20))
        return t.trace_id

    trace_id = asyncio.run(main())
    assert sorted(refunded) == [10, 20, 50]
    decisions = [s["decision"] for s in steps_of(policy_log, trace_id) if "decision" in s]
    assert sorted(decisions) == ["approved", "approved", "approved", "denied"]


def test_no_approver_a_failing_one_and_a_timeout_all_deny(policy_log: Path) -> None:
    @audit.tool(name="payments.refund")
    def refund(order_id: str) -> str:
        raise AssertionError("must not run")

    with audit.trace("no approver") as t1, pytest.raises(audit.ToolBlocked):
        refund("o-1")

    def broken(req: audit.ApprovalRequest) -> bool:
        raise RuntimeError("approval service down")

    audit.set_approver(broken)
    with audit.trace("broken approver") as t2, pytest.raises(audit.ToolBlocked):
        refund("o-2")

    release = threading.Event()

    def slow(req: audit.ApprovalRequest) -> bool:
        release.wait(10)
        return True

    audit.set_approver(slow, timeout=0.2)
    started = time.monotonic()
    with audit.trace("slow approver") as t3, pytest.raises(audit.ToolBlocked) as info:
        refund("o-3")
    release.set()
    assert time.monotonic() - started < 5
    assert info.value.review == "timeout"
    audit.set_approver(None, timeout=30)

    got = {}
    for t in (t1, t2, t3):
        reviews = [s for s in steps_of(policy_log, t.trace_id) if s["kind"] == "human_review"]
        got[t.trace_id] = reviews[0]["decision"]
    assert list(got.values()) == ["denied", "denied", "timeout"]
    reasons = [r["payload"]["data"]["reason"] for r in events(policy_log, "human_review")]
    assert reasons[0] == "no approver is registered"
    assert "RuntimeError: approval service down" in reasons[1]
    assert "no answer within 0.2 s" in reasons[2]


def test_sequence_rule_fires_within_one_trace_not_across_two(policy_log: Path) -> None:
    sent: list[str] = []

    @audit.tool(name="fs.read")
    def read(path: str) -> str:
        return "AWS_SECRET=..."

    @audit.tool(name="email.send")
    def send(to: str, body: str) -> None:
        sent.append(to)

    with audit.trace("exfil") as t:
        read("/app/.env")
        with pytest.raises(audit.ToolBlocked) as info:
            send("someone@outside.example", "here you go")
    assert info.value.rule_id == "secret_then_send"
    assert sent == []

    with audit.trace("read only"):
        read("/app/.env")
    with audit.trace("mail only") as t_mail:
        send("customer@example.com", "your order shipped")
    assert sent == ["customer@example.com"]

    blocked = [s for s in steps_of(policy_log, t.trace_id) if s.get("result_status") == "blocked"]
    assert len(blocked) == 1 and "possible_exfiltration" in blocked[0]["risk_flags"]
    mail = [s for s in steps_of(policy_log, t_mail.trace_id) if s["kind"] == "tool_call"]
    assert mail[0]["result_status"] == "ok"
    assert "possible_exfiltration" not in mail[0]["risk_flags"]


def test_generator_tools_are_checked_before_their_body(policy_log: Path) -> None:
    ran: list[str] = []

    @audit.tool(name="db.stream")
    def rows(sql: str) -> Iterator[int]:
        ran.append(sql)
        yield 1

    @audit.tool(name="db.astream")
    async def arows(sql: str) -> AsyncIterator[int]:
        ran.append(sql)
        yield 1

    async def consume() -> None:
        async for _ in arows("drop table t"):
            pass

    with audit.trace("gens"):
        with pytest.raises(audit.ToolBlocked):
            rows("DROP TABLE t")
        with pytest.raises(audit.ToolBlocked):
            asyncio.run(consume())
        assert list(rows("select 1")) == [1]
    assert ran == ["select 1"]
    assert audit.flush(30)
    statuses = sorted(e["result_status"] for e in events(policy_log, "tool_call"))
    assert statuses == ["blocked", "blocked", "ok"]


def test_audit_extra_renaming_a_call_is_checked_under_the_new_name(policy_log: Path) -> None:
    ran: list[str] = []

    @audit.tool(name="misc.run")
    def run(sql: str) -> None:
        ran.append(sql)

    run("DROP TABLE x")  # misc.run: no blocking rule
    with pytest.raises(audit.ToolBlocked):
        run("DROP TABLE x", audit_extra={"name": "db.exec"})
    assert ran == ["DROP TABLE x"]


def test_alerts_reach_the_handler_off_the_agent_thread(policy_log: Path) -> None:
    got: list[tuple[audit.Alert, str]] = []
    done = threading.Event()

    def handler(alert: audit.Alert) -> None:
        got.append((alert, threading.current_thread().name))
        done.set()

    audit.on_alert(handler)

    @audit.tool(name="reports.export")
    def export(query: str) -> str:
        return "ok"

    with audit.trace("export") as t:
        export("select * from all_customers")
        export("select * from one_customer")
    assert audit.flush(30)
    assert done.wait(10)
    time.sleep(0.1)
    assert len(got) == 1
    alert, thread = got[0]
    assert alert.rule_id == "big_export"
    assert alert.reason == "Large exports get a look"
    assert alert.flags == ["bulk_export"] and alert.score == 20
    assert alert.trace_id == t.trace_id and alert.tool == "reports.export"
    assert thread != threading.current_thread().name
    policy = [s for s in steps_of(policy_log, t.trace_id) if s["kind"] == "policy"]
    assert [p["rule_id"] for p in policy] == ["big_export"]


def test_a_bad_policy_fails_init_with_file_line_and_reason(
    tmp_path: Path, signing_key: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('version = "x"\n\n[[rule]]\nid = "r"\ntools = ["t"]\naction = "blok"\n', "utf-8")
    with pytest.raises(audit.ConfigError) as info:
        audit.init(dir=tmp_path / "a", signing_key=signing_key, policy=bad)
    msg = str(info.value)
    assert "bad.toml:6" in msg and "blok" in msg, msg
    with pytest.raises(audit.ConfigError):
        audit.init(dir=tmp_path / "a", signing_key=signing_key, policy=42)  # type: ignore[arg-type]
    with pytest.raises(audit.ConfigError):
        audit.set_approver("yes")  # type: ignore[arg-type]
    assert audit.get_log() is None


def test_policy_text_and_the_default_builtin_pack(tmp_path: Path, signing_key: Path) -> None:
    d = tmp_path / "audit"
    audit.init(dir=d, signing_key=signing_key, policy_toml=POLICY)
    log = audit.get_log()
    assert log is not None and log.policy_version == "flows-1"
    audit.init(dir=d, signing_key=signing_key)
    log = audit.get_log()
    assert log is not None
    # The built-in pack flags and routes for review; it blocks nothing.
    assert log.gate("shell.exec") is None
    assert isinstance(_native.AuditLog, type)

    @audit.tool(name="shell.exec")
    def sh(cmd: str) -> str:
        return "done"

    with audit.trace("builtin") as t:
        assert sh("rm -rf / --no-preserve-root") == "done"
    assert audit.shutdown(30)
    check_log(d)
    step = next(s for s in audit.show(d, t.trace_id)["steps"] if s["kind"] == "tool_call")
    assert step["result_status"] == "ok"
    assert "destructive_operation" in step["risk_flags"], step
