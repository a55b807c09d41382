"""@tool on every kind of callable: arguments by name, results, errors,
statuses, durations, overrides, and never breaking the tool."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

import agent_audit as audit

from conftest import events


def payload(record: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = record["payload"]["data"]
    return data


def only(log_dir: Path, kind: str = "tool_call") -> dict[str, Any]:
    audit.flush(30)
    evs = events(log_dir, kind)
    assert len(evs) == 1, evs
    return evs[0]


def test_sync_tool_records_args_by_name_result_and_duration(log_dir: Path) -> None:
    @audit.tool
    def add(a: int, b: int, *rest: int, scale: int = 1) -> int:
        return (a + b + sum(rest)) * scale

    assert add(1, 2, 3, 4, scale=2) == 20
    ev = only(log_dir)
    assert ev["tool"] == {"name": "add"}
    assert ev["result_status"] == "ok"
    assert ev["duration_ms"] >= 0
    assert payload(ev)["args"] == {"a": 1, "b": 2, "rest": [3, 4], "scale": 2}
    assert payload(ev)["result"] == 20
    assert ev["args_hash"].startswith("sha256:")
    assert ev["principal"] == {"tenant_id": "acme", "agent_id": "agent-1"}


def test_tool_with_arguments_and_error(log_dir: Path) -> None:
    @audit.tool(name="db.query", version="2.3.1")
    def query(sql: str) -> None:
        raise ValueError("no such table: orders")

    with pytest.raises(ValueError, match="no such table"):
        query("select * from orders")
    ev = only(log_dir)
    assert ev["tool"] == {"name": "db.query", "version": "2.3.1"}
    assert ev["result_status"] == "error"
    assert ev["error_type"] == "ValueError"
    assert payload(ev)["error"] == {"type": "ValueError", "message": "no such table: orders"}
    assert "result" not in payload(ev)


def test_timeout_and_cancelled_statuses(log_dir: Path) -> None:
    @audit.tool
    def slow() -> None:
        raise TimeoutError("took too long")

    @audit.tool
    async def cancelled() -> None:
        raise asyncio.CancelledError()

    with pytest.raises(TimeoutError):
        slow()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled())
    audit.flush(30)
    statuses = {e["tool"]["name"]: e["result_status"] for e in events(log_dir, "tool_call")}
    assert statuses == {"slow": "timeout", "cancelled": "cancelled"}


def test_wraps_semantics() -> None:
    def original(x: int) -> int:
        """Doubles x."""
        return 2 * x

    wrapped = audit.tool(original)
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Doubles x."
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]
    assert wrapped(4) == 8  # no log: the tool still runs


def test_methods_static_and_class_methods(log_dir: Path) -> None:
    class Repo:
        factor = 3

        def __init__(self) -> None:
            self.base = 10

        @audit.tool
        def get(self, key: str) -> str:
            return f"{key}:{self.base}"

        @staticmethod
        @audit.tool
        def static_inner(x: int) -> int:
            return x + 1

        @audit.tool
        @staticmethod
        def static_outer(x: int) -> int:
            return x + 2

        @audit.tool
        @classmethod
        def cls_outer(cls, x: int) -> int:
            return x * cls.factor

    r = Repo()
    assert r.get("k") == "k:10"
    assert Repo.static_inner(1) == 2
    assert r.static_outer(1) == 3
    assert Repo.cls_outer(2) == 6
    audit.flush(30)
    got = {e["tool"]["name"]: payload(e)["args"] for e in events(log_dir, "tool_call")}
    assert got == {
        "get": {"key": "k"},
        "static_inner": {"x": 1},
        "static_outer": {"x": 1},
        "cls_outer": {"x": 2},
    }


def test_async_tool(log_dir: Path) -> None:
    @audit.tool(name="fetch")
    async def fetch(url: str) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"url": url, "status": 200}

    assert asyncio.run(fetch("https://example.com")) == {
        "url": "https://example.com",
        "status": 200,
    }
    ev = only(log_dir)
    assert payload(ev)["result"]["status"] == 200


def test_generator_tool_records_items_and_return(log_dir: Path) -> None:
    @audit.tool
    def count(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)
        return "done"

    gen = count(3)
    assert list(gen) == [0, 1, 2]
    ev = only(log_dir)
    assert ev["result_status"] == "ok"
    assert payload(ev)["result"] == {"yielded": 3, "items": [0, 1, 2], "return": "done"}


def test_generator_closed_early_is_cancelled_and_send_throw_work(log_dir: Path) -> None:
    @audit.tool
    def echo():  # type: ignore[no-untyped-def]
        received = []
        while True:
            try:
                x = yield len(received)
            except KeyError:
                x = "thrown"
            received.append(x)

    g = echo()
    assert next(g) == 0
    assert g.send("a") == 1
    assert g.throw(KeyError("k")) == 2
    g.close()
    ev = only(log_dir)
    assert ev["result_status"] == "cancelled"
    assert ev["error_type"] == "GeneratorExit"


def test_async_generator_tool(log_dir: Path) -> None:
    @audit.tool
    async def stream(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            yield f"chunk{i}"

    async def main() -> list[str]:
        return [c async for c in stream(2)]

    assert asyncio.run(main()) == ["chunk0", "chunk1"]
    ev = only(log_dir)
    assert payload(ev)["result"] == {"yielded": 2, "items": ["chunk0", "chunk1"]}


def test_audit_extra_overrides_one_call(log_dir: Path) -> None:
    @audit.tool(metadata={"team": "core"})
    def lookup(order_id: str) -> str:
        return "shipped"

    lookup("o1", audit_extra={"name": "orders.lookup", "capture": "hash", "metadata": {"x": 1}})
    lookup("o2")
    audit.flush(30)
    first, second = events(log_dir, "tool_call")
    assert first["tool"]["name"] == "orders.lookup"
    assert first["metadata"] == {"team": "core", "x": 1}
    assert first["capture"] == "hash"
    assert "payload" not in first
    assert first["args_hash"].startswith("sha256:")
    assert second["tool"]["name"] == "lookup"
    assert payload(second)["args"] == {"order_id": "o2"}
    with pytest.raises(audit.ConfigError):
        lookup("o3", audit_extra={"nmae": "typo"})


def test_tool_keeps_working_when_logging_cannot(tmp_path: Path, signing_key: Path) -> None:
    d = tmp_path / "audit"
    log = audit.init(dir=d, signing_key=signing_key)

    @audit.tool
    def ok(x: int) -> int:
        return x

    log.shutdown(10)  # closed underneath the API
    before = audit.stats()["not_logged"]
    assert ok(5) == 5
    assert audit.decision("after_close") is False
    assert audit.stats()["not_logged"] == before + 2


def test_tool_before_init_just_runs() -> None:
    audit.shutdown()

    @audit.tool
    def f(x: int) -> int:
        return x * 2

    assert f(21) == 42


def test_partial_and_callable_objects(log_dir: Path) -> None:
    def base(a: int, b: int) -> int:
        return a - b

    class Scaler:
        def __call__(self, x: int) -> int:
            return x * 10

    p = audit.tool(functools.partial(base, 10), name="partial")
    s = audit.tool(Scaler(), name="scaler")
    assert p(3) == 7
    assert s(2) == 20
    audit.flush(30)
    got = {e["tool"]["name"]: payload(e)["args"] for e in events(log_dir, "tool_call")}
    assert got == {"partial": {"b": 3}, "scaler": {"x": 2}}
