"""Parent/child links through nested tools, asyncio, thread pools and
generators resumed in other contexts; OpenTelemetry ids."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import agent_audit as audit
from agent_audit.context import run_in_context, wrap_executor

from conftest import events


@audit.tool
def leaf(i: int) -> int:
    return i


@audit.tool
def middle(i: int) -> int:
    return leaf(i) + leaf(i + 1)


def by_span(log_dir: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    audit.flush(30)
    return {e["span_id"]: e for e in events(log_dir)}


def test_nested_tools_link_to_their_callers(log_dir: Path) -> None:
    with audit.trace("t") as t:
        middle(1)
    spans = by_span(log_dir)
    (mid,) = [e for e in spans.values() if e.get("tool", {}).get("name") == "middle"]
    leaves = [e for e in spans.values() if e.get("tool", {}).get("name") == "leaf"]
    assert mid["parent_span_id"] == t.span_id
    assert [lf["parent_span_id"] for lf in leaves] == [mid["span_id"]] * 2
    assert {e["trace_id"] for e in spans.values()} == {t.trace_id}


def test_tool_outside_a_trace_roots_its_own(log_dir: Path) -> None:
    middle(5)
    spans = by_span(log_dir)
    (mid,) = [e for e in spans.values() if e["tool"]["name"] == "middle"]
    assert "parent_span_id" not in mid
    assert all(e["trace_id"] == mid["trace_id"] for e in spans.values())


def test_gather_and_create_task(log_dir: Path) -> None:
    @audit.tool
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.001 * (3 - i))
        return leaf(i)

    @audit.tool
    async def fan_out() -> list[int]:
        task = asyncio.create_task(fetch(10))
        results = await asyncio.gather(*(fetch(i) for i in range(3)))
        return [*results, await task]

    async def main() -> str:
        async with audit.trace("async") as t:
            assert await fan_out() == [0, 1, 2, 10]
            return t.trace_id

    trace_id = asyncio.run(main())
    spans = by_span(log_dir)
    (fan,) = [e for e in spans.values() if e.get("tool", {}).get("name") == "fan_out"]
    fetches = [e for e in spans.values() if e.get("tool", {}).get("name") == "fetch"]
    assert len(fetches) == 4
    assert {f["parent_span_id"] for f in fetches} == {fan["span_id"]}
    for lf in (e for e in spans.values() if e.get("tool", {}).get("name") == "leaf"):
        assert spans[lf["parent_span_id"]]["tool"]["name"] == "fetch"
    assert {e["trace_id"] for e in spans.values()} == {trace_id}


def test_thread_pool_with_wrap_executor_and_run_in_context(log_dir: Path) -> None:
    with audit.trace("pool") as t, ThreadPoolExecutor(4) as pool:
        wrapped = wrap_executor(pool)
        assert list(wrapped.map(leaf, range(4))) == [0, 1, 2, 3]
        assert wrapped.submit(leaf, 7).result() == 7
        assert pool.submit(run_in_context(leaf), 8).result() == 8
    leaves = [e for e in by_span(log_dir).values() if e.get("tool", {}).get("name") == "leaf"]
    assert len(leaves) == 6
    assert {e["parent_span_id"] for e in leaves} == {t.span_id}


def test_plain_thread_without_helpers_starts_fresh_traces(log_dir: Path) -> None:
    with audit.trace("t") as t:
        th = threading.Thread(target=leaf, args=(1,))
        th.start()
        th.join()
    (lf,) = [e for e in by_span(log_dir).values() if e.get("tool")]
    assert lf["trace_id"] != t.trace_id  # threads do not inherit contextvars


def test_sync_generator_resumed_in_other_contexts(log_dir: Path) -> None:
    @audit.tool
    def produce(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield leaf(i)

    with audit.trace("gen") as t:
        gen = produce(3)
    # Each step runs in a different context: no "Token was created in a
    # different Context" error, and the children still link to the tool.
    got = [contextvars.copy_context().run(next, gen) for _ in range(3)]
    assert got == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(gen)
    assert audit.current_trace() is None
    spans = by_span(log_dir)
    (prod,) = [e for e in spans.values() if e.get("tool", {}).get("name") == "produce"]
    assert prod["parent_span_id"] == t.span_id
    leaves = [e for e in spans.values() if e.get("tool", {}).get("name") == "leaf"]
    assert {lf["parent_span_id"] for lf in leaves} == {prod["span_id"]}


def test_async_generator_across_awaits_and_tasks(log_dir: Path) -> None:
    @audit.tool
    async def stream(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            await asyncio.sleep(0)
            yield leaf(i)

    async def main() -> None:
        async with audit.trace("stream") as t:
            agen = stream(4)
            first = await agen.__anext__()
            # Continue the same generator from another task (another context).
            second = await asyncio.create_task(agen.__anext__())
            rest = [x async for x in agen]
            assert [first, second, *rest] == [0, 1, 2, 3]
            assert audit.current_trace() is t.context

    asyncio.run(main())
    spans = by_span(log_dir)
    (st,) = [e for e in spans.values() if e.get("tool", {}).get("name") == "stream"]
    assert st["result_status"] == "ok"
    leaves = [e for e in spans.values() if e.get("tool", {}).get("name") == "leaf"]
    assert len(leaves) == 4
    assert {lf["parent_span_id"] for lf in leaves} == {st["span_id"]}


def test_opentelemetry_ids_are_attached(log_dir: Path) -> None:
    otel_trace = pytest.importorskip("opentelemetry.trace")
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk.TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        ctx = span.get_span_context()
        leaf(1)
        audit.decision("d")
    leaf(2)
    audit.flush(30)
    evs = events(log_dir)
    want = {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}
    assert [e.get("otel") for e in evs] == [want, want, None]
    assert otel_trace.get_current_span().get_span_context().is_valid is False
