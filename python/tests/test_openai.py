"""OpenAI: the real ``openai`` client, wrapped with ``wrap_openai``, against
a local HTTP server that answers with recorded OpenAI payloads (chat
completions, responses, and their server-sent-event streams). Every log
is verified and its parent links checked (conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional, Union

import openai
import pydantic
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

import agent_audit as audit
from agent_audit.openai import wrap_openai

from conftest import events

# -- recorded payloads (OpenAI's wire format) -------------------------------

CREATED = 1767225600


def chat_completion(
    message: dict[str, Any], finish: str, usage: tuple[int, int], model: str = "gpt-4o-2024-08-06"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-CqXk2bWm4m9n1ZbA0dQ7hY3sT8uVw",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, "annotations": [], **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_f33640a400",
    }


WEATHER_CALLS = chat_completion(
    {
        "content": None,
        "tool_calls": [
            {
                "id": "call_Wt1qA8s0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_Tm9xK2p4",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"timezone":"Europe/Paris"}'},
            },
        ],
    },
    "tool_calls",
    (82, 41),
)
WEATHER_ANSWER = chat_completion(
    {"content": "It is sunny and 21 °C in Paris, at 14:05."}, "stop", (151, 16)
)


def chunk(delta: dict[str, Any], finish: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-CqXk9PdFv0r2Lq4Y7mNa1TbC6ZeHs",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-4o-2024-08-06",
        "service_tier": "default",
        "system_fingerprint": "fp_f33640a400",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
        **extra,
    }


STREAM_TEXT = ["It", " is", " sunny", " in", " Paris", "."]
TEXT_STREAM = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    *(chunk({"content": t}) for t in STREAM_TEXT),
    chunk({}, "stop"),
    {
        **chunk({}),
        "choices": [],
        "usage": {"prompt_tokens": 19, "completion_tokens": 6, "total_tokens": 25},
    },
]
TOOL_STREAM = [
    chunk(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_Ab12",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ],
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_Cd34",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"timezone":"Europe/Oslo"}'}}]}),
    chunk({}, "tool_calls"),
]


def response(
    output: list[dict[str, Any]], usage: tuple[int, int], status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": "resp_68b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": "gpt-4.1-2025-04-14",
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": sum(usage),
        },
        "user": None,
        "metadata": {},
    }


def message_item(text: str) -> dict[str, Any]:
    return {
        "id": "msg_68b1c2d4f0e1a2b3c4d5e6f7a8b9c0d1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


RESPONSE_CALLS = response(
    [
        {
            "id": "fc_68b1c2d5a1b2c3d4e5f6a7b8c9d0e1f2",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_Rz81",
            "name": "get_weather",
            "arguments": '{"city":"Lisbon"}',
        },
        {
            "id": "ws_68b1c2d6b2c3d4e5f6a7b8c9d0e1f2a3",
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": "Lisbon events today"},
        },
    ],
    (64, 33),
)
RESPONSE_TEXT = "Lisbon is 24 °C and clear."


def response_events(text: str) -> list[dict[str, Any]]:
    final = response([message_item(text)], (28, 9))
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    item = message_item("")
    item["status"] = "in_progress"
    item["content"] = []
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    words = text.split(" ")
    deltas = [w if i == 0 else " " + w for i, w in enumerate(words)]
    evs: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **ids, "part": part},
        *(
            {"type": "response.output_text.delta", **ids, "delta": d, "logprobs": []}
            for d in deltas
        ),
        {"type": "response.output_text.done", **ids, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **ids, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": message_item(text)},
        {"type": "response.completed", "response": final},
    ]
    return [{**e, "sequence_number": n} for n, e in enumerate(evs)]


RATE_LIMITED = {
    "error": {
        "message": "Rate limit reached for gpt-4o on tokens per min (TPM).",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}

# -- the local OpenAI ------------------------------------------------------


class Reply:
    def __init__(
        self,
        path: str,
        body: Union[dict[str, Any], list[dict[str, Any]]],
        *,
        status: int = 200,
        sse: bool = False,
        done_marker: bool = True,
    ) -> None:
        self.path = path
        self.body = body
        self.status = status
        self.sse = sse
        self.done_marker = done_marker

    def payload(self) -> tuple[str, bytes]:
        if not self.sse:
            return "application/json", json.dumps(self.body).encode()
        assert isinstance(self.body, list)
        lines = []
        for ev in self.body:
            if "sequence_number" in ev:  # Responses API events are named
                lines.append(f"event: {ev['type']}\n")
            lines.append(f"data: {json.dumps(ev)}\n\n")
        if self.done_marker:
            lines.append("data: [DONE]\n\n")
        return "text/event-stream", "".join(lines).encode()


class LocalOpenAI:
    """An HTTP server on 127.0.0.1 that answers each request with the next
    queued reply and keeps the requests it got."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                reply = outer.replies.popleft() if outer.replies else None
                if reply is None or reply.path != self.path:
                    reply = Reply(self.path, {"error": {"message": "unexpected"}}, status=404)
                ctype, data = reply.payload()
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[LocalOpenAI]:
    s = LocalOpenAI()
    yield s
    s.close()
    assert not s.replies, "a queued reply was not asked for"


@pytest.fixture
def client(server: LocalOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        assert wrap_openai(c) is c
        yield c


@contextlib.asynccontextmanager
async def async_client(server: LocalOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """A wrapped async client, used and closed in one event loop."""
    async with openai.AsyncOpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0) as c:
        assert wrap_openai(c) is c
        yield c


def data(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = record["payload"]["data"]
    return out


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]
MESSAGES = [
    {"role": "system", "content": "You answer weather questions."},
    {"role": "user", "content": "Weather and time in Paris?"},
]

# -- chat completions ------------------------------------------------------


def test_chat_completion_is_an_llm_call_and_its_tool_calls_a_decision(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(
        Reply("/v1/chat/completions", WEATHER_CALLS),
        Reply("/v1/chat/completions", WEATHER_ANSWER),
    )
    with audit.trace("weather", user_id="u_1") as t:
        first = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            temperature=0.2,
            max_tokens=200,
            seed=7,
        )
        assert isinstance(first, ChatCompletion)
        calls = first.choices[0].message.tool_calls or []
        assert [c.id for c in calls] == ["call_Wt1qA8s0", "call_Tm9xK2p4"]
        followup = [
            *MESSAGES,
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "call_Wt1qA8s0", "content": "sunny, 21 °C"},
            {"role": "tool", "tool_call_id": "call_Tm9xK2p4", "content": "14:05"},
        ]
        second = client.chat.completions.create(
            model="gpt-4o",
            messages=(m for m in followup),  # type: ignore[misc]
            tools=TOOLS,  # type: ignore[arg-type]
        )
        assert second.choices[0].message.content == "It is sunny and 21 °C in Paris, at 14:05."
    # The client sent what the caller passed (a generator arrived whole).
    assert server.requests[0][1] == {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "tools": TOOLS,
        "temperature": 0.2,
        "max_tokens": 200,
        "seed": 7,
    }
    assert server.requests[1][1]["messages"] == json.loads(json.dumps(followup))
    audit.flush(30)
    evs = events(log_dir)
    assert [e["kind"] for e in evs] == [
        "trace_start",
        "llm_call",
        "decision",
        "llm_call",
        "trace_end",
    ]
    _, call1, decision, call2, _ = evs
    for call in (call1, call2):
        assert call["trace_id"] == t.trace_id and call["parent_span_id"] == t.span_id
        assert call["result_status"] == "ok"
        assert call["model"] == {
            "name": "gpt-4o",
            "provider": "openai",
            "version": "gpt-4o-2024-08-06",
        }
    assert call1["params"] == {
        "temperature": 0.2,
        "max_tokens": 200,
        "seed": 7,
        "tools": ["get_weather", "get_time"],
    }
    assert (call1["input_tokens"], call1["output_tokens"]) == (82, 41)
    assert call1["finish_reason"] == "tool_calls"
    assert call1["tool_calls_requested"] == ["get_weather", "get_time"]
    assert data(call1)["messages"] == MESSAGES
    assert data(call1)["completion"]["tool_calls"][0] == {
        "id": "call_Wt1qA8s0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert decision["parent_span_id"] == call1["span_id"]
    assert decision["decision"] == "call_tools"
    assert decision["tools"] == ["get_weather", "get_time"]
    assert decision["metadata"] == {"tool_call_ids": ["call_Wt1qA8s0", "call_Tm9xK2p4"]}
    assert (call2["input_tokens"], call2["output_tokens"]) == (151, 16)
    assert call2["finish_reason"] == "stop" and "tool_calls_requested" not in call2
    assert call2["params"] == {"tools": ["get_weather", "get_time"]}
    assert data(call2)["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_Tm9xK2p4",
        "content": "14:05",
    }
    assert data(call2)["completion"]["content"] == "It is sunny and 21 °C in Paris, at 14:05."


def test_chat_stream_is_recorded_when_it_ends_with_its_usage(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(Reply("/v1/chat/completions", TEXT_STREAM, sse=True))
    with audit.trace("weather") as t:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        assert isinstance(stream, openai.Stream)
        first = next(stream)
        audit.flush(30)
        assert events(log_dir, "llm_call") == []  # not before the stream ends
        text = first.choices[0].delta.content or ""
        for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
    assert text == "".join(STREAM_TEXT)
    audit.flush(30)
    (call,) = events(log_dir, "llm_call")
    assert call["parent_span_id"] == t.span_id
    assert call["result_status"] == "ok"
    assert call["params"] == {"stream": True}
    assert (call["input_tokens"], call["output_tokens"]) == (19, 6)
    assert call["finish_reason"] == "stop"
    assert call["model"]["version"] == "gpt-4o-2024-08-06"
    assert data(call)["completion"] == {"role": "assistant", "content": text}
    assert events(log_dir, "decision") == []


def test_async_chat_stream_assembles_tool_calls(log_dir: Path, server: LocalOpenAI) -> None:
    server.queue(
        Reply("/v1/chat/completions", TOOL_STREAM, sse=True),
        Reply("/v1/chat/completions", WEATHER_ANSWER),
    )

    async def main() -> audit.Trace:
        async with async_client(server) as aclient, audit.trace("weather_async") as t:
            stream = await aclient.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
                tools=TOOLS,  # type: ignore[arg-type]
                stream=True,
            )
            assert isinstance(stream, openai.AsyncStream)
            async with stream:
                got = [c async for c in stream]
            assert len(got) == len(TOOL_STREAM)
            answer = await aclient.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            assert isinstance(answer, ChatCompletion)
        return t

    t = asyncio.run(main())
    audit.flush(30)
    evs = events(log_dir)
    assert [e["kind"] for e in evs] == [
        "trace_start",
        "llm_call",
        "decision",
        "llm_call",
        "trace_end",
    ]
    streamed, decision, answer = evs[1:4]
    assert streamed["parent_span_id"] == answer["parent_span_id"] == t.span_id
    assert streamed["finish_reason"] == "tool_calls"
    assert "input_tokens" not in streamed  # this stream carried no usage
    assert streamed["tool_calls_requested"] == ["get_weather", "get_time"]
    assert data(streamed)["completion"] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_Ab12",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {
                "id": "call_Cd34",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"timezone":"Europe/Oslo"}'},
            },
        ],
    }
    assert decision["parent_span_id"] == streamed["span_id"]
    assert decision["tools"] == ["get_weather", "get_time"]
    assert decision["metadata"] == {"tool_call_ids": ["call_Ab12", "call_Cd34"]}
    assert answer["input_tokens"] == 151


def test_stream_closed_before_its_end_is_cancelled(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(*(Reply("/v1/chat/completions", TEXT_STREAM, sse=True) for _ in range(3)))
    with audit.trace("weather") as t:
        with client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ) as stream:
            for c in stream:
                if c.choices and c.choices[0].delta.content == " sunny":
                    break
        # Closed without reading a single chunk.
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        ).close()
        # Dropped without reading or closing it.
        dropped = client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        dropped.response.close()  # (only so the test leaves no socket open)
        del dropped
        gc.collect()
    audit.flush(30)
    calls = events(log_dir, "llm_call")
    assert [c["result_status"] for c in calls] == ["cancelled"] * 3
    assert {c["parent_span_id"] for c in calls} == {t.span_id}
    assert data(calls[0])["completion"] == {"role": "assistant", "content": "It is sunny"}
    assert "completion" not in data(calls[1])
    assert calls[2]["error_type"] == "GeneratorExit"


# -- responses -------------------------------------------------------------


def test_responses_create_sync_and_async(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(
        Reply("/v1/responses", RESPONSE_CALLS),
        Reply("/v1/responses", response([message_item(RESPONSE_TEXT)], (90, 12))),
    )
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"type": "web_search"},
    ]
    with audit.trace("lisbon") as t:
        first = client.responses.create(
            model="gpt-4.1",
            instructions="Be brief.",
            input="Weather and events in Lisbon?",
            tools=tools,  # type: ignore[arg-type]
            max_output_tokens=300,
            temperature=0.5,
        )
        assert isinstance(first, Response)

        async def follow_up() -> Response:
            async with async_client(server) as aclient:
                return await aclient.responses.create(
                    model="gpt-4.1",
                    previous_response_id=first.id,
                    input=[
                        {"type": "function_call_output", "call_id": "call_Rz81", "output": "24 C"}
                    ],
                )

        second = asyncio.run(follow_up())
        assert second.output_text == RESPONSE_TEXT
    assert server.requests[0][1]["instructions"] == "Be brief."
    audit.flush(30)
    evs = events(log_dir)
    assert [e["kind"] for e in evs] == [
        "trace_start",
        "llm_call",
        "decision",
        "llm_call",
        "trace_end",
    ]
    call1, decision, call2 = evs[1:4]
    assert call1["parent_span_id"] == call2["parent_span_id"] == t.span_id
    assert call1["model"] == {
        "name": "gpt-4.1",
        "provider": "openai",
        "version": "gpt-4.1-2025-04-14",
    }
    assert call1["params"] == {
        "temperature": 0.5,
        "max_output_tokens": 300,
        "tools": ["get_weather", "web_search"],
    }
    assert (call1["input_tokens"], call1["output_tokens"]) == (64, 33)
    assert call1["finish_reason"] == "completed"
    assert call1["tool_calls_requested"] == ["get_weather", "web_search"]
    assert data(call1)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and events in Lisbon?"},
    ]
    assert [item["type"] for item in data(call1)["completion"]] == [
        "function_call",
        "web_search_call",
    ]
    assert decision["parent_span_id"] == call1["span_id"]
    assert decision["tools"] == ["get_weather", "web_search"]
    assert decision["metadata"]["tool_call_ids"] == [
        "call_Rz81",
        "ws_68b1c2d6b2c3d4e5f6a7b8c9d0e1f2a3",
    ]
    assert call2["params"] == {"previous_response_id": "resp_68b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"}
    assert data(call2)["messages"] == [
        {"type": "function_call_output", "call_id": "call_Rz81", "output": "24 C"}
    ]
    assert (call2["input_tokens"], call2["output_tokens"]) == (90, 12)
    assert data(call2)["completion"][0]["content"][0]["text"] == RESPONSE_TEXT


def test_responses_stream_sync_and_async(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(
        Reply("/v1/responses", response_events(RESPONSE_TEXT), sse=True, done_marker=False),
        Reply("/v1/responses", response_events("Clear skies."), sse=True, done_marker=False),
    )
    with audit.trace("lisbon") as t:
        stream = client.responses.create(model="gpt-4.1", input="Lisbon?", stream=True)
        assert isinstance(stream, openai.Stream)
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        assert "".join(deltas) == RESPONSE_TEXT

        async def stream_async() -> list[str]:
            async with async_client(server) as aclient:
                s = await aclient.responses.create(model="gpt-4.1", input="Lisbon?", stream=True)
                assert isinstance(s, openai.AsyncStream)
                return [e.type async for e in s]

        types = asyncio.run(stream_async())
        assert types[0] == "response.created" and types[-1] == "response.completed"
    audit.flush(30)
    calls = events(log_dir, "llm_call")
    assert len(calls) == 2
    for call, text in zip(calls, [RESPONSE_TEXT, "Clear skies."]):
        assert call["parent_span_id"] == t.span_id
        assert call["result_status"] == "ok"
        assert call["params"] == {"stream": True}
        assert (call["input_tokens"], call["output_tokens"]) == (28, 9)
        assert call["finish_reason"] == "completed"
        assert data(call)["prompt"] == "Lisbon?"
        assert data(call)["completion"][0]["content"][0]["text"] == text


class Weather(pydantic.BaseModel):
    city: str
    celsius: int


def test_parse_records_the_output_schema_by_name(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    weather = '{"city":"Paris","celsius":21}'
    server.queue(
        Reply("/v1/chat/completions", chat_completion({"content": weather}, "stop", (40, 9))),
        Reply("/v1/responses", response([message_item(weather)], (38, 9))),
    )
    schema = f"{Weather.__module__}.{Weather.__qualname__}"
    with audit.trace("structured") as t:
        parsed = client.chat.completions.parse(
            model="gpt-4o",
            messages=MESSAGES,  # type: ignore[arg-type]
            response_format=Weather,
        )
        assert parsed.choices[0].message.parsed == Weather(city="Paris", celsius=21)
        rparsed = client.responses.parse(model="gpt-4.1", input="Paris?", text_format=Weather)
        assert rparsed.output_parsed == Weather(city="Paris", celsius=21)
    audit.flush(30)
    chat, resp = events(log_dir, "llm_call")
    assert chat["parent_span_id"] == resp["parent_span_id"] == t.span_id
    assert chat["params"] == {"response_format": schema}
    assert resp["params"] == {"text_format": schema}
    assert (chat["input_tokens"], resp["input_tokens"]) == (40, 38)
    assert data(chat)["completion"]["parsed"] == {"city": "Paris", "celsius": 21}
    assert data(resp)["completion"][0]["content"][0]["text"] == weather


# -- failures and the client itself ------------------------------------------


def test_api_error_is_recorded_and_raised_unchanged(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(
        Reply("/v1/chat/completions", RATE_LIMITED, status=429),
        Reply("/v1/responses", RATE_LIMITED, status=429),
    )
    with audit.trace("weather") as t:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        assert info.value.status_code == 429

        async def fail() -> None:
            async with async_client(server) as aclient:
                await aclient.responses.create(model="gpt-4.1", input="hi")

        with pytest.raises(openai.RateLimitError):
            asyncio.run(fail())
    audit.flush(30)
    calls = events(log_dir, "llm_call")
    assert len(calls) == 2
    for call in calls:
        assert call["parent_span_id"] == t.span_id
        assert call["result_status"] == "error"
        assert call["error_type"] == "openai.RateLimitError"
        assert "Rate limit reached" in data(call)["error"]["message"]
    (end,) = events(log_dir, "trace_end")
    assert end["outcome"] == "completed"  # the caller handled the errors


def test_concurrent_async_calls_each_get_their_own_span(log_dir: Path, server: LocalOpenAI) -> None:
    n = 5
    server.queue(*(Reply("/v1/chat/completions", WEATHER_ANSWER) for _ in range(n)))

    async def main() -> audit.Trace:
        async with async_client(server) as aclient, audit.trace("fan_out") as t:
            await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model="gpt-4o",
                        messages=[{"role": "user", "content": f"question {i}"}],
                    )
                    for i in range(n)
                )
            )
        return t

    t = asyncio.run(main())
    audit.flush(30)
    calls = events(log_dir, "llm_call")
    assert len({c["span_id"] for c in calls}) == n
    assert {c["parent_span_id"] for c in calls} == {t.span_id}
    assert sorted(data(c)["messages"][0]["content"] for c in calls) == [
        f"question {i}" for i in range(n)
    ]


def test_wrapping_twice_records_once_and_other_objects_are_refused(
    log_dir: Path, server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(Reply("/v1/chat/completions", WEATHER_ANSWER))
    assert wrap_openai(client, metadata={"team": "support"}) is client
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    audit.flush(30)
    (call,) = events(log_dir, "llm_call")
    assert "metadata" not in call  # the first wrapping's (none) holds
    assert call["trace_id"] and "parent_span_id" not in call  # no trace: a lone span
    with pytest.raises(audit.ConfigError):
        wrap_openai(object())  # type: ignore[type-var]


def test_without_a_log_calls_work_and_nothing_raises(
    server: LocalOpenAI, client: openai.OpenAI
) -> None:
    server.queue(
        Reply("/v1/chat/completions", WEATHER_CALLS),
        Reply("/v1/chat/completions", TEXT_STREAM, sse=True),
    )
    before = audit.stats()["not_logged"]
    reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason == "tool_calls"
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    assert len(list(stream)) == len(TEXT_STREAM)
    # Two model calls and one decision could not be logged.
    assert audit.stats()["not_logged"] - before == 3
