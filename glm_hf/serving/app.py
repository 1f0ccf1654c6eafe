"""`glm-hf serve`: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for a GLM folder.

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streaming as server-sent events, or not), `GET
/v1/models`, `POST /v1/fill` (blank filling: the filled text and each fill), `GET /health`, and a chat page at `/`.
Chat requests are rendered with the tokenizer's chat template and answered by the chat head
(`GLMForConditionalGeneration`) with THUDM's ChatGLM response post-processing, exactly as `model.chat` answers;
completions continue the prompt text as it is. Concurrent requests share forward passes (`engine.BatchingEngine`).

Client text is plain text: a `[gMASK]`, `<|startofpiece|>` or `<|endoftext|>` in a chat message or a completion
prompt is read as those characters, so a client cannot change the prompt's structure; only the chat template's own
special tokens are tokens. `POST /v1/fill` reads its text as GLM markup (its blanks are the request).

Every error is an OpenAI-style body `{"error": {"message", "type", "param", "code"}}` with a 4xx status for bad
requests (malformed JSON, unknown model, bad roles, prompts past the position table, limits) and never takes the
server down.
"""

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from jinja2 import TemplateError
from starlette.exceptions import HTTPException

from ..model.chat_glm import process_response
from .engine import BatchingEngine, Call, Job, RequestError, Sampling
from .protocol import ChatCompletionRequest, CompletionRequest, FillRequest, GeneratingFields

logger = logging.getLogger("glm_hf.serve")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
ERROR_TYPES |= {413: "invalid_request_error", 429: "rate_limit_error", 503: "server_busy", 504: "timeout"}


@dataclass
class ServeSettings:
    """Limits and options of one server (the `glm-hf serve` flags)."""

    model_name: str
    api_key: str | None = None
    max_batch_size: int = 16
    max_queue: int = 64
    max_tokens: int = 512
    max_body_bytes: int = 1_000_000
    request_timeout: float = 600.0
    batch_wait: float = 0.01


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    return {
        "error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    }


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 before the app reads it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise RequestError(413, f"The request body is over the server's limit of {self.limit} bytes.")
            return message

        try:
            await self.app(scope, counted_receive, send)
        except RequestError as error:
            await error_response(error.status, error.message)(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        message = f"The request body is over the server's limit of {self.limit} bytes."
        await error_response(413, message, "body_too_large")(scope, receive, send)


def create_app(model, tokenizer, settings: ServeSettings) -> FastAPI:
    """The server's FastAPI app for a loaded chat head and tokenizer; the engine starts and stops with the app."""
    engine = BatchingEngine(model, tokenizer, settings.max_batch_size, settings.max_queue, settings.batch_wait)

    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="glm-hf serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.state.engine = engine
    _add_error_handlers(app)
    authorized = _authorization(settings.api_key)
    created = int(time.time())
    page = resources.files("glm_hf.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        return HTMLResponse(page.replace("{{MODEL_NAME}}", json.dumps(settings.model_name)))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model_name, "running": engine.running, "queued": engine.queued}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict:
        entry = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "glm-hf"}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        _check_model(body.model, settings)
        prompt = _chat_prompt(tokenizer, body)
        max_tokens = body.max_completion_tokens or body.max_tokens
        jobs = _jobs(engine, settings, [prompt], body, max_tokens, process_response)
        return await _respond(request, engine, jobs, body, [len(prompt)], "chat.completion", settings.model_name)

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, settings)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts:
            raise RequestError(400, "prompt must be a string or a non-empty list of strings.")
        plain = tokenizer(texts, split_special_tokens=True)["input_ids"]  # client text: special-token strings are text
        prompts = [engine.generation_prompt(ids) for ids in plain]
        jobs = _jobs(engine, settings, prompts, body, body.max_tokens, lambda text: text)
        counts = [len(prompt) for prompt in prompts]
        return await _respond(request, engine, jobs, body, counts, "text_completion", settings.model_name)

    @app.post("/v1/fill", dependencies=[Depends(authorized)])
    async def fill(body: FillRequest, request: Request):
        _check_model(body.model, settings)
        return await _fill(request, engine, model, tokenizer, settings, body)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError) -> JSONResponse:
        return error_response(error.status, error.message, error.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0]
        location = [str(part) for part in problem.get("loc", ()) if part != "body"]
        if problem.get("type") == "json_invalid":
            return error_response(400, "The request body is not valid JSON.", "invalid_json")
        field = ".".join(location) or None
        return error_response(400, f"{field or 'body'}: {problem.get('msg')}", "invalid_value", field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error")
        return error_response(500, f"Internal error: {error}")


def _authorization(api_key: str | None) -> Callable:
    async def check(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise RequestError(401, "Missing or wrong API key: send 'Authorization: Bearer <key>'.", "invalid_api_key")

    return check


def _check_model(name: str, settings: ServeSettings) -> None:
    if name != settings.model_name:
        message = f"The model '{name}' does not exist; this server serves '{settings.model_name}'."
        raise RequestError(404, message, "model_not_found")


def _chat_prompt(tokenizer, body: ChatCompletionRequest) -> list[int]:
    """The chat's prompt ids, message contents read as plain text (only the template's special tokens are tokens)."""
    try:
        messages = [{"role": message.role, "content": message.text()} for message in body.messages]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_dict=True, sanitize_control_tokens=True
        )["input_ids"]
    except (TemplateError, ValueError) as error:
        raise RequestError(400, f"messages: {error}", "invalid_messages") from error
    return list(ids)


def _jobs(engine, settings, prompts, body: GeneratingFields, max_tokens, view) -> list[tuple[int, Job]]:
    if max_tokens is not None and max_tokens > settings.max_tokens:
        raise RequestError(400, f"max_tokens is {max_tokens}; this server allows up to {settings.max_tokens}.")
    try:
        stops = body.stop_strings()
    except ValueError as error:
        raise RequestError(400, str(error)) from error
    deadline = time.monotonic() + settings.request_timeout
    limit = engine.config.max_position_embeddings - 1
    jobs = []
    for p, prompt in enumerate(prompts):
        new_tokens = max_tokens or min(
            settings.max_tokens, limit - (len(prompt) - prompt.index(engine.config.sop_token_id))
        )
        engine.check_length(prompt, new_tokens)
        for k in range(body.n):
            seed = None if body.seed is None else body.seed + k
            sampling = Sampling(new_tokens, body.temperature, body.top_p, seed, stops)
            jobs.append((p * body.n + k, Job(prompt, sampling, on_event=None, view=view, deadline=deadline)))
    return jobs


async def _respond(request, engine, jobs, body, prompt_counts, kind, model_name):
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    for index, job in jobs:
        job.on_event = lambda event, index=index: loop.call_soon_threadsafe(events.put_nowait, (index, event))
    try:
        for _, job in jobs:
            engine.submit(job)
    except RequestError:
        _cancel(jobs)
        raise
    meta = {"id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"}
    meta |= {"created": int(time.time()), "model": model_name}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(events, jobs, kind, meta, prompt_counts, include_usage)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await _collect(request, events, jobs, kind, meta, prompt_counts)


def _usage(jobs, prompt_counts) -> dict:
    completion = sum(len(job.tokens) for _, job in jobs)
    prompt = sum(prompt_counts)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _cancel(jobs) -> None:
    for _, job in jobs:
        job.cancelled.set()


async def _collect(request: Request, events: asyncio.Queue, jobs, kind, meta, prompt_counts) -> JSONResponse:
    texts, reasons = {index: "" for index, _ in jobs}, {}
    try:
        while len(reasons) < len(jobs):
            try:
                index, event = await asyncio.wait_for(events.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    return error_response(499, "The client went away.")
                continue
            if event[0] == "text":
                texts[index] += event[1]
            elif event[0] == "done":
                reasons[index] = event[1]
            else:
                raise event[1]
    finally:
        _cancel(jobs)
    choices = [_choice(kind, index, texts[index], reasons[index]) for index in sorted(texts)]
    return JSONResponse({**meta, "object": kind, "choices": choices, "usage": _usage(jobs, prompt_counts)})


def _choice(kind: str, index: int, text: str, reason: str | None) -> dict:
    if kind == "chat.completion":
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "finish_reason": reason, "logprobs": None}
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}


def _chunk(kind: str, meta: dict, index: int, text: str | None, reason: str | None, first: bool = False) -> dict:
    if kind == "chat.completion":
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text is not None else {})
        choice = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        return {**meta, "object": "chat.completion.chunk", "choices": [choice]}
    choice = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
    return {**meta, "object": "text_completion", "choices": [choice]}


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


async def _stream(events: asyncio.Queue, jobs, kind, meta, prompt_counts, include_usage) -> AsyncIterator[str]:
    """Server-sent events: a role chunk per chat choice, text chunks as they are generated, a finishing chunk per
    choice, the usage chunk if asked for, then `[DONE]`. A disconnecting client cancels its jobs (finally)."""
    try:
        if kind == "chat.completion":
            for index, _ in jobs:
                yield _sse(_chunk(kind, meta, index, None, None, first=True))
        finished = 0
        while finished < len(jobs):
            index, event = await events.get()
            if event[0] == "text":
                yield _sse(_chunk(kind, meta, index, event[1], None))
            elif event[0] == "done":
                finished += 1
                yield _sse(_chunk(kind, meta, index, None, event[1]))
            else:
                error = event[1]
                yield _sse(error_body(error.status, error.message, error.code))
                return
        if include_usage:
            yield _sse(
                {**meta, "object": f"{kind}.chunk" if kind == "chat.completion" else kind, "choices": []}
                | {"usage": _usage(jobs, prompt_counts)}
            )
        yield _sse("[DONE]")
    finally:
        _cancel(jobs)


async def _fill(request, engine, model, tokenizer, settings: ServeSettings, body: FillRequest) -> JSONResponse:
    from ..pipelines import FillBlankPipeline

    max_tokens = body.max_tokens or min(settings.max_tokens, 64)
    if max_tokens > settings.max_tokens:
        raise RequestError(400, f"max_tokens is {max_tokens}; this server allows up to {settings.max_tokens}.")
    options = {"max_new_tokens": max_tokens, "do_sample": body.temperature > 0}
    if body.temperature > 0:
        options |= {"temperature": body.temperature, "top_p": body.top_p}

    def run() -> dict:
        import torch

        if body.seed is not None:
            torch.manual_seed(body.seed)
        try:
            filler = FillBlankPipeline(model=model, tokenizer=tokenizer)
            return filler(body.text, **options)
        except ValueError as error:
            raise RequestError(400, f"text: {error}") from error

    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    call = Call(run, on_event=lambda event: loop.call_soon_threadsafe(_settle, done, event))
    engine.submit(call)
    try:
        kind, value = await done
    finally:
        call.cancelled.set()
    if kind == "error":
        raise value
    prompt_tokens = len(tokenizer(body.text)["input_ids"])
    plain = {"add_special_tokens": False, "split_special_tokens": True}
    completion = sum(len(tokenizer(fill, **plain)["input_ids"]) for fill in value["fills"])
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }
    return JSONResponse(
        {
            "id": f"fill-{uuid.uuid4().hex}",
            "object": "fill",
            "created": int(time.time()),
            "model": settings.model_name,
            "text": value["filled_text"],
            "fills": value["fills"],
            "finished": value["finished"],
            "usage": usage,
        }
    )


def _settle(future: asyncio.Future, event: tuple) -> None:
    if not future.done():
        future.set_result(event)


def load_for_serving(model_dir: str | Path, device: str | None = None, dtype: str = "auto", cpu_packing: bool = True):
    """The chat head and tokenizer of a GLM folder, ready to serve (eval mode, left padding, a chat template).

    With `cpu_packing`, a float32 model served on CPU gets its linear layers packed by `glm_hf.pack_for_cpu`
    (same tokens, faster decoding)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from ..chat_templates import ensure_chat_template
    from ..cpu_packing import pack_for_cpu

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.chat_template is None:
        logger.warning("%s has no chat template; serving chats in GLM's question/answer format.", model_dir)
    ensure_chat_template(tokenizer)
    tokenizer.padding_side = "left"
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    if (
        cpu_packing
        and model.device.type == "cpu"
        and model.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
    ):
        pack_for_cpu(model)
        logger.info("Linear layers packed for CPU inference (oneDNN); --no-cpu-packing serves them as loaded.")
    return model, tokenizer


def serve(
    model_dir: str | Path,
    host: str,
    port: int,
    settings: ServeSettings,
    device: str | None = None,
    cpu_packing: bool = True,
) -> None:
    """Loads the folder and serves it with uvicorn until SIGINT/SIGTERM (which end running requests cleanly)."""
    import uvicorn

    model, tokenizer = load_for_serving(model_dir, device, cpu_packing=cpu_packing)
    app = create_app(model, tokenizer, settings)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)


__all__ = ["ServeSettings", "create_app", "load_for_serving", "serve"]
