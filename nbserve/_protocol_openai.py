"""OpenAI's embeddings (``/v1/embeddings``) for a version that answers one vector per text, and
completions (``/v1/completions``, ``/v1/chat/completions``, streamed as server-sent events) for a
text-generation pipeline; ``/v1/models``. Copied into each Bento as ``nbserve_protocol_openai.py``."""

from __future__ import annotations

import base64
import json
import secrets
import time
import typing as t

import numpy as np

try:  # in a Bento: nbserve/_protocol_base.py, copied beside this module
    from nbserve_protocol_base import GENERATION_HEADER, Answer, Call, Refused, Served, error_message, parse_json
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._protocol_base import GENERATION_HEADER, Answer, Call, Refused, Served, error_message, parse_json  # type: ignore[no-redef]
try:  # in a Bento: nbserve/_flavor_calls.py, copied beside this module
    from nbserve_flavor_calls import GENERATIVE_TASKS  # the pipelines served as OpenAI's completions
except ImportError:  # imported from the nbserve package itself (the agent, the tests)
    from nbserve._flavor_calls import GENERATIVE_TASKS  # type: ignore[no-redef]

__all__ = ["OpenAI"]


_EMBEDDING_APIS = ("embed", "encode", "transform")


class OpenAI:
    """OpenAI's ``POST /v1/embeddings`` for a version that answers one vector per text (a
    ``transform``, a feature-extraction pipeline); ``/v1/completions`` and
    ``/v1/chat/completions`` for a text-generation pipeline; ``GET /v1/models``."""

    name = "openai"
    prefix = "/v1"

    def handle(self, served: Served, method: str, path: str, headers: dict[str, str], body: bytes) -> Call | Answer:
        model = {"id": served.name, "object": "model", "created": 0, "owned_by": "nbserve"}
        if path in ("/v1/models", f"/v1/models/{served.name}"):
            if method not in ("GET", "HEAD"):
                return _openai_error(405, f"{path} answers GET")
            return Answer(200, model if path.endswith(served.name) else {"object": "list", "data": [model]})
        if path.startswith("/v1/models/"):
            return _openai_error(404, f"the model {path[11:]!r} does not exist; this URL serves {served.name!r}",
                                 code="model_not_found", param="model")
        if path in ("/v1/completions", "/v1/chat/completions"):
            return self._completion(served, method, path, body)
        if path != "/v1/embeddings":
            return _openai_error(404, f"no such endpoint: {path} (this URL serves /v1/embeddings, /v1/completions, "
                                      "/v1/chat/completions and /v1/models)")
        if method != "POST":
            return _openai_error(405, "/v1/embeddings takes POST")
        if served.kind != "text":
            return _openai_error(400, f"{served.name} does not take texts (its input is {served.kind}); "
                                      "embeddings need a model that answers one vector per text", param="model")
        try:
            request = parse_json(body)
            texts, encoding, dimensions = self._request(served, request)
        except Refused as exc:
            return _openai_error(exc.status, exc.message, param=getattr(exc, "param", None))
        api = next((a for a in _EMBEDDING_APIS if a in served.apis), "predict")

        def finish(answers: dict[str, t.Any]) -> Answer:
            vectors = answers[api]
            if not _vectors(vectors, len(texts)):
                return _openai_error(400, f"{served.name}'s {api} does not answer one vector of numbers per text")
            if dimensions is not None and len(vectors[0]) != dimensions:
                return _openai_error(400, f"{served.name} answers vectors of {len(vectors[0])} dimensions, "
                                          f"not {dimensions}", param="dimensions")
            data = [{"object": "embedding", "index": i,
                     "embedding": (base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
                                   if encoding == "base64" else v)}
                    for i, v in enumerate(vectors)]
            tokens = sum(len(text.split()) for text in texts)
            return Answer(200, {"object": "list", "data": data, "model": served.name,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

        return Call((api,), texts, finish)

    def _completion(self, served: Served, method: str, path: str, body: bytes) -> Call | Answer:
        """``/v1/completions`` and ``/v1/chat/completions`` for a text-generation pipeline:
        each prompt generated with the request's settings; ``stream`` as server-sent events."""
        if method != "POST":
            return _openai_error(405, f"{path} takes POST")
        if served.task not in GENERATIVE_TASKS:
            return _openai_error(400, f"{served.name} does not generate text (completions need a Hugging Face "
                                      "text-generation pipeline)", param="model")
        chat = path == "/v1/chat/completions"
        try:
            request = parse_json(body)
            if not isinstance(request, dict):
                raise _param(400, "the body must be a JSON object", "messages" if chat else "prompt")
            model = request.get("model")
            if model not in (None, served.name):
                raise _param(404, f"the model {model!r} does not exist; this URL serves {served.name!r}", "model")
            prompts = [_chat_prompt(request.get("messages"))] if chat else _prompts(request.get("prompt"))
            options = _generation(request)
        except Refused as exc:
            return _openai_error(exc.status, exc.message, param=getattr(exc, "param", None))
        stream = request.get("stream") is True
        reply_id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)

        def finish(answers: dict[str, t.Any]) -> Answer:
            texts = [_generated(a) for a in answers["predict"]]
            created = int(time.time())
            prompt_tokens = sum(len(p.split()) for p in prompts)
            completion_tokens = sum(len(x.split()) for x in texts)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens}
            head = {"id": reply_id, "created": created, "model": served.name}
            if chat and stream:
                chunks = [{"delta": {"role": "assistant", "content": ""}, "finish_reason": None},
                          {"delta": {"content": texts[0]}, "finish_reason": None},
                          {"delta": {}, "finish_reason": "stop"}]
                return _events({**head, "object": "chat.completion.chunk", "choices": [{"index": 0, **c}]}
                               for c in chunks)
            if stream:
                return _events({**head, "object": "text_completion",
                                "choices": [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None}]}
                               for i, text in enumerate(texts))
            if chat:
                return Answer(200, {**head, "object": "chat.completion", "usage": usage, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": texts[0]}, "finish_reason": "stop"}]})
            return Answer(200, {**head, "object": "text_completion", "usage": usage, "choices": [
                {"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i, text in enumerate(texts)]})

        return Call(("predict",), prompts, finish, ((GENERATION_HEADER.encode(), json.dumps(options).encode()),))

    @staticmethod
    def _request(served: Served, request: t.Any) -> tuple[list[str], str, int | None]:
        if not isinstance(request, dict) or "input" not in request:
            raise _param(400, 'the body must be a JSON object with "model" and "input"', "input")
        model = request.get("model")
        if model not in (None, served.name):
            raise _param(404, f"the model {model!r} does not exist; this URL serves {served.name!r}", "model")
        value = request["input"]
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(v, str) for v in texts):
            raise _param(400, "input is a string or a non-empty list of strings (token arrays are not taken)", "input")
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _param(400, f"encoding_format is 'float' or 'base64', not {encoding!r}", "encoding_format")
        dimensions = request.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise _param(400, "dimensions is a positive integer", "dimensions")
        return texts, encoding, dimensions

    def failed(self, status: int, error: t.Any) -> Answer:
        return _openai_error(400 if 400 <= status < 500 else status, error_message(error),
                             kind="invalid_request_error" if status < 500 else "server_error")

    def captured(self, request: t.Any, response: t.Any, served: Served) -> tuple[t.Any, t.Any]:
        if not isinstance(request, dict):
            return None, None
        if "messages" in request:
            return [_chat_prompt(request["messages"])], None
        value = request.get("input", request.get("prompt"))
        return ([value] if isinstance(value, str) else value), None


def _chat_prompt(messages: t.Any) -> str:
    """The conversation as one prompt, a line per message and the assistant's turn last (the
    pipeline's own chat template is not used: a pipeline saved without one has none)."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise _param(400, 'messages is a non-empty list of {"role": ..., "content": "text"}', "messages")
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"


def _prompts(prompt: t.Any) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise _param(400, "prompt is a string or a non-empty list of strings (token arrays are not taken)", "prompt")
    return prompts


def _generation(request: dict[str, t.Any]) -> dict[str, t.Any]:
    """OpenAI's sampling fields as the pipeline's generation settings; what it cannot honour is refused."""
    for name, why in (("stop", "stop sequences"), ("logprobs", "log probabilities"), ("tools", "tools"),
                      ("suffix", "suffixes")):
        if request.get(name) not in (None, False, [], ""):
            raise _param(400, f"{why} are not supported by nbserve's completions", name)
    if request.get("n", 1) != 1:
        raise _param(400, "n must be 1: one completion per prompt", "n")
    options: dict[str, t.Any] = {"return_full_text": False}
    tokens = request.get("max_completion_tokens", request.get("max_tokens"))
    if tokens is not None:
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 1 <= tokens <= 4096:
            raise _param(400, "max_tokens is an integer from 1 to 4096", "max_tokens")
        options["max_new_tokens"] = tokens
    temperature = request.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise _param(400, "temperature is a number from 0 to 2", "temperature")
        options["do_sample"] = temperature > 0  # 0: greedy, the same answer every time
        if temperature > 0:
            options["temperature"] = float(temperature)
    top_p = request.get("top_p")
    if top_p is not None:
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool) or not 0 < top_p <= 1:
            raise _param(400, "top_p is a number above 0, at most 1", "top_p")
        if options.get("do_sample"):
            options["top_p"] = float(top_p)
    return options


def _generated(answer: t.Any) -> str:
    """A text-generation pipeline's answer for one prompt: [{"generated_text": ...}] or the dict."""
    first = answer[0] if isinstance(answer, list) and answer else answer
    return str(first.get("generated_text", "")) if isinstance(first, dict) else str(first)


def _events(chunks: t.Iterable[dict[str, t.Any]]) -> Answer:
    """Server-sent events as OpenAI streams them, ending with ``[DONE]``."""
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return Answer(200, body.encode(), "text/event-stream")


def _param(status: int, message: str, param: str) -> Refused:
    refused = Refused(status, message)
    refused.param = param  # type: ignore[attr-defined]
    return refused


def _openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None,
                  kind: str = "invalid_request_error") -> Answer:
    return Answer(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})


def _vectors(answers: t.Any, count: int) -> bool:
    if not isinstance(answers, list) or len(answers) != count or not answers:
        return False
    width = len(answers[0]) if isinstance(answers[0], list) else -1
    return width > 0 and all(isinstance(v, list) and len(v) == width and
                             all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) for v in answers)
