"""The caller-side copy of Python values: every edge case becomes JSON
(or a marker), nothing raises, and what is recorded is what it says."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections import OrderedDict, namedtuple
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import agent_audit as audit
from agent_audit import _native

from conftest import events

cv = _native.capture_value


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Order:
    id: str
    items: list[str]
    when: dt.date


class Opaque:
    def __repr__(self) -> str:
        return "Opaque<42>"


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_scalars() -> None:
    assert cv(None) is None
    assert cv(True) is True
    assert cv(1.5) == 1.5
    assert cv("héllo") == "héllo"
    assert cv(2**53 - 1) == 2**53 - 1
    assert cv(-(2**53 - 1)) == -(2**53 - 1)
    assert cv(2**53) == str(2**53)
    assert cv(-(2**70)) == str(-(2**70))


def test_non_finite_floats_are_marked() -> None:
    assert cv(float("nan")) == {"$float": "NaN"}
    assert cv(float("inf")) == {"$float": "Infinity"}
    assert cv(float("-inf")) == {"$float": "-Infinity"}


def test_lone_surrogates_are_replaced_not_raised() -> None:
    assert cv("a\ud800b") == "a\ufffdb"
    assert cv({"\udcff": "\ud83d"}) == {"\ufffd": "\ufffd"}


def test_bytes_and_containers() -> None:
    assert cv(b"\x00\xff") == {"$bytes": "AP8="}
    assert cv(bytearray(b"ab")) == {"$bytes": "YWI="}
    assert cv(memoryview(b"ab")) == {"$bytes": "YWI="}
    assert cv((1, [2, {"k": (3,)}])) == [1, [2, {"k": [3]}]]
    assert cv({1: "a", None: "b", False: "c", 2.5: "d"}) == {
        "1": "a",
        "null": "b",
        "false": "c",
        "2.5": "d",
    }
    assert cv(OrderedDict(a=1)) == {"a": 1}
    assert cv({"b", "a", "c"}) == ["a", "b", "c"]
    assert cv(frozenset({3, 1})) == [1, 3]
    Point = namedtuple("Point", "x y")
    assert cv(Point(1, 2)) == {"x": 1, "y": 2}


def test_rich_types() -> None:
    u = uuid.UUID(int=1)
    assert cv(dt.datetime(2026, 4, 16, 13, 44, 37, tzinfo=dt.timezone.utc)) == (
        "2026-04-16T13:44:37+00:00"
    )
    assert cv(dt.date(2026, 4, 16)) == "2026-04-16"
    assert cv(dt.time(1, 2)) == "01:02:00"
    assert cv(u) == str(u)
    assert cv(decimal.Decimal("1.10")) == "1.10"
    assert cv(Color.RED) == "red"
    assert cv(Level.HIGH) == 3
    assert cv(PurePosixPath("/a/b")) == "/a/b"
    assert cv(Order("o1", ["x"], dt.date(2026, 1, 2))) == {
        "id": "o1",
        "items": ["x"],
        "when": "2026-01-02",
    }


def test_unknown_objects_by_type_and_bounded_repr() -> None:
    assert cv(Opaque()) == {"$type": "test_convert.Opaque", "$repr": "Opaque<42>"}
    assert cv(BadRepr()) == {"$type": "test_convert.BadRepr", "$repr": "<repr failed>"}
    long = cv(type("Long", (), {"__repr__": lambda self: "x" * 5000})())
    assert len(long["$repr"]) == 1001 and long["$repr"].endswith("…")
    assert cv(Order)["$type"] == "type"  # a class, not an instance


def test_cycles_are_marked() -> None:
    a: list[Any] = [1]
    a.append(a)
    assert cv(a) == [1, {"$cycle": True}]
    d: dict[str, Any] = {}
    d["self"] = d
    assert cv(d) == {"self": {"$cycle": True}}
    shared = [1]
    assert cv([shared, shared]) == [[1], [1]]  # shared is not a cycle


def test_depth_and_size_bounds() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(100):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    out = cv(deep)
    depth = 0
    while isinstance(out, list):
        out = out[0]
        depth += 1
    assert depth == 32
    assert out == {"$truncated": {"reason": "depth"}}
    big = cv(list(range(5000)))
    assert len(big) == 1001
    assert big[-1] == {"$truncated": {"reason": "items", "len": 5000}}
    bigd = cv({str(i): i for i in range(2000)})
    assert len(bigd) == 1001 and bigd["$truncated"] == {"reason": "items", "len": 2000}


def test_long_strings_are_not_cut_on_the_caller() -> None:
    s = "x" * 200_000
    assert cv(s) == s


def test_copy_budget(tmp_path: Path) -> None:
    log = audit.init(dir=tmp_path / "a", max_bytes=1000)
    out = log.capture_value(["a" * 600, "b" * 600, "c"])
    assert out[0] == "a" * 600
    assert out[1] == "b" * 600  # the value that crosses the budget is kept whole
    assert out[2] == {"$truncated": {"reason": "budget", "len": 3}}


def test_pydantic_and_numpy_when_installed() -> None:
    pydantic = pytest.importorskip("pydantic")

    class User(pydantic.BaseModel):
        name: str
        tags: list[str]

    assert cv(User(name="n", tags=["a"])) == {"name": "n", "tags": ["a"]}


def test_numpy_when_installed() -> None:
    np = pytest.importorskip("numpy")
    assert cv(np.int64(5)) == 5
    assert cv(np.float32(0.5)) == 0.5
    assert cv(np.arange(3)) == [0, 1, 2]
    assert cv(np.zeros(5000))["$type"] == "numpy.ndarray"


def test_hostile_values_do_not_break_the_tool(log_dir: Path) -> None:
    class Angry:
        def __repr__(self) -> str:
            raise SystemError("nope")

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("eq")

        __hash__ = object.__hash__

    class Shifty(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("items")

    @audit.tool
    def f(*args: Any, **kwargs: Any) -> Any:
        return args[0]

    cyc: list[Any] = []
    cyc.append(cyc)
    weird = [Angry(), Shifty(a=1), cyc, float("nan"), "\ud800", b"\x00" * 10, {Angry()}]
    assert f(*weird, k=Angry()) is weird[0]
    audit.flush(30)
    (ev,) = events(log_dir, "tool_call")
    args = ev["payload"]["data"]["args"]["args"]
    assert args[0]["$repr"] == "<repr failed>"
    assert args[1] == {"a": 1}
    assert args[2] == [{"$cycle": True}]
    assert args[3] == {"$float": "NaN"}
    assert args[4] == "\ufffd"
