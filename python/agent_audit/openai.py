"""OpenAI: ``wrap_openai(client)`` records every model call made through
an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` client.

>>> from agent_audit.openai import wrap_openai
>>> client = wrap_openai(openai.OpenAI())
>>> with audit.trace("support", user_id="u_abc"):
...     reply = client.chat.completions.create(model="gpt-4o", messages=[...])

Each ``chat.completions.create`` / ``parse`` and ``responses.create`` /
``parse`` becomes one ``llm_call`` under the current span: model (as
asked and as answered), provider ``openai``, generation params
(temperature, max tokens, the names of the tools offered ...), token
usage, finish reason, the messages and the completion. Tool calls in the
response also become a ``decision`` (``call_tools``, with the tools and
call ids) under that ``llm_call``. Calls through ``with_raw_response``
are recorded without what the response says; the ``stream()`` helpers
and the other endpoints are not recorded.

The client is patched in place and returned, and every call returns what
the client returned (``ChatCompletion``, ``Response``, ``Stream`` ...). A
stream (``stream=True``) is recorded when it ends, is closed or is
garbage-collected, with the usage when the stream carries it
(``stream_options={"include_usage": True}`` for chat completions); one
closed before its end is recorded as ``cancelled``. A failed request is
recorded with its error and re-raised unchanged. Recording never raises.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any, Callable, Optional, TypeVar, Union

import openai
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from ._integration import guarded, tool_decision, tool_names
from ._native import ConfigError
from ._spans import LlmCall
from .context import _current

__all__ = ["wrap_openai"]

ClientT = TypeVar("ClientT", bound=Union[openai.OpenAI, openai.AsyncOpenAI])

_CHAT_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "response_format",
    "service_tier",
    "verbosity",
    "stream",
)
_RESPONSES_PARAMS = (
    "temperature",
    "top_p",
    "max_output_tokens",
    "max_tool_calls",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "text",
    "text_format",
    "truncation",
    "service_tier",
    "previous_response_id",
    "stream",
)
_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_MARK = "__agent_audit_wrapped__"


def wrap_openai(
    client: ClientT,
    *,
    metadata: Optional[dict[str, Any]] = None,
    capture: Optional[str] = None,
) -> ClientT:
    """Records the client's ``chat.completions.create`` / ``parse`` and
    ``responses.create`` / ``parse`` calls (see the module doc). Returns the same
    client; wrapping twice records once. ``metadata`` is added to every
    event; ``capture`` overrides the log's capture mode for them.
    Clients derived later with ``with_options`` are not wrapped."""
    if not isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        raise ConfigError(
            f"wrap_openai needs an openai.OpenAI or openai.AsyncOpenAI, got {type(client).__name__}"
        )
    is_async = isinstance(client, openai.AsyncOpenAI)
    azure = isinstance(client, (openai.AzureOpenAI, openai.AsyncAzureOpenAI))
    opts = _Options("azure.ai.openai" if azure else "openai", metadata, capture)
    for resource, api in ((client.chat.completions, "chat"), (client.responses, "responses")):
        for method in ("create", "parse"):
            call = getattr(resource, method, None)
            if call is None or getattr(call, _MARK, False):
                continue
            wrapped = _wrap_async(call, api, opts) if is_async else _wrap_sync(call, api, opts)
            setattr(wrapped, _MARK, True)
            setattr(resource, method, wrapped)
    return client


class _Options:
    __slots__ = ("capture", "metadata", "provider")

    def __init__(
        self, provider: str, metadata: Optional[dict[str, Any]], capture: Optional[str]
    ) -> None:
        self.provider = provider
        self.metadata = dict(metadata) if metadata else None
        self.capture = capture


def _wrap_sync(create: Callable[..., Any], api: str, opts: _Options) -> Callable[..., Any]:
    @functools.wraps(create)
    def audited_create(*args: Any, **kwargs: Any) -> Any:
        rec = _Recorder.start(api, kwargs, opts)
        try:
            result = create(*args, **kwargs)
        except BaseException as e:
            if rec is not None:
                rec.finish(e)
            raise
        if rec is None:
            return result
        if isinstance(result, openai.Stream):
            return rec.observe(result)
        rec.read(result)
        rec.finish(None)
        return result

    return audited_create


def _wrap_async(create: Callable[..., Any], api: str, opts: _Options) -> Callable[..., Any]:
    @functools.wraps(create)
    async def audited_create(*args: Any, **kwargs: Any) -> Any:
        rec = _Recorder.start(api, kwargs, opts)
        try:
            result = await create(*args, **kwargs)
        except BaseException as e:
            if rec is not None:
                rec.finish(e)
            raise
        if rec is None:
            return result
        if isinstance(result, openai.AsyncStream):
            return rec.observe_async(result)
        rec.read(result)
        rec.finish(None)
        return result

    return audited_create


# The client's "argument not given" markers (``Omit`` is newer than ``NotGiven``).
_NOT_GIVEN: tuple[type, ...] = tuple(
    t for t in (getattr(openai, "Omit", None), openai.NotGiven) if isinstance(t, type)
)


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, _NOT_GIVEN)


def _param(value: Any) -> Any:
    """A parameter as recorded: a class (``parse``'s output schema) by name."""
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return value


def _materialize(kwargs: dict[str, Any], key: str) -> Any:
    """The argument, as a list if it was another iterable (a generator
    would otherwise be used up here and reach the client empty)."""
    value = kwargs.get(key)
    if not _given(value):
        return None
    if isinstance(value, Iterable) and not isinstance(value, (str, list, tuple, dict)):
        value = kwargs[key] = list(value)
    return value


def _dump(obj: Any) -> Any:
    """A response object as a dict without its unset (None) fields.
    Without pydantic's serializer warnings: ``parse`` results hold the
    caller's model where the schema says None, which would warn."""
    dump = getattr(obj, "model_dump", None)
    return dump(exclude_none=True, warnings=False) if callable(dump) else obj


def _one_or_all(items: list[Any]) -> Any:
    return items[0] if len(items) == 1 else items


class _Recorder:
    """One ``create`` call in flight: its ``llm_call`` and, once the
    response is read, the tool calls to record as a decision."""

    def __init__(self, api: str, call: LlmCall, opts: _Options) -> None:
        self.api = api
        self.call = call
        self.opts = opts
        self.tool_calls: list[tuple[Optional[str], str]] = []
        self.text: Any = None
        self._done = False
        self._lock = threading.Lock()

    @staticmethod
    @guarded
    def start(api: str, kwargs: dict[str, Any], opts: _Options) -> Optional[_Recorder]:
        keys = _CHAT_PARAMS if api == "chat" else _RESPONSES_PARAMS
        params = {k: _param(kwargs[k]) for k in keys if _given(kwargs.get(k))}
        tools = tool_names(_materialize(kwargs, "tools"))
        if tools:
            params["tools"] = tools
        messages: Any = None
        prompt: Any = None
        if api == "chat":
            messages = _materialize(kwargs, "messages")
        else:
            inp = _materialize(kwargs, "input")
            instructions = kwargs.get("instructions")
            if _given(instructions):
                messages = [{"role": "system", "content": instructions}]
                if isinstance(inp, str):
                    messages.append({"role": "user", "content": inp})
                elif inp is not None:
                    messages.extend(inp)
            elif isinstance(inp, str):
                prompt = inp
            else:
                messages = inp
        model = kwargs.get("model")
        call = LlmCall(
            str(model) if _given(model) else "unknown",
            opts.provider,
            params=params or None,
            messages=messages,
            prompt=prompt,
            metadata=opts.metadata,
            capture=opts.capture,
        )
        call._begin(_current.get())
        return _Recorder(api, call, opts)

    @guarded
    def read(self, result: Any) -> None:
        """Takes what a whole (non-streamed) response says."""
        if self.api == "chat" and isinstance(result, ChatCompletion):
            choices = [(_dump(c.message), c.finish_reason) for c in result.choices]
            self._chat(result.model, result.usage, choices)
        elif self.api == "responses" and isinstance(result, Response):
            self._response(result)

    def _chat(self, model: Any, usage: Any, choices: list[tuple[dict[str, Any], Any]]) -> None:
        first, finish = choices[0] if choices else ({}, None)
        for tc in first.get("tool_calls") or []:
            fn = tc.get("function") or tc.get("custom") or {}
            self.tool_calls.append((tc.get("id"), str(fn.get("name") or tc.get("type"))))
        self.text = first.get("content")
        self.call.record(
            input_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=getattr(usage, "completion_tokens", None),
            finish_reason=finish or None,
            model_version=model or None,
            tool_calls_requested=[name for _, name in self.tool_calls] or None,
            completion=_one_or_all([m for m, _ in choices]) if choices else None,
        )

    def _response(self, response: Any) -> None:
        reasoning: list[Any] = []
        for item in response.output:
            kind = getattr(item, "type", "")
            if kind in ("function_call", "custom_tool_call"):
                self.tool_calls.append((item.call_id, item.name))
            elif kind == "reasoning":
                reasoning.extend(s.text for s in item.summary)
            elif kind.endswith("_call"):
                # Built-in tools the model chose: web_search_call -> web_search.
                self.tool_calls.append((getattr(item, "id", None), kind[: -len("_call")]))
        self.text = response.output_text or None
        usage = response.usage
        details = response.incomplete_details
        finish = details.reason if details is not None and details.reason else response.status
        self.call.record(
            input_tokens=getattr(usage, "input_tokens", None),
            output_tokens=getattr(usage, "output_tokens", None),
            finish_reason=finish or None,
            model_version=response.model or None,
            tool_calls_requested=[name for _, name in self.tool_calls] or None,
            completion=[_dump(item) for item in response.output],
            reasoning=reasoning or None,
        )

    @guarded
    def finish(
        self,
        exc: Optional[BaseException],
        chunks: Optional[Union[_ChatChunks, _ResponseEvents]] = None,
    ) -> None:
        """Records the call (once: a stream may end, then be closed), then
        the tool calls it asked for. ``chunks``: what a stream carried."""
        with self._lock:
            if self._done:
                return
            self._done = True
        if chunks is not None:
            try:
                chunks.apply(self)
            except Exception:
                pass  # record the call with what is known
        self.call._end(exc)
        if exc is None and self.tool_calls:
            tool_decision(
                self.call.context,
                [name for _, name in self.tool_calls],
                [i for i, _ in self.tool_calls],
                reasoning=self.text,
                metadata=self.opts.metadata,
                capture=self.opts.capture,
            )

    # -- streams -----------------------------------------------------------

    def _accumulator(self) -> Union[_ChatChunks, _ResponseEvents]:
        return _ChatChunks() if self.api == "chat" else _ResponseEvents()

    def observe(self, stream: openai.Stream[Any]) -> openai.Stream[Any]:
        """Records the call when the stream ends or is closed; the stream
        itself is returned, its chunks untouched."""
        inner = getattr(stream, "_iterator", None)
        if inner is None:  # not a stream this version knows how to observe
            self.finish(None)
            return stream
        acc = self._accumulator()

        def chunks() -> Generator[Any, None, None]:
            error: Optional[BaseException] = None
            try:
                for chunk in inner:
                    acc.add(chunk)
                    yield chunk
            except BaseException as e:
                error = e
                if isinstance(e, GeneratorExit):
                    inner.close()
                raise
            finally:
                self.finish(error, acc)

        observed = chunks()
        close = stream.close

        def close_and_record() -> None:
            try:
                close()
            finally:
                observed.close()
                # Closed before the first chunk was asked for.
                self.finish(GeneratorExit(), acc)

        stream._iterator = observed
        stream.close = close_and_record  # type: ignore[method-assign]
        self._on_collect(stream, acc)
        return stream

    def observe_async(self, stream: openai.AsyncStream[Any]) -> openai.AsyncStream[Any]:
        """:meth:`observe` for an ``AsyncStream``."""
        inner = getattr(stream, "_iterator", None)
        if inner is None:
            self.finish(None)
            return stream
        acc = self._accumulator()

        async def chunks() -> AsyncGenerator[Any, None]:
            error: Optional[BaseException] = None
            try:
                async for chunk in inner:
                    acc.add(chunk)
                    yield chunk
            except BaseException as e:
                error = e
                if isinstance(e, GeneratorExit):
                    await inner.aclose()
                raise
            finally:
                self.finish(error, acc)

        observed = chunks()
        close = stream.close

        async def close_and_record() -> None:
            try:
                await close()
            finally:
                await observed.aclose()
                self.finish(GeneratorExit(), acc)

        stream._iterator = observed
        stream.close = close_and_record  # type: ignore[method-assign]
        self._on_collect(stream, acc)
        return stream

    def _on_collect(self, stream: Any, acc: Union[_ChatChunks, _ResponseEvents]) -> None:
        """A stream dropped unread and unclosed is recorded when it is
        garbage-collected (not at exit: the log may be closed by then)."""
        weakref.finalize(stream, self.finish, GeneratorExit(), acc).atexit = False


class _ChatChunks:
    """Puts a chat completion back together from its chunks."""

    def __init__(self) -> None:
        self.model: Optional[str] = None
        self.usage: Any = None
        self.choices: dict[int, dict[str, Any]] = {}

    @guarded
    def add(self, chunk: Any) -> None:
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in getattr(chunk, "choices", None) or []:
            st = self.choices.setdefault(
                choice.index, {"content": [], "tool_calls": {}, "finish": None, "role": None}
            )
            delta = choice.delta
            if delta is not None:
                st["role"] = delta.role or st["role"]
                if delta.content:
                    st["content"].append(delta.content)
                for tc in delta.tool_calls or []:
                    call = st["tool_calls"].setdefault(
                        tc.index,
                        {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                    )
                    call["id"] = tc.id or call["id"]
                    if tc.function is not None:
                        call["function"]["name"] += tc.function.name or ""
                        call["function"]["arguments"] += tc.function.arguments or ""
            if choice.finish_reason:
                st["finish"] = choice.finish_reason

    def apply(self, rec: _Recorder) -> None:
        choices: list[tuple[dict[str, Any], Any]] = []
        for _, st in sorted(self.choices.items()):
            message: dict[str, Any] = {"role": st["role"] or "assistant"}
            if st["content"]:
                message["content"] = "".join(st["content"])
            if st["tool_calls"]:
                message["tool_calls"] = [c for _, c in sorted(st["tool_calls"].items())]
            choices.append((message, st["finish"]))
        rec._chat(self.model, self.usage, choices)


class _ResponseEvents:
    """Keeps the final response of a Responses API event stream."""

    def __init__(self) -> None:
        self.response: Any = None

    @guarded
    def add(self, event: Any) -> None:
        if getattr(event, "type", None) in _FINAL_EVENTS:
            self.response = event.response

    def apply(self, rec: _Recorder) -> None:
        if self.response is not None:
            rec._response(self.response)
