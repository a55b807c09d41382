"""Cross-language conformance: a log written from Python verifies in Node
and with the ``agent-audit`` binary, a log written from Node verifies in
Python and with the binary, and all three read back the same trace
document, the same verifier report and the same tampering findings.

Run by ``scripts/test-cross.sh`` (which builds the binary and sets
``AGENT_AUDIT_BIN``) with the Python of ``.venv``; the Node package must be
built (``scripts/test-node.sh``). Without ``AGENT_AUDIT_BIN`` the binary is
built here with cargo.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import agent_audit as audit
import jsonschema
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NODE_PKG = ROOT / "node"
SCHEMA = ROOT / "crates" / "agent-audit" / "schema" / "record.v1.schema.json"
WRITERS = ("python", "node")
# The agent's steps of the scenario, in the order the trace document lists them.
EXPECTED_STEPS = [
    ("tool_call", "orders.lookup", "ok", None),
    ("llm_call", "claude-opus", "ok", None),
    ("tool_call", "payments.refund", "error", None),
    ("agent_spawn", "researcher-v1", "ok", None),
    ("tool_call", "kb.search", "ok", 4),
    ("llm_call", "claude-haiku", "ok", 4),
    ("human_review", "approved", None, None),
    ("decision", "escalate_to_billing", None, None),
]
EXPECTED_KINDS = {
    "stream_start",
    "checkpoint",
    "trace_start",
    "tool_call",
    "llm_call",
    "agent_spawn",
    "human_review",
    "decision",
    "trace_end",
    "stream_end",
}


def run(
    cmd: list[str], *, cwd: Path = ROOT, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {p.returncode}\nstdout: {p.stdout.decode(errors='replace')}"
            f"\nstderr: {p.stderr.decode(errors='replace')}"
        )
    return p


def rust_binary() -> Path:
    env = os.environ.get("AGENT_AUDIT_BIN")
    if env:
        return Path(env)
    run(["cargo", "build", "--locked", "-q", "-p", "agent-audit-cli"])
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"]).stdout)
    return Path(meta["target_directory"]) / "debug" / "agent-audit"


class Clis:
    """The three command lines that run the same Rust code: the binary,
    ``python -m agent_audit`` and ``npx agent-audit``."""

    def __init__(self, binary: Path) -> None:
        npx = shutil.which("npx")
        assert npx, "npx (Node >= 20) is needed"
        self.commands = {
            "rust": ([str(binary)], ROOT),
            "python": ([sys.executable, "-m", "agent_audit"], ROOT),
            "node": ([npx, "--no-install", "agent-audit"], NODE_PKG),
        }

    def run(self, which: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd, cwd = self.commands[which]
        return run([*cmd, *args], cwd=cwd, check=False)

    def all(self, *args: str) -> dict[str, subprocess.CompletedProcess[bytes]]:
        return {which: self.run(which, *args) for which in self.commands}


def node_api(*args: str) -> Any:
    p = run(["node", str(HERE / "read_node.cjs"), *args])
    return json.loads(p.stdout)


def records(log_dir: Path) -> list[dict[str, Any]]:
    out = []
    for stream in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        for seg in sorted(stream.glob("seg-*.jsonl")):
            out.extend(json.loads(line) for line in seg.read_text("utf-8").splitlines() if line)
    return out


@pytest.fixture(scope="module")
def clis() -> Clis:
    return Clis(rust_binary())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, clis: Clis) -> dict[str, Any]:
    """The fixed signing key both writers use (made by the binary's
    keygen), its key id, and a second key nobody signed with."""
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("signing", "other"):
        p = clis.run("rust", "keygen", "--out", str(d / f"{name}.pem"))
        assert p.returncode == 0, p.stderr
        key_id = p.stdout.decode().split()[2]  # "key id <hex>"
        out[name] = {"pem": d / f"{name}.pem", "pub": d / f"{name}.pub.pem", "id": key_id}
    return out


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> dict[str, Any]:
    """One log per writer language: {lang: (log_dir, trace_id)}."""
    d = tmp_path_factory.mktemp("logs")
    key = str(keys["signing"]["pem"])
    writers = {
        "python": [sys.executable, str(HERE / "write_python.py")],
        "node": ["node", str(HERE / "write_node.cjs")],
    }
    out = {}
    for lang, cmd in writers.items():
        log_dir = d / lang
        p = run([*cmd, str(log_dir), key])
        trace_id = p.stdout.decode().strip()
        assert len(trace_id) == 32, p.stdout
        out[lang] = (log_dir, trace_id)
    return out


# ---------------------------------------------------------------- verify


@pytest.mark.parametrize("writer", WRITERS)
def test_log_verifies_in_every_language(
    writer: str, logs: dict[str, Any], keys: dict[str, Any], clis: Clis
) -> None:
    log_dir, _ = logs[writer]
    pub = str(keys["signing"]["pub"])

    py = audit.verify(log_dir, trusted_keys=[pub])
    assert py["tampered"] is False and py["exit_code"] == 0, py
    assert py["findings"] == [], py

    js = node_api("verify", str(log_dir), pub)
    assert js["tampered"] is False and js["exitCode"] == 0, js

    # The three command lines: exit 0 and the same report, byte for byte.
    outs = clis.all("verify", str(log_dir), "--json", "--key", pub)
    for which, p in outs.items():
        assert p.returncode == 0, (which, p.stdout, p.stderr)
    assert outs["rust"].stdout == outs["python"].stdout == outs["node"].stdout
    cli = json.loads(outs["rust"].stdout)

    # The APIs report what the command line reports.
    for report in (py, js):
        assert report["streams"] == cli["streams"]
        assert report["findings"] == cli["findings"]
        assert report["records"] == cli["records"]
    (stream,) = cli["streams"]
    assert stream["status"] == "clean"
    assert stream["key_id"] == keys["signing"]["id"]
    assert stream["checkpoints_verified"] >= 1
    assert stream["records"] == len(records(log_dir))

    # Plain `verify` too.
    for which, p in clis.all("verify", str(log_dir)).items():
        assert p.returncode == 0, (which, p.stdout, p.stderr)


@pytest.mark.parametrize("writer", WRITERS)
def test_wrong_trusted_key_is_reported_the_same_everywhere(
    writer: str, logs: dict[str, Any], keys: dict[str, Any], clis: Clis
) -> None:
    log_dir, _ = logs[writer]
    other = str(keys["other"]["pub"])
    py = audit.verify(log_dir, trusted_keys=[other])
    js = node_api("verify", str(log_dir), other)
    outs = clis.all("verify", str(log_dir), "--json", "--key", other)
    assert py["tampered"] and py["exit_code"] == 1
    assert js["tampered"] and js["exitCode"] == 1
    for which, p in outs.items():
        assert p.returncode == 1, (which, p.stdout, p.stderr)
    assert outs["rust"].stdout == outs["python"].stdout == outs["node"].stdout
    cli = json.loads(outs["rust"].stdout)
    codes = {f["code"] for f in cli["findings"]}
    assert "unknown_key" in codes, cli
    assert {f["code"] for f in py["findings"]} == codes == {f["code"] for f in js["findings"]}


# ------------------------------------------------------------------ show


@pytest.mark.parametrize("writer", WRITERS)
def test_trace_document_is_the_same_everywhere(
    writer: str, logs: dict[str, Any], clis: Clis
) -> None:
    log_dir, trace_id = logs[writer]
    outs = clis.all("show", str(log_dir), trace_id, "--json")
    for which, p in outs.items():
        assert p.returncode == 0, (which, p.stdout, p.stderr)
    assert outs["rust"].stdout == outs["python"].stdout, "python -m agent_audit show differs"
    assert outs["rust"].stdout == outs["node"].stdout, "npx agent-audit show differs"
    doc = json.loads(outs["rust"].stdout)
    assert audit.show(log_dir, trace_id) == doc
    assert node_api("show", str(log_dir), trace_id) == doc

    # The human-readable form is the same too.
    text = clis.all("show", str(log_dir), trace_id)
    assert text["rust"].returncode == 0
    assert text["rust"].stdout == text["python"].stdout == text["node"].stdout

    # ... and it is the scenario's document.
    assert doc["trace_id"] == trace_id
    assert doc["task"]["kind"] == "customer_support_resolution"
    assert doc["task"]["input_hash"].startswith("sha256:")
    assert doc["outcome"] == "completed"
    assert doc["retention_class"] == "standard_7y"
    assert doc["principal"] == {
        "agent_id": "support-v2",
        "session_id": "sess-9",
        "tenant_id": "acme",
        "user_id": "u_abc",
    }
    steps = doc["steps"]
    got = []
    for s in steps:
        name = s.get("tool") or s.get("model") or s.get("agent") or s.get("decision")
        got.append((s["kind"], name, s.get("result_status"), s["parent_step"]))
    assert got == EXPECTED_STEPS
    by_id = {s["step_id"]: s for s in steps}
    assert by_id[2]["input_tokens"] == 1420 and by_id[2]["output_tokens"] == 312
    assert by_id[6]["input_tokens"] == 800 and by_id[6]["output_tokens"] == 120
    assert by_id[3]["error_type"].endswith("PaymentDeclined")
    assert by_id[7]["reviewer"] == "lead@acme.example"
    for s in steps:
        if s["kind"] == "tool_call":
            assert s["args_hash"].startswith("sha256:") and s["args_redacted"] is False


@pytest.mark.parametrize("writer", WRITERS)
def test_trace_listing_is_the_same_everywhere(
    writer: str, logs: dict[str, Any], clis: Clis
) -> None:
    log_dir, trace_id = logs[writer]
    outs = clis.all("traces", str(log_dir), "--json")
    for which, p in outs.items():
        assert p.returncode == 0, (which, p.stdout, p.stderr)
    assert outs["rust"].stdout == outs["python"].stdout == outs["node"].stdout
    listing = json.loads(outs["rust"].stdout)
    assert [t["trace_id"] for t in listing] == [trace_id]
    assert listing[0]["steps"] == len(EXPECTED_STEPS)
    assert audit.traces(log_dir) == listing
    assert node_api("traces", str(log_dir)) == listing


# ------------------------------------------- the two writers agree


def _normalized_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """A trace document without what differs between any two runs (ids,
    times, durations); exception types without the Python module prefix
    (``__main__.PaymentDeclined`` and Node's ``PaymentDeclined``)."""
    doc = json.loads(json.dumps(doc))
    for k in ("trace_id", "started_at", "ended_at"):
        doc.pop(k)
    for s in doc["steps"]:
        for k in ("event_id", "span_id", "ts"):
            s.pop(k)
        s.pop("duration_ms", None)  # point events have none
        if "error_type" in s:
            s["error_type"] = s["error_type"].rsplit(".", 1)[-1]
    return doc


def test_same_task_gives_the_same_document_in_both_languages(logs: dict[str, Any]) -> None:
    docs = {lang: audit.show(*logs[lang]) for lang in WRITERS}
    # Same arguments, results and task input: the same hashes.
    assert _normalized_doc(docs["python"]) == _normalized_doc(docs["node"])


# Fields that differ between any two runs, or name the writer process.
_VOLATILE = {
    "event_id",
    "span_id",
    "parent_span_id",
    "trace_id",
    "ts",
    "duration_ms",
    "hash",
    "prev",
    "sig",
    "stream_id",
    "payload_digest",
    "payload",
    "root",
    "public_key",
    "pid",
    "host",
    "writer_id",
}
# How each language describes an exception: compared separately below.
_ERROR_FIELDS = {"error_type", "error_hash"}


def test_same_task_gives_the_same_records_in_both_languages(logs: dict[str, Any]) -> None:
    py = records(logs["python"][0])
    js = records(logs["node"][0])
    assert [r["kind"] for r in py] == [r["kind"] for r in js]
    for a, b in zip(py, js):
        skip = _VOLATILE | _ERROR_FIELDS
        fa = {k: v for k, v in a.items() if k not in skip}
        fb = {k: v for k, v in b.items() if k not in skip}
        assert fa == fb, a["kind"]
        assert set(a) & _ERROR_FIELDS == set(b) & _ERROR_FIELDS, a["kind"]
        # The erasable payloads: same arguments, results, inputs.
        pa = dict((a.get("payload") or {}).get("data") or {})
        pb = dict((b.get("payload") or {}).get("data") or {})
        pa.pop("error", None)
        pb.pop("error", None)
        assert pa == pb, a["kind"]


def test_error_part_has_the_same_shape_in_both_languages(logs: dict[str, Any]) -> None:
    def error_part(lang: str) -> dict[str, Any]:
        (rec,) = [
            r for r in records(logs[lang][0]) if r.get("tool", {}).get("name") == "payments.refund"
        ]
        part: dict[str, Any] = rec["payload"]["data"]["error"]
        return part

    py, js = error_part("python"), error_part("node")
    assert set(py) == set(js), (py, js)


def test_both_logs_hold_the_same_kinds(logs: dict[str, Any]) -> None:
    kinds = {lang: {r["kind"] for r in records(logs[lang][0])} for lang in WRITERS}
    assert kinds["python"] == kinds["node"] == EXPECTED_KINDS


# ---------------------------------------------------------------- schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text("utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    # Without rfc3339-validator installed jsonschema skips date-time silently.
    assert {"date-time", "uuid"} <= set(checker.checkers)
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


@pytest.mark.parametrize("writer", WRITERS)
def test_records_validate_against_the_schema(
    writer: str, logs: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    recs = records(logs[writer][0])
    assert len(recs) == 14
    failures = [
        f"seq {r.get('seq')} {r.get('kind')}: {e.json_path}: {e.message}"
        for r in recs
        for e in validator.iter_errors(r)
    ]
    assert failures == []


def test_schema_validation_can_fail(
    logs: dict[str, Any], validator: jsonschema.Draft202012Validator
) -> None:
    """The validator above really checks: broken copies of real records fail."""
    tool = next(r for r in records(logs["node"][0]) if r["kind"] == "tool_call")
    for broken in (
        {**tool, "kind": "tool_kall"},
        {**tool, "ts": "2026-13-45T99:00:00Z"},
        {**tool, "event_id": "not-a-uuid"},
        {k: v for k, v in tool.items() if k != "hash"},
        {**tool, "result_status": "fine"},
    ):
        assert not validator.is_valid(broken), broken


# ---------------------------------------------------------------- tamper


def _flip(path: Path, line_no: int, needle: bytes) -> None:
    """Flips the lowest bit of one byte: the first byte of ``needle`` in
    line ``line_no`` (0-based). An ASCII letter stays a letter, so the line
    is still valid JSON; only the content changed."""
    lines = path.read_bytes().split(b"\n")
    at = lines[line_no].index(needle)
    line = bytearray(lines[line_no])
    line[at] ^= 0x01
    lines[line_no] = bytes(line)
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("where", "needle", "code"),
    [
        # The hashed envelope: the tool's name.
        ("envelope", b'"name":"orders.lookup"', "hash_mismatch"),
        # The erasable payload: an argument value.
        ("payload", b'"order_id":"o-123"', "payload_mismatch"),
    ],
)
def test_tampered_node_log_is_reported_the_same_everywhere(
    where: str,
    needle: bytes,
    code: str,
    logs: dict[str, Any],
    clis: Clis,
    tmp_path: Path,
) -> None:
    src, _ = logs["node"]
    log_dir = tmp_path / "tampered"
    shutil.copytree(src, log_dir)
    (seg,) = log_dir.glob("*/seg-000000.jsonl")
    lines = seg.read_bytes().split(b"\n")
    line_no = next(
        i for i, line in enumerate(lines) if b'"kind":"tool_call"' in line and needle in line
    )
    # Aim inside the value, past the key: `"orders.lookup"` -> `"nrders.lookup"`.
    offset = needle.index(b":") + 2
    _flip(seg, line_no, needle[offset:])
    assert seg.read_bytes() != (src / seg.parent.name / seg.name).read_bytes()

    py = audit.verify(log_dir)
    js = node_api("verify", str(log_dir))
    outs = clis.all("verify", str(log_dir), "--json")
    assert py["tampered"] is True and py["exit_code"] == 1, py
    assert js["tampered"] is True and js["exitCode"] == 1, js
    for which, p in outs.items():
        assert p.returncode == 1, (which, p.stdout, p.stderr)
    assert outs["rust"].stdout == outs["python"].stdout == outs["node"].stdout
    cli = json.loads(outs["rust"].stdout)
    assert cli["streams"][0]["status"] == "tampered"

    def tampering(report: dict[str, Any]) -> list[tuple[str, Any]]:
        return sorted((f["code"], f.get("seq")) for f in report["findings"])

    assert tampering(py) == tampering(js) == tampering(cli)
    assert (code, line_no) in tampering(cli), cli["findings"]
    for f in cli["findings"]:
        if f["code"] == code:
            assert f["severity"] == "tampered"

    # The plain command lines say so as well.
    for which, p in clis.all("verify", str(log_dir)).items():
        assert p.returncode == 1, which
        assert b"TAMPERED" in p.stdout, (which, p.stdout)
